//! The live part of the benchmark: memory per idle WebSocket connection and per idle live
//! subscription (RSS delta of the gateway process divided by the count), and the latency
//! from an invalidation webhook to the 1st, median and last subscriber's push.
//!
//! The clients (tokio-tungstenite, graphql-transport-ws) run in this process, pinned to
//! core 1; the gateway is the `livegate` binary on core 0.

use crate::{free_port, http, start, Result};
use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const LIVE: &str = "subscription { posts { id title } }";
pub(crate) const EVENTS: &str = "subscription { postEvents { id title } }";

/// Receipt times of `next` messages for the current round.
#[derive(Default)]
struct Round {
    times: Mutex<Vec<Instant>>,
    progress: Notify,
}

pub(crate) struct Fleet {
    round: Arc<Round>,
    writers: Vec<tokio::sync::mpsc::Sender<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// A fleet's sockets close with it: the subscriptions of one measurement must not receive
/// (and slow down) the pushes of the next.
impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// Opens `connections` graphql-transport-ws sockets, each acknowledged.
pub(crate) async fn connect(url: &str, connections: usize) -> Result<Fleet> {
    let round = Arc::new(Round::default());
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..connections {
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "sec-websocket-protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static("graphql-transport-ws"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::text(r#"{"type":"connection_init"}"#))
            .await
            .map_err(|e| e.to_string())?;
        match stream.next().await {
            Some(Ok(Message::Text(t))) if t.contains("connection_ack") => {}
            other => return Err(format!("no ack: {other:?}")),
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(Message::text(m)).await.is_err() {
                    return;
                }
            }
        });
        let r = round.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(t) = msg {
                    // The gateway writes `{"id":…,"type":"next",…`: no need to parse 4 kB.
                    if t.as_str()
                        .get(..40)
                        .is_some_and(|head| head.contains(r#""type":"next""#))
                    {
                        r.times
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Instant::now());
                        r.progress.notify_one();
                    }
                }
            }
        }));
        writers.push(tx);
    }
    Ok(Fleet {
        round,
        writers,
        readers,
    })
}

impl Fleet {
    /// Subscribes `per_connection` operations `query` on every socket; for live queries,
    /// waits for all first results.
    pub(crate) async fn subscribe(&self, per_connection: usize, query: &str) -> Result<()> {
        let total = self.writers.len() * per_connection;
        self.round
            .times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for (c, w) in self.writers.iter().enumerate() {
            for s in 0..per_connection {
                let msg = serde_json::json!({"id": format!("{c}-{s}"), "type": "subscribe", "payload": {"query": query}});
                w.send(msg.to_string()).await.map_err(|e| e.to_string())?;
            }
        }
        if query == LIVE {
            self.wait(total, Instant::now()).await?;
        }
        Ok(())
    }

    /// One upstream socket message: time it to every push.
    async fn announce(&self, n: usize, upstream: &str, version: usize) -> Result<Vec<Duration>> {
        self.round
            .times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let message = serde_json::json!({"kind": "post", "id": 1, "userId": 1, "title": format!("Post number 1, announced {version}"), "body": "b"});
        let url = format!("{upstream}/_announce");
        let t0 = Instant::now();
        // Off the runtime's only worker: while curl runs, arriving pushes are timestamped.
        let sent =
            tokio::task::spawn_blocking(move || http("POST", &url, Some(&message.to_string())));
        let lat = self.wait(n, t0).await;
        sent.await.map_err(|e| e.to_string())??;
        lat
    }

    /// Starts a new round: the receipt times so far are forgotten.
    pub(crate) fn clear(&self) {
        self.round
            .times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Waits until `n` results arrived this round; their latencies from `t0`, sorted.
    pub(crate) async fn wait(&self, n: usize, t0: Instant) -> Result<Vec<Duration>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let times = self.round.times.lock().unwrap_or_else(|p| p.into_inner());
                if times.len() >= n {
                    let mut lat: Vec<Duration> = times
                        .iter()
                        .map(|t| t.saturating_duration_since(t0))
                        .collect();
                    lat.sort();
                    return Ok(lat);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {n} results within 60 s",
                    self.round.times.lock().map(|t| t.len()).unwrap_or(0)
                ));
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(100), self.round.progress.notified())
                    .await;
        }
    }

    /// One change: bump the upstream, then time the webhook → every push.
    pub(crate) async fn change(
        &self,
        n: usize,
        gateway: &str,
        upstream: &str,
    ) -> Result<Vec<Duration>> {
        self.round
            .times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        http("GET", &format!("{upstream}/_bump"), None)?;
        let hook = format!("{gateway}/hooks/invalidate");
        let t0 = Instant::now();
        // Off the runtime's only worker: while curl runs, arriving pushes are timestamped.
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-X",
                    "POST",
                    &hook,
                    "-H",
                    "authorization: Bearer bench",
                    "-d",
                    r#"{"tags":["posts"]}"#,
                ])
                .output()
        });
        let lat = self.wait(n, t0).await;
        let out = out
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !String::from_utf8_lossy(&out.stdout).contains("\"invalidated\"") {
            return Err(format!("webhook: {}", String::from_utf8_lossy(&out.stdout)));
        }
        lat
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts the `livegate` binary on `schema` on a free port, with `extra` flags (the
/// webhook token `bench` when `webhook`); its address and process.
pub(crate) fn gateway(
    livegate: &Path,
    schema: &Path,
    work: &Path,
    webhook: bool,
    extra: &[&str],
) -> Result<(String, crate::Proc)> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        livegate.to_string_lossy().to_string(),
        "--schema".into(),
        schema.to_string_lossy().to_string(),
        "--listen".into(),
        listen.clone(),
        // Every bench client connects from 127.0.0.1: lift the per-IP defaults.
        "--max-connections-per-ip".into(),
        "100000".into(),
        "--max-tcp-connections-per-ip".into(),
        "100000".into(),
    ];
    if webhook {
        args.extend(["--webhook-token".into(), "bench".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start("livegate", &args, port, work)?;
    Ok((listen, server))
}

/// Runs both measurements; returns Markdown.
pub fn run(livegate: &Path, work: &Path, up_url: &str) -> Result<String> {
    // The clients share core 1 with nothing else.
    let _ = std::process::Command::new("taskset")
        .args(["-p", "-c", "1", &std::process::id().to_string()])
        .output();
    let schema = work.join("live.graphql");
    std::fs::write(
        &schema,
        format!(
            r#"extend schema @upstream(name: "jp", url: "{up_url}")
type Query {{
  posts: [Post!]! @rest(upstream: "jp", path: "/posts") @cache(maxAge: 3600, tags: ["posts"])
    @updates(upstream: "jp", path: "/ws", when: {{kind: "post"}}, apply: UPSERT, key: "id")
}}
type Subscription {{
  posts: [Post!]! @live
  postEvents: Post @stream(upstream: "jp", path: "/ws", when: {{kind: "post"}})
}}
type Post {{ id: Int! userId: Int! title: String! body: String! }}
"#
        ),
    )
    .map_err(|e| e.to_string())?;
    http("GET", &format!("{up_url}/_reset"), None)?;
    let rt = client_runtime()?;
    let mut out = String::new();

    // Memory: 1,000 idle connections, then 10 live subscriptions on each.
    {
        let (listen, gw) = gateway(livegate, &schema, work, true, &[])?;
        let url = format!("ws://{listen}/graphql");
        crate::graphql(&format!("http://{listen}/graphql"), "{ posts { id } }")?;
        let base = gw.rss_mib().unwrap_or(f64::NAN);
        let (conns, per) = (1000usize, 10usize);
        let (after_conns, after_subs, lat10k) = rt.block_on(async {
            let fleet = connect(&url, conns).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after_conns = gw.rss_mib().unwrap_or(f64::NAN);
            fleet.subscribe(per, LIVE).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after_subs = gw.rss_mib().unwrap_or(f64::NAN);
            let lat = fleet
                .change(conns * per, &format!("http://{listen}"), up_url)
                .await?;
            Ok::<_, String>((after_conns, after_subs, lat))
        })?;
        let per_conn_kib = (after_conns - base) * 1024.0 / conns as f64;
        let per_sub_kib = (after_subs - after_conns) * 1024.0 / (conns * per) as f64;
        out.push_str(&format!(
            "| gateway RSS | MiB |\n|---|---:|\n| at start (schema loaded, one query run) | {base:.1} |\n| + {conns} idle WebSocket connections | {after_conns:.1} |\n| + {} idle live subscriptions (10 per connection) | {after_subs:.1} |\n\n",
            conns * per
        ));
        out.push_str(&format!("Per idle connection: **{per_conn_kib:.1} KiB**; per idle live subscription: **{per_sub_kib:.1} KiB**.\n\n"));
        out.push_str(&format!(
            "One webhook invalidation with {} subscribers: 1st push {:.1} ms, median {:.1} ms, last {:.1} ms.\n\n",
            conns * per,
            ms(lat10k[0]),
            ms(lat10k[lat10k.len() / 2]),
            ms(lat10k[lat10k.len() - 1])
        ));
    }

    // Latency: 1,000 subscribers (100 connections × 10), five rounds.
    {
        let (listen, _gw) = gateway(livegate, &schema, work, true, &[])?;
        let rounds = webhook_rounds(&rt, &listen, &listen, LIVE, up_url, 5)?;
        out.push_str("| webhook → push, 1,000 subscribers | 1st ms | median ms | last ms |\n|---|---:|---:|---:|\n");
        for (i, lat) in rounds.iter().enumerate() {
            out.push_str(&format!(
                "| round {} | {:.1} | {:.1} | {:.1} |\n",
                i + 1,
                ms(lat[0]),
                ms(lat[lat.len() / 2]),
                ms(lat[lat.len() - 1])
            ));
        }
        let upstream_requests = crate::upstream_requests_url(up_url)?;
        out.push_str(&format!(
            "\nUpstream requests over the webhook runs (2 gateways, 11,000 subscribers, 6 invalidations): {upstream_requests} — one per gateway start and one per invalidation.\n"
        ));
    }

    // Upstream socket message → push, for @updates live queries and @stream events, with
    // 1,000 and 10,000 subscribers: 3 rounds each, on one gateway.
    {
        let (listen, _gw) = gateway(livegate, &schema, work, false, &[])?;
        let url = format!("ws://{listen}/graphql");
        let before = socket_counts(up_url)?;
        out.push_str("\n| upstream socket message → push | subscribers | 1st ms | median ms | last ms |\n|---|---:|---:|---:|---:|\n");
        let mut version = 0;
        let mut sockets_seen = Vec::new();
        for (kind, query) in [("@updates live query", LIVE), ("@stream event", EVENTS)] {
            for (conns, per) in [(100usize, 10usize), (1000, 10)] {
                let n = conns * per;
                let rows = rt.block_on(async {
                    let fleet = connect(&url, conns).await?;
                    fleet.subscribe(per, query).await?;
                    // Event subscribers have no first result: let them all start listening.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let mut rows = Vec::new();
                    for _ in 0..3 {
                        version += 1;
                        rows.push(fleet.announce(n, up_url, version).await?);
                    }
                    Ok::<_, String>(rows)
                })?;
                sockets_seen.push(socket_counts(up_url)?);
                for lat in rows {
                    out.push_str(&format!(
                        "| {kind} | {n} | {:.1} | {:.1} | {:.1} |\n",
                        ms(lat[0]),
                        ms(lat[lat.len() / 2]),
                        ms(lat[lat.len() - 1])
                    ));
                }
            }
        }
        let after = socket_counts(up_url)?;
        out.push_str(&format!(
            "\nUpstream sockets: {} opened for all four runs (open during each run: {:?}).\n",
            after.1 - before.1,
            sockets_seen.iter().map(|s| s.0).collect::<Vec<_>>()
        ));
    }
    Ok(out)
}

/// The upstream's (open, total) `/ws` sockets.
pub(crate) fn socket_counts(up_url: &str) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&http("GET", &format!("{up_url}/_ws"), None)?)
        .map_err(|e| e.to_string())?;
    Ok((
        v["open"].as_u64().unwrap_or(0),
        v["total"].as_u64().unwrap_or(0),
    ))
}

/// The runtime the bench's clients run on (one worker: the client side of the machine).
pub fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Opens 100 sockets to `subscribe_at`, 10 live subscriptions on each, then times
/// `rounds` webhook invalidations sent to `webhook_at` (each a list of push latencies).
pub fn webhook_rounds(
    rt: &tokio::runtime::Runtime,
    subscribe_at: &str,
    webhook_at: &str,
    query: &str,
    up_url: &str,
    rounds: usize,
) -> Result<Vec<Vec<std::time::Duration>>> {
    rt.block_on(async {
        let fleet = connect(&format!("ws://{subscribe_at}/graphql"), 100).await?;
        fleet.subscribe(10, query).await?;
        let mut timed = Vec::new();
        for _ in 0..rounds {
            timed.push(
                fleet
                    .change(1000, &format!("http://{webhook_at}"), up_url)
                    .await?,
            );
        }
        Ok::<_, String>(timed)
    })
}
