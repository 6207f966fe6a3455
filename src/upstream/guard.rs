//! Keeping a faltering upstream from taking the gateway down with it: one [`Guard`] per
//! upstream holds its circuit breaker and its retry budget, over a window of one-second
//! buckets.
//!
//! - **Breaker:** closed, it counts each request's outcome; once the window holds at
//!   least `min_requests` outcomes and `failure_percent` of them are failures (no answer,
//!   a timeout, a 5xx), it opens: requests fail at once with `UPSTREAM_UNAVAILABLE` for
//!   `open_for`. Then one probe is let through (half-open): its success closes the breaker
//!   (with a clean window), its failure opens it again. Each transition is logged once and
//!   mirrored in `livegate_upstream_breaker_state`.
//! - **Retry budget** (Linkerd's and Finagle's): retries over the window may be at most
//!   `budget_percent` of the requests over it, plus `min_retries_per_s` per second of it,
//!   so a failing upstream sees at most that much more than its own traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How breakers and retries behave (the `--upstream-retr*` and `--breaker-*` flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most retries of one idempotent request (`@upstream(retries:)` overrides it).
    pub retries: u32,
    /// Retries over the window: at most this percent of the requests over it ...
    pub budget_percent: u32,
    /// ... plus this many per second of it.
    pub min_retries_per_s: u32,
    /// How long one attempt may take before it is abandoned (and retried, within the
    /// request's deadline); `None`: the whole deadline.
    pub attempt_timeout: Option<Duration>,
    /// Failures that open the breaker, in percent of the outcomes over the window; 0 never.
    pub failure_percent: u32,
    /// Outcomes the window must hold before the breaker may open.
    pub min_requests: u32,
    /// The window, in whole seconds (1 to 600).
    pub window_s: u32,
    /// How long an open breaker fails requests at once before it lets a probe through.
    pub open_for: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retries: 2,
            budget_percent: 20,
            min_retries_per_s: 10,
            attempt_timeout: None,
            failure_percent: 50,
            min_requests: 20,
            window_s: 10,
            open_for: Duration::from_secs(5),
        }
    }
}

/// Every upstream's guard, by upstream name and URL (a reload that points a name
/// elsewhere starts afresh).
pub struct Guards {
    settings: Settings,
    guards: Mutex<HashMap<(String, String), Arc<Guard>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Guards {
    pub fn new(settings: Settings, metrics: Arc<crate::metrics::Metrics>) -> Guards {
        let mut settings = settings;
        settings.window_s = settings.window_s.clamp(1, 600);
        Guards {
            settings,
            guards: Mutex::default(),
            metrics,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The guard of `upstream`.
    pub fn of(&self, upstream: &crate::plan::UpstreamPlan) -> Arc<Guard> {
        let key = (upstream.name.clone(), upstream.url.to_string());
        let mut map = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                let gauge = self
                    .metrics
                    .breaker_state
                    .with_label_values(&[upstream.name.as_str()]);
                gauge.set(0);
                Arc::new(Guard {
                    name: upstream.name.clone(),
                    settings: self.settings.clone(),
                    state: Mutex::new(State::new(self.settings.window_s as usize)),
                    gauge,
                })
            })
            .clone()
    }
}

/// One upstream's breaker and retry budget.
pub struct Guard {
    name: String,
    settings: Settings,
    state: Mutex<State>,
    gauge: prometheus::IntGauge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is let through; `probing` while it is out.
    HalfOpen {
        probing: bool,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The second (since the guard's start) this bucket counts.
    second: u64,
    requests: u32,
    retries: u32,
    ok: u32,
    failed: u32,
}

struct State {
    started: Instant,
    buckets: Box<[Bucket]>,
    breaker: Breaker,
}

impl State {
    fn new(window_s: usize) -> State {
        State {
            started: Instant::now(),
            buckets: vec![Bucket::default(); window_s].into_boxed_slice(),
            breaker: Breaker::Closed,
        }
    }

    fn now_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// This second's bucket (a bucket of an older second is emptied first).
    fn bucket(&mut self) -> &mut Bucket {
        let now = self.now_s();
        let n = self.buckets.len();
        let b = &mut self.buckets[(now % n as u64) as usize];
        if b.second != now {
            *b = Bucket {
                second: now,
                ..Bucket::default()
            };
        }
        b
    }

    /// The counts over the window.
    fn window(&self) -> Bucket {
        let now = self.now_s();
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.second + n > now && b.second <= now)
            .fold(Bucket::default(), |mut sum, b| {
                sum.requests += b.requests;
                sum.retries += b.retries;
                sum.ok += b.ok;
                sum.failed += b.failed;
                sum
            })
    }

    fn clear_outcomes(&mut self) {
        for b in self.buckets.iter_mut() {
            b.ok = 0;
            b.failed = 0;
        }
    }
}

/// A request let through by the breaker. Say how it went with [`Admitted::done`]; one
/// dropped unsaid (its caller went away) frees a half-open breaker's probe slot.
pub struct Admitted {
    guard: Arc<Guard>,
    probe: bool,
    said: bool,
}

impl Admitted {
    /// Records the outcome: `failed` when the upstream gave no answer, timed out or
    /// answered 5xx.
    pub fn done(mut self, failed: bool) {
        self.said = true;
        self.guard.outcome(self.probe, failed);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.said && self.probe {
            let mut st = self.guard.lock();
            if st.breaker == (Breaker::HalfOpen { probing: true }) {
                st.breaker = Breaker::HalfOpen { probing: false };
            }
        }
    }
}

impl Guard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request (not its retries) toward the retry budget.
    pub fn request(&self) {
        self.lock().bucket().requests += 1;
    }

    /// Lets one attempt through, or `None` while the breaker is open (or half-open with
    /// its probe out).
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let admitted = |probe| {
            Some(Admitted {
                guard: self.clone(),
                probe,
                said: false,
            })
        };
        if self.settings.failure_percent == 0 {
            return admitted(false);
        }
        let mut st = self.lock();
        match st.breaker {
            Breaker::Closed => admitted(false),
            Breaker::Open { until } if Instant::now() < until => None,
            Breaker::Open { .. } | Breaker::HalfOpen { probing: false } => {
                if matches!(st.breaker, Breaker::Open { .. }) {
                    tracing::info!(upstream = %self.name, "circuit breaker half-open: sending one probe");
                    self.gauge.set(2);
                }
                st.breaker = Breaker::HalfOpen { probing: true };
                admitted(true)
            }
            Breaker::HalfOpen { probing: true } => None,
        }
    }

    fn outcome(&self, probe: bool, failed: bool) {
        let mut st = self.lock();
        {
            let b = st.bucket();
            if failed {
                b.failed += 1;
            } else {
                b.ok += 1;
            }
        }
        if self.settings.failure_percent == 0 {
            return;
        }
        if probe {
            if failed {
                self.open(&mut st, "the probe failed");
            } else {
                st.breaker = Breaker::Closed;
                st.clear_outcomes();
                self.gauge.set(0);
                tracing::info!(upstream = %self.name, "circuit breaker closed: the upstream answered the probe");
            }
            return;
        }
        if st.breaker != Breaker::Closed {
            return;
        }
        let w = st.window();
        let total = w.ok + w.failed;
        if total >= self.settings.min_requests.max(1)
            && u64::from(w.failed) * 100
                >= u64::from(self.settings.failure_percent) * u64::from(total)
        {
            let why = format!(
                "{} of the last {} requests over {} s failed",
                w.failed, total, self.settings.window_s
            );
            self.open(&mut st, &why);
        }
    }

    fn open(&self, st: &mut State, why: &str) {
        st.breaker = Breaker::Open {
            until: Instant::now() + self.settings.open_for,
        };
        self.gauge.set(1);
        tracing::warn!(
            upstream = %self.name,
            open_ms = self.settings.open_for.as_millis() as u64,
            "circuit breaker opened: {why}; failing its requests at once until a probe succeeds"
        );
    }

    /// Whether the budget allows one more retry now (and if so, counts it).
    pub fn may_retry(&self) -> bool {
        let mut st = self.lock();
        let w = st.window();
        let allowed = u64::from(self.settings.min_retries_per_s) * st.buckets.len() as u64
            + u64::from(w.requests) * u64::from(self.settings.budget_percent) / 100;
        if u64::from(w.retries) >= allowed {
            return false;
        }
        st.bucket().retries += 1;
        true
    }

    /// Open or half-open with its probe out: when it next lets a request through, or
    /// `None` when it does now.
    pub fn closed_until(&self) -> Option<Instant> {
        if self.settings.failure_percent == 0 {
            return None;
        }
        match self.lock().breaker {
            Breaker::Open { until } if Instant::now() < until => Some(until),
            Breaker::HalfOpen { probing: true } => {
                Some(Instant::now() + self.settings.open_for.min(Duration::from_secs(1)))
            }
            _ => None,
        }
    }
}

/// The delay before retry `n` (1, 2, …): "full jitter" exponential backoff (AWS's), a
/// random time up to 50 ms × 2ⁿ⁻¹, at most 2 s.
pub fn backoff(n: u32) -> Duration {
    let ceiling = (50u64 << n.saturating_sub(1).min(6)).min(2_000);
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

/// A `Retry-After` header's wait: delay-seconds, or an HTTP date.
pub fn retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(settings: Settings) -> Arc<Guard> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let guards = Guards::new(settings, metrics);
        let plan = crate::plan::UpstreamPlan {
            name: "api".into(),
            url: url::Url::parse("http://127.0.0.1:1").expect("url"),
            timeout: None,
            max_connections: None,
            retries: None,
            attempt_timeout: None,
            headers: Vec::new(),
            forward_headers: Vec::new(),
            errors: None,
        };
        guards.of(&plan)
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_on_the_failure_rate_and_closes_on_a_probe() {
        let g = guard(Settings {
            min_requests: 4,
            failure_percent: 50,
            open_for: Duration::from_secs(5),
            ..Settings::default()
        });
        // Below the minimum of outcomes nothing opens it.
        for _ in 0..3 {
            g.admit().expect("closed").done(true);
        }
        g.admit().expect("closed").done(false);
        // 3 of 4 failed: open.
        assert!(g.admit().is_none(), "open");
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = g.admit().expect("a probe once open_for passed");
        assert!(g.admit().is_none(), "one probe at a time");
        probe.done(true);
        assert!(g.admit().is_none(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(5)).await;
        // A probe whose caller went away frees the slot.
        drop(g.admit().expect("probe"));
        g.admit().expect("probe again").done(false);
        for _ in 0..10 {
            g.admit().expect("closed after a good probe").done(false);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_budget() {
        let g = guard(Settings {
            budget_percent: 20,
            min_retries_per_s: 0,
            ..Settings::default()
        });
        for _ in 0..100 {
            g.request();
        }
        let granted = (0..100).filter(|_| g.may_retry()).count();
        assert_eq!(granted, 20);
        // The window moves on: old requests and retries no longer count.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!g.may_retry(), "no requests, no budget");
        g.request();
        g.request();
        g.request();
        g.request();
        g.request();
        assert!(g.may_retry());
        assert!(!g.may_retry());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for n in 1..20 {
            let ceiling = (50u64 << (n - 1).min(6)).min(2_000);
            assert!(backoff(n) <= Duration::from_millis(ceiling));
        }
        let v = http::HeaderValue::from_static("3");
        assert_eq!(retry_after(&v), Some(Duration::from_secs(3)));
        let v = http::HeaderValue::from_static("soon");
        assert_eq!(retry_after(&v), None);
    }
}
