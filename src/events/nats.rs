//! The fifth kind of event source: a NATS server (`@upstream(url: "nats://…")`,
//! `subject:` in place of `path:`). One subscription per subject on each replica — NATS
//! fans out to every subscriber itself, so no lease is taken — and a subject rendered
//! from arguments or claims (`orders.{args.id}`) filters at the server, not here. Every
//! subject of one upstream shares one client connection per process. Each message's
//! payload is one JSON text. The client's own reconnect is given one try; past
//! it the stream reconnects with the gateway's backoff (and what it feeds refetches).
//!
//! With `@stream(jetStream: "ORDERS")` the subject is read from that JetStream stream
//! through a durable pull consumer of this replica's own (named after `--replica-name`
//! and the subject, so every replica gets every message, where one shared consumer would
//! split them): each message is acknowledged once the next is asked for (it has been
//! handed on by then), so after a disconnect or a restart the replica resumes from the
//! first message it had not passed on. A new consumer starts at the stream's next
//! message; one unused for a day is removed by the server.

use super::{ConnectError, Connection, Read, Source};
use crate::plan::UpstreamPlan;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;

/// One subject on a NATS upstream.
pub struct Nats {
    upstream: Arc<UpstreamPlan>,
    subject: String,
    /// The JetStream stream and this replica's durable consumer of the subject on it.
    durable: Option<(String, String)>,
    shown: String,
    max_message: usize,
}

/// How long the server keeps a durable consumer nobody reads (a replica gone for good).
const DURABLE_UNUSED: Duration = Duration::from_secs(24 * 3600);

impl Nats {
    /// `jetstream`: the JetStream stream to read the subject from, and this replica's
    /// name.
    pub fn new(
        upstream: &Arc<UpstreamPlan>,
        (subject, shown): (&str, &str),
        jetstream: Option<(&str, &str)>,
        max_message: usize,
    ) -> Self {
        let durable = jetstream
            .map(|(stream, replica)| (stream.to_string(), consumer_name(replica, subject)));
        Nats {
            shown: match &durable {
                Some((stream, consumer)) => format!(
                    "{} subject {shown} (JetStream {stream}, consumer {consumer})",
                    crate::upstream::redact(&upstream.url)
                ),
                None => format!("{} subject {shown}", crate::upstream::redact(&upstream.url)),
            },
            upstream: upstream.clone(),
            subject: subject.to_string(),
            durable,
            max_message,
        }
    }
}

/// A durable consumer's name: the replica's name (what a consumer name may not hold —
/// `.`, `*`, `>`, spaces, anything past ASCII — made `_`) and a digest of the subject,
/// so two subjects on one stream are two consumers.
pub fn consumer_name(replica: &str, subject: &str) -> String {
    use sha2::Digest;
    let replica: String = replica
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = sha2::Sha256::digest(subject.as_bytes());
    let digest: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("livegate_{replica}_{digest}")
}

impl Source for Nats {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn noun(&self) -> &'static str {
        "nats subscription"
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    fn upstream(&self) -> &str {
        &self.upstream.name
    }

    fn leased(&self) -> bool {
        false
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, ConnectError>> {
        async move {
            let url = &self.upstream.url;
            let client = client(url)
                .await
                .map_err(|e| ConnectError::scrubbed(&e, url, "network"))?;
            if let Some((stream, consumer)) = &self.durable {
                return durable(
                    client,
                    stream,
                    consumer,
                    &self.subject,
                    url,
                    self.max_message,
                )
                .await;
            }
            let subscriber = client
                .subscribe(self.subject.clone())
                .await
                .map_err(|e| ConnectError::scrubbed(&e, url, "protocol"))?;
            // Once the server has the subscription (a round trip), it is open: a message
            // published after that is read.
            client
                .flush()
                .await
                .map_err(|e| ConnectError::scrubbed(&e, url, "network"))?;
            Ok(Box::new(Open {
                _client: client,
                subscriber,
                max: self.max_message,
            }) as Box<dyn Connection>)
        }
        .boxed()
    }
}

/// This replica's durable consumer of `subject` on the JetStream `stream`, made (or
/// its filter updated) and read.
async fn durable(
    client: async_nats::Client,
    stream: &str,
    consumer: &str,
    subject: &str,
    url: &url::Url,
    max: usize,
) -> Result<Box<dyn Connection>, ConnectError> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| ConnectError::scrubbed(&e, url, "protocol"))?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(consumer.to_string()),
            filter_subject: subject.to_string(),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            inactive_threshold: DURABLE_UNUSED,
            ..Default::default()
        })
        .await
        .map_err(|e| ConnectError::scrubbed(&e, url, "protocol"))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ConnectError::scrubbed(&e, url, "protocol"))?;
    Ok(Box::new(Durable {
        messages,
        handed: None,
        max,
    }))
}

/// The process's client of the NATS server at `url`: the one connected, or a new one
/// (one at a time: concurrent first subscriptions wait for the same connect).
async fn client(url: &url::Url) -> Result<async_nats::Client, async_nats::ConnectError> {
    use std::collections::HashMap;
    use std::sync::LazyLock;
    static CLIENTS: LazyLock<tokio::sync::Mutex<HashMap<String, async_nats::Client>>> =
        LazyLock::new(Default::default);
    let mut clients = CLIENTS.lock().await;
    if let Some(c) = clients.get(url.as_str()) {
        if c.connection_state() != async_nats::connection::State::Disconnected {
            return Ok(c.clone());
        }
    }
    let c = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .max_reconnects(1)
        .connect(url.as_str())
        .await?;
    clients.insert(url.to_string(), c.clone());
    Ok(c)
}

struct Open {
    /// Kept: the subscription lives as long as its client.
    _client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    max: usize,
}

impl Connection for Open {
    fn next(&mut self) -> BoxFuture<'_, Read> {
        async move {
            match self.subscriber.next().await {
                Some(m) => Read::payload(&m.payload, self.max),
                None => Read::Dropped {
                    error: Some("the NATS connection closed".into()),
                    too_big: false,
                },
            }
        }
        .boxed()
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let _ = self.subscriber.unsubscribe().await;
        }
        .boxed()
    }
}

struct Durable {
    messages: async_nats::jetstream::consumer::pull::Stream,
    /// The last message handed on, acknowledged when the next is asked for.
    handed: Option<async_nats::jetstream::Message>,
    max: usize,
}

impl Durable {
    async fn acknowledge(&mut self) {
        if let Some(m) = &self.handed {
            // Not acknowledged (the connection dropped): the server sends it again.
            // Forgotten only once acknowledged, should this future be dropped midway.
            let _ = m.ack().await;
            self.handed = None;
        }
    }
}

impl Connection for Durable {
    fn next(&mut self) -> BoxFuture<'_, Read> {
        async move {
            self.acknowledge().await;
            match self.messages.next().await {
                Some(Ok(m)) => {
                    let read = Read::payload(&m.payload, self.max);
                    // An unreadable message is acknowledged too: sent again, it would
                    // be as unreadable.
                    self.handed = Some(m);
                    read
                }
                Some(Err(e)) => Read::Dropped {
                    error: Some(format!("the JetStream consumer failed: {:?}", e.kind())),
                    too_big: false,
                },
                None => Read::Dropped {
                    error: Some("the NATS connection closed".into()),
                    too_big: false,
                },
            }
        }
        .boxed()
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        async move { self.acknowledge().await }.boxed()
    }
}
