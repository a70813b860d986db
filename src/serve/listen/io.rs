//! A connection's byte stream, watched: [`TrackedIo`] notes when bytes move either way and
//! when a request head starts, [`Activity`] holds those times and the requests in flight,
//! and [`Activity::expired`] says when the connection has waited on its client too long.
//!
//! The timers follow nginx's `client_header_timeout` (the whole head within N seconds of
//! its first byte) and `keepalive_timeout` (an idle connection is closed); nothing is
//! timed while a handler runs (a generation may take minutes without a byte moving).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::serve::config::ConnectionLimits;

/// What one connection has done, shared by its stream, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start` when a byte last moved (or a request finished).
    last_ms: AtomicU64,
    /// 1 + milliseconds since `start` of the first byte of a request head still being
    /// read; 0 when none is.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
}

/// Why a connection was closed by its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head took longer than `header_read_timeout`.
    Header,
    /// Nothing moved for `idle_timeout` with no request in flight.
    Idle,
    /// The server is shutting down and the connection has no request in flight.
    Shutdown,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read_some(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        // Bytes while no request is being handled are the start of the next head.
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote_some(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request's head is complete and its handler starts; the returned guard ends it
    /// (held until the reply's body is sent).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Whether the connection should be closed now.
    pub fn expired(&self, limits: &ConnectionLimits, stopping: bool) -> Option<Expiry> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if stopping {
            return Some(Expiry::Shutdown);
        }
        let now = self.now_ms();
        let head = self.head_started.load(Ordering::Acquire);
        if head > 0 {
            let age = Duration::from_millis(now.saturating_sub(head - 1));
            return (age >= limits.header_read_timeout).then_some(Expiry::Header);
        }
        let idle = Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)));
        (idle >= limits.idle_timeout).then_some(Expiry::Idle)
    }
}

/// One request being handled; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote_some();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that reports its traffic to an [`Activity`].
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        TrackedIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(ms),
            idle_timeout: Duration::from_millis(ms),
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn head_and_idle_clocks_stop_while_a_request_is_handled() {
        let a = Activity::new();
        assert_eq!(a.expired(&limits(0), false), Some(Expiry::Idle));
        a.read_some();
        assert_eq!(a.expired(&limits(0), false), Some(Expiry::Header));
        assert_eq!(a.expired(&limits(60_000), false), None);
        let guard = a.enter();
        assert_eq!(a.expired(&limits(0), false), None);
        assert_eq!(a.expired(&limits(0), true), None);
        // Body bytes during the request start no head.
        a.read_some();
        drop(guard);
        assert_eq!(a.expired(&limits(0), false), Some(Expiry::Idle));
        assert_eq!(a.expired(&limits(60_000), true), Some(Expiry::Shutdown));
    }
}
