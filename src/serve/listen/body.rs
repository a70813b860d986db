//! Request and reply bodies as the accept loop hands them on: a request body must arrive
//! whole within `body_read_timeout` of its head ([`DeadlineBody`]; a `Content-Length`
//! longer than what is sent, or a chunked body that never ends, is cut off), and a reply
//! body keeps its request counted as in flight until it is sent ([`GuardedBody`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::io::InFlight;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body did not arrive within `body_read_timeout` (a 408 reply).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within body_read_timeout ({} s)", .0.as_secs_f32())]
pub struct BodyTimeout(pub Duration);

/// A request body with a deadline for all of it.
pub struct DeadlineBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit)))));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A reply body that holds its request's [`InFlight`] until it is dropped.
pub struct GuardedBody<B> {
    inner: B,
    _request: InFlight,
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, request: InFlight) -> Self {
        GuardedBody {
            inner,
            _request: request,
        }
    }
}

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
