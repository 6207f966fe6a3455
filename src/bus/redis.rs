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

/// The format of what this version writes to Redis; other versions' messages are skipped.
const FORMAT: &str = "1";

/// Invalidations made while Redis was down, published when it is back: the tags, up to
/// [`Unsent::MAX`]; past that, only that everything changed.
#[derive(Default)]
struct Unsent {
    tags: std::collections::BTreeSet<Tag>,
    everything: bool,
}

impl Unsent {
    const MAX: usize = 10_000;

    fn is_empty(&self) -> bool {
        self.tags.is_empty() && !self.everything
    }

    fn add(&mut self, tags: &[Tag]) {
        if self.everything {
            return;
        }
        self.tags.extend(tags.iter().cloned());
        if self.tags.len() > Self::MAX {
            self.tags.clear();
            self.everything = true;
        }
    }
}

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
        remote: mpsc::UnboundedSender<Remote>,
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

    /// Publishes `tags` (dropping their second-level entries first); if Redis does not
    /// take it, the tags wait in [`Unsent`] for the reconnect.
    pub async fn publish_invalidation(&self, tags: &[Tag]) {
        self.flush_unsent().await;
        if !self.publish(tags, "inv").await {
            self.unsent().add(tags);
        }
    }

    /// Counts a message this replica got onto a stream.
    fn published(&self, sent: bool, kind: &str) {
        if sent {
            self.metrics
                .bus_messages
                .with_label_values(&["published", kind])
                .inc();
        }
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, Unsent> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes what could not be published while Redis was down: the tags, or — when
    /// there were too many to remember — that everything changed.
    async fn flush_unsent(&self) {
        let (tags, everything) = {
            let mut u = self.unsent();
            if u.tags.is_empty() && !u.everything {
                return;
            }
            (
                std::mem::take(&mut u.tags),
                std::mem::take(&mut u.everything),
            )
        };
        let tags: Vec<Tag> = tags.into_iter().collect();
        let sent = if everything {
            self.publish(&[], "all").await
        } else {
            self.publish(&tags, "inv").await
        };
        if !sent {
            let mut u = self.unsent();
            u.add(&tags);
            u.everything |= everything;
        }
    }

    async fn publish(&self, tags: &[Tag], kind: &'static str) -> bool {
        let mut inv = self.invalidate.prepare_invoke();
        inv.key(self.key("gen"))
            .key(self.key("inv"))
            .key(self.key("all"));
        for t in tags {
            inv.key(self.key(&format!("t:{t}")));
        }
        let names: Vec<&str> = tags.iter().map(|t| &*t.0).collect();
        inv.arg(10_000)
            .arg(&self.origin)
            .arg(json!(names).to_string())
            .arg(STREAM_TTL_MS)
            .arg(FORMAT)
            .arg(kind);
        let sent: Option<String> = self
            .call("publish invalidation", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await;
        self.published(
            sent.is_some(),
            if kind == "all" {
                "everything"
            } else {
                "invalidation"
            },
        );
        sent.is_some()
    }

    /// The invalidation generation and the "everything changed" count now (`None` when
    /// Redis does not answer).
    async fn generation(&self) -> Option<(String, String)> {
        let keys = [self.key("gen"), self.key("all")];
        self.call("read generation", |mut c| async move {
            let g: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
            let at = |i: usize| g.get(i).cloned().flatten().unwrap_or_else(|| "0".into());
            Ok((at(0), at(1)))
        })
        .await
    }

    /// The second-level entry for `key`, if there is one younger than `policy`'s
    /// `max_age` (what a waiting fill takes as the holder's value).
    async fn fresh(&self, key: &CacheKey, policy: &Policy) -> Option<Shared> {
        match self.read(key).await {
            Some((_, Some(hit))) if hit.age < policy.max_age => Some(hit),
            _ => None,
        }
    }

    /// In one round trip: the generation pair ([`RedisBus::generation`]) and the
    /// second-level entry for `key` (`None` when there is none, or it predates an
    /// "everything changed"); `None` when Redis did not answer.
    async fn read(&self, key: &CacheKey) -> Option<((String, String), Option<Shared>)> {
        let keys = [self.key("gen"), self.key("all"), self.entry_key(key)];
        let raw: Option<Generations> = self
            .call("second-level lookup", |mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await
            })
            .await;
        let (generation, all, raw) = raw?;
        let (generation, all) = (
            generation.unwrap_or_else(|| "0".into()),
            all.unwrap_or_else(|| "0".into()),
        );
        let entry = raw.and_then(|bytes| {
            let parsed = decode_entry(&bytes);
            if parsed.is_none() {
                self.metrics.bus_skipped.with_label_values(&["entry"]).inc();
            }
            parsed
                .filter(|(_, stored_all)| *stored_all == all)
                .map(|(shared, _)| shared)
        });
        Some(((generation, all), entry))
    }

    pub async fn load<F, Fut>(
        &self,
        key: CacheKey,
        policy: &Policy,
        fetch: F,
    ) -> Result<Shared, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<crate::upstream::Answer, UpstreamError>>,
    {
        let outcome = |o: &str| self.metrics.l2_lookups.with_label_values(&[o]).inc();
        let fetched = |r: Result<crate::upstream::Answer, UpstreamError>| r.map(Shared::from);
        // Invalidations not yet published: Redis may still hold what they dropped here.
        if !self.unsent().is_empty() {
            outcome("error");
            return fetched(fetch().await);
        }
        // The generation with the entry: a value fetched after this is stored only if no
        // invalidation came in between.
        let generation = match self.read(&key).await {
            // Only a fresh value: a stale one is being refreshed, by this fetch.
            Some((_, Some(hit))) if hit.age < policy.max_age => {
                outcome("hit");
                return Ok(hit);
            }
            Some((generation, _)) => generation,
            None => {
                outcome("error");
                return fetched(fetch().await);
            }
        };
        let lock = self.key(&format!("f:{}", key.hex()));
        let token = format!("{}:{}", self.origin, fastrand::u64(..));
        let wait = self.options.fill_wait;
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let won: Option<Option<String>> = {
            let (lock, token) = (lock.clone(), token.clone());
            self.call("fill lock", |mut c| async move {
                redis::cmd("SET")
                    .arg(lock)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(wait_ms)
                    .query_async(&mut c)
                    .await
            })
            .await
        };
        match won {
            Some(Some(_)) => {
                outcome("miss");
                let result = fetch().await;
                if let Ok(answer) = &result {
                    // A 304 has no value to share.
                    if answer.shareable && !answer.not_modified {
                        self.put(&key, &answer.value, policy, &generation).await;
                    }
                }
                let mut unlock = self.unlock.prepare_invoke();
                unlock.key(lock).arg(token);
                let _: Option<i64> = self
                    .call("fill unlock", |mut c| async move {
                        unlock.invoke_async(&mut c).await
                    })
                    .await;
                fetched(result)
            }
            Some(None) => {
                // Another replica is fetching it: wait for its value, within bounds.
                let deadline = tokio::time::Instant::now() + wait;
                let mut pause = Duration::from_millis(5);
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                    if let Some(hit) = self.fresh(&key, policy).await {
                        outcome("hit");
                        return Ok(hit);
                    }
                    let held: Option<i64> = {
                        let lock = lock.clone();
                        self.call("fill lock check", |mut c| async move {
                            redis::cmd("EXISTS").arg(lock).query_async(&mut c).await
                        })
                        .await
                    };
                    if held != Some(1) {
                        // Released: its holder may have stored the value between the
                        // read above and this check (it stores, then unlocks), so look
                        // once more. No value: it failed, was invalidated, or expired
                        // with its holder; fetch ourselves.
                        if let Some(hit) = self.fresh(&key, policy).await {
                            outcome("hit");
                            return Ok(hit);
                        }
                        break;
                    }
                }
                outcome("miss");
                fetched(fetch().await)
            }
            None => {
                outcome("error");
                fetched(fetch().await)
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

    /// Takes or renews the lease `name`: its generation while this replica holds it, 0
    /// while another does, `None` when Redis does not answer.
    pub async fn lease(&self, name: &str, ttl: Duration) -> Option<u64> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut lease = self.lease.prepare_invoke();
        lease
            .key(self.key(&format!("lease:{name}")))
            .key(self.key(&format!("leasegen:{name}")))
            .arg(&self.origin)
            .arg(ttl_ms);
        let generation: u64 = self
            .call(
                "lease",
                |mut c| async move { lease.invoke_async(&mut c).await },
            )
            .await?;
        let held = generation > 0;
        let taken = held && !self.leases().contains(name);
        if held {
            self.leases().insert(name.to_string());
        } else {
            self.leases().remove(name);
        }
        if taken {
            let event = if generation > 1 {
                "takeover"
            } else {
                "acquired"
            };
            self.metrics.leases.with_label_values(&[event]).inc();
        }
        Some(generation)
    }

    /// Republishes one upstream socket message; one over [`MAX_EVENT`] bytes is not
    /// copied into Redis: the followers get a gap marker (an empty message) and refetch.
    pub async fn publish_event(&self, name: &str, generation: u64, message: &str) {
        let message = if message.len() > MAX_EVENT {
            ""
        } else {
            message
        };
        let stream = self.key(&format!("ev:{name}"));
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(100)
            .arg("*")
            .arg("v")
            .arg(FORMAT)
            .arg("g")
            .arg(generation)
            .arg("m")
            .arg(message)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&stream)
            .arg(STREAM_TTL_MS)
            .ignore();
        let sent: Option<()> = self
            .call("publish event", |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await;
        self.published(sent.is_some(), "event");
    }

    /// A reader of the events of `name`, from the stream's end now.
    pub async fn events(self: &Arc<Self>, name: &str) -> Option<Events> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.options.timeout)
            .set_response_timeout(Duration::from_secs(5));
        let mut conn = tokio::time::timeout(
            self.options.timeout * 2,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .ok()?
        .ok()?;
        let stream = self.key(&format!("ev:{name}"));
        let newest: Option<String> = {
            let read: redis::RedisResult<redis::streams::StreamRangeReply> =
                redis::cmd("XREVRANGE")
                    .arg(&stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await;
            read.ok().map(|r| {
                r.ids
                    .first()
                    .map(|e| e.id.clone())
                    .unwrap_or_else(|| "0-0".into())
            })
        };
        Some(Events {
            bus: self.clone(),
            conn,
            stream,
            from: newest?,
        })
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn release(&self, name: &str) {
        if !self.leases().remove(name) {
            return;
        }
        let mut release = self.release.prepare_invoke();
        release
            .key(self.key(&format!("lease:{name}")))
            .arg(&self.origin);
        let _: Option<i64> = self
            .call("lease release", |mut c| async move {
                release.invoke_async(&mut c).await
            })
            .await;
    }

    /// A poll found a new value of `key` (`None`: one no shared cache may keep). In one
    /// step: the generation moves (a fill of `key` running elsewhere, which may have
    /// fetched the older value, is then not stored), the value replaces the stored one (or
    /// the stored one is dropped), and the change is announced.
    pub async fn changed(&self, key: CacheKey, value: Option<&Value>, policy: &Policy) {
        let Some((_, all)) = self.generation().await else {
            return;
        };
        let ttl = u64::try_from((policy.max_age + policy.swr).as_millis()).unwrap_or(u64::MAX);
        let entry = value
            .filter(|_| ttl > 0)
            .map(|value| {
                json!({"v": FORMAT, "stored": now_ms(), "all": all, "value": value}).to_string()
            })
            .unwrap_or_default();
        let name = self.entry_key(&key);
        let mut changed = self.changed.prepare_invoke();
        changed
            .key(self.key("gen"))
            .key(name.clone())
            .key(self.key("inv"));
        for t in &policy.tags {
            changed.key(self.key(&format!("t:{t}")));
        }
        changed
            .arg(entry)
            .arg(ttl.max(1))
            .arg(name)
            .arg(FORMAT)
            .arg(&self.origin)
            .arg(json!([key.hex()]).to_string())
            .arg(STREAM_TTL_MS)
            .arg(now_ms());
        let sent: Option<String> = self
            .call("publish change", |mut c| async move {
                changed.invoke_async(&mut c).await
            })
            .await;
        self.published(sent.is_some(), "changed");
    }

    async fn put(
        &self,
        key: &CacheKey,
        value: &Value,
        policy: &Policy,
        generation: &(String, String),
    ) {
        let ttl = u64::try_from((policy.max_age + policy.swr).as_millis()).unwrap_or(u64::MAX);
        if ttl == 0 {
            return;
        }
        let entry = json!({
            "v": FORMAT,
            "stored": now_ms(),
            "all": generation.1,
            "value": value,
        })
        .to_string();
        let name = self.entry_key(key);
        let mut store = self.store.prepare_invoke();
        store.key(name.clone()).key(self.key("gen"));
        for t in &policy.tags {
            store.key(self.key(&format!("t:{t}")));
        }
        store
            .arg(entry)
            .arg(ttl)
            .arg(&generation.0)
            .arg(name)
            .arg(now_ms());
        let _: Option<i64> = self
            .call("second-level store", |mut c| async move {
                store.invoke_async(&mut c).await
            })
            .await;
    }
}

/// `MGET gen all entry`: the generation, the "everything changed" count, the entry.
type Generations = (Option<String>, Option<String>, Option<Vec<u8>>);

/// A second-level entry as stored, if it is one of ours, with the "everything changed"
/// count it was fetched under.
fn decode_entry(bytes: &[u8]) -> Option<(Shared, String)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v.get("v")?.as_str()? != FORMAT {
        return None;
    }
    let stored = v.get("stored")?.as_u64()?;
    let all = v.get("all")?.as_str()?.to_string();
    let value = v.get("value")?.clone();
    let shared = Shared {
        value,
        age: Duration::from_millis(now_ms().saturating_sub(stored)),
        shareable: true,
        validators: Default::default(),
        not_modified: false,
    };
    Some((shared, all))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The largest upstream socket message copied into Redis for the followers (each event
/// stream keeps about 100): beyond it they are told to refetch instead.
const MAX_EVENT: usize = 1 << 20;

/// How long the invalidation stream lives after its last entry.
const STREAM_TTL_MS: u64 = 24 * 3600 * 1000;

/// KEYS: gen, stream, all, tag sets…; ARGV: maxlen, origin, tags JSON, stream TTL, format,
/// kind (`inv`, or `all` when everything changed, which also drops the second level).
/// Drops the second-level entries of every tag, bumps the generation, then appends the
/// message: a replica that hears it cannot find the old value any more.
const INVALIDATE: &str = r#"
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 604800000)
for i = 4, #KEYS do
  local members = redis.call('ZRANGE', KEYS[i], 0, -1)
  for _, k in ipairs(members) do redis.call('DEL', k) end
  redis.call('DEL', KEYS[i])
end
if ARGV[6] == 'all' then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 604800000)
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[5], 'o', ARGV[2], 'k', ARGV[6], 'tags', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return id
"#;

/// The one way STORE and CHANGED write a second-level entry: the entry, expiring after its
/// TTL, and its name in the set of each tag from `KEYS[first]` on. A tag's set is sorted
/// by when each entry expires, and trimmed of expired ones at every store: a hot tag does
/// not collect the names of long-gone entries.
const PUT: &str = r#"
local function put(entry, json, ttl, name, now, first)
  redis.call('SET', entry, json, 'PX', ttl)
  local expires = tonumber(now) + tonumber(ttl)
  for i = first, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    redis.call('ZADD', KEYS[i], expires, name)
    if redis.call('PTTL', KEYS[i]) < tonumber(ttl) then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
"#;

/// KEYS: entry, gen, tag sets…; ARGV: entry JSON, TTL ms, generation at fetch, entry name,
/// now (ms).
/// Stores only if no invalidation happened since the fetch began.
const STORE: &str = r#"
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[3] then return 0 end
put(KEYS[1], ARGV[1], ARGV[2], ARGV[4], ARGV[5], 3)
return 1
"#;

/// KEYS: lease, its generation counter; ARGV: holder, TTL ms. Takes a free lease (with
/// the next generation) or renews one this holder has; its generation, or 0 when another
/// replica holds it. The lease's value is `<holder>:<generation>`.
const LEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  local g = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], 604800000)
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. g, 'PX', ARGV[2])
  return g
end
local holder, g = string.match(v, '^(.*):(%d+)$')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], 604800000)
  return tonumber(g)
end
return 0
"#;

/// KEYS: lease; ARGV: holder. Deletes the lease if this holder has it.
const RELEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS: gen, entry, stream, tag sets…; ARGV: entry JSON (empty: drop it), TTL ms, entry
/// name, format, origin, keys JSON, stream TTL, now (ms). See [`RedisBus::changed`].
const CHANGED: &str = r#"
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 604800000)
if ARGV[1] ~= '' then
  put(KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[8], 4)
else
  redis.call('DEL', KEYS[2])
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'v', ARGV[4], 'o', ARGV[5], 'k', 'key', 'keys', ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
return id
"#;

/// KEYS: lock; ARGV: token. Compare-and-delete.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

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

/// Reads the invalidation stream for as long as the bus lives, from the last id seen.
async fn read_stream(bus: std::sync::Weak<RedisBus>, remote: mpsc::UnboundedSender<Remote>) {
    // The last entry read, and how many entries the stream had up to it (its position).
    let mut last: Option<String> = None;
    let mut position: u64 = 0;
    let mut backoff = Duration::from_millis(100);
    // Whether this replica ran without Redis before it first reached it: what it cached
    // meanwhile may have missed other replicas' invalidations.
    let mut degraded_start = false;
    loop {
        let Some(this) = bus.upgrade() else { return };
        let stream = this.key("inv");
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(this.options.timeout)
            .set_response_timeout(Duration::from_secs(5));
        let connected = tokio::time::timeout(
            this.options.timeout * 2,
            this.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let mut conn = match connected {
            Ok(Ok(c)) => c,
            _ => {
                this.set_up(false);
                degraded_start |= last.is_none();
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Where to read from, and whether anything was lost while we were away.
        let exists: redis::RedisResult<i64> = redis::cmd("EXISTS")
            .arg(&stream)
            .query_async(&mut conn)
            .await;
        let info: redis::RedisResult<Option<redis::Value>> = match exists {
            Ok(0) => Ok(None),
            Ok(_) => redis::cmd("XINFO")
                .arg("STREAM")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .map(Some),
            Err(e) => Err(e),
        };
        // The stream's newest id, how many entries were ever added, how many are left.
        let (newest, added, length) = match &info {
            Ok(Some(v)) => {
                let number = |name| info_field(v, name).and_then(|n| n.parse::<u64>().ok());
                (
                    info_field(v, "last-generated-id").unwrap_or_else(|| "0-0".into()),
                    // Redis 7 and later; without it losses cannot be told, and are not assumed.
                    number("entries-added"),
                    number("length").unwrap_or(0),
                )
            }
            // No stream (never written, expired, or a new Redis): nothing in it.
            Ok(None) => ("0-0".into(), Some(0), 0),
            Err(e) => {
                tracing::debug!(error = %e, "redis stream position unknown");
                this.set_up(false);
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        this.set_up(true);
        backoff = Duration::from_millis(100);
        // What this replica could not say while Redis was away.
        this.flush_unsent().await;
        // Entries are trimmed oldest first: if more were deleted than we had read up to,
        // some we never read are gone; fewer ever added than we read means a new stream.
        let lost = match (&last, added) {
            (Some(_), Some(added)) => added < position || added.saturating_sub(length) > position,
            (None, _) => degraded_start,
            (Some(_), None) => false,
        };
        let added = added.unwrap_or(position);
        if last.is_none() || lost {
            if lost {
                tracing::warn!("invalidations were lost while cut off from redis: dropping every local entry and re-running every live query");
                this.metrics
                    .bus_messages
                    .with_label_values(&["received", "everything"])
                    .inc();
                if remote.send(Remote::Everything).is_err() {
                    return;
                }
            }
            last = Some(newest.clone());
            position = added;
        }
        // Read until the connection fails.
        loop {
            // Retried every read (at most a second apart) until Redis takes it.
            this.flush_unsent().await;
            let from = last.clone().unwrap_or_else(|| "0-0".into());
            let opts = redis::streams::StreamReadOptions::default()
                .block(1_000)
                .count(256);
            let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> = {
                use redis::AsyncCommands;
                conn.xread_options(&[&stream], &[&from], &opts).await
            };
            let reply = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "redis stream read failed");
                    this.set_up(false);
                    tokio::time::sleep(backoff).await;
                    break;
                }
            };
            this.set_up(true);
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    last = Some(entry.id.clone());
                    position += 1;
                    match decode_message(&entry.map) {
                        Some((origin, _)) if origin == this.origin => {}
                        Some((_, said)) => {
                            let label = match said {
                                Remote::Tags(_) => "invalidation",
                                Remote::Everything => "everything",
                                Remote::Changed(_) => "changed",
                            };
                            this.metrics
                                .bus_messages
                                .with_label_values(&["received", label])
                                .inc();
                            if remote.send(said).is_err() {
                                return;
                            }
                        }
                        None => {
                            this.metrics
                                .bus_skipped
                                .with_label_values(&["invalidation"])
                                .inc();
                            tracing::debug!(id = entry.id, "skipped a malformed or unknown-format message on the invalidation stream");
                        }
                    }
                }
            }
        }
    }
}

/// An invalidation message's origin and tags, if it is one in our format.
fn decode_message(
    map: &std::collections::HashMap<String, redis::Value>,
) -> Option<(String, Remote)> {
    let field = |name: &str| {
        map.get(name)
            .and_then(|v| redis::from_redis_value::<String>(v).ok())
    };
    if field("v")? != FORMAT {
        return None;
    }
    let origin = field("o")?;
    match field("k")?.as_str() {
        "inv" => {
            let tags: Vec<String> = serde_json::from_str(&field("tags")?).ok()?;
            let tags = tags.iter().map(|t| Tag::from(t.as_str())).collect();
            Some((origin, Remote::Tags(tags)))
        }
        "all" => Some((origin, Remote::Everything)),
        "key" => {
            let keys: Vec<String> = serde_json::from_str(&field("keys")?).ok()?;
            let keys = keys
                .iter()
                .map(|k| CacheKey::from_hex(k))
                .collect::<Option<Vec<_>>>()?;
            Some((origin, Remote::Changed(keys)))
        }
        _ => None,
    }
}

/// The messages an upstream socket's holder republishes, read by a replica that follows.
pub struct Events {
    bus: Arc<RedisBus>,
    conn: redis::aio::MultiplexedConnection,
    stream: String,
    from: String,
}

impl Events {
    /// The next messages (waiting up to a second): each with the generation of the
    /// holder that sent it. `Err` when Redis did not answer.
    pub async fn next(&mut self) -> Result<Vec<(u64, Option<Arc<Value>>)>, ()> {
        use redis::AsyncCommands;
        let opts = redis::streams::StreamReadOptions::default()
            .block(1_000)
            .count(32);
        let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> = self
            .conn
            .xread_options(&[&self.stream], &[&self.from], &opts)
            .await;
        let reply = read.map_err(|e| {
            tracing::debug!(error = %e, "redis event stream read failed");
        })?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                self.from = entry.id.clone();
                let field = |name: &str| {
                    entry
                        .map
                        .get(name)
                        .and_then(|v| redis::from_redis_value::<String>(v).ok())
                };
                let decoded = (field("v").as_deref() == Some(FORMAT))
                    .then(|| {
                        let generation = field("g")?.parse::<u64>().ok()?;
                        let message = field("m")?;
                        if message.is_empty() {
                            return Some((generation, None));
                        }
                        let message = serde_json::from_str::<Value>(&message).ok()?;
                        Some((generation, Some(Arc::new(message))))
                    })
                    .flatten();
                match decoded {
                    Some(m) => {
                        self.bus
                            .metrics
                            .bus_messages
                            .with_label_values(&["received", "event"])
                            .inc();
                        out.push(m);
                    }
                    None => self
                        .bus
                        .metrics
                        .bus_skipped
                        .with_label_values(&["event"])
                        .inc(),
                }
            }
        }
        Ok(out)
    }
}
