//! Templates: the `{args.x}` / `{parent.a.b}` / `{args}` / `{claims.sub}` strings of the
//! directives.
//!
//! Parsed once by [`crate::plan`] (which checks every variable names something real) and
//! rendered per request by [`crate::resolve`]. Rendering never fails on odd values: a
//! missing value renders as JSON `null` (or an empty string inside text), and the caller
//! decides whether that is acceptable (a path segment, for one, refuses it).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Where a template variable starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Args,
    Parent,
    /// The verified caller's token claims (`{claims.sub}`, `{claims.org.id}`).
    Claims,
    /// A webhook delivery's JSON body (`{event.data.object.id}`): `@webhook(invalidates:)`.
    Event,
}

/// `{args.channel}` is `Var { root: Args, path: ["channel"] }`; `{args}` has an empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub root: Root,
    pub path: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The values a template can read.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub args: &'a Value,
    pub parent: Option<&'a Value>,
    /// The caller's claims, when a token was verified.
    pub claims: Option<&'a Value>,
    /// A webhook delivery's body.
    pub event: Option<&'a Value>,
}

/// Characters kept as they are in a path segment (RFC 3986 unreserved); everything else,
/// `/` and `%` included, is percent-encoded so a value can never leave its segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Template {
    /// Parses `source`; the error says what is wrong in words.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed `{{` in template {source:?}"));
            };
            let inner = after[..end].trim();
            let mut segs = inner.split('.');
            let root = match segs.next() {
                Some("args") => Root::Args,
                Some("parent") => Root::Parent,
                Some("claims") => Root::Claims,
                Some("event") => Root::Event,
                _ => {
                    return Err(format!(
                        "`{{{inner}}}` in template {source:?}: a variable starts with `args`, `parent`, `claims` or `event`"
                    ))
                }
            };
            let path: Vec<String> = segs.map(str::to_string).collect();
            if path.iter().any(|s| s.is_empty()) {
                return Err(format!(
                    "`{{{inner}}}` in template {source:?} has an empty name"
                ));
            }
            if root == Root::Parent && path.is_empty() {
                return Err(format!(
                    "`{{parent}}` in template {source:?}: name a field, like {{parent.id}}"
                ));
            }
            if root == Root::Claims && path.is_empty() {
                return Err(format!(
                    "`{{claims}}` in template {source:?}: name a claim, like {{claims.sub}}"
                ));
            }
            parts.push(Part::Var(Var { root, path }));
            rest = &after[end + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray `}}` in template {source:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// Replaces the path of each `{parent.…}` variable with `f(path)`: GraphQL field names
    /// become the members they read (`@map`).
    pub fn map_parent_paths(&mut self, mut f: impl FnMut(&[String]) -> Vec<String>) {
        for part in &mut self.parts {
            if let Part::Var(v) = part {
                if v.root == Root::Parent {
                    v.path = f(&v.path);
                }
            }
        }
    }

    /// Rewrites every `{args.…}` path with `f`: from input field names to the members the
    /// upstream is sent (`@map(from:)` on input fields).
    pub fn map_arg_paths(&mut self, mut f: impl FnMut(&[String]) -> Vec<String>) {
        for part in &mut self.parts {
            if let Part::Var(v) = part {
                if v.root == Root::Args {
                    v.path = f(&v.path);
                }
            }
        }
    }

    /// The template is exactly one variable: it renders to that value, keeping its type.
    pub fn single_var(&self) -> Option<&Var> {
        match self.parts.as_slice() {
            [Part::Var(v)] => Some(v),
            _ => None,
        }
    }

    /// Whether it reads the caller's claims.
    pub fn reads_claims(&self) -> bool {
        self.vars().any(|v| v.root == Root::Claims)
    }

    pub fn is_constant(&self) -> bool {
        self.vars().next().is_none()
    }

    /// Renders to JSON: a lone variable keeps its value's type, anything else is a string.
    pub fn render_json(&self, vars: Vars<'_>) -> Value {
        match self.single_var() {
            Some(v) => lookup(v, vars).cloned().unwrap_or(Value::Null),
            None => Value::String(self.render_string(vars)),
        }
    }

    /// Renders to text; `null` and missing values render as nothing.
    pub fn render_string(&self, vars: Vars<'_>) -> String {
        self.render_with(vars, |s, out| out.push_str(s))
            .unwrap_or_default()
    }

    /// Renders to text, each value's text shown to `check` first; `None` when a value is
    /// missing or null.
    pub fn render_with_values(
        &self,
        vars: Vars<'_>,
        mut check: impl FnMut(&str),
    ) -> Option<String> {
        self.render_with(vars, |s, out| {
            check(s);
            out.push_str(s)
        })
    }

    /// Renders to text, or `None` when a value is missing or null.
    pub fn render_complete(&self, vars: Vars<'_>) -> Option<String> {
        self.render_with(vars, |s, out| out.push_str(s))
    }

    /// Renders for a URL path: each value is percent-encoded as (part of) one segment.
    /// `None` when a value is missing or null, so the caller can refuse the request.
    pub fn render_path(&self, vars: Vars<'_>) -> Option<String> {
        self.render_with(vars, |s, out| out.extend(utf8_percent_encode(s, SEGMENT)))
    }

    fn render_with(
        &self,
        vars: Vars<'_>,
        mut put: impl FnMut(&str, &mut String),
    ) -> Option<String> {
        let mut out = String::new();
        let mut complete = true;
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => match lookup(v, vars).and_then(scalar_text) {
                    Some(text) => put(&text, &mut out),
                    None => complete = false,
                },
            }
        }
        complete.then_some(out)
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                Part::Lit(s) => f.write_str(s)?,
                Part::Var(v) => {
                    let root = match v.root {
                        Root::Args => "args",
                        Root::Parent => "parent",
                        Root::Claims => "claims",
                        Root::Event => "event",
                    };
                    write!(f, "{{{root}")?;
                    for seg in &v.path {
                        write!(f, ".{seg}")?;
                    }
                    f.write_str("}")?;
                }
            }
        }
        Ok(())
    }
}

/// The text of a scalar value; objects and lists render as compact JSON.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

pub fn lookup<'a>(var: &Var, vars: Vars<'a>) -> Option<&'a Value> {
    let mut v = match var.root {
        Root::Args => vars.args,
        Root::Parent => vars.parent?,
        Root::Claims => vars.claims?,
        Root::Event => vars.event?,
    };
    for seg in &var.path {
        v = v.get(seg.as_str())?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_values_cannot_leave_their_segment() {
        let t = Template::parse("/users/{args.id}").expect("parses");
        let args = json!({"id": "../admin/a b"});
        let out = t.render_path(Vars {
            args: &args,
            parent: None,
            claims: None,
            event: None,
        });
        assert_eq!(out.as_deref(), Some("/users/..%2Fadmin%2Fa%20b"));
    }

    #[test]
    fn lone_variable_keeps_its_type() {
        let t = Template::parse("{args}").expect("parses");
        let args = json!({"n": 1});
        assert_eq!(
            t.render_json(Vars {
                args: &args,
                parent: None,
                claims: None,
                event: None,
            }),
            args
        );
        let t = Template::parse("{parent.user.id}").expect("parses");
        let parent = json!({"user": {"id": 7}});
        assert_eq!(
            t.render_json(Vars {
                args: &args,
                parent: Some(&parent),
                claims: None,
                event: None,
            }),
            json!(7)
        );
        assert_eq!(
            t.render_string(Vars {
                args: &args,
                parent: Some(&parent),
                claims: None,
                event: None,
            }),
            "7"
        );
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(Template::parse("/a/{args.x")
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("/a/{foo}")
            .unwrap_err()
            .contains("starts with `args`, `parent`, `claims` or `event`"));
        assert!(Template::parse("/a/{args.}")
            .unwrap_err()
            .contains("empty name"));
    }
}
