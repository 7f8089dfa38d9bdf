//! The fast renderer: the templates Handlebars parsed, compiled once more
//! into a tree that renders without Handlebars' per-expression costs (a path
//! copied into a new `Vec<String>` at every look-up, a helper's parameters
//! collected into new vectors and maps, a block context built for every
//! `#each` item), and with helper results shared by a message's three parts
//! ([`Memo`]).
//!
//! What it is for: CPU per message. It renders the subject, HTML and text of
//! the usual message; see docs/architecture.md for what that buys end to end.
//!
//! What it falls back to: Handlebars, which stays the parser and the
//! reference. It covers what Herald's templates use: text, `{{path}}` and
//! `{{{path}}}`, `@root`, `../`, `@index`/`@first`/`@last`/`@key`, literals,
//! subexpressions, Herald's helpers, the comparisons (eq, ne, gt, gte, lt,
//! lte, and, or, not), `#if`/`#unless`/`#each`/`#with` with `else` chains, and
//! partials (with hash parameters, partial blocks and `@partial-block`) that
//! are not indented. Whatever it does not cover it reports as
//! [`Unsupported`] — a template when it is compiled (`compile.rs`), a value
//! when it is rendered (`eval.rs`: a missing variable, an error of a helper,
//! an unusual comparison) — and the caller renders that part with
//! Handlebars, which gives the output or the error it always gave. Renders it
//! does cover are compared with Handlebars' ([`Check`], `check.rs`): every one
//! in debug builds, one message in 1,000 in release builds.

mod check;
mod compile;
mod eval;
#[cfg(test)]
mod tests;

use std::cell::OnceCell;
use std::collections::HashMap;

use handlebars::template::Template;
use serde_json::Value;

#[cfg(test)]
pub(crate) use check::RELEASE_SAMPLE;
pub(crate) use check::{Check, Part};
use compile::Nodes;

/// Not covered here: render with Handlebars instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsupported;

type Result<T> = std::result::Result<T, Unsupported>;

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
        let mut compiled = compile::nodes(template).ok();
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
        eval::render(self, name, self.get(name)?, data, memo)
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
