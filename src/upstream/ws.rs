//! Upstream WebSocket streams: one socket per (upstream, path), shared by every cache
//! entry and event subscription that needs it on this gateway.
//!
//! - Opened on the first [`Sockets::tap`], closed a grace period after the last tap is
//!   dropped.
//! - Reconnected with exponential backoff (100 ms doubling to 30 s) and ±50% jitter when
//!   it drops; every reconnect is announced as [`Event::Reconnected`], so the entries it
//!   feeds refetch (messages may have been missed meanwhile).
//! - The upstream's `headers` go with the handshake.
//! - A message that is not JSON is counted and skipped.
//!
//! Each tap is a `broadcast` receiver: a consumer that falls behind by more than
//! [`BUFFER`] messages loses the oldest (and is told how many, as `Lagged`).

use crate::bus::Lease;
use crate::plan::UpstreamPlan;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Messages a tap may fall behind before it loses the oldest.
pub const BUFFER: usize = 1024;

#[derive(Clone, Debug)]
pub enum Event {
    Message(Arc<Value>),
    /// The socket was re-established after a drop: state may have been missed.
    Reconnected,
}

/// (upstream name, path, upstream URL): a schema reload that points the upstream
/// elsewhere opens a new socket; one that leaves it as it was keeps the old one.
type SocketKey = (String, String, String);

struct Socket {
    tx: broadcast::Sender<Event>,
    taps: AtomicUsize,
}

/// Counters, for tests and metrics.
#[derive(Default, Debug)]
pub struct SocketStats {
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub open: AtomicUsize,
    pub skipped: AtomicU64,
}

pub struct Sockets {
    sockets: Mutex<HashMap<SocketKey, Arc<Socket>>>,
    grace: Duration,
    /// TLS for `wss` upstreams when extra roots are configured.
    tls: Option<tokio_tungstenite::Connector>,
    /// Largest message (and frame) accepted from an upstream socket: `--max-upstream-body`.
    max_message: usize,
    /// With other replicas: one of them holds each socket (a lease of `lease` in Redis)
    /// and republishes its messages; the others follow.
    bus: crate::bus::Bus,
    lease: Duration,
    pub stats: Arc<SocketStats>,
}

/// A subscription to one socket's events; the socket stays while any tap lives.
pub struct Tap {
    pub rx: broadcast::Receiver<Event>,
    socket: Arc<Socket>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.socket.taps.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Sockets {
    pub fn new(
        grace: Duration,
        tls: Option<tokio_tungstenite::Connector>,
        max_message: usize,
        bus: crate::bus::Bus,
        lease: Duration,
    ) -> Arc<Sockets> {
        Arc::new(Sockets {
            sockets: Mutex::default(),
            grace,
            tls,
            max_message,
            bus,
            lease,
            stats: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketKey, Arc<Socket>>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Taps the socket to `path` on `upstream`, opening it if needed.
    pub fn tap(self: &Arc<Self>, upstream: &Arc<UpstreamPlan>, path: &str) -> Tap {
        let key = (
            upstream.name.clone(),
            path.to_string(),
            upstream.url.to_string(),
        );
        let mut sockets = self.lock();
        if let Some(socket) = sockets.get(&key) {
            socket.taps.fetch_add(1, Ordering::AcqRel);
            return Tap {
                rx: socket.tx.subscribe(),
                socket: socket.clone(),
            };
        }
        let (tx, rx) = broadcast::channel(BUFFER);
        let socket = Arc::new(Socket {
            tx,
            taps: AtomicUsize::new(1),
        });
        sockets.insert(key.clone(), socket.clone());
        tokio::spawn(run(
            Arc::downgrade(self),
            key,
            upstream.clone(),
            socket.clone(),
        ));
        Tap { rx, socket }
    }

    /// Sockets this gateway holds (connected or reconnecting).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Forgets the socket if nobody taps it; `true` when it was forgotten.
    fn retire_if_idle(&self, key: &SocketKey, socket: &Arc<Socket>) -> bool {
        let mut sockets = self.lock();
        if socket.taps.load(Ordering::Acquire) == 0 {
            if sockets.get(key).is_some_and(|s| Arc::ptr_eq(s, socket)) {
                sockets.remove(key);
            }
            true
        } else {
            false
        }
    }
}

fn ws_url(upstream: &UpstreamPlan, path: &str) -> url::Url {
    let mut url = upstream.url.clone();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let _ = url.set_scheme(scheme);
    url.set_path(&format!(
        "{}{}",
        upstream.url.path().trim_end_matches('/'),
        path
    ));
    url
}

/// Cheap jitter without a random-number crate: the clock's nanoseconds.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + (nanos % 1000) as f64 / 1000.0; // 0.5 ..< 1.5
    d.mul_f64(factor)
}

/// The socket's life: connect, read, reconnect with backoff, until nobody taps it for
/// `grace`. With other replicas, only the holder of the socket's lease connects (and
/// republishes what it reads); the others follow the republished messages, and take the
/// lease over when its holder stops renewing it (then announce a reconnect: the entries
/// they feed refetch).
async fn run(
    owner_weak: std::sync::Weak<Sockets>,
    key: SocketKey,
    upstream: Arc<UpstreamPlan>,
    socket: Arc<Socket>,
) {
    let url = ws_url(&upstream, &key.1);
    // What log lines show of it: no userinfo, no query.
    let shown = super::redact(&url);
    let scrub = |e: &dyn std::fmt::Display| super::scrub(&e.to_string(), &url);
    let lease_name = format!("sock:{}:{}", key.0, key.1);
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        let Some(owner) = owner_weak.upgrade() else {
            return;
        };
        let stats = owner.stats.clone();
        let idle = IdleCheck {
            owner: &owner_weak,
            key: &key,
            socket: &socket,
            grace: owner.grace,
        };
        // Idle check between attempts too: a dead upstream nobody wants is given up.
        if idle.retired(&mut idle_since) {
            owner.bus.release(&lease_name).await;
            return;
        }
        let tls = owner.tls.clone();
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(owner.max_message))
            .max_frame_size(Some(owner.max_message));
        let (bus, lease_for) = (owner.bus.clone(), owner.lease);
        drop(owner);

        let role = bus.lease(&lease_name, lease_for).await;
        if role == Lease::Other {
            let follower = Follower {
                idle: &idle,
                bus: &bus,
                name: &lease_name,
                lease_for,
            };
            match follower.follow(connected_before).await {
                Followed::Retired => return,
                // Our turn: connect, and say that messages may have been missed.
                Followed::Ours => {}
                // Redis would not let us follow: try again after a pause (then, if it is
                // away, hold our own socket).
                Followed::Failed => {
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            connected_before = true;
            continue;
        }

        let request = url.as_str().into_client_request().map(|mut r| {
            for (k, v) in &upstream.headers {
                r.headers_mut().insert(k.clone(), v.clone());
            }
            r
        });
        let connected = match request {
            Ok(r) => {
                let connect =
                    tokio_tungstenite::connect_async_tls_with_config(r, Some(config), false, tls);
                tokio::time::timeout(Duration::from_secs(10), connect).await
            }
            Err(e) => {
                tracing::error!(
                    url = shown,
                    error = scrub(&e),
                    "upstream socket URL is unusable"
                );
                return;
            }
        };
        match connected {
            Ok(Ok((ws, _))) => {
                stats.connects.fetch_add(1, Ordering::Relaxed);
                stats.open.fetch_add(1, Ordering::Relaxed);
                tracing::info!(upstream = %upstream.name, path = %key.1, "upstream socket open");
                backoff = Duration::from_millis(100);
                if connected_before {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.tx.send(Event::Reconnected);
                }
                connected_before = true;
                let mut holder = Holder {
                    bus: &bus,
                    name: &lease_name,
                    lease_for,
                    role,
                };
                let ended = read(ws, &socket, &stats, &idle, &url, &mut holder).await;
                stats.open.fetch_sub(1, Ordering::Relaxed);
                match ended {
                    Ended::Retired => {
                        tracing::info!(upstream = %upstream.name, path = %key.1, "upstream socket closed: unused");
                        bus.release(&lease_name).await;
                        return;
                    }
                    Ended::LostLease => {
                        tracing::info!(upstream = %upstream.name, path = %key.1, "upstream socket handed over to the replica holding its lease");
                        continue;
                    }
                    Ended::Dropped => {
                        tracing::warn!(upstream = %upstream.name, path = %key.1, "upstream socket dropped; reconnecting");
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(
                url = shown,
                error = scrub(&e),
                "upstream socket failed to connect"
            ),
            Err(_) => tracing::warn!(url = shown, "upstream socket handshake timed out"),
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Why [`read`] stopped reading.
enum Ended {
    /// Nobody taps the socket any more.
    Retired,
    /// It dropped: reconnect.
    Dropped,
    /// Another replica holds the socket's lease now: follow it.
    LostLease,
}

/// The socket's lease, as its holder renews it and republishes under it.
struct Holder<'a> {
    bus: &'a crate::bus::Bus,
    name: &'a str,
    lease_for: Duration,
    role: Lease,
}

impl Holder<'_> {
    /// Renews the lease; `false` when another replica has it now. A renewal Redis did
    /// not answer keeps the generation held so far (the next one may still get through;
    /// followers must not see a gap without a new generation).
    async fn renew(&mut self) -> bool {
        self.role = match (self.bus.lease(self.name, self.lease_for).await, self.role) {
            (Lease::Solo, Lease::Held(generation)) => Lease::Held(generation),
            (now, _) => now,
        };
        self.role != Lease::Other
    }

    async fn republish(&self, text: &str) {
        if let Lease::Held(generation) = self.role {
            self.bus.publish_event(self.name, generation, text).await;
        }
    }
}

/// A replica following the socket another replica holds.
struct Follower<'a> {
    idle: &'a IdleCheck<'a>,
    bus: &'a crate::bus::Bus,
    name: &'a str,
    lease_for: Duration,
}

/// How following ended.
enum Followed {
    /// Nobody taps the socket any more.
    Retired,
    /// The lease is free (or Redis is away): this replica should hold the socket.
    Ours,
    /// The holder's messages could not be read.
    Failed,
}

impl Follower<'_> {
    /// Passes the holder's messages on to this replica's taps until the socket is unused
    /// for the grace period, until this replica should hold it, or until the messages
    /// cannot be read. A message of an older holder than one already heard is dropped; a
    /// newer holder means messages may have been missed meanwhile, and so does starting
    /// to follow again (`resumed`): the taps are told to refetch.
    async fn follow(&self, resumed: bool) -> Followed {
        let Some(mut events) = self.bus.events(self.name).await else {
            return Followed::Failed;
        };
        let socket = self.idle.socket;
        if resumed {
            let _ = socket.tx.send(Event::Reconnected);
        }
        let mut newest = 0u64;
        let renew_every = (self.lease_for / 3).max(Duration::from_millis(50));
        let mut renew_at = tokio::time::Instant::now() + renew_every;
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            let Ok(batch) = events.next().await else {
                return Followed::Failed;
            };
            for (generation, message) in batch {
                if generation < newest {
                    continue;
                }
                if generation > newest && newest != 0 {
                    let _ = socket.tx.send(Event::Reconnected);
                }
                newest = generation;
                let event = match message {
                    Some(m) => Event::Message(m),
                    // Too big to pass through Redis: refetch instead.
                    None => Event::Reconnected,
                };
                let _ = socket.tx.send(event);
            }
            if self.idle.retired(&mut idle_since) {
                return Followed::Retired;
            }
            if tokio::time::Instant::now() >= renew_at {
                renew_at = tokio::time::Instant::now() + renew_every;
                if self.bus.lease(self.name, self.lease_for).await != Lease::Other {
                    return Followed::Ours;
                }
            }
        }
    }
}

/// What decides the socket is no longer wanted, wherever the socket's task is: between
/// connection attempts, reading as the holder, or following.
struct IdleCheck<'a> {
    owner: &'a std::sync::Weak<Sockets>,
    key: &'a SocketKey,
    socket: &'a Arc<Socket>,
    grace: Duration,
}

impl IdleCheck<'_> {
    /// Whether nobody has tapped the socket for the grace period, in which case it is
    /// forgotten (or its owner is gone): then the task ends. `idle_since` is the caller's
    /// record of since when nobody taps it.
    fn retired(&self, idle_since: &mut Option<tokio::time::Instant>) -> bool {
        if self.socket.taps.load(Ordering::Acquire) > 0 {
            *idle_since = None;
            return false;
        }
        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
        since.elapsed() >= self.grace
            && self
                .owner
                .upgrade()
                .is_none_or(|o| o.retire_if_idle(self.key, self.socket))
    }
}

/// Reads until the socket drops, has been untapped for the grace period and is retired,
/// or its lease is another replica's now; renews the lease and republishes each message
/// under it meanwhile.
async fn read(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    socket: &Arc<Socket>,
    stats: &SocketStats,
    idle: &IdleCheck<'_>,
    url: &url::Url,
    holder: &mut Holder<'_>,
) -> Ended {
    let mut tick = tokio::time::interval(
        (idle.grace / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    let mut renew = tokio::time::interval((holder.lease_for / 3).max(Duration::from_millis(50)));
    renew.tick().await;
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if !holder.renew().await {
                    let _ = ws.close(None).await;
                    return Ended::LostLease;
                }
            }
            _ = tick.tick() => {
                if idle.retired(&mut idle_since) {
                    let _ = ws.close(None).await;
                    return Ended::Retired;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(text.as_str()) {
                    Ok(v) => {
                        let _ = socket.tx.send(Event::Message(Arc::new(v)));
                        holder.republish(text.as_str()).await;
                    }
                    Err(_) => {
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("upstream socket message is not JSON; skipped");
                    }
                },
                Some(Ok(Message::Binary(b))) => match serde_json::from_slice::<Value>(&b) {
                    Ok(v) => {
                        holder.republish(&v.to_string()).await;
                        let _ = socket.tx.send(Event::Message(Arc::new(v)));
                    }
                    Err(_) => {
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Some(Ok(Message::Ping(p))) => {
                    let _ = ws.send(Message::Pong(p)).await;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    // Said here, before the reconnect (a message over the size limit, a
                    // protocol error, a reset): the fed entries are refetched after it.
                    let too_big = matches!(
                        e,
                        tokio_tungstenite::tungstenite::Error::Capacity(_)
                    );
                    let error = super::scrub(&e.to_string(), url);
                    if too_big {
                        tracing::warn!(error, "upstream socket sent a message over --max-upstream-body; reconnecting");
                    } else {
                        tracing::warn!(error, "upstream socket read failed; reconnecting");
                    }
                    return Ended::Dropped;
                }
                None => return Ended::Dropped,
            },
        }
    }
}
