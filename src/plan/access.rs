//! `@authenticated` and `@requiresScopes` in the plan: each type's own requirements, and
//! each field's — its own, its named type's (an object, interface, enum or scalar that
//! requires something requires it of every field returning it), and those of the
//! interface fields it implements. Applied once every type is planned.

use super::{Access, TypePlan, TypePlanKind};
use crate::config::{AccessConfig, Config, TypeConfigKind};
use indexmap::IndexMap;
use std::sync::Arc;

fn of(c: &AccessConfig) -> Option<Access> {
    (!c.is_empty()).then(|| Access {
        authenticated: c.authenticated,
        scopes: c.scopes.clone(),
    })
}

/// Sets `access` on every type and field of `types` that `config` guards.
pub(super) fn apply(config: &Config, types: &mut IndexMap<String, TypePlan>) {
    let own: std::collections::HashMap<&str, Access> = config
        .types
        .iter()
        .filter_map(|t| of(&t.access).map(|a| (t.name.node.as_str(), a)))
        .collect();
    // Each field's own, by (type, field).
    let mut fields: std::collections::HashMap<(&str, &str), Access> = Default::default();
    for t in &config.types {
        let list = match &t.kind {
            TypeConfigKind::Object { fields, .. } | TypeConfigKind::Interface { fields, .. } => {
                fields
            }
            _ => continue,
        };
        for f in list {
            if let Some(a) = of(&f.access) {
                fields
                    .entry((t.name.node.as_str(), f.name.node.as_str()))
                    .or_default()
                    .merge(&a);
            }
        }
    }
    if own.is_empty() && fields.is_empty() {
        return;
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
            if access == Access::default() {
                continue;
            }
            Arc::make_mut(field).access = Some(Arc::new(access));
        }
    }
}
