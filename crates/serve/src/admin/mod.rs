//! The admin key's endpoints: every command the CLI has, and the
//! investigations.

pub(crate) mod commands;
pub(crate) mod investigate;
mod reply;
mod scope;
