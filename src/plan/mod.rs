//! Stage ② — meaning. Input: a [`Config`]. Output: a [`Plan`], everything the runtime
//! needs, already checked: upstreams with parsed URLs, every template parsed and proven to
//! name real arguments and parent fields, every root field with a resolver. Every error
//! is collected with its `file:line:col`; a Plan exists only for a schema with none.
//!
//! Pure and synchronous, like [`crate::config`]: a string in, `Result<Plan, Vec<_>>` out.
//!
//! Files: this one ([`build`]: types, roots, the order of checks), [`model`] (what a
//! plan is made of), [`upstreams`] (`@upstream` and environment overrides), [`fields`]
//! (one field's plan), [`rest`] (`@rest`), [`stream`] (`@updates`, `@stream`),
//! [`abstracts`] (interfaces and unions), [`introspection`] (the schema's introspection,
//! computed once per plan).

mod abstracts;
mod access;
mod fields;
mod hooks;
pub mod introspection;
mod model;
mod rest;
mod stream;
mod upstreams;

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
use fields::*;
pub use hooks::{Scheme, WebhookPlan};
pub use model::{
    Access, ArgPlan, CachePlan, Denied, ErrorMapping, FieldPlan, LivePlan, Plan, TypePlan,
    TypePlanKind, UpstreamPlan,
};
pub use rest::{Batch, Body, RestPlan};
pub use stream::{Apply, RedisKind, SourcePlan, StreamPlan, UpdatesPlan};
pub(crate) use upstreams::header_name;
use upstreams::*;
pub use upstreams::{upstream_env_var, Overrides};

use crate::template::Template;

/// The errors of reading and of planning, in source order, as one report. A directive
/// that could not be read plans as if it were absent: a planning error that says a
/// directive is missing, on a line with a reading error, is that error's echo and is left
/// out.
fn merge(read: Vec<ConfigError>, planned: Vec<ConfigError>) -> Vec<ConfigError> {
    let lines: std::collections::HashSet<usize> = read.iter().map(|e| e.line).collect();
    let echo = |e: &ConfigError| {
        lines.contains(&e.line)
            && (e.message.contains("has no resolver") || e.message.contains(" needs @"))
    };
    let mut all = read;
    all.extend(planned.into_iter().filter(|e| !echo(e)));
    all.sort_by_key(|e| (e.line, e.column));
    all.dedup_by(|a, b| a.line == b.line && a.column == b.column && a.message == b.message);
    all
}

/// Parses and plans a schema split over several files (`sources`: each file's name and
/// text), as one: `extend type` in one file adds to a type of another, and every error
/// names its own file and line.
pub fn load_sources(
    sources: &[(String, String)],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Plan, Vec<ConfigError>> {
    let Some((first, _)) = sources.first() else {
        return Err(vec![ConfigError {
            file: "(schema)".into(),
            line: 1,
            column: 1,
            message: "no schema file given".into(),
        }]);
    };
    // One text, each file starting on a known line: the parser and the planner see one
    // schema; errors are moved back to the file and line they are in.
    let mut text = String::new();
    let mut starts: Vec<(usize, &str)> = Vec::new();
    let mut line = 1;
    for (name, source) in sources {
        starts.push((line, name));
        text.push_str(source);
        line += source.matches('\n').count();
        if !source.ends_with('\n') {
            text.push('\n');
            line += 1;
        }
    }
    load(first, &text, env).map_err(|errors| {
        errors
            .into_iter()
            .map(|mut e| {
                if let Some((start, name)) = starts.iter().rev().find(|(s, _)| *s <= e.line) {
                    e.file = name.to_string();
                    e.line = e.line - start + 1;
                }
                e
            })
            .collect()
    })
}

/// Parses and plans a schema in one step; what `livegate check` and start-up call.
pub fn load(
    file: &str,
    source: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Plan, Vec<ConfigError>> {
    let (config, read) = config::parse_partial(file, source)?;
    let overrides = Overrides::from_env(env, &config);
    let mut plan = match (build(&config, &overrides), read.is_empty()) {
        (Ok(plan), true) => plan,
        (Ok(_), false) => return Err(read),
        (Err(planned), _) => return Err(merge(read, planned)),
    };
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
    let webhooks = hooks::webhooks(config, overrides, &mut errors);

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
                    webhooks: &webhooks,
                    type_name: &name,
                    field: "",
                    role: Role::Interface,
                    fields,
                    relations: &relations,
                };
                if fields.is_empty() {
                    errors.push(t.name.pos, format!("interface `{name}` has no fields"));
                }
                let fields = fields
                    .iter()
                    .map(|f| {
                        let ctx = FieldCtx {
                            field: &f.name.node,
                            ..ctx
                        };
                        Arc::new(interface_field(&ctx, f, &mut errors))
                    })
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
                        webhooks: &webhooks,
                        type_name: &name,
                        field: &f.name.node,
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
            TypeConfigKind::Enum { values } => {
                let mut upstream: Vec<String> = Vec::new();
                for v in values {
                    let said = v.map.as_ref().map_or(&v.name.node, |m| &m.node);
                    if upstream.contains(said) {
                        let pos = v.map.as_ref().map_or(v.name.pos, |m| m.pos);
                        errors.push(
                            pos,
                            format!(
                                "enum `{name}`: two values stand for the upstream's {said:?}; \
                                 each @map(from:) must be distinct"
                            ),
                        );
                    }
                    upstream.push(said.clone());
                }
                TypePlanKind::Enum {
                    values: values.iter().map(|v| v.name.node.clone()).collect(),
                    upstream,
                }
            }
            TypeConfigKind::Scalar => TypePlanKind::Scalar,
        };
        types.insert(
            name.clone(),
            TypePlan {
                name,
                description: t.description.clone(),
                kind,
                access: None,
            },
        );
    }

    let roots = [
        Some(query.as_str()),
        mutation.as_deref(),
        subscription.as_deref(),
    ];
    access::apply(config, &mut types, &roots, &mut errors);
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
            webhooks,
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

#[cfg(test)]
mod tests;
