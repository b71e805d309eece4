//! What is on its way in one direction of a bridge.

use std::collections::HashMap;

/// The messages of one direction on their way, by their packet identifier at the source (with
/// the source session's generation: a session started anew numbers from scratch), so that a
/// redelivery of one still on its way is not forwarded again (QoS 2 arrives once), and by their
/// packet identifier at the destination, whose acknowledgement settles them. `T` is the
/// source's acknowledgement token.
pub(super) struct Forwarding<T> {
    pending: HashMap<(u64, u16), Pending<T>>,
    by_destination: HashMap<u16, (u64, u16)>,
    generation: u64,
}

impl<T> Default for Forwarding<T> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            by_destination: HashMap::new(),
            generation: 0,
        }
    }
}

/// A message on its way.
struct Pending<T> {
    /// To acknowledge at the source; `None` once the source connection it came on ended, until
    /// the source redelivers it.
    token: Option<T>,
    /// The destination acknowledged it.
    done: bool,
}

impl<T> Forwarding<T> {
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
    pub(super) fn arrived(&mut self, source_id: u16, token: Option<T>) -> Result<Option<T>, ()> {
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

    pub(super) fn sent(&mut self, source_id: u16, token: Option<T>, destination_id: u16) {
        let key = (self.generation, source_id);
        self.pending.insert(key, Pending { token, done: false });
        self.by_destination.insert(destination_id, key);
    }

    /// The destination acknowledged: the token to acknowledge at the source, if it is known.
    pub(super) fn completed(&mut self, destination_id: u16) -> Option<T> {
        let key = self.by_destination.remove(&destination_id)?;
        if key.0 != self.generation {
            // From a source session that is gone: nothing will come back for it.
            return self.pending.remove(&key).and_then(|p| p.token);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_on_its_way_is_not_forwarded_again_and_is_acknowledged_once_done() {
        let mut f = Forwarding::<u32>::default();
        assert_eq!(f.arrived(7, Some(1)), Err(()), "new: forward it");
        f.sent(7, Some(1), 100);
        // The source connection breaks; it redelivers message 7 with a new token.
        f.source_lost();
        assert_eq!(
            f.arrived(7, Some(2)),
            Ok(None),
            "on its way: not forwarded again"
        );
        assert_eq!(f.completed(100), Some(2), "acknowledged with the new token");
        assert_eq!(
            f.arrived(7, Some(3)),
            Err(()),
            "settled: identifier 7 is free again"
        );
    }

    #[test]
    fn completed_before_the_redelivery_is_acknowledged_when_it_comes() {
        let mut f = Forwarding::<u32>::default();
        assert_eq!(f.arrived(9, Some(1)), Err(()));
        f.sent(9, Some(1), 200);
        f.source_lost();
        assert_eq!(f.completed(200), None, "no token to acknowledge with yet");
        assert_eq!(
            f.arrived(9, Some(5)),
            Ok(Some(5)),
            "delivered: acknowledge, do not send"
        );
        assert_eq!(f.arrived(9, Some(6)), Err(()));
    }

    #[test]
    fn a_source_session_started_anew_numbers_from_scratch() {
        let mut f = Forwarding::<u32>::default();
        assert_eq!(f.arrived(1, Some(1)), Err(()));
        f.sent(1, Some(1), 10);
        assert_eq!(f.arrived(2, Some(2)), Err(()));
        f.sent(2, Some(2), 11);
        f.source_lost();
        assert_eq!(f.completed(11), None);
        f.source_started_anew();
        // Identifier 1 is a new message of the new session, not the one on its way.
        assert_eq!(f.arrived(1, Some(3)), Err(()));
        f.sent(1, Some(3), 12);
        assert_eq!(
            f.completed(10),
            None,
            "the old session's message is forgotten"
        );
        assert_eq!(f.completed(12), Some(3));
        assert!(f.pending.is_empty() && f.by_destination.is_empty());
    }
}
