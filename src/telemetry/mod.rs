//! OpenTelemetry traces (`--otlp-endpoint`): spans for each request and each change of
//! live data, exported over OTLP/HTTP (protobuf) by the official exporter.
//!
//! - One [`Telemetry`] per gateway (tests run several in one process), off unless an
//!   endpoint is set; off, every call here is a branch on `None` and nothing else.
//! - The current span travels in a task-local ([`scope`], [`current`]) from the transport
//!   down to the upstream client, and into the tasks the cache spawns for a fetch
//!   ([`carry`]): a fetch shared by many requests is a child of the one that started it.
//! - W3C `traceparent`/`tracestate` come in from clients ([`Telemetry::extract`]) and go
//!   out to upstreams on every REST request and socket handshake ([`inject`]).
//! - Spans are queued for export by [`export`], which drops (and counts) them rather than
//!   slow a request when the queue is full.

pub mod export;

use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub use opentelemetry::trace::Status;
pub use opentelemetry::{KeyValue as Attr, Value};

/// How tracing is set up (`--otlp-*`, `--trace-*`, the `OTEL_*` environment variables).
#[derive(Debug, Clone)]
pub struct Options {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`, spans go to
    /// `/v1/traces`) or its full traces URL; `None`: tracing off.
    pub endpoint: Option<String>,
    pub service_name: String,
    /// Of the traces that start here (a client's sampled `traceparent` is followed).
    pub sample_ratio: f64,
    /// Put the operation's document in the request span (`graphql.document`).
    pub documents: bool,
    /// Spans waiting for export at most; past it new spans are dropped (and counted).
    pub queue: usize,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`: `k=v,k=v`).
    pub headers: Vec<(String, String)>,
    /// How long a span waits in the queue before its batch is sent, at most
    /// (`OTEL_BSP_SCHEDULE_DELAY`).
    pub delay: std::time::Duration,
    /// Spans sent in one export at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            endpoint: None,
            service_name: "livegate".into(),
            sample_ratio: 1.0,
            documents: false,
            queue: 4096,
            headers: Vec::new(),
            delay: std::time::Duration::from_secs(1),
            batch: 512,
        }
    }
}

/// A gateway's tracer, or nothing.
pub struct Telemetry {
    on: Option<On>,
}

struct On {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    flusher: export::Flusher,
    documents: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("on", &self.on.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Tracing off.
    pub fn off() -> Telemetry {
        Telemetry { on: None }
    }

    /// Tracing to `options.endpoint` when set (else off). Must run inside the tokio
    /// runtime (the exporter's task is spawned on it).
    pub fn start(
        options: &Options,
        http: reqwest::Client,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Telemetry, String> {
        let Some(endpoint) = &options.endpoint else {
            return Ok(Telemetry::off());
        };
        let (processor, flusher) = export::Queue::start(endpoint, options, http, metrics)?;
        let ratio = options.sample_ratio.clamp(0.0, 1.0);
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
            )))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(options.service_name.clone())
                    .build(),
            )
            .build();
        use opentelemetry::trace::TracerProvider as _;
        let tracer = provider.tracer("livegate");
        Ok(Telemetry {
            on: Some(On {
                tracer,
                flusher,
                documents: options.documents,
            }),
        })
    }

    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// Whether request spans carry the document (`--trace-documents`).
    pub fn documents(&self) -> bool {
        self.on.as_ref().is_some_and(|o| o.documents)
    }

    /// A span under `parent` (a remote or local context), or nothing when tracing is off.
    pub fn span(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<&Context>,
        attrs: Vec<KeyValue>,
    ) -> Span {
        let Some(on) = &self.on else {
            return Span(None);
        };
        let builder = on
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs);
        let root = Context::new();
        let span = on
            .tracer
            .build_with_context(builder, parent.unwrap_or(&root));
        Span::recorded(span)
    }

    /// A span under the task's current one; nothing when there is none (work outside
    /// a traced request or change is not traced piecemeal) or it is not recorded.
    pub fn child(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: SpanKind,
        attrs: Vec<KeyValue>,
    ) -> Span {
        if self.on.is_none() {
            return Span(None);
        }
        match current() {
            Some(parent) => self.span(name, kind, Some(&parent), attrs),
            None => Span(None),
        }
    }

    /// A span that starts a trace of its own (a change of live data), linked to the
    /// traces that caused it and started at `start`.
    pub fn root(
        &self,
        name: &'static str,
        links: Vec<SpanContext>,
        start: std::time::SystemTime,
        attrs: Vec<KeyValue>,
    ) -> Span {
        let Some(on) = &self.on else {
            return Span(None);
        };
        let links = links
            .into_iter()
            .filter(SpanContext::is_valid)
            .map(Link::with_context)
            .collect();
        let builder = on
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_links(links)
            .with_attributes(attrs);
        let span = on.tracer.build_with_context(builder, &Context::new());
        Span::recorded(span)
    }

    /// The root span of a change of live data (`live.change`) caused by `cause`
    /// (`mutation`, `webhook`, `poll`, `socket`, `replica`, …), linked to the trace that
    /// caused it: `link`, else the task's current span.
    pub fn change(&self, cause: &'static str, link: Option<SpanContext>) -> Span {
        if self.on.is_none() {
            return Span(None);
        }
        let links = link.or_else(current_span_context).into_iter().collect();
        self.root(
            "live.change",
            links,
            std::time::SystemTime::now(),
            vec![KeyValue::new("livegate.cause", cause)],
        )
    }

    /// A span whose parent is `parent`, a span of another task (the change a re-run
    /// follows).
    pub fn under(&self, name: &'static str, parent: &SpanContext, attrs: Vec<KeyValue>) -> Span {
        if self.on.is_none() {
            return Span(None);
        }
        let cx = Context::new().with_remote_span_context(parent.clone());
        self.span(name, SpanKind::Internal, Some(&cx), attrs)
    }

    /// The caller's trace context from W3C `traceparent`/`tracestate` headers.
    pub fn extract(&self, headers: &http::HeaderMap) -> Option<Context> {
        self.on.as_ref()?;
        extracted(headers)
    }

    /// The trace context of a JSON object's `traceparent`/`tracestate` members (a
    /// WebSocket's `connection_init` payload, or its `headers` member).
    pub fn extract_json(&self, payload: &serde_json::Value) -> Option<Context> {
        self.on.as_ref()?;
        let mut headers = http::HeaderMap::new();
        for source in [payload, &payload["headers"]] {
            for name in ["traceparent", "tracestate"] {
                if let Some(v) = source[name].as_str().and_then(|v| v.parse().ok()) {
                    headers.insert(name, v);
                }
            }
        }
        self.extract(&headers)
    }

    /// Sends what is queued, waiting at most `within` (at shutdown).
    pub async fn flush(&self, within: std::time::Duration) {
        if let Some(on) = &self.on {
            on.flusher.flush(within).await;
        }
    }
}

/// A span being recorded (ended when dropped), or nothing.
#[derive(Default)]
pub struct Span(Option<Context>);

impl Span {
    /// Nothing: tracing off.
    pub fn none() -> Span {
        Span(None)
    }

    /// `span`, when it is sampled; a trace the sampler left out costs nothing further:
    /// none of its children is made, nothing is sent on.
    fn recorded(span: opentelemetry_sdk::trace::Span) -> Span {
        use opentelemetry::trace::Span as _;
        if span.span_context().is_sampled() {
            Span(Some(Context::new().with_span(span)))
        } else {
            Span(None)
        }
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed, with `message` (a code or a short reason, never a secret).
    pub fn fail(&self, message: impl Into<std::borrow::Cow<'static, str>>) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(message));
        }
    }

    /// Runs `fut` with this span as the task's current one.
    pub async fn run<F: std::future::Future>(&self, fut: F) -> F::Output {
        scope(self.0.clone(), fut).await
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

tokio::task_local! {
    static CURRENT: Option<Context>;
}

/// The task's current span context, if any.
pub fn current() -> Option<Context> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// Runs `f` with `span` as the current span (a synchronous scope).
pub fn within<R>(span: &Span, f: impl FnOnce() -> R) -> R {
    match &span.0 {
        Some(cx) => CURRENT.sync_scope(Some(cx.clone()), f),
        None => f(),
    }
}

/// Runs `fut` under `cx` (no change when `None`).
pub async fn scope<F: std::future::Future>(cx: Option<Context>, fut: F) -> F::Output {
    match cx {
        Some(cx) => CURRENT.scope(Some(cx), fut).await,
        None => fut.await,
    }
}

/// `fut`, carrying the current span context into wherever it is spawned.
pub fn carry<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    let cx = current();
    scope(cx, fut)
}

/// Adds the current span's `traceparent` (and `tracestate`) to `headers`, for an
/// upstream request or handshake.
pub fn inject(headers: &mut http::HeaderMap) {
    let Some(cx) = current() else { return };
    if !cx.span().span_context().is_valid() {
        return;
    }
    use opentelemetry::propagation::TextMapPropagator as _;
    TraceContextPropagator::new()
        .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
}

/// Sets `attrs` on the task's current span (the request's), if any.
pub fn annotate(attrs: &[KeyValue]) {
    if let Some(cx) = current() {
        cx.span().set_attributes(attrs.iter().cloned());
    }
}

/// The current span's identity, for a link from a trace it causes (a mutation's
/// invalidation, a webhook's delivery).
pub fn current_span_context() -> Option<SpanContext> {
    current()
        .map(|cx| cx.span().span_context().clone())
        .filter(SpanContext::is_valid)
}

/// The W3C trace context `headers` carry, when they carry a valid one.
fn extracted(headers: &http::HeaderMap) -> Option<Context> {
    use opentelemetry::propagation::TextMapPropagator as _;
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A span context as `traceparent` text, to travel to another replica in a message.
pub fn traceparent(sc: &SpanContext) -> String {
    use opentelemetry::propagation::TextMapPropagator as _;
    let mut headers = http::HeaderMap::new();
    let cx = Context::new().with_remote_span_context(sc.clone());
    TraceContextPropagator::new()
        .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A span context from `traceparent` text (another replica's), if it is one.
pub fn from_traceparent(text: &str) -> Option<SpanContext> {
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", text.parse().ok()?);
    extracted(&headers).map(|cx| cx.span().span_context().clone())
}
