//! The `livegate` binary: flags (each also a `LIVEGATE_*` environment variable), logs,
//! then [`livegate::run`].

use anyhow::Context;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "livegate",
    version,
    about = "A GraphQL gateway that gives every client live data from plain REST services"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The schema to serve: a file, or a directory of `.graphql` files; repeat it (or
    /// separate with commas) for a schema split over several.
    #[arg(
        long,
        env = "LIVEGATE_SCHEMA",
        default_value = "schema.graphql",
        value_delimiter = ','
    )]
    schema: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "LIVEGATE_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// Memory budget of the shared cache, in MiB of what it keeps (parsed values, weighed
    /// by their heap bytes).
    #[arg(long, env = "LIVEGATE_CACHE_SIZE_MB", default_value_t = 256)]
    cache_size_mb: u64,
    /// Memory budget of the whole-response cache, in MiB; 0 turns it off.
    #[arg(long, env = "LIVEGATE_RESPONSE_CACHE_MB", default_value_t = 64)]
    response_cache_mb: u64,
    /// Largest upstream response body accepted, in bytes (larger: UPSTREAM_TOO_LARGE).
    #[arg(long, env = "LIVEGATE_MAX_UPSTREAM_BODY", default_value_t = 16 << 20)]
    max_upstream_body: usize,
    /// Requests in flight to one upstream at once, for upstreams without
    /// `@upstream(maxConnections:)`; more wait for a turn within their deadline.
    #[arg(long, env = "LIVEGATE_UPSTREAM_MAX_CONNECTIONS", default_value_t = 256)]
    upstream_max_connections: usize,
    /// Largest response one operation may write, in bytes (larger: RESPONSE_TOO_LARGE).
    #[arg(long, env = "LIVEGATE_MAX_RESPONSE_BYTES", default_value_t = 32 << 20)]
    max_response_bytes: usize,
    /// Upstream timeout in milliseconds, for upstreams without `timeoutMs`.
    #[arg(long, env = "LIVEGATE_UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    upstream_timeout_ms: u64,
    /// Most retries of one idempotent upstream request (GET, or `@rest(idempotent: true)`)
    /// after no answer, a timed-out attempt, or 502/503/504; `@upstream(retries:)` overrides.
    #[arg(long, env = "LIVEGATE_UPSTREAM_RETRIES", default_value_t = 2)]
    upstream_retries: u32,
    /// Retries toward one upstream over the breaker's window: at most this percent of its
    /// requests, plus --upstream-retry-min-per-s.
    #[arg(
        long,
        env = "LIVEGATE_UPSTREAM_RETRY_BUDGET_PERCENT",
        default_value_t = 20
    )]
    upstream_retry_budget_percent: u32,
    /// Retries per second always allowed toward one upstream, whatever its traffic.
    #[arg(long, env = "LIVEGATE_UPSTREAM_RETRY_MIN_PER_S", default_value_t = 10)]
    upstream_retry_min_per_s: u32,
    /// How long one attempt may take before it is abandoned and retried within the
    /// request's timeout, in ms; 0: the whole timeout. `@upstream(attemptTimeoutMs:)` overrides.
    #[arg(
        long,
        env = "LIVEGATE_UPSTREAM_ATTEMPT_TIMEOUT_MS",
        default_value_t = 0
    )]
    upstream_attempt_timeout_ms: u64,
    /// An upstream's circuit breaker opens when this percent of its requests over the
    /// window failed (no answer, a timeout, a 5xx); 0 turns breakers off.
    #[arg(long, env = "LIVEGATE_BREAKER_FAILURE_PERCENT", default_value_t = 50)]
    breaker_failure_percent: u32,
    /// Requests the window must hold before the breaker may open.
    #[arg(long, env = "LIVEGATE_BREAKER_MIN_REQUESTS", default_value_t = 20)]
    breaker_min_requests: u32,
    /// The window of breakers and retry budgets, in seconds (1 to 600).
    #[arg(long, env = "LIVEGATE_BREAKER_WINDOW_S", default_value_t = 10)]
    breaker_window_s: u32,
    /// Send traces to this OpenTelemetry collector, OTLP over HTTP (protobuf): its base URL
    /// (`/v1/traces` is added) or its traces URL. Unset: no traces, at no cost.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The `service.name` of this gateway's spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "livegate")]
    otlp_service_name: String,
    /// The share of traces started here that are recorded (0 to 1); a client's sampled
    /// `traceparent` is followed (parent-based).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0)]
    trace_sample_ratio: f64,
    /// Put each operation's document in its request span (`graphql.document`); variables never.
    #[arg(long, env = "LIVEGATE_TRACE_DOCUMENTS")]
    trace_documents: bool,
    /// How long an open breaker fails requests at once before one probe is let through, in ms.
    #[arg(long, env = "LIVEGATE_BREAKER_OPEN_MS", default_value_t = 5_000)]
    breaker_open_ms: u64,
    /// Largest request body accepted from clients, in bytes (larger: 413).
    #[arg(long, env = "LIVEGATE_MAX_REQUEST_BODY", default_value_t = 1 << 20)]
    max_request_body: usize,
    /// How long a `batchKey` field waits for its siblings, in milliseconds.
    #[arg(long, env = "LIVEGATE_BATCH_WINDOW_MS", default_value_t = 1)]
    batch_window_ms: u64,
    /// How long a polled or @updates-fed live query is kept up after its last subscriber left, in ms.
    #[arg(long, env = "LIVEGATE_LIVE_GRACE_MS", default_value_t = 60_000)]
    live_grace_ms: u64,
    /// How long an upstream WebSocket (for @updates, @stream) stays open after its last user left, in ms.
    #[arg(long, env = "LIVEGATE_SOCKET_GRACE_MS", default_value_t = 60_000)]
    socket_grace_ms: u64,
    /// Upstream WebSockets opened with a caller's forwarded headers (forwardHeaders) this process may hold at once; past it such subscriptions are refused.
    #[arg(long, env = "LIVEGATE_MAX_CALLER_SOCKETS", default_value_t = 1024)]
    max_caller_sockets: usize,
    /// This replica's lasting name: its durable JetStream consumers (`@stream(jetStream:)`)
    /// are named after it, so each replica gets every message and a restarted one resumes
    /// from its last acknowledged message. Give each replica its own, kept across
    /// restarts (a StatefulSet's pod name); default: the host name and the listen port.
    #[arg(long, env = "LIVEGATE_REPLICA_NAME")]
    replica_name: Option<String>,
    /// How long a WebSocket may stay open without `connection_init`, in ms (then 4408).
    #[arg(long, env = "LIVEGATE_WS_INIT_TIMEOUT_MS", default_value_t = 3_000)]
    ws_init_timeout_ms: u64,
    /// How often the legacy graphql-ws protocol's `ka` keep-alive is sent, in ms.
    #[arg(long, env = "LIVEGATE_WS_KEEPALIVE_MS", default_value_t = 12_000)]
    ws_keepalive_ms: u64,
    /// Bytes of messages one WebSocket or SSE stream may have queued for a client that does not read; past it live queries conflate to the latest and event streams lose the oldest.
    #[arg(long, env = "LIVEGATE_MAX_QUEUED_BYTES", default_value_t = 1 << 20)]
    max_queued_bytes: usize,
    /// Shared secret of the invalidation webhook's HMAC-SHA256 signatures.
    #[arg(long, env = "LIVEGATE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Bearer token accepted by the invalidation webhook.
    #[arg(long, env = "LIVEGATE_WEBHOOK_TOKEN", hide_env_values = true)]
    webhook_token: Option<String>,
    /// How far, in seconds, a timestamped webhook signature's time may be from the gateway's clock.
    #[arg(long, env = "LIVEGATE_WEBHOOK_TOLERANCE_S", default_value_t = 300)]
    webhook_tolerance_s: u64,
    /// Accept only timestamped webhook signatures (t=…,v1=…), not the untimed sha256= form.
    #[arg(long, env = "LIVEGATE_WEBHOOK_REQUIRE_TIMESTAMP")]
    webhook_require_timestamp: bool,
    /// Largest invalidation webhook body, in bytes (larger: 413).
    #[arg(long, env = "LIVEGATE_WEBHOOK_MAX_BODY", default_value_t = 64 << 10)]
    webhook_max_body: usize,
    /// After SIGTERM or Ctrl-C, how long in-flight requests may run before the process exits anyway, in ms.
    #[arg(long, env = "LIVEGATE_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    drain_timeout_ms: u64,
    /// After SIGTERM or Ctrl-C, how long /readyz answers 503 while everything is still served (so a load balancer drains first), in ms.
    #[arg(long, env = "LIVEGATE_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    shutdown_delay_ms: u64,
    /// Origin of a browser app allowed to call /graphql across origins (CORS, and WebSocket upgrades from that Origin); repeat or comma-separate; `*` allows any origin without credentials. Default: same origin only.
    #[arg(long, env = "LIVEGATE_CORS_ORIGIN", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// PEM file of certificate authorities to trust for https/wss upstreams, besides the public web roots.
    #[arg(long, env = "LIVEGATE_UPSTREAM_CA_FILE")]
    upstream_ca_file: Option<String>,
    /// Follow upstream HTTP redirects (up to 5, within the same origin only); without it a 3xx is UPSTREAM_HTTP_ERROR.
    #[arg(long, env = "LIVEGATE_UPSTREAM_FOLLOW_REDIRECTS")]
    upstream_follow_redirects: bool,
    /// JWKS endpoint whose keys verify client tokens (RS256/384/512, PS256/384/512, ES256/384, EdDSA); repeat or comma-separate. Fetched at start, kept for their Cache-Control max-age, fetched again for an unknown kid; the keys fetched before are kept while it is down.
    #[arg(long, env = "LIVEGATE_JWT_JWKS_URL", value_delimiter = ',')]
    jwt_jwks_url: Vec<url::Url>,
    /// Shared secret of HS256/384/512 client tokens.
    #[arg(long, env = "LIVEGATE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Accepted `iss` of client tokens (then required); repeat or comma-separate.
    #[arg(long, env = "LIVEGATE_JWT_ISSUER", value_delimiter = ',')]
    jwt_issuer: Vec<String>,
    /// Accepted `aud` of client tokens (then required); repeat or comma-separate.
    #[arg(long, env = "LIVEGATE_JWT_AUDIENCE", value_delimiter = ',')]
    jwt_audience: Vec<String>,
    /// Clock skew allowed on a token's exp and nbf, in seconds; a socket closes at exp plus it.
    #[arg(long, env = "LIVEGATE_JWT_LEEWAY_S", default_value_t = 30)]
    jwt_leeway_s: u64,
    /// Refuse requests without a token (401); without it anonymous requests run and only @authenticated/@requiresScopes parts refuse them.
    #[arg(long, env = "LIVEGATE_JWT_REQUIRED")]
    jwt_required: bool,
    /// Cookie a token is read from when there is no Authorization: Bearer header.
    #[arg(long, env = "LIVEGATE_JWT_COOKIE")]
    jwt_cookie: Option<String>,
    /// Claim the scopes of @requiresScopes are read from (space-separated string or list).
    #[arg(long, env = "LIVEGATE_JWT_SCOPE_CLAIM", default_value = "scope")]
    jwt_scope_claim: String,
    /// A JWKS is fetched again for a token with an unknown kid at most this often, in seconds.
    #[arg(long, env = "LIVEGATE_JWT_JWKS_MIN_REFRESH_S", default_value_t = 10)]
    jwt_jwks_min_refresh_s: u64,
    /// Requests (and operations started on a socket) per second per client, the client being the --rate-limit-claim of its token or, anonymous, its IP; over it 429 with Retry-After. Shared by every replica with --redis-url. 0: off.
    #[arg(long, env = "LIVEGATE_RATE_LIMIT", default_value_t = 0.0)]
    rate_limit: f64,
    /// The token claim that names a client for --rate-limit.
    #[arg(long, env = "LIVEGATE_RATE_LIMIT_CLAIM", default_value = "sub")]
    rate_limit_claim: String,
    /// Most long-lived connections (WebSocket, SSE) the gateway holds; more get 503.
    #[arg(long, env = "LIVEGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Most long-lived connections from one client IP; more get 503.
    #[arg(long, env = "LIVEGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    max_connections_per_ip: usize,
    /// Most TCP connections of any kind (HTTP, WebSocket, SSE) the gateway holds; more get 503 at accept.
    #[arg(long, env = "LIVEGATE_MAX_TCP_CONNECTIONS", default_value_t = 20_000)]
    max_tcp_connections: usize,
    /// Most TCP connections from one client IP; more get 503 at accept.
    #[arg(
        long,
        env = "LIVEGATE_MAX_TCP_CONNECTIONS_PER_IP",
        default_value_t = 2_000
    )]
    max_tcp_connections_per_ip: usize,
    /// How long an HTTP/1 client may take to send a request's headers, and how long a connection with no request in flight (never used, idle keep-alive or HTTP/2) or with its writes stalled stays open, in ms.
    #[arg(long, env = "LIVEGATE_HEADER_TIMEOUT_MS", default_value_t = 30_000)]
    header_timeout_ms: u64,
    /// How long a request's whole body may take to arrive, in ms (then 408).
    #[arg(long, env = "LIVEGATE_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// Most bytes of request bodies still arriving, across the gateway; a body beyond it gets 503 instead of being buffered.
    #[arg(long, env = "LIVEGATE_MAX_PENDING_BODY_BYTES", default_value_t = 64 << 20)]
    max_pending_body_bytes: usize,
    /// Most operations running at once on one WebSocket; more get an `error` message.
    #[arg(
        long,
        env = "LIVEGATE_MAX_OPERATIONS_PER_CONNECTION",
        default_value_t = 100
    )]
    max_operations_per_connection: usize,
    /// Operations one WebSocket may start per second; more get an `error` message.
    #[arg(long, env = "LIVEGATE_MAX_OPERATIONS_PER_SECOND", default_value_t = 50)]
    max_operations_per_second: u32,
    /// A WebSocket with no operation running and no message for this long is closed, in ms.
    #[arg(long, env = "LIVEGATE_WS_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    ws_idle_timeout_ms: u64,
    /// Most aliases in one GraphQL document.
    #[arg(long, env = "LIVEGATE_MAX_ALIASES", default_value_t = 30)]
    max_aliases: usize,
    /// Most root fields in one operation.
    #[arg(long, env = "LIVEGATE_MAX_ROOT_FIELDS", default_value_t = 20)]
    max_root_fields: usize,
    /// Refuse introspection queries (`__schema`, `__type`).
    #[arg(long, env = "LIVEGATE_DISABLE_INTROSPECTION")]
    disable_introspection: bool,
    /// Deepest selection nesting accepted in an operation.
    #[arg(long, env = "LIVEGATE_MAX_DEPTH", default_value_t = 32)]
    max_depth: usize,
    /// Highest complexity (number of fields selected) accepted in an operation.
    #[arg(long, env = "LIVEGATE_MAX_COMPLEXITY", default_value_t = 10_000)]
    max_complexity: usize,
    /// Redis shared by several replicas (redis://, rediss://, a password in the URL works): invalidations reach every replica and cached values are shared. Without it everything stays in this process.
    #[arg(long, env = "LIVEGATE_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// A Redis Cluster instead of one Redis: some of its nodes, comma-separated (`redis://host:7000,redis://host:7001`); the rest are found from them. The second-level cache, persisted documents, leases and rate budgets spread over its slots by their own keys; the invalidation stream sits in one slot. Not with --redis-url.
    #[arg(
        long,
        env = "LIVEGATE_REDIS_CLUSTER",
        hide_env_values = true,
        conflicts_with = "redis_url"
    )]
    redis_cluster: Option<String>,
    /// Prefix of every Redis key, so several gateways can share one Redis.
    #[arg(long, env = "LIVEGATE_REDIS_PREFIX", default_value = "livegate:")]
    redis_prefix: String,
    /// Deadline of every Redis call, in ms; past it Redis counts as down for that call.
    #[arg(long, env = "LIVEGATE_REDIS_TIMEOUT_MS", default_value_t = 250)]
    redis_timeout_ms: u64,
    /// How long a replica waits for another replica's fetch of the same entry before fetching itself, in ms.
    #[arg(long, env = "LIVEGATE_REDIS_FILL_WAIT_MS", default_value_t = 10_000)]
    redis_fill_wait_ms: u64,
    /// How long the lease on an upstream socket lasts unrenewed, in ms: with several replicas, one holds each socket, and a survivor takes over within this after its holder dies.
    #[arg(long, env = "LIVEGATE_REDIS_LEASE_MS", default_value_t = 10_000)]
    redis_lease_ms: u64,
    /// With several replicas, a follower keeps a warm standby connection to each shared upstream socket, so that none of its messages is lost when the holder dies (two sockets per stream for the cluster); false: one socket per stream, and a survivor reconnects it (the entries it feeds are refetched).
    #[arg(long, env = "LIVEGATE_REDIS_STANDBY", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    redis_standby: bool,
    /// Reload the schema when its file changes (it is also reloaded on SIGHUP). A schema with errors is refused and the one in service goes on.
    #[arg(long, env = "LIVEGATE_WATCH")]
    watch: bool,
    /// Trusted documents: a JSON manifest of id → document (Apollo's persisted query manifest, or Relay's and GraphQL Codegen's `{"id": "document"}`); a request names one by `extensions.persistedQuery.sha256Hash` or `documentId`.
    #[arg(long, env = "LIVEGATE_PERSISTED_DOCUMENTS")]
    persisted_documents: Option<std::path::PathBuf>,
    /// Run only the documents of --persisted-documents, on every transport: any other is refused (PERSISTED_QUERY_NOT_IN_LIST), and automatic persisted queries register nothing.
    #[arg(long, env = "LIVEGATE_PERSISTED_ONLY")]
    persisted_only: bool,
    /// Memory for automatic persisted queries (documents registered by hash), in MiB; 0 turns them off.
    #[arg(long, env = "LIVEGATE_APQ_CACHE_MB", default_value_t = 16)]
    apq_cache_mb: u64,
    /// Most operations in one batched request (a JSON array of operations); 0 refuses batches.
    #[arg(long, env = "LIVEGATE_MAX_BATCH_SIZE", default_value_t = 10)]
    max_batch_size: usize,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LIVEGATE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a schema: exit 0, or print every error and exit 1.
    Check {
        /// The schema to check: files or directories, read as one schema.
        #[arg(required = true)]
        schema: Vec<PathBuf>,
    },
    /// Generate a schema from another description of an API.
    #[command(subcommand)]
    Import(Import),
    /// Print an HS256 token signed with a shared secret (the gateway's --jwt-secret): for trying @authenticated, @requiresScopes and {claims.…} locally.
    Token {
        /// The secret to sign with.
        #[arg(long, env = "LIVEGATE_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// The `sub` claim.
        #[arg(long)]
        sub: String,
        /// The `scope` claim: space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// Another claim, NAME=VALUE (VALUE read as JSON when it is JSON, else as a string); repeat for more.
        #[arg(long = "claim", value_name = "NAME=VALUE")]
        claims: Vec<String>,
        /// The `iss` claim.
        #[arg(long)]
        issuer: Option<String>,
        /// The `aud` claim.
        #[arg(long)]
        audience: Option<String>,
        /// Seconds until `exp`.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
    },
}

#[derive(Subcommand, Debug)]
enum Import {
    /// A schema from an OpenAPI document (3.0, 3.1 or Swagger 2.0; JSON or YAML): every GET a cached Query field, every other operation a Mutation that invalidates what it changes, a live Subscription for each GET by id.
    Openapi {
        /// The OpenAPI document; the files its `$ref`s name are read too.
        file: PathBuf,
        /// The `@upstream` name (default: from the document's title).
        #[arg(long)]
        name: Option<String>,
        /// The upstream's URL (default: the document's first server).
        #[arg(long)]
        base_url: Option<String>,
        /// Write the schema here instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// `@cache(maxAge:)`, in seconds, of every GET.
        #[arg(long, default_value_t = 60)]
        max_age: u32,
        /// Poll each generated live subscription every this many milliseconds (default: refreshed by mutations and invalidations only).
        #[arg(long, value_parser = clap::value_parser!(u32).range(10..))]
        poll_ms: Option<u32>,
    },
}

fn import(command: &Import) -> ExitCode {
    let Import::Openapi {
        file,
        name,
        base_url,
        out,
        max_age,
        poll_ms,
    } = command;
    let options = livegate::openapi::Options {
        name: name.clone(),
        base_url: base_url.clone(),
        max_age: *max_age,
        poll_ms: *poll_ms,
    };
    let imported = match livegate::openapi::import(file, &options) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    let written = match out {
        Some(path) => std::fs::write(path, &imported.schema)
            .map_err(|e| format!("{}: cannot write: {e}", path.display())),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(imported.schema.as_bytes())
                .map_err(|e| format!("cannot write the schema: {e}"))
        }
    };
    if let Err(e) = written {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let n = imported.skipped.len();
    let mut summary = format!(
        "imported {} operation{}, skipped {n}",
        imported.imported,
        if imported.imported == 1 { "" } else { "s" }
    );
    if n > 0 {
        let list: Vec<String> = imported
            .skipped
            .iter()
            .map(|(op, why)| format!("{op} ({why})"))
            .collect();
        summary.push_str(": ");
        summary.push_str(&list.join("; "));
    }
    eprintln!("{summary}");
    ExitCode::SUCCESS
}

fn load(paths: &[PathBuf]) -> Result<livegate::Plan, String> {
    let files = livegate::read_schema(paths)?;
    livegate::plan::load_sources(&files, std::env::vars()).map_err(|errors| {
        let n = errors.len();
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "{}\n{n} error{} in {}",
            list.join("\n"),
            if n == 1 { "" } else { "s" },
            shown(paths)
        )
    })
}

/// The schema's paths, as said in messages.
fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> ExitCode {
    livegate::return_freed_memory();
    let cli = Cli::parse();
    if let Some(Command::Import(command)) = &cli.command {
        return import(command);
    }
    if let Some(Command::Token {
        secret,
        sub,
        scope,
        claims,
        issuer,
        audience,
        ttl_s,
    }) = &cli.command
    {
        let mut body = serde_json::json!({ "sub": sub });
        for (name, value) in [("scope", scope), ("iss", issuer), ("aud", audience)] {
            if let Some(v) = value {
                body[name] = serde_json::json!(v);
            }
        }
        for c in claims {
            let Some((name, value)) = c.split_once('=') else {
                eprintln!("--claim {c:?}: write NAME=VALUE");
                return ExitCode::FAILURE;
            };
            body[name] = serde_json::from_str(value).unwrap_or_else(|_| serde_json::json!(value));
        }
        return match livegate::auth::sign_hs256(secret, body, Duration::from_secs(*ttl_s)) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("livegate token: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Check { schema }) = &cli.command {
        return match load(schema) {
            Ok(_) => {
                println!("{}: ok", shown(schema));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVEGATE_LOG")
        .unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: a log file or collector gets plain text (and each
    // request's span is formatted without escape codes).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let plan = match load(&cli.schema) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(&cli, plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: &Cli, plan: livegate::Plan) -> anyhow::Result<()> {
    let cors = livegate::server::cors::Cors::new(&cli.cors_origin).map_err(anyhow::Error::msg)?;
    let upstream_ca = match &cli.upstream_ca_file {
        Some(path) => {
            livegate::upstream::tls::ExtraRoots::from_pem_file(path).map_err(anyhow::Error::msg)?
        }
        None => Default::default(),
    };
    let verifies =
        !cli.jwt_jwks_url.is_empty() || cli.jwt_secret.as_deref().is_some_and(|s| !s.is_empty());
    if !verifies
        && (cli.jwt_required
            || cli.jwt_cookie.is_some()
            || !cli.jwt_issuer.is_empty()
            || !cli.jwt_audience.is_empty())
    {
        anyhow::bail!("--jwt-required, --jwt-cookie, --jwt-issuer and --jwt-audience need a key to verify tokens with: --jwt-jwks-url or --jwt-secret");
    }
    let options = livegate::Options {
        schema_paths: cli.schema.clone(),
        watch: cli.watch,
        persisted: livegate::server::persisted::Options {
            manifest: cli.persisted_documents.clone(),
            only: cli.persisted_only,
            apq_bytes: cli.apq_cache_mb << 20,
        },
        max_batch: cli.max_batch_size,
        cors,
        upstream_ca,
        follow_redirects: cli.upstream_follow_redirects,
        redis: cli
            .redis_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(|url| (url, false))
            .or_else(|| {
                cli.redis_cluster
                    .clone()
                    .filter(|u| !u.trim().is_empty())
                    .map(|nodes| (nodes, true))
            })
            .map(|(url, cluster)| livegate::bus::redis::RedisOptions {
                url,
                cluster,
                prefix: cli.redis_prefix.clone(),
                timeout: Duration::from_millis(cli.redis_timeout_ms.max(1)),
                fill_wait: Duration::from_millis(cli.redis_fill_wait_ms),
                lease: Duration::from_millis(cli.redis_lease_ms.max(100)),
            }),
        cache_bytes: cli.cache_size_mb << 20,
        response_cache_bytes: cli.response_cache_mb << 20,
        max_upstream_body: cli.max_upstream_body,
        upstream_max_connections: cli.upstream_max_connections,
        max_response_bytes: cli.max_response_bytes,
        upstream_timeout: Duration::from_millis(cli.upstream_timeout_ms),
        telemetry: livegate::telemetry::Options {
            endpoint: cli.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
            service_name: cli.otlp_service_name.clone(),
            sample_ratio: cli.trace_sample_ratio,
            documents: cli.trace_documents,
            headers: otel_headers(),
            ..bsp_settings()
        },
        resilience: livegate::upstream::guard::Settings {
            retries: cli.upstream_retries.min(10),
            budget_percent: cli.upstream_retry_budget_percent,
            min_retries_per_s: cli.upstream_retry_min_per_s,
            attempt_timeout: (cli.upstream_attempt_timeout_ms > 0)
                .then(|| Duration::from_millis(cli.upstream_attempt_timeout_ms)),
            failure_percent: cli.breaker_failure_percent.min(100),
            min_requests: cli.breaker_min_requests,
            window_s: cli.breaker_window_s,
            open_for: Duration::from_millis(cli.breaker_open_ms),
        },
        max_request_body: cli.max_request_body,
        batch_window: Duration::from_millis(cli.batch_window_ms),
        live_grace: Duration::from_millis(cli.live_grace_ms),
        socket_grace: Duration::from_millis(cli.socket_grace_ms),
        max_caller_sockets: cli.max_caller_sockets,
        socket_standby: cli.redis_standby,
        replica_name: cli.replica_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            let host = if host.is_empty() {
                "livegate".to_string()
            } else {
                host
            };
            format!("{host}-{}", cli.listen.port())
        }),
        limits: livegate::schema::QueryLimits {
            max_depth: cli.max_depth,
            max_complexity: cli.max_complexity,
            disable_introspection: cli.disable_introspection,
        },
        connection_limits: livegate::server::limits::Limits {
            max_connections: cli.max_connections,
            max_connections_per_ip: cli.max_connections_per_ip,
            max_operations_per_connection: cli.max_operations_per_connection,
            max_operations_per_second: cli.max_operations_per_second,
            idle_timeout: Duration::from_millis(cli.ws_idle_timeout_ms.max(1)),
            max_aliases: cli.max_aliases,
            max_root_fields: cli.max_root_fields,
            max_tcp_connections: cli.max_tcp_connections,
            max_tcp_connections_per_ip: cli.max_tcp_connections_per_ip,
            header_timeout: Duration::from_millis(cli.header_timeout_ms.max(1)),
        },
        ws: livegate::server::ws::WsOptions {
            init_timeout: Duration::from_millis(cli.ws_init_timeout_ms),
            keepalive: Duration::from_millis(cli.ws_keepalive_ms.max(1)),
            max_queued_bytes: cli.max_queued_bytes,
            ..Default::default()
        },
        body: livegate::server::body::BodyOptions {
            timeout: Duration::from_millis(cli.body_timeout_ms.max(1)),
            max_pending: cli.max_pending_body_bytes,
        },
        drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
        shutdown_delay: Duration::from_millis(cli.shutdown_delay_ms),
        rate_limit: (cli.rate_limit > 0.0).then(|| livegate::server::rate::Options {
            per_second: cli.rate_limit,
            claim: cli.rate_limit_claim.clone(),
        }),
        auth: livegate::auth::Options {
            jwks_urls: cli.jwt_jwks_url.clone(),
            secret: cli.jwt_secret.clone().filter(|s| !s.is_empty()),
            issuers: cli.jwt_issuer.clone(),
            audiences: cli.jwt_audience.clone(),
            leeway: Duration::from_secs(cli.jwt_leeway_s),
            required: cli.jwt_required,
            cookie: cli.jwt_cookie.clone().filter(|s| !s.is_empty()),
            scope_claim: cli.jwt_scope_claim.clone(),
            jwks_min_refresh: Duration::from_secs(cli.jwt_jwks_min_refresh_s),
        },
        webhook: livegate::server::webhook::WebhookOptions {
            secret: cli.webhook_secret.clone().filter(|s| !s.is_empty()),
            token: cli.webhook_token.clone().filter(|s| !s.is_empty()),
            max_body: cli.webhook_max_body,
            tolerance: Duration::from_secs(cli.webhook_tolerance_s),
            require_timestamp: cli.webhook_require_timestamp,
            seen: livegate::server::webhook::Seen::new(Duration::from_secs(
                cli.webhook_tolerance_s,
            )),
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
        tracing::info!(url = %format!("http://{}/graphql", listener.local_addr()?), "livegate serving");
        livegate::run(listener, plan, options, shutdown_signal()).await?;
        tracing::info!("livegate stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `OTEL_EXPORTER_OTLP_HEADERS` (or `OTEL_EXPORTER_OTLP_TRACES_HEADERS`): `k=v,k=v`,
/// values percent-decoded, sent with every export.
fn otel_headers() -> Vec<(String, String)> {
    let raw = std::env::var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_HEADERS"))
        .unwrap_or_default();
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .ok()?;
            Some((k.trim().to_string(), v.to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The batch span processor's standard settings: `OTEL_BSP_SCHEDULE_DELAY` (ms),
/// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
fn bsp_settings() -> livegate::telemetry::Options {
    let mut o = livegate::telemetry::Options::default();
    let number = |name: &str| std::env::var(name).ok()?.trim().parse::<u64>().ok();
    if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY") {
        o.delay = Duration::from_millis(ms.max(1));
    }
    if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE") {
        o.queue = (n as usize).clamp(1, 1 << 20);
    }
    if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        o.batch = (n as usize).clamp(1, 1 << 16);
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc's (v3) default purge delay is 1,000 ms: the index names that option.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads a process-wide allocator option.
            let delay = unsafe { libmimalloc_sys::mi_option_get(livegate::MI_OPTION_PURGE_DELAY) };
            assert_eq!(delay, 1000);
        }
    }
}
