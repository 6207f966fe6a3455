//! `livegate import openapi`: the generated text of a small spec (golden), a corpus of
//! real documents of different styles (each imports and passes `check`, the same bytes
//! every time), and generated schemas served end to end against real upstreams: the shop
//! of the golden test, the Swagger petstore (2.0 and 3.0, a mutation invalidating a live
//! query), and GitHub's own document answered with its own response examples.

mod common;

use axum::extract::{Json, Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{next_json, websocket_with, Gateway, Upstream};
use futures_util::SinkExt;
use livegate::openapi::{import, Imported, Options};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::Message;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openapi"
    ))
    .join(name)
}

/// Panics with the planner's errors unless `schema` passes `check`.
fn accepted(schema: &str) {
    if let Err(errors) = livegate::plan::load_sources(
        &[("schema.graphql".to_string(), schema.to_string())],
        Vec::<(String, String)>::new(),
    ) {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("check refuses the generated schema:\n{}", list.join("\n"));
    }
}

fn imported(name: &str, options: &Options) -> Imported {
    let out = import(&fixture(name), options).unwrap_or_else(|e| panic!("{name}: {e}"));
    accepted(&out.schema);
    out
}

#[test]
fn golden_shop_schema() {
    let out = imported("golden/shop.yaml", &Options::default());
    let golden = fixture("golden/shop.graphql");
    if std::env::var_os("LIVEGATE_BLESS").is_some() {
        std::fs::write(&golden, &out.schema).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(
        out.schema, want,
        "the generated text changed; if that is meant, accept it with LIVEGATE_BLESS=1 cargo test --test openapi golden"
    );
    assert_eq!(out.imported, 6);
    let skipped: Vec<&str> = out.skipped.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(skipped, ["GET /orders/{order_id}/receipt", "HEAD /health"]);
    assert!(
        out.skipped[0].1.contains("application/pdf"),
        "{:?}",
        out.skipped
    );
    let fields: Vec<&str> = out.fields.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "Query.listOrders",
            "Mutation.createOrder",
            "Query.getOrder",
            "Mutation.updateOrder",
            "Mutation.cancelOrder",
            "Query.getHealth"
        ]
    );
}

/// Every document of the corpus: imports (or says clearly why it cannot), passes
/// `check`, gives the same bytes twice, and accounts for every operation.
#[test]
fn corpus_of_real_documents() {
    let mut seen = 0;
    let dir = fixture("");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") || n.ends_with(".yaml"))
        .collect();
    names.sort();
    for name in &names {
        let options = Options {
            base_url: Some("http://127.0.0.1:9".into()),
            ..Options::default()
        };
        match import(&fixture(name), &options) {
            Ok(out) => {
                accepted(&out.schema);
                let again = import(&fixture(name), &options).expect("imports again");
                assert_eq!(out.schema, again.schema, "{name}: not deterministic");
                assert!(out.imported > 0, "{name}");
                assert_eq!(out.fields.len(), out.imported, "{name}");
                for (op, field) in &out.fields {
                    let (root, field) = field.split_once('.').expect("Root.field");
                    assert!(
                        out.schema.contains(&format!("  {field}")),
                        "{name}: {op} → {root}.{field} is not in the schema"
                    );
                }
                for (op, why) in &out.skipped {
                    assert!(
                        out.schema.contains(&format!("#   {op}: ")),
                        "{name}: skipped {op} ({why}) has no comment"
                    );
                }
                seen += 1;
            }
            Err(e) => {
                // Documents with no operation a Query can serve: said, not guessed.
                assert!(
                    e.contains("no paths") || e.contains("no GET operation"),
                    "{name}: {e}"
                );
            }
        }
    }
    assert!(
        seen >= 9,
        "only {seen} of {} documents imported",
        names.len()
    );
}

#[test]
fn bad_documents_get_clear_errors() {
    let dir = std::env::temp_dir().join(format!("livegate-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = [
        ("not-yaml.yaml", "openapi: [3.0\n  : :", "not valid YAML"),
        ("list.yaml", "- 1\n- 2\n", "not an OpenAPI document"),
        ("nothing.json", "{\"info\": {}}", "no `openapi` or `swagger` member"),
        ("v1.json", "{\"swaggerVersion\": \"1.2\", \"swagger\": \"1.2\"}", "not supported"),
        (
            "missing-ref.yaml",
            "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    $ref: 'other.yaml#/paths/a'\n",
            "cannot read",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let err = import(&path, &Options::default()).expect_err(name);
        assert!(err.contains(want), "{name}: {err}");
    }
    // Hostile shapes: nesting past the parsers' limits, YAML aliases that would expand
    // a billionfold, a chain of thousands of schemas (no stack overflow: past 128 types
    // deep the rest is JSON).
    let deep = format!(
        "openapi: 3.0.0\ninfo: {{title: t, version: '1'}}\npaths: {}{}\n",
        "{a: ".repeat(5000),
        "}".repeat(5000)
    );
    let laughs = (b'b'..=b'j').fold(
        "openapi: 3.0.0\na: &a [x,x,x,x,x,x,x,x,x,x]\n".to_string(),
        |doc, c| {
            let prev = (c - 1) as char;
            let c = c as char;
            doc + &format!("{c}: &{c} [{}]\n", vec![format!("*{prev}"); 10].join(","))
        },
    );
    for (name, text, want) in [
        ("deep.yaml", deep, "recursion limit"),
        ("laughs.yaml", laughs, "repetition limit"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let err = import(&path, &Options::default()).expect_err(name);
        assert!(err.contains(want), "{name}: {err}");
    }
    let n = 5000;
    let mut schemas = serde_json::Map::new();
    for i in 0..n {
        schemas.insert(
            format!("S{i}"),
            json!({"type": "object", "properties": {"v": {"type": "string"},
                "next": {"$ref": format!("#/components/schemas/S{}", i + 1)}}}),
        );
    }
    schemas.insert(format!("S{n}"), json!({"type": "string"}));
    let chain = json!({"openapi": "3.0.0", "info": {"title": "chain", "version": "1"},
        "paths": {"/a": {"get": {"responses": {"200": {"description": "x",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}}}}}},
        "components": {"schemas": schemas}});
    let path = dir.join("chain.json");
    std::fs::write(&path, chain.to_string()).expect("write");
    let out = import(&path, &Options::default()).expect("a long chain imports");
    accepted(&out.schema);
    assert!(out.schema.contains("type S0 {"), "{}", &out.schema[..400]);

    // A `$ref` cycle is a type reference, never expanded; a chain of refs to refs that
    // loops is served as JSON.
    let path = dir.join("cycle.yaml");
    std::fs::write(
        &path,
        "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              schema: {$ref: '#/components/schemas/A'}\ncomponents:\n  schemas:\n    A: {type: object, properties: {next: {$ref: '#/components/schemas/A'}, loop: {$ref: '#/components/schemas/L1'}}}\n    L1: {$ref: '#/components/schemas/L2'}\n    L2: {$ref: '#/components/schemas/L1'}\n",
    )
    .expect("write");
    let out = import(&path, &Options::default()).expect("cycle imports");
    accepted(&out.schema);
    assert!(out.schema.contains("  next: A\n"), "{}", out.schema);
    assert!(out.schema.contains("  loop: JSON\n"), "{}", out.schema);
}

/// A `$ref` to another file, relative to the referring one.
#[test]
fn references_to_other_files_are_followed() {
    let dir = std::env::temp_dir().join(format!("livegate-openapi-refs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("schemas")).expect("dir");
    std::fs::write(
        dir.join("api.yaml"),
        "openapi: 3.0.3\ninfo: {title: Notes, version: '1'}\nservers: [{url: 'http://127.0.0.1:9'}]\npaths:\n  /notes/{id}:\n    get:\n      operationId: getNote\n      parameters: [{name: id, in: path, required: true, schema: {type: string}}]\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              schema: {$ref: 'schemas/note.yaml'}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("schemas/note.yaml"),
        "type: object\nrequired: [id]\nproperties:\n  id: {type: string}\n  author: {$ref: '#/definitions/Author'}\ndefinitions:\n  Author: {type: object, properties: {display_name: {type: string}}}\n",
    )
    .expect("write");
    let out = import(&dir.join("api.yaml"), &Options::default()).expect("imports");
    accepted(&out.schema);
    assert!(
        out.schema.contains("getNote(id: ID!): Note"),
        "{}",
        out.schema
    );
    assert!(
        out.schema
            .contains("displayName: String @map(from: \"display_name\")"),
        "{}",
        out.schema
    );
}

// --- the golden shop, served -------------------------------------------------------

/// The shop the golden spec describes: what it received is kept in `seen`.
fn shop(seen: Arc<Mutex<Vec<String>>>) -> Router {
    let order = json!({
        "id": 7, "status": "in-transit", "created_at": "2026-12-01T10:00:00Z", "note": null,
        "shipping_address": {"street_line": "3 Oak St", "city": "Lyon"},
        "lines": [{"sku": "A-1", "quantity": 2, "unit_price": 4.5}],
        "metadata": {"channel": "web", "tags": ["a"]},
        "payment": {"kind": "bank-invoice", "due_days": 30},
        "gift": {"wrap": true, "message": "hi"},
        "discounts": [{"type": "percent", "code": "TEN", "percent": 10.0},
                      {"type": "FixedDiscount", "code": "FIVE", "amount_cents": 500}],
        "x.legacy": "kept out"
    });
    let listed = order.clone();
    let kept = seen.clone();
    Router::new()
        .route(
            "/v1/orders",
            get(move |headers: HeaderMap, RawQuery(q): RawQuery| {
                let listed = listed.clone();
                let kept = kept.clone();
                async move {
                    let rid = headers
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    kept.lock()
                        .expect("seen")
                        .push(format!("list {} {rid}", q.unwrap_or_default()));
                    (
                        [("x-request-id", "12345"), ("x-total-count", "1")],
                        Json(json!({"data": [listed], "meta": {"total": 1}})),
                    )
                }
            })
            .post(move |Json(body): Json<Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().expect("seen").push(format!("create {body}"));
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Json(
                            json!({"error": {"code": "out_of_stock", "message": "A-1 is sold out",
                            "details": [{"sku": "A-1"}], "trace": "db-7"}}),
                        ),
                    )
                }
            }),
        )
        .route(
            "/v1/orders/{id}",
            get(move |UrlPath(id): UrlPath<String>| {
                let order = order.clone();
                async move {
                    if id == "7" {
                        Json(order).into_response()
                    } else {
                        StatusCode::NOT_FOUND.into_response()
                    }
                }
            }),
        )
}

#[tokio::test]
async fn golden_shop_serves_its_api_as_it_is() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let up = Upstream::start(shop(seen.clone())).await;
    let out = imported(
        "golden/shop.yaml",
        &Options {
            base_url: Some(format!("{}/v1", up.url())),
            ..Options::default()
        },
    );
    let gw = Gateway::start(&out.schema, livegate::Options::default()).await;
    let r = gw
        .query_with(
            r#"{ listOrders(status: [PENDING, IN_TRANSIT], pageSize: 5, xRequestId: "r-1") {
                   meta { total } xTotalCount xRequestId
                   data { id status createdAt note shippingAddress { streetLine city }
                          lines { sku quantity unitPrice } metadata gift { wrap }
                          payment { __typename ... on Invoice { dueDays } ... on Card { last4 } }
                          discounts { code ... on PercentDiscount { percent } ... on FixedDiscount { amountCents } } } } }"#,
            json!({}),
            &[("authorization", "Bearer t")],
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    assert_eq!(
        r["data"]["listOrders"],
        json!({"meta": {"total": 1}, "xTotalCount": 1, "xRequestId": "12345", "data": [{
            "id": "7", "status": "IN_TRANSIT", "createdAt": "2026-12-01T10:00:00Z", "note": null,
            "shippingAddress": {"streetLine": "3 Oak St", "city": "Lyon"},
            "lines": [{"sku": "A-1", "quantity": 2, "unitPrice": 4.5}],
            "metadata": {"channel": "web", "tags": ["a"]}, "gift": {"wrap": true},
            "payment": {"__typename": "Invoice", "dueDays": 30},
            "discounts": [{"code": "TEN", "percent": 10.0}, {"code": "FIVE", "amountCents": 500}]}]})
    );
    // The list went out joined (explode: false), the bracketed name as it is, the
    // enum default as the API spells it, the header parameter as a header.
    assert_eq!(
        seen.lock().expect("seen")[0],
        "list status=pending%2Cin-transit&page%5Bsize%5D=5&sort=newest r-1"
    );
    let r = gw
        .query_with(
            r#"mutation { createOrder(input: {quantity: 2, status: SHIPPED, shippingAddress: {streetLine: "Main 1"}}) { id } }"#,
            json!({}),
            &[("authorization", "Bearer t")],
        )
        .await;
    assert_eq!(
        seen.lock().expect("seen")[1],
        r#"create {"quantity":2,"status":"shipped","shipping_address":{"street_line":"Main 1"}}"#
    );
    // The spec's error schema became the error mapping.
    assert_eq!(r["errors"][0]["message"], "A-1 is sold out", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["code"], "out_of_stock", "{r}");
    assert_eq!(
        r["errors"][0]["extensions"]["details"],
        json!([{"sku": "A-1"}]),
        "{r}"
    );
    assert!(!r.to_string().contains("db-7"), "{r}");
    let r = gw
        .query_with(
            "{ getOrder(orderId: 7) { id status } }",
            json!({}),
            &[("authorization", "Bearer t")],
        )
        .await;
    assert_eq!(
        r["data"]["getOrder"],
        json!({"id": "7", "status": "IN_TRANSIT"}),
        "{r}"
    );
}

// --- the Swagger petstore, 2.0 and 3.0 ----------------------------------------------

#[derive(Clone, Default)]
struct Pets {
    pets: Arc<Mutex<HashMap<i64, Value>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
    queries: Arc<Mutex<Vec<String>>>,
}

fn petstore(prefix: &str, state: Pets) -> Router {
    async fn one(State(s): State<Pets>, UrlPath(id): UrlPath<String>) -> impl IntoResponse {
        let pet = id
            .parse::<i64>()
            .ok()
            .and_then(|id| s.pets.lock().expect("pets").get(&id).cloned());
        match pet {
            Some(p) => Json(p).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"code": 1, "type": "error", "message": "Pet not found"})),
            )
                .into_response(),
        }
    }
    async fn put(State(s): State<Pets>, Json(body): Json<Value>) -> impl IntoResponse {
        s.bodies.lock().expect("bodies").push(body.clone());
        let Some(id) = body["id"].as_i64() else {
            return (StatusCode::BAD_REQUEST, Json(json!({"message": "no id"}))).into_response();
        };
        s.pets.lock().expect("pets").insert(id, body.clone());
        Json(body).into_response()
    }
    async fn by_status(State(s): State<Pets>, uri: Uri) -> Json<Value> {
        let q = uri.query().unwrap_or_default().to_string();
        s.queries.lock().expect("queries").push(q.clone());
        let wanted: Vec<String> = q
            .split('&')
            .filter_map(|kv| kv.strip_prefix("status="))
            .flat_map(|v| v.split("%2C").map(str::to_string).collect::<Vec<_>>())
            .collect();
        let pets: Vec<Value> = s
            .pets
            .lock()
            .expect("pets")
            .values()
            .filter(|p| wanted.iter().any(|w| p["status"] == w.as_str()))
            .cloned()
            .collect();
        Json(Value::Array(pets))
    }
    Router::new()
        .route(&format!("{prefix}/pet"), axum::routing::put(put))
        .route(&format!("{prefix}/pet/findByStatus"), get(by_status))
        .route(&format!("{prefix}/pet/{{id}}"), get(one))
        .with_state(state)
}

/// `update` is the document's mutation: in 2.0 `updatePet` describes no success body
/// (so it is `JSON`, the body as the API sends it), in 3.0 it answers a `Pet`.
async fn petstore_end_to_end(doc: &str, prefix: &str, update: &str, find_sold: &str) {
    let state = Pets::default();
    state.pets.lock().expect("pets").insert(
        1,
        json!({"id": 1, "name": "doggie", "photoUrls": ["a.png"], "status": "available",
               "category": {"id": 3, "name": "Dogs"}, "tags": [{"id": 9, "name": "good"}]}),
    );
    let up = Upstream::start(petstore(prefix, state.clone())).await;
    let out = imported(
        doc,
        &Options {
            base_url: Some(format!("{}{prefix}", up.url())),
            ..Options::default()
        },
    );
    let gw = Gateway::start(&out.schema, livegate::Options::default()).await;
    let key = [("api_key", "special-key")];
    let r = gw
        .query_with(
            "{ getPetById(petId: 1) { id name status photoUrls category { name } tags { id name } } }",
            json!({}),
            &key,
        )
        .await;
    assert_eq!(
        r,
        json!({"data": {"getPetById": {"id": "1", "name": "doggie", "status": "AVAILABLE",
            "photoUrls": ["a.png"], "category": {"name": "Dogs"}, "tags": [{"id": "9", "name": "good"}]}}}),
        "{doc}"
    );
    // The pet's 404 is an error on the field, with the mapped message.
    let r = gw
        .query_with("{ getPetById(petId: 2) { name } }", json!({}), &key)
        .await;
    assert_eq!(r["data"]["getPetById"], Value::Null, "{r}");
    assert_eq!(r["errors"][0]["extensions"]["status"], 404, "{r}");

    // A live query of the same pet, by the same caller (its key in connection_init).
    let mut ws = websocket_with(
        gw.addr,
        "graphql-transport-ws",
        json!({"api_key": "special-key"}),
    )
    .await;
    let sub = json!({"id": "1", "type": "subscribe",
        "payload": {"query": "subscription { getPetById(petId: 1) { name status } }"}});
    ws.send(Message::text(sub.to_string())).await.expect("send");
    let first = next_json(&mut ws).await;
    assert_eq!(
        first["payload"]["data"]["getPetById"],
        json!({"name": "doggie", "status": "AVAILABLE"}),
        "{first}"
    );
    let r = gw.query_with(update, json!({}), &key).await;
    assert!(r.get("errors").is_none(), "{r}");
    assert_eq!(r["data"]["updatePet"]["name"], "rex", "{r}");
    assert_eq!(
        state.bodies.lock().expect("bodies")[0],
        json!({"id": 1, "name": "rex", "photoUrls": ["a.png"], "status": "sold"}),
        "the id goes back as the number the API reads, the enum as it spells it"
    );
    // The mutation invalidated the live query's entry: one refetch, one new result.
    let next = next_json(&mut ws).await;
    assert_eq!(
        next["payload"]["data"]["getPetById"],
        json!({"name": "rex", "status": "SOLD"}),
        "{next}"
    );
    assert_eq!(
        up.count_matching(&format!("GET {prefix}/pet/1")),
        2,
        "one fetch for the query and the live query, one refetch after the mutation: {:?}",
        up.requests()
    );
    let r = gw.query_with(find_sold, json!({}), &key).await;
    assert_eq!(
        r["data"]["findPetsByStatus"],
        json!([{"name": "rex"}]),
        "{r}"
    );
    assert_eq!(state.queries.lock().expect("queries")[0], "status=sold");
}

#[tokio::test]
async fn petstore_3_0_end_to_end() {
    petstore_end_to_end(
        "petstore-3.0.yaml",
        "/api/v3",
        r#"mutation { updatePet(input: {id: 1, name: "rex", photoUrls: ["a.png"], status: SOLD}) { id name status } }"#,
        "{ findPetsByStatus(status: SOLD) { name } }",
    )
    .await;
}

#[tokio::test]
async fn petstore_2_0_end_to_end() {
    petstore_end_to_end(
        "petstore-2.0.json",
        "/v2",
        r#"mutation { updatePet(input: {id: 1, name: "rex", photoUrls: ["a.png"], status: SOLD}) }"#,
        "{ findPetsByStatus(status: [SOLD]) { name } }",
    )
    .await;
}

// --- GitHub's own document, answered with its own examples ---------------------------

/// The version of `@octokit/openapi` whose `api.github.com.json` the test imports.
const OCTOKIT_OPENAPI: &str = "23.0.2";

/// GitHub's OpenAPI document (13 MB), fetched once with `npm pack` into the target
/// directory (npm checks the package's integrity against the registry).
fn github_document() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("octokit-openapi-{OCTOKIT_OPENAPI}"));
    let doc = dir.join("package/generated/api.github.com.json");
    if doc.exists() {
        return doc;
    }
    std::fs::create_dir_all(&dir).expect("dir");
    let pack = std::process::Command::new("npm")
        .args([
            "pack",
            &format!("@octokit/openapi@{OCTOKIT_OPENAPI}"),
            "--silent",
            "--pack-destination",
        ])
        .arg(&dir)
        .output()
        .expect("npm runs (scripts/test installs it)");
    assert!(
        pack.status.success(),
        "npm pack: {}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let tarball = dir.join(format!("octokit-openapi-{OCTOKIT_OPENAPI}.tgz"));
    let untar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .arg("package/generated/api.github.com.json")
        .status()
        .expect("tar runs");
    assert!(untar.success(), "tar");
    let _ = std::fs::remove_file(&tarball);
    doc
}

/// A selection of every field of `ty` (from introspection) down to `depth` levels of
/// objects; unions and interfaces by `__typename` and a fragment per possible type.
fn selection(types: &HashMap<String, Value>, ty: &str, depth: usize) -> String {
    let Some(t) = types.get(ty) else {
        return String::new();
    };
    match t["kind"].as_str() {
        Some("UNION") | Some("INTERFACE") => {
            let mut out = String::from("__typename");
            for p in t["possibleTypes"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                out.push_str(&format!(
                    " ... on {name} {{ {} }}",
                    selection(types, name, depth)
                ));
            }
            out
        }
        _ => {
            let mut parts = vec!["__typename".to_string()];
            for f in t["fields"].as_array().into_iter().flatten() {
                if f["args"].as_array().is_some_and(|a| !a.is_empty()) {
                    continue;
                }
                let mut inner = &f["type"];
                while inner["ofType"].is_object() {
                    inner = &inner["ofType"];
                }
                let name = f["name"].as_str().unwrap_or_default();
                match inner["kind"].as_str() {
                    Some("SCALAR") | Some("ENUM") => parts.push(name.to_string()),
                    _ if depth > 0 => {
                        let sub =
                            selection(types, inner["name"].as_str().unwrap_or_default(), depth - 1);
                        parts.push(format!("{name} {{ {sub} }}"));
                    }
                    _ => {}
                }
            }
            parts.join(" ")
        }
    }
}

/// An operation of GitHub's document with a JSON example of its `200` answer.
struct Example {
    path: String,
    op: String,
    args: Vec<(String, Value)>,
    body: Value,
}

/// Whether `value` is what `schema` describes (types, `required`, `nullable`, enums,
/// items, members, `allOf`/`oneOf`/`anyOf`): GitHub's examples do not all match their
/// own schemas (a number as the string `"0.16001e0"`, a required `login` that is null),
/// and a gateway that serves the document as written must refuse those.
fn conforms(doc: &Value, schema: &Value, value: &Value, depth: usize) -> bool {
    let mut schema = schema;
    for _ in 0..8 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                schema = doc
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or(&Value::Null)
            }
            None => break,
        }
    }
    if depth > 48 {
        return true;
    }
    let all = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_array)
            .map(|v| v.iter().collect::<Vec<_>>())
    };
    if let Some(parts) = all("allOf") {
        if !parts.iter().all(|p| conforms(doc, p, value, depth + 1)) {
            return false;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(parts) = all(key) {
            if !parts.iter().any(|p| conforms(doc, p, value, depth + 1)) {
                return false;
            }
        }
    }
    if value.is_null() {
        return schema.get("nullable") == Some(&json!(true)) || schema.get("type").is_none();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(value) {
            return false;
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") | None if value.is_object() => {
            let required = schema.get("required").and_then(Value::as_array);
            if required
                .into_iter()
                .flatten()
                .any(|r| value.get(r.as_str().unwrap_or_default()).is_none())
            {
                return false;
            }
            schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .all(|(k, s)| value.get(k).is_none_or(|v| conforms(doc, s, v, depth + 1)))
        }
        Some("object") => false,
        Some("array") => value.as_array().is_some_and(|items| {
            items.iter().all(|i| {
                conforms(
                    doc,
                    schema.get("items").unwrap_or(&Value::Null),
                    i,
                    depth + 1,
                )
            })
        }),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    }
}

/// The `GET`s whose `200` has an example that conforms to its schema and whose
/// parameters are all plain path parameters (strings or integers): each with a concrete
/// path and its example. The second number counts the examples that do not conform.
fn github_examples(doc: &Value) -> (Vec<Example>, usize) {
    let deref = |v: &Value| -> Value {
        let mut v = v.clone();
        for _ in 0..8 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    v = doc
                        .pointer(r.trim_start_matches('#'))
                        .cloned()
                        .unwrap_or(Value::Null)
                }
                None => break,
            }
        }
        v
    };
    let mut out = Vec::new();
    let mut nonconforming = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let Some(op) = item.get("get") else { continue };
        let Some(examples) = op
            .pointer("/responses/200/content/application~1json/examples")
            .and_then(Value::as_object)
        else {
            continue;
        };
        let Some(body) = examples.values().next().map(|e| deref(e)["value"].clone()) else {
            continue;
        };
        if body.is_null() {
            continue;
        }
        let schema = op
            .pointer("/responses/200/content/application~1json/schema")
            .unwrap_or(&Value::Null);
        if !conforms(doc, schema, &body, 0) {
            nonconforming += 1;
            continue;
        }
        let mut concrete = path.clone();
        let mut args = Vec::new();
        let mut plain = true;
        for p in op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(&deref)
        {
            let name = p["name"].as_str().unwrap_or_default();
            match p["in"].as_str() {
                Some("path") => {
                    let arg = camel_case(name);
                    let (value, text) = match p["schema"]["type"].as_str() {
                        Some("integer") => (json!(42), "42".to_string()),
                        Some("string") if p["schema"].get("enum").is_none() => {
                            (json!(format!("v-{arg}")), format!("v-{arg}"))
                        }
                        _ => {
                            plain = false;
                            break;
                        }
                    };
                    concrete = concrete.replace(&format!("{{{name}}}"), &text);
                    args.push((arg, value));
                }
                _ if p["required"] == true => {
                    plain = false;
                    break;
                }
                _ => {}
            }
        }
        if plain {
            out.push(Example {
                path: concrete,
                op: format!("GET {path}"),
                args,
                body,
            });
        }
    }
    (out, nonconforming)
}

/// The importer's rule for argument names (`issue_number` → `issueNumber`).
fn camel_case(name: &str) -> String {
    let mut out = String::new();
    for (i, w) in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        if i == 0 {
            out.push_str(w);
        } else {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.push(f.to_ascii_uppercase());
                out.push_str(c.as_str());
            }
        }
    }
    out
}

#[tokio::test]
async fn github_document_imports_and_answers_with_its_own_examples() {
    let path = github_document();
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
    let (examples, nonconforming) = github_examples(&doc);
    eprintln!(
        "{} GET examples conform to their schemas, {nonconforming} do not",
        examples.len()
    );
    assert!(
        examples.len() >= 100,
        "only {} GETs with examples",
        examples.len()
    );
    let by_path: Arc<HashMap<String, Value>> = Arc::new(
        examples
            .iter()
            .map(|e| (e.path.clone(), e.body.clone()))
            .collect(),
    );
    let app = Router::new().fallback(move |uri: Uri| {
        let by_path = by_path.clone();
        async move {
            match by_path.get(uri.path()) {
                Some(body) => Json(body.clone()).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let up = Upstream::start(app).await;
    let started = std::time::Instant::now();
    let out = import(
        &path,
        &Options {
            base_url: Some(up.url()),
            ..Options::default()
        },
    )
    .expect("GitHub's document imports");
    let took = started.elapsed();
    assert!(out.imported > 1000, "{} imported", out.imported);
    assert!(out.skipped.len() < 10, "{:?}", out.skipped);
    accepted(&out.schema);
    eprintln!(
        "imported {} operations in {took:?} (debug build)",
        out.imported
    );

    let gw = Gateway::start(&out.schema, livegate::Options::default()).await;
    let intro = gw
        .query("{ __schema { types { name kind possibleTypes { name } fields { name args { name } type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } }")
        .await;
    let types: HashMap<String, Value> = intro["data"]["__schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t.clone(),
            )
        })
        .collect();
    let query_fields: HashMap<&str, &Value> = types["Query"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| (f["name"].as_str().unwrap_or_default(), f))
        .collect();
    let fields: HashMap<&str, &str> = out
        .fields
        .iter()
        .filter_map(|(op, f)| Some((op.as_str(), f.strip_prefix("Query.")?)))
        .collect();
    let mut answered = 0;
    let mut bad = Vec::new();
    // Every conforming example (459 of GitHub's 555 in this version), each through the
    // generated field with every field it has selected two objects deep.
    for e in &examples {
        let field = fields[e.op.as_str()];
        let mut inner = &query_fields[field]["type"];
        while inner["ofType"].is_object() {
            inner = &inner["ofType"];
        }
        let sel = match inner["kind"].as_str() {
            Some("SCALAR") | Some("ENUM") => String::new(),
            _ => format!(
                " {{ {} }}",
                selection(&types, inner["name"].as_str().unwrap_or_default(), 2)
            ),
        };
        let args: Vec<String> = e.args.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        let query = format!("{{ {field}{args}{sel} }}");
        let r = gw.query(&query).await;
        if r.to_string().contains("UPSTREAM_BAD_RESPONSE") || r.get("errors").is_some() {
            bad.push(format!("{} ({field}): {}", e.op, r["errors"]));
        } else {
            assert!(!r["data"][field].is_null(), "{}: {r}", e.op);
            answered += 1;
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} failed:\n{}",
        bad.len(),
        examples.len(),
        bad.join("\n")
    );
    assert_eq!(answered, examples.len());
}

/// Documents shaped to break the importer (found by review): each imports, passes
/// `check`, and says what it could not serve.
#[test]
fn awkward_documents_import_faithfully() {
    let dir = std::env::temp_dir().join(format!("livegate-openapi-awkward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |name: &str, text: &str| -> Imported {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let out = import(&path, &Options::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        accepted(&out.schema);
        out
    };
    const HEAD: &str = "openapi: 3.0.3\ninfo: {title: T, version: '1'}\nservers: [{url: 'https://api.example.com'}]\n";
    let ok = |schema: &str| {
        format!(
            "{{'200': {{description: ok, content: {{application/json: {{schema: {schema}}}}}}}}}"
        )
    };
    // A subtype narrowing the discriminator to an enum still implements the interface;
    // subtypes through another subtype, or with no members of their own, are found.
    let out = run(
        "interfaces.yaml",
        &format!(
            "{HEAD}paths:\n  /a: {{get: {{responses: {}}}}}\ncomponents:\n  schemas:\n    Animal: {{type: object, required: [kind], discriminator: {{propertyName: kind}}, properties: {{kind: {{type: string}}}}}}\n    Pet: {{allOf: [{{$ref: '#/components/schemas/Animal'}}, {{properties: {{name: {{type: string}}}}}}]}}\n    Cat: {{allOf: [{{$ref: '#/components/schemas/Pet'}}, {{properties: {{kind: {{type: string, enum: [Cat]}}}}}}]}}\n    Fish: {{description: a fish, allOf: [{{$ref: '#/components/schemas/Animal'}}]}}\n",
            ok("{$ref: '#/components/schemas/Animal'}")
        ),
    );
    for want in [
        "type Cat implements Animal",
        "type Fish implements Animal",
        "type Pet implements Animal",
        "{value: \"Cat\", type: \"Cat\"}",
    ] {
        assert!(out.schema.contains(want), "{want}:\n{}", out.schema);
    }
    // Nothing an object can serve is JSON, never `type X {}`; a dotted discriminator is
    // no union (`@discriminate` reads dots as a path).
    let out = run(
        "empty-and-dotted.yaml",
        &format!(
            "{HEAD}paths:\n  /a: {{get: {{responses: {}}}}}\n  /b: {{get: {{responses: {}}}}}\ncomponents:\n  schemas:\n    A: {{type: object, required: ['@odata.type'], properties: {{'@odata.type': {{type: string}}, n: {{type: integer}}}}}}\n    B: {{type: object, required: ['@odata.type'], properties: {{'@odata.type': {{type: string}}, m: {{type: integer}}}}}}\n",
            ok("{properties: {pw: {type: string, writeOnly: true}}}"),
            ok("{oneOf: [{$ref: '#/components/schemas/A'}, {$ref: '#/components/schemas/B'}], discriminator: {propertyName: '@odata.type'}}")
        ),
    );
    assert!(out.schema.contains("getA: JSON"), "{}", out.schema);
    assert!(!out.schema.contains("@discriminate"), "{}", out.schema);
    // Parameters: `content` instead of `schema` and matrix style cannot be written (left
    // out, or the operation skipped when required); a header list is its text; an
    // `Authorization` parameter is forwarded; an undeclared id in the path is an `ID`;
    // a GET's optional body is left out; a path's own server is its own upstream.
    let out = run(
        "params.yaml",
        &format!(
            "{HEAD}paths:\n  /a/{{thingId}}:\n    servers: [{{url: 'https://other.example.com/v2'}}]\n    get:\n      parameters:\n        - {{name: filter, in: query, content: {{application/json: {{schema: {{type: array, items: {{type: string}}}}}}}}}}\n        - {{name: X-Ids, in: header, schema: {{type: array, items: {{type: integer}}}}}}\n        - {{name: Authorization, in: header, schema: {{type: string}}}}\n      requestBody: {{content: {{application/json: {{schema: {{type: object}}}}}}}}\n      responses: {}\n  /m/{{id}}:\n    get:\n      parameters: [{{name: id, in: path, required: true, style: matrix, schema: {{type: string}}}}]\n      responses: {}\n",
            ok("{type: string}"),
            ok("{type: string}")
        ),
    );
    for want in [
        "getAByThingId(xIds: String, thingId: ID!): String",
        "@upstream(name: \"t-2\", url: \"https://other.example.com/v2\", forwardHeaders: [\"authorization\"])",
        "@rest(upstream: \"t-2\", path: \"/a/{args.thingId}\", headers: [{name: \"X-Ids\", value: \"{args.xIds}\"}])",
        "# query parameter \"filter\" left out",
        "# optional request body of a GET left out",
    ] {
        assert!(out.schema.contains(want), "{want}:\n{}", out.schema);
    }
    assert_eq!(out.skipped.len(), 1, "{:?}", out.skipped);
    assert!(out.skipped[0].1.contains("matrix"), "{:?}", out.skipped);
    // A JSON body without a schema is any JSON.
    let out = run(
        "schemaless-body.yaml",
        &format!(
            "{HEAD}paths:\n  /a: {{get: {{responses: {}}}, post: {{requestBody: {{content: {{application/json: {{}}}}}}, responses: {}}}}}\n",
            ok("{type: string}"),
            ok("{type: string}")
        ),
    );
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert!(
        out.schema.contains("postA(input: JSON): String"),
        "{}",
        out.schema
    );
    // A literal query in a path is sent as constant parameters; a fragment cannot be;
    // a `text/plain` number (`$count`) is JSON text as it is.
    let out = run(
        "paths.yaml",
        &format!(
            "{HEAD}paths:\n  /{{Bucket}}?acl: {{get: {{parameters: [{{name: Bucket, in: path, required: true, schema: {{type: string}}}}], responses: {}}}}}\n  /items/$count: {{get: {{responses: {{'200': {{description: ok, content: {{text/plain: {{schema: {{type: integer}}}}}}}}}}}}}}\n  /#X-Amz-Target=Foo: {{post: {{responses: {}}}}}\n",
            ok("{type: string}"),
            ok("{type: string}")
        ),
    );
    for want in [
        "@rest(upstream: \"t\", path: \"/{args.bucket}\", query: {acl: \"\"})",
        "getItemsCount: Int\n",
    ] {
        assert!(out.schema.contains(want), "{want}:\n{}", out.schema);
    }
    assert!(out.skipped[0].1.contains("fragment"), "{:?}", out.skipped);
    // YAML merge keys are applied.
    let out = run(
        "merge.yaml",
        &format!(
            "{HEAD}x-common: &common {{name: {{type: string}}, age: {{type: integer}}}}\npaths:\n  /a: {{get: {{responses: {}}}}}\n",
            ok("{type: object, properties: {<<: *common, extra: {type: boolean}}}")
        ),
    );
    assert!(
        out.schema.contains("  name: String\n  age: Int\n"),
        "{}",
        out.schema
    );
    // Not a regular file (a FIFO would block), a bad --base-url: clear errors.
    let err =
        import(std::path::Path::new("/dev/zero"), &Options::default()).expect_err("/dev/zero");
    assert!(err.contains("not a regular file"), "{err}");
    let err = import(
        &fixture("petstore-3.0.yaml"),
        &Options {
            base_url: Some("ftp://user:secret@x".into()),
            ..Options::default()
        },
    )
    .expect_err("ftp");
    assert!(
        err.contains("--base-url") && !err.contains("secret"),
        "{err}"
    );
}
