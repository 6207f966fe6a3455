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
async fn websocket(
    to: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{to}/graphql")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    ws.send(Message::text(r#"{"type":"connection_init"}"#))
        .await
        .expect("send");
    let ack = ws.next().await.expect("a message").expect("read");
    assert_eq!(
        ack.into_text().expect("text").as_str(),
        r#"{"type":"connection_ack"}"#
    );
    ws
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
