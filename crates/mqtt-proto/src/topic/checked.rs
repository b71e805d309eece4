//! What [`TopicName`](super::TopicName) and [`TopicFilter`](super::TopicFilter) share: a string
//! that was checked when it was made, and reads as that `str`.

/// The methods and traits of a checked string type `$name(ByteString)` whose
/// `$name::new(impl Into<ByteString>) -> Result<Self, TopicError>` checks it. Equality, order
/// and hash are those of the `str` (derive `PartialEq`, `Eq`, `PartialOrd` and `Ord`), as
/// `Borrow<str>` requires.
macro_rules! checked_string {
    ($name:ident) => {
        impl $name {
            /// The string it holds.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The string it holds, as the `ByteString` it shares memory with.
            pub fn into_inner(self) -> ::bytestring::ByteString {
                self.0
            }
        }

        impl ::std::hash::Hash for $name {
            fn hash<H: ::std::hash::Hasher>(&self, state: &mut H) {
                ::std::hash::Hash::hash(self.as_str(), state);
            }
        }

        impl ::std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::topic::TopicError;

            fn from_str(s: &str) -> Result<Self, $crate::topic::TopicError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $crate::topic::TopicError;

            fn try_from(s: &str) -> Result<Self, $crate::topic::TopicError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::topic::TopicError;

            fn try_from(s: String) -> Result<Self, $crate::topic::TopicError> {
                Self::new(s)
            }
        }

        impl TryFrom<::bytestring::ByteString> for $name {
            type Error = $crate::topic::TopicError;

            fn try_from(s: ::bytestring::ByteString) -> Result<Self, $crate::topic::TopicError> {
                Self::new(s)
            }
        }

        impl From<$name> for ::bytestring::ByteString {
            fn from(s: $name) -> Self {
                s.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.as_str()
            }
        }
    };
}

pub(super) use checked_string;
