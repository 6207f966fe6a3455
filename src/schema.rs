//! Stage ③ — the schema that validates documents. Input: a [`Plan`]. Output: an
//! async-graphql dynamic [`Schema`] that parses and validates (depth, complexity, the
//! rules of the spec) and runs nothing: its [`crate::exec::Gate`] stops every request
//! after validation, and livegate's executor ([`crate::exec`]) runs the operation. The
//! only module that touches `async_graphql::dynamic`'s builders.

use crate::config::TypeRef;
use crate::plan::{ArgPlan, Plan, TypePlanKind};
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Interface, InterfaceField,
    Object, Scalar, Schema, SchemaError, Subscription, SubscriptionField, SubscriptionFieldFuture,
    TypeRef as DynTypeRef, Union,
};

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

/// The resolver of every field: never called, since nothing runs on this schema.
fn unused(_: async_graphql::dynamic::ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::Value(None)
}

/// The same for a subscription field.
fn unused_events(_: async_graphql::dynamic::ResolverContext<'_>) -> SubscriptionFieldFuture<'_> {
    SubscriptionFieldFuture::new(async {
        Err::<futures_util::stream::Empty<async_graphql::Result<FieldValue<'_>>>, _>(
            async_graphql::Error::new("this schema only validates"),
        )
    })
}

/// Builds the schema; its errors (which a valid Plan should not produce) are reported
/// like configuration errors by the caller.
pub fn build(plan: &Plan, limits: &QueryLimits) -> Result<Schema, SchemaError> {
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
    // The introspection types are async-graphql's own here.
    for t in plan.types.values().filter(|t| !t.name.starts_with("__")) {
        builder = match &t.kind {
            TypePlanKind::Object { fields, .. }
                if plan.subscription.as_deref() == Some(t.name.as_str()) =>
            {
                let mut sub = Subscription::new(t.name.clone());
                for f in fields {
                    let mut out =
                        SubscriptionField::new(f.name.clone(), type_ref(&f.ty), unused_events);
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
                let mut obj = Object::new(t.name.clone());
                if let Some(d) = &t.description {
                    obj = obj.description(d.clone());
                }
                for i in implements {
                    obj = obj.implement(i.clone());
                }
                for f in fields {
                    let mut out = Field::new(f.name.clone(), type_ref(&f.ty), unused);
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
            TypePlanKind::Enum { values, .. } => {
                builder.register(Enum::new(t.name.clone()).items(values.iter().map(String::as_str)))
            }
            TypePlanKind::Scalar => builder.register(Scalar::new(t.name.clone())),
        };
    }
    builder.finish()
}
