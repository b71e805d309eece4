//! Every example of `mqtt-examples` runs and must succeed: against a real mosquitto, our broker,
//! or the embedded broker it starts itself.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::mosquitto::Mosquitto;

/// How long one run of an example may take (it has its own 10 s deadline).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn sans_io_blocking_v5_against_mosquitto() {
    check_sans_io_blocking(&[]);
}

#[test]
fn sans_io_blocking_v311_against_mosquitto() {
    check_sans_io_blocking(&["--v311"]);
}

/// Runs `sans_io_blocking` against a fresh broker: it must exit 0 having printed each of the
/// three messages it published (one per QoS) as received.
fn check_sans_io_blocking(args: &[&str]) {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut command = Command::new(example("sans_io_blocking"));
    command.arg(broker.address()).args(args);
    let run = run_with_timeout(command, RUN_TIMEOUT);

    let context = format!(
        "sans_io_blocking {} {}: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        broker.address(),
        args.join(" "),
        run.status
            .map_or("timed out, killed".to_string(), |status| status.to_string()),
        run.stdout,
        run.stderr
    );
    assert!(
        run.status.is_some_and(|status| status.success()),
        "{context}"
    );
    for qos in 0..3 {
        let expected = format!("qos={qos} payload=\"hello at QoS {qos}\"");
        let received = run
            .stdout
            .lines()
            .filter(|line| line.starts_with("received ") && line.ends_with(&expected))
            .count();
        assert_eq!(received, 1, "the QoS {qos} message, once\n{context}");
    }
}

/// The path of an example's binary, built once per test run (`--locked`: the lock file is
/// checked in and must not change).
pub(crate) fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    // A test that panicked while holding the lock leaves the map intact: carry on.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace root");
    let run = escargot::CargoBuild::new()
        .manifest_path(workspace.join("Cargo.toml"))
        .package("mqtt-examples")
        .example(name)
        .current_release()
        .arg("--locked")
        .run()
        .unwrap_or_else(|error| panic!("building example {name}: {error}"));
    let path = run.path().to_path_buf();
    built.insert(name.to_string(), path.clone());
    path
}

/// What a finished (or killed) process left.
struct Run {
    /// `None` when it was killed for taking too long.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `command` with captured output, killing it after `timeout`.
fn run_with_timeout(mut command: Command, timeout: Duration) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    // Read both pipes while the child runs, so that it never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(error) => panic!("waiting for {command:?}: {error}"),
        }
    };
    Run {
        status,
        // The pipes close when the child exits, which ends the reading threads.
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the capture; whatever was read still helps a failure message.
            let _ = pipe.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

#[test]
fn tokio_client_example() {
    check_client_example("tokio_client", "tokio");
}

#[test]
fn smol_client_example() {
    check_client_example("smol_client", "smol");
}

#[test]
fn async_std_client_example() {
    check_client_example("async_std_client", "async-std");
}

/// Runs a runtime's client example twice, with its own embedded broker (no argument) and
/// against our broker in this process: each run must exit 0 having received the three messages
/// it published, one per QoS, and printed `done`.
fn check_client_example(name: &str, runtime: &str) {
    let (broker, addrs) = mqtt_tokio::Broker::start_in_thread(
        mqtt_tokio::Broker::builder().bind(([127, 0, 0, 1], 0).into()),
    )
    .expect("starting our broker");
    let path = example(name);
    for args in [vec![], vec![addrs[0].to_string()]] {
        let mut command = Command::new(&path);
        command.args(&args);
        let run = run_with_timeout(command, RUN_TIMEOUT);
        let context = format!(
            "{name} {}: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            args.join(" "),
            run.status
                .map_or("timed out, killed".to_string(), |status| status.to_string()),
            run.stdout,
            run.stderr
        );
        assert!(
            run.status.is_some_and(|status| status.success()),
            "{context}"
        );
        for qos in 0..3 {
            let expected = format!(
                "received mqtt-rs/examples/{runtime} qos={qos} \
                 payload=\"hello from {runtime} at QoS {qos}\""
            );
            let received = run.stdout.lines().filter(|line| *line == expected).count();
            assert_eq!(received, 1, "the QoS {qos} message, once\n{context}");
        }
        assert_eq!(run.stdout.lines().last(), Some("done"), "{context}");
    }
    futures_lite::future::block_on(broker.stop());
}

/// `blocking` (no async code, its own broker): it must exit 0 having received the three
/// messages it published, one per QoS, and printed `done`.
#[test]
fn blocking_example() {
    let run = run_with_timeout(Command::new(example("blocking")), RUN_TIMEOUT);
    let context = format!(
        "blocking: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        run.status
            .map_or("timed out, killed".to_string(), |status| status.to_string()),
        run.stdout,
        run.stderr
    );
    assert!(
        run.status.is_some_and(|status| status.success()),
        "{context}"
    );
    for qos in 0..3 {
        let expected =
            format!("received blocking/greeting qos={qos} payload=\"hello at QoS {qos}\"");
        let received = run.stdout.lines().filter(|line| *line == expected).count();
        assert_eq!(received, 1, "the QoS {qos} message, once\n{context}");
    }
    assert_eq!(run.stdout.lines().last(), Some("done"), "{context}");
}
