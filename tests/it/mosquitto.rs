//! A real mosquitto broker for interop tests, one per test, on a port the kernel picks.
//!
//! ```ignore
//! let Some(broker) = Mosquitto::start() else { return }; // not installed, not under CI: skip
//! let address = broker.address(); // "127.0.0.1:PORT"
//! ```
//!
//! The broker is killed when the guard drops. If the test panicked, the broker's log is printed
//! first (the test harness shows it with the failure).

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at starting a broker: another process may take the free port between our choosing it
/// and mosquitto binding it.
const START_ATTEMPTS: usize = 3;

/// Where to look when `mosquitto` is not on `PATH` (Debian installs it under `/usr/sbin`, which a
/// non-root `PATH` may lack).
const KNOWN_PATHS: [&str; 3] = [
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
];

/// The configuration every broker starts with; `start_with` appends its lines after these, and
/// mosquitto takes the last value of an option given twice.
const BASE_CONFIG: &str = "\
allow_anonymous true
persistence false
# No silent limits. By default mosquitto drops a client's messages once 1000 are queued for it,
# and allows 20 QoS 1 and 2 messages in flight each way (announced to 5.0 clients as Receive
# Maximum; a 3.1.1 client that sends more is disconnected). 0 lifts each limit; a test that wants
# one sets it again in its extra lines.
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
set_tcp_nodelay true
log_dest stderr
log_type all
";

/// Extra lines for a mosquitto that keeps sessions and queued messages across a restart, in its
/// scratch directory. Started as root, mosquitto would switch to the `mosquitto` user, who cannot
/// write there.
pub(crate) const PERSISTENCE: [&str; 4] = [
    "user root",
    "persistence true",
    "persistence_location {dir}/",
    "autosave_interval 0",
];

/// A running mosquitto, killed on drop.
pub(crate) struct Mosquitto {
    child: Child,
    program: PathBuf,
    port: u16,
    /// Holds the configuration and the log; removed on drop.
    dir: TempDir,
}

impl Mosquitto {
    /// Starts a broker with the base configuration. See [`Mosquitto::start_with`].
    pub(crate) fn start() -> Option<Mosquitto> {
        Self::start_with(&[])
    }

    /// Starts a broker listening on 127.0.0.1 with the base configuration plus `extra_config`
    /// lines, and returns once it accepts connections. `{dir}` in a line stands for the broker's
    /// scratch directory (e.g. `persistence_location {dir}/`).
    ///
    /// The program is `MOSQUITTO` if that is set, else `mosquitto` on `PATH` or in `/usr/sbin`.
    /// Returns `None` after printing a notice when it is not there and the `CI` environment
    /// variable is not set: the caller skips its test. Panics when it is missing under CI, or
    /// does not start.
    pub(crate) fn start_with(extra_config: &[&str]) -> Option<Mosquitto> {
        let program = match find_program() {
            Ok(program) => program,
            Err(missing) if std::env::var_os("CI").is_some() => {
                panic!("{missing}, and CI is set: install it (`apt-get install mosquitto`)");
            }
            Err(missing) => {
                // Straight to stderr: the harness captures `eprintln!` of passing tests, and a
                // skip should be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "note: {missing}; skipping this interop test (install the `mosquitto` \
                     package, or set MOSQUITTO to its path)"
                );
                return None;
            }
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&program, extra_config) {
                Ok(broker) => return Some(broker),
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "mosquitto ({}) did not start in {START_ATTEMPTS} attempts:\n{}",
            program.display(),
            failures.join("\n")
        );
    }

    /// The port the broker listens on, on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// What the broker has logged so far (every log type, to stderr).
    pub(crate) fn log(&self) -> String {
        read_log(self.dir.path())
    }

    fn try_start(program: &Path, extra_config: &[&str]) -> Result<Mosquitto, String> {
        let dir = tempfile::Builder::new()
            .prefix("mqtt-tests-mosquitto-")
            .tempdir()
            .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
        let port = free_port().map_err(|error| format!("cannot find a free port: {error}"))?;

        let mut config = format!("listener {port} 127.0.0.1\n{BASE_CONFIG}");
        for line in extra_config {
            config.push_str(&line.replace("{dir}", &dir.path().display().to_string()));
            config.push('\n');
        }
        let config_path = dir.path().join("mosquitto.conf");
        fs::write(&config_path, config)
            .map_err(|error| format!("cannot write {}: {error}", config_path.display()))?;
        let child = spawn(program, dir.path())?;
        // From here on, dropping the guard kills the child, whatever happens next.
        let mut broker = Mosquitto {
            child,
            program: program.to_path_buf(),
            port,
            dir,
        };
        broker.wait_until_ready()?;
        Ok(broker)
    }

    /// Stops the broker as a service manager would (SIGTERM, so that with `persistence true` it
    /// saves its sessions and queued messages), then starts it again with the same configuration
    /// on the same port, and returns once it accepts connections. Panics if it does not.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the broker with SIGTERM (with `persistence true` it saves its state) and waits
    /// until it has exited. [`Mosquitto::start_again`] starts it again.
    pub(crate) fn stop(&mut self) {
        let terminated = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        assert!(
            terminated.as_ref().is_ok_and(|status| status.success()),
            "cannot send SIGTERM to mosquitto: {terminated:?}"
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not exit on SIGTERM within {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a stopped broker again with the same configuration on the same port, and returns
    /// once it accepts connections. Panics if it does not.
    pub(crate) fn start_again(&mut self) {
        self.child =
            spawn(&self.program, self.dir.path()).unwrap_or_else(|error| panic!("{error}"));
        if let Err(error) = self.wait_until_ready() {
            panic!("restarting: {error}");
        }
    }

    /// Polls until the port accepts a connection, the broker exits, or the start timeout passes.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "mosquitto exited with {status} before accepting connections; its log:\n{}",
                    self.log()
                ));
            }
            match TcpStream::connect_timeout(&address, Duration::from_millis(100)) {
                Ok(_) => return Ok(()),
                // Not listening yet: a refused connection fails at once, so pause briefly
                // rather than spin.
                Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "mosquitto did not accept connections on {address} within \
                     {START_TIMEOUT:?}; its log:\n{}",
                    self.log()
                ));
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // Killing a child that already exited fails harmlessly; `wait` reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- mosquitto log (port {}) ---\n{}--- end of mosquitto log ---",
                self.port,
                self.log()
            );
        }
    }
}

/// Runs `program` on the configuration in `dir`, appending its output to the log there.
fn spawn(program: &Path, dir: &Path) -> Result<Child, String> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("mosquitto.log"))
        .and_then(|log| Ok((log.try_clone()?, log)))
        .map_err(|error| format!("cannot open the log file: {error}"))?;
    Command::new(program)
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdin(Stdio::null())
        .stdout(log.0)
        .stderr(log.1)
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", program.display()))
}

/// `MOSQUITTO` if set, else `mosquitto` on `PATH`, else a known install location; the error
/// says where it looked.
fn find_program() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "mosquitto not found at MOSQUITTO={}",
                path.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("mosquitto"));
    on_path
        .chain(KNOWN_PATHS.iter().map(PathBuf::from))
        .find(|path| path.is_file())
        .ok_or_else(|| "mosquitto is not installed (not on PATH, nor in /usr/sbin)".to_string())
}

/// A port that was free a moment ago: the kernel's choice for a listener on port 0.
fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn read_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("mosquitto.log"))
        .unwrap_or_else(|error| format!("(cannot read the log: {error})\n"))
}
