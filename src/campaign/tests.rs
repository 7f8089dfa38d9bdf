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
