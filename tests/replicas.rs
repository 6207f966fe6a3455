//! Several replicas, one live system (`--redis-url`): a real `redis-server` started by the
//! test, two or three gateways in this process, and an upstream that counts requests.

mod common;

use common::redis::{is_cluster, Redis, RedisServer};
use common::{sample, Gateway, Upstream};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Thing { id: ID! v: Int! }
type Query {
  thing(id: ID!): Thing @rest(upstream: "api", path: "/things/{args.id}") @cache(maxAge: 600, tags: ["thing:{args.id}"])
  mine: Thing @rest(upstream: "api", path: "/things/mine") @cache(maxAge: 600, scope: PRIVATE)
  polled: Thing @rest(upstream: "api", path: "/things/polled") @cache(maxAge: 600)
  volatile: Thing @rest(upstream: "api", path: "/volatile") @cache(maxAge: 600)
  brief: Thing @rest(upstream: "api", path: "/things/brief") @cache(maxAge: 1, swr: 60)
}
type Mutation {
  touch(id: ID!): Thing @rest(upstream: "api", method: POST, path: "/things/{args.id}") @invalidates(tags: ["thing:{args.id}"])
}
type Subscription {
  thing(id: ID!): Thing @live
  polled: Thing @live(pollMs: 100)
  volatile: Thing @live(pollMs: 100)
}
"#;

/// An upstream whose things carry a version that every POST bumps.
async fn upstream() -> (Upstream, Arc<AtomicU64>) {
    use axum::extract::Path;
    use axum::routing::get;
    let version = Arc::new(AtomicU64::new(0));
    let (read, bump) = (version.clone(), version.clone());
    let volatile = version.clone();
    let up = Upstream::start(
        axum::Router::new()
            .route(
                "/volatile",
                get(move || {
                    let v = volatile.load(Ordering::SeqCst);
                    async move {
                        (
                            [(axum::http::header::CACHE_CONTROL, "no-store")],
                            axum::Json(json!({"id": "volatile", "v": v})),
                        )
                    }
                }),
            )
            .route(
                "/things/{id}",
                get(move |Path(id): Path<String>| {
                    let v = read.load(Ordering::SeqCst);
                    async move { axum::Json(json!({"id": id, "v": v})) }
                })
                .post(move |Path(id): Path<String>| {
                    let v = bump.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { axum::Json(json!({"id": id, "v": v})) }
                }),
            ),
    )
    .await;
    (up, version)
}

fn options(redis: &str, prefix: &str) -> livegate::Options {
    let mut o = livegate::Options {
        redis: Some(livegate::bus::redis::RedisOptions {
            url: redis.to_string(),
            cluster: is_cluster(redis),
            prefix: prefix.to_string(),
            timeout: Duration::from_millis(250),
            fill_wait: Duration::from_secs(5),
            lease: Duration::from_millis(1_000),
        }),
        ..Default::default()
    };
    o.webhook.token = Some("t".into());
    o
}

async fn replicas(n: usize, up: &Upstream, redis: &str, prefix: &str) -> Vec<Gateway> {
    replicas_with(n, up, options(redis, prefix)).await
}

/// [`replicas`] with these options (each replica gets a copy).
async fn replicas_with(n: usize, up: &Upstream, options: livegate::Options) -> Vec<Gateway> {
    let schema = SCHEMA.replace("{up}", &up.url());
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Gateway::start(&schema, options.clone()).await);
    }
    // Each is connected when its gauge says so.
    for gw in &out {
        until(gw, |p| sample(p, "livegate_redis_up") == 1.0).await;
    }
    out
}

async fn metrics(gw: &Gateway) -> String {
    gw.metrics().await
}

/// Waits (up to 10 s) until `done` holds for `gw`'s metrics; the last page.
async fn until(gw: &Gateway, done: impl Fn(&str) -> bool) -> String {
    let page = gw.metrics_until(&done).await;
    assert!(done(&page), "never reached:\n{page}");
    page
}

/// A live subscription over SSE: its results, one at a time.
struct Live {
    res: reqwest::Response,
    buf: String,
}

impl Live {
    async fn start(gw: &Gateway, query: &str) -> Live {
        let res = gw
            .client
            .post(gw.url())
            .header("accept", "text/event-stream")
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("SSE");
        assert_eq!(res.status(), 200);
        Live {
            res,
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    if event.starts_with("event: next") {
                        return serde_json::from_str(data).expect("JSON data");
                    }
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.res.chunk())
                .await
                .expect("a result within 10 s")
                .expect("read")
                .expect("the stream goes on");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next result whose `thing.v` is `v` (earlier ones skipped).
    async fn until_version(&mut self, v: u64) {
        self.until_field("thing", v).await
    }

    /// The next result whose `<field>.v` is `v`.
    async fn until_field(&mut self, field: &str, v: u64) {
        loop {
            let r = self.next().await;
            if r["data"][field]["v"] == v {
                return;
            }
        }
    }
}

async fn webhook(gw: &Gateway, tags: &[&str]) {
    let res = gw
        .client
        .post(format!("http://{}/hooks/invalidate", gw.addr))
        .bearer_auth("t")
        .json(&json!({ "tags": tags }))
        .send()
        .await
        .expect("webhook");
    assert_eq!(res.status(), 200);
}

const THING: &str = r#"subscription { thing(id: "1") { id v } }"#;

async fn a_change_on_one_replica_reaches_the_others_with_one_refetch_per_entry(cluster: bool) {
    let redis = Redis::start(cluster);
    let (up, version) = upstream().await;
    let gws = replicas(2, &up, &redis.url(), "t1:").await;
    let (a, b) = (&gws[0], &gws[1]);
    let mut on_a = Live::start(a, THING).await;
    on_a.until_version(0).await;
    let mut on_b = Live::start(b, THING).await;
    on_b.until_version(0).await;
    assert_eq!(
        up.count_matching("GET /things/1"),
        1,
        "B found A's value in Redis"
    );

    // A mutation on A reaches B's subscriber; the entry is refetched once in all.
    let r = a.query(r#"mutation { touch(id: "1") { v } }"#).await;
    assert_eq!(r["data"]["touch"]["v"], 1, "{r}");
    on_b.until_version(1).await;
    on_a.until_version(1).await;
    assert_eq!(up.count_matching("GET /things/1"), 2, "{:?}", up.requests());

    // A webhook on B reaches A's subscriber.
    version.store(7, Ordering::SeqCst);
    webhook(b, &["thing:1"]).await;
    on_a.until_version(7).await;
    on_b.until_version(7).await;
    assert_eq!(up.count_matching("GET /things/1"), 3, "{:?}", up.requests());

    let page = metrics(a).await;
    assert!(
        sample(
            &page,
            "livegate_bus_messages_total{direction=\"published\",kind=\"invalidation\"}"
        ) >= 1.0,
        "{page}"
    );
    assert!(
        sample(
            &page,
            "livegate_bus_messages_total{direction=\"received\",kind=\"invalidation\"}"
        ) >= 1.0,
        "{page}"
    );
}

async fn replicas_share_one_cache_and_one_fetch_per_cold_key(cluster: bool) {
    let redis = Redis::start(cluster);
    let (up, _) = upstream().await;
    // Redis answers slowly on a loaded machine: a call that times out is a fetch of the
    // replica's own (by design), which this count would take for a lost fill lock.
    let mut o = options(&redis.url(), "t2:");
    if let Some(r) = o.redis.as_mut() {
        r.timeout = Duration::from_secs(3);
    }
    let gws = replicas_with(3, &up, o).await;
    let r = gws[0].query(r#"{ thing(id: "a") { v } }"#).await;
    assert_eq!(r["data"]["thing"]["v"], 0);
    let r = gws[1].query(r#"{ thing(id: "a") { v } }"#).await;
    assert_eq!(r["data"]["thing"]["v"], 0);
    assert_eq!(
        up.count_matching("GET /things/a"),
        1,
        "a query on A, then on B: one request"
    );
    let page = metrics(&gws[1]).await;
    assert_eq!(
        sample(&page, "livegate_l2_lookups_total{outcome=\"hit\"}"),
        1.0,
        "{page}"
    );

    // 3 replicas × 20 concurrent identical cold queries: one upstream request.
    let mut all = Vec::new();
    for gw in &gws {
        for _ in 0..20 {
            let (client, url) = (gw.client.clone(), gw.url());
            all.push(tokio::spawn(async move {
                let r: Value = client
                    .post(url)
                    .json(&json!({"query": r#"{ thing(id: "cold") { v } }"#}))
                    .send()
                    .await
                    .expect("answer")
                    .json()
                    .await
                    .expect("JSON");
                r
            }));
        }
    }
    for q in all {
        let r = q.await.expect("query");
        assert_eq!(r["data"]["thing"]["v"], 0, "{r}");
    }
    let mut lookups = Vec::new();
    for gw in &gws {
        let page = metrics(gw).await;
        lookups.push(["hit", "miss", "error"].map(|o| {
            sample(
                &page,
                &format!("livegate_l2_lookups_total{{outcome=\"{o}\"}}"),
            )
        }));
    }
    assert_eq!(
        up.count_matching("GET /things/cold"),
        1,
        "{:?}; second-level hit/miss/error per replica: {lookups:?}",
        up.requests()
    );

    // A PRIVATE entry never reaches Redis: each replica fetches its own.
    for gw in &gws[..2] {
        let r = gw
            .query_with(
                "{ mine { v } }",
                json!({}),
                &[("authorization", "Bearer u1")],
            )
            .await;
        assert_eq!(r["data"]["mine"]["v"], 0, "{r}");
    }
    assert_eq!(up.count_matching("GET /things/mine"), 2);

    // Every key livegate wrote has a TTL, and none holds the credentials.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("pttl");
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("type");
        if kind == "string" {
            let v: Vec<u8> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("get");
            assert!(!String::from_utf8_lossy(&v).contains("u1"), "{key}");
        }
    }
}

async fn malformed_and_unknown_format_messages_are_skipped_and_counted(cluster: bool) {
    let redis = Redis::start(cluster);
    let (up, version) = upstream().await;
    let gws = replicas(2, &up, &redis.url(), "t3:").await;
    let mut on_b = Live::start(&gws[1], THING).await;
    on_b.until_version(0).await;
    let mut conn = redis.connection().await;
    let stream = "{t3:}inv";
    for fields in [
        vec![("v", "1"), ("o", "x"), ("k", "inv"), ("tags", "not json")],
        vec![
            ("v", "99"),
            ("o", "x"),
            ("k", "inv"),
            ("tags", "[\"thing:1\"]"),
        ],
        vec![("garbage", "\u{0}\u{ff}")],
    ] {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut conn).await.expect("xadd");
    }
    for gw in &gws {
        until(gw, |p| {
            sample(p, "livegate_bus_skipped_total{kind=\"invalidation\"}") == 3.0
        })
        .await;
    }
    // A malformed second-level entry is a miss, not a crash.
    let _: () = redis::cmd("SET")
        .arg(format!("{{t3:c:{}}}", "00".repeat(32)))
        .arg("{not json")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .expect("set");
    // Still working: a real invalidation goes through.
    version.store(5, Ordering::SeqCst);
    webhook(&gws[0], &["thing:1"]).await;
    on_b.until_version(5).await;
    assert_eq!(up.count_matching("GET /things/1"), 2);
}

async fn redis_down_is_not_livegate_down_and_the_replicas_rejoin(cluster: bool) {
    let mut redis = Redis::start(cluster);
    let (up, version) = upstream().await;
    let gws = replicas(2, &up, &redis.url(), "t4:").await;
    let (a, b) = (&gws[0], &gws[1]);
    let mut on_a = Live::start(a, THING).await;
    on_a.until_version(0).await;
    let mut on_b = Live::start(b, THING).await;
    on_b.until_version(0).await;

    redis.stop();
    // Queries are answered (from the upstream) within their timeouts.
    let r = a.query(r#"{ thing(id: "2") { v } }"#).await;
    assert_eq!(r["data"]["thing"]["v"], 0, "{r}");
    until(a, |p| sample(p, "livegate_redis_up") == 0.0).await;
    // An invalidation applies on the replica that got it.
    version.store(1, Ordering::SeqCst);
    webhook(a, &["thing:1"]).await;
    on_a.until_version(1).await;

    redis.resume();
    for gw in &gws {
        until(gw, |p| sample(p, "livegate_redis_up") == 1.0).await;
    }
    // B lost what was said meanwhile (the new Redis has an empty stream): it treats
    // everything as changed once, so its subscriber is current again.
    on_b.until_version(1).await;
    // And a webhook on A reaches B again.
    version.store(2, Ordering::SeqCst);
    webhook(a, &["thing:1"]).await;
    on_b.until_version(2).await;
    on_a.until_version(2).await;
}

/// A TCP proxy to Redis that the test can cut (every connection closed, new ones refused)
/// and restore: one replica cut off while the others go on.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(to: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if *watch.borrow() {
                    continue; // dropped: refused
                }
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_catches_up_and_one_that_lost_messages_starts_over() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port).await;
    let (up, version) = upstream().await;
    let schema = SCHEMA.replace("{up}", &up.url());
    let a = Gateway::start(&schema, options(&redis.url(), "t5:")).await;
    let b = Gateway::start(&schema, options(&proxy.url(), "t5:")).await;
    for gw in [&a, &b] {
        until(gw, |p| sample(p, "livegate_redis_up") == 1.0).await;
    }
    let mut on_b = Live::start(&b, THING).await;
    on_b.until_version(0).await;
    // Something on the stream, so B has a position in it.
    webhook(&a, &["thing:other"]).await;
    until(&b, |p| {
        sample(
            p,
            "livegate_bus_messages_total{direction=\"received\",kind=\"invalidation\"}",
        ) == 1.0
    })
    .await;

    // Cut off, B misses an invalidation; back, it reads it from where it was.
    proxy.set_cut(true);
    until(&b, |p| sample(p, "livegate_redis_up") == 0.0).await;
    version.store(1, Ordering::SeqCst);
    webhook(&a, &["thing:1"]).await;
    proxy.set_cut(false);
    on_b.until_version(1).await;
    let page = metrics(&b).await;
    assert_eq!(
        sample(
            &page,
            "livegate_bus_messages_total{direction=\"received\",kind=\"everything\"}"
        ),
        0.0,
        "{page}"
    );

    // Cut off again, and what it missed is trimmed away meanwhile: it cannot know what
    // changed, so it treats everything as changed once.
    proxy.set_cut(true);
    until(&b, |p| sample(p, "livegate_redis_up") == 0.0).await;
    version.store(2, Ordering::SeqCst);
    webhook(&a, &["thing:1"]).await;
    let mut conn = redis.connection().await;
    let _: i64 = redis::cmd("XTRIM")
        .arg("{t5:}inv")
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("xtrim");
    proxy.set_cut(false);
    on_b.until_version(2).await;
    let page = until(&b, |p| {
        sample(
            p,
            "livegate_bus_messages_total{direction=\"received\",kind=\"everything\"}",
        ) == 1.0
    })
    .await;
    assert!(page.contains("livegate_redis_up"));
    until(&b, |p| sample(p, "livegate_redis_up") == 1.0).await;
}

/// A replica in its own `livegate` process, which the test can kill outright.
struct Process {
    child: std::process::Child,
    gateway: Gateway,
    _schema: tempfile_path::Removed,
}

mod tempfile_path {
    /// A file removed when dropped.
    pub struct Removed(pub std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Process {
    async fn start(schema: &str, redis: &str, prefix: &str) -> Process {
        Process::start_with(schema, redis, prefix, &[]).await
    }

    /// [`Process::start`] with these environment variables too.
    async fn start_with(schema: &str, redis: &str, prefix: &str, env: &[(&str, &str)]) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let path = std::env::temp_dir().join(format!(
            "livegate-replica-{}-{port}.graphql",
            std::process::id()
        ));
        std::fs::write(&path, schema).expect("schema file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"))
            .arg("--schema")
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                if is_cluster(redis) {
                    "--redis-cluster"
                } else {
                    "--redis-url"
                },
                redis,
                "--redis-prefix",
                prefix,
                "--webhook-token",
                "t",
            ])
            .env("LIVEGATE_LOG", "warn")
            // The probe's lease time: a killed holder's socket is taken over 3 s later.
            .env("LIVEGATE_REDIS_LEASE_MS", "3000")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("livegate starts");
        let gateway = Gateway::at(([127, 0, 0, 1], port).into());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while gateway
            .client
            .get(format!("http://{}/healthz", gateway.addr))
            .send()
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Process {
            child,
            gateway,
            _schema: tempfile_path::Removed(path),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Leases this replica took, free or from a holder that stopped renewing.
async fn leases_taken(gw: &Gateway) -> f64 {
    let page = metrics(gw).await;
    sample(&page, "livegate_leases_total{event=\"acquired\"}")
        + sample(&page, "livegate_leases_total{event=\"takeover\"}")
}

async fn one_poller_per_live_entry_for_the_whole_cluster_and_a_survivor_takes_over(cluster: bool) {
    let redis = Redis::start(cluster);
    let (up, version) = upstream().await;
    // The first replica, in a process of its own, polls first: it takes the lease.
    let first = Process::start(&SCHEMA.replace("{up}", &up.url()), &redis.url(), "t6:").await;
    let mut on_first = Live::start(&first.gateway, "subscription { polled { v } }").await;
    on_first.until_field("polled", 0).await;
    until(&first.gateway, |p| {
        sample(p, "livegate_leases_total{event=\"acquired\"}") == 1.0
    })
    .await;
    let gws = replicas(2, &up, &redis.url(), "t6:").await;
    let mut subs = Vec::new();
    for gw in &gws {
        let mut live = Live::start(gw, "subscription { polled { v } }").await;
        live.until_field("polled", 0).await;
        subs.push(live);
    }
    // Over a second, one poll per 100 ms in all (three replicas polling would be 30).
    let before = up.count_matching("GET /things/polled");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let polls = up.count_matching("GET /things/polled") - before;
    assert!((5..=15).contains(&polls), "{polls} polls in a second");
    // A change found by the one poller reaches every replica's subscriber.
    version.store(1, Ordering::SeqCst);
    on_first.until_field("polled", 1).await;
    for live in &mut subs {
        live.until_field("polled", 1).await;
    }
    for gw in &gws {
        assert_eq!(leases_taken(gw).await, 0.0);
    }

    // The poller's replica dies: a survivor takes over within the lease time, and every
    // survivor's subscriber gets the next change.
    drop(on_first);
    drop(first);
    version.store(2, Ordering::SeqCst);
    for live in &mut subs {
        live.until_field("polled", 2).await;
    }
    let mut taken = 0.0;
    for gw in &gws {
        taken += leases_taken(gw).await;
    }
    assert_eq!(taken, 1.0, "one survivor took the poller over");
}

const STREAMS: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Msg { text: String! }
type Query {
  msgs: [Msg!]! @rest(upstream: "api", path: "/msgs") @cache(maxAge: 600)
    @updates(upstream: "api", path: "/ws", apply: APPEND)
}
type Subscription {
  msgs: [Msg!]! @live
  msgAdded: Msg @stream(upstream: "api", path: "/ws")
}
"#;

/// An upstream with `/msgs` and a `/ws` that sends every connected socket what the test
/// broadcasts; it counts the sockets opened and open.
struct Sockets {
    up: Upstream,
    say: tokio::sync::broadcast::Sender<String>,
    opened: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
}

async fn socket_upstream() -> Sockets {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use axum::routing::get;
    use futures_util::StreamExt;
    let (say, _) = tokio::sync::broadcast::channel::<String>(64);
    let (opened, open) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (tx, o1, o2) = (say.clone(), opened.clone(), open.clone());
    let up = Upstream::start(
        axum::Router::new()
            .route("/msgs", get(|| async { axum::Json(json!([{"text": "first"}])) }))
            .route(
                "/ws",
                get(move |ws: WebSocketUpgrade| {
                    let (tx, opened, open) = (tx.clone(), o1.clone(), o2.clone());
                    async move {
                        ws.on_upgrade(move |socket| async move {
                            opened.fetch_add(1, Ordering::SeqCst);
                            open.fetch_add(1, Ordering::SeqCst);
                            let (mut sink, mut stream) = socket.split();
                            let mut heard = tx.subscribe();
                            loop {
                                tokio::select! {
                                    said = heard.recv() => match said {
                                        Ok(text) => {
                                            use futures_util::SinkExt;
                                            if sink.send(Message::text(text)).await.is_err() { break; }
                                        }
                                        Err(_) => break,
                                    },
                                    got = stream.next() => if !matches!(got, Some(Ok(_))) { break },
                                }
                            }
                            open.fetch_sub(1, Ordering::SeqCst);
                        })
                    }
                }),
            ),
    )
    .await;
    Sockets {
        up,
        say,
        opened,
        open,
    }
}

impl Sockets {
    /// Waits (up to 10 s) until `n` upstream sockets are open: a holder's and, with
    /// another replica following, a standby's.
    async fn until_open(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.open.load(Ordering::SeqCst) != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} upstream sockets open, not {n}",
                self.open.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Says `text` on the upstream socket until every subscriber has heard it.
    async fn until_heard(&self, text: &str, subs: &mut [Live]) {
        let mut heard = vec![false; subs.len()];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while heard.iter().any(|h| !h) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not heard by all: {heard:?}"
            );
            let _ = self.say.send(json!({"text": text}).to_string());
            for (i, live) in subs.iter_mut().enumerate() {
                if heard[i] {
                    continue;
                }
                if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), live.next()).await {
                    heard[i] = r.to_string().contains(text);
                }
            }
        }
    }
}

async fn one_upstream_socket_for_the_cluster_and_a_survivor_takes_it_over(cluster: bool) {
    let redis = Redis::start(cluster);
    let sockets = socket_upstream().await;
    let schema = STREAMS.replace("{up}", &sockets.up.url());
    let first = Process::start(&schema, &redis.url(), "t7:").await;
    let on_first = Live::start(&first.gateway, "subscription { msgAdded { text } }").await;
    until(&first.gateway, |p| {
        sample(p, "livegate_leases_total{event=\"acquired\"}") == 1.0
    })
    .await;
    let mut gws = Vec::new();
    for _ in 0..2 {
        let gw = Gateway::start(&schema, options(&redis.url(), "t7:")).await;
        until(&gw, |p| sample(p, "livegate_redis_up") == 1.0).await;
        gws.push(gw);
    }
    let mut subs = Vec::new();
    for gw in &gws {
        let mut live = Live::start(gw, "subscription { msgs { text } }").await;
        live.next().await; // [first]
        subs.push(live);
        subs.push(Live::start(gw, "subscription { msgAdded { text } }").await);
    }
    let mut everyone = vec![on_first];
    everyone.append(&mut subs);
    sockets.until_heard("m1", &mut everyone).await;
    // The holder's socket, and one warm standby's (issue 18: nothing lost when the
    // holder dies), for the whole cluster.
    sockets.until_open(2).await;
    assert_eq!(
        sockets.opened.load(Ordering::SeqCst),
        2,
        "two upstream sockets for three replicas: the holder's and a standby's"
    );
    let fetched = sockets.up.count_matching("GET /msgs");

    // The holder dies: the standby holds the socket it has open, another survivor
    // becomes the standby, and every survivor's subscribers get the next message; each
    // fed entry is refetched at most once per replica.
    let mut survivors = everyone.split_off(1);
    drop(everyone);
    drop(first);
    sockets.until_heard("m2", &mut survivors).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sockets.opened.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no new standby");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sockets.opened.load(Ordering::SeqCst),
        3,
        "the survivors opened one socket: the new standby's"
    );
    assert_eq!(sockets.open.load(Ordering::SeqCst), 2);
    let refetched = sockets.up.count_matching("GET /msgs") - fetched;
    assert!(
        (1..=2).contains(&refetched),
        "{refetched} refetches of the fed entry"
    );
    let mut takeovers = 0.0;
    for gw in &gws {
        takeovers += sample(
            &metrics(gw).await,
            "livegate_leases_total{event=\"takeover\"}",
        );
    }
    // The socket's lease, taken over from the dead holder; and, once a new standby took
    // it up, the standby lease (its second holder: counted as a takeover too).
    assert!((1.0..=2.0).contains(&takeovers), "{takeovers} takeovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_standby_the_cluster_holds_one_upstream_socket_and_a_survivor_reconnects_it() {
    let redis = Redis::start(false);
    let sockets = socket_upstream().await;
    let schema = STREAMS.replace("{up}", &sockets.up.url());
    // A replica told by its environment, as a deployment would.
    let url = redis.url();
    let without_standby = || {
        Process::start_with(
            &schema,
            &url,
            "t7s:",
            &[("LIVEGATE_REDIS_STANDBY", "false")],
        )
    };
    let first = without_standby().await;
    let on_first = Live::start(&first.gateway, "subscription { msgAdded { text } }").await;
    until(&first.gateway, |p| {
        sample(p, "livegate_leases_total{event=\"acquired\"}") == 1.0
    })
    .await;
    let mut everyone = vec![on_first];
    let mut gws = Vec::new();
    for _ in 0..2 {
        let gw = Gateway::start(
            &schema,
            livegate::Options {
                socket_standby: false,
                ..options(&redis.url(), "t7s:")
            },
        )
        .await;
        until(&gw, |p| sample(p, "livegate_redis_up") == 1.0).await;
        everyone.push(Live::start(&gw, "subscription { msgAdded { text } }").await);
        gws.push(gw);
    }
    // And a follower told by its environment.
    let last = without_standby().await;
    everyone.push(Live::start(&last.gateway, "subscription { msgAdded { text } }").await);
    // Every follower heard the holder's republished messages: had it wanted a standby,
    // it would have opened it before following.
    sockets.until_heard("m1", &mut everyone).await;
    assert_eq!(
        sockets.opened.load(Ordering::SeqCst),
        1,
        "one upstream socket for four replicas"
    );
    // The holder dies: a survivor takes the lease over within its time and connects.
    let mut survivors = everyone.split_off(1);
    drop(everyone);
    drop(first);
    sockets.until_heard("m2", &mut survivors).await;
    sockets.until_open(1).await;
    assert_eq!(
        sockets.opened.load(Ordering::SeqCst),
        2,
        "the survivors opened one socket: the new holder's"
    );
}

async fn a_password_in_the_url_works_and_is_never_shown_and_a_replica_may_start_before_redis(
    cluster: bool,
) {
    let mut redis = Redis::start_with_password(cluster, Some("pa55-word-xyz"));
    let (up, version) = upstream().await;
    // A replica started while Redis is down serves, degraded, and joins when it is up.
    redis.stop();
    let schema = SCHEMA.replace("{up}", &up.url());
    let a = Gateway::start(&schema, options(&redis.url(), "t8:")).await;
    let r = a.query(r#"{ thing(id: "1") { v } }"#).await;
    assert_eq!(r["data"]["thing"]["v"], 0, "{r}");
    assert_eq!(sample(&metrics(&a).await, "livegate_redis_up"), 0.0);
    redis.resume();
    until(&a, |p| sample(p, "livegate_redis_up") == 1.0).await;
    let b = Gateway::start(&schema, options(&redis.url(), "t8:")).await;
    until(&b, |p| sample(p, "livegate_redis_up") == 1.0).await;
    let mut on_b = Live::start(&b, THING).await;
    on_b.until_version(0).await;
    version.store(3, Ordering::SeqCst);
    webhook(&a, &["thing:1"]).await;
    on_b.until_version(3).await;

    // A wrong password: Redis is "down" for that replica, and the error shows no password.
    let wrong = redis.url().replace("pa55-word-xyz", "wrong-pa55-abc");
    let c = Gateway::start(&schema, options(&wrong, "t8:")).await;
    let r = c.query(r#"{ thing(id: "9") { v } }"#).await;
    assert_eq!(r["data"]["thing"]["v"], 3, "{r}");
    let page = metrics(&c).await;
    assert_eq!(sample(&page, "livegate_redis_up"), 0.0);
    assert!(!page.contains("pa55"));
    // A malformed URL is a start-up error that does not show the password either.
    let plan =
        livegate::plan::load("s.graphql", &schema, Vec::<(String, String)>::new()).expect("plan");
    let (malformed, flag) = if cluster {
        (
            "redis://:pa55-word-xyz@[::1,redis://127.0.0.1:1",
            "--redis-cluster",
        )
    } else {
        ("redis://:pa55-word-xyz@[::1", "--redis-url")
    };
    let err = match livegate::state(plan, &options(malformed, "t8:")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a malformed URL is refused"),
    };
    assert!(err.contains(flag) && !err.contains("pa55"), "{err}");
}

async fn an_unshareable_polled_entry_still_reaches_every_replica_and_stale_values_are_refreshed(
    cluster: bool,
) {
    let redis = Redis::start(cluster);
    let (up, version) = upstream().await;
    let gws = replicas(2, &up, &redis.url(), "t9:").await;
    // A PUBLIC field whose upstream says no-store: one replica polls, the other hears of
    // each change (and fetches its own copy).
    let mut subs = Vec::new();
    for gw in &gws {
        let mut live = Live::start(gw, "subscription { volatile { v } }").await;
        live.until_field("volatile", 0).await;
        subs.push(live);
    }
    version.store(1, Ordering::SeqCst);
    for live in &mut subs {
        live.until_field("volatile", 1).await;
    }

    // Past maxAge, a value another replica stored is stale: B fetches anew, not serves it.
    let r = gws[0].query("{ brief { v } }").await;
    assert_eq!(r["data"]["brief"]["v"], 1, "{r}");
    version.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = gws[1].query("{ brief { v } }").await;
    assert_eq!(
        r["data"]["brief"]["v"], 2,
        "B refreshed the stale value: {r}"
    );
}

async fn without_redis_each_replica_holds_its_own_socket_and_gives_it_up_when_redis_is_back(
    cluster: bool,
) {
    let mut redis = Redis::start(cluster);
    let sockets = socket_upstream().await;
    let schema = STREAMS.replace("{up}", &sockets.up.url());
    let mut gws = Vec::new();
    for _ in 0..2 {
        let gw = Gateway::start(&schema, options(&redis.url(), "t10:")).await;
        until(&gw, |p| sample(p, "livegate_redis_up") == 1.0).await;
        gws.push(gw);
    }
    let mut subs = Vec::new();
    for gw in &gws {
        subs.push(Live::start(gw, "subscription { msgAdded { text } }").await);
    }
    sockets.until_heard("before", &mut subs).await;
    // The holder's socket and the standby's.
    sockets.until_open(2).await;

    // Redis goes away: every replica's subscribers keep getting upstream events (the
    // followers open sockets of their own).
    redis.stop();
    sockets.until_heard("during", &mut subs).await;

    // Redis is back: the replicas settle on one holder and one standby again, and
    // events still flow.
    redis.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sockets.open.load(Ordering::SeqCst) != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sockets open after Redis came back",
            sockets.open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sockets.until_heard("after", &mut subs).await;
}

/// 20 events a second, numbered `e0`, `e1`, …, on the upstream's sockets.
struct Emitter {
    sent: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Emitter {
    fn start(sockets: &Sockets) -> Emitter {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (say, n, halt) = (sockets.say.clone(), sent.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !halt.load(Ordering::SeqCst) {
                tick.tick().await;
                let n = n.fetch_add(1, Ordering::SeqCst);
                let _ = say.send(json!({"text": format!("e{n}")}).to_string());
            }
        });
        Emitter { sent, stop, task }
    }

    /// Stops; the number of the last event sent.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("emitter");
        self.sent.load(Ordering::SeqCst) - 1
    }
}

/// The sequence numbers of the `msgAdded` events `live` gets, until it has `last`.
async fn events_until(live: &mut Live, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let r = live.next().await;
        let Some(n) = r["data"]["msgAdded"]["text"]
            .as_str()
            .and_then(|t| t.strip_prefix('e'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        seen.push(n);
        if n >= last {
            return seen;
        }
    }
}

async fn a_killed_socket_holder_loses_no_event_and_doubles_none(cluster: bool) {
    let redis = Redis::start(cluster);
    let sockets = socket_upstream().await;
    let schema = STREAMS.replace("{up}", &sockets.up.url());
    // The holder: a process of its own, killed outright below.
    let first = Process::start(&schema, &redis.url(), "t18:").await;
    let _on_first = Live::start(&first.gateway, "subscription { msgAdded { text } }").await;
    until(&first.gateway, |p| {
        sample(p, "livegate_leases_total{event=\"acquired\"}") == 1.0
    })
    .await;
    let mut gws = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..2 {
        let gw = Gateway::start(&schema, options(&redis.url(), "t18:")).await;
        until(&gw, |p| sample(p, "livegate_redis_up") == 1.0).await;
        subs.push(Live::start(&gw, "subscription { msgAdded { text } }").await);
        gws.push(gw);
    }
    // The holder's socket and a standby's.
    sockets.until_open(2).await;
    let emitter = Emitter::start(&sockets);
    // Every survivor hears the stream, then the holder dies mid-stream.
    for live in subs.iter_mut() {
        events_until(live, 10).await;
    }
    drop(first);
    // The lease (3 s) runs out, the standby takes over; the stream goes on a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut takeovers = 0.0;
    while takeovers < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
        takeovers = 0.0;
        for gw in &gws {
            takeovers += sample(
                &metrics(gw).await,
                "livegate_leases_total{event=\"takeover\"}",
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = emitter.finish().await;
    assert!(last > 80, "only {last} events sent");
    for (i, live) in subs.iter_mut().enumerate() {
        let seen = events_until(live, last).await;
        let first_seen = seen[0];
        let expected: Vec<u64> = (first_seen..=last).collect();
        assert_eq!(
            seen, expected,
            "subscriber {i}: events lost or doubled across the holder's death"
        );
    }
    for gw in &gws {
        let page = metrics(gw).await;
        assert_eq!(sample(&page, "livegate_events_lost_total"), 0.0);
    }
}

async fn across_a_redis_outage_the_holder_and_the_standby_lose_no_event(cluster: bool) {
    let mut redis = Redis::start(cluster);
    let sockets = socket_upstream().await;
    let schema = STREAMS.replace("{up}", &sockets.up.url());
    let holder = Gateway::start(&schema, options(&redis.url(), "t18r:")).await;
    until(&holder, |p| sample(p, "livegate_redis_up") == 1.0).await;
    let mut subs = vec![Live::start(&holder, "subscription { msgAdded { text } }").await];
    until(&holder, |p| {
        sample(p, "livegate_leases_total{event=\"acquired\"}") == 1.0
    })
    .await;
    let standby = Gateway::start(&schema, options(&redis.url(), "t18r:")).await;
    until(&standby, |p| sample(p, "livegate_redis_up") == 1.0).await;
    subs.push(Live::start(&standby, "subscription { msgAdded { text } }").await);
    sockets.until_open(2).await;
    let emitter = Emitter::start(&sockets);
    for live in subs.iter_mut() {
        events_until(live, 10).await;
    }
    // Redis goes away mid-stream: the holder keeps its socket, the standby serves its
    // replica from its own; neither replica's subscribers miss or repeat an event.
    redis.stop();
    until(&standby, |p| sample(p, "livegate_redis_up") == 0.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = emitter.finish().await;
    for (i, live) in subs.iter_mut().enumerate() {
        let seen = events_until(live, last).await;
        let expected: Vec<u64> = (seen[0]..=last).collect();
        assert_eq!(
            seen, expected,
            "subscriber {i}: events lost or doubled across the Redis outage"
        );
    }
    assert_eq!(
        sockets.opened.load(Ordering::SeqCst),
        2,
        "no third socket: the standby served its replica"
    );
}

/// On a Redis Cluster the second-level cache spreads over every master by its own keys,
/// and when the master holding the invalidation stream dies mid-test (its replica takes
/// over), no replica serves a stale value afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_spreads_the_cache_over_its_masters_and_survives_losing_one() {
    let mut cluster = common::redis::RedisCluster::start();
    let (up, version) = upstream().await;
    let mut o = options(&cluster.url(), "tc:");
    if let Some(r) = o.redis.as_mut() {
        r.timeout = Duration::from_secs(1);
    }
    let gws = replicas_with(2, &up, o).await;
    let ids: Vec<String> = (0..30).map(|i| format!("id-{i:02}")).collect();
    let query = |id: &str| format!(r#"{{ thing(id: "{id}") {{ v }} }}"#);
    for id in &ids {
        let r = gws[0].query(&query(id)).await;
        assert_eq!(r["data"]["thing"]["v"], 0, "{r}");
    }
    // Entries, their tags and their generations on every master.
    let spread = cluster.keys_by_master();
    assert_eq!(spread.len(), 3, "{spread:?}");
    for (port, keys) in &spread {
        assert!(
            keys.iter().any(|k| k.starts_with("{tc:c:")),
            "master {port} holds no entry: {spread:?}"
        );
    }
    // B takes every one from the cluster: one upstream request per thing in all.
    for id in &ids {
        let r = gws[1].query(&query(id)).await;
        assert_eq!(r["data"]["thing"]["v"], 0, "{r}");
    }
    for id in &ids {
        assert_eq!(up.count_matching(&format!("GET /things/{id}")), 1, "{id}");
    }
    let page = metrics(&gws[1]).await;
    assert_eq!(
        sample(&page, "livegate_l2_lookups_total{outcome=\"hit\"}"),
        30.0,
        "{page}"
    );

    // The master of the invalidation stream dies; its replica is promoted.
    let mut on_b = Live::start(&gws[1], r#"subscription { thing(id: "id-00") { id v } }"#).await;
    on_b.until_version(0).await;
    cluster.kill_master_of("{tc:}inv");
    version.store(7, Ordering::SeqCst);
    let tags: Vec<String> = ids.iter().map(|id| format!("thing:{id}")).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    webhook(&gws[0], &tags).await;
    tokio::time::timeout(Duration::from_secs(30), on_b.until_version(7))
        .await
        .expect("B hears the invalidation (or that everything changed) after the failover");
    // Nothing stale anywhere: every thing is refetched or taken from a fresh entry.
    for gw in &gws {
        for id in &ids {
            let r = gw.query(&query(id)).await;
            assert_eq!(r["data"]["thing"]["v"], 7, "{id}: {r}");
        }
    }
    until(&gws[0], |p| sample(p, "livegate_redis_up") == 1.0).await;
    until(&gws[1], |p| sample(p, "livegate_redis_up") == 1.0).await;
}

/// Each test above on one Redis (`--redis-url`) and on a Redis Cluster of three masters
/// with a replica each (`--redis-cluster`).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod one_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(false).await
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(true).await
                }
            )*
        }
    };
}

on_both!(
    a_change_on_one_replica_reaches_the_others_with_one_refetch_per_entry,
    replicas_share_one_cache_and_one_fetch_per_cold_key,
    malformed_and_unknown_format_messages_are_skipped_and_counted,
    redis_down_is_not_livegate_down_and_the_replicas_rejoin,
    one_poller_per_live_entry_for_the_whole_cluster_and_a_survivor_takes_over,
    one_upstream_socket_for_the_cluster_and_a_survivor_takes_it_over,
    a_password_in_the_url_works_and_is_never_shown_and_a_replica_may_start_before_redis,
    an_unshareable_polled_entry_still_reaches_every_replica_and_stale_values_are_refreshed,
    without_redis_each_replica_holds_its_own_socket_and_gives_it_up_when_redis_is_back,
    a_killed_socket_holder_loses_no_event_and_doubles_none,
    across_a_redis_outage_the_holder_and_the_standby_lose_no_event,
);
