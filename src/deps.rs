//! What one operation read, gathered by resolvers while it runs ([`Deps`] is put in the
//! request data). Two consumers: the whole-response cache reuses a response while every
//! [`Stamp`] is current, and the live hub re-runs a live query when any of its
//! [`Dep`] keys (or their tags) change.

use crate::cache::{CacheKey, Policy, Stamp, Tag};
use crate::upstream::UpstreamError;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// A fetch that can be run again: how the hub polls a live query's root entry. With
/// validators it is conditional, and a `304` answers `not_modified`.
pub type FetchFn = Arc<
    dyn Fn(
            crate::upstream::Validators,
        ) -> BoxFuture<'static, Result<crate::upstream::Answer, UpstreamError>>
        + Send
        + Sync,
>;

/// One cache entry an operation read, and the tags it is filed under.
#[derive(Clone, Debug)]
pub struct Dep {
    pub key: CacheKey,
    pub tags: Vec<Tag>,
}

/// The root field's entry and how to fetch it again.
#[derive(Clone)]
pub struct RootFetch {
    pub key: CacheKey,
    pub policy: Policy,
    pub fetch: FetchFn,
    /// `@updates` on the field, with its `when` rendered for these arguments.
    pub updates: Option<Feed>,
    /// Whether a value fits the field's type (a patch must, to be stored).
    pub fits: Arc<dyn Fn(&Value) -> bool + Send + Sync>,
}

/// What feeds a root entry from an upstream socket.
#[derive(Clone, Debug)]
pub struct Feed {
    pub plan: Arc<crate::plan::UpdatesPlan>,
    /// The stream it taps, rendered for the entry's arguments (a NATS subject may read
    /// them).
    pub stream: crate::plan::StreamPlan,
    /// The `when` conditions, rendered for the entry's arguments.
    pub when: Vec<(Vec<String>, String)>,
    /// The caller whose request planned the entry: a socket whose upstream lists
    /// `forwardHeaders` is opened with this caller's values of them.
    pub ctx: crate::request::RequestContext,
}

impl std::fmt::Debug for RootFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RootFetch({:?})", self.key)
    }
}

#[derive(Debug)]
struct Inner {
    /// `None` once anything read could not be vouched for (stale, private, unstored, or
    /// a mutation): then the response must not be reused.
    stamps: Option<Vec<Stamp>>,
    keys: Vec<Dep>,
    root: Option<RootFetch>,
    stale: bool,
}

#[derive(Debug)]
pub struct Deps(Mutex<Inner>);

impl Default for Deps {
    fn default() -> Self {
        Deps(Mutex::new(Inner {
            stamps: Some(Vec::new()),
            keys: Vec::new(),
            root: None,
            stale: false,
        }))
    }
}

impl Deps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a read: the entry (when it has a key) and its stamp (when it vouches).
    pub fn add(&self, dep: Option<Dep>, stamp: Option<Stamp>) {
        let mut inner = self.lock();
        match (inner.stamps.as_mut(), stamp) {
            (Some(list), Some(s)) => list.push(s),
            _ => inner.stamps = None,
        }
        if let Some(dep) = dep {
            inner.keys.push(dep);
        }
    }

    /// Something was read that no cache entry stands for.
    pub fn spoil(&self) {
        self.lock().stamps = None;
    }

    /// A value was served stale because refreshing it failed (`staleIfError`): the
    /// response must not be reused, and a live query tries again later.
    pub fn stale(&self) {
        let mut inner = self.lock();
        inner.stamps = None;
        inner.stale = true;
    }

    pub fn set_root(&self, root: RootFetch) {
        self.lock().root.get_or_insert(root);
    }

    /// Everything gathered, leaving the set empty.
    pub fn take(&self) -> Gathered {
        let mut inner = self.lock();
        Gathered {
            stamps: inner.stamps.take(),
            read: Arc::new(Read {
                keys: std::mem::take(&mut inner.keys),
                root: inner.root.take(),
                stale: std::mem::take(&mut inner.stale),
            }),
        }
    }
}

/// What an execution read, as the live hub needs it.
#[derive(Debug, Default)]
pub struct Read {
    pub keys: Vec<Dep>,
    /// The root field's entry and how to fetch it again.
    pub root: Option<RootFetch>,
    /// Something was served stale because refreshing it failed: worth running again.
    pub stale: bool,
}

/// What [`Deps::take`] hands over.
#[derive(Clone, Debug)]
pub struct Gathered {
    pub stamps: Option<Vec<Stamp>>,
    pub read: Arc<Read>,
}
