//! The journal's header: its generation and the key its frames are
//! checked with, kept twice, in two 4 KiB blocks of their own.
//!
//! ```text
//! block 0: header ‖ zeros to 4096     block 1: its copy ‖ zeros to 8192
//! header:  magic "TLH4" ‖ generation (u64 BE) ‖ key (32 bytes) ‖ BLAKE3(all before)
//! ```
//!
//! Each copy is written as one whole aligned block and synced before the
//! other is written, so a torn or lost block-sized write takes at most
//! one of them (with both in one block, as in the format before, one
//! lost write took both, and with them the key of every frame since the
//! last settle). The generation and a fingerprint of the key are also
//! recorded in sled at each settle (`SledLog`'s `settle`), so that an open
//! can tell a journal that is not the one sled last agreed with.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The size of the blocks the journal is laid out in: a header copy
/// each, and every frame starts on one.
pub(crate) const BLOCK: u64 = 4096;
/// Where the header and its copy lie: a block each.
pub(crate) const HEADER_AT: [u64; 2] = [0, BLOCK];
pub(crate) const HEADER_LEN: usize = 4 + 8 + 32 + 32;
const HEADER_MAGIC: [u8; 4] = *b"TLH4";
/// The first frame's magic in the journal that was appended to (format
/// 2); format 3 is read by `journal_v3.rs`.
const OLDEST_MAGIC: [u8; 4] = *b"TLJ2";

/// The header in force: the generation, and the key frames are checked
/// with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) generation: u64,
    pub(crate) key: [u8; 32],
}

/// A short digest of a generation's key, stored in sled: it names the key
/// without revealing it.
pub(crate) type Fingerprint = [u8; 16];

impl Header {
    /// The first header of a new journal.
    pub(crate) fn first() -> io::Result<Header> {
        Ok(Header {
            generation: 0,
            key: fresh_key()?,
        })
    }

    /// The header that follows this one when the journal is emptied: the
    /// next generation, with a fresh key.
    pub(crate) fn next(&self) -> io::Result<Header> {
        Ok(Header {
            generation: self.generation + 1,
            key: fresh_key()?,
        })
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        let derived = blake3::derive_key("tokenledger journal key fingerprint 2026", &self.key);
        let mut out = [0; 16];
        out.copy_from_slice(derived.get(..16).unwrap_or_default());
        out
    }

    /// The header as its block is written: the header, then zeros.
    pub(crate) fn block(&self) -> Vec<u8> {
        let mut block = vec![0; BLOCK as usize];
        let mut bytes = [0; HEADER_LEN];
        let (body, digest) = bytes.split_at_mut(HEADER_LEN - 32);
        let (magic, rest) = body.split_at_mut(4);
        let (generation, key) = rest.split_at_mut(8);
        magic.copy_from_slice(&HEADER_MAGIC);
        generation.copy_from_slice(&self.generation.to_be_bytes());
        key.copy_from_slice(&self.key);
        digest.copy_from_slice(blake3::hash(body).as_bytes());
        if let Some(place) = block.get_mut(..HEADER_LEN) {
            place.copy_from_slice(&bytes);
        }
        block
    }

    /// Writes this header's block at each of the header's places in turn,
    /// each synced before the next is written, calling `copied` after each
    /// (a fault point: a crash between the copies leaves one of each
    /// generation).
    pub(crate) fn write(
        &self,
        file: &File,
        copied: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        let block = self.block();
        for at in HEADER_AT {
            file.write_all_at(&block, at)?;
            file.sync_data()?;
            copied()?;
        }
        Ok(())
    }

    /// The header at `at` in `bytes`, if it is whole.
    pub(crate) fn read(bytes: &[u8], at: u64) -> Option<Header> {
        let bytes = bytes
            .get(usize::try_from(at).ok()?..)?
            .first_chunk::<HEADER_LEN>()?;
        let (body, digest) = bytes.split_at(HEADER_LEN - 32);
        let (magic, rest) = body.split_first_chunk::<4>()?;
        let (generation, key) = rest.split_first_chunk::<8>()?;
        let header = Header {
            generation: u64::from_be_bytes(*generation),
            key: <[u8; 32]>::try_from(key).ok()?,
        };
        (*magic == HEADER_MAGIC && blake3::hash(body).as_bytes().as_slice() == digest)
            .then_some(header)
    }
}

/// Whether `bytes` begin as a journal of format 2 does, which is not read.
pub(crate) fn is_old_format(bytes: &[u8]) -> bool {
    bytes.starts_with(&OLDEST_MAGIC)
}

fn fresh_key() -> io::Result<[u8; 32]> {
    let mut key = [0; 32];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(format!("no random key: {e}")))?;
    Ok(key)
}
