//! Guest stdout/stderr, captured per message and written to the host's log with the
//! plugin's name, one record per line. Output past the cap is dropped (and counted),
//! never an error: a chatty plugin must not fail its messages.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Default)]
struct Buffer {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    kept: usize,
    dropped: usize,
}

/// How much of an instance's output was kept, and how much dropped past the cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputCounts {
    /// Bytes kept (written to the log).
    pub kept: usize,
    /// Bytes dropped.
    pub dropped: usize,
}

/// The captured output of one instance.
#[derive(Clone)]
pub struct GuestOutput {
    buffer: Arc<Mutex<Buffer>>,
    cap: usize,
}

impl GuestOutput {
    /// Keeps at most `cap` bytes across stdout and stderr.
    pub fn new(cap: usize) -> Self {
        Self {
            buffer: Arc::default(),
            cap,
        }
    }

    /// A WASI stream writing into this capture.
    pub fn stream(&self, which: &'static str) -> CaptureStream {
        CaptureStream {
            output: self.clone(),
            stderr: which == "stderr",
        }
    }

    fn append(&self, stderr: bool, bytes: &[u8]) {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(b.kept);
        let kept = bytes.len().min(room);
        b.kept += kept;
        b.dropped += bytes.len() - kept;
        let target = if stderr { &mut b.stderr } else { &mut b.stdout };
        target.extend_from_slice(&bytes[..kept]);
    }

    /// Bytes kept and bytes dropped past the cap, so far.
    pub fn counts(&self) -> OutputCounts {
        let b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        OutputCounts {
            kept: b.kept,
            dropped: b.dropped,
        }
    }

    /// The last `max` bytes of stderr, as one trimmed line.
    pub fn stderr_tail(&self, max: usize) -> String {
        let b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let start = b.stderr.len().saturating_sub(max);
        let text = String::from_utf8_lossy(&b.stderr[start..]);
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Writes what was captured to the log, tagged with `plugin`, and clears it.
    /// Its secrets' values are masked (see [`crate::capability::PluginContext::mask`]).
    pub fn flush_to_log(&self, context: &crate::capability::PluginContext) {
        let plugin = context.name.as_str();
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        for line in String::from_utf8_lossy(&b.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let line = context.mask(line);
            tracing::info!(target: "plugin", plugin, stream = "stdout", "{line}");
        }
        for line in String::from_utf8_lossy(&b.stderr)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let line = context.mask(line);
            tracing::warn!(target: "plugin", plugin, stream = "stderr", "{line}");
        }
        if b.dropped > 0 {
            tracing::warn!(target: "plugin", plugin, dropped_bytes = b.dropped, "output beyond limits.max_output_bytes was dropped");
        }
        *b = Buffer::default();
    }
}

/// The stdout or stderr of one instance.
pub struct CaptureStream {
    output: GuestOutput,
    stderr: bool,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CaptureStream {
            output: self.output.clone(),
            stderr: self.stderr,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(CaptureWriter {
            output: self.output.clone(),
            stderr: self.stderr,
        })
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.output.append(self.stderr, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

struct CaptureWriter {
    output: GuestOutput,
    stderr: bool,
}

impl tokio::io::AsyncWrite for CaptureWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.output.append(self.stderr, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
