//! One connection's messages: `connection_init`, `subscribe`/`start`, `complete`/`stop`,
//! pings, for both subprotocols; what an operation's results become on the socket.

use super::*;

/// Queues messages for the socket's writer; `false` once the socket is gone.
#[derive(Clone)]
pub(super) struct Tx(pub(super) Arc<Outbox>);

impl Tx {
    pub(super) async fn text(&self, s: String) -> bool {
        self.0.push_wait(Frame::Text(s)).await
    }

    pub(super) async fn json(&self, v: Value) -> bool {
        self.text(v.to_string()).await
    }

    pub(super) fn close(&self, code: u16, reason: &str) {
        self.0.push_now([Frame::Close(code, reason.to_string())]);
    }
}

/// One operation's frames: `{"id":…,"type":"next","payload":` + result + `}`.
pub(super) struct WsFraming {
    /// The id as JSON.
    id: Box<str>,
    head: Arc<str>,
}

impl live::Framing for WsFraming {
    fn parts(&self) -> (&Arc<str>, &'static str) {
        (&self.head, "}")
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

impl WsFraming {
    pub(super) fn new(id: &str, protocol: Protocol) -> Self {
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

pub(super) struct Connection {
    pub(super) state: AppState,
    pub(super) tx: Tx,
    pub(super) ops: Ops,
    /// Cancelled when the socket closes: every operation task ends with it.
    pub(super) closing: tokio_util::sync::CancellationToken,
    /// The upgrade request's headers that can change an upstream's answer, plus those the
    /// `connection_init` payload gives.
    pub(super) ctx: RequestContext,
    pub(super) protocol: Protocol,
    pub(super) acked: bool,
    pub(super) init_seen: bool,
    /// When the token the connection was opened (or last renewed) with runs out: the
    /// connection closes then (see `auth.rs`).
    pub(super) expires: Option<tokio::time::Instant>,
    /// The client's address (what `--rate-limit` counts an anonymous client by).
    pub(super) peer: Option<std::net::IpAddr>,
    /// Operations this socket may still start this second.
    pub(super) bucket: crate::server::limits::Bucket,
    /// The connection's trace context (`traceparent` in the `connection_init` payload,
    /// or on the upgrade request): each operation's span is a child of it.
    pub(super) trace: Option<opentelemetry::Context>,
}

impl Connection {
    pub(super) async fn read(&mut self, stream: &mut futures_util::stream::SplitStream<WebSocket>) {
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
                    if self.expires.is_some_and(|e| now >= e) {
                        self.expired().await;
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
                    if let Some(e) = self.expires {
                        next = next.min(e);
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
                    // A token accepted (or renewed) just now: the timer wakes at its end.
                    if let Some(e) = self.expires.filter(|e| *e < timer.deadline()) {
                        timer.as_mut().reset(e);
                    }
                }
            }
        }
    }

    /// Handles one graphql-transport-ws message; `false` ends the connection.
    pub(super) async fn modern(&mut self, text: &str) -> bool {
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
                if let Err(failure) = self.authenticate().await {
                    self.tx
                        .close(4403, &format!("Forbidden: {}", failure.message()));
                    return false;
                }
                self.acked = true;
                self.tx.json(json!({"type": "connection_ack"})).await
            }
            "ping" if self.acked && carries_token(msg.payload.as_ref()) => {
                let answer = self.renew(msg.payload.as_ref()).await;
                self.tx
                    .json(json!({"type": "pong", "payload": answer}))
                    .await
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
                if let Some(refusal) = self.over_limit().await {
                    return self
                        .tx
                        .json(json!({"id": id, "type": "error", "payload": [refusal]}))
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
    pub(super) async fn legacy(&mut self, text: &str) -> bool {
        let Some(msg) = parse(text) else {
            return self.tx.json(json!({"type": "connection_error", "payload": {"message": "invalid message: not a JSON object with a type"}})).await;
        };
        match msg.kind.as_str() {
            "connection_init" if self.acked => {
                let answer = self.renew(msg.payload.as_ref()).await;
                match answer.get("message") {
                    None => self.tx.json(json!({"type": "connection_ack"})).await,
                    Some(why) => self.tx.json(json!({"type": "connection_error", "payload": {"message": why, "extensions": {"code": "UNAUTHENTICATED"}}})).await,
                }
            }
            "connection_init" => {
                self.init_seen = true;
                self.take_init_payload(msg.payload.as_ref());
                if let Err(failure) = self.authenticate().await {
                    let refused = json!({"type": "connection_error", "payload": {"message": failure.message(), "extensions": {"code": "UNAUTHENTICATED"}}});
                    self.tx.json(refused).await;
                    self.tx.close(4403, "Forbidden");
                    return false;
                }
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
                if let Some(refusal) = self.over_limit().await {
                    return self.tx.json(json!({"id": id, "type": "error", "payload": [refusal]})).await;
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
    pub(super) async fn request(&self, payload: &Value) -> Result<async_graphql::Request, Value> {
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

    /// Why one more operation on this socket is refused, if it is: the `error`
    /// message's payload entry.
    pub(super) async fn over_limit(&mut self) -> Option<Value> {
        let identity = self.ctx.identity().map(|i| &**i);
        if let Some(wait) = crate::server::rate::over(&self.state, identity, self.peer, 1).await {
            let message = crate::server::rate::message(wait);
            return Some(json!({"message": message, "extensions": {"code": "RATE_LIMITED"}}));
        }
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
        Some(json!({ "message": why }))
    }

    /// Starts one operation, registered under `id` until it ends (or the socket closes),
    /// through [`live::start`]. The work is polled once here: a live query joins its
    /// shared subscription at once, and a result from the response cache is queued at
    /// once when there is room, with no task kept for either; what is still pending (a
    /// query running, an event subscription being prepared, a result waiting for room)
    /// goes on in a task of its own, which ends once the result is queued (or the
    /// subscription joined).
    pub(super) fn start(&self, id: String, req: async_graphql::Request) {
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
        let traced = self.state.runtime.telemetry.span(
            "graphql.request",
            opentelemetry::trace::SpanKind::Server,
            self.trace.as_ref(),
            vec![crate::telemetry::Attr::new(
                "livegate.transport",
                "websocket",
            )],
        );
        let mut work = Box::pin(tracing::Instrument::instrument(
            async move {
                // The span covers the operation's start: a query's execution, or a
                // subscription's joining (its updates are traces of their own).
                let done = traced.run(started).await;
                drop(traced);
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
pub(super) async fn deliver(
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

pub(super) struct Incoming {
    kind: String,
    id: Option<String>,
    payload: Option<Value>,
}

pub(super) fn parse(text: &str) -> Option<Incoming> {
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
pub(super) fn names_a_document(payload: &Value) -> bool {
    payload.get("query").is_some_and(Value::is_string)
        || payload
            .get("extensions")
            .and_then(|e| e.get("persistedQuery"))
            .is_some()
        || payload.get("documentId").is_some()
}

/// The `errors` of a request-error body, as the `error` message's payload.
pub(super) fn errors_of(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("errors").map(Value::take))
        .unwrap_or_else(|| json!([{"message": "request error"}]))
}
