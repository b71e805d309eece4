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
    assert_eq!(
        sample(&body, "mqtt_publish_bytes_received_total"),
        Some(50),
        "{body}"
    );
    assert_eq!(sample(&body, "mqtt_subscriptions"), Some(0), "{body}");
    assert!(
        body.contains("mqtt_messages_dropped_total{reason=\"queue_full\"} 0"),
        "{body}"
    );
}
