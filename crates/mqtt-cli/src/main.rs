//! `mqtt`: an MQTT broker, publisher, subscriber and live monitor in one binary.
//!
//! Option names follow `mosquitto_pub` and `mosquitto_sub` where they overlap.

mod broker;
mod common;
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
            eprintln!("mqtt: {}", common::one_line(&error));
            ExitCode::FAILURE
        }
    }
}
