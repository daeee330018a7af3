//! Checkpoint files of the state: bytes saved for a log position, written
//! so that a crash in the middle leaves the previous file usable, and read
//! back only when their length and digest hold. What the bytes mean is the
//! projection's business; this module only keeps them safe.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "TLSTATE2"
//!      8     8  log position, big-endian
//!     16    32  the log's hash at that position
//!     48     8  payload length, big-endian
//!     56    32  BLAKE3 of the payload
//!     88     8  flags: 1 when keyed
//!     96    32  HMAC-SHA-256 of bytes 0..88 under the checkpoint key, or zero
//!    128     n  payload (16-byte aligned)
//! ```
//!
//! The digest catches damage; only the MAC stops someone who can write the
//! directory from forging a state. With a key, a file without a valid MAC
//! is refused.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hmac::Mac;

use crate::checkpoint::CheckpointKey;
use crate::dirs::{create_private_dir, create_private_file, sync_dir};
use crate::log::Head;

const MAGIC: &[u8; 8] = b"TLSTATE2";
const HEADER_LEN: usize = 128;
const SIGNED_LEN: usize = 88;
const KEYED: u8 = 1;
const PREFIX: &str = "state-";
const SUFFIX: &str = ".ckpt";
/// What a file being written is named, until it is whole and renamed.
const PARTIAL: &str = ".partial";

/// The checkpoint files of one data directory, in its `checkpoints`
/// folder.
#[derive(Debug, Clone)]
pub struct StateFiles {
    dir: PathBuf,
    key: Option<CheckpointKey>,
}

/// One checkpoint file, by the position it was saved at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    /// The log position the state was saved at.
    pub position: u64,
    /// Where it is.
    pub path: PathBuf,
}

/// Why a checkpoint file was not used.
#[derive(Debug)]
#[non_exhaustive]
pub enum StateFileError {
    /// It could not be read.
    Io(io::Error),
    /// It is not a whole, undamaged checkpoint file.
    Damaged(&'static str),
}

impl fmt::Display for StateFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateFileError::Io(e) => write!(f, "it could not be read: {e}"),
            StateFileError::Damaged(what) => write!(f, "it is damaged: {what}"),
        }
    }
}

impl std::error::Error for StateFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateFileError::Io(error) => Some(error),
            _ => None,
        }
    }
}

fn name(position: u64) -> String {
    format!("{PREFIX}{position:020}{SUFFIX}")
}

impl StateFiles {
    /// The checkpoint files of the data directory `data_dir`. With a key,
    /// files are signed when written and refused unsigned when read.
    pub fn new(data_dir: &Path, key: Option<CheckpointKey>) -> StateFiles {
        StateFiles {
            dir: data_dir.join("checkpoints"),
            key,
        }
    }

    /// The checkpoint files there are, newest first. Half-written files
    /// (a crash during [`StateFiles::write`]) are not listed.
    pub fn list(&self) -> io::Result<Vec<StateFile>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name();
            let position = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(position) = position {
                files.push(StateFile {
                    position,
                    path: entry.path(),
                });
            }
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.position));
        Ok(files)
    }

    /// Saves `payload` as the state at `head`: written to a temporary
    /// file, synced, renamed into place and the folder synced, so a crash
    /// leaves either the whole new file or none. Then keeps only the newest
    /// `keep` files.
    pub fn write(&self, head: Head, payload: &[u8], keep: usize) -> io::Result<StateFile> {
        create_private_dir(&self.dir)?;
        let path = self.dir.join(name(head.position));
        let partial = self.dir.join(format!("{}{PARTIAL}", name(head.position)));
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&head.position.to_be_bytes());
        header.extend_from_slice(&head.hash);
        header.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        header.extend_from_slice(blake3::hash(payload).as_bytes());
        match &self.key {
            Some(key) => {
                let mac = key.mac_of_state_header(&header).finalize().into_bytes();
                header.extend_from_slice(&[KEYED, 0, 0, 0, 0, 0, 0, 0]);
                header.extend_from_slice(&mac);
            }
            None => header.resize(HEADER_LEN, 0),
        }
        {
            let mut file = create_private_file(&partial)?;
            file.write_all(&header)?;
            file.write_all(payload)?;
            file.sync_all()?;
        }
        fs::rename(&partial, &path)?;
        sync_dir(&self.dir)?;
        for old in self.list()?.into_iter().skip(keep.max(1)) {
            fs::remove_file(old.path)?;
        }
        Ok(StateFile {
            position: head.position,
            path,
        })
    }

    /// Removes the `.partial` files a crash in [`StateFiles::write`] left,
    /// which nothing would read or remove otherwise. Called by the log's
    /// open, which holds the data directory, so no write is under way.
    pub(crate) fn remove_partial(&self) -> io::Result<()> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut removed = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let partial = name
                .to_str()
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(PARTIAL));
            if partial {
                fs::remove_file(entry.path())?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// A checkpoint file whose header is signed with this ledger's key, if
    /// there is one: proof that the directory was written with the key
    /// before. Only headers are read; a file too short for one is not
    /// signed. Without a key, none.
    pub(crate) fn first_signed(&self) -> io::Result<Option<StateFile>> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        for file in self.list()? {
            let mut header = [0u8; HEADER_LEN];
            match File::open(&file.path).and_then(|mut f| f.read_exact(&mut header)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
                Err(e) => return Err(e),
            }
            if header.starts_with(MAGIC) && signed_under(key, &header) {
                return Ok(Some(file));
            }
        }
        Ok(None)
    }

    /// Reads a checkpoint file: the head it was saved at, and what `decode`
    /// makes of its payload, once its magic, position, length and digest
    /// hold. `decode` runs while a second thread checks the payload's
    /// digest, rather than after: the digest of a large state costs about
    /// as much as decoding it. What `decode` made is returned only if the
    /// digest holds, and dropped otherwise, so `decode` must be safe on any
    /// bytes (it validates what it reads, and allocates in proportion to
    /// them), and its result is never trusted before the file is. With a
    /// checkpoint key, the header's MAC is checked before `decode` starts.
    pub fn read_with<T>(
        &self,
        file: &StateFile,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<(Head, T), StateFileError> {
        let (head, payload, digest) = self.read_undigested(file)?;
        let payload = payload.as_slice();
        std::thread::scope(|scope| {
            let checked = scope.spawn(|| check_digest(payload, &digest));
            let decoded = decode(payload);
            checked
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .map(|()| (head, decoded))
        })
    }

    /// The head, the payload and the digest the header records for it, once
    /// everything but the digest holds.
    fn read_undigested(
        &self,
        file: &StateFile,
    ) -> Result<(Head, Vec<u8>, [u8; 32]), StateFileError> {
        let mut opened = File::open(&file.path).map_err(StateFileError::Io)?;
        let mut header = [0u8; HEADER_LEN];
        opened.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                StateFileError::Damaged("it is shorter than its header")
            }
            _ => StateFileError::Io(e),
        })?;
        let header = header.as_slice();
        let field = |range: std::ops::Range<usize>| header.get(range).unwrap_or_default();
        if field(0..8) != MAGIC {
            return Err(StateFileError::Damaged("it is not a checkpoint file"));
        }
        let number = |range| {
            <[u8; 8]>::try_from(field(range))
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX)
        };
        let position = number(8..16);
        let length = number(48..56);
        let hash: [u8; 32] = field(16..48).try_into().unwrap_or_default();
        let digest: [u8; 32] = field(56..88).try_into().unwrap_or_default();
        if let Some(key) = &self.key
            && !signed_under(key, header)
        {
            return Err(StateFileError::Damaged(
                "it is not signed with this ledger's checkpoint key",
            ));
        }
        if position != file.position {
            return Err(StateFileError::Damaged(
                "the position inside is not the one in its name",
            ));
        }
        let wrong_length = || StateFileError::Damaged("its length is not the one recorded");
        let size = opened.metadata().map_err(StateFileError::Io)?.len();
        // Checked before anything is reserved: the length is only a claim
        // until the file's size agrees. The payload is read into a buffer
        // of its own, so that the state decodes in place from it.
        if size.checked_sub(HEADER_LEN as u64) != Some(length) {
            return Err(wrong_length());
        }
        let mut payload = Vec::with_capacity(usize::try_from(length).map_err(|_| wrong_length())?);
        opened
            .read_to_end(&mut payload)
            .map_err(StateFileError::Io)?;
        if payload.len() as u64 != length {
            return Err(wrong_length());
        }
        Ok((Head { position, hash }, payload, digest))
    }
}

/// Whether a checkpoint file's header is marked keyed and its MAC holds
/// under `key` (checked in constant time).
fn signed_under(key: &CheckpointKey, header: &[u8]) -> bool {
    let field = |range: std::ops::Range<usize>| header.get(range).unwrap_or_default();
    field(88..89) == [KEYED]
        && key
            .mac_of_state_header(field(0..SIGNED_LEN))
            .verify_slice(field(96..HEADER_LEN))
            .is_ok()
}

fn check_digest(payload: &[u8], digest: &[u8; 32]) -> Result<(), StateFileError> {
    if blake3::hash(payload).as_bytes() == digest {
        Ok(())
    } else {
        Err(StateFileError::Damaged(
            "its bytes do not match their digest",
        ))
    }
}
