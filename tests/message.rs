//! Rendering and building messages, checked by an independent parser: Python's
//! `email` package with the default policy.

mod common;

use std::process::Command;

use common::assert_snapshot;

use herald::message::{self, Envelope};
use herald::render::{self, Templates, links::Tracking};
use herald::token::Signer;
use serde_json::{Map, Value, json};

fn templates() -> (tempfile::TempDir, Templates) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("partials")).unwrap();
    std::fs::write(dir.path().join("partials/layout.hbs"), "<html><body><table role=\"presentation\"><tr><td>{{> @partial-block}}</td></tr></table>{{> footer}}</body></html>").unwrap();
    std::fs::write(
        dir.path().join("partials/footer.hbs"),
        "<p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a> {{default postal_address \"\"}}</p>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("offer.html.hbs"),
        "{{#> layout}}<h1>Hi {{default customer.first_name \"there\"}},</h1>\n<p>Your plan: {{customer.plan}}. Note: {{customer.note}}</p>\n\
         <ul>{{#each events.purchase}}<li>{{product}} {{format_currency amount \"EUR\"}}</li>{{/each}}</ul>\n\
         <a href=\"https://shop.example/sale?c={{campaign.name}}&amp;s=1\">Shop the sale</a> <a href=\"mailto:help@shop.example\">Mail us</a>{{/layout}}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.html.hbs"),
        "<p>line one</p>\n<p>{{customer.missing_field}}</p>\n",
    )
    .unwrap();
    let mut t = Templates::load(dir.path()).unwrap();
    t.add_subject(
        "s",
        "{{default customer.first_name \"Friend\"}}, 15 % Rabatt für Sie",
    )
    .unwrap();
    (dir, t)
}

fn context(note: &str) -> Value {
    let attrs: Map<String, Value> = json!({"plan": "pro", "note": note})
        .as_object()
        .unwrap()
        .clone();
    let customer = render::customer_context(
        9,
        "ann@example.com",
        None,
        Some("Ann"),
        Some("Lee"),
        Some("Europe/Berlin"),
        0,
        &attrs,
    );
    let mut events = Map::new();
    events.insert(
        "purchase".into(),
        json!([
            render::event_context(
                2_000,
                json!({"product": "Shoes", "amount": 129.0})
                    .as_object()
                    .unwrap()
            ),
            render::event_context(
                1_000,
                json!({"product": "Socks", "amount": 14.9})
                    .as_object()
                    .unwrap()
            ),
        ]),
    );
    render::message_context(
        customer,
        "winback",
        "offer",
        events,
        "https://t.example/u/TOKEN",
        Some("Acme Inc, 1 Main St, Springfield"),
        0,
    )
}

#[test]
fn escapes_attributes_in_html_but_not_in_text() {
    let (_d, t) = templates();
    let r = t
        .render("offer", "s", context("<script>alert(1)</script>\"onload=x"))
        .unwrap();
    assert!(
        !r.html.contains("<script>") && !r.html.contains("\"onload="),
        "{}",
        r.html
    );
    assert!(r.html.contains("&lt;script&gt;"));
    assert!(
        r.text.contains("<script>alert(1)</script>\"onload=x"),
        "text is derived from HTML and decoded: {}",
        r.text
    );
    assert!(
        r.text
            .contains("Shop the sale (https://shop.example/sale?c=winback&s=1)"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("- Shoes €129.00\n- Socks €14.90"),
        "{}",
        r.text
    );
    assert_eq!(r.subject, "Ann, 15 % Rabatt für Sie");
}

/// Where a text part comes from: the template's own `NAME.txt.hbs`; else a
/// text template derived from the HTML source, which uses a partial's own
/// `.txt.hbs` where there is one.
#[test]
fn text_part_sources() {
    let (dir, _) = templates();
    std::fs::write(
        dir.path().join("plain.html.hbs"),
        "<p>Hello <b>{{customer.first_name}}</b></p>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("plain.txt.hbs"),
        "Hand-written for {{customer.first_name}} <not a tag>",
    )
    .unwrap();
    // The directory as it is now, with a subject to render.
    let load = || {
        let mut t = Templates::load(dir.path()).unwrap();
        t.add_subject("s", "x").unwrap();
        t
    };
    let t = load();
    let own = t.render("plain", "s", context("n")).unwrap();
    assert_eq!(own.text, "Hand-written for Ann <not a tag>");
    let derived = t.render("offer", "s", context("n")).unwrap();
    assert!(
        derived.text.ends_with(
            "Mail us\n\nUnsubscribe (https://t.example/u/TOKEN) Acme Inc, 1 Main St, Springfield\n"
        ),
        "{}",
        derived.text
    );

    std::fs::write(
        dir.path().join("partials/footer.txt.hbs"),
        "-- \nStop these mails: {{unsubscribe_url}}",
    )
    .unwrap();
    let t = load();
    let with_partial_text = t.render("offer", "s", context("n")).unwrap();
    assert!(
        with_partial_text
            .text
            .contains("Stop these mails: https://t.example/u/TOKEN"),
        "{}",
        with_partial_text.text
    );
    assert!(
        with_partial_text
            .text
            .contains("Shop the sale (https://shop.example/sale?c=winback&s=1)"),
        "{}",
        with_partial_text.text
    );
    assert!(
        !with_partial_text.text.contains("Unsubscribe ("),
        "{}",
        with_partial_text.text
    );
}

#[test]
fn missing_variable_names_template_line_and_variable() {
    let (_d, t) = templates();
    let e = t
        .render("broken", "s", context("x"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.html.hbs:2:"), "{e}");
    assert!(e.contains("\"customer.missing_field\" is missing"), "{e}");
    let e = t.render("nope", "s", context("x")).unwrap_err().to_string();
    assert!(e.contains("no template \"nope\""), "{e}");
}

#[test]
fn eml_parses_back_with_python_email() {
    let (dir, t) = templates();
    let signer = Signer::new(&["test-secret-0123456789".to_string()]).unwrap();
    let tracking = Tracking {
        signer: &signer,
        base_url: "https://t.example",
        delivery_id: 77,
        customer_id: 9,
    };
    let unsub = tracking.unsubscribe_url();
    let mut ctx = context("x");
    ctx["unsubscribe_url"] = json!(unsub);
    let mut r = t.render("offer", "s", ctx).unwrap();
    r.html = tracking.apply(&r.html, &unsub);
    let from = message::mailbox("Acme Shöp <hello@acme.example>").unwrap();
    let reply = message::mailbox("support@acme.example").unwrap();
    let env = Envelope {
        from: &from,
        reply_to: Some(&reply),
        to: message::mailbox("Ann Müller <ann@example.com>").unwrap(),
        message_id: message::message_id("77", "t", &from),
        unsubscribe_url: &unsub,
        unsubscribe_mailto: None,
        list_id: &message::list_id("t", Some("Autumn \"offers\"\r\nBcc: x"), &from),
        feedback_id: &message::feedback_id("t", "s:1", "marketing", &from),
        eight_bit: true,
    };
    let eml = message::build(&r, &env).unwrap().formatted();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, eml).unwrap();
    let script = r#"
import sys, email, email.policy, json
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
parts = [p.get_content_type() for p in m.walk()]
html = m.get_body(('html',)).get_content()
text = m.get_body(('plain',)).get_content()
print(json.dumps({
  "subject": str(m["subject"]), "from": str(m["from"]), "to": str(m["to"]), "reply_to": str(m["reply-to"]),
  "message_id": str(m["message-id"]), "date": m["date"] is not None, "lu": str(m["list-unsubscribe"]),
  "lup": str(m["list-unsubscribe-post"]), "list_id": str(m["list-id"]), "fbl": str(m["feedback-id"]),
  "bcc": m["bcc"] is not None, "parts": parts, "html": html, "text": text,
  "defects": [str(d) for p in m.walk() for d in p.defects]}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["subject"], "Ann, 15 % Rabatt für Sie");
    assert_eq!(v["from"], "Acme Shöp <hello@acme.example>");
    assert_eq!(v["to"], "Ann Müller <ann@example.com>");
    assert_eq!(v["reply_to"], "support@acme.example");
    assert_eq!(v["message_id"], "<herald.77.t@acme.example>");
    assert_eq!(v["date"], true);
    assert_eq!(v["lu"], format!("<{unsub}>"));
    assert_eq!(v["lup"], "List-Unsubscribe=One-Click");
    assert_eq!(v["list_id"], "\"Autumn offers Bcc: x\" <t.acme.example>");
    assert_eq!(v["fbl"], "t:s1:marketing:acme.example");
    assert_eq!(v["bcc"], false);
    assert_eq!(
        v["parts"],
        json!(["multipart/alternative", "text/plain", "text/html"])
    );
    assert_eq!(v["defects"], json!([]));
    let html = v["html"].as_str().unwrap();
    assert_eq!(
        html.matches("https://t.example/c/").count(),
        1,
        "one web link tracked: {html}"
    );
    assert!(html.contains("mailto:help@shop.example"));
    assert!(
        html.contains(&format!("href=\"{unsub}\"")),
        "unsubscribe link untouched"
    );
    assert!(html.contains("https://t.example/o/"), "open pixel");
    assert!(v["text"].as_str().unwrap().contains("Hi Ann,"));
}

#[test]
fn dkim_signature_verifies_with_dkimpy() {
    if !common::have_dkimpy() {
        return;
    }
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let from = message::mailbox("Acme <hello@acme.example>").unwrap();
    let rendered = herald::render::Rendered {
        subject: "Grüße".into(),
        html: "<p>Hi</p>".into(),
        text: "Hi\n".into(),
    };
    let reply = message::mailbox("support@acme.example").unwrap();
    let env = Envelope {
        from: &from,
        reply_to: Some(&reply),
        to: message::mailbox("ann@example.com").unwrap(),
        message_id: message::message_id("1", "d", &from),
        unsubscribe_url: "https://t.example/u/x",
        unsubscribe_mailto: None,
        list_id: "<d.acme.example>",
        feedback_id: "d:s:marketing:acme.example",
        eight_bit: true,
    };
    let without_reply_to = Envelope {
        reply_to: None,
        to: env.to.clone(),
        message_id: env.message_id.clone(),
        ..env
    };
    let dir = tempfile::tempdir().unwrap();
    let verify = |name: &str, bytes: &[u8]| -> String {
        let eml = dir.path().join(name);
        std::fs::write(&eml, bytes).unwrap();
        common::dkim_verify(&eml).to_lowercase()
    };
    // `openssl genrsa` writes PKCS#8 today; older keys are PKCS#1.
    for key_file in ["dkim-test-key.pkcs8.pem", "dkim-test-key.pem"] {
        let key = std::fs::read_to_string(fixtures.join(key_file)).unwrap();
        let dkim = message::Dkim::new("herald", "acme.example", &key, key_file).unwrap();
        for env in [&env, &without_reply_to] {
            let signed = dkim
                .sign(&message::build(&rendered, env).unwrap().formatted())
                .unwrap();
            let text = verify("signed.eml", &signed);
            assert!(text.starts_with("ok "), "{key_file}: {text}");
            let h: Vec<&str> = text[3..]
                .trim_start_matches("h=")
                .split(':')
                .map(str::trim)
                .collect();
            for header in [
                "from",
                "to",
                "subject",
                "date",
                "message-id",
                "mime-version",
                "content-type",
                "content-transfer-encoding",
                "list-unsubscribe",
                "list-unsubscribe-post",
                "list-id",
                "feedback-id",
                "reply-to",
            ] {
                // Over-signed: more entries than the message has instances.
                let present = String::from_utf8_lossy(&signed)
                    .split("\r\n\r\n")
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.to_lowercase().starts_with(&format!("{header}:")))
                    .count();
                let listed = h.iter().filter(|x| **x == header).count();
                assert!(listed > present, "{header} in h=: {text}");
            }
            // Tampered copies fail: a header added or replaced.
            let head_end = signed.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
            let tampered = [
                (
                    "a second Subject",
                    b"Subject: Win a prize\r\n".to_vec(),
                    None,
                ),
                (
                    "a second From",
                    b"From: ceo@acme.example\r\n".to_vec(),
                    None,
                ),
                (
                    "a Content-Type",
                    b"Content-Type: text/plain\r\n".to_vec(),
                    None,
                ),
                (
                    "a Content-Transfer-Encoding",
                    b"Content-Transfer-Encoding: base64\r\n".to_vec(),
                    None,
                ),
                (
                    "a replaced Content-Type",
                    Vec::new(),
                    Some((
                        "Content-Type: multipart/alternative",
                        "Content-Type: multipart/mixed",
                    )),
                ),
            ];
            for (what, added, replaced) in tampered {
                let mut copy = signed[..head_end].to_vec();
                copy.extend_from_slice(&added);
                copy.extend_from_slice(&signed[head_end..]);
                if let Some((from, to)) = replaced {
                    let text = String::from_utf8(copy).unwrap();
                    assert!(text.contains(from), "{text}");
                    copy = text.replacen(from, to, 1).into_bytes();
                }
                let verdict = verify("tampered.eml", &copy);
                assert!(
                    verdict.starts_with("bad "),
                    "{what} still verifies: {verdict}"
                );
            }
        }
    }
    // Anything else is one clear error naming the file.
    let err = message::Dkim::new(
        "herald",
        "acme.example",
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        "ec.pem",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("DKIM key ec.pem: not an RSA private key in PEM"),
        "{err}"
    );
}

#[test]
fn rendered_parts_match_snapshots() {
    let (_d, t) = templates();
    let signer = Signer::new(&["snapshot-secret-0123456789".to_string()]).unwrap();
    let tracking = Tracking {
        signer: &signer,
        base_url: "https://t.example",
        delivery_id: 1001,
        customer_id: 9,
    };
    let unsub = tracking.unsubscribe_url();
    let mut ctx = context("Loves <b>bold</b> & \"quotes\"");
    ctx["unsubscribe_url"] = json!(unsub);
    let mut r = t.render("offer", "s", ctx).unwrap();
    r.html = tracking.apply(&r.html, &unsub);
    assert_snapshot("offer.subject.txt", &r.subject);
    assert_snapshot("offer.html", &r.html);
    assert_snapshot("offer.txt", &r.text);
}
