//! The engine in service: what running an operation needs (the dynamic schema that
//! validates, the runtime, the whole-response cache, the prepared documents, the
//! document limits), and its swap on a schema reload.

use super::limits;
use super::prepare::{validate, Executor};
use crate::resolve::Runtime;
use async_graphql_value::ConstValue;
use std::sync::Arc;

/// What running an operation needs, whichever transport (or the live hub) asks: below
/// the transports and the live hub, which both use it.
pub struct Engine {
    /// async-graphql's dynamic schema: parsing and validation only (see [`Gate`]).
    pub schema: async_graphql::dynamic::Schema,
    pub runtime: Arc<Runtime>,
    /// Whole responses of repeated queries.
    pub responses: Arc<crate::response_cache::ResponseCache>,
    /// Prepared documents.
    pub executor: Executor,
    pub limits: limits::DocumentLimits,
}

impl Engine {
    /// Whether `query` (its operation `operation_name`) parses and validates against this
    /// schema: what an APQ registration must do before it is kept. The text has passed
    /// [`limits::check_nesting`].
    pub async fn validates(&self, query: &str, operation_name: Option<&str>) -> bool {
        let Ok(doc) = async_graphql::parser::parse_query(query) else {
            return false;
        };
        !limits::spreads_too_deep(&doc)
            && validate(&self.schema, query, operation_name, doc)
                .await
                .is_ok()
    }
}

/// The engine in service, swapped whole when the schema is reloaded: a request runs on the
/// engine it took at its start; running subscriptions hear of a swap and move over.
pub struct Engines {
    current: std::sync::RwLock<Arc<Engine>>,
    swaps: tokio::sync::watch::Sender<u64>,
}

impl Engines {
    pub fn new(engine: Arc<Engine>) -> Self {
        Engines {
            current: std::sync::RwLock::new(engine),
            swaps: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn current(&self) -> Arc<Engine> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `engine` in service and tells the running subscriptions.
    pub fn replace(&self, engine: Arc<Engine>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = engine;
        self.swaps.send_modify(|n| *n += 1);
    }

    /// Changes each time an engine is put in service.
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }
}

/// The schema extension that stops every request after validation: async-graphql
/// parses and validates, livegate's executor runs.
pub struct Gate;

impl async_graphql::extensions::ExtensionFactory for Gate {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(GateExt)
    }
}

struct GateExt;

#[async_graphql::async_trait::async_trait]
impl async_graphql::extensions::Extension for GateExt {
    async fn execute(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: async_graphql::extensions::NextExecute<'_>,
    ) -> async_graphql::Response {
        let _ = (ctx, operation_name, next);
        async_graphql::Response::new(ConstValue::Null)
    }
}
