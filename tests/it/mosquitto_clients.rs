//! Our broker driven by third-party clients: `mosquitto_pub` and `mosquitto_sub` (the Debian
//! package `mosquitto-clients`), over 3.1.1 and 5.0. Publishing at each QoS, retained
//! messages, a password file (ours and `mosquitto_passwd`'s) and an ACL file.
//!
//! Each test runs its own broker in-process on a free loopback port. The clients run with a
//! deadline and are killed on drop; a test waits on the broker's counters (a subscription
//! exists, a message is retained), never for a fixed time. A missing client program skips the
//! test with a notice, or fails it under CI.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mqtt_tokio::broker::{AclFile, BrokerHandle, PasswordFile, Stats};
use mqtt_tokio::{Broker, BrokerBuilder, TokioRuntime};
use tempfile::TempDir;

use crate::mosquitto::Mosquitto;

/// How long a client program may run, and a condition may take to hold.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The protocol versions, as `-V` takes them.
const VERSIONS: [&str; 2] = ["311", "5"];

// ---------------------------------------------------------------------------------------------
// Publishing and subscribing

#[test]
fn each_qos_reaches_mosquitto_sub() {
    let Some(tools) = Tools::find() else { return };
    let broker = OurBroker::start(Broker::builder());
    for version in VERSIONS {
        let topic = format!("clients/v{version}");
        let sub = tools.sub(
            &broker,
            version,
            &["-q", "2", "-C", "3", "-t", &format!("{topic}/#")],
        );
        broker.wait_for("the subscription", |stats| stats.subscriptions == 1);
        for qos in ["0", "1", "2"] {
            let out = tools
                .publish(
                    &broker,
                    version,
                    &["-q", qos, "-t", &format!("{topic}/q{qos}")],
                )
                .arg("-m")
                .arg(format!("hello at QoS {qos}"))
                .run();
            out.assert_success("mosquitto_pub");
        }
        let out = sub.finish();
        out.assert_success("mosquitto_sub");
        let mut lines: Vec<&str> = out.stdout.lines().collect();
        lines.sort_unstable();
        let expected: Vec<String> = (0..3)
            .map(|qos| format!("{topic}/q{qos} qos={qos} retain=0 hello at QoS {qos}"))
            .collect();
        assert_eq!(lines, expected, "-V {version}\n{out}");
        broker.wait_for("the subscriber to leave", |stats| stats.subscriptions == 0);
    }
}

#[test]
fn retained_messages_reach_later_subscribers() {
    let Some(tools) = Tools::find() else { return };
    let broker = OurBroker::start(Broker::builder());
    // The broker's own `$SYS/broker/...` messages are retained too (published before the first
    // request is answered).
    let own = broker.stats().retained;
    for (n, version) in VERSIONS.into_iter().enumerate() {
        let topic = format!("clients/retained/v{version}");
        tools
            .publish(
                &broker,
                version,
                &["-r", "-q", "1", "-t", &topic, "-m", "kept"],
            )
            .run()
            .assert_success("mosquitto_pub -r");
        broker.wait_for("the retained message", |stats| {
            stats.retained == own + n + 1
        });
        let out = tools
            .sub(&broker, version, &["-q", "1", "-C", "1", "-t", &topic])
            .finish();
        out.assert_success("mosquitto_sub");
        assert_eq!(
            out.stdout.trim_end(),
            format!("{topic} qos=1 retain=1 kept"),
            "-V {version}\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// A broker that requires a user name and password from the file at `path`.
fn password_broker(path: &Path) -> OurBroker {
    let passwords = PasswordFile::load(path).expect("password file");
    OurBroker::start(Broker::builder().authenticator(passwords))
}

/// `alice` with `secret` gets in; a wrong password, an unknown user and no user are refused.
fn check_password_protection(tools: &Tools, broker: &OurBroker) {
    for version in VERSIONS {
        let topic = format!("auth/v{version}");
        let sub = tools.sub(
            broker,
            version,
            &[
                "-u", "alice", "-P", "secret", "-q", "1", "-C", "1", "-t", &topic,
            ],
        );
        broker.wait_for("the subscription", |stats| stats.subscriptions == 1);
        // mosquitto_pub exits with the CONNACK code: 0x86 Bad User Name or Password (3.1.1:
        // 4), or for no user name 0x87 Not authorized (3.1.1: 5).
        let refused: [(&[&str], i32, i32, &str); 3] = [
            (
                &["-u", "alice", "-P", "wrong"],
                4,
                0x86,
                "bad user name or password",
            ),
            (
                &["-u", "mallory", "-P", "secret"],
                4,
                0x86,
                "bad user name or password",
            ),
            (&[], 5, 0x87, "not authori"),
        ];
        for (credentials, code_v311, code_v5, message) in refused {
            let out = tools
                .publish(broker, version, credentials)
                .args(["-q", "1", "-t", &topic, "-m", "intruder"])
                .run();
            let code = if version == "5" { code_v5 } else { code_v311 };
            assert_eq!(
                out.status.and_then(|status| status.code()),
                Some(code),
                "-V {version} {credentials:?} was not refused as expected\n{out}"
            );
            assert!(
                out.stderr.to_lowercase().contains(message),
                "-V {version} {credentials:?}: the refusal was not reported\n{out}"
            );
        }
        tools
            .publish(broker, version, &["-u", "alice", "-P", "secret"])
            .args(["-q", "1", "-t", &topic, "-m", "welcome"])
            .run()
            .assert_success("mosquitto_pub with the right password");
        let out = sub.finish();
        out.assert_success("mosquitto_sub");
        assert_eq!(
            out.stdout.trim_end(),
            format!("{topic} qos=1 retain=0 welcome"),
            "only the right password's message arrives (-V {version})\n{out}"
        );
        broker.wait_for("the subscriber to leave", |stats| stats.connections == 0);
    }
}

#[test]
fn password_file_of_ours_protects_the_broker() {
    let Some(tools) = Tools::find() else { return };
    let dir = scratch_dir();
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set_password("alice", b"secret").expect("hash");
    file.set_password("bob", b"other").expect("hash");
    fs::write(&path, file.to_string()).expect("write the password file");
    check_password_protection(&tools, &password_broker(&path));
}

#[test]
fn password_file_of_mosquitto_passwd_protects_the_broker() {
    let Some(tools) = Tools::find() else { return };
    let Some(passwd) = find_program("mosquitto_passwd", "mosquitto") else {
        return;
    };
    let dir = scratch_dir();
    // Both of its formats: `$7$` (the default) and `-H sha512` (`$6$`).
    for (hash_args, name) in [
        (&[][..], "passwd-pbkdf2"),
        (&["-H", "sha512"][..], "passwd-sha512"),
    ] {
        let path = dir.path().join(name);
        let out = Run::new(&passwd)
            .args(hash_args)
            .args(["-b", "-c"])
            .arg(&path)
            .args(["alice", "secret"])
            .run();
        out.assert_success("mosquitto_passwd");
        let text = fs::read_to_string(&path).expect("read the password file");
        let prefix = if hash_args.is_empty() { "$7$" } else { "$6$" };
        assert!(text.starts_with(&format!("alice:{prefix}")), "{text}");
        check_password_protection(&tools, &password_broker(&path));
    }
}

#[test]
fn mosquitto_accepts_our_password_file() {
    let Some(tools) = Tools::find() else { return };
    let dir = scratch_dir();
    let path = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set_password("alice", b"secret").expect("hash");
    fs::write(&path, file.to_string()).expect("write the password file");
    let password_file = format!("password_file {}", path.display());
    let Some(mosquitto) = Mosquitto::start_with(&["allow_anonymous false", &password_file]) else {
        return;
    };
    let port = mosquitto.port();
    let pub_with = |credentials: &[&str]| {
        tools
            .publish_to(port, "5", credentials)
            .args(["-q", "1", "-t", "t", "-m", "m"])
            .run()
    };
    pub_with(&["-u", "alice", "-P", "secret"]).assert_success("mosquitto_pub to mosquitto");
    let out = pub_with(&["-u", "alice", "-P", "wrong"]);
    assert!(
        out.status.is_some_and(|status| !status.success()),
        "mosquitto let a wrong password in\n{out}\n{}",
        mosquitto.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Authorization

const ACL: &str = "\
user alice
topic readwrite alice/#
topic write shared/#

user bob
topic read shared/#
topic write bob/#
";

#[test]
fn acl_file_limits_subscriptions_and_publications() {
    let Some(tools) = Tools::find() else { return };
    let mut passwords = PasswordFile::new();
    passwords.set_password("alice", b"a").expect("hash");
    passwords.set_password("bob", b"b").expect("hash");
    let acl: AclFile = ACL.parse().expect("ACL");
    let broker = OurBroker::start(Broker::builder().authenticator(passwords).authorizer(acl));
    let alice = ["-u", "alice", "-P", "a"];
    let bob = ["-u", "bob", "-P", "b"];

    for version in VERSIONS {
        // A forbidden subscription is refused in the SUBACK (0x87, 3.1.1: 0x80): mosquitto_sub
        // says so and stops.
        let out = tools
            .sub(
                &broker,
                version,
                &[&bob[..], &["-q", "1", "-C", "1", "-t", "alice/#"]].concat(),
            )
            .finish();
        assert!(out.stdout.is_empty(), "-V {version}: {out}");
        assert!(
            out.stderr.contains("All subscription requests were denied"),
            "-V {version}: the refusal was not reported\n{out}"
        );
        assert!(out.status.is_some(), "-V {version}: it kept waiting\n{out}");

        // A forbidden publication is dropped; the allowed one after it arrives alone.
        let sub = tools.sub(
            &broker,
            version,
            &[&bob[..], &["-q", "1", "-C", "1", "-t", "shared/#"]].concat(),
        );
        broker.wait_for("bob's subscription", |stats| stats.subscriptions == 1);
        let dropped = broker.stats().dropped.not_authorized;
        let out = tools
            .publish(&broker, version, &bob)
            .args(["-q", "1", "-t", "shared/news", "-m", "forged by bob"])
            .run();
        if version == "5" {
            // 5.0 says why in the PUBACK; mosquitto_pub reports it.
            assert!(out.stderr.contains("Not authorized"), "{out}");
        }
        broker.wait_for("the refused publication", |stats| {
            stats.dropped.not_authorized == dropped + 1
        });
        tools
            .publish(&broker, version, &alice)
            .args(["-q", "1", "-t", "shared/news", "-m", "from alice"])
            .run()
            .assert_success("alice publishing");
        let out = sub.finish();
        out.assert_success("bob's mosquitto_sub");
        assert_eq!(
            out.stdout.trim_end(),
            "shared/news qos=1 retain=0 from alice",
            "-V {version}\n{out}"
        );
        broker.wait_for("bob to leave", |stats| stats.connections == 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Support

/// Our broker on its own thread and runtime, on a free loopback port; stopped on drop.
struct OurBroker {
    handle: BrokerHandle,
    addr: SocketAddr,
    /// Runs the handle's requests (stats, stop) from this synchronous test.
    runtime: tokio::runtime::Runtime,
}

impl OurBroker {
    fn start(builder: BrokerBuilder<TokioRuntime>) -> OurBroker {
        let builder = builder.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let (handle, addrs) = Broker::start_in_thread(builder).expect("start the broker");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the handle");
        OurBroker {
            handle,
            addr: addrs[0],
            runtime,
        }
    }

    fn stats(&self) -> Stats {
        self.runtime
            .block_on(self.handle.stats())
            .expect("the broker stopped")
    }

    /// Polls the broker's counters until `condition` holds; panics after the timeout.
    fn wait_for(&self, what: &str, condition: impl Fn(&Stats) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {TIMEOUT:?} for {what}; the broker's counters: {stats:?}"
            );
            // Each poll is a round trip through the broker's loop; a pause keeps them few.
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for OurBroker {
    fn drop(&mut self) {
        let stopped = self
            .runtime
            .block_on(async { tokio::time::timeout(TIMEOUT, self.handle.stop()).await });
        if stopped.is_err() && !thread::panicking() {
            panic!("the broker did not stop within {TIMEOUT:?}");
        }
    }
}

/// The client programs.
struct Tools {
    publisher: PathBuf,
    subscriber: PathBuf,
}

impl Tools {
    /// `mosquitto_pub` and `mosquitto_sub`, or `None` (after a notice) when they are missing and
    /// `CI` is not set.
    fn find() -> Option<Tools> {
        Some(Tools {
            publisher: find_program("mosquitto_pub", "mosquitto-clients")?,
            subscriber: find_program("mosquitto_sub", "mosquitto-clients")?,
        })
    }

    /// `mosquitto_pub` for `broker` at protocol `version`, with `args`; add the rest.
    fn publish(&self, broker: &OurBroker, version: &str, args: &[&str]) -> Run {
        self.publish_to(broker.addr.port(), version, args)
    }

    fn publish_to(&self, port: u16, version: &str, args: &[&str]) -> Run {
        Run::new(&self.publisher)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
            .args(args)
    }

    /// `mosquitto_sub` for `broker` at protocol `version` with `args`, started now: one line
    /// per message, `TOPIC qos=Q retain=R PAYLOAD`. Pass `-C N` so that it stops by itself.
    fn sub(&self, broker: &OurBroker, version: &str, args: &[&str]) -> Started {
        Run::new(&self.subscriber)
            .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
            .args(["-V", version, "-F", "%t qos=%q retain=%r %p"])
            // Its own deadline too, should ours fail.
            .args(["-W", &TIMEOUT.as_secs().to_string()])
            .args(args)
            .start()
    }
}

/// A command to run with a deadline.
struct Run {
    command: Command,
    name: String,
}

impl Run {
    fn new(program: &Path) -> Run {
        let mut command = Command::new(program);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Run {
            command,
            name: program.display().to_string(),
        }
    }

    fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Run {
        self.command.arg(arg);
        self
    }

    fn args<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    fn start(mut self) -> Started {
        let line = format!("{:?}", self.command);
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.name));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Started {
            child,
            line,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    fn run(self) -> Output {
        self.start().finish()
    }
}

/// A running program, killed on drop.
struct Started {
    child: Child,
    line: String,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Started {
    /// Waits for it to exit, killing it at the deadline; collects its output.
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(error) => panic!("waiting for {}: {error}", self.line),
            }
        };
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let join = |handle: Option<JoinHandle<String>>| {
            handle
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default()
        };
        Output {
            line: self.line.clone(),
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a pipe to its end on a thread of its own, so a chatty program never blocks on it.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// What a program did: its exit status (`None`: killed at the deadline) and output.
struct Output {
    line: String,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn assert_success(&self, what: &str) {
        assert!(
            self.status.is_some_and(|status| status.success()),
            "{what} failed\n{self}"
        );
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self
            .status
            .map_or("killed at the deadline".to_string(), |s| s.to_string());
        write!(
            f,
            "{}: {status}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.line, self.stdout, self.stderr
        )
    }
}

/// `name` on `PATH` or in `/usr/bin`; `None` after a notice when it is missing and `CI` is not
/// set; a panic when it is missing under CI.
fn find_program(name: &str, package: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    let found = on_path
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed, and CI is set: `apt-get install {package}`");
        }
        let _ = writeln!(
            std::io::stderr(),
            "note: {name} is not installed; skipping this interop test (install the \
             `{package}` package)"
        );
    }
    found
}

fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("mqtt-tests-clients-")
        .tempdir()
        .expect("temporary directory")
}
