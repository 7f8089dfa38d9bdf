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
