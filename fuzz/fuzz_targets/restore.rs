#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mqtt_proto_fuzz::restore(data));
