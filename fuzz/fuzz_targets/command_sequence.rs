//! libFuzzer target: see `tokenledger_tests::fuzz::command_sequence`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokenledger_tests::fuzz::command_sequence(data));
