//! Real REST API shapes (issue 10): `@rest(select:)` reads the field's value from inside a
//! wrapped answer — for a list, an object, a batch (selected first), and a live query.

mod common;

use axum::extract::{Path, Query};
use axum::routing::get;
use axum::{Json, Router};
use common::{error_code, Gateway, Upstream};
use serde_json::{json, Value};

fn api() -> Router {
    Router::new()
        .route(
            "/repos",
            get(|| async {
                Json(json!({
                    "data": {"items": [
                        {"id": "1", "name": "livegate", "ownerId": "7"},
                        {"id": "2", "name": "tailcall", "ownerId": "8"}
                    ]},
                    "meta": {"total": 2}
                }))
            }),
        )
        .route(
            "/repo/{id}",
            get(|Path(id): Path<String>| async move {
                Json(json!({"data": {"id": id, "name": format!("repo {id}"), "ownerId": "7"}}))
            }),
        )
        .route(
            "/owners",
            get(|Query(q): Query<Vec<(String, String)>>| async move {
                let ids: Vec<&String> = q
                    .iter()
                    .filter(|(k, _)| k == "id")
                    .map(|(_, v)| v)
                    .collect();
                let results: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"id": id, "login": format!("user{id}")}))
                    .collect();
                Json(json!({"results": results, "next": null}))
            }),
        )
        .route("/empty", get(|| async { Json(json!({"meta": {}})) }))
}

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Owner { id: ID! login: String! }
type Repo {
  id: ID!
  name: String!
  ownerId: ID
  owner: Owner @rest(upstream: "api", path: "/owners", query: {id: "{parent.ownerId}"}, batchKey: "id", select: "results")
}
type Query {
  repos: [Repo!]! @rest(upstream: "api", path: "/repos", select: "data.items") @cache(maxAge: 60)
  repo(id: ID!): Repo @rest(upstream: "api", path: "/repo/{args.id}", select: "data") @cache(maxAge: 60)
  broken: [Repo!] @rest(upstream: "api", path: "/empty", select: "data.items")
}
type Subscription { repos: [Repo!]! @live }
"#;

async fn setup() -> (Upstream, Gateway) {
    let up = Upstream::start(api()).await;
    let gw = Gateway::start(
        &SCHEMA.replace("{up}", &up.url()),
        livegate::Options::default(),
    )
    .await;
    (up, gw)
}

#[tokio::test]
async fn select_reads_the_value_inside_a_wrapped_answer() {
    let (up, gw) = setup().await;
    let r = gw.query("{ repos { name owner { login } } }").await;
    assert_eq!(
        r["data"],
        json!({"repos": [
            {"name": "livegate", "owner": {"login": "user7"}},
            {"name": "tailcall", "owner": {"login": "user8"}}
        ]}),
        "{r}"
    );
    assert_eq!(
        up.count_matching("GET /owners"),
        1,
        "the owners came in one batch"
    );
    let r = gw.query(r#"{ repo(id: "5") { id name } }"#).await;
    assert_eq!(
        r["data"]["repo"],
        json!({"id": "5", "name": "repo 5"}),
        "{r}"
    );

    // The path is missing from the answer: that field fails, the rest stands.
    let r = gw
        .query(r#"{ broken { name } repo(id: "1") { name } }"#)
        .await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("UPSTREAM_BAD_RESPONSE"),
        "{r}"
    );
    assert_eq!(r["errors"][0]["path"], json!(["broken"]));
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("data.items"),
        "{r}"
    );
    assert_eq!(r["data"]["repo"]["name"], "repo 1");
}

#[tokio::test]
async fn a_live_query_of_a_selected_field_gets_the_selected_value() {
    let (_up, gw) = setup().await;
    let mut res = gw
        .client
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&json!({"query": "subscription { repos { id } }"}))
        .send()
        .await
        .expect("SSE");
    let chunk = res.chunk().await.expect("read").expect("a result");
    let text = String::from_utf8_lossy(&chunk);
    assert!(
        text.contains(r#"{"data":{"repos":[{"id":"1"},{"id":"2"}]}}"#),
        "{text}"
    );
}

#[test]
fn a_select_that_is_not_a_path_is_reported_with_its_position() {
    let schema = r#"extend schema @upstream(name: "api", url: "http://127.0.0.1:9")
type Query {
  a: String @rest(upstream: "api", path: "/a", select: "data..items")
}"#;
    let errors = livegate::plan::load("schema.graphql", schema, Vec::<(String, String)>::new())
        .expect_err("refused");
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        messages.iter().any(|m| m.starts_with("schema.graphql:3:")
            && m.contains(
                r#"@rest(select: "data..items") must be a dotted path like "data.items""#
            )),
        "{messages:?}"
    );
}
