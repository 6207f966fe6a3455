//! TCP-level limits of the accept loop: connections per client address (the one over the
//! limit gets a 503 at accept, another address is unaffected), and the header timeout that
//! cuts off a client sending its headers slowly or idling on a keep-alive connection.

mod common;

use common::{sample, Gateway};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "http://127.0.0.1:9")
type Query { hello: String @rest(upstream: "api", path: "/hello") }
"#;

/// A connection to the gateway from `source` (any 127.x address is loopback on Linux).
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind source");
    socket.connect(to).await.expect("connect")
}

/// A graphql-transport-ws WebSocket to the gateway, acknowledged.
async fn websocket(to: SocketAddr) -> common::Ws {
    common::websocket(to, "graphql-transport-ws").await
}

/// Sends one keep-alive request and reads its whole response (headers and
/// content-length body), leaving the connection open.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the gateway answers")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// Reads until the gateway closes the connection; what it sent before closing.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("the gateway closes the connection")
        .ok();
    String::from_utf8_lossy(&got).to_string()
}

#[tokio::test]
async fn tcp_connections_per_ip_over_the_limit_get_503_and_others_are_unaffected() {
    let mut options = livegate::Options::default();
    options.connection_limits.max_tcp_connections_per_ip = 2;
    let gw = Gateway::start(SCHEMA, options).await;
    let to = gw.addr;
    let local = Ipv4Addr::new(127, 0, 0, 1);
    // One WebSocket (its TCP connection stays counted after the upgrade) and one
    // keep-alive HTTP connection, both answered.
    let mut one = websocket(to).await;
    let mut two = connect_from(local, to).await;
    assert!(request(&mut two, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));

    let mut three = connect_from(local, to).await;
    let refused = until_closed(&mut three).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains(
            "too many connections from 127.0.0.1: 2 at most (--max-tcp-connections-per-ip)"
        ),
        "{refused}"
    );

    // Another client address is served, and sees the two held plus its own.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let mut elsewhere = connect_from(other, to).await;
    let page = request(&mut elsewhere, "/metrics").await;
    assert_eq!(sample(&page, "livegate_tcp_connections"), 3.0, "{page}");
    assert!(
        sample(&page, "livegate_rejected_total{reason=\"limit\"}") >= 1.0,
        "{page}"
    );
    // The held connections still work.
    assert!(request(&mut two, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    one.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    let pong = one.next().await.expect("a message").expect("read");
    assert_eq!(
        pong.into_text().expect("text").as_str(),
        r#"{"type":"pong"}"#
    );

    // Closing one gives its place back: wait until the gateway has seen the close (its
    // gauge drops), then a new connection from 127.0.0.1 is admitted.
    drop(two);
    let mut seen = false;
    for _ in 0..500 {
        let page = request(&mut elsewhere, "/metrics").await;
        if sample(&page, "livegate_tcp_connections") == 2.0 {
            seen = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(seen, "the gateway never saw the connection close");
    let mut four = connect_from(local, to).await;
    assert!(request(&mut four, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_cut_off() {
    let mut options = livegate::Options::default();
    options.connection_limits.header_timeout = Duration::from_millis(200);
    let gw = Gateway::start(SCHEMA, options).await;
    let to = gw.addr;
    let local = Ipv4Addr::new(127, 0, 0, 1);

    // Half a request, then nothing: the gateway closes the connection.
    let mut slow = connect_from(local, to).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: gat")
        .await
        .expect("write");
    let said = until_closed(&mut slow).await;
    assert!(!said.contains("200 OK"), "{said}");

    // A served keep-alive connection that then idles is closed too.
    let mut idle = connect_from(local, to).await;
    assert!(request(&mut idle, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert_eq!(until_closed(&mut idle).await, "");

    // Meanwhile a prompt client is served.
    let mut prompt = connect_from(local, to).await;
    assert!(request(&mut prompt, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
}

/// Issue 8, item 2: a connection that sends nothing, a partial HTTP/2 preface and an
/// idle HTTP/2 connection are closed after the timeout; one in use (a slow request, an
/// SSE stream, a WebSocket) is not.
#[tokio::test]
async fn connections_not_in_use_are_closed_and_those_in_use_are_kept() {
    use axum::routing::get;
    let up = common::Upstream::start(
        axum::Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    axum::Json(serde_json::json!("slow"))
                }),
            )
            .route("/n", {
                let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                get(move || {
                    let v = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move { axum::Json(serde_json::json!(v)) }
                })
            }),
    )
    .await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
type Query {{
  slow: String @rest(upstream: "api", path: "/slow")
  n: Int @rest(upstream: "api", path: "/n") @cache(maxAge: 60)
}}
type Subscription {{ n: Int @live(pollMs: 100) }}"#,
        up.url()
    );
    let mut options = livegate::Options::default();
    options.connection_limits.header_timeout = Duration::from_millis(250);
    let gw = Gateway::start(&schema, options).await;
    let to = gw.addr;
    let local = Ipv4Addr::new(127, 0, 0, 1);

    let mut silent = connect_from(local, to).await;
    assert_eq!(
        until_closed(&mut silent).await,
        "",
        "a silent connection is closed"
    );

    let mut preface = connect_from(local, to).await;
    preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    until_closed(&mut preface).await;

    // A whole preface and an empty SETTINGS frame: an HTTP/2 connection, then idle.
    let mut h2 = connect_from(local, to).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    let said = until_closed(&mut h2).await;
    assert!(!said.is_empty(), "the gateway spoke HTTP/2 before closing");

    // In use: a request whose upstream takes longer than the timeout is answered.
    let mut slow = connect_from(local, to).await;
    let body = r#"{"query":"{ slow }"}"#;
    let req = format!(
        "POST /graphql HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\naccept: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    slow.write_all(req.as_bytes()).await.expect("write");
    let answer = until_closed(&mut slow).await;
    assert!(answer.contains(r#"{"data":{"slow":"slow"}}"#), "{answer}");

    // In use: an SSE stream keeps getting results well past the timeout.
    let mut sse = gw
        .client
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"query": "subscription { n }"}))
        .send()
        .await
        .expect("SSE");
    let started = tokio::time::Instant::now();
    let mut events = 0;
    while started.elapsed() < Duration::from_millis(1_200) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), sse.chunk())
            .await
            .expect("the stream goes on")
            .expect("read")
            .expect("not ended");
        events += String::from_utf8_lossy(&chunk)
            .matches("event: next")
            .count();
    }
    assert!(events >= 3, "only {events} events");

    // In use: a WebSocket, idle on the HTTP level, still answers a ping later.
    let mut ws = websocket(to).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    let pong = ws.next().await.expect("a message").expect("read");
    assert_eq!(
        pong.into_text().expect("text").as_str(),
        r#"{"type":"pong"}"#
    );
}

/// A raw HTTP/1 POST to /graphql whose body declares `length` bytes and sends `sent`.
async fn partial_post(to: SocketAddr, length: usize, sent: &[u8]) -> TcpStream {
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 1), to).await;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\naccept: application/graphql-response+json\r\ncontent-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(sent).await.expect("write");
    s
}

/// Issue 8, item 3: a body that stalls gets 408 within `--body-timeout-ms`; bodies still
/// arriving are bounded in bytes across the process (503 beyond), and every refusal is a
/// JSON GraphQL error.
#[tokio::test]
async fn request_bodies_have_a_deadline_and_a_memory_bound() {
    let mut options = livegate::Options::default();
    options.body.timeout = Duration::from_millis(600);
    options.body.max_pending = 4_000;
    options.max_request_body = 3_000;
    options.webhook.token = Some("t".into());
    let gw = Gateway::start(SCHEMA, options).await;
    let to = gw.addr;

    // Holds 2,500 of the 4,000 bytes, and stalls.
    let mut stalled = partial_post(to, 2_500, b"{\"query\":").await;
    // Wait until the gateway counts it (its declared length is reserved at once).
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), to).await;
    let mut over = String::new();
    for _ in 0..200 {
        let mut second = partial_post(to, 2_000, b"").await;
        second.write_all(&[b' '; 10]).await.expect("write");
        over = until_closed(&mut second).await;
        if over.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(over.starts_with("HTTP/1.1 503"), "{over}");
    assert!(over.contains("application/graphql-response+json"), "{over}");
    assert!(over.contains("--max-pending-body-bytes"), "{over}");
    // A small body still fits beside it.
    let r = gw.query("{ __typename }").await;
    assert_eq!(r["data"]["__typename"], "Query");

    let timed_out = until_closed(&mut stalled).await;
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    assert!(
        timed_out.contains(r#""errors""#) && timed_out.contains("--body-timeout-ms"),
        "{timed_out}"
    );
    // Its bytes were given back: the 2,000-byte body now fits.
    let body = format!(r#"{{"query":"{{ __typename }}"{}}}"#, " ".repeat(1_960));
    let r = gw.query_raw(&body).await;
    assert!(r.contains(r#""__typename":"Query""#), "{r}");

    // Over --max-request-body: 413, JSON.
    let mut big = partial_post(to, 5_000, b"").await;
    let said = until_closed(&mut big).await;
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    assert!(
        said.contains(r#""errors""#) && said.contains("graphql-response+json"),
        "{said}"
    );

    // A broken chunked body: 400, JSON.
    let mut broken = connect_from(Ipv4Addr::new(127, 0, 0, 1), to).await;
    broken
        .write_all(b"POST /graphql HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        .await
        .expect("write");
    let said = until_closed(&mut broken).await;
    assert!(said.starts_with("HTTP/1.1 400"), "{said}");
    assert!(said.contains(r#""errors""#), "{said}");

    // The webhook's body has the same deadline.
    let mut hook = connect_from(Ipv4Addr::new(127, 0, 0, 1), to).await;
    hook.write_all(b"POST /hooks/invalidate HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"tags\"")
        .await
        .expect("write");
    let said = until_closed(&mut hook).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    let page = request(&mut other, "/metrics").await;
    assert!(
        sample(&page, "livegate_rejected_total{reason=\"limit\"}") >= 3.0,
        "{page}"
    );
}

/// Issue 25: an SSE stream over HTTP/1.1 is written by the gateway itself once its head
/// is out (hyper's buffers dropped): the bytes stay valid chunked HTTP/1.1, a client that
/// stops reading is still cut off after the header timeout of stalled writes, and the
/// stream's place is given back.
#[tokio::test]
async fn a_stream_taken_over_from_hyper_stays_chunked_and_bounded() {
    use axum::routing::get;
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let up = common::Upstream::start(axum::Router::new().route(
        "/big",
        get(move || {
            let v = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { axum::Json(serde_json::json!(format!("{v}{}", "x".repeat(64 << 10)))) }
        }),
    ))
    .await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
type Query {{ big: String @rest(upstream: "api", path: "/big") @cache(maxAge: 1) }}
type Subscription {{ big: String @live(pollMs: 20) }}"#,
        up.url()
    );
    let mut options = livegate::Options::default();
    options.connection_limits.header_timeout = Duration::from_millis(300);
    let gw = Gateway::start(&schema, options).await;
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 1), gw.addr).await;
    let body = r#"{"query":"subscription { big }"}"#;
    let req = format!(
        "POST /graphql HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    // The head and the first chunk of the first result.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !String::from_utf8_lossy(&got).contains("event: next") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the stream starts")
            .expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let (size, chunk) = rest.split_once("\r\n").expect("a chunk size line");
    let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
    assert!(size > 64 << 10, "one chunk holds the whole result: {size}");
    assert!(chunk.starts_with("event: next\ndata: "), "{chunk:.40}");
    const OPEN: &str = "livegate_connections{transport=\"sse\"} 1";
    const GONE: &str = "livegate_connections{transport=\"sse\"} 0";
    assert!(gw.metrics().await.contains(OPEN));

    // The client stops reading: results pile up in the socket's buffers, writes stall,
    // and the gateway closes the connection; what was sent is then read to its end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a client that stopped reading was not cut off"
    );
    let page = gw.metrics_until(|m| m.contains(GONE)).await;
    assert!(page.contains(GONE), "the stream's place was kept");
}

/// Issue 25: over HTTP/1.1 a WebSocket's writer writes the TCP socket itself, and what
/// the WebSocket library still writes (a pong, the close handshake's reply) goes out in
/// order with the messages: a ping gets its pong, messages arrive whole, and a client's
/// close is answered with its own code.
#[tokio::test]
async fn a_socket_written_directly_still_answers_pings_and_closes_properly() {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let gw = Gateway::start(SCHEMA, livegate::Options::default()).await;
    let mut ws = websocket(gw.addr).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    let mut got = Vec::new();
    while got.len() < 2 {
        match ws.next().await.expect("a message").expect("read") {
            Message::Pong(p) => got.push(format!("pong {}", String::from_utf8_lossy(&p))),
            Message::Text(t) => got.push(t.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["pong are you there", r#"{"type":"pong"}"#]);
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    })))
    .await
    .expect("close");
    let reply = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close reply: {other:?}"),
        }
    };
    assert_eq!(
        reply.map(|f| f.code),
        Some(CloseCode::Away),
        "the client's code, echoed"
    );
}
