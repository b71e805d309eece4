//! MQTT over WebSocket against our broker, from below: raw HTTP upgrade requests (good and
//! bad), raw WebSocket frames (text, oversized, MQTT packets split across frames and several in
//! one), and clients nobody here wrote (paho-mqtt in Python, MQTT.js in Node).
//!
//! The spec's statements: MQTT is carried in binary frames, any other data frame closes the
//! connection [MQTT-6.0.0-1]; a frame may hold part of a packet or several, the receiver does
//! not assume alignment [MQTT-6.0.0-2]; the client offers the subprotocol `mqtt`
//! [MQTT-6.0.0-3] and the server selects it [MQTT-6.0.0-4].

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Bytes, Message};
use futures_lite::StreamExt;
use mqtt_async::broker::{BrokerConfig, ListenerConfig};
use mqtt_async::{BrokerHandle, ClientOptions, QoS, Version};
use mqtt_smol::{Broker, Client};

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// The RFC 6455 example key and the accept value it must produce (section 1.3).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Our broker with a plain WebSocket listener (first) and a TCP one, on kernel-chosen ports.
fn start(config: BrokerConfig) -> (BrokerHandle, SocketAddr, SocketAddr) {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let builder = Broker::builder()
        .listener(ListenerConfig::tcp(any).websocket())
        .bind(any)
        .config(config);
    let (handle, addrs) = Broker::start_in_thread(builder).expect("start the broker");
    (handle, addrs[0], addrs[1])
}

/// Sends `request` as is and returns the whole response (the broker closes after an error).
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.write_all(request).expect("send the request");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                // A 101 keeps the connection open: its head is all there is to read.
                if response.starts_with(b"HTTP/1.1 101") && response.ends_with(b"\r\n\r\n") {
                    break;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("reading the response: {error}"),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// An upgrade request for `path` with `headers` (each with its CRLF) after the usual ones.
fn upgrade(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";

fn good_headers() -> String {
    format!(
        "{UPGRADE}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n"
    )
}

fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[test]
fn the_upgrade_selects_mqtt_and_bad_requests_get_their_http_status() {
    let (handle, ws, _) = start(BrokerConfig::default());

    // [MQTT-6.0.0-4]: the server selects `mqtt`; the accept key follows RFC 6455.
    let ok = http(ws, &upgrade("/mqtt", &good_headers()));
    assert_eq!(status(&ok), 101, "{ok}");
    assert!(
        ok.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
        "{ok}"
    );
    assert!(ok.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{ok}");
    // Among other subprotocols, and after a query string.
    let headers = good_headers().replace("Protocol: mqtt", "Protocol: chat, MQTT");
    let ok = http(ws, &upgrade("/mqtt?token=1", &headers));
    assert_eq!(status(&ok), 101, "{ok}");

    let refusals: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "another path",
            upgrade("/other", &good_headers()),
            404,
            "/mqtt",
        ),
        (
            "a plain GET",
            upgrade("/mqtt", "Accept: text/html\r\n"),
            426,
            "not a WebSocket upgrade",
        ),
        (
            // [MQTT-6.0.0-3]: the client must offer `mqtt`.
            "no subprotocol",
            upgrade(
                "/mqtt",
                &format!("{UPGRADE}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"),
            ),
            400,
            "mqtt",
        ),
        (
            "another subprotocol",
            upgrade(
                "/mqtt",
                &good_headers().replace("Protocol: mqtt", "Protocol: chat"),
            ),
            400,
            "mqtt",
        ),
        (
            "another WebSocket version",
            upgrade(
                "/mqtt",
                &good_headers().replace("Version: 13", "Version: 8"),
            ),
            426,
            "version 13",
        ),
        (
            "no key",
            upgrade(
                "/mqtt",
                &format!("{UPGRADE}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n"),
            ),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "a POST",
            format!(
                "POST /mqtt HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
                good_headers()
            )
            .into_bytes(),
            405,
            "GET",
        ),
        (
            "headers over 8 KiB",
            upgrade(
                "/mqtt",
                &format!("{}Cookie: {}\r\n", good_headers(), "c".repeat(9000)),
            ),
            431,
            "8192 bytes",
        ),
        (
            "an MQTT CONNECT instead of HTTP",
            b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04mqtt".to_vec(),
            400,
            "not an HTTP request",
        ),
    ];
    for (what, request, expected, explained) in refusals {
        let response = http(ws, &request);
        assert_eq!(status(&response), expected, "{what}: {response}");
        assert!(
            response.contains(explained),
            "{what}: the body should say why ({explained}): {response}"
        );
    }
    // None of that reached MQTT; the listener serves real clients as before.
    smol::block_on(round_trip(ws, Version::V5, "after-refusals"));
    smol::block_on(handle.stop());
}

/// A WebSocket client of our own making, with the raw frames under our control.
async fn raw_ws(addr: SocketAddr) -> WebSocketStream<smol::net::TcpStream> {
    let stream = smol::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (ws, response) = async_tungstenite::client_async(request, stream)
        .await
        .expect("the upgrade");
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    ws
}

/// The bytes of the binary frames that arrive until `want` bytes came or `deadline` passed.
async fn read_binary(ws: &mut WebSocketStream<smol::net::TcpStream>, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + STEP;
    while got.len() < want {
        let frame = futures_lite::future::or(async { ws.next().await }, async {
            smol::Timer::at(deadline).await;
            None
        })
        .await;
        match frame {
            Some(Ok(Message::Binary(bytes))) => got.extend_from_slice(&bytes),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected binary frames, got {other:?} after {got:02x?}"),
        }
    }
    got
}

/// The next message, which must be a Close frame, and its code.
async fn close_code(ws: &mut WebSocketStream<smol::net::TcpStream>) -> Option<CloseCode> {
    let deadline = Instant::now() + STEP;
    loop {
        let frame = futures_lite::future::or(async { ws.next().await }, async {
            smol::Timer::at(deadline).await;
            panic!("no Close frame within {STEP:?}");
        })
        .await;
        match frame {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a Close frame, got {other:?}"),
        }
    }
}

/// A 3.1.1 CONNECT of client `id` with clean session and no keep alive.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut packet = vec![0x10, 12 + id.len() as u8, 0, 4];
    packet.extend_from_slice(b"MQTT");
    packet.extend_from_slice(&[4, 0x02, 0, 0, 0, id.len() as u8]);
    packet.extend_from_slice(id.as_bytes());
    packet
}

const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

#[test]
fn packets_split_across_frames_and_packed_in_one_are_both_read() {
    let (handle, ws_addr, _) = start(BrokerConfig::default());
    smol::block_on(async {
        let mut ws = raw_ws(ws_addr).await;
        // [MQTT-6.0.0-2]: one CONNECT in three frames.
        let connect = connect_packet("split");
        let (first, rest) = connect.split_at(3);
        let (second, third) = rest.split_at(7);
        for part in [first, second, third] {
            ws.send(Message::Binary(Bytes::copy_from_slice(part)))
                .await
                .unwrap();
        }
        assert_eq!(read_binary(&mut ws, 4).await, CONNACK);

        // SUBSCRIBE t (QoS 0), PUBLISH t "hi" (QoS 0) and PINGREQ, all in one frame.
        let mut packed = vec![0x82, 6, 0, 1, 0, 1, b't', 0];
        packed.extend_from_slice(&[0x30, 5, 0, 1, b't', b'h', b'i']);
        packed.extend_from_slice(&[0xC0, 0]);
        ws.send(Message::Binary(packed.into())).await.unwrap();
        let suback: &[u8] = &[0x90, 3, 0, 1, 0];
        let publish: &[u8] = &[0x30, 5, 0, 1, b't', b'h', b'i'];
        let pingresp: &[u8] = &[0xD0, 0];
        let got = read_binary(&mut ws, suback.len() + publish.len() + pingresp.len()).await;
        // The PUBLISH comes after the SUBACK (it was routed to the new subscription); the
        // PINGRESP may come before either.
        let without_ping = [
            got.strip_prefix(pingresp).map(<[u8]>::to_vec),
            got.strip_suffix(pingresp).map(<[u8]>::to_vec),
            (got.len() > 7 && got[5..7] == *pingresp).then(|| [&got[..5], &got[7..]].concat()),
        ];
        let expected = [suback, publish].concat();
        assert!(
            without_ping.iter().flatten().any(|rest| *rest == expected),
            "expected SUBACK, PUBLISH and PINGRESP, got {got:02x?}"
        );
    });
    smol::block_on(handle.stop());
}

#[test]
fn a_text_frame_closes_the_connection_with_1003() {
    let (handle, ws_addr, _) = start(BrokerConfig::default());
    smol::block_on(async {
        let mut ws = raw_ws(ws_addr).await;
        ws.send(Message::Binary(connect_packet("text").into()))
            .await
            .unwrap();
        assert_eq!(read_binary(&mut ws, 4).await, CONNACK);
        // [MQTT-6.0.0-1]: any data frame but binary closes the connection.
        ws.send(Message::text("PINGREQ")).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
    });
    smol::block_on(handle.stop());
}

#[test]
fn a_frame_over_the_limit_closes_the_connection_with_1009() {
    // Packets of at most 1 KiB: frames of at most 64 KiB (the floor).
    let mut config = BrokerConfig::default();
    config.connection.max_packet_size = 1024;
    let (handle, ws_addr, _) = start(config);
    smol::block_on(async {
        let mut ws = raw_ws(ws_addr).await;
        ws.send(Message::Binary(vec![0u8; 100 * 1024].into()))
            .await
            .unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    });
    smol::block_on(handle.stop());
}

/// Our client over ws: subscribe, publish at every QoS to itself, receive.
async fn round_trip(addr: SocketAddr, version: Version, id: &str) {
    let options = ClientOptions::from_url(&format!("ws://{addr}/mqtt"))
        .unwrap()
        .version(version)
        .client_id(id)
        .reconnect(None);
    let client = Client::connect(options).await.expect("connect over ws");
    let mut messages = client.subscribe("rt/#", QoS::ExactlyOnce).await.unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        client.publish("rt/x", "over ws", qos).await.unwrap();
        let message = futures_lite::future::or(async { messages.recv().await }, async {
            smol::Timer::after(STEP).await;
            None
        })
        .await
        .expect("the message in time");
        assert_eq!(
            (&message.payload()[..], message.qos()),
            (&b"over ws"[..], qos)
        );
    }
    client.disconnect().await.unwrap();
}

#[test]
fn a_wrong_path_fails_our_client_with_the_http_status() {
    let (handle, ws_addr, _) = start(BrokerConfig::default());
    smol::block_on(async {
        let options = ClientOptions::from_url(&format!("ws://{ws_addr}/elsewhere"))
            .unwrap()
            .reconnect(None);
        match Client::connect(options).await {
            Err(mqtt_async::Error::WebSocket(message)) => {
                assert!(message.contains("404"), "{message}")
            }
            other => panic!("expected a WebSocket error, got {other:?}"),
        }
    });
    smol::block_on(handle.stop());
}

/// Runs `program` with `args`; `None` (after a notice) when it cannot run here and CI is not
/// set, so that the test is skipped. Under CI, which installs them, a missing one fails.
fn third_party(program: &str, args: &[&str], what: &str) -> Option<std::process::Output> {
    let output = Command::new(program).args(args).output();
    match output {
        Ok(output) if output.status.success() => Some(output),
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let missing =
                stderr.contains("No module named") || stderr.contains("Cannot find module");
            if missing && std::env::var_os("CI").is_none() {
                eprintln!("note: {what} is not installed; skipping (see .ci/run): {stderr}");
                return None;
            }
            panic!(
                "{what} failed ({}):\n{}\n{stderr}",
                output.status,
                String::from_utf8_lossy(&output.stdout)
            );
        }
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("note: {program} cannot run ({error}); skipping {what}");
            None
        }
        Err(error) => panic!("{program} cannot run under CI: {error}"),
    }
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn paho_mqtt_over_websocket_at_every_qos() {
    let (handle, ws_addr, _) = start(BrokerConfig::default());
    let port = ws_addr.port().to_string();
    for version in ["3.1.1", "5"] {
        let Some(output) = third_party(
            "python3",
            &[&script("paho_ws.py"), "127.0.0.1", &port, version],
            "paho-mqtt",
        ) else {
            break;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("received 0 1 2"),
            "MQTT {version}: {stdout}"
        );
    }
    smol::block_on(handle.stop());
}

#[test]
fn mqtt_js_over_websocket_at_every_qos() {
    let (handle, ws_addr, _) = start(BrokerConfig::default());
    let url = format!("ws://{ws_addr}/mqtt");
    for version in ["4", "5"] {
        let Some(output) =
            third_party("node", &[&script("mqttjs_ws.js"), &url, version], "MQTT.js")
        else {
            break;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("received 0 1 2"),
            "protocol {version}: {stdout}"
        );
    }
    smol::block_on(handle.stop());
}

#[test]
fn our_client_over_websocket_to_mosquitto() {
    let ws_port = crate::tls::free_port();
    let config = [
        format!("listener {ws_port} 127.0.0.1"),
        "protocol websockets".to_owned(),
    ];
    let lines: Vec<&str> = config.iter().map(String::as_str).collect();
    let Some(broker) = crate::mosquitto::Mosquitto::start_with(&lines) else {
        return;
    };
    crate::tls::wait_for_port(ws_port, &broker);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ws_port));
    for (version, id) in [(Version::V3_1_1, "ws-mosq-311"), (Version::V5, "ws-mosq-5")] {
        smol::block_on(round_trip(addr, version, id));
    }
}

/// After a good upgrade, raw frame bytes: what comes back until the broker closes.
fn after_upgrade(addr: SocketAddr, frames: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream
        .write_all(&upgrade("/mqtt", &good_headers()))
        .unwrap();
    // The 101 response, up to its blank line.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the 101 response");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream.write_all(frames).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    rest
}

/// The close code of the first frame in `bytes`, if it is a Close frame from the server
/// (unmasked, payload under 126 bytes).
fn server_close_code(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [0x88, len, hi, lo, ..] if *len >= 2 && *len < 126 => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

#[test]
fn malformed_frames_close_the_connection_with_1002() {
    let (handle, ws_addr, _) = start(BrokerConfig::default());
    // A client frame without a mask (RFC 6455 5.1: the server must close).
    let unmasked = after_upgrade(ws_addr, &[0x82, 0x02, 0xC0, 0x00]);
    assert_eq!(server_close_code(&unmasked), Some(1002), "{unmasked:02x?}");
    // Reserved bits set with no extension negotiated (RFC 6455 5.2).
    let reserved = after_upgrade(ws_addr, &[0xF2, 0x80, 0, 0, 0, 0]);
    assert_eq!(server_close_code(&reserved), Some(1002), "{reserved:02x?}");
    // An unknown opcode (0x3).
    let opcode = after_upgrade(ws_addr, &[0x83, 0x80, 0, 0, 0, 0]);
    assert_eq!(server_close_code(&opcode), Some(1002), "{opcode:02x?}");
    // The listener serves real clients as before.
    smol::block_on(round_trip(ws_addr, Version::V3_1_1, "after-bad-frames"));
    smol::block_on(handle.stop());
}
