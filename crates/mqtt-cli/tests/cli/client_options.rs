//! The options users of mosquitto_pub, mosquitto_sub and mosquitto_rr expect: a will, `-D`
//! properties by name, `-x`, `-R`, `-E`, and `mqtt rr`, against our broker and mosquitto.

use std::thread;
use std::time::{Duration, Instant};

use mqtt_tokio::blocking::Client;
use mqtt_tokio::{ClientOptions, Publish, QoS};
use serde_json::{Value, json};

use super::support::{
    OurBroker, Server, TIMEOUT, Target, mqtt, publish, run, subscribed, subscriber,
};

const TARGETS: [Target; 2] = [Target::Ours, Target::Mosquitto];

/// `mqtt SUBCOMMAND ARGS` on `server`, run to its end.
fn command(server: &Server, subcommand: &str, args: &[&str]) -> super::support::Output {
    let mut command = mqtt([subcommand]);
    command.args(server.address_args()).args(args);
    run(command, b"")
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}"))
}

#[test]
fn help_documents_the_client_options() {
    let help = |args: &[&str]| run(mqtt(args), b"").success().stdout;
    let shared = [
        "--will-topic",
        "--will-payload",
        "--will-qos",
        "--will-retain",
        "-x, --session-expiry",
        "-D, --property",
        "PROPERTIES",
        "session-expiry-interval",
        "user-property",
        "-L, --url",
    ];
    for (command, own) in [
        ("publish", &["--user-property", "--content-type"][..]),
        (
            "subscribe",
            &[
                "-R, --no-retained",
                "-E, --exit-after-subscribe",
                "--format",
            ],
        ),
        (
            "rr",
            &[
                "-t, --topic",
                "-e, --response-topic",
                "-m, --message",
                "-f, --file",
                "-n, --null-message",
                "-q, --qos",
                "-W, --timeout",
                "-R, --no-retained",
                "--format",
                "Correlation Data",
            ],
        ),
    ] {
        let text = help(&[command, "--help"]);
        for needle in shared.iter().chain(own) {
            assert!(
                text.contains(needle),
                "{command} --help lacks {needle}:\n{text}"
            );
        }
    }
}

/// A killed subscriber's will reaches another subscriber, with its -D WILL properties in 5.0;
/// one that ends with Ctrl-C disconnects cleanly and leaves no will.
#[test]
fn will_is_published_when_the_client_is_killed() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        for version in ["311", "5"] {
            let prefix = format!("will/{version}");
            let watch = format!("{prefix}/#");
            let watcher = subscriber(&server, &["-V", version, "-F", "json", "-C", "2", &watch]);

            let killed = format!("{prefix}/killed");
            let mut args = vec![
                "-V",
                version,
                "--will-topic",
                &killed,
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
                "other",
            ];
            if version == "5" {
                args.extend(["-D", "WILL", "user-property", "why", "killed"]);
                args.extend(["-D", "WILL", "content-type", "text/plain"]);
            }
            let victim = subscribed(&server, &args, 1);
            drop(victim); // SIGKILL: no DISCONNECT.
            let will = json_line(&watcher.line());
            assert_eq!(will["topic"], killed.as_str(), "{target:?} {will}");
            assert_eq!(will["payload"], "gone", "{target:?} {will}");
            assert_eq!(will["qos"], 0, "{target:?}: the watcher's maximum is 0");
            if version == "5" {
                let properties = &will["properties"];
                assert_eq!(properties["user_properties"], json!([["why", "killed"]]));
                assert_eq!(properties["content_type"], "text/plain", "{will}");
            }

            let interrupted = format!("{prefix}/interrupted");
            let args = ["-V", version, "--will-topic", &interrupted, "other"];
            let quitter = subscribed(&server, &args, 1);
            quitter.interrupt();
            quitter.finish().success();
            // Had the will been published, it would come before this.
            let marker = format!("{prefix}/marker");
            publish(&server, &["-V", version, "-t", &marker, "-m", "after"], b"").success();
            let next = json_line(&watcher.line());
            assert_eq!(next["topic"], marker.as_str(), "{target:?}: {next}");
            watcher.finish().success();
        }
    }
}

/// `-D PUBLISH ...` (with the older flags) as a 5.0 subscriber prints them.
#[test]
fn publish_properties_by_name_reach_a_subscriber() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        let sub = subscriber(&server, &["-F", "json", "-q", "1", "-C", "1", "named"]);
        #[rustfmt::skip]
        let args = [
            "-t", "named", "-m", "hello", "-q", "1",
            "--user-property", "flag=first",
            "-D", "PUBLISH", "user-property", "unit", "celsius",
            "-D", "publish", "User-Property", "unit", "kelvin",
            "-D", "PUBLISH", "content-type", "text/plain",
            "-D", "PUBLISH", "message-expiry-interval", "300",
            "-D", "PUBLISH", "correlation-data", "req-7",
            "-D", "PUBLISH", "response-topic", "replies/7",
            "-D", "PUBLISH", "payload-format-indicator", "1",
            "-D", "CONNECT", "user-property", "client", "cli",
            "-D", "CONNECT", "receive-maximum", "10",
            "-D", "CONNECT", "maximum-packet-size", "100000",
            "-D", "CONNECT", "topic-alias-maximum", "5",
            "-D", "CONNECT", "request-response-information", "1",
            "-D", "DISCONNECT", "user-property", "bye", "now",
        ];
        publish(&server, &args, b"").success();
        let line = sub.line();
        let message = json_line(&line);
        let properties = &message["properties"];
        assert_eq!(message["payload"], "hello", "{target:?}: {line}");
        assert_eq!(
            properties["user_properties"],
            json!([["flag", "first"], ["unit", "celsius"], ["unit", "kelvin"]]),
            "{target:?}: {line}"
        );
        assert_eq!(properties["content_type"], "text/plain", "{line}");
        let expiry = properties["message_expiry_interval"].as_u64().unwrap();
        assert!((290..=300).contains(&expiry), "{line}");
        assert_eq!(properties["correlation_data"], "req-7", "{line}");
        assert_eq!(properties["response_topic"], "replies/7", "{line}");
        assert_eq!(properties["payload_format_indicator"], 1, "{line}");
        sub.finish().success();
    }
}

/// `-D SUBSCRIBE subscription-identifier` goes out with the SUBSCRIBE: the broker tags the
/// messages of that subscription with it (MQTT-3.3.4-3).
#[test]
fn subscribe_properties_by_name_reach_the_broker() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        #[rustfmt::skip]
        let args = [
            "-F", "json", "-q", "1", "-C", "1",
            "-D", "SUBSCRIBE", "subscription-identifier", "42",
            "-D", "SUBSCRIBE", "user-property", "origin", "cli",
            "tagged/#",
        ];
        let sub = subscribed(&server, &args, 1);
        publish(&server, &["-t", "tagged/x", "-m", "hi", "-q", "1"], b"").success();
        let line = sub.line();
        let message = json_line(&line);
        assert_eq!(
            message["properties"]["subscription_identifiers"],
            json!([42]),
            "{target:?}: {line}"
        );
        sub.finish().success();
    }
}

/// `-D DISCONNECT reason-string` reaches the broker: its log line of the disconnect shows it.
#[test]
fn disconnect_properties_reach_the_broker() {
    let broker = OurBroker::start(&[]);
    let server = Server::Ours(broker);
    #[rustfmt::skip]
    let args = [
        "-t", "t", "-m", "x", "-i", "leaving",
        "-D", "DISCONNECT", "reason-string", "done for today",
    ];
    publish(&server, &args, b"").success();
    let Server::Ours(broker) = &server else {
        unreachable!()
    };
    let line = broker.process.wait_stderr("the disconnect", |line| {
        line.contains("client disconnected") && line.contains("\"leaving\"")
    });
    assert!(line.contains("(done for today)"), "{line}");
}

/// A session expiry from `-D CONNECT session-expiry-interval` or from `-x` keeps the session
/// of a subscriber that exits (-E) once subscribed: a QoS 1 message published meanwhile waits
/// for it, and a later subscriber resuming the session (-c) gets it.
#[test]
fn session_expiry_from_d_or_x_keeps_the_session() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        for (round, expiry) in [
            ("d", &["-D", "CONNECT", "session-expiry-interval", "60"][..]),
            ("x", &["-x", "60"]),
        ] {
            let id = format!("kept-{round}");
            let topic = format!("kept/{round}");
            // Clean start (no -c): without the expiry the session would end with the
            // connection. The filter comes last, after -D's three values.
            let mut args = vec!["-E", "-i", &id, "-q", "1"];
            args.extend_from_slice(expiry);
            args.push(&topic);
            let out = command(&server, "subscribe", &args).success();
            assert!(out.stdout.is_empty(), "-E prints nothing: {out:#?}");

            let args = ["-t", &topic, "-m", "waited", "-q", "1"];
            publish(&server, &args, b"").success();
            let args = [
                "-c", "-i", &id, "-x", "0", "-q", "1", "-C", "1", "-v", &topic,
            ];
            let out = command(&server, "subscribe", &args).success();
            assert_eq!(
                out.stdout,
                format!("{topic} waited\n"),
                "{target:?} {round}"
            );
        }
    }
}

/// -R: a retained message is not printed, a live one is (3.1.1: the client skips it; 5.0: the
/// broker does not send it either).
#[test]
fn no_retained_skips_stale_messages() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        for version in ["311", "5"] {
            let stale = format!("stale/{version}/old");
            let args = ["-V", version, "-t", &stale, "-m", "stale", "-r", "-q", "1"];
            publish(&server, &args, b"").success();
            let filter = format!("stale/{version}/#");
            let args = ["-V", version, "-R", "-v", "-q", "1", "-C", "1", &filter];
            let sub = subscriber(&server, &args);
            let live = format!("stale/{version}/new");
            let args = ["-V", version, "-t", &live, "-m", "fresh", "-q", "1"];
            publish(&server, &args, b"").success();
            // The retained message, had it been printed, would have come first.
            assert_eq!(sub.line(), format!("{live} fresh"), "{target:?} {version}");
            sub.finish().success();
        }
    }
}

/// -E: exits once subscribed, even with a retained message waiting on the filter.
#[test]
fn exit_after_subscribe_prints_nothing() {
    let server = Server::start(Target::Ours).unwrap();
    publish(&server, &["-t", "e/t", "-m", "kept", "-r", "-q", "1"], b"").success();
    let out = command(&server, "subscribe", &["-E", "-d", "e/t", "e/u"]).success();
    assert_eq!(out.stdout, "", "{out:#?}");
    assert_eq!(out.stderr.matches("subscribed to ").count(), 2, "{out:#?}");
}

/// What fails before connecting fails with one line naming the option (nobody listens on the
/// port: an error about connecting would mean the check was skipped).
#[test]
fn option_errors_are_one_line() {
    let nobody = ["-h", "127.0.0.1", "-p", "1"];
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "publish",
            &["-D", "CONNECT", "content-type", "x"],
            "-D CONNECT content-type: content-type is not allowed in CONNECT",
        ),
        (
            "publish",
            &["-D", "PUBLISH", "colour", "red"],
            "-D PUBLISH colour: unknown property",
        ),
        (
            "publish",
            &["-D", "PUBACK", "reason-string", "x"],
            "-D PUBACK",
        ),
        (
            "publish",
            &["-D", "CONNECT", "receive-maximum", "0"],
            "-D CONNECT receive-maximum 0: must be a number from 1 to 65535",
        ),
        (
            "publish",
            &["-D", "PUBLISH", "message-expiry-interval", "soon"],
            "-D PUBLISH message-expiry-interval soon: must be a number",
        ),
        (
            "publish",
            &["-V", "311", "-D", "PUBLISH", "user-property", "a", "b"],
            "-D PUBLISH user-property needs MQTT 5 (-V 5), not 3.1.1",
        ),
        (
            "publish",
            &["-D", "PUBLISH", "content-type", "a", "--content-type", "b"],
            "-D PUBLISH content-type: the message already has one",
        ),
        (
            "publish",
            &["-D", "SUBSCRIBE", "user-property", "a", "b"],
            "mqtt publish sends no SUBSCRIBE",
        ),
        (
            "subscribe",
            &["-D", "PUBLISH", "content-type", "x", "-t", "t"],
            "-D PUBLISH content-type: mqtt subscribe sends no PUBLISH",
        ),
        (
            "subscribe",
            &["-D", "SUBSCRIBE", "subscription-identifier", "0", "t"],
            "from 1 to 268435455",
        ),
        (
            "publish",
            &["-D", "WILL", "will-delay-interval", "5"],
            "-D WILL will-delay-interval: there is no will (give --will-topic)",
        ),
        (
            "publish",
            &["--will-payload", "x"],
            "--will-payload needs --will-topic",
        ),
        (
            "publish",
            &["--will-qos", "1"],
            "--will-qos needs --will-topic",
        ),
        (
            "publish",
            &["--will-retain"],
            "--will-retain needs --will-topic",
        ),
        (
            "publish",
            &["--will-topic", "w/#"],
            "invalid will topic \"w/#\"",
        ),
        ("publish", &["-V", "311", "-x", "60"], "-x needs MQTT 5"),
        ("publish", &["-x", "soon"], "-x soon: must be a number"),
        ("publish", &["-c"], "needs a client identifier (-i)"),
        (
            "publish",
            &["-D", "DISCONNECT", "session-expiry-interval", "9"],
            "-D DISCONNECT session-expiry-interval: the session expiry at CONNECT is 0",
        ),
    ];
    for (subcommand, extra, expected) in cases {
        let mut args = vec![*subcommand];
        args.extend(nobody);
        if *subcommand == "publish" {
            args.extend(["-t", "t", "-m", "x"]);
        }
        args.extend_from_slice(extra);
        let error = run(mqtt(&args), b"").one_line_failure();
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    let rr = ["rr", "-t", "q", "-e", "r", "-m", "x"];
    let error = run(mqtt(rr.iter().chain(&nobody).chain(&["-V", "311"])), b"").one_line_failure();
    assert!(error.contains("mqtt rr needs MQTT 5"), "{error}");
    let error = run(
        mqtt(
            rr.iter()
                .chain(&nobody)
                .chain(&["-D", "PUBLISH", "response-topic", "x"]),
        ),
        b"",
    )
    .one_line_failure();
    assert!(error.contains("the message already has one"), "{error}");
}

/// A responder: answers each request on `filter` with "pong " and the request's payload, on
/// its response topic with its correlation data, after first a message carrying someone
/// else's correlation data, which `mqtt rr` must skip.
fn responder(server: &Server, filter: &str) -> thread::JoinHandle<()> {
    let client = Client::connect(ClientOptions::new("127.0.0.1", server.port())).unwrap();
    let mut requests = client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    thread::spawn(move || {
        let request = requests.recv_timeout(TIMEOUT).expect("a request");
        let properties = request.properties();
        let response_topic = properties.response_topic.clone().expect("a response topic");
        let correlation = properties
            .correlation_data
            .clone()
            .expect("correlation data");
        let topic = response_topic.parse().expect("a topic name");
        let mut other = Publish::new(topic, "not yours");
        other.qos = QoS::AtLeastOnce;
        other.properties.correlation_data = Some("someone else".into());
        client.publish_with(other).unwrap();
        let topic = response_topic.parse().expect("a topic name");
        let mut payload = b"pong ".to_vec();
        payload.extend_from_slice(request.payload());
        let mut response = Publish::new(topic, payload);
        response.qos = QoS::AtLeastOnce;
        response.properties.correlation_data = Some(correlation);
        client.publish_with(response).unwrap();
        client.disconnect().unwrap();
    })
}

/// `mqtt rr` prints the response to its request, skipping one with other correlation data;
/// `-D PUBLISH correlation-data` is the correlation data sent.
#[test]
fn rr_prints_the_response() {
    for target in TARGETS {
        let Some(server) = Server::start(target) else {
            continue;
        };
        let answering = responder(&server, "rr/service");
        #[rustfmt::skip]
        let args = ["-t", "rr/service", "-e", "rr/replies/1", "-m", "ping", "-q", "1", "-W", "30"];
        let out = command(&server, "rr", &args).success();
        assert_eq!(out.stdout, "pong ping\n", "{target:?}: {out:#?}");
        answering.join().unwrap();

        let answering = responder(&server, "rr/service");
        #[rustfmt::skip]
        let args = [
            "-t", "rr/service", "-e", "rr/replies/2", "-n", "-F", "json",
            "-D", "PUBLISH", "correlation-data", "mine",
        ];
        let out = command(&server, "rr", &args).success();
        let response = json_line(out.stdout.trim_end());
        assert_eq!(response["topic"], "rr/replies/2", "{target:?}: {out:#?}");
        assert_eq!(response["payload"], "pong ", "{out:#?}");
        assert_eq!(
            response["properties"]["correlation_data"], "mine",
            "{out:#?}"
        );
        answering.join().unwrap();
    }
}

/// With nobody answering, `-W 1` ends `mqtt rr` after about a second: one line, status 1.
#[test]
fn rr_times_out_when_nobody_answers() {
    let server = Server::start(Target::Ours).unwrap();
    let started = Instant::now();
    let args = [
        "-t",
        "rr/nobody",
        "-e",
        "rr/silence",
        "-m",
        "hello?",
        "-W",
        "1",
    ];
    let error = command(&server, "rr", &args).one_line_failure();
    assert_eq!(error, "mqtt: no response on rr/silence within 1 s");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
}
