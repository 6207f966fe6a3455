//! `@stream` Subscription fields: each upstream socket message that matches `when` is one
//! event, shaped by the field's type; nested `@rest` fields of the event resolve through
//! the shared cache like any other. The stream is shared ([`crate::events`]): by every
//! caller, or, when its upstream lists `forwardHeaders`, by the callers who send the same
//! values of them. A stream that fails for good (its handshake refused) ends the
//! subscription with that error.
//!
//! Overflow: an event subscriber that falls more than `events::BUFFER` (1,024)
//! messages behind loses the oldest, is told how many in the log, and goes on with the
//! newest; its memory stays bounded.

use super::shape;
use super::Runtime;
use crate::events::{Event, Failure};
use crate::plan::{FieldPlan, SourcePlan};
use crate::watch::patch;
use futures_util::Stream;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// The payloads of `field`'s events for the arguments `args`, as the caller of `ctx`
/// reads them: each upstream message that matches `when`, at its `select` path, and fits
/// the field's type (one that does not is skipped with a warning); then, if the stream
/// fails for good (or cannot be opened for this caller), why, as the last item.
pub fn payloads(
    rt: &Arc<Runtime>,
    field: &Arc<FieldPlan>,
    source: &Arc<SourcePlan>,
    args: &serde_json::Value,
    ctx: &crate::request::RequestContext,
) -> impl Stream<Item = Result<Arc<serde_json::Value>, Arc<Failure>>> + Send + 'static {
    let vars = crate::template::Vars {
        args,
        parent: None,
        claims: ctx.identity().map(|i| &i.claims),
        event: None,
    };
    let when: Vec<(Vec<String>, String)> = source
        .when
        .iter()
        .map(|(f, t)| (f.clone(), t.render_string(vars)))
        .collect();
    let tap = match source.stream_for(vars) {
        Ok(stream) => rt.sources.tap(stream.as_ref(), ctx),
        Err(why) => Err(Arc::new(Failure {
            message: why,
            code: "BAD_USER_INPUT",
            status: None,
        })),
    };
    let state = (Some(tap), rt.clone(), field.clone(), source.clone(), when);
    futures_util::stream::unfold(state, |(tap, rt, field, source, when)| async move {
        let mut tap = match tap? {
            Ok(tap) => tap,
            Err(failure) => return Some((Err(failure), (None, rt, field, source, when))),
        };
        loop {
            match tap.rx.recv().await {
                Ok(Event::Message(m)) => {
                    let Some(payload) = patch::pick(&m, &source.select) else {
                        continue;
                    };
                    if !patch::matches(&m, payload, &when) {
                        continue;
                    }
                    if let Err(why) = shape::check(&rt.plan, payload, &field.ty) {
                        tracing::warn!(field = %field.name, why, "upstream event does not fit the field's type; skipped");
                        continue;
                    }
                    let payload = Arc::new(payload.clone());
                    return Some((Ok(payload), (Some(Ok(tap)), rt, field, source, when)));
                }
                Ok(Event::Reconnected) => {}
                Ok(Event::Failed(failure)) => {
                    return Some((Err(failure), (None, rt, field, source, when)));
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(field = %field.name, lost = n, "event subscriber fell behind; oldest events dropped")
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
