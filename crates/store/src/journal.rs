//! The journal: the file that makes a commit durable with one `fdatasync`.
//!
//! sled 0.34 needs two trips to the device per durable commit: its
//! `flush()` writes and waits (`sync_file_range`), then `fsync` flushes the
//! drive's cache and the file's metadata. The journal needs one. Each group
//! of records is written here as one frame and synced; only then is the
//! group acknowledged. sled gets the same records in memory at the same
//! time, and is flushed and synced only now and then (a *checkpoint*), after
//! which the journal is emptied.
//!
//! Opening replays into sled whatever the journal holds beyond sled's head,
//! so an acknowledged record is in sled again before anyone reads.
//!
//! The file is written over, not appended to: it grows in steps of
//! [`GROW`], filled with zeros when it does, and emptying it starts again
//! at the first frame rather than cutting the file. A write that makes a
//! file longer changes its size, which `fdatasync` must commit to the
//! filesystem's own journal; a write over bytes already there does not. On
//! this machine's ext4, 2,000 syncs of 2.4 KB took 121–125 µs (median)
//! appended, 79–96 µs written over (a throwaway program); what it did for
//! the log's appends is in the crate docs.
//!
//! ```text
//! file:    header (block 0) ‖ its copy (block 1) ‖ frames (from 8192)
//! frame:   magic "TLF4" ‖ payload length (u64 BE)
//!          ‖ MAC("TLF4" ‖ generation ‖ offset ‖ length), 16 bytes
//!          ‖ MAC(generation ‖ offset ‖ payload) ‖ payload ‖ zeros to a block's end
//! payload: (position (u64 BE) ‖ record length (u32 BE) ‖ record)*
//! ```
//!
//! The header is in `journal_header.rs`. MAC is BLAKE3 keyed with the
//! header's key; `offset` is the frame's place in the file (u64 BE).
//! Emptying the journal writes a new header, with the next generation and
//! a fresh random key, before any frame follows: the frames before it no
//! longer check under the new key, so they read as stale bytes, and so
//! does anything a record's own bytes might imitate, since no record
//! author knows the key. A frame checks only at the offset, and in the
//! generation, it was written for: a write the disk put in the wrong place
//! (a misdirected write) reads as damage or as the end, never as a frame.
//! Either header copy damaged leaves the other, and opening writes back a
//! copy that differs: one flipped bit in a header must not turn the
//! journal's records into stale bytes.
//!
//! Every frame starts on a 4 KiB block and is written with the zeros to
//! its last block's end, so writing a frame never writes a block that
//! holds an acknowledged frame. Packed byte by byte, as in the format
//! before, frame N+1 rewrote the block holding the tail of frame N: a drive
//! without power-safe overwrite can garble a block that a power cut
//! interrupts, and recovery would have taken the acknowledged frame N for
//! a torn last frame and dropped it. A single event's frame takes a block
//! rather than about 300 bytes; the sync costs the same (one block
//! either way), and the journal fills, and is emptied into sled, sooner.
//! What does cost is a new journal's growth: 1 MiB of zeros every 256
//! single-event frames, fourteen times the zeros an event paid when
//! frames were packed, each step synced with the frame after it. On this
//! machine's shared and saturated disk (a plain write and `fsync` took 2
//! to 5 ms), 2,000 single appends to a new log took 142 µs median and 1.3
//! ms mean, and once its journal was written over 92 µs median and 144 µs
//! mean (a throwaway test); the journal is written over from its 8,193rd
//! frame on, until the log is closed: a clean close cuts it back to its
//! headers ([`Journal::shrink`]), since every open reads the whole file,
//! so each run of a process pays the growth again. That trades the first
//! 32 MiB of appends after an open for about 100 ms of every open of a
//! grown journal (818 against 718 ms median, opening the 1M-event bench
//! log by hand: commit 970251c).
//!
//! A crash can leave only the last frame incomplete, because a group is
//! acknowledged only once its frame is synced, and the next is written only
//! after. So a frame that fails to check is the end of the journal, torn or
//! never written, unless a frame that checks starts on a later block: then
//! it is damage, and opening fails with its offset.
//!
//! A journal of the format before (3) is read once at open, and its
//! records carried into one of this format (`journal_v3.rs`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::dirs::{create_private_file, private_file, sync_dir};
use crate::journal_header::{BLOCK, HEADER_AT, Header, is_old_format};
use crate::journal_v3;
use crate::sled_options::{FaultInjector, FaultPoint, inject};

/// Where the first frame starts: after the headers' blocks.
const FRAMES_AT: u64 = 2 * BLOCK;
const FRAME_MAGIC: [u8; 4] = *b"TLF4";
const FRAME_HEADER_LEN: usize = 4 + 8 + 16 + 32;
/// How much the file grows by when a frame does not fit: the first of the
/// default 32 MiB of frames pay for the zeros, one group in 256.
const GROW: u64 = 1 << 20;

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
    /// The journal is damaged before its last frame, or missing.
    Damaged {
        /// Where the damage is, in bytes from the start of the file.
        offset: u64,
        /// What is wrong there.
        problem: &'static str,
    },
}

impl From<io::Error> for JournalError {
    fn from(error: io::Error) -> JournalError {
        JournalError::Io(error)
    }
}

/// Why a frame could not be appended.
#[derive(Debug)]
pub(crate) enum AppendFailed {
    /// The write failed, and its frame was wiped out and that synced:
    /// nothing of it can come back.
    Undone(io::Error),
    /// The write failed and wiping it out failed too (or an earlier one
    /// did): the frame may read as whole after a crash, so nothing more
    /// may be written, and the log must be poisoned.
    Broken(String),
}

pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    header: Header,
    /// Bytes of frames since the journal was last emptied, a whole number
    /// of blocks.
    len: u64,
    /// The file's length: every byte of it has been written.
    capacity: u64,
    /// A failed write could not be undone: its frame may read as whole,
    /// so nothing more may be written after it.
    broken: bool,
    /// Fault injection, for tests: [`FaultPoint::Write`] and
    /// [`FaultPoint::Undo`].
    pub(crate) faults: Option<FaultInjector>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key: it is what keeps stale bytes from reading as frames.
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("generation", &self.header.generation)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal at `path` and reads it; returns the records it
    /// holds, in order. A journal that is not there, or has no header yet,
    /// is created only if `may_create`: once the log has been settled, its
    /// journal's header has been synced, and a journal missing or empty then
    /// is a lost write or a removed file, whose acknowledged records a new
    /// empty journal would silently drop.
    pub(crate) fn open(
        path: &Path,
        may_create: bool,
    ) -> Result<(Journal, Vec<Recovered>), JournalError> {
        let created = !path.exists();
        if created && !may_create {
            return Err(JournalError::Damaged {
                offset: 0,
                problem: "the journal is missing, though the log has been settled with one",
            });
        }
        let mut file = private_file()
            .create(may_create)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if !has_header(&bytes) && journal_v3::is_v3(&bytes) {
            drop(file);
            convert(path, &journal_v3::parse(&bytes)?)?;
            return Journal::open(path, may_create);
        }
        let (header, records, len) = match parse(&bytes)? {
            Some(Parsed {
                header,
                copies,
                records,
                len,
            }) => {
                if copies < HEADER_AT.len() {
                    header.write(&file, &mut || Ok(()))?;
                }
                (header, records, len)
            }
            None if !may_create => {
                return Err(JournalError::Damaged {
                    offset: 0,
                    problem: "the journal has no header, though the log has been settled with one",
                });
            }
            None => {
                // New, or its creation was cut short before anything was
                // acknowledged: write the first header and its copy.
                let header = Header::first()?;
                file.set_len(0)?;
                let block = header.block();
                file.write_all_at(&[block.as_slice(), block.as_slice()].concat(), 0)?;
                file.sync_all()?;
                if created && let Some(dir) = path.parent() {
                    sync_dir(dir)?;
                }
                (header, Vec::new(), 0)
            }
        };
        let capacity = file.metadata()?.len();
        let journal = Journal {
            file,
            path: path.to_owned(),
            header,
            len,
            capacity,
            broken: false,
            faults: None,
        };
        Ok((journal, records))
    }

    /// Writes one frame holding `entries` after the last, not yet synced.
    /// If the write fails, its frame is wiped out and that is synced; if
    /// even that fails, the journal must not be written again.
    pub(crate) fn append(&mut self, entries: &[Entry<'_>]) -> Result<(), AppendFailed> {
        if self.broken {
            return Err(AppendFailed::Broken(format!(
                "`{}` holds a failed write that could not be wiped out; reopen the log",
                self.path.display()
            )));
        }
        let at = FRAMES_AT + self.len;
        let frame = frame(&self.header, at, entries).map_err(AppendFailed::Undone)?;
        let end = at + frame.len() as u64;
        let written = self
            .file
            .write_all_at(&frame, at)
            .and_then(|()| inject(&self.faults, FaultPoint::Write))
            .and_then(|()| self.reserve(end));
        match written {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(error) => {
                let len = self.len;
                match self.undo(len) {
                    Ok(()) => Err(AppendFailed::Undone(error)),
                    Err(undo) => Err(AppendFailed::Broken(format!(
                        "{error}; and wiping out the frame at byte {at} of `{}` failed: {undo}",
                        self.path.display()
                    ))),
                }
            }
        }
    }

    /// Wipes out the last frame, written at `to` (a [`Journal::len`] taken
    /// before it), after its group failed, so that a reopen cannot bring
    /// back what the caller was told failed: its first block is zeroed, so
    /// the frame no longer checks and none follows it, and that is synced,
    /// or a power cut could keep the frame and lose its undoing. If either
    /// fails the journal is broken: nothing more is written to it.
    pub(crate) fn undo(&mut self, to: u64) -> io::Result<()> {
        let wiped = inject(&self.faults, FaultPoint::Undo)
            .and_then(|()| self.file.write_all_at(&[0; BLOCK as usize], FRAMES_AT + to))
            .and_then(|()| self.file.sync_data());
        match wiped {
            Ok(()) => {
                self.len = to;
                self.broken = false;
                Ok(())
            }
            Err(error) => {
                self.broken = true;
                Err(error)
            }
        }
    }

    /// Makes every frame written so far durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The header in force.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// Empties the journal, once sled holds everything in it durably:
    /// `next` (made by [`Header::next`] from [`Journal::header`], and
    /// recorded in sled first) is written and synced; `copied` is called
    /// after each of its copies.
    pub(crate) fn clear(
        &mut self,
        next: Header,
        copied: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        next.write(&self.file, copied)?;
        self.header = next;
        self.len = 0;
        self.broken = false;
        Ok(())
    }

    /// Cuts the file back to its headers, once emptied ([`Journal::clear`]):
    /// an open reads the whole file to find its frames, and the frames of
    /// earlier generations that fill a grown journal cost each open a read
    /// of megabytes it cannot use (about 12% of opening a million events
    /// with a 32 MiB journal, measured by hand for commit 970251c). Appends grow it again ([`Journal::reserve`]).
    /// Not synced: a journal of either length holds the same headers and no
    /// frame of their generation.
    pub(crate) fn shrink(&mut self) -> io::Result<()> {
        if self.len != 0 {
            return Ok(());
        }
        self.file.set_len(FRAMES_AT)?;
        self.capacity = FRAMES_AT;
        Ok(())
    }

    /// Bytes of frames since the journal was last emptied.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Makes sure the file reaches `end`, growing it with zeros up to the
    /// next [`GROW`] if not, so that later frames write over bytes that
    /// are there.
    fn reserve(&mut self, end: u64) -> io::Result<()> {
        if end <= self.capacity {
            return Ok(());
        }
        let capacity = end.next_multiple_of(GROW);
        let zeros = vec![0; usize::try_from(capacity - end).map_err(io::Error::other)?];
        self.file.write_all_at(&zeros, end)?;
        self.capacity = capacity;
        Ok(())
    }
}

/// Reads the journal at `path` without changing it: the records it holds.
pub(crate) fn read(path: &Path) -> Result<Vec<Recovered>, JournalError> {
    let bytes = std::fs::read(path)?;
    if !has_header(&bytes) && journal_v3::is_v3(&bytes) {
        return journal_v3::parse(&bytes);
    }
    Ok(parse(&bytes)?
        .map(|parsed| parsed.records)
        .unwrap_or_default())
}

/// Whether `bytes` hold a whole header of this format.
fn has_header(bytes: &[u8]) -> bool {
    HEADER_AT
        .iter()
        .any(|at| Header::read(bytes, *at).is_some())
}

/// Replaces the journal of format 3 at `path` with one of this format
/// holding `records`, in one frame: written beside it, synced, and renamed
/// over it, so that a crash leaves one or the other whole. Its generation
/// starts again at 0: sled, settled by the version before, records none.
fn convert(path: &Path, records: &[Recovered]) -> io::Result<()> {
    let header = Header::first()?;
    let mut bytes = [header.block(), header.block()].concat();
    if !records.is_empty() {
        let entries: Vec<Entry<'_>> = records
            .iter()
            .map(|r| Entry {
                position: r.position,
                record: &r.record,
            })
            .collect();
        bytes.extend_from_slice(&frame(&header, FRAMES_AT, &entries)?);
    }
    let converted = path.with_extension("converting");
    let mut file = create_private_file(&converted)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&converted, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// The MAC of a frame's header: what it says its length is, where, and in
/// which generation.
fn header_mac(header: &Header, offset: u64, len: u64) -> [u8; 16] {
    let mut mac = blake3::Hasher::new_keyed(&header.key);
    mac.update(&FRAME_MAGIC)
        .update(&header.generation.to_be_bytes())
        .update(&offset.to_be_bytes())
        .update(&len.to_be_bytes());
    let mut out = [0; 16];
    mac.finalize_xof().fill(&mut out);
    out
}

/// The MAC of a frame's payload, bound to where and in which generation.
fn payload_mac(header: &Header, offset: u64, payload: &[u8]) -> [u8; 32] {
    let mut mac = blake3::Hasher::new_keyed(&header.key);
    mac.update(&header.generation.to_be_bytes())
        .update(&offset.to_be_bytes())
        .update(payload);
    *mac.finalize().as_bytes()
}

/// The frame of `entries`, to be written at `offset`, padded with zeros to
/// a whole number of blocks.
fn frame(header: &Header, offset: u64, entries: &[Entry<'_>]) -> io::Result<Vec<u8>> {
    let payload_len: usize = entries.iter().map(|e| 8 + 4 + e.record.len()).sum();
    let padded = (FRAME_HEADER_LEN + payload_len).next_multiple_of(BLOCK as usize);
    let mut frame = Vec::with_capacity(padded);
    frame.extend_from_slice(&FRAME_MAGIC);
    frame.extend_from_slice(&(payload_len as u64).to_be_bytes());
    frame.extend_from_slice(&header_mac(header, offset, payload_len as u64));
    frame.extend_from_slice(&[0; 32]);
    for entry in entries {
        let len = u32::try_from(entry.record.len())
            .map_err(|_| io::Error::other("a record is longer than 4 GiB"))?;
        frame.extend_from_slice(&entry.position.to_be_bytes());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(entry.record);
    }
    let mac = payload_mac(
        header,
        offset,
        frame.get(FRAME_HEADER_LEN..).unwrap_or_default(),
    );
    if let Some(slot) = frame.get_mut(FRAME_HEADER_LEN - 32..FRAME_HEADER_LEN) {
        slot.copy_from_slice(&mac);
    }
    frame.resize(padded, 0);
    Ok(frame)
}

/// What a journal holds.
struct Parsed {
    header: Header,
    /// How many of the header's places hold it.
    copies: usize,
    records: Vec<Recovered>,
    /// Bytes of whole frames, padding included.
    len: u64,
}

/// Reads the journal's bytes: `None` if it has no header yet, which is
/// only so while it is no longer than the headers' blocks.
fn parse(bytes: &[u8]) -> Result<Option<Parsed>, JournalError> {
    let headers = HEADER_AT.map(|at| Header::read(bytes, at));
    let header = headers
        .iter()
        .flatten()
        .max_by_key(|h| h.generation)
        .copied();
    let Some(header) = header else {
        if is_old_format(bytes) {
            return Err(JournalError::Damaged {
                offset: 0,
                problem: "the journal is in format 2 (appended to, not written over); open and \
                          close the log with a version that reads it, to empty it",
            });
        }
        if bytes.len() as u64 > FRAMES_AT {
            return Err(JournalError::Damaged {
                offset: 0,
                problem: "neither of the journal's headers is whole",
            });
        }
        return Ok(None);
    };
    let block = BLOCK as usize;
    let mut records = Vec::new();
    let mut offset = FRAMES_AT as usize;
    while let Some(payload) = frame_at(bytes, offset, &header) {
        read_payload(payload, &mut records).map_err(|problem| JournalError::Damaged {
            offset: offset as u64,
            problem,
        })?;
        offset += (FRAME_HEADER_LEN + payload.len()).next_multiple_of(block);
    }
    // The frame at `offset` does not check: the end, unless one starts on
    // a later block.
    let later = (offset + block..bytes.len())
        .step_by(block)
        .any(|at| frame_header_at(bytes, at, &header).is_some());
    if later {
        return Err(JournalError::Damaged {
            offset: offset as u64,
            problem: "the frame does not match its checksums, and a later frame does",
        });
    }
    Ok(Some(Parsed {
        header,
        copies: headers.iter().filter(|h| **h == Some(header)).count(),
        records,
        len: offset as u64 - FRAMES_AT,
    }))
}

/// The payload length of the frame at `offset`, if its header checks.
fn frame_header_at(bytes: &[u8], offset: usize, header: &Header) -> Option<usize> {
    let frame = bytes.get(offset..)?.first_chunk::<FRAME_HEADER_LEN>()?;
    let (magic, rest) = frame.split_first_chunk::<4>()?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let (mac, _) = rest.split_first_chunk::<16>()?;
    let len = u64::from_be_bytes(*len);
    (*magic == FRAME_MAGIC && header_mac(header, offset as u64, len) == *mac)
        .then(|| usize::try_from(len).ok())
        .flatten()
}

/// The payload of the frame at `offset`, if it is whole and checks.
fn frame_at<'a>(bytes: &'a [u8], offset: usize, header: &Header) -> Option<&'a [u8]> {
    let len = frame_header_at(bytes, offset, header)?;
    let start = offset + FRAME_HEADER_LEN;
    let mac = bytes.get(start - 32..start)?;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (payload_mac(header, offset as u64, payload).as_slice() == mac).then_some(payload)
}

pub(crate) fn read_payload(
    mut payload: &[u8],
    records: &mut Vec<Recovered>,
) -> Result<(), &'static str> {
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
mod tests;
