//! The sinks provided: a JSON-lines file, written by a thread of its own
//! from a bounded queue, and `tracing` events.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
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
pub struct JsonLinesSink {
    queue: SyncSender<Message>,
    failed: Arc<OnceLock<String>>,
}

impl JsonLinesSink {
    /// Opens `path` for appending and starts the writing thread.
    pub fn open(path: &Path, capacity: usize) -> io::Result<JsonLinesSink> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let (queue, receiver) = mpsc::sync_channel(capacity);
        let failed = Arc::new(OnceLock::new());
        let failure = Arc::clone(&failed);
        std::thread::Builder::new()
            .name("decision-records".to_owned())
            .spawn(move || write_records(receiver, BufWriter::new(file), &failure))?;
        Ok(JsonLinesSink { queue, failed })
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

fn write_records(receiver: Receiver<Message>, mut out: BufWriter<File>, failed: &OnceLock<String>) {
    let fail = |error: io::Error| {
        // The first failure is the one to report; later ones follow from it.
        let _ = failed.set(error.to_string());
    };
    while let Ok(message) = receiver.recv() {
        let mut next = Some(message);
        // Write what is queued, then flush once: one write to the file per
        // burst rather than per record.
        while let Some(message) = next.take() {
            match message {
                Message::Record(record) => {
                    if failed.get().is_none()
                        && let Err(error) = serde_json::to_writer(&mut out, &record.to_json())
                            .map_err(io::Error::from)
                            .and_then(|()| out.write_all(b"\n"))
                    {
                        fail(error);
                    }
                }
                Message::Sync(reply) => {
                    let synced = match failed.get() {
                        Some(cause) => Err(io::Error::other(cause.clone())),
                        None => out.flush().and_then(|()| out.get_ref().sync_data()),
                    };
                    let _ = reply.send(synced);
                }
            }
            next = receiver.try_recv().ok();
        }
        if failed.get().is_none()
            && let Err(error) = out.flush()
        {
            fail(error);
        }
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
