//! Stage ⑥ — transports. `app(state) -> Router` serves `/graphql` (GraphQL over HTTP,
//! WebSocket in both subprotocols, Server-Sent Events, GraphiQL) and the invalidation
//! webhook; [`crate::run`] binds it to a listener with graceful shutdown.

pub mod execute;
pub mod limits;
mod health;
mod graphiql;
mod http;
pub mod sse;
pub mod webhook;
pub mod ws;

use crate::resolve::Runtime;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub schema: async_graphql::dynamic::Schema,
    pub runtime: Arc<Runtime>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Whole responses of repeated queries.
    pub responses: Arc<crate::response_cache::ResponseCache>,
    pub ws: ws::WsOptions,
    pub webhook: webhook::WebhookOptions,
    /// Turns `true` when the server begins to shut down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub limits: limits::Limits,
    pub connections: limits::Connections,
}

pub fn app(state: AppState) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route(
            "/graphql",
            get(http::get).post(http::post).fallback(http::method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .route("/hooks/invalidate", axum::routing::post(webhook::invalidate))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state)
}
