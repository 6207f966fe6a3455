//! Shared subscriptions. Subscribers of the same operation with the same variables and
//! the same credentials (every request header that can change an upstream's answer: see
//! [`crate::response_cache::ResponseCache::identity`]) form one [`Topic`]: one execution
//! per change or event, one encoded result, pushed into each subscriber's [`Outbox`] with
//! only the frame around it (the operation id) its own. An idle subscriber is an entry in
//! its topic — no task, no stream — and the topic's one task does the work of a change.
//!
//! A topic ends when its last subscriber leaves (its task is stopped, its hub watch and
//! socket tap go with it), when its live query turns out to be a request error (every
//! subscriber gets the error), or when its event source closes (every subscriber gets
//! `complete`).

use super::members::{Members, Pushed, Subscriber};
use crate::cache::CacheKey;
use crate::exec::Engine;
use crate::request::RequestContext;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Live,
    Events,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Live => "live",
            Kind::Events => "stream",
        }
    }
}

/// A topic's identity (see [`crate::response_cache::ResponseCache::identity`]) and kind.
type Key = (CacheKey, Kind);

/// The topics of this gateway, by key.
pub struct Topics {
    map: Mutex<HashMap<Key, Arc<Topic>>>,
    /// The engine in service: a topic moves to the new one when the schema is reloaded.
    engines: Arc<crate::exec::Engines>,
}

pub struct Topic {
    key: Key,
    registry: Weak<Topics>,
    state: Mutex<State>,
    task: Mutex<Option<AbortHandle>>,
    /// Counts this topic in `livegate_subscription_groups` while it lives.
    _group: crate::metrics::GaugeGuard,
}

#[derive(Default)]
struct State {
    subscribers: Members,
    /// A live query's latest result: what a new subscriber gets at once.
    last: Option<Bytes>,
    closed: bool,
}

/// One subscriber's place in a topic; leaving is dropping it.
pub struct Subscribed {
    topic: Arc<Topic>,
    id: u64,
    _active: crate::metrics::GaugeGuard,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.topic.leave(self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Topics {
    pub fn new(engines: Arc<crate::exec::Engines>) -> Self {
        Topics {
            map: Mutex::default(),
            engines,
        }
    }

    /// Subscribes to the live query `live` (the subscription rewritten as a query),
    /// joining the topic of its identity or starting one.
    pub fn live(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        live: super::LiveQuery,
        ctx: &RequestContext,
        subscriber: Subscriber,
    ) -> Subscribed {
        let key = (engine.responses.identity(&live.request, ctx), Kind::Live);
        self.join(engine, key, subscriber, |topic| {
            let ctx = ctx.clone();
            let engines = self.engines.clone();
            tokio::spawn(run_live(topic, engines, live, ctx)).abort_handle()
        })
    }

    /// Subscribes to the `@stream` subscription `request`: joins its topic, or prepares the
    /// document and starts one. `None` when the request is refused (the subscriber has been
    /// sent why, and that it ended).
    pub async fn events(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        mut request: async_graphql::Request,
        ctx: &RequestContext,
        subscriber: Subscriber,
    ) -> Option<Subscribed> {
        let key = (engine.responses.identity(&request, ctx), Kind::Events);
        let subscriber = match self.running(&key) {
            Some(topic) => match topic.add(engine, subscriber) {
                Ok(joined) => return Some(joined),
                Err(back) => back,
            },
            None => subscriber,
        };
        let ready = match events_setup(engine, &mut request).await {
            Ok(ready) => ready,
            Err(body) => {
                end_one(&subscriber, Some(&body));
                return None;
            }
        };
        Some(self.join(engine, key, subscriber, |topic| {
            let engines = self.engines.clone();
            let ctx = ctx.clone();
            tokio::spawn(run_events(
                topic,
                engines,
                engine.runtime.clone(),
                request,
                ctx,
                ready,
            ))
            .abort_handle()
        }))
    }

    /// The topic under `key`, if it still runs.
    fn running(&self, key: &Key) -> Option<Arc<Topic>> {
        lock(&self.map).get(key).cloned()
    }

    /// Joins the running topic under `key`, or starts one with `start`.
    fn join(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        key: Key,
        subscriber: Subscriber,
        start: impl FnOnce(Arc<Topic>) -> AbortHandle,
    ) -> Subscribed {
        let mut map = lock(&self.map);
        let subscriber = match map.get(&key) {
            // A topic ending on its own refuses; a new one takes its place.
            Some(topic) => match topic.add(engine, subscriber) {
                Ok(joined) => return joined,
                Err(back) => back,
            },
            None => subscriber,
        };
        let kind = key.1;
        let topic = Arc::new(Topic {
            key,
            registry: Arc::downgrade(self),
            state: Mutex::default(),
            task: Mutex::new(None),
            _group: crate::metrics::GaugeGuard::new(
                engine
                    .runtime
                    .metrics
                    .subscription_groups
                    .with_label_values(&[kind.label()]),
            ),
        });
        // In before anyone else can find the topic (and, leaving, end it).
        let joined = topic.enter(&mut lock(&topic.state), engine, subscriber);
        map.insert(key, topic.clone());
        drop(map);
        let task = start(topic.clone());
        let mut slot = lock(&topic.task);
        if lock(&topic.state).closed {
            // Everyone left while it started.
            task.abort();
        } else {
            *slot = Some(task);
        }
        joined
    }
}

/// Connections one publishing step pushes to before it lets their writers run.
const SLICE: usize = 128;

/// Numbers subscribers across topics.
static NEXT_SUBSCRIBER: AtomicU64 = AtomicU64::new(1);

impl Topic {
    /// Adds `subscriber`; gives it back if the topic has ended.
    fn add(
        self: &Arc<Self>,
        engine: &Engine,
        subscriber: Subscriber,
    ) -> Result<Subscribed, Subscriber> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(subscriber);
        }
        Ok(self.enter(&mut st, engine, subscriber))
    }

    /// Adds `subscriber` to the open topic whose state `st` is.
    fn enter(
        self: &Arc<Self>,
        st: &mut State,
        engine: &Engine,
        subscriber: Subscriber,
    ) -> Subscribed {
        // A live query's newcomer gets the latest result at once (the first run, still
        // going, will push it otherwise).
        if let Some(last) = &st.last {
            subscriber
                .outbox
                .push_live(subscriber.tag, subscriber.framing.next(last));
        }
        let id = NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed);
        st.subscribers.insert(id, subscriber);
        Subscribed {
            _active: crate::metrics::GaugeGuard::new(
                engine
                    .runtime
                    .metrics
                    .subscriptions
                    .with_label_values(&[self.key.1.label()]),
            ),
            topic: self.clone(),
            id,
        }
    }

    fn leave(self: &Arc<Self>, id: u64) {
        let emptied = {
            let mut st = lock(&self.state);
            st.subscribers.remove(id);
            let emptied = st.subscribers.is_empty() && !st.closed;
            if emptied {
                st.closed = true;
            }
            emptied
        };
        if emptied {
            if let Some(task) = lock(&self.task).take() {
                task.abort();
            }
            self.unregister();
        }
    }

    fn unregister(self: &Arc<Self>) {
        if let Some(registry) = self.registry.upgrade() {
            let mut map = lock(&registry.map);
            if map.get(&self.key).is_some_and(|t| Arc::ptr_eq(t, self)) {
                map.remove(&self.key);
            }
        }
    }

    /// Pushes `body` to every subscriber: a live query's result (unless it is the one
    /// pushed last) or an event, one body, each in its own frame, a connection's frames
    /// at once. Connections are pushed to [`SLICE`] at a time, yielding between slices.
    /// On a runtime of one worker, the push writes the sockets lent to their outboxes
    /// itself (no writer is woken where none has to be); on several, it wakes the writers
    /// and they write on the other workers while it pushes the next slice. How many
    /// subscribers it reached, and how many it dropped (their connections were gone).
    async fn publish(&self, body: &Bytes, pushed: &prometheus::IntCounterVec) -> (u64, u64) {
        let live = self.key.1 == Kind::Live;
        let direct = tokio::runtime::Handle::current().metrics().num_workers() == 1;
        let end = {
            let mut st = lock(&self.state);
            if live {
                if st.last.as_ref() == Some(body) {
                    return (0, 0);
                }
                st.last = Some(body.clone());
            }
            st.subscribers.begin()
        };
        let mut out = Pushed::default();
        let mut from = 0;
        while from < end {
            let upto = (from + SLICE).min(end);
            {
                let mut st = lock(&self.state);
                if st.closed {
                    break;
                }
                st.subscribers
                    .push(from..upto, body, (live, direct), &mut out);
            }
            from = upto;
            if from < end {
                tokio::task::yield_now().await;
            }
        }
        lock(&self.state).subscribers.finish();
        for (transport, n) in out.by_transport.into_iter().filter(|(_, n)| *n > 0) {
            pushed.with_label_values(&[transport]).inc_by(n);
        }
        (out.reached, out.dropped)
    }

    /// Ends the topic: each subscriber gets `failure` (or `complete`).
    fn end(self: &Arc<Self>, failure: Option<&Bytes>) {
        let subscribers = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.subscribers.take()
        };
        self.unregister();
        for s in &subscribers {
            end_one(s, failure);
        }
    }
}

/// Tells one subscriber its subscription is over: the request error, or `complete`.
fn end_one(s: &Subscriber, failure: Option<&Bytes>) {
    let last = match failure {
        Some(body) => Some(s.framing.failure(body)),
        None => s.framing.complete(),
    };
    s.outbox.push_final(last, s.tag);
}

/// Stops watching the hub when the live topic's task ends (or is stopped).
struct Unwatch(Arc<crate::watch::Hub>, crate::watch::hub::SubId);

impl Drop for Unwatch {
    fn drop(&mut self) {
        self.0.unwatch(self.1);
    }
}

/// A live topic's task: runs the query, pushes the result if it changed, watches what it
/// read, and waits for one of those entries to change (one permit however many changes
/// arrive meanwhile: a slow upstream sees one re-run, not a queue of them). After a schema
/// reload it runs on the new engine, or ends with an error if its field is gone.
async fn run_live(
    topic: Arc<Topic>,
    engines: Arc<crate::exec::Engines>,
    live: super::LiveQuery,
    ctx: RequestContext,
) {
    let mut swaps = engines.swaps();
    let hub = engines.current().runtime.hub.clone();
    let watch = Unwatch(hub.clone(), hub.next_id());
    let notify = Arc::new(Notify::new());
    let mut poll = live.poll;
    // While a result holds values served stale (their refresh failed, `staleIfError`),
    // the query runs again after this long, doubling to 30 s, until the upstream answers.
    let mut stale_retry = Duration::from_secs(1);
    // The change that woke this run, when traced: the run is a child of it.
    let mut cause: Option<opentelemetry::trace::SpanContext> = None;
    loop {
        let engine = engines.current();
        let generation = hub.generation();
        let telemetry = &engine.runtime.telemetry;
        let span = match cause.take() {
            Some(c) => telemetry.under(
                "live.rerun",
                &c,
                vec![crate::telemetry::Attr::new(
                    "livegate.subscription",
                    live.field.clone(),
                )],
            ),
            None => crate::telemetry::Span::none(),
        };
        // Boxed: between runs the task holds no room for an execution's state.
        let done = span
            .run(Box::pin(crate::exec::run(
                &engine,
                super::clone_request(&live.request),
                &ctx,
            )))
            .await;
        if done.request_error {
            topic.end(Some(&done.body));
            return;
        }
        hub.watch(watch.1, &notify, &done.read.keys);
        if let Some(root) = &done.read.root {
            if let Some(every) = poll {
                hub.poll(root.clone(), every);
            }
            if root.updates.is_some() {
                hub.feed(root.clone());
            }
        }
        // A change may have landed while we ran, before we were watching: look again
        // after this result (a permit, so at most one extra run).
        if hub.generation() != generation {
            notify.notify_one();
        }
        let (reached, dropped) = topic
            .publish(&done.body, &engine.runtime.metrics.pushed)
            .await;
        if span.is_on() {
            span.set("livegate.subscribers.reached", reached as i64);
            span.set("livegate.subscribers.dropped", dropped as i64);
            span.set("livegate.stale", done.read.stale);
        }
        drop(span);
        let stale = done.read.stale;
        let retry_in = stale_retry;
        stale_retry = if stale {
            (stale_retry * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = tokio::time::sleep(retry_in), if stale => {}
            () = notify.notified() => {
                cause = hub.cause(watch.1);
                // Its `@updates` stream failed for good: end with why.
                let failed = done.read.root.as_ref().and_then(|r| hub.failure(&r.key));
                if let Some(failure) = failed {
                    topic.end(Some(&Bytes::from(failure_body(&failure))));
                    return;
                }
            }
            swapped = swaps.changed() => {
                if swapped.is_err() {
                    return;
                }
                let engine = engines.current();
                let plan = &engine.runtime.plan;
                match plan.subscription_field(&live.field).and_then(|f| f.live.as_ref()) {
                    Some(l) => poll = l.poll,
                    None => {
                        let gone = crate::exec::error_body(
                            &format!("`{}` is no longer a live field of this schema (it was reloaded)", live.field),
                            Some("SCHEMA_RELOADED"),
                        );
                        topic.end(Some(&Bytes::from(gone)));
                        return;
                    }
                }
            }
        }
    }
}

/// What an event topic runs: the call (its planned operation) and its event source.
type EventsReady = (crate::exec::EventCall, Arc<crate::plan::SourcePlan>);

/// Prepares an `@stream` subscription on `engine`; the refusal is a response body.
async fn events_setup(
    engine: &Arc<Engine>,
    request: &mut async_graphql::Request,
) -> Result<EventsReady, Bytes> {
    let prepared = match engine.executor.cached(&engine.runtime, request) {
        Some(p) => p,
        None => {
            engine
                .executor
                .prepare(&engine.schema, &engine.runtime, request)
                .await?
        }
    };
    let call = crate::exec::events_call(&engine.runtime, &prepared, &request.variables)
        .map_err(|out| out.body)?;
    let Some(source) = call.field.stream.clone() else {
        return Err(Bytes::from(crate::exec::error_body(
            "the subscription selects no event field",
            None,
        )));
    };
    Ok((call, source))
}

/// An event topic's task: each matching upstream message is executed once and pushed to
/// every subscriber; `complete` when the source closes for good. After a schema reload
/// the document is prepared again on the new engine (an error ends the topic).
async fn run_events(
    topic: Arc<Topic>,
    engines: Arc<crate::exec::Engines>,
    mut rt: Arc<crate::resolve::Runtime>,
    mut request: async_graphql::Request,
    ctx: RequestContext,
    ready: EventsReady,
) {
    use futures_util::StreamExt;
    let mut swaps = engines.swaps();
    let (mut call, mut source) = ready;
    loop {
        let payloads =
            crate::resolve::stream::payloads(&rt, &call.field, &source, &call.args, &ctx);
        tokio::pin!(payloads);
        loop {
            tokio::select! {
                payload = payloads.next() => {
                    let payload = match payload {
                        Some(Ok(payload)) => payload,
                        // The event source is gone for good: every subscriber is complete.
                        None => {
                            topic.end(None);
                            return;
                        }
                        // It failed for good: every subscriber ends with why.
                        Some(Err(failure)) => {
                            topic.end(Some(&Bytes::from(failure_body(&failure))));
                            return;
                        }
                    };
                    let payload = Arc::try_unwrap(payload).unwrap_or_else(|shared| (*shared).clone());
                    // Each event is a trace of its own: its execution and its push.
                    let span = rt.telemetry.change(source.stream.kind(), None);
                    if span.is_on() {
                        span.set("livegate.subscription", call.field.name.clone());
                    }
                    let out = span
                        .run(crate::exec::execute_event(&rt, &call, &ctx, payload))
                        .await;
                    let (reached, dropped) = topic.publish(&out.body, &rt.metrics.pushed).await;
                    span.set("livegate.subscribers.reached", reached as i64);
                    span.set("livegate.subscribers.dropped", dropped as i64);
                }
                swapped = swaps.changed() => {
                    if swapped.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
        let engine = engines.current();
        match events_setup(&engine, &mut request).await {
            Ok(ready) => {
                rt = engine.runtime.clone();
                (call, source) = ready;
            }
            Err(body) => {
                topic.end(Some(&body));
                return;
            }
        }
    }
}

/// The error body a subscription ends with when its event source failed for good.
fn failure_body(failure: &crate::events::Failure) -> String {
    let mut extensions = serde_json::json!({ "code": failure.code });
    if let Some(status) = failure.status {
        extensions["status"] = status.into();
    }
    serde_json::json!({ "errors": [{ "message": failure.message, "extensions": extensions }] })
        .to_string()
}
