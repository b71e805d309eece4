//! Operating `mqtt broker`: Prometheus metrics at `--metrics`, and `$SYS` at `--sys-interval`.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::support::{OurBroker, Server, TIMEOUT, publish, subscriber};

/// GET `/metrics` with a plain HTTP/1.0 request (the test checks the server, not a client).
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("the metrics endpoint accepts");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert!(response.contains(" 200 "), "{response}");
    response
}

/// The value of an unlabelled sample.
fn sample(body: &str, name: &str) -> Option<u64> {
    body.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_count_a_known_load() {
    let broker = OurBroker::start(&["--metrics", "127.0.0.1:0", "--sys-interval", "0"]);
    let line = broker.process.wait_stderr("the metrics address", |line| {
        line.contains("metrics at http://")
    });
    let addr = line
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address")
        .to_string();
    let server = Server::Ours(broker);
    let body = scrape(&addr);
    assert_eq!(
        sample(&body, "mqtt_messages_received_total"),
        Some(0),
        "{body}"
    );
    assert!(
        body.contains("# TYPE mqtt_messages_dropped counter"),
        "{body}"
    );

    let sub = subscriber(&server, &["-q", "1", "-C", "5", "load/#"]);
    publish(
        &server,
        &["-t", "load/x", "-q", "1", "--count", "5", "--size", "10"],
        b"",
    )
    .success();
    for _ in 0..5 {
        sub.line();
    }
    sub.finish().success();
    let body = scrape(&addr);
    assert_eq!(
        sample(&body, "mqtt_messages_received_total"),
        Some(5),
        "{body}"
    );
    assert_eq!(sample(&body, "mqtt_messages_sent_total"), Some(5), "{body}");
    assert!(
        body.contains("mqtt_messages_received_by_qos_total{qos=\"1\"} 5"),
        "{body}"
    );
    assert_eq!(
        sample(&body, "mqtt_publish_bytes_received_total"),
        Some(50),
        "{body}"
    );
    assert_eq!(sample(&body, "mqtt_subscriptions"), Some(0), "{body}");
    assert!(
        sample(&body, "mqtt_router_turns_total").is_some_and(|turns| turns > 0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "mqtt_store_commits_total"),
        Some(0),
        "no data dir: {body}"
    );
    // Whether the clients above parked depends on timing: only that both are exported.
    assert!(sample(&body, "mqtt_connections_parked").is_some(), "{body}");
    assert!(
        sample(&body, "mqtt_connections_parks_total").is_some(),
        "{body}"
    );
    assert!(
        body.contains("mqtt_messages_dropped_total{reason=\"queue_full\"} 0"),
        "{body}"
    );
}

/// SIGHUP: a user added to the password file gets in without a restart; a broken ACL file is
/// refused with a log line and the rules in use stay.
#[test]
#[cfg(unix)]
fn sighup_reloads_the_password_file_and_keeps_the_old_acl_when_the_new_one_is_broken() {
    use std::fs;

    use super::support::{find_program, mqtt, run};

    let Some(passwd) = find_program("mosquitto_passwd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let add = |create: bool, user: &str, password: &str| {
        let mut command = std::process::Command::new(&passwd);
        command.arg("-b");
        if create {
            command.arg("-c");
        }
        let status = command
            .arg(path("passwd"))
            .args([user, password])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_passwd failed");
    };
    add(true, "alice", "wonderland");
    fs::write(path("acl"), "pattern readwrite %u/#\n").unwrap();
    fs::write(
        path("broker.toml"),
        "password_file = \"passwd\"\nacl_file = \"acl\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let broker =
        OurBroker::start_args(&["broker", "--config", path("broker.toml").to_str().unwrap()]);
    let pid = broker.process.id();
    let server = Server::Ours(broker);
    let Server::Ours(broker) = &server else {
        unreachable!()
    };
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let bob = [
        "-u", "bob", "-P", "builder", "-q", "1", "-t", "bob/x", "-m", "hi",
    ];
    let error = publish(&server, &bob, b"").one_line_failure();
    assert!(error.contains("Bad User Name or Password"), "{error}");

    add(false, "bob", "builder");
    hangup();
    broker
        .process
        .wait_stderr("the password file reloaded", |line| {
            line.contains("password file") && line.contains("reloaded: 2 user(s)")
        });
    publish(&server, &bob, b"").success();

    // A broken ACL file that would also let anyone write alice/...: refused whole, the old
    // rules stay (bob may still write bob/..., not alice/...).
    fs::write(
        path("acl"),
        "pattern readwrite %u/#\ntopic readwrite alice/#\nfrobnicate x\n",
    )
    .unwrap();
    hangup();
    broker.process.wait_stderr("the refused ACL file", |line| {
        line.contains("ACL file") && line.contains("not reloaded, the rules in use stay")
    });
    publish(&server, &bob, b"").success();
    let mut command = mqtt(["publish", "-u", "bob", "-P", "builder", "-q", "1"]);
    command
        .args(server.address_args())
        .args(["-t", "alice/x", "-m", "no"]);
    let error = run(command, b"").one_line_failure();
    assert!(error.contains("Not authorized (0x87)"), "{error}");

    // Limits that can change do; one that cannot is named.
    fs::write(
        path("broker.toml"),
        "password_file = \"passwd\"\nacl_file = \"acl\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [limits]\nmax_connections = 7\n",
    )
    .unwrap();
    hangup();
    broker.process.wait_stderr("the changed limit", |line| {
        line.contains("limit changed: max_connections: 10000 -> 7")
    });
}
