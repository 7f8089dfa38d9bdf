//! Handlebars' syntax tree of a template → the tree [`Compiled`](super::Compiled) renders, or
//! [`Unsupported`] when the template uses something not covered here.

use std::collections::HashMap;

use handlebars::template::{
    DecoratorTemplate, HelperTemplate, Parameter, Template, TemplateElement,
};
use handlebars::{Path, PathSeg};
use serde_json::Value;

use super::{Result, Slots, Unsupported};
use crate::render::helpers::{self, Compute};

#[derive(Debug)]
pub(super) enum Seg {
    Named(String),
    Up,
    Root,
}

#[derive(Debug)]
pub(super) enum Expr {
    Path { raw: String, segs: Vec<Seg> },
    Local { level: usize, name: String },
    Literal(Value),
    Call(Call),
}

#[derive(Debug)]
pub(super) struct Call {
    pub(super) name: String,
    pub(super) helper: Helper,
    pub(super) params: Vec<Expr>,
    /// Each parameter's path as written, for a helper's "missing" error.
    pub(super) paths: Vec<Option<String>>,
    pub(super) hash: Vec<(String, Expr)>,
    /// The call as written (name, parameters, sorted hash): the same text
    /// in the HTML, the text part and the subject is the same computation.
    pub(super) key: String,
    /// Where its result is kept for the message being rendered ([`Memo`]).
    pub(super) slot: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Helper {
    Own(Compute),
    Compare(Comparison),
    And,
    Or,
    Not,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Comparison {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

pub(super) type Nodes = Vec<Node>;

#[derive(Debug)]
pub(super) enum Node {
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

impl Slots {
    pub(super) fn assign_nodes(&mut self, nodes: &mut [Node]) {
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
}

pub(super) fn nodes(t: &Template) -> Result<Nodes> {
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
