//! `mqtt subscribe`.

/// Options of `mqtt subscribe`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs `mqtt subscribe`.
pub(crate) async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
