//! The condition tree of a campaign's audience and its compiler to SQL.
//!
//! Pure: a [`Condition`] plus a [`Backend`](crate::dialect::Backend) and the
//! current time become SQL text and a list of bound values ([`Compiled`]).
//! [`compile`] is the one entry point, for every caller: a campaign's audience,
//! `when:`/`goal:` about an entry, the goal event of a report ([`Predicate`]).
//! Nothing here touches a database; [`crate::store`] runs what this module
//! writes.
//!
//! Semantics, shared by the compiler and the test suite's independent evaluator:
//! - An attribute (or built-in field) that is missing or JSON `null` matches no
//!   comparison; only `exists: false` matches it.
//! - Comparisons respect JSON types: numbers compare as numbers, strings as
//!   strings (byte order), booleans only with `eq`/`ne`/`in`/`not_in`. A value of
//!   another type than the operand matches `ne`/`not_in` (it is present and not
//!   equal) and nothing else.
//! - `contains`: a string containing the text, or an array with that string.
//! - `within: D`: a timestamp at or after now − D; `older_than: D`: before now − D.
//!   Attribute timestamps are RFC 3339 strings; anything else matches neither.
//! - Event conditions count the customer's interactions of that kind (in the
//!   window, matching every `where`); the count must lie in `min_count..=max_count`.

mod compile;

use serde_json::Number;

use crate::quantity::Span;

pub use compile::{Compiled, Context, Param, Predicate, compile};

/// A node of an audience, `when:` or `goal:` tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every condition holds (an empty list always holds).
    All(Vec<Condition>),
    /// At least one condition holds (an empty list never holds).
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// A test on a customer column or JSON attribute.
    Attribute(Test),
    /// A test on the customer's interactions of one kind.
    Event(EventCondition),
    /// The customer opened the email of this step of the same campaign.
    Opened(String),
    /// The customer clicked a link in the email of this step of the same campaign.
    Clicked(String),
}

/// What an `attribute:` condition looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Column(Column),
    /// A path into the customer's JSON attributes (`address.city` → `["address", "city"]`).
    Attribute(Vec<String>),
}

/// The built-in customer fields a condition may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Email,
    FirstName,
    LastName,
    ExternalId,
    Timezone,
    /// Epoch milliseconds; compared with `within`, `older_than` and RFC 3339 bounds.
    CreatedAt,
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Email,
        Column::FirstName,
        Column::LastName,
        Column::ExternalId,
        Column::Timezone,
        Column::CreatedAt,
    ];

    /// The name in campaign files, which is also the SQL column name.
    pub fn name(self) -> &'static str {
        match self {
            Column::Email => "email",
            Column::FirstName => "first_name",
            Column::LastName => "last_name",
            Column::ExternalId => "external_id",
            Column::Timezone => "timezone",
            Column::CreatedAt => "created_at",
        }
    }

    pub fn from_name(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One operator applied to a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub subject: Subject,
    pub op: Op,
}

/// A `where:` test on an interaction's JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTest {
    pub path: Vec<String>,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventCondition {
    pub kind: String,
    pub within: Option<Span>,
    pub min_count: u32,
    pub max_count: Option<u32>,
    pub filters: Vec<FieldTest>,
}

/// A comparison operand as written in YAML.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Number(Number),
    Bool(bool),
}

impl Scalar {
    /// The operand as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Text(s) => serde_json::Value::String(s.clone()),
            Scalar::Number(n) => serde_json::Value::Number(n.clone()),
            Scalar::Bool(b) => serde_json::Value::Bool(*b),
        }
    }
}

/// Exactly one operator per condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Scalar),
    Ne(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Gt(Scalar),
    Gte(Scalar),
    Lt(Scalar),
    Lte(Scalar),
    Contains(String),
    StartsWith(String),
    Exists(bool),
    Within(Span),
    OlderThan(Span),
}

/// Operator names in the order the error messages list them.
pub const OPERATORS: [&str; 13] = [
    "eq",
    "ne",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "starts_with",
    "exists",
    "within",
    "older_than",
];

impl Condition {
    /// Calls `f` on every node, depth first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Condition)) {
        f(self);
        match self {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.walk(f)),
            Condition::Not(c) => c.walk(f),
            _ => {}
        }
    }
}
