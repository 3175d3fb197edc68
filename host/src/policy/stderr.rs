//! A guest's stderr, captured so that a trap can be reported with the guest's panic message.
//!
//! wasmtime-wasi's `MemoryOutputPipe` traps the guest once its capacity is used up, so a
//! plugin that logs a lot would fail a call it answers correctly. This sink never refuses a
//! write: it keeps the first [`HEAD_BYTES`] and the last [`TAIL_BYTES`] (a panic message comes
//! last) and counts what it drops in between.

use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept from the start of the stream.
pub const HEAD_BYTES: usize = 16 * 1024;
/// Bytes kept from the end of the stream.
pub const TAIL_BYTES: usize = 16 * 1024;

/// How much a guest may write per `check-write` permit; it may ask again at once, so this
/// only sizes the guest's chunks.
const PERMIT_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Kept {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    /// Bytes written between `head` and `tail` and dropped.
    dropped: u64,
}

impl Kept {
    fn push(&mut self, mut bytes: &[u8]) {
        let room = HEAD_BYTES - self.head.len();
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= TAIL_BYTES {
            // Everything in the tail and all but the last TAIL_BYTES of `bytes` is dropped.
            self.dropped += (self.tail.len() + bytes.len() - TAIL_BYTES) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - TAIL_BYTES..]);
            return;
        }
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(TAIL_BYTES);
        if excess > 0 {
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn text(&self) -> String {
        let mut bytes = self.head.clone();
        if self.dropped > 0 {
            bytes.extend_from_slice(
                format!("\n[… {} bytes of stderr omitted …]\n", self.dropped).as_bytes(),
            );
        }
        bytes.extend(self.tail.iter());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The capture: cheap to clone, every clone writes to the same buffer.
#[derive(Debug, Clone, Default)]
pub struct StderrCapture {
    kept: Arc<Mutex<Kept>>,
}

impl StderrCapture {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, bytes: &[u8]) {
        // A poisoned lock only means another writer panicked mid-push; the text is still
        // worth keeping.
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(bytes);
    }

    /// What was kept (lossy UTF-8), with a marker where the middle was dropped.
    pub fn text(&self) -> String {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .text()
    }
}

impl IsTerminal for StderrCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrCapture {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT_BYTES)
    }
}

impl AsyncWrite for StderrCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_stream_is_kept_whole() {
        let capture = StderrCapture::new();
        capture.push(b"hello ");
        capture.clone().push(b"world");
        assert_eq!(capture.text(), "hello world");
    }

    #[test]
    fn the_middle_of_a_long_stream_is_dropped_with_a_marker() {
        let capture = StderrCapture::new();
        capture.push(&vec![b'a'; HEAD_BYTES]);
        // Many small writes and one large one, then the message that matters.
        for _ in 0..1000 {
            capture.push(&[b'b'; 100]);
        }
        capture.push(&vec![b'c'; 3 * TAIL_BYTES]);
        capture.push(b"panicked at the end");
        let text = capture.text();
        let dropped = 1000 * 100 + 3 * TAIL_BYTES - (TAIL_BYTES - 19);
        assert!(text.starts_with(&"a".repeat(HEAD_BYTES)), "head lost");
        assert!(text.ends_with("panicked at the end"), "tail lost");
        assert!(
            text.contains(&format!("[… {dropped} bytes of stderr omitted …]")),
            "{}",
            &text[HEAD_BYTES..HEAD_BYTES + 60]
        );
        assert_eq!(
            text.len(),
            HEAD_BYTES + TAIL_BYTES + format!("\n[… {dropped} bytes of stderr omitted …]\n").len()
        );
    }

    #[test]
    fn writes_never_fail() {
        let mut capture = StderrCapture::new();
        for _ in 0..64 {
            assert!(capture.check_write().is_ok_and(|n| n > 0));
            assert!(
                OutputStream::write(&mut capture, Bytes::from(vec![b'x'; PERMIT_BYTES])).is_ok()
            );
        }
        assert!(capture.text().contains("omitted"));
    }
}
