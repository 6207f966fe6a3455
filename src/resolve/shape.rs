//! Upstream JSON against the schema's types: [`check`] proves a whole value fits the
//! field's type (for the dynamic executor, `@stream` messages and `@updates` patches; the
//! planned executor completes leaf by leaf with [`leaf_fits`]), [`output`] hands parts of
//! a cached body to the dynamic executor without copying them: a [`Node`] is the shared
//! body plus a path into it.

use crate::config::TypeRef;
use crate::plan::{Plan, TypePlanKind};
use async_graphql::dynamic::FieldValue;
use async_graphql::{Name, Value as GqlValue};
use serde_json::Value;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Seg {
    Key(Arc<str>),
    Index(usize),
}

/// A place inside a cached upstream body. Cloning it never copies the body.
#[derive(Clone, Debug)]
pub struct Node {
    root: Arc<Value>,
    path: Vec<Seg>,
}

static NULL: Value = Value::Null;

impl Node {
    pub fn new(root: Arc<Value>) -> Self {
        Node {
            root,
            path: Vec::new(),
        }
    }

    pub fn value(&self) -> &Value {
        let mut v: &Value = &self.root;
        for seg in &self.path {
            v = match seg {
                Seg::Key(k) => v.get(&**k),
                Seg::Index(i) => v.get(*i),
            }
            .unwrap_or(&NULL);
        }
        v
    }

    pub fn field(&self, name: &Arc<str>) -> Node {
        self.child(Seg::Key(name.clone()))
    }

    /// The place at a member path below this one (`@map(from: "owner.login")`).
    pub fn at(&self, members: &[Arc<str>]) -> Node {
        let mut path = Vec::with_capacity(self.path.len() + members.len());
        path.extend(self.path.iter().cloned());
        path.extend(members.iter().map(|m| Seg::Key(m.clone())));
        Node {
            root: self.root.clone(),
            path,
        }
    }

    fn child(&self, seg: Seg) -> Node {
        let mut path = Vec::with_capacity(self.path.len() + 1);
        path.extend(self.path.iter().cloned());
        path.push(seg);
        Node {
            root: self.root.clone(),
            path,
        }
    }
}

/// The value at `node`, shaped as `ty` for the executor; `None` for null.
pub fn output(plan: &Plan, node: Node, ty: &TypeRef) -> Option<FieldValue<'static>> {
    let value = node.value();
    if value.is_null() {
        return None;
    }
    match ty {
        TypeRef::List { item, .. } => {
            let len = value.as_array().map_or(0, Vec::len);
            Some(FieldValue::list((0..len).map(|i| {
                output(plan, node.child(Seg::Index(i)), item)
                    .unwrap_or(FieldValue::value(GqlValue::Null))
            })))
        }
        TypeRef::Named { name, .. } => match plan.types.get(name.as_str()).map(|t| &t.kind) {
            Some(TypePlanKind::Object { .. }) => Some(FieldValue::owned_any(node)),
            // [`check`] proved the discriminator names a type; a value that was not
            // checked and names none is null.
            Some(TypePlanKind::Interface { possible, .. } | TypePlanKind::Union { possible }) => {
                let concrete = possible.type_of(value).ok()?.to_string();
                Some(FieldValue::owned_any(node).with_type(concrete))
            }
            Some(TypePlanKind::Enum { .. }) => match value {
                Value::String(s) => Some(FieldValue::value(GqlValue::Enum(Name::new(s)))),
                _ => None,
            },
            // GraphQL serialises an ID as a string, whatever the upstream sent.
            _ if name == "ID" && value.is_number() => {
                Some(FieldValue::value(GqlValue::String(value.to_string())))
            }
            _ => Some(FieldValue::value(leaf(value))),
        },
    }
}

fn leaf(v: &Value) -> GqlValue {
    match v {
        Value::Null => GqlValue::Null,
        Value::Bool(b) => GqlValue::Boolean(*b),
        Value::Number(n) => GqlValue::Number(n.clone()),
        Value::String(s) => GqlValue::String(s.clone()),
        other => GqlValue::from_json(other.clone()).unwrap_or(GqlValue::Null),
    }
}

/// The part of an upstream answer at the `select` path (all of it for an empty path, or
/// a `304`, which has nothing), taken out without copying; an answer without that part
/// is a bad response from `upstream`.
pub fn select(
    mut answer: crate::upstream::Answer,
    path: &[String],
    upstream: &str,
) -> Result<crate::upstream::Answer, crate::upstream::UpstreamError> {
    if path.is_empty() || answer.not_modified {
        return Ok(answer);
    }
    let picked = path
        .iter()
        .try_fold(std::mem::take(&mut answer.value), |v, seg| match v {
            Value::Object(mut map) => map.remove(seg.as_str()),
            _ => None,
        });
    answer.value = picked.ok_or_else(|| crate::upstream::UpstreamError::BadResponse {
        upstream: upstream.to_string(),
        detail: format!("the response has no `{}` (select)", path.join(".")),
    })?;
    Ok(answer)
}

/// Checks that `value` fits `ty`: lists are lists, objects objects, non-null fields
/// present, scalars of the right kind. Fields resolved by their own `@rest` are skipped:
/// they are not part of this body. The error names the first misfit by its JSON path.
pub fn check(plan: &Plan, value: &Value, ty: &TypeRef) -> Result<(), String> {
    let mut path = String::new();
    check_at(plan, value, ty, &mut path)
}

fn check_at(plan: &Plan, value: &Value, ty: &TypeRef, path: &mut String) -> Result<(), String> {
    let at = |path: &str| {
        if path.is_empty() {
            "the body".to_string()
        } else {
            format!("`{}`", path.strip_prefix('.').unwrap_or(path))
        }
    };
    if value.is_null() {
        return if ty.non_null() {
            Err(format!("{} is null, but the schema says {ty}", at(path)))
        } else {
            Ok(())
        };
    }
    match ty {
        TypeRef::List { item, .. } => {
            let Value::Array(items) = value else {
                return Err(format!("{} should be a list ({ty})", at(path)));
            };
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_at(plan, v, item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        TypeRef::Named { name, .. } => {
            let fits = match composite(plan, name) {
                None => leaf_fits(plan, name, value),
                Some(kind) => match kind {
                    TypePlanKind::Object { fields, .. } => {
                        if !value.is_object() {
                            return Err(format!("{} should be an object ({name})", at(path)));
                        }
                        check_fields(plan, value, fields, path)?;
                        true
                    }
                    TypePlanKind::Interface { possible, .. } | TypePlanKind::Union { possible } => {
                        if !value.is_object() {
                            return Err(format!("{} should be an object ({name})", at(path)));
                        }
                        let concrete = possible
                            .type_of(value)
                            .map_err(|why| format!("{} {why}", at(path)))?;
                        let fields = plan.object_fields(concrete).unwrap_or(&[]);
                        check_fields(plan, value, fields, path)?;
                        true
                    }
                    _ => true,
                },
            };
            if fits {
                Ok(())
            } else {
                Err(format!(
                    "{} is {}, but the schema says {name}",
                    at(path),
                    describe(value)
                ))
            }
        }
    }
}

/// The kind of the named type `name` when it is an object, interface or union type;
/// `None` for a leaf (a built-in scalar is looked up in no table).
pub(crate) fn composite<'p>(plan: &'p Plan, name: &str) -> Option<&'p TypePlanKind> {
    if matches!(name, "Int" | "Float" | "String" | "Boolean" | "ID") {
        return None;
    }
    plan.types.get(name).map(|t| &t.kind).filter(|k| {
        matches!(
            k,
            TypePlanKind::Object { .. }
                | TypePlanKind::Interface { .. }
                | TypePlanKind::Union { .. }
        )
    })
}

/// Whether the upstream value `value` (not null) is a valid result of the leaf type
/// `name`: an `Int` in 32 bits, any number for `Float`, a string or an integer for `ID`,
/// one of an enum's values, anything for a custom scalar.
pub(crate) fn leaf_fits(plan: &Plan, name: &str, value: &Value) -> bool {
    match name {
        "Int" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "Float" => value.is_number(),
        "String" => value.is_string(),
        "Boolean" => value.is_boolean(),
        "ID" => value.is_string() || value.is_i64() || value.is_u64(),
        _ => match plan.types.get(name).map(|t| &t.kind) {
            Some(TypePlanKind::Enum { values }) => value
                .as_str()
                .is_some_and(|s| values.iter().any(|v| v == s)),
            // Custom scalars accept any JSON.
            _ => true,
        },
    }
}

/// Checks the members of the upstream object `value` that `fields` read (those without
/// their own `@rest`).
fn check_fields(
    plan: &Plan,
    value: &Value,
    fields: &[Arc<crate::plan::FieldPlan>],
    path: &mut String,
) -> Result<(), String> {
    for f in fields.iter().filter(|f| f.rest.is_none()) {
        let len = path.len();
        path.push('.');
        path.push_str(&f.name);
        let found = f
            .member
            .iter()
            .try_fold(value, |v, m| v.get(&**m))
            .unwrap_or(&Value::Null);
        check_at(plan, found, &f.ty, path)?;
        path.truncate(len);
    }
    Ok(())
}

/// A JSON value in words, for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}
