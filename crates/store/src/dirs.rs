//! Directory syncs, shared by everything the store writes.

use std::fs::File;
use std::io;
use std::path::Path;

/// Syncs the directory `dir`: a file created, renamed or removed in it is
/// durable only once its directory is.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
