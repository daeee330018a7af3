//! The journal's format before frames were put on 4 KiB blocks (format 3),
//! read once, when a log written by an earlier version is opened: its
//! records are carried into a journal of the current format
//! (`Journal::open`), and the old file is never written.
//!
//! ```text
//! file:    header (at 0) ‖ its copy (at 512) ‖ zeros ‖ frames (from 4096)
//! header:  magic "TLJH" ‖ generation (u64 BE) ‖ key (32 bytes) ‖ BLAKE3(all before)
//! frame:   magic "TLJ3" ‖ payload length (u64 BE) ‖ MAC(magic ‖ length), 16 bytes
//!          ‖ MAC(payload) ‖ payload
//! ```
//!
//! Frames are packed byte by byte and their MACs do not cover their
//! offset; the rules for the end are the current format's: a frame that
//! fails to check is the end, unless a frame that checks comes after it.

use crate::journal::{JournalError, Recovered, read_payload};

const HEADER_MAGIC: [u8; 4] = *b"TLJH";
const HEADER_LEN: usize = 4 + 8 + 32 + 32;
const HEADER_AT: [usize; 2] = [0, 512];
const FRAMES_AT: usize = 4096;
const FRAME_MAGIC: [u8; 4] = *b"TLJ3";
const FRAME_HEADER_LEN: usize = 4 + 8 + 16 + 32;

/// Whether `bytes` hold a journal of format 3: a whole header of it.
pub(crate) fn is_v3(bytes: &[u8]) -> bool {
    HEADER_AT.iter().any(|at| key_at(bytes, *at).is_some())
}

/// The records a journal of format 3 holds, in order.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Recovered>, JournalError> {
    let key = HEADER_AT
        .iter()
        .filter_map(|at| key_at(bytes, *at))
        .max_by_key(|(generation, _)| *generation)
        .map(|(_, key)| key)
        .ok_or(JournalError::Damaged {
            offset: 0,
            problem: "neither of the journal's headers (format 3) is whole",
        })?;
    let mut records = Vec::new();
    let mut offset = FRAMES_AT;
    while let Some(payload) = frame_at(bytes, offset, &key) {
        read_payload(payload, &mut records).map_err(|problem| JournalError::Damaged {
            offset: offset as u64,
            problem,
        })?;
        offset += FRAME_HEADER_LEN + payload.len();
    }
    let rest = bytes.get(offset + 1..).unwrap_or_default();
    let later = memchr::memmem::find_iter(rest, &FRAME_MAGIC)
        .any(|found| frame_header_at(bytes, offset + 1 + found, &key).is_some());
    if later {
        return Err(JournalError::Damaged {
            offset: offset as u64,
            problem: "the frame does not match its checksums, and a later frame does",
        });
    }
    Ok(records)
}

/// The generation and key of the header at `at`, if it is whole.
fn key_at(bytes: &[u8], at: usize) -> Option<(u64, [u8; 32])> {
    let bytes = bytes.get(at..)?.first_chunk::<HEADER_LEN>()?;
    let (body, digest) = bytes.split_at(HEADER_LEN - 32);
    let (magic, rest) = body.split_first_chunk::<4>()?;
    let (generation, key) = rest.split_first_chunk::<8>()?;
    let whole = *magic == HEADER_MAGIC && blake3::hash(body).as_bytes().as_slice() == digest;
    whole.then(|| {
        Some((
            u64::from_be_bytes(*generation),
            <[u8; 32]>::try_from(key).ok()?,
        ))
    })?
}

fn header_mac(key: &[u8; 32], len: u64) -> [u8; 16] {
    let mut mac = blake3::Hasher::new_keyed(key);
    mac.update(&FRAME_MAGIC).update(&len.to_be_bytes());
    let mut out = [0; 16];
    mac.finalize_xof().fill(&mut out);
    out
}

fn frame_header_at(bytes: &[u8], offset: usize, key: &[u8; 32]) -> Option<usize> {
    let header = bytes.get(offset..)?.first_chunk::<FRAME_HEADER_LEN>()?;
    let (magic, rest) = header.split_first_chunk::<4>()?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let (mac, _) = rest.split_first_chunk::<16>()?;
    let len = u64::from_be_bytes(*len);
    (*magic == FRAME_MAGIC && header_mac(key, len) == *mac)
        .then(|| usize::try_from(len).ok())
        .flatten()
}

fn frame_at<'a>(bytes: &'a [u8], offset: usize, key: &[u8; 32]) -> Option<&'a [u8]> {
    let len = frame_header_at(bytes, offset, key)?;
    let start = offset + FRAME_HEADER_LEN;
    let mac = bytes.get(start - 32..start)?;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (blake3::keyed_hash(key, payload).as_bytes().as_slice() == mac).then_some(payload)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "a test fails loudly at the first surprise"
    )]

    use super::*;

    /// A journal of format 3 holding `groups`, one frame each, as the
    /// version before wrote it.
    pub(crate) fn written(groups: &[&[(u64, &[u8])]]) -> Vec<u8> {
        let key = [7; 32];
        let mut bytes = vec![0; FRAMES_AT];
        let mut header = Vec::new();
        header.extend_from_slice(&HEADER_MAGIC);
        header.extend_from_slice(&5u64.to_be_bytes());
        header.extend_from_slice(&key);
        let digest = *blake3::hash(&header).as_bytes();
        header.extend_from_slice(&digest);
        for at in HEADER_AT {
            bytes[at..at + HEADER_LEN].copy_from_slice(&header);
        }
        for group in groups {
            let mut payload = Vec::new();
            for (position, record) in *group {
                payload.extend_from_slice(&position.to_be_bytes());
                payload.extend_from_slice(&(record.len() as u32).to_be_bytes());
                payload.extend_from_slice(record);
            }
            bytes.extend_from_slice(&FRAME_MAGIC);
            bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            bytes.extend_from_slice(&header_mac(&key, payload.len() as u64));
            bytes.extend_from_slice(blake3::keyed_hash(&key, &payload).as_bytes());
            bytes.extend_from_slice(&payload);
        }
        bytes.resize(bytes.len() + 300, 0);
        bytes
    }

    #[test]
    fn a_journal_of_format_3_reads_back_up_to_a_torn_last_frame() {
        let bytes = written(&[&[(1, b"one"), (2, b"two")], &[(3, b"three")]]);
        assert!(is_v3(&bytes));
        let records = parse(&bytes).unwrap();
        let positions: Vec<u64> = records.iter().map(|r| r.position).collect();
        assert_eq!(positions, vec![1, 2, 3]);
        assert_eq!(records[2].record, b"three");
        let end = bytes.len() - 300;
        let records = parse(&bytes[..end - 1]).unwrap();
        assert_eq!(records.len(), 2, "a torn last frame is the end");
        let mut damaged = bytes.clone();
        damaged[FRAMES_AT + 70] ^= 1;
        assert!(matches!(
            parse(&damaged),
            Err(JournalError::Damaged { offset, .. }) if offset as usize == FRAMES_AT
        ));
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    /// A log the version before left after a crash: sled settled before
    /// its records and recording no journal generation, its journal of
    /// format 3 holding them. It opens with every record, and goes on.
    #[test]
    fn a_crashed_log_with_a_journal_of_format_3_opens_with_its_records() {
        use crate::{EventLog, Expectation, Options, SledLog};
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let company = tokenledger_events::CompanyId::from_u128(1);
        let event = |id: u128| crate::NewEvent {
            event_id: tokenledger_events::EventId::from_u128(id),
            actor: tokenledger_events::Actor::System,
            company,
            event: tokenledger_events::Event::CompanyCreated {
                company,
                name: tokenledger_events::Name::new("Acme").unwrap(),
            },
        };
        let records = {
            let log = SledLog::open(dir.path(), Options::default()).unwrap();
            for id in 1..=3 {
                log.append(vec![event(id)], Expectation::Any).unwrap();
            }
            // Copied while open, as if the process had died here.
            copy_dir(dir.path(), crashed.path());
            log.read_records(1, 10).unwrap()
        };
        let journal = crashed.path().join("journal");
        let held = crate::journal::read(&journal).unwrap();
        assert_eq!(held.len(), 3);
        let groups: Vec<[(u64, &[u8]); 1]> = held
            .iter()
            .map(|r| [(r.position, r.record.as_slice())])
            .collect();
        let groups: Vec<&[(u64, &[u8])]> = groups.iter().map(|g| &g[..]).collect();
        std::fs::write(&journal, written(&groups)).unwrap();
        {
            let db = sled::open(crashed.path().join("sled")).unwrap();
            let events = db.open_tree("events").unwrap();
            events.remove([crate::settle_record::JOURNAL_KEY]).unwrap();
            db.flush().unwrap();
        }
        SledLog::wait_closed(crashed.path()).unwrap();
        let log = SledLog::open(crashed.path(), Options::default()).unwrap();
        assert_eq!(log.read_records(1, 10).unwrap(), records);
        assert_eq!(log.verify().unwrap().records, 3);
        assert_eq!(
            log.append(vec![event(4)], Expectation::Head(3)).unwrap(),
            vec![4]
        );
    }
}
