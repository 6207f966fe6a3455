//! The shared vocabulary of caching (a leaf: everyone imports it, it imports nothing of
//! ours): a cache entry's identity [`CacheKey`], an invalidation [`Tag`], and the
//! [`Policy`] a fetched value is kept under. The cache, the bus between replicas and the
//! resolvers all speak it; none of them needs another for it.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// A cache entry's identity: SHA-256 of the canonical upstream request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key's 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The whole key in hex: its name in the second level.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key [`CacheKey::hex`] wrote, if `s` is one.
    pub fn from_hex(s: &str) -> Option<CacheKey> {
        let bytes: [u8; 32] = hex::decode(s).ok()?.try_into().ok()?;
        Some(CacheKey(bytes))
    }

    /// Hashes the parts that make a request distinct; each part is length-prefixed, so
    /// no two different part lists hash the same bytes.
    pub fn from_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        CacheKey(h.finalize().into())
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An invalidation tag, rendered from a `@cache(tags:)` template: `messages:general`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub Arc<str>);

impl From<&str> for Tag {
    fn from(s: &str) -> Self {
        Tag(Arc::from(s))
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a fetched value may be served, and under which tags.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub max_age: Duration,
    pub swr: Duration,
    pub tags: Vec<Tag>,
    /// May be shared with other replicas (`PUBLIC`); a `PRIVATE` value never leaves
    /// this one.
    pub shared: bool,
}

impl Policy {
    pub(crate) fn stores(&self) -> bool {
        !(self.max_age + self.swr).is_zero()
    }
}
