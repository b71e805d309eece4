//! One network connection as the broker keeps it, and what the broker does after anything
//! touched one: its events handled, its output and its timer noted.

use std::cmp::Reverse;
use std::time::Instant;

use bytestring::ByteString;

use super::session::BrokerSession;
use super::{Broker, TimerKey};
use crate::ReasonCode;
use crate::connection::{ServerConfig, ServerConnection, ServerEvent, ServerState, UsageError};
use crate::packet::{ConnAckProperties, Disconnect, Will};

/// One network connection: its protocol state machine and what the broker notes about it.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) server: ServerConnection,
    pub(super) session: Option<u32>,
    pub(super) client_id: Option<ByteString>,
    pub(super) username: Option<ByteString>,
    /// The identity its transport proved (a TLS client certificate's name): its user name,
    /// whatever its CONNECT says, and authentication enough (see [`Broker::set_identity`]).
    /// Boxed: rare, and most connections are idle ones (24 bytes each).
    pub(super) identity: Option<Box<ByteString>>,
    /// A connection of the driver's own (a bridge's local side): see [`Broker::set_trusted`].
    pub(super) trusted: bool,
    /// Its CONNECT said it is a bridge ([`Connect::bridge`](crate::packet::Connect::bridge)).
    pub(super) bridge: bool,
    pub(super) will: Option<Box<Will>>,
    /// The deadline this connection has in the timer heap, if any.
    pub(super) timer: Option<Instant>,
    pub(super) ready: bool,
    pub(super) closed: bool,
    /// Acknowledgements of this client's messages held back (see [`flow`]).
    pub(super) held: u32,
    /// Why its input is held back: a set of `flow::PAUSED_*` bits.
    pub(super) paused: u8,
    /// Whether the driver was last told to read it.
    pub(super) reading: bool,
    /// Bytes reserved in `max_incoming_bytes` for the packet it is receiving, and the count of
    /// its received packets when they were: the packet is complete once that count moves.
    pub(super) reserved: usize,
    pub(super) reserved_at: u64,
    /// The weight of its queue as last counted in the broker-wide total.
    pub(super) accounted: usize,
    /// A deferred authentication step waits for [`Broker::authenticated`].
    pub(super) auth_pending: bool,
    /// Output bytes handed out so far, and how far output may go (with persistence on: output
    /// waits for what it tells of to be durable).
    pub(super) handed_out: u64,
    pub(super) released: u64,
    /// Its output depends on changes not yet sealed into a batch.
    pub(super) dep: bool,
    /// Sealed batches its output waits for.
    pub(super) holds: u32,
}

impl Conn {
    /// A connection that has not sent anything yet.
    pub(super) fn new(config: &ServerConfig, now: Instant) -> Self {
        Self {
            server: {
                let mut server = ServerConnection::new(config.clone(), now);
                server.report_delivered = false;
                server
            },
            session: None,
            client_id: None,
            username: None,
            identity: None,
            trusted: false,
            bridge: false,
            will: None,
            timer: None,
            ready: false,
            closed: false,
            held: 0,
            paused: 0,
            reading: true,
            reserved: 0,
            reserved_at: 0,
            accounted: 0,
            auth_pending: false,
            handed_out: 0,
            released: 0,
            dep: false,
            holds: 0,
        }
    }
}

impl Broker {
    pub(super) fn session_mut(&mut self, key: u32) -> Option<&mut BrokerSession> {
        self.sessions
            .get_mut(key as usize)
            .and_then(Option::as_mut)
            .map(|s| &mut **s)
    }

    pub(super) fn session(&self, key: u32) -> Option<&BrokerSession> {
        self.sessions
            .get(key as usize)
            .and_then(Option::as_ref)
            .map(|s| &**s)
    }

    /// After anything touched connection `id`: handle its events, note pending output, keep its
    /// timer registered.
    pub(super) fn after(&mut self, id: u64, now: Instant) {
        loop {
            let Some(event) = self.conns.get_mut(&id).and_then(|c| c.server.poll_event()) else {
                break;
            };
            self.on_event(id, now, event);
        }
        self.flow_after(id, now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.server.has_transmit() && !conn.ready {
            conn.ready = true;
            self.ready.push_back(id);
        }
        if self.persist.is_some() && conn.server.has_transmit() {
            self.note_output(id);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(deadline) = conn.server.poll_timeout()
            && conn.timer.is_none_or(|registered| deadline < registered)
        {
            // Later deadlines need no new entry: the earlier one fires, does nothing, and
            // registers the current deadline then.
            conn.timer = Some(deadline);
            self.timers
                .push(Reverse((deadline, TimerKey::Connection(id))));
        }
    }

    pub(super) fn mark_ready(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id)
            && conn.server.has_transmit()
        {
            if !conn.ready {
                conn.ready = true;
                self.ready.push_back(id);
            }
            if self.persist.is_some() {
                self.note_output(id);
            }
        }
    }

    pub(super) fn on_event(&mut self, id: u64, now: Instant, event: ServerEvent) {
        match event {
            ServerEvent::Connect(connect) => self.on_connect(id, now, *connect),
            ServerEvent::Auth(auth) => self.on_auth(id, now, auth),
            ServerEvent::Message(message) => self.on_message(id, now, message),
            ServerEvent::Subscribe(subscribe) => self.on_subscribe(id, now, subscribe),
            ServerEvent::Unsubscribe(unsubscribe) => self.on_unsubscribe(id, now, unsubscribe),
            ServerEvent::Delivered(outcome) => {
                if let Some(key) = self.conns.get(&id).and_then(|c| c.session) {
                    self.unstore_queued(key, outcome.packet_id);
                }
            }
            ServerEvent::Released(packet_id) => {
                if let Some(key) = self.conns.get(&id).and_then(|c| c.session) {
                    self.store_pubrel(key, packet_id, false);
                }
            }
            ServerEvent::Releasing(packet_id) => {
                if let Some(key) = self.conns.get(&id).and_then(|c| c.session) {
                    self.store_releasing(key, packet_id);
                }
            }
            ServerEvent::Expired(publish) => {
                self.stats.dropped.expired += 1;
                if let (Some(key), Some(packet_id)) = (
                    self.conns.get(&id).and_then(|c| c.session),
                    publish.packet_id,
                ) {
                    self.unstore_queued(key, packet_id);
                }
            }
            ServerEvent::Disconnected(reason) => self.on_closed(id, now, reason),
        }
    }

    pub(super) fn client_info(&self, id: u64) -> Option<(ByteString, Option<ByteString>)> {
        let conn = self.conns.get(&id)?;
        Some((conn.client_id.clone()?, conn.username.clone()))
    }

    /// Handles the result of an answer the broker gave connection `id` (CONNACK, AUTH, an
    /// acknowledgement, SUBACK, UNSUBACK, DISCONNECT) to something it reported.
    ///
    /// [`UsageError::Closed`] is expected: the connection ended meanwhile (a protocol error
    /// later in the same input, a takeover, a failed store), so there is nobody left to answer.
    /// Any other refusal means the client would wait for an answer that never comes (an
    /// authenticator continuing an exchange the client cannot take part in, an answer beyond
    /// the client's Maximum Packet Size): the client is refused, or disconnected with
    /// Implementation specific error, rather than left waiting.
    pub(super) fn answered(&mut self, id: u64, now: Instant, result: Result<(), UsageError>) {
        let Err(error) = result else {
            return;
        };
        if error == UsageError::Closed {
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let code = ReasonCode::ImplementationSpecificError;
        let ended = if conn.server.state() == ServerState::Authenticating {
            conn.server.refuse(now, code, ConnAckProperties::default())
        } else {
            conn.server.disconnect(now, Disconnect::new(code))
        };
        closed_already(ended);
    }
}

/// Takes the result of a command that refuses only a closed connection (`refuse`, or
/// `disconnect` with a bare reason code), given where ending the connection is the point: a
/// refusal means it has ended already, which is what was asked.
pub(super) fn closed_already(result: Result<(), UsageError>) {
    if let Err(error) = result {
        debug_assert_eq!(
            error,
            UsageError::Closed,
            "only a closed connection refuses"
        );
    }
}
