//! [`TopicName`]: a topic name that is known to be valid.

use bytestring::ByteString;

use super::{TopicError, check_topic_name};

/// A valid topic name (section 4.7), as carried by PUBLISH and by a will: checked once, when it
/// is made or decoded, so that publishing, routing and encoding never check it again.
///
/// It reads as the `str` it holds, and it is cheap to clone: it shares the memory of the string
/// it was made from, or of the packet it was decoded from.
///
/// There is one name that is not a valid topic name: the empty one, [`TopicName::empty`] (also
/// the `Default`). A 5.0 PUBLISH carries it when its Topic Alias stands for the topic
/// (section 3.3.2.3.4); a connection replaces it with the topic the alias was set for before it
/// hands the message on. [`TopicName::new`] never makes it.
///
/// ```
/// use mqtt_proto::topic::{TopicError, TopicName};
///
/// let name = TopicName::new("sensors/kitchen/temperature")?;
/// assert_eq!(name, "sensors/kitchen/temperature");
/// assert_eq!(name.split('/').count(), 3);
///
/// let parsed: TopicName = "$SYS/uptime".parse()?;
/// assert!(parsed.starts_with('$'));
///
/// assert_eq!(TopicName::new("sensors/+"), Err(TopicError::WildcardInName));
/// assert_eq!(TopicName::new(""), Err(TopicError::Empty));
/// # Ok::<(), TopicError>(())
/// ```
// Equality, order and hash are those of the `str`, as `Borrow<str>` requires (see
// `checked_string!`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Checks `name` ([`check_topic_name`]: not empty, no wildcards, no U+0000, at most 65,535
    /// bytes) and wraps it.
    pub fn new(name: impl Into<ByteString>) -> Result<Self, TopicError> {
        let name = name.into();
        check_topic_name(&name)?;
        Ok(Self(name))
    }

    /// A name known when the program is written, checked as [`TopicName::new`] checks it.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid topic name. Used to initialize a `const` or `static`, an invalid
    /// name is a compile-time error.
    ///
    /// ```
    /// use mqtt_proto::topic::TopicName;
    ///
    /// const STATUS: TopicName = TopicName::from_static("devices/gateway-1/status");
    /// assert_eq!(STATUS, "devices/gateway-1/status");
    /// ```
    #[allow(clippy::panic)] // the documented contract, as for `http::HeaderValue::from_static`
    pub const fn from_static(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        if bytes.is_empty() {
            panic!("topic name is empty");
        }
        if bytes.len() > super::MAX_TOPIC_LEN {
            panic!("topic name is longer than 65,535 bytes");
        }
        let mut rest = bytes;
        while let [first, tail @ ..] = rest {
            if let 0 | b'+' | b'#' = first {
                panic!("topic name contains the null character or a wildcard");
            }
            rest = tail;
        }
        Self(ByteString::from_static(name))
    }

    /// The empty name, which a 5.0 PUBLISH carries when a Topic Alias stands for its topic.
    pub const fn empty() -> Self {
        Self(ByteString::new())
    }

    /// Wraps a string the caller has already checked; it may be empty.
    pub(crate) fn new_unchecked(name: ByteString) -> Self {
        debug_assert!(
            name.is_empty() || check_topic_name(&name).is_ok(),
            "{name:?}"
        );
        Self(name)
    }
}

super::checked_string!(TopicName);

/// `name` as a [`TopicName`], for tests that spell out valid names.
#[cfg(test)]
pub(crate) fn valid_name(name: &str) -> TopicName {
    TopicName::new(name).unwrap_or_else(|error| panic!("{name:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::MAX_TOPIC_LEN;

    /// MQTT-4.7.3-1 (not empty), MQTT-4.7.3-2 (no U+0000), MQTT-3.3.2-2 (no wildcards),
    /// MQTT-4.7.3-3 (at most 65,535 bytes).
    #[test]
    fn only_valid_names_are_made() {
        let invalid = [
            ("", TopicError::Empty),
            ("a\0b", TopicError::NullCharacter),
            ("a/+", TopicError::WildcardInName),
            ("#", TopicError::WildcardInName),
        ];
        for (bad, error) in invalid {
            assert_eq!(TopicName::new(bad), Err(error), "{bad:?}");
            assert_eq!(bad.parse::<TopicName>(), Err(error), "{bad:?}");
            assert_eq!(TopicName::try_from(bad.to_owned()), Err(error), "{bad:?}");
        }
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(TopicName::new(long), Err(TopicError::TooLong));
        let name = TopicName::try_from(ByteString::from("a/b c/$d")).unwrap();
        assert_eq!(name, "a/b c/$d");
        assert_eq!(name.to_string(), "a/b c/$d");
        assert_eq!(format!("{name:?}"), "\"a/b c/$d\"");
        assert_eq!(ByteString::from(name), "a/b c/$d");
    }

    #[test]
    fn static_names_are_checked() {
        const NAME: TopicName = TopicName::from_static("a/b c/$d");
        assert_eq!(NAME, "a/b c/$d");
        let long: &'static str = Box::leak("a".repeat(MAX_TOPIC_LEN + 1).into_boxed_str());
        for bad in ["", "a\0b", "a/+", "#", long] {
            let made = std::panic::catch_unwind(|| TopicName::from_static(bad));
            assert!(made.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_empty_name_is_only_made_on_purpose() {
        assert!(TopicName::empty().is_empty());
        assert_eq!(TopicName::default(), TopicName::empty());
        assert_ne!(valid_name("a"), TopicName::empty());
    }

    #[test]
    fn names_hash_and_compare_as_their_strings() {
        use std::collections::HashSet;
        let names: HashSet<TopicName> = ["a/b", "c"].into_iter().map(valid_name).collect();
        assert!(names.contains("a/b"));
        assert!(!names.contains("a"));
        assert!(valid_name("a") < valid_name("b"));
    }
}
