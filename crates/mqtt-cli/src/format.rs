//! How payloads and messages are shown: `--format auto|text|binary|json`.
//!
//! Shared by `subscribe` and `monitor`. [`render`] shows a payload alone; [`message_json`] is
//! the one-object-per-line form of a whole message.

use std::fmt::Write as _;

use mqtt_tokio::{Publish, QoS};
use serde_json::{Map, Value, json};

/// How to show a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    /// Text when the payload is valid UTF-8, else a hex dump.
    #[default]
    Auto,
    /// Always text (invalid UTF-8 sequences shown as U+FFFD).
    Text,
    /// Always a hex dump.
    Binary,
    /// One JSON object per message: topic, qos, retain, properties, payload.
    Json,
}

/// The payload as `format` shows it. `Json` gives the payload's JSON value (a string when it is
/// UTF-8, else an object `{"hex": "..."}`), serialized.
pub(crate) fn render(payload: &[u8], format: Format) -> String {
    match format {
        Format::Auto => match std::str::from_utf8(payload) {
            Ok(text) => text.to_owned(),
            Err(_) => hex_dump(payload),
        },
        Format::Text => String::from_utf8_lossy(payload).into_owned(),
        Format::Binary => hex_dump(payload),
        Format::Json => bytes_json(payload).to_string(),
    }
}

/// Lowercase hex digits, two per byte, no separators: `"00ff10"`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A hex dump as `xxd` and `hexdump -C` show one: 16 bytes a line, offset, hex in two groups of
/// eight, then the printable ASCII (`.` for the rest). Lines are separated by `\n`, without a
/// trailing one; an empty payload gives an empty string.
pub(crate) fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (line, chunk) in bytes.chunks(16).enumerate() {
        if line > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{:08x} ", line * 16);
        for i in 0..16 {
            if i == 8 {
                out.push(' ');
            }
            match chunk.get(i) {
                Some(byte) => {
                    let _ = write!(out, " {byte:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        out.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push('|');
    }
    out
}

/// Bytes as JSON: a string when they are UTF-8, else `{"hex": "..."}`.
pub(crate) fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "hex": hex(bytes) }),
    }
}

/// The QoS as a number.
pub(crate) fn qos_number(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// A message as one JSON object:
/// `{"topic":..,"qos":..,"retain":..,"properties":{..},"payload":..}`.
///
/// `properties` holds the 5.0 properties present (none for 3.1.1): `payload_format_indicator`
/// (0 or 1), `message_expiry_interval` (seconds), `content_type`, `response_topic`,
/// `correlation_data`, `user_properties` (an array of `[name, value]` pairs, in order, repeats
/// kept) and `subscription_identifiers`. The payload and the correlation data are strings when
/// they are UTF-8, else `{"hex": "..."}`.
pub(crate) fn message_json(publish: &Publish) -> Value {
    let p = &publish.properties;
    let mut properties = Map::new();
    if let Some(format) = p.payload_format_indicator {
        let utf8 = format == mqtt_tokio::PayloadFormat::Utf8;
        properties.insert("payload_format_indicator".into(), json!(u8::from(utf8)));
    }
    if let Some(expiry) = p.message_expiry_interval {
        properties.insert("message_expiry_interval".into(), json!(expiry));
    }
    if let Some(content_type) = &p.content_type {
        properties.insert("content_type".into(), json!(&**content_type));
    }
    if let Some(topic) = &p.response_topic {
        properties.insert("response_topic".into(), json!(&**topic));
    }
    if let Some(data) = &p.correlation_data {
        properties.insert("correlation_data".into(), bytes_json(data));
    }
    if !p.user_properties.is_empty() {
        let pairs: Vec<Value> = p
            .user_properties
            .iter()
            .map(|u| json!([&*u.name, &*u.value]))
            .collect();
        properties.insert("user_properties".into(), Value::Array(pairs));
    }
    if !p.subscription_identifiers.is_empty() {
        let ids: Vec<Value> = p
            .subscription_identifiers
            .iter()
            .map(|id| json!(id.get()))
            .collect();
        properties.insert("subscription_identifiers".into(), Value::Array(ids));
    }
    json!({
        "topic": &*publish.topic,
        "qos": qos_number(publish.qos),
        "retain": publish.retain,
        "properties": properties,
        "payload": bytes_json(&publish.payload),
    })
}

/// [`message_json`] as one line, keys in a reading order: topic, qos, retain, properties,
/// payload.
pub(crate) fn message_json_line(publish: &Publish) -> String {
    let value = message_json(publish);
    let mut line = String::from("{");
    for (i, key) in ["topic", "qos", "retain", "properties", "payload"]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            line.push(',');
        }
        let _ = write!(line, "\"{key}\":{}", value[key]);
    }
    line.push('}');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_for_utf8_and_a_hex_dump_otherwise() {
        assert_eq!(render("héllo".as_bytes(), Format::Auto), "héllo");
        assert_eq!(
            render(&[0xde, 0xad, 0xbe, 0xef], Format::Auto),
            "00000000  de ad be ef                                       |....|"
        );
        assert_eq!(render(&[0xff, b'a'], Format::Text), "\u{fffd}a");
        assert_eq!(render(b"", Format::Binary), "");
    }

    #[test]
    fn hex_dump_lines() {
        let bytes: Vec<u8> = (0x30..0x30 + 20).collect();
        assert_eq!(
            hex_dump(&bytes),
            "00000000  30 31 32 33 34 35 36 37  38 39 3a 3b 3c 3d 3e 3f  |0123456789:;<=>?|\n\
             00000010  40 41 42 43                                       |@ABC|"
        );
    }

    #[test]
    fn json_payloads() {
        assert_eq!(render(b"hi", Format::Json), r#""hi""#);
        assert_eq!(render(&[0, 0xff], Format::Json), r#"{"hex":"00ff"}"#);
        let mut publish = Publish::new("a/b".parse().expect("valid topic name"), vec![0xffu8]);
        publish.qos = QoS::AtLeastOnce;
        publish.retain = true;
        publish
            .properties
            .user_properties
            .push(mqtt_tokio::UserProperty::new("k", "v"));
        publish.properties.content_type = Some("text/plain".into());
        assert_eq!(
            message_json_line(&publish),
            r#"{"topic":"a/b","qos":1,"retain":true,"properties":{"content_type":"text/plain","user_properties":[["k","v"]]},"payload":{"hex":"ff"}}"#
        );
        assert_eq!(
            message_json(&publish).to_string(),
            r#"{"payload":{"hex":"ff"},"properties":{"content_type":"text/plain","user_properties":[["k","v"]]},"qos":1,"retain":true,"topic":"a/b"}"#
        );
    }
}
