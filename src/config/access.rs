//! `@authenticated` and `@requiresScopes(scopes: [[String!]!]!)`, on object types,
//! interfaces, enums, scalars and fields (Apollo Federation's directives, with its
//! semantics: of `scopes`, the outer list is OR, each inner list AND).

use super::Errors;
use async_graphql_parser::types::ConstDirective;
use async_graphql_parser::{Pos, Positioned};
use async_graphql_value::ConstValue;

/// What a type or field requires of its caller; the default requires nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// `@authenticated`: a verified token.
    pub authenticated: bool,
    /// Each `@requiresScopes`, all of which must hold: a list of scope sets, one of
    /// which the token must grant whole.
    pub scopes: Vec<Vec<Vec<String>>>,
    /// The first of these directives, for errors.
    pub pos: Option<Pos>,
}

impl AccessConfig {
    pub fn is_empty(&self) -> bool {
        !self.authenticated && self.scopes.is_empty()
    }

    /// Both requirements together (an `extend` adding its own).
    pub fn merge(&mut self, other: AccessConfig) {
        self.authenticated |= other.authenticated;
        self.scopes.extend(other.scopes);
        self.pos = self.pos.or(other.pos);
    }
}

/// Reads `d` into `access` if it is `@authenticated` or `@requiresScopes`: `true` when
/// it was one of them (an error, if any, is reported).
pub fn read(
    d: &Positioned<ConstDirective>,
    access: &mut AccessConfig,
    errors: &mut Errors,
) -> bool {
    let name = d.node.name.node.as_str();
    match name {
        "authenticated" => {
            if let Some((arg, _)) = d.node.arguments.first() {
                errors.push(
                    arg.pos,
                    format!("@authenticated takes no arguments; `{}` is one", arg.node),
                );
            }
            if access.authenticated {
                errors.push(d.pos, "@authenticated is given twice here");
            }
            access.authenticated = true;
        }
        "requiresScopes" => {
            if let Some(scopes) = scopes(d, errors) {
                access.scopes.push(scopes);
            }
        }
        _ => return false,
    }
    access.pos = access.pos.or(Some(d.pos));
    true
}

/// `scopes: [["a", "b"], ["c"]]`, checked: a non-empty list of non-empty lists of
/// scope names.
fn scopes(d: &Positioned<ConstDirective>, errors: &mut Errors) -> Option<Vec<Vec<String>>> {
    let usage = "@requiresScopes needs `scopes: [[String!]!]!`, like `scopes: [[\"orders:read\"], [\"admin\"]]` (outer list: any of; inner list: all of)";
    let mut found = None;
    for (arg, value) in &d.node.arguments {
        if arg.node.as_str() != "scopes" {
            errors.push(
                arg.pos,
                format!("@requiresScopes has no argument `{}`; {usage}", arg.node),
            );
            continue;
        }
        found = Some(value);
    }
    let Some(value) = found else {
        errors.push(d.pos, usage);
        return None;
    };
    let ConstValue::List(outer) = &value.node else {
        errors.push(value.pos, usage);
        return None;
    };
    if outer.is_empty() {
        errors.push(
            value.pos,
            format!("@requiresScopes with no scope set would refuse everyone; {usage}"),
        );
        return None;
    }
    let mut sets = Vec::new();
    for set in outer {
        // A lone string stands for a list of it (GraphQL's input coercion of lists).
        let items: Vec<&ConstValue> = match set {
            ConstValue::List(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut names = Vec::new();
        for item in items {
            match item {
                ConstValue::String(s)
                    if !s.trim().is_empty() && !s.contains(char::is_whitespace) =>
                {
                    names.push(s.clone())
                }
                _ => {
                    errors.push(value.pos, format!("@requiresScopes: each scope is a non-empty string without spaces; {usage}"));
                    return None;
                }
            }
        }
        if names.is_empty() {
            errors.push(
                value.pos,
                format!("@requiresScopes: an empty scope set would let everyone in; {usage}"),
            );
            return None;
        }
        sets.push(names);
    }
    Some(sets)
}
