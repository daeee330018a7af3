//! The sinks provided: a JSON-lines file, written by a thread of its own
//! from a bounded queue, and `tracing` events.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use crate::record::{DecisionRecord, DecisionSink, SinkError};

enum Message {
    Record(DecisionRecord),
    Sync(mpsc::Sender<io::Result<()>>),
}

/// Appends each record as one line of JSON ([`DecisionRecord::to_json`]) to
/// a file, created `0600` if missing.
///
/// Records wait in a queue of `capacity` and a thread writes them,
/// flushing whenever the queue empties, so a request never waits for the
/// disk. When the queue is full, or once a write has failed (the first
/// error is kept and every later record refused), [`DecisionSink::record`]
/// says so and the layer applies its [`crate::Overflow`] policy.
///
/// A record taken is lost only if writing fails after it was taken: those
/// queued behind a failed write, and those in the thread's buffer when a
/// write or flush fails. [`JsonLinesSink::lost`] counts them (all the
/// records since the last flush, when the buffer may have written some);
/// the layer counts only the records the sink did not take.
pub struct JsonLinesSink {
    queue: SyncSender<Message>,
    failed: Arc<OnceLock<String>>,
    lost: Arc<AtomicU64>,
}

impl JsonLinesSink {
    /// Opens `path` for appending and starts the writing thread. A
    /// `capacity` of 0 is refused: no record could wait for the thread.
    pub fn open(path: &Path, capacity: usize) -> io::Result<JsonLinesSink> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a decision record queue holds at least one record",
            ));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let (queue, receiver) = mpsc::sync_channel(capacity);
        let failed = Arc::new(OnceLock::new());
        let lost = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            out: BufWriter::new(file),
            failed: Arc::clone(&failed),
            lost: Arc::clone(&lost),
            unflushed: 0,
        };
        std::thread::Builder::new()
            .name("decision-records".to_owned())
            .spawn(move || writer.run(&receiver))?;
        Ok(JsonLinesSink {
            queue,
            failed,
            lost,
        })
    }

    /// How many records this sink took and then failed to write.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Waits until every record taken so far is written and synced to the
    /// drive. It blocks: call it at shutdown or in tests, not while
    /// answering a request.
    pub fn sync(&self) -> io::Result<()> {
        let (reply, answer) = mpsc::channel();
        self.queue
            .send(Message::Sync(reply))
            .map_err(|_| io::Error::other("the decision record writer has stopped"))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the decision record writer has stopped"))?
    }
}

/// The writing thread's side.
struct Writer {
    out: BufWriter<File>,
    failed: Arc<OnceLock<String>>,
    lost: Arc<AtomicU64>,
    /// Records in `out`'s buffer, not yet flushed to the file.
    unflushed: u64,
}

impl Writer {
    fn run(mut self, receiver: &Receiver<Message>) {
        while let Ok(message) = receiver.recv() {
            let mut next = Some(message);
            // Write what is queued, then flush once: one write to the file
            // per burst rather than per record.
            while let Some(message) = next.take() {
                match message {
                    Message::Record(record) => self.write(&record),
                    Message::Sync(reply) => {
                        let synced = self.flush().and_then(|()| self.out.get_ref().sync_data());
                        let _ = reply.send(synced);
                    }
                }
                next = receiver.try_recv().ok();
            }
            let _ = self.flush();
        }
    }

    fn write(&mut self, record: &DecisionRecord) {
        if self.failed.get().is_some() {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let written = serde_json::to_writer(&mut self.out, &record.to_json())
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        match written {
            Ok(()) => self.unflushed += 1,
            // What the buffer held may be lost with it.
            Err(error) => self.fail(&error, 1),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(cause) = self.failed.get() {
            return Err(io::Error::other(cause.clone()));
        }
        match self.out.flush() {
            Ok(()) => {
                self.unflushed = 0;
                Ok(())
            }
            Err(error) => {
                self.fail(&error, 0);
                Err(error)
            }
        }
    }

    /// Keeps the first failure (later ones follow from it), and counts
    /// `also` records and those the buffer held as lost.
    fn fail(&mut self, error: &io::Error, also: u64) {
        let _ = self.failed.set(error.to_string());
        self.lost
            .fetch_add(self.unflushed + also, Ordering::Relaxed);
        self.unflushed = 0;
    }
}

impl DecisionSink for JsonLinesSink {
    fn record(&self, record: DecisionRecord) -> Result<(), SinkError> {
        if let Some(cause) = self.failed.get() {
            return Err(SinkError::Failed {
                cause: cause.clone(),
            });
        }
        self.queue
            .try_send(Message::Record(record))
            .map_err(|error| match error {
                TrySendError::Full(_) => SinkError::Full,
                TrySendError::Disconnected(_) => SinkError::Failed {
                    cause: "the writing thread has stopped".to_owned(),
                },
            })
    }
}

/// Emits each record as a `tracing` event at INFO, target
/// `tokenledger::decision`, with the record's fields as the event's. It
/// always takes the record: how far the subscriber buffers, and what it
/// does when it falls behind, is the subscriber's to say (a
/// non-blocking writer drops lines, for instance).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl DecisionSink for TracingSink {
    fn record(&self, record: DecisionRecord) -> Result<(), SinkError> {
        tracing::info!(
            target: "tokenledger::decision",
            request_id = %record.request_id,
            client_request_id = record.client_request_id.as_deref(),
            at_micros = record.at.as_micros(),
            method = record.method.map(|m| m.as_str()),
            operation = record.operation,
            requirement = record.requirement.map(tracing::field::display),
            token = record.token.map(tracing::field::display),
            resource = record.resource.as_ref().map(tracing::field::display),
            location = record.location.map(tracing::field::display),
            position = record.position,
            verdict = record.verdict.as_str(),
            rule = record.rule.map(|r| r.as_str()),
            status = record.status,
            reason = record.reason,
            "decision"
        );
        Ok(())
    }
}
