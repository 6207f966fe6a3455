//! Upstream JSON against the schema's types: [`check`] proves a whole value fits the
//! field's type (`@stream` messages and `@updates` patches; the executor completes leaf
//! by leaf with [`leaf_fits`]), and [`select`] takes the part of an answer a field reads.

use crate::config::TypeRef;
use crate::plan::{Plan, TypePlanKind};
use serde_json::Value;
use std::sync::Arc;

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
/// `name`: see [`Leaf::fits`].
pub(crate) fn leaf_fits(plan: &Plan, name: &str, value: &Value) -> bool {
    Leaf::of(plan, name).fits(plan, value)
}

/// A leaf type, resolved from its name once (the executor keeps it in its plan).
pub enum Leaf {
    Int,
    Float,
    String,
    Boolean,
    Id,
    Enum(Arc<str>),
    /// A custom scalar: any JSON.
    Any,
}

impl Leaf {
    pub fn of(plan: &Plan, name: &str) -> Leaf {
        match name {
            "Int" => Leaf::Int,
            "Float" => Leaf::Float,
            "String" => Leaf::String,
            "Boolean" => Leaf::Boolean,
            "ID" => Leaf::Id,
            _ => match plan.types.get(name).map(|t| &t.kind) {
                Some(TypePlanKind::Enum { .. }) => Leaf::Enum(name.into()),
                _ => Leaf::Any,
            },
        }
    }

    /// Whether the upstream value `value` (not null) is a valid result of this type: an
    /// `Int` in 32 bits, any number for `Float`, a string or an integer for `ID`, one of
    /// an enum's values, anything for a custom scalar.
    pub fn fits(&self, plan: &Plan, value: &Value) -> bool {
        match self {
            Leaf::Int => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            Leaf::Float => value.is_number(),
            Leaf::String => value.is_string(),
            Leaf::Boolean => value.is_boolean(),
            Leaf::Id => value.is_string() || value.is_i64() || value.is_u64(),
            Leaf::Enum(name) => match plan.types.get(&**name).map(|t| &t.kind) {
                Some(TypePlanKind::Enum { upstream, .. }) => value
                    .as_str()
                    .is_some_and(|s| upstream.iter().any(|v| v == s)),
                _ => true,
            },
            Leaf::Any => true,
        }
    }
}

/// Which way an enum value is translated (`@map(from:)` on the value).
#[derive(Clone, Copy)]
pub(crate) enum Spelling {
    /// From what the upstream says to the value's name.
    Served,
    /// From the value's name to what the upstream says.
    Sent,
}

/// `word`, a value of enum `name`, spelled the other way (see [`Spelling`]).
pub(crate) fn enum_value<'p>(
    plan: &'p Plan,
    name: &str,
    word: &str,
    to: Spelling,
) -> Option<&'p str> {
    let Some(TypePlanKind::Enum { values, upstream }) = plan.types.get(name).map(|t| &t.kind)
    else {
        return None;
    };
    let (from, into) = match to {
        Spelling::Served => (upstream, values),
        Spelling::Sent => (values, upstream),
    };
    let i = from.iter().position(|w| w == word)?;
    into.get(i).map(String::as_str)
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
