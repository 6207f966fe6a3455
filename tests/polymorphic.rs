//! Interfaces and unions (issue 10): `@discriminate` picks each upstream object's type,
//! through `map`, a dotted member path or the list form; fragments, `__typename`,
//! introspection, nested `@rest` fields of the concrete types (batched across types),
//! live queries patched by `@updates` and `@stream` events all see the concrete types;
//! an object whose discriminator is missing or unknown fails its field.

mod common;

use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use common::{error_code, Gateway, Upstream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::broadcast;

fn events() -> Value {
    json!({"data": [
        {"id": 1, "type": "push", "created_at": "t1", "actor": {"login": "ada", "user_id": "7"},
         "payload": {"ref": "main", "size": 3}},
        {"id": 2, "type": "issue", "created_at": "t2", "actor": {"login": "bob", "user_id": "8"},
         "payload": {"action": "opened", "issue": {"title": "It breaks"}}},
        {"id": 3, "type": "star", "created_at": "t3", "actor": {"login": "eve", "user_id": "9"}}
    ], "meta": {"next": null}})
}

/// An API shaped like the public event feeds: wrapped lists, `snake_case`, nested actors,
/// a `type` per item, a batch endpoint, and a socket announcing new events.
fn api(socket: broadcast::Sender<String>) -> Router {
    Router::new()
        .route("/events", get(|| async { Json(events()) }))
        .route(
            "/odd",
            get(|| async {
                Json(json!([
                    {"id": 1, "type": "push", "created_at": "t1", "actor": {"login": "ada", "user_id": "7"}, "payload": {"ref": "main", "size": 3}},
                    {"id": 5, "type": "fork", "created_at": "t5", "actor": {"login": "zed", "user_id": "6"}}
                ]))
            }),
        )
        .route(
            "/untyped",
            get(|| async {
                Json(json!([{"id": 6, "created_at": "t6", "actor": {"login": "x", "user_id": "1"}}]))
            }),
        )
        .route(
            "/search",
            get(|| async {
                Json(json!([
                    {"meta": {"kind": "repo-result"}, "name": "livegate"},
                    {"meta": {"kind": "user-result"}, "login": "ada"}
                ]))
            }),
        )
        .route(
            "/profiles",
            get(|Query(q): Query<Vec<(String, String)>>| async move {
                let found: Vec<Value> = q
                    .iter()
                    .filter(|(k, _)| k == "id")
                    .map(|(_, id)| json!({"id": id, "name": format!("Profile {id}")}))
                    .collect();
                Json(Value::Array(found))
            }),
        )
        .route("/ws", common::announcer(socket))
}

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")

"Something that happened in a repository."
interface Event @discriminate(field: "type", map: {push: "PushEvent", issue: "IssueEvent", star: "StarEvent"}) {
  id: ID!
  createdAt: String!
  actor: Actor!
}
type Actor { login: String! id: ID! @map(from: "user_id") }
type Profile { id: ID! name: String! }
type PushEvent implements Event {
  id: ID!
  createdAt: String! @map(from: "created_at")
  actor: Actor!
  branch: String! @map(from: "payload.ref")
  commits: Int! @map(from: "payload.size")
  author: Profile @rest(upstream: "api", path: "/profiles", query: {id: "{parent.actor.id}"}, batchKey: "id")
}
type IssueEvent implements Event {
  id: ID!
  createdAt: String! @map(from: "created_at")
  actor: Actor!
  action: String! @map(from: "payload.action")
  title: String @map(from: "payload.issue.title")
  author: Profile @rest(upstream: "api", path: "/profiles", query: {id: "{parent.actor.id}"}, batchKey: "id")
}
type StarEvent implements Event {
  id: ID!
  createdAt: String! @map(from: "created_at")
  actor: Actor!
}
union FeedItem @discriminate(field: "type", map: {push: "PushEvent", issue: "IssueEvent", star: "StarEvent"}) =
  PushEvent | IssueEvent | StarEvent

type RepoHit { name: String! }
type UserHit { login: String! }
union SearchHit @discriminate(field: "meta.kind", map: [
  {value: "repo-result", type: "RepoHit"}, {value: "user-result", type: "UserHit"}
]) = RepoHit | UserHit

type Query {
  events: [Event!]! @rest(upstream: "api", path: "/events", select: "data") @cache(maxAge: 60, tags: ["events"])
  feed: [FeedItem!]! @rest(upstream: "api", path: "/events", select: "data") @cache(maxAge: 60, tags: ["events"])
    @updates(upstream: "api", path: "/ws", apply: UPSERT, key: "id")
  odd: [FeedItem!] @rest(upstream: "api", path: "/odd")
  untyped: [Event] @rest(upstream: "api", path: "/untyped")
  search: [SearchHit!]! @rest(upstream: "api", path: "/search")
}
type Subscription {
  feed: [FeedItem!]! @live
  eventAdded: Event @stream(upstream: "api", path: "/ws")
}
"#;

async fn setup() -> (Upstream, Gateway, broadcast::Sender<String>) {
    let (say, _) = broadcast::channel::<String>(64);
    let up = Upstream::start(api(say.clone())).await;
    let gw = Gateway::start(
        &SCHEMA.replace("{up}", &up.url()),
        livegate::Options::default(),
    )
    .await;
    (up, gw, say)
}

#[tokio::test]
async fn a_union_resolves_each_item_to_its_type_through_fragments() {
    let (up, gw, _) = setup().await;
    let r = gw
        .query(
            "{ feed { __typename
                ... on PushEvent { id branch commits author { name } }
                ... on IssueEvent { id action title author { name } }
                ... on StarEvent { actor { login } } } }",
        )
        .await;
    assert_eq!(
        r,
        json!({"data": {"feed": [
            {"__typename": "PushEvent", "id": "1", "branch": "main", "commits": 3, "author": {"name": "Profile 7"}},
            {"__typename": "IssueEvent", "id": "2", "action": "opened", "title": "It breaks", "author": {"name": "Profile 8"}},
            {"__typename": "StarEvent", "actor": {"login": "eve"}}
        ]}}),
        "{r}"
    );
    assert_eq!(
        up.count_matching("GET /profiles"),
        1,
        "the authors of both types came in one batch: {:?}",
        up.requests()
    );
}

#[tokio::test]
async fn an_interface_serves_its_fields_and_fragments_on_its_types() {
    let (up, gw, _) = setup().await;
    let r = gw
        .query(
            "query { events { ...Common ... on PushEvent { branch } } }
             fragment Common on Event { __typename id createdAt actor { login } }",
        )
        .await;
    assert_eq!(
        r["data"]["events"],
        json!([
            {"__typename": "PushEvent", "id": "1", "createdAt": "t1", "actor": {"login": "ada"}, "branch": "main"},
            {"__typename": "IssueEvent", "id": "2", "createdAt": "t2", "actor": {"login": "bob"}},
            {"__typename": "StarEvent", "id": "3", "createdAt": "t3", "actor": {"login": "eve"}}
        ]),
        "{r}"
    );
    // `events` and `feed` read the same upstream request: one cache entry.
    gw.query("{ feed { __typename } }").await;
    assert_eq!(up.count_matching("GET /events"), 1, "{:?}", up.requests());
}

#[tokio::test]
async fn a_dotted_discriminator_and_the_list_form_of_map_work() {
    let (_up, gw, _) = setup().await;
    let r = gw
        .query("{ search { __typename ... on RepoHit { name } ... on UserHit { login } } }")
        .await;
    assert_eq!(
        r,
        json!({"data": {"search": [
            {"__typename": "RepoHit", "name": "livegate"},
            {"__typename": "UserHit", "login": "ada"}
        ]}}),
        "{r}"
    );
}

#[tokio::test]
async fn a_missing_or_unknown_discriminator_fails_the_field() {
    let (_up, gw, _) = setup().await;
    let r = gw.query("{ odd { __typename } }").await;
    assert_eq!(r["data"]["odd"], Value::Null, "{r}");
    assert_eq!(
        error_code(&r).as_deref(),
        Some("UPSTREAM_BAD_RESPONSE"),
        "{r}"
    );
    let message = r["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"`[1]` has `type` "fork", which names no type of `FeedItem` (known: issue, push, star)"#),
        "{message}"
    );
    // The error is at the object whose type is unknown; being non-null in its list, it
    // makes the nullable list null.
    assert_eq!(r["errors"][0]["path"], json!(["odd", 1]), "{r}");
    let r = gw.query("{ untyped { id } }").await;
    let message = r["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`[0]` has no `type`, which tells which `Event` it is"),
        "{r}"
    );
    // The other fields of the same request are unaffected.
    let r = gw
        .query("{ odd { __typename } search { __typename } }")
        .await;
    assert_eq!(r["data"]["search"][0]["__typename"], "RepoHit", "{r}");
}

#[tokio::test]
async fn introspection_shows_interfaces_unions_and_their_types() {
    let (_up, gw, _) = setup().await;
    let r = gw
        .query(
            r#"{
              feed: __type(name: "FeedItem") { kind possibleTypes { name } }
              event: __type(name: "Event") { kind description fields { name } possibleTypes { name } }
              push: __type(name: "PushEvent") { kind interfaces { name } }
            }"#,
        )
        .await;
    assert_eq!(r["data"]["feed"]["kind"], "UNION", "{r}");
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&r["data"]["feed"]["possibleTypes"]),
        ["IssueEvent", "PushEvent", "StarEvent"]
    );
    assert_eq!(r["data"]["event"]["kind"], "INTERFACE", "{r}");
    assert_eq!(
        r["data"]["event"]["description"],
        "Something that happened in a repository."
    );
    assert_eq!(
        names(&r["data"]["event"]["fields"]),
        ["actor", "createdAt", "id"]
    );
    assert_eq!(
        names(&r["data"]["event"]["possibleTypes"]),
        ["IssueEvent", "PushEvent", "StarEvent"]
    );
    assert_eq!(names(&r["data"]["push"]["interfaces"]), ["Event"]);
}

/// Sends `message` on the upstream socket every 200 ms (the gateway's socket to the
/// upstream opens when the first subscriber needs it) until `read` returns a frame
/// for which `done` holds; returns the frames read.
async fn until(
    say: &broadcast::Sender<String>,
    message: &Value,
    mut read: impl FnMut() -> futures_util::future::BoxFuture<'static, Option<String>>,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "{seen}");
        let _ = say.send(message.to_string());
        if let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(200), read()).await {
            seen.push_str(&frame);
            seen.push('\n');
            if done(&frame) {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn a_live_union_list_is_patched_by_upstream_messages_over_websocket() {
    let (_up, gw, say) = setup().await;
    let ws = common::websocket(gw.addr, "graphql-transport-ws").await;
    let (mut tx, rx) = ws.split();
    tx.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"id": "1", "type": "subscribe", "payload": {"query":
            "subscription { feed { __typename ... on PushEvent { id branch } ... on StarEvent { id } } }"}})
        .to_string(),
    ))
    .await
    .expect("send");
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let read = || {
        let rx = rx.clone();
        Box::pin(async move {
            let msg = rx.lock().await.next().await?.ok()?;
            msg.into_text().ok().map(|t| t.to_string())
        }) as futures_util::future::BoxFuture<'static, Option<String>>
    };
    let first = read().await.expect("first result");
    assert!(
        first.contains(r#"{"__typename":"PushEvent","id":"1","branch":"main"},{"__typename":"IssueEvent"},{"__typename":"StarEvent","id":"3"}"#),
        "{first}"
    );
    // A new push event, upstream-shaped, upserted by `id` and typed by its `type`.
    let pushed = json!({"id": 4, "type": "push", "created_at": "t4",
        "actor": {"login": "ada", "user_id": "7"}, "payload": {"ref": "dev", "size": 1}});
    let seen = until(&say, &pushed, read, |f| f.contains(r#""id":"4""#)).await;
    assert!(
        seen.contains(r#"{"__typename":"StarEvent","id":"3"},{"__typename":"PushEvent","id":"4","branch":"dev"}"#),
        "{seen}"
    );
}

#[tokio::test]
async fn stream_events_of_an_interface_type_carry_their_concrete_type_over_sse() {
    let (_up, gw, say) = setup().await;
    let res = gw
        .client
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&json!({"query": "subscription { eventAdded { __typename id ... on IssueEvent { title } } }"}))
        .send()
        .await
        .expect("SSE");
    let body = std::sync::Arc::new(tokio::sync::Mutex::new(res));
    let read = || {
        let body = body.clone();
        Box::pin(async move {
            let chunk = body.lock().await.chunk().await.ok()??;
            Some(String::from_utf8_lossy(&chunk).to_string())
        }) as futures_util::future::BoxFuture<'static, Option<String>>
    };
    // An event whose type names no `Event` is skipped; the next one arrives.
    let _ = say.send(json!({"id": 8, "type": "fork", "created_at": "t8", "actor": {"login": "z", "user_id": "1"}}).to_string());
    let issue = json!({"id": 9, "type": "issue", "created_at": "t9",
        "actor": {"login": "bob", "user_id": "8"}, "payload": {"action": "closed", "issue": {"title": "Fixed"}}});
    let seen = until(&say, &issue, read, |f| f.contains("IssueEvent")).await;
    assert!(
        seen.contains(
            r#"{"data":{"eventAdded":{"__typename":"IssueEvent","id":"9","title":"Fixed"}}}"#
        ),
        "{seen}"
    );
    assert!(!seen.contains(r#""id":"8""#), "{seen}");
}
