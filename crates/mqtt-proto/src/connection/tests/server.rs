//! Server core scenarios: a [`ServerConnection`] against a scripted client on a virtual clock,
//! without a broker, named after the normative statements they check where there is one.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::ReasonCode;
use crate::codec::{self, DecodeError, Limits};
use crate::connection::{
    DisconnectReason, ProtocolError, ServerConfig, ServerConnection, ServerEvent, ServerSession,
    ServerState,
};
use crate::packet::{ConnAckProperties, Connect, Packet, PacketId, PubRel, Publish, QoS, Version};
use crate::topic::valid_name;

/// A server connection and the client's side of the wire.
struct Peer {
    server: ServerConnection,
    version: Version,
    now: Instant,
    from_server: BytesMut,
}

impl Peer {
    fn new(config: ServerConfig, version: Version) -> Self {
        let now = Instant::now();
        Self {
            server: ServerConnection::new(config, now),
            version,
            now,
            from_server: BytesMut::new(),
        }
    }

    /// A connection that accepted a CONNECT with this keep alive.
    fn connected(config: ServerConfig, version: Version, keep_alive: u16) -> Self {
        let mut peer = Self::new(config, version);
        let mut connect = Connect::new(version, "c1");
        connect.keep_alive = keep_alive;
        peer.send([Packet::Connect(Box::new(connect))]);
        assert!(matches!(peer.events()[..], [ServerEvent::Connect(_)]));
        let accepted = peer.server.accept(
            peer.now,
            false,
            ServerSession::default(),
            ConnAckProperties::default(),
        );
        assert_eq!(accepted, Ok(()));
        assert!(matches!(peer.sent()[..], [Packet::ConnAck(_)]));
        peer
    }

    /// The client sends packets.
    fn send(&mut self, packets: impl IntoIterator<Item = Packet>) {
        let mut wire = BytesMut::new();
        for packet in packets {
            codec::encode(&packet, self.version, &mut wire).expect("client packet encodes");
        }
        self.server.handle_bytes(self.now, &wire);
    }

    /// Everything the server has to send, decoded as the client would.
    fn sent(&mut self) -> Vec<Packet> {
        let mut raw = BytesMut::new();
        self.server.poll_transmit(self.now, &mut raw);
        self.from_server.extend_from_slice(&raw);
        let mut packets = Vec::new();
        while let Some(packet) =
            codec::decode(&mut self.from_server, self.version, &Limits::default())
                .expect("server sent an invalid packet")
        {
            packets.push(packet);
        }
        packets
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
    }
}

fn pid(id: u16) -> PacketId {
    NonZeroU16::new(id).unwrap()
}

fn publish(id: u16, qos: QoS) -> Packet {
    let mut publish = Publish::new(valid_name("a/b"), Bytes::from_static(b"payload"));
    publish.qos = qos;
    publish.packet_id = (qos != QoS::AtMostOnce).then(|| pid(id));
    Packet::Publish(publish)
}

#[test]
fn connect_is_reported_and_accept_answers_with_connack() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut peer = Peer::new(ServerConfig::default(), version);
        assert_eq!(peer.server.state(), ServerState::AwaitingConnect);
        peer.send([Packet::Connect(Box::new(Connect::new(version, "c1")))]);
        let events = peer.events();
        assert!(
            matches!(&events[..], [ServerEvent::Connect(c)] if c.client_id == "c1"),
            "{events:?}"
        );
        assert_eq!(peer.server.state(), ServerState::Authenticating);
        assert!(
            peer.sent().is_empty(),
            "nothing before the application decides"
        );
        peer.server
            .accept(
                peer.now,
                true,
                ServerSession::default(),
                ConnAckProperties::default(),
            )
            .unwrap();
        let sent = peer.sent();
        assert!(
            matches!(&sent[..], [Packet::ConnAck(c)]
                if c.session_present && c.reason_code == ReasonCode::Success),
            "{sent:?}"
        );
        assert_eq!(peer.server.state(), ServerState::Connected);
    }
}

#[test]
fn refuse_answers_with_connack_and_closes() {
    let mut peer = Peer::new(ServerConfig::default(), Version::V5);
    peer.send([Packet::Connect(Box::new(Connect::new(Version::V5, "c1")))]);
    peer.events();
    peer.server
        .refuse(
            peer.now,
            ReasonCode::BadUserNameOrPassword,
            ConnAckProperties::default(),
        )
        .unwrap();
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::ConnAck(c)]
            if !c.session_present && c.reason_code == ReasonCode::BadUserNameOrPassword),
        "{sent:?}"
    );
    assert!(matches!(
        peer.events()[..],
        [ServerEvent::Disconnected(DisconnectReason::Refused {
            reason_code: ReasonCode::BadUserNameOrPassword,
            ..
        })]
    ));
    assert!(peer.server.is_closed());
}

#[test]
fn mqtt_3_1_0_1_a_first_packet_other_than_connect_closes_without_an_answer() {
    let mut peer = Peer::new(ServerConfig::default(), Version::V5);
    peer.send([Packet::PingReq]);
    assert!(matches!(
        peer.events()[..],
        [ServerEvent::Disconnected(DisconnectReason::Protocol(
            ProtocolError::UnexpectedPacket(_)
        ))]
    ));
    assert!(peer.sent().is_empty());
    assert!(peer.server.is_closed());
}

#[test]
fn a_malformed_connect_closes_without_an_answer() {
    let mut peer = Peer::new(ServerConfig::default(), Version::V5);
    // CONNECT with a remaining length of 2 that holds half a protocol name.
    peer.server
        .handle_bytes(peer.now, &[0x10, 0x02, 0x00, 0x04]);
    let events = peer.events();
    assert!(
        matches!(
            events[..],
            [ServerEvent::Disconnected(DisconnectReason::Protocol(
                ProtocolError::Decode(_)
            ))]
        ),
        "{events:?}"
    );
    assert!(peer.sent().is_empty());
}

#[test]
fn mqtt_3_1_2_2_an_unsupported_protocol_level_gets_connack_0x84() {
    let mut peer = Peer::new(ServerConfig::default(), Version::V5);
    // A CONNECT of protocol level 6, which no version defines.
    let mut wire = BytesMut::new();
    let connect = Packet::Connect(Box::new(Connect::new(Version::V5, "c1")));
    codec::encode(&connect, Version::V5, &mut wire).unwrap();
    let level = wire.iter().position(|&b| b == 5).unwrap();
    wire[level] = 6;
    peer.server.handle_bytes(peer.now, &wire);
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::ConnAck(c)]
            if c.reason_code == ReasonCode::UnsupportedProtocolVersion),
        "{sent:?}"
    );
    assert!(matches!(
        peer.events()[..],
        [ServerEvent::Disconnected(DisconnectReason::Protocol(
            ProtocolError::Decode(DecodeError::UnsupportedProtocolVersion(6))
        ))]
    ));
}

#[test]
fn no_connect_within_the_connect_timeout_closes() {
    let config = ServerConfig::default();
    let timeout = config.connect_timeout;
    let mut peer = Peer::new(config, Version::V5);
    assert_eq!(peer.server.poll_timeout(), Some(peer.now + timeout));
    peer.advance(timeout - Duration::from_millis(1));
    assert!(peer.events().is_empty());
    peer.advance(Duration::from_millis(1));
    assert!(matches!(
        peer.events()[..],
        [ServerEvent::Disconnected(DisconnectReason::ConnectTimeout)]
    ));
}

#[test]
fn mqtt_3_1_2_24_keep_alive_expiry_after_one_and_a_half_intervals() {
    for version in [Version::V3_1_1, Version::V5] {
        let mut peer = Peer::connected(ServerConfig::default(), version, 10);
        // Any packet restarts the interval.
        peer.advance(Duration::from_secs(14));
        peer.send([Packet::PingReq]);
        assert!(matches!(peer.sent()[..], [Packet::PingResp]));
        peer.advance(Duration::from_millis(14_999));
        assert!(peer.events().is_empty(), "{version:?}: not yet");
        peer.advance(Duration::from_millis(1));
        assert!(matches!(
            peer.events()[..],
            [ServerEvent::Disconnected(
                DisconnectReason::KeepAliveTimeout
            )]
        ));
        let sent = peer.sent();
        match version {
            // 5.0 says why with DISCONNECT 0x8D; 3.1.1 has no server DISCONNECT.
            Version::V5 => assert!(
                matches!(&sent[..], [Packet::Disconnect(d)]
                    if d.reason_code == ReasonCode::KeepAliveTimeout),
                "{sent:?}"
            ),
            Version::V3_1_1 => assert!(sent.is_empty(), "{sent:?}"),
        }
        // A late timer call finds nothing more to do.
        peer.advance(Duration::from_secs(60));
        assert!(peer.events().is_empty());
    }
}

#[test]
fn a_keep_alive_of_zero_never_expires() {
    let mut peer = Peer::connected(ServerConfig::default(), Version::V5, 0);
    assert_eq!(peer.server.poll_timeout(), None);
    peer.advance(Duration::from_secs(24 * 60 * 60));
    assert!(peer.events().is_empty());
}

#[test]
fn qos1_messages_are_acknowledged_with_puback_when_the_application_says() {
    // Section 4.3.2: the receiver answers a QoS 1 PUBLISH with PUBACK of its packet identifier.
    let mut peer = Peer::connected(ServerConfig::default(), Version::V5, 0);
    peer.send([publish(7, QoS::AtLeastOnce)]);
    let events = peer.events();
    let [ServerEvent::Message(message)] = &events[..] else {
        panic!("{events:?}");
    };
    assert!(
        peer.sent().is_empty(),
        "no PUBACK before the application acknowledges"
    );
    let token = message.ack.expect("QoS 1 carries a token");
    peer.server
        .ack(peer.now, token, ReasonCode::Success)
        .unwrap();
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::PubAck(a)] if a.packet_id == pid(7)),
        "{sent:?}"
    );
    // A token is used once.
    assert!(
        peer.server
            .ack(peer.now, token, ReasonCode::Success)
            .is_err()
    );
}

#[test]
fn qos2_messages_are_acknowledged_with_pubrec_then_pubcomp() {
    // Section 4.3.3: PUBREC for the PUBLISH, then PUBCOMP for the PUBREL, same identifier.
    let mut peer = Peer::connected(ServerConfig::default(), Version::V5, 0);
    peer.send([publish(9, QoS::ExactlyOnce)]);
    let events = peer.events();
    let [ServerEvent::Message(message)] = &events[..] else {
        panic!("{events:?}");
    };
    peer.server
        .ack(peer.now, message.ack.unwrap(), ReasonCode::Success)
        .unwrap();
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::PubRec(r)] if r.packet_id == pid(9)),
        "{sent:?}"
    );
    // A duplicate of the PUBLISH before the PUBREL is not a new message.
    let Packet::Publish(mut again) = publish(9, QoS::ExactlyOnce) else {
        unreachable!()
    };
    again.dup = true;
    peer.send([Packet::Publish(again)]);
    assert!(
        peer.events()
            .iter()
            .all(|e| !matches!(e, ServerEvent::Message(_))),
        "delivered once"
    );
    peer.sent();
    peer.send([Packet::PubRel(PubRel::new(pid(9)))]);
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::PubComp(c)] if c.packet_id == pid(9)),
        "{sent:?}"
    );
    assert!(matches!(peer.events()[..], [ServerEvent::Released(id)] if id == pid(9)));
}

#[test]
fn receive_maximum_exceeded_is_disconnected_with_0x93() {
    // Section 3.3.4: more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum the server
    // announced are a protocol error, reported with DISCONNECT 0x93.
    let config = ServerConfig {
        receive_maximum: 2,
        ..ServerConfig::default()
    };
    let mut peer = Peer::connected(config, Version::V5, 0);
    peer.send([publish(1, QoS::AtLeastOnce), publish(2, QoS::AtLeastOnce)]);
    assert_eq!(peer.events().len(), 2);
    assert_eq!(peer.server.state(), ServerState::Connected);
    peer.send([publish(3, QoS::AtLeastOnce)]);
    let events = peer.events();
    assert!(
        matches!(
            events.last(),
            Some(ServerEvent::Disconnected(DisconnectReason::Protocol(
                ProtocolError::ReceiveMaximumExceeded
            )))
        ),
        "{events:?}"
    );
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::Disconnect(d)]
            if d.reason_code == ReasonCode::ReceiveMaximumExceeded),
        "{sent:?}"
    );
}

#[test]
fn mqtt_3_2_2_15_a_packet_above_the_maximum_packet_size_is_disconnected_with_0x95() {
    let config = ServerConfig {
        max_packet_size: 64,
        ..ServerConfig::default()
    };
    let mut peer = Peer::connected(config, Version::V5, 0);
    let mut big = Publish::new(valid_name("a/b"), Bytes::from(vec![0u8; 100]));
    big.qos = QoS::AtMostOnce;
    peer.send([Packet::Publish(big)]);
    let events = peer.events();
    assert!(
        matches!(
            events[..],
            [ServerEvent::Disconnected(DisconnectReason::Protocol(
                ProtocolError::Decode(DecodeError::PacketTooLarge { .. })
            ))]
        ),
        "{events:?}"
    );
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::Disconnect(d)]
            if d.reason_code == ReasonCode::PacketTooLarge),
        "{sent:?}"
    );
}

#[test]
fn mqtt_3_1_0_2_a_second_connect_is_a_protocol_error() {
    let mut peer = Peer::connected(ServerConfig::default(), Version::V5, 0);
    peer.send([Packet::Connect(Box::new(Connect::new(Version::V5, "c1")))]);
    assert!(matches!(
        peer.events()[..],
        [ServerEvent::Disconnected(DisconnectReason::Protocol(
            ProtocolError::UnexpectedPacket(_)
        ))]
    ));
    let sent = peer.sent();
    assert!(
        matches!(&sent[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
        "{sent:?}"
    );
}
