//! tokenledger's projection: the state every rule reads, folded from the
//! log's events ([`State::apply`]) and published ([`Projection`]) so that
//! readers never take a lock and never wait for the writer.
//!
//! It never writes to the log and knows nothing of sled: it is handed
//! events and folds them.

mod checkpoint;
mod hash;
mod publish;
mod state;
mod tokens;

pub use checkpoint::{CheckpointError, decode_checkpoint, encode_checkpoint};
pub use hash::{RandomKeyHasher, RandomKeyMap};
pub use publish::{Projection, Readers};
pub use state::{Company, Provenance, Setting, State, Teammate, Workspace};
pub use tokens::{CompiledScope, Token, TokenHandle};
