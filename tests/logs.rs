//! What log lines say, and never say: an upstream's secrets — the query string of its URL,
//! its userinfo, its header values — reach neither a client nor a log line; redirects are
//! not followed by default, and with `--upstream-follow-redirects` only within the same
//! origin; an upstream socket dropped for a message over the size limit says so.

mod common;

use common::{error_code, Gateway, Upstream};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Every log line of this test binary, as the `livegate` binary would write them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).to_string()
    }

    /// Waits (up to 10 s) until a line holding `text` is logged; `what` says what it is.
    async fn until_logged(&self, text: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.text().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} logged:\n{}",
                self.text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_dead_upstreams_url_secrets_reach_neither_client_nor_log() {
    let logs = capture_logs();
    // Nothing listens on port 9 of loopback: the upstream is dead.
    let schema = r#"
extend schema
  @upstream(name: "keys", url: "http://admin:pa55word-xyz@127.0.0.1:9/v1?apikey=SECRET123", headers: [{name: "x-api-key", value: "HEADERSECRET456"}])
type Query { reset: String @rest(upstream: "keys", path: "/reset") }
type Subscription {
  events: String @stream(upstream: "keys", path: "/ws")
}
"#;
    let gw = Gateway::start(schema, livegate::Options::default()).await;
    let r = gw.query("{ reset }").await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("UPSTREAM_UNAVAILABLE"),
        "{r}"
    );
    let text = r.to_string();
    for secret in [
        "SECRET123",
        "pa55word-xyz",
        "admin",
        "HEADERSECRET456",
        "apikey",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} reached the client: {text}"
        );
    }
    assert!(
        text.contains("keys"),
        "the error names the upstream: {text}"
    );

    // The event stream's socket fails to connect and says so in the log.
    let res = gw
        .client
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"query": "subscription { events }"}))
        .send()
        .await
        .expect("SSE");
    assert_eq!(res.status(), 200);
    logs.until_logged("upstream socket failed to connect", "socket failure")
        .await;
    drop(res);
    let log = logs.text();
    assert!(log.contains("upstream request failed"), "{log}");
    assert!(
        log.contains("127.0.0.1:9/v1/reset"),
        "the log says where: {log}"
    );
    for secret in ["SECRET123", "pa55word-xyz", "HEADERSECRET456"] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
}

fn redirecting(to: String) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/away",
            get(move || {
                let to = to.clone();
                async move { axum::response::Redirect::temporary(&format!("{to}/landing")) }
            }),
        )
        .route(
            "/home",
            get(|| async { axum::response::Redirect::temporary("/landing") }),
        )
        .route(
            "/landing",
            get(|| async { axum::Json(serde_json::json!("landed")) }),
        )
}

#[tokio::test]
async fn redirects_are_not_followed_by_default_and_never_to_another_origin() {
    let elsewhere = Upstream::start(redirecting(String::new())).await;
    let up = Upstream::start(redirecting(elsewhere.url())).await;
    let schema = format!(
        r#"
extend schema @upstream(name: "api", url: "{}", headers: [{{name: "authorization", value: "Bearer upstream-key"}}])
type Query {{
  away: String @rest(upstream: "api", path: "/away")
  home: String @rest(upstream: "api", path: "/home")
}}
"#,
        up.url()
    );
    let gw = Gateway::start(&schema, livegate::Options::default()).await;
    let r = gw.query("{ home }").await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("UPSTREAM_HTTP_ERROR"),
        "{r}"
    );
    assert_eq!(r["errors"][0]["extensions"]["status"], 307, "{r}");
    assert_eq!(up.count_matching("GET /landing"), 0);

    let options = livegate::Options {
        follow_redirects: true,
        ..Default::default()
    };
    let gw = Gateway::start(&schema, options).await;
    let r = gw.query("{ home }").await;
    assert_eq!(r["data"]["home"], "landed", "same origin is followed: {r}");
    let r = gw.query("{ away }").await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("UPSTREAM_HTTP_ERROR"),
        "{r}"
    );
    assert_eq!(
        elsewhere.count(),
        0,
        "a redirect to another origin must not be followed (it would carry the upstream's key)"
    );
}

/// An upstream socket message over `--max-upstream-body` drops the shared socket with the
/// reason in the log; the socket reconnects and the entry it feeds is refetched.
#[tokio::test]
async fn an_oversized_upstream_socket_message_is_logged_and_the_fed_entry_refetched() {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use axum::routing::get;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let logs = capture_logs();
    let sockets = Arc::new(AtomicUsize::new(0));
    let opened = sockets.clone();
    let up = Upstream::start(
        axum::Router::new()
            .route(
                "/items",
                get(|| async { axum::Json(serde_json::json!([{"id": "1"}])) }),
            )
            .route(
                "/ws",
                get(move |ws: WebSocketUpgrade| {
                    let n = opened.fetch_add(1, Ordering::SeqCst);
                    async move {
                        ws.on_upgrade(move |mut socket| async move {
                            if n == 0 {
                                let huge = format!(r#"{{"id":"{}"}}"#, "x".repeat(100_000));
                                let _ = socket.send(Message::text(huge)).await;
                            }
                            // Then hold the socket open.
                            while let Some(Ok(_)) = socket.next().await {}
                        })
                    }
                }),
            ),
    )
    .await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
type Item {{ id: ID! }}
type Query {{
  items: [Item!]! @rest(upstream: "api", path: "/items") @cache(maxAge: 600)
    @updates(upstream: "api", path: "/ws", apply: APPEND)
}}
type Subscription {{ items: [Item!]! @live }}"#,
        up.url()
    );
    let options = livegate::Options {
        max_upstream_body: 64 << 10,
        ..Default::default()
    };
    let gw = Gateway::start(&schema, options).await;
    let mut sse = gw
        .client
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"query": "subscription { items { id } }"}))
        .send()
        .await
        .expect("SSE");
    let first = sse.chunk().await.expect("read").expect("a result");
    assert!(String::from_utf8_lossy(&first).contains(r#""id":"1""#));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while sockets.load(Ordering::SeqCst) < 2 || up.count_matching("GET /items") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect and refetch: {} sockets, {:?}",
            sockets.load(Ordering::SeqCst),
            up.requests()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        logs.text()
            .contains("upstream socket sent a message over --max-upstream-body"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_path_made_of_the_callers_claims_is_logged_as_its_template() {
    use common::jwt::{claims, Signer};
    let logs = capture_logs();
    const SECRET: &str = "a shared secret of thirty-two bytes!";
    // Nothing listens on port 9 of loopback: the request fails and is logged.
    let schema = r#"
extend schema @upstream(name: "dead", url: "http://127.0.0.1:9/v1?key=SECRET789")
extend schema @upstream(name: "bus", url: "redis://127.0.0.1:9")
type Query { me: String @rest(upstream: "dead", path: "/users/{ claims.sub }/profile") }
type Subscription { inbox: String @stream(upstream: "bus", channel: "inbox.{claims.sub}") }
"#;
    let options = livegate::Options {
        auth: livegate::auth::Options {
            secret: Some(SECRET.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let gw = Gateway::start(schema, options).await;
    let token = Signer::hmac(SECRET).sign(&claims("subject-7c1e9", 60));
    let body: serde_json::Value = gw
        .client
        .post(gw.url())
        .bearer_auth(&token)
        .json(&serde_json::json!({"query": "{ me }"}))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        error_code(&body).as_deref(),
        Some("UPSTREAM_UNAVAILABLE"),
        "{body}"
    );
    // A Redis channel made of the caller's claims: its socket fails to connect and says
    // so, naming the channel by its template.
    let stream = gw
        .client
        .post(gw.url())
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"query": "subscription { inbox }"}))
        .send()
        .await
        .expect("SSE");
    assert_eq!(stream.status(), 200);
    logs.until_logged("channel inbox.{claims.sub}", "channel failure")
        .await;
    drop(stream);
    let log = logs.text();
    assert!(
        log.contains("127.0.0.1:9/v1/users/{ claims.sub }/profile"),
        "the log says where, as the schema does: {log}"
    );
    assert!(!log.contains("subject-7c1e9"), "a claim reached the log");
    assert!(
        !log.contains("SECRET789"),
        "the upstream's query reached the log"
    );
    assert!(!log.contains(&token), "the token reached the log");
}
