//! Running one operation for any transport (and for the live hub's re-runs): the
//! whole-response cache first, then the planned executor with a [`Deps`] collector, so
//! callers learn what the result was built from (the live hub watches those entries).

use super::Engine;
use crate::cache::CacheKey;
use crate::deps::{Deps, Read};
use crate::request::RequestContext;
use bytes::Bytes;
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
    ctx: &RequestContext,
) -> Result<Executed, Option<CacheKey>> {
    let key = engine.responses.key(req, ctx);
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
pub async fn run(engine: &Engine, req: async_graphql::Request, ctx: &RequestContext) -> Executed {
    match lookup(engine, &req, ctx) {
        Ok(hit) => hit,
        Err(key) => execute(engine, req, ctx, key).await,
    }
}

/// Executes `req`, and stores the response under `key` when it may be reused.
pub async fn execute(
    engine: &Engine,
    req: async_graphql::Request,
    ctx: &RequestContext,
    key: Option<CacheKey>,
) -> Executed {
    execute_peeked(engine, None, req, ctx, key).await
}

/// [`execute`], for a caller that looked the document up already
/// ([`super::Executor::peek`] on this `engine`) and found `peeked`.
pub async fn execute_peeked(
    engine: &Engine,
    peeked: Option<Arc<super::Prepared>>,
    mut req: async_graphql::Request,
    ctx: &RequestContext,
    key: Option<CacheKey>,
) -> Executed {
    // A prepared document passed the document's limits when it was prepared; its
    // variables are checked as they are coerced.
    let telemetry = &engine.runtime.telemetry;
    let prepare = telemetry.child(
        "graphql.prepare",
        opentelemetry::trace::SpanKind::Internal,
        Vec::new(),
    );
    let prepared = match peeked {
        Some(p) => {
            engine.runtime.metrics.hot.plan_hit.inc();
            Some(p)
        }
        None => engine.executor.cached(&engine.runtime, &req),
    };
    if let Some(prepared) = prepared {
        prepare.set("livegate.prepared", "hit");
        drop(prepare);
        return run_prepared(engine, prepared, req, ctx, key).await;
    }
    prepare.set("livegate.prepared", "miss");
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
    if prepared.is_err() {
        prepare.fail("the document did not parse or validate");
    }
    drop(prepare);
    match prepared {
        Ok(prepared) => run_prepared(engine, prepared, req, ctx, key).await,
        Err(body) => Executed {
            body,
            request_error: true,
            read: Arc::default(),
        },
    }
}

/// Runs `req`, whose document is `prepared`, and stores the response under `key` when it
/// may be reused.
async fn run_prepared(
    engine: &Engine,
    prepared: Arc<super::Prepared>,
    req: async_graphql::Request,
    ctx: &RequestContext,
    key: Option<CacheKey>,
) -> Executed {
    if prepared.introspects() && engine.limits.no_introspection {
        let body = super::error_body(
            "introspection is disabled on this gateway (--disable-introspection); the document selects __schema or __type",
            Some("INTROSPECTION_DISABLED"),
        );
        return Executed {
            body: Bytes::from(body),
            request_error: true,
            read: Arc::default(),
        };
    }
    let deps = Deps::default();
    let telemetry = &engine.runtime.telemetry;
    let span = match telemetry.is_on() {
        true => {
            let kind = match prepared.kind() {
                async_graphql_parser::types::OperationType::Query => "query",
                async_graphql_parser::types::OperationType::Mutation => "mutation",
                async_graphql_parser::types::OperationType::Subscription => "subscription",
            };
            let mut attrs = vec![crate::telemetry::Attr::new("graphql.operation.type", kind)];
            if let Some(name) = prepared.name() {
                attrs.push(crate::telemetry::Attr::new(
                    "graphql.operation.name",
                    name.to_string(),
                ));
            }
            // The request's span says what it ran, too.
            crate::telemetry::annotate(&attrs);
            if telemetry.documents() {
                crate::telemetry::annotate(&[crate::telemetry::Attr::new(
                    "graphql.document",
                    prepared.document().to_string(),
                )]);
            }
            telemetry.child(
                "graphql.execute",
                opentelemetry::trace::SpanKind::Internal,
                attrs,
            )
        }
        false => crate::telemetry::Span::none(),
    };
    let out = span
        .run(super::execute_planned(
            &engine.runtime,
            &prepared,
            &req.variables,
            ctx,
            &deps,
        ))
        .await;
    if out.has_errors {
        span.set("livegate.errors", true);
    }
    drop(span);
    let gathered = deps.take();
    if let Some(key) = key {
        if !out.has_errors {
            engine.responses.put(key, out.body.clone(), &gathered);
        }
    }
    Executed {
        body: out.body,
        request_error: out.request_error,
        read: gathered.read,
    }
}
