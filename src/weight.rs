//! What a parsed JSON value costs in memory: the weight of a cache entry. An upstream
//! body of N bytes parses into a tree that holds several times N (each value is a
//! tagged `serde_json::Value`, each object an `IndexMap` with its keys and an index, each
//! string and array an allocation of its own), so a budget counted in body bytes is not
//! the memory it allows. A leaf: it knows only `serde_json`.

use serde_json::Value;
use std::mem::size_of;

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
                // the entries vector (grown by doubling), and the index: a hash table of
                // `usize` slots, a power of two at most 7/8 full, with a control byte each
                // and a group's worth more.
                let keys: usize = map.keys().map(|k| allocation(k.len())).sum();
                let len = map.len();
                let entry = size_of::<String>() + size_of::<Value>() + 8;
                let entries = allocation(len.next_power_of_two() * entry);
                let buckets = if len < 4 {
                    4
                } else {
                    (len * 8).div_ceil(7).next_power_of_two()
                };
                let index = if len == 0 {
                    0
                } else {
                    allocation(buckets * 9 + 16)
                };
                keys + entries + index
            }
        });
    }
    total
}

/// What an allocation of `bytes` takes: small ones round up to the allocator's 16-byte
/// size classes, larger ones to classes about an eighth apart.
fn allocation(bytes: usize) -> usize {
    match bytes {
        0 => 0,
        1..=1024 => bytes.div_ceil(16) * 16,
        _ => bytes + bytes / 8,
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
