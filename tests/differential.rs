//! Differential tests of the planned executor against a spec-exact reference:
//! apollo-compiler's validated documents and its `resolvers` execution, run over the same
//! upstream JSON. Random valid operations (aliases, fields selected twice and merged,
//! named and inline fragments, fragments on a union, `__typename`, `@skip`/`@include` with
//! literals and variables, arguments from literals, given variables and variable defaults,
//! nested `@rest` fields, and introspection — `__type(name:)` and `__schema` selected
//! beside `@rest` fields in one document, answered from the plan) against a deterministic upstream whose
//! worlds inject nulls, wrong kinds, unknown union members and HTTP errors. Each response
//! must equal the reference's on `data` (byte for byte, key order included) and on the set
//! of error paths.
//!
//! `LIVEGATE_DIFF_CASES` sets the number of cases (default 1,500; `scripts/differential`
//! runs more).

mod common;

use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

const BODY: &str = r#"
type Owner { id: ID! login: String! score: Int tags: [String!] }
type Item {
  id: ID!
  world: Int!
  name: String
  n: Int
  strictN: Int! @map(from: "n")
  flag: Boolean
  tags: [String]
  strictTags: [String!] @map(from: "tags")
  ownerId: ID
  owner: Owner @rest(upstream: "api", path: "/w/{parent.world}/owners/{parent.ownerId}")
  strictOwner: Owner! @rest(upstream: "api", path: "/w/{parent.world}/owners/{parent.ownerId}")
  kind: Kind
  related: [Item] @map(from: "rel")
}
enum Kind { A B }
type Post { id: ID! title: String }
type Note { id: ID! text: String! }
union Entry @discriminate(field: "t") = Post | Note
type Query {
  items(world: Int!): [Item] @rest(upstream: "api", path: "/w/{args.world}/items")
  strictItems(world: Int!): [Item!]! @rest(upstream: "api", path: "/w/{args.world}/items")
  entries(world: Int!): [Entry] @rest(upstream: "api", path: "/w/{args.world}/entries")
}
"#;

const LIVEGATE_HEAD: &str = r#"extend schema @upstream(name: "api", url: "{up}")"#;

/// Our directives, declared for apollo-compiler, which ignores them.
const APOLLO_HEAD: &str = r#"
scalar JSON
directive @rest(upstream: String, path: String) on FIELD_DEFINITION
directive @map(from: String) on FIELD_DEFINITION
directive @discriminate(field: String, map: JSON) on UNION
"#;

// ---- the deterministic upstream ------------------------------------------------------

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0x632B_E59B_D9B4_E019);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// A value that is usually `good`, sometimes null, sometimes of the wrong kind.
fn sometimes(world: u64, salt: u64, good: Value) -> Value {
    match mix(world, salt) % 10 {
        0 => Value::Null,
        1 => json!("wrong"),
        2 => json!({"x": 1}),
        _ => good,
    }
}

fn item(world: u64, i: u64, depth: u32) -> Value {
    let s = |k: u64| mix(world, i * 100 + k);
    let tags: Vec<Value> = (0..(s(1) % 3))
        .map(|t| sometimes(world, i * 100 + 10 + t, json!(format!("t{t}"))))
        .collect();
    let rel: Vec<Value> = if depth == 0 {
        (0..(s(2) % 3))
            .map(|r| item(world, i * 7 + r + 50, depth + 1))
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": if s(3).is_multiple_of(5) { json!(i) } else { json!(format!("i{i}")) },
        "world": world,
        "name": sometimes(world, i * 100 + 4, json!(format!("item {i}"))),
        "n": sometimes(world, i * 100 + 5, json!(i as i64 * 3)),
        "flag": sometimes(world, i * 100 + 6, json!(i.is_multiple_of(2))),
        "tags": sometimes(world, i * 100 + 7, Value::Array(tags)),
        "ownerId": format!("{}", s(8) % 4),
        "kind": sometimes(world, i * 100 + 9, json!(if i.is_multiple_of(2) { "A" } else { "B" })),
        "rel": sometimes(world, i * 100 + 11, Value::Array(rel)),
    })
}

fn items(world: u64) -> Value {
    Value::Array(
        (0..(mix(world, 1) % 5))
            .map(|i| item(world, i, 0))
            .collect(),
    )
}

/// An owner, or the HTTP status the upstream answers instead.
fn owner(world: u64, id: &str) -> Result<Value, u16> {
    let h = mix(
        world,
        id.len() as u64 * 31 + id.bytes().map(u64::from).sum::<u64>(),
    );
    if h.is_multiple_of(7) {
        return Err(500);
    }
    Ok(json!({
        "id": id,
        "login": sometimes(world, h, json!(format!("user{id}"))),
        "score": sometimes(world, h + 1, json!(h % 100)),
        "tags": sometimes(world, h + 2, json!(["a", "b"])),
    }))
}

fn entries(world: u64) -> Value {
    Value::Array(
        (0..(mix(world, 2) % 4))
            .map(|i| match mix(world, 300 + i) % 5 {
                0 => json!({"t": "Poem", "id": format!("e{i}")}),
                1 | 2 => json!({"t": "Post", "id": format!("e{i}"), "title": sometimes(world, 400 + i, json!("hello"))}),
                _ => json!({"t": "Note", "id": format!("e{i}"), "text": sometimes(world, 500 + i, json!("note"))}),
            })
            .collect(),
    )
}

fn upstream() -> Router {
    Router::new()
        .route(
            "/w/{world}/items",
            get(|Path(w): Path<u64>| async move { Json(items(w)) }),
        )
        .route(
            "/w/{world}/entries",
            get(|Path(w): Path<u64>| async move { Json(entries(w)) }),
        )
        .route(
            "/w/{world}/owners/{id}",
            get(|Path((w, id)): Path<(u64, String)>| async move {
                match owner(w, &id) {
                    Ok(v) => Json(v).into_response(),
                    Err(status) => StatusCode::from_u16(status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                        .into_response(),
                }
            }),
        )
}

// ---- the reference: apollo-compiler's execution over the same data -------------------

/// An object of the reference execution: its type and its upstream JSON.
struct Obj<'a> {
    ty: String,
    value: &'a Value,
    world: u64,
}

/// What a JSON value is, as the reference's resolvers hand it over: `base` is the field
/// type's named type (for objects; a union's member is its discriminator).
fn resolved<'a>(value: &'a Value, base: &str, world: u64) -> ResolvedValue<'a> {
    match value {
        Value::Null => ResolvedValue::null(),
        Value::Array(items) => {
            let base = base.to_string();
            ResolvedValue::list(items.iter().map(move |v| resolved(v, &base, world)))
        }
        Value::Object(map) if base == "Entry" => ResolvedValue::object(Obj {
            ty: map
                .get("t")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            value,
            world,
        }),
        Value::Object(_) if ["Item", "Owner", "Post", "Note"].contains(&base) => {
            ResolvedValue::object(Obj {
                ty: base.to_string(),
                value,
                world,
            })
        }
        // GraphQL serialises an ID as a string.
        Value::Number(n) if base == "ID" && n.is_i64() => ResolvedValue::leaf(n.to_string()),
        other => ResolvedValue::leaf(other.clone()),
    }
}

impl ObjectValue for Obj<'_> {
    fn type_name(&self) -> &str {
        &self.ty
    }

    fn resolve_field<'a>(
        &'a self,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        let base = info.field_definition().ty.inner_named_type().to_string();
        let name = info.field_name();
        let member = match (self.ty.as_str(), name) {
            ("Item", "strictN") => "n",
            ("Item", "strictTags") => "tags",
            ("Item", "related") => "rel",
            (_, n) => n,
        };
        let world = self.world;
        match (self.ty.as_str(), name) {
            ("Query", "items" | "strictItems" | "entries") => {
                let world = info
                    .arguments()
                    .get("world")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0) as u64;
                // The reference keeps what it fetched alive for the whole execution.
                let data: &'a Value = Box::leak(Box::new(if name == "entries" {
                    entries(world)
                } else {
                    items(world)
                }));
                Ok(resolved(data, &base, world))
            }
            ("Item", "owner" | "strictOwner") => {
                let id = self
                    .value
                    .get("ownerId")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match owner(world, id) {
                    Ok(v) => Ok(resolved(Box::leak(Box::new(v)), &base, world)),
                    Err(status) => Err(FieldError {
                        message: format!("upstream answered HTTP {status}"),
                    }),
                }
            }
            _ => Ok(resolved(
                self.value.get(member).unwrap_or(&Value::Null),
                &base,
                world,
            )),
        }
    }
}

// ---- random operations -----------------------------------------------------------------

struct Gen {
    rng: fastrand::Rng,
    fragments: Vec<String>,
    uses_v: bool,
    /// Variable declarations other than `$v`, and the values given for them.
    decls: Vec<String>,
    given: serde_json::Map<String, Value>,
}

impl Gen {
    fn directive(&mut self) -> &'static str {
        match self.rng.u8(0..12) {
            0 => " @skip(if: true)",
            1 => " @include(if: false)",
            2 => " @include(if: true)",
            3 => {
                self.uses_v = true;
                " @skip(if: $v)"
            }
            4 => {
                self.uses_v = true;
                " @include(if: $v)"
            }
            _ => "",
        }
    }

    fn alias(&mut self) -> &'static str {
        match self.rng.u8(0..8) {
            0 => "a: ",
            1 => "b: ",
            _ => "",
        }
    }

    fn fields(&mut self, ty: &str, depth: u32) -> String {
        let choices: &[&str] = match ty {
            "Item" => &[
                "id",
                "world",
                "name",
                "n",
                "strictN",
                "flag",
                "tags",
                "strictTags",
                "ownerId",
                "owner",
                "strictOwner",
                "kind",
                "related",
                "__typename",
            ],
            "Owner" => &["id", "login", "score", "tags", "__typename"],
            "Post" => &["id", "title", "__typename"],
            "Note" => &["id", "text", "__typename"],
            _ => &["__typename"],
        };
        let mut out = Vec::new();
        for _ in 0..self.rng.usize(1..5) {
            let pick = match self.rng.u8(0..10) {
                // An inline fragment on the same type.
                0 if depth < 3 => format!(
                    "... on {ty}{} {{ {} }}",
                    self.directive(),
                    self.fields(ty, depth + 1)
                ),
                // A named fragment.
                1 if depth < 3 => {
                    let body = self.fields(ty, depth + 1);
                    let name = format!("F{}", self.fragments.len());
                    self.fragments
                        .push(format!("fragment {name} on {ty} {{ {body} }}"));
                    format!("...{name}{}", self.directive())
                }
                _ => {
                    let f = choices[self.rng.usize(0..choices.len())];
                    let sub = match f {
                        "owner" | "strictOwner" if depth < 4 => {
                            format!(" {{ {} }}", self.fields("Owner", depth + 1))
                        }
                        "related" if depth < 4 => {
                            format!(" {{ {} }}", self.fields("Item", depth + 1))
                        }
                        "owner" | "strictOwner" | "related" => " { __typename }".to_string(),
                        _ => String::new(),
                    };
                    // An alias may name a field already there: the same field merges;
                    // a different one would not validate, so aliases go only on leaves
                    // named after themselves.
                    let alias = if sub.is_empty() && f != "__typename" {
                        match self.alias() {
                            "" => String::new(),
                            a => format!("{}{}", f, &a[1..]).replace(": ", "_x: "),
                        }
                    } else {
                        String::new()
                    };
                    // async-graphql's validation misses a variable used only by a
                    // directive on `__typename` ("not used"): none there.
                    let directive = if f == "__typename" {
                        ""
                    } else {
                        self.directive()
                    };
                    format!("{alias}{f}{directive}{sub}")
                }
            };
            out.push(pick);
        }
        out.join(" ")
    }

    /// A random selection on `__Type` (`__Field`, …), `depth` levels deep at most.
    fn meta(&mut self, ty: &str, depth: u32) -> String {
        let choices: &[&str] = match ty {
            "__Type" => &[
                "kind",
                "name",
                "description",
                "fields",
                "allFields: fields(includeDeprecated: true)",
                "interfaces",
                "possibleTypes",
                "enumValues",
                "allValues: enumValues(includeDeprecated: true)",
                "inputFields",
                "ofType",
                "specifiedByURL",
                "__typename",
            ],
            "__Field" => &[
                "name",
                "description",
                "args",
                "type",
                "isDeprecated",
                "deprecationReason",
            ],
            "__InputValue" => &["name", "description", "type", "defaultValue"],
            _ => &["name", "description", "isDeprecated", "deprecationReason"],
        };
        let mut out = Vec::new();
        for _ in 0..self.rng.usize(1..5) {
            let f = choices[self.rng.usize(0..choices.len())];
            let name = f.split('(').next().unwrap_or(f);
            let name = name.rsplit(": ").next().unwrap_or(name);
            let sub_type = match name {
                "fields" => Some("__Field"),
                "interfaces" | "possibleTypes" | "ofType" | "type" => Some("__Type"),
                "enumValues" => Some("__EnumValue"),
                "inputFields" | "args" => Some("__InputValue"),
                _ => None,
            };
            match sub_type {
                Some(_) if depth >= 4 => out.push(format!("{f} {{ __typename }}")),
                Some(sub) => {
                    let inner = self.meta(sub, depth + 1);
                    if self.rng.u8(0..4) == 0 {
                        out.push(format!("... on {ty} {{ {f} {{ {inner} }} }}"))
                    } else {
                        out.push(format!("{f} {{ {inner} }}"))
                    }
                }
                None => out.push(f.to_string()),
            }
        }
        out.join(" ")
    }

    fn operation(&mut self, world_id: u64) -> String {
        if self.rng.u8(0..8) == 0 {
            // Introspection alone.
            let name = ["Item", "Entry", "Query", "Kind", "Boolean"][self.rng.usize(0..5)];
            return format!(
                "query Q {{ t: __type(name: \"{name}\") {{ {} }} }}",
                self.meta("__Type", 0)
            );
        }
        // The world as a literal, a given variable, or a variable's default.
        let world = match self.rng.u8(0..3) {
            0 => {
                self.decls.push("$w: Int!".into());
                self.given.insert("w".into(), json!(world_id));
                "$w".to_string()
            }
            1 => {
                self.decls.push(format!("$w: Int = {world_id}"));
                "$w".to_string()
            }
            _ => world_id.to_string(),
        };
        let root = match self.rng.u8(0..3) {
            0 => format!("strictItems(world: {world}) {{ {} }}", self.fields("Item", 0)),
            1 => format!(
                "entries(world: {world}) {{ __typename ... on Post {{ {} }} ... on Note {{ {} }} }}",
                self.fields("Post", 1),
                self.fields("Note", 1)
            ),
            _ => format!("items(world: {world}) {{ {} }}", self.fields("Item", 0)),
        };
        let mut second = if self.rng.bool() {
            format!(" other: items(world: {}) {{ id name }}", world_id + 1)
        } else {
            String::new()
        };
        // Introspection beside the `@rest` fields (a document of its own, sometimes).
        let types = [
            "Item", "Owner", "Kind", "Post", "Note", "Entry", "Query", "String", "ID", "Nope",
        ];
        let root = match self.rng.u8(0..5) {
            0 => {
                let name = types[self.rng.usize(0..types.len())];
                second.push_str(&format!(
                    " __type(name: \"{name}\") {{ {} }}",
                    self.meta("__Type", 0)
                ));
                root
            }
            1 => {
                second.push_str(&format!(
                    " __schema {{ description queryType {{ {} }} mutationType {{ name }} }}",
                    self.meta("__Type", 1)
                ));
                root
            }
            _ => root,
        };
        if self.uses_v {
            self.decls.push("$v: Boolean!".into());
        }
        let head = if self.decls.is_empty() {
            "query Q".to_string()
        } else {
            format!("query Q({})", self.decls.join(", "))
        };
        let mut doc = format!("{head} {{ {root}{second} }}");
        for f in &self.fragments {
            doc.push('\n');
            doc.push_str(f);
        }
        doc
    }
}

fn error_paths(errors: &Value) -> Vec<String> {
    let mut paths: Vec<String> = errors
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["path"].to_string())
        .collect();
    paths.sort();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_agrees_with_the_reference_on_random_operations() {
    let cases: u64 = std::env::var("LIVEGATE_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let (_up, gw) = common::serve(upstream(), &format!("{LIVEGATE_HEAD}\n{BODY}")).await;
    let schema =
        apollo_compiler::Schema::parse_and_validate(format!("{APOLLO_HEAD}\n{BODY}"), "s.graphql")
            .unwrap_or_else(|e| panic!("reference schema: {e}"));
    let mut compared = 0;
    for case in 0..cases {
        let mut gen = Gen {
            rng: fastrand::Rng::with_seed(case),
            fragments: Vec::new(),
            uses_v: false,
            decls: Vec::new(),
            given: serde_json::Map::new(),
        };
        let world = case % 97;
        let query = gen.operation(world);
        let v = case % 2 == 0;
        let doc = match apollo_compiler::ExecutableDocument::parse_and_validate(
            &schema,
            &query,
            "q.graphql",
        ) {
            Ok(doc) => doc,
            Err(e) => {
                eprintln!("not a case (invalid): {query}\n{}", e.errors);
                continue;
            }
        };
        if gen.uses_v {
            gen.given.insert("v".into(), json!(v));
        }
        let mut vars = apollo_compiler::response::JsonMap::new();
        for (name, value) in &gen.given {
            vars.insert(name.as_str(), value.clone().into());
        }
        let root = Obj {
            ty: "Query".into(),
            value: &Value::Null,
            world,
        };
        let reference = Execution::new(&schema, &doc)
            .enable_schema_introspection(true)
            .raw_variable_values(&vars)
            .execute_sync(&root)
            .unwrap_or_else(|e| panic!("reference refused {query}: {e:?}"));
        let reference: Value = serde_json::to_value(&reference).expect("reference JSON");
        let variables = Value::Object(gen.given.clone());
        let body = gw
            .query_raw(&json!({"query": query, "variables": variables}).to_string())
            .await;
        let ours: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let ours_data = serde_json::to_string(&ours["data"]).unwrap_or_default();
        let reference_data = serde_json::to_string(&reference["data"]).unwrap_or_default();
        assert_eq!(
            ours_data, reference_data,
            "case {case}, data differs\nquery: {query}\nvariables: {variables}\nours: {body}\nreference: {reference}"
        );
        assert_eq!(
            error_paths(&ours["errors"]),
            error_paths(&reference["errors"]),
            "case {case}, error paths differ\nquery: {query}\nvariables: {variables}\nours: {body}\nreference: {reference}"
        );
        compared += 1;
    }
    assert_eq!(compared, cases, "every generated document is valid");
}
