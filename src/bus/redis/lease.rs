//! Leases (`{p lease:<name>}`, and its generation `…g` in the same slot): who holds an
//! event source's connection or a poller, with a generation as fencing token; and what a
//! holder republishes (`{p ev:<name>}`), read by the followers as [`Events`].

use super::*;

/// The largest upstream socket message copied into Redis for the followers (each event
/// stream keeps about 100): beyond it they are told to refetch instead.
pub(super) const MAX_EVENT: usize = 1 << 20;

/// KEYS: lease, its generation counter; ARGV: holder, TTL ms. Takes a free lease (with
/// the next generation) or renews one this holder has; its generation, or 0 when another
/// replica holds it. The lease's value is `<holder>:<generation>`.
pub(super) const LEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  local g = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], 604800000)
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. g, 'PX', ARGV[2])
  return g
end
local holder, g = string.match(v, '^(.*):(%d+)$')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], 604800000)
  return tonumber(g)
end
return 0
"#;

/// KEYS: lease; ARGV: holder. Deletes the lease if this holder has it.
pub(super) const RELEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl RedisBus {
    /// Takes or renews the lease `name`: its generation while this replica holds it, 0
    /// while another does, `None` when Redis does not answer.
    pub async fn lease(&self, name: &str, ttl: Duration) -> Option<u64> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut lease = self.lease.prepare_invoke();
        lease
            .key(self.key_in(&format!("lease:{name}"), ""))
            .key(self.key_in(&format!("lease:{name}"), "g"))
            .arg(&self.origin)
            .arg(ttl_ms);
        let generation: u64 = self
            .call(
                "lease",
                |mut c| async move { lease.invoke_async(&mut c).await },
            )
            .await?;
        let held = generation > 0;
        let taken = held && !self.leases().contains(name);
        if held {
            self.leases().insert(name.to_string());
        } else {
            self.leases().remove(name);
        }
        if taken {
            let event = if generation > 1 {
                "takeover"
            } else {
                "acquired"
            };
            self.metrics.leases.with_label_values(&[event]).inc();
        }
        Some(generation)
    }

    /// Republishes one upstream socket message; one over [`MAX_EVENT`] bytes is not
    /// copied into Redis: the followers get a gap marker (an empty message) and refetch.
    pub async fn publish_event(&self, name: &str, generation: u64, message: &str) {
        let message = if message.len() > MAX_EVENT {
            ""
        } else {
            message
        };
        let stream = self.key_in(&format!("ev:{name}"), "");
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(100)
            .arg("*")
            .arg("v")
            .arg(FORMAT)
            .arg("g")
            .arg(generation)
            .arg("m")
            .arg(message)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&stream)
            .arg(STREAM_TTL_MS)
            .ignore();
        let sent: Option<()> = self
            .call("publish event", |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await;
        self.published(sent.is_some(), "event");
    }

    /// A reader of the events of `name`, from the stream's end now.
    pub async fn events(self: &Arc<Self>, name: &str) -> Option<Events> {
        let mut conn = self.dedicated(Duration::from_secs(5)).await?;
        let stream = self.key_in(&format!("ev:{name}"), "");
        let newest: Option<String> = {
            let read: redis::RedisResult<redis::streams::StreamRangeReply> =
                redis::cmd("XREVRANGE")
                    .arg(&stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await;
            read.ok().map(|r| {
                r.ids
                    .first()
                    .map(|e| e.id.clone())
                    .unwrap_or_else(|| "0-0".into())
            })
        };
        Some(Events {
            bus: self.clone(),
            conn,
            stream,
            from: newest?,
        })
    }

    pub(super) fn leases(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn release(&self, name: &str) {
        if !self.leases().remove(name) {
            return;
        }
        let mut release = self.release.prepare_invoke();
        release
            .key(self.key_in(&format!("lease:{name}"), ""))
            .arg(&self.origin);
        let _: Option<i64> = self
            .call("lease release", |mut c| async move {
                release.invoke_async(&mut c).await
            })
            .await;
    }
}

/// The messages an upstream socket's holder republishes, read by a replica that follows.
pub struct Events {
    bus: Arc<RedisBus>,
    conn: Conn,
    stream: String,
    from: String,
}

impl Events {
    /// The next messages (waiting up to a second): each with the generation of the
    /// holder that sent it. `Err` when Redis did not answer.
    pub async fn next(&mut self) -> Result<Vec<(u64, Option<Arc<Value>>)>, ()> {
        use redis::AsyncCommands;
        let opts = redis::streams::StreamReadOptions::default()
            .block(1_000)
            .count(32);
        let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> = self
            .conn
            .xread_options(&[&self.stream], &[&self.from], &opts)
            .await;
        let reply = read.map_err(|e| {
            tracing::debug!(error = %e, "redis event stream read failed");
        })?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                self.from = entry.id.clone();
                let field = |name: &str| {
                    entry
                        .map
                        .get(name)
                        .and_then(|v| redis::from_redis_value::<String>(v).ok())
                };
                let decoded = (field("v").as_deref() == Some(FORMAT))
                    .then(|| {
                        let generation = field("g")?.parse::<u64>().ok()?;
                        let message = field("m")?;
                        if message.is_empty() {
                            return Some((generation, None));
                        }
                        let message = serde_json::from_str::<Value>(&message).ok()?;
                        Some((generation, Some(Arc::new(message))))
                    })
                    .flatten();
                match decoded {
                    Some(m) => {
                        self.bus
                            .metrics
                            .bus_messages
                            .with_label_values(&["received", "event"])
                            .inc();
                        out.push(m);
                    }
                    None => self
                        .bus
                        .metrics
                        .bus_skipped
                        .with_label_values(&["event"])
                        .inc(),
                }
            }
        }
        Ok(out)
    }
}
