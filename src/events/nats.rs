//! The fifth kind of event source: a NATS server (`@upstream(url: "nats://…")`,
//! `subject:` in place of `path:`). One subscription per subject on each replica — NATS
//! fans out to every subscriber itself, so no lease is taken — and a subject rendered
//! from arguments or claims (`orders.{args.id}`) filters at the server, not here. Every
//! subject of one upstream shares one client connection per process. Each message's
//! payload is one JSON text. The client's own reconnect is given one try; past
//! it the stream reconnects with the gateway's backoff (and what it feeds refetches).

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
    shown: String,
    max_message: usize,
}

impl Nats {
    pub fn new(upstream: &Arc<UpstreamPlan>, subject: &str, max_message: usize) -> Self {
        Nats {
            shown: format!(
                "{} subject {subject}",
                crate::upstream::redact(&upstream.url)
            ),
            upstream: upstream.clone(),
            subject: subject.to_string(),
            max_message,
        }
    }
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
                Some(m) if m.payload.len() > self.max => Read::Unreadable,
                Some(m) => match String::from_utf8(m.payload.to_vec()) {
                    Ok(text) => Read::Message(text),
                    Err(_) => Read::Unreadable,
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
        async move {
            let _ = self.subscriber.unsubscribe().await;
        }
        .boxed()
    }
}
