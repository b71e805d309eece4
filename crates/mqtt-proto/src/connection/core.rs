//! The private core under both roles: codec buffers, the transmit queue, timers, inbound
//! publish state, outbound topic aliases and events, and what both roles do with them alike.
//! The roles ([`ClientConnection`](super::ClientConnection),
//! [`ServerConnection`](super::ServerConnection)) hold only what differs, as rustls's
//! `ConnectionCommon<Side>` does.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::time::Instant;

use bytes::BytesMut;

use super::alias::OutboundAliases;
use super::inbound::Inbound;
use super::timer::{Timer, TimerTable};
use super::{
    AckToken, ClientEvent, DisconnectReason, ProtocolError, ServerEvent, UsageError,
    check_publish_size,
};
use crate::ReasonCode;
use crate::codec::{self, Limits};
use crate::packet::{AliasUse, Disconnect, Packet, Publish, Version};

/// What differs between the roles for the core: the events they report.
pub(crate) trait Side {
    /// The role's event type.
    type Event: std::fmt::Debug;

    /// The event that reports the end of the connection.
    fn disconnected(reason: DisconnectReason) -> Self::Event;
}

/// The client role ([`ClientConnection`](super::ClientConnection)).
#[derive(Debug)]
pub(crate) struct ClientSide;

impl Side for ClientSide {
    type Event = ClientEvent;

    fn disconnected(reason: DisconnectReason) -> ClientEvent {
        ClientEvent::Disconnected(reason)
    }
}

/// The server role ([`ServerConnection`](super::ServerConnection)).
#[derive(Debug)]
pub(crate) struct ServerSide;

impl Side for ServerSide {
    type Event = ServerEvent;

    fn disconnected(reason: DisconnectReason) -> ServerEvent {
        ServerEvent::Disconnected(reason)
    }
}

/// What both roles share: buffers, the transmit queue, timers, inbound state, aliases.
#[derive(Debug)]
pub(crate) struct Core<S: Side> {
    pub(crate) version: Version,
    pub(crate) limits: Limits,
    read_buf: BytesMut,
    /// Packets sent and not yet handed out by `poll_transmit`, already encoded: a packet is
    /// encoded once, when sent, and never moved about as a value.
    transmit: BytesMut,
    pub(crate) timers: TimerTable,
    pub(crate) inbound: Inbound,
    pub(crate) aliases: OutboundAliases,
    /// The peer's Maximum Packet Size, once known.
    pub(crate) peer_max_packet_size: Option<u32>,
    /// No more input is processed once set.
    pub(crate) closed: bool,
    /// Packets decoded so far: a packet that was being received has completed when this moves.
    pub(crate) decoded: u64,
    /// What the application has yet to learn, oldest first.
    pub(crate) events: VecDeque<S::Event>,
}

impl<S: Side> Core<S> {
    pub(crate) fn new(version: Version, limits: Limits) -> Self {
        Self {
            version,
            limits,
            read_buf: BytesMut::new(),
            transmit: BytesMut::new(),
            timers: TimerTable::default(),
            inbound: Inbound::default(),
            aliases: OutboundAliases::default(),
            peer_max_packet_size: None,
            closed: false,
            decoded: 0,
            events: VecDeque::new(),
        }
    }

    /// Encodes `packet` for sending (a PUBLISH with the topic alias it goes out with).
    ///
    /// Commands validate what they send, so encoding cannot fail here; a packet that somehow
    /// could not be encoded is dropped rather than corrupting the stream (the encoder writes
    /// nothing when it fails).
    pub(crate) fn send(&mut self, packet: Packet) {
        match packet {
            Packet::Publish(publish) => self.send_publish(&publish),
            packet => {
                let _ = codec::encode(&packet, self.version, &mut self.transmit);
            }
        }
    }

    /// Encodes a PUBLISH, which the caller may keep (in flight, for a resend), with this
    /// connection's outbound topic alias for its topic, if any. The alias is applied as the
    /// bytes are written: the message is neither copied nor changed.
    pub(crate) fn send_publish(&mut self, publish: &Publish) {
        let alias = match self.version {
            Version::V5 => {
                let (version, max) = (self.version, self.peer_max_packet_size);
                self.aliases.alias_for(publish, || {
                    let with_alias = AliasUse {
                        alias: NonZeroU16::MAX,
                        with_topic: true,
                    };
                    max.is_none_or(|max| {
                        publish
                            .wire_len_with(version, Some(with_alias))
                            .is_ok_and(|size| size <= max as usize)
                    })
                })
            }
            Version::V3_1_1 => None,
        };
        // As in `send`: validated by the command, dropped rather than half-written otherwise.
        let _ = publish.encode_with(self.version, alias, &mut self.transmit);
    }

    pub(crate) fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// Appends received bytes to the read buffer.
    pub(crate) fn buffer(&mut self, bytes: &[u8]) {
        self.read_buf.extend_from_slice(bytes);
    }

    /// The type nibble of the next packet in the read buffer, if any byte is there.
    pub(crate) fn peek_type(&self) -> Option<u8> {
        self.read_buf.first().map(|b| b >> 4)
    }

    /// Bytes received and not yet decoded.
    pub(crate) fn buffered(&self) -> usize {
        self.read_buf.len()
    }

    /// The size of the packet being received, while only part of it is buffered.
    pub(crate) fn partial_packet_len(&self) -> Option<usize> {
        codec::packet_len(&self.read_buf).filter(|&len| len > self.read_buf.len())
    }

    /// Makes room in the read buffer for `additional` more bytes at once, so that a large packet
    /// arrives into one allocation of its size instead of a series of doublings.
    pub(crate) fn reserve_input(&mut self, additional: usize) {
        self.read_buf.reserve(additional);
    }

    /// The next complete packet in the read buffer.
    pub(crate) fn next_packet(&mut self) -> Result<Option<Packet>, codec::DecodeError> {
        let packet = codec::decode(&mut self.read_buf, self.version, &self.limits);
        if let Ok(Some(_)) = packet {
            self.decoded += 1;
        }
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            // An idle connection holds no read buffer; the next read allocates one.
            self.read_buf = BytesMut::new();
        }
        packet
    }

    /// Hands out what was sent; returns whether there was anything. `keep_room`: an empty `buf` is swapped with the transmit
    /// buffer, so that its room serves the next packets (a client); otherwise the connection
    /// keeps no buffer (a broker's connection).
    pub(crate) fn poll_transmit(&mut self, buf: &mut BytesMut, keep_room: bool) -> bool {
        if self.transmit.is_empty() {
            return false;
        }
        if buf.is_empty() && keep_room {
            // The bytes change hands without a copy; the caller's empty buffer (and whatever
            // room it has) takes the next packets, so a caller that reuses one buffer and the
            // connection trade two back and forth without allocating.
            std::mem::swap(buf, &mut self.transmit);
        } else if buf.is_empty() {
            // Without a copy either, but the connection keeps no buffer: one of a broker's
            // many connections must not hold on to room while it is idle.
            *buf = std::mem::take(&mut self.transmit);
        } else {
            buf.extend_from_slice(&self.transmit);
            // Idle connections keep no buffer (thousands of them add up in a broker).
            self.transmit = BytesMut::new();
        }
        true
    }

    /// Bytes sent and not yet handed out.
    pub(crate) fn transmit_len(&self) -> usize {
        self.transmit.len()
    }

    /// Hands out at most `limit` bytes of what was sent (whole packets or not: the caller
    /// counts bytes). Returns how many.
    pub(crate) fn poll_transmit_prefix(&mut self, buf: &mut BytesMut, limit: usize) -> usize {
        let n = limit.min(self.transmit.len());
        if n == self.transmit.len() {
            self.poll_transmit(buf, false);
        } else if n > 0 {
            buf.extend_from_slice(&self.transmit.split_to(n));
        }
        n
    }

    /// Forgets what was sent beyond the first `keep` bytes not yet handed out.
    pub(crate) fn truncate_transmit(&mut self, keep: usize) {
        self.transmit.truncate(keep);
    }

    /// Checks an outbound packet against the peer's Maximum Packet Size.
    pub(crate) fn check_size(&self, packet: &Packet) -> Result<(), UsageError> {
        let size = packet.encoded_len(self.version)?;
        match self.peer_max_packet_size {
            Some(max) if size > max as usize => Err(UsageError::PacketTooLarge { size, max }),
            _ => Ok(()),
        }
    }

    /// Checks a PUBLISH against the peer's Maximum Packet Size, sized with a packet identifier
    /// for QoS 1 and 2 and its full topic (an alias only makes it smaller), without copying it.
    pub(crate) fn check_publish_size(&self, publish: &Publish) -> Result<(), UsageError> {
        check_publish_size(publish, self.version, self.peer_max_packet_size)
    }

    /// The earliest armed timer.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---- what both roles do alike ----

    /// Acknowledges a received message (the reason code goes out in 5.0 only). Its PUBACK or
    /// PUBREC goes out once every message that arrived before it is acknowledged too
    /// (MQTT-4.6.0-2). Returns whether the set of QoS 2 messages awaiting PUBREL changed.
    pub(crate) fn ack(&mut self, token: AckToken, reason: ReasonCode) -> Result<bool, UsageError> {
        if self.closed {
            return Err(UsageError::Closed);
        }
        let reason = match self.version {
            Version::V5 => reason,
            Version::V3_1_1 => ReasonCode::Success,
        };
        let mut acks = Vec::new();
        let receiving = self.inbound.awaiting_pubrel.len();
        if !self
            .inbound
            .ack_with(token, reason, |packet| acks.push(packet))
        {
            return Err(UsageError::UnknownAck);
        }
        for packet in acks {
            self.send(packet);
        }
        Ok(self.inbound.awaiting_pubrel.len() != receiving)
    }

    /// Sends a DISCONNECT, once it is known to fit the peer's limits.
    pub(crate) fn send_disconnect(&mut self, disconnect: &Disconnect) -> Result<(), UsageError> {
        let packet = Packet::Disconnect(disconnect.clone());
        packet.encoded_len(self.version)?;
        self.send(packet);
        Ok(())
    }

    /// A protocol violation by the peer: in 5.0, once connected, a DISCONNECT with its reason
    /// code goes out after what was queued before (which answered valid packets). Returns why
    /// the connection ends, for the role to close with.
    pub(crate) fn fail(&mut self, error: ProtocolError, connected: bool) -> DisconnectReason {
        if self.version == Version::V5 && connected {
            self.send(Packet::Disconnect(Disconnect::new(error.reason_code())));
        }
        DisconnectReason::Protocol(error)
    }

    /// Ends the connection: no more input, no timers, and the one `Disconnected` event.
    pub(crate) fn close(&mut self, reason: DisconnectReason) {
        self.closed = true;
        self.timers.stop_all();
        self.events.push_back(S::disconnected(reason));
    }

    /// The timer that ends the connection, if one is due: the connect timeout or the keep-alive
    /// expiry. Spurious calls find nothing.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<DisconnectReason> {
        if self.closed {
            return None;
        }
        if self.timers.expired(Timer::Connect, now) {
            return Some(DisconnectReason::ConnectTimeout);
        }
        if self.timers.expired(Timer::KeepAliveExpiry, now) {
            return Some(DisconnectReason::KeepAliveTimeout);
        }
        None
    }

    /// The next event; an empty queue gives its memory back (idle connections hold none).
    pub(crate) fn poll_event(&mut self) -> Option<S::Event> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        event
    }
}
