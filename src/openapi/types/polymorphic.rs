//! Types of several kinds: unions (`oneOf`/`anyOf` with a discriminator every
//! alternative requires) and interfaces (a schema with a discriminator that others extend
//! through `allOf`), each with its `@discriminate` map.

use super::*;

/// The discriminator values that name the schema called `component`: the `mapping`
/// entries whose target is it (a `$ref` or a bare name), else its name itself.
fn discriminator_values(
    mapping: Option<&serde_json::Map<String, Value>>,
    component: String,
) -> Vec<String> {
    let mut values: Vec<String> = mapping
        .into_iter()
        .flatten()
        .filter(|(_, target)| {
            target.as_str().is_some_and(|t| {
                t == component || last_segment(t.rsplit('#').next().unwrap_or(t)) == component
            })
        })
        .map(|(value, _)| value.clone())
        .collect();
    if values.is_empty() {
        values.push(component);
    }
    values
}

impl<'d> Types<'d> {
    /// A schema with a `discriminator` that other schemas extend (`Cat: allOf: [Pet,
    /// {…}]`, or named in its `mapping`): an interface with `@discriminate`, implemented
    /// by each extending object type. `None` when nothing extends it.
    pub(super) fn interface(
        &mut self,
        s: &'d Value,
        loc: Option<Loc>,
        hint_name: &str,
        merged: &Merged<'d>,
    ) -> Option<String> {
        let loc = loc?;
        let discriminator = s.get("discriminator")?;
        let field = discriminator.get("propertyName")?.as_str()?.to_string();
        if !merged.required.contains(field.as_str()) || field.contains('.') {
            // Not always sent, an object without it could not be typed; and
            // `@discriminate(field:)` reads a dotted name as a path.
            return None;
        }
        let subtypes = self.extending(&loc);
        if subtypes.is_empty() {
            return None;
        }
        let mapping = discriminator.get("mapping").and_then(Value::as_object);
        let (name, comment) = self.type_name(hint_name, hint_name);
        self.outputs.insert(loc.clone(), name.clone());
        let fields = self.object_fields(&name, merged, false);
        // Interface fields carry no directives: the implementing types say where each
        // value comes from.
        let mut shared = fields.clone();
        for f in &mut shared {
            f.directives.clear();
        }
        let mut map = Vec::new();
        for sub_loc in &subtypes {
            let ty = self.output_at(sub_loc);
            if !self.implements(&ty, &name, &shared) {
                continue;
            }
            for v in discriminator_values(mapping, self.docs.name_of(sub_loc)) {
                if !map.iter().any(|(m, _): &(String, String)| *m == v) {
                    map.push((v, ty.clone()));
                }
            }
        }
        let def = if map.is_empty() {
            // No extending type fits: the schema is the object it describes.
            Def::Object {
                description: merged_description(merged, s),
                fields,
                comment: None,
                implements: Vec::new(),
            }
        } else {
            Def::Interface {
                description: merged_description(merged, s),
                fields: shared,
                field,
                map,
                comment,
            }
        };
        self.defs.insert(name.clone(), def);
        Some(name)
    }

    /// The schemas of `base`'s file that extend it through `allOf`, directly or through
    /// one another, in document order.
    pub(super) fn extending(&self, base: &Loc) -> Vec<Loc> {
        let components = self.docs.components(base.file);
        let mut family = vec![format!("{}#{}", base.file, base.pointer)];
        let mut out: Vec<Loc> = Vec::new();
        loop {
            let before = family.len();
            for (pointer, v) in &components {
                let reference = format!("{}#{pointer}", base.file);
                if family.contains(&reference) {
                    continue;
                }
                let extends = v
                    .get("allOf")
                    .and_then(Value::as_array)
                    .is_some_and(|parts| {
                        parts.iter().any(|p| {
                            p.get("$ref")
                                .and_then(Value::as_str)
                                .is_some_and(|r| family.iter().any(|f| f == r))
                        })
                    });
                if extends {
                    family.push(reference);
                    out.push(Loc {
                        file: base.file,
                        pointer: pointer.clone(),
                    });
                }
            }
            if family.len() == before {
                break;
            }
        }
        let order: Vec<&String> = components.iter().map(|(p, _)| p).collect();
        out.sort_by_key(|l| order.iter().position(|p| **p == l.pointer));
        out
    }

    /// Whether object type `ty` can implement interface `name` with fields `shared`
    /// (each field of the same type, or that type made non-null), and if so, says so on
    /// it. A field the implementing type narrowed to an enum where the interface has a
    /// `String` (`petType: enum [cat]`) is served as the interface's `String`.
    pub(super) fn implements(&mut self, ty: &str, name: &str, shared: &[Field]) -> bool {
        let Some(Def::Object { fields, .. }) = self.defs.get(ty) else {
            return false;
        };
        let mut patched = fields.clone();
        for want in shared.iter().filter(|f| !f.name.is_empty()) {
            let Some(have) = patched.iter_mut().find(|f| f.name == want.name) else {
                return false;
            };
            if have.ty == want.ty || have.ty == format!("{}!", want.ty) {
                continue;
            }
            let narrowed = matches!(
                self.defs.get(have.ty.trim_end_matches('!')),
                Some(Def::Enum { .. })
            );
            if want.ty.trim_end_matches('!') == "String" && narrowed {
                have.ty = want.ty.clone();
            } else {
                return false;
            }
        }
        if let Some(Def::Object {
            fields, implements, ..
        }) = self.defs.get_mut(ty)
        {
            *fields = patched;
            if !implements.iter().any(|i| i == name) {
                implements.push(name.to_string());
            }
        }
        true
    }

    /// The output type of the (object) schema at `loc`.
    pub(super) fn output_at(&mut self, loc: &Loc) -> String {
        if let Some(name) = self.outputs.get(loc) {
            return name.clone();
        }
        let Some(schema) = self.docs.at(loc) else {
            return self.json_scalar();
        };
        let mut merged = Merged::default();
        if !self.merge(schema, &mut merged, 0) || merged.properties.is_empty() {
            return self.json_scalar();
        }
        let named_as = Some(self.docs.name_of(loc)).filter(|n| !n.is_empty());
        let hint_name = named_as.clone().unwrap_or_else(|| "Type".to_string());
        self.object(
            schema,
            Some(loc.clone()),
            named_as,
            &hint_name.clone(),
            &hint_name,
            merged,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn union(
        &mut self,
        s: &'d Value,
        loc: Option<Loc>,
        hint: &str,
        named: bool,
        members: Vec<&'d Value>,
        discriminator: &'d Value,
        nullable: bool,
    ) -> Ty {
        let field = discriminator
            .get("propertyName")
            .and_then(Value::as_str)
            .unwrap_or("type");
        // Each member must be a named object type.
        let mut types = Vec::new();
        for m in &members {
            let Some((_, Some(mloc))) = self.docs.resolve(m) else {
                return self.json(nullable);
            };
            let ty = self.output(m, hint);
            if !matches!(self.defs.get(&ty.text), Some(Def::Object { .. })) {
                return self.json(nullable);
            }
            types.push((mloc, ty.text));
        }
        if types.is_empty() {
            return self.json(nullable);
        }
        let mapping = discriminator.get("mapping").and_then(Value::as_object);
        let mut map = Vec::new();
        let mut members = Vec::new();
        for (mloc, ty) in &types {
            if members.contains(ty) {
                continue;
            }
            members.push(ty.clone());
            for v in discriminator_values(mapping, self.docs.name_of(mloc)) {
                if !map.iter().any(|(m, _): &(String, String)| *m == v) {
                    map.push((v, ty.clone()));
                }
            }
        }
        let (name, comment) = self.type_name(hint, hint);
        if let Some(loc) = loc {
            self.outputs.insert(loc, name.clone());
        }
        self.defs.insert(
            name.clone(),
            Def::Union {
                description: description(s),
                members,
                field: field.to_string(),
                map,
                comment: comment.filter(|_| named),
            },
        );
        Ty::named(&name, nullable)
    }
}
