//! Stage ④ — one field's value. Input: the field's plan, its arguments, its parent
//! object and the client's headers. Output: a value for the executor, from the shared
//! cache, a batch, or the upstream — or a GraphQL error with an `extensions.code`.

mod batch;
pub mod nulls;
mod request;
pub mod shape;
pub mod stream;

use crate::cache::{Cache, Tag};
use crate::deps::{Dep, Deps, FetchFn, RootFetch};
use crate::live::Hub;
use crate::metrics::Metrics;
use crate::plan::{FieldPlan, Plan, RestPlan};
use crate::template::{scalar_text, Vars};
use crate::upstream::ws::Sockets;
use crate::upstream::{UpstreamClient, UpstreamError};
use async_graphql::dynamic::{FieldValue, ResolverContext};
use futures_util::FutureExt;
use http::HeaderMap;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub use batch::Batcher;
pub use shape::Node;

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

/// The client request's headers, put in the request data by the transport: the source
/// of forwarded headers and of the credentials that key `PRIVATE` entries.
#[derive(Clone, Debug, Default)]
pub struct ClientHeaders(pub HeaderMap);

type Resolved = Result<Option<FieldValue<'static>>, async_graphql::Error>;

/// A field without `@rest`: the parent object's member of the same name, or the one
/// `@map(from:)` names.
pub fn from_parent(
    plan: &Plan,
    ctx: &ResolverContext<'_>,
    field: &FieldPlan,
) -> Option<FieldValue<'static>> {
    let parent = ctx.parent_value.downcast_ref::<Node>()?;
    shape::output(plan, parent.at(&field.member), &field.ty)
}

/// A field with `@rest`; its errors are reported here, with their path, and the field
/// becomes null (async-graphql's dynamic executor drops the path of an error a resolver
/// returns, so resolvers never return one).
pub async fn rest_field(
    rt: &Arc<Runtime>,
    field: &Arc<FieldPlan>,
    rest: &RestPlan,
    ctx: ResolverContext<'_>,
    mutation: bool,
) -> Resolved {
    let ctx_ref = ctx.ctx;
    match resolve_rest(rt, field, rest, ctx, mutation).await {
        Ok(v) => Ok(v),
        Err(e) => {
            ctx_ref.add_error(ctx_ref.set_error_path(e.into_server_error(ctx_ref.item.pos)));
            Ok(None)
        }
    }
}

/// The message async-graphql gives a non-null field that resolved to null: noise after
/// the error that made it null, which transports drop (see [`tidy_errors`]).
const NON_NULL_NOISE: &str = "internal: non-null types require a return value";

/// Drops the executor's "non-null … return value" error where a resolver already
/// reported why that field is null.
pub fn tidy_errors(errors: &mut Vec<async_graphql::ServerError>) {
    let explained: Vec<Vec<async_graphql::PathSegment>> = errors
        .iter()
        .filter(|e| e.message != NON_NULL_NOISE)
        .map(|e| e.path.clone())
        .collect();
    errors.retain(|e| e.message != NON_NULL_NOISE || !explained.contains(&e.path));
}

/// Mutations go straight to the upstream (never cached, never
/// coalesced: two identical mutations are two mutations) and then invalidate their tags.
async fn resolve_rest(
    rt: &Arc<Runtime>,
    field: &Arc<FieldPlan>,
    rest: &RestPlan,
    ctx: ResolverContext<'_>,
    mutation: bool,
) -> Resolved {
    let args = args_json(&ctx);
    let parent = ctx.parent_value.downcast_ref::<Node>();
    let vars = Vars {
        args: &args,
        parent: parent.map(Node::value),
    };
    let empty = ClientHeaders::default();
    let headers = &ctx.data_opt::<ClientHeaders>().unwrap_or(&empty).0;
    let no_deps = Deps::default();
    let deps: &Deps = ctx
        .data_opt::<Arc<Deps>>()
        .map(|d| &**d)
        .unwrap_or(&no_deps);
    let gql = |e: UpstreamError| e.to_graphql();

    if mutation {
        deps.spoil();
        let req = request::build(rest, vars, headers, None).map_err(gql)?;
        let value = select(rest, rt.client.send(&req).await).map_err(gql)?.value;
        shape::check(&rt.plan, &value, &field.ty).map_err(|d| bad(rest, d).to_graphql())?;
        let tags = request::render_tags(&field.invalidates, vars);
        if !tags.is_empty() {
            rt.metrics
                .invalidations
                .with_label_values(&["mutation"])
                .inc();
            let dropped = rt.invalidate(&tags).await;
            tracing::debug!(field = %field.name, ?tags, dropped, "mutation invalidated");
        }
        return Ok(shape::output(
            &rt.plan,
            Node::new(Arc::new(value)),
            &field.ty,
        ));
    }

    if let (Some(batch), Some(_)) = (&rest.batch, parent) {
        return batched(rt, field, rest, batch, vars, headers, deps).await;
    }

    let req = request::build(rest, vars, headers, None).map_err(gql)?;
    let scope = rest
        .cache
        .as_ref()
        .map(|c| c.scope)
        .unwrap_or(crate::config::Scope::Public);
    let key = request::cache_key(&req, scope, headers);
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
                shape::check(&rt.plan, &answer.value, &field.ty).map_err(|detail| {
                    UpstreamError::BadResponse {
                        upstream: req.upstream.name.clone(),
                        detail,
                    }
                })?;
                Ok(answer)
            }
            .boxed()
        })
    };
    let value = match key {
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
            loaded.value
        }
        // PRIVATE and anonymous: nothing to share this with, not even a flight.
        None => {
            deps.spoil();
            fetch(Default::default()).await.map(|a| Arc::new(a.value))
        }
    }
    .map_err(gql)?;
    Ok(shape::output(&rt.plan, Node::new(value), &field.ty))
}

async fn batched(
    rt: &Arc<Runtime>,
    field: &Arc<FieldPlan>,
    rest: &RestPlan,
    batch: &crate::plan::Batch,
    vars: Vars<'_>,
    headers: &HeaderMap,
    deps: &Deps,
) -> Resolved {
    let gql = |e: UpstreamError| e.to_graphql();
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
    let item = request::build(rest, vars, headers, None).map_err(gql)?;
    let item_key = request::cache_key(&item, scope, headers);
    let public = scope == crate::config::Scope::Public;
    let policy = request::policy(rest, vars);
    let dep = item_key.map(|key| Dep {
        key,
        tags: policy.as_ref().map(|p| p.tags.clone()).unwrap_or_default(),
    });
    if let Some((hit, stamp)) = item_key.as_ref().and_then(|k| rt.cache.peek(k)) {
        rt.metrics.cache_lookups.with_label_values(&["hit"]).inc();
        deps.add(dep, Some(stamp).filter(|_| public));
        return Ok(shape::output(&rt.plan, Node::new(hit), &field.ty));
    }
    rt.metrics.cache_lookups.with_label_values(&["miss"]).inc();
    let epoch = rt.cache.epoch();
    let base = request::build(rest, vars, headers, Some(&batch.param)).map_err(gql)?;
    let group = request::batch_group(&base, headers);
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
        })
        .map_err(gql)?;
    shape::check(&rt.plan, &answer.value, &field.ty).map_err(|d| bad(rest, d).to_graphql())?;
    if !answer.shareable {
        rt.warn_unshareable(&field.name, rest.cache.is_some());
    }
    let share = Arc::new(answer.value);
    let stamp = match (item_key, policy) {
        (Some(key), Some(policy)) if answer.shareable => {
            rt.cache
                .store(key, policy, share.clone(), answer.size, epoch)
        }
        _ => None,
    };
    deps.add(dep, stamp.filter(|_| public));
    Ok(shape::output(&rt.plan, Node::new(share), &field.ty))
}

/// The part of an upstream answer the field's `select` names (all of it without one);
/// an answer without that part is a bad response.
fn select(
    rest: &RestPlan,
    answer: Result<crate::upstream::Answer, UpstreamError>,
) -> Result<crate::upstream::Answer, UpstreamError> {
    shape::select(answer?, &rest.select, &rest.upstream.name)
}

fn bad(rest: &RestPlan, detail: String) -> UpstreamError {
    UpstreamError::BadResponse {
        upstream: rest.upstream.name.clone(),
        detail,
    }
}

/// The field's arguments as one JSON object, what `{args…}` templates read.
pub(crate) fn args_json(ctx: &ResolverContext<'_>) -> Value {
    Value::Object(
        ctx.args
            .as_index_map()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into_json().unwrap_or(Value::Null)))
            .collect(),
    )
}
