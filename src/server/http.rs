//! GraphQL over HTTP, after the GraphQL-over-HTTP spec: `POST /graphql` with a JSON body,
//! `GET /graphql?query=…` for queries only, and content negotiation between
//! `application/graphql-response+json` (request errors get 4xx; the default, also for a
//! missing `Accept` or `*/*`) and `application/json` (always 200 once the request is
//! well-formed). A browser asking for HTML gets GraphiQL.

use super::accept::Media;
use super::reply::{admit, identify, refuse, respond};
use super::{graphiql, AppState};
use crate::request::RequestContext;
use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// What the client accepts: a streaming format (SSE, multipart subscriptions), and the
/// JSON media type for everything else; `406` when it accepts none of them.
fn accepted(headers: &HeaderMap) -> Result<Accepted, Box<Response>> {
    let accepted = super::accept::negotiate(headers);
    if accepted.none() {
        return Err(Box::new(refuse(
            StatusCode::NOT_ACCEPTABLE,
            None,
            "accept application/graphql-response+json or application/json (or text/event-stream, or multipart/mixed;subscriptionSpec=1.0 for subscriptions)",
        )));
    }
    Ok(accepted)
}

use super::accept::Accepted;

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostBody {
    query: Option<Value>,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    operation_name: Option<Value>,
    #[serde(default)]
    extensions: Option<Value>,
    /// A trusted document's id (the GraphQL-over-HTTP persisted documents proposal).
    #[serde(default)]
    document_id: Option<Value>,
}

/// Why a request is not run: an HTTP status, a message, and a code for the client.
struct Refused {
    status: StatusCode,
    message: String,
    code: Option<&'static str>,
}

impl Refused {
    fn bad(message: impl Into<String>) -> Self {
        Refused {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            code: None,
        }
    }

    fn response(self, media: Media) -> Response {
        let body = super::error_body(&self.message, self.code);
        respond(self.status, media, Bytes::from(body))
    }
}

/// A well-formed GraphQL-over-HTTP request (its document its own or a persisted one), or
/// why it is not one.
async fn graphql_request(state: &AppState, p: PostBody) -> Result<async_graphql::Request, Refused> {
    let query = match p.query {
        Some(Value::String(q)) => Some(q),
        None | Some(Value::Null) => None,
        Some(_) => return Err(Refused::bad("`query` must be a string")),
    };
    let extensions = match p.extensions {
        None | Some(Value::Null) => None,
        Some(e @ Value::Object(_)) => Some(e),
        Some(_) => return Err(Refused::bad("`extensions` must be an object")),
    };
    let name = match &p.operation_name {
        Some(Value::String(name)) => Some(name.as_str()),
        _ => None,
    };
    let query = state
        .persisted
        .document(
            query,
            extensions.as_ref(),
            p.document_id.as_ref(),
            async |text: &str| state.engine().validates(text, name).await,
        )
        .await
        .map_err(|r| Refused {
            status: r.status,
            message: r.message,
            code: Some(r.code),
        })?;
    let mut req = async_graphql::Request::new(query);
    match p.variables {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => req = req.variables(async_graphql::Variables::from_json(v)),
        Some(_) => return Err(Refused::bad("`variables` must be an object")),
    }
    match p.operation_name {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => req = req.operation_name(name),
        Some(_) => return Err(Refused::bad("`operationName` must be a string")),
    }
    Ok(req)
}

fn peer(parts: &axum::http::request::Parts) -> Option<std::net::SocketAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

pub async fn get(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let (mut parts, _) = req.into_parts();
    if is_upgrade {
        use axum::extract::FromRequestParts;
        // Kept for the socket's life: a copy that does not hold hyper's read buffer.
        let ctx = RequestContext::detached(&parts.headers, state.engine().responses.vary());
        if !state.cors.allows_socket(&parts.headers) {
            state
                .runtime
                .metrics
                .reject(crate::metrics::Rejection::Auth);
            let why = "this Origin may not open a WebSocket here: allow it with --cors-origin";
            return (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, JSON)],
                super::error_body(why, Some("FORBIDDEN_ORIGIN")),
            )
                .into_response();
        }
        let from = peer(&parts).map(|p| p.ip());
        let admitted = match admit(&state, peer(&parts)) {
            Ok(a) => a,
            Err(refusal) => return *refusal,
        };
        // Over HTTP/2 the socket is a stream of the connection, which must not be closed
        // as idle while the socket lives.
        let working = parts.extensions.get::<super::Working>().cloned();
        // Over HTTP/1.1 the socket's writer writes the TCP socket itself.
        let raw = parts.extensions.get::<super::RawSocket>().cloned();
        return match axum::extract::WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => {
                let mut res = ws
                    .protocols(super::ws::PROTOCOLS)
                    .max_message_size(state.max_body)
                    // tungstenite's defaults (128 KiB each way) dominate an idle socket's
                    // memory; GraphQL messages are small (a bigger one is read in more
                    // calls, its buffer grown to its size and freed with it). 256 bytes hold
                    // a typical `subscribe`; 1 KiB cost 0.8 KiB more per idle socket.
                    .read_buffer_size(256)
                    // Messages queued while the writer was busy go out in one write (the
                    // writer flushes at the end of each round); a lone message is written at
                    // that flush. Up to 4 KiB are gathered before a write.
                    .write_buffer_size(4 << 10)
                    .on_upgrade(move |socket| {
                        // The socket's own tasks take over; axum's upgrade task ends here.
                        super::ws::serve(state, socket, (ctx, from, raw), (admitted, working));
                        std::future::ready(())
                    })
                    .into_response();
                // The request's remaining extensions hold the case of its header names
                // that hyper recorded (`preserve_header_case`); on the response it writes
                // the same-named headers (`Sec-WebSocket-Protocol`) in it.
                res.extensions_mut()
                    .extend(std::mem::take(&mut parts.extensions));
                res
            }
            Err(rejection) => rejection.into_response(),
        };
    }
    let raw = parts.uri.query().unwrap_or_default().to_string();
    let headers = std::mem::take(&mut parts.headers);
    if let Some(token) = super::reservations::token(&headers, Some(&raw)) {
        if super::sse::wanted(&headers) == Some(super::sse::Format::Sse) {
            return super::reservations::stream(&state, &token, &headers);
        }
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            "a GET with a reservation token opens its stream (Accept: text/event-stream); POST operations to it",
        );
    }
    let parts_peer = parts;
    if raw.is_empty() && wants_html(&headers) {
        return graphiql::page();
    }
    let accepted = match accepted(&headers) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let media = accepted.media();
    let identity = match identify(&state, &headers, Some(media)).await {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let from = peer(&parts_peer).map(|p| p.ip());
    if let Err(refusal) = super::rate::check(&state, identity.as_deref(), from, 1).await {
        return *refusal;
    }
    let mut body = PostBody {
        query: None,
        variables: None,
        operation_name: None,
        extensions: None,
        document_id: None,
    };
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        let json_param = |v: &str, name: &str| {
            serde_json::from_str::<Value>(v)
                .map_err(|e| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        Some(media),
                        format!("`{name}` is not JSON: {e}"),
                    )
                })
                .map_err(Box::new)
        };
        match &*k {
            "query" => body.query = Some(Value::String(v.into_owned())),
            "operationName" => body.operation_name = Some(Value::String(v.into_owned())),
            "documentId" => body.document_id = Some(Value::String(v.into_owned())),
            "variables" => match json_param(&v, "variables") {
                Ok(v) => body.variables = Some(v),
                Err(r) => return *r,
            },
            "extensions" => match json_param(&v, "extensions") {
                Ok(v) => body.extensions = Some(v),
                Err(r) => return *r,
            },
            _ => {}
        }
    }
    let req = match graphql_request(&state, body).await {
        Ok(r) => r,
        Err(refused) => return refused.response(media),
    };
    // A stored response is a query's: serve it before parsing anything.
    let (req, key, ctx) = match streamed_or_stored(
        &state,
        req,
        (headers, identity),
        accepted,
        peer(&parts_peer),
        true,
    )
    .await
    {
        Ok(done) => return done,
        Err(go_on) => go_on,
    };
    // Only queries over GET: a GET must not change anything (it may be cached, prefetched).
    let mut req = req;
    match operation_type(&state, &mut req) {
        Some(OperationType::Subscription) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                Some(media),
                SUBSCRIPTIONS_ELSEWHERE,
            )
        }
        Some(OperationType::Mutation) => return mutation_over_get(media),
        _ => {}
    }
    execute(&state, req, media, &ctx, key).await
}

const SUBSCRIPTIONS_ELSEWHERE: &str =
    "subscriptions need a WebSocket (subprotocol graphql-transport-ws or graphql-ws), Server-Sent Events (Accept: text/event-stream) or multipart HTTP (Accept: multipart/mixed;subscriptionSpec=1.0)";

pub async fn post(
    State(state): State<AppState>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let addr = connect.map(|c| (c.0).0);
    if let Some(token) = super::reservations::token(&headers, uri.query()) {
        return reserved(&state, &token, headers, &body, addr).await;
    }
    let accepted = match accepted(&headers) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let media = accepted.media();
    if let Err(refused) = json_body(&headers, media) {
        return *refused;
    }
    let identity = match identify(&state, &headers, Some(media)).await {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    // A batch costs its operations.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let cost = match first {
        Some(b'[') if state.rate.is_some() => {
            serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body)
                .map_or(1, |ops| u32::try_from(ops.len()).unwrap_or(u32::MAX))
        }
        _ => 1,
    };
    let from = addr.map(|a| a.ip());
    if let Err(refusal) = super::rate::check(&state, identity.as_deref(), from, cost).await {
        return *refusal;
    }
    // An object is read straight into the request; anything else (or an object that does
    // not read so) goes the long way, which says exactly what is wrong.
    let direct = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let parsed: PostBody = match direct
        .then(|| serde_json::from_slice::<PostBody>(&body).ok())
        .flatten()
    {
        Some(p) => p,
        None => match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => match serde_json::from_value(v) {
                Ok(p) => p,
                Err(e) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        Some(media),
                        format!("malformed request: {e}"),
                    )
                }
            },
            Ok(Value::Array(operations)) => {
                return batch(&state, operations, headers, identity, media).await
            }
            Ok(_) => return refuse(
                StatusCode::BAD_REQUEST,
                Some(media),
                "the body must be a JSON object with a `query` (or a JSON array of them: a batch)",
            ),
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    Some(media),
                    format!("the body is not JSON: {e}"),
                )
            }
        },
    };
    let req = match graphql_request(&state, parsed).await {
        Ok(r) => r,
        Err(refused) => return refused.response(media),
    };
    let (req, key, ctx) =
        match streamed_or_stored(&state, req, (headers, identity), accepted, addr, false).await {
            Ok(done) => return done,
            Err(go_on) => go_on,
        };
    let mut req = req;
    // Looked up once: for its type here, and for the executor.
    let engine = state.engine();
    let (kind, peeked) = peeked_type(&engine, &mut req);
    if kind == Some(OperationType::Subscription) {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some(media),
            SUBSCRIPTIONS_ELSEWHERE,
        );
    }
    let done = crate::exec::execute_peeked(&engine, peeked, req, &ctx, key).await;
    answer(done, media)
}

/// `415` unless the body is declared JSON: a browser sends a cross-site POST without a
/// preflight only as `text/plain`, form data or multipart, so this is what keeps another
/// site's page from running operations with a visitor's cookies.
fn json_body(headers: &HeaderMap, media: Media) -> Result<(), Box<Response>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == JSON || essence == GRAPHQL_RESPONSE_JSON {
        return Ok(());
    }
    let msg = if content_type.is_empty() {
        "a POST needs `Content-Type: application/json`".to_string()
    } else {
        format!("unsupported Content-Type {content_type:?}; send application/json")
    };
    Err(Box::new(refuse(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Some(media),
        msg,
    )))
}

/// A batched request: a JSON array of operations, answered with the array of their
/// results in the same order (`200`; each result carries its own errors). At most
/// `--max-batch-size` operations; each is held to every per-request limit as a request
/// of its own. Queries and mutations only, run concurrently.
async fn batch(
    state: &AppState,
    operations: Vec<Value>,
    headers: HeaderMap,
    identity: Option<std::sync::Arc<crate::auth::Identity>>,
    media: Media,
) -> Response {
    let max = state.max_batch;
    if max == 0 || operations.len() > max || operations.is_empty() {
        state
            .runtime
            .metrics
            .reject(crate::metrics::Rejection::Limit);
        let why = match (max, operations.len()) {
            (0, _) => "batched requests are turned off (--max-batch-size 0)".to_string(),
            (_, 0) => "an empty batch: send at least one operation".to_string(),
            (_, n) => format!("a batch of {n} operations; at most {max} (--max-batch-size)"),
        };
        return refuse(StatusCode::BAD_REQUEST, Some(media), why);
    }
    if !operations.iter().all(Value::is_object) {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some(media),
            "a batch is a JSON array of JSON objects, each with a `query`",
        );
    }
    let ctx = RequestContext::new(headers).identified(identity);
    let runs = operations.into_iter().map(|op| {
        let ctx = &ctx;
        async move {
            let refused = |r: Refused| Bytes::from(super::error_body(&r.message, r.code));
            let parsed = match op {
                v @ Value::Object(_) => serde_json::from_value::<PostBody>(v)
                    .map_err(|e| Refused::bad(format!("malformed operation: {e}"))),
                _ => Err(Refused::bad(
                    "each operation of a batch is a JSON object with a `query`",
                )),
            };
            let req = match parsed {
                Ok(p) => graphql_request(state, p).await,
                Err(r) => Err(r),
            };
            let mut req = match req {
                Ok(req) => req,
                Err(r) => return refused(r),
            };
            if operation_type(state, &mut req) == Some(OperationType::Subscription) {
                return refused(Refused::bad(SUBSCRIPTIONS_ELSEWHERE));
            }
            crate::exec::run(&state.engine(), req, ctx).await.body
        }
    });
    let bodies = futures_util::future::join_all(runs).await;
    let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, body) in bodies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(body);
    }
    out.push(b']');
    respond(StatusCode::OK, media, Bytes::from(out))
}

/// A POST with a reservation token (graphql-sse's single connection mode): the
/// reservation's stream, or an operation whose results go to it.
async fn reserved(
    state: &AppState,
    token: &str,
    headers: HeaderMap,
    body: &[u8],
    addr: Option<std::net::SocketAddr>,
) -> Response {
    if super::sse::wanted(&headers) == Some(super::sse::Format::Sse) {
        return super::reservations::stream(state, token, &headers);
    }
    // The same rules as any POST of an operation: a reservation's token is no
    // credential, and an operation posted cross-site as text/plain would run with the
    // visitor's cookies and stream its result to whoever holds the token.
    if let Err(refused) = json_body(&headers, Media::Json) {
        return *refused;
    }
    let identity = match identify(state, &headers, None).await {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let from = addr.map(|a| a.ip());
    if let Err(refusal) = super::rate::check(state, identity.as_deref(), from, 1).await {
        return *refusal;
    }
    let parsed = match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => serde_json::from_value::<PostBody>(v)
            .map_err(|e| Refused::bad(format!("malformed request: {e}"))),
        _ => Err(Refused::bad(
            "the body must be a JSON object with a `query`",
        )),
    };
    let operation_id = parsed.as_ref().ok().and_then(|p| {
        p.extensions
            .as_ref()
            .and_then(|e| e.get("operationId"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let req = match parsed {
        Ok(p) => graphql_request(state, p).await,
        Err(r) => Err(r),
    };
    let req = match req {
        Ok(req) => req,
        Err(refused) => return refused.response(Media::Json),
    };
    let ctx =
        RequestContext::detached(&headers, state.engine().responses.vary()).identified(identity);
    super::reservations::operation(state, token, req, operation_id, ctx).await
}

pub async fn method_not_allowed(method: Method) -> Response {
    let mut res = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        format!("{method} is not supported here; use GET or POST (PUT and DELETE: graphql-sse's reservations)"),
    );
    res.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, PUT, DELETE"),
    );
    res
}

/// What GET and POST do first with a well-formed request: stream it (SSE: anything;
/// multipart: a subscription, or anything when JSON is not accepted), or answer it from
/// the response cache. Otherwise the request goes on, with its cache key and context.
async fn streamed_or_stored(
    state: &AppState,
    mut req: async_graphql::Request,
    (headers, identity): (HeaderMap, Option<std::sync::Arc<crate::auth::Identity>>),
    accepted: Accepted,
    peer: Option<std::net::SocketAddr>,
    get: bool,
) -> Result<
    Response,
    (
        async_graphql::Request,
        Option<crate::cache::CacheKey>,
        RequestContext,
    ),
> {
    let format = match accepted.stream_format() {
        Some(format) => {
            let kind = operation_type(state, &mut req);
            if get && kind == Some(OperationType::Mutation) {
                return Ok(mutation_over_get(accepted.media()));
            }
            if kind == Some(OperationType::Subscription) {
                Some(format)
            } else {
                accepted.stream_preferred()
            }
        }
        None => None,
    };
    if let Some(format) = format {
        return Ok(match admit(state, peer) {
            Ok(admitted) => {
                let ctx = RequestContext::detached(&headers, state.engine().responses.vary())
                    .identified(identity);
                super::sse::respond(state.clone(), req, ctx, admitted, format).await
            }
            Err(refusal) => *refusal,
        });
    }
    let ctx = RequestContext::new(headers).identified(identity);
    match crate::exec::lookup(&state.engine(), &req, &ctx) {
        Ok(hit) => Ok(respond(StatusCode::OK, accepted.media(), hit.body)),
        Err(key) => Err((req, key, ctx)),
    }
}

/// `405`: a GET must not change anything (it may be cached, prefetched, or sent by any
/// page a browser shows, with its cookies), on any transport.
fn mutation_over_get(media: Media) -> Response {
    let mut res = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        Some(media),
        "only queries may be sent with GET; send mutations with POST",
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    res
}

/// The type of the operation `req` would run, when its document parses: known from the
/// executor's prepared document, or parsed now (the parse is kept in the request, so the
/// executor does not parse it again).
fn operation_type(state: &AppState, req: &mut async_graphql::Request) -> Option<OperationType> {
    peeked_type(&state.engine(), req).0
}

/// [`operation_type`] on `engine`, with the prepared document when the executor has it
/// (for the executor, so it is not looked up again).
fn peeked_type(
    engine: &crate::exec::Engine,
    req: &mut async_graphql::Request,
) -> (
    Option<OperationType>,
    Option<std::sync::Arc<crate::exec::Prepared>>,
) {
    match engine.executor.peek(req) {
        Some(p) => (Some(p.kind()), Some(p)),
        None => (parsed_type(req), None),
    }
}

/// The type of the operation `req` would run, its document parsed now (and the parse
/// kept in the request, so the executor does not parse it again).
fn parsed_type(req: &mut async_graphql::Request) -> Option<OperationType> {
    let name = req.operation_name.clone();
    let doc = req.parsed_query().ok()?;
    crate::exec::operation(doc, name.as_deref()).map(|op| op.node.ty)
}

async fn execute(
    state: &AppState,
    req: async_graphql::Request,
    media: Media,
    ctx: &RequestContext,
    key: Option<crate::cache::CacheKey>,
) -> Response {
    let done = crate::exec::execute(&state.engine(), req, ctx, key).await;
    answer(done, media)
}

/// An execution's response: `400` for a request error with the GraphQL media type.
fn answer(done: crate::exec::Executed, media: Media) -> Response {
    let status = if done.request_error && media == Media::GraphqlResponse {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    respond(status, media, done.body)
}
