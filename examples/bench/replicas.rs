//! The replicas part of the benchmark (`--only replicas`): livegate replicas sharing a
//! `redis-server` the bench starts (Debian's; nothing persisted), against one gateway.
//!
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

pub fn run(livegate: &Path, work: &Path, up_url: &str) -> Result<String> {
    let _ = std::process::Command::new("taskset")
        .args(["-p", "-c", "1", &std::process::id().to_string()])
        .output();
    let schema_path = work.join("replicas.graphql");
    std::fs::write(&schema_path, schema(up_url)).map_err(|e| e.to_string())?;
    let redis_port = free_port()?;
    let redis_port_arg = redis_port.to_string();
    let _redis = start(
        "redis-server",
        &[
            "redis-server",
            "--port",
            &redis_port_arg,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        redis_port,
        work,
    )?;
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let rt = crate::live::client_runtime()?;
    let mut out = String::new();

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
