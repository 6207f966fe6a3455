//! graphql-sse's single connection mode (its PROTOCOL.md), on `/graphql` beside the
//! distinct connections mode: for HTTP/1 browsers, whose six connections per origin one
//! stream per subscription would use up.
//!
//! - `PUT` reserves a stream: `201` and a token (`text/plain`). The reservation counts as
//!   a long-lived connection (`--max-connections`, `--max-connections-per-ip`); one that no
//!   stream claims within 30 s is dropped.
//! - `GET` (or `POST`) with `Accept: text/event-stream` and the token (header
//!   `X-GraphQL-Event-Stream-Token` or parameter `token`) opens the stream: `404` for an
//!   unknown token, `409` when the reservation already has its stream. Results posted
//!   before it opened wait in it.
//! - `POST` of an operation with the token and `extensions.operationId`: `202`, and its
//!   results arrive on the stream as `next` events `{"id", "payload"}`, then `complete`
//!   `{"id"}`. `400` without an operation id or for a request that does not validate,
//!   `404` without a reservation, `409` for an id already running.
//! - `DELETE ?operationId=` with the token stops an operation: `200`; `404` without a
//!   reservation, `400` without an id.
//!
//! When the stream closes the reservation ends, and every operation with it.

use super::AppState;
use crate::live::{self, Frame, Outbox};
use crate::request::RequestContext;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const TOKEN_HEADER: &str = "x-graphql-event-stream-token";
/// How long a query posted to a reservation waits for room in its stream.
const CLAIM_WITHIN: Duration = Duration::from_secs(30);

/// The reservations of this gateway, by token.
#[derive(Default)]
pub struct Reservations {
    map: Mutex<HashMap<String, Arc<Reservation>>>,
    /// A sweeper task runs.
    sweeping: AtomicBool,
}

/// A running operation of a reservation: its id, its tag, and its subscription's place
/// (none for a query, or while it is set up).
type Op = (Box<str>, u64, Option<live::Subscribed>);

pub struct Reservation {
    outbox: Arc<Outbox>,
    /// Running operations: id, tag, and the subscription's place (none for a query).
    ops: Mutex<Vec<Op>>,
    next_tag: AtomicU64,
    streaming: AtomicBool,
    created: tokio::time::Instant,
    /// Dropped when no stream claimed it within this long.
    claim_within: Duration,
    /// The headers of the `PUT` that can change an upstream's answer: only a caller
    /// with the same ones may post operations to the reservation or open its stream.
    credentials: RequestContext,
    /// Operations per second (`--max-operations-per-second`, as on a WebSocket).
    bucket: Mutex<super::limits::Bucket>,
    _admitted: super::limits::Admitted,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reservations {
    fn get(&self, token: &str) -> Option<Arc<Reservation>> {
        lock(&self.map).get(token).cloned()
    }

    fn remove(&self, token: &str) {
        let gone = lock(&self.map).remove(token);
        if let Some(r) = gone {
            r.end();
        }
    }

    /// Sweeps every second while any reservation is unclaimed (not only when somebody
    /// reserves: an unclaimed reservation holds a connection slot until it is dropped).
    fn keep_swept(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else {
                    return;
                };
                r.sweep();
                // Decided under the map's lock: a reservation made meanwhile either is
                // seen here or finds the flag down and starts a sweeper of its own.
                let map = lock(&r.map);
                if !map.values().any(|r| !r.streaming.load(Ordering::Acquire)) {
                    r.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// Drops the reservations nobody claimed in time.
    fn sweep(&self) {
        let stale: Vec<Arc<Reservation>> = {
            let mut map = lock(&self.map);
            let tokens: Vec<String> = map
                .iter()
                .filter(|(_, r)| {
                    !r.streaming.load(Ordering::Acquire) && r.created.elapsed() > r.claim_within
                })
                .map(|(t, _)| t.clone())
                .collect();
            tokens.iter().filter_map(|t| map.remove(t)).collect()
        };
        for r in stale {
            r.end();
        }
    }
}

impl Reservation {
    /// Whether `headers` come from the caller who made the reservation.
    fn same_caller(&self, state: &AppState, caller: &RequestContext) -> bool {
        let responses = &state.engine().responses;
        responses.credentials(&self.credentials) == responses.credentials(caller)
    }

    /// The reservation is over: its operations stop, and whatever waits to queue a result
    /// for it (a query posted to a stream that never opened) gives up.
    fn end(&self) {
        self.outbox.close();
        let ops = std::mem::take(&mut *self.ops());
        drop(ops);
    }

    fn ops(&self) -> MutexGuard<'_, Vec<Op>> {
        lock(&self.ops)
    }

    /// Forgets the operation `tag` (it ended).
    fn ended(&self, tag: u64) {
        self.remove_op(|(_, t, _)| *t == tag);
    }

    /// Stops the operation `found` picks, if any (leaving its subscription, outside the
    /// lock).
    fn remove_op(&self, found: impl Fn(&Op) -> bool) {
        let gone = {
            let mut ops = self.ops();
            ops.iter().position(found).map(|at| ops.swap_remove(at))
        };
        drop(gone);
    }
}

/// The reservation token of a request, if it names one.
pub fn token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    match headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        Some(t) => Some(t.to_string()),
        None => param(query, "token"),
    }
}

/// The URL query parameter `name`, decoded.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A refusal: `code`, and a JSON body saying why.
fn status(code: StatusCode, message: &str) -> Response {
    super::reply::refuse(code, None, message)
}

/// `PUT /graphql`: a new reservation.
pub async fn put(
    axum::extract::State(state): axum::extract::State<AppState>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let acceptable = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|a| {
            a.split(',').any(|t| {
                let t = t.split(';').next().unwrap_or("").trim();
                t == "*/*" || t == "text/plain" || t == "text/*"
            })
        });
    if !acceptable {
        return status(
            StatusCode::NOT_ACCEPTABLE,
            "a reservation is answered in text/plain",
        );
    }
    // A bad token is refused here, not at the first operation; a good one's end is the
    // stream's.
    let identity = match super::reply::identify(&state, &headers, None).await {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let from = connect.as_ref().map(|c| (c.0).0.ip());
    if let Err(refusal) = super::rate::check(&state, identity.as_deref(), from, 1).await {
        return *refusal;
    }
    state.reservations.sweep();
    let admitted = match super::reply::admit(&state, connect.map(|c| (c.0).0)) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    // The token is the only key to the stream and its operations: from the OS's CSPRNG,
    // not a guessable generator.
    let mut bytes = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "no random token could be made; try again",
        );
    }
    let token = hex::encode(bytes);
    let reservation = Arc::new(Reservation {
        outbox: Outbox::new(
            state.ws.max_queued_bytes,
            state.runtime.metrics.events_dropped.clone(),
        ),
        ops: Mutex::default(),
        next_tag: AtomicU64::new(1),
        streaming: AtomicBool::new(false),
        created: tokio::time::Instant::now(),
        claim_within: state.ws.reservation_claim,
        credentials: RequestContext::detached(&headers, state.engine().responses.vary())
            .identified(identity),
        bucket: Mutex::new(super::limits::Bucket::new(
            state.limits.max_operations_per_second,
        )),
        _admitted: admitted,
    });
    lock(&state.reservations.map).insert(token.clone(), reservation);
    state.reservations.keep_swept();
    let mut res = (StatusCode::CREATED, token).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// `DELETE /graphql?operationId=…`: stops an operation of a reservation.
pub async fn delete(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(reservation) = token(&headers, uri.query()).and_then(|t| state.reservations.get(&t))
    else {
        return status(StatusCode::NOT_FOUND, "Stream not found");
    };
    let Some(id) = param(uri.query(), "operationId") else {
        return status(StatusCode::BAD_REQUEST, "Operation ID is missing");
    };
    reservation.remove_op(|(i, _, _)| **i == *id);
    StatusCode::OK.into_response()
}

/// The stream of the reservation `token`.
pub fn stream(state: &AppState, token: &str, headers: &HeaderMap) -> Response {
    let Some(reservation) = state.reservations.get(token) else {
        return status(StatusCode::NOT_FOUND, "Stream not found");
    };
    let caller = RequestContext::detached(headers, state.engine().responses.vary());
    if !reservation.same_caller(state, &caller) {
        return status(
            StatusCode::FORBIDDEN,
            "this reservation was made with other credentials: only its maker may open its stream",
        );
    }
    if reservation.streaming.swap(true, Ordering::AcqRel) {
        return status(StatusCode::CONFLICT, "Stream already open");
    }
    /// Ends the reservation when the stream goes (the client closed it, or shutdown).
    struct Release(AppState, String);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.reservations.remove(&self.1);
        }
    }
    let release = Release(state.clone(), token.to_string());
    let outbox = reservation.outbox.clone();
    let ops = reservation.clone();
    let until = super::sse::deadline(state, &reservation.credentials);
    // At the token's end each running operation gets the error and its `complete`, by
    // its id (a message without one reaches no operation of a graphql-sse client).
    let running = reservation.clone();
    let expiry = move || {
        let errors = super::sse::expired_errors();
        let mut out = String::new();
        for (id, _, _) in running.ops().iter() {
            out.push_str(&format!(
                "event: next\ndata: {}\n\nevent: complete\ndata: {}\n\n",
                serde_json::json!({"id": &**id, "payload": {"errors": errors}}),
                serde_json::json!({ "id": &**id })
            ));
        }
        Bytes::from(out)
    };
    let body = super::sse::frames(
        state,
        outbox,
        release,
        super::sse::Format::Sse,
        (until, expiry),
        move |tag| {
            ops.ended(tag);
            false
        },
    );
    super::sse::response(body, super::sse::Format::Sse)
}

/// One operation's events on the shared stream.
struct Framed {
    /// `event: next\ndata: {"id":…,"payload":`.
    head: Arc<str>,
    /// The id as JSON.
    id: Box<str>,
}

impl live::Framing for Framed {
    fn parts(&self) -> (&Arc<str>, &'static str) {
        (&self.head, "}\n\n")
    }

    fn failure(&self, body: &Bytes) -> Frame {
        self.next(body)
    }

    fn complete(&self) -> Option<Frame> {
        Some(Frame::Text(format!(
            "event: complete\ndata: {{\"id\":{}}}\n\n",
            self.id
        )))
    }

    fn transport(&self) -> &'static str {
        "sse"
    }
}

/// A `POST` of an operation to the reservation `token`: its results go to the stream.
pub async fn operation(
    state: &AppState,
    token: &str,
    req: async_graphql::Request,
    operation_id: Option<String>,
    ctx: RequestContext,
) -> Response {
    let Some(reservation) = state.reservations.get(token) else {
        return status(StatusCode::NOT_FOUND, "Stream not found");
    };
    let rejected = |why, code, message: &str| {
        state.runtime.metrics.reject(why);
        status(code, message)
    };
    use crate::metrics::Rejection;
    if !reservation.same_caller(state, &ctx) {
        return rejected(
            Rejection::Auth,
            StatusCode::FORBIDDEN,
            "this reservation was made with other credentials: only its maker may post operations to it",
        );
    }
    let Some(id) = operation_id.filter(|i| !i.is_empty()) else {
        return status(StatusCode::BAD_REQUEST, "Operation ID is missing");
    };
    if !lock(&reservation.bucket).take() {
        return rejected(
            Rejection::Limit,
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many operations per second on this stream: {} at most (--max-operations-per-second)",
                state.limits.max_operations_per_second
            ),
        );
    }
    let tag = reservation.next_tag.fetch_add(1, Ordering::Relaxed);
    {
        let mut ops = reservation.ops();
        if ops.iter().any(|(i, _, _)| **i == *id) {
            return status(StatusCode::CONFLICT, "Operation with ID already exists");
        }
        if ops.len() >= state.limits.max_operations_per_connection {
            return rejected(
                Rejection::Limit,
                StatusCode::BAD_REQUEST,
                &format!(
                    "too many operations on this stream: {} at most (--max-operations-per-connection)",
                    state.limits.max_operations_per_connection
                ),
            );
        }
        ops.push((id.as_str().into(), tag, None));
    }
    let id_json = serde_json::Value::String(id.clone()).to_string();
    let framing: Arc<dyn live::Framing> = Arc::new(Framed {
        head: Arc::from(format!(
            "event: next\ndata: {{\"id\":{id_json},\"payload\":"
        )),
        id: id_json.into_boxed_str(),
    });
    let subscriber = live::Subscriber {
        outbox: reservation.outbox.clone(),
        framing: framing.clone(),
        tag,
    };
    let refused = |body: &[u8]| {
        reservation.ended(tag);
        super::reply::respond(
            StatusCode::BAD_REQUEST,
            super::accept::Media::Json,
            Bytes::copy_from_slice(body),
        )
    };
    let started = live::start(state.engine(), state.topics.clone(), req, ctx, subscriber).await;
    let place = match started {
        live::Started::Refused(body) => return refused(&body),
        live::Started::Once(done) => {
            if done.request_error {
                return refused(&done.body);
            }
            let outbox = &reservation.outbox;
            // A stream that does not read (or never opened) does not hold this request
            // for longer than a reservation may wait to be claimed.
            let queued =
                tokio::time::timeout(CLAIM_WITHIN, outbox.push_wait(framing.next(&done.body)))
                    .await;
            if !matches!(queued, Ok(true)) {
                reservation.ended(tag);
                return status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the reservation's stream is not reading its results",
                );
            }
            outbox.push_final(framing.complete(), tag);
            return StatusCode::ACCEPTED.into_response();
        }
        live::Started::Subscribed(place) => Some(place),
        live::Started::Ended => None,
    };
    // Stopped (DELETE) while it was being set up: its place goes with it.
    let mut ops = reservation.ops();
    if let Some(entry) = ops.iter_mut().find(|(_, t, _)| *t == tag) {
        entry.2 = place;
    }
    StatusCode::ACCEPTED.into_response()
}
