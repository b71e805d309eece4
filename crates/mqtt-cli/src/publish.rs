//! `mqtt publish`.

/// Options of `mqtt publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs `mqtt publish`.
pub(crate) async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
