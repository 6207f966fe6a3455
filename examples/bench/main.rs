//! `cargo run --release --example bench` — cache-hit query throughput and latency through
//! livegate, through Tailcall (the Rust GraphQL-over-REST gateway), and straight against
//! the REST upstream, measured in one run on one machine; plus the upstream requests each
//! gateway makes for one cold nested query. Results go to stdout as a Markdown table.
//!
//! Each server runs as its own process pinned to core 0 (`taskset -c 0`), the load
//! generator (`wrk`) pinned to core 1. The upstream is this same binary started with
//! `--role upstream`: 100 posts and 10 users shaped like jsonplaceholder, with
//! `Cache-Control: max-age=3600` so Tailcall's HTTP cache may keep them too.
//!
//! Needs `wrk` and `taskset` (Debian: `apt-get install wrk util-linux`) and, for Tailcall,
//! `npm` (the binary comes from the npm package `@tailcallhq/core-linux-x64-gnu@1.0.0`,
//! installed under `bench/` on first use). Flags: `--duration SECS` (default 10),
//! `--connections N` (default 64), `--skip-tailcall`, `--only http|live|replicas`.
//! The replicas part ([`replicas`]) needs Debian's `redis-server`.
//!
//! The live part ([`live`]) measures memory per idle connection and subscription, and
//! webhook-to-push latency.

mod live;
mod replicas;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::TcpListener as StdListener;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const Q_FLAT: &str = "{ posts { title } }";
const Q_NESTED: &str = "{ posts { id title user { name } } }";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if flag("--role").as_deref() == Some("upstream") {
        let port: u16 = flag("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
        return upstream(port);
    }
    let duration: u64 = flag("--duration")
        .and_then(|d| d.parse().ok())
        .unwrap_or(10);
    let connections: u64 = flag("--connections")
        .and_then(|d| d.parse().ok())
        .unwrap_or(64);
    let skip_tailcall = args.iter().any(|a| a == "--skip-tailcall");
    let only = flag("--only");
    if let Err(e) = orchestrate(duration, connections, skip_tailcall, only.as_deref()) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- the upstream role

#[derive(Clone)]
struct Data {
    posts: Arc<Value>,
    users: Arc<Vec<Value>>,
    requests: Arc<AtomicUsize>,
    /// Bumped by `/_bump`: post 1's title changes, for the live benchmark.
    version: Arc<AtomicUsize>,
    /// `POST /_announce` sends its body on every `/ws` socket.
    announce: tokio::sync::broadcast::Sender<String>,
    sockets_open: Arc<AtomicUsize>,
    sockets_total: Arc<AtomicUsize>,
}

async fn announce_socket(mut socket: axum::extract::ws::WebSocket, d: Data) {
    use axum::extract::ws::Message;
    let mut rx = d.announce.subscribe();
    d.sockets_open.fetch_add(1, Ordering::SeqCst);
    d.sockets_total.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(text) => if socket.send(Message::Text(text.into())).await.is_err() { break },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    d.sockets_open.fetch_sub(1, Ordering::SeqCst);
}

fn count(d: &Data) {
    d.requests.fetch_add(1, Ordering::Relaxed);
}

fn cached(v: Value) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=3600")], Json(v))
}

#[tokio::main]
async fn upstream(port: u16) {
    let users: Vec<Value> = (1..=10)
        .map(|i| json!({"id": i, "name": format!("User {i}"), "username": format!("user{i}"), "email": format!("user{i}@example.com")}))
        .collect();
    let posts: Vec<Value> = (1..=100)
        .map(|i| json!({"id": i, "userId": (i - 1) / 10 + 1, "title": format!("Post number {i}"), "body": format!("The body of post {i}, a few words long.")}))
        .collect();
    let data = Data {
        posts: Arc::new(Value::Array(posts)),
        users: Arc::new(users),
        requests: Arc::default(),
        version: Arc::default(),
        announce: tokio::sync::broadcast::channel(1024).0,
        sockets_open: Arc::default(),
        sockets_total: Arc::default(),
    };
    let app = Router::new()
        .route("/posts", get(|State(d): State<Data>| async move {
            count(&d);
            let mut posts = (*d.posts).clone();
            let v = d.version.load(Ordering::Relaxed);
            if v > 0 {
                posts[0]["title"] = Value::String(format!("Post number 1, version {v}"));
            }
            cached(posts)
        }))
        .route("/ws", get(|State(d): State<Data>, upgrade: axum::extract::ws::WebSocketUpgrade| async move {
            upgrade.on_upgrade(move |socket| announce_socket(socket, d))
        }))
        .route("/_announce", axum::routing::post(|State(d): State<Data>, body: String| async move {
            let _ = d.announce.send(body);
            "ok"
        }))
        .route("/_ws", get(|State(d): State<Data>| async move {
            Json(json!({"open": d.sockets_open.load(Ordering::SeqCst), "total": d.sockets_total.load(Ordering::SeqCst)}))
        }))
        .route("/_bump", get(|State(d): State<Data>| async move {
            d.version.fetch_add(1, Ordering::Relaxed);
            "ok"
        }))
        .route("/users/{id}", get(|State(d): State<Data>, Path(id): Path<usize>| async move {
            count(&d);
            cached(d.users.get(id.wrapping_sub(1)).cloned().unwrap_or(Value::Null))
        }))
        .route("/_stats", get(|State(d): State<Data>| async move { Json(json!({"requests": d.requests.load(Ordering::Relaxed)})) }))
        // An OTLP/HTTP sink for the traced runs: takes each export, keeps nothing.
        .route("/v1/traces", axum::routing::post(|_body: axum::body::Bytes| async { "" }))
        .route("/_reset", get(|State(d): State<Data>| async move {
            d.requests.store(0, Ordering::Relaxed);
            "ok"
        }))
        .with_state(data);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upstream: bind: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("upstream: {e}");
    }
}

// ---------------------------------------------------------------- orchestration

type Result<T> = std::result::Result<T, String>;

struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

fn free_port() -> Result<u16> {
    let l = StdListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Starts `cmd` pinned to core 0 and waits until it accepts connections on `port`.
fn start(name: &'static str, cmd: &[&str], port: u16, dir: &FsPath) -> Result<Proc> {
    let mut command = Command::new("taskset");
    command
        .arg("-c")
        .arg("0")
        .args(cmd)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = command
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let mut proc = Proc { name, child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!("{name} exited early: {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on {port} within 20 s",
                proc.name
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(proc)
}

fn http(method: &str, url: &str, body: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-X",
        method,
        url,
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json",
    ]);
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    let out = cmd.output().map_err(|e| format!("curl: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn graphql(url: &str, query: &str) -> Result<Value> {
    let body = json!({ "query": query }).to_string();
    serde_json::from_str(&http("POST", url, Some(&body))?)
        .map_err(|e| format!("{url}: not JSON: {e}"))
}

fn upstream_requests(up: u16) -> Result<u64> {
    upstream_requests_url(&format!("http://127.0.0.1:{up}"))
}

fn upstream_requests_url(up: &str) -> Result<u64> {
    let v: Value = serde_json::from_str(&http("GET", &format!("{up}/_stats"), None)?)
        .map_err(|e| e.to_string())?;
    v["requests"].as_u64().ok_or_else(|| "no count".to_string())
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// Runs wrk on core 1 against `url`, with `body` POSTed as JSON when given.
fn wrk(
    url: &str,
    (body, token): (Option<&str>, Option<&str>),
    duration: u64,
    connections: u64,
    dir: &FsPath,
) -> Result<Load> {
    let script = dir.join("wrk-post.lua");
    if let Some(body) = body {
        let mut lua = format!(
            "wrk.method = \"POST\"\nwrk.body = '{}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Accept\"] = \"application/json\"\n",
            body.replace('\'', "\\'")
        );
        if let Some(token) = token {
            lua.push_str(&format!(
                "wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
            ));
        }
        std::fs::write(&script, lua).map_err(|e| e.to_string())?;
    }
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        "1",
        "wrk",
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{duration}s"),
        "--latency",
    ]);
    if body.is_some() {
        cmd.arg("-s").arg(&script);
    }
    cmd.arg(url);
    let out = cmd.output().map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        return Err(format!("wrk saw errors against {url}:\n{text}"));
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_string))
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("wrk output:\n{text}"))?;
    let p50 = field("50%")
        .and_then(|v| parse_latency(&v))
        .unwrap_or(f64::NAN);
    let p99 = field("99%")
        .and_then(|v| parse_latency(&v))
        .unwrap_or(f64::NAN);
    Ok(Load {
        rps,
        p50_ms: p50,
        p99_ms: p99,
    })
}

fn livegate_binary(root: &FsPath) -> Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "livegate"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release --bin livegate failed".into());
    }
    Ok(root.join("target/release/livegate"))
}

fn tailcall_binary(root: &FsPath) -> Result<PathBuf> {
    let dir = root.join("bench");
    let bin = dir.join("node_modules/@tailcallhq/core-linux-x64-gnu/bin/tailcall");
    if !bin.exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("npm: {e}"))?;
        if !status.success() || !bin.exists() {
            return Err("npm install of @tailcallhq/core-linux-x64-gnu@1.0.0 failed".into());
        }
    }
    Ok(bin)
}

struct Row {
    target: String,
    query: &'static str,
    load: Load,
    rss_mib: Option<f64>,
}

fn orchestrate(
    duration: u64,
    connections: u64,
    skip_tailcall: bool,
    only: Option<&str>,
) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("livegate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let livegate = livegate_binary(&root)?;
    let tailcall = if skip_tailcall || only.is_some_and(|o| o != "http") {
        None
    } else {
        Some(tailcall_binary(&root)?)
    };

    let up_port = free_port()?;
    let up_arg = up_port.to_string();
    let _upstream = start(
        "upstream",
        &[
            &me.to_string_lossy(),
            "--role",
            "upstream",
            "--port",
            &up_arg,
        ],
        up_port,
        &work,
    )?;
    let up_url = format!("http://127.0.0.1:{up_port}");
    if only.is_none() || only == Some("http") {
        http_part(
            &livegate,
            tailcall.as_deref(),
            &work,
            up_port,
            &up_url,
            duration,
            connections,
        )?;
    }
    if only.is_none() || only == Some("live") {
        println!("\n## Live\n\n{}", live::run(&livegate, &work, &up_url)?);
    }
    if only.is_none() || only == Some("replicas") {
        println!(
            "\n## Replicas\n\n{}",
            replicas::run(&livegate, &work, &up_url)?
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The target whose requests carry a verified token.
const AUTHED: &str = "livegate, no response cache, Bearer token (HS256)";

/// Cache-hit query throughput through each gateway and straight against the upstream.
fn http_part(
    livegate: &FsPath,
    tailcall: Option<&FsPath>,
    work: &FsPath,
    up_port: u16,
    up_url: &str,
    duration: u64,
    connections: u64,
) -> Result<()> {
    let work = work.to_path_buf();
    let up_url = up_url.to_string();

    let mut rows = Vec::new();
    let mut cold = Vec::new();

    // Straight against the REST upstream: GET /posts (what Q_FLAT needs, unshaped).
    let direct = wrk(
        &format!("{up_url}/posts"),
        (None, None),
        duration,
        connections,
        &work,
    )?;
    rows.push(Row {
        target: "REST upstream (GET /posts)".into(),
        query: "—",
        load: direct,
        rss_mib: None,
    });

    // livegate
    let schema = work.join("livegate.graphql");
    std::fs::write(
        &schema,
        format!(
            r#"extend schema @upstream(name: "jp", url: "{up_url}")
type Query {{ posts: [Post!]! @rest(upstream: "jp", path: "/posts") @cache(maxAge: 3600) }}
type Post {{
  id: Int! userId: Int! title: String! body: String!
  user: User @rest(upstream: "jp", path: "/users/{{parent.userId}}") @cache(maxAge: 3600)
}}
type User {{ id: Int! name: String! username: String! email: String! }}
"#
        ),
    )
    .map_err(|e| e.to_string())?;
    // A livegate on a port of its own serving `schema`, with `extra` flags.
    let target = |name: String, extra: &[&str]| -> Result<(String, Vec<String>, u16)> {
        let port = free_port()?;
        let mut cmd: Vec<String> = vec![
            livegate.to_string_lossy().into(),
            "--schema".into(),
            schema.to_string_lossy().into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        cmd.extend(extra.iter().map(|a| a.to_string()));
        Ok((name, cmd, port))
    };
    // A caller with a token (HS256, --jwt-secret): verified once, then remembered by its
    // hash; every request is the executor's (no response cache).
    let secret = "a bench secret of thirty-two bytes!!";
    let token = livegate::auth::sign_hs256(
        secret,
        json!({"sub": "bench", "scope": "read"}),
        Duration::from_secs(3600),
    )?;
    let mut targets = vec![
        target("livegate".into(), &[])?,
        // The executor path: every request runs the query against the entry cache.
        target(
            "livegate, no response cache".into(),
            &["--response-cache-mb", "0"],
        )?,
        target(
            AUTHED.into(),
            &["--response-cache-mb", "0", "--jwt-secret", secret],
        )?,
    ];
    // The executor path traced (--otlp-endpoint at the upstream's sink): every trace
    // recorded, and one in a hundred.
    for ratio in ["1.0", "0.01"] {
        targets.push(target(
            format!("livegate, no response cache, traced {ratio}"),
            &[
                "--response-cache-mb",
                "0",
                "--otlp-endpoint",
                &up_url,
                "--trace-sample-ratio",
                ratio,
            ],
        )?);
    }
    if let Some(tc) = tailcall {
        let tc_port = free_port()?;
        let config = work.join("tailcall.graphql");
        std::fs::write(
            &config,
            format!(
                r#"schema @server(port: {tc_port}, hostname: "127.0.0.1") @upstream(httpCache: 42) {{
  query: Query
}}
type Query {{ posts: [Post] @http(url: "{up_url}/posts", dedupe: true) @cache(maxAge: 3600000) }}
type Post {{
  id: Int! userId: Int! title: String! body: String!
  user: User @http(url: "{up_url}/users/{{{{.value.userId}}}}", dedupe: true) @cache(maxAge: 3600000)
}}
type User {{ id: Int! name: String! username: String! email: String! }}
"#
            ),
        )
        .map_err(|e| e.to_string())?;
        targets.push((
            "Tailcall 1.0.0".into(),
            vec![
                tc.to_string_lossy().into(),
                "start".into(),
                config.to_string_lossy().into(),
            ],
            tc_port,
        ));
    }

    let mut reference: Option<(Value, Value)> = None;
    for (name, cmd, port) in targets {
        http("GET", &format!("{up_url}/_reset"), None)?;
        let cmd_refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        let proc = start(leaked, &cmd_refs, port, &work)?;
        let url = format!("http://127.0.0.1:{port}/graphql");
        // One cold nested query: how many upstream requests does it cost?
        let nested = graphql(&url, Q_NESTED)?;
        let cold_requests = upstream_requests(up_port)?;
        let flat = graphql(&url, Q_FLAT)?;
        for (q, v) in [(Q_NESTED, &nested), (Q_FLAT, &flat)] {
            if v.get("errors").is_some() || v["data"]["posts"].as_array().map(Vec::len) != Some(100)
            {
                return Err(format!("{name} answered {q} wrongly: {v}"));
            }
        }
        // Both gateways must give the same answers.
        match &reference {
            None => reference = Some((nested.clone(), flat.clone())),
            Some((n, f)) => {
                if (n, f) != (&nested, &flat) {
                    return Err(format!("{name} answers differently from livegate"));
                }
            }
        }
        let warm_before = upstream_requests(up_port)?;
        for q in [Q_FLAT, Q_NESTED] {
            let body = json!({ "query": q }).to_string();
            // Warm-up, then the measured run.
            let token = (name == AUTHED).then_some(token.as_str());
            wrk(
                &url,
                (Some(&body), token),
                2.min(duration),
                connections,
                &work,
            )?;
            let load = wrk(&url, (Some(&body), token), duration, connections, &work)?;
            if token.is_some() {
                // Each request's token was checked (verified once, then remembered).
                let page = http("GET", &format!("http://127.0.0.1:{port}/metrics"), None)?;
                let ok = page
                    .lines()
                    .find_map(|l| l.strip_prefix("livegate_auth_total{result=\"ok\"} "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                if ok < load.rps {
                    return Err(format!(
                        "{name}: its requests carried no token ({ok} verified)"
                    ));
                }
            }
            rows.push(Row {
                target: name.clone(),
                query: q,
                load,
                rss_mib: proc.rss_mib(),
            });
        }
        let during_load = upstream_requests(up_port)? - warm_before;
        cold.push((name, cold_requests, during_load));
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("\nMachine: {} cores, {cpu}; servers on core 0, wrk -t1 -c{connections} -d{duration}s on core 1.\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("| target | query | requests/s | p50 ms | p99 ms | RSS MiB after |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in &rows {
        let rss = r
            .rss_mib
            .map(|m| format!("{m:.1}"))
            .unwrap_or_else(|| "—".into());
        println!(
            "| {} | `{}` | {:.0} | {:.2} | {:.2} | {rss} |",
            r.target, r.query, r.load.rps, r.load.p50_ms, r.load.p99_ms
        );
    }
    println!();
    for q in [Q_FLAT, Q_NESTED] {
        let tc = rows
            .iter()
            .find(|r| r.target.starts_with("Tailcall") && r.query == q);
        for name in ["livegate", "livegate, no response cache", AUTHED] {
            let lg = rows.iter().find(|r| r.target == name && r.query == q);
            if let (Some(lg), Some(tc)) = (lg, tc) {
                println!(
                    "{name} / Tailcall, `{q}`: {:.2}x requests/s",
                    lg.load.rps / tc.load.rps
                );
            }
        }
    }
    for q in [Q_FLAT, Q_NESTED] {
        let untraced = rows
            .iter()
            .find(|r| r.target == "livegate, no response cache" && r.query == q);
        if let (Some(a), Some(u)) = (
            rows.iter().find(|r| r.target == AUTHED && r.query == q),
            untraced,
        ) {
            println!(
                "with a Bearer token / without, `{q}`: {:.2}x requests/s",
                a.load.rps / u.load.rps
            );
        }
        for ratio in ["1.0", "0.01"] {
            let name = format!("livegate, no response cache, traced {ratio}");
            let traced = rows.iter().find(|r| r.target == name && r.query == q);
            if let (Some(t), Some(u)) = (traced, untraced) {
                println!(
                    "traced {ratio} / untraced, `{q}`: {:.2}x requests/s",
                    t.load.rps / u.load.rps
                );
            }
        }
    }
    println!("\n| gateway | upstream requests for one cold `{Q_NESTED}` | upstream requests during the load runs |");
    println!("|---|---:|---:|");
    for (name, n, during) in cold {
        println!("| {name} | {n} | {during} |");
    }
    Ok(())
}
