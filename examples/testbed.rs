//! The testbed the JavaScript protocol tests (`tests/js`) start: a counting REST upstream
//! and the real gateway (`livegate::run`) in front of it, both on ephemeral loopback
//! ports. It prints one JSON line, `{"gateway": "http://…", "upstream": "http://…"}`, and
//! runs until its standard input closes, so the test that started it stops it for sure.
//!
//! The upstream: `/messages/{channel}` (GET, POST), `/users/{id}` (GET; POST renames),
//! `/counter` (GET; `POST /counter/bump` adds 2, which keeps its parity),
//! `/whoami` (echoes the Authorization header), `/items/{list}` (GET, 300 ms late for
//! lists named `slow…`; PUT sets it) and
//! `/items/{list}/first`, the WebSocket `/ws` (sends what `POST /_ws/send` gets; `POST
//! /_ws/kill` drops every socket; `GET /_ws` counts open and total sockets), `/_stats`
//! (requests per path, with their times in ms), `POST /_reset` (zeroes the stats).
//!
//! Flags: `--port` (the gateway's; default any), `--max-connections`, `--max-connections-per-ip`,
//! `--max-request-body`,
//! `--max-operations-per-connection`, `--max-operations-per-second`, `--ws-idle-timeout-ms`, `--live-grace-ms`, `--socket-grace-ms`, `--ws-init-timeout-ms`, `--webhook-secret`, `--webhook-token`, `--cors-origin`, `--jwt-secret`,
//! `--pad-bytes`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}", forwardHeaders: ["authorization"], headers: [{name: "x-testbed-key", value: "k1"}])
type User { id: ID! name: String! }
type Message {
  id: ID!
  channel: String!
  userId: ID!
  text: String!
  author: User @rest(upstream: "api", path: "/users/{parent.userId}") @cache(maxAge: 60, tags: ["User:{parent.userId}"])
}
type Counter { value: Int! parity: String! pad: String! }
type Query {
  messages(channel: String!): [Message!]!
    @rest(upstream: "api", path: "/messages/{args.channel}")
    @cache(maxAge: 60, tags: ["messages:{args.channel}"])
  counter: Counter @rest(upstream: "api", path: "/counter") @cache(maxAge: 60, tags: ["counter"])
  whoami: User @rest(upstream: "api", path: "/whoami") @cache(maxAge: 60, scope: PRIVATE, tags: ["whoami"])
  appendItems(list: String!): [Item!]! @rest(upstream: "api", path: "/items/{args.list}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}", mode: "append"}, apply: APPEND)
  prependItems(list: String!): [Item!]! @rest(upstream: "api", path: "/items/{args.list}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}", mode: "prepend"}, apply: PREPEND)
  upsertItems(list: String!): [Item!]! @rest(upstream: "api", path: "/items/{args.list}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}", mode: "upsert"}, apply: UPSERT, key: "id")
  mergeItems(list: String!): [Item!]! @rest(upstream: "api", path: "/items/{args.list}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}", mode: "merge"}, apply: MERGE, key: "id")
  removeItems(list: String!): [Item!]! @rest(upstream: "api", path: "/items/{args.list}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}", mode: "remove"}, apply: REMOVE, key: "id")
  replaceItem(list: String!): Item @rest(upstream: "api", path: "/items/{args.list}/first") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}", mode: "replace"}, apply: REPLACE)
  refetchItems(list: String!): [Item!]! @rest(upstream: "api", path: "/items/{args.list}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}", mode: "refetch"}, apply: REFETCH)
  enveloped(list: String!): [Item!]! @rest(upstream: "api", path: "/items/{args.list}") @cache(maxAge: 60)
    @updates(upstream: "api", path: "/ws", when: {list: "{args.list}"}, apply: APPEND, select: "data.item")
}
type Mutation {
  sendMessage(channel: String!, text: String!): Message
    @rest(upstream: "api", method: POST, path: "/messages/{args.channel}", body: "{args}")
    @invalidates(tags: ["messages:{args.channel}"])
  renameUser(id: ID!, name: String!): User
    @rest(upstream: "api", method: POST, path: "/users/{args.id}", body: "{args}")
    @invalidates(tags: ["User:{args.id}"])
}
type Item {
  id: ID!
  list: String!
  name: String
  qty: Int
  mode: String
  ownerId: ID
  owner: User @rest(upstream: "api", path: "/users/{parent.ownerId}") @cache(maxAge: 60)
}
type Subscription {
  messages(channel: String!): [Message!]! @live
  counter: Counter @live(pollMs: 100)
  whoami: User @live
  appendItems(list: String!): [Item!]! @live
  prependItems(list: String!): [Item!]! @live
  upsertItems(list: String!): [Item!]! @live
  mergeItems(list: String!): [Item!]! @live
  removeItems(list: String!): [Item!]! @live
  replaceItem(list: String!): Item @live
  refetchItems(list: String!): [Item!]! @live
  enveloped(list: String!): [Item!]! @live
  itemEvents(list: String!): Item @stream(upstream: "api", path: "/ws", when: {list: "{args.list}"})
}
"#;

#[derive(Clone, Default)]
struct Data {
    messages: Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    users: Arc<Mutex<BTreeMap<String, String>>>,
    counter: Arc<Mutex<i64>>,
    stats: Arc<Mutex<BTreeMap<String, Vec<u128>>>>,
    started: Arc<Mutex<Option<Instant>>>,
    /// Bytes of padding in each `/counter` answer (`--pad-bytes`), to make big pushes.
    pad: usize,
    items: Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    /// What the `/ws` sockets are told to do: send a text frame, or drop.
    ws: Arc<Mutex<Option<tokio::sync::broadcast::Sender<WsCmd>>>>,
    ws_open: Arc<std::sync::atomic::AtomicUsize>,
    ws_total: Arc<std::sync::atomic::AtomicUsize>,
    /// The `x-testbed-key` header of the last `/ws` handshake.
    ws_key: Arc<Mutex<Option<String>>>,
}

#[derive(Clone, Debug)]
enum WsCmd {
    Text(String),
    Kill,
}

impl Data {
    fn ws_tx(&self) -> tokio::sync::broadcast::Sender<WsCmd> {
        lock(&self.ws)
            .get_or_insert_with(|| tokio::sync::broadcast::channel(1024).0)
            .clone()
    }
}

async fn upstream_socket(mut socket: axum::extract::ws::WebSocket, data: Data) {
    use axum::extract::ws::Message;
    use std::sync::atomic::Ordering;
    let mut rx = data.ws_tx().subscribe();
    data.ws_open.fetch_add(1, Ordering::SeqCst);
    data.ws_total.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Ok(WsCmd::Text(t)) => {
                    if socket.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
                Ok(WsCmd::Kill) | Err(_) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    data.ws_open.fetch_sub(1, Ordering::SeqCst);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Data {
    fn count(&self, what: String) {
        let t0 = *lock(&self.started).get_or_insert_with(Instant::now);
        lock(&self.stats)
            .entry(what)
            .or_default()
            .push(t0.elapsed().as_millis());
    }
}

fn app(data: Data) -> Router {
    Router::new()
        .route(
            "/messages/{channel}",
            get(|State(d): State<Data>, Path(c): Path<String>| async move {
                d.count(format!("GET /messages/{c}"));
                let list = lock(&d.messages).get(&c).cloned().unwrap_or_default();
                Json(Value::Array(list))
            })
            .post(|State(d): State<Data>, Path(c): Path<String>, Json(body): Json<Value>| async move {
                d.count(format!("POST /messages/{c}"));
                let mut all = lock(&d.messages);
                let list = all.entry(c.clone()).or_default();
                let m = json!({"id": (list.len() + 1).to_string(), "channel": c, "userId": "1", "text": body["text"]});
                list.push(m.clone());
                Json(m)
            }),
        )
        .route(
            "/users/{id}",
            get(|State(d): State<Data>, Path(id): Path<String>| async move {
                d.count(format!("GET /users/{id}"));
                let name = lock(&d.users).get(&id).cloned().unwrap_or_else(|| format!("user {id}"));
                Json(json!({"id": id, "name": name}))
            })
            .post(|State(d): State<Data>, Path(id): Path<String>, Json(body): Json<Value>| async move {
                d.count(format!("POST /users/{id}"));
                let name = body["name"].as_str().unwrap_or("?").to_string();
                lock(&d.users).insert(id.clone(), name.clone());
                Json(json!({"id": id, "name": name}))
            }),
        )
        .route(
            "/counter",
            get(|State(d): State<Data>| async move {
                d.count("GET /counter".into());
                let v = *lock(&d.counter);
                Json(json!({"value": v, "parity": if v % 2 == 0 { "even" } else { "odd" }, "pad": "x".repeat(d.pad)}))
            }),
        )
        .route(
            "/counter/bump",
            post(|State(d): State<Data>| async move {
                let mut v = lock(&d.counter);
                *v += 2;
                Json(json!({"value": *v}))
            }),
        )
        .route(
            "/whoami",
            get(|State(d): State<Data>, headers: HeaderMap| async move {
                d.count("GET /whoami".into());
                let who = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("anonymous").to_string();
                Json(json!({"id": who, "name": who}))
            }),
        )
        .route(
            "/items/{list}",
            get(|State(d): State<Data>, Path(list): Path<String>| async move {
                d.count(format!("GET /items/{list}"));
                if list.starts_with("slow") {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Json(Value::Array(lock(&d.items).get(&list).cloned().unwrap_or_default()))
            })
            .put(|State(d): State<Data>, Path(list): Path<String>, Json(body): Json<Vec<Value>>| async move {
                lock(&d.items).insert(list, body);
                "ok"
            }),
        )
        .route(
            "/items/{list}/first",
            get(|State(d): State<Data>, Path(list): Path<String>| async move {
                d.count(format!("GET /items/{list}/first"));
                Json(lock(&d.items).get(&list).and_then(|l| l.first().cloned()).unwrap_or(Value::Null))
            }),
        )
        .route(
            "/ws",
            get(|State(d): State<Data>, headers: HeaderMap, upgrade: axum::extract::ws::WebSocketUpgrade| async move {
                d.count("GET /ws".into());
                *lock(&d.ws_key) = headers.get("x-testbed-key").and_then(|v| v.to_str().ok()).map(str::to_string);
                upgrade.on_upgrade(move |socket| upstream_socket(socket, d))
            }),
        )
        .route(
            "/_ws/send",
            post(|State(d): State<Data>, body: String| async move {
                let _ = d.ws_tx().send(WsCmd::Text(body));
                "ok"
            }),
        )
        .route(
            "/_ws/kill",
            post(|State(d): State<Data>| async move {
                let _ = d.ws_tx().send(WsCmd::Kill);
                "ok"
            }),
        )
        .route(
            "/_ws",
            get(|State(d): State<Data>| async move {
                use std::sync::atomic::Ordering;
                Json(json!({"open": d.ws_open.load(Ordering::SeqCst), "total": d.ws_total.load(Ordering::SeqCst), "key": *lock(&d.ws_key)}))
            }),
        )
        .route("/_stats", get(|State(d): State<Data>| async move { Json(json!(*lock(&d.stats))) }))
        .route(
            "/_reset",
            post(|State(d): State<Data>| async move {
                lock(&d.stats).clear();
                *lock(&d.started) = Some(Instant::now());
                "ok"
            }),
        )
        .with_state(data)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let ms = |name: &str, default: u64| {
        flag(name)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_millis(default))
    };

    let up = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return eprintln!("testbed: {e}"),
    };
    let up_addr = up.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let pad = flag("--pad-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    livegate::demo::spawn(
        up,
        app(Data {
            pad,
            ..Data::default()
        }),
    );

    let schema = SCHEMA.replace("{up}", &format!("http://{up_addr}"));
    // With `--schema-file PATH` the schema is written there and reloaded from it on SIGHUP.
    let schema_file = flag("--schema-file").map(std::path::PathBuf::from);
    if let Some(path) = &schema_file {
        if let Err(e) = std::fs::write(path, &schema) {
            return eprintln!("testbed: {}: {e}", path.display());
        }
    }
    let plan =
        match livegate::plan::load("testbed.graphql", &schema, Vec::<(String, String)>::new()) {
            Ok(p) => p,
            Err(e) => return eprintln!("testbed schema: {e:?}"),
        };
    let mut options = livegate::Options {
        schema_paths: schema_file.into_iter().collect(),
        live_grace: ms("--live-grace-ms", 300),
        socket_grace: ms("--socket-grace-ms", 300),
        ..Default::default()
    };
    options.ws.init_timeout = ms("--ws-init-timeout-ms", 3000);
    options.webhook.secret = flag("--webhook-secret");
    options.webhook.token = flag("--webhook-token");
    // Tokens signed with this secret are verified, with no leeway (tests/js/auth.test.js
    // watches sockets end at their token's exp).
    if let Some(secret) = flag("--jwt-secret") {
        options.auth.secret = Some(secret);
        options.auth.leeway = Duration::ZERO;
    }
    let count =
        |name: &str, default: usize| flag(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    options.connection_limits.max_connections_per_ip = count("--max-connections-per-ip", 1_000);
    options.connection_limits.max_connections = count("--max-connections", 10_000);
    options.max_request_body = count("--max-request-body", 1 << 20);
    options.connection_limits.max_operations_per_connection =
        count("--max-operations-per-connection", 100);
    options.connection_limits.max_operations_per_second =
        count("--max-operations-per-second", 1_000) as u32;
    options.connection_limits.idle_timeout = ms("--ws-idle-timeout-ms", 300_000);
    let origins: Vec<String> = flag("--cors-origin").into_iter().collect();
    options.cors = match livegate::server::cors::Cors::new(&origins) {
        Ok(c) => c,
        Err(e) => return eprintln!("testbed: {e}"),
    };
    let port: u16 = flag("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let gw = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => return eprintln!("testbed: {e}"),
    };
    let gw_addr = gw.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!(
        "{}",
        json!({"gateway": format!("http://{gw_addr}"), "upstream": format!("http://{up_addr}")})
    );
    let stdin_closed = async {
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    if let Err(e) = livegate::run(gw, plan, options, stdin_closed).await {
        eprintln!("testbed: {e}");
    }
}
