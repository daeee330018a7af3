//! The export, streamed: the ledger writes JSON lines on the blocking pool
//! into a bounded channel, and the response body sends each chunk as it
//! comes, so memory holds a few chunks whatever the log's length, and a
//! client that stops reading stops the export.

use std::io::{self, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokenledger_authz::Ledger;
use tokio::sync::mpsc;

/// How many bytes a chunk gathers before it is sent.
const CHUNK: usize = 64 * 1024;
/// How many chunks may wait for the client.
const WAITING: usize = 4;

/// The response body of an export.
pub(crate) struct ExportBody {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
}

impl ExportBody {
    /// Starts exporting `ledger`.
    pub(crate) fn start(ledger: Arc<Ledger>) -> ExportBody {
        let (sender, chunks) = mpsc::channel(WAITING);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                buffer: Vec::with_capacity(CHUNK),
                sender: sender.clone(),
            };
            let exported = ledger
                .export(&mut out, Path::new("the HTTP response"), &mut |_, _| {})
                .map_err(|e| io::Error::other(e.to_string()));
            if let Err(error) = exported {
                // The body ends with an error: the response is cut short.
                let _ = sender.blocking_send(Err(error));
            }
        });
        ExportBody { chunks }
    }
}

struct ChunkWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<io::Result<Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Body for ExportBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}
