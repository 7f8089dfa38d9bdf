//! Click tracking and the open pixel, applied to rendered HTML.
//!
//! Every `href` with an http(s) URL becomes a tracking URL whose signed token
//! carries the original; `mailto:`, `tel:`, anchors and the unsubscribe link stay
//! as written. The pixel goes just before `</body>` (or at the end).

use super::find_ascii_ci;
use crate::token::{Purpose, Signer, Token};

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
        let token = self.signer.sign(&Token {
            purpose: Purpose::Unsubscribe,
            delivery_id: self.delivery_id,
            customer_id: self.customer_id,
            link: None,
        });
        format!("{}/u/{token}", self.base_url)
    }

    fn click_url(&self, index: u32, url: &str) -> String {
        let token = self.signer.sign(&Token {
            purpose: Purpose::Click,
            delivery_id: self.delivery_id,
            customer_id: self.customer_id,
            link: Some((index, url.to_string())),
        });
        format!("{}/c/{token}", self.base_url)
    }

    fn pixel_url(&self) -> String {
        let token = self.signer.sign(&Token {
            purpose: Purpose::Open,
            delivery_id: self.delivery_id,
            customer_id: self.customer_id,
            link: None,
        });
        format!("{}/o/{token}.gif", self.base_url)
    }

    /// Rewrites links and adds the pixel. `unsubscribe_url` is left alone.
    pub fn apply(&self, html: &str, unsubscribe_url: &str) -> String {
        let mut out = String::with_capacity(html.len() + 1024);
        let mut index = 0u32;
        let mut rest = html;
        while let Some((before, quote, value, after)) = next_href(rest) {
            out.push_str(before);
            out.push(quote);
            let url = decode_amp(value);
            if is_trackable(&url) && url != unsubscribe_url {
                out.push_str(&self.click_url(index, &url));
                index += 1;
            } else {
                out.push_str(value);
            }
            out.push(quote);
            rest = after;
        }
        out.push_str(rest);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0;width:1px;height:1px\">",
            self.pixel_url()
        );
        // Search the tail only: the closing tag is at the end of any real document.
        let tail_start = out.len().saturating_sub(512);
        let tail_start = (tail_start..out.len())
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(out.len());
        match find_ascii_ci(&out[tail_start..], "</body>").map(|at| tail_start + at) {
            Some(at) => out.insert_str(at, &pixel),
            None => out.push_str(&pixel),
        }
        out
    }
}

fn is_trackable(url: &str) -> bool {
    let lower = url
        .trim_start()
        .get(..8)
        .unwrap_or(url)
        .to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The HTML escaping of `&` in attribute values, undone for the URL itself.
fn decode_amp(value: &str) -> String {
    value.replace("&amp;", "&")
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

    #[test]
    fn rewrites_only_web_links_and_adds_pixel() {
        let signer = Signer::new(&["a-secret-of-16-chars".to_string()]).unwrap();
        let t = Tracking {
            signer: &signer,
            base_url: "https://t.example",
            delivery_id: 5,
            customer_id: 9,
        };
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
}
