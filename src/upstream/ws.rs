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
//! - With other replicas (Redis), one holds the socket and republishes its messages; one
//!   follower keeps a warm [`Standby`] socket whose messages wait, matched against the
//!   republished ones, so that when the holder dies the standby takes over on its open
//!   socket and passes on exactly what the holder never did. Two sockets per stream for
//!   the cluster.
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
    /// Messages that may be lost: a standby that took over had given up this many of
    /// its own copies (it fell too far behind its holder's republished stream), which
    /// the dead holder may or may not have passed on (see [`Standby`]).
    pub lost: AtomicU64,
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

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How to open the socket: its URL, the upstream's headers, limits and TLS.
struct Dial<'a> {
    url: &'a url::Url,
    upstream: &'a UpstreamPlan,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    tls: Option<tokio_tungstenite::Connector>,
}

impl Dial<'_> {
    /// A connected socket, or why not (scrubbed of the URL's secrets).
    async fn dial(&self) -> Result<WsStream, String> {
        let scrub = |e: &dyn std::fmt::Display| super::scrub(&e.to_string(), self.url);
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| scrub(&e))?;
        for (k, v) in &self.upstream.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(self.config),
            false,
            self.tls.clone(),
        );
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(scrub(&e)),
            Err(_) => Err("the handshake timed out".into()),
        }
    }
}

/// A content hash of a message, to match what a standby read with what the holder
/// republished (both parsed from the same text, keys in order).
fn fingerprint(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// A warm standby: one follower of the cluster (the holder of the socket's second lease)
/// keeps a socket of its own to the upstream, reading every message but delivering none
/// while the holder's republished stream carries the same ones. When the holder dies, the
/// standby becomes the holder on its open socket and delivers (and republishes) exactly
/// the messages the holder never republished: none lost, none doubled. It costs the
/// upstream a second socket per stream for the whole cluster.
struct Standby {
    /// Asks the reader task for the socket back (it stops reading).
    handback: Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<WsStream>>>,
    /// What the reader read, in order.
    read: tokio::sync::mpsc::Receiver<Arc<Value>>,
    /// Read here, not yet seen republished: (fingerprint, message).
    pending: std::collections::VecDeque<(u64, Arc<Value>)>,
    /// Republished, not yet read here (the holder is ahead): fingerprints.
    ahead: std::collections::VecDeque<u64>,
    /// Cleared by the reader when its socket drops.
    alive: Arc<std::sync::atomic::AtomicBool>,
    /// Copies given up for want of room: lost, should this standby take over.
    given_up: Arc<AtomicU64>,
    stats: Arc<SocketStats>,
}

impl Standby {
    /// Opens the standby's socket and its reader, which renews the standby lease `lease`
    /// (on `bus`, every third of `lease_for`) while it reads.
    async fn start(
        dial: &Dial<'_>,
        stats: Arc<SocketStats>,
        lease: (crate::bus::Bus, String, Duration),
    ) -> Option<Standby> {
        let ws = match dial.dial().await {
            Ok(ws) => ws,
            Err(error) => {
                tracing::debug!(error, "standby upstream socket failed to connect");
                return None;
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (tx, read) = tokio::sync::mpsc::channel(BUFFER);
        let (handback, asked) = tokio::sync::oneshot::channel();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let given_up = Arc::new(AtomicU64::new(0));
        tokio::spawn(standby_reader(
            ws,
            tx,
            asked,
            (alive.clone(), given_up.clone()),
            stats.clone(),
            lease,
        ));
        Some(Standby {
            handback: Some(handback),
            read,
            pending: Default::default(),
            ahead: Default::default(),
            alive,
            given_up,
            stats,
        })
    }

    /// Takes in what the reader read so far, each matched against the holder's.
    fn take_read(&mut self) {
        while let Ok(v) = self.read.try_recv() {
            let fp = fingerprint(&v);
            if let Some(at) = self.ahead.iter().position(|f| *f == fp) {
                self.ahead.remove(at);
                continue;
            }
            if self.pending.len() >= BUFFER {
                // The holder has not republished this many: the oldest is given up
                // (counted as lost only if this standby takes over).
                self.pending.pop_front();
                self.given_up.fetch_add(1, Ordering::Relaxed);
            }
            self.pending.push_back((fp, v));
        }
    }

    /// The holder republished `v`.
    fn republished(&mut self, v: &Value) {
        self.take_read();
        let fp = fingerprint(v);
        if let Some(at) = self.pending.iter().position(|(f, _)| *f == fp) {
            self.pending.remove(at);
        } else {
            if self.ahead.len() >= BUFFER {
                self.ahead.pop_front();
            }
            self.ahead.push_back(fp);
        }
    }

    /// Whether its socket still reads.
    fn alive(&self) -> bool {
        !self.read.is_closed() && self.alive.load(Ordering::Acquire)
    }

    /// The socket back (if it still reads), with the messages the holder never
    /// republished, in order.
    async fn take_over(mut self) -> (Option<WsStream>, Vec<Arc<Value>>) {
        let (reply, socket) = tokio::sync::oneshot::channel();
        let ws = match self.handback.take().map(|h| h.send(reply)) {
            Some(Ok(())) => socket.await.ok(),
            _ => None,
        };
        // Counted as the holder's socket from here (or closed).
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.take_read();
        let given_up = self.given_up.load(Ordering::Relaxed);
        if given_up > 0 {
            self.stats.lost.fetch_add(given_up, Ordering::Relaxed);
            tracing::warn!(
                messages = given_up,
                "the standby had given up copies it had no room for: they may be lost"
            );
        }
        let missed = self.pending.drain(..).map(|(_, v)| v).collect();
        (ws, missed)
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        // The reader stops when its handback is dropped unanswered; `take_over` counts
        // the socket as the holder's.
        if self.handback.is_some() {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Reads the standby's socket until it is asked for it back (or the standby is dropped,
/// or the socket drops: then the channel closes).
async fn standby_reader(
    mut ws: WsStream,
    tx: tokio::sync::mpsc::Sender<Arc<Value>>,
    mut asked: tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<WsStream>>,
    (alive, given_up): (Arc<std::sync::atomic::AtomicBool>, Arc<AtomicU64>),
    stats: Arc<SocketStats>,
    (bus, lease, lease_for): (crate::bus::Bus, String, Duration),
) {
    // Renewed here, on time: the follower's loop waits on Redis reads of up to a second.
    let mut renew = tokio::time::interval((lease_for / 3).max(Duration::from_millis(50)));
    renew.tick().await;
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if bus.lease(&lease, lease_for).await == Lease::Other {
                    // Another follower keeps the standby now.
                    alive.store(false, Ordering::Release);
                    let _ = ws.close(None).await;
                    return;
                }
            }
            reply = &mut asked => {
                match reply {
                    Ok(reply) => {
                        let _ = reply.send(ws);
                    }
                    Err(_) => {
                        let _ = ws.close(None).await;
                    }
                }
                return;
            }
            msg = ws.next() => {
                let parsed = match msg {
                    Some(Ok(Message::Text(text))) => serde_json::from_str::<Value>(text.as_str()).ok(),
                    Some(Ok(Message::Binary(b))) => serde_json::from_slice::<Value>(&b).ok(),
                    Some(Ok(Message::Ping(p))) => {
                        let _ = ws.send(Message::Pong(p)).await;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        // Dropped: the follower gives this standby up for a new one.
                        alive.store(false, Ordering::Release);
                        return;
                    }
                };
                match parsed {
                    Some(v) => {
                        if tx.try_send(Arc::new(v)).is_err() {
                            given_up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
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
    let lease_name = format!("sock:{}:{}", key.0, key.1);
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    let mut idle_since: Option<tokio::time::Instant> = None;
    let mut standby: Option<Standby> = None;
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
            if standby.take().is_some() {
                owner.bus.release(&standby_lease(&lease_name)).await;
            }
            return;
        }
        let tls = owner.tls.clone();
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(owner.max_message))
            .max_frame_size(Some(owner.max_message));
        let (bus, lease_for) = (owner.bus.clone(), owner.lease);
        drop(owner);
        let dial = Dial {
            url: &url,
            upstream: &upstream,
            config,
            tls,
        };

        let role = bus.lease(&lease_name, lease_for).await;
        if role == Lease::Other {
            let follower = Follower {
                idle: &idle,
                bus: &bus,
                name: &lease_name,
                lease_for,
                dial: &dial,
                stats: &stats,
            };
            match follower.follow(connected_before, &mut standby).await {
                Followed::Retired => return,
                // Our turn: connect, and say that messages may have been missed.
                Followed::Ours => {}
                // Redis would not let us follow: try again after a pause (then, if it is
                // away, hold our own socket).
                Followed::Failed => {
                    if standby.is_none() {
                        // Said once per switch-over: what the upstream sends until this
                        // replica holds a socket of its own is not seen here.
                        tracing::warn!(upstream = %upstream.name, path = %key.1, "the holder's messages cannot be read from Redis: this replica opens its own upstream socket; messages sent meanwhile may be missed (its live entries refetch)");
                    }
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            connected_before = true;
            continue;
        }

        // A standby become the holder: its open socket, and the messages the old holder
        // never passed on. The standby lease is free for another follower.
        let (taken, missed) = match standby.take() {
            Some(s) => {
                bus.release(&standby_lease(&lease_name)).await;
                s.take_over().await
            }
            None => (None, Vec::new()),
        };
        let handed_over = taken.is_some();
        let connected = match taken {
            Some(ws) => Ok(ws),
            None => dial.dial().await,
        };
        match connected {
            Ok(ws) => {
                if !handed_over {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                }
                stats.open.fetch_add(1, Ordering::Relaxed);
                tracing::info!(upstream = %upstream.name, path = %key.1, standby = handed_over, "upstream socket open");
                backoff = Duration::from_millis(100);
                // A standby's socket missed nothing: its own taps heard every message.
                if connected_before && !handed_over {
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
                if !missed.is_empty() {
                    tracing::info!(upstream = %upstream.name, path = %key.1, messages = missed.len(), "standby took the upstream socket over: passing on what the old holder never did");
                }
                for v in missed {
                    let text = v.to_string();
                    let _ = socket.tx.send(Event::Message(v));
                    holder.republish(&text).await;
                }
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
            Err(error) => tracing::warn!(url = shown, error, "upstream socket failed to connect"),
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
    dial: &'a Dial<'a>,
    stats: &'a Arc<SocketStats>,
}

/// The name of a socket's second lease: who keeps the warm standby.
fn standby_lease(name: &str) -> String {
    format!("{name}:standby")
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
    async fn follow(&self, resumed: bool, standby: &mut Option<Standby>) -> Followed {
        let Some(mut events) = self.bus.events(self.name).await else {
            return Followed::Failed;
        };
        let socket = self.idle.socket;
        if resumed {
            let _ = socket.tx.send(Event::Reconnected);
            // What the standby read before now is not its to pass on: the taps refetch.
            if let Some(s) = standby.as_mut() {
                s.take_read();
                s.pending.clear();
                s.ahead.clear();
            }
        }
        let standby_name = standby_lease(self.name);
        self.keep_standby(standby, &standby_name).await;
        let mut newest = 0u64;
        let renew_every = (self.lease_for / 3).max(Duration::from_millis(50));
        let mut renew_at = tokio::time::Instant::now() + renew_every;
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            let Ok(batch) = events.next().await else {
                return Followed::Failed;
            };
            self.pass_on(batch, &mut newest, standby);
            if self.idle.retired(&mut idle_since) {
                if standby.take().is_some() {
                    self.bus.release(&standby_name).await;
                }
                return Followed::Retired;
            }
            if tokio::time::Instant::now() >= renew_at {
                renew_at = tokio::time::Instant::now() + renew_every;
                if self.bus.lease(self.name, self.lease_for).await != Lease::Other {
                    // What the old holder republished last, before the standby decides
                    // what it never did.
                    if standby.is_some() {
                        if let Ok(batch) = events.next().await {
                            self.pass_on(batch, &mut newest, standby);
                        }
                    }
                    return Followed::Ours;
                }
                self.keep_standby(standby, &standby_name).await;
            }
        }
    }

    /// Passes the holder's messages on to this replica's taps (and shows them to the
    /// standby). A message of an older holder than one already heard is dropped; a newer
    /// holder means messages may have been missed meanwhile: the taps are told.
    fn pass_on(
        &self,
        batch: Vec<(u64, Option<Arc<Value>>)>,
        newest: &mut u64,
        standby: &mut Option<Standby>,
    ) {
        let socket = self.idle.socket;
        for (generation, message) in batch {
            if generation < *newest {
                continue;
            }
            if generation > *newest && *newest != 0 {
                let _ = socket.tx.send(Event::Reconnected);
            }
            *newest = generation;
            let event = match message {
                Some(m) => {
                    if let Some(s) = standby.as_mut() {
                        s.republished(&m);
                    }
                    Event::Message(m)
                }
                // Too big to pass through Redis: refetch instead.
                None => Event::Reconnected,
            };
            let _ = socket.tx.send(event);
        }
        if let Some(s) = standby.as_mut() {
            s.take_read();
        }
    }

    /// Keeps (or takes up, or gives up) the standby lease, and the standby's socket with
    /// it; a standby whose socket dropped is replaced.
    async fn keep_standby(&self, standby: &mut Option<Standby>, name: &str) {
        if standby.as_ref().is_some_and(|s| !s.alive()) {
            *standby = None;
        }
        // A standby's reader renews its lease.
        if standby.is_some() {
            return;
        }
        match self.bus.lease(name, self.lease_for).await {
            Lease::Held(_) => {
                let lease = (self.bus.clone(), name.to_string(), self.lease_for);
                *standby = Standby::start(self.dial, self.stats.clone(), lease).await;
            }
            Lease::Other => *standby = None,
            // Redis is away: the standby is what will serve this replica.
            Lease::Solo => {}
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

#[cfg(test)]
mod standby_tests {
    use super::*;

    fn standby() -> (Standby, tokio::sync::mpsc::Sender<Arc<Value>>) {
        let (tx, read) = tokio::sync::mpsc::channel(BUFFER);
        let standby = Standby {
            handback: None,
            read,
            pending: Default::default(),
            ahead: Default::default(),
            alive: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            given_up: Arc::default(),
            stats: Arc::default(),
        };
        (standby, tx)
    }

    fn msg(n: u64) -> Arc<Value> {
        Arc::new(serde_json::json!({ "n": n }))
    }

    #[test]
    fn what_the_holder_republished_is_not_passed_on_again_whichever_came_first() {
        let (mut s, tx) = standby();
        // The holder ahead of the standby for 1 and 2, behind it for 3 and 4.
        s.republished(&msg(1));
        s.republished(&msg(2));
        for n in 1..=5 {
            tx.try_send(msg(n)).expect("room");
        }
        s.take_read();
        s.republished(&msg(3));
        s.republished(&msg(4));
        // The holder dies before republishing 5: only 5 is the standby's to pass on.
        let left: Vec<Value> = s.pending.iter().map(|(_, v)| (**v).clone()).collect();
        assert_eq!(left, vec![serde_json::json!({"n": 5})]);
        assert!(s.ahead.is_empty());
    }

    #[test]
    fn the_same_message_twice_is_matched_twice() {
        let (mut s, tx) = standby();
        for _ in 0..3 {
            tx.try_send(msg(7)).expect("room");
        }
        s.take_read();
        s.republished(&msg(7));
        s.republished(&msg(7));
        assert_eq!(s.pending.len(), 1);
    }
}
