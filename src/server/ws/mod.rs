//! GraphQL over WebSocket on `/graphql`, both subprotocols:
//!
//! - `graphql-transport-ws` (graphql-ws's PROTOCOL.md): `connection_init` within the
//!   init wait or close 4408; a second init closes 4429; `subscribe` before the ack
//!   closes 4401; a duplicate operation id 4409; an invalid message 4400; `ping`/`pong`;
//!   `complete` both ways; a bad operation gets an `error` message and the socket lives.
//! - `graphql-ws` (subscriptions-transport-ws, legacy): `connection_init`/`connection_ack`
//!   /`ka`, `start`/`data`/`error`/`complete`/`stop`, `connection_terminate`.
//!
//! A socket offering neither is closed with 4406. Queries and mutations run once, each in
//! a short task; subscriptions join their shared subscription ([`crate::live::topic`]) and
//! run until the client completes them. Every socket has a reader task and a writer task
//! fed by the socket's bounded [`Outbox`]: a client that does not read slows nobody else;
//! its live queries conflate, its events lose the oldest (see [`crate::live::outbox`]).
//!
//! Files: this one (the socket's reader and writer tasks, options), [`protocol`] (one
//! connection's messages, both subprotocols), [`ops`] (the running operations by id).

mod auth;
mod ops;
mod protocol;

use super::AppState;
use crate::live::{self, Frame, Outbox};
use crate::request::RequestContext;
use auth::carries_token;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue};
use ops::*;
use protocol::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{
    CloseFrame as WsClose, Frame as WsFrame, FrameHeader,
};

pub const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

/// Bytes the writer takes from the outbox for one round of writes.
const BATCH: usize = 64 << 10;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    /// graphql-ws's `graphql-transport-ws`.
    Modern,
    /// subscriptions-transport-ws's `graphql-ws`.
    Legacy,
}

/// Serves one upgraded socket until it closes, in two tasks of its own (tracked for a
/// graceful shutdown): the reader, which also holds `held` (the connection's admission)
/// for the socket's life, and the writer.
pub fn serve(
    state: AppState,
    socket: WebSocket,
    (ctx, peer, raw): (
        RequestContext,
        Option<std::net::IpAddr>,
        Option<super::RawSocket>,
    ),
    held: impl Send + 'static,
) {
    use tracing::Instrument;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let conn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // At debug level: an enabled span costs every idle socket ~0.4 KiB in the log
    // subscriber's registry.
    let span = tracing::debug_span!("ws", conn);
    let tracker = state.sockets.clone();
    let (reader, writer) = span.in_scope(|| tasks(state, socket, (ctx, peer, raw), held));
    // Spawned as they are: an async block around one would hold it twice (as the value
    // it captured and as the future it awaits), 2.8 KiB instead of 1.4.
    tracker.spawn(writer.instrument(span.clone()));
    tracker.spawn(reader.instrument(span));
}

/// The reader and the writer of one socket. They are separate tasks, so a client that
/// does not read still cannot stall the reading of its messages, and a push wakes only
/// the writer (sharing one task made every push poll the reader's timers and signals
/// too: a fan-out to 2,000 sockets took 1.5× as long). The reader ends the writer once
/// it has queued its last message; the writer ends the reader if the client stalls.
fn tasks(
    state: AppState,
    socket: WebSocket,
    (ctx, peer, raw): (
        RequestContext,
        Option<std::net::IpAddr>,
        Option<super::RawSocket>,
    ),
    held: impl Send + 'static,
) -> (
    impl std::future::Future<Output = ()> + Send,
    impl std::future::Future<Output = ()> + Send,
) {
    let open = crate::metrics::GaugeGuard::new(
        state
            .runtime
            .metrics
            .connections
            .with_label_values(&["websocket"]),
    );
    let protocol = match socket.protocol().and_then(|p| p.to_str().ok()) {
        Some("graphql-transport-ws") => Some(Protocol::Modern),
        Some("graphql-ws") => Some(Protocol::Legacy),
        _ => None,
    };
    let (mut sink, mut stream) = socket.split();
    let outbox = Outbox::new(
        state.ws.max_queued_bytes,
        state.runtime.metrics.events_dropped.clone(),
    );
    // Over HTTP/1.1 the writer writes the TCP socket itself, each round's frames framed
    // into one buffer and written at once; what tungstenite still writes (a pong, a close
    // reply) is queued in the outbox and written in its turn.
    // A push finding the socket idle writes it at once (see `live::outbox`).
    if let Some(raw) = &raw {
        raw.divert(outbox.clone());
        outbox.write_directly(Box::new(Direct(raw.shared_io())));
    }
    let closing = tokio_util::sync::CancellationToken::new();
    let ops = Ops::default();
    // A client that reads nothing while we have something to write, for as long as an
    // HTTP connection may stall, is disconnected: its socket would hold memory forever.
    let stall = state.limits.header_timeout;
    let stalled = closing.clone();
    let (out, finished) = (outbox.clone(), ops.clone());
    // What is queued while the writer writes goes out in its next round.
    let writer = async move {
        // A close frame has been written (direct writes only).
        let mut closed = false;
        loop {
            let frames = out.take(BATCH).await;
            if frames.is_empty() {
                break;
            }
            // An ended operation is forgotten before its last message is written: the
            // client may reuse its id as soon as it reads that message.
            for frame in &frames {
                if let Frame::Ended(tag) = frame {
                    finished.finished(*tag);
                }
            }
            // Boxed: an idle writer holds no room for writing.
            let round = match &raw {
                Some(raw) => Box::pin(write_direct(raw.io(), frames, stall, &mut closed)).await,
                None => Box::pin(write_round(&mut sink, frames, stall)).await,
            };
            match round {
                Round::Written => out.written(),
                Round::Closed => break,
                Round::Stalled => {
                    tracing::debug!(?stall, "client does not read: disconnecting");
                    out.close();
                    stalled.cancel();
                    return;
                }
            }
        }
        match &raw {
            // Unless a close frame was written: tungstenite's close (the reply to the
            // client's, echoing its code, or its own), queued through the outbox, then
            // written.
            Some(raw) if !closed => {
                out.finish();
                let _ = Box::pin(tokio::time::timeout(stall, sink.close())).await;
                let frames = out.take(BATCH).await;
                let _ = Box::pin(write_direct(raw.io(), frames, stall, &mut closed)).await;
            }
            Some(_) => {}
            None => {
                let _ = Box::pin(tokio::time::timeout(stall, sink.close())).await;
            }
        }
        out.close();
        stalled.cancel();
    };
    let tx = Tx(outbox.clone());
    // Built here and moved in whole: built inside the reader, the reader's future would
    // hold both the parts it captured and the connection made of them.
    let conn = protocol.map(|protocol| Connection {
        bucket: super::limits::Bucket::new(state.limits.max_operations_per_second),
        state,
        tx: tx.clone(),
        ops: ops.clone(),
        closing: closing.clone(),
        ctx,
        protocol,
        acked: false,
        init_seen: false,
        expires: None,
        peer,
        trace: None,
    });
    let reader = async move {
        let _open = (open, held);
        match conn {
            None => {
                tx.close(
                    4406,
                    "Subprotocol not acceptable: use graphql-transport-ws or graphql-ws",
                );
            }
            Some(mut conn) => conn.read(&mut stream).await,
        }
        // Every operation ends with the socket, whether or not it is still registered;
        // the writer sends what is queued (a close frame, say), then ends.
        ops.stop_all();
        closing.cancel();
        tx.0.finish();
    };
    (reader, writer)
}

/// How a round of writes ended.
enum Round {
    Written,
    /// A close frame was sent, or the socket is gone.
    Closed,
    /// The client read nothing for `stall`.
    Stalled,
}

/// Writes `frames` (all but [`Frame::Ended`]) and flushes them: one write for the round
/// (tungstenite buffers what is fed), within one `stall` for the whole round.
async fn write_round(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    frames: Vec<Frame>,
    stall: Duration,
) -> Round {
    let round = async {
        for frame in frames {
            let msg = match frame {
                Frame::Ended(_) => continue,
                Frame::Close(code, reason) => {
                    // The close frame is the socket's last message.
                    let close = Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from(reason),
                    }));
                    let _ = sink.feed(close).await;
                    let _ = sink.flush().await;
                    return Round::Closed;
                }
                other => Message::Text(Utf8Bytes::from(other.into_text())),
            };
            if sink.feed(msg).await.is_err() {
                return Round::Closed;
            }
        }
        match sink.flush().await {
            Ok(()) => Round::Written,
            Err(_) => Round::Closed,
        }
    };
    tokio::time::timeout(stall, round)
        .await
        .unwrap_or(Round::Stalled)
}

/// Writes `frames` (all but [`Frame::Ended`]) to the socket `io` as WebSocket frames (a
/// server's: unmasked), framed into one buffer and written at once, within `stall`.
/// `closed` is set once a close frame is among them (ours, or tungstenite's reply).
async fn write_direct(
    io: &tokio::net::TcpStream,
    frames: Vec<Frame>,
    stall: Duration,
    closed: &mut bool,
) -> Round {
    let mut buf = Vec::with_capacity(frames.iter().map(|f| f.len() + 10).sum());
    let mut last = false;
    for frame in frames {
        match frame {
            Frame::Ended(_) => {}
            Frame::Raw(bytes) => {
                *closed |= holds_close(&bytes);
                buf.extend_from_slice(&bytes);
            }
            Frame::Rest(bytes) => buf.extend_from_slice(&bytes),
            Frame::Close(code, mut reason) => {
                // A control frame's payload is at most 125 bytes.
                while reason.len() > 123 {
                    reason.pop();
                }
                let close = WsFrame::close(Some(WsClose {
                    code: code.into(),
                    reason: reason.into(),
                }));
                // Writing into a Vec cannot fail.
                let _ = close.format(&mut buf);
                *closed = true;
                last = true;
                break;
            }
            text => {
                ws_header(&mut buf, OpCode::Data(Data::Text), text.len());
                text.append_to(&mut buf);
            }
        }
    }
    match tokio::time::timeout(stall, super::handover::write_all(io, &buf)).await {
        Ok(Ok(())) if !last => Round::Written,
        Ok(_) => Round::Closed,
        Err(_) => Round::Stalled,
    }
}

/// The socket lent to its outbox: a push writes text frames to it.
struct Direct(Arc<tokio::net::TcpStream>);

impl live::Direct for Direct {
    fn frame_head(&self, len: usize, out: &mut Vec<u8>) {
        ws_header(out, OpCode::Data(Data::Text), len);
    }

    fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(bytes)
    }
}

/// A final, unmasked (server) frame's head for `len` bytes of `opcode`, by tungstenite.
fn ws_header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let head = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = head.format(len as u64, out);
}

/// Whether whole server frames `bytes` hold a close frame.
fn holds_close(bytes: &[u8]) -> bool {
    let mut cursor = std::io::Cursor::new(bytes);
    while let Ok(Some((head, len))) = FrameHeader::parse(&mut cursor) {
        if head.opcode == OpCode::Control(Control::Close) {
            return true;
        }
        cursor.set_position(cursor.position().saturating_add(len));
    }
    false
}

/// WebSocket settings; flags of the binary.
#[derive(Clone, Debug)]
pub struct WsOptions {
    /// How long a socket may stay open without `connection_init` (then 4408).
    pub init_timeout: Duration,
    /// How often the legacy protocol's `ka` is sent.
    pub keepalive: Duration,
    /// Bytes of messages one socket (or SSE stream) may have queued for a client that does
    /// not read.
    pub max_queued_bytes: usize,
    /// How long a graphql-sse reservation waits for its stream before it is dropped (and
    /// its connection slot freed).
    pub reservation_claim: Duration,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            init_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(12),
            max_queued_bytes: 1 << 20,
            reservation_claim: Duration::from_secs(30),
        }
    }
}
