//! The saved form of a session: round trips (of every kind of state, and of random sessions),
//! a fixed vector of version 1, and the refusal of anything else, cut short or changed.

use std::collections::{BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::format::{Parts, SessionDecodeError};
use super::{ActiveSubscription, Request, Session};
use crate::codec::DecodeError;
use crate::connection::outbound::{Inflight, Outbound};
use crate::packet::{
    PacketId, Publish, PublishProperties, QoS, RetainHandling, Subscribe, SubscribeProperties,
    Subscription, SubscriptionId, SubscriptionOptions, Unsubscribe, UnsubscribeProperties,
    UserProperty,
};
use crate::topic::{TopicFilter, TopicName, valid_filter, valid_name};

fn pid(id: u16) -> PacketId {
    PacketId::new(id).unwrap()
}

fn encode(session: &Session) -> Vec<u8> {
    let mut buf = BytesMut::new();
    session.encode(&mut buf).unwrap();
    buf.to_vec()
}

fn publish(id: u16, qos: QoS, payload: &'static str) -> Publish {
    let mut p = Publish::new(valid_name("a/b"), payload);
    p.qos = qos;
    p.packet_id = Some(pid(id));
    p
}

/// A session with some of everything.
fn full_session() -> Session {
    let mut with_properties = publish(3, QoS::ExactlyOnce, "three");
    with_properties.dup = true;
    with_properties.retain = true;
    with_properties.properties = PublishProperties {
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("re/ply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user_properties: vec![UserProperty::new("k", "v")],
        ..PublishProperties::default()
    }
    .into();
    let inflight = VecDeque::from([
        Inflight::Publish(publish(1, QoS::AtLeastOnce, "one")),
        Inflight::PubRel(pid(2)),
        Inflight::Publish(with_properties),
    ]);
    let queued = VecDeque::from([
        publish(4, QoS::AtLeastOnce, ""),
        publish(9, QoS::ExactlyOnce, "nine"),
    ]);
    let requests = vec![
        Request::Subscribe(Subscribe {
            packet_id: pid(5),
            properties: SubscribeProperties {
                subscription_identifier: SubscriptionId::new(7),
                ..SubscribeProperties::default()
            },
            filters: vec![Subscription::new(valid_filter("x/+"), QoS::AtMostOnce)],
        }),
        Request::Unsubscribe(Unsubscribe {
            packet_id: pid(6),
            properties: UnsubscribeProperties::default(),
            filters: vec![valid_filter("old/#")],
        }),
    ];
    let outbound =
        Outbound::restore(9, inflight, queued, requests.iter().map(Request::packet_id)).unwrap();
    Session {
        assigned_client_id: Some("auto-1234".into()),
        outbound,
        awaiting_pubrel: BTreeSet::from([4, 700, 65_535]),
        next_token: 42,
        requests,
        subscriptions: vec![
            ActiveSubscription {
                subscription: Subscription {
                    filter: valid_filter("$share/g/s/#"),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                },
                identifier: SubscriptionId::new(SubscriptionId::MAX),
            },
            ActiveSubscription {
                subscription: Subscription::new(valid_filter("t"), QoS::AtLeastOnce),
                identifier: None,
            },
        ],
    }
}

#[test]
fn empty_and_full_sessions_round_trip() {
    for session in [Session::new(), full_session()] {
        let saved = encode(&session);
        assert_eq!(Session::decode(&saved), Ok(session.clone()));
        // The restored session saves to the same bytes.
        assert_eq!(encode(&Session::decode(&saved).unwrap()), saved);
    }
    let restored = Session::decode(&encode(&full_session())).unwrap();
    assert_eq!(restored.inflight(), 3);
    assert_eq!(restored.queued(), 2);
    assert_eq!(
        restored.pending_packet_ids(),
        [1, 2, 3, 4, 9].map(pid).to_vec()
    );
    assert_eq!(restored.assigned_client_id(), Some("auto-1234"));
    assert_eq!(restored.outbound.bytes, full_session().outbound.bytes);
}

#[test]
fn a_restored_session_allocates_after_its_counter_and_around_held_ids() {
    let mut restored = Session::decode(&encode(&full_session())).unwrap();
    // 9 was the last given; 1 to 6 and 9 are held.
    assert_eq!(restored.outbound.allocate_id().unwrap().get(), 10);
    let mut wrapped = full_session();
    wrapped.outbound = Outbound::restore(
        u16::MAX,
        VecDeque::new(),
        VecDeque::from([publish(1, QoS::AtLeastOnce, "")]),
        [],
    )
    .unwrap();
    let mut restored = Session::decode(&encode(&wrapped)).unwrap();
    assert_eq!(restored.outbound.allocate_id().unwrap().get(), 2);
}

/// Version 1 of the format, byte for byte: a change that alters it must come with a new
/// version (and a way to read this one).
#[test]
fn format_version_1_vector() {
    let requests = vec![Request::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        properties: UnsubscribeProperties::default(),
        filters: vec![valid_filter("u")],
    })];
    let session = Session {
        assigned_client_id: Some("id".into()),
        outbound: Outbound::restore(
            3,
            VecDeque::from([Inflight::PubRel(pid(3))]),
            VecDeque::from([publish(1, QoS::AtLeastOnce, "p")]),
            [pid(2)],
        )
        .unwrap(),
        awaiting_pubrel: BTreeSet::from([7]),
        next_token: 5,
        requests,
        subscriptions: vec![ActiveSubscription {
            subscription: Subscription::new(valid_filter("s/#"), QoS::ExactlyOnce),
            identifier: SubscriptionId::new(1),
        }],
    };
    #[rustfmt::skip]
    let body: &[u8] = &[
        0x01, 0x00, 0x02, b'i', b'd',                   // flags, assigned id "id"
        0x00, 0x03,                                     // next packet id
        0, 0, 0, 0, 0, 0, 0, 5,                         // next token
        0, 0, 0, 1, 0x00, 0x07,                         // awaiting PUBREL: [7]
        0, 0, 0, 1, 0x02, 0x00, 0x03,                   // in flight: PUBREL 3
        0, 0, 0, 1,                                     // queued: one PUBLISH
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x00, b'p',
        0, 0, 0, 1,                                     // requests: one UNSUBSCRIBE
        0xA2, 0x06, 0x00, 0x02, 0x00, 0x00, 0x01, b'u',
        0, 0, 0, 1,                                     // subscriptions
        0x00, 0x03, b's', b'/', b'#', 0x02, 0, 0, 0, 1,
    ];
    let saved = encode(&session);
    assert_eq!(saved.get(..8), Some(&b"MQTTSESS"[..]));
    assert_eq!(saved.get(8..10), Some(&[0, 1][..]));
    assert_eq!(
        saved.get(10..18),
        Some(&(body.len() as u64).to_be_bytes()[..])
    );
    assert_eq!(saved.get(18..saved.len() - 4), Some(body));
    assert_eq!(saved, frame(body));
    assert_eq!(Session::decode(&saved), Ok(session));
}

#[test]
fn crc32_is_the_ieee_one() {
    assert_eq!(super::format::crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(super::format::crc32(b""), 0);
}

/// A well-framed body: the header and a correct checksum around it.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut saved = b"MQTTSESS".to_vec();
    saved.extend_from_slice(&Session::FORMAT_VERSION.to_be_bytes());
    saved.extend_from_slice(&(body.len() as u64).to_be_bytes());
    saved.extend_from_slice(body);
    let checksum = super::format::crc32(&saved);
    saved.extend_from_slice(&checksum.to_be_bytes());
    saved
}

#[test]
fn anything_else_is_not_a_session() {
    assert_eq!(
        Session::decode(b"{\"json\": true}"),
        Err(SessionDecodeError::NotASession)
    );
    assert_eq!(
        Session::decode(b"MQTTSESX"),
        Err(SessionDecodeError::NotASession)
    );
}

#[test]
fn another_version_is_refused_by_number() {
    let mut saved = encode(&full_session());
    saved[9] = 2;
    assert_eq!(
        Session::decode(&saved),
        Err(SessionDecodeError::UnsupportedVersion(2))
    );
    let message = Session::decode(&saved).unwrap_err().to_string();
    assert!(
        message.contains("version 2") && message.contains("version 1"),
        "{message}"
    );
}

#[test]
fn every_cut_is_truncated_and_every_extra_byte_trailing() {
    let saved = encode(&full_session());
    for len in 0..saved.len() {
        assert_eq!(
            Session::decode(&saved[..len]),
            Err(SessionDecodeError::Truncated),
            "cut at {len}"
        );
    }
    let mut longer = saved.clone();
    longer.extend_from_slice(b"xyz");
    assert_eq!(
        Session::decode(&longer),
        Err(SessionDecodeError::TrailingBytes(3))
    );
}

#[test]
fn every_changed_bit_is_an_error() {
    let saved = encode(&full_session());
    for index in 0..saved.len() {
        for bit in 0..8 {
            let mut changed = saved.clone();
            changed[index] ^= 1 << bit;
            assert!(
                Session::decode(&changed).is_err(),
                "bit {bit} of byte {index} changed"
            );
        }
    }
}

/// Bodies a buggy or hostile writer could frame correctly: each is refused with what is wrong.
#[test]
fn invalid_bodies_are_refused() {
    let head = |rest: &[u8]| {
        // No assigned id, next id 0, token 0, nothing awaiting PUBREL.
        let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&[0, 0, 0, 0]);
        body.extend_from_slice(rest);
        body
    };
    let qos1 = [0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x01, 0x00, b'p'];
    let qos1_again = qos1;
    let qos0 = [0x30, 0x05, 0x00, 0x01, b't', 0x00, b'p'];
    let mut duplicate = head(&[0, 0, 0, 1, 1]);
    duplicate.extend_from_slice(&qos1);
    duplicate.extend_from_slice(&[0, 0, 0, 1]);
    duplicate.extend_from_slice(&qos1_again);
    duplicate.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        Session::decode(&frame(&duplicate)),
        Err(SessionDecodeError::DuplicatePacketId(1))
    );
    let mut at_qos0 = head(&[0, 0, 0, 0, 0, 0, 0, 1]);
    at_qos0.extend_from_slice(&qos0);
    at_qos0.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        Session::decode(&frame(&at_qos0)),
        Err(SessionDecodeError::Invalid(_))
    ));
    let unknown_stage = head(&[0, 0, 0, 1, 3, 0, 1]);
    assert!(matches!(
        Session::decode(&frame(&unknown_stage)),
        Err(SessionDecodeError::Invalid(_))
    ));
    let pubrel_zero = head(&[0, 0, 0, 1, 2, 0, 0]);
    assert!(matches!(
        Session::decode(&frame(&pubrel_zero)),
        Err(SessionDecodeError::Invalid(_))
    ));
    let mut flags = head(&[0; 16]);
    flags[0] = 0x80;
    assert!(matches!(
        Session::decode(&frame(&flags)),
        Err(SessionDecodeError::Invalid(_))
    ));
    // Counts far beyond what is left are refused before anything is read or allocated.
    let huge = head(&[0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(
        Session::decode(&frame(&huge)),
        Err(SessionDecodeError::Truncated)
    );
    let mut bad_packet = head(&[0, 0, 0, 0, 0, 0, 0, 1]);
    bad_packet.extend_from_slice(&[0x36, 0x07, 0x00, 0x01, b't', 0x00, 0x01, 0x00, b'p']);
    bad_packet.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        Session::decode(&frame(&bad_packet)),
        Err(SessionDecodeError::Packet(DecodeError::InvalidQoS))
    );
    let mut extra = head(&[0; 16]);
    extra.push(0);
    assert!(matches!(
        Session::decode(&frame(&extra)),
        Err(SessionDecodeError::Invalid(_))
    ));
    let unordered = {
        let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&[0, 0, 0, 2, 0, 5, 0, 4]);
        body.extend_from_slice(&[0; 16]);
        body
    };
    assert!(matches!(
        Session::decode(&frame(&unordered)),
        Err(SessionDecodeError::Invalid(_))
    ));
}

#[test]
fn a_live_connection_saves_what_into_session_returns() {
    use crate::connection::tests::util::Sim;
    use crate::connection::{ClientConfig, ClientEvent};
    use crate::packet::{ConnAck, ConnAckProperties, Packet, PubRec, Version};

    let mut config = ClientConfig::new(Version::V5, "");
    config.clean_start = false;
    config.max_inflight = 1;
    let mut sim = Sim::new(config);
    sim.accept(ConnAck {
        properties: ConnAckProperties {
            assigned_client_identifier: Some("given".into()),
            ..ConnAckProperties::default()
        },
        ..ConnAck::default()
    });
    let changes = sim.client.session_changes();
    let two = sim
        .client
        .publish(sim.now, publish(1, QoS::ExactlyOnce, "two"))
        .unwrap()
        .unwrap();
    sim.client
        .publish(sim.now, publish(1, QoS::AtLeastOnce, "queued"))
        .unwrap();
    assert!(sim.client.session_changes() > changes);
    sim.sent();
    let changes = sim.client.session_changes();
    sim.deliver([Packet::PubRec(PubRec::new(two))]);
    assert!(
        sim.client.session_changes() > changes,
        "the PUBREL stage is a change"
    );
    let mut received = publish(33, QoS::ExactlyOnce, "in");
    received.topic = TopicName::new("in").unwrap();
    let changes = sim.client.session_changes();
    sim.deliver([Packet::Publish(received)]);
    assert!(
        sim.client.session_changes() > changes,
        "the QoS 2 receive set is"
    );
    assert!(
        sim.take_events()
            .iter()
            .any(|e| matches!(e, ClientEvent::Message(_)))
    );

    let mut live = BytesMut::new();
    sim.client.encode_session(&mut live).unwrap();
    let session = sim.client.into_session();
    let restored = Session::decode(&live).unwrap();
    assert_eq!(restored, session);
    assert_eq!(restored.assigned_client_id(), Some("given"));
    assert_eq!(restored.awaiting_pubrel, BTreeSet::from([33]));
    assert_eq!(restored.inflight(), 1);
    assert_eq!(restored.queued(), 1);
}

#[test]
fn session_parts_borrow_without_copying() {
    let session = full_session();
    let mut a = BytesMut::new();
    Parts::of(&session).encode(&mut a).unwrap();
    let mut b = BytesMut::from(&b"prefix"[..]);
    session.encode(&mut b).unwrap();
    assert_eq!(&b[6..], &a[..], "appended after what the buffer held");
}

// ---- random sessions ----

fn topic() -> impl Strategy<Value = TopicName> {
    "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}".prop_map(|t| TopicName::new(t).unwrap())
}

fn filter() -> impl Strategy<Value = TopicFilter> {
    "[a-z]{1,4}(/(\\+|[a-z]{1,4})){0,2}(/#)?".prop_map(|f| TopicFilter::new(f).unwrap())
}

fn properties() -> impl Strategy<Value = PublishProperties> {
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of("[ -~]{0,8}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec(("[a-z]{0,4}", "[a-z]{0,4}"), 0..3),
        proptest::option::of("[a-z]{1,6}/[a-z]{1,6}"),
    )
        .prop_map(
            |(expiry, content_type, correlation, user, response)| PublishProperties {
                message_expiry_interval: expiry,
                content_type: content_type.map(Into::into),
                correlation_data: correlation.map(Bytes::from),
                user_properties: user
                    .into_iter()
                    .map(|(k, v)| UserProperty::new(k, v))
                    .collect(),
                response_topic: response.map(Into::into),
                ..PublishProperties::default()
            },
        )
}

fn message() -> impl Strategy<Value = Publish> {
    (
        topic(),
        proptest::collection::vec(any::<u8>(), 0..24),
        prop_oneof![Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)],
        any::<bool>(),
        any::<bool>(),
        properties(),
    )
        .prop_map(|(topic, payload, qos, dup, retain, properties)| {
            let mut p = Publish::new(topic, payload);
            p.qos = qos;
            p.dup = dup;
            p.retain = retain;
            p.properties = properties.into();
            p
        })
}

fn active_subscription() -> impl Strategy<Value = ActiveSubscription> {
    (
        filter(),
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        proptest::option::of(1u32..1000),
    )
        .prop_map(|(filter, qos, no_local, rap, rh, id)| ActiveSubscription {
            subscription: Subscription {
                filter,
                options: SubscriptionOptions {
                    qos: QoS::from_u8(qos).unwrap(),
                    no_local,
                    retain_as_published: rap,
                    retain_handling: match rh {
                        0 => RetainHandling::SendAtSubscribe,
                        1 => RetainHandling::SendAtSubscribeIfNew,
                        _ => RetainHandling::DoNotSend,
                    },
                },
            },
            identifier: id.and_then(SubscriptionId::new),
        })
}

/// What takes a packet identifier: a message in flight, at its PUBREL stage or queued, or a
/// request.
#[derive(Debug, Clone)]
enum Holder {
    Inflight(Publish),
    PubRel,
    Queued(Publish),
    Subscribe(Vec<ActiveSubscription>),
    Unsubscribe(Vec<TopicFilter>),
}

fn holder() -> impl Strategy<Value = Holder> {
    prop_oneof![
        3 => message().prop_map(Holder::Inflight),
        1 => Just(Holder::PubRel),
        3 => message().prop_map(Holder::Queued),
        1 => proptest::collection::vec(active_subscription(), 1..3).prop_map(Holder::Subscribe),
        1 => proptest::collection::vec(filter(), 1..3).prop_map(Holder::Unsubscribe),
    ]
}

prop_compose! {
    fn session()(
        assigned in proptest::option::of("[a-zA-Z0-9-]{0,12}"),
        next_id in any::<u16>(),
        first_id in any::<u16>(),
        next_token in any::<u64>(),
        awaiting in proptest::collection::btree_set(1u16.., 0..8),
        holders in proptest::collection::vec(holder(), 0..12),
        subscriptions in proptest::collection::vec(active_subscription(), 0..4),
    ) -> Session {
        let mut id = first_id;
        let mut next = || {
            id = id.checked_add(1).unwrap_or(1);
            pid(id)
        };
        let (mut inflight, mut queued, mut requests) = (VecDeque::new(), VecDeque::new(), Vec::new());
        for holder in holders {
            let packet_id = next();
            match holder {
                Holder::Inflight(mut p) => {
                    p.packet_id = Some(packet_id);
                    inflight.push_back(Inflight::Publish(p));
                }
                Holder::PubRel => inflight.push_back(Inflight::PubRel(packet_id)),
                Holder::Queued(mut p) => {
                    p.packet_id = Some(packet_id);
                    queued.push_back(p);
                }
                Holder::Subscribe(filters) => requests.push(Request::Subscribe(Subscribe {
                    packet_id,
                    properties: SubscribeProperties {
                        subscription_identifier: filters.first().and_then(|f| f.identifier),
                        ..SubscribeProperties::default()
                    },
                    filters: filters.into_iter().map(|f| f.subscription).collect(),
                })),
                Holder::Unsubscribe(filters) => requests.push(Request::Unsubscribe(Unsubscribe {
                    packet_id,
                    properties: UnsubscribeProperties::default(),
                    filters,
                })),
            }
        }
        let outbound = Outbound::restore(
            next_id,
            inflight,
            queued,
            requests.iter().map(Request::packet_id),
        )
        .unwrap();
        Session {
            assigned_client_id: assigned.map(Into::into),
            outbound,
            awaiting_pubrel: awaiting,
            next_token,
            requests,
            subscriptions,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_sessions_round_trip(session in session()) {
        let saved = encode(&session);
        let restored = Session::decode(&saved);
        prop_assert_eq!(restored.as_ref(), Ok(&session));
        prop_assert_eq!(encode(&restored.unwrap()), saved);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Session::decode(&bytes);
        // And behind a valid header, so that the body is read too.
        let _ = Session::decode(&frame(&bytes));
    }

    #[test]
    fn changed_sessions_are_refused_or_read_whole(
        session in session(),
        changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        reframe in any::<bool>(),
    ) {
        let saved = encode(&session);
        // The body changed, then framed again with a correct checksum when `reframe`: the
        // reader must cope with whatever a writer could have put there.
        let mut body = saved[18..saved.len() - 4].to_vec();
        if body.is_empty() {
            return Ok(());
        }
        for (index, byte) in changes {
            let len = body.len();
            body[index % len] = byte;
        }
        let changed = if reframe {
            frame(&body)
        } else {
            let mut changed = saved.clone();
            changed[18..saved.len() - 4].copy_from_slice(&body);
            changed
        };
        if let Ok(restored) = Session::decode(&changed) {
            // Whatever was read saves again to a session that reads back the same.
            prop_assert_eq!(Session::decode(&encode(&restored)), Ok(restored));
        }
    }
}
