//! Integration tests of the codec, linked as one test binary.

mod differential;
mod malformed;
mod roundtrip;
mod vectors;

use mqtt_proto::topic::{TopicFilter, TopicName};

/// `text` as a [`TopicFilter`], for tests that spell out valid filters.
fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

/// `text` as a [`TopicName`], for tests that spell out valid names.
fn name(text: &str) -> TopicName {
    TopicName::new(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}
