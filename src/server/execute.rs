//! Running one operation for any transport: the whole-response cache first, then the
//! executor with a [`Deps`] collector, so callers learn what the result was built from
//! (the live hub watches those entries).

use super::AppState;
use crate::deps::{Dep, Deps, RootFetch};
use crate::resolve::ClientHeaders;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::json;
use std::sync::Arc;

/// One execution's outcome, serialised.
pub struct Executed {
    /// The GraphQL response as JSON bytes (a request error has no `data`).
    pub body: Bytes,
    /// Parse or validation failure: nothing was executed.
    pub request_error: bool,
    /// The cache entries the result was built from.
    pub keys: Arc<Vec<Dep>>,
    /// The root field's entry and how to fetch it again.
    pub root: Option<RootFetch>,
}

pub async fn run(state: &AppState, req: async_graphql::Request, headers: HeaderMap) -> Executed {
    let key = state.responses.key(&req, &headers);
    if let Some(hit) = key.as_ref().and_then(|k| state.responses.get(k)) {
        return Executed { body: hit.body, request_error: false, keys: hit.keys, root: hit.root };
    }
    let deps = Arc::new(Deps::default());
    let req = req.data(ClientHeaders(headers)).data(deps.clone());
    let mut response = state.schema.execute(req).await;
    crate::resolve::tidy_errors(&mut response.errors);
    // A request error (parse, validation) has errors and no data; field errors have a path.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    // Per the GraphQL spec, a request error has no `data` entry at all.
    let encoded = if request_error {
        serde_json::to_vec(&json!({ "errors": response.errors }))
    } else {
        serde_json::to_vec(&response)
    };
    let body = Bytes::from(encoded.unwrap_or_else(|e| {
        json!({"errors": [{"message": format!("the response could not be encoded: {e}")}]}).to_string().into_bytes()
    }));
    let gathered = deps.take();
    if let Some(key) = key {
        if response.errors.is_empty() {
            state.responses.put(key, body.clone(), &gathered);
        }
    }
    Executed { body, request_error, keys: gathered.keys, root: gathered.root }
}
