//! Click tracking and the open pixel, applied to rendered HTML.
//!
//! Every `href` with an http(s) URL becomes a tracking URL whose signed token
//! carries the original; `mailto:`, `tel:`, anchors, the unsubscribe link and
//! URLs too long for a token ([`MAX_URL_LEN`]) stay as written. The pixel goes
//! just before `</body>` (or at the end).
//!
//! The URL a token carries is the one a browser would follow from the href as
//! written: character references decoded (`&amp;`, and `&#x3D;` that
//! Handlebars writes for `=` in data). An href whose URL would run script or
//! carry a document (`javascript:`, `vbscript:`, `data:`) becomes `#`, tracked
//! or not: such a URL comes from data, never from a link a marketer meant.

use std::borrow::Cow;

use super::find_ascii_ci;
use crate::token::{MAX_URL_LEN, Purpose, Signer};

/// Who the links are for and where the tracking endpoint lives.
pub struct Tracking<'a> {
    pub signer: &'a Signer,
    /// Public base URL without a trailing slash, e.g. `https://t.shop.example`.
    pub base_url: &'a str,
    pub delivery_id: u64,
    pub customer_id: u64,
}

impl Tracking<'_> {
    pub fn unsubscribe_url(&self) -> String {
        let mut url = String::with_capacity(self.base_url.len() + 40);
        url.push_str(self.base_url);
        url.push_str("/u/");
        self.sign_into(Purpose::Unsubscribe, None, &mut url);
        url
    }

    fn sign_into(&self, purpose: Purpose, link: Option<(u32, &str)>, out: &mut String) {
        self.signer
            .sign_into(purpose, self.delivery_id, self.customer_id, link, out);
    }

    /// Rewrites links and adds the pixel. `unsubscribe_url` is left alone.
    ///
    /// One pass into one buffer: tokens are signed straight into the output.
    pub fn apply(&self, html: &str, unsubscribe_url: &str) -> String {
        let mut out = String::with_capacity(html.len() + 1024);
        let mut index = 0u32;
        let mut rest = html;
        while let Some((before, quote, value, after)) = next_href(rest) {
            out.push_str(before);
            out.push(quote);
            let url = decode_references(value);
            if runs_script(&url) {
                out.push('#');
            } else if is_trackable(&url) && url.len() <= MAX_URL_LEN && url != unsubscribe_url {
                // (A longer URL is left as written: its token would not verify.)
                out.push_str(self.base_url);
                out.push_str("/c/");
                self.sign_into(Purpose::Click, Some((index, &url)), &mut out);
                index += 1;
            } else {
                out.push_str(value);
            }
            out.push(quote);
            rest = after;
        }
        out.push_str(rest);
        // Search the tail only: the closing tag is at the end of any real document.
        let tail_start = out.len().saturating_sub(512);
        let tail_start = (tail_start..out.len())
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(out.len());
        let body_end = find_ascii_ci(&out[tail_start..], "</body>").map(|at| tail_start + at);
        let tail = match body_end {
            Some(at) => out.split_off(at),
            None => String::new(),
        };
        out.push_str("<img src=\"");
        out.push_str(self.base_url);
        out.push_str("/o/");
        self.sign_into(Purpose::Open, None, &mut out);
        out.push_str(".gif\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0;width:1px;height:1px\">");
        out.push_str(&tail);
        out
    }
}

fn is_trackable(url: &str) -> bool {
    // The first 8 bytes after leading space, or the whole URL where that is not
    // a boundary (as before: no allocation for the lowercase copy, same answers).
    let start = url.trim_start().get(..8).unwrap_or(url).as_bytes();
    let has = |scheme: &str| {
        start
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme.as_bytes()))
    };
    has("http://") || has("https://")
}

/// The attribute value as a browser reads it: character references decoded.
fn decode_references(value: &str) -> Cow<'_, str> {
    if value.contains('&') {
        html_escape::decode_html_entities(value)
    } else {
        Cow::Borrowed(value)
    }
}

/// Whether a browser would run or render the URL itself instead of following
/// it: its scheme, read as the URL parser does (leading spaces and controls
/// dropped, tabs and line breaks ignored anywhere, any case).
fn runs_script(url: &str) -> bool {
    let mut scheme = String::with_capacity(10);
    for c in url.trim_start_matches(|c: char| c <= ' ').chars() {
        match c {
            '\t' | '\n' | '\r' => {}
            ':' => return matches!(scheme.as_str(), "javascript" | "vbscript" | "data"),
            c if c.is_ascii_alphabetic() && scheme.len() < 10 => {
                scheme.push(c.to_ascii_lowercase())
            }
            _ => return false,
        }
    }
    false
}

/// `html` with every script or data URL in an href replaced by `#`: the part
/// of [`Tracking::apply`] that applies to messages sent without tracking.
pub fn neutralise_script_links(html: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut rest = html;
    let mut changed = false;
    while let Some((before, quote, value, after)) = next_href(rest) {
        out.push_str(before);
        out.push(quote);
        if runs_script(&decode_references(value)) {
            out.push('#');
            changed = true;
        } else {
            out.push_str(value);
        }
        out.push(quote);
        rest = after;
    }
    if !changed {
        return Cow::Borrowed(html);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Finds the next `href = "…"` (or `'…'`): (text before the opening quote, quote,
/// value, text after the closing quote).
fn next_href(s: &str) -> Option<(&str, char, &str, &str)> {
    let mut from = 0;
    loop {
        let at = from + find_ascii_ci(&s[from..], "href")?;
        let preceded_ok = at == 0 || {
            let b = s.as_bytes()[at - 1];
            b.is_ascii_whitespace() || b == b'<'
        };
        let after_name = &s[at + 4..];
        let trimmed = after_name.trim_start();
        if preceded_ok && let Some(after_eq) = trimmed.strip_prefix('=') {
            let value_part = after_eq.trim_start();
            if let Some(quote) = value_part
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
            {
                let open = s.len() - value_part.len();
                let body = &s[open + 1..];
                if let Some(close) = body.find(quote) {
                    return Some((&s[..open], quote, &body[..close], &body[close + 1..]));
                }
            }
        }
        from = at + 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(&["a-secret-of-16-chars".to_string()]).unwrap()
    }

    /// Delivery 5 of customer 9, tracked at https://t.example.
    fn tracking(signer: &Signer) -> Tracking<'_> {
        Tracking {
            signer,
            base_url: "https://t.example",
            delivery_id: 5,
            customer_id: 9,
        }
    }

    #[test]
    fn rewrites_only_web_links_and_adds_pixel() {
        let signer = signer();
        let t = tracking(&signer);
        let unsub = t.unsubscribe_url();
        let html = format!(
            "<html><body><a href=\"https://shop.example/a?x=1&amp;y=2\">A</a> <a class=x href='http://b.example'>B</a> \
             <a href=\"mailto:hi@shop.example\">m</a> <a href=\"tel:+49\">t</a> <a href=\"#top\">top</a> \
             <a href=\"{unsub}\">unsubscribe</a> <p data-href=\"https://no.example\"></p></body></html>"
        );
        let out = t.apply(&html, &unsub);
        assert_eq!(out.matches("https://t.example/c/").count(), 2, "{out}");
        assert!(
            out.contains("mailto:hi@shop.example")
                && out.contains("tel:+49")
                && out.contains("#top")
        );
        assert!(out.contains(&format!("href=\"{unsub}\"")));
        assert!(out.contains("data-href=\"https://no.example\""));
        assert!(
            out.contains("https://t.example/o/")
                && out.find("/o/").unwrap() < out.find("</body>").unwrap()
        );
        // The first click token carries the decoded original URL.
        let start = out.find("/c/").unwrap() + 3;
        let token = &out[start..start + out[start..].find('"').unwrap()];
        let verified = signer.verify(token, Purpose::Click).unwrap();
        assert_eq!(
            verified.link,
            Some((0, "https://shop.example/a?x=1&y=2".to_string()))
        );
    }

    /// Handlebars escapes `=` and `&` in a URL that comes from data; the
    /// token carries the URL the browser would have followed.
    #[test]
    fn tokens_carry_the_url_a_browser_would_follow() {
        let signer = signer();
        let t = tracking(&signer);
        let html =
            "<a href=\"https://shop.example/p?id&#x3D;5&amp;src&#x3D;mail&#x27;s&#96;\">p</a>";
        let out = t.apply(html, "https://t.example/u/x");
        let start = out.find("/c/").unwrap() + 3;
        let token = &out[start..start + out[start..].find('"').unwrap()];
        let link = signer.verify(token, Purpose::Click).unwrap().link;
        assert_eq!(
            link,
            Some((0, "https://shop.example/p?id=5&src=mail's`".to_string()))
        );
    }

    #[test]
    fn script_and_data_urls_become_anchors() {
        let signer = signer();
        let t = tracking(&signer);
        for url in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "java\tscript:alert(1)",
            "jav&#x61;script&#x3A;alert(1)",
            "\u{1}vbscript:msgbox",
            "data:text/html;base64,PHNjcmlwdD4=",
        ] {
            let html = format!("<a href=\"{url}\">x</a><a href=\"https://ok.example/\">ok</a>");
            let tracked = t.apply(&html, "https://t.example/u/x");
            assert!(
                tracked.starts_with("<a href=\"#\">x</a>"),
                "{url}: {tracked}"
            );
            assert_eq!(tracked.matches("/c/").count(), 1, "{tracked}");
            let plain = neutralise_script_links(&html);
            assert_eq!(
                plain,
                "<a href=\"#\">x</a><a href=\"https://ok.example/\">ok</a>"
            );
        }
        for fine in [
            "https://ok.example/javascript:x",
            "mailto:a@b.example",
            "#data:x",
            "datax:1",
        ] {
            let html = format!("<a href=\"{fine}\">x</a>");
            assert!(
                matches!(neutralise_script_links(&html), Cow::Borrowed(_)),
                "{fine}"
            );
        }
    }

    #[test]
    fn leaves_links_too_long_for_a_token_as_written() {
        let signer = signer();
        let t = tracking(&signer);
        let long = format!("https://shop.example/{}", "q".repeat(MAX_URL_LEN));
        let html =
            format!("<a href=\"{long}\">long</a> <a href=\"https://shop.example/\">short</a>");
        let out = t.apply(&html, "");
        assert!(out.contains(&format!("href=\"{long}\"")));
        assert_eq!(out.matches("https://t.example/c/").count(), 1, "{out}");
    }
}
