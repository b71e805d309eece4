//! The cases both codec benches run: each is the wire form of one packet, our packet and
//! rumqttc's for it, and the copies an encode bench writes. `codec.rs` times them (criterion),
//! `instructions.rs` counts their instructions (callgrind).

// Each bench uses part of this module.
#![allow(dead_code)]

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use mqtt_proto::codec::{self, Limits};
use mqtt_proto::packet::{
    Connect, ConnectProperties, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Subscribe,
    SubscribeProperties, Subscription, TopicFilter, TopicName, Unsubscribe, UnsubscribeProperties,
    UserProperty, Version, Will, WillProperties,
};
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes::v5 as r5;

/// Large enough for every case; both decoders check it.
pub(crate) const MAX: usize = 1 << 20;

/// How many packets an encode iteration writes (one for the 64 KiB cases). A copy's speed
/// depends on where its source and destination lie relative to cache lines and to the stores
/// before it; one packet encoded to the start of one buffer measures one such placement, and
/// which one depends on the allocator. Several packets from different allocations, each
/// written after the one before, measure an average (and a connection's write buffer holds
/// several packets between flushes, too). Times are per iteration: divide by this.
pub(crate) const ENCODE_COPIES: usize = 8;

/// rumqttc's packet for one protocol version.
// Built once per case and only borrowed in the timed loops: its size costs nothing there.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Theirs {
    V4(r4::Packet),
    V5(r5::Packet),
}

impl Theirs {
    pub(crate) fn decode(wire: &mut BytesMut, version: Version) -> Theirs {
        match version {
            Version::V3_1_1 => Theirs::V4(r4::Packet::read(wire, MAX).expect("rumqttc v4 decode")),
            Version::V5 => {
                Theirs::V5(r5::Packet::read(wire, Some(MAX as u32)).expect("rumqttc v5 decode"))
            }
        }
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        match self {
            Theirs::V4(packet) => packet.write(buf, MAX).expect("rumqttc v4 encode"),
            Theirs::V5(packet) => packet
                .write(buf, Some(MAX as u32))
                .expect("rumqttc v5 encode"),
        };
    }
}

/// A copy of `wire` in the state a connection's read buffer is in once it has handed out its
/// first packet: its memory is already shared, so taking a packet off the front only counts a
/// reference. A fresh `BytesMut` allocates that shared state on its first `split_to`, on both
/// sides, once per buffer rather than once per packet.
pub(crate) fn read_buffer(wire: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(wire.len() + 1);
    buf.extend_from_slice(wire);
    buf.extend_from_slice(&[0]);
    drop(buf.split_off(wire.len()));
    buf
}

/// One benchmark case: its wire form, rumqttc's packet for it and the copies the encode benches
/// write.
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) version: Version,
    pub(crate) theirs: Theirs,
    pub(crate) wire: BytesMut,
    /// What the encode benches write: copies of `ours` and `theirs`.
    pub(crate) encode: Vec<(Packet, Theirs)>,
}

impl Case {
    pub(crate) fn new(name: &str, version: Version, ours: impl Into<Packet>) -> Case {
        let ours = ours.into();
        let mut wire = BytesMut::new();
        codec::encode(&ours, version, &mut wire).expect("encode");
        let theirs = Theirs::decode(&mut wire.clone(), version);
        let mut theirs_wire = BytesMut::new();
        theirs.encode(&mut theirs_wire);
        assert_eq!(
            theirs_wire, wire,
            "{name}: both codecs must agree on the bytes"
        );
        let decoded = codec::decode(&mut wire.clone(), version, &Limits::new(MAX as u32));
        assert_eq!(decoded, Ok(Some(ours)), "{name}");
        // Each copy is decoded by both sides from its own copy of the bytes, and then both
        // encode the same payload: encoding is mostly that copy, and its speed depends on
        // where the source lies.
        let copies = if wire.len() > 1024 { 1 } else { ENCODE_COPIES };
        let encode = (0..copies)
            .map(|_| {
                let mut ours = codec::decode(&mut wire.clone(), version, &Limits::new(MAX as u32))
                    .ok()
                    .flatten()
                    .expect("decoded");
                let mut theirs = Theirs::decode(&mut wire.clone(), version);
                if let Packet::Publish(publish) = &mut ours {
                    let payload = publish.payload.clone();
                    match &mut theirs {
                        Theirs::V4(r4::Packet::Publish(p)) => p.payload = payload,
                        Theirs::V5(r5::Packet::Publish(p)) => p.payload = payload,
                        _ => panic!("{name}: both codecs must read a PUBLISH"),
                    }
                }
                (ours, theirs)
            })
            .collect();
        Case {
            name: name.to_owned(),
            version,
            theirs,
            wire,
            encode,
        }
    }
}

pub(crate) fn publish(version: Version, qos: QoS, payload_len: usize) -> Case {
    let mut publish = Publish::new(
        topic("sensors/building-7/floor-3/temperature"),
        payload(payload_len),
    );
    publish.qos = qos;
    if qos != QoS::AtMostOnce {
        publish.packet_id = NonZeroU16::new(4242);
    }
    let v = match version {
        Version::V3_1_1 => "v311",
        Version::V5 => "v5",
    };
    let size = match payload_len {
        n if n >= 1024 => format!("{}KiB", n / 1024),
        n => format!("{n}B"),
    };
    Case::new(
        &format!("publish/{v}/qos{}/{size}", qos.as_u8()),
        version,
        publish,
    )
}

pub(crate) fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic name")
}

pub(crate) fn payload(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

pub(crate) fn connect_v5() -> Case {
    let mut connect = Connect::new(Version::V5, "sensor-gateway-0042");
    connect.keep_alive = 30;
    connect.username = Some("gateway".into());
    connect.password = Some(Bytes::from_static(b"correct horse battery staple"));
    connect.properties = ConnectProperties {
        session_expiry_interval: Some(3600),
        receive_maximum: NonZeroU16::new(100),
        maximum_packet_size: NonZeroU32::new(256 * 1024),
        topic_alias_maximum: Some(16),
        request_response_information: Some(true),
        request_problem_information: Some(true),
        user_properties: vec![
            UserProperty::new("site", "berlin-3"),
            UserProperty::new("firmware", "2.4.1"),
        ],
        ..ConnectProperties::default()
    };
    let mut will = Will::new(
        topic("sensors/building-7/status"),
        "offline",
        QoS::AtLeastOnce,
    );
    will.retain = true;
    will.properties = WillProperties {
        will_delay_interval: Some(10),
        message_expiry_interval: Some(600),
        content_type: Some("text/plain".into()),
        ..WillProperties::default()
    };
    connect.will = Some(will);
    Case::new("connect/v5/properties", Version::V5, connect)
}

pub(crate) fn subscribe(version: Version) -> Case {
    let filters = (0..10)
        .map(|i| {
            let qos = QoS::from_u8(i % 3).unwrap_or_default();
            let filter = TopicFilter::new(format!("sensors/building-{i}/+/temperature"));
            Subscription::new(filter.expect("valid filter"), qos)
        })
        .collect();
    let subscribe = Subscribe {
        packet_id: NonZeroU16::MIN,
        properties: SubscribeProperties::default(),
        filters,
    };
    let name = match version {
        Version::V3_1_1 => "subscribe/v311/10-filters",
        Version::V5 => "subscribe/v5/10-filters",
    };
    Case::new(name, version, subscribe)
}

/// A plausible inbound stream of a busy 3.1.1 connection: mostly small publishes and acks.
pub(crate) fn mixed_stream(count: usize) -> (BytesMut, usize) {
    let mut wire = BytesMut::new();
    let filter = TopicFilter::new("devices/+/telemetry").expect("valid filter");
    for i in 0..count {
        let id = NonZeroU16::new((i % 65_535) as u16 + 1).unwrap_or(NonZeroU16::MIN);
        let packet: Packet = match i % 10 {
            0..=3 => Publish::new(
                topic(&format!("devices/{}/telemetry", i % 100)),
                payload(32),
            )
            .into(),
            4 | 5 => {
                let mut publish = Publish::new(topic("devices/commands/reboot"), payload(100));
                publish.qos = QoS::AtLeastOnce;
                publish.packet_id = Some(id);
                publish.into()
            }
            6 => PubAck::new(id).into(),
            7 => match i % 3 {
                0 => PubRec::new(id).into(),
                1 => PubRel::new(id).into(),
                _ => PubComp::new(id).into(),
            },
            8 => Packet::PingReq,
            _ if i % 20 == 9 => Subscribe {
                packet_id: id,
                properties: SubscribeProperties::default(),
                filters: vec![Subscription::new(filter.clone(), QoS::AtLeastOnce)],
            }
            .into(),
            _ => Unsubscribe {
                packet_id: id,
                properties: UnsubscribeProperties::default(),
                filters: vec![filter.clone()],
            }
            .into(),
        };
        codec::encode(&packet, Version::V3_1_1, &mut wire).expect("encode");
    }
    (wire, count)
}
