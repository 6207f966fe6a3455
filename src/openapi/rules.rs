//! How OpenAPI's pieces read: media types, servers, header and id names, paths and
//! their cache tags, query pairs, default values as GraphQL literals.

use super::*;

/// A server's URL, its variables' defaults filled in.
pub(super) fn server_url(server: &Value) -> Option<String> {
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

pub(super) enum Media<'d> {
    /// A JSON media type, with its schema if it has one.
    Json(Option<&'d Value>),
    /// Only other media types (the first named).
    Other(String),
    None,
}

pub(super) fn is_json(media: &str) -> bool {
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

pub(super) fn json_media(content: Option<&Value>) -> Media<'_> {
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
pub(super) fn is_id_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("id")
        || name.ends_with("Id")
        || name.ends_with("ID")
        || name.to_ascii_lowercase().ends_with("_id")
        || name.to_ascii_lowercase().ends_with("-id")
}

pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `/repos/{owner}/{repo}/issues` → `repos owner repo issues`, for a name.
pub(super) fn path_words(path: &str) -> String {
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
pub(super) fn ancestors(path: &str) -> Vec<&str> {
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
pub(super) fn path_tag(path: &str, args: &HashMap<&str, String>) -> String {
    let parts: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            placeholders(segment, |name| match args.get(name) {
                Some(a) => format!("{{args.{a}}}"),
                None => name.to_string(),
            })
            .unwrap_or_else(|| segment.to_string())
        })
        .collect();
    if parts.is_empty() {
        "/".into()
    } else {
        parts.join(":")
    }
}

/// `text` with each `{name}` replaced by `f(name)`; `None` when a `{` is not closed.
pub(super) fn placeholders<'a>(
    text: &'a str,
    mut f: impl FnMut(&'a str) -> String,
) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}')?;
        out.push_str(&rest[..open]);
        out.push_str(&f(&rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// `{a: "x", b: "y"}`, or the list form when a name is not a GraphQL name.
pub(super) fn pairs(items: &[(String, String)]) -> String {
    if items.iter().all(|(n, _)| is_name(n)) {
        let list: Vec<String> = items
            .iter()
            .map(|(n, v)| format!("{n}: {}", quote(v)))
            .collect();
        format!("{{{}}}", list.join(", "))
    } else {
        name_value_list(items)
    }
}

/// `[{name: "X-Trace", value: "{args.t}"}]`: the form `headers:` (and `query:` for names
/// that are not GraphQL names) take.
pub(super) fn name_value_list(items: &[(String, String)]) -> String {
    let list: Vec<String> = items
        .iter()
        .map(|(n, v)| format!("{{name: {}, value: {}}}", quote(n), quote(v)))
        .collect();
    format!("[{}]", list.join(", "))
}

/// A JSON default as a GraphQL literal of `ty` (`[Status!]`, `Int`, an enum…), or
/// `None` when it does not fit.
pub(super) fn literal(d: &Value, ty: &str, defs: &BTreeMap<String, Def>) -> Option<String> {
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
