//! What a parsed JSON value costs in memory: the weight of a cache entry. An upstream
//! body of N bytes parses into a tree that holds several times N (each value is a
//! tagged `serde_json::Value`, each object an `IndexMap` with its keys and an index, each
//! string and array an allocation of its own), so a budget counted in body bytes is not
//! the memory it allows. A leaf: it knows only `serde_json`.

use serde_json::Value;
use std::mem::size_of;

/// What the allocator adds to each allocation, on average (size-class rounding and
/// headers).
const PER_ALLOCATION: usize = 16;

/// The heap bytes `value` holds (not counting its own root `Value`), walked without
/// recursion.
pub fn json(value: &Value) -> usize {
    let mut total = 0usize;
    let mut pending: Vec<&Value> = vec![value];
    while let Some(v) = pending.pop() {
        total = total.saturating_add(match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
            Value::String(s) => allocation(s.capacity()),
            Value::Array(items) => {
                pending.extend(items.iter());
                allocation(items.capacity() * size_of::<Value>())
            }
            Value::Object(map) => {
                pending.extend(map.values());
                // Each entry: its key (a `String` and its bytes), its value and hash in
                // the entries vector, and a slot of the index (with its load factor).
                let keys: usize = map.keys().map(|k| allocation(k.len())).sum();
                let entries = map.len() * (size_of::<String>() + size_of::<Value>() + 8);
                let index = map.len() * 8 * 8 / 7;
                keys + allocation(entries) + allocation(index)
            }
        });
    }
    total
}

fn allocation(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        bytes + PER_ALLOCATION
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parsed_body_weighs_more_than_its_bytes() {
        let items: Vec<serde_json::Value> = (0..1000)
            .map(|i| serde_json::json!({"id": i, "name": format!("item {i}"), "tags": ["a", "b"]}))
            .collect();
        let value = serde_json::Value::Array(items);
        let body = serde_json::to_vec(&value).expect("encodes");
        let weight = super::json(&value);
        assert!(weight > 4 * body.len(), "{weight} vs {}", body.len());
        assert_eq!(super::json(&serde_json::Value::Null), 0);
    }
}
