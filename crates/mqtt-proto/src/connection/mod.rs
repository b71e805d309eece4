//! Connection state machines: [`ClientConnection`] (and, later, the server side) as thin role
//! wrappers over one private core that holds the codec buffers, the transmit queue, the timer
//! table, inbound publish state and outbound topic aliases.
//!
//! Every state machine here is driven the same way. Feed it what happened (`handle_bytes`,
//! `handle_eof`, `handle_timeout`) or what the application wants (commands such as `publish`),
//! then drain its three outputs until each is empty: `poll_transmit` (bytes to write),
//! `poll_event` (what the application should learn) and `poll_timeout` (when to call
//! `handle_timeout` next). Time is always an argument; nothing here reads a clock.

mod alias;
mod client;
mod error;
mod inbound;
mod outbound;
mod server;
mod session;
mod timer;

use std::num::NonZeroU16;
use std::time::Instant;

use bytes::BytesMut;

pub use client::{ClientConfig, ClientConnection, ClientEvent, ClientState, Message};
pub use error::{DisconnectReason, ProtocolError, UsageError};
pub use inbound::AckToken;
pub use outbound::PublishOutcome;
pub(crate) use outbound::weight;
pub use server::{
    Enqueued, ServerConfig, ServerConnection, ServerEvent, ServerSession, ServerState,
};
pub use session::{ActiveSubscription, Session, SessionDecodeError};

use crate::codec::{self, Limits};
use crate::packet::{AliasUse, Packet, Publish, Version};
use alias::OutboundAliases;
use inbound::Inbound;
use timer::TimerTable;

/// See [`Core::check_publish_size`].
pub(crate) fn check_publish_size(
    publish: &Publish,
    version: Version,
    max: Option<u32>,
) -> Result<(), UsageError> {
    if let Some(max) = max {
        let size = publish.wire_len(version)?;
        if size > max as usize {
            return Err(UsageError::PacketTooLarge { size, max });
        }
    }
    Ok(())
}

/// What an acknowledgement did, for the role that received it.
pub(crate) enum Acked {
    /// One of our publishes completed (or was refused): report it, refill the window.
    Completed(PublishOutcome),
    /// The peer's PUBREL: a QoS 2 message it sent is complete (PUBCOMP sent).
    Released(crate::packet::PacketId),
    /// The peer's PUBREC accepted one of our QoS 2 messages: PUBREL sent, the message itself
    /// is no longer needed.
    Releasing(crate::packet::PacketId),
    /// Not an acknowledgement: the role handles it.
    Other(Packet),
}

/// The QoS 1/2 acknowledgements both roles handle alike: PUBACK, PUBREC and PUBCOMP of our
/// publishes, PUBREL of the peer's.
pub(crate) fn handle_ack(
    core: &mut Core,
    outbound: &mut outbound::Outbound,
    packet: Packet,
) -> Result<Acked, ProtocolError> {
    Ok(match packet {
        Packet::PubAck(ack) => {
            Acked::Completed(outbound.on_puback(ack.packet_id, ack.reason_code, ack.properties)?)
        }
        Packet::PubRec(rec) => {
            match outbound.on_pubrec(rec.packet_id, rec.reason_code, rec.properties)? {
                Ok(pubrel) => {
                    core.send(Packet::PubRel(pubrel));
                    Acked::Releasing(rec.packet_id)
                }
                Err(refused) => Acked::Completed(refused),
            }
        }
        Packet::PubComp(comp) => Acked::Completed(outbound.on_pubcomp(comp)?),
        Packet::PubRel(rel) => {
            let comp = core.inbound.on_pubrel(&rel, core.version);
            core.send(Packet::PubComp(comp));
            Acked::Released(rel.packet_id)
        }
        other => Acked::Other(other),
    })
}

/// What both roles share: buffers, the transmit queue, timers, inbound state, aliases.
#[derive(Debug)]
pub(crate) struct Core {
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
}

impl Core {
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
}

#[cfg(test)]
mod tests;
