//! Checkpoints of the state, and when they are trusted.
//!
//! A checkpoint is checked against the log only at its own position (the
//! log's hash there); the state inside is taken on trust. Without a
//! checkpoint key its digest is unkeyed, so anyone who can write the data
//! directory can write one with the right hash and any state (a token with
//! more scopes), and every later checkpoint would copy it. So without a key
//! none is written or loaded, unless the embedder opts in to unsigned ones
//! (`LedgerOptions::trust_unsigned_checkpoints`); unsigned files left in the
//! folder are then a warning, and the whole log is replayed.

use std::path::Path;

use tokenledger_projection::{CheckpointError, State, decode_checkpoint};
use tokenledger_store::{CheckpointKey, EventLog, Head, StateFile, StateFileError, StateFiles};

use crate::ledger::LedgerError;

/// How many checkpoint files are kept: the newest, and older ones to fall
/// back on if it turns out damaged.
const CHECKPOINTS_KEPT: usize = 3;

/// A checkpoint file read and decoded, not yet checked against the log:
/// the head it was saved at, and its state, or why it is not one.
pub(crate) type ReadCheckpoint = Result<(Head, Result<State, CheckpointError>), StateFileError>;

/// The data directory's checkpoints of the state.
pub(crate) struct Checkpoints {
    /// None for a ledger that keeps no checkpoints (a ledger on
    /// PostgreSQL given no local directory for them).
    files: Option<StateFiles>,
    /// Whether checkpoints are written and loaded: with a checkpoint key
    /// (they are signed, and unsigned ones refused), or when the embedder
    /// chose to trust unsigned ones.
    trusted: bool,
}

impl Checkpoints {
    /// The checkpoints of the data directory `dir`.
    pub(crate) fn new(dir: &Path, key: Option<CheckpointKey>, trust_unsigned: bool) -> Checkpoints {
        Checkpoints {
            trusted: key.is_some() || trust_unsigned,
            files: Some(StateFiles::new(dir, key)),
        }
    }

    /// No checkpoints: none is written or loaded, and opening replays the
    /// whole log.
    #[cfg(feature = "postgres")]
    pub(crate) fn none() -> Checkpoints {
        Checkpoints {
            trusted: false,
            files: None,
        }
    }

    /// Whether checkpoints are written and loaded at all.
    pub(crate) fn trusted(&self) -> bool {
        self.trusted
    }

    /// Refuses when checkpoints are not trusted, before anything is
    /// encoded for one.
    pub(crate) fn writable(&self) -> Result<(), LedgerError> {
        if self.trusted {
            return Ok(());
        }
        Err(LedgerError::Checkpoint(CheckpointWriteError::Untrusted))
    }

    /// Saves `bytes` as the state at `head`.
    pub(crate) fn write(&self, head: Head, bytes: &[u8]) -> Result<(), LedgerError> {
        self.writable()?;
        let files = self
            .files
            .as_ref()
            .ok_or(LedgerError::Checkpoint(CheckpointWriteError::Untrusted))?;
        files
            .write(head, bytes, CHECKPOINTS_KEPT)
            .map(|_| ())
            .map_err(|e| LedgerError::Checkpoint(CheckpointWriteError::Files(e)))
    }

    /// The newest checkpoint file, read, if there is one to trust.
    pub(crate) fn newest(&self) -> Option<(StateFile, ReadCheckpoint)> {
        if !self.trusted {
            return None;
        }
        let newest = self.files.as_ref()?.list().ok()?.into_iter().next()?;
        let read = self.read(&newest);
        Some((newest, read))
    }

    fn read(&self, file: &StateFile) -> ReadCheckpoint {
        match &self.files {
            Some(files) => files.read_with(file, decode_checkpoint),
            None => Err(StateFileError::Io(std::io::Error::other(
                "this ledger keeps no checkpoints",
            ))),
        }
    }

    /// The newest checkpoint at or before `upto` that is trusted, whole,
    /// agrees with the log at its position, and decodes. Each one passed
    /// over is said in `warnings`, and the log is replayed instead; so are
    /// checkpoint files left unused because none is trusted. `newest` is
    /// a file already read, used rather than read again.
    pub(crate) fn load(
        &self,
        log: &dyn EventLog,
        upto: u64,
        warnings: &mut Vec<String>,
        mut newest: Option<(StateFile, ReadCheckpoint)>,
    ) -> Result<Option<State>, LedgerError> {
        let Some(files) = &self.files else {
            return Ok(None);
        };
        let listed = match files.list() {
            Ok(listed) => listed,
            Err(error) if self.trusted => {
                warnings.push(format!("the checkpoints could not be listed: {error}"));
                return Ok(None);
            }
            Err(_) => return Ok(None),
        };
        if !self.trusted {
            if !listed.is_empty() {
                warnings.push(format!(
                    "{} checkpoint file(s) in the data directory were ignored and the whole log replayed: without a checkpoint key, checkpoints are not trusted, since anyone who can write the data directory could forge one; set a checkpoint key, or remove them",
                    listed.len()
                ));
            }
            return Ok(None);
        }
        for file in listed
            .into_iter()
            .filter(|f| f.position <= upto && f.position > 0)
        {
            let skipped = |why: String| {
                format!(
                    "the checkpoint at log position {} was skipped: {why}",
                    file.position
                )
            };
            let read = match newest.take_if(|(read, _)| *read == file) {
                Some((_, read)) => read,
                None => self.read(&file),
            };
            let (head, decoded) = match read {
                Ok(read) => read,
                Err(error) => {
                    warnings.push(skipped(error.to_string()));
                    continue;
                }
            };
            let logged = log
                .read(head.position, 1)
                .map_err(LedgerError::Damaged)?
                .first()
                .map(|e| e.hash);
            if logged != Some(head.hash) {
                warnings.push(skipped(
                    "it does not match the log at its position".to_owned(),
                ));
                continue;
            }
            match decoded {
                Ok(state) if state.position() == head.position => return Ok(Some(state)),
                Ok(_) => warnings.push(skipped("its state is at another position".to_owned())),
                Err(error) => warnings.push(skipped(error.to_string())),
            }
        }
        Ok(None)
    }
}

/// Why a checkpoint of the state was not written.
#[derive(Debug)]
#[non_exhaustive]
pub enum CheckpointWriteError {
    /// This ledger has no checkpoint key, and unsigned checkpoints were not
    /// opted into ([`crate::LedgerOptions::trust_unsigned_checkpoints`]).
    Untrusted,
    /// The state could not be encoded.
    Encode(tokenledger_projection::CheckpointError),
    /// The checkpoint's file could not be written.
    Files(std::io::Error),
}

impl std::fmt::Display for CheckpointWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointWriteError::Untrusted => f.write_str(
                "this ledger has no checkpoint key, and anyone who can write the data directory could forge an unsigned checkpoint; set a checkpoint key, or opt in to unsigned checkpoints",
            ),
            CheckpointWriteError::Encode(error) => std::fmt::Display::fmt(error, f),
            CheckpointWriteError::Files(error) => std::fmt::Display::fmt(error, f),
        }
    }
}

impl std::error::Error for CheckpointWriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointWriteError::Untrusted => None,
            CheckpointWriteError::Encode(error) => Some(error),
            CheckpointWriteError::Files(error) => Some(error),
        }
    }
}
