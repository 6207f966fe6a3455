//! `@webhook` receivers → [`WebhookPlan`]s: where a service's deliveries arrive, how
//! they are signed, the secret (from the environment), and the tags a delivery
//! invalidates (`{event.…}` templates, filtered by `when`).

use super::{Errors, Overrides};
use crate::config::Config;
use crate::template::{Root, Template};
use indexmap::IndexMap;
use std::sync::Arc;
use std::time::Duration;

/// How a service signs its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    GitHub,
    /// `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
    Stripe,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature:
    /// v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, the secret `whsec_<base64>`.
    Standard,
    /// livegate's own: `X-Livegate-Signature: t=…,v1=…` or `sha256=…`.
    Livegate,
}

/// One receiver.
#[derive(Debug)]
pub struct WebhookPlan {
    pub name: String,
    /// Where deliveries are POSTed (under `/hooks/`).
    pub path: String,
    pub scheme: Scheme,
    /// `None`: the variable `secret_env` names is not set; the receiver refuses
    /// everything (503) until it is.
    pub secret: Option<String>,
    pub secret_env: String,
    /// Tags invalidated by each accepted delivery that matches `when`.
    pub invalidates: Vec<Template>,
    pub when: Vec<(Vec<String>, Template)>,
    /// How far a signed timestamp may be from our clock.
    pub tolerance: Duration,
}

/// The receivers `config` declares.
pub(super) fn webhooks(
    config: &Config,
    overrides: &Overrides,
    errors: &mut Errors,
) -> IndexMap<String, Arc<WebhookPlan>> {
    let mut out: IndexMap<String, Arc<WebhookPlan>> = IndexMap::new();
    for w in &config.webhooks {
        let d = &w.node;
        let name = d.name.node.clone();
        if out.contains_key(&name) {
            errors.push(
                d.name.pos,
                format!("@webhook(name: {name:?}) is defined twice"),
            );
            continue;
        }
        let path = d.path.node.clone();
        let tail = path.strip_prefix("/hooks/").unwrap_or("");
        if tail.is_empty() || tail == "invalidate" || path.contains(['{', '?', '#', '*']) {
            errors.push(
                d.path.pos,
                format!("@webhook(path: {path:?}) must be a constant path under /hooks/ (not /hooks/invalidate, livegate's own)"),
            );
        }
        if out.values().any(|o| o.path == path) {
            errors.push(
                d.path.pos,
                format!("@webhook(path: {path:?}) is another receiver's path too"),
            );
        }
        let scheme = match d.scheme.node.as_str() {
            "GITHUB" => Scheme::GitHub,
            "STRIPE" => Scheme::Stripe,
            "STANDARD" => Scheme::Standard,
            _ => Scheme::Livegate,
        };
        let event_template = |t: &async_graphql_parser::Positioned<String>, errors: &mut Errors| {
            match Template::parse(&t.node) {
                Ok(parsed) if parsed.vars().all(|v| v.root == Root::Event) => Some(parsed),
                Ok(_) => {
                    errors.push(
                        t.pos,
                        format!(
                            "{:?}: a @webhook template reads the delivery: {{event.…}}",
                            t.node
                        ),
                    );
                    None
                }
                Err(e) => {
                    errors.push(t.pos, e);
                    None
                }
            }
        };
        let invalidates = d
            .invalidates
            .iter()
            .filter_map(|t| event_template(t, errors))
            .collect();
        let when = d
            .when
            .iter()
            .filter_map(|(k, v)| {
                event_template(v, errors)
                    .map(|t| (k.node.split('.').map(str::to_string).collect(), t))
            })
            .collect();
        let secret = overrides.secrets.get(&d.secret_env.node).cloned();
        // Accepted deliveries are remembered a day: a longer window would let a captured
        // delivery be replayed once they are forgotten.
        if let Some(t) = d.tolerance_s.as_ref().filter(|t| t.node > 12 * 3600) {
            errors.push(
                t.pos,
                format!(
                    "@webhook(toleranceS: {}) is at most 43200 (12 hours)",
                    t.node
                ),
            );
        }
        out.insert(
            name.clone(),
            Arc::new(WebhookPlan {
                name,
                path,
                scheme,
                secret,
                secret_env: d.secret_env.node.clone(),
                invalidates,
                when,
                tolerance: Duration::from_secs(d.tolerance_s.as_ref().map_or(300, |t| t.node)),
            }),
        );
    }
    out
}
