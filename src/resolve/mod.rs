//! Stage ④ — one field's value. Input: the field's plan, its arguments, its parent
//! object and the client's headers. Output: a value for the executor, from the shared
//! cache, a batch, or the upstream — or a GraphQL error with an `extensions.code`.

mod batch;
mod request;
pub mod shape;
pub mod stream;

use crate::cache::{Cache, CacheKey, Tag};
use crate::deps::{Dep, Deps, FetchFn, RootFetch};
use crate::metrics::Metrics;
use crate::plan::{FieldPlan, Plan, RestPlan};
use crate::request::RequestContext;
use crate::template::{scalar_text, Vars};
use crate::upstream::ws::Sockets;
use crate::upstream::{UpstreamClient, UpstreamError};
use crate::watch::Hub;
use futures_util::FutureExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub use batch::Batcher;

/// Everything resolvers share: the plan and the runtime services behind it.
pub struct Runtime {
    pub plan: Arc<Plan>,
    pub cache: Cache,
    pub client: UpstreamClient,
    pub batcher: Batcher,
    pub hub: Arc<Hub>,
    pub sockets: Arc<Sockets>,
    pub metrics: Arc<Metrics>,
    /// Invalidations reach the other replicas through it.
    pub bus: crate::bus::Bus,
    /// Largest response one operation may write (`--max-response-bytes`).
    pub max_response: usize,
    /// Fields already warned about (see [`Runtime::warn_unshareable`]).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Runtime {
    pub fn new(
        plan: Arc<Plan>,
        cache: Cache,
        client: UpstreamClient,
        batch_window: Duration,
        live_grace: Duration,
        sockets: Arc<Sockets>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let bus = cache.bus().clone();
        let batcher = Batcher::new(client.clone(), batch_window);
        let hub = Hub::new(cache.clone(), live_grace, sockets.clone());
        Runtime {
            plan,
            cache,
            client,
            batcher,
            hub,
            sockets,
            metrics,
            bus,
            max_response: 32 << 20,
            warned: Default::default(),
        }
    }

    /// The runtime of a reloaded schema: `plan`, and everything else of this one — the
    /// cache (entries whose request did not change stay), the upstream client, the live
    /// hub and its pollers, the upstream sockets, the metrics, the bus.
    pub fn reloaded(&self, plan: Arc<Plan>) -> Runtime {
        Runtime {
            plan,
            cache: self.cache.clone(),
            client: self.client.clone(),
            batcher: self.batcher.clone(),
            hub: self.hub.clone(),
            sockets: self.sockets.clone(),
            metrics: self.metrics.clone(),
            bus: self.bus.clone(),
            max_response: self.max_response,
            warned: Default::default(),
        }
    }

    /// Drops the entries filed under `tags`, here and on every other replica, and wakes
    /// the live queries that read them (each refetches through the cache: one upstream
    /// request per entry). The other replicas are told first, which also drops the
    /// shared second-level entries, so the refetches here cannot find the old value
    /// there. Returns how many entries this replica dropped.
    pub async fn invalidate(&self, tags: &[Tag]) -> usize {
        self.bus.invalidated(tags).await;
        self.invalidate_local(tags)
    }

    /// What another replica said changed, applied here.
    pub fn apply_remote(&self, remote: crate::bus::Remote) {
        match remote {
            crate::bus::Remote::Tags(tags) => {
                self.invalidate_local(&tags);
            }
            crate::bus::Remote::Everything => {
                self.cache.invalidate_all();
                self.hub.changed_all();
            }
            crate::bus::Remote::Changed(keys) => {
                for key in &keys {
                    self.cache.forget(key);
                }
                self.hub.changed(&keys);
            }
        }
    }

    /// Says once per field that its upstream forbade a shared cache to keep its answers,
    /// when the schema asked to cache them (`@cache` on a field whose upstream marks
    /// answers `private` is a mistake: it is served uncached).
    pub fn warn_unshareable(&self, field: &str, cached: bool) {
        if !cached {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert(field.to_string()) {
            tracing::warn!(field, "the upstream marks this field's answers Cache-Control private or no-store: they are served to the caller and never cached, whatever @cache says");
        }
    }

    /// [`Runtime::invalidate`] on this replica only.
    pub fn invalidate_local(&self, tags: &[Tag]) -> usize {
        let mut keys: std::collections::HashSet<_> =
            self.cache.invalidate(tags).into_iter().collect();
        keys.extend(self.hub.invalidated(tags));
        self.metrics.invalidated_entries.inc_by(keys.len() as u64);
        keys.len()
    }
}

/// What a `@rest` field is called with.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The field's arguments as one JSON object (what `{args…}` reads).
    pub args: &'a Value,
    /// The parent object's upstream data (what `{parent…}` reads); `None` at the root.
    pub parent: Option<&'a Value>,
    pub ctx: &'a RequestContext,
    /// Collects the cache entries read.
    pub deps: &'a Deps,
    pub mutation: bool,
}

/// A `@rest` field's value: the selected part of the upstream answer, and the cache
/// entry it came from (`None`: not from a shared entry).
#[derive(Clone)]
pub struct Fetched {
    pub value: Arc<Value>,
    pub key: Option<CacheKey>,
}

/// Fetches a `@rest` field's value through the shared cache (a batch, for a `batchKey`
/// field); `None` when a batched field's parent has no key. Mutations go straight to the
/// upstream (never cached, never coalesced: two identical mutations are two mutations)
/// and then invalidate their tags. The value is upstream-shaped and not checked against
/// the field's type: the executor completes what is selected.
pub async fn fetch(
    rt: &Arc<Runtime>,
    field: &Arc<FieldPlan>,
    rest: &RestPlan,
    call: Call<'_>,
) -> Result<Option<Fetched>, UpstreamError> {
    let parent = call.parent;
    let vars = Vars {
        args: call.args,
        parent,
    };
    let ctx = call.ctx;
    let deps = call.deps;

    if call.mutation {
        deps.spoil();
        let req = request::build(rest, vars, ctx, None)?;
        let value = select(rest, rt.client.send(&req).await)?.value;
        let tags = request::render_tags(&field.invalidates, vars);
        if !tags.is_empty() {
            rt.metrics
                .invalidations
                .with_label_values(&["mutation"])
                .inc();
            let dropped = rt.invalidate(&tags).await;
            tracing::debug!(field = %field.name, ?tags, dropped, "mutation invalidated");
        }
        return Ok(Some(Fetched {
            value: Arc::new(value),
            key: None,
        }));
    }

    if let (Some(batch), Some(_)) = (&rest.batch, parent) {
        return batched(rt, field, rest, batch, vars, ctx, deps).await;
    }

    let req = request::build(rest, vars, ctx, None)?;
    let scope = rest
        .cache
        .as_ref()
        .map(|c| c.scope)
        .unwrap_or(crate::config::Scope::Public);
    let key = request::cache_key(&req, scope, ctx);
    let policy = request::policy(rest, vars);
    let rest_cached = rest.cache.is_some();
    let fetch: FetchFn = {
        let rt = rt.clone();
        let field = field.clone();
        let req = Arc::new(req);
        Arc::new(move |validators: crate::upstream::Validators| {
            let rt = rt.clone();
            let field = field.clone();
            let req = req.clone();
            async move {
                let sent = rt.client.send_if(&req, &validators).await;
                let answer = match &field.rest {
                    Some(rest) => select(rest, sent)?,
                    None => sent?,
                };
                if answer.not_modified {
                    return Ok(answer);
                }
                if !answer.shareable {
                    rt.warn_unshareable(&field.name, rest_cached);
                }
                Ok(answer)
            }
            .boxed()
        })
    };
    match key {
        Some(key) => {
            if let (None, Some(policy)) = (parent, &policy) {
                let updates = field.updates.as_ref().map(|u| crate::deps::Feed {
                    plan: u.clone(),
                    when: u
                        .source
                        .when
                        .iter()
                        .map(|(f, t)| (f.clone(), t.render_string(vars)))
                        .collect(),
                });
                let fits = {
                    let rt = rt.clone();
                    let field = field.clone();
                    Arc::new(move |v: &Value| shape::check(&rt.plan, v, &field.ty).is_ok())
                };
                deps.set_root(RootFetch {
                    key,
                    policy: policy.clone(),
                    fetch: fetch.clone(),
                    updates,
                    fits,
                });
            }
            let tags = policy.as_ref().map(|p| p.tags.clone()).unwrap_or_default();
            let loaded = rt
                .cache
                .load(key, policy, move |validators| fetch(validators))
                .await;
            let outcome = match loaded.outcome {
                crate::cache::Outcome::Hit => "hit",
                crate::cache::Outcome::Stale => "stale",
                crate::cache::Outcome::Miss => "miss",
            };
            rt.metrics.cache_lookups.with_label_values(&[outcome]).inc();
            // A private value must not end up in a response another caller could reuse.
            deps.add(
                Some(Dep { key, tags }),
                loaded
                    .stamp
                    .filter(|_| scope == crate::config::Scope::Public),
            );
            Ok(Some(Fetched {
                value: loaded.value?,
                key: Some(key),
            }))
        }
        // PRIVATE and anonymous: nothing to share this with, not even a flight.
        None => {
            deps.spoil();
            Ok(Some(Fetched {
                value: Arc::new(fetch(Default::default()).await?.value),
                key: None,
            }))
        }
    }
}

async fn batched(
    rt: &Arc<Runtime>,
    field: &Arc<FieldPlan>,
    rest: &RestPlan,
    batch: &crate::plan::Batch,
    vars: Vars<'_>,
    ctx: &RequestContext,
    deps: &Deps,
) -> Result<Option<Fetched>, UpstreamError> {
    let param = rest
        .query
        .iter()
        .find(|(name, _)| *name == batch.param)
        .map(|(_, t)| t);
    let Some(value) = param.and_then(|t| scalar_text(&t.render_json(vars))) else {
        // No key in the parent: nothing to look up.
        return Ok(None);
    };
    let scope = rest
        .cache
        .as_ref()
        .map(|c| c.scope)
        .unwrap_or(crate::config::Scope::Public);
    // Each item is cached under the key of its own unbatched request.
    let item = request::build(rest, vars, ctx, None)?;
    let item_key = request::cache_key(&item, scope, ctx);
    let public = scope == crate::config::Scope::Public;
    let policy = request::policy(rest, vars);
    let dep = item_key.map(|key| Dep {
        key,
        tags: policy.as_ref().map(|p| p.tags.clone()).unwrap_or_default(),
    });
    if let Some((hit, stamp)) = item_key.as_ref().and_then(|k| rt.cache.peek(k)) {
        rt.metrics.cache_lookups.with_label_values(&["hit"]).inc();
        deps.add(dep, Some(stamp).filter(|_| public));
        return Ok(Some(Fetched {
            value: hit,
            key: item_key,
        }));
    }
    rt.metrics.cache_lookups.with_label_values(&["miss"]).inc();
    let epoch = rt.cache.epoch();
    let base = request::build(rest, vars, ctx, Some(&batch.param))?;
    let group = request::batch_group(&base, ctx);
    let spec = batch::BatchSpec {
        select: rest.select.clone(),
        base,
        param: batch.param.clone(),
        key_field: batch.key.clone(),
        list: field.ty.is_list(),
    };
    let answer = rt
        .batcher
        .join(group, spec, value)
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::Unavailable {
                upstream: rest.upstream.name.clone(),
                detail: "batch dropped".into(),
            })
        })?;
    if !answer.shareable {
        rt.warn_unshareable(&field.name, rest.cache.is_some());
    }
    let share = Arc::new(answer.value);
    let stamp = match (item_key, policy) {
        (Some(key), Some(policy)) if answer.shareable => {
            rt.cache.store(key, policy, share.clone(), epoch)
        }
        _ => None,
    };
    deps.add(dep, stamp.filter(|_| public));
    Ok(Some(Fetched {
        value: share,
        key: item_key.filter(|_| answer.shareable),
    }))
}

/// The part of an upstream answer the field's `select` names (all of it without one);
/// an answer without that part is a bad response.
fn select(
    rest: &RestPlan,
    answer: Result<crate::upstream::Answer, UpstreamError>,
) -> Result<crate::upstream::Answer, UpstreamError> {
    shape::select(answer?, &rest.select, &rest.upstream.name)
}
