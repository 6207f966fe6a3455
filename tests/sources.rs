//! Event sources besides upstream WebSockets, each a real server started by the test: an
//! upstream Server-Sent Events stream (dropped mid-stream, resumed from Last-Event-ID).

mod common;

use common::subscribe;

use common::{next_json, websocket, Gateway, Upstream};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

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

const HOOKS: &str = r#"
extend schema
  @upstream(name: "api", url: "{up}")
  @webhook(name: "github", path: "/hooks/github", scheme: GITHUB, secretEnv: "GH_SECRET",
           invalidates: ["repo:{event.repository.full_name}"])
  @webhook(name: "stripe", path: "/hooks/stripe", scheme: STRIPE, secretEnv: "STRIPE_SECRET",
           invalidates: ["customer:{event.data.object.customer}"], when: {type: "customer.updated"})
  @webhook(name: "svc", path: "/hooks/svc", scheme: STANDARD, secretEnv: "SVC_SECRET",
           invalidates: ["repo:{event.repo}"])
type Query {
  repo(name: String!): Repo @rest(upstream: "api", path: "/repos/{args.name}") @cache(maxAge: 600, tags: ["repo:{args.name}"])
  customer(id: ID!): Customer @rest(upstream: "api", path: "/customers/{args.id}") @cache(maxAge: 600, tags: ["customer:{args.id}"])
}
type Subscription {
  repo(name: String!): Repo @live
  customer(id: ID!): Customer @live
  issueOpened(repo: String!): Issue
    @stream(webhook: "github", when: {action: "opened", repository: {full_name: "{args.repo}"}}, select: "issue")
  customerEvents: Customer @stream(webhook: "stripe", select: "data.object")
  svcEvents: SvcEvent @stream(webhook: "svc")
}
type Repo { name: String! stars: Int! }
type Customer { id: ID! customer: String }
type Issue { number: Int! title: String! }
type SvcEvent { repo: String! }
"#;

const GH: &str = "It's a Secret to Everybody";
const STRIPE: &str = "whsec_stripe_test_secret";
// Standard Webhooks: `whsec_` + base64 of the key.
const SVC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

async fn hooks_setup() -> (Upstream, Gateway, Arc<std::sync::atomic::AtomicU64>) {
    use axum::extract::Path;
    let stars = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let s = stars.clone();
    let app = axum::Router::new()
        .route(
            // The name is one path segment: `acme/app` arrives as `acme%2Fapp`.
            "/repos/{name}",
            axum::routing::get(move |Path(name): Path<String>| {
                let stars = s.load(std::sync::atomic::Ordering::SeqCst);
                async move { axum::Json(json!({"name": name, "stars": stars})) }
            }),
        )
        .route(
            "/customers/{id}",
            axum::routing::get(
                |Path(id): Path<String>| async move { axum::Json(json!({"id": id})) },
            ),
        );
    let up = Upstream::start(app).await;
    let gw = Gateway::start_with_env(
        &HOOKS.replace("{up}", &up.url()),
        livegate::Options::default(),
        &[
            ("GH_SECRET", GH),
            ("STRIPE_SECRET", STRIPE),
            ("SVC_SECRET", SVC),
        ],
    )
    .await;
    (up, gw, stars)
}

async fn deliver(gw: &Gateway, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let mut req = gw
        .client
        .post(format!("http://{}{path}", gw.addr))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.expect("answer").status().as_u16()
}

fn github(body: &str, delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hex::encode(hmac(GH.as_bytes(), &[body.as_bytes()]))
            ),
        ),
        ("x-github-event", "issues".into()),
        ("x-github-delivery", delivery.into()),
    ]
}

#[tokio::test]
async fn a_github_delivery_invalidates_a_live_query_and_feeds_an_event_subscription() {
    let (up, gw, stars) = hooks_setup().await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(
        &mut ws,
        "live",
        r#"subscription { repo(name: "acme/app") { stars } }"#,
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await["payload"]["data"]["repo"]["stars"],
        1
    );
    subscribe(
        &mut ws,
        "ev",
        r#"subscription { issueOpened(repo: "acme/app") { number title } }"#,
    )
    .await;
    gw.metrics_until(|p| common::sample(p, "livegate_subscriptions{kind=\"stream\"}") >= 1.0)
        .await;
    stars.store(2, std::sync::atomic::Ordering::SeqCst);
    let body = json!({"action": "opened", "issue": {"number": 7, "title": "It broke"},
                      "repository": {"full_name": "acme/app"}})
    .to_string();
    assert_eq!(
        deliver(&gw, "/hooks/github", &github(&body, "d-1"), &body).await,
        202
    );
    let mut got = vec![next_json(&mut ws).await, next_json(&mut ws).await];
    got.sort_by_key(|m| m["id"].as_str().unwrap_or("").to_string());
    assert_eq!(
        got[0]["payload"]["data"]["issueOpened"],
        json!({"number": 7, "title": "It broke"}),
        "{got:?}"
    );
    assert_eq!(got[1]["payload"]["data"]["repo"]["stars"], 2, "{got:?}");
    let fetched = up.count_matching("GET /repos");
    assert_eq!(fetched, 2, "one fetch, one refetch");
    // A replayed delivery, a wrong signature, none at all: refused, nothing applied.
    assert_eq!(
        deliver(&gw, "/hooks/github", &github(&body, "d-1"), &body).await,
        401
    );
    let mut forged = github(&body, "d-2");
    forged[0].1 = format!("sha256={}", hex::encode(hmac(b"guess", &[body.as_bytes()])));
    assert_eq!(deliver(&gw, "/hooks/github", &forged, &body).await, 401);
    assert_eq!(deliver(&gw, "/hooks/github", &[], &body).await, 401);
    // An issue of another repository, or another action: not this subscription's.
    let other = json!({"action": "closed", "issue": {"number": 8, "title": "x"}, "repository": {"full_name": "acme/app"}}).to_string();
    assert_eq!(
        deliver(&gw, "/hooks/github", &github(&other, "d-3"), &other).await,
        202
    );
    let next = json!({"action": "opened", "issue": {"number": 9, "title": "Again"}, "repository": {"full_name": "acme/app"}}).to_string();
    assert_eq!(
        deliver(&gw, "/hooks/github", &github(&next, "d-4"), &next).await,
        202
    );
    // (each accepted delivery also invalidated the repo: the live query is re-run, with
    // the same stars, so it pushes nothing)
    let got = next_json(&mut ws).await;
    assert_eq!(got["payload"]["data"]["issueOpened"]["number"], 9, "{got}");
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(
            &page,
            "livegate_webhook_deliveries_total{receiver=\"github\",result=\"accepted\"}"
        ),
        3.0
    );
    assert_eq!(
        common::sample(
            &page,
            "livegate_webhook_deliveries_total{receiver=\"github\",result=\"refused\"}"
        ),
        3.0
    );
    assert_eq!(deliver(&gw, "/hooks/nobody", &[], "{}").await, 404);
}

#[tokio::test]
async fn stripe_and_standard_webhooks_deliveries_are_verified_and_applied() {
    use base64::Engine;
    let (up, gw, _) = hooks_setup().await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(
        &mut ws,
        "c",
        r#"subscription { customer(id: "cus_1") { id } }"#,
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await["payload"]["data"]["customer"]["id"],
        "cus_1"
    );
    subscribe(&mut ws, "s", "subscription { svcEvents { repo } }").await;
    gw.metrics_until(|p| common::sample(p, "livegate_subscriptions{kind=\"stream\"}") >= 1.0)
        .await;
    // Stripe: t=…,v1=hex(HMAC("t.body")), within the tolerance.
    let stripe = |body: &str, t: u64| {
        let sig = hex::encode(hmac(
            STRIPE.as_bytes(),
            &[t.to_string().as_bytes(), b".", body.as_bytes()],
        ));
        vec![("stripe-signature", format!("t={t},v1={sig}"))]
    };
    let body = json!({"id": "evt_1", "type": "customer.updated", "data": {"object": {"id": "cus_1", "customer": "cus_1"}}}).to_string();
    assert_eq!(
        deliver(&gw, "/hooks/stripe", &stripe(&body, unix() - 1000), &body).await,
        401,
        "stale"
    );
    assert_eq!(up.count_matching("GET /customers"), 1);
    assert_eq!(
        deliver(&gw, "/hooks/stripe", &stripe(&body, unix()), &body).await,
        202
    );
    // The live query was invalidated: refetched (same value: nothing pushed, but fetched).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while up.count_matching("GET /customers") < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(up.count_matching("GET /customers"), 2);
    // `when` filters what invalidates: another type does not.
    let other = json!({"id": "evt_2", "type": "charge.succeeded", "data": {"object": {"customer": "cus_1"}}}).to_string();
    assert_eq!(
        deliver(&gw, "/hooks/stripe", &stripe(&other, unix()), &other).await,
        202
    );
    // Standard Webhooks: id, timestamp, v1,base64(HMAC(key, "id.ts.body")); ids once.
    let key = base64::engine::general_purpose::STANDARD
        .decode(SVC.trim_start_matches("whsec_"))
        .expect("key");
    let standard = |id: &str, body: &str| {
        let ts = unix().to_string();
        let sig = base64::engine::general_purpose::STANDARD.encode(hmac(
            &key,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()],
        ));
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts),
            ("webhook-signature", format!("v1,{sig}")),
        ]
    };
    let body = json!({"repo": "acme/app"}).to_string();
    assert_eq!(
        deliver(&gw, "/hooks/svc", &standard("msg_1", &body), &body).await,
        202
    );
    let got = next_json(&mut ws).await;
    assert_eq!(
        got["payload"]["data"]["svcEvents"]["repo"], "acme/app",
        "{got}"
    );
    assert_eq!(
        deliver(&gw, "/hooks/svc", &standard("msg_1", &body), &body).await,
        401,
        "replayed id"
    );
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(
            &page,
            "livegate_webhook_deliveries_total{receiver=\"svc\",result=\"refused\"}"
        ),
        1.0
    );
    assert_eq!(
        common::sample(
            &page,
            "livegate_webhook_deliveries_total{receiver=\"stripe\",result=\"accepted\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn a_delivery_to_one_replica_reaches_every_replicas_subscribers_once() {
    // On one Redis, and on a Redis Cluster.
    for cluster in [false, true] {
        let redis = common::redis::Redis::start(cluster);
        let up = Upstream::start(axum::Router::new()).await;
        let options = || livegate::Options {
            redis: Some(livegate::bus::redis::RedisOptions {
                url: redis.url(),
                cluster,
                prefix: "hooks".into(),
                timeout: std::time::Duration::from_millis(500),
                fill_wait: std::time::Duration::from_secs(5),
                lease: std::time::Duration::from_millis(1_000),
            }),
            ..Default::default()
        };
        let env = [
            ("GH_SECRET", GH),
            ("STRIPE_SECRET", STRIPE),
            ("SVC_SECRET", SVC),
        ];
        let schema = HOOKS.replace("{up}", &up.url());
        let a = Gateway::start_with_env(&schema, options(), &env).await;
        let b = Gateway::start_with_env(&schema, options(), &env).await;
        let query = r#"subscription { issueOpened(repo: "acme/app") { number } }"#;
        let mut on_a = websocket(a.addr, "graphql-transport-ws").await;
        let mut on_b = websocket(b.addr, "graphql-transport-ws").await;
        subscribe(&mut on_a, "1", query).await;
        subscribe(&mut on_b, "1", query).await;
        for gw in [&a, &b] {
            gw.metrics_until(|p| {
                common::sample(p, "livegate_subscriptions{kind=\"stream\"}") >= 1.0
            })
            .await;
            gw.metrics_until(|p| common::sample(p, "livegate_redis_up") >= 1.0)
                .await;
        }
        for n in [1, 2] {
            let body = json!({"action": "opened", "issue": {"number": n, "title": "t"}, "repository": {"full_name": "acme/app"}}).to_string();
            assert_eq!(
                deliver(
                    &a,
                    "/hooks/github",
                    &github(&body, &format!("r-{n}")),
                    &body
                )
                .await,
                202
            );
        }
        // Each replica's subscriber hears each delivery once, in order.
        for ws in [&mut on_a, &mut on_b] {
            for n in [1, 2] {
                let got = next_json(ws).await;
                assert_eq!(got["payload"]["data"]["issueOpened"]["number"], n, "{got}");
            }
        }
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), {
            use futures_util::StreamExt;
            on_b.next()
        })
        .await;
        assert!(quiet.is_err(), "nothing doubled: {quiet:?}");
    }
}

#[test]
fn misdeclared_receivers_are_refused_with_their_position() {
    let schema = r#"
extend schema
  @webhook(name: "a", path: "/elsewhere", scheme: GITHUB, secretEnv: "A")
  @webhook(name: "b", path: "/hooks/b", scheme: SLACK, secretEnv: "B")
  @webhook(name: "c", path: "/hooks/c", scheme: STRIPE, secretEnv: "C", invalidates: ["x:{args.id}"])
type Query { a: Int }
type Subscription {
  x: Int @stream(webhook: "nobody")
  y: Int @stream(webhook: "a", upstream: "api", path: "/ws")
}
"#;
    let all = common::refused_at(schema, &[3, 4, 5, 8, 9]);
    assert!(all.contains("under /hooks/"), "{all}");
    assert!(all.contains("names no @webhook"), "{all}");
}

/// `redis-cli` against the server on `port` with `password`, as a service would publish.
fn redis_cli(port: u16, password: &str, args: &[&str]) {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "-a", password, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !said.contains("ERR") && !said.contains("NOAUTH"),
        "{said}"
    );
}

#[tokio::test]
async fn a_redis_channel_and_a_redis_stream_feed_subscriptions() {
    let redis = common::redis::RedisServer::start_with_password(Some("s3cret-pass"));
    let schema = r#"
extend schema @upstream(name: "events", url: "{redis}") @upstream(name: "api", url: "http://127.0.0.1:1")
type Query { a: Int @rest(upstream: "api", path: "/a") }
type Subscription {
  orderPlaced(id: ID!): Order @stream(upstream: "events", channel: "orders", when: {id: "{args.id}"})
  orderOf(user: String!): Order @stream(upstream: "events", channel: "orders.{args.user}")
  shipments: Shipment @stream(upstream: "events", stream: "shipments", select: "data")
}
type Order { id: ID! total: Int! }
type Shipment { id: ID! carrier: String! }
"#
    .replace("{redis}", &redis.url());
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(
        &mut ws,
        "o",
        r#"subscription { orderPlaced(id: "2") { id total } }"#,
    )
    .await;
    subscribe(&mut ws, "s", "subscription { shipments { id carrier } }").await;
    subscribe(
        &mut ws,
        "u",
        r#"subscription { orderOf(user: "ann") { id total } }"#,
    )
    .await;
    gw.metrics_until(|p| {
        common::sample(p, "livegate_subscriptions{kind=\"stream\"}") >= 3.0
            && common::sample(p, "livegate_upstream_sockets_open") >= 3.0
    })
    .await;
    let cli = |args: &[&str]| redis_cli(redis.port, "s3cret-pass", args);
    cli(&["PUBLISH", "orders", "not json"]);
    cli(&["PUBLISH", "orders", r#"{"id":"1","total":5}"#]);
    cli(&["PUBLISH", "orders", r#"{"id":"2","total":7}"#]);
    cli(&[
        "XADD",
        "shipments",
        "*",
        "data",
        r#"{"id":"s1","carrier":"post"}"#,
    ]);
    // A channel rendered from the arguments: Redis sends ann's channel only.
    cli(&["PUBLISH", "orders.bob", r#"{"id":"8","total":1}"#]);
    cli(&["PUBLISH", "orders.ann", r#"{"id":"9","total":1}"#]);
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..3 {
        got.push(next_json(&mut ws).await);
    }
    got.sort_by_key(|m| m["id"].as_str().unwrap_or("").to_string());
    assert_eq!(
        got[0]["payload"]["data"]["orderPlaced"],
        json!({"id": "2", "total": 7}),
        "{got:?}"
    );
    assert_eq!(
        got[1]["payload"]["data"]["shipments"],
        json!({"id": "s1", "carrier": "post"}),
        "{got:?}"
    );
    assert_eq!(
        got[2]["payload"]["data"]["orderOf"],
        json!({"id": "9", "total": 1}),
        "{got:?}"
    );
    // Counted by kind: three connections, one message skipped (not JSON), four passed.
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(&page, "livegate_sources_open{kind=\"redis\"}"),
        3.0
    );
    assert_eq!(
        common::sample(
            &page,
            "livegate_source_messages_total{kind=\"redis\",result=\"skipped\"}"
        ),
        1.0
    );
    assert_eq!(
        common::sample(
            &page,
            "livegate_source_messages_total{kind=\"redis\",result=\"passed\"}"
        ),
        4.0
    );
    // The password of the URL is in no answer and no metric.
    assert!(!page.contains("s3cret-pass"));
}

/// A real `nats-server` on a free loopback port, stopped when dropped.
struct NatsServer {
    child: std::process::Child,
    port: u16,
}

impl NatsServer {
    async fn start() -> NatsServer {
        NatsServer::start_with(&[]).await
    }

    /// With JetStream, its store in a fresh directory.
    async fn start_jetstream(store: &std::path::Path) -> NatsServer {
        let store = store.to_string_lossy().to_string();
        NatsServer::start_with(&["-js", "-sd", &store]).await
    }

    async fn start_with(extra: &[&str]) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Debian puts it in /usr/sbin, which a user's PATH may not have.
        let bin = if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = std::process::Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server runs (scripts/test installs it)");
        // Listening once a connection is taken.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server listens"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        NatsServer { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_thousand_nats_subscribers_on_two_replicas_each_get_their_message_once() {
    let nats = NatsServer::start().await;
    let schema = r#"
extend schema @upstream(name: "bus", url: "{nats}") @upstream(name: "api", url: "http://127.0.0.1:1")
type Query { a: Int @rest(upstream: "api", path: "/a") }
type Subscription {
  shipments(id: ID!): Shipment @stream(upstream: "bus", subject: "shipments.{args.id}")
}
type Shipment { id: ID! }
"#
    .replace("{nats}", &nats.url());
    let options = || {
        let mut o = livegate::Options::default();
        o.connection_limits.max_operations_per_second = 10_000;
        o
    };
    let replicas = [
        Gateway::start(&schema, options()).await,
        Gateway::start(&schema, options()).await,
    ];
    // 1,000 subscriptions, each to its own subject: 5 sockets of 100 on each replica.
    let mut sockets = Vec::new();
    for (r, gw) in replicas.iter().enumerate() {
        for s in 0..5 {
            let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
            for k in 0..100 {
                let id = r * 500 + s * 100 + k;
                let q = format!(r#"subscription {{ shipments(id: "{id}") {{ id }} }}"#);
                subscribe(&mut ws, &id.to_string(), &q).await;
            }
            sockets.push(ws);
        }
    }
    for gw in &replicas {
        let page = gw
            .metrics_until(|p| common::sample(p, "livegate_upstream_sockets_open") >= 500.0)
            .await;
        assert_eq!(
            common::sample(&page, "livegate_upstream_sockets_open"),
            500.0
        );
    }
    // A value that would widen the subscription is refused, not subscribed.
    let mut probe = websocket(replicas[0].addr, "graphql-transport-ws").await;
    subscribe(
        &mut probe,
        "w",
        r#"subscription { shipments(id: ">") { id } }"#,
    )
    .await;
    let refused = next_json(&mut probe).await;
    assert_eq!(refused["type"], "error", "{refused}");
    let publisher = async_nats::connect(nats.url()).await.expect("publisher");
    for id in 0..1000 {
        publisher
            .publish(
                format!("shipments.{id}"),
                json!({ "id": id.to_string() }).to_string().into(),
            )
            .await
            .expect("published");
    }
    publisher.flush().await.expect("flushed");
    for (n, ws) in sockets.iter_mut().enumerate() {
        let mut ids = Vec::new();
        for _ in 0..100 {
            let got = next_json(ws).await;
            assert_eq!(got["type"], "next", "{got}");
            // Each subscription hears its own subject's message.
            assert_eq!(
                got["id"], got["payload"]["data"]["shipments"]["id"],
                "{got}"
            );
            ids.push(got["id"].as_str().unwrap_or("").to_string());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100, "socket {n}: each of its subscriptions once");
    }
    // None doubled: nothing more arrives.
    for ws in &mut sockets {
        use futures_util::StreamExt;
        let more = tokio::time::timeout(std::time::Duration::from_millis(100), ws.next()).await;
        assert!(more.is_err(), "{more:?}");
    }
}

#[tokio::test]
async fn a_webhook_delivery_patches_a_cached_entry_through_updates() {
    let schema = r#"
extend schema
  @upstream(name: "api", url: "{up}")
  @webhook(name: "svc", path: "/hooks/svc", scheme: LIVEGATE, secretEnv: "SVC_SECRET")
type Query {
  tasks: [Task!]! @rest(upstream: "api", path: "/tasks") @cache(maxAge: 600)
    @updates(webhook: "svc", when: {type: "task.updated"}, select: "task", apply: UPSERT, key: "id")
}
type Subscription { tasks: [Task!]! @live }
type Task { id: ID! done: Boolean! }
"#;
    let up = Upstream::start(axum::Router::new().route(
        "/tasks",
        axum::routing::get(|| async { axum::Json(json!([{"id": "1", "done": false}])) }),
    ))
    .await;
    let gw = Gateway::start_with_env(
        &schema.replace("{up}", &up.url()),
        livegate::Options::default(),
        &[("SVC_SECRET", "svc-secret")],
    )
    .await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(&mut ws, "t", "subscription { tasks { id done } }").await;
    assert_eq!(
        next_json(&mut ws).await["payload"]["data"]["tasks"],
        json!([{"id": "1", "done": false}])
    );
    gw.metrics_until(|p| common::sample(p, "livegate_sources_open{kind=\"webhook\"}") >= 1.0)
        .await;
    let body = json!({"type": "task.updated", "task": {"id": "1", "done": true}}).to_string();
    let t = unix();
    let sig = hex::encode(hmac(
        b"svc-secret",
        &[t.to_string().as_bytes(), b".", body.as_bytes()],
    ));
    let signed = vec![("x-livegate-signature", format!("t={t},v1={sig}"))];
    assert_eq!(deliver(&gw, "/hooks/svc", &signed, &body).await, 202);
    let got = next_json(&mut ws).await;
    assert_eq!(
        got["payload"]["data"]["tasks"],
        json!([{"id": "1", "done": true}]),
        "{got}"
    );
    assert_eq!(up.count_matching("GET /tasks"), 1, "patched, not refetched");
    // The same signature again: refused, nothing patched.
    assert_eq!(deliver(&gw, "/hooks/svc", &signed, &body).await, 401);
}

#[tokio::test]
async fn a_nats_subject_rendered_from_arguments_patches_each_entry() {
    let nats = NatsServer::start().await;
    let up = Upstream::start(axum::Router::new().route(
        "/shipments/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(json!({"id": id, "status": "packed"}))
            },
        ),
    ))
    .await;
    let schema = r#"
extend schema @upstream(name: "bus", url: "{nats}") @upstream(name: "api", url: "{up}")
type Query {
  shipment(id: ID!): Shipment @rest(upstream: "api", path: "/shipments/{args.id}") @cache(maxAge: 600)
    @updates(upstream: "bus", subject: "shipments.{args.id}", apply: MERGE)
}
type Subscription { shipment(id: ID!): Shipment @live }
type Shipment { id: ID! status: String! }
"#
    .replace("{nats}", &nats.url())
    .replace("{up}", &up.url());
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    for id in ["1", "2"] {
        let q = format!(r#"subscription {{ shipment(id: "{id}") {{ id status }} }}"#);
        subscribe(&mut ws, id, &q).await;
    }
    for _ in 0..2 {
        assert_eq!(
            next_json(&mut ws).await["payload"]["data"]["shipment"]["status"],
            "packed"
        );
    }
    gw.metrics_until(|p| common::sample(p, "livegate_sources_open{kind=\"nats\"}") >= 2.0)
        .await;
    let publisher = async_nats::connect(nats.url()).await.expect("publisher");
    publisher
        .publish(
            "shipments.2",
            json!({"status": "shipped"}).to_string().into(),
        )
        .await
        .expect("published");
    publisher.flush().await.expect("flushed");
    let got = next_json(&mut ws).await;
    assert_eq!(got["id"], "2", "only the entry of shipment 2: {got}");
    assert_eq!(
        got["payload"]["data"]["shipment"],
        json!({"id": "2", "status": "shipped"})
    );
    assert_eq!(
        up.count_matching("GET /shipments"),
        2,
        "patched, not refetched"
    );
}

#[tokio::test]
async fn a_jetstream_subject_reaches_every_replica_and_a_restarted_one_replays_what_it_missed() {
    let store = tempfile_dir("jetstream");
    let nats = NatsServer::start_jetstream(&store).await;
    let client = async_nats::connect(nats.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SHIPS".into(),
        subjects: vec!["ships.>".into()],
        ..Default::default()
    })
    .await
    .expect("the stream is made");
    let publish = |n: u32| {
        let js = js.clone();
        async move {
            js.publish(
                "ships.eu",
                json!({ "id": n.to_string() }).to_string().into(),
            )
            .await
            .expect("published")
            .await
            .expect("stored");
        }
    };
    let schema = r#"
extend schema @upstream(name: "bus", url: "{nats}") @upstream(name: "api", url: "http://127.0.0.1:1")
type Query { a: Int @rest(upstream: "api", path: "/a") }
type Subscription {
  ships: Ship @stream(upstream: "bus", subject: "ships.*", jetStream: "SHIPS")
}
type Ship { id: ID! }
"#
    .replace("{nats}", &nats.url());
    let replica = |name: &str| livegate::Options {
        replica_name: name.into(),
        socket_grace: std::time::Duration::ZERO,
        ..Default::default()
    };
    let open = "livegate_sources_open{kind=\"nats\"}";
    let subscribed = |gw: &Gateway| {
        let addr = gw.addr;
        async move {
            let mut ws = websocket(addr, "graphql-transport-ws").await;
            subscribe(&mut ws, "s", "subscription { ships { id } }").await;
            ws
        }
    };
    let a = Gateway::start(&schema, replica("a")).await;
    let b = Gateway::start(&schema, replica("b")).await;
    let mut on_a = subscribed(&a).await;
    let mut on_b = subscribed(&b).await;
    a.metrics_until(|p| common::sample(p, open) >= 1.0).await;
    b.metrics_until(|p| common::sample(p, open) >= 1.0).await;
    // Each replica's own consumer: both hear every message (one shared one would split).
    publish(1).await;
    publish(2).await;
    assert_eq!(ship_ids(2, &mut on_a).await, ["1", "2"]);
    assert_eq!(ship_ids(2, &mut on_b).await, ["1", "2"]);
    // Replica a's subscriber leaves and a stops; what is published meanwhile waits for it.
    drop(on_a);
    a.metrics_until(|p| common::sample(p, open) == 0.0).await;
    drop(a);
    publish(3).await;
    publish(4).await;
    assert_eq!(ship_ids(2, &mut on_b).await, ["3", "4"]);
    // Started again under its name, a resumes after what it passed on: 3 and 4, not 1, 2.
    let a = Gateway::start(&schema, replica("a")).await;
    let mut on_a = subscribed(&a).await;
    assert_eq!(ship_ids(2, &mut on_a).await, ["3", "4"]);
    // A replica new to the stream starts at its next message.
    let c = Gateway::start(&schema, replica("c")).await;
    let mut on_c = subscribed(&c).await;
    c.metrics_until(|p| common::sample(p, open) >= 1.0).await;
    publish(5).await;
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(ship_ids(1, ws).await, ["5"]);
    }
    // None doubled.
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        use futures_util::StreamExt;
        let more = tokio::time::timeout(std::time::Duration::from_millis(200), ws.next()).await;
        assert!(more.is_err(), "{more:?}");
    }
    // Three durable consumers, one per replica name.
    let stream = js.get_stream("SHIPS").await.expect("stream");
    let mut names: Vec<String> = Vec::new();
    let mut listed = stream.consumer_names();
    while let Some(name) = futures_util::StreamExt::next(&mut listed).await {
        names.push(name.expect("a name"));
    }
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("livegate_")),
        "{names:?}"
    );
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test]
async fn jetstream_is_refused_where_it_cannot_work() {
    let schema = r#"
extend schema @upstream(name: "bus", url: "nats://127.0.0.1:1") @upstream(name: "api", url: "http://127.0.0.1:1")
type Query {
  a: [Ship!] @rest(upstream: "api", path: "/a") @cache(maxAge: 60)
    @updates(upstream: "bus", subject: "ships.all", jetStream: "SHIPS", apply: APPEND)
}
type Subscription {
  ship(id: ID!): Ship @stream(upstream: "bus", subject: "ships.{args.id}", jetStream: "SHIPS")
  named: Ship @stream(upstream: "bus", subject: "ships.all", jetStream: "SHIPS.ALL")
  socket: Ship @stream(upstream: "api", path: "/s", jetStream: "SHIPS")
}
type Ship { id: ID! }
"#;
    let errors = common::refused_at(schema, &[5, 8, 9, 10]);
    for said in [
        "@updates has no `jetStream`",
        "a JetStream subject is constant",
        "must name a JetStream stream",
        "`jetStream:` is for NATS upstreams",
    ] {
        assert!(errors.contains(said), "{said}\n{errors}");
    }
}

/// The ids of the next `n` ships on `ws`.
async fn ship_ids(n: usize, ws: &mut common::Ws) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = next_json(ws).await;
        assert_eq!(m["type"], "next", "{m}");
        got.push(
            m["payload"]["data"]["ships"]["id"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
    }
    got
}

/// A fresh directory under the system's temporary one.
fn tempfile_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "livegate-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
