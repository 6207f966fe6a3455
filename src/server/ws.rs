//! GraphQL over WebSocket on `/graphql`, both subprotocols:
//!
//! - `graphql-transport-ws` (graphql-ws's PROTOCOL.md): `connection_init` within the
//!   init wait or close 4408; a second init closes 4429; `subscribe` before the ack
//!   closes 4401; a duplicate operation id 4409; an invalid message 4400; `ping`/`pong`;
//!   `complete` both ways; a bad operation gets an `error` message and the socket lives.
//! - `graphql-ws` (subscriptions-transport-ws, legacy): `connection_init`/`connection_ack`
//!   /`ka`, `start`/`data`/`error`/`complete`/`stop`, `connection_terminate`.
//!
//! A socket offering neither is closed with 4406. Queries and mutations run once; live
//! queries run until the client completes them. Every socket has one writer task fed by a
//! bounded channel: a client that does not read stalls only its own operations, whose
//! live queries then conflate (see [`crate::live`]).

use super::AppState;
use crate::live::{self, Prepared};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

/// Messages waiting for a socket's writer, at most (their bytes are bounded too, by
/// `--max-queued-bytes`). When either is full (the client is not reading), the socket's
/// operations wait: their live queries conflate, their event streams lose the oldest.
const OUTBOX: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    /// graphql-ws's `graphql-transport-ws`.
    Modern,
    /// subscriptions-transport-ws's `graphql-ws`.
    Legacy,
}

/// What the reader asks the writer to do.
enum Out {
    /// A message, and its share of the socket's byte budget (given back once written).
    Text(String, tokio::sync::OwnedSemaphorePermit),
    Close(u16, String),
}

/// Sends to the socket's writer; `false` once the socket is gone.
#[derive(Clone)]
struct Tx {
    out: mpsc::Sender<Out>,
    /// Bytes the socket may have queued and not yet written.
    budget: Arc<tokio::sync::Semaphore>,
    /// The budget's size: a bigger message takes all of it (it waits for an empty queue).
    max: u32,
}

impl Tx {
    fn new(out: mpsc::Sender<Out>, max_bytes: usize) -> Self {
        let max = u32::try_from(max_bytes.max(1)).unwrap_or(u32::MAX);
        Tx {
            out,
            budget: Arc::new(tokio::sync::Semaphore::new(max as usize)),
            max,
        }
    }

    async fn text(&self, s: String) -> bool {
        let weight = u32::try_from(s.len())
            .unwrap_or(u32::MAX)
            .clamp(1, self.max);
        let Ok(permit) = self.budget.clone().acquire_many_owned(weight).await else {
            return false;
        };
        self.out.send(Out::Text(s, permit)).await.is_ok()
    }

    async fn json(&self, v: Value) -> bool {
        self.text(v.to_string()).await
    }

    async fn close(&self, code: u16, reason: &str) {
        let _ = self.out.send(Out::Close(code, reason.to_string())).await;
    }
}

/// One running operation: its task, and the registration it was started under. An id
/// can be reused as soon as its operation is stopped, so an old operation's task, ending
/// late, must remove only its own registration, never a newer one under the same id.
struct Running {
    generation: u64,
    task: AbortHandle,
}

/// Running operations of one socket, by id.
#[derive(Clone, Default)]
struct Ops(Arc<Mutex<OpsInner>>);

#[derive(Default)]
struct OpsInner {
    by_id: HashMap<String, Running>,
    next_generation: u64,
}

impl Ops {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpsInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().by_id.contains_key(id)
    }

    fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Stops the operation registered under `id`, if any.
    fn stop(&self, id: &str) {
        if let Some(op) = self.lock().by_id.remove(id) {
            op.task.abort();
        }
    }

    /// Removes `id`'s registration if it is still the one of `generation`.
    fn finished(&self, id: &str, generation: u64) {
        let mut ops = self.lock();
        if ops
            .by_id
            .get(id)
            .is_some_and(|r| r.generation == generation)
        {
            ops.by_id.remove(id);
        }
    }

    /// Stops every operation (the socket is closing).
    fn stop_all(&self) {
        for (_, op) in self.lock().by_id.drain() {
            op.task.abort();
        }
    }
}

/// Serves one upgraded socket until it closes.
pub async fn serve(state: AppState, socket: WebSocket, headers: HeaderMap) {
    use tracing::Instrument;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let conn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    serve_socket(state, socket, headers)
        .instrument(tracing::info_span!("ws", conn))
        .await
}

async fn serve_socket(state: AppState, socket: WebSocket, headers: HeaderMap) {
    let _open = crate::metrics::GaugeGuard::new(
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
    let (tx, mut rx) = mpsc::channel::<Out>(OUTBOX);
    let closing = tokio_util::sync::CancellationToken::new();
    // A client that reads nothing while we have something to write, for as long as an
    // HTTP connection may stall, is disconnected: its socket would hold memory forever.
    let stall = state.limits.header_timeout;
    let stalled = closing.clone();
    // The writer runs beside the reader in the connection's own task (not a task of its
    // own: a task per socket less), so a client that does not read still cannot stall
    // the reading of its messages.
    let writer = async move {
        while let Some(out) = rx.recv().await {
            let (msg, last, _permit) = match out {
                Out::Text(s, permit) => (Message::Text(Utf8Bytes::from(s)), false, Some(permit)),
                Out::Close(code, reason) => (
                    Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from(reason),
                    })),
                    true,
                    None,
                ),
            };
            match tokio::time::timeout(stall, sink.send(msg)).await {
                Ok(Ok(())) if !last => {}
                Ok(_) => break,
                Err(_) => {
                    tracing::debug!(?stall, "client does not read: disconnecting");
                    stalled.cancel();
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(stall, sink.close()).await;
    };
    let tx = Tx::new(tx, state.ws.max_queued_bytes);
    let ops = Ops::default();
    let reader = async move {
        match protocol {
            None => {
                tx.close(
                    4406,
                    "Subprotocol not acceptable: use graphql-transport-ws or graphql-ws",
                )
                .await;
            }
            Some(protocol) => {
                let bucket = super::limits::Bucket::new(state.limits.max_operations_per_second);
                let mut conn = Connection {
                    state,
                    tx: tx.clone(),
                    ops: ops.clone(),
                    closing: closing.clone(),
                    headers,
                    protocol,
                    acked: false,
                    init_seen: false,
                    bucket,
                };
                conn.read(&mut stream).await;
            }
        }
        // Every operation ends with the socket, whether or not it is still registered: an
        // operation's task holds a sender of the writer, which would otherwise wait for it.
        ops.stop_all();
        closing.cancel();
        drop(tx);
    };
    tokio::join!(reader, writer);
}

struct Connection {
    state: AppState,
    tx: Tx,
    ops: Ops,
    /// Cancelled when the socket closes: every operation task ends with it.
    closing: tokio_util::sync::CancellationToken,
    /// The upgrade request's headers, plus those the `connection_init` payload gives.
    headers: HeaderMap,
    protocol: Protocol,
    acked: bool,
    init_seen: bool,
    /// Operations this socket may still start this second.
    bucket: super::limits::Bucket,
}

impl Connection {
    async fn read(&mut self, stream: &mut futures_util::stream::SplitStream<WebSocket>) {
        let init_wait = tokio::time::sleep(self.state.ws.init_timeout);
        tokio::pin!(init_wait);
        let mut keepalive = tokio::time::interval(self.state.ws.keepalive);
        keepalive.tick().await;
        let mut shutdown = self.state.shutdown.clone();
        let stopping = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tokio::pin!(stopping);
        let idle_timeout = self.state.limits.idle_timeout;
        let mut last_activity = tokio::time::Instant::now();
        let mut idle_check = tokio::time::interval((idle_timeout / 4).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(5),
        ));
        loop {
            tokio::select! {
                _ = idle_check.tick() => {
                    if self.ops.len() > 0 {
                        last_activity = tokio::time::Instant::now();
                    } else if last_activity.elapsed() >= idle_timeout {
                        self.tx.close(1000, "idle: no operation and no message for the idle timeout").await;
                        return;
                    }
                }
                () = self.closing.cancelled() => return,
                _ = &mut stopping => {
                    // 1012 Service Restart: graphql-ws (and browsers) reconnect on it.
                    self.tx.close(1012, "server restarting").await;
                    return;
                }
                _ = &mut init_wait, if !self.init_seen => {
                    self.tx.close(4408, "Connection initialisation timeout").await;
                    return;
                }
                _ = keepalive.tick(), if self.acked && self.protocol == Protocol::Legacy => {
                    if !self.tx.json(json!({"type": "ka"})).await {
                        return;
                    }
                }
                msg = stream.next() => {
                    last_activity = tokio::time::Instant::now();
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            self.tx.close(4400, "Invalid message received: binary frames are not GraphQL messages").await;
                            return;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Err(e)) => {
                            // tungstenite refuses a frame over `--max-request-body` this way.
                            if e.to_string().contains("too long") {
                                self.state.runtime.metrics.reject(crate::metrics::Rejection::Limit);
                                self.tx.close(1009, "message too big (--max-request-body)").await;
                            }
                            return;
                        }
                        Some(Ok(Message::Close(_))) | None => return,
                    };
                    let keep_going = match self.protocol {
                        Protocol::Modern => self.modern(&text).await,
                        Protocol::Legacy => self.legacy(&text).await,
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
            self.tx.close(4400, "Invalid message received").await;
            return false;
        };
        match msg.kind.as_str() {
            "connection_init" => {
                if self.init_seen {
                    self.tx
                        .close(4429, "Too many initialisation requests")
                        .await;
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
                    self.tx.close(4401, "Unauthorized").await;
                    return false;
                }
                let (Some(id), Some(req)) = (msg.id, msg.payload.as_ref().and_then(request)) else {
                    self.tx.close(4400, "Invalid message received: subscribe needs an id and a payload with a query").await;
                    return false;
                };
                if self.ops.contains(&id) {
                    self.tx
                        .close(4409, &format!("Subscriber for {id} already exists"))
                        .await;
                    return false;
                }
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
                        .close(4400, "Invalid message received: complete needs an id")
                        .await;
                    false
                }
            },
            other => {
                self.tx
                    .close(
                        4400,
                        &format!("Invalid message received: unknown type {other:?}"),
                    )
                    .await;
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
                let Some(req) = msg.payload.as_ref().and_then(request) else {
                    return self.tx.json(json!({"type": "error", "id": id, "payload": [{"message": "start needs a payload with a query"}]})).await;
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
                self.tx.close(1000, "terminated").await;
                false
            }
            other => self.tx.json(json!({"type": "connection_error", "payload": {"message": format!("unknown message type {other:?}")}})).await,
        }
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
    /// `headers` object and its top-level string members (`{"Authorization": "Bearer …"}`).
    fn take_init_payload(&mut self, payload: Option<&Value>) {
        let Some(Value::Object(map)) = payload else {
            return;
        };
        let nested = map
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        for (k, v) in map.iter().chain(nested) {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                self.headers.insert(name, value);
            }
        }
    }

    /// Runs one operation in its own task, registered under `id` until it ends (or the
    /// socket closes).
    fn start(&self, id: String, req: async_graphql::Request) {
        let state = self.state.clone();
        let tx = self.tx.clone();
        let ops = self.ops.clone();
        let closing = self.closing.clone();
        let headers = self.headers.clone();
        let protocol = self.protocol;
        // Registered under the lock the task's own removal takes: the task cannot finish
        // (and unregister) before it is registered.
        let mut registry = self.ops.lock();
        registry.next_generation += 1;
        let generation = registry.next_generation;
        let task_id = id.clone();
        let span = tracing::info_span!("operation", id = %task_id);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let run = async {
                    let completed = operation(&state, &tx, protocol, &task_id, req, headers).await;
                    // Unregister before announcing, so the id can be reused at once.
                    ops.finished(&task_id, generation);
                    if completed {
                        tx.json(json!({"id": task_id, "type": "complete"})).await;
                    }
                };
                tokio::select! {
                    () = run => {}
                    () = closing.cancelled() => {}
                }
            },
            span,
        ));
        registry.by_id.insert(
            id,
            Running {
                generation,
                task: task.abort_handle(),
            },
        );
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

/// A GraphQL request from a `subscribe`/`start` payload.
fn request(payload: &Value) -> Option<async_graphql::Request> {
    let query = payload.get("query")?.as_str()?;
    let mut req = async_graphql::Request::new(query);
    if let Some(v @ Value::Object(_)) = payload.get("variables") {
        req = req.variables(async_graphql::Variables::from_json(v.clone()));
    }
    if let Some(name) = payload.get("operationName").and_then(Value::as_str) {
        req = req.operation_name(name);
    }
    Some(req)
}

/// The `errors` of a request-error body, as the `error` message's payload.
fn errors_of(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("errors").map(Value::take))
        .unwrap_or_else(|| json!([{"message": "request error"}]))
}

/// Runs an operation to its end; `true` when it completed (rather than failed).
async fn operation(
    state: &AppState,
    tx: &Tx,
    protocol: Protocol,
    id: &str,
    req: async_graphql::Request,
    headers: HeaderMap,
) -> bool {
    let id_json = Value::String(id.to_string()).to_string();
    let (next, error) = match protocol {
        Protocol::Modern => ("next", "error"),
        Protocol::Legacy => ("data", "error"),
    };
    // Result bodies are JSON already: splice them in rather than re-encode.
    let result = |body: &[u8]| {
        format!(
            r#"{{"id":{id_json},"type":"{next}","payload":{}}}"#,
            String::from_utf8_lossy(body)
        )
    };
    let failure =
        |body: &[u8]| json!({"id": id, "type": error, "payload": errors_of(body)}).to_string();
    let frames = match live::prepare(&state.engine, req) {
        Err(message) => {
            tx.json(json!({"id": id, "type": error, "payload": [{"message": message}]}))
                .await;
            return false;
        }
        Ok(Prepared::Once(req)) => {
            let done = Box::pin(crate::exec::run(&state.engine, req, headers)).await;
            if done.request_error {
                tx.text(failure(&done.body)).await;
                return false;
            }
            return tx.text(result(&done.body)).await;
        }
        Ok(Prepared::Live { request, poll }) => {
            live::run(state.engine.clone(), request, headers, poll).boxed()
        }
        Ok(Prepared::Events(request)) => {
            live::events(state.engine.clone(), request, headers).boxed()
        }
    };
    tokio::pin!(frames);
    let pushed = state
        .runtime
        .metrics
        .pushed
        .with_label_values(&["websocket"]);
    while let Some(frame) = frames.next().await {
        let sent = if frame.request_error {
            tx.text(failure(&frame.body)).await
        } else {
            tx.text(result(&frame.body)).await
        };
        if frame.request_error || !sent {
            return false;
        }
        pushed.inc();
    }
    true
}

/// WebSocket settings; flags of the binary.
#[derive(Clone, Debug)]
pub struct WsOptions {
    /// How long a socket may stay open without `connection_init` (then 4408).
    pub init_timeout: Duration,
    /// How often the legacy protocol's `ka` is sent.
    pub keepalive: Duration,
    /// Bytes of messages one socket may have queued for a client that does not read.
    pub max_queued_bytes: usize,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            init_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(12),
            max_queued_bytes: 1 << 20,
        }
    }
}
