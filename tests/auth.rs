//! Identity at the edge: tokens signed by the test with keys it made, verified through a
//! real JWKS endpoint (rotated and taken down during tests), on every transport.

mod common;

use common::jwt::{claims, now, unsigned, Jwks, Signer};
use common::{Gateway, Upstream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a shared secret of thirty-two bytes!";

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query {
  hello: Hello @rest(upstream: "api", path: "/hello") @cache(maxAge: 60)
}
type Subscription {
  hello: Hello @live(pollMs: 60000)
}
type Hello { text: String }
"#;

async fn upstream() -> Upstream {
    Upstream::start(axum::Router::new().route(
        "/hello",
        axum::routing::get(|| async { axum::Json(json!({"text": "hi"})) }),
    ))
    .await
}

fn options(jwks: &Jwks) -> livegate::Options {
    livegate::Options {
        auth: livegate::auth::Options {
            jwks_urls: vec![jwks.url()],
            secret: Some(SECRET.into()),
            leeway: Duration::ZERO,
            jwks_min_refresh: Duration::ZERO,
            ..Default::default()
        },
        ..Default::default()
    }
}

struct Setup {
    up: Upstream,
    gw: Gateway,
    jwks: Jwks,
    rsa: Signer,
    ec: Signer,
    ed: Signer,
}

async fn setup(tune: impl FnOnce(&mut livegate::Options)) -> Setup {
    let (rsa, ec, ed) = (Signer::rsa("rsa-1"), Signer::ec("ec-1"), Signer::ed("ed-1"));
    let jwks = Jwks::start(&[&rsa, &ec, &ed]).await;
    let up = upstream().await;
    let mut opts = options(&jwks);
    tune(&mut opts);
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), opts).await;
    Setup {
        up,
        gw,
        jwks,
        rsa,
        ec,
        ed,
    }
}

/// A POST of `query` accepting `accept`, with `token` as a bearer token (none when
/// `None`).
fn request(
    gw: &Gateway,
    token: Option<&str>,
    accept: &str,
    query: &str,
) -> reqwest::RequestBuilder {
    let req = gw
        .client
        .post(gw.url())
        .header("accept", accept)
        .json(&json!({ "query": query }));
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// POSTs `{ hello { text } }` with `token` as a bearer token: the status, the
/// `WWW-Authenticate` header and the body.
async fn ask(gw: &Gateway, token: Option<&str>) -> (u16, Option<String>, Value) {
    let req = request(
        gw,
        token,
        "application/graphql-response+json",
        "{ hello { text } }",
    );
    let res = req.send().await.expect("answer");
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_string());
    (status, challenge, res.json().await.expect("json"))
}

#[tokio::test]
async fn tokens_of_every_algorithm_are_verified_and_bad_ones_get_401() {
    let s = setup(|_| {}).await;
    let hmac = Signer::hmac(SECRET);
    for signer in [&s.rsa, &s.ec, &s.ed, &hmac] {
        let (status, _, body) = ask(&s.gw, Some(&signer.sign(&claims("ann", 60)))).await;
        assert_eq!(status, 200, "{:?}: {body}", signer.alg);
        assert_eq!(body["data"]["hello"]["text"], "hi");
    }
    let stranger = Signer::ec("ec-1"); // the right kid, another key
    let (rsa_n, _) = (s.rsa.jwk["n"].as_str().expect("n").to_string(), ());
    let bad = [
        ("expired", s.rsa.sign(&claims("ann", -5)), "expired"),
        (
            "not yet valid",
            s.ed.sign(&json!({"sub": "ann", "exp": now() + 60, "nbf": now() + 30})),
            "nbf",
        ),
        ("no exp", s.ec.sign(&json!({"sub": "ann"})), "exp"),
        ("wrong key", stranger.sign(&claims("ann", 60)), "signature"),
        ("alg none", unsigned(&claims("ann", 60)), "invalid"),
        // Algorithm confusion: HS256 keyed with the RSA key's public modulus.
        (
            "hs256 over a public key",
            Signer::hmac(&rsa_n).sign_as("rsa-1", &claims("ann", 60)),
            "invalid",
        ),
        ("garbage", "not.a.jwt".to_string(), "invalid"),
        (
            "unknown kid",
            s.ed.sign_as("nobody", &claims("ann", 60)),
            "key",
        ),
    ];
    for (what, token, words) in &bad {
        let (status, challenge, body) = ask(&s.gw, Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{what}"
        );
        let message = body["errors"][0]["message"].as_str().expect("message");
        assert!(message.contains(words), "{what}: {message}");
        assert!(
            !message.contains(&**token),
            "{what}: the token is not echoed"
        );
        assert!(
            challenge.expect("a challenge").starts_with("Bearer"),
            "{what}"
        );
    }
    // Anonymous requests run: verification is optional unless --jwt-required.
    let (status, _, body) = ask(&s.gw, None).await;
    assert_eq!(status, 200, "{body}");
    let page = s.gw.metrics().await;
    assert_eq!(
        common::sample(&page, "livegate_auth_total{result=\"ok\"}"),
        4.0
    );
    assert_eq!(
        common::sample(&page, "livegate_auth_total{result=\"expired\"}"),
        1.0
    );
    assert_eq!(
        common::sample(&page, "livegate_auth_total{result=\"invalid\"}"),
        (bad.len() - 1) as f64
    );
    // Refused requests never reached the upstream.
    assert_eq!(s.up.count(), 1, "one fetch, then the cache");
}

#[tokio::test]
async fn without_a_secret_an_hmac_token_is_refused_whatever_key_it_names() {
    // Algorithm confusion: no secret is configured, so HS256 has no key at all; a token
    // "signed" with the RSA key's public parts (its modulus, its JWK, the whole JWKS)
    // names that key and is refused, as is one naming no key.
    let s = setup(|o| o.auth.secret = None).await;
    assert_eq!(
        ask(&s.gw, Some(&s.rsa.sign(&claims("ann", 60)))).await.0,
        200
    );
    let n = s.rsa.jwk["n"].as_str().expect("n").to_string();
    let jwk = s.rsa.jwk.to_string();
    let jwks = json!({"keys": [s.rsa.jwk.clone()]}).to_string();
    for (what, token) in [
        (
            "modulus",
            Signer::hmac(&n).sign_as("rsa-1", &claims("eve", 60)),
        ),
        (
            "jwk",
            Signer::hmac(&jwk).sign_as("rsa-1", &claims("eve", 60)),
        ),
        (
            "jwks",
            Signer::hmac(&jwks).sign_as("rsa-1", &claims("eve", 60)),
        ),
        ("no kid", Signer::hmac(SECRET).sign(&claims("eve", 60))),
    ] {
        let (status, _, body) = ask(&s.gw, Some(&token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{what}"
        );
    }
}

#[tokio::test]
async fn issuer_and_audience_are_checked_and_required_when_configured() {
    let s = setup(|o| {
        o.auth.issuers = vec!["https://idp.example".into()];
        o.auth.audiences = vec!["livegate".into()];
        o.auth.required = true;
    })
    .await;
    let exp = now() + 60;
    let good = json!({"sub": "ann", "exp": exp, "iss": "https://idp.example", "aud": ["livegate", "other"]});
    assert_eq!(ask(&s.gw, Some(&s.rsa.sign(&good))).await.0, 200);
    for (what, c) in [
        (
            "wrong issuer",
            json!({"sub": "ann", "exp": exp, "iss": "https://evil.example", "aud": "livegate"}),
        ),
        (
            "no issuer",
            json!({"sub": "ann", "exp": exp, "aud": "livegate"}),
        ),
        (
            "wrong audience",
            json!({"sub": "ann", "exp": exp, "iss": "https://idp.example", "aud": "other"}),
        ),
        (
            "no audience",
            json!({"sub": "ann", "exp": exp, "iss": "https://idp.example"}),
        ),
    ] {
        let (status, _, body) = ask(&s.gw, Some(&s.ed.sign(&c))).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
    // --jwt-required: no token is a 401 too, with a challenge and no error code
    // beyond UNAUTHENTICATED.
    let (status, challenge, body) = ask(&s.gw, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert_eq!(
        common::sample(
            &s.gw.metrics().await,
            "livegate_auth_total{result=\"missing\"}"
        ),
        1.0
    );
    assert_eq!(s.up.count(), 1);
}

#[tokio::test]
async fn rotated_keys_are_fetched_once_and_kept_while_the_jwks_is_down() {
    // The issuer rotates: a token naming a key the gateway lacks makes it fetch the JWKS
    // again, once...
    let s = setup(|_| {}).await;
    assert_eq!(
        ask(&s.gw, Some(&s.rsa.sign(&claims("ann", 60)))).await.0,
        200
    );
    assert_eq!(
        s.jwks.fetches(),
        1,
        "fetched once at start: {:?}",
        s.jwks.upstream.requests()
    );
    let next = Signer::ed("ed-2");
    s.jwks.set(&[&s.rsa, &next]);
    assert_eq!(
        ask(&s.gw, Some(&next.sign(&claims("bob", 60)))).await.0,
        200
    );
    assert_eq!(s.jwks.fetches(), 2, "one fetch for the unknown kid");
    assert_eq!(
        ask(&s.gw, Some(&next.sign(&claims("bob", 60)))).await.0,
        200
    );
    assert_eq!(s.jwks.fetches(), 2, "then it is known");
    // ...and a JWKS endpoint that dies loses nothing: the keys fetched are kept.
    s.jwks.down(true);
    assert_eq!(
        ask(&s.gw, Some(&next.sign(&claims("bob", 60)))).await.0,
        200
    );
    assert_eq!(
        ask(&s.gw, Some(&s.rsa.sign(&claims("ann", 60)))).await.0,
        200
    );
    let (status, _, body) = ask(&s.gw, Some(&Signer::ec("ec-9").sign(&claims("eve", 60)))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(s.jwks.fetches(), 3, "the unknown kid's fetch, failed");
    // A failed fetch replaces nothing: every key fetched before still verifies.
    for token in [
        next.sign(&claims("bob", 60)),
        s.rsa.sign(&claims("ann", 60)),
    ] {
        let (status, _, body) = ask(&s.gw, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
    }
    // Back up: a new key is fetched again.
    s.jwks.down(false);
    let late = Signer::ec("ec-3");
    s.jwks.set(&[&next, &late]);
    assert_eq!(ask(&s.gw, Some(&late.sign(&claims("cy", 60)))).await.0, 200);
    // Unknown kids never make it fetch more than once per --jwt-jwks-min-refresh-s.
    let s = setup(|o| o.auth.jwks_min_refresh = Duration::from_secs(3600)).await;
    assert_eq!(
        ask(&s.gw, Some(&s.rsa.sign(&claims("ann", 60)))).await.0,
        200
    );
    for i in 0..5 {
        let stranger = Signer::ed(&format!("made-up-{i}"));
        assert_eq!(
            ask(&s.gw, Some(&stranger.sign(&claims("eve", 60)))).await.0,
            401
        );
    }
    assert_eq!(
        s.jwks.fetches(),
        1,
        "the start's fetch was the last this hour"
    );
}

/// A WebSocket in `protocol` with `init` as `connection_init`'s payload: the first
/// message back (or the close frame, as `{"close": code, "reason": …}`).
async fn ws_init(gw: &Gateway, protocol: &str, init: Value) -> (common::Ws, Value) {
    let mut ws = common::websocket_open(gw.addr, protocol).await;
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": init}).to_string(),
    ))
    .await
    .expect("send");
    let first = next_or_close(&mut ws).await;
    (ws, first)
}

async fn next_or_close(ws: &mut common::Ws) -> Value {
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("open")
        .expect("read");
    match msg {
        Message::Close(Some(frame)) => {
            json!({"close": u16::from(frame.code), "reason": frame.reason.as_str()})
        }
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("json"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn sockets_check_the_token_at_connection_init() {
    let s = setup(|_| {}).await;
    let good = format!("Bearer {}", s.ec.sign(&claims("ann", 60)));
    let expired = format!("Bearer {}", s.ec.sign(&claims("ann", -60)));
    // graphql-transport-ws: acked, or closed 4403.
    let (mut ws, first) = ws_init(
        &s.gw,
        "graphql-transport-ws",
        json!({"Authorization": good}),
    )
    .await;
    assert_eq!(first["type"], "connection_ack");
    ws.send(Message::text(
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ hello { text } }"}})
            .to_string(),
    ))
    .await
    .expect("send");
    assert_eq!(
        next_or_close(&mut ws).await["payload"]["data"]["hello"]["text"],
        "hi"
    );
    let (_, first) = ws_init(
        &s.gw,
        "graphql-transport-ws",
        json!({"headers": {"authorization": expired}}),
    )
    .await;
    assert_eq!(first["close"], 4403, "{first}");
    assert!(first["reason"]
        .as_str()
        .expect("reason")
        .contains("expired"));
    // The legacy protocol: connection_error, then the close.
    let (_, first) = ws_init(&s.gw, "graphql-ws", json!({"Authorization": good})).await;
    assert_eq!(first["type"], "connection_ack");
    let (mut ws, first) =
        ws_init(&s.gw, "graphql-ws", json!({"Authorization": "Bearer nope"})).await;
    assert_eq!(first["type"], "connection_error", "{first}");
    assert_eq!(first["payload"]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(next_or_close(&mut ws).await["close"], 4403);
}

#[tokio::test]
async fn a_socket_closes_when_its_token_runs_out_unless_renewed() {
    let s = setup(|_| {}).await;
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { hello { text } }"}});
    // Not renewed: closed with 4403 at exp (the leeway is 0 here).
    let short = format!("Bearer {}", s.rsa.sign(&claims("ann", 2)));
    let (mut ws, first) = ws_init(
        &s.gw,
        "graphql-transport-ws",
        json!({"Authorization": short}),
    )
    .await;
    assert_eq!(first["type"], "connection_ack");
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    assert_eq!(next_or_close(&mut ws).await["type"], "next");
    let closed = next_or_close(&mut ws).await;
    assert_eq!(closed["close"], 4403, "{closed}");
    // The legacy protocol: connection_error, then the close.
    let short = format!("Bearer {}", s.rsa.sign(&claims("ann", 1)));
    let (mut ws, first) = ws_init(&s.gw, "graphql-ws", json!({"Authorization": short})).await;
    assert_eq!(first["type"], "connection_ack");
    let mut seen = next_or_close(&mut ws).await;
    while seen["type"] == "ka" {
        seen = next_or_close(&mut ws).await;
    }
    assert_eq!(seen["type"], "connection_error", "{seen}");
    assert_eq!(seen["payload"]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(next_or_close(&mut ws).await["close"], 4403);
    // Renewed with a ping carrying a new token: the subscription goes on past the first
    // token's end; a rejected renewal (another user's token) changes nothing.
    let short = format!("Bearer {}", s.rsa.sign(&claims("ann", 2)));
    let (mut ws, _) = ws_init(
        &s.gw,
        "graphql-transport-ws",
        json!({"Authorization": short}),
    )
    .await;
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    assert_eq!(next_or_close(&mut ws).await["type"], "next");
    let other = format!("Bearer {}", s.rsa.sign(&claims("bob", 60)));
    ws.send(Message::text(
        json!({"type": "ping", "payload": {"Authorization": other}}).to_string(),
    ))
    .await
    .expect("send");
    let pong = next_or_close(&mut ws).await;
    assert_eq!(pong["payload"]["auth"], "rejected", "{pong}");
    let longer = s.rsa.sign(&claims("ann", 3600));
    ws.send(Message::text(
        json!({"type": "ping", "payload": {"Authorization": format!("Bearer {longer}")}})
            .to_string(),
    ))
    .await
    .expect("send");
    let pong = next_or_close(&mut ws).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["payload"]["auth"], "renewed", "{pong}");
    assert!(
        !pong.to_string().contains(&longer),
        "the token is not echoed"
    );
    // The legacy protocol renews with a second connection_init: another user's token
    // gets a connection_error (the socket stays as it was), the same user's an ack.
    let short = format!("Bearer {}", s.rsa.sign(&claims("ann", 3)));
    let (mut old, first) = ws_init(&s.gw, "graphql-ws", json!({"Authorization": short})).await;
    assert_eq!(first["type"], "connection_ack");
    let init = |token: String| {
        Message::text(
            json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})
                .to_string(),
        )
    };
    old.send(init(s.rsa.sign(&claims("bob", 60))))
        .await
        .expect("send");
    let seen = not_ka(&mut old).await;
    assert_eq!(seen["type"], "connection_error", "{seen}");
    old.send(init(s.rsa.sign(&claims("ann", 3600))))
        .await
        .expect("send");
    assert_eq!(not_ka(&mut old).await["type"], "connection_ack");
    // Past the first tokens' end both sockets are still open: a ping is answered, and an
    // operation runs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    ws.send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .expect("send");
    assert_eq!(next_or_close(&mut ws).await["type"], "pong");
    old.send(Message::text(
        json!({"id": "1", "type": "start", "payload": {"query": "{ hello { text } }"}}).to_string(),
    ))
    .await
    .expect("send");
    let data = not_ka(&mut old).await;
    assert_eq!(data["payload"]["data"]["hello"]["text"], "hi", "{data}");
}

/// The next message that is not the legacy protocol's keep-alive.
async fn not_ka(ws: &mut common::Ws) -> Value {
    loop {
        let seen = next_or_close(ws).await;
        if seen["type"] != "ka" {
            return seen;
        }
    }
}

#[tokio::test]
async fn streams_check_the_token_and_end_with_it() {
    let s = setup(|_| {}).await;
    let sub = json!({"query": "subscription { hello { text } }"});
    for accept in ["text/event-stream", "multipart/mixed;subscriptionSpec=1.0"] {
        let res =
            s.gw.client
                .post(s.gw.url())
                .header("accept", accept)
                .bearer_auth("bad.to.ken")
                .json(&sub)
                .send()
                .await
                .expect("answer");
        assert_eq!(res.status(), 401, "{accept}");
        let token = s.ed.sign(&claims("ann", 2));
        let mut res =
            s.gw.client
                .post(s.gw.url())
                .header("accept", accept)
                .bearer_auth(&token)
                .json(&sub)
                .send()
                .await
                .expect("answer");
        assert_eq!(res.status(), 200, "{accept}");
        let mut body = String::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("in time")
            .expect("read")
        {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(body.contains("\"hi\""), "{accept}: {body}");
        assert!(
            body.contains("UNAUTHENTICATED"),
            "{accept}: ends with an error: {body}"
        );
        assert!(body.contains("expired"), "{accept}: {body}");
    }
    // graphql-sse reservations: a bad token gets no reservation.
    let res =
        s.gw.client
            .put(s.gw.url())
            .bearer_auth("bad.to.ken")
            .send()
            .await
            .expect("answer");
    assert_eq!(res.status(), 401);
    let res =
        s.gw.client
            .put(s.gw.url())
            .bearer_auth(s.ed.sign(&claims("ann", 60)))
            .send()
            .await
            .expect("answer");
    assert_eq!(res.status(), 201);
}

const GUARDED: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query {
  hello: Hello @rest(upstream: "api", path: "/hello") @cache(maxAge: 60)
  me: Profile @rest(upstream: "api", path: "/me") @authenticated
  orders: [Order!] @rest(upstream: "api", path: "/orders") @cache(maxAge: 60) @requiresScopes(scopes: [["orders:read"], ["admin"]])
  audit: Audit! @rest(upstream: "api", path: "/audit")
  status: Status @rest(upstream: "api", path: "/hello")
}
type Mutation @authenticated {
  cancel(id: ID!): Order @rest(upstream: "api", method: POST, path: "/orders/{args.id}/cancel") @requiresScopes(scopes: [["orders:write", "orders:read"]])
}
type Subscription {
  orders: [Order!] @live(pollMs: 60000) @authenticated
}
type Hello { text: String }
type Profile { name: String @requiresScopes(scopes: [["profile"]]) city: String }
type Order { id: ID! total: Int }
type Audit @requiresScopes(scopes: [["admin"]]) { entries: [String] }
enum Level @authenticated { LOW HIGH }
type Status { text: String level: Level }
"#;

async fn guarded() -> (Upstream, Gateway, Signer, Jwks) {
    let ed = Signer::ed("ed-1");
    let jwks = Jwks::start(&[&ed]).await;
    let up = Upstream::start(
        axum::Router::new()
            .route(
                "/hello",
                axum::routing::get(|| async { axum::Json(json!({"text": "hi", "level": "LOW"})) }),
            )
            .route(
                "/me",
                axum::routing::get(|| async { axum::Json(json!({"name": "Ann", "city": "Oslo"})) }),
            )
            .route(
                "/orders",
                axum::routing::get(|| async { axum::Json(json!([{"id": "1", "total": 5}])) }),
            )
            .route(
                "/audit",
                axum::routing::get(|| async { axum::Json(json!({"entries": ["x"]})) }),
            )
            .route(
                "/orders/{id}/cancel",
                axum::routing::post(|| async { axum::Json(json!({"id": "1", "total": 0})) }),
            ),
    )
    .await;
    let gw = Gateway::start(&GUARDED.replace("{up}", &up.url()), options(&jwks)).await;
    (up, gw, ed, jwks)
}

async fn post(gw: &Gateway, token: Option<&str>, query: &str) -> Value {
    let req = request(gw, token, "application/json", query);
    req.send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json")
}

fn with_scope(sub: &str, scope: &str) -> Value {
    let mut c = claims(sub, 600);
    c["scope"] = json!(scope);
    c
}

#[tokio::test]
async fn guarded_fields_are_null_with_an_error_and_their_upstream_is_never_called() {
    let (up, gw, ed, _jwks) = guarded().await;
    // Anonymous: the open field resolves, the guarded one is null with UNAUTHENTICATED
    // at its path, and /me is never asked.
    let body = post(&gw, None, "{ hello { text } me { city } }").await;
    assert_eq!(body["data"]["hello"]["text"], "hi", "{body}");
    assert_eq!(body["data"]["me"], Value::Null, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
    assert_eq!(body["errors"][0]["path"], json!(["me"]));
    assert_eq!(up.count_matching("GET /me"), 0);
    // A token without the scopes: FORBIDDEN, /orders never asked. Outer list is OR,
    // inner AND: `admin` alone is enough; `orders:write` alone is not `orders:write
    // orders:read`.
    let reader = ed.sign(&with_scope("ann", "profile other"));
    let body = post(&gw, Some(&reader), "{ orders { id } me { name city } }").await;
    assert_eq!(body["data"]["orders"], Value::Null, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    assert!(body["errors"][0]["message"]
        .as_str()
        .expect("message")
        .contains("orders:read"));
    assert_eq!(
        body["data"]["me"]["name"], "Ann",
        "the profile scope: {body}"
    );
    assert_eq!(up.count_matching("GET /orders"), 0);
    for scope in ["admin", "orders:read"] {
        let body = post(
            &gw,
            Some(&ed.sign(&with_scope("ann", scope))),
            "{ orders { id } }",
        )
        .await;
        assert_eq!(body["data"]["orders"][0]["id"], "1", "{scope}: {body}");
    }
    // A field of a guarded type: a non-null one nulls its parent (here `data`).
    let body = post(&gw, Some(&reader), "{ audit { entries } hello { text } }").await;
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(up.count_matching("GET /audit"), 0);
    // An enum type that requires a caller: the field returning it is null for anonymous.
    let body = post(&gw, None, "{ status { text level } }").await;
    assert_eq!(
        body["data"]["status"],
        json!({"text": "hi", "level": null}),
        "{body}"
    );
    assert_eq!(body["errors"][0]["path"], json!(["status", "level"]));
    // A root type's requirement is every one of its fields'.
    let body = post(&gw, None, "mutation { cancel(id: \"1\") { id } }").await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
    // A mutation without its scopes is never sent.
    let writer = ed.sign(&with_scope("ann", "orders:write"));
    let body = post(&gw, Some(&writer), "mutation { cancel(id: \"1\") { id } }").await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    assert_eq!(up.count_matching("POST"), 0);
    let both = ed.sign(&with_scope("ann", "orders:read orders:write"));
    let body = post(&gw, Some(&both), "mutation { cancel(id: \"1\") { total } }").await;
    assert_eq!(body["data"]["cancel"]["total"], 0, "{body}");
    assert_eq!(up.count_matching("POST"), 1);
    let page = gw.metrics().await;
    assert!(
        common::sample(&page, "livegate_auth_total{result=\"forbidden\"}") >= 5.0,
        "{page}"
    );
}

#[tokio::test]
async fn guarded_subscriptions_refuse_before_anything_starts() {
    let (up, gw, ed, _jwks) = guarded().await;
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { orders { id } }"}});
    // Anonymous: the subscription field's @authenticated refuses it.
    let mut ws = common::websocket(gw.addr, "graphql-transport-ws").await;
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    let got = common::next_json(&mut ws).await;
    assert_eq!(got["type"], "error", "{got}");
    assert_eq!(got["payload"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // Authenticated without the Query field's scopes: each result says FORBIDDEN.
    let token = format!("Bearer {}", ed.sign(&with_scope("ann", "profile")));
    let mut ws = common::websocket_with(
        gw.addr,
        "graphql-transport-ws",
        json!({"Authorization": token}),
    )
    .await;
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    let got = common::next_json(&mut ws).await;
    assert_eq!(got["payload"]["data"]["orders"], Value::Null, "{got}");
    assert_eq!(
        got["payload"]["errors"][0]["extensions"]["code"],
        "FORBIDDEN"
    );
    assert_eq!(up.count_matching("GET /orders"), 0);
}

#[test]
fn misused_directives_are_refused_with_their_position() {
    let schema = r#"
extend schema @upstream(name: "api", url: "http://127.0.0.1:1")
type Query {
  a: Int @rest(upstream: "api", path: "/a") @requiresScopes(scopes: [])
  b: Int @rest(upstream: "api", path: "/b") @requiresScopes(scopes: [[]])
  c: Int @rest(upstream: "api", path: "/c") @requiresScopes
  d: Int @rest(upstream: "api", path: "/d") @authenticated(yes: true)
  e(x: In): U @rest(upstream: "api", path: "/e")
}
union U @authenticated = Query
input In @requiresScopes(scopes: [["x"]]) { x: Int }
"#;
    let all = common::refused_at(schema, &[4, 5, 6, 7, 10, 11]);
    assert!(all.contains("refuse everyone"), "{all}");
    assert!(all.contains("let everyone in"), "{all}");
}

#[tokio::test]
async fn scopes_come_from_the_configured_claim_and_interface_guards_bind_their_implementers() {
    // `--jwt-scope-claim permissions`, as Auth0 issues them: a list (or a string).
    let ed = Signer::ed("ed-1");
    let jwks = Jwks::start(&[&ed]).await;
    let up = Upstream::start(axum::Router::new().route(
        "/docs",
        axum::routing::get(|| async {
            axum::Json(json!([
                {"kind": "note", "id": "n1", "secret": "n-s"},
                {"kind": "memo", "id": "m1", "secret": "m-s", "to": "bob"}
            ]))
        }),
    ))
    .await;
    let schema = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query { docs: [Doc!]! @rest(upstream: "api", path: "/docs") }
interface Doc @discriminate(field: "kind", map: {note: "Note", memo: "Memo"}) {
  id: ID!
  secret: String @requiresScopes(scopes: [["vault:read"]])
}
type Note implements Doc { id: ID! secret: String }
type Memo implements Doc { id: ID! secret: String to: String }
"#;
    let mut opts = options(&jwks);
    opts.auth.scope_claim = "permissions".into();
    let gw = Gateway::start(&schema.replace("{up}", &up.url()), opts).await;
    let query = "{ docs { id secret ... on Memo { to } } }";
    let with = |permissions: Value| {
        let mut c = claims("ann", 600);
        c["permissions"] = permissions;
        c["scope"] = json!("vault:read");
        ed.sign(&c)
    };
    // The interface field's guard holds on each implementer's own field; the `scope`
    // claim is not read when another is configured.
    for token in [with(json!(["docs:read"])), with(json!("docs:read"))] {
        let body = post(&gw, Some(&token), query).await;
        assert_eq!(
            body["data"]["docs"],
            json!([{"id": "n1", "secret": null}, {"id": "m1", "secret": null, "to": "bob"}]),
            "{body}"
        );
        let codes: Vec<&Value> = body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| &e["extensions"]["code"])
            .collect();
        assert_eq!(codes, [&json!("FORBIDDEN"), &json!("FORBIDDEN")], "{body}");
        assert_eq!(body["errors"][1]["path"], json!(["docs", 1, "secret"]));
    }
    // Granted, as a list or as a space-separated string.
    for token in [
        with(json!(["docs:read", "vault:read"])),
        with(json!("docs:read vault:read")),
    ] {
        let body = post(&gw, Some(&token), query).await;
        assert_eq!(body["data"]["docs"][1]["secret"], "m-s", "{body}");
        assert!(body.get("errors").is_none(), "{body}");
    }
}

const CLAIMS: &str = r#"
extend schema @upstream(name: "api", url: "{up}", forwardHeaders: ["authorization"])
type Query {
  myOrders: [Order!] @rest(upstream: "api", path: "/users/{claims.sub}/orders", headers: [{name: "X-Tenant", value: "{claims.org.tenant}"}]) @cache(maxAge: 60)
  inbox: [Order!] @rest(upstream: "api", path: "/inbox") @cache(maxAge: 60, scope: PRIVATE)
  search(q: String): [Order!] @rest(upstream: "api", path: "/search", query: {owner: "{claims.sub}", q: "{args.q}"}) @cache(maxAge: 60)
  feed: [Order!] @rest(upstream: "api", path: "/feed/{claims.sub}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {owner: "{claims.sub}"}, apply: UPSERT, key: "id")
}
type Mutation {
  place(id: ID!): Order @rest(upstream: "api", method: POST, path: "/orders", body: {id: "{args.id}", owner: "{claims.sub}", tenant: "{claims.org.tenant}"})
}
type Subscription {
  myOrders: [Order!] @live(pollMs: 60000)
  feed: [Order!] @live
  placed: Order @stream(upstream: "api", path: "/ws", when: {tenant: "{claims.org.tenant}"})
}
type Order { id: ID! owner: String tenant: String }
"#;

async fn claims_gateway() -> (
    Upstream,
    Gateway,
    Signer,
    tokio::sync::broadcast::Sender<String>,
) {
    use axum::extract::Path;
    let ed = Signer::ed("ed-1");
    let jwks = Jwks::start(&[&ed]).await;
    let (say, _) = tokio::sync::broadcast::channel::<String>(16);
    let up = Upstream::start(
        axum::Router::new()
            .route(
                "/users/{sub}/orders",
                axum::routing::get(
                    |Path(sub): Path<String>, headers: http::HeaderMap| async move {
                        let tenant = headers
                            .get("x-tenant")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        axum::Json(
                            json!([{"id": format!("{sub}-1"), "owner": sub, "tenant": tenant}]),
                        )
                    },
                ),
            )
            .route(
                "/inbox",
                axum::routing::get(|| async { axum::Json(json!([{"id": "i1"}])) }),
            )
            .route(
                "/search",
                axum::routing::get(
                    |axum::extract::Query(q): axum::extract::Query<
                        std::collections::HashMap<String, String>,
                    >| async move {
                        let owner = q.get("owner").cloned().unwrap_or_default();
                        let id = format!("{}-{}", owner, q.get("q").map_or("", |s| s.as_str()));
                        axum::Json(json!([{"id": id, "owner": owner}]))
                    },
                ),
            )
            .route(
                "/feed/{sub}",
                axum::routing::get(|Path(sub): Path<String>| async move {
                    axum::Json(json!([{"id": format!("{sub}-1"), "owner": sub}]))
                }),
            )
            .route(
                "/orders",
                axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
                    axum::Json(body)
                }),
            )
            .route("/ws", common::announcer(say.clone())),
    )
    .await;
    let mut opts = options(&jwks);
    opts.auth.cookie = Some("session".into());
    let gw = Gateway::start(&CLAIMS.replace("{up}", &up.url()), opts).await;
    // The JWKS server lives as long as the test's runtime.
    std::mem::forget(jwks);
    (up, gw, ed, say)
}

fn user(sub: &str, tenant: &str) -> Value {
    let mut c = claims(sub, 600);
    c["org"] = json!({"tenant": tenant});
    c
}

#[tokio::test]
async fn claims_fill_templates_and_tell_users_apart() {
    let (up, gw, ed, _say) = claims_gateway().await;
    let (ann, bob) = (
        ed.sign(&user("ann", "acme")),
        ed.sign(&user("bob", "globex")),
    );
    let body = post(&gw, Some(&ann), "{ myOrders { id owner tenant } }").await;
    assert_eq!(
        body["data"]["myOrders"],
        json!([{"id": "ann-1", "owner": "ann", "tenant": "acme"}]),
        "{body}"
    );
    let body = post(&gw, Some(&bob), "{ myOrders { id owner tenant } }").await;
    assert_eq!(
        body["data"]["myOrders"],
        json!([{"id": "bob-1", "owner": "bob", "tenant": "globex"}]),
        "{body}"
    );
    // Anonymous: there are no claims to fill the path with; nothing is sent.
    let body = post(&gw, None, "{ myOrders { id } }").await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
    assert_eq!(up.count_matching("GET /users"), 2);
    // A PRIVATE entry is the verified user's, whichever of their tokens they send.
    let again = ed.sign(&{
        let mut c = user("ann", "acme");
        c["iat"] = json!(now() - 10);
        c["jti"] = json!("another");
        c
    });
    assert_ne!(again, ann);
    for token in [&ann, &again] {
        let body = post(&gw, Some(token), "{ inbox { id } }").await;
        assert_eq!(body["data"]["inbox"][0]["id"], "i1", "{body}");
    }
    assert_eq!(up.count_matching("GET /inbox"), 1, "one entry for ann");
    post(&gw, Some(&bob), "{ inbox { id } }").await;
    assert_eq!(up.count_matching("GET /inbox"), 2, "bob has his own");
    // The same with the token in the --jwt-cookie: one entry for ann's cookie requests,
    // whichever token; the other cookies still tell requests apart.
    let by_cookie = |cookie: String| {
        let req = gw
            .client
            .post(gw.url())
            .header("accept", "application/json")
            .header("cookie", cookie)
            .json(&json!({"query": "{ inbox { id } }"}));
        async move {
            req.send()
                .await
                .expect("answer")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    for token in [&ann, &again] {
        let body = by_cookie(format!("theme=dark; session={token}")).await;
        assert_eq!(body["data"]["inbox"][0]["id"], "i1", "{body}");
    }
    assert_eq!(
        up.count_matching("GET /inbox"),
        3,
        "one cookie entry for ann"
    );
    by_cookie(format!("theme=light; session={again}")).await;
    assert_eq!(
        up.count_matching("GET /inbox"),
        4,
        "another cookie, another entry"
    );
    by_cookie(format!("theme=dark; session={bob}")).await;
    assert_eq!(up.count_matching("GET /inbox"), 5, "bob's cookie, his own");
}

#[tokio::test]
async fn two_users_on_one_claims_subscription_never_see_each_others_data() {
    let (_up, gw, ed, say) = claims_gateway().await;
    let live = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { myOrders { owner } }"}});
    let events = json!({"id": "2", "type": "subscribe", "payload": {"query": "subscription { placed { id tenant } }"}});
    let mut sockets = Vec::new();
    for (sub, tenant) in [("ann", "acme"), ("bob", "globex")] {
        let (mut ws, got) = subscribed_as(&gw, &ed.sign(&user(sub, tenant)), &live).await;
        assert_eq!(
            got["payload"]["data"]["myOrders"],
            json!([{"owner": sub}]),
            "{sub}: {got}"
        );
        ws.send(Message::text(events.to_string()))
            .await
            .expect("send");
        sockets.push((tenant, ws));
    }
    // The upstream forwards authorization, so each caller has a socket of their own;
    // once both listen, each hears its tenant's events only.
    let metrics = gw
        .metrics_until(|p| common::sample(p, "livegate_upstream_sockets_open") >= 2.0)
        .await;
    assert_eq!(
        common::sample(&metrics, "livegate_upstream_sockets_open"),
        2.0
    );
    // Each socket hears every event, in turns of both tenants: each subscriber gets its
    // own tenant's, in order, and nothing of the other's in between.
    let said = [
        ("o1", "globex"),
        ("o2", "acme"),
        ("o3", "globex"),
        ("o4", "acme"),
        ("o5", "acme"),
        ("o6", "globex"),
    ];
    for (id, tenant) in said {
        say.send(json!({"id": id, "tenant": tenant}).to_string())
            .expect("said");
    }
    for (tenant, ws) in &mut sockets {
        let mine: Vec<&str> = said
            .iter()
            .filter(|(_, t)| t == tenant)
            .map(|(id, _)| *id)
            .collect();
        for id in mine {
            let got = common::next_json(ws).await;
            assert_eq!(got["id"], "2", "{got}");
            assert_eq!(
                got["payload"]["data"]["placed"],
                json!({"id": id, "tenant": tenant}),
                "{tenant}: {got}"
            );
        }
    }
    // And nothing of the other tenant's after them.
    for (tenant, ws) in &mut sockets {
        let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
        assert!(more.is_err(), "{tenant} got more: {more:?}");
    }
}

/// A graphql-transport-ws socket opened with `token` that sent `subscribe`: the socket and
/// the first message back.
async fn subscribed_as(gw: &Gateway, token: &str, subscribe: &Value) -> (common::Ws, Value) {
    let mut ws = common::websocket_with(
        gw.addr,
        "graphql-transport-ws",
        json!({"Authorization": format!("Bearer {token}")}),
    )
    .await;
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    let got = common::next_json(&mut ws).await;
    (ws, got)
}

#[tokio::test]
async fn claims_reach_query_parameters_bodies_and_update_filters() {
    let (up, gw, ed, say) = claims_gateway().await;
    let (ann, bob) = (
        ed.sign(&user("ann", "acme")),
        ed.sign(&user("bob", "globex")),
    );
    // A query parameter: each user's own search, each its own cache entry.
    for (token, sub) in [(&ann, "ann"), (&bob, "bob"), (&ann, "ann")] {
        let body = post(&gw, Some(token), r#"{ search(q: "x") { id owner } }"#).await;
        assert_eq!(
            body["data"]["search"],
            json!([{"id": format!("{sub}-x"), "owner": sub}]),
            "{body}"
        );
    }
    assert_eq!(up.count_matching("GET /search"), 2, "ann's second is a hit");
    // A body: the caller's subject and tenant, whatever the arguments say.
    let body = post(
        &gw,
        Some(&bob),
        r#"mutation { place(id: "p1") { id owner tenant } }"#,
    )
    .await;
    assert_eq!(
        body["data"]["place"],
        json!({"id": "p1", "owner": "bob", "tenant": "globex"}),
        "{body}"
    );
    // An @updates filter: each user's live list takes the socket's messages for them.
    let live = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { feed { id owner } }"}});
    let mut sockets = Vec::new();
    for (token, sub) in [(&ann, "ann"), (&bob, "bob")] {
        let (ws, got) = subscribed_as(&gw, token, &live).await;
        assert_eq!(
            got["payload"]["data"]["feed"],
            json!([{"id": format!("{sub}-1"), "owner": sub}]),
            "{got}"
        );
        sockets.push((sub, ws));
    }
    gw.metrics_until(|p| common::sample(p, "livegate_upstream_sockets_open") >= 2.0)
        .await;
    for (id, owner) in [("ann-2", "ann"), ("bob-2", "bob"), ("ann-3", "ann")] {
        say.send(json!({"id": id, "owner": owner}).to_string())
            .expect("said");
    }
    let mut ann_ws = sockets.remove(0).1;
    let mut bob_ws = sockets.remove(0).1;
    let ids = |got: &Value| -> Vec<String> {
        got["payload"]["data"]["feed"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|o| o["id"].as_str().expect("id").to_string())
            .collect()
    };
    let got = common::next_json(&mut bob_ws).await;
    assert_eq!(ids(&got), ["bob-1", "bob-2"], "{got}");
    let mut got = common::next_json(&mut ann_ws).await;
    if ids(&got).len() == 2 {
        assert_eq!(ids(&got), ["ann-1", "ann-2"], "{got}");
        got = common::next_json(&mut ann_ws).await;
    }
    assert_eq!(ids(&got), ["ann-1", "ann-2", "ann-3"], "{got}");
}

fn limited(jwks: &Jwks, per_second: f64, redis: Option<&str>) -> livegate::Options {
    livegate::Options {
        rate_limit: Some(livegate::server::rate::Options {
            per_second,
            claim: "sub".into(),
        }),
        redis: redis.map(|url| livegate::bus::redis::RedisOptions {
            url: url.to_string(),
            cluster: common::redis::is_cluster(url),
            prefix: "ratetest".into(),
            timeout: Duration::from_millis(500),
            fill_wait: Duration::from_secs(5),
            lease: Duration::from_millis(1_000),
        }),
        // Every request is answered by the gateway itself, not its response cache.
        response_cache_bytes: 0,
        ..options(jwks)
    }
}

/// `n` requests in a row of the caller of `token` (anonymous when `None`): the statuses.
async fn burst(gateways: &[&Gateway], token: Option<&str>, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        let gw = gateways[i % gateways.len()];
        let req = request(gw, token, "application/json", "{ hello { text } }");
        let res = req.send().await.expect("answer");
        let status = res.status().as_u16();
        if status == 429 {
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            let body: Value = res.json().await.expect("json");
            assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
        }
        out.push(status);
    }
    out
}

#[tokio::test]
async fn each_client_has_its_own_budget_of_requests_and_socket_operations() {
    let rsa = Signer::rsa("rsa-1");
    let jwks = Jwks::start(&[&rsa]).await;
    let up = upstream().await;
    // A budget of 2 per second: a request comes back every 500 ms, longer than any
    // burst here takes.
    let gw = Gateway::start(
        &SCHEMA.replace("{up}", &up.url()),
        limited(&jwks, 2.0, None),
    )
    .await;
    let (ann, bob) = (rsa.sign(&claims("ann", 600)), rsa.sign(&claims("bob", 600)));
    assert_eq!(burst(&[&gw], Some(&ann), 3).await, [200, 200, 429]);
    // Another token of ann's is still ann: no budget left.
    let again = rsa.sign(&json!({"sub": "ann", "exp": now() + 900}));
    assert_eq!(burst(&[&gw], Some(&again), 1).await, [429]);
    assert_eq!(
        burst(&[&gw], Some(&bob), 2).await,
        [200, 200],
        "bob's own budget"
    );
    assert_eq!(
        burst(&[&gw], None, 3).await,
        [200, 200, 429],
        "anonymous: by address"
    );
    // Operations started on a socket count too.
    let token = format!("Bearer {}", rsa.sign(&claims("cat", 600)));
    let mut ws = common::websocket_with(
        gw.addr,
        "graphql-transport-ws",
        json!({"Authorization": token}),
    )
    .await;
    let mut codes = Vec::new();
    for id in 0..3 {
        let msg = json!({"id": id.to_string(), "type": "subscribe", "payload": {"query": "{ hello { text } }"}});
        ws.send(Message::text(msg.to_string())).await.expect("send");
        let got = common::next_json(&mut ws).await;
        codes.push(
            got["payload"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or(got["type"].as_str().unwrap_or(""))
                .to_string(),
        );
        if got["type"] == "next" {
            assert_eq!(common::next_json(&mut ws).await["type"], "complete");
        }
    }
    assert_eq!(codes, ["next", "next", "RATE_LIMITED"]);
    let page = gw.metrics().await;
    assert_eq!(common::sample(&page, "livegate_rate_limited_total"), 4.0);
}

#[tokio::test]
async fn two_replicas_share_one_budget_through_redis_and_fall_back_without_it() {
    // On one Redis, and on a Redis Cluster.
    for cluster in [false, true] {
        let mut redis = common::redis::Redis::start(cluster);
        let rsa = Signer::rsa("rsa-1");
        let jwks = Jwks::start(&[&rsa]).await;
        let up = upstream().await;
        let schema = SCHEMA.replace("{up}", &up.url());
        let a = Gateway::start(&schema, limited(&jwks, 2.0, Some(&redis.url()))).await;
        let b = Gateway::start(&schema, limited(&jwks, 2.0, Some(&redis.url()))).await;
        let ann = rsa.sign(&claims("ann", 600));
        // Alternating replicas: 2 in all, not 2 each.
        assert_eq!(burst(&[&a, &b], Some(&ann), 4).await, [200, 200, 429, 429]);
        // Redis gone: each replica keeps a budget of its own (and still answers).
        redis.stop();
        let bob = rsa.sign(&claims("bob", 600));
        assert_eq!(burst(&[&a], Some(&bob), 3).await, [200, 200, 429]);
        assert_eq!(burst(&[&b], Some(&bob), 3).await, [200, 200, 429]);
    }
}

#[tokio::test]
async fn cookies_and_gets_carry_tokens_and_a_token_verified_before_still_expires() {
    let s = setup(|o| o.auth.cookie = Some("session".into())).await;
    let get = |token: Option<String>, cookie: Option<String>| {
        let mut req =
            s.gw.client
                .get(format!(
                    "{}?query=%7B%20hello%20%7B%20text%20%7D%20%7D",
                    s.gw.url()
                ))
                .header("accept", "application/json");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move { req.send().await.expect("answer").status().as_u16() }
    };
    let good = s.ec.sign(&claims("ann", 60));
    assert_eq!(get(Some(good.clone()), None).await, 200);
    assert_eq!(get(Some("bad.to.ken".into()), None).await, 401);
    // The cookie, among others; a bad one is refused like a bad header.
    assert_eq!(
        get(None, Some(format!("theme=dark; session={good}; x=1"))).await,
        200
    );
    assert_eq!(
        get(
            None,
            Some(format!("session={}", s.ec.sign(&claims("ann", -9))))
        )
        .await,
        401
    );
    assert_eq!(
        get(None, Some("theme=dark".into())).await,
        200,
        "no token: anonymous"
    );
    // A token accepted once is remembered, but not past its exp.
    let short = s.ed.sign(&claims("ann", 1));
    assert_eq!(ask(&s.gw, Some(&short)).await.0, 200);
    let end = (now() + 2) * 1000;
    let wait = end.saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64,
    );
    tokio::time::sleep(Duration::from_millis(wait + 100)).await;
    let (status, _, body) = ask(&s.gw, Some(&short)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .expect("message")
        .contains("expired"));
}

/// A graphql-sse reservation's stream (single connection mode) ends at its token's exp
/// with the error and `complete` sent to each running operation by its id: a message
/// without an id would reach no operation of a graphql-sse client.
#[tokio::test]
async fn a_reservation_stream_ends_each_operation_at_the_tokens_exp() {
    let s = setup(|_| {}).await;
    let token = s.ed.sign(&claims("ann", 2));
    let res =
        s.gw.client
            .put(s.gw.url())
            .bearer_auth(&token)
            .send()
            .await
            .expect("answer");
    assert_eq!(res.status(), 201);
    let reservation = res.text().await.expect("the reservation's token");
    let mut stream =
        s.gw.client
            .get(s.gw.url())
            .header("accept", "text/event-stream")
            .header("x-graphql-event-stream-token", &reservation)
            .bearer_auth(&token)
            .send()
            .await
            .expect("the stream");
    assert_eq!(stream.status(), 200);
    let op = s
        .gw
        .client
        .post(s.gw.url())
        .header("x-graphql-event-stream-token", &reservation)
        .bearer_auth(&token)
        .json(&json!({"query": "subscription { hello { text } }", "extensions": {"operationId": "op-1"}}))
        .send()
        .await
        .expect("answer");
    assert_eq!(op.status(), 202, "{:?}", op.text().await);
    let mut body = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("in time")
        .expect("read")
    {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.contains("\"hi\""), "{body}");
    let ended = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("event: next\ndata: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|m| m["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED")
        .unwrap_or_else(|| panic!("no error for the operation: {body}"));
    assert_eq!(ended["id"], "op-1", "{body}");
    assert!(
        body.contains("event: complete\ndata: {\"id\":\"op-1\"}"),
        "{body}"
    );
}
