//! Topic names and topic filters (section 4.7): validation, matching and shared subscriptions.
//!
//! A PUBLISH carries a [`TopicName`], and a SUBSCRIBE or UNSUBSCRIBE carries [`TopicFilter`]s.
//! Both are checked once, when they are made (or decoded), and never again.
//!
//! ```
//! use mqtt_proto::topic;
//!
//! assert!(topic::matches("sensors/+/temperature", "sensors/kitchen/temperature"));
//! assert!(topic::matches("sensors/#", "sensors"));
//! assert!(!topic::matches("#", "$SYS/uptime"));
//! let shared = topic::parse_shared("$share/workers/jobs/#").unwrap();
//! assert_eq!((shared.group, shared.filter), ("workers", "jobs/#"));
//! ```

mod checked;
mod filter;
mod name;

use checked::checked_string;
pub use filter::TopicFilter;
#[cfg(test)]
pub(crate) use filter::valid_filter;
pub use name::TopicName;
#[cfg(test)]
pub(crate) use name::valid_name;

/// The longest topic, the limit of an MQTT string (MQTT-4.7.3-3).
pub const MAX_TOPIC_LEN: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters must be at least one character long (MQTT-4.7.3-1).
    #[error("topic is empty")]
    Empty,
    /// Longer than 65,535 bytes (MQTT-4.7.3-3).
    #[error("topic is longer than 65,535 bytes")]
    TooLong,
    /// Contains U+0000 (MQTT-4.7.3-2).
    #[error("topic contains the null character")]
    NullCharacter,
    /// A topic name contains `+` or `#` (MQTT-3.3.2-2).
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` not alone as the last level, or `+` not alone in its level (MQTT-4.7.1-1,
    /// MQTT-4.7.1-2).
    #[error("misplaced wildcard in topic filter")]
    MisplacedWildcard,
    /// A `$share/` filter without a valid share name and filter (MQTT-4.8.2-1, MQTT-4.8.2-2).
    #[error("invalid shared subscription")]
    InvalidSharedSubscription,
}

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name, as carried by PUBLISH: not empty, no wildcards.
pub fn check_topic_name(name: &str) -> Result<(), TopicError> {
    if crate::codec::wire::is_valid_topic_name(name.as_bytes()) {
        return Ok(());
    }
    check_topic_name_by_bytes(name)
}

/// [`check_topic_name`] one rule at a time: the reference the codec's one-pass check is tested
/// against, and the check that says which rule an invalid name breaks.
pub(crate) fn check_topic_name_by_bytes(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Whether `name` is a valid topic name.
pub fn is_valid_topic_name(name: &str) -> bool {
    check_topic_name(name).is_ok()
}

/// Checks a topic filter, as carried by SUBSCRIBE and UNSUBSCRIBE, including the
/// `$share/{group}/{filter}` form.
pub fn check_topic_filter(filter: &str) -> Result<(), TopicError> {
    if crate::codec::wire::is_plain_topic_filter(filter.as_bytes()) {
        return Ok(());
    }
    check_topic_filter_by_levels(filter)
}

/// [`check_topic_filter`] level by level: the reference the codec's one-pass check is tested
/// against, and the check of the filters that pass cannot answer (shared ones, invalid ones).
pub(crate) fn check_topic_filter_by_levels(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let plain = match filter.strip_prefix(SHARE_PREFIX) {
        Some(rest) => {
            let shared = split_shared(rest).ok_or(TopicError::InvalidSharedSubscription)?;
            shared.filter
        }
        None => filter,
    };
    check_wildcards(plain)
}

/// Whether `filter` is a valid topic filter.
pub fn is_valid_topic_filter(filter: &str) -> bool {
    check_topic_filter(filter).is_ok()
}

fn check_wildcards(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return Err(TopicError::MisplacedWildcard),
            "#" | "+" => {}
            _ if level.bytes().any(|b| b == b'+' || b == b'#') => {
                return Err(TopicError::MisplacedWildcard);
            }
            _ => {}
        }
    }
    Ok(())
}

/// A shared subscription, `$share/{group}/{filter}` (section 4.8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name.
    pub group: &'a str,
    /// The topic filter messages are matched against.
    pub filter: &'a str,
}

fn split_shared(rest: &str) -> Option<SharedFilter<'_>> {
    let (group, filter) = rest.split_once('/')?;
    let group_ok = !group.is_empty() && !group.bytes().any(|b| b == b'+' || b == b'#');
    (group_ok && !filter.is_empty()).then_some(SharedFilter { group, filter })
}

/// The share name and filter of a shared subscription; `None` for an ordinary filter or a
/// malformed `$share/` one.
pub fn parse_shared(filter: &str) -> Option<SharedFilter<'_>> {
    let shared = split_shared(filter.strip_prefix(SHARE_PREFIX)?)?;
    check_wildcards(shared.filter).ok()?;
    Some(shared)
}

/// Whether the topic `name` matches `filter` (section 4.7).
///
/// `+` matches exactly one level, `#` the parent level and any number of levels below it. A
/// filter starting with a wildcard does not match names starting with `$` (MQTT-4.7.2-1). Both
/// arguments are assumed valid; `filter` must not be a `$share/` filter (match its
/// [`SharedFilter::filter`]).
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut names = name.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if names.next().is_none() {
                    return false;
                }
            }
            _ => {
                if names.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    names.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_4_7_1_1_multi_level_wildcard_must_be_last_and_alone() {
        assert!(is_valid_topic_filter("#"));
        assert!(is_valid_topic_filter("sport/tennis/#"));
        assert_eq!(
            check_topic_filter("sport/tennis#"),
            Err(TopicError::MisplacedWildcard)
        );
        assert_eq!(
            check_topic_filter("sport/tennis/#/ranking"),
            Err(TopicError::MisplacedWildcard)
        );
    }

    #[test]
    fn mqtt_4_7_1_2_single_level_wildcard_occupies_a_whole_level() {
        for ok in ["+", "+/tennis/#", "sport/+/player1", "/+", "+/+"] {
            assert!(is_valid_topic_filter(ok), "{ok}");
        }
        assert_eq!(
            check_topic_filter("sport+"),
            Err(TopicError::MisplacedWildcard)
        );
    }

    #[test]
    fn mqtt_4_7_3_1_topics_are_not_empty() {
        assert_eq!(check_topic_name(""), Err(TopicError::Empty));
        assert_eq!(check_topic_filter(""), Err(TopicError::Empty));
        // A lone separator is a valid (two empty levels) topic.
        assert!(is_valid_topic_name("/"));
    }

    #[test]
    fn mqtt_4_7_3_2_null_character_is_rejected() {
        assert_eq!(check_topic_name("a\0b"), Err(TopicError::NullCharacter));
    }

    #[test]
    fn mqtt_4_7_3_3_topics_are_at_most_65535_bytes() {
        assert!(is_valid_topic_name(&"a".repeat(MAX_TOPIC_LEN)));
        assert_eq!(
            check_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn mqtt_3_3_2_2_topic_names_have_no_wildcards() {
        assert_eq!(check_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(check_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert!(is_valid_topic_name("a/b c/$d"));
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        // The examples of section 4.7.1.2.
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(!matches("sport/tennis/#", "sport/football"));
    }

    #[test]
    fn single_level_wildcard_matches_one_level() {
        // The examples of section 4.7.1.3.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
    }

    #[test]
    fn exact_filters_match_exactly() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a/b", "a/B"));
        assert!(matches("/", "/"));
    }

    #[test]
    fn mqtt_4_7_2_1_leading_wildcards_do_not_match_dollar_topics() {
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn mqtt_4_8_2_1_and_4_8_2_2_shared_subscription_syntax() {
        assert_eq!(
            parse_shared("$share/group/a/+"),
            Some(SharedFilter {
                group: "group",
                filter: "a/+"
            })
        );
        assert_eq!(parse_shared("a/b"), None);
        for bad in [
            "$share/",
            "$share//a",
            "$share/group",
            "$share/group/",
            "$share/gr+oup/a",
            "$share/gr#oup/a",
            "$share/group/a#",
        ] {
            assert_eq!(parse_shared(bad), None, "{bad}");
            assert!(!is_valid_topic_filter(bad), "{bad}");
        }
        assert!(is_valid_topic_filter("$share/group/#"));
        // Only the exact `$share/` prefix makes a shared subscription.
        assert!(is_valid_topic_filter("$shared/group"));
    }
}
