//! Stage ⑤ — live queries. Input: a subscription operation on an `@live` field. Output: a
//! stream of GraphQL results: the current one at once, then a new one whenever a cache
//! entry behind any field the client selected changes, and nothing when the change leaves
//! the client's own selection as it was.
//!
//! A live operation runs as the *query* of the same text (`subscription` becomes `query`,
//! padded, so error positions stay right): `@live` fields mirror Query fields by plan. Each
//! run gathers the entries it read ([`crate::deps`]); the [`Hub`] wakes the subscription
//! when one changes, and the next run goes through the shared cache (and the
//! whole-response cache), so N subscribers of one entry cost one refetch. The wake-up is a
//! [`Notify`] permit: however many changes arrive while a client is slow, it gets one
//! re-run with the latest data (conflation), and memory stays bounded.

pub mod hub;
pub mod patch;

use crate::exec::Engine;
use async_graphql::parser::types::{OperationType, Selection};
use bytes::Bytes;
use futures_util::Stream;
use http::HeaderMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub use hub::Hub;

/// What a transport should do with an operation.
pub enum Prepared {
    /// A query or mutation (or a document that does not parse: running it reports why).
    Once(async_graphql::Request),
    /// A live query: run it as this query, again on every change.
    Live {
        request: async_graphql::Request,
        poll: Option<Duration>,
    },
    /// An event subscription (`@stream`): the executor's own subscription stream.
    Events(async_graphql::Request),
}

/// Decides how to run `req`: once, or live. An error is a message for the client: the
/// operation is a subscription livegate cannot serve.
pub fn prepare(engine: &Engine, mut req: async_graphql::Request) -> Result<Prepared, String> {
    bare_cr_as_lf(&mut req.query);
    let name = req.operation_name.clone();
    let subscription = req.parsed_query().is_ok_and(|doc| {
        crate::exec::operation(doc, name.as_deref())
            .is_some_and(|op| op.node.ty == OperationType::Subscription)
    });
    // A subscription is held to the same limits as a query (an event stream never reaches
    // the query executor, where queries and mutations are checked).
    if subscription {
        if let Some(refusal) = crate::exec::limits::check_document(&mut req, &engine.limits) {
            engine.runtime.metrics.reject(refusal.rejection());
            return Err(refusal.message);
        }
    }
    // Parsed once and kept in the request: the executor reuses it.
    let Ok(doc) = req.parsed_query() else {
        return Ok(Prepared::Once(req));
    };
    let Some(op) = crate::exec::operation(doc, name.as_deref()) else {
        return Ok(Prepared::Once(req));
    };
    if op.node.ty != OperationType::Subscription {
        return Ok(Prepared::Once(req));
    }
    let fields: Vec<&str> = op
        .node
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|s| match &s.node {
            Selection::Field(f) if f.node.name.node != "__typename" => {
                Some(f.node.name.node.as_str())
            }
            _ => None,
        })
        .collect();
    let [field] = fields.as_slice() else {
        return Err("a subscription selects exactly one root field".into());
    };
    let plan = &engine.runtime.plan;
    let Some(sub_field) = plan.subscription_field(field) else {
        return Err(format!(
            "`{field}` is not a subscription field of this schema"
        ));
    };
    if sub_field.stream.is_some() {
        return Ok(Prepared::Events(req));
    }
    let Some(live) = &sub_field.live else {
        return Err(format!("`{field}` is not a live field of this schema"));
    };
    let (pos, poll) = (op.pos, live.poll);
    let query =
        as_query(&req.query, pos).ok_or("the subscription could not be rewritten as a query")?;
    let mut request = async_graphql::Request::new(query).variables(req.variables);
    if let Some(name) = req.operation_name {
        request = request.operation_name(name);
    }
    Ok(Prepared::Live { request, poll })
}

/// `subscription` at `pos` → `query` plus spaces, keeping every position of the text.
/// The text's line ends are `\n` or `\r\n` ([`bare_cr_as_lf`] saw to it).
fn as_query(text: &str, pos: async_graphql::Pos) -> Option<String> {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(pos.line.saturating_sub(1))
        .map(str::len)
        .sum();
    let line = &text[line_start..];
    let offset = line_start + line.char_indices().nth(pos.column.saturating_sub(1))?.0;
    const KEYWORD: &str = "subscription";
    text[offset..].starts_with(KEYWORD).then(|| {
        format!(
            "{}query{}{}",
            &text[..offset],
            " ".repeat(KEYWORD.len() - 5),
            &text[offset + KEYWORD.len()..]
        )
    })
}

/// A bare `\r` ends a line in GraphQL, but the parser's positions do not count it as one
/// (it only resets the column), so positions in such a text cannot be mapped back to it.
/// Made a `\n`, which means the same everywhere it may stand (between tokens, in a
/// comment's end, in a block string, whose line ends are normalised to `\n` anyway) and
/// keeps every byte offset.
fn bare_cr_as_lf(text: &mut String) {
    let bytes = text.as_bytes();
    let bare: Vec<usize> = (0..bytes.len())
        .filter(|&i| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
        .collect();
    if bare.is_empty() {
        return;
    }
    let mut owned = std::mem::take(text).into_bytes();
    for i in bare {
        owned[i] = b'\n';
    }
    // One ASCII byte for another: still UTF-8.
    *text = String::from_utf8(owned).unwrap_or_default();
}

struct Subscription {
    _active: crate::metrics::GaugeGuard,
    engine: Arc<Engine>,
    request: async_graphql::Request,
    headers: HeaderMap,
    poll: Option<Duration>,
    id: hub::SubId,
    notify: Arc<Notify>,
    last: Option<Bytes>,
    started: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.engine.runtime.hub.unwatch(self.id);
    }
}

fn clone_request(r: &async_graphql::Request) -> async_graphql::Request {
    let mut out = async_graphql::Request::new(r.query.clone()).variables(r.variables.clone());
    if let Some(name) = &r.operation_name {
        out = out.operation_name(name.clone());
    }
    out
}

/// One result of a live query.
pub struct Frame {
    /// A JSON GraphQL response.
    pub body: Bytes,
    /// The operation failed to parse or validate: this is its only frame.
    pub request_error: bool,
}

impl Subscription {
    /// Runs the query and watches what it read; `None` when nothing changed for the client.
    async fn step(&mut self) -> Option<Frame> {
        let hub = self.engine.runtime.hub.clone();
        let generation = hub.generation();
        // Boxed: an idle subscription then holds no room for an execution's state.
        let done = Box::pin(crate::exec::run(
            &self.engine,
            clone_request(&self.request),
            self.headers.clone(),
        ))
        .await;
        if done.request_error {
            return Some(Frame {
                body: done.body,
                request_error: true,
            });
        }
        hub.watch(self.id, &self.notify, &done.read.keys);
        if let Some(root) = &done.read.root {
            if let Some(every) = self.poll {
                hub.poll(root.clone(), every);
            }
            if root.updates.is_some() {
                hub.feed(root.clone());
            }
        }
        // A change may have landed while we ran, before we were watching: look again
        // after this result (a permit, so at most one extra run).
        if hub.generation() != generation {
            self.notify.notify_one();
        }
        if self.last.as_ref() == Some(&done.body) {
            return None;
        }
        self.last = Some(done.body.clone());
        Some(Frame {
            body: done.body,
            request_error: false,
        })
    }
}

/// The events of an `@stream` subscription: each upstream message that matches is one
/// result, the selection completed over it by the planned executor, nested `@rest` fields
/// resolved through the cache. A document the executor cannot prepare (it does not
/// validate) goes to async-graphql's executor, which says why.
pub fn events(
    engine: Arc<Engine>,
    request: async_graphql::Request,
    headers: HeaderMap,
) -> futures_util::stream::BoxStream<'static, Frame> {
    use futures_util::StreamExt;
    let active = crate::metrics::GaugeGuard::new(
        engine
            .runtime
            .metrics
            .subscriptions
            .with_label_values(&["stream"]),
    );
    // Boxed on its own: preparing (validation included) needs a large future, freed once
    // it is done rather than kept in the stream's allocation for the subscription's life.
    futures_util::stream::once(Box::pin(async move {
        let mut request = request;
        let prepared = match engine.executor.cached(&engine.runtime, &request) {
            Some(p) => Some(p),
            None => {
                engine
                    .executor
                    .prepare(&engine.schema, &engine.runtime, &mut request)
                    .await
            }
        };
        let Some(prepared) = prepared.filter(|p| !p.fallback()) else {
            return dynamic_events(&engine, request, headers);
        };
        let call = match crate::exec::events_call(&engine.runtime, &prepared, &request.variables) {
            Ok(call) => Arc::new(call),
            Err(refused) => {
                return futures_util::stream::iter([Frame {
                    body: refused.body,
                    request_error: true,
                }])
                .boxed()
            }
        };
        let Some(source) = call.field.stream.clone() else {
            return futures_util::stream::empty().boxed();
        };
        let rt = engine.runtime.clone();
        let headers = Arc::new(headers);
        crate::resolve::stream::payloads(&rt, &call.field, &source, &call.args)
            .then(move |payload| {
                let (rt, prepared, call, headers) =
                    (rt.clone(), prepared.clone(), call.clone(), headers.clone());
                async move {
                    // This subscriber's own copy of the message: taken, not copied again.
                    let payload =
                        Arc::try_unwrap(payload).unwrap_or_else(|shared| (*shared).clone());
                    let out =
                        crate::exec::execute_event(&rt, &prepared, &call, &headers, payload).await;
                    Frame {
                        body: out.body,
                        request_error: false,
                    }
                }
            })
            .boxed()
    }))
    .flatten()
    .map(move |frame| {
        let _alive = &active;
        frame
    })
    .boxed()
}

/// [`events`] on async-graphql's executor: for a document it could not prepare.
fn dynamic_events(
    engine: &Engine,
    request: async_graphql::Request,
    headers: HeaderMap,
) -> futures_util::stream::BoxStream<'static, Frame> {
    use futures_util::StreamExt;
    let request = request.data(crate::resolve::ClientHeaders(headers));
    let (query, operation) = (request.query.clone(), request.operation_name.clone());
    let plan = engine.runtime.plan.clone();
    engine
        .schema
        .execute_stream(request)
        .map(move |mut response| {
            let (body, request_error) =
                crate::exec::encode(&plan, &query, operation.as_deref(), &mut response);
            Frame {
                body,
                request_error,
            }
        })
        .boxed()
}

/// The results of a live query, until the request error that ends it (if any).
pub fn run(
    engine: Arc<Engine>,
    request: async_graphql::Request,
    headers: HeaderMap,
    poll: Option<Duration>,
) -> impl Stream<Item = Frame> + Send {
    let hub = engine.runtime.hub.clone();
    let active = crate::metrics::GaugeGuard::new(
        engine
            .runtime
            .metrics
            .subscriptions
            .with_label_values(&["live"]),
    );
    let sub = Subscription {
        _active: active,
        engine,
        request,
        headers,
        poll,
        id: hub.next_id(),
        notify: Arc::new(Notify::new()),
        last: None,
        started: false,
    };
    futures_util::stream::unfold(Some(sub), |sub| async move {
        let mut sub = sub?;
        loop {
            if sub.started {
                sub.notify.notified().await;
            }
            let out = sub.step().await;
            sub.started = true;
            match out {
                Some(frame) if frame.request_error => return Some((frame, None)),
                Some(frame) => return Some((frame, Some(sub))),
                None => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::as_query;

    #[test]
    fn rewriting_keeps_positions() {
        let text = "# c\n  subscription S($c: String!) { messages(channel: $c) { id } }";
        let out = as_query(text, async_graphql::Pos { line: 2, column: 3 }).expect("rewrites");
        assert_eq!(
            out,
            "# c\n  query        S($c: String!) { messages(channel: $c) { id } }"
        );
        assert_eq!(out.len(), text.len());
        assert!(as_query(text, async_graphql::Pos { line: 1, column: 1 }).is_none());
    }

    #[test]
    fn a_subscription_is_found_after_any_line_terminator() {
        for nl in ["\n", "\r\n", "\r"] {
            let mut text = format!("# a comment{nl}{nl}  subscription S {{ a }}");
            super::bare_cr_as_lf(&mut text);
            let doc = async_graphql::parser::parse_query(&text).expect("parses");
            let (_, op) = doc.operations.iter().next().expect("an operation");
            let query = as_query(&text, op.pos).unwrap_or_else(|| panic!("{nl:?} {:?}", op.pos));
            let nl = nl.replace("\r", "\n").replace("\n\n", "\r\n");
            assert_eq!(
                query,
                format!("# a comment{nl}{nl}  query        S {{ a }}")
            );
        }
    }
}
