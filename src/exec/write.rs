//! The write pass: completes the selection from the fetched upstream JSON straight into
//! the response bytes (the spec's CompleteValue), recording each field error with its
//! path and location, and propagating nulls by truncating back to the nearest nullable
//! position.

use super::fetch::{addr, read, Results, Run};
use super::operation::{Leaf, Next, Planned, Shape};
use crate::cache::CacheKey;
use crate::config::TypeRef;
use crate::resolve::shape;
use crate::upstream::UpstreamError;
use async_graphql::{PathSegment, Pos, ServerError};
use serde_json::Value;
use std::sync::Arc;

static NULL: Value = Value::Null;

#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Where the value being completed came from: its upstream, its cache entry, and the
/// path length at which its `@rest` field's value starts.
#[derive(Clone, Copy)]
struct Src<'r> {
    upstream: &'r str,
    key: Option<CacheKey>,
    depth: usize,
}

/// This position must be null; `reported`: its error is recorded already.
struct Null {
    reported: bool,
}

/// What the response's bytes start with: the writer writes `data` in place after it, so
/// the response is never copied whole.
pub(super) const DATA_PREFIX: &[u8] = b"{\"data\":";

pub(super) struct Written {
    /// The response so far: [`DATA_PREFIX`] and the `data` member's JSON.
    pub data: Vec<u8>,
    pub errors: Vec<ServerError>,
    /// Cache entries whose value did not fit what was selected: dropped, so the next
    /// request asks the upstream again.
    pub misfits: Vec<CacheKey>,
    /// Where a value was served stale because refreshing it failed (`staleIfError`):
    /// `{"path": […], "code": "…"}` each, for the response's `extensions.stale`.
    pub stale: Vec<serde_json::Value>,
}

pub(super) struct Writer<'r, 'a> {
    run: &'r Run<'a>,
    results: &'r Results,
    buf: Vec<u8>,
    path: Vec<Seg<'a>>,
    errors: Vec<ServerError>,
    misfits: Vec<CacheKey>,
    stale: Vec<serde_json::Value>,
    /// The response went past `--max-response-bytes`: nothing more is written.
    over: bool,
    /// `--max-response-bytes`, read once (not through three pointers at every value).
    max: usize,
}

impl<'r, 'a> Writer<'r, 'a> {
    /// A writer whose buffer starts `capacity` bytes big (what the operation's last
    /// response took, up to 4 MiB; 1 KiB at least).
    pub fn new(run: &'r Run<'a>, results: &'r Results, capacity: usize) -> Self {
        Writer {
            run,
            results,
            buf: {
                let mut buf = Vec::with_capacity(capacity.clamp(1024, 4 << 20));
                buf.extend_from_slice(DATA_PREFIX);
                buf
            },
            path: Vec::new(),
            errors: Vec::new(),
            misfits: Vec::new(),
            stale: Vec::new(),
            over: false,
            max: run.rt.max_response,
        }
    }

    /// Writes the root object (`data`): `null` if a non-null root field is null.
    pub fn root(mut self, shape: &'a Arc<Shape>, root: &Value) -> Written {
        let failed = self.object(shape, root, 0, None).is_err();
        if failed || self.over {
            self.buf.truncate(DATA_PREFIX.len());
            self.buf.shrink_to(1024);
            self.buf.extend_from_slice(b"null");
        }
        if self.over {
            // One error says why; those of the part written are moot.
            let max = self.max;
            let mut e = ServerError::new(
                format!("the response is larger than {max} bytes (--max-response-bytes); select less, or page through the list"),
                None,
            );
            e.extensions = Some({
                let mut ext = async_graphql::ErrorExtensionValues::default();
                ext.set("code", "RESPONSE_TOO_LARGE");
                ext
            });
            self.errors = vec![e];
        }
        Written {
            data: self.buf,
            errors: self.errors,
            misfits: self.misfits,
            stale: self.stale,
        }
    }

    fn object(
        &mut self,
        shape: &'a Shape,
        value: &Value,
        parent: usize,
        src: Option<Src<'r>>,
    ) -> Result<(), Null> {
        if let Err(denied) = self.run.allowed(shape.access.as_ref()) {
            let what = format!("type `{}`", shape.object);
            self.deny(
                shape.access.as_deref(),
                denied,
                &what,
                shape.fields.first().map(|p| p.pos),
            );
            return Err(Null { reported: true });
        }
        self.buf.push(b'{');
        for (i, p) in shape.fields.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf.extend_from_slice(&p.key_json);
            self.path.push(Seg::Key(&p.key));
            let done = self.field(&shape.object, p, value, parent, src);
            self.path.pop();
            done?;
        }
        self.buf.push(b'}');
        Ok(())
    }

    fn field(
        &mut self,
        object: &str,
        p: &'a Planned,
        value: &Value,
        parent: usize,
        src: Option<Src<'r>>,
    ) -> Result<(), Null> {
        let pos = p.pos;
        let Some(field) = &p.field else {
            self.string(object);
            return Ok(());
        };
        if let Err(denied) = self.run.allowed(field.access.as_ref()) {
            let what = format!("`{object}.{}`", field.name);
            self.deny(field.access.as_deref(), denied, &what, Some(pos));
            if field.ty.non_null() {
                return Err(Null { reported: true });
            }
            self.buf.extend_from_slice(b"null");
            return Ok(());
        }
        let Some(rest) = &field.rest else {
            if object.starts_with("__") || field.name.starts_with("__") {
                return self.introspection(field, p, value);
            }
            let member = read(value, &field.member);
            return self.complete(&field.ty, member, &p.next, src, pos);
        };
        let results = self.results;
        match results.get(&(p.id, parent)).map(|o| &**o) {
            Some(Ok(Some(fetched))) => {
                if let Some(code) = &fetched.stale {
                    self.stale_at(code);
                }
                let src = Src {
                    upstream: &rest.upstream.name,
                    key: fetched.key,
                    depth: self.path.len(),
                };
                self.complete(&field.ty, &fetched.value, &p.next, Some(src), pos)
            }
            Some(Err(e)) => {
                self.error(e.to_graphql().into_server_error(pos));
                if field.ty.non_null() {
                    Err(Null { reported: true })
                } else {
                    self.buf.extend_from_slice(b"null");
                    Ok(())
                }
            }
            // A batched field whose parent has no key.
            Some(Ok(None)) | None => self.complete(&field.ty, &NULL, &p.next, src, pos),
        }
    }

    /// A field of introspection: `__schema` and `__type(name:)` on the query root, read
    /// from the plan's introspection; the others read their member, the deprecated
    /// items of a list left out unless `includeDeprecated: true`.
    fn introspection(
        &mut self,
        field: &'a crate::plan::FieldPlan,
        p: &'a Planned,
        value: &Value,
    ) -> Result<(), Null> {
        let pos = p.pos;
        let run = self.run;
        let introspection = &run.plan.introspection;
        match field.name.as_str() {
            "__schema" => {
                return self.complete(&field.ty, introspection.schema(), &p.next, None, pos)
            }
            "__type" => {
                let args = run.args(&p.arguments, field);
                let found = args["name"]
                    .as_str()
                    .and_then(|n| introspection.type_named(n));
                return self.complete(&field.ty, found.unwrap_or(&NULL), &p.next, None, pos);
            }
            _ => {}
        }
        let member = read(value, &field.member);
        let filter = field.args.iter().any(|a| a.name == "includeDeprecated")
            && run.args(&p.arguments, field)["includeDeprecated"] != Value::Bool(true);
        match member {
            Value::Array(items) if filter => {
                let current: Value = items
                    .iter()
                    .filter(|i| i["isDeprecated"] != Value::Bool(true))
                    .cloned()
                    .collect();
                self.complete(&field.ty, &current, &p.next, None, pos)
            }
            _ => self.complete(&field.ty, member, &p.next, None, pos),
        }
    }

    /// Writes `value` completed as `ty`, or `null` where an error (or a null) allows;
    /// `Err` when this non-null position is null: the caller's position is null too.
    fn complete(
        &mut self,
        ty: &'a TypeRef,
        value: &Value,
        next: &'a Next,
        src: Option<Src<'r>>,
        pos: Pos,
    ) -> Result<(), Null> {
        if self.over {
            return Err(Null { reported: true });
        }
        let mark = self.buf.len();
        match self.inner(ty, value, next, src, pos) {
            Ok(()) if self.buf.len() > self.max => {
                // Given up at once: the buffer is not grown any further.
                self.over = true;
                self.buf.truncate(mark);
                Err(Null { reported: true })
            }
            Ok(()) => Ok(()),
            Err(null) => {
                self.buf.truncate(mark);
                if ty.non_null() {
                    if !null.reported {
                        self.misfit(src, pos, format!("is null, but the schema says {ty}"));
                    }
                    Err(Null { reported: true })
                } else {
                    self.buf.extend_from_slice(b"null");
                    Ok(())
                }
            }
        }
    }

    fn inner(
        &mut self,
        ty: &'a TypeRef,
        value: &Value,
        next: &'a Next,
        src: Option<Src<'r>>,
        pos: Pos,
    ) -> Result<(), Null> {
        if value.is_null() {
            return Err(Null { reported: false });
        }
        let name = match ty {
            TypeRef::List { item, .. } => {
                let Value::Array(items) = value else {
                    self.misfit(src, pos, format!("should be a list ({ty})"));
                    return Err(Null { reported: true });
                };
                self.buf.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if self.over {
                        return Err(Null { reported: true });
                    }
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.path.push(Seg::Index(i));
                    let done = self.complete(item, v, next, src, pos);
                    self.path.pop();
                    done?;
                }
                self.buf.push(b']');
                return Ok(());
            }
            TypeRef::Named { name, .. } => name.as_str(),
        };
        let run = self.run;
        // A type reference in introspection (`{kind, name, ofType}`) stands for the whole
        // type it names.
        // (`starts_with` first: a 6-letter type such as `String` would otherwise cost a
        // `memcmp` call at every leaf.)
        let value = match name.starts_with("__") && name == "__Type" {
            true => value
                .get("name")
                .and_then(Value::as_str)
                .and_then(|named| run.plan.introspection.type_named(named))
                .unwrap_or(value),
            false => value,
        };
        let leaf = match next {
            Next::Leaf(leaf) => leaf,
            _ if !value.is_object() => {
                self.misfit(src, pos, format!("should be an object ({name})"));
                return Err(Null { reported: true });
            }
            _ => {
                return match next.shape_of(run.plan, value) {
                    Ok(Some(shape)) => self.object(shape, value, addr(value), src),
                    Ok(None) => Err(Null { reported: false }),
                    Err(why) => {
                        self.misfit(src, pos, why);
                        Err(Null { reported: true })
                    }
                };
            }
        };
        if !leaf.fits(run.plan, value) {
            self.misfit(
                src,
                pos,
                format!("is {}, but the schema says {name}", shape::describe(value)),
            );
            return Err(Null { reported: true });
        }
        let id = matches!(leaf, Leaf::Id);
        match value {
            // GraphQL serialises an ID as a string, whatever the upstream sent.
            Value::Number(n) if id => self.string(&n.to_string()),
            // An enum value is served by its name (the upstream may say it otherwise).
            Value::String(said) if matches!(leaf, Leaf::Enum(_)) => {
                let served = match leaf {
                    Leaf::Enum(e) => shape::enum_value(run.plan, e, said, shape::Spelling::Served),
                    _ => None,
                };
                self.string(served.unwrap_or(said));
            }
            Value::String(s) => self.string(s),
            // A leaf that fits is written as the upstream sent it.
            _ => {
                if serde_json::to_writer(&mut self.buf, value).is_err() {
                    self.buf.extend_from_slice(b"null");
                }
            }
        }
        Ok(())
    }

    fn string(&mut self, s: &str) {
        if serde_json::to_writer(&mut self.buf, s).is_err() {
            self.buf.extend_from_slice(b"null");
        }
    }

    /// Records that the upstream's value at the current position does not fit: a
    /// `UPSTREAM_BAD_RESPONSE` error here, naming the place in the upstream's answer.
    fn misfit(&mut self, src: Option<Src<'r>>, pos: Pos, what: String) {
        let Some(src) = src else {
            self.error(ServerError::new(what, Some(pos)));
            return;
        };
        let mut place = String::new();
        for seg in self.path.iter().skip(src.depth) {
            match seg {
                Seg::Key(k) => {
                    place.push('.');
                    place.push_str(k);
                }
                Seg::Index(i) => place.push_str(&format!("[{i}]")),
            }
        }
        let at = match place.strip_prefix('.').unwrap_or(&place) {
            "" => "the body".to_string(),
            p => format!("`{p}`"),
        };
        if let Some(key) = src.key {
            self.misfits.push(key);
        }
        let e = UpstreamError::BadResponse {
            upstream: src.upstream.to_string(),
            detail: format!("{at} {what}"),
        };
        self.error(e.to_graphql().into_server_error(pos));
    }

    /// Records that the caller may not see `what` (its upstream was not called), at the
    /// current path; counted in `livegate_auth_total{result="forbidden"}`.
    fn deny(
        &mut self,
        access: Option<&crate::plan::Access>,
        denied: crate::plan::Denied,
        what: &str,
        pos: Option<Pos>,
    ) {
        let message = access.map_or_else(String::new, |a| a.message(denied, what));
        let mut e = ServerError::new(message, pos);
        e.extensions = Some({
            let mut ext = async_graphql::ErrorExtensionValues::default();
            ext.set("code", denied.code());
            ext
        });
        self.error(e);
        self.run
            .rt
            .metrics
            .auth
            .with_label_values(&["forbidden"])
            .inc();
    }

    /// Records `e` at the current path.
    fn error(&mut self, mut e: ServerError) {
        e.path = self.response_path();
        self.errors.push(e);
    }

    /// The path being written, as a response names it.
    fn response_path(&self) -> Vec<PathSegment> {
        self.path
            .iter()
            .map(|s| match s {
                Seg::Key(k) => PathSegment::Field((*k).to_string()),
                Seg::Index(i) => PathSegment::Index(*i),
            })
            .collect()
    }

    /// The value at this path was served stale, its refresh having failed with `code`.
    fn stale_at(&mut self, code: &str) {
        if self.stale.len() < super::MAX_ERRORS {
            let path = serde_json::to_value(self.response_path()).unwrap_or_default();
            self.stale
                .push(serde_json::json!({ "path": path, "code": code }));
        }
    }
}
