//! Interfaces and unions: which object types each may be, how an upstream object tells
//! which one it is (`@discriminate`), and the checks that make that sound — the
//! discriminator covers every possible type and names no other, and every implementing
//! type declares the interface's fields with compatible types and arguments.

use super::{Kind, TypeRef};
use crate::config::{Config, DiscriminateDirective, Errors, FieldConfig, TypeConfigKind};
use crate::template::scalar_text;
use async_graphql_parser::Positioned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The object types an interface or union may be, and how to tell them apart.
#[derive(Debug, Clone)]
pub struct Possible {
    /// The abstract type's name (for messages).
    pub name: String,
    /// Object types, in declaration order.
    pub types: Vec<String>,
    /// The member path of an upstream object that names its type.
    pub field: Vec<Arc<str>>,
    /// Upstream value → type name; empty when the values are the type names themselves.
    pub map: HashMap<String, String>,
}

impl Possible {
    /// The concrete type of the upstream object `value`, or why there is none (a
    /// sentence that follows the object's JSON path).
    pub fn type_of(&self, value: &Value) -> Result<&str, String> {
        let member = self.field.join(".");
        let found = self
            .field
            .iter()
            .try_fold(value, |v, m| v.get(&**m))
            .filter(|v| !v.is_null());
        let Some(found) = found else {
            return Err(format!(
                "has no `{member}`, which tells which `{}` it is",
                self.name
            ));
        };
        let text = scalar_text(found);
        let named = text.as_deref().and_then(|t| {
            if self.map.is_empty() {
                self.types
                    .iter()
                    .find(|n| n.as_str() == t)
                    .map(String::as_str)
            } else {
                self.map.get(t).map(String::as_str)
            }
        });
        named.ok_or_else(|| {
            let mut known: Vec<&str> = if self.map.is_empty() {
                self.types.iter().map(String::as_str).collect()
            } else {
                self.map.keys().map(String::as_str).collect()
            };
            known.sort_unstable();
            let shown = match found {
                Value::String(s) if s.len() <= 40 => format!("{s:?}"),
                Value::String(_) => "a long string".into(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(_) => "a list".into(),
                _ => "an object".into(),
            };
            format!(
                "has `{member}` {shown}, which names no type of `{}` (known: {})",
                self.name,
                known.join(", ")
            )
        })
    }
}

/// Object type → the interfaces it says it implements; union → its members.
pub(super) struct Relations<'a> {
    implementers: HashMap<&'a str, Vec<&'a str>>,
    members: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Relations<'a> {
    pub fn new(config: &'a Config) -> Self {
        let mut implementers: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut members: HashMap<&str, Vec<&str>> = HashMap::new();
        for t in &config.types {
            match &t.kind {
                TypeConfigKind::Object { implements, .. } => {
                    for i in implements {
                        let list = implementers.entry(i.node.as_str()).or_default();
                        if !list.contains(&t.name.node.as_str()) {
                            list.push(t.name.node.as_str());
                        }
                    }
                }
                TypeConfigKind::Union { members: m, .. } => {
                    members.insert(
                        t.name.node.as_str(),
                        m.iter().map(|m| m.node.as_str()).collect(),
                    );
                }
                _ => {}
            }
        }
        Relations {
            implementers,
            members,
        }
    }

    /// The object types a value of the abstract type `name` may be.
    pub fn possible(&self, name: &str) -> &[&'a str] {
        self.members
            .get(name)
            .or_else(|| self.implementers.get(name))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether a value of type `sub` is always a valid value of type `sup` (the spec's
    /// IsValidImplementationFieldType: the same type, or a more specific one).
    pub fn covariant(&self, sub: &TypeRef, sup: &TypeRef) -> bool {
        if sup.non_null() && !sub.non_null() {
            return false;
        }
        match (sub, sup) {
            (TypeRef::List { item: a, .. }, TypeRef::List { item: b, .. }) => self.covariant(a, b),
            (TypeRef::Named { name: a, .. }, TypeRef::Named { name: b, .. }) => {
                a == b || self.possible(b).contains(&a.as_str())
            }
            _ => false,
        }
    }
}

/// An interface's or union's [`Possible`], checking its `@discriminate` and (for a
/// union) its members.
pub(super) fn possible(
    kinds: &HashMap<&str, Kind>,
    relations: &Relations<'_>,
    name: &Positioned<String>,
    union_members: Option<&[Positioned<String>]>,
    discriminate: Option<&Positioned<DiscriminateDirective>>,
    errors: &mut Errors,
) -> Possible {
    let what = if union_members.is_some() {
        "union"
    } else {
        "interface"
    };
    let n = &name.node;
    if let Some(members) = union_members {
        let mut seen = Vec::new();
        for m in members {
            match kinds.get(m.node.as_str()) {
                None => errors.push(m.pos, format!("union `{n}`: unknown type `{}`", m.node)),
                Some(Kind::Output) => {}
                Some(_) => errors.push(
                    m.pos,
                    format!(
                        "union `{n}`: `{}` is not an object type; a union's members are object types",
                        m.node
                    ),
                ),
            }
            if seen.contains(&m.node.as_str()) {
                errors.push(m.pos, format!("union `{n}` lists `{}` twice", m.node));
            }
            seen.push(m.node.as_str());
        }
    }
    let types: Vec<String> = relations
        .possible(n)
        .iter()
        .filter(|t| kinds.get(**t) == Some(&Kind::Output))
        .map(|t| t.to_string())
        .collect();
    if union_members.is_none() && types.is_empty() {
        errors.push(
            name.pos,
            format!(
                "interface `{n}` has no object type that implements it, so no value can have it"
            ),
        );
    }
    let mut out = Possible {
        name: n.clone(),
        types,
        field: Vec::new(),
        map: HashMap::new(),
    };
    let Some(d) = discriminate else {
        errors.push(
            name.pos,
            format!("{what} `{n}` needs @discriminate(field: …): the member of its upstream objects that names their type, like @discriminate(field: \"type\")"),
        );
        return out;
    };
    let field = &d.node.field;
    if field.node.split('.').any(str::is_empty) {
        errors.push(
            field.pos,
            format!(
                "@discriminate(field: {:?}) must be a member name or a dotted path like \"meta.kind\"",
                field.node
            ),
        );
    } else {
        out.field = field.node.split('.').map(Arc::from).collect();
    }
    let known = || {
        if out.types.is_empty() {
            "none".to_string()
        } else {
            out.types.join(", ")
        }
    };
    for (value, ty) in &d.node.map {
        if !out.types.contains(&ty.node) {
            let role = if union_members.is_some() {
                format!("a member of `{n}`; members: {}", known())
            } else {
                format!(
                    "a type that implements `{n}`; implementing types: {}",
                    known()
                )
            };
            errors.push(
                ty.pos,
                format!("@discriminate(map:) on `{n}`: `{}` is not {role}", ty.node),
            );
        }
        if out
            .map
            .insert(value.node.clone(), ty.node.clone())
            .is_some()
        {
            errors.push(
                value.pos,
                format!(
                    "@discriminate(map:) on `{n}` gives the value {:?} twice",
                    value.node
                ),
            );
        }
    }
    if !d.node.map.is_empty() {
        for t in &out.types {
            if !out.map.values().any(|v| v == t) {
                errors.push(
                    d.pos,
                    format!("@discriminate(map:) on `{n}` gives no value for `{t}`; every possible type needs one"),
                );
            }
        }
    }
    out
}

/// Checks `implements` on the object type `name`: each is an interface, named once, and
/// its fields are declared here with compatible types and arguments.
pub(super) fn check_implements(
    config: &Config,
    kinds: &HashMap<&str, Kind>,
    relations: &Relations<'_>,
    name: &str,
    fields: &[FieldConfig],
    implements: &[Positioned<String>],
    errors: &mut Errors,
) {
    let mut seen = Vec::new();
    for i in implements {
        if seen.contains(&i.node.as_str()) {
            errors.push(i.pos, format!("`{name}` implements `{}` twice", i.node));
            continue;
        }
        seen.push(i.node.as_str());
        let interface = config.types.iter().find(|t| t.name.node == i.node);
        let wanted = match interface.map(|t| &t.kind) {
            Some(TypeConfigKind::Interface { fields, .. }) => fields,
            // Another kind of type, or a built-in scalar.
            _ if kinds.contains_key(i.node.as_str()) => {
                errors.push(
                    i.pos,
                    format!(
                        "`{name}` implements `{}`, which is not an interface",
                        i.node
                    ),
                );
                continue;
            }
            _ => {
                errors.push(
                    i.pos,
                    format!("`{name}` implements `{}`, an unknown type", i.node),
                );
                continue;
            }
        };
        for want in wanted {
            let qualified = format!("{}.{}", i.node, want.name.node);
            let Some(have) = fields.iter().find(|f| f.name.node == want.name.node) else {
                errors.push(
                    i.pos,
                    format!(
                        "`{name}` implements `{}` but has no field `{}: {}`",
                        i.node, want.name.node, want.ty.node
                    ),
                );
                continue;
            };
            let here = format!("{name}.{}", have.name.node);
            if !relations.covariant(&have.ty.node, &want.ty.node) {
                errors.push(
                    have.ty.pos,
                    format!(
                        "`{here}` is `{}`, but `{qualified}` is `{}`; an implementation's field has the interface's type or a more specific one",
                        have.ty.node, want.ty.node
                    ),
                );
            }
            for a in &want.args {
                match have.args.iter().find(|b| b.name.node == a.name.node) {
                    None => errors.push(
                        have.name.pos,
                        format!(
                            "`{here}` lacks the argument `{}: {}` of `{qualified}`",
                            a.name.node, a.ty.node
                        ),
                    ),
                    Some(b) if b.ty.node != a.ty.node => errors.push(
                        b.ty.pos,
                        format!(
                            "argument `{}` of `{here}` is `{}`, but `{qualified}` declares `{}`",
                            a.name.node, b.ty.node, a.ty.node
                        ),
                    ),
                    Some(_) => {}
                }
            }
            for b in &have.args {
                if b.ty.node.non_null()
                    && b.default.is_none()
                    && !want.args.iter().any(|a| a.name.node == b.name.node)
                {
                    errors.push(
                        b.ty.pos,
                        format!(
                            "argument `{}: {}` of `{here}` is required, but `{qualified}` does not declare it; make it optional",
                            b.name.node, b.ty.node
                        ),
                    );
                }
            }
        }
    }
}
