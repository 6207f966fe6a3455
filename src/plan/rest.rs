//! Planning one `@rest` field (with its `@cache`): templates parsed and checked against
//! the field's arguments and the parent type's fields, batching checked for sense.

use super::{ArgPlan, CachePlan, FieldCtx, Role, UpstreamPlan};
use crate::config::{Errors, FieldConfig, HttpMethod, RestDirective};
use crate::template::{Root, Template, Var};
use async_graphql_parser::{Pos, Positioned};
use async_graphql_value::ConstValue;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RestPlan {
    pub upstream: Arc<UpstreamPlan>,
    pub method: HttpMethod,
    pub path: Template,
    pub query: Vec<(String, Template)>,
    pub body: Option<Body>,
    pub headers: Vec<(http::HeaderName, Template)>,
    pub batch: Option<Batch>,
    pub cache: Option<CachePlan>,
    /// `select`: the path of the field's value in the upstream's JSON (empty: all of it).
    pub select: Vec<String>,
    /// Every `{parent.…}` member path the request and its tags read: two parents that
    /// agree on these make the same request.
    pub parent_reads: Vec<Vec<String>>,
    /// How an error body becomes a GraphQL error: `@rest(errors:)`, else the upstream's.
    pub errors: Option<Arc<super::ErrorMapping>>,
    /// Response headers (lower-case names) the returned object's fields read
    /// (`@map(header:)`), and whether they read `Link` relations (`@map(link:)`).
    /// (header, read as a number when it is one)
    pub read_headers: Arc<[(String, bool)]>,
    pub read_links: bool,
    /// What an upstream request of this field keeps of the response's headers: those
    /// read, and `link` when relations are.
    pub keep_headers: Arc<[String]>,
    /// Query parameters whose list is sent as one value, joined with this separator
    /// (OpenAPI's `explode: false`); the others repeat the parameter.
    pub join: Vec<(String, String)>,
    /// GET, or `@rest(idempotent: true)`: retried on a failure that may pass.
    pub idempotent: bool,
    /// The path as the schema writes it (`/users/{args.id}`): what traces show, never
    /// a rendered URL.
    pub route: Arc<str>,
}

impl RestPlan {
    /// Whether what it sends upstream reads the caller's claims (`{claims.…}` in its
    /// path, query, headers or body): then its cache entries are the caller's own, as
    /// everything sent is part of the key.
    pub fn reads_claims(&self) -> bool {
        self.path.reads_claims()
            || self.query.iter().any(|(_, t)| t.reads_claims())
            || self.headers.iter().any(|(_, t)| t.reads_claims())
            || self.body.as_ref().is_some_and(Body::reads_claims)
    }
}

impl RestPlan {
    /// The separator a list in the query parameter `name` is joined with, if any.
    pub fn joined(&self, name: &str) -> Option<&str> {
        self.join
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, sep)| sep.as_str())
    }
}

impl RestPlan {
    fn gather_parent_reads(&mut self) {
        let mut out: Vec<Vec<String>> = Vec::new();
        let mut add = |t: &Template| {
            for v in t.vars() {
                if v.root == Root::Parent && !out.contains(&v.path) {
                    out.push(v.path.clone());
                }
            }
        };
        add(&self.path);
        self.query.iter().for_each(|(_, t)| add(t));
        self.headers.iter().for_each(|(_, t)| add(t));
        if let Some(c) = &self.cache {
            c.tags.iter().for_each(&mut add);
        }
        fn body(b: &Body, add: &mut dyn FnMut(&Template)) {
            match b {
                Body::Template(t) => add(t),
                Body::Object(fields) => fields.iter().for_each(|(_, b)| body(b, add)),
                Body::List(items) => items.iter().for_each(|b| body(b, add)),
                Body::Literal(_) => {}
            }
        }
        if let Some(b) = &self.body {
            body(b, &mut add);
        }
        self.parent_reads = out;
    }
}

/// A `select` path (`"data.items"`), or why it is not one.
pub(super) fn dotted(
    directive: &str,
    select: Option<&Positioned<String>>,
    example: &str,
    errors: &mut Errors,
) -> Vec<String> {
    match select {
        Some(s) if s.node.split('.').any(str::is_empty) => {
            errors.push(
                s.pos,
                format!(
                    "@{directive}(select: {:?}) must be a dotted path like \"{example}\"",
                    s.node
                ),
            );
            Vec::new()
        }
        Some(s) => s.node.split('.').map(str::to_string).collect(),
        None => Vec::new(),
    }
}

/// A request body: JSON whose strings may be templates.
#[derive(Debug, Clone)]
pub enum Body {
    Template(Template),
    Object(Vec<(String, Body)>),
    List(Vec<Body>),
    Literal(serde_json::Value),
}

impl Body {
    fn reads_claims(&self) -> bool {
        match self {
            Body::Template(t) => t.reads_claims(),
            Body::Object(fields) => fields.iter().any(|(_, b)| b.reads_claims()),
            Body::List(items) => items.iter().any(Body::reads_claims),
            Body::Literal(_) => false,
        }
    }
}

/// `batchKey`: requests that differ only in one query parameter fed by the parent are
/// sent as one (`/users?id=1&id=2`), and the items of the answer are matched back to each
/// parent by comparing `item[key]` with the parameter's value.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The query parameter that carries the keys.
    pub param: String,
    /// `join` names the parameter: the keys go as one value joined with this.
    pub join: Option<String>,
    /// The field of each returned item that holds its key.
    pub key: String,
}

pub(super) fn plan(
    ctx: &FieldCtx<'_>,
    f: &FieldConfig,
    r: &Positioned<RestDirective>,
    args: &[ArgPlan],
    errors: &mut Errors,
) -> Option<RestPlan> {
    let d = &r.node;
    let upstream = super::upstream(ctx, &d.upstream, "rest", errors);
    if let Some(u) = upstream.as_ref().filter(|u| u.is_redis() || u.is_nats()) {
        errors.push(
            d.upstream.pos,
            format!("@rest(upstream: {:?}): that upstream is a {} server, an event source for @stream/@updates; @rest needs an http:// upstream", u.name, u.url.scheme()),
        );
    }
    if !d.path.node.starts_with('/') {
        errors.push(
            d.path.pos,
            format!("@rest(path: {:?}) must start with `/`", d.path.node),
        );
    }
    if d.path.node.contains('?') || d.path.node.contains('#') {
        errors.push(
            d.path.pos,
            format!(
                "@rest(path: {:?}): put query parameters in `query: {{…}}`",
                d.path.node
            ),
        );
    }
    let path = template(&d.path, args, ctx, true, errors);
    // A list is no path segment (it would go as JSON text): refused, with what to do.
    if let Some(t) = &path {
        for v in t.vars() {
            let list = v.root == Root::Args
                && v.path.len() == 1
                && args.iter().any(|a| a.name == v.path[0] && a.ty.is_list());
            if list {
                errors.push(
                    d.path.pos,
                    format!(
                        "@rest(path: {:?}): `{{args.{}}}` is a list, which cannot be one path \
                         segment; send it as a query parameter (`query: {{{}: \"{{args.{}}}\"}}`, \
                         with `join: {{{}: \",\"}}` for one comma-joined value)",
                        d.path.node, v.path[0], v.path[0], v.path[0], v.path[0]
                    ),
                );
            }
        }
    }
    let query: Vec<(String, Template)> = d
        .query
        .iter()
        .filter_map(|(k, v)| Some((k.node.clone(), template(v, args, ctx, true, errors)?)))
        .collect();
    let headers = d
        .headers
        .iter()
        .filter_map(|h| {
            let name = super::header_name(h, errors)?;
            Some((name, template(&h.value, args, ctx, true, errors)?))
        })
        .collect();
    let body = d
        .body
        .as_ref()
        .and_then(|b| body(&b.node, b.pos, args, ctx, errors));
    if body.is_some() && d.method == HttpMethod::Get {
        errors.push(
            r.pos,
            "@rest: a GET request has no body; set method: POST (or PUT, PATCH)",
        );
    }
    let batch = d
        .batch_key
        .as_ref()
        .and_then(|k| batch(ctx, f, d, k, &query, errors));

    let cache = f.cache.as_ref().map(|c| CachePlan {
        max_age: Duration::from_secs(c.node.max_age),
        swr: Duration::from_secs(c.node.swr),
        stale_if_error: Duration::from_secs(c.node.stale_if_error),
        tags: c
            .node
            .tags
            .iter()
            .filter_map(|t| template(t, args, ctx, false, errors))
            .collect(),
        scope: c.node.scope,
    });
    let select = dotted("rest", d.select.as_ref(), "data.items", errors);
    let own = d
        .errors
        .as_ref()
        .and_then(|e| super::ErrorMapping::plan("rest", e, errors));
    let upstream = upstream?;
    let mapping = own.or_else(|| upstream.errors.clone());
    let mut join = Vec::new();
    for (name, sep) in &d.join {
        if !d.query.iter().any(|(q, _)| q.node == name.node) {
            let known: Vec<&str> = d.query.iter().map(|(q, _)| q.node.as_str()).collect();
            errors.push(
                name.pos,
                format!(
                    "@rest(join: {{{}: …}}) names no query parameter of `{}.{}`; known: {}",
                    name.node,
                    ctx.type_name,
                    ctx.field,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        } else if sep.node.is_empty() {
            errors.push(
                sep.pos,
                format!(
                    "@rest(join: {{{}: \"\"}}): the separator is empty",
                    name.node
                ),
            );
        }
        join.push((name.node.clone(), sep.node.clone()));
    }
    // What the returned object's fields read of the response's headers.
    let mut read_headers: Vec<(String, bool)> = Vec::new();
    let mut read_links = false;
    for g in ctx.object_fields(f.ty.node.base_name()).unwrap_or(&[]) {
        let Some(m) = &g.map else { continue };
        let mut path = m.node.split('.');
        match (path.next(), path.next()) {
            (Some(crate::config::HEADERS), Some(h))
                if !read_headers.iter().any(|(r, _)| r == h) =>
            {
                // A `String` or `ID` field reads the text as it is (an `X-Request-Id:
                // 12345` stays a string); any other a number when the text is one.
                let text = matches!(g.ty.node.base_name(), "String" | "ID");
                read_headers.push((h.to_string(), !text))
            }
            (Some(crate::config::LINKS), Some(_)) => read_links = true,
            _ => {}
        }
    }
    let mut keep_headers: Vec<String> = read_headers.iter().map(|(h, _)| h.clone()).collect();
    if read_links && !keep_headers.iter().any(|h| h == "link") {
        keep_headers.push("link".into());
    }
    let mut plan = RestPlan {
        read_headers: read_headers.into(),
        read_links,
        keep_headers: keep_headers.into(),
        join,
        errors: mapping,
        select,
        upstream,
        method: d.method,
        idempotent: d.idempotent || d.method == HttpMethod::Get,
        route: Arc::from(d.path.node.as_str()),
        path: path?,
        query,
        body,
        headers,
        batch,
        cache,
        parent_reads: Vec::new(),
    };
    plan.gather_parent_reads();
    Some(plan)
}

fn batch(
    ctx: &FieldCtx<'_>,
    f: &FieldConfig,
    d: &RestDirective,
    key: &Positioned<String>,
    query: &[(String, Template)],
    errors: &mut Errors,
) -> Option<Batch> {
    let fail = |errors: &mut Errors, why: &str| {
        errors.push(
            key.pos,
            format!(
                "@rest(batchKey: {:?}) on `{}.{}`: {why}",
                key.node, ctx.type_name, f.name.node
            ),
        );
        None
    };
    if ctx.role != Role::Object {
        return fail(errors, "batching is for nested fields, which have a parent");
    }
    if d.method != HttpMethod::Get {
        return fail(errors, "batching needs method GET");
    }
    let fed: Vec<&(String, Template)> = query
        .iter()
        .filter(|(_, t)| t.vars().any(|v| v.root == Root::Parent))
        .collect();
    let param = match fed.as_slice() {
        [(name, t)] if t.single_var().is_some() => name.clone(),
        _ => {
            return fail(
                errors,
                "needs exactly one query parameter that is a lone {parent.…} variable, like query: {id: \"{parent.userId}\"}",
            )
        }
    };
    let parent_elsewhere = Template::parse(&d.path.node)
        .ok()
        .is_some_and(|t| t.vars().any(|v| v.root == Root::Parent));
    if parent_elsewhere {
        return fail(
            errors,
            "the path must not use {parent.…}; only the batched query parameter may",
        );
    }
    // The batch answer is upstream-shaped: items are matched by the member the key
    // field reads (`@map`).
    let member = match ctx.key_member(f.ty.node.base_name(), &key.node) {
        Ok(m) => m,
        Err(why) => return fail(errors, &why),
    };
    let join = d
        .join
        .iter()
        .find(|(n, _)| n.node == param)
        .map(|(_, sep)| sep.node.clone());
    Some(Batch {
        param,
        key: member,
        join,
    })
}

fn body(
    v: &ConstValue,
    pos: Pos,
    args: &[ArgPlan],
    ctx: &FieldCtx<'_>,
    errors: &mut Errors,
) -> Option<Body> {
    Some(match v {
        ConstValue::String(s) => Body::Template(template(
            &Positioned::new(s.clone(), pos),
            args,
            ctx,
            true,
            errors,
        )?),
        ConstValue::Object(map) => Body::Object(
            map.iter()
                .filter_map(|(k, v)| Some((k.to_string(), body(v, pos, args, ctx, errors)?)))
                .collect(),
        ),
        ConstValue::List(items) => Body::List(
            items
                .iter()
                .filter_map(|v| body(v, pos, args, ctx, errors))
                .collect(),
        ),
        other => Body::Literal(other.clone().into_json().unwrap_or(serde_json::Value::Null)),
    })
}

/// Parses a template and checks each variable: `{args.x}` must name an argument,
/// `{parent.x.y}` fields of the enclosing type (and of the types below it).
/// `allow_whole_args`: `{args}` (all arguments as one object) is meaningful here.
pub(super) fn template(
    source: &Positioned<String>,
    args: &[ArgPlan],
    ctx: &FieldCtx<'_>,
    allow_whole_args: bool,
    errors: &mut Errors,
) -> Option<Template> {
    let t = match Template::parse(&source.node) {
        Ok(t) => t,
        Err(e) => {
            errors.push(source.pos, e);
            return None;
        }
    };
    let mut ok = true;
    for var in t.vars() {
        if let Err(e) = check_var(var, args, ctx, allow_whole_args) {
            errors.push(source.pos, format!("template {:?}: {e}", source.node));
            ok = false;
        }
    }
    let mut t = t;
    // `{parent.x}` names GraphQL fields; it reads what those fields read.
    t.map_parent_paths(|path| parent_members(ctx, path));
    // `{args.input.x}` names input fields; the arguments are sent under their members.
    t.map_arg_paths(|path| arg_members(ctx, args, path));
    ok.then_some(t)
}

/// The members of the arguments' JSON (as sent upstream) that the input path `path` reads:
/// an input field with `@map(from:)` is there under its member path.
fn arg_members(ctx: &FieldCtx<'_>, args: &[ArgPlan], path: &[String]) -> Vec<String> {
    let Some((first, rest)) = path.split_first() else {
        return Vec::new();
    };
    let mut out = vec![first.clone()];
    let mut ty = args
        .iter()
        .find(|a| &a.name == first)
        .map(|a| a.ty.base_name().to_string());
    for seg in rest {
        let fields = ty.as_deref().and_then(|name| {
            ctx.config.types.iter().find_map(|t| match &t.kind {
                crate::config::TypeConfigKind::InputObject { fields } if t.name.node == name => {
                    Some(fields)
                }
                _ => None,
            })
        });
        let field = fields.and_then(|fs| fs.iter().find(|f| &f.name.node == seg));
        match field.and_then(|f| f.map.as_ref()) {
            Some(m) => out.extend(m.node.split('.').map(str::to_string)),
            None => out.push(seg.clone()),
        }
        ty = field.map(|f| f.ty.node.base_name().to_string());
    }
    out
}

/// The members of the parent's upstream data that the field path `path` reads.
fn parent_members(ctx: &FieldCtx<'_>, path: &[String]) -> Vec<String> {
    let mut fields = ctx.fields;
    let mut out = Vec::new();
    for seg in path {
        match fields.iter().find(|f| &f.name.node == seg) {
            Some(f) => {
                match &f.map {
                    Some(m) if !m.node.split('.').any(str::is_empty) => {
                        out.extend(m.node.split('.').map(str::to_string))
                    }
                    _ => out.push(seg.clone()),
                }
                fields = ctx.object_fields(f.ty.node.base_name()).unwrap_or(&[]);
            }
            None => out.push(seg.clone()),
        }
    }
    out
}

fn check_var(
    var: &Var,
    args: &[ArgPlan],
    ctx: &FieldCtx<'_>,
    allow_whole_args: bool,
) -> Result<(), String> {
    match var.root {
        Root::Args => {
            let Some(first) = var.path.first() else {
                return if allow_whole_args {
                    Ok(())
                } else {
                    Err("`{args}` is not allowed here; name one argument".into())
                };
            };
            if args.iter().any(|a| &a.name == first) {
                Ok(())
            } else {
                let known: Vec<&str> = args.iter().map(|a| a.name.as_str()).collect();
                let known = if known.is_empty() {
                    "the field has no arguments".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                };
                Err(format!(
                    "`{{args.{first}}}` names no argument of `{}.{}`; {known}",
                    ctx.type_name, ctx.field
                ))
            }
        }
        Root::Parent => {
            if ctx.role != Role::Object {
                return Err(format!(
                    "`{}` has no parent: {{parent.…}} is for fields of object types",
                    ctx.type_name
                ));
            }
            let mut fields = ctx.fields;
            let mut type_name = ctx.type_name.to_string();
            for seg in &var.path {
                let Some(f) = fields.iter().find(|f| &f.name.node == seg) else {
                    let known: Vec<&str> = fields.iter().map(|f| f.name.node.as_str()).collect();
                    return Err(format!(
                        "`{{parent.{}}}` names no field `{seg}` of `{type_name}`; known: {}",
                        var.path.join("."),
                        known.join(", ")
                    ));
                };
                if f.rest.is_some() {
                    return Err(format!(
                        "`{{parent.{}}}`: `{type_name}.{seg}` is resolved by @rest, so it is not in the parent's data",
                        var.path.join(".")
                    ));
                }
                type_name = f.ty.node.base_name().to_string();
                fields = ctx.object_fields(&type_name).unwrap_or(&[]);
            }
            Ok(())
        }
        // Any claim may be named: tokens carry what their issuer puts in them. A field
        // reading claims requires a verified caller (plan/access.rs).
        Root::Claims => Ok(()),
        Root::Event => Err(
            "`{event.…}` is a webhook delivery's body: it is for @webhook(invalidates:, when:)"
                .into(),
        ),
    }
}
