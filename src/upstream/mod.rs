//! Stage ⑤ — the outside world. [`http`] sends one planned request to a REST upstream and
//! returns its JSON, with every failure turned into an [`UpstreamError`] that says where
//! it came from and how.

pub mod batch;
pub mod guard;
pub mod http;
pub mod tls;

pub use self::http::{Answer, UpstreamClient, UpstreamRequest, Validators};
use std::sync::Arc;

/// `url` as it may be shown in a log line: no userinfo, no query string (API keys travel
/// there), no fragment. Clients never see even this; they get the upstream's name.
pub fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let secret_query = shown.query().is_some_and(|q| !q.is_empty());
    shown.set_query(None);
    shown.set_fragment(None);
    let mut out = shown.to_string();
    if secret_query {
        out.push_str("?…");
    }
    out
}

/// `message` (an error's text from a library that may quote the URL it was given) with
/// every secret part of `url` blanked: the URL itself, its query, its userinfo.
pub fn scrub(message: &str, url: &url::Url) -> String {
    let mut out = message.replace(url.as_str(), &redact(url));
    let secrets = [
        url.query().unwrap_or(""),
        url.password().unwrap_or(""),
        url.username(),
    ];
    for secret in secrets {
        // Short strings would blank ordinary words; a key or password is longer.
        if secret.len() >= 4 {
            out = out.replace(secret, "…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn redaction_keeps_where_and_drops_secrets() {
        let url =
            url::Url::parse("http://me:pa55word@api.example:8080/v1/reset?apikey=SECRET123#x")
                .expect("url");
        assert_eq!(super::redact(&url), "http://api.example:8080/v1/reset?…");
        let said = format!("error sending request for url ({url}): key apikey=SECRET123 for me");
        let scrubbed = super::scrub(&said, &url);
        assert!(
            !scrubbed.contains("SECRET123") && !scrubbed.contains("pa55word"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("api.example:8080/v1/reset"), "{scrubbed}");
    }
}

/// Why an upstream call gave no usable value. Cloneable, because one failed single-flight
/// fetch is the answer of every request that waited on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} is unavailable: {detail}")]
    Unavailable { upstream: String, detail: String },
    #[error("upstream {upstream} did not answer within {ms} ms")]
    Timeout { upstream: String, ms: u128 },
    #[error("{}", http_message(.upstream, *.status, .mapped.as_deref()))]
    HttpError {
        upstream: String,
        status: u16,
        /// What the error body said, by the field's error mapping.
        mapped: Option<Arc<Mapped>>,
    },
    #[error("upstream {upstream} sent a bad response: {detail}")]
    BadResponse { upstream: String, detail: String },
    #[error("upstream {upstream} sent more than {limit} bytes")]
    TooLarge { upstream: String, limit: usize },
    /// A request that could not even be built from the client's input (a path
    /// variable that is null, say): the client's fault, not the upstream's.
    #[error("{0}")]
    BadInput(String),
}

/// An upstream error body, read through an [`crate::plan::ErrorMapping`]: the message and
/// the extensions it gives (only the members the mapping names, never the whole body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub message: Option<String>,
    pub extensions: Vec<(String, serde_json::Value)>,
}

impl Mapped {
    /// What `body` (an error response's bytes) says by `mapping`; `None` when it is not
    /// JSON or the mapping finds nothing in it.
    pub fn read(body: &[u8], mapping: &crate::plan::ErrorMapping) -> Option<Mapped> {
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let at = |path: &[String]| {
            path.iter()
                .try_fold(&json, |v, m| v.get(m.as_str()))
                .filter(|v| !v.is_null())
        };
        let message = mapping.message.as_deref().and_then(at).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let extensions: Vec<(String, serde_json::Value)> = mapping
            .extensions
            .iter()
            .filter_map(|(name, path)| Some((name.clone(), at(path)?.clone())))
            .collect();
        (message.is_some() || !extensions.is_empty()).then_some(Mapped {
            message,
            extensions,
        })
    }

    /// The `code` extension the body gave, when it is a string.
    fn code(&self) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k == "code")
            .and_then(|(_, v)| v.as_str())
    }
}

fn http_message(upstream: &str, status: u16, mapped: Option<&Mapped>) -> String {
    match mapped.and_then(|m| m.message.as_deref()) {
        Some(message) => message.to_string(),
        None => format!("upstream {upstream} answered HTTP {status}"),
    }
}

impl UpstreamError {
    /// An HTTP error status, with nothing read from its body.
    pub fn http(upstream: &str, status: u16) -> UpstreamError {
        UpstreamError::HttpError {
            upstream: upstream.to_string(),
            status,
            mapped: None,
        }
    }

    /// The `extensions.code` a client sees. An upstream's 401 and 403 keep their meaning
    /// (`UNAUTHENTICATED`, `FORBIDDEN`); a code the error mapping read wins over both.
    pub fn code(&self) -> &str {
        match self {
            UpstreamError::Unavailable { .. } => "UPSTREAM_UNAVAILABLE",
            UpstreamError::Timeout { .. } => "UPSTREAM_TIMEOUT",
            UpstreamError::HttpError { mapped, status, .. } => {
                match mapped.as_deref().and_then(Mapped::code) {
                    Some(code) => code,
                    None if *status == 401 => "UNAUTHENTICATED",
                    None if *status == 403 => "FORBIDDEN",
                    None => "UPSTREAM_HTTP_ERROR",
                }
            }
            UpstreamError::BadResponse { .. } => "UPSTREAM_BAD_RESPONSE",
            UpstreamError::TooLarge { .. } => "UPSTREAM_TOO_LARGE",
            UpstreamError::BadInput(_) => "BAD_USER_INPUT",
        }
    }

    /// The upstream did not answer, or answered that it is failing: no answer, a
    /// timeout, a 5xx. What counts toward its circuit breaker (a 4xx is an answer).
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Unavailable { .. } | UpstreamError::Timeout { .. } => true,
            UpstreamError::HttpError { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// A failure that may pass if the request is sent again: no answer, a timed-out
    /// attempt, 502/503/504 (a 500 is the upstream's own fault, sent again it fails again).
    pub fn may_pass(&self) -> bool {
        match self {
            UpstreamError::Unavailable { .. } | UpstreamError::Timeout { .. } => true,
            UpstreamError::HttpError { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// A failure `stale-if-error` covers (RFC 5861: what would be a 500, 502, 503 or
    /// 504): an outage, or a body that was not what was promised. Not a 4xx (the upstream
    /// answered: the resource is gone, or forbidden) nor a request the client's input
    /// could not make.
    pub fn refresh_failed(&self) -> bool {
        self.is_outage()
            || matches!(
                self,
                UpstreamError::BadResponse { .. } | UpstreamError::TooLarge { .. }
            )
    }

    /// The one place an upstream error becomes a GraphQL error.
    pub fn to_graphql(&self) -> async_graphql::Error {
        let code = self.code().to_string();
        let (status, mapped) = match self {
            UpstreamError::HttpError { status, mapped, .. } => (Some(*status), mapped.as_deref()),
            _ => (None, None),
        };
        use async_graphql::ErrorExtensions;
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            for (name, value) in mapped.map(|m| m.extensions.as_slice()).unwrap_or_default() {
                if name != "code" && name != "status" {
                    if let Ok(v) = async_graphql::Value::from_json(value.clone()) {
                        ext.set(name.as_str(), v);
                    }
                }
            }
            ext.set("code", code);
            if let Some(status) = status {
                ext.set("status", status);
            }
        })
    }
}
