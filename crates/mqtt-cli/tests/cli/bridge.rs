//! `[[bridge]]` in `mqtt broker --config`: an edge broker forwards to a cloud broker, both
//! `mqtt broker` processes on kernel-chosen loopback ports, and the edge's log tells of the
//! bridge's connection and its loss.

use std::fs;

use super::support::{OurBroker, Server, mqtt, publish, run, subscriber};

/// Local `up/x` reaches the cloud broker as `edge/up/x`; killing the cloud broker shows in the
/// edge's log.
#[test]
fn bridge_from_the_config_file_forwards_out_with_a_remote_prefix() {
    let cloud = Server::Ours(OurBroker::start(&[]));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
             [[bridge]]\nname = \"cloud\"\naddress = \"mqtt://127.0.0.1:{}\"\n\
             topics = [{{ filter = \"up/#\", direction = \"out\", remote_prefix = \"edge/\" }}]\n",
            cloud.port()
        ),
    )
    .unwrap();
    let edge = OurBroker::start_args(&["broker", "--config", config.to_str().unwrap()]);
    edge.process.wait_stderr("the bridge's address", |line| {
        line.contains(&format!(
            "bridge cloud to mqtt://127.0.0.1:{}",
            cloud.port()
        ))
    });
    edge.process.wait_stderr("the bridge connected", |line| {
        line.contains("bridge cloud connected")
    });
    let Server::Ours(cloud_broker) = &cloud else {
        unreachable!()
    };
    // Its client identifier at the cloud broker is HOSTNAME.cloud, as mosquitto's would be.
    cloud_broker
        .process
        .wait_stderr("the bridge's connection", |line| {
            line.contains("client connected") && line.contains(".cloud")
        });

    let sub = subscriber(&cloud, &["-v", "-q", "1", "-C", "1", "edge/#"]);
    let edge = Server::Ours(edge);
    publish(&edge, &["-t", "up/x", "-m", "hello", "-q", "1"], b"").success();
    assert_eq!(sub.line(), "edge/up/x hello");
    sub.finish().success();

    drop(cloud);
    let Server::Ours(edge) = &edge else {
        unreachable!()
    };
    let line = edge.process.wait_stderr("the bridge's outage", |line| {
        line.contains("bridge cloud disconnected: ")
    });
    assert!(line.contains("; retrying"), "{line}");
}

/// The schema in `--help` shows bridges, and a bad one stops the broker with one line.
#[test]
fn bridge_keys_are_documented_and_checked() {
    let help = run(mqtt(["broker", "--help"]), b"").success().stdout;
    for needle in ["[[bridge]]", "address", "remote_prefix", "try_private"] {
        assert!(
            help.contains(needle),
            "broker --help lacks {needle}:\n{help}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    fs::write(
        &config,
        "[[bridge]]\nname = \"cloud\"\naddress = \"mqtt://127.0.0.1:1\"\n\
         topics = [{ filter = \"up/#\", direction = \"sideways\" }]\n",
    )
    .unwrap();
    let error = run(mqtt(["broker", "--config", config.to_str().unwrap()]), b"").one_line_failure();
    assert!(
        error.contains("broker.toml, line 4: bridge cloud: unknown variant `sideways`"),
        "{error}"
    );
    // A TLS file that is not there stops the broker rather than every attempt to connect.
    fs::write(
        &config,
        "[[bridge]]\nname = \"cloud\"\naddress = \"mqtts://127.0.0.1:1\"\n\
         tls = { cafile = \"missing-ca.pem\" }\ntopics = [{ filter = \"up/#\" }]\n",
    )
    .unwrap();
    let error = run(mqtt(["broker", "--config", config.to_str().unwrap()]), b"").one_line_failure();
    assert!(
        error.contains("broker.toml: bridge cloud: tls.cafile ")
            && error.contains("missing-ca.pem"),
        "{error}"
    );
}
