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
/// only, and syncs the directory each was created in: a directory's entry
/// is durable only once its parent is, and a data directory lost to a
/// power cut would take its journal with it. Directories that exist
/// already keep their mode.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|path| !path.as_os_str().is_empty()) {
        if path.exists() {
            break;
        }
        missing.push(path);
        at = path.parent();
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    // Innermost first: each sync makes durable the entry created in it.
    for created in missing {
        let parent = created
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_parents_are_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a").join("b").join("c");
        create_private_dir(&deep).unwrap();
        for made in [dir.path().join("a"), deep.clone()] {
            let mode = std::fs::metadata(&made).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, DIR_MODE, "{}", made.display());
        }
        // Again, with everything there: nothing to create.
        create_private_dir(&deep).unwrap();
    }
}
