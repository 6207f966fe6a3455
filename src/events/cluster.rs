//! One stream's life, the same for every kind of source: connect, read, reconnect with
//! backoff, until nobody taps it for the grace period — and, with other replicas, one
//! connection per stream for the cluster.
//!
//! - Only the holder of the stream's lease connects; it republishes what it reads under
//!   the lease's generation. The others follow the republished messages, and take the
//!   lease over when its holder stops renewing it (then announce a reconnect: the
//!   entries they feed refetch).
//! - One follower (the holder of the stream's second lease) keeps a warm [`Standby`]
//!   connection whose messages wait, matched against the republished ones, so that when
//!   the holder dies the standby takes over on its open connection and passes on exactly
//!   what the holder never did: none lost, none doubled. Two connections per stream for
//!   the cluster.

use super::{
    ConnectError, Connection, Event, Failure, Read, Source, SourceStats, Sources, Stream,
    StreamKey, BUFFER,
};
use crate::bus::Lease;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A content hash of a message, to match what a standby read with what the holder
/// republished (both parsed from the same text, keys in order).
fn fingerprint(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// A message's text parsed; `None` (counted as skipped) when it is not JSON.
fn parse(text: &str, stats: &SourceStats) -> Option<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Some(v),
        Err(_) => {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("event source message is not JSON; skipped");
            None
        }
    }
}

/// Opens a connection to `source`, counting a failure in `failures` by upstream and
/// reason.
async fn connect(
    source: &dyn Source,
    failures: &prometheus::IntCounterVec,
) -> Result<Box<dyn Connection>, ConnectError> {
    let connected = source.connect().await;
    if let Err(e) = &connected {
        failures
            .with_label_values(&[source.upstream(), e.reason])
            .inc();
    }
    connected
}

/// [`connect`], held back while the breaker of the source's upstream is open (its REST
/// requests fail at once then, and its sockets wait the same way); the connect's outcome
/// counts toward that breaker.
async fn connect_guarded(
    source: &dyn Source,
    failures: &prometheus::IntCounterVec,
    guards: &crate::upstream::guard::Guards,
) -> Result<Box<dyn Connection>, ConnectError> {
    let Some(guard) = source.guarded_by().map(|u| guards.of(u)) else {
        return connect(source, failures).await;
    };
    while let Some(until) = guard.closed_until() {
        tokio::time::sleep_until(until).await;
    }
    let admitted = guard.admit();
    let connected = connect(source, failures).await;
    if let Some(admitted) = admitted {
        admitted.done(matches!(&connected, Err(e) if matches!(e.reason, "network" | "timeout")));
    }
    connected
}

/// A warm standby: one follower of the cluster (the holder of the stream's second lease)
/// keeps a connection of its own to the source, reading every message but delivering none
/// while the holder's republished stream carries the same ones. When the holder dies, the
/// standby becomes the holder on its open connection and delivers (and republishes)
/// exactly the messages the holder never republished: none lost, none doubled. It costs
/// the source a second connection per stream for the whole cluster.
struct Standby {
    /// Asks the reader task for the connection back (it stops reading).
    handback:
        Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<Box<dyn Connection>>>>,
    /// What the reader read, in order.
    read: tokio::sync::mpsc::Receiver<Arc<Value>>,
    /// Read here, not yet seen republished: (fingerprint, message).
    pending: std::collections::VecDeque<(u64, Arc<Value>)>,
    /// Republished, not yet read here (the holder is ahead): fingerprints.
    ahead: std::collections::VecDeque<u64>,
    /// Cleared by the reader when its connection drops.
    alive: Arc<std::sync::atomic::AtomicBool>,
    /// Copies given up for want of room: lost, should this standby take over.
    given_up: Arc<AtomicU64>,
    stats: Arc<SourceStats>,
}

impl Standby {
    /// Opens the standby's connection and its reader, which renews the standby lease
    /// `lease` (on `bus`, every third of `lease_for`) while it reads.
    async fn start(
        source: &dyn Source,
        stats: Arc<SourceStats>,
        failures: &prometheus::IntCounterVec,
        lease: (crate::bus::Bus, String, Duration),
    ) -> Option<Standby> {
        let conn = match connect(source, failures).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(
                    error = e.message,
                    "standby {} failed to connect",
                    source.noun()
                );
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
            conn,
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

    /// Whether its connection still reads.
    fn alive(&self) -> bool {
        !self.read.is_closed() && self.alive.load(Ordering::Acquire)
    }

    /// The connection back (if it still reads), with the messages the holder never
    /// republished, in order.
    async fn take_over(mut self) -> (Option<Box<dyn Connection>>, Vec<Arc<Value>>) {
        let (reply, conn) = tokio::sync::oneshot::channel();
        let conn = match self.handback.take().map(|h| h.send(reply)) {
            Some(Ok(())) => conn.await.ok(),
            _ => None,
        };
        // Counted as the holder's connection from here (or closed).
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
        (conn, missed)
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        // The reader stops when its handback is dropped unanswered; `take_over` counts
        // the connection as the holder's.
        if self.handback.is_some() {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Reads the standby's connection until it is asked for it back (or the standby is
/// dropped, or the connection drops: then the channel closes).
async fn standby_reader(
    mut conn: Box<dyn Connection>,
    tx: tokio::sync::mpsc::Sender<Arc<Value>>,
    mut asked: tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<Box<dyn Connection>>>,
    (alive, given_up): (Arc<std::sync::atomic::AtomicBool>, Arc<AtomicU64>),
    stats: Arc<SourceStats>,
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
                    conn.close().await;
                    return;
                }
            }
            reply = &mut asked => {
                match reply {
                    Ok(reply) => {
                        let _ = reply.send(conn);
                    }
                    Err(_) => conn.close().await,
                }
                return;
            }
            read = conn.next() => match read {
                Read::Message(text) => {
                    if let Some(v) = parse(&text, &stats) {
                        if tx.try_send(Arc::new(v)).is_err() {
                            given_up.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Read::Unreadable => {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
                Read::Dropped { .. } => {
                    // The follower gives this standby up for a new one.
                    alive.store(false, Ordering::Release);
                    return;
                }
            },
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

/// The stream's life (see the module's documentation). `lease_name` names the stream's
/// lease among the replicas.
pub(super) async fn run(
    owner_weak: std::sync::Weak<Sources>,
    key: StreamKey,
    lease_name: String,
    source: Arc<dyn Source>,
    stream: Arc<Stream>,
) {
    let shown = source.shown().to_string();
    let noun = source.noun();
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    let mut idle_since: Option<tokio::time::Instant> = None;
    let mut standby: Option<Standby> = None;
    // Failed connects since the last success: the first is logged, the rest counted.
    let mut failed_in_a_row = 0u32;
    loop {
        let Some(owner) = owner_weak.upgrade() else {
            return;
        };
        let stats = owner.stats.clone();
        let failures = owner.settings.failures.clone();
        let meter = Meter {
            open: owner.settings.open.with_label_values(&[source.kind()]),
            passed: owner
                .settings
                .messages
                .with_label_values(&[source.kind(), "passed"]),
            skipped: owner
                .settings
                .messages
                .with_label_values(&[source.kind(), "skipped"]),
        };
        let idle = IdleCheck {
            owner: &owner_weak,
            key: &key,
            stream: &stream,
            grace: owner.settings.grace,
        };
        // Idle check between attempts too: a dead source nobody wants is given up.
        if idle.retired(&mut idle_since) {
            owner.settings.bus.release(&lease_name).await;
            if standby.take().is_some() {
                owner
                    .settings
                    .bus
                    .release(&standby_lease(&lease_name))
                    .await;
            }
            return;
        }
        // A caller's stream is this process's alone: no lease, nothing republished.
        let bus = match stream.caller || !source.leased() {
            true => crate::bus::Bus::local(),
            false => owner.settings.bus.clone(),
        };
        let lease_for = owner.settings.lease;
        let keeps_standby = owner.settings.standby;
        let guards = owner.settings.guards.clone();
        let telemetry = owner.settings.telemetry.clone();
        drop(owner);

        let role = bus.lease(&lease_name, lease_for).await;
        if role == Lease::Other {
            let follower = Follower {
                idle: &idle,
                bus: &bus,
                name: &lease_name,
                lease_for,
                source: &*source,
                stats: &stats,
                failures: &failures,
                keeps_standby,
            };
            match follower.follow(connected_before, &mut standby).await {
                Followed::Retired => return,
                // Our turn: connect, and say that messages may have been missed.
                Followed::Ours => {}
                // Redis would not let us follow: try again after a pause (then, if it is
                // away, hold our own connection).
                Followed::Failed => {
                    if standby.is_none() {
                        // Said once per switch-over: what the source sends until this
                        // replica holds a connection of its own is not seen here.
                        tracing::warn!(source = shown, "the holder's messages cannot be read from Redis: this replica opens its own connection to the event source; messages sent meanwhile may be missed (its live entries refetch)");
                    }
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            connected_before = true;
            continue;
        }

        // A standby become the holder: its open connection, and the messages the old
        // holder never passed on. The standby lease is free for another follower.
        let (taken, missed) = match standby.take() {
            Some(s) => {
                bus.release(&standby_lease(&lease_name)).await;
                s.take_over().await
            }
            None => (None, Vec::new()),
        };
        let handed_over = taken.is_some();
        let connected = match taken {
            Some(conn) => Ok(conn),
            None => {
                let span = telemetry.root(
                    "source.connect",
                    Vec::new(),
                    std::time::SystemTime::now(),
                    vec![
                        crate::telemetry::Attr::new("livegate.source", source.kind()),
                        crate::telemetry::Attr::new(
                            "livegate.upstream",
                            source.upstream().to_string(),
                        ),
                    ],
                );
                let connected = span
                    .run(connect_guarded(&*source, &failures, &guards))
                    .await;
                if let Err(e) = &connected {
                    span.fail(e.reason);
                }
                connected
            }
        };
        match connected {
            Ok(conn) => {
                if !handed_over {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                }
                stats.open.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    source = shown,
                    standby = handed_over,
                    failed_before = failed_in_a_row,
                    "{noun} open"
                );
                failed_in_a_row = 0;
                backoff = Duration::from_millis(100);
                // A standby's connection missed nothing: its own taps heard every message.
                if connected_before && !handed_over {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.tx.send(Event::Reconnected);
                }
                connected_before = true;
                let mut holder = Holder {
                    bus: &bus,
                    name: &lease_name,
                    lease_for,
                    role,
                };
                if !missed.is_empty() {
                    tracing::info!(
                        source = shown,
                        messages = missed.len(),
                        "standby took the {noun} over: passing on what the old holder never did"
                    );
                }
                for v in missed {
                    let text = v.to_string();
                    let _ = stream.tx.send(Event::Message(v));
                    holder.republish(&text).await;
                }
                meter.open.inc();
                let ended = read(conn, &stream, &stats, &idle, &mut holder, &meter, noun).await;
                meter.open.dec();
                stats.open.fetch_sub(1, Ordering::Relaxed);
                match ended {
                    Ended::Retired => {
                        tracing::info!(source = shown, "{noun} closed: unused");
                        bus.release(&lease_name).await;
                        return;
                    }
                    Ended::LostLease => {
                        tracing::info!(
                            source = shown,
                            "{noun} handed over to the replica holding its lease"
                        );
                        continue;
                    }
                    Ended::Dropped => {
                        tracing::warn!(source = shown, "{noun} dropped; reconnecting");
                    }
                }
            }
            Err(e) => {
                if let Some(status) = e.refused {
                    // Retrying with the same credentials would loop: what reads the
                    // stream ends with an error, and a new tap starts afresh.
                    tracing::warn!(
                        source = shown,
                        status,
                        "{noun} handshake refused; the subscriptions reading it end with an error"
                    );
                    let _ = stream.tx.send(Event::Failed(Arc::new(Failure {
                        message: format!(
                            "upstream {} refused the socket's handshake with HTTP {status}",
                            source.upstream()
                        ),
                        code: if status == 401 {
                            "UNAUTHENTICATED"
                        } else {
                            "FORBIDDEN"
                        },
                        status: Some(status),
                    })));
                    if let Some(owner) = owner_weak.upgrade() {
                        owner.retire(&key, &stream);
                    }
                    bus.release(&lease_name).await;
                    return;
                }
                if failed_in_a_row == 0 {
                    tracing::warn!(
                        source = shown,
                        error = e.message,
                        "{noun} failed to connect; retrying with backoff (each failure counts in livegate_upstream_socket_failures_total)"
                    );
                } else {
                    tracing::debug!(
                        source = shown,
                        error = e.message,
                        "{noun} failed to connect again"
                    );
                }
                failed_in_a_row = failed_in_a_row.saturating_add(1);
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The per-kind metrics of one source's connection.
struct Meter {
    open: prometheus::IntGauge,
    passed: prometheus::IntCounter,
    skipped: prometheus::IntCounter,
}

/// Why [`read`] stopped reading.
enum Ended {
    /// Nobody taps the stream any more.
    Retired,
    /// It dropped: reconnect.
    Dropped,
    /// Another replica holds the stream's lease now: follow it.
    LostLease,
}

/// The stream's lease, as its holder renews it and republishes under it.
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

/// A replica following the stream another replica holds.
struct Follower<'a> {
    idle: &'a IdleCheck<'a>,
    bus: &'a crate::bus::Bus,
    name: &'a str,
    lease_for: Duration,
    source: &'a dyn Source,
    stats: &'a Arc<SourceStats>,
    failures: &'a prometheus::IntCounterVec,
    /// Whether this replica may keep the warm standby (`--redis-standby`).
    keeps_standby: bool,
}

/// The name of a stream's second lease: who keeps the warm standby.
fn standby_lease(name: &str) -> String {
    format!("{name}:standby")
}

/// How following ended.
enum Followed {
    /// Nobody taps the stream any more.
    Retired,
    /// The lease is free (or Redis is away): this replica should hold the stream.
    Ours,
    /// The holder's messages could not be read.
    Failed,
}

impl Follower<'_> {
    /// Passes the holder's messages on to this replica's taps until the stream is unused
    /// for the grace period, until this replica should hold it, or until the messages
    /// cannot be read. Starting to follow again (`resumed`) means messages may have been
    /// missed: the taps are told to refetch.
    async fn follow(&self, resumed: bool, standby: &mut Option<Standby>) -> Followed {
        let Some(mut events) = self.bus.events(self.name).await else {
            return Followed::Failed;
        };
        let stream = self.idle.stream;
        if resumed {
            let _ = stream.tx.send(Event::Reconnected);
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
        let stream = self.idle.stream;
        for (generation, message) in batch {
            if generation < *newest {
                continue;
            }
            if generation > *newest && *newest != 0 {
                let _ = stream.tx.send(Event::Reconnected);
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
            let _ = stream.tx.send(event);
        }
        if let Some(s) = standby.as_mut() {
            s.take_read();
        }
    }

    /// Keeps (or takes up, or gives up) the standby lease, and the standby's connection
    /// with it; a standby whose connection dropped is replaced.
    async fn keep_standby(&self, standby: &mut Option<Standby>, name: &str) {
        if standby.as_ref().is_some_and(|s| !s.alive()) {
            *standby = None;
        }
        // A standby's reader renews its lease.
        if standby.is_some() || !self.keeps_standby {
            return;
        }
        match self.bus.lease(name, self.lease_for).await {
            Lease::Held(_) => {
                let lease = (self.bus.clone(), name.to_string(), self.lease_for);
                *standby =
                    Standby::start(self.source, self.stats.clone(), self.failures, lease).await;
            }
            Lease::Other => *standby = None,
            // Redis is away: the standby is what will serve this replica.
            Lease::Solo => {}
        }
    }
}

/// What decides the stream is no longer wanted, wherever its task is: between connection
/// attempts, reading as the holder, or following.
struct IdleCheck<'a> {
    owner: &'a std::sync::Weak<Sources>,
    key: &'a StreamKey,
    stream: &'a Arc<Stream>,
    grace: Duration,
}

impl IdleCheck<'_> {
    /// Whether nobody has tapped the stream for the grace period, in which case it is
    /// forgotten (or its owner is gone): then the task ends. `idle_since` is the caller's
    /// record of since when nobody taps it.
    fn retired(&self, idle_since: &mut Option<tokio::time::Instant>) -> bool {
        if self.stream.taps.load(Ordering::Acquire) > 0 {
            *idle_since = None;
            return false;
        }
        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
        since.elapsed() >= self.grace
            && self
                .owner
                .upgrade()
                .is_none_or(|o| o.retire_if_idle(self.key, self.stream))
    }
}

/// Reads until the connection drops, has been untapped for the grace period and is
/// retired, or its lease is another replica's now; renews the lease and republishes
/// each message under it meanwhile.
async fn read(
    mut conn: Box<dyn Connection>,
    stream: &Arc<Stream>,
    stats: &SourceStats,
    idle: &IdleCheck<'_>,
    holder: &mut Holder<'_>,
    meter: &Meter,
    noun: &str,
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
                    conn.close().await;
                    return Ended::LostLease;
                }
            }
            _ = tick.tick() => {
                if idle.retired(&mut idle_since) {
                    conn.close().await;
                    return Ended::Retired;
                }
            }
            read = conn.next() => match read {
                Read::Message(text) => {
                    if let Some(v) = parse(&text, stats) {
                        meter.passed.inc();
                        let _ = stream.tx.send(Event::Message(Arc::new(v)));
                        holder.republish(&text).await;
                    } else {
                        meter.skipped.inc();
                    }
                }
                Read::Unreadable => {
                    meter.skipped.inc();
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
                Read::Dropped { error, too_big } => {
                    // Said here, before the reconnect: the fed entries are refetched
                    // after it.
                    match (error, too_big) {
                        (Some(error), true) => tracing::warn!(error, "{noun} sent a message over --max-upstream-body; reconnecting"),
                        (Some(error), false) => tracing::warn!(error, "{noun} read failed; reconnecting"),
                        (None, _) => {}
                    }
                    return Ended::Dropped;
                }
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
