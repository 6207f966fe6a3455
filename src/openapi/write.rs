//! Writing the schema: root types, type definitions, descriptions and comments, and
//! which types are written at all (those a root field reaches).

use super::*;

/// The error mapping most operations share, written on `@upstream` (and left out of their
/// `@rest`); `None` when no operation has one. Ties go to the mapping first in text order.
pub(super) fn shared_error_mapping<'a>(
    fields: impl Iterator<Item = &'a RootField>,
) -> Option<String> {
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for m in fields.filter_map(|f| f.errors.as_ref()) {
        *counts.entry(m).or_default() += 1;
    }
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(m, _)| (*m).clone())
}

/// One root type; given `live` (the `@live` directive), the `Subscription` with the
/// `@live` twin of each live `Query` field.
pub(super) fn write_root(
    w: &mut Writer,
    type_name: &str,
    fields: &[RootField],
    lines: &mut Vec<(std::ops::RangeInclusive<usize>, String)>,
    shared_errors: Option<&str>,
    live: Option<&str>,
) {
    w.line(&format!("type {type_name} {{"));
    for f in fields.iter().filter(|f| live.is_none() || f.live) {
        let start = w.line + 1;
        if let Some(d) = &f.description {
            w.description(d, "  ");
        }
        for c in &f.comments {
            w.line(&format!("  # {}", one_line(c)));
        }
        let args = if f.args.is_empty() {
            String::new()
        } else {
            format!("({})", f.args.join(", "))
        };
        w.line(&format!("  {}{args}: {}", f.name, f.ty));
        if let Some(live) = live {
            w.line(&format!("    {live}"));
        } else {
            let mut rest = f.rest.clone();
            if let Some(m) = f.errors.as_deref().filter(|m| Some(*m) != shared_errors) {
                let _ = write!(rest, ", errors: {m}");
            }
            rest.push(')');
            w.line(&format!("    {rest}"));
            for d in &f.directives {
                w.line(&format!("    {d}"));
            }
        }
        lines.push((start..=w.line, f.op.clone()));
    }
    w.line("}");
    w.blank();
}

pub(super) fn write_def(w: &mut Writer, name: &str, def: &Def) {
    let (description, comment) = def.about();
    if let Some(d) = description {
        w.description(d, "");
    }
    if let Some(c) = comment {
        w.line(&format!("# {name}: {}", one_line(c)));
    }
    match def {
        Def::Scalar { .. } => w.line(&format!("scalar {name}")),
        Def::Object {
            fields, implements, ..
        } => {
            let implements = if implements.is_empty() {
                String::new()
            } else {
                format!(" implements {}", implements.join(" & "))
            };
            w.line(&format!("type {name}{implements} {{"));
            write_fields(w, fields);
            w.line("}");
        }
        Def::Input { fields, .. } => {
            w.line(&format!("input {name} {{"));
            write_fields(w, fields);
            w.line("}");
        }
        Def::Interface {
            fields, field, map, ..
        } => {
            w.line(&format!(
                "interface {name} @discriminate(field: {}, map: [{}]) {{",
                quote(field),
                discriminate_map(map)
            ));
            write_fields(w, fields);
            w.line("}");
        }
        Def::Enum { values, .. } => {
            w.line(&format!("enum {name} {{"));
            for (value, from) in values {
                if value == from {
                    w.line(&format!("  {value}"));
                } else {
                    w.line(&format!("  {value} @map(from: {})", quote(from)));
                }
            }
            w.line("}");
        }
        Def::Union {
            members,
            field,
            map,
            ..
        } => w.line(&format!(
            "union {name} @discriminate(field: {}, map: [{}]) = {}",
            quote(field),
            discriminate_map(map),
            members.join(" | ")
        )),
    }
    w.blank();
}

/// The named types of a type reference: `[Pet!]!` → `Pet`; of an argument list
/// (`id: ID!, status: Status = SOLD`) → `ID`, `Status` (and the default's words, which
/// are never type names of their own here).
pub(super) fn type_names(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// The types the root fields use, directly or through other types (an interface's
/// implementing types included): only these are written, so a type made for an
/// operation later skipped, or replaced by a twin, leaves nothing behind.
pub(super) fn reachable<'a>(
    defs: &'a BTreeMap<String, Def>,
    roots: impl Iterator<Item = &'a RootField>,
) -> std::collections::HashSet<&'a str> {
    let mut used: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut queue: Vec<&str> = Vec::new();
    let visit =
        |name: &'a str, used: &mut std::collections::HashSet<&'a str>, queue: &mut Vec<&'a str>| {
            if let Some((key, _)) = defs.get_key_value(name) {
                if used.insert(key.as_str()) {
                    queue.push(key.as_str());
                }
            }
        };
    for f in roots {
        for name in type_names(&f.ty).chain(f.args.iter().flat_map(|a| type_names(a))) {
            visit(name, &mut used, &mut queue);
        }
    }
    while let Some(name) = queue.pop() {
        match &defs[name] {
            Def::Object {
                fields, implements, ..
            } => {
                for n in fields
                    .iter()
                    .flat_map(|f| type_names(&f.ty))
                    .chain(implements.iter().map(String::as_str))
                {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Input { fields, .. } => {
                for n in fields.iter().flat_map(|f| type_names(&f.ty)) {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Interface { fields, map, .. } => {
                for n in fields
                    .iter()
                    .flat_map(|f| type_names(&f.ty))
                    .chain(map.iter().map(|(_, t)| t.as_str()))
                {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Union { members, .. } => {
                for n in members {
                    visit(n, &mut used, &mut queue);
                }
            }
            Def::Enum { .. } | Def::Scalar { .. } => {}
        }
    }
    used
}

/// `@discriminate(map:)`'s list form (values need not be GraphQL names).
pub(super) fn discriminate_map(map: &[(String, String)]) -> String {
    let entries: Vec<String> = map
        .iter()
        .map(|(value, ty)| format!("{{value: {}, type: {}}}", quote(value), quote(ty)))
        .collect();
    entries.join(", ")
}

pub(super) fn write_fields(w: &mut Writer, fields: &[Field]) {
    for f in fields {
        if f.name.is_empty() {
            if let Some(c) = &f.comment {
                w.line(&format!("  # {}", one_line(c)));
            }
            continue;
        }
        if let Some(d) = &f.description {
            w.description(d, "  ");
        }
        let comment = f
            .comment
            .as_ref()
            .map(|c| format!(" # {}", one_line(c)))
            .unwrap_or_default();
        w.line(&format!("  {}: {}{}{comment}", f.name, f.ty, f.directives));
    }
}

#[derive(Default)]
pub(super) struct Writer {
    pub(super) text: String,
    /// Lines written so far.
    pub(super) line: usize,
}

impl Writer {
    pub(super) fn line(&mut self, text: &str) {
        self.text.push_str(text);
        self.text.push('\n');
        self.line += 1 + text.matches('\n').count();
    }

    pub(super) fn blank(&mut self) {
        self.line("");
    }

    /// A block-string description, indented.
    pub(super) fn description(&mut self, text: &str, indent: &str) {
        let text = text
            .replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace("\"\"\"", "\\\"\"\"");
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if !text.contains('\n') {
            self.line(&format!("{indent}{}", quote(text)));
            return;
        }
        self.line(&format!("{indent}\"\"\""));
        for l in text.lines() {
            let l = l.trim_end();
            if l.is_empty() {
                self.line("");
            } else {
                self.line(&format!("{indent}{l}"));
            }
        }
        self.line(&format!("{indent}\"\"\""));
    }
}

/// A comment's text on one line.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
