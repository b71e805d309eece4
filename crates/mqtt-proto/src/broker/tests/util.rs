//! The network of the simulations: client cores and the broker core exchanging bytes in memory.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::broker::{
    Broker, BrokerConfig, BrokerEvent, ConnectionId, RestoreReport, StoreBatch, StoreOp,
};
use crate::connection::{
    ClientConfig, ClientConnection, ClientEvent, ClientState, DisconnectReason, Session,
};
use crate::packet::{Publish, QoS, SubscribeProperties, Subscription, Version};
use crate::topic::{valid_filter, valid_name};

pub(crate) struct Client {
    pub(crate) core: ClientConnection,
    pub(crate) conn: ConnectionId,
    pub(crate) config: ClientConfig,
    pub(crate) events: Vec<ClientEvent>,
    /// The transport is gone.
    pub(crate) gone: bool,
    /// The broker asked its driver not to read this client ([`BrokerEvent::PauseReading`]):
    /// what the client sends waits in `unsent`.
    pub(crate) paused: bool,
    pub(crate) unsent: BytesMut,
    /// The client does not read: what the broker sends waits in `unread`.
    pub(crate) stalled: bool,
    pub(crate) unread: BytesMut,
}

impl Client {
    fn new(core: ClientConnection, conn: ConnectionId, config: ClientConfig) -> Self {
        Self {
            core,
            conn,
            config,
            events: Vec::new(),
            gone: false,
            paused: false,
            unsent: BytesMut::new(),
            stalled: false,
            unread: BytesMut::new(),
        }
    }
}

pub(crate) struct Net {
    pub(crate) now: Instant,
    pub(crate) broker: Broker,
    pub(crate) clients: Vec<Client>,
    pub(crate) broker_events: Vec<BrokerEvent>,
    /// The broker's store, with persistence on.
    pub(crate) store: Option<MemStore>,
}

/// A store in memory that applies each batch atomically, and can crash: after `crash_after`
/// commits it takes no more (the batches are lost, never reported stored).
#[derive(Debug, Default)]
pub(crate) struct MemStore {
    pub(crate) records: std::collections::BTreeMap<Bytes, Bytes>,
    pub(crate) commits: usize,
    pub(crate) crash_after: Option<usize>,
    pub(crate) crashed: bool,
    /// Fail every commit while set (a full disk).
    pub(crate) failing: bool,
}

impl MemStore {
    /// Takes a batch: true when it is durable.
    fn commit(&mut self, batch: &StoreBatch) -> bool {
        if self.crashed || self.failing {
            return false;
        }
        if self.crash_after == Some(self.commits) {
            self.crashed = true;
            return false;
        }
        for op in &batch.ops {
            match op {
                StoreOp::Put { key, value } => {
                    self.records.insert(key.clone(), value.clone());
                }
                StoreOp::Delete { key } => {
                    self.records.remove(key);
                }
            }
        }
        self.commits += 1;
        true
    }
}

impl Net {
    pub(crate) fn new() -> Self {
        Self::with_config(BrokerConfig::default())
    }

    pub(crate) fn with_config(config: BrokerConfig) -> Self {
        Self {
            now: Instant::now(),
            broker: Broker::new(config),
            clients: Vec::new(),
            broker_events: Vec::new(),
            store: None,
        }
    }

    /// A network whose broker persists into a [`MemStore`].
    pub(crate) fn persistent() -> Self {
        let mut net = Self::new();
        let now = net.now;
        net.broker
            .restore(now, Self::wall(now, now), std::iter::empty())
            .expect("an empty store");
        net.store = Some(MemStore::default());
        net
    }

    /// A fixed wall clock, so that runs are deterministic.
    pub(crate) fn wall(start: Instant, now: Instant) -> std::time::SystemTime {
        std::time::UNIX_EPOCH
            + Duration::from_secs(1_800_000_000)
            + now.saturating_duration_since(start)
    }

    /// The broker process dies: every transport breaks, and a new broker starts from what the
    /// store holds. Returns what the restore said.
    pub(crate) fn crash_and_restart(&mut self, start: Instant) -> RestoreReport {
        for client in &mut self.clients {
            if !client.gone {
                client.gone = true;
                client.core.handle_eof(self.now);
            }
            client.paused = false;
            client.unsent.clear();
            client.unread.clear();
        }
        let store = self.store.as_mut().expect("persistence is on");
        store.crashed = false;
        store.crash_after = None;
        let config = self.broker.config().clone();
        self.broker = Broker::new(config);
        let records: Vec<(Bytes, Bytes)> = store
            .records
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let now = self.now;
        let report = self
            .broker
            .restore(
                now,
                Self::wall(start, now),
                records.iter().map(|(k, v)| (&k[..], &v[..])),
            )
            .expect("the store restores");
        self.pump();
        report
    }

    /// Hands the store every batch the broker has, and the broker the outcome.
    fn commit(&mut self) -> bool {
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        let mut moved = false;
        while let Some(batch) = self.broker.poll_store() {
            if store.commit(&batch) {
                self.broker.handle_stored(batch.id, self.now);
                moved = true;
            } else {
                if store.failing {
                    // A driver tries again later; here, at the next pump.
                    self.broker.handle_store_failed(batch.id, self.now);
                }
                break;
            }
        }
        moved
    }

    pub(crate) fn config(version: Version, id: &str) -> ClientConfig {
        let mut config = ClientConfig::new(version, id);
        config.keep_alive = 0;
        config.max_inflight = 100;
        config
    }

    /// Opens a connection for a client core and runs the handshake as far as it goes.
    pub(crate) fn connect(&mut self, config: ClientConfig) -> usize {
        self.connect_with(config, None)
    }

    pub(crate) fn connect_with(&mut self, config: ClientConfig, session: Option<Session>) -> usize {
        self.connect_as(config, session, None)
    }

    /// Connects a trusted client ([`Broker::set_trusted`]), as a bridge's local side is.
    pub(crate) fn connect_trusted(&mut self, config: ClientConfig) -> usize {
        let conn = self
            .broker
            .open(self.now)
            .expect("below the connection limit");
        self.broker.set_trusted(conn);
        self.clients.push(Client::new(
            ClientConnection::new(config.clone(), None, self.now),
            conn,
            config,
        ));
        self.pump();
        self.clients.len() - 1
    }

    /// Connects a client whose transport proved `identity` ([`Broker::set_identity`]).
    pub(crate) fn connect_as(
        &mut self,
        config: ClientConfig,
        session: Option<Session>,
        identity: Option<&str>,
    ) -> usize {
        let conn = self
            .broker
            .open(self.now)
            .expect("below the connection limit");
        if let Some(identity) = identity {
            self.broker.set_identity(conn, identity.into());
        }
        self.clients.push(Client::new(
            ClientConnection::new(config.clone(), session, self.now),
            conn,
            config,
        ));
        self.pump();
        self.clients.len() - 1
    }

    /// Connects and asserts the broker accepted.
    pub(crate) fn join(&mut self, version: Version, id: &str) -> usize {
        let c = self.connect(Self::config(version, id));
        assert_eq!(self.clients[c].core.state(), ClientState::Connected, "{id}");
        self.take(c);
        c
    }

    /// Replaces client `c`'s connection with a new one carrying its session (Clean Start 0).
    pub(crate) fn reconnect(&mut self, c: usize) -> usize {
        self.drop_transport(c);
        let old = self.clients.swap_remove(c);
        let mut config = old.config.clone();
        config.clean_start = false;
        let session = old.core.into_session();
        let conn = self
            .broker
            .open(self.now)
            .expect("below the connection limit");
        let client = Client::new(
            ClientConnection::new(config.clone(), Some(session), self.now),
            conn,
            config,
        );
        self.clients.push(client);
        let last = self.clients.len() - 1;
        self.clients.swap(c, last);
        self.pump();
        c
    }

    /// The network breaks under client `c`: both ends see end of file.
    pub(crate) fn drop_transport(&mut self, c: usize) {
        let client = &mut self.clients[c];
        if !client.gone {
            client.gone = true;
            client.core.handle_eof(self.now);
            self.broker.handle_eof(client.conn, self.now);
        }
        self.pump();
    }

    /// Moves bytes until nothing moves.
    pub(crate) fn pump(&mut self) {
        self.pump_losing(None);
    }

    /// Moves bytes until nothing moves; bytes to and from client `lossy` are lost on the way.
    pub(crate) fn pump_losing(&mut self, lossy: Option<usize>) {
        let lossy_conn = lossy.map(|c| self.clients[c].conn);
        for _ in 0..10_000 {
            let mut moved = false;
            for client in &mut self.clients {
                if client.gone {
                    continue;
                }
                let mut out = BytesMut::new();
                if client.core.poll_transmit(self.now, &mut out) && Some(client.conn) != lossy_conn
                {
                    client.unsent.extend_from_slice(&out);
                }
                if !client.paused && !client.unsent.is_empty() {
                    moved = true;
                    let out = client.unsent.split();
                    self.broker.handle_bytes(client.conn, self.now, &out);
                }
                if !client.stalled && !client.unread.is_empty() {
                    moved = true;
                    let unread = client.unread.split();
                    client.core.handle_bytes(self.now, &unread);
                }
                while let Some(event) = client.core.poll_event() {
                    client.events.push(event);
                }
            }
            while let Some(conn) = self.broker.poll_ready() {
                let mut out = BytesMut::new();
                self.broker.poll_transmit(conn, self.now, &mut out);
                if Some(conn) == lossy_conn {
                    continue;
                }
                if let Some(client) = self.clients.iter_mut().find(|c| c.conn == conn && !c.gone) {
                    moved = true;
                    if client.stalled {
                        client.unread.extend_from_slice(&out);
                    } else {
                        client.core.handle_bytes(self.now, &out);
                    }
                }
            }
            while let Some(event) = self.broker.poll_event() {
                if let BrokerEvent::PauseReading(conn) | BrokerEvent::ResumeReading(conn) = &event
                    && let Some(client) = self.clients.iter_mut().find(|c| c.conn == *conn)
                {
                    client.paused = matches!(event, BrokerEvent::PauseReading(_));
                    moved = true;
                }
                if let BrokerEvent::Close(conn) = &event
                    && let Some(client) =
                        self.clients.iter_mut().find(|c| c.conn == *conn && !c.gone)
                {
                    // Flush, then close the transport (a client that does not read loses
                    // what it did not read).
                    let mut out = BytesMut::new();
                    self.broker.poll_transmit(*conn, self.now, &mut out);
                    if !client.stalled {
                        client.core.handle_bytes(self.now, &out);
                    }
                    client.core.handle_eof(self.now);
                    client.gone = true;
                    self.broker.handle_eof(*conn, self.now);
                    moved = true;
                }
                self.broker_events.push(event);
            }
            for client in &mut self.clients {
                while let Some(event) = client.core.poll_event() {
                    client.events.push(event);
                }
                if !client.gone && client.core.is_closed() {
                    client.gone = true;
                    self.broker.handle_eof(client.conn, self.now);
                    moved = true;
                }
            }
            moved |= self.commit();
            if !moved {
                return;
            }
        }
        panic!("the network did not settle");
    }

    /// Advances the virtual clock, firing every timer on the way in order.
    pub(crate) fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = self
                .clients
                .iter()
                .filter(|c| !c.gone)
                .filter_map(|c| c.core.poll_timeout())
                .chain(self.broker.poll_timeout())
                .filter(|t| *t <= end)
                .min();
            let Some(at) = next else { break };
            self.now = self.now.max(at);
            self.broker.handle_timeout(self.now);
            for client in &mut self.clients {
                if !client.gone {
                    client.core.handle_timeout(self.now);
                }
            }
            self.pump();
        }
        self.now = end;
        self.broker.handle_timeout(self.now);
        self.pump();
    }

    pub(crate) fn take(&mut self, c: usize) -> Vec<ClientEvent> {
        std::mem::take(&mut self.clients[c].events)
    }

    /// The messages client `c` received since the last call.
    pub(crate) fn messages(&mut self, c: usize) -> Vec<Publish> {
        self.take(c)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => Some(m.publish),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn disconnected(&mut self, c: usize) -> Option<DisconnectReason> {
        self.take(c).into_iter().find_map(|e| match e {
            ClientEvent::Disconnected(reason) => Some(reason),
            _ => None,
        })
    }

    pub(crate) fn subscribe(&mut self, c: usize, filter: &str, qos: QoS) {
        self.subscribe_with(
            c,
            Subscription::new(valid_filter(filter), qos),
            SubscribeProperties::default(),
        );
    }

    pub(crate) fn subscribe_with(
        &mut self,
        c: usize,
        subscription: Subscription,
        properties: SubscribeProperties,
    ) {
        let now = self.now;
        self.clients[c]
            .core
            .subscribe(now, vec![subscription], properties)
            .expect("valid subscribe");
        self.pump();
        let events = &mut self.clients[c].events;
        let before = events.len();
        events.retain(|e| !matches!(e, ClientEvent::Subscribed(_)));
        assert_eq!(events.len() + 1, before, "one SUBACK");
    }

    pub(crate) fn publish(&mut self, c: usize, topic: &str, payload: &'static str, qos: QoS) {
        let mut publish = Publish::new(valid_name(topic), Bytes::from_static(payload.as_bytes()));
        publish.qos = qos;
        self.publish_packet(c, publish);
    }

    pub(crate) fn publish_packet(&mut self, c: usize, publish: Publish) {
        let now = self.now;
        self.clients[c]
            .core
            .publish(now, publish)
            .expect("valid publish");
        self.pump();
    }
}

pub(crate) fn payloads(messages: &[Publish]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| std::str::from_utf8(&m.payload).unwrap_or("<binary>"))
        .collect()
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
