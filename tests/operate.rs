//! Operating endpoints: health, readiness, and Prometheus metrics that move with traffic.

mod common;

use axum::routing::get;
use axum::{Json, Router};
use common::{sample, Gateway, Upstream};
use serde_json::json;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Thing { id: ID! name: String }
type Query {
  thing: Thing @rest(upstream: "api", path: "/thing") @cache(maxAge: 60, tags: ["thing"])
  broken: Thing @rest(upstream: "api", path: "/broken")
}
type Mutation { touch: Thing @rest(upstream: "api", method: POST, path: "/thing") @invalidates(tags: ["thing"]) }
"#;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = Router::new()
        .route(
            "/thing",
            get(|| async { Json(json!({"id": "1", "name": "thing"})) })
                .post(|| async { Json(json!({"id": "1"})) }),
        )
        .route(
            "/broken",
            get(|| async { (axum::http::StatusCode::BAD_GATEWAY, "no") }),
        );
    let up = Upstream::start(app).await;
    let mut options = livegate::Options::default();
    options.webhook.token = Some("tok".into());
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    let base = format!("http://{}", gw.addr);

    for path in ["/healthz", "/readyz"] {
        let res = gw
            .client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("health");
        assert_eq!(res.status(), 200, "{path}");
    }

    gw.query("{ thing { id } }").await; // miss, one upstream request
    gw.query("{ thing { id } }").await; // the whole response again
    gw.query("{ thing { name } }").await; // another selection: an entry hit
    gw.query("{ broken { id } }").await; // an upstream 5xx
    gw.query("mutation { touch { id } }").await; // a mutation invalidation
                                                 // A malformed request and one over the body limit.
    let bad = gw
        .client
        .post(gw.url())
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    let hook = |auth: &'static str| {
        gw.client
            .post(format!("{base}/hooks/invalidate"))
            .header("authorization", auth)
            .body(r#"{"tags":["thing"]}"#)
            .send()
    };
    assert_eq!(hook("Bearer nope").await.expect("hook").status(), 401);
    assert_eq!(hook("Bearer tok").await.expect("hook").status(), 200);

    let res = gw
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/plain")));
    let page = res.text().await.expect("page");
    let expect = [
        // `thing` once, and `broken`, which has no @cache (it still goes through the
        // cache's single flight, as a miss).
        (r#"livegate_cache_lookups_total{outcome="miss"}"#, 2.0),
        (r#"livegate_cache_lookups_total{outcome="hit"}"#, 1.0),
        ("livegate_response_cache_hits_total", 1.0),
        (
            r#"livegate_upstream_requests_total{method="GET",status="2xx",upstream="api"}"#,
            1.0,
        ),
        (
            // A 502 is retried (--upstream-retries 2): each attempt is a request.
            r#"livegate_upstream_requests_total{method="GET",status="5xx",upstream="api"}"#,
            3.0,
        ),
        (
            r#"livegate_upstream_retries_total{result="sent",upstream="api"}"#,
            2.0,
        ),
        (r#"livegate_upstream_breaker_state{upstream="api"}"#, 0.0),
        (
            r#"livegate_upstream_requests_total{method="POST",status="2xx",upstream="api"}"#,
            1.0,
        ),
        (r#"livegate_invalidations_total{source="mutation"}"#, 1.0),
        (r#"livegate_invalidations_total{source="webhook"}"#, 1.0),
        (r#"livegate_rejected_total{reason="auth"}"#, 1.0),
        (r#"livegate_rejected_total{reason="malformed"}"#, 1.0),
        ("livegate_invalidated_entries_total", 1.0),
        ("livegate_cache_entries", 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&page, series), want, "{series} in\n{page}");
    }
    assert!(
        sample(
            &page,
            r#"livegate_upstream_request_seconds_count{upstream="api"}"#
        ) >= 3.0,
        "{page}"
    );
}

#[tokio::test]
async fn introspection_can_be_disabled() {
    let up =
        Upstream::start(Router::new().route("/thing", get(|| async { Json(json!({"id": "1"})) })))
            .await;
    let schema = SCHEMA.replace("{up}", &up.url());
    let open = Gateway::start(&schema, livegate::Options::default()).await;
    let r = open.query("{ __schema { queryType { name } } }").await;
    assert_eq!(r["data"]["__schema"]["queryType"]["name"], "Query", "{r}");
    let mut options = livegate::Options::default();
    options.limits.disable_introspection = true;
    let closed = Gateway::start(&schema, options).await;
    let r = closed.query("{ __schema { queryType { name } } }").await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("__schema")),
        "{r}"
    );
    // Ordinary queries still work.
    let r = closed.query("{ thing { id } }").await;
    assert_eq!(r["data"]["thing"]["id"], "1");
}

#[tokio::test]
async fn aliases_and_root_fields_are_limited() {
    let up =
        Upstream::start(Router::new().route("/thing", get(|| async { Json(json!({"id": "1"})) })))
            .await;
    let mut options = livegate::Options::default();
    options.connection_limits.max_aliases = 3;
    options.connection_limits.max_root_fields = 2;
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    let r = gw
        .query("{ a: thing { id } b: thing { x: id } c: thing { y: id } }")
        .await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED",
        "{r}"
    );
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("5 aliases; 3 at most")),
        "{r}"
    );
    let r = gw.query("{ thing { id } broken { id } __typename }").await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 root fields; 2 at most")),
        "{r}"
    );
    assert_eq!(up.count(), 0, "nothing ran");
    // Within the limits, and another client: fine.
    let r = gw.query("{ a: thing { id } b: thing { id } }").await;
    assert_eq!(r["data"]["a"]["id"], "1", "{r}");
}

#[tokio::test]
async fn only_listed_headers_are_forwarded() {
    let echo = Router::new().route(
        "/who",
        get(|h: axum::http::HeaderMap| async move {
            let v = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            let name = v("x-secret").or(v("proxy-authorization"));
            Json(json!({"id": v("x-tenant").unwrap_or_default(), "name": name}))
        }),
    );
    let up = Upstream::start(echo).await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}", forwardHeaders: ["x-tenant", "proxy-authorization"])
        type Who {{ id: ID! name: String }}
        type Query {{ who: Who @rest(upstream: "api", path: "/who") }}"#,
        up.url()
    );
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    // `x-secret` is not listed; `proxy-authorization` is, but hop-by-hop headers never pass.
    let r = gw
        .query_with(
            "{ who { id name } }",
            json!({}),
            &[
                ("x-tenant", "acme"),
                ("x-secret", "s3"),
                ("proxy-authorization", "Basic eA=="),
            ],
        )
        .await;
    assert_eq!(r["data"]["who"], json!({"id": "acme", "name": null}), "{r}");
}

#[tokio::test]
async fn depth_and_complexity_are_limited() {
    let up = Upstream::start(Router::new().route(
        "/thing",
        get(|| async { Json(json!({"id": "1", "name": "n"})) }),
    ))
    .await;
    let mut options = livegate::Options::default();
    options.limits.max_depth = 1;
    options.limits.max_complexity = 3;
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    let r = gw.query("{ thing { id } }").await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nested too deep")),
        "{r}"
    );
    let mut options = livegate::Options::default();
    options.limits.max_complexity = 3;
    let gw2 = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    let r = gw2.query("{ thing { id name } broken { id name } }").await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("complex")),
        "{r}"
    );
    assert_eq!(up.count(), 0, "nothing ran");
    // Within the limits: fine.
    let r = gw2.query("{ thing { id } }").await;
    assert_eq!(r["data"]["thing"]["id"], "1", "{r}");
}

#[tokio::test]
async fn the_cache_stays_within_its_budget_and_counts_evictions() {
    let up = Upstream::start(Router::new().route(
        "/items/{id}",
        get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move {
                Json(json!({"id": id, "name": "x".repeat(200)}))
            },
        ),
    ))
    .await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
        type Item {{ id: ID! name: String }}
        type Query {{ item(id: ID!): Item @rest(upstream: "api", path: "/items/{{args.id}}") @cache(maxAge: 60) }}"#,
        up.url()
    );
    // Room for about two entries of ~270 bytes.
    let options = livegate::Options {
        cache_bytes: 600,
        response_cache_bytes: 0,
        ..Default::default()
    };
    let gw = Gateway::start(&schema, options).await;
    for id in 0..10 {
        gw.query(&format!(r#"{{ item(id: "{id}") {{ id }} }}"#))
            .await;
    }
    let page = gw
        .client
        .get(format!("http://{}/metrics", gw.addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("page");
    assert!(
        sample(&page, "livegate_cache_evictions_total") >= 7.0,
        "{page}"
    );
    assert!(sample(&page, "livegate_cache_entries") <= 3.0, "{page}");
}
