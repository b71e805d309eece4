//! Sessions and wills end to end through client cores: queues while offline, Clean Start,
//! expiry, takeover, keep alive, wills and their delay.

use super::routing::BOTH;
use super::util::{Net, payloads, secs};
use crate::ReasonCode;
use crate::codec::Limits;
use crate::connection::{ClientEvent, ClientState, DisconnectReason};
use crate::packet::{Publish, QoS, Version, Will};
use crate::topic::valid_name;

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
fn qos0_messages_for_an_offline_session_are_queued_not_dropped() {
    // The specification allows dropping them (section 4.1); this broker queues them like
    // QoS 1 and 2, so that only a full queue or budget drops one, and counts it there.
    let mut net = Net::new();
    let mut config = Net::config(Version::V5, "sub");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(600);
    let sub = net.connect(config);
    net.subscribe(sub, "q", QoS::AtLeastOnce);
    net.drop_transport(sub);
    let publisher = net.join(Version::V5, "pub");
    net.publish(publisher, "q", "zero", QoS::AtMostOnce);
    let sub = net.reconnect(sub);
    let messages = net.messages(sub);
    assert_eq!(payloads(&messages), ["zero"]);
    assert_eq!(messages[0].qos, QoS::AtMostOnce);
    assert_eq!(net.broker.stats().dropped, Default::default());
}
