//! Running `mqtt` (and mosquitto) as child processes: every wait has a deadline, children are
//! killed on drop, and a failing test shows what the children printed.

use std::fs;
use std::io::{BufRead as _, BufReader, ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long any one wait may take: generous, for a loaded 2-core machine.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// `mqtt` with the given arguments.
pub(crate) fn mqtt<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_mqtt"));
    command.args(args);
    command
}

/// What a finished command did.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Panics, with everything printed, unless the command succeeded.
    pub(crate) fn success(self) -> Output {
        assert!(self.status.success(), "command failed: {self:#?}");
        self
    }

    /// Panics unless the command failed with exactly one line on stderr, and no panic.
    pub(crate) fn one_line_failure(self) -> String {
        assert!(!self.status.success(), "command succeeded: {self:#?}");
        assert_eq!(self.status.code(), Some(1), "{self:#?}");
        let stderr = self.stderr.trim_end();
        assert!(
            !stderr.contains('\n') && !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "not one clean line: {self:#?}"
        );
        assert!(stderr.starts_with("mqtt: "), "{self:#?}");
        stderr.to_owned()
    }
}

/// A running child whose stdout and stderr lines are read by threads.
pub(crate) struct Running {
    name: String,
    child: Child,
    stdout: Receiver<String>,
    stdout_seen: Arc<Mutex<Vec<String>>>,
    stderr_seen: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn read_lines(
    pipe: impl Read + Send + 'static,
    seen: Arc<Mutex<Vec<String>>>,
    forward: Option<std::sync::mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if let Some(forward) = &forward {
                let _ = forward.send(line.clone());
            }
            seen.lock().unwrap().push(line);
        }
    })
}

impl Running {
    /// Starts `command` with piped stdout and stderr (and stdin closed).
    pub(crate) fn start(name: &str, mut command: Command) -> Running {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let (tx, stdout) = channel();
        let stdout_seen = Arc::default();
        let stderr_seen = Arc::default();
        let readers = vec![
            read_lines(
                child.stdout.take().unwrap(),
                Arc::clone(&stdout_seen),
                Some(tx),
            ),
            read_lines(child.stderr.take().unwrap(), Arc::clone(&stderr_seen), None),
        ];
        Running {
            name: name.to_owned(),
            child,
            stdout,
            stdout_seen,
            stderr_seen,
            readers,
        }
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// What it printed to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr_seen.lock().unwrap().join("\n")
    }

    fn describe(&self) -> String {
        format!(
            "{}: stdout so far:\n{}\nstderr so far:\n{}",
            self.name,
            self.stdout_seen.lock().unwrap().join("\n"),
            self.stderr()
        )
    }

    /// The next stdout line; panics after the timeout or at the end of the output.
    pub(crate) fn line(&self) -> String {
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line within {TIMEOUT:?}; {}", self.describe())
            }
            Err(RecvTimeoutError::Disconnected) => panic!("output ended; {}", self.describe()),
        }
    }

    /// Waits until a stderr line satisfies `condition`, and returns it.
    pub(crate) fn wait_stderr(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(line) = self
                .stderr_seen
                .lock()
                .unwrap()
                .iter()
                .find(|line| condition(line))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "waited {TIMEOUT:?} for {what}; {}",
                self.describe()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit (killing it after the timeout), then for its output.
    pub(crate) fn finish(mut self) -> Output {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("did not exit within {TIMEOUT:?}; {}", self.describe());
            }
            thread::sleep(Duration::from_millis(10));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        // Lines not yet taken with `line`.
        let stdout: Vec<String> = self.stdout.try_iter().collect();
        Output {
            status,
            stdout: stdout.iter().map(|l| format!("{l}\n")).collect(),
            stderr: self.stderr(),
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub(crate) fn interrupt(&self) {
        let status = Command::new("kill")
            .arg("-INT")
            .arg(self.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT failed");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- {} ---", self.describe());
        }
    }
}

/// Runs a command to its end (stdin from `input`), with the timeout.
pub(crate) fn run(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        use std::io::Write as _;
        let _ = stdin.write_all(&input);
    });
    let pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let (out, err) = (read_all(Box::new(pipes.0)), read_all(Box::new(pipes.1)));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {TIMEOUT:?}; stderr: {}",
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `mqtt broker` on a port the kernel picks, learnt from its log; stopped on drop.
pub(crate) struct OurBroker {
    pub(crate) process: Running,
    pub(crate) port: u16,
}

impl OurBroker {
    /// `mqtt broker --port 0` plus `extra` arguments.
    pub(crate) fn start(extra: &[&str]) -> OurBroker {
        let mut args = vec!["broker", "--port", "0"];
        args.extend_from_slice(extra);
        Self::start_args(&args)
    }

    /// `mqtt` with exactly these arguments; the first `listening on` line gives the port.
    pub(crate) fn start_args(args: &[&str]) -> OurBroker {
        let mut command = mqtt(args);
        command.env("RUST_LOG", "info");
        let process = Running::start("mqtt broker", command);
        let port = listening_ports(&process)[0];
        OurBroker { process, port }
    }
}

/// The ports of the `listening on ADDR:PORT` log lines, once the first one is there.
pub(crate) fn listening_ports(process: &Running) -> Vec<u16> {
    process.wait_stderr("`listening on`", |line| line.contains("listening on "));
    process
        .stderr()
        .lines()
        .filter_map(|line| line.split("listening on ").nth(1))
        .filter_map(|addr| addr.trim().parse::<SocketAddr>().ok())
        .map(|addr| addr.port())
        .collect()
}

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Ours,
    Mosquitto,
}

/// A broker of either kind, stopped on drop.
pub(crate) enum Server {
    Ours(OurBroker),
    Mosquitto(Mosquitto),
}

impl Server {
    /// Starts one; `None` when mosquitto is missing outside CI (the test is skipped).
    pub(crate) fn start(target: Target) -> Option<Server> {
        match target {
            Target::Ours => Some(Server::Ours(OurBroker::start(&[]))),
            Target::Mosquitto => Mosquitto::start().map(Server::Mosquitto),
        }
    }

    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        match self {
            Server::Ours(broker) => broker.port,
            Server::Mosquitto(broker) => broker.port,
        }
    }

    /// `-h 127.0.0.1 -p PORT`.
    pub(crate) fn address_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port().to_string(),
        ]
    }
}

/// Finds a program on `PATH` or in the sbin directories, else `None` (after a note, outside
/// CI; under CI a missing program fails the test).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    let found = on_path
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed, and CI is set (apt-get install mosquitto mosquitto-clients)"
        );
        eprintln!("note: {name} is not installed; skipping this test");
    }
    found
}

/// A real mosquitto on a free loopback port, killed on drop.
pub(crate) struct Mosquitto {
    child: Child,
    pub(crate) port: u16,
    dir: TempDir,
}

/// No silent limits (mosquitto drops queued messages beyond 1000 by default), and a window
/// as large as ours.
const MOSQUITTO_CONFIG: &str = "\
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 100
set_tcp_nodelay true
log_dest stderr
log_type all
";

impl Mosquitto {
    /// Starts mosquitto; `None` when it is not installed (outside CI).
    pub(crate) fn start() -> Option<Mosquitto> {
        Self::start_with(MOSQUITTO_CONFIG)
    }

    /// Starts mosquitto with this configuration after its `listener` line; `None` when it is
    /// not installed (outside CI).
    pub(crate) fn start_with(config: &str) -> Option<Mosquitto> {
        let program = find_program("mosquitto")?;
        // Another process may take the port between our choosing and mosquitto binding it.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&program, config) {
                Ok(broker) => return Some(broker),
                Err(failure) => failures.push(failure),
            }
        }
        panic!("mosquitto did not start: {failures:#?}");
    }

    fn try_start(program: &Path, body: &str) -> Result<Mosquitto, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let config = dir.path().join("mosquitto.conf");
        fs::write(&config, format!("listener {port} 127.0.0.1\n{body}"))
            .map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.path().join("mosquitto.log")).map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut broker = Mosquitto { child, port, dir };
        let deadline = Instant::now() + TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("mosquitto exited with {status}: {}", broker.log()));
            }
            match TcpStream::connect_timeout(&address, Duration::from_millis(100)) {
                Ok(_) => return Ok(broker),
                Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(format!("mosquitto did not listen: {}", broker.log()));
            }
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- mosquitto log ---\n{}", self.log());
        }
    }
}

/// A subscriber (`mqtt subscribe -d ...`) that is subscribed to every filter when this returns.
pub(crate) fn subscriber(server: &Server, args: &[&str]) -> Running {
    subscribed(server, args, count_filters(args))
}

/// `mqtt subscribe -d ARGS` on `server`, once `filters` subscriptions are granted (for command
/// lines whose filters [`subscriber`] cannot count: `-D`, `--will-topic`).
pub(crate) fn subscribed(server: &Server, args: &[&str], filters: usize) -> Running {
    let mut all: Vec<String> = vec!["subscribe".into(), "-d".into()];
    all.extend(server.address_args());
    all.extend(args.iter().map(|a| a.to_string()));
    let process = Running::start("mqtt subscribe", mqtt(&all));
    let deadline = Instant::now() + TIMEOUT;
    while process.stderr().matches("subscribed to ").count() < filters {
        assert!(
            Instant::now() < deadline,
            "not subscribed within {TIMEOUT:?}: {}",
            process.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
    process
}

/// How many filters a subscribe command line names (positional and `-t`).
fn count_filters(args: &[&str]) -> usize {
    let with_value = [
        "-t", "-q", "-F", "--format", "-C", "-V", "-i", "-u", "-P", "-k", "--cafile",
    ];
    let mut count = 0;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if *arg == "-t" {
            count += 1;
            args.next();
        } else if with_value.contains(arg) {
            args.next();
        } else if !arg.starts_with('-') {
            count += 1;
        }
    }
    count
}

/// `mqtt publish -h 127.0.0.1 -p PORT args...`, run to its end with `input` on stdin.
pub(crate) fn publish(server: &Server, args: &[&str], input: &[u8]) -> Output {
    let mut all: Vec<String> = vec!["publish".into()];
    all.extend(server.address_args());
    all.extend(args.iter().map(|a| a.to_string()));
    run(mqtt(&all), input)
}
