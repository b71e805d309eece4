//! Copies that share no memory with a read buffer, for what the broker keeps for long.

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::{Publish, Will};
use crate::topic::TopicName;

/// A copy of a string that shares no memory with a read buffer. Zero-copy slices are right for
/// messages passing through; state that lives as long as a session must not pin whole buffers.
pub(super) fn detach(s: &ByteString) -> ByteString {
    ByteString::from(&**s)
}

/// Makes a message own its bytes (see [`detach`]).
pub(super) fn detach_publish(publish: &mut Publish) {
    publish.topic = detach_name(&publish.topic);
    publish.payload = Bytes::copy_from_slice(&publish.payload);
    detach_properties(publish);
}

/// Makes a message's property strings and binary data own their bytes.
pub(super) fn detach_properties(publish: &mut Publish) {
    if let Some(p) = publish.properties.get_mut() {
        p.content_type = p.content_type.as_ref().map(detach);
        p.response_topic = p.response_topic.as_ref().map(detach);
        p.correlation_data = p
            .correlation_data
            .as_ref()
            .map(|d| Bytes::copy_from_slice(d));
        for property in &mut p.user_properties {
            property.name = detach(&property.name);
            property.value = detach(&property.value);
        }
    }
}

/// Gives a message that a session keeps bytes of its own: the topic and payload copied once
/// per routing into `owned` and shared by every session that keeps it.
pub(super) fn own_bytes(publish: &mut Publish, owned: &mut Option<(TopicName, Bytes)>) {
    let (topic, payload) = owned.get_or_insert_with(|| {
        (
            detach_name(&publish.topic),
            Bytes::copy_from_slice(&publish.payload),
        )
    });
    publish.topic = topic.clone();
    publish.payload = payload.clone();
    detach_properties(publish);
}

/// [`detach`] for a topic name.
pub(super) fn detach_name(name: &TopicName) -> TopicName {
    TopicName::new_unchecked(ByteString::from(name.as_str()))
}

/// A will whose strings and payload share no memory with a read buffer.
pub(super) fn detach_will(will: Will) -> Will {
    let mut p = will.properties;
    p.content_type = p.content_type.as_ref().map(detach);
    p.response_topic = p.response_topic.as_ref().map(detach);
    p.correlation_data = p.correlation_data.map(|d| Bytes::copy_from_slice(&d));
    for property in &mut p.user_properties {
        property.name = detach(&property.name);
        property.value = detach(&property.value);
    }
    Will {
        topic: detach_name(&will.topic),
        payload: Bytes::copy_from_slice(&will.payload),
        properties: p,
        ..will
    }
}
