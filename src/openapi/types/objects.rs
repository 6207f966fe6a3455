//! Object, input and enum types: their fields (members renamed to camelCase with
//! `@map(from:)`, nullability, `ID`s) and their names.

use super::*;

impl<'d> Types<'d> {
    /// An object type for `s`, named and registered before its fields are made (so a
    /// cycle through it is a reference to it).
    pub(super) fn object(
        &mut self,
        s: &'d Value,
        loc: Option<Loc>,
        named_as: Option<String>,
        hint: &str,
        hint_name: &str,
        merged: Merged<'d>,
    ) -> String {
        let from = named_as.as_deref().unwrap_or(hint);
        let (name, comment) = self.type_name(hint_name, from);
        self.record(s, loc.clone(), &name, false);
        let fields = self.object_fields(&name, &merged, false);
        if fields.iter().all(|f| f.name.is_empty()) {
            // Nothing it can serve (every member write-only or unnamable): `JSON`, and so
            // wherever it is met again. (The name stays taken: the output must not
            // depend on the order.)
            let json = self.json_scalar();
            self.record(s, loc, &json, false);
            return json;
        }
        self.defs.insert(
            name.clone(),
            Def::Object {
                description: merged_description(&merged, s),
                fields,
                comment: comment.filter(|_| named_as.is_some()),
                implements: Vec::new(),
            },
        );
        name
    }

    /// Records the type `s` (at `loc`, or inline) is served (or, `input`, sent) as.
    pub(super) fn record(&mut self, s: &'d Value, loc: Option<Loc>, name: &str, input: bool) {
        let name = name.to_string();
        match (loc, input) {
            (Some(loc), false) => self.outputs.insert(loc, name),
            (Some(loc), true) => self.inputs.insert(loc, name),
            (None, false) => self.inline_outputs.insert(s as *const Value, name),
            (None, true) => self.inline_inputs.insert(s as *const Value, name),
        };
    }

    pub(super) fn enumeration(&mut self, values: Vec<String>, hint: &str, s: &Value) -> String {
        if let Some(name) = self.enums.get(&values) {
            return name.clone();
        }
        let (name, _) = self.type_name(hint, hint);
        let mut taken = Taken::default();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for v in &values {
            if !seen.insert(v.clone()) {
                continue;
            }
            out.push((taken.take(&constant(v)), v.clone()));
        }
        self.enums.insert(values, name.clone());
        self.defs.insert(
            name.clone(),
            Def::Enum {
                description: description(s),
                values: out,
                comment: None,
            },
        );
        name
    }

    pub(super) fn object_fields(
        &mut self,
        owner: &str,
        merged: &Merged<'d>,
        input: bool,
    ) -> Vec<Field> {
        let mut taken = Taken::default();
        let mut fields = Vec::new();
        for (&prop, &schema) in &merged.properties {
            let s = self.docs.deref(schema);
            let skip = if input { "readOnly" } else { "writeOnly" };
            if s.get(skip).and_then(Value::as_bool) == Some(true)
                || schema.get(skip).and_then(Value::as_bool) == Some(true)
            {
                continue;
            }
            if prop.contains('.') || prop.is_empty() {
                // `@map(from:)` reads a dotted path: a member named `a.b` cannot be said.
                fields.push(Field {
                    name: String::new(),
                    ty: String::new(),
                    description: None,
                    directives: String::new(),
                    comment: Some(format!(
                        "member {} skipped: its name has a dot",
                        quote(prop)
                    )),
                });
                continue;
            }
            let wanted = camel(prop);
            let name = taken.take(&wanted);
            // Enums and nested types are named after the object type, not its input
            // (`Pet` + `status` → `PetStatus` for both).
            let base = if input {
                owner.strip_suffix("Input").unwrap_or(owner)
            } else {
                owner
            };
            let hint = format!("{base}{}", pascal(prop));
            let mut ty = if input {
                self.input(schema, &hint)
            } else {
                self.output(schema, &hint)
            };
            // An `id` is an `ID` (GraphQL clients key their caches by it); an input sends
            // a numeric one back as the number the API reads.
            let mut as_number = false;
            if prop == "id" && matches!(ty.text.as_str(), "Int" | "String" | BIG_INT) {
                as_number = input && ty.text != "String";
                ty.text = "ID".into();
            }
            let has_default = s.get("default").is_some();
            // A member the alternatives describe differently is `JSON`, and may be null.
            let conflicting = std::ptr::eq(schema, &ANY);
            let optional = (input && has_default) || ty.nullable || conflicting;
            let non_null = merged.required.contains(prop) && !optional;
            let directives = match (name != prop, as_number) {
                (true, true) => format!(" @map(from: {}, as: NUMBER)", quote(prop)),
                (true, false) => format!(" @map(from: {})", quote(prop)),
                (false, true) => " @map(as: NUMBER)".to_string(),
                (false, false) => String::new(),
            };
            let comment = (name != wanted).then(|| format!("{wanted} was taken"));
            fields.push(Field {
                name,
                ty: format!("{}{}", ty.text, if non_null { "!" } else { "" }),
                // A reference's own description (3.1 allows one beside `$ref`), else
                // an inline schema's: never the referenced type's, which is the type's.
                description: if schema.get("$ref").is_some() {
                    description(schema)
                } else {
                    description(s)
                },
                directives,
                comment,
            });
        }
        fields
    }

    /// An input type for `s` (`…Input`); `JSON` when every member is read-only.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn input_object(
        &mut self,
        s: &'d Value,
        loc: Option<Loc>,
        named_as: Option<String>,
        hint: &str,
        hint_name: &str,
        merged: Merged<'d>,
        nullable: bool,
    ) -> Ty {
        let from = named_as.as_deref().unwrap_or(hint);
        let wanted = format!("{hint_name}Input");
        let (name, _) = self.type_name(&wanted, &wanted);
        // Said when the schema's own name was changed (`pet-item` → `PetItemInput`).
        let comment = (name != format!("{from}Input")).then(|| format!("input of {}", quote(from)));
        self.record(s, loc.clone(), &name, true);
        let fields = self.object_fields(&name, &merged, true);
        if fields.iter().all(|f| f.name.is_empty()) {
            // Every member read-only: nothing to send but what `JSON` can carry.
            // (The name stays taken: the output must not depend on the order.)
            let json = self.json_scalar();
            self.record(s, loc, &json, true);
            return Ty::named(&json, nullable);
        }
        self.defs.insert(
            name.clone(),
            Def::Input {
                description: merged_description(&merged, s),
                fields,
                comment: comment.filter(|_| named_as.is_some()),
            },
        );
        Ty::named(&name, nullable)
    }
}
