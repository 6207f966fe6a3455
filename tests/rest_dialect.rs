//! The REST dialect against an upstream shaped like a real shop API: error bodies mapped
//! into GraphQL errors, 401/403 keeping their meaning, enum values and input members
//! renamed both ways, null optional values left out of requests.

mod common;

use axum::extract::{Json, Path, Query};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use common::serve;
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
            post(move |Json(body): Json<Value>| {
                let kept = kept.clone();
                async move {
                    kept.lock().expect("bodies").push(body.clone());
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
                        Json(json!({"id": 7, "status": "pending", "shipping_address": body["shipping_address"]})),
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
