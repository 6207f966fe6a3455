//! `livegate import openapi`: an OpenAPI document (3.0, 3.1 or Swagger 2.0; JSON or YAML)
//! → a schema that `livegate check` accepts and that serves the API as it is.
//!
//! The document is read once ([`doc`]); its schemas become types ([`types`]); each
//! operation becomes a root field here. What cannot be said in the schema language is
//! skipped with a comment naming it and why, and the result is checked with the planner
//! itself: an operation whose field the planner refuses is skipped too (the loop runs
//! until the schema passes), so the output never fails `check`.

mod doc;
mod names;
mod types;

use doc::Docs;
use names::{camel, is_name, pascal, Taken};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use types::{quote, Def, Field, Types, JSON};

/// What the command line says.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `@upstream` name (default: from the document's title).
    pub name: Option<String>,
    /// The upstream's URL (default: the document's first server).
    pub base_url: Option<String>,
    /// `@cache(maxAge:)` of every `GET`.
    pub max_age: u32,
    /// `@live(pollMs:)` of the generated subscriptions (none: plain `@live`).
    pub poll_ms: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: None,
            base_url: None,
            max_age: 60,
            poll_ms: None,
        }
    }
}

/// The generated schema and what was left out.
#[derive(Debug)]
pub struct Imported {
    pub schema: String,
    pub imported: usize,
    /// (operation, why), in document order.
    pub skipped: Vec<(String, String)>,
    /// Said on stderr (a relative server URL made absolute, …).
    pub warnings: Vec<String>,
    /// (operation, root field): `("GET /pets/{id}", "Query.showPetById")`, in document
    /// order.
    pub fields: Vec<(String, String)>,
}

/// Reads `path` (and the files its `$ref`s name) and generates the schema.
pub fn import(path: &Path, options: &Options) -> Result<Imported, String> {
    let docs = Docs::load(path)?;
    generate(&docs, options)
}

/// Generates from a document already parsed (JSON or YAML text).
pub fn import_text(text: &str, options: &Options) -> Result<Imported, String> {
    let docs = Docs::from_value(doc::parse_text(text)?);
    generate(&docs, options)
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];
/// Headers the gateway or the client's own transport sets: never arguments.
const OWN_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "content-length",
    "authorization",
    "cookie",
    "host",
];
/// How many rounds of "skip what the planner refused" before giving up.
const MAX_ROUNDS: usize = 8;

fn generate(docs: &Docs, options: &Options) -> Result<Imported, String> {
    if let Some(base) = &options.base_url {
        // Not echoed: a URL can carry credentials.
        let ok = url::Url::parse(base)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err("--base-url is not an http or https URL".into());
        }
    }
    let root = docs.root();
    let version = match (root.get("openapi"), root.get("swagger")) {
        (Some(Value::String(v)), _) if v.starts_with('3') => Version::V3,
        (_, Some(Value::String(v))) if v.starts_with('2') => Version::V2,
        (Some(v), _) | (_, Some(v)) => {
            return Err(format!(
                "OpenAPI version {v} is not supported (3.0, 3.1 and Swagger 2.0 are)"
            ))
        }
        _ => return Err("not an OpenAPI document: it has no `openapi` or `swagger` member".into()),
    };
    let mut refused: HashMap<String, String> = HashMap::new();
    for _ in 0..MAX_ROUNDS {
        let out = Generator::new(docs, options, version, &refused).run()?;
        let sources = vec![("schema.graphql".to_string(), out.schema.clone())];
        match crate::plan::load_sources(&sources, std::iter::empty()) {
            Ok(_) => {
                return Ok(Imported {
                    schema: out.schema,
                    imported: out.imported,
                    skipped: out.skipped,
                    warnings: out.warnings,
                    fields: out.fields,
                })
            }
            Err(errors) => {
                let mut blamed = false;
                for e in &errors {
                    if let Some(op) = out
                        .lines
                        .iter()
                        .find_map(|(range, op)| range.contains(&{ e.line }).then_some(op))
                    {
                        blamed |= refused
                            .insert(op.clone(), format!("the planner refused it: {}", e.message))
                            .is_none();
                    }
                }
                if !blamed {
                    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return Err(format!(
                        "the generated schema does not pass check (a bug in the importer; please report it):\n{}",
                        list.join("\n")
                    ));
                }
            }
        }
    }
    Err("the generated schema does not pass check after skipping what the planner refused".into())
}

#[derive(Clone, Copy, PartialEq)]
enum Version {
    V2,
    V3,
}

struct Output {
    schema: String,
    imported: usize,
    skipped: Vec<(String, String)>,
    warnings: Vec<String>,
    /// Lines of the schema that belong to one operation (1-based, inclusive ranges).
    lines: Vec<(std::ops::RangeInclusive<usize>, String)>,
    fields: Vec<(String, String)>,
}

/// One root field, ready to be written.
struct RootField {
    /// `GET /pets/{id}`, as messages name the operation.
    op: String,
    name: String,
    description: Option<String>,
    args: Vec<String>,
    ty: String,
    /// `@rest(…` without its error mapping and closing parenthesis.
    rest: String,
    /// `errors:` of this operation's error responses.
    errors: Option<String>,
    /// `@cache(…)` or `@invalidates(…)`.
    directives: Vec<String>,
    comments: Vec<String>,
    /// `@live` twin in `Subscription`.
    live: bool,
}

struct Generator<'d, 'o> {
    docs: &'d Docs,
    options: &'o Options,
    version: Version,
    refused: &'o HashMap<String, String>,
    types: Types<'d>,
    upstream: String,
    /// The upstream's URL.
    url: String,
    /// Other upstreams, for operations served elsewhere: (name, URL).
    extra: Vec<(String, String)>,
    warnings: Vec<String>,
    skipped: Vec<(String, String)>,
}

/// A parameter, `$ref`s followed.
struct Param<'d> {
    name: &'d str,
    location: &'d str,
    required: bool,
    /// The schema (3.x) or the parameter itself (2.0, where it carries `type`).
    schema: Option<&'d Value>,
    raw: &'d Value,
}

impl<'d, 'o> Generator<'d, 'o> {
    fn new(
        docs: &'d Docs,
        options: &'o Options,
        version: Version,
        refused: &'o HashMap<String, String>,
    ) -> Self {
        Generator {
            docs,
            options,
            version,
            refused,
            types: Types::new(docs),
            upstream: String::new(),
            url: String::new(),
            extra: Vec::new(),
            warnings: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn root(&self) -> &'d Value {
        self.docs.root()
    }

    fn run(mut self) -> Result<Output, String> {
        self.upstream = self.upstream_name();
        let url = self.upstream_url();
        self.url = url.clone();
        let forward = self.forward_headers();
        let mut queries: Vec<RootField> = Vec::new();
        let mut mutations: Vec<RootField> = Vec::new();
        let mut query_names = Taken::default();
        let mut mutation_names = Taken::default();
        let mut order: HashMap<String, usize> = HashMap::new();
        let paths = self.root().get("paths").and_then(Value::as_object);
        let no_paths = paths.is_none_or(|p| p.is_empty());
        for (path, item) in paths.into_iter().flatten() {
            let item = self.docs.deref(item);
            let Some(item_map) = item.as_object() else {
                continue;
            };
            let shared: Vec<&'d Value> = item
                .get("parameters")
                .and_then(Value::as_array)
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            for (method, op) in item_map {
                let op_name = format!("{} {path}", method.to_ascii_uppercase());
                order.insert(op_name.clone(), order.len());
                if !METHODS.contains(&method.as_str()) {
                    if ["head", "options", "trace"].contains(&method.as_str()) {
                        self.skip(&op_name, "the method has no GraphQL field (only GET, PUT, POST, DELETE and PATCH do)");
                    }
                    continue;
                }
                if let Some(why) = self.refused.get(&op_name) {
                    let why = why.clone();
                    self.skip(&op_name, &why);
                    continue;
                }
                let op = self.docs.deref(op);
                let names = if method == "get" {
                    &mut query_names
                } else {
                    &mut mutation_names
                };
                match self.operation(path, method, op, item, &shared, names) {
                    Ok(field) => {
                        if method == "get" {
                            queries.push(field)
                        } else {
                            mutations.push(field)
                        }
                    }
                    Err(why) => self.skip(&op_name, &why),
                }
            }
        }
        if queries.is_empty() {
            return Err(if no_paths {
                "the document has no paths: nothing to import".into()
            } else {
                format!(
                    "no GET operation could be imported, and a GraphQL schema needs a Query field ({} skipped)",
                    self.skipped.len()
                )
            });
        }
        let imported = queries.len() + mutations.len();
        let mut fields: Vec<(String, String)> = queries
            .iter()
            .map(|f| (f.op.clone(), format!("Query.{}", f.name)))
            .chain(
                mutations
                    .iter()
                    .map(|f| (f.op.clone(), format!("Mutation.{}", f.name))),
            )
            .collect();
        fields.sort_by_key(|(op, _)| order.get(op).copied().unwrap_or(usize::MAX));
        let upstream_errors = shared_error_mapping(queries.iter().chain(&mutations));
        let mut w = Writer::default();
        self.header(&mut w);
        w.line("extend schema");
        // Every upstream the same credentials and error mapping (the fields' `errors:`
        // leave out the shared one).
        let all = std::iter::once((self.upstream.clone(), url.clone())).chain(self.extra.clone());
        for (name, url) in all {
            let mut up = format!("  @upstream(name: {}, url: {}", quote(&name), quote(&url));
            if !forward.is_empty() {
                let list: Vec<String> = forward.iter().map(|h| quote(h)).collect();
                let _ = write!(up, ", forwardHeaders: [{}]", list.join(", "));
            }
            if let Some(errors) = &upstream_errors {
                let _ = write!(up, ",\n    errors: {errors}");
            }
            up.push(')');
            w.line(&up);
        }
        w.blank();
        let mut lines = Vec::new();
        let shared = upstream_errors.as_deref();
        write_root(&mut w, "Query", &queries, &mut lines, shared, false);
        if !mutations.is_empty() {
            write_root(&mut w, "Mutation", &mutations, &mut lines, shared, false);
        }
        if queries.iter().any(|f| f.live) {
            write_root(&mut w, "Subscription", &queries, &mut lines, shared, true);
        }
        let live = match self.options.poll_ms {
            Some(ms) => format!("@live(pollMs: {ms})"),
            None => "@live".into(),
        };
        let schema = w.text.replace(LIVE_MARK, &live);
        let mut w = Writer {
            text: schema,
            line: w.line,
        };
        let used = reachable(&self.types.defs, queries.iter().chain(&mutations));
        for (name, def) in self
            .types
            .defs
            .iter()
            .filter(|(n, _)| used.contains(n.as_str()))
        {
            write_def(&mut w, name, def);
        }
        if !self.skipped.is_empty() {
            w.line("# Operations not imported:");
            for (op, why) in &self.skipped {
                w.line(&format!("#   {}: {}", one_line(op), one_line(why)));
            }
        }
        Ok(Output {
            schema: w.text,
            imported,
            skipped: self.skipped,
            warnings: self.warnings,
            lines,
            fields,
        })
    }

    fn skip(&mut self, op: &str, why: &str) {
        self.skipped.push((op.to_string(), why.to_string()));
    }

    fn header(&self, w: &mut Writer) {
        let info = self.root().get("info");
        let title = info
            .and_then(|i| i.get("title"))
            .and_then(Value::as_str)
            .unwrap_or("an API");
        let version = info
            .and_then(|i| i.get("version"))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        let spec = match self.version {
            Version::V2 => "Swagger 2.0".to_string(),
            Version::V3 => format!(
                "OpenAPI {}",
                self.root()
                    .get("openapi")
                    .and_then(Value::as_str)
                    .unwrap_or("3")
            ),
        };
        w.line(&format!(
            "# Generated by `livegate import openapi` from {} {} ({spec}).",
            one_line(title),
            one_line(&version)
        ));
        w.line("# Every GET is cached and tagged by its path; every mutation invalidates the");
        w.line("# tags of the path it changes, so the `@live` subscriptions below refresh.");
        w.blank();
    }

    fn upstream_name(&self) -> String {
        if let Some(n) = &self.options.name {
            return n.clone();
        }
        let title = self
            .root()
            .get("info")
            .and_then(|i| i.get("title"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // The title's first phrase, at most three words: "Swagger Petstore - OpenAPI
        // 3.0" → `swagger-petstore`, "GitHub's official …" → `github`.
        let phrase = title
            .trim()
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == ' ' || c == '_'))
            .next()
            .unwrap_or("");
        let words: Vec<String> = phrase
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(3)
            .map(str::to_ascii_lowercase)
            .collect();
        if words.is_empty() {
            "api".into()
        } else {
            words.join("-")
        }
    }

    fn upstream_url(&mut self) -> String {
        if let Some(u) = &self.options.base_url {
            return u.trim_end_matches('/').to_string();
        }
        let root = self.root();
        let url = match self.version {
            Version::V3 => {
                let server = root
                    .get("servers")
                    .and_then(Value::as_array)
                    .and_then(|s| s.first());
                server.and_then(server_url)
            }
            Version::V2 => {
                let host = root.get("host").and_then(Value::as_str);
                let base = root.get("basePath").and_then(Value::as_str).unwrap_or("");
                let scheme = root
                    .get("schemes")
                    .and_then(Value::as_array)
                    .and_then(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .find(|s| *s == "https")
                            .or_else(|| s.iter().filter_map(Value::as_str).next())
                    })
                    .unwrap_or("https");
                match host {
                    Some(h) => Some(format!("{scheme}://{h}{base}")),
                    None => Some(base.to_string()),
                }
            }
        };
        let url = url.unwrap_or_default();
        let url = url.trim_end_matches('/');
        if url.starts_with("http://") || url.starts_with("https://") {
            return url.to_string();
        }
        if let Some(rest) = url.strip_prefix("//") {
            // Protocol-relative: the document was served over HTTPS, most likely.
            return format!("https://{rest}");
        }
        if url.is_empty() {
            self.warnings.push(format!(
                "the document names no server: using http://localhost (set --base-url, or {} when serving)",
                crate::plan::upstream_env_var(&self.upstream)
            ));
            return "http://localhost".into();
        }
        let absolute = format!(
            "http://localhost{}{}",
            if url.starts_with('/') || url.is_empty() {
                ""
            } else {
                "/"
            },
            url
        );
        self.warnings.push(format!(
            "the document's server URL {} is not absolute: using {} (set --base-url, or {} when serving)",
            quote(url),
            absolute,
            crate::plan::upstream_env_var(&self.upstream)
        ));
        absolute
    }

    /// The upstream an operation goes to: the document's, or another one for an absolute
    /// server the operation or its path names (`servers:` on either), made once.
    fn upstream_of(&mut self, op: &Value, item: &Value) -> Result<String, String> {
        if self.options.base_url.is_some() || self.version == Version::V2 {
            return Ok(self.upstream.clone());
        }
        let own = op
            .get("servers")
            .or_else(|| item.get("servers"))
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(server_url);
        let Some(url) = own.filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        else {
            return Ok(self.upstream.clone());
        };
        if url == self.url {
            return Ok(self.upstream.clone());
        }
        if let Some((name, _)) = self.extra.iter().find(|(_, u)| *u == url) {
            return Ok(name.clone());
        }
        let name = format!("{}-{}", self.upstream, self.extra.len() + 2);
        self.extra.push((name.clone(), url));
        Ok(name)
    }

    /// The client headers the API's security schemes read, lowercased and sorted.
    fn forward_headers(&mut self) -> Vec<String> {
        let root = self.root();
        let schemes = match self.version {
            Version::V3 => root.pointer("/components/securitySchemes"),
            Version::V2 => root.get("securityDefinitions"),
        };
        let mut out = BTreeSet::new();
        for (_, scheme) in schemes.and_then(Value::as_object).into_iter().flatten() {
            let scheme = self.docs.deref(scheme);
            let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "apiKey" => match scheme.get("in").and_then(Value::as_str) {
                    Some("header") => {
                        if let Some(n) = scheme.get("name").and_then(Value::as_str) {
                            if is_header_name(n) {
                                out.insert(n.to_ascii_lowercase());
                            }
                        }
                    }
                    Some("cookie") => {
                        out.insert("cookie".to_string());
                    }
                    _ => self.warnings.push(format!(
                        "security scheme {} sends its key in the query string, which livegate does not forward: add it to the operations' `query:` (or to the upstream's URL) yourself",
                        quote(scheme.get("name").and_then(Value::as_str).unwrap_or("?"))
                    )),
                },
                "http" | "oauth2" | "openIdConnect" | "basic" => {
                    out.insert("authorization".to_string());
                }
                _ => {}
            }
        }
        // Credentials an operation declares as a header parameter, scheme or not: they
        // are no argument (the client sends them), so they are forwarded.
        for item in root
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let item = self.docs.deref(item.1);
            let ops = item.as_object().into_iter().flatten().map(|(_, op)| op);
            for params in std::iter::once(item)
                .chain(ops)
                .filter_map(|v| v.get("parameters"))
            {
                for p in params.as_array().into_iter().flatten() {
                    let p = self.docs.deref(p);
                    let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                    if p.get("in").and_then(Value::as_str) == Some("header")
                        && ["authorization", "cookie"].contains(&name.to_ascii_lowercase().as_str())
                    {
                        out.insert(name.to_ascii_lowercase());
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Whether the operation (or, when it says nothing, the document) requires
    /// credentials: its answers are then per caller.
    fn is_private(&self, op: &Value) -> bool {
        let requirement = op.get("security").or_else(|| self.root().get("security"));
        requirement
            .and_then(Value::as_array)
            .is_some_and(|alternatives| {
                !alternatives.is_empty()
                    && alternatives
                        .iter()
                        .all(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            })
    }

    fn params(&self, shared: &[&'d Value], op: &'d Value) -> Vec<Param<'d>> {
        let mut out: Vec<Param<'d>> = Vec::new();
        let own = op
            .get("parameters")
            .and_then(Value::as_array)
            .map(|p| p.iter().collect::<Vec<_>>())
            .unwrap_or_default();
        for raw in shared.iter().chain(own.iter()) {
            let p = self.docs.deref(raw);
            let (Some(name), Some(location)) = (
                p.get("name").and_then(Value::as_str),
                p.get("in").and_then(Value::as_str),
            ) else {
                continue;
            };
            let schema = match (self.version, location) {
                (Version::V2, "body") => p.get("schema"),
                (Version::V2, _) => Some(p),
                // A parameter with `content` (serialized as JSON text, say) instead of
                // `schema` has no schema the REST dialect can write: none.
                (Version::V3, _) => p.get("schema"),
            };
            let param = Param {
                name,
                location,
                required: location == "path"
                    || p.get("required").and_then(Value::as_bool) == Some(true),
                schema,
                raw: p,
            };
            // An operation's own parameter replaces the path's of the same name and place.
            out.retain(|q| !(q.name == name && q.location == location));
            out.push(param);
        }
        out
    }

    fn operation(
        &mut self,
        path: &'d str,
        method: &str,
        op: &'d Value,
        item: &'d Value,
        shared: &[&'d Value],
        names: &mut Taken,
    ) -> Result<RootField, String> {
        let op_name = format!("{} {path}", method.to_ascii_uppercase());
        if !path.starts_with('/') {
            return Err("its path does not start with /".into());
        }
        let wanted = match op.get("operationId").and_then(Value::as_str) {
            Some(id) if !id.trim().is_empty() => camel(id),
            _ => camel(&format!("{method} {}", path_words(path))),
        };
        let name = names.take(&wanted);
        let mut comments = Vec::new();
        if name != wanted {
            comments.push(format!("{wanted} was taken"));
        }
        let params = self.params(shared, op);
        let mut arg_names = Taken::default();
        let mut args: Vec<String> = Vec::new();
        // param name (as the path writes it) → argument name
        let mut path_args: HashMap<&str, String> = HashMap::new();
        let mut query: Vec<(String, String)> = Vec::new();
        let mut join: Vec<(String, String)> = Vec::new();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body_schema: Option<(&'d Value, bool)> = None;
        let mut form_body = false;
        for p in &params {
            let hint = format!("{}{}", pascal(&name), pascal(p.name));
            match p.location {
                "path" | "query" | "header" => {}
                "body" => {
                    if let Some(s) = p.schema {
                        body_schema = Some((s, p.required));
                    }
                    continue;
                }
                "formData" => {
                    if p.required {
                        return Err("its request body is a form (formData), not JSON".into());
                    }
                    form_body = true;
                    continue;
                }
                other => {
                    if p.required {
                        return Err(format!(
                            "its required {other} parameter {} cannot be sent",
                            quote(p.name)
                        ));
                    }
                    comments.push(format!("{other} parameter {} left out", quote(p.name)));
                    continue;
                }
            }
            if p.location == "header" && OWN_HEADERS.contains(&p.name.to_ascii_lowercase().as_str())
            {
                // Sent by the client itself (credentials are forwarded: see
                // `forward_headers`).
                continue;
            }
            let unsendable = if p.location == "header" && !is_header_name(p.name) {
                Some("is not a valid header name")
            } else if p.schema.is_none() {
                Some("has no schema the REST dialect can write (`content` instead of `schema`)")
            } else if p.location == "path"
                && matches!(
                    p.raw.get("style").and_then(Value::as_str),
                    Some("matrix" | "label")
                )
            {
                Some("is in matrix or label style")
            } else {
                None
            };
            if let Some(why) = unsendable {
                if p.required {
                    return Err(format!(
                        "its {} parameter {} {why}",
                        p.location,
                        quote(p.name)
                    ));
                }
                comments.push(format!(
                    "{} parameter {} left out: it {why}",
                    p.location,
                    quote(p.name)
                ));
                continue;
            }
            let Some(schema) = p.schema else {
                continue;
            };
            let mut ty = self.types.input(schema, &hint);
            // A path's numeric id is an `ID` (what clients hold for it): either way it is
            // the same text in the path.
            if p.location == "path"
                && is_id_name(p.name)
                && matches!(ty.text.as_str(), "Int" | "String" | types::BIG_INT)
            {
                ty.text = "ID".into();
            }
            let is_list = ty.text.starts_with('[');
            let style = p.raw.get("style").and_then(Value::as_str);
            if matches!(style, Some("deepObject")) || self.is_object(schema) {
                if p.required {
                    return Err(format!(
                        "its {} parameter {} is an object, which a query string cannot carry here",
                        p.location,
                        quote(p.name)
                    ));
                }
                comments.push(format!("object parameter {} left out", quote(p.name)));
                continue;
            }
            if p.location == "path" && is_list {
                return Err(format!("its path parameter {} is a list", quote(p.name)));
            }
            if p.location == "header" && is_list {
                // A header carries a list as one comma-separated value (`simple` style):
                // the client writes it so.
                comments.push(format!(
                    "header {}: a list, sent as the text given (comma-separated)",
                    quote(p.name)
                ));
                ty.text = "String".into();
            }
            let arg = arg_names.take(&camel(p.name));
            let default = self.default_literal(schema, &ty.text);
            let non_null = p.required && default.is_none();
            let mut text = format!("{arg}: {}{}", ty.text, if non_null { "!" } else { "" });
            if let Some(d) = &default {
                let _ = write!(text, " = {d}");
            }
            args.push(text);
            let template = format!("{{args.{arg}}}");
            match p.location {
                "path" => {
                    path_args.insert(p.name, arg);
                }
                "query" => {
                    if is_list {
                        if let Some(sep) = self.list_separator(p.raw) {
                            join.push((p.name.to_string(), sep.to_string()));
                        }
                    }
                    query.push((p.name.to_string(), template));
                }
                _ => headers.push((p.name.to_string(), template)),
            }
        }
        // A literal query in the path (`/{Bucket}?acl`, `/items?type=book`) is sent as
        // constant query parameters; a fragment is never sent by HTTP.
        if path.contains('#') {
            return Err("its path has a fragment (#…), which HTTP does not send".into());
        }
        let (path_only, literal_query) = path.split_once('?').unwrap_or((path, ""));
        for pair in literal_query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name.contains('{') || value.contains('{') {
                return Err("its path's query has a parameter in it".into());
            }
            query.push((name.to_string(), value.to_string()));
        }
        // The path, each `{name}` an argument (declared or not).
        let mut rest_path = String::new();
        let mut rest = path_only;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                return Err("its path has an unclosed {".into());
            };
            rest_path.push_str(&rest[..open]);
            let pname = &rest[open + 1..open + close];
            let arg = match path_args.get(pname) {
                Some(a) => a.clone(),
                None => {
                    let a = arg_names.take(&camel(pname));
                    let ty = if is_id_name(pname) { "ID" } else { "String" };
                    args.push(format!("{a}: {ty}!"));
                    path_args.insert(pname, a.clone());
                    a
                }
            };
            let _ = write!(rest_path, "{{args.{arg}}}");
            rest = &rest[open + close + 1..];
        }
        rest_path.push_str(rest);
        // The request body.
        let mut body = None;
        if self.version == Version::V3 {
            if let Some(rb) = op.get("requestBody") {
                let rb = self.docs.deref(rb);
                let required = rb.get("required").and_then(Value::as_bool) == Some(true);
                match json_media(rb.get("content")) {
                    Media::Json(schema) => {
                        body_schema = Some((schema.unwrap_or(&Value::Null), required))
                    }
                    Media::Other(kind) if required => {
                        return Err(format!("its request body is {kind}, not JSON"));
                    }
                    Media::Other(kind) => {
                        comments.push(format!("optional {kind} request body left out"))
                    }
                    Media::None => {}
                }
            }
        } else if form_body {
            comments.push("optional form parameters left out".into());
        }
        if method == "get" && body_schema.is_some() {
            // A GET carries no body (the gateway sends none).
            if body_schema.is_some_and(|(_, required)| required) {
                return Err("it is a GET with a required request body".into());
            }
            comments.push("optional request body of a GET left out".into());
            body_schema = None;
        }
        if let Some((schema, required)) = body_schema {
            let ty = if schema.is_null() {
                types::Ty {
                    text: JSON.into(),
                    nullable: true,
                }
            } else {
                self.types.input(schema, &pascal(&name))
            };
            let arg = arg_names.take("input");
            args.push(format!(
                "{arg}: {}{}",
                ty.text,
                if required { "!" } else { "" }
            ));
            body = Some(format!("{{args.{arg}}}"));
        }
        // The answer.
        let (ty, response) = self.response(op, &name)?;
        let mut directives: Vec<String> = Vec::new();
        let upstream = self.upstream_of(op, item)?;
        let mut rest = format!("@rest(upstream: {}", quote(&upstream));
        if method != "get" {
            let _ = write!(rest, ", method: {}", method.to_ascii_uppercase());
        }
        let _ = write!(rest, ", path: {}", quote(&rest_path));
        if !query.is_empty() {
            let _ = write!(rest, ", query: {}", pairs(&query, "value"));
        }
        if !join.is_empty() {
            let _ = write!(rest, ", join: {}", pairs(&join, "value"));
        }
        if !headers.is_empty() {
            let list: Vec<String> = headers
                .iter()
                .map(|(n, v)| format!("{{name: {}, value: {}}}", quote(n), quote(v)))
                .collect();
            let _ = write!(rest, ", headers: [{}]", list.join(", "));
        }
        if let Some(b) = &body {
            let _ = write!(rest, ", body: {}", quote(b));
        }
        let errors = self.error_mapping(op);
        let tag = |p: &str| path_tag(p, &path_args);
        let live = if method == "get" {
            let mut tags = vec![tag(path)];
            for a in ancestors(path) {
                tags.push(format!("{}:*", tag(a)));
            }
            let mut cache = format!(
                "@cache(maxAge: {}, tags: [{}]",
                self.options.max_age,
                tags.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")
            );
            if self.is_private(op) {
                cache.push_str(", scope: PRIVATE");
            }
            cache.push(')');
            directives.push(cache);
            path.trim_end_matches('/').ends_with('}')
        } else {
            let mut tags = vec![tag(path)];
            if method != "post" {
                tags.push(format!("{}:*", tag(path)));
            }
            for a in ancestors(path) {
                tags.push(tag(a));
            }
            tags.dedup();
            directives.push(format!(
                "@invalidates(tags: [{}])",
                tags.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")
            ));
            false
        };
        if let Some(c) = response {
            comments.push(c);
        }
        let description = ["summary", "description"]
            .iter()
            .filter_map(|k| op.get(*k).and_then(Value::as_str))
            .map(str::trim)
            .find(|d| !d.is_empty())
            .map(str::to_string);
        Ok(RootField {
            op: op_name,
            name,
            description,
            args,
            ty,
            rest,
            errors,
            directives,
            comments,
            live,
        })
    }

    /// Whether a parameter's schema is an object (which a query string does not carry).
    fn is_object(&self, schema: &Value) -> bool {
        let s = self.docs.deref(schema);
        s.get("type").and_then(Value::as_str) == Some("object") || s.get("properties").is_some()
    }

    /// The separator a list query parameter is sent with, if one value (`explode: false`,
    /// or 2.0's `collectionFormat`); `None` repeats the parameter.
    fn list_separator(&self, p: &Value) -> Option<&'static str> {
        match self.version {
            Version::V2 => match p.get("collectionFormat").and_then(Value::as_str) {
                Some("multi") => None,
                Some("ssv") => Some(" "),
                Some("tsv") => Some("\t"),
                Some("pipes") => Some("|"),
                _ => Some(","),
            },
            Version::V3 => {
                let style = p.get("style").and_then(Value::as_str).unwrap_or("form");
                let explode = p
                    .get("explode")
                    .and_then(Value::as_bool)
                    .unwrap_or(style == "form");
                match style {
                    "spaceDelimited" => Some(" "),
                    "pipeDelimited" => Some("|"),
                    _ if explode => None,
                    _ => Some(","),
                }
            }
        }
    }

    /// A parameter's `default` as a GraphQL literal of type `ty`, when it is one.
    fn default_literal(&self, schema: &Value, ty: &str) -> Option<String> {
        let s = self.docs.deref(schema);
        let d = s.get("default").or_else(|| schema.get("default"))?;
        literal(d, ty, &self.types.defs)
    }

    /// The answer's type, and a comment on it. Errors skip the operation.
    fn response(&mut self, op: &'d Value, field: &str) -> Result<(String, Option<String>), String> {
        let responses = op.get("responses").and_then(Value::as_object);
        let mut codes: Vec<(&String, &'d Value)> = responses
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with('2'))
            .collect();
        codes.sort_by(|a, b| a.0.cmp(b.0));
        let chosen = codes.first().map(|(_, v)| *v).or_else(|| {
            // Only `default`: old documents describe success so.
            responses.and_then(|r| r.get("default"))
        });
        let Some(chosen) = chosen else {
            return Ok((
                self.json_type(),
                Some("no success response described: served as JSON".into()),
            ));
        };
        let resp = self.docs.deref(chosen);
        let schema = match self.version {
            Version::V2 => {
                let produces = op.get("produces").or_else(|| self.root().get("produces"));
                let json = produces.and_then(Value::as_array).is_none_or(|p| {
                    p.is_empty() || p.iter().filter_map(Value::as_str).any(is_json)
                });
                match resp.get("schema") {
                    Some(_) if !json => {
                        return Err("it answers in a format that is not JSON".into());
                    }
                    Some(s) => Some(s),
                    None => None,
                }
            }
            Version::V3 => match json_media(resp.get("content")) {
                Media::Json(s) => Some(s.unwrap_or(&Value::Null)),
                Media::Other(kind) => match self.plain_number(resp) {
                    // `text/plain` holding a number or a boolean (`$count` endpoints) is
                    // JSON text as it is.
                    Some(s) => Some(s),
                    None => return Err(format!("it answers {kind}, not JSON")),
                },
                Media::None => None,
            },
        };
        match schema {
            Some(s) if !s.is_null() => {
                let own = format!("{}Result", pascal(field));
                let ty = self.types.output(s, &own);
                let headers: Vec<(&str, &Value)> = resp
                    .get("headers")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| {
                        is_header_name(name) && !name.eq_ignore_ascii_case("content-type")
                    })
                    .map(|(name, h)| (name.as_str(), h))
                    .collect();
                if headers.is_empty() {
                    return Ok((ty.text, None));
                }
                let hint = format!("{}Response", pascal(field));
                let in_place = ty.text == own && s.get("$ref").is_none();
                match self.types.with_headers(&ty.text, &hint, &headers, in_place) {
                    Some(wrapper) => Ok((wrapper, None)),
                    None => Ok((
                        ty.text,
                        Some(
                            "its response headers are not served: the body is not an object".into(),
                        ),
                    )),
                }
            }
            _ => Ok((self.json_type(), None)),
        }
    }

    /// The schema of a `text/plain` answer that is a number or a boolean, whose text is
    /// JSON as it is (`42`, `true`).
    fn plain_number(&self, resp: &'d Value) -> Option<&'d Value> {
        let schema = resp.get("content")?.get("text/plain")?.get("schema")?;
        let ty = self.docs.deref(schema).get("type")?.as_str()?;
        matches!(ty, "integer" | "number" | "boolean").then_some(schema)
    }

    fn json_type(&mut self) -> String {
        self.types.json_scalar()
    }

    /// The error mapping the operation's error responses describe.
    fn error_mapping(&self, op: &Value) -> Option<String> {
        let responses = op.get("responses").and_then(Value::as_object)?;
        let mut keys: Vec<&String> = responses
            .keys()
            .filter(|k| k.starts_with('4') || k.starts_with('5') || *k == "default")
            .collect();
        keys.sort();
        for k in keys {
            let resp = self.docs.deref(&responses[k]);
            let schema = match self.version {
                Version::V2 => resp.get("schema"),
                Version::V3 => match json_media(resp.get("content")) {
                    Media::Json(s) => s,
                    _ => None,
                },
            };
            let Some(schema) = schema else { continue };
            if let Some(m) = self.mapping_of(schema) {
                return Some(m);
            }
        }
        None
    }

    /// `{message: "…", extensions: {…}}` for an error body schema with a message-like
    /// member.
    fn mapping_of(&self, schema: &Value) -> Option<String> {
        let props = self.properties(schema, 0);
        let nested = |name: &str| -> BTreeMap<String, &Value> {
            props
                .get(name)
                .map(|s| self.properties(s, 0))
                .unwrap_or_default()
        };
        let is_string = |s: &Value| {
            let s = self.docs.deref(s);
            s.get("type").and_then(Value::as_str) == Some("string")
                || s.get("type")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|t| t == "string"))
        };
        let (prefix, members) = if props.contains_key("error") && !is_string(props["error"]) {
            let inner = nested("error");
            if inner.is_empty() {
                ("", props.clone())
            } else {
                ("error.", inner)
            }
        } else {
            ("", props.clone())
        };
        let message = [
            "message",
            "detail",
            "title",
            "error_description",
            "error",
            "msg",
            "description",
        ]
        .iter()
        .find(|m| members.get(**m).is_some_and(|s| is_string(s)))?;
        let mut extensions = Vec::new();
        for (ext, candidates) in [
            ("code", &["code", "error_code", "errorCode", "type"][..]),
            (
                "details",
                &["details", "errors", "violations", "fields"][..],
            ),
        ] {
            if let Some(c) = candidates
                .iter()
                .find(|c| members.contains_key(**c) && **c != *message)
            {
                extensions.push(format!("{ext}: {}", quote(&format!("{prefix}{c}"))));
            }
        }
        let mut out = format!("{{message: {}", quote(&format!("{prefix}{message}")));
        if !extensions.is_empty() {
            let _ = write!(out, ", extensions: {{{}}}", extensions.join(", "));
        }
        out.push('}');
        Some(out)
    }

    /// The members of an object schema (its `allOf` parts' too).
    fn properties(&self, schema: &'d Value, depth: usize) -> BTreeMap<String, &'d Value> {
        let mut out = BTreeMap::new();
        if depth > 16 {
            return out;
        }
        let s = self.docs.deref(schema);
        for part in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(self.properties(part, depth + 1));
        }
        for (k, v) in s
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            out.insert(k.clone(), v);
        }
        out
    }
}

/// The error mapping most operations share, written on `@upstream` (and left out of their
/// `@rest`); `None` when no operation has one. Ties go to the mapping first in text order.
fn shared_error_mapping<'a>(fields: impl Iterator<Item = &'a RootField>) -> Option<String> {
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for m in fields.filter_map(|f| f.errors.as_ref()) {
        *counts.entry(m).or_default() += 1;
    }
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(m, _)| (*m).clone())
}

/// One root type; a `Subscription` has the `@live` twin of each live `Query` field.
fn write_root(
    w: &mut Writer,
    type_name: &str,
    fields: &[RootField],
    lines: &mut Vec<(std::ops::RangeInclusive<usize>, String)>,
    shared_errors: Option<&str>,
    subscription: bool,
) {
    w.line(&format!("type {type_name} {{"));
    for f in fields.iter().filter(|f| !subscription || f.live) {
        let start = w.line + 1;
        if let Some(d) = &f.description {
            w.description(d, "  ");
        }
        for c in &f.comments {
            w.line(&format!("  # {}", one_line(c)));
        }
        let args = if f.args.is_empty() {
            String::new()
        } else {
            format!("({})", f.args.join(", "))
        };
        w.line(&format!("  {}{args}: {}", f.name, f.ty));
        if subscription {
            w.line(&format!("    {LIVE_MARK}"));
        } else {
            let mut rest = f.rest.clone();
            if let Some(m) = f.errors.as_deref().filter(|m| Some(*m) != shared_errors) {
                let _ = write!(rest, ", errors: {m}");
            }
            rest.push(')');
            w.line(&format!("    {rest}"));
            for d in &f.directives {
                w.line(&format!("    {d}"));
            }
        }
        lines.push((start..=w.line, f.op.clone()));
    }
    w.line("}");
    w.blank();
}

/// Replaced by the `@live` directive once written (its arguments are the options').
const LIVE_MARK: &str = "@live\u{0}";

fn write_def(w: &mut Writer, name: &str, def: &Def) {
    let (description, comment) = def.about();
    if let Some(d) = description {
        w.description(d, "");
    }
    if let Some(c) = comment {
        w.line(&format!("# {name}: {}", one_line(c)));
    }
    match def {
        Def::Scalar { .. } => w.line(&format!("scalar {name}")),
        Def::Object {
            fields, implements, ..
        } => {
            let implements = if implements.is_empty() {
                String::new()
            } else {
                format!(" implements {}", implements.join(" & "))
            };
            w.line(&format!("type {name}{implements} {{"));
            write_fields(w, fields);
            w.line("}");
        }
        Def::Input { fields, .. } => {
            w.line(&format!("input {name} {{"));
            write_fields(w, fields);
            w.line("}");
        }
        Def::Interface {
            fields, field, map, ..
        } => {
            w.line(&format!(
                "interface {name} @discriminate(field: {}, map: [{}]) {{",
                quote(field),
                discriminate_map(map)
            ));
            write_fields(w, fields);
            w.line("}");
        }
        Def::Enum { values, .. } => {
            w.line(&format!("enum {name} {{"));
            for (value, from) in values {
                if value == from {
                    w.line(&format!("  {value}"));
                } else {
                    w.line(&format!("  {value} @map(from: {})", quote(from)));
                }
            }
            w.line("}");
        }
        Def::Union {
            members,
            field,
            map,
            ..
        } => w.line(&format!(
            "union {name} @discriminate(field: {}, map: [{}]) = {}",
            quote(field),
            discriminate_map(map),
            members.join(" | ")
        )),
    }
    w.blank();
}

/// The named types of a type reference: `[Pet!]!` → `Pet`; of an argument list
/// (`id: ID!, status: Status = SOLD`) → `ID`, `Status` (and the default's words, which
/// are never type names of their own here).
fn type_names(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// The types the root fields use, directly or through other types (an interface's
/// implementing types included): only these are written, so a type made for an
/// operation later skipped, or replaced by a twin, leaves nothing behind.
fn reachable<'a>(
    defs: &'a BTreeMap<String, Def>,
    roots: impl Iterator<Item = &'a RootField>,
) -> std::collections::HashSet<&'a str> {
    let mut used: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut queue: Vec<&str> = Vec::new();
    let visit =
        |name: &'a str, used: &mut std::collections::HashSet<&'a str>, queue: &mut Vec<&'a str>| {
            if let Some((key, _)) = defs.get_key_value(name) {
                if used.insert(key.as_str()) {
                    queue.push(key.as_str());
                }
            }
        };
    for f in roots {
        for name in type_names(&f.ty).chain(f.args.iter().flat_map(|a| type_names(a))) {
            visit(name, &mut used, &mut queue);
        }
    }
    while let Some(name) = queue.pop() {
        match &defs[name] {
            Def::Object {
                fields, implements, ..
            } => {
                for n in fields
                    .iter()
                    .flat_map(|f| type_names(&f.ty))
                    .chain(implements.iter().map(String::as_str))
                {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Input { fields, .. } => {
                for n in fields.iter().flat_map(|f| type_names(&f.ty)) {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Interface { fields, map, .. } => {
                for n in fields
                    .iter()
                    .flat_map(|f| type_names(&f.ty))
                    .chain(map.iter().map(|(_, t)| t.as_str()))
                {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Union { members, .. } => {
                for n in members {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Enum { .. } | Def::Scalar { .. } => {}
        }
    }
    used
}

/// `@discriminate(map:)`'s list form (values need not be GraphQL names).
fn discriminate_map(map: &[(String, String)]) -> String {
    let entries: Vec<String> = map
        .iter()
        .map(|(value, ty)| format!("{{value: {}, type: {}}}", quote(value), quote(ty)))
        .collect();
    entries.join(", ")
}

fn write_fields(w: &mut Writer, fields: &[Field]) {
    for f in fields {
        if f.name.is_empty() {
            if let Some(c) = &f.comment {
                w.line(&format!("  # {}", one_line(c)));
            }
            continue;
        }
        if let Some(d) = &f.description {
            w.description(d, "  ");
        }
        let comment = f
            .comment
            .as_ref()
            .map(|c| format!(" # {}", one_line(c)))
            .unwrap_or_default();
        w.line(&format!("  {}: {}{}{comment}", f.name, f.ty, f.directives));
    }
}

#[derive(Default)]
struct Writer {
    text: String,
    /// Lines written so far.
    line: usize,
}

impl Writer {
    fn line(&mut self, text: &str) {
        self.text.push_str(text);
        self.text.push('\n');
        self.line += 1 + text.matches('\n').count();
    }

    fn blank(&mut self) {
        self.line("");
    }

    /// A block-string description, indented.
    fn description(&mut self, text: &str, indent: &str) {
        let text = text
            .replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace("\"\"\"", "\\\"\"\"");
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if !text.contains('\n') {
            self.line(&format!("{indent}{}", quote(text)));
            return;
        }
        self.line(&format!("{indent}\"\"\""));
        for l in text.lines() {
            let l = l.trim_end();
            if l.is_empty() {
                self.line("");
            } else {
                self.line(&format!("{indent}{l}"));
            }
        }
        self.line(&format!("{indent}\"\"\""));
    }
}

/// A server's URL, its variables' defaults filled in.
fn server_url(server: &Value) -> Option<String> {
    let mut url = server.get("url")?.as_str()?.to_string();
    if let Some(vars) = server.get("variables").and_then(Value::as_object) {
        for (k, v) in vars {
            if let Some(d) = v.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{k}}}"), d);
            }
        }
    }
    Some(url.trim_end_matches('/').to_string())
}

/// A comment's text on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

enum Media<'d> {
    /// A JSON media type, with its schema if it has one.
    Json(Option<&'d Value>),
    /// Only other media types (the first named).
    Other(String),
    None,
}

fn is_json(media: &str) -> bool {
    let m = media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    m == "application/json"
        || m.ends_with("+json")
        || m == "*/*"
        || m == "application/*"
        || m.ends_with("/json")
}

fn json_media(content: Option<&Value>) -> Media<'_> {
    let Some(map) = content.and_then(Value::as_object) else {
        return Media::None;
    };
    if map.is_empty() {
        return Media::None;
    }
    // `application/json` first, then any other JSON type.
    let found = map
        .get("application/json")
        .or_else(|| map.iter().find(|(k, _)| is_json(k)).map(|(_, v)| v));
    match found {
        Some(m) => Media::Json(m.get("schema")),
        None => Media::Other(map.keys().next().cloned().unwrap_or_default()),
    }
}

/// `id`, `petId`, `pet_id`, `pet-id`.
fn is_id_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("id")
        || name.ends_with("Id")
        || name.ends_with("ID")
        || name.to_ascii_lowercase().ends_with("_id")
        || name.to_ascii_lowercase().ends_with("-id")
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `/repos/{owner}/{repo}/issues` → `repos owner repo issues`, for a name.
fn path_words(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with('{') {
                format!("by {}", s.trim_matches(|c| c == '{' || c == '}'))
            } else {
                s.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The proper ancestors of a path, nearest first: `/a/{id}/b` → `/a/{id}`, `/a`.
fn ancestors(path: &str) -> Vec<&str> {
    let trimmed = path.trim_end_matches('/');
    let mut out = Vec::new();
    let mut end = trimmed.len();
    while let Some(i) = trimmed[..end].rfind('/') {
        if i == 0 {
            break;
        }
        out.push(&trimmed[..i]);
        end = i;
    }
    out
}

/// A path's cache tag: its segments joined with `:`, parameters as templates
/// (`/orders/{id}` → `orders:{args.id}`).
fn path_tag(path: &str, args: &HashMap<&str, String>) -> String {
    let parts: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            let mut out = String::new();
            let mut rest = segment;
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    break;
                };
                out.push_str(&rest[..open]);
                let name = &rest[open + 1..open + close];
                match args.get(name) {
                    Some(a) => {
                        let _ = write!(out, "{{args.{a}}}");
                    }
                    None => out.push_str(name),
                }
                rest = &rest[open + close + 1..];
            }
            out.push_str(rest);
            out
        })
        .collect();
    if parts.is_empty() {
        "/".into()
    } else {
        parts.join(":")
    }
}

/// `{a: "x", b: "y"}`, or the list form when a name is not a GraphQL name.
fn pairs(items: &[(String, String)], _value: &str) -> String {
    if items.iter().all(|(n, _)| is_name(n)) {
        let list: Vec<String> = items
            .iter()
            .map(|(n, v)| format!("{n}: {}", quote(v)))
            .collect();
        format!("{{{}}}", list.join(", "))
    } else {
        let list: Vec<String> = items
            .iter()
            .map(|(n, v)| format!("{{name: {}, value: {}}}", quote(n), quote(v)))
            .collect();
        format!("[{}]", list.join(", "))
    }
}

/// A JSON default as a GraphQL literal of `ty` (`[Status!]`, `Int`, an enum…), or
/// `None` when it does not fit.
fn literal(d: &Value, ty: &str, defs: &BTreeMap<String, Def>) -> Option<String> {
    if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let inner = inner.trim_end_matches('!');
        return match d {
            Value::Array(items) => {
                let parts: Option<Vec<String>> =
                    items.iter().map(|i| literal(i, inner, defs)).collect();
                Some(format!("[{}]", parts?.join(", ")))
            }
            single => literal(single, inner, defs),
        };
    }
    match (ty, d) {
        ("String" | "ID", Value::String(s)) => Some(quote(s)),
        ("Int", Value::Number(n)) if n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()) => {
            Some(n.to_string())
        }
        ("Float", Value::Number(n)) => Some(n.to_string()),
        (types::BIG_INT, Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        ("Boolean", Value::Bool(b)) => Some(b.to_string()),
        (_, Value::String(s)) => match defs.get(ty) {
            Some(Def::Enum { values, .. }) => values
                .iter()
                .find(|(_, from)| from == s)
                .map(|(v, _)| v.clone()),
            _ => None,
        },
        _ => None,
    }
}
