//! Broker behaviour, end to end through client cores.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};

use super::util::{Net, payloads, secs};
use crate::ReasonCode;
use crate::broker::{Authorizer, BrokerConfig, ClientInfo};
use crate::codec::{self, Limits};
use crate::connection::{ClientEvent, ClientState, DisconnectReason, UsageError};
use crate::packet::{
    Connect, Packet, Publish, QoS, RetainHandling, SubscribeProperties, Subscription,
    SubscriptionId, UnsubscribeProperties, UserProperty, Version, Will,
};
use crate::topic::{TopicError, TopicName, valid_filter, valid_name};

const BOTH: [Version; 2] = [Version::V3_1_1, Version::V5];

#[test]
fn messages_flow_at_every_qos_between_versions() {
    for sub_version in BOTH {
        for pub_version in BOTH {
            let mut net = Net::new();
            let sub = net.join(sub_version, "sub");
            let publisher = net.join(pub_version, "pub");
            net.subscribe(sub, "a/b", QoS::ExactlyOnce);
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                net.publish(publisher, "a/b", "m", qos);
                let got = net.messages(sub);
                assert_eq!(
                    got.len(),
                    1,
                    "{sub_version:?} <- {pub_version:?} at {qos:?}"
                );
                assert_eq!(got[0].qos, qos);
            }
            let published = net
                .take(publisher)
                .into_iter()
                .filter(|e| matches!(e, ClientEvent::Published(o) if o.reason_code.is_success()))
                .count();
            assert_eq!(published, 2);
        }
    }
}

#[test]
fn mqtt_3_8_4_8_delivered_qos_is_the_minimum_of_subscription_and_publication() {
    let mut net = Net::new();
    let sub = net.join(Version::V5, "sub");
    let publisher = net.join(Version::V5, "pub");
    net.subscribe(sub, "t", QoS::AtLeastOnce);
    net.publish(publisher, "t", "two", QoS::ExactlyOnce);
    net.publish(publisher, "t", "zero", QoS::AtMostOnce);
    let qos: Vec<_> = net.messages(sub).iter().map(|m| m.qos).collect();
    assert_eq!(qos, [QoS::AtLeastOnce, QoS::AtMostOnce]);
}

#[test]
fn v5_properties_reach_v5_subscribers_and_are_dropped_for_v311() {
    let mut net = Net::new();
    let v5 = net.join(Version::V5, "v5");
    let v311 = net.join(Version::V3_1_1, "v311");
    let publisher = net.join(Version::V5, "pub");
    net.subscribe(v5, "t", QoS::AtLeastOnce);
    net.subscribe(v311, "t", QoS::AtLeastOnce);
    let mut publish = Publish::new(valid_name("t"), "p");
    publish.qos = QoS::AtLeastOnce;
    publish
        .properties
        .user_properties
        .push(UserProperty::new("k", "v"));
    publish.properties.content_type = Some("text/plain".into());
    net.publish_packet(publisher, publish);
    let got = net.messages(v5);
    assert_eq!(
        got[0].properties.user_properties,
        [UserProperty::new("k", "v")]
    );
    assert_eq!(
        got[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
    let got = net.messages(v311);
    assert_eq!(payloads(&got), ["p"]);
    assert!(got[0].properties.is_empty());
}

#[test]
fn mqtt_4_7_2_1_clients_cannot_publish_to_sys_topics_and_the_broker_retains_its_own() {
    let mut net = Net::new();
    let watcher = net.join(Version::V5, "watcher");
    net.subscribe(watcher, "$SYS/#", QoS::AtLeastOnce);
    for version in [Version::V5, Version::V3_1_1] {
        let intruder = net.join(version, &format!("intruder-{version:?}"));
        net.publish(intruder, "$SYS/broker/version", "forged", QoS::AtLeastOnce);
        let refused = net.take(intruder).into_iter().any(|e| {
            matches!(e, ClientEvent::Published(o) if o.reason_code == ReasonCode::NotAuthorized)
        });
        // 3.1.1 has no way to say so: the PUBACK is a success and the message goes nowhere.
        assert_eq!(refused, version == Version::V5);
    }
    assert!(
        net.messages(watcher).is_empty(),
        "a client published to $SYS"
    );
    assert_eq!(net.broker.stats().dropped.not_authorized, 2);
    let mut version = Publish::new(valid_name("$SYS/broker/version"), "mqtt-rs");
    version.retain = true;
    assert_eq!(net.broker.publish(net.now, version), Ok(1));
    let late = net.join(Version::V3_1_1, "late");
    net.subscribe(late, "$SYS/broker/+", QoS::AtMostOnce);
    let got = net.messages(late);
    assert_eq!(payloads(&got), ["mqtt-rs"]);
    assert!(got[0].retain);
}

#[test]
fn the_broker_publishes_its_own_messages_but_not_to_the_empty_topic() {
    let mut net = Net::new();
    let watcher = net.join(Version::V5, "watcher");
    net.subscribe(watcher, "$SYS/#", QoS::AtMostOnce);
    let now = net.now;
    let uptime = Publish::new(valid_name("$SYS/uptime"), "42");
    assert_eq!(net.broker.publish(now, uptime), Ok(1));
    net.pump();
    assert_eq!(payloads(&net.messages(watcher)), ["42"]);
    // The empty name stands for a Topic Alias, which the broker's own messages have none of
    // (MQTT-4.7.3-1: a topic is at least one character).
    let empty = Publish::new(TopicName::empty(), "lost");
    assert_eq!(
        net.broker.publish(now, empty),
        Err(UsageError::InvalidTopic(TopicError::Empty))
    );
    net.pump();
    assert!(net.messages(watcher).is_empty());
}

#[test]
fn wildcards_match_and_mqtt_4_7_2_1_dollar_topics_escape_leading_wildcards() {
    let mut net = Net::new();
    let all = net.join(Version::V5, "all");
    let plus = net.join(Version::V5, "plus");
    let sys = net.join(Version::V5, "sys");
    let publisher = net.join(Version::V5, "pub");
    net.subscribe(all, "#", QoS::AtMostOnce);
    net.subscribe(plus, "sensors/+/temp", QoS::AtMostOnce);
    // A `$` topic that is not the broker's own `$SYS`, which clients may not publish to.
    net.subscribe(sys, "$app/#", QoS::AtMostOnce);
    net.publish(publisher, "sensors/kitchen/temp", "1", QoS::AtMostOnce);
    net.publish(publisher, "sensors/kitchen/humidity", "2", QoS::AtMostOnce);
    net.publish(publisher, "$app/uptime", "3", QoS::AtMostOnce);
    assert_eq!(payloads(&net.messages(all)), ["1", "2"]);
    assert_eq!(payloads(&net.messages(plus)), ["1"]);
    assert_eq!(payloads(&net.messages(sys)), ["3"]);
}

#[test]
fn mqtt_3_3_4_2_overlapping_subscriptions_deliver_once_at_the_highest_qos_with_all_ids() {
    let mut net = Net::new();
    let sub = net.join(Version::V5, "sub");
    let publisher = net.join(Version::V5, "pub");
    let with_id = |id| SubscribeProperties {
        subscription_identifier: SubscriptionId::new(id),
        ..SubscribeProperties::default()
    };
    net.subscribe_with(
        sub,
        Subscription::new(valid_filter("a/+"), QoS::AtMostOnce),
        with_id(1),
    );
    net.subscribe_with(
        sub,
        Subscription::new(valid_filter("a/#"), QoS::ExactlyOnce),
        with_id(2),
    );
    net.publish(publisher, "a/b", "m", QoS::ExactlyOnce);
    let got = net.messages(sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let mut ids: Vec<_> = got[0]
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.get())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn mqtt_3_8_3_3_no_local_keeps_own_messages_away() {
    let mut net = Net::new();
    let me = net.join(Version::V5, "me");
    let other = net.join(Version::V5, "other");
    let mut subscription = Subscription::new(valid_filter("chat"), QoS::AtMostOnce);
    subscription.options.no_local = true;
    net.subscribe_with(me, subscription, SubscribeProperties::default());
    net.publish(me, "chat", "mine", QoS::AtMostOnce);
    net.publish(other, "chat", "theirs", QoS::AtMostOnce);
    assert_eq!(payloads(&net.messages(me)), ["theirs"]);
}

#[test]
fn retained_messages_are_set_replaced_deleted_and_sent_on_subscribe() {
    for version in BOTH {
        let mut net = Net::new();
        let publisher = net.join(version, "pub");
        let mut retained = Publish::new(valid_name("r/1"), "first");
        retained.retain = true;
        retained.qos = QoS::AtLeastOnce;
        net.publish_packet(publisher, retained.clone());
        retained.payload = Bytes::from_static(b"second");
        net.publish_packet(publisher, retained.clone());
        let mut other = Publish::new(valid_name("r/2"), "other");
        other.retain = true;
        net.publish_packet(publisher, other.clone());
        assert_eq!(net.broker.stats().retained, 2);

        // MQTT-3.3.1-9: retained messages go out on subscribe with RETAIN set.
        let sub = net.join(version, "sub");
        net.subscribe(sub, "r/1", QoS::AtLeastOnce);
        let got = net.messages(sub);
        assert_eq!(payloads(&got), ["second"]);
        assert!(got[0].retain);

        // MQTT-3.3.1-6: an empty payload deletes it; MQTT-3.3.1-7: and it is not stored.
        retained.payload = Bytes::new();
        net.publish_packet(publisher, retained);
        let got = net.messages(sub);
        assert_eq!(got.len(), 1, "the deletion is forwarded like any message");
        assert!(!got[0].retain, "forwarded messages have RETAIN cleared");
        assert_eq!(net.broker.stats().retained, 1);
        let late = net.join(version, "late");
        net.subscribe(late, "r/#", QoS::AtMostOnce);
        assert_eq!(payloads(&net.messages(late)), ["other"]);
    }
}

#[test]
fn mqtt_3_3_1_10_and_11_retain_handling() {
    let mut net = Net::new();
    let publisher = net.join(Version::V5, "pub");
    let mut retained = Publish::new(valid_name("r"), "kept");
    retained.retain = true;
    net.publish_packet(publisher, retained);
    let sub = net.join(Version::V5, "sub");
    let with = |handling| {
        let mut s = Subscription::new(valid_filter("r"), QoS::AtMostOnce);
        s.options.retain_handling = handling;
        s
    };
    net.subscribe_with(
        sub,
        with(RetainHandling::DoNotSend),
        SubscribeProperties::default(),
    );
    assert!(net.messages(sub).is_empty());
    // The subscription exists now: "if new" sends nothing.
    net.subscribe_with(
        sub,
        with(RetainHandling::SendAtSubscribeIfNew),
        SubscribeProperties::default(),
    );
    assert!(net.messages(sub).is_empty());
    net.subscribe_with(
        sub,
        with(RetainHandling::SendAtSubscribe),
        SubscribeProperties::default(),
    );
    assert_eq!(payloads(&net.messages(sub)), ["kept"]);
    let fresh = net.join(Version::V5, "fresh");
    net.subscribe_with(
        fresh,
        with(RetainHandling::SendAtSubscribeIfNew),
        SubscribeProperties::default(),
    );
    assert_eq!(payloads(&net.messages(fresh)), ["kept"]);
}

#[test]
fn mqtt_3_3_1_12_retain_as_published() {
    let mut net = Net::new();
    let keep = net.join(Version::V5, "keep");
    let clear = net.join(Version::V5, "clear");
    let publisher = net.join(Version::V5, "pub");
    let mut rap = Subscription::new(valid_filter("t"), QoS::AtMostOnce);
    rap.options.retain_as_published = true;
    net.subscribe_with(keep, rap, SubscribeProperties::default());
    net.subscribe(clear, "t", QoS::AtMostOnce);
    let mut retained = Publish::new(valid_name("t"), "r");
    retained.retain = true;
    net.publish_packet(publisher, retained);
    assert!(net.messages(keep)[0].retain);
    assert!(!net.messages(clear)[0].retain);
}

#[test]
fn retained_message_expiry_is_honoured() {
    let mut net = Net::new();
    let publisher = net.join(Version::V5, "pub");
    let mut retained = Publish::new(valid_name("r"), "brief");
    retained.retain = true;
    retained.properties.message_expiry_interval = Some(10);
    net.publish_packet(publisher, retained);
    net.advance(secs(4));
    let sub = net.join(Version::V5, "sub");
    net.subscribe(sub, "r", QoS::AtMostOnce);
    let got = net.messages(sub);
    // MQTT-3.3.2-6: the interval sent is what remains.
    assert_eq!(got[0].properties.message_expiry_interval, Some(6));
    net.advance(secs(7));
    let late = net.join(Version::V5, "late");
    net.subscribe(late, "r", QoS::AtMostOnce);
    assert!(net.messages(late).is_empty());
}

#[test]
fn retained_limit_counts_live_messages_and_spares_replacements() {
    let mut net = Net::with_config(BrokerConfig {
        max_retained: 2,
        ..BrokerConfig::default()
    });
    let publisher = net.join(Version::V5, "pub");
    let retain = |net: &mut Net, topic: &str, payload: &'static str, expiry: Option<u32>| {
        let mut publish = Publish::new(valid_name(topic), payload);
        publish.retain = true;
        publish.properties.message_expiry_interval = expiry;
        net.publish_packet(publisher, publish);
    };
    retain(&mut net, "r/1", "brief", Some(5));
    retain(&mut net, "r/2", "two", None);
    retain(&mut net, "r/3", "refused", None);
    retain(&mut net, "r/2", "two again", None);
    assert_eq!(net.broker.stats().retained, 2);
    // Once `r/1` has expired, it no longer takes a place.
    net.advance(secs(5));
    retain(&mut net, "r/3", "three", None);
    let sub = net.join(Version::V5, "sub");
    net.subscribe(sub, "r/#", QoS::AtMostOnce);
    let messages = net.messages(sub);
    let mut got = payloads(&messages);
    got.sort_unstable();
    assert_eq!(got, ["three", "two again"]);
}

#[test]
fn shared_subscriptions_give_each_message_to_one_member_in_turn() {
    let mut net = Net::new();
    let a = net.join(Version::V5, "a");
    let b = net.join(Version::V5, "b");
    let plain = net.join(Version::V5, "plain");
    let publisher = net.join(Version::V5, "pub");
    net.subscribe(a, "$share/workers/jobs/+", QoS::AtLeastOnce);
    net.subscribe(b, "$share/workers/jobs/+", QoS::AtLeastOnce);
    net.subscribe(plain, "jobs/#", QoS::AtLeastOnce);
    for _ in 0..6 {
        net.publish(publisher, "jobs/x", "j", QoS::AtLeastOnce);
    }
    let (got_a, got_b) = (net.messages(a).len(), net.messages(b).len());
    assert_eq!(got_a + got_b, 6);
    assert_eq!((got_a, got_b), (3, 3), "rotating");
    assert_eq!(net.messages(plain).len(), 6);
}

#[test]
fn mqtt_3_1_2_8_will_is_published_on_abnormal_close_only() {
    for version in BOTH {
        let mut net = Net::new();
        let watcher = net.join(version, "watcher");
        net.subscribe(watcher, "wills/#", QoS::AtLeastOnce);
        let mut config = Net::config(version, "dies");
        config.will = Some(Will::new(
            valid_name("wills/dies"),
            "gone",
            QoS::AtLeastOnce,
        ));
        let dies = net.connect(config.clone());
        net.drop_transport(dies);
        assert_eq!(payloads(&net.messages(watcher)), ["gone"]);

        // MQTT-3.14.4-3: a normal DISCONNECT discards the will.
        config.client_id = "polite".into();
        let polite = net.connect(config);
        let now = net.now;
        net.clients[polite]
            .core
            .disconnect(now, Default::default())
            .unwrap();
        net.pump();
        assert!(net.messages(watcher).is_empty());
    }
}

#[test]
fn disconnect_with_will_message_publishes_the_will() {
    let mut net = Net::new();
    let watcher = net.join(Version::V5, "watcher");
    net.subscribe(watcher, "w", QoS::AtMostOnce);
    let mut config = Net::config(Version::V5, "c");
    config.will = Some(Will::new(valid_name("w"), "bye", QoS::AtMostOnce));
    let c = net.connect(config);
    let now = net.now;
    net.clients[c]
        .core
        .disconnect(
            now,
            crate::packet::Disconnect::new(ReasonCode::DisconnectWithWillMessage),
        )
        .unwrap();
    net.pump();
    assert_eq!(payloads(&net.messages(watcher)), ["bye"]);
}

#[test]
fn mqtt_3_1_3_9_will_delay_and_cancellation_by_reconnect() {
    let mut net = Net::new();
    let watcher = net.join(Version::V5, "watcher");
    net.subscribe(watcher, "w", QoS::AtMostOnce);
    let mut config = Net::config(Version::V5, "c");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(3600);
    let mut will = Will::new(valid_name("w"), "late", QoS::AtMostOnce);
    will.properties.will_delay_interval = Some(30);
    config.will = Some(will);
    let c = net.connect(config);
    net.drop_transport(c);
    net.advance(secs(29));
    assert!(net.messages(watcher).is_empty());
    net.advance(secs(1));
    assert_eq!(payloads(&net.messages(watcher)), ["late"]);

    // Back within the delay: no will.
    let c = net.reconnect(c);
    net.drop_transport(c);
    net.advance(secs(10));
    let c = net.reconnect(c);
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
    net.advance(secs(60));
    assert!(net.messages(watcher).is_empty());
}

#[test]
fn will_is_sent_when_the_session_ends_before_the_delay() {
    let mut net = Net::new();
    let watcher = net.join(Version::V5, "watcher");
    net.subscribe(watcher, "w", QoS::AtMostOnce);
    let mut config = Net::config(Version::V5, "c");
    config.properties.session_expiry_interval = Some(5);
    let mut will = Will::new(valid_name("w"), "ended", QoS::AtMostOnce);
    will.properties.will_delay_interval = Some(30);
    config.will = Some(will);
    let c = net.connect(config);
    net.drop_transport(c);
    net.advance(secs(5));
    assert_eq!(payloads(&net.messages(watcher)), ["ended"]);
}

#[test]
fn persistent_sessions_queue_messages_while_offline() {
    for version in BOTH {
        let mut net = Net::new();
        let mut config = Net::config(version, "sub");
        config.clean_start = false;
        config.properties.session_expiry_interval = Some(600);
        if version == Version::V3_1_1 {
            config.properties.session_expiry_interval = None;
        }
        let sub = net.connect(config);
        net.subscribe(sub, "q", QoS::ExactlyOnce);
        net.drop_transport(sub);
        let publisher = net.join(version, "pub");
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            net.publish(publisher, "q", "offline", qos);
        }
        let sub = net.reconnect(sub);
        let events = net.take(sub);
        // MQTT-3.2.2-2: the session is resumed.
        assert!(events.iter().any(|e| matches!(
            e,
            ClientEvent::Connected {
                session_present: true,
                ..
            }
        )));
        let got: Vec<_> = events
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => Some(m.publish.qos),
                _ => None,
            })
            .collect();
        assert_eq!(got, [QoS::AtLeastOnce, QoS::ExactlyOnce], "{version:?}");
    }
}

#[test]
fn mqtt_3_1_2_4_clean_start_discards_the_session() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "c");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(600);
    let c = net.connect(config.clone());
    net.subscribe(c, "t", QoS::AtLeastOnce);
    net.drop_transport(c);
    config.clean_start = true;
    let c = net.connect(config);
    let events = net.take(c);
    assert!(events.iter().any(|e| matches!(
        e,
        ClientEvent::Connected {
            session_present: false,
            ..
        }
    )));
    assert_eq!(net.broker.stats().subscriptions, 0);
}

#[test]
fn session_expiry_ends_the_session() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "c");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(60);
    let c = net.connect(config);
    net.subscribe(c, "t", QoS::AtLeastOnce);
    net.drop_transport(c);
    assert_eq!(net.broker.stats().sessions, 1);
    net.advance(secs(59));
    assert_eq!(net.broker.stats().sessions, 1);
    net.advance(secs(1));
    assert_eq!(net.broker.stats().sessions, 0);
    assert_eq!(net.broker.stats().subscriptions, 0);
}

#[test]
fn v311_clean_session_ends_with_the_connection() {
    let mut net = Net::new();
    let c = net.join(Version::V3_1_1, "c");
    net.subscribe(c, "t", QoS::AtLeastOnce);
    net.drop_transport(c);
    assert_eq!(net.broker.stats().sessions, 0);
}

#[test]
fn mqtt_3_1_4_3_session_takeover_disconnects_the_old_connection_with_0x8e() {
    let mut net = Net::new();
    let first = net.join(Version::V5, "same");
    let second = net.join(Version::V5, "same");
    assert_eq!(
        net.disconnected(first),
        Some(DisconnectReason::Remote(crate::packet::Disconnect::new(
            ReasonCode::SessionTakenOver
        )))
    );
    assert_eq!(net.clients[second].core.state(), ClientState::Connected);
    assert_eq!(net.broker.stats().connections, 1);
}

#[test]
fn mqtt_3_1_2_24_keep_alive_expiry_closes_the_connection() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "idle");
    config.keep_alive = 10;
    let c = net.connect(config);
    // The client stays silent: stop it from sending PINGREQ by dropping its side's timers.
    net.clients[c].gone = true;
    net.advance(secs(14));
    assert!(
        net.broker_events
            .iter()
            .all(|e| !matches!(e, crate::broker::BrokerEvent::Close(_)))
    );
    net.advance(secs(1));
    assert!(net.broker_events.iter().any(|e| matches!(
        e,
        crate::broker::BrokerEvent::ClientDisconnected {
            reason: DisconnectReason::KeepAliveTimeout,
            ..
        }
    )));
}

#[test]
fn keep_alive_with_pings_stays_connected() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V3_1_1, "pinger");
    config.keep_alive = 10;
    let c = net.connect(config);
    net.advance(secs(100));
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);
}

#[test]
fn mqtt_3_1_3_7_empty_client_id_gets_an_assigned_one() {
    let mut net = Net::new();
    let c = net.connect(Net::config(Version::V5, ""));
    let assigned = net.clients[c]
        .core
        .connack_properties()
        .and_then(|p| p.assigned_client_identifier.clone());
    assert!(assigned.is_some_and(|id| !id.is_empty()));
}

#[test]
fn default_connack_announces_a_maximum_packet_size_every_client_accepts() {
    // The default budget (256 MiB) is a few bytes above the largest remaining length; paho-mqtt 2
    // refuses a Maximum Packet Size above 268,435,455, so that is what is announced.
    let mut net = Net::new();
    let c = net.connect(Net::config(Version::V5, "big"));
    let announced = net.clients[c]
        .core
        .connack_properties()
        .and_then(|p| p.maximum_packet_size)
        .map(|m| m.get());
    assert_eq!(announced, Some(268_435_455));
    assert_eq!(
        Limits::announced_max_packet_size(Limits::PROTOCOL_MAX_PACKET_SIZE),
        None
    );
    assert_eq!(
        Limits::announced_max_packet_size(1024).map(|m| m.get()),
        Some(1024)
    );
}

#[test]
fn mqtt_3_1_3_8_v311_empty_client_id_needs_clean_session() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V3_1_1, "");
    config.clean_start = false;
    let c = net.connect(config);
    assert!(matches!(
        net.disconnected(c),
        Some(DisconnectReason::Refused {
            reason_code: ReasonCode::ClientIdentifierNotValid,
            ..
        })
    ));
    let ok = net.connect(Net::config(Version::V3_1_1, ""));
    assert_eq!(net.clients[ok].core.state(), ClientState::Connected);
}

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

struct Acl;

impl Authorizer for Acl {
    fn publish(&self, client: ClientInfo<'_>, topic: &str) -> bool {
        topic.starts_with(client.client_id)
    }
    fn subscribe(&self, _client: ClientInfo<'_>, filter: &str) -> bool {
        !filter.starts_with("secret")
    }
}

#[test]
fn authorization_refuses_subscribe_with_0x87_and_publish_with_0x87() {
    let mut net = Net::with_config(BrokerConfig::default());
    net.broker = crate::broker::Broker::new(BrokerConfig::default()).with_authorizer(Acl);
    let c = net.join(Version::V5, "alice");
    let now = net.now;
    net.clients[c]
        .core
        .subscribe(
            now,
            vec![
                Subscription::new(valid_filter("secret/x"), QoS::AtMostOnce),
                Subscription::new(valid_filter("alice/#"), QoS::AtLeastOnce),
            ],
            SubscribeProperties::default(),
        )
        .unwrap();
    net.pump();
    let suback = net.take(c).into_iter().find_map(|e| match e {
        ClientEvent::Subscribed(s) => Some(s.reason_codes),
        _ => None,
    });
    assert_eq!(
        suback,
        Some(vec![ReasonCode::NotAuthorized, ReasonCode::GrantedQoS1])
    );
    net.publish(c, "bob/x", "no", QoS::AtLeastOnce);
    net.publish(c, "alice/x", "yes", QoS::AtLeastOnce);
    let events = net.take(c);
    let codes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Published(o) => Some(o.reason_code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [ReasonCode::NotAuthorized, ReasonCode::Success]);
    let messages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) => Some(m.publish.payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, ["yes"]);
    assert_eq!(net.broker.stats().dropped.not_authorized, 1);
}

#[test]
fn v5_puback_says_no_matching_subscribers() {
    let mut net = Net::new();
    let c = net.join(Version::V5, "c");
    net.publish(c, "nobody", "x", QoS::AtLeastOnce);
    assert!(net.take(c).iter().any(|e| matches!(
        e,
        ClientEvent::Published(o) if o.reason_code == ReasonCode::NoMatchingSubscribers
    )));
}

#[test]
fn offline_queue_limit_drops_qos0_first_and_counts() {
    let config = BrokerConfig {
        max_session_queue: 3,
        ..BrokerConfig::default()
    };
    let mut net = Net::with_config(config);
    let mut sub_config = Net::config(Version::V5, "sub");
    sub_config.clean_start = false;
    sub_config.properties.session_expiry_interval = Some(600);
    let sub = net.connect(sub_config);
    net.subscribe(sub, "q", QoS::AtLeastOnce);
    net.drop_transport(sub);
    let publisher = net.join(Version::V5, "pub");
    net.publish(publisher, "q", "zero", QoS::AtMostOnce);
    net.publish(publisher, "q", "one", QoS::AtLeastOnce);
    net.publish(publisher, "q", "two", QoS::AtLeastOnce);
    net.publish(publisher, "q", "three", QoS::AtLeastOnce);
    net.publish(publisher, "q", "four", QoS::AtLeastOnce);
    assert_eq!(net.broker.stats().dropped.queue_full, 2);
    let sub = net.reconnect(sub);
    assert_eq!(payloads(&net.messages(sub)), ["one", "two", "three"]);
}

#[test]
fn queued_messages_expire() {
    let mut net = Net::new();
    let mut sub_config = Net::config(Version::V5, "sub");
    sub_config.clean_start = false;
    sub_config.properties.session_expiry_interval = Some(600);
    let sub = net.connect(sub_config);
    net.subscribe(sub, "q", QoS::AtLeastOnce);
    net.drop_transport(sub);
    let publisher = net.join(Version::V5, "pub");
    let mut brief = Publish::new(valid_name("q"), "brief");
    brief.qos = QoS::AtLeastOnce;
    brief.properties.message_expiry_interval = Some(5);
    net.publish_packet(publisher, brief);
    let mut lasting = Publish::new(valid_name("q"), "lasting");
    lasting.qos = QoS::AtLeastOnce;
    lasting.properties.message_expiry_interval = Some(50);
    net.publish_packet(publisher, lasting);
    let stats = net.broker.stats();
    assert_eq!(
        stats.queued_messages, 2,
        "both wait for the offline session"
    );
    assert_eq!(
        (stats.messages_in_by_qos, stats.messages_out_by_qos),
        ([0, 2, 0], [0, 2, 0])
    );
    net.advance(secs(10));
    let sub = net.reconnect(sub);
    let got = net.messages(sub);
    assert_eq!(payloads(&got), ["lasting"]);
    assert_eq!(got[0].properties.message_expiry_interval, Some(40));
    assert_eq!(net.broker.stats().dropped.expired, 1);
}

#[test]
fn garbage_from_one_client_leaves_the_others_untouched() {
    let mut net = Net::new();
    let sub = net.join(Version::V5, "sub");
    let publisher = net.join(Version::V5, "pub");
    net.subscribe(sub, "t", QoS::AtLeastOnce);
    let bad = net.broker.open(net.now).unwrap();
    net.broker.handle_bytes(bad, net.now, &[0xFF; 64]);
    net.pump();
    net.publish(publisher, "t", "still", QoS::AtLeastOnce);
    assert_eq!(payloads(&net.messages(sub)), ["still"]);
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

#[test]
fn outbound_topic_aliases_to_a_client_that_allows_them() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "sub");
    config.properties.topic_alias_maximum = Some(4);
    let sub = net.connect(config);
    net.subscribe(sub, "long/#", QoS::AtMostOnce);
    let publisher = net.join(Version::V5, "pub");
    for payload in ["1", "2", "3"] {
        net.publish(publisher, "long/topic/name", payload, QoS::AtMostOnce);
    }
    let got = net.messages(sub);
    assert_eq!(payloads(&got), ["1", "2", "3"]);
    assert!(got.iter().all(|m| m.topic == "long/topic/name"));
}

#[test]
fn unsubscribe_stops_delivery_and_reports_missing_filters() {
    let mut net = Net::new();
    let c = net.join(Version::V5, "c");
    net.subscribe(c, "t", QoS::AtMostOnce);
    let now = net.now;
    net.clients[c]
        .core
        .unsubscribe(
            now,
            vec![valid_filter("t"), valid_filter("never")],
            UnsubscribeProperties::default(),
        )
        .unwrap();
    net.pump();
    let codes = net.take(c).into_iter().find_map(|e| match e {
        ClientEvent::Unsubscribed(u) => Some(u.reason_codes),
        _ => None,
    });
    assert_eq!(
        codes,
        Some(vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted])
    );
    net.publish(c, "t", "x", QoS::AtMostOnce);
    assert!(net.messages(c).is_empty());
}

#[test]
fn receive_maximum_of_the_client_bounds_what_the_broker_sends() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "slow");
    config.manual_ack = true;
    config.properties.receive_maximum = NonZeroU16::new(2);
    let slow = net.connect(config);
    net.subscribe(slow, "t", QoS::AtLeastOnce);
    let publisher = net.join(Version::V5, "pub");
    for _ in 0..5 {
        net.publish(publisher, "t", "m", QoS::AtLeastOnce);
    }
    let tokens: Vec<_> = net
        .take(slow)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) => m.ack,
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 2, "only Receive Maximum messages in flight");
    let now = net.now;
    for token in tokens {
        net.clients[slow].core.ack(now, token).unwrap();
    }
    net.pump();
    assert_eq!(net.messages(slow).len(), 2);
}

#[test]
fn stats_count_traffic() {
    let mut net = Net::new();
    let sub = net.join(Version::V5, "sub");
    let publisher = net.join(Version::V5, "pub");
    net.subscribe(sub, "t", QoS::AtMostOnce);
    net.publish(publisher, "t", "12345", QoS::AtMostOnce);
    let stats = net.broker.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.sessions, 2);
    assert_eq!(stats.subscriptions, 1);
    assert_eq!((stats.messages_in, stats.bytes_in), (1, 5));
    assert_eq!((stats.messages_out, stats.bytes_out), (1, 5));
}

/// A two-step challenge/response method: the server asks for "proof" and accepts "secret".
struct Challenge;

impl crate::broker::Authenticator for Challenge {
    fn connect(&mut self, connect: &Connect) -> crate::broker::AuthDecision {
        use crate::broker::AuthDecision;
        match connect.properties.authentication_method.as_deref() {
            Some("CHALLENGE") => AuthDecision::Continue(crate::packet::AuthProperties {
                authentication_method: Some("CHALLENGE".into()),
                authentication_data: Some(Bytes::from_static(b"proof?")),
                ..Default::default()
            }),
            Some(_) => AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod),
            None => AuthDecision::Accept,
        }
    }

    fn auth(
        &mut self,
        _client: ClientInfo<'_>,
        auth: &crate::packet::Auth,
    ) -> crate::broker::AuthDecision {
        use crate::broker::AuthDecision;
        if auth.properties.authentication_data.as_deref() == Some(b"secret".as_slice()) {
            AuthDecision::Accept
        } else {
            AuthDecision::Refuse(ReasonCode::NotAuthorized)
        }
    }
}

fn auth_step(reason_code: ReasonCode, data: &'static [u8]) -> crate::packet::Auth {
    crate::packet::Auth {
        reason_code,
        properties: crate::packet::AuthProperties {
            authentication_method: Some("CHALLENGE".into()),
            authentication_data: Some(Bytes::from_static(data)),
            ..Default::default()
        },
    }
}

#[test]
fn mqtt_4_12_enhanced_authentication_and_reauthentication_through_the_authenticator() {
    let mut net = Net::new();
    net.broker = crate::broker::Broker::new(BrokerConfig::default()).with_authenticator(Challenge);
    let mut config = Net::config(Version::V5, "scram");
    config.properties.authentication_method = Some("CHALLENGE".into());
    let c = net.connect(config.clone());
    // The server's challenge reaches the application, which answers it.
    let challenge = net.take(c).into_iter().find_map(|e| match e {
        ClientEvent::Auth(auth) => Some(auth),
        _ => None,
    });
    assert_eq!(
        challenge.and_then(|a| a.properties.authentication_data),
        Some(Bytes::from_static(b"proof?"))
    );
    let now = net.now;
    net.clients[c]
        .core
        .auth(
            now,
            auth_step(ReasonCode::ContinueAuthentication, b"secret"),
        )
        .unwrap();
    net.pump();
    assert_eq!(net.clients[c].core.state(), ClientState::Connected);

    // Re-authentication (section 4.12.1): accepted with an AUTH Success.
    net.clients[c]
        .core
        .auth(now, auth_step(ReasonCode::ReAuthenticate, b"secret"))
        .unwrap();
    net.pump();
    assert!(net.take(c).iter().any(|e| matches!(
        e,
        ClientEvent::Auth(a) if a.reason_code == ReasonCode::Success
    )));

    // A wrong answer is refused with the authenticator's reason code.
    config.client_id = "intruder".into();
    let bad = net.connect(config);
    let now = net.now;
    net.clients[bad]
        .core
        .auth(now, auth_step(ReasonCode::ContinueAuthentication, b"guess"))
        .unwrap();
    net.pump();
    assert!(matches!(
        net.disconnected(bad),
        Some(DisconnectReason::Refused {
            reason_code: ReasonCode::NotAuthorized,
            ..
        })
    ));
}

#[test]
fn mqtt_3_2_2_15_packet_larger_than_the_broker_maximum_is_disconnected_with_0x95() {
    let mut config = BrokerConfig::default();
    config.connection.max_packet_size = 256;
    let mut net = Net::with_config(config);
    let c = net.join(Version::V5, "big");
    // The client learnt the limit from CONNACK and refuses locally...
    let now = net.now;
    let big = Publish::new(valid_name("t"), vec![0u8; 1000]);
    assert!(net.clients[c].core.publish(now, big).is_err());
    // ...and a peer that ignores it is disconnected with Packet too large.
    let mut wire = BytesMut::new();
    codec::encode(
        &Packet::Publish(Publish::new(valid_name("t"), vec![0u8; 1000])),
        Version::V5,
        &mut wire,
    )
    .unwrap();
    let conn = net.clients[c].conn;
    net.broker.handle_bytes(conn, now, &wire);
    net.pump();
    assert!(net.broker_events.iter().any(|e| matches!(
        e,
        crate::broker::BrokerEvent::ClientDisconnected {
            reason: DisconnectReason::Protocol(crate::connection::ProtocolError::Decode(
                crate::codec::DecodeError::PacketTooLarge { .. }
            )),
            ..
        }
    )));
    assert!(matches!(
        net.disconnected(c),
        Some(DisconnectReason::Remote(d)) if d.reason_code == ReasonCode::PacketTooLarge
    ));
}

#[test]
fn a_will_on_a_forbidden_topic_is_refused_at_connect() {
    let mut net = Net::new();
    net.broker = crate::broker::Broker::new(BrokerConfig::default()).with_authorizer(Acl);
    let mut config = Net::config(Version::V5, "alice");
    config.will = Some(Will::new(
        valid_name("bob/status"),
        "spoofed",
        QoS::AtMostOnce,
    ));
    let c = net.connect(config.clone());
    assert!(matches!(
        net.disconnected(c),
        Some(DisconnectReason::Refused {
            reason_code: ReasonCode::NotAuthorized,
            ..
        })
    ));
    config.will = Some(Will::new(
        valid_name("alice/status"),
        "offline",
        QoS::AtMostOnce,
    ));
    let ok = net.connect(config);
    assert_eq!(net.clients[ok].core.state(), ClientState::Connected);
}

#[test]
fn mqtt_3_1_2_25_messages_larger_than_the_client_accepts_are_dropped_and_counted() {
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "small");
    // A QoS 1 PUBLISH to "t" with an n-byte payload is 2 + 3 + 2 + 1 + n bytes (fixed header,
    // topic, packet identifier, empty properties).
    config.max_packet_size = 8 + 20;
    let small = net.connect(config);
    net.subscribe(small, "t", QoS::AtLeastOnce);
    let publisher = net.join(Version::V5, "pub");
    let fits = Publish {
        qos: QoS::AtLeastOnce,
        ..Publish::new(valid_name("t"), vec![b'x'; 20])
    };
    // One byte more does not fit once the packet identifier is counted.
    let too_big = Publish {
        qos: QoS::AtLeastOnce,
        ..Publish::new(valid_name("t"), vec![b'y'; 21])
    };
    net.publish_packet(publisher, too_big);
    net.publish_packet(publisher, fits);
    let got = net.messages(small);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.len(), 20);
    assert_eq!(net.broker.stats().dropped.too_large, 1);
    assert_eq!(net.clients[small].core.state(), ClientState::Connected);
}

#[test]
fn limits_change_while_the_broker_runs_and_what_cannot_is_reported() {
    let mut net = Net::new();
    let first = net.join(Version::V5, "first");
    let mut config = net.broker.config().clone();
    config.max_connections = 1;
    config.max_qos = QoS::AtMostOnce;
    let (changed, fixed) = net.broker.set_limits(&config);
    assert_eq!(changed, ["max_connections: 10000 -> 1"]);
    assert_eq!(fixed, ["max_qos"]);
    assert_eq!(
        net.broker.config().max_qos,
        QoS::ExactlyOnce,
        "granted QoS stays"
    );
    assert!(
        net.broker.open(net.now).is_none(),
        "the new limit refuses a second"
    );
    assert_eq!(net.clients[first].core.state(), ClientState::Connected);
    config.max_connections = 10;
    config.max_qos = QoS::ExactlyOnce;
    let (changed, fixed) = net.broker.set_limits(&config);
    assert_eq!((changed.len(), fixed.len()), (1, 0));
    assert!(net.broker.open(net.now).is_some());
}
