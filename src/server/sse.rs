//! GraphQL over Server-Sent Events, graphql-sse's distinct connections mode: a request
//! with `Accept: text/event-stream` (POST body or GET parameters, as for plain HTTP) gets
//! an event stream of `next` events, then `complete`. Errors found before execution are
//! a `next` event too (a 4xx would leave an `EventSource` with no reason). A live query
//! streams until the client closes the connection; a comment line every 15 s keeps
//! proxies from timing it out.

use super::AppState;
use crate::live::{self, Frame, Outbox, Prepared};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .any(|t| t.trim().starts_with("text/event-stream"))
        })
}

fn next(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(b"event: next\ndata: ");
    out.extend_from_slice(body);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

const COMPLETE: &[u8] = b"event: complete\ndata: \n\n";

/// SSE frames: every result (a request error too) is a `next` event; `complete` is
/// written when the stream ends, however it ends.
struct SseFraming(Arc<str>);

impl live::Framing for SseFraming {
    fn next(&self, body: &Bytes) -> Frame {
        Frame::Parts {
            head: self.0.clone(),
            body: body.clone(),
            tail: "\n\n",
        }
    }

    fn failure(&self, body: &Bytes) -> Frame {
        self.next(body)
    }

    fn complete(&self) -> Option<Frame> {
        None
    }

    fn transport(&self) -> &'static str {
        "sse"
    }
}

/// Bytes of queued events written to the response in one chunk, at most.
const BATCH: usize = 64 << 10;

pub async fn respond(
    state: AppState,
    req: async_graphql::Request,
    // Kept for the stream's life: the caller passes a copy that does not hold hyper's
    // read buffer (see `detached`).
    headers: HeaderMap,
    admitted: super::limits::Admitted,
) -> Response {
    let events: BoxStream<'static, Bytes> = match live::prepare(&state.engine, req) {
        Err(message) => {
            let body = super::error_body(&message, None);
            stream::iter([next(body.as_bytes()), Bytes::from_static(COMPLETE)]).boxed()
        }
        Ok(Prepared::Once(req)) => {
            let done = crate::exec::run(&state.engine, req, headers).await;
            stream::iter([next(&done.body), Bytes::from_static(COMPLETE)]).boxed()
        }
        Ok(how) => {
            let outbox = Outbox::new(
                state.ws.max_queued_bytes,
                state.runtime.metrics.events_dropped.clone(),
            );
            let subscriber = live::Subscriber {
                outbox: outbox.clone(),
                framing: Arc::new(SseFraming(Arc::from("event: next\ndata: "))),
                tag: 1,
            };
            let engine = &state.engine;
            let place = match how {
                Prepared::Live { request, poll } => Some(
                    state
                        .topics
                        .live(engine, request, &headers, poll, subscriber),
                ),
                Prepared::Events(request) => {
                    state
                        .topics
                        .events(engine, request, &headers, subscriber)
                        .await
                }
                Prepared::Once(_) => None,
            };
            frames(&state, outbox, place, admitted)
        }
    };
    let mut res = (
        StatusCode::OK,
        Body::from_stream(events.map(Ok::<_, Infallible>)),
    )
        .into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// The subscription's frames as SSE events, several queued ones in one chunk, with a
/// keep-alive comment every 15 s, and `complete` when the subscription ends (after a
/// request error, when an event source closes, or at shutdown).
fn frames(
    state: &AppState,
    outbox: Arc<Outbox>,
    place: Option<live::Subscribed>,
    admitted: super::limits::Admitted,
) -> BoxStream<'static, Bytes> {
    let metrics = &state.runtime.metrics;
    let open = crate::metrics::GaugeGuard::new(metrics.connections.with_label_values(&["sse"]));
    let mut shutdown = state.shutdown.clone();
    let stopping = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    // The stream holds the subscription's place (leaving it when the client goes), the
    // connection's gauge and its admission.
    let held = (place, open, admitted);
    let results = stream::unfold((outbox, held, false), |(outbox, held, ended)| async move {
        if ended {
            return None;
        }
        let batch = outbox.take(BATCH).await;
        if batch.is_empty() {
            return None;
        }
        let mut chunk = Vec::new();
        let mut ended = false;
        for frame in batch {
            match frame {
                Frame::Ended(_) => ended = true,
                Frame::Close(..) => {}
                other => other.append_to(&mut chunk),
            }
        }
        Some((Bytes::from(chunk), (outbox, held, ended)))
    })
    .filter(|chunk| std::future::ready(!chunk.is_empty()))
    .take_until(stopping)
    .chain(stream::iter([Bytes::from_static(COMPLETE)]));
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(15),
        Duration::from_secs(15),
    ))
    .map(|_| Bytes::from_static(b": keep-alive\n\n"));
    // End with the results, not with the endless ticks.
    stream::select(
        results.map(Some).chain(stream::iter([None])),
        ticks.map(Some),
    )
    .take_while(|x| std::future::ready(x.is_some()))
    .filter_map(std::future::ready)
    .boxed()
}
