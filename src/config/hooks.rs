//! `@webhook` on `extend schema`: a receiver of one service's webhooks — its path, its
//! signature scheme, the environment variable its secret is in, and what a delivery
//! invalidates.

use super::directives::ArgReader;
use super::Errors;
use async_graphql_parser::types::ConstDirective;
use async_graphql_parser::Positioned;

/// The signature schemes a receiver verifies.
pub const SCHEMES: [&str; 4] = ["GITHUB", "STRIPE", "STANDARD", "LIVEGATE"];

/// `@webhook(name, path, scheme, secretEnv, invalidates, when, toleranceS)`.
#[derive(Debug, Clone)]
pub struct WebhookDirective {
    pub name: Positioned<String>,
    pub path: Positioned<String>,
    pub scheme: Positioned<String>,
    pub secret_env: Positioned<String>,
    /// Tags each accepted delivery invalidates: templates of `{event.…}`.
    pub invalidates: Vec<Positioned<String>>,
    /// Deliveries whose members equal these (rendered) invalidate; all feed streams.
    pub when: Vec<(Positioned<String>, Positioned<String>)>,
    /// How far a signed timestamp may be from our clock (STRIPE, STANDARD, LIVEGATE).
    pub tolerance_s: Option<Positioned<u64>>,
}

pub fn webhook(d: &Positioned<ConstDirective>, errors: &mut Errors) -> Option<WebhookDirective> {
    let mut r = ArgReader::new(
        d,
        &[
            "name",
            "path",
            "scheme",
            "secretEnv",
            "invalidates",
            "when",
            "toleranceS",
        ],
        errors,
    );
    let name = r.required_string("name");
    let path = r.required_string("path");
    if r.get("scheme").is_none() {
        r.missing("scheme", &format!("one of {}", SCHEMES.join(", ")));
    }
    let scheme = r.enum_value("scheme", &SCHEMES);
    let secret_env = r.required_string("secretEnv");
    let invalidates = r.strings("invalidates");
    let when = r.string_pairs(
        "when",
        true,
        "an object of strings (or of objects of strings)",
        "an object of strings, like {action: \"opened\"}",
    );
    let tolerance_s = r.uint("toleranceS");
    Some(WebhookDirective {
        name: name?,
        path: path?,
        scheme: scheme?,
        secret_env: secret_env?,
        invalidates,
        when,
        tolerance_s,
    })
}
