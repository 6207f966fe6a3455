//! The Redis implementation of the bus (`--redis-url`).
//!
//! Keys, all under one hash tag `{<prefix>}` so the scripts also run on Redis Cluster
//! (one slot), and every one with a TTL:
//!
//! - `{p}inv` — the invalidation stream (`XADD … MAXLEN ~ 10000`, expires a day after its
//!   last entry). Each replica reads it from the last id it saw, so one that was cut off
//!   catches up when it reconnects; one that finds entries it can no longer read (trimmed
//!   past it, or the stream reset) treats everything as changed, once.
//! - `{p}c:<key>` — a second-level cache entry (JSON with its age and policy), expiring at
//!   `maxAge + swr`. Only `PUBLIC` entries: a `PRIVATE` value never leaves the replica.
//! - `{p}t:<tag>` — the second-level keys filed under a tag (a sorted set by expiry,
//!   trimmed as it is written), expiring with the longest.
//! - `{p}f:<key>` — the fill lock: concurrent misses of one key on several replicas make
//!   one upstream request; the others wait (bounded) for its value, and fetch themselves
//!   if the holder dies (its lock expires) or takes too long.
//! - `{p}gen` — bumped by every invalidation (and every polled change): a value fetched
//!   across one is not stored.
//! - `{p}lease:<name>`, `{p}leasegen:<name>` — who holds an upstream socket or a poller,
//!   and the generation (fencing token) of the latest holder.
//! - `{p}ev:<name>` — what a socket's holder republishes (`MAXLEN ~ 100`; a message over
//!   1 MiB is replaced by a marker that makes the followers refetch).
//!
//! Redis down is not livegate down: every call has a deadline (`--redis-timeout-ms`); a
//! lookup that fails is a miss, a publish that fails leaves the invalidation local, and
//! the stream reader reconnects by itself. `livegate_redis_up` says which it is; the
//! change is logged once. A stream message that is malformed or of an unknown format
//! version is skipped and counted, never trusted.
//!
//! Files: this one (the connection: deadlines, the up/down state, persisted documents),
//! [`stream`] (the invalidation stream), [`l2`] (the second-level cache and its fill
//! lock), [`lease`] (leases and what a holder republishes).

mod l2;
mod lease;
mod rate;
mod stream;

use l2::{CHANGED, PUT, STORE, UNLOCK};
pub use lease::Events;
use lease::{LEASE, RELEASE};
use stream::{read_stream, Unsent, FORMAT, INVALIDATE, STREAM_TTL_MS};

use super::{Remote, Shared};
use crate::key::{CacheKey, Policy, Tag};
use crate::metrics::Metrics;
use crate::upstream::UpstreamError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OnceCell};

/// Redis settings; flags of the binary.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub url: String,
    pub prefix: String,
    /// Deadline of every Redis call.
    pub timeout: Duration,
    /// How long a replica waits for another's fetch of the same key before fetching itself.
    pub fill_wait: Duration,
    /// How long a lease (an upstream socket's) lasts unrenewed: a survivor takes a dead
    /// holder's socket over within it.
    pub lease: Duration,
}

pub struct RedisBus {
    client: redis::Client,
    /// Connected lazily (and kept reconnecting by the manager once connected).
    conn: OnceCell<ConnectionManager>,
    options: RedisOptions,
    /// This replica, so it skips its own messages.
    origin: String,
    up: AtomicBool,
    /// When a connection attempt last failed: calls within a second of it do not wait
    /// for another attempt (Redis down must not slow every cache miss).
    failed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    unsent: std::sync::Mutex<Unsent>,
    /// Leases this replica holds.
    held: std::sync::Mutex<std::collections::HashSet<String>>,
    metrics: Arc<Metrics>,
    lease: redis::Script,
    release: redis::Script,
    changed: redis::Script,
    invalidate: redis::Script,
    store: redis::Script,
    unlock: redis::Script,
}

/// `redis://user:password@host/…` without its password, for log lines.
fn shown(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| crate::upstream::redact(&u))
        .unwrap_or_else(|_| "(unparsable URL)".into())
}

impl RedisBus {
    /// Checks the URL (a mistake there is a start-up error); connects in the background.
    /// Remote invalidations are sent to `remote`.
    pub fn start(
        options: RedisOptions,
        metrics: Arc<Metrics>,
        remote: mpsc::UnboundedSender<crate::bus::Heard>,
    ) -> Result<Arc<RedisBus>, String> {
        let client = redis::Client::open(options.url.as_str()).map_err(|e| {
            // The error may quote the URL, password and all.
            let why = match url::Url::parse(&options.url) {
                Ok(u) => crate::upstream::scrub(&e.to_string(), &u),
                Err(_) => "not a URL".to_string(),
            };
            format!("--redis-url {}: {why}", shown(&options.url))
        })?;
        let origin = {
            use std::hash::{BuildHasher, Hash, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            std::time::SystemTime::now().hash(&mut h);
            std::process::id().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        let bus = Arc::new(RedisBus {
            client,
            conn: OnceCell::new(),
            options,
            origin,
            up: AtomicBool::new(false),
            failed_at: std::sync::Mutex::new(None),
            unsent: Default::default(),
            held: Default::default(),
            metrics,
            lease: redis::Script::new(LEASE),
            release: redis::Script::new(RELEASE),
            changed: redis::Script::new(&format!("{PUT}{CHANGED}")),
            invalidate: redis::Script::new(INVALIDATE),
            store: redis::Script::new(&format!("{PUT}{STORE}")),
            unlock: redis::Script::new(UNLOCK),
        });
        bus.metrics.redis_up.set(0);
        tokio::spawn(read_stream(Arc::downgrade(&bus), remote));
        Ok(bus)
    }

    fn key(&self, name: &str) -> String {
        format!("{{{}}}{name}", self.options.prefix)
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        self.key(&format!("c:{}", key.hex()))
    }

    /// Notes whether Redis answered; logs a change once.
    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.metrics.redis_up.set(i64::from(up));
            if up {
                tracing::info!(
                    redis = shown(&self.options.url),
                    "redis is up: sharing with the other replicas"
                );
            } else {
                tracing::warn!(redis = shown(&self.options.url), "redis is unreachable: invalidations stay local and every replica fetches for itself until it is back");
            }
        }
    }

    /// The connection, once Redis has been reached (never waits longer than the deadline).
    async fn conn(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return Some(c.clone());
        }
        {
            let failed = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
            if failed.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return None;
            }
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.options.timeout)
            .set_response_timeout(self.options.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1_000);
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        match tokio::time::timeout(self.options.timeout * 2, connect).await {
            Ok(Ok(c)) => Some(self.conn.get_or_init(|| async { c }).await.clone()),
            _ => {
                *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(tokio::time::Instant::now());
                self.set_up(false);
                None
            }
        }
    }

    /// Runs one call with the deadline; `None` (and Redis marked down) on any failure.
    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match tokio::time::timeout(self.options.timeout, f(conn)).await {
            Ok(Ok(v)) => {
                self.set_up(true);
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(what, error = %e, "redis call failed");
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.set_up(false);
                }
                None
            }
            Err(_) => {
                tracing::debug!(what, "redis call timed out");
                self.set_up(false);
                None
            }
        }
    }

    /// The document persisted (APQ) under `hash` by any replica, if Redis has it.
    pub async fn document(&self, hash: &str) -> Option<String> {
        let key = self.key(&format!("apq:{hash}"));
        self.call("apq get", |mut c| async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut c)
                .await
        })
        .await
        .flatten()
    }

    /// Persists `document` under `hash` for every replica, for `ttl`.
    pub async fn put_document(&self, hash: &str, document: &str, ttl: Duration) {
        let key = self.key(&format!("apq:{hash}"));
        let secs = ttl.as_secs().max(1);
        let document = document.to_string();
        let _: Option<()> = self
            .call("apq set", |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(document)
                    .arg("EX")
                    .arg(secs)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A field of an `XINFO STREAM` reply (a flat list of names and values in RESP2).
fn info_field(info: &redis::Value, name: &str) -> Option<String> {
    let redis::Value::Array(items) = info else {
        return None;
    };
    let mut it = items.iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if redis::from_redis_value::<String>(k).ok().as_deref() == Some(name) {
            return redis::from_redis_value::<String>(v).ok();
        }
    }
    None
}
