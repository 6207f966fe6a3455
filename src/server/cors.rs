//! Cross-origin access for browser apps on other origins (`--cors-origin`): CORS on
//! `/graphql` (preflight and responses, HTTP and SSE, via tower-http), and the same rule
//! for WebSocket upgrades, which browsers do not subject to CORS: an upgrade whose
//! `Origin` is neither the gateway's own nor allowed is refused with 403, so another site
//! cannot open a socket that carries the user's cookies. Clients that send no `Origin`
//! (servers, CLI tools) are not affected. Off by default: same origin only.

use axum::http::{HeaderMap, HeaderValue, Method};
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowOrigin, Any, CorsLayer};

#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// `*`: any origin (then without credentials).
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    /// From `--cors-origin` values: `*`, or origins like `https://app.example.com`.
    pub fn new(values: &[String]) -> Result<Cors, String> {
        let mut cors = Cors::default();
        for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            if v == "*" {
                cors.any = true;
                continue;
            }
            let url = url::Url::parse(v).map_err(|e| format!("--cors-origin {v:?}: {e}"))?;
            let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
            if !matches!(url.scheme(), "http" | "https") || !bare || v.ends_with('/') {
                return Err(format!(
                    "--cors-origin {v:?}: an origin is scheme://host[:port], like https://app.example.com"
                ));
            }
            let value =
                HeaderValue::from_str(v).map_err(|e| format!("--cors-origin {v:?}: {e}"))?;
            cors.origins.push(value);
        }
        Ok(cors)
    }

    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// The CORS layer for `/graphql`, if any origin is allowed.
    pub fn layer(&self) -> Option<CorsLayer> {
        let base = CorsLayer::new()
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .max_age(Duration::from_secs(600));
        if self.any {
            Some(base.allow_origin(Any).allow_headers(Any))
        } else if !self.origins.is_empty() {
            Some(
                base.allow_origin(AllowOrigin::list(self.origins.clone()))
                    .allow_headers(AllowHeaders::mirror_request())
                    .allow_credentials(true),
            )
        } else {
            None
        }
    }

    /// May a WebSocket upgrade with these headers proceed?
    pub fn allows_socket(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return true;
        };
        if self.any || self.origins.iter().any(|o| o == origin) {
            return true;
        }
        // Same origin: the Origin's authority is the Host the browser connected to, or,
        // behind a proxy that rewrites Host, the X-Forwarded-Host it passes on (a page
        // cannot set that header on its own WebSocket handshake).
        let authority_of = |name: &str| {
            headers
                .get(name)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.split(',').next())
                .map(str::trim)
        };
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            });
        let Some(authority) = authority else {
            return false;
        };
        ["host", "x-forwarded-host"]
            .into_iter()
            .filter_map(authority_of)
            .any(|h| h.eq_ignore_ascii_case(&authority))
    }
}

#[cfg(test)]
mod tests {
    use super::Cors;
    use axum::http::HeaderMap;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert("origin", o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins_are_checked_at_start() {
        assert!(Cors::new(&["https://app.example.com".into()]).is_ok());
        assert!(Cors::new(&["http://localhost:5173".into(), "*".into()]).is_ok());
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://a.com/x",
            "ftp://a.com",
        ] {
            assert!(Cors::new(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sockets_from_other_origins_need_permission() {
        let none = Cors::new(&[]).expect("cors");
        assert!(
            none.allows_socket(&headers(None, "gw:4000")),
            "no Origin: not a browser"
        );
        assert!(
            none.allows_socket(&headers(Some("http://gw:4000"), "gw:4000")),
            "same origin"
        );
        assert!(!none.allows_socket(&headers(Some("https://evil.example"), "gw:4000")));
        let some = Cors::new(&["https://app.example.com".into()]).expect("cors");
        assert!(some.allows_socket(&headers(Some("https://app.example.com"), "gw:4000")));
        assert!(!some.allows_socket(&headers(Some("https://evil.example"), "gw:4000")));
        let mut proxied = headers(Some("https://gw.example.com"), "127.0.0.1:4000");
        proxied.insert("x-forwarded-host", "gw.example.com".parse().expect("h"));
        assert!(
            none.allows_socket(&proxied),
            "same origin behind a Host-rewriting proxy"
        );
        let any = Cors::new(&["*".into()]).expect("cors");
        assert!(any.allows_socket(&headers(Some("https://evil.example"), "gw:4000")));
    }
}
