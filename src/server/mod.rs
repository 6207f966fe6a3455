//! Stage ⑥ — transports. `app(state) -> Router` serves `/graphql` (GraphQL over HTTP,
//! WebSocket in both subprotocols, Server-Sent Events, GraphiQL) and the invalidation
//! webhook; [`crate::run`] binds it to a listener with graceful shutdown.

mod accept;
pub mod body;
pub mod cors;
mod graphiql;
mod handover;
mod health;
mod hooks;
mod http;
pub mod limits;
mod listen;
pub mod persisted;
pub mod rate;
mod reply;
pub mod reservations;
pub mod sse;
pub mod webhook;
pub mod ws;

pub use listen::{serve, RawSocket, Working};

use crate::resolve::Runtime;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// What every handler shares.
/// What every request handler shares: one `Arc`, so extracting it is one increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// The engine in service.
    pub fn engine(&self) -> Arc<crate::exec::Engine> {
        self.engines.current()
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    /// What runs operations (shared with the live hub's re-runs); swapped on reload.
    pub engines: Arc<crate::exec::Engines>,
    pub runtime: Arc<Runtime>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    pub ws: ws::WsOptions,
    pub webhook: webhook::WebhookOptions,
    /// Turns `true` when the server begins to shut down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Turns `true` at the shutdown signal, `--shutdown-delay-ms` before `shutdown`.
    pub unready: tokio::sync::watch::Receiver<bool>,
    pub limits: limits::Limits,
    pub connections: limits::Connections,
    pub cors: cors::Cors,
    /// Upgraded WebSockets, which hyper's graceful shutdown no longer sees: [`crate::run`]
    /// waits for them to send their close frame before it returns.
    pub sockets: tokio_util::task::TaskTracker,
    pub body: body::BodyOptions,
    /// Bytes of request bodies still arriving, across the gateway.
    pub pending_bodies: body::Pending,
    /// Running subscriptions, shared by subscribers of the same operation.
    pub topics: Arc<crate::live::Topics>,
    /// Persisted documents: APQ and the trusted manifest.
    pub persisted: Arc<persisted::Persisted>,
    /// Most operations in one batched request.
    pub max_batch: usize,
    /// graphql-sse single connection mode's reservations.
    pub reservations: Arc<reservations::Reservations>,
    /// Token verification (`--jwt-*`).
    pub auth: Arc<crate::auth::Auth>,
    /// `--rate-limit`, when set.
    pub rate: Option<rate::Limiter>,
    /// `@webhook` deliveries accepted lately (ids, signatures): each is accepted once
    /// within a day (longer than any receiver's tolerance).
    pub hook_seen: webhook::Seen,
    /// Each `@webhook` receiver's deliveries are applied in the order they were accepted.
    pub hook_order: hooks::Order,
}

pub(crate) use crate::exec::error_body;

/// Headers with only `Accept: v`, for the negotiation tests of `http` and `sse`.
#[cfg(test)]
pub(crate) fn accept(v: &str) -> ::http::HeaderMap {
    let mut h = ::http::HeaderMap::new();
    h.insert(
        ::http::header::ACCEPT,
        ::http::HeaderValue::from_str(v).expect("header"),
    );
    h
}

static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Every log line of a request's work carries its id (and WebSockets their connection id);
/// refused GraphQL requests are counted by reason, whichever handler (or axum's body
/// limit) refused them: `413` is a limit, other `4xx` malformed input.
async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let id = NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let graphql = req.uri().path() == "/graphql";
    let span = request_span(id, &req);
    let traced = server_span(&state, &req);
    let res = traced.run(next.run(req).instrument(span)).await;
    traced.set(
        "http.response.status_code",
        i64::from(res.status().as_u16()),
    );
    if graphql {
        count_refusal(&state, &res);
    }
    res
}

/// The span of a request to `/graphql` (`graphql.request`) or a webhook (`webhook`), under
/// the caller's `traceparent` when it sent one; nothing for the rest, for WebSocket
/// upgrades (each operation on the socket has its own), or with tracing off.
fn server_span<B>(state: &AppState, req: &::http::Request<B>) -> crate::telemetry::Span {
    use crate::telemetry::{Attr, Span};
    let t = &state.runtime.telemetry;
    if !t.is_on() {
        return Span::none();
    }
    let path = req.uri().path();
    let headers = req.headers();
    let (name, transport) = if path == "/graphql" {
        if headers.contains_key(::http::header::UPGRADE) {
            return Span::none();
        }
        let transport = match sse::wanted(headers) {
            Some(sse::Format::Sse) => "sse",
            Some(_) => "multipart",
            None => "http",
        };
        ("graphql.request", transport)
    } else if path.starts_with("/hooks/") {
        ("webhook", "http")
    } else {
        return Span::none();
    };
    let parent = t.extract(headers);
    t.span(
        name,
        opentelemetry::trace::SpanKind::Server,
        parent.as_ref(),
        vec![
            Attr::new("http.request.method", req.method().as_str().to_string()),
            Attr::new("url.path", path.to_string()),
            Attr::new("livegate.transport", transport),
        ],
    )
}

/// Counts a refused GraphQL request by its status: `413` and `408` are limits, other
/// `4xx` of the request's own making malformed input.
fn count_refusal(state: &AppState, res: &axum::response::Response) {
    use crate::metrics::Rejection;
    let reason = match res.status().as_u16() {
        408 | 413 => Some(Rejection::Limit),
        400 | 405 | 406 | 415 => Some(Rejection::Malformed),
        _ => None,
    };
    if let Some(reason) = reason {
        state.runtime.metrics.reject(reason);
    }
}

/// `POST /graphql`, every query's and mutation's way in, served below axum's router:
/// what the router's layers do for it ([`observe`], [`body::bounded`]) done in line,
/// without their boxed futures and cloned services (12% of a small query's CPU went
/// there). Not taken when CORS is configured (its layer answers and decorates `/graphql`
/// responses): then every request goes through the router.
#[derive(Clone)]
pub struct Direct(AppState);

impl Direct {
    /// The direct way for `state`'s gateway, when it has one.
    pub fn of(state: &AppState) -> Option<Direct> {
        state.cors.layer().is_none().then(|| Direct(state.clone()))
    }

    /// Whether `req` is one this serves.
    pub fn serves<B>(&self, req: &::http::Request<B>) -> bool {
        req.method() == ::http::Method::POST && req.uri().path() == "/graphql"
    }

    /// Serves `req` as the router would.
    pub async fn serve(self, req: axum::extract::Request) -> axum::response::Response {
        use tracing::Instrument;
        let state = self.0;
        let id = NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = request_span(id, &req);
        let traced = server_span(&state, &req);
        let res = traced
            .run(
                async {
                    let (parts, bytes) = match body::collect(&state, req).await {
                        Ok(read) => read,
                        Err(refused) => return refused,
                    };
                    let connect = parts
                        .extensions
                        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .cloned()
                        .map(axum::Extension);
                    http::post(
                        axum::extract::State(state.clone()),
                        connect,
                        parts.uri,
                        parts.headers,
                        bytes,
                    )
                    .await
                }
                .instrument(span),
            )
            .await;
        traced.set(
            "http.response.status_code",
            i64::from(res.status().as_u16()),
        );
        count_refusal(&state, &res);
        res
    }
}

/// The span every log line of a request's work carries: its `id`, and at `debug` level
/// its `method` and `path` too (formatting them for every request cost 3% of a small
/// query's CPU, for lines that are rarely written at `info`).
fn request_span<B>(id: u64, req: &::http::Request<B>) -> tracing::Span {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
    } else {
        tracing::info_span!("request", id)
    }
}

pub fn app(state: AppState) -> Router {
    let max_body = state.max_body;
    let mut graphql = get(http::get)
        .post(http::post)
        .put(reservations::put)
        .delete(reservations::delete)
        .fallback(http::method_not_allowed);
    if let Some(cors) = state.cors.layer() {
        graphql = graphql.layer(cors);
    }
    Router::new()
        .route("/graphql", graphql)
        .layer(DefaultBodyLimit::max(max_body))
        .route(
            "/hooks/invalidate",
            axum::routing::post(webhook::invalidate),
        )
        .route("/hooks/{*receiver}", axum::routing::post(hooks::receive))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::bounded,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}
