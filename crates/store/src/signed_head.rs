//! The signed head: the log's head and its HMAC under the checkpoint key
//! ([`Checkpoint`]), kept in the data directory's `signed-head` file.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "TLHEAD01"
//!      8     8  position, big-endian
//!     16    32  the log's hash at that position
//!     48    32  HMAC-SHA-256 of the position and hash (`Checkpoint::sign`)
//! ```
//!
//! It is written when sled settles (flushed, synced, the journal emptied)
//! and so never names a record that a crash could take back; an open with
//! the key refuses a log it does not vouch for. Someone who can write the
//! directory but lacks the key can neither sign another history nor move
//! the signature forward; they can restore an older directory *with* its
//! older signed head, which only a head kept elsewhere
//! (`Options::known_head`) catches.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointKey};
use crate::dirs::{create_private_file, sync_dir};
use crate::log::{Damage, Hash, Head};
use crate::sled_options::OpenError;

const MAGIC: &[u8; 8] = b"TLHEAD01";
const LEN: usize = 8 + 8 + 32 + 32;
/// The file's name in the data directory.
pub(crate) const FILE: &str = "signed-head";
const PARTIAL: &str = "signed-head.partial";

fn refused(path: &Path, error: CheckpointError) -> OpenError {
    OpenError::SignedHead {
        path: path.to_owned(),
        error,
    }
}

/// Reads the signed head of the directory `dir`; `None` if there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<Checkpoint>, OpenError> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(OpenError::Io { path, error }),
    };
    let malformed = |what| refused(&path, CheckpointError::Malformed(what));
    let bytes: &[u8; LEN] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| malformed("it is not 80 bytes long"))?;
    let (magic, rest) = bytes.split_at(8);
    if magic != MAGIC {
        return Err(malformed("it does not start with the signed head's magic"));
    }
    let (position, rest) = rest.split_at(8);
    let (hash, mac) = rest.split_at(32);
    let field = |bytes: &[u8]| <Hash>::try_from(bytes).map_err(|_| malformed("a field is short"));
    let position = <[u8; 8]>::try_from(position)
        .map(u64::from_be_bytes)
        .map_err(|_| malformed("a field is short"))?;
    Ok(Some(Checkpoint {
        head: Head {
            position,
            hash: field(hash)?,
        },
        mac: field(mac)?,
    }))
}

/// Writes `checkpoint` as the signed head of `dir`: to a temporary file,
/// synced, renamed into place and the directory synced, so that a crash
/// leaves the old file or the new one, whole.
pub(crate) fn write(dir: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    let partial = dir.join(PARTIAL);
    {
        let mut file = create_private_file(&partial)?;
        file.write_all(MAGIC)?;
        file.write_all(&checkpoint.head.position.to_be_bytes())?;
        file.write_all(&checkpoint.head.hash)?;
        file.write_all(&checkpoint.mac)?;
        file.sync_all()?;
    }
    fs::rename(&partial, dir.join(FILE))?;
    sync_dir(dir)
}

/// Keeps the signed head of one open log up to date.
pub(crate) struct Signer {
    key: CheckpointKey,
    dir: PathBuf,
    /// The head the file holds, if it holds one.
    signed: Option<Head>,
}

impl Signer {
    /// Checks the signed head of `dir` against a log whose head is `head`,
    /// `hash_at` giving the hash of the record at a position (`None` past
    /// the end). A log with no records and no signed head is new, or was
    /// never signed, and has nothing to vouch for: it is signed from here
    /// on. `stored` says whether the directory holds any record, even one
    /// above `head` that opening would take out: such a log is not new.
    /// Any other log must have a signed head, whose MAC holds under `key`
    /// and whose record is in the log.
    pub(crate) fn check(
        dir: &Path,
        key: CheckpointKey,
        head: Head,
        stored: bool,
        hash_at: impl FnOnce(u64) -> Result<Option<Hash>, Damage>,
    ) -> Result<Signer, OpenError> {
        let path = dir.join(FILE);
        let signed = match read(dir)? {
            None if head.position == 0 && !stored => None,
            None => return Err(refused(&path, CheckpointError::Missing)),
            Some(checkpoint) => {
                checkpoint
                    .check_with(&key, head.position, hash_at)
                    .map_err(|error| refused(&path, error))?;
                Some(checkpoint.head)
            }
        };
        Ok(Signer {
            key,
            dir: dir.to_owned(),
            signed,
        })
    }

    /// Signs `head` unless the file holds it already. `head` must be
    /// settled: durable in sled, so that no crash can take it back.
    pub(crate) fn sign(&mut self, head: Head) -> io::Result<()> {
        if self.signed == Some(head) {
            return Ok(());
        }
        write(&self.dir, &Checkpoint::sign(head, &self.key))?;
        self.signed = Some(head);
        Ok(())
    }
}
