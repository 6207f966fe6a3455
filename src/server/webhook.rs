//! `POST /hooks/invalidate`: other services say which tags changed, `{"tags": ["…"]}`.
//! Every entry filed under them is dropped, and every live query that read one is re-run
//! (one refetch per entry). Off unless `--webhook-secret` or `--webhook-token` is set.
//!
//! Authentication, either of:
//! - `X-Livegate-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>`
//! - `Authorization: Bearer <token>`
//!
//! Both compared in constant time. A rejected request changes nothing.

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
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            secret: None,
            token: None,
            max_body: 64 << 10,
        }
    }
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Equal-length byte strings compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorised(options: &WebhookOptions, headers: &HeaderMap, body: &[u8]) -> bool {
    if let Some(secret) = &options.secret {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("sha256="));
        if let Some(sig) = signature.and_then(|s| hex::decode(s).ok()) {
            if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
                mac.update(body);
                if mac.verify_slice(&sig).is_ok() {
                    return true;
                }
            }
        }
    }
    if let Some(token) = &options.token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| constant_time_eq(b.trim().as_bytes(), token.as_bytes())) {
            return true;
        }
    }
    false
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
    if !authorised(options, &parts.headers, &body) {
        metrics.reject(crate::metrics::Rejection::Auth);
        return error(StatusCode::UNAUTHORIZED, format!("missing or wrong credentials: sign the body ({SIGNATURE_HEADER}: sha256=<hex>) or send Authorization: Bearer <token>"));
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
    let invalidated = state.runtime.invalidate(&list);
    tracing::info!(?tags, invalidated, "webhook invalidation");
    Json(json!({"invalidated": invalidated, "tags": tags})).into_response()
}
