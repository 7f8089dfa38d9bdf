use super::*;
use crate::segment::{Op, Scalar, Subject, Test};

const GOOD: &str = r#"name: winback
from: "Acme Shop <hello@acme.example>"
schedule: "0 9 * * MON-FRI"
timezone: Europe/Berlin
reentry: 90d
audience:
  all:
    - attribute: country
      in: [DE, AT, CH]
    - event: purchase
      within: 365d
      where:
        - field: amount
          gte: 20
    - not:
        event: purchase
        within: 30d
steps:
  - id: offer
    subject: "15% off"
    template: winback
    events: { purchase: 3 }
  - id: reminder
    wait: 3d
    when:
      not: { opened: offer }
    subject: "Soon"
    template: winback-reminder
goal:
  event: purchase
limits:
  rate: 20/s
send_window:
  days: [MON, TUE]
  from: "09:00"
  to: "18:00"
"#;

fn messages(text: &str) -> Vec<String> {
    match parse("c.yaml", text) {
        Ok(_) => vec![],
        Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn parses_the_contract_example() {
    let c = parse("c.yaml", GOOD).unwrap();
    assert_eq!(c.name, "winback");
    assert_eq!(c.reentry, Reentry::After("90d".parse().unwrap()));
    assert_eq!(c.steps.len(), 2);
    assert_eq!(c.steps[0].events, vec![("purchase".to_string(), 3)]);
    assert!(matches!(c.steps[1].when, Some(Condition::Not(_))));
    let Condition::All(list) = &c.audience else {
        panic!()
    };
    assert_eq!(
        list[0],
        Condition::Attribute(Test {
            subject: Subject::Attribute(vec!["country".into()]),
            op: Op::In(vec![
                Scalar::Text("DE".into()),
                Scalar::Text("AT".into()),
                Scalar::Text("CH".into())
            ]),
        })
    );
    assert_eq!(c.limits.rate.unwrap().count, 20);
}

#[test]
fn unknown_operator_points_at_the_key() {
    let text = GOOD.replace("gte: 20", "greater: 20");
    assert_eq!(
        messages(&text),
        vec![
            "c.yaml:14:11: unknown operator \"greater\"; expected one of eq, ne, in, not_in, gt, gte, lt, lte, contains, starts_with, exists, within, older_than"
        ]
    );
}

#[test]
fn reports_every_problem_in_a_file() {
    let text = GOOD
        .replace("reentry: 90d", "reentry: sometimes")
        .replace("within: 30d", "within: 30 days")
        .replace("opened: offer", "opened: ofer");
    assert_eq!(
        messages(&text),
        vec![
            "c.yaml:5:10: invalid reentry \"sometimes\": expected never, always or a duration such as 90d",
            "c.yaml:17:17: invalid duration \"30 days\": expected a whole number followed by s, m, h, d or w (for example 90d)",
            "c.yaml:26:22: opened: \"ofer\" is not an earlier step; expected one of offer",
        ]
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    assert_eq!(
        messages("name: x\n  bad: [\n"),
        vec!["c.yaml:2:6: mapping values are not allowed in this context"]
    );
}

#[test]
fn schedules() {
    assert!(Schedule::parse("0 9 * * MON-FRI").is_ok());
    assert!(Schedule::parse("*/15 * * * *").is_ok());
    assert!(Schedule::parse("0 9 * *").is_err());
    assert!(Schedule::parse("0 9 * * 1-5").is_err());
    assert!(Schedule::parse("0 25 * * *").is_err());
}

#[test]
fn strips_serde_positions() {
    assert_eq!(strip_positions("bad at line 3 column 4, x"), "bad, x");
    assert_eq!(strip_positions("at line one"), "at line one");
}

#[test]
fn schema_is_valid_json_with_every_operator() {
    let text = schema::json_schema_text();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for op in crate::segment::OPERATORS {
        assert!(
            v["$defs"]["attribute"]["properties"].get(op).is_some(),
            "{op}"
        );
    }
}

mod send_window {
    use chrono::{NaiveTime, Weekday};

    use crate::campaign::SendWindow;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn window(days: &[Weekday], from: &str, to: &str) -> SendWindow {
        SendWindow {
            days: days.to_vec(),
            from: NaiveTime::parse_from_str(from, "%H:%M").unwrap(),
            to: NaiveTime::parse_from_str(to, "%H:%M").unwrap(),
        }
    }

    const WEEKDAYS: [Weekday; 5] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];
    const EVERY_DAY: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    const BERLIN: chrono_tz::Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn inside_stays_outside_moves_to_the_next_opening() {
        let w = window(&WEEKDAYS, "09:00", "18:00");
        // Wednesday 10:00 in Berlin (UTC+1 in November).
        let wed = ms("2026-11-25T09:00:00Z");
        assert_eq!(w.next_open(wed, BERLIN), wed);
        // Friday 19:00 → Monday 09:00.
        assert_eq!(
            w.next_open(ms("2026-11-27T18:00:00Z"), BERLIN),
            ms("2026-11-30T08:00:00Z")
        );
        // Before opening the same day.
        assert_eq!(
            w.next_open(ms("2026-11-25T05:00:00Z"), BERLIN),
            ms("2026-11-25T08:00:00Z")
        );
        // The closing minute is outside.
        assert_eq!(
            w.next_open(ms("2026-11-25T17:00:00Z"), BERLIN),
            ms("2026-11-26T08:00:00Z")
        );
    }

    #[test]
    fn windows_across_midnight_belong_to_the_day_they_open() {
        let w = window(&[Weekday::Mon], "22:00", "06:00");
        // Tuesday 03:00 is inside Monday's window.
        let tue_3 = ms("2026-11-24T02:00:00Z");
        assert_eq!(w.next_open(tue_3, BERLIN), tue_3);
        // Tuesday 07:00: next Monday 22:00.
        assert_eq!(
            w.next_open(ms("2026-11-24T06:00:00Z"), BERLIN),
            ms("2026-11-30T21:00:00Z")
        );
    }

    #[test]
    fn daylight_saving_changes() {
        // 29 March 2026: 02:00 → 03:00 in Berlin. 02:30 does not exist that
        // day: the window opens when the clocks jump, 03:00 CEST = 01:00 UTC.
        let w = window(&EVERY_DAY, "02:30", "04:00");
        assert_eq!(
            w.next_open(ms("2026-03-29T00:00:00Z"), BERLIN),
            ms("2026-03-29T01:00:00Z")
        );
        // A 09:00 window the day after the change opens at 07:00 UTC, not 08:00.
        let nine = window(&EVERY_DAY, "09:00", "18:00");
        assert_eq!(
            nine.next_open(ms("2026-03-28T20:00:00Z"), BERLIN),
            ms("2026-03-29T07:00:00Z")
        );
        // 25 October 2026: 03:00 → 02:00; 02:30 happens twice, the first counts.
        let w = window(&EVERY_DAY, "02:30", "05:00");
        assert_eq!(
            w.next_open(ms("2026-10-24T23:00:00Z"), BERLIN),
            ms("2026-10-25T00:30:00Z")
        );
        // And 09:00 on the 26th is 08:00 UTC again.
        assert_eq!(
            nine.next_open(ms("2026-10-25T17:30:00Z"), BERLIN),
            ms("2026-10-26T08:00:00Z")
        );
    }
}

#[test]
fn a_second_document_is_found_after_an_opening_marker() {
    use super::locate::{first_alias, second_document};
    assert_eq!(
        second_document("---\nname: a\n---\nname: b\n"),
        Some((3, 1))
    );
    assert_eq!(second_document("# c\n---\nname: a\n"), None);
    assert_eq!(second_document("name: a\n--- \nname: b\n"), Some((2, 1)));
    assert_eq!(first_alias("a: \"*no\" # *no\nb: [*a]\n"), Some((2, 5)));
}

/// Real-time journeys (issue 19): triggers, kinds, waits and routes.
mod journeys {
    use chrono::NaiveTime;

    use super::messages;
    use crate::campaign::{Arm, CampaignKind, Checks, Jump, Reentry, Route, WaitFor, load, parse};
    use crate::segment::{Condition, EventCondition, FieldTest, Op, Scalar};

    const JOURNEY: &str = r#"name: cart
kind: marketing
from: "Acme Shop <hello@acme.example>"
trigger:
  event: cart_abandoned
  where:
    - field: total
      gte: 50
audience:
  attribute: country
  in: [DE, AT]
steps:
  - id: nudge
    wait: 1h
    subject: "You left something"
    template: cart
    branch:
      - when: { clicked: nudge }
        goto: thanks
      - when: { event: purchase }
        exit: bought
      - goto: reminder
  - id: reminder
    wait_for: { event: purchase, within: 2d }
    subject: "Still thinking?"
    template: cart-reminder
    when:
      event: purchase
      max_count: 0
  - id: last-call
    wait_until: "10:00"
    subject: "Last call"
    template: cart-last
    exit: no-purchase
  - id: thanks
    subject: "Thanks"
    template: thanks
"#;

    /// Three steps, the last going back to the second: a loop without a wait.
    const LOOP: &str = r#"name: loop
from: "Acme Shop <hello@acme.example>"
audience:
  attribute: plan
  eq: pro
steps:
  - id: a
    subject: "A"
    template: a
  - id: b
    subject: "B"
    template: b
  - id: c
    subject: "C"
    template: c
    branch:
      - when: { opened: c }
        exit: done
      - goto: b
"#;

    /// `text` with `from` replaced by `to`, which must be there.
    fn edit(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "{from:?} is not in the text");
        text.replacen(from, to, 1)
    }

    fn purchase() -> Condition {
        Condition::Event(EventCondition {
            kind: "purchase".into(),
            within: None,
            min_count: 1,
            max_count: None,
            filters: Vec::new(),
        })
    }

    #[test]
    fn parses_every_new_key() {
        let c = parse("c.yaml", JOURNEY).unwrap();
        assert_eq!(c.kind, CampaignKind::Marketing);
        assert_eq!(c.reentry, Reentry::Never);
        assert!(c.schedule.is_none());
        let trigger = c.trigger.unwrap();
        assert_eq!(trigger.event, "cart_abandoned");
        assert_eq!(
            trigger.filter,
            vec![FieldTest {
                path: vec!["total".into()],
                op: Op::Gte(Scalar::Number(50.into())),
            }]
        );
        let ids: Vec<&str> = c.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["nudge", "reminder", "last-call", "thanks"]);

        let nudge = &c.steps[0];
        assert_eq!(nudge.wait, Some("1h".parse().unwrap()));
        assert_eq!(
            nudge.route,
            Route::Branch(vec![
                Arm {
                    when: Some(Condition::Clicked("nudge".into())),
                    to: Jump::Goto("thanks".into()),
                },
                Arm {
                    when: Some(purchase()),
                    to: Jump::Exit("bought".into()),
                },
                Arm {
                    when: None,
                    to: Jump::Goto("reminder".into()),
                },
            ])
        );
        assert_eq!(nudge.route.gotos(), ["thanks", "reminder"]);

        let reminder = &c.steps[1];
        assert_eq!(
            reminder.wait_for,
            Some(WaitFor {
                event: "purchase".into(),
                filter: Vec::new(),
                within: "2d".parse().unwrap(),
            })
        );
        assert_eq!((reminder.wait, reminder.wait_until), (None, None));
        assert_eq!(reminder.route, Route::Next);
        assert!(reminder.waits());

        let last = &c.steps[2];
        assert_eq!(
            last.wait_until,
            Some(NaiveTime::from_hms_opt(10, 0, 0).unwrap())
        );
        assert_eq!(last.route, Route::Exit("no-purchase".into()));
        assert_eq!(c.steps[3].route, Route::Next);
        assert!(!c.steps[3].waits());
    }

    #[test]
    fn wait_for_takes_a_where_list() {
        let text = edit(
            JOURNEY,
            "    wait_for: { event: purchase, within: 2d }\n",
            "    wait_for:\n      event: purchase\n      within: 2d\n      where:\n        - field: channel\n          eq: web\n",
        );
        let c = parse("c.yaml", &text).unwrap();
        let w = c.steps[1].wait_for.as_ref().unwrap();
        assert_eq!(
            w.filter,
            vec![FieldTest {
                path: vec!["channel".into()],
                op: Op::Eq(Scalar::Text("web".into())),
            }]
        );
    }

    #[test]
    fn a_goto_step_and_a_schedule_with_a_trigger() {
        let text = edit(JOURNEY, "kind: marketing\n", "schedule: \"0 9 * * MON\"\n");
        let text = edit(&text, "    exit: no-purchase", "    goto: thanks");
        let c = parse("c.yaml", &text).unwrap();
        assert_eq!(c.kind, CampaignKind::Marketing);
        assert_eq!(c.schedule.unwrap().text, "0 9 * * MON");
        assert_eq!(c.trigger.unwrap().event, "cart_abandoned");
        assert_eq!(c.steps[2].route, Route::Goto("thanks".into()));
    }

    #[test]
    fn transactional_campaigns_need_no_audience_and_enter_every_time() {
        let text = r#"name: receipt
kind: transactional
from: "Acme Shop <orders@acme.example>"
trigger: { event: order_placed }
steps:
  - id: receipt
    subject: "Your order"
    template: receipt
"#;
        let c = parse("c.yaml", text).unwrap();
        assert_eq!(c.kind, CampaignKind::Transactional);
        assert_eq!(c.audience, Condition::All(Vec::new()));
        assert_eq!(c.reentry, Reentry::Always);
        assert!(c.schedule.is_none());
        assert_eq!(c.trigger.as_ref().unwrap().filter, Vec::new());
        // What the file says is kept.
        let c = parse(
            "c.yaml",
            &edit(
                text,
                "kind: transactional\n",
                "kind: transactional\nreentry: 1d\naudience: { attribute: plan, eq: pro }\n",
            ),
        )
        .unwrap();
        assert_eq!(c.reentry, Reentry::After("1d".parse().unwrap()));
        assert!(matches!(c.audience, Condition::Attribute(_)));
    }

    #[test]
    fn a_marketing_campaign_without_audience_is_told_why() {
        let triggered = edit(
            JOURNEY,
            "audience:\n  attribute: country\n  in: [DE, AT]\n",
            "",
        );
        // With a trigger, everyone the trigger names may enter.
        let c = parse("c.yaml", &triggered).unwrap();
        assert_eq!(c.audience, Condition::All(Vec::new()));
        let text = edit(
            &triggered,
            "trigger:\n  event: cart_abandoned\n  where:\n    - field: total\n      gte: 50\n",
            "",
        );
        assert_eq!(
            messages(&text),
            [
                "c.yaml:1:1: missing key \"audience\" (a marketing campaign needs one, unless it has a trigger: or is kind: transactional)"
            ]
        );
        // The default kind is marketing.
        assert_eq!(
            messages(&edit(&text, "kind: marketing\n", "")),
            [
                "c.yaml:1:1: missing key \"audience\" (a marketing campaign needs one, unless it has a trigger: or is kind: transactional)"
            ]
        );
    }

    #[test]
    fn an_unknown_kind_gets_a_suggestion_and_nothing_else() {
        assert_eq!(
            messages(&edit(JOURNEY, "kind: marketing", "kind: transactinal")),
            [
                "c.yaml:2:7: unknown kind \"transactinal\"; did you mean \"transactional\"? (expected marketing or transactional)"
            ]
        );
        let text = edit(JOURNEY, "kind: marketing", "kind: promo");
        let text = edit(
            &text,
            "audience:\n  attribute: country\n  in: [DE, AT]\n",
            "",
        );
        assert_eq!(
            messages(&text),
            ["c.yaml:2:7: unknown kind \"promo\"; expected marketing or transactional"]
        );
    }

    #[test]
    fn the_new_keys_are_known_to_the_misspelling_hints() {
        assert_eq!(
            messages(&edit(JOURNEY, "trigger:", "triger:")),
            [
                "c.yaml:4:1: unknown key \"triger\"; did you mean \"trigger\"? (expected one of name, description, kind, from, reply_to, schedule, trigger, timezone, reentry, tracking, audience, steps, goal, limits, send_window)"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "    exit: no-purchase",
                "    exti: no-purchase"
            )),
            [
                "c.yaml:34:5: unknown key \"exti\" in a step; did you mean \"exit\"? (expected one of id, subject, template, wait, wait_until, wait_for, when, events, goto, exit, branch)"
            ]
        );
    }

    #[test]
    fn trigger_problems() {
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "  event: cart_abandoned\n",
                "  event: cart_abandoned\n  within: 1d\n"
            )),
            ["c.yaml:6:3: unknown key \"within\" in trigger; expected one of event, where"]
        );
        assert_eq!(
            messages(&edit(JOURNEY, "  event: cart_abandoned\n", "")),
            ["c.yaml:5:3: missing key \"event\" in trigger"]
        );
        assert_eq!(
            messages(&edit(JOURNEY, "  event: cart_abandoned", "  event: \" \"")),
            ["c.yaml:5:10: the event kind is empty"]
        );
        // The same where: as an event condition's.
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "    - field: total",
                "    - attribute: total"
            )),
            [
                "c.yaml:7:7: \"attribute\" is not allowed in where:; use field: to test the event's data"
            ]
        );
        assert_eq!(
            messages(&edit(JOURNEY, "      gte: 50", "      greater: 50")),
            [
                "c.yaml:8:7: unknown operator \"greater\"; expected one of eq, ne, in, not_in, gt, gte, lt, lte, contains, starts_with, exists, within, older_than"
            ]
        );
    }

    #[test]
    fn one_wait_per_step() {
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "    wait_for: { event: purchase, within: 2d }\n",
                "    wait_for: { event: purchase, within: 2d }\n    wait: 1d\n"
            )),
            [
                "c.yaml:25:5: \"wait\" and \"wait_for\" cannot both be on one step; a step waits one way: a span (wait:), until a time of day (wait_until:) or for an event (wait_for:)"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "    wait: 1h\n",
                "    wait: 1h\n    wait_until: \"09:30\"\n"
            )),
            [
                "c.yaml:15:5: \"wait_until\" and \"wait\" cannot both be on one step; a step waits one way: a span (wait:), until a time of day (wait_until:) or for an event (wait_for:)"
            ]
        );
    }

    #[test]
    fn wait_until_and_wait_for_problems() {
        assert_eq!(
            messages(&edit(JOURNEY, "\"10:00\"", "\"25:00\"")),
            ["c.yaml:31:17: invalid time \"25:00\": expected HH:MM, e.g. 09:00"]
        );
        assert_eq!(
            messages(&edit(JOURNEY, "within: 2d }", "within: 0s }")),
            ["c.yaml:24:42: wait_for needs a within: longer than 0, e.g. 2d"]
        );
        assert_eq!(
            messages(&edit(JOURNEY, "within: 2d }", "within: 2 days }")),
            [
                "c.yaml:24:42: invalid duration \"2 days\": expected a whole number followed by s, m, h, d or w (for example 90d)"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "{ event: purchase, within: 2d }",
                "{ event: purchase }"
            )),
            [
                "c.yaml:24:15: missing key \"within\" in wait_for (how long to wait for the event before going on without it)"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "{ event: purchase, within: 2d }",
                "{ within: 2d, for: purchase }"
            )),
            [
                "c.yaml:24:29: unknown key \"for\" in wait_for; expected one of event, within, where",
                "c.yaml:24:15: missing key \"event\" in wait_for",
            ]
        );
    }

    #[test]
    fn unknown_goto_targets_get_a_suggestion() {
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "        goto: thanks",
                "        goto: thaks"
            )),
            [
                "c.yaml:19:15: goto: \"thaks\" is not a step of this campaign; did you mean \"thanks\"? (expected one of nudge, reminder, last-call, thanks)"
            ]
        );
        assert_eq!(
            messages(&edit(JOURNEY, "    exit: no-purchase", "    goto: zzz")),
            [
                "c.yaml:34:11: goto: \"zzz\" is not a step of this campaign; expected one of nudge, reminder, last-call, thanks"
            ]
        );
    }

    #[test]
    fn a_branch_needs_a_default_arm_last() {
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "      - goto: reminder",
                "      - when: { opened: nudge }\n        goto: reminder"
            )),
            [
                "c.yaml:22:9: the last arm of a branch has a when:, so a customer for whom no arm holds would be stuck; end the branch with an arm without when: (- goto: STEP or - exit: REASON)"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "      - when: { event: purchase }\n        exit: bought\n",
                "      - exit: bought\n"
            )),
            [
                "c.yaml:20:9: only the last arm of a branch may leave out when:; this one is always taken, so the arms after it never are"
            ]
        );
    }

    #[test]
    fn arm_problems() {
        assert_eq!(
            messages(&edit(JOURNEY, "        goto: thanks\n", "")),
            ["c.yaml:18:9: an arm needs goto: STEP or exit: REASON"]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "        goto: thanks\n",
                "        goto: thanks\n        exit: thanked\n"
            )),
            [
                "c.yaml:20:9: \"exit\" and \"goto\" cannot both be on one arm; an arm goes to a step (goto:) or ends the entry (exit:)"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "        goto: thanks\n",
                "        gotoo: thanks\n"
            )),
            [
                "c.yaml:19:9: unknown key \"gotoo\" in a branch arm; did you mean \"goto\"? (expected one of when, goto, exit)",
                "c.yaml:18:9: an arm needs goto: STEP or exit: REASON",
            ]
        );
        assert_eq!(
            messages(&edit(JOURNEY, "exit: bought", "exit: Bought It")),
            [
                "c.yaml:21:15: invalid exit reason \"Bought It\": use a short word of lower-case letters, digits, '-' and '_', e.g. bought"
            ]
        );
        // An arm decides after the step's message: it may ask about this
        // step, not a later one.
        assert_eq!(
            messages(&edit(JOURNEY, "{ clicked: nudge }", "{ clicked: thanks }")),
            [
                "c.yaml:18:26: clicked: \"thanks\" is not this step or an earlier one; expected one of nudge"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "    branch:\n      - when: { clicked: nudge }\n        goto: thanks\n      - when: { event: purchase }\n        exit: bought\n      - goto: reminder\n",
                "    branch: []\n"
            )),
            [
                "c.yaml:17:13: a branch needs at least one arm, and its last arm has no when: (- goto: STEP)"
            ]
        );
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "    branch:\n      - when: { clicked: nudge }\n        goto: thanks\n      - when: { event: purchase }\n        exit: bought\n      - goto: reminder\n",
                "    branch: reminder\n"
            )),
            [
                "c.yaml:17:13: expected a list of arms (- when: CONDITION, goto: STEP), found a string"
            ]
        );
    }

    #[test]
    fn a_step_goes_on_one_way() {
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "    exit: no-purchase",
                "    exit: no-purchase\n    goto: thanks"
            )),
            [
                "c.yaml:35:5: \"goto\" and \"exit\" cannot both be on one step; after its message a step goes on one way: goto: STEP, exit: REASON or branch: (none of them: on to the next step)"
            ]
        );
    }

    #[test]
    fn unreachable_steps_are_errors() {
        // The branch's default now skips the reminder, and nothing else names it.
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "      - goto: reminder",
                "      - goto: last-call"
            )),
            [
                "c.yaml:23:9: step \"reminder\" is never reached: no path from the first step leads here; name it in a goto: or a branch:, or remove it"
            ]
        );
        // After an exit, the next step is reached only by a goto.
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "        goto: thanks",
                "        exit: clicked"
            )),
            [
                "c.yaml:35:9: step \"thanks\" is never reached: no path from the first step leads here; name it in a goto: or a branch:, or remove it"
            ]
        );
    }

    #[test]
    fn loops_without_a_wait_name_their_steps_in_order() {
        assert_eq!(
            messages(LOOP),
            [
                "c.yaml:19:15: these steps loop without a wait: b → c → b; a customer would get their messages over and over at once; give one of them a wait:, wait_until: or wait_for:"
            ]
        );
        // A step that goes back to itself.
        assert_eq!(
            messages(&edit(LOOP, "      - goto: b", "      - goto: c")),
            [
                "c.yaml:19:15: these steps loop without a wait: c → c; a customer would get their messages over and over at once; give one of them a wait:, wait_until: or wait_for:"
            ]
        );
        // wait: 0s is no wait.
        assert_eq!(
            messages(&edit(LOOP, "  - id: c\n", "  - id: c\n    wait: 0s\n")).len(),
            1
        );
        // Any wait in the loop makes it a repeating journey, which is allowed.
        for wait in [
            "    wait: 7d\n",
            "    wait_until: \"09:00\"\n",
            "    wait_for: { event: purchase, within: 7d }\n",
        ] {
            let text = edit(LOOP, "  - id: c\n", &format!("  - id: c\n{wait}"));
            let c = parse("c.yaml", &text).unwrap_or_else(|p| panic!("{wait}: {p:?}"));
            assert_eq!(c.steps[2].route.gotos(), ["b"]);
        }
    }

    #[test]
    fn routes_are_not_checked_until_every_target_exists() {
        // A misspelt target alone, not also "reminder is never reached".
        assert_eq!(
            messages(&edit(
                JOURNEY,
                "      - goto: reminder",
                "      - goto: remnder"
            )),
            [
                "c.yaml:22:15: goto: \"remnder\" is not a step of this campaign; did you mean \"reminder\"? (expected one of nudge, reminder, last-call, thanks)"
            ]
        );
    }

    #[test]
    fn the_shipped_campaigns_stay_valid_and_linear() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let catalog = load(
            &[root.join("campaigns")],
            &Checks {
                templates: Some(&root.join("templates")),
            },
        );
        assert_eq!(catalog.problems, Vec::new());
        assert_eq!(catalog.campaigns.len(), 5);
        for (file, c) in &catalog.campaigns {
            assert_eq!(c.kind, CampaignKind::Marketing, "{}", file.display());
            assert!(c.trigger.is_none(), "{}", file.display());
            assert!(c.schedule.is_some(), "{}", file.display());
            for s in &c.steps {
                assert_eq!(s.route, Route::Next, "{}: {}", file.display(), s.id);
                assert_eq!((s.wait_until, &s.wait_for), (None, &None));
            }
        }
    }

    #[test]
    fn the_documented_journey_is_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("docs/campaigns.md")).unwrap();
        let start = doc.find("```yaml\n").unwrap() + "```yaml\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let c = parse("docs/campaigns.md", &doc[start..end]).unwrap();
        assert_eq!(c.trigger.unwrap().event, "cart_abandoned");
        assert_eq!(c.steps.len(), 4);
        assert_eq!(c.steps[2].route, Route::Exit("no-purchase".into()));
    }

    #[test]
    fn the_shipped_schema_is_the_generated_one() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let shipped = std::fs::read_to_string(root.join("campaigns/schema.json")).unwrap();
        assert!(
            shipped == crate::campaign::schema::json_schema_text(),
            "campaigns/schema.json is stale: run `herald schema > campaigns/schema.json`"
        );
        let v: serde_json::Value = serde_json::from_str(&shipped).unwrap();
        let step = &v["$defs"]["step"]["properties"];
        for key in ["wait_until", "wait_for", "goto", "exit", "branch"] {
            assert!(step.get(key).is_some(), "{key}");
        }
        assert_eq!(
            v["properties"]["kind"]["enum"],
            serde_json::json!(["marketing", "transactional"])
        );
        assert_eq!(
            v["properties"]["trigger"]["required"],
            serde_json::json!(["event"])
        );
        assert_eq!(v["required"], serde_json::json!(["name", "from", "steps"]));
        assert_eq!(
            v["else"]["anyOf"],
            serde_json::json!([{ "required": ["audience"] }, { "required": ["trigger"] }])
        );
    }
}
