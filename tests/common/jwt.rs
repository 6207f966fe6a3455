//! Keys made by the test (RSA, P-256, Ed25519, a shared secret), tokens signed with
//! them, and a JWKS server whose keys a test can rotate or take down.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct Signer {
    pub alg: Algorithm,
    pub kid: Option<String>,
    key: EncodingKey,
    pub jwk: Value,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("random");
    b
}

impl Signer {
    fn with(alg: Algorithm, kid: &str, key: EncodingKey) -> Signer {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, alg).expect("jwk")).expect("json");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Signer {
            alg,
            kid: Some(kid.to_string()),
            key,
            jwk,
        }
    }

    pub fn rsa(kid: &str) -> Signer {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::Generate;
        let key = rsa::PrivateKey::generate();
        let der = key.to_pkcs1_der().expect("der");
        Signer::with(
            Algorithm::RS256,
            kid,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    }

    pub fn ec(kid: &str) -> Signer {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .expect("p-256 key");
        Signer::with(
            Algorithm::ES256,
            kid,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
    }

    pub fn ed(kid: &str) -> Signer {
        // PKCS#8 v1 of an Ed25519 seed (RFC 8410).
        let mut der = hex::decode("302e020100300506032b657004220420").expect("hex");
        der.extend_from_slice(&random::<32>());
        Signer::with(Algorithm::EdDSA, kid, EncodingKey::from_ed_der(&der))
    }

    pub fn hmac(secret: &str) -> Signer {
        Signer {
            alg: Algorithm::HS256,
            kid: None,
            key: EncodingKey::from_secret(secret.as_bytes()).expect("secret"),
            jwk: Value::Null,
        }
    }

    /// `claims` signed with this key (its `kid` in the header).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }

    /// `claims` signed with this key, the header saying `kid`.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims of `sub`, valid for `ttl` seconds from now (negative: expired that long ago).
pub fn claims(sub: &str, ttl: i64) -> Value {
    let exp = now() as i64 + ttl;
    json!({"sub": sub, "exp": exp, "iat": now()})
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| b64url(v.to_string().as_bytes());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

/// A JWKS endpoint on an ephemeral port: its keys can be replaced, and it can be made to
/// fail (503).
#[derive(Clone)]
pub struct Jwks {
    pub upstream: super::Upstream,
    keys: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
}

impl Jwks {
    pub async fn start(signers: &[&Signer]) -> Jwks {
        let keys: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(signers.iter().map(|s| s.jwk.clone()).collect()));
        let down = Arc::new(AtomicBool::new(false));
        let (k, d) = (keys.clone(), down.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (k, d) = (k.clone(), d.clone());
                async move {
                    if d.load(Ordering::SeqCst) {
                        return (http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    let keys = k.lock().expect("keys").clone();
                    (http::StatusCode::OK, json!({ "keys": keys }).to_string())
                }
            }),
        );
        let upstream = super::Upstream::start(app).await;
        Jwks {
            upstream,
            keys,
            down,
        }
    }

    pub fn url(&self) -> url::Url {
        format!("{}/.well-known/jwks.json", self.upstream.url())
            .parse()
            .expect("url")
    }

    pub fn set(&self, signers: &[&Signer]) {
        *self.keys.lock().expect("keys") = signers.iter().map(|s| s.jwk.clone()).collect();
    }

    pub fn down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.upstream.count()
    }
}

/// Unpadded base64url (RFC 4648 §5).
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
