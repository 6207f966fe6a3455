//! Input coercion (the spec's CoerceVariableValues and CoerceArgumentValues): variable
//! values against their declared types, and argument values (literals with variables
//! substituted) against the argument's type, with input-object field defaults applied.

use crate::config::TypeRef;
use crate::plan::{Plan, TypePlanKind};
use async_graphql::parser::types::VariableDefinition;
use async_graphql::{Name, Positioned};
use async_graphql_value::{ConstValue, Number};
use std::collections::HashMap;

/// The coerced values of the operation's variables; a variable that was neither given
/// nor has a default is absent. `Err` is the request error's message.
pub fn coerce_variables(
    plan: &Plan,
    defs: &[Positioned<VariableDefinition>],
    given: &async_graphql::Variables,
) -> Result<HashMap<Name, ConstValue>, String> {
    let mut out = HashMap::with_capacity(defs.len());
    for def in defs {
        let name = &def.node.name.node;
        let ty = TypeRef::from_parser(&def.node.var_type.node);
        match given.get(name) {
            None => {
                if let Some(d) = &def.node.default_value {
                    out.insert(name.clone(), d.node.clone());
                } else if ty.non_null() {
                    return Err(format!(
                        "variable `${name}` of required type `{ty}` was not provided"
                    ));
                }
            }
            Some(ConstValue::Null) if ty.non_null() => {
                return Err(format!(
                    "variable `${name}` of non-null type `{ty}` must not be null"
                ));
            }
            Some(v) => {
                let coerced = coerce(plan, &ty, v).map_err(|why| {
                    format!("variable `${name}` got an invalid value for type `{ty}`: {why}")
                })?;
                out.insert(name.clone(), coerced);
            }
        }
    }
    Ok(out)
}

/// `value` as an input of type `ty`, or why it is not one.
pub fn coerce(plan: &Plan, ty: &TypeRef, value: &ConstValue) -> Result<ConstValue, String> {
    if matches!(value, ConstValue::Null) {
        return if ty.non_null() {
            Err(format!("null is not allowed for `{ty}`"))
        } else {
            Ok(ConstValue::Null)
        };
    }
    match ty {
        TypeRef::List { item, .. } => match value {
            ConstValue::List(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| coerce(plan, item, v).map_err(|why| format!("at [{i}]: {why}")))
                .collect::<Result<Vec<_>, _>>()
                .map(ConstValue::List),
            // A single value stands for a list of one.
            single => Ok(ConstValue::List(vec![coerce(plan, item, single)?])),
        },
        TypeRef::Named { name, .. } => named(plan, name, value),
    }
}

fn named(plan: &Plan, name: &str, value: &ConstValue) -> Result<ConstValue, String> {
    let wrong = || Err(format!("{} is not a valid {name}", describe(value)));
    match name {
        "Int" => match value {
            ConstValue::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => {
                Ok(value.clone())
            }
            _ => wrong(),
        },
        "Float" => match value {
            ConstValue::Number(n) => Ok(ConstValue::Number(
                Number::from_f64(n.as_f64().unwrap_or(0.0)).unwrap_or_else(|| n.clone()),
            )),
            _ => wrong(),
        },
        "String" => match value {
            ConstValue::String(_) => Ok(value.clone()),
            _ => wrong(),
        },
        "Boolean" => match value {
            ConstValue::Boolean(_) => Ok(value.clone()),
            _ => wrong(),
        },
        "ID" => match value {
            ConstValue::String(_) => Ok(value.clone()),
            ConstValue::Number(n) if n.is_i64() || n.is_u64() => {
                Ok(ConstValue::String(n.to_string()))
            }
            _ => wrong(),
        },
        _ => match plan.types.get(name).map(|t| &t.kind) {
            Some(TypePlanKind::Enum { values, .. }) => {
                let s = match value {
                    ConstValue::Enum(e) => e.as_str(),
                    ConstValue::String(s) => s.as_str(),
                    _ => return wrong(),
                };
                if values.iter().any(|v| v == s) {
                    Ok(ConstValue::Enum(Name::new(s)))
                } else {
                    wrong()
                }
            }
            Some(TypePlanKind::InputObject { fields }) => {
                let ConstValue::Object(given) = value else {
                    return wrong();
                };
                if let Some(unknown) = given
                    .keys()
                    .find(|k| !fields.iter().any(|f| f.name == k.as_str()))
                {
                    return Err(format!("`{unknown}` is not a field of `{name}`"));
                }
                let mut out = async_graphql::indexmap::IndexMap::new();
                for f in fields {
                    match given.get(f.name.as_str()) {
                        Some(v) => {
                            let v = coerce(plan, &f.ty, v)
                                .map_err(|why| format!("field `{}`: {why}", f.name))?;
                            out.insert(Name::new(&f.name), v);
                        }
                        None => match &f.default {
                            Some(d) => {
                                out.insert(Name::new(&f.name), d.clone());
                            }
                            None if f.ty.non_null() => {
                                return Err(format!(
                                    "field `{}` of type `{}` is required",
                                    f.name, f.ty
                                ))
                            }
                            None => {}
                        },
                    }
                }
                Ok(ConstValue::Object(out))
            }
            // Custom scalars take any value.
            _ => Ok(value.clone()),
        },
    }
}

fn describe(v: &ConstValue) -> String {
    match v {
        ConstValue::Null => "null".into(),
        ConstValue::Number(n) => format!("the number {n}"),
        ConstValue::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        ConstValue::String(_) => "a string".into(),
        ConstValue::Boolean(b) => format!("the boolean {b}"),
        ConstValue::Binary(_) => "binary data".into(),
        ConstValue::Enum(e) => format!("the enum value {e}"),
        ConstValue::List(_) => "a list".into(),
        ConstValue::Object(_) => "an object".into(),
    }
}

/// A coerced input value as the upstream is sent it: enum values as the upstream says them
/// (`@map(from:)` on the value), input object members under their `@map(from:)` paths,
/// null members left out.
pub fn outbound(plan: &Plan, ty: &TypeRef, value: ConstValue) -> serde_json::Value {
    use serde_json::Value;
    match (ty, value) {
        (_, ConstValue::Null) => Value::Null,
        (TypeRef::List { item, .. }, ConstValue::List(items)) => {
            Value::Array(items.into_iter().map(|v| outbound(plan, item, v)).collect())
        }
        (TypeRef::Named { name, .. }, value) => {
            match plan.types.get(name.as_str()).map(|t| &t.kind) {
                Some(TypePlanKind::Enum { .. }) => {
                    let given = match &value {
                        ConstValue::Enum(e) => e.as_str(),
                        ConstValue::String(s) => s.as_str(),
                        _ => return value.into_json().unwrap_or(Value::Null),
                    };
                    let said = crate::resolve::shape::enum_value(
                        plan,
                        name,
                        given,
                        crate::resolve::shape::Spelling::Sent,
                    )
                    .unwrap_or(given);
                    Value::String(said.to_string())
                }
                Some(TypePlanKind::InputObject { fields }) => {
                    let ConstValue::Object(members) = value else {
                        return value.into_json().unwrap_or(Value::Null);
                    };
                    let mut out = serde_json::Map::new();
                    for (k, v) in members {
                        let field = fields.iter().find(|f| f.name == k.as_str());
                        let v = match field {
                            Some(f) => sent(plan, f, v),
                            None => v.into_json().unwrap_or(Value::Null),
                        };
                        if v.is_null() {
                            continue;
                        }
                        match field.and_then(|f| f.member.as_deref()) {
                            Some(path) => put_at(&mut out, path, v),
                            None => {
                                out.insert(k.to_string(), v);
                            }
                        }
                    }
                    Value::Object(out)
                }
                _ => value.into_json().unwrap_or(Value::Null),
            }
        }
        (_, value) => value.into_json().unwrap_or(Value::Null),
    }
}

/// Puts `v` at the member path `path` of `out`, making the objects on the way.
fn put_at(
    out: &mut serde_json::Map<String, serde_json::Value>,
    path: &[String],
    v: serde_json::Value,
) {
    let Some((last, ways)) = path.split_last() else {
        return;
    };
    let mut at = out;
    for m in ways {
        let slot = at
            .entry(m.clone())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if !slot.is_object() {
            *slot = serde_json::Value::Object(serde_json::Map::new());
        }
        let serde_json::Value::Object(next) = slot else {
            return;
        };
        at = next;
    }
    at.insert(last.clone(), v);
}

/// The value of the argument or input field `arg` as the upstream is sent it: see
/// [`outbound`] and [`numbered`].
pub fn sent(plan: &Plan, arg: &crate::plan::ArgPlan, value: ConstValue) -> serde_json::Value {
    numbered(outbound(plan, &arg.ty, value), arg.number)
}

/// `value` with each string that is an integer's text made that number, when `number`
/// (`@map(as: NUMBER)`): an `ID` argument `"2"` goes out as `2`; lists item by item.
pub fn numbered(value: serde_json::Value, number: bool) -> serde_json::Value {
    use serde_json::Value;
    if !number {
        return value;
    }
    match value {
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) if n.to_string() == s => Value::from(n),
            _ => Value::String(s),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(|v| numbered(v, true)).collect()),
        other => other,
    }
}
