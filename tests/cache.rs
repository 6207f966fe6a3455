//! The shared cache, observed from outside: a real upstream counts what the gateway
//! asks of it.

mod common;

use axum::extract::{Path, Query};
use axum::routing::get;
use axum::{Json, Router};
use common::{error_code, Gateway, Upstream};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Chat + users in one upstream: 6 messages by 3 distinct users on "general".
fn upstream_app() -> Router {
    let posted = Arc::new(AtomicUsize::new(0));
    let posted2 = posted.clone();
    let renamed = Arc::new(AtomicUsize::new(0));
    Router::new()
        .route(
            "/messages/{channel}",
            get(move |Path(channel): Path<String>| {
                let extra = posted.load(Ordering::SeqCst);
                async move {
                    // Slow enough that concurrent queries overlap in flight.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let mut list: Vec<Value> = (1..=6)
                        .map(|i| json!({"id": i.to_string(), "channel": channel, "userId": (i % 3 + 1).to_string(), "text": format!("m{i}")}))
                        .collect();
                    for i in 0..extra {
                        list.push(json!({"id": format!("new{i}"), "channel": channel, "userId": "1", "text": "posted"}));
                    }
                    Json(Value::Array(list))
                }
            })
            .post(move |Path(channel): Path<String>, Json(body): Json<Value>| {
                posted2.fetch_add(1, Ordering::SeqCst);
                async move { Json(json!({"id": "new", "channel": channel, "userId": "1", "text": body["text"]})) }
            }),
        )
        .route(
            "/users/{id}",
            get({
                let renamed = renamed.clone();
                move |Path(id): Path<String>| {
                    let suffix = if renamed.load(Ordering::SeqCst) > 0 && id == "1" { " (renamed)" } else { "" };
                    async move { Json(json!({"id": id, "name": format!("user {id}{suffix}")})) }
                }
            })
            .post(move |Path(id): Path<String>| {
                renamed.fetch_add(1, Ordering::SeqCst);
                async move { Json(json!({"id": id, "name": format!("user {id} (renamed)")})) }
            }),
        )
        .route(
            "/users",
            get(|Query(q): Query<Vec<(String, String)>>| async move {
                Json(Value::Array(q.iter().filter(|(k, _)| k == "id").map(|(_, id)| json!({"id": id, "name": format!("user {id}")})).collect()))
            }),
        )
        .route(
            "/me",
            get(|headers: axum::http::HeaderMap| async move {
                let who = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_string();
                Json(json!({"id": who, "name": who}))
            }),
        )
}

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}", forwardHeaders: ["authorization"])
type User { id: ID! name: String! }
type Message {
  id: ID!
  channel: String!
  userId: ID!
  text: String!
  author: User @rest(upstream: "api", path: "/users/{parent.userId}") @cache(maxAge: 60, tags: ["User:{parent.userId}"])
  authorBatched: User @rest(upstream: "api", path: "/users", query: {id: "{parent.userId}"}, batchKey: "id") @cache(maxAge: 60)
}
type Query {
  messages(channel: String!): [Message!]! @rest(upstream: "api", path: "/messages/{args.channel}") @cache(maxAge: 60, tags: ["messages:{args.channel}"])
  uncached(channel: String!): [Message!]! @rest(upstream: "api", path: "/messages/{args.channel}")
  user(id: ID!): User @rest(upstream: "api", path: "/users/{args.id}") @cache(maxAge: 60)
  me: User @rest(upstream: "api", path: "/me") @cache(maxAge: 60, scope: PRIVATE)
}
type Mutation {
  sendMessage(channel: String!, text: String!): Message
    @rest(upstream: "api", method: POST, path: "/messages/{args.channel}", body: {text: "{args.text}"})
    @invalidates(tags: ["messages:{args.channel}"])
  renameUser(id: ID!): User
    @rest(upstream: "api", method: POST, path: "/users/{args.id}")
    @invalidates(tags: ["User:{args.id}"])
}
"#;

async fn setup() -> (Upstream, Gateway) {
    let up = Upstream::start(upstream_app()).await;
    let gw = Gateway::start(
        &SCHEMA.replace("{up}", &up.url()),
        livegate::Options::default(),
    )
    .await;
    (up, gw)
}

#[tokio::test]
async fn fifty_concurrent_identical_queries_make_one_upstream_request() {
    let (up, gw) = setup().await;
    let q = r#"{ messages(channel: "general") { id text } }"#;
    let results = futures_util::future::join_all((0..50).map(|_| gw.query(q))).await;
    assert_eq!(
        up.count_matching("GET /messages/general"),
        1,
        "{:?}",
        up.requests()
    );
    for r in &results {
        assert_eq!(
            r["data"]["messages"].as_array().map(Vec::len),
            Some(6),
            "{r}"
        );
    }
    // And a later query is a hit: still one request.
    gw.query(q).await;
    assert_eq!(up.count_matching("GET /messages/general"), 1);
}

#[tokio::test]
async fn uncached_fields_still_coalesce_concurrent_misses() {
    let (up, gw) = setup().await;
    let q = r#"{ uncached(channel: "general") { id } }"#;
    futures_util::future::join_all((0..50).map(|_| gw.query(q))).await;
    assert_eq!(up.count_matching("GET /messages/general"), 1);
    // Nothing was stored: the next query goes upstream again.
    gw.query(q).await;
    assert_eq!(up.count_matching("GET /messages/general"), 2);
}

#[tokio::test]
async fn different_arguments_are_different_entries() {
    let (up, gw) = setup().await;
    gw.query(r#"{ a: messages(channel: "a") { id } b: messages(channel: "b") { id } }"#)
        .await;
    assert_eq!(up.count_matching("GET /messages/a"), 1);
    assert_eq!(up.count_matching("GET /messages/b"), 1);
}

#[tokio::test]
async fn a_mutation_invalidates_its_tags_and_the_next_query_refetches() {
    let (up, gw) = setup().await;
    let q = r#"{ messages(channel: "general") { id text } }"#;
    let before = gw.query(q).await;
    assert_eq!(before["data"]["messages"].as_array().map(Vec::len), Some(6));
    // Another channel's entry must survive the invalidation.
    gw.query(r#"{ messages(channel: "other") { id } }"#).await;

    let sent = gw
        .query(r#"mutation { sendMessage(channel: "general", text: "hi") { id text } }"#)
        .await;
    assert_eq!(sent["data"]["sendMessage"]["text"], "hi", "{sent}");
    assert_eq!(up.count_matching("POST /messages/general"), 1);

    let after = gw.query(q).await;
    assert_eq!(
        after["data"]["messages"].as_array().map(Vec::len),
        Some(7),
        "{after}"
    );
    assert_eq!(up.count_matching("GET /messages/general"), 2);
    gw.query(r#"{ messages(channel: "other") { id } }"#).await;
    assert_eq!(
        up.count_matching("GET /messages/other"),
        1,
        "untagged entry kept"
    );
}

#[tokio::test]
async fn identical_mutations_are_never_coalesced() {
    let (up, gw) = setup().await;
    let m = r#"mutation { sendMessage(channel: "general", text: "twice") { id } }"#;
    futures_util::future::join(gw.query(m), gw.query(m)).await;
    assert_eq!(up.count_matching("POST /messages/general"), 2);
}

#[tokio::test]
async fn nested_fields_fetch_each_distinct_key_once() {
    let (up, gw) = setup().await;
    let r = gw
        .query(r#"{ messages(channel: "general") { id author { name } } }"#)
        .await;
    let names: Vec<&str> = r["data"]["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["author"]["name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        names,
        ["user 2", "user 3", "user 1", "user 2", "user 3", "user 1"]
    );
    assert_eq!(up.count_matching("GET /users/"), 3, "{:?}", up.requests());
    // All cached now.
    gw.query(r#"{ messages(channel: "general") { id author { name } } }"#)
        .await;
    assert_eq!(up.count_matching("GET /users/"), 3);
}

#[tokio::test]
async fn batched_nested_fields_make_one_request_and_cache_each_item() {
    let (up, gw) = setup().await;
    let r = gw
        .query(r#"{ messages(channel: "general") { id authorBatched { id name } } }"#)
        .await;
    let ids: Vec<&str> = r["data"]["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["authorBatched"]["id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(ids, ["2", "3", "1", "2", "3", "1"], "{r}");
    let batches: Vec<String> = up
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /users?"))
        .collect();
    assert_eq!(batches, ["GET /users?id=1&id=2&id=3"]);
    gw.query(r#"{ messages(channel: "general") { authorBatched { name } } }"#)
        .await;
    assert_eq!(up.count_matching("GET /users"), 1, "items were cached");
}

#[tokio::test]
async fn private_entries_are_never_served_to_another_caller() {
    let (up, gw) = setup().await;
    let q = "{ me { name } }";
    let alice = gw
        .query_with(q, json!({}), &[("authorization", "Bearer alice")])
        .await;
    let bob = gw
        .query_with(q, json!({}), &[("authorization", "Bearer bob")])
        .await;
    assert_eq!(alice["data"]["me"]["name"], "Bearer alice");
    assert_eq!(bob["data"]["me"]["name"], "Bearer bob");
    assert_eq!(up.count_matching("GET /me"), 2);
    // Alice again: her own entry.
    let again = gw
        .query_with(q, json!({}), &[("authorization", "Bearer alice")])
        .await;
    assert_eq!(again["data"]["me"]["name"], "Bearer alice");
    assert_eq!(up.count_matching("GET /me"), 2);
    // No credentials: not cached, not shared.
    let anon = gw.query(q).await;
    assert_eq!(anon["data"]["me"]["name"], "nobody");
    gw.query(q).await;
    assert_eq!(up.count_matching("GET /me"), 4);
}

#[tokio::test]
async fn path_arguments_cannot_escape_their_segment() {
    let (up, gw) = setup().await;
    let r = gw.query(r#"{ user(id: "a/../../me") { name } }"#).await;
    assert_eq!(r["data"]["user"]["name"], "user a/../../me", "{r}");
    assert_eq!(up.requests(), ["GET /users/a%2F..%2F..%2Fme"]);
    let r = gw.query(r#"{ user(id: "..") { name } }"#).await;
    assert_eq!(r["data"]["user"], Value::Null);
    assert_eq!(error_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    assert_eq!(up.count(), 1, "a dot segment is never sent");
}

#[tokio::test]
async fn a_repeated_query_is_answered_again_only_while_every_entry_behind_it_is_current() {
    let (up, gw) = setup().await;
    let q = r#"{ messages(channel: "general") { id author { name } } }"#;
    let first = gw.query(q).await;
    let second = gw.query(q).await;
    assert_eq!(first, second);
    assert_eq!(
        (
            up.count_matching("GET /messages/"),
            up.count_matching("GET /users/")
        ),
        (1, 3)
    );
    // Invalidate one nested entry only: the whole answer must be rebuilt with the change.
    gw.query(r#"mutation { renameUser(id: "1") { name } }"#)
        .await;
    let third = gw.query(q).await;
    let names: Vec<&str> = third["data"]["messages"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["author"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "user 2",
            "user 3",
            "user 1 (renamed)",
            "user 2",
            "user 3",
            "user 1 (renamed)"
        ]
    );
    assert_eq!(
        (
            up.count_matching("GET /messages/"),
            up.count_matching("GET /users/")
        ),
        (1, 4),
        "only the invalidated user was refetched"
    );
}

/// An upstream answer marked `Cache-Control: private` or `no-store` is never stored for
/// anyone, whatever `@cache` says (RFC 9111): each caller gets a fresh answer. A normal
/// answer from the same upstream is cached, as the control.
#[tokio::test]
async fn answers_the_upstream_marks_private_or_no_store_are_never_cached() {
    use axum::http::header::{HeaderMap, CACHE_CONTROL};
    let n = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/who/{mark}",
        get(move |Path(mark): Path<String>| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut headers = HeaderMap::new();
                let value = match mark.as_str() {
                    "private" => "private, max-age=600",
                    "nostore" => "no-store",
                    _ => "public, max-age=600",
                };
                headers.insert(CACHE_CONTROL, value.parse().expect("header"));
                (headers, Json(json!({"call": i})))
            }
        }),
    );
    let up = Upstream::start(app).await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
type Who {{ call: Int! }}
type Query {{ who(mark: String!): Who @rest(upstream: "api", path: "/who/{{args.mark}}") @cache(maxAge: 600) }}"#,
        up.url()
    );
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    for mark in ["private", "nostore", "public"] {
        let q = format!(r#"{{ who(mark: "{mark}") {{ call }} }}"#);
        let first = gw.query(&q).await;
        let second = gw.query(&q).await;
        let path = format!("GET /who/{mark}");
        if mark == "public" {
            assert_eq!(first, second, "a public answer is cached");
            assert_eq!(up.count_matching(&path), 1);
        } else {
            assert_ne!(
                first, second,
                "a {mark} answer is never served to another request"
            );
            assert_eq!(up.count_matching(&path), 2, "{mark}");
        }
    }
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(
            &page,
            "livegate_upstream_uncacheable_total{upstream=\"api\"}"
        ),
        4.0,
        "{page}"
    );
}

/// Polling an unchanged entry that has an ETag: after the first answer the upstream
/// answers `304` to every poll, and subscribers get exactly one result; a change gets
/// one more.
#[tokio::test]
async fn polls_revalidate_with_the_etag_and_a_304_wakes_nobody() {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let version = Arc::new(AtomicUsize::new(1));
    let (full, not_modified) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (v, f, nm) = (version.clone(), full.clone(), not_modified.clone());
    let app = Router::new().route(
        "/doc",
        get(move |headers: HeaderMap| {
            let current = format!("\"v{}\"", v.load(Ordering::SeqCst));
            let (f, nm) = (f.clone(), nm.clone());
            async move {
                let asked = headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|h| h.to_str().ok());
                if asked == Some(current.as_str()) {
                    nm.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::NOT_MODIFIED, [(header::ETAG, current)]).into_response();
                }
                f.fetch_add(1, Ordering::SeqCst);
                (
                    [(header::ETAG, current.clone())],
                    Json(json!({"etag": current})),
                )
                    .into_response()
            }
        }),
    );
    let up = Upstream::start(app).await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
type Doc {{ etag: String! }}
type Query {{ doc: Doc @rest(upstream: "api", path: "/doc") @cache(maxAge: 600) }}
type Subscription {{ doc: Doc @live(pollMs: 30) }}"#,
        up.url()
    );
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let res = gw
            .client
            .post(gw.url())
            .header("accept", "text/event-stream")
            .json(&json!({"query": "subscription { doc { etag } }"}))
            .send()
            .await
            .expect("SSE");
        streams.push(res);
    }
    async fn next_event(
        res: &mut reqwest::Response,
        within: std::time::Duration,
    ) -> Option<String> {
        let mut got = String::new();
        loop {
            match tokio::time::timeout(within, res.chunk()).await {
                Ok(Ok(Some(c))) => {
                    got.push_str(&String::from_utf8_lossy(&c));
                    if got.contains("event: next") && got.ends_with("\n\n") {
                        return Some(got);
                    }
                }
                _ => return None,
            }
        }
    }
    for s in &mut streams {
        let first = next_event(s, std::time::Duration::from_secs(5))
            .await
            .expect("a first result");
        assert!(first.contains("v1"), "{first}");
    }
    // Several poll intervals: only 304s, and nothing pushed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while not_modified.load(Ordering::SeqCst) < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no conditional polls"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(full.load(Ordering::SeqCst), 1, "one full answer, then 304s");
    for s in &mut streams {
        assert!(
            next_event(s, std::time::Duration::from_millis(200))
                .await
                .is_none(),
            "a 304 pushed something"
        );
    }
    // A change: one full answer, one more result each.
    version.store(2, Ordering::SeqCst);
    for s in &mut streams {
        let next = next_event(s, std::time::Duration::from_secs(5))
            .await
            .expect("the change");
        assert!(next.contains("v2"), "{next}");
    }
    assert_eq!(full.load(Ordering::SeqCst), 2);
}

/// A stale-while-revalidate refresh of a value with an ETag is conditional: a `304`
/// renews the entry (fresh again, no body read) instead of fetching it anew.
#[tokio::test]
async fn stale_while_revalidate_refreshes_revalidate_with_the_etag() {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let (full, not_modified) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (f, nm) = (full.clone(), not_modified.clone());
    let app = Router::new().route(
        "/doc",
        get(move |headers: HeaderMap| {
            let (f, nm) = (f.clone(), nm.clone());
            async move {
                if headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|h| h.to_str().ok())
                    == Some("\"v1\"")
                {
                    nm.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"v1\"")]).into_response();
                }
                f.fetch_add(1, Ordering::SeqCst);
                ([(header::ETAG, "\"v1\"")], Json(json!({"etag": "v1"}))).into_response()
            }
        }),
    );
    let up = Upstream::start(app).await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
type Doc {{ etag: String! }}
type Query {{ doc: Doc @rest(upstream: "api", path: "/doc") @cache(maxAge: 1, swr: 60) }}"#,
        up.url()
    );
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    let first = gw.query("{ doc { etag } }").await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // Stale: served at once, refreshed behind it.
    assert_eq!(gw.query("{ doc { etag } }").await, first);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while not_modified.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no conditional refresh"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Renewed: fresh again, so the next query asks the upstream nothing.
    assert_eq!(gw.query("{ doc { etag } }").await, first);
    assert_eq!(full.load(Ordering::SeqCst), 1, "one full answer");
    assert_eq!(
        not_modified.load(Ordering::SeqCst),
        1,
        "one 304, then a hit"
    );
    assert_eq!(up.count(), 2);
}
