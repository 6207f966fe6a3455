//! Persisted documents (APQ and a trusted manifest with `--persisted-only`) on every
//! transport, APQ shared by replicas through Redis, and batched requests (issue 13).

mod common;

use common::{sample, Gateway, Upstream};
use futures_util::SinkExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type User { id: ID! name: String! }
type Query {
  user(id: ID!): User @rest(upstream: "api", path: "/users/{args.id}") @cache(maxAge: 60)
}
type Subscription { user(id: ID!): User @live }
"#;

fn api() -> axum::Router {
    use axum::extract::Path;
    axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(|Path(id): Path<String>| async move {
            axum::Json(json!({"id": id, "name": format!("User {id}")}))
        }),
    )
}

async fn gateway(options: livegate::Options) -> (Upstream, Gateway) {
    let up = Upstream::start(api()).await;
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    (up, gw)
}

fn hash(query: &str) -> String {
    hex::encode(Sha256::digest(query.as_bytes()))
}

fn pq(query: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash(query)}})
}

async fn post(gw: &Gateway, body: Value) -> (u16, Value) {
    let res = gw
        .client
        .post(gw.url())
        .header("accept", "application/graphql-response+json")
        .json(&body)
        .send()
        .await
        .expect("answers");
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON"))
}

/// A graphql-transport-ws socket, acknowledged.
async fn socket(gw: &Gateway) -> common::Ws {
    common::websocket(gw.addr, "graphql-transport-ws").await
}

async fn next(ws: &mut common::Ws) -> Value {
    common::next_json(ws).await
}

const QUERY: &str = r#"{ user(id: "1") { name } }"#;

#[tokio::test]
async fn apq_over_post_get_and_websocket() {
    let (_up, gw) = gateway(Default::default()).await;
    // Unknown: 200 with PERSISTED_QUERY_NOT_FOUND, so that the client sends the text.
    let (status, body) = post(&gw, json!({"extensions": pq(QUERY)})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    // A text that does not have the hash is refused, and registers nothing.
    let (status, body) = post(
        &gw,
        json!({"query": "{ user(id: \"2\") { name } }", "extensions": pq(QUERY)}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "provided sha does not match query"
    );
    // Registered with its text; then the hash alone runs it, over POST, GET and WebSocket.
    let (status, body) = post(&gw, json!({"query": QUERY, "extensions": pq(QUERY)})).await;
    assert_eq!(
        (status, &body["data"]),
        (200, &json!({"user": {"name": "User 1"}})),
        "{body}"
    );
    let (_, body) = post(&gw, json!({"extensions": pq(QUERY)})).await;
    assert_eq!(body["data"], json!({"user": {"name": "User 1"}}), "{body}");
    let extensions = pq(QUERY).to_string();
    let got: Value = gw
        .client
        .get(gw.url())
        .query(&[("extensions", extensions.as_str())])
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(got["data"], json!({"user": {"name": "User 1"}}), "{got}");
    let mut ws = socket(&gw).await;
    let sub = json!({"id": "a", "type": "subscribe", "payload": {"extensions": pq(QUERY)}});
    ws.send(Message::text(sub.to_string())).await.expect("send");
    assert_eq!(
        next(&mut ws).await,
        json!({"id": "a", "type": "next", "payload": {"data": {"user": {"name": "User 1"}}}})
    );
    assert_eq!(next(&mut ws).await, json!({"id": "a", "type": "complete"}));
    // An unknown hash over WebSocket is the operation's error; the socket lives on.
    let unknown =
        json!({"id": "b", "type": "subscribe", "payload": {"extensions": pq("{ nope }")}});
    ws.send(Message::text(unknown.to_string()))
        .await
        .expect("send");
    let err = next(&mut ws).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(
        err["payload"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{err}"
    );
    let page = gw.metrics().await;
    assert_eq!(
        sample(
            &page,
            r#"livegate_persisted_documents_total{result="registered"}"#
        ),
        1.0
    );
    assert!(sample(&page, r#"livegate_persisted_documents_total{result="hit"}"#) >= 3.0);
}

#[tokio::test]
async fn persisted_only_runs_the_manifest_and_nothing_else_on_every_transport() {
    let live = r#"subscription Live { user(id: "2") { name } }"#;
    let manifest =
        std::env::temp_dir().join(format!("livegate-trusted-{}.json", std::process::id()));
    std::fs::write(
        &manifest,
        json!({"format": "apollo-persisted-query-manifest", "version": 1, "operations": [
            {"id": "q1", "body": QUERY, "name": "Q", "type": "query"},
            {"id": hash(live), "body": live, "name": "Live", "type": "subscription"}
        ]})
        .to_string(),
    )
    .expect("manifest");
    let options = livegate::Options {
        persisted: livegate::server::persisted::Options {
            manifest: Some(manifest.clone()),
            only: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let (_up, gw) = gateway(options).await;
    // By id, by hash, and by a text that is in the manifest: runs.
    let (_, body) = post(&gw, json!({"documentId": "q1"})).await;
    assert_eq!(body["data"], json!({"user": {"name": "User 1"}}), "{body}");
    let (_, body) = post(&gw, json!({"query": QUERY})).await;
    assert_eq!(body["data"], json!({"user": {"name": "User 1"}}), "{body}");
    // Anything else: refused, over HTTP, SSE, WebSocket and in a batch.
    let other = r#"{ user(id: "3") { name } }"#;
    let (status, body) = post(&gw, json!({"query": other})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_IN_LIST"
    );
    let (_, body) = post(&gw, json!({"query": other, "extensions": pq(other)})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_IN_LIST",
        "APQ registers nothing"
    );
    let sse = gw
        .client
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&json!({"query": "subscription { user(id: \"3\") { name } }"}))
        .send()
        .await
        .expect("SSE")
        .text()
        .await
        .expect("text");
    assert!(sse.contains("PERSISTED_QUERY_NOT_IN_LIST"), "{sse}");
    let (_, batch) = post(&gw, json!([{"documentId": "q1"}, {"query": other}])).await;
    assert_eq!(
        batch[0]["data"],
        json!({"user": {"name": "User 1"}}),
        "{batch}"
    );
    assert_eq!(
        batch[1]["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_IN_LIST",
        "{batch}"
    );
    let mut ws = socket(&gw).await;
    let refused = json!({"id": "x", "type": "subscribe", "payload": {"query": "subscription { user(id: \"3\") { name } }"}});
    ws.send(Message::text(refused.to_string()))
        .await
        .expect("send");
    let err = next(&mut ws).await;
    assert_eq!(
        err["payload"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_IN_LIST",
        "{err}"
    );
    // The trusted live query, by its hash, over the same socket.
    let ok = json!({"id": "y", "type": "subscribe", "payload": {"extensions": pq(live)}});
    ws.send(Message::text(ok.to_string())).await.expect("send");
    assert_eq!(
        next(&mut ws).await,
        json!({"id": "y", "type": "next", "payload": {"data": {"user": {"name": "User 2"}}}})
    );
    let _ = std::fs::remove_file(&manifest);
}

#[tokio::test]
async fn a_bad_manifest_is_a_startup_error_that_says_where() {
    let manifest = std::env::temp_dir().join(format!("livegate-bad-{}.json", std::process::id()));
    std::fs::write(
        &manifest,
        r#"{"format":"apollo-persisted-query-manifest","operations":[{"id":"q"}]}"#,
    )
    .expect("write");
    let plan = livegate::plan::load(
        "schema.graphql",
        &SCHEMA.replace("{up}", "http://127.0.0.1:9"),
        Vec::<(String, String)>::new(),
    )
    .expect("plan");
    let options = livegate::Options {
        persisted: livegate::server::persisted::Options {
            manifest: Some(manifest.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = livegate::state(plan, &options)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("operations[0] needs a string `id` and `body`"),
        "{err}"
    );
    assert!(err.contains(&manifest.display().to_string()), "{err}");
    let _ = std::fs::remove_file(&manifest);
}

#[tokio::test]
async fn a_batch_is_answered_in_order_within_its_limit() {
    let options = livegate::Options {
        max_batch: 3,
        ..Default::default()
    };
    let (up, gw) = gateway(options).await;
    let (status, body) = post(
        &gw,
        json!([
            {"query": "{ user(id: \"1\") { name } }"},
            {"query": "{ user(id: \"2\") { nope } }"},
            {"query": "subscription { user(id: \"1\") { name } }"}
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body[0]["data"],
        json!({"user": {"name": "User 1"}}),
        "{body}"
    );
    assert!(
        body[1]["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope")),
        "{body}"
    );
    assert!(
        body[2]["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("subscriptions need")),
        "{body}"
    );
    assert_eq!(up.count_matching("GET /users/1"), 1, "{:?}", up.requests());
    let four = json!([{"query": "{ __typename }"}, {"query": "{ __typename }"}, {"query": "{ __typename }"}, {"query": "{ __typename }"}]);
    let (status, body) = post(&gw, four).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 3 (--max-batch-size)")),
        "{body}"
    );
    let (status, _) = post(&gw, json!([])).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn apq_documents_are_shared_by_replicas_through_redis() {
    // On one Redis, and on a Redis Cluster (each document in its own slot).
    for cluster in [false, true] {
        let redis = common::redis::Redis::start(cluster);
        let options = || livegate::Options {
            redis: Some(livegate::bus::redis::RedisOptions {
                url: redis.url(),
                cluster,
                prefix: "apq-test:".into(),
                timeout: Duration::from_millis(500),
                fill_wait: Duration::from_secs(5),
                lease: Duration::from_secs(1),
            }),
            ..Default::default()
        };
        let up = Upstream::start(api()).await;
        let schema = SCHEMA.replace("{up}", &up.url());
        let a = Gateway::start(&schema, options()).await;
        let b = Gateway::start(&schema, options()).await;
        let (_, body) = post(&a, json!({"query": QUERY, "extensions": pq(QUERY)})).await;
        assert_eq!(body["data"], json!({"user": {"name": "User 1"}}), "{body}");
        // The other replica never saw the text: it finds it in Redis.
        let (_, body) = post(&b, json!({"extensions": pq(QUERY)})).await;
        assert_eq!(
            body["data"],
            json!({"user": {"name": "User 1"}}),
            "{cluster}: {body}"
        );
    }
}
