//! `mqtt subscribe`: prints each message of one or more subscriptions.

use std::io::{ErrorKind, Write as _};

use anyhow::Context as _;
use mqtt_tokio::{ConnectionEvent, Message, QoS, RetainHandling, SubscribeOptions, Version};
use tokio::sync::mpsc;

use crate::client_args::{ClientArgs, ConnectArgs, PROPERTIES_HELP, Packet, parse_qos};
use crate::format::{Format, message_json_line, render};

/// Options of `mqtt subscribe`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
#[command(after_long_help = format!("{OUTPUT_HELP}\n\n{PROPERTIES_HELP}"))]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    client: ClientArgs,
    /// Topic filters to subscribe to (wildcards `+` and `#` allowed).
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
    /// A topic filter (as in mosquitto_sub); repeatable, adds to FILTER arguments.
    #[arg(short = 't', long = "topic", value_name = "FILTER")]
    topics: Vec<String>,
    /// Maximum QoS to receive at: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    #[command(flatten)]
    output: OutputArgs,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count", value_name = "N")]
    count: Option<u64>,
    /// Do not print retained messages: they are stale, published at some unknown time before
    /// (5.0: the broker is asked not to send them at all).
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
    /// Exit as soon as every subscription is granted, printing nothing: to make a session with
    /// its subscriptions (with -c) for later.
    #[arg(short = 'E', long = "exit-after-subscribe")]
    exit_after_subscribe: bool,
    /// Acknowledge each QoS 1/2 message only once it is printed (and flushed).
    #[arg(long = "manual-ack")]
    manual_ack: bool,
    /// Say on stderr when connected and when each subscription is granted.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
}

/// How received messages are printed: the options `subscribe` and `rr` share.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OutputArgs {
    /// Print the topic before each payload.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// How to print payloads.
    #[arg(short = 'F', long = "format", value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// Do not add a line break after each payload.
    #[arg(short = 'N', long = "no-newline")]
    no_newline: bool,
}

impl OutputArgs {
    /// Prints one message and flushes, so that a reader sees it at once.
    pub(crate) fn print(&self, message: &Message) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let end = if self.no_newline { "" } else { "\n" };
        if self.format == Format::Json {
            write!(out, "{}{end}", message_json_line(message.publish()))?;
        } else {
            let payload = render(message.payload(), self.format);
            if self.verbose {
                let dump = self.format == Format::Binary
                    || (self.format == Format::Auto
                        && std::str::from_utf8(message.payload()).is_err());
                // A hex dump starts on a line of its own, so that its columns line up.
                let separator = if dump { "\n" } else { " " };
                write!(out, "{}{separator}", message.topic())?;
            }
            write!(out, "{payload}{end}")?;
        }
        out.flush()
    }
}

/// Subscription options for `filter` at `qos`; with `no_retained`, in 5.0, without the
/// retained messages (mosquitto's -R does the same).
pub(crate) fn subscribe_options(
    filter: &str,
    qos: QoS,
    no_retained: bool,
    version: Version,
) -> SubscribeOptions {
    let mut options = SubscribeOptions::new(filter.to_owned()).qos(qos);
    if no_retained && version == Version::V5 {
        options = options.retain_handling(RetainHandling::DoNotSend);
    }
    options
}

pub(crate) const OUTPUT_HELP: &str = "\
OUTPUT (--format):
  auto    the payload as text when it is valid UTF-8, else a hex dump
  text    the payload as text (invalid UTF-8 shown as U+FFFD)
  binary  a hex dump (offset, 16 bytes in hex, printable ASCII), as `hexdump -C`
  json    one object per line:
          {\"topic\":\"a/b\",\"qos\":1,\"retain\":false,\"properties\":{...},\"payload\":\"text\"}
          properties (5.0, those present): payload_format_indicator, message_expiry_interval,
          content_type, response_topic, correlation_data, user_properties ([[name, value], ...]),
          subscription_identifiers. Payload and correlation data are strings when they are
          UTF-8, else {\"hex\": \"00ff...\"}.
With -v (auto, text, binary) the topic comes first, then a space (before a hex dump: a line
break).
A message matching several FILTERs is printed once, unless the broker sends it once per
subscription (mosquitto does in 5.0).
Output is flushed after each message; a closed pipe (`| head -1`) ends the program quietly.";

/// Runs `mqtt subscribe`.
pub(crate) async fn run(mut args: Args) -> anyhow::Result<()> {
    let stray = args.client.take_stray_values();
    let filters: Vec<String> = args
        .filters
        .iter()
        .chain(&stray)
        .chain(&args.topics)
        .cloned()
        .collect();
    if filters.is_empty() {
        anyhow::bail!("no topic filter: give one or more FILTER arguments or -t FILTER");
    }
    for filter in &filters {
        crate::client_args::check_filter(filter)?;
    }
    let setup = args.client.setup(
        &args.connect,
        "mqtt subscribe",
        &[
            Packet::Connect,
            Packet::Subscribe,
            Packet::Disconnect,
            Packet::Will,
        ],
    )?;
    let stop = crate::shutdown_signal()?;
    let client = setup.connect(&args.connect).await?;
    if args.debug {
        eprintln!("connected as {}", client.client_id());
    }
    let events = client.events();
    let (tx, mut rx) = mpsc::channel::<(usize, Message)>(64);
    for (index, filter) in filters.iter().enumerate() {
        let mut options =
            subscribe_options(filter, args.qos, args.no_retained, args.connect.version)
                .properties(setup.subscribe_properties());
        if args.manual_ack {
            options = options.manual_ack();
        }
        let mut subscription = client
            .subscribe_with(options)
            .await
            .with_context(|| format!("cannot subscribe to {filter:?}"))?;
        if args.debug {
            eprintln!("subscribed to {filter} ({})", subscription.reason_code());
        }
        // One stream for all subscriptions; the bounded channel keeps backpressure.
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.recv().await {
                if tx.send((index, message)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    if args.exit_after_subscribe {
        setup.disconnect(&client).await;
        return Ok(());
    }

    let mut received = 0u64;
    tokio::pin!(stop);
    let outcome = loop {
        if args.count.is_some_and(|count| received >= count) {
            break Ok(());
        }
        let message = tokio::select! {
            message = rx.recv() => message,
            _ = &mut stop => break Ok(()),
        };
        let Some((index, message)) = message else {
            // Every subscription ended: the connection is gone.
            let reason = std::iter::from_fn(|| events.try_recv().ok())
                .filter_map(|event| match event {
                    ConnectionEvent::Disconnected(reason) => Some(reason.to_string()),
                    _ => None,
                })
                .last()
                .unwrap_or_else(|| "connection lost".into());
            break Err(anyhow::anyhow!("disconnected: {reason}"));
        };
        // The client hands each incoming message to every subscription it matches: print it
        // once, from the first of them. (What the broker itself sends twice is shown twice.)
        let earlier = filters.get(..index).unwrap_or_default();
        let skip = earlier.iter().any(|f| filter_matches(f, message.topic()))
            || (args.no_retained && message.retain());
        if skip {
            if message.needs_ack() {
                message.ack().await.context("cannot acknowledge")?;
            }
            continue;
        }
        match args.output.print(&message) {
            Ok(()) => {}
            // A reader that went away (`| head -1`) is a normal end.
            Err(error) if error.kind() == ErrorKind::BrokenPipe => break Ok(()),
            Err(error) => break Err(anyhow::Error::new(error).context("cannot write to stdout")),
        }
        received += 1;
        if message.needs_ack() {
            message.ack().await.context("cannot acknowledge")?;
        }
    };
    setup.disconnect(&client).await;
    outcome
}

/// Whether `filter` (possibly `$share/GROUP/filter`) matches `topic`: `+` is one level, `#` the
/// rest (the parent level included), and wildcards at the start never match `$` topics.
fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(shared) => shared.split_once('/').map_or("", |(_, f)| f),
        None => filter,
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (level, Some(name)) if level == name => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::filter_matches;

    #[test]
    fn filters() {
        for (filter, topic, expected) in [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("+/+", "/x", true),
            ("$share/g/a/+", "a/b", true),
            ("a/b", "a/b/c", false),
        ] {
            assert_eq!(filter_matches(filter, topic), expected, "{filter} {topic}");
        }
    }
}
