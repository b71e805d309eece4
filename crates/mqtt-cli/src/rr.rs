//! `mqtt rr`: one request and its response, with MQTT 5.0 request/response, as mosquitto_rr.
//!
//! Subscribes to the response topic, publishes the request with that Response Topic and a
//! Correlation Data, and prints the first response. `Client::request` picks a response topic
//! of its own; mosquitto_rr's users give theirs (`-e`), so this subscribes and publishes itself.

use std::io::{ErrorKind, Read as _};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use mqtt_tokio::{Client, Message, Publish, QoS, Subscription, Version};

use crate::client_args::{
    ClientArgs, ClientSetup, ConnectArgs, PROPERTIES_HELP, Packet, parse_qos,
};
use crate::subscribe::{OUTPUT_HELP, OutputArgs, subscribe_options};

/// Options of `mqtt rr`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
#[command(group = clap::ArgGroup::new("source").args(["message", "file", "stdin_file", "null_message"]))]
#[command(after_long_help = format!("{RR_HELP}\n\n{OUTPUT_HELP}\n\n{PROPERTIES_HELP}"))]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    client: ClientArgs,
    /// The topic to send the request to.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// The response topic: subscribed to, and sent as the request's Response Topic.
    #[arg(short = 'e', long = "response-topic", value_name = "TOPIC")]
    response_topic: String,
    /// The request message.
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
    /// Send the contents of this file as the request.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Read stdin to its end and send it as the request.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// Send an empty request.
    #[arg(short = 'n', long = "null-message")]
    null_message: bool,
    /// Quality of service of the request, and the most the response is received at: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Wait at most this many seconds, from when connected, for the response (default: as
    /// mosquitto_rr, for ever).
    #[arg(short = 'W', long = "timeout", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Ignore retained messages on the response topic (5.0: the broker is asked not to send
    /// them at all).
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
    #[command(flatten)]
    output: OutputArgs,
    /// Say on stderr when connected, subscribed and when the request is sent.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
}

const RR_HELP: &str = "\
REQUEST AND RESPONSE:
  The request carries the Response Topic of -e and a Correlation Data: that of
  -D PUBLISH correlation-data, else one made up for this request. The first message on the
  response topic is the response, unless it carries another Correlation Data (a response to
  someone else's request): those are skipped. A responder that answers without one is heard.
  MQTT 5.0 only: 3.1.1 has neither Response Topic nor Correlation Data.";

impl Args {
    /// The request, properties included. Topics are checked here, before connecting.
    fn request(&self, setup: &ClientSetup) -> anyhow::Result<Publish> {
        let topic = crate::client_args::topic_name(&self.topic)?;
        crate::client_args::topic_name(&self.response_topic)
            .context("-e must be a topic name (no wildcards)")?;
        let payload = if let Some(message) = &self.message {
            Bytes::from(message.clone())
        } else if let Some(path) = &self.file {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Bytes::from(bytes)
        } else if self.stdin_file {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read stdin")?;
            Bytes::from(bytes)
        } else if self.null_message {
            Bytes::new()
        } else {
            anyhow::bail!("no request: give one of -m, -f, -s or -n");
        };
        let mut request = Publish::new(topic, payload);
        request.qos = self.qos;
        request.properties.response_topic = Some(self.response_topic.clone().into());
        setup
            .apply_publish(&mut request.properties)
            .context("-e gives the response topic")?;
        if request.properties.correlation_data.is_none() {
            request.properties.correlation_data = Some(correlation_data());
        }
        Ok(request)
    }
}

/// Correlation data that no other request is likely to carry: this process and the time.
fn correlation_data() -> Bytes {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    Bytes::from(format!("mqtt-rr-{}-{nanos}", std::process::id()))
}

/// Runs `mqtt rr`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.connect.version != Version::V5 {
        anyhow::bail!(
            "mqtt rr needs MQTT 5 (-V 5), not 3.1.1: 3.1.1 has no Response Topic or Correlation Data"
        );
    }
    let setup = args.client.setup(
        &args.connect,
        "mqtt rr",
        &[
            Packet::Connect,
            Packet::Subscribe,
            Packet::Publish,
            Packet::Disconnect,
            Packet::Will,
        ],
    )?;
    let request = args.request(&setup)?;
    let stop = crate::shutdown_signal()?;
    let client = setup.connect(&args.connect).await?;
    if args.debug {
        eprintln!("connected as {}", client.client_id());
    }
    // As mosquitto_rr's -W, the clock starts once connected.
    let wait = args.timeout.map(Duration::from_secs);
    let exchange = async {
        match wait {
            Some(wait) => tokio::time::timeout(wait, exchange(&args, &setup, &client, request))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "no response on {} within {} s",
                        args.response_topic,
                        wait.as_secs()
                    ))
                }),
            None => exchange(&args, &setup, &client, request).await,
        }
    };
    let outcome = tokio::select! {
        outcome = exchange => outcome,
        () = stop => Ok(()),
    };
    setup.disconnect(&client).await;
    outcome
}

/// Subscribes, sends the request, and prints the response.
async fn exchange(
    args: &Args,
    setup: &ClientSetup,
    client: &Client,
    request: Publish,
) -> anyhow::Result<()> {
    let options = subscribe_options(
        &args.response_topic,
        args.qos,
        args.no_retained,
        args.connect.version,
    )
    .properties(setup.subscribe_properties());
    let mut responses = client
        .subscribe_with(options)
        .await
        .with_context(|| format!("cannot subscribe to {:?}", args.response_topic))?;
    if args.debug {
        eprintln!(
            "subscribed to {} ({})",
            args.response_topic,
            responses.reason_code()
        );
    }
    let correlation = request.properties.correlation_data.clone();
    client
        .publish_with(request)
        .await
        .context("cannot send the request")?;
    if args.debug {
        eprintln!("request sent to {}", args.topic);
    }
    let response = first_response(&mut responses, correlation.as_ref(), args.no_retained).await?;
    match args.output.print(&response) {
        // A reader that went away (`| head -0`) is a normal end.
        Err(error) if error.kind() != ErrorKind::BrokenPipe => {
            return Err(anyhow::Error::new(error).context("cannot write to stdout"));
        }
        _ => {}
    }
    Ok(())
}

/// The first message that answers the request: not one carrying other correlation data, nor,
/// with `no_retained`, a retained one.
async fn first_response(
    responses: &mut Subscription,
    correlation: Option<&Bytes>,
    no_retained: bool,
) -> anyhow::Result<Message> {
    while let Some(message) = responses.recv().await {
        let theirs = message
            .properties()
            .correlation_data
            .as_ref()
            .is_some_and(|data| Some(data) != correlation);
        let stale = no_retained && message.retain();
        if !theirs && !stale {
            return Ok(message);
        }
    }
    anyhow::bail!("disconnected before the response came")
}
