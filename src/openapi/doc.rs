//! Reading an OpenAPI document: JSON or YAML, the files its `$ref`s name, and the
//! lookups every later stage makes (a `$ref` followed, a JSON pointer read).
//!
//! Every `$ref` is rewritten at load into one canonical form, `"<file index>#<pointer>"`,
//! so a reference means the same wherever it was written (relative file names are read
//! against the referring file's folder). Remote (`http:`) references are not fetched: what
//! they name is served as `JSON`.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a schema lives: a file and a JSON pointer into it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    pub file: usize,
    pub pointer: String,
}

pub struct Docs {
    files: Vec<Value>,
    /// Each file's name without its extension (what a whole-file schema is named).
    stems: Vec<String>,
}

/// The most files one import reads (a `$ref` chain across files is followed this far).
const MAX_FILES: usize = 256;
/// How many `$ref`s in a row are followed before the chain is called a cycle.
const MAX_HOPS: usize = 64;

impl Docs {
    /// Reads `path` and every file its `$ref`s reach.
    pub fn load(path: &Path) -> Result<Docs, String> {
        let mut files: Vec<Value> = Vec::new();
        let mut stems: Vec<String> = vec![stem(path)];
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut queue: Vec<(usize, PathBuf)> = Vec::new();
        let root = canonical(path)?;
        index.insert(root.clone(), 0);
        files.push(Value::Null);
        queue.push((0, root));
        while let Some((i, path)) = queue.pop() {
            let mut doc = parse_file(&path)?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let mut refs = Vec::new();
            collect_refs(&mut doc, &mut refs);
            for r in refs {
                let Value::String(text) = r else { continue };
                let (file, pointer) = match text.split_once('#') {
                    Some((f, p)) => (f.to_string(), p.to_string()),
                    None => (text.clone(), String::new()),
                };
                let target = if file.is_empty() {
                    i
                } else if file.contains("://") {
                    // Not fetched: left as it is, which no lookup finds.
                    continue;
                } else {
                    let full = canonical(&dir.join(&file))?;
                    match index.get(&full) {
                        Some(&n) => n,
                        None => {
                            if files.len() >= MAX_FILES {
                                return Err(format!(
                                    "{}: more than {MAX_FILES} files referenced",
                                    path.display()
                                ));
                            }
                            let n = files.len();
                            files.push(Value::Null);
                            stems.push(stem(&full));
                            index.insert(full.clone(), n);
                            queue.push((n, full));
                            n
                        }
                    }
                };
                *r = Value::String(format!("{target}#{pointer}"));
            }
            files[i] = doc;
        }
        Ok(Docs { files, stems })
    }

    /// Builds from one parsed document (no other files).
    pub fn from_value(mut doc: Value) -> Docs {
        let mut refs = Vec::new();
        collect_refs(&mut doc, &mut refs);
        for r in refs {
            if let Value::String(text) = r {
                if let Some(p) = text.strip_prefix('#') {
                    *r = Value::String(format!("0#{p}"));
                }
            }
        }
        Docs {
            files: vec![doc],
            stems: vec![String::new()],
        }
    }

    /// What the schema at `loc` is called: its last pointer segment (`Pet` of
    /// `/components/schemas/Pet`), or the file's name for a whole file (`note.yaml`).
    pub fn name_of(&self, loc: &Loc) -> String {
        if loc.pointer.is_empty() || loc.pointer == "/" {
            return self.stems.get(loc.file).cloned().unwrap_or_default();
        }
        last_segment(&loc.pointer)
    }

    pub fn root(&self) -> &Value {
        &self.files[0]
    }

    /// The value at a location, if there is one.
    pub fn at(&self, loc: &Loc) -> Option<&Value> {
        let doc = self.files.get(loc.file)?;
        if loc.pointer.is_empty() {
            return Some(doc);
        }
        doc.pointer(&loc.pointer).or_else(|| {
            // Pointers in the wild are sometimes percent-encoded (`%7B`).
            let decoded = percent_encoding::percent_decode_str(&loc.pointer)
                .decode_utf8()
                .ok()?;
            doc.pointer(&decoded)
        })
    }

    /// The location a `{"$ref": …}` object names (`None` for anything else).
    pub fn ref_of(value: &Value) -> Option<Loc> {
        let text = value.get("$ref")?.as_str()?;
        let (file, pointer) = text.split_once('#')?;
        Some(Loc {
            file: file.parse().ok()?,
            pointer: pointer.to_string(),
        })
    }

    /// Follows `$ref`s from `value` to what they name: the value and its location (the
    /// last reference's, or `None` when `value` was no reference). A broken or cyclic chain
    /// is `None`.
    pub fn resolve<'a>(&'a self, value: &'a Value) -> Option<(&'a Value, Option<Loc>)> {
        let mut current = value;
        let mut loc = None;
        for _ in 0..MAX_HOPS {
            match Self::ref_of(current) {
                Some(next) => {
                    current = self.at(&next)?;
                    loc = Some(next);
                }
                None => return Some((current, loc)),
            }
        }
        None
    }

    /// The named schemas of a file (`/components/schemas/…`, 2.0's `/definitions/…`):
    /// (pointer, schema), in document order.
    pub fn components(&self, file: usize) -> Vec<(String, &Value)> {
        let Some(doc) = self.files.get(file) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for base in ["/components/schemas", "/definitions"] {
            if let Some(map) = doc.pointer(base).and_then(Value::as_object) {
                for (name, v) in map {
                    let escaped = name.replace('~', "~0").replace('/', "~1");
                    out.push((format!("{base}/{escaped}"), v));
                }
            }
        }
        out
    }

    /// `value` with its `$ref`s followed, or `value` itself when the chain is broken.
    pub fn deref<'a>(&'a self, value: &'a Value) -> &'a Value {
        self.resolve(value).map(|(v, _)| v).unwrap_or(value)
    }
}

/// The last segment of a pointer, unescaped (`/components/schemas/a~1b` → `a/b`).
pub fn last_segment(pointer: &str) -> String {
    pointer
        .rsplit('/')
        .next()
        .unwrap_or("")
        .replace("~1", "/")
        .replace("~0", "~")
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn canonical(path: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// At most this many bytes of a document are read.
const MAX_BYTES: u64 = 256 << 20;

fn parse_file(path: &Path) -> Result<Value, String> {
    use std::io::Read;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if !meta.is_file() {
        // A FIFO would block forever, a device read without end.
        return Err(format!("{shown}: not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("{shown}: larger than {} MiB", MAX_BYTES >> 20));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown}: not UTF-8 text"))?;
    parse_text(&text).map_err(|e| format!("{shown}: {e}"))
}

/// JSON, or else YAML (a JSON document is YAML too, but the JSON parser is faster and
/// its errors are clearer for JSON).
pub fn parse_text(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| format!("not valid JSON: {e}"));
    }
    let mut yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(trimmed).map_err(|e| format!("not valid YAML or JSON: {e}"))?;
    // `<<: *common` merge keys, which documents use to share members.
    yaml.apply_merge()
        .map_err(|e| format!("not valid YAML: {e}"))?;
    let value: Value =
        serde_json::to_value(yaml).map_err(|e| format!("not a JSON-shaped YAML document: {e}"))?;
    if !value.is_object() {
        return Err("not an OpenAPI document (the top level is not an object)".into());
    }
    Ok(value)
}

/// Every `$ref` string value in `doc`, to be rewritten in place.
fn collect_refs<'a>(doc: &'a mut Value, out: &mut Vec<&'a mut Value>) {
    // An explicit stack: a deeply nested document must not overflow the thread's stack.
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "$ref" && child.is_string() {
                        out.push(child);
                    } else {
                        stack.push(child);
                    }
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}
