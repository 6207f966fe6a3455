//! Connection limits. Long-lived connections (WebSocket and SSE): at most
//! `max_connections` in all, and `max_connections_per_ip` from one client address; one over
//! a limit is refused with `503` and a JSON reason before it is upgraded or streamed.
//! TCP connections (whatever they carry): at most `max_tcp_connections` and
//! `max_tcp_connections_per_ip`; one over a limit gets a `503` and is closed at accept.
//! Either way the others are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_operations_per_connection: usize,
    /// Operations one WebSocket may start per second (a token bucket of this size).
    pub max_operations_per_second: u32,
    /// A WebSocket with no running operation and no message for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Aliases in one document.
    pub max_aliases: usize,
    /// Root fields in one operation.
    pub max_root_fields: usize,
    /// TCP connections of any kind, in all and from one client address.
    pub max_tcp_connections: usize,
    pub max_tcp_connections_per_ip: usize,
    /// How long an HTTP/1 connection may take to send a request's headers, counted from
    /// when the server waits for them: also how long an idle keep-alive connection stays.
    pub header_timeout: std::time::Duration,
}

/// A pair of connection limits and the flags that set them.
pub struct Cap {
    pub total: usize,
    pub per_ip: usize,
    pub flags: (&'static str, &'static str),
}

impl Limits {
    /// The limits on WebSocket and SSE connections.
    pub fn long_lived(&self) -> Cap {
        Cap {
            total: self.max_connections,
            per_ip: self.max_connections_per_ip,
            flags: ("--max-connections", "--max-connections-per-ip"),
        }
    }

    /// The limits on TCP connections.
    pub fn tcp(&self) -> Cap {
        Cap {
            total: self.max_tcp_connections,
            per_ip: self.max_tcp_connections_per_ip,
            flags: ("--max-tcp-connections", "--max-tcp-connections-per-ip"),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_operations_per_connection: 100,
            max_operations_per_second: 50,
            idle_timeout: std::time::Duration::from_secs(300),
            max_aliases: 30,
            max_root_fields: 20,
            max_tcp_connections: 20_000,
            max_tcp_connections_per_ip: 2_000,
            header_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// A token bucket: `rate` tokens a second, holding at most `rate`.
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            tokens: rate,
            at: tokio::time::Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Who holds how many connections (one of these per kind of limit).
#[derive(Clone, Default)]
pub struct Connections {
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; gives its place back when dropped.
pub struct Admitted {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    /// Admits a connection from `ip`, or says which limit it is over.
    pub fn admit(&self, ip: IpAddr, cap: Cap) -> Result<Admitted, String> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= cap.total {
            return Err(format!(
                "too many connections: the gateway holds {} ({})",
                cap.total, cap.flags.0
            ));
        }
        let mine = c.by_ip.get(&ip).copied().unwrap_or(0);
        if mine >= cap.per_ip {
            return Err(format!(
                "too many connections from {ip}: {} at most ({})",
                cap.per_ip, cap.flags.1
            ));
        }
        c.total += 1;
        *c.by_ip.entry(ip).or_default() += 1;
        Ok(Admitted {
            counts: self.counts.clone(),
            ip,
        })
    }
}
