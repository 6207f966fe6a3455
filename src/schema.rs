//! Stage ③ — the executable schema. Input: a [`Plan`] (through the [`Runtime`] that
//! holds it). Output: an async-graphql dynamic [`Schema`] whose resolvers call
//! [`crate::resolve`]. The only module that touches `async_graphql::dynamic`'s builders.

use crate::config::TypeRef;
use crate::plan::{ArgPlan, TypePlanKind};
use crate::resolve::{self, Runtime};
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Interface, InterfaceField,
    Object, Scalar, Schema, SchemaError, Subscription, SubscriptionField, SubscriptionFieldFuture,
    TypeRef as DynTypeRef, Union,
};
use std::sync::Arc;

/// Limits applied by the executor to every operation.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Refuse `__schema` / `__type` queries (GraphiQL then has no docs or completion).
    pub disable_introspection: bool,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_depth: 32,
            max_complexity: 10_000,
            disable_introspection: false,
        }
    }
}

/// Adds a field plan's arguments, description and deprecation to `$out`, a dynamic
/// `Field` or `InterfaceField` (same builder methods, no shared trait).
macro_rules! declare {
    ($out:ident, $f:expr) => {
        for a in &$f.args {
            $out = $out.argument(input_value(a));
        }
        if let Some(d) = &$f.description {
            $out = $out.description(d.clone());
        }
        if let Some(reason) = &$f.deprecated {
            $out = $out.deprecation(reason.as_deref());
        }
    };
}

fn type_ref(ty: &TypeRef) -> DynTypeRef {
    match ty {
        TypeRef::Named { name, non_null } => {
            let named = DynTypeRef::Named(name.clone().into());
            if *non_null {
                DynTypeRef::NonNull(Box::new(named))
            } else {
                named
            }
        }
        TypeRef::List { item, non_null } => {
            let list = DynTypeRef::List(Box::new(type_ref(item)));
            if *non_null {
                DynTypeRef::NonNull(Box::new(list))
            } else {
                list
            }
        }
    }
}

fn input_value(a: &ArgPlan) -> InputValue {
    let mut v = InputValue::new(a.name.clone(), type_ref(&a.ty));
    if let Some(d) = &a.default {
        v = v.default_value(d.clone());
    }
    if let Some(d) = &a.description {
        v = v.description(d.clone());
    }
    v
}

/// An event stream's items, as the executor's lifetime wants them: the "identity" map is
/// where `FieldValue<'static>` is coerced to `FieldValue<'a>`.
#[allow(clippy::map_identity)]
fn widen<'a>(
    s: impl futures_util::Stream<Item = async_graphql::Result<FieldValue<'static>>> + Send + 'a,
) -> impl futures_util::Stream<Item = async_graphql::Result<FieldValue<'a>>> + Send + 'a {
    use futures_util::StreamExt;
    s.map(|r| r.map(|v| -> FieldValue<'a> { v }))
}

/// Builds the schema; its errors (which a valid Plan should not produce) are reported
/// like configuration errors by the caller.
pub fn build(rt: Arc<Runtime>, limits: &QueryLimits) -> Result<Schema, SchemaError> {
    let plan = rt.plan.clone();
    let mut builder = Schema::build(
        &plan.query,
        plan.mutation.as_deref(),
        plan.subscription.as_deref(),
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .extension(crate::exec::Gate);
    if limits.disable_introspection {
        builder = builder.disable_introspection();
    }
    for t in plan.types.values() {
        builder = match &t.kind {
            TypePlanKind::Object { fields, .. }
                if plan.subscription.as_deref() == Some(t.name.as_str()) =>
            {
                // `@stream` fields are executor subscriptions: each event is an upstream
                // message. `@live` fields never reach the executor as subscriptions (the
                // transports run them as queries, see `live`); they are here for validation
                // and introspection (GraphiQL needs them).
                let mut sub = Subscription::new(t.name.clone());
                for f in fields {
                    let field = f.clone();
                    let rt = rt.clone();
                    let mut out = SubscriptionField::new(
                        f.name.clone(),
                        type_ref(&f.ty),
                        move |ctx| {
                            let events = field.stream.as_ref().map(|source| {
                                widen(resolve::stream::events(&rt, &field, source, &ctx))
                            });
                            SubscriptionFieldFuture::new(async move {
                                events.ok_or_else(|| {
                                async_graphql::Error::new("live queries are served over WebSocket (graphql-transport-ws, graphql-ws) or Server-Sent Events")
                            })
                            })
                        },
                    );
                    for a in &f.args {
                        out = out.argument(input_value(a));
                    }
                    if let Some(d) = &f.description {
                        out = out.description(d.clone());
                    }
                    sub = sub.field(out);
                }
                builder.register(sub)
            }
            TypePlanKind::Object { fields, implements } => {
                let is_mutation = plan.mutation.as_deref() == Some(t.name.as_str());
                let mut obj = Object::new(t.name.clone());
                if let Some(d) = &t.description {
                    obj = obj.description(d.clone());
                }
                for i in implements {
                    obj = obj.implement(i.clone());
                }
                for f in fields {
                    let field = f.clone();
                    let rt = rt.clone();
                    let mut out = match &f.rest {
                        Some(_) => Field::new(f.name.clone(), type_ref(&f.ty), move |ctx| {
                            let rt = rt.clone();
                            let field = field.clone();
                            FieldFuture::new(async move {
                                match &field.rest {
                                    Some(rest) => {
                                        resolve::rest_field(&rt, &field, rest, ctx, is_mutation)
                                            .await
                                    }
                                    None => Ok(None),
                                }
                            })
                        }),
                        None => Field::new(f.name.clone(), type_ref(&f.ty), move |ctx| {
                            FieldFuture::Value(resolve::from_parent(&rt.plan, &ctx, &field))
                        }),
                    };
                    declare!(out, f);
                    obj = obj.field(out);
                }
                builder.register(obj)
            }
            TypePlanKind::Interface { fields, .. } => {
                let mut interface = Interface::new(t.name.clone());
                if let Some(d) = &t.description {
                    interface = interface.description(d.clone());
                }
                for f in fields {
                    let mut out = InterfaceField::new(f.name.clone(), type_ref(&f.ty));
                    declare!(out, f);
                    interface = interface.field(out);
                }
                builder.register(interface)
            }
            TypePlanKind::Union { possible } => {
                let mut union = Union::new(t.name.clone());
                if let Some(d) = &t.description {
                    union = union.description(d.clone());
                }
                for member in &possible.types {
                    union = union.possible_type(member.clone());
                }
                builder.register(union)
            }
            TypePlanKind::InputObject { fields } => {
                let mut obj = InputObject::new(t.name.clone());
                for a in fields {
                    obj = obj.field(input_value(a));
                }
                builder.register(obj)
            }
            TypePlanKind::Enum { values } => {
                builder.register(Enum::new(t.name.clone()).items(values.iter().map(String::as_str)))
            }
            TypePlanKind::Scalar => builder.register(Scalar::new(t.name.clone())),
        };
    }
    builder.finish()
}
