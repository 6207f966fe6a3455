//! `@upstream` declarations → [`UpstreamPlan`]s: URLs (with their environment
//! overrides), static and forwarded headers, limits; and the lookup of the upstream a
//! directive names.

use super::*;

/// Deploy-time settings that change the plan: `LIVEGATE_UPSTREAM_<NAME>_URL` overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Upstream name (as written in the schema) → URL.
    pub upstream_urls: HashMap<String, String>,
    /// `@webhook(secretEnv:)` variable → its value.
    pub secrets: HashMap<String, String>,
}

impl Overrides {
    /// Reads `LIVEGATE_UPSTREAM_<NAME>_URL` (name upper-cased, `-` as `_`) from `vars`.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>, config: &Config) -> Self {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let mut upstream_urls = HashMap::new();
        for u in &config.upstreams {
            if let Some(url) = vars.get(&upstream_env_var(&u.node.name.node)) {
                upstream_urls.insert(u.node.name.node.clone(), url.clone());
            }
        }
        let secrets = config
            .webhooks
            .iter()
            .filter_map(|w| {
                let name = &w.node.secret_env.node;
                vars.get(name).map(|v| (name.clone(), v.clone()))
            })
            .collect();
        Overrides {
            upstream_urls,
            secrets,
        }
    }
}

/// The environment variable that overrides the URL of upstream `name`.
pub fn upstream_env_var(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LIVEGATE_UPSTREAM_{name}_URL")
}

pub(super) fn upstreams(
    config: &Config,
    overrides: &Overrides,
    errors: &mut Errors,
) -> IndexMap<String, Arc<UpstreamPlan>> {
    let mut out = IndexMap::new();
    for u in &config.upstreams {
        let d = &u.node;
        let name = d.name.node.clone();
        if out.contains_key(&name) {
            errors.push(
                d.name.pos,
                format!("@upstream(name: {name:?}) is defined twice"),
            );
            continue;
        }
        let (raw, source) = match overrides.upstream_urls.get(&name) {
            Some(url) => (url.clone(), format!(" (from {})", upstream_env_var(&name))),
            None => (d.url.node.clone(), String::new()),
        };
        let url = match url::Url::parse(&raw) {
            Ok(url)
                if matches!(
                    url.scheme(),
                    "http" | "https" | "redis" | "rediss" | "nats" | "tls"
                ) && url.host().is_some() =>
            {
                url
            }
            Ok(_) => {
                errors.push(d.url.pos, format!("@upstream(url: {raw:?}){source} must be an http:// or https:// URL with a host (or redis:// or nats:// for an event source)"));
                continue;
            }
            Err(e) => {
                errors.push(
                    d.url.pos,
                    format!("@upstream(url: {raw:?}){source} is not a valid URL: {e}"),
                );
                continue;
            }
        };
        let headers = d
            .headers
            .iter()
            .filter_map(|h| static_header(h, errors))
            .collect();
        let mut forward_headers = Vec::new();
        for h in &d.forward_headers {
            match http::HeaderName::from_bytes(h.node.as_bytes()) {
                Ok(n) => forward_headers.push(n),
                Err(_) => errors.push(
                    h.pos,
                    format!("forwardHeaders: {:?} is not a valid header name", h.node),
                ),
            }
        }
        // A count within bounds, or an error at its position.
        let mut bounded = |v: &Option<async_graphql_parser::Positioned<u64>>,
                           arg: &str,
                           range: std::ops::RangeInclusive<u64>| {
            let v = v.as_ref()?;
            if range.contains(&v.node) {
                return Some(v.node);
            }
            let (lo, hi) = (range.start(), range.end());
            let why = match hi {
                &u64::MAX => format!("@upstream({arg}:) must be at least {lo}"),
                _ => format!("@upstream({arg}:) must be {lo} to {hi}"),
            };
            errors.push(v.pos, why);
            None
        };
        let timeout = bounded(&d.timeout_ms, "timeoutMs", 1..=u64::MAX).map(Duration::from_millis);
        let max_connections = bounded(&d.max_connections, "maxConnections", 1..=u64::MAX)
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        let retries = bounded(&d.retries, "retries", 0..=10).map(|r| r as u32);
        let attempt_timeout = bounded(&d.attempt_timeout_ms, "attemptTimeoutMs", 1..=u64::MAX)
            .map(Duration::from_millis);
        let mapping = d
            .errors
            .as_ref()
            .and_then(|e| ErrorMapping::plan("upstream", e, errors));
        out.insert(
            name.clone(),
            Arc::new(UpstreamPlan {
                errors: mapping,
                name,
                url,
                timeout,
                max_connections,
                retries,
                attempt_timeout,
                headers,
                forward_headers,
            }),
        );
    }
    out
}

/// A header's name, or an error at its position.
pub(crate) fn header_name(h: &config::Header, errors: &mut Errors) -> Option<http::HeaderName> {
    http::HeaderName::from_bytes(h.name.node.as_bytes())
        .map_err(|_| {
            errors.push(
                h.name.pos,
                format!("{:?} is not a valid header name", h.name.node),
            )
        })
        .ok()
}

pub(super) fn static_header(
    h: &config::Header,
    errors: &mut Errors,
) -> Option<(http::HeaderName, http::HeaderValue)> {
    let name = header_name(h, errors)?;
    let value = http::HeaderValue::from_str(&h.value.node)
        .map_err(|_| {
            errors.push(
                h.value.pos,
                format!("header {name}: value is not valid in a header"),
            )
        })
        .ok()?;
    Some((name, value))
}

/// The `@upstream` a directive names, or the error that it names none. An upstream that
/// is declared but failed (a bad URL, say) has its own error already: no second one.
pub(super) fn upstream(
    ctx: &FieldCtx<'_>,
    name: &Positioned<String>,
    directive: &str,
    errors: &mut Errors,
) -> Option<Arc<UpstreamPlan>> {
    if let Some(u) = ctx.upstreams.get(&name.node) {
        return Some(u.clone());
    }
    let declared: Vec<&str> = ctx
        .config
        .upstreams
        .iter()
        .map(|u| u.node.name.node.as_str())
        .collect();
    let broken = ctx.config.broken_upstreams.contains(&name.node);
    if !declared.contains(&name.node.as_str()) && !broken {
        let known = if declared.is_empty() {
            "none".to_string()
        } else {
            declared.join(", ")
        };
        errors.push(
            name.pos,
            format!(
                "@{directive}(upstream: {:?}) names no @upstream; known: {known}",
                name.node
            ),
        );
    }
    None
}
