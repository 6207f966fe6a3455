//! Response headers as fields: the answer's object type, or a `…Response` twin of it,
//! with a field per declared header (`@map(header:)`, `Link` relations by `@map(link:)`).

use super::*;

impl<'d> Types<'d> {
    /// A type with the fields of object type `base` and one per response header the
    /// answer declares (`X-Total-Count` → `xTotalCount: Int @map(header: …)`; `Link` →
    /// its `next`, `prev`, `first` and `last` URLs): `None` when `base` is no object type.
    pub fn with_headers(
        &mut self,
        base: &str,
        hint: &str,
        headers: &[(&'d str, &'d Value)],
        in_place: bool,
    ) -> Option<String> {
        let key = (
            base.to_string(),
            headers
                .iter()
                .map(|(h, _)| h.to_ascii_lowercase())
                .collect::<Vec<_>>(),
        );
        if let Some(done) = self.wrappers.get(&key) {
            return Some(done.clone());
        }
        let Some(Def::Object {
            description: d,
            fields,
            ..
        }) = self.defs.get(base)
        else {
            return None;
        };
        let about = d.clone();
        let mut fields = fields.clone();
        let mut taken = Taken::default();
        for f in fields.iter().filter(|f| !f.name.is_empty()) {
            taken.take(&f.name);
        }
        for (header, schema) in headers {
            let schema = self.docs.deref(schema);
            if header.eq_ignore_ascii_case("link") {
                for rel in ["next", "prev", "first", "last"] {
                    fields.push(Field {
                        name: taken.take(rel),
                        ty: "String".into(),
                        description: Some(format!("The `{rel}` URL of the `Link` header.")),
                        directives: format!(" @map(link: {})", quote(rel)),
                        comment: None,
                    });
                }
                continue;
            }
            // 3.x puts the type in `schema`; 2.0 on the header itself.
            let s = schema
                .get("schema")
                .map(|s| self.docs.deref(s))
                .unwrap_or(schema);
            // A number type reads the header as a number; anything else as its text.
            let ty = match self.shape(s) {
                Shape::Scalar(BIG_INT) => self.scalar(BIG_INT),
                Shape::Scalar(n @ ("Int" | "Float")) => n.to_string(),
                _ => "String".into(),
            };
            fields.push(Field {
                name: taken.take(&camel(header)),
                ty,
                description: description(schema),
                directives: format!(" @map(header: {})", quote(header)),
                comment: None,
            });
        }
        // The answer's own inline type takes the headers itself; a named one stays as
        // it is for its other uses, and a new type has both.
        let name = if in_place {
            base.to_string()
        } else {
            self.type_name(hint, hint).0
        };
        self.wrappers.insert(key, name.clone());
        self.defs.insert(
            name.clone(),
            Def::Object {
                description: about,
                fields,
                comment: None,
                implements: Vec::new(),
            },
        );
        Some(name)
    }
}
