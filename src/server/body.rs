//! Request bodies, read in full before any handler sees them, under three bounds:
//!
//! - size: `--max-request-body` on `/graphql`, `--webhook-max-body` on the webhook (`413`);
//! - time: the whole body must arrive within `--body-timeout-ms` (`408`), so a client
//!   that sends most of a body and stalls holds nothing for long;
//! - memory: the bytes of all bodies still arriving, across the process, stay within
//!   `--max-pending-body-bytes`; a body that would go past it is refused with `503` at
//!   once (its declared length counts from the start) instead of being buffered.
//!
//! Every refusal is JSON: a GraphQL error body in the negotiated media type on
//! `/graphql`, `{"error": …}` on the webhook, as their other refusals.

use super::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Version};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Request-body settings; flags of the binary.
#[derive(Clone, Debug)]
pub struct BodyOptions {
    /// How long a request's whole body may take to arrive.
    pub timeout: Duration,
    /// Bytes of unfinished bodies held across the process.
    pub max_pending: usize,
}

impl Default for BodyOptions {
    fn default() -> Self {
        BodyOptions {
            timeout: Duration::from_secs(30),
            max_pending: 64 << 20,
        }
    }
}

/// The bytes of bodies still arriving, across the process.
#[derive(Clone, Default, Debug)]
pub struct Pending(Arc<AtomicUsize>);

impl Pending {
    /// Bytes held right now.
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// A share of [`Pending`], given back when dropped.
struct Reserved {
    pending: Pending,
    bytes: usize,
}

impl Reserved {
    /// Takes `more` bytes if the total stays within `max`.
    fn grow(&mut self, more: usize, max: usize) -> bool {
        let taken = self
            .pending
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(more).filter(|total| *total <= max)
            });
        if taken.is_ok() {
            self.bytes += more;
        }
        taken.is_ok()
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.pending.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a body was not read.
enum Refused {
    TooLarge(usize),
    Slow(Duration),
    Busy,
    Broken(String),
}

impl Refused {
    fn status(&self) -> StatusCode {
        match self {
            Refused::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::Slow(_) => StatusCode::REQUEST_TIMEOUT,
            Refused::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Refused::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn message(&self) -> String {
        match self {
            Refused::TooLarge(max) => format!("the request body is over {max} bytes"),
            Refused::Slow(t) => format!(
                "the request body did not arrive within {} ms (--body-timeout-ms)",
                t.as_millis()
            ),
            Refused::Busy => "too many request bodies are arriving at once; retry shortly (--max-pending-body-bytes)".to_string(),
            Refused::Broken(why) => format!("the request body broke off: {why}"),
        }
    }

    fn rejection(&self) -> crate::metrics::Rejection {
        match self {
            Refused::Broken(_) => crate::metrics::Rejection::Malformed,
            _ => crate::metrics::Rejection::Limit,
        }
    }
}

/// Reads `body` (of `declared` length, if given) in full, within `max` bytes, the time
/// limit and the process's budget.
async fn read(
    body: Body,
    declared: Option<usize>,
    max: usize,
    options: &BodyOptions,
    pending: &Pending,
) -> Result<Bytes, Refused> {
    if declared.is_some_and(|n| n > max) {
        return Err(Refused::TooLarge(max));
    }
    let mut reserved = Reserved {
        pending: pending.clone(),
        bytes: 0,
    };
    if !reserved.grow(declared.unwrap_or(0), options.max_pending) {
        return Err(Refused::Busy);
    }
    let collect = async {
        let mut body = body.into_data_stream();
        let mut got = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(data) = body.next().await {
            let data = data.map_err(|e| Refused::Broken(e.to_string()))?;
            if got.len() + data.len() > max {
                return Err(Refused::TooLarge(max));
            }
            let beyond = (got.len() + data.len()).saturating_sub(reserved.bytes);
            if beyond > 0 && !reserved.grow(beyond, options.max_pending) {
                return Err(Refused::Busy);
            }
            got.extend_from_slice(&data);
        }
        Ok(Bytes::from(got))
    };
    match tokio::time::timeout(options.timeout, collect).await {
        Ok(done) => done,
        Err(_) => Err(Refused::Slow(options.timeout)),
    }
}

/// Middleware: the request goes on with its body read in full, or is answered here.
/// WebSocket upgrades pass untouched: over HTTP/2 the request's body is the socket.
pub async fn bounded(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let websocket = req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if req.method() == Method::CONNECT || websocket {
        return next.run(req).await;
    }
    match collect(&state, req).await {
        Ok((parts, bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(refused) => refused,
    }
}

/// Reads `req`'s body in full within the limits (`--max-request-body`, or the webhook's
/// for `/hooks/invalidate`; the body deadline; the gateway's budget of bodies in flight):
/// the request's parts and its body, or the answer that refuses it.
pub async fn collect(
    state: &AppState,
    req: Request,
) -> Result<(axum::http::request::Parts, Bytes), Response> {
    let webhook = req.uri().path() == "/hooks/invalidate";
    let max = if webhook {
        state.webhook.max_body
    } else {
        state.max_body
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let (parts, body) = req.into_parts();
    match read(body, declared, max, &state.body, &state.pending_bodies).await {
        Ok(bytes) => Ok((parts, bytes)),
        Err(refused) => {
            // `/graphql`'s refusals by status are counted where every response is seen.
            if webhook || matches!(refused, Refused::Busy) {
                state.runtime.metrics.reject(refused.rejection());
            }
            let status = refused.status();
            let mut res = if webhook {
                super::webhook::error(status, refused.message())
            } else {
                super::reply::refusal(status, &parts.headers, refused.message())
            };
            if parts.version <= Version::HTTP_11 {
                // The rest of the body may still be on its way: this connection is done.
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Err(res)
        }
    }
}
