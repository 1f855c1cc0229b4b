//! The bodies between a plugin and the network, each held to the plugin's limits:
//! a request body past `max_http_request_bytes` fails the request; a response body
//! past `max_http_response_bytes`, or silent longer than
//! `http_between_bytes_timeout_ms`, fails the guest's read and the host stops reading,
//! so an endless or dribbling server cannot hold memory or the instance.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Instant;
use wasmtime_wasi_http::Error;

/// What the host's client sends: the guest's body, counted.
pub struct RequestBody {
    inner: wasmtime_wasi_http::WasiBody,
    sent: u64,
    max: u64,
}

impl RequestBody {
    pub fn new(inner: wasmtime_wasi_http::WasiBody, max: u64) -> Self {
        Self {
            inner,
            sent: 0,
            max,
        }
    }
}

/// Why the request body stopped; a `std::error::Error` for hyper, mapped back onto a
/// `wasi:http` error by the sender.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Past `max_http_request_bytes`.
    #[error("request body over {0} bytes")]
    TooLarge(u64),
    /// The guest's body failed.
    #[error("request body failed: {0}")]
    Guest(String),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(match frame {
            None => None,
            Some(Err(e)) => Some(Err(RequestBodyError::Guest(e.to_string()))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                    if self.sent > self.max {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge(self.max))));
                    }
                }
                Some(Ok(frame))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the guest reads: the server's body, counted and timed. It holds the
/// plugin's in-flight permit and records the request's outcome when it ends.
pub struct ResponseBody {
    inner: hyper::body::Incoming,
    received: u64,
    max: u64,
    between_bytes: Duration,
    /// When the last frame came (or the head): the between-bytes deadline counts
    /// from here.
    last_frame: Instant,
    /// The between-bytes timer, armed only while the server keeps the body waiting:
    /// a body whose frames are ready touches no timer (each one is a lock on the
    /// runtime's timer wheel, shared by every worker thread).
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    done: Option<super::send::Finished>,
}

impl ResponseBody {
    pub fn new(
        inner: hyper::body::Incoming,
        max: u64,
        between_bytes: Duration,
        done: super::send::Finished,
    ) -> Self {
        Self {
            inner,
            received: 0,
            max,
            between_bytes,
            last_frame: Instant::now(),
            idle: None,
            done: Some(done),
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        if let Some(done) = self.done.take() {
            done.record(outcome);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done.is_none() {
            // Failed or ended already: read no further.
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish("ok");
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish("error");
                tracing::debug!(error = %e, "outbound response body failed");
                Poll::Ready(Some(Err(Error::HttpResponseIncomplete)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.max {
                        this.finish("response_too_large");
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.max)))));
                    }
                }
                this.last_frame = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let deadline = this.last_frame + this.between_bytes;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if idle.deadline() != deadline {
                    idle.as_mut().reset(deadline);
                }
                ready!(idle.as_mut().poll(cx));
                this.finish("timeout");
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The guest stopped reading (its choice) or the instance ended: the request
        // itself succeeded.
        self.finish("ok");
    }
}
