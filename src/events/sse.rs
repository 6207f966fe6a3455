//! The second kind of event source: an upstream Server-Sent Events stream (`@updates` /
//! `@stream` with `protocol: SSE`): `GET` at the upstream's URL and `path`, with
//! `Accept: text/event-stream`, the upstream's `headers` and the caller's values of its
//! `forwardHeaders`. Each event (`data:` lines, up to a blank line) is one message,
//! passed on as `{"event": name, "id": id, "data": data}` — `data` parsed as JSON when it
//! is JSON — so `when` can match the event's name (`when: {event: "order.created"}`) and,
//! where the envelope has no such member, the payload's; the planner puts `data` in front
//! of `select`. The last event id is sent back as `Last-Event-ID` when the stream is
//! opened again, so a service that keeps history misses nothing; what the stream feeds is
//! refetched after any reconnect anyway (a service may not). A `401`/`403` is refused for
//! good; anything else is retried.

use super::{ConnectError, Connection, Credentials, Read, Source};
use crate::plan::UpstreamPlan;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The HTTP client of event streams: `roots` trusted besides the web's, a connect
/// deadline but none on the whole exchange, TCP keep-alive.
pub fn client(roots: &crate::upstream::tls::ExtraRoots) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    roots.trusted_by(builder).build().unwrap_or_default()
}

/// One upstream SSE stream: how to open it.
pub struct Sse {
    url: url::Url,
    shown: String,
    upstream: Arc<UpstreamPlan>,
    credentials: Credentials,
    client: reqwest::Client,
    max_message: usize,
    /// The id of the last event read, across connections.
    last_id: Arc<Mutex<Option<String>>>,
}

impl Sse {
    pub fn new(
        upstream: &Arc<UpstreamPlan>,
        path: &str,
        credentials: Credentials,
        max_message: usize,
        client: reqwest::Client,
    ) -> Self {
        let url = super::at(upstream, path);
        Sse {
            shown: crate::upstream::redact(&url),
            url,
            upstream: upstream.clone(),
            credentials,
            client,
            max_message,
            last_id: Arc::default(),
        }
    }
}

impl Source for Sse {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn noun(&self) -> &'static str {
        "upstream event stream"
    }

    fn kind(&self) -> &'static str {
        "sse"
    }

    fn upstream(&self) -> &str {
        &self.upstream.name
    }

    fn guarded_by(&self) -> Option<&Arc<UpstreamPlan>> {
        Some(&self.upstream)
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, ConnectError>> {
        async move {
            let mut req = self
                .client
                .get(self.url.clone())
                .header(http::header::ACCEPT, "text/event-stream")
                .header(http::header::CACHE_CONTROL, "no-cache");
            for (k, v) in &self.upstream.headers {
                req = req.header(k, v);
            }
            for (k, v) in &self.credentials {
                req = req.header(k, v);
            }
            let last = self
                .last_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(id) = last {
                req = req.header("last-event-id", id);
            }
            let mut trace = http::HeaderMap::new();
            crate::telemetry::inject(&mut trace);
            req = req.headers(trace);
            let fail = |message: String, reason: &'static str, refused: Option<u16>| ConnectError {
                message: crate::upstream::scrub(&message, &self.url),
                reason,
                refused,
            };
            let res = match tokio::time::timeout(Duration::from_secs(10), req.send()).await {
                Err(_) => return Err(fail("no answer within 10 s".into(), "timeout", None)),
                Ok(Err(e)) => {
                    let e = e.without_url();
                    let reason = if e.is_timeout() { "timeout" } else { "network" };
                    return Err(fail(e.to_string(), reason, None));
                }
                Ok(Ok(res)) => res,
            };
            let status = res.status().as_u16();
            match status {
                401 => {
                    return Err(fail(
                        format!("answered {status}"),
                        "unauthorized",
                        Some(401),
                    ))
                }
                403 => return Err(fail(format!("answered {status}"), "forbidden", Some(403))),
                200..=299 => {}
                _ => return Err(fail(format!("answered {status}"), "status", None)),
            }
            let is_stream = res
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
            if !is_stream {
                return Err(fail(
                    "answered without Content-Type: text/event-stream".into(),
                    "protocol",
                    None,
                ));
            }
            Ok(Box::new(Open {
                res,
                url: self.url.clone(),
                parser: Parser::new(self.max_message),
                last_id: self.last_id.clone(),
            }) as Box<dyn Connection>)
        }
        .boxed()
    }
}

/// An open upstream event stream.
struct Open {
    res: reqwest::Response,
    url: url::Url,
    parser: Parser,
    last_id: Arc<Mutex<Option<String>>>,
}

impl Connection for Open {
    fn next(&mut self) -> BoxFuture<'_, Read> {
        async move {
            loop {
                match self.parser.next_event() {
                    Ok(Some(event)) => {
                        // Kept only if it can go back as a header (else every reconnect
                        // would fail on it).
                        let sendable = event.id.as_deref().filter(|id| {
                            id.len() <= 1024 && http::HeaderValue::from_str(id).is_ok()
                        });
                        if let Some(id) = sendable {
                            *self.last_id.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(id.to_string());
                        }
                        return Read::Message(event.envelope());
                    }
                    Ok(None) => {}
                    Err(()) => {
                        return Read::Dropped {
                            error: Some("an event larger than the message limit".into()),
                            too_big: true,
                        }
                    }
                }
                match self.res.chunk().await {
                    Ok(Some(bytes)) => self.parser.feed(&bytes),
                    Ok(None) => {
                        return Read::Dropped {
                            error: None,
                            too_big: false,
                        }
                    }
                    Err(e) => {
                        return Read::Dropped {
                            error: Some(crate::upstream::scrub(
                                &e.without_url().to_string(),
                                &self.url,
                            )),
                            too_big: false,
                        }
                    }
                }
            }
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Dropping the response closes its connection.
        async {}.boxed()
    }
}

/// One dispatched event.
#[derive(Debug, PartialEq)]
struct Event {
    name: Option<String>,
    id: Option<String>,
    data: String,
}

impl Event {
    /// `{"event": name, "id": id, "data": data}`, `data` as JSON when it is JSON.
    fn envelope(&self) -> String {
        let data = serde_json::from_str::<Value>(&self.data)
            .unwrap_or_else(|_| Value::String(self.data.clone()));
        let mut out = serde_json::Map::new();
        out.insert(
            "event".into(),
            Value::String(self.name.clone().unwrap_or_else(|| "message".into())),
        );
        if let Some(id) = &self.id {
            out.insert("id".into(), Value::String(id.clone()));
        }
        out.insert("data".into(), data);
        Value::Object(out).to_string()
    }
}

/// The event stream format (the HTML standard's "event stream interpretation"), read
/// incrementally and bounded: a line or an event longer than `max` bytes is an error.
struct Parser {
    buf: Vec<u8>,
    max: usize,
    name: Option<String>,
    id: Option<String>,
    data: String,
    has_data: bool,
    /// A `\r` ended the last line: a `\n` right after it belongs to it.
    after_cr: bool,
}

impl Parser {
    fn new(max: usize) -> Self {
        Parser {
            buf: Vec::new(),
            max,
            name: None,
            id: None,
            data: String::new(),
            has_data: false,
            after_cr: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event in what was fed, `Ok(None)` when more is needed.
    fn next_event(&mut self) -> Result<Option<Event>, ()> {
        loop {
            // A `\r` ended the last line: a `\n` right after it (perhaps in the next
            // chunk) belongs to it.
            if self.after_cr && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.remove(0);
                }
                self.after_cr = false;
            }
            let Some(end) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                if self.buf.len() + self.data.len() > self.max {
                    return Err(());
                }
                return Ok(None);
            };
            self.after_cr = self.buf[end] == b'\r';
            let line: Vec<u8> = self.buf.drain(..=end).take(end).collect();
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if let Some(event) = self.dispatch() {
                    return Ok(Some(event));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                    if self.data.len() > self.max {
                        return Err(());
                    }
                }
                "event" => self.name = Some(value.to_string()),
                "id" if !value.contains('\0') => self.id = Some(value.to_string()),
                _ => {}
            }
        }
    }

    fn dispatch(&mut self) -> Option<Event> {
        let name = self.name.take().filter(|n| !n.is_empty());
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(Event {
            name,
            // The last event id carries over to events that do not set one.
            id: self.id.clone().filter(|i| !i.is_empty()),
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Vec<Event> {
        let mut p = Parser::new(1 << 10);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c.as_bytes());
            while let Ok(Some(e)) = p.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn events_are_read_across_chunks_and_line_endings() {
        let got = events(&[
            ": a comment\r\nevent: order.created\r\nid: 7\r",
            "\ndata: {\"a\":\ndata: 1}\r\n\r\n",
            "data: plain\n\nid: 8\nevent\ndata\n\n",
        ]);
        assert_eq!(
            got,
            vec![
                Event {
                    name: Some("order.created".into()),
                    id: Some("7".into()),
                    data: "{\"a\":\n1}".into()
                },
                Event {
                    name: None,
                    id: Some("7".into()),
                    data: "plain".into()
                },
                Event {
                    name: None,
                    id: Some("8".into()),
                    data: "".into()
                },
            ]
        );
        assert_eq!(
            got[0].envelope(),
            r#"{"event":"order.created","id":"7","data":{"a":1}}"#
        );
        assert_eq!(
            got[1].envelope(),
            r#"{"event":"message","id":"7","data":"plain"}"#
        );
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_not_a_growing_buffer() {
        let mut p = Parser::new(16);
        p.feed(b"data: 0123456789abcdef0123456789");
        assert!(p.next_event().is_err());
        let mut p = Parser::new(16);
        p.feed(b"data: 0123456789\ndata: 0123456789\n");
        assert!(p.next_event().is_err());
    }
}
