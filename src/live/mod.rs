//! Stage ⑤ — live queries and event subscriptions. Input: a subscription operation on an
//! `@live` or `@stream` field. Output: results pushed into each subscriber's [`Outbox`]:
//! for a live query the current result at once, then a new one whenever a cache entry
//! behind any field the client selected changes, and nothing when the change leaves the
//! client's own selection as it was; for events, one result per matching upstream message.
//!
//! A live operation runs as the *query* of the same text (`subscription` becomes `query`,
//! padded, so error positions stay right): `@live` fields mirror Query fields by plan. Each
//! run gathers the entries it read ([`crate::deps`]); the [`crate::watch::Hub`] wakes the subscription
//! when one changes, and the next run goes through the shared cache (and the
//! whole-response cache), so N subscribers of one entry cost one refetch. Subscribers of
//! the same operation, variables and credentials share one run and one encoded result
//! ([`topic`]). The wake-up is a `Notify` permit, and a live result waiting in a slow
//! client's outbox is replaced by a newer one (conflation): memory stays bounded.

mod members;
pub mod outbox;
pub mod topic;

use crate::exec::{Engine, Executed};
use crate::request::RequestContext;
use async_graphql::parser::types::{OperationType, Selection};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

pub use members::{Framing, Subscriber};
pub use outbox::{Direct, Frame, Outbox};
pub use topic::{Subscribed, Topics};

/// What became of an operation a transport handed to [`start`].
pub enum Started {
    /// A query or mutation ran: its one result (which may be a request error).
    Once(Executed),
    /// A live query or an event subscription joined its shared topic: results go to the
    /// subscriber's outbox while this is held; dropping it leaves.
    Subscribed(Subscribed),
    /// Refused before anything ran (a subscription livegate cannot serve): the response
    /// body that says why, for the transport to frame.
    Refused(Bytes),
    /// An event subscription refused as it was prepared: the subscriber has been sent
    /// why, and that it ended.
    Ended,
}

/// The one dispatch every transport calls (graphql-ws, the legacy protocol, SSE and
/// multipart, graphql-sse reservations): a query or mutation runs once, through the
/// whole-response cache; a live query joins (or starts) its topic at once, without
/// awaiting anything — so a caller may poll this future once and keep no task for it; an
/// event subscription is prepared, then joins its topic.
pub async fn start(
    engine: Arc<Engine>,
    topics: Arc<Topics>,
    req: async_graphql::Request,
    ctx: RequestContext,
    subscriber: Subscriber,
) -> Started {
    match prepare(&engine, req, &ctx) {
        Err(Refusal(message, code)) => {
            Started::Refused(Bytes::from(crate::exec::error_body(&message, code)))
        }
        Ok(Prepared::Once(req)) => Started::Once(crate::exec::run(&engine, req, &ctx).await),
        Ok(Prepared::Live(live)) => {
            Started::Subscribed(topics.live(&engine, live, &ctx, subscriber))
        }
        Ok(Prepared::Events(req)) => match topics.events(&engine, req, &ctx, subscriber).await {
            Some(joined) => Started::Subscribed(joined),
            None => Started::Ended,
        },
    }
}

/// What a transport should do with an operation.
enum Prepared {
    /// A query or mutation (or a document that does not parse: running it reports why).
    Once(async_graphql::Request),
    /// A live query: run it as this query, again on every change.
    Live(LiveQuery),
    /// An event subscription (`@stream`): the executor's own subscription stream.
    Events(async_graphql::Request),
}

/// Why a subscription is refused: a message for the client, and its code.
struct Refusal(String, Option<&'static str>);

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal(message, None)
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Self {
        Refusal(message.to_string(), None)
    }
}

/// Decides how to run `req`: once, or live. An error is a message for the client: the
/// operation is a subscription livegate cannot serve, or one its caller may not see
/// (`@authenticated`/`@requiresScopes` on the Subscription field: nothing is started).
fn prepare(
    engine: &Engine,
    mut req: async_graphql::Request,
    ctx: &RequestContext,
) -> Result<Prepared, Refusal> {
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
            return Err(refusal.message.into());
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
    if engine.runtime.telemetry.is_on() {
        // The span of the subscription's start (its transport's) says what it is.
        let mut attrs = vec![crate::telemetry::Attr::new(
            "graphql.operation.type",
            "subscription",
        )];
        if let Some(name) = name.as_deref() {
            attrs.push(crate::telemetry::Attr::new(
                "graphql.operation.name",
                name.to_string(),
            ));
        }
        crate::telemetry::annotate(&attrs);
    }
    let fields = root_fields(doc, &op.node.selection_set.node);
    let [(_, field)] = fields.as_slice() else {
        return Err("a subscription selects exactly one root field".into());
    };
    let plan = &engine.runtime.plan;
    let Some(sub_field) = plan.subscription_field(field) else {
        return Err(format!("`{field}` is not a subscription field of this schema").into());
    };
    if let Some(access) = &sub_field.access {
        if let Err(denied) = access.check(ctx.identity().map(|i| i.scopes.as_slice())) {
            let metrics = &engine.runtime.metrics;
            metrics.auth.with_label_values(&["forbidden"]).inc();
            let what = format!("`Subscription.{field}`");
            return Err(Refusal(access.message(denied, &what), Some(denied.code())));
        }
    }
    if sub_field.stream.is_some() {
        return Ok(Prepared::Events(req));
    }
    let Some(live) = &sub_field.live else {
        return Err(format!("`{field}` is not a live field of this schema").into());
    };
    let (pos, poll) = (op.pos, live.poll);
    let field = field.to_string();
    let query =
        as_query(&req.query, pos).ok_or("the subscription could not be rewritten as a query")?;
    let mut request = async_graphql::Request::new(query).variables(req.variables);
    if let Some(name) = req.operation_name {
        request = request.operation_name(name);
    }
    Ok(Prepared::Live(LiveQuery {
        request,
        poll,
        field,
    }))
}

/// The root fields of an operation, through inline fragments and fragment spreads (as
/// the spec's CollectFields groups them: by response key, each fragment once), each as
/// (response key, field name); `__typename` is not one. Iterative: fragments may nest
/// as deep as the document limits allow.
fn root_fields<'d>(
    doc: &'d async_graphql::parser::types::ExecutableDocument,
    set: &'d async_graphql::parser::types::SelectionSet,
) -> Vec<(&'d str, &'d str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut pending = vec![set];
    while let Some(set) = pending.pop() {
        for s in set.items.iter().rev() {
            match &s.node {
                Selection::Field(f) => {
                    let name = f.node.name.node.as_str();
                    let key = f.node.alias.as_ref().map_or(name, |a| a.node.as_str());
                    if name != "__typename" && !out.iter().any(|(k, _)| *k == key) {
                        out.push((key, name));
                    }
                }
                Selection::InlineFragment(i) => pending.push(&i.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if visited.insert(name) {
                        if let Some(def) = doc.fragments.get(name) {
                            pending.push(&def.node.selection_set.node);
                        }
                    }
                }
            }
        }
    }
    out
}

/// A live query ready to run: the subscription rewritten as a query.
pub struct LiveQuery {
    pub request: async_graphql::Request,
    /// `@live(pollMs)`.
    pub poll: Option<Duration>,
    /// The Subscription field it is live on (a reload that drops it ends the subscription).
    pub field: String,
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

fn clone_request(r: &async_graphql::Request) -> async_graphql::Request {
    let mut out = async_graphql::Request::new(r.query.clone()).variables(r.variables.clone());
    if let Some(name) = &r.operation_name {
        out = out.operation_name(name.clone());
    }
    out
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
