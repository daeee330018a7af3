//! Export to JSON lines and import into an empty ledger.
//!
//! Each line is one event as `history --json` shows it, plus the hash of
//! the record before it and the record's bytes in hex. The bytes are what
//! the hash chain covers, so an import rebuilds the log byte for byte and
//! its hashes, and the readable fields must be exactly what those bytes
//! say: a line edited by hand is refused, and so is a broken chain.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenledger_events::EventId;
use tokenledger_store::{ChainCheck, EventLog, MAX_BATCH, StoredRecord, Verified, hex};

use crate::json::event_json;
use crate::ledger::{Ledger, LedgerError};

/// Why an export or import stopped. An import that stops has written
/// nothing: every line is checked before the first is appended.
#[derive(Debug)]
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
    /// An import goes into an empty ledger only.
    NotEmpty {
        /// The ledger's head.
        head: u64,
    },
    /// A line of the import is wrong.
    Line {
        /// Its number, from 1.
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            TransferError::Ledger(error) => fmt::Display::fmt(error, f),
            TransferError::NotEmpty { head } => write!(
                f,
                "an import goes into an empty data directory, and this one holds {head} events"
            ),
            TransferError::Line { line, problem } => {
                write!(f, "line {line}: {problem}; nothing was imported")
            }
        }
    }
}

impl std::error::Error for TransferError {}

/// The longest line an import reads: a record is at most 64 KiB, twice
/// that in hex, and its readable fields are smaller than the record.
const MAX_LINE: u64 = 512 * 1024;

/// How many records are read or appended at a time.
const CHUNK: usize = 1_000;

fn line_json(record: &StoredRecord) -> Value {
    let mut json = event_json(&record.event);
    if let Value::Object(map) = &mut json {
        map.insert("previous".to_owned(), Value::String(hex(&record.previous)));
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
fn check_line(text: &str, chain: &mut ChainCheck) -> Result<(Vec<u8>, EventId), String> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| format!("the line is not JSON: {e}"))?;
    let bytes = json
        .get("record")
        .and_then(Value::as_str)
        .and_then(unhex)
        .ok_or("the line has no `record` field of hex digits")?;
    let previous = chain.head().hash;
    let event = chain.check(&bytes).map_err(|damage| damage.to_string())?;
    let event_id = event.envelope.event_id;
    let expected = line_json(&StoredRecord {
        event,
        previous,
        bytes: bytes.clone(),
    });
    if json != expected {
        return Err(
            "its readable fields do not match its record (was the line edited?)".to_owned(),
        );
    }
    Ok((bytes, event_id))
}

impl Ledger {
    /// Writes every event to `out` as JSON lines, oldest first, and returns
    /// how many. `progress` is told the position reached and the head.
    pub fn export(
        &self,
        out: &mut dyn Write,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, TransferError> {
        let head = self.head().position;
        let io = |error| TransferError::Io {
            path: path.to_owned(),
            error,
        };
        let mut next = 1;
        while next <= head {
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
        Ok(next - 1)
    }

    /// Imports an export into this ledger, which must be empty. Every line
    /// is checked first (its record's hash, the chain, its readable fields,
    /// unique event ids), so a bad file imports nothing; then the records
    /// are appended as they were and the log is verified. The file is read
    /// twice, so it must not change during the import; if it does, the
    /// second reading refuses the changed line, after the lines before it.
    pub fn import(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Verified, TransferError> {
        let mut projection = self.writer.lock();
        let head = self.head().position;
        if head != 0 {
            return Err(TransferError::NotEmpty { head });
        }
        let open = || -> Result<Lines<BufReader<File>>, TransferError> {
            let file = File::open(path).map_err(|error| TransferError::Io {
                path: path.to_owned(),
                error,
            })?;
            Ok(Lines {
                input: BufReader::new(file),
                number: 0,
                buffer: String::new(),
            })
        };

        let mut chain = ChainCheck::new();
        let mut ids = HashSet::new();
        let mut lines = open()?;
        while let Some((line, text)) = lines.next(path)? {
            let (_, id) = check_line(text, &mut chain)
                .map_err(|problem| TransferError::Line { line, problem })?;
            if !ids.insert(id) {
                return Err(TransferError::Line {
                    line,
                    problem: format!("event id `{id}` appears twice"),
                });
            }
        }
        let total = chain.head().position;

        let mut chain = ChainCheck::new();
        let mut lines = open()?;
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
            let (bytes, _) = check_line(text, &mut chain)
                .map_err(|problem| TransferError::Line { line, problem })?;
            batch.push(bytes);
            if batch.len() == CHUNK {
                append(&mut batch)?;
            }
        }
        if !batch.is_empty() {
            append(&mut batch)?;
        }
        projection.publish();
        drop(projection);
        self.verify()
            .map_err(|e| TransferError::Ledger(LedgerError::Damaged(e)))
    }
}
