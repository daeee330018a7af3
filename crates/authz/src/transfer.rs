//! Export to JSON lines and import into a new data directory.
//!
//! Each line is one event as `history --json` shows it, plus the hash of
//! the record before it and the record's bytes in hex. The bytes are what
//! the hash chain covers, so an import rebuilds the log byte for byte and
//! its hashes, and the readable fields must be exactly what those bytes
//! say: a line edited by hand is refused, and so is a broken chain.
//!
//! The chain is unkeyed, so a file whose records were edited and hashed
//! again still chains. An import therefore also replays every event
//! through the command rules ([`crate::rules_replay`]), and can be given
//! the head the file must end at, kept elsewhere.
//!
//! # A stopped import writes nothing
//!
//! The file is read twice: once to check every line, without writing
//! anything, and once to append its records. The second reading could
//! differ from the first (the file changed, or a read failed half-way),
//! and the records it appended before noticing would stay written: the
//! log only grows. Holding the first reading's head and comparing it
//! before the first append cannot help, since the second reading is known
//! to match only once it has been read to its end; that takes a third
//! reading, or the whole file in memory, and still leaves half a log
//! behind after a crash or a full disk.
//!
//! So the records are appended into a fresh directory beside the data
//! directory (`.NAME.importing-RANDOM`), which must not exist or be empty.
//! Only once the second reading is whole, ends at the first reading's
//! head, and verifies, is the copy closed, synced file by file, and
//! renamed into place; a rename within one directory is atomic, so the
//! data directory appears whole or not at all. Any error removes the copy.
//! A crash in the middle leaves the copy beside the data directory, which
//! is never read and can be removed.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenledger_events::EventId;
use tokenledger_store::{ChainCheck, Head, MAX_BATCH, SledLog, StoredRecord, Verified, hex};

use crate::fresh;
use crate::json::event_json;
use crate::ledger::{Ledger, LedgerError, LedgerOptions};
use crate::rules_replay::RulesReplay;

/// Why an export or import stopped. An import that stops has written
/// nothing: the data directory is made only once the whole file is in.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransferError {
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// The ledger failed.
    Ledger(LedgerError),
    /// An import makes a new data directory, and this one holds something.
    NotEmpty {
        /// The data directory.
        dir: PathBuf,
    },
    /// A line of the import is wrong.
    Line {
        /// Its number, from 1.
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// The file's last record is not the head it was expected to end at.
    UnexpectedHead {
        /// The head expected.
        expected: Head,
        /// The file's last record.
        found: Head,
    },
    /// The file read differently the second time.
    Changed {
        /// Where the first reading ended.
        first: Head,
        /// Where the second ended.
        second: Head,
    },
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            TransferError::Ledger(error) => fmt::Display::fmt(error, f),
            TransferError::NotEmpty { dir } => write!(
                f,
                "an import makes a new data directory, and `{}` exists and is not empty",
                dir.display()
            ),
            TransferError::Line { line, problem } => {
                write!(f, "line {line}: {problem}; nothing was imported")
            }
            TransferError::UnexpectedHead { expected, found } => write!(
                f,
                "the file ends at {}, not at the expected head {}; nothing was imported",
                found, expected
            ),
            TransferError::Changed { first, second } => write!(
                f,
                "the file changed during the import: its first reading ended at {}, its second at {}; nothing was imported",
                first, second
            ),
        }
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransferError::Io { error, .. } => Some(error),
            TransferError::Ledger(error) => Some(error),
            _ => None,
        }
    }
}

/// The longest line an import reads: a record is at most 64 KiB, twice
/// that in hex, and its readable fields are smaller than the record.
const MAX_LINE: u64 = 512 * 1024;

/// How many records are read or appended at a time.
const CHUNK: usize = 1_000;

fn line_json(record: &StoredRecord) -> Value {
    let mut json = event_json(&record.event);
    if let Value::Object(map) = &mut json {
        map.insert(
            "previous".to_owned(),
            Value::String(hex(&record.event.previous)),
        );
        map.insert("record".to_owned(), Value::String(hex(&record.bytes)));
    }
    json
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            match pair {
                [high, low] => Some((digit(*high)? * 16 + digit(*low)?) as u8),
                _ => None,
            }
        })
        .collect()
}

/// Reads the lines of an export, one at a time, refusing a line too long.
struct Lines<R> {
    input: R,
    number: u64,
    buffer: String,
}

impl Lines<BufReader<File>> {
    fn open(path: &Path) -> Result<Lines<BufReader<File>>, TransferError> {
        let file = File::open(path).map_err(|error| TransferError::Io {
            path: path.to_owned(),
            error,
        })?;
        Ok(Lines {
            input: BufReader::new(file),
            number: 0,
            buffer: String::new(),
        })
    }
}

impl<R: BufRead> Lines<R> {
    /// The next line's number and text, or `None` at the end.
    fn next(&mut self, path: &Path) -> Result<Option<(u64, &str)>, TransferError> {
        self.buffer.clear();
        self.number += 1;
        let read = (&mut self.input)
            .take(MAX_LINE + 1)
            .read_line(&mut self.buffer)
            .map_err(|error| {
                let invalid = error.kind() == io::ErrorKind::InvalidData;
                if invalid {
                    TransferError::Line {
                        line: self.number,
                        problem: "the line is not UTF-8".to_owned(),
                    }
                } else {
                    TransferError::Io {
                        path: path.to_owned(),
                        error,
                    }
                }
            })?;
        if read == 0 {
            return Ok(None);
        }
        if read as u64 > MAX_LINE {
            return Err(TransferError::Line {
                line: self.number,
                problem: format!("the line is longer than {MAX_LINE} bytes"),
            });
        }
        Ok(Some((
            self.number,
            self.buffer.trim_end_matches(['\n', '\r']),
        )))
    }
}

/// Takes one line apart: its record's bytes, checked against the chain so
/// far, and its readable fields checked against what the bytes say.
fn check_line(text: &str, chain: &mut ChainCheck) -> Result<StoredRecord, String> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| format!("the line is not JSON: {e}"))?;
    let bytes = json
        .get("record")
        .and_then(Value::as_str)
        .and_then(unhex)
        .ok_or("the line has no `record` field of hex digits")?;
    let event = chain.check(&bytes).map_err(|damage| damage.to_string())?;
    let record = StoredRecord { event, bytes };
    if json != line_json(&record) {
        return Err(
            "its readable fields do not match its record (was the line edited?)".to_owned(),
        );
    }
    Ok(record)
}

/// The first reading of an import: every line checked (its record, the
/// chain, its readable fields, a unique event id, and the rules), nothing
/// written. Returns the file's last record.
pub(crate) fn check_file(path: &Path) -> Result<Head, TransferError> {
    let mut chain = ChainCheck::new();
    let mut ids: HashSet<EventId> = HashSet::new();
    let mut rules = RulesReplay::default();
    let mut lines = Lines::open(path)?;
    while let Some((line, text)) = lines.next(path)? {
        let refused = |problem: String| TransferError::Line { line, problem };
        let record = check_line(text, &mut chain).map_err(refused)?;
        let envelope = &record.event.envelope;
        if !ids.insert(envelope.event_id) {
            return Err(refused(format!(
                "event id `{}` appears twice",
                envelope.event_id
            )));
        }
        rules
            .check(envelope)
            .map_err(|broken| refused(broken.to_string()))?;
    }
    Ok(chain.head())
}

/// Refuses a data directory to import into that exists and holds anything
/// (or is not a plain directory): the import's copy takes its place.
fn check_target(dir: &Path) -> Result<(), TransferError> {
    let io = |error| TransferError::Io {
        path: dir.to_owned(),
        error,
    };
    let metadata = match fs::symlink_metadata(dir) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io(error)),
    };
    if metadata.is_dir() && fs::read_dir(dir).map_err(io)?.next().is_none() {
        return Ok(());
    }
    Err(TransferError::NotEmpty {
        dir: dir.to_owned(),
    })
}

/// The directory an import is written into, beside its data directory;
/// removed when dropped unless it was moved into place.
struct Staging {
    path: PathBuf,
    moved: bool,
}

impl Staging {
    /// Makes a new, empty directory beside `dir`, readable by its owner only.
    fn beside(dir: &Path) -> Result<Staging, TransferError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |error| TransferError::Io { path, error }
        };
        let name = dir.file_name().ok_or_else(|| {
            io(dir)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the data directory has no name of its own",
            ))
        })?;
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let random =
            fresh::event_id().map_err(|e| TransferError::Ledger(LedgerError::Random(e)))?;
        let mut staged = std::ffi::OsString::from(".");
        staged.push(name);
        staged.push(format!(".importing-{:032x}", random.as_u128()));
        let path = parent.join(staged);
        // The directories above it are made as opening a ledger makes
        // them, readable by their owner only whatever the umask (those that
        // exist keep their mode), so none shows what is imported below it.
        let mut parents = private_dir();
        parents.recursive(true);
        parents.create(parent).map_err(io(parent))?;
        private_dir().create(&path).map_err(io(&path))?;
        Ok(Staging { path, moved: false })
    }

    /// Syncs every file and directory of the copy, then renames it to
    /// `dir` and syncs the directory that holds both.
    fn move_to(mut self, dir: &Path) -> Result<(), TransferError> {
        sync_tree(&self.path)?;
        fs::rename(&self.path, dir).map_err(|error| match error.kind() {
            io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => {
                TransferError::NotEmpty {
                    dir: dir.to_owned(),
                }
            }
            _ => TransferError::Io {
                path: dir.to_owned(),
                error,
            },
        })?;
        self.moved = true;
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_path(parent)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.moved {
            // Best effort: a copy left behind is never read. sled may still
            // be closing a log that failed, so it is waited for first.
            let _ = SledLog::wait_closed(&self.path);
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A builder of directories readable by their owner only (`0700`).
fn private_dir() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

fn sync_path(path: &Path) -> Result<(), TransferError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|error| TransferError::Io {
            path: path.to_owned(),
            error,
        })
}

/// Syncs `dir`, everything in it, and everything below it.
fn sync_tree(dir: &Path) -> Result<(), TransferError> {
    let io = |error| TransferError::Io {
        path: dir.to_owned(),
        error,
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_type().map_err(io)?.is_dir() {
            sync_tree(&path)?;
        } else {
            sync_path(&path)?;
        }
    }
    sync_path(dir)
}

impl Ledger {
    /// Writes every event to `out` as JSON lines, oldest first, and returns
    /// how many. `progress` is told the position reached and the head.
    /// Refused once the ledger is closed, before each chunk and at the end:
    /// its log may lack what it acknowledged (see [`Ledger::execute`]).
    pub fn export(
        &self,
        out: &mut dyn Write,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, TransferError> {
        let closed = |ledger: &Ledger| ledger.refuse_if_closed().map_err(TransferError::Ledger);
        closed(self)?;
        let head = self.head().position;
        let io = |error| TransferError::Io {
            path: path.to_owned(),
            error,
        };
        let mut next = 1;
        while next <= head {
            closed(self)?;
            let records = self
                .log
                .read_records(next, CHUNK)
                .map_err(|e| TransferError::Ledger(LedgerError::Damaged(e)))?;
            if records.is_empty() {
                break;
            }
            next += records.len() as u64;
            for record in &records {
                serde_json::to_writer(&mut *out, &line_json(record))
                    .map_err(|e| io(io::Error::other(e)))?;
                out.write_all(b"\n").map_err(io)?;
            }
            progress(next - 1, head);
        }
        out.flush().map_err(io)?;
        closed(self)?;
        Ok(next - 1)
    }

    /// Imports an export into a new ledger in `dir`, which must not exist
    /// or be an empty directory, and returns what its verification found.
    /// Open it afterwards with [`Ledger::open_with`] and the same options.
    ///
    /// The whole file is checked first, writing nothing: each record's
    /// hash and the chain, each line's readable fields against its record,
    /// unique event ids, and the command rules, replayed with each event's
    /// recorded actor and time (see the module docs). With `expect_head`,
    /// the file's last record must be that head. Then the records are
    /// appended as they were into a copy beside `dir`, which is verified
    /// and renamed into place only if its head is the one checked: an
    /// import that stops, for any reason, leaves `dir` as it was.
    ///
    /// `progress` is told the records appended and how many there are.
    pub fn import(
        dir: &Path,
        file: &Path,
        expect_head: Option<Head>,
        options: LedgerOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Verified, TransferError> {
        check_target(dir)?;
        let checked = check_file(file)?;
        if let Some(expected) = expect_head
            && expected != checked
        {
            return Err(TransferError::UnexpectedHead {
                expected,
                found: checked,
            });
        }
        let staging = Staging::beside(dir)?;
        let ledger = Ledger::open_with(&staging.path, options).map_err(TransferError::Ledger)?;
        let verified = ledger.append_checked(file, checked, progress)?;
        drop(ledger);
        SledLog::wait_closed(&staging.path)
            .map_err(|e| TransferError::Ledger(LedgerError::Open(e)))?;
        staging.move_to(dir)?;
        Ok(verified)
    }

    /// The second reading of an import, into this new, empty ledger: the
    /// lines checked again as they are appended, and the whole refused
    /// unless it ends at `checked`, the first reading's head.
    pub(crate) fn append_checked(
        &self,
        path: &Path,
        checked: Head,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Verified, TransferError> {
        let mut projection = self.writer();
        let total = checked.position;
        let mut chain = ChainCheck::new();
        let mut lines = Lines::open(path)?;
        let mut batch = Vec::with_capacity(CHUNK.min(MAX_BATCH));
        let mut append = |batch: &mut Vec<Vec<u8>>| -> Result<(), TransferError> {
            let from = self.head().position + 1;
            let count = batch.len();
            self.log
                .append_records(std::mem::take(batch))
                .map_err(|e| TransferError::Ledger(LedgerError::Append(e)))?;
            for stored in self
                .log
                .read(from, count)
                .map_err(|e| TransferError::Ledger(LedgerError::Damaged(e)))?
            {
                projection.apply(stored.envelope);
            }
            progress(self.head().position, total);
            Ok(())
        };
        while let Some((line, text)) = lines.next(path)? {
            let record = check_line(text, &mut chain)
                .map_err(|problem| TransferError::Line { line, problem })?;
            batch.push(record.bytes);
            if batch.len() == CHUNK {
                append(&mut batch)?;
            }
        }
        if !batch.is_empty() {
            append(&mut batch)?;
        }
        if chain.head() != checked {
            return Err(TransferError::Changed {
                first: checked,
                second: chain.head(),
            });
        }
        projection.publish();
        drop(projection);
        let verified = self
            .verify()
            .map_err(|e| TransferError::Ledger(LedgerError::Damaged(e)))?;
        if verified.head != checked {
            return Err(TransferError::Changed {
                first: checked,
                second: verified.head,
            });
        }
        Ok(verified)
    }
}
