//! Stage ⑥'s shortcut: whole responses of queries, reused while every cache entry they
//! were built from is still current.
//!
//! Input: an HTTP GraphQL request (query, operation name, variables, and the request
//! headers that can change what upstreams answer). Output: the exact response bytes a
//! fresh execution would produce now. A response is stored only when it has no errors and
//! every `@rest` value in it came from a stored, fresh, `PUBLIC` cache entry
//! ([`crate::deps::Deps`]);
//! on lookup each of those entries is checked (alive, not invalidated, fresh), so an
//! invalidation, expiry or eviction of any of them makes the response a miss. It skips
//! the executor for repeated queries, which is most of a cache hit's cost.

use crate::cache::{CacheKey, Stamp};
use crate::deps::{Gathered, Read};
use crate::request::RequestContext;
use bytes::Bytes;
use http::HeaderName;
use std::sync::Arc;
use std::time::Duration;

struct Cached {
    body: Bytes,
    deps: Vec<Stamp>,
    read: Arc<Read>,
}

/// A reusable response and what it was built from.
pub struct Hit {
    pub body: Bytes,
    pub read: Arc<Read>,
}

pub struct ResponseCache {
    /// `None`: disabled (`--response-cache-mb 0`).
    entries: Option<moka::sync::Cache<CacheKey, Arc<Cached>>>,
    /// Request headers that take part in the key: credentials and every forwarded header.
    vary: Vec<HeaderName>,
}

impl ResponseCache {
    pub fn new(budget_bytes: u64, vary: Vec<HeaderName>) -> Self {
        let entries = (budget_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(budget_bytes)
                .weigher(|_, c: &Arc<Cached>| {
                    u32::try_from(c.body.len() + 64 + c.deps.len() * 8).unwrap_or(u32::MAX)
                })
                // Entries are checked on every use; this only bounds how long dead ones linger.
                .time_to_live(Duration::from_secs(3600))
                .build()
        });
        ResponseCache { entries, vary }
    }

    /// The request headers that can change an upstream's answer: credentials
    /// (`Authorization`, `Cookie`) and every upstream's `forwardHeaders`. A long-lived
    /// connection keeps these of its request's headers, and no others.
    pub fn vary(&self) -> &[HeaderName] {
        &self.vary
    }

    /// The key of a request, or `None` when the cache is off.
    pub fn key(&self, req: &async_graphql::Request, ctx: &RequestContext) -> Option<CacheKey> {
        self.entries.as_ref()?;
        Some(self.identity(req, ctx))
    }

    /// What makes two requests the same operation for the same caller: the document, the
    /// operation's name, the variables, and every request header that can change an
    /// upstream's answer. Live subscriptions with one identity share one execution.
    pub fn identity(&self, req: &async_graphql::Request, ctx: &RequestContext) -> CacheKey {
        let variables = serde_json::to_vec(&req.variables).unwrap_or_default();
        let mut parts: Vec<&[u8]> = vec![
            req.query.as_bytes(),
            req.operation_name.as_deref().unwrap_or("").as_bytes(),
            &variables,
        ];
        ctx.identity_parts(&self.vary, &mut parts);
        CacheKey::from_parts(parts)
    }

    /// Who the caller is, as far as upstreams can tell: every request header that can
    /// change an upstream's answer (the credentials that key `PRIVATE` entries).
    pub fn credentials(&self, ctx: &RequestContext) -> CacheKey {
        let mut parts: Vec<&[u8]> = Vec::new();
        ctx.identity_parts(&self.vary, &mut parts);
        CacheKey::from_parts(parts)
    }

    /// The stored response, if every entry it was built from is still current.
    pub fn get(&self, key: &CacheKey) -> Option<Hit> {
        let entries = self.entries.as_ref()?;
        let cached = entries.get(key)?;
        if cached.deps.iter().all(Stamp::is_current) {
            Some(Hit {
                body: cached.body.clone(),
                read: cached.read.clone(),
            })
        } else {
            entries.invalidate(key);
            None
        }
    }

    /// Stores a response built from `deps`, unless something in it could not be vouched for.
    pub fn put(&self, key: CacheKey, body: Bytes, gathered: &Gathered) {
        if let (Some(entries), Some(deps)) = (self.entries.as_ref(), gathered.stamps.clone()) {
            let cached = Cached {
                body,
                deps,
                read: gathered.read.clone(),
            };
            entries.insert(key, Arc::new(cached));
        }
    }
}
