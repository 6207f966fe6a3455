//! Stage ④½ — the planned executor, for queries, mutations and live re-runs. Input: a
//! request (document, operation name, variables), the client's headers and a [`Deps`]
//! collector. Output: the GraphQL response as JSON bytes.
//!
//! A document is parsed and validated once per (document, operation name) — async-graphql
//! validates it, through its public API, with no variables, so the result is the
//! document's alone — and kept, prepared, in a bounded cache. Per request: variables are
//! coerced, `@skip`/`@include` applied while collecting fields, and then two passes:
//!
//! 1. **fetch**, level by level: every `@rest` field of a level is one task per distinct
//!    (field, parent object), all run at once — so a `batchKey` field's keys of all
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

pub mod limits;
mod operation;
mod run;
pub mod vars;
mod write;

pub use run::{execute, lookup, run, Executed};

use crate::deps::Deps;
use crate::plan::{FieldPlan, Plan};
use crate::request::RequestContext;
use crate::resolve::{Call, Fetched, Runtime};
use crate::upstream::UpstreamError;
use async_graphql::parser::types::{
    ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};
use async_graphql_value::{ConstValue, Value as GqlValue};
use bytes::Bytes;
use operation::{Next, Operation, Planned};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What running an operation needs, whichever transport (or the live hub) asks: below
/// the transports and the live hub, which both use it.
pub struct Engine {
    /// async-graphql's dynamic schema: parsing and validation only (see [`Gate`]).
    pub schema: async_graphql::dynamic::Schema,
    pub runtime: Arc<Runtime>,
    /// Whole responses of repeated queries.
    pub responses: Arc<crate::response_cache::ResponseCache>,
    /// Prepared documents.
    pub executor: Executor,
    pub limits: limits::DocumentLimits,
}

impl Engine {
    /// Whether `query` (its operation `operation_name`) parses and validates against this
    /// schema: what an APQ registration must do before it is kept. The text has passed
    /// [`limits::check_nesting`].
    pub async fn validates(&self, query: &str, operation_name: Option<&str>) -> bool {
        let Ok(doc) = async_graphql::parser::parse_query(query) else {
            return false;
        };
        !limits::spreads_too_deep(&doc)
            && validate(&self.schema, query, operation_name, doc)
                .await
                .is_ok()
    }
}

/// async-graphql's validation of `doc` (the text `query`, its operation `operation_name`)
/// against `schema`, with no variables (so the outcome is the document's alone): the
/// [`Gate`] stops the request after it, before anything runs. Its errors, when it fails.
async fn validate(
    schema: &async_graphql::dynamic::Schema,
    query: &str,
    operation_name: Option<&str>,
    doc: ExecutableDocument,
) -> Result<(), Vec<async_graphql::ServerError>> {
    let mut check = async_graphql::Request::new(query);
    check.set_parsed_query(doc);
    if let Some(name) = operation_name {
        check = check.operation_name(name);
    }
    let response = schema.execute(check).await;
    if response.errors.is_empty() {
        Ok(())
    } else {
        Err(response.errors)
    }
}

/// The engine in service, swapped whole when the schema is reloaded: a request runs on the
/// engine it took at its start; running subscriptions hear of a swap and move over.
pub struct Engines {
    current: std::sync::RwLock<Arc<Engine>>,
    swaps: tokio::sync::watch::Sender<u64>,
}

impl Engines {
    pub fn new(engine: Arc<Engine>) -> Self {
        Engines {
            current: std::sync::RwLock::new(engine),
            swaps: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn current(&self) -> Arc<Engine> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `engine` in service and tells the running subscriptions.
    pub fn replace(&self, engine: Arc<Engine>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = engine;
        self.swaps.send_modify(|n| *n += 1);
    }

    /// Changes each time an engine is put in service.
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }
}

/// The operation a request runs: the one named, or the only one (GraphQL's rule: several
/// unnamed-for operations is an error the executor reports).
pub fn operation<'d>(
    doc: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d Positioned<OperationDefinition>> {
    match name {
        Some(name) => doc
            .operations
            .iter()
            .find(|(n, _)| n.is_some_and(|n| n.as_str() == name))
            .map(|(_, op)| op),
        None => {
            let mut ops = doc.operations.iter();
            match (ops.next(), ops.next()) {
                (Some((_, op)), None) => Some(op),
                _ => None,
            }
        }
    }
}

/// A GraphQL response body with one error: `message`, and `extensions.code` if given.
pub fn error_body(message: &str, code: Option<&str>) -> String {
    let mut error = serde_json::json!({ "message": message });
    if let Some(code) = code {
        error["extensions"] = serde_json::json!({ "code": code });
    }
    serde_json::json!({ "errors": [error] }).to_string()
}

/// A document ready to run: parsed, validated, its operation picked.
pub struct Prepared {
    query: String,
    operation_name: Option<String>,
    doc: ExecutableDocument,
    op: Positioned<OperationDefinition>,
    /// It selects `__schema` or `__type`.
    introspects: bool,
    /// The variables its `@skip`/`@include` read.
    conditions: Vec<Name>,
    /// Its plans, by the values of `conditions` (one bit each) and whether it runs as
    /// `@stream` events (on the Subscription type) or as a query.
    plans: std::sync::Mutex<Vec<(u64, bool, Arc<Operation>)>>,
}

/// Plans kept per document (one per set of condition values met); past it, each
/// request with other values plans again.
const PLANS_PER_DOCUMENT: usize = 16;

/// The schema extension that stops every request after validation: async-graphql
/// parses and validates, livegate's executor runs.
pub struct Gate;

impl async_graphql::extensions::ExtensionFactory for Gate {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(GateExt)
    }
}

struct GateExt;

#[async_graphql::async_trait::async_trait]
impl async_graphql::extensions::Extension for GateExt {
    async fn execute(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: async_graphql::extensions::NextExecute<'_>,
    ) -> async_graphql::Response {
        let _ = (ctx, operation_name, next);
        async_graphql::Response::new(ConstValue::Null)
    }
}

/// The prepared-document cache.
pub struct Executor {
    prepared: moka::sync::Cache<u64, Arc<Prepared>>,
}

/// Bytes of prepared documents kept: a parsed document weighs about 8× its text, and
/// its plans at most [`PLAN_BYTES_PER_BYTE`]× (see [`Prepared::planned`]).
const PREPARED_BUDGET: u64 = 128 << 20;

/// A document keeps plans of at most one planned field per byte of its text, each about
/// this many bytes.
const PLAN_BYTES_PER_BYTE: usize = 160;

impl Default for Executor {
    fn default() -> Self {
        Executor {
            prepared: moka::sync::Cache::builder()
                .max_capacity(PREPARED_BUDGET)
                .weigher(|_, p: &Arc<Prepared>| {
                    u32::try_from(
                        p.query
                            .len()
                            .saturating_mul(8 + PLAN_BYTES_PER_BYTE)
                            .saturating_add(1024),
                    )
                    .unwrap_or(u32::MAX)
                })
                .build(),
        }
    }
}

/// One execution's result.
pub struct Output {
    pub body: Bytes,
    /// No data: the request itself failed (its variables).
    pub request_error: bool,
    /// The response has errors (it must not be reused).
    pub has_errors: bool,
}

fn doc_key(query: &str, operation_name: Option<&str>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    query.hash(&mut h);
    operation_name.hash(&mut h);
    h.finish()
}

impl Executor {
    /// The prepared form of `req`'s document, if it is in the cache.
    pub fn cached(&self, rt: &Runtime, req: &async_graphql::Request) -> Option<Arc<Prepared>> {
        let p = self.peek(req)?;
        rt.metrics.plans.with_label_values(&["hit"]).inc();
        Some(p)
    }

    /// [`Executor::cached`], not counted: for a transport that wants to know the
    /// operation's type without parsing the document again.
    pub fn peek(&self, req: &async_graphql::Request) -> Option<Arc<Prepared>> {
        let key = doc_key(&req.query, req.operation_name.as_deref());
        self.prepared
            .get(&key)
            .filter(|p| p.query == req.query && p.operation_name == req.operation_name)
    }

    /// Parses, validates and keeps `req`'s document (the caller found it not
    /// [`Executor::cached`]); when it does not parse or validate, the response that says
    /// why (a request error: errors, no data).
    pub async fn prepare(
        &self,
        schema: &async_graphql::dynamic::Schema,
        rt: &Runtime,
        req: &mut async_graphql::Request,
    ) -> Result<Arc<Prepared>, Bytes> {
        let key = doc_key(&req.query, req.operation_name.as_deref());
        rt.metrics.plans.with_label_values(&["miss"]).inc();
        let doc = match req.parsed_query() {
            Ok(doc) => doc.clone(),
            Err(e) => return Err(refusal(vec![e.clone()])),
        };
        // Validated from the document parsed above, not parsed a second time.
        validate(
            schema,
            &req.query,
            req.operation_name.as_deref(),
            doc.clone(),
        )
        .await
        .map_err(refusal)?;
        let Some(op) = operation(&doc, req.operation_name.as_deref()) else {
            let message = match &req.operation_name {
                Some(name) => format!("Unknown operation named \"{name}\""),
                None => "Operation name required in request".to_string(),
            };
            return Err(Bytes::from(error_body(&message, None)));
        };
        let op = op.clone();
        let introspects = introspects(&doc, &op.node.selection_set.node, 0);
        let conditions = operation::condition_variables(&doc);
        let prepared = Arc::new(Prepared {
            query: req.query.clone(),
            operation_name: req.operation_name.clone(),
            doc,
            op,
            introspects,
            conditions,
            plans: Default::default(),
        });
        self.prepared.insert(key, prepared.clone());
        Ok(prepared)
    }
}

/// The response refusing a document: its errors (at most [`MAX_ERRORS`]), no data.
fn refusal(mut errors: Vec<async_graphql::ServerError>) -> Bytes {
    cap_errors(&mut errors);
    let body = serde_json::to_vec(&serde_json::json!({ "errors": errors }));
    Bytes::from(body.unwrap_or_else(|e| {
        error_body(&format!("the response could not be encoded: {e}"), None).into_bytes()
    }))
}

/// Whether the root selection (through fragments) has `__schema` or `__type`.
fn introspects(doc: &ExecutableDocument, set: &SelectionSet, depth: usize) -> bool {
    depth < 64
        && set.items.iter().any(|s| match &s.node {
            Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
            Selection::InlineFragment(i) => introspects(doc, &i.node.selection_set.node, depth + 1),
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .is_some_and(|f| introspects(doc, &f.node.selection_set.node, depth + 1)),
        })
}

impl Prepared {
    /// Whether it selects `__schema` or `__type`.
    pub fn introspects(&self) -> bool {
        self.introspects
    }

    /// The operation's type.
    pub fn kind(&self) -> OperationType {
        self.op.node.ty
    }

    /// The operation planned for the values `vars` give its conditions: once per set of
    /// values (see [`operation`]).
    fn planned(
        &self,
        plan: &Plan,
        vars: &HashMap<Name, ConstValue>,
        events: bool,
    ) -> Result<Arc<Operation>, Output> {
        let bits = self
            .conditions
            .iter()
            .enumerate()
            .fold(0u64, |bits, (i, name)| {
                let on = matches!(vars.get(name), Some(ConstValue::Boolean(true)));
                bits | (u64::from(on) << (i % 64))
            });
        // More than 64 condition variables: a key would not tell every set apart.
        let keyed = self.conditions.len() <= 64;
        let plans = || self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if keyed {
            if let Some((_, _, o)) = plans().iter().find(|(b, e, _)| *b == bits && *e == events) {
                return Ok(o.clone());
            }
        }
        let root_type = match self.op.node.ty {
            OperationType::Mutation => plan.mutation.as_deref().unwrap_or(&plan.query),
            _ if events => plan.subscription.as_deref().unwrap_or("Subscription"),
            // A live query runs as the query of the same text.
            _ => plan.query.as_str(),
        };
        let planned = operation::plan(plan, &self.doc, root_type, &self.op.node.selection_set.node, vars)
            .map_err(|_| Output {
                body: Bytes::from(error_body(
                    &format!("the operation selects more than {} fields once its fragments are spread; select less", operation::MAX_PLANNED_FIELDS),
                    Some("LIMIT_EXCEEDED"),
                )),
                request_error: true,
                has_errors: true,
            })?;
        let planned = Arc::new(planned);
        if keyed {
            // Kept while its plans hold no more fields than its text has bytes (what its
            // weight in the cache counts); a bigger plan is made for each request.
            let mut plans = plans();
            let held: usize = plans.iter().map(|(_, _, o)| o.size).sum();
            if plans.len() < PLANS_PER_DOCUMENT && held + planned.size <= self.query.len() {
                plans.push((bits, events, planned.clone()));
            }
        }
        Ok(planned)
    }
}

/// What one request's execution shares.
struct Run<'a> {
    rt: &'a Arc<Runtime>,
    plan: &'a Plan,
    vars: HashMap<Name, ConstValue>,
    ctx: &'a RequestContext,
    deps: &'a Deps,
}

/// What fetching a `@rest` field gave.
type Outcome = Result<Option<Fetched>, UpstreamError>;

/// A fetched `@rest` field by (planned field, parent object); parent 0 is the root.
type Results = HashMap<(u32, usize), Arc<Outcome>>;

/// The member at `path` of an upstream object (null when missing). Upstream objects
/// are small: a scan beats hashing the key.
fn read<'v>(value: &'v Value, path: &[Arc<str>]) -> &'v Value {
    static NULL: Value = Value::Null;
    path.iter()
        .try_fold(value, |v, m| member(v, m))
        .unwrap_or(&NULL)
}

/// The member `name` of `value`, if it is an object that has one: a scan for a small
/// object (no hashing of the key), a lookup for a big one.
fn member<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) if map.len() <= 12 => {
            map.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
        }
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

fn addr<T>(r: &T) -> usize {
    r as *const T as usize
}

/// Hashes what `PartialEq` on JSON compares (equal values, equal hashes); below 16
/// levels nothing more is hashed (equality is still checked).
fn hash_json(v: Option<&Value>, h: &mut impl Hasher, depth: usize) {
    let Some(v) = v else {
        return 0u8.hash(h);
    };
    match v {
        Value::Null => 1u8.hash(h),
        Value::Bool(b) => (2u8, b).hash(h),
        Value::Number(n) => {
            3u8.hash(h);
            match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => u.hash(h),
                (_, Some(i), _) => i.hash(h),
                (_, _, f) => f.map(f64::to_bits).hash(h),
            }
        }
        Value::String(s) => (4u8, s).hash(h),
        Value::Array(items) => {
            (5u8, items.len()).hash(h);
            if depth < 16 {
                for i in items {
                    hash_json(Some(i), h, depth + 1);
                }
            }
        }
        Value::Object(map) => {
            (6u8, map.len()).hash(h);
            if depth < 16 {
                for (k, v) in map {
                    k.hash(h);
                    hash_json(Some(v), h, depth + 1);
                }
            }
        }
    }
}

/// What a `@rest` field's request reads of its parent object.
fn parent_reads<'v>(rest: &crate::plan::RestPlan, parent: &'v Value) -> Vec<Option<&'v Value>> {
    rest.parent_reads
        .iter()
        .map(|path| path.iter().try_fold(parent, |v, m| member(v, m)))
        .collect()
}

/// The task of a root field, if it is a `@rest` field.
fn root_task<'p, 'v>(p: &'p Planned) -> Option<Task<'p, 'v>> {
    p.field
        .as_ref()
        .filter(|f| f.rest.is_some())
        .map(|field| Task {
            field,
            planned: p,
            parent: None,
        })
}

/// One `@rest` field to fetch for one parent.
struct Task<'p, 'v> {
    field: &'p Arc<FieldPlan>,
    planned: &'p Planned,
    parent: Option<&'v Value>,
}

/// The arguments of a field as written.
type Arguments = [(Positioned<Name>, Positioned<GqlValue>)];

impl<'a> Run<'a> {
    /// The field's arguments as one JSON object: literals and variables coerced, defaults
    /// applied; an argument with neither value nor default is absent.
    fn args(&self, arguments: &Arguments, field: &FieldPlan) -> Value {
        let mut out = serde_json::Map::new();
        for a in &field.args {
            let given = arguments
                .iter()
                .find(|(n, _)| n.node.as_str() == a.name)
                .and_then(|(_, v)| {
                    v.node
                        .clone()
                        .into_const_with(|name| self.vars.get(&name).cloned().ok_or(()))
                        .ok()
                })
                .and_then(|v| vars::coerce(self.plan, &a.ty, &v).ok());
            if let Some(v) = given.or_else(|| a.default.clone()) {
                out.insert(a.name.clone(), v.into_json().unwrap_or(Value::Null));
            }
        }
        Value::Object(out)
    }

    /// The `@rest` fields below `value` (of type `ty`, selected by `next`) down to the
    /// next `@rest` fields: the next level's tasks.
    fn descend<'p, 'v>(
        &self,
        value: &'v Value,
        ty: &'p crate::config::TypeRef,
        next: &'p Next,
        tasks: &mut Vec<Task<'p, 'v>>,
    ) {
        if next.rest() {
            self.descend_selected(value, ty, next, tasks);
        }
    }

    fn descend_selected<'p, 'v>(
        &self,
        value: &'v Value,
        ty: &'p crate::config::TypeRef,
        next: &'p Next,
        tasks: &mut Vec<Task<'p, 'v>>,
    ) {
        use crate::config::TypeRef;
        match (ty, value) {
            (_, Value::Null) => {}
            (TypeRef::List { item, .. }, Value::Array(items)) => {
                for v in items {
                    self.descend_selected(v, item, next, tasks);
                }
            }
            (TypeRef::Named { .. }, Value::Object(_)) => {
                let Ok(Some(shape)) = next.shape_of(self.plan, value) else {
                    return;
                };
                if !shape.rest {
                    return;
                }
                for p in &shape.fields {
                    let Some(field) = &p.field else { continue };
                    if field.rest.is_some() {
                        tasks.push(Task {
                            field,
                            planned: p,
                            parent: Some(value),
                        });
                    } else if p.next.rest() {
                        let member = read(value, &field.member);
                        self.descend_selected(member, &field.ty, &p.next, tasks);
                    }
                }
            }
            _ => {}
        }
    }

    /// Fetches `first` and, level by level, every `@rest` field below, into `results`.
    async fn fetch_levels<'p>(
        &self,
        first: Vec<Task<'p, '_>>,
        results: &mut Results,
        mutation: bool,
    ) {
        let mut level = self.fetch_tasks(first, results, mutation).await;
        while !level.is_empty() {
            let mut next = Vec::new();
            for (value, field, sub) in &level {
                self.descend(value, &field.ty, sub, &mut next);
            }
            level = self.fetch_tasks(next, results, false).await;
        }
    }

    /// Runs `tasks` (all at once; for a mutation, the one root field), each distinct
    /// request once: tasks of one field whose parents agree on what its request reads
    /// share one fetch. Stores every task's outcome, and returns the distinct values
    /// fetched with what selects them.
    async fn fetch_tasks<'p>(
        &self,
        tasks: Vec<Task<'p, '_>>,
        results: &mut Results,
        mutation: bool,
    ) -> Vec<(Arc<Value>, &'p Arc<FieldPlan>, &'p Next)> {
        // Distinct requests, and for each task the index of its request.
        let mut distinct: Vec<&Task<'p, '_>> = Vec::new();
        let mut by_identity: HashMap<(u32, u64), Vec<usize>> = HashMap::new();
        let mut slots: Vec<(usize, (u32, usize))> = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let at = (t.planned.id, t.parent.map_or(0, addr));
            if results.contains_key(&at) {
                continue;
            }
            let shared = match (&t.field.rest, t.parent) {
                (Some(rest), Some(parent)) if !mutation => Some((rest, parent)),
                _ => None,
            };
            let index = match shared {
                // What the request reads of the parent, hashed; equal hashes compared.
                Some((rest, parent)) => {
                    let mine = parent_reads(rest, parent);
                    let hash = {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        for v in &mine {
                            hash_json(*v, &mut h, 0);
                        }
                        h.finish()
                    };
                    let same = by_identity.entry((at.0, hash)).or_default();
                    let found = same.iter().copied().find(|i| {
                        distinct[*i]
                            .parent
                            .is_some_and(|other| parent_reads(rest, other) == mine)
                    });
                    match found {
                        Some(i) => i,
                        None => {
                            same.push(distinct.len());
                            distinct.push(t);
                            distinct.len() - 1
                        }
                    }
                }
                // A root field: one per field; a mutation field is never shared.
                None => {
                    distinct.push(t);
                    distinct.len() - 1
                }
            };
            slots.push((index, at));
        }
        let args: Vec<Value> = distinct
            .iter()
            .map(|t| self.args(&t.planned.arguments, t.field))
            .collect();
        let outcomes =
            futures_util::future::join_all(distinct.iter().zip(&args).map(|(t, args)| {
                let call = Call {
                    args,
                    parent: t.parent,
                    ctx: self.ctx,
                    deps: self.deps,
                    mutation,
                };
                async move {
                    match &t.field.rest {
                        Some(rest) => crate::resolve::fetch(self.rt, t.field, rest, call).await,
                        None => Ok(None),
                    }
                }
            }))
            .await;
        let mut next = Vec::new();
        let outcomes: Vec<Arc<Outcome>> = outcomes.into_iter().map(Arc::new).collect();
        for (t, outcome) in distinct.iter().zip(&outcomes) {
            if let Ok(Some(f)) = &**outcome {
                next.push((f.value.clone(), t.field, &t.planned.next));
            }
        }
        for (index, at) in slots {
            if let Some(outcome) = outcomes.get(index) {
                results.insert(at, outcome.clone());
            }
        }
        next
    }
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
    let mut results = Results::new();
    if mutation {
        for p in &shape.fields {
            if let Some(t) = root_task(p) {
                run.fetch_levels(vec![t], &mut results, true).await;
            }
        }
    } else {
        let mut tasks: Vec<Task<'_, '_>> = shape.fields.iter().filter_map(root_task).collect();
        // Root fields read from the root value (an event's payload) select `@rest`
        // fields below them.
        for p in &shape.fields {
            if let Some(field) = p.field.as_ref().filter(|f| f.rest.is_none()) {
                run.descend(read(root, &field.member), &field.ty, &p.next, &mut tasks);
            }
        }
        run.fetch_levels(tasks, &mut results, false).await;
    }
    let written = write::Writer::new(&run, &results).root(shape, root);
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
    body.push(b'}');
    Output {
        body: Bytes::from(body),
        request_error: false,
        has_errors: !errors.is_empty(),
    }
}
