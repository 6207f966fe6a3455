//! `livegate import openapi`: an OpenAPI document (3.0, 3.1 or Swagger 2.0; JSON or YAML)
//! → a schema that `livegate check` accepts and that serves the API as it is.
//!
//! The document is read once ([`doc`]); its schemas become types ([`types`]); each
//! operation becomes a root field here. What cannot be said in the schema language is
//! skipped with a comment naming it and why, and the result is checked with the planner
//! itself: an operation whose field the planner refuses is skipped too (the loop runs
//! until the schema passes), so the output never fails `check`.

mod doc;
mod errors;
mod names;
mod operations;
mod rules;
mod types;
mod upstream;
mod write;

use doc::Docs;
use names::{camel, is_name, pascal, Taken};
use rules::{
    ancestors, is_header_name, is_id_name, is_json, json_media, literal, name_value_list, pairs,
    path_tag, path_words, placeholders, server_url, Media,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use types::{quote, Def, Field, Types};
use write::{one_line, reachable, shared_error_mapping, write_def, write_root, Writer};

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
                match self.operation(&op_name, path, method, op, item, &shared, names) {
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
        write_root(&mut w, "Query", &queries, &mut lines, shared, None);
        if !mutations.is_empty() {
            write_root(&mut w, "Mutation", &mutations, &mut lines, shared, None);
        }
        if queries.iter().any(|f| f.live) {
            let live = match self.options.poll_ms {
                Some(ms) => format!("@live(pollMs: {ms})"),
                None => "@live".into(),
            };
            write_root(
                &mut w,
                "Subscription",
                &queries,
                &mut lines,
                shared,
                Some(&live),
            );
        }
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
}
