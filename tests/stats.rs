//! `herald stats` on scripted activity, both backends: every figure equals
//! what the scripted lists imply, counted in Rust (tests/report_data).

mod common;
mod report_data;

use common::{TestDb, stderr, stdout};
use report_data::{
    CAMPAIGN, DAY, Expected, LINK_A, LINK_B, Rule, expected, from_json, generated, load, scripted,
    write_campaign,
};
use serde_json::Value;

fn stats_json(db: &TestDb, extra: &[&str]) -> Value {
    let mut args = vec!["stats", CAMPAIGN, "--json"];
    args.extend_from_slice(extra);
    let out = db.herald(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("stats --json prints JSON")
}

/// The goal of the campaign file: a purchase of 10 or more, within 7 days.
fn goal_rule() -> Rule<'static> {
    Rule {
        kind: "purchase",
        window: 7 * DAY,
        accept: &|data| data["amount"].as_f64().is_some_and(|a| a >= 10.0),
    }
}

/// Compares every step and the totals with the oracle.
fn assert_figures(v: &Value, s: &report_data::Scenario, rule: &Rule<'_>) {
    let steps = v["steps"].as_array().expect("steps[]");
    let names: Vec<&str> = steps.iter().map(|x| x["step"].as_str().unwrap()).collect();
    assert_eq!(names, ["offer", "reminder"], "steps in the file's order");
    for x in steps {
        let step = x["step"].as_str().unwrap();
        assert_eq!(
            from_json(x),
            expected(s, Some(step), rule),
            "step {step}: {x:#}"
        );
    }
    let mut want = expected(s, None, rule);
    // The campaign's `entered` counts entries, not deliveries.
    want.entered = s
        .deliveries
        .iter()
        .map(|d| d.customer)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as i64;
    assert_eq!(from_json(&v["totals"]), want, "totals: {:#}", v["totals"]);
}

async fn scripted_figures_match(db: TestDb) {
    let s = scripted();
    load(&db, &s).await;
    write_campaign(&db);
    let v = stats_json(&db, &[]);
    assert_eq!(v["campaign"], CAMPAIGN);
    assert_eq!(v["conversion"]["event"], "purchase");
    assert_eq!(v["conversion"]["source"], "goal");
    assert_figures(&v, &s, &goal_rule());

    // The script's intent, spelled out (and a check on the oracle itself).
    let offer = from_json(&v["steps"][0]);
    assert_eq!(
        (offer.sent, offer.bounced, offer.skipped, offer.entered),
        (7, 2, 2, 11)
    );
    assert_eq!(
        (
            offer.opened,
            offer.opened_human,
            offer.opens,
            offer.opens_human
        ),
        (3, 2, 5, 3)
    );
    assert_eq!((offer.clicked, offer.clicks), (2, 4));
    assert_eq!(offer.links[LINK_A], (3, 2));
    assert_eq!(offer.links[LINK_B], (1, 1));
    assert_eq!(offer.converted, 2, "c1 and c3");
    let reminder = from_json(&v["steps"][1]);
    assert_eq!((reminder.sent, reminder.failed), (3, 1));
    assert_eq!(reminder.converted, 2, "c2 and c3");
    assert_eq!(v["totals"]["converted"], 3);
    assert_eq!(v["steps"][0]["skipped_by_reason"]["frequency_cap"], 1);
    assert_eq!(v["steps"][0]["pending"], 1);
    assert!((v["steps"][0]["click_rate"].as_f64().unwrap() - 2.0 / 7.0).abs() < 1e-9);

    // A conversion event and window given on the command line win over the goal.
    let v = stats_json(
        &db,
        &[
            "--conversion-event",
            "purchase",
            "--conversion-window",
            "2d",
        ],
    );
    assert_eq!(v["conversion"]["source"], "option");
    assert_eq!(v["conversion"]["window"], "2d");
    let any_purchase = Rule {
        kind: "purchase",
        window: 2 * DAY,
        accept: &|_| true,
    };
    assert_figures(&v, &s, &any_purchase);
    // Offer: c1 (1 day) and c4 (1 hour, any amount counts now); c3's came 3
    // days after the offer. Reminder: c3 only (c2's came 5 days after it).
    assert_eq!(v["steps"][0]["converted"], 2);
    assert_eq!(v["steps"][1]["converted"], 1);

    // Human output: an aligned table with a total row.
    let out = db.herald(&["stats", CAMPAIGN]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("step "))
        .take(4)
        .collect();
    assert_eq!(table.len(), 4, "{text}");
    assert!(
        table[1].starts_with("offer ") && table[3].starts_with("total "),
        "{text}"
    );
    let end = table[0].len();
    assert!(
        table.iter().all(|l| l.len() == end),
        "right-aligned columns:\n{text}"
    );
}
both_backends!(scripted_figures, scripted_figures_match);

async fn generated_figures_match(db: TestDb) {
    let s = generated(400, 11);
    load(&db, &s).await;
    write_campaign(&db);
    let v = stats_json(&db, &[]);
    assert_figures(&v, &s, &goal_rule());
    assert!(v["totals"]["converted"].as_i64().unwrap() > 0);
}
both_backends!(generated_figures, generated_figures_match);

async fn every_campaign_without_a_name(db: TestDb) {
    let s = scripted();
    load(&db, &s).await;
    // No campaign file: steps in planned order, no goal, a warning.
    let out = db.herald(&["stats", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("campaign file not used"),
        "{}",
        stderr(&out)
    );
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let all = v.as_array().expect("an array without CAMPAIGN");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["campaign"], CAMPAIGN);
    assert_eq!(all[0]["conversion"], Value::Null);
    assert_eq!(all[0]["steps"][0]["converted"], 0);
    let Expected { sent, .. } = from_json(&all[0]["steps"][0]);
    assert_eq!(sent, 7);

    let out = db.herald(&["stats", "--conversion-window", "soon"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--conversion-window"),
        "{}",
        stderr(&out)
    );
}
both_backends!(every_campaign, every_campaign_without_a_name);

/// A campaign with `tracking: false` and no goal: its opens and clicks are
/// "not tracked" (rates null, not 0 %), and there is no conversion rate; the
/// counts stay as recorded.
async fn untracked_without_goal(db: TestDb) {
    let s = scripted();
    load(&db, &s).await;
    let yaml = report_data::CAMPAIGN_YAML.replace(
        "goal:\n  event: purchase\n  where:\n    - field: amount\n      gte: 10\n",
        "tracking: false\n",
    );
    assert!(yaml.contains("tracking: false") && !yaml.contains("goal:"));
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::write(db.path("campaigns/promo.yaml"), yaml).unwrap();
    let v = stats_json(&db, &[]);
    assert_eq!(v["tracked"], false);
    assert!(v["conversion"].is_null());
    for x in v["steps"].as_array().unwrap().iter().chain([&v["totals"]]) {
        for rate in [
            "open_rate",
            "open_rate_human",
            "click_rate",
            "click_to_open_rate",
            "conversion_rate",
        ] {
            assert!(x[rate].is_null(), "{rate}: {x:#}");
        }
        assert!(x["sent"].as_i64().unwrap() > 0);
        assert!(!x["bounce_rate"].is_null());
    }
    let text = stdout(&db.herald(&["stats", CAMPAIGN]));
    assert!(text.contains("opens and clicks: not tracked"), "{text}");
    let out = db.herald(&["report", CAMPAIGN, "--out", "r.html"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(db.path("r.html")).unwrap();
    assert!(
        html.contains("not tracked") && !html.contains(">0.0%<"),
        "{html}"
    );
}
both_backends!(untracked, untracked_without_goal);
