//! The registry's templates, compiled once more into a form that renders
//! without Handlebars' per-expression costs (a path copied into a new
//! `Vec<String>` at every look-up, a helper's parameters collected into new
//! vectors and maps, a block context built for every `#each` item).
//!
//! Handlebars stays the parser and the reference. This module walks the syntax
//! tree Handlebars built and covers what Herald's templates use: text,
//! `{{path}}` and `{{{path}}}`, `@root`, `../`, `@index`/`@first`/`@last`/`@key`,
//! literals, subexpressions, Herald's helpers, the comparisons (eq, ne, gt, gte,
//! lt, lte, and, or, not), `#if`/`#unless`/`#each`/`#with` with `else` chains,
//! and partials (with hash parameters, partial blocks and `@partial-block`)
//! that are not indented. Whatever it does not cover, it reports as
//! [`Unsupported`] — a template when it is compiled, a value when it is
//! rendered (a missing variable, an error of a helper, an unusual comparison) —
//! and the caller renders that message with Handlebars, which gives the output
//! or the error it always gave. In debug builds every render is checked
//! against Handlebars' (see `Templates::render`).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;

use handlebars::template::{
    DecoratorTemplate, HelperTemplate, Parameter, Template, TemplateElement,
};
use handlebars::{Path, PathSeg};
use serde_json::Value;

use super::helpers::{self, Args, Compute, Param};

/// Not covered here: render with Handlebars instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsupported;

type Result<T> = std::result::Result<T, Unsupported>;

#[derive(Debug)]
enum Seg {
    Named(String),
    Up,
    Root,
}

#[derive(Debug)]
enum Expr {
    Path { raw: String, segs: Vec<Seg> },
    Local { level: usize, name: String },
    Literal(Value),
    Call(Call),
}

#[derive(Debug)]
struct Call {
    name: String,
    helper: Helper,
    params: Vec<Expr>,
    /// Each parameter's path as written, for a helper's "missing" error.
    paths: Vec<Option<String>>,
    hash: Vec<(String, Expr)>,
    /// The call as written (name, parameters, sorted hash): the same text
    /// in the HTML, the text part and the subject is the same computation.
    key: String,
    /// Where its result is kept for the message being rendered ([`Memo`]).
    slot: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Helper {
    Own(Compute),
    Compare(Comparison),
    And,
    Or,
    Not,
}

#[derive(Debug, Clone, Copy)]
enum Comparison {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

type Nodes = Vec<Node>;

#[derive(Debug)]
enum Node {
    Text(String),
    Value {
        expr: Expr,
        escape: bool,
    },
    If {
        cond: Expr,
        positive: bool,
        include_zero: bool,
        then: Option<Nodes>,
        inverse: Option<Nodes>,
    },
    Each {
        list: Expr,
        body: Option<Nodes>,
        inverse: Option<Nodes>,
    },
    With {
        value: Expr,
        body: Option<Nodes>,
        inverse: Option<Nodes>,
    },
    Partial {
        name: String,
        hash: Vec<(String, Expr)>,
        block: Option<Nodes>,
    },
    PartialBlock {
        fallback: Option<Nodes>,
    },
}

/// Handlebars' own helpers that this module does not implement: a template
/// naming one of them renders through Handlebars.
const OTHER_HELPERS: [&str; 12] = [
    "lookup",
    "raw",
    "log",
    "len",
    "lowerCamelCase",
    "upperCamelCase",
    "snakeCase",
    "kebabCase",
    "shoutySnakeCase",
    "shoutyKebabCase",
    "titleCase",
    "trainCase",
];

fn helper(name: &str) -> Option<Result<Helper>> {
    use Comparison::*;
    Some(Ok(match name {
        "eq" => Helper::Compare(Eq),
        "ne" => Helper::Compare(Ne),
        "gt" => Helper::Compare(Gt),
        "gte" => Helper::Compare(Gte),
        "lt" => Helper::Compare(Lt),
        "lte" => Helper::Compare(Lte),
        "and" => Helper::And,
        "or" => Helper::Or,
        "not" => Helper::Not,
        "if" | "unless" | "each" | "with" => return Some(Err(Unsupported)),
        n if OTHER_HELPERS.contains(&n) => return Some(Err(Unsupported)),
        n => Helper::Own(helpers::compute(n)?),
    }))
}

/// Every template of one registry, compiled where this module covers it.
pub(crate) struct Compiled {
    /// `None`: the template uses something not covered here.
    templates: HashMap<String, Option<Nodes>>,
    escape: bool,
}

impl Compiled {
    /// `escape`: whether the registry HTML-escapes values (the HTML part).
    pub(crate) fn new(escape: bool) -> Compiled {
        Compiled {
            templates: HashMap::new(),
            escape,
        }
    }

    /// Compiles (again) the template Handlebars registered as `name`; its
    /// helper calls get their places in a message's [`Memo`] from `slots`,
    /// which the registries of one message's parts share.
    pub(crate) fn add(&mut self, name: &str, template: &Template, slots: &mut Slots) {
        let mut compiled = nodes(template).ok();
        if let Some(nodes) = &mut compiled {
            slots.assign_nodes(nodes);
        }
        self.templates.insert(name.to_string(), compiled);
    }

    /// Renders `name` with `data` as the context.
    #[cfg(test)]
    pub(crate) fn render(&self, name: &str, data: &Value) -> Result<String> {
        self.render_with(name, data, &Memo::default())
    }

    /// Renders `name` with `data` as the context, taking helper results
    /// already computed for `data` from `memo` (and leaving new ones there).
    pub(crate) fn render_with(&self, name: &str, data: &Value, memo: &Memo) -> Result<String> {
        let nodes = self.get(name)?;
        let mut out = String::with_capacity(4096);
        let mut state = State {
            env: Env { root: data, memo },
            partial_blocks: Vec::new(),
            active: vec![name],
        };
        let scope = Scope {
            base: Base::Value(data),
            locals: Locals::default(),
            params: &[],
            parent: None,
        };
        self.render_nodes(nodes, &scope, &mut state, &mut out)?;
        Ok(out)
    }

    fn get(&self, name: &str) -> Result<&Nodes> {
        self.templates
            .get(name)
            .and_then(Option::as_ref)
            .ok_or(Unsupported)
    }
}

/// Places for helper results, one per distinct call (by its text) in any
/// template of the registries that share it.
#[derive(Default)]
pub(crate) struct Slots(HashMap<String, usize>);

impl Slots {
    fn assign_nodes(&mut self, nodes: &mut [Node]) {
        for node in nodes {
            match node {
                Node::Text(_) | Node::PartialBlock { fallback: None } => {}
                Node::Value { expr, .. } => self.assign(expr),
                Node::If {
                    cond: e,
                    then: a,
                    inverse: b,
                    ..
                }
                | Node::Each {
                    list: e,
                    body: a,
                    inverse: b,
                }
                | Node::With {
                    value: e,
                    body: a,
                    inverse: b,
                } => {
                    self.assign(e);
                    for n in [a, b].into_iter().flatten() {
                        self.assign_nodes(n);
                    }
                }
                Node::Partial { hash, block, .. } => {
                    for (_, e) in hash {
                        self.assign(e);
                    }
                    if let Some(n) = block {
                        self.assign_nodes(n);
                    }
                }
                Node::PartialBlock { fallback: Some(n) } => self.assign_nodes(n),
            }
        }
    }

    fn assign(&mut self, e: &mut Expr) {
        if let Expr::Call(c) = e {
            let next = self.0.len();
            c.slot = Some(*self.0.entry(c.key.clone()).or_insert(next));
            for p in &mut c.params {
                self.assign(p);
            }
            for (_, p) in &mut c.hash {
                self.assign(p);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// The helper results of one message, by [`Slots`]: the HTML part, the text
/// part and the subject compute `{{format_date now "%d %B"}}` once between
/// them. Only a call evaluated against the message's own context (not inside
/// an `#each`, a `#with` or a partial with parameters) is kept: elsewhere the
/// same text means other values.
#[derive(Default)]
pub(crate) struct Memo(Vec<OnceCell<Value>>);

impl Memo {
    pub(crate) fn new(slots: usize) -> Memo {
        Memo(std::iter::repeat_with(OnceCell::new).take(slots).collect())
    }
}

fn nodes(t: &Template) -> Result<Nodes> {
    let mut out = Vec::with_capacity(t.elements.len());
    for e in &t.elements {
        if let Some(n) = node(e)? {
            // Adjacent text (around a comment) is written in one piece.
            if let (Node::Text(next), Some(Node::Text(prev))) = (&n, out.last_mut()) {
                prev.push_str(next);
            } else {
                out.push(n);
            }
        }
    }
    Ok(out)
}

fn optional_nodes(t: &Option<Template>) -> Result<Option<Nodes>> {
    t.as_ref().map(nodes).transpose()
}

fn node(e: &TemplateElement) -> Result<Option<Node>> {
    Ok(Some(match e {
        TemplateElement::RawString(s) => Node::Text(s.clone()),
        TemplateElement::Comment(_) => return Ok(None),
        TemplateElement::Expression(ht) => value_node(ht, true)?,
        TemplateElement::HtmlExpression(ht) => value_node(ht, false)?,
        TemplateElement::HelperBlock(ht) => block_node(ht)?,
        TemplateElement::PartialExpression(dt) | TemplateElement::PartialBlock(dt) => {
            partial_node(dt)?
        }
        _ => return Err(Unsupported),
    }))
}

fn name_of(p: &Parameter) -> Result<&str> {
    match p {
        Parameter::Name(n) => Ok(n),
        Parameter::Path(Path::Relative((_, raw)) | Path::Local((_, _, raw))) => Ok(raw),
        _ => Err(Unsupported),
    }
}

fn value_node(ht: &HelperTemplate, escape: bool) -> Result<Node> {
    if ht.block_param.is_some() || ht.template.is_some() || ht.inverse.is_some() {
        return Err(Unsupported);
    }
    let name = name_of(&ht.name)?;
    let expr = if ht.params.is_empty() && ht.hash.is_empty() {
        match (helper(name), &ht.name) {
            (Some(h), _) => Expr::Call(Call {
                name: name.to_string(),
                helper: h?,
                params: Vec::new(),
                paths: Vec::new(),
                hash: Vec::new(),
                key: format!("({name})"),
                slot: None,
            }),
            (None, Parameter::Path(p)) => path(p)?,
            (None, _) => return Err(Unsupported),
        }
    } else {
        call(ht)?
    };
    Ok(Node::Value { expr, escape })
}

fn call(ht: &HelperTemplate) -> Result<Expr> {
    let name = name_of(&ht.name)?;
    let helper = helper(name).ok_or(Unsupported)??;
    let params: Vec<Expr> = ht.params.iter().map(expr).collect::<Result<_>>()?;
    let paths = params
        .iter()
        .map(|p| match p {
            Expr::Path { raw, .. } => Some(raw.clone()),
            _ => None,
        })
        .collect();
    let mut hash = hash(&ht.hash)?;
    hash.sort_by(|a, b| a.0.cmp(&b.0));
    let mut key = format!("({name}");
    for p in &params {
        key.push(' ');
        push_key(&mut key, p);
    }
    for (k, e) in &hash {
        key.push(' ');
        key.push_str(k);
        key.push('=');
        push_key(&mut key, e);
    }
    key.push(')');
    Ok(Expr::Call(Call {
        name: name.to_string(),
        helper,
        params,
        paths,
        hash,
        key,
        slot: None,
    }))
}

/// An expression as text, distinct for distinct expressions.
fn push_key(out: &mut String, e: &Expr) {
    match e {
        Expr::Path { raw, .. } => out.push_str(raw),
        Expr::Local { level, name } => {
            out.push_str(&"../".repeat(*level));
            out.push('@');
            out.push_str(name);
        }
        // JSON text: a string literal is quoted, so never taken for a path.
        Expr::Literal(v) => out.push_str(&v.to_string()),
        Expr::Call(c) => out.push_str(&c.key),
    }
}

fn hash(h: &HashMap<String, Parameter>) -> Result<Vec<(String, Expr)>> {
    h.iter().map(|(k, v)| Ok((k.clone(), expr(v)?))).collect()
}

fn expr(p: &Parameter) -> Result<Expr> {
    match p {
        Parameter::Path(p) => path(p),
        Parameter::Literal(v) => Ok(Expr::Literal(v.clone())),
        Parameter::Subexpression(s) => match s.as_element() {
            TemplateElement::Expression(ht) if ht.block_param.is_none() => call(ht),
            _ => Err(Unsupported),
        },
        _ => Err(Unsupported),
    }
}

fn path(p: &Path) -> Result<Expr> {
    match p {
        Path::Local((level, name, _)) => Ok(Expr::Local {
            level: *level,
            name: name.clone(),
        }),
        Path::Relative((segs, raw)) => {
            let segs = segs
                .iter()
                .map(|s| match s {
                    PathSeg::Named(n) => Ok(Seg::Named(n.clone())),
                    // The grammar's rule type is private; its name is not.
                    PathSeg::Ruled(rule) => match format!("{rule:?}").as_str() {
                        "path_up" => Ok(Seg::Up),
                        "path_root" => Ok(Seg::Root),
                        _ => Err(Unsupported),
                    },
                    _ => Err(Unsupported),
                })
                .collect::<Result<_>>()?;
            Ok(Expr::Path {
                raw: raw.clone(),
                segs,
            })
        }
    }
}

fn block_node(ht: &HelperTemplate) -> Result<Node> {
    let name = name_of(&ht.name)?;
    if ht.block_param.is_some() || ht.params.len() != 1 {
        return Err(Unsupported);
    }
    let first = expr(&ht.params[0])?;
    let (then, inverse) = (optional_nodes(&ht.template)?, optional_nodes(&ht.inverse)?);
    let only_hash = |allowed: &[&str]| ht.hash.keys().all(|k| allowed.contains(&k.as_str()));
    Ok(match name {
        "if" | "unless" if only_hash(&["includeZero"]) => {
            let include_zero = match ht.hash.get("includeZero") {
                None => false,
                Some(Parameter::Literal(Value::Bool(b))) => *b,
                Some(Parameter::Literal(_)) => false,
                Some(_) => return Err(Unsupported),
            };
            Node::If {
                cond: first,
                positive: name == "if",
                include_zero,
                then,
                inverse,
            }
        }
        "each" if ht.hash.is_empty() => Node::Each {
            list: first,
            body: then,
            inverse,
        },
        "with" if ht.hash.is_empty() => Node::With {
            value: first,
            body: then,
            inverse,
        },
        _ => return Err(Unsupported),
    })
}

fn partial_node(dt: &DecoratorTemplate) -> Result<Node> {
    // An indented partial has every line of its output indented: not covered.
    if dt.indent.as_deref().is_some_and(|i| !i.is_empty()) || !dt.params.is_empty() {
        return Err(Unsupported);
    }
    let name = name_of(&dt.name)?;
    let block = optional_nodes(&dt.template)?;
    if name == "@partial-block" {
        if !dt.hash.is_empty() {
            return Err(Unsupported);
        }
        return Ok(Node::PartialBlock { fallback: block });
    }
    Ok(Node::Partial {
        name: name.to_string(),
        hash: hash(&dt.hash)?,
        block,
    })
}

// ---------------------------------------------------------------- rendering

/// What a block's paths resolve against: a value, or (in a partial called with
/// hash parameters) the enclosing object with those parameters laid over it,
/// which Handlebars builds as a merged copy.
#[derive(Clone, Copy)]
enum Base<'a> {
    Value(&'a Value),
    Over {
        params: &'a [(String, Value)],
        under: &'a Base<'a>,
    },
}

impl<'a> Base<'a> {
    fn is_object(&self) -> bool {
        match self {
            Base::Value(v) => v.is_object(),
            Base::Over { .. } => true,
        }
    }

    fn get(&self, key: &str) -> Result<Option<&'a Value>> {
        match *self {
            Base::Value(v) => get_data(Some(v), key),
            Base::Over { params, under } => match params.iter().find(|(k, _)| k == key) {
                Some((_, v)) => Ok(Some(v)),
                None => under.get(key),
            },
        }
    }

    /// Follows `names` from here; the merged object itself is not available.
    fn walk<'n>(&self, mut names: impl Iterator<Item = &'n str>) -> Result<Option<&'a Value>> {
        let mut at = match (self, names.next()) {
            (Base::Value(v), None) => return Ok(Some(v)),
            (Base::Over { .. }, None) => return Err(Unsupported),
            (_, Some(first)) => self.get(first)?,
        };
        for name in names {
            at = get_data(at, name)?;
        }
        Ok(at)
    }
}

/// Handlebars' look-up of one path segment (an array index must be a number).
fn get_data<'a>(v: Option<&'a Value>, key: &str) -> Result<Option<&'a Value>> {
    Ok(match v {
        Some(Value::Array(l)) => l.get(key.parse::<usize>().map_err(|_| Unsupported)?),
        Some(Value::Object(m)) => m.get(key),
        _ => None,
    })
}

#[derive(Clone, Copy, Default)]
struct Locals<'a> {
    index: Option<usize>,
    first: Option<bool>,
    last: Option<bool>,
    key: Option<&'a str>,
}

/// One of Handlebars' block contexts: the template's, an `#each` item's, a
/// `#with`'s or a partial's. `parent` is the enclosing one (`../`).
struct Scope<'a> {
    base: Base<'a>,
    locals: Locals<'a>,
    /// A partial's hash parameters, which Handlebars also makes block
    /// parameters: a path starting with one of their names means it, in every
    /// block inside the partial.
    params: &'a [(String, Value)],
    parent: Option<&'a Scope<'a>>,
}

impl<'a> Scope<'a> {
    /// The block of an `#each` item: the item, `@index`, `@first`, `@last`
    /// and, for an object's, `@key`; no locals of the enclosing block.
    fn item(
        parent: &'a Scope<'a>,
        item: &'a Value,
        index: usize,
        len: usize,
        key: Option<&'a str>,
    ) -> Scope<'a> {
        Scope {
            base: Base::Value(item),
            locals: Locals {
                index: Some(index),
                first: Some(index == 0),
                last: Some(index + 1 == len),
                key,
            },
            params: &[],
            parent: Some(parent),
        }
    }

    fn up(&self, levels: usize) -> Option<&Scope<'a>> {
        let mut s = self;
        for _ in 0..levels {
            s = s.parent?;
        }
        Some(s)
    }

    fn param(&self, name: &str) -> Option<&'a Value> {
        let mut s = Some(self);
        while let Some(scope) = s {
            if let Some((_, v)) = scope.params.iter().find(|(k, _)| k == name) {
                return Some(v);
            }
            s = scope.parent;
        }
        None
    }
}

/// What every expression of one render is evaluated with.
#[derive(Clone, Copy)]
struct Env<'a> {
    root: &'a Value,
    memo: &'a Memo,
}

struct State<'a, 'n> {
    env: Env<'a>,
    /// Rendered partial-block contents, innermost partial last.
    partial_blocks: Vec<Option<String>>,
    /// Templates being rendered, outermost first (a partial may not recurse here).
    active: Vec<&'n str>,
}

/// A value and whether it was missing (Handlebars then passes `null`).
enum Got<'a> {
    Missing,
    Value(Cow<'a, Value>),
}

impl Got<'_> {
    fn value(&self) -> &Value {
        match self {
            Got::Missing => &Value::Null,
            Got::Value(v) => v,
        }
    }
}

impl<'a> From<Option<&'a Value>> for Got<'a> {
    fn from(v: Option<&'a Value>) -> Self {
        v.map_or(Got::Missing, |v| Got::Value(Cow::Borrowed(v)))
    }
}

struct CallArgs<'c, 'a> {
    name: &'c str,
    params: &'c [Got<'a>],
    paths: &'c [Option<String>],
    hash: &'c [(&'c str, Got<'a>)],
}

impl Args for CallArgs<'_, '_> {
    fn name(&self) -> &str {
        self.name
    }
    fn param(&self, i: usize) -> Option<Param<'_>> {
        self.params.get(i).map(|g| Param {
            value: g.value(),
            missing: matches!(g, Got::Missing),
            path: self.paths.get(i).and_then(Option::as_deref),
        })
    }
    fn hash_get(&self, key: &str) -> Option<&Value> {
        self.hash
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, g)| g.value())
    }
}

impl Compiled {
    fn render_nodes<'n>(
        &'n self,
        nodes: &'n [Node],
        scope: &Scope<'_>,
        state: &mut State<'_, 'n>,
        out: &mut String,
    ) -> Result<()> {
        for node in nodes {
            self.render_node(node, scope, state, out)?;
        }
        Ok(())
    }

    fn render_opt<'n>(
        &'n self,
        nodes: &'n Option<Nodes>,
        scope: &Scope<'_>,
        state: &mut State<'_, 'n>,
        out: &mut String,
    ) -> Result<()> {
        match nodes {
            Some(n) => self.render_nodes(n, scope, state, out),
            None => Ok(()),
        }
    }

    fn render_node<'n>(
        &'n self,
        node: &'n Node,
        scope: &Scope<'_>,
        state: &mut State<'_, 'n>,
        out: &mut String,
    ) -> Result<()> {
        match node {
            Node::Text(s) => out.push_str(s),
            Node::Value { expr, escape } => {
                // Strict mode: a missing value is an error, reported by Handlebars.
                let Got::Value(v) = eval(expr, scope, state.env)? else {
                    return Err(Unsupported);
                };
                push_rendered(&v, *escape && self.escape, out);
            }
            Node::If {
                cond,
                positive,
                include_zero,
                then,
                inverse,
            } => {
                let truthy = is_truthy(eval(cond, scope, state.env)?.value(), *include_zero);
                let branch = if truthy == *positive { then } else { inverse };
                self.render_opt(branch, scope, state, out)?;
            }
            Node::Each {
                list,
                body,
                inverse,
            } => {
                let Some(body) = body else { return Ok(()) };
                let got = eval(list, scope, state.env)?;
                match got.value() {
                    Value::Array(items) if !items.is_empty() || inverse.is_none() => {
                        for (i, item) in items.iter().enumerate() {
                            let child = Scope::item(scope, item, i, items.len(), None);
                            self.render_nodes(body, &child, state, out)?;
                        }
                    }
                    Value::Object(map) if !map.is_empty() || inverse.is_none() => {
                        for (i, (key, item)) in map.iter().enumerate() {
                            let child = Scope::item(scope, item, i, map.len(), Some(key));
                            self.render_nodes(body, &child, state, out)?;
                        }
                    }
                    // Strict mode: nothing to iterate and no else is an error.
                    _ => match inverse {
                        Some(inv) => self.render_nodes(inv, scope, state, out)?,
                        None => return Err(Unsupported),
                    },
                }
            }
            Node::With {
                value,
                body,
                inverse,
            } => {
                let got = eval(value, scope, state.env)?;
                if is_truthy(got.value(), false) {
                    let child = Scope {
                        base: Base::Value(got.value()),
                        locals: scope.locals,
                        params: &[],
                        parent: Some(scope),
                    };
                    self.render_opt(body, &child, state, out)?;
                } else {
                    // Strict mode: nothing to enter and no else is an error.
                    match inverse {
                        Some(inv) => self.render_nodes(inv, scope, state, out)?,
                        None => return Err(Unsupported),
                    }
                }
            }
            Node::Partial { name, hash, block } => {
                if state.active.contains(&name.as_str()) {
                    return Err(Unsupported);
                }
                let partial = self.get(name)?;
                let params = hash
                    .iter()
                    .map(|(k, e)| Ok((k.clone(), eval(e, scope, state.env)?.value().clone())))
                    .collect::<Result<Vec<_>>>()?;
                let child = if params.is_empty() {
                    Scope {
                        base: scope.base,
                        locals: scope.locals,
                        params: &[],
                        parent: Some(scope),
                    }
                } else if scope.base.is_object() {
                    Scope {
                        base: Base::Over {
                            params: &params,
                            under: &scope.base,
                        },
                        locals: scope.locals,
                        params: &params,
                        parent: Some(scope),
                    }
                } else {
                    return Err(Unsupported);
                };
                // The block's content is rendered first, in the partial's context.
                let content = match block {
                    Some(nodes) => {
                        let mut s = String::new();
                        self.render_nodes(nodes, &child, state, &mut s)?;
                        Some(s)
                    }
                    None => None,
                };
                state.partial_blocks.push(content);
                state.active.push(name);
                let result = self.render_nodes(partial, &child, state, out);
                state.active.pop();
                state.partial_blocks.pop();
                result?;
            }
            Node::PartialBlock { fallback } => match (state.partial_blocks.last(), fallback) {
                (Some(Some(content)), _) => out.push_str(content),
                (_, Some(nodes)) => self.render_nodes(nodes, scope, state, out)?,
                (_, None) => return Err(Unsupported),
            },
        }
        Ok(())
    }
}

fn eval<'a>(e: &'a Expr, scope: &Scope<'a>, env: Env<'a>) -> Result<Got<'a>> {
    let root = env.root;
    Ok(match e {
        Expr::Literal(v) => Got::Value(Cow::Borrowed(v)),
        Expr::Path { segs, .. } => Got::from(resolve(segs, scope, root)?),
        Expr::Local { level, name } => {
            let locals = scope.up(*level).map(|s| s.locals).unwrap_or_default();
            match name.as_str() {
                "index" => locals.index.map(Value::from),
                "first" => locals.first.map(Value::from),
                "last" => locals.last.map(Value::from),
                "key" => locals.key.map(Value::from),
                _ => None,
            }
            .map_or(Got::Missing, |v| Got::Value(Cow::Owned(v)))
        }
        Expr::Call(c) => {
            let cell = c.slot.and_then(|at| env.memo.0.get(at));
            match cell {
                Some(cell) if in_message_context(scope, root) => match cell.get() {
                    Some(v) => Got::Value(Cow::Borrowed(v)),
                    None => {
                        let v = call_helper(c, scope, env)?;
                        Got::Value(Cow::Borrowed(cell.get_or_init(|| v)))
                    }
                },
                _ => Got::Value(Cow::Owned(call_helper(c, scope, env)?)),
            }
        }
    })
}

/// Handlebars' path resolution (`parse_json_visitor` and `navigate`).
fn resolve<'a>(segs: &[Seg], scope: &Scope<'a>, root: &'a Value) -> Result<Option<&'a Value>> {
    let names = |from: usize| {
        segs[from.min(segs.len())..].iter().filter_map(|s| match s {
            Seg::Named(n) => Some(n.as_str()),
            _ => None,
        })
    };
    let mut depth = 0;
    let mut from_root = false;
    for seg in segs {
        match seg {
            Seg::Up => depth += 1,
            Seg::Root => {
                from_root = true;
                break;
            }
            Seg::Named(first) => {
                if let Some(v) = scope.param(first) {
                    return Base::Value(v).walk(names(depth + 1));
                }
                break;
            }
        }
    }
    if depth == 0 && from_root {
        return Base::Value(root).walk(names(0));
    }
    // `../` past the outermost block means the current one, as in Handlebars.
    let block = scope.up(depth).unwrap_or(scope);
    block.base.walk(names(0))
}

/// Whether `scope` and every block around it is the message's context itself:
/// no `#each` item or `#with` value, no partial's parameters, no locals.
fn in_message_context(scope: &Scope<'_>, root: &Value) -> bool {
    let mut s = Some(scope);
    while let Some(scope) = s {
        let own = matches!(scope.base, Base::Value(v) if std::ptr::eq(v, root));
        if !own
            || !scope.params.is_empty()
            || scope.locals.index.is_some()
            || scope.locals.key.is_some()
        {
            return false;
        }
        s = scope.parent;
    }
    true
}

fn call_helper<'a>(c: &'a Call, scope: &Scope<'a>, env: Env<'a>) -> Result<Value> {
    let params = c
        .params
        .iter()
        .map(|p| eval(p, scope, env))
        .collect::<Result<Vec<_>>>()?;
    match c.helper {
        Helper::Own(compute) => {
            let hash = c
                .hash
                .iter()
                .map(|(k, e)| Ok((k.as_str(), eval(e, scope, env)?)))
                .collect::<Result<Vec<_>>>()?;
            let args = CallArgs {
                name: &c.name,
                params: &params,
                paths: &c.paths,
                hash: &hash,
            };
            compute(&args).map_err(|_| Unsupported)
        }
        Helper::Compare(op) => {
            if !c.hash.is_empty() {
                return Err(Unsupported);
            }
            // Strict mode: a missing operand is an error.
            let [Got::Value(x), Got::Value(y), ..] = params.as_slice() else {
                return Err(Unsupported);
            };
            Ok(Value::Bool(compare(op, x, y)?))
        }
        Helper::And | Helper::Or | Helper::Not if !c.hash.is_empty() => Err(Unsupported),
        Helper::And => Ok(Value::Bool(
            params.iter().all(|p| is_truthy(p.value(), false)),
        )),
        Helper::Or => Ok(Value::Bool(
            params.iter().any(|p| is_truthy(p.value(), false)),
        )),
        Helper::Not => match params.first() {
            Some(Got::Value(v)) => Ok(Value::Bool(!is_truthy(v, false))),
            _ => Err(Unsupported),
        },
    }
}

/// The comparisons for operands of one kind; mixed kinds (a number and a
/// numeric string, an integer and a float) are left to Handlebars.
fn compare(op: Comparison, x: &Value, y: &Value) -> Result<bool> {
    use std::cmp::Ordering;
    let ord = |x: &Value, y: &Value| -> Result<Option<Ordering>> {
        Ok(match (x, y) {
            (Value::Number(a), Value::Number(b)) => {
                if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
                    Some(a.cmp(&b))
                } else if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
                    Some(a.cmp(&b))
                } else if a.is_f64() && b.is_f64() {
                    a.as_f64()
                        .zip(b.as_f64())
                        .and_then(|(a, b)| a.partial_cmp(&b))
                } else {
                    return Err(Unsupported);
                }
            }
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
                return Err(Unsupported);
            }
            _ => None,
        })
    };
    Ok(match op {
        Comparison::Eq => x == y,
        Comparison::Ne => x != y,
        Comparison::Gt => ord(x, y)? == Some(Ordering::Greater),
        Comparison::Gte => ord(x, y)?.is_some_and(|o| o != Ordering::Less),
        Comparison::Lt => ord(x, y)? == Some(Ordering::Less),
        Comparison::Lte => ord(x, y)?.is_some_and(|o| o != Ordering::Greater),
    })
}

/// Handlebars' truthiness (`JsonTruthy`).
fn is_truthy(v: &Value, include_zero: bool) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => {
            if include_zero {
                n.as_f64().is_some_and(|f| !f.is_nan())
            } else {
                n.as_f64().is_some_and(f64::is_normal)
            }
        }
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Handlebars' rendering of a value (`JsonRender`), escaped or not.
fn push_rendered(v: &Value, escape: bool, out: &mut String) {
    match v {
        Value::String(s) if escape => super::push_escaped(out, s),
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Object(_) => out.push_str("[object]"),
        Value::Array(_) => {
            let mut s = String::new();
            render_array(v, &mut s);
            if escape {
                super::push_escaped(out, &s);
            } else {
                out.push_str(&s);
            }
        }
    }
}

fn render_array(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                render_array(item, out);
                if i + 1 < items.len() {
                    out.push_str(", ");
                }
            }
            out.push(']');
        }
        other => push_rendered(other, false, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Renders `source` (with `partials`) both ways. `Some(out)` when the
    /// compiled renderer covered it (and agreed with Handlebars), `None` when
    /// it left the message to Handlebars.
    fn both(source: &str, partials: &[(&str, &str)], data: &Value) -> Option<String> {
        let mut hbs = crate::render::registry(true);
        for (name, p) in partials {
            hbs.register_partial(name, p).unwrap();
        }
        hbs.register_template_string("t", source).unwrap();
        let mut fast = Compiled::new(true);
        let mut slots = Slots::default();
        for (name, t) in hbs.get_templates() {
            fast.add(name, t, &mut slots);
        }
        let reference = hbs.render("t", data);
        // Twice with one memo: the second render takes every helper result
        // the first kept, as the text part does after the HTML part.
        let memo = Memo::new(slots.len());
        let first = fast.render_with("t", data, &memo);
        match fast.render_with("t", data, &memo) {
            Ok(out) => {
                assert_eq!(first, Ok(out.clone()), "{source}: again with the memo");
                match reference {
                    Ok(r) => assert_eq!(out, r, "{source}"),
                    Err(e) => panic!("compiled rendered {source:?} where Handlebars fails: {e}"),
                }
                Some(out)
            }
            Err(Unsupported) => None,
        }
    }

    fn data() -> Value {
        json!({
            "customer": {"first_name": "Ann", "last_name": "", "email": "ann@example.com",
                "city": "Köln <Süd> & \"Nord\"", "orders": 12, "ltv": 1234.5, "vip": true,
                "zero": 0, "tags": ["a", "b<", 3], "address": {"street": "Main 1"},
                "created_at": "2026-01-05T10:00:00Z", "timezone": "Europe/Berlin"},
            "campaign": {"name": "winback"},
            "events": {"purchase": [
                {"product": "Shoe", "amount": 129.0, "quantity": 2, "occurred_at": "2026-11-01T09:00:00Z"},
                {"product": "Sock", "amount": 5, "occurred_at": "2026-10-01T09:00:00Z"},
                {"product": "Hat <b>", "occurred_at": "2026-09-01T09:00:00Z"}
            ], "view": []},
            "prefs": {"news": true, "offers": false},
            "unsubscribe_url": "https://t.example/u/x?a=1&b=2",
            "now": "2026-11-25T12:00:00Z"
        })
    }

    /// One call's text in other contexts means other values: only results
    /// computed against the message's own context are taken from the memo.
    #[test]
    fn memo_keeps_only_results_of_the_message_context() {
        let d = data();
        let source = "{{default amount 1}} {{#each events.purchase}}{{default amount 1}},\
            {{#with ../customer}}{{default orders 0}}{{/with}};{{/each}} {{default orders 0}}|\
            {{> p}}|{{> p who=\"A\"}}|{{> p}}|{{#with customer}}{{default orders 0}}{{/with}} \
            {{#if customer.vip}}{{default amount 1}}{{/if}} {{default amount 1}}";
        assert_eq!(
            both(source, &[("p", "{{default who \"x\"}}")], &d).as_deref(),
            Some("1 129.0,12;5,12;1,12; 0|x|A|x|12 1 1")
        );
    }

    #[test]
    fn agrees_with_handlebars() {
        let d = data();
        let cases = [
            "Hi {{customer.first_name}} {{customer.last_name}} from {{customer.city}}!",
            "{{{customer.city}}} {{customer.orders}} {{customer.ltv}} {{customer.vip}} {{customer.tags}} {{customer.address}}",
            "{{this.customer.first_name}} {{./customer.email}} {{@root.campaign.name}} {{customer/address/street}}",
            "{{default customer.nickname \"there\"}} {{upper customer.first_name}} {{lower (default customer.x \"ÄB\")}} {{capitalize \"émile\"}}",
            "{{truncate \"a long sentence here\" 8}} {{truncate \"a long sentence\" 9 suffix=\"...\"}}",
            "{{format_number customer.orders}} {{format_currency customer.ltv \"EUR\"}} {{format_date customer.created_at \"%d %B %Y\" customer.timezone}}",
            "{{#each events.purchase}}{{@index}}:{{product}}{{#if @first}} first{{/if}}{{#if @last}} last{{/if}} {{../campaign.name}} {{@root.customer.first_name}}{{#if amount}} {{format_currency amount \"EUR\"}}{{/if}}\n{{/each}}",
            "{{#each prefs}}{{@key}}={{this}} {{@index}}/{{@first}}/{{@last}};{{/each}}",
            "{{#each events.view}}x{{else}}no views{{/each}}|{{#each events.view}}x{{/each}}",
            "{{#each customer.tags}}[{{this}}]{{/each}}",
            "{{#if customer.vip}}vip{{else if customer.orders}}orders{{else}}none{{/if}} {{#unless customer.zero}}zero{{/unless}} {{#if customer.zero includeZero=true}}z{{else}}nz{{/if}}",
            "{{#if customer.missing}}yes{{else}}no{{/if}} {{#if (gt customer.orders 10)}}many{{/if}} {{#if (eq customer.first_name \"Ann\")}}ann{{/if}}",
            "{{#if (and customer.vip (or customer.zero customer.orders) (not customer.zero))}}ok{{/if}} {{eq 1 1}} {{ne \"a\" \"b\"}} {{lt 1.5 2.5}} {{gte \"b\" \"a\"}}",
            "{{#with customer.address}}{{street}} {{../campaign.name}}{{/with}}{{#with customer.none}}x{{else}}no address{{/with}}",
            "{{#each events.purchase}}{{#with this}}{{@index}} {{product}}{{/with}};{{/each}}",
            "{{#each events.purchase}}{{#if (gt (default quantity 1) 1)}}{{quantity}}×{{/if}}{{default product \"?\"}} {{/each}}",
            "{{!-- comment --}}a {{! short }}b\n  {{#if customer.vip}}\n  standalone\n  {{/if}}\nc {{~customer.first_name~}} d",
            "<a href=\"{{unsubscribe_url}}\">x</a> {{default null \"literal <b>\"}} {{default customer.none 42}}",
        ];
        for source in cases {
            assert!(both(source, &[], &d).is_some(), "not covered: {source}");
        }
    }

    #[test]
    fn partials_agree_with_handlebars() {
        let d = data();
        let partials = [
            (
                "layout",
                "<title>{{default title \"Acme\"}}</title>{{#if preheader}}<p>{{preheader}}</p>{{/if}}\n{{> header}}\n<main>{{> @partial-block}}</main>\n{{customer.first_name}}",
            ),
            (
                "header",
                "<h1>{{campaign.name}} {{default title \"-\"}}</h1>",
            ),
            (
                "button",
                "<a href=\"{{href}}\">{{label}}</a> {{@root.customer.email}} {{default @index \"-\"}}",
            ),
            ("item", "{{product}}@{{@index}}"),
        ];
        let cases = [
            "{{#> layout title=\"Sale <now>\" preheader=customer.city}}Hi {{customer.first_name}} {{title}}\n{{> button href=\"https://x.example/?a=1&b=2\" label=\"Go\"}}{{/layout}}",
            "{{> header}} {{#each events.purchase}}{{> item}} {{/each}}",
            "{{#> layout}}{{#each events.purchase}}{{> button href=product label=@index}}{{/each}}{{/layout}}",
            "{{#each events.purchase}}{{> button href=product label=@index}}{{/each}}",
            "{{#each events.purchase}}{{> button href=product label=\"x\"}}{{/each}}",
            "{{#> missing}}fallback {{customer.first_name}}{{/missing}}",
        ];
        for source in cases {
            let out = both(source, &partials, &d);
            if !source.contains("missing") {
                assert!(out.is_some(), "not covered: {source}");
            }
        }
    }

    #[test]
    fn leaves_errors_and_uncovered_templates_to_handlebars() {
        let d = data();
        for source in [
            "{{customer.nickname}}",
            "{{upper customer.nickname}}",
            "{{#each customer.nothing}}x{{/each}}",
            "{{#with customer.nothing}}x{{/with}}",
            "{{#with customer.zero}}x{{/with}}",
            "{{#each customer.tags as |t|}}{{t}}{{/each}}",
            "{{lookup customer \"first_name\"}}",
            "{{gt customer.orders \"5\"}}",
            "{{customer.tags.x}}",
            "{{format_date \"yesterday\"}}",
        ] {
            assert_eq!(both(source, &[], &d), None, "{source}");
        }
        // An indented partial is not covered.
        assert_eq!(
            both("<div>\n  {{> p}}\n</div>", &[("p", "a\nb\n")], &d),
            None
        );
        // A partial including itself is left to Handlebars.
        assert_eq!(both("{{> p}}", &[("p", "x{{> p}}")], &d), None);
    }
}
