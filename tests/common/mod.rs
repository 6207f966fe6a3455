//! Test harness: real upstreams (axum on an ephemeral loopback port) that record every
//! request they get, and the real gateway started with `livegate::run` on port 0.
#![allow(dead_code)]

pub mod jwt;
pub mod redis;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An upstream started by a test. `log` holds "METHOD /path?query" of every request.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub async fn start(app: Router) -> Upstream {
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let recorder = log.clone();
        let app = app.layer(middleware::from_fn(move |req: Request, next: Next| {
            let recorder = recorder.clone();
            async move {
                recorder
                    .lock()
                    .expect("log")
                    .push(format!("{} {}", req.method(), req.uri()));
                let res: Response = next.run(req).await;
                res
            }
        }));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("upstream serves");
        });
        Upstream { addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().expect("log").len()
    }

    /// Requests whose "METHOD /path" starts with `prefix`.
    pub fn count_matching(&self, prefix: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

/// A gateway started by a test; stops when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub client: reqwest::Client,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Gateway {
    /// Starts a gateway on `schema`, where `{up}` (and `{up2}`) stand for upstream URLs.
    pub async fn start(schema: &str, options: livegate::Options) -> Gateway {
        Gateway::start_with_env(schema, options, &[]).await
    }

    /// [`Gateway::start`] with environment variables (`@webhook` secrets, URL overrides).
    pub async fn start_with_env(
        schema: &str,
        options: livegate::Options,
        env: &[(&str, &str)],
    ) -> Gateway {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let plan = match livegate::plan::load("schema.graphql", schema, env) {
            Ok(p) => p,
            Err(errors) => panic!(
                "test schema is invalid:\n{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            livegate::run(listener, plan, options, async {
                let _ = stopped.await;
            })
            .await
            .expect("gateway runs");
        });
        Gateway {
            addr,
            stop: Some(stop),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// POSTs a query (with `Accept: application/json`) and returns the JSON response.
    pub async fn query(&self, query: &str) -> Value {
        self.query_with(query, json!({}), &[]).await
    }

    /// POSTs a subscription with `Accept: text/event-stream`: the open response, whose
    /// chunks are its events.
    pub async fn sse(&self, query: &str) -> reqwest::Response {
        self.client
            .post(self.url())
            .header("accept", "text/event-stream")
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("SSE")
    }

    pub async fn query_with(
        &self,
        query: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> Value {
        let mut req = self
            .client
            .post(self.url())
            .header("accept", "application/json")
            .json(&json!({ "query": query, "variables": variables }));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("gateway answers");
        assert_eq!(res.status(), 200, "status of {query}");
        res.json().await.expect("JSON response")
    }
}

impl Gateway {
    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Waits (up to 10 s) until `done` holds for the metrics page; the last page, whether
    /// or not it got there (the caller asserts what it needs).
    pub async fn metrics_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let page = self.metrics().await;
            if done(&page) || tokio::time::Instant::now() > deadline {
                return page;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A gateway some other way started (a `livegate` process) at `addr`.
    pub fn at(addr: SocketAddr) -> Gateway {
        Gateway {
            addr,
            stop: None,
            client: reqwest::Client::new(),
        }
    }

    /// POSTs `body` as it is (`Content-Type: application/json`); the response's text.
    pub async fn query_raw(&self, body: &str) -> String {
        self.client
            .post(self.url())
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("gateway answers")
            .text()
            .await
            .expect("text")
    }
}

/// A WebSocket to the gateway.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to the gateway in `protocol` (`graphql-transport-ws` or `graphql-ws`),
/// initialised: its first message is the acknowledgement.
pub async fn websocket(to: SocketAddr, protocol: &str) -> Ws {
    websocket_with(to, protocol, Value::Null).await
}

/// A WebSocket to the gateway in `protocol`, initialised with `init` as
/// `connection_init`'s payload (none when `Null`).
pub async fn websocket_with(to: SocketAddr, protocol: &str, init: Value) -> Ws {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = websocket_open(to, protocol).await;
    let hello = if init.is_null() {
        json!({"type": "connection_init"})
    } else {
        json!({"type": "connection_init", "payload": init})
    };
    ws.send(Message::text(hello.to_string()))
        .await
        .expect("send");
    let ack = ws.next().await.expect("a message").expect("read");
    assert_eq!(
        ack.into_text().expect("text").as_str(),
        r#"{"type":"connection_ack"}"#
    );
    ws
}

/// A WebSocket to the gateway in `protocol`, upgraded, nothing sent yet.
pub async fn websocket_open(to: SocketAddr, protocol: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{to}/graphql")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().expect("header"));
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    ws
}

/// The next message of a gateway WebSocket, as JSON (within 10 s).
/// Sends a graphql-transport-ws `subscribe` of `query` under `id`.
pub async fn subscribe(ws: &mut Ws, id: &str, query: &str) {
    use futures_util::SinkExt;
    let msg = json!({"id": id, "type": "subscribe", "payload": {"query": query}});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        msg.to_string(),
    ))
    .await
    .expect("send");
}

pub async fn next_json(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("open")
        .expect("read");
    serde_json::from_str(msg.to_text().expect("text")).expect("JSON")
}

/// The errors `schema` is refused with, all in one text; asserts there is one at each
/// of `lines` (as `schema.graphql:<line>:…`).
pub fn refused_at(schema: &str, lines: &[usize]) -> String {
    let errors: Vec<String> =
        livegate::plan::load("schema.graphql", schema, Vec::<(String, String)>::new())
            .expect_err("refused")
            .iter()
            .map(ToString::to_string)
            .collect();
    let all = errors.join("\n");
    for line in lines {
        let at = format!("schema.graphql:{line}:");
        assert!(
            errors.iter().any(|e| e.starts_with(&at)),
            "an error at line {line}\n{all}"
        );
    }
    all
}

/// The `extensions.code` of the first error, if any.
pub fn error_code(response: &Value) -> Option<String> {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_string)
}

/// The value of the sample `name{labels}` in a Prometheus text page (0 when absent).
pub fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// An upstream WebSocket route that sends every string said on `say` to each connected
/// socket, as a text frame, until the socket closes.
pub fn announcer(say: tokio::sync::broadcast::Sender<String>) -> axum::routing::MethodRouter {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    axum::routing::get(move |ws: WebSocketUpgrade| {
        let tx = say.clone();
        async move {
            ws.on_upgrade(move |socket| async move {
                let (mut sink, mut stream) = socket.split();
                let mut heard = tx.subscribe();
                loop {
                    tokio::select! {
                        said = heard.recv() => match said {
                            Ok(text) => if sink.send(Message::text(text)).await.is_err() { break },
                            Err(_) => break,
                        },
                        got = stream.next() => if !matches!(got, Some(Ok(_))) { break },
                    }
                }
            })
        }
    })
}

/// An upstream serving `app`, and a gateway (default options) serving `schema` with
/// `{up}` standing for that upstream's URL.
pub async fn serve(app: Router, schema: &str) -> (Upstream, Gateway) {
    let up = Upstream::start(app).await;
    let gw = Gateway::start(
        &schema.replace("{up}", &up.url()),
        livegate::Options::default(),
    )
    .await;
    (up, gw)
}
