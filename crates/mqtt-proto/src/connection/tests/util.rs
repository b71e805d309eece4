//! The simulator: a [`ClientConnection`] and a scripted server that speaks through the codec,
//! on a virtual clock. Bytes can be delivered whole or one at a time.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::codec::{self, Limits};
use crate::connection::{ClientConfig, ClientConnection, ClientEvent, Session};
use crate::packet::{ConnAck, Packet, Version};

/// How server bytes reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    Whole,
    ByteByByte,
}

pub(crate) struct Sim {
    pub(crate) now: Instant,
    pub(crate) client: ClientConnection,
    pub(crate) version: Version,
    pub(crate) feed: Feed,
    /// Bytes the client wrote, not yet decoded by the server.
    from_client: BytesMut,
    pub(crate) events: Vec<ClientEvent>,
}

impl Sim {
    pub(crate) fn new(config: ClientConfig) -> Self {
        Self::with_session(config, None)
    }

    pub(crate) fn with_session(config: ClientConfig, session: Option<Session>) -> Self {
        let now = Instant::now();
        let version = config.version;
        Self {
            now,
            client: ClientConnection::new(config, session, now),
            version,
            feed: Feed::Whole,
            from_client: BytesMut::new(),
            events: Vec::new(),
        }
    }

    /// A new connection on the same clock, carrying this one's session.
    pub(crate) fn reconnect(self, mut config: ClientConfig) -> Self {
        config.clean_start = false;
        let now = self.now;
        let session = self.client.into_session();
        Self {
            now,
            client: ClientConnection::new(config, Some(session), now),
            version: self.version,
            feed: self.feed,
            from_client: BytesMut::new(),
            events: Vec::new(),
        }
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.drain_events();
    }

    /// Everything the client has to send, decoded as the server would.
    pub(crate) fn sent(&mut self) -> Vec<Packet> {
        let mut raw = BytesMut::new();
        self.client.poll_transmit(self.now, &mut raw);
        self.from_client.extend_from_slice(&raw);
        let mut packets = Vec::new();
        while let Some(packet) =
            codec::decode(&mut self.from_client, self.version, &Limits::default())
                .expect("client sent an invalid packet")
        {
            packets.push(packet);
        }
        packets
    }

    /// The server sends packets.
    pub(crate) fn deliver(&mut self, packets: impl IntoIterator<Item = Packet>) {
        let mut wire = BytesMut::new();
        for packet in packets {
            codec::encode(&packet, self.version, &mut wire).expect("server packet encodes");
        }
        self.deliver_bytes(&wire);
    }

    pub(crate) fn deliver_bytes(&mut self, wire: &[u8]) {
        match self.feed {
            Feed::Whole => self.client.handle_bytes(self.now, wire),
            Feed::ByteByByte => {
                for byte in wire {
                    self.client
                        .handle_bytes(self.now, std::slice::from_ref(byte));
                }
            }
        }
        self.drain_events();
    }

    pub(crate) fn drain_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
    }

    pub(crate) fn take_events(&mut self) -> Vec<ClientEvent> {
        self.drain_events();
        std::mem::take(&mut self.events)
    }

    /// Reads the CONNECT and answers with this CONNACK.
    pub(crate) fn accept(&mut self, connack: ConnAck) -> Vec<Packet> {
        let sent = self.sent();
        assert!(
            matches!(sent.first(), Some(Packet::Connect(_))),
            "expected CONNECT first, got {sent:?}"
        );
        self.deliver([Packet::ConnAck(Box::new(connack))]);
        sent
    }
}
