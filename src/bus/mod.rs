//! Stage ⑤ — how invalidations and cached values travel between replicas. One interface,
//! [`Bus`], with two implementations: in-process (the default: nothing travels, every
//! method is a no-op or a miss) and Redis ([`redis::RedisBus`], `--redis-url`). The
//! runtime and the cache talk to the bus; they never ask whether Redis is on.
//!
//! Input: local invalidations (published, after the second-level entries they name are
//! dropped) and cache misses (looked up in the second level, filled under a lock).
//! Output: invalidations from other replicas ([`Remote`]), delivered to the handler given
//! at start, and values other replicas fetched.

pub mod redis;

use crate::key::{CacheKey, Policy, Tag};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What another replica says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// These tags were invalidated.
    Tags(Vec<Tag>),
    /// Messages were lost (the replica was cut off longer than the stream keeps them, or
    /// the stream was reset): treat everything as changed.
    Everything,
    /// The replica that polls these entries found new values (stored in the second
    /// level): drop the local copies and re-run who read them.
    Changed(Vec<CacheKey>),
    /// A `@webhook` receiver of another replica accepted this delivery (its body): feed
    /// this replica's streams of that receiver.
    Delivery { name: String, body: String },
}

/// What another replica said, and the change (its span) it belongs to, when traced.
pub type Heard = (Remote, Option<opentelemetry::trace::SpanContext>);

/// Who does a piece of cluster-wide work (see [`Bus::lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Nobody to share it with (in-process, or Redis unreachable): do it, alone.
    Solo,
    /// This replica does it, under this generation (a fencing token: messages of an older
    /// holder are dropped).
    Held(u64),
    /// Another replica does it.
    Other,
}

/// A value another replica stored, and how old it is (or one just fetched, of age 0).
#[derive(Debug, Clone)]
pub struct Shared {
    pub value: Value,
    pub age: Duration,
    /// A shared cache may keep it (see [`crate::upstream::Answer::shareable`]).
    pub shareable: bool,
    /// For a later conditional request (a value from Redis has none).
    pub validators: crate::upstream::Validators,
    /// The upstream answered `304` to a conditional refresh: no value, the stale one stands.
    pub not_modified: bool,
    /// What the upstream's `Cache-Control` allows (a value from Redis was stored within it).
    pub freshness: crate::key::Freshness,
}

impl From<crate::upstream::Answer> for Shared {
    fn from(a: crate::upstream::Answer) -> Shared {
        Shared {
            value: a.value,
            age: Duration::ZERO,
            shareable: a.shareable,
            validators: a.validators,
            not_modified: a.not_modified,
            freshness: a.freshness,
        }
    }
}

/// The replicas' shared channel. Cheap to clone.
#[derive(Clone, Default)]
pub struct Bus {
    redis: Option<Arc<redis::RedisBus>>,
}

impl Bus {
    /// Nothing shared: one replica.
    pub fn local() -> Bus {
        Bus::default()
    }

    /// Shared through Redis; remote invalidations go to `on_remote`.
    pub fn redis(bus: Arc<redis::RedisBus>) -> Bus {
        Bus { redis: Some(bus) }
    }

    /// Tells the other replicas that `tags` changed, after dropping the second-level
    /// entries filed under them (so a replica that refetches on hearing it cannot find
    /// the old value there). Returns when done or when Redis did not answer in time.
    pub async fn invalidated(&self, tags: &[Tag]) {
        if let Some(r) = &self.redis {
            r.publish_invalidation(tags).await;
        }
    }

    /// A document another replica persisted (APQ) under `hash`; `None` in-process.
    pub async fn document(&self, hash: &str) -> Option<String> {
        match &self.redis {
            Some(r) => r.document(hash).await,
            None => None,
        }
    }

    /// Shares a persisted document with the other replicas, for `ttl`.
    pub async fn put_document(&self, hash: &str, document: &str, ttl: Duration) {
        if let Some(r) = &self.redis {
            r.put_document(hash, document, ttl).await;
        }
    }

    /// Hands a delivery the receiver `name` accepted here to the other replicas.
    pub async fn delivered(&self, name: &str, body: &str) {
        if let Some(r) = &self.redis {
            r.publish_delivery(name, body).await;
        }
    }

    /// Takes `cost` requests from `client`'s budget shared by every replica (see
    /// [`redis::RedisBus::take`]); `None` in-process, and while Redis does not answer: the
    /// caller keeps a budget of its own then.
    pub async fn take(
        &self,
        client: &str,
        cost: u32,
        interval: Duration,
        burst: Duration,
    ) -> Option<Result<(), Duration>> {
        match &self.redis {
            Some(r) => r.take(client, cost, interval, burst).await,
            None => None,
        }
    }

    /// Who does the cluster-wide work `name` (an upstream socket, a poller) for the next
    /// `ttl`: this replica takes the lease when it is free and renews it while it holds
    /// it. In-process, and while Redis does not answer, [`Lease::Solo`]: every replica
    /// does its own work rather than none doing it.
    pub async fn lease(&self, name: &str, ttl: Duration) -> Lease {
        match &self.redis {
            Some(r) => match r.lease(name, ttl).await {
                Some(0) => Lease::Other,
                Some(generation) => Lease::Held(generation),
                None => Lease::Solo,
            },
            None => Lease::Solo,
        }
    }

    /// Republishes an upstream socket's `message`, received by the holder of the lease
    /// `name` under `generation`, to every replica following it.
    pub async fn publish_event(&self, name: &str, generation: u64, message: &str) {
        if let Some(r) = &self.redis {
            r.publish_event(name, generation, message).await;
        }
    }

    /// The messages the holder of `name` republishes, from now on; `None` in-process or
    /// while Redis does not answer.
    pub async fn events(&self, name: &str) -> Option<redis::Events> {
        match &self.redis {
            Some(r) => r.events(name).await,
            None => None,
        }
    }

    /// Gives the lease `name` up, if this replica holds it.
    pub async fn release(&self, name: &str) {
        if let Some(r) = &self.redis {
            r.release(name).await;
        }
    }

    /// A new value of `key`, found by this replica (a poll): stored in the second level
    /// and announced, so every replica's subscribers get it without fetching it.
    /// `value: None` announces a new value no shared cache may keep: the others fetch
    /// their own.
    pub async fn changed(&self, key: CacheKey, value: Option<&Value>, policy: &Policy) {
        if let Some(r) = &self.redis {
            if policy.shared {
                r.changed(key, value, policy).await;
            }
        }
    }

    /// Looks up, and if needed fills, the second level for `key`: another replica's
    /// value when there is one (or when one arrives while another replica fetches it),
    /// else `fetch`'s, stored for the others. Only shared (`PUBLIC`) entries take part.
    pub async fn load<F, Fut>(
        &self,
        key: CacheKey,
        policy: Option<&Policy>,
        fetch: F,
    ) -> Result<Shared, crate::upstream::UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<
            Output = Result<crate::upstream::Answer, crate::upstream::UpstreamError>,
        >,
    {
        match (&self.redis, policy) {
            (Some(r), Some(p)) if p.shared && p.stores() => r.load(key, p, fetch).await,
            _ => fetch().await.map(Shared::from),
        }
    }
}
