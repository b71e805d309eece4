//! The `mqtt` binary end to end: `broker`, `publish` and `subscribe` against our broker and a
//! real mosquitto, in MQTT 3.1.1 and 5.0. mosquitto tests are skipped (with a note) when it is
//! not installed, except under CI.

#[path = "cli/support.rs"]
mod support;

#[path = "cli/flood.rs"]
mod flood;

#[path = "cli/bridge.rs"]
mod bridge;

#[path = "cli/client_options.rs"]
mod client_options;

#[path = "cli/passwd.rs"]
mod passwd;

#[path = "cli/operations.rs"]
mod operations;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    OurBroker, Running, Server, TIMEOUT, Target, find_program, listening_ports, mqtt, publish, run,
    subscriber,
};

const TARGETS: [Target; 2] = [Target::Ours, Target::Mosquitto];
const VERSIONS: [&str; 2] = ["311", "5"];

#[test]
fn help_documents_every_subcommand() {
    let help = |args: &[&str]| run(mqtt(args), b"").success().stdout;
    let broker = help(&["broker", "--help"]);
    for needle in [
        "--bind",
        "--port",
        "--config",
        "[[listener]]",
        "password_file",
        "[limits]",
    ] {
        assert!(
            broker.contains(needle),
            "broker --help lacks {needle}:\n{broker}"
        );
    }
    let publish = help(&["publish", "--help"]);
    for needle in [
        "--host",
        "--topic",
        "--message",
        "--file",
        "--stdin-line",
        "--null-message",
        "--qos",
        "--retain",
        "--user-property",
        "--message-expiry",
        "--content-type",
        "--response-topic",
        "--correlation-data",
        "--count",
        "--size",
        "--concurrency",
        "--cafile",
        "--cert",
        "--key",
        "--protocol-version",
        "--username",
        "--pw",
    ] {
        assert!(
            publish.contains(needle),
            "publish --help lacks {needle}:\n{publish}"
        );
    }
    let subscribe = help(&["subscribe", "--help"]);
    for needle in [
        "FILTER",
        "--topic",
        "--verbose",
        "--format",
        "--count",
        "--manual-ack",
        "json",
    ] {
        assert!(
            subscribe.contains(needle),
            "subscribe --help lacks {needle}:\n{subscribe}"
        );
    }
}

/// -m, -f, -l and -n, each read back by a subscriber, on both brokers in both versions.
#[test]
fn publish_reaches_subscribe_on_each_broker_and_version() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        for version in VERSIONS {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("message.txt");
            fs::write(&file, "from a file").unwrap();
            let topic = format!("cli/{version}");
            let filter = format!("{topic}/#");
            let sub = subscriber(
                &server,
                &["-V", version, "-v", "-q", "1", "-C", "5", &filter],
            );
            let t = |leaf: &str| format!("{topic}/{leaf}");
            let file = file.to_str().unwrap();
            for (args, input) in [
                (vec!["-t", &t("m"), "-m", "hello", "-q", "1"], &b""[..]),
                (vec!["-t", &t("f"), "-f", file, "-q", "2"], b""),
                (vec!["-t", &t("l"), "-l"], b"line one\nline two\n"),
                (vec!["-t", &t("n"), "-n", "-q", "1"], b""),
            ] {
                let mut args = args;
                args.extend(["-V", version]);
                publish(&server, &args, input).success();
            }
            let mut lines: Vec<String> = (0..5).map(|_| sub.line()).collect();
            lines.sort();
            let mut expected = vec![
                format!("{topic}/f from a file"),
                format!("{topic}/l line one"),
                format!("{topic}/l line two"),
                format!("{topic}/m hello"),
                format!("{topic}/n "),
            ];
            expected.sort();
            assert_eq!(lines, expected, "{target:?} -V {version}");
            let out = sub.finish();
            assert!(out.status.success(), "{target:?} -V {version}: {out:#?}");
        }
    }
}

#[test]
fn retained_message_reaches_a_later_subscriber() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        for version in VERSIONS {
            let topic = format!("retained/{version}");
            publish(
                &server,
                &["-V", version, "-t", &topic, "-m", "kept", "-r", "-q", "1"],
                b"",
            )
            .success();
            let mut command = mqtt(["subscribe", "-V", version, "-F", "json", "-C", "1", &topic]);
            command.args(server.address_args());
            let out = run(command, b"").success();
            let message: Value = serde_json::from_str(out.stdout.trim()).unwrap();
            assert_eq!(message["payload"], "kept", "{target:?}: {out:#?}");
            assert_eq!(message["retain"], true, "{target:?}: {out:#?}");
        }
    }
}

#[test]
fn v5_properties_appear_in_json_output() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        let sub = subscriber(&server, &["-F", "json", "-q", "1", "-C", "1", "props"]);
        publish(
            &server,
            &[
                "-t",
                "props",
                "-m",
                "{\"on\":true}",
                "-q",
                "1",
                "--user-property",
                "unit=celsius",
                "--user-property",
                "unit=kelvin",
                "--message-expiry",
                "600",
                "--content-type",
                "application/json",
                "--response-topic",
                "replies/1",
                "--correlation-data",
                "req-1",
            ],
            b"",
        )
        .success();
        let line = sub.line();
        let message: Value = serde_json::from_str(&line).unwrap();
        let properties = &message["properties"];
        assert_eq!(message["topic"], "props", "{line}");
        assert_eq!(message["qos"], 1, "{line}");
        assert_eq!(message["retain"], false, "{line}");
        assert_eq!(message["payload"], "{\"on\":true}", "{line}");
        assert_eq!(
            properties["user_properties"],
            serde_json::json!([["unit", "celsius"], ["unit", "kelvin"]]),
            "{target:?}: {line}"
        );
        let expiry = properties["message_expiry_interval"].as_u64().unwrap();
        assert!((590..=600).contains(&expiry), "{line}");
        assert_eq!(properties["content_type"], "application/json", "{line}");
        assert_eq!(properties["response_topic"], "replies/1", "{line}");
        assert_eq!(properties["correlation_data"], "req-1", "{line}");
        sub.finish().success();
    }
}

#[test]
fn v5_flags_are_refused_with_3_1_1() {
    let broker = Server::start(Target::Ours).unwrap();
    for flag in [
        &["--user-property", "a=b"][..],
        &["--message-expiry", "5"],
        &["--content-type", "x"],
        &["--response-topic", "r"],
        &["--correlation-data", "c"],
    ] {
        let mut args = vec!["-V", "311", "-t", "t", "-m", "x"];
        args.extend_from_slice(flag);
        let error = publish(&broker, &args, b"").one_line_failure();
        assert!(
            error.contains(flag[0]) && error.contains("MQTT 5"),
            "{error}"
        );
    }
}

#[test]
fn formats_show_text_and_binary_payloads() {
    let server = Server::start(Target::Ours).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("binary");
    fs::write(&binary, [0xff, 0x00, b'h', b'i']).unwrap();
    let binary = binary.to_str().unwrap();
    let cases: [(&str, &[&str]); 4] = [
        ("auto", &["text", "00000000  ff 00 68 69"]),
        ("text", &["text", "\u{fffd}\u{0}hi"]),
        (
            "binary",
            &["00000000  74 65 78 74", "00000000  ff 00 68 69"],
        ),
        (
            "json",
            &[r#""payload":"text""#, r#""payload":{"hex":"ff006869"}"#],
        ),
    ];
    for (format, expected) in cases {
        let topic = format!("formats/{format}");
        let sub = subscriber(&server, &["-F", format, "-q", "1", "-C", "2", &topic]);
        publish(&server, &["-t", &topic, "-m", "text", "-q", "1"], b"").success();
        publish(&server, &["-t", &topic, "-f", binary, "-q", "1"], b"").success();
        for want in expected {
            let line = sub.line();
            assert!(
                line.contains(want),
                "--format {format}: {line:?} lacks {want:?}"
            );
        }
        let rest = sub.finish().success().stdout;
        assert!(rest.is_empty(), "--format {format}: more output: {rest:?}");
    }
}

/// With --manual-ack each message is acknowledged after printing; all 300 arrive, in a window
/// of 100.
#[test]
fn manual_ack_receives_every_message() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        let sub = subscriber(&server, &["--manual-ack", "-q", "1", "-C", "300", "acked"]);
        publish(&server, &["-t", "acked", "--count", "300", "-q", "1"], b"").success();
        let out = sub.finish().success();
        assert_eq!(out.stdout.lines().count(), 300, "{target:?}");
    }
}

/// `publish --count 10000` at QoS 1, every message received by `subscribe -C 10000`.
#[test]
fn ten_thousand_messages_are_all_received() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        let sub = subscriber(&server, &["-q", "1", "-C", "10000", "bench"]);
        let out = publish(
            &server,
            &[
                "-t",
                "bench",
                "--count",
                "10000",
                "-q",
                "1",
                "--size",
                "32",
                "--concurrency",
                "4",
            ],
            b"",
        )
        .success();
        let mut summary = out.stdout.lines();
        let first = summary.next().unwrap_or_default();
        assert!(
            first.starts_with("Published 10000 message(s) in ")
                && first.ends_with(" seconds from 4 concurrent task(s)."),
            "{out:#?}"
        );
        assert!(
            summary.next().unwrap().contains(" messages/s, "),
            "{out:#?}"
        );
        assert!(
            summary.next().unwrap().starts_with("Latency: p50 "),
            "{out:#?}"
        );
        let out = sub.finish().success();
        assert_eq!(out.stdout.lines().count(), 10_000, "{target:?}");
        assert!(
            out.stdout.lines().all(|l| l == "x".repeat(32)),
            "{target:?}"
        );
    }
}

/// A broker config with a mosquitto_passwd password file and an ACL file: who gets in, who
/// may do what, and the log lines of refusals.
#[test]
fn broker_config_with_password_and_acl_files() {
    let Some(passwd) = find_program("mosquitto_passwd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let status = std::process::Command::new(passwd)
        .args(["-b", "-c"])
        .arg(path("passwd"))
        .args(["alice", "wonderland"])
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_passwd failed");
    fs::write(
        path("acl"),
        "topic read public/#\n\nuser alice\ntopic readwrite alice/#\ntopic read public/#\n",
    )
    .unwrap();
    fs::write(
        path("broker.toml"),
        "password_file = \"passwd\"\nacl_file = \"acl\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [limits]\nmax_connections = 100\n",
    )
    .unwrap();
    let broker =
        OurBroker::start_args(&["broker", "--config", path("broker.toml").to_str().unwrap()]);
    let server = Server::Ours(broker);
    let alice = ["-u", "alice", "-P", "wonderland"];

    // Wrong password, and no user name at all (anonymous access is off with a password file).
    let error = publish(
        &server,
        &["-u", "alice", "-P", "nope", "-t", "alice/x", "-m", "x"],
        b"",
    )
    .one_line_failure();
    assert!(
        error.contains("Bad User Name or Password (0x86)"),
        "{error}"
    );
    let error = publish(&server, &["-t", "alice/x", "-m", "x"], b"").one_line_failure();
    assert!(
        error.contains("connection refused") && error.contains("Not authorized (0x87)"),
        "{error}"
    );
    let Server::Ours(broker) = &server else {
        unreachable!()
    };
    broker.process.wait_stderr("a refusal in the log", |l| {
        l.contains("connection refused: Bad User Name or Password") && l.contains("alice")
    });

    // Alice reads and writes her topics, and may not publish to public/ (5.0: PUBACK 0x87).
    let mut args = alice.to_vec();
    args.extend(["-q", "1", "-C", "1", "alice/#"]);
    let sub = subscriber(&server, &args);
    let mut args = alice.to_vec();
    args.extend(["-t", "alice/note", "-m", "hi", "-q", "1"]);
    publish(&server, &args, b"").success();
    assert_eq!(sub.line(), "hi");
    sub.finish().success();
    let mut args = alice.to_vec();
    args.extend(["-t", "public/news", "-m", "x", "-q", "1"]);
    let error = publish(&server, &args, b"").one_line_failure();
    assert!(error.contains("Not authorized (0x87)"), "{error}");
    // Nor subscribe to what is not hers.
    let mut command = mqtt(["subscribe", "-C", "1", "bob/#"]);
    command.args(server.address_args()).args(alice);
    let error = run(command, b"").one_line_failure();
    assert!(
        error.contains("bob/#") && error.contains("Not authorized (0x87)"),
        "{error}"
    );
}

/// A TLS listener from the config file, with certificates made for the test.
#[test]
fn broker_serves_tls_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let pki = make_pki(dir.path());
    fs::write(
        path("broker.toml"),
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = { cert = \"server.pem\", key = \"server.key\" }\n",
    )
    .unwrap();
    let broker =
        OurBroker::start_args(&["broker", "--config", path("broker.toml").to_str().unwrap()]);
    let port = broker.port.to_string();
    let tls = [
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        pki.to_str().unwrap(),
    ];
    let mut command = mqtt(["subscribe", "-d", "-C", "1", "secure/#"]);
    command.args(tls);
    let sub = Running::start("mqtt subscribe (TLS)", command);
    sub.wait_stderr("the subscription", |l| l.starts_with("subscribed to "));
    let mut command = mqtt(["publish", "-t", "secure/x", "-m", "over TLS", "-q", "1"]);
    command.args(tls);
    run(command, b"").success();
    assert_eq!(sub.line(), "over TLS");
    sub.finish().success();
    // Without --cafile the client speaks plain MQTT to a TLS port and gets nowhere.
    let mut command = mqtt([
        "publish",
        "-t",
        "x",
        "-m",
        "x",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
    ]);
    command.args(["-k", "5"]);
    run(command, b"").one_line_failure();
    broker
        .process
        .wait_stderr("the failed handshake in the log", |l| {
            l.contains("TLS handshake failed")
        });
}

/// Writes ca.pem, server.pem and server.key (for localhost and 127.0.0.1); returns ca.pem.
fn make_pki(dir: &std::path::Path) -> std::path::PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "mqtt-cli test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params.signed_by(&key, &ca).unwrap();
    fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    fs::write(dir.join("server.pem"), server.pem()).unwrap();
    fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let server = Server::start(Target::Ours).unwrap();
    // Connection refused: a port nobody listens on any more.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let error = run(
        mqtt([
            "publish",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "t",
            "-m",
            "x",
        ]),
        b"",
    )
    .one_line_failure();
    assert!(error.contains("Connection refused"), "{error}");
    // A name that does not resolve.
    let error = run(mqtt(["subscribe", "-h", "no-such-host.invalid", "t"]), b"").one_line_failure();
    assert!(error.contains("no-such-host.invalid"), "{error}");
    // An invalid topic and an invalid filter.
    let error = publish(&server, &["-t", "a/#", "-m", "x"], b"").one_line_failure();
    assert!(error.contains("invalid topic"), "{error}");
    let mut command = mqtt(["subscribe", "a/#/b"]);
    command.args(server.address_args());
    let error = run(command, b"").one_line_failure();
    assert!(
        error.contains("a/#/b") && error.contains("wildcard"),
        "{error}"
    );
    // A configuration file with a typo.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    fs::write(&config, "[limits]\nmax_conections = 10\n").unwrap();
    let error = run(mqtt(["broker", "--config", config.to_str().unwrap()]), b"").one_line_failure();
    assert!(
        error.contains("line 2") && error.contains("max_conections"),
        "{error}"
    );
    // A port that is taken.
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let error = run(mqtt(["broker", "--port", &port]), b"").one_line_failure();
    assert!(
        error.contains("cannot start the broker on 127.0.0.1:") && error.contains(&port),
        "{error}"
    );
}

#[test]
fn broker_stops_cleanly_on_ctrl_c() {
    let broker = OurBroker::start(&["--bind", "127.0.0.1"]);
    let server = Server::Ours(broker);
    // A client stays connected meanwhile; it is told and ends.
    let sub = subscriber(&server, &["-q", "1", "idle"]);
    let Server::Ours(broker) = server else {
        unreachable!()
    };
    broker.process.wait_stderr("the client's connect log", |l| {
        l.contains("client connected")
    });
    let started = Instant::now();
    broker.process.interrupt();
    let out = broker.process.finish();
    assert!(out.status.success(), "{out:#?}");
    assert!(started.elapsed() < TIMEOUT);
    assert!(out.stderr.contains("shutting down"), "{out:#?}");
    let out = sub.finish();
    assert!(
        !out.status.success(),
        "the subscriber should report the disconnect: {out:#?}"
    );
    assert!(out.stderr.contains("disconnected"), "{out:#?}");
}

#[test]
fn broker_listens_on_every_bind_address() {
    let broker = OurBroker::start(&["--bind", "127.0.0.1", "--bind", "127.0.0.1:0"]);
    let ports = listening_ports(&broker.process);
    let deadline = Instant::now() + TIMEOUT;
    let mut ports = ports;
    while ports.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        ports = listening_ports(&broker.process);
    }
    assert_eq!(ports.len(), 2, "{}", broker.process.stderr());
    for port in ports {
        let port = port.to_string();
        run(
            mqtt([
                "publish",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "t",
                "-m",
                "x",
                "-q",
                "1",
            ]),
            b"",
        )
        .success();
    }
}

/// `mqtt subscribe ... | head -1`: the closed pipe ends it quietly, with success.
#[test]
fn subscribe_ends_quietly_when_its_reader_goes_away() {
    let server = Server::start(Target::Ours).unwrap();
    let mut command = mqtt(["subscribe", "-d", "-q", "1", "piped"]);
    command.args(server.address_args());
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let stderr_reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("subscribed to") {
                let _ = ready_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    ready.recv_timeout(TIMEOUT).expect("subscribed");
    // Close our end of its stdout without reading, then give it something to write.
    drop(child.stdout.take());
    publish(&server, &["-t", "piped", "-m", "one", "-q", "1"], b"").success();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("subscribe did not end on a closed pipe");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = stderr_reader.join().unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("mqtt:"),
        "{stderr}"
    );
}

#[test]
fn subscribe_exits_cleanly_on_ctrl_c() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        let sub = subscriber(&server, &["-q", "1", "quiet/#"]);
        sub.interrupt();
        let out = sub.finish();
        assert!(out.status.success(), "{target:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "{target:?}: {out:#?}");
    }
}

/// `[limits]` reach the broker: a 5.0 client learns the maximum packet size from CONNACK and
/// refuses a larger publish; `max_qos = 1` is granted instead of 2.
#[test]
fn broker_limits_from_config_apply() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    fs::write(&config, "[limits]\nmax_packet_size = 200\nmax_qos = 1\n").unwrap();
    let broker = OurBroker::start(&["--config", config.to_str().unwrap()]);
    let server = Server::Ours(broker);
    let big = "x".repeat(300);
    let error = publish(&server, &["-t", "t", "-m", &big, "-q", "1"], b"").one_line_failure();
    assert!(error.contains("maximum packet size of 200"), "{error}");
    publish(&server, &["-t", "t", "-m", "small", "-q", "1"], b"").success();
    let sub = subscriber(&server, &["-q", "2", "limited"]);
    assert!(
        sub.stderr()
            .contains("subscribed to limited (Granted QoS 1"),
        "{}",
        sub.stderr()
    );
}

/// `mqtt publish --count N | head -0`: the summary meets a closed pipe, which is no error.
#[test]
fn publish_summary_to_a_closed_pipe_is_no_error() {
    let server = Server::start(Target::Ours).unwrap();
    let mut command = mqtt(["publish", "-t", "t", "--count", "10", "-q", "1"]);
    command.args(server.address_args());
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("publish did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// Overlapping filters (`dup/#` and `dup/x`): our broker sends one copy, and the client's two
/// subscriptions both see it; it is printed once.
#[test]
fn overlapping_filters_print_a_message_once() {
    let server = Server::start(Target::Ours).unwrap();
    for version in VERSIONS {
        let sub = subscriber(
            &server,
            &["-V", version, "-q", "1", "-C", "2", "dup/#", "dup/x"],
        );
        publish(&server, &["-t", "dup/x", "-m", "one", "-q", "1"], b"").success();
        publish(&server, &["-t", "dup/y", "-m", "two", "-q", "1"], b"").success();
        assert_eq!(sub.line(), "one", "-V {version}");
        assert_eq!(sub.line(), "two", "-V {version}");
        sub.finish().success();
    }
}

/// A data directory the broker cannot use is refused at start with one line naming the file:
/// a store written in another format, and a damaged one. Nothing is overwritten.
#[test]
fn broker_refuses_a_data_dir_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("VERSION"), "99\n").unwrap();
    let data_arg = data.to_str().unwrap();
    let failure =
        run(mqtt(["broker", "--port", "0", "--data-dir", data_arg]), b"").one_line_failure();
    assert!(failure.contains("VERSION"), "{failure}");
    assert!(failure.contains("99"), "{failure}");
    assert_eq!(fs::read_to_string(data.join("VERSION")).unwrap(), "99\n");
}

/// `--ws-port` and `--unix` add listeners; `--url` reaches them with the ws and unix schemes,
/// and carries the user name.
#[cfg(unix)]
#[test]
fn broker_serves_websocket_and_a_unix_socket_and_urls_reach_them() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mqtt.sock");
    let broker = OurBroker::start_args(&[
        "broker",
        "--port",
        "0",
        "--ws-port",
        "0",
        "--unix",
        socket.to_str().unwrap(),
    ]);
    let log = broker.process.wait_stderr("the Unix socket listener", |l| {
        l.contains("listening on unix:")
    });
    assert!(log.contains("MQTT listening on unix:"), "{log}");
    let ports = listening_ports(&broker.process);
    assert_eq!(
        ports.len(),
        2,
        "a TCP and a WebSocket port: {}",
        broker.process.stderr()
    );
    let stderr = broker.process.stderr();
    assert!(
        stderr.contains(&format!(
            "MQTT over WebSocket at /mqtt listening on 127.0.0.1:{}",
            ports[1]
        )),
        "{stderr}"
    );

    let ws = format!("ws://alice@127.0.0.1:{}/mqtt", ports[1]);
    let unix = format!("unix://{}", socket.display());
    let sub = Running::start(
        "mqtt subscribe (ws)",
        mqtt(["subscribe", "-d", "-C", "1", "--url", &ws, "local/#"]),
    );
    sub.wait_stderr("the subscription", |l| l.starts_with("subscribed to "));
    run(
        mqtt([
            "publish", "--url", &unix, "-t", "local/x", "-m", "via unix", "-q", "1",
        ]),
        b"",
    )
    .success();
    assert_eq!(sub.line(), "via unix");
    sub.finish().success();
    broker
        .process
        .wait_stderr("the ws client's user name in the log", |l| {
            l.contains("client connected") && l.contains("alice")
        });

    // A WebSocket path the broker does not serve: a one-line error with the HTTP status.
    let wrong = format!("ws://127.0.0.1:{}/nowhere", ports[1]);
    let error = run(
        mqtt(["publish", "--url", &wrong, "-t", "x", "-m", "x"]),
        b"",
    )
    .one_line_failure();
    assert!(error.contains("404"), "{error}");
}
