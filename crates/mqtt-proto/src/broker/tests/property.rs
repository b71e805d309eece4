//! Property test: random multi-client workloads over persistent sessions, with connections cut
//! cleanly or with bytes lost in flight, and reconnects. QoS 1 messages are never lost, QoS 2
//! messages never lost nor duplicated, QoS 0 never duplicated.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::util::{Net, secs};
use crate::connection::{ClientEvent, ClientState};
use crate::packet::{Publish, QoS, Version};
use crate::topic::valid_name;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        from: usize,
        qos: QoS,
    },
    /// The transport breaks at a quiet moment.
    Cut(usize),
    /// Traffic to and from the client is lost, then its transport breaks.
    LossyCut(usize),
    Reconnect(usize),
    Advance(u64),
}

const CLIENTS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let qos = prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ];
    prop_oneof![
        6 => (0..CLIENTS, qos).prop_map(|(from, qos)| Op::Publish { from, qos }),
        1 => (0..CLIENTS).prop_map(Op::Cut),
        1 => (0..CLIENTS).prop_map(Op::LossyCut),
        2 => (0..CLIENTS).prop_map(Op::Reconnect),
        1 => (1..30u64).prop_map(Op::Advance),
    ]
}

struct World {
    net: Net,
    next: u32,
    /// Messages published, with their QoS.
    sent: Vec<(u32, QoS)>,
    /// Per client: how often each message arrived.
    received: Vec<HashMap<u32, u32>>,
}

impl World {
    fn new(versions: [bool; CLIENTS]) -> Self {
        let mut net = Net::new();
        for (index, v5) in versions.into_iter().enumerate() {
            let version = if v5 { Version::V5 } else { Version::V3_1_1 };
            let mut config = Net::config(version, &format!("client-{index}"));
            config.clean_start = false;
            if version == Version::V5 {
                config.properties.session_expiry_interval = Some(u32::MAX);
            }
            let c = net.connect(config);
            net.subscribe(c, "t/#", QoS::ExactlyOnce);
        }
        Self {
            net,
            next: 0,
            sent: Vec::new(),
            received: vec![HashMap::new(); CLIENTS],
        }
    }

    fn collect(&mut self) {
        for c in 0..CLIENTS {
            for event in self.net.take(c) {
                if let ClientEvent::Message(m) = event {
                    let id = u32::from_be_bytes(m.publish.payload[..].try_into().unwrap());
                    *self.received[c].entry(id).or_default() += 1;
                }
            }
        }
    }

    fn connected(&self, c: usize) -> bool {
        self.net.clients[c].core.state() == ClientState::Connected
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Publish { from, qos } => {
                if !self.connected(from) {
                    return;
                }
                let id = self.next;
                self.next += 1;
                let mut publish = Publish::new(
                    valid_name(&format!("t/{from}")),
                    Bytes::copy_from_slice(&id.to_be_bytes()),
                );
                publish.qos = qos;
                let now = self.net.now;
                self.net.clients[from].core.publish(now, publish).unwrap();
                self.sent.push((id, qos));
                self.net.pump();
            }
            Op::Cut(c) => self.net.drop_transport(c),
            Op::LossyCut(c) => {
                if !self.net.clients[c].gone {
                    self.net.pump_losing(Some(c));
                }
                self.net.drop_transport(c);
            }
            Op::Reconnect(c) => {
                if self.net.clients[c].gone {
                    self.net.reconnect(c);
                }
            }
            Op::Advance(s) => self.net.advance(secs(s)),
        }
        self.collect();
    }

    fn settle(&mut self) {
        for c in 0..CLIENTS {
            if self.net.clients[c].gone {
                self.net.reconnect(c);
            }
        }
        self.net.pump();
        self.collect();
    }

    fn check(&self) {
        for (c, received) in self.received.iter().enumerate() {
            for &(id, qos) in &self.sent {
                let count = received.get(&id).copied().unwrap_or(0);
                match qos {
                    QoS::AtMostOnce => {
                        assert!(count <= 1, "client {c}: QoS 0 message {id} x{count}")
                    }
                    QoS::AtLeastOnce => assert!(count >= 1, "client {c}: QoS 1 message {id} lost"),
                    QoS::ExactlyOnce => {
                        assert_eq!(count, 1, "client {c}: QoS 2 message {id} x{count}")
                    }
                }
            }
        }
        for (c, client) in self.net.clients.iter().enumerate() {
            let session = client.core.session();
            assert_eq!(
                session.inflight() + session.queued(),
                0,
                "client {c} unfinished"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn persistent_sessions_lose_and_duplicate_nothing(
        versions in any::<[bool; CLIENTS]>(),
        ops in proptest::collection::vec(op(), 1..50),
    ) {
        let mut world = World::new(versions);
        for op in ops {
            world.apply(op);
        }
        world.settle();
        world.check();
    }
}
