//! `mqtt broker`.

/// Options of `mqtt broker`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs `mqtt broker`.
pub(crate) async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
