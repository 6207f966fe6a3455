//! `POST /hooks/invalidate`: authentication, bad input, and what an accepted call does.

mod common;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use common::{Gateway, Upstream};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Thing { id: ID! }
type Query { thing(id: ID!): Thing @rest(upstream: "api", path: "/things/{args.id}") @cache(maxAge: 60, tags: ["thing:{args.id}"]) }
"#;

async fn setup(secret: Option<&str>, token: Option<&str>) -> (Upstream, Gateway) {
    let up = Upstream::start(Router::new().route(
        "/things/{id}",
        get(|Path(id): Path<String>| async move { Json(json!({"id": id})) }),
    ))
    .await;
    let mut options = livegate::Options::default();
    options.webhook.secret = secret.map(str::to_string);
    options.webhook.token = token.map(str::to_string);
    options.webhook.max_body = 256;
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    (up, gw)
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn hook(gw: &Gateway, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut req = gw
        .client
        .post(format!("http://{}/hooks/invalidate", gw.addr))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.expect("webhook answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_webhook_is_off_unless_configured() {
    let (_up, gw) = setup(None, None).await;
    let (status, body) = hook(&gw, r#"{"tags": ["thing:1"]}"#, &[]).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("--webhook-secret")),
        "{body}"
    );
}

#[tokio::test]
async fn rejected_calls_say_why_and_invalidate_nothing() {
    let (up, gw) = setup(Some("s3cret"), Some("t0ken")).await;
    gw.query(r#"{ thing(id: "1") { id } }"#).await;
    let body = r#"{"tags": ["thing:1"]}"#;
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (body, vec![], 401, "missing or wrong credentials"),
        (
            body,
            vec![("x-livegate-signature", sign("wrong", body))],
            401,
            "missing or wrong credentials",
        ),
        (
            body,
            vec![("x-livegate-signature", "sha256=zz".into())],
            401,
            "missing or wrong credentials",
        ),
        (
            body,
            vec![(
                "x-livegate-signature",
                sign("s3cret", r#"{"tags": ["thing:2"]}"#),
            )],
            401,
            "missing or wrong credentials",
        ),
        (
            body,
            vec![("authorization", "Bearer nope".into())],
            401,
            "missing or wrong credentials",
        ),
        (
            "{not json",
            vec![("authorization", "Bearer t0ken".into())],
            400,
            "not JSON",
        ),
        (
            r#"{"tags": "thing:1"}"#,
            vec![("authorization", "Bearer t0ken".into())],
            400,
            "list of strings",
        ),
        (
            r#"["thing:1"]"#,
            vec![("authorization", "Bearer t0ken".into())],
            400,
            "JSON object",
        ),
    ];
    for (b, headers, want, says) in cases {
        let (status, json) = hook(&gw, b, &headers).await;
        assert_eq!(status, want, "{b} {headers:?}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| e.contains(says)),
            "{json}"
        );
    }
    let big = format!(r#"{{"tags": ["{}"]}}"#, "x".repeat(300));
    let (status, json) = hook(&gw, &big, &[("authorization", "Bearer t0ken".into())]).await;
    assert_eq!(status, 413, "{json}");
    // Nothing was invalidated: still a cache hit.
    gw.query(r#"{ thing(id: "1") { id } }"#).await;
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_signed_or_bearer_call_invalidates_and_says_how_many() {
    let (up, gw) = setup(Some("s3cret"), Some("t0ken")).await;
    gw.query(r#"{ a: thing(id: "1") { id } b: thing(id: "2") { id } }"#)
        .await;
    assert_eq!(up.count(), 2);
    let body = r#"{"tags": ["thing:1", "unknown"]}"#;
    let (status, json) = hook(&gw, body, &[("x-livegate-signature", sign("s3cret", body))]).await;
    assert_eq!(
        (status, json),
        (
            200,
            json!({"invalidated": 1, "tags": ["thing:1", "unknown"]})
        )
    );
    gw.query(r#"{ a: thing(id: "1") { id } b: thing(id: "2") { id } }"#)
        .await;
    assert_eq!(
        up.requests(),
        ["GET /things/1", "GET /things/2", "GET /things/1"]
    );
    let (status, json) = hook(
        &gw,
        r#"{"tags": ["thing:2"]}"#,
        &[("authorization", "Bearer t0ken".into())],
    )
    .await;
    assert_eq!((status, json["invalidated"].clone()), (200, json!(1)));
}

fn sign_at(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[tokio::test]
async fn timestamped_signatures_are_accepted_once_and_only_while_fresh() {
    let (up, gw) = setup(Some("s3cret"), None).await;
    let body = r#"{"tags": ["thing:1"]}"#;
    gw.query(r#"{ thing(id: "1") { id } }"#).await;
    let signed = sign_at("s3cret", now(), body);
    let (status, answer) = hook(&gw, body, &[("x-livegate-signature", signed.clone())]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["invalidated"], 1);
    gw.query(r#"{ thing(id: "1") { id } }"#).await;
    assert_eq!(up.count(), 2, "the entry was dropped and refetched");

    // The same call again: a replay.
    let (status, answer) = hook(&gw, body, &[("x-livegate-signature", signed)]).await;
    assert_eq!(status, 401);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("already used"),
        "{answer}"
    );
    // Ten minutes old, or from the future: stale.
    for t in [now() - 600, now() + 600] {
        let (status, answer) = hook(
            &gw,
            body,
            &[("x-livegate-signature", sign_at("s3cret", t, body))],
        )
        .await;
        assert_eq!(status, 401);
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or("")
                .contains("--webhook-tolerance-s"),
            "{answer}"
        );
    }
    // Signed with another timestamp than the one it claims.
    let forged = sign_at("s3cret", now() - 1, body).replacen(
        &format!("t={}", now() - 1),
        &format!("t={}", now()),
        1,
    );
    let (status, _) = hook(&gw, body, &[("x-livegate-signature", forged)]).await;
    assert_eq!(status, 401);
    gw.query(r#"{ thing(id: "1") { id } }"#).await;
    assert_eq!(up.count(), 2, "no refused call invalidated anything");
}

#[tokio::test]
async fn with_require_timestamp_the_untimed_signature_is_refused() {
    let up = Upstream::start(Router::new()).await;
    let mut options = livegate::Options::default();
    options.webhook.secret = Some("s3cret".into());
    options.webhook.require_timestamp = true;
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    let body = r#"{"tags": ["thing:1"]}"#;
    let (status, _) = hook(&gw, body, &[("x-livegate-signature", sign("s3cret", body))]).await;
    assert_eq!(status, 401);
    let (status, _) = hook(
        &gw,
        body,
        &[("x-livegate-signature", sign_at("s3cret", now(), body))],
    )
    .await;
    assert_eq!(status, 200);
}
