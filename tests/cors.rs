//! Browser apps on other origins: CORS on `/graphql` when `--cors-origin` allows them, none
//! otherwise; WebSocket upgrades from a foreign `Origin` refused unless allowed.

mod common;

use axum::routing::get;
use axum::{Json, Router};
use common::{Gateway, Upstream};
use serde_json::json;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Thing { id: ID! }
type Query { thing: Thing @rest(upstream: "api", path: "/thing") @cache(maxAge: 60) }
"#;

const APP: &str = "https://app.example.com";

async fn gateway(origins: &[&str]) -> (Upstream, Gateway) {
    let up =
        Upstream::start(Router::new().route("/thing", get(|| async { Json(json!({"id": "1"})) })))
            .await;
    let options = livegate::Options {
        cors: livegate::server::cors::Cors::new(
            &origins.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        )
        .expect("origins"),
        ..Default::default()
    };
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    (up, gw)
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn preflight(gw: &Gateway, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, gw.url())
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight answered")
}

async fn post(gw: &Gateway, origin: &str, accept: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url())
        .header("origin", origin)
        .header("accept", accept)
        .json(&json!({"query": "{ thing { id } }"}))
        .send()
        .await
        .expect("answered")
}

/// The upgrade's HTTP status for a WebSocket from `origin` (101 when accepted).
async fn upgrade_status(gw: &Gateway, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = gw
        .url()
        .replace("http://", "ws://")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("h"),
    );
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().expect("h"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, res)) => res.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("upgrade: {e}"),
    }
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_on_queries_preflights_and_sse() {
    let (_up, gw) = gateway(&[APP]).await;
    let pre = preflight(&gw, APP).await;
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        header(&pre, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&pre, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let methods = header(&pre, "access-control-allow-methods").unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = header(&pre, "access-control-allow-headers").unwrap_or_default();
    assert!(allowed.contains("authorization"), "{allowed}");

    let res = post(&gw, APP, "application/json").await;
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json"),
        json!({"data": {"thing": {"id": "1"}}})
    );
    let sse = post(&gw, APP, "text/event-stream").await;
    assert_eq!(
        header(&sse, "access-control-allow-origin").as_deref(),
        Some(APP)
    );

    // Another origin gets no permission (the browser blocks the response).
    let other = post(&gw, "https://evil.example", "application/json").await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    assert_eq!(
        header(
            &preflight(&gw, "https://evil.example").await,
            "access-control-allow-origin"
        ),
        None
    );

    assert_eq!(upgrade_status(&gw, Some(APP)).await, 101);
    assert_eq!(upgrade_status(&gw, Some("https://evil.example")).await, 403);
}

#[tokio::test]
async fn without_cors_origins_only_the_same_origin_and_non_browsers_get_in() {
    let (_up, gw) = gateway(&[]).await;
    let res = post(&gw, APP, "application/json").await;
    assert_eq!(header(&res, "access-control-allow-origin"), None);
    assert_eq!(
        header(&preflight(&gw, APP).await, "access-control-allow-origin"),
        None
    );

    let own = gw.url().replace("/graphql", "");
    assert_eq!(
        upgrade_status(&gw, Some(&own)).await,
        101,
        "same origin (GraphiQL)"
    );
    assert_eq!(
        upgrade_status(&gw, None).await,
        101,
        "no Origin: not a browser"
    );
    assert_eq!(upgrade_status(&gw, Some(APP)).await, 403);
}

#[tokio::test]
async fn any_origin_with_a_star() {
    let (_up, gw) = gateway(&["*"]).await;
    let res = post(&gw, "https://anyone.example", "application/json").await;
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        upgrade_status(&gw, Some("https://anyone.example")).await,
        101
    );
}
