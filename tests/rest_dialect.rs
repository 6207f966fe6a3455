//! The REST dialect against an upstream shaped like a real shop API: error bodies mapped
//! into GraphQL errors, 401/403 keeping their meaning, enum values and input members
//! renamed both ways, null optional values left out of requests.

mod common;

use axum::extract::{Json, Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use common::{serve, Gateway};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The shop: its 422 bodies, its 401/403s, lowercase enum strings, snake_case members.
/// Every JSON body it receives is kept in `bodies`.
fn shop(bodies: Arc<Mutex<Vec<Value>>>) -> Router {
    let kept = bodies.clone();
    Router::new()
        .route(
            "/v1/orders",
            post(move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
                let kept = kept.clone();
                async move {
                    let note = headers.get("x-note").map(|v| v.to_str().unwrap_or("?").to_string());
                    kept.lock()
                        .expect("bodies")
                        .push(json!({"body": body.clone(), "x_note": note}));
                    if body["quantity"].as_i64().unwrap_or(0) <= 0 {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            Json(json!({"error": {
                                "code": "validation_failed",
                                "message": "quantity must be positive",
                                "details": [{"field": "quantity", "issue": "min"}],
                                "trace": "internal-host-7 db=orders-primary"
                            }})),
                        )
                            .into_response();
                    }
                    (
                        StatusCode::CREATED,
                        Json(json!({"id": 7, "status": body.get("status").cloned().unwrap_or(json!("pending")), "shipping_address": body["shipping_address"]})),
                    )
                        .into_response()
                }
            })
            .get(|Query(q): Query<HashMap<String, String>>| async move {
                let all = [
                    json!({"id": 1, "status": "pending"}),
                    json!({"id": 2, "status": "shipped"}),
                    json!({"id": 3, "status": "in_transit"}),
                ];
                let wanted = q.get("status").cloned();
                Json(Value::Array(
                    all.into_iter()
                        .filter(|o| wanted.as_deref().is_none_or(|w| o["status"] == w))
                        .collect(),
                ))
            }),
        )
        .route(
            "/v1/orders/{id}",
            get(|Path(id): Path<u32>| async move {
                match id {
                    401 => (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"error": {"message": "token expired"}})),
                    )
                        .into_response(),
                    403 => (
                        StatusCode::FORBIDDEN,
                        Json(json!({"error": {"message": "not your order"}})),
                    )
                        .into_response(),
                    409 => (
                        StatusCode::CONFLICT,
                        Json(json!({"error": {"code": "locked", "message": "order is locked"}})),
                    )
                        .into_response(),
                    500 => (StatusCode::INTERNAL_SERVER_ERROR, "<html>oops at db-7</html>")
                        .into_response(),
                    9 => Json(json!({"id": 9, "status": "lost_in_space"})).into_response(),
                    _ => Json(json!({"id": id, "status": "shipped"})).into_response(),
                }
            }),
        )
}

const ERRORS: &str = r#"
extend schema @upstream(name: "shop", url: "{up}",
  errors: {message: "error.message", extensions: {code: "error.code", details: "error.details"}})
extend schema @upstream(name: "bare", url: "{up}")

type Order { id: ID! status: String }

type Query {
  order(id: Int!): Order @rest(upstream: "shop", path: "/v1/orders/{args.id}")
  bareOrder(id: Int!): Order @rest(upstream: "bare", path: "/v1/orders/{args.id}")
  ownOrder(id: Int!): Order @rest(upstream: "shop", path: "/v1/orders/{args.id}",
    errors: {message: "error.code"})
}

type Mutation {
  createOrder(quantity: Int!): Order @rest(upstream: "shop", method: POST,
    path: "/v1/orders", body: {quantity: "{args.quantity}"})
}
"#;

fn error(response: &Value) -> &Value {
    &response["errors"][0]
}

#[tokio::test]
async fn an_upstream_error_body_becomes_the_graphql_error_by_its_mapping() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (_up, gw) = serve(shop(bodies), ERRORS).await;
    let r = gw
        .query("mutation { createOrder(quantity: 0) { id } }")
        .await;
    let e = error(&r);
    assert_eq!(e["message"], "quantity must be positive", "{r}");
    assert_eq!(e["extensions"]["code"], "validation_failed", "{r}");
    assert_eq!(e["extensions"]["status"], 422, "{r}");
    assert_eq!(
        e["extensions"]["details"],
        json!([{"field": "quantity", "issue": "min"}]),
        "{r}"
    );
    assert_eq!(e["path"], json!(["createOrder"]), "{r}");
    // Only what the mapping names: never the rest of the body.
    assert!(!r.to_string().contains("internal-host-7"), "{r}");

    // A field's own mapping wins over its upstream's.
    let r = gw.query("{ ownOrder(id: 409) { id } }").await;
    assert_eq!(error(&r)["message"], "locked", "{r}");
    // A body that is not JSON keeps today's message.
    let r = gw.query("{ order(id: 500) { id } }").await;
    assert_eq!(
        error(&r)["message"],
        "upstream shop answered HTTP 500",
        "{r}"
    );
    assert_eq!(
        error(&r)["extensions"]["code"],
        "UPSTREAM_HTTP_ERROR",
        "{r}"
    );
    assert!(!r.to_string().contains("db-7"), "{r}");
    // Without a mapping, nothing of the body reaches the client.
    let r = gw.query("{ bareOrder(id: 409) { id } }").await;
    assert_eq!(
        error(&r)["message"],
        "upstream bare answered HTTP 409",
        "{r}"
    );
    assert!(!r.to_string().contains("locked"), "{r}");
}

#[tokio::test]
async fn upstream_401_and_403_keep_their_meaning() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (_up, gw) = serve(shop(bodies), ERRORS).await;
    let r = gw.query("{ bareOrder(id: 401) { id } }").await;
    assert_eq!(error(&r)["extensions"]["code"], "UNAUTHENTICATED", "{r}");
    assert_eq!(error(&r)["extensions"]["status"], 401, "{r}");
    let r = gw.query("{ bareOrder(id: 403) { id } }").await;
    assert_eq!(error(&r)["extensions"]["code"], "FORBIDDEN", "{r}");
    assert_eq!(error(&r)["extensions"]["status"], 403, "{r}");
    // With a mapping, the message is the upstream's; the code stays the meaning of the
    // status when the body gives none.
    let r = gw.query("{ order(id: 401) { id } }").await;
    assert_eq!(error(&r)["message"], "token expired", "{r}");
    assert_eq!(error(&r)["extensions"]["code"], "UNAUTHENTICATED", "{r}");
    // A root field failing so is still an HTTP 200 with graphql-response+json (the spec).
    let res = reqwest::Client::new()
        .post(gw.url())
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": "{ order(id: 403) { id } }"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(res.status(), 200);
    let r: Value = res.json().await.expect("json");
    assert_eq!(error(&r)["extensions"]["code"], "FORBIDDEN", "{r}");
}

const SHAPES: &str = r#"
extend schema @upstream(name: "shop", url: "{up}")

enum OrderStatus {
  PENDING @map(from: "pending")
  SHIPPED @map(from: "shipped")
  IN_TRANSIT @map(from: "in_transit")
}

type Order {
  id: ID!
  status: OrderStatus
  shippingAddress: Address @map(from: "shipping_address")
}
type Address { street: String @map(from: "street_line") city: String }

input AddressInput { street: String! @map(from: "street_line") city: String }
input OrderInput {
  quantity: Int!
  note: String
  status: OrderStatus
  shippingAddress: AddressInput @map(from: "shipping_address")
}

type Query {
  order(id: Int!): Order @rest(upstream: "shop", path: "/v1/orders/{args.id}")
  orders(status: OrderStatus): [Order!]! @rest(upstream: "shop", path: "/v1/orders",
    query: {status: "{args.status}"})
}

type Mutation {
  createOrder(input: OrderInput!): Order @rest(upstream: "shop", method: POST,
    path: "/v1/orders", body: "{args.input}")
  createOrderFrom(input: OrderInput!): Order @rest(upstream: "shop", method: POST,
    path: "/v1/orders",
    body: {quantity: "{args.input.quantity}", street: "{args.input.shippingAddress.street}"})
  createOrderFlat(quantity: Int!, note: String, street: String): Order @rest(upstream: "shop",
    method: POST, path: "/v1/orders",
    body: {quantity: "{args.quantity}", note: "{args.note}", kind: null,
           shipping_address: {street_line: "{args.street}"}},
    headers: [{name: "X-Note", value: "{args.note}"}])
}
"#;

#[tokio::test]
async fn enum_values_are_mapped_both_ways() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (up, gw) = serve(shop(bodies), SHAPES).await;
    let r = gw.query("{ order(id: 2) { status } }").await;
    assert_eq!(r["data"]["order"]["status"], "SHIPPED", "{r}");
    let r = gw.query("{ orders { id status } }").await;
    assert_eq!(
        r["data"]["orders"],
        json!([
            {"id": "1", "status": "PENDING"},
            {"id": "2", "status": "SHIPPED"},
            {"id": "3", "status": "IN_TRANSIT"}
        ]),
        "{r}"
    );
    // An argument goes out as the upstream says it, literal or variable.
    let r = gw.query("{ orders(status: IN_TRANSIT) { id } }").await;
    assert_eq!(r["data"]["orders"], json!([{"id": "3"}]), "{r}");
    let r = gw
        .query_with(
            "query Q($s: OrderStatus) { orders(status: $s) { id } }",
            json!({"s": "SHIPPED"}),
            &[],
        )
        .await;
    assert_eq!(r["data"]["orders"], json!([{"id": "2"}]), "{r}");
    let asked = up.requests();
    assert!(
        asked.contains(&"GET /v1/orders?status=in_transit".to_string()),
        "{asked:?}"
    );
    assert!(
        asked.contains(&"GET /v1/orders?status=shipped".to_string()),
        "{asked:?}"
    );
    // A value that maps to nothing is a bad response at that leaf.
    let r = gw.query("{ order(id: 9) { id status } }").await;
    assert_eq!(
        r["data"]["order"],
        json!({"id": "9", "status": null}),
        "{r}"
    );
    assert_eq!(
        error(&r)["extensions"]["code"],
        "UPSTREAM_BAD_RESPONSE",
        "{r}"
    );
    assert_eq!(error(&r)["path"], json!(["order", "status"]), "{r}");
}

#[tokio::test]
async fn inputs_are_sent_as_the_upstream_names_them() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (_up, gw) = serve(shop(bodies.clone()), SHAPES).await;
    let r = gw
        .query(
            r#"mutation { createOrder(input: {quantity: 2, status: SHIPPED,
                 shippingAddress: {street: "Main 1"}}) { id status shippingAddress { street } } }"#,
        )
        .await;
    assert_eq!(
        r["data"]["createOrder"],
        json!({"id": "7", "status": "SHIPPED", "shippingAddress": {"street": "Main 1"}}),
        "{r}"
    );
    // Renamed at every depth; absent optional members (`note`, `city`) left out.
    assert_eq!(
        bodies.lock().expect("bodies")[0]["body"],
        json!({"quantity": 2, "status": "shipped", "shipping_address": {"street_line": "Main 1"}})
    );
    // A variable input, with an explicit null: left out too.
    let r = gw
        .query_with(
            "mutation M($i: OrderInput!) { createOrder(input: $i) { id } }",
            json!({"i": {"quantity": 1, "note": null, "shippingAddress": {"street": "Elm 2", "city": null}}}),
            &[],
        )
        .await;
    assert_eq!(r["data"]["createOrder"]["id"], "7", "{r}");
    assert_eq!(
        bodies.lock().expect("bodies")[1]["body"],
        json!({"quantity": 1, "shipping_address": {"street_line": "Elm 2"}})
    );
    // `{args.input.shippingAddress.street}` names input fields, whatever their members.
    let r = gw
        .query(r#"mutation { createOrderFrom(input: {quantity: 3, shippingAddress: {street: "Oak 3"}}) { id } }"#)
        .await;
    assert_eq!(r["data"]["createOrderFrom"]["id"], "7", "{r}");
    assert_eq!(
        bodies.lock().expect("bodies")[2]["body"],
        json!({"quantity": 3, "street": "Oak 3"})
    );
}

#[tokio::test]
async fn null_optional_arguments_are_left_out_of_bodies_and_headers() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (_up, gw) = serve(shop(bodies.clone()), SHAPES).await;
    let r = gw
        .query("mutation { createOrderFlat(quantity: 1, note: null) { id } }")
        .await;
    assert_eq!(r["data"]["createOrderFlat"]["id"], "7", "{r}");
    let got = bodies.lock().expect("bodies")[0].clone();
    // `note` absent (not null), the literal null kept, no empty X-Note header.
    assert_eq!(
        got["body"],
        json!({"quantity": 1, "kind": null, "shipping_address": {}}),
        "{got}"
    );
    assert_eq!(got["x_note"], Value::Null, "{got}");
    let r = gw
        .query(r#"mutation { createOrderFlat(quantity: 1, note: "gift", street: "A 1") { id } }"#)
        .await;
    assert_eq!(r["data"]["createOrderFlat"]["id"], "7", "{r}");
    let got = bodies.lock().expect("bodies")[1].clone();
    assert_eq!(
        got["body"],
        json!({"quantity": 1, "note": "gift", "kind": null, "shipping_address": {"street_line": "A 1"}}),
        "{got}"
    );
    assert_eq!(got["x_note"], "gift", "{got}");
}

/// Every error `livegate check` reports for `schema`, one per line.
fn check(schema: &str) -> String {
    match livegate::plan::load("shop.graphql", schema, Vec::<(String, String)>::new()) {
        Ok(_) => panic!("a wrong schema was accepted"),
        Err(errors) => errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn check_reports_every_error_of_every_stage_in_one_run() {
    let schema = r#"
extend schema @upstream(name: "shop", url: "http://127.0.0.1:1")
extend schema @upstream(name: "half")
enum S { A @map(from: "x") B @map(from: "x") C @deprecated }
input I { a: String @map(from: "a..b") }
type Query {
  s(x: String @map(from: "y")): S @rest(upstream: "shop", path: "/s",
    errors: {message: 3, extra: "x"})
  orders(status: String): [S] @rest(upstream: "shop", path: "/o", query: {s: "{args.state}"})
  i(i: I): S @rest(upstream: "shop", path: "/i", verb: GET)
  h: S @rest(upstream: "half", path: "/h")
  p: S @rest(upstream: "shop")
}
"#;
    let errors = check(schema);
    for said in [
        // Reading the directives…
        "shop.graphql:3:15: @upstream needs argument `url`",
        "directive @deprecated is not allowed on an enum value; only @map(from:) is",
        "@map has no argument `from`; known: as",
        "@rest(errors:): message must be a string",
        "@rest(errors:) has no member `extra`",
        "@rest has no argument `verb`",
        // … and planning, in the same run.
        "two values stand for the upstream's \"x\"",
        "@map(from: \"a..b\") on input field `a`",
        "`{args.state}` names no argument of `Query.orders`; known: status",
    ] {
        assert!(errors.contains(said), "{said:?} not in:\n{errors}");
    }
    // A directive that could not be read is not reported again as missing.
    assert!(errors.contains("@rest needs argument `path`"), "{errors}");
    assert!(!errors.contains("has no resolver"), "{errors}");
    // A broken @upstream is reported once, not again by every field that names it.
    assert!(!errors.contains("names no @upstream"), "{errors}");
    // In source order.
    let lines: Vec<usize> = errors
        .lines()
        .filter_map(|l| l.split(':').nth(1)?.parse().ok())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{errors}");
}

#[test]
fn an_unquoted_template_says_how_to_write_it() {
    let errors = check(
        r#"
extend schema @upstream(name: "shop", url: "http://127.0.0.1:1")
type Query { a: String }
type Mutation { m(x: String): String @rest(upstream: "shop", method: POST, path: "/m", body: {args}) }
"#,
    );
    assert!(errors.contains("syntax error"), "{errors}");
    assert!(errors.contains("body: \"{args}\""), "{errors}");
}

/// An upstream that answers every path with the `Cache-Control` its name says, an `ETag`,
/// and `304` to a matching `If-None-Match`; it counts conditional requests.
fn freshness(conditional: Arc<Mutex<usize>>) -> Router {
    Router::new().route(
        "/items/{mode}",
        get(
            move |Path(mode): Path<String>, headers: axum::http::HeaderMap| {
                let conditional = conditional.clone();
                async move {
                    let control = match mode.as_str() {
                        "zero" => "max-age=0",
                        "shared-zero" => "max-age=600, s-maxage=0",
                        "no-cache" => "no-cache",
                        "long" => "max-age=86400",
                        _ => "",
                    };
                    if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                        *conditional.lock().expect("count") += 1;
                        return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")]).into_response();
                    }
                    let mut res = Json(json!({"name": mode})).into_response();
                    res.headers_mut()
                        .insert("etag", "\"v1\"".parse().expect("etag"));
                    if !control.is_empty() {
                        res.headers_mut()
                            .insert("cache-control", control.parse().expect("control"));
                    }
                    res
                }
            },
        ),
    )
}

#[tokio::test]
async fn the_upstreams_cache_control_can_only_shorten_the_schemas_max_age() {
    let conditional = Arc::new(Mutex::new(0));
    let (up, gw) = serve(
        freshness(conditional.clone()),
        r#"
extend schema @upstream(name: "up", url: "{up}")
type Item { name: String }
type Query {
  item(mode: String!): Item @rest(upstream: "up", path: "/items/{args.mode}") @cache(maxAge: 60)
}
"#,
    )
    .await;
    for mode in ["zero", "shared-zero", "no-cache", "long", "plain"] {
        for _ in 0..3 {
            let r = gw
                .query(&format!("{{ item(mode: \"{mode}\") {{ name }} }}"))
                .await;
            assert_eq!(r["data"]["item"]["name"], mode, "{r}");
        }
    }
    // `max-age=0` (or `s-maxage=0`, which a shared cache reads first): every use fetches.
    assert_eq!(up.count_matching("GET /items/zero"), 3);
    assert_eq!(up.count_matching("GET /items/shared-zero"), 3);
    // `no-cache`: every use asks again, conditionally, and a 304 serves the kept value.
    assert_eq!(up.count_matching("GET /items/no-cache"), 3);
    assert_eq!(*conditional.lock().expect("count"), 2);
    // A longer `max-age` does not lengthen the schema's 60 s; none leaves it as it is.
    assert_eq!(up.count_matching("GET /items/long"), 1);
    assert_eq!(up.count_matching("GET /items/plain"), 1);
}

/// Reads an SSE response's chunks for `wait` at most, appending them to `into`.
async fn read_for(res: &mut reqwest::Response, wait: std::time::Duration, into: &mut String) {
    if let Ok(Ok(Some(c))) = tokio::time::timeout(wait, res.chunk()).await {
        into.push_str(&String::from_utf8_lossy(&c));
    }
}

#[tokio::test]
async fn when_matches_the_message_as_it_arrives_then_select_takes_the_payload() {
    let (say, _) = tokio::sync::broadcast::channel::<String>(64);
    let app = Router::new().route("/ws", common::announcer(say.clone()));
    let (_up, gw) = serve(
        app,
        r#"
extend schema @upstream(name: "shop", url: "{up}")
enum OrderStatus { PENDING @map(from: "pending") SHIPPED @map(from: "shipped") }
type Order { id: ID! status: OrderStatus }
type Query { ping: String @rest(upstream: "shop", path: "/ping") }
type Subscription {
  orderUpdated(id: ID!): Order @stream(upstream: "shop", path: "/ws",
    when: {event: "order.updated", data: {id: "{args.id}"}}, select: "data")
  orderById(id: ID!): Order @stream(upstream: "shop", path: "/ws",
    when: {id: "{args.id}"}, select: "data")
}
"#,
    )
    .await;
    let mut updated = gw
        .sse(r#"subscription { orderUpdated(id: "1") { id status } }"#)
        .await;
    let mut by_id = gw
        .sse(r#"subscription { orderById(id: "1") { id status } }"#)
        .await;
    let messages = [
        json!({"event": "order.created", "data": {"id": 1, "status": "pending"}}),
        json!({"event": "order.updated", "data": {"id": 2, "status": "pending"}}),
        json!({"event": "order.updated", "data": {"id": 1, "status": "shipped"}}),
    ];
    let (mut got_updated, mut got_by_id) = (String::new(), String::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    // The subscriptions' upstream socket opens when they start: say it all again until
    // both have heard the one message that is theirs.
    while !(got_updated.contains("SHIPPED") && got_by_id.contains("SHIPPED")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "updated: {got_updated}\nby id: {got_by_id}"
        );
        for m in &messages {
            let _ = say.send(m.to_string());
        }
        let wait = std::time::Duration::from_millis(200);
        read_for(&mut updated, wait, &mut got_updated).await;
        read_for(&mut by_id, wait, &mut got_by_id).await;
    }
    // `when` on the envelope: only `order.updated` of order 1.
    assert!(
        got_updated.contains(r#"{"orderUpdated":{"id":"1","status":"SHIPPED"}}"#),
        "{got_updated}"
    );
    assert!(!got_updated.contains("PENDING"), "{got_updated}");
    // `when` naming a member of the selected payload still works: order 1's messages.
    assert!(!got_by_id.contains(r#""id":"2""#), "{got_by_id}");
}

#[test]
fn every_kind_of_type_can_be_extended_from_another_file() {
    let base = r#"
extend schema @upstream(name: "shop", url: "http://127.0.0.1:1")
enum OrderStatus { PENDING @map(from: "pending") }
input OrderInput { quantity: Int! }
interface Node { id: ID! }
type Order implements Node { id: ID! status: OrderStatus }
union Found = Order
type Query { order(id: ID!): Order @rest(upstream: "shop", path: "/o/{args.id}") }
"#;
    let more = r#"
extend enum OrderStatus { SHIPPED @map(from: "shipped") }
extend input OrderInput { note: String @map(from: "customer_note") }
type Customer implements Node { id: ID! }
extend union Found @discriminate(field: "kind", map: {o: "Order", c: "Customer"}) = Customer
extend interface Node @discriminate(field: "kind", map: {o: "Order", c: "Customer"})
extend type Query {
  find(id: ID!): [Found] @rest(upstream: "shop", path: "/find/{args.id}")
}
type Mutation {
  createOrder(input: OrderInput!): Order
    @rest(upstream: "shop", method: POST, path: "/o", body: "{args.input}")
}
"#;
    let sources = vec![
        ("base.graphql".to_string(), base.to_string()),
        ("more.graphql".to_string(), more.to_string()),
    ];
    if let Err(errors) = livegate::plan::load_sources(&sources, Vec::<(String, String)>::new()) {
        panic!("{errors:?}");
    }
    // Kinds must agree; the error is at the extension, in its own file.
    let sources = vec![
        ("base.graphql".to_string(), base.to_string()),
        (
            "wrong.graphql".to_string(),
            "extend input Order { x: Int }\n".to_string(),
        ),
    ];
    let errors = match livegate::plan::load_sources(&sources, Vec::<(String, String)>::new()) {
        Ok(_) => panic!("an input extending an object type was accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    assert!(
        errors.contains(
            &"wrong.graphql:1:14: `extend input Order`: `Order` is declared as a type".to_string()
        ),
        "{errors:?}"
    );
}

/// Tags by id, for the list tests: `/v1/tags?ids=1,2` (joined) or `?ids=1&ids=2`
/// (repeated); an API that reads only the first value of a repeated parameter, like many.
fn tags() -> Router {
    Router::new().route(
        "/v1/tags",
        get(
            |axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                let q = q.unwrap_or_default();
                // The first `ids=` value only, split on commas.
                let first = q
                    .split('&')
                    .find_map(|p| p.strip_prefix("ids="))
                    .map(percent_decode);
                let ids: Vec<u32> = match &first {
                    Some(v) => v.split(',').filter_map(|i| i.parse().ok()).collect(),
                    None => (1..=5).collect(), // no parameter: "all"
                };
                Json(Value::Array(
                    ids.into_iter()
                        .map(|id| json!({"id": id, "name": format!("tag{id}")}))
                        .collect(),
                ))
            },
        ),
    )
}

fn percent_decode(v: &str) -> String {
    v.replace("%2C", ",").replace("%2c", ",")
}

#[tokio::test]
async fn lists_go_out_repeated_or_joined_and_an_empty_list_is_never_all() {
    let (up, gw) = serve(
        tags(),
        r#"
extend schema @upstream(name: "shop", url: "{up}")
type Tag { id: ID! name: String }
type Product { id: ID! tagId: Int tag: Tag @rest(upstream: "shop", path: "/v1/tags",
  query: {ids: "{parent.tagId}"}, batchKey: "id", join: {ids: ","}) }
type Query {
  tags(ids: [Int!]!): [Tag!]! @rest(upstream: "shop", path: "/v1/tags",
    query: {ids: "{args.ids}"}, join: {ids: ","})
  tagsRepeated(ids: [Int!]!): [Tag!]! @rest(upstream: "shop", path: "/v1/tags",
    query: {ids: "{args.ids}"})
  products: [Product!]! @rest(upstream: "shop", path: "/v1/products")
}
"#,
    )
    .await;
    let r = gw.query("{ tags(ids: [2, 3]) { id } }").await;
    assert_eq!(r["data"]["tags"], json!([{"id": "2"}, {"id": "3"}]), "{r}");
    let r = gw.query("{ tagsRepeated(ids: [2, 3]) { id } }").await;
    assert_eq!(r["data"]["tagsRepeated"], json!([{"id": "2"}]), "{r}");
    // An empty list: an empty value, not "all".
    let r = gw.query("{ tags(ids: []) { id } }").await;
    assert_eq!(r["data"]["tags"], json!([]), "{r}");
    let r = gw.query("{ tagsRepeated(ids: []) { id } }").await;
    assert_eq!(r["data"]["tagsRepeated"], json!([]), "{r}");
    let asked = up.requests();
    for want in [
        "GET /v1/tags?ids=2%2C3",
        "GET /v1/tags?ids=2&ids=3",
        "GET /v1/tags?ids=",
    ] {
        assert!(asked.iter().any(|r| r == want), "{want} not in {asked:?}");
    }
    assert!(!asked.iter().any(|r| r == "GET /v1/tags"), "{asked:?}");
}

#[tokio::test]
async fn a_batch_can_send_its_keys_joined() {
    let app = tags().route(
        "/v1/products",
        get(|| async {
            Json(json!([
                {"id": 1, "tagId": 1}, {"id": 2, "tagId": 2}, {"id": 3, "tagId": 4}
            ]))
        }),
    );
    let (up, gw) = serve(
        app,
        r#"
extend schema @upstream(name: "shop", url: "{up}")
type Tag { id: ID! name: String }
type Product { id: ID! tagId: Int tag: Tag @rest(upstream: "shop", path: "/v1/tags",
  query: {ids: "{parent.tagId}"}, batchKey: "id", join: {ids: ","}) }
type Query { products: [Product!]! @rest(upstream: "shop", path: "/v1/products") }
"#,
    )
    .await;
    let r = gw.query("{ products { id tag { name } } }").await;
    assert_eq!(
        r["data"]["products"],
        json!([
            {"id": "1", "tag": {"name": "tag1"}},
            {"id": "2", "tag": {"name": "tag2"}},
            {"id": "3", "tag": {"name": "tag4"}}
        ]),
        "{r}"
    );
    assert_eq!(
        up.count_matching("GET /v1/tags?ids=1%2C2%2C4"),
        1,
        "{:?}",
        up.requests()
    );
}

#[test]
fn a_list_in_a_path_and_a_join_of_nothing_are_refused() {
    let errors = check(
        r#"
extend schema @upstream(name: "shop", url: "http://127.0.0.1:1")
type Tag { id: ID! }
type Query {
  tags(ids: [Int!]!): [Tag] @rest(upstream: "shop", path: "/v1/tags/{args.ids}")
  more(ids: [Int!]!): [Tag] @rest(upstream: "shop", path: "/v1/tags", query: {id: "{args.ids}"},
    join: {ids: ","})
}
"#,
    );
    assert!(
        errors.contains("`{args.ids}` is a list, which cannot be one path segment"),
        "{errors}"
    );
    assert!(
        errors
            .contains("@rest(join: {ids: …}) names no query parameter of `Query.more`; known: id"),
        "{errors}"
    );
}

#[tokio::test]
async fn response_headers_and_link_relations_are_fields_of_the_returned_object() {
    let app = Router::new().route(
        "/v1/orders",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let page: u32 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let mut res = Json(json!({"data": [{"id": page * 10, "status": "pending"}]}))
                .into_response();
            let h = res.headers_mut();
            h.insert("x-total-count", "42".parse().expect("h"));
            h.insert("etag", "\"v7\"".parse().expect("h"));
            h.insert(
                "link",
                format!(
                    "<https://shop.example/v1/orders?page={}>; rel=\"next\", <https://shop.example/v1/orders?page=5>; rel=\"last\"",
                    page + 1
                )
                .parse()
                .expect("h"),
            );
            res
        }),
    );
    let (up, gw) = serve(
        app,
        r#"
extend schema @upstream(name: "shop", url: "{up}")
type Order { id: ID! }
type OrderPage {
  items: [Order!]! @map(from: "data")
  total: Int @map(header: "X-Total-Count")
  etag: String @map(header: "ETag")
  next: String @map(link: "next")
  last: String @map(link: "last")
  prev: String @map(link: "prev")
}
type Query {
  orders(page: Int = 1): OrderPage @rest(upstream: "shop", path: "/v1/orders",
    query: {page: "{args.page}"}) @cache(maxAge: 60)
}
"#,
    )
    .await;
    for _ in 0..2 {
        let r = gw
            .query("{ orders(page: 2) { items { id } total etag next last prev } }")
            .await;
        assert_eq!(
            r["data"]["orders"],
            json!({
                "items": [{"id": "20"}],
                "total": 42,
                "etag": "\"v7\"",
                "next": "https://shop.example/v1/orders?page=3",
                "last": "https://shop.example/v1/orders?page=5",
                "prev": null
            }),
            "{r}"
        );
    }
    // The headers are part of the cached value: the second answer came from the cache.
    assert_eq!(up.count_matching("GET /v1/orders"), 1);
}

#[test]
fn map_takes_one_of_from_header_and_link() {
    let errors = check(
        r#"
extend schema @upstream(name: "shop", url: "http://127.0.0.1:1")
type Page { a: Int @map(from: "a", header: "X-A") b: Int @map }
enum E { A @map(header: "X-A") }
type Query { p: Page @rest(upstream: "shop", path: "/p") e: E @rest(upstream: "shop", path: "/e") }
"#,
    );
    assert!(
        errors.contains("@map takes one of `from`, `header` and `link`"),
        "{errors}"
    );
    assert!(errors.contains("@map needs argument `from`"), "{errors}");
    assert!(
        errors.contains("@map on an enum value takes only `from:`"),
        "{errors}"
    );
}

#[tokio::test]
async fn an_id_marked_as_number_goes_out_as_a_json_number() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (_up, gw) = serve(
        shop(bodies.clone()),
        r#"
extend schema @upstream(name: "shop", url: "{up}")
type Order { id: ID! }
input Line { productId: ID! @map(from: "product_id", as: NUMBER) sku: ID }
type Query { ping: String @rest(upstream: "shop", path: "/ping") }
type Mutation {
  order(quantity: Int!, customerId: ID! @map(as: NUMBER), tagIds: [ID!] @map(as: NUMBER),
        line: Line): Order @rest(upstream: "shop", method: POST, path: "/v1/orders", body: "{args}")
}
"#,
    )
    .await;
    let r = gw
        .query(
            r#"mutation { order(quantity: 1, customerId: "2", tagIds: ["3", 4, "x5"],
                 line: {productId: 9, sku: "10"}) { id } }"#,
        )
        .await;
    assert_eq!(r["data"]["order"]["id"], "7", "{r}");
    assert_eq!(
        bodies.lock().expect("bodies")[0]["body"],
        json!({"quantity": 1, "customerId": 2, "tagIds": [3, 4, "x5"],
               "line": {"product_id": 9, "sku": "10"}})
    );
}

/// An upstream socket per user: a handshake with `Bearer alice` or `Bearer bob` is
/// accepted and hears only that user's messages (`{"owner": …}`); any other is refused
/// with 401. Every handshake's user is recorded.
fn per_user_socket(
    say: tokio::sync::broadcast::Sender<Value>,
    handshakes: Arc<Mutex<Vec<String>>>,
) -> axum::routing::MethodRouter {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    axum::routing::get(move |headers: HeaderMap, ws: WebSocketUpgrade| {
        let (say, handshakes) = (say.clone(), handshakes.clone());
        async move {
            let user = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_string();
            handshakes.lock().expect("lock").push(user.clone());
            if user != "alice" && user != "bob" {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            ws.on_upgrade(move |socket| async move {
                let (mut sink, mut stream) = socket.split();
                let mut heard = say.subscribe();
                loop {
                    tokio::select! {
                        said = heard.recv() => match said {
                            Ok(m) if m["owner"] == user.as_str() => {
                                if sink.send(Message::text(m.to_string())).await.is_err() { break }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        },
                        got = stream.next() => if !matches!(got, Some(Ok(_))) { break },
                    }
                }
            })
            .into_response()
        }
    })
}

/// Opens an SSE subscription with `authorization`.
async fn sse_as(gw: &Gateway, query: &str, authorization: &str) -> reqwest::Response {
    gw.client
        .post(gw.url())
        .header("accept", "text/event-stream")
        .header("authorization", authorization)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("SSE")
}

#[tokio::test]
async fn an_upstream_socket_with_forward_headers_is_opened_per_caller() {
    let (say, _) = tokio::sync::broadcast::channel::<Value>(256);
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/orders/ws",
            per_user_socket(say.clone(), handshakes.clone()),
        )
        .route(
            "/orders",
            get(|headers: HeaderMap| async move {
                let who = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Json(json!([{"id": 0, "note": who}]))
            }),
        );
    let (_up, gw) = serve(
        app,
        r#"
extend schema @upstream(name: "shop", url: "{up}", forwardHeaders: ["authorization"])
type Order { id: ID! note: String }
type Query {
  orders: [Order!]! @rest(upstream: "shop", path: "/orders")
    @cache(maxAge: 60, scope: PRIVATE)
    @updates(upstream: "shop", path: "/orders/ws", select: "order", apply: UPSERT, key: "id")
}
type Subscription {
  orderChanged: Order @stream(upstream: "shop", path: "/orders/ws", select: "order")
  orders: [Order!]! @live
}
"#,
    )
    .await;
    let stream = "subscription { orderChanged { id note } }";
    let live = "subscription { orders { id note } }";
    // Two of Alice's subscriptions share her socket; Bob has his own.
    let mut alice = sse_as(&gw, stream, "Bearer alice").await;
    let mut alice_live = sse_as(&gw, live, "Bearer alice").await;
    let mut bob = sse_as(&gw, stream, "Bearer bob").await;
    let mut bob_live = sse_as(&gw, live, "Bearer bob").await;
    let (mut a, mut al, mut b, mut bl) =
        (String::new(), String::new(), String::new(), String::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut n = 0;
    // Sockets open when the subscriptions start: say it again until each has heard.
    while !(a.contains("alice-")
        && al.contains("alice-")
        && b.contains("bob-")
        && bl.contains("bob-"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice: {a}\nalice live: {al}\nbob: {b}\nbob live: {bl}"
        );
        n += 1;
        for user in ["alice", "bob"] {
            let _ =
                say.send(json!({"owner": user, "order": {"id": n, "note": format!("{user}-{n}")}}));
        }
        let wait = std::time::Duration::from_millis(100);
        read_for(&mut alice, wait, &mut a).await;
        read_for(&mut alice_live, wait, &mut al).await;
        read_for(&mut bob, wait, &mut b).await;
        read_for(&mut bob_live, wait, &mut bl).await;
    }
    // Nobody hears the other's messages, nor reads the other's entry.
    for alices in [&a, &al] {
        assert!(!alices.contains("bob"), "{alices}");
    }
    for bobs in [&b, &bl] {
        assert!(!bobs.contains("alice"), "{bobs}");
    }
    assert!(
        al.contains("Bearer alice") && bl.contains("Bearer bob"),
        "{al}\n{bl}"
    );
    // One socket per caller, whatever reads it (an event stream, a live entry's feed).
    let opened = handshakes.lock().expect("lock").clone();
    assert_eq!(
        opened.iter().filter(|u| *u == "alice").count(),
        1,
        "{opened:?}"
    );
    assert_eq!(
        opened.iter().filter(|u| *u == "bob").count(),
        1,
        "{opened:?}"
    );

    // A caller the upstream refuses: the subscription ends with why, and the refused
    // handshake is not retried.
    for query in [stream, live] {
        let res = sse_as(&gw, query, "Bearer mallory").await;
        let body = tokio::time::timeout(std::time::Duration::from_secs(10), res.text())
            .await
            .expect("the subscription ends")
            .expect("body");
        assert!(body.contains(r#""code":"UNAUTHENTICATED""#), "{body}");
        assert!(body.contains(r#""status":401"#), "{body}");
        assert!(body.contains("event: complete"), "{body}");
    }
    let page = gw
        .metrics_until(|p| {
            common::sample(
                p,
                r#"livegate_upstream_socket_failures_total{reason="unauthorized",upstream="shop"}"#,
            ) >= 2.0
        })
        .await;
    let refused = handshakes
        .lock()
        .expect("lock")
        .iter()
        .filter(|u| *u == "mallory")
        .count();
    assert_eq!(
        refused, 2,
        "one handshake per subscription, no retry loop\n{page}"
    );
    // Alice's and Bob's subscriptions go on.
    let _ = say.send(json!({"owner": "alice", "order": {"id": 99, "note": "alice-after"}}));
    let mut more = String::new();
    while !more.contains("alice-after") {
        assert!(
            tokio::time::Instant::now() < deadline + std::time::Duration::from_secs(10),
            "{more}"
        );
        read_for(&mut alice, std::time::Duration::from_millis(200), &mut more).await;
    }
}

#[tokio::test]
async fn per_caller_sockets_are_bounded_by_a_flag() {
    let (say, _) = tokio::sync::broadcast::channel::<Value>(16);
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route(
        "/orders/ws",
        per_user_socket(say.clone(), handshakes.clone()),
    );
    let up = common::Upstream::start(app).await;
    let schema = r#"
extend schema @upstream(name: "shop", url: "{up}", forwardHeaders: ["authorization"])
type Order { id: ID! note: String }
type Query { ping: String @rest(upstream: "shop", path: "/ping") }
type Subscription { orderChanged: Order @stream(upstream: "shop", path: "/orders/ws", select: "order") }
"#
    .replace("{up}", &up.url());
    let gw = Gateway::start(
        &schema,
        livegate::Options {
            max_caller_sockets: 1,
            ..Default::default()
        },
    )
    .await;
    let query = "subscription { orderChanged { id note } }";
    let mut alice = sse_as(&gw, query, "Bearer alice").await;
    let mut heard = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !heard.contains("alice-1") {
        assert!(tokio::time::Instant::now() < deadline, "{heard}");
        let _ = say.send(json!({"owner": "alice", "order": {"id": 1, "note": "alice-1"}}));
        read_for(
            &mut alice,
            std::time::Duration::from_millis(100),
            &mut heard,
        )
        .await;
    }
    // Bob would need a second per-caller socket: refused, said why.
    let res = sse_as(&gw, query, "Bearer bob").await;
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), res.text())
        .await
        .expect("the subscription ends")
        .expect("body");
    assert!(body.contains("UPSTREAM_SOCKET_LIMIT"), "{body}");
    assert!(body.contains("--max-caller-sockets"), "{body}");
    assert!(!handshakes
        .lock()
        .expect("lock")
        .contains(&"bob".to_string()));
}
