//! The fetch pass: level by level, every `@rest` field of a level is one task per
//! distinct (field, what its request reads of the parent), all run at once — so a
//! `batchKey` field's keys of all parents join one batch, and the shared cache
//! deduplicates the rest; a mutation's root fields run one after another, each with its
//! whole subtree. Outcomes are kept by (planned field, parent object) for the writer.

use super::operation::{Next, Planned};
use super::vars;
use crate::deps::Deps;
use crate::plan::{Access, Denied, FieldPlan, Plan};
use crate::request::RequestContext;
use crate::resolve::{Call, Fetched, Runtime};
use crate::upstream::UpstreamError;
use async_graphql::{Name, Positioned};
use async_graphql_value::{ConstValue, Value as GqlValue};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What one request's execution shares.
pub(super) struct Run<'a> {
    pub(super) rt: &'a Arc<Runtime>,
    pub(super) plan: &'a Plan,
    pub(super) vars: HashMap<Name, ConstValue>,
    pub(super) ctx: &'a RequestContext,
    pub(super) deps: &'a Deps,
}

/// What fetching a `@rest` field gave.
pub(super) type Outcome = Result<Option<Fetched>, UpstreamError>;

/// A fetched `@rest` field by (planned field, parent object); parent 0 is the root.
/// Fx-hashed: the keys are plan ids and addresses, nothing a caller or an upstream picks.
pub(super) type Results = rustc_hash::FxHashMap<(u32, usize), Arc<Outcome>>;

/// The member at `path` of an upstream object (null when missing). Upstream objects
/// are small: a scan beats hashing the key.
pub(super) fn read<'v>(value: &'v Value, path: &[Arc<str>]) -> &'v Value {
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
            map.iter().find(|(k, _)| same(k, name)).map(|(_, v)| v)
        }
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

/// `a == b`, without a `memcmp` call for the short names of upstream members (a call per
/// key scanned was 3% of a nested query's CPU).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 32 {
        return a == b;
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

pub(super) fn addr<T>(r: &T) -> usize {
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

/// What a `@rest` field's request reads of its parent object, in order.
fn parent_reads<'r, 'v: 'r>(
    rest: &'r crate::plan::RestPlan,
    parent: &'v Value,
) -> impl Iterator<Item = Option<&'v Value>> + 'r {
    rest.parent_reads
        .iter()
        .map(move |path| path.iter().try_fold(parent, |v, m| member(v, m)))
}

/// The task of a root field, if it is a `@rest` field.
pub(super) fn root_task<'p, 'v>(p: &'p Planned) -> Option<Task<'p, 'v>> {
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
pub(super) struct Task<'p, 'v> {
    field: &'p Arc<FieldPlan>,
    planned: &'p Planned,
    parent: Option<&'v Value>,
}

/// The arguments of a field as written.
type Arguments = [(Positioned<Name>, Positioned<GqlValue>)];

impl<'a> Run<'a> {
    /// Whether the caller may see what `access` guards (`None`: anyone).
    pub(super) fn allowed(&self, access: Option<&Arc<Access>>) -> Result<(), Denied> {
        match access {
            None => Ok(()),
            Some(a) => a.check(self.ctx.identity().map(|i| i.scopes.as_slice())),
        }
    }

    /// Whether the caller may see the planned field `p` (its upstream is never called
    /// for one who may not).
    pub(super) fn permits(&self, p: &Planned) -> bool {
        p.field
            .as_ref()
            .is_none_or(|f| self.allowed(f.access.as_ref()).is_ok())
    }

    /// The field's arguments as one JSON object: literals and variables coerced, defaults
    /// applied; an argument with neither value nor default is absent.
    pub(super) fn args(&self, arguments: &Arguments, field: &FieldPlan) -> Value {
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
            // A null optional argument is left out, like an absent one: of `{args}`, of
            // bodies, query strings and headers.
            if let Some(v) = given.or_else(|| a.default.clone()) {
                let v = vars::sent(self.plan, a, v);
                if !v.is_null() {
                    out.insert(a.name.clone(), v);
                }
            }
        }
        Value::Object(out)
    }

    /// The `@rest` fields below `value` (of type `ty`, selected by `next`) down to the
    /// next `@rest` fields: the next level's tasks.
    pub(super) fn descend<'p, 'v>(
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
                if !shape.rest || self.allowed(shape.access.as_ref()).is_err() {
                    return;
                }
                for p in &shape.fields {
                    let Some(field) = &p.field else { continue };
                    if self.allowed(field.access.as_ref()).is_err() {
                        continue;
                    }
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
    pub(super) async fn fetch_levels<'p>(
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
        // By (field, hash of what the request reads): the hash is SipHash's (random keys),
        // so the map's own hashing need not be.
        let mut by_identity: rustc_hash::FxHashMap<(u32, u64), Vec<usize>> = Default::default();
        let mut slots: Vec<(usize, (u32, usize))> = Vec::with_capacity(tasks.len());
        results.reserve(tasks.len());
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
                    let hash = {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        for v in parent_reads(rest, parent) {
                            hash_json(v, &mut h, 0);
                        }
                        h.finish()
                    };
                    let same = by_identity.entry((at.0, hash)).or_default();
                    let found = same.iter().copied().find(|i| {
                        distinct[*i].parent.is_some_and(|other| {
                            parent_reads(rest, other).eq(parent_reads(rest, parent))
                        })
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
