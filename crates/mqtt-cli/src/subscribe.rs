//! `mqtt subscribe`: prints each message of one or more subscriptions.

use std::io::{ErrorKind, Write as _};

use anyhow::Context as _;
use mqtt_tokio::{ConnectionEvent, Message, QoS, SubscribeOptions};
use tokio::sync::mpsc;

use crate::common::{ConnectArgs, parse_qos};
use crate::format::{Format, message_json_line, render};

/// Options of `mqtt subscribe`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
#[command(after_long_help = OUTPUT_HELP)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic filters to subscribe to (wildcards `+` and `#` allowed).
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
    /// A topic filter (as in mosquitto_sub); repeatable, adds to FILTER arguments.
    #[arg(short = 't', long = "topic", value_name = "FILTER")]
    topics: Vec<String>,
    /// Maximum QoS to receive at: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Print the topic before each payload.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// How to print payloads.
    #[arg(short = 'F', long = "format", value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count", value_name = "N")]
    count: Option<u64>,
    /// Acknowledge each QoS 1/2 message only once it is printed (and flushed).
    #[arg(long = "manual-ack")]
    manual_ack: bool,
    /// Do not add a line break after each payload.
    #[arg(short = 'N', long = "no-newline")]
    no_newline: bool,
    /// Say on stderr when connected and when each subscription is granted.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
}

const OUTPUT_HELP: &str = "\
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
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let filters: Vec<String> = args.filters.iter().chain(&args.topics).cloned().collect();
    if filters.is_empty() {
        anyhow::bail!("no topic filter: give one or more FILTER arguments or -t FILTER");
    }
    for filter in &filters {
        crate::common::check_filter(filter)?;
    }
    let stop = crate::common::shutdown_signal()?;
    let client = args.connect.connect().await?;
    if args.debug {
        eprintln!("connected as {}", client.client_id());
    }
    let events = client.events();
    let (tx, mut rx) = mpsc::channel::<(usize, Message)>(64);
    for (index, filter) in filters.iter().enumerate() {
        let mut options = SubscribeOptions::new(filter.clone()).qos(args.qos);
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
        if earlier.iter().any(|f| filter_matches(f, message.topic())) {
            if message.needs_ack() {
                message.ack().await.context("cannot acknowledge")?;
            }
            continue;
        }
        match print(&args, &message) {
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
    let _ = client.disconnect().await;
    outcome
}

/// Prints one message and flushes, so that a reader sees it at once.
fn print(args: &Args, message: &Message) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let end = if args.no_newline { "" } else { "\n" };
    if args.format == Format::Json {
        write!(out, "{}{end}", message_json_line(message.publish()))?;
    } else {
        let payload = render(message.payload(), args.format);
        if args.verbose {
            let dump = args.format == Format::Binary
                || (args.format == Format::Auto && std::str::from_utf8(message.payload()).is_err());
            // A hex dump starts on a line of its own, so that its columns line up.
            let separator = if dump { "\n" } else { " " };
            write!(out, "{}{separator}", message.topic())?;
        }
        write!(out, "{payload}{end}")?;
    }
    out.flush()
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
