//! Event sources besides upstream WebSockets, each a real server started by the test: an
//! upstream Server-Sent Events stream (dropped mid-stream, resumed from Last-Event-ID).

mod common;

use common::{next_json, websocket, Gateway, Upstream};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::Message;

/// An SSE service keeping its history: each connection first gets the events after the
/// `Last-Event-ID` it sent, then the new ones; `cut()` ends every open connection.
#[derive(Clone, Default)]
struct Feed {
    history: Arc<Mutex<Vec<(u64, String, Value)>>>,
    live: Arc<Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Option<String>>>>>,
    /// The Last-Event-ID of each connection, in order.
    resumed: Arc<Mutex<Vec<Option<String>>>>,
}

fn frame(id: u64, event: &str, data: &Value) -> String {
    format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
}

impl Feed {
    fn publish(&self, event: &str, data: Value) {
        let mut h = self.history.lock().expect("history");
        let id = h.len() as u64 + 1;
        let text = frame(id, event, &data);
        h.push((id, event.to_string(), data));
        self.live
            .lock()
            .expect("live")
            .retain(|tx| tx.send(Some(text.clone())).is_ok());
    }

    fn cut(&self) {
        for tx in self.live.lock().expect("live").drain(..) {
            let _ = tx.send(None);
        }
    }

    fn app(&self) -> axum::Router {
        let feed = self.clone();
        axum::Router::new().route(
            "/v1/events",
            axum::routing::get(move |headers: http::HeaderMap| {
                let feed = feed.clone();
                async move {
                    let last = headers
                        .get("last-event-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    feed.resumed.lock().expect("resumed").push(last.clone());
                    let after: u64 = last.and_then(|l| l.parse().ok()).unwrap_or(u64::MAX);
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
                    {
                        // History and registration under one lock: nothing falls between.
                        let h = feed.history.lock().expect("history");
                        for (id, event, data) in
                            h.iter().filter(|(id, ..)| after != u64::MAX && *id > after)
                        {
                            let _ = tx.send(Some(frame(*id, event, data)));
                        }
                        feed.live.lock().expect("live").push(tx);
                    }
                    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                        match rx.recv().await {
                            Some(Some(text)) => Some((
                                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(text)),
                                rx,
                            )),
                            _ => None,
                        }
                    });
                    let mut res =
                        axum::response::Response::new(axum::body::Body::from_stream(stream));
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/event-stream"),
                    );
                    res
                }
            }),
        )
    }
}

const SSE_SCHEMA: &str = r#"
extend schema @upstream(name: "shop", url: "{up}")
type Query {
  orders: [OrderEvent!] @rest(upstream: "shop", path: "/v1/orders") @cache(maxAge: 60)
    @updates(upstream: "shop", path: "/v1/events", protocol: SSE, when: {event: "order.created"}, apply: APPEND)
}
type Subscription {
  orderEvents(id: ID!): OrderEvent
    @stream(upstream: "shop", path: "/v1/events", protocol: SSE, when: {order_id: "{args.id}"})
  created: OrderEvent @stream(upstream: "shop", path: "/v1/events", protocol: SSE, when: {event: "order.created"})
  orders: [OrderEvent!] @live
}
type OrderEvent { order_id: ID! status: String }
"#;

async fn sse_setup() -> (Feed, Upstream, Gateway) {
    let feed = Feed::default();
    let app = feed.app().route(
        "/v1/orders",
        axum::routing::get(|| async { axum::Json(json!([])) }),
    );
    let up = Upstream::start(app).await;
    let gw = Gateway::start(
        &SSE_SCHEMA.replace("{up}", &up.url()),
        livegate::Options::default(),
    )
    .await;
    (feed, up, gw)
}

async fn subscribe(ws: &mut common::Ws, id: &str, query: &str) {
    let msg = json!({"id": id, "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::text(msg.to_string())).await.expect("send");
}

#[tokio::test]
async fn an_upstream_event_stream_feeds_subscriptions_and_resumes_from_its_last_event_id() {
    let (feed, up, gw) = sse_setup().await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(&mut ws, "b", "subscription { created { order_id } }").await;
    subscribe(
        &mut ws,
        "a",
        r#"subscription { orderEvents(id: "7") { order_id status } }"#,
    )
    .await;
    // Both subscribed, on one connection.
    let page = gw
        .metrics_until(|p| {
            common::sample(p, "livegate_subscriptions{kind=\"stream\"}") >= 2.0
                && common::sample(p, "livegate_upstream_sockets_open") >= 1.0
        })
        .await;
    assert_eq!(common::sample(&page, "livegate_upstream_sockets_open"), 1.0);
    feed.publish("order.updated", json!({"order_id": "8", "status": "paid"}));
    feed.publish("order.updated", json!({"order_id": "7", "status": "paid"}));
    feed.publish("order.created", json!({"order_id": "9", "status": "new"}));
    let mut got = vec![next_json(&mut ws).await, next_json(&mut ws).await];
    got.sort_by_key(|m| m["id"].as_str().unwrap_or("").to_string());
    assert_eq!(
        got[0]["payload"]["data"]["orderEvents"],
        json!({"order_id": "7", "status": "paid"}),
        "{got:?}"
    );
    assert_eq!(
        got[1]["payload"]["data"]["created"],
        json!({"order_id": "9"}),
        "{got:?}"
    );
    // The service drops the stream; what it announces meanwhile is not lost: the gateway
    // comes back with the last id it read, and the service replays the rest.
    feed.cut();
    feed.publish(
        "order.updated",
        json!({"order_id": "7", "status": "shipped"}),
    );
    let next = next_json(&mut ws).await;
    assert_eq!(
        next["payload"]["data"]["orderEvents"]["status"], "shipped",
        "{next}"
    );
    let resumed = feed.resumed.lock().expect("resumed").clone();
    assert_eq!(resumed, vec![None, Some("3".to_string())]);
    assert_eq!(
        up.count_matching("GET /v1/events"),
        2,
        "one connection, then one reconnect"
    );
}

#[tokio::test]
async fn an_upstream_event_stream_patches_a_cached_entry() {
    let (feed, up, gw) = sse_setup().await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(&mut ws, "1", "subscription { orders { order_id } }").await;
    assert_eq!(
        next_json(&mut ws).await["payload"]["data"]["orders"],
        json!([])
    );
    gw.metrics_until(|p| common::sample(p, "livegate_upstream_sockets_open") >= 1.0)
        .await;
    feed.publish("order.updated", json!({"order_id": "1"}));
    feed.publish("order.created", json!({"order_id": "2"}));
    // Only the created event matched `when`; the entry is patched, not refetched.
    let got = next_json(&mut ws).await;
    assert_eq!(
        got["payload"]["data"]["orders"],
        json!([{"order_id": "2"}]),
        "{got}"
    );
    assert_eq!(up.count_matching("GET /v1/orders"), 1);
    // A malformed event is skipped; the stream goes on.
    {
        let text = "id: 99\nevent: order.created\ndata: {not json\n\n".to_string();
        for tx in feed.live.lock().expect("live").iter() {
            let _ = tx.send(Some(text.clone()));
        }
    }
    feed.publish("order.created", json!({"order_id": "3"}));
    let got = next_json(&mut ws).await;
    assert_eq!(
        got["payload"]["data"]["orders"],
        json!([{"order_id": "2"}, {"order_id": "3"}]),
        "{got}"
    );
}
