//! The Redis implementation of the bus (`--redis-url`, or `--redis-cluster` for a Redis
//! Cluster: the same keys and scripts on both).
//!
//! Keys are `{<prefix><scope>}<rest>`: the keys of one scope share a hash slot (a script
//! may touch them together); scopes spread over a cluster's slots. Every key has a TTL.
//!
//! - `{p}inv` — the invalidation stream (`XADD … MAXLEN ~ 10000`, expires a day after
//!   its last entry), and `{p}all`, the "everything changed" count, in one slot: an
//!   "everything changed" moves the count and is announced in one script. Each replica
//!   reads the stream from the last id it saw, so one that was cut off catches up when it
//!   reconnects; one that finds entries it can no longer read (trimmed past it, the
//!   stream reset, or lost in a failover) treats everything as changed, once.
//! - `{p c:<key>}` — a second-level cache entry (JSON with its age, its tags' generations
//!   and the "everything changed" count it was fetched under), expiring at `maxAge +
//!   swr`; `…g` its own generation and `…f` its fill lock, in its slot. Only `PUBLIC`
//!   entries: a `PRIVATE` value never leaves the replica. See [`l2`].
//! - `{p t:<tag>}` — the entries filed under a tag (a sorted set by expiry, trimmed as it
//!   is written), expiring with the longest; `…g` the tag's generation.
//! - `{p lease:<name>}`, `…g` — who holds an upstream socket or a poller, and the
//!   generation (fencing token) of the latest holder.
//! - `{p ev:<name>}` — what a socket's holder republishes (`MAXLEN ~ 100`; a message over
//!   1 MiB is replaced by a marker that makes the followers refetch).
//! - `{p rate:<client>}` — a client's `--rate-limit` budget; `{p apq:<hash>}` — a
//!   persisted document.
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

use l2::{CHANGED, FILE, LOCK, STORE, UNLOCK};
pub use lease::Events;
use lease::{LEASE, RELEASE};
use stream::{read_stream, Unsent, ANNOUNCE, DROP_TAG, FORMAT, STREAM_TTL_MS};

use super::{Remote, Shared};
use crate::key::{CacheKey, Policy, Tag};
use crate::metrics::Metrics;
use crate::upstream::UpstreamError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Redis settings; flags of the binary.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// One Redis (`--redis-url`), or with `cluster` the nodes of a Redis Cluster
    /// (`--redis-cluster`), separated by commas.
    pub url: String,
    /// `url` names a Redis Cluster's nodes.
    pub cluster: bool,
    pub prefix: String,
    /// Deadline of every Redis call.
    pub timeout: Duration,
    /// How long a replica waits for another's fetch of the same key before fetching itself.
    pub fill_wait: Duration,
    /// How long a lease (an upstream socket's) lasts unrenewed: a survivor takes a dead
    /// holder's socket over within it.
    pub lease: Duration,
}

/// Where Redis is: one server, or a cluster's nodes.
enum Client {
    One(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl Client {
    /// A connection, within `timeout` to connect, whose calls fail after `response`:
    /// with `own`, one for the caller alone (a blocking read would hold up a shared one);
    /// else the shared one, which to one Redis reconnects by itself. Boxed: the cluster
    /// client's connect future is too deep a type to prove `Send`.
    fn connect(
        &self,
        own: bool,
        timeout: Duration,
        response: Duration,
    ) -> futures_util::future::BoxFuture<'_, redis::RedisResult<Conn>> {
        Box::pin(async move {
            match self {
                Client::One(client) if own => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(timeout)
                        .set_response_timeout(response);
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Conn::Own)
                }
                Client::One(client) => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(timeout)
                        .set_response_timeout(response)
                        .set_number_of_retries(1)
                        .set_max_delay(1_000);
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map(Conn::One)
                }
                Client::Cluster(client) => {
                    let config = redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(timeout)
                        .set_response_timeout(response);
                    client
                        .get_async_connection_with_config(config)
                        .await
                        .map(Conn::Cluster)
                }
            }
        })
    }
}

/// A connection to either: what every call and script runs on.
#[derive(Clone)]
pub enum Conn {
    /// The shared connection to one Redis (reconnects by itself).
    One(ConnectionManager),
    /// A connection of its own to one Redis (a blocking stream read).
    Own(redis::aio::MultiplexedConnection),
    /// To a cluster: routes each command to its slot's node, follows `MOVED` and a
    /// failover, splits a multi-slot `MGET`/`DEL` by slot.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Own(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Own(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Own(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisBus {
    client: Client,
    /// Connected lazily (and kept reconnecting by the manager once connected; a cluster's
    /// connection is replaced when a call through it fails, see [`RedisBus::call`]).
    conn: std::sync::Mutex<Option<(Conn, tokio::time::Instant)>>,
    /// Held while connecting: concurrent calls make one connection.
    connecting: tokio::sync::Mutex<()>,
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
    drop_tag: redis::Script,
    announce: redis::Script,
    store: redis::Script,
    file: redis::Script,
    lock: redis::Script,
    unlock: redis::Script,
}

/// `redis://user:password@host/…` without its password, for log lines (each node of a
/// cluster's list).
fn shown(url: &str) -> String {
    url.split(',')
        .map(|one| {
            url::Url::parse(one.trim())
                .map(|u| crate::upstream::redact(&u))
                .unwrap_or_else(|_| "(unparsable URL)".into())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A connection to Redis at `url` (with `cluster`, a cluster's nodes, comma-separated)
/// made as livegate makes its own, for tools and tests.
pub async fn connect(url: &str, cluster: bool) -> Result<Conn, String> {
    let options = RedisOptions {
        url: url.to_string(),
        cluster,
        prefix: String::new(),
        timeout: Duration::from_secs(2),
        fill_wait: Duration::ZERO,
        lease: Duration::ZERO,
    };
    open(&options)?
        .connect(true, options.timeout, options.timeout)
        .await
        .map_err(|e| format!("redis: {}", e.category()))
}

/// Opens the client for `options`; an error says which flag and never shows a password.
fn open(options: &RedisOptions) -> Result<Client, String> {
    let flag = if options.cluster {
        "--redis-cluster"
    } else {
        "--redis-url"
    };
    let urls: Vec<&str> = options
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    // The error may quote a URL, password and all.
    let scrubbed = |e: redis::RedisError| {
        let mut why = e.to_string();
        for one in &urls {
            match url::Url::parse(one) {
                Ok(u) => why = crate::upstream::scrub(&why, &u),
                Err(_) => return "not a URL".to_string(),
            }
        }
        why
    };
    let fail = |why: String| format!("{flag} {}: {why}", shown(&options.url));
    if !options.cluster {
        return redis::Client::open(options.url.as_str())
            .map(Client::One)
            .map_err(|e| fail(scrubbed(e)));
    }
    if urls.is_empty() {
        return Err(fail("no node named".into()));
    }
    for one in &urls {
        redis::Client::open(*one).map_err(|e| fail(scrubbed(e)))?;
    }
    redis::cluster::ClusterClient::builder(urls.clone())
        .connection_timeout(options.timeout)
        .response_timeout(options.timeout)
        // A call's own deadline bounds it; past a failover the next call finds the new
        // master.
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .build()
        .map(Client::Cluster)
        .map_err(|e| fail(scrubbed(e)))
}

impl RedisBus {
    /// Checks the URL (a mistake there is a start-up error); connects in the background.
    /// Remote invalidations are sent to `remote`.
    pub fn start(
        options: RedisOptions,
        metrics: Arc<Metrics>,
        remote: mpsc::UnboundedSender<crate::bus::Heard>,
    ) -> Result<Arc<RedisBus>, String> {
        let client = open(&options)?;
        let origin = {
            use std::hash::{BuildHasher, Hash, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            std::time::SystemTime::now().hash(&mut h);
            std::process::id().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        let bus = Arc::new(RedisBus {
            client,
            conn: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            options,
            origin,
            up: AtomicBool::new(false),
            failed_at: std::sync::Mutex::new(None),
            unsent: Default::default(),
            held: Default::default(),
            metrics,
            lease: redis::Script::new(LEASE),
            release: redis::Script::new(RELEASE),
            changed: redis::Script::new(CHANGED),
            drop_tag: redis::Script::new(DROP_TAG),
            announce: redis::Script::new(ANNOUNCE),
            store: redis::Script::new(STORE),
            file: redis::Script::new(FILE),
            lock: redis::Script::new(LOCK),
            unlock: redis::Script::new(UNLOCK),
        });
        bus.metrics.redis_up.set(0);
        tokio::spawn(read_stream(Arc::downgrade(&bus), remote));
        Ok(bus)
    }

    /// `{<prefix><scope>}<rest>`: keys of one scope share a hash slot.
    fn key_in(&self, scope: &str, rest: &str) -> String {
        format!("{{{}{scope}}}{rest}", self.options.prefix)
    }

    /// A key in the stream's slot: `{<prefix>}<name>`, as before Redis Cluster support
    /// (a rolling upgrade's replicas hear each other), or `{bus}<name>` with an empty
    /// prefix (Redis ignores an empty hash tag, which would scatter the stream and its
    /// count over two slots).
    fn key(&self, name: &str) -> String {
        if self.options.prefix.is_empty() {
            format!("{{bus}}{name}")
        } else {
            self.key_in("", name)
        }
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
    async fn conn(&self) -> Option<Conn> {
        if let Some(c) = self.current() {
            return Some(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Some(c);
        }
        {
            let failed = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
            if failed.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return None;
            }
        }
        let timeout = self.options.timeout;
        let connect = self.client.connect(false, timeout, timeout);
        match tokio::time::timeout(self.options.timeout * 2, connect).await {
            Ok(Ok(c)) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((c.clone(), tokio::time::Instant::now()));
                Some(c)
            }
            _ => {
                *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(tokio::time::Instant::now());
                self.set_up(false);
                None
            }
        }
    }

    fn current(&self) -> Option<Conn> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(c, _)| c.clone())
    }

    /// After a call to a cluster failed on its connection or its deadline: the next call
    /// connects anew, from the nodes that answer. The cluster client does not always see
    /// a failover by itself: calls to a dead master's slots can time out without end. A
    /// connection younger than a second is kept (a slow Redis does not make every failing
    /// call reconnect).
    fn forget_cluster_connection(&self) {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((Conn::Cluster(_), since)) = &*conn {
            if since.elapsed() >= Duration::from_secs(1) {
                *conn = None;
            }
        }
    }

    /// A connection of its own (for a blocking read, which would hold up the shared
    /// one), within the deadline.
    pub(super) async fn dedicated(&self, read_timeout: Duration) -> Option<Conn> {
        let connect = self
            .client
            .connect(true, self.options.timeout, read_timeout);
        match tokio::time::timeout(self.options.timeout * 2, connect).await {
            Ok(Ok(c)) => Some(c),
            _ => None,
        }
    }

    /// Runs one call with the deadline; `None` (and Redis marked down) on any failure.
    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
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
                    self.forget_cluster_connection();
                }
                None
            }
            Err(_) => {
                tracing::debug!(what, "redis call timed out");
                self.set_up(false);
                self.forget_cluster_connection();
                None
            }
        }
    }

    /// The document persisted (APQ) under `hash` by any replica, if Redis has it.
    pub async fn document(&self, hash: &str) -> Option<String> {
        let key = self.key_in(&format!("apq:{hash}"), "");
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
        let key = self.key_in(&format!("apq:{hash}"), "");
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
