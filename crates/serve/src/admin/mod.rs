//! The admin key's endpoints: every command the CLI has, and the
//! investigations.

mod bodies;
pub(crate) mod commands;
pub(crate) mod history;
pub(crate) mod investigate;
mod reply;
mod scope;
