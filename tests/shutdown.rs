//! Graceful shutdown: in-flight queries finish, SSE streams complete, `run` returns.

mod common;

use axum::routing::get;
use axum::{Json, Router};
use common::Upstream;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Notify};

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Thing { id: ID! }
type Query {
  slow: Thing @rest(upstream: "api", path: "/slow")
  fast: Thing @rest(upstream: "api", path: "/fast") @cache(maxAge: 60)
}
type Subscription { fast: Thing @live }
"#;

/// A gateway on `up` with `options`: its address, its stop switch and its task.
async fn start(
    up: &Upstream,
    options: livegate::Options,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), livegate::Error>>,
) {
    let plan = livegate::plan::load(
        "s.graphql",
        &SCHEMA.replace("{up}", &up.url()),
        Vec::<(String, String)>::new(),
    )
    .expect("plan");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(livegate::run(listener, plan, options, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

#[tokio::test]
async fn in_flight_queries_finish_and_sse_streams_complete() {
    // The slow upstream answers only when told, and says when it has the request.
    let arrived = Arc::new(Notify::new());
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let app = Router::new()
        .route("/fast", get(|| async { Json(json!({"id": "f"})) }))
        .route(
            "/slow",
            get({
                let arrived = arrived.clone();
                move || {
                    let arrived = arrived.clone();
                    let released = released.lock().ok().and_then(|mut r| r.take());
                    async move {
                        arrived.notify_one();
                        if let Some(r) = released {
                            let _ = r.await;
                        }
                        Json(json!({"id": "s"}))
                    }
                }
            }),
        );
    let up = Upstream::start(app).await;
    let (addr, stop, server) = start(&up, livegate::Options::default()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/graphql");

    // An SSE live query, open.
    let mut sse = client
        .post(&url)
        .header("accept", "text/event-stream")
        .json(&json!({"query": "subscription { fast { id } }"}))
        .send()
        .await
        .expect("sse");
    let first = sse.chunk().await.expect("chunk").expect("first event");
    assert!(String::from_utf8_lossy(&first).starts_with("event: next"));

    // A query in flight at the upstream.
    let query = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(&url)
                .json(&json!({"query": "{ slow { id } }"}))
                .send()
                .await
                .expect("answer")
                .json::<Value>()
                .await
                .expect("json")
        }
    });
    arrived.notified().await;

    // Shut down, then let the upstream answer.
    stop.send(()).expect("server running");
    let mut rest = Vec::new();
    while let Some(chunk) = sse.chunk().await.expect("stream") {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&rest).ends_with("event: complete\ndata: \n\n"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    release.send(()).expect("upstream waiting");
    assert_eq!(
        query.await.expect("task"),
        json!({"data": {"slow": {"id": "s"}}})
    );
    server.await.expect("task").expect("run returns cleanly");
}

/// With `shutdown_delay`, the signal first turns `/readyz` to 503 while queries are still
/// served and new connections accepted; `run` returns once the delay has passed.
#[tokio::test]
async fn readiness_fails_first_during_the_shutdown_delay() {
    let up =
        Upstream::start(Router::new().route("/fast", get(|| async { Json(json!({"id": "f"})) })))
            .await;
    let options = livegate::Options {
        shutdown_delay: std::time::Duration::from_millis(1500),
        ..Default::default()
    };
    let (addr, stop, server) = start(&up, options).await;
    let client = reqwest::Client::new();
    let ready = format!("http://{addr}/readyz");
    let status = client.get(&ready).send().await.expect("readyz").status();
    assert_eq!(status, 200);

    stop.send(()).expect("server running");
    // The signal is taken by the server's task: ask until it has been (each ask answered).
    let mut body = Value::Null;
    for _ in 0..1000 {
        let res = client.get(&ready).send().await.expect("readyz answers");
        if res.status() == 503 {
            body = res.json().await.expect("json");
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        body,
        json!({"status": "unavailable", "reason": "shutting down"})
    );
    // Still serving, on a new connection too.
    let fresh = reqwest::Client::new();
    let answer: Value = fresh
        .post(format!("http://{addr}/graphql"))
        .json(&json!({"query": "{ fast { id } }"}))
        .send()
        .await
        .expect("served during the delay")
        .json()
        .await
        .expect("json");
    assert_eq!(answer, json!({"data": {"fast": {"id": "f"}}}));
    server
        .await
        .expect("task")
        .expect("run returns after the delay");
}
