//! What is on its way in one direction of a bridge.

use std::collections::HashMap;

use mqtt_proto::connection::AckToken;

/// The messages of one direction on their way, by their packet identifier at the source (with
/// the source session's generation: a session started anew numbers from scratch), so that a
/// redelivery of one still on its way is not forwarded again (QoS 2 arrives once), and by their
/// packet identifier at the destination, whose acknowledgement settles them.
#[derive(Default)]
pub(super) struct Forwarding {
    pending: HashMap<(u64, u16), Pending>,
    by_destination: HashMap<u16, (u64, u16)>,
    generation: u64,
}

/// A message on its way.
struct Pending {
    /// To acknowledge at the source; `None` once the source connection it came on ended, until
    /// the source redelivers it.
    token: Option<AckToken>,
    /// The destination acknowledged it.
    done: bool,
}

impl Forwarding {
    /// A new source session: nothing will be redelivered.
    pub(super) fn source_started_anew(&mut self) {
        self.generation += 1;
        self.pending.retain(|_, p| !p.done);
    }

    /// The source connection ended: its tokens are void.
    pub(super) fn source_lost(&mut self) {
        for pending in self.pending.values_mut() {
            pending.token = None;
        }
    }

    /// A message from the source with this packet identifier: `Some(token to ack now)` when it
    /// was already delivered, `None` when it is on its way (its token is kept) or new (`Err`:
    /// forward it).
    pub(super) fn arrived(
        &mut self,
        source_id: u16,
        token: Option<AckToken>,
    ) -> Result<Option<AckToken>, ()> {
        let key = (self.generation, source_id);
        match self.pending.get_mut(&key) {
            Some(pending) if pending.done => {
                self.pending.remove(&key);
                Ok(token)
            }
            Some(pending) => {
                pending.token = token;
                Ok(None)
            }
            None => Err(()),
        }
    }

    pub(super) fn sent(&mut self, source_id: u16, token: Option<AckToken>, destination_id: u16) {
        let key = (self.generation, source_id);
        self.pending.insert(key, Pending { token, done: false });
        self.by_destination.insert(destination_id, key);
    }

    /// The destination acknowledged: the token to acknowledge at the source, if it is known.
    pub(super) fn completed(&mut self, destination_id: u16) -> Option<AckToken> {
        let key = self.by_destination.remove(&destination_id)?;
        let pending = self.pending.get_mut(&key)?;
        match pending.token.take() {
            Some(token) => {
                self.pending.remove(&key);
                Some(token)
            }
            None => {
                pending.done = true;
                None
            }
        }
    }
}
