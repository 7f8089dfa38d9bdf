//! Condition tree → one SQL predicate over `customers c` with bound parameters.
//!
//! Every operand, JSON path, event kind and time bound is a bound parameter: the
//! SQL text depends only on the shape of the tree, never on a value a marketer
//! (or a customer's data) wrote.

use super::{Column, Condition, EventCondition, FieldTest, Op, Scalar, Subject, Test};
use crate::clock::Millis;
use crate::dialect::{Backend, JsonKind};
use crate::quantity::Span;

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    Float(f64),
}

/// What to compile, and over which rows of the enclosing statement.
#[derive(Debug, Clone, Copy)]
pub enum Predicate<'a> {
    /// A campaign's audience, over customers `c`: subscribed, their address
    /// not suppressed, and the condition holds. Planning, `herald audience`,
    /// previews and template checks select with it.
    Audience(&'a Condition),
    /// A transactional campaign's recipients, over customers `c`: the
    /// condition holds and the address can take mail (not suppressed, not
    /// bounced, no complaint). Unsubscribing from marketing does not stop a
    /// receipt or a password reset.
    Recipients(&'a Condition),
    /// A `when:` or `goal:` condition about the campaign entry aliased `entry`
    /// in the enclosing statement (`entries e`), and its customer `c` where the
    /// condition reads it ([`Compiled::reads_customer`]). `opened:`/`clicked:`
    /// look at this entry's messages only, counting human opens (machine opens
    /// never trigger a follow-up), and event conditions count only interactions
    /// since the entry. Subscription and suppression are left to send time.
    Entry {
        condition: &'a Condition,
        entry: &'a str,
    },
    /// The `where:` tests of an event condition over one interaction `i`
    /// (TRUE when there are none): the goal event a report counts after each
    /// send.
    EventData(&'a [FieldTest]),
}

/// What a compilation needs besides the predicate.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub backend: Backend,
    /// "Now" for `within`/`older_than`, bound as values so tests control the clock.
    pub now: Millis,
    /// The campaign whose steps `opened:`/`clicked:` name.
    pub campaign: &'a str,
    /// Number of the first placeholder (`$1` unless the predicate is embedded in
    /// a statement with parameters of its own).
    pub first_param: usize,
}

impl<'a> Context<'a> {
    pub fn new(backend: Backend, now: Millis, campaign: &'a str) -> Self {
        Context {
            backend,
            now,
            campaign,
            first_param: 1,
        }
    }

    /// The same context with placeholders numbered from `$first`.
    pub fn params_from(mut self, first: usize) -> Self {
        self.first_param = first;
        self
    }
}

/// A predicate as SQL for one backend, with the values its placeholders bind.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub predicate: String,
    pub params: Vec<Param>,
    /// Whether the predicate reads the customer row `c` (attributes, columns).
    /// A condition about an entry that doesn't can be evaluated without
    /// joining `customers`.
    pub reads_customer: bool,
}

/// Compiles a predicate: the one way from a condition tree to SQL, for every
/// caller (audiences, `when:`/`goal:`, previews, reports).
pub fn compile(what: Predicate<'_>, cx: &Context<'_>) -> Compiled {
    let mut w = Writer {
        cx,
        entry: None,
        params: Vec::new(),
        reads_customer: false,
    };
    let predicate = match what {
        Predicate::Audience(condition) => {
            let tree = w.condition(condition);
            w.reads_customer = true;
            format!(
                "c.status = 'subscribed' \
                 AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email = c.email) \
                 AND ({tree})"
            )
        }
        Predicate::Recipients(condition) => {
            let tree = w.condition(condition);
            w.reads_customer = true;
            format!(
                "c.status IN ('subscribed', 'unsubscribed') \
                 AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email = c.email) \
                 AND ({tree})"
            )
        }
        Predicate::Entry { condition, entry } => {
            w.entry = Some(entry);
            w.condition(condition)
        }
        Predicate::EventData(filters) => {
            let parts: Vec<String> = filters
                .iter()
                .map(|FieldTest { path, op }| format!("({})", w.json("i.data", path, op)))
                .collect();
            if parts.is_empty() {
                TRUE.to_string()
            } else {
                parts.join(" AND ")
            }
        }
    };
    Compiled {
        predicate,
        params: w.params,
        reads_customer: w.reads_customer,
    }
}

const TRUE: &str = "1 = 1";
const FALSE: &str = "1 = 0";

struct Writer<'w> {
    cx: &'w Context<'w>,
    /// The entry alias of a [`Predicate::Entry`].
    entry: Option<&'w str>,
    params: Vec<Param>,
    reads_customer: bool,
}

impl Writer<'_> {
    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.cx.first_param + self.params.len() - 1)
    }

    fn text(&mut self, s: &str) -> String {
        self.bind(Param::Text(s.to_string()))
    }

    fn number(&mut self, n: &serde_json::Number) -> String {
        let p = match (self.cx.backend, n.as_i64()) {
            // PostgreSQL prepares a statement once per SQL text with the parameter
            // types of its first execution; an operand bound as int8 once and
            // float8 later would be misread. Text cast to numeric is one type for
            // every number, and exact.
            (Backend::Postgres, _) => Param::Text(n.to_string()),
            (Backend::Sqlite, Some(i)) => Param::Int(i),
            (Backend::Sqlite, None) => Param::Float(n.as_f64().unwrap_or(0.0)),
        };
        let placeholder = self.bind(p);
        self.cx.backend.number_param(&placeholder)
    }

    /// The cut-off `now - span`, bound.
    fn cutoff(&mut self, span: Span) -> String {
        self.bind(Param::Int(self.cx.now.saturating_sub(span.as_millis())))
    }

    fn condition(&mut self, c: &Condition) -> String {
        match c {
            Condition::All(cs) => self.join(cs, " AND ", TRUE),
            Condition::Any(cs) => self.join(cs, " OR ", FALSE),
            Condition::Not(c) => format!("NOT ({})", self.condition(c)),
            Condition::Attribute(Test { subject, op }) => {
                self.reads_customer = true;
                match subject {
                    Subject::Column(Column::CreatedAt) => self.created_at(op),
                    Subject::Column(col) => self.text_column(&format!("c.{}", col.name()), op),
                    Subject::Attribute(path) => self.json("c.attributes", path, op),
                }
            }
            Condition::Event(e) => self.event(e),
            Condition::Opened(step) => self.engagement("email_opened", step),
            Condition::Clicked(step) => self.engagement("email_clicked", step),
        }
    }

    fn join(&mut self, cs: &[Condition], sep: &str, empty: &str) -> String {
        if cs.is_empty() {
            return empty.to_string();
        }
        cs.iter()
            .map(|c| format!("({})", self.condition(c)))
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// A nullable text column (email, names, external id, time zone).
    fn text_column(&mut self, col: &str, op: &Op) -> String {
        let b = self.cx.backend;
        let present = format!("{col} IS NOT NULL");
        let text_only = |s: &Scalar| match s {
            Scalar::Text(t) => Some(t.clone()),
            _ => None,
        };
        match op {
            Op::Eq(s) => match text_only(s) {
                Some(t) => format!("{present} AND {col} = {}", self.text(&t)),
                None => FALSE.into(),
            },
            Op::Ne(s) => match text_only(s) {
                Some(t) => format!("{present} AND {col} <> {}", self.text(&t)),
                None => present,
            },
            Op::In(list) | Op::NotIn(list) => {
                let texts: Vec<String> = list.iter().filter_map(text_only).collect();
                let is_in = if texts.is_empty() {
                    FALSE.to_string()
                } else {
                    let ps: Vec<String> = texts.iter().map(|t| self.text(t)).collect();
                    format!("{col} IN ({})", ps.join(", "))
                };
                if matches!(op, Op::In(_)) {
                    format!("{present} AND {is_in}")
                } else {
                    format!("{present} AND NOT ({is_in})")
                }
            }
            Op::Gt(s) | Op::Gte(s) | Op::Lt(s) | Op::Lte(s) => match text_only(s) {
                Some(t) => {
                    let p = self.text(&t);
                    format!("{present} AND {}", b.text_cmp(col, sql_op(op), &p))
                }
                None => FALSE.into(),
            },
            Op::Contains(t) => {
                let p = self.text(t);
                format!("{present} AND {}", b.text_contains(col, &p))
            }
            Op::StartsWith(t) => {
                let p = self.text(t);
                format!("{present} AND {}", b.text_starts_with(col, &p))
            }
            Op::Exists(true) => present,
            Op::Exists(false) => format!("{col} IS NULL"),
            // Text columns hold no timestamps; the parser rejects these.
            Op::Within(_) | Op::OlderThan(_) => FALSE.into(),
        }
    }

    /// `created_at`: epoch milliseconds, never NULL.
    fn created_at(&mut self, op: &Op) -> String {
        let col = "c.created_at";
        match op {
            Op::Within(span) => format!("{col} >= {}", self.cutoff(*span)),
            Op::OlderThan(span) => format!("{col} < {}", self.cutoff(*span)),
            Op::Gt(Scalar::Number(n))
            | Op::Gte(Scalar::Number(n))
            | Op::Lt(Scalar::Number(n))
            | Op::Lte(Scalar::Number(n)) => {
                let p = self.bind(Param::Int(n.as_i64().unwrap_or(0)));
                format!("{col} {} {p}", sql_op(op))
            }
            Op::Exists(e) => if *e { TRUE } else { FALSE }.into(),
            // The parser only lets the operators above through.
            _ => FALSE.into(),
        }
    }

    /// A test on the JSON document `doc` at `path`.
    fn json(&mut self, doc: &str, path: &[String], op: &Op) -> String {
        let b = self.cx.backend;
        let p = self.text(&b.json_path(path));
        let is = |k| b.json_is(doc, &p, k);
        let text = b.json_text(doc, &p);
        let number = b.json_number(doc, &p);
        let present = b.json_present(doc, &p);
        match op {
            Op::Eq(s) => self.json_eq(doc, &p, s),
            Op::Ne(s) => format!("{present} AND NOT ({})", self.json_eq(doc, &p, s)),
            Op::In(list) => self.json_in(doc, &p, list),
            Op::NotIn(list) => format!("{present} AND NOT ({})", self.json_in(doc, &p, list)),
            Op::Gt(s) | Op::Gte(s) | Op::Lt(s) | Op::Lte(s) => match s {
                Scalar::Text(t) => {
                    let v = self.text(t);
                    format!(
                        "{} AND {}",
                        is(JsonKind::Text),
                        b.text_cmp(&text, sql_op(op), &v)
                    )
                }
                Scalar::Number(n) => {
                    let v = self.number(n);
                    format!("{} AND {number} {} {v}", is(JsonKind::Number), sql_op(op))
                }
                Scalar::Bool(_) => FALSE.into(),
            },
            Op::Contains(t) => {
                let v = self.text(t);
                format!(
                    "({} AND {}) OR ({} AND {})",
                    is(JsonKind::Text),
                    b.text_contains(&text, &v),
                    is(JsonKind::Array),
                    b.json_array_has_text(doc, &p, &v)
                )
            }
            Op::StartsWith(t) => {
                let v = self.text(t);
                format!(
                    "{} AND {}",
                    is(JsonKind::Text),
                    b.text_starts_with(&text, &v)
                )
            }
            Op::Exists(true) => present,
            Op::Exists(false) => format!("NOT ({present})"),
            Op::Within(span) | Op::OlderThan(span) => {
                let cut = self.cutoff(*span);
                let cmp = if matches!(op, Op::Within(_)) {
                    ">="
                } else {
                    "<"
                };
                format!(
                    "{} AND coalesce({} {cmp} {cut}, {FALSE})",
                    is(JsonKind::Text),
                    b.rfc3339_millis(&text)
                )
            }
        }
    }

    /// TRUE when the value at the bound path `p` equals the scalar, types respected.
    fn json_eq(&mut self, doc: &str, p: &str, s: &Scalar) -> String {
        let b = self.cx.backend;
        match s {
            Scalar::Text(t) => {
                let v = self.text(t);
                format!(
                    "{} AND {} = {v}",
                    b.json_is(doc, p, JsonKind::Text),
                    b.json_text(doc, p)
                )
            }
            Scalar::Number(n) => {
                let v = self.number(n);
                format!(
                    "{} AND {} = {v}",
                    b.json_is(doc, p, JsonKind::Number),
                    b.json_number(doc, p)
                )
            }
            Scalar::Bool(true) => b.json_is(doc, p, JsonKind::True),
            Scalar::Bool(false) => b.json_is(doc, p, JsonKind::False),
        }
    }

    /// `in`, grouped by operand type so each group is one SQL `IN` list.
    fn json_in(&mut self, doc: &str, p: &str, list: &[Scalar]) -> String {
        let b = self.cx.backend;
        let mut parts = Vec::new();
        let texts: Vec<&String> = list
            .iter()
            .filter_map(|s| match s {
                Scalar::Text(t) => Some(t),
                _ => None,
            })
            .collect();
        if !texts.is_empty() {
            let vs: Vec<String> = texts.iter().map(|t| self.text(t)).collect();
            parts.push(format!(
                "({} AND {} IN ({}))",
                b.json_is(doc, p, JsonKind::Text),
                b.json_text(doc, p),
                vs.join(", ")
            ));
        }
        let numbers: Vec<&serde_json::Number> = list
            .iter()
            .filter_map(|s| match s {
                Scalar::Number(n) => Some(n),
                _ => None,
            })
            .collect();
        if !numbers.is_empty() {
            let vs: Vec<String> = numbers.iter().map(|n| self.number(n)).collect();
            parts.push(format!(
                "({} AND {} IN ({}))",
                b.json_is(doc, p, JsonKind::Number),
                b.json_number(doc, p),
                vs.join(", ")
            ));
        }
        for flag in [true, false] {
            if list.contains(&Scalar::Bool(flag)) {
                let kind = if flag {
                    JsonKind::True
                } else {
                    JsonKind::False
                };
                parts.push(format!("({})", b.json_is(doc, p, kind)));
            }
        }
        if parts.is_empty() {
            FALSE.into()
        } else {
            parts.join(" OR ")
        }
    }

    /// The interactions of one kind for customer `c`, as a WHERE clause over `i`.
    fn interactions(&mut self, e: &EventCondition) -> String {
        let kind = self.text(&e.kind);
        let mut sql = match self.entry {
            // Since the entry, on the entry's customer.
            Some(entry) => format!(
                "i.customer_id = {entry}.customer_id AND i.kind = {kind} \
                 AND i.occurred_at >= {entry}.entered_at"
            ),
            None => {
                self.reads_customer = true;
                format!("i.customer_id = c.id AND i.kind = {kind}")
            }
        };
        if let Some(span) = e.within {
            sql.push_str(&format!(" AND i.occurred_at >= {}", self.cutoff(span)));
        }
        for FieldTest { path, op } in &e.filters {
            let test = self.json("i.data", path, op);
            sql.push_str(&format!(" AND ({test})"));
        }
        sql
    }

    /// EXISTS for "at least one", NOT EXISTS for "none", a bounded count otherwise;
    /// all correlated on the (customer_id, kind, occurred_at) index.
    fn event(&mut self, e: &EventCondition) -> String {
        match (e.min_count, e.max_count) {
            (0, None) => TRUE.into(),
            (min, Some(max)) if min > max => FALSE.into(),
            (0, Some(0)) => format!(
                "NOT EXISTS (SELECT 1 FROM interactions i WHERE {})",
                self.interactions(e)
            ),
            (1, None) => format!(
                "EXISTS (SELECT 1 FROM interactions i WHERE {})",
                self.interactions(e)
            ),
            (min, max) => {
                let count = format!(
                    "(SELECT COUNT(*) FROM interactions i WHERE {})",
                    self.interactions(e)
                );
                let lo = self.bind(Param::Int(i64::from(min)));
                match max {
                    Some(max) => {
                        let hi = self.bind(Param::Int(i64::from(max)));
                        format!("{count} BETWEEN {lo} AND {hi}")
                    }
                    None => format!("{count} >= {lo}"),
                }
            }
        }
    }

    fn engagement(&mut self, kind: &str, step: &str) -> String {
        let human = kind == "email_opened";
        let kind = self.text(kind);
        let step = self.text(step);
        match self.entry {
            // This entry's message of that step. Written as a join so that
            // PostgreSQL can turn EXISTS / NOT EXISTS over many entries into a
            // hashed semi / anti join; the customer's index serves SQLite.
            Some(entry) => {
                let machine = if human {
                    format!(
                        " AND {}",
                        self.cx.backend.json_flag_unset("i.data", "machine")
                    )
                } else {
                    String::new()
                };
                // PostgreSQL reads the campaign's events of that kind through
                // their index for the hash; SQLite must stay on the customer's
                // index (a nested loop per entry), so it doesn't get the term.
                let campaign = match self.cx.backend {
                    Backend::Postgres => {
                        format!(" AND i.campaign = {}", self.text(self.cx.campaign))
                    }
                    Backend::Sqlite => String::new(),
                };
                format!(
                    "EXISTS (SELECT 1 FROM deliveries dx JOIN interactions i ON i.delivery_id = dx.id \
                     WHERE dx.entry_id = {entry}.id AND dx.step = {step} \
                     AND i.customer_id = {entry}.customer_id AND i.kind = {kind}{campaign}{machine})"
                )
            }
            None => {
                self.reads_customer = true;
                let campaign = self.text(self.cx.campaign);
                format!(
                    "EXISTS (SELECT 1 FROM interactions i WHERE i.customer_id = c.id AND i.kind = {kind} \
                     AND i.campaign = {campaign} AND i.step = {step})"
                )
            }
        }
    }
}

fn sql_op(op: &Op) -> &'static str {
    match op {
        Op::Gt(_) => ">",
        Op::Gte(_) => ">=",
        Op::Lt(_) => "<",
        Op::Lte(_) => "<=",
        _ => "=",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Column, Subject};

    fn attr(name: &str, op: Op) -> Condition {
        Condition::Attribute(Test {
            subject: Subject::Attribute(vec![name.to_string()]),
            op,
        })
    }

    #[test]
    fn values_are_bound_never_spliced() {
        let evil = "'; DROP TABLE customers; --";
        let c = Condition::All(vec![
            attr("country", Op::Eq(Scalar::Text(evil.into()))),
            Condition::Attribute(Test {
                subject: Subject::Column(Column::Email),
                op: Op::StartsWith(evil.into()),
            }),
        ]);
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let a = compile(Predicate::Audience(&c), &Context::new(backend, 0, "x"));
            assert!(!a.predicate.contains("DROP"), "{}", a.predicate);
            assert!(a.params.contains(&Param::Text(evil.into())));
        }
    }

    #[test]
    fn placeholders_are_numbered_in_order_from_first_param() {
        let c = attr(
            "plan",
            Op::In(vec![
                Scalar::Text("pro".into()),
                Scalar::Text("basic".into()),
            ]),
        );
        let cx = Context::new(Backend::Postgres, 0, "x").params_from(4);
        let a = compile(Predicate::Audience(&c), &cx);
        assert_eq!(a.params.len(), 3);
        for n in 4..=6 {
            assert!(a.predicate.contains(&format!("${n}")), "{}", a.predicate);
        }
        assert!(!a.predicate.contains("$7"));
    }

    #[test]
    fn event_counts_choose_exists_or_count() {
        let e = |min, max| {
            Condition::Event(EventCondition {
                kind: "purchase".into(),
                within: None,
                min_count: min,
                max_count: max,
                filters: vec![],
            })
        };
        let sql = |c: &Condition| {
            compile(
                Predicate::Audience(c),
                &Context::new(Backend::Sqlite, 0, "x"),
            )
            .predicate
        };
        assert!(sql(&e(1, None)).contains("AND (EXISTS (SELECT 1 FROM interactions"));
        assert!(sql(&e(0, Some(0))).contains("NOT EXISTS (SELECT 1 FROM interactions i"));
        assert!(sql(&e(2, Some(3))).contains("BETWEEN"));
    }

    #[test]
    fn each_predicate_reads_its_own_rows() {
        let cx = Context::new(Backend::Sqlite, 0, "x");
        let opened = Condition::Opened("offer".into());
        let audience = compile(Predicate::Audience(&opened), &cx);
        assert!(audience.predicate.starts_with("c.status = 'subscribed'"));
        assert!(audience.predicate.contains("i.customer_id = c.id"));
        assert!(audience.reads_customer);
        let entry = compile(
            Predicate::Entry {
                condition: &opened,
                entry: "e",
            },
            &cx,
        );
        assert!(!entry.predicate.contains("c.status"));
        assert!(entry.predicate.contains("dx.entry_id = e.id"));
        assert!(!entry.reads_customer);
        let none = compile(Predicate::EventData(&[]), &cx);
        assert_eq!((none.predicate.as_str(), none.params.len()), (TRUE, 0));
        let filters = [FieldTest {
            path: vec!["sku".into()],
            op: Op::Eq(Scalar::Text("A1".into())),
        }];
        let data = compile(Predicate::EventData(&filters), &cx);
        assert!(data.predicate.contains("i.data"));
        assert!(!data.reads_customer);
    }
}
