//! Issue 18's probe, as an attacker tried it: one request must never take the gateway
//! down (deep nesting of every recursive construct, long fragment chains, on every
//! transport), no cross-site request may run a mutation or another caller's operation
//! (GET that streams, reservation posts), and the limits hold through fragments. Each
//! gateway here runs on a multi-threaded runtime, as in production: a request that
//! overflowed a worker's stack would abort this whole test binary.

mod common;

use common::{error_code, next_json, websocket, Gateway};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query {
  user(id: ID): User @rest(upstream: "api", path: "/users/{args.id}") @cache(maxAge: 60)
  item(id: ID): User @rest(upstream: "api", path: "/users/{args.id}")
  me: User @rest(upstream: "api", path: "/users/1") @cache(maxAge: 60, scope: PRIVATE)
}
type Mutation {
  touch: User @rest(upstream: "api", path: "/touch", method: POST)
}
type Subscription {
  me: User @live
  user(id: ID): User @live
}
type User { id: ID name: String }
"#;

/// An upstream that counts the mutations it was asked to run.
async fn gateway() -> (common::Upstream, Gateway, Arc<AtomicUsize>) {
    use axum::routing::{get, post};
    let touched = Arc::new(AtomicUsize::new(0));
    let t = touched.clone();
    let app = axum::Router::new()
        .route(
            "/users/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    axum::Json(json!({"id": id, "name": format!("user {id}")}))
                },
            ),
        )
        .route(
            "/touch",
            post(move || {
                let t = t.clone();
                async move {
                    t.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"id": "1", "name": "touched"}))
                }
            }),
        );
    let (up, gw) = common::serve(app, SCHEMA).await;
    (up, gw, touched)
}

/// The next message that is not a legacy keep-alive.
async fn next_message(ws: &mut common::Ws) -> Value {
    loop {
        let got = next_json(ws).await;
        if got["type"] != "ka" {
            return got;
        }
    }
}

/// POSTs `doc` as JSON, with `accept` if any; the gateway's response.
async fn post_query(gw: &Gateway, doc: &str, accept: Option<&str>) -> reqwest::Response {
    let mut req = gw
        .client
        .post(gw.url())
        .header("content-type", "application/json")
        .json(&json!({ "query": doc }));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    req.send().await.expect("answers")
}

/// The gateway still answers a plain query.
async fn alive(gw: &Gateway) {
    let v = gw.query(r#"{ user(id: "7") { name } }"#).await;
    assert_eq!(v["data"]["user"]["name"], "user 7", "{v}");
}

/// `{ user(id: [[[…1…]]]) { id } }`, nested `depth` deep.
fn deep_list(depth: usize) -> String {
    format!(
        "{{ user(id: {}1{}) {{ id }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// Documents that nest each recursive construct of the grammar `depth` deep.
fn deep_documents(depth: usize) -> Vec<(&'static str, String)> {
    let object = format!(
        "{{ user(id: {}1{}) {{ id }} }}",
        "{a: ".repeat(depth),
        "}".repeat(depth)
    );
    let selections = format!("{{ {}id{} }}", "user { ".repeat(depth), " }".repeat(depth));
    let inline = format!(
        "{{ {}id{} }}",
        "... on Query { ".repeat(depth),
        " }".repeat(depth)
    );
    let directive_args = format!(
        "{{ user(id: \"1\") @include(if: {}true{}) {{ id }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let variable_default = format!(
        "query($v: ID = {}1{}) {{ user(id: $v) {{ id }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let variable_type = format!(
        "query($v: {}ID{}) {{ user(id: $v) {{ id }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    vec![
        ("list value", deep_list(depth)),
        ("object value", object),
        ("selection set", selections),
        ("inline fragment", inline),
        ("directive argument", directive_args),
        ("variable default", variable_default),
        ("variable type", variable_type),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_a_request_error_on_every_transport() {
    let (_up, gw, _) = gateway().await;
    let client = reqwest::Client::new();
    for (what, doc) in deep_documents(2_000) {
        // POST
        let res = post_query(&gw, &doc, None).await;
        assert_eq!(res.status(), 400, "{what}");
        let v: Value = res.json().await.expect("JSON");
        assert_eq!(
            error_code(&v).as_deref(),
            Some("LIMIT_EXCEEDED"),
            "{what}: {v}"
        );
        // GET, as an <img src> would send it
        let res = client
            .get(gw.url())
            .query(&[("query", doc.as_str())])
            .send()
            .await
            .expect("answers");
        assert_eq!(res.status(), 400, "{what} over GET");
        // SSE
        let res = post_query(&gw, &doc, Some("text/event-stream")).await;
        assert_eq!(res.status(), 400, "{what} over SSE");
    }
    // WebSocket, both subprotocols: an error message, and the socket lives on.
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = websocket(gw.addr, protocol).await;
        let kind = if protocol == "graphql-ws" {
            "start"
        } else {
            "subscribe"
        };
        let msg = json!({"id": "1", "type": kind, "payload": {"query": deep_list(2_000)}});
        ws.send(Message::text(msg.to_string())).await.expect("send");
        let got = next_message(&mut ws).await;
        assert_eq!(got["type"], "error", "{protocol}: {got}");
        let msg =
            json!({"id": "2", "type": kind, "payload": {"query": "{ user(id: \"3\") { name } }"}});
        ws.send(Message::text(msg.to_string())).await.expect("send");
        let got = next_message(&mut ws).await;
        assert_eq!(
            got["payload"]["data"]["user"]["name"], "user 3",
            "{protocol}: {got}"
        );
    }
    // Just under the bound: an ordinary validation error, no crash.
    let v = gw.query(&deep_list(120)).await;
    assert!(v["errors"][0]["message"].is_string(), "{v}");
    alive(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chain_of_fragment_spreads_is_refused() {
    let (_up, gw, _) = gateway().await;
    for n in [100usize, 12_000] {
        let mut doc = String::from("{ ...F0 }\n");
        for i in 0..n {
            doc.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i + 1));
        }
        doc.push_str(&format!(
            "fragment F{n} on Query {{ user(id: \"1\") {{ id }} }}\n"
        ));
        let res = post_query(&gw, &doc, None).await;
        assert_eq!(res.status(), 400, "{n} spreads");
        let v: Value = res.json().await.expect("JSON");
        assert_eq!(error_code(&v).as_deref(), Some("LIMIT_EXCEEDED"), "{v}");
    }
    alive(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_never_runs_a_mutation_whatever_it_accepts() {
    let (_up, gw, touched) = gateway().await;
    let client = reqwest::Client::new();
    for accept in [
        "text/event-stream",
        "multipart/mixed;subscriptionSpec=1.0",
        "multipart/mixed;subscriptionSpec=1.0, application/json",
        "application/json",
        "*/*",
    ] {
        let res = client
            .get(gw.url())
            .header("accept", accept)
            .query(&[("query", "mutation { touch { id } }")])
            .send()
            .await
            .expect("answers");
        assert_eq!(res.status(), 405, "Accept: {accept}");
        assert_eq!(
            res.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("POST")
        );
    }
    assert_eq!(touched.load(Ordering::SeqCst), 0, "a mutation ran over GET");
}

/// POSTs `body` to the reservation `token` as `content_type`, with `cookie`: the status.
async fn post_to(
    client: &reqwest::Client,
    gw: &Gateway,
    token: &str,
    content_type: &str,
    cookie: &str,
    body: &Value,
) -> u16 {
    client
        .post(format!("{}?token={token}", gw.url()))
        .header("content-type", content_type)
        .header("cookie", cookie)
        .body(body.to_string())
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

/// A reserved graphql-sse stream: its token.
async fn reserve(client: &reqwest::Client, gw: &Gateway, cookie: &str) -> String {
    let res = client
        .put(gw.url())
        .header("cookie", cookie)
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), 201);
    res.text().await.expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_posts_are_held_to_the_content_type_and_their_maker() {
    let (_up, gw, touched) = gateway().await;
    let client = reqwest::Client::new();
    let token = reserve(&client, &gw, "session=attacker").await;
    let op = json!({"query": "mutation { touch { id } }", "extensions": {"operationId": "x"}});
    // A victim's browser, cross-site: text/plain needs no preflight.
    let status = post_to(&client, &gw, &token, "text/plain", "session=victim", &op).await;
    assert_eq!(status, 415);
    // Declared JSON, but with somebody else's credentials.
    let status = post_to(
        &client,
        &gw,
        &token,
        "application/json",
        "session=victim",
        &op,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(touched.load(Ordering::SeqCst), 0, "an operation ran");
    // Nor may somebody else open its stream.
    let res = client
        .get(format!("{}?token={token}", gw.url()))
        .header("accept", "text/event-stream")
        .header("cookie", "session=victim")
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), 403);
    // The maker may.
    let status = post_to(
        &client,
        &gw,
        &token,
        "application/json",
        "session=attacker",
        &op,
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_select_one_root_field_through_fragments() {
    let (_up, gw, _) = gateway().await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    for (i, doc) in [
        "subscription { me { id } ... { user(id: \"9\") { id } } }",
        "subscription { ... on Subscription { me { id } } ...F } fragment F on Subscription { user(id: \"2\") { id } }",
        "subscription { a: me { id } b: me { name } }",
    ]
    .iter()
    .enumerate()
    {
        let msg = json!({"id": i.to_string(), "type": "subscribe", "payload": {"query": doc}});
        ws.send(Message::text(msg.to_string())).await.expect("send");
        let got = next_json(&mut ws).await;
        assert_eq!(got["type"], "error", "{doc}: {got}");
        assert!(
            got["payload"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("exactly one root field")),
            "{got}"
        );
    }
    // One field, merged from a fragment and the selection: allowed.
    let doc = "subscription { me { id } ... { me { name } } }";
    let msg = json!({"id": "ok", "type": "subscribe", "payload": {"query": doc}});
    ws.send(Message::text(msg.to_string())).await.expect("send");
    let got = next_json(&mut ws).await;
    assert_eq!(got["type"], "next", "{got}");
    assert_eq!(got["payload"]["data"]["me"]["name"], "user 1", "{got}");
}

/// An upstream with a list of `n` items at `/items/{n}`, counting its requests, and
/// `/slow`, which answers after 100 ms while counting how many it holds at once.
fn lists_upstream(in_flight: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/items/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<usize>| async move {
                    let items: Vec<Value> = (0..n)
                        .map(|i| json!({"id": i.to_string(), "name": format!("item number {i}")}))
                        .collect();
                    axum::Json(Value::Array(items))
                },
            ),
        )
        .route(
            "/slow/{i}",
            get(move |axum::extract::Path(i): axum::extract::Path<usize>| {
                let (in_flight, most) = (in_flight.clone(), most.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(json!({"id": i.to_string(), "name": "slow"}))
                }
            }),
        )
}

const LISTS: &str = r#"
extend schema @upstream(name: "api", url: "{up}", maxConnections: 4)
type Query {
  items(n: Int): [Item] @rest(upstream: "api", path: "/items/{args.n}") @cache(maxAge: 60)
  slow(i: Int): Item @rest(upstream: "api", path: "/slow/{args.i}")
}
type Item { id: ID name: String }
"#;

async fn lists_gateway(
    options: livegate::Options,
) -> (common::Upstream, Gateway, Arc<AtomicUsize>) {
    let most = Arc::new(AtomicUsize::new(0));
    let up = common::Upstream::start(lists_upstream(Arc::default(), most.clone())).await;
    let gw = Gateway::start(&LISTS.replace("{up}", &up.url()), options).await;
    (up, gw, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_weighs_what_it_keeps() {
    let (up, gw, _) = lists_gateway(livegate::Options::default()).await;
    let body_bytes = serde_json::to_vec(
        &(0..20_000)
            .map(|i| json!({"id": i.to_string(), "name": format!("item number {i}")}))
            .collect::<Vec<_>>(),
    )
    .expect("encodes")
    .len();
    let v = gw.query("{ items(n: 20000) { id } }").await;
    assert_eq!(v["data"]["items"][19_999]["id"], "19999");
    let page = gw.metrics().await;
    let weighed = common::sample(&page, "livegate_cache_bytes");
    // The parsed list holds several times its body: the budget counts that.
    assert!(
        weighed > 4.0 * body_bytes as f64,
        "weighed {weighed} for a body of {body_bytes}"
    );
    assert_eq!(up.count(), 1);

    // A budget smaller than the parsed list: it is not kept (it was, when the budget
    // counted body bytes), and what the cache holds stays within the budget.
    let options = livegate::Options {
        cache_bytes: (body_bytes as u64) * 2,
        response_cache_bytes: 0,
        ..livegate::Options::default()
    };
    let (up, gw, _) = lists_gateway(options).await;
    for _ in 0..2 {
        let v = gw.query("{ items(n: 20000) { id } }").await;
        assert_eq!(v["data"]["items"][0]["id"], "0");
    }
    let page = gw.metrics().await;
    assert!(common::sample(&page, "livegate_cache_bytes") <= (body_bytes * 2) as f64);
    assert_eq!(up.count(), 2, "an entry beyond the budget was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_past_its_bound_is_an_error_not_memory() {
    let options = livegate::Options {
        max_response_bytes: 200_000,
        ..livegate::Options::default()
    };
    let (_up, gw, _) = lists_gateway(options).await;
    let v = gw.query("{ items(n: 100000) { id name } }").await;
    assert_eq!(
        v["data"],
        Value::Null,
        "{}",
        &v.to_string()[..200.min(v.to_string().len())]
    );
    assert_eq!(
        error_code(&v).as_deref(),
        Some("RESPONSE_TOO_LARGE"),
        "{}",
        v["errors"]
    );
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(1));
    // Under the bound: answered.
    let v = gw.query("{ items(n: 1000) { id } }").await;
    assert_eq!(v["data"]["items"][999]["id"], "999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_gets_at_most_its_bound_of_requests_at_once() {
    let (up, gw, most) = lists_gateway(livegate::Options::default()).await;
    // 16 distinct requests at once (aliases of one query: the executor runs them together).
    let fields: Vec<String> = (0..16)
        .map(|i| format!("s{i}: slow(i: {i}) {{ id }}"))
        .collect();
    let v = gw.query(&format!("{{ {} }}", fields.join(" "))).await;
    assert_eq!(v["data"]["s15"]["id"], "15", "{v}");
    assert_eq!(up.count_matching("GET /slow"), 16);
    let most = most.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "{most} requests in flight at once; maxConnections is 4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_reservation_frees_its_slot_on_a_timer() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (up, _) = (common::Upstream::start(axum::Router::new()).await, ());
    let mut options = livegate::Options::default();
    options.connection_limits.max_connections = 1;
    options.ws.reservation_claim = std::time::Duration::from_millis(300);
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    let client = reqwest::Client::new();
    let _token = reserve(&client, &gw, "session=a").await;
    let open_socket = || async {
        let mut req = format!("ws://{}/graphql", gw.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        tokio_tungstenite::connect_async(req).await.is_ok()
    };
    assert!(!open_socket().await, "the reservation holds the only slot");
    // Nobody reserves again: the timer alone frees the slot.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if open_socket().await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apq_keeps_only_documents_that_parse_and_validate() {
    use sha2::Digest;
    let (_up, gw, _) = gateway().await;
    let client = reqwest::Client::new();
    let register = |query: String| {
        let client = client.clone();
        let url = gw.url();
        async move {
            let hash = hex::encode(sha2::Sha256::digest(query.as_bytes()));
            let body = json!({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
            let _ = client.post(&url).json(&body).send().await.expect("answers");
            let by_hash =
                json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
            let v: Value = client
                .post(&url)
                .json(&by_hash)
                .send()
                .await
                .expect("answers")
                .json()
                .await
                .expect("JSON");
            v
        }
    };
    for junk in [
        format!("{{ not graphql {}", "x".repeat(1000)),
        "{ nosuchfield }".to_string(),
    ] {
        let v = register(junk).await;
        assert_eq!(
            error_code(&v).as_deref(),
            Some("PERSISTED_QUERY_NOT_FOUND"),
            "{v}"
        );
    }
    let v = register("{ user(id: \"5\") { name } }".to_string()).await;
    assert_eq!(v["data"]["user"]["name"], "user 5", "{v}");
}
