//! Limits on a document before it runs: aliases, root fields (each counted through
//! fragments), and required variables.

use std::collections::HashMap;

/// The document limits (`--max-aliases`, `--max-root-fields`).
#[derive(Clone, Debug)]
pub struct DocumentLimits {
    /// Aliases in one document.
    pub max_aliases: usize,
    /// Root fields in one operation.
    pub max_root_fields: usize,
    /// Refuse documents that select `__schema` or `__type` (`--disable-introspection`).
    pub no_introspection: bool,
}

/// Why a request is refused before it runs, if it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The error's `extensions.code`.
    pub code: &'static str,
}

impl Refusal {
    /// How the refusal is counted in `livegate_rejected_total`.
    pub fn rejection(&self) -> crate::metrics::Rejection {
        match self.code {
            "LIMIT_EXCEEDED" => crate::metrics::Rejection::Limit,
            _ => crate::metrics::Rejection::Malformed,
        }
    }
}

/// Why a document is over the alias or root-field limits, or lacks a required variable,
/// if it does. Counts go through fragment spreads and inline fragments: a field selected
/// by a fragment spread three times counts three times, as the executor would run it.
pub fn check_document(
    req: &mut async_graphql::Request,
    limits: &DocumentLimits,
) -> Option<Refusal> {
    let operation_name = req.operation_name.clone();
    let operation_name = operation_name.as_deref();
    // Parsed once and kept in the request: the executor reuses it.
    let doc = req.parsed_query().ok()?;
    let mut counter = Counter::new(doc);
    let limit = |message: String| {
        Some(Refusal {
            message,
            code: "LIMIT_EXCEEDED",
        })
    };
    let aliases = doc.operations.iter().fold(0usize, |n, (_, op)| {
        n.saturating_add(counter.count(&op.node.selection_set.node).aliases)
    });
    if counter.too_deep {
        return limit(format!(
            "fragment spreads nest more than {MAX_SPREAD_NESTING} deep through fragments"
        ));
    }
    if aliases > limits.max_aliases {
        return limit(format!(
            "the document has {aliases} aliases; {} at most (--max-aliases)",
            limits.max_aliases
        ));
    }
    let op = super::operation(doc, operation_name)?;
    let roots = counter.count(&op.node.selection_set.node).root_fields;
    if roots > limits.max_root_fields {
        return limit(format!(
            "the operation selects {roots} root fields; {} at most (--max-root-fields)",
            limits.max_root_fields
        ));
    }
    // Variables are coerced before anything runs (GraphQL spec, CoerceVariableValues): a
    // required one that is missing is a request error even where only a directive uses
    // it, and a default stands in for a missing one wherever it is used (the executor
    // applies defaults to field arguments only).
    let definitions: Vec<_> = op
        .node
        .variable_definitions
        .iter()
        .map(|d| {
            let d = &d.node;
            (
                async_graphql::Name::new(d.name.node.as_str()),
                d.var_type.node.clone(),
                d.default_value.as_ref().map(|v| v.node.clone()),
            )
        })
        .collect();
    for (name, ty, default) in definitions {
        let message = match (req.variables.get(&name), default) {
            (None, Some(default)) => {
                req.variables.insert(name, default);
                continue;
            }
            (None, None) if !ty.nullable => {
                format!("variable `${name}` of required type `{ty}` was not provided")
            }
            (Some(async_graphql::Value::Null), _) if !ty.nullable => {
                format!("variable `${name}` of non-null type `{ty}` must not be null")
            }
            _ => continue,
        };
        return Some(Refusal {
            message,
            code: "BAD_USER_INPUT",
        });
    }
    None
}

/// Whether fragment spreads in `doc` nest deeper than [`MAX_SPREAD_NESTING`].
pub fn spreads_too_deep(doc: &async_graphql::parser::types::ExecutableDocument) -> bool {
    let mut counter = Counter::new(doc);
    for (_, op) in doc.operations.iter() {
        counter.count(&op.node.selection_set.node);
    }
    counter.too_deep
}

/// Counts of a selection set, through its fragments.
#[derive(Clone, Copy, Default)]
struct Count {
    /// Fields selected at this level.
    root_fields: usize,
    /// Aliased fields at any level.
    aliases: usize,
}

impl Count {
    fn add(self, other: Count) -> Count {
        Count {
            root_fields: self.root_fields.saturating_add(other.root_fields),
            aliases: self.aliases.saturating_add(other.aliases),
        }
    }
}

/// Counts selection sets, each named fragment once (a document that spreads fragments
/// into each other many times costs its size, not the size of its expansion).
struct Counter<'d> {
    doc: &'d async_graphql::parser::types::ExecutableDocument,
    /// Fragments counted so far; `None` while one is being counted (a cycle, which
    /// validation refuses, counts as nothing here).
    fragments: HashMap<&'d str, Option<Count>>,
    /// Fragments being counted, one inside the other: the recursion's depth through
    /// fragments (its depth through selection sets is bounded by [`check_nesting`]).
    spreads: usize,
    /// A chain of spreads went deeper than [`MAX_SPREAD_NESTING`]; the counts are partial.
    too_deep: bool,
}

impl<'d> Counter<'d> {
    fn new(doc: &'d async_graphql::parser::types::ExecutableDocument) -> Self {
        Counter {
            doc,
            fragments: HashMap::new(),
            spreads: 0,
            too_deep: false,
        }
    }

    fn count(&mut self, set: &'d async_graphql::parser::types::SelectionSet) -> Count {
        use async_graphql::parser::types::Selection;
        set.items.iter().fold(Count::default(), |n, s| {
            let item = match &s.node {
                Selection::Field(f) => Count {
                    root_fields: 1,
                    aliases: usize::from(f.node.alias.is_some())
                        .saturating_add(self.count(&f.node.selection_set.node).aliases),
                },
                Selection::InlineFragment(i) => self.count(&i.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str())
                }
            };
            n.add(item)
        })
    }

    fn fragment(&mut self, name: &'d str) -> Count {
        match self.fragments.get(name) {
            Some(Some(done)) => return *done,
            Some(None) => return Count::default(),
            None => {}
        }
        let Some(def) = self.doc.fragments.get(name) else {
            return Count::default();
        };
        if self.spreads >= MAX_SPREAD_NESTING {
            self.too_deep = true;
            return Count::default();
        }
        self.fragments.insert(name, None);
        self.spreads += 1;
        let counted = self.count(&def.node.selection_set.node);
        self.spreads -= 1;
        self.fragments.insert(name, Some(counted));
        counted
    }
}

/// How deep brackets (`{`, `[`, `(`) may nest in a document's text, whatever
/// `--max-depth` says: every recursive walk over a document (the parser's, over values,
/// selections and arguments, and each one after it) stays far inside a worker's stack.
pub const MAX_NESTING: usize = 128;

/// How deep fragment spreads may nest through fragments (`...A` whose fragment spreads
/// `...B`, and so on): a chain is walked recursively by validation and by every count.
pub const MAX_SPREAD_NESTING: usize = 64;

/// Why `text` nests too deeply to be parsed, if it does: a scan of its tokens, without
/// recursion, before any parser sees it. Brackets inside strings, block strings and
/// comments do not count; unbalanced text is left to the parser to report.
pub fn check_nesting(text: &str) -> Option<Refusal> {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped triple quote inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_NESTING {
                    return Some(Refusal {
                        message: format!(
                            "the document nests brackets more than {MAX_NESTING} deep"
                        ),
                        code: "LIMIT_EXCEEDED",
                    });
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}
