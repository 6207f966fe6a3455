//! The error mapping an operation's error responses describe (`{message, extensions}`).

use super::*;

impl<'d, 'o> Generator<'d, 'o> {
    /// The error mapping the operation's error responses describe.
    pub(super) fn error_mapping(&self, op: &Value) -> Option<String> {
        let responses = op.get("responses").and_then(Value::as_object)?;
        let mut keys: Vec<&String> = responses
            .keys()
            .filter(|k| k.starts_with('4') || k.starts_with('5') || *k == "default")
            .collect();
        keys.sort();
        for k in keys {
            let resp = self.docs.deref(&responses[k]);
            let schema = match self.version {
                Version::V2 => resp.get("schema"),
                Version::V3 => match json_media(resp.get("content")) {
                    Media::Json(s) => s,
                    _ => None,
                },
            };
            let Some(schema) = schema else { continue };
            if let Some(m) = self.mapping_of(schema) {
                return Some(m);
            }
        }
        None
    }

    /// `{message: "…", extensions: {…}}` for an error body schema with a message-like
    /// member.
    pub(super) fn mapping_of(&self, schema: &Value) -> Option<String> {
        let props = self.types.members(schema);
        let nested = |name: &str| {
            props
                .get(name)
                .map(|s| self.types.members(s))
                .unwrap_or_default()
        };
        let is_string = |s: &Value| {
            let s = self.docs.deref(s);
            s.get("type").and_then(Value::as_str) == Some("string")
                || s.get("type")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|t| t == "string"))
        };
        let (prefix, members) = if props.contains_key("error") && !is_string(props["error"]) {
            let inner = nested("error");
            if inner.is_empty() {
                ("", props.clone())
            } else {
                ("error.", inner)
            }
        } else {
            ("", props.clone())
        };
        let message = [
            "message",
            "detail",
            "title",
            "error_description",
            "error",
            "msg",
            "description",
        ]
        .iter()
        .find(|m| members.get(**m).is_some_and(|s| is_string(s)))?;
        let mut extensions = Vec::new();
        for (ext, candidates) in [
            ("code", &["code", "error_code", "errorCode", "type"][..]),
            (
                "details",
                &["details", "errors", "violations", "fields"][..],
            ),
        ] {
            if let Some(c) = candidates
                .iter()
                .find(|c| members.contains_key(**c) && **c != *message)
            {
                extensions.push(format!("{ext}: {}", quote(&format!("{prefix}{c}"))));
            }
        }
        let mut out = format!("{{message: {}", quote(&format!("{prefix}{message}")));
        if !extensions.is_empty() {
            let _ = write!(out, ", extensions: {{{}}}", extensions.join(", "));
        }
        out.push('}');
        Some(out)
    }
}
