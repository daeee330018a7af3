//! Files the command line writes beside the ledger (exports, pages):
//! readable by their owner only, and never written through a link.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates `path`, which must not exist, readable and writable by its
/// owner only. A link at `path` counts as existing: it is not followed.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Puts `bytes` at `path` whole, readable by its owner only: written to a
/// new file beside it, synced, then renamed over it. Whatever was at
/// `path` is replaced: a link there is replaced, never followed, so its
/// target is left as it was.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let partial = partial_path(path)?;
    let written = create_new_private(&partial).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&partial, path));
    if renamed.is_err() {
        // Created by this call (`create_new`), so ours to remove.
        let _ = std::fs::remove_file(&partial);
    }
    renamed
}

/// `.NAME.PID.partial` beside `path`. Created with `create_new`, so a file
/// or link an attacker placed there makes the write fail rather than go
/// through it.
fn partial_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(format!(".{}.partial", std::process::id()));
    Ok(path.with_file_name(partial))
}
