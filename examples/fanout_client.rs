//! The client of `scripts/memory`: as lean as the kernel floor's own client
//! (`bench/fanout_floor.c`), so that what it measures is the server, not the client.
//! (The Node client it replaces parsed every message as JSON: at 100,000 subscriptions its
//! own ~3 µs per message was most of what it measured.)
//!
//! Opens N connections, each with PER `messageAdded(channel: "general")` subscriptions:
//! graphql-transport-ws sockets to `ws://…` or, to `http://…`, SSE streams POSTed there
//! (graphql-sse's distinct connections mode, one subscription each). Prints `ready` once
//! every subscription is sent (and 1.5 s have passed for the server to register them);
//! then, on a line on stdin, sends a `sendMessage` mutation over one more socket, ROUNDS
//! times (each once the previous event reached every subscription), and prints, as JSON,
//! when the event reached the 1st, median and last subscription (the median of the
//! rounds), in ms from the mutation's send.
//!
//! Arrivals are read like the floor reads them: one clock reading per `epoll_wait`, every
//! ready socket read at once; a subscription's arrival is the read that holds its `next`
//! message (found by its marker in the bytes, not parsed).
//!
//!   fanout_client N URL [ROUNDS=5] [PER=1]

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const QUERY: &str = r#"subscription { messageAdded(channel: \"general\") { id text } }"#;
const MUTATION: &str = r#"mutation { sendMessage(channel: \"general\", text: \"hello\") { id } }"#;

fn fail(what: String) -> ! {
    eprintln!("fanout_client: {what}");
    std::process::exit(1)
}

/// A client WebSocket text frame (masked with a zero key, which leaves the payload as is).
fn ws_frame(text: &str) -> Vec<u8> {
    let len = text.len();
    let mut out = vec![0x81];
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(text.as_bytes());
    out
}

/// Reads until the end of an HTTP response head; returns the head and what followed it.
fn read_head(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            fail("the server closed a connection during its handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(at + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
    }
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    sse: bool,
}

fn parse(url: &str) -> Target {
    let (sse, rest) = match url.split_once("://") {
        Some(("ws", rest)) => (false, rest),
        Some(("http", rest)) => (true, rest),
        _ => fail(format!(
            "{url}: want ws://host:port/path or http://host:port/path"
        )),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host
        .parse()
        .unwrap_or_else(|_| fail(format!("{host}: want an IP address and a port")));
    Target {
        addr,
        host: host.to_string(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        sse,
    }
}

/// A graphql-transport-ws socket, acknowledged.
fn websocket(t: &Target) -> (std::net::TcpStream, Vec<u8>) {
    let mut s =
        std::net::TcpStream::connect(t.addr).unwrap_or_else(|e| fail(format!("connect: {e}")));
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
        t.path, t.host
    );
    let _ = s.write_all(req.as_bytes());
    let (head, mut rest) = read_head(&mut s);
    if !head.starts_with("HTTP/1.1 101") {
        fail(format!("no upgrade: {}", head.lines().next().unwrap_or("")));
    }
    let _ = s.write_all(&ws_frame(r#"{"type":"connection_init"}"#));
    let mut chunk = [0u8; 4096];
    while !rest.windows(14).any(|w| w == b"connection_ack") {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            fail("the server closed a socket before connection_ack".into());
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    (s, Vec::new())
}

/// What one subscriber's connection has read: SSE bytes are scanned for the marker of a
/// `next` event; WebSocket frames are parsed (a server's are unmasked), so that a ping
/// (graphql-ws's server pings every 12 s and drops sockets that do not answer) gets its
/// pong and a `next` message is counted once.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    sse: bool,
}

const SSE_MARKER: &[u8] = b"event: next";
const WS_MARKER: &[u8] = br#""type":"next""#;

impl Conn {
    /// Reads what is ready; how many `next` messages it completed. A read that does not
    /// fill `chunk` has drained the socket (epoll reports new data as a new edge), so,
    /// like the floor's client, one read per ready socket is the rule.
    fn read(&mut self, chunk: &mut [u8]) -> usize {
        let mut got = 0;
        loop {
            match self.stream.read(chunk) {
                Ok(0) => fail("the server closed a subscriber".into()),
                Ok(k) => {
                    self.buf.extend_from_slice(&chunk[..k]);
                    got += if self.sse { self.scan() } else { self.frames() };
                    if k < chunk.len() {
                        return got;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return got,
                Err(e) => fail(format!("read: {e}")),
            }
        }
    }

    fn scan(&mut self) -> usize {
        let n = self
            .buf
            .windows(SSE_MARKER.len())
            .filter(|w| *w == SSE_MARKER)
            .count();
        let keep = self.buf.len().min(SSE_MARKER.len() - 1);
        self.buf.drain(..self.buf.len() - keep);
        n
    }

    fn frames(&mut self) -> usize {
        let mut got = 0;
        let mut at = 0;
        while self.buf.len() - at >= 2 {
            let b = &self.buf[at..];
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(n) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if b.len() < head + len {
                break;
            }
            let payload = &b[head..head + len];
            match b[0] & 0x0f {
                0x1 | 0x0 => {
                    got += payload.windows(WS_MARKER.len()).any(|w| w == WS_MARKER) as usize
                }
                0x9 => {
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(payload);
                    let _ = self.stream.write_all(&pong);
                }
                0x8 => fail("the server closed a subscriber's socket".into()),
                _ => {}
            }
            at += head + len;
        }
        self.buf.drain(..at);
        got
    }
}

/// Reads every connection `poll` says is ready: how many `next` messages arrived, and
/// when (the clock read once, as `epoll_wait` returns, as the floor does).
fn serve(
    poll: &mut Poll,
    events: &mut Events,
    conns: &mut [Conn],
    wait: Duration,
) -> (usize, Instant) {
    if let Err(e) = poll.poll(events, Some(wait)) {
        fail(format!("epoll: {e}"));
    }
    let at = Instant::now();
    let mut chunk = [0u8; 1 << 16];
    let got = events
        .iter()
        .map(|ev| conns[ev.token().0].read(&mut chunk))
        .sum();
    (got, at)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let target = parse(
        args.get(2)
            .map_or("ws://127.0.0.1:4000/graphql", String::as_str),
    );
    let rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let per: usize = if target.sse {
        1
    } else {
        args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1)
    };
    let total = n * per;
    let mut poll = Poll::new().unwrap_or_else(|e| fail(format!("epoll: {e}")));
    let mut events = Events::with_capacity(512);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let s = if target.sse {
            let mut s = std::net::TcpStream::connect(target.addr)
                .unwrap_or_else(|e| fail(format!("connect: {e}")));
            let body = format!(r#"{{"query":"{QUERY}"}}"#);
            let req = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Accept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
                target.path,
                target.host,
                body.len()
            );
            let _ = s.write_all(req.as_bytes());
            let (head, _) = read_head(&mut s);
            if !head.starts_with("HTTP/1.1 200") {
                fail(format!("SSE: {}", head.lines().next().unwrap_or("")));
            }
            s
        } else {
            let (mut s, _) = websocket(&target);
            for id in 0..per {
                let msg = format!(
                    r#"{{"id":"{id}","type":"subscribe","payload":{{"query":"{QUERY}"}}}}"#
                );
                let _ = s.write_all(&ws_frame(&msg));
            }
            s
        };
        let _ = s.set_nonblocking(true);
        let mut s = TcpStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .unwrap_or_else(|e| fail(format!("epoll: {e}")));
        conns.push(Conn {
            stream: s,
            buf: Vec::new(),
            sse: target.sse,
        });
        // What arrives while subscribing is read (and pings answered) as it comes.
        if i % 64 == 0 {
            serve(&mut poll, &mut events, &mut conns, Duration::ZERO);
        }
    }
    let ready = Instant::now() + Duration::from_millis(1500);
    while let Some(left) = ready.checked_duration_since(Instant::now()) {
        serve(&mut poll, &mut events, &mut conns, left);
    }
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);

    let (mut sender, _) = websocket(&Target {
        sse: false,
        path: target.path.replace("/stream", ""),
        ..target
    });
    let mut results = Vec::new();
    let mut arrivals = Vec::with_capacity(total);
    for round in 0..rounds {
        arrivals.clear();
        let msg =
            format!(r#"{{"id":"m{round}","type":"subscribe","payload":{{"query":"{MUTATION}"}}}}"#);
        let frame = ws_frame(&msg);
        let sent = Instant::now();
        let _ = sender.write_all(&frame);
        while arrivals.len() < total {
            let (got, at) = serve(&mut poll, &mut events, &mut conns, Duration::from_secs(30));
            if events.is_empty() {
                fail(format!("only {} of {total} got the event", arrivals.len()));
            }
            let at = at.duration_since(sent).as_secs_f64() * 1e3;
            arrivals.extend(std::iter::repeat_n(at, got));
        }
        arrivals.sort_by(f64::total_cmp);
        results.push([arrivals[0], arrivals[total / 2], arrivals[total - 1]]);
        // The mutation's own answer on the sender's socket is read and dropped.
        let _ = sender.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = sender.read(&mut [0u8; 4096]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let mid = |k: usize| {
        let mut col: Vec<f64> = results.iter().map(|r| r[k]).collect();
        col.sort_by(f64::total_cmp);
        (col[col.len() / 2] * 10.0).round() / 10.0
    };
    println!(
        r#"{{"first":{},"median":{},"last":{}}}"#,
        mid(0),
        mid(1),
        mid(2)
    );
}
