//! Real REST API shapes (issue 10): `@rest(select:)` reads the field's value from inside a
//! wrapped answer — for a list, an object, a batch (selected first), and a live query;
//! `@map(from:)` reads a field from a member under another name or a nested path, and
//! `{parent.x}` templates read what field `x` reads.

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
        .route(
            "/people",
            get(|Query(q): Query<Vec<(String, String)>>| async move {
                let people: Vec<Value> = q
                    .iter()
                    .filter(|(k, _)| k == "id")
                    .map(|(_, id)| json!({"person_id": id, "handle": format!("@p{id}")}))
                    .collect();
                Json(json!({"people": people}))
            }),
        )
        .route("/empty", get(|| async { Json(json!({"meta": {}})) }))
        .route(
            "/issues",
            get(|| async {
                Json(json!([
                    {"issue_id": 1, "created_at": "2026-11-25", "owner": {"login": "ada", "user_id": "7"}},
                    {"issue_id": 2, "created_at": "2026-11-26", "owner": {"login": "bob", "user_id": "8"}}
                ]))
            }),
        )
        .route(
            "/broken-issues",
            get(|| async { Json(json!([{"created_at": "x", "owner": {"login": "z", "user_id": "9"}}])) }),
        )
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
  issues: [Issue!]! @rest(upstream: "api", path: "/issues") @cache(maxAge: 60)
  brokenIssues: [Issue!] @rest(upstream: "api", path: "/broken-issues")
}
type Issue {
  id: ID! @map(from: "issue_id")
  createdAt: String! @map(from: "created_at")
  ownerLogin: String @map(from: "owner.login")
  ownerId: ID @map(from: "owner.user_id")
  owner: Owner @rest(upstream: "api", path: "/owners", query: {id: "{parent.ownerId}"}, batchKey: "id", select: "results")
  person: Person @rest(upstream: "api", path: "/people", query: {id: "{parent.ownerId}"}, batchKey: "id", select: "people")
}
type Person { id: ID! @map(from: "person_id") handle: String! }
type Subscription { repos: [Repo!]! @live }
"#;

async fn setup() -> (Upstream, Gateway) {
    common::serve(api(), SCHEMA).await
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

#[tokio::test]
async fn map_reads_members_under_other_names_and_nested_paths() {
    let (up, gw) = setup().await;
    let r = gw
        .query("{ issues { id createdAt ownerLogin owner { id login } } }")
        .await;
    assert_eq!(
        r["data"]["issues"],
        json!([
            {"id": "1", "createdAt": "2026-11-25", "ownerLogin": "ada", "owner": {"id": "7", "login": "user7"}},
            {"id": "2", "createdAt": "2026-11-26", "ownerLogin": "bob", "owner": {"id": "8", "login": "user8"}}
        ]),
        "{r}"
    );
    assert!(
        up.requests()
            .iter()
            .any(|q| q.starts_with("GET /owners?id=7&id=8")),
        "{{parent.ownerId}} read owner.user_id: {:?}",
        up.requests()
    );
    // A batch answer is upstream-shaped: its items are matched on the member the key
    // field reads (`Person.id` reads `person_id`).
    let r = gw.query("{ issues { person { id handle } } }").await;
    assert_eq!(
        r["data"]["issues"],
        json!([{"person": {"id": "7", "handle": "@p7"}}, {"person": {"id": "8", "handle": "@p8"}}]),
        "{r}"
    );
    assert_eq!(up.count_matching("GET /people"), 1, "{:?}", up.requests());
    // A mapped non-null member that is missing fails the field, as an unmapped one would.
    let r = gw.query("{ brokenIssues { id } }").await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("UPSTREAM_BAD_RESPONSE"),
        "{r}"
    );
}

#[test]
fn map_mistakes_are_reported_with_their_position() {
    let schema = r#"extend schema @upstream(name: "api", url: "http://127.0.0.1:9")
type T { a: String @map(from: "x..y") b: String @map(from: "b") @rest(upstream: "api", path: "/b") }
type Query {
  t: T @rest(upstream: "api", path: "/t")
  q: String @rest(upstream: "api", path: "/q") @map(from: "other")
}"#;
    let errors = livegate::plan::load("schema.graphql", schema, Vec::<(String, String)>::new())
        .expect_err("refused");
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for (at, says) in [
        (
            "schema.graphql:2:",
            r#"@map(from: "x..y") must be a member name or a dotted path"#,
        ),
        (
            "schema.graphql:2:",
            "@map on `T.b`: a field with @rest reads its own upstream answer",
        ),
        ("schema.graphql:5:", "@map is for fields of object types"),
    ] {
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(at) && m.contains(says)),
            "{says}: {messages:?}"
        );
    }
}

/// Patches from `@updates` and events from `@stream` are upstream-shaped: they are read
/// through `@map` too, and an UPSERT `key` names the GraphQL field (matched on its member).
#[tokio::test]
async fn socket_patches_and_events_go_through_map() {
    let (say, _) = tokio::sync::broadcast::channel::<String>(16);
    let app = api().route("/ws", common::announcer(say.clone()));
    let up = Upstream::start(app).await;
    let schema = SCHEMA
        .replace(
            r#"issues: [Issue!]! @rest(upstream: "api", path: "/issues") @cache(maxAge: 60)"#,
            r#"issues: [Issue!]! @rest(upstream: "api", path: "/issues") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", apply: UPSERT, key: "id")"#,
        )
        .replace(
            "type Subscription { repos: [Repo!]! @live }",
            r#"type Subscription {
  repos: [Repo!]! @live
  issues: [Issue!]! @live
  issueEvents: Issue @stream(upstream: "api", path: "/ws")
}"#,
        )
        .replace("{up}", &up.url());
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    let mut live = gw.sse("subscription { issues { id createdAt } }").await;
    let mut events = gw
        .sse("subscription { issueEvents { id ownerLogin } }")
        .await;
    let first = live.chunk().await.expect("read").expect("first");
    assert!(String::from_utf8_lossy(&first).contains(r#"{"id":"1","createdAt":"2026-11-25"}"#));
    let message =
        json!({"issue_id": 1, "created_at": "edited", "owner": {"login": "eve", "user_id": "7"}});
    let mut got_event = String::new();
    let mut got_patch = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(got_patch.contains("edited") && got_event.contains("eve")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "patch: {got_patch}\nevent: {got_event}"
        );
        let _ = say.send(message.to_string());
        let wait = std::time::Duration::from_millis(200);
        if let Ok(Ok(Some(c))) = tokio::time::timeout(wait, live.chunk()).await {
            got_patch.push_str(&String::from_utf8_lossy(&c));
        }
        if let Ok(Ok(Some(c))) = tokio::time::timeout(wait, events.chunk()).await {
            got_event.push_str(&String::from_utf8_lossy(&c));
        }
    }
    assert!(
        got_patch
            .contains(r#"{"id":"1","createdAt":"edited"},{"id":"2","createdAt":"2026-11-26"}"#),
        "the item with issue_id 1 was upserted in place: {got_patch}"
    );
    assert!(
        got_event.contains(r#"{"id":"1","ownerLogin":"eve"}"#),
        "{got_event}"
    );
}
