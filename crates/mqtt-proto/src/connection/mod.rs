//! Connection state machines: [`ClientConnection`] and [`ServerConnection`], thin role wrappers
//! over one private core (`Core`, in `core.rs`) that holds the codec buffers, the transmit queue,
//! the timer table, inbound publish state, outbound topic aliases and the event queue, and does
//! what both roles do alike: acknowledging, failing, closing, timing out, handing out events.
//!
//! Every state machine here is driven the same way. Feed it what happened (`handle_bytes`,
//! `handle_eof`, `handle_timeout`) or what the application wants (commands such as `publish`),
//! then drain its three outputs until each is empty: `poll_transmit` (bytes to write),
//! `poll_event` (what the application should learn) and `poll_timeout` (when to call
//! `handle_timeout` next). Time is always an argument; nothing here reads a clock.

mod alias;
mod client;
mod core;
mod error;
mod inbound;
mod outbound;
mod server;
mod server_session;
mod session;
mod timer;

pub use client::{ClientConfig, ClientConnection, ClientEvent, ClientState, Message};
pub use error::{DisconnectReason, ProtocolError, UsageError};
pub use inbound::AckToken;
pub use outbound::PublishOutcome;
pub(crate) use outbound::weight;
pub use server::{ServerConfig, ServerConnection, ServerEvent, ServerState};
pub use server_session::{Enqueued, ServerSession};
pub use session::{ActiveSubscription, Session, SessionDecodeError};

use crate::packet::{Packet, Publish, Version};
use alias::OutboundAliases;
pub(crate) use core::{ClientSide, Core, ServerSide, Side};

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
pub(crate) fn handle_ack<S: Side>(
    core: &mut Core<S>,
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

#[cfg(test)]
mod tests;
