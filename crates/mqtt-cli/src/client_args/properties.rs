//! `-D COMMAND IDENTIFIER VALUE`: MQTT 5.0 properties by name, as mosquitto_pub, mosquitto_sub
//! and mosquitto_rr take them (mosquitto's `client/client_props.c`).
//!
//! Commands and identifiers are those of mosquitto, matched without regard to case as there;
//! identifiers are the specification's names with `-` between words. What a property may go in
//! follows the specification, as mosquitto's `mosquitto_property_check_command` does. Unlike
//! mosquitto, a number that does not parse, or a value the protocol forbids (a Receive Maximum
//! of 0, a Payload Format Indicator of 2), is an error rather than sent as it comes out.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use mqtt_tokio::{
    ClientOptions, PayloadFormat, PublishProperties, SubscribeProperties, SubscriptionId,
    UserProperty, Will,
};

/// A packet that `-D` puts properties in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packet {
    /// CONNECT.
    Connect,
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// DISCONNECT.
    Disconnect,
    /// The will message in CONNECT.
    Will,
}

use Packet::{Connect, Disconnect, Publish, Subscribe, Unsubscribe};

impl Packet {
    /// The packets named as mosquitto names them, and those it names but cannot carry
    /// properties from the command line.
    fn parse(name: &str) -> Result<Self, String> {
        let upper = name.to_ascii_uppercase();
        Ok(match upper.as_str() {
            "CONNECT" => Connect,
            "PUBLISH" => Publish,
            "SUBSCRIBE" => Subscribe,
            "UNSUBSCRIBE" => Unsubscribe,
            "DISCONNECT" => Disconnect,
            "WILL" => Packet::Will,
            "CONNACK" | "PUBACK" | "PUBREC" | "PUBREL" | "PUBCOMP" | "SUBACK" | "UNSUBACK"
            | "AUTH" => {
                return Err(format!(
                    "properties of {upper} are not supported (only of CONNECT, PUBLISH, \
                     SUBSCRIBE, UNSUBSCRIBE, DISCONNECT and WILL)"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown command {name:?} (use CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, \
                     DISCONNECT or WILL)"
                ));
            }
        })
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connect => "CONNECT",
            Publish => "PUBLISH",
            Subscribe => "SUBSCRIBE",
            Unsubscribe => "UNSUBSCRIBE",
            Disconnect => "DISCONNECT",
            Packet::Will => "WILL",
        })
    }
}

/// Every identifier mosquitto knows, with the packets a client may put it in: none for those
/// only a server sends.
const IDENTIFIERS: &[(&str, &[Packet])] = &[
    ("payload-format-indicator", &[Publish, Packet::Will]),
    ("message-expiry-interval", &[Publish, Packet::Will]),
    ("content-type", &[Publish, Packet::Will]),
    ("response-topic", &[Publish, Packet::Will]),
    ("correlation-data", &[Publish, Packet::Will]),
    // On PUBLISH only from the server (MQTT-3.3.4-6).
    ("subscription-identifier", &[Subscribe]),
    ("session-expiry-interval", &[Connect, Disconnect]),
    ("authentication-method", &[Connect]),
    ("authentication-data", &[Connect]),
    ("request-problem-information", &[Connect]),
    ("request-response-information", &[Connect]),
    ("will-delay-interval", &[Packet::Will]),
    ("receive-maximum", &[Connect]),
    ("topic-alias-maximum", &[Connect]),
    ("maximum-packet-size", &[Connect]),
    ("topic-alias", &[Publish]),
    ("reason-string", &[Disconnect]),
    ("server-reference", &[Disconnect]),
    (
        "user-property",
        &[
            Connect,
            Publish,
            Subscribe,
            Unsubscribe,
            Disconnect,
            Packet::Will,
        ],
    ),
    ("assigned-client-identifier", &[]),
    ("server-keep-alive", &[]),
    ("response-information", &[]),
    ("maximum-qos", &[]),
    ("retain-available", &[]),
    ("wildcard-subscription-available", &[]),
    ("subscription-identifier-available", &[]),
    ("shared-subscription-available", &[]),
];

/// A property and its value: each variant is the identifier of the same name, its value
/// checked as the specification requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    PayloadFormatIndicator(PayloadFormat),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AuthenticationMethod(String),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    RequestResponseInformation(bool),
    WillDelayInterval(u32),
    ReceiveMaximum(NonZeroU16),
    TopicAliasMaximum(u16),
    MaximumPacketSize(NonZeroU32),
    ReasonString(String),
    ServerReference(String),
    UserProperty(String, String),
}

/// One `-D`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Property {
    /// The packet it goes in.
    pub(crate) packet: Packet,
    /// The identifier, in lower case.
    pub(crate) name: &'static str,
    /// The value.
    pub(crate) value: Value,
    /// `-D COMMAND IDENTIFIER` as given, for messages.
    pub(crate) given: String,
}

impl Property {
    /// Parses the values of one `-D`: `COMMAND IDENTIFIER VALUE`, or
    /// `COMMAND user-property NAME VALUE`.
    pub(crate) fn parse(values: &[String]) -> Result<Self, String> {
        let [command, identifier, rest @ ..] = values else {
            return Err("-D needs COMMAND IDENTIFIER VALUE".into());
        };
        let packet = Packet::parse(command).map_err(|error| format!("-D {command}: {error}"))?;
        let given = format!("-D {command} {identifier}");
        let lower = identifier.to_ascii_lowercase();
        let Some(&(name, packets)) = IDENTIFIERS.iter().find(|(name, _)| *name == lower) else {
            return Err(format!("{given}: unknown property {identifier:?}"));
        };
        if !packets.contains(&packet) {
            let only = match packets {
                [] => "only a server sends it".to_owned(),
                [one] => format!("only in {one}"),
                many => {
                    let names: Vec<String> = many.iter().map(Packet::to_string).collect();
                    format!("only in {}", names.join(", "))
                }
            };
            return Err(format!(
                "{given}: {name} is not allowed in {packet} ({only})"
            ));
        }
        if name == "topic-alias" {
            return Err(format!(
                "{given}: not supported: the client assigns topic aliases itself"
            ));
        }
        let value = match (name, rest) {
            ("user-property", [key, value]) => Value::UserProperty(key.clone(), value.clone()),
            ("user-property", _) => return Err(format!("{given}: takes NAME VALUE")),
            (_, [value]) => {
                parse_value(name, value).map_err(|error| format!("{given} {value}: {error}"))?
            }
            (_, values) => {
                return Err(format!("{given}: takes one VALUE, not {}", values.len()));
            }
        };
        Ok(Property {
            packet,
            name,
            value,
            given,
        })
    }
}

/// The value of property `name` (in lower case, one the client may send).
fn parse_value(name: &str, text: &str) -> Result<Value, String> {
    Ok(match name {
        "payload-format-indicator" => Value::PayloadFormatIndicator(if flag(text)? {
            PayloadFormat::Utf8
        } else {
            PayloadFormat::Unspecified
        }),
        "message-expiry-interval" => Value::MessageExpiryInterval(seconds(text)?),
        "content-type" => Value::ContentType(text.to_owned()),
        "response-topic" => {
            crate::client_args::topic_name(text).map_err(|error| error.to_string())?;
            Value::ResponseTopic(text.to_owned())
        }
        "correlation-data" => Value::CorrelationData(Bytes::from(text.to_owned())),
        "subscription-identifier" => Value::SubscriptionIdentifier(
            text.parse()
                .ok()
                .filter(|id| (1..=268_435_455).contains(id))
                .ok_or("must be a number from 1 to 268435455")?,
        ),
        "session-expiry-interval" => Value::SessionExpiryInterval(seconds(text)?),
        "authentication-method" => Value::AuthenticationMethod(text.to_owned()),
        "authentication-data" => Value::AuthenticationData(Bytes::from(text.to_owned())),
        "request-problem-information" => Value::RequestProblemInformation(flag(text)?),
        "request-response-information" => Value::RequestResponseInformation(flag(text)?),
        "will-delay-interval" => Value::WillDelayInterval(seconds(text)?),
        "receive-maximum" => Value::ReceiveMaximum(
            text.parse()
                .map_err(|_| "must be a number from 1 to 65535")?,
        ),
        "topic-alias-maximum" => Value::TopicAliasMaximum(
            text.parse()
                .map_err(|_| "must be a number from 0 to 65535")?,
        ),
        "maximum-packet-size" => Value::MaximumPacketSize(
            text.parse()
                .map_err(|_| "must be a number from 1 to 4294967295")?,
        ),
        "reason-string" => Value::ReasonString(text.to_owned()),
        "server-reference" => Value::ServerReference(text.to_owned()),
        _ => return Err(format!("{name} cannot be sent")),
    })
}

/// 0 or 1.
fn flag(text: &str) -> Result<bool, String> {
    match text {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err("must be 0 or 1".into()),
    }
}

/// A number of seconds, 0 to 4294967295.
fn seconds(text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| "must be a number of seconds from 0 to 4294967295".into())
}

/// Every `-D` of a command line, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Properties(Vec<Property>);

impl Properties {
    /// Parses each `-D` occurrence; a property other than a user property given twice for the
    /// same packet is an error, as in mosquitto.
    pub(crate) fn parse(occurrences: &[Vec<String>]) -> Result<Self, String> {
        let mut properties: Vec<Property> = Vec::with_capacity(occurrences.len());
        for values in occurrences {
            let property = Property::parse(values)?;
            let twice = properties.iter().any(|earlier| {
                earlier.packet == property.packet
                    && earlier.name == property.name
                    && property.name != "user-property"
            });
            if twice {
                return Err(format!("{}: given twice", property.given));
            }
            properties.push(property);
        }
        Ok(Properties(properties))
    }

    /// All of them, in the order given.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Property> {
        self.0.iter()
    }

    /// Those for `packet`, in the order given.
    pub(crate) fn of(&self, packet: Packet) -> impl Iterator<Item = &Property> {
        self.0.iter().filter(move |p| p.packet == packet)
    }

    /// The session expiry interval of `-D packet session-expiry-interval`, if given.
    pub(crate) fn session_expiry(&self, packet: Packet) -> Option<u32> {
        self.of(packet).find_map(|p| match p.value {
            Value::SessionExpiryInterval(secs) => Some(secs),
            _ => None,
        })
    }

    /// Puts the CONNECT properties into `options`. A Maximum Packet Size is also the limit the
    /// client enforces on what it receives.
    pub(crate) fn apply_connect(&self, options: &mut ClientOptions) {
        let config = options.config_mut();
        for property in self.of(Connect) {
            let c = &mut config.properties;
            match &property.value {
                Value::SessionExpiryInterval(secs) => c.session_expiry_interval = Some(*secs),
                Value::ReceiveMaximum(n) => c.receive_maximum = Some(*n),
                Value::TopicAliasMaximum(n) => c.topic_alias_maximum = Some(*n),
                Value::MaximumPacketSize(n) => {
                    c.maximum_packet_size = Some(*n);
                    config.max_packet_size = n.get();
                }
                Value::RequestResponseInformation(on) => c.request_response_information = Some(*on),
                Value::RequestProblemInformation(on) => c.request_problem_information = Some(*on),
                Value::AuthenticationMethod(method) => {
                    c.authentication_method = Some(method.clone().into());
                }
                Value::AuthenticationData(data) => c.authentication_data = Some(data.clone()),
                Value::UserProperty(name, value) => {
                    c.user_properties
                        .push(UserProperty::new(name.clone(), value.clone()));
                }
                // `Property::parse` lets no other property into CONNECT.
                _ => {}
            }
        }
    }

    /// Adds the PUBLISH properties to `p`. A property that `p` already has (from a flag such
    /// as `--content-type`) is an error.
    pub(crate) fn apply_publish(&self, p: &mut PublishProperties) -> Result<(), String> {
        for property in self.of(Publish) {
            let fresh = match &property.value {
                Value::PayloadFormatIndicator(format) => {
                    set_once(&mut p.payload_format_indicator, *format)
                }
                Value::MessageExpiryInterval(secs) => {
                    set_once(&mut p.message_expiry_interval, *secs)
                }
                Value::ContentType(text) => set_once(&mut p.content_type, text.clone().into()),
                Value::ResponseTopic(topic) => {
                    set_once(&mut p.response_topic, topic.clone().into())
                }
                Value::CorrelationData(data) => set_once(&mut p.correlation_data, data.clone()),
                Value::UserProperty(name, value) => {
                    p.user_properties
                        .push(UserProperty::new(name.clone(), value.clone()));
                    true
                }
                // `Property::parse` lets no other property into PUBLISH.
                _ => true,
            };
            if !fresh {
                return Err(format!("{}: the message already has one", property.given));
            }
        }
        Ok(())
    }

    /// The SUBSCRIBE properties.
    pub(crate) fn subscribe(&self) -> SubscribeProperties {
        let mut properties = SubscribeProperties::default();
        for property in self.of(Subscribe) {
            match &property.value {
                Value::SubscriptionIdentifier(id) => {
                    properties.subscription_identifier = SubscriptionId::new(*id);
                }
                Value::UserProperty(name, value) => properties
                    .user_properties
                    .push(UserProperty::new(name.clone(), value.clone())),
                // `Property::parse` lets no other property into SUBSCRIBE.
                _ => {}
            }
        }
        properties
    }

    /// Puts the WILL properties into `will`.
    pub(crate) fn apply_will(&self, will: &mut Will) {
        let w = &mut will.properties;
        for property in self.of(Packet::Will) {
            match &property.value {
                Value::WillDelayInterval(secs) => w.will_delay_interval = Some(*secs),
                Value::PayloadFormatIndicator(format) => w.payload_format_indicator = Some(*format),
                Value::MessageExpiryInterval(secs) => w.message_expiry_interval = Some(*secs),
                Value::ContentType(text) => w.content_type = Some(text.clone().into()),
                Value::ResponseTopic(topic) => w.response_topic = Some(topic.clone().into()),
                Value::CorrelationData(data) => w.correlation_data = Some(data.clone()),
                Value::UserProperty(name, value) => {
                    w.user_properties
                        .push(UserProperty::new(name.clone(), value.clone()));
                }
                // `Property::parse` lets no other property into WILL.
                _ => {}
            }
        }
    }
}

/// Sets `slot` unless it is already set; whether it did.
fn set_once<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(value);
    true
}

/// The long help of `-D`.
pub(crate) const PROPERTIES_HELP: &str = "\
PROPERTIES (-D COMMAND IDENTIFIER VALUE, MQTT 5.0; names as in mosquitto, any case):
  CONNECT      session-expiry-interval SECS (or use -x), receive-maximum 1-65535,
               maximum-packet-size BYTES, topic-alias-maximum 0-65535,
               request-response-information 0|1, request-problem-information 0|1,
               authentication-method TEXT, authentication-data TEXT, user-property NAME VALUE
  PUBLISH      payload-format-indicator 0|1, message-expiry-interval SECS, content-type TEXT,
               response-topic TOPIC, correlation-data TEXT, user-property NAME VALUE
  WILL         the PUBLISH ones, and will-delay-interval SECS (needs --will-topic)
  DISCONNECT   session-expiry-interval SECS (not above 0 if it was 0 at CONNECT),
               reason-string TEXT, server-reference TEXT, user-property NAME VALUE
  SUBSCRIBE    subscription-identifier 1-268435455, user-property NAME VALUE
Each command takes those of the packets it sends. A property given twice (user-property
apart), on the wrong packet, or with -V 311 is an error.";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Property, String> {
        let values: Vec<String> = args.split(' ').map(str::to_owned).collect();
        Property::parse(&values)
    }

    fn value(args: &str) -> Value {
        parse(args)
            .unwrap_or_else(|error| panic!("{args}: {error}"))
            .value
    }

    #[test]
    fn names_and_values() {
        assert_eq!(
            value("PUBLISH user-property a b"),
            Value::UserProperty("a".into(), "b".into())
        );
        assert_eq!(
            value("connect Session-Expiry-Interval 60"),
            Value::SessionExpiryInterval(60)
        );
        assert_eq!(
            value("PUBLISH payload-format-indicator 1"),
            Value::PayloadFormatIndicator(PayloadFormat::Utf8)
        );
        assert_eq!(
            value("PUBLISH correlation-data req-1"),
            Value::CorrelationData(Bytes::from_static(b"req-1"))
        );
        assert_eq!(
            value("CONNECT receive-maximum 65535"),
            Value::ReceiveMaximum(NonZeroU16::MAX)
        );
        assert_eq!(
            value("CONNECT maximum-packet-size 4294967295"),
            Value::MaximumPacketSize(NonZeroU32::MAX)
        );
        assert_eq!(
            value("WILL will-delay-interval 5"),
            Value::WillDelayInterval(5)
        );
        assert_eq!(
            value("SUBSCRIBE subscription-identifier 268435455"),
            Value::SubscriptionIdentifier(268_435_455)
        );
        assert_eq!(
            value("DISCONNECT reason-string bye"),
            Value::ReasonString("bye".into())
        );
        let property = parse("Publish Content-Type text/plain").unwrap();
        assert_eq!(
            (property.packet, property.name, property.given.as_str()),
            (Publish, "content-type", "-D Publish Content-Type")
        );
    }

    #[test]
    fn errors_name_the_property() {
        for (args, expected) in [
            ("FOO content-type x", "-D FOO: unknown command \"FOO\""),
            (
                "PUBACK reason-string x",
                "-D PUBACK: properties of PUBACK are not supported",
            ),
            (
                "PUBLISH no-such-thing 1",
                "-D PUBLISH no-such-thing: unknown property",
            ),
            (
                "CONNECT content-type x",
                "-D CONNECT content-type: content-type is not allowed in CONNECT (only in PUBLISH, WILL)",
            ),
            (
                "PUBLISH session-expiry-interval 5",
                "is not allowed in PUBLISH (only in CONNECT, DISCONNECT)",
            ),
            (
                "PUBLISH subscription-identifier 1",
                "is not allowed in PUBLISH (only in SUBSCRIBE)",
            ),
            (
                "CONNECT maximum-qos 1",
                "maximum-qos is not allowed in CONNECT (only a server sends it)",
            ),
            ("PUBLISH topic-alias 1", "assigns topic aliases itself"),
            (
                "CONNECT receive-maximum 0",
                "-D CONNECT receive-maximum 0: must be a number from 1",
            ),
            (
                "CONNECT receive-maximum 65536",
                "must be a number from 1 to 65535",
            ),
            (
                "PUBLISH message-expiry-interval -1",
                "must be a number of seconds",
            ),
            (
                "PUBLISH message-expiry-interval ten",
                "must be a number of seconds",
            ),
            ("PUBLISH payload-format-indicator 2", "must be 0 or 1"),
            ("SUBSCRIBE subscription-identifier 0", "from 1 to 268435455"),
            (
                "PUBLISH response-topic a/#",
                "-D PUBLISH response-topic a/#: invalid topic",
            ),
            (
                "PUBLISH user-property a",
                "-D PUBLISH user-property: takes NAME VALUE",
            ),
            (
                "PUBLISH content-type a b",
                "-D PUBLISH content-type: takes one VALUE, not 2",
            ),
            ("PUBLISH", "-D needs COMMAND IDENTIFIER VALUE"),
        ] {
            let error = parse(args).expect_err(args);
            assert!(error.contains(expected), "{args}: {error}");
            assert!(!error.contains('\n'), "{args}: {error}");
        }
    }

    #[test]
    fn twice_is_an_error_except_for_user_properties() {
        let occurrences = |list: &[&str]| -> Vec<Vec<String>> {
            list.iter()
                .map(|args| args.split(' ').map(str::to_owned).collect())
                .collect()
        };
        let properties = Properties::parse(&occurrences(&[
            "PUBLISH user-property a 1",
            "PUBLISH user-property a 2",
            "CONNECT session-expiry-interval 5",
            "DISCONNECT session-expiry-interval 0",
        ]))
        .unwrap();
        assert_eq!(properties.iter().count(), 4);
        assert_eq!(properties.session_expiry(Connect), Some(5));
        assert_eq!(properties.session_expiry(Disconnect), Some(0));
        let error = Properties::parse(&occurrences(&[
            "PUBLISH content-type a",
            "publish CONTENT-TYPE b",
        ]))
        .unwrap_err();
        assert_eq!(error, "-D publish CONTENT-TYPE: given twice");
    }

    #[test]
    fn applied_to_the_packets() {
        let occurrences: Vec<Vec<String>> = [
            "CONNECT session-expiry-interval 60",
            "CONNECT receive-maximum 5",
            "CONNECT maximum-packet-size 1000",
            "CONNECT user-property who me",
            "PUBLISH user-property a b",
            "PUBLISH content-type text/plain",
            "WILL will-delay-interval 3",
            "WILL user-property w x",
        ]
        .iter()
        .map(|args| args.split(' ').map(str::to_owned).collect())
        .collect();
        let properties = Properties::parse(&occurrences).unwrap();

        let mut options = ClientOptions::new("localhost", 1883);
        properties.apply_connect(&mut options);
        let config = options.config_mut();
        assert_eq!(config.properties.session_expiry_interval, Some(60));
        assert_eq!(config.properties.receive_maximum, NonZeroU16::new(5));
        assert_eq!(config.properties.maximum_packet_size, NonZeroU32::new(1000));
        assert_eq!(config.max_packet_size, 1000);
        assert_eq!(
            config.properties.user_properties,
            [UserProperty::new("who", "me")]
        );

        let mut publish = PublishProperties {
            user_properties: vec![UserProperty::new("flag", "first")],
            ..PublishProperties::default()
        };
        properties.apply_publish(&mut publish).unwrap();
        assert_eq!(
            publish.user_properties,
            [
                UserProperty::new("flag", "first"),
                UserProperty::new("a", "b")
            ]
        );
        assert_eq!(publish.content_type.as_deref(), Some("text/plain"));
        // Already set by a flag: refused rather than replaced.
        let error = properties.apply_publish(&mut publish).unwrap_err();
        assert_eq!(
            error,
            "-D PUBLISH content-type: the message already has one"
        );

        let topic = "last/words".parse().unwrap();
        let mut will = Will::new(topic, "gone", mqtt_tokio::QoS::AtMostOnce);
        properties.apply_will(&mut will);
        assert_eq!(will.properties.will_delay_interval, Some(3));
        assert_eq!(
            will.properties.user_properties,
            [UserProperty::new("w", "x")]
        );
    }
}
