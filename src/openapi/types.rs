//! JSON Schemas → GraphQL types. A schema reached through a `$ref` is one named type
//! however often it is used (so cycles are type references, never expanded); an inline
//! object is a type named after where it sits (`Order` + `shippingAddress` →
//! `OrderShippingAddress`). Objects serve what the API sends (members renamed to
//! camelCase with `@map(from:)`), inputs send what it reads (`…Input`, the same renaming),
//! enums are shared by both.

use super::doc::{Docs, Loc};
use super::names::{camel, constant, pascal, Taken};
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

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

pub const JSON: &str = "JSON";
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

/// The last segment of a pointer, unescaped (`/components/schemas/a~1b` → `a/b`).
/// An object's description: its own or its first `allOf` part's.
fn merged_description(merged: &Merged<'_>, s: &Value) -> Option<String> {
    merged
        .description
        .map(str::to_string)
        .or_else(|| description(s))
}

/// The discriminator values that name the schema called `component`: the `mapping`
/// entries whose target is it (a `$ref` or a bare name), else its name itself.
fn discriminator_values(
    mapping: Option<&serde_json::Map<String, Value>>,
    component: String,
) -> Vec<String> {
    let mut values: Vec<String> = mapping
        .into_iter()
        .flatten()
        .filter(|(_, target)| {
            target.as_str().is_some_and(|t| {
                t == component || last_segment(t.rsplit('#').next().unwrap_or(t)) == component
            })
        })
        .map(|(value, _)| value.clone())
        .collect();
    if values.is_empty() {
        values.push(component);
    }
    values
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

/// The last segment of a pointer, unescaped (`/components/schemas/a~1b` → `a/b`).
fn last_segment(pointer: &str) -> String {
    pointer
        .rsplit('/')
        .next()
        .unwrap_or("")
        .replace("~1", "/")
        .replace("~0", "~")
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

    /// A type with the fields of object type `base` and one per response header the
    /// answer declares (`X-Total-Count` → `xTotalCount: Int @map(header: …)`; `Link` →
    /// its `next`, `prev`, `first` and `last` URLs): `None` when `base` is no object type.
    pub fn with_headers(
        &mut self,
        base: &str,
        hint: &str,
        headers: &[(&'d str, &'d Value)],
        in_place: bool,
    ) -> Option<String> {
        let key = (
            base.to_string(),
            headers
                .iter()
                .map(|(h, _)| h.to_ascii_lowercase())
                .collect::<Vec<_>>(),
        );
        if let Some(done) = self.wrappers.get(&key) {
            return Some(done.clone());
        }
        let Some(Def::Object {
            description: d,
            fields,
            ..
        }) = self.defs.get(base)
        else {
            return None;
        };
        let about = d.clone();
        let mut fields = fields.clone();
        let mut taken = Taken::default();
        for f in fields.iter().filter(|f| !f.name.is_empty()) {
            taken.take(&f.name);
        }
        for (header, schema) in headers {
            let schema = self.docs.deref(schema);
            if header.eq_ignore_ascii_case("link") {
                for rel in ["next", "prev", "first", "last"] {
                    fields.push(Field {
                        name: taken.take(rel),
                        ty: "String".into(),
                        description: Some(format!("The `{rel}` URL of the `Link` header.")),
                        directives: format!(" @map(link: {})", quote(rel)),
                        comment: None,
                    });
                }
                continue;
            }
            // 3.x puts the type in `schema`; 2.0 on the header itself.
            let s = schema
                .get("schema")
                .map(|s| self.docs.deref(s))
                .unwrap_or(schema);
            let ty = match (
                s.get("type").and_then(Value::as_str),
                s.get("format").and_then(Value::as_str),
            ) {
                (Some("integer"), Some("int64" | "uint64" | "uint32")) => self.scalar(BIG_INT),
                (Some("integer"), _) => "Int".into(),
                (Some("number"), _) => "Float".into(),
                // A header's text that reads as a JSON number is served as one: only a
                // number type can say a number.
                _ => "String".into(),
            };
            fields.push(Field {
                name: taken.take(&camel(header)),
                ty,
                description: description(schema),
                directives: format!(" @map(header: {})", quote(header)),
                comment: None,
            });
        }
        // The answer's own inline type takes the headers itself; a named one stays as
        // it is for its other uses, and a new type has both.
        let name = if in_place {
            base.to_string()
        } else {
            self.type_name(hint, hint).0
        };
        self.wrappers.insert(key, name.clone());
        self.defs.insert(
            name.clone(),
            Def::Object {
                description: about,
                fields,
                comment: None,
                implements: Vec::new(),
            },
        );
        Some(name)
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
                self.input_object(schema, s, loc, named_as, hint, &hint_name, merged, nullable)
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

    /// An object type for `s`, named and registered before its fields are made (so a
    /// cycle through it is a reference to it).
    fn object(
        &mut self,
        s: &'d Value,
        loc: Option<Loc>,
        named_as: Option<String>,
        hint: &str,
        hint_name: &str,
        merged: Merged<'d>,
    ) -> String {
        let from = named_as.as_deref().unwrap_or(hint);
        let (name, comment) = self.type_name(hint_name, from);
        self.name_output(s, loc.clone(), &name);
        let fields = self.object_fields(&name, &merged, false);
        if fields.iter().all(|f| f.name.is_empty()) {
            // Nothing it can serve (every member write-only or unnamable): `JSON`, and so
            // wherever it is met again. (The name stays taken: the output must not
            // depend on the order.)
            let json = self.json_scalar();
            self.name_output(s, loc, &json);
            return json;
        }
        self.defs.insert(
            name.clone(),
            Def::Object {
                description: merged_description(&merged, s),
                fields,
                comment: comment.filter(|_| named_as.is_some()),
                implements: Vec::new(),
            },
        );
        name
    }

    /// Records the output type of `s` (at `loc`, or inline).
    fn name_output(&mut self, s: &'d Value, loc: Option<Loc>, name: &str) {
        match loc {
            Some(loc) => self.outputs.insert(loc, name.to_string()),
            None => self
                .inline_outputs
                .insert(s as *const Value, name.to_string()),
        };
    }

    /// A schema with a `discriminator` that other schemas extend (`Cat: allOf: [Pet,
    /// {…}]`, or named in its `mapping`): an interface with `@discriminate`, implemented
    /// by each extending object type. `None` when nothing extends it.
    fn interface(
        &mut self,
        s: &'d Value,
        loc: Option<Loc>,
        hint_name: &str,
        merged: &Merged<'d>,
    ) -> Option<String> {
        let loc = loc?;
        let discriminator = s.get("discriminator")?;
        let field = discriminator.get("propertyName")?.as_str()?.to_string();
        if !merged.required.contains(field.as_str()) || field.contains('.') {
            // Not always sent, an object without it could not be typed; and
            // `@discriminate(field:)` reads a dotted name as a path.
            return None;
        }
        let subtypes = self.extending(&loc);
        if subtypes.is_empty() {
            return None;
        }
        let mapping = discriminator.get("mapping").and_then(Value::as_object);
        let (name, comment) = self.type_name(hint_name, hint_name);
        self.outputs.insert(loc.clone(), name.clone());
        let fields = self.object_fields(&name, merged, false);
        // Interface fields carry no directives: the implementing types say where each
        // value comes from.
        let mut shared = fields.clone();
        for f in &mut shared {
            f.directives.clear();
        }
        let mut map = Vec::new();
        for sub_loc in &subtypes {
            let ty = self.output_at(sub_loc);
            if !self.implements(&ty, &name, &shared) {
                continue;
            }
            for v in discriminator_values(mapping, self.docs.name_of(sub_loc)) {
                if !map.iter().any(|(m, _): &(String, String)| *m == v) {
                    map.push((v, ty.clone()));
                }
            }
        }
        let def = if map.is_empty() {
            // No extending type fits: the schema is the object it describes.
            Def::Object {
                description: merged_description(merged, s),
                fields,
                comment: None,
                implements: Vec::new(),
            }
        } else {
            Def::Interface {
                description: merged_description(merged, s),
                fields: shared,
                field,
                map,
                comment,
            }
        };
        self.defs.insert(name.clone(), def);
        Some(name)
    }

    /// The schemas of `base`'s file that extend it through `allOf`, directly or through
    /// one another, in document order.
    fn extending(&self, base: &Loc) -> Vec<Loc> {
        let components = self.docs.components(base.file);
        let mut family = vec![format!("{}#{}", base.file, base.pointer)];
        let mut out: Vec<Loc> = Vec::new();
        loop {
            let before = family.len();
            for (pointer, v) in &components {
                let reference = format!("{}#{pointer}", base.file);
                if family.contains(&reference) {
                    continue;
                }
                let extends = v
                    .get("allOf")
                    .and_then(Value::as_array)
                    .is_some_and(|parts| {
                        parts.iter().any(|p| {
                            p.get("$ref")
                                .and_then(Value::as_str)
                                .is_some_and(|r| family.iter().any(|f| f == r))
                        })
                    });
                if extends {
                    family.push(reference);
                    out.push(Loc {
                        file: base.file,
                        pointer: pointer.clone(),
                    });
                }
            }
            if family.len() == before {
                break;
            }
        }
        let order: Vec<&String> = components.iter().map(|(p, _)| p).collect();
        out.sort_by_key(|l| order.iter().position(|p| **p == l.pointer));
        out
    }

    /// Whether object type `ty` can implement interface `name` with fields `shared`
    /// (each field of the same type, or that type made non-null), and if so, says so on
    /// it. A field the implementing type narrowed to an enum where the interface has a
    /// `String` (`petType: enum [cat]`) is served as the interface's `String`.
    fn implements(&mut self, ty: &str, name: &str, shared: &[Field]) -> bool {
        let enums: HashSet<String> = self
            .defs
            .iter()
            .filter(|(_, d)| matches!(d, Def::Enum { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        let Some(Def::Object {
            fields, implements, ..
        }) = self.defs.get_mut(ty)
        else {
            return false;
        };
        let mut patched = fields.clone();
        for want in shared.iter().filter(|f| !f.name.is_empty()) {
            let Some(have) = patched.iter_mut().find(|f| f.name == want.name) else {
                return false;
            };
            let fits = have.ty == want.ty || have.ty == format!("{}!", want.ty);
            let base = have.ty.trim_end_matches('!');
            if fits {
                continue;
            }
            if want.ty.trim_end_matches('!') == "String" && enums.contains(base) {
                have.ty = want.ty.clone();
            } else {
                return false;
            }
        }
        *fields = patched;
        if !implements.iter().any(|i| i == name) {
            implements.push(name.to_string());
        }
        true
    }

    /// The output type of the (object) schema at `loc`.
    fn output_at(&mut self, loc: &Loc) -> String {
        if let Some(name) = self.outputs.get(loc) {
            return name.clone();
        }
        let Some(schema) = self.docs.at(loc) else {
            return self.json_scalar();
        };
        let mut merged = Merged::default();
        if !self.merge(schema, &mut merged, 0) || merged.properties.is_empty() {
            return self.json_scalar();
        }
        let named_as = Some(self.docs.name_of(loc)).filter(|n| !n.is_empty());
        let hint_name = named_as.clone().unwrap_or_else(|| "Type".to_string());
        self.object(
            schema,
            Some(loc.clone()),
            named_as,
            &hint_name.clone(),
            &hint_name,
            merged,
        )
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

    #[allow(clippy::too_many_arguments)]
    fn union(
        &mut self,
        s: &'d Value,
        loc: Option<Loc>,
        hint: &str,
        named: bool,
        members: Vec<&'d Value>,
        discriminator: &'d Value,
        nullable: bool,
    ) -> Ty {
        let field = discriminator
            .get("propertyName")
            .and_then(Value::as_str)
            .unwrap_or("type");
        // Each member must be a named object type.
        let mut types = Vec::new();
        for m in &members {
            let Some((_, Some(mloc))) = self.docs.resolve(m) else {
                return self.json(nullable);
            };
            let ty = self.output(m, hint);
            if !matches!(self.defs.get(&ty.text), Some(Def::Object { .. })) {
                return self.json(nullable);
            }
            types.push((mloc, ty.text));
        }
        if types.is_empty() {
            return self.json(nullable);
        }
        let mapping = discriminator.get("mapping").and_then(Value::as_object);
        let mut map = Vec::new();
        let mut members = Vec::new();
        for (mloc, ty) in &types {
            if members.contains(ty) {
                continue;
            }
            members.push(ty.clone());
            for v in discriminator_values(mapping, self.docs.name_of(mloc)) {
                if !map.iter().any(|(m, _): &(String, String)| *m == v) {
                    map.push((v, ty.clone()));
                }
            }
        }
        let (name, comment) = self.type_name(hint, hint);
        if let Some(loc) = loc {
            self.outputs.insert(loc, name.clone());
        }
        self.defs.insert(
            name.clone(),
            Def::Union {
                description: description(s),
                members,
                field: field.to_string(),
                map,
                comment: comment.filter(|_| named),
            },
        );
        Ty::named(&name, nullable)
    }

    fn enumeration(&mut self, values: Vec<String>, hint: &str, s: &Value) -> String {
        if let Some(name) = self.enums.get(&values) {
            return name.clone();
        }
        let (name, _) = self.type_name(hint, hint);
        let mut taken = Taken::default();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for v in &values {
            if !seen.insert(v.clone()) {
                continue;
            }
            out.push((taken.take(&constant(v)), v.clone()));
        }
        self.enums.insert(values, name.clone());
        self.defs.insert(
            name.clone(),
            Def::Enum {
                description: description(s),
                values: out,
                comment: None,
            },
        );
        name
    }

    fn object_fields(&mut self, owner: &str, merged: &Merged<'d>, input: bool) -> Vec<Field> {
        let mut taken = Taken::default();
        let mut fields = Vec::new();
        for (&prop, &schema) in &merged.properties {
            let s = self.docs.deref(schema);
            let skip = if input { "readOnly" } else { "writeOnly" };
            if s.get(skip).and_then(Value::as_bool) == Some(true)
                || schema.get(skip).and_then(Value::as_bool) == Some(true)
            {
                continue;
            }
            if prop.contains('.') || prop.is_empty() {
                // `@map(from:)` reads a dotted path: a member named `a.b` cannot be said.
                fields.push(Field {
                    name: String::new(),
                    ty: String::new(),
                    description: None,
                    directives: String::new(),
                    comment: Some(format!(
                        "member {} skipped: its name has a dot",
                        quote(prop)
                    )),
                });
                continue;
            }
            let wanted = camel(prop);
            let name = taken.take(&wanted);
            // Enums and nested types are named after the object type, not its input
            // (`Pet` + `status` → `PetStatus` for both).
            let base = if input {
                owner.strip_suffix("Input").unwrap_or(owner)
            } else {
                owner
            };
            let hint = format!("{base}{}", pascal(prop));
            let mut ty = if input {
                self.input(schema, &hint)
            } else {
                self.output(schema, &hint)
            };
            // An `id` is an `ID` (GraphQL clients key their caches by it); an input sends
            // a numeric one back as the number the API reads.
            let mut as_number = false;
            if prop == "id" && matches!(ty.text.as_str(), "Int" | "String" | BIG_INT) {
                as_number = input && ty.text != "String";
                ty.text = "ID".into();
            }
            let has_default = s.get("default").is_some();
            // A member the alternatives describe differently is `JSON`, and may be null.
            let conflicting = std::ptr::eq(schema, &ANY);
            let optional = (input && has_default) || ty.nullable || conflicting;
            let non_null = merged.required.contains(prop) && !optional;
            let directives = match (name != prop, as_number) {
                (true, true) => format!(" @map(from: {}, as: NUMBER)", quote(prop)),
                (true, false) => format!(" @map(from: {})", quote(prop)),
                (false, true) => " @map(as: NUMBER)".to_string(),
                (false, false) => String::new(),
            };
            let comment = (name != wanted).then(|| format!("{wanted} was taken"));
            fields.push(Field {
                name,
                ty: format!("{}{}", ty.text, if non_null { "!" } else { "" }),
                // A reference's own description (3.1 allows one beside `$ref`), else
                // an inline schema's: never the referenced type's, which is the type's.
                description: if schema.get("$ref").is_some() {
                    description(schema)
                } else {
                    description(s)
                },
                directives,
                comment,
            });
        }
        fields
    }

    /// An input type for `s` (`…Input`); `JSON` when every member is read-only.
    #[allow(clippy::too_many_arguments)]
    fn input_object(
        &mut self,
        schema: &'d Value,
        s: &'d Value,
        loc: Option<Loc>,
        named_as: Option<String>,
        hint: &str,
        hint_name: &str,
        merged: Merged<'d>,
        nullable: bool,
    ) -> Ty {
        let from = named_as.as_deref().unwrap_or(hint);
        let wanted = format!("{hint_name}Input");
        let (name, _) = self.type_name(&wanted, &wanted);
        // Said when the schema's own name was changed (`pet-item` → `PetItemInput`).
        let comment = (name != format!("{from}Input")).then(|| format!("input of {}", quote(from)));
        match loc {
            Some(loc) => self.inputs.insert(loc, name.clone()),
            None => self.inline_inputs.insert(s as *const Value, name.clone()),
        };
        let fields = self.object_fields(&name, &merged, true);
        if fields.iter().all(|f| f.name.is_empty()) {
            // Every member read-only: nothing to send but what `JSON` can carry.
            // (The name stays taken: the output must not depend on the order.)
            let json = self.json_scalar();
            match self.docs.resolve(schema).and_then(|(_, l)| l) {
                Some(loc) => self.inputs.insert(loc, json.clone()),
                None => self.inline_inputs.insert(s as *const Value, json.clone()),
            };
            return Ty::named(&json, nullable);
        }
        self.defs.insert(
            name.clone(),
            Def::Input {
                description: merged_description(&merged, s),
                fields,
                comment: comment.filter(|_| named_as.is_some()),
            },
        );
        Ty::named(&name, nullable)
    }
}
