//! A whole MQTT message: the first byte picks the topic kind, the rest is the payload.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| prognos_fuzz::decode_message(data));
