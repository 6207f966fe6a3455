//! Stage ④ — one field's value. Input: the field's plan, its arguments, its parent
//! object and the request's context. Output: a value for the executor, from the shared
//! cache, a batch, or the upstream — or a GraphQL error with an `extensions.code`.

mod request;
pub mod shape;
pub mod stream;

use crate::cache::CacheKey;
use crate::deps::{Dep, Deps, FetchFn, RootFetch};
use crate::plan::{FieldPlan, Plan, RestPlan};
use crate::request::RequestContext;
use crate::services::Services;
use crate::template::{scalar_text, Vars};
use crate::upstream::UpstreamError;
use futures_util::FutureExt;
use serde_json::Value;
use std::sync::Arc;

/// What resolvers share: the plan in service, and the process-lifetime services behind
/// it (which it dereferences to: `rt.cache`, `rt.hub`, …).
pub struct Runtime {
    pub plan: Arc<Plan>,
    pub services: Arc<Services>,
}

impl std::ops::Deref for Runtime {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

impl Runtime {
    pub fn new(plan: Arc<Plan>, services: Arc<Services>) -> Self {
        Runtime { plan, services }
    }

    /// The runtime of a reloaded schema: `plan`, and the same services (the cache, whose
    /// entries stay where their request did not change, the upstream client, the live
    /// hub and its pollers, the event sources, the metrics, the bus).
    pub fn reloaded(&self, plan: Arc<Plan>) -> Runtime {
        Runtime {
            plan,
            services: self.services.clone(),
        }
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
    /// Served past its freshness because refreshing it failed (`staleIfError`): the
    /// failure's code.
    pub stale: Option<Arc<str>>,
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
    if !rt.telemetry.is_on() {
        return fetch_field(rt, field, rest, call).await;
    }
    use crate::telemetry::Attr;
    let span = rt.telemetry.child(
        "upstream.fetch",
        opentelemetry::trace::SpanKind::Internal,
        vec![
            Attr::new("graphql.field.name", field.name.clone()),
            Attr::new("livegate.upstream", rest.upstream.name.clone()),
            Attr::new("http.request.method", rest.method.as_str()),
            Attr::new("url.template", rest.route.to_string()),
        ],
    );
    let fetched = span.run(fetch_field(rt, field, rest, call)).await;
    if let Err(e) = &fetched {
        span.set("error.type", e.code().to_string());
        span.fail(e.code().to_string());
    }
    fetched
}

/// Says how the shared cache answered, on the current (`upstream.fetch`) span.
fn traced_outcome(rt: &Runtime, outcome: &'static str) {
    if rt.telemetry.is_on() {
        crate::telemetry::annotate(&[crate::telemetry::Attr::new("livegate.cache", outcome)]);
    }
}

async fn fetch_field(
    rt: &Arc<Runtime>,
    field: &Arc<FieldPlan>,
    rest: &RestPlan,
    call: Call<'_>,
) -> Result<Option<Fetched>, UpstreamError> {
    let parent = call.parent;
    let vars = Vars {
        args: call.args,
        parent,
        claims: call.ctx.identity().map(|i| &i.claims),
        event: None,
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
            let dropped = rt.invalidate(&tags, "mutation").await;
            tracing::debug!(field = %field.name, ?tags, dropped, "mutation invalidated");
        }
        return Ok(Some(Fetched {
            value: Arc::new(value),
            key: None,
            stale: None,
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
                // A subject whose values would widen it is no feed (its subscriptions
                // still get the entry, refreshed by its other means).
                let updates = field.updates.as_ref().and_then(|u| {
                    let stream = u.source.stream_for(vars).ok()?.into_owned();
                    Some((u, stream))
                });
                let updates = updates.map(|(u, stream)| crate::deps::Feed {
                    plan: u.clone(),
                    stream,
                    when: u
                        .source
                        .when
                        .iter()
                        .map(|(f, t)| (f.clone(), t.render_string(vars)))
                        .collect(),
                    ctx: ctx.clone(),
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
            let hot = &rt.metrics.hot;
            traced_outcome(
                rt,
                match loaded.outcome {
                    crate::cache::Outcome::Hit => "hit",
                    crate::cache::Outcome::Stale => "stale",
                    crate::cache::Outcome::Miss if loaded.joined => "coalesced",
                    crate::cache::Outcome::Miss => "miss",
                    crate::cache::Outcome::StaleIfError => "stale_if_error",
                },
            );
            match loaded.outcome {
                crate::cache::Outcome::Hit => hot.cache_hit.inc(),
                crate::cache::Outcome::Stale => hot.cache_stale.inc(),
                crate::cache::Outcome::Miss => hot.cache_miss.inc(),
                crate::cache::Outcome::StaleIfError => {
                    hot.cache_stale.inc();
                    rt.metrics
                        .stale_if_error
                        .with_label_values(&[rest.upstream.name.as_str()])
                        .inc();
                }
            }
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
                stale: loaded.failed.map(|e| Arc::from(e.code())),
            }))
        }
        // PRIVATE and anonymous: nothing to share this with, not even a flight.
        None => {
            deps.spoil();
            Ok(Some(Fetched {
                value: Arc::new(fetch(Default::default()).await?.value),
                key: None,
                stale: None,
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
        traced_outcome(rt, "hit");
        rt.metrics.hot.cache_hit.inc();
        deps.add(dep, Some(stamp).filter(|_| public));
        return Ok(Some(Fetched {
            value: hit,
            key: item_key,
            stale: None,
        }));
    }
    rt.metrics.hot.cache_miss.inc();
    traced_outcome(rt, "batched");
    let epoch = rt.cache.epoch();
    let base = request::build(rest, vars, ctx, Some(&batch.param))?;
    let group = request::batch_group(&base, ctx);
    let spec = crate::upstream::batch::BatchSpec {
        select: rest.select.clone(),
        base,
        param: batch.param.clone(),
        join: batch.join.clone(),
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
        stale: None,
    }))
}

/// The part of an upstream answer the field's `select` names (all of it without one);
/// an answer without that part is a bad response.
fn select(
    rest: &RestPlan,
    answer: Result<crate::upstream::Answer, UpstreamError>,
) -> Result<crate::upstream::Answer, UpstreamError> {
    let mut answer = answer?.select(&rest.select, &rest.upstream.name)?;
    if !answer.not_modified && !rest.keep_headers.is_empty() {
        keep_headers(rest, &mut answer);
    }
    Ok(answer)
}

/// Puts the response headers the returned object's fields read into it, where those
/// fields look ([`crate::config::HEADERS`], [`crate::config::LINKS`]): for a field that
/// is not a `String` or `ID`, a header that reads as a JSON number is one
/// (`X-Total-Count: 42` fits an `Int`), else a string; a header given several times
/// keeps its first value. A body that is not an object has
/// no room for them.
fn keep_headers(rest: &RestPlan, answer: &mut crate::upstream::Answer) {
    let Value::Object(object) = &mut answer.value else {
        return;
    };
    let mut headers = serde_json::Map::new();
    for (name, text) in &answer.headers {
        let Some((_, as_number)) = rest.read_headers.iter().find(|(h, _)| h == name) else {
            continue;
        };
        if !headers.contains_key(name) {
            let number = as_number
                .then(|| text.trim().parse::<serde_json::Number>().ok())
                .flatten();
            let value = match number {
                Some(n) => Value::Number(n),
                None => Value::String(text.clone()),
            };
            headers.insert(name.clone(), value);
        }
    }
    object.insert(crate::config::HEADERS.into(), Value::Object(headers));
    if rest.read_links {
        let mut links = serde_json::Map::new();
        for (_, text) in answer.headers.iter().filter(|(n, _)| n == "link") {
            for (rel, url) in links_of(text) {
                links.entry(rel).or_insert(Value::String(url));
            }
        }
        object.insert(crate::config::LINKS.into(), Value::Object(links));
    }
}

/// The (relation, URL) pairs of an RFC 8288 `Link` header:
/// `<https://api/x?page=2>; rel="next", <…>; rel="last"`. A link with several relations
/// (`rel="next last"`) counts for each.
fn links_of(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let url = &rest[open + 1..open + close];
        let after = &rest[open + close + 1..];
        // The parameters run to the next link (its `<`) or the end, less the comma
        // between the two.
        let end = after.find('<').unwrap_or(after.len());
        let params = after[..end].trim_end().trim_end_matches(',');
        for param in params.split(';') {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("rel") {
                for rel in value.trim().trim_matches('"').split_whitespace() {
                    out.push((rel.to_ascii_lowercase(), url.to_string()));
                }
            }
        }
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod link_tests {
    #[test]
    fn link_headers_give_each_relation_its_url() {
        let got = super::links_of(
            "<https://a.example/x?page=2&q=a,b>; rel=\"next\",<https://a.example/x?page=9>;REL=\"last  end\" ; title=\"x\", </first>; rel=first",
        );
        assert_eq!(
            got,
            vec![
                (
                    "next".to_string(),
                    "https://a.example/x?page=2&q=a,b".to_string()
                ),
                ("last".to_string(), "https://a.example/x?page=9".to_string()),
                ("end".to_string(), "https://a.example/x?page=9".to_string()),
                ("first".to_string(), "/first".to_string()),
            ]
        );
        assert!(super::links_of("not a link").is_empty());
        assert!(super::links_of("<unclosed; rel=next").is_empty());
    }
}
