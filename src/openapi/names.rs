//! GraphQL names from what an API calls things: `created_at` → `createdAt`,
//! `repos/list-for-org` → `reposListForOrg`, `pet-item` → `PetItem`, `in_transit` →
//! `IN_TRANSIT`. Every rule is predictable from the input alone, and a name taken twice
//! gets a number (`Pet2`).

use std::collections::HashSet;

/// The words of `text`: runs of ASCII letters and digits. `fooBar` stays one word (its
/// case is kept); separators (`_`, `-`, `/`, spaces, anything else) split.
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

fn upper_first(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

fn lower_first(w: &str) -> String {
    // An all-capitals word (`URL`, `ID`) is lowered whole: `url`, not `uRL`.
    if w.chars().all(|c| !c.is_ascii_lowercase()) {
        return w.to_ascii_lowercase();
    }
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// A name cannot start with a digit: `_` goes before it.
fn lead(name: String, empty: &str) -> String {
    match name.chars().next() {
        None => empty.to_string(),
        Some(c) if c.is_ascii_digit() => format!("_{name}"),
        _ => name,
    }
}

/// `created_at` → `createdAt`, `X-Rate-Limit` → `xRateLimit`, `+1` → `_1`.
pub fn camel(text: &str) -> String {
    let ws = words(text);
    let mut out = String::new();
    for (i, w) in ws.iter().enumerate() {
        if i == 0 {
            out.push_str(&lower_first(w));
        } else {
            out.push_str(&upper_first(w));
        }
    }
    lead(out, "field")
}

/// `pet-item` → `PetItem`, `v1.Order` → `V1Order`.
pub fn pascal(text: &str) -> String {
    let out: String = words(text).iter().map(|w| upper_first(w)).collect();
    lead(out, "Type")
}

/// `in-transit` → `IN_TRANSIT`, `inTransit` → `IN_TRANSIT`, `` → `EMPTY`.
pub fn constant(text: &str) -> String {
    let mut out = String::new();
    for w in words(text) {
        if !out.is_empty() {
            out.push('_');
        }
        let mut prev_lower = false;
        for c in w.chars() {
            if c.is_ascii_uppercase() && prev_lower {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase();
            out.push(c.to_ascii_uppercase());
        }
    }
    lead(out, "EMPTY")
}

/// Whether `text` is a GraphQL name (`/[_A-Za-z][_0-9A-Za-z]*/`).
pub fn is_name(text: &str) -> bool {
    let mut c = text.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Names taken in one scope (a schema's types, an object's fields, an enum's values).
#[derive(Default)]
pub struct Taken {
    names: HashSet<String>,
}

impl Taken {
    pub fn with(reserved: &[&str]) -> Taken {
        Taken {
            names: reserved.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `wanted`, or `wanted2`, `wanted3`… if taken (or starting with `__`, which GraphQL
    /// keeps for itself); taken from now on.
    pub fn take(&mut self, wanted: &str) -> String {
        let base = match wanted.strip_prefix("__") {
            Some(rest) => format!("_{rest}"),
            None => wanted.to_string(),
        };
        let mut name = base.clone();
        let mut n = 2;
        while self.names.contains(&name) {
            name = format!("{base}{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_rules() {
        assert_eq!(camel("created_at"), "createdAt");
        assert_eq!(camel("repos/list-for-org"), "reposListForOrg");
        assert_eq!(camel("X-GitHub-Api-Version"), "xGitHubApiVersion");
        assert_eq!(camel("URL"), "url");
        assert_eq!(camel("htmlUrl"), "htmlUrl");
        assert_eq!(camel("+1"), "_1");
        assert_eq!(camel("---"), "field");
        assert_eq!(pascal("pet-item"), "PetItem");
        assert_eq!(pascal("v1.Order"), "V1Order");
        assert_eq!(pascal("2fa"), "_2fa");
        assert_eq!(constant("in_transit"), "IN_TRANSIT");
        assert_eq!(constant("inTransit"), "IN_TRANSIT");
        assert_eq!(constant("+1"), "_1");
        assert_eq!(constant(""), "EMPTY");
        assert_eq!(constant("2XX"), "_2XX");
        let mut t = Taken::with(&["Query"]);
        assert_eq!(t.take("Query"), "Query2");
        assert_eq!(t.take("Pet"), "Pet");
        assert_eq!(t.take("Pet"), "Pet2");
        assert_eq!(t.take("__x"), "_x");
        assert!(is_name("_a1") && !is_name("1a") && !is_name("a-b") && !is_name(""));
    }
}
