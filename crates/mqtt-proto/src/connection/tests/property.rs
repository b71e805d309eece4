//! Property test: random publishes in both directions at random QoS, random manual acks, and
//! connection cuts at random points, against a model server that keeps the session.
//!
//! Invariants: every QoS 1 message arrives at least once and every QoS 2 message exactly once,
//! in both directions; no packet identifier leaks; the server's Receive Maximum is never exceeded;
//! manual acknowledgements reach the wire in arrival order; the client never reports a protocol
//! error against a correct server.
//!
//! The client also crashes: it saves its session (`encode_session`) before each write when
//! `session_changes` moved, as a driver with a session store does, and a crash restarts it from
//! the last save; the application's record of what it processed rolls back to what it was at
//! the last write (an application whose work is durable before its acknowledgements leave). Nothing may be lost or duplicated across a crash either, and the
//! change counter must move whenever the saved state would differ.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::util::Sim;
use crate::ReasonCode;
use crate::codec::{self, Limits};
use crate::connection::{AckToken, ClientConfig, ClientEvent, DisconnectReason, Session};
use crate::packet::{
    ConnAck, Packet, PacketId, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Version,
};
use crate::topic::valid_name;

#[derive(Debug, Clone)]
enum Op {
    ClientPublish(QoS),
    ServerPublish(QoS),
    /// Bytes move both ways; with `Some(n)`, the connection breaks after `n` packets (plus part
    /// of the next one) in the direction `to_server`.
    Exchange {
        cut: Option<(bool, usize, usize)>,
    },
    Ack(usize),
    /// The client process dies and starts again from its last saved session.
    Crash,
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => qos().prop_map(Op::ClientPublish),
        3 => qos().prop_map(Op::ServerPublish),
        3 => Just(Op::Exchange { cut: None }),
        1 => (any::<bool>(), 0..6usize, 0..8usize).prop_map(|c| Op::Exchange { cut: Some(c) }),
        2 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Crash),
    ]
}

/// A server that keeps one persistent session and answers as the specification requires.
#[derive(Default)]
struct ModelServer {
    version: Option<Version>,
    receive_maximum: u16,
    client_receive_maximum: u16,
    /// Client-to-server QoS 2 identifiers awaiting PUBREL.
    awaiting_pubrel: HashSet<u16>,
    /// Messages from the client, by id, with how often they arrived (as new messages).
    received: HashMap<u32, u32>,
    /// Identifiers of client publishes not yet acknowledged, for the Receive Maximum check.
    unacked_from_client: HashSet<u16>,
    /// Server-to-client exchanges by packet identifier: (message, qos, PUBREL stage).
    inflight: BTreeMap<u16, (u32, QoS, bool)>,
    /// Order in which this connection's QoS 1/2 publishes reached the client.
    delivery_order: VecDeque<u16>,
    queue: VecDeque<(u32, QoS)>,
    next_id: u16,
}

impl ModelServer {
    fn version(&self) -> Version {
        self.version.unwrap_or(Version::V5)
    }

    fn handle(&mut self, packet: Packet, out: &mut Vec<Packet>) {
        match packet {
            Packet::Connect(connect) => {
                self.client_receive_maximum = connect
                    .properties
                    .receive_maximum
                    .map_or(u16::MAX, |m| m.get());
                self.unacked_from_client.clear();
                self.delivery_order.clear();
                let mut connack = ConnAck {
                    session_present: !connect.clean_start,
                    ..ConnAck::default()
                };
                if self.version() == Version::V5 {
                    connack.properties.receive_maximum = NonZeroU16::new(self.receive_maximum);
                }
                out.push(Packet::ConnAck(Box::new(connack)));
                // Resume the session: PUBLISH again with DUP, or PUBREL, in order.
                for (&id, &(message, qos, released)) in &self.inflight {
                    if released {
                        out.push(Packet::PubRel(PubRel::new(PacketId::new(id).unwrap())));
                    } else {
                        out.push(Packet::Publish(message_publish(message, qos, id, true)));
                    }
                }
            }
            Packet::Publish(p) => {
                let message = message_id(&p.payload);
                let Some(id) = p.packet_id else {
                    *self.received.entry(message).or_default() += 1;
                    return;
                };
                if self.version() == Version::V5 {
                    self.unacked_from_client.insert(id.get());
                    assert!(
                        self.unacked_from_client.len() <= usize::from(self.receive_maximum),
                        "client exceeded the server's Receive Maximum"
                    );
                }
                match p.qos {
                    QoS::AtLeastOnce => {
                        *self.received.entry(message).or_default() += 1;
                        self.unacked_from_client.remove(&id.get());
                        out.push(Packet::PubAck(PubAck::new(id)));
                    }
                    _ => {
                        // Method B: deliver on PUBLISH, remember the identifier until PUBREL.
                        if self.awaiting_pubrel.insert(id.get()) {
                            *self.received.entry(message).or_default() += 1;
                        }
                        out.push(Packet::PubRec(PubRec::new(id)));
                    }
                }
            }
            Packet::PubRel(rel) => {
                self.awaiting_pubrel.remove(&rel.packet_id.get());
                self.unacked_from_client.remove(&rel.packet_id.get());
                out.push(Packet::PubComp(PubComp::new(rel.packet_id)));
            }
            Packet::PubAck(ack) => {
                self.check_order(ack.packet_id);
                let entry = self.inflight.remove(&ack.packet_id.get());
                assert!(
                    matches!(entry, Some((_, QoS::AtLeastOnce, false))),
                    "{entry:?}"
                );
            }
            Packet::PubRec(rec) => {
                let id = rec.packet_id.get();
                match self.inflight.get(&id).copied() {
                    Some((message, QoS::ExactlyOnce, released)) => {
                        if !released {
                            self.check_order(rec.packet_id);
                        }
                        self.inflight.insert(id, (message, QoS::ExactlyOnce, true));
                        out.push(Packet::PubRel(PubRel::new(rec.packet_id)));
                    }
                    other => panic!("PUBREC for {id}: {other:?}"),
                }
            }
            Packet::PubComp(comp) => {
                let entry = self.inflight.remove(&comp.packet_id.get());
                assert!(
                    matches!(entry, Some((_, QoS::ExactlyOnce, true))),
                    "{entry:?}"
                );
            }
            Packet::PingReq => out.push(Packet::PingResp),
            other => panic!("model server got {other:?}"),
        }
    }

    fn check_order(&mut self, id: PacketId) {
        // Acks for this connection's deliveries come in delivery order (MQTT-4.6.0-2). An ack
        // for a message delivered on an earlier connection is not in the list.
        if let Some(pos) = self.delivery_order.iter().position(|&d| d == id.get()) {
            assert_eq!(pos, 0, "ack for {id} overtook {:?}", self.delivery_order);
            self.delivery_order.pop_front();
        }
    }

    /// Starts queued server publishes within the client's Receive Maximum.
    fn send_queued(&mut self, out: &mut Vec<Packet>) {
        while let Some(&(message, qos)) = self.queue.front() {
            if qos != QoS::AtMostOnce {
                let window = match self.version() {
                    Version::V5 => usize::from(self.client_receive_maximum),
                    Version::V3_1_1 => 20,
                };
                if self.inflight.len() >= window {
                    return;
                }
                self.queue.pop_front();
                let id = loop {
                    self.next_id = self.next_id.checked_add(1).unwrap_or(1);
                    if !self.inflight.contains_key(&self.next_id) {
                        break self.next_id;
                    }
                };
                self.inflight.insert(id, (message, qos, false));
                out.push(Packet::Publish(message_publish(message, qos, id, false)));
            } else {
                self.queue.pop_front();
                out.push(Packet::Publish(message_publish(message, qos, 0, false)));
            }
        }
    }

    /// Records which QoS 1/2 PUBLISHes reached the client, in order.
    fn delivered(&mut self, packet: &Packet) {
        if let Packet::Publish(p) = packet
            && let Some(id) = p.packet_id
            && !self.delivery_order.contains(&id.get())
        {
            self.delivery_order.push_back(id.get());
        }
    }
}

fn message_publish(message: u32, qos: QoS, id: u16, dup: bool) -> Publish {
    let mut p = Publish::new(
        valid_name("m"),
        Bytes::copy_from_slice(&message.to_be_bytes()),
    );
    p.qos = qos;
    p.packet_id = PacketId::new(id).filter(|_| qos != QoS::AtMostOnce);
    p.dup = dup;
    p
}

fn message_id(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().expect("4-byte payload"))
}

struct World {
    sim: Sim,
    config: ClientConfig,
    server: ModelServer,
    /// Outstanding manual acknowledgements and the message each stands for.
    tokens: Vec<(AckToken, u32)>,
    /// Messages the client processed, by id, with counts: on delivery with automatic
    /// acknowledgement, on acknowledgement with manual (an unacknowledged message is
    /// redelivered after a reconnect, so it was never processed).
    client_received: HashMap<u32, u32>,
    sent_by_client: Vec<(u32, QoS)>,
    sent_by_server: Vec<(u32, QoS)>,
    next_message: u32,
    /// The last save: the session, and what the application had processed and published.
    saved: Saved,
    /// The connection's `session_changes` at the last save.
    saved_changes: u64,
}

#[derive(Default)]
struct Saved {
    session: BytesMut,
    client_received: HashMap<u32, u32>,
    sent_by_client: usize,
}

impl World {
    fn new(version: Version, manual_ack: bool, server_receive_maximum: u16) -> Self {
        let mut config = ClientConfig::new(version, "prop");
        config.clean_start = false;
        config.manual_ack = manual_ack;
        config.max_inflight = 8;
        config.max_queued = 100_000;
        if version == Version::V5 {
            config.properties.receive_maximum = NonZeroU16::new(4);
        }
        let server = ModelServer {
            version: Some(version),
            receive_maximum: server_receive_maximum,
            ..ModelServer::default()
        };
        let mut world = Self {
            sim: Sim::new(config.clone()),
            config,
            server,
            tokens: Vec::new(),
            client_received: HashMap::new(),
            sent_by_client: Vec::new(),
            sent_by_server: Vec::new(),
            next_message: 0,
            saved: Saved::default(),
            saved_changes: 0,
        };
        Session::new().encode(&mut world.saved.session).unwrap();
        world.exchange(None);
        world
    }

    /// Saves the session if it changed since the last save, as a driver with a session store
    /// does before it writes; if it did not change, checks that saving would change nothing
    /// (the token counter aside).
    fn save(&mut self) {
        // The application's own record is durable by the time the acknowledgements of what it
        // processed leave, changed session or not.
        self.saved.client_received = self.client_received.clone();
        self.saved.sent_by_client = self.sent_by_client.len();
        let mut now = BytesMut::new();
        self.sim.client.encode_session(&mut now).unwrap();
        if self.sim.client.session_changes() != self.saved_changes {
            self.saved.session = now;
            self.saved_changes = self.sim.client.session_changes();
            return;
        }
        let without_token = |bytes: &[u8]| {
            let mut session = Session::decode(bytes).unwrap();
            session.next_token = 0;
            session
        };
        assert_eq!(
            without_token(&now),
            without_token(&self.saved.session),
            "the session changed and session_changes did not move"
        );
    }

    /// The process dies: a new one starts from the last save.
    fn crash(&mut self) {
        self.tokens.clear();
        self.client_received = self.saved.client_received.clone();
        // Publishes accepted after the last save were never written, nor saved: lost with the
        // process (their futures never completed).
        self.sent_by_client.truncate(self.saved.sent_by_client);
        let session = Session::decode(&self.saved.session).unwrap();
        self.sim = Sim::with_session(self.config.clone(), Some(session));
        self.saved_changes = 0;
        self.exchange(None);
    }

    fn collect_events(&mut self) {
        for event in self.sim.take_events() {
            match event {
                ClientEvent::Message(m) => {
                    let message = message_id(&m.publish.payload);
                    match m.ack {
                        Some(token) => self.tokens.push((token, message)),
                        None => *self.client_received.entry(message).or_default() += 1,
                    }
                }
                ClientEvent::Disconnected(reason) => assert!(
                    matches!(reason, DisconnectReason::ConnectionLost),
                    "client closed: {reason:?}"
                ),
                ClientEvent::Published(outcome) => {
                    assert_eq!(outcome.reason_code, ReasonCode::Success)
                }
                ClientEvent::PublishDropped { .. } => panic!("{event:?}"),
                _ => {}
            }
        }
    }

    fn exchange(&mut self, cut: Option<(bool, usize, usize)>) {
        let version = self.server.version();
        self.save();
        // Client to server.
        let mut raw = BytesMut::new();
        self.sim.client.poll_transmit(self.sim.now, &mut raw);
        let mut to_server = Vec::new();
        while let Some(p) = codec::decode(&mut raw, version, &Limits::default()).unwrap() {
            to_server.push(p);
        }
        let mut broken = false;
        if let Some((true, n, _)) = cut
            && n < to_server.len()
        {
            to_server.truncate(n);
            broken = true;
        }
        let mut replies = Vec::new();
        for packet in to_server {
            self.server.handle(packet, &mut replies);
        }
        if !broken {
            self.server.send_queued(&mut replies);
        }
        // Server to client.
        let mut keep = replies.len();
        let mut partial = 0;
        if !broken
            && let Some((false, n, part)) = cut
            && n < replies.len()
        {
            keep = n;
            partial = part;
            broken = true;
        }
        let mut wire = BytesMut::new();
        for (index, packet) in replies.iter().enumerate() {
            let before = wire.len();
            codec::encode(packet, version, &mut wire).unwrap();
            if index < keep {
                self.server.delivered(packet);
            } else {
                // Part of the next packet reaches the client, then the connection breaks.
                wire.truncate(before + partial.min(wire.len() - before - 1));
                break;
            }
        }
        self.sim.deliver_bytes(&wire);
        self.collect_events();
        if broken {
            self.reconnect();
        }
    }

    fn reconnect(&mut self) {
        self.sim.client.handle_eof(self.sim.now);
        self.collect_events();
        // The driver saves what the last input changed before it ends the connection.
        self.save();
        self.saved_changes = 0;
        // Tokens of the old connection are void; those messages come again.
        self.tokens.clear();
        let sim = std::mem::replace(&mut self.sim, Sim::new(self.config.clone()));
        self.sim = sim.reconnect(self.config.clone());
        self.exchange(None);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::ClientPublish(qos) => {
                let message = self.next_message;
                self.next_message += 1;
                let mut p = Publish::new(
                    valid_name("c"),
                    Bytes::copy_from_slice(&message.to_be_bytes()),
                );
                p.qos = qos;
                match self.sim.client.publish(self.sim.now, p) {
                    Ok(_) => self.sent_by_client.push((message, qos)),
                    Err(error) => assert_eq!(qos, QoS::AtMostOnce, "{error}"),
                }
            }
            Op::ServerPublish(qos) => {
                let message = self.next_message;
                self.next_message += 1;
                self.server.queue.push_back((message, qos));
                self.sent_by_server.push((message, qos));
            }
            Op::Exchange { cut } => self.exchange(cut),
            Op::Crash => self.crash(),
            Op::Ack(index) => {
                if !self.tokens.is_empty() {
                    let (token, message) = self.tokens.remove(index % self.tokens.len());
                    self.sim.client.ack(self.sim.now, token).unwrap();
                    *self.client_received.entry(message).or_default() += 1;
                }
            }
        }
        assert!(self.sim.client.inflight() <= self.sim.client.send_window().max(8));
    }

    fn settle(&mut self) {
        for _ in 0..200 {
            for (token, message) in std::mem::take(&mut self.tokens) {
                self.sim.client.ack(self.sim.now, token).unwrap();
                *self.client_received.entry(message).or_default() += 1;
            }
            self.exchange(None);
            if self.server.queue.is_empty()
                && self.server.inflight.is_empty()
                && self.sim.client.session().pending_packet_ids().is_empty()
                && self.tokens.is_empty()
            {
                return;
            }
        }
        panic!("did not settle");
    }

    fn check(&self) {
        for (message, qos) in &self.sent_by_client {
            let count = self.server.received.get(message).copied().unwrap_or(0);
            match qos {
                QoS::AtMostOnce => assert!(count <= 1),
                QoS::AtLeastOnce => assert!(count >= 1, "client QoS 1 message {message} lost"),
                QoS::ExactlyOnce => assert_eq!(count, 1, "client QoS 2 message {message}"),
            }
        }
        for (message, qos) in &self.sent_by_server {
            let count = self.client_received.get(message).copied().unwrap_or(0);
            match qos {
                QoS::AtMostOnce => assert!(count <= 1),
                QoS::AtLeastOnce => assert!(count >= 1, "server QoS 1 message {message} lost"),
                QoS::ExactlyOnce => assert_eq!(count, 1, "server QoS 2 message {message}"),
            }
        }
        // No packet identifier leaks on either side.
        let session = self.sim.client.session();
        assert_eq!(session.inflight(), 0);
        assert_eq!(session.queued(), 0);
        assert!(session.pending_packet_ids().is_empty());
        assert!(self.server.awaiting_pubrel.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_workloads_with_cuts_lose_and_duplicate_nothing(
        v5 in any::<bool>(),
        manual_ack in any::<bool>(),
        receive_maximum in 1u16..6,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let version = if v5 { Version::V5 } else { Version::V3_1_1 };
        let mut world = World::new(version, manual_ack, receive_maximum);
        for op in ops {
            world.apply(op);
        }
        world.settle();
        world.check();
    }
}
