//! The command line's connection options, shared by `publish`, `subscribe`, `rr` and
//! `monitor` (`-h`, `-p`, TLS, will, `-D` properties, …), and the checks of QoS, topic and
//! filter arguments.

mod properties;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use mqtt_tokio::{Client, ClientOptions, PublishProperties, QoS, TlsOptions, Version, Will};

pub(crate) use properties::{PROPERTIES_HELP, Packet};
use properties::{Properties, Value};

/// How to reach the broker (names as in `mosquitto_pub` / `mosquitto_sub`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectArgs {
    /// Broker host.
    #[arg(
        help_heading = "Connection",
        short = 'h',
        long = "host",
        default_value = "localhost"
    )]
    pub(crate) host: String,
    /// Broker port (default 1883, or 8883 with TLS).
    #[arg(help_heading = "Connection", short = 'p', long = "port")]
    pub(crate) port: Option<u16>,
    /// Broker URL (overrides -h and -p): `scheme://[user[:password]@]host[:port][/path]` with
    /// the schemes mqtt (port 1883), mqtts (TLS, 8883), ws (WebSocket, 80) and wss (WebSocket
    /// over TLS, 443); for ws and wss the path is the WebSocket path (default /mqtt). Or
    /// `unix:///path/to/socket`. -u and -P override the URL's user and password.
    #[arg(help_heading = "Connection", short = 'L', long = "url")]
    pub(crate) url: Option<String>,
    /// Client identifier (default: assigned by the broker).
    #[arg(help_heading = "Connection", short = 'i', long = "id")]
    pub(crate) id: Option<String>,
    /// Keep alive in seconds (0 turns it off).
    #[arg(
        help_heading = "Connection",
        short = 'k',
        long = "keepalive",
        default_value_t = 60
    )]
    pub(crate) keepalive: u16,
    /// Keep the session when disconnecting (`-c` as in mosquitto: no clean start).
    #[arg(
        help_heading = "Connection",
        short = 'c',
        long = "disable-clean-session"
    )]
    pub(crate) no_clean: bool,
    /// User name.
    #[arg(help_heading = "Connection", short = 'u', long = "username")]
    pub(crate) username: Option<String>,
    /// Password.
    #[arg(
        help_heading = "Connection",
        short = 'P',
        long = "pw",
        requires = "username"
    )]
    pub(crate) password: Option<String>,
    /// Protocol version: 311 (MQTT 3.1.1) or 5 (MQTT 5.0).
    #[arg(help_heading = "Connection", short = 'V', long = "protocol-version", default_value = "5", value_parser = parse_version)]
    pub(crate) version: Version,
    /// Trust the CA certificates in this PEM file (turns TLS on).
    #[arg(help_heading = "Connection", long = "cafile")]
    pub(crate) cafile: Option<PathBuf>,
    /// Client certificate chain (PEM), with --key.
    #[arg(help_heading = "Connection", long = "cert", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Client private key (PEM), with --cert.
    #[arg(help_heading = "Connection", long = "key", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Verify the server's certificate against this name instead of the host.
    #[arg(help_heading = "Connection", long = "tls-server-name")]
    pub(crate) tls_server_name: Option<String>,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
}

fn parse_version(s: &str) -> Result<Version, String> {
    match s {
        "5" | "50" | "mqttv5" => Ok(Version::V5),
        "311" | "4" | "mqttv311" => Ok(Version::V3_1_1),
        _ => Err(format!("unknown protocol version {s:?} (use 311 or 5)")),
    }
}

impl ConnectArgs {
    /// The client options these arguments describe. Reconnect is off: a command-line client
    /// reports a lost connection instead of retrying behind the user's back.
    pub(crate) fn options(&self) -> anyhow::Result<ClientOptions> {
        let mut options = match &self.url {
            Some(url) => ClientOptions::from_url(url)?,
            None => {
                let tls = self.cafile.is_some() || self.cert.is_some();
                let port = self.port.unwrap_or(if tls { 8883 } else { 1883 });
                ClientOptions::new(self.host.clone(), port)
            }
        };
        if self.cafile.is_some() || self.cert.is_some() {
            let mut tls = match &self.cafile {
                Some(ca) => TlsOptions::ca_file(ca),
                None => TlsOptions::default(),
            };
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.client_cert(cert, key);
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.server_name(name);
            }
            options = options.tls(tls);
        }
        options = options
            .version(self.version)
            .keep_alive(Duration::from_secs(self.keepalive.into()))
            .clean_start(!self.no_clean)
            .reconnect(None);
        if let Some(id) = &self.id {
            options = options.client_id(id.clone());
        }
        if let Some(user) = &self.username {
            let password = self.password.clone().unwrap_or_default();
            options = options.credentials(user.clone(), password.into_bytes());
        }
        Ok(options)
    }

    /// Connects, with the broker's address in the error.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        self.connect_with(self.options()?).await
    }

    /// Connects with `options` (those of [`Self::options`], added to), with the broker's
    /// address in the error.
    pub(crate) async fn connect_with(&self, options: ClientOptions) -> anyhow::Result<Client> {
        let target = match &self.url {
            Some(url) => url.clone(),
            None => format!("{}:{}", options.host(), options.port()),
        };
        Client::connect(options)
            .await
            .with_context(|| format!("cannot connect to {target}"))
    }
}

/// What `publish`, `subscribe` and `rr` add to [`ConnectArgs`]: a will, the session expiry
/// and MQTT 5.0 properties by name, spelt as in mosquitto_pub, mosquitto_sub and mosquitto_rr.
/// Checked by [`ClientArgs::setup`] with one-line errors rather than by clap.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// Will: the broker publishes a message on this topic if the connection ends without a
    /// DISCONNECT (the process killed, the network gone). A Ctrl-C disconnects cleanly, so no
    /// will.
    #[arg(help_heading = "Will", long = "will-topic", value_name = "TOPIC")]
    will_topic: Option<String>,
    /// The will's payload (default: empty); needs --will-topic.
    #[arg(help_heading = "Will", long = "will-payload", value_name = "PAYLOAD")]
    will_payload: Option<String>,
    /// The will's QoS: 0, 1 or 2 (default 0); needs --will-topic.
    #[arg(help_heading = "Will", long = "will-qos", value_name = "QOS")]
    will_qos: Option<String>,
    /// Retain the will; needs --will-topic.
    #[arg(help_heading = "Will", long = "will-retain")]
    will_retain: bool,
    /// Session expiry interval in seconds (5.0): how long the broker keeps the session once the
    /// connection ends; -1 or ∞ for never (then -i is needed). Default: never with -c, else 0.
    #[arg(
        help_heading = "Connection",
        short = 'x',
        long = "session-expiry",
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    session_expiry: Option<String>,
    #[command(flatten)]
    properties: PropertyArgs,
}

/// `-D`, each occurrence's values apart: clap's derive does not group values by occurrence, so
/// this one argument is declared by hand.
#[derive(Debug, Clone, Default)]
struct PropertyArgs(Vec<Vec<String>>);

impl PropertyArgs {
    const ID: &str = "property";
}

impl clap::FromArgMatches for PropertyArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let occurrences = matches
            .get_occurrences::<String>(Self::ID)
            .map(|occurrences| {
                occurrences
                    .map(|values| values.cloned().collect())
                    .collect()
            })
            .unwrap_or_default();
        Ok(PropertyArgs(occurrences))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for PropertyArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        command.arg(
            clap::Arg::new(Self::ID)
                .short('D')
                .long("property")
                .help_heading("Properties (5.0)")
                .num_args(3..=4)
                .value_names(["COMMAND", "IDENTIFIER", "VALUE"])
                .action(clap::ArgAction::Append)
                .help(
                    "An MQTT 5.0 property: `-D COMMAND IDENTIFIER VALUE`, or `-D COMMAND \
                     user-property NAME VALUE`, e.g. `-D PUBLISH user-property unit celsius`, \
                     `-D CONNECT session-expiry-interval 60`; repeatable. The list is under \
                     PROPERTIES in --help",
                ),
        )
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

/// The session expiry interval that means "never" (0xFFFFFFFF, section 3.1.2.11.2).
const NEVER: u32 = u32::MAX;

impl ClientArgs {
    /// The fourth values of `-D`s that take three: clap gives a following FILTER argument
    /// (`-D CONNECT session-expiry-interval 60 a/b`) to `-D`, whose fourth value only
    /// `user-property` uses. `subscribe` takes them back as filters.
    pub(crate) fn take_stray_values(&mut self) -> Vec<String> {
        let mut stray = Vec::new();
        for values in &mut self.properties.0 {
            let user_property = values
                .get(1)
                .is_some_and(|name| name.eq_ignore_ascii_case("user-property"));
            if values.len() == 4 && !user_property {
                stray.extend(values.pop());
            }
        }
        stray
    }

    /// Checks everything and makes the client's options (from `connect`, then the will, the
    /// session expiry and the CONNECT properties). `command` is the subcommand, for messages;
    /// `sends` the packets it sends: a `-D` for another is an error.
    pub(crate) fn setup(
        &self,
        connect: &ConnectArgs,
        command: &str,
        sends: &[Packet],
    ) -> anyhow::Result<ClientSetup> {
        let properties = Properties::parse(&self.properties.0).map_err(anyhow::Error::msg)?;
        let v5 = connect.version == Version::V5;
        for property in properties.iter() {
            if !v5 {
                anyhow::bail!("{} needs MQTT 5 (-V 5), not 3.1.1", property.given);
            }
            if !sends.contains(&property.packet) {
                anyhow::bail!("{}: {command} sends no {}", property.given, property.packet);
            }
            if property.packet == Packet::Will && self.will_topic.is_none() {
                anyhow::bail!("{}: there is no will (give --will-topic)", property.given);
            }
        }
        let mut options = connect.options()?;
        if let Some(mut will) = self.will()? {
            properties.apply_will(&mut will);
            options = options.will(will);
        }
        properties.apply_connect(&mut options);

        let mut expiry = properties.session_expiry(Packet::Connect);
        if let Some(text) = &self.session_expiry {
            if !v5 {
                anyhow::bail!("-x needs MQTT 5 (-V 5), not 3.1.1");
            }
            if expiry.is_some() {
                anyhow::bail!("-x and -D CONNECT session-expiry-interval: give one of them");
            }
            expiry = Some(parse_session_expiry(text).map_err(anyhow::Error::msg)?);
        }
        if v5 && connect.no_clean && expiry.is_none() {
            // As mosquitto: a session kept across connections must outlive them.
            expiry = Some(NEVER);
        }
        if let Some(secs) = expiry {
            options.config_mut().properties.session_expiry_interval = Some(secs);
        }
        if connect.id.is_none() {
            if expiry == Some(NEVER) {
                anyhow::bail!(
                    "a session that never expires (-c, or -x -1) needs a client identifier (-i)"
                );
            }
            if !v5 && connect.no_clean {
                anyhow::bail!("-c with MQTT 3.1.1 needs a client identifier (-i)");
            }
        }
        if properties.session_expiry(Packet::Disconnect).unwrap_or(0) > 0
            && expiry.unwrap_or(0) == 0
        {
            // MQTT-3.14.2-2.
            anyhow::bail!(
                "-D DISCONNECT session-expiry-interval: the session expiry at CONNECT is 0, so \
                 it must stay 0 (give -x)"
            );
        }
        Ok(ClientSetup {
            options,
            properties,
        })
    }

    /// The will of --will-topic and the flags that go with it.
    fn will(&self) -> anyhow::Result<Option<Will>> {
        let Some(topic) = &self.will_topic else {
            let lone = [
                (self.will_payload.is_some(), "--will-payload"),
                (self.will_qos.is_some(), "--will-qos"),
                (self.will_retain, "--will-retain"),
            ];
            if let Some((_, flag)) = lone.iter().find(|(given, _)| *given) {
                anyhow::bail!("{flag} needs --will-topic");
            }
            return Ok(None);
        };
        let topic = mqtt_tokio::TopicName::new(topic.as_str())
            .map_err(|error| anyhow::anyhow!("invalid will topic {topic:?}: {error}"))?;
        let qos = match &self.will_qos {
            Some(qos) => parse_qos(qos).map_err(|error| anyhow::anyhow!("--will-qos: {error}"))?,
            None => QoS::AtMostOnce,
        };
        let payload = Bytes::from(self.will_payload.clone().unwrap_or_default());
        let mut will = Will::new(topic, payload, qos);
        will.retain = self.will_retain;
        Ok(Some(will))
    }
}

/// `-x`: seconds, or -1 or ∞ for never, as in mosquitto.
fn parse_session_expiry(text: &str) -> Result<u32, String> {
    match text {
        "-1" | "∞" => Ok(NEVER),
        _ => text.parse().map_err(|_| {
            format!("-x {text}: must be a number of seconds from 0 to 4294967295, or -1 or ∞")
        }),
    }
}

/// The client's options and the `-D`s that go in later packets, checked.
#[derive(Debug)]
pub(crate) struct ClientSetup {
    options: ClientOptions,
    properties: Properties,
}

impl ClientSetup {
    /// Connects as `connect` says, with the will, session expiry and CONNECT properties.
    pub(crate) async fn connect(&self, connect: &ConnectArgs) -> anyhow::Result<Client> {
        connect.connect_with(self.options.clone()).await
    }

    /// The `-D SUBSCRIBE` properties.
    pub(crate) fn subscribe_properties(&self) -> mqtt_tokio::SubscribeProperties {
        self.properties.subscribe()
    }

    /// Adds the `-D PUBLISH` properties to `properties`; one it already has (from a flag such
    /// as `--content-type`) is an error.
    pub(crate) fn apply_publish(&self, properties: &mut PublishProperties) -> anyhow::Result<()> {
        self.properties
            .apply_publish(properties)
            .map_err(anyhow::Error::msg)
    }

    /// Disconnects with the `-D DISCONNECT` properties. A connection already gone is no error:
    /// there is nothing left to end.
    pub(crate) async fn disconnect(&self, client: &Client) {
        let mut disconnect = argument_of(Client::disconnect_with);
        let d = &mut disconnect.properties;
        for property in self.properties.of(Packet::Disconnect) {
            match &property.value {
                Value::SessionExpiryInterval(secs) => d.session_expiry_interval = Some(*secs),
                Value::ReasonString(text) => d.reason_string = Some(text.clone().into()),
                Value::ServerReference(text) => d.server_reference = Some(text.clone().into()),
                Value::UserProperty(name, value) => d
                    .user_properties
                    .push(mqtt_tokio::UserProperty::new(name.clone(), value.clone())),
                // `Property::parse` lets no other property into DISCONNECT.
                _ => {}
            }
        }
        let _ = client.disconnect_with(disconnect).await;
    }
}

/// A default value of the type `f` takes as its second argument. `Client::disconnect_with`
/// takes a `Disconnect`, which mqtt-tokio does not re-export; this names it for us.
fn argument_of<A, T: Default, F>(_f: fn(A, T) -> F) -> T {
    T::default()
}

/// Parses a QoS: 0, 1 or 2.
pub(crate) fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err(format!("QoS must be 0, 1 or 2, not {s:?}")),
    }
}

/// Checks a topic filter before connecting (MQTT-4.7.1-1, MQTT-4.7.1-2, MQTT-4.7.3-1), so that a
/// typo is reported as such rather than as whatever the broker makes of it.
pub(crate) fn check_filter(filter: &str) -> anyhow::Result<()> {
    mqtt_tokio::topic::check_topic_filter(filter)
        .map_err(|error| anyhow::anyhow!("invalid topic filter {filter:?}: {error}"))
}

/// Checks a topic name before connecting (no wildcards, MQTT-3.3.2-2; not empty, MQTT-4.7.3-1).
pub(crate) fn topic_name(topic: &str) -> anyhow::Result<mqtt_tokio::TopicName> {
    mqtt_tokio::TopicName::new(topic)
        .map_err(|error| anyhow::anyhow!("invalid topic {topic:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_values() {
        assert_eq!(parse_qos("2"), Ok(QoS::ExactlyOnce));
        assert!(parse_qos("3").is_err());
    }
}
