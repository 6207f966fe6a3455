//! Null propagation, as the GraphQL spec has it ("Handling Field Errors"): a field that
//! failed is null, and a null in a non-null position makes its parent null, up to the
//! nearest nullable position (or `data` itself).
//!
//! async-graphql's dynamic executor does not do this: a non-null field whose resolver
//! gave no value is dropped from its object (the key is missing) and its parent stays.
//! Input: the plan's types, the executed document and the response's errors (each with
//! the path of the field that failed). Output: the response's `data`, with each failed
//! field null and each null propagated. Work is done only for responses with field errors.

use crate::config::TypeRef;
use crate::plan::Plan;
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Name, PathSegment, Value};

/// Deepest selection nesting followed (validation has already bounded the document).
const MAX_DEPTH: usize = 64;

/// Completes `response` per the spec's null propagation rules; `query` and
/// `operation_name` are what was executed.
pub fn propagate(
    plan: &Plan,
    query: &str,
    operation_name: Option<&str>,
    response: &mut async_graphql::Response,
) {
    if response.errors.iter().all(|e| e.path.is_empty()) {
        return;
    }
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return;
    };
    let Some(op) = crate::exec::operation(&doc, operation_name) else {
        return;
    };
    let root = match op.node.ty {
        OperationType::Query => Some(plan.query.as_str()),
        OperationType::Mutation => plan.mutation.as_deref(),
        OperationType::Subscription => plan.subscription.as_deref(),
    };
    let Some(root) = root else { return };
    let paths: Vec<Vec<PathSegment>> = response
        .errors
        .iter()
        .filter(|e| !e.path.is_empty())
        .map(|e| e.path.clone())
        .collect();
    for path in paths {
        let Some(types) = types_along(plan, &doc, root, &op.node.selection_set.node, &path) else {
            continue;
        };
        if !null_out(&mut response.data, &path, &types) {
            break; // `data` itself is null: nothing below it is left to complete.
        }
    }
}

/// The declared type at each step of `path` (a field's type, or a list's item type).
fn types_along<'p>(
    plan: &'p Plan,
    doc: &ExecutableDocument,
    root: &str,
    selection: &SelectionSet,
    path: &[PathSegment],
) -> Option<Vec<&'p TypeRef>> {
    let mut types: Vec<&TypeRef> = Vec::with_capacity(path.len());
    let mut object = root.to_string();
    let mut sets: Vec<&SelectionSet> = vec![selection];
    for segment in path {
        match segment {
            PathSegment::Field(key) => {
                let mut found = Vec::new();
                let mut name = None;
                for set in &sets {
                    fields_named(doc, set, key, &mut name, &mut found, 0);
                }
                let name = name?;
                let field = plan.field(&object, name.as_str())?;
                types.push(&field.ty);
                object = field.ty.base_name().to_string();
                sets = found;
            }
            PathSegment::Index(_) => match types.last()? {
                TypeRef::List { item, .. } => types.push(item),
                TypeRef::Named { .. } => return None,
            },
        }
    }
    Some(types)
}

/// Every field of `set` (through fragments) answering under `key`: its field name and
/// the selection sets below it, which together select the field's value.
fn fields_named<'d>(
    doc: &'d ExecutableDocument,
    set: &'d SelectionSet,
    key: &str,
    name: &mut Option<&'d Name>,
    found: &mut Vec<&'d SelectionSet>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    for item in &set.items {
        let inner = match &item.node {
            Selection::Field(f) => {
                if f.node.response_key().node.as_str() == key {
                    *name = Some(&f.node.name.node);
                    found.push(&f.node.selection_set.node);
                }
                continue;
            }
            Selection::InlineFragment(frag) => Some(&frag.node.selection_set.node),
            Selection::FragmentSpread(spread) => doc
                .fragments
                .get(&spread.node.fragment_name.node)
                .map(|frag| &frag.node.selection_set.node),
        };
        if let Some(inner) = inner {
            fields_named(doc, inner, key, name, found, depth + 1);
        }
    }
}

/// Makes the failed field at `path` null, then its nearest nullable ancestor if the field
/// is non-null, and so on. `false` when that reached `data` itself.
fn null_out(data: &mut Value, path: &[PathSegment], types: &[&TypeRef]) -> bool {
    // The first position along the path that is null or missing: there the failure is.
    let mut failed = path.len();
    let mut at = &*data;
    for (i, segment) in path.iter().enumerate() {
        let next = match (segment, at) {
            (PathSegment::Field(key), Value::Object(map)) => map.get(key.as_str()),
            (PathSegment::Index(n), Value::List(items)) => items.get(*n),
            _ => None,
        };
        match next {
            Some(Value::Null) | None => {
                failed = i + 1;
                break;
            }
            Some(v) => at = v,
        }
        if i + 1 == path.len() {
            return true; // The field has a value after all: nothing to complete.
        }
    }
    let mut keep = failed;
    while keep > 0 && types[keep - 1].non_null() {
        keep -= 1;
    }
    if keep == 0 {
        *data = Value::Null;
        return false;
    }
    set_null(data, &path[..keep]);
    true
}

/// Sets the position at `path` to null (adding the key when the executor dropped it).
fn set_null(data: &mut Value, path: &[PathSegment]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = data;
    for segment in parents {
        let next = match (segment, at) {
            (PathSegment::Field(key), Value::Object(map)) => map.get_mut(key.as_str()),
            (PathSegment::Index(n), Value::List(items)) => items.get_mut(*n),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return,
        }
    }
    match (last, at) {
        (PathSegment::Field(key), Value::Object(map)) => {
            map.insert(Name::new(key), Value::Null);
        }
        (PathSegment::Index(n), Value::List(items)) => {
            if let Some(item) = items.get_mut(*n) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
}
