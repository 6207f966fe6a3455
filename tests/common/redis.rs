//! A real `redis-server` started by a test on a free loopback port, in a temporary
//! directory, persisting nothing; stopped (and its directory removed) when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// `--requirepass`, when set.
    password: Option<String>,
    /// More arguments for `redis-server` (a cluster node's).
    extra: Vec<String>,
}

/// A port free now on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_password(None)
    }

    /// A server that wants `password` (`AUTH`) from every client.
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        Self::start_with(password, Vec::new())
    }

    fn start_with(password: Option<&str>, extra: Vec<String>) -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("livegate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            password: password.map(str::to_string),
            extra,
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the server again on the same port (empty: nothing was persisted).
    pub fn resume(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some(p) = &self.password {
            command.args(["--requirepass", p, "--masterauth", p]);
        }
        command.args(&self.extra);
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        // Ready when it answers PING.
        for _ in 0..500 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                // Any answer (PONG, or NOAUTH with a password) means it is up.
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 1];
                    if s.read_exact(&mut buf).is_ok() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Stops the server (the port stays ours to resume on).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster started by a test: three masters and a replica of each
/// (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`), each on
/// free loopback ports, persisting nothing but its cluster configuration.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    password: Option<String>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_with_password(None)
    }

    pub fn start_with_password(password: Option<&str>) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(
                    password,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        "nodes.conf".into(),
                        "--cluster-node-timeout".into(),
                        "1000".into(),
                        // A replica syncs at once (not 5 s later), and takes over from a
                        // dead master however long ago it last heard from it.
                        "--repl-diskless-sync-delay".into(),
                        "0".into(),
                        "--cluster-replica-validity-factor".into(),
                        "0".into(),
                        // The bus port given, not port + 10000 (which may not exist).
                        "--cluster-port".into(),
                        free_port().to_string(),
                    ],
                )
            })
            .collect();
        let cluster = RedisCluster {
            nodes,
            password: password.map(str::to_string),
        };
        let mut create = cluster.redis_cli();
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.until_ok();
        // Every replica has its master's data (a failover test kills a master).
        for n in &cluster.nodes {
            for _ in 0..1_000 {
                let info = cluster
                    .cli(n.port, &["info", "replication"])
                    .unwrap_or_default();
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster
    }

    /// What `--redis-cluster` takes: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis-cli`, with the cluster's password.
    fn redis_cli(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        if let Some(p) = &self.password {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        cmd
    }

    /// `redis-cli` on the node at `port`.
    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = self
            .redis_cli()
            .args(["-p", &port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until every running node says the cluster is ok and knows three masters
    /// that serve all slots.
    pub fn until_ok(&self) {
        for _ in 0..1_000 {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                self.cli(n.port, &["cluster", "info"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the Redis Cluster did not become ok");
    }

    /// The ports of the masters now (as a running node sees them).
    pub fn masters(&self) -> Vec<u16> {
        let Some(n) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Vec::new();
        };
        let nodes = self.cli(n.port, &["cluster", "nodes"]).unwrap_or_default();
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                let addr = l.split_whitespace().nth(1)?;
                addr.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// The keys each master holds (`KEYS *` on each).
    pub fn keys_by_master(&self) -> Vec<(u16, Vec<String>)> {
        self.masters()
            .into_iter()
            .map(|port| {
                let keys = self.cli(port, &["keys", "*"]).unwrap_or_default();
                (port, keys.lines().map(str::to_string).collect())
            })
            .collect()
    }

    /// Kills the master that serves `key` and waits until its replica is promoted and
    /// the cluster is ok again.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let slot = self.slot(key);
        let Some(port) = self.masters().into_iter().find(|&p| self.serves(p, slot)) else {
            panic!("no master serves {key}");
        };
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.stop();
        }
        for _ in 0..1_000 {
            if self
                .masters()
                .iter()
                .any(|&p| p != port && self.serves(p, slot))
            {
                self.until_ok();
                return port;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no replica took over from the master on {port}");
    }

    fn slot(&self, key: &str) -> u16 {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|n| self.cli(n.port, &["cluster", "keyslot", key]))
            .and_then(|s| s.trim().parse().ok())
            .expect("a slot")
    }

    /// Whether the node on `port` is a master serving `slot`.
    fn serves(&self, port: u16, slot: u16) -> bool {
        let Some(nodes) = self.cli(port, &["cluster", "nodes"]) else {
            return false;
        };
        nodes.lines().any(|l| {
            l.contains("myself") && l.contains("master") && {
                l.split_whitespace().skip(8).any(|range| {
                    let mut ends = range.split('-').filter_map(|x| x.parse::<u16>().ok());
                    match (ends.next(), ends.next()) {
                        (Some(a), Some(b)) => (a..=b).contains(&slot),
                        (Some(a), None) => a == slot,
                        _ => false,
                    }
                })
            }
        })
    }

    /// Stops every node (their ports stay ours to resume on).
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }

    /// Starts every node again: they find each other from their saved configuration.
    pub fn resume(&mut self) {
        for n in &mut self.nodes {
            n.resume();
        }
        self.until_ok();
    }
}

/// One Redis or a cluster, for a test that runs on both.
pub enum Redis {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    pub fn start(cluster: bool) -> Redis {
        Self::start_with_password(cluster, None)
    }

    pub fn start_with_password(cluster: bool, password: Option<&str>) -> Redis {
        if cluster {
            Redis::Cluster(RedisCluster::start_with_password(password))
        } else {
            Redis::One(RedisServer::start_with_password(password))
        }
    }

    /// `--redis-url`'s value, or `--redis-cluster`'s (with a comma: see [`is_cluster`]).
    pub fn url(&self) -> String {
        match self {
            Redis::One(r) => r.url(),
            Redis::Cluster(c) => c.url(),
        }
    }

    pub fn stop(&mut self) {
        match self {
            Redis::One(r) => r.stop(),
            Redis::Cluster(c) => c.stop(),
        }
    }

    pub fn resume(&mut self) {
        match self {
            Redis::One(r) => r.resume(),
            Redis::Cluster(c) => c.resume(),
        }
    }

    /// A client connection for the test's own commands (routed by key on a cluster).
    pub async fn connection(&self) -> livegate::bus::redis::Conn {
        livegate::bus::redis::connect(&self.url(), is_cluster(&self.url()))
            .await
            .expect("connect")
    }
}

/// Whether a test's Redis URL names a cluster's nodes (several, comma-separated).
pub fn is_cluster(url: &str) -> bool {
    url.contains(',')
}
