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

use super::AppState;
use crate::live::{self, Frame, Outbox};
use crate::request::RequestContext;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;

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

/// Queues messages for the socket's writer; `false` once the socket is gone.
#[derive(Clone)]
struct Tx(Arc<Outbox>);

impl Tx {
    async fn text(&self, s: String) -> bool {
        self.0.push_wait(Frame::Text(s)).await
    }

    async fn json(&self, v: Value) -> bool {
        self.text(v.to_string()).await
    }

    fn close(&self, code: u16, reason: &str) {
        self.0.push_now([Frame::Close(code, reason.to_string())]);
    }
}

/// One operation's frames: `{"id":…,"type":"next","payload":` + result + `}`.
struct WsFraming {
    /// The id as JSON.
    id: Box<str>,
    head: Arc<str>,
}

impl WsFraming {
    fn new(id: &str, protocol: Protocol) -> Self {
        let id = Value::String(id.to_string()).to_string();
        let next = match protocol {
            Protocol::Modern => "next",
            Protocol::Legacy => "data",
        };
        let head = Arc::from(format!(r#"{{"id":{id},"type":"{next}","payload":"#));
        WsFraming {
            id: id.into_boxed_str(),
            head,
        }
    }
}

impl live::Framing for WsFraming {
    fn next(&self, body: &bytes::Bytes) -> Frame {
        Frame::Parts {
            head: self.head.clone(),
            body: body.clone(),
            tail: "}",
        }
    }

    fn failure(&self, body: &bytes::Bytes) -> Frame {
        Frame::Text(format!(
            r#"{{"id":{},"type":"error","payload":{}}}"#,
            self.id,
            errors_of(body)
        ))
    }

    fn complete(&self) -> Option<Frame> {
        Some(Frame::Text(format!(
            r#"{{"id":{},"type":"complete"}}"#,
            self.id
        )))
    }

    fn transport(&self) -> &'static str {
        "websocket"
    }
}

/// What keeps an operation going: a task (a query or mutation running, a subscription
/// being set up), or its place in a shared subscription.
enum Handle {
    /// Registered; its task is about to be stored.
    Starting,
    Task(AbortHandle),
    Subscribed(#[allow(dead_code)] live::Subscribed),
}

/// One running operation, and the registration it was started under. An id can be reused
/// as soon as its operation is stopped, so an old operation, ending late, must remove
/// only its own registration, never a newer one under the same id.
struct Running {
    tag: u64,
    handle: Handle,
}

impl Running {
    /// Stops the operation (leaving a subscription is dropping its place).
    fn halt(self) {
        if let Handle::Task(task) = self.handle {
            task.abort();
        }
    }
}

/// Running operations of one socket, by id.
#[derive(Clone, Default)]
struct Ops(Arc<Mutex<OpsInner>>);

/// A list, not a map: a socket runs few operations (`--max-operations-per-connection`,
/// 100 by default), and most run one, which a map would give room for several.
#[derive(Default)]
struct OpsInner {
    by_id: Vec<(Box<str>, Running)>,
    next_tag: u64,
}

impl OpsInner {
    fn by_tag(&mut self, tag: u64) -> Option<&mut Running> {
        self.by_id
            .iter_mut()
            .find(|(_, r)| r.tag == tag)
            .map(|(_, r)| r)
    }

    fn remove(&mut self, found: impl Fn(&str, &Running) -> bool) -> Option<Running> {
        let at = self.by_id.iter().position(|(id, r)| found(id, r))?;
        let (_, running) = self.by_id.swap_remove(at);
        if self.by_id.is_empty() {
            self.by_id = Vec::new();
        }
        Some(running)
    }
}

impl Ops {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpsInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().by_id.iter().any(|(i, _)| &**i == id)
    }

    fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Stops the operation registered under `id`, if any.
    fn stop(&self, id: &str) {
        let stopped = self.lock().remove(|i, _| i == id);
        if let Some(op) = stopped {
            op.halt();
        }
    }

    /// Registers a new operation under `id` (not registered yet); returns its tag.
    fn register(&self, id: &str) -> u64 {
        let mut ops = self.lock();
        ops.next_tag += 1;
        let tag = ops.next_tag;
        if ops.by_id.len() == ops.by_id.capacity() {
            let more = ops.by_id.len().max(1);
            ops.by_id.reserve_exact(more);
        }
        ops.by_id.push((
            id.into(),
            Running {
                tag,
                handle: Handle::Starting,
            },
        ));
        tag
    }

    /// Operation `tag` runs in `task` (stopped at once if the operation was stopped, or
    /// ended, meanwhile).
    fn running(&self, tag: u64, task: AbortHandle) {
        let mut ops = self.lock();
        match ops.by_tag(tag) {
            Some(op) if matches!(op.handle, Handle::Starting) => op.handle = Handle::Task(task),
            Some(_) => {}
            None => task.abort(),
        }
    }

    /// Operation `tag` goes on as a place in a shared subscription (dropped if the
    /// operation was stopped meanwhile). Its setup task, the caller, ends by itself.
    fn subscribed(&self, tag: u64, place: live::Subscribed) {
        let mut ops = self.lock();
        match ops.by_tag(tag) {
            Some(op) => op.handle = Handle::Subscribed(place),
            None => {
                drop(ops);
                drop(place);
            }
        }
    }

    /// Removes operation `tag`'s registration (it has ended), if it is still there.
    fn finished(&self, tag: u64) {
        // Not halted: it is its own task that is ending (or its subscription that ended).
        let ended = self.lock().remove(|_, r| r.tag == tag);
        drop(ended);
    }

    /// Stops every operation (the socket is closing).
    fn stop_all(&self) {
        let all = std::mem::take(&mut self.lock().by_id);
        for (_, op) in all {
            op.halt();
        }
    }
}

/// Serves one upgraded socket until it closes, in two tasks of its own (tracked for a
/// graceful shutdown): the reader, which also holds `held` (the connection's admission)
/// for the socket's life, and the writer.
pub fn serve(state: AppState, socket: WebSocket, ctx: RequestContext, held: impl Send + 'static) {
    use tracing::Instrument;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let conn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // At debug level: an enabled span costs every idle socket ~0.4 KiB in the log
    // subscriber's registry.
    let span = tracing::debug_span!("ws", conn);
    let tracker = state.sockets.clone();
    let (reader, writer) = span.in_scope(|| tasks(state, socket, ctx, held));
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
    ctx: RequestContext,
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
    let closing = tokio_util::sync::CancellationToken::new();
    let ops = Ops::default();
    // A client that reads nothing while we have something to write, for as long as an
    // HTTP connection may stall, is disconnected: its socket would hold memory forever.
    let stall = state.limits.header_timeout;
    let stalled = closing.clone();
    let (out, finished) = (outbox.clone(), ops.clone());
    // What is queued while the writer writes goes out in its next round.
    let writer = async move {
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
            match Box::pin(write_round(&mut sink, frames, stall)).await {
                Round::Written => {}
                Round::Closed => break,
                Round::Stalled => {
                    tracing::debug!(?stall, "client does not read: disconnecting");
                    out.close();
                    stalled.cancel();
                    return;
                }
            }
        }
        out.close();
        stalled.cancel();
        let _ = Box::pin(tokio::time::timeout(stall, sink.close())).await;
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

/// Writes `frames` (all but [`Frame::Ended`]) and flushes them.
async fn write_round(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    frames: Vec<Frame>,
    stall: Duration,
) -> Round {
    let mut last = false;
    for frame in frames {
        let msg = match frame {
            Frame::Ended(_) => continue,
            Frame::Close(code, reason) => {
                last = true;
                Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason),
                }))
            }
            other => Message::Text(Utf8Bytes::from(other.into_text())),
        };
        match tokio::time::timeout(stall, sink.feed(msg)).await {
            Ok(Ok(())) if !last => {}
            Ok(_) => return Round::Closed,
            Err(_) => return Round::Stalled,
        }
    }
    match tokio::time::timeout(stall, sink.flush()).await {
        Ok(Ok(())) if !last => Round::Written,
        Ok(_) => Round::Closed,
        Err(_) => Round::Stalled,
    }
}

struct Connection {
    state: AppState,
    tx: Tx,
    ops: Ops,
    /// Cancelled when the socket closes: every operation task ends with it.
    closing: tokio_util::sync::CancellationToken,
    /// The upgrade request's headers that can change an upstream's answer, plus those the
    /// `connection_init` payload gives.
    ctx: RequestContext,
    protocol: Protocol,
    acked: bool,
    init_seen: bool,
    /// Operations this socket may still start this second.
    bucket: super::limits::Bucket,
}

impl Connection {
    async fn read(&mut self, stream: &mut futures_util::stream::SplitStream<WebSocket>) {
        use tokio::time::Instant;
        let mut shutdown = self.state.shutdown.clone();
        let stopping = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tokio::pin!(stopping);
        // One timer for the init wait, the idle check and the legacy keep-alive: each
        // wake-up does what is due and sets it to the next deadline.
        let start = Instant::now();
        let init_by = start + self.state.ws.init_timeout;
        let idle_timeout = self.state.limits.idle_timeout;
        let idle_every = (idle_timeout / 4).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(5),
        );
        let mut last_activity = start;
        let mut next_idle_check = start + idle_every;
        let mut next_ka = start + self.state.ws.keepalive;
        let timer = tokio::time::sleep_until(init_by.min(next_idle_check));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                () = &mut timer => {
                    let now = Instant::now();
                    if !self.init_seen && now >= init_by {
                        self.tx.close(4408, "Connection initialisation timeout");
                        return;
                    }
                    if now >= next_idle_check {
                        next_idle_check = now + idle_every;
                        if self.ops.len() > 0 {
                            last_activity = now;
                        } else if now.duration_since(last_activity) >= idle_timeout {
                            self.tx.close(1000, "idle: no operation and no message for the idle timeout");
                            return;
                        }
                    }
                    let legacy = self.acked && self.protocol == Protocol::Legacy;
                    if legacy && now >= next_ka {
                        next_ka = now + self.state.ws.keepalive;
                        if !self.tx.json(json!({"type": "ka"})).await {
                            return;
                        }
                    }
                    let mut next = next_idle_check;
                    if !self.init_seen {
                        next = next.min(init_by);
                    }
                    if legacy {
                        next = next.min(next_ka);
                    }
                    timer.as_mut().reset(next);
                }
                () = self.closing.cancelled() => return,
                _ = &mut stopping => {
                    // 1012 Service Restart: graphql-ws (and browsers) reconnect on it.
                    self.tx.close(1012, "server restarting");
                    return;
                }
                msg = stream.next() => {
                    last_activity = tokio::time::Instant::now();
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            self.tx.close(4400, "Invalid message received: binary frames are not GraphQL messages");
                            return;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Err(e)) => {
                            // tungstenite refuses a frame over `--max-request-body` this way.
                            if e.to_string().contains("too long") {
                                self.state.runtime.metrics.reject(crate::metrics::Rejection::Limit);
                                self.tx.close(1009, "message too big (--max-request-body)");
                            }
                            return;
                        }
                        Some(Ok(Message::Close(_))) | None => return,
                    };
                    // Boxed: an idle connection's future holds no room for handling a
                    // message.
                    let keep_going = match self.protocol {
                        Protocol::Modern => Box::pin(self.modern(&text)).await,
                        Protocol::Legacy => Box::pin(self.legacy(&text)).await,
                    };
                    if !keep_going {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one graphql-transport-ws message; `false` ends the connection.
    async fn modern(&mut self, text: &str) -> bool {
        let Some(msg) = parse(text) else {
            self.tx.close(4400, "Invalid message received");
            return false;
        };
        match msg.kind.as_str() {
            "connection_init" => {
                if self.init_seen {
                    self.tx.close(4429, "Too many initialisation requests");
                    return false;
                }
                self.init_seen = true;
                self.take_init_payload(msg.payload.as_ref());
                self.acked = true;
                self.tx.json(json!({"type": "connection_ack"})).await
            }
            "ping" => {
                let mut pong = json!({"type": "pong"});
                if let Some(p) = msg.payload {
                    pong["payload"] = p;
                }
                self.tx.json(pong).await
            }
            "pong" => true,
            "subscribe" => {
                if !self.acked {
                    self.tx.close(4401, "Unauthorized");
                    return false;
                }
                let (Some(id), Some(payload)) = (msg.id, msg.payload.filter(names_a_document))
                else {
                    self.tx.close(4400, "Invalid message received: subscribe needs an id and a payload with a query");
                    return false;
                };
                if self.ops.contains(&id) {
                    self.tx
                        .close(4409, &format!("Subscriber for {id} already exists"));
                    return false;
                }
                let req = match self.request(&payload).await {
                    Ok(req) => req,
                    Err(refused) => {
                        return self
                            .tx
                            .json(json!({"id": id, "type": "error", "payload": [refused]}))
                            .await
                    }
                };
                if let Some(refusal) = self.over_limit() {
                    return self
                        .tx
                        .json(json!({"id": id, "type": "error", "payload": [{"message": refusal}]}))
                        .await;
                }
                self.start(id, req);
                true
            }
            "complete" => match msg.id {
                Some(id) => {
                    self.ops.stop(&id);
                    true
                }
                None => {
                    self.tx
                        .close(4400, "Invalid message received: complete needs an id");
                    false
                }
            },
            other => {
                self.tx.close(
                    4400,
                    &format!("Invalid message received: unknown type {other:?}"),
                );
                false
            }
        }
    }

    /// Handles one subscriptions-transport-ws message; `false` ends the connection.
    async fn legacy(&mut self, text: &str) -> bool {
        let Some(msg) = parse(text) else {
            return self.tx.json(json!({"type": "connection_error", "payload": {"message": "invalid message: not a JSON object with a type"}})).await;
        };
        match msg.kind.as_str() {
            "connection_init" => {
                self.init_seen = true;
                self.take_init_payload(msg.payload.as_ref());
                self.acked = true;
                self.tx.json(json!({"type": "connection_ack"})).await && self.tx.json(json!({"type": "ka"})).await
            }
            "start" => {
                let Some(id) = msg.id else {
                    return self.tx.json(json!({"type": "error", "payload": {"message": "start needs an id"}})).await;
                };
                if !self.acked {
                    return self.tx.json(json!({"type": "error", "id": id, "payload": [{"message": "send connection_init first"}]})).await;
                }
                let Some(payload) = msg.payload.filter(names_a_document) else {
                    return self.tx.json(json!({"type": "error", "id": id, "payload": [{"message": "start needs a payload with a query"}]})).await;
                };
                let req = match self.request(&payload).await {
                    Ok(req) => req,
                    Err(refused) => {
                        return self.tx.json(json!({"id": id, "type": "error", "payload": [refused]})).await
                    }
                };
                // The legacy protocol restarts an id that is already running.
                self.ops.stop(&id);
                if let Some(refusal) = self.over_limit() {
                    return self.tx.json(json!({"id": id, "type": "error", "payload": [{"message": refusal}]})).await;
                }
                self.start(id, req);
                true
            }
            "stop" => {
                if let Some(id) = msg.id {
                    self.ops.stop(&id);
                }
                true
            }
            "connection_terminate" => {
                self.tx.close(1000, "terminated");
                false
            }
            other => self.tx.json(json!({"type": "connection_error", "payload": {"message": format!("unknown message type {other:?}")}})).await,
        }
    }

    /// The GraphQL request of a `subscribe`/`start` payload, its document its own or a
    /// persisted one; a refusal is the `error` message's payload entry.
    async fn request(&self, payload: &Value) -> Result<async_graphql::Request, Value> {
        let query = payload
            .get("query")
            .and_then(Value::as_str)
            .map(str::to_string);
        let query = self
            .state
            .persisted
            .document(
                query,
                payload.get("extensions"),
                payload.get("documentId"),
                async |text: &str| {
                    let name = payload.get("operationName").and_then(Value::as_str);
                    self.state.engine().validates(text, name).await
                },
            )
            .await
            .map_err(|r| json!({"message": r.message, "extensions": {"code": r.code}}))?;
        let mut req = async_graphql::Request::new(query);
        if let Some(v @ Value::Object(_)) = payload.get("variables") {
            req = req.variables(async_graphql::Variables::from_json(v.clone()));
        }
        if let Some(name) = payload.get("operationName").and_then(Value::as_str) {
            req = req.operation_name(name);
        }
        Ok(req)
    }

    /// Why one more operation on this socket is refused, if it is.
    fn over_limit(&mut self) -> Option<String> {
        let max = self.state.limits.max_operations_per_connection;
        let why = if self.ops.len() >= max {
            format!("too many operations on this connection: {max} at most (--max-operations-per-connection)")
        } else if !self.bucket.take() {
            let rate = self.state.limits.max_operations_per_second;
            format!("too many operations per second on this connection: {rate} at most (--max-operations-per-second)")
        } else {
            return None;
        };
        self.state
            .runtime
            .metrics
            .reject(crate::metrics::Rejection::Limit);
        Some(why)
    }

    /// `connection_init`'s payload is available to resolvers as request headers: its
    /// `headers` object and its top-level string members (`{"Authorization": "Bearer …"}`);
    /// of them, those that can change an upstream's answer are kept.
    fn take_init_payload(&mut self, payload: Option<&Value>) {
        let engine = self.state.engine();
        let kept = engine.responses.vary();
        let Some(Value::Object(map)) = payload else {
            return;
        };
        let nested = map
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        let mut headers = self.ctx.headers().clone();
        for (k, v) in map.iter().chain(nested) {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                if kept.contains(&name) {
                    headers.insert(name, value);
                }
            }
        }
        self.ctx = RequestContext::new(headers);
    }

    /// Starts one operation, registered under `id` until it ends (or the socket closes),
    /// through [`live::start`]. The work is polled once here: a live query joins its
    /// shared subscription at once, and a result from the response cache is queued at
    /// once when there is room, with no task kept for either; what is still pending (a
    /// query running, an event subscription being prepared, a result waiting for room)
    /// goes on in a task of its own, which ends once the result is queued (or the
    /// subscription joined).
    fn start(&self, id: String, req: async_graphql::Request) {
        use futures_util::FutureExt;
        let tag = self.ops.register(&id);
        let framing = Arc::new(WsFraming::new(&id, self.protocol));
        let subscriber = live::Subscriber {
            outbox: self.tx.0.clone(),
            framing: framing.clone(),
            tag,
        };
        let started = live::start(
            self.state.engine(),
            self.state.topics.clone(),
            req,
            self.ctx.clone(),
            subscriber,
        );
        let (ops, outbox) = (self.ops.clone(), self.tx.0.clone());
        let span = tracing::info_span!("operation", %id);
        let mut work = Box::pin(tracing::Instrument::instrument(
            async move {
                let done = started.await;
                deliver(&ops, &outbox, &framing, tag, done).await;
            },
            span,
        ));
        if (&mut work).now_or_never().is_some() {
            return;
        }
        let task = tokio::spawn(work);
        self.ops.running(tag, task.abort_handle());
    }
}

/// Tells the client what an operation's start came to: a subscription is registered
/// under its tag; a request error or a refusal ends the operation with it; a result is
/// queued once there is room for it (a query's one result is never dropped), then
/// `complete`.
async fn deliver(
    ops: &Ops,
    outbox: &Arc<Outbox>,
    framing: &WsFraming,
    tag: u64,
    done: live::Started,
) {
    use live::Framing;
    match done {
        live::Started::Subscribed(place) => ops.subscribed(tag, place),
        live::Started::Refused(body) => outbox.push_final(Some(framing.failure(&body)), tag),
        live::Started::Once(done) if done.request_error => {
            outbox.push_final(Some(framing.failure(&done.body)), tag)
        }
        live::Started::Once(done) => {
            if outbox.push_wait(framing.next(&done.body)).await {
                outbox.push_final(framing.complete(), tag);
            }
        }
        live::Started::Ended => {}
    }
}

struct Incoming {
    kind: String,
    id: Option<String>,
    payload: Option<Value>,
}

fn parse(text: &str) -> Option<Incoming> {
    let Value::Object(mut map) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let kind = map.get("type")?.as_str()?.to_string();
    let id = match map.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return None,
    };
    Some(Incoming {
        kind,
        id,
        payload: map.remove("payload").filter(|p| !p.is_null()),
    })
}

/// Whether a `subscribe`/`start` payload names a document: its own `query`, or a
/// persisted one (`extensions.persistedQuery`, `documentId`).
fn names_a_document(payload: &Value) -> bool {
    payload.get("query").is_some_and(Value::is_string)
        || payload
            .get("extensions")
            .and_then(|e| e.get("persistedQuery"))
            .is_some()
        || payload.get("documentId").is_some()
}

/// The `errors` of a request-error body, as the `error` message's payload.
fn errors_of(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("errors").map(Value::take))
        .unwrap_or_else(|| json!([{"message": "request error"}]))
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
