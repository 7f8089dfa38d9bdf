//! A readable text part derived from HTML: no tags, links kept as `text (url)`.

use super::find_ascii_ci;

/// Converts rendered HTML to plain text.
pub fn from_html(html: &str) -> String {
    tidy(&untagged(html))
}

/// The text part of a rendered HTML message: [`from_html`], tidied and wrapped
/// in one pass (for a template no text template could be derived from).
pub fn part_from_html(html: &str) -> String {
    tidy_wrapped(&untagged(html))
}

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
const HIDDEN_OPEN: char = '\u{E000}';
const HIDDEN_CLOSE: char = '\u{E001}';
const HIDDEN_BLOCK: char = '\u{E002}';

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
fn keep_blocks(out: &mut String, mut s: &str) {
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

/// The tags' effect on layout, the links as `text (url)`, the entities decoded,
/// whitespace collapsed; lines not yet tidied.
///
/// One pass over the bytes: text between tags is copied a run at a time and
/// tag names are compared in place, so the usual message costs a few small
/// allocations (one per link), not one per tag and text node.
fn untagged(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut link: Option<String> = None;
    let mut link_text_start = 0;
    while let Some(lt) = memchr::memchr(b'<', rest.as_bytes()) {
        push_text(&mut out, &rest[..lt]);
        let Some(gt) = memchr::memchr(b'>', &rest.as_bytes()[lt..]) else {
            push_text(&mut out, &rest[lt..]);
            rest = "";
            break;
        };
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        let closing = tag.starts_with('/');
        let bare = tag.trim_start_matches('/').as_bytes();
        // The tag name in lower case (names Herald acts on have at most six
        // letters; a longer one is acted on by none).
        let mut name = [0u8; 7];
        let mut len = 0;
        for &b in bare.iter().take_while(|b| b.is_ascii_alphanumeric()) {
            if len == name.len() {
                len = 0;
                break;
            }
            name[len] = b.to_ascii_lowercase();
            len += 1;
        }
        // Block tags of a template in an attribute or an HTML comment are
        // kept (an `<a>`'s are kept below, apart from its link's).
        if name[..len] != *b"a" || closing {
            keep_blocks(&mut out, tag);
        }
        match (&name[..len], closing) {
            // Content that is not text at all.
            (b"head", false) => {
                // HTML5 lets `</head>` out: the body then ends the head.
                let end = find_ascii_ci(rest, "</head");
                match find_ascii_ci(rest, "<body") {
                    Some(body) if end.is_none_or(|end| body < end) => {
                        keep_blocks(&mut out, &rest[..body]);
                        rest = &rest[body..];
                    }
                    _ => rest = skip_past(&mut out, rest, "</head"),
                }
            }
            (b"style", false) => rest = skip_past(&mut out, rest, "</style"),
            (b"script", false) => rest = skip_past(&mut out, rest, "</script"),
            (b"title", false) => rest = skip_past(&mut out, rest, "</title"),
            (b"a", false) => {
                // Block tags in the attributes are kept, those in the link
                // go with it.
                match attribute_span(tag, "href=") {
                    Some((start, end)) => {
                        keep_blocks(&mut out, &tag[..start]);
                        keep_blocks(&mut out, &tag[end..]);
                        link = Some(decode_entities(&tag[start..end]));
                    }
                    None => {
                        keep_blocks(&mut out, tag);
                        link = None;
                    }
                }
                link_text_start = out.len();
            }
            (b"a", true) => {
                if let Some(url) = link.take() {
                    // `{{…}}` is a link computed by the template (when deriving
                    // the text template from HTML source).
                    let is_link = url.starts_with("http")
                        || url.starts_with("{{")
                        || url.starts_with([HIDDEN_OPEN, HIDDEN_BLOCK]);
                    let text = out.get(link_text_start..).unwrap_or_default().trim();
                    if !is_link {
                        keep_blocks(&mut out, &url);
                    } else if text.is_empty() {
                        out.push_str(&url);
                    } else if text != url {
                        out.push_str(" (");
                        out.push_str(&url);
                        out.push(')');
                    }
                }
            }
            (b"br", _) => out.push('\n'),
            (b"li", false) => {
                newline(&mut out);
                out.push_str("- ");
            }
            (b"li", true) => newline(&mut out),
            (
                b"p" | b"div" | b"tr" | b"table" | b"h1" | b"h2" | b"h3" | b"h4" | b"ul" | b"ol"
                | b"hr",
                _,
            ) => blank_line(&mut out),
            (b"td" | b"th", true) => out.push(' '),
            _ => {}
        }
    }
    push_text(&mut out, rest);
    out
}

/// What follows the closing tag that starts with `end` (nothing if there is
/// none). Placeholders of block tags in what is skipped are kept (a template's
/// `{{#if}}` may open in `<head>` and close in the body).
fn skip_past<'a>(out: &mut String, rest: &'a str, end: &str) -> &'a str {
    let found = find_ascii_ci(rest, end);
    keep_blocks(out, &rest[..found.unwrap_or(rest.len())]);
    let Some(at) = found else {
        return "";
    };
    let closing = &rest[at..];
    match memchr::memchr(b'>', closing.as_bytes()) {
        Some(gt) => &closing[gt + 1..],
        None => closing,
    }
}

/// Appends text from between tags: entities decoded, each run of whitespace
/// (not the no-break space, which becomes a plain one) as one space.
///
/// Words with single spaces between them need no collapsing, so they are
/// copied as one slice; the copy is cut only where whitespace must collapse or
/// a character is not ASCII.
fn push_text(out: &mut String, raw: &str) {
    if raw.is_empty() {
        return;
    }
    let decoded;
    let raw = if memchr::memchr(b'&', raw.as_bytes()).is_some() {
        decoded = decode_entities(raw);
        decoded.as_str()
    } else {
        raw
    };
    let bytes = raw.as_bytes();
    // Whether the text written just before `run` ends in whitespace.
    let mut last_space = out.is_empty() || out.ends_with([' ', '\n']);
    let mut run = 0;
    let mut i = 0;
    loop {
        while i < bytes.len() && PLAIN[usize::from(bytes[i])] {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let after_space = if i > run {
            bytes[i - 1] == b' '
        } else {
            last_space
        };
        if b == b' ' && !after_space {
            // A single space between words stays in the run.
            i += 1;
            continue;
        }
        out.push_str(&raw[run..i]);
        let c = raw[i..].chars().next().unwrap_or(' ');
        i += c.len_utf8();
        run = i;
        if c == '\u{a0}' {
            out.push(' ');
            last_space = false;
        } else if c.is_whitespace() {
            if !after_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out.push_str(&raw[run..]);
}

/// ASCII bytes other than whitespace: text copied as it is.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = !(b as u8).is_ascii_whitespace();
        b += 1;
    }
    t
};

fn newline(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn blank_line(out: &mut String) {
    newline(out);
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Longest line of the text part before wrapping at a space.
const WRAP: usize = 78;

/// Appends `line`, wrapped at spaces to at most [`WRAP`] characters where it can
/// be (a long URL stays whole).
///
/// The usual line, words between single spaces, is cut where the greedy fill
/// would break it: at the last space within [`WRAP`] characters of the line's
/// start (or, when the first word is longer than that, at the space after it),
/// found with memchr instead of looking at every word.
fn push_wrapped(out: &mut String, line: &str) {
    let bytes = line.as_bytes();
    if bytes.first() == Some(&b' ')
        || bytes.last() == Some(&b' ')
        || memchr::memmem::find(bytes, b"  ").is_some()
    {
        return push_wrapped_words(out, line);
    }
    let ascii = line.is_ascii();
    let mut rest = line;
    loop {
        // Byte offset of the character just past WRAP characters, if any.
        let past = if ascii {
            (rest.len() > WRAP).then_some(WRAP)
        } else {
            rest.char_indices().nth(WRAP).map(|(at, _)| at)
        };
        let Some(past) = past else {
            break;
        };
        let head = rest.as_bytes();
        // `rest` starts with a word, so a space found is past its first byte.
        let cut = memchr::memrchr(b' ', &head[..=past])
            .or_else(|| memchr::memchr(b' ', &head[past..]).map(|at| past + at));
        let Some(cut) = cut else {
            break;
        };
        out.push_str(&rest[..cut]);
        out.push('\n');
        rest = &rest[cut + 1..];
    }
    out.push_str(rest);
}

/// [`push_wrapped`] for lines with runs of spaces, which collapse to one: a
/// byte scan finds the words and counts their characters (bytes that do not
/// continue a UTF-8 sequence).
fn push_wrapped_words(out: &mut String, line: &str) {
    let bytes = line.as_bytes();
    let mut width = 0;
    let mut first = true;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' {
            i += 1;
            continue;
        }
        let start = i;
        let mut len = 0;
        while i < bytes.len() && bytes[i] != b' ' {
            len += usize::from(bytes[i] & 0xC0 != 0x80);
            i += 1;
        }
        if !first {
            if width + 1 + len > WRAP {
                out.push('\n');
                width = 0;
            } else {
                out.push(' ');
                width += 1;
            }
        }
        first = false;
        // `start` and `i` are at spaces or the ends: character boundaries.
        out.push_str(&line[start..i]);
        width += len;
    }
}

/// Appends one line, wrapped if it is longer than [`WRAP`] characters.
fn push_line(out: &mut String, line: &str) {
    // A line of at most WRAP bytes has at most WRAP characters.
    if line.len() > WRAP && line.chars().count() > WRAP {
        push_wrapped(out, line);
    } else {
        out.push_str(line);
    }
}

/// Wraps lines longer than [`WRAP`] at spaces; text with no long line is returned as is.
pub fn wrap(text: String) -> String {
    if text.lines().all(|l| l.len() <= WRAP) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(body) => {
                push_line(&mut out, body);
                out.push('\n');
            }
            None => push_line(&mut out, line),
        }
    }
    out
}

/// Trims each line and collapses runs of blank lines.
pub fn tidy(s: &str) -> String {
    tidy_lines(s, |out, line| out.push_str(line))
}

/// `wrap(tidy(s))` in one pass and one buffer.
pub fn tidy_wrapped(s: &str) -> String {
    tidy_lines(s, push_line)
}

fn tidy_lines(s: &str, push: impl Fn(&mut String, &str)) -> String {
    let mut out = String::with_capacity(s.len() + 64);
    let mut blank = 0;
    for line in s.lines().map(str::trim) {
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        push(&mut out, line);
    }
    out.push('\n');
    out
}

/// Where the value of the attribute `name_eq` (its name and `=`, e.g.
/// `href=`) is in `tag`, without quotes.
fn attribute_span(tag: &str, name_eq: &str) -> Option<(usize, usize)> {
    let at = find_ascii_ci(tag, name_eq)? + name_eq.len();
    let value = &tag[at..];
    let quote = value.chars().next()?;
    if quote == '"' || quote == '\'' {
        let len = value[1..].find(quote)?;
        Some((at + 1, at + 1 + len))
    } else {
        let word = value.split_whitespace().next()?;
        Some((at, at + word.len()))
    }
}

/// The value of the attribute `name_eq`, entities decoded.
#[cfg(test)]
fn attribute(tag: &str, name_eq: &str) -> Option<String> {
    let (start, end) = attribute_span(tag, name_eq)?;
    Some(decode_entities(&tag[start..end]))
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let entity = &rest[1..e];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" | "#x27" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                "copy" => Some('©'),
                "euro" => Some('€'),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                _ => entity
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_long_lines_but_not_urls() {
        let long = format!(
            "<p>{} https://shop.example/{}</p>",
            "word ".repeat(40),
            "x".repeat(100)
        );
        let text = wrap(from_html(&long));
        assert!(
            text.lines()
                .all(|l| l.chars().count() <= WRAP || !l.contains(' ')),
            "{text}"
        );
        assert!(text.contains(&format!("https://shop.example/{}", "x".repeat(100))));
    }

    #[test]
    fn tidy_wrapped_is_wrap_of_tidy() {
        let samples = [
            String::new(),
            "  \n\n".to_string(),
            format!("  a  \n\n\n b {}\n", "wörd ".repeat(30)),
            format!("{}\r\n x\ty  \n", "ab  c".repeat(40)),
            format!("é{}", "\u{a0}€ ".repeat(50)),
            format!("{} {}", "x".repeat(90), "y ".repeat(50)),
            format!("{} {}z", "x".repeat(90), "y ".repeat(50)),
            format!(
                "{}{}{}",
                "ß ".repeat(20),
                "q".repeat(80),
                " Ünï cödé".repeat(30)
            ),
            format!(" {} ", "ab ".repeat(60)),
        ];
        for s in samples {
            assert_eq!(tidy_wrapped(&s), wrap(tidy(&s)), "{s:?}");
            for line in s.lines().chain([s.as_str()]) {
                let (mut new, mut old) = (String::new(), String::new());
                push_wrapped(&mut new, line);
                push_wrapped_reference(&mut old, line);
                assert_eq!(new, old, "{line:?}");
            }
        }
    }

    #[test]
    fn wrapping_matches_the_word_by_word_fill() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        let spaced = "[a é€ x]{0,400}".boxed();
        // Single spaces: the memchr path.
        let single = prop::collection::vec("[aé€x]{1,100}", 0..40)
            .prop_map(|words| words.join(" "))
            .boxed();
        let ascii = prop::collection::vec("[ax]{1,20}", 0..60)
            .prop_map(|words| words.join(" "))
            .boxed();
        for strategy in [spaced, single, ascii] {
            runner
                .run(&strategy, |line| {
                    let (mut new, mut old) = (String::new(), String::new());
                    push_wrapped(&mut new, &line);
                    push_wrapped_reference(&mut old, &line);
                    prop_assert_eq!(new, old);
                    Ok(())
                })
                .unwrap();
        }
    }

    /// The wrapping as first written: the oracle for the faster versions.
    fn push_wrapped_reference(out: &mut String, line: &str) {
        let mut width = 0;
        for (i, word) in line.split(' ').filter(|w| !w.is_empty()).enumerate() {
            let len = word.chars().count();
            if i > 0 {
                if width + 1 + len > WRAP {
                    out.push('\n');
                    width = 0;
                } else {
                    out.push(' ');
                    width += 1;
                }
            }
            out.push_str(word);
            width += len;
        }
    }

    /// The converter as first written: the oracle for the faster one.
    fn from_html_reference(html: &str) -> String {
        let mut out = String::with_capacity(html.len() / 2);
        let mut rest = html;
        let mut link: Option<String> = None;
        let mut link_text_start = 0;
        while let Some(lt) = rest.find('<') {
            push_text_reference(&mut out, &rest[..lt]);
            let Some(gt) = rest[lt..].find('>') else {
                push_text_reference(&mut out, &rest[lt..]);
                rest = "";
                break;
            };
            let tag = &rest[lt + 1..lt + gt];
            rest = &rest[lt + gt + 1..];
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            let closing = tag.starts_with('/');
            match name.as_str() {
                // Content that is not text at all.
                "head" | "style" | "script" | "title" if !closing => {
                    let end = format!("</{name}");
                    match find_ascii_ci(rest, &end) {
                        Some(at) => {
                            rest = &rest[at..];
                            if let Some(gt) = rest.find('>') {
                                rest = &rest[gt + 1..];
                            }
                        }
                        None => rest = "",
                    }
                }
                "a" if !closing => {
                    link = attribute(tag, "href=");
                    link_text_start = out.len();
                }
                "a" => {
                    if let Some(url) = link.take() {
                        // `{{…}}` is a link computed by the template (when deriving the
                        // text template from HTML source).
                        let is_link = url.starts_with("http") || url.starts_with("{{");
                        let text = out
                            .get(link_text_start..)
                            .unwrap_or_default()
                            .trim()
                            .to_string();
                        if is_link && text.is_empty() {
                            out.push_str(&url);
                        } else if is_link && text != url {
                            out.push_str(&format!(" ({url})"));
                        }
                    }
                }
                "br" => out.push('\n'),
                "li" if !closing => {
                    newline(&mut out);
                    out.push_str("- ");
                }
                "p" | "div" | "tr" | "table" | "h1" | "h2" | "h3" | "h4" | "ul" | "ol" | "hr" => {
                    blank_line(&mut out)
                }
                "li" => newline(&mut out),
                "td" | "th" if closing => out.push(' '),
                _ => {}
            }
        }
        push_text_reference(&mut out, rest);
        tidy(&out)
    }

    fn push_text_reference(out: &mut String, raw: &str) {
        let decoded = decode_entities(raw);
        let mut last_space = out.ends_with([' ', '\n']) || out.is_empty();
        for c in decoded.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            } else {
                out.push(if c == '\u{a0}' { ' ' } else { c });
                last_space = false;
            }
        }
    }

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

    #[test]
    fn converts_as_the_first_version_did() {
        use proptest::prelude::*;
        let samples = [
            "<html><head><title>x</title><style>p{color:red}</style></head><body>\
             <h1>Hello   Ann &amp; co</h1><P>Shop <A HREF='https://a.example/?x=1&amp;y=2'>the sale</A></P>\
             <ul><li>One</li><li>Two &lt;3 &#x20AC; &nbsp;x</li></ul><table><tr><td>a</td><th>b</th></tr></table>\
             <a href=\"https://b.example\"></a><a href=\"https://c.example\">https://c.example</a> <a href=mailto:x@y>m</a>\
             <script>var x = '<p>';</script>tail&bogus; &amp</body></html>",
            "no tags at all\u{a0}\u{2003} ü\t\n x",
            "<p>unclosed <b",
            "<p>x <a href=\"https://x.example\"> <li>y</a> z",
            "<br/><br><hr><div>x</div><h2>y</h2><h3>z</h3><h4>w</h4><ol><li>q</ol>",
            "<a href=\"{{unsubscribe_url}}\">Unsubscribe</a> <a href=\"{{u}}\">{{u}}</a>",
            "",
        ];
        for html in samples {
            assert_eq!(from_html(html), from_html_reference(html), "{html:?}");
            assert_eq!(
                part_from_html(html),
                tidy_wrapped(&from_html_reference(html))
            );
        }
        let mut runner = proptest::test_runner::TestRunner::default();
        let pieces = prop::collection::vec(
            prop_oneof![
                "[a-zé€ \u{a0}\t\n]{0,12}",
                Just("<p>".to_string()),
                Just("</p>".to_string()),
                Just("<br>".to_string()),
                Just("<td>".to_string()),
                Just("</td>".to_string()),
                Just("<li>".to_string()),
                Just("</li>".to_string()),
                Just("<a href=\"https://x.example/a\">".to_string()),
                Just("</a>".to_string()),
                Just("<style>x</style>".to_string()),
                Just("&amp;".to_string()),
                Just("&#8364;".to_string()),
                Just("&nbsp;".to_string()),
                Just("<".to_string()),
                Just(">".to_string()),
            ],
            0..40,
        )
        .prop_map(|p| p.concat());
        runner
            .run(&pieces, |html| {
                prop_assert_eq!(from_html(&html), from_html_reference(&html));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn readable_text() {
        let html = "<html><head><title>x</title><style>p{color:red}</style></head><body>\
            <h1>Hello   Ann &amp; co</h1><p>Shop the <a href=\"https://shop.example/sale\">spring sale</a> now.</p>\
            <ul><li>One</li><li>Two &lt;3</li></ul><p>Line<br>break &#8364;5</p>\
            <a href=\"https://shop.example\">https://shop.example</a></body></html>";
        assert_eq!(
            from_html(html),
            "Hello Ann & co\n\nShop the spring sale (https://shop.example/sale) now.\n\n- One\n- Two <3\n\nLine\nbreak €5\n\nhttps://shop.example\n"
        );
    }
}
