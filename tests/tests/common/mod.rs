//! What the tests share: replica processes.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod replica;
