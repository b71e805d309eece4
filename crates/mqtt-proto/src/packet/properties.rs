//! MQTT 5.0 properties (section 2.2.2), one typed struct per packet that carries them.
//!
//! Each struct is declared once, in the table of [`properties!`] below, which generates the field
//! declarations, the decoder (unknown, misplaced and repeated properties rejected) and the encoder.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::wire::{
    MAX_VARIABLE_BYTE_INTEGER, Put, Reader, field_len, put_binary, put_varint, string_len,
    varint_len,
};
use crate::codec::{DecodeError, EncodeError};
use crate::packet::QoS;

/// Property identifiers (table 2-4).
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

    /// Every identifier MQTT 5.0 defines.
    pub(crate) const ALL: [u8; 27] = [
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_IDENTIFIER,
        SESSION_EXPIRY_INTERVAL,
        ASSIGNED_CLIENT_IDENTIFIER,
        SERVER_KEEP_ALIVE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REQUEST_PROBLEM_INFORMATION,
        WILL_DELAY_INTERVAL,
        REQUEST_RESPONSE_INFORMATION,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        REASON_STRING,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        TOPIC_ALIAS,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
    ];
}

/// A User Property (0x26): a name-value pair. A packet may carry any number, repeats included,
/// and their order is kept (section 3.1.2.11.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// The name.
    pub name: ByteString,
    /// The value.
    pub value: ByteString,
}

impl UserProperty {
    /// A user property from anything that converts to strings.
    pub fn new(name: impl Into<ByteString>, value: impl Into<ByteString>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The Payload Format Indicator (0x01) of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    #[default]
    Unspecified,
    /// 1: UTF-8 encoded character data.
    Utf8,
}

/// A Subscription Identifier (0x0B): 1 to 268,435,455.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(NonZeroU32);

impl SubscriptionId {
    /// The largest subscription identifier, the limit of a Variable Byte Integer.
    pub const MAX: u32 = MAX_VARIABLE_BYTE_INTEGER;

    /// A subscription identifier, if `value` is in 1..=268,435,455.
    pub fn new(value: u32) -> Option<Self> {
        if value > Self::MAX {
            return None;
        }
        NonZeroU32::new(value).map(SubscriptionId)
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

/// How one property value is read and written; `id` lets range errors name the property.
pub(crate) trait PropertyValue: Sized {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError>;
    /// Length of the value on the wire, identifier excluded, checked against what the wire
    /// can carry.
    fn encoded_len(&self) -> Result<usize, EncodeError>;
    /// [`Self::encoded_len`] of a value it accepted, without the checks.
    fn wire_len(&self) -> usize;
    fn write(&self, buf: &mut BytesMut);
}

impl PropertyValue for bool {
    #[inline]
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        1
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(u8::from(*self));
    }
}

impl PropertyValue for PayloadFormat {
    #[inline]
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        Ok(if bool::read(r, id)? {
            PayloadFormat::Utf8
        } else {
            PayloadFormat::Unspecified
        })
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        1
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(matches!(self, PayloadFormat::Utf8).into());
    }
}

/// Maximum QoS (0x24) may only be 0 or 1 (section 3.2.2.3.4).
impl PropertyValue for QoS {
    #[inline]
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        if *self == QoS::ExactlyOnce {
            return Err(EncodeError::PropertyOutOfRange(id::MAXIMUM_QOS));
        }
        Ok(1)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        1
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(self.as_u8());
    }
}

impl PropertyValue for u16 {
    #[inline]
    fn read(r: &mut Reader, _id: u8) -> Result<Self, DecodeError> {
        r.u16()
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(2)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        2
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u16(*self);
    }
}

impl PropertyValue for NonZeroU16 {
    #[inline]
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        NonZeroU16::new(r.u16()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(2)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        2
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u16(self.get());
    }
}

impl PropertyValue for u32 {
    #[inline]
    fn read(r: &mut Reader, _id: u8) -> Result<Self, DecodeError> {
        r.u32()
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        4
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u32(*self);
    }
}

impl PropertyValue for NonZeroU32 {
    #[inline]
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        NonZeroU32::new(r.u32()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        4
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u32(self.get());
    }
}

impl PropertyValue for SubscriptionId {
    #[inline]
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError> {
        SubscriptionId::new(r.varint()?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(varint_len(self.get() as usize))
    }
    #[inline]
    fn wire_len(&self) -> usize {
        varint_len(self.get() as usize)
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.get() as usize);
    }
}

impl PropertyValue for ByteString {
    #[inline]
    fn read(r: &mut Reader, _id: u8) -> Result<Self, DecodeError> {
        r.string()
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        string_len(self)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        2 + self.len()
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        put_binary(buf, self.as_bytes());
    }
}

impl PropertyValue for Bytes {
    #[inline]
    fn read(r: &mut Reader, _id: u8) -> Result<Self, DecodeError> {
        r.binary()
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        field_len(self)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        2 + self.len()
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        put_binary(buf, self);
    }
}

impl PropertyValue for UserProperty {
    #[inline]
    fn read(r: &mut Reader, _id: u8) -> Result<Self, DecodeError> {
        Ok(UserProperty {
            name: r.string()?,
            value: r.string()?,
        })
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(string_len(&self.name)? + string_len(&self.value)?)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        4 + self.name.len() + self.value.len()
    }
    #[inline]
    fn write(&self, buf: &mut BytesMut) {
        put_binary(buf, self.name.as_bytes());
        put_binary(buf, self.value.as_bytes());
    }
}

/// Where a property's values are kept: `Option` for properties that may appear once, `Vec` for
/// those that may repeat (User Property; Subscription Identifier in PUBLISH).
pub(crate) trait Slot {
    /// The value of a property that is not set.
    const UNSET: Self;
    fn read_into(&mut self, r: &mut Reader, id: u8) -> Result<(), DecodeError>;
    fn encoded_len(&self) -> Result<usize, EncodeError>;
    /// [`Self::encoded_len`] of values it accepted, without the checks.
    fn wire_len(&self) -> usize;
    fn write(&self, id: u8, buf: &mut BytesMut);
    fn is_unset(&self) -> bool;
}

impl<T: PropertyValue> Slot for Option<T> {
    const UNSET: Self = None;
    #[inline]
    fn read_into(&mut self, r: &mut Reader, id: u8) -> Result<(), DecodeError> {
        if self.is_some() {
            return Err(DecodeError::DuplicateProperty(id));
        }
        *self = Some(T::read(r, id)?);
        Ok(())
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        match self {
            Some(value) => Ok(1 + value.encoded_len()?),
            None => Ok(0),
        }
    }
    #[inline]
    fn wire_len(&self) -> usize {
        self.as_ref().map_or(0, |value| 1 + value.wire_len())
    }
    #[inline]
    fn write(&self, id: u8, buf: &mut BytesMut) {
        if let Some(value) = self {
            buf.put_u8(id);
            value.write(buf);
        }
    }
    #[inline]
    fn is_unset(&self) -> bool {
        self.is_none()
    }
}

impl<T: PropertyValue> Slot for Vec<T> {
    const UNSET: Self = Vec::new();
    #[inline]
    fn read_into(&mut self, r: &mut Reader, id: u8) -> Result<(), DecodeError> {
        self.push(T::read(r, id)?);
        Ok(())
    }
    #[inline]
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.iter()
            .try_fold(0, |sum, value| Ok(sum + 1 + value.encoded_len()?))
    }
    #[inline]
    fn wire_len(&self) -> usize {
        self.iter().map(|value| 1 + value.wire_len()).sum()
    }
    #[inline]
    fn write(&self, id: u8, buf: &mut BytesMut) {
        for value in self {
            buf.put_u8(id);
            value.write(buf);
        }
    }
    #[inline]
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

/// The error for a property identifier that this packet's table does not list.
fn not_allowed(r: &Reader, property: u32) -> DecodeError {
    match u8::try_from(property) {
        Ok(known) if id::ALL.contains(&known) => DecodeError::PropertyNotAllowed {
            id: known,
            packet: r.packet(),
        },
        // Identifiers above 0xFF cannot be named in a byte; report them as 0xFF.
        _ => DecodeError::UnknownProperty(u8::try_from(property).unwrap_or(u8::MAX)),
    }
}

mod sealed {
    pub trait Sealed {}
}

/// One of the property structs of this module: what [`Boxed`] can hold.
pub trait PropertySet: sealed::Sealed + Default + 'static {
    /// The set with no property in it, shared.
    fn empty() -> &'static Self;
    /// True when no property is set.
    fn is_empty(&self) -> bool;
}

/// A property set kept behind a pointer, which is allocated only when a property is set.
///
/// Most messages carry no properties. A [`Publish`](super::Publish) holding its 160 bytes of
/// [`PublishProperties`] inline would be 232 bytes, copied at every move on its way through a
/// client's queues or a broker's fan-out; with `Boxed` properties it is 80, and a copy of a
/// message without properties allocates nothing.
///
/// Reading goes through [`Deref`](std::ops::Deref): an empty `Boxed` reads as the empty set,
/// without allocating. Writing through [`DerefMut`](std::ops::DerefMut) allocates the set on
/// first use, so fields are read and written as those of a plain struct:
///
/// ```
/// use mqtt_proto::packet::{PublishProperties, Publish};
///
/// let mut publish = Publish::new("a/b".parse()?, "hello");
/// assert!(publish.properties.content_type.is_none()); // reads the shared empty set
/// assert!(publish.properties.get().is_none()); // nothing was allocated
/// publish.properties.content_type = Some("text/plain".into()); // allocates, once
/// publish.properties = PublishProperties::default().into(); // empty again, nothing held
/// assert!(publish.properties.get().is_none());
/// # Ok::<(), mqtt_proto::topic::TopicError>(())
/// ```
///
/// Two `Boxed` are equal when the sets they read as are, allocated or not. A clone of an empty
/// set allocates nothing, even when the original holds an allocation whose properties were
/// cleared (a broker clears the Topic Alias of each message it receives, then copies the
/// message for every subscriber).
pub struct Boxed<T>(Option<Box<T>>);

impl<T: PropertySet + Clone> Clone for Boxed<T> {
    #[inline]
    fn clone(&self) -> Self {
        match &self.0 {
            Some(set) if !set.is_empty() => Self(Some(set.clone())),
            _ => Self(None),
        }
    }
}

impl<T> Boxed<T> {
    /// The empty set, not allocated.
    pub const fn new() -> Self {
        Self(None)
    }

    /// The set, if one is allocated. `None` means empty; `Some` may also be empty, when its
    /// properties were set and cleared again.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// The set, if one is allocated, to change without allocating one: clearing a property
    /// of a message that has none costs nothing.
    #[inline]
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }

    /// The allocated set, if any, leaving `self` empty and not allocated.
    #[inline]
    pub fn take(&mut self) -> Option<Box<T>> {
        self.0.take()
    }
}

impl<T: PropertySet> Boxed<T> {
    /// The set, moved out of its allocation (the empty set if there is none).
    pub fn into_inner(self) -> T {
        self.0.map(|set| *set).unwrap_or_default()
    }
}

impl<T> Default for Boxed<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: PropertySet> std::ops::Deref for Boxed<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match &self.0 {
            Some(set) => set,
            None => T::empty(),
        }
    }
}

impl<T: PropertySet> std::ops::DerefMut for Boxed<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_default()
    }
}

impl<T: PropertySet> From<T> for Boxed<T> {
    /// Boxes `set`, unless it is empty.
    fn from(set: T) -> Self {
        Self((!set.is_empty()).then(|| Box::new(set)))
    }
}

impl<T: PropertySet> From<Box<T>> for Boxed<T> {
    fn from(set: Box<T>) -> Self {
        Self(Some(set))
    }
}

impl<T: PropertySet + PartialEq> PartialEq for Boxed<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: PropertySet + Eq> Eq for Boxed<T> {}

impl<T: PropertySet + std::fmt::Debug> std::fmt::Debug for Boxed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// Declares a property struct and its wire form, each field with its identifier.
macro_rules! properties {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident: $slot:ty = $id:path, )*
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $slot, )*
        }

        impl $name {
            /// No property set.
            pub const EMPTY: Self = Self { $( $field: <$slot as Slot>::UNSET, )* };

            /// True when no property is set: the block encodes as a single zero byte.
            #[inline]
            pub fn is_empty(&self) -> bool {
                true $(&& Slot::is_unset(&self.$field))*
            }

            /// Reads a property block: its length, then the properties.
            // PUBLISH, CONNECT and the will read theirs in place with `read_into`; the other
            // packets use this.
            #[allow(dead_code)]
            pub(crate) fn read(r: &mut Reader) -> Result<Self, DecodeError> {
                let mut properties = Self::default();
                properties.read_into(r)?;
                Ok(properties)
            }

            /// [`Self::read`] into `self`, which must be empty: a PUBLISH or CONNECT fills its
            /// boxed properties in place rather than moving a struct of up to 160 bytes.
            pub(crate) fn read_into(&mut self, r: &mut Reader) -> Result<(), DecodeError> {
                let len = r.varint()?;
                if len == 0 {
                    return Ok(());
                }
                let mut block = r.sub(len as usize)?;
                let properties = self;
                while !block.is_empty() {
                    // Identifiers are Variable Byte Integers, all of them one byte in 5.0.
                    let property = block.varint()?;
                    match property {
                        $( p if p == u32::from($id) => {
                            Slot::read_into(&mut properties.$field, &mut block, $id)?
                        } )*
                        other => return Err(not_allowed(&block, other)),
                    }
                }
                Ok(())
            }

            /// Length of the properties, without the block's length prefix.
            // Most packets carry none: that case is a test per field, inlined.
            #[inline]
            pub(crate) fn body_len(&self) -> Result<usize, EncodeError> {
                if self.is_empty() {
                    return Ok(0);
                }
                self.sum_len()
            }

            fn sum_len(&self) -> Result<usize, EncodeError> {
                Ok(0 $(+ Slot::encoded_len(&self.$field)?)*)
            }

            /// The wire length of the properties, without checks: what they weigh when a
            /// broker keeps them (queues count bytes).
            #[allow(dead_code)]
            pub(crate) fn weight(&self) -> usize {
                0 $(+ Slot::wire_len(&self.$field))*
            }

            /// Length of the whole block, length prefix included.
            // PUBLISH sizes its block in one pass with its other fields; every other packet
            // uses this.
            #[allow(dead_code)]
            #[inline]
            pub(crate) fn block_len(&self) -> Result<usize, EncodeError> {
                let body = self.body_len()?;
                Ok(varint_len(body) + body)
            }

            /// Writes the block, which [`Self::body_len`] must have accepted: encoding sizes
            /// (and checks) a packet before it writes anything, and this does not check again.
            // PUBLISH, which sizes its block with its other fields, uses `write_with_len`;
            // every other packet uses this.
            #[allow(dead_code)]
            #[inline]
            pub(crate) fn write(&self, buf: &mut BytesMut) {
                if self.is_empty() {
                    buf.put_u8(0);
                } else {
                    let body_len = 0 $(+ Slot::wire_len(&self.$field))*;
                    put_varint(buf, body_len);
                    self.write_all(buf);
                }
            }

            /// Writes the block; `body_len` is what [`Self::body_len`] returned.
            #[allow(dead_code)]
            #[inline]
            pub(crate) fn write_with_len(&self, body_len: usize, buf: &mut BytesMut) {
                put_varint(buf, body_len);
                // Every property takes at least two bytes: a length of 0 means there are none.
                if body_len != 0 {
                    self.write_all(buf);
                }
            }

            /// The properties, without the block's length.
            pub(crate) fn write_all(&self, buf: &mut BytesMut) {
                $( Slot::write(&self.$field, $id, buf); )*
            }
        }

        impl sealed::Sealed for $name {}

        impl PropertySet for $name {
            #[inline]
            fn empty() -> &'static Self {
                static EMPTY: $name = $name::EMPTY;
                &EMPTY
            }
            #[inline]
            fn is_empty(&self) -> bool {
                $name::is_empty(self)
            }
        }
    )*};
}

properties! {
    /// Properties of CONNECT (section 3.1.2.11).
    pub struct ConnectProperties {
        /// Session Expiry Interval (0x11), seconds; absent means 0: the session ends with the
        /// connection. `u32::MAX` means it never expires.
        session_expiry_interval: Option<u32> = id::SESSION_EXPIRY_INTERVAL,
        /// Receive Maximum (0x21): how many QoS 1 and 2 publishes the client will process at
        /// once; absent means 65,535.
        receive_maximum: Option<NonZeroU16> = id::RECEIVE_MAXIMUM,
        /// Maximum Packet Size (0x27) the client accepts; absent means no limit.
        maximum_packet_size: Option<NonZeroU32> = id::MAXIMUM_PACKET_SIZE,
        /// Topic Alias Maximum (0x22) the client accepts from the server; absent means 0.
        topic_alias_maximum: Option<u16> = id::TOPIC_ALIAS_MAXIMUM,
        /// Request Response Information (0x19): ask for Response Information in CONNACK.
        request_response_information: Option<bool> = id::REQUEST_RESPONSE_INFORMATION,
        /// Request Problem Information (0x17): whether reason strings and user properties may
        /// be sent on failures; absent means true.
        request_problem_information: Option<bool> = id::REQUEST_PROBLEM_INFORMATION,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
        /// Authentication Method (0x15) for enhanced authentication.
        authentication_method: Option<ByteString> = id::AUTHENTICATION_METHOD,
        /// Authentication Data (0x16).
        authentication_data: Option<Bytes> = id::AUTHENTICATION_DATA,
    }

    /// Will Properties in the CONNECT payload (section 3.1.3.2).
    pub struct WillProperties {
        /// Will Delay Interval (0x18), seconds before the will is published; absent means 0.
        will_delay_interval: Option<u32> = id::WILL_DELAY_INTERVAL,
        /// Payload Format Indicator (0x01).
        payload_format_indicator: Option<PayloadFormat> = id::PAYLOAD_FORMAT_INDICATOR,
        /// Message Expiry Interval (0x02), seconds.
        message_expiry_interval: Option<u32> = id::MESSAGE_EXPIRY_INTERVAL,
        /// Content Type (0x03).
        content_type: Option<ByteString> = id::CONTENT_TYPE,
        /// Response Topic (0x08).
        response_topic: Option<ByteString> = id::RESPONSE_TOPIC,
        /// Correlation Data (0x09).
        correlation_data: Option<Bytes> = id::CORRELATION_DATA,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
    }

    /// Properties of CONNACK (section 3.2.2.3).
    pub struct ConnAckProperties {
        /// Session Expiry Interval (0x11) the server uses instead of the client's.
        session_expiry_interval: Option<u32> = id::SESSION_EXPIRY_INTERVAL,
        /// Receive Maximum (0x21) of the server; absent means 65,535.
        receive_maximum: Option<NonZeroU16> = id::RECEIVE_MAXIMUM,
        /// Maximum QoS (0x24) the server supports: 0 or 1; absent means 2.
        maximum_qos: Option<QoS> = id::MAXIMUM_QOS,
        /// Retain Available (0x25); absent means true.
        retain_available: Option<bool> = id::RETAIN_AVAILABLE,
        /// Maximum Packet Size (0x27) the server accepts; absent means no limit.
        maximum_packet_size: Option<NonZeroU32> = id::MAXIMUM_PACKET_SIZE,
        /// Assigned Client Identifier (0x12), when the client sent an empty one.
        assigned_client_identifier: Option<ByteString> = id::ASSIGNED_CLIENT_IDENTIFIER,
        /// Topic Alias Maximum (0x22) the server accepts; absent means 0.
        topic_alias_maximum: Option<u16> = id::TOPIC_ALIAS_MAXIMUM,
        /// Reason String (0x1F).
        reason_string: Option<ByteString> = id::REASON_STRING,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
        /// Wildcard Subscription Available (0x28); absent means true.
        wildcard_subscription_available: Option<bool> = id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        /// Subscription Identifiers Available (0x29); absent means true.
        subscription_identifiers_available: Option<bool> = id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        /// Shared Subscription Available (0x2A); absent means true.
        shared_subscription_available: Option<bool> = id::SHARED_SUBSCRIPTION_AVAILABLE,
        /// Server Keep Alive (0x13), seconds, which the client must use instead of its own.
        server_keep_alive: Option<u16> = id::SERVER_KEEP_ALIVE,
        /// Response Information (0x1A), the basis of response topics.
        response_information: Option<ByteString> = id::RESPONSE_INFORMATION,
        /// Server Reference (0x1C): another server to use.
        server_reference: Option<ByteString> = id::SERVER_REFERENCE,
        /// Authentication Method (0x15).
        authentication_method: Option<ByteString> = id::AUTHENTICATION_METHOD,
        /// Authentication Data (0x16).
        authentication_data: Option<Bytes> = id::AUTHENTICATION_DATA,
    }

    /// Properties of PUBLISH (section 3.3.2.3).
    pub struct PublishProperties {
        /// Payload Format Indicator (0x01).
        payload_format_indicator: Option<PayloadFormat> = id::PAYLOAD_FORMAT_INDICATOR,
        /// Message Expiry Interval (0x02), seconds.
        message_expiry_interval: Option<u32> = id::MESSAGE_EXPIRY_INTERVAL,
        /// Topic Alias (0x23), 1 or more.
        topic_alias: Option<NonZeroU16> = id::TOPIC_ALIAS,
        /// Response Topic (0x08).
        response_topic: Option<ByteString> = id::RESPONSE_TOPIC,
        /// Correlation Data (0x09).
        correlation_data: Option<Bytes> = id::CORRELATION_DATA,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
        /// Subscription Identifiers (0x0B) of the subscriptions that matched, server to client.
        subscription_identifiers: Vec<SubscriptionId> = id::SUBSCRIPTION_IDENTIFIER,
        /// Content Type (0x03).
        content_type: Option<ByteString> = id::CONTENT_TYPE,
    }

    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    pub struct AckProperties {
        /// Reason String (0x1F).
        reason_string: Option<ByteString> = id::REASON_STRING,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
    }

    /// Properties of SUBSCRIBE (section 3.8.2.1).
    pub struct SubscribeProperties {
        /// Subscription Identifier (0x0B) to tag matching messages with.
        subscription_identifier: Option<SubscriptionId> = id::SUBSCRIPTION_IDENTIFIER,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
    }

    /// Properties of UNSUBSCRIBE (section 3.10.2.1).
    pub struct UnsubscribeProperties {
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
    }

    /// Properties of DISCONNECT (section 3.14.2.2).
    pub struct DisconnectProperties {
        /// Session Expiry Interval (0x11), client to server only.
        session_expiry_interval: Option<u32> = id::SESSION_EXPIRY_INTERVAL,
        /// Reason String (0x1F).
        reason_string: Option<ByteString> = id::REASON_STRING,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
        /// Server Reference (0x1C).
        server_reference: Option<ByteString> = id::SERVER_REFERENCE,
    }

    /// Properties of AUTH (section 3.15.2.2).
    pub struct AuthProperties {
        /// Authentication Method (0x15).
        authentication_method: Option<ByteString> = id::AUTHENTICATION_METHOD,
        /// Authentication Data (0x16).
        authentication_data: Option<Bytes> = id::AUTHENTICATION_DATA,
        /// Reason String (0x1F).
        reason_string: Option<ByteString> = id::REASON_STRING,
        /// User Properties (0x26), in order.
        user_properties: Vec<UserProperty> = id::USER_PROPERTY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_reads_empty_allocates_on_write_and_clones_empty_sets_for_free() {
        let mut boxed = Boxed::<PublishProperties>::new();
        assert!(boxed.is_empty() && boxed.get().is_none());
        assert_eq!(boxed.topic_alias, None);
        assert!(boxed.get().is_none(), "reading allocates nothing");
        boxed.topic_alias = NonZeroU16::new(3);
        assert_eq!(boxed.get().and_then(|p| p.topic_alias), NonZeroU16::new(3));
        let copy = boxed.clone();
        assert_eq!(copy.get().and_then(|p| p.topic_alias), NonZeroU16::new(3));
        // Cleared: still allocated, equal to an unallocated set, and cloned as one.
        if let Some(properties) = boxed.get_mut() {
            properties.topic_alias = None;
        }
        assert!(boxed.get().is_some());
        assert_eq!(boxed, Boxed::new());
        assert!(boxed.clone().get().is_none());
        assert_ne!(copy, boxed);
        // An empty set is not boxed; a set with a property is.
        assert!(Boxed::from(PublishProperties::EMPTY).get().is_none());
        let set = PublishProperties {
            content_type: Some("text/plain".into()),
            ..PublishProperties::default()
        };
        assert_eq!(Boxed::from(set.clone()).into_inner(), set);
        assert_eq!(
            Boxed::<PublishProperties>::new().into_inner(),
            PublishProperties::EMPTY
        );
    }
}
