//! `@rest(batchKey:)`: the misses of one batched field that arrive within a short window
//! become one upstream request (`/users?id=1&id=2`), whose items are matched back to
//! each waiter by `item[batchKey]`. Registration is synchronous, from inside resolvers,
//! so every sibling of one list resolution joins the same batch.

use crate::key::CacheKey;
use crate::template::scalar_text;
use crate::upstream::{Answer, UpstreamClient, UpstreamError, UpstreamRequest};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// What a batch needs to know beyond its requests.
#[derive(Clone)]
pub struct BatchSpec {
    /// The request without the batched parameter; identical for all members.
    pub base: UpstreamRequest,
    pub param: String,
    pub key_field: String,
    /// The field is a list: each waiter gets every matching item, not the first.
    pub list: bool,
    /// Where the list of items is in the answer (`select`).
    pub select: Vec<String>,
}

type Reply = oneshot::Sender<Result<Answer, UpstreamError>>;

struct Pending {
    spec: BatchSpec,
    waiters: Vec<(String, Reply)>,
}

#[derive(Clone)]
pub struct Batcher {
    window: Duration,
    client: UpstreamClient,
    pending: Arc<Mutex<HashMap<CacheKey, Pending>>>,
}

impl Batcher {
    pub fn new(client: UpstreamClient, window: Duration) -> Self {
        Batcher {
            window,
            client,
            pending: Arc::default(),
        }
    }

    /// Joins (or opens) the batch `group` with `value`; the receiver gets this value's
    /// share of the answer, and the size of the whole upstream body.
    pub fn join(
        &self,
        group: CacheKey,
        spec: BatchSpec,
        value: String,
    ) -> oneshot::Receiver<Result<Answer, UpstreamError>> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(&group) {
            Some(batch) => batch.waiters.push((value, tx)),
            None => {
                pending.insert(
                    group,
                    Pending {
                        spec,
                        waiters: vec![(value, tx)],
                    },
                );
                let all = self.pending.clone();
                let client = self.client.clone();
                let window = self.window;
                tokio::spawn(async move {
                    tokio::time::sleep(window).await;
                    let batch = all.lock().unwrap_or_else(|p| p.into_inner()).remove(&group);
                    if let Some(batch) = batch {
                        dispatch(&client, batch).await;
                    }
                });
            }
        }
        rx
    }
}

async fn dispatch(client: &UpstreamClient, batch: Pending) {
    let spec = batch.spec;
    let mut values: Vec<String> = batch.waiters.iter().map(|(v, _)| v.clone()).collect();
    values.sort_unstable();
    values.dedup();
    let mut req = spec.base.clone();
    {
        let mut pairs = req.url.query_pairs_mut();
        for v in &values {
            pairs.append_pair(&spec.param, v);
        }
    }
    let result = client
        .send(&req)
        .await
        .and_then(|answer| answer.select(&spec.select, &req.upstream.name))
        .and_then(|answer| match answer.value {
            Value::Array(items) => Ok((items, answer.shareable, answer.freshness)),
            other => Err(UpstreamError::BadResponse {
                upstream: req.upstream.name.clone(),
                detail: format!("a batched request must answer a list, got {}", kind(&other)),
            }),
        });
    match result {
        Err(e) => {
            for (_, tx) in batch.waiters {
                let _ = tx.send(Err(e.clone()));
            }
        }
        Ok((items, shareable, freshness)) => {
            let mut by_key: HashMap<String, Vec<&Value>> = HashMap::new();
            for item in &items {
                if let Some(k) = item.get(&spec.key_field).and_then(scalar_text) {
                    by_key.entry(k).or_default().push(item);
                }
            }
            for (v, tx) in batch.waiters {
                let found = by_key.get(&v);
                let share = if spec.list {
                    Value::Array(
                        found
                            .map(|f| f.iter().map(|i| (*i).clone()).collect())
                            .unwrap_or_default(),
                    )
                } else {
                    found
                        .and_then(|f| f.first())
                        .map(|i| (*i).clone())
                        .unwrap_or(Value::Null)
                };
                let _ = tx.send(Ok(Answer {
                    shareable,
                    freshness,
                    ..Answer::new(share)
                }));
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
