//! The text part derived from HTML, for templates that have no `.txt.hbs` of
//! their own: no tags, entities decoded, links as `text (url)`, wrapped at 78
//! characters.
//!
//! The usual path does its work once, when templates are loaded: a text
//! *template* is derived from the HTML template's source ([`template_from_html`],
//! `derive.rs`), Handlebars tags kept, and each message renders it like any
//! other template, then [`tidy_wrapped`] lays out the result (`wrap.rs`). No
//! HTML is parsed per message.
//!
//! The fallback: where no text template can be derived (the derived source
//! does not compile, for that template or for one of the partials), the
//! template still loads with a warning and its text part is converted from
//! each rendered HTML message ([`part_from_html`], `convert.rs`), which is
//! slower and says the same. The converter is also the `html_text` helper.

mod convert;
mod derive;
mod wrap;

pub use derive::{partial_from_html, template_from_html};
pub use wrap::{tidy, tidy_wrapped, wrap};

/// Converts rendered HTML to plain text.
pub fn from_html(html: &str) -> String {
    tidy(&convert::untagged(html))
}

/// The text part of a rendered HTML message: [`from_html`], tidied and wrapped
/// in one pass (for a template no text template could be derived from).
pub fn part_from_html(html: &str) -> String {
    tidy_wrapped(&convert::untagged(html))
}
