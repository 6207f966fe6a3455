//! The export of finished spans: a bounded queue (a span that finds it full is dropped
//! and counted, never waited for) drained by one task that sends batches through the
//! official OTLP exporter (HTTP/protobuf), over the gateway's own reqwest client.

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the exporting task is told besides spans.
enum Control {
    /// The provider's resource (service name), before the first span.
    Resource(opentelemetry_sdk::Resource),
    /// Send what is queued; answer when done (if asked).
    Flush(Option<tokio::sync::oneshot::Sender<()>>),
}

/// Asks the exporting task to send what is queued, and waits for it (at shutdown).
#[derive(Debug, Clone)]
pub struct Flusher(mpsc::UnboundedSender<Control>);

impl Flusher {
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.0.send(Control::Flush(Some(tx))).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}

/// The span processor: queues finished spans for the exporting task.
#[derive(Debug)]
pub struct Queue {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    dropped: prometheus::IntCounter,
    queued: prometheus::IntCounter,
}

impl Queue {
    /// Starts the exporting task toward `endpoint` (a collector's OTLP/HTTP base URL, to
    /// which `/v1/traces` is added, or a URL with a path, used as it is).
    pub fn start(
        endpoint: &str,
        options: &super::Options,
        http: reqwest::Client,
        metrics: &crate::metrics::Metrics,
    ) -> Result<(Queue, Flusher), String> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let mut url =
            url::Url::parse(endpoint).map_err(|e| format!("--otlp-endpoint is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(
                "--otlp-endpoint must be an http:// or https:// URL (OTLP over HTTP)".into(),
            );
        }
        if url.path().is_empty() || url.path() == "/" {
            url.set_path("/v1/traces");
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Client(http))
            .with_endpoint(url.to_string())
            .with_headers(options.headers.iter().cloned().collect())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("the OTLP exporter: {e}"))?;
        let (spans, rx) = mpsc::channel(options.queue.max(1));
        let (control, control_rx) = mpsc::unbounded_channel();
        let exported = metrics.trace_exports.clone();
        tokio::spawn(drain(
            exporter,
            rx,
            control_rx,
            options.delay.max(Duration::from_millis(1)),
            options.batch.max(1),
            exported,
        ));
        Ok((
            Queue {
                spans,
                control: control.clone(),
                dropped: metrics.trace_spans.with_label_values(&["dropped"]),
                queued: metrics.trace_spans.with_label_values(&["queued"]),
            },
            Flusher(control),
        ))
    }
}

impl opentelemetry_sdk::trace::SpanProcessor for Queue {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        match self.spans.try_send(span) {
            Ok(()) => self.queued.inc(),
            Err(_) => self.dropped.inc(),
        }
    }

    /// Asks for a flush without waiting: the SDK calls this from wherever the provider
    /// is dropped, which may be the runtime thread the exporting task needs
    /// ([`Flusher`] is the waiting way).
    fn force_flush(&self) -> OTelSdkResult {
        let _ = self.control.send(Control::Flush(None));
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        let _ = self.control.send(Control::Flush(None));
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        let _ = self.control.send(Control::Resource(resource.clone()));
    }
}

/// The exporting task: a batch goes when it is full or its first span has waited
/// `delay`; one export at a time.
async fn drain(
    mut exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
    delay: Duration,
    batch_size: usize,
    exported: prometheus::IntCounterVec,
) {
    let mut batch: Vec<SpanData> = Vec::new();
    let mut due: Option<tokio::time::Instant> = None;
    let mut failing = false;
    loop {
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut flushed = None;
        tokio::select! {
            span = spans.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    due.get_or_insert_with(|| tokio::time::Instant::now() + delay);
                    if batch.len() < batch_size {
                        continue;
                    }
                }
                // Every sender is gone: the provider was dropped.
                None => {
                    send(&exporter, std::mem::take(&mut batch), &exported, &mut failing).await;
                    return;
                }
            },
            c = control.recv() => match c {
                Some(Control::Resource(r)) => {
                    exporter.set_resource(&r);
                    continue;
                }
                Some(Control::Flush(done)) => {
                    while let Ok(span) = spans.try_recv() {
                        batch.push(span);
                    }
                    flushed = Some(done);
                }
                None => {}
            },
            () = wait => {}
        }
        due = None;
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(batch_size));
            let this = std::mem::replace(&mut batch, rest);
            send(&exporter, this, &exported, &mut failing).await;
        }
        if let Some(Some(done)) = flushed {
            let _ = done.send(());
        }
    }
}

async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    exported: &prometheus::IntCounterVec,
    failing: &mut bool,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match exporter.export(batch).await {
        Ok(()) => {
            exported.with_label_values(&["ok"]).inc_by(n);
            if std::mem::take(failing) {
                tracing::info!("trace export works again");
            }
        }
        Err(e) => {
            exported.with_label_values(&["failed"]).inc_by(n);
            if !std::mem::replace(failing, true) {
                tracing::warn!(error = %e, spans = n, "trace export failed; spans of failed exports are counted in livegate_trace_exported_spans_total");
            }
        }
    }
}

/// The exporter's HTTP client: the gateway's reqwest, with its trusted roots.
#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let res = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.without_url())?;
        let status = res.status();
        let headers = res.headers().clone();
        // A collector's answer is small; a large one is cut off, not kept.
        if res.content_length().is_some_and(|n| n > 1 << 20) {
            return Err("the collector's answer is larger than 1 MiB".into());
        }
        let body = res.bytes().await.map_err(|e| e.without_url())?;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
