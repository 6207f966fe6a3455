//! The accept loop: client TCP connections → hyper (HTTP/1 and HTTP/2, upgrades) → the
//! router. Written out instead of `axum::serve` for what that does not offer:
//!
//! - a deadline on every connection that is not in use: one with no request in flight
//!   (one that never sent a byte, a partial HTTP/2 preface, an idle HTTP/2 or keep-alive
//!   connection) is closed after `--header-timeout-ms`, as is one whose writes have been
//!   stalled that long (a client that stopped reading its response or its event stream);
//!   a request in flight (its body has its own deadline, see [`super::body`]), an SSE
//!   stream or a WebSocket carried over HTTP/2 keeps its connection;
//! - TCP connection limits per gateway and per client address, refused with a `503` at
//!   accept, and the `livegate_tcp_connections` gauge;
//! - a graceful shutdown that waits for open connections up to the caller's deadline.

use super::handover::{Handover, Streamed};
use super::limits::{Connections, Limits};
use crate::metrics::{GaugeGuard, Metrics};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::Service;

/// Serves `app` on `listener` until `stop` completes; then stops accepting, asks every
/// connection to finish (HTTP/1 after its current response, HTTP/2 with GOAWAY) and
/// returns when all have.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    direct: Option<super::Direct>,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Header names in their canonical case (`Content-Type`, not `content-type`):
        // names are case-insensitive, but some clients compare them case-sensitively
        // (Python's `gql` reads `Sec-WebSocket-Protocol` from the 101 response). Title
        // case writes `Sec-Websocket-Protocol`, so a WebSocket handshake's answer carries
        // the case the client wrote its own headers in (the upgrade hands the request's
        // recorded case to its response; see `http::get`).
        .title_case_headers(true)
        .preserve_header_case(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Connections::default();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let admitted = match open.admit(peer.ip(), limits.tcp()) {
            Ok(a) => a,
            Err(why) => {
                metrics.reject(crate::metrics::Rejection::Limit);
                tracing::warn!(%peer, reason = %why, "connection refused");
                tokio::spawn(refuse(stream, why));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The place is held by the stream itself: an upgraded WebSocket takes the stream
        // out of hyper's connection, and keeps its place until the socket closes; a
        // stream taken over from hyper keeps it in the connection's task.
        let activity = Arc::new(Activity::new());
        let held = Arc::new((admitted, GaugeGuard::new(metrics.tcp_connections.clone())));
        let io = Arc::new(stream);
        let stream = Counted {
            io: io.clone(),
            activity: activity.clone(),
            _held: held.clone(),
        };
        let router = app.clone();
        let direct = direct.clone();
        let busy = activity.clone();
        let io_for_requests = io.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            let working = Working::new(&busy);
            let http11 = req.version() == http::Version::HTTP_11;
            if http11 && req.headers().contains_key(http::header::UPGRADE) {
                // A WebSocket upgraded from this request may write the socket itself.
                req.extensions_mut().insert(RawSocket {
                    io: io_for_requests.clone(),
                    activity: busy.clone(),
                });
            }
            req.extensions_mut().insert(ConnectInfo(peer));
            // A handler that keeps the connection busy beyond its response (a WebSocket
            // over HTTP/2) holds a clone of this.
            req.extensions_mut().insert(working.clone());
            use futures_util::future::Either;
            let call = match direct.as_ref().filter(|d| d.serves(&req)) {
                // Boxed once here: the handler's future is kilobytes, and hyper would
                // otherwise move it (memcpy) on its way in: 3% of a small query's CPU.
                Some(d) => Either::Left(Box::pin(d.clone().serve(req.map(axum::body::Body::new)))),
                None => Either::Right(router.clone().call(req)),
            };
            async move {
                let res = match call {
                    Either::Left(direct) => direct.await,
                    Either::Right(routed) => routed.await?,
                };
                // An event stream over HTTP/1.1 is taken over once its head is out.
                let res = match res.extensions().get::<Streamed>() {
                    Some(streamed) if http11 => {
                        let ask = &working.activity().handover;
                        *ask.slot.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(streamed.clone());
                        let mut res = res.map(|_| {
                            axum::body::Body::new(Handover {
                                ask: ask.wake.clone(),
                                asked: false,
                            })
                        });
                        // The stream is the connection's last response: it closes after.
                        res.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                        res
                    }
                    _ => res,
                };
                // The request is in flight until its response body is gone (sent, or
                // dropped with the connection): an event stream keeps it so.
                Ok::<_, std::convert::Infallible>(res.map(|body| {
                    axum::body::Body::new(Tracked {
                        inner: body,
                        _working: working,
                    })
                }))
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        // Held while a stream taken over from hyper is written: shutdown waits for it.
        let draining = graceful.watcher();
        let conn = graceful.watch(conn);
        let timeout = limits.header_timeout;
        tokio::spawn(async move {
            let stream = {
                tokio::pin!(conn);
                let mut check = tokio::time::interval(
                    (timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
                );
                let wake = activity.handover.wake.clone();
                let mut asked = false;
                loop {
                    tokio::select! {
                        ended = &mut conn => {
                            if let Err(e) = ended {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                            return;
                        }
                        _ = check.tick() => {
                            if let Some(why) = activity.expired(timeout) {
                                tracing::debug!(%peer, why, "connection closed");
                                return;
                            }
                        }
                        () = wake.notified(), if !asked => asked = true,
                    }
                    // Taken over once hyper has written the whole head (and all before it).
                    if asked && activity.flushed.load(Ordering::Acquire) {
                        let slot = activity
                            .handover
                            .slot
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take();
                        match slot.and_then(|s| s.take()) {
                            Some(stream) => break stream,
                            None => return,
                        }
                    }
                }
                // hyper's connection (and its buffers) is dropped here.
            };
            super::handover::write_out(&io, stream, timeout).await;
            drop((held, draining));
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over a limit with a `503` (before reading anything: a client
/// that sent a request reads it as the response) and closes it.
async fn refuse(mut stream: TcpStream, why: String) {
    let body = super::error_body(&why, Some("LIMIT_EXCEEDED"));
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What a connection is doing, for its deadline.
struct Activity {
    /// Requests in flight (their response bodies included).
    working: AtomicUsize,
    /// Since when it has had no request in flight (ms on `origin`'s clock).
    idle_since: AtomicU64,
    /// Since when its writes have been stalled; `u64::MAX` while they are not.
    stalled_since: AtomicU64,
    origin: tokio::time::Instant,
    /// Everything hyper wrote has been flushed (hyper flushes only an empty buffer).
    flushed: AtomicBool,
    /// An event stream waiting to be taken over from hyper.
    handover: Ask,
    /// Once a WebSocket writes its socket itself: where what hyper and the WebSocket
    /// library still write (a pong, a close reply) goes instead, to be written in order.
    divert: std::sync::OnceLock<Arc<crate::live::Outbox>>,
}

/// An HTTP/1.1 connection's socket, for a WebSocket upgraded on it to write itself (the
/// reading stays with the WebSocket library): see [`RawSocket::divert`].
#[derive(Clone)]
pub struct RawSocket {
    io: Arc<TcpStream>,
    activity: Arc<Activity>,
}

impl RawSocket {
    /// From now on, what anything else writes to this socket is queued in `outbox` (as
    /// [`crate::live::Frame::Raw`]), and the caller writes the socket: the bytes of one
    /// socket have one writer, in order.
    pub fn divert(&self, outbox: Arc<crate::live::Outbox>) {
        let _ = self.activity.divert.set(outbox);
    }

    /// The socket, to write once its writes are diverted.
    pub fn io(&self) -> &TcpStream {
        &self.io
    }

    /// The socket, shared (for pushes to write it too: see [`crate::live::Direct`]).
    pub fn shared_io(&self) -> Arc<TcpStream> {
        self.io.clone()
    }
}

/// A response's request to have its stream taken over: the stream, and the wake-up of
/// the connection's task.
#[derive(Default)]
struct Ask {
    slot: std::sync::Mutex<Option<Streamed>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            working: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            stalled_since: AtomicU64::new(u64::MAX),
            origin: tokio::time::Instant::now(),
            flushed: AtomicBool::new(true),
            handover: Ask::default(),
            divert: std::sync::OnceLock::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, timeout: Duration) -> Option<&'static str> {
        let now = self.now();
        let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let stalled = self.stalled_since.load(Ordering::Acquire);
        if stalled != u64::MAX && now.saturating_sub(stalled) >= limit {
            return Some("writes stalled for the timeout: the client does not read");
        }
        let idle = self.working.load(Ordering::Acquire) == 0
            && now.saturating_sub(self.idle_since.load(Ordering::Acquire)) >= limit;
        idle.then_some("no request in flight for the timeout")
    }
}

/// One request in flight on a connection; clones count once. The last one dropped makes
/// the connection idle (if no other request is in flight).
#[derive(Clone)]
pub struct Working {
    shared: Arc<WorkingInner>,
}

struct WorkingInner(Arc<Activity>);

impl Working {
    /// The connection the request is on.
    fn activity(&self) -> &Activity {
        &self.shared.0
    }

    fn new(activity: &Arc<Activity>) -> Self {
        activity.working.fetch_add(1, Ordering::AcqRel);
        Working {
            shared: Arc::new(WorkingInner(activity.clone())),
        }
    }
}

impl Drop for WorkingInner {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now(), Ordering::Release);
        a.working.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight while it lives.
struct Tracked {
    inner: axum::body::Body,
    _working: Working,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client's TCP stream, holding its place in the connection limits and the gauge for
/// as long as it lives, and noting when its writes stall and when they are flushed. The
/// socket is shared (read and written through `&TcpStream`, as tokio's own `poll_read`
/// and `poll_write` do) so that the connection's task can keep it when it takes an event
/// stream over from hyper.
struct Counted {
    io: Arc<TcpStream>,
    activity: Arc<Activity>,
    _held: Arc<(super::limits::Admitted, GaugeGuard)>,
}

impl Counted {
    fn note(&self, poll: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        let a = &self.activity;
        match &poll {
            Poll::Pending => {
                let _ = a.stalled_since.compare_exchange(
                    u64::MAX,
                    a.now(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(written) => {
                a.stalled_since.store(u64::MAX, Ordering::Release);
                if matches!(written, Ok(n) if *n > 0) {
                    a.flushed.store(false, Ordering::Release);
                }
            }
        }
        poll
    }

    /// `write` once the socket is writable, as often as it turns out not to be; or, once
    /// the socket's writes are diverted, `bytes` queued for its writer.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        bytes: impl FnOnce() -> bytes::Bytes,
        write: impl Fn(&TcpStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        if let Some(outbox) = self.activity.divert.get() {
            let bytes = bytes();
            let n = bytes.len();
            return Poll::Ready(if outbox.push_raw(bytes) {
                Ok(n)
            } else {
                Err(std::io::ErrorKind::BrokenPipe.into())
            });
        }
        loop {
            if let Err(e) = std::task::ready!(self.io.poll_write_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            match write(&self.io) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.io.poll_read_ready(cx))?;
            // SAFETY: `try_read` only writes into the slice (the kernel fills it), and
            // only the `n` bytes it reports are marked initialised; this is what tokio's
            // own `TcpStream::poll_read` does with the same unfilled part.
            let unfilled = unsafe {
                &mut *(buf.unfilled_mut() as *mut [std::mem::MaybeUninit<u8>] as *mut [u8])
            };
            match self.io.try_read(unfilled) {
                Ok(n) => {
                    // SAFETY: the kernel initialised these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = self.poll_write_with(
            cx,
            || bytes::Bytes::copy_from_slice(buf),
            |io| io.try_write(buf),
        );
        self.note(poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = self.poll_write_with(
            cx,
            || {
                bufs.iter()
                    .flat_map(|b| b.iter().copied())
                    .collect::<Vec<u8>>()
                    .into()
            },
            |io| io.try_write_vectored(bufs),
        );
        self.note(poll)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A TCP socket has nothing of its own to flush: what hyper wrote is out.
        self.activity.flushed.store(true, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.activity.divert.get().is_some() {
            // The socket's own writer ends it, after what is queued.
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(socket2::SockRef::from(&*self.io).shutdown(std::net::Shutdown::Write))
    }
}
