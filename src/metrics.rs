//! Prometheus metrics (the `prometheus` crate), served at `GET /metrics`. One registry per
//! gateway, so tests that run several gateways in one process read their own.
//! Counters are bumped where things happen; gauges that mirror state owned elsewhere
//! (cache entries, upstream sockets) are read at scrape time.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Shared-cache lookups by outcome: `hit`, `miss`, `stale`.
    pub cache_lookups: IntCounterVec,
    /// Whole responses served from the response cache.
    pub response_cache_hits: IntCounter,
    pub cache_entries: IntGauge,
    /// What the shared cache's entries weigh, against `--cache-size-mb`.
    pub cache_bytes: IntGauge,
    pub cache_evictions: IntCounter,
    pub upstream_socket_reconnects: IntCounter,
    /// Failed connects to upstream sockets, by upstream and reason (`unauthorized`,
    /// `forbidden`, `status`, `timeout`, `network`, `tls`, `protocol`).
    pub upstream_socket_failures: IntCounterVec,
    /// Upstream HTTP requests by upstream, method and status class (`2xx`, `4xx`, `5xx`,
    /// or `error` when there was no status).
    pub upstream_requests: IntCounterVec,
    pub upstream_seconds: HistogramVec,
    pub upstream_sockets_open: IntGauge,
    pub upstream_socket_connects: IntGauge,
    /// Open client connections by transport: `websocket`, `sse`.
    pub connections: IntGaugeVec,
    /// Open client TCP connections, whatever they carry (HTTP, WebSocket, SSE).
    pub tcp_connections: IntGauge,
    /// Active subscriptions by kind: `live`, `stream`.
    pub subscriptions: IntGaugeVec,
    /// Results pushed to subscribers, by transport.
    pub pushed: IntCounterVec,
    /// Distinct subscriptions (operation, variables, credentials), each run once for all
    /// its subscribers, by kind.
    pub subscription_groups: IntGaugeVec,
    /// Events dropped for clients that read too slowly.
    pub events_dropped: IntCounter,
    /// Upstream socket messages known lost across a handover (a standby that fell too far
    /// behind its holder).
    pub events_lost: IntCounter,
    /// Persisted-document lookups by result: `hit`, `miss`, `registered`, `refused`.
    pub persisted: IntCounterVec,
    /// 1, labelled with the SHA-256 of the schema in service.
    pub schema: IntGaugeVec,
    /// Schema reloads by result: `loaded`, `refused`.
    pub reloads: IntCounterVec,
    /// Invalidation requests by source: `webhook`, `mutation`.
    pub invalidations: IntCounterVec,
    /// Cache entries dropped (or live entries woken) by invalidations.
    pub invalidated_entries: IntCounter,
    /// Requests refused, by reason: `limit`, `auth`, `malformed` (see [`Metrics::reject`]).
    rejected: IntCounterVec,
    /// 1 while Redis answers (with `--redis-url`), else 0.
    pub redis_up: IntGauge,
    /// Messages on the replicas' bus, by direction (`published`, `received`) and kind
    /// (`invalidation`, `everything`, `changed` by a poller, upstream socket `event`).
    pub bus_messages: IntCounterVec,
    /// Messages and entries read from Redis and skipped as malformed or of another format.
    pub bus_skipped: IntCounterVec,
    /// Second-level (Redis) cache lookups by outcome: `hit`, `miss`, `error`.
    pub l2_lookups: IntCounterVec,
    /// Upstream answers marked `Cache-Control: private` or `no-store`, by upstream: served
    /// to the caller, never stored.
    pub uncacheable: IntCounterVec,
    /// Cluster-wide leases this replica took: `acquired` (free) or `takeover`.
    pub leases: IntCounterVec,
    /// Prepared-document cache lookups of the executor: `hit` or `miss`.
    pub plans: IntCounterVec,
    /// Token checks by result: `ok`, `missing`, `invalid`, `expired`, `forbidden` (a
    /// field an `@authenticated`/`@requiresScopes` directive kept from its caller).
    pub auth: IntCounterVec,
    /// Requests and operations refused by `--rate-limit`.
    pub rate_limited: IntCounter,
    /// `@webhook` deliveries by receiver and result: `accepted`, `refused`, `malformed`.
    pub hooks: IntCounterVec,
    /// Event-source connections this replica reads, by kind.
    pub sources_open: IntGaugeVec,
    /// Messages read from event sources by kind and result: `passed`, `skipped`.
    pub source_messages: IntCounterVec,
    /// Each upstream's circuit breaker: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
    /// Upstream requests failed at once, without being sent, while the upstream's breaker
    /// was open.
    pub short_circuited: IntCounterVec,
    /// Retries of idempotent upstream requests by upstream and result: `sent`, or
    /// `denied` (the retry budget was spent, or no time was left before the deadline).
    pub retries: IntCounterVec,
    /// Values served past their freshness because refreshing them failed
    /// (`@cache(staleIfError:)`), by upstream.
    pub stale_if_error: IntCounterVec,
    /// Finished spans by result: `queued` for export, or `dropped` (the queue was full).
    pub trace_spans: IntCounterVec,
    /// Spans sent to the OTLP endpoint by result: `ok`, `failed`.
    pub trace_exports: IntCounterVec,
    /// Counters of the families above resolved once, for the per-request paths.
    pub hot: Hot,
}

/// Per-outcome counters of `livegate_cache_lookups_total` and
/// `livegate_prepared_documents_total`, resolved once: `with_label_values` hashes its
/// labels and takes a lock on every call.
pub struct Hot {
    pub cache_hit: IntCounter,
    pub cache_stale: IntCounter,
    pub cache_miss: IntCounter,
    pub plan_hit: IntCounter,
    pub plan_miss: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    // Names are constants of this file; registering twice is the only failure, and each
    // registry is new.
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("{e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "livegate_upstream_request_seconds",
                "Upstream HTTP request latency",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["upstream"],
        )
        .unwrap_or_else(|e| panic!("histogram: {e}"));
        let _ = r.register(Box::new(upstream_seconds.clone()));
        let cache_lookups = counter_vec(
            &r,
            "livegate_cache_lookups_total",
            "Shared-cache lookups by outcome (hit, miss, stale)",
            &["outcome"],
        );
        let plans = counter_vec(
                &r,
                "livegate_prepared_documents_total",
                "Executor lookups of a parsed and validated document by (document, operation name): hit, or miss (parsed and validated now)",
                &["result"],
            );
        Metrics {
            cache_lookups: cache_lookups.clone(),
            response_cache_hits: counter(&r, "livegate_response_cache_hits_total", "Whole responses served from the response cache"),
            cache_entries: gauge(&r, "livegate_cache_entries", "Entries in the shared cache"),
            cache_bytes: gauge(&r, "livegate_cache_bytes", "Heap bytes of the shared cache's entries (parsed values), within --cache-size-mb"),
            cache_evictions: counter(&r, "livegate_cache_evictions_total", "Entries dropped to stay within the cache's byte budget"),
            upstream_socket_reconnects: counter(&r, "livegate_upstream_socket_reconnects_total", "Upstream WebSocket reconnects after a drop"),
            upstream_socket_failures: counter_vec(
                &r,
                "livegate_upstream_socket_failures_total",
                "Failed connects to upstream WebSockets, by upstream and reason",
                &["upstream", "reason"],
            ),
            upstream_requests: counter_vec(
                &r,
                "livegate_upstream_requests_total",
                "Upstream HTTP requests by upstream, method and status class",
                &["upstream", "method", "status"],
            ),
            upstream_seconds,
            upstream_sockets_open: gauge(
                &r,
                "livegate_upstream_sockets_open",
                "Upstream WebSockets open",
            ),
            upstream_socket_connects: gauge(
                &r,
                "livegate_upstream_socket_connects",
                "Upstream WebSocket connections made (first connects and reconnects)",
            ),
            connections: gauge_vec(
                &r,
                "livegate_connections",
                "Open client connections by transport",
                &["transport"],
            ),
            tcp_connections: gauge(
                &r,
                "livegate_tcp_connections",
                "Open client TCP connections, whatever they carry",
            ),
            subscriptions: gauge_vec(
                &r,
                "livegate_subscriptions",
                "Active subscriptions by kind (live, stream)",
                &["kind"],
            ),
            pushed: counter_vec(
                &r,
                "livegate_messages_pushed_total",
                "Results pushed to subscribers by transport",
                &["transport"],
            ),
            subscription_groups: gauge_vec(
                &r,
                "livegate_subscription_groups",
                "Distinct subscriptions (operation, variables, credentials) by kind, each executed once for all its subscribers",
                &["kind"],
            ),
            schema: gauge_vec(
                &r,
                "livegate_schema_info",
                "1, labelled with the SHA-256 of the schema text in service",
                &["hash"],
            ),
            reloads: counter_vec(
                &r,
                "livegate_schema_reloads_total",
                "Schema reloads (SIGHUP, --watch) by result: loaded, refused",
                &["result"],
            ),
            persisted: counter_vec(
                &r,
                "livegate_persisted_documents_total",
                "Persisted documents (APQ, trusted) by result: hit, miss, registered, refused",
                &["result"],
            ),
            events_dropped: counter(
                &r,
                "livegate_events_dropped_total",
                "Events dropped for clients that read too slowly (the oldest queued go first)",
            ),
            events_lost: counter(
                &r,
                "livegate_events_lost_total",
                "Upstream socket messages known lost across a handover between replicas",
            ),
            invalidations: counter_vec(
                &r,
                "livegate_invalidations_total",
                "Invalidations received by source (webhook, mutation)",
                &["source"],
            ),
            invalidated_entries: counter(&r, "livegate_invalidated_entries_total", "Cache or live entries invalidations dropped or woke (each costs at most one refetch)"),
            rejected: counter_vec(
                &r,
                "livegate_rejected_total",
                "Requests refused by reason (limit, auth, malformed)",
                &["reason"],
            ),
            redis_up: gauge(&r, "livegate_redis_up", "1 while Redis answers (with --redis-url), else 0"),
            bus_messages: counter_vec(
                &r,
                "livegate_bus_messages_total",
                "Messages between replicas by direction (published, received) and kind (invalidation, everything, changed, event)",
                &["direction", "kind"],
            ),
            bus_skipped: counter_vec(
                &r,
                "livegate_bus_skipped_total",
                "Messages and entries read from Redis and skipped: malformed or of another format version",
                &["kind"],
            ),
            l2_lookups: counter_vec(
                &r,
                "livegate_l2_lookups_total",
                "Second-level (Redis) cache lookups by outcome (hit, miss, error)",
                &["outcome"],
            ),
            uncacheable: counter_vec(
                &r,
                "livegate_upstream_uncacheable_total",
                "Upstream answers marked Cache-Control private or no-store: served to the caller, never stored in a shared cache",
                &["upstream"],
            ),
            leases: counter_vec(
                &r,
                "livegate_leases_total",
                "Cluster-wide leases (an upstream socket, a live entry's poller) this replica took: acquired (free) or takeover (from a holder that stopped renewing)",
                &["event"],
            ),
            auth: counter_vec(
                &r,
                "livegate_auth_total",
                "Token checks by result: ok, missing, invalid, expired, forbidden (a field a directive kept from its caller)",
                &["result"],
            ),
            sources_open: gauge_vec(
                &r,
                "livegate_sources_open",
                "Event-source connections this replica reads, by kind (websocket, sse, webhook, redis, nats)",
                &["kind"],
            ),
            source_messages: counter_vec(
                &r,
                "livegate_source_messages_total",
                "Messages read from event sources by kind and result: passed (on to subscriptions and entries), skipped (not JSON, not text, too big)",
                &["kind", "result"],
            ),
            hooks: counter_vec(
                &r,
                "livegate_webhook_deliveries_total",
                "@webhook deliveries by receiver and result: accepted, refused (unsigned, wrong signature, stale, replayed), malformed (not JSON)",
                &["receiver", "result"],
            ),
            breaker_state: gauge_vec(
                &r,
                "livegate_upstream_breaker_state",
                "Each upstream's circuit breaker: 0 closed, 1 open (failing fast), 2 half-open (probing)",
                &["upstream"],
            ),
            short_circuited: counter_vec(
                &r,
                "livegate_upstream_short_circuited_total",
                "Upstream requests failed at once (UPSTREAM_UNAVAILABLE), not sent, while the upstream's breaker was open",
                &["upstream"],
            ),
            retries: counter_vec(
                &r,
                "livegate_upstream_retries_total",
                "Retries of idempotent upstream requests by result: sent, denied (the retry budget was spent, or the deadline too near)",
                &["upstream", "result"],
            ),
            stale_if_error: counter_vec(
                &r,
                "livegate_stale_if_error_total",
                "Cached values served past their freshness because refreshing them failed (@cache(staleIfError:))",
                &["upstream"],
            ),
            trace_spans: counter_vec(
                &r,
                "livegate_trace_spans_total",
                "Finished spans (with --otlp-endpoint) by result: queued for export, dropped (the export queue was full)",
                &["result"],
            ),
            trace_exports: counter_vec(
                &r,
                "livegate_trace_exported_spans_total",
                "Spans sent to the OTLP endpoint by result: ok, failed",
                &["result"],
            ),
            rate_limited: counter(
                &r,
                "livegate_rate_limited_total",
                "Requests and operations refused by --rate-limit",
            ),
            plans: plans.clone(),
            hot: Hot {
                cache_hit: cache_lookups.with_label_values(&["hit"]),
                cache_stale: cache_lookups.with_label_values(&["stale"]),
                cache_miss: cache_lookups.with_label_values(&["miss"]),
                plan_hit: plans.with_label_values(&["hit"]),
                plan_miss: plans.with_label_values(&["miss"]),
            },
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Why a request was refused: the `reason` of `livegate_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Limit,
    Auth,
    Malformed,
}

impl Metrics {
    /// Counts one refused request.
    pub fn reject(&self, why: Rejection) {
        let reason = match why {
            Rejection::Limit => "limit",
            Rejection::Auth => "auth",
            Rejection::Malformed => "malformed",
        };
        self.rejected.with_label_values(&[reason]).inc();
    }
}

/// Keeps a gauge up while alive: a connection or subscription in progress.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(g: IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
