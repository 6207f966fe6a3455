//! Stage ⑤ — the services floor: what lives as long as the process, whichever schema is
//! in service — the shared cache, the upstream client and its batcher, the live hub, the
//! event sources, the bus to the other replicas, the metrics — and the one way a change
//! is applied: [`Services::invalidate`] (a mutation's tags, the webhook) and
//! [`Services::apply_remote`] (what another replica said). A schema reload builds a new
//! [`crate::resolve::Runtime`] around the same services: only the plan is swapped.

use crate::bus::{Bus, Remote};
use crate::cache::{Cache, Tag};
use crate::events::Sources;
use crate::metrics::Metrics;
use crate::upstream::batch::Batcher;
use crate::upstream::UpstreamClient;
use crate::watch::Hub;
use std::sync::Arc;
use std::time::Duration;

/// The process-lifetime services (see the module's documentation).
pub struct Services {
    pub cache: Cache,
    pub client: UpstreamClient,
    pub batcher: Batcher,
    pub hub: Arc<Hub>,
    /// Event sources (upstream WebSockets today): one connection per stream, shared.
    pub sources: Arc<Sources>,
    pub metrics: Arc<Metrics>,
    /// Invalidations reach the other replicas through it.
    pub bus: Bus,
    /// Largest response one operation may write (`--max-response-bytes`).
    pub max_response: usize,
    /// OpenTelemetry traces (off unless `--otlp-endpoint`).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Fields already warned about (see [`Services::warn_unshareable`]).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What [`Services::new`] is built from: the parts made from the options.
pub struct Parts {
    pub cache: Cache,
    pub client: UpstreamClient,
    pub bus: Bus,
    pub sources: Arc<Sources>,
    pub metrics: Arc<Metrics>,
    /// How long a batched field waits for its siblings (`--batch-window-ms`).
    pub batch_window: Duration,
    /// How long a polled or fed entry is kept up after its last subscriber left.
    pub live_grace: Duration,
    pub max_response: usize,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl Services {
    pub fn new(parts: Parts) -> Arc<Services> {
        let Parts {
            cache,
            client,
            bus,
            sources,
            metrics,
            batch_window,
            live_grace,
            max_response,
            telemetry,
        } = parts;
        let batcher = Batcher::new(client.clone(), batch_window);
        let hub = Hub::new(
            cache.clone(),
            live_grace,
            sources.clone(),
            telemetry.clone(),
        );
        Arc::new(Services {
            cache,
            client,
            batcher,
            hub,
            sources,
            metrics,
            bus,
            max_response,
            telemetry,
            warned: Default::default(),
        })
    }

    /// Drops the entries filed under `tags`, here and on every other replica, and wakes
    /// the live queries that read them (each refetches through the cache: one upstream
    /// request per entry). The other replicas are told first, which also drops the
    /// shared second-level entries, so the refetches here cannot find the old value
    /// there. Returns how many entries this replica dropped.
    /// `cause` (`mutation`, `webhook`) names the change in its trace.
    pub async fn invalidate(&self, tags: &[Tag], cause: &'static str) -> usize {
        // A trace of its own, linked to the request that caused it; the other replicas'
        // changes link to it in turn.
        let change = self.telemetry.change(cause, None);
        change.run(self.bus.invalidated(tags)).await;
        crate::telemetry::within(&change, || self.invalidate_local(tags))
    }

    /// What another replica said changed, applied here (and not sent on).
    /// `trace`: the change on the replica that said it, which this one's links to.
    pub fn apply_remote(&self, remote: Remote, trace: Option<opentelemetry::trace::SpanContext>) {
        let change = match &remote {
            Remote::Delivery { .. } => crate::telemetry::Span::none(),
            _ => self.telemetry.change("replica", trace),
        };
        crate::telemetry::within(&change, || self.apply(remote));
    }

    fn apply(&self, remote: Remote) {
        match remote {
            Remote::Tags(tags) => {
                self.invalidate_local(&tags);
            }
            Remote::Everything => {
                self.cache.invalidate_all();
                self.hub.changed_all();
            }
            Remote::Changed(keys) => {
                for key in &keys {
                    self.cache.forget(key);
                }
                self.hub.changed(&keys);
            }
            Remote::Delivery { name, body } => self.sources.deliver(&name, body.into()),
        }
    }

    /// [`Services::invalidate`] on this replica only.
    pub fn invalidate_local(&self, tags: &[Tag]) -> usize {
        let mut keys: std::collections::HashSet<_> =
            self.cache.invalidate(tags).into_iter().collect();
        keys.extend(self.hub.invalidated(tags));
        self.metrics.invalidated_entries.inc_by(keys.len() as u64);
        keys.len()
    }

    /// Says once per field that its upstream forbade a shared cache to keep its answers,
    /// when the schema asked to cache them (`@cache` on a field whose upstream marks
    /// answers `private` is a mistake: it is served uncached).
    pub fn warn_unshareable(&self, field: &str, cached: bool) {
        if !cached {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert(field.to_string()) {
            tracing::warn!(field, "the upstream marks this field's answers Cache-Control private or no-store: they are served to the caller and never cached, whatever @cache says");
        }
    }
}
