//! libFuzzer target: see `tokenledger_tests::fuzz::parse_scope_and_endpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenledger_tests::fuzz::parse_scope_and_endpoint(data));
