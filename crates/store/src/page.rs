//! A page: the records of consecutive positions, stored under one sled key.
//!
//! ```text
//! page:    layout ('P') ‖ number of records n (u16 BE) ‖ (record length (u32 BE) ‖ record)ⁿ
//! key:     'L' ‖ position of the page's last record (u64 BE)
//! ```
//!
//! Why pages: sled's cost is per key, not per byte. Its leaves split at 17
//! keys, and each split rewrites and relinks nodes, so an event stored as a
//! record plus an index entry per stream cost about five keys' worth of
//! splits and copies (`Writer::insert` was three quarters of the writer's
//! time). A group of appends now costs one key per page and the event id
//! of each event, plus its streams' positions (`stream_index.rs`).
//!
//! A page never spans two groups, so a position sled was settled at (the
//! end of a group) is always the end of a page.

use crate::log::Problem;

/// The most records in one page.
pub(crate) const MAX_RECORDS: usize = 64;

/// A page is closed once its records reach this many bytes. Kept small
/// because sled writes a whole leaf (up to 17 values) when it splits or
/// consolidates one, and stores a leaf over 128 KiB as a file of its own.
pub(crate) const MAX_BYTES: usize = 4096;

const LAYOUT: u8 = b'P';
const HEADER_LEN: usize = 3;

/// Lays `records` out as one page.
pub(crate) fn encode<'a>(records: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let count = u16::try_from(records.len()).unwrap_or(u16::MAX);
    let mut page = Vec::with_capacity(HEADER_LEN + MAX_BYTES);
    page.push(LAYOUT);
    page.extend_from_slice(&count.to_be_bytes());
    for record in records {
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        page.extend_from_slice(&len.to_be_bytes());
        page.extend_from_slice(record);
    }
    page
}

/// A page read back: its records, the last one at the key's position.
pub(crate) struct Page<'a> {
    first: u64,
    records: Vec<&'a [u8]>,
}

impl<'a> Page<'a> {
    /// Takes apart the page stored under the key of position `last`.
    pub(crate) fn decode(last: u64, bytes: &'a [u8]) -> Result<Page<'a>, Problem> {
        let (&layout, rest) = bytes
            .split_first()
            .ok_or(Problem::Page("the page is empty"))?;
        if layout != LAYOUT {
            return Err(Problem::Page("the page's layout byte is not 'P'"));
        }
        let (count, mut rest) = rest
            .split_first_chunk::<2>()
            .ok_or(Problem::Page("the page is shorter than its header"))?;
        let count = usize::from(u16::from_be_bytes(*count));
        if count == 0 || count > MAX_RECORDS {
            return Err(Problem::Page("the page's record count is out of range"));
        }
        // `last + 1` overflows for a damaged key of `u64::MAX`: an error,
        // not a panic.
        let first = last
            .checked_add(1)
            .and_then(|end| end.checked_sub(count as u64))
            .filter(|first| *first >= 1)
            .ok_or(Problem::Page(
                "the page holds more records than its key allows",
            ))?;
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or(Problem::Page("the page ends inside a record's length"))?;
            let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
            if len > tail.len() {
                return Err(Problem::Page("a record runs past the end of the page"));
            }
            let (record, tail) = tail.split_at(len);
            records.push(record);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(Problem::Page("bytes follow the page's last record"));
        }
        Ok(Page { first, records })
    }

    /// The position of the first record.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// The record at `position`, if the page holds it.
    pub(crate) fn get(&self, position: u64) -> Option<&'a [u8]> {
        let index = usize::try_from(position.checked_sub(self.first)?).ok()?;
        self.records.get(index).copied()
    }

    /// The records with their positions, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &'a [u8])> + '_ {
        // Counted from the first record, not `first..`, whose iterator
        // steps one past the last record's position before `zip` stops.
        let first = self.first;
        (0u64..)
            .zip(self.records.iter().copied())
            .map(move |(index, record)| (first + index, record))
    }
}

/// Splits a group's records into pages: at most [`MAX_RECORDS`] each, closed
/// once they reach [`MAX_BYTES`]. `len` gives a record's size.
pub(crate) fn split<T>(items: &[T], len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut pages = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, item) in items.iter().enumerate() {
        bytes += len(item);
        let count = index + 1 - start;
        if count == MAX_RECORDS || bytes >= MAX_BYTES {
            pages.extend(items.get(start..=index));
            start = index + 1;
            bytes = 0;
        }
    }
    pages.extend(items.get(start..).filter(|rest| !rest.is_empty()));
    pages
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "a test fails loudly at the first surprise"
    )]

    use super::*;

    #[test]
    fn a_page_reads_back_its_records_at_their_positions() {
        let records: Vec<&[u8]> = vec![b"one", b"", b"three"];
        let bytes = encode(records.iter().copied());
        let page = Page::decode(12, &bytes).unwrap();
        assert_eq!(page.first(), 10);
        assert_eq!(page.get(11), Some(&b""[..]));
        assert_eq!(page.get(9), None);
        assert_eq!(page.get(13), None);
        let read: Vec<_> = page.iter().collect();
        assert_eq!(read, vec![(10, &b"one"[..]), (11, b""), (12, b"three")]);
    }

    #[test]
    fn a_damaged_or_cut_page_is_an_error_never_a_panic() {
        let bytes = encode([&b"one"[..], b"two"].into_iter());
        for len in 0..bytes.len() {
            assert!(Page::decode(2, &bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Page::decode(2, &longer).is_err());
        // Two records cannot end at position 1.
        assert!(Page::decode(1, &bytes).is_err());
        // Nor any at the last position there is, which a damaged key can
        // claim.
        assert!(Page::decode(u64::MAX, &bytes).is_err());
        let at_the_end = Page::decode(u64::MAX - 1, &bytes).unwrap();
        assert_eq!(at_the_end.iter().map(|(p, _)| p).last(), Some(u64::MAX - 1));
        for i in 0..HEADER_LEN + 4 {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(Page::decode(2, &damaged).is_err(), "byte {i}");
        }
    }

    #[test]
    fn pages_close_at_their_record_or_byte_limit() {
        let small = vec![10usize; 150];
        let pages = split(&small, |n| *n);
        let sizes: Vec<_> = pages.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![64, 64, 22]);
        let large = vec![1500usize; 7];
        let sizes: Vec<_> = split(&large, |n| *n).iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
        let huge = vec![MAX_BYTES * 2];
        assert_eq!(split(&huge, |n| *n).len(), 1);
        assert!(split(&[] as &[usize], |n| *n).is_empty());
    }
}
