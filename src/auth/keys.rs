//! The keys tokens are verified with: a JWKS per `--jwt-jwks-url` (fetched at start,
//! kept for its `Cache-Control: max-age`, fetched again for an unknown `kid` at most once
//! per `--jwt-jwks-min-refresh-s`, kept as they were while the endpoint is down), and the
//! `--jwt-secret` for HS256.
//!
//! Each key is kept with the algorithms it may verify, told by the key itself (its `kty`,
//! its curve, its `alg` when it names one) and never by a token's header: a token signed
//! with HS256 over an RSA key's public bytes, or one whose header says `none`, finds no
//! key that accepts its algorithm.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Largest JWKS document read (a JWKS of a few hundred keys is well under it).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// How long a JWKS without `Cache-Control: max-age` is kept, and the bounds of one with.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
const MIN_MAX_AGE: Duration = Duration::from_secs(30);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One verification key.
pub(super) struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// The keys of one JWKS endpoint and when they were fetched.
struct Fetched {
    keys: Arc<Vec<Key>>,
    /// When the keys should be fetched again (their `max-age`).
    stale_at: Instant,
    /// The last attempt, successful or not: attempts are spaced by `min_refresh`.
    tried_at: Option<Instant>,
    /// Attempts so far: a caller that waited for another's fetch takes its keys.
    attempts: u64,
}

/// A JWKS endpoint.
pub(super) struct Jwks {
    url: url::Url,
    client: reqwest::Client,
    min_refresh: Duration,
    state: Mutex<Fetched>,
    /// One fetch at a time; callers that wait find the keys it got.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(url: url::Url, client: reqwest::Client, min_refresh: Duration) -> Self {
        Jwks {
            url,
            client,
            min_refresh,
            state: Mutex::new(Fetched {
                keys: Arc::new(Vec::new()),
                stale_at: Instant::now(),
                tried_at: None,
                attempts: 0,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The URL without its query and userinfo, for log lines.
    pub fn shown(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fetched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys as they are now.
    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.lock().keys.clone()
    }

    /// Whether the keys should be fetched: they are past their `max-age`, or (`unknown`)
    /// a token names a key they lack — either way not sooner than `min_refresh` after the
    /// last attempt.
    fn due(&self, unknown: bool) -> bool {
        let s = self.lock();
        let now = Instant::now();
        let spaced = s
            .tried_at
            .is_none_or(|t| now.duration_since(t) >= self.min_refresh);
        spaced && (unknown || now >= s.stale_at)
    }

    /// Fetches the keys again if [`Self::due`]; a failure keeps the keys there were.
    pub async fn refresh(&self, unknown: bool) {
        if !self.due(unknown) {
            // A fetch in flight (the first one, at start) is waited for: its keys may be
            // the ones this caller needs.
            if self.fetching.try_lock().is_err() {
                let _done = self.fetching.lock().await;
            }
            return;
        }
        let seen = self.lock().attempts;
        let _one = self.fetching.lock().await;
        // Another caller fetched them while this one waited: those are the keys.
        if self.lock().attempts != seen || !self.due(unknown) {
            return;
        }
        self.lock().tried_at = Some(Instant::now());
        let fetched = self.fetch().await;
        // Counted once done: a caller waiting on this fetch sees it happened.
        self.lock().attempts += 1;
        match fetched {
            Ok((keys, max_age)) => {
                tracing::debug!(jwks = %self.shown(), keys = keys.len(), "JWKS fetched");
                let mut s = self.lock();
                s.keys = Arc::new(keys);
                s.stale_at = Instant::now() + max_age;
            }
            Err(e) => {
                tracing::warn!(jwks = %self.shown(), error = %e, "JWKS could not be fetched; the keys fetched before are kept");
            }
        }
    }

    async fn fetch(&self) -> Result<(Vec<Key>, Duration), String> {
        let res = self
            .client
            .get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        if !res.status().is_success() {
            return Err(format!("answered {}", res.status()));
        }
        let max_age = max_age(res.headers());
        let mut body = Vec::new();
        let mut stream = res;
        while let Some(chunk) = stream
            .chunk()
            .await
            .map_err(|e| format!("body: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set = parse_set(&body)?;
        Ok((set, max_age))
    }
}

/// The keys of a JWKS document this gateway can verify with; keys it cannot use (`oct`
/// keys, unknown types and curves, malformed ones) are skipped.
pub(super) fn parse_set(body: &[u8]) -> Result<Vec<Key>, String> {
    // Each key is read on its own: one key this crate cannot read does not lose the rest.
    let raw: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(items) = raw.get("keys").and_then(serde_json::Value::as_array) else {
        return Err("not a JWKS: no `keys` array".into());
    };
    let mut out = Vec::new();
    for item in items {
        let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
            continue;
        };
        if let Some(key) = key_of(&jwk) {
            out.push(key);
        }
    }
    Ok(out)
}

/// A JWK as a verification key with its algorithms, if it is one this gateway uses.
fn key_of(jwk: &Jwk) -> Option<Key> {
    use jsonwebtoken::jwk::PublicKeyUse;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            // 2048 bits at least: a shorter modulus is refused, not trusted.
            let n = base64_len(&p.n)?;
            if n < 256 || p.e.is_empty() {
                return None;
            }
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (alg, len) = match p.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return None,
            };
            if base64_len(&p.x)? != len || base64_len(&p.y)? != len {
                return None;
            }
            vec![alg]
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || base64_len(&p.x)? != 32 {
                return None;
            }
            vec![Algorithm::EdDSA]
        }
        // A shared secret published in a JWKS is no verification key.
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(named) => {
            let alg = algorithm_of(named)?;
            if !family.contains(&alg) {
                return None;
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

fn algorithm_of(k: KeyAlgorithm) -> Option<Algorithm> {
    Some(match k {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The length in bytes of a base64url value (unpadded or padded), if it is one.
fn base64_len(s: &str) -> Option<usize> {
    let s = s.trim_end_matches('=');
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || s.len() % 4 == 1
    {
        return None;
    }
    Some(s.len() * 3 / 4)
}

/// `Cache-Control: max-age` of a JWKS response, within bounds.
fn max_age(headers: &http::HeaderMap) -> Duration {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (k, v) = d.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .map_or(DEFAULT_MAX_AGE, |s| {
            Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
        })
}

/// The `--jwt-secret` key (HS256, HS384, HS512).
pub(super) fn secret(secret: &str) -> Option<Key> {
    Some(Key {
        kid: None,
        key: DecodingKey::from_secret(secret.as_bytes()).ok()?,
        algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_cannot_verify_are_skipped_and_the_rest_kept() {
        let body = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"shared"},
            {"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"short"},
            {"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA","kid":"short-ec"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"tiny-rsa"},
            {"kty":"weird"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"good"}
        ]}"#;
        let keys = parse_set(body).expect("a JWKS");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("good"));
        assert_eq!(keys[0].algorithms, vec![Algorithm::EdDSA]);
        assert!(parse_set(b"[]").is_err());
        assert!(parse_set(b"not json").is_err());
    }

    #[test]
    fn max_age_is_read_and_bounded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), DEFAULT_MAX_AGE);
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=600"),
        );
        assert_eq!(max_age(&h), Duration::from_secs(600));
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=1"),
        );
        assert_eq!(max_age(&h), MIN_MAX_AGE);
    }
}
