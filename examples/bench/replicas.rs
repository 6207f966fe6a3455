//! The replicas part of the benchmark (`--only replicas`): livegate replicas sharing a
//! `redis-server` the bench starts (Debian's; nothing persisted), against one gateway.
//!
//! - one upstream socket message → 10,000 `@stream` subscribers on each of 3 replicas (the
//!   last on any replica), behind one Redis and behind a Redis Cluster the bench starts
//!   (three masters, a replica each), beside one gateway without Redis; with the Redis
//!   commands each message cost and the upstream sockets open;
//! - webhook on replica A → push to 1,000 live subscribers on replica B (1st, median,
//!   last), beside webhook → push on a single gateway;
//! - upstream sockets and requests for 3 replicas with subscribers (want 1, not 3);
//! - a second-level (Redis) hit beside an in-process hit: 2,000 distinct cached entries
//!   fetched by A, then read from B (each a Redis hit), then again (each a local hit),
//!   with 8 concurrent clients and the whole-response cache off.
//!
//! Gateways and Redis run pinned to core 0, the clients on core 1.

use crate::live::gateway;
use crate::{free_port, http, start, Result};
use std::path::Path;
use std::time::{Duration, Instant};

const LIVE: &str = "subscription { posts { id title } }";

fn schema(up_url: &str) -> String {
    format!(
        r#"extend schema @upstream(name: "jp", url: "{up_url}")
type Query {{
  posts: [Post!]! @rest(upstream: "jp", path: "/posts") @cache(maxAge: 3600, tags: ["posts"])
    @updates(upstream: "jp", path: "/ws", when: {{kind: "post"}}, apply: UPSERT, key: "id")
  user(id: Int!): User @rest(upstream: "jp", path: "/users/{{args.id}}") @cache(maxAge: 3600)
}}
type Subscription {{
  posts: [Post!]! @live
  postEvents: Post @stream(upstream: "jp", path: "/ws", when: {{kind: "post"}})
}}
type Post {{ id: Int! userId: Int! title: String! body: String! }}
type User {{ id: Int! name: String! }}
"#
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(name: &str, lat: &[Duration]) -> String {
    format!(
        "| {name} | {:.1} | {:.1} | {:.1} |\n",
        ms(lat[0]),
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() - 1])
    )
}

/// `n` distinct `user` queries from 8 concurrent clients; requests per second.
async fn distinct_queries(url: &str, ids: std::ops::Range<usize>) -> Result<f64> {
    let client = reqwest::Client::new();
    let n = ids.len();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(ids.start));
    let end = ids.end;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, next, url) = (client.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= end {
                    return Ok::<_, String>(());
                }
                let body = serde_json::json!({"query": format!("{{ user(id: {id}) {{ name }} }}")});
                let res = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !res.status().is_success() {
                    return Err(format!("status {}", res.status()));
                }
                let _ = res.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// `redis-cli -p <port> <args>`'s output.
fn cli(port: u16, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Commands the masters among `ports` have processed so far.
fn commands(ports: &[u16]) -> Result<u64> {
    let mut sum = 0;
    for &port in ports {
        if !cli(port, &["info", "replication"])?.contains("role:master") {
            continue;
        }
        let stats = cli(port, &["info", "stats"])?;
        sum += stats
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or("no total_commands_processed")?;
    }
    Ok(sum)
}

/// A `redis-server` on `port` (core 0, nothing persisted), run in `dir`, with `extra`
/// arguments.
fn redis_server(port: u16, dir: &Path, extra: &[&str]) -> Result<crate::Proc> {
    let port_arg = port.to_string();
    let mut args = vec![
        "redis-server",
        "--port",
        &port_arg,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    args.extend_from_slice(extra);
    start("redis-server", &args, port, dir)
}

/// A Redis Cluster of three masters with a replica each (nothing persisted), on core 0;
/// its processes and every node's port.
fn cluster(work: &Path) -> Result<(Vec<crate::Proc>, Vec<u16>)> {
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for i in 0..6 {
        let port = free_port()?;
        let bus = free_port()?;
        let dir = work.join(format!("cluster-{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let bus_arg = bus.to_string();
        procs.push(redis_server(
            port,
            &dir,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus_arg,
                "--cluster-node-timeout",
                "2000",
                "--repl-diskless-sync-delay",
                "0",
            ],
        )?);
        ports.push(port);
    }
    let mut create = std::process::Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    for p in &ports {
        create.arg(format!("127.0.0.1:{p}"));
    }
    let out = create
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
    if !out.status.success() {
        return Err("redis-cli --cluster create failed".into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ports
        .iter()
        .all(|&p| cli(p, &["cluster", "info"]).is_ok_and(|i| i.contains("cluster_state:ok")))
    {
        if Instant::now() > deadline {
            return Err("the Redis Cluster did not become ok".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((procs, ports))
}

/// Subscribers per replica in the fan-out measurement: 1,000 sockets × 10.
const FANOUT_SOCKETS: usize = 1_000;
const FANOUT_PER_SOCKET: usize = 10;

/// One upstream socket message → every subscriber of `postEvents` on `n` replicas started
/// by `replica`: for each of 4 rounds, the latencies to all of them (the first round
/// warms the followers up), the Redis commands per round (from the masters of `redis`),
/// and the upstream sockets open.
fn fanout(
    rt: &tokio::runtime::Runtime,
    replica: impl Fn() -> Result<(String, crate::Proc)>,
    up_url: &str,
    n: usize,
    redis: &[u16],
) -> Result<(Vec<Vec<Duration>>, Vec<u64>, u64)> {
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(replica()?);
    }
    rt.block_on(async {
        let mut fleets = Vec::new();
        for (listen, _) in &replicas {
            let fleet = crate::live::connect(&format!("ws://{listen}/graphql"), FANOUT_SOCKETS).await?;
            fleet.subscribe(FANOUT_PER_SOCKET, crate::live::EVENTS).await?;
            fleets.push(fleet);
        }
        let each = FANOUT_SOCKETS * FANOUT_PER_SOCKET;
        let mut rounds = Vec::new();
        let mut used = Vec::new();
        for version in 0..4 {
            // Every socket of every replica has its subscriptions in place, and the
            // followers follow (the first round): wait for the previous round to settle.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for f in &fleets {
                f.clear();
            }
            let before = commands(redis)?;
            let message = serde_json::json!({"kind": "post", "id": 1, "userId": 1, "title": format!("Post number 1, announced {version}"), "body": "b"});
            let url = format!("{up_url}/_announce");
            let t0 = Instant::now();
            let sent = tokio::task::spawn_blocking(move || {
                http("POST", &url, Some(&message.to_string()))
            });
            let mut all = Vec::new();
            for f in &fleets {
                all.extend(f.wait(each, t0).await?);
            }
            sent.await.map_err(|e| e.to_string())??;
            all.sort();
            rounds.push(all);
            used.push(commands(redis)?.saturating_sub(before));
        }
        let sockets = crate::live::socket_counts(up_url)?.0;
        Ok::<_, String>((rounds, used, sockets))
    })
}

pub fn run(livegate: &Path, work: &Path, up_url: &str) -> Result<String> {
    let _ = std::process::Command::new("taskset")
        .args(["-p", "-c", "1", &std::process::id().to_string()])
        .output();
    let schema_path = work.join("replicas.graphql");
    std::fs::write(&schema_path, schema(up_url)).map_err(|e| e.to_string())?;
    let redis_port = free_port()?;
    let _redis = redis_server(redis_port, work, &[])?;
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let rt = crate::live::client_runtime()?;
    let mut out = String::new();

    // One upstream message → 10,000 subscribers on each replica.
    {
        let (_cluster, cluster_ports) = cluster(work)?;
        let nodes = cluster_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let each = FANOUT_SOCKETS * FANOUT_PER_SOCKET;
        out.push_str(&format!("| one upstream message → `postEvents` subscribers ({FANOUT_SOCKETS} sockets × {FANOUT_PER_SOCKET} per replica) | round | 1st ms | median ms | last ms (any replica) | Redis commands | upstream sockets open |\n|---|---:|---:|---:|---:|---:|---:|\n"));
        for (name, n, flags, ports) in [
            (
                format!("1 gateway, {each} subscribers, no Redis"),
                1,
                vec![],
                vec![],
            ),
            (
                format!("3 replicas × {each}, one Redis"),
                3,
                vec!["--redis-url", redis.as_str(), "--redis-prefix", "fan1:"],
                vec![redis_port],
            ),
            (
                format!("3 replicas × {each}, one Redis, `--redis-standby false`"),
                3,
                vec![
                    "--redis-url",
                    redis.as_str(),
                    "--redis-prefix",
                    "fan3:",
                    "--redis-standby",
                    "false",
                ],
                vec![redis_port],
            ),
            (
                format!("3 replicas × {each}, Redis Cluster (3 masters + 3 replicas)"),
                3,
                vec!["--redis-cluster", nodes.as_str(), "--redis-prefix", "fan2:"],
                cluster_ports.clone(),
            ),
        ] {
            let (rounds, used, sockets) = fanout(
                &rt,
                || gateway(livegate, &schema_path, work, true, &flags),
                up_url,
                n,
                &ports,
            )?;
            for (i, (lat, used)) in rounds.iter().zip(&used).enumerate().skip(1) {
                out.push_str(&format!(
                    "| {name} | {i} | {:.1} | {:.1} | {:.1} | {} | {sockets} |\n",
                    ms(lat[0]),
                    ms(lat[lat.len() / 2]),
                    ms(lat[lat.len() - 1]),
                    if ports.is_empty() {
                        "–".to_string()
                    } else {
                        used.to_string()
                    }
                ));
            }
        }
        out.push('\n');
    }

    // Webhook → push: one gateway, then webhook on A and subscribers on B.
    out.push_str("| webhook → push, 1,000 subscribers (100 sockets × 10) | 1st ms | median ms | last ms |\n|---|---:|---:|---:|\n");
    {
        let (g, _gp) = gateway(livegate, &schema_path, work, true, &[])?;
        let rounds = crate::live::webhook_rounds(&rt, &g, &g, LIVE, up_url, 3)?;
        for (i, lat) in rounds.iter().enumerate() {
            out.push_str(&row(&format!("single gateway, round {}", i + 1), lat));
        }
    }
    {
        let flags = ["--redis-url", redis.as_str(), "--redis-prefix", "bench1:"];
        let (a, _ap) = gateway(livegate, &schema_path, work, true, &flags)?;
        let (b, _bp) = gateway(livegate, &schema_path, work, true, &flags)?;
        let rounds = crate::live::webhook_rounds(&rt, &b, &a, LIVE, up_url, 3)?;
        for (i, lat) in rounds.iter().enumerate() {
            out.push_str(&row(
                &format!("webhook on replica A, subscribers on B, round {}", i + 1),
                lat,
            ));
        }
    }

    // Upstream economy: 3 replicas, each with live and event subscribers.
    {
        let flags = ["--redis-url", redis.as_str(), "--redis-prefix", "bench2:"];
        let mut replicas = Vec::new();
        for _ in 0..3 {
            replicas.push(gateway(livegate, &schema_path, work, true, &flags)?);
        }
        let before_sockets = crate::live::socket_counts(up_url)?;
        http("GET", &format!("{up_url}/_reset"), None)?;
        let (requests, sockets) = rt.block_on(async {
            let mut fleets = Vec::new();
            for (listen, _) in &replicas {
                let fleet = crate::live::connect(&format!("ws://{listen}/graphql"), 10).await?;
                fleet.subscribe(10, LIVE).await?;
                fleets.push(fleet);
            }
            let after_subscribe = crate::upstream_requests_url(up_url)?;
            // Three invalidations, each through a different replica's webhook.
            for (i, (listen, _)) in replicas.iter().enumerate() {
                let _ = i;
                fleets[0]
                    .change(100, &format!("http://{listen}"), up_url)
                    .await?;
            }
            let total = crate::upstream_requests_url(up_url)?;
            let sockets = crate::live::socket_counts(up_url)?;
            Ok::<_, String>(((after_subscribe, total - after_subscribe), sockets))
        })?;
        out.push_str(&format!(
            "\n3 replicas × 100 live subscribers of one `@updates`-fed entry: **{} upstream socket(s)** open for the cluster ({} opened in all), **{} upstream request(s)** for the first subscriptions and **{} for 3 webhook invalidations** (one per invalidation is the goal, not one per replica).\n",
            sockets.0,
            sockets.1 - before_sockets.1,
            requests.0,
            requests.1
        ));
    }

    // Second-level hit vs in-process hit.
    {
        let flags = [
            "--redis-url",
            redis.as_str(),
            "--redis-prefix",
            "bench3:",
            "--response-cache-mb",
            "0",
        ];
        let (a, _ap) = gateway(livegate, &schema_path, work, true, &flags)?;
        let (b, _bp) = gateway(livegate, &schema_path, work, true, &flags)?;
        let (fill, l2, local) = rt.block_on(async {
            let fill = distinct_queries(&format!("http://{a}/graphql"), 1..2001).await?;
            let l2 = distinct_queries(&format!("http://{b}/graphql"), 1..2001).await?;
            let local = distinct_queries(&format!("http://{b}/graphql"), 1..2001).await?;
            Ok::<_, String>((fill, l2, local))
        })?;
        out.push_str(&format!(
            "\n2,000 distinct cached entries, 8 concurrent clients, whole-response cache off: replica A fetching them from the upstream **{fill:.0} req/s**; replica B finding each in Redis (second-level hit) **{l2:.0} req/s**; B again, each an in-process hit, **{local:.0} req/s** (second-level hit / in-process hit = {:.2}).\n",
            l2 / local
        ));
    }
    Ok(out)
}
