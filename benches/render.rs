//! Render + build throughput on one core: a ~3 KB HTML template with 10 variables,
//! an `#each` over 3 purchases, link tracking and the open pixel, built into a
//! lettre message and formatted to bytes, for 100,000 customers.
//!
//! Run: `cargo bench --bench render` (prints messages per second).

use std::time::Instant;

use herald::message::{self, Envelope};
use herald::render::{self, Templates, links::Tracking};
use herald::token::Signer;
use serde_json::{Map, Value, json};

const TEMPLATE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>{{campaign.name}}</title>
<style>body{margin:0;padding:0;background:#f4f4f4;font-family:Helvetica,Arial,sans-serif}.btn{background:#0b5;color:#fff;padding:12px 20px;border-radius:4px;text-decoration:none}</style></head>
<body><table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<table role="presentation" width="600" cellpadding="0" cellspacing="0" style="background:#ffffff">
<tr><td style="padding:24px"><a href="https://shop.example/"><img src="https://shop.example/logo.png" alt="Acme" width="120"></a></td></tr>
<tr><td style="padding:0 24px"><h1 style="font-size:24px">Hi {{default customer.first_name "there"}} {{customer.last_name}},</h1>
<p>We miss you in {{customer.city}}! As a {{customer.plan}} member with {{format_number customer.orders}} orders and {{format_currency customer.lifetime_value "EUR"}} spent, here is 15% off your next order.</p>
<p>Your code: <strong>{{upper customer.code}}</strong> — valid until {{format_date now "%d %B %Y" "Europe/Berlin"}}.</p></td></tr>
<tr><td style="padding:0 24px"><h2 style="font-size:18px">Based on your last purchases</h2><table role="presentation" width="100%">
{{#each events.purchase}}<tr><td style="padding:8px 0"><a href="https://shop.example/p/{{category}}?utm_campaign={{../campaign.name}}">{{product}}</a></td><td align="right">{{format_currency amount "EUR"}}</td></tr>
{{/each}}</table></td></tr>
<tr><td style="padding:24px" align="center"><a class="btn" href="https://shop.example/sale?code={{customer.code}}&amp;utm_source=email&amp;utm_campaign={{campaign.name}}">Shop now</a></td></tr>
<tr><td style="padding:24px;font-size:12px;color:#777">You get this email because you are a customer of Acme Shop ({{customer.email}}).
<a href="https://shop.example/account/preferences">Email preferences</a> · <a href="{{unsubscribe_url}}">Unsubscribe</a><br>
Acme Shop GmbH · Musterstraße 1 · 10115 Berlin · Germany<br>Questions? <a href="mailto:support@acme.example">support@acme.example</a>
Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur.
Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.</td></tr>
</table></td></tr></table></body></html>
"#;

/// The allocator the `herald` binary uses (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("herald-bench-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("offer.html.hbs"), TEMPLATE).expect("write template");
    let mut templates = Templates::load(&dir).expect("templates");
    templates
        .add_subject(
            "offer",
            "{{default customer.first_name \"Hi\"}}, 15% off your next order",
        )
        .expect("subject");
    println!("template: {} bytes", TEMPLATE.len());

    let signer = Signer::new(&["bench-secret-0123456789".to_string()]).expect("signer");
    let from = message::mailbox("Acme Shop <hello@acme.example>").expect("from");
    let purchases: Vec<Value> = (0..3)
        .map(|i| {
            render::event_context(1_790_000_000_000 - i * 86_400_000, json!({"product": format!("Trail Shoe {i}"), "category": "shoes", "amount": 129.0 + i as f64}).as_object().expect("object"))
        })
        .collect();

    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        let attrs: Map<String, Value> = json!({"city": "Berlin", "plan": "pro", "orders": 12, "lifetime_value": 1234.5, "code": format!("save{i}")})
            .as_object()
            .expect("object")
            .clone();
        let email = format!("customer{i}@example.com");
        let customer = render::customer_context(
            i as i64,
            &email,
            None,
            Some("Ann"),
            Some("Lee"),
            Some("Europe/Berlin"),
            0,
            &attrs,
        );
        let tracking = Tracking {
            signer: &signer,
            base_url: "https://t.acme.example",
            delivery_id: i,
            customer_id: i,
        };
        let unsubscribe = tracking.unsubscribe_url();
        let mut events = Map::new();
        events.insert("purchase".into(), Value::Array(purchases.clone()));
        let context = render::message_context(
            customer,
            "winback",
            "offer",
            events,
            &unsubscribe,
            None,
            1_790_000_000_000,
        );
        let mut rendered = templates.render("offer", "offer", context).expect("render");
        rendered.html = tracking.apply(&rendered.html, &unsubscribe);
        let env = Envelope {
            from: &from,
            reply_to: None,
            // As the send path builds it: the address parsed alone, the
            // display name from the customer's names.
            to: lettre::message::Mailbox::new(
                Some("Ann Lee".to_string()),
                email.parse().expect("address"),
            ),
            message_id: message::message_id(&format!("{i:032x}"), "b", &from),
            unsubscribe_url: &unsubscribe,
            unsubscribe_mailto: None,
            list_id: "<b.acme.example>",
            feedback_id: "b:s:marketing:acme.example",
            eight_bit: true,
        };
        let eml = message::build(&rendered, &env).expect("build").formatted();
        if i == 0
            && let Ok(path) = std::env::var("SAVE")
        {
            std::fs::write(path, &eml).expect("save the first message");
        }
        bytes += eml.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "render+track+build+format: {n} messages in {secs:.2} s = {:.0} messages/s on one core (avg {} bytes)",
        n as f64 / secs,
        bytes / n as usize
    );
}
