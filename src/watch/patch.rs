//! `@updates(apply:)`: how one upstream message changes a cached value.

use crate::plan::Apply;
use crate::template::scalar_text;
use serde_json::Value;

fn same_key(a: &Value, b: &Value, key: &str) -> bool {
    match (
        a.get(key).and_then(scalar_text),
        b.get(key).and_then(scalar_text),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn merge(into: &mut Value, from: &Value) {
    if let (Value::Object(target), Value::Object(source)) = (into, from) {
        for (k, v) in source {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// The value after `message` is applied, or `None` when it does not apply (the value is
/// not of the shape the mode needs, or nothing changes). `Refetch` never patches.
pub fn apply(current: &Value, message: &Value, mode: Apply, key: Option<&str>) -> Option<Value> {
    let mut next = current.clone();
    match (mode, &mut next) {
        (Apply::Append, Value::Array(items)) => items.push(message.clone()),
        (Apply::Prepend, Value::Array(items)) => items.insert(0, message.clone()),
        (Apply::Upsert, Value::Array(items)) => {
            let key = key?;
            match items.iter_mut().find(|i| same_key(i, message, key)) {
                Some(item) => *item = message.clone(),
                None => items.push(message.clone()),
            }
        }
        (Apply::Remove, Value::Array(items)) => {
            let key = key?;
            items.retain(|i| !same_key(i, message, key));
        }
        (Apply::Merge, Value::Array(items)) => {
            let key = key?;
            let item = items.iter_mut().find(|i| same_key(i, message, key))?;
            merge(item, message);
        }
        (Apply::Merge, obj @ Value::Object(_)) => merge(obj, message),
        (Apply::Replace, v) => *v = message.clone(),
        _ => return None,
    }
    (next != *current).then_some(next)
}

/// The payload of `message` at `select` (the message itself when `select` is empty).
pub fn pick<'a>(message: &'a Value, select: &[String]) -> Option<&'a Value> {
    select
        .iter()
        .try_fold(message, |v, seg| v.get(seg.as_str()))
}

/// Whether each `when` member path has its value (compared as text: 1 = "1") in the
/// message as it arrived — or, where the message has nothing at that path, in the payload
/// `select` took from it (schemas whose `when` names the payload's members).
pub fn matches(message: &Value, payload: &Value, when: &[(Vec<String>, String)]) -> bool {
    when.iter().all(|(path, want)| {
        let at = |v: &Value| pick(v, path).and_then(scalar_text);
        at(message)
            .or_else(|| at(payload))
            .is_some_and(|v| &v == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_mode_does_what_it_says() {
        let list = json!([{"id": 1, "t": "a"}, {"id": 2, "t": "b"}]);
        let m = json!({"id": 2, "t": "B"});
        assert_eq!(
            apply(&list, &json!({"id": 3}), Apply::Append, None),
            Some(json!([{"id": 1, "t": "a"}, {"id": 2, "t": "b"}, {"id": 3}]))
        );
        assert_eq!(
            apply(&list, &json!({"id": 0}), Apply::Prepend, None),
            Some(json!([{"id": 0}, {"id": 1, "t": "a"}, {"id": 2, "t": "b"}]))
        );
        assert_eq!(
            apply(&list, &m, Apply::Upsert, Some("id")),
            Some(json!([{"id": 1, "t": "a"}, {"id": 2, "t": "B"}]))
        );
        assert_eq!(
            apply(
                &list,
                &json!({"id": "3", "t": "c"}),
                Apply::Upsert,
                Some("id")
            )
            .map(|v| v.as_array().map(Vec::len)),
            Some(Some(3))
        );
        assert_eq!(
            apply(&list, &json!({"id": "2"}), Apply::Remove, Some("id")),
            Some(json!([{"id": 1, "t": "a"}]))
        );
        assert_eq!(
            apply(&list, &json!({"id": 2, "x": 1}), Apply::Merge, Some("id")),
            Some(json!([{"id": 1, "t": "a"}, {"id": 2, "t": "b", "x": 1}]))
        );
        assert_eq!(
            apply(
                &json!({"a": 1, "b": 2}),
                &json!({"b": 3}),
                Apply::Merge,
                None
            ),
            Some(json!({"a": 1, "b": 3}))
        );
        assert_eq!(
            apply(&list, &json!({"z": 1}), Apply::Replace, None),
            Some(json!({"z": 1}))
        );
        // Nothing to do: no change, wrong shape, refetch.
        assert_eq!(
            apply(&list, &json!({"id": 9}), Apply::Remove, Some("id")),
            None
        );
        assert_eq!(apply(&json!({"a": 1}), &m, Apply::Append, None), None);
        assert_eq!(apply(&list, &m, Apply::Refetch, None), None);
    }

    #[test]
    fn selection_and_matching() {
        let msg = json!({"type": "message", "data": {"channel": "general", "id": 7}});
        let p = pick(&msg, &["data".into()]).expect("payload");
        let when = |pairs: &[(&str, &str)]| -> Vec<(Vec<String>, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.split('.').map(str::to_string).collect(), v.to_string()))
                .collect()
        };
        // Keys of the payload (found there, not in the message).
        assert!(matches(
            &msg,
            p,
            &when(&[("channel", "general"), ("id", "7")])
        ));
        assert!(!matches(&msg, p, &when(&[("channel", "random")])));
        // Keys of the message, nested ones too.
        assert!(matches(
            &msg,
            p,
            &when(&[("type", "message"), ("data.id", "7")])
        ));
        assert!(!matches(&msg, p, &when(&[("type", "typing")])));
        assert!(!matches(&msg, p, &when(&[("data.id", "8")])));
        assert!(pick(&msg, &["nope".into()]).is_none());
    }
}
