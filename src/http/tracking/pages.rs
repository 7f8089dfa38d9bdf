//! The few bytes the service answers with: the pixel and plain pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A 1x1 transparent GIF (42 bytes).
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x01, 0x44, 0x00, 0x3b,
];

/// No cache may keep a tracking answer: every open must reach us.
pub fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store, no-cache, must-revalidate, private")
}

/// The pixel, with `status` (200, or 404 for an invalid token: still an image).
pub fn pixel(status: StatusCode) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (header::CACHE_CONTROL, no_store()),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (header::EXPIRES, HeaderValue::from_static("0")),
        ],
        GIF,
    )
        .into_response()
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_safe(text)
}

/// A small plain HTML page; never cached, never indexed. `title` is text,
/// `body` is HTML.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let title = escape(title);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;line-height:1.5}}\
         button{{font-size:1em;padding:.5em 1.2em}}</style></head>\n<body><h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, no_store()),
            (
                header::HeaderName::from_static("x-robots-tag"),
                HeaderValue::from_static("noindex"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        html,
    )
        .into_response()
}

/// Whose emails an unsubscribe link stops: the message's sender, the other
/// names the same list sends as, and the address.
pub struct Whom<'a> {
    pub sender: &'a str,
    pub others: Vec<&'a str>,
    pub email: &'a str,
}

/// "A", "A and B", "A, B and C", each escaped and in bold.
fn names(list: &[&str]) -> String {
    let bold: Vec<String> = list
        .iter()
        .map(|n| format!("<strong>{}</strong>", escape(n)))
        .collect();
    match bold.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// GET of an unsubscribe link: asks, changes nothing (link scanners follow GETs).
pub fn confirm_unsubscribe(whom: Option<&Whom<'_>>) -> Response {
    const BUTTON: &str = "<form method=\"post\"><button type=\"submit\" name=\"confirm\" value=\"yes\">Unsubscribe</button></form>";
    let Some(w) = whom else {
        return page(
            StatusCode::OK,
            "Unsubscribe",
            &format!("<p>Stop receiving these emails? Press the button to confirm.</p>\n{BUTTON}"),
        );
    };
    let mut body = format!(
        "<p>Stop all marketing emails from {} to <strong>{}</strong>? Press the button to confirm.</p>\n",
        names(&[w.sender]),
        escape(w.email)
    );
    if !w.others.is_empty() {
        body.push_str(&format!(
            "<p>This also stops the emails sent as {}.</p>\n",
            names(&w.others)
        ));
    }
    body.push_str(BUTTON);
    page(
        StatusCode::OK,
        &format!("Unsubscribe from {}", w.sender),
        &body,
    )
}

pub fn unsubscribed(whom: Option<&Whom<'_>>) -> Response {
    let Some(w) = whom else {
        return page(
            StatusCode::OK,
            "You are unsubscribed",
            "<p>You will not receive these emails any more.</p>",
        );
    };
    let mut body = format!(
        "<p><strong>{}</strong> will not receive marketing emails from {} any more.</p>",
        escape(w.email),
        names(&[w.sender])
    );
    if !w.others.is_empty() {
        body.push_str(&format!(
            "\n<p>Nor the emails sent as {}.</p>",
            names(&w.others)
        ));
    }
    page(StatusCode::OK, "You are unsubscribed", &body)
}

pub fn preview_unsubscribe() -> Response {
    page(
        StatusCode::OK,
        "Preview",
        "<p>This link comes from a preview: nothing was changed.</p>",
    )
}

pub fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This link is not valid. Please use the link from your email as it was sent.</p>",
    )
}

pub fn try_again() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>We could not process your request just now. Please try again in a few minutes.</p>",
    )
}
