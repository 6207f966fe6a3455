//! What a plan is made of: upstreams, fields and their resolvers, types, live settings.
//! Built by [`super::build`], read by every later stage.

use super::*;

#[derive(Debug)]
pub struct UpstreamPlan {
    pub name: String,
    /// Base URL; a field's path is appended to its path.
    pub url: url::Url,
    pub timeout: Option<Duration>,
    /// `@upstream(maxConnections:)`: requests in flight at once (else
    /// `--upstream-max-connections`); more wait for one to finish, within their deadline.
    pub max_connections: Option<usize>,
    /// `@upstream(retries:)`: most retries of one idempotent request (else
    /// `--upstream-retries`).
    pub retries: Option<u32>,
    /// `@upstream(attemptTimeoutMs:)`: how long one attempt may take before it is
    /// abandoned and retried (else `--upstream-attempt-timeout-ms`).
    pub attempt_timeout: Option<Duration>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Client request headers passed on, lower-case names.
    pub forward_headers: Vec<http::HeaderName>,
    /// `@upstream(errors:)`: how this upstream's error bodies become GraphQL errors.
    pub errors: Option<Arc<ErrorMapping>>,
}

impl UpstreamPlan {
    /// A Redis server that services publish to (`redis://`, `rediss://`): an event source
    /// for `@stream`/`@updates(channel:|stream:)`, not a REST service.
    pub fn is_redis(&self) -> bool {
        matches!(self.url.scheme(), "redis" | "rediss")
    }

    /// A NATS server (`nats://`, `tls://`): an event source for `subject:`.
    pub fn is_nats(&self) -> bool {
        matches!(self.url.scheme(), "nats" | "tls")
    }
}

/// Where an upstream's JSON error body keeps what a client should see: the GraphQL
/// error's `message` and `extensions` members, each a path of member names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMapping {
    pub message: Option<Vec<String>>,
    pub extensions: Vec<(String, Vec<String>)>,
}

impl ErrorMapping {
    /// The mapping `d` says, or `None` (with an error at its position) for an empty path.
    pub(super) fn plan(
        directive: &str,
        d: &Positioned<config::ErrorsDirective>,
        errors: &mut Errors,
    ) -> Option<Arc<ErrorMapping>> {
        let mut ok = true;
        let mut path = |p: &Positioned<String>, what: &str| -> Vec<String> {
            if p.node.split('.').any(str::is_empty) {
                errors.push(
                    p.pos,
                    format!(
                        "@{directive}(errors: {{{what}: {:?}}}) must be a dotted path like \
                         \"error.message\"",
                        p.node
                    ),
                );
                ok = false;
            }
            p.node.split('.').map(str::to_string).collect()
        };
        let message = d.node.message.as_ref().map(|m| path(m, "message"));
        let extensions = d
            .node
            .extensions
            .iter()
            .map(|(k, p)| (k.node.clone(), path(p, &format!("extensions.{}", k.node))))
            .collect();
        ok.then(|| {
            Arc::new(ErrorMapping {
                message,
                extensions,
            })
        })
    }
}

#[derive(Debug, Clone)]
pub struct ArgPlan {
    /// An input field's `@map(from:)`: the member path it is sent as (else its name).
    pub member: Option<Vec<String>>,
    /// `@map(as: NUMBER)`: an integer's text goes out as a JSON number.
    pub number: bool,
    pub name: String,
    pub ty: TypeRef,
    pub default: Option<ConstValue>,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CachePlan {
    pub max_age: Duration,
    pub swr: Duration,
    pub tags: Vec<Template>,
    pub scope: Scope,
    /// `staleIfError`: how long past `maxAge` the value is served when refreshing fails.
    pub stale_if_error: Duration,
}

#[derive(Debug, Clone)]
pub struct FieldPlan {
    pub name: String,
    pub ty: TypeRef,
    pub args: Vec<ArgPlan>,
    pub description: Option<String>,
    pub deprecated: Option<Option<String>>,
    /// `None`: the value is read from the parent object under the field's name.
    pub rest: Option<RestPlan>,
    /// Tags dropped from the cache after this mutation succeeds.
    pub invalidates: Vec<Template>,
    /// A Subscription field: a live query of the Query field of the same name.
    pub live: Option<LivePlan>,
    /// A Query field whose cache entry an upstream socket patches while it is in use.
    pub updates: Option<Arc<UpdatesPlan>>,
    /// A Subscription field whose events are upstream socket messages.
    pub stream: Option<Arc<SourcePlan>>,
    /// Where a field without `@rest` reads its value in the parent's upstream data: its
    /// own name, or the path `@map(from:)` gives.
    pub member: Vec<Arc<str>>,
    /// What its caller must be (`@authenticated`, `@requiresScopes` on the field, on its
    /// type, on the interface field it implements); `None`: anyone.
    pub access: Option<Arc<Access>>,
}

/// What a caller must be to see a field or a type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// A verified token.
    pub authenticated: bool,
    /// Each `@requiresScopes`, all of which must hold: scope sets, one of which the token
    /// must grant whole.
    pub scopes: Vec<Vec<Vec<String>>>,
}

/// Why a caller may not see a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No verified token: `UNAUTHENTICATED`.
    Unauthenticated,
    /// A token without the scopes: `FORBIDDEN`.
    Forbidden,
}

impl Access {
    /// Whether a caller with `scopes` (`None`: anonymous) may see it.
    pub fn check(&self, scopes: Option<&[String]>) -> Result<(), Denied> {
        let Some(granted) = scopes else {
            return Err(Denied::Unauthenticated);
        };
        let holds = |sets: &Vec<Vec<String>>| {
            sets.iter()
                .any(|set| set.iter().all(|s| granted.iter().any(|g| g == s)))
        };
        if self.scopes.iter().all(holds) {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }

    /// Both requirements together.
    pub fn merge(&mut self, other: &Access) {
        self.authenticated |= other.authenticated;
        for s in &other.scopes {
            if !self.scopes.contains(s) {
                self.scopes.push(s.clone());
            }
        }
    }

    /// The words of an error for `denied` at `what` (`Query.orders`, `type Secret`).
    pub fn message(&self, denied: Denied, what: &str) -> String {
        match denied {
            Denied::Unauthenticated => {
                format!("{what} requires an authenticated caller: send a valid token")
            }
            Denied::Forbidden => {
                let sets: Vec<String> = self
                    .scopes
                    .iter()
                    .map(|sets| {
                        sets.iter()
                            .map(|set| set.join(" and "))
                            .collect::<Vec<_>>()
                            .join(", or ")
                    })
                    .collect();
                format!("{what} requires the scopes {}", sets.join("; and "))
            }
        }
    }
}

impl Denied {
    /// The error's `extensions.code`.
    pub fn code(self) -> &'static str {
        match self {
            Denied::Unauthenticated => "UNAUTHENTICATED",
            Denied::Forbidden => "FORBIDDEN",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LivePlan {
    /// Poll the upstream this often while the entry has subscribers.
    pub poll: Option<Duration>,
}

#[derive(Debug)]
pub enum TypePlanKind {
    Object {
        fields: Vec<Arc<FieldPlan>>,
        /// The interfaces it implements.
        implements: Vec<String>,
    },
    /// Its fields are declared for queries and introspection; values are resolved by
    /// the fields of the concrete object type [`Possible::type_of`] picks.
    Interface {
        fields: Vec<Arc<FieldPlan>>,
        possible: Possible,
    },
    Union {
        possible: Possible,
    },
    InputObject {
        fields: Vec<ArgPlan>,
    },
    Enum {
        values: Vec<String>,
        /// What the upstream says for each of `values` (its `@map(from:)`, else its name).
        upstream: Vec<String>,
    },
    Scalar,
}

#[derive(Debug)]
pub struct TypePlan {
    pub name: String,
    pub description: Option<String>,
    pub kind: TypePlanKind,
    /// `@authenticated`, `@requiresScopes` on the type (also folded into every field
    /// that returns it); `None`: anyone.
    pub access: Option<Arc<Access>>,
}

/// Everything the runtime needs to serve a schema.
#[derive(Debug)]
pub struct Plan {
    /// SHA-256 of the schema text it was loaded from (hex), for `livegate_schema_info`.
    pub source_hash: String,
    pub upstreams: IndexMap<String, Arc<UpstreamPlan>>,
    /// `@webhook` receivers, by name.
    pub webhooks: IndexMap<String, Arc<super::WebhookPlan>>,
    pub types: IndexMap<String, TypePlan>,
    pub query: String,
    pub mutation: Option<String>,
    pub subscription: Option<String>,
    /// `__schema`'s value and the introspection types' plans (also in `types`).
    pub introspection: introspection::Introspection,
}

impl Plan {
    /// Whether any type or field requires something of its caller.
    pub fn guarded(&self) -> bool {
        self.types.values().any(|t| {
            t.access.is_some()
                || match &t.kind {
                    TypePlanKind::Object { fields, .. }
                    | TypePlanKind::Interface { fields, .. } => {
                        fields.iter().any(|f| f.access.is_some())
                    }
                    _ => false,
                }
        })
    }

    /// A Subscription field by name.
    pub fn subscription_field(&self, name: &str) -> Option<&Arc<FieldPlan>> {
        let fields = self.object_fields(self.subscription.as_deref()?)?;
        fields.iter().find(|f| f.name == name)
    }

    pub fn object_fields(&self, type_name: &str) -> Option<&[Arc<FieldPlan>]> {
        match &self.types.get(type_name)?.kind {
            TypePlanKind::Object { fields, .. } => Some(fields),
            _ => None,
        }
    }

    /// The interface's or union's possible types, if `type_name` is one.
    pub fn possible(&self, type_name: &str) -> Option<&Possible> {
        match &self.types.get(type_name)?.kind {
            TypePlanKind::Interface { possible, .. } | TypePlanKind::Union { possible } => {
                Some(possible)
            }
            _ => None,
        }
    }

    /// The field `name` selected on a value of `type_name`: the object's own, or for an
    /// interface or union, the first possible type's field of that name (a selection in a
    /// fragment on one of them).
    pub fn field(&self, type_name: &str, name: &str) -> Option<&Arc<FieldPlan>> {
        if let Some(fields) = self.object_fields(type_name) {
            return fields.iter().find(|f| f.name == name);
        }
        let possible = self.possible(type_name)?;
        possible.types.iter().find_map(|t| {
            self.object_fields(t)
                .and_then(|fields| fields.iter().find(|f| f.name == name))
        })
    }
}
