//! Stage ⑤ — event sources: where changes are announced. Input: a planned stream
//! ([`crate::plan::StreamPlan`], from `@updates` or `@stream`). Output: a [`Tap`], a
//! broadcast of its messages (parsed JSON) and of [`Event::Reconnected`] (messages may
//! have been missed: what they feed refetches).
//!
//! One connection per stream for the whole gateway ([`Sources`], the registry, keyed by
//! the planned stream): opened on the first tap, closed a grace period after the last
//! tap is dropped, reconnected with exponential backoff (100 ms doubling to 30 s, ±50%
//! jitter). With other replicas (Redis), one connection per stream for the cluster: the
//! holder of the stream's lease reads and republishes, the others follow, one keeps a
//! warm standby ([`cluster`]). All of that is written once, here, for every kind of
//! source; a kind says only how to connect and read ([`Source`], [`Connection`]).
//! Kinds: [`websocket`] (an upstream WebSocket), [`sse`] (an upstream Server-Sent Events
//! stream), [`webhook`] (a `@webhook` receiver's deliveries), [`redis`] (a Redis channel or
//! Stream services publish to), [`nats`] (a NATS subject).
//!
//! Each tap is a `broadcast` receiver: a consumer that falls behind by more than
//! [`BUFFER`] messages loses the oldest (and is told how many, as `Lagged`).

mod cluster;
pub mod nats;
pub mod redis;
pub mod sse;
pub mod webhook;
pub mod websocket;

use crate::plan::StreamPlan;
use crate::request::RequestContext;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// Messages a tap may fall behind before it loses the oldest.
pub const BUFFER: usize = 1024;

#[derive(Clone, Debug)]
pub enum Event {
    Message(Arc<Value>),
    /// The connection was re-established after a drop: state may have been missed.
    Reconnected,
    /// The stream ended for good: the source refused the connection (an upstream socket's
    /// handshake answered 401 or 403) and retrying would loop. What read it ends with
    /// this error; a new tap tries again.
    Failed(Arc<Failure>),
}

/// Why a stream ended for good (see [`Event::Failed`]): what the subscriptions that read
/// it end with.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// `extensions.code`: `UNAUTHENTICATED` (401), `FORBIDDEN` (403), or
    /// `UPSTREAM_SOCKET_LIMIT` (no room for another per-caller socket).
    pub code: &'static str,
    /// The HTTP status the handshake answered, if it answered.
    pub status: Option<u16>,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub struct ConnectError {
    /// What went wrong, scrubbed of the URL's secrets.
    pub message: String,
    /// The metric label (`livegate_upstream_socket_failures_total{reason}`): `unauthorized`,
    /// `forbidden`, `status` (another HTTP status), `timeout`, `network`, `tls`,
    /// `protocol`.
    pub reason: &'static str,
    /// The status of a handshake refused with 401 or 403: retrying would loop, so the
    /// stream ends with an error instead.
    pub refused: Option<u16>,
}

impl ConnectError {
    /// A failure to retry: `e` as said in logs (the secrets of `url` scrubbed), counted
    /// under `reason`.
    pub fn scrubbed(e: &dyn std::fmt::Display, url: &url::Url, reason: &'static str) -> Self {
        ConnectError {
            message: crate::upstream::scrub(&e.to_string(), url),
            reason,
            refused: None,
        }
    }
}

/// One kind of event source, for one stream: how to open a connection to it.
pub trait Source: Send + Sync + 'static {
    /// A connection to the stream, or why not (scrubbed of the URL's secrets).
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, ConnectError>>;
    /// The stream as log lines show it: no userinfo, no query.
    fn shown(&self) -> &str;
    /// What log lines call a connection of this kind ("upstream socket").
    fn noun(&self) -> &'static str;
    /// The `kind` label of `livegate_sources_open` and `livegate_source_messages_total`.
    fn kind(&self) -> &'static str;
    /// The upstream it belongs to, as metrics label it.
    fn upstream(&self) -> &str;
    /// Whether one replica reads it for the cluster (under a lease) and republishes; a
    /// source every replica reads for itself says `false`.
    fn leased(&self) -> bool {
        true
    }
    /// The REST upstream it is served by (its sockets and streams), whose circuit breaker
    /// holds its reconnects back while open; `None` for brokers and webhooks.
    fn guarded_by(&self) -> Option<&std::sync::Arc<crate::plan::UpstreamPlan>> {
        None
    }
}

/// An open connection to a stream.
pub trait Connection: Send + 'static {
    /// Its next message (control traffic, such as pings, handled within).
    fn next(&mut self) -> BoxFuture<'_, Read>;
    /// Closes it politely.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// What a [`Connection`] read.
pub enum Read {
    /// One message's text (JSON, unless the source misbehaves: then counted and skipped).
    Message(String),
    /// A message that is not text: counted and skipped.
    Unreadable,
    /// The connection dropped: why (scrubbed), and whether for a message over the size
    /// limit.
    Dropped {
        error: Option<String>,
        too_big: bool,
    },
}

impl Read {
    /// A message's payload: its text, or unreadable when it is over `max` bytes or not
    /// UTF-8.
    pub fn payload(bytes: &[u8], max: usize) -> Read {
        if bytes.len() > max {
            return Read::Unreadable;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Read::Message(text.to_string()),
            Err(_) => Read::Unreadable,
        }
    }
}

/// Counters, for tests and metrics.
#[derive(Default, Debug)]
pub struct SourceStats {
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub open: AtomicUsize,
    pub skipped: AtomicU64,
    /// Messages that may be lost: a standby that took over had given up this many of
    /// its own copies (it fell too far behind its holder's republished stream), which
    /// the dead holder may or may not have passed on (see [`cluster`]).
    pub lost: AtomicU64,
}

/// One stream's broadcast, and how many taps it has.
struct Stream {
    tx: broadcast::Sender<Event>,
    taps: AtomicUsize,
    /// Opened with one caller's forwarded credentials: never shared with another caller
    /// (nor through Redis), counted against `--max-caller-sockets`.
    caller: bool,
}

/// A stream's identity in the registry: the planned stream's key (a schema reload that
/// points an upstream elsewhere opens a new connection; one that leaves it as it was
/// keeps the old one).
type StreamKey = String;

/// The registry of this gateway's streams (see the module's documentation).
pub struct Sources {
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    /// Each `@webhook` receiver's deliveries, by name (see [`webhook`]).
    hooks: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
    settings: Settings,
    pub stats: Arc<SourceStats>,
}

/// How [`Sources`] is set up (from the command line).
pub struct Settings {
    /// How long a connection stays after its last tap is dropped.
    pub grace: Duration,
    /// TLS for `wss` upstreams when extra roots are configured.
    pub tls: Option<tokio_tungstenite::Connector>,
    /// The HTTP client of streams over HTTP (SSE): the extra roots, no overall
    /// deadline (a stream is long), TCP keep-alive to notice a dead peer.
    pub http: reqwest::Client,
    /// Largest message (and frame) accepted from a stream.
    pub max_message: usize,
    /// With other replicas (Redis): one of them holds each shared stream (a lease) and
    /// republishes its messages; the others follow.
    pub bus: crate::bus::Bus,
    /// How long a replica's hold on a stream lasts without renewal.
    pub lease: Duration,
    /// This replica's lasting name (`--replica-name`): its durable JetStream consumers
    /// are named after it, so a restarted replica resumes where it left off.
    pub replica: String,
    /// The upstreams' circuit breakers (shared with the REST client).
    pub guards: Arc<crate::upstream::guard::Guards>,
    /// Each connect is a trace of its own (`source.connect`), when tracing.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Per-caller streams this process may hold at once.
    pub max_callers: usize,
    /// A follower keeps a warm standby connection to a shared stream (`--redis-standby`).
    pub standby: bool,
    /// Where failed connects are counted.
    pub failures: prometheus::IntCounterVec,
    /// `livegate_sources_open{kind}`.
    pub open: prometheus::IntGaugeVec,
    /// `livegate_source_messages_total{kind, result}`.
    pub messages: prometheus::IntCounterVec,
}

/// A subscription to one stream's events; the stream stays while any tap lives.
pub struct Tap {
    pub rx: broadcast::Receiver<Event>,
    stream: Arc<Stream>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stream.taps.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Sources {
    pub fn new(settings: Settings) -> Arc<Sources> {
        Arc::new(Sources {
            streams: Mutex::default(),
            hooks: Mutex::default(),
            settings,
            stats: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source that serves `stream` for a caller who forwards `credentials`: one
    /// implementation per kind.
    fn source(&self, stream: &StreamPlan, credentials: Credentials) -> Arc<dyn Source> {
        match stream {
            StreamPlan::WebSocket { upstream, path } => Arc::new(websocket::WebSocket::new(
                upstream,
                path,
                credentials,
                self.settings.max_message,
                self.settings.tls.clone(),
            )),
            StreamPlan::Sse { upstream, path } => Arc::new(sse::Sse::new(
                upstream,
                path,
                credentials,
                self.settings.max_message,
                self.settings.http.clone(),
            )),
            StreamPlan::Nats {
                upstream,
                subject,
                jetstream,
                shown,
            } => Arc::new(nats::Nats::new(
                upstream,
                (subject, shown.as_deref().unwrap_or(subject)),
                jetstream
                    .as_deref()
                    .map(|stream| (stream, self.settings.replica.as_str())),
                self.settings.max_message,
            )),
            StreamPlan::Redis {
                upstream,
                name,
                kind,
                shown,
            } => Arc::new(redis::Redis::new(
                upstream,
                (name, shown.as_deref().unwrap_or(name)),
                *kind,
                self.settings.max_message,
            )),
            StreamPlan::Webhook { hook } => {
                Arc::new(webhook::Webhook::new(&hook.name, self.hook(&hook.name)))
            }
        }
    }

    /// The broadcast of the deliveries of the receiver `name`.
    fn hook(&self, name: &str) -> broadcast::Sender<Arc<str>> {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks
            .entry(name.to_string())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .clone()
    }

    /// Hands a delivery of the receiver `name` (its JSON body) to the streams that read
    /// it; nothing when none does.
    pub fn deliver(&self, name: &str, body: Arc<str>) {
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = hooks.get(name) {
            let _ = tx.send(body);
        }
    }

    /// Taps `stream` for the caller of `ctx`, opening its connection if needed. A stream
    /// whose upstream lists `forwardHeaders` is opened with the caller's values of them,
    /// one connection per distinct set (keyed like `PRIVATE` entries, never shared
    /// across callers); a caller who sends none shares the connection without them.
    /// Refused when this process already holds `--max-caller-sockets` per-caller streams.
    pub fn tap(
        self: &Arc<Self>,
        stream: &StreamPlan,
        ctx: &RequestContext,
    ) -> Result<Tap, Arc<Failure>> {
        let credentials = credentials(stream, ctx);
        let caller = !credentials.is_empty();
        let key = match caller {
            false => stream.key(),
            true => caller_key(stream, &credentials),
        };
        let mut streams = self.lock();
        if let Some(s) = streams.get(&key) {
            s.taps.fetch_add(1, Ordering::AcqRel);
            return Ok(Tap {
                rx: s.tx.subscribe(),
                stream: s.clone(),
            });
        }
        if caller && streams.values().filter(|s| s.caller).count() >= self.settings.max_callers {
            return Err(Arc::new(Failure {
                message: format!(
                    "this gateway holds {} upstream sockets opened with callers' credentials, its limit (--max-caller-sockets); try again later",
                    self.settings.max_callers
                ),
                code: "UPSTREAM_SOCKET_LIMIT",
                status: None,
            }));
        }
        let (tx, rx) = broadcast::channel(BUFFER);
        let s = Arc::new(Stream {
            tx,
            taps: AtomicUsize::new(1),
            caller,
        });
        streams.insert(key.clone(), s.clone());
        tokio::spawn(cluster::run(
            Arc::downgrade(self),
            key,
            stream.lease_name(),
            self.source(stream, credentials),
            s.clone(),
        ));
        Ok(Tap { rx, stream: s })
    }

    /// Streams this gateway holds (connected or reconnecting).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Forgets the stream whatever its taps (it failed for good): the next tap opens a
    /// new one.
    fn retire(&self, key: &StreamKey, stream: &Arc<Stream>) {
        let mut streams = self.lock();
        if streams.get(key).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            streams.remove(key);
        }
    }

    /// Forgets the stream if nobody taps it; `true` when it was forgotten.
    fn retire_if_idle(&self, key: &StreamKey, stream: &Arc<Stream>) -> bool {
        let mut streams = self.lock();
        if stream.taps.load(Ordering::Acquire) == 0 {
            if streams.get(key).is_some_and(|s| Arc::ptr_eq(s, stream)) {
                streams.remove(key);
            }
            true
        } else {
            false
        }
    }
}

/// The URL of `path` on `upstream`: after the upstream's own path.
fn at(upstream: &crate::plan::UpstreamPlan, path: &str) -> url::Url {
    let mut url = upstream.url.clone();
    url.set_path(&format!(
        "{}{}",
        upstream.url.path().trim_end_matches('/'),
        path
    ));
    url
}

/// A caller's forwarded headers, as they go on a stream's connection.
pub type Credentials = Vec<(http::HeaderName, http::HeaderValue)>;

/// The values of the stream's upstream's `forwardHeaders` that `ctx` carries.
fn credentials(stream: &StreamPlan, ctx: &RequestContext) -> Credentials {
    let Some(upstream) = stream.upstream() else {
        return Vec::new();
    };
    ctx.forwarded(&upstream.forward_headers)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// The registry key of `stream` opened with `credentials`: the stream's key and a digest
/// of the credentials (the values themselves are not kept in the key).
fn caller_key(stream: &StreamPlan, credentials: &Credentials) -> StreamKey {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (name, value) in credentials {
        h.update(name.as_str().as_bytes());
        h.update(b":");
        h.update(value.as_bytes());
        h.update(b"\n");
    }
    format!("{}\0caller\0{}", stream.key(), hex::encode(h.finalize()))
}
