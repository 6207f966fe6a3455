//! Stage ① — syntax. Input: the text of `schema.graphql`. Output: a [`Config`], the SDL's
//! types plus livegate's directives read into typed values, every node still carrying the
//! line and column it came from.
//!
//! This stage checks only what can be seen locally: that the SDL parses, that each
//! directive is one we know, that each argument is one the directive takes and has the
//! right type. Cross-references (does the upstream exist, does the template name a real
//! argument) are [`crate::plan`]'s job. Every error is collected; none stops the reading.

mod access;
mod directives;
mod hooks;

use async_graphql_parser::types::{
    BaseType, ConstDirective, FieldDefinition, InputValueDefinition, ServiceDocument,
    TypeDefinition, TypeKind, TypeSystemDefinition,
};
use async_graphql_parser::{Pos, Positioned};
use async_graphql_value::ConstValue;

pub use access::AccessConfig;
pub use directives::{
    CacheDirective, DiscriminateDirective, Header, HttpMethod, InvalidatesDirective, LiveDirective,
    RestDirective, Scope, SourceDirective, UpdatesDirective, UpstreamDirective, APPLY_MODES,
};
pub use directives::{ErrorsDirective, HEADERS, LINKS};
pub use hooks::{WebhookDirective, SCHEMES};

/// A positioned error of the configuration stages. `Display` gives
/// `file:line:col: message`, the format every start-up error has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Collects errors with the file name, so each stage can push and go on.
#[derive(Debug, Default)]
pub struct Errors {
    file: String,
    pub list: Vec<ConfigError>,
}

impl Errors {
    pub fn new(file: &str) -> Self {
        Errors {
            file: file.to_string(),
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, pos: Pos, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }
}

/// A GraphQL type reference as written: `[Message!]!` and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRef {
    Named { name: String, non_null: bool },
    List { item: Box<TypeRef>, non_null: bool },
}

impl TypeRef {
    pub fn from_parser(ty: &async_graphql_parser::types::Type) -> TypeRef {
        let non_null = !ty.nullable;
        match &ty.base {
            BaseType::Named(name) => TypeRef::Named {
                name: name.to_string(),
                non_null,
            },
            BaseType::List(item) => TypeRef::List {
                item: Box::new(TypeRef::from_parser(item)),
                non_null,
            },
        }
    }

    /// The named type at the bottom of the lists.
    pub fn base_name(&self) -> &str {
        match self {
            TypeRef::Named { name, .. } => name,
            TypeRef::List { item, .. } => item.base_name(),
        }
    }

    pub fn non_null(&self) -> bool {
        match self {
            TypeRef::Named { non_null, .. } | TypeRef::List { non_null, .. } => *non_null,
        }
    }

    pub fn is_list(&self) -> bool {
        matches!(self, TypeRef::List { .. })
    }
}

impl std::fmt::Display for TypeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let non_null = match self {
            TypeRef::Named { name, non_null } => {
                f.write_str(name)?;
                non_null
            }
            TypeRef::List { item, non_null } => {
                write!(f, "[{item}]")?;
                non_null
            }
        };
        if *non_null {
            f.write_str("!")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ArgConfig {
    /// On an input field: `@map(from: "shipping_address")`, the member sent upstream.
    pub map: Option<Positioned<String>>,
    /// `@map(as: NUMBER)`: a value whose text is an integer is sent as a JSON number.
    pub number: bool,
    pub name: Positioned<String>,
    pub ty: Positioned<TypeRef>,
    pub default: Option<ConstValue>,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FieldConfig {
    pub name: Positioned<String>,
    pub ty: Positioned<TypeRef>,
    pub args: Vec<ArgConfig>,
    pub description: Option<String>,
    pub deprecated: Option<Option<String>>,
    pub rest: Option<Positioned<RestDirective>>,
    pub cache: Option<Positioned<CacheDirective>>,
    pub invalidates: Option<Positioned<InvalidatesDirective>>,
    pub live: Option<Positioned<LiveDirective>>,
    pub updates: Option<Positioned<UpdatesDirective>>,
    pub stream: Option<Positioned<SourceDirective>>,
    /// `@map(from: "owner.login")`: the member of the parent's upstream data this field reads.
    pub map: Option<Positioned<String>>,
    /// `@authenticated`, `@requiresScopes`.
    pub access: AccessConfig,
}

#[derive(Debug, Clone)]
pub enum TypeConfigKind {
    Object {
        fields: Vec<FieldConfig>,
        /// The interfaces it implements, as written.
        implements: Vec<Positioned<String>>,
    },
    /// An interface: its fields, and how to tell an upstream object's type.
    Interface {
        fields: Vec<FieldConfig>,
        discriminate: Option<Positioned<DiscriminateDirective>>,
    },
    Union {
        members: Vec<Positioned<String>>,
        discriminate: Option<Positioned<DiscriminateDirective>>,
    },
    InputObject {
        fields: Vec<ArgConfig>,
    },
    Enum {
        values: Vec<EnumValueConfig>,
    },
    Scalar,
}

#[derive(Debug, Clone)]
pub struct EnumValueConfig {
    pub name: Positioned<String>,
    pub description: Option<String>,
    /// `@map(from: "pending")`: the string the upstream says for this value.
    pub map: Option<Positioned<String>>,
}

#[derive(Debug, Clone)]
pub struct TypeConfig {
    pub name: Positioned<String>,
    pub description: Option<String>,
    pub kind: TypeConfigKind,
    /// `@authenticated`, `@requiresScopes` on the type.
    pub access: AccessConfig,
}

/// What `schema.graphql` says, typed and positioned.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file name used in error messages.
    pub file: String,
    pub upstreams: Vec<Positioned<UpstreamDirective>>,
    /// `@webhook` receivers.
    pub webhooks: Vec<Positioned<WebhookDirective>>,
    pub types: Vec<TypeConfig>,
    /// Root operation type names from a `schema { … }` block, when there is one.
    pub query: Option<Positioned<String>>,
    pub mutation: Option<Positioned<String>>,
    pub subscription: Option<Positioned<String>>,
    /// Names of `@upstream`s that could not be read (their errors are reported): fields
    /// naming one get no second error.
    pub broken_upstreams: Vec<String>,
}

/// Parses `source` (named `file` in errors) into a [`Config`], or every error found.
pub fn parse(file: &str, source: &str) -> Result<Config, Vec<ConfigError>> {
    match parse_partial(file, source)? {
        (config, errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// The `Config` of `source` as far as it could be read, and the errors found on the way:
/// `Err` only for SDL that does not parse at all. Planning can go on from a partial
/// config, so one `livegate check` reports the errors of every stage.
pub fn parse_partial(
    file: &str,
    source: &str,
) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
    let mut errors = Errors::new(file);
    let doc: ServiceDocument = match async_graphql_parser::parse_schema(source) {
        Ok(doc) => doc,
        Err(e) => {
            let pos = e.positions().next().unwrap_or(Pos { line: 1, column: 1 });
            // The parser's message is a drawing of the line; keep what it says is expected.
            let text = e.to_string();
            let said = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or(text.trim());
            let hint = if said.contains("const_object_field") || said.contains("const_value") {
                " (a directive argument's object is `{name: value}`, and a template is a \
                 string: `body: \"{args}\"`, not `body: {args}`)"
            } else {
                ""
            };
            errors.push(pos, format!("syntax error: {said}{hint}"));
            return Err(errors.list);
        }
    };
    let mut extensions = Vec::new();
    let mut config = Config {
        file: file.to_string(),
        upstreams: Vec::new(),
        webhooks: Vec::new(),
        types: Vec::new(),
        query: None,
        mutation: None,
        subscription: None,
        broken_upstreams: Vec::new(),
    };
    for def in &doc.definitions {
        match def {
            TypeSystemDefinition::Schema(schema) => {
                for d in &schema.node.directives {
                    match d.node.name.node.as_str() {
                        "upstream" => match directives::upstream(d, &mut errors) {
                            Some(u) => config.upstreams.push(u),
                            None => {
                                let name = d.node.get_argument("name");
                                if let Some(ConstValue::String(n)) = name.map(|n| &n.node) {
                                    config.broken_upstreams.push(n.clone());
                                }
                            }
                        },
                        "webhook" => {
                            if let Some(w) = hooks::webhook(d, &mut errors) {
                                config.webhooks.push(Positioned::new(w, d.pos));
                            }
                        }
                        other => errors.push(
                            d.pos,
                            format!(
                                "unknown directive @{other} on schema; known: @upstream, @webhook"
                            ),
                        ),
                    }
                }
                let root = |n: &Option<Positioned<async_graphql_value::Name>>| {
                    n.as_ref().map(|n| n.clone().map(|n| n.to_string()))
                };
                if let Some(q) = root(&schema.node.query) {
                    config.query = Some(q);
                }
                if let Some(m) = root(&schema.node.mutation) {
                    config.mutation = Some(m);
                }
                if let Some(s) = root(&schema.node.subscription) {
                    config.subscription = Some(s);
                }
            }
            // Declarations of our own directives are allowed (editors like them) and
            // change nothing: the directives' meaning is fixed by livegate.
            TypeSystemDefinition::Directive(_) => {}
            TypeSystemDefinition::Type(ty) if ty.node.extend => extensions.push(ty),
            TypeSystemDefinition::Type(ty) => {
                if let Some(t) = type_config(ty, &mut errors) {
                    config.types.push(t);
                }
            }
        }
    }
    // `extend type` (and interface, union, enum, input) adds to its type wherever that is
    // declared, before or after, in this file or another of the schema.
    for ty in extensions {
        if let Some(t) = type_config(ty, &mut errors) {
            extend(&mut config.types, t, &mut errors);
        }
    }
    Ok((config, errors.list))
}

/// Merges the extension `ext` into the type of the same name and kind.
fn extend(types: &mut [TypeConfig], ext: TypeConfig, errors: &mut Errors) {
    let name = &ext.name;
    let what = |k: &TypeConfigKind| match k {
        TypeConfigKind::Object { .. } => "type",
        TypeConfigKind::Interface { .. } => "interface",
        TypeConfigKind::Union { .. } => "union",
        TypeConfigKind::InputObject { .. } => "input",
        TypeConfigKind::Enum { .. } => "enum",
        TypeConfigKind::Scalar => "scalar",
    };
    let Some(base) = types.iter_mut().find(|t| t.name.node == name.node) else {
        errors.push(
            name.pos,
            format!(
                "`extend {} {}` extends nothing: no {} `{}` is declared",
                what(&ext.kind),
                name.node,
                what(&ext.kind),
                name.node
            ),
        );
        return;
    };
    let (is, says) = (what(&base.kind), what(&ext.kind));
    base.access.merge(ext.access);
    match (&mut base.kind, ext.kind) {
        (
            TypeConfigKind::Object { fields, implements },
            TypeConfigKind::Object {
                fields: more,
                implements: also,
            },
        ) => {
            fields.extend(more);
            implements.extend(also);
        }
        (
            TypeConfigKind::Interface {
                fields,
                discriminate,
            },
            TypeConfigKind::Interface {
                fields: more,
                discriminate: said,
            },
        ) => {
            fields.extend(more);
            merge_discriminate(discriminate, said, &name.node, errors);
        }
        (
            TypeConfigKind::Union {
                members,
                discriminate,
            },
            TypeConfigKind::Union {
                members: more,
                discriminate: said,
            },
        ) => {
            members.extend(more);
            merge_discriminate(discriminate, said, &name.node, errors);
        }
        (TypeConfigKind::InputObject { fields }, TypeConfigKind::InputObject { fields: more }) => {
            fields.extend(more)
        }
        (TypeConfigKind::Enum { values }, TypeConfigKind::Enum { values: more }) => {
            values.extend(more)
        }
        (TypeConfigKind::Scalar, TypeConfigKind::Scalar) => {}
        _ => errors.push(
            name.pos,
            format!(
                "`extend {says} {}`: `{}` is declared as {} {is}",
                name.node,
                name.node,
                if is == "input" || is == "interface" {
                    "an"
                } else {
                    "a"
                }
            ),
        ),
    }
}

fn merge_discriminate(
    base: &mut Option<Positioned<DiscriminateDirective>>,
    said: Option<Positioned<DiscriminateDirective>>,
    name: &str,
    errors: &mut Errors,
) {
    match (base.is_some(), said) {
        (_, None) => {}
        (false, Some(d)) => *base = Some(d),
        (true, Some(d)) => errors.push(d.pos, format!("@discriminate is given twice on `{name}`")),
    }
}

fn type_config(ty: &Positioned<TypeDefinition>, errors: &mut Errors) -> Option<TypeConfig> {
    let def = &ty.node;
    let name = def.name.clone().map(|n| n.to_string());
    let abstract_type = matches!(def.kind, TypeKind::Interface(_) | TypeKind::Union(_));
    let mut discriminate = None;
    let mut access = AccessConfig::default();
    let guardable = !matches!(def.kind, TypeKind::Union(_) | TypeKind::InputObject(_));
    for d in &def.directives {
        if guardable && access::read(d, &mut access, errors) {
            continue;
        }
        match d.node.name.node.as_str() {
            "discriminate" if abstract_type => {
                if put(&mut discriminate, directives::discriminate(d, errors)) {
                    errors.push(
                        d.pos,
                        format!("@discriminate is given twice on `{}`", name.node),
                    );
                }
            }
            "discriminate" => errors.push(
                d.pos,
                format!(
                    "@discriminate is for interface and union types; `{}` is neither",
                    name.node
                ),
            ),
            other => errors.push(
                d.pos,
                format!(
                    "directive @{other} is not allowed on {}",
                    match &def.kind {
                        TypeKind::Interface(_) => "an interface; known: @discriminate, @authenticated, @requiresScopes",
                        TypeKind::Union(_) => "a union; known: @discriminate (@authenticated and @requiresScopes go on its member types)",
                        TypeKind::InputObject(_) => "an input type",
                        _ => "a type; known: @authenticated, @requiresScopes",
                    }
                ),
            ),
        }
    }
    let names = |list: &[Positioned<async_graphql_value::Name>]| -> Vec<Positioned<String>> {
        list.iter()
            .map(|n| n.clone().map(|n| n.to_string()))
            .collect()
    };
    let kind = match &def.kind {
        TypeKind::Object(obj) => TypeConfigKind::Object {
            fields: obj.fields.iter().map(|f| field_config(f, errors)).collect(),
            implements: names(&obj.implements),
        },
        TypeKind::InputObject(input) => TypeConfigKind::InputObject {
            fields: input
                .fields
                .iter()
                .map(|a| arg_config(a, Place::InputField, errors))
                .collect(),
        },
        TypeKind::Enum(e) => TypeConfigKind::Enum {
            values: e
                .values
                .iter()
                .map(|v| EnumValueConfig {
                    name: v.node.value.clone().map(|n| n.to_string()),
                    description: v.node.description.as_ref().map(|d| d.node.clone()),
                    map: only_map(&v.node.directives, "an enum value", errors),
                })
                .collect(),
        },
        TypeKind::Scalar => TypeConfigKind::Scalar,
        TypeKind::Interface(i) => {
            if let Some(first) = i.implements.first() {
                errors.push(
                    first.pos,
                    format!(
                        "interface `{}` implements another interface, which livegate does not support; list every interface on the object types instead",
                        name.node
                    ),
                );
            }
            TypeConfigKind::Interface {
                fields: i.fields.iter().map(|f| field_config(f, errors)).collect(),
                discriminate,
            }
        }
        TypeKind::Union(u) => TypeConfigKind::Union {
            members: names(&u.members),
            discriminate,
        },
    };
    Some(TypeConfig {
        name,
        description: def.description.as_ref().map(|d| d.node.clone()),
        kind,
        access,
    })
}

/// Where an input value is defined: an input field may say `@map`, an argument not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Argument,
    InputField,
}

/// The one `@map` among `list`, where it is the only directive allowed (`place`, in
/// words); the others, and a second `@map`, are errors.
fn the_map<'a>(
    list: &'a [Positioned<ConstDirective>],
    place: &str,
    allowed: &str,
    errors: &mut Errors,
) -> Option<&'a Positioned<ConstDirective>> {
    let mut found = None;
    for d in list {
        if d.node.name.node != "map" {
            errors.push(
                d.pos,
                format!(
                    "directive @{} is not allowed on {place}; only {allowed} is",
                    d.node.name.node
                ),
            );
        } else if found.is_some() {
            errors.push(d.pos, format!("@map is given twice on {place}"));
        } else {
            found = Some(d);
        }
    }
    found
}

/// The `@map` of an argument or an input field (its only directive): the member an input
/// field is sent as, and whether the value goes out as a number (`as: NUMBER`).
fn input_map(
    list: &[Positioned<ConstDirective>],
    place: Place,
    errors: &mut Errors,
) -> (Option<Positioned<String>>, bool) {
    let (name, argument) = match place {
        Place::Argument => ("an argument", true),
        Place::InputField => ("an input field", false),
    };
    match the_map(list, name, "@map", errors) {
        Some(d) => directives::map_input(d, argument, errors),
        None => (None, false),
    }
}

/// The `@map(from:)` among `list`, the only directive allowed on `place`.
fn only_map(
    list: &[Positioned<ConstDirective>],
    place: &str,
    errors: &mut Errors,
) -> Option<Positioned<String>> {
    let d = the_map(list, place, "@map(from:)", errors)?;
    let map = directives::map(d, errors)?;
    if map.node.starts_with(directives::HEADERS) || map.node.starts_with(directives::LINKS) {
        errors.push(d.pos, format!("@map on {place} takes only `from:`"));
        return None;
    }
    Some(map)
}

fn arg_config(
    arg: &Positioned<InputValueDefinition>,
    place: Place,
    errors: &mut Errors,
) -> ArgConfig {
    let (map, number) = input_map(&arg.node.directives, place, errors);
    ArgConfig {
        map,
        number,
        name: arg.node.name.clone().map(|n| n.to_string()),
        ty: arg.node.ty.clone().map(|t| TypeRef::from_parser(&t)),
        default: arg.node.default_value.as_ref().map(|v| v.node.clone()),
        description: arg.node.description.as_ref().map(|d| d.node.clone()),
    }
}

/// Fills an empty `slot` with `value`; `true` when the slot was already taken.
fn put<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(_) if slot.is_some() => true,
        Some(v) => {
            *slot = Some(v);
            false
        }
        None => false,
    }
}

fn field_config(field: &Positioned<FieldDefinition>, errors: &mut Errors) -> FieldConfig {
    let def = &field.node;
    let mut out = FieldConfig {
        name: def.name.clone().map(|n| n.to_string()),
        ty: def.ty.clone().map(|t| TypeRef::from_parser(&t)),
        args: def
            .arguments
            .iter()
            .map(|a| arg_config(a, Place::Argument, errors))
            .collect(),
        description: def.description.as_ref().map(|d| d.node.clone()),
        deprecated: None,
        rest: None,
        cache: None,
        invalidates: None,
        live: None,
        updates: None,
        stream: None,
        map: None,
        access: AccessConfig::default(),
    };
    let field = out.name.node.clone();
    for d in &def.directives {
        if access::read(d, &mut out.access, errors) {
            continue;
        }
        let name = d.node.name.node.as_str();
        // Each directive at most once: a second one is reported, the first kept.
        let taken = match name {
            "rest" => put(&mut out.rest, directives::rest(d, errors)),
            "cache" => put(&mut out.cache, directives::cache(d, errors)),
            "invalidates" => put(&mut out.invalidates, directives::invalidates(d, errors)),
            "live" => put(&mut out.live, directives::live(d, errors)),
            "updates" => put(&mut out.updates, directives::updates(d, errors)),
            "stream" => put(&mut out.stream, directives::stream(d, errors)),
            "map" => put(&mut out.map, directives::map(d, errors)),
            "deprecated" => {
                out.deprecated = Some(directives::deprecated(d, errors));
                false
            }
            other => {
                errors.push(
                    d.pos,
                    format!("unknown directive @{other} on a field; known: @rest, @cache, @invalidates, @updates, @live, @stream, @map, @deprecated, @authenticated, @requiresScopes"),
                );
                false
            }
        };
        if taken {
            errors.push(d.pos, format!("@{name} is given twice on field `{field}`"));
        }
    }
    out
}
