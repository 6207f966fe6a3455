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
mod run;
pub mod vars;
mod write;

pub use run::{execute, lookup, run, Executed};

use crate::deps::Deps;
use crate::plan::{FieldPlan, Plan, TypePlanKind};
use crate::resolve::{Call, Fetched, Runtime};
use crate::upstream::UpstreamError;
use async_graphql::parser::types::{
    ExecutableDocument, Field, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};
use async_graphql_value::{ConstValue, Value as GqlValue};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What running an operation needs, whichever transport (or the live hub) asks: below
/// the transports and the live hub, which both use it.
pub struct Engine {
    /// async-graphql's dynamic schema: validation, introspection, `@stream` events.
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
}

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

/// Bytes of prepared documents kept (a parsed document weighs about 8× its text).
const PREPARED_BUDGET: u64 = 64 << 20;

impl Default for Executor {
    fn default() -> Self {
        Executor {
            prepared: moka::sync::Cache::builder()
                .max_capacity(PREPARED_BUDGET)
                .weigher(|_, p: &Arc<Prepared>| {
                    u32::try_from(p.query.len().saturating_mul(8).saturating_add(1024))
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
        let prepared = Arc::new(Prepared {
            query: req.query.clone(),
            operation_name: req.operation_name.clone(),
            doc,
            op,
            introspects,
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
}

/// Fields of one selection answering under one response key, merged.
struct Group<'d, 'p> {
    key: &'d str,
    /// The first of the merged fields: its arguments and position are the field's.
    node: &'d Positioned<Field>,
    /// `None`: `__typename`.
    field: Option<&'p Arc<FieldPlan>>,
    /// The merged fields' selection sets.
    sub: Vec<&'d SelectionSet>,
}

type Groups<'d, 'p> = Arc<Vec<Group<'d, 'p>>>;

/// What one request's execution shares.
struct Run<'a> {
    rt: &'a Arc<Runtime>,
    plan: &'a Plan,
    doc: &'a ExecutableDocument,
    vars: HashMap<Name, ConstValue>,
    headers: &'a HeaderMap,
    deps: &'a Deps,
    /// Collected fields by (object type, selection sets).
    collected: Memo<Groups<'a, 'a>>,
    /// Whether a `@rest` field is selected below (type, selection sets).
    rest_below: Memo<bool>,
}

/// What fetching a `@rest` field gave.
type Outcome = Result<Option<Fetched>, UpstreamError>;

/// Values by (type name, selection sets), compared by address: a request has few
/// distinct ones, so a scan beats hashing.
struct Memo<T>(std::sync::Mutex<Vec<MemoEntry<T>>>);

/// (type name's address, selection sets' addresses, value)
type MemoEntry<T> = (usize, Box<[usize]>, T);

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo(Default::default())
    }
}

impl<T: Clone> Memo<T> {
    fn get(&self, type_name: &str, sets: &[&SelectionSet]) -> Option<T> {
        let ptr = type_name.as_ptr() as usize;
        let memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        memo.iter()
            .rev()
            .find(|(t, s, _)| {
                *t == ptr
                    && s.len() == sets.len()
                    && s.iter().zip(sets).all(|(a, b)| *a == addr(*b))
            })
            .map(|(_, _, v)| v.clone())
    }

    fn put(&self, type_name: &str, sets: &[&SelectionSet], value: T) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the document's selections and types; past this, work is redone.
        if memo.len() < 256 {
            memo.push((
                type_name.as_ptr() as usize,
                sets.iter().map(|s| addr(*s)).collect(),
                value,
            ));
        }
    }
}

/// A fetched `@rest` field by (field node, parent object); parent 0 is the root.
type Results = HashMap<(usize, usize), Arc<Outcome>>;

/// The member at `path` of an upstream object (null when missing). Upstream objects
/// are small: a scan beats hashing the key.
fn read<'v>(value: &'v Value, path: &[Arc<str>]) -> &'v Value {
    static NULL: Value = Value::Null;
    path.iter()
        .try_fold(value, |v, m| match v {
            Value::Object(map) if map.len() <= 12 => {
                map.iter().find(|(k, _)| k.as_str() == &**m).map(|(_, v)| v)
            }
            Value::Object(map) => map.get(&**m),
            _ => None,
        })
        .unwrap_or(&NULL)
}

fn addr<T>(r: &T) -> usize {
    r as *const T as usize
}

/// One `@rest` field to fetch for one parent.
struct Task<'d, 'p, 'v> {
    field: &'p Arc<FieldPlan>,
    node: &'d Positioned<Field>,
    sub: Vec<&'d SelectionSet>,
    parent: Option<&'v Value>,
}

impl<'a> Run<'a> {
    fn condition(
        &self,
        directives: &[Positioned<async_graphql::parser::types::Directive>],
    ) -> bool {
        for d in directives {
            let include = match d.node.name.node.as_str() {
                "skip" => false,
                "include" => true,
                _ => continue,
            };
            let value = d.node.get_argument("if").map(|v| match &v.node {
                GqlValue::Boolean(b) => *b,
                GqlValue::Variable(name) => {
                    matches!(self.vars.get(name), Some(ConstValue::Boolean(true)))
                }
                _ => false,
            });
            if value.is_some_and(|v| v != include) {
                return false;
            }
        }
        true
    }

    fn applies(&self, condition: &str, object: &str) -> bool {
        condition == object
            || self
                .plan
                .possible(condition)
                .is_some_and(|p| p.types.iter().any(|t| t == object))
    }

    /// CollectFields for the object type `object` over the merged `sets`, once per
    /// request for each (type, sets): the objects of a list share it.
    fn collect(&self, object: &'a str, sets: &[&'a SelectionSet]) -> Groups<'a, 'a> {
        if let Some(g) = self.collected.get(object, sets) {
            return g;
        }
        let mut groups: Vec<Group<'a, 'a>> = Vec::new();
        let mut visited: Vec<&str> = Vec::new();
        let fields = self.plan.object_fields(object).unwrap_or(&[]);
        for set in sets {
            self.collect_into(object, fields, set, &mut groups, &mut visited);
        }
        let groups = Arc::new(groups);
        self.collected.put(object, sets, groups.clone());
        groups
    }

    fn collect_into(
        &self,
        object: &'a str,
        fields: &'a [Arc<FieldPlan>],
        set: &'a SelectionSet,
        groups: &mut Vec<Group<'a, 'a>>,
        visited: &mut Vec<&'a str>,
    ) {
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    if !self.condition(&f.node.directives) {
                        continue;
                    }
                    let key = f.node.response_key().node.as_str();
                    if let Some(g) = groups.iter_mut().find(|g| g.key == key) {
                        g.sub.push(&f.node.selection_set.node);
                        continue;
                    }
                    let name = f.node.name.node.as_str();
                    let field = fields.iter().find(|p| p.name == name).or_else(|| {
                        // `__schema` and `__type`, which validation allows on the query
                        // root only.
                        self.plan.introspection.root_field(name)
                    });
                    if field.is_none() && name != "__typename" {
                        continue; // validation makes this unreachable
                    }
                    groups.push(Group {
                        key,
                        node: f,
                        field,
                        sub: vec![&f.node.selection_set.node],
                    });
                }
                Selection::InlineFragment(i) => {
                    if !self.condition(&i.node.directives) {
                        continue;
                    }
                    if let Some(c) = &i.node.type_condition {
                        if !self.applies(&c.node.on.node, object) {
                            continue;
                        }
                    }
                    self.collect_into(object, fields, &i.node.selection_set.node, groups, visited);
                }
                Selection::FragmentSpread(s) => {
                    let name = s.node.fragment_name.node.as_str();
                    if !self.condition(&s.node.directives) || visited.contains(&name) {
                        continue;
                    }
                    visited.push(name);
                    let Some(frag) = self.doc.fragments.get(&s.node.fragment_name.node) else {
                        continue;
                    };
                    if !self.applies(&frag.node.type_condition.node.on.node, object) {
                        continue;
                    }
                    self.collect_into(
                        object,
                        fields,
                        &frag.node.selection_set.node,
                        groups,
                        visited,
                    );
                }
            }
        }
    }

    /// The concrete object type of `value` as a `type_name` (for an interface or union,
    /// the one its discriminator names).
    fn concrete<'v>(&self, type_name: &'a str, value: &'v Value) -> Option<&'a str> {
        match &self.plan.types.get(type_name)?.kind {
            TypePlanKind::Object { .. } => Some(type_name),
            TypePlanKind::Interface { possible, .. } | TypePlanKind::Union { possible } => {
                possible.type_of(value).ok()
            }
            _ => None,
        }
    }

    /// The field's arguments as one JSON object: literals and variables coerced, defaults
    /// applied; an argument with neither value nor default is absent.
    fn args(&self, node: &Positioned<Field>, field: &FieldPlan) -> Value {
        let mut out = serde_json::Map::new();
        for a in &field.args {
            let given = node
                .node
                .get_argument(&a.name)
                .and_then(|v| {
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

    /// Whether `sets` on a value of type `type_name` select a `@rest` field at any depth
    /// (whatever `@skip` and `@include` say): if not, nothing below needs fetching.
    fn selects_rest(&self, type_name: &'a str, sets: &[&'a SelectionSet], depth: usize) -> bool {
        if sets.iter().all(|s| s.items.is_empty()) || type_name.starts_with("__") {
            // Nothing selected, or introspection (answered from the plan).
            return false;
        }
        if let Some(below) = self.rest_below.get(type_name, sets) {
            return below;
        }
        let objects: Vec<&'a str> = match self.plan.possible(type_name) {
            Some(p) => p.types.iter().map(String::as_str).collect(),
            None => vec![type_name],
        };
        // Past this depth, assume there is (validation bounds real documents far below).
        let below = depth > 64
            || objects.iter().any(|object| {
                self.collect(object, sets).iter().any(|g| {
                    g.field.is_some_and(|f| {
                        f.rest.is_some() || self.selects_rest(f.ty.base_name(), &g.sub, depth + 1)
                    })
                })
            });
        self.rest_below.put(type_name, sets, below);
        below
    }

    /// The `@rest` fields below `value` (of type `ty`, selected by `sets`) down to the
    /// next `@rest` fields: the next level's tasks.
    fn descend<'v>(
        &self,
        value: &'v Value,
        ty: &'a crate::config::TypeRef,
        sets: &[&'a SelectionSet],
        tasks: &mut Vec<Task<'a, 'a, 'v>>,
    ) {
        if self.selects_rest(ty.base_name(), sets, 0) {
            self.descend_selected(value, ty, sets, tasks);
        }
    }

    /// [`Run::descend`] once it is known that `sets` select `@rest` below `ty`'s named
    /// type: a list's items (of that same named type) are not asked again.
    fn descend_selected<'v>(
        &self,
        value: &'v Value,
        ty: &'a crate::config::TypeRef,
        sets: &[&'a SelectionSet],
        tasks: &mut Vec<Task<'a, 'a, 'v>>,
    ) {
        use crate::config::TypeRef;
        match (ty, value) {
            (_, Value::Null) => {}
            (TypeRef::List { item, .. }, Value::Array(items)) => {
                for v in items {
                    self.descend_selected(v, item, sets, tasks);
                }
            }
            (TypeRef::Named { name, .. }, Value::Object(_)) => {
                let Some(object) = self.concrete(name, value) else {
                    return;
                };
                for g in self.collect(object, sets).iter() {
                    let Some(field) = g.field else { continue };
                    if field.rest.is_some() {
                        tasks.push(Task {
                            field,
                            node: g.node,
                            sub: g.sub.clone(),
                            parent: Some(value),
                        });
                    } else if !g.sub.iter().all(|s| s.items.is_empty()) {
                        let member = read(value, &field.member);
                        self.descend(member, &field.ty, &g.sub, tasks);
                    }
                }
            }
            _ => {}
        }
    }

    /// Fetches `first` and, level by level, every `@rest` field below, into `results`.
    async fn fetch_levels(
        &self,
        first: Vec<Task<'a, 'a, '_>>,
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
    async fn fetch_tasks(
        &self,
        tasks: Vec<Task<'a, 'a, '_>>,
        results: &mut Results,
        mutation: bool,
    ) -> Vec<(Arc<Value>, &'a Arc<FieldPlan>, Vec<&'a SelectionSet>)> {
        // Distinct requests, and for each task the index of its request.
        let mut distinct: Vec<&Task<'a, 'a, '_>> = Vec::new();
        let mut by_identity: HashMap<(usize, String), usize> = HashMap::new();
        let mut slots: Vec<(usize, (usize, usize))> = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let at = (addr(t.node), t.parent.map_or(0, addr));
            if results.contains_key(&at) {
                continue;
            }
            let reads = match (&t.field.rest, t.parent) {
                (Some(rest), Some(parent)) if !mutation => {
                    let mut text = String::new();
                    for path in &rest.parent_reads {
                        let v = path.iter().try_fold(parent, |v, m| v.get(m.as_str()));
                        text.push_str(&v.map(Value::to_string).unwrap_or_default());
                        text.push('\u{1f}');
                    }
                    text
                }
                // A root field: one per node; a mutation field is never shared.
                _ => format!("{:x}", at.1),
            };
            let n = distinct.len();
            let index = *by_identity.entry((at.0, reads)).or_insert(n);
            if index == n {
                distinct.push(t);
            }
            slots.push((index, at));
        }
        let args: Vec<Value> = distinct
            .iter()
            .map(|t| self.args(t.node, t.field))
            .collect();
        let outcomes =
            futures_util::future::join_all(distinct.iter().zip(&args).map(|(t, args)| {
                let call = Call {
                    args,
                    parent: t.parent,
                    headers: self.headers,
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
                next.push((f.value.clone(), t.field, t.sub.clone()));
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

/// Runs a prepared query or mutation. The caller checked [`Prepared::fallback`].
pub async fn execute_planned(
    rt: &Arc<Runtime>,
    prepared: &Prepared,
    variables: &async_graphql::Variables,
    headers: &HeaderMap,
    deps: &Deps,
) -> Output {
    let vars = match coerce(rt, prepared, variables) {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let plan = &*rt.plan;
    let (root_type, mutation) = match prepared.op.node.ty {
        OperationType::Mutation => (plan.mutation.as_deref().unwrap_or(&plan.query), true),
        // A live query runs as the query of the same text.
        _ => (plan.query.as_str(), false),
    };
    let root = Value::Object(Default::default());
    execute_on(
        rt, prepared, vars, headers, deps, root_type, mutation, &root,
    )
    .await
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
/// coerced variables.
pub struct EventCall {
    pub field: Arc<FieldPlan>,
    pub args: Value,
    vars: HashMap<Name, ConstValue>,
}

/// Coerces a prepared subscription's variables and finds its `@stream` root field.
pub fn events_call(
    rt: &Arc<Runtime>,
    prepared: &Prepared,
    variables: &async_graphql::Variables,
) -> Result<EventCall, Output> {
    let vars = coerce(rt, prepared, variables)?;
    let plan = &*rt.plan;
    let no_headers = HeaderMap::new();
    let no_deps = Deps::default();
    let run = Run {
        rt,
        plan,
        doc: &prepared.doc,
        vars,
        headers: &no_headers,
        deps: &no_deps,
        collected: Default::default(),
        rest_below: Default::default(),
    };
    let root_type = plan.subscription.as_deref().unwrap_or("Subscription");
    let top = [&prepared.op.node.selection_set.node];
    let groups = run.collect(root_type, &top);
    let found = groups
        .iter()
        .find_map(|g| g.field.filter(|f| f.stream.is_some()).map(|f| (g.node, f)));
    let Some((node, field)) = found else {
        return Err(Output {
            body: Bytes::from(error_body("the subscription selects no event field", None)),
            request_error: true,
            has_errors: true,
        });
    };
    let args = run.args(node, field);
    let field = field.clone();
    drop(groups);
    Ok(EventCall {
        field,
        args,
        vars: run.vars,
    })
}

/// One event of an `@stream` subscription: the selection completed over `payload` as
/// the value of the subscription's field, nested `@rest` fields fetched as for a query.
pub async fn execute_event(
    rt: &Arc<Runtime>,
    prepared: &Prepared,
    call: &EventCall,
    headers: &HeaderMap,
    payload: Value,
) -> Output {
    let plan = &*rt.plan;
    let root_type = plan.subscription.as_deref().unwrap_or("Subscription");
    let mut root = serde_json::Map::new();
    root.insert(call.field.name.clone(), payload);
    let root = Value::Object(root);
    let deps = Deps::default();
    execute_on(
        rt,
        prepared,
        call.vars.clone(),
        headers,
        &deps,
        root_type,
        false,
        &root,
    )
    .await
}

/// Fetches and writes `prepared`'s selection on `root` (a value of `root_type`).
#[allow(clippy::too_many_arguments)]
async fn execute_on(
    rt: &Arc<Runtime>,
    prepared: &Prepared,
    vars: HashMap<Name, ConstValue>,
    headers: &HeaderMap,
    deps: &Deps,
    root_type: &str,
    mutation: bool,
    root: &Value,
) -> Output {
    let plan = &*rt.plan;
    let op = &prepared.op.node;
    let root_type: &str = plan
        .types
        .get_key_value(root_type)
        .map(|(k, _)| k.as_str())
        .unwrap_or(root_type);
    let run = Run {
        rt,
        plan,
        doc: &prepared.doc,
        vars,
        headers,
        deps,
        collected: Default::default(),
        rest_below: Default::default(),
    };
    let top = [&op.selection_set.node];
    let groups = run.collect(root_type, &top);
    let mut results = Results::new();
    fn task<'d, 'p, 'v>(g: &Group<'d, 'p>) -> Option<Task<'d, 'p, 'v>> {
        g.field.filter(|f| f.rest.is_some()).map(|field| Task {
            field,
            node: g.node,
            sub: g.sub.clone(),
            parent: None,
        })
    }
    if mutation {
        for g in groups.iter() {
            if let Some(t) = task(g) {
                run.fetch_levels(vec![t], &mut results, true).await;
            }
        }
    } else {
        let mut tasks: Vec<Task<'_, '_, '_>> = groups.iter().filter_map(task).collect();
        // Root fields read from the root value (an event's payload) select `@rest`
        // fields below them.
        for g in groups.iter() {
            if let Some(field) = g.field.filter(|f| f.rest.is_none()) {
                run.descend(read(root, &field.member), &field.ty, &g.sub, &mut tasks);
            }
        }
        run.fetch_levels(tasks, &mut results, false).await;
    }
    let written = write::Writer::new(&run, &results).root(root_type, root, &top);
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
