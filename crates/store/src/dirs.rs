//! Directory syncs and private files, shared by everything the store
//! writes.
//!
//! Everything in a data directory is its owner's alone: the log holds every
//! token's digest and sealed secret and the whole history. So directories
//! are created `0700` and files `0600`, whatever the process's umask.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The mode of every directory the store creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// The mode of every file the store creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Syncs the directory `dir`: a file created, renamed or removed in it is
/// durable only once its directory is.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any parents it lacks, each readable by its owner
/// only. Directories that exist already keep their mode.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `path` anew, readable and writable by its owner only: a file a
/// crash left there is removed rather than truncated, so that the new one
/// gets its mode, and a link placed there is not followed.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    private_file().write(true).create_new(true).open(path)
}

/// Options that create a file readable and writable by its owner only
/// (an existing file keeps its mode).
pub(crate) fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}
