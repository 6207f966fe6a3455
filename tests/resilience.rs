//! Keeping on serving when an upstream falters: retries of idempotent requests within a
//! budget, circuit breakers, and `@cache(staleIfError:)` — against a real upstream that
//! fails on a schedule the test sets, counting what reaches it.

mod common;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{next_json, subscribe, websocket, Gateway, Upstream};
use livegate::upstream::guard::Settings;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// An upstream whose answers the test scripts: the next `failures` requests get
/// `status` (with `retry_after`, if set), and so does every GET while it is `down`; the
/// rest get `{"id": …, "n": <version>}`.
#[derive(Clone, Default)]
struct Script {
    failures: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    status: Arc<AtomicUsize>,
    retry_after: Arc<std::sync::Mutex<Option<String>>>,
    version: Arc<AtomicUsize>,
}

impl Script {
    fn answer(&self, id: &str, get: bool) -> axum::response::Response {
        let failing = (get && self.down.load(Ordering::SeqCst))
            || self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if failing {
            let status = StatusCode::from_u16(self.status.load(Ordering::SeqCst) as u16)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut res = (status, "down").into_response();
            if let Some(v) = self.retry_after.lock().expect("lock").clone() {
                if let Ok(v) = v.parse() {
                    res.headers_mut().insert("retry-after", v);
                }
            }
            return res;
        }
        axum::Json(json!({ "id": id, "n": self.version.load(Ordering::SeqCst) })).into_response()
    }

    fn router(&self) -> axum::Router {
        let get = self.clone();
        let post = self.clone();
        let put = self.clone();
        self.status.store(503, Ordering::SeqCst);
        axum::Router::new()
            .route(
                "/items/{id}",
                axum::routing::get(
                    move |axum::extract::Path(id): axum::extract::Path<String>| {
                        let s = get.clone();
                        async move { s.answer(&id, true) }
                    },
                )
                .put(
                    move |axum::extract::Path(id): axum::extract::Path<String>| {
                        let s = put.clone();
                        async move { s.answer(&id, false) }
                    },
                ),
            )
            .route(
                "/items",
                axum::routing::post(move || {
                    let s = post.clone();
                    async move { s.answer("new", false) }
                }),
            )
    }
}

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query {
  item(id: ID!): Item @rest(upstream: "api", path: "/items/{args.id}")
  cached(id: ID!): Item @rest(upstream: "api", path: "/items/{args.id}")
    @cache(maxAge: 600, staleIfError: 600, tags: ["item:{args.id}"])
  plain(id: ID!): Item @rest(upstream: "api", path: "/items/{args.id}")
    @cache(maxAge: 600, tags: ["item:{args.id}"])
}
type Mutation {
  create: Item @rest(upstream: "api", method: POST, path: "/items")
  replace(id: ID!): Item @rest(upstream: "api", method: PUT, path: "/items/{args.id}", idempotent: true)
    @invalidates(tags: ["item:{args.id}"])
}
type Subscription { cached(id: ID!): Item @live }
type Item { id: ID! n: Int! }
"#;

async fn start(script: &Script, resilience: Settings) -> (Upstream, Gateway) {
    let up = Upstream::start(script.router()).await;
    let gw = Gateway::start(
        &SCHEMA.replace("{up}", &up.url()),
        livegate::Options {
            resilience,
            upstream_timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await;
    (up, gw)
}

/// No breaker: these tests count retries alone.
fn retrying() -> Settings {
    Settings {
        failure_percent: 0,
        ..Settings::default()
    }
}

#[tokio::test]
async fn an_idempotent_request_is_retried_through_passing_failures_and_a_mutation_is_not() {
    let script = Script::default();
    let (up, gw) = start(&script, retrying()).await;
    // Two 503s, then an answer: the client sees the answer.
    script.failures.store(2, Ordering::SeqCst);
    let got = gw.query(r#"{ item(id: "1") { id n } }"#).await;
    assert_eq!(got["data"]["item"]["id"], "1", "{got}");
    assert_eq!(up.count_matching("GET /items/1"), 3);
    // A 500 does not pass (the upstream answered: it is broken), unlike 502, 503, 504.
    script.status.store(500, Ordering::SeqCst);
    script.failures.store(1, Ordering::SeqCst);
    let got = gw.query(r#"{ item(id: "2") { id } }"#).await;
    assert_eq!(
        common::error_code(&got).as_deref(),
        Some("UPSTREAM_HTTP_ERROR"),
        "{got}"
    );
    assert_eq!(up.count_matching("GET /items/2"), 1);
    // A POST is never sent twice ...
    script.status.store(503, Ordering::SeqCst);
    script.failures.store(1, Ordering::SeqCst);
    let got = gw.query("mutation { create { id } }").await;
    assert!(got["errors"].is_array(), "{got}");
    assert_eq!(up.count_matching("POST /items"), 1);
    // ... a PUT the schema marks idempotent is.
    script.failures.store(1, Ordering::SeqCst);
    let got = gw.query(r#"mutation { replace(id: "3") { id } }"#).await;
    assert_eq!(got["data"]["replace"]["id"], "3", "{got}");
    assert_eq!(up.count_matching("PUT /items/3"), 2);
    // At most --upstream-retries (2) retries: three tries, then the error.
    script.failures.store(10, Ordering::SeqCst);
    let got = gw.query(r#"{ item(id: "4") { id } }"#).await;
    assert!(got["errors"].is_array(), "{got}");
    assert_eq!(up.count_matching("GET /items/4"), 3);
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(
            &page,
            "livegate_upstream_retries_total{result=\"sent\",upstream=\"api\"}"
        ),
        5.0,
        "{page}"
    );
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_is_not_waited_for() {
    let script = Script::default();
    let (up, gw) = start(&script, retrying()).await;
    *script.retry_after.lock().expect("lock") = Some("60".into());
    script.failures.store(1, Ordering::SeqCst);
    let got = gw.query(r#"{ item(id: "1") { id } }"#).await;
    assert!(got["errors"].is_array(), "{got}");
    assert_eq!(up.count_matching("GET /items/1"), 1);
    // One within the deadline is: the retry comes after it, and succeeds.
    *script.retry_after.lock().expect("lock") = Some("1".into());
    script.failures.store(1, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let got = gw.query(r#"{ item(id: "2") { id } }"#).await;
    assert_eq!(got["data"]["item"]["id"], "2", "{got}");
    assert_eq!(up.count_matching("GET /items/2"), 2);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(
            &page,
            "livegate_upstream_retries_total{result=\"denied\",upstream=\"api\"}"
        ),
        1.0,
        "{page}"
    );
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_an_upstream_is_down() {
    let script = Script::default();
    let (up, gw) = start(
        &script,
        Settings {
            failure_percent: 0,
            budget_percent: 20,
            min_retries_per_s: 0,
            window_s: 600,
            ..Settings::default()
        },
    )
    .await;
    script.down.store(true, Ordering::SeqCst);
    for i in 0..50 {
        let got = gw
            .query(&format!(r#"{{ item(id: "{i}") {{ id }} }}"#))
            .await;
        assert!(got["errors"].is_array(), "{got}");
    }
    // 50 requests, and 20% of them again: not the 150 that three tries each would be.
    assert_eq!(up.count(), 60);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_closes_once_a_probe_succeeds() {
    let script = Script::default();
    let (up, gw) = start(
        &script,
        Settings {
            retries: 0,
            failure_percent: 50,
            min_requests: 5,
            open_for: std::time::Duration::from_millis(300),
            ..Settings::default()
        },
    )
    .await;
    script.down.store(true, Ordering::SeqCst);
    for i in 0..5 {
        gw.query(&format!(r#"{{ item(id: "{i}") {{ id }} }}"#))
            .await;
    }
    assert_eq!(up.count(), 5);
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(&page, "livegate_upstream_breaker_state{upstream=\"api\"}"),
        1.0
    );
    // Open: failed at once, never sent.
    for i in 5..15 {
        let got = gw
            .query(&format!(r#"{{ item(id: "{i}") {{ id }} }}"#))
            .await;
        assert_eq!(
            common::error_code(&got).as_deref(),
            Some("UPSTREAM_UNAVAILABLE"),
            "{got}"
        );
        assert!(
            got["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("circuit breaker"),
            "{got}"
        );
    }
    assert_eq!(up.count(), 5, "nothing reached the upstream while open");
    // The upstream recovers; once the open time passes a probe goes through and closes it.
    script.down.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = gw.query(r#"{ item(id: "ok") { id } }"#).await;
        if got["data"]["item"]["id"] == "ok" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(up.count(), 6, "one probe, no more");
    let page = gw.metrics().await;
    assert_eq!(
        common::sample(&page, "livegate_upstream_breaker_state{upstream=\"api\"}"),
        0.0
    );
    assert!(
        common::sample(
            &page,
            "livegate_upstream_short_circuited_total{upstream=\"api\"}"
        ) >= 10.0,
        "{page}"
    );
    for i in 0..5 {
        let got = gw
            .query(&format!(r#"{{ item(id: "after{i}") {{ id }} }}"#))
            .await;
        assert!(got["errors"].is_null(), "{got}");
    }
}

#[tokio::test]
async fn a_value_is_served_stale_when_its_refresh_fails_and_fresh_once_it_succeeds() {
    let script = Script::default();
    let (up, gw) = start(&script, retrying()).await;
    let first = gw
        .query(r#"{ cached(id: "1") { n } plain(id: "2") { n } }"#)
        .await;
    assert_eq!(
        first["data"],
        json!({"cached": {"n": 0}, "plain": {"n": 0}})
    );
    // Its GETs fail from now on; a change the gateway hears of (the mutation, which
    // still goes through, invalidates both entries).
    script.down.store(true, Ordering::SeqCst);
    script.version.store(1, Ordering::SeqCst);
    gw.query(r#"mutation { replace(id: "1") { id } }"#).await;
    gw.query(r#"mutation { replace(id: "2") { id } }"#).await;
    let got = gw
        .query(r#"{ cached(id: "1") { n } plain(id: "2") { n } }"#)
        .await;
    // With staleIfError: the last value, said to be stale; without: the error.
    assert_eq!(got["data"]["cached"], json!({"n": 0}), "{got}");
    assert_eq!(
        got["extensions"]["stale"],
        json!([{"path": ["cached"], "code": "UPSTREAM_HTTP_ERROR"}]),
        "{got}"
    );
    assert_eq!(got["data"]["plain"], json!(null), "{got}");
    assert_eq!(got["errors"][0]["path"], json!(["plain"]), "{got}");
    // Each request asks again (stale values are not kept as fresh ones).
    let before = up.count_matching("GET /items/1");
    gw.query(r#"{ cached(id: "1") { n } }"#).await;
    assert!(up.count_matching("GET /items/1") > before);
    // Back up: the fresh value, nothing stale.
    script.down.store(false, Ordering::SeqCst);
    let got = gw.query(r#"{ cached(id: "1") { n } }"#).await;
    assert_eq!(got, json!({"data": {"cached": {"n": 1}}}));
    let page = gw.metrics().await;
    assert!(
        common::sample(&page, "livegate_stale_if_error_total{upstream=\"api\"}") >= 2.0,
        "{page}"
    );
}

#[tokio::test]
async fn a_live_subscriber_keeps_its_value_while_the_upstream_is_down_and_gets_the_next_when_it_recovers(
) {
    let script = Script::default();
    let (_up, gw) = start(&script, retrying()).await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(&mut ws, "s", r#"subscription { cached(id: "7") { n } }"#).await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["payload"]["data"]["cached"]["n"], 0, "{first}");
    // The upstream's GETs fail; a change comes through a mutation (its PUT answered).
    script.down.store(true, Ordering::SeqCst);
    script.version.store(1, Ordering::SeqCst);
    let done = gw.query(r#"mutation { replace(id: "7") { id } }"#).await;
    assert_eq!(done["data"]["replace"]["id"], "7", "{done}");
    // The re-run after the invalidation fails: the subscriber keeps its value, told it
    // is stale — no error.
    let stale = next_json(&mut ws).await;
    assert_eq!(stale["type"], "next", "{stale}");
    assert_eq!(stale["payload"]["data"]["cached"]["n"], 0, "{stale}");
    assert!(stale["payload"]["errors"].is_null(), "{stale}");
    assert_eq!(
        stale["payload"]["extensions"]["stale"][0]["path"],
        json!(["cached"])
    );
    // Recovered: the query runs again by itself and the subscriber gets the new value.
    script.down.store(false, Ordering::SeqCst);
    let fresh = next_json(&mut ws).await;
    assert_eq!(
        fresh["payload"],
        json!({"data": {"cached": {"n": 1}}}),
        "{fresh}"
    );
}
