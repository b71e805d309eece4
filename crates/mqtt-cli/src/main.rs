//! `mqtt`: an MQTT broker, publisher, subscriber and live monitor in one binary.
//!
//! Option names follow `mosquitto_pub` and `mosquitto_sub` where they overlap.

mod broker;
mod client_args;
mod format;
mod monitor;
mod passwd;
mod publish;
mod rr;
mod subscribe;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An MQTT 3.1.1 and 5.0 broker, publisher, subscriber and live monitor.
#[derive(Debug, Parser)]
#[command(name = "mqtt", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Broker(broker::Args),
    /// Publish messages (or benchmark publishing with --count).
    Publish(publish::Args),
    /// Subscribe and print messages.
    Subscribe(subscribe::Args),
    /// Send a request and print its response (MQTT 5.0), as mosquitto_rr.
    Rr(rr::Args),
    /// Watch messages live in a terminal UI.
    Monitor(monitor::Args),
    /// Create and edit password files, as mosquitto_passwd does.
    Passwd(passwd::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mqtt: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Broker(args) => broker::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Subscribe(args) => subscribe::run(args).await,
            Command::Rr(args) => rr::run(args).await,
            Command::Monitor(args) => monitor::run(args).await,
            Command::Passwd(args) => passwd::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("mqtt: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `outer: cause: root`, skipping a cause whose text the
/// line already ends with (errors that print their source as part of their own message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Listens for Ctrl-C (and, on Unix, SIGTERM) from now on; the future completes at the first.
/// Registered at once rather than when first polled, so that a signal arriving in between is
/// not left to the default action (death by signal, a non-zero status).
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use anyhow::Context as _;
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_skips_causes_already_in_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(mqtt_tokio::Error::Io(io)).context("cannot connect");
        assert_eq!(one_line(&error), "cannot connect: I/O error: refused");
        let error = anyhow::anyhow!("two\nlines").context("outer");
        assert_eq!(one_line(&error), "outer: two lines");
    }
}
