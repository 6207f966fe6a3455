//! `--rate-limit`: requests (and operations started on a socket) per second per client,
//! the client being a claim of its verified token (`--rate-limit-claim`, default `sub`)
//! or, anonymous, its IP address. A token bucket in GCRA form (a request every
//! `1/rate` seconds, a burst of one second's worth); over it, `429` with `Retry-After`
//! and `extensions.code: RATE_LIMITED`. With `--redis-url` the budget is kept in Redis,
//! shared by every replica (one round trip per request); while Redis does not answer,
//! each replica keeps its own.

use super::AppState;
use crate::auth::Identity;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The `--rate-limit*` settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests per second per client.
    pub per_second: f64,
    /// The claim that names a client.
    pub claim: String,
}

/// One gateway's budgets.
pub struct Limiter {
    /// Between two requests of one client, on average.
    interval: Duration,
    /// How far ahead of that pace a client may go (one second's worth, less one).
    burst: Duration,
    claim: String,
    /// Each client's theoretical arrival time, while it is ahead of now.
    local: Mutex<HashMap<String, Instant>>,
}

impl Limiter {
    pub fn new(options: &Options) -> Option<Limiter> {
        let rate = options.per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        // Below one request in 1,000 s a budget means nothing; bounded so the arithmetic
        // on instants below cannot overflow.
        let rate = rate.max(0.001);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let burst = Duration::from_secs_f64(((rate.ceil() - 1.0).max(0.0)) / rate);
        Some(Limiter {
            interval,
            burst,
            claim: options.claim.clone(),
            local: Mutex::new(HashMap::new()),
        })
    }

    /// Who is counted: the claim of a verified caller, else the address.
    pub fn client(&self, identity: Option<&Identity>, peer: Option<IpAddr>) -> String {
        let named = identity.and_then(|i| i.claim(&self.claim)).and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.is_number().then(|| v.to_string()))
        });
        match named {
            Some(name) => {
                use sha2::Digest;
                // The issuer's too: two identity providers may give the same `sub` to
                // two people. Hashed: a claim is any length, a key should not be.
                let issuer = identity
                    .and_then(|i| i.claim("iss"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("");
                let mut hash = sha2::Sha256::new();
                hash.update(issuer.as_bytes());
                hash.update([0]);
                hash.update(name.as_bytes());
                format!("c:{}", hex::encode(&hash.finalize()[..16]))
            }
            None => format!(
                "ip:{}",
                peer.map_or_else(|| "unknown".into(), |p| p.to_string())
            ),
        }
    }

    /// Takes `cost` requests of `client`'s budget in this process: `Err(wait)` when they
    /// will be there after `wait`.
    fn take_local(&self, client: &str, cost: u32) -> Result<(), Duration> {
        // A batch is capped by --max-batch-size long before this.
        let cost = cost.clamp(1, 10_000);
        let now = Instant::now();
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        // Clients back at their pace hold a whole budget: forgetting them loses nothing.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(client).copied().unwrap_or(now).max(now);
        let last = tat + self.interval * (cost - 1);
        if last - now > self.burst {
            return Err(last - now - self.burst);
        }
        map.insert(client.to_string(), tat + self.interval * cost);
        Ok(())
    }

    /// Takes `cost` requests of `client`'s budget: in Redis when the gateway shares one,
    /// else (or while Redis does not answer) in this process.
    pub async fn take(
        &self,
        bus: &crate::bus::Bus,
        client: &str,
        cost: u32,
    ) -> Result<(), Duration> {
        let cost = cost.clamp(1, 10_000);
        match bus.take(client, cost, self.interval, self.burst).await {
            Some(taken) => taken,
            None => self.take_local(client, cost),
        }
    }
}

/// `Ok` when `--rate-limit` is off or the client has budget for `cost` requests;
/// otherwise the `429` that refuses it.
pub(super) async fn check(
    state: &AppState,
    identity: Option<&Identity>,
    peer: Option<IpAddr>,
    cost: u32,
) -> Result<(), Box<Response>> {
    match over(state, identity, peer, cost).await {
        None => Ok(()),
        Some(wait) => Err(Box::new(too_many(wait))),
    }
}

/// How long the client must wait, if it is over its budget (counted).
pub(super) async fn over(
    state: &AppState,
    identity: Option<&Identity>,
    peer: Option<IpAddr>,
    cost: u32,
) -> Option<Duration> {
    let limiter = state.rate.as_ref()?;
    let client = limiter.client(identity, peer);
    let wait = limiter
        .take(&state.runtime.bus, &client, cost)
        .await
        .err()?;
    state.runtime.metrics.rate_limited.inc();
    Some(wait)
}

/// The words of a refusal after which the client may try again in `wait`.
pub(super) fn message(wait: Duration) -> String {
    format!(
        "too many requests: over --rate-limit; try again in {:.1} s",
        wait.as_secs_f64()
    )
}

fn too_many(wait: Duration) -> Response {
    let body = super::error_body(&message(wait), Some("RATE_LIMITED"));
    let mut res = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        h.insert(header::RETRY_AFTER, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_gets_a_seconds_worth_at_once_then_its_pace() {
        tokio::time::pause();
        let l = Limiter::new(&Options {
            per_second: 5.0,
            claim: "sub".into(),
        })
        .expect("a limiter");
        for _ in 0..5 {
            assert!(l.take_local("a", 1).is_ok());
        }
        let wait = l.take_local("a", 1).expect_err("over");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(
            l.take_local("b", 1).is_ok(),
            "another client has its own budget"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(l.take_local("a", 1).is_ok());
        assert!(l.take_local("a", 1).is_err());
        // A batch costs its operations.
        assert!(l.take_local("c", 6).is_err());
        assert!(l.take_local("c", 5).is_ok());
    }

    #[test]
    fn a_client_is_its_issuer_and_claim_else_its_address() {
        let l = Limiter::new(&Options {
            per_second: 5.0,
            claim: "sub".into(),
        })
        .expect("a limiter");
        let who = |claims: serde_json::Value| Identity {
            claims,
            subject: None,
            scopes: Vec::new(),
            expires: u64::MAX,
            cookie: None,
        };
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        let ann_a = l.client(
            Some(&who(serde_json::json!({"iss": "a", "sub": "ann"}))),
            peer,
        );
        let ann_a2 = l.client(
            Some(&who(
                serde_json::json!({"iss": "a", "sub": "ann", "jti": "2"}),
            )),
            None,
        );
        let ann_b = l.client(
            Some(&who(serde_json::json!({"iss": "b", "sub": "ann"}))),
            peer,
        );
        assert_eq!(ann_a, ann_a2, "one client whatever its token and address");
        assert_ne!(ann_a, ann_b, "another issuer's ann is someone else");
        assert_eq!(
            l.client(Some(&who(serde_json::json!({"iss": "a"}))), peer),
            "ip:10.0.0.1"
        );
        assert_eq!(l.client(None, None), "ip:unknown");
    }
}
