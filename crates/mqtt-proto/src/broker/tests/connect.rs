//! The first packets of a connection: CONNECT and what the broker makes of raw bytes.

use bytes::BytesMut;

use super::util::{Net, payloads};
use crate::ReasonCode;
use crate::codec::{self};
use crate::packet::{Connect, Packet, QoS, Version};

/// Feeds raw bytes to a fresh broker connection and returns what the broker answered.
fn raw_exchange(net: &mut Net, bytes: &[u8]) -> (Vec<Packet>, bool) {
    let conn = net.broker.open(net.now).unwrap();
    net.broker.handle_bytes(conn, net.now, bytes);
    let mut out = BytesMut::new();
    net.broker.poll_transmit(conn, net.now, &mut out);
    let mut packets = Vec::new();
    for version in [Version::V5, Version::V3_1_1] {
        let mut copy = out.clone();
        packets.clear();
        while let Ok(Some(p)) = codec::decode(&mut copy, version, &Default::default()) {
            packets.push(p);
        }
        if copy.is_empty() {
            break;
        }
    }
    let mut closed = false;
    while let Some(event) = net.broker.poll_event() {
        closed |= matches!(event, crate::broker::BrokerEvent::Close(c) if c == conn);
    }
    (packets, closed)
}

#[test]
fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    let mut net = Net::new();
    let (answer, closed) = raw_exchange(&mut net, &[0xC0, 0x00]);
    assert!(answer.is_empty());
    assert!(closed);
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level_gets_connack_0x84_or_0x01() {
    let mut net = Net::new();
    // CONNECT with protocol level 6.
    let level6 = [
        0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 0, 1, b'c',
    ];
    let mut level6 = level6.to_vec();
    level6[1] = (level6.len() - 2) as u8;
    let (answer, closed) = raw_exchange(&mut net, &level6);
    assert!(closed);
    assert!(matches!(
        answer.as_slice(),
        [Packet::ConnAck(c)] if c.reason_code == ReasonCode::UnsupportedProtocolVersion
    ));
    // MQTT 3.1 (level 3, "MQIsdp") gets the 3.1.1 return code 1.
    let mut v31 = vec![0x10, 0, 0, 6];
    v31.extend_from_slice(b"MQIsdp");
    v31.extend_from_slice(&[3, 2, 0, 60, 0, 1, b'c']);
    v31[1] = (v31.len() - 2) as u8;
    let conn = net.broker.open(net.now).unwrap();
    net.broker.handle_bytes(conn, net.now, &v31);
    let mut out = BytesMut::new();
    net.broker.poll_transmit(conn, net.now, &mut out);
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x01]);
}

#[test]
fn mqtt_3_1_0_2_second_connect_is_a_protocol_error() {
    let mut net = Net::new();
    let conn = net.broker.open(net.now).unwrap();
    let mut wire = BytesMut::new();
    let connect = Packet::Connect(Box::new(Connect::new(Version::V5, "twice")));
    codec::encode(&connect, Version::V5, &mut wire).unwrap();
    codec::encode(&connect, Version::V5, &mut wire).unwrap();
    net.broker.handle_bytes(conn, net.now, &wire);
    let mut out = BytesMut::new();
    net.broker.poll_transmit(conn, net.now, &mut out);
    let mut packets = Vec::new();
    while let Some(p) = codec::decode(&mut out, Version::V5, &Default::default()).unwrap() {
        packets.push(p);
    }
    assert!(matches!(packets.as_slice(), [
        Packet::ConnAck(_),
        Packet::Disconnect(d)
    ] if d.reason_code == ReasonCode::ProtocolError));
}

#[test]
fn inbound_topic_aliases_from_a_client_are_resolved() {
    let mut net = Net::new();
    let sub = net.join(Version::V5, "sub");
    net.subscribe(sub, "long/topic", QoS::AtMostOnce);
    // A client whose server allows aliases uses them automatically.
    let publisher = net.join(Version::V5, "pub");
    for payload in ["1", "2"] {
        net.publish(publisher, "long/topic", payload, QoS::AtMostOnce);
    }
    let got = net.messages(sub);
    assert_eq!(payloads(&got), ["1", "2"]);
    assert!(got.iter().all(|m| m.topic == "long/topic"));
}
