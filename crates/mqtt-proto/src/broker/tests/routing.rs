//! Routing end to end through client cores: QoS, versions, wildcards, overlapping and shared
//! subscriptions, topic aliases, the client's Receive Maximum.

use std::num::NonZeroU16;

use bytes::Bytes;

use super::util::{Net, payloads};
use crate::ReasonCode;
use crate::broker::BrokerConfig;
use crate::connection::{ClientEvent, UsageError};
use crate::packet::{
    Publish, QoS, SubscribeProperties, Subscription, SubscriptionId, UnsubscribeProperties,
    UserProperty, Version, Will,
};
use crate::topic::{TopicError, TopicName, valid_filter, valid_name};

pub(super) const BOTH: [Version; 2] = [Version::V3_1_1, Version::V5];

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
