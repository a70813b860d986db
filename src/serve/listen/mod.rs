//! wgsd's accept loop, used by every listener: at most `max_connections` open
//! connections (more wait in the kernel's backlog until one closes), HTTP/1.1 by hyper
//! (HTTP/2 for gRPC, [`Protocol`]), and the timeouts of [`ConnectionLimits`] so that a slow or silent client (slowloris, a
//! body that never ends) cannot hold a connection forever.
//!
//! axum's own `serve` has no timeouts or cap; this loop replaces it, with the same
//! graceful shutdown: on stop, connections finish the request they handle, idle ones
//! close, and [`serve`] returns when every connection is gone.

mod body;
mod io;
mod tls;

pub use body::BodyTimeout;
pub use tls::acceptor as tls_acceptor;
pub use tokio_rustls::TlsAcceptor;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::config::ConnectionLimits;
use body::{DeadlineBody, GuardedBody};
use io::{Activity, Expiry, TrackedIo};

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1: the REST APIs.
    Http1,
    /// HTTP/2 only (prior knowledge, "h2c", or ALPN `h2` over TLS): gRPC.
    Http2,
}

/// Serves `app` on `listener` in `protocol` (over TLS with `tls`) until `stop` turns
/// true, then waits for the open connections to finish.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    protocol: Protocol,
    app: S,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // `acquire_many` below counts in u32.
    let cap = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(cap));
    loop {
        // The permit first: past the cap, connections stay unaccepted (queued).
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on (as hyper's
                    // and axum's loops do); the connection itself is the client's problem.
                    eprintln!("wgsd serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, stop) = (app.clone(), stop.clone());
        match tls.clone() {
            None => tokio::spawn(connection(stream, protocol, app, limits, stop, permit)),
            Some(tls) => tokio::spawn(async move {
                // The handshake counts as the head: a client that stalls in it is
                // dropped after header_read_timeout.
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, tls.accept(stream));
                if let Ok(Ok(stream)) = handshake.await {
                    connection(stream, protocol, app, limits, stop, permit).await;
                }
            }),
        };
    }
    drop(listener);
    // Every connection holds a permit until it closes.
    let _all = permits.acquire_many(cap as u32).await;
    Ok(())
}

/// One connection: hyper serves it while a watchdog checks [`Activity::expired`].
async fn connection<T, S>(
    stream: T,
    protocol: Protocol,
    app: S,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let request = requests.enter();
        let req = req.map(|b| Body::new(DeadlineBody::new(b, limits.body_read_timeout)));
        let reply = tower::ServiceExt::oneshot(app.clone(), req);
        async move {
            let res = reply.await?;
            Ok::<_, Infallible>(res.map(|b| Body::new(GuardedBody::new(b, request))))
        }
    });
    let mut http = auto::Builder::new(TokioExecutor::new());
    http = match protocol {
        Protocol::Http1 => http.http1_only(),
        Protocol::Http2 => http.http2_only(),
    };
    // The watchdog times the head from its first byte; hyper's own timer would start
    // as soon as the connection waits, which is the idle timer's job.
    http.http1().header_read_timeout(None);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    let mut stopping = *stop.borrow();
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = ticks.tick() => {
                // Dropping the connection closes it.
                if let Some(why) = activity.expired(&limits, stopping) {
                    // HTTP/2 says goodbye first (GOAWAY), so a client's next call opens a
                    // new connection instead of failing; the next tick drops it.
                    if protocol == Protocol::Http2 && !stopping {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                        continue;
                    }
                    if why == Expiry::Header {
                        eprintln!("wgsd serve: a client sent no complete request head within header_read_timeout; connection closed");
                    }
                    break;
                }
            }
            _ = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Waits for the stop signal (or for its sender to go, which is a stop too).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
