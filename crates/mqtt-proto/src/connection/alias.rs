//! Outbound topic aliases (section 3.3.2.3.4), assigned automatically within the peer's Topic
//! Alias Maximum and forgotten with the connection.

use std::collections::HashMap;
use std::num::NonZeroU16;

use crate::packet::{AliasUse, Publish};
use crate::topic::TopicName;

/// Topic to alias, for one connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    /// Boxed on first use: most connections never use aliases, and a broker holds many.
    // A pointer instead of the map's 48 bytes in every connection is the point of the box.
    #[allow(clippy::box_collection)]
    assigned: Option<Box<HashMap<TopicName, NonZeroU16>>>,
}

impl OutboundAliases {
    /// Aliases up to `maximum` (the peer's Topic Alias Maximum; 0 disables them).
    pub(crate) fn new(maximum: u16) -> Self {
        Self {
            maximum,
            assigned: None,
        }
    }

    /// The alias to send this PUBLISH with, if any: the first message on a topic carries the
    /// topic and a new alias, later ones only the alias. Once every alias is taken, new topics
    /// go out whole, as does a message that carries a Topic Alias of its own. A new alias is
    /// assigned only if `fits`: the first use makes the packet 3 bytes larger, which must not
    /// take it over the peer's Maximum Packet Size (MQTT-3.1.2-24).
    pub(crate) fn alias_for(
        &mut self,
        publish: &Publish,
        fits: impl FnOnce() -> bool,
    ) -> Option<AliasUse> {
        if self.maximum == 0 || publish.topic.is_empty() || publish.properties.topic_alias.is_some()
        {
            return None;
        }
        let assigned = self.assigned.get_or_insert_with(Box::default);
        if let Some(&alias) = assigned.get(&publish.topic) {
            return Some(AliasUse {
                alias,
                with_topic: false,
            });
        }
        let alias = u16::try_from(assigned.len() + 1)
            .ok()
            .filter(|n| *n <= self.maximum)
            .and_then(NonZeroU16::new)?;
        if !fits() {
            return None;
        }
        assigned.insert(publish.topic.clone(), alias);
        Some(AliasUse {
            alias,
            with_topic: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::valid_name;

    fn alias(id: u16, with_topic: bool) -> Option<AliasUse> {
        Some(AliasUse {
            alias: NonZeroU16::new(id)?,
            with_topic,
        })
    }

    #[test]
    fn first_use_sends_topic_and_alias_then_alias_only() {
        let mut aliases = OutboundAliases::new(1);
        let first = Publish::new(valid_name("a/b"), "1");
        assert_eq!(aliases.alias_for(&first, || true), alias(1, true));
        let second = Publish::new(valid_name("a/b"), "2");
        assert_eq!(aliases.alias_for(&second, || true), alias(1, false));
        // The only alias is taken: another topic goes out whole.
        let other = Publish::new(valid_name("c"), "3");
        assert_eq!(aliases.alias_for(&other, || true), None);
    }

    #[test]
    fn disabled_when_peer_allows_none() {
        let mut aliases = OutboundAliases::new(0);
        assert_eq!(
            aliases.alias_for(&Publish::new(valid_name("a"), "1"), || true),
            None
        );
    }

    #[test]
    fn no_new_alias_when_the_larger_packet_would_not_fit() {
        let mut aliases = OutboundAliases::new(2);
        let publish = Publish::new(valid_name("a/b"), "1");
        assert_eq!(aliases.alias_for(&publish, || false), None);
        // Nothing was assigned: the next message that fits gets alias 1.
        assert_eq!(aliases.alias_for(&publish, || true), alias(1, true));
        // A known alias only makes a packet smaller: no check needed.
        assert_eq!(aliases.alias_for(&publish, || false), alias(1, false));
    }

    #[test]
    fn a_message_with_its_own_alias_is_left_alone() {
        let mut aliases = OutboundAliases::new(2);
        let mut publish = Publish::new(valid_name("a/b"), "1");
        publish.properties.topic_alias = NonZeroU16::new(2);
        assert_eq!(aliases.alias_for(&publish, || true), None);
    }
}
