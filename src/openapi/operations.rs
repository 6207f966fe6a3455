//! One operation → one root field: its arguments (parameters and body), its `@rest`,
//! `@cache` or `@invalidates`, and its answer's type.

use super::*;

impl<'d, 'o> Generator<'d, 'o> {
    pub(super) fn params(&self, shared: &[&'d Value], op: &'d Value) -> Vec<Param<'d>> {
        let mut out: Vec<Param<'d>> = Vec::new();
        let own = op
            .get("parameters")
            .and_then(Value::as_array)
            .map(|p| p.iter().collect::<Vec<_>>())
            .unwrap_or_default();
        for raw in shared.iter().chain(own.iter()) {
            let p = self.docs.deref(raw);
            let (Some(name), Some(location)) = (
                p.get("name").and_then(Value::as_str),
                p.get("in").and_then(Value::as_str),
            ) else {
                continue;
            };
            let schema = match (self.version, location) {
                (Version::V2, "body") => p.get("schema"),
                (Version::V2, _) => Some(p),
                // A parameter with `content` (serialized as JSON text, say) instead of
                // `schema` has no schema the REST dialect can write: none.
                (Version::V3, _) => p.get("schema"),
            };
            let param = Param {
                name,
                location,
                required: location == "path"
                    || p.get("required").and_then(Value::as_bool) == Some(true),
                schema,
                raw: p,
            };
            // An operation's own parameter replaces the path's of the same name and place.
            out.retain(|q| !(q.name == name && q.location == location));
            out.push(param);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn operation(
        &mut self,
        op_name: &str,
        path: &'d str,
        method: &str,
        op: &'d Value,
        item: &'d Value,
        shared: &[&'d Value],
        names: &mut Taken,
    ) -> Result<RootField, String> {
        if !path.starts_with('/') {
            return Err("its path does not start with /".into());
        }
        let wanted = match op.get("operationId").and_then(Value::as_str) {
            Some(id) if !id.trim().is_empty() => camel(id),
            _ => camel(&format!("{method} {}", path_words(path))),
        };
        let name = names.take(&wanted);
        let mut comments = Vec::new();
        if name != wanted {
            comments.push(format!("{wanted} was taken"));
        }
        let params = self.params(shared, op);
        let mut arg_names = Taken::default();
        let mut args: Vec<String> = Vec::new();
        // param name (as the path writes it) → argument name
        let mut path_args: HashMap<&str, String> = HashMap::new();
        let mut query: Vec<(String, String)> = Vec::new();
        let mut join: Vec<(String, String)> = Vec::new();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body_schema: Option<(&'d Value, bool)> = None;
        let mut form_body = false;
        for p in &params {
            let hint = format!("{}{}", pascal(&name), pascal(p.name));
            match p.location {
                "path" | "query" | "header" => {}
                "body" => {
                    if let Some(s) = p.schema {
                        body_schema = Some((s, p.required));
                    }
                    continue;
                }
                "formData" => {
                    if p.required {
                        return Err("its request body is a form (formData), not JSON".into());
                    }
                    form_body = true;
                    continue;
                }
                other => {
                    if p.required {
                        return Err(format!(
                            "its required {other} parameter {} cannot be sent",
                            quote(p.name)
                        ));
                    }
                    comments.push(format!("{other} parameter {} left out", quote(p.name)));
                    continue;
                }
            }
            if p.location == "header" && OWN_HEADERS.contains(&p.name.to_ascii_lowercase().as_str())
            {
                // Sent by the client itself (credentials are forwarded: see
                // `forward_headers`).
                continue;
            }
            let unsendable = if p.location == "header" && !is_header_name(p.name) {
                Some("is not a valid header name")
            } else if p.schema.is_none() {
                Some("has no schema the REST dialect can write (`content` instead of `schema`)")
            } else if p.location == "path"
                && matches!(
                    p.raw.get("style").and_then(Value::as_str),
                    Some("matrix" | "label")
                )
            {
                Some("is in matrix or label style")
            } else {
                None
            };
            if let Some(why) = unsendable {
                if p.required {
                    return Err(format!(
                        "its {} parameter {} {why}",
                        p.location,
                        quote(p.name)
                    ));
                }
                comments.push(format!(
                    "{} parameter {} left out: it {why}",
                    p.location,
                    quote(p.name)
                ));
                continue;
            }
            let Some(schema) = p.schema else {
                continue;
            };
            let mut ty = self.types.input(schema, &hint);
            // A path's numeric id is an `ID` (what clients hold for it): either way it is
            // the same text in the path.
            if p.location == "path"
                && is_id_name(p.name)
                && matches!(ty.text.as_str(), "Int" | "String" | types::BIG_INT)
            {
                ty.text = "ID".into();
            }
            let is_list = ty.text.starts_with('[');
            let style = p.raw.get("style").and_then(Value::as_str);
            if matches!(style, Some("deepObject")) || self.is_object(schema) {
                if p.required {
                    return Err(format!(
                        "its {} parameter {} is an object, which a query string cannot carry here",
                        p.location,
                        quote(p.name)
                    ));
                }
                comments.push(format!("object parameter {} left out", quote(p.name)));
                continue;
            }
            if p.location == "path" && is_list {
                return Err(format!("its path parameter {} is a list", quote(p.name)));
            }
            if p.location == "header" && is_list {
                // A header carries a list as one comma-separated value (`simple` style):
                // the client writes it so.
                comments.push(format!(
                    "header {}: a list, sent as the text given (comma-separated)",
                    quote(p.name)
                ));
                ty.text = "String".into();
            }
            let arg = arg_names.take(&camel(p.name));
            let default = self.default_literal(schema, &ty.text);
            let non_null = p.required && default.is_none();
            let mut text = format!("{arg}: {}{}", ty.text, if non_null { "!" } else { "" });
            if let Some(d) = &default {
                let _ = write!(text, " = {d}");
            }
            args.push(text);
            let template = format!("{{args.{arg}}}");
            match p.location {
                "path" => {
                    path_args.insert(p.name, arg);
                }
                "query" => {
                    if is_list {
                        if let Some(sep) = self.list_separator(p.raw) {
                            join.push((p.name.to_string(), sep.to_string()));
                        }
                    }
                    query.push((p.name.to_string(), template));
                }
                _ => headers.push((p.name.to_string(), template)),
            }
        }
        // A literal query in the path (`/{Bucket}?acl`, `/items?type=book`) is sent as
        // constant query parameters; a fragment is never sent by HTTP.
        if path.contains('#') {
            return Err("its path has a fragment (#…), which HTTP does not send".into());
        }
        let (path_only, literal_query) = path.split_once('?').unwrap_or((path, ""));
        for pair in literal_query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name.contains('{') || value.contains('{') {
                return Err("its path's query has a parameter in it".into());
            }
            query.push((name.to_string(), value.to_string()));
        }
        // The path, each `{name}` an argument (declared or not).
        let rest_path = placeholders(path_only, |pname| {
            let arg = match path_args.get(pname) {
                Some(a) => a.clone(),
                None => {
                    let a = arg_names.take(&camel(pname));
                    let ty = if is_id_name(pname) { "ID" } else { "String" };
                    args.push(format!("{a}: {ty}!"));
                    path_args.insert(pname, a.clone());
                    a
                }
            };
            format!("{{args.{arg}}}")
        })
        .ok_or("its path has an unclosed {")?;
        // The request body.
        let mut body = None;
        if self.version == Version::V3 {
            if let Some(rb) = op.get("requestBody") {
                let rb = self.docs.deref(rb);
                let required = rb.get("required").and_then(Value::as_bool) == Some(true);
                match json_media(rb.get("content")) {
                    Media::Json(schema) => {
                        body_schema = Some((schema.unwrap_or(&Value::Null), required))
                    }
                    Media::Other(kind) if required => {
                        return Err(format!("its request body is {kind}, not JSON"));
                    }
                    Media::Other(kind) => {
                        comments.push(format!("optional {kind} request body left out"))
                    }
                    Media::None => {}
                }
            }
        } else if form_body {
            comments.push("optional form parameters left out".into());
        }
        if method == "get" && body_schema.is_some() {
            // A GET carries no body (the gateway sends none).
            if body_schema.is_some_and(|(_, required)| required) {
                return Err("it is a GET with a required request body".into());
            }
            comments.push("optional request body of a GET left out".into());
            body_schema = None;
        }
        if let Some((schema, required)) = body_schema {
            // A JSON body with no schema is any JSON (the scalar declared as for any use).
            let ty = if schema.is_null() {
                self.types.json_scalar()
            } else {
                self.types.input(schema, &pascal(&name)).text
            };
            let arg = arg_names.take("input");
            args.push(format!("{arg}: {ty}{}", if required { "!" } else { "" }));
            body = Some(format!("{{args.{arg}}}"));
        }
        // The answer.
        let (ty, response) = self.response(op, &name)?;
        let mut directives: Vec<String> = Vec::new();
        let upstream = self.upstream_of(op, item)?;
        let mut rest = format!("@rest(upstream: {}", quote(&upstream));
        if method != "get" {
            let _ = write!(rest, ", method: {}", method.to_ascii_uppercase());
        }
        let _ = write!(rest, ", path: {}", quote(&rest_path));
        if !query.is_empty() {
            let _ = write!(rest, ", query: {}", pairs(&query));
        }
        if !join.is_empty() {
            let _ = write!(rest, ", join: {}", pairs(&join));
        }
        if !headers.is_empty() {
            let _ = write!(rest, ", headers: {}", name_value_list(&headers));
        }
        if let Some(b) = &body {
            let _ = write!(rest, ", body: {}", quote(b));
        }
        let errors = self.error_mapping(op);
        let tag = |p: &str| path_tag(p, &path_args);
        let live = if method == "get" {
            let mut tags = vec![tag(path)];
            for a in ancestors(path) {
                tags.push(format!("{}:*", tag(a)));
            }
            let mut cache = format!(
                "@cache(maxAge: {}, tags: [{}]",
                self.options.max_age,
                tags.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")
            );
            if self.is_private(op) {
                cache.push_str(", scope: PRIVATE");
            }
            cache.push(')');
            directives.push(cache);
            path.trim_end_matches('/').ends_with('}')
        } else {
            let mut tags = vec![tag(path)];
            if method != "post" {
                tags.push(format!("{}:*", tag(path)));
            }
            for a in ancestors(path) {
                tags.push(tag(a));
            }
            tags.dedup();
            directives.push(format!(
                "@invalidates(tags: [{}])",
                tags.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")
            ));
            false
        };
        if let Some(c) = response {
            comments.push(c);
        }
        let description = ["summary", "description"]
            .iter()
            .filter_map(|k| op.get(*k).and_then(Value::as_str))
            .map(str::trim)
            .find(|d| !d.is_empty())
            .map(str::to_string);
        Ok(RootField {
            op: op_name.to_string(),
            name,
            description,
            args,
            ty,
            rest,
            errors,
            directives,
            comments,
            live,
        })
    }

    /// Whether a parameter's schema is an object (which a query string does not carry).
    pub(super) fn is_object(&self, schema: &Value) -> bool {
        let s = self.docs.deref(schema);
        s.get("type").and_then(Value::as_str) == Some("object") || s.get("properties").is_some()
    }

    /// The separator a list query parameter is sent with, if one value (`explode: false`,
    /// or 2.0's `collectionFormat`); `None` repeats the parameter.
    pub(super) fn list_separator(&self, p: &Value) -> Option<&'static str> {
        match self.version {
            Version::V2 => match p.get("collectionFormat").and_then(Value::as_str) {
                Some("multi") => None,
                Some("ssv") => Some(" "),
                Some("tsv") => Some("\t"),
                Some("pipes") => Some("|"),
                _ => Some(","),
            },
            Version::V3 => {
                let style = p.get("style").and_then(Value::as_str).unwrap_or("form");
                let explode = p
                    .get("explode")
                    .and_then(Value::as_bool)
                    .unwrap_or(style == "form");
                match style {
                    "spaceDelimited" => Some(" "),
                    "pipeDelimited" => Some("|"),
                    _ if explode => None,
                    _ => Some(","),
                }
            }
        }
    }

    /// A parameter's `default` as a GraphQL literal of type `ty`, when it is one.
    pub(super) fn default_literal(&self, schema: &Value, ty: &str) -> Option<String> {
        let s = self.docs.deref(schema);
        let d = s.get("default").or_else(|| schema.get("default"))?;
        literal(d, ty, &self.types.defs)
    }

    /// The answer's type, and a comment on it. Errors skip the operation.
    pub(super) fn response(
        &mut self,
        op: &'d Value,
        field: &str,
    ) -> Result<(String, Option<String>), String> {
        let responses = op.get("responses").and_then(Value::as_object);
        let mut codes: Vec<(&String, &'d Value)> = responses
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with('2'))
            .collect();
        codes.sort_by(|a, b| a.0.cmp(b.0));
        let chosen = codes.first().map(|(_, v)| *v).or_else(|| {
            // Only `default`: old documents describe success so.
            responses.and_then(|r| r.get("default"))
        });
        let Some(chosen) = chosen else {
            return Ok((
                self.json_type(),
                Some("no success response described: served as JSON".into()),
            ));
        };
        let resp = self.docs.deref(chosen);
        let schema = match self.version {
            Version::V2 => {
                let produces = op.get("produces").or_else(|| self.root().get("produces"));
                let json = produces.and_then(Value::as_array).is_none_or(|p| {
                    p.is_empty() || p.iter().filter_map(Value::as_str).any(is_json)
                });
                match resp.get("schema") {
                    Some(_) if !json => {
                        return Err("it answers in a format that is not JSON".into());
                    }
                    Some(s) => Some(s),
                    None => None,
                }
            }
            Version::V3 => match json_media(resp.get("content")) {
                Media::Json(s) => Some(s.unwrap_or(&Value::Null)),
                Media::Other(kind) => match self.plain_number(resp) {
                    // `text/plain` holding a number or a boolean (`$count` endpoints) is
                    // JSON text as it is.
                    Some(s) => Some(s),
                    None => return Err(format!("it answers {kind}, not JSON")),
                },
                Media::None => None,
            },
        };
        match schema {
            Some(s) if !s.is_null() => {
                let own = format!("{}Result", pascal(field));
                let ty = self.types.output(s, &own);
                let headers: Vec<(&str, &Value)> = resp
                    .get("headers")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| {
                        is_header_name(name) && !name.eq_ignore_ascii_case("content-type")
                    })
                    .map(|(name, h)| (name.as_str(), h))
                    .collect();
                if headers.is_empty() {
                    return Ok((ty.text, None));
                }
                let hint = format!("{}Response", pascal(field));
                let in_place = ty.text == own && s.get("$ref").is_none();
                match self.types.with_headers(&ty.text, &hint, &headers, in_place) {
                    Some(wrapper) => Ok((wrapper, None)),
                    None => Ok((
                        ty.text,
                        Some(
                            "its response headers are not served: the body is not an object".into(),
                        ),
                    )),
                }
            }
            _ => Ok((self.json_type(), None)),
        }
    }

    /// The schema of a `text/plain` answer that is a number or a boolean, whose text is
    /// JSON as it is (`42`, `true`).
    pub(super) fn plain_number(&self, resp: &'d Value) -> Option<&'d Value> {
        let schema = resp.get("content")?.get("text/plain")?.get("schema")?;
        let ty = self.docs.deref(schema).get("type")?.as_str()?;
        matches!(ty, "integer" | "number" | "boolean").then_some(schema)
    }

    pub(super) fn json_type(&mut self) -> String {
        self.types.json_scalar()
    }
}
