//! The hub: which live subscriptions depend on which cache entries, and the one poller per
//! polled entry. It is mini-redis's `HashMap<topic, subscribers>` fan-out with cache keys
//! for topics: a change to a key (invalidated, or a poll found a new value) wakes every
//! subscription that read it, each of which re-runs its own selection — through the
//! shared cache, so N subscribers of one entry cost the upstream one refetch.

use crate::cache::{Cache, CacheKey, Tag};
use crate::deps::{Dep, RootFetch};
use crate::events::{Event, Failure, Sources};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

pub type SubId = u64;

#[derive(Default)]
struct KeyEntry {
    subs: HashMap<SubId, Arc<Notify>>,
    tags: Vec<Tag>,
    polled: bool,
    fed: bool,
    /// Its `@updates` stream failed for good (a refused handshake): its subscriptions
    /// end with this. Cleared when a feeder starts again.
    failure: Option<Arc<Failure>>,
}

#[derive(Default)]
struct State {
    keys: HashMap<CacheKey, KeyEntry>,
    tags: HashMap<Tag, HashSet<CacheKey>>,
    /// The keys each subscription watches.
    subs: HashMap<SubId, Vec<CacheKey>>,
    /// The change (its span) that last woke each subscription, when tracing: its
    /// re-run is a child of it.
    causes: HashMap<SubId, opentelemetry::trace::SpanContext>,
}

impl State {
    /// Forgets a key nobody watches or polls any more.
    fn tidy(&mut self, key: &CacheKey) {
        let idle = self
            .keys
            .get(key)
            .is_some_and(|k| k.subs.is_empty() && !k.polled && !k.fed);
        if idle {
            if let Some(entry) = self.keys.remove(key) {
                for tag in &entry.tags {
                    if let Some(set) = self.tags.get_mut(tag) {
                        set.remove(key);
                        if set.is_empty() {
                            self.tags.remove(tag);
                        }
                    }
                }
            }
        }
    }
}

pub struct Hub {
    state: Mutex<State>,
    /// Each change it hears of is a trace of its own (`live.change`), when tracing.
    telemetry: Arc<crate::telemetry::Telemetry>,
    cache: Cache,
    sources: Arc<Sources>,
    /// How long a poller keeps going after its last subscriber left.
    grace: Duration,
    next_sub: AtomicU64,
    /// Bumped on every change, so a subscription can tell whether one happened while it
    /// was running its query (before it was watching the keys it read).
    generation: AtomicU64,
    pollers_started: AtomicU64,
}

impl Hub {
    pub fn new(
        cache: Cache,
        grace: Duration,
        sources: Arc<Sources>,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            telemetry,
            state: Mutex::default(),
            cache,
            sources,
            grace,
            next_sub: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            pollers_started: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_id(&self) -> SubId {
        self.next_sub.fetch_add(1, Ordering::Relaxed)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Sets the keys `sub` watches to those of `deps` (what its last run read).
    pub fn watch(&self, sub: SubId, notify: &Arc<Notify>, deps: &[Dep]) {
        let mut st = self.lock();
        let old = st.subs.remove(&sub).unwrap_or_default();
        let new: Vec<CacheKey> = deps.iter().map(|d| d.key).collect();
        for key in old.iter().filter(|k| !new.contains(k)) {
            if let Some(entry) = st.keys.get_mut(key) {
                entry.subs.remove(&sub);
            }
            st.tidy(key);
        }
        for dep in deps {
            let entry = st.keys.entry(dep.key).or_default();
            entry.subs.insert(sub, notify.clone());
            let fresh_tags: Vec<Tag> = dep
                .tags
                .iter()
                .filter(|t| !entry.tags.contains(t))
                .cloned()
                .collect();
            entry.tags.extend(fresh_tags.iter().cloned());
            for tag in fresh_tags {
                st.tags.entry(tag).or_default().insert(dep.key);
            }
        }
        st.subs.insert(sub, new);
    }

    /// The change that last woke `sub`, if one was traced (taken).
    pub fn cause(&self, sub: SubId) -> Option<opentelemetry::trace::SpanContext> {
        self.lock().causes.remove(&sub)
    }

    /// `sub` has ended.
    pub fn unwatch(&self, sub: SubId) {
        let mut st = self.lock();
        st.causes.remove(&sub);
        for key in st.subs.remove(&sub).unwrap_or_default() {
            if let Some(entry) = st.keys.get_mut(&key) {
                entry.subs.remove(&sub);
            }
            st.tidy(&key);
        }
    }

    /// Everything may have changed: wake every subscription.
    pub fn changed_all(&self) {
        self.wake(None);
    }

    /// The entries under `keys` changed: wake everyone who read them.
    /// The task's current span (a change's) is what woke them, for their traces.
    pub fn changed(&self, keys: &[CacheKey]) {
        self.wake(Some(keys));
    }

    /// Wakes the subscriptions that read `keys` (every one for `None`), recording the
    /// task's current span as what woke them.
    fn wake(&self, keys: Option<&[CacheKey]>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let cause = crate::telemetry::current_span_context();
        let mut st = self.lock();
        let State {
            keys: entries,
            causes,
            ..
        } = &mut *st;
        let mut each = |entry: &KeyEntry| {
            for (sub, notify) in &entry.subs {
                if let Some(c) = &cause {
                    causes.insert(*sub, c.clone());
                }
                notify.notify_one();
            }
        };
        match keys {
            None => entries.values().for_each(&mut each),
            Some(keys) => keys
                .iter()
                .filter_map(|k| entries.get(k))
                .for_each(&mut each),
        }
    }

    /// [`Hub::changed`], the change a trace of its own caused by `cause` (`poll`, a
    /// source's kind, `refetch`), when tracing.
    pub fn changed_because(&self, keys: &[CacheKey], cause: &'static str) {
        let change = self.telemetry.change(cause, None);
        crate::telemetry::within(&change, || self.changed(keys));
    }

    /// Tags were invalidated: wake the subscriptions of every watched entry filed under
    /// them. Returns the keys woken.
    pub fn invalidated(&self, tags: &[Tag]) -> Vec<CacheKey> {
        let keys: Vec<CacheKey> = {
            let st = self.lock();
            let keys: HashSet<CacheKey> = tags
                .iter()
                .filter_map(|t| st.tags.get(t))
                .flatten()
                .copied()
                .collect();
            keys.into_iter().collect()
        };
        if !keys.is_empty() {
            self.changed(&keys);
        }
        keys
    }

    /// Why `key`'s `@updates` stream failed for good, if it did (see [`Hub::feed`]).
    pub fn failure(&self, key: &CacheKey) -> Option<Arc<Failure>> {
        self.lock().keys.get(key).and_then(|k| k.failure.clone())
    }

    /// `key`'s `@updates` stream failed for good: its subscriptions are woken to end with
    /// `failure`, and the next one to run starts a new feeder.
    fn fail(&self, key: &CacheKey, failure: Arc<Failure>) {
        tracing::debug!(key = ?key, "@updates feeder ended: {}", failure.message);
        let mut st = self.lock();
        if let Some(entry) = st.keys.get_mut(key) {
            entry.fed = false;
            entry.failure = Some(failure);
            for notify in entry.subs.values() {
                notify.notify_one();
            }
        }
        st.tidy(key);
    }

    /// Subscriptions watching `key` now.
    pub fn subscribers(&self, key: &CacheKey) -> usize {
        self.lock().keys.get(key).map_or(0, |k| k.subs.len())
    }

    /// Pollers started since the hub began (each polled entry has at most one at a time).
    pub fn pollers_started(&self) -> u64 {
        self.pollers_started.load(Ordering::Relaxed)
    }

    /// Whether `key` has had no subscribers for the grace period; if so, `release` its
    /// keeper's mark and forget the key. `idle_since` is the keeper's own record.
    fn unused_for_grace(
        &self,
        key: &CacheKey,
        idle_since: &mut Option<tokio::time::Instant>,
        release: impl FnOnce(&mut KeyEntry),
    ) -> bool {
        let mut st = self.lock();
        let watched = st.keys.get(key).is_some_and(|k| !k.subs.is_empty());
        if watched {
            *idle_since = None;
            return false;
        }
        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < self.grace {
            return false;
        }
        if let Some(entry) = st.keys.get_mut(key) {
            release(entry);
        }
        st.tidy(key);
        true
    }

    /// Makes sure `root`'s entry is fed by its `@updates` socket while it is in use: each
    /// matching message patches the cached value (or, for REFETCH, refetches it once,
    /// however many arrive meanwhile), and a reconnect or lost messages refetch. Stops
    /// `grace` after the entry's last subscriber has gone (and with it, its socket tap).
    /// A socket whose upstream lists `forwardHeaders` is opened with the values the
    /// caller who planned the entry sent (a `PRIVATE` entry's are its callers'); if it
    /// fails for good, the entry's subscriptions end with why ([`Hub::failure`]).
    pub fn feed(self: &Arc<Self>, root: RootFetch) {
        let Some(crate::deps::Feed {
            plan,
            stream,
            when,
            ctx,
        }) = root.updates.clone()
        else {
            return;
        };
        {
            let mut st = self.lock();
            let entry = st.keys.entry(root.key).or_default();
            if entry.fed {
                return;
            }
            entry.fed = true;
            entry.failure = None;
        }
        let mut tap = match self.sources.tap(&stream, &ctx) {
            Ok(tap) => tap,
            Err(failure) => return self.fail(&root.key, failure),
        };
        drop(ctx);
        // What a message's change says caused it: the source's kind.
        let cause = stream.kind();
        let hub = Arc::downgrade(self);
        let refetching = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            let refetch = |hub: &Arc<Hub>| {
                if refetching.swap(true, Ordering::AcqRel) {
                    return;
                }
                let (hub, root, flag) = (hub.clone(), root.clone(), refetching.clone());
                tokio::spawn(async move {
                    let (started, epoch) = (tokio::time::Instant::now(), hub.cache.epoch());
                    match (root.fetch)(Default::default()).await {
                        Ok(answer) => {
                            // An answer no shared cache may keep: the subscribers re-run
                            // and fetch their own.
                            if !answer.shareable
                                || hub.cache.store_fetched(
                                    root.key,
                                    root.policy.clone(),
                                    crate::cache::Fetch {
                                        value: Arc::new(answer.value),
                                        validators: answer.validators,
                                    },
                                    started,
                                    epoch,
                                )
                            {
                                hub.changed_because(&[root.key], "refetch");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "refetch for @updates failed"),
                    }
                    flag.store(false, Ordering::Release);
                });
            };
            let mut idle_since = None;
            let grace = hub.upgrade().map(|h| h.grace).unwrap_or_default();
            let mut tick = tokio::time::interval(
                (grace / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            );
            loop {
                let event = tokio::select! {
                    _ = tick.tick() => None,
                    e = tap.rx.recv() => Some(e),
                };
                let Some(hub) = hub.upgrade() else { return };
                match event {
                    None => {
                        if hub.unused_for_grace(&root.key, &mut idle_since, |e| e.fed = false) {
                            tracing::debug!(key = ?root.key, "@updates feeder stopped");
                            return;
                        }
                    }
                    Some(Ok(Event::Message(m))) => {
                        let Some(payload) = super::patch::pick(&m, &plan.source.select) else {
                            continue;
                        };
                        if !super::patch::matches(&m, payload, &when) {
                            continue;
                        }
                        if plan.apply == crate::plan::Apply::Refetch {
                            refetch(&hub);
                            continue;
                        }
                        let Some((current, stamp)) = hub.cache.peek(&root.key) else {
                            // Nothing fresh to patch: fetch it instead.
                            refetch(&hub);
                            continue;
                        };
                        if let Some(next) =
                            super::patch::apply(&current, payload, plan.apply, plan.key.as_deref())
                        {
                            if !(root.fits)(&next) {
                                tracing::warn!(key = ?root.key, "patched value would not fit the field's type; message skipped");
                                continue;
                            }
                            if hub.cache.patch(root.key, &stamp, Arc::new(next)) {
                                hub.changed_because(&[root.key], cause);
                            } else {
                                refetch(&hub);
                            }
                        }
                    }
                    Some(Ok(Event::Reconnected)) | Some(Err(RecvError::Lagged(_))) => refetch(&hub),
                    Some(Ok(Event::Failed(failure))) => return hub.fail(&root.key, failure),
                    Some(Err(RecvError::Closed)) => return,
                }
            }
        });
    }

    /// Makes sure `root`'s entry is polled every `every`: one poller per entry, whoever
    /// asks. It refetches, and when the value differs from the last one it stores it and
    /// wakes the entry's subscribers; it stops `grace` after the entry's last subscriber
    /// has gone.
    pub fn poll(self: &Arc<Self>, root: RootFetch, every: Duration) {
        {
            let mut st = self.lock();
            let entry = st.keys.entry(root.key).or_default();
            if entry.polled {
                return;
            }
            entry.polled = true;
        }
        self.pollers_started.fetch_add(1, Ordering::Relaxed);
        let hub = Arc::downgrade(self);
        // One replica polls an entry for the cluster: the one holding this lease, which
        // a survivor takes over within three intervals (at least a second) of its
        // holder's end. The others get each new value from it, through the bus.
        let lease = format!("poll:{}", root.key.hex());
        let lease_for = (every * 3).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut last = None;
            let mut idle_since: Option<tokio::time::Instant> = None;
            loop {
                tokio::time::sleep(every).await;
                let Some(hub) = hub.upgrade() else { return };
                if last.is_none() {
                    last = hub.cache.peek(&root.key).map(|(v, _)| v);
                }
                if hub.unused_for_grace(&root.key, &mut idle_since, |e| e.polled = false) {
                    tracing::debug!(key = ?root.key, "poller stopped");
                    hub.cache.bus().release(&lease).await;
                    return;
                }
                // A PRIVATE entry is per caller: every replica polls its own.
                if root.policy.shared
                    && hub.cache.bus().lease(&lease, lease_for).await == crate::bus::Lease::Other
                {
                    // Another replica polls it; what it finds arrives as a change.
                    last = None;
                    continue;
                }
                let (started, epoch) = (tokio::time::Instant::now(), hub.cache.epoch());
                // Conditional when the stored value has an ETag or a date: a `304` renews
                // it, with no body to read and nobody to wake.
                let current = hub.cache.validators(&root.key);
                let validators = current.as_ref().map(|(v, _)| v.clone()).unwrap_or_default();
                match (root.fetch)(validators).await {
                    Ok(answer) if answer.not_modified => {
                        if let Some((_, stamp)) = &current {
                            hub.cache.renew(root.key, stamp, answer.validators, epoch);
                        }
                    }
                    Ok(answer) if !answer.shareable => {
                        // Not for a shared cache: tell the subscribers it changed; each
                        // re-run fetches its own.
                        if last.as_deref() != Some(&answer.value) {
                            last = Some(Arc::new(answer.value));
                            hub.changed_because(&[root.key], "poll");
                            hub.cache.bus().changed(root.key, None, &root.policy).await;
                        }
                    }
                    Ok(answer) => {
                        let validators = answer.validators;
                        if last.as_deref() != Some(&answer.value) {
                            let value = Arc::new(answer.value);
                            let fetched = crate::cache::Fetch {
                                value: value.clone(),
                                validators,
                            };
                            if hub.cache.store_fetched(
                                root.key,
                                root.policy.clone(),
                                fetched,
                                started,
                                epoch,
                            ) {
                                hub.changed_because(&[root.key], "poll");
                                hub.cache
                                    .bus()
                                    .changed(root.key, Some(&value), &root.policy)
                                    .await;
                                last = Some(value);
                            } else {
                                // Something newer landed while this poll ran: compare with it next time.
                                last = None;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "poll failed; keeping the last value"),
                }
            }
        });
    }
}
