//! Arbitrary bytes as a WAL segment (and checkpoint), replayed from real files.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| prognos_fuzz::wal_replay(data));
