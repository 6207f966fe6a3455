//! The first kind of event source: an upstream WebSocket (`@updates` / `@stream` with
//! `upstream:` and `path:`). The socket's URL is the upstream's, its scheme made `ws` or
//! `wss`; the upstream's `headers` go with the handshake, and so do the caller's values of
//! its `forwardHeaders` (a per-caller socket, see [`super::Sources::tap`]); a message is
//! one JSON text (a binary frame holding UTF-8 JSON is read the same); pings are answered
//! here. A handshake answered 401 or 403 is refused for good (the stream ends with an
//! error); any other failure is retried.

use super::{ConnectError, Connection, Credentials, Read, Source};
use crate::plan::UpstreamPlan;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One upstream WebSocket stream: how to open it.
pub struct WebSocket {
    url: url::Url,
    /// What log lines show of the URL: no userinfo, no query.
    shown: String,
    upstream: std::sync::Arc<UpstreamPlan>,
    /// The caller's forwarded headers (empty: a socket every caller shares).
    credentials: Credentials,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    tls: Option<tokio_tungstenite::Connector>,
}

impl WebSocket {
    /// The socket at `path` on `upstream`, opened with `credentials`, its messages (and
    /// frames) at most `max_message` bytes, over `tls` when extra roots are configured.
    pub fn new(
        upstream: &std::sync::Arc<UpstreamPlan>,
        path: &str,
        credentials: Credentials,
        max_message: usize,
        tls: Option<tokio_tungstenite::Connector>,
    ) -> Self {
        let url = url(upstream, path);
        WebSocket {
            shown: crate::upstream::redact(&url),
            url,
            upstream: upstream.clone(),
            credentials,
            config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .max_message_size(Some(max_message))
                .max_frame_size(Some(max_message)),
            tls,
        }
    }
}

/// The socket's URL: the upstream's, with `ws`/`wss` and `path` after the upstream's own.
fn url(upstream: &UpstreamPlan, path: &str) -> url::Url {
    let mut url = super::at(upstream, path);
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let _ = url.set_scheme(scheme);
    url
}

impl Source for WebSocket {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn noun(&self) -> &'static str {
        "upstream socket"
    }

    fn kind(&self) -> &'static str {
        "websocket"
    }

    fn upstream(&self) -> &str {
        &self.upstream.name
    }

    fn guarded_by(&self) -> Option<&std::sync::Arc<UpstreamPlan>> {
        Some(&self.upstream)
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, ConnectError>> {
        async move {
            let scrub =
                |e: &dyn std::fmt::Display| crate::upstream::scrub(&e.to_string(), &self.url);
            let mut request =
                self.url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| ConnectError {
                        message: scrub(&e),
                        reason: "protocol",
                        refused: None,
                    })?;
            for (k, v) in &self.upstream.headers {
                request.headers_mut().insert(k.clone(), v.clone());
            }
            // The handshake's own headers are the client library's to set.
            let own = |n: &http::HeaderName| {
                n == http::header::HOST || n.as_str().starts_with("sec-websocket-")
            };
            for (k, v) in self.credentials.iter().filter(|(k, _)| !own(k)) {
                request.headers_mut().append(k.clone(), v.clone());
            }
            // The connect's span (`source.connect`) goes on with the handshake.
            crate::telemetry::inject(request.headers_mut());
            let connect = tokio_tungstenite::connect_async_tls_with_config(
                request,
                Some(self.config),
                false,
                self.tls.clone(),
            );
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok((ws, _))) => Ok(Box::new(Open {
                    ws,
                    url: self.url.clone(),
                }) as Box<dyn Connection>),
                Ok(Err(e)) => Err(refusal(&e, scrub(&e))),
                Err(_) => Err(ConnectError {
                    message: "the handshake timed out".into(),
                    reason: "timeout",
                    refused: None,
                }),
            }
        }
        .boxed()
    }
}

/// What a failed handshake's error says: its metric reason, and whether the upstream
/// refused the credentials (401/403).
fn refusal(e: &tokio_tungstenite::tungstenite::Error, message: String) -> ConnectError {
    use tokio_tungstenite::tungstenite::Error;
    let (reason, refused) = match e {
        Error::Http(response) => match response.status().as_u16() {
            401 => ("unauthorized", Some(401)),
            403 => ("forbidden", Some(403)),
            _ => ("status", None),
        },
        Error::Io(_) | Error::ConnectionClosed | Error::AlreadyClosed => ("network", None),
        Error::Tls(_) => ("tls", None),
        _ => ("protocol", None),
    };
    ConnectError {
        message,
        reason,
        refused,
    }
}

/// An open upstream socket.
struct Open {
    ws: WsStream,
    /// To scrub its secrets from the errors it reports.
    url: url::Url,
}

impl Connection for Open {
    fn next(&mut self) -> BoxFuture<'_, Read> {
        async move {
            loop {
                return match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => Read::Message(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                        Ok(text) => Read::Message(text),
                        Err(_) => Read::Unreadable,
                    },
                    Some(Ok(Message::Ping(p))) => {
                        let _ = self.ws.send(Message::Pong(p)).await;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        // A message over the size limit, a protocol error, a reset.
                        let too_big =
                            matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_));
                        Read::Dropped {
                            error: Some(crate::upstream::scrub(&e.to_string(), &self.url)),
                            too_big,
                        }
                    }
                    None => Read::Dropped {
                        error: None,
                        too_big: false,
                    },
                };
            }
        }
        .boxed()
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let _ = self.ws.close(None).await;
        }
        .boxed()
    }
}
