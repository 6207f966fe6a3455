//! Stage ④½ — the planned executor, for queries, mutations, live re-runs and `@stream`
//! events. Input: a request (document, operation name, variables), its
//! [`RequestContext`] and a [`Deps`] collector. Output: the GraphQL response as JSON bytes.
//!
//! A document is parsed and validated once per (document, operation name) — async-graphql
//! validates it, through its public API, with no variables, so the result is the
//! document's alone — and kept, prepared, in a bounded cache; its operation is planned
//! once per set of `@skip`/`@include` values ([`operation`]: fields collected and
//! merged, fragments resolved against each concrete type, leaf types resolved, and where
//! `@rest` fields lie). Per request: variables are coerced, and then two passes:
//!
//! 1. **fetch**, level by level: every `@rest` field of a level is one task per distinct
//!    (field, what its request reads of the parent), all run at once — so a `batchKey` field's keys of all
//!    parents join one batch, and the shared cache deduplicates the rest; a mutation's
//!    root fields run one after another, each with its whole subtree;
//! 2. **write**: the selection is completed from the fetched upstream JSON straight into
//!    the output bytes, in selection order, per the spec: each selected leaf coerced (a
//!    wrong kind is null and an error at that leaf, with `path` and `locations`), and a
//!    null in a non-null position makes the nearest nullable parent null (the writer
//!    truncates back to that parent's start).
//!
//! Every document runs here. async-graphql parses and validates (its errors are the
//! response to a document that fails, with the messages users know); introspection
//! (`__schema`, `__type`) is completed from the value the plan computed once
//! ([`crate::plan::introspection`]), like any upstream JSON.
//!
//! Files: [`engine`] (the engine in service and its swap), [`prepare`] (documents parsed,
//! validated and kept, and their plans), [`operation`] (planning an operation once),
//! [`fetch`] (the fetch pass), [`write`] (the write pass), [`vars`] (coercing values),
//! [`limits`] (what a document may cost), [`run`] (the entry point for every transport).

mod engine;
mod fetch;
pub mod limits;
mod operation;
mod prepare;
mod run;
pub mod vars;
mod write;

pub use engine::{Engine, Engines, Gate};
pub use prepare::{operation, Executor, Prepared};
pub use run::{execute, execute_peeked, lookup, run, Executed};

use crate::deps::Deps;
use crate::plan::FieldPlan;
use crate::request::RequestContext;
use crate::resolve::Runtime;
use async_graphql::parser::types::OperationType;
use async_graphql::Name;
use async_graphql_value::ConstValue;
use bytes::Bytes;
use fetch::{read, root_task, Results, Run, Task};
use operation::Operation;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A GraphQL response body with one error: `message`, and `extensions.code` if given.
pub fn error_body(message: &str, code: Option<&str>) -> String {
    let mut error = serde_json::json!({ "message": message });
    if let Some(code) = code {
        error["extensions"] = serde_json::json!({ "code": code });
    }
    serde_json::json!({ "errors": [error] }).to_string()
}

/// One execution's result.
pub struct Output {
    pub body: Bytes,
    /// No data: the request itself failed (its variables).
    pub request_error: bool,
    /// The response has errors (it must not be reused).
    pub has_errors: bool,
}

/// Errors shown in one response at most (graphql-js stops validating at 100 too): a
/// document built to fail thousands of times gets a short answer.
pub const MAX_ERRORS: usize = 100;

/// Keeps the first [`MAX_ERRORS`] errors, and says how many more there were.
pub fn cap_errors(errors: &mut Vec<async_graphql::ServerError>) {
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(async_graphql::ServerError::new(
            format!("too many errors: {more} more not shown"),
            None,
        ));
    }
}

/// Runs a prepared query or mutation (a live query runs as a query).
pub async fn execute_planned(
    rt: &Arc<Runtime>,
    prepared: &Prepared,
    variables: &async_graphql::Variables,
    ctx: &RequestContext,
    deps: &Deps,
) -> Output {
    let vars = match coerce(rt, prepared, variables) {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let operation = match prepared.planned(&rt.plan, &vars, false) {
        Ok(o) => o,
        Err(refused) => return refused,
    };
    let mutation = prepared.op.node.ty == OperationType::Mutation;
    let root = Value::Object(Default::default());
    execute_on(rt, &operation, vars, ctx, deps, mutation, &root).await
}

/// The operation's variables, coerced; or the request error that refuses them.
fn coerce(
    rt: &Runtime,
    prepared: &Prepared,
    variables: &async_graphql::Variables,
) -> Result<HashMap<Name, ConstValue>, Output> {
    vars::coerce_variables(&rt.plan, &prepared.op.node.variable_definitions, variables).map_err(
        |message| Output {
            body: Bytes::from(error_body(&message, Some("BAD_USER_INPUT"))),
            request_error: true,
            has_errors: true,
        },
    )
}

/// An `@stream` subscription ready to run its events: the field, its arguments, the
/// coerced variables and the planned operation.
pub struct EventCall {
    pub field: Arc<FieldPlan>,
    pub args: Value,
    vars: HashMap<Name, ConstValue>,
    operation: Arc<Operation>,
}

/// Coerces a prepared subscription's variables and finds its `@stream` root field.
pub fn events_call(
    rt: &Arc<Runtime>,
    prepared: &Prepared,
    variables: &async_graphql::Variables,
) -> Result<EventCall, Output> {
    let vars = coerce(rt, prepared, variables)?;
    let operation = prepared.planned(&rt.plan, &vars, true)?;
    let no_ctx = RequestContext::default();
    let no_deps = Deps::default();
    let run = Run {
        rt,
        plan: &rt.plan,
        vars,
        ctx: &no_ctx,
        deps: &no_deps,
    };
    let found = operation.root.fields.iter().find_map(|p| {
        p.field
            .as_ref()
            .filter(|f| f.stream.is_some())
            .map(|f| (p, f))
    });
    let Some((planned, field)) = found else {
        return Err(Output {
            body: Bytes::from(error_body("the subscription selects no event field", None)),
            request_error: true,
            has_errors: true,
        });
    };
    let args = run.args(&planned.arguments, field);
    let field = field.clone();
    Ok(EventCall {
        field,
        args,
        vars: run.vars,
        operation,
    })
}

/// One event of an `@stream` subscription: the selection completed over `payload` as
/// the value of the subscription's field, nested `@rest` fields fetched as for a query.
pub async fn execute_event(
    rt: &Arc<Runtime>,
    call: &EventCall,
    ctx: &RequestContext,
    payload: Value,
) -> Output {
    let mut root = serde_json::Map::new();
    root.insert(call.field.name.clone(), payload);
    let root = Value::Object(root);
    let deps = Deps::default();
    execute_on(
        rt,
        &call.operation,
        call.vars.clone(),
        ctx,
        &deps,
        false,
        &root,
    )
    .await
}

/// Fetches and writes `operation`'s selection on `root`.
async fn execute_on(
    rt: &Arc<Runtime>,
    operation: &Operation,
    vars: HashMap<Name, ConstValue>,
    ctx: &RequestContext,
    deps: &Deps,
    mutation: bool,
    root: &Value,
) -> Output {
    let run = Run {
        rt,
        plan: &rt.plan,
        vars,
        ctx,
        deps,
    };
    let shape = &operation.root;
    let mut results = Results::default();
    if mutation {
        for p in shape.fields.iter().filter(|p| run.permits(p)) {
            if let Some(t) = root_task(p) {
                run.fetch_levels(vec![t], &mut results, true).await;
            }
        }
    } else {
        let permitted = || shape.fields.iter().filter(|p| run.permits(p));
        let mut tasks: Vec<Task<'_, '_>> = permitted().filter_map(root_task).collect();
        // Root fields read from the root value (an event's payload) select `@rest`
        // fields below them.
        for p in permitted() {
            if let Some(field) = p.field.as_ref().filter(|f| f.rest.is_none()) {
                run.descend(read(root, &field.member), &field.ty, &p.next, &mut tasks);
            }
        }
        run.fetch_levels(tasks, &mut results, false).await;
    }
    let last = &operation.last_response;
    // Room for the closing brace and a few errors past what the data took last time.
    let capacity = last.load(std::sync::atomic::Ordering::Relaxed) + 256;
    let written = write::Writer::new(&run, &results, capacity).root(shape, root);
    for key in &written.misfits {
        rt.cache.forget(key);
    }
    let mut errors = written.errors;
    cap_errors(&mut errors);
    let mut body = written.data;
    if !errors.is_empty() {
        body.extend_from_slice(b",\"errors\":");
        if serde_json::to_writer(&mut body, &errors).is_err() {
            body.extend_from_slice(b"[]");
        }
    }
    if !written.stale.is_empty() {
        // Values served past their freshness because their refresh failed.
        body.extend_from_slice(b",\"extensions\":{\"stale\":");
        if serde_json::to_writer(&mut body, &written.stale).is_err() {
            body.extend_from_slice(b"[]");
        }
        body.push(b'}');
        deps.stale();
    }
    body.push(b'}');
    last.store(body.len(), std::sync::atomic::Ordering::Relaxed);
    Output {
        body: Bytes::from(body),
        request_error: false,
        has_errors: !errors.is_empty(),
    }
}
