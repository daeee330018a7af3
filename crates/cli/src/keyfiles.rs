//! Key files: kept apart from the data they protect, and private.
//!
//! A key inside the data directory protects nothing from someone who can
//! read or write that directory, which is who the keys are for. Paths are
//! compared once resolved (links followed, `..` taken out), so neither a
//! relative path such as `--data .` nor a link hides a key inside.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::Failure;

/// `path` made absolute with every link resolved, for a path that may not
/// exist yet: its longest existing ancestor is resolved, and the rest
/// appended (what does not exist cannot be a link).
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut existing = std::path::absolute(path)?;
    let mut missing: Vec<OsString> = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut resolved) => {
                for name in missing.iter().rev() {
                    match Path::new(name).components().next() {
                        Some(Component::ParentDir) => {
                            resolved.pop();
                        }
                        Some(Component::Normal(name)) => resolved.push(name),
                        _ => {}
                    }
                }
                return Ok(resolved);
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let last = existing.components().next_back();
                let (Some(last), Some(parent)) = (last, existing.parent()) else {
                    return Err(error);
                };
                missing.push(last.as_os_str().to_owned());
                existing = parent.to_owned();
            }
            Err(error) => return Err(error),
        }
    }
}

/// Refuses a key file inside the data directory `data` (or the directory
/// itself). `what` names the key.
pub fn refuse_inside(what: &str, key: &Path, data: &Path) -> Result<(), Failure> {
    let unresolved =
        |path: &Path, e: io::Error| Failure::BadInput(format!("`{}`: {e}", path.display()));
    let resolved_key = resolve(key).map_err(|e| unresolved(key, e))?;
    let resolved_data = resolve(data).map_err(|e| unresolved(data, e))?;
    if resolved_key.starts_with(&resolved_data) {
        return Err(Failure::BadInput(format!(
            "the {what} file `{}` is inside the data directory `{}`: keep keys outside it, where those who can read or write the data cannot reach them",
            key.display(),
            data.display()
        )));
    }
    Ok(())
}

/// Warns, on one line, when the key file `path` may be read or written by
/// its group or by others.
pub fn warn_if_shared(what: &str, path: &Path) {
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "tokenledger: warning: the {what} file `{}` can be reached by its group or others (mode {:o}): chmod 600 it",
                crate::guard::redact(&path.display().to_string()),
                mode & 0o777
            );
        }
    }
}

/// Reads a key file: 32 raw bytes, or 64 hex digits. `what` names the
/// key in errors.
pub fn read_key(what: &str, path: &Path) -> Result<[u8; 32], Failure> {
    let bad = |why: &str| Failure::BadInput(format!("{what} {}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(&e.to_string()))?;
    warn_if_shared(what, path);
    if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&bytes)
        .map(str::trim)
        .map_err(|_| bad("expected 32 bytes or 64 hex digits"))?;
    let mut key = [0u8; 32];
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("expected 32 bytes or 64 hex digits"));
    }
    for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).unwrap_or("00");
        *byte = u8::from_str_radix(pair, 16).unwrap_or(0);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;

    #[test]
    fn a_path_that_does_not_exist_resolves_through_its_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        std::os::unix::fs::symlink(real.join("data"), real.join("link")).unwrap();
        assert_eq!(
            resolve(&real.join("link/new/../key")).unwrap(),
            real.join("data/key")
        );
        assert_eq!(resolve(&real.join("link/.")).unwrap(), real.join("data"));
        assert!(refuse_inside("sealing key", &real.join("link/key"), &real.join("data")).is_err());
        assert!(refuse_inside("sealing key", &real.join("data.key"), &real.join("data")).is_ok());
    }
}
