//! Brokers for the monitor tests, on loopback ports the kernel picks: ours (`mqtt broker`, the
//! same binary) and a real mosquitto (started as `tests/it/mosquitto.rs` does).

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mqtt_tokio::{Client, ClientOptions, Publish, QoS};
use tempfile::TempDir;

/// How long a broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker the tests talk to, killed on drop.
pub(crate) enum Broker {
    /// `mqtt broker`.
    Ours { child: Child, port: u16 },
    /// mosquitto.
    Mosquitto(Mosquitto),
}

impl Broker {
    /// `mqtt broker` on 127.0.0.1, on the port its log names.
    pub(crate) fn ours() -> Option<Broker> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt"))
            .args(["broker", "--bind", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mqtt broker runs");
        let stderr = child.stderr.take().expect("piped stderr");
        let (port_tx, port_rx) = mpsc::channel();
        // Reads the log to its end, so that the broker never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, address)) = line.split_once("listening on ") {
                    let port = address.trim().parse::<SocketAddr>().map(|a| a.port());
                    let _ = port_tx.send(port.map_err(|_| line.clone()));
                }
            }
        });
        let broker = |port| Broker::Ours { child, port };
        match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(port)) => Some(broker(port)),
            Ok(Err(line)) => {
                drop(broker(0));
                panic!("cannot read the address in {line:?}")
            }
            Err(_) => {
                drop(broker(0));
                panic!("mqtt broker logged no address within {START_TIMEOUT:?}")
            }
        }
    }

    /// mosquitto on 127.0.0.1; `None` (after a note) when it is not installed, unless `CI` is
    /// set, where that is a failure.
    pub(crate) fn mosquitto() -> Option<Broker> {
        Mosquitto::start(&[]).map(Broker::Mosquitto)
    }

    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        match self {
            Broker::Ours { port, .. } => *port,
            Broker::Mosquitto(mosquitto) => mosquitto.port,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Ours { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client that publishes for a test, on a runtime of its own.
pub(crate) struct Publisher {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Publisher {
    /// Connects to the broker on `port`.
    pub(crate) fn connect(port: u16) -> Publisher {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let client = runtime
            .block_on(Client::connect(ClientOptions::new("127.0.0.1", port)))
            .expect("the publisher connects");
        Publisher { runtime, client }
    }

    /// Publishes at QoS 1 and returns once the broker acknowledged it.
    pub(crate) fn publish(&self, topic: &str, payload: &[u8]) {
        self.publish_with(topic, payload, |_| {});
    }

    /// Publishes at QoS 1 after `setup` changed the PUBLISH (properties, retain), and returns
    /// once the broker acknowledged it.
    pub(crate) fn publish_with(
        &self,
        topic: &str,
        payload: &[u8],
        setup: impl FnOnce(&mut Publish),
    ) {
        let mut publish = Publish::new(topic.parse().expect("valid topic name"), payload.to_vec());
        publish.qos = QoS::AtLeastOnce;
        setup(&mut publish);
        self.runtime
            .block_on(self.client.publish_with(publish))
            .expect("publish");
    }
}

/// A running mosquitto, killed on drop.
pub(crate) struct Mosquitto {
    child: Child,
    port: u16,
    /// Holds the configuration; removed on drop.
    _dir: TempDir,
}

impl Mosquitto {
    /// Starts mosquitto with the base configuration and `extra` lines, and returns once it
    /// accepts connections. `None` when it is not installed and `CI` is not set.
    pub(crate) fn start(extra: &[&str]) -> Option<Mosquitto> {
        let Some(program) = find_mosquitto() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "mosquitto is not installed, and CI is set: install it (`apt-get install mosquitto`)"
                );
            }
            eprintln!("note: mosquitto is not installed; skipping this interop test");
            return None;
        };
        // Another process may take the free port between our choosing it and mosquitto
        // binding it: try a few times.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&program, extra) {
                Ok(mosquitto) => return Some(mosquitto),
                Err(failure) => failures.push(failure),
            }
        }
        panic!("mosquitto did not start:\n{}", failures.join("\n"));
    }

    fn try_start(program: &Path, extra: &[&str]) -> Result<Mosquitto, String> {
        let dir = tempfile::Builder::new()
            .prefix("mqtt-monitor-mosquitto-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 100\n"
        );
        for line in extra {
            config.push_str(line);
            config.push('\n');
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let mut mosquitto = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = mosquitto.child.try_wait() {
                return Err(format!("mosquitto exited with {status}"));
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
                return Ok(mosquitto);
            }
            if Instant::now() >= deadline {
                return Err(format!("mosquitto did not listen on {address} in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (its clients see the connection end).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `MOSQUITTO`, else `mosquitto` on `PATH`, else where Debian installs it.
fn find_mosquitto() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("mosquitto"))
            .find(|path| path.is_file())
    });
    on_path.or_else(|| {
        ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
    })
}
