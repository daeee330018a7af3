//! What the process does before it reads anything: it is made
//! non-dumpable, and creates its files private.

use rustix::fs::Mode;
use rustix::process::{DumpableBehavior, set_dumpable_behavior, umask};

use crate::Failure;

/// Makes the process non-dumpable, so that no core dump and no process of
/// the same user (through `ptrace` or `/proc/PID/mem`, `environ`, `fd`)
/// can read the secrets and keys it holds; and sets a umask of `077`, so
/// that whatever it creates is its owner's alone, even where the library
/// did not choose a mode. Done first, before any secret or key is read.
pub fn harden() -> Result<(), Failure> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(|e| {
        Failure::Refused(format!("the process could not be made non-dumpable: {e}"))
    })?;
    umask(Mode::RWXG | Mode::RWXO);
    Ok(())
}
