//! Retained messages end to end through client cores: set, replaced, deleted, sent on subscribe,
//! Retain Handling, Retain As Published, expiry and limits.

use super::util::{Net, payloads, secs};
use crate::broker::BrokerConfig;
use crate::packet::{Publish, QoS, RetainHandling, SubscribeProperties, Subscription, Version};
use crate::topic::{valid_filter, valid_name};

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
