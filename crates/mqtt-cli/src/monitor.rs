//! `mqtt monitor`.

/// Options of `mqtt monitor`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs `mqtt monitor`.
pub(crate) async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
