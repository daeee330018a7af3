//! libFuzzer target: see `tokenledger_tests::fuzz::decode_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenledger_tests::fuzz::decode_record(data));
