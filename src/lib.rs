//! livegate: a GraphQL gateway that gives every client live data from plain REST
//! services, configured by one `schema.graphql`.
//!
//! # Layout — the data flow, in the order of the folder tree
//!
//! Arrows point one way: nothing below imports what is above it. Modules are private
//! unless the binary, the tests or the examples need them.
//!
//! - [`config`] ① syntax: SDL + directives → [`config::Config`], positions kept.
//! - [`plan`] ② meaning: Config → [`plan::Plan`]; all validation, every error with
//!   `file:line:col`; the schema's introspection computed once
//!   ([`plan::introspection`]). Pure and synchronous, like `config`.
//! - [`template`] the `{args.x}` templates planning and resolving share.
//! - [`schema`] ③ Plan → the registry async-graphql parses and validates against.
//! - `exec` ④ the only executor: engines per plan, a document prepared once (validation
//!   errors, introspection partitioned out), the operation planned once
//!   (`exec::operation`), fetch level by level, write straight into response bytes.
//! - `response_cache` ④ whole responses of repeated queries, valid while every cache
//!   entry they were built from is.
//! - `resolve` ④ one field: its plan + arguments + parent + request → cache / batch /
//!   upstream; `resolve::Runtime` is the plan plus the services.
//! - [`auth`] ⑤ who is calling: a JWT verified (JWKS or a secret) into the `Identity`
//!   the request context carries; transports call it, the executor reads the identity.
//! - `request` the `RequestContext` that travels from a transport to an upstream request.
//! - `services` ⑤ what lives as long as the process (cache, client, batcher, hub, event
//!   sources, bus, metrics) and applying an invalidation.
//! - `key` ⑤ the shared vocabulary (a leaf): `CacheKey`, `Tag`, `Policy`.
//! - `cache` ⑤ the shared cache: TTL, stale-while-revalidate, tags, scope, single flight;
//!   each entry weighed by `weight` (the heap bytes of its parsed value).
//! - `deps` ⑤ what one execution read: cache keys, tags, stamps.
//! - `watch` ⑤ the hub: which subscriptions read which entries; pollers, feeders,
//!   patches. Below the executor: it imports neither `exec` nor `live`.
//! - `events` ⑤ event sources behind one `Source` trait, keyed by the planned stream;
//!   leases, republishing and standby written once. Kinds: upstream WebSocket, upstream
//!   SSE, `@webhook` deliveries, Redis channels/Streams, NATS subjects (the last three
//!   read by every replica for itself: `Source::leased` is false).
//! - [`upstream`] ⑤ the outside world: one REST request, every failure classified,
//!   retried within a budget and behind a circuit breaker per upstream
//!   (`upstream::guard`); the batcher; extra CAs.
//! - [`bus`] ⑤ what travels between replicas (invalidations, a second-level cache,
//!   leases): in-process, or through Redis with `--redis-url`.
//! - `metrics` ⑤ the Prometheus registry every stage counts into.
//! - [`telemetry`] ⑤ OpenTelemetry traces (`--otlp-endpoint`): spans, the current span
//!   carried in a task-local from a transport to the upstream client (and into the
//!   cache's and batcher's spawned tasks), W3C trace context in and out, the bounded
//!   export queue in front of the official OTLP exporter. A leaf: imports only `metrics`.
//! - `live` ⑥ subscriptions: prepare, topics (their subscribers grouped by connection,
//!   `live::members`), outboxes, and `live::start`, which every long-lived transport calls
//!   (above the executor).
//! - [`server`] ⑥ transports: `app(state) -> Router` for HTTP, WebSocket, SSE, GraphiQL,
//!   the invalidation webhook and `@webhook` receivers (`server::hooks`), health and
//!   metrics; `--rate-limit` (`server::rate`); the accept loop, which hands an HTTP/1.1
//!   event stream's socket over from hyper (`server::handover`) and lets a WebSocket's
//!   writer write its socket itself.
//! - [`demo`] the demo upstreams (`livegate demo`, the examples and tests).
//! - [`openapi`] `livegate import openapi`: an OpenAPI document → a schema, checked with
//!   [`plan`] before it is written (a tool beside the gateway: it imports only `plan`).
//!
//! [`run`] takes its listener and a shutdown future, so tests bind `127.0.0.1:0` and run
//! exactly what `main.rs` runs.

pub mod auth;
pub mod bus;
mod cache;
pub mod config;
pub mod demo;
mod deps;
mod events;
mod exec;
mod key;
mod live;
mod metrics;
pub mod openapi;
pub mod plan;
mod request;
mod resolve;
mod response_cache;
pub mod schema;
pub mod server;
mod services;
pub mod telemetry;
pub mod template;
pub mod upstream;
mod watch;
mod weight;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use plan::Plan;
pub use server::{app, AppState};

/// Run-time settings; each is a flag of the `livegate` binary.
#[derive(Clone, Debug)]
pub struct Options {
    /// Memory budget of the shared cache: the heap bytes of the parsed values it keeps.
    pub cache_bytes: u64,
    /// Memory budget of the whole-response cache; 0 turns it off.
    pub response_cache_bytes: u64,
    /// Largest upstream response body accepted.
    pub max_upstream_body: usize,
    /// Requests in flight to one upstream at once, for upstreams without
    /// `maxConnections` (`--upstream-max-connections`).
    pub upstream_max_connections: usize,
    /// Largest response one operation may write (`--max-response-bytes`).
    pub max_response_bytes: usize,
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
    /// Upstream sockets opened with a caller's forwarded headers this process may hold
    /// at once (`--max-caller-sockets`).
    pub max_caller_sockets: usize,
    /// With other replicas: a follower keeps a warm standby connection to each shared
    /// upstream stream (two per stream for the cluster; none lost when the holder dies).
    /// Off: one connection per stream; a dead holder's stream is reconnected by a
    /// survivor, and its entries refetched.
    pub socket_standby: bool,
    /// This replica's lasting name (`--replica-name`; durable JetStream consumers).
    pub replica_name: String,
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
    /// Retries, their budget and circuit breakers toward upstreams.
    pub resilience: upstream::guard::Settings,
    /// OpenTelemetry traces (`--otlp-endpoint`, `--trace-*`).
    pub telemetry: telemetry::Options,
    /// Share invalidations and cached values with other replicas through Redis.
    pub redis: Option<bus::redis::RedisOptions>,
    /// Automatic persisted queries and trusted documents.
    pub persisted: server::persisted::Options,
    /// Most operations in one batched request (a JSON array); 0 refuses batches.
    pub max_batch: usize,
    /// The schema's files (or directories of them, see [`read_schema`]): loaded again on
    /// SIGHUP (and with `watch`, when one changes).
    pub schema_paths: Vec<std::path::PathBuf>,
    /// Reload the schema when its file changes (`--watch`).
    pub watch: bool,
    /// Token verification (`--jwt-*`).
    pub auth: auth::Options,
    /// `--rate-limit`: requests per second per client (off when `None`).
    pub rate_limit: Option<server::rate::Options>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: 256 << 20,
            response_cache_bytes: 64 << 20,
            max_upstream_body: 16 << 20,
            upstream_max_connections: 256,
            max_response_bytes: 32 << 20,
            upstream_timeout: Duration::from_secs(10),
            max_request_body: 1 << 20,
            batch_window: Duration::from_millis(1),
            live_grace: Duration::from_secs(60),
            socket_grace: Duration::from_secs(60),
            max_caller_sockets: 1024,
            socket_standby: true,
            replica_name: "livegate".into(),
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
            resilience: Default::default(),
            telemetry: Default::default(),
            redis: None,
            persisted: Default::default(),
            max_batch: 10,
            schema_paths: Vec::new(),
            watch: false,
            auth: Default::default(),
            rate_limit: None,
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
    #[error("traces: {0}")]
    Telemetry(String),
}

/// mimalloc's `mi_option_purge_delay` (its `mi_option_e`, v3): how long freed memory is
/// kept before it goes back to the OS. The bindings name no constant for it.
pub const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// For a program whose global allocator is mimalloc (the binary, the demo): freed memory
/// goes back to the OS at once, unless `MIMALLOC_PURGE_DELAY` says otherwise. With
/// mimalloc's default (1 s, and applied only at a later allocation), a process that went
/// idle after a burst of large responses kept the burst's memory (501 MiB for a 16 MiB
/// cache, where it now holds 33; `scripts/cache-memory`).
pub fn return_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option; mimalloc allows it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Builds the shared state of a gateway serving `plan`.
pub fn state(plan: Plan, options: &Options) -> Result<AppState, Error> {
    shared(plan, options).map(AppState::new)
}

fn shared(plan: Plan, options: &Options) -> Result<server::Shared, Error> {
    let plan = Arc::new(plan);
    let metrics = Arc::new(metrics::Metrics::new());
    let telemetry = Arc::new(match &options.telemetry.endpoint {
        None => telemetry::Telemetry::off(),
        Some(_) => {
            let http = options
                .upstream_ca
                .trusted_by(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()))
                .build()
                .map_err(|e| Error::Telemetry(format!("the exporter's HTTP client: {e}")))?;
            telemetry::Telemetry::start(&options.telemetry, http, &metrics)
                .map_err(Error::Telemetry)?
        }
    });
    let client = upstream::UpstreamClient::new(upstream::http::Setup {
        default_timeout: options.upstream_timeout,
        max_body: options.max_upstream_body,
        metrics: metrics.clone(),
        roots: &options.upstream_ca,
        follow_redirects: options.follow_redirects,
        default_max_connections: options.upstream_max_connections,
        guards: Arc::new(upstream::guard::Guards::new(
            options.resilience.clone(),
            metrics.clone(),
        )),
        telemetry: telemetry.clone(),
    });
    let (remote_tx, remote_rx) = tokio::sync::mpsc::unbounded_channel();
    let bus = match &options.redis {
        Some(r) => bus::Bus::redis(
            bus::redis::RedisBus::start(r.clone(), metrics.clone(), remote_tx)
                .map_err(Error::Redis)?,
        ),
        None => bus::Bus::local(),
    };
    let cache = cache::Cache::with_bus(options.cache_bytes, bus.clone());
    let sources = events::Sources::new(events::Settings {
        grace: options.socket_grace,
        tls: options.upstream_ca.websocket(),
        http: events::sse::client(&options.upstream_ca),
        max_message: options.max_upstream_body,
        bus: bus.clone(),
        lease: options
            .redis
            .as_ref()
            .map_or(Duration::from_secs(10), |r| r.lease),
        max_callers: options.max_caller_sockets,
        standby: options.socket_standby,
        replica: options.replica_name.clone(),
        guards: client.guards().clone(),
        telemetry: telemetry.clone(),
        failures: metrics.upstream_socket_failures.clone(),
        open: metrics.sources_open.clone(),
        messages: metrics.source_messages.clone(),
    });
    let services = services::Services::new(services::Parts {
        telemetry: telemetry.clone(),
        cache,
        client,
        bus: bus.clone(),
        sources,
        metrics,
        batch_window: options.batch_window,
        live_grace: options.live_grace,
        max_response: options.max_response_bytes,
    });
    // Invalidations from other replicas apply here as if made here (but are not sent on).
    let weak = Arc::downgrade(&services);
    tokio::spawn(async move {
        let mut remote_rx = remote_rx;
        while let Some((remote, trace)) = remote_rx.recv().await {
            let Some(services) = weak.upgrade() else {
                return;
            };
            services.apply_remote(remote, trace);
        }
    });
    let runtime = Arc::new(resolve::Runtime::new(plan, services));
    let persisted = server::persisted::Persisted::load(
        options.persisted.manifest.as_deref(),
        options.persisted.only,
        options.persisted.apq_bytes,
        bus.clone(),
        runtime.metrics.persisted.clone(),
    )
    .map_err(Error::Persisted)?;
    let engine = Arc::new(engine(runtime.clone(), options)?);
    let auth = Arc::new(auth::Auth::new(
        options.auth.clone(),
        runtime.metrics.auth.clone(),
        &options.upstream_ca,
    ));
    {
        let auth = auth.clone();
        tokio::spawn(async move { auth.start().await });
    }
    if !options.auth.enabled() && runtime.plan.guarded() {
        tracing::warn!("the schema has @authenticated, @requiresScopes or {{claims.…}} fields, but no --jwt-jwks-url or --jwt-secret verifies tokens: those fields are null for every caller");
    }
    runtime
        .metrics
        .schema
        .with_label_values(&[runtime.plan.source_hash.as_str()])
        .set(1);
    let engines = Arc::new(exec::Engines::new(engine));
    Ok(server::Shared {
        topics: Arc::new(live::Topics::new(engines.clone())),
        engines,
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
        persisted: Arc::new(persisted),
        max_batch: options.max_batch,
        reservations: Default::default(),
        auth,
        rate: options
            .rate_limit
            .as_ref()
            .and_then(server::rate::Limiter::new),
        hook_seen: server::webhook::Seen::new(Duration::from_secs(12 * 3600)),
        hook_order: Default::default(),
    })
}

/// An engine for `runtime`'s plan: its dynamic schema, an empty response cache, no
/// prepared documents yet.
fn engine(runtime: Arc<resolve::Runtime>, options: &Options) -> Result<exec::Engine, Error> {
    let schema =
        schema::build(&runtime.plan, &options.limits).map_err(|e| Error::Schema(e.to_string()))?;
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
    Ok(exec::Engine {
        schema,
        runtime,
        responses,
        executor: exec::Executor::default(),
        limits: exec::limits::DocumentLimits {
            max_aliases: options.connection_limits.max_aliases,
            max_root_fields: options.connection_limits.max_root_fields,
            no_introspection: options.limits.disable_introspection,
        },
    })
}

/// Puts `plan` in service in the running gateway `state`: new requests run on it at once;
/// open connections stay; live subscriptions re-run on it (those whose field is gone end
/// with an error); cache entries, the live hub and upstream sockets carry over.
pub fn reload(state: &AppState, plan: Plan, options: &Options) -> Result<(), Error> {
    let old = state.engine();
    let hash = plan.source_hash.clone();
    let runtime = Arc::new(old.runtime.reloaded(Arc::new(plan)));
    let engine = Arc::new(engine(runtime, options)?);
    state.engines.replace(engine);
    let metrics = &state.runtime.metrics;
    metrics.schema.reset();
    metrics.schema.with_label_values(&[hash.as_str()]).set(1);
    Ok(())
}

/// Loads the schema file again (on SIGHUP, and with `--watch` when its contents change).
/// A schema with errors is refused, each error logged with its line and column; the one
/// in service goes on.
/// The files of a schema, each with its text: `paths` in order, a directory standing for
/// its `.graphql` and `.graphqls` files in name order. The error names what could not be
/// read.
pub fn read_schema(paths: &[std::path::PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|x| x == "graphql" || x == "graphqls")
                })
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{}: no .graphql or .graphqls file in this directory",
                    path.display()
                ));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    files
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|text| (p.display().to_string(), text))
                .map_err(|e| format!("{}: cannot read: {e}", p.display()))
        })
        .collect()
}

async fn reloader(state: AppState, paths: Vec<std::path::PathBuf>, watch: bool, options: Options) {
    let hash_of = |files: &[(String, String)]| {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (name, text) in files {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    };
    let shown = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut seen = read_schema(&paths).map(|t| hash_of(&t)).unwrap_or_default();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut every = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let asked = tokio::select! {
            () = hangup => true,
            _ = every.tick(), if watch => false,
        };
        let files = match read_schema(&paths) {
            Ok(t) => t,
            Err(e) => {
                if asked {
                    state
                        .runtime
                        .metrics
                        .reloads
                        .with_label_values(&["refused"])
                        .inc();
                    tracing::error!(path = %shown, error = %e, "schema reload refused: a file cannot be read; the schema in service goes on");
                }
                continue;
            }
        };
        let hash = hash_of(&files);
        if !asked && hash == seen {
            continue;
        }
        seen = hash;
        let metrics = state.runtime.metrics.clone();
        match plan::load_sources(&files, std::env::vars()) {
            Err(errors) => {
                for e in &errors {
                    tracing::error!("{e}");
                }
                metrics.reloads.with_label_values(&["refused"]).inc();
                tracing::error!(
                    errors = errors.len(),
                    "schema reload refused; the schema in service goes on"
                );
            }
            Ok(plan) => match reload(&state, plan, &options) {
                Ok(()) => {
                    metrics.reloads.with_label_values(&["loaded"]).inc();
                    tracing::info!(path = %shown, "schema reloaded");
                }
                Err(e) => {
                    metrics.reloads.with_label_values(&["refused"]).inc();
                    tracing::error!(error = %e, "schema reload refused; the schema in service goes on");
                }
            },
        }
    }
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
    if !options.schema_paths.is_empty() {
        let reloads = tokio::spawn(reloader(
            state.clone(),
            options.schema_paths.clone(),
            options.watch,
            options.clone(),
        ));
        // Ends with the server (it holds the state).
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _ = stopping.wait_for(|s| *s).await;
            reloads.abort();
        });
    }
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
    let telemetry = state.runtime.telemetry.clone();
    let direct = server::Direct::of(&state);
    let serve = server::serve(listener, app(state), direct, limits, metrics, signal);
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
    // The spans still queued go out before the process ends.
    telemetry.flush(Duration::from_secs(5)).await;
    Ok(())
}
