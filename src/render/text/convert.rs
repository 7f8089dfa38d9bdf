//! HTML to text in one pass over the bytes: the layout the tags imply, links
//! as `text (url)`, entities decoded, whitespace collapsed. Run once per
//! template on its source (behind placeholders, see `derive.rs`), per message
//! only for a template whose text template could not be derived.

use super::derive::{HIDDEN_BLOCK, HIDDEN_OPEN, keep_blocks};
use crate::render::find_ascii_ci;

/// The tags' effect on layout, the links as `text (url)`, the entities decoded,
/// whitespace collapsed; lines not yet tidied.
///
/// One pass over the bytes: text between tags is copied a run at a time and
/// tag names are compared in place, so the usual message costs a few small
/// allocations (one per link), not one per tag and text node.
pub(super) fn untagged(html: &str) -> String {
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
    use super::super::{from_html, part_from_html, tidy, tidy_wrapped};
    use super::*;

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
