//! A socket's credentials: the headers its `connection_init` payload gives, and its
//! token, checked at `connection_init` (`4403` on graphql-transport-ws,
//! `connection_error` then `4403` on the legacy protocol), renewed on the open socket
//! without dropping its operations, and the socket's end when it runs out.
//!
//! Renewal: graphql-transport-ws clients send a `ping` whose payload carries the new
//! token as `connection_init`'s does (`{"Authorization": "Bearer …"}`, or under
//! `headers`); it is answered with a `pong` whose payload is `{"auth": "renewed",
//! "expires": exp}` or `{"auth": "rejected", "message": …}`. Legacy clients send a second
//! `connection_init`, answered `connection_ack` or `connection_error`. The new token must
//! be the same user's (`iss` and `sub`); operations already running keep the identity
//! they started with, new ones take the new one, and the socket now lives until the new
//! token's `exp` plus the leeway. A rejected renewal changes nothing.

use super::*;
use crate::auth::Failure;

impl Connection {
    /// `connection_init`'s payload is available to resolvers as request headers: its
    /// `headers` object and its top-level string members (`{"Authorization": "Bearer …"}`);
    /// of them, those that can change an upstream's answer are kept.
    pub(super) fn take_init_payload(&mut self, payload: Option<&Value>) {
        let telemetry = &self.state.runtime.telemetry;
        if telemetry.is_on() {
            self.trace = payload
                .and_then(|p| telemetry.extract_json(p))
                .or_else(|| telemetry.extract(self.ctx.headers()));
        }
        if let Some(headers) = self.init_headers(payload) {
            self.ctx = RequestContext::new(headers);
        }
    }

    /// The connection's headers with those `payload` gives (see
    /// [`Self::take_init_payload`]); `None` when it is not an object.
    pub(super) fn init_headers(&self, payload: Option<&Value>) -> Option<http::HeaderMap> {
        let engine = self.state.engine();
        let kept = engine.responses.vary();
        let Some(Value::Object(map)) = payload else {
            return None;
        };
        let nested = map
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        let mut headers = self.ctx.headers().clone();
        for (k, v) in map.iter().chain(nested) {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                if kept.contains(&name) {
                    headers.insert(name, value);
                }
            }
        }
        Some(headers)
    }

    /// Verifies the token the connection's headers carry (its upgrade request's and its
    /// `connection_init` payload's): the context then carries the caller, and the socket
    /// ends when the token does.
    pub(super) async fn authenticate(&mut self) -> Result<(), Failure> {
        let identity = self.state.auth.identify(self.ctx.headers()).await?;
        self.expires = identity.as_deref().map(|i| self.state.auth.deadline(i));
        self.ctx = self.ctx.clone().identified(identity);
        Ok(())
    }

    /// A renewal with the token `payload` carries: the answer's payload.
    pub(super) async fn renew(&mut self, payload: Option<&Value>) -> Value {
        let rejected = |why: String| json!({"auth": "rejected", "message": why});
        let Some(headers) = self.init_headers(payload) else {
            return rejected("send the new token as connection_init's payload does".into());
        };
        let identity = match self.state.auth.identify(&headers).await {
            Ok(Some(identity)) => identity,
            Ok(None) => return rejected("no token to renew with (or verification is off)".into()),
            Err(failure) => return rejected(failure.message()),
        };
        if let Some(current) = self.ctx.identity() {
            if current.subject != identity.subject {
                return rejected("the new token is another user's: open a new connection".into());
            }
        }
        self.expires = Some(self.state.auth.deadline(&identity));
        let expires = identity.expires;
        self.ctx = RequestContext::new(headers).identified(Some(identity));
        json!({"auth": "renewed", "expires": expires})
    }

    /// The token ran out: the socket closes (its operations end with it).
    pub(super) async fn expired(&mut self) {
        self.state.auth.count(Failure::Expired.label());
        let why = Failure::Expired.message();
        if self.protocol == Protocol::Legacy {
            let payload = json!({"message": why, "extensions": {"code": "UNAUTHENTICATED"}});
            self.tx
                .json(json!({"type": "connection_error", "payload": payload}))
                .await;
        }
        self.tx.close(4403, &format!("Forbidden: {why}"));
    }
}

/// Whether a `ping` payload carries a token (else it is echoed in the `pong`).
pub(super) fn carries_token(payload: Option<&Value>) -> bool {
    let has = |v: Option<&Value>| {
        v.and_then(Value::as_object).is_some_and(|m| {
            m.keys().any(|k| {
                k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie")
            })
        })
    };
    has(payload) || has(payload.and_then(|p| p.get("headers")))
}
