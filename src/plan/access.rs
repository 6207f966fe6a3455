//! `@authenticated` and `@requiresScopes` in the plan: each type's own requirements, and
//! each field's — its own, its named type's (an object, interface, enum or scalar that
//! requires something requires it of every field returning it), those of the interface
//! fields it implements, and on a root type (`Query`, `Mutation`, `Subscription`) the
//! type's own. Applied once every type is planned.

use super::{Access, FieldPlan, TypePlan, TypePlanKind};
use crate::config::{AccessConfig, Config, Errors, TypeConfigKind};
use indexmap::IndexMap;
use std::sync::Arc;

fn of(c: &AccessConfig) -> Option<Access> {
    (!c.is_empty()).then(|| Access {
        authenticated: c.authenticated,
        scopes: c.scopes.clone(),
    })
}

/// Whether any template of `f` reads the caller's claims: such a field requires a
/// verified caller (an anonymous one has no claims to fill it with).
fn reads_claims(f: &FieldPlan) -> bool {
    let when = |s: &super::SourcePlan| s.when.iter().any(|(_, t)| t.reads_claims());
    f.rest.as_ref().is_some_and(|r| {
        r.reads_claims()
            || r.cache
                .as_ref()
                .is_some_and(|c| c.tags.iter().any(|t| t.reads_claims()))
    }) || f.invalidates.iter().any(|t| t.reads_claims())
        || f.updates.as_ref().is_some_and(|u| when(&u.source))
        || f.stream.as_ref().is_some_and(|s| when(s))
}

/// Sets `access` on every type and field of `types` that `config` guards (or whose
/// templates read claims).
pub(super) fn apply(
    config: &Config,
    types: &mut IndexMap<String, TypePlan>,
    roots: &[Option<&str>],
    errors: &mut Errors,
) {
    let own: std::collections::HashMap<&str, Access> = config
        .types
        .iter()
        .filter_map(|t| of(&t.access).map(|a| (t.name.node.as_str(), a)))
        .collect();
    // Each field's own, by (type, field).
    let mut fields: std::collections::HashMap<(&str, &str), Access> = Default::default();
    let mut updates_at: std::collections::HashMap<(&str, &str), async_graphql_parser::Pos> =
        Default::default();
    for t in &config.types {
        let list = match &t.kind {
            TypeConfigKind::Object { fields, .. } | TypeConfigKind::Interface { fields, .. } => {
                fields
            }
            _ => continue,
        };
        for f in list {
            if let Some(u) = &f.updates {
                updates_at.insert((t.name.node.as_str(), f.name.node.as_str()), u.pos);
            }
            if let Some(a) = of(&f.access) {
                fields
                    .entry((t.name.node.as_str(), f.name.node.as_str()))
                    .or_default()
                    .merge(&a);
            }
        }
    }
    for (name, plan) in types.iter_mut() {
        plan.access = own.get(name.as_str()).cloned().map(Arc::new);
        let (list, interfaces): (&mut Vec<_>, &[String]) = match &mut plan.kind {
            TypePlanKind::Object { fields, implements } => (fields, implements),
            TypePlanKind::Interface { fields, .. } => (fields, &[]),
            _ => continue,
        };
        for field in list.iter_mut() {
            let mut access = Access::default();
            if let Some(a) = fields.get(&(name.as_str(), field.name.as_str())) {
                access.merge(a);
            }
            for i in interfaces {
                if let Some(a) = fields.get(&(i.as_str(), field.name.as_str())) {
                    access.merge(a);
                }
            }
            if let Some(a) = own.get(field.ty.base_name()) {
                access.merge(a);
            }
            // A root type's requirement is every operation's on it: each of its fields.
            if roots.contains(&Some(name.as_str())) {
                if let Some(a) = own.get(name.as_str()) {
                    access.merge(a);
                }
            }
            access.authenticated |= reads_claims(field);
            // An `@updates(when:)` reading claims patches one caller's entry only if the
            // entry is the caller's own: its request must read claims too.
            let when_claims = field
                .updates
                .as_ref()
                .is_some_and(|u| u.source.when.iter().any(|(_, t)| t.reads_claims()));
            let rest_claims = field.rest.as_ref().is_some_and(|r| r.reads_claims());
            if when_claims && !rest_claims {
                if let Some(pos) = updates_at.get(&(name.as_str(), field.name.as_str())) {
                    errors.push(*pos, format!("@updates(when:) on `{name}.{}` reads {{claims.…}}, but its @rest request does not: every caller would share one entry, patched for one of them; send the claim in the request too (its path, query or headers)", field.name));
                }
            }
            if access == Access::default() {
                continue;
            }
            Arc::make_mut(field).access = Some(Arc::new(access));
        }
    }
}
