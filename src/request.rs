//! The request context: what travels with one operation from the transport that
//! received it down to every upstream request it causes (and into the keys that tell
//! callers apart: the whole-response cache's, a shared subscription's, a `PRIVATE`
//! entry's, a batch's).
//!
//! Today it carries the client's request headers — those that can change an upstream's
//! answer (credentials and forwarded headers). It is the one place to add what the next
//! features need to carry (a verified identity, a trace context, a deadline) without
//! changing the signatures between a transport and an upstream request. Cloning is one
//! reference count: long-lived subscriptions hold it for their life.

use crate::auth::Identity;
use http::{HeaderMap, HeaderName};
use std::sync::Arc;

/// Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One operation's context (see the module's documentation).
#[derive(Clone, Default)]
pub struct RequestContext {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    headers: HeaderMap,
    /// The verified caller, when a token was sent (and verification is on).
    identity: Option<Arc<Identity>>,
}

impl std::fmt::Debug for RequestContext {
    /// Header names only: values are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("headers", &self.inner.headers.keys().collect::<Vec<_>>())
            .field("identified", &self.inner.identity.is_some())
            .finish()
    }
}

impl RequestContext {
    /// The context of a request that ends with its response: its headers as received
    /// (moved, not copied).
    pub fn new(headers: HeaderMap) -> Self {
        RequestContext {
            inner: Arc::new(Inner {
                headers,
                identity: None,
            }),
        }
    }

    /// This context with `identity` as its verified caller.
    pub fn identified(self, identity: Option<Arc<Identity>>) -> Self {
        if identity.is_none() && self.inner.identity.is_none() {
            return self;
        }
        let headers = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.headers,
            Err(shared) => shared.headers.clone(),
        };
        RequestContext {
            inner: Arc::new(Inner { headers, identity }),
        }
    }

    /// The verified caller, if any.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.inner.identity.as_ref()
    }

    /// The context of a long-lived connection (a WebSocket, an SSE stream, a
    /// reservation): a copy of only the `kept` headers, in allocations of its own.
    /// hyper parses header values as slices of its connection's read buffer (16 KiB), so
    /// a connection that kept the request's `HeaderMap` kept that whole buffer alive;
    /// the copy holds only the bytes of the headers that can change an upstream's answer
    /// ([`crate::response_cache::ResponseCache::vary`]), nothing else.
    pub fn detached(headers: &HeaderMap, kept: &[HeaderName]) -> Self {
        let mut out = HeaderMap::new();
        for (name, value) in headers.iter().filter(|(n, _)| kept.contains(n)) {
            let Ok(name) = HeaderName::from_bytes(name.as_str().as_bytes()) else {
                continue;
            };
            if let Ok(mut v) = http::HeaderValue::from_bytes(value.as_bytes()) {
                v.set_sensitive(value.is_sensitive());
                out.append(name, v);
            }
        }
        Self::new(out)
    }

    /// The client's request headers (for a long-lived connection, those kept).
    pub fn headers(&self) -> &HeaderMap {
        &self.inner.headers
    }

    /// The values of the headers `names` (an upstream's `forwardHeaders`) this context
    /// carries, in order, as they are passed on upstream: hop-by-hop headers (RFC 9110
    /// §7.6.1) never are, whatever the schema says.
    pub fn forwarded<'a>(
        &'a self,
        names: &'a [HeaderName],
    ) -> impl Iterator<Item = (&'a HeaderName, &'a http::HeaderValue)> + 'a {
        names
            .iter()
            .filter(|n| !HOP_BY_HOP.contains(&n.as_str()))
            .flat_map(move |n| self.inner.headers.get_all(n).iter().map(move |v| (n, v)))
    }

    /// Appends what of this context tells callers apart for `vary` (the headers that can
    /// change an upstream's answer) to `parts`: each name, then its values.
    pub fn identity_parts<'a>(&'a self, vary: &'a [HeaderName], parts: &mut Vec<&'a [u8]>) {
        for name in vary {
            parts.push(name.as_str().as_bytes());
            for v in self.inner.headers.get_all(name) {
                parts.push(v.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_context_keeps_only_the_named_headers_and_their_sensitivity() {
        let mut h = HeaderMap::new();
        let mut auth = http::HeaderValue::from_static("Bearer t");
        auth.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, auth);
        h.append("x-tenant", http::HeaderValue::from_static("a"));
        h.append("x-tenant", http::HeaderValue::from_static("b"));
        h.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("ua"),
        );
        let kept = [
            http::header::AUTHORIZATION,
            HeaderName::from_static("x-tenant"),
        ];
        let ctx = RequestContext::detached(&h, &kept);
        assert_eq!(ctx.headers().len(), 3);
        assert!(ctx.headers().get(http::header::USER_AGENT).is_none());
        assert!(ctx.headers()[http::header::AUTHORIZATION].is_sensitive());
        assert_eq!(ctx.headers().get_all("x-tenant").iter().count(), 2);
        assert!(!format!("{ctx:?}").contains("Bearer"));
    }
}
