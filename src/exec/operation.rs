//! Stage ④¼ — the operation, planned once. Input: a validated document, its operation,
//! and the values of the variables its `@skip`/`@include` read. Output: an [`Operation`]:
//! each selection, for each concrete object type it may meet, as the list of fields in
//! response order — merged by response key, fragments resolved against the type,
//! `@skip`/`@include` applied — each field with its plan, its arguments, what its value's
//! named type needs to complete, and whether a `@rest` field lies below it.
//!
//! A request then only coerces its variables, fetches and writes: nothing is collected,
//! merged or looked up by type name while it runs. A document has one plan per set of
//! values of its condition variables (most have none, so one plan).

use crate::plan::{FieldPlan, Plan, TypePlanKind};
pub use crate::resolve::shape::Leaf;
use async_graphql::parser::types::{Directive, ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{Name, Pos, Positioned};
use async_graphql_value::{ConstValue, Value as GqlValue};
use std::collections::HashMap;
use std::sync::Arc;

/// Most fields one planned operation may hold (fragments spread many times and
/// abstract types multiply them); past it the operation is refused.
pub const MAX_PLANNED_FIELDS: usize = 100_000;

/// A planned operation.
pub struct Operation {
    /// The root type's selection.
    pub root: Arc<Shape>,
    /// Fields planned, in all (what the plan weighs).
    pub size: usize,
    /// Bytes of its last response: the next one's buffer starts this big (no regrowth
    /// and copying on the way there).
    pub last_response: std::sync::atomic::AtomicUsize,
}

/// A selection on one concrete object type: its fields in response order.
pub struct Shape {
    pub object: Arc<str>,
    pub fields: Vec<Planned>,
    /// A `@rest` field is selected here or below.
    pub rest: bool,
    /// What its caller must be to see an object of this type (`@authenticated`,
    /// `@requiresScopes` on it): checked where it is reached through an interface or
    /// union; a field returning it directly carries it too.
    pub access: Option<Arc<crate::plan::Access>>,
}

/// One response key of a selection.
pub struct Planned {
    /// Unique in the operation: fetched values are filed by it.
    pub id: u32,
    pub key: Arc<str>,
    /// `"key":`, ready to write.
    pub key_json: Box<[u8]>,
    pub pos: Pos,
    /// `None`: `__typename`.
    pub field: Option<Arc<FieldPlan>>,
    /// The first merged field's arguments, as written.
    pub arguments: Vec<(Positioned<Name>, Positioned<GqlValue>)>,
    /// What the value's named type needs.
    pub next: Next,
}

/// How a field's named type is completed.
pub enum Next {
    /// A scalar or an enum (or `__typename`).
    Leaf(Leaf),
    Object(Arc<Shape>),
    /// An interface or union: the concrete type is told by the value, each has its shape.
    Abstract {
        type_name: Arc<str>,
        shapes: Vec<Arc<Shape>>,
    },
}

impl Next {
    /// The shape of the object `value`: for an interface or union, that of the concrete
    /// type its discriminator names (`Err`: why it names none); `None` for a leaf.
    pub fn shape_of(
        &self,
        plan: &Plan,
        value: &serde_json::Value,
    ) -> Result<Option<&Arc<Shape>>, String> {
        match self {
            Next::Object(shape) => Ok(Some(shape)),
            Next::Abstract { type_name, shapes } => {
                let Some(possible) = plan.possible(type_name) else {
                    return Ok(None);
                };
                let concrete = possible.type_of(value)?;
                Ok(shapes.iter().find(|s| &*s.object == concrete))
            }
            Next::Leaf(_) => Ok(None),
        }
    }

    /// A `@rest` field is selected below.
    pub fn rest(&self) -> bool {
        match self {
            Next::Leaf(_) => false,
            Next::Object(s) => s.rest,
            Next::Abstract { shapes, .. } => shapes.iter().any(|s| s.rest),
        }
    }
}

/// The variables a document's `@skip`/`@include` read, in a fixed order: a plan is made
/// for each set of their values.
pub fn condition_variables(doc: &ExecutableDocument) -> Vec<Name> {
    fn walk(set: &SelectionSet, out: &mut Vec<Name>, depth: usize) {
        if depth > 256 {
            return;
        }
        for item in &set.items {
            let (directives, sub) = match &item.node {
                Selection::Field(f) => (&f.node.directives, Some(&f.node.selection_set.node)),
                Selection::InlineFragment(i) => {
                    (&i.node.directives, Some(&i.node.selection_set.node))
                }
                Selection::FragmentSpread(s) => (&s.node.directives, None),
            };
            for d in directives {
                if let Some(GqlValue::Variable(name)) = d.node.get_argument("if").map(|v| &v.node) {
                    if !out.contains(name) {
                        out.push(name.clone());
                    }
                }
            }
            if let Some(sub) = sub {
                walk(sub, out, depth + 1);
            }
        }
    }
    let mut out = Vec::new();
    for (_, op) in doc.operations.iter() {
        walk(&op.node.selection_set.node, &mut out, 0);
    }
    for f in doc.fragments.values() {
        walk(&f.node.selection_set.node, &mut out, 0);
    }
    out
}

/// Plans `set` on the root type `root_type`; `vars` are the coerced variables (only those
/// of conditions are read). `Err` when the plan would pass [`MAX_PLANNED_FIELDS`].
pub fn plan(
    plan: &Plan,
    doc: &ExecutableDocument,
    root_type: &str,
    set: &SelectionSet,
    vars: &HashMap<Name, ConstValue>,
) -> Result<Operation, TooLarge> {
    let mut planner = Planner {
        plan,
        doc,
        vars,
        shapes: HashMap::new(),
        next_id: 0,
    };
    let root = planner.shape(root_type, &[set], 0)?;
    Ok(Operation {
        root,
        size: planner.next_id as usize,
        last_response: Default::default(),
    })
}

/// The operation would plan more than [`MAX_PLANNED_FIELDS`] fields.
#[derive(Debug)]
pub struct TooLarge;

struct Planner<'a> {
    plan: &'a Plan,
    doc: &'a ExecutableDocument,
    vars: &'a HashMap<Name, ConstValue>,
    /// Shapes planned by (object type, selection sets' addresses): one per distinct
    /// selection, shared by every place it is reached from.
    shapes: HashMap<(String, Vec<usize>), Arc<Shape>>,
    next_id: u32,
}

/// Fields of one selection answering under one response key, merged.
struct Group<'d> {
    key: &'d str,
    node: &'d Positioned<Field>,
    field: Option<Arc<FieldPlan>>,
    sub: Vec<&'d SelectionSet>,
}

fn addr<T>(r: &T) -> usize {
    r as *const T as usize
}

impl<'a> Planner<'a> {
    fn shape(
        &mut self,
        object: &str,
        sets: &[&'a SelectionSet],
        depth: usize,
    ) -> Result<Arc<Shape>, TooLarge> {
        let memo = (object.to_string(), sets.iter().map(|s| addr(*s)).collect());
        if let Some(s) = self.shapes.get(&memo) {
            return Ok(s.clone());
        }
        let mut groups: Vec<Group<'a>> = Vec::new();
        let mut visited: Vec<&str> = Vec::new();
        for set in sets {
            self.collect(object, set, &mut groups, &mut visited);
        }
        let mut fields = Vec::with_capacity(groups.len());
        for g in groups {
            if self.next_id as usize >= MAX_PLANNED_FIELDS || depth > 256 {
                return Err(TooLarge);
            }
            let id = self.next_id;
            self.next_id += 1;
            let next = match &g.field {
                None => Next::Leaf(Leaf::String),
                Some(f) => self.next(f.ty.base_name(), &g.sub, depth + 1)?,
            };
            let key: Arc<str> = Arc::from(g.key);
            let mut key_json = serde_json::to_vec(g.key).unwrap_or_default();
            key_json.push(b':');
            fields.push(Planned {
                id,
                key,
                key_json: key_json.into_boxed_slice(),
                pos: g.node.pos,
                field: g.field,
                arguments: g.node.node.arguments.clone(),
                next,
            });
        }
        let rest = fields
            .iter()
            .any(|p| p.field.as_ref().is_some_and(|f| f.rest.is_some()) || p.next.rest());
        let access = self.plan.types.get(object).and_then(|t| t.access.clone());
        let shape = Arc::new(Shape {
            object: Arc::from(object),
            fields,
            rest,
            access,
        });
        self.shapes.insert(memo, shape.clone());
        Ok(shape)
    }

    fn next(
        &mut self,
        type_name: &str,
        sets: &[&'a SelectionSet],
        depth: usize,
    ) -> Result<Next, TooLarge> {
        let plan = self.plan;
        Ok(match plan.types.get(type_name).map(|t| &t.kind) {
            Some(TypePlanKind::Object { .. }) => Next::Object(self.shape(type_name, sets, depth)?),
            Some(TypePlanKind::Interface { possible, .. } | TypePlanKind::Union { possible }) => {
                let mut shapes = Vec::with_capacity(possible.types.len());
                for concrete in &possible.types {
                    shapes.push(self.shape(concrete, sets, depth)?);
                }
                Next::Abstract {
                    type_name: Arc::from(type_name),
                    shapes,
                }
            }
            _ => Next::Leaf(Leaf::of(plan, type_name)),
        })
    }

    fn condition(&self, directives: &[Positioned<Directive>]) -> bool {
        for d in directives {
            let include = match d.node.name.node.as_str() {
                "skip" => false,
                "include" => true,
                _ => continue,
            };
            let value = d.node.get_argument("if").map(|v| match &v.node {
                GqlValue::Boolean(b) => *b,
                GqlValue::Variable(name) => {
                    matches!(self.vars.get(name), Some(ConstValue::Boolean(true)))
                }
                _ => false,
            });
            if value.is_some_and(|v| v != include) {
                return false;
            }
        }
        true
    }

    fn applies(&self, condition: &str, object: &str) -> bool {
        condition == object
            || self
                .plan
                .possible(condition)
                .is_some_and(|p| p.types.iter().any(|t| t == object))
    }

    /// CollectFields (the spec's) for `object` over `set`, into `groups`.
    fn collect(
        &self,
        object: &str,
        set: &'a SelectionSet,
        groups: &mut Vec<Group<'a>>,
        visited: &mut Vec<&'a str>,
    ) {
        let fields = self.plan.object_fields(object).unwrap_or(&[]);
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    if !self.condition(&f.node.directives) {
                        continue;
                    }
                    let key = f.node.response_key().node.as_str();
                    if let Some(g) = groups.iter_mut().find(|g| g.key == key) {
                        g.sub.push(&f.node.selection_set.node);
                        continue;
                    }
                    let name = f.node.name.node.as_str();
                    let field = fields.iter().find(|p| p.name == name).or_else(|| {
                        // `__schema` and `__type`, which validation allows on the query
                        // root only.
                        self.plan.introspection.root_field(name)
                    });
                    if field.is_none() && name != "__typename" {
                        continue; // validation makes this unreachable
                    }
                    groups.push(Group {
                        key,
                        node: f,
                        field: field.cloned(),
                        sub: vec![&f.node.selection_set.node],
                    });
                }
                Selection::InlineFragment(i) => {
                    if !self.condition(&i.node.directives) {
                        continue;
                    }
                    if let Some(c) = &i.node.type_condition {
                        if !self.applies(&c.node.on.node, object) {
                            continue;
                        }
                    }
                    self.collect(object, &i.node.selection_set.node, groups, visited);
                }
                Selection::FragmentSpread(s) => {
                    let name = s.node.fragment_name.node.as_str();
                    if !self.condition(&s.node.directives) || visited.contains(&name) {
                        continue;
                    }
                    visited.push(name);
                    let Some(frag) = self.doc.fragments.get(&s.node.fragment_name.node) else {
                        continue;
                    };
                    if !self.applies(&frag.node.type_condition.node.on.node, object) {
                        continue;
                    }
                    self.collect(object, &frag.node.selection_set.node, groups, visited);
                }
            }
        }
    }
}
