//! Persisted documents, on every transport:
//!
//! - **Automatic persisted queries** (Apollo's APQ): a request may name its document by
//!   `extensions.persistedQuery.sha256Hash` alone; an unknown hash is answered
//!   `PERSISTED_QUERY_NOT_FOUND`, and the client sends the document with its hash, which
//!   is checked and kept in a bounded store (`--apq-cache-mb`), shared with the other
//!   replicas through Redis when `--redis-url` is set.
//! - **Trusted documents** (`--persisted-documents FILE`): a manifest of id → document, as
//!   Apollo's generator (`{"format": "apollo-persisted-query-manifest", "operations":
//!   [{"id", "body"}]}`), Relay and GraphQL Codegen (`{"<id>": "<document>"}`) write it. A
//!   request names one by `extensions.persistedQuery.sha256Hash` or by `documentId`. With
//!   `--persisted-only`, nothing else runs: a request with a document of its own runs only
//!   when that document is in the manifest, and APQ registers nothing.

use crate::bus::Bus;
use http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Settings; flags of the binary.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--persisted-documents FILE`.
    pub manifest: Option<std::path::PathBuf>,
    /// `--persisted-only`.
    pub only: bool,
    /// `--apq-cache-mb`, in bytes; 0 turns APQ off.
    pub apq_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            manifest: None,
            only: false,
            apq_bytes: 16 << 20,
        }
    }
}

/// How long a registered APQ document is kept in Redis.
const SHARED_FOR: Duration = Duration::from_secs(24 * 3600);

/// The largest APQ document written to Redis; a bigger one is kept by this replica only.
const SHARED_DOCUMENT_MAX: usize = 64 << 10;

/// What this replica wrote to Redis in the last [`SHARED_FOR`]: at most the APQ budget
/// (`--apq-cache-mb`), so one replica's registrations never hold more of Redis than of
/// its own memory.
struct Written {
    budget: u64,
    total: u64,
    writes: std::collections::VecDeque<(tokio::time::Instant, u64)>,
}

impl Written {
    /// Whether `bytes` more may be written now; counted when they may.
    fn take(&mut self, bytes: u64) -> bool {
        let now = tokio::time::Instant::now();
        while let Some(&(at, n)) = self.writes.front() {
            if now.duration_since(at) < SHARED_FOR {
                break;
            }
            self.total -= n;
            self.writes.pop_front();
        }
        if self.total + bytes > self.budget {
            return false;
        }
        self.total += bytes;
        self.writes.push_back((now, bytes));
        true
    }
}

pub struct Persisted {
    /// APQ documents by hash (lowercase hex); `None`: APQ is off.
    apq: Option<moka::sync::Cache<String, Arc<str>>>,
    /// The manifest's documents by id.
    trusted: HashMap<String, Arc<str>>,
    /// SHA-256 of each manifest document's text.
    trusted_text: HashSet<[u8; 32]>,
    only: bool,
    bus: Bus,
    /// Bytes of documents this replica wrote to Redis lately.
    written: std::sync::Mutex<Written>,
    /// `livegate_persisted_documents_total{result}`.
    counted: prometheus::IntCounterVec,
}

/// Why a request's document cannot be had.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub code: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            code,
        }
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Persisted {
    /// Reads the manifest, if any. A manifest that cannot be read or has the wrong shape
    /// is a start-up error that says where.
    pub fn load(
        manifest: Option<&std::path::Path>,
        only: bool,
        apq_bytes: u64,
        bus: Bus,
        counted: prometheus::IntCounterVec,
    ) -> Result<Persisted, String> {
        let trusted = match manifest {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--persisted-documents {}: {e}", path.display()))?;
                parse_manifest(&text)
                    .map_err(|e| format!("--persisted-documents {}: {e}", path.display()))?
            }
            None if only => return Err("--persisted-only needs --persisted-documents FILE".into()),
            None => HashMap::new(),
        };
        // A SHA-256 id is found whatever the case of its hex digits (a request's
        // `sha256Hash` is lower-cased before the lookup).
        let mut trusted = trusted;
        let hashes: Vec<(String, Arc<str>)> = trusted
            .iter()
            .filter(|(id, _)| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|(id, doc)| (id.to_ascii_lowercase(), doc.clone()))
            .collect();
        for (id, doc) in hashes {
            trusted.entry(id).or_insert(doc);
        }
        let trusted_text = trusted.values().map(|d| sha256(d)).collect();
        let apq = (apq_bytes > 0 && !only).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(apq_bytes)
                .weigher(|k: &String, v: &Arc<str>| {
                    u32::try_from(k.len() + v.len() + 64).unwrap_or(u32::MAX)
                })
                .build()
        });
        Ok(Persisted {
            apq,
            trusted,
            trusted_text,
            only,
            bus,
            written: std::sync::Mutex::new(Written {
                budget: apq_bytes,
                total: 0,
                writes: Default::default(),
            }),
            counted,
        })
    }

    /// Whether this replica may write a document of `len` bytes to Redis now.
    fn may_write(&self, len: usize) -> bool {
        let bytes = u64::try_from(len).unwrap_or(u64::MAX).saturating_add(64);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(bytes)
    }

    fn count(&self, result: &str) {
        self.counted.with_label_values(&[result]).inc();
    }

    /// The document a request runs: its own `query` (checked against the hash it names,
    /// and, with `--persisted-only`, against the manifest), or the persisted one its
    /// `extensions.persistedQuery.sha256Hash` or `documentId` names. Whatever its source,
    /// a document that nests too deeply to be parsed safely is refused here, before any
    /// parser sees it. An APQ document is registered only when `valid` says it parses and
    /// validates.
    pub async fn document(
        &self,
        query: Option<String>,
        extensions: Option<&Value>,
        document_id: Option<&Value>,
        valid: impl AsyncFnOnce(&str) -> bool,
    ) -> Result<String, Refusal> {
        let text = self.find(query, extensions, document_id, valid).await?;
        match crate::exec::limits::check_nesting(&text) {
            None => Ok(text),
            Some(too_deep) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                too_deep.code,
                too_deep.message,
            )),
        }
    }

    async fn find(
        &self,
        query: Option<String>,
        extensions: Option<&Value>,
        document_id: Option<&Value>,
        valid: impl AsyncFnOnce(&str) -> bool,
    ) -> Result<String, Refusal> {
        let bad = |m: &str| Refusal::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", m);
        let hash = match extensions.and_then(|e| e.get("persistedQuery")) {
            None | Some(Value::Null) => None,
            Some(Value::Object(pq)) => {
                if let Some(v) = pq.get("version") {
                    if v.as_u64() != Some(1) {
                        return Err(bad("extensions.persistedQuery.version must be 1"));
                    }
                }
                match pq.get("sha256Hash") {
                    Some(Value::String(h)) => Some(h.to_ascii_lowercase()),
                    _ => return Err(bad("extensions.persistedQuery.sha256Hash must be a string")),
                }
            }
            Some(_) => return Err(bad("extensions.persistedQuery must be an object")),
        };
        let id = match document_id {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(bad("`documentId` must be a string")),
        };
        if let Some(query) = query {
            if let Some(hash) = &hash {
                if hex::encode(sha256(&query)) != *hash {
                    self.count("refused");
                    return Err(bad("provided sha does not match query"));
                }
            }
            if self.only {
                if !self.trusted_text.contains(&sha256(&query)) {
                    self.count("refused");
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "PERSISTED_QUERY_NOT_IN_LIST",
                        "this gateway runs only its persisted documents (--persisted-only), and this document is not one of them",
                    ));
                }
                return Ok(query);
            }
            if let (Some(hash), Some(apq)) = (hash, &self.apq) {
                // Only a document that can run is kept: checked for depth before any
                // parse, then parsed and validated.
                if !apq.contains_key(&hash)
                    && crate::exec::limits::check_nesting(&query).is_none()
                    && valid(&query).await
                {
                    apq.insert(hash.clone(), Arc::from(query.as_str()));
                    if query.len() <= SHARED_DOCUMENT_MAX && self.may_write(query.len()) {
                        self.bus.put_document(&hash, &query, SHARED_FOR).await;
                    }
                    self.count("registered");
                }
            }
            return Ok(query);
        }
        let Some(wanted) = id.or(hash.clone()) else {
            return Err(bad("the request has no `query`"));
        };
        // A hash was lower-cased above; a manifest id may have capitals: both are found.
        let listed = self.trusted.get(&wanted).or_else(|| {
            extensions
                .and_then(|e| e.pointer("/persistedQuery/sha256Hash"))
                .and_then(Value::as_str)
                .and_then(|h| self.trusted.get(h))
        });
        if let Some(doc) = listed {
            self.count("hit");
            return Ok(doc.to_string());
        }
        if self.only {
            self.count("refused");
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "PERSISTED_QUERY_NOT_IN_LIST",
                format!("no persisted document has the id {wanted:?} (--persisted-only)"),
            ));
        }
        // Only a SHA-256 (64 hex digits) can have been registered: anything else is not
        // looked up, here or in Redis.
        let well_formed = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        if let (Some(hash), Some(apq)) = (hash.as_ref().filter(|h| well_formed(h)), &self.apq) {
            if let Some(doc) = apq.get(hash) {
                self.count("hit");
                return Ok(doc.to_string());
            }
            if let Some(doc) = self.bus.document(hash).await {
                // Only a document that has the hash it is stored under.
                if hex::encode(sha256(&doc)) == *hash {
                    apq.insert(hash.clone(), Arc::from(doc.as_str()));
                    self.count("hit");
                    return Ok(doc);
                }
            }
        }
        self.count("miss");
        Err(Refusal::new(
            StatusCode::OK,
            "PERSISTED_QUERY_NOT_FOUND",
            "PersistedQueryNotFound",
        ))
    }
}

/// A manifest's documents by id: Apollo's format, or a plain object of id → document.
fn parse_manifest(text: &str) -> Result<HashMap<String, Arc<str>>, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = json else {
        return Err("the manifest must be a JSON object".into());
    };
    let mut out = HashMap::new();
    if map.get("format").and_then(Value::as_str) == Some("apollo-persisted-query-manifest") {
        let Some(Value::Array(ops)) = map.get("operations") else {
            return Err("an Apollo manifest needs an `operations` list".into());
        };
        for (i, op) in ops.iter().enumerate() {
            let (Some(id), Some(body)) = (
                op.get("id").and_then(Value::as_str),
                op.get("body").and_then(Value::as_str),
            ) else {
                return Err(format!("operations[{i}] needs a string `id` and `body`"));
            };
            out.insert(id.to_string(), Arc::from(body));
        }
    } else {
        for (id, doc) in map {
            let Value::String(doc) = doc else {
                return Err(format!("the document of {id:?} must be a string"));
            };
            out.insert(id, Arc::from(doc.as_str()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> prometheus::IntCounterVec {
        prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["result"])
            .expect("a counter")
    }

    fn pq(hash: &str) -> Value {
        serde_json::json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
    }

    #[tokio::test]
    async fn apq_registers_checks_and_serves_by_hash() {
        let p = Persisted::load(None, false, 1 << 20, Bus::local(), counter()).expect("loads");
        let query = "{ a }".to_string();
        let hash = hex::encode(sha256(&query));
        let missing = p
            .document(None, Some(&pq(&hash)), None, async |_: &str| true)
            .await
            .expect_err("unknown");
        assert_eq!(missing.code, "PERSISTED_QUERY_NOT_FOUND");
        let junk = p
            .document(None, Some(&pq("not a hash")), None, async |_: &str| true)
            .await
            .expect_err("junk");
        assert_eq!(junk.code, "PERSISTED_QUERY_NOT_FOUND");
        let wrong = p
            .document(
                Some("{ b }".into()),
                Some(&pq(&hash)),
                None,
                async |_: &str| true,
            )
            .await
            .expect_err("mismatch");
        assert_eq!(wrong.message, "provided sha does not match query");
        assert_eq!(
            p.document(
                Some(query.clone()),
                Some(&pq(&hash)),
                None,
                async |_: &str| true
            )
            .await
            .expect("registers"),
            query
        );
        assert_eq!(
            p.document(
                None,
                Some(&pq(&hash.to_uppercase())),
                None,
                async |_: &str| true
            )
            .await
            .expect("found"),
            query
        );
    }

    #[tokio::test]
    async fn a_manifest_in_either_format_and_persisted_only() {
        let dir = std::env::temp_dir().join(format!("livegate-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let apollo = dir.join("apollo.json");
        std::fs::write(
            &apollo,
            r#"{"format":"apollo-persisted-query-manifest","version":1,"operations":[{"id":"abc","body":"{ a }","name":"A","type":"query"}]}"#,
        )
        .expect("write");
        let p =
            Persisted::load(Some(&apollo), true, 1 << 20, Bus::local(), counter()).expect("loads");
        assert_eq!(
            p.document(None, Some(&pq("abc")), None, async |_: &str| true)
                .await
                .expect("by hash"),
            "{ a }"
        );
        let by_id = Value::String("abc".into());
        assert_eq!(
            p.document(None, None, Some(&by_id), async |_: &str| true)
                .await
                .expect("by id"),
            "{ a }"
        );
        assert_eq!(
            p.document(Some("{ a }".into()), None, None, async |_: &str| true)
                .await
                .expect("listed text"),
            "{ a }"
        );
        let other = p
            .document(Some("{ b }".into()), None, None, async |_: &str| true)
            .await
            .expect_err("not listed");
        assert_eq!(other.code, "PERSISTED_QUERY_NOT_IN_LIST");
        let unknown = p
            .document(None, Some(&pq("zzz")), None, async |_: &str| true)
            .await
            .expect_err("unknown id");
        assert_eq!(unknown.code, "PERSISTED_QUERY_NOT_IN_LIST");

        let plain = dir.join("plain.json");
        std::fs::write(&plain, r#"{"h1": "{ a }", "h2": "{ b }"}"#).expect("write");
        let p =
            Persisted::load(Some(&plain), false, 1 << 20, Bus::local(), counter()).expect("loads");
        assert_eq!(p.trusted.len(), 2);
        for (id, doc) in [("h1", "{ a }"), ("h2", "{ b }")] {
            let id = Value::String(id.into());
            assert_eq!(
                p.document(None, None, Some(&id), async |_: &str| true)
                    .await
                    .expect("listed"),
                doc
            );
        }
        // An id with capitals: found by its hash, which a request's case does not change.
        let id = "ABCDEF0123456789".repeat(4);
        std::fs::write(
            &plain,
            format!(r#"{{"{id}": "{{ c }}", "MixedCase": "{{ d }}"}}"#),
        )
        .expect("write");
        let p =
            Persisted::load(Some(&plain), false, 1 << 20, Bus::local(), counter()).expect("loads");
        for asked in [id.clone(), id.to_ascii_lowercase()] {
            assert_eq!(
                p.document(None, Some(&pq(&asked)), None, async |_: &str| true)
                    .await
                    .expect("found"),
                "{ c }"
            );
        }
        assert_eq!(
            p.document(None, Some(&pq("MixedCase")), None, async |_: &str| true)
                .await
                .expect("found"),
            "{ d }"
        );
        std::fs::write(&plain, r#"{"h1": 3}"#).expect("write");
        let err = Persisted::load(Some(&plain), false, 0, Bus::local(), counter()).err();
        assert!(err.is_some_and(|e| e.contains("the document of \"h1\" must be a string")));
        assert!(Persisted::load(None, true, 0, Bus::local(), counter()).is_err());
    }
}
