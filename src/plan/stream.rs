//! Planning `@updates` (a Query field's cache entry patched from an upstream WebSocket)
//! and `@stream` (a Subscription field whose events are upstream WebSocket messages).

use super::{ArgPlan, FieldCtx, Role, UpstreamPlan};
use crate::config::{Errors, FieldConfig, SourceDirective, TypeRef};
use crate::template::Template;
use async_graphql_parser::Positioned;
use std::sync::Arc;

/// Which messages of which stream.
#[derive(Debug)]
pub struct SourcePlan {
    pub stream: StreamPlan,
    /// A member path of the message (or, when the message has none there, of the selected
    /// payload) → the value it must have, rendered from the arguments.
    pub when: Vec<(Vec<String>, Template)>,
    /// Where the payload sits inside a message (`data.message` → `["data", "message"]`).
    pub select: Vec<String>,
    /// A NATS subject or Redis channel that reads arguments or claims: rendered per
    /// subscription into the stream it taps (`stream` then holds the template's text).
    pub subject: Option<Template>,
}

impl SourcePlan {
    /// The stream a subscription with these values taps: `stream`, or for a templated
    /// NATS subject, the subject rendered — `Err` when a value would add subject tokens
    /// or wildcards (`.`, `*`, `>`, spaces), which would widen the subscription.
    pub fn stream_for(
        &self,
        vars: crate::template::Vars<'_>,
    ) -> Result<std::borrow::Cow<'_, StreamPlan>, String> {
        let Some(t) = &self.subject else {
            return Ok(std::borrow::Cow::Borrowed(&self.stream));
        };
        let mut bad = None;
        match &self.stream {
            StreamPlan::Nats {
                upstream,
                jetstream,
                subject: text,
                ..
            } => {
                let subject = t.render_with_values(vars, |v| {
                    if v.is_empty() || v.contains(['.', '*', '>', ' ', '\t', '\r', '\n']) {
                        bad = Some(v.to_string());
                    }
                });
                match (subject, bad) {
                    (_, Some(v)) => Err(format!(
                        "{v:?} cannot be a token of a NATS subject (no `.`, `*`, `>` or spaces)"
                    )),
                    (Some(subject), None) => Ok(std::borrow::Cow::Owned(StreamPlan::Nats {
                        upstream: upstream.clone(),
                        subject,
                        jetstream: jetstream.clone(),
                        shown: t.reads_claims().then(|| Arc::from(text.as_str())),
                    })),
                    (None, None) => Err("a value of the NATS subject is missing".into()),
                }
            }
            // SUBSCRIBE (not PSUBSCRIBE): no value can widen a channel.
            StreamPlan::Redis {
                upstream,
                kind,
                name: text,
                ..
            } => match t.render_complete(vars) {
                Some(name) if !name.is_empty() => Ok(std::borrow::Cow::Owned(StreamPlan::Redis {
                    upstream: upstream.clone(),
                    name,
                    kind: *kind,
                    shown: t.reads_claims().then(|| Arc::from(text.as_str())),
                })),
                _ => Err("a value of the Redis channel is missing".into()),
            },
            _ => Ok(std::borrow::Cow::Borrowed(&self.stream)),
        }
    }
}

/// Where the messages come from: one connection per planned stream, shared by every
/// entry and subscription it feeds ([`crate::events::Sources`]). One variant per kind of
/// event source.
#[derive(Debug, Clone)]
pub enum StreamPlan {
    /// An upstream WebSocket at a constant `path` on `upstream`.
    WebSocket {
        upstream: Arc<UpstreamPlan>,
        path: String,
    },
    /// An upstream Server-Sent Events stream at a constant `path` on `upstream`
    /// (`protocol: SSE`).
    Sse {
        upstream: Arc<UpstreamPlan>,
        path: String,
    },
    /// The deliveries of a `@webhook` receiver.
    Webhook { hook: Arc<super::WebhookPlan> },
    /// A NATS subject (wildcards allowed) on a `nats://` upstream; with `jetstream`,
    /// read from that JetStream stream through this replica's durable consumer.
    Nats {
        upstream: Arc<UpstreamPlan>,
        subject: String,
        jetstream: Option<String>,
        /// What logs call a subject rendered from the caller's claims: its template.
        shown: Option<Arc<str>>,
    },
    /// A Redis `PUBLISH` channel (`Channel`) or Stream (`Stream`) on a `redis://`
    /// upstream.
    Redis {
        upstream: Arc<UpstreamPlan>,
        name: String,
        kind: RedisKind,
        /// What logs call a channel rendered from the caller's claims: its template.
        shown: Option<Arc<str>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisKind {
    Channel,
    Stream,
}

impl StreamPlan {
    /// What makes two planned streams one connection: the kind and what it connects to
    /// (the upstream's URL included: a reload that points it elsewhere opens a new one).
    pub fn key(&self) -> String {
        match self {
            StreamPlan::WebSocket { upstream, path } => {
                format!("ws\0{}\0{path}\0{}", upstream.name, upstream.url)
            }
            StreamPlan::Sse { upstream, path } => {
                format!("sse\0{}\0{path}\0{}", upstream.name, upstream.url)
            }
            StreamPlan::Webhook { hook } => format!("hook\0{}", hook.name),
            StreamPlan::Nats {
                upstream,
                subject,
                jetstream,
                ..
            } => format!(
                "nats\0{}\0{subject}\0{}\0{}",
                upstream.name,
                upstream.url,
                jetstream.as_deref().unwrap_or("")
            ),
            StreamPlan::Redis {
                upstream,
                name,
                kind,
                ..
            } => format!(
                "redis\0{}\0{kind:?}\0{name}\0{}",
                upstream.name, upstream.url
            ),
        }
    }

    /// The kind of source, as metrics and traces name it.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamPlan::WebSocket { .. } => "websocket",
            StreamPlan::Sse { .. } => "sse",
            StreamPlan::Webhook { .. } => "webhook",
            StreamPlan::Nats { .. } => "nats",
            StreamPlan::Redis { .. } => "redis",
        }
    }

    /// The stream's lease among replicas (one holder reads it for the cluster).
    pub fn lease_name(&self) -> String {
        match self {
            StreamPlan::WebSocket { upstream, path } => format!("sock:{}:{path}", upstream.name),
            StreamPlan::Sse { upstream, path } => format!("sse:{}:{path}", upstream.name),
            StreamPlan::Webhook { hook } => format!("hook:{}", hook.name),
            StreamPlan::Nats {
                upstream, subject, ..
            } => format!("nats:{}:{subject}", upstream.name),
            StreamPlan::Redis {
                upstream,
                name,
                kind,
                ..
            } => format!("redis:{}:{kind:?}:{name}", upstream.name),
        }
    }

    /// The upstream it belongs to (a webhook's deliveries have none).
    pub fn upstream(&self) -> Option<&Arc<UpstreamPlan>> {
        match self {
            StreamPlan::WebSocket { upstream, .. }
            | StreamPlan::Sse { upstream, .. }
            | StreamPlan::Redis { upstream, .. }
            | StreamPlan::Nats { upstream, .. } => Some(upstream),
            StreamPlan::Webhook { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Append,
    Prepend,
    Upsert,
    Merge,
    Replace,
    Remove,
    Refetch,
}

#[derive(Debug)]
pub struct UpdatesPlan {
    pub source: SourcePlan,
    pub apply: Apply,
    /// The item field that identifies list items (UPSERT, REMOVE, MERGE into a list).
    pub key: Option<String>,
}

pub(super) fn source(
    ctx: &FieldCtx<'_>,
    d: &SourceDirective,
    args: &[ArgPlan],
    name: &str,
    errors: &mut Errors,
) -> Option<SourcePlan> {
    if let Some(w) = &d.webhook {
        let Some(hook) = ctx.webhooks.get(&w.node) else {
            let known: Vec<&str> = ctx.webhooks.keys().map(String::as_str).collect();
            errors.push(
                w.pos,
                format!(
                    "@{name}(webhook: {:?}) names no @webhook; known: {}",
                    w.node,
                    known.join(", ")
                ),
            );
            return None;
        };
        let when = when(d, args, ctx, errors);
        let select = super::rest::dotted(name, d.select.as_ref(), "data.object", errors);
        return Some(SourcePlan {
            stream: StreamPlan::Webhook { hook: hook.clone() },
            when,
            select,
            subject: None,
        });
    }
    let upstream = super::upstream(ctx, &d.upstream, name, errors);
    if let Some(u) = upstream.as_ref().filter(|u| u.is_redis()) {
        let (named, kind) = match (&d.channel, &d.stream) {
            (Some(c), None) => (c, RedisKind::Channel),
            (None, Some(s)) => (s, RedisKind::Stream),
            _ => {
                errors.push(
                    d.upstream.pos,
                    format!("@{name} on the Redis upstream {:?} needs `channel:` (a PUBLISH channel) or `stream:` (a Stream's key), one of them", u.name),
                );
                return None;
            }
        };
        // A channel may read arguments and claims (each rendered channel is one
        // subscription, so Redis does the filtering); a Stream's key is constant.
        let template = super::rest::template(named, args, ctx, false, errors)?;
        let templated = !template.is_constant();
        if named.node.is_empty() || (templated && kind == RedisKind::Stream) {
            errors.push(named.pos, format!("@{name}: a Redis Stream's key is a constant name (one reader serves every subscriber; filter with `when`)"));
        }
        if !d.path.node.is_empty() {
            errors.push(d.path.pos, format!("@{name}: a Redis source has no `path`"));
        }
        if let Some(js) = &d.jetstream {
            errors.push(
                js.pos,
                format!("@{name}: `jetStream:` is for NATS upstreams (nats://)"),
            );
        }
        let when = when(d, args, ctx, errors);
        let select = super::rest::dotted(name, d.select.as_ref(), "data", errors);
        return Some(SourcePlan {
            stream: StreamPlan::Redis {
                upstream: u.clone(),
                name: named.node.clone(),
                kind,
                shown: None,
            },
            when,
            select,
            subject: templated.then_some(template),
        });
    }
    if let Some(u) = upstream.as_ref().filter(|u| u.is_nats()) {
        let Some(subject) = &d.subject else {
            errors.push(
                d.upstream.pos,
                format!("@{name} on the NATS upstream {:?} needs `subject:` (like \"orders.{{args.id}}\")", u.name),
            );
            return None;
        };
        if !d.path.node.is_empty() {
            errors.push(d.path.pos, format!("@{name}: a NATS source has no `path`"));
        }
        let template = super::rest::template(subject, args, ctx, false, errors)?;
        let templated = !template.is_constant();
        let jetstream = d.jetstream.as_ref().and_then(|js| {
            let named = |s: &str| {
                !s.is_empty()
                    && s.len() <= 255
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            if !named(&js.node) {
                errors.push(js.pos, format!("@{name}(jetStream: {:?}) must name a JetStream stream (letters, digits, `_`, `-`)", js.node));
                return None;
            }
            if templated {
                errors.push(subject.pos, format!("@{name}: a JetStream subject is constant (one durable consumer per replica serves every subscriber; filter with `when`)"));
                return None;
            }
            Some(js.node.clone())
        });
        let when = when(d, args, ctx, errors);
        let select = super::rest::dotted(name, d.select.as_ref(), "data", errors);
        return Some(SourcePlan {
            stream: StreamPlan::Nats {
                upstream: u.clone(),
                subject: subject.node.clone(),
                jetstream,
                shown: None,
            },
            when,
            select,
            subject: templated.then_some(template),
        });
    }
    if let Some(extra) = d.channel.as_ref().or(d.stream.as_ref()) {
        errors.push(
            extra.pos,
            format!("@{name}: `channel:` and `stream:` are for Redis upstreams (redis://)"),
        );
    }
    if let Some(extra) = &d.subject {
        errors.push(
            extra.pos,
            format!("@{name}: `subject:` is for NATS upstreams (nats://)"),
        );
    }
    if let Some(extra) = &d.jetstream {
        errors.push(
            extra.pos,
            format!("@{name}: `jetStream:` is for NATS upstreams (nats://), with `subject:`"),
        );
    }
    if !d.path.node.starts_with('/') || d.path.node.contains('{') {
        errors.push(d.path.pos, format!("@{name}(path: {:?}) must be a constant path starting with `/`: one socket serves every subscriber", d.path.node));
    }
    let when = when(d, args, ctx, errors);
    let mut select = super::rest::dotted(name, d.select.as_ref(), "data.message", errors);
    let upstream = upstream?;
    let path = d.path.node.clone();
    let stream = match d.protocol.as_ref().map(|p| p.node.as_str()) {
        // An event's data is the `data` member of the envelope it is passed on in.
        Some("SSE") => {
            select.insert(0, "data".to_string());
            StreamPlan::Sse { upstream, path }
        }
        _ => StreamPlan::WebSocket { upstream, path },
    };
    Some(SourcePlan {
        stream,
        when,
        select,
        subject: None,
    })
}

/// A source's `when`: each member path with its template.
fn when(
    d: &SourceDirective,
    args: &[ArgPlan],
    ctx: &FieldCtx<'_>,
    errors: &mut Errors,
) -> Vec<(Vec<String>, Template)> {
    d.when
        .iter()
        .filter_map(|(k, v)| {
            super::rest::template(v, args, ctx, false, errors)
                .map(|t| (k.node.split('.').map(str::to_string).collect(), t))
        })
        .collect()
}

pub(super) fn updates(
    ctx: &FieldCtx<'_>,
    f: &FieldConfig,
    args: &[ArgPlan],
    errors: &mut Errors,
) -> Option<Arc<UpdatesPlan>> {
    let u = f.updates.as_ref()?;
    let qualified = format!("{}.{}", ctx.type_name, f.name.node);
    if ctx.role != Role::Query {
        errors.push(
            u.pos,
            format!("@updates is for Query fields; `{qualified}` is not one"),
        );
        return None;
    }
    if f.rest.is_none() || f.cache.is_none() {
        errors.push(u.pos, format!("@updates on `{qualified}` needs @rest and @cache on it: the stream patches its cache entry"));
    }
    let apply = match u.node.apply.node.as_str() {
        "APPEND" => Apply::Append,
        "PREPEND" => Apply::Prepend,
        "UPSERT" => Apply::Upsert,
        "MERGE" => Apply::Merge,
        "REPLACE" => Apply::Replace,
        "REMOVE" => Apply::Remove,
        _ => Apply::Refetch,
    };
    let list = f.ty.node.is_list();
    let mut key = u.node.key.as_ref().map(|k| k.node.clone());
    let mode = &u.node.apply.node;
    let fail = |errors: &mut Errors, why: String| {
        errors.push(
            u.node.apply.pos,
            format!("@updates(apply: {mode}) on `{qualified}`: {why}"),
        )
    };
    match apply {
        Apply::Append | Apply::Prepend if !list => fail(
            errors,
            format!("needs a list field, and {} is not one", f.ty.node),
        ),
        Apply::Upsert | Apply::Remove if !list || key.is_none() => fail(
            errors,
            "needs a list field and `key` (the item field to match)".into(),
        ),
        Apply::Merge if list && key.is_none() => fail(
            errors,
            "on a list needs `key` (the item field to match)".into(),
        ),
        _ => {}
    }
    if let Some(k) = &u.node.key {
        // Messages are upstream-shaped: the key is the member the field reads (`@map`).
        match ctx.key_member(f.ty.node.base_name(), &k.node) {
            Ok(m) => key = Some(m),
            Err(why) => errors.push(k.pos, format!("@updates(key: {:?}): {why}", k.node)),
        }
    }
    let source = source(ctx, &u.node.source, args, "updates", errors)?;
    Some(Arc::new(UpdatesPlan { source, apply, key }))
}

/// A type a stream payload can be shaped as.
pub(super) fn check_stream_type(ty: &Positioned<TypeRef>, errors: &mut Errors) {
    if ty.node.is_list() {
        errors.push(
            ty.pos,
            "a @stream field's events are single messages; its type cannot be a list",
        );
    }
}
