//! One field → its [`FieldPlan`]: its role (root, nested, interface), arguments,
//! `@rest`/`@map`/`@live`/`@updates`, and a subscription's plan.

use super::*;

/// The member path of `f` in its parent's data, checking its `@map`.
pub(super) fn member(ctx: &FieldCtx<'_>, f: &FieldConfig, errors: &mut Errors) -> Vec<Arc<str>> {
    let own = || vec![Arc::from(f.name.node.as_str())];
    let Some(m) = &f.map else {
        return own();
    };
    let qualified = format!("{}.{}", ctx.type_name, f.name.node);
    if ctx.role != Role::Object {
        errors.push(
            m.pos,
            format!("@map is for fields of object types, read from their parent's data; `{qualified}` is not one"),
        );
        return own();
    }
    if f.rest.is_some() {
        errors.push(
            m.pos,
            format!("@map on `{qualified}`: a field with @rest reads its own upstream answer, not its parent's data"),
        );
        return own();
    }
    if m.node.split('.').any(str::is_empty) {
        errors.push(
            m.pos,
            format!(
                "@map(from: {:?}) must be a member name or a dotted path like \"owner.login\"",
                m.node
            ),
        );
        return own();
    }
    m.node.split('.').map(Arc::from).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Query,
    Mutation,
    Subscription,
    Object,
    Interface,
}

pub(super) struct FieldCtx<'a> {
    pub(super) config: &'a Config,
    pub(super) kinds: &'a HashMap<&'a str, Kind>,
    pub(super) upstreams: &'a IndexMap<String, Arc<UpstreamPlan>>,
    pub(super) webhooks: &'a IndexMap<String, Arc<super::WebhookPlan>>,
    pub(super) type_name: &'a str,
    /// The field being planned (empty while none is).
    pub(super) field: &'a str,
    pub(super) role: Role,
    /// All fields of the enclosing type: what `{parent.x}` may name.
    pub(super) fields: &'a [FieldConfig],
    pub(super) relations: &'a abstracts::Relations<'a>,
}

impl<'a> FieldCtx<'a> {
    /// The fields of the object type `name` as written, if it is one.
    pub(super) fn object_fields(&self, name: &str) -> Option<&'a [FieldConfig]> {
        let t = self.config.types.iter().find(|t| t.name.node == name)?;
        match &t.kind {
            TypeConfigKind::Object { fields, .. } => Some(fields),
            _ => None,
        }
    }

    /// The upstream member that the field `key` of items of type `item` reads: its
    /// `@map(from:)`, or its name. For an interface or union, every possible type must
    /// have the field and read the same member. `Err` says why there is none.
    pub(super) fn key_member(&self, item: &str, key: &str) -> Result<String, String> {
        let types: Vec<&str> = match self.kinds.get(item) {
            Some(Kind::Output) => vec![item],
            Some(Kind::Abstract) => self.relations.possible(item).to_vec(),
            _ => return Err(format!("`{item}` is not an object type")),
        };
        let mut member: Option<String> = None;
        for t in types {
            let field = self
                .object_fields(t)
                .and_then(|fields| fields.iter().find(|x| x.name.node == key))
                .ok_or_else(|| format!("`{t}` has no field `{key}`"))?;
            let m = match &field.map {
                Some(m) if m.node.contains('.') => {
                    return Err(format!(
                    "`{t}.{key}` reads the nested member {:?}; a key must be a top-level member",
                    m.node
                ))
                }
                Some(m) => m.node.clone(),
                None => key.to_string(),
            };
            match &member {
                Some(earlier) if *earlier != m => {
                    return Err(format!(
                        "the types of `{item}` read `{key}` from different members ({earlier:?}, {m:?})"
                    ))
                }
                _ => member = Some(m),
            }
        }
        member.ok_or_else(|| format!("`{item}` has no possible type"))
    }
}

pub(super) fn check_type(
    ty: &Positioned<TypeRef>,
    want: Kind,
    kinds: &HashMap<&str, Kind>,
    errors: &mut Errors,
) {
    let base = ty.node.base_name();
    match kinds.get(base) {
        None => errors.push(ty.pos, format!("unknown type `{base}`")),
        Some(Kind::Leaf) => {}
        Some(k) if *k == want => {}
        Some(Kind::Abstract) if want == Kind::Output => {}
        Some(Kind::Abstract) => errors.push(
            ty.pos,
            format!("`{base}` is an interface or union type and cannot be an argument's type"),
        ),
        Some(Kind::Input) => errors.push(
            ty.pos,
            format!("`{base}` is an input type and cannot be a field's type"),
        ),
        Some(_) => errors.push(
            ty.pos,
            format!("`{base}` is an object type and cannot be an argument's type"),
        ),
    }
}

pub(super) fn arg(a: &ArgConfig, kinds: &HashMap<&str, Kind>, errors: &mut Errors) -> ArgPlan {
    check_type(&a.ty, Kind::Input, kinds, errors);
    let member = a.map.as_ref().map(|m| {
        if m.node.split('.').any(str::is_empty) {
            errors.push(
                m.pos,
                format!(
                    "@map(from: {:?}) on input field `{}` must be a member name or a dotted \
                     path like \"address.street\"",
                    m.node, a.name.node
                ),
            );
        }
        m.node.split('.').map(str::to_string).collect()
    });
    ArgPlan {
        number: a.number,
        member,
        name: a.name.node.clone(),
        ty: a.ty.node.clone(),
        default: a.default.clone(),
        description: a.description.clone(),
    }
}

pub(super) fn field(ctx: &FieldCtx<'_>, f: &FieldConfig, errors: &mut Errors) -> Option<FieldPlan> {
    check_type(&f.ty, Kind::Output, ctx.kinds, errors);
    let args: Vec<ArgPlan> = f.args.iter().map(|a| arg(a, ctx.kinds, errors)).collect();
    let qualified = format!("{}.{}", ctx.type_name, f.name.node);

    let rest = match &f.rest {
        Some(r) => rest::plan(ctx, f, r, &args, errors),
        None => {
            if ctx.role != Role::Object {
                errors.push(
                    f.name.pos,
                    format!("field `{qualified}` has no resolver; add @rest(upstream: …, path: …)"),
                );
            }
            if let Some(c) = &f.cache {
                errors.push(
                    c.pos,
                    format!("@cache on `{qualified}` needs @rest on the same field"),
                );
            }
            None
        }
    };

    let mut invalidates = Vec::new();
    if let Some(inv) = &f.invalidates {
        if ctx.role != Role::Mutation {
            errors.push(
                inv.pos,
                format!("@invalidates is for mutation fields; `{qualified}` is not one"),
            );
        }
        for tag in &inv.node.tags {
            if let Some(t) = rest::template(tag, &args, ctx, false, errors) {
                invalidates.push(t);
            }
        }
    }
    if let Some(l) = &f.live {
        errors.push(
            l.pos,
            format!("@live is for Subscription fields; `{qualified}` is not one"),
        );
    }
    if let Some(st) = &f.stream {
        errors.push(
            st.pos,
            format!("@stream is for Subscription fields; `{qualified}` is not one"),
        );
    }
    let updates = stream::updates(ctx, f, &args, errors);
    let member = member(ctx, f, errors);
    if ctx.role == Role::Mutation {
        if let Some(c) = &f.cache {
            errors.push(
                c.pos,
                format!("@cache on mutation `{qualified}`: mutation results are never cached"),
            );
        }
    }
    Some(FieldPlan {
        name: f.name.node.clone(),
        ty: f.ty.node.clone(),
        args,
        description: f.description.clone(),
        deprecated: f.deprecated.clone(),
        rest,
        invalidates,
        live: None,
        updates,
        stream: None,
        member,
        access: None,
    })
}

/// A field of an interface: declared for queries and introspection, resolved by the
/// implementing types' fields, so it takes no directive but `@deprecated`.
pub(super) fn interface_field(
    ctx: &FieldCtx<'_>,
    f: &FieldConfig,
    errors: &mut Errors,
) -> FieldPlan {
    check_type(&f.ty, Kind::Output, ctx.kinds, errors);
    let args: Vec<ArgPlan> = f.args.iter().map(|a| arg(a, ctx.kinds, errors)).collect();
    let given = [
        (f.rest.as_ref().map(|d| d.pos), "@rest"),
        (f.cache.as_ref().map(|d| d.pos), "@cache"),
        (f.invalidates.as_ref().map(|d| d.pos), "@invalidates"),
        (f.live.as_ref().map(|d| d.pos), "@live"),
        (f.updates.as_ref().map(|d| d.pos), "@updates"),
        (f.stream.as_ref().map(|d| d.pos), "@stream"),
        (f.map.as_ref().map(|d| d.pos), "@map"),
    ];
    for (pos, directive) in given {
        if let Some(pos) = pos {
            errors.push(
                pos,
                format!(
                    "{directive} on interface field `{}.{}` is not read: each implementing type's field says where its value comes from",
                    ctx.type_name, f.name.node
                ),
            );
        }
    }
    subscription_plan(f, args, None, None)
}

/// A Subscription field: `@live` mirrors the Query field of the same name, which must
/// take the same arguments, return the same type, and be cached (its cache entry is what
/// every subscriber shares).
pub(super) fn live_field(
    ctx: &FieldCtx<'_>,
    query: &str,
    f: &FieldConfig,
    errors: &mut Errors,
) -> Option<FieldPlan> {
    let qualified = format!("{}.{}", ctx.type_name, f.name.node);
    check_type(&f.ty, Kind::Output, ctx.kinds, errors);
    let args: Vec<ArgPlan> = f.args.iter().map(|a| arg(a, ctx.kinds, errors)).collect();
    for (pos, name) in [
        (f.rest.as_ref().map(|d| d.pos), "@rest"),
        (f.cache.as_ref().map(|d| d.pos), "@cache"),
        (f.invalidates.as_ref().map(|d| d.pos), "@invalidates"),
    ] {
        if let Some(pos) = pos {
            errors.push(pos, format!("{name} is not for Subscription fields; `{qualified}` takes its data from `{query}.{}`", f.name.node));
        }
    }
    if let Some(u) = &f.updates {
        errors.push(
            u.pos,
            format!("@updates is for Query fields; `{qualified}` is not one"),
        );
    }
    if let (Some(_), Some(st)) = (&f.live, &f.stream) {
        errors.push(st.pos, format!("`{qualified}` has both @live and @stream; a Subscription field is one or the other"));
        return None;
    }
    if let Some(st) = &f.stream {
        stream::check_stream_type(&f.ty, errors);
        let source = stream::source(ctx, &st.node, &args, "stream", errors)?;
        return Some(subscription_plan(f, args, None, Some(Arc::new(source))));
    }
    let Some(live) = &f.live else {
        errors.push(
            f.name.pos,
            format!("Subscription field `{qualified}` needs @live (a live query of `{query}.{}`) or @stream (upstream socket events)", f.name.node),
        );
        return None;
    };
    let twin = ctx
        .object_fields(query)
        .and_then(|fields| fields.iter().find(|q| q.name.node == f.name.node));
    let Some(twin) = twin else {
        errors.push(
            live.pos,
            format!(
                "@live on `{qualified}` mirrors `{query}.{}`, which does not exist",
                f.name.node
            ),
        );
        return None;
    };
    let sig = |args: &[ArgConfig]| {
        args.iter()
            .map(|a| format!("{}: {}", a.name.node, a.ty.node))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if sig(&f.args) != sig(&twin.args) || f.ty.node != twin.ty.node {
        errors.push(
            live.pos,
            format!(
                "@live on `{qualified}` must have the signature of `{query}.{}`: ({}): {}",
                f.name.node,
                sig(&twin.args),
                twin.ty.node
            ),
        );
    }
    if twin.rest.is_none() || twin.cache.is_none() {
        errors.push(
            live.pos,
            format!("@live on `{qualified}` needs @rest and @cache on `{query}.{}`: its cache entry is what subscribers share", f.name.node),
        );
    }
    let poll = live
        .node
        .poll_ms
        .as_ref()
        .map(|p| Duration::from_millis(p.node));
    Some(subscription_plan(f, args, Some(LivePlan { poll }), None))
}

/// The plan of a field that resolves nothing itself: a Subscription field, or an
/// interface's field.
pub(super) fn subscription_plan(
    f: &FieldConfig,
    args: Vec<ArgPlan>,
    live: Option<LivePlan>,
    stream: Option<Arc<SourcePlan>>,
) -> FieldPlan {
    FieldPlan {
        name: f.name.node.clone(),
        ty: f.ty.node.clone(),
        args,
        description: f.description.clone(),
        deprecated: f.deprecated.clone(),
        rest: None,
        invalidates: Vec::new(),
        live,
        updates: None,
        stream,
        member: vec![Arc::from(f.name.node.as_str())],
        access: None,
    }
}
