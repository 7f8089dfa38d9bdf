//! A text template derived once from an HTML template's source: the HTML
//! converter lays out the text, the Handlebars tags hidden from it behind
//! placeholders and written back afterwards.

use super::from_html;

/// A text template derived from the source of an HTML template: what
/// [`from_html`] makes of the HTML, with the Handlebars tags kept, so the text
/// part says what the HTML part says:
/// - The HTML converter never sees a Handlebars tag: each is swapped for a
///   placeholder first (a comment that mentions `<style>`, a `<` in a string
///   literal or a quoted literal inside an attribute cannot confuse it). Block
///   tags inside what the converter drops (`<head>`, `<title>`, an HTML
///   comment, an attribute) are kept, so every block stays closed.
/// - HTML the template author lets through unescaped (`{{{x}}}`, `{{&x}}`)
///   becomes `{{html_text x}}`: the tags of the value are stripped when it is
///   rendered, as they are in what the HTML shows.
/// - Whitespace control (`~`) is dropped: the converter has already laid out
///   the text, and `~` would remove its line breaks.
/// - Text that would read as a tag (`&#123;&#123;`) is escaped (`\{{`).
/// - A partial that follows only block tags and spaces on its line
///   (`{{/if}} {{> button}}`, where the line break between them collapsed to a
///   space) starts its own line again: Handlebars would take the space for an
///   indentation of every line of the partial. A partial alone on its line is
///   followed by one more line break, for the one Handlebars drops there.
pub fn template_from_html(source: &str) -> String {
    let Some(spans) = Spans::hide(source) else {
        // The placeholder characters are in the source itself: convert it as it is.
        return from_html(source);
    };
    spans.restore(&from_html(&spans.text))
}

/// [`template_from_html`] for a partial, which may be used in the middle of a
/// line: no line break after it.
pub fn partial_from_html(source: &str) -> String {
    let mut t = template_from_html(source);
    t.truncate(t.trim_end_matches('\n').len());
    t
}

/// Opens and closes a placeholder (Unicode private use characters: text, not
/// whitespace or markup, to the HTML converter); a block tag's placeholder
/// opens with [`HIDDEN_BLOCK`], which is kept where the converter drops
/// content.
pub(super) const HIDDEN_OPEN: char = '\u{E000}';
pub(super) const HIDDEN_CLOSE: char = '\u{E001}';
pub(super) const HIDDEN_BLOCK: char = '\u{E002}';

#[derive(Clone, Copy, PartialEq, Eq)]
enum SpanKind {
    /// `{{#…}}`, `{{/…}}`, `{{^…}}`, `{{else…}}`, comments: standalone on a line,
    /// they leave nothing behind.
    Block,
    Partial,
    Other,
}

/// The Handlebars tags of a template, each replaced by a placeholder.
struct Spans {
    text: String,
    /// Distinct tags as they will be written back, by placeholder number: the
    /// same tag twice is the same placeholder (`<a href="{{u}}">{{u}}</a>`).
    tags: Vec<(String, SpanKind)>,
}

impl Spans {
    fn hide(source: &str) -> Option<Spans> {
        if source.contains([HIDDEN_OPEN, HIDDEN_CLOSE, HIDDEN_BLOCK]) {
            return None;
        }
        let mut spans = Spans {
            text: String::with_capacity(source.len()),
            tags: Vec::new(),
        };
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            let before = &rest[..open];
            spans.text.push_str(before);
            // `\{{` is a literal `{{` (`\\{{` a backslash and a tag).
            if before.ends_with('\\') && !before.ends_with("\\\\") {
                spans.text.push_str("{{");
                rest = &rest[open + 2..];
                continue;
            }
            let len = tag_len(&rest[open..]);
            let (written, kind) = text_tag(&rest[open..open + len]);
            let n = match spans.tags.iter().position(|(t, _)| *t == written) {
                Some(n) => n,
                None => {
                    spans.tags.push((written, kind));
                    spans.tags.len() - 1
                }
            };
            spans.text.push(if kind == SpanKind::Block {
                HIDDEN_BLOCK
            } else {
                HIDDEN_OPEN
            });
            spans.text.push_str(&n.to_string());
            spans.text.push(HIDDEN_CLOSE);
            rest = &rest[open + len..];
        }
        spans.text.push_str(rest);
        Some(spans)
    }

    /// `converted` with the tags written back (see [`template_from_html`] for
    /// where partials go).
    fn restore(&self, converted: &str) -> String {
        let mut out = String::with_capacity(converted.len() + converted.len() / 4);
        // Whether the current output line holds only block tags, partials
        // and spaces.
        let mut only_blocks = true;
        let mut rest = converted;
        while let Some(open) = rest.find([HIDDEN_OPEN, HIDDEN_BLOCK]) {
            push_text_of_template(&mut out, &rest[..open], &mut only_blocks);
            let Some(((tag, kind), after)) = self.placeholder(&rest[open..]) else {
                // Not a placeholder (`&#xE000;` in the HTML): text.
                let mark = HIDDEN_OPEN.len_utf8();
                out.push_str(&rest[open..open + mark]);
                only_blocks = false;
                rest = &rest[open + mark..];
                continue;
            };
            rest = after;
            let rest_of_line = rest.split('\n').next().unwrap_or_default();
            if *kind == SpanKind::Partial && only_blocks && self.only_tags(rest_of_line) {
                out.truncate(out.trim_end_matches([' ', '\t']).len());
                if !(out.is_empty() || out.ends_with('\n')) {
                    out.push('\n');
                }
                out.push_str(tag);
                // Standalone: Handlebars drops the line break that ends this
                // line, so one more keeps the partial's output on a line of its
                // own; a tag that followed on the line starts a line after it.
                out.push('\n');
                rest = rest.trim_start_matches([' ', '\t']);
                if !(rest.is_empty() || rest.starts_with('\n')) {
                    out.push('\n');
                }
                only_blocks = true;
                continue;
            }
            out.push_str(tag);
            if *kind == SpanKind::Other {
                only_blocks = false;
            }
        }
        push_text_of_template(&mut out, rest, &mut only_blocks);
        out
    }

    /// The tag whose placeholder starts `s`, and what follows it. A
    /// placeholder is an open character, digits and the close character.
    fn placeholder<'s>(&self, s: &'s str) -> Option<(&(String, SpanKind), &'s str)> {
        let after = s
            .strip_prefix(HIDDEN_OPEN)
            .or_else(|| s.strip_prefix(HIDDEN_BLOCK))?;
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let rest = after[digits..].strip_prefix(HIDDEN_CLOSE)?;
        let tag = self.tags.get(after[..digits].parse::<usize>().ok()?)?;
        Some((tag, rest))
    }

    /// Whether `line` holds nothing but spaces, block tags and partials.
    fn only_tags(&self, line: &str) -> bool {
        let mut rest = line.trim_start();
        while !rest.is_empty() {
            match self.placeholder(rest) {
                Some(((_, SpanKind::Block | SpanKind::Partial), after)) => {
                    rest = after.trim_start()
                }
                _ => return false,
            }
        }
        true
    }
}

/// Appends converted text to a text template: `{{` in it (from `&#123;&#123;`)
/// escaped as `\{{`, and whether the line holds anything but spaces noted.
fn push_text_of_template(out: &mut String, text: &str, only_blocks: &mut bool) {
    let last_line = match text.rfind('\n') {
        Some(at) => {
            *only_blocks = true;
            &text[at + 1..]
        }
        None => text,
    };
    if !last_line.trim().is_empty() {
        *only_blocks = false;
    }
    let mut rest = text;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let escaped = rest[..at].ends_with('\\') || (at == 0 && out.ends_with('\\'));
        out.push_str(if escaped { "{{" } else { "\\{{" });
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
}

/// Appends the block placeholders in `s` (content the converter drops).
pub(super) fn keep_blocks(out: &mut String, mut s: &str) {
    while let Some(open) = s.find(HIDDEN_BLOCK) {
        let tail = &s[open..];
        let Some(close) = tail.find(HIDDEN_CLOSE) else {
            break;
        };
        let end = close + HIDDEN_CLOSE.len_utf8();
        out.push_str(&tail[..end]);
        s = &tail[end..];
    }
}

/// The length of the Handlebars tag at the start of `s` (which starts with
/// `{{`): a comment to its `--}}` (or, as Handlebars reads one without, `}}`),
/// a raw block to the end of its closing tag, anything else to the `}}` (or
/// `}}}`) outside string literals. An unclosed tag runs to the end (the HTML
/// template would not compile).
fn tag_len(s: &str) -> usize {
    let end_of =
        |pattern: &str, from: usize| s[from..].find(pattern).map(|at| from + at + pattern.len());
    let inner = s[2..].trim_start_matches('~');
    let found = if s.starts_with("{{{{") {
        // A raw block: `{{{{raw}}}} … {{{{/raw}}}}`.
        end_of("}}}}", 4)
            .and_then(|open_end| end_of("{{{{/", open_end))
            .and_then(|close| end_of("}}}}", close))
    } else if inner.starts_with("!--") {
        end_of("--}}", 2)
            .or_else(|| end_of("--~}}", 2))
            .or_else(|| end_of("}}", 2))
    } else if inner.starts_with('!') {
        end_of("}}", 2)
    } else {
        let triple = inner.starts_with('{');
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut found = None;
        for (at, c) in s.char_indices().skip(2) {
            match quote {
                _ if escaped => escaped = false,
                Some(_) if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if s[at..].starts_with("}}") => {
                    let end = at + 2;
                    found = Some(if triple && s[end..].starts_with('}') {
                        end + 1
                    } else {
                        end
                    });
                    break;
                }
                None => {}
            }
        }
        found
    };
    found.unwrap_or(s.len())
}

/// A tag as the text template writes it, and its kind.
fn text_tag(tag: &str) -> (String, SpanKind) {
    if let Some(raw) = raw_block_as_text(tag) {
        return (raw, SpanKind::Other);
    }
    let body = tag[2..].trim_start_matches('~');
    if body.starts_with('!') {
        return (tag.to_string(), SpanKind::Block);
    }
    // Whitespace control off: `{{~#if x~}}` → `{{#if x}}`.
    let tag = without_tildes(tag);
    let tag = tag.as_str();
    let body = &tag[2..];
    if body.starts_with('>') || body.starts_with("#>") {
        return (tag.to_string(), SpanKind::Partial);
    }
    let is_else = body
        .strip_prefix("else")
        .is_some_and(|r| r.starts_with([' ', '\t', '\n', '\r', '}']));
    if body.starts_with(['#', '/', '^']) || is_else {
        return (tag.to_string(), SpanKind::Block);
    }
    // `{{{x}}}` and `{{&x}}` let HTML through: its text instead.
    let expr = if let Some(e) = body.strip_prefix('{') {
        e.strip_suffix("}}}")
    } else if let Some(e) = body.strip_prefix('&') {
        e.strip_suffix("}}")
    } else {
        None
    };
    let Some(expr) = expr.map(str::trim).filter(|e| !e.is_empty()) else {
        return (tag.to_string(), SpanKind::Other);
    };
    let written = if expr.starts_with('(') || !expr.contains(char::is_whitespace) {
        format!("{{{{html_text {expr}}}}}")
    } else {
        format!("{{{{html_text ({expr})}}}}")
    };
    (written, SpanKind::Other)
}

/// The tag without `~` just inside its braces (`{{~`, `~}}`, `{{{~`, `~}}}`).
fn without_tildes(tag: &str) -> String {
    let braces = |s: &str, c: char| s.len() - s.trim_start_matches(c).len();
    let open = braces(tag, '{');
    let close = tag.len() - tag.trim_end_matches('}').len();
    if open + close > tag.len() {
        return tag.to_string();
    }
    let inner = &tag[open..tag.len() - close];
    let inner = inner.strip_prefix('~').unwrap_or(inner);
    let inner = inner.strip_suffix('~').unwrap_or(inner);
    format!("{}{inner}{}", &tag[..open], &tag[tag.len() - close..])
}

/// A raw block (`{{{{raw}}}}<b>{{x}}</b>{{{{/raw}}}}`) with the text of its
/// HTML content, as the HTML part shows it.
fn raw_block_as_text(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("{{{{")?;
    let open_end = rest.find("}}}}")? + 4;
    let close = rest.rfind("{{{{/")?;
    if close < open_end {
        return None;
    }
    let content = from_html(&rest[open_end..close]);
    Some(format!(
        "{{{{{{{{{}{}{}",
        &rest[..open_end],
        content.trim_end_matches('\n'),
        &rest[close..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_text_templates() {
        assert_eq!(
            template_from_html("<p>{{{a}}} {{{~ b c ~}}} {{{{raw}}}} x {{{{/raw}}}}</p>"),
            "{{html_text a}} {{html_text (b c)}} {{{{raw}}}}x{{{{/raw}}}}\n"
        );
        // After a block tag, a partial alone on the rest of its line starts
        // its own line; after text, or with text after it, it stays.
        assert_eq!(
            template_from_html(
                "{{/if}}\n<p>{{> a}}</p>\n{{#if x}} {{#> b}}x{{/b}}\n<b>Hi</b> {{> c}}"
            ),
            "{{/if}}\n\n{{> a}}\n\n\n{{#if x}} {{#> b}}x{{/b}} Hi {{> c}}\n"
        );
    }
}
