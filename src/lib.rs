//! livegate: a GraphQL gateway that gives every client live data from plain REST
//! services, configured by one `schema.graphql`.
//!
//! # Layout — the data flow, in the order of the folder tree
//!
//! - [`config`] ① syntax: SDL + directives → [`config::Config`], positions kept.
//! - [`plan`] ② meaning: Config → [`plan::Plan`]; all validation, every error with
//!   `file:line:col`. Pure and synchronous, like `config`.
//! - [`schema`] ③ Plan → async-graphql dynamic schema.
//! - [`resolve`] ④ one field: its plan + arguments + parent → cache / batch / upstream.
//! - [`bus`] ⑤ what travels between replicas (invalidations, a second-level cache):
//!   in-process, or through Redis with `--redis-url`.
//! - [`cache`] ⑤ the shared cache: TTL, stale-while-revalidate, tags, scope, single flight.
//! - [`response_cache`] ⑥ whole responses of repeated queries, valid while every cache
//!   entry they were built from is.
//! - [`upstream`] ⑤ the outside world: one REST request, every failure classified.
//! - [`server`] ⑥ transports: `app(state) -> Router` for HTTP and GraphiQL.
//!
//! [`run`] takes its listener and a shutdown future, so tests bind `127.0.0.1:0` and run
//! exactly what `main.rs` runs.

pub mod bus;
pub mod cache;
pub mod config;
pub mod demo;
pub mod deps;
pub mod exec;
pub mod live;
pub mod metrics;
pub mod plan;
pub mod resolve;
pub mod response_cache;
pub mod schema;
pub mod server;
pub mod template;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use plan::Plan;
pub use server::{app, AppState};

/// Run-time settings; each is a flag of the `livegate` binary.
#[derive(Clone, Debug)]
pub struct Options {
    /// Memory budget of the shared cache, in bytes of upstream bodies.
    pub cache_bytes: u64,
    /// Memory budget of the whole-response cache; 0 turns it off.
    pub response_cache_bytes: u64,
    /// Largest upstream response body accepted.
    pub max_upstream_body: usize,
    /// Upstream timeout for upstreams without `timeoutMs`.
    pub upstream_timeout: Duration,
    /// Largest request body accepted from clients.
    pub max_request_body: usize,
    /// How long a batched field waits for its siblings before sending the batch.
    pub batch_window: Duration,
    /// How long a polled (or stream-fed) live entry is kept up after its last subscriber left.
    pub live_grace: Duration,
    /// How long an upstream WebSocket stays open after its last user left.
    pub socket_grace: Duration,
    pub limits: schema::QueryLimits,
    pub ws: server::ws::WsOptions,
    pub webhook: server::webhook::WebhookOptions,
    /// Deadline and memory bound of request bodies.
    pub body: server::body::BodyOptions,
    /// After a shutdown signal, how long in-flight requests may take before the server
    /// stops anyway.
    pub drain_timeout: Duration,
    /// After a shutdown signal, how long `/readyz` answers 503 while everything is still
    /// served, so a load balancer stops sending new clients before connections close.
    pub shutdown_delay: Duration,
    pub connection_limits: server::limits::Limits,
    /// Origins of browser apps allowed to call `/graphql` (`--cors-origin`).
    pub cors: server::cors::Cors,
    /// Certificate authorities trusted for upstreams besides the public web roots.
    pub upstream_ca: upstream::tls::ExtraRoots,
    /// Follow upstream redirects within the same origin (else a 3xx is an error).
    pub follow_redirects: bool,
    /// Share invalidations and cached values with other replicas through Redis.
    pub redis: Option<bus::redis::RedisOptions>,
    /// Automatic persisted queries and trusted documents.
    pub persisted: server::persisted::Options,
    /// Most operations in one batched request (a JSON array); 0 refuses batches.
    pub max_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: 256 << 20,
            response_cache_bytes: 64 << 20,
            max_upstream_body: 16 << 20,
            upstream_timeout: Duration::from_secs(10),
            max_request_body: 1 << 20,
            batch_window: Duration::from_millis(1),
            live_grace: Duration::from_secs(60),
            socket_grace: Duration::from_secs(60),
            limits: schema::QueryLimits::default(),
            ws: Default::default(),
            webhook: Default::default(),
            body: Default::default(),
            drain_timeout: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            connection_limits: Default::default(),
            cors: Default::default(),
            upstream_ca: Default::default(),
            follow_redirects: false,
            redis: None,
            persisted: Default::default(),
            max_batch: 10,
        }
    }
}

/// A schema could not be turned into a running gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<config::ConfigError>),
    #[error("the schema could not be built: {0}")]
    Schema(String),
    #[error("{0}")]
    Redis(String),
    #[error("{0}")]
    Persisted(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Builds the shared state of a gateway serving `plan`.
pub fn state(plan: Plan, options: &Options) -> Result<AppState, Error> {
    shared(plan, options).map(AppState::new)
}

fn shared(plan: Plan, options: &Options) -> Result<server::Shared, Error> {
    let plan = Arc::new(plan);
    let metrics = Arc::new(metrics::Metrics::new());
    let client = upstream::UpstreamClient::new(
        options.upstream_timeout,
        options.max_upstream_body,
        metrics.clone(),
        &options.upstream_ca,
        options.follow_redirects,
    );
    let (remote_tx, remote_rx) = tokio::sync::mpsc::unbounded_channel();
    let bus = match &options.redis {
        Some(r) => bus::Bus::redis(
            bus::redis::RedisBus::start(r.clone(), metrics.clone(), remote_tx)
                .map_err(Error::Redis)?,
        ),
        None => bus::Bus::local(),
    };
    let cache = cache::Cache::with_bus(options.cache_bytes, bus.clone());
    let runtime = Arc::new(resolve::Runtime::new(
        plan,
        cache,
        client,
        options.batch_window,
        options.live_grace,
        upstream::ws::Sockets::new(
            options.socket_grace,
            options.upstream_ca.websocket(),
            options.max_upstream_body,
            bus.clone(),
            options
                .redis
                .as_ref()
                .map_or(std::time::Duration::from_secs(10), |r| r.lease),
        ),
        metrics,
    ));
    // Invalidations from other replicas apply here as if made here (but are not sent on).
    let weak = Arc::downgrade(&runtime);
    tokio::spawn(async move {
        let mut remote_rx = remote_rx;
        while let Some(remote) = remote_rx.recv().await {
            let Some(runtime) = weak.upgrade() else {
                return;
            };
            runtime.apply_remote(remote);
        }
    });
    let schema = schema::build(runtime.clone(), &options.limits)
        .map_err(|e| Error::Schema(e.to_string()))?;
    // Every request header that can change an upstream's answer separates responses.
    let mut vary = vec![http::header::AUTHORIZATION, http::header::COOKIE];
    for u in runtime.plan.upstreams.values() {
        for h in &u.forward_headers {
            if !vary.contains(h) {
                vary.push(h.clone());
            }
        }
    }
    let responses = Arc::new(response_cache::ResponseCache::new(
        options.response_cache_bytes,
        vary,
    ));
    let persisted = server::persisted::Persisted::load(
        options.persisted.manifest.as_deref(),
        options.persisted.only,
        options.persisted.apq_bytes,
        bus.clone(),
        runtime.metrics.persisted.clone(),
    )
    .map_err(Error::Persisted)?;
    let engine = Arc::new(exec::Engine {
        schema,
        runtime: runtime.clone(),
        responses,
        executor: exec::Executor::default(),
        limits: exec::limits::DocumentLimits {
            max_aliases: options.connection_limits.max_aliases,
            max_root_fields: options.connection_limits.max_root_fields,
        },
    });
    Ok(server::Shared {
        engine,
        runtime,
        max_body: options.max_request_body,
        ws: options.ws.clone(),
        webhook: options.webhook.clone(),
        shutdown: tokio::sync::watch::channel(false).1,
        unready: tokio::sync::watch::channel(false).1,
        limits: options.connection_limits.clone(),
        connections: Default::default(),
        cors: options.cors.clone(),
        sockets: Default::default(),
        body: options.body.clone(),
        pending_bodies: Default::default(),
        topics: Default::default(),
        persisted: Arc::new(persisted),
        max_batch: options.max_batch,
        reservations: Default::default(),
    })
}

/// Serves `plan` on `listener` until `shutdown` completes. Then it stops accepting, closes
/// WebSockets with 1012 (service restart: clients reconnect) and completes SSE streams,
/// lets in-flight requests finish for up to `options.drain_timeout`, and returns.
pub async fn run(
    listener: TcpListener,
    plan: Plan,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut shared = shared(plan, &options)?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    shared.shutdown = stopping.clone();
    let sockets = shared.sockets.clone();
    let (unready, _) = tokio::sync::watch::channel(false);
    shared.unready = unready.subscribe();
    let state = AppState::new(shared);
    let delay = options.shutdown_delay;
    let signal = async move {
        shutdown.await;
        let _ = unready.send(true);
        if !delay.is_zero() {
            tracing::info!(?delay, "shutting down: /readyz answers 503, still serving");
            tokio::time::sleep(delay).await;
        }
        tracing::info!("shutting down: closing subscriptions, draining requests");
        let _ = stop.send(true);
    };
    let limits = state.limits.clone();
    let metrics = state.runtime.metrics.clone();
    let serve = server::serve(listener, app(state), limits, metrics, signal);
    let mut stopping = stopping;
    let drain = options.drain_timeout;
    let deadline = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    // Upgraded sockets live outside hyper's connection tracking: once it has drained,
    // wait for each socket to have sent its 1012 close frame, or a client sees 1006.
    let served = async move {
        serve.await;
        sockets.close();
        sockets.wait().await;
    };
    tokio::select! {
        () = served => {}
        _ = deadline => tracing::warn!(?drain, "drain timeout: stopping with requests still open"),
    }
    Ok(())
}
