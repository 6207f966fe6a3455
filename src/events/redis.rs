//! The fourth kind of event source: a Redis server that services already publish to
//! (`@upstream(url: "redis://…")`, on a connection of its own, apart from livegate's bus
//! keys). `channel:` subscribes to a `PUBLISH` channel, each message one JSON text;
//! `stream:` reads a Stream with `XREAD BLOCK` from the last id read (new entries from
//! the first connection on; after a reconnect, from where it stopped, so nothing added
//! meanwhile is missed while Redis keeps it), each entry passed on as
//! `{"id": entry id, field: value…}`, a value parsed as JSON when it is JSON. Redis fans
//! out to every subscriber itself, so each replica reads for itself: no lease.

use super::{ConnectError, Connection, Read, Source};
use crate::plan::{RedisKind, UpstreamPlan};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One channel or Stream on a Redis upstream.
pub struct Redis {
    upstream: Arc<UpstreamPlan>,
    name: String,
    kind: RedisKind,
    shown: String,
    max_message: usize,
    /// A Stream's last entry id read, across connections.
    last_id: Arc<Mutex<String>>,
}

impl Redis {
    pub fn new(
        upstream: &Arc<UpstreamPlan>,
        (name, shown): (&str, &str),
        kind: RedisKind,
        max_message: usize,
    ) -> Self {
        let what = match kind {
            RedisKind::Channel => "channel",
            RedisKind::Stream => "stream",
        };
        Redis {
            shown: format!("{} {what} {shown}", crate::upstream::redact(&upstream.url)),
            upstream: upstream.clone(),
            name: name.to_string(),
            kind,
            max_message,
            last_id: Arc::new(Mutex::new("$".into())),
        }
    }

    fn fail(&self, e: &redis::RedisError) -> ConnectError {
        let reason = if e.is_timeout() {
            "timeout"
        } else if e.is_io_error() || e.is_connection_refusal() {
            "network"
        } else {
            "protocol"
        };
        ConnectError::scrubbed(e, &self.upstream.url, reason)
    }
}

impl Source for Redis {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn noun(&self) -> &'static str {
        "redis source"
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn upstream(&self) -> &str {
        &self.upstream.name
    }

    fn leased(&self) -> bool {
        false
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, ConnectError>> {
        async move {
            let client =
                redis::Client::open(self.upstream.url.as_str()).map_err(|e| self.fail(&e))?;
            let deadline = Duration::from_secs(10);
            let timed_out = || ConnectError {
                message: "Redis did not answer within 10 s".into(),
                reason: "timeout",
                refused: None,
            };
            match self.kind {
                RedisKind::Channel => {
                    let subscribed = async {
                        let mut pubsub = client.get_async_pubsub().await?;
                        pubsub.subscribe(&self.name).await?;
                        Ok::<_, redis::RedisError>(pubsub)
                    };
                    let pubsub = tokio::time::timeout(deadline, subscribed)
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| self.fail(&e))?;
                    Ok(Box::new(Channel {
                        messages: Box::pin(pubsub.into_on_message()),
                        max: self.max_message,
                    }) as Box<dyn Connection>)
                }
                RedisKind::Stream => {
                    let mut conn =
                        tokio::time::timeout(deadline, client.get_multiplexed_async_connection())
                            .await
                            .map_err(|_| timed_out())?
                            .map_err(|e| self.fail(&e))?;
                    // The first connection reads what is added from now on: the newest id
                    // now (not `$`, which would miss an entry added before the first read).
                    let first = self
                        .last_id
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        == "$";
                    if first {
                        let newest: Vec<(String, redis::Value)> = tokio::time::timeout(
                            deadline,
                            redis::cmd("XREVRANGE")
                                .arg(&self.name)
                                .arg("+")
                                .arg("-")
                                .arg("COUNT")
                                .arg(1)
                                .query_async(&mut conn),
                        )
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| self.fail(&e))?;
                        let id = newest
                            .first()
                            .map_or("0-0".to_string(), |(id, _)| id.clone());
                        *self.last_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
                    }
                    Ok(Box::new(Stream {
                        conn,
                        key: self.name.clone(),
                        last_id: self.last_id.clone(),
                        pending: VecDeque::new(),
                        url: self.upstream.url.clone(),
                        max: self.max_message,
                    }) as Box<dyn Connection>)
                }
            }
        }
        .boxed()
    }
}

struct Channel {
    messages: std::pin::Pin<Box<redis::aio::PubSubStream>>,
    max: usize,
}

impl Connection for Channel {
    fn next(&mut self) -> BoxFuture<'_, Read> {
        async move {
            match self.messages.next().await {
                Some(msg) => match msg.get_payload::<String>() {
                    Ok(text) if text.len() <= self.max => Read::Message(text),
                    _ => Read::Unreadable,
                },
                None => Read::Dropped {
                    error: Some("the subscription connection closed".into()),
                    too_big: false,
                },
            }
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
}

struct Stream {
    conn: redis::aio::MultiplexedConnection,
    key: String,
    last_id: Arc<Mutex<String>>,
    pending: VecDeque<String>,
    url: url::Url,
    max: usize,
}

/// A Stream entry's fields as the message passed on.
fn entry(id: &str, fields: &redis::Value) -> Option<String> {
    let pairs: Vec<(String, String)> = redis::from_redis_value(fields).ok()?;
    let mut out = serde_json::Map::new();
    out.insert("id".into(), Value::String(id.to_string()));
    for (k, v) in pairs {
        let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
        out.insert(k, value);
    }
    Some(Value::Object(out).to_string())
}

impl Connection for Stream {
    fn next(&mut self) -> BoxFuture<'_, Read> {
        async move {
            loop {
                if let Some(text) = self.pending.pop_front() {
                    if text.len() > self.max {
                        return Read::Unreadable;
                    }
                    return Read::Message(text);
                }
                let from = self
                    .last_id
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let read: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(100)
                    .arg("BLOCK")
                    .arg(5_000)
                    .arg("STREAMS")
                    .arg(&self.key)
                    .arg(&from)
                    .query_async(&mut self.conn)
                    .await;
                let reply = match read {
                    Ok(v) => v,
                    Err(e) => {
                        return Read::Dropped {
                            error: Some(crate::upstream::scrub(&e.to_string(), &self.url)),
                            too_big: false,
                        }
                    }
                };
                // [[key, [[id, [field, value, …]], …]]], or nil when the block timed out.
                let streams: Vec<(String, Vec<(String, redis::Value)>)> =
                    redis::from_redis_value(&reply).unwrap_or_default();
                for (_, entries) in streams {
                    for (id, fields) in entries {
                        *self.last_id.lock().unwrap_or_else(|p| p.into_inner()) = id.clone();
                        match entry(&id, &fields) {
                            Some(text) => self.pending.push_back(text),
                            None => return Read::Unreadable,
                        }
                    }
                }
            }
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
}
