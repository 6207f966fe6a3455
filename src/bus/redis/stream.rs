//! The invalidation stream (`{p}inv`): publishing tags (or "everything"), what could not
//! be published while Redis was down, and the reader that applies other replicas'
//! invalidations here.

use super::*;

/// The format of what this version writes to Redis; other versions' messages are skipped.
pub(super) const FORMAT: &str = "1";

/// Invalidations made while Redis was down, published when it is back: the tags, up to
/// [`Unsent::MAX`]; past that, only that everything changed.
#[derive(Default)]
pub(super) struct Unsent {
    tags: std::collections::BTreeSet<Tag>,
    everything: bool,
}

impl Unsent {
    const MAX: usize = 10_000;

    pub(super) fn is_empty(&self) -> bool {
        self.tags.is_empty() && !self.everything
    }

    pub(super) fn add(&mut self, tags: &[Tag]) {
        if self.everything {
            return;
        }
        self.tags.extend(tags.iter().cloned());
        if self.tags.len() > Self::MAX {
            self.tags.clear();
            self.everything = true;
        }
    }
}

/// How long the invalidation stream lives after its last entry.
pub(super) const STREAM_TTL_MS: u64 = 24 * 3600 * 1000;

/// KEYS: gen, stream, all, tag sets…; ARGV: maxlen, origin, tags JSON, stream TTL, format,
/// kind (`inv`, or `all` when everything changed, which also drops the second level).
/// Drops the second-level entries of every tag, bumps the generation, then appends the
/// message: a replica that hears it cannot find the old value any more.
pub(super) const INVALIDATE: &str = r#"
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 604800000)
for i = 4, #KEYS do
  local members = redis.call('ZRANGE', KEYS[i], 0, -1)
  for _, k in ipairs(members) do redis.call('DEL', k) end
  redis.call('DEL', KEYS[i])
end
if ARGV[6] == 'all' then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 604800000)
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[5], 'o', ARGV[2], 'k', ARGV[6], 'tags', ARGV[3], 'tp', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return id
"#;

impl RedisBus {
    /// Publishes `tags` (dropping their second-level entries first); if Redis does not
    /// take it, the tags wait in [`Unsent`] for the reconnect.
    pub async fn publish_invalidation(&self, tags: &[Tag]) {
        self.flush_unsent().await;
        if !self.publish(tags, "inv").await {
            self.unsent().add(tags);
        }
    }

    /// Counts a message this replica got onto a stream.
    pub(super) fn published(&self, sent: bool, kind: &str) {
        if sent {
            self.metrics
                .bus_messages
                .with_label_values(&["published", kind])
                .inc();
        }
    }

    pub(super) fn unsent(&self) -> std::sync::MutexGuard<'_, Unsent> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes what could not be published while Redis was down: the tags, or — when
    /// there were too many to remember — that everything changed.
    pub(super) async fn flush_unsent(&self) {
        let (tags, everything) = {
            let mut u = self.unsent();
            if u.tags.is_empty() && !u.everything {
                return;
            }
            (
                std::mem::take(&mut u.tags),
                std::mem::take(&mut u.everything),
            )
        };
        let tags: Vec<Tag> = tags.into_iter().collect();
        let sent = if everything {
            self.publish(&[], "all").await
        } else {
            self.publish(&tags, "inv").await
        };
        if !sent {
            let mut u = self.unsent();
            u.add(&tags);
            u.everything |= everything;
        }
    }

    pub(super) async fn publish(&self, tags: &[Tag], kind: &'static str) -> bool {
        let mut inv = self.invalidate.prepare_invoke();
        inv.key(self.key("gen"))
            .key(self.key("inv"))
            .key(self.key("all"));
        for t in tags {
            inv.key(self.key(&format!("t:{t}")));
        }
        let names: Vec<&str> = tags.iter().map(|t| &*t.0).collect();
        inv.arg(10_000)
            .arg(&self.origin)
            .arg(json!(names).to_string())
            .arg(STREAM_TTL_MS)
            .arg(FORMAT)
            .arg(kind)
            .arg(
                crate::telemetry::current_span_context()
                    .map(|cx| crate::telemetry::traceparent(&cx))
                    .unwrap_or_default(),
            );
        let sent: Option<String> = self
            .call("publish invalidation", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await;
        self.published(
            sent.is_some(),
            if kind == "all" {
                "everything"
            } else {
                "invalidation"
            },
        );
        sent.is_some()
    }
}

impl RedisBus {
    /// Appends a `@webhook` delivery to the stream every replica reads (the body is
    /// bounded by `--webhook-max-body`).
    pub async fn publish_delivery(&self, name: &str, body: &str) {
        let stream = self.key("inv");
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg("v")
            .arg(FORMAT)
            .arg("o")
            .arg(&self.origin)
            .arg("k")
            .arg("hook")
            .arg("name")
            .arg(name)
            .arg("body")
            .arg(body);
        let sent: Option<String> = self
            .call("publish delivery", |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await;
        self.published(sent.is_some(), "delivery");
    }
}

/// Reads the invalidation stream for as long as the bus lives, from the last id seen.
pub(super) async fn read_stream(
    bus: std::sync::Weak<RedisBus>,
    remote: mpsc::UnboundedSender<crate::bus::Heard>,
) {
    // The last entry read, and how many entries the stream had up to it (its position).
    let mut last: Option<String> = None;
    let mut position: u64 = 0;
    let mut backoff = Duration::from_millis(100);
    // Whether this replica ran without Redis before it first reached it: what it cached
    // meanwhile may have missed other replicas' invalidations.
    let mut degraded_start = false;
    loop {
        let Some(this) = bus.upgrade() else { return };
        let stream = this.key("inv");
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(this.options.timeout)
            .set_response_timeout(Duration::from_secs(5));
        let connected = tokio::time::timeout(
            this.options.timeout * 2,
            this.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let mut conn = match connected {
            Ok(Ok(c)) => c,
            _ => {
                this.set_up(false);
                degraded_start |= last.is_none();
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Where to read from, and whether anything was lost while we were away.
        let exists: redis::RedisResult<i64> = redis::cmd("EXISTS")
            .arg(&stream)
            .query_async(&mut conn)
            .await;
        let info: redis::RedisResult<Option<redis::Value>> = match exists {
            Ok(0) => Ok(None),
            Ok(_) => redis::cmd("XINFO")
                .arg("STREAM")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .map(Some),
            Err(e) => Err(e),
        };
        // The stream's newest id, how many entries were ever added, how many are left.
        let (newest, added, length) = match &info {
            Ok(Some(v)) => {
                let number = |name| info_field(v, name).and_then(|n| n.parse::<u64>().ok());
                (
                    info_field(v, "last-generated-id").unwrap_or_else(|| "0-0".into()),
                    // Redis 7 and later; without it losses cannot be told, and are not assumed.
                    number("entries-added"),
                    number("length").unwrap_or(0),
                )
            }
            // No stream (never written, expired, or a new Redis): nothing in it.
            Ok(None) => ("0-0".into(), Some(0), 0),
            Err(e) => {
                tracing::debug!(error = %e, "redis stream position unknown");
                this.set_up(false);
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        this.set_up(true);
        backoff = Duration::from_millis(100);
        // What this replica could not say while Redis was away.
        this.flush_unsent().await;
        // Entries are trimmed oldest first: if more were deleted than we had read up to,
        // some we never read are gone; fewer ever added than we read means a new stream.
        let lost = match (&last, added) {
            (Some(_), Some(added)) => added < position || added.saturating_sub(length) > position,
            (None, _) => degraded_start,
            (Some(_), None) => false,
        };
        let added = added.unwrap_or(position);
        if last.is_none() || lost {
            if lost {
                tracing::warn!("invalidations were lost while cut off from redis: dropping every local entry and re-running every live query");
                this.metrics
                    .bus_messages
                    .with_label_values(&["received", "everything"])
                    .inc();
                if remote.send((Remote::Everything, None)).is_err() {
                    return;
                }
            }
            last = Some(newest.clone());
            position = added;
        }
        // Read until the connection fails.
        loop {
            // Retried every read (at most a second apart) until Redis takes it.
            this.flush_unsent().await;
            let from = last.clone().unwrap_or_else(|| "0-0".into());
            let opts = redis::streams::StreamReadOptions::default()
                .block(1_000)
                .count(256);
            let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> = {
                use redis::AsyncCommands;
                conn.xread_options(&[&stream], &[&from], &opts).await
            };
            let reply = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "redis stream read failed");
                    this.set_up(false);
                    tokio::time::sleep(backoff).await;
                    break;
                }
            };
            this.set_up(true);
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    last = Some(entry.id.clone());
                    position += 1;
                    match decode_message(&entry.map) {
                        Some((origin, _, _)) if origin == this.origin => {}
                        Some((_, said, trace)) => {
                            let label = match said {
                                Remote::Tags(_) => "invalidation",
                                Remote::Everything => "everything",
                                Remote::Changed(_) => "changed",
                                Remote::Delivery { .. } => "delivery",
                            };
                            this.metrics
                                .bus_messages
                                .with_label_values(&["received", label])
                                .inc();
                            if remote.send((said, trace)).is_err() {
                                return;
                            }
                        }
                        None => {
                            this.metrics
                                .bus_skipped
                                .with_label_values(&["invalidation"])
                                .inc();
                            tracing::debug!(id = entry.id, "skipped a malformed or unknown-format message on the invalidation stream");
                        }
                    }
                }
            }
        }
    }
}

/// An invalidation message's origin, what it says, and the change it belongs to (a
/// `traceparent`, when the replica that sent it traces), if it is one in our format.
pub(super) fn decode_message(
    map: &std::collections::HashMap<String, redis::Value>,
) -> Option<(String, Remote, Option<opentelemetry::trace::SpanContext>)> {
    let field = |name: &str| {
        map.get(name)
            .and_then(|v| redis::from_redis_value::<String>(v).ok())
    };
    if field("v")? != FORMAT {
        return None;
    }
    let origin = field("o")?;
    let trace = field("tp").and_then(|t| crate::telemetry::from_traceparent(&t));
    let said = match field("k")?.as_str() {
        "inv" => {
            let tags: Vec<String> = serde_json::from_str(&field("tags")?).ok()?;
            let tags = tags.iter().map(|t| Tag::from(t.as_str())).collect();
            Remote::Tags(tags)
        }
        "all" => Remote::Everything,
        "hook" => Remote::Delivery {
            name: field("name")?,
            body: field("body")?,
        },
        "key" => {
            let keys: Vec<String> = serde_json::from_str(&field("keys")?).ok()?;
            let keys = keys
                .iter()
                .map(|k| CacheKey::from_hex(k))
                .collect::<Option<Vec<_>>>()?;
            Remote::Changed(keys)
        }
        _ => return None,
    };
    Some((origin, said, trace))
}
