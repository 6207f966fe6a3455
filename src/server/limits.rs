//! Connection limits for long-lived connections (WebSocket and SSE): at most
//! `max_connections` in all, and `max_connections_per_ip` from one client address. A
//! connection over a limit is refused with `503` and a JSON reason before it is upgraded
//! or streamed; the others are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_operations_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 10_000, max_connections_per_ip: 1_000, max_operations_per_connection: 100 }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Who holds how many long-lived connections.
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
    pub fn admit(&self, ip: IpAddr, limits: &Limits) -> Result<Admitted, String> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= limits.max_connections {
            return Err(format!("too many connections: the gateway holds {} (--max-connections)", limits.max_connections));
        }
        let mine = c.by_ip.get(&ip).copied().unwrap_or(0);
        if mine >= limits.max_connections_per_ip {
            return Err(format!("too many connections from {ip}: {} at most (--max-connections-per-ip)", limits.max_connections_per_ip));
        }
        c.total += 1;
        *c.by_ip.entry(ip).or_default() += 1;
        Ok(Admitted { counts: self.counts.clone(), ip })
    }
}
