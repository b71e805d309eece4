//! The stateful targets: arbitrary peer bytes and timer ticks into a connected client core, and
//! into a broker core serving several connections at once next to a well-behaved client.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_proto::broker::{Broker, BrokerConfig, BrokerEvent, ConnectionId};
use mqtt_proto::codec::{self, Limits};
use mqtt_proto::connection::{AckToken, ClientConfig, ClientConnection, ClientEvent, ClientState};
use mqtt_proto::packet::{
    Packet, Publish, QoS, SubscribeProperties, Subscription, TopicFilter, TopicName, Version,
};

/// Reads `[op][len][len bytes]` records from fuzz input.
struct Ops<'a>(&'a [u8]);

impl<'a> Iterator for Ops<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&op, rest) = self.0.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len).min(rest.len());
        let (body, rest) = rest.split_at(len);
        self.0 = rest;
        Some((op, body))
    }
}

fn qos(byte: u8) -> QoS {
    match byte % 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Everything a client sends must be a valid packet: decode it all.
fn check_output(client: &mut ClientConnection, now: Instant, version: Version) {
    let mut out = BytesMut::new();
    client.poll_transmit(now, &mut out);
    let limits = Limits::new(Limits::PROTOCOL_MAX_PACKET_SIZE);
    // The CONNECT of a fresh connection is decoded by its own version.
    while !out.is_empty() {
        match codec::decode(&mut out, version, &limits) {
            Ok(Some(_)) => {}
            other => panic!("the client sent an invalid packet: {other:?}"),
        }
    }
}

/// The `client_stream` target. Byte 0: bit 0 the version, bit 1 manual acknowledgement. Then
/// records: op 0 server bytes, 1 time passes, 2 publish, 3 ack, 4 subscribe, 5 connection lost
/// and a new connection with the session.
pub fn client_stream(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let version = if flags & 1 == 0 {
        Version::V3_1_1
    } else {
        Version::V5
    };
    let mut config = ClientConfig::new(version, "fuzz");
    config.manual_ack = flags & 2 != 0;
    config.keep_alive = 5;
    config.clean_start = false;
    config.max_packet_size = 4096;
    config.properties.receive_maximum = std::num::NonZeroU16::new(8);
    config.properties.topic_alias_maximum = Some(4);
    let mut now = Instant::now();
    let mut client = ClientConnection::new(config.clone(), None, now);
    let mut connack = BytesMut::new();
    let _ = codec::encode(&Packet::ConnAck(Box::default()), version, &mut connack);
    client.handle_bytes(now, &connack);
    let mut tokens: Vec<AckToken> = Vec::new();
    let mut closed = false;
    for (op, body) in Ops(rest) {
        match op % 6 {
            0 => client.handle_bytes(now, body),
            1 => {
                now += Duration::from_millis(u64::from(body.first().copied().unwrap_or(0)) * 100);
                client.handle_timeout(now);
            }
            2 => {
                let mut publish = Publish::new(
                    TopicName::from_static("fuzz/t"),
                    Bytes::copy_from_slice(body),
                );
                publish.qos = qos(body.first().copied().unwrap_or(0));
                let _ = client.publish(now, publish);
            }
            3 => {
                if !tokens.is_empty() {
                    let index = usize::from(body.first().copied().unwrap_or(0)) % tokens.len();
                    let _ = client.ack(now, tokens.remove(index));
                }
            }
            4 => {
                let filter = String::from_utf8_lossy(body).into_owned();
                if let Ok(filter) = TopicFilter::new(filter) {
                    let _ = client.subscribe(
                        now,
                        vec![Subscription::new(filter, QoS::ExactlyOnce)],
                        SubscribeProperties::default(),
                    );
                }
            }
            _ => {
                client.handle_eof(now);
                let session = client.into_session();
                client = ClientConnection::new(config.clone(), Some(session), now);
                tokens.clear();
                closed = false;
            }
        }
        while let Some(event) = client.poll_event() {
            assert!(!closed, "an event after Disconnected: {event:?}");
            match event {
                ClientEvent::Message(message) => tokens.extend(message.ack),
                ClientEvent::Disconnected(_) => closed = true,
                _ => {}
            }
        }
        if closed {
            assert_eq!(client.state(), ClientState::Closed);
        }
        if client.state() == ClientState::Connected {
            // Never more in flight than the server's Receive Maximum allows.
            assert!(client.inflight() <= client.send_window());
        }
        check_output(&mut client, now, version);
    }
}

/// A client core wired to the broker in memory.
struct Good {
    client: ClientConnection,
    conn: ConnectionId,
    received: usize,
    gone: bool,
}

fn pump(broker: &mut Broker, good: &mut Good, now: Instant) {
    for _ in 0..64 {
        let mut moved = false;
        let mut out = BytesMut::new();
        if !good.gone && good.client.poll_transmit(now, &mut out) {
            broker.handle_bytes(good.conn, now, &out);
            moved = true;
        }
        while let Some(conn) = broker.poll_ready() {
            let mut out = BytesMut::new();
            broker.poll_transmit(conn, now, &mut out);
            if conn == good.conn && !good.gone {
                good.client.handle_bytes(now, &out);
                moved = true;
            }
        }
        while let Some(event) = broker.poll_event() {
            if let BrokerEvent::Close(conn) = event {
                if conn == good.conn {
                    good.gone = true;
                }
                broker.handle_eof(conn, now);
                moved = true;
            }
        }
        while let Some(event) = good.client.poll_event() {
            match event {
                ClientEvent::Message(_) => good.received += 1,
                ClientEvent::Disconnected(_) => good.gone = true,
                _ => {}
            }
        }
        if !moved {
            return;
        }
    }
}

/// The `broker_stream` target: records `[op][len][bytes]` where op's low bits pick one of four
/// fuzzed connections and the action (open, bytes, end of file, time passes). A well-behaved
/// client is connected throughout; if nothing disconnected it (a fuzzed CONNECT may take its
/// session over), its own messages still reach it at the end.
pub fn broker_stream(data: &[u8]) {
    let mut now = Instant::now();
    let config = BrokerConfig::default();
    let mut broker = Broker::new(config);
    let Some(conn) = broker.open(now) else {
        return;
    };
    let mut good_config = ClientConfig::new(Version::V5, "well-behaved");
    good_config.keep_alive = 0;
    let mut good = Good {
        client: ClientConnection::new(good_config, None, now),
        conn,
        received: 0,
        gone: false,
    };
    pump(&mut broker, &mut good, now);
    let Ok(good_filter) = TopicFilter::new("good/#") else {
        return;
    };
    let _ = good.client.subscribe(
        now,
        vec![Subscription::new(good_filter, QoS::AtLeastOnce)],
        SubscribeProperties::default(),
    );
    pump(&mut broker, &mut good, now);
    let mut fuzzed: [Option<ConnectionId>; 4] = [None; 4];
    for (op, body) in Ops(data) {
        let slot = usize::from(op & 3);
        match (op >> 2) % 4 {
            0 => {
                if fuzzed[slot].is_none() {
                    fuzzed[slot] = broker.open(now);
                }
            }
            1 => {
                if let Some(conn) = fuzzed[slot] {
                    broker.handle_bytes(conn, now, body);
                }
            }
            2 => {
                if let Some(conn) = fuzzed[slot].take() {
                    broker.handle_eof(conn, now);
                }
            }
            _ => {
                now += Duration::from_secs(u64::from(body.first().copied().unwrap_or(0)));
                broker.handle_timeout(now);
            }
        }
        // What the fuzzed connections get is thrown away; closed ones are forgotten.
        pump(&mut broker, &mut good, now);
        for slot in &mut fuzzed {
            if let Some(conn) = *slot {
                let mut out = BytesMut::new();
                broker.poll_transmit(conn, now, &mut out);
            }
        }
        let _ = broker.stats();
    }
    if good.gone || good.client.state() != ClientState::Connected {
        return;
    }
    let before = good.received;
    let mut publish = Publish::new(TopicName::from_static("good/check"), "still here");
    publish.qos = QoS::AtLeastOnce;
    let _ = good.client.publish(now, publish);
    pump(&mut broker, &mut good, now);
    if !good.gone {
        assert_eq!(
            good.received,
            before + 1,
            "the well-behaved client lost its message"
        );
    }
}
