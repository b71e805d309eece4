//! [`TopicFilter`]: a topic filter that is known to be valid.

use bytestring::ByteString;

use super::{SHARE_PREFIX, SharedFilter, TopicError, check_topic_filter, parse_shared};

/// A valid topic filter (section 4.7), as carried by SUBSCRIBE and UNSUBSCRIBE: checked once,
/// when it is made, so that encoding, subscribing and matching never check it again.
///
/// It may be a shared subscription, `$share/{group}/{filter}` (section 4.8.2). It reads as the
/// `str` it holds, and it is cheap to clone: it shares the memory of the string it was made from,
/// or of the packet it was decoded from.
///
/// ```
/// use mqtt_proto::topic::{TopicError, TopicFilter};
///
/// let filter = TopicFilter::new("sensors/+/temperature")?;
/// assert_eq!(filter, "sensors/+/temperature");
/// assert!(filter.matches("sensors/kitchen/temperature"));
///
/// let shared: TopicFilter = "$share/workers/jobs/#".parse()?;
/// assert_eq!(shared.shared().map(|s| s.group), Some("workers"));
///
/// assert_eq!(TopicFilter::new("sport+"), Err(TopicError::MisplacedWildcard));
/// # Ok::<(), TopicError>(())
/// ```
// Equality, order and hash are those of the `str`, as `Borrow<str>` requires (see
// `checked_string!`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Checks `filter` ([`check_topic_filter`]) and wraps it.
    pub fn new(filter: impl Into<ByteString>) -> Result<Self, TopicError> {
        let filter = filter.into();
        check_topic_filter(&filter)?;
        Ok(Self(filter))
    }

    /// Wraps a string the caller has already checked.
    pub(crate) fn new_unchecked(filter: ByteString) -> Self {
        debug_assert!(check_topic_filter(&filter).is_ok(), "{filter:?}");
        Self(filter)
    }

    /// Whether this is a shared subscription (`$share/{group}/{filter}`).
    pub fn is_shared(&self) -> bool {
        // A valid filter with this prefix is a valid shared subscription.
        self.0.starts_with(SHARE_PREFIX)
    }

    /// The share name and filter of a shared subscription; `None` for an ordinary filter.
    pub fn shared(&self) -> Option<SharedFilter<'_>> {
        parse_shared(&self.0)
    }

    /// Whether the topic `name` matches this filter ([`super::matches`]); a shared
    /// subscription matches as its [`SharedFilter::filter`].
    pub fn matches(&self, name: &str) -> bool {
        let filter = self.shared().map_or(self.as_str(), |shared| shared.filter);
        super::matches(filter, name)
    }
}

super::checked_string!(TopicFilter);

/// `filter` as a [`TopicFilter`], for tests that spell out valid filters.
#[cfg(test)]
pub(crate) fn valid_filter(filter: &str) -> TopicFilter {
    TopicFilter::new(filter).unwrap_or_else(|error| panic!("{filter:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_filters_are_made() {
        for bad in ["", "a\0b", "sport+", "a/#/b", "$share/group", "$share/g+/a"] {
            assert!(TopicFilter::new(bad).is_err(), "{bad:?}");
            assert!(bad.parse::<TopicFilter>().is_err(), "{bad:?}");
        }
        let long = "a".repeat(super::super::MAX_TOPIC_LEN + 1);
        assert_eq!(TopicFilter::new(long), Err(TopicError::TooLong));
        let filter = TopicFilter::try_from(String::from("a/+/#")).unwrap();
        assert_eq!(filter, "a/+/#");
        assert_eq!(filter.to_string(), "a/+/#");
        assert_eq!(format!("{filter:?}"), "\"a/+/#\"");
        assert_eq!(ByteString::from(filter), "a/+/#");
    }

    #[test]
    fn shared_filters_match_as_their_inner_filter() {
        let shared = TopicFilter::new("$share/g/a/+").unwrap();
        assert!(shared.is_shared());
        assert_eq!(
            shared.shared(),
            Some(SharedFilter {
                group: "g",
                filter: "a/+"
            })
        );
        assert!(shared.matches("a/b"));
        assert!(!shared.matches("$share/g/a/b"));
        let plain = TopicFilter::new("$shared/g").unwrap();
        assert!(!plain.is_shared());
        assert_eq!(plain.shared(), None);
        assert!(plain.matches("$shared/g"));
    }
}
