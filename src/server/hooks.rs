//! `@webhook` receivers: `POST` at each receiver's path, a delivery signed the way its
//! service signs (GitHub, Stripe, Standard Webhooks, livegate's own), refused when
//! unsigned, wrongly signed, stale or replayed (nothing applied, `401`), its body bounded
//! by `--webhook-max-body`. An accepted delivery is answered at once (`202`); then it
//! invalidates the tags its `invalidates` templates render from it (when its `when`
//! matches) and feeds the `@stream`/`@updates` fields that read the receiver — on this
//! replica and, with Redis, on every other one (once each).

use super::webhook::{error, hmac, verified, within, Seen, Signed};
use super::AppState;
use crate::plan::{Scheme, WebhookPlan};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::Mac;
use serde_json::{json, Value};
use std::sync::Arc;

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    Unsigned(&'static str),
    Wrong,
    Stale,
    Replayed,
}

impl Refused {
    fn message(&self, hook: &WebhookPlan) -> String {
        match self {
            Refused::Unsigned(header) => {
                format!("unsigned: no {header} header ({:?} scheme)", hook.scheme)
            }
            Refused::Wrong => {
                "the signature does not match the body with this receiver's secret".into()
            }
            Refused::Stale => format!(
                "the signed timestamp is more than {} s from our clock",
                hook.tolerance.as_secs()
            ),
            Refused::Replayed => "this delivery was already accepted".into(),
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, Refused> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(Refused::Unsigned(name))
}

/// Checks a delivery's signature under `hook`'s scheme; `seen` remembers what may be
/// accepted only once.
pub(super) fn verify(
    hook: &WebhookPlan,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    seen: &Seen,
) -> Result<(), Refused> {
    let fresh = |t: i64| within(t, hook.tolerance);
    let once = |what: &[u8]| {
        let key = [hook.name.as_bytes(), b"\0", what].concat();
        seen.first_time(key).then_some(()).ok_or(Refused::Replayed)
    };
    match hook.scheme {
        Scheme::GitHub => {
            let value = header(headers, "x-hub-signature-256")?;
            let Some(Signed::Untimed { sig }) = verified(secret.as_bytes(), value, body) else {
                return Err(Refused::Wrong);
            };
            // GitHub signs no time; each delivery has an id, accepted once.
            match headers
                .get("x-github-delivery")
                .and_then(|v| v.to_str().ok())
            {
                Some(id) => once(id.as_bytes()),
                None => once(&sig),
            }
        }
        Scheme::Stripe | Scheme::Livegate => {
            let name = if hook.scheme == Scheme::Stripe {
                "stripe-signature"
            } else {
                super::webhook::SIGNATURE_HEADER
            };
            match verified(secret.as_bytes(), header(headers, name)?, body) {
                Some(Signed::Timed { t, sig }) => {
                    if !fresh(t) {
                        return Err(Refused::Stale);
                    }
                    once(&sig)
                }
                // livegate's untimed form, `sha256=<hex>` of the body (not Stripe's).
                Some(Signed::Untimed { sig }) if hook.scheme == Scheme::Livegate => once(&sig),
                _ => Err(Refused::Wrong),
            }
        }
        Scheme::Standard => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            let id = header(headers, "webhook-id")?;
            let ts = header(headers, "webhook-timestamp")?;
            let sigs = header(headers, "webhook-signature")?;
            let key = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = b64.decode(key).map_err(|_| Refused::Wrong)?;
            let mac = hmac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])
                .ok_or(Refused::Wrong)?
                .finalize()
                .into_bytes();
            let matches = sigs.split_whitespace().any(|s| {
                s.strip_prefix("v1,")
                    .and_then(|s| b64.decode(s).ok())
                    .is_some_and(|sig| super::webhook::constant_time_eq(&sig, &mac))
            });
            if !matches {
                return Err(Refused::Wrong);
            }
            let t = ts.trim().parse::<i64>().map_err(|_| Refused::Wrong)?;
            if !fresh(t) {
                return Err(Refused::Stale);
            }
            once(id.as_bytes())
        }
    }
}

/// `POST` at a receiver's path.
pub async fn receive(State(state): State<AppState>, req: Request) -> Response {
    let engine = state.engine();
    let path = req.uri().path().to_string();
    let Some(hook) = engine
        .runtime
        .plan
        .webhooks
        .values()
        .find(|h| h.path == path)
        .cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no @webhook receives at {path}"),
        );
    };
    let Some(secret) = hook.secret.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the receiver {:?} has no secret: set {}",
                hook.name, hook.secret_env
            ),
        );
    };
    let metrics = state.runtime.metrics.clone();
    let (parts, body) = req.into_parts();
    let max = state.webhook.max_body;
    let Ok(body) = axum::body::to_bytes(Body::new(body), max).await else {
        metrics.reject(crate::metrics::Rejection::Limit);
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {max} bytes"),
        );
    };
    if let Err(refused) = verify(&hook, &secret, &parts.headers, &body, &state.hook_seen) {
        metrics.reject(crate::metrics::Rejection::Auth);
        metrics
            .hooks
            .with_label_values(&[&hook.name, "refused"])
            .inc();
        tracing::warn!(receiver = %hook.name, why = ?refused, bytes = body.len(), "webhook delivery refused");
        return error(StatusCode::UNAUTHORIZED, refused.message(&hook));
    }
    let event: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            metrics.reject(crate::metrics::Rejection::Malformed);
            metrics
                .hooks
                .with_label_values(&[&hook.name, "malformed"])
                .inc();
            return error(StatusCode::BAD_REQUEST, "the body is not JSON");
        }
    };
    metrics
        .hooks
        .with_label_values(&[&hook.name, "accepted"])
        .inc();
    // Answered now; the work runs after (a service retries a slow receiver), one
    // delivery after the other in the order they were accepted: an event stream, here
    // and on the other replicas, hears them in that order.
    let text: Arc<str> = Arc::from(String::from_utf8_lossy(&body).as_ref());
    let turn = state.hook_order.ticket(&hook.name);
    let (applied_by, applied) = (state.clone(), hook.clone());
    tokio::spawn(async move {
        let turn = turn.wait().await;
        apply(applied_by, applied, event, text).await;
        drop(turn);
    });
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"accepted": hook.name})),
    )
        .into_response()
}

/// The order of each receiver's deliveries: a ticket per delivery as it is accepted, and
/// the ticket whose turn it is.
#[derive(Default)]
pub struct Order(std::sync::Mutex<std::collections::HashMap<String, Arc<Sequence>>>);

pub struct Sequence {
    issued: std::sync::atomic::AtomicU64,
    turn: tokio::sync::watch::Sender<u64>,
}

/// A delivery's place in its receiver's order; the next one's turn comes when it is
/// dropped (applied, or given up).
pub struct Ticket {
    sequence: Arc<Sequence>,
    number: u64,
}

impl Order {
    /// The next ticket of `receiver`.
    pub fn ticket(&self, receiver: &str) -> Ticket {
        let sequence = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(receiver.to_string())
                .or_insert_with(|| {
                    Arc::new(Sequence {
                        issued: Default::default(),
                        turn: tokio::sync::watch::channel(0).0,
                    })
                })
                .clone()
        };
        let number = sequence
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ticket { sequence, number }
    }
}

impl Ticket {
    /// Waits for this ticket's turn.
    async fn wait(self) -> Ticket {
        let mut turn = self.sequence.turn.subscribe();
        let _ = turn.wait_for(|t| *t >= self.number).await;
        self
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let next = self.number + 1;
        self.sequence.turn.send_modify(|t| *t = (*t).max(next));
    }
}

/// What an accepted delivery does: invalidates its tags, feeds the streams reading the
/// receiver here, and hands it to the other replicas.
async fn apply(state: AppState, hook: Arc<WebhookPlan>, event: Value, text: Arc<str>) {
    let tags = tags(&hook, &event);
    if !tags.is_empty() {
        state
            .runtime
            .metrics
            .invalidations
            .with_label_values(&["webhook"])
            .inc();
        state.runtime.invalidate(&tags, "webhook").await;
    }
    state.runtime.sources.deliver(&hook.name, text.clone());
    state.runtime.bus.delivered(&hook.name, &text).await;
}

/// The tags `event` invalidates: `hook`'s templates, rendered, when `when` matches.
fn tags(hook: &WebhookPlan, event: &Value) -> Vec<crate::cache::Tag> {
    let vars = crate::template::Vars {
        args: &Value::Null,
        parent: None,
        claims: None,
        event: Some(event),
    };
    let matches = hook.when.iter().all(|(path, t)| {
        let want = t.render_string(vars);
        crate::watch::patch::pick(event, path)
            .and_then(crate::template::scalar_text)
            .is_some_and(|v| v == want)
    });
    if !matches {
        return Vec::new();
    }
    hook.invalidates
        .iter()
        // A tag whose value is missing from the event would name nothing real.
        .filter_map(|t| t.render_complete(vars))
        .map(|t| crate::cache::Tag::from(t.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(scheme: Scheme) -> WebhookPlan {
        WebhookPlan {
            name: "svc".into(),
            path: "/hooks/svc".into(),
            scheme,
            secret: None,
            secret_env: "X".into(),
            invalidates: Vec::new(),
            when: Vec::new(),
            tolerance: std::time::Duration::from_secs(300),
        }
    }

    #[test]
    fn githubs_published_test_vector_verifies() {
        // docs.github.com, "Validating webhook deliveries": secret, payload, signature.
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                .parse()
                .expect("header"),
        );
        let hook = plan(Scheme::GitHub);
        let seen = Seen::default();
        let secret = "It's a Secret to Everybody";
        assert_eq!(verify(&hook, secret, &h, b"Hello, World!", &seen), Ok(()));
        assert_eq!(
            verify(&hook, secret, &h, b"Hello, World!", &seen),
            Err(Refused::Replayed)
        );
        assert_eq!(
            verify(&hook, secret, &h, b"Hello, World?", &seen),
            Err(Refused::Wrong)
        );
        assert_eq!(
            verify(&hook, secret, &HeaderMap::new(), b"x", &seen),
            Err(Refused::Unsigned("x-hub-signature-256"))
        );
    }

    #[test]
    fn standard_webhooks_signature_of_the_specs_example() {
        // The Standard Webhooks spec's example: its secret, id, timestamp and body give
        // this signature (checked here without the timestamp window, which it is long out
        // of: the stale check comes after the signature's).
        let mut h = HeaderMap::new();
        h.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().expect("h"),
        );
        h.insert("webhook-timestamp", "1614265330".parse().expect("h"));
        h.insert(
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                .parse()
                .expect("h"),
        );
        let hook = plan(Scheme::Standard);
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            verify(&hook, secret, &h, body, &Seen::default()),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(&hook, secret, &h, br#"{"test": 1}"#, &Seen::default()),
            Err(Refused::Wrong)
        );
    }
}
