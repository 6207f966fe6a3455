//! Running one operation for any transport (and for the live hub's re-runs): the
//! whole-response cache first, then the planned executor (or the dynamic one, for what
//! it still runs) with a [`Deps`] collector, so callers learn what the result was built
//! from (the live hub watches those entries).

use super::Engine;
use crate::cache::CacheKey;
use crate::deps::{Deps, Read};
use crate::resolve::ClientHeaders;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::json;
use std::sync::Arc;

/// One execution's outcome, serialised.
pub struct Executed {
    /// The GraphQL response as JSON bytes (a request error has no `data`).
    pub body: Bytes,
    /// Parse or validation failure: nothing was executed.
    pub request_error: bool,
    /// The cache entries the result was built from.
    pub read: Arc<Read>,
}

/// A stored response for `req`, if one is current; else the key to store it under.
pub fn lookup(
    engine: &Engine,
    req: &async_graphql::Request,
    headers: &HeaderMap,
) -> Result<Executed, Option<CacheKey>> {
    let key = engine.responses.key(req, headers);
    match key.as_ref().and_then(|k| engine.responses.get(k)) {
        Some(hit) => {
            engine.runtime.metrics.response_cache_hits.inc();
            Ok(Executed {
                body: hit.body,
                request_error: false,
                read: hit.read,
            })
        }
        None => Err(key),
    }
}

/// Runs `req`, from the response cache when it can.
pub async fn run(engine: &Engine, req: async_graphql::Request, headers: HeaderMap) -> Executed {
    match lookup(engine, &req, &headers) {
        Ok(hit) => hit,
        Err(key) => execute(engine, req, headers, key).await,
    }
}

/// Completes (null propagation, see [`crate::resolve::nulls`]) and serialises the
/// response to `query` (`operation` of it); `true` when it is a request error (parse or
/// validation: errors and no data, and the errors have no path), which per the GraphQL
/// spec has no `data`.
pub fn encode(
    plan: &crate::plan::Plan,
    query: &str,
    operation: Option<&str>,
    response: &mut async_graphql::Response,
) -> (Bytes, bool) {
    cap_errors(&mut response.errors);
    crate::resolve::nulls::propagate(plan, query, operation, response);
    crate::resolve::tidy_errors(&mut response.errors);
    if response.data == async_graphql::Value::Null && response.errors.is_empty() {
        // The executor answers an operation whose every field was skipped with null; the
        // spec's answer is an empty object.
        response.data = async_graphql::Value::Object(Default::default());
    }
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let encoded = if request_error {
        serde_json::to_vec(&json!({ "errors": response.errors }))
    } else {
        serde_json::to_vec(&*response)
    };
    let body = Bytes::from(encoded.unwrap_or_else(|e| {
        super::error_body(&format!("the response could not be encoded: {e}"), None).into_bytes()
    }));
    (body, request_error)
}

use super::cap_errors;

/// Executes `req`, and stores the response under `key` when it may be reused.
pub async fn execute(
    engine: &Engine,
    mut req: async_graphql::Request,
    headers: HeaderMap,
    key: Option<CacheKey>,
) -> Executed {
    // A prepared document passed the document's limits when it was prepared; its
    // variables are checked as they are coerced.
    let prepared = engine.executor.cached(&engine.runtime, &req);
    if prepared.is_some() {
        return run_prepared(engine, prepared, req, headers, key).await;
    }
    if let Some(why) = super::limits::check_document(&mut req, &engine.limits) {
        engine.runtime.metrics.reject(why.rejection());
        let body = Bytes::from(super::error_body(&why.message, Some(why.code)));
        return Executed {
            body,
            request_error: true,
            read: Arc::default(),
        };
    }
    let prepared = engine
        .executor
        .prepare(&engine.schema, &engine.runtime, &mut req)
        .await;
    run_prepared(engine, prepared, req, headers, key).await
}

/// Runs `req` with the planned executor when its document is `prepared` for it, else
/// with the dynamic executor.
async fn run_prepared(
    engine: &Engine,
    prepared: Option<Arc<super::Prepared>>,
    req: async_graphql::Request,
    headers: HeaderMap,
    key: Option<CacheKey>,
) -> Executed {
    let deps = Arc::new(Deps::default());
    if let Some(prepared) = prepared.filter(|p| !p.fallback()) {
        let out =
            super::execute_planned(&engine.runtime, &prepared, &req.variables, &headers, &deps)
                .await;
        let gathered = deps.take();
        if let Some(key) = key {
            if !out.has_errors {
                engine.responses.put(key, out.body.clone(), &gathered);
            }
        }
        return Executed {
            body: out.body,
            request_error: out.request_error,
            read: gathered.read,
        };
    }
    let (query, operation) = (req.query.clone(), req.operation_name.clone());
    let req = req.data(ClientHeaders(headers)).data(deps.clone());
    let mut response = engine.schema.execute(req).await;
    let (body, request_error) = encode(
        &engine.runtime.plan,
        &query,
        operation.as_deref(),
        &mut response,
    );
    let gathered = deps.take();
    if let Some(key) = key {
        if response.errors.is_empty() {
            engine.responses.put(key, body.clone(), &gathered);
        }
    }
    Executed {
        body,
        request_error,
        read: gathered.read,
    }
}
