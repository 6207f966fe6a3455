//! `cargo run --release --example demo`: the bundled demo upstreams (chat, users, activity) on
//! the loopback addresses `schema.graphql` names, and the gateway serving that schema.

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "livegate demo: demo upstreams + the gateway serving schema.graphql")]
struct Args {
    /// Gateway address.
    #[arg(long, env = "LIVEGATE_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// The schema to serve (default: `schema.graphql` in the current directory, else the
    /// one beside this example's sources).
    #[arg(long)]
    schema: Option<String>,
    /// The invalidation webhook's signing secret (a demo default; set your own in production).
    #[arg(long, env = "LIVEGATE_WEBHOOK_SECRET", default_value = "demo-secret")]
    webhook_secret: String,
    /// Origin of a browser app (say a dev server on http://localhost:5173) allowed to call
    /// the gateway across origins; repeat or comma-separate; `*` for any.
    #[arg(long, env = "LIVEGATE_CORS_ORIGIN", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Redis shared with other replicas (`scripts/replicas` starts one beside the demo).
    #[arg(long, env = "LIVEGATE_REDIS_URL")]
    redis_url: Option<String>,
    /// A Redis Cluster's nodes instead (comma-separated), as the gateway's --redis-cluster.
    #[arg(long, env = "LIVEGATE_REDIS_CLUSTER", conflicts_with = "redis_url")]
    redis_cluster: Option<String>,
    /// Long-lived connections (WebSocket, SSE) and TCP connections one client address may
    /// hold, as the gateway's --max-connections-per-ip (default 1,000); `scripts/memory`
    /// opens many sockets from 127.0.0.1.
    #[arg(long, env = "LIVEGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    max_connections_per_ip: usize,
}

// The allocator of the `livegate` binary, so that what `scripts/memory` and the benches
// measure of the demo is what a deployment runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    livegate::return_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVEGATE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let schema = args.schema.clone().unwrap_or_else(|| {
        let here = std::path::Path::new("schema.graphql");
        if here.is_file() {
            "schema.graphql".to_string()
        } else {
            concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql").to_string()
        }
    });
    let source = match std::fs::read_to_string(&schema) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{schema}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The demo's GitHub webhook secret, unless one is set (a demo default, like the
    // invalidation webhook's: set your own in production).
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if !env.iter().any(|(k, _)| k == "GITHUB_WEBHOOK_SECRET") {
        env.push(("GITHUB_WEBHOOK_SECRET".into(), "demo-github-secret".into()));
    }
    let plan = match livegate::plan::load("schema.graphql", &source, env) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // Each demo upstream listens where the schema (or its env override) says it is.
    let mut upstreams = Vec::new();
    for (name, app) in livegate::demo::apps() {
        let Some(up) = plan.upstreams.get(name) else {
            eprintln!("the schema has no @upstream named {name:?}");
            return ExitCode::FAILURE;
        };
        let addr = format!(
            "{}:{}",
            up.url.host_str().unwrap_or("127.0.0.1"),
            up.url.port_or_known_default().unwrap_or(80)
        );
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => {
                upstreams.push(format!("  demo upstream {name:<8} http://{addr}"));
                livegate::demo::spawn(l, app);
            }
            Err(e) => {
                eprintln!(
                    "cannot listen on {addr} for the demo upstream {name:?}: {e}\n\
                     (is a demo already running?) Move it: {}=http://127.0.0.1:PORT",
                    livegate::plan::upstream_env_var(name)
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cannot listen on {}: {e}\n(is a demo already running?) Move it: --listen 127.0.0.1:PORT",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    println!("livegate demo is up:");
    println!("  GraphQL   http://{}/graphql", args.listen);
    println!(
        "  GraphiQL  http://{}/graphql (open in a browser)",
        args.listen
    );
    println!(
        "  Webhook   http://{}/hooks/invalidate (HMAC secret {:?})",
        args.listen, args.webhook_secret
    );
    for u in upstreams {
        println!("{u}");
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut options = livegate::Options {
        // Reloaded on SIGHUP, and whenever the file changes.
        schema_paths: vec![schema.clone().into()],
        watch: true,
        ..Default::default()
    };
    options.webhook.secret = Some(args.webhook_secret);
    options.redis = args
        .redis_url
        .map(|url| (url, false))
        .or(args.redis_cluster.map(|nodes| (nodes, true)))
        .map(|(url, cluster)| livegate::bus::redis::RedisOptions {
            url,
            cluster,
            prefix: "livegate:".into(),
            timeout: std::time::Duration::from_millis(250),
            fill_wait: std::time::Duration::from_secs(10),
            lease: std::time::Duration::from_secs(10),
        });
    let per_ip = args.max_connections_per_ip;
    options.connection_limits.max_connections_per_ip = per_ip;
    options.connection_limits.max_connections =
        options.connection_limits.max_connections.max(per_ip);
    options.connection_limits.max_tcp_connections_per_ip = options
        .connection_limits
        .max_tcp_connections_per_ip
        .max(per_ip + 100);
    options.connection_limits.max_tcp_connections = options
        .connection_limits
        .max_tcp_connections
        .max(per_ip + 100);
    options.cors = match livegate::server::cors::Cors::new(&args.cors_origin) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match livegate::run(listener, plan, options, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
