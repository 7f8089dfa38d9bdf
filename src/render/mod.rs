//! Personalised messages: every template of `templates/`, loaded once at
//! start, rendered per message into a subject, an HTML and a text part.
//!
//! This file is the face: [`Templates`] (loading, [`Templates::render`]),
//! [`Rendered`], [`RenderError`] and the render context
//! ([`customer_context`], [`message_context`], [`event_context`]). Behind it:
//! - one Handlebars registry per part: the HTML part's escapes HTML, the text
//!   part's and the subject's do not (escaping plain text corrupts it:
//!   `&amp;`). Both run in strict mode, so a missing variable is an error
//!   naming the template, line and variable; `{{default x "fallback"}}` is how
//!   a template allows a gap. Handlebars parses every template and is the
//!   reference for what a message says;
//! - `fast/`, the fast renderer, which renders what it covers from
//!   Handlebars' syntax trees with less CPU, and falls back to Handlebars for
//!   the rest;
//! - `text/`, the text part derived from the HTML for templates without a
//!   `.txt.hbs`;
//! - `helpers.rs`, the helpers templates may use, written once for both
//!   renderers; `links.rs`, click tracking and the open pixel.

mod fast;
mod helpers;
pub mod links;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fast::{Check, Compiled, Memo, Part, Slots, Unsupported};
use handlebars::Handlebars;
use serde_json::{Map, Value, json};

use crate::clock::{Millis, format_rfc3339};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read templates in {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("no template {name:?}: expected templates/{name}.html.hbs")]
    Missing { name: String },
    #[error("{template}{}: {message}", location(*line, *column))]
    Render {
        template: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl RenderError {
    /// `files` names the file a registered template came from, so the error
    /// points at what the author edits (`welcome.html.hbs:3:7`).
    fn from_hbs(
        fallback_template: &str,
        files: impl Fn(&str) -> Option<String>,
        e: handlebars::RenderError,
    ) -> RenderError {
        let template = e
            .template_name
            .as_deref()
            .and_then(files)
            .unwrap_or_else(|| fallback_template.to_string());
        let message = match e.reason() {
            handlebars::RenderErrorReason::MissingVariable(Some(path)) => {
                format!(
                    "variable \"{path}\" is missing; write {{{{default {path} \"…\"}}}} to allow a gap"
                )
            }
            other => other.to_string(),
        };
        RenderError::Render {
            template,
            line: e.line_no,
            column: e.column_no,
            message,
        }
    }
}

/// Every template of a `templates/` directory, compiled.
pub struct Templates {
    /// Where the files are: errors name them by path.
    dir: PathBuf,
    html: Handlebars<'static>,
    text: Handlebars<'static>,
    /// The same templates compiled for the fast renderer (`fast/`).
    html_fast: Compiled,
    text_fast: Compiled,
    /// The helper calls of both, for one message's [`Memo`].
    slots: Slots,
    /// Which messages the fast renderer's output is compared with Handlebars'.
    check: Check,
    names: BTreeSet<String>,
    with_text: BTreeSet<String>,
    /// Templates whose text part is converted from each rendered HTML message:
    /// no text template could be derived from their HTML, or from a partial's
    /// (a warning said so).
    text_from_rendered: BTreeSet<String>,
    /// Partial name → its file under `partials/`, per part, for error messages.
    html_partials: BTreeMap<String, String>,
    text_partials: BTreeMap<String, String>,
}

/// The three rendered parts of a message, before tracking is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    r.set_dev_mode(false);
    if escape {
        r.register_escape_fn(escape_html);
    } else {
        r.register_escape_fn(handlebars::no_escape);
    }
    helpers::register(&mut r);
    r
}

/// Handlebars' own HTML escaping (the same seven characters, the same
/// entities), but text with nothing to escape, which is most values, is copied
/// in one piece instead of a character at a time.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

/// [`escape_html`] appending to `out`.
fn push_escaped(out: &mut String, s: &str) {
    let special = |b: &u8| matches!(b, b'<' | b'>' | b'"' | b'&' | b'\'' | b'`' | b'=');
    let Some(first) = s.as_bytes().iter().position(special) else {
        out.push_str(s);
        return;
    };
    out.reserve(s.len() + 16);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#x27;"),
            '`' => out.push_str("&#x60;"),
            '=' => out.push_str("&#x3D;"),
            _ => out.push(c),
        }
    }
}

impl Templates {
    /// Loads `DIR/NAME.html.hbs`, optional `DIR/NAME.txt.hbs` and partials from
    /// `DIR/partials/NAME.hbs` (optional `NAME.txt.hbs` for the text part),
    /// available to both parts as `{{> NAME}}`.
    pub fn load(dir: &Path) -> Result<Templates, RenderError> {
        let mut t = Templates {
            dir: dir.to_path_buf(),
            html: registry(true),
            text: registry(false),
            html_fast: Compiled::new(true),
            text_fast: Compiled::new(false),
            slots: Slots::default(),
            check: Check::default(),
            names: BTreeSet::new(),
            with_text: BTreeSet::new(),
            text_from_rendered: BTreeSet::new(),
            html_partials: BTreeMap::new(),
            text_partials: BTreeMap::new(),
        };
        let read_dir = |p: &Path| {
            std::fs::read_dir(p).map_err(|e| RenderError::Load {
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        };
        // Explicit text versions first: a template or partial without one gets a
        // text template derived from its HTML source, once, here. Deriving the
        // template rather than each rendered message keeps per-message cost to one
        // plain render.
        let partials = dir.join("partials");
        let partial_files: Vec<PathBuf> = if partials.is_dir() {
            read_dir(&partials)?.flatten().map(|e| e.path()).collect()
        } else {
            Vec::new()
        };
        let text_partials: BTreeSet<String> = partial_files
            .iter()
            .filter_map(|p| file_name(p)?.strip_suffix(".txt.hbs").map(str::to_string))
            .collect();
        // A partial no text could be derived from: every derived text part
        // is converted from the rendered HTML instead.
        let mut partial_not_derived = false;
        for path in &partial_files {
            let Some(fname) = file_name(path) else {
                continue;
            };
            let source = read(path)?;
            let partial_error = |e: handlebars::TemplateError| compile_error(path, e);
            if let Some(name) = fname.strip_suffix(".txt.hbs") {
                t.text
                    .register_partial(name, &source)
                    .map_err(partial_error)?;
                t.text_partials
                    .insert(name.to_string(), format!("partials/{fname}"));
            } else if let Some(name) = fname.strip_suffix(".hbs") {
                let name = name.strip_suffix(".html").unwrap_or(name);
                t.html
                    .register_partial(name, &source)
                    .map_err(partial_error)?;
                t.html_partials
                    .insert(name.to_string(), format!("partials/{fname}"));
                if !text_partials.contains(name) {
                    match t
                        .text
                        .register_partial(name, text::partial_from_html(&source))
                    {
                        Ok(()) => {
                            t.text_partials
                                .insert(name.to_string(), format!("partials/{fname} (text part)"));
                        }
                        Err(e) => {
                            cannot_derive(path, &e);
                            partial_not_derived = true;
                        }
                    }
                }
            }
        }
        let mut entries: Vec<PathBuf> = read_dir(dir)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in &entries {
            if let Some(name) = file_name(path).and_then(|f| f.strip_suffix(".txt.hbs")) {
                let source = read(path)?;
                t.text
                    .register_template_string(name, source)
                    .map_err(|e| compile_error(path, e))?;
                t.with_text.insert(name.to_string());
            }
        }
        for path in &entries {
            if let Some(name) = file_name(path).and_then(|f| f.strip_suffix(".html.hbs")) {
                let source = read(path)?;
                t.html
                    .register_template_string(name, &source)
                    .map_err(|e| compile_error(path, e))?;
                t.names.insert(name.to_string());
                if t.with_text.contains(name) {
                    continue;
                }
                if partial_not_derived {
                    t.text_from_rendered.insert(name.to_string());
                    continue;
                }
                let derived = text::template_from_html(&source);
                if let Err(e) = t.text.register_template_string(name, derived) {
                    cannot_derive(path, &e);
                    t.text_from_rendered.insert(name.to_string());
                }
            }
        }
        for (name, template) in t.html.get_templates() {
            t.html_fast.add(name, template, &mut t.slots);
        }
        for (name, template) in t.text.get_templates() {
            t.text_fast.add(name, template, &mut t.slots);
        }
        Ok(t)
    }

    /// Template names (`NAME` of `NAME.html.hbs`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Compiles a subject line once, under `key` (for example `winback/offer`).
    pub fn add_subject(&mut self, key: &str, source: &str) -> Result<(), RenderError> {
        let name = subject_key(key);
        self.text
            .register_template_string(&name, source)
            .map_err(|e| RenderError::Compile {
                path: PathBuf::from(format!("subject of {key}")),
                message: e.to_string(),
            })?;
        if let Some(compiled) = self.text.get_template(&name) {
            self.text_fast.add(&name, compiled, &mut self.slots);
        }
        Ok(())
    }

    /// Renders subject, HTML and text for one customer.
    ///
    /// The context is taken by value and wrapped once for all three renders:
    /// handlebars' `render(name, &data)` would serialise a deep copy of it for
    /// each (a third of the render time, measured).
    pub fn render(
        &self,
        template: &str,
        subject: &str,
        context: Value,
    ) -> Result<Rendered, RenderError> {
        if !self.has(template) {
            return Err(RenderError::Missing {
                name: template.to_string(),
            });
        }
        let context = &handlebars::Context::from(context);
        let message = Message {
            context,
            // Helper results shared by the three parts of this message.
            memo: &Memo::new(self.slots.len()),
            checked: self.check.next_message(),
        };
        let skey = subject_key(subject);
        let subject_text = self.render_part(Part::Subject, &skey, &message, |e| {
            RenderError::from_hbs(&format!("subject of {subject}"), |_| None, e)
        })?;
        let html = self.render_part(Part::Html, template, &message, |e| {
            RenderError::from_hbs(
                &self.path(&format!("{template}.html.hbs")),
                |n| self.file(n, false),
                e,
            )
        })?;
        let render_text = || {
            self.render_part(Part::Text, template, &message, |e| {
                RenderError::from_hbs(&self.text_file(template), |n| self.file(n, true), e)
            })
        };
        let text = if self.with_text.contains(template) {
            render_text()?
        } else if self.text_from_rendered.contains(template) {
            text::part_from_html(&html)
        } else {
            // Block helpers and partials leave indentation and empty lines
            // behind; one linear pass makes the derived part read like a letter.
            text::tidy_wrapped(&render_text()?)
        };
        Ok(Rendered {
            subject: one_line(&subject_text),
            html,
            text,
        })
    }
}

/// What the parts of one message are rendered with.
struct Message<'a> {
    context: &'a handlebars::Context,
    memo: &'a Memo,
    /// Whether the fast renderer's output is compared with Handlebars' ([`Check`]).
    checked: bool,
}

impl Templates {
    /// One part rendered by the fast renderer, or by Handlebars where that
    /// does not cover the template or this message (an error included: the
    /// message Handlebars gives is the one reported).
    fn render_part(
        &self,
        part: Part,
        name: &str,
        message: &Message<'_>,
        error: impl FnOnce(handlebars::RenderError) -> RenderError,
    ) -> Result<String, RenderError> {
        let (registry, fast) = match part {
            Part::Html => (&self.html, &self.html_fast),
            Part::Subject | Part::Text => (&self.text, &self.text_fast),
        };
        let context = message.context;
        match fast.render_with(name, context.data(), message.memo) {
            Ok(out) if message.checked => {
                Ok(self
                    .check
                    .compare(name, part, out, registry.render_with_context(name, context)))
            }
            Ok(out) => Ok(out),
            Err(Unsupported) => registry.render_with_context(name, context).map_err(error),
        }
    }

    /// The file a registered template or partial came from.
    fn file(&self, name: &str, text_part: bool) -> Option<String> {
        if self.names.contains(name) {
            return Some(if text_part {
                self.text_file(name)
            } else {
                self.path(&format!("{name}.html.hbs"))
            });
        }
        let partials = if text_part {
            &self.text_partials
        } else {
            &self.html_partials
        };
        partials.get(name).map(|f| self.path(f))
    }

    fn text_file(&self, name: &str) -> String {
        if self.with_text.contains(name) {
            self.path(&format!("{name}.txt.hbs"))
        } else {
            self.path(&format!("{name}.html.hbs (text part)"))
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// A text template that could not be derived from HTML that compiled: the
/// text part is converted from each rendered message instead, which is slower
/// but says the same.
fn cannot_derive(path: &Path, e: &handlebars::TemplateError) {
    tracing::warn!(
        file = %path.display(),
        error = %e,
        "no text template could be derived from this HTML; its text part is converted from each rendered message instead (a .txt.hbs beside it avoids that)"
    );
}

fn subject_key(key: &str) -> String {
    format!("subject:{key}")
}

/// A subject is one header line: data can never smuggle in a CR or LF.
fn one_line(s: &str) -> String {
    if !s.contains(['\r', '\n']) {
        // One part: the same as below without the collecting and joining.
        return s.trim().to_string();
    }
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Byte offset of the first ASCII-case-insensitive match of `needle` (ASCII).
pub(crate) fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    let (&first, rest) = n.split_first()?;
    let mut from = 0;
    while from + n.len() <= h.len() {
        let at = from
            + memchr::memchr2(
                first.to_ascii_lowercase(),
                first.to_ascii_uppercase(),
                &h[from..=h.len() - n.len()],
            )?;
        if h[at + 1..at + n.len()].eq_ignore_ascii_case(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

fn read(path: &Path) -> Result<String, RenderError> {
    std::fs::read_to_string(path).map_err(|e| RenderError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn compile_error(path: &Path, e: handlebars::TemplateError) -> RenderError {
    let at = match e.pos() {
        Some((l, c)) => format!(":{l}:{c}"),
        None => String::new(),
    };
    RenderError::Compile {
        path: PathBuf::from(format!("{}{at}", path.display())),
        message: e.reason().to_string(),
    }
}

/// The built-in customer fields and every attribute, as templates see them:
/// `customer.first_name`, `customer.plan`, `customer.address.city`.
#[allow(clippy::too_many_arguments)]
pub fn customer_context(
    id: i64,
    email: &str,
    external_id: Option<&str>,
    first_name: Option<&str>,
    last_name: Option<&str>,
    timezone: Option<&str>,
    created_at: Millis,
    attributes: &Map<String, Value>,
) -> Value {
    let mut c = attributes.clone();
    // Built-in fields win over attributes of the same name.
    c.insert("id".into(), json!(id));
    c.insert("email".into(), json!(email));
    c.insert("external_id".into(), json!(external_id));
    c.insert("first_name".into(), json!(first_name));
    c.insert("last_name".into(), json!(last_name));
    c.insert("timezone".into(), json!(timezone));
    c.insert("created_at".into(), json!(format_rfc3339(created_at)));
    Value::Object(c)
}

/// The whole render context of one message.
///
/// Built by moving `customer` and `events` in: `json!` would serialise a deep
/// copy of every value it is given.
pub fn message_context(
    customer: Value,
    campaign: &str,
    step: &str,
    events: Map<String, Value>,
    unsubscribe_url: &str,
    postal_address: Option<&str>,
    now: Millis,
) -> Value {
    let one = |key: &str, value: &str| {
        let mut m = Map::new();
        m.insert(key.into(), Value::from(value));
        Value::Object(m)
    };
    let mut c = Map::new();
    c.insert("customer".into(), customer);
    c.insert("campaign".into(), one("name", campaign));
    c.insert("step".into(), one("id", step));
    c.insert("events".into(), Value::Object(events));
    c.insert("unsubscribe_url".into(), Value::from(unsubscribe_url));
    c.insert(
        "postal_address".into(),
        postal_address.map_or(Value::Null, Value::from),
    );
    c.insert("now".into(), Value::from(format_rfc3339(now)));
    Value::Object(c)
}

/// The interaction that entered a customer into a triggered campaign, as the
/// template's `trigger` shows it: `kind`, `occurred_at` and its `data`.
pub fn trigger_context(kind: &str, occurred_at: Millis, data: Map<String, Value>) -> Value {
    json!({
        "kind": kind,
        "occurred_at": format_rfc3339(occurred_at),
        "data": Value::Object(data),
    })
}

/// One interaction as `events.KIND` items show it.
pub fn event_context(occurred_at: Millis, data: &Map<String, Value>) -> Value {
    let mut m = data.clone();
    m.insert("occurred_at".into(), json!(format_rfc3339(occurred_at)));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Customer 1, Ann in Berlin, with `attributes`.
    fn ann(attributes: Value) -> Value {
        let attributes = attributes.as_object().cloned().unwrap_or_default();
        customer_context(
            1,
            "ann@example.com",
            None,
            Some("Ann"),
            None,
            Some("Europe/Berlin"),
            1_790_000_000_000,
            &attributes,
        )
    }

    /// The shipped templates take the compiled renderer, both parts and the
    /// subject (and, in this debug build, agree with Handlebars).
    #[test]
    fn shipped_templates_render_compiled() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut t = Templates::load(&dir).unwrap();
        t.add_subject("s", "{{default customer.first_name \"Hi\"}}, 15% off")
            .unwrap();
        let customer = ann(json!({"city": "Köln", "vip": true, "plan": "pro"}));
        let purchase = |product: &str, quantity: u32| {
            let data = json!({"product": product, "quantity": quantity, "amount": 19.5, "category": "shoes"});
            event_context(1_790_000_000_000, data.as_object().unwrap())
        };
        let mut events = Map::new();
        events.insert(
            "purchase".into(),
            json!([purchase("Shoe", 2), purchase("Sock", 1)]),
        );
        let data = message_context(
            customer,
            "winback",
            "offer",
            events,
            "https://t.example/u/x",
            Some("Acme, 1 Main St"),
            1_790_000_000_000,
        );
        let names: Vec<String> = t.names().map(str::to_string).collect();
        assert!(names.len() >= 8, "{names:?}");
        for name in &names {
            t.html_fast
                .render(name, &data)
                .unwrap_or_else(|_| panic!("{name}: HTML not compiled"));
            // Derived text templates included: a partial after a block tag
            // starts its own line instead of being indented by a space.
            t.text_fast
                .render(name, &data)
                .unwrap_or_else(|_| panic!("{name}: text part not compiled"));
            t.render(name, "s", data.clone()).unwrap();
        }
        assert!(t.text_fast.render(&subject_key("s"), &data).is_ok());
    }

    /// The derived text part: unescaped HTML loses its tags there, and a partial
    /// after a block tag renders on its own line, through the compiled renderer.
    #[test]
    fn derived_text_part_strips_unescaped_html_and_compiles_partials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("partials")).unwrap();
        std::fs::write(
            dir.path().join("partials/btn.hbs"),
            "<a href=\"https://e.example/{{name}}\">Go</a>",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.html.hbs"),
            "<p>Hi {{name}}</p>\n{{#if x}}\n<p>x</p>\n{{/if}}\n{{> btn}}\n<div>{{{bio}}}</div><p>{{{default bio \"\"}}}</p>",
        )
        .unwrap();
        let t = Templates::load(dir.path()).unwrap();
        let data = json!({"name": "Ann", "x": true, "bio": "<b>Bold</b> &amp; <i>co</i>"});
        assert!(t.text_fast.render("a", &data).is_ok());
        let r = t.render("a", "a", data.clone()).unwrap_err();
        // No subject was added: the error says which.
        assert!(r.to_string().contains("subject"), "{r}");
        let mut t = t;
        t.add_subject("a", "s").unwrap();
        let r = t.render("a", "a", data).unwrap();
        assert_eq!(
            r.text,
            "Hi Ann\n\nx\n\nGo (https://e.example/Ann)\n\nBold & co\n\nBold & co\n"
        );
        assert!(r.html.contains("<b>Bold</b>"), "{}", r.html);
    }

    /// Templates whose Handlebars tags would confuse an HTML converter (found
    /// in review): each loads, and its text part says what its HTML says.
    #[test]
    fn derived_text_part_keeps_handlebars_tags_away_from_the_html_converter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("partials")).unwrap();
        let write =
            |name: &str, source: &str| std::fs::write(dir.path().join(name), source).unwrap();
        write("partials/nm.hbs", "<b>{{name}}</b>");
        write("partials/st.hbs", "color:red");
        write("partials/a.hbs", "<b>Kind regards,</b>");
        write("partials/b.hbs", "The team");
        write("partials/li.hbs", "<li>First</li>");
        write(
            "partials/frame.hbs",
            "{{!-- the one <style> block, nothing in <head> --}}<html><head><style>p{}</style></head><body>{{> @partial-block}}</body></html>",
        );
        let cases = [
            (
                "comment",
                "{{#> frame}}{{!-- shown if n < 5 --}}<p>{{#if x}}Hi{{/if}} there</p>{{/frame}}",
                "Hi there\n",
            ),
            (
                "quoted",
                "<a href=\"{{default url \"https://x.example\"}}\">Shop</a>",
                "Shop (https://y.example)\n",
            ),
            (
                "subexpression",
                "<div>{{{(default bio \"\")}}}</div>",
                "Bold & co\n",
            ),
            (
                "comment-braces",
                "{{!-- {{{ lets HTML through --}}<div>{{{bio}}}</div>",
                "Bold & co\n",
            ),
            (
                "inline-partial",
                "<p>Hello {{> nm}}, welcome</p>",
                "Hello Ann, welcome\n",
            ),
            (
                "mid-sentence",
                "<p>Welcome{{#if x}} back{{/if}} {{> nm}}!</p>",
                "Welcome back Ann!\n",
            ),
            (
                "ampersand",
                "<p>{{&bio}}|{{~{bio}~}}</p>",
                "Bold & co|Bold & co\n",
            ),
            (
                "attribute-partial",
                "<p style=\"{{> st}}\">Hello {{name}}</p>",
                "Hello Ann\n",
            ),
            (
                "block-in-head",
                "<html><head><title>{{#if x}}A{{else}}B{{/if}}</title>{{#if x}}<style>p{}</style></head><body><p>Hi</p>{{/if}}</body></html>",
                "Hi\n",
            ),
            (
                "private-use-entity",
                "<p><span>&#xE000;</span> Error {{#if x}}yes{{/if}}</p>",
                "\u{E000} Error yes\n",
            ),
            (
                "else-in-head",
                "<html><head>{{#if x}}<meta charset=\"utf-8\"></head><body class=\"vip\">{{else}}</head><body>{{/if}}<p>Hi {{name}}</p>",
                "Hi Ann\n",
            ),
            (
                "partial-then-br",
                "<p>Text</p>\n{{> a}}<br>The Acme team",
                "Text\n\nKind regards,\nThe Acme team\n",
            ),
            (
                "partials-with-br",
                "<p>{{> a}}<br>{{> b}}</p>",
                "Kind regards,\nThe team\n",
            ),
            (
                "partial-item",
                "<ul>{{> li}}<li>Second</li></ul>",
                "- First\n- Second\n",
            ),
            (
                "tildes",
                "<p>Hello</p>{{~#if x~}}<p>VIP</p>{{~/if~}}<p>Bye {{name~}}</p>\n<p>!</p>",
                "Hello\n\nVIP\n\nBye Ann\n\n!\n",
            ),
            (
                "entity-braces",
                "<p>Write &#123;&#123;name&#125;&#125; to greet</p>",
                "Write {{name}} to greet\n",
            ),
            (
                "escaped-mustache",
                "<p>Type \\{{name}} here, {{name}}</p>",
                "Type {{name}} here, Ann\n",
            ),
            (
                "escaped-quote",
                "<p>{{default size \"5\\\" screen\"}}</p><p>Bye</p>",
                "5\" screen\n\nBye\n",
            ),
            (
                "short-comment",
                "{{!-- note }}<p>Hello {{name}}</p><p>Bye</p>",
                "Hello Ann\n\nBye\n",
            ),
            (
                "raw-block",
                "<p>{{{{raw}}}}<b>{{x}}</b>{{{{/raw}}}}</p>",
                "{{x}}\n",
            ),
            (
                "blocks-in-comments",
                "<ul><!-- {{#each items}} --><li>{{name}}</li><!-- {{/each}} --></ul>",
                "- A\n- B\n",
            ),
            (
                "no-head-end",
                "<html><head><meta charset=\"utf-8\"><body><p>Hi {{name}}</p>",
                "Hi Ann\n",
            ),
            (
                "same-tag-twice",
                "<a href=\"{{url}}\">{{url}}</a>",
                "https://y.example\n",
            ),
        ];
        for (name, source, _) in cases {
            write(&format!("{name}.html.hbs"), source);
        }
        let mut t = Templates::load(dir.path()).unwrap();
        t.add_subject("s", "s").unwrap();
        let data = json!({"name": "Ann", "x": true, "bio": "<b>Bold</b> &amp; co", "url": "https://y.example",
            "items": [{"name": "A"}, {"name": "B"}]});
        for (name, _, text) in cases {
            let r = t.render(name, "s", data.clone()).unwrap();
            assert_eq!(r.text, text, "{name}");
        }
    }

    /// HTML that compiles but whose derived text template would not (an
    /// object literal in a triple-stash): the template still loads, and its
    /// text part is converted from each rendered message.
    #[test]
    fn text_part_falls_back_to_the_rendered_html() {
        let dir = tempfile::tempdir().unwrap();
        let source = "<p>Hi {{name}}: {{{default bio {\"a\":1}}}}</p>";
        std::fs::write(dir.path().join("odd.html.hbs"), source).unwrap();
        std::fs::write(dir.path().join("plain.html.hbs"), "<p>Hi {{name}}</p>").unwrap();
        let mut t = Templates::load(dir.path()).unwrap();
        t.add_subject("s", "s").unwrap();
        assert!(t.text_from_rendered.contains("odd") && !t.text_from_rendered.contains("plain"));
        let data = json!({"name": "Ann", "bio": "<b>Bold</b>"});
        assert_eq!(
            t.render("odd", "s", data.clone()).unwrap().text,
            "Hi Ann: Bold\n"
        );
        assert_eq!(
            t.render("plain", "s", data.clone()).unwrap().text,
            "Hi Ann\n"
        );

        // In a partial: every derived text part falls back.
        std::fs::create_dir(dir.path().join("partials")).unwrap();
        std::fs::write(dir.path().join("partials/bio.hbs"), source).unwrap();
        std::fs::write(dir.path().join("odd.html.hbs"), "<div>{{> bio}}</div>").unwrap();
        let mut t = Templates::load(dir.path()).unwrap();
        t.add_subject("s", "s").unwrap();
        assert!(t.text_from_rendered.contains("odd") && t.text_from_rendered.contains("plain"));
        assert_eq!(
            t.render("odd", "s", data.clone()).unwrap().text,
            "Hi Ann: Bold\n"
        );
        assert_eq!(t.render("plain", "s", data).unwrap().text, "Hi Ann\n");
    }

    /// The shipped templates with no text version of the layout: the text
    /// parts are derived from `layout.hbs` too (its comment mentions `<style>`).
    #[test]
    fn shipped_templates_load_without_text_partials() {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("partials")).unwrap();
        for sub in ["", "partials"] {
            for entry in std::fs::read_dir(from.join(sub)).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if entry.path().is_file() && !name.ends_with(".txt.hbs") {
                    std::fs::copy(entry.path(), dir.path().join(sub).join(&name)).unwrap();
                }
            }
        }
        let mut t = Templates::load(dir.path()).unwrap();
        t.add_subject("s", "s").unwrap();
        let customer = ann(json!({}));
        let data = message_context(
            customer,
            "c",
            "s",
            Map::new(),
            "https://t.example/u/x",
            None,
            0,
        );
        let r = t.render("welcome", "s", data).unwrap();
        assert!(
            r.text.contains("Unsubscribe (https://t.example/u/x)"),
            "{}",
            r.text
        );
        assert!(
            !r.text.contains("{{") && !r.text.contains('<'),
            "{}",
            r.text
        );
    }

    /// The error events logged while `f` runs, as JSON objects.
    fn logged_errors(f: impl FnOnce()) -> Vec<Value> {
        use std::sync::{Arc, Mutex};
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = buffer.clone();
            move || Buffer(buffer.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::ERROR)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The release check: one message in 1,000 is rendered by Handlebars too;
    /// a difference is logged as an error naming the template and the part,
    /// and the message is still rendered, with Handlebars' output. The
    /// difference is made here by compiling another template into the fast
    /// renderer under the same name.
    #[test]
    fn release_check_logs_a_difference_and_still_renders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.html.hbs"), "<p>Hi {{name}}</p>").unwrap();
        let mut t = Templates::load(dir.path()).unwrap();
        t.add_subject("s", "Hello {{name}}").unwrap();
        let mut other = registry(true);
        other
            .register_template_string("a", "<p>Bye {{name}}</p>")
            .unwrap();
        t.html_fast
            .add("a", other.get_template("a").unwrap(), &mut t.slots);
        t.check = Check::new(fast::RELEASE_SAMPLE, false);
        let data = json!({"name": "Ann"});
        let errors = logged_errors(|| {
            for i in 0..2_001 {
                let r = t.render("a", "s", data.clone()).unwrap();
                let html = if i % 1_000 == 0 {
                    "<p>Hi Ann</p>"
                } else {
                    "<p>Bye Ann</p>"
                };
                assert_eq!(r.html, html, "message {i}");
                assert_eq!(
                    (r.subject.as_str(), r.text.as_str()),
                    ("Hello Ann", "Hi Ann\n")
                );
            }
        });
        // Messages 0, 1,000 and 2,000.
        assert_eq!(errors.len(), 3, "{errors:?}");
        for e in &errors {
            assert_eq!(e["level"], "ERROR", "{e}");
            assert_eq!(e["fields"]["template"], "a", "{e}");
            assert_eq!(e["fields"]["part"], "html", "{e}");
            assert_eq!(e["fields"]["at_byte"], 3, "{e}");
            // The log never carries the message's text (customer data).
            assert!(!e.to_string().contains("Ann"), "{e}");
        }
    }

    #[test]
    fn escapes_as_handlebars_does() {
        for s in [
            "",
            "plain text",
            "<a href=\"x\">Tom & Jerry's `=`</a>",
            "Grüße <€> ünd ' \" = ` &amp;",
            "tail&",
        ] {
            assert_eq!(super::escape_html(s), handlebars::html_escape(s), "{s:?}");
        }
    }
}
