//! From a field's [`RestPlan`] and the values at hand (arguments, parent object, the
//! client's headers) to one [`UpstreamRequest`] and the [`CacheKey`] that names it.

use crate::cache::{CacheKey, Policy, Tag};
use crate::config::Scope;
use crate::plan::{Body, RestPlan, UpstreamPlan};
use crate::request::RequestContext;
use crate::template::{scalar_text, Template, Vars};
use crate::upstream::{UpstreamError, UpstreamRequest};
use http::{HeaderName, HeaderValue};
use serde_json::Value;

/// Client headers that identify the caller, besides an upstream's `forwardHeaders`:
/// a `PRIVATE` entry is keyed by all of them.
const CREDENTIALS: [HeaderName; 2] = [http::header::AUTHORIZATION, http::header::COOKIE];

/// Renders the parts of the URL that come before the batched query parameter, and the
/// rest of the request.
pub fn build(
    rest: &RestPlan,
    vars: Vars<'_>,
    client: &RequestContext,
    skip_param: Option<&str>,
) -> Result<UpstreamRequest, UpstreamError> {
    let upstream = &rest.upstream;
    let path = rest.path.render_path(vars).ok_or_else(|| {
        UpstreamError::BadInput(format!(
            "a value in path {:?} is missing or null",
            rest.path.to_string()
        ))
    })?;
    let mut url = join(&upstream.url, &path)?;
    {
        let mut pairs = url.query_pairs_mut();
        for (name, t) in &rest.query {
            if Some(name.as_str()) == skip_param {
                continue;
            }
            match t.single_var() {
                Some(_) => match t.render_json(vars) {
                    Value::Null => {}
                    // A list repeats the parameter, or is one joined value (`join`); an
                    // empty one is an empty value, never the parameter left out (which
                    // many APIs read as "all").
                    Value::Array(items) => {
                        let items: Vec<String> = items.iter().filter_map(scalar_text).collect();
                        match rest.joined(name) {
                            Some(sep) => {
                                pairs.append_pair(name, &items.join(sep));
                            }
                            None if items.is_empty() => {
                                pairs.append_pair(name, "");
                            }
                            None => {
                                for item in &items {
                                    pairs.append_pair(name, item);
                                }
                            }
                        }
                    }
                    v => {
                        if let Some(text) = scalar_text(&v) {
                            pairs.append_pair(name, &text);
                        }
                    }
                },
                None => {
                    pairs.append_pair(name, &t.render_string(vars));
                }
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut headers = upstream.headers.clone();
    for (name, t) in &rest.headers {
        // A header whose one variable is null or absent is not sent (never sent empty).
        if t.single_var().is_some() && t.render_json(vars).is_null() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&t.render_string(vars)) {
            headers.push((name.clone(), v));
        }
    }
    for (name, v) in client.forwarded(&upstream.forward_headers) {
        headers.push((name.clone(), v.clone()));
    }
    let body = rest.body.as_ref().map(|b| {
        let json = render_body(b, vars);
        bytes::Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
    });
    Ok(UpstreamRequest {
        upstream: upstream.clone(),
        method: rest.method,
        idempotent: rest.idempotent,
        route: rest.route.clone(),
        route_reads_claims: rest.path.reads_claims(),
        url,
        headers,
        body,
        errors: rest.errors.clone(),
        keep_headers: rest.keep_headers.clone(),
    })
}

/// `base` + `path`, refusing a path with a `.` or `..` segment: the URL parser would
/// normalise it (even percent-encoded) and climb out of the path the schema wrote.
fn join(base: &url::Url, path: &str) -> Result<url::Url, UpstreamError> {
    for seg in path.split('/') {
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err(UpstreamError::BadInput(format!(
                "path {path:?} has a `{decoded}` segment; such values are refused"
            )));
        }
    }
    let mut url = base.clone();
    url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
    Ok(url)
}

fn render_body(b: &Body, vars: Vars<'_>) -> Value {
    match b {
        Body::Template(t) => t.render_json(vars),
        // A member whose one variable is null or absent is left out (a literal null stays).
        Body::Object(fields) => Value::Object(
            fields
                .iter()
                .filter_map(|(k, v)| {
                    let rendered = render_body(v, vars);
                    let variable = matches!(v, Body::Template(t) if t.single_var().is_some());
                    (!(variable && rendered.is_null())).then(|| (k.clone(), rendered))
                })
                .collect(),
        ),
        Body::List(items) => Value::Array(items.iter().map(|v| render_body(v, vars)).collect()),
        Body::Literal(v) => v.clone(),
    }
}

/// The cache key of `req`, or `None` when the request must not be shared at all: a
/// `PRIVATE` field called without credentials.
pub fn cache_key(req: &UpstreamRequest, scope: Scope, client: &RequestContext) -> Option<CacheKey> {
    let mut parts = request_parts(req, client);
    if scope == Scope::Private {
        let creds = credentials(&req.upstream, client);
        if creds.is_empty() {
            return None;
        }
        parts.push(b"private".to_vec());
        parts.extend(creds);
    }
    Some(CacheKey::from_parts(parts.iter().map(Vec::as_slice)))
}

/// The batch a request without its batched parameter joins: requests of different
/// callers are batched together only when they send the same credentials.
pub fn batch_group(base: &UpstreamRequest, client: &RequestContext) -> CacheKey {
    let mut parts = request_parts(base, client);
    parts.extend(credentials(&base.upstream, client));
    CacheKey::from_parts(parts.iter().map(Vec::as_slice))
}

/// Everything sent upstream makes a request distinct, forwarded headers included (a
/// forwarded bearer token as its caller, see [`keyed`]).
fn request_parts(req: &UpstreamRequest, client: &RequestContext) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = vec![
        req.method.as_str().as_bytes().to_vec(),
        req.url.as_str().as_bytes().to_vec(),
        req.body.as_deref().unwrap_or_default().to_vec(),
    ];
    let mut sent: Vec<Vec<u8>> = req
        .headers
        .iter()
        .map(|(k, v)| keyed(k, v, client))
        .collect();
    sent.sort();
    parts.extend(sent);
    parts
}

/// `name: value` as it tells callers apart in keys: the client's own verified token,
/// when it names a subject, stands for that subject (`iss` and `sub`) — one entry per
/// user, whichever of their tokens they send — whether it came in `Authorization:
/// Bearer` or, without one, as the `--jwt-cookie` (the other cookies of that header stay
/// as they are); any other header is its bytes.
fn keyed(name: &HeaderName, value: &HeaderValue, client: &RequestContext) -> Vec<u8> {
    let plain = || [name.as_str().as_bytes(), b":", value.as_bytes()].concat();
    let identity = client.identity();
    let Some(subject) = identity.and_then(|i| i.subject.as_deref()) else {
        return plain();
    };
    let verified = || [b"verified-subject:".as_slice(), subject.as_bytes()].concat();
    let bearer = |v: &HeaderValue| {
        v.as_bytes()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
    };
    if name == http::header::AUTHORIZATION {
        let verified_one =
            client.headers().get(http::header::AUTHORIZATION) == Some(value) && bearer(value);
        return if verified_one { verified() } else { plain() };
    }
    // Without a Bearer header, the verified token was the first cookie of that name.
    let Some(cookie) = identity
        .and_then(|i| i.cookie.as_deref())
        .filter(|_| name == http::header::COOKIE)
    else {
        return plain();
    };
    let headers = client.headers();
    let (false, Ok(text)) = (
        headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .any(bearer),
        value.to_str(),
    ) else {
        return plain();
    };
    let mut replaced = false;
    let pairs: Vec<Vec<u8>> = text
        .split(';')
        .map(|pair| match pair.trim().split_once('=') {
            Some((k, _)) if !replaced && k.trim() == cookie => {
                replaced = true;
                [k.trim().as_bytes(), b"=", &verified()].concat()
            }
            _ => pair.trim().as_bytes().to_vec(),
        })
        .collect();
    if replaced {
        [b"cookie:".as_slice(), &pairs.join(&b"; "[..])].concat()
    } else {
        plain()
    }
}

fn credentials(upstream: &UpstreamPlan, client: &RequestContext) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for name in CREDENTIALS.iter().chain(upstream.forward_headers.iter()) {
        for v in client.headers().get_all(name) {
            out.push(keyed(name, v, client));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The cache policy of a field, with its tags rendered for these values.
pub fn policy(rest: &RestPlan, vars: Vars<'_>) -> Option<Policy> {
    rest.cache.as_ref().map(|c| Policy {
        max_age: c.max_age,
        swr: c.swr,
        tags: render_tags(&c.tags, vars),
        shared: c.scope != Scope::Private,
        revalidate: false,
        stale_if_error: c.stale_if_error,
    })
}

pub fn render_tags(tags: &[Template], vars: Vars<'_>) -> Vec<Tag> {
    tags.iter()
        .map(|t| Tag::from(t.render_string(vars).as_str()))
        .collect()
}
