//! Stage ② — meaning. Input: a [`Config`]. Output: a [`Plan`], everything the runtime
//! needs, already checked: upstreams with parsed URLs, every template parsed and proven to
//! name real arguments and parent fields, every root field with a resolver. Every error
//! is collected with its `file:line:col`; a Plan exists only for a schema with none.
//!
//! Pure and synchronous, like [`crate::config`]: a string in, `Result<Plan, Vec<_>>` out.

mod abstracts;
pub mod introspection;
mod rest;
mod stream;

use crate::config::{
    self, ArgConfig, Config, ConfigError, Errors, FieldConfig, Scope, TypeConfigKind, TypeRef,
};
use async_graphql_parser::Positioned;
use async_graphql_value::ConstValue;
use indexmap::IndexMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use abstracts::Possible;
pub use rest::{Batch, Body, RestPlan};
pub use stream::{Apply, SourcePlan, StreamPlan, UpdatesPlan};

use crate::template::Template;

/// Deploy-time settings that change the plan: `LIVEGATE_UPSTREAM_<NAME>_URL` overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Upstream name (as written in the schema) → URL.
    pub upstream_urls: HashMap<String, String>,
}

impl Overrides {
    /// Reads `LIVEGATE_UPSTREAM_<NAME>_URL` (name upper-cased, `-` as `_`) from `vars`.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>, config: &Config) -> Self {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let mut upstream_urls = HashMap::new();
        for u in &config.upstreams {
            if let Some(url) = vars.get(&upstream_env_var(&u.node.name.node)) {
                upstream_urls.insert(u.node.name.node.clone(), url.clone());
            }
        }
        Overrides { upstream_urls }
    }
}

/// The environment variable that overrides the URL of upstream `name`.
pub fn upstream_env_var(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LIVEGATE_UPSTREAM_{name}_URL")
}

#[derive(Debug)]
pub struct UpstreamPlan {
    pub name: String,
    /// Base URL; a field's path is appended to its path.
    pub url: url::Url,
    pub timeout: Option<Duration>,
    /// `@upstream(maxConnections:)`: requests in flight at once (else
    /// `--upstream-max-connections`); more wait for one to finish, within their deadline.
    pub max_connections: Option<usize>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Client request headers passed on, lower-case names.
    pub forward_headers: Vec<http::HeaderName>,
}

#[derive(Debug, Clone)]
pub struct ArgPlan {
    pub name: String,
    pub ty: TypeRef,
    pub default: Option<ConstValue>,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CachePlan {
    pub max_age: Duration,
    pub swr: Duration,
    pub tags: Vec<Template>,
    pub scope: Scope,
}

#[derive(Debug)]
pub struct FieldPlan {
    pub name: String,
    pub ty: TypeRef,
    pub args: Vec<ArgPlan>,
    pub description: Option<String>,
    pub deprecated: Option<Option<String>>,
    /// `None`: the value is read from the parent object under the field's name.
    pub rest: Option<RestPlan>,
    /// Tags dropped from the cache after this mutation succeeds.
    pub invalidates: Vec<Template>,
    /// A Subscription field: a live query of the Query field of the same name.
    pub live: Option<LivePlan>,
    /// A Query field whose cache entry an upstream socket patches while it is in use.
    pub updates: Option<Arc<UpdatesPlan>>,
    /// A Subscription field whose events are upstream socket messages.
    pub stream: Option<Arc<SourcePlan>>,
    /// Where a field without `@rest` reads its value in the parent's upstream data: its
    /// own name, or the path `@map(from:)` gives.
    pub member: Vec<Arc<str>>,
}

/// The member path of `f` in its parent's data, checking its `@map`.
fn member(ctx: &FieldCtx<'_>, f: &FieldConfig, errors: &mut Errors) -> Vec<Arc<str>> {
    let own = || vec![Arc::from(f.name.node.as_str())];
    let Some(m) = &f.map else {
        return own();
    };
    let qualified = format!("{}.{}", ctx.type_name, f.name.node);
    if ctx.role != Role::Object {
        errors.push(
            m.pos,
            format!("@map is for fields of object types, read from their parent's data; `{qualified}` is not one"),
        );
        return own();
    }
    if f.rest.is_some() {
        errors.push(
            m.pos,
            format!("@map on `{qualified}`: a field with @rest reads its own upstream answer, not its parent's data"),
        );
        return own();
    }
    if m.node.split('.').any(str::is_empty) {
        errors.push(
            m.pos,
            format!(
                "@map(from: {:?}) must be a member name or a dotted path like \"owner.login\"",
                m.node
            ),
        );
        return own();
    }
    m.node.split('.').map(Arc::from).collect()
}

#[derive(Debug, Clone)]
pub struct LivePlan {
    /// Poll the upstream this often while the entry has subscribers.
    pub poll: Option<Duration>,
}

#[derive(Debug)]
pub enum TypePlanKind {
    Object {
        fields: Vec<Arc<FieldPlan>>,
        /// The interfaces it implements.
        implements: Vec<String>,
    },
    /// Its fields are declared for queries and introspection; values are resolved by
    /// the fields of the concrete object type [`Possible::type_of`] picks.
    Interface {
        fields: Vec<Arc<FieldPlan>>,
        possible: Possible,
    },
    Union {
        possible: Possible,
    },
    InputObject {
        fields: Vec<ArgPlan>,
    },
    Enum {
        values: Vec<String>,
    },
    Scalar,
}

#[derive(Debug)]
pub struct TypePlan {
    pub name: String,
    pub description: Option<String>,
    pub kind: TypePlanKind,
}

/// Everything the runtime needs to serve a schema.
#[derive(Debug)]
pub struct Plan {
    /// SHA-256 of the schema text it was loaded from (hex), for `livegate_schema_info`.
    pub source_hash: String,
    pub upstreams: IndexMap<String, Arc<UpstreamPlan>>,
    pub types: IndexMap<String, TypePlan>,
    pub query: String,
    pub mutation: Option<String>,
    pub subscription: Option<String>,
    /// `__schema`'s value and the introspection types' plans (also in `types`).
    pub introspection: introspection::Introspection,
}

impl Plan {
    /// A Subscription field by name.
    pub fn subscription_field(&self, name: &str) -> Option<&Arc<FieldPlan>> {
        let fields = self.object_fields(self.subscription.as_deref()?)?;
        fields.iter().find(|f| f.name == name)
    }

    pub fn object_fields(&self, type_name: &str) -> Option<&[Arc<FieldPlan>]> {
        match &self.types.get(type_name)?.kind {
            TypePlanKind::Object { fields, .. } => Some(fields),
            _ => None,
        }
    }

    /// The interface's or union's possible types, if `type_name` is one.
    pub fn possible(&self, type_name: &str) -> Option<&Possible> {
        match &self.types.get(type_name)?.kind {
            TypePlanKind::Interface { possible, .. } | TypePlanKind::Union { possible } => {
                Some(possible)
            }
            _ => None,
        }
    }

    /// The field `name` selected on a value of `type_name`: the object's own, or for an
    /// interface or union, the first possible type's field of that name (a selection in a
    /// fragment on one of them).
    pub fn field(&self, type_name: &str, name: &str) -> Option<&Arc<FieldPlan>> {
        if let Some(fields) = self.object_fields(type_name) {
            return fields.iter().find(|f| f.name == name);
        }
        let possible = self.possible(type_name)?;
        possible.types.iter().find_map(|t| {
            self.object_fields(t)
                .and_then(|fields| fields.iter().find(|f| f.name == name))
        })
    }
}

/// Parses and plans a schema in one step; what `livegate check` and start-up call.
pub fn load(
    file: &str,
    source: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Plan, Vec<ConfigError>> {
    let config = config::parse(file, source)?;
    let overrides = Overrides::from_env(env, &config);
    let mut plan = build(&config, &overrides)?;
    plan.source_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(source.as_bytes()))
    };
    Ok(plan)
}

pub const BUILTIN_SCALARS: [&str; 5] = ["Int", "Float", "String", "Boolean", "ID"];

/// What a named type is, as far as type positions care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Output,   // object
    Abstract, // interface or union
    Input,    // input object
    Leaf,     // scalar or enum
}

pub fn build(config: &Config, overrides: &Overrides) -> Result<Plan, Vec<ConfigError>> {
    let mut errors = Errors::new(&config.file);

    // Type names first, so field types can be checked whatever the order of definitions.
    let mut kinds: HashMap<&str, Kind> = BUILTIN_SCALARS.iter().map(|s| (*s, Kind::Leaf)).collect();
    for t in &config.types {
        let kind = match t.kind {
            TypeConfigKind::Object { .. } => Kind::Output,
            TypeConfigKind::Interface { .. } | TypeConfigKind::Union { .. } => Kind::Abstract,
            TypeConfigKind::InputObject { .. } => Kind::Input,
            TypeConfigKind::Enum { .. } | TypeConfigKind::Scalar => Kind::Leaf,
        };
        if t.name.node.starts_with("__") {
            errors.push(
                t.name.pos,
                format!(
                    "type `{}`: names starting with `__` are reserved for introspection",
                    t.name.node
                ),
            );
        }
        if kinds.insert(t.name.node.as_str(), kind).is_some() {
            errors.push(
                t.name.pos,
                format!("type `{}` is defined twice", t.name.node),
            );
        }
    }

    let upstreams = upstreams(config, overrides, &mut errors);

    let query = config
        .query
        .as_ref()
        .map(|q| q.node.clone())
        .unwrap_or_else(|| "Query".into());
    let mutation = match &config.mutation {
        Some(m) => Some(m.node.clone()),
        None => kinds
            .contains_key("Mutation")
            .then(|| "Mutation".to_string()),
    };
    let subscription = config
        .subscription
        .as_ref()
        .map(|s| s.node.clone())
        .or_else(|| {
            kinds
                .contains_key("Subscription")
                .then(|| "Subscription".to_string())
        });
    match kinds.get(query.as_str()) {
        Some(Kind::Output) => {}
        _ => {
            let pos = config
                .query
                .as_ref()
                .map(|q| q.pos)
                .unwrap_or(async_graphql_parser::Pos { line: 1, column: 1 });
            errors.push(
                pos,
                format!("the schema needs an object type `{query}` for queries"),
            );
        }
    }
    for root in [&config.mutation, &config.subscription]
        .into_iter()
        .flatten()
    {
        if kinds.get(root.node.as_str()) != Some(&Kind::Output) {
            errors.push(
                root.pos,
                format!(
                    "root type `{}` is not an object type of this schema",
                    root.node
                ),
            );
        }
    }

    let relations = abstracts::Relations::new(config);
    let mut types = IndexMap::new();
    for t in &config.types {
        let name = t.name.node.clone();
        let is_subscription = subscription.as_deref() == Some(name.as_str());
        let role = if is_subscription {
            Role::Subscription
        } else if name == query {
            Role::Query
        } else if mutation.as_deref() == Some(name.as_str()) {
            Role::Mutation
        } else {
            Role::Object
        };
        let kind = match &t.kind {
            TypeConfigKind::Interface {
                fields,
                discriminate,
            } => {
                let possible = abstracts::possible(
                    &kinds,
                    &relations,
                    &t.name,
                    None,
                    discriminate.as_ref(),
                    &mut errors,
                );
                let ctx = FieldCtx {
                    config,
                    kinds: &kinds,
                    upstreams: &upstreams,
                    type_name: &name,
                    role: Role::Interface,
                    fields,
                    relations: &relations,
                };
                if fields.is_empty() {
                    errors.push(t.name.pos, format!("interface `{name}` has no fields"));
                }
                let fields = fields
                    .iter()
                    .map(|f| Arc::new(interface_field(&ctx, f, &mut errors)))
                    .collect();
                TypePlanKind::Interface { fields, possible }
            }
            TypeConfigKind::Union {
                members,
                discriminate,
            } => TypePlanKind::Union {
                possible: abstracts::possible(
                    &kinds,
                    &relations,
                    &t.name,
                    Some(members),
                    discriminate.as_ref(),
                    &mut errors,
                ),
            },
            TypeConfigKind::Object { fields, implements } => {
                if role == Role::Subscription && !implements.is_empty() {
                    errors.push(
                        implements[0].pos,
                        format!("the subscription type `{name}` cannot implement an interface: its fields are streams, not values"),
                    );
                }
                abstracts::check_implements(
                    config,
                    &kinds,
                    &relations,
                    &name,
                    fields,
                    implements,
                    &mut errors,
                );
                if fields.is_empty() {
                    errors.push(t.name.pos, format!("type `{name}` has no fields"));
                }
                let mut seen = HashMap::new();
                let mut planned = Vec::new();
                for f in fields {
                    if seen.insert(f.name.node.as_str(), ()).is_some() {
                        errors.push(
                            f.name.pos,
                            format!("field `{name}.{}` is defined twice", f.name.node),
                        );
                    }
                    let ctx = FieldCtx {
                        config,
                        kinds: &kinds,
                        upstreams: &upstreams,
                        type_name: &name,
                        role,
                        fields,
                        relations: &relations,
                    };
                    if role == Role::Subscription {
                        member(&ctx, f, &mut errors);
                        if let Some(p) = live_field(&ctx, &query, f, &mut errors) {
                            planned.push(Arc::new(p));
                        }
                    } else if let Some(p) = field(&ctx, f, &mut errors) {
                        planned.push(Arc::new(p));
                    }
                }
                TypePlanKind::Object {
                    fields: planned,
                    implements: implements.iter().map(|i| i.node.clone()).collect(),
                }
            }
            TypeConfigKind::InputObject { fields } => TypePlanKind::InputObject {
                fields: fields.iter().map(|a| arg(a, &kinds, &mut errors)).collect(),
            },
            TypeConfigKind::Enum { values } => TypePlanKind::Enum {
                values: values.iter().map(|v| v.name.node.clone()).collect(),
            },
            TypeConfigKind::Scalar => TypePlanKind::Scalar,
        };
        types.insert(
            name.clone(),
            TypePlan {
                name,
                description: t.description.clone(),
                kind,
            },
        );
    }

    if errors.list.is_empty() {
        let introspection = introspection::build(
            config,
            [
                Some(query.as_str()),
                mutation.as_deref(),
                subscription.as_deref(),
            ],
            &mut types,
        );
        Ok(Plan {
            source_hash: String::new(),
            upstreams,
            types,
            query,
            mutation,
            subscription,
            introspection,
        })
    } else {
        errors.list.sort_by_key(|e| (e.line, e.column));
        Err(errors.list)
    }
}

fn upstreams(
    config: &Config,
    overrides: &Overrides,
    errors: &mut Errors,
) -> IndexMap<String, Arc<UpstreamPlan>> {
    let mut out = IndexMap::new();
    for u in &config.upstreams {
        let d = &u.node;
        let name = d.name.node.clone();
        if out.contains_key(&name) {
            errors.push(
                d.name.pos,
                format!("@upstream(name: {name:?}) is defined twice"),
            );
            continue;
        }
        let (raw, source) = match overrides.upstream_urls.get(&name) {
            Some(url) => (url.clone(), format!(" (from {})", upstream_env_var(&name))),
            None => (d.url.node.clone(), String::new()),
        };
        let url = match url::Url::parse(&raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            Ok(_) => {
                errors.push(d.url.pos, format!("@upstream(url: {raw:?}){source} must be an http:// or https:// URL with a host"));
                continue;
            }
            Err(e) => {
                errors.push(
                    d.url.pos,
                    format!("@upstream(url: {raw:?}){source} is not a valid URL: {e}"),
                );
                continue;
            }
        };
        let headers = d
            .headers
            .iter()
            .filter_map(|h| static_header(h, errors))
            .collect();
        let mut forward_headers = Vec::new();
        for h in &d.forward_headers {
            match http::HeaderName::from_bytes(h.node.as_bytes()) {
                Ok(n) => forward_headers.push(n),
                Err(_) => errors.push(
                    h.pos,
                    format!("forwardHeaders: {:?} is not a valid header name", h.node),
                ),
            }
        }
        let timeout = match &d.timeout_ms {
            Some(t) if t.node == 0 => {
                errors.push(t.pos, "@upstream(timeoutMs:) must be at least 1");
                None
            }
            Some(t) => Some(Duration::from_millis(t.node)),
            None => None,
        };
        let max_connections = match &d.max_connections {
            Some(m) if m.node == 0 => {
                errors.push(m.pos, "@upstream(maxConnections:) must be at least 1");
                None
            }
            Some(m) => Some(usize::try_from(m.node).unwrap_or(usize::MAX)),
            None => None,
        };
        out.insert(
            name.clone(),
            Arc::new(UpstreamPlan {
                name,
                url,
                timeout,
                max_connections,
                headers,
                forward_headers,
            }),
        );
    }
    out
}

/// A header's name, or an error at its position.
pub(crate) fn header_name(h: &config::Header, errors: &mut Errors) -> Option<http::HeaderName> {
    http::HeaderName::from_bytes(h.name.node.as_bytes())
        .map_err(|_| {
            errors.push(
                h.name.pos,
                format!("{:?} is not a valid header name", h.name.node),
            )
        })
        .ok()
}

fn static_header(
    h: &config::Header,
    errors: &mut Errors,
) -> Option<(http::HeaderName, http::HeaderValue)> {
    let name = header_name(h, errors)?;
    let value = http::HeaderValue::from_str(&h.value.node)
        .map_err(|_| {
            errors.push(
                h.value.pos,
                format!("header {name}: value is not valid in a header"),
            )
        })
        .ok()?;
    Some((name, value))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Query,
    Mutation,
    Subscription,
    Object,
    Interface,
}

struct FieldCtx<'a> {
    config: &'a Config,
    kinds: &'a HashMap<&'a str, Kind>,
    upstreams: &'a IndexMap<String, Arc<UpstreamPlan>>,
    type_name: &'a str,
    role: Role,
    /// All fields of the enclosing type: what `{parent.x}` may name.
    fields: &'a [FieldConfig],
    relations: &'a abstracts::Relations<'a>,
}

impl<'a> FieldCtx<'a> {
    /// The fields of the object type `name` as written, if it is one.
    fn object_fields(&self, name: &str) -> Option<&'a [FieldConfig]> {
        let t = self.config.types.iter().find(|t| t.name.node == name)?;
        match &t.kind {
            TypeConfigKind::Object { fields, .. } => Some(fields),
            _ => None,
        }
    }

    /// The upstream member that the field `key` of items of type `item` reads: its
    /// `@map(from:)`, or its name. For an interface or union, every possible type must
    /// have the field and read the same member. `Err` says why there is none.
    fn key_member(&self, item: &str, key: &str) -> Result<String, String> {
        let types: Vec<&str> = match self.kinds.get(item) {
            Some(Kind::Output) => vec![item],
            Some(Kind::Abstract) => self.relations.possible(item).to_vec(),
            _ => return Err(format!("`{item}` is not an object type")),
        };
        let mut member: Option<String> = None;
        for t in types {
            let field = self
                .object_fields(t)
                .and_then(|fields| fields.iter().find(|x| x.name.node == key))
                .ok_or_else(|| format!("`{t}` has no field `{key}`"))?;
            let m = match &field.map {
                Some(m) if m.node.contains('.') => {
                    return Err(format!(
                    "`{t}.{key}` reads the nested member {:?}; a key must be a top-level member",
                    m.node
                ))
                }
                Some(m) => m.node.clone(),
                None => key.to_string(),
            };
            match &member {
                Some(earlier) if *earlier != m => {
                    return Err(format!(
                        "the types of `{item}` read `{key}` from different members ({earlier:?}, {m:?})"
                    ))
                }
                _ => member = Some(m),
            }
        }
        member.ok_or_else(|| format!("`{item}` has no possible type"))
    }
}

/// The `@upstream` a directive names, or the error that it names none. An upstream that
/// is declared but failed (a bad URL, say) has its own error already: no second one.
fn upstream(
    ctx: &FieldCtx<'_>,
    name: &Positioned<String>,
    directive: &str,
    errors: &mut Errors,
) -> Option<Arc<UpstreamPlan>> {
    if let Some(u) = ctx.upstreams.get(&name.node) {
        return Some(u.clone());
    }
    let declared: Vec<&str> = ctx
        .config
        .upstreams
        .iter()
        .map(|u| u.node.name.node.as_str())
        .collect();
    if !declared.contains(&name.node.as_str()) {
        let known = if declared.is_empty() {
            "none".to_string()
        } else {
            declared.join(", ")
        };
        errors.push(
            name.pos,
            format!(
                "@{directive}(upstream: {:?}) names no @upstream; known: {known}",
                name.node
            ),
        );
    }
    None
}

fn check_type(
    ty: &Positioned<TypeRef>,
    want: Kind,
    kinds: &HashMap<&str, Kind>,
    errors: &mut Errors,
) {
    let base = ty.node.base_name();
    match kinds.get(base) {
        None => errors.push(ty.pos, format!("unknown type `{base}`")),
        Some(Kind::Leaf) => {}
        Some(k) if *k == want => {}
        Some(Kind::Abstract) if want == Kind::Output => {}
        Some(Kind::Abstract) => errors.push(
            ty.pos,
            format!("`{base}` is an interface or union type and cannot be an argument's type"),
        ),
        Some(Kind::Input) => errors.push(
            ty.pos,
            format!("`{base}` is an input type and cannot be a field's type"),
        ),
        Some(_) => errors.push(
            ty.pos,
            format!("`{base}` is an object type and cannot be an argument's type"),
        ),
    }
}

fn arg(a: &ArgConfig, kinds: &HashMap<&str, Kind>, errors: &mut Errors) -> ArgPlan {
    check_type(&a.ty, Kind::Input, kinds, errors);
    ArgPlan {
        name: a.name.node.clone(),
        ty: a.ty.node.clone(),
        default: a.default.clone(),
        description: a.description.clone(),
    }
}

fn field(ctx: &FieldCtx<'_>, f: &FieldConfig, errors: &mut Errors) -> Option<FieldPlan> {
    check_type(&f.ty, Kind::Output, ctx.kinds, errors);
    let args: Vec<ArgPlan> = f.args.iter().map(|a| arg(a, ctx.kinds, errors)).collect();
    let qualified = format!("{}.{}", ctx.type_name, f.name.node);

    let rest = match &f.rest {
        Some(r) => rest::plan(ctx, f, r, &args, errors),
        None => {
            if ctx.role != Role::Object {
                errors.push(
                    f.name.pos,
                    format!("field `{qualified}` has no resolver; add @rest(upstream: …, path: …)"),
                );
            }
            if let Some(c) = &f.cache {
                errors.push(
                    c.pos,
                    format!("@cache on `{qualified}` needs @rest on the same field"),
                );
            }
            None
        }
    };

    let mut invalidates = Vec::new();
    if let Some(inv) = &f.invalidates {
        if ctx.role != Role::Mutation {
            errors.push(
                inv.pos,
                format!("@invalidates is for mutation fields; `{qualified}` is not one"),
            );
        }
        for tag in &inv.node.tags {
            if let Some(t) = rest::template(tag, &args, ctx, false, errors) {
                invalidates.push(t);
            }
        }
    }
    if let Some(l) = &f.live {
        errors.push(
            l.pos,
            format!("@live is for Subscription fields; `{qualified}` is not one"),
        );
    }
    if let Some(st) = &f.stream {
        errors.push(
            st.pos,
            format!("@stream is for Subscription fields; `{qualified}` is not one"),
        );
    }
    let updates = stream::updates(ctx, f, &args, errors);
    let member = member(ctx, f, errors);
    if ctx.role == Role::Mutation {
        if let Some(c) = &f.cache {
            errors.push(
                c.pos,
                format!("@cache on mutation `{qualified}`: mutation results are never cached"),
            );
        }
    }
    Some(FieldPlan {
        name: f.name.node.clone(),
        ty: f.ty.node.clone(),
        args,
        description: f.description.clone(),
        deprecated: f.deprecated.clone(),
        rest,
        invalidates,
        live: None,
        updates,
        stream: None,
        member,
    })
}

/// A field of an interface: declared for queries and introspection, resolved by the
/// implementing types' fields, so it takes no directive but `@deprecated`.
fn interface_field(ctx: &FieldCtx<'_>, f: &FieldConfig, errors: &mut Errors) -> FieldPlan {
    check_type(&f.ty, Kind::Output, ctx.kinds, errors);
    let args: Vec<ArgPlan> = f.args.iter().map(|a| arg(a, ctx.kinds, errors)).collect();
    let given = [
        (f.rest.as_ref().map(|d| d.pos), "@rest"),
        (f.cache.as_ref().map(|d| d.pos), "@cache"),
        (f.invalidates.as_ref().map(|d| d.pos), "@invalidates"),
        (f.live.as_ref().map(|d| d.pos), "@live"),
        (f.updates.as_ref().map(|d| d.pos), "@updates"),
        (f.stream.as_ref().map(|d| d.pos), "@stream"),
        (f.map.as_ref().map(|d| d.pos), "@map"),
    ];
    for (pos, directive) in given {
        if let Some(pos) = pos {
            errors.push(
                pos,
                format!(
                    "{directive} on interface field `{}.{}` is not read: each implementing type's field says where its value comes from",
                    ctx.type_name, f.name.node
                ),
            );
        }
    }
    subscription_plan(f, args, None, None)
}

/// A Subscription field: `@live` mirrors the Query field of the same name, which must
/// take the same arguments, return the same type, and be cached (its cache entry is what
/// every subscriber shares).
fn live_field(
    ctx: &FieldCtx<'_>,
    query: &str,
    f: &FieldConfig,
    errors: &mut Errors,
) -> Option<FieldPlan> {
    let qualified = format!("{}.{}", ctx.type_name, f.name.node);
    check_type(&f.ty, Kind::Output, ctx.kinds, errors);
    let args: Vec<ArgPlan> = f.args.iter().map(|a| arg(a, ctx.kinds, errors)).collect();
    for (pos, name) in [
        (f.rest.as_ref().map(|d| d.pos), "@rest"),
        (f.cache.as_ref().map(|d| d.pos), "@cache"),
        (f.invalidates.as_ref().map(|d| d.pos), "@invalidates"),
    ] {
        if let Some(pos) = pos {
            errors.push(pos, format!("{name} is not for Subscription fields; `{qualified}` takes its data from `{query}.{}`", f.name.node));
        }
    }
    if let Some(u) = &f.updates {
        errors.push(
            u.pos,
            format!("@updates is for Query fields; `{qualified}` is not one"),
        );
    }
    if let (Some(_), Some(st)) = (&f.live, &f.stream) {
        errors.push(st.pos, format!("`{qualified}` has both @live and @stream; a Subscription field is one or the other"));
        return None;
    }
    if let Some(st) = &f.stream {
        stream::check_stream_type(&f.ty, errors);
        let source = stream::source(ctx, &st.node, &args, "stream", errors)?;
        return Some(subscription_plan(f, args, None, Some(Arc::new(source))));
    }
    let Some(live) = &f.live else {
        errors.push(
            f.name.pos,
            format!("Subscription field `{qualified}` needs @live (a live query of `{query}.{}`) or @stream (upstream socket events)", f.name.node),
        );
        return None;
    };
    let twin = ctx
        .object_fields(query)
        .and_then(|fields| fields.iter().find(|q| q.name.node == f.name.node));
    let Some(twin) = twin else {
        errors.push(
            live.pos,
            format!(
                "@live on `{qualified}` mirrors `{query}.{}`, which does not exist",
                f.name.node
            ),
        );
        return None;
    };
    let sig = |args: &[ArgConfig]| {
        args.iter()
            .map(|a| format!("{}: {}", a.name.node, a.ty.node))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if sig(&f.args) != sig(&twin.args) || f.ty.node != twin.ty.node {
        errors.push(
            live.pos,
            format!(
                "@live on `{qualified}` must have the signature of `{query}.{}`: ({}): {}",
                f.name.node,
                sig(&twin.args),
                twin.ty.node
            ),
        );
    }
    if twin.rest.is_none() || twin.cache.is_none() {
        errors.push(
            live.pos,
            format!("@live on `{qualified}` needs @rest and @cache on `{query}.{}`: its cache entry is what subscribers share", f.name.node),
        );
    }
    let poll = live
        .node
        .poll_ms
        .as_ref()
        .map(|p| Duration::from_millis(p.node));
    Some(subscription_plan(f, args, Some(LivePlan { poll }), None))
}

/// The plan of a field that resolves nothing itself: a Subscription field, or an
/// interface's field.
fn subscription_plan(
    f: &FieldConfig,
    args: Vec<ArgPlan>,
    live: Option<LivePlan>,
    stream: Option<Arc<SourcePlan>>,
) -> FieldPlan {
    FieldPlan {
        name: f.name.node.clone(),
        ty: f.ty.node.clone(),
        args,
        description: f.description.clone(),
        deprecated: f.deprecated.clone(),
        rest: None,
        invalidates: Vec::new(),
        live,
        updates: None,
        stream,
        member: vec![Arc::from(f.name.node.as_str())],
    }
}

#[cfg(test)]
mod tests;
