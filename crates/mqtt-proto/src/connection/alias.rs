//! Outbound topic aliases (section 3.3.2.3.4), assigned automatically within the peer's Topic
//! Alias Maximum and forgotten with the connection.

use std::collections::HashMap;
use std::num::NonZeroU16;

use bytestring::ByteString;

use crate::packet::Publish;

/// Topic to alias, for one connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    /// Boxed on first use: most connections never use aliases, and a broker holds many.
    // A pointer instead of the map's 48 bytes in every connection is the point of the box.
    #[allow(clippy::box_collection)]
    assigned: Option<Box<HashMap<ByteString, NonZeroU16>>>,
}

impl OutboundAliases {
    /// Aliases up to `maximum` (the peer's Topic Alias Maximum; 0 disables them).
    pub(crate) fn new(maximum: u16) -> Self {
        Self {
            maximum,
            assigned: None,
        }
    }

    /// Whether [`OutboundAliases::apply`] would change this PUBLISH.
    pub(crate) fn rewrites(&self, publish: &Publish) -> bool {
        self.maximum != 0 && !publish.topic.is_empty() && publish.properties.topic_alias.is_none()
    }

    /// Rewrites a PUBLISH about to be sent: the first message on a topic carries the topic and a
    /// new alias, later ones only the alias. Once every alias is taken, new topics go out whole.
    pub(crate) fn apply(&mut self, publish: &mut Publish) {
        if !self.rewrites(publish) {
            return;
        }
        let assigned = self.assigned.get_or_insert_with(Box::default);
        if let Some(&alias) = assigned.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = ByteString::new();
            return;
        }
        let next = u16::try_from(assigned.len() + 1).ok();
        if let Some(alias) = next
            .filter(|n| *n <= self.maximum)
            .and_then(NonZeroU16::new)
        {
            assigned.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_sends_topic_and_alias_then_alias_only() {
        let mut aliases = OutboundAliases::new(1);
        let mut first = Publish::new("a/b", "1");
        aliases.apply(&mut first);
        assert_eq!(
            (
                first.topic.as_ref(),
                first.properties.topic_alias.map(|a| a.get())
            ),
            ("a/b", Some(1))
        );
        let mut second = Publish::new("a/b", "2");
        aliases.apply(&mut second);
        assert_eq!(
            (
                second.topic.as_ref(),
                second.properties.topic_alias.map(|a| a.get())
            ),
            ("", Some(1))
        );
        let mut other = Publish::new("c", "3");
        aliases.apply(&mut other);
        assert_eq!(
            (other.topic.as_ref(), other.properties.topic_alias),
            ("c", None)
        );
    }

    #[test]
    fn disabled_when_peer_allows_none() {
        let mut aliases = OutboundAliases::new(0);
        let mut p = Publish::new("a", "1");
        aliases.apply(&mut p);
        assert_eq!(p.properties.topic_alias, None);
    }
}
