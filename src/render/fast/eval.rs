//! Rendering the compiled tree: Handlebars' semantics (path look-up, block
//! contexts, truthiness, how values are written) without its per-expression
//! allocation. A value not covered ends the render with [`Unsupported`].

use std::borrow::Cow;

use serde_json::Value;

use super::compile::{Call, Comparison, Expr, Helper, Node, Nodes, Seg};
use super::{Compiled, Memo, Result, Unsupported};
use crate::render::helpers::{Args, Param};

/// Renders `nodes`, the template `name`, with `data` as the context.
pub(super) fn render(
    compiled: &Compiled,
    name: &str,
    nodes: &Nodes,
    data: &Value,
    memo: &Memo,
) -> Result<String> {
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
    compiled.render_nodes(nodes, &scope, &mut state, &mut out)?;
    Ok(out)
}

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
        Value::String(s) if escape => crate::render::push_escaped(out, s),
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Object(_) => out.push_str("[object]"),
        Value::Array(_) => {
            let mut s = String::new();
            render_array(v, &mut s);
            if escape {
                crate::render::push_escaped(out, &s);
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
