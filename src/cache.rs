//! Stage ⑤ — the shared cache in front of every upstream call.
//!
//! Input: a [`CacheKey`] (the upstream request, plus the caller's credentials for
//! `PRIVATE` entries), an optional [`Policy`] (max age, stale-while-revalidate, tags) and
//! the fetch to run on a miss. Output: the value, shared by `Arc`.
//!
//! - Storage is [moka](https://docs.rs/moka): concurrent, bounded by a byte budget (each
//!   entry weighs the heap bytes of its parsed value, see [`crate::weight`]), each entry expiring at `maxAge + swr`.
//! - Single flight: concurrent identical misses join one fetch, which runs in its own task
//!   so a client that goes away does not cancel it for the others (pingora's lookup
//!   coalescing). Uncached fields get the same coalescing.
//! - Tags index the live entries; [`Cache::invalidate`] marks every tagged entry dead and
//!   records the invalidation epoch of each tag (in a fixed table of slots by tag hash, so
//!   the bookkeeping does not grow with the tags ever invalidated). Every store (a flight's, a batch item's, a
//!   poll's, a patch) carries the epoch its fetch started at and is refused when one of its
//!   tags was invalidated since, so a value fetched before an invalidation is never stored
//!   after it. Errors are never stored.

use crate::upstream::UpstreamError;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
// tokio's clock, so paused-time tests reach freshness decisions.
use tokio::time::Instant;

/// A stale entry a refresh asks the upstream about (`If-None-Match` and so on).
struct Revalidate {
    /// The stale entry is `no-cache` (see [`Policy::revalidate`]).
    revalidates: bool,
    validators: crate::upstream::Validators,
    stamp: Stamp,
    value: Arc<Value>,
}

impl Revalidate {
    /// The conditional refresh of `e`, when it has validators to ask with.
    fn of(e: &Arc<Entry>) -> Option<Revalidate> {
        (!e.validators.is_empty()).then(|| Revalidate {
            revalidates: e.policy.revalidate,
            validators: e.validators.clone(),
            stamp: Stamp(Arc::downgrade(e)),
            value: e.value.clone(),
        })
    }
}

/// A fetched value, as it is stored.
pub struct Fetch {
    pub value: Arc<Value>,
    pub validators: crate::upstream::Validators,
}

pub use crate::key::{CacheKey, Policy, Tag};

#[derive(Debug)]
pub struct Entry {
    value: Arc<Value>,
    stored: Instant,
    policy: Policy,
    size: usize,
    /// The upstream's `ETag`/`Last-Modified` for this value: a poll asks whether it changed.
    validators: crate::upstream::Validators,
    /// Set by an invalidation; a dead entry is a miss until moka drops it.
    dead: AtomicBool,
}

type Fetched = Result<(Arc<Value>, Option<Stamp>), UpstreamError>;
type SharedFetch = Shared<BoxFuture<'static, Fetched>>;

/// Names the stored entry a value came from, so a whole response built from entries can
/// later be checked still current: the entry is alive, not invalidated, and fresh.
#[derive(Clone, Debug)]
pub struct Stamp(Weak<Entry>);

impl Stamp {
    /// Is this the stamp of `entry`?
    fn is(&self, entry: &Arc<Entry>) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(entry))
    }

    pub fn is_current(&self) -> bool {
        self.0.upgrade().is_some_and(|e| {
            !e.dead.load(Ordering::Acquire) && e.stored.elapsed() < e.policy.max_age
        })
    }
}

/// What [`Cache::load`] answers.
#[derive(Debug)]
pub struct Loaded {
    pub value: Result<Arc<Value>, UpstreamError>,
    pub outcome: Outcome,
    /// With [`Outcome::StaleIfError`]: why the refresh failed.
    pub failed: Option<UpstreamError>,
    /// A miss that joined a fetch another request had started.
    pub joined: bool,
    /// The entry the value is stored in, when it is (not for stale or unstored values).
    pub stamp: Option<Stamp>,
}

struct Flight {
    id: u64,
    shared: SharedFetch,
    tags: Vec<Tag>,
}

#[derive(Default)]
struct State {
    flights: HashMap<CacheKey, Flight>,
    /// tag → the live entries that carry it.
    tags: HashMap<Tag, HashMap<CacheKey, Weak<Entry>>>,
    /// The epochs of the last invalidations, by tag hash: a value fetched outside a flight
    /// (a batch item, a poll, a patch) can tell whether its tags were invalidated while it
    /// was on its way. Fixed in size, so neither memory nor the cost of a store or an
    /// invalidation grows with how many distinct tags were ever invalidated.
    invalidated: Invalidations,
}

/// The last invalidation epoch of each of [`Invalidations::SLOTS`] slots, a tag going to
/// the slot its (randomly keyed) hash names. Tags sharing a slot share an epoch, so a store
/// may be refused because another tag was invalidated meanwhile — a refetch later, never a
/// stale value kept. The key is random per process, so a client cannot aim tags at
/// another's slot.
struct Invalidations {
    epochs: Box<[u64]>,
    hasher: std::collections::hash_map::RandomState,
    /// The epoch at which everything was invalidated last.
    everything: u64,
}

impl Default for Invalidations {
    fn default() -> Self {
        Invalidations {
            epochs: vec![0; Self::SLOTS].into_boxed_slice(),
            hasher: Default::default(),
            everything: 0,
        }
    }
}

impl Invalidations {
    /// 64 Ki slots (512 KiB): with a fetch in flight for a few milliseconds and thousands
    /// of invalidations a second, a needless refusal stays rare.
    const SLOTS: usize = 1 << 16;

    fn slot(&self, tag: &Tag) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(&*tag.0) as usize) % Self::SLOTS
    }

    fn record(&mut self, tag: &Tag, epoch: u64) {
        let slot = self.slot(tag);
        self.epochs[slot] = self.epochs[slot].max(epoch);
    }

    fn since(&self, tag: &Tag, epoch: u64) -> bool {
        self.everything > epoch || self.epochs[self.slot(tag)] > epoch
    }

    /// One entry, rather than a tag, was replaced elsewhere (see [`Cache::forget`]).
    fn key_slot(&self, key: &CacheKey) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(key.bytes()) as usize) % Self::SLOTS
    }

    fn record_key(&mut self, key: &CacheKey, epoch: u64) {
        let slot = self.key_slot(key);
        self.epochs[slot] = self.epochs[slot].max(epoch);
    }

    fn key_since(&self, key: &CacheKey, epoch: u64) -> bool {
        self.epochs[self.key_slot(key)] > epoch
    }
}

impl State {
    /// Was any of `tags`, or the entry `key` itself, (perhaps) invalidated after `epoch`?
    fn invalidated_since(&self, key: &CacheKey, tags: &[Tag], epoch: u64) -> bool {
        self.invalidated.key_since(key, epoch)
            || tags.iter().any(|t| self.invalidated.since(t, epoch))
    }
}

struct Inner {
    entries: moka::sync::Cache<CacheKey, Arc<Entry>>,
    /// `--cache-size-mb`, in bytes: an entry heavier than all of it is never stored.
    budget: u64,
    /// Entries moka dropped to stay within the byte budget.
    evictions: Arc<AtomicU64>,
    state: Arc<Mutex<State>>,
    next_flight: AtomicU64,
    /// Bumped (under the state lock) by every invalidation; see [`Cache::epoch`].
    epoch: AtomicU64,
    /// Where misses look before the upstream, and fetched values go for other replicas.
    bus: crate::bus::Bus,
    /// Bumped (under the state lock) each time a flight retires, which is after its value
    /// was stored: a load that missed, then finds no flight, knows by this whether one
    /// finished in between (and its value is now stored) or whether to start one.
    retired: AtomicU64,
}

/// How a [`Cache::load`] was answered; the metrics issue counts these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Stale,
    Miss,
    /// Refreshing failed and the last value was served in its `staleIfError` time.
    StaleIfError,
}

/// The shared cache. Cheap to clone; all clones are the same cache.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Expiry;

impl moka::Expiry<CacheKey, Arc<Entry>> for Expiry {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        e: &Arc<Entry>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        // A value from another replica arrives with some of its life spent.
        Some(e.policy.lifetime().saturating_sub(e.stored.elapsed()))
    }

    /// A replaced entry (a refetch, a patch, a `304` renewal) lives as long as its own
    /// value, not as long as the one it replaced.
    fn expire_after_update(
        &self,
        key: &CacheKey,
        e: &Arc<Entry>,
        at: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, e, at)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state holds only maps; a panic elsewhere cannot leave them half-updated in a
    // way that matters more than losing the cache, so a poisoned lock is used as is.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    /// A cache holding at most about `budget_bytes` of parsed values (see
    /// [`crate::weight`]).
    pub fn new(budget_bytes: u64) -> Self {
        Cache::with_bus(budget_bytes, crate::bus::Bus::local())
    }

    /// The same, sharing values with other replicas over `bus`.
    pub fn with_bus(budget_bytes: u64, bus: crate::bus::Bus) -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let index = state.clone();
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = evictions.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(budget_bytes)
            .weigher(|_, e: &Arc<Entry>| u32::try_from(e.size + 64).unwrap_or(u32::MAX))
            .expire_after(Expiry)
            .eviction_listener(
                move |key: Arc<CacheKey>,
                      e: Arc<Entry>,
                      cause: moka::notification::RemovalCause| {
                    if cause == moka::notification::RemovalCause::Size {
                        evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    // Called without our lock held (we never call moka under it).
                    let mut st = lock(&index);
                    for tag in &e.policy.tags {
                        if let Some(keys) = st.tags.get_mut(tag) {
                            if keys
                                .get(&*key)
                                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&e)))
                            {
                                keys.remove(&*key);
                            }
                            if keys.is_empty() {
                                st.tags.remove(tag);
                            }
                        }
                    }
                },
            )
            .build();
        Cache {
            inner: Arc::new(Inner {
                budget: budget_bytes,
                entries,
                evictions,
                state,
                next_flight: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                bus,
                retired: AtomicU64::new(0),
            }),
        }
    }

    /// The value for `key`: from the cache when fresh (or stale within `swr`, which also
    /// starts one background refresh), else from `fetch`, joined with any identical fetch
    /// already running. `policy: None` never stores, but still coalesces.
    pub async fn load<F, Fut>(&self, key: CacheKey, policy: Option<Policy>, fetch: F) -> Loaded
    where
        F: FnOnce(crate::upstream::Validators) -> Fut + Send + 'static,
        Fut: Future<Output = Result<crate::upstream::Answer, UpstreamError>> + Send + 'static,
    {
        let mut seen = self.inner.retired.load(Ordering::Acquire);
        // A value to serve should the fetch fail (`staleIfError`), even an invalidated one.
        let mut fallback: Option<Arc<Value>> = None;
        let mut joined = false;
        let shared = loop {
            if policy.as_ref().is_some_and(Policy::stores) {
                if let Some(e) = self.inner.entries.get(&key) {
                    let age = e.stored.elapsed();
                    let dead = e.dead.load(Ordering::Acquire);
                    // What to serve should the refresh fail: past `maxAge` (a fresh hit
                    // returns below and needs none), within `staleIfError`.
                    let fallback_of = |e: &Arc<Entry>| {
                        (age < e.policy.max_age + e.policy.stale_if_error).then(|| e.value.clone())
                    };
                    if !dead && e.policy.revalidate {
                        // `no-cache`: ask the upstream (conditionally) and wait for it.
                        fallback = fallback_of(&e);
                        break self.flight(key, policy, fetch, Revalidate::of(&e));
                    }
                    if !dead {
                        if age < e.policy.max_age {
                            return Loaded {
                                value: Ok(e.value.clone()),
                                outcome: Outcome::Hit,
                                failed: None,
                                joined: false,
                                stamp: Some(Stamp(Arc::downgrade(&e))),
                            };
                        }
                        if age < e.policy.max_age + e.policy.swr {
                            // Start (or join) the refresh, and do not wait for it. It is
                            // conditional when the value has validators: a `304` renews it.
                            drop(self.flight(key, policy, fetch, Revalidate::of(&e)));
                            return Loaded {
                                value: Ok(e.value.clone()),
                                outcome: Outcome::Stale,
                                failed: None,
                                joined: false,
                                stamp: None,
                            };
                        }
                    }
                    fallback = fallback_of(&e);
                }
            }
            // Not stored (moka is never called under our lock, so the check above ran
            // without it). Join the flight for `key`; if there is none but one retired
            // since the check, its value was stored after the check: look again.
            let mut st = lock(&self.inner.state);
            if let Some(f) = st.flights.get(&key) {
                joined = true;
                break f.shared.clone();
            }
            let now = self.inner.retired.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                continue;
            }
            break self.start(&mut st, key, policy, fetch, None);
        };
        match shared.await {
            Ok((value, stamp)) => Loaded {
                value: Ok(value),
                outcome: Outcome::Miss,
                failed: None,
                joined,
                stamp,
            },
            Err(e) => match fallback.filter(|_| e.refresh_failed()) {
                Some(value) => Loaded {
                    value: Ok(value),
                    outcome: Outcome::StaleIfError,
                    failed: Some(e),
                    joined,
                    stamp: None,
                },
                None => Loaded {
                    value: Err(e),
                    outcome: Outcome::Miss,
                    failed: None,
                    joined,
                    stamp: None,
                },
            },
        }
    }

    fn flight<F, Fut>(
        &self,
        key: CacheKey,
        policy: Option<Policy>,
        fetch: F,
        revalidate: Option<Revalidate>,
    ) -> SharedFetch
    where
        F: FnOnce(crate::upstream::Validators) -> Fut + Send + 'static,
        Fut: Future<Output = Result<crate::upstream::Answer, UpstreamError>> + Send + 'static,
    {
        let mut st = lock(&self.inner.state);
        if let Some(f) = st.flights.get(&key) {
            return f.shared.clone();
        }
        self.start(&mut st, key, policy, fetch, revalidate)
    }

    /// Starts the flight for `key` (the caller holds the lock and found none).
    fn start<F, Fut>(
        &self,
        st: &mut State,
        key: CacheKey,
        policy: Option<Policy>,
        fetch: F,
        revalidate: Option<Revalidate>,
    ) -> SharedFetch
    where
        F: FnOnce(crate::upstream::Validators) -> Fut + Send + 'static,
        Fut: Future<Output = Result<crate::upstream::Answer, UpstreamError>> + Send + 'static,
    {
        let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
        // Read under the lock that invalidations bump it under.
        let epoch = self.epoch();
        let tags = policy.as_ref().map(|p| p.tags.clone()).unwrap_or_default();
        let this = self.clone();
        let validators = revalidate
            .as_ref()
            .map(|r| r.validators.clone())
            .unwrap_or_default();
        // The fetch's spans are children of the request that started it.
        let task = tokio::spawn(crate::telemetry::carry(async move {
            let fetch = move || fetch(validators);
            let result = this.inner.bus.load(key, policy.as_ref(), fetch).await;
            this.finish(key, id, epoch, policy, result, revalidate)
        }));
        let shared = async move {
            task.await.unwrap_or_else(|e| {
                Err(UpstreamError::Unavailable {
                    upstream: "(internal)".into(),
                    detail: format!("fetch task failed: {e}"),
                })
            })
        }
        .boxed()
        .shared();
        st.flights.insert(
            key,
            Flight {
                id,
                shared: shared.clone(),
                tags,
            },
        );
        shared
    }

    /// Stores a fetched value (unless its tags were invalidated after `epoch`, when the
    /// fetch started) and retires the flight. The moka insert comes first, so there is no moment where a request finds
    /// neither the flight nor the entry and starts a second fetch.
    fn finish(
        &self,
        key: CacheKey,
        id: u64,
        epoch: u64,
        policy: Option<Policy>,
        result: Result<crate::bus::Shared, UpstreamError>,
        revalidate: Option<Revalidate>,
    ) -> Fetched {
        if let (Ok(shared), Some(r)) = (&result, revalidate) {
            if shared.not_modified {
                // The stale value is current again: renewed in place (unless it was
                // replaced or invalidated meanwhile), and what this flight answers.
                let stamp = self
                    .renew(key, &r.stamp, shared.validators.clone(), epoch)
                    .then(|| self.inner.entries.get(&key))
                    .flatten()
                    .map(|e| Stamp(Arc::downgrade(&e)));
                self.retire(key, id);
                // A `no-cache` value vouches for no whole response: each use asks again.
                let stamp = stamp.filter(|_| !r.revalidates);
                return Ok((r.value, stamp));
            }
        }
        let (value, age, shareable, validators, freshness) = match result {
            Ok(shared) => (
                Arc::new(shared.value),
                shared.age,
                shared.shareable,
                shared.validators,
                shared.freshness,
            ),
            Err(e) => {
                self.retire(key, id);
                return Err(e);
            }
        };
        // The upstream said no shared cache may keep it: the callers of this flight get it,
        // nobody later does.
        let stamp = policy.filter(|_| shareable).and_then(|policy| {
            let policy = policy.limited(freshness, !validators.is_empty());
            let fetched = Fetch {
                value: value.clone(),
                validators,
            };
            let revalidates = policy.revalidate;
            self.insert_aged(key, policy, fetched, epoch, age)
                .filter(|_| !revalidates)
        });
        self.retire(key, id);
        Ok((value, stamp))
    }

    /// Stores `fetched`, fetched since `epoch` ([`Cache::epoch`]) and already `age` old
    /// (another replica fetched it), under `key` — when the policy stores at all and none
    /// of its tags (nor the key) was invalidated since — and indexes its tags. The moka
    /// insert comes before the flight is retired, so there is no moment where a request
    /// finds neither the flight nor the entry and starts a second fetch.
    fn insert_aged(
        &self,
        key: CacheKey,
        policy: Policy,
        fetched: Fetch,
        epoch: u64,
        age: Duration,
    ) -> Option<Stamp> {
        if !policy.stores()
            || age >= policy.lifetime()
            || lock(&self.inner.state).invalidated_since(&key, &policy.tags, epoch)
        {
            return None;
        }
        let now = Instant::now();
        let size = crate::weight::json(&fetched.value);
        let entry = Arc::new(Entry {
            value: fetched.value,
            stored: now.checked_sub(age).unwrap_or(now),
            policy,
            // Weighed as it is kept (a parsed tree holds many times its body's bytes):
            // the budget is the cache's memory.
            size,
            validators: fetched.validators,
            dead: AtomicBool::new(false),
        });
        let old = self.inner.entries.get(&key);
        self.commit(key, entry, old, epoch)
    }

    /// Puts `entry` under `key` in place of `old`, then indexes its tags — unless one of
    /// them was invalidated after `epoch`, when its value may predate that: then it is dead
    /// at once and `None`. Not under our lock: moka may call the eviction listener, which
    /// takes it.
    fn commit(
        &self,
        key: CacheKey,
        entry: Arc<Entry>,
        old: Option<Arc<Entry>>,
        epoch: u64,
    ) -> Option<Stamp> {
        // A value heavier than the whole budget is served to whoever fetched it, never
        // kept (moka would admit it, and evict everything else, until its next upkeep).
        if (entry.size as u64).saturating_add(64) > self.inner.budget {
            if let Some(old) = old {
                old.dead.store(true, Ordering::Release);
                self.inner.entries.invalidate(&key);
            }
            return None;
        }
        // The new value goes in before the old one is marked dead: a reader between the two
        // finds one or the other, never a miss (which would fetch again). A response built
        // from the old value stops being reused right after.
        self.inner.entries.insert(key, entry.clone());
        if let Some(old) = old {
            old.dead.store(true, Ordering::Release);
        }
        let mut st = lock(&self.inner.state);
        if st.invalidated_since(&key, &entry.policy.tags, epoch) {
            entry.dead.store(true, Ordering::Release);
            return None;
        }
        for tag in &entry.policy.tags {
            st.tags
                .entry(tag.clone())
                .or_default()
                .insert(key, Arc::downgrade(&entry));
        }
        Some(Stamp(Arc::downgrade(&entry)))
    }

    /// The invalidation epoch: take it before fetching outside [`Cache::load`] and pass it
    /// to [`Cache::store`], which then refuses a value whose tags were invalidated while
    /// it was fetched (it may predate the change).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// Stores a value fetched outside [`Cache::load`] (a batched request's items) since
    /// `epoch` ([`Cache::epoch`]); `None` when not stored.
    pub fn store(
        &self,
        key: CacheKey,
        policy: Policy,
        value: Arc<Value>,
        epoch: u64,
    ) -> Option<Stamp> {
        let fetched = Fetch {
            value,
            validators: Default::default(),
        };
        self.insert_aged(key, policy, fetched, epoch, Duration::ZERO)
    }

    /// Stores a value fetched from `fetched_at` on, unless the entry already holds one
    /// stored after that (a refetch that started later and finished first): an old poll
    /// must not overwrite newer data. `false` when it was not stored.
    pub fn store_fetched(
        &self,
        key: CacheKey,
        policy: Policy,
        fetched: Fetch,
        fetched_at: Instant,
        epoch: u64,
    ) -> bool {
        if let Some(e) = self.inner.entries.get(&key) {
            if !e.dead.load(Ordering::Acquire) && e.stored >= fetched_at {
                return false;
            }
        }
        self.insert_aged(key, policy, fetched, epoch, Duration::ZERO)
            .is_some()
    }

    /// The validators of the value stored under `key`, while it is current, and its stamp:
    /// what a poll sends to ask whether the value changed.
    pub fn validators(&self, key: &CacheKey) -> Option<(crate::upstream::Validators, Stamp)> {
        let e = self.inner.entries.get(key)?;
        let stamp = Stamp(Arc::downgrade(&e));
        (stamp.is_current() && !e.validators.is_empty()).then(|| (e.validators.clone(), stamp))
    }

    /// The upstream said the value under `key` (the one `expected` names) has not changed
    /// (`304`): it is fresh again from now, with `validators`, its subscribers not woken.
    /// `false` when that entry is gone or replaced, or its tags were invalidated since
    /// `epoch`.
    pub fn renew(
        &self,
        key: CacheKey,
        expected: &Stamp,
        validators: crate::upstream::Validators,
        epoch: u64,
    ) -> bool {
        let Some(old) = self.inner.entries.get(&key) else {
            return false;
        };
        if !expected.is(&old) || old.dead.load(Ordering::Acquire) {
            return false;
        }
        let entry = Arc::new(Entry {
            value: old.value.clone(),
            stored: Instant::now(),
            policy: old.policy.clone(),
            size: old.size,
            validators,
            dead: AtomicBool::new(false),
        });
        self.commit(key, entry, Some(old), epoch).is_some()
    }

    /// Replaces the value under `key` and keeps the entry's age, policy and tags: a value
    /// patched from a stream expires when the fetched one would have. `expected` is the
    /// stamp of the entry the new value was computed from ([`Cache::peek`]). `false` when
    /// that entry is no longer the live one — gone, replaced by a newer store, or
    /// invalidated while this ran — and nothing was kept (the caller refetches instead).
    pub fn patch(&self, key: CacheKey, expected: &Stamp, value: Arc<Value>) -> bool {
        self.patch_between(key, expected, value, || {})
    }

    /// [`Cache::patch`], running `between` after the checks and before the commit (tests
    /// put a concurrent invalidation there).
    fn patch_between(
        &self,
        key: CacheKey,
        expected: &Stamp,
        value: Arc<Value>,
        between: impl FnOnce(),
    ) -> bool {
        let epoch = self.epoch();
        let Some(old) = self.inner.entries.get(&key) else {
            return false;
        };
        if !expected.is(&old)
            || old.dead.load(Ordering::Acquire)
            || old.stored.elapsed() >= old.policy.max_age + old.policy.swr
        {
            return false;
        }
        between();
        let entry = Arc::new(Entry {
            size: crate::weight::json(&value),
            value,
            stored: old.stored,
            policy: old.policy.clone(),
            // The value is no longer the one the validators describe.
            validators: Default::default(),
            dead: AtomicBool::new(false),
        });
        self.commit(key, entry, Some(old), epoch).is_some()
    }

    /// The fresh value under `key`, without fetching.
    pub fn peek(&self, key: &CacheKey) -> Option<(Arc<Value>, Stamp)> {
        let e = self.inner.entries.get(key)?;
        let stamp = Stamp(Arc::downgrade(&e));
        stamp.is_current().then(|| (e.value.clone(), stamp))
    }

    fn retire(&self, key: CacheKey, id: u64) {
        let mut st = lock(&self.inner.state);
        if st.flights.get(&key).is_some_and(|f| f.id == id) {
            st.flights.remove(&key);
            self.inner.retired.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Drops every entry tagged with any of `tags`, and makes fetches in flight for those
    /// tags unstorable. Returns the keys of the entries dropped (the live hub refetches
    /// the ones that have subscribers).
    pub fn invalidate(&self, tags: &[Tag]) -> Vec<CacheKey> {
        let mut dropped = Vec::new();
        // Entries that may still be served should their refetch fail (`staleIfError`)
        // stay in moka, dead (a miss for everything else), until they expire.
        let mut removed = Vec::new();
        {
            let mut st = lock(&self.inner.state);
            let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            for tag in tags {
                st.invalidated.record(tag, epoch);
                if let Some(keys) = st.tags.remove(tag) {
                    for (key, entry) in keys {
                        if let Some(entry) = entry.upgrade() {
                            if !entry.dead.swap(true, Ordering::AcqRel) {
                                dropped.push(key);
                                if entry.policy.stale_if_error.is_zero() {
                                    removed.push(key);
                                }
                            }
                        }
                    }
                }
            }
            // Fetches in flight for these tags will not be stored (their epoch predates
            // this one); new loads must not join them.
            st.flights
                .retain(|_, f| !f.tags.iter().any(|t| tags.contains(t)));
        }
        for key in &removed {
            self.inner.entries.invalidate(key);
        }
        dropped
    }

    /// Drops the entry under `key` (another replica has a newer value for it).
    /// A fetch of `key` already running here may predate that value: it is not stored, and
    /// new loads do not join it.
    pub fn forget(&self, key: &CacheKey) {
        {
            let mut st = lock(&self.inner.state);
            let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            st.invalidated.record_key(key, epoch);
            st.flights.remove(key);
        }
        if let Some(e) = self.inner.entries.get(key) {
            e.dead.store(true, Ordering::Release);
        }
        self.inner.entries.invalidate(key);
    }

    /// The bus this cache shares values over.
    pub fn bus(&self) -> &crate::bus::Bus {
        &self.inner.bus
    }

    /// Drops every entry and makes every fetch in flight unstorable (another replica's
    /// changes were lost: nothing here can be trusted to be current).
    pub fn invalidate_all(&self) {
        {
            let mut st = lock(&self.inner.state);
            let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            st.invalidated.everything = epoch;
            st.tags.clear();
            st.flights.clear();
        }
        for (_, entry) in self.inner.entries.iter() {
            entry.dead.store(true, Ordering::Release);
        }
        self.inner.entries.invalidate_all();
    }

    /// Entries dropped so far to stay within the byte budget.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// What the stored entries weigh, in bytes (as moka counts, after pending work).
    pub fn weighed(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.weighted_size()
    }

    /// Entries currently stored (approximate, as moka counts).
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn key(s: &str) -> CacheKey {
        CacheKey::from_parts([s.as_bytes()])
    }

    fn policy(max_age: u64, swr: u64, tags: &[&str]) -> Option<Policy> {
        Some(Policy {
            shared: true,
            max_age: Duration::from_secs(max_age),
            swr: Duration::from_secs(swr),
            tags: tags.iter().map(|t| Tag::from(*t)).collect(),
            revalidate: false,
            stale_if_error: Duration::ZERO,
        })
    }

    /// A fetch that counts its calls and answers `n` (the call number).
    fn counting(
        calls: &Arc<AtomicUsize>,
    ) -> impl FnOnce(
        crate::upstream::Validators,
    ) -> BoxFuture<'static, Result<crate::upstream::Answer, UpstreamError>> {
        let calls = calls.clone();
        move |_| {
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::task::yield_now().await;
                Ok(crate::upstream::Answer::new(Value::from(n)))
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_fetch_and_hits_make_none() {
        let cache = Cache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let loads = (0..50).map(|_| cache.load(key("a"), policy(60, 0, &[]), counting(&calls)));
        let results = futures_util::future::join_all(loads).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(results
            .iter()
            .all(|l| l.value.as_deref() == Ok(&Value::from(1))
                && l.stamp.as_ref().is_some_and(Stamp::is_current)));
        let Loaded {
            value: r, outcome, ..
        } = cache
            .load(key("a"), policy(60, 0, &[]), counting(&calls))
            .await;
        assert_eq!((r.as_deref(), outcome), (Ok(&Value::from(1)), Outcome::Hit));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidation_drops_tagged_entries_only() {
        let cache = Cache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let stamp = cache
            .load(key("a"), policy(60, 0, &["t:a"]), counting(&calls))
            .await
            .stamp
            .expect("stored");
        cache
            .load(key("b"), policy(60, 0, &["t:b"]), counting(&calls))
            .await
            .value
            .expect("b");
        assert!(stamp.is_current());
        assert_eq!(cache.invalidate(&[Tag::from("t:a")]), vec![key("a")]);
        assert!(
            !stamp.is_current(),
            "an invalidated entry's stamp is not current"
        );
        let outcome = cache
            .load(key("a"), policy(60, 0, &["t:a"]), counting(&calls))
            .await
            .outcome;
        assert_eq!(outcome, Outcome::Miss);
        let outcome = cache
            .load(key("b"), policy(60, 0, &["t:b"]), counting(&calls))
            .await
            .outcome;
        assert_eq!(outcome, Outcome::Hit);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_fetch_invalidated_in_flight_is_not_stored() {
        let cache = Cache::new(1 << 20);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let slow = move |_: crate::upstream::Validators| {
            async move {
                let _ = rx.await;
                Ok(crate::upstream::Answer::new(Value::from("old")))
            }
            .boxed()
        };
        let pending = tokio::spawn({
            let cache = cache.clone();
            async move { cache.load(key("a"), policy(60, 0, &["t"]), slow).await }
        });
        // Wait until the flight is registered, then invalidate while it runs.
        while lock(&cache.inner.state).flights.is_empty() {
            tokio::task::yield_now().await;
        }
        cache.invalidate(&[Tag::from("t")]);
        tx.send(()).expect("fetch waiting");
        let old = pending.await.expect("task");
        assert_eq!(
            old.value.as_deref(),
            Ok(&Value::from("old")),
            "the waiting caller still gets its answer"
        );
        assert!(old.stamp.is_none(), "and the value was not stored");
        let calls = Arc::new(AtomicUsize::new(0));
        let Loaded {
            value: r, outcome, ..
        } = cache
            .load(key("a"), policy(60, 0, &["t"]), counting(&calls))
            .await;
        assert_eq!(
            (r.as_deref(), outcome),
            (Ok(&Value::from(1)), Outcome::Miss)
        );
    }

    #[tokio::test]
    async fn errors_are_not_stored() {
        let cache = Cache::new(1 << 20);
        let fail =
            |_: crate::upstream::Validators| async { Err(UpstreamError::http("u", 500)) }.boxed();
        assert!(cache
            .load(key("a"), policy(60, 0, &[]), fail)
            .await
            .value
            .is_err());
        let calls = Arc::new(AtomicUsize::new(0));
        let Loaded {
            value: r, outcome, ..
        } = cache
            .load(key("a"), policy(60, 0, &[]), counting(&calls))
            .await;
        assert_eq!(
            (r.as_deref(), outcome),
            (Ok(&Value::from(1)), Outcome::Miss)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_max_age_and_stamps_with_them() {
        let cache = Cache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let stamp = cache
            .load(key("a"), policy(60, 0, &[]), counting(&calls))
            .await
            .stamp
            .expect("stored");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(stamp.is_current());
        assert_eq!(
            cache
                .load(key("a"), policy(60, 0, &[]), counting(&calls))
                .await
                .outcome,
            Outcome::Hit
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!stamp.is_current());
        let l = cache
            .load(key("a"), policy(60, 0, &[]), counting(&calls))
            .await;
        assert_eq!(
            (l.value.as_deref(), l.outcome),
            (Ok(&Value::from(2)), Outcome::Miss)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_values_are_served_within_swr_while_one_refresh_runs() {
        let cache = Cache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        cache
            .load(key("a"), policy(10, 60, &[]), counting(&calls))
            .await
            .value
            .expect("first");
        tokio::time::advance(Duration::from_secs(11)).await;
        let stale = futures_util::future::join_all(
            (0..5).map(|_| cache.load(key("a"), policy(10, 60, &[]), counting(&calls))),
        )
        .await;
        for l in &stale {
            assert_eq!(
                (l.value.as_deref(), l.outcome),
                (Ok(&Value::from(1)), Outcome::Stale)
            );
            assert!(l.stamp.is_none(), "a stale value vouches for no response");
        }
        // The one background refresh lands; then the new value is a hit.
        while lock(&cache.inner.state).flights.contains_key(&key("a")) {
            tokio::task::yield_now().await;
        }
        let l = cache
            .load(key("a"), policy(10, 60, &[]), counting(&calls))
            .await;
        assert_eq!(
            (l.value.as_deref(), l.outcome),
            (Ok(&Value::from(2)), Outcome::Hit)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Past maxAge + swr the value is gone: a plain miss.
        tokio::time::advance(Duration::from_secs(71)).await;
        assert_eq!(
            cache
                .load(key("a"), policy(10, 60, &[]), counting(&calls))
                .await
                .outcome,
            Outcome::Miss
        );
    }

    /// A tag that shares no slot of the invalidation table with the entry `k` or its tag
    /// `t` in this cache: tags that do may refuse each other's stores by design (the
    /// table's slots are chosen by a random hash), which the tests about "another tag"
    /// must not trip over.
    fn apart(cache: &Cache, k: &str, t: &str) -> Tag {
        let st = lock(&cache.inner.state);
        let taken = [
            st.invalidated.slot(&Tag::from(t)),
            st.invalidated.key_slot(&key(k)),
        ];
        (0..)
            .map(|i| Tag::from(format!("other{i}").as_str()))
            .find(|tag| !taken.contains(&st.invalidated.slot(tag)))
            .expect("a free slot")
    }

    fn stored(cache: &Cache, k: &str, v: i64) -> Stamp {
        let p = policy(60, 0, &["t"]).expect("policy");
        cache
            .store(key(k), p, Arc::new(Value::from(v)), cache.epoch())
            .expect("stored")
    }

    #[test]
    fn a_patch_replaces_the_value_it_was_computed_from_and_stays_invalidatable() {
        let cache = Cache::new(1 << 20);
        let stamp = stored(&cache, "a", 1);
        assert!(cache.patch(key("a"), &stamp, Arc::new(Value::from(2))));
        let (now, _) = cache.peek(&key("a")).expect("fresh");
        assert_eq!(*now, Value::from(2));
        assert!(!stamp.is_current(), "the patched-over entry is retired");
        assert_eq!(cache.invalidate(&[Tag::from("t")]), vec![key("a")]);
        assert!(cache.peek(&key("a")).is_none());
    }

    #[test]
    fn a_patch_computed_from_an_older_value_does_not_overwrite_a_newer_store() {
        let cache = Cache::new(1 << 20);
        let old = stored(&cache, "a", 1);
        stored(&cache, "a", 10); // a refetch landed after the patch read the value
        assert!(!cache.patch(key("a"), &old, Arc::new(Value::from(2))));
        let (now, _) = cache.peek(&key("a")).expect("fresh");
        assert_eq!(*now, Value::from(10));
    }

    #[test]
    fn a_patch_racing_an_invalidation_is_not_kept() {
        let cache = Cache::new(1 << 20);
        let stamp = stored(&cache, "a", 1);
        let kept = cache.patch_between(key("a"), &stamp, Arc::new(Value::from(2)), || {
            cache.invalidate(&[Tag::from("t")]);
        });
        assert!(!kept);
        assert!(
            cache.peek(&key("a")).is_none(),
            "nothing from before the invalidation survives it"
        );
    }

    #[test]
    fn a_value_fetched_across_an_invalidation_of_its_tags_is_not_stored() {
        let cache = Cache::new(1 << 20);
        let p = || policy(60, 0, &["t"]).expect("policy");
        let before = cache.epoch(); // a batch or poll starts fetching
        cache.invalidate(&[apart(&cache, "a", "t")]);
        assert!(
            cache
                .store(key("a"), p(), Arc::new(Value::from(1)), before)
                .is_some(),
            "another tag's invalidation does not matter"
        );
        let before = cache.epoch();
        cache.invalidate(&[Tag::from("t")]); // lands while the fetch is on its way
        assert!(cache
            .store(key("b"), p(), Arc::new(Value::from(1)), before)
            .is_none());
        assert!(cache.peek(&key("b")).is_none());
        assert!(cache
            .store(key("b"), p(), Arc::new(Value::from(2)), cache.epoch())
            .is_some());
    }

    /// Issue 8: 1.2M distinct invalidated tags made every invalidation scan them all under
    /// the global lock. The bookkeeping is now fixed in size, and still exact where it
    /// matters: a value fetched across its tag's invalidation is refused.
    #[test]
    fn invalidation_bookkeeping_stays_fixed_however_many_distinct_tags_were_invalidated() {
        let cache = Cache::new(1 << 20);
        let p = || policy(60, 0, &["live"]).expect("policy");
        for i in 0..300_000 {
            cache.invalidate(&[Tag::from(format!("distinct:{i}").as_str())]);
        }
        {
            let st = lock(&cache.inner.state);
            assert!(st.tags.is_empty() && st.flights.is_empty());
            assert_eq!(st.invalidated.epochs.len(), Invalidations::SLOTS);
        }
        assert!(
            cache
                .store(key("a"), p(), Arc::new(Value::from(1)), cache.epoch())
                .is_some(),
            "a store after them all is kept"
        );
        let before = cache.epoch();
        cache.invalidate(&[Tag::from("live")]);
        assert!(cache
            .store(key("b"), p(), Arc::new(Value::from(1)), before)
            .is_none());
    }

    #[test]
    fn a_patch_is_kept_across_an_invalidation_of_other_tags() {
        let cache = Cache::new(1 << 20);
        let stamp = stored(&cache, "a", 1);
        let kept = cache.patch_between(key("a"), &stamp, Arc::new(Value::from(2)), || {
            cache.invalidate(&[apart(&cache, "a", "t")]);
        });
        assert!(kept);
        assert_eq!(*cache.peek(&key("a")).expect("fresh").0, Value::from(2));
    }

    /// Loads racing a flight that finishes between their miss and their look for a
    /// flight must not start a second fetch: many keys, many concurrent loads each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flight_finishing_between_a_miss_and_the_lock_is_not_fetched_again() {
        let cache = Cache::new(64 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let keys = 3000;
        for k in 0..keys {
            let loads: Vec<_> = (0..8)
                .map(|_| {
                    let (cache, calls) = (cache.clone(), calls.clone());
                    tokio::spawn(async move {
                        let fetch = move |_: crate::upstream::Validators| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            async { Ok(crate::upstream::Answer::new(Value::from(1))) }.boxed()
                        };
                        cache
                            .load(key(&k.to_string()), policy(60, 0, &[]), fetch)
                            .await
                    })
                })
                .collect();
            for l in loads {
                assert!(l.await.expect("task").value.is_ok());
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), keys, "one fetch per key");
    }
}
