//! Connection options shared by `publish`, `subscribe` and `monitor`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use mqtt_tokio::{Client, ClientOptions, QoS, TlsOptions, Version};

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
        let options = self.options()?;
        let target = match &self.url {
            Some(url) => url.clone(),
            None => format!("{}:{}", options.host(), options.port()),
        };
        Client::connect(options)
            .await
            .with_context(|| format!("cannot connect to {target}"))
    }
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

/// An error and its causes on one line, `outer: cause: root`, skipping a cause whose text the
/// line already ends with (errors that print their source as part of their own message).
pub(crate) fn one_line(error: &anyhow::Error) -> String {
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
    fn one_line_skips_causes_already_in_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(mqtt_tokio::Error::Io(io)).context("cannot connect");
        assert_eq!(one_line(&error), "cannot connect: I/O error: refused");
        let error = anyhow::anyhow!("two\nlines").context("outer");
        assert_eq!(one_line(&error), "outer: two lines");
    }

    #[test]
    fn qos_values() {
        assert_eq!(parse_qos("2"), Ok(QoS::ExactlyOnce));
        assert!(parse_qos("3").is_err());
    }
}
