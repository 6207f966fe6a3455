//! The hub: which live subscriptions depend on which cache entries, and the one poller per
//! polled entry. It is mini-redis's `HashMap<topic, subscribers>` fan-out with cache keys
//! for topics: a change to a key (invalidated, or a poll found a new value) wakes every
//! subscription that read it, each of which re-runs its own selection — through the
//! shared cache, so N subscribers of one entry cost the upstream one refetch.

use crate::cache::{Cache, CacheKey, Tag};
use crate::deps::{Dep, RootFetch};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

pub type SubId = u64;

#[derive(Default)]
struct KeyEntry {
    subs: HashMap<SubId, Arc<Notify>>,
    tags: Vec<Tag>,
    polled: bool,
}

#[derive(Default)]
struct State {
    keys: HashMap<CacheKey, KeyEntry>,
    tags: HashMap<Tag, HashSet<CacheKey>>,
    /// The keys each subscription watches.
    subs: HashMap<SubId, Vec<CacheKey>>,
}

impl State {
    /// Forgets a key nobody watches or polls any more.
    fn tidy(&mut self, key: &CacheKey) {
        let idle = self.keys.get(key).is_some_and(|k| k.subs.is_empty() && !k.polled);
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
    cache: Cache,
    /// How long a poller keeps going after its last subscriber left.
    grace: Duration,
    next_sub: AtomicU64,
    /// Bumped on every change, so a subscription can tell whether one happened while it
    /// was running its query (before it was watching the keys it read).
    generation: AtomicU64,
    pollers_started: AtomicU64,
}

impl Hub {
    pub fn new(cache: Cache, grace: Duration) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::default(),
            cache,
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
            let fresh_tags: Vec<Tag> = dep.tags.iter().filter(|t| !entry.tags.contains(t)).cloned().collect();
            entry.tags.extend(fresh_tags.iter().cloned());
            for tag in fresh_tags {
                st.tags.entry(tag).or_default().insert(dep.key);
            }
        }
        st.subs.insert(sub, new);
    }

    /// `sub` has ended.
    pub fn unwatch(&self, sub: SubId) {
        let mut st = self.lock();
        for key in st.subs.remove(&sub).unwrap_or_default() {
            if let Some(entry) = st.keys.get_mut(&key) {
                entry.subs.remove(&sub);
            }
            st.tidy(&key);
        }
    }

    /// The entries under `keys` changed: wake everyone who read them.
    pub fn changed(&self, keys: &[CacheKey]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let st = self.lock();
        for key in keys {
            if let Some(entry) = st.keys.get(key) {
                for notify in entry.subs.values() {
                    notify.notify_one();
                }
            }
        }
    }

    /// Tags were invalidated: wake the subscriptions of every watched entry filed under
    /// them. Returns the keys woken.
    pub fn invalidated(&self, tags: &[Tag]) -> Vec<CacheKey> {
        let keys: Vec<CacheKey> = {
            let st = self.lock();
            let keys: HashSet<CacheKey> = tags.iter().filter_map(|t| st.tags.get(t)).flatten().copied().collect();
            keys.into_iter().collect()
        };
        if !keys.is_empty() {
            self.changed(&keys);
        }
        keys
    }

    /// Subscriptions watching `key` now.
    pub fn subscribers(&self, key: &CacheKey) -> usize {
        self.lock().keys.get(key).map_or(0, |k| k.subs.len())
    }

    /// Pollers started since the hub began (each polled entry has at most one at a time).
    pub fn pollers_started(&self) -> u64 {
        self.pollers_started.load(Ordering::Relaxed)
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
        tokio::spawn(async move {
            let mut last = None;
            let mut idle_since: Option<tokio::time::Instant> = None;
            loop {
                tokio::time::sleep(every).await;
                let Some(hub) = hub.upgrade() else { return };
                if last.is_none() {
                    last = hub.cache.peek(&root.key).map(|(v, _)| v);
                }
                let watched = hub.subscribers(&root.key) > 0;
                match (watched, idle_since) {
                    (true, _) => idle_since = None,
                    (false, None) => idle_since = Some(tokio::time::Instant::now()),
                    (false, Some(since)) if since.elapsed() >= hub.grace => {
                        let mut st = hub.lock();
                        if let Some(entry) = st.keys.get_mut(&root.key) {
                            entry.polled = false;
                        }
                        st.tidy(&root.key);
                        tracing::debug!(key = ?root.key, "poller stopped");
                        return;
                    }
                    (false, Some(_)) => {}
                }
                match (root.fetch)().await {
                    Ok((value, size)) => {
                        if last.as_deref() != Some(&value) {
                            let value = Arc::new(value);
                            hub.cache.store(root.key, root.policy.clone(), value.clone(), size);
                            last = Some(value);
                            hub.changed(&[root.key]);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "poll failed; keeping the last value"),
                }
            }
        });
    }
}
