//! Documents prepared once: parsed, validated (by async-graphql, through the
//! [`super::Gate`]), their operation picked, and kept in a bounded cache with their plans
//! ([`super::operation`]), one per set of `@skip`/`@include` condition values.

use super::operation::{self, Operation};
use super::{cap_errors, error_body, Output};
use crate::plan::Plan;
use crate::resolve::Runtime;
use async_graphql::parser::types::{
    ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};
use async_graphql_value::ConstValue;
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

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

/// A document ready to run: parsed, validated, its operation picked.
pub struct Prepared {
    query: String,
    operation_name: Option<String>,
    doc: ExecutableDocument,
    pub(super) op: Positioned<OperationDefinition>,
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
        rt.metrics.hot.plan_hit.inc();
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
        rt.metrics.hot.plan_miss.inc();
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

    /// The operation's name as the request gave it (or the document's one operation's).
    pub fn name(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }

    /// The document's text (for `--trace-documents`).
    pub fn document(&self) -> &str {
        &self.query
    }

    /// The operation planned for the values `vars` give its conditions: once per set of
    /// values (see [`operation`]).
    pub(super) fn planned(
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

/// async-graphql's validation of `doc` (the text `query`, its operation `operation_name`)
/// against `schema`, with no variables (so the outcome is the document's alone): the
/// [`super::Gate`] stops the request after it, before anything runs. Its errors, when it fails.
pub(super) async fn validate(
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
