//! Checks that span tokenledger's crates: the reference model the model
//! test and the fuzzer drive, and the bodies of the fuzz targets, which
//! `cargo test` replays over the corpus kept in `fuzz/corpus`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "checks fail loudly: a panic is how the fuzzer and the tests see a failed property"
)]

pub mod fuzz;
pub mod model;
