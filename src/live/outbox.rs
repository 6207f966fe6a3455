//! What one client connection (a WebSocket, an SSE stream) has yet to be sent: a bounded
//! queue that the connection's writer drains and that subscriptions push into directly,
//! from whichever task ran the change — a subscription holds no task of its own.
//!
//! The queue's bytes are bounded (`--max-queued-bytes`); what happens when a client does
//! not read depends on what is queued:
//! - a live query's result replaces the one of the same operation still waiting
//!   (conflation: the client gets the latest, and memory stays bounded);
//! - an event pushes out the oldest queued events (of any operation of the connection),
//!   counted in `livegate_events_dropped_total` and logged;
//! - anything else (acknowledgements, a query's result, errors, `complete`) waits for
//!   room ([`Outbox::push_wait`]): the reader that sends it stops reading meanwhile.
//!
//! A frame is a small head and tail around a shared body: subscribers of one change share
//! the body's bytes ([`Bytes`]); only the head (the operation id) is theirs.
//!
//! A connection whose transport writes its socket itself (a WebSocket over HTTP/1.1) may
//! lend the socket to the outbox ([`Outbox::write_directly`]): a change pushed while
//! nothing is queued or being written is then framed and written by the pushing task at
//! once, with one non-blocking `send`, instead of being queued for the writer task and
//! waking it (the rest of a frame the socket cut short is queued, framed, for the writer;
//! the frames it did not reach are queued as any others).
//! On a runtime of one worker that saves each connection a wake-up, a poll of its writer
//! and the frames' queueing; on several, the writers woken run on the other workers while
//! the topic pushes on, so the topic does not write itself (see [`crate::live::topic`]).

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// One message for the client.
pub enum Frame {
    /// `head` + `body` + `tail`, written as one message.
    Parts {
        head: Arc<str>,
        body: Bytes,
        tail: &'static str,
    },
    /// A message of its own.
    Text(String),
    /// Close the connection (a WebSocket close frame with this code and reason).
    Close(u16, String),
    /// Bytes already framed for the wire (a WebSocket library's own pong or close reply,
    /// when the writer writes the socket itself).
    Raw(Bytes),
    /// The rest of a frame a direct write left cut short (framed for the wire): written
    /// as it is, before anything queued after it.
    Rest(Bytes),
    /// The subscription `tag` has ended: the transport forgets it (its last messages were
    /// queued before this). Not written.
    Ended(u64),
}

impl Frame {
    pub fn len(&self) -> usize {
        match self {
            Frame::Parts { head, body, tail } => head.len() + body.len() + tail.len(),
            Frame::Text(s) => s.len(),
            Frame::Close(_, reason) => reason.len() + 2,
            Frame::Raw(b) | Frame::Rest(b) => b.len(),
            Frame::Ended(_) => 0,
        }
    }

    /// Appends the message's bytes to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Parts { head, body, tail } => {
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(body);
                out.extend_from_slice(tail.as_bytes());
            }
            Frame::Text(s) | Frame::Close(_, s) => out.extend_from_slice(s.as_bytes()),
            Frame::Raw(b) | Frame::Rest(b) => out.extend_from_slice(b),
            Frame::Ended(_) => {}
        }
    }

    /// The message as one string (a `Text` is handed over, not copied). A body that is
    /// not UTF-8 (never the case for the JSON the executor writes) is replaced lossily
    /// rather than sent broken.
    pub fn into_text(self) -> String {
        match self {
            Frame::Text(s) | Frame::Close(_, s) => s,
            other => {
                let mut bytes = Vec::with_capacity(other.len());
                other.append_to(&mut bytes);
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Waits for room; never dropped.
    Ordered,
    /// A live query's result: replaced by a newer one of the same subscription.
    Live(u64),
    /// An event: dropped (oldest first) when the queue is full.
    Event(u64),
}

struct Queued {
    kind: Kind,
    frame: Frame,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Queued>,
    bytes: usize,
    /// The writer holds frames it has taken and not yet written: nobody else writes.
    writing: bool,
    /// The socket, when its transport lends it (until the connection ends).
    direct: Option<Box<dyn Direct>>,
    /// Nothing more is sent: the queue is dropped, pushes are refused.
    closed: bool,
    /// Nothing more is queued, but what is queued is still sent.
    finishing: bool,
}

/// The most bytes one push frames for one connection to write itself; a larger change
/// is queued for the writer (the push's buffer stays small, and so does what it copies
/// when the socket takes only part).
pub const DIRECT_MAX: usize = 64 << 10;

/// A push's buffer for the direct writes of many connections, reused between them.
#[derive(Default)]
pub struct Scratch {
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
}

/// Frames `parts` around `body` into `scratch` and writes them to `socket` at once: how
/// many frames were handled (written whole, or cut short), and the rest of the one cut
/// short. `None` (nothing written) when they would be more than [`DIRECT_MAX`] bytes.
fn write_now<'a>(
    socket: &dyn Direct,
    body: &Bytes,
    parts: impl Iterator<Item = (u64, &'a Arc<str>, &'static str)>,
    scratch: &mut Scratch,
) -> Option<(usize, Option<Bytes>)> {
    let Scratch { bytes, ends } = scratch;
    bytes.clear();
    ends.clear();
    for (_, head, tail) in parts {
        let len = head.len() + body.len() + tail.len();
        if bytes.len() + len > DIRECT_MAX {
            return None;
        }
        socket.frame_head(len, bytes);
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(tail.as_bytes());
        ends.push(bytes.len());
    }
    // An error: nothing taken; the writer meets it on its next write and closes.
    let sent = socket.try_write(bytes).unwrap_or(0).min(bytes.len());
    let whole = ends.iter().take_while(|&&end| end <= sent).count();
    let start = whole.checked_sub(1).map_or(0, |i| ends[i]);
    match ends.get(whole) {
        Some(&end) if sent > start => {
            Some((whole + 1, Some(Bytes::copy_from_slice(&bytes[sent..end]))))
        }
        _ => Some((whole, None)),
    }
}

/// A connection's socket, lent to the pushing tasks ([`Outbox::write_directly`]).
pub trait Direct: Send + Sync {
    /// Appends the transport's framing that goes before a message of `len` bytes.
    fn frame_head(&self, len: usize, out: &mut Vec<u8>);
    /// Writes what the socket takes now, without waiting (`WouldBlock` when nothing).
    fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize>;
}

pub struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer (one permit: any number of pushes, one wake-up).
    ready: Notify,
    /// Wakes pushers waiting for room.
    room: Notify,
    max_bytes: usize,
    /// `livegate_events_dropped_total`.
    dropped: prometheus::IntCounter,
}

impl Outbox {
    pub fn new(max_bytes: usize, dropped: prometheus::IntCounter) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::default(),
            ready: Notify::new(),
            room: Notify::new(),
            max_bytes: max_bytes.max(1),
            dropped,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lends the connection's socket: from now on a push finding nothing queued and the
    /// writer idle writes the socket itself ([`Outbox::push_parts`] with `direct`). The
    /// writer must then call [`Outbox::written`] after each round it writes.
    pub fn write_directly(&self, socket: Box<dyn Direct>) {
        let mut q = self.lock();
        if !q.closed && !q.finishing {
            q.direct = Some(socket);
        }
    }

    /// The writer has written what it took last: pushes may write the socket again.
    pub fn written(&self) {
        self.lock().writing = false;
    }

    /// Nothing more will be queued: the writer sends what is queued, then [`Outbox::take`]
    /// returns empty.
    pub fn finish(&self) {
        let mut q = self.lock();
        q.finishing = true;
        // Nothing more is pushed: the socket is the writer's alone again.
        q.direct = None;
        drop(q);
        self.room.notify_waiters();
        self.ready.notify_one();
    }

    /// The connection is gone: pushes are refused from now on, and waiting ones give up.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.items.clear();
        q.bytes = 0;
        q.direct = None;
        drop(q);
        self.room.notify_waiters();
        self.ready.notify_one();
    }

    /// Queues `frame` once there is room for it (a frame bigger than the whole budget
    /// waits for an empty queue); `false` once the connection is gone.
    pub async fn push_wait(&self, frame: Frame) -> bool {
        let need = frame.len();
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let q = self.lock();
                if q.closed || q.finishing {
                    return false;
                }
                if q.items.is_empty() || q.bytes + need <= self.max_bytes {
                    self.enqueue(q, [frame]);
                    return true;
                }
            }
            room.await;
        }
    }

    /// Queues a live query's result for subscription `tag`, replacing one of the same
    /// subscription still waiting; `false` once the connection is gone.
    pub fn push_live(&self, tag: u64, frame: Frame) -> bool {
        self.push_all(true, [(tag, frame)])
    }

    /// Queues an event for subscription `tag`, dropping the oldest queued events while
    /// the queue is over its budget; `false` once the connection is gone.
    pub fn push_event(&self, tag: u64, frame: Frame) -> bool {
        self.push_all(false, [(tag, frame)])
    }

    /// Queues the frames of one change for several subscriptions of this connection at
    /// once — live results (`live`, each replacing its subscription's waiting one) or
    /// events (dropping the oldest past the budget) — under one lock, with one wake-up of
    /// the writer, which then writes them in one round; `false` once the connection is
    /// gone.
    pub fn push_all(&self, live: bool, frames: impl IntoIterator<Item = (u64, Frame)>) -> bool {
        let q = self.lock();
        if q.closed || q.finishing {
            return false;
        }
        self.queue_all(q, live, frames);
        true
    }

    /// Pushes one change's `body` to several subscriptions of this connection, each
    /// `(tag, head, tail)` framing it, as [`Outbox::push_all`] does (a live result when
    /// `live`, else an event), except that with `direct`, on a lent socket, while nothing
    /// is queued and the writer is idle, the frames (up to [`DIRECT_MAX`] bytes of them)
    /// are framed into `scratch` and written to the socket at once: the rest of a frame
    /// the socket cut short is queued, framed, for the writer, and the frames it did not
    /// reach are queued as usual (a live result still replaced by a newer one, an event
    /// still dropped first). `false` once the connection is gone.
    pub fn push_parts<'a>(
        &self,
        (live, direct): (bool, bool),
        body: &Bytes,
        parts: impl Iterator<Item = (u64, &'a Arc<str>, &'static str)> + Clone,
        scratch: &mut Scratch,
    ) -> bool {
        let mut q = self.lock();
        if q.closed || q.finishing {
            return false;
        }
        let mut done = 0;
        let mut rest = None;
        if direct && q.items.is_empty() && !q.writing {
            if let Some(socket) = q.direct.as_deref() {
                // Written under the lock (the write does not wait): no other push, nor
                // the writer, can write between these bytes.
                if let Some((whole, cut)) = write_now(socket, body, parts.clone(), scratch) {
                    done = whole;
                    rest = cut;
                }
            }
        }
        let woke = rest.is_some();
        if let Some(rest) = rest {
            q.bytes += rest.len();
            q.items.push_back(Queued {
                kind: Kind::Ordered,
                frame: Frame::Rest(rest),
            });
        }
        let frames = parts.skip(done).map(|(tag, head, tail)| {
            let frame = Frame::Parts {
                head: head.clone(),
                body: body.clone(),
                tail,
            };
            (tag, frame)
        });
        self.queue_all(q, live, frames);
        if woke {
            self.ready.notify_one();
        }
        true
    }

    /// Queues `frames` in order under the lock `q`, and wakes the writer.
    fn enqueue(&self, mut q: MutexGuard<'_, Queue>, frames: impl IntoIterator<Item = Frame>) {
        for frame in frames {
            q.bytes += frame.len();
            q.items.push_back(Queued {
                kind: Kind::Ordered,
                frame,
            });
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Queues `frames` (as [`Outbox::push_all`]) under the lock `q` of an open queue.
    fn queue_all(
        &self,
        mut q: MutexGuard<'_, Queue>,
        live: bool,
        frames: impl IntoIterator<Item = (u64, Frame)>,
    ) {
        let mut dropped = 0u64;
        let mut added = false;
        for (tag, frame) in frames {
            let need = frame.len();
            if live {
                if let Some(old) = q.items.iter_mut().find(|i| i.kind == Kind::Live(tag)) {
                    let was = old.frame.len();
                    old.frame = frame;
                    q.bytes = q.bytes - was + need;
                    continue;
                }
            } else {
                while q.bytes + need > self.max_bytes {
                    let Some(at) = q
                        .items
                        .iter()
                        .position(|i| matches!(i.kind, Kind::Event(_)))
                    else {
                        break;
                    };
                    if let Some(old) = q.items.remove(at) {
                        q.bytes -= old.frame.len();
                        dropped += 1;
                    }
                }
            }
            q.bytes += need;
            let kind = if live {
                Kind::Live(tag)
            } else {
                Kind::Event(tag)
            };
            q.items.push_back(Queued { kind, frame });
            added = true;
        }
        drop(q);
        if dropped > 0 {
            self.dropped.inc_by(dropped);
            tracing::warn!(
                lost = dropped,
                "a client reads too slowly: its oldest queued events were dropped"
            );
        }
        if added {
            self.ready.notify_one();
        }
    }

    /// Queues a subscription's last message (if any) and [`Frame::Ended`] after it, room or
    /// not (once per subscription, so bounded by the connection's operations).
    pub fn push_final(&self, last: Option<Frame>, tag: u64) {
        self.push_now(last.into_iter().chain([Frame::Ended(tag)]));
    }

    /// Queues bytes framed elsewhere (in order with everything else) if they fit in the
    /// budget; `false` when they do not or the connection is gone (a client that floods
    /// pings without reading the pongs is then cut off, not given memory without bound).
    pub fn push_raw(&self, bytes: Bytes) -> bool {
        let q = self.lock();
        // Still taken while finishing: a close handshake's reply comes after the last
        // message is queued.
        if q.closed || q.bytes + bytes.len() > self.max_bytes {
            return false;
        }
        self.enqueue(q, [Frame::Raw(bytes)]);
        true
    }

    /// Queues `frames` at once, room or not: for what is sent once per operation or per
    /// connection (its end, a close frame), so bounded by them.
    pub fn push_now(&self, frames: impl IntoIterator<Item = Frame>) {
        let q = self.lock();
        if q.closed || q.finishing {
            return;
        }
        self.enqueue(q, frames);
    }

    /// Waits for queued frames and takes them, up to `max_bytes` of them (at least one,
    /// and a [`Frame::Ended`] always with the frame before it); empty once the connection
    /// is closed.
    pub async fn take(&self, max_bytes: usize) -> Vec<Frame> {
        loop {
            {
                let mut q = self.lock();
                if q.closed || (q.finishing && q.items.is_empty()) {
                    return Vec::new();
                }
                if !q.items.is_empty() {
                    let mut out = Vec::new();
                    let mut taken = 0;
                    while let Some(next) = q.items.front() {
                        let len = next.frame.len();
                        if len > 0 && !out.is_empty() && taken + len > max_bytes {
                            break;
                        }
                        taken += len;
                        if let Some(item) = q.items.pop_front() {
                            out.push(item.frame);
                        }
                    }
                    q.bytes -= taken;
                    q.writing = true;
                    if q.items.is_empty() {
                        // An idle connection keeps no room for a queue it no longer has.
                        q.items = VecDeque::new();
                    }
                    drop(q);
                    self.room.notify_waiters();
                    return out;
                }
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("dropped", "dropped").expect("a valid counter")
    }

    /// Everything queued, as text.
    async fn texts(out: &Outbox) -> Vec<String> {
        out.take(usize::MAX)
            .await
            .into_iter()
            .map(Frame::into_text)
            .collect()
    }

    fn parts(body: &'static str) -> Frame {
        Frame::Parts {
            head: Arc::from("<"),
            body: Bytes::from_static(body.as_bytes()),
            tail: ">",
        }
    }

    /// A socket that takes `room` bytes (then nothing) and keeps what it took.
    struct Socket {
        room: Arc<Mutex<usize>>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Direct for Socket {
        fn frame_head(&self, len: usize, out: &mut Vec<u8>) {
            out.extend_from_slice(format!("{len}:").as_bytes());
        }
        fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut room = self.room.lock().expect("not poisoned");
            if *room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(*room);
            *room -= n;
            self.got
                .lock()
                .expect("not poisoned")
                .extend_from_slice(&bytes[..n]);
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_push_writes_an_idle_socket_itself_and_queues_what_it_does_not_take_in_order() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let room = Arc::new(Mutex::new(12));
        let out = Outbox::new(1 << 20, counter());
        out.write_directly(Box::new(Socket {
            room: room.clone(),
            got: got.clone(),
        }));
        let written = || got.lock().expect("not poisoned").clone();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("<a "), Arc::from("<b "));
        let (x, y) = (Bytes::from_static(b"x"), Bytes::from_static(b"y"));
        let mut scratch = Scratch::default();
        let both = || [(1, &a, ">"), (2, &b, ">")].into_iter();
        // Not direct (a runtime of several workers): queued for the writer.
        assert!(out.push_parts((false, false), &x, both(), &mut scratch));
        assert_eq!(texts(&out).await, ["<a x>", "<b x>"]);
        // While the writer writes what it took, nobody else writes the socket.
        assert!(out.push_parts((false, true), &x, both(), &mut scratch));
        assert!(written().is_empty());
        assert_eq!(texts(&out).await, ["<a x>", "<b x>"]);
        out.written();
        // Idle: written at once, as far as the socket takes; the rest of the frame it cut
        // is queued, framed, and what comes next waits behind it.
        assert!(out.push_parts((true, true), &x, both(), &mut scratch));
        assert_eq!(written(), b"5:<a x>5:<b ");
        assert!(out.push_parts((true, true), &y, both(), &mut scratch));
        assert_eq!(texts(&out).await, ["x>", "<a y>", "<b y>"]);
        out.written();
        // A socket that takes nothing: the frames are queued as any others, so a newer
        // live result still replaces a waiting one.
        assert!(out.push_parts((true, true), &x, both(), &mut scratch));
        assert!(out.push_parts((true, true), &y, both(), &mut scratch));
        assert_eq!(texts(&out).await, ["<a y>", "<b y>"]);
        out.written();
        // More than DIRECT_MAX for one connection is the writer's to write.
        *room.lock().expect("not poisoned") = usize::MAX;
        let big = Bytes::from(vec![b'z'; DIRECT_MAX]);
        assert!(out.push_parts((false, true), &big, both(), &mut scratch));
        assert_eq!(written().len(), 12, "nothing more written");
        assert_eq!(texts(&out).await.len(), 2);
        out.written();
        // A closed connection takes nothing, and lets its socket go.
        out.close();
        assert!(!out.push_parts((false, true), &x, both(), &mut scratch));
        assert!(out.lock().direct.is_none());
    }

    #[tokio::test]
    async fn live_results_conflate_and_events_drop_oldest() {
        let dropped = counter();
        let out = Outbox::new(10, dropped.clone());
        assert!(out.push_live(1, parts("a")));
        assert!(out.push_live(1, parts("b")));
        assert!(out.push_live(2, parts("c")));
        let got = texts(&out).await;
        assert_eq!(got, ["<b>", "<c>"]);

        for body in ["1", "2", "3", "4", "5"] {
            assert!(out.push_event(7, parts(body)));
        }
        let got = texts(&out).await;
        assert_eq!(got, ["<3>", "<4>", "<5>"]);
        assert_eq!(dropped.get(), 2);
    }

    #[tokio::test]
    async fn ordered_frames_wait_for_room_and_give_up_on_close() {
        let out = Outbox::new(4, counter());
        assert!(out.push_wait(Frame::Text("abc".into())).await);
        let waiting = {
            let out = out.clone();
            tokio::spawn(async move { out.push_wait(Frame::Text("def".into())).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(out.take(1).await.len(), 1);
        assert!(waiting.await.expect("joins"));
        let blocked = {
            let out = out.clone();
            tokio::spawn(async move { out.push_wait(Frame::Text("ghi".into())).await })
        };
        tokio::task::yield_now().await;
        out.close();
        assert!(!blocked.await.expect("joins"));
        assert!(out.take(10).await.is_empty());
        assert!(!out.push_live(1, parts("x")));
    }
}
