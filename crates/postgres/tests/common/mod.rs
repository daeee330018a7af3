//! The test server and databases (`tokenledger_postgres::testing`).

pub use tokenledger_postgres::testing::*;
