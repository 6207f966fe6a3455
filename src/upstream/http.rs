//! One HTTP request to a REST upstream: reqwest with a pooled client, a deadline over the
//! whole exchange (connect, headers and body), a size limit enforced while the body
//! streams in, and the body parsed as JSON. Every failure is an [`UpstreamError`].

use super::UpstreamError;
use crate::config::HttpMethod;
use crate::metrics::Metrics;
use crate::plan::UpstreamPlan;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A request ready to send: built by [`crate::resolve`] from a field's plan.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub upstream: Arc<UpstreamPlan>,
    pub method: HttpMethod,
    /// May be sent again after a failure that may pass (GET, or `@rest(idempotent:)`).
    pub idempotent: bool,
    /// The path as the schema writes it, for traces.
    pub route: Arc<str>,
    /// The path reads the caller's claims: a log line shows `route`, not the URL.
    pub route_reads_claims: bool,
    pub url: url::Url,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Option<Bytes>,
    /// How an error body becomes the client's error (`None`: only the status is said).
    pub errors: Option<Arc<crate::plan::ErrorMapping>>,
    /// Response headers to keep in the [`Answer`] (lower-case names; `link` for links).
    pub keep_headers: Arc<[String]>,
}

/// An upstream's answer: its JSON, and whether a shared cache may keep it (the cache
/// weighs the value itself, see [`crate::weight`]).
#[derive(Debug, Clone)]
pub struct Answer {
    pub value: Value,
    /// `false` when the upstream said `Cache-Control: private` or `no-store`: the value
    /// goes to the caller who asked and is never stored for anyone (RFC 9111), whatever
    /// the schema's `@cache` says.
    pub shareable: bool,
    /// The upstream's `ETag` and `Last-Modified`, for a later conditional request.
    pub validators: Validators,
    /// The upstream answered `304 Not Modified` to a conditional request: `value` is
    /// nothing, the stored one stands.
    pub not_modified: bool,
    /// Its `Cache-Control` freshness, which can only shorten the schema's `maxAge`.
    pub freshness: crate::key::Freshness,
    /// The response headers the request asked to keep (lower-case names, in order).
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The part of this answer at the `select` path (all of it for an empty path, or a
    /// `304`, which has nothing), taken out without copying; an answer without that part
    /// is a bad response from `upstream`.
    pub fn select(
        mut self,
        path: &[String],
        upstream: &str,
    ) -> Result<Answer, super::UpstreamError> {
        if path.is_empty() || self.not_modified {
            return Ok(self);
        }
        let picked = path
            .iter()
            .try_fold(std::mem::take(&mut self.value), |v, seg| match v {
                Value::Object(mut map) => map.remove(seg.as_str()),
                _ => None,
            });
        self.value = picked.ok_or_else(|| super::UpstreamError::BadResponse {
            upstream: upstream.to_string(),
            detail: format!("the response has no `{}` (select)", path.join(".")),
        })?;
        Ok(self)
    }

    /// A value a shared cache may keep.
    pub fn new(value: Value) -> Answer {
        Answer {
            value,
            shareable: true,
            validators: Validators::default(),
            not_modified: false,
            freshness: Default::default(),
            headers: Vec::new(),
        }
    }
}

/// What a conditional request sends back: `If-None-Match` with the `ETag`,
/// `If-Modified-Since` with the `Last-Modified` date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<http::HeaderValue>,
    pub last_modified: Option<http::HeaderValue>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    fn of(headers: &http::HeaderMap) -> Validators {
        Validators {
            etag: headers.get(http::header::ETAG).cloned(),
            last_modified: headers.get(http::header::LAST_MODIFIED).cloned(),
        }
    }
}

/// Semaphores of requests in flight, by upstream name, URL and bound.
type Bounds = std::collections::HashMap<(String, String, usize), Arc<tokio::sync::Semaphore>>;

/// The shared client of all upstream calls.
#[derive(Clone)]
pub struct UpstreamClient {
    client: reqwest::Client,
    default_timeout: Duration,
    max_body: usize,
    metrics: Arc<Metrics>,
    /// `--upstream-max-connections`, for upstreams without `maxConnections`.
    default_max_connections: usize,
    /// Requests in flight by upstream (name, URL and bound: a reload that changes one
    /// gets a bound of its own).
    in_flight: Arc<std::sync::Mutex<Bounds>>,
    /// Each upstream's circuit breaker and retry budget.
    guards: Arc<super::guard::Guards>,
    /// A span per attempt, when tracing.
    telemetry: Arc<crate::telemetry::Telemetry>,
}

/// What an [`UpstreamClient`] is made with (from the command line).
pub struct Setup<'a> {
    /// `--upstream-timeout-ms`, for upstreams without `timeoutMs`.
    pub default_timeout: Duration,
    /// `--max-upstream-body`.
    pub max_body: usize,
    pub metrics: Arc<Metrics>,
    /// `--upstream-ca-file`.
    pub roots: &'a super::tls::ExtraRoots,
    /// `--upstream-follow-redirects`.
    pub follow_redirects: bool,
    /// `--upstream-max-connections`.
    pub default_max_connections: usize,
    pub guards: Arc<super::guard::Guards>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl UpstreamClient {
    pub fn new(setup: Setup<'_>) -> Self {
        let Setup {
            default_timeout,
            max_body,
            metrics,
            roots,
            follow_redirects,
            default_max_connections,
            guards,
            telemetry,
        } = setup;
        let builder = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .redirect(redirects(follow_redirects));
        let client = roots.trusted_by(builder).build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "upstream HTTP client: falling back to defaults");
            reqwest::Client::new()
        });
        UpstreamClient {
            client,
            default_timeout,
            max_body,
            metrics,
            default_max_connections: default_max_connections.max(1),
            in_flight: Default::default(),
            guards,
            telemetry,
        }
    }

    /// The bound on `upstream`'s requests in flight.
    fn bound(&self, upstream: &crate::plan::UpstreamPlan) -> Arc<tokio::sync::Semaphore> {
        let max = upstream
            .max_connections
            .unwrap_or(self.default_max_connections);
        let key = (upstream.name.clone(), upstream.url.to_string(), max);
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max)))
            .clone()
    }

    /// Sends `req` and returns the parsed JSON body.
    pub async fn send(&self, req: &UpstreamRequest) -> Result<Answer, UpstreamError> {
        self.send_if(req, &Validators::default()).await
    }

    /// The gateway's tracer.
    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    /// The guards of the upstreams (breakers, retry budgets), which event sources consult
    /// too.
    pub fn guards(&self) -> &Arc<super::guard::Guards> {
        &self.guards
    }

    /// Sends `req`, conditional on `validators` when there are any: a `304` is an
    /// [`Answer`] that says `not_modified`, without a body. Within the request's deadline
    /// (`timeoutMs`), an idempotent request is tried again after a failure that may pass
    /// (no answer, a timeout of one attempt, 502/503/504), after a jittered backoff or the
    /// upstream's `Retry-After`, as the upstream's retry budget allows; while the
    /// upstream's breaker is open, it fails at once.
    pub async fn send_if(
        &self,
        req: &UpstreamRequest,
        validators: &Validators,
    ) -> Result<Answer, UpstreamError> {
        let timeout = req.upstream.timeout.unwrap_or(self.default_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let name = req.upstream.name.as_str();
        let guard = self.guards.of(&req.upstream);
        let settings = self.guards.settings();
        let retries = req.upstream.retries.unwrap_or(settings.retries);
        let per_attempt = req.upstream.attempt_timeout.or(settings.attempt_timeout);
        guard.request();
        let mut attempt = 0;
        let result = loop {
            let Some(admitted) = guard.admit() else {
                self.metrics
                    .short_circuited
                    .with_label_values(&[name])
                    .inc();
                return Err(UpstreamError::Unavailable {
                    upstream: name.to_string(),
                    detail: "its circuit breaker is open after repeated failures; failing at once until it answers again".into(),
                });
            };
            // An attempt ends at its own timeout, or at the request's deadline if sooner;
            // a timeout says which one it hit.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (this_try, said) = match per_attempt {
                Some(p) if p < left => (p, p),
                _ => (left, timeout),
            };
            let mut wait = None;
            let sent = tokio::time::Instant::now();
            let span = self.span(req, attempt);
            let result = span
                .run(self.attempt(req, validators, this_try, said, &mut wait))
                .await;
            self.count(req, &result, sent.elapsed());
            traced(&span, &result);
            admitted.done(result.as_ref().is_err_and(UpstreamError::is_outage));
            let passing = result.as_ref().is_err_and(UpstreamError::may_pass);
            if !passing || !req.idempotent || attempt >= retries {
                break result;
            }
            attempt += 1;
            let pause = wait.unwrap_or_else(|| super::guard::backoff(attempt));
            // Only when the retry can still finish in time, and the budget allows it.
            let room = deadline.saturating_duration_since(tokio::time::Instant::now());
            if pause + Duration::from_millis(1) >= room || !guard.may_retry() {
                self.metrics
                    .retries
                    .with_label_values(&[name, "denied"])
                    .inc();
                break result;
            }
            self.metrics
                .retries
                .with_label_values(&[name, "sent"])
                .inc();
            tokio::time::sleep(pause).await;
        };
        if let Err(e) = &result {
            // A path made of the caller's claims is shown as its template.
            let url = if req.route_reads_claims {
                let mut base = req.upstream.url.clone();
                base.set_query(None);
                let base = super::redact(&base);
                format!("{}{}", base.trim_end_matches('/'), req.route)
            } else {
                super::redact(&req.url)
            };
            tracing::warn!(upstream = name, method = req.method.as_str(), url, code = e.code(), attempts = attempt + 1, error = %e, "upstream request failed");
        }
        result
    }

    /// The span of one attempt (`GET /users/{args.id}`, a client span), when tracing.
    fn span(&self, req: &UpstreamRequest, attempt: u32) -> crate::telemetry::Span {
        if !self.telemetry.is_on() {
            return crate::telemetry::Span::none();
        }
        use crate::telemetry::Attr;
        let mut attrs = vec![
            Attr::new("http.request.method", req.method.as_str()),
            Attr::new("url.template", req.route.to_string()),
            Attr::new("livegate.upstream", req.upstream.name.clone()),
            Attr::new(
                "server.address",
                req.url.host_str().unwrap_or_default().to_string(),
            ),
        ];
        if attempt > 0 {
            attrs.push(Attr::new("http.request.resend_count", i64::from(attempt)));
        }
        self.telemetry.child(
            format!("{} {}", req.method.as_str(), req.route),
            opentelemetry::trace::SpanKind::Client,
            attrs,
        )
    }

    /// Counts one attempt in `livegate_upstream_requests_total` and its duration.
    fn count(&self, req: &UpstreamRequest, result: &Result<Answer, UpstreamError>, took: Duration) {
        let status = match result {
            // A conditional request answered without a body: the economy ETags buy.
            Ok(answer) if answer.not_modified => "304",
            Ok(_) => "2xx",
            Err(UpstreamError::HttpError { status, .. }) if *status < 500 => "4xx",
            Err(UpstreamError::HttpError { .. }) => "5xx",
            // A 2xx whose body was refused still answered 2xx.
            Err(UpstreamError::BadResponse { .. } | UpstreamError::TooLarge { .. }) => "2xx",
            Err(_) => "error",
        };
        let name = req.upstream.name.as_str();
        self.metrics
            .upstream_requests
            .with_label_values(&[name, req.method.as_str(), status])
            .inc();
        self.metrics
            .upstream_seconds
            .with_label_values(&[name])
            .observe(took.as_secs_f64());
    }

    /// One attempt at `req`, within `limit` (a timeout says `said`): at most the
    /// upstream's bound of requests in flight (thousands of new topics at once must not
    /// open thousands of connections); the rest wait their turn within their deadline.
    /// `wait` gets a 502/503/504's `Retry-After`.
    async fn attempt(
        &self,
        req: &UpstreamRequest,
        validators: &Validators,
        limit: Duration,
        said: Duration,
        wait: &mut Option<Duration>,
    ) -> Result<Answer, UpstreamError> {
        let bound = self.bound(&req.upstream);
        let bounded = async {
            let _permit = bound.acquire().await;
            self.exchange(req, validators, wait).await
        };
        match tokio::time::timeout(limit, bounded).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout {
                upstream: req.upstream.name.clone(),
                ms: said.as_millis(),
            }),
        }
    }

    async fn exchange(
        &self,
        req: &UpstreamRequest,
        validators: &Validators,
        wait: &mut Option<Duration>,
    ) -> Result<Answer, UpstreamError> {
        let name = &req.upstream.name;
        let method = match req.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self
            .client
            .request(method, req.url.clone())
            .header(http::header::ACCEPT, "application/json");
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        // The attempt's span goes on to the upstream (W3C trace context).
        let mut trace = http::HeaderMap::new();
        crate::telemetry::inject(&mut trace);
        for (k, v) in &trace {
            builder = builder.header(k, v);
        }
        if let Some(etag) = &validators.etag {
            builder = builder.header(http::header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &validators.last_modified {
            builder = builder.header(http::header::IF_MODIFIED_SINCE, date);
        }
        if let Some(body) = &req.body {
            builder = builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        // reqwest quotes the URL in its errors; the client gets the upstream's name, the
        // log the redacted URL.
        let response = builder
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable {
                upstream: name.clone(),
                detail: super::scrub(&error_chain(&e.without_url()), &req.url),
            })?;
        let status = response.status();
        let freshness = crate::key::Freshness::of(
            response
                .headers()
                .get_all(http::header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        if status == reqwest::StatusCode::NOT_MODIFIED && !validators.is_empty() {
            let fresh = Validators::of(response.headers());
            return Ok(Answer {
                value: Value::Null,
                shareable: true,
                validators: if fresh.is_empty() {
                    validators.clone()
                } else {
                    fresh
                },
                not_modified: true,
                freshness,
                headers: Vec::new(),
            });
        }
        // Redirects are not followed (see `UpstreamClient::new`): a 3xx is an HTTP error.
        if !status.is_success() {
            if matches!(status.as_u16(), 429 | 502..=504) {
                *wait = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(super::guard::retry_after);
            }
            let mapped = match &req.errors {
                Some(mapping) => error_body(response, self.max_body)
                    .await
                    .and_then(|body| super::Mapped::read(&body, mapping))
                    .map(Arc::new),
                None => None,
            };
            return Err(UpstreamError::HttpError {
                upstream: name.clone(),
                status: status.as_u16(),
                mapped,
            });
        }
        let kept_headers: Vec<(String, String)> = req
            .keep_headers
            .iter()
            .flat_map(|name| {
                response
                    .headers()
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(|v| (name.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let shareable = !freshness.unshareable;
        let kept = if shareable {
            Validators::of(response.headers())
        } else {
            Validators::default()
        };
        if !shareable {
            self.metrics
                .uncacheable
                .with_label_values(&[name.as_str()])
                .inc();
        }
        let too_large = || UpstreamError::TooLarge {
            upstream: name.clone(),
            limit: self.max_body,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| UpstreamError::Unavailable {
                upstream: name.clone(),
                detail: format!(
                    "body broke off: {}",
                    super::scrub(&error_chain(&e.without_url()), &req.url)
                ),
            })?;
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() || body.iter().all(u8::is_ascii_whitespace) {
            // 204 and empty 200s: "no value", which a nullable field shows as null.
            return Ok(Answer {
                value: Value::Null,
                shareable,
                validators: kept,
                not_modified: false,
                freshness,
                headers: kept_headers,
            });
        }
        let value = serde_json::from_slice(&body).map_err(|e| UpstreamError::BadResponse {
            upstream: name.clone(),
            detail: format!("body is not JSON ({e})"),
        })?;
        Ok(Answer {
            value,
            shareable,
            validators: kept,
            not_modified: false,
            freshness,
            headers: kept_headers,
        })
    }
}

/// What an attempt's span says of its result: the status, or the failure's code.
fn traced(span: &crate::telemetry::Span, result: &Result<Answer, UpstreamError>) {
    if !span.is_on() {
        return;
    }
    match result {
        Ok(answer) if answer.not_modified => span.set("http.response.status_code", 304i64),
        Ok(_) => span.set("http.response.status_code", 200i64),
        Err(e) => {
            if let UpstreamError::HttpError { status, .. } = e {
                span.set("http.response.status_code", i64::from(*status));
            }
            span.set("error.type", e.code().to_string());
            span.fail(e.code().to_string());
        }
    }
}

/// An error response's body, for its error mapping: at most 64 KiB (and the upstream
/// body limit), read within the request's deadline; `None` if it is larger or breaks off.
async fn error_body(response: reqwest::Response, max_body: usize) -> Option<Vec<u8>> {
    let limit = max_body.min(64 << 10);
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return None;
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// Upstream redirects: none by default (a `3xx` is `UPSTREAM_HTTP_ERROR`: a REST API that
/// moved is a configuration to fix, and a redirect must never carry an upstream's
/// credentials elsewhere). With `--upstream-follow-redirects`, up to 5 within the same
/// origin (scheme, host and port), where the credentials were meant to go anyway.
fn redirects(follow: bool) -> reqwest::redirect::Policy {
    if !follow {
        return reqwest::redirect::Policy::none();
    }
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 5 || !same_origin {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// reqwest's top-level message is vague ("error sending request"); the causes say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
