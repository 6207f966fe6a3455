//! Results streamed over one HTTP response, in two formats:
//!
//! - **Server-Sent Events**, graphql-sse's distinct connections mode: a request with
//!   `Accept: text/event-stream` (POST body or GET parameters, as for plain HTTP) gets an
//!   event stream of `next` events, then `complete`. Errors found before execution are a
//!   `next` event too (a 4xx would leave an `EventSource` with no reason). A comment line
//!   every 15 s keeps proxies from timing it out.
//! - **Apollo's multipart HTTP subscriptions**: a subscription with
//!   `Accept: multipart/mixed;subscriptionSpec=1.0` gets `multipart/mixed;boundary=graphql;subscriptionSpec=1.0`,
//!   a part `{"payload": result}` per result, a heartbeat part `{}` every 5 s, and the
//!   closing boundary at the end.
//!
//! A live query streams until the client closes the connection.

use super::AppState;
use crate::live::{self, Frame, Outbox};
use crate::request::RequestContext;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

pub use super::accept::Format;

/// The streaming format `headers` ask for, if any: SSE, or Apollo's multipart
/// subscriptions (`multipart/mixed` with a `subscriptionSpec`; `multipart/mixed` for
/// `@defer` alone is not a subscription transport).
pub fn wanted(headers: &HeaderMap) -> Option<Format> {
    super::accept::negotiate(headers).stream_format()
}

/// Unquoted, as Apollo Router writes it: clients such as Python's `gql` look for
/// `boundary=graphql` and `subscriptionSpec=1.0` literally.
const MULTIPART_TYPE: &str = "multipart/mixed;boundary=graphql;subscriptionSpec=1.0";
/// The delimiter that ends each multipart part (and, first of all, the preamble): a
/// reader hands a part on when the delimiter after it arrives.
const DELIMITER: &str = "\r\n--graphql";
const PART_HEAD: &str = "\r\ncontent-type: application/json\r\n\r\n";
const COMPLETE: &[u8] = b"event: complete\ndata: \n\n";

impl Format {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Format::Sse => "text/event-stream; charset=utf-8",
            Format::Multipart => MULTIPART_TYPE,
        })
    }

    /// What the body starts with.
    fn start(self) -> Bytes {
        match self {
            Format::Sse => Bytes::new(),
            Format::Multipart => Bytes::from_static(DELIMITER.as_bytes()),
        }
    }

    /// What the body ends with, however the stream ends.
    fn end(self) -> Bytes {
        match self {
            Format::Sse => Bytes::from_static(COMPLETE),
            Format::Multipart => Bytes::from_static(b"--\r\n"),
        }
    }

    /// The error a stream ends with when its token runs out.
    fn expired(self) -> Bytes {
        let errors = expired_errors();
        Bytes::from(match self {
            Format::Sse => format!(
                "event: next\ndata: {}\n\n",
                serde_json::json!({ "errors": errors })
            ),
            Format::Multipart => format!(
                "{PART_HEAD}{}{DELIMITER}",
                serde_json::json!({"payload": null, "errors": errors})
            ),
        })
    }

    /// The keep-alive written while nothing else is, and how often.
    fn keep_alive(self) -> (Duration, Bytes) {
        match self {
            Format::Sse => (
                Duration::from_secs(15),
                Bytes::from_static(b": keep-alive\n\n"),
            ),
            Format::Multipart => (
                Duration::from_secs(5),
                Bytes::from(format!("{PART_HEAD}{{}}{DELIMITER}")),
            ),
        }
    }

    fn framing(self) -> Arc<dyn live::Framing> {
        Arc::new(match self {
            Format::Sse => Framed {
                head: Arc::from("event: next\ndata: "),
                tail: "\n\n",
                transport: "sse",
            },
            Format::Multipart => Framed {
                head: Arc::from(format!("{PART_HEAD}{{\"payload\":")),
                tail: "}\r\n--graphql",
                transport: "multipart",
            },
        })
    }

    /// One result, the whole body.
    fn once(self, body: &[u8]) -> Bytes {
        let framing = self.framing();
        let mut out = self.start().to_vec();
        live::Framing::next(&*framing, &Bytes::copy_from_slice(body)).append_to(&mut out);
        out.extend_from_slice(&self.end());
        Bytes::from(out)
    }
}

/// Each result (a request error too) between a head and a tail; the stream's end is
/// written when it ends, however it ends.
struct Framed {
    head: Arc<str>,
    tail: &'static str,
    transport: &'static str,
}

impl live::Framing for Framed {
    fn parts(&self) -> (&Arc<str>, &'static str) {
        (&self.head, self.tail)
    }

    fn failure(&self, body: &Bytes) -> Frame {
        self.next(body)
    }

    fn complete(&self) -> Option<Frame> {
        None
    }

    fn transport(&self) -> &'static str {
        self.transport
    }
}

/// Bytes of queued results written to the response in one chunk, at most.
const BATCH: usize = 64 << 10;

/// Streams `req`'s results in `format`. A query or mutation gets its one result.
pub async fn respond(
    state: AppState,
    req: async_graphql::Request,
    // Kept for the stream's life: a copy that does not hold hyper's read buffer.
    ctx: RequestContext,
    admitted: super::limits::Admitted,
    format: Format,
) -> Response {
    let outbox = Outbox::new(
        state.ws.max_queued_bytes,
        state.runtime.metrics.events_dropped.clone(),
    );
    let subscriber = live::Subscriber {
        outbox: outbox.clone(),
        framing: format.framing(),
        tag: 1,
    };
    let until = deadline(&state, &ctx);
    let started = live::start(state.engine(), state.topics.clone(), req, ctx, subscriber).await;
    let body: BoxStream<'static, Bytes> = match started {
        live::Started::Refused(body) => stream::iter([format.once(&body)]).boxed(),
        live::Started::Once(done) => stream::iter([format.once(&done.body)]).boxed(),
        live::Started::Subscribed(place) => frames(
            &state,
            outbox,
            (Some(place), admitted),
            format,
            (until, move || format.expired()),
            |_| true,
        ),
        // The subscriber was sent why: the stream says it and ends.
        live::Started::Ended => frames(
            &state,
            outbox,
            admitted,
            format,
            (until, move || format.expired()),
            |_| true,
        ),
    };
    response(body, format)
}

/// A `200` streaming `body` in `format`, not to be cached or buffered by a proxy.
pub(super) fn response(body: BoxStream<'static, Bytes>, format: Format) -> Response {
    // Taken over from hyper by the accept loop once its head is out (HTTP/1.1).
    let mut res = super::handover::Streamed::response(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, format.content_type());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// The `errors` of a result that says the caller's token ran out.
pub(super) fn expired_errors() -> serde_json::Value {
    serde_json::json!([{
        "message": crate::auth::Failure::Expired.message(),
        "extensions": {"code": "UNAUTHENTICATED"},
    }])
}

/// When a stream opened with `ctx` must end: its token's `exp` plus the leeway.
pub(super) fn deadline(state: &AppState, ctx: &RequestContext) -> Option<tokio::time::Instant> {
    ctx.identity().map(|i| state.auth.deadline(i))
}

/// An outbox's messages, several queued ones in one chunk, with a keep-alive while idle,
/// and the format's end when the stream ends: when `ended` says so of a subscription that
/// ended (after a request error, when an event source closes), at shutdown, or at `until`
/// (the token's end), after what `expiry` writes (an `UNAUTHENTICATED` error). `held` lives as long as the
/// stream (a subscription's place, the connection's admission).
pub(super) fn frames(
    state: &AppState,
    outbox: Arc<Outbox>,
    held: impl Send + 'static,
    format: Format,
    (until, expiry): (
        Option<tokio::time::Instant>,
        impl FnOnce() -> Bytes + Send + 'static,
    ),
    ended: impl FnMut(u64) -> bool + Send + 'static,
) -> BoxStream<'static, Bytes> {
    let metrics = &state.runtime.metrics;
    let transport = match format {
        Format::Sse => "sse",
        Format::Multipart => "multipart",
    };
    let open = crate::metrics::GaugeGuard::new(metrics.connections.with_label_values(&[transport]));
    let mut shutdown = state.shutdown.clone();
    // What the stream says when the token ran out, written as it runs out (the
    // operations it names are gone once the results' stream, which holds them, ends).
    let expired = Arc::new(std::sync::Mutex::new(None::<Bytes>));
    let auth = state.auth.clone();
    let stopping = {
        let expired = expired.clone();
        async move {
            let token_ends = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                () = token_ends => {
                    auth.count(crate::auth::Failure::Expired.label());
                    *expired.lock().unwrap_or_else(|p| p.into_inner()) = Some(expiry());
                }
            }
        }
    };
    // The stream holds what it was given and the connection's gauge.
    let held = (held, open);
    let results = stream::unfold(
        (outbox, held, false, ended),
        |(outbox, held, done, mut ended)| async move {
            if done {
                return None;
            }
            let batch = outbox.take(BATCH).await;
            if batch.is_empty() {
                return None;
            }
            let mut chunk = Vec::new();
            let mut done = false;
            for frame in batch {
                match frame {
                    Frame::Ended(tag) => done |= ended(tag),
                    Frame::Close(..) => {}
                    other => other.append_to(&mut chunk),
                }
            }
            Some((Bytes::from(chunk), (outbox, held, done, ended)))
        },
    )
    .filter(|chunk| std::future::ready(!chunk.is_empty()))
    .take_until(stopping)
    .chain(stream::once(async move {
        let said = expired.lock().unwrap_or_else(|p| p.into_inner()).take();
        match said {
            Some(said) => [said, format.end()].concat().into(),
            None => format.end(),
        }
    }));
    let (every, beat) = format.keep_alive();
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + every,
        every,
    ))
    .map(move |_| beat.clone());
    // End with the results, not with the endless ticks.
    let body = stream::select(
        results.map(Some).chain(stream::iter([None])),
        ticks.map(Some),
    )
    .take_while(|x| std::future::ready(x.is_some()))
    .filter_map(std::future::ready);
    stream::iter([format.start()])
        .filter(|b| std::future::ready(!b.is_empty()))
        .chain(body)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::super::accept;
    use super::*;

    #[test]
    fn streaming_formats_are_told_apart() {
        assert_eq!(wanted(&accept("text/event-stream")), Some(Format::Sse));
        assert_eq!(
            wanted(&accept(
                "multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0,application/json"
            )),
            Some(Format::Multipart)
        );
        assert_eq!(
            wanted(&accept(
                "multipart/mixed;subscriptionSpec=\"1.0\", application/json"
            )),
            Some(Format::Multipart)
        );
        // Apollo Client's Accept for queries: @defer's multipart, not a subscription's.
        assert_eq!(
            wanted(&accept(
                "multipart/mixed;deferSpec=20220824,application/graphql-response+json,application/json;q=0.9"
            )),
            None
        );
        assert_eq!(wanted(&accept("application/json")), None);
    }

    #[test]
    fn a_single_result_is_one_part_between_delimiters() {
        let body = Format::Multipart.once(br#"{"data":{"a":1}}"#);
        assert_eq!(
            &body[..],
            &b"\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{\"payload\":{\"data\":{\"a\":1}}}\r\n--graphql--\r\n"[..]
        );
        let body = Format::Sse.once(br#"{"data":{"a":1}}"#);
        assert_eq!(
            &body[..],
            &b"event: next\ndata: {\"data\":{\"a\":1}}\n\nevent: complete\ndata: \n\n"[..]
        );
    }
}
