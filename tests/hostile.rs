//! What a hostile client tried and must not achieve: leaving operations, sockets or
//! pollers behind by reusing operation ids, among others (issue 8's probe).

mod common;

use common::{sample, websocket, Gateway, Upstream};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn slow_and_polled_upstream() -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                // Finishes around the time the client stops and restarts the id.
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_micros() % 3000)
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_micros(u64::from(jitter))).await;
                // Big enough that completing it takes a while after the upstream answered.
                axum::Json(serde_json::json!(vec!["slow"; 5_000]))
            }),
        )
        .route("/v", get(|| async { axum::Json(serde_json::json!("v")) }))
}

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query {
  slow: [String] @rest(upstream: "api", path: "/slow")
  v: String @rest(upstream: "api", path: "/v") @cache(maxAge: 60)
}
type Subscription { v: String @live(pollMs: 20) }
"#;

/// Item 1: start `X` as a slow query, restart `X` as a live subscription, stop `X`, over
/// and over on many sockets, then close them: nothing may be left — no subscription, no
/// connection, no poller.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reusing_operation_ids_leaves_nothing_behind_when_the_socket_closes() {
    let up = Upstream::start(slow_and_polled_upstream()).await;
    let options = livegate::Options {
        live_grace: Duration::from_millis(50),
        connection_limits: livegate::server::limits::Limits {
            max_operations_per_second: 1_000_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    let mut clients = Vec::new();
    for n in 0..24 {
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            let legacy = n % 2 == 1;
            let protocol = if legacy { "graphql-ws" } else { "graphql-transport-ws" };
            let (start, stop) = if legacy {
                ("start", "stop")
            } else {
                ("subscribe", "complete")
            };
            let ws = websocket(addr, protocol).await;
            let (mut sink, mut stream) = ws.split();
            // Read everything the gateway sends, so its writer never waits on us.
            let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            for i in 0..60u64 {
                let msgs = [
                    format!(r#"{{"type":"{start}","id":"X","payload":{{"query":"{{ slow }}"}}}}"#),
                    format!(r#"{{"type":"{stop}","id":"X"}}"#),
                    format!(r#"{{"type":"{start}","id":"X","payload":{{"query":"subscription {{ v }}"}}}}"#),
                    format!(r#"{{"type":"{stop}","id":"X"}}"#),
                ];
                // Legacy restarts a running id without a stop in between, too.
                let skip = if legacy && i % 3 == 0 { Some(1) } else { None };
                for (k, m) in msgs.iter().enumerate() {
                    if Some(k) == skip {
                        continue;
                    }
                    if sink.send(Message::text(m.clone())).await.is_err() {
                        return;
                    }
                    if k == 0 {
                        tokio::time::sleep(Duration::from_micros(i * 50 % 3000)).await;
                    }
                }
                // Leave the last one running now and then: closing must end it.
                if i == 59 && n % 3 == 0 {
                    let _ = sink
                        .send(Message::text(format!(
                            r#"{{"type":"{start}","id":"Y","payload":{{"query":"subscription {{ v }}"}}}}"#
                        )))
                        .await;
                }
            }
            let _ = sink.close().await;
            // A gateway that leaks the operation never closes its side: the assertions
            // below say so, rather than this client waiting forever.
            let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    let page = gw
        .metrics_until(|p| {
            sample(p, "livegate_subscriptions{kind=\"live\"}") == 0.0
                && sample(p, "livegate_connections{transport=\"websocket\"}") == 0.0
                && sample(p, "livegate_tcp_connections") <= 1.0
        })
        .await;
    assert_eq!(
        sample(&page, "livegate_subscriptions{kind=\"live\"}"),
        0.0,
        "live subscriptions left behind"
    );
    assert_eq!(
        sample(&page, "livegate_connections{transport=\"websocket\"}"),
        0.0,
        "WebSockets left open"
    );
    // Only the metrics request's own connection.
    assert!(sample(&page, "livegate_tcp_connections") <= 1.0, "{page}");
    // Pollers stop after the grace period: the upstream sees no more polls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polls = up.count_matching("GET /v");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        up.count_matching("GET /v"),
        polls,
        "a poller kept running after every socket closed"
    );
}

const USERS: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type User { id: ID! name: String! friend: User @rest(upstream: "api", path: "/users/{parent.id}") }
type Query { user(id: ID!): User @rest(upstream: "api", path: "/users/{args.id}") @cache(maxAge: 60) }
type Subscription { user(id: ID!): User @live }
"#;

fn users_upstream() -> axum::Router {
    use axum::extract::Path;
    axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(|Path(id): Path<String>| async move {
            axum::Json(serde_json::json!({"id": id, "name": format!("user {id}")}))
        }),
    )
}

async fn users_gateway(
    limits: livegate::server::limits::Limits,
    max_depth: usize,
) -> (Upstream, Gateway) {
    let up = Upstream::start(users_upstream()).await;
    let options = livegate::Options {
        connection_limits: limits,
        limits: livegate::schema::QueryLimits {
            max_depth,
            ..Default::default()
        },
        ..Default::default()
    };
    let gw = Gateway::start(&USERS.replace("{up}", &up.url()), options).await;
    (up, gw)
}

/// `n` aliased `user` fields.
fn aliased_users(n: usize) -> String {
    (0..n)
        .map(|i| format!("a{i}: user(id: \"{i}\") {{ id }}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Item 4: root fields, aliases and depth are counted through fragments.
#[tokio::test]
async fn field_limits_count_through_fragments() {
    let limits = livegate::server::limits::Limits {
        max_root_fields: 20,
        max_aliases: 30,
        ..Default::default()
    };
    let (up, gw) = users_gateway(limits, 4).await;
    let refused = |r: &serde_json::Value, what: &str| {
        assert_eq!(
            common::error_code(r).as_deref(),
            Some("LIMIT_EXCEEDED"),
            "{what}: {r}"
        );
        assert!(r.get("data").is_none(), "{what}: {r}");
    };
    let named = format!("{{ ...R }} fragment R on Query {{ {} }}", aliased_users(25));
    refused(&gw.query(&named).await, "root fields in a named fragment");
    let inline = format!("{{ ... on Query {{ {} }} }}", aliased_users(25));
    refused(
        &gw.query(&inline).await,
        "root fields in an inline fragment",
    );
    let nested = format!(
        "{{ ...A }} fragment A on Query {{ ...B }} fragment B on Query {{ ... {{ {} }} }}",
        aliased_users(21)
    );
    refused(&gw.query(&nested).await, "root fields two fragments deep");
    // 10 aliases, spread four times under distinct parents: 40 aliases run.
    let spread = format!(
        "{{ a: user(id: \"1\") {{ ...F }} b: user(id: \"2\") {{ ...F }} c: user(id: \"3\") {{ ...F }} d: user(id: \"4\") {{ ...F }} }} fragment F on User {{ {} }}",
        (0..10).map(|i| format!("n{i}: name")).collect::<Vec<_>>().join(" ")
    );
    refused(&gw.query(&spread).await, "aliases spread four times");
    // Depth through fragments: user → friend → friend → friend → friend → id is 6 deep.
    let deep = "{ user(id: \"1\") { ...F } } fragment F on User { friend { ... on User { friend { friend { friend { id } } } } } }";
    let r = gw.query(deep).await;
    assert!(
        r.get("data").is_none() || r["data"].is_null(),
        "depth through fragments: {r}"
    );
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested too deep"),
        "{r}"
    );
    // Within every limit, fragments work.
    let fine = format!("{{ ...R }} fragment R on Query {{ {} }}", aliased_users(20));
    let r = gw.query(&fine).await;
    assert_eq!(r["data"]["a19"]["id"], "19", "{r}");
    assert!(up.count() >= 20);
    // A subscription is held to the same limits.
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    let sub = format!(
        r#"{{"type":"subscribe","id":"1","payload":{{"query":"subscription {{ ...S }} fragment S on Subscription {{ {} }}"}}}}"#,
        (0..31)
            .map(|i| format!("u{i}: user(id: \\\"1\\\") {{ id }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    ws.send(Message::text(sub)).await.expect("send");
    let reply = ws.next().await.expect("a reply").expect("read");
    let reply: serde_json::Value =
        serde_json::from_str(reply.to_text().expect("text")).expect("JSON");
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["payload"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("--max-aliases"),
        "{reply}"
    );
}

/// Also: a required variable is coerced before anything runs, even one only a directive
/// uses; validation errors are capped; a subscription written with bare CR line ends runs.
#[tokio::test]
async fn variables_are_coerced_first_errors_are_capped_and_any_line_end_works() {
    let (_up, gw) = users_gateway(Default::default(), 32).await;
    let res = gw
        .client
        .post(gw.url())
        .json(&serde_json::json!({"query": "query Q($x: Boolean!) { user(id: \"1\") @include(if: $x) { id } }"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        res.status(),
        400,
        "a missing required variable is a request error"
    );
    let r: serde_json::Value = res.json().await.expect("JSON");
    assert!(r.get("data").is_none(), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("$x"),
        "{r}"
    );
    let r = gw
        .query_with(
            "query Q($x: Boolean!) { user(id: \"1\") @include(if: $x) { id } }",
            serde_json::json!({"x": null}),
            &[],
        )
        .await;
    assert!(r.get("data").is_none(), "null for a non-null variable: {r}");
    let r = gw
        .query_with(
            "query Q($x: Boolean! = true) { user(id: \"1\") @include(if: $x) { id } }",
            serde_json::json!({}),
            &[],
        )
        .await;
    assert_eq!(r["data"]["user"]["id"], "1", "a default stands in: {r}");

    let unknown: String = (0..5_000).map(|i| format!("@d{i} ")).collect();
    let r = gw
        .query(&format!("{{ user(id: \"1\") {{ id {unknown} }} }}"))
        .await;
    let errors = r["errors"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(errors.len(), 101, "100 errors and one saying how many more");
    assert!(
        errors[100]["message"]
            .as_str()
            .unwrap_or("")
            .contains("more"),
        "{}",
        errors[100]
    );

    for nl in ["\r", "\r\n", "\n"] {
        let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
        let query = format!("# live{nl}subscription{nl}{{ user(id: \"7\") {{ name }} }}");
        let msg = serde_json::json!({"type": "subscribe", "id": "1", "payload": {"query": query}});
        ws.send(Message::text(msg.to_string())).await.expect("send");
        let reply = ws.next().await.expect("a reply").expect("read");
        let reply: serde_json::Value =
            serde_json::from_str(reply.to_text().expect("text")).expect("JSON");
        assert_eq!(reply["type"], "next", "line end {nl:?}: {reply}");
        assert_eq!(reply["payload"]["data"]["user"]["name"], "user 7");
    }
}

/// An upstream `/big` of about 1 MiB whose `v` is the counter's value, and a gateway with a
/// live `big` invalidated by the webhook (token `t`).
async fn big_gateway(
    version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    options: livegate::Options,
) -> (Upstream, Gateway) {
    use axum::routing::get;
    use std::sync::atomic::Ordering;
    let up = Upstream::start(axum::Router::new().route(
        "/big",
        get(move || {
            let n = version.load(Ordering::SeqCst);
            async move { axum::Json(serde_json::json!({"v": n, "pad": "x".repeat(1 << 20)})) }
        }),
    ))
    .await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
type Big {{ v: Int pad: String }}
type Query {{ big: Big @rest(upstream: "api", path: "/big") @cache(maxAge: 600, tags: ["big"]) }}
type Subscription {{ big: Big @live }}"#,
        up.url()
    );
    let mut options = options;
    options.webhook.token = Some("t".into());
    let gw = Gateway::start(&schema, options).await;
    (up, gw)
}

const BIG: &str =
    r#"{"type":"subscribe","id":"1","payload":{"query":"subscription { big { v pad } }"}}"#;

/// A subscriber of `big` that reads nothing (a small receive buffer, so the kernel holds
/// little for it).
async fn paused_subscriber(
    gw: &Gateway,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = socket.connect(gw.addr).await.expect("connect");
    let mut req = format!("ws://{}/graphql", gw.addr)
        .into_client_request()
        .expect("req");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("h"),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("upgrade");
    ws.send(Message::text(r#"{"type":"connection_init"}"#))
        .await
        .expect("init");
    ws.next().await.expect("ack").expect("read");
    ws.send(Message::text(BIG)).await.expect("subscribe");
    ws
}

async fn invalidate_big(gw: &Gateway) {
    let res = gw
        .client
        .post(format!("http://{}/hooks/invalidate", gw.addr))
        .bearer_auth("t")
        .json(&serde_json::json!({"tags": ["big"]}))
        .send()
        .await
        .expect("webhook");
    assert_eq!(res.status(), 200);
}

fn big_version(m: Message) -> u64 {
    let v: serde_json::Value = serde_json::from_str(m.to_text().expect("text")).expect("JSON");
    v["payload"]["data"]["big"]["v"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"))
}

/// Item 7: a client that stops reading holds at most `--max-queued-bytes` of results
/// queued on its socket, not a number of messages: its live query conflates, and when it
/// reads again it gets a few results ending with the latest — while a reading client on
/// another socket got every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_bounded_in_bytes_and_conflates() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let version = std::sync::Arc::new(AtomicU64::new(0));
    let mut options = livegate::Options::default();
    options.ws.max_queued_bytes = 1 << 20;
    let (_up, gw) = big_gateway(version.clone(), options).await;
    let mut paused = paused_subscriber(&gw).await;
    let mut reading = websocket(gw.addr, "graphql-transport-ws").await;
    reading.send(Message::text(BIG)).await.expect("subscribe");
    assert_eq!(
        big_version(reading.next().await.expect("first").expect("read")),
        0
    );

    let changes = 40;
    for n in 1..=changes {
        version.store(n, Ordering::SeqCst);
        invalidate_big(&gw).await;
        // The reading client sees each change before the next one is made.
        while big_version(reading.next().await.expect("a result").expect("read")) != n {}
    }
    // Now the paused client reads: a handful of results, the last one the latest.
    let mut received = 0;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), paused.next())
            .await
            .expect("the latest result arrives")
            .expect("open")
            .expect("read");
        received += 1;
        if big_version(msg) == changes {
            break;
        }
    }
    assert!(
        received <= 12,
        "{received} results of {changes} changes were queued for a client that did not read"
    );
}

/// A client whose socket stays unwritable for `--header-timeout-ms` is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_for_the_timeout_is_disconnected() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let version = std::sync::Arc::new(AtomicU64::new(0));
    let mut options = livegate::Options::default();
    options.connection_limits.header_timeout = Duration::from_millis(500);
    let (_up, gw) = big_gateway(version.clone(), options).await;
    let _paused = paused_subscriber(&gw).await;
    let mut reading = websocket(gw.addr, "graphql-transport-ws").await;
    reading.send(Message::text(BIG)).await.expect("subscribe");
    reading.next().await.expect("first").expect("read");
    for n in 1..=12 {
        version.store(n, Ordering::SeqCst);
        invalidate_big(&gw).await;
        while big_version(reading.next().await.expect("a result").expect("read")) != n {}
    }
    let page = gw
        .metrics_until(|p| sample(p, "livegate_connections{transport=\"websocket\"}") == 1.0)
        .await;
    assert_eq!(
        sample(&page, "livegate_connections{transport=\"websocket\"}"),
        1.0,
        "the client that reads nothing is disconnected, the other stays"
    );
    reading
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    assert!(reading
        .next()
        .await
        .expect("pong")
        .expect("read")
        .to_text()
        .expect("t")
        .contains("pong"));
}
