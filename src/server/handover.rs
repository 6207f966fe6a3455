//! Event streams (SSE, multipart, a graphql-sse reservation's stream) taken over from
//! hyper once their response head is written. An HTTP/1 connection in hyper keeps a read
//! and a write buffer of 8 KiB or more each for its life: 24 of the 26 KiB an idle SSE
//! stream cost. Over HTTP/1.1 the connection task ([`super::listen`]) drops hyper's
//! connection as soon as the head has gone out and writes the stream's chunks to the
//! socket itself (`Transfer-Encoding: chunked`, as hyper announced), keeping nothing but
//! the stream, a chunk while it is written, and the socket.
//!
//! What a client gets is unchanged: the same bytes, heartbeats, conflation and byte bound
//! (the stream's, from [`super::sse::frames`]); a write stalled for `--header-timeout-ms`
//! closes the connection, as the accept loop did; the stream ends with the last chunk and
//! the connection closes (the response says `Connection: close`: a stream is its
//! connection's last response); a client that goes away ends the stream at once. Over
//! HTTP/2 (or a router called without the accept loop) the stream is an ordinary
//! response body.

use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// An event stream's body, reachable from the response's extensions so that the accept
/// loop can take it over.
#[derive(Clone)]
pub struct Streamed(Arc<Mutex<Option<BoxStream<'static, Bytes>>>>);

impl Streamed {
    /// A `200` whose body is `stream`, marked as one that may be taken over.
    pub fn response(stream: BoxStream<'static, Bytes>) -> Response {
        let slot = Streamed(Arc::new(Mutex::new(Some(stream))));
        let mut res = Response::new(axum::body::Body::new(slot.clone()));
        res.extensions_mut().insert(slot);
        res
    }

    /// The stream, taken out (once).
    pub fn take(&self) -> Option<BoxStream<'static, Bytes>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// As an ordinary body (HTTP/2, or not taken over): the stream's chunks.
impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            None => Poll::Ready(None),
            Some(stream) => stream
                .poll_next_unpin(cx)
                .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c)))),
        }
    }
}

/// The body hyper is given for a stream to be taken over: hyper writes the head, then
/// polls this, which asks for the takeover (`ask`) and never yields data.
pub struct Handover {
    pub ask: Arc<tokio::sync::Notify>,
    pub asked: bool,
}

impl http_body::Body for Handover {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if !this.asked {
            this.asked = true;
            this.ask.notify_one();
        }
        Poll::Pending
    }
}

/// Writes `stream` to `io` in HTTP/1.1 chunks until it ends (then the last chunk), the
/// client goes away, or a write stalls for `stall`.
pub async fn write_out(io: &TcpStream, mut stream: BoxStream<'static, Bytes>, stall: Duration) {
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            () = gone(io) => return,
        };
        let (bytes, last) = match chunk {
            Some(c) if c.is_empty() => continue,
            Some(c) => {
                let mut out = Vec::with_capacity(c.len() + 12);
                // Writing into a Vec cannot fail.
                let _ = write!(out, "{:x}\r\n", c.len());
                out.extend_from_slice(&c);
                out.extend_from_slice(b"\r\n");
                (out, false)
            }
            None => (b"0\r\n\r\n".to_vec(), true),
        };
        match tokio::time::timeout(stall, write_all(io, &bytes)).await {
            Ok(Ok(())) if !last => {}
            Ok(Ok(())) => return,
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(?stall, "client does not read its stream: disconnecting");
                return;
            }
        }
    }
}

/// Writes all of `bytes` to `io` (any task may: the socket is shared).
pub(super) async fn write_all(io: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        io.writable().await?;
        match io.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Completes when the client has closed the connection (or it failed). What a client
/// sends on a stream's connection is read and dropped.
async fn gone(io: &TcpStream) {
    let mut sink = [0u8; 256];
    loop {
        if io.readable().await.is_err() {
            return;
        }
        match io.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}
