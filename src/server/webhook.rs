//! `POST /hooks/invalidate`: other services say which tags changed, `{"tags": ["…"]}`.
//! Every entry filed under them is dropped, and every live query that read one is re-run
//! (one refetch per entry). Off unless `--webhook-secret` or `--webhook-token` is set.
//!
//! Authentication, any of:
//! - `X-Livegate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` — the
//!   timestamped scheme (Stripe's): refused outside `--webhook-tolerance-s` of our clock,
//!   and each signature accepted once, so a captured call cannot be replayed;
//! - `X-Livegate-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>` —
//!   unless `--webhook-require-timestamp`;
//! - `Authorization: Bearer <token>`.
//!
//! Compared in constant time. A rejected request changes nothing.

use super::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-livegate-signature";

/// Webhook settings; flags of the binary.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    pub secret: Option<String>,
    pub token: Option<String>,
    pub max_body: usize,
    /// How far a timestamped signature's time may be from ours.
    pub tolerance: std::time::Duration,
    /// Refuse the untimed `sha256=` signature.
    pub require_timestamp: bool,
    /// Timestamped signatures already accepted (within the tolerance), by signature.
    pub seen: Seen,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            secret: None,
            token: None,
            max_body: 64 << 10,
            tolerance: std::time::Duration::from_secs(300),
            require_timestamp: false,
            seen: Seen::default(),
        }
    }
}

/// Signatures accepted lately: a replay within the tolerance window is refused. Only
/// valid signatures get in (it takes the secret to make one), each kept twice the
/// tolerance, and at most 100,000: a sender past that rate may see a replay accepted.
#[derive(Clone)]
pub struct Seen(moka::sync::Cache<Vec<u8>, ()>);

impl Seen {
    /// Remembers signatures for twice `tolerance` (a timestamp may be that far ahead of
    /// our clock, then as far behind it).
    pub fn new(tolerance: std::time::Duration) -> Self {
        Seen(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live((tolerance * 2).max(std::time::Duration::from_secs(1)))
                .build(),
        )
    }
}

impl Seen {
    /// `true` the first time `key` is seen within the window (a key stands for a
    /// signature or a delivery id that only a holder of the secret could make valid).
    pub(super) fn first_time(&self, key: Vec<u8>) -> bool {
        self.0.entry(key).or_insert(()).is_fresh()
    }
}

impl Default for Seen {
    fn default() -> Self {
        Seen::new(std::time::Duration::from_secs(300))
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seen({} signatures)", self.0.entry_count())
    }
}

/// Why a request is not authorised.
pub(super) enum Denied {
    Credentials,
    Stale,
    Replayed,
}

impl Denied {
    pub(super) fn message(&self) -> String {
        match self {
            Denied::Credentials => format!("missing or wrong credentials: sign the body ({SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC of \"<t>.<body>\"> or sha256=<hex HMAC of the body>) or send Authorization: Bearer <token>"),
            Denied::Stale => "the signature's timestamp is outside the accepted window (--webhook-tolerance-s): sign with the current time".to_string(),
            Denied::Replayed => "this signature was already used: sign each call anew".to_string(),
        }
    }
}

pub(super) fn hmac(secret: &[u8], parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac)
}

/// `t=…,v1=…`: the timestamp and every `v1` signature given.
pub(super) fn timestamped(header: &str) -> Option<(i64, Vec<Vec<u8>>)> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.trim().parse::<i64>().ok(),
            Some(("v1", v)) => sigs.extend(hex::decode(v.trim()).ok()),
            _ => {}
        }
    }
    Some((t?, sigs))
}

/// A signature header that verified: `t=…,v1=…` (the HMAC of `"<t>.<body>"`, Stripe's
/// form) or `sha256=…` (the HMAC of the body, GitHub's form), with the signature that
/// matched.
pub(super) enum Signed {
    Timed { t: i64, sig: Vec<u8> },
    Untimed { sig: Vec<u8> },
}

/// `header` checked against `body` with `secret`: which form verified, or `None`. A
/// header with a timestamp is only ever read in the timed form.
pub(super) fn verified(secret: &[u8], header: &str, body: &[u8]) -> Option<Signed> {
    if let Some((t, sigs)) = timestamped(header) {
        let signed = t.to_string();
        let sig = sigs.into_iter().find(|sig| {
            hmac(secret, &[signed.as_bytes(), b".", body])
                .is_some_and(|mac| mac.verify_slice(sig).is_ok())
        })?;
        return Some(Signed::Timed { t, sig });
    }
    let sig = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|s| hex::decode(s).ok())?;
    hmac(secret, &[body])?.verify_slice(&sig).ok()?;
    Some(Signed::Untimed { sig })
}

/// Whether the signed time `t` (Unix seconds) is within `tolerance` of our clock.
pub(super) fn within(t: i64, tolerance: std::time::Duration) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now.abs_diff(t) <= tolerance.as_secs()
}

pub(super) fn check_signature(
    options: &WebhookOptions,
    header: &str,
    body: &[u8],
) -> Result<(), Denied> {
    let Some(secret) = &options.secret else {
        return Err(Denied::Credentials);
    };
    match verified(secret.as_bytes(), header, body) {
        None => Err(Denied::Credentials),
        Some(Signed::Untimed { .. }) if options.require_timestamp => Err(Denied::Credentials),
        Some(Signed::Untimed { .. }) => Ok(()),
        Some(Signed::Timed { t, sig }) => {
            if !within(t, options.tolerance) {
                return Err(Denied::Stale);
            }
            // Accepted once: a signature seen within the window is a replay.
            if !options.seen.first_time(sig) {
                return Err(Denied::Replayed);
            }
            Ok(())
        }
    }
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Equal-length byte strings compared without an early exit.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorised(options: &WebhookOptions, headers: &HeaderMap, body: &[u8]) -> Result<(), Denied> {
    let mut denied = Denied::Credentials;
    if let Some(header) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) {
        match check_signature(options, header, body) {
            Ok(()) => return Ok(()),
            Err(why) => denied = why,
        }
    }
    if let Some(token) = &options.token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| constant_time_eq(b.trim().as_bytes(), token.as_bytes())) {
            return Ok(());
        }
    }
    Err(denied)
}

pub async fn invalidate(State(state): State<AppState>, req: Request) -> Response {
    let options = &state.webhook;
    if options.secret.is_none() && options.token.is_none() {
        return error(StatusCode::NOT_FOUND, "the invalidation webhook is off; start livegate with --webhook-secret or --webhook-token");
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(Body::new(body), options.max_body).await {
        Ok(b) => b,
        Err(_) => {
            state
                .runtime
                .metrics
                .reject(crate::metrics::Rejection::Limit);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {} bytes", options.max_body),
            );
        }
    };
    let metrics = &state.runtime.metrics;
    if let Err(denied) = authorised(options, &parts.headers, &body) {
        metrics.reject(crate::metrics::Rejection::Auth);
        return error(StatusCode::UNAUTHORIZED, denied.message());
    }
    let tags: Vec<String> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => match map.get("tags") {
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            _ => {
                metrics.reject(crate::metrics::Rejection::Malformed);
                return error(StatusCode::BAD_REQUEST, "`tags` must be a list of strings");
            }
        },
        Ok(_) => {
            metrics.reject(crate::metrics::Rejection::Malformed);
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object like {\"tags\": [\"…\"]}",
            );
        }
        Err(e) => {
            metrics.reject(crate::metrics::Rejection::Malformed);
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    metrics.invalidations.with_label_values(&["webhook"]).inc();
    let list: Vec<crate::cache::Tag> = tags
        .iter()
        .map(|t| crate::cache::Tag::from(t.as_str()))
        .collect();
    let invalidated = state.runtime.invalidate(&list, "webhook").await;
    tracing::info!(?tags, invalidated, "webhook invalidation");
    Json(json!({"invalidated": invalidated, "tags": tags})).into_response()
}
