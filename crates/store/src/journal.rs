//! The journal: the file that makes a commit durable with one `fdatasync`.
//!
//! sled 0.34 needs two trips to the device per durable commit: its
//! `flush()` writes and waits (`sync_file_range`), then `fsync` flushes the
//! drive's cache and the file's metadata. The journal needs one. Each group
//! of records is appended here as one frame and synced; only then is the
//! group acknowledged. sled gets the same records in memory at the same
//! time, and is flushed and synced only now and then (a *checkpoint*), after
//! which the journal is emptied.
//!
//! Opening replays into sled whatever the journal holds beyond sled's head,
//! so an acknowledged record is in sled again before anyone reads.
//!
//! ```text
//! frame:   magic "TLJ2" ‖ payload length (u64 BE) ‖ its complement ‖ BLAKE3(payload) ‖ payload
//! payload: (position (u64 BE) ‖ record length (u32 BE) ‖ record)*
//! ```
//!
//! A crash can leave only the last frame incomplete, because frames are
//! appended one after another and a group is acknowledged only once its
//! frame is synced. So an incomplete or mismatching frame at the end of the
//! file is a torn write of a group nobody was told about, and is cut off;
//! one followed by more bytes is damage, and opening fails with its offset.
//! The length is stored twice (the second time inverted) so that a
//! flipped bit in it is damage, not a frame that seems to run past the end
//! of the file and would be taken for the torn last one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::dirs::sync_dir;

const MAGIC: [u8; 4] = *b"TLJ2";
const HEADER_LEN: u64 = 4 + 8 + 8 + 32;

/// One record to write, with its position.
pub(crate) struct Entry<'a> {
    pub(crate) position: u64,
    pub(crate) record: &'a [u8],
}

/// A record read back from the journal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub(crate) position: u64,
    pub(crate) record: Vec<u8>,
}

/// Why the journal could not be read.
#[derive(Debug)]
pub(crate) enum JournalError {
    /// Reading, writing or syncing the file failed.
    Io(io::Error),
    /// A frame before the last one is damaged.
    Damaged {
        /// Where the frame starts, in bytes from the start of the file.
        offset: u64,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl From<io::Error> for JournalError {
    fn from(error: io::Error) -> JournalError {
        JournalError::Io(error)
    }
}

#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    len: u64,
    /// A failed write could not be cut back: the file ends in bytes that
    /// are not a frame, so nothing more may be written after them.
    broken: bool,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and reads it,
    /// cutting off a torn last frame. Returns the records it holds, in order.
    pub(crate) fn open(path: &Path) -> Result<(Journal, Vec<Recovered>), JournalError> {
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        if created {
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, valid) = read_frames(&bytes)?;
        let mut journal = Journal {
            file,
            path: path.to_owned(),
            len: bytes.len() as u64,
            broken: false,
        };
        if valid < journal.len {
            journal.truncate(valid)?;
            journal.file.sync_data()?;
        }
        Ok((journal, records))
    }

    /// Appends one frame holding `entries`, not yet synced. If the write
    /// fails, the file is cut back to where it was; if even that fails, the
    /// error says so and the journal must not be written again.
    pub(crate) fn append(&mut self, entries: &[Entry<'_>]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(format!(
                "`{}` ends in a failed write that could not be cut off; reopen the log",
                self.path.display()
            )));
        }
        let frame = frame(entries)?;
        match self.file.write_all(&frame) {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(error) => {
                let len = self.len;
                self.truncate(len).map_err(|undo| {
                    io::Error::other(format!(
                        "{error}; and cutting `{}` back to {len} bytes failed: {undo}",
                        self.path.display()
                    ))
                })?;
                Err(error)
            }
        }
    }

    /// Cuts off the last frame written, after its group failed to reach
    /// sled, so that a reopen cannot bring back what the caller was told
    /// failed.
    pub(crate) fn undo(&mut self, to: u64) -> io::Result<()> {
        self.truncate(to)
    }

    /// Makes every frame appended so far durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Empties the journal, once sled holds everything in it durably.
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.truncate(0)?;
        self.file.sync_data()
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let cut = self
            .file
            .set_len(len)
            .and_then(|()| self.file.seek(SeekFrom::Start(len)));
        match cut {
            Ok(_) => {
                self.len = len;
                self.broken = false;
                Ok(())
            }
            Err(error) => {
                self.broken = true;
                Err(error)
            }
        }
    }
}

fn frame(entries: &[Entry<'_>]) -> io::Result<Vec<u8>> {
    let payload_len: usize = entries.iter().map(|e| 8 + 4 + e.record.len()).sum();
    let mut frame = Vec::with_capacity(HEADER_LEN as usize + payload_len);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&(payload_len as u64).to_be_bytes());
    frame.extend_from_slice(&(!(payload_len as u64)).to_be_bytes());
    frame.extend_from_slice(&[0; 32]);
    for entry in entries {
        let len = u32::try_from(entry.record.len())
            .map_err(|_| io::Error::other("a record is longer than 4 GiB"))?;
        frame.extend_from_slice(&entry.position.to_be_bytes());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(entry.record);
    }
    let digest = blake3::hash(frame.get(HEADER_LEN as usize..).unwrap_or_default());
    if let Some(slot) = frame.get_mut(20..HEADER_LEN as usize) {
        slot.copy_from_slice(digest.as_bytes());
    }
    Ok(frame)
}

/// Reads every whole frame of `bytes`. Returns their records and the
/// length of the part that holds whole frames; what follows is a torn
/// last frame.
fn read_frames(bytes: &[u8]) -> Result<(Vec<Recovered>, u64), JournalError> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        match read_frame(rest) {
            Frame::Whole { payload, len } => {
                read_payload(payload, &mut records).map_err(|problem| JournalError::Damaged {
                    offset: offset as u64,
                    problem,
                })?;
                offset += len;
            }
            Frame::Torn => break,
            Frame::Damaged(problem) => {
                return Err(JournalError::Damaged {
                    offset: offset as u64,
                    problem,
                });
            }
        }
    }
    Ok((records, offset as u64))
}

enum Frame<'a> {
    Whole {
        payload: &'a [u8],
        len: usize,
    },
    /// The last frame, cut short or never completely written.
    Torn,
    Damaged(&'static str),
}

/// Reads the frame at the start of `rest`, which runs to the end of the file.
fn read_frame(rest: &[u8]) -> Frame<'_> {
    let Some((header, body)) = rest.split_first_chunk::<{ HEADER_LEN as usize }>() else {
        return Frame::Torn;
    };
    let (magic, after) = header.split_at(4);
    let (len, after) = after.split_at(8);
    let (complement, digest) = after.split_at(8);
    if magic != MAGIC {
        // A file can grow before the bytes that fill it are written:
        // zeros to the end are a frame that was never written.
        return if rest.iter().all(|&b| b == 0) {
            Frame::Torn
        } else {
            Frame::Damaged("the frame does not start with the journal's magic bytes")
        };
    }
    let len = <[u8; 8]>::try_from(len).map_or(u64::MAX, u64::from_be_bytes);
    let complement = <[u8; 8]>::try_from(complement).map_or(u64::MAX, u64::from_be_bytes);
    if len != !complement {
        return Frame::Damaged("the frame's length and its complement disagree");
    }
    let Some(payload) = usize::try_from(len).ok().and_then(|len| body.get(..len)) else {
        return Frame::Torn;
    };
    if blake3::hash(payload).as_bytes().as_slice() != digest {
        return if payload.len() == body.len() {
            Frame::Torn
        } else {
            Frame::Damaged("the frame's bytes do not match its checksum")
        };
    }
    Frame::Whole {
        payload,
        len: HEADER_LEN as usize + payload.len(),
    }
}

fn read_payload(mut payload: &[u8], records: &mut Vec<Recovered>) -> Result<(), &'static str> {
    const CUT: &str = "a record in the frame is cut short";
    while !payload.is_empty() {
        let (position, rest) = payload.split_first_chunk::<8>().ok_or(CUT)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(CUT)?;
        let len = u32::from_be_bytes(*len) as usize;
        let record = rest.get(..len).ok_or(CUT)?;
        records.push(Recovered {
            position: u64::from_be_bytes(*position),
            record: record.to_vec(),
        });
        payload = rest.get(len..).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "a test fails loudly at the first surprise"
    )]

    use super::*;

    fn write(path: &Path, groups: &[&[(u64, &[u8])]]) -> Vec<u64> {
        let (mut journal, _) = Journal::open(path).unwrap();
        let mut ends = Vec::new();
        for group in groups {
            let entries: Vec<_> = group
                .iter()
                .map(|&(position, record)| Entry { position, record })
                .collect();
            journal.append(&entries).unwrap();
            ends.push(journal.len());
        }
        journal.sync().unwrap();
        ends
    }

    fn positions(records: &[Recovered]) -> Vec<u64> {
        records.iter().map(|r| r.position).collect()
    }

    #[test]
    fn frames_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write(&path, &[&[(1, b"one"), (2, b"two")], &[(3, b"")]]);
        let (journal, records) = Journal::open(&path).unwrap();
        assert_eq!(positions(&records), vec![1, 2, 3]);
        assert_eq!(records[1].record, b"two");
        assert_eq!(records[2].record, b"");
        assert_eq!(journal.len(), std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn every_cut_of_the_last_frame_is_a_torn_write_and_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let ends = write(&path, &[&[(1, b"one")], &[(2, b"two"), (3, b"three")]]);
        let whole = std::fs::read(&path).unwrap();
        for cut in ends[0]..ends[1] {
            std::fs::write(&path, &whole[..cut as usize]).unwrap();
            let (journal, records) = Journal::open(&path).unwrap();
            assert_eq!(positions(&records), vec![1], "cut at {cut}");
            assert_eq!(journal.len(), ends[0]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[0]);
        }
        // Zeros where the last frame should be: the file grew, the bytes never came.
        let mut zeros = whole[..ends[0] as usize].to_vec();
        zeros.resize(whole.len(), 0);
        std::fs::write(&path, &zeros).unwrap();
        assert_eq!(positions(&Journal::open(&path).unwrap().1), vec![1]);
    }

    #[test]
    fn a_damaged_frame_before_the_last_is_an_error_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let ends = write(&path, &[&[(1, b"one")], &[(2, b"two")], &[(3, b"three")]]);
        let whole = std::fs::read(&path).unwrap();
        for at in ends[0]..ends[1] {
            let mut damaged = whole.clone();
            damaged[at as usize] ^= 0x20;
            std::fs::write(&path, &damaged).unwrap();
            match Journal::open(&path) {
                Err(JournalError::Damaged { offset, .. }) => assert_eq!(offset, ends[0]),
                other => panic!("byte {at}: {other:?}"),
            }
            assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing is cut off");
        }
    }

    #[test]
    fn a_failed_group_is_undone_and_clear_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut journal, _) = Journal::open(&path).unwrap();
        journal
            .append(&[Entry {
                position: 1,
                record: b"one",
            }])
            .unwrap();
        let kept = journal.len();
        journal
            .append(&[Entry {
                position: 2,
                record: b"two",
            }])
            .unwrap();
        journal.undo(kept).unwrap();
        journal
            .append(&[Entry {
                position: 2,
                record: b"again",
            }])
            .unwrap();
        journal.sync().unwrap();
        let (_, records) = Journal::open(&path).unwrap();
        assert_eq!(records[1].record, b"again");
        journal.clear().unwrap();
        assert!(Journal::open(&path).unwrap().1.is_empty());
    }
}
