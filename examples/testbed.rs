//! The testbed the JavaScript protocol tests (`tests/js`) start: a counting REST upstream
//! and the real gateway (`livegate::run`) in front of it, both on ephemeral loopback
//! ports. It prints one JSON line, `{"gateway": "http://…", "upstream": "http://…"}`, and
//! runs until its standard input closes, so the test that started it stops it for sure.
//!
//! The upstream: `/messages/{channel}` (GET, POST), `/users/{id}` (GET; POST renames),
//! `/counter` (GET; `POST /counter/bump` adds 2, which keeps its parity),
//! `/whoami` (echoes the Authorization header), `/_stats` (requests per path, with their
//! times in ms), `POST /_reset` (zeroes the stats).
//!
//! Flags: `--live-grace-ms`, `--ws-init-timeout-ms`, `--webhook-secret`, `--webhook-token`,
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
extend schema @upstream(name: "api", url: "{up}", forwardHeaders: ["authorization"])
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
}
type Mutation {
  sendMessage(channel: String!, text: String!): Message
    @rest(upstream: "api", method: POST, path: "/messages/{args.channel}", body: "{args}")
    @invalidates(tags: ["messages:{args.channel}"])
  renameUser(id: ID!, name: String!): User
    @rest(upstream: "api", method: POST, path: "/users/{args.id}", body: "{args}")
    @invalidates(tags: ["User:{args.id}"])
}
type Subscription {
  messages(channel: String!): [Message!]! @live
  counter: Counter @live(pollMs: 100)
  whoami: User @live
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Data {
    fn count(&self, what: String) {
        let t0 = *lock(&self.started).get_or_insert_with(Instant::now);
        lock(&self.stats).entry(what).or_default().push(t0.elapsed().as_millis());
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
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let ms = |name: &str, default: u64| flag(name).and_then(|v| v.parse().ok()).map(Duration::from_millis).unwrap_or(Duration::from_millis(default));

    let up = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return eprintln!("testbed: {e}"),
    };
    let up_addr = up.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let pad = flag("--pad-bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
    livegate::demo::spawn(up, app(Data { pad, ..Data::default() }));

    let schema = SCHEMA.replace("{up}", &format!("http://{up_addr}"));
    let plan = match livegate::plan::load("testbed.graphql", &schema, Vec::<(String, String)>::new()) {
        Ok(p) => p,
        Err(e) => return eprintln!("testbed schema: {e:?}"),
    };
    let mut options = livegate::Options { live_grace: ms("--live-grace-ms", 300), ..Default::default() };
    options.ws.init_timeout = ms("--ws-init-timeout-ms", 3000);
    options.webhook.secret = flag("--webhook-secret");
    options.webhook.token = flag("--webhook-token");
    let gw = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return eprintln!("testbed: {e}"),
    };
    let gw_addr = gw.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("{}", json!({"gateway": format!("http://{gw_addr}"), "upstream": format!("http://{up_addr}")}));
    let stdin_closed = async {
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    if let Err(e) = livegate::run(gw, plan, options, stdin_closed).await {
        eprintln!("testbed: {e}");
    }
}
