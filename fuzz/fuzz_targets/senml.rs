//! A SenML payload, with the receive time taken from the first 8 bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| prognos_fuzz::senml(data));
