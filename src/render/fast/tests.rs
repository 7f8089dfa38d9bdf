//! The compiled renderer against Handlebars, the reference.

use super::*;
use serde_json::json;

/// Renders `source` (with `partials`) both ways. `Some(out)` when the
/// compiled renderer covered it (and agreed with Handlebars), `None` when
/// it left the message to Handlebars.
fn both(source: &str, partials: &[(&str, &str)], data: &Value) -> Option<String> {
    let mut hbs = crate::render::registry(true);
    for (name, p) in partials {
        hbs.register_partial(name, p).unwrap();
    }
    hbs.register_template_string("t", source).unwrap();
    let mut fast = Compiled::new(true);
    let mut slots = Slots::default();
    for (name, t) in hbs.get_templates() {
        fast.add(name, t, &mut slots);
    }
    let reference = hbs.render("t", data);
    // Twice with one memo: the second render takes every helper result
    // the first kept, as the text part does after the HTML part.
    let memo = Memo::new(slots.len());
    let first = fast.render_with("t", data, &memo);
    match fast.render_with("t", data, &memo) {
        Ok(out) => {
            assert_eq!(first, Ok(out.clone()), "{source}: again with the memo");
            match reference {
                Ok(r) => assert_eq!(out, r, "{source}"),
                Err(e) => panic!("compiled rendered {source:?} where Handlebars fails: {e}"),
            }
            Some(out)
        }
        Err(Unsupported) => None,
    }
}

fn data() -> Value {
    json!({
        "customer": {"first_name": "Ann", "last_name": "", "email": "ann@example.com",
            "city": "Köln <Süd> & \"Nord\"", "orders": 12, "ltv": 1234.5, "vip": true,
            "zero": 0, "tags": ["a", "b<", 3], "address": {"street": "Main 1"},
            "created_at": "2026-01-05T10:00:00Z", "timezone": "Europe/Berlin"},
        "campaign": {"name": "winback"},
        "events": {"purchase": [
            {"product": "Shoe", "amount": 129.0, "quantity": 2, "occurred_at": "2026-11-01T09:00:00Z"},
            {"product": "Sock", "amount": 5, "occurred_at": "2026-10-01T09:00:00Z"},
            {"product": "Hat <b>", "occurred_at": "2026-09-01T09:00:00Z"}
        ], "view": []},
        "prefs": {"news": true, "offers": false},
        "unsubscribe_url": "https://t.example/u/x?a=1&b=2",
        "now": "2026-11-25T12:00:00Z"
    })
}

/// One call's text in other contexts means other values: only results
/// computed against the message's own context are taken from the memo.
#[test]
fn memo_keeps_only_results_of_the_message_context() {
    let d = data();
    let source = "{{default amount 1}} {{#each events.purchase}}{{default amount 1}},\
        {{#with ../customer}}{{default orders 0}}{{/with}};{{/each}} {{default orders 0}}|\
        {{> p}}|{{> p who=\"A\"}}|{{> p}}|{{#with customer}}{{default orders 0}}{{/with}} \
        {{#if customer.vip}}{{default amount 1}}{{/if}} {{default amount 1}}";
    assert_eq!(
        both(source, &[("p", "{{default who \"x\"}}")], &d).as_deref(),
        Some("1 129.0,12;5,12;1,12; 0|x|A|x|12 1 1")
    );
}

#[test]
fn agrees_with_handlebars() {
    let d = data();
    let cases = [
        "Hi {{customer.first_name}} {{customer.last_name}} from {{customer.city}}!",
        "{{{customer.city}}} {{customer.orders}} {{customer.ltv}} {{customer.vip}} {{customer.tags}} {{customer.address}}",
        "{{this.customer.first_name}} {{./customer.email}} {{@root.campaign.name}} {{customer/address/street}}",
        "{{default customer.nickname \"there\"}} {{upper customer.first_name}} {{lower (default customer.x \"ÄB\")}} {{capitalize \"émile\"}}",
        "{{truncate \"a long sentence here\" 8}} {{truncate \"a long sentence\" 9 suffix=\"...\"}}",
        "{{format_number customer.orders}} {{format_currency customer.ltv \"EUR\"}} {{format_date customer.created_at \"%d %B %Y\" customer.timezone}}",
        "{{#each events.purchase}}{{@index}}:{{product}}{{#if @first}} first{{/if}}{{#if @last}} last{{/if}} {{../campaign.name}} {{@root.customer.first_name}}{{#if amount}} {{format_currency amount \"EUR\"}}{{/if}}\n{{/each}}",
        "{{#each prefs}}{{@key}}={{this}} {{@index}}/{{@first}}/{{@last}};{{/each}}",
        "{{#each events.view}}x{{else}}no views{{/each}}|{{#each events.view}}x{{/each}}",
        "{{#each customer.tags}}[{{this}}]{{/each}}",
        "{{#if customer.vip}}vip{{else if customer.orders}}orders{{else}}none{{/if}} {{#unless customer.zero}}zero{{/unless}} {{#if customer.zero includeZero=true}}z{{else}}nz{{/if}}",
        "{{#if customer.missing}}yes{{else}}no{{/if}} {{#if (gt customer.orders 10)}}many{{/if}} {{#if (eq customer.first_name \"Ann\")}}ann{{/if}}",
        "{{#if (and customer.vip (or customer.zero customer.orders) (not customer.zero))}}ok{{/if}} {{eq 1 1}} {{ne \"a\" \"b\"}} {{lt 1.5 2.5}} {{gte \"b\" \"a\"}}",
        "{{#with customer.address}}{{street}} {{../campaign.name}}{{/with}}{{#with customer.none}}x{{else}}no address{{/with}}",
        "{{#each events.purchase}}{{#with this}}{{@index}} {{product}}{{/with}};{{/each}}",
        "{{#each events.purchase}}{{#if (gt (default quantity 1) 1)}}{{quantity}}×{{/if}}{{default product \"?\"}} {{/each}}",
        "{{!-- comment --}}a {{! short }}b\n  {{#if customer.vip}}\n  standalone\n  {{/if}}\nc {{~customer.first_name~}} d",
        "<a href=\"{{unsubscribe_url}}\">x</a> {{default null \"literal <b>\"}} {{default customer.none 42}}",
    ];
    for source in cases {
        assert!(both(source, &[], &d).is_some(), "not covered: {source}");
    }
}

#[test]
fn partials_agree_with_handlebars() {
    let d = data();
    let partials = [
        (
            "layout",
            "<title>{{default title \"Acme\"}}</title>{{#if preheader}}<p>{{preheader}}</p>{{/if}}\n{{> header}}\n<main>{{> @partial-block}}</main>\n{{customer.first_name}}",
        ),
        (
            "header",
            "<h1>{{campaign.name}} {{default title \"-\"}}</h1>",
        ),
        (
            "button",
            "<a href=\"{{href}}\">{{label}}</a> {{@root.customer.email}} {{default @index \"-\"}}",
        ),
        ("item", "{{product}}@{{@index}}"),
    ];
    let cases = [
        "{{#> layout title=\"Sale <now>\" preheader=customer.city}}Hi {{customer.first_name}} {{title}}\n{{> button href=\"https://x.example/?a=1&b=2\" label=\"Go\"}}{{/layout}}",
        "{{> header}} {{#each events.purchase}}{{> item}} {{/each}}",
        "{{#> layout}}{{#each events.purchase}}{{> button href=product label=@index}}{{/each}}{{/layout}}",
        "{{#each events.purchase}}{{> button href=product label=@index}}{{/each}}",
        "{{#each events.purchase}}{{> button href=product label=\"x\"}}{{/each}}",
        "{{#> missing}}fallback {{customer.first_name}}{{/missing}}",
    ];
    for source in cases {
        let out = both(source, &partials, &d);
        if !source.contains("missing") {
            assert!(out.is_some(), "not covered: {source}");
        }
    }
}

#[test]
fn leaves_errors_and_uncovered_templates_to_handlebars() {
    let d = data();
    for source in [
        "{{customer.nickname}}",
        "{{upper customer.nickname}}",
        "{{#each customer.nothing}}x{{/each}}",
        "{{#with customer.nothing}}x{{/with}}",
        "{{#with customer.zero}}x{{/with}}",
        "{{#each customer.tags as |t|}}{{t}}{{/each}}",
        "{{lookup customer \"first_name\"}}",
        "{{gt customer.orders \"5\"}}",
        "{{customer.tags.x}}",
        "{{format_date \"yesterday\"}}",
    ] {
        assert_eq!(both(source, &[], &d), None, "{source}");
    }
    // An indented partial is not covered.
    assert_eq!(
        both("<div>\n  {{> p}}\n</div>", &[("p", "a\nb\n")], &d),
        None
    );
    // A partial including itself is left to Handlebars.
    assert_eq!(both("{{> p}}", &[("p", "x{{> p}}")], &d), None);
}
