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

/// KEYS: a tag's set of entries, its generation. Moves the generation (no lookup takes an
/// entry fetched before it any more, wherever it is) and empties the set; the entries it
/// named, for the caller to delete.
pub(super) const DROP_TAG: &str = r#"
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 604800000)
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return members
"#;

/// KEYS: the stream, the "everything changed" count; ARGV: maxlen, stream TTL, `all` (or
/// empty), then the message's fields and values. Appends the message (after moving the
/// count, when everything changed: that drops the whole second level).
pub(super) const ANNOUNCE: &str = r#"
if ARGV[3] == 'all' then
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], 604800000)
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
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

    /// Invalidates `tags` for every replica: each tag's generation moves (on its own
    /// slot; all tags at once), the entries filed under them are deleted, and only then is
    /// the message appended to the stream. `kind` `all`: everything changed.
    pub(super) async fn publish(&self, tags: &[Tag], kind: &'static str) -> bool {
        let dropped = tags.iter().map(|t| {
            let (set, generation) = self.tag_keys(t);
            let mut drop = self.drop_tag.prepare_invoke();
            drop.key(set).key(generation);
            async move {
                self.call("invalidate tag", |mut c| async move {
                    drop.invoke_async::<Vec<String>>(&mut c).await
                })
                .await
            }
        });
        let mut entries = Vec::new();
        for d in futures_util::future::join_all(dropped).await {
            let Some(names) = d else {
                return false;
            };
            entries.extend(names);
        }
        // Only memory: a lookup already refuses them. Split by slot over a cluster.
        for chunk in entries.chunks(256) {
            let _: Option<i64> = self
                .call("drop entries", |mut c| async move {
                    redis::cmd("DEL").arg(chunk).query_async(&mut c).await
                })
                .await;
        }
        let names: Vec<&str> = tags.iter().map(|t| &*t.0).collect();
        let names = json!(names).to_string();
        let trace = crate::telemetry::current_span_context()
            .map(|cx| crate::telemetry::traceparent(&cx))
            .unwrap_or_default();
        let sent = self
            .announce(kind, &[("tags", names.as_str()), ("tp", trace.as_str())])
            .await;
        self.published(
            sent,
            if kind == "all" {
                "everything"
            } else {
                "invalidation"
            },
        );
        sent
    }

    /// Appends a message of `kind` (`inv`, `all`, `key`, `hook`) with `fields` to the
    /// invalidation stream; whether Redis took it.
    pub(super) async fn announce(&self, kind: &str, fields: &[(&str, &str)]) -> bool {
        let mut announce = self.announce.prepare_invoke();
        announce
            .key(self.key("inv"))
            .key(self.key("all"))
            .arg(10_000)
            .arg(STREAM_TTL_MS)
            .arg(kind)
            .arg("v")
            .arg(FORMAT)
            .arg("o")
            .arg(&self.origin)
            .arg("k")
            .arg(kind);
        for (name, value) in fields {
            announce.arg(name).arg(value);
        }
        let sent: Option<String> = self
            .call("announce", |mut c| async move {
                announce.invoke_async(&mut c).await
            })
            .await;
        sent.is_some()
    }
}

impl RedisBus {
    /// Appends a `@webhook` delivery to the stream every replica reads (the body is
    /// bounded by `--webhook-max-body`).
    pub async fn publish_delivery(&self, name: &str, body: &str) {
        let sent = self
            .announce("hook", &[("name", name), ("body", body)])
            .await;
        self.published(sent, "delivery");
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
        let mut conn = match this.dedicated(Duration::from_secs(5)).await {
            Some(c) => c,
            None => {
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
