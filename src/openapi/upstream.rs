//! The upstream(s): name, URL, the credentials forwarded, per-caller answers.

use super::*;

impl<'d, 'o> Generator<'d, 'o> {
    pub(super) fn upstream_name(&self) -> String {
        if let Some(n) = &self.options.name {
            return n.clone();
        }
        let title = self
            .root()
            .get("info")
            .and_then(|i| i.get("title"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // The title's first phrase, at most three words: "Swagger Petstore - OpenAPI
        // 3.0" → `swagger-petstore`, "GitHub's official …" → `github`.
        let phrase = title
            .trim()
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == ' ' || c == '_'))
            .next()
            .unwrap_or("");
        let words: Vec<String> = phrase
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(3)
            .map(str::to_ascii_lowercase)
            .collect();
        if words.is_empty() {
            "api".into()
        } else {
            words.join("-")
        }
    }

    pub(super) fn upstream_url(&mut self) -> String {
        if let Some(u) = &self.options.base_url {
            return u.trim_end_matches('/').to_string();
        }
        let root = self.root();
        let url = match self.version {
            Version::V3 => {
                let server = root
                    .get("servers")
                    .and_then(Value::as_array)
                    .and_then(|s| s.first());
                server.and_then(server_url)
            }
            Version::V2 => {
                let host = root.get("host").and_then(Value::as_str);
                let base = root.get("basePath").and_then(Value::as_str).unwrap_or("");
                let scheme = root
                    .get("schemes")
                    .and_then(Value::as_array)
                    .and_then(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .find(|s| *s == "https")
                            .or_else(|| s.iter().filter_map(Value::as_str).next())
                    })
                    .unwrap_or("https");
                match host {
                    Some(h) => Some(format!("{scheme}://{h}{base}")),
                    None => Some(base.to_string()),
                }
            }
        };
        let url = url.unwrap_or_default();
        let url = url.trim_end_matches('/');
        if url.starts_with("http://") || url.starts_with("https://") {
            return url.to_string();
        }
        if let Some(rest) = url.strip_prefix("//") {
            // Protocol-relative: the document was served over HTTPS, most likely.
            return format!("https://{rest}");
        }
        if url.is_empty() {
            self.warnings.push(format!(
                "the document names no server: using http://localhost (set --base-url, or {} when serving)",
                crate::plan::upstream_env_var(&self.upstream)
            ));
            return "http://localhost".into();
        }
        let absolute = format!(
            "http://localhost{}{}",
            if url.starts_with('/') || url.is_empty() {
                ""
            } else {
                "/"
            },
            url
        );
        self.warnings.push(format!(
            "the document's server URL {} is not absolute: using {} (set --base-url, or {} when serving)",
            quote(url),
            absolute,
            crate::plan::upstream_env_var(&self.upstream)
        ));
        absolute
    }

    /// The upstream an operation goes to: the document's, or another one for an absolute
    /// server the operation or its path names (`servers:` on either), made once.
    pub(super) fn upstream_of(&mut self, op: &Value, item: &Value) -> Result<String, String> {
        if self.options.base_url.is_some() || self.version == Version::V2 {
            return Ok(self.upstream.clone());
        }
        let own = op
            .get("servers")
            .or_else(|| item.get("servers"))
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(server_url);
        let Some(url) = own.filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        else {
            return Ok(self.upstream.clone());
        };
        if url == self.url {
            return Ok(self.upstream.clone());
        }
        if let Some((name, _)) = self.extra.iter().find(|(_, u)| *u == url) {
            return Ok(name.clone());
        }
        let name = format!("{}-{}", self.upstream, self.extra.len() + 2);
        self.extra.push((name.clone(), url));
        Ok(name)
    }

    /// The client headers the API's security schemes read, lowercased and sorted.
    pub(super) fn forward_headers(&mut self) -> Vec<String> {
        let root = self.root();
        let schemes = match self.version {
            Version::V3 => root.pointer("/components/securitySchemes"),
            Version::V2 => root.get("securityDefinitions"),
        };
        let mut out = BTreeSet::new();
        for (_, scheme) in schemes.and_then(Value::as_object).into_iter().flatten() {
            let scheme = self.docs.deref(scheme);
            let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "apiKey" => match scheme.get("in").and_then(Value::as_str) {
                    Some("header") => {
                        if let Some(n) = scheme.get("name").and_then(Value::as_str) {
                            if is_header_name(n) {
                                out.insert(n.to_ascii_lowercase());
                            }
                        }
                    }
                    Some("cookie") => {
                        out.insert("cookie".to_string());
                    }
                    _ => self.warnings.push(format!(
                        "security scheme {} sends its key in the query string, which livegate does not forward: add it to the operations' `query:` (or to the upstream's URL) yourself",
                        quote(scheme.get("name").and_then(Value::as_str).unwrap_or("?"))
                    )),
                },
                "http" | "oauth2" | "openIdConnect" | "basic" => {
                    out.insert("authorization".to_string());
                }
                _ => {}
            }
        }
        // Credentials an operation declares as a header parameter, scheme or not: they
        // are no argument (the client sends them), so they are forwarded.
        for item in root
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let item = self.docs.deref(item.1);
            let ops = item.as_object().into_iter().flatten().map(|(_, op)| op);
            for params in std::iter::once(item)
                .chain(ops)
                .filter_map(|v| v.get("parameters"))
            {
                for p in params.as_array().into_iter().flatten() {
                    let p = self.docs.deref(p);
                    let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                    if p.get("in").and_then(Value::as_str) == Some("header")
                        && ["authorization", "cookie"].contains(&name.to_ascii_lowercase().as_str())
                    {
                        out.insert(name.to_ascii_lowercase());
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Whether the operation (or, when it says nothing, the document) requires
    /// credentials: its answers are then per caller.
    pub(super) fn is_private(&self, op: &Value) -> bool {
        let requirement = op.get("security").or_else(|| self.root().get("security"));
        requirement
            .and_then(Value::as_array)
            .is_some_and(|alternatives| {
                !alternatives.is_empty()
                    && alternatives
                        .iter()
                        .all(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            })
    }
}
