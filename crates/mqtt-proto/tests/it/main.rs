//! Integration tests of the codec, linked as one test binary.

mod differential;
mod malformed;
mod roundtrip;
mod vectors;
