//! Introspection as data. Input: the [`Config`] and the root type names. Output: an
//! [`Introspection`] — `__schema`'s whole value, computed once per plan and equal to
//! graphql-js's `introspectionFromSchema(buildSchema(sdl))` for the same SDL (livegate's
//! own directives left out) — and the introspection types (`__Schema`, `__Type`, …) as
//! type plans, so the executor completes any selection on them the way it completes an
//! upstream's JSON (see `exec::write`).
//!
//! What no SDL says — the built-in scalars, the introspection types, the specified
//! directives — is graphql-js's own output, kept in `introspection.json`
//! (`scripts/introspection-builtins` writes it).

use super::{ArgPlan, FieldPlan, TypePlan, TypePlanKind};
use crate::config::{ArgConfig, Config, FieldConfig, TypeConfig, TypeConfigKind, TypeRef};
use async_graphql_value::ConstValue;
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const BUILTIN: &str = include_str!("introspection.json");

/// graphql-js's reason for a `@deprecated` that gives none.
const NO_LONGER_SUPPORTED: &str = "No longer supported";

/// The schema's introspection, answered by the executor without a resolver.
#[derive(Debug, Default)]
pub struct Introspection {
    /// `__schema`'s value: every type in full, each field's type a reference
    /// (`{kind, name, ofType}`) that the executor looks up by name when more is selected.
    schema: Value,
    /// Index of each type in `schema.types`.
    by_name: HashMap<String, usize>,
    /// `__schema` and `__type(name:)`, the query root's introspection fields.
    root: Vec<Arc<FieldPlan>>,
}

impl Introspection {
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The full `__Type` value of the type `name`.
    pub fn type_named(&self, name: &str) -> Option<&Value> {
        let i = *self.by_name.get(name)?;
        self.schema.get("types")?.get(i)
    }

    /// `__schema` or `__type`: fields of the query root type that no SDL declares.
    pub fn root_field(&self, name: &str) -> Option<&Arc<FieldPlan>> {
        self.root.iter().find(|f| f.name == name)
    }
}

/// Builds the introspection of `config` and adds the introspection types to `types`.
pub(super) fn build(
    config: &Config,
    roots: [Option<&str>; 3],
    types: &mut IndexMap<String, TypePlan>,
) -> Introspection {
    // Our own file, checked by a test; were it broken, introspection would list no
    // built-in types rather than stop the gateway.
    let builtin: Value = serde_json::from_str(BUILTIN).unwrap_or_default();
    let empty = Vec::new();
    let builtin_types = builtin["types"].as_array().unwrap_or(&empty);
    let builtin_by_name: HashMap<&str, &Value> = builtin_types
        .iter()
        .filter_map(|t| Some((t["name"].as_str()?, t)))
        .collect();
    for t in builtin_types {
        if let Some(plan) = meta_type(t) {
            types.entry(plan.name.clone()).or_insert(plan);
        }
    }

    let mut kinds: HashMap<String, &'static str> = builtin_by_name
        .iter()
        .map(|(name, t)| (name.to_string(), kind_name(t["kind"].as_str())))
        .collect();
    for t in &config.types {
        kinds.insert(t.name.node.clone(), user_kind(&t.kind));
    }
    let inputs: HashMap<&str, &[ArgConfig]> = config
        .types
        .iter()
        .filter_map(|t| match &t.kind {
            TypeConfigKind::InputObject { fields } => Some((t.name.node.as_str(), &fields[..])),
            _ => None,
        })
        .collect();
    let ctx = Ctx {
        config,
        kinds: &kinds,
        inputs: &inputs,
    };

    // graphql-js's order: the SDL's types in order, each followed by the built-in
    // scalars it is the first to use; then those the specified directives use; then the
    // introspection types.
    let mut out: Vec<Value> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let add_builtin = |name: &str, out: &mut Vec<Value>, seen: &mut HashSet<String>| {
        if let Some(t) = builtin_by_name.get(name) {
            if seen.insert(name.to_string()) {
                out.push((*t).clone());
            }
        }
    };
    for t in &config.types {
        if !seen.insert(t.name.node.clone()) {
            continue;
        }
        out.push(ctx.user_type(t));
        for used in uses(t) {
            add_builtin(used, &mut out, &mut seen);
        }
    }
    for name in ["Boolean", "String"] {
        add_builtin(name, &mut out, &mut seen);
    }
    for t in builtin_types {
        if let Some(name) = t["name"].as_str().filter(|n| n.starts_with("__")) {
            add_builtin(name, &mut out, &mut seen);
        }
    }
    let by_name = out
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((t["name"].as_str()?.to_string(), i)))
        .collect();
    let [query, mutation, subscription] = roots.map(|r| r.map(|name| ctx.named(name)));
    let schema = json!({
        "description": null,
        "queryType": query,
        "mutationType": mutation,
        "subscriptionType": subscription,
        "types": out,
        "directives": builtin["directives"].clone(),
    });
    Introspection {
        schema,
        by_name,
        root: root_fields(),
    }
}

struct Ctx<'a> {
    config: &'a Config,
    kinds: &'a HashMap<String, &'static str>,
    inputs: &'a HashMap<&'a str, &'a [ArgConfig]>,
}

fn user_kind(kind: &TypeConfigKind) -> &'static str {
    match kind {
        TypeConfigKind::Object { .. } => "OBJECT",
        TypeConfigKind::Interface { .. } => "INTERFACE",
        TypeConfigKind::Union { .. } => "UNION",
        TypeConfigKind::InputObject { .. } => "INPUT_OBJECT",
        TypeConfigKind::Enum { .. } => "ENUM",
        TypeConfigKind::Scalar => "SCALAR",
    }
}

fn kind_name(kind: Option<&str>) -> &'static str {
    match kind {
        Some("OBJECT") => "OBJECT",
        Some("ENUM") => "ENUM",
        _ => "SCALAR",
    }
}

/// The named types `t` uses, in graphql-js's order (each field's type, then its
/// arguments' types).
fn uses(t: &TypeConfig) -> Vec<&str> {
    let mut out = Vec::new();
    match &t.kind {
        TypeConfigKind::Object { fields, .. } | TypeConfigKind::Interface { fields, .. } => {
            for f in fields {
                out.push(f.ty.node.base_name());
                out.extend(f.args.iter().map(|a| a.ty.node.base_name()));
            }
        }
        TypeConfigKind::InputObject { fields } => {
            out.extend(fields.iter().map(|a| a.ty.node.base_name()))
        }
        _ => {}
    }
    out
}

impl Ctx<'_> {
    /// A reference to the named type `name`.
    fn named(&self, name: &str) -> Value {
        json!({
            "kind": self.kinds.get(name).copied().unwrap_or("SCALAR"),
            "name": name,
            "ofType": null,
        })
    }

    fn type_ref(&self, ty: &TypeRef) -> Value {
        let (inner, non_null) = match ty {
            TypeRef::Named { name, non_null } => (self.named(name), *non_null),
            TypeRef::List { item, non_null } => (
                json!({ "kind": "LIST", "name": null, "ofType": self.type_ref(item) }),
                *non_null,
            ),
        };
        if non_null {
            json!({ "kind": "NON_NULL", "name": null, "ofType": inner })
        } else {
            inner
        }
    }

    fn user_type(&self, t: &TypeConfig) -> Value {
        let name = t.name.node.as_str();
        let mut out = json!({
            "kind": user_kind(&t.kind),
            "name": name,
            "description": t.description,
            "specifiedByURL": null,
            "isOneOf": null,
            "fields": null,
            "inputFields": null,
            "interfaces": null,
            "enumValues": null,
            "possibleTypes": null,
        });
        match &t.kind {
            TypeConfigKind::Object { fields, implements } => {
                out["fields"] = fields.iter().map(|f| self.field(f)).collect();
                out["interfaces"] = implements.iter().map(|i| self.named(&i.node)).collect();
            }
            TypeConfigKind::Interface { fields, .. } => {
                out["fields"] = fields.iter().map(|f| self.field(f)).collect();
                out["interfaces"] = json!([]);
                out["possibleTypes"] = self
                    .config
                    .types
                    .iter()
                    .filter(|o| match &o.kind {
                        TypeConfigKind::Object { implements, .. } => {
                            implements.iter().any(|i| i.node == name)
                        }
                        _ => false,
                    })
                    .map(|o| self.named(&o.name.node))
                    .collect();
            }
            TypeConfigKind::Union { members, .. } => {
                out["possibleTypes"] = members.iter().map(|m| self.named(&m.node)).collect();
            }
            TypeConfigKind::InputObject { fields } => {
                out["inputFields"] = fields.iter().map(|a| self.input_value(a)).collect();
                out["isOneOf"] = json!(false);
            }
            TypeConfigKind::Enum { values } => {
                out["enumValues"] = values
                    .iter()
                    .map(|v| {
                        json!({
                            "name": v.name.node,
                            "description": v.description,
                            "isDeprecated": false,
                            "deprecationReason": null,
                        })
                    })
                    .collect();
            }
            TypeConfigKind::Scalar => {}
        }
        out
    }

    fn field(&self, f: &FieldConfig) -> Value {
        json!({
            "name": f.name.node,
            "description": f.description,
            "args": f.args.iter().map(|a| self.input_value(a)).collect::<Vec<_>>(),
            "type": self.type_ref(&f.ty.node),
            "isDeprecated": f.deprecated.is_some(),
            "deprecationReason": f.deprecated.as_ref().map(|r| r.as_deref().unwrap_or(NO_LONGER_SUPPORTED)),
        })
    }

    fn input_value(&self, a: &ArgConfig) -> Value {
        json!({
            "name": a.name.node,
            "description": a.description,
            "type": self.type_ref(&a.ty.node),
            "defaultValue": a.default.as_ref().map(|d| self.literal(d, &a.ty.node, 0)),
            "isDeprecated": false,
            "deprecationReason": null,
        })
    }

    /// A default value as graphql-js prints it: coerced to its type (one value for a
    /// list is a list of one; an input object's missing fields take their defaults),
    /// then printed as a GraphQL literal.
    fn literal(&self, value: &ConstValue, ty: &TypeRef, depth: usize) -> String {
        if depth > 32 {
            return "null".into();
        }
        let (name, item) = match ty {
            TypeRef::List { item, .. } => (None, Some(&**item)),
            TypeRef::Named { name, .. } => (Some(name.as_str()), None),
        };
        match value {
            ConstValue::Null => "null".into(),
            ConstValue::List(items) => {
                let item = item.unwrap_or(ty);
                let items: Vec<String> = items
                    .iter()
                    .map(|v| self.literal(v, item, depth + 1))
                    .collect();
                format!("[{}]", items.join(", "))
            }
            other if item.is_some() => {
                format!("[{}]", self.literal(other, item.unwrap_or(ty), depth + 1))
            }
            ConstValue::Object(fields) => {
                let mut parts = Vec::new();
                match name.and_then(|n| self.inputs.get(n)) {
                    Some(declared) => {
                        for f in declared.iter() {
                            let given = fields.iter().find(|(k, _)| k.as_str() == f.name.node);
                            if let Some(v) = given.map(|(_, v)| v).or(f.default.as_ref()) {
                                parts.push(format!(
                                    "{}: {}",
                                    f.name.node,
                                    self.literal(v, &f.ty.node, depth + 1)
                                ));
                            }
                        }
                    }
                    None => {
                        for (k, v) in fields {
                            parts.push(format!("{k}: {}", self.literal(v, ty, depth + 1)));
                        }
                    }
                }
                format!("{{{}}}", parts.join(", "))
            }
            ConstValue::Enum(e) => e.to_string(),
            ConstValue::Boolean(b) => b.to_string(),
            ConstValue::Number(n) => number(n),
            ConstValue::String(s) if name == Some("ID") && int_like(s) => s.clone(),
            ConstValue::String(s) => print_string(s),
            ConstValue::Binary(b) => print_string(&String::from_utf8_lossy(b)),
        }
    }
}

/// A number as JavaScript's `String(n)` writes it (`1.0` is `1`).
fn number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
        _ => n.to_string(),
    }
}

fn int_like(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// graphql-js's `printString`.
fn print_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A type reference of graphql-js's introspection, as a [`TypeRef`].
fn json_type(v: &Value) -> Option<TypeRef> {
    match v["kind"].as_str()? {
        "NON_NULL" => Some(match json_type(&v["ofType"])? {
            TypeRef::Named { name, .. } => TypeRef::Named {
                name,
                non_null: true,
            },
            TypeRef::List { item, .. } => TypeRef::List {
                item,
                non_null: true,
            },
        }),
        "LIST" => Some(TypeRef::List {
            item: Box::new(json_type(&v["ofType"])?),
            non_null: false,
        }),
        _ => Some(TypeRef::Named {
            name: v["name"].as_str()?.to_string(),
            non_null: false,
        }),
    }
}

fn meta_field(
    name: &str,
    ty: TypeRef,
    args: Vec<ArgPlan>,
    description: Option<String>,
) -> FieldPlan {
    FieldPlan {
        name: name.to_string(),
        ty,
        args,
        description,
        deprecated: None,
        rest: None,
        invalidates: Vec::new(),
        live: None,
        updates: None,
        stream: None,
        member: vec![Arc::from(name)],
        access: None,
    }
}

/// An introspection type (`__Type`, `__TypeKind`, …) of graphql-js's introspection as a
/// type plan; `None` for a built-in scalar.
fn meta_type(t: &Value) -> Option<TypePlan> {
    let name = t["name"].as_str().filter(|n| n.starts_with("__"))?;
    let kind = match t["kind"].as_str()? {
        "OBJECT" => TypePlanKind::Object {
            fields: t["fields"]
                .as_array()?
                .iter()
                .filter_map(|f| {
                    let args = f["args"]
                        .as_array()
                        .map(|args| {
                            args.iter()
                                .filter_map(|a| {
                                    Some(ArgPlan {
                                        member: None,
                                        number: false,
                                        name: a["name"].as_str()?.to_string(),
                                        ty: json_type(&a["type"])?,
                                        default: a["defaultValue"]
                                            .as_str()
                                            .map(|d| ConstValue::Boolean(d == "true")),
                                        description: None,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(Arc::new(meta_field(
                        f["name"].as_str()?,
                        json_type(&f["type"])?,
                        args,
                        f["description"].as_str().map(str::to_string),
                    )))
                })
                .collect(),
            implements: Vec::new(),
        },
        "ENUM" => {
            let values: Vec<String> = t["enumValues"]
                .as_array()?
                .iter()
                .filter_map(|v| Some(v["name"].as_str()?.to_string()))
                .collect();
            TypePlanKind::Enum {
                upstream: values.clone(),
                values,
            }
        }
        _ => return None,
    };
    Some(TypePlan {
        name: name.to_string(),
        description: t["description"].as_str().map(str::to_string),
        kind,
        access: None,
    })
}

/// `__schema: __Schema!` and `__type(name: String!): __Type`.
fn root_fields() -> Vec<Arc<FieldPlan>> {
    let named = |name: &str, non_null| TypeRef::Named {
        name: name.into(),
        non_null,
    };
    vec![
        Arc::new(meta_field(
            "__schema",
            named("__Schema", true),
            Vec::new(),
            None,
        )),
        Arc::new(meta_field(
            "__type",
            named("__Type", false),
            vec![ArgPlan {
                member: None,
                number: false,
                name: "name".into(),
                ty: named("String", true),
                default: None,
                description: None,
            }],
            None,
        )),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_builtin_file_has_every_introspection_type() {
        let mut types = indexmap::IndexMap::new();
        let config = crate::config::parse("t", "type Query { a: Int }").expect("parses");
        let i = super::build(&config, [Some("Query"), None, None], &mut types);
        for name in [
            "__Schema",
            "__Type",
            "__TypeKind",
            "__Field",
            "__InputValue",
            "__EnumValue",
            "__Directive",
            "__DirectiveLocation",
        ] {
            assert!(types.contains_key(name), "{name}");
            assert!(i.type_named(name).is_some(), "{name}");
        }
        assert!(i.type_named("String").is_some() && i.type_named("Int").is_some());
        assert!(
            i.type_named("Float").is_none(),
            "only the scalars used are listed"
        );
        assert_eq!(i.schema()["directives"].as_array().map(Vec::len), Some(5));
    }
}
