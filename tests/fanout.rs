//! Shared subscriptions (issue 12): subscribers of the same operation, variables and
//! credentials share one execution and one encoded result, whatever transport each uses;
//! each still gets its own frame (its operation id). Different variables or credentials
//! are different subscriptions.

mod common;

use common::subscribe;

use common::{announcer, sample, Gateway, Upstream};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}", forwardHeaders: ["x-tenant"])
type Query {
  count(room: String!): Count @rest(upstream: "api", path: "/count/{args.room}") @cache(maxAge: 60)
}
type Count { room: String! n: Int! }
type Message {
  id: ID!
  text: String!
  authorId: ID
  author: Author @rest(upstream: "api", path: "/authors/{parent.authorId}")
}
type Author { name: String! }
type Subscription {
  count(room: String!): Count @live(pollMs: 40)
  said(room: String!): Message @stream(upstream: "api", path: "/ws", when: {room: "{args.room}"})
}
"#;

fn api(n: Arc<AtomicU64>, say: broadcast::Sender<String>) -> axum::Router {
    use axum::extract::Path;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/count/{room}",
            get(move |Path(room): Path<String>| {
                let n = n.load(Ordering::SeqCst);
                async move { axum::Json(json!({"room": room, "n": n})) }
            }),
        )
        .route(
            "/authors/{id}",
            get(|Path(id): Path<String>| async move {
                axum::Json(json!({"name": format!("Author {id}")}))
            }),
        )
        .route("/ws", announcer(say))
}

async fn setup() -> (Upstream, Gateway, Arc<AtomicU64>, broadcast::Sender<String>) {
    let (say, _) = broadcast::channel::<String>(64);
    let n = Arc::new(AtomicU64::new(0));
    let up = Upstream::start(api(n.clone(), say.clone())).await;
    let gw = Gateway::start(
        &SCHEMA.replace("{up}", &up.url()),
        livegate::Options::default(),
    )
    .await;
    (up, gw, n, say)
}

/// A graphql-transport-ws socket, initialised with `init` as `connection_init`'s payload.
async fn socket(gw: &Gateway, init: Value) -> common::Ws {
    common::websocket_with(gw.addr, "graphql-transport-ws", init).await
}

async fn next(ws: &mut common::Ws) -> Value {
    common::next_json(ws).await
}

async fn groups_and_subscriptions(gw: &Gateway, kind: &str, groups: f64, subscriptions: f64) {
    let g = format!("livegate_subscription_groups{{kind=\"{kind}\"}}");
    let s = format!("livegate_subscriptions{{kind=\"{kind}\"}}");
    gw.metrics_until(|p| sample(p, &g) == groups && sample(p, &s) == subscriptions)
        .await;
}

/// The first lines of an SSE response, until one holds an event `next`.
async fn sse_next(res: &mut reqwest::Response, buffer: &mut String) -> Value {
    loop {
        if let Some(at) = buffer.find("event: next\ndata: ") {
            let rest = &buffer[at + 18..];
            if let Some(end) = rest.find("\n\n") {
                let value = serde_json::from_str(&rest[..end]).expect("JSON");
                *buffer = rest[end + 2..].to_string();
                return value;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("an event within 10 s")
            .expect("read")
            .unwrap_or_else(|| panic!("the stream ended: {buffer}"));
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn event_subscribers_of_one_operation_share_one_execution_across_transports() {
    let (up, gw, _, say) = setup().await;
    let said_a = r#"subscription { said(room: "a") { text author { name } } }"#;
    let mut plain = Vec::new();
    for i in 0..4 {
        let mut ws = socket(&gw, json!({})).await;
        subscribe(&mut ws, &format!("op{i}"), said_a).await;
        plain.push(ws);
    }
    // The same operation over SSE, with the same (no) credentials: the same group.
    let mut sse = reqwest::Client::new()
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&json!({"query": said_a}))
        .send()
        .await
        .expect("SSE");
    // Another tenant (a forwarded header) and other variables: groups of their own.
    let mut tenant = socket(&gw, json!({"x-tenant": "t2"})).await;
    subscribe(&mut tenant, "t", said_a).await;
    let mut room_b = socket(&gw, json!({})).await;
    subscribe(
        &mut room_b,
        "b",
        r#"subscription { said(room: "b") { text } }"#,
    )
    .await;
    groups_and_subscriptions(&gw, "stream", 3.0, 7.0).await;
    // The gateway's one socket to the upstream is open once the upstream has a listener.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while say.receiver_count() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no upstream socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = say.send(json!({"room": "a", "id": "1", "text": "hi", "authorId": "7"}).to_string());
    let expected = json!({"data": {"said": {"text": "hi", "author": {"name": "Author 7"}}}});
    for (i, ws) in plain.iter_mut().enumerate() {
        let got = next(ws).await;
        assert_eq!(
            got,
            json!({"id": format!("op{i}"), "type": "next", "payload": expected})
        );
    }
    let got = next(&mut tenant).await;
    assert_eq!(got, json!({"id": "t", "type": "next", "payload": expected}));
    let mut buffer = String::new();
    assert_eq!(sse_next(&mut sse, &mut buffer).await, expected);
    // Two groups ran the event's nested field (no @cache): two executions, not six.
    assert!(
        up.count_matching("GET /authors/7") <= 2,
        "{:?}",
        up.requests()
    );
    // Room b heard nothing of room a: its first event is its own.
    let _ = say.send(json!({"room": "b", "id": "2", "text": "bee", "authorId": "8"}).to_string());
    assert_eq!(
        next(&mut room_b).await,
        json!({"id": "b", "type": "next", "payload": {"data": {"said": {"text": "bee"}}}})
    );

    // Subscribers leave one by one; the group lives until the last of them has gone.
    for (i, ws) in plain.iter_mut().enumerate() {
        let done = json!({"id": format!("op{i}"), "type": "complete"});
        ws.send(Message::text(done.to_string()))
            .await
            .expect("send");
    }
    groups_and_subscriptions(&gw, "stream", 3.0, 3.0).await;
    drop(sse);
    groups_and_subscriptions(&gw, "stream", 2.0, 2.0).await;
    drop((tenant, room_b));
    groups_and_subscriptions(&gw, "stream", 0.0, 0.0).await;
}

#[tokio::test]
async fn live_subscribers_share_one_run_and_a_newcomer_gets_the_current_result() {
    let (up, gw, n, _) = setup().await;
    let query = r#"subscription { count(room: "a") { n } }"#;
    let mut sockets = Vec::new();
    for i in 0..3 {
        let mut ws = socket(&gw, json!({})).await;
        subscribe(&mut ws, &format!("c{i}"), query).await;
        let first = next(&mut ws).await;
        assert_eq!(
            first,
            json!({"id": format!("c{i}"), "type": "next", "payload": {"data": {"count": {"n": 0}}}})
        );
        sockets.push(ws);
    }
    groups_and_subscriptions(&gw, "live", 1.0, 3.0).await;
    n.store(5, Ordering::SeqCst);
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(
            next(ws).await,
            json!({"id": format!("c{i}"), "type": "next", "payload": {"data": {"count": {"n": 5}}}})
        );
    }
    // One subscriber more: the result the group has now, at once, in its own frame.
    let mut late = socket(&gw, json!({})).await;
    subscribe(&mut late, "late", query).await;
    assert_eq!(
        next(&mut late).await,
        json!({"id": "late", "type": "next", "payload": {"data": {"count": {"n": 5}}}})
    );
    groups_and_subscriptions(&gw, "live", 1.0, 4.0).await;
    // The same text with another operation id on the same socket is the same group too.
    subscribe(&mut late, "late2", query).await;
    assert_eq!(next(&mut late).await["id"], "late2");
    groups_and_subscriptions(&gw, "live", 1.0, 5.0).await;
    // One poller for the group, whatever the number of subscribers: the upstream saw
    // about one request per poll period, not one per subscriber.
    let before = up.count_matching("GET /count/a");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let polls = up.count_matching("GET /count/a") - before;
    assert!(polls <= 12, "{polls} requests in 400 ms at 40 ms a poll");
    drop((sockets, late));
    groups_and_subscriptions(&gw, "live", 0.0, 0.0).await;
}

#[tokio::test]
async fn a_live_group_that_fails_to_run_ends_for_each_subscriber_and_ids_can_be_reused() {
    let (_up, gw, _, _) = setup().await;
    // Valid for the parser, not for the schema: the run is a request error.
    let bad = r#"subscription { count(room: "a") { nope } }"#;
    let mut ws = socket(&gw, json!({})).await;
    subscribe(&mut ws, "x", bad).await;
    let got = next(&mut ws).await;
    assert_eq!(got["id"], "x", "{got}");
    assert_eq!(got["type"], "error", "{got}");
    assert!(got["payload"][0]["message"].is_string(), "{got}");
    // The id is free again at once: a second subscribe under it is not a duplicate (4409).
    subscribe(&mut ws, "x", r#"subscription { count(room: "a") { n } }"#).await;
    let got = next(&mut ws).await;
    assert_eq!(
        got,
        json!({"id": "x", "type": "next", "payload": {"data": {"count": {"n": 0}}}})
    );
    groups_and_subscriptions(&gw, "live", 1.0, 1.0).await;
}
