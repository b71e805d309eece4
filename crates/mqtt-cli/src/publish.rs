//! `mqtt publish`: one message, a file, stdin line by line, or a benchmark (`--count`).

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mqtt_tokio::{Client, Publish, QoS, UserProperty, Version};
use tokio::io::AsyncBufReadExt as _;

use crate::client_args::{
    ClientArgs, ClientSetup, ConnectArgs, PROPERTIES_HELP, Packet, parse_qos,
};

/// Options of `mqtt publish`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
#[command(group = clap::ArgGroup::new("source").args(["message", "file", "stdin_line", "stdin_file", "null_message"]))]
#[command(after_long_help = PROPERTIES_HELP)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    client: ClientArgs,
    /// The topic to publish to.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// The message.
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
    /// Send the contents of this file as the message.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Read stdin and send each line as a message (without its line break).
    #[arg(short = 'l', long = "stdin-line")]
    stdin_line: bool,
    /// Read stdin to its end and send it as one message.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// Send an empty message.
    #[arg(short = 'n', long = "null-message")]
    null_message: bool,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Retain the message.
    #[arg(short = 'r', long = "retain")]
    retain: bool,
    /// A user property NAME=VALUE (5.0); repeatable, order kept (before those of -D).
    #[arg(long = "user-property", value_name = "NAME=VALUE", value_parser = parse_user_property)]
    user_properties: Vec<(String, String)>,
    /// Message expiry interval in seconds (5.0).
    #[arg(long = "message-expiry", value_name = "SECS")]
    message_expiry: Option<u32>,
    /// Content type (5.0), e.g. `application/json`.
    #[arg(long = "content-type")]
    content_type: Option<String>,
    /// Response topic (5.0).
    #[arg(long = "response-topic")]
    response_topic: Option<String>,
    /// Correlation data (5.0), as text.
    #[arg(long = "correlation-data")]
    correlation_data: Option<String>,
    /// Benchmark: publish N messages (the message from -m/-f/-n, or --size bytes), then print
    /// the time taken, the rate, and for QoS 1 and 2 the latency percentiles (a progress bar
    /// on stderr meanwhile, when it is a terminal).
    #[arg(long = "count", value_name = "N", conflicts_with_all = ["stdin_line", "stdin_file"])]
    count: Option<u64>,
    /// Benchmark payload size in bytes, when no message is given.
    #[arg(
        long = "size",
        value_name = "BYTES",
        default_value_t = 64,
        requires = "count"
    )]
    size: usize,
    /// Benchmark: publish from this many concurrent tasks sharing the connection.
    #[arg(long = "concurrency", value_name = "C", default_value_t = 1, requires = "count",
          value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
}

fn parse_user_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

impl Args {
    /// The PUBLISH every message is a copy of (with an empty payload), with the properties of
    /// the flags and then of `-D PUBLISH`. Its topic is checked here, before connecting.
    fn template(&self, setup: &ClientSetup) -> anyhow::Result<Publish> {
        let topic = crate::client_args::topic_name(&self.topic)?;
        let mut publish = Publish::new(topic, Bytes::new());
        publish.qos = self.qos;
        publish.retain = self.retain;
        let p = &mut publish.properties;
        p.user_properties = self
            .user_properties
            .iter()
            .map(|(k, v)| UserProperty::new(k.clone(), v.clone()))
            .collect();
        p.message_expiry_interval = self.message_expiry;
        p.content_type = self.content_type.clone().map(Into::into);
        p.response_topic = self.response_topic.clone().map(Into::into);
        p.correlation_data = self.correlation_data.clone().map(Bytes::from);
        if self.connect.version == Version::V3_1_1 {
            let v5_only = [
                (!p.user_properties.is_empty(), "--user-property"),
                (p.message_expiry_interval.is_some(), "--message-expiry"),
                (p.content_type.is_some(), "--content-type"),
                (p.response_topic.is_some(), "--response-topic"),
                (p.correlation_data.is_some(), "--correlation-data"),
            ];
            if let Some((_, flag)) = v5_only.iter().find(|(used, _)| *used) {
                anyhow::bail!("{flag} needs MQTT 5 (-V 5), not 3.1.1");
            }
        }
        setup.apply_publish(p)?;
        Ok(publish)
    }

    /// The message of -m, -f, -s or -n, if one was given.
    fn message(&self) -> anyhow::Result<Option<Bytes>> {
        if let Some(message) = &self.message {
            return Ok(Some(Bytes::from(message.clone())));
        }
        if let Some(path) = &self.file {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Some(bytes.into()));
        }
        if self.stdin_file {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read stdin")?;
            return Ok(Some(bytes.into()));
        }
        Ok(self.null_message.then(Bytes::new))
    }
}

/// Runs `mqtt publish`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let setup = args.client.setup(
        &args.connect,
        "mqtt publish",
        &[
            Packet::Connect,
            Packet::Publish,
            Packet::Disconnect,
            Packet::Will,
        ],
    )?;
    let template = args.template(&setup)?;
    let message = args.message()?;
    if message.is_none() && !args.stdin_line && args.count.is_none() {
        anyhow::bail!("no message: give one of -m, -f, -l, -s or -n (or --count for a benchmark)");
    }
    let client = setup.connect(&args.connect).await?;
    let result = match args.count {
        Some(count) => {
            let payload = message.unwrap_or_else(|| Bytes::from(vec![b'x'; args.size]));
            benchmark(&client, template, payload, count, args.concurrency).await
        }
        None if args.stdin_line => publish_lines(&client, template).await,
        None => publish_one(&client, template, message.unwrap_or_default()).await,
    };
    // Every publish has completed (QoS 0: written), so nothing is lost by disconnecting now.
    setup.disconnect(&client).await;
    result
}

async fn publish_one(client: &Client, template: Publish, payload: Bytes) -> anyhow::Result<()> {
    let mut publish = template;
    publish.payload = payload;
    client
        .publish_with(publish)
        .await
        .context("publish failed")?;
    Ok(())
}

async fn publish_lines(client: &Client, template: Publish) -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
        publish_one(client, template.clone(), Bytes::from(line)).await?;
    }
    Ok(())
}

/// Microseconds, 1 µs to 1 hour, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

async fn benchmark(
    client: &Client,
    template: Publish,
    payload: Bytes,
    count: u64,
    concurrency: u64,
) -> anyhow::Result<()> {
    let qos = template.qos;
    let size = payload.len();
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(count), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} messages, {per_sec}, eta {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        let progress = progress.clone();
        let mut publish = template.clone();
        publish.payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = latency_histogram();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let sent = Instant::now();
                client.publish_with(publish.clone()).await?;
                if qos != QoS::AtMostOnce {
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    latencies.saturating_record(micros.max(1));
                }
                progress.inc(1);
            }
            Ok::<_, mqtt_tokio::Error>(latencies)
        }));
    }
    let mut latencies = latency_histogram();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(histogram)) => {
                let _ = latencies.add(histogram);
            }
            Ok(Err(error)) => failure = failure.or(Some(anyhow::Error::new(error))),
            Err(join) => {
                failure = failure.or(Some(anyhow::anyhow!("a publishing task failed: {join}")))
            }
        }
    }
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    if let Some(error) = failure {
        return Err(error.context("publish failed"));
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut report = format!(
        "Published {count} message(s) in {:.3} seconds from {concurrency} concurrent task(s).\n",
        elapsed.as_secs_f64()
    );
    #[allow(clippy::cast_precision_loss)] // rates need no more than 52 bits
    let (rate, megabytes) = (
        count as f64 / secs,
        (count as f64 * size as f64) / 1e6 / secs,
    );
    let _ = writeln!(
        report,
        "{rate:.0} messages/s, {megabytes:.2} MB/s ({size}-byte payloads, QoS {})",
        crate::format::qos_number(qos)
    );
    if qos != QoS::AtMostOnce && !latencies.is_empty() {
        let at = |q: f64| format_micros(latencies.value_at_quantile(q));
        let _ = writeln!(
            report,
            "Latency: p50 {}, p90 {}, p99 {}, max {}",
            at(0.5),
            at(0.9),
            at(0.99),
            format_micros(latencies.max())
        );
    }
    // `println!` would panic if stdout were closed (`| head -0`); a closed pipe is no error.
    match std::io::stdout().write_all(report.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

fn format_micros(micros: u64) -> String {
    let d = Duration::from_micros(micros);
    if micros < 1000 {
        format!("{micros} µs")
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }
}
