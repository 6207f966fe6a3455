//! JSON Schemas → GraphQL types. A schema reached through a `$ref` is one named type
//! however often it is used (so cycles are type references, never expanded); an inline
//! object is a type named after where it sits (`Order` + `shippingAddress` →
//! `OrderShippingAddress`). Objects serve what the API sends (members renamed to
//! camelCase with `@map(from:)`), inputs send what it reads (`…Input`, the same renaming),
//! enums are shared by both.

use super::doc::{last_segment, Docs, Loc};
use super::names::{camel, constant, pascal, Taken};
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

mod headers;
mod objects;
mod polymorphic;

/// A GraphQL type as written in a field (`[Pet!]`, `String`), and whether the schema
/// allows `null` (so the field must not be `!`).
#[derive(Clone, Debug)]
pub struct Ty {
    pub text: String,
    pub nullable: bool,
}

impl Ty {
    fn named(text: &str, nullable: bool) -> Ty {
        Ty {
            text: text.to_string(),
            nullable,
        }
    }
}

#[derive(Clone)]
pub struct Field {
    pub name: String,
    pub ty: String,
    pub description: Option<String>,
    /// Directives after the type, already written (`@map(from: "created_at")`).
    pub directives: String,
    /// Said on the line after `#`.
    pub comment: Option<String>,
}

pub enum Def {
    Object {
        description: Option<String>,
        fields: Vec<Field>,
        comment: Option<String>,
        /// Interfaces it implements.
        implements: Vec<String>,
    },
    /// A schema with a `discriminator` that others extend (`allOf: [Pet, …]`).
    Interface {
        description: Option<String>,
        fields: Vec<Field>,
        field: String,
        /// (what the API sends, type name)
        map: Vec<(String, String)>,
        comment: Option<String>,
    },
    Input {
        description: Option<String>,
        fields: Vec<Field>,
        comment: Option<String>,
    },
    Enum {
        description: Option<String>,
        /// (value name, what the API sends)
        values: Vec<(String, String)>,
        comment: Option<String>,
    },
    Union {
        description: Option<String>,
        members: Vec<String>,
        field: String,
        /// (what the API sends, type name)
        map: Vec<(String, String)>,
        comment: Option<String>,
    },
    Scalar {
        description: String,
    },
}

impl Def {
    /// Its description and the comment said on the line before it.
    pub fn about(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Def::Scalar { description } => (Some(description), None),
            Def::Object {
                description,
                comment,
                ..
            }
            | Def::Interface {
                description,
                comment,
                ..
            }
            | Def::Input {
                description,
                comment,
                ..
            }
            | Def::Enum {
                description,
                comment,
                ..
            }
            | Def::Union {
                description,
                comment,
                ..
            } => (description.as_deref(), comment.as_deref()),
        }
    }
}

const JSON: &str = "JSON";
/// How many types deep one schema is followed.
const MAX_DEPTH: usize = 128;
pub const BIG_INT: &str = "BigInt";

/// Names GraphQL or the generated schema already use.
pub const RESERVED: &[&str] = &[
    "Query",
    "Mutation",
    "Subscription",
    "String",
    "Int",
    "Float",
    "Boolean",
    "ID",
    JSON,
    BIG_INT,
];

/// What a schema is, once `$ref`s, `allOf` and `null` alternatives are seen through.
enum Shape<'d> {
    Object(Merged<'d>),
    Enum(Vec<String>),
    Union {
        members: Vec<&'d Value>,
        discriminator: &'d Value,
    },
    Array(Option<&'d Value>),
    Scalar(&'static str),
    /// One schema standing for this one (`allOf: [X]`, `oneOf: [X, null]`): its type,
    /// named as it is named.
    Alias(&'d Value),
    Json,
}

#[derive(Default)]
struct Merged<'d> {
    properties: IndexMap<&'d str, &'d Value>,
    required: HashSet<&'d str>,
    description: Option<&'d str>,
}

pub struct Types<'d> {
    docs: &'d Docs,
    taken: Taken,
    outputs: HashMap<Loc, String>,
    inputs: HashMap<Loc, String>,
    /// Inline object schemas already named, by address (the documents are not changed
    /// while types are made): a schema met twice is one type.
    inline_outputs: HashMap<*const Value, String>,
    inline_inputs: HashMap<*const Value, String>,
    /// Types being made inside one another now.
    depth: usize,
    /// Types with response headers, by (type, headers): one per combination.
    wrappers: HashMap<(String, Vec<String>), String>,
    enums: HashMap<Vec<String>, String>,
    /// `$ref`s being expanded inline (arrays and scalars are not named): a cycle through
    /// them is `JSON`.
    expanding: HashSet<Loc>,
    pub defs: BTreeMap<String, Def>,
}

fn is_nullable(s: &Value) -> bool {
    s.get("nullable").and_then(Value::as_bool) == Some(true)
        || s.get("x-nullable").and_then(Value::as_bool) == Some(true)
        || s.get("type")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|t| t == "null"))
        || s.get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.iter().any(Value::is_null))
        || ["oneOf", "anyOf"].iter().any(|k| {
            s.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(is_null_schema))
        })
}

fn is_null_schema(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some("null")
        || s.get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.len() == 1 && e[0].is_null())
}

/// The one non-null `type` of a schema (3.1 allows a list), `Some("")` when there is none
/// and `None` when there are several.
fn single_type(s: &Value) -> Option<&str> {
    match s.get("type") {
        Some(Value::String(t)) => Some(t),
        Some(Value::Array(ts)) => {
            let named: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            match named.as_slice() {
                [] => Some(""),
                [one] => Some(one),
                _ => None,
            }
        }
        _ => Some(""),
    }
}

fn description(s: &Value) -> Option<String> {
    s.get("description")
        .or_else(|| s.get("title"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

/// An object's description: its own or its first `allOf` part's.
fn merged_description(merged: &Merged<'_>, s: &Value) -> Option<String> {
    merged
        .description
        .map(str::to_string)
        .or_else(|| description(s))
}

/// What a member whose schemas differ between alternatives is served as.
static ANY: Value = Value::Bool(true);

/// The alternatives of a `oneOf`/`anyOf` as one object: every member of each, a member
/// whose schema differs between them served as `JSON`, required where all require it.
fn combine(alternatives: Vec<Merged<'_>>) -> Merged<'_> {
    let mut out = Merged::default();
    let mut required: Option<HashSet<&str>> = None;
    for alt in &alternatives {
        for (&k, &v) in &alt.properties {
            match out.properties.get(k) {
                Some(&seen) if !std::ptr::eq(seen, v) && seen != v => {
                    out.properties.insert(k, &ANY);
                }
                Some(_) => {}
                None => {
                    out.properties.insert(k, v);
                }
            }
        }
        required = Some(match required {
            None => alt.required.clone(),
            Some(r) => r.intersection(&alt.required).copied().collect(),
        });
        if out.description.is_none() {
            out.description = alt.description;
        }
    }
    out.required = required.unwrap_or_default();
    out
}

/// A string for a directive argument: JSON's escapes are GraphQL's.
pub fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

impl<'d> Types<'d> {
    pub fn new(docs: &'d Docs) -> Types<'d> {
        Types {
            docs,
            taken: Taken::with(RESERVED),
            outputs: HashMap::new(),
            inputs: HashMap::new(),
            inline_outputs: HashMap::new(),
            inline_inputs: HashMap::new(),
            wrappers: HashMap::new(),
            depth: 0,
            enums: HashMap::new(),
            expanding: HashSet::new(),
            defs: BTreeMap::new(),
        }
    }

    /// A new type name from `wanted` (made a GraphQL name, numbered if taken), and the
    /// comment that says so when it is not `wanted` as written.
    fn type_name(&mut self, wanted: &str, from: &str) -> (String, Option<String>) {
        let name = self.taken.take(&pascal(wanted));
        let comment = (name != from).then(|| format!("from {}", quote(from)));
        (name, comment)
    }

    fn scalar(&mut self, name: &str) -> String {
        let description = match name {
            JSON => "Any JSON value, as the API sends it: free-form objects, values of several types, and what the OpenAPI document did not describe.",
            _ => "An integer the API sends as a JSON number (OpenAPI `int64`), past GraphQL's 32-bit `Int`: served exactly as sent.",
        };
        self.defs
            .entry(name.to_string())
            .or_insert_with(|| Def::Scalar {
                description: description.to_string(),
            });
        name.to_string()
    }

    /// The `JSON` scalar's name (declared once used).
    pub fn json_scalar(&mut self) -> String {
        self.scalar(JSON)
    }

    fn json(&mut self, nullable: bool) -> Ty {
        Ty::named(&self.scalar(JSON), nullable)
    }

    fn shape(&self, s: &'d Value) -> Shape<'d> {
        if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
            if parts.len() == 1 && s.get("properties").is_none() {
                return Shape::Alias(&parts[0]);
            }
            let mut merged = Merged::default();
            if self.merge(s, &mut merged, 0) && !merged.properties.is_empty() {
                return Shape::Object(merged);
            }
            return Shape::Json;
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(members) = s.get(key).and_then(Value::as_array) {
                let members: Vec<&Value> = members
                    .iter()
                    .filter(|m| !is_null_schema(self.docs.deref(m)))
                    .collect();
                if members.len() == 1 && s.get("properties").is_none() {
                    return Shape::Alias(members[0]);
                }
                // Each member's members, when every member is an object.
                let objects: Option<Vec<Merged<'d>>> = members
                    .iter()
                    .map(|m| {
                        let mut merged = Merged::default();
                        (self.merge(m, &mut merged, 0) && !merged.properties.is_empty())
                            .then_some(merged)
                    })
                    .collect();
                if let Some(d) = s.get("discriminator") {
                    if let Some(prop) = d.get("propertyName").and_then(Value::as_str) {
                        // A union only when every member must send the discriminator
                        // (else an answer without it could not be typed) and its name
                        // has no dot (`@discriminate(field:)` reads one as a path).
                        let always = !prop.contains('.')
                            && objects
                                .as_ref()
                                .is_some_and(|o| o.iter().all(|m| m.required.contains(prop)));
                        if always {
                            return Shape::Union {
                                members,
                                discriminator: d,
                            };
                        }
                    }
                }
                if let (Some(objects), None) = (objects, s.get("properties")) {
                    // Objects of several kinds that cannot be told apart: one object with
                    // every member of each (required where all require it).
                    return Shape::Object(combine(objects));
                }
                if s.get("properties").is_none() {
                    return Shape::Json;
                }
            }
        }
        let Some(ty) = single_type(s) else {
            return Shape::Json;
        };
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            let strings: Vec<String> = values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if (ty == "string" || ty.is_empty())
                && !strings.is_empty()
                && values.iter().all(|v| v.is_string() || v.is_null())
            {
                return Shape::Enum(strings);
            }
        }
        let inferred = match ty {
            "" if s.get("properties").is_some() => "object",
            "" if s.get("items").is_some() => "array",
            other => other,
        };
        match inferred {
            "object" => {
                let mut merged = Merged::default();
                self.merge(s, &mut merged, 0);
                if merged.properties.is_empty() {
                    Shape::Json
                } else {
                    Shape::Object(merged)
                }
            }
            "array" => Shape::Array(s.get("items")),
            "string" => Shape::Scalar("String"),
            "boolean" => Shape::Scalar("Boolean"),
            "number" => Shape::Scalar("Float"),
            "integer" => match s.get("format").and_then(Value::as_str) {
                Some("int64") | Some("uint64") | Some("uint32") => Shape::Scalar(BIG_INT),
                _ => Shape::Scalar("Int"),
            },
            _ => Shape::Json,
        }
    }

    /// The members of an object schema and of its `allOf` parts, by name.
    pub fn members(&self, schema: &'d Value) -> IndexMap<&'d str, &'d Value> {
        let mut merged = Merged::default();
        self.merge(schema, &mut merged, 0);
        merged.properties
    }

    /// Adds `s`'s members (and its `allOf` parts') to `into`; false if a part is not an
    /// object (or the parts nest past reason).
    fn merge(&self, s: &'d Value, into: &mut Merged<'d>, depth: usize) -> bool {
        if depth > 32 {
            return false;
        }
        let s = self.docs.deref(s);
        if into.description.is_none() {
            into.description = s.get("description").and_then(Value::as_str);
        }
        let mut ok = true;
        if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
            for part in parts {
                ok &= self.merge(part, into, depth + 1);
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                into.properties.insert(k.as_str(), v);
            }
        }
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            into.required.extend(req.iter().filter_map(Value::as_str));
        }
        let ty = single_type(s);
        ok && (s.get("properties").is_some()
            || s.get("allOf").is_some()
            || matches!(ty, Some("object") | Some("")))
    }

    /// The GraphQL type that serves what `schema` describes; `hint` names an inline
    /// object or enum.
    pub fn output(&mut self, schema: &'d Value, hint: &str) -> Ty {
        self.ty(schema, hint, false)
    }

    /// The GraphQL input type that sends what `schema` describes.
    pub fn input(&mut self, schema: &'d Value, hint: &str) -> Ty {
        self.ty(schema, hint, true)
    }

    /// [`Self::ty_at`], no deeper than [`MAX_DEPTH`] types inside one another (a chain of
    /// thousands of schemas must not overflow the stack): deeper is `JSON`.
    fn ty(&mut self, schema: &'d Value, hint: &str, input: bool) -> Ty {
        if self.depth >= MAX_DEPTH {
            return self.json(true);
        }
        self.depth += 1;
        let ty = self.ty_at(schema, hint, input);
        self.depth -= 1;
        ty
    }

    fn ty_at(&mut self, schema: &'d Value, hint: &str, input: bool) -> Ty {
        let Some((s, loc)) = self.docs.resolve(schema) else {
            return self.json(true);
        };
        let nullable = is_nullable(s) || is_nullable(schema);
        let (named, inline) = if input {
            (&self.inputs, &self.inline_inputs)
        } else {
            (&self.outputs, &self.inline_outputs)
        };
        let known = match &loc {
            Some(loc) => named.get(loc),
            None => inline.get(&(s as *const Value)),
        };
        if let Some(name) = known {
            return Ty::named(name, nullable);
        }
        let named_as = loc
            .as_ref()
            .map(|l| self.docs.name_of(l))
            .filter(|n| !n.is_empty());
        let hint_name = named_as.clone().unwrap_or_else(|| hint.to_string());
        match self.shape(s) {
            Shape::Alias(inner) => self.guarded(loc, |t| {
                let mut ty = t.ty(inner, &hint_name, input);
                ty.nullable |= nullable;
                ty
            }),
            Shape::Scalar(name) => {
                let name = if name == BIG_INT {
                    self.scalar(BIG_INT)
                } else {
                    name.to_string()
                };
                Ty::named(&name, nullable)
            }
            Shape::Json => self.json(nullable),
            Shape::Enum(values) => Ty::named(&self.enumeration(values, &hint_name, s), nullable),
            Shape::Array(items) => self.guarded(loc, |t| {
                let inner = match items {
                    Some(items) => t.ty(items, &format!("{hint_name}Item"), input),
                    None => t.json(true),
                };
                Ty {
                    text: format!("[{}{}]", inner.text, if inner.nullable { "" } else { "!" }),
                    nullable,
                }
            }),
            // What is sent is one shape: a choice of several is `JSON`.
            Shape::Union { .. } if input => self.json(nullable),
            Shape::Object(merged) if input => {
                self.input_object(s, loc, named_as, hint, &hint_name, merged, nullable)
            }
            Shape::Object(merged)
                if loc.is_some()
                    && s.get("discriminator").is_some()
                    && s.get("oneOf").is_none()
                    && s.get("anyOf").is_none() =>
            {
                match self.interface(s, loc.clone(), &hint_name, &merged) {
                    Some(name) => Ty::named(&name, nullable),
                    None => {
                        let name = self.object(s, loc, named_as, hint, &hint_name, merged);
                        Ty::named(&name, nullable)
                    }
                }
            }
            Shape::Object(merged) => {
                let name = self.object(s, loc, named_as, hint, &hint_name, merged);
                Ty::named(&name, nullable)
            }
            Shape::Union {
                members,
                discriminator,
            } => self.union(
                s,
                loc,
                &hint_name,
                named_as.is_some(),
                members,
                discriminator,
                nullable,
            ),
        }
    }

    /// Runs `f` with `loc` marked as being expanded: met again inside, it is `JSON`.
    fn guarded(&mut self, loc: Option<Loc>, f: impl FnOnce(&mut Self) -> Ty) -> Ty {
        let Some(loc) = loc else {
            return f(self);
        };
        if !self.expanding.insert(loc.clone()) {
            return self.json(true);
        }
        let ty = f(self);
        self.expanding.remove(&loc);
        ty
    }
}
