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
    /// The upstream said `no-cache`: every use asks it again (conditionally: the entry is
    /// kept for its validators), and waits for the answer.
    pub revalidate: bool,
    /// `@cache(staleIfError:)` (RFC 5861): past its freshness, the value is still served
    /// this long when refreshing it fails (no answer, a timeout, a 5xx, an open breaker).
    pub stale_if_error: Duration,
}

/// What an upstream's `Cache-Control` says about how long its answer stays fresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Freshness {
    /// `s-maxage` (for a shared cache like this one), else `max-age`.
    pub max_age: Option<Duration>,
    /// `no-cache`: usable only after asking the upstream again.
    pub no_cache: bool,
    /// `private` or `no-store`: a shared cache must not keep it at all (RFC 9111).
    pub unshareable: bool,
}

impl Freshness {
    /// Reads `Cache-Control` values.
    pub fn of<'a>(values: impl Iterator<Item = &'a str>) -> Freshness {
        let mut max_age = None;
        let mut s_maxage = None;
        let mut no_cache = false;
        let mut unshareable = false;
        for d in values.flat_map(|v| v.split(',')) {
            let (name, arg) = match d.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (d.trim(), None),
            };
            let seconds = || {
                arg.and_then(|a| a.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            if name.eq_ignore_ascii_case("max-age") {
                max_age = max_age.or(seconds());
            } else if name.eq_ignore_ascii_case("s-maxage") {
                s_maxage = s_maxage.or(seconds());
            } else if name.eq_ignore_ascii_case("no-cache") {
                no_cache = true;
            } else if name.eq_ignore_ascii_case("private") || name.eq_ignore_ascii_case("no-store")
            {
                unshareable = true;
            }
        }
        Freshness {
            max_age: s_maxage.or(max_age),
            no_cache,
            unshareable,
        }
    }
}

impl Policy {
    /// This policy within what the upstream said: the schema is the ceiling, a shorter
    /// `max-age` shortens it, `no-cache` leaves no freshness (and, without `validators`
    /// to revalidate with, nothing worth keeping).
    pub fn limited(mut self, f: Freshness, validators: bool) -> Policy {
        if let Some(age) = f.max_age {
            self.max_age = self.max_age.min(age);
        }
        if f.no_cache {
            // Kept as long as the schema says, for its validators; never fresh.
            self.swr = if validators {
                self.max_age + self.swr
            } else {
                Duration::ZERO
            };
            self.max_age = Duration::ZERO;
            self.revalidate = true;
        }
        self
    }

    pub(crate) fn stores(&self) -> bool {
        !self.lifetime().is_zero()
    }

    /// How long a stored value is kept: fresh, then stale while revalidating or for
    /// errors, whichever is longer.
    pub fn lifetime(&self) -> Duration {
        self.max_age + self.swr.max(self.stale_if_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_freshness_reads_what_a_shared_cache_should() {
        let f = |v: &str| Freshness::of([v].into_iter());
        assert_eq!(f("max-age=60").max_age, Some(Duration::from_secs(60)));
        assert_eq!(
            f("Max-Age=\"5\", public").max_age,
            Some(Duration::from_secs(5))
        );
        // s-maxage wins, whatever the order.
        assert_eq!(
            f("s-maxage=3, max-age=600").max_age,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            f("max-age=600, s-maxage=3").max_age,
            Some(Duration::from_secs(3))
        );
        assert_eq!(f("max-age=soon").max_age, None);
        assert!(f("no-cache").no_cache && f("NO-CACHE=\"set-cookie\"").no_cache);
        assert_eq!(f(""), Freshness::default());
        assert!(f("private, max-age=60").unshareable && f(" No-Store").unshareable);
        assert!(!f("public, max-age=60").unshareable);
        let policy = Policy {
            max_age: Duration::from_secs(60),
            swr: Duration::from_secs(10),
            ..Policy::default()
        };
        let shorter = policy.clone().limited(f("max-age=5"), false);
        assert_eq!(
            (shorter.max_age, shorter.swr),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        let longer = policy.clone().limited(f("max-age=600"), false);
        assert_eq!(longer.max_age, Duration::from_secs(60));
        let kept = policy.clone().limited(f("no-cache"), true);
        assert!(kept.revalidate && kept.max_age.is_zero() && kept.stores());
        let dropped = policy.limited(f("no-cache"), false);
        assert!(!dropped.stores());
    }
}
