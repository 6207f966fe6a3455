//! livegate's directives, read from the parser's `ConstDirective` into typed values.
//! One function per directive; [`ArgReader`] holds what they share: unknown-argument and
//! wrong-type errors, worded the same way everywhere.

use super::Errors;
use async_graphql_parser::types::ConstDirective;
use async_graphql_parser::{Pos, Positioned};
use async_graphql_value::ConstValue;

/// `@upstream(name, url, timeoutMs, headers, forwardHeaders, maxConnections)` on
/// `extend schema`.
#[derive(Debug, Clone)]
pub struct UpstreamDirective {
    pub name: Positioned<String>,
    pub url: Positioned<String>,
    pub timeout_ms: Option<Positioned<u64>>,
    /// Requests in flight to this upstream at once (each holds a connection).
    pub max_connections: Option<Positioned<u64>>,
    /// Most retries of one idempotent request.
    pub retries: Option<Positioned<u64>>,
    /// How long one attempt may take before it is abandoned and retried.
    pub attempt_timeout_ms: Option<Positioned<u64>>,
    pub headers: Vec<Header>,
    /// Request headers of the client passed on to this upstream, by name.
    pub forward_headers: Vec<Positioned<String>>,
    pub errors: Option<Positioned<ErrorsDirective>>,
}

/// `errors: {message: "error.message", extensions: {code: "error.code"}}` on `@upstream`
/// or `@rest`: where in an upstream's JSON error body the GraphQL error's message and
/// extensions are. Paths are dotted member names.
#[derive(Debug, Clone)]
pub struct ErrorsDirective {
    pub message: Option<Positioned<String>>,
    pub extensions: Vec<(Positioned<String>, Positioned<String>)>,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub name: Positioned<String>,
    pub value: Positioned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// `@rest(upstream, method, path, query, body, headers, batchKey, select)` on a field.
#[derive(Debug, Clone)]
pub struct RestDirective {
    pub upstream: Positioned<String>,
    pub method: HttpMethod,
    pub path: Positioned<String>,
    pub query: Vec<(Positioned<String>, Positioned<String>)>,
    pub body: Option<Positioned<ConstValue>>,
    pub headers: Vec<Header>,
    pub batch_key: Option<Positioned<String>>,
    /// Where in the upstream's JSON the field's value is (`data.items`).
    pub select: Option<Positioned<String>>,
    pub errors: Option<Positioned<ErrorsDirective>>,
    /// `join: {ids: ","}`: query parameters whose list is sent as one value, joined.
    pub join: Vec<(Positioned<String>, Positioned<String>)>,
    /// `idempotent: true`: a request of another method than GET that may be sent twice
    /// (so it is retried like a GET).
    pub idempotent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Public,
    Private,
}

/// `@cache(maxAge, swr, tags, scope)` on a field with `@rest`.
#[derive(Debug, Clone)]
pub struct CacheDirective {
    pub max_age: u64,
    pub swr: u64,
    /// Seconds past `maxAge` the value is served when refreshing it fails (RFC 5861).
    pub stale_if_error: u64,
    pub tags: Vec<Positioned<String>>,
    pub scope: Scope,
}

/// `@invalidates(tags)` on a mutation field.
#[derive(Debug, Clone)]
pub struct InvalidatesDirective {
    pub tags: Vec<Positioned<String>>,
}

/// Reads one directive's arguments, reporting unknown, repeated and missing ones.
pub(super) struct ArgReader<'a, 'e> {
    directive: &'a Positioned<ConstDirective>,
    pub(super) errors: &'e mut Errors,
}

impl<'a, 'e> ArgReader<'a, 'e> {
    pub(super) fn new(
        directive: &'a Positioned<ConstDirective>,
        known: &[&str],
        errors: &'e mut Errors,
    ) -> Self {
        let name = directive.node.name.node.as_str();
        let mut seen: Vec<&str> = Vec::new();
        for (arg, _) in &directive.node.arguments {
            let a = arg.node.as_str();
            if !known.contains(&a) {
                errors.push(
                    arg.pos,
                    format!("@{name} has no argument `{a}`; known: {}", known.join(", ")),
                );
            } else if seen.contains(&a) {
                errors.push(arg.pos, format!("@{name}: argument `{a}` is given twice"));
            }
            seen.push(a);
        }
        ArgReader { directive, errors }
    }

    fn name(&self) -> &'a str {
        self.directive.node.name.node.as_str()
    }

    pub(super) fn get(&self, arg: &str) -> Option<&'a Positioned<ConstValue>> {
        self.directive
            .node
            .arguments
            .iter()
            .find(|(n, _)| n.node.as_str() == arg)
            .map(|(_, v)| v)
    }

    fn wrong(&mut self, pos: Pos, arg: &str, expected: &str, got: &ConstValue) {
        let name = self.name();
        self.errors.push(
            pos,
            format!("@{name}({arg}:) expects {expected}, got {}", describe(got)),
        );
    }

    pub(super) fn missing(&mut self, arg: &str, expected: &str) {
        let name = self.name();
        self.errors.push(
            self.directive.pos,
            format!("@{name} needs argument `{arg}` ({expected})"),
        );
    }

    pub(super) fn string(&mut self, arg: &str) -> Option<Positioned<String>> {
        let v = self.get(arg)?;
        match &v.node {
            ConstValue::String(s) => Some(Positioned::new(s.clone(), v.pos)),
            other => {
                self.wrong(v.pos, arg, "a string", other);
                None
            }
        }
    }

    pub(super) fn required_string(&mut self, arg: &str) -> Option<Positioned<String>> {
        if self.get(arg).is_none() {
            self.missing(arg, "a string");
            return None;
        }
        self.string(arg)
    }

    pub(super) fn uint(&mut self, arg: &str) -> Option<Positioned<u64>> {
        let v = self.get(arg)?;
        match &v.node {
            ConstValue::Number(n) if n.as_u64().is_some() => {
                n.as_u64().map(|n| Positioned::new(n, v.pos))
            }
            other => {
                self.wrong(v.pos, arg, "a non-negative integer", other);
                None
            }
        }
    }

    pub(super) fn strings(&mut self, arg: &str) -> Vec<Positioned<String>> {
        let Some(v) = self.get(arg) else {
            return Vec::new();
        };
        let list: &[ConstValue] = match &v.node {
            ConstValue::List(items) => items,
            // GraphQL input coercion: a single value stands for a list of one.
            single @ ConstValue::String(_) => std::slice::from_ref(single),
            other => {
                self.wrong(v.pos, arg, "a list of strings", other);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in list {
            match item {
                ConstValue::String(s) => out.push(Positioned::new(s.clone(), v.pos)),
                other => self.wrong(v.pos, arg, "a list of strings", other),
            }
        }
        out
    }

    pub(super) fn boolean(&mut self, arg: &str) -> Option<Positioned<bool>> {
        let v = self.get(arg)?;
        match &v.node {
            ConstValue::Boolean(b) => Some(Positioned::new(*b, v.pos)),
            other => {
                self.wrong(v.pos, arg, "true or false", other);
                None
            }
        }
    }

    pub(super) fn enum_value(&mut self, arg: &str, allowed: &[&str]) -> Option<Positioned<String>> {
        let v = self.get(arg)?;
        let s = match &v.node {
            ConstValue::Enum(n) => n.as_str(),
            ConstValue::String(s) => s.as_str(),
            other => {
                self.wrong(v.pos, arg, &format!("one of {}", allowed.join(", ")), other);
                return None;
            }
        };
        if allowed.contains(&s) {
            Some(Positioned::new(s.to_string(), v.pos))
        } else {
            let name = self.name();
            self.errors.push(
                v.pos,
                format!(
                    "@{name}({arg}:) expects one of {}, got {s}",
                    allowed.join(", ")
                ),
            );
            None
        }
    }

    /// `arg: {name: "text", …}` as (name, text) pairs; with `nested`, an object member
    /// stands for its members under dotted names (`{data: {id: "x"}}` is `data.id`).
    /// `member` says what a member must be, `whole` what the argument must be.
    pub(super) fn string_pairs(
        &mut self,
        arg: &str,
        nested: bool,
        member: &str,
        whole: &str,
    ) -> Vec<(Positioned<String>, Positioned<String>)> {
        type Members =
            async_graphql_value::indexmap::IndexMap<async_graphql_value::Name, ConstValue>;
        fn walk(
            r: &mut ArgReader<'_, '_>,
            (arg, nested, member): (&str, bool, &str),
            prefix: &str,
            map: &Members,
            pos: Pos,
            out: &mut Vec<(Positioned<String>, Positioned<String>)>,
        ) {
            for (k, val) in map {
                let key = format!("{prefix}{k}");
                match val {
                    ConstValue::String(s) => {
                        out.push((Positioned::new(key, pos), Positioned::new(s.clone(), pos)))
                    }
                    ConstValue::Object(inner) if nested => walk(
                        r,
                        (arg, nested, member),
                        &format!("{key}."),
                        inner,
                        pos,
                        out,
                    ),
                    other => r.wrong(pos, arg, member, other),
                }
            }
        }
        let mut out = Vec::new();
        let Some(v) = self.get(arg) else {
            return out;
        };
        // `[{name: "page[size]", value: "{args.size}"}]`: names that are not GraphQL
        // names (an object literal's keys must be), as `headers:` takes them.
        if !nested && matches!(v.node, ConstValue::List(_)) {
            return self
                .headers(arg)
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect();
        }
        match &v.node {
            ConstValue::Object(map) => walk(self, (arg, nested, member), "", map, v.pos, &mut out),
            other => self.wrong(v.pos, arg, whole, other),
        }
        out
    }

    /// `errors: {message: "a.b", extensions: {code: "a.c"}}`
    fn errors(&mut self, arg: &str) -> Option<Positioned<ErrorsDirective>> {
        let v = self.get(arg)?;
        let expected =
            "an object like {message: \"error.message\", extensions: {code: \"error.code\"}}";
        let ConstValue::Object(map) = &v.node else {
            self.wrong(v.pos, arg, expected, &v.node);
            return None;
        };
        let name = self.name();
        let mut out = ErrorsDirective {
            message: None,
            extensions: Vec::new(),
        };
        for (key, val) in map {
            match (key.as_str(), val) {
                ("message", ConstValue::String(s)) => {
                    out.message = Some(Positioned::new(s.clone(), v.pos))
                }
                ("extensions", ConstValue::Object(ext)) => {
                    for (k, path) in ext {
                        match path {
                            ConstValue::String(s) => out.extensions.push((
                                Positioned::new(k.to_string(), v.pos),
                                Positioned::new(s.clone(), v.pos),
                            )),
                            other => self.errors.push(
                                v.pos,
                                format!(
                                    "@{name}({arg}:): extensions.{k} must be a string (a dotted \
                                     path in the error body), got {}",
                                    describe(other)
                                ),
                            ),
                        }
                    }
                }
                ("message", other) => self.errors.push(
                    v.pos,
                    format!(
                        "@{name}({arg}:): message must be a string (a dotted path in the error \
                         body), got {}",
                        describe(other)
                    ),
                ),
                ("extensions", other) => self.errors.push(
                    v.pos,
                    format!(
                        "@{name}({arg}:): extensions must be an object of dotted paths, got {}",
                        describe(other)
                    ),
                ),
                (other, _) => self.errors.push(
                    v.pos,
                    format!("@{name}({arg}:) has no member `{other}`; known: message, extensions"),
                ),
            }
        }
        Some(Positioned::new(out, v.pos))
    }

    /// `headers: [{name: "X-A", value: "…"}]`
    fn headers(&mut self, arg: &str) -> Vec<Header> {
        let Some(v) = self.get(arg) else {
            return Vec::new();
        };
        let expected = "a list of {name: String, value: String}";
        let list: &[ConstValue] = match &v.node {
            ConstValue::List(items) => items,
            single @ ConstValue::Object(_) => std::slice::from_ref(single),
            other => {
                self.wrong(v.pos, arg, expected, other);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in list {
            let pair = match item {
                ConstValue::Object(map) if map.len() == 2 => {
                    match (map.get("name"), map.get("value")) {
                        (Some(ConstValue::String(n)), Some(ConstValue::String(val))) => {
                            Some((n.clone(), val.clone()))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match pair {
                Some((n, val)) => out.push(Header {
                    name: Positioned::new(n, v.pos),
                    value: Positioned::new(val, v.pos),
                }),
                None => self.wrong(v.pos, arg, expected, item),
            }
        }
        out
    }
}

fn describe(v: &ConstValue) -> String {
    match v {
        ConstValue::Null => "null".into(),
        ConstValue::Number(n) => format!("the number {n}"),
        ConstValue::String(s) => format!("the string {s:?}"),
        ConstValue::Boolean(b) => format!("the boolean {b}"),
        ConstValue::Binary(_) => "binary data".into(),
        ConstValue::Enum(e) => format!("the enum value {e}"),
        ConstValue::List(_) => "a list".into(),
        ConstValue::Object(_) => "an object".into(),
    }
}

pub fn upstream(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<UpstreamDirective>> {
    let mut r = ArgReader::new(
        d,
        &[
            "name",
            "url",
            "timeoutMs",
            "headers",
            "forwardHeaders",
            "maxConnections",
            "errors",
            "retries",
            "attemptTimeoutMs",
        ],
        errors,
    );
    let name = r.required_string("name");
    let url = r.required_string("url");
    let timeout_ms = r.uint("timeoutMs");
    let max_connections = r.uint("maxConnections");
    let retries = r.uint("retries");
    let attempt_timeout_ms = r.uint("attemptTimeoutMs");
    let headers = r.headers("headers");
    let forward_headers = r.strings("forwardHeaders");
    let errors = r.errors("errors");
    Some(Positioned::new(
        UpstreamDirective {
            errors,
            name: name?,
            url: url?,
            timeout_ms,
            max_connections,
            retries,
            attempt_timeout_ms,
            headers,
            forward_headers,
        },
        d.pos,
    ))
}

pub fn rest(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<RestDirective>> {
    let mut r = ArgReader::new(
        d,
        &[
            "upstream",
            "method",
            "path",
            "query",
            "body",
            "headers",
            "batchKey",
            "select",
            "errors",
            "join",
            "idempotent",
        ],
        errors,
    );
    let upstream = r.required_string("upstream");
    let path = r.required_string("path");
    let method = match r.enum_value("method", &["GET", "POST", "PUT", "PATCH", "DELETE"]) {
        None => HttpMethod::Get,
        Some(m) => match m.node.as_str() {
            "POST" => HttpMethod::Post,
            "PUT" => HttpMethod::Put,
            "PATCH" => HttpMethod::Patch,
            "DELETE" => HttpMethod::Delete,
            _ => HttpMethod::Get,
        },
    };
    let query = r.string_pairs(
        "query",
        false,
        "an object of strings",
        "an object of strings, like {q: \"{args.q}\"}, or a list like [{name: \"page[size]\", value: \"{args.size}\"}]",
    );
    let body = r.get("body").cloned();
    let headers = r.headers("headers");
    let batch_key = r.string("batchKey");
    let idempotent = r.boolean("idempotent").is_some_and(|b| b.node);
    let select = r.string("select");
    let errors = r.errors("errors");
    let join = r.string_pairs(
        "join",
        false,
        "an object of separators, like {ids: \",\"}",
        "an object of separators, like {ids: \",\"}",
    );
    Some(Positioned::new(
        RestDirective {
            idempotent,
            join,
            errors,
            select,
            upstream: upstream?,
            method,
            path: path?,
            query,
            body,
            headers,
            batch_key,
        },
        d.pos,
    ))
}

pub fn cache(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<CacheDirective>> {
    let mut r = ArgReader::new(
        d,
        &["maxAge", "swr", "tags", "scope", "staleIfError"],
        errors,
    );
    if r.get("maxAge").is_none() {
        r.missing("maxAge", "seconds, a non-negative integer");
    }
    let max_age = r.uint("maxAge");
    let swr = r.uint("swr").map(|s| s.node).unwrap_or(0);
    let stale_if_error = r.uint("staleIfError").map(|s| s.node).unwrap_or(0);
    let tags = r.strings("tags");
    let scope = match r.enum_value("scope", &["PUBLIC", "PRIVATE"]) {
        Some(s) if s.node == "PRIVATE" => Scope::Private,
        _ => Scope::Public,
    };
    Some(Positioned::new(
        CacheDirective {
            max_age: max_age?.node,
            swr,
            stale_if_error,
            tags,
            scope,
        },
        d.pos,
    ))
}

pub fn invalidates(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<InvalidatesDirective>> {
    let mut r = ArgReader::new(d, &["tags"], errors);
    if r.get("tags").is_none() {
        r.missing("tags", "a list of strings");
        return None;
    }
    let tags = r.strings("tags");
    Some(Positioned::new(InvalidatesDirective { tags }, d.pos))
}

/// `@live(pollMs)` on a Subscription field: a live query of the Query field of the same
/// name and arguments.
#[derive(Debug, Clone)]
pub struct LiveDirective {
    pub poll_ms: Option<Positioned<u64>>,
}

/// `@discriminate(field: "type", map: {push: "PushEvent"})` on an interface or union: the
/// member of an upstream object that names its concrete type, and the translation of its
/// values into type names (none: the values are type names).
#[derive(Debug, Clone)]
pub struct DiscriminateDirective {
    pub field: Positioned<String>,
    /// Upstream value → type name, in the order written.
    pub map: Vec<(Positioned<String>, Positioned<String>)>,
}

pub fn discriminate(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<DiscriminateDirective>> {
    let mut r = ArgReader::new(d, &["field", "map"], errors);
    let field = r.required_string("field");
    let mut map = Vec::new();
    if let Some(v) = r.get("map") {
        let expected = "an object of type names like {push: \"PushEvent\"}, or a list like [{value: \"push-event\", type: \"PushEvent\"}]";
        let at = |s: &str| Positioned::new(s.to_string(), v.pos);
        match &v.node {
            ConstValue::Object(pairs) => {
                for (k, t) in pairs {
                    match t {
                        ConstValue::String(t) => map.push((at(k), at(t))),
                        other => r.wrong(v.pos, "map", expected, other),
                    }
                }
            }
            ConstValue::List(items) => {
                for item in items {
                    let pair = match item {
                        ConstValue::Object(o) if o.len() == 2 => {
                            match (o.get("value"), o.get("type")) {
                                (Some(ConstValue::String(k)), Some(ConstValue::String(t))) => {
                                    Some((at(k), at(t)))
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    match pair {
                        Some(p) => map.push(p),
                        None => r.wrong(v.pos, "map", expected, item),
                    }
                }
            }
            other => r.wrong(v.pos, "map", expected, other),
        }
    }
    Some(Positioned::new(
        DiscriminateDirective { field: field?, map },
        d.pos,
    ))
}

/// `@map(from: "customer_id", as: NUMBER)` on an input field, `@map(as: NUMBER)` on an
/// argument: the member it is sent as (input fields only), and whether an `ID` (or a
/// `String`) whose text is an integer goes out as a JSON number.
pub fn map_input(
    d: &Positioned<ConstDirective>,
    argument: bool,
    errors: &mut Errors,
) -> (Option<Positioned<String>>, bool) {
    let known: &[&str] = if argument { &["as"] } else { &["from", "as"] };
    let mut r = ArgReader::new(d, known, errors);
    let from = if argument { None } else { r.string("from") };
    let number = r
        .enum_value("as", &["NUMBER", "STRING"])
        .is_some_and(|a| a.node == "NUMBER");
    let given = r.get("as").is_some() || (!argument && r.get("from").is_some());
    if !given {
        let what = if argument {
            "`as: NUMBER` (an argument is renamed in its template)"
        } else {
            "`from:` or `as: NUMBER`"
        };
        r.errors.push(d.pos, format!("@map here needs {what}"));
    }
    (from, number)
}

/// Where a field that reads a response header finds it in its parent's data: the
/// upstream answer of the `@rest` field that returned the parent carries the headers its
/// type reads under this member (see [`map`]).
pub const HEADERS: &str = "\u{1}headers";
/// The same for the URLs of RFC 8288 `Link` relations, by relation name.
pub const LINKS: &str = "\u{1}links";

/// `@map(from: "created_at")` on a field of an object type (or an enum value, an input
/// field); `@map(header: "X-Total-Count")` or `@map(link: "next")` on a field of the
/// object a `@rest` field returns. The member path it reads; a header or a link is read
/// under [`HEADERS`] or [`LINKS`].
pub fn map(d: &Positioned<ConstDirective>, errors: &mut Errors) -> Option<Positioned<String>> {
    let mut r = ArgReader::new(d, &["from", "header", "link"], errors);
    let from = r.string("from");
    let header = r.string("header");
    let link = r.string("link");
    match (from, header, link) {
        (Some(from), None, None) => Some(from),
        (None, Some(h), None) => Some(Positioned::new(
            format!("{HEADERS}.{}", h.node.to_ascii_lowercase()),
            h.pos,
        )),
        (None, None, Some(l)) => Some(Positioned::new(format!("{LINKS}.{}", l.node), l.pos)),
        (None, None, None) => {
            r.missing(
                "from",
                "a string: the member read; or `header:`, or `link:`",
            );
            None
        }
        _ => {
            r.errors.push(
                d.pos,
                "@map takes one of `from`, `header` and `link`".to_string(),
            );
            None
        }
    }
}

pub fn live(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<LiveDirective>> {
    let mut r = ArgReader::new(d, &["pollMs"], errors);
    let poll_ms = r.uint("pollMs");
    if let Some(p) = &poll_ms {
        if p.node < 10 {
            errors.push(p.pos, "@live(pollMs:) must be at least 10");
        }
    }
    Some(Positioned::new(LiveDirective { poll_ms }, d.pos))
}

/// Where upstream WebSocket messages come from and which ones count: shared by
/// `@updates` and `@stream`.
#[derive(Debug, Clone)]
pub struct SourceDirective {
    /// The upstream and path of a socket or event stream; with `webhook`, neither.
    pub upstream: Positioned<String>,
    pub path: Positioned<String>,
    /// `webhook: "name"`: the deliveries of that `@webhook` receiver instead.
    pub webhook: Option<Positioned<String>>,
    /// On a Redis upstream, in place of `path`: a `PUBLISH` channel, or a Stream's key.
    pub channel: Option<Positioned<String>>,
    pub stream: Option<Positioned<String>>,
    /// On a NATS upstream, in place of `path`: the subject (a template, wildcards too).
    pub subject: Option<Positioned<String>>,
    /// With `subject`, on `@stream`: the JetStream stream that keeps the subject's
    /// messages — read through a durable consumer per replica (replay after a restart).
    pub jetstream: Option<Positioned<String>>,
    /// Payload field → template its value must equal.
    pub when: Vec<(Positioned<String>, Positioned<String>)>,
    /// Dotted path of the payload inside each message.
    pub select: Option<Positioned<String>>,
    /// `protocol: WEBSOCKET` (the default) or `SSE`.
    pub protocol: Option<Positioned<String>>,
}

/// `@updates(upstream, path, when, apply, key, select)` on a Query field.
#[derive(Debug, Clone)]
pub struct UpdatesDirective {
    pub source: SourceDirective,
    pub apply: Positioned<String>,
    pub key: Option<Positioned<String>>,
}

/// How an upstream announces: `@updates`/`@stream(protocol:)`.
pub const PROTOCOLS: [&str; 2] = ["WEBSOCKET", "SSE"];

pub const APPLY_MODES: [&str; 7] = [
    "APPEND", "PREPEND", "UPSERT", "MERGE", "REPLACE", "REMOVE", "REFETCH",
];

fn source(r: &mut ArgReader<'_, '_>) -> Option<SourceDirective> {
    let webhook = r.string("webhook");
    let (upstream, path) = match &webhook {
        // A receiver's deliveries: no upstream, no path.
        Some(w) => {
            for arg in [
                "upstream",
                "path",
                "protocol",
                "channel",
                "stream",
                "subject",
                "jetStream",
            ] {
                if let Some(v) = r.get(arg) {
                    r.errors.push(
                        v.pos,
                        format!("`{arg}` and `webhook` name two sources; give one"),
                    );
                }
            }
            let none = || Some(Positioned::new(String::new(), w.pos));
            (none(), none())
        }
        None => {
            let upstream = r.required_string("upstream");
            let path = match r.get("channel").or(r.get("stream")).or(r.get("subject")) {
                // A Redis source: no path (the planner checks the upstream is one).
                Some(v) if r.get("path").is_none() => Some(Positioned::new(String::new(), v.pos)),
                _ => r.required_string("path"),
            };
            (upstream, path)
        }
    };
    let channel = r.string("channel");
    let stream = r.string("stream");
    let subject = r.string("subject");
    let jetstream = r.string("jetStream");
    let select = r.string("select");
    let protocol = r.enum_value("protocol", &PROTOCOLS);
    // Nested objects match nested members: `{data: {id: "…"}}` is `data.id`.
    let when = r.string_pairs(
        "when",
        true,
        "an object of strings (or of objects of strings)",
        "an object of strings, like {channel: \"{args.channel}\"}",
    );
    Some(SourceDirective {
        upstream: upstream?,
        path: path?,
        webhook,
        channel,
        stream,
        subject,
        jetstream,
        when,
        select,
        protocol,
    })
}

/// The arguments naming a source and its messages, on `@updates` and `@stream` alike.
const SOURCE_ARGS: [&str; 10] = [
    "upstream",
    "path",
    "webhook",
    "channel",
    "stream",
    "subject",
    "jetStream",
    "when",
    "select",
    "protocol",
];

pub fn updates(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<UpdatesDirective>> {
    let mut r = ArgReader::new(d, &[&SOURCE_ARGS[..], &["apply", "key"]].concat(), errors);
    if let Some(js) = r.get("jetStream") {
        // A (re)connect refetches the entries a stream patches; patches replayed from
        // before it would roll the fresh value back.
        r.errors.push(js.pos, "@updates has no `jetStream`: the entry is refetched when its stream (re)connects, so replayed messages would patch a fresh value with older changes; use a core NATS `subject:` (or `@stream(jetStream:)` for events)".to_string());
    }
    if r.get("apply").is_none() {
        r.missing("apply", &format!("one of {}", APPLY_MODES.join(", ")));
    }
    let apply = r.enum_value("apply", &APPLY_MODES);
    let key = r.string("key");
    let source = source(&mut r);
    Some(Positioned::new(
        UpdatesDirective {
            source: source?,
            apply: apply?,
            key,
        },
        d.pos,
    ))
}

/// `@stream(upstream, path, when, select)` on a Subscription field.
pub fn stream(
    d: &Positioned<ConstDirective>,
    errors: &mut Errors,
) -> Option<Positioned<SourceDirective>> {
    let mut r = ArgReader::new(d, &SOURCE_ARGS, errors);
    source(&mut r).map(|s| Positioned::new(s, d.pos))
}

/// `@deprecated(reason)`, the one built-in directive a field may carry.
pub fn deprecated(d: &Positioned<ConstDirective>, errors: &mut Errors) -> Option<String> {
    let mut r = ArgReader::new(d, &["reason"], errors);
    r.string("reason").map(|s| s.node)
}
