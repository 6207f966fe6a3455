//! Stage ⑤ — who is calling: a JWT verified at the edge into an [`Identity`] that travels
//! in the request context (for `@authenticated`/`@requiresScopes`, `{claims.…}` templates,
//! the keys that tell callers apart, rate limits, and a socket's end at the token's
//! `exp`).
//!
//! The token is read from `Authorization: Bearer …`, else from the `--jwt-cookie` cookie;
//! long-lived connections hand the headers they were opened with (a WebSocket's
//! `connection_init` payload among them). Verification is the `jsonwebtoken` crate's,
//! with the algorithms each key allows (`keys.rs`); `exp` is required, `nbf` checked, both
//! with `--jwt-leeway-s` of clock skew; `iss`/`aud` required and checked when configured.
//! No token, claim or key is ever written to a log line or an error.

mod keys;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The `--jwt-*` settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--jwt-jwks-url`, each a JWKS endpoint.
    pub jwks_urls: Vec<url::Url>,
    /// `--jwt-secret`: HS256/384/512 tokens' shared secret.
    pub secret: Option<String>,
    /// `--jwt-issuer`: accepted `iss` values (any when empty).
    pub issuers: Vec<String>,
    /// `--jwt-audience`: accepted `aud` values (not checked when empty).
    pub audiences: Vec<String>,
    /// `--jwt-leeway-s`: clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// `--jwt-required`: a request without a token is refused (else it runs anonymous).
    pub required: bool,
    /// `--jwt-cookie`: the cookie a token is read from when there is no `Authorization`.
    pub cookie: Option<String>,
    /// `--jwt-scope-claim`: the claim scopes are read from (a space-separated string or
    /// a list of strings).
    pub scope_claim: String,
    /// `--jwt-jwks-min-refresh-s`: a JWKS is fetched again for an unknown `kid` at most
    /// this often.
    pub jwks_min_refresh: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jwks_urls: Vec::new(),
            secret: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            required: false,
            cookie: None,
            scope_claim: "scope".into(),
            jwks_min_refresh: Duration::from_secs(10),
        }
    }
}

impl Options {
    /// Whether tokens are verified at all (a JWKS or a secret is configured).
    pub fn enabled(&self) -> bool {
        !self.jwks_urls.is_empty() || self.secret.is_some()
    }
}

/// A verified caller.
#[derive(Debug)]
pub struct Identity {
    /// The token's claims (a JSON object), for `{claims.…}` templates.
    pub claims: Value,
    /// `iss` and `sub` joined: what tells one user from another in keys.
    pub subject: Option<String>,
    /// The scopes the token grants.
    pub scopes: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
    /// `--jwt-cookie`: without an `Authorization: Bearer` header, the token was that
    /// cookie's value (keys then stand for the subject in its place).
    pub cookie: Option<Arc<str>>,
}

impl Identity {
    /// When the token stops being accepted (its `exp` plus the leeway), from now; at
    /// most ten years (an `exp` far in the future is no reason for a deadline that
    /// overflows the clock).
    pub fn remaining(&self, leeway: Duration) -> Duration {
        let now = jsonwebtoken::get_current_timestamp();
        let left = self
            .expires
            .saturating_add(leeway.as_secs())
            .saturating_sub(now);
        Duration::from_secs(left.min(10 * 365 * 24 * 3600))
    }

    /// The claim at a dotted `path` (`tenant`, `org.id`).
    pub fn claim(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.claims, |v, k| v.get(k))
    }
}

/// Why a request's token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No token, where one is required.
    Missing,
    /// The token is past its `exp` (plus the leeway).
    Expired,
    /// Anything else: the signature, the algorithm, the key, a claim. The words say which,
    /// never the token's contents.
    Invalid(&'static str),
}

impl Failure {
    /// The words a client is told.
    pub fn message(&self) -> String {
        match self {
            Failure::Missing => {
                "authentication required: send a token (Authorization: Bearer …)".into()
            }
            Failure::Expired => "the token has expired".into(),
            Failure::Invalid(why) => format!("the token is invalid: {why}"),
        }
    }

    /// The `result` label of `livegate_auth_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Expired => "expired",
            Failure::Invalid(_) => "invalid",
        }
    }
}

/// The verifier of one gateway.
pub struct Auth {
    options: Options,
    jwks: Vec<keys::Jwks>,
    secret: Option<keys::Key>,
    /// `livegate_auth_total{result}`.
    counted: prometheus::IntCounterVec,
    /// Tokens verified lately, by their SHA-256: a client sends the same token with
    /// every request, and a signature check (RSA, ECDSA) costs more than a cached query.
    /// Kept a minute at most; `exp` is checked again on every hit.
    verified: moka::sync::Cache<[u8; 32], Arc<Identity>>,
}

impl Auth {
    /// A verifier for `options` (keys are fetched by [`Auth::start`]), trusting `roots`
    /// besides the web's for JWKS endpoints (`--upstream-ca-file`: a private identity
    /// provider).
    pub fn new(
        options: Options,
        counted: prometheus::IntCounterVec,
        roots: &crate::upstream::tls::ExtraRoots,
    ) -> Self {
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3));
        let client = roots.trusted_by(builder).build().unwrap_or_default();
        let jwks = options
            .jwks_urls
            .iter()
            .map(|u| keys::Jwks::new(u.clone(), client.clone(), options.jwks_min_refresh))
            .collect();
        let secret = options.secret.as_deref().and_then(keys::secret);
        Auth {
            options,
            jwks,
            secret,
            counted,
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Fetches every JWKS once (a failure is logged; its keys are fetched again when a
    /// token needs them) and keeps them fresh for their `max-age` in a task that ends
    /// with the last reference to `self`.
    pub async fn start(self: &Arc<Self>) {
        for j in &self.jwks {
            j.refresh(false).await;
        }
        if self.jwks.is_empty() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let Some(auth) = weak.upgrade() else { return };
                for j in &auth.jwks {
                    j.refresh(false).await;
                }
            }
        });
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// When a connection opened by `identity` must end: its token's `exp` plus the
    /// leeway.
    pub fn deadline(&self, identity: &Identity) -> tokio::time::Instant {
        tokio::time::Instant::now() + identity.remaining(self.options.leeway)
    }

    /// Whether tokens are verified at all.
    pub fn enabled(&self) -> bool {
        self.options.enabled()
    }

    /// Counts one outcome in `livegate_auth_total`.
    pub fn count(&self, result: &str) {
        self.counted.with_label_values(&[result]).inc();
    }

    /// The token `headers` carry: `Authorization: Bearer …`, else the `--jwt-cookie`.
    pub fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let bearer = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim())
                    .filter(|t| !t.is_empty())
            });
        if bearer.is_some() {
            return bearer;
        }
        let name = self.options.cookie.as_deref()?;
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            })
            .filter(|t| !t.is_empty())
    }

    /// Who `headers` say is calling: `Ok(None)` for an anonymous request (no token, and
    /// none required, or verification off). Counted in `livegate_auth_total`.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Option<Arc<Identity>>, Failure> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(token) = self.token(headers) else {
            if self.options.required {
                self.count(Failure::Missing.label());
                return Err(Failure::Missing);
            }
            return Ok(None);
        };
        let verified = self.verify(token).await;
        match &verified {
            Ok(_) => self.count("ok"),
            Err(f) => self.count(f.label()),
        }
        verified.map(Some)
    }

    /// Verifies `token` with the key its header's `kid` names (or, without one, each key
    /// that allows its algorithm).
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, Failure> {
        // Bounded before any parsing: a token is a header value, but a cookie or a
        // connection_init payload could be anything.
        if token.len() > 16 << 10 {
            return Err(Failure::Invalid("longer than 16 KiB"));
        }
        let hash: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(token.as_bytes()).into()
        };
        if let Some(known) = self.verified.get(&hash) {
            if known.remaining(self.options.leeway).is_zero() {
                self.verified.invalidate(&hash);
                return Err(Failure::Expired);
            }
            return Ok(known);
        }
        let identity = Arc::new(self.verify_signed(token).await?);
        self.verified.insert(hash, identity.clone());
        Ok(identity)
    }

    /// [`Self::verify`] without the cache.
    async fn verify_signed(&self, token: &str) -> Result<Identity, Failure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Failure::Invalid("not a JWT, or an unsupported algorithm"))?;
        let alg = header.alg;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            let Some(secret) = &self.secret else {
                return Err(Failure::Invalid("HMAC tokens are not accepted here"));
            };
            return self.check(token, secret, alg);
        }
        let kid = header.kid.as_deref();
        let mut tried_unknown = false;
        loop {
            let mut last = None;
            for j in &self.jwks {
                let keys = j.keys();
                for key in keys.iter().filter(|k| {
                    k.algorithms.contains(&alg) && (kid.is_none() || k.kid.as_deref() == kid)
                }) {
                    match self.check(token, key, alg) {
                        Ok(identity) => return Ok(identity),
                        // The key was the token's: its verdict stands.
                        Err(f) if kid.is_some() => return Err(f),
                        Err(f) => last = Some(f),
                    }
                }
            }
            if let Some(f) = last {
                return Err(f);
            }
            // No key for it: maybe the issuer rotated its keys.
            if tried_unknown || self.jwks.is_empty() {
                return Err(Failure::Invalid(
                    "no key of the configured JWKS verifies it",
                ));
            }
            tried_unknown = true;
            for j in &self.jwks {
                j.refresh(true).await;
            }
        }
    }

    /// The claims of `token` if `key` verifies it under the configured rules.
    fn check(&self, token: &str, key: &keys::Key, alg: Algorithm) -> Result<Identity, Failure> {
        let o = &self.options;
        let mut v = Validation::new(alg);
        v.algorithms = key.algorithms.clone();
        v.leeway = o.leeway.as_secs();
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if !o.issuers.is_empty() {
            v.set_issuer(&o.issuers);
            required.push("iss");
        }
        if o.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&o.audiences);
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => Failure::Expired,
                K::ImmatureSignature => Failure::Invalid("not valid yet (nbf)"),
                K::InvalidIssuer => Failure::Invalid("wrong issuer"),
                K::InvalidAudience => Failure::Invalid("wrong audience"),
                K::MissingRequiredClaim(c) if c == "exp" => Failure::Invalid("no exp claim"),
                K::MissingRequiredClaim(c) if c == "iss" => Failure::Invalid("no iss claim"),
                K::MissingRequiredClaim(_) => Failure::Invalid("no aud claim"),
                K::InvalidSignature => Failure::Invalid("bad signature"),
                K::InvalidAlgorithm => Failure::Invalid("an algorithm its key does not allow"),
                K::InvalidClaimFormat(_) => Failure::Invalid("a malformed claim"),
                _ => Failure::Invalid("malformed"),
            }
        })?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(Failure::Invalid("its claims are not a JSON object"));
        }
        let expires = claims
            .get("exp")
            .and_then(|e| e.as_u64().or_else(|| e.as_f64().map(|f| f as u64)))
            .ok_or(Failure::Invalid("no exp claim"))?;
        let subject = claims.get("sub").and_then(Value::as_str).map(|sub| {
            let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
            format!("{iss}\u{0}{sub}")
        });
        let scopes = match claims.get(&o.scope_claim) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            claims,
            subject,
            scopes,
            expires,
            cookie: self.options.cookie.as_deref().map(Arc::from),
        })
    }
}

/// `claims` with `iat` and `exp` (`ttl` from now), signed with HS256 and `secret`: what
/// `livegate token` prints.
pub fn sign_hs256(secret: &str, mut claims: Value, ttl: Duration) -> Result<String, String> {
    let now = jsonwebtoken::get_current_timestamp();
    claims["iat"] = Value::from(now);
    claims["exp"] = Value::from(now.saturating_add(ttl.as_secs()));
    let key =
        jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_never_overflows_whatever_the_exp() {
        let far = Identity {
            claims: Value::Null,
            subject: None,
            scopes: Vec::new(),
            expires: u64::MAX,
            cookie: None,
        };
        let left = far.remaining(Duration::from_secs(u64::MAX));
        assert!(left <= Duration::from_secs(10 * 365 * 24 * 3600));
        let _ = tokio::time::Instant::now() + left;
        let past = Identity { expires: 1, ..far };
        assert_eq!(past.remaining(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn tokens_are_read_from_a_bearer_header_or_the_named_cookie_only() {
        let auth = Auth::new(
            Options {
                secret: Some("s".into()),
                cookie: Some("session".into()),
                ..Default::default()
            },
            prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["result"])
                .expect("counter"),
            &Default::default(),
        );
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().expect("h"));
        assert_eq!(auth.token(&h), None, "not a bearer token");
        h.insert(
            http::header::COOKIE,
            "a=1; session=tok; b=2".parse().expect("h"),
        );
        assert_eq!(auth.token(&h), Some("tok"));
        h.insert(
            http::header::AUTHORIZATION,
            "bearer  xyz ".parse().expect("h"),
        );
        assert_eq!(auth.token(&h), Some("xyz"), "the header wins");
        // A hostile "token" is refused before any parsing.
        let huge = "a".repeat(20 << 10);
        assert!(matches!(auth.verify(&huge).await, Err(Failure::Invalid(_))));
    }
}
