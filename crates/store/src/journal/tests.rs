//! The journal's tests: frames read back, torn and damaged ones, headers,
//! misplaced frames, growth, and format 3 carried over.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

use super::*;
use crate::journal_header::HEADER_LEN;

/// Writes each group as a frame; returns the journal's length after each.
fn write(journal: &mut Journal, groups: &[&[(u64, &[u8])]]) -> Vec<u64> {
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

fn new(path: &Path, groups: &[&[(u64, &[u8])]]) -> Vec<u64> {
    write(&mut Journal::open(path, true).unwrap().0, groups)
}

fn clear(journal: &mut Journal) {
    let next = journal.header().next().unwrap();
    journal.clear(next, &mut || Ok(())).unwrap();
}

/// The length of the frame at `offset` in `bytes`, padding left out.
fn frame_len(bytes: &[u8], offset: usize) -> usize {
    let len = u64::from_be_bytes(bytes[offset + 4..offset + 12].try_into().unwrap());
    FRAME_HEADER_LEN + len as usize
}

fn positions(records: &[Recovered]) -> Vec<u64> {
    records.iter().map(|r| r.position).collect()
}

/// The file's offset of the frame a journal length `len` ends at.
fn at(len: u64) -> usize {
    (FRAMES_AT + len) as usize
}

#[test]
fn frames_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let ends = new(&path, &[&[(1, b"one"), (2, b"two")], &[(3, b"")]]);
    let (journal, records) = Journal::open(&path, true).unwrap();
    assert_eq!(positions(&records), vec![1, 2, 3]);
    assert_eq!(records[1].record, b"two");
    assert_eq!(records[2].record, b"");
    assert_eq!(journal.len(), ends[1]);
    assert_eq!(read(&path).unwrap(), records);
}

#[test]
fn every_cut_of_the_last_frame_is_a_torn_write_and_is_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let ends = new(&path, &[&[(1, b"one")], &[(2, b"two"), (3, b"three")]]);
    let whole = std::fs::read(&path).unwrap();
    // Cuts in the frame's padding leave it whole.
    let last = at(ends[0])..at(ends[0]) + frame_len(&whole, at(ends[0]));
    for cut in last {
        // Cut short, as a file that grew; or the rest never written
        // over the zeros it was grown with.
        let mut zeros = whole.clone();
        zeros[cut..].fill(0);
        for torn in [&whole[..cut], &zeros[..]] {
            std::fs::write(&path, torn).unwrap();
            let (mut journal, records) = Journal::open(&path, true).unwrap();
            assert_eq!(positions(&records), vec![1], "cut at {cut}");
            assert_eq!(journal.len(), ends[0]);
            write(&mut journal, &[&[(2, b"again")]]);
            let records = Journal::open(&path, true).unwrap().1;
            assert_eq!(positions(&records), vec![1, 2], "cut at {cut}");
            assert_eq!(records[1].record, b"again");
        }
    }
}

#[test]
fn a_damaged_frame_before_the_last_is_an_error_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let ends = new(&path, &[&[(1, b"one")], &[(2, b"two")], &[(3, b"three")]]);
    let whole = std::fs::read(&path).unwrap();
    let second = at(ends[0])..at(ends[0]) + frame_len(&whole, at(ends[0]));
    for byte in second {
        let mut damaged = whole.clone();
        damaged[byte] ^= 0x20;
        std::fs::write(&path, &damaged).unwrap();
        match Journal::open(&path, true) {
            Err(JournalError::Damaged { offset, .. }) => {
                assert_eq!(offset, at(ends[0]) as u64);
            }
            other => panic!("byte {byte}: {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing is changed");
    }
}

#[test]
fn a_failed_group_is_undone_and_clear_empties_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let (mut journal, _) = Journal::open(&path, true).unwrap();
    let kept = write(&mut journal, &[&[(1, b"one")], &[(2, b"two and more")]])[0];
    journal.undo(kept).unwrap();
    assert_eq!(positions(&Journal::open(&path, true).unwrap().1), vec![1]);
    write(&mut journal, &[&[(2, b"again")]]);
    let (_, records) = Journal::open(&path, true).unwrap();
    assert_eq!(records[1].record, b"again");
    clear(&mut journal);
    assert_eq!(journal.len(), 0);
    assert!(read(&path).unwrap().is_empty());
}

#[test]
fn after_clear_the_frames_before_are_stale_even_where_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let (mut journal, _) = Journal::open(&path, true).unwrap();
    write(&mut journal, &[&[(1, b"a longer record")], &[(2, b"two")]]);
    clear(&mut journal);
    write(&mut journal, &[&[(3, b"three")]]);
    let (mut journal, records) = Journal::open(&path, true).unwrap();
    assert_eq!(positions(&records), vec![3]);
    // Two generations on, the first header is written over too.
    clear(&mut journal);
    write(&mut journal, &[&[(4, b"four")]]);
    assert_eq!(positions(&read(&path).unwrap()), vec![4]);
    // A clear cut short in the first copy leaves the header before it
    // in the second, and its frames, which sled already holds.
    let before = std::fs::read(&path).unwrap();
    clear(&mut journal);
    let mut torn = std::fs::read(&path).unwrap();
    torn[20] ^= 1;
    let copy = HEADER_AT[1] as usize..HEADER_AT[1] as usize + HEADER_LEN;
    torn[copy.clone()].copy_from_slice(&before[copy]);
    std::fs::write(&path, &torn).unwrap();
    assert_eq!(positions(&read(&path).unwrap()), vec![4]);
}

#[test]
fn any_one_flipped_byte_is_harmless_a_torn_last_frame_or_damage_at_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let ends = new(&path, &[&[(1, b"one")], &[(2, b"two")], &[(3, b"three")]]);
    // The frames and some of the zeros after them: parsed in memory,
    // a byte at a time, the rest of the file would only be scanned.
    let whole = &std::fs::read(&path).unwrap()[..at(ends[2]) + 256];
    for byte in 0..at(ends[2]) {
        let mut flipped = whole.to_vec();
        flipped[byte] ^= 0x01;
        let parsed = parse(&flipped);
        let outcome = match &parsed {
            Ok(Some(parsed)) => Ok(positions(&parsed.records)),
            Ok(None) => panic!("byte {byte}: no header"),
            Err(JournalError::Damaged { offset, .. }) => Err(*offset as usize),
            Err(error) => panic!("byte {byte}: {error:?}"),
        };
        // Which frame the byte is in, padding left out; the padding
        // is not checked, and the headers are kept twice.
        let frame = (0..3).find(|f| {
            let start = at([0, ends[0], ends[1]][*f]);
            (start..start + frame_len(whole, start)).contains(&byte)
        });
        let expected = match frame {
            None => Ok(vec![1, 2, 3]),
            Some(0) => Err(at(0)),
            Some(1) => Err(at(ends[0])),
            Some(_) => Ok(vec![1, 2]),
        };
        assert_eq!(outcome, expected, "byte {byte}");
    }
}

#[test]
fn random_damage_gives_a_prefix_of_the_records_or_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let groups: Vec<Vec<(u64, Vec<u8>)>> = (0..6)
        .map(|g| {
            (g * 3 + 1..g * 3 + 4)
                .map(|p| (p, vec![p as u8; 40]))
                .collect()
        })
        .collect();
    let borrowed: Vec<Vec<(u64, &[u8])>> = groups
        .iter()
        .map(|g| g.iter().map(|(p, r)| (*p, &r[..])).collect())
        .collect();
    let refs: Vec<&[(u64, &[u8])]> = borrowed.iter().map(|g| &g[..]).collect();
    let ends = new(&path, &refs);
    let whole = &std::fs::read(&path).unwrap()[..at(ends[5]) + 256];
    let all: Vec<u64> = (1..=18).collect();
    // xorshift64: the same cases on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    for case in 0..2_000 {
        let mut damaged = whole.to_vec();
        for _ in 0..1 + next(4) {
            let byte = next(damaged.len());
            damaged[byte] = next(256) as u8;
        }
        if next(4) == 0 {
            damaged.truncate(next(damaged.len()));
        }
        match parse(&damaged) {
            Ok(Some(parsed)) => {
                let read = positions(&parsed.records);
                assert_eq!(read, all[..read.len()], "case {case}");
            }
            Ok(None) => assert!(damaged.len() <= at(0), "case {case}"),
            Err(JournalError::Damaged { offset, .. }) => {
                assert!((offset as usize) < damaged.len(), "case {case}");
            }
            Err(error) => panic!("case {case}: {error:?}"),
        }
    }
}

#[test]
fn a_damaged_header_copy_is_written_back_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    new(&path, &[&[(1, b"one")]]);
    let whole = std::fs::read(&path).unwrap();
    for at in HEADER_AT {
        let mut damaged = whole.clone();
        damaged[at as usize + 5] ^= 0x01;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(positions(&Journal::open(&path, true).unwrap().1), vec![1]);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            whole,
            "copy at {at} written back"
        );
    }
}

#[test]
fn the_file_grows_in_steps_and_is_then_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let (mut journal, _) = Journal::open(&path, true).unwrap();
    let size = || std::fs::metadata(&path).unwrap().len();
    assert_eq!(size(), FRAMES_AT);
    let record = vec![7; 100_000];
    for position in 1..=12 {
        write(&mut journal, &[&[(position, &record)]]);
    }
    assert_eq!(size(), 2 * GROW);
    clear(&mut journal);
    for position in 13..=24 {
        write(&mut journal, &[&[(position, &record)]]);
    }
    assert_eq!(size(), 2 * GROW, "the second round wrote over the first");
    assert_eq!(
        positions(&read(&path).unwrap()),
        (13..=24).collect::<Vec<_>>()
    );
}

#[test]
fn a_journal_without_a_header_is_new_only_while_no_longer_than_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    for (bytes, new) in [
        (vec![], true),
        (vec![0; FRAMES_AT as usize], true),
        (vec![0; FRAMES_AT as usize + 1], false),
        (b"TLJ2 a frame of the appended journal".to_vec(), false),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        match Journal::open(&path, true) {
            Ok((_, records)) if new => assert!(records.is_empty()),
            Err(JournalError::Damaged { offset: 0, .. }) if !new => {}
            other => panic!("{} bytes: {other:?}", bytes.len()),
        }
    }
}
/// Writing a frame never writes a block that holds an earlier one:
/// each starts on a block of its own.
#[test]
fn a_frame_never_rewrites_a_block_of_the_frame_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let (mut journal, _) = Journal::open(&path, true).unwrap();
    let first = write(&mut journal, &[&[(1, b"one")]])[0];
    assert_eq!(at(first) % BLOCK as usize, 0);
    let before = std::fs::read(&path).unwrap();
    write(&mut journal, &[&[(2, b"two")], &[(3, &[3; 5000])]]);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after[..at(first)], before[..at(first)]);
    assert_eq!(
        positions(&Journal::open(&path, true).unwrap().1),
        vec![1, 2, 3]
    );
}

/// A whole block lost or torn takes at most one copy of the header.
#[test]
fn either_header_block_lost_whole_leaves_the_journal_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    new(&path, &[&[(1, b"one")], &[(2, b"two")]]);
    let whole = std::fs::read(&path).unwrap();
    for block in HEADER_AT.map(|at| at as usize) {
        let mut lost = whole.clone();
        lost[block..block + BLOCK as usize].fill(0);
        assert_eq!(
            positions(&parse(&lost).unwrap().unwrap().records),
            vec![1, 2]
        );
    }
}

/// A frame written in the wrong place (a misdirected write), even of
/// this generation and key, does not check there.
#[test]
fn a_frame_copied_to_another_place_does_not_check_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let ends = new(&path, &[&[(1, b"one")], &[(2, b"two")], &[(3, b"three")]]);
    let whole = std::fs::read(&path).unwrap();
    let block = BLOCK as usize;
    // The first frame where the third should be: the end of the journal.
    let mut misdirected = whole.clone();
    misdirected.copy_within(at(0)..at(0) + block, at(ends[1]));
    let parsed = parse(&misdirected).unwrap().unwrap();
    assert_eq!(positions(&parsed.records), vec![1, 2]);
    // The third where the second should be: the second no longer
    // checks and the third still does after it, so it is damage.
    let mut misdirected = whole.clone();
    misdirected.copy_within(at(ends[1])..at(ends[1]) + block, at(ends[0]));
    assert!(matches!(
        parse(&misdirected),
        Err(JournalError::Damaged { offset, .. }) if offset as usize == at(ends[0])
    ));
    // A frame of an earlier generation at its own place does not check
    // either, though it once did.
    let (mut journal, _) = Journal::open(&path, true).unwrap();
    let old = std::fs::read(&path).unwrap();
    clear(&mut journal);
    let mut stale = std::fs::read(&path).unwrap();
    stale[at(0)..at(0) + block].copy_from_slice(&old[at(0)..at(0) + block]);
    assert!(parse(&stale).unwrap().unwrap().records.is_empty());
}

/// A journal of format 3 is carried into one of this format, with its
/// records, at open.
#[test]
fn a_journal_of_format_3_is_converted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let old = crate::journal_v3::tests::written(&[&[(1, b"one")], &[(2, b"two")]]);
    std::fs::write(&path, &old).unwrap();
    assert_eq!(positions(&read(&path).unwrap()), vec![1, 2]);
    let (mut journal, records) = Journal::open(&path, false).unwrap();
    assert_eq!(positions(&records), vec![1, 2]);
    assert_eq!(records[1].record, b"two");
    let bytes = std::fs::read(&path).unwrap();
    assert!(has_header(&bytes) && !crate::journal_v3::is_v3(&bytes));
    write(&mut journal, &[&[(3, b"three")]]);
    assert_eq!(
        positions(&Journal::open(&path, false).unwrap().1),
        vec![1, 2, 3]
    );
    // An empty one too, as a clean close of the version before left it.
    std::fs::write(&path, crate::journal_v3::tests::written(&[])).unwrap();
    assert!(Journal::open(&path, false).unwrap().1.is_empty());
}

/// Once the log has been settled its journal must be there: one that
/// is missing or has no header is refused, not made anew and empty.
#[test]
fn a_journal_that_must_exist_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    assert!(matches!(
        Journal::open(&path, false),
        Err(JournalError::Damaged { offset: 0, .. })
    ));
    assert!(!path.exists());
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        Journal::open(&path, false),
        Err(JournalError::Damaged { offset: 0, .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}
