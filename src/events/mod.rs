//! Stage ⑤ — event sources: where changes are announced. Input: a planned stream
//! ([`crate::plan::StreamPlan`], from `@updates` or `@stream`). Output: a [`Tap`], a
//! broadcast of its messages (parsed JSON) and of [`Event::Reconnected`] (messages may
//! have been missed: what they feed refetches).
//!
//! One connection per stream for the whole gateway ([`Sources`], the registry, keyed by
//! the planned stream): opened on the first tap, closed a grace period after the last
//! tap is dropped, reconnected with exponential backoff (100 ms doubling to 30 s, ±50%
//! jitter). With other replicas (Redis), one connection per stream for the cluster: the
//! holder of the stream's lease reads and republishes, the others follow, one keeps a
//! warm standby ([`cluster`]). All of that is written once, here, for every kind of
//! source; a kind says only how to connect and read ([`Source`], [`Connection`]).
//! Kinds: [`websocket`] (an upstream WebSocket).
//!
//! Each tap is a `broadcast` receiver: a consumer that falls behind by more than
//! [`BUFFER`] messages loses the oldest (and is told how many, as `Lagged`).

mod cluster;
pub mod websocket;

use crate::plan::StreamPlan;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// Messages a tap may fall behind before it loses the oldest.
pub const BUFFER: usize = 1024;

#[derive(Clone, Debug)]
pub enum Event {
    Message(Arc<Value>),
    /// The connection was re-established after a drop: state may have been missed.
    Reconnected,
}

/// One kind of event source, for one stream: how to open a connection to it.
pub trait Source: Send + Sync + 'static {
    /// A connection to the stream, or why not (scrubbed of the URL's secrets).
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, String>>;
    /// The stream as log lines show it: no userinfo, no query.
    fn shown(&self) -> &str;
    /// What log lines call a connection of this kind ("upstream socket").
    fn noun(&self) -> &'static str;
}

/// An open connection to a stream.
pub trait Connection: Send + 'static {
    /// Its next message (control traffic, such as pings, handled within).
    fn next(&mut self) -> BoxFuture<'_, Read>;
    /// Closes it politely.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// What a [`Connection`] read.
pub enum Read {
    /// One message's text (JSON, unless the source misbehaves: then counted and skipped).
    Message(String),
    /// A message that is not text: counted and skipped.
    Unreadable,
    /// The connection dropped: why (scrubbed), and whether for a message over the size
    /// limit.
    Dropped {
        error: Option<String>,
        too_big: bool,
    },
}

/// Counters, for tests and metrics.
#[derive(Default, Debug)]
pub struct SourceStats {
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub open: AtomicUsize,
    pub skipped: AtomicU64,
    /// Messages that may be lost: a standby that took over had given up this many of
    /// its own copies (it fell too far behind its holder's republished stream), which
    /// the dead holder may or may not have passed on (see [`cluster`]).
    pub lost: AtomicU64,
}

/// One stream's broadcast, and how many taps it has.
struct Stream {
    tx: broadcast::Sender<Event>,
    taps: AtomicUsize,
}

/// A stream's identity in the registry: the planned stream's key (a schema reload that
/// points an upstream elsewhere opens a new connection; one that leaves it as it was
/// keeps the old one).
type StreamKey = String;

/// The registry of this gateway's streams (see the module's documentation).
pub struct Sources {
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    grace: Duration,
    /// TLS for `wss` upstreams when extra roots are configured.
    tls: Option<tokio_tungstenite::Connector>,
    /// Largest message (and frame) accepted from a stream: `--max-upstream-body`.
    max_message: usize,
    /// With other replicas: one of them holds each stream (a lease of `lease` in Redis)
    /// and republishes its messages; the others follow.
    bus: crate::bus::Bus,
    lease: Duration,
    pub stats: Arc<SourceStats>,
}

/// A subscription to one stream's events; the stream stays while any tap lives.
pub struct Tap {
    pub rx: broadcast::Receiver<Event>,
    stream: Arc<Stream>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stream.taps.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Sources {
    pub fn new(
        grace: Duration,
        tls: Option<tokio_tungstenite::Connector>,
        max_message: usize,
        bus: crate::bus::Bus,
        lease: Duration,
    ) -> Arc<Sources> {
        Arc::new(Sources {
            streams: Mutex::default(),
            grace,
            tls,
            max_message,
            bus,
            lease,
            stats: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source that serves `stream`: one implementation per kind.
    fn source(&self, stream: &StreamPlan) -> Arc<dyn Source> {
        match stream {
            StreamPlan::WebSocket { upstream, path } => Arc::new(websocket::WebSocket::new(
                upstream,
                path,
                self.max_message,
                self.tls.clone(),
            )),
        }
    }

    /// Taps `stream`, opening its connection if needed.
    pub fn tap(self: &Arc<Self>, stream: &StreamPlan) -> Tap {
        let key = stream.key();
        let mut streams = self.lock();
        if let Some(s) = streams.get(&key) {
            s.taps.fetch_add(1, Ordering::AcqRel);
            return Tap {
                rx: s.tx.subscribe(),
                stream: s.clone(),
            };
        }
        let (tx, rx) = broadcast::channel(BUFFER);
        let s = Arc::new(Stream {
            tx,
            taps: AtomicUsize::new(1),
        });
        streams.insert(key.clone(), s.clone());
        tokio::spawn(cluster::run(
            Arc::downgrade(self),
            key,
            stream.lease_name(),
            self.source(stream),
            s.clone(),
        ));
        Tap { rx, stream: s }
    }

    /// Streams this gateway holds (connected or reconnecting).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Forgets the stream if nobody taps it; `true` when it was forgotten.
    fn retire_if_idle(&self, key: &StreamKey, stream: &Arc<Stream>) -> bool {
        let mut streams = self.lock();
        if stream.taps.load(Ordering::Acquire) == 0 {
            if streams.get(key).is_some_and(|s| Arc::ptr_eq(s, stream)) {
                streams.remove(key);
            }
            true
        } else {
            false
        }
    }
}
