//! tokenledger's event log: durable, ordered, tamper-evident appends.
//!
//! [`EventLog`] is the log as the rest of tokenledger sees it; [`SledLog`]
//! keeps it in sled, and this is the only crate that knows sled.
//!
//! # The durability promise
//!
//! [`EventLog::append`] returns `Ok` only after its events are written to
//! the log's journal (a file beside sled) and `fdatasync` has returned for
//! it. sled gets the same events in memory at the same time; it is flushed
//! and `fdatasync`ed, and the journal emptied, once the journal passes
//! [`JOURNAL_BYTES`] and when the log is closed. Opening replays the
//! journal into sled before anything is read. sled 0.34's own `flush()`
//! used only `sync_file_range` on Linux, which neither flushes the drive's
//! write cache nor the file's metadata (sled issues #1351 and #1452): our
//! copy of sled (`vendor/README.md`) `fdatasync`s its file in `flush()`,
//! makes a failed sync stick, and recovers only what a sync made durable
//! as a prefix; the log syncs the blob files and directories itself.
//!
//! Why a journal: a durable commit through sled alone takes two trips to
//! the device (sled's flush, then `fsync`); through the journal it takes
//! one. `append/single_durable` went from 172 to 87 µs when the journal
//! came, and from 96 to 61 µs when sled's batches went (see
//! `Writer::insert`), each a back-to-back pair of runs; the floor of a
//! plain write and `fsync` measured 32 to 46 µs in those runs.
//! Since the journal is written over bytes already in its file rather than
//! appended to (`journal.rs`), a sync need not commit a new file size: in
//! three alternating rounds, the medians of `append/single_durable` went
//! from 168 to 142 µs and of `append/group_commit_8` from 46 to 36 µs an
//! event, against an `fsync_floor` of 120 to 146 µs.
//!
//! That makes an acknowledged event survive a process crash and, on a drive
//! that honours `fsync` (flushes its cache, or has power-loss protection), a
//! power loss of what the journal holds: each frame starts on a 4 KiB block
//! of its own, so no write touches a block of an acknowledged frame (a drive
//! without power-safe overwrite may garble the block a power cut
//! interrupts), and the journal's two header copies lie in blocks of their
//! own. What sled holds after a settle rests on sled's flush, which our
//! copy ends with an `fdatasync`, and on its recovery, which trusts only
//! what a sync made durable (`vendor/README.md`). It cannot survive a drive
//! that acknowledges `fsync` and then loses its cache, nor the loss of the
//! disk itself.
//!
//! If a write or `fsync` fails the log is poisoned: every later append
//! fails until the log is reopened and verified, because after a failed
//! `fsync` the state on disk is unknown. So does a panic on its threads,
//! and every waiter (`head`, `wait_for`, subscriptions) is woken. A failed
//! settle leaves a mark, and the next open rebuilds sled's files into
//! fresh ones before it empties the journal (`settle_record.rs`), since
//! after a failed write-back the page cache hands back data the disk never
//! got. An open refuses a journal that is missing, or not the generation
//! sled last settled with ([`OpenError::WrongJournal`]).
//!
//! What is shown of it (`tests/power_loss.rs`, which runs the log under a
//! shim that sees every write and sync, sled's included, and rebuilds the
//! directory as a power cut would leave it): every acknowledged event
//! survives a cut that loses all that was not synced, none of it, a random
//! part of it, all but each file's last write, or tears it at 512-byte and
//! 4 KiB boundaries; the journal's unsynced blocks garbled; a sync that
//! fails and drops its data; and the narrow windows of a settle, of a
//! compaction's swap, of a journal's conversion and of a failed write's
//! undo. `scripts/sync-mutations --all` deletes each sync call in turn and
//! checks that one of these fails (three of sled's own are still missed,
//! with the reasons in the script). Not shown: sled's own blocks garbled
//! by a drive without power-safe overwrite (SECURITY.md).
//!
//! # Tamper evidence
//!
//! Each record holds the BLAKE3 hash of its predecessor and its own hash
//! over its bytes. Every read checks a record's own hash and hands out
//! its predecessor's ([`StoredEvent::previous`]), so a reader that walks
//! the log in order checks each link with one comparison, as
//! [`EventLog::verify`] does; the ledger's replays do. A record edited with
//! its own hash recomputed then breaks the link after it.
//!
//! Anyone who can rewrite the whole directory can rebuild a consistent
//! chain, or edit the last record, which no link follows. With a
//! checkpoint key ([`Options::checkpoint_key`], kept away from the data)
//! the log keeps its head signed ([`Checkpoint`]) in the directory,
//! refreshed at each settle and on close, and refuses to open a log whose
//! signed head is missing, forged, or names a record the log does not
//! hold: a rewritten history, or one rolled back behind the signed head. A
//! log written without a key is signed only by [`SledLog::sign_head`],
//! which verifies it first. A rollback of the whole directory, signed head
//! included, is caught only by a known head kept elsewhere
//! ([`Options::known_head`]; `POSITION:HASH` is [`Head`]'s text form).
//!
//! Keep a known head outside the data directory: sled treats a damaged
//! entry in its file as a torn write and recovers only what came before it,
//! so a flipped byte in the database file silently shortens the log to a
//! prefix that still verifies. Opening with the known head refuses it
//! (`tests/tamper.rs` flips bytes across the file to show it). Both heads
//! are checked against what recovering would leave before it changes
//! anything, so a refused open, `verify`'s included, removes no record
//! (`tests/settled_position.rs`).
//!
//! ```
//! use tokenledger_events::{Actor, CompanyId, Event, EventId, Name};
//! use tokenledger_store::{EventLog, Expectation, NewEvent, Options, SledLog};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = SledLog::open(dir.path(), Options::default()).unwrap();
//! let company = CompanyId::from_u128(1);
//! let event = NewEvent {
//!     event_id: EventId::from_u128(7),
//!     actor: Actor::System,
//!     company,
//!     event: Event::CompanyCreated { company, name: Name::new("Acme").unwrap() },
//! };
//! assert_eq!(log.append(vec![event.clone()], Expectation::Head(0)).unwrap(), vec![1]);
//! // A retry of the same event is recognised, and nothing is appended.
//! assert_eq!(log.append(vec![event], Expectation::Head(0)).unwrap(), vec![1]);
//! assert_eq!(log.verify().unwrap().records, 1);
//! ```

pub mod backend;
mod checkpoint;
mod compact;
#[cfg(feature = "conformance")]
pub mod conformance;
mod dirs;
mod filter;
mod journal;
mod journal_header;
mod journal_v3;
mod known_ids;
mod log;
mod page;
mod record;
mod reply;
mod segments;
mod settle_record;
mod signed_head;
mod sled_log;
mod sled_options;
mod state_files;
mod stream_index;
mod worker;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointKey};
pub use compact::Compacted;
pub use log::{
    AppendError, Damage, EventLog, Expectation, GENESIS, Hash, Head, MAX_BATCH, NewEvent,
    ParseHeadError, Problem, StoredEvent, StoredRecord, Stream, Subscription, Verified, hex,
};
pub use record::ChainCheck;
pub use sled_log::SledLog;
pub use sled_options::{Clock, FaultInjector, FaultPoint, JOURNAL_BYTES, OpenError, Options};
pub use state_files::{StateFile, StateFileError, StateFiles};
