//! libFuzzer target: see `tokenledger_tests::fuzz::decode_checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenledger_tests::fuzz::decode_checkpoint(data));
