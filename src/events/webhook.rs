//! The third kind of event source: a `@webhook` receiver's deliveries (`@updates` /
//! `@stream` with `webhook:`). Nothing is connected to: the receiver
//! ([`crate::server`]'s hooks) hands each accepted delivery to [`super::Sources::deliver`],
//! and every open "connection" of the hook reads it from a broadcast. Deliveries reach a
//! replica directly or, with Redis, from the replica that received them (see
//! [`crate::bus::Remote::Delivery`]); so a hook's stream is every replica's own: no lease.

use super::{ConnectError, Connection, Read, Source};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;
use tokio::sync::broadcast;

/// A receiver's deliveries, as a source.
pub struct Webhook {
    shown: String,
    deliveries: broadcast::Sender<Arc<str>>,
}

impl Webhook {
    pub fn new(name: &str, deliveries: broadcast::Sender<Arc<str>>) -> Self {
        Webhook {
            shown: format!("webhook {name}"),
            deliveries,
        }
    }
}

impl Source for Webhook {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn noun(&self) -> &'static str {
        "webhook receiver"
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn upstream(&self) -> &str {
        &self.shown
    }

    fn leased(&self) -> bool {
        false
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, ConnectError>> {
        let rx = self.deliveries.subscribe();
        async move { Ok(Box::new(Open { rx }) as Box<dyn Connection>) }.boxed()
    }
}

struct Open {
    rx: broadcast::Receiver<Arc<str>>,
}

impl Connection for Open {
    fn next(&mut self) -> BoxFuture<'_, Read> {
        async move {
            match self.rx.recv().await {
                Ok(body) => Read::Message(body.to_string()),
                // Fell behind a burst of deliveries: the rest goes on (and what the
                // stream feeds refetches, as after any gap).
                Err(broadcast::error::RecvError::Lagged(_)) => Read::Dropped {
                    error: Some("deliveries came faster than they were read".into()),
                    too_big: false,
                },
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
}
