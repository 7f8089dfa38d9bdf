//! YAML value → [`Campaign`], collecting every problem instead of stopping at the
//! first. Each problem names the node it is about; [`super::locate`] turns that
//! into a line and column.

use std::str::FromStr;

use chrono::{NaiveTime, Weekday};
use serde_norway::Value;

use super::locate::{Seg, Target};
use super::route;
use super::{
    Arm, Campaign, CampaignKind, Jump, Limits, Reentry, Route, Schedule, SendWindow, Step, Trigger,
    WaitFor,
};
use crate::clock::parse_rfc3339;
use crate::quantity::{Rate, Span};
use crate::segment::{
    Column, Condition, EventCondition, FieldTest, OPERATORS, Op, Scalar, Subject, Test,
};

/// A problem at a node of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub target: Target,
    pub message: String,
}

type Path = Vec<Seg>;

fn key(p: &Path, name: &str) -> Path {
    let mut p = p.clone();
    p.push(Seg::Key(name.to_string()));
    p
}

fn index(p: &Path, i: usize) -> Path {
    let mut p = p.clone();
    p.push(Seg::Index(i));
    p
}

const CAMPAIGN_KEYS: &[&str] = &[
    "name",
    "description",
    "kind",
    "from",
    "reply_to",
    "schedule",
    "trigger",
    "timezone",
    "reentry",
    "tracking",
    "audience",
    "steps",
    "goal",
    "limits",
    "send_window",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "subject",
    "template",
    "wait",
    "wait_until",
    "wait_for",
    "when",
    "events",
    "goto",
    "exit",
    "branch",
];
/// A step waits one way at most.
const WAIT_KEYS: &[&str] = &["wait", "wait_until", "wait_for"];
/// A step goes on one way at most; without any, to the next step.
const ROUTE_KEYS: &[&str] = &["goto", "exit", "branch"];
const ARM_KEYS: &[&str] = &["when", "goto", "exit"];
const EVENT_KEYS: &[&str] = &["within", "min_count", "max_count", "where"];
const HEADS: &[&str] = &[
    "attribute",
    "event",
    "all",
    "any",
    "not",
    "opened",
    "clicked",
    "field",
];

/// Where a condition stands, which decides what it may contain.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Audience,
    /// A step's `when:`: `opened:`/`clicked:` may name these earlier steps.
    When(&'a [String]),
    /// `goal:`: `opened:`/`clicked:` may name any step.
    Goal(&'a [String]),
    /// A branch arm's `when:`, decided after the step's message: `opened:`/
    /// `clicked:` may name that step or an earlier one.
    Arm(&'a [String]),
    /// An event's `where:`: only `field:` tests.
    Where,
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn one_of(names: &[&str]) -> String {
    names.join(", ")
}

/// The entries of a mapping with string keys, in document order.
type Entries<'v> = Vec<(&'v str, &'v Value)>;

#[derive(Default)]
pub struct Parser {
    pub issues: Vec<Issue>,
    /// The campaign has `tracking: false`: opens and clicks are never known.
    untracked: bool,
}

impl Parser {
    fn at(&mut self, path: &Path, message: impl Into<String>) {
        self.issues.push(Issue {
            target: Target {
                path: path.clone(),
                key: false,
            },
            message: message.into(),
        });
    }

    fn at_key(&mut self, path: &Path, message: impl Into<String>) {
        self.issues.push(Issue {
            target: Target {
                path: path.clone(),
                key: true,
            },
            message: message.into(),
        });
    }

    fn mapping<'v>(&mut self, v: &'v Value, p: &Path) -> Option<Entries<'v>> {
        let Value::Mapping(m) = v else {
            self.at(p, format!("expected a mapping, found {}", describe(v)));
            return None;
        };
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m {
            match k {
                Value::String(s) => out.push((s.as_str(), v)),
                other => self.at(p, format!("expected text keys, found {}", describe(other))),
            }
        }
        Some(out)
    }

    /// Reports keys outside `allowed` at the key itself.
    fn only(&mut self, entries: &Entries<'_>, p: &Path, allowed: &[&str], in_what: &str) {
        for (k, _) in entries {
            if !allowed.contains(k) {
                let hint = match super::closest(k, allowed.iter().copied()) {
                    Some(c) => format!(
                        "did you mean \"{c}\"? (expected one of {})",
                        one_of(allowed)
                    ),
                    None => format!("expected one of {}", one_of(allowed)),
                };
                self.at_key(&key(p, k), format!("unknown key \"{k}\"{in_what}; {hint}"));
            }
        }
    }

    fn required<'v>(
        &mut self,
        entries: &Entries<'v>,
        p: &Path,
        name: &str,
        in_what: &str,
    ) -> Option<&'v Value> {
        let found = get(entries, name);
        if found.is_none() {
            self.at(p, format!("missing key \"{name}\"{in_what}"));
        }
        found
    }

    fn string(&mut self, v: &Value, p: &Path) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.at(p, format!("expected a string, found {}", describe(other)));
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, p: &Path) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.at(
                    p,
                    format!("expected true or false, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn count(&mut self, v: &Value, p: &Path, max: u64) -> Option<u32> {
        match v.as_u64() {
            Some(n) if n <= max => u32::try_from(n).ok(),
            _ => {
                let found = match v {
                    Value::Number(n) => format!("{n}"),
                    other => describe(other).to_string(),
                };
                self.at(
                    p,
                    format!("expected a whole number from 0 to {max}, found {found}"),
                );
                None
            }
        }
    }

    fn parsed<T: FromStr>(&mut self, v: &Value, p: &Path) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.string(v, p)?;
        match text.parse::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.at(p, e.to_string());
                None
            }
        }
    }

    fn span(&mut self, v: &Value, p: &Path) -> Option<Span> {
        self.parsed::<Span>(v, p)
    }

    fn mailbox(&mut self, v: &Value, p: &Path) -> Option<lettre::message::Mailbox> {
        let text = self.string(v, p)?;
        match text.parse::<lettre::message::Mailbox>() {
            Ok(m) => Some(m),
            Err(_) => {
                self.at(
                    p,
                    format!(
                        "invalid address \"{text}\": expected user@example.com or \"Name <user@example.com>\""
                    ),
                );
                None
            }
        }
    }

    /// The whole campaign; `None` when any problem was found.
    pub fn campaign(&mut self, doc: &Value) -> Option<Campaign> {
        let root = Path::new();
        let entries = self.mapping(doc, &root)?;
        self.only(&entries, &root, CAMPAIGN_KEYS, "");

        let name = self
            .required(&entries, &root, "name", "")
            .and_then(|v| self.string(v, &key(&root, "name")));
        if let Some(n) = &name
            && !valid_name(n)
        {
            self.at(
                &key(&root, "name"),
                format!("invalid campaign name \"{n}\": use lower-case letters, digits and '-'"),
            );
        }
        let description =
            get(&entries, "description").and_then(|v| self.string(v, &key(&root, "description")));
        let from = self
            .required(&entries, &root, "from", "")
            .and_then(|v| self.mailbox(v, &key(&root, "from")));
        let reply_to =
            get(&entries, "reply_to").and_then(|v| self.mailbox(v, &key(&root, "reply_to")));
        let kind = match get(&entries, "kind") {
            None => Some(CampaignKind::Marketing),
            Some(v) => self.kind(v, &key(&root, "kind")),
        };
        let schedule = get(&entries, "schedule").and_then(|v| {
            let p = key(&root, "schedule");
            let text = self.string(v, &p)?;
            Schedule::parse(&text).map_err(|m| self.at(&p, m)).ok()
        });
        let trigger = get(&entries, "trigger").map(|v| self.trigger(v, &key(&root, "trigger")));
        let timezone = match get(&entries, "timezone") {
            None => Some(chrono_tz::UTC),
            Some(v) => {
                let p = key(&root, "timezone");
                self.string(v, &p).and_then(|t| match chrono_tz::Tz::from_str(&t) {
                    Ok(tz) => Some(tz),
                    Err(_) => {
                        self.at(
                            &p,
                            format!("unknown time zone \"{t}\": expected an IANA name such as Europe/Berlin"),
                        );
                        None
                    }
                })
            }
        };
        let reentry = match get(&entries, "reentry") {
            // A receipt goes out for every order.
            None if kind == Some(CampaignKind::Transactional) => Some(Reentry::Always),
            None => Some(Reentry::Never),
            Some(v) => {
                let p = key(&root, "reentry");
                self.string(v, &p).and_then(|t| match t.as_str() {
                    "never" => Some(Reentry::Never),
                    "always" => Some(Reentry::Always),
                    other => match other.parse::<Span>() {
                        Ok(s) => Some(Reentry::After(s)),
                        Err(_) => {
                            self.at(
                                &p,
                                format!("invalid reentry \"{t}\": expected never, always or a duration such as 90d"),
                            );
                            None
                        }
                    },
                })
            }
        };
        let tracking = match get(&entries, "tracking") {
            None => Some(true),
            Some(v) => self.boolean(v, &key(&root, "tracking")),
        };
        self.untracked = tracking == Some(false);

        let audience = match (get(&entries, "audience"), kind) {
            (Some(v), _) => self.condition(v, &key(&root, "audience"), Scope::Audience),
            // Everyone: the messages go to whom the trigger or the call names.
            (None, Some(CampaignKind::Transactional)) => Some(Condition::All(Vec::new())),
            (None, Some(CampaignKind::Marketing)) if trigger.is_some() => {
                Some(Condition::All(Vec::new()))
            }
            (None, Some(CampaignKind::Marketing)) => {
                self.at(
                    &root,
                    "missing key \"audience\" (a marketing campaign needs one, unless it has a trigger: or is kind: transactional)",
                );
                None
            }
            // The kind is wrong: whether an audience is needed is not known.
            (None, None) => None,
        };

        let steps = self
            .required(&entries, &root, "steps", "")
            .and_then(|v| self.steps(v, &key(&root, "steps")));
        let step_ids: Vec<String> = steps
            .as_ref()
            .map(|s| s.iter().map(|s| s.id.clone()).collect())
            .unwrap_or_default();

        // A triggered campaign's first step may wait: a goal reached during
        // that wait stops it.
        let first_waits = trigger.is_some()
            && steps
                .as_ref()
                .and_then(|s| s.first())
                .is_some_and(|s| s.waits());
        let goal = get(&entries, "goal").and_then(|v| {
            let p = key(&root, "goal");
            if step_ids.len() == 1 && !first_waits {
                self.at_key(
                    &p,
                    "a goal stops further steps, but this campaign has only one step (and it does not wait after a trigger)",
                );
            }
            self.condition(v, &p, Scope::Goal(&step_ids))
        });
        let limits = match get(&entries, "limits") {
            None => Some(Limits::default()),
            Some(v) => self.limits(v, &key(&root, "limits")),
        };
        let send_window =
            get(&entries, "send_window").map(|v| self.send_window(v, &key(&root, "send_window")));

        if !self.issues.is_empty() {
            return None;
        }
        Some(Campaign {
            name: name?,
            description,
            from: from?,
            reply_to,
            kind: kind?,
            schedule,
            trigger: match trigger {
                None => None,
                Some(t) => Some(t?),
            },
            timezone: timezone?,
            reentry: reentry?,
            tracking: tracking?,
            audience: audience?,
            steps: steps?,
            goal,
            limits: limits?,
            send_window: match send_window {
                None => None,
                Some(w) => Some(w?),
            },
        })
    }

    fn steps(&mut self, v: &Value, p: &Path) -> Option<Vec<Step>> {
        let Value::Sequence(items) = v else {
            self.at(
                p,
                format!("expected a list of steps, found {}", describe(v)),
            );
            return None;
        };
        if items.is_empty() {
            self.at(p, "a campaign needs at least one step");
            return None;
        }
        let mut ids: Vec<String> = Vec::new();
        let mut parsed: Vec<(usize, Step)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let sp = index(p, i);
            match self.step(item, &sp, i, &ids) {
                Some(step) => {
                    ids.push(step.id.clone());
                    parsed.push((i, step));
                }
                None => {
                    // Keep the id if it was readable so later steps may name it.
                    if let Some(Value::String(id)) = item.get("id") {
                        ids.push(id.clone());
                    }
                }
            }
        }
        // A goto may name a later step: targets are checked once every id is known.
        let mut known = true;
        for (i, step) in &parsed {
            for (target, at) in goto_paths(step, &index(p, *i)) {
                if ids.iter().any(|id| id == target) {
                    continue;
                }
                known = false;
                let hint = match super::closest(target, ids.iter().map(String::as_str)) {
                    Some(c) => {
                        format!("did you mean \"{c}\"? (expected one of {})", ids.join(", "))
                    }
                    None => format!("expected one of {}", ids.join(", ")),
                };
                self.at(
                    &at,
                    format!("goto: \"{target}\" is not a step of this campaign; {hint}"),
                );
            }
        }
        if parsed.len() < items.len() || !known {
            return None;
        }
        let steps: Vec<Step> = parsed.into_iter().map(|(_, s)| s).collect();
        self.journey(&steps, p);
        Some(steps)
    }

    /// The step graph as a whole: steps no path reaches, and loops that would
    /// send their messages over and over without a pause.
    fn journey(&mut self, steps: &[Step], p: &Path) {
        for i in route::unreachable(steps) {
            self.at(
                &key(&index(p, i), "id"),
                format!(
                    "step \"{}\" is never reached: no path from the first step leads here; name it in a goto: or a branch:, or remove it",
                    steps[i].id
                ),
            );
        }
        for cycle in route::loops_without_wait(steps) {
            let mut names: Vec<&str> = cycle.steps.iter().map(|&i| steps[i].id.as_str()).collect();
            names.push(names[0]);
            let last = cycle.steps[cycle.steps.len() - 1];
            self.at(
                &goto_path(&index(p, last), cycle.arm),
                format!(
                    "these steps loop without a wait: {}; a customer would get their messages over and over at once; give one of them a wait:, wait_until: or wait_for:",
                    names.join(" → ")
                ),
            );
        }
    }

    fn step(&mut self, v: &Value, p: &Path, i: usize, earlier: &[String]) -> Option<Step> {
        let entries = self.mapping(v, p)?;
        let before = self.issues.len();
        self.only(&entries, p, STEP_KEYS, " in a step");
        let id = self
            .required(&entries, p, "id", " in a step")
            .and_then(|v| self.string(v, &key(p, "id")));
        if let Some(id) = &id {
            if !valid_name(id) {
                self.at(
                    &key(p, "id"),
                    format!("invalid step id \"{id}\": use lower-case letters, digits and '-'"),
                );
            } else if let Some(first) = earlier.iter().position(|e| e == id) {
                self.at(
                    &key(p, "id"),
                    format!(
                        "duplicate step id \"{id}\" (already used by step {})",
                        first + 1
                    ),
                );
            }
        }
        let subject = self
            .required(&entries, p, "subject", " in a step")
            .and_then(|v| self.string(v, &key(p, "subject")));
        if let Some(text) = &subject {
            if text.trim().is_empty() {
                self.at(&key(p, "subject"), "the subject is empty");
            } else if let Err(message) = subject_syntax(text) {
                self.at(&key(p, "subject"), message);
            }
        }
        let template = self
            .required(&entries, p, "template", " in a step")
            .and_then(|v| self.string(v, &key(p, "template")));
        if let Some(t) = &template
            && !valid_template(t)
        {
            self.at(
                &key(p, "template"),
                format!(
                    "invalid template name \"{t}\": use letters, digits, '-' and '_' (templates/NAME.html.hbs)"
                ),
            );
        }
        self.exclusive(
            &entries,
            p,
            WAIT_KEYS,
            "step",
            "a step waits one way: a span (wait:), until a time of day (wait_until:) or for an event (wait_for:)",
        );
        let wait = get(&entries, "wait").and_then(|v| self.span(v, &key(p, "wait")));
        let wait_until =
            get(&entries, "wait_until").and_then(|v| self.time_of_day(v, &key(p, "wait_until")));
        let wait_for =
            get(&entries, "wait_for").and_then(|v| self.wait_for(v, &key(p, "wait_for")));
        let when = get(&entries, "when").and_then(|v| {
            let wp = key(p, "when");
            if i == 0 {
                self.at_key(
                    &wp,
                    "the first step has no when: (its audience is the campaign's audience; put conditions there)",
                );
                return None;
            }
            self.condition(v, &wp, Scope::When(earlier))
        });
        let mut events = Vec::new();
        if let Some(v) = get(&entries, "events") {
            let ep = key(p, "events");
            if let Some(list) = self.mapping(v, &ep) {
                for (kind, n) in list {
                    if let Some(n) = self.count(n, &key(&ep, kind), 100) {
                        events.push((kind.to_string(), n));
                    }
                }
            }
        }
        // A branch decides after this step's message: it may ask about it.
        let mut upto = earlier.to_vec();
        upto.extend(id.clone());
        let route = self.route(&entries, p, &upto);
        if self.issues.len() > before {
            return None;
        }
        Some(Step {
            id: id?,
            subject: subject?,
            template: template?,
            wait,
            wait_until,
            wait_for,
            when,
            events,
            route: route?,
        })
    }

    /// Reports each of `keys` found after the first one present, naming both.
    fn exclusive(&mut self, entries: &Entries<'_>, p: &Path, keys: &[&str], on: &str, why: &str) {
        let present: Vec<&str> = entries
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| keys.contains(k))
            .collect();
        for k in present.iter().skip(1) {
            self.at_key(
                &key(p, k),
                format!(
                    "\"{k}\" and \"{}\" cannot both be on one {on}; {why}",
                    present[0]
                ),
            );
        }
    }

    /// `goto:`, `exit:` or `branch:`; none is on to the next step.
    fn route(&mut self, entries: &Entries<'_>, p: &Path, upto: &[String]) -> Option<Route> {
        self.exclusive(
            entries,
            p,
            ROUTE_KEYS,
            "step",
            "after its message a step goes on one way: goto: STEP, exit: REASON or branch: (none of them: on to the next step)",
        );
        let goto = get(entries, "goto").map(|v| self.string(v, &key(p, "goto")));
        let exit = get(entries, "exit").map(|v| self.reason(v, &key(p, "exit")));
        let branch = get(entries, "branch").map(|v| self.branch(v, &key(p, "branch"), upto));
        Some(match (goto, exit, branch) {
            (Some(g), _, _) => Route::Goto(g?),
            (None, Some(e), _) => Route::Exit(e?),
            (None, None, Some(b)) => Route::Branch(b?),
            (None, None, None) => Route::Next,
        })
    }

    fn branch(&mut self, v: &Value, p: &Path, upto: &[String]) -> Option<Vec<Arm>> {
        let Value::Sequence(items) = v else {
            self.at(
                p,
                format!(
                    "expected a list of arms (- when: CONDITION, goto: STEP), found {}",
                    describe(v)
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.at(
                p,
                "a branch needs at least one arm, and its last arm has no when: (- goto: STEP)",
            );
            return None;
        }
        let before = self.issues.len();
        let mut arms = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            let ap = index(p, j);
            let Some(entries) = self.mapping(item, &ap) else {
                continue;
            };
            self.only(&entries, &ap, ARM_KEYS, " in a branch arm");
            self.exclusive(
                &entries,
                &ap,
                &["goto", "exit"],
                "arm",
                "an arm goes to a step (goto:) or ends the entry (exit:)",
            );
            let when = get(&entries, "when")
                .and_then(|v| self.condition(v, &key(&ap, "when"), Scope::Arm(upto)));
            let goto = get(&entries, "goto").and_then(|v| self.string(v, &key(&ap, "goto")));
            let exit = get(&entries, "exit").and_then(|v| self.reason(v, &key(&ap, "exit")));
            if get(&entries, "goto").is_none() && get(&entries, "exit").is_none() {
                self.at(&ap, "an arm needs goto: STEP or exit: REASON");
            }
            let last = j + 1 == items.len();
            match (last, get(&entries, "when").is_some()) {
                (true, true) => self.at_key(
                    &key(&ap, "when"),
                    "the last arm of a branch has a when:, so a customer for whom no arm holds would be stuck; end the branch with an arm without when: (- goto: STEP or - exit: REASON)",
                ),
                (false, false) => self.at(
                    &ap,
                    "only the last arm of a branch may leave out when:; this one is always taken, so the arms after it never are",
                ),
                _ => {}
            }
            let to = match (goto, exit) {
                (Some(g), _) => Jump::Goto(g),
                (None, Some(e)) => Jump::Exit(e),
                (None, None) => continue,
            };
            arms.push(Arm { when, to });
        }
        if self.issues.len() > before {
            return None;
        }
        Some(arms)
    }

    /// An exit reason: a short word, as reports show how entries ended.
    fn reason(&mut self, v: &Value, p: &Path) -> Option<String> {
        let reason = self.string(v, p)?;
        if !valid_reason(&reason) {
            self.at(
                p,
                format!(
                    "invalid exit reason \"{reason}\": use a short word of lower-case letters, digits, '-' and '_', e.g. bought"
                ),
            );
            return None;
        }
        Some(reason)
    }

    /// `HH:MM`, as in a send window.
    fn time_of_day(&mut self, v: &Value, p: &Path) -> Option<NaiveTime> {
        let text = self.string(v, p)?;
        match NaiveTime::parse_from_str(&text, "%H:%M") {
            Ok(t) => Some(t),
            Err(_) => {
                self.at(
                    p,
                    format!("invalid time \"{text}\": expected HH:MM, e.g. 09:00"),
                );
                None
            }
        }
    }

    fn wait_for(&mut self, v: &Value, p: &Path) -> Option<WaitFor> {
        let entries = self.mapping(v, p)?;
        let before = self.issues.len();
        self.only(&entries, p, &["event", "within", "where"], " in wait_for");
        let event = self.required_event(&entries, p, " in wait_for");
        let within = match get(&entries, "within") {
            Some(v) => self.span(v, &key(p, "within")),
            None => {
                self.at(
                    p,
                    "missing key \"within\" in wait_for (how long to wait for the event before going on without it)",
                );
                None
            }
        };
        if let Some(w) = within
            && w.as_secs() == 0
        {
            self.at(
                &key(p, "within"),
                "wait_for needs a within: longer than 0, e.g. 2d",
            );
        }
        let filter = self.where_of(&entries, p);
        if self.issues.len() > before {
            return None;
        }
        Some(WaitFor {
            event: event?,
            filter,
            within: within?,
        })
    }

    fn kind(&mut self, v: &Value, p: &Path) -> Option<CampaignKind> {
        const KINDS: &[&str] = &["marketing", "transactional"];
        let text = self.string(v, p)?;
        match text.as_str() {
            "marketing" => Some(CampaignKind::Marketing),
            "transactional" => Some(CampaignKind::Transactional),
            other => {
                let hint = match super::closest(other, KINDS.iter().copied()) {
                    Some(c) => {
                        format!("did you mean \"{c}\"? (expected marketing or transactional)")
                    }
                    None => "expected marketing or transactional".to_string(),
                };
                self.at(p, format!("unknown kind \"{other}\"; {hint}"));
                None
            }
        }
    }

    fn trigger(&mut self, v: &Value, p: &Path) -> Option<Trigger> {
        let entries = self.mapping(v, p)?;
        let before = self.issues.len();
        self.only(&entries, p, &["event", "where"], " in trigger");
        let event = self.required_event(&entries, p, " in trigger");
        let filter = self.where_of(&entries, p);
        if self.issues.len() > before {
            return None;
        }
        Some(Trigger {
            event: event?,
            filter,
        })
    }

    /// The required `event:` of a `trigger:` or a `wait_for:`; `on` names
    /// it in a missing-key message.
    fn required_event(&mut self, entries: &Entries<'_>, p: &Path, on: &str) -> Option<String> {
        self.required(entries, p, "event", on)
            .and_then(|v| self.event_kind(v, &key(p, "event")))
    }

    /// The `where:` tests among `entries`, none when there is no `where:`.
    fn where_of(&mut self, entries: &Entries<'_>, p: &Path) -> Vec<FieldTest> {
        match get(entries, "where") {
            Some(v) => self.where_list(v, &key(p, "where")),
            None => Vec::new(),
        }
    }

    /// An interaction kind: any non-empty text.
    fn event_kind(&mut self, v: &Value, p: &Path) -> Option<String> {
        let kind = self.string(v, p)?;
        if kind.trim().is_empty() {
            self.at(p, "the event kind is empty");
            return None;
        }
        Some(kind)
    }

    /// An event's `where:`: a list of `field:` tests on its data. Problems are
    /// reported; the tests that were readable are returned.
    fn where_list(&mut self, v: &Value, wp: &Path) -> Vec<FieldTest> {
        let mut filters = Vec::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(Condition::Attribute(Test {
                        subject: Subject::Attribute(path),
                        op,
                    })) = self.condition(item, &index(wp, i), Scope::Where)
                    {
                        filters.push(FieldTest { path, op });
                    }
                }
            }
            other => self.at(
                wp,
                format!(
                    "expected a list of field: conditions, found {}",
                    describe(other)
                ),
            ),
        }
        filters
    }

    fn limits(&mut self, v: &Value, p: &Path) -> Option<Limits> {
        let entries = self.mapping(v, p)?;
        self.only(&entries, p, &["rate"], " in limits");
        let rate = match get(&entries, "rate") {
            None => None,
            Some(v) => Some(self.parsed::<Rate>(v, &key(p, "rate"))?),
        };
        Some(Limits { rate })
    }

    fn send_window(&mut self, v: &Value, p: &Path) -> Option<SendWindow> {
        let entries = self.mapping(v, p)?;
        let before = self.issues.len();
        self.only(&entries, p, &["days", "from", "to"], " in send_window");
        let mut days = Vec::new();
        match get(&entries, "days") {
            None => days.extend(WEEKDAYS.iter().map(|(_, d)| *d)),
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let dp = index(&key(p, "days"), i);
                    let Some(text) = self.string(item, &dp) else {
                        continue;
                    };
                    match WEEKDAYS.iter().find(|(n, _)| n.eq_ignore_ascii_case(&text)) {
                        Some((_, d)) => days.push(*d),
                        None => self.at(
                            &dp,
                            format!("unknown day \"{text}\"; expected one of MON, TUE, WED, THU, FRI, SAT, SUN"),
                        ),
                    }
                }
            }
            Some(other) => self.at(
                &key(p, "days"),
                format!("expected a list of days, found {}", describe(other)),
            ),
        }
        let mut time = |name: &str| -> Option<NaiveTime> {
            let value = self.required(&entries, p, name, " in send_window")?;
            self.time_of_day(value, &key(p, name))
        };
        let from = time("from");
        let to = time("to");
        // `to` before `from` is a window across midnight (22:00 to 06:00);
        // equal times would be an empty window.
        if let (Some(f), Some(t)) = (from, to)
            && f == t
        {
            self.at(
                &key(p, "to"),
                "the window is empty (from = to); for a window across midnight write e.g. from: \"22:00\", to: \"06:00\"",
            );
        }
        if self.issues.len() > before {
            return None;
        }
        Some(SendWindow {
            days,
            from: from?,
            to: to?,
        })
    }

    fn condition(&mut self, v: &Value, p: &Path, scope: Scope<'_>) -> Option<Condition> {
        let entries = self.mapping(v, p)?;
        let heads: Vec<&str> = entries
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| HEADS.contains(k))
            .collect();
        let expected_heads = match scope {
            Scope::Where => "field",
            Scope::Audience => "attribute, event, all, any, not",
            Scope::When(_) | Scope::Goal(_) | Scope::Arm(_) => {
                "attribute, event, all, any, not, opened, clicked"
            }
        };
        let Some(&head) = heads.first() else {
            // A lone unknown key reads best as "unknown condition".
            match entries.first() {
                Some((k, _)) if entries.len() == 1 => self.at_key(
                    &key(p, k),
                    format!("unknown condition \"{k}\"; expected one of {expected_heads}"),
                ),
                _ => self.at(p, format!("a condition needs one of {expected_heads}")),
            }
            return None;
        };
        if let Some(second) = heads.get(1) {
            self.at_key(
                &key(p, second),
                format!(
                    "\"{second}\" cannot share a condition with \"{head}\"; list them under all: or any:"
                ),
            );
            return None;
        }
        let hp = key(p, head);
        let hv = get(&entries, head)?;
        let allowed_here = match (head, scope) {
            ("field", Scope::Where) => true,
            ("field", _) => false,
            (_, Scope::Where) => false,
            ("opened" | "clicked", Scope::Audience) => false,
            _ => true,
        };
        if !allowed_here {
            let msg = match (head, scope) {
                (_, Scope::Where) => format!(
                    "\"{head}\" is not allowed in where:; use field: to test the event's data"
                ),
                ("field", _) => {
                    "\"field\" is only allowed in an event's where:; use attribute: for customers"
                        .to_string()
                }
                _ => format!("\"{head}\" is only allowed in a step's when: or in goal:"),
            };
            self.at_key(&hp, msg);
            return None;
        }
        match head {
            "all" | "any" | "not" => {
                for (k, _) in &entries {
                    if *k != head {
                        self.at_key(
                            &key(p, k),
                            format!(
                                "unknown key \"{k}\" beside \"{head}\"; put it in its own condition"
                            ),
                        );
                    }
                }
                if head == "not" {
                    return Some(Condition::Not(Box::new(self.condition(hv, &hp, scope)?)));
                }
                let Value::Sequence(items) = hv else {
                    self.at(
                        &hp,
                        format!("expected a list of conditions, found {}", describe(hv)),
                    );
                    return None;
                };
                let mut list = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.condition(item, &index(&hp, i), scope) {
                        Some(c) => list.push(c),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Some(if head == "all" {
                    Condition::All(list)
                } else {
                    Condition::Any(list)
                })
            }
            "opened" | "clicked" => {
                for (k, _) in &entries {
                    if *k != head {
                        self.at_key(
                            &key(p, k),
                            format!(
                                "unknown key \"{k}\" beside \"{head}\"; put it in its own condition"
                            ),
                        );
                    }
                }
                if self.untracked {
                    self.at_key(
                        &hp,
                        format!(
                            "{head}: can never be known in a campaign with tracking: false (no open pixel, no tracked links); turn tracking on or use another condition"
                        ),
                    );
                    return None;
                }
                let step = self.string(hv, &hp)?;
                let (steps, which) = match scope {
                    Scope::When(s) => (s, "an earlier step"),
                    Scope::Goal(s) => (s, "a step of this campaign"),
                    Scope::Arm(s) => (s, "this step or an earlier one"),
                    _ => (&[][..], "a step"),
                };
                if !steps.contains(&step) {
                    let known = if steps.is_empty() {
                        "there is none".to_string()
                    } else {
                        format!("expected one of {}", steps.join(", "))
                    };
                    self.at(&hp, format!("{head}: \"{step}\" is not {which}; {known}"));
                    return None;
                }
                Some(if head == "opened" {
                    Condition::Opened(step)
                } else {
                    Condition::Clicked(step)
                })
            }
            "event" => self.event(&entries, p, hv),
            // attribute or field
            _ => {
                let name = self.string(hv, &hp)?;
                let subject = if head == "field" {
                    Subject::Attribute(self.attribute_path(&name, &hp)?)
                } else if let Some(col) = Column::from_name(&name) {
                    Subject::Column(col)
                } else if name == "status" {
                    self.at(
                        &hp,
                        "\"status\" cannot be tested: audiences only ever hold subscribed customers",
                    );
                    return None;
                } else {
                    Subject::Attribute(self.attribute_path(&name, &hp)?)
                };
                let op = self.operator(&entries, p, head, &name, &subject)?;
                Some(Condition::Attribute(Test { subject, op }))
            }
        }
    }

    fn attribute_path(&mut self, name: &str, p: &Path) -> Option<Vec<String>> {
        let parts: Vec<String> = name.split('.').map(str::to_string).collect();
        let ok = parts.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !ok {
            self.at(
                p,
                format!(
                    "invalid attribute name \"{name}\": use letters, digits, '_' and '-', with '.' between nested names"
                ),
            );
            return None;
        }
        Some(parts)
    }

    /// The single operator of an `attribute:`/`field:` condition.
    fn operator(
        &mut self,
        entries: &Entries<'_>,
        p: &Path,
        head: &str,
        name: &str,
        subject: &Subject,
    ) -> Option<Op> {
        let mut found: Option<(&str, &Value)> = None;
        let mut ok = true;
        for (k, v) in entries {
            if *k == head {
                continue;
            }
            if !OPERATORS.contains(k) {
                self.at_key(
                    &key(p, k),
                    format!(
                        "unknown operator \"{k}\"; expected one of {}",
                        one_of(&OPERATORS)
                    ),
                );
                ok = false;
            } else if let Some((first, _)) = found {
                self.at_key(
                    &key(p, k),
                    format!(
                        "more than one operator (\"{first}\" and \"{k}\"); write each as its own condition under all:"
                    ),
                );
                ok = false;
            } else {
                found = Some((k, v));
            }
        }
        let Some((op, v)) = found else {
            if ok {
                self.at_key(
                    &key(p, head),
                    format!(
                        "condition on \"{name}\" has no operator; expected one of {}",
                        one_of(&OPERATORS)
                    ),
                );
            }
            return None;
        };
        if !ok {
            return None;
        }
        let op_path = key(p, op);
        let op = self.operand(op, v, &op_path)?;
        self.check_subject(subject, name, op, &op_path)
    }

    fn scalar(&mut self, v: &Value, p: &Path) -> Option<Scalar> {
        match v {
            Value::String(s) => Some(Scalar::Text(s.clone())),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Number(n) => {
                let number = if let Some(i) = n.as_i64() {
                    Some(serde_json::Number::from(i))
                } else if let Some(u) = n.as_u64() {
                    Some(serde_json::Number::from(u))
                } else {
                    n.as_f64().and_then(serde_json::Number::from_f64)
                };
                match number {
                    Some(n) => Some(Scalar::Number(n)),
                    None => {
                        self.at(p, "expected a finite number");
                        None
                    }
                }
            }
            other => {
                self.at(
                    p,
                    format!(
                        "expected a string, number or boolean, found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn operand(&mut self, op: &str, v: &Value, p: &Path) -> Option<Op> {
        Some(match op {
            "eq" => Op::Eq(self.scalar(v, p)?),
            "ne" => Op::Ne(self.scalar(v, p)?),
            "in" | "not_in" => {
                let Value::Sequence(items) = v else {
                    self.at(p, format!("expected a list, found {}", describe(v)));
                    return None;
                };
                if items.is_empty() {
                    self.at(p, "expected a non-empty list");
                    return None;
                }
                let list: Vec<Option<Scalar>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.scalar(item, &index(p, i)))
                    .collect();
                let list: Vec<Scalar> = list.into_iter().collect::<Option<_>>()?;
                if op == "in" {
                    Op::In(list)
                } else {
                    Op::NotIn(list)
                }
            }
            "gt" | "gte" | "lt" | "lte" => {
                let s = self.scalar(v, p)?;
                if matches!(s, Scalar::Bool(_)) {
                    self.at(
                        p,
                        format!("\"{op}\" compares numbers or strings, not booleans"),
                    );
                    return None;
                }
                match op {
                    "gt" => Op::Gt(s),
                    "gte" => Op::Gte(s),
                    "lt" => Op::Lt(s),
                    _ => Op::Lte(s),
                }
            }
            "contains" => Op::Contains(self.string(v, p)?),
            "starts_with" => Op::StartsWith(self.string(v, p)?),
            "exists" => Op::Exists(self.boolean(v, p)?),
            "within" => Op::Within(self.span(v, p)?),
            _ => Op::OlderThan(self.span(v, p)?),
        })
    }

    /// Operators that make no sense for a built-in column are rejected here, and
    /// `created_at` bounds become epoch milliseconds.
    fn check_subject(&mut self, subject: &Subject, name: &str, op: Op, p: &Path) -> Option<Op> {
        match subject {
            Subject::Attribute(_) => Some(op),
            Subject::Column(Column::CreatedAt) => {
                let bound = |s: &Scalar| match s {
                    Scalar::Text(t) => parse_rfc3339(t).map(|ms| Scalar::Number(ms.into())),
                    _ => None,
                };
                let fix = |s: &Scalar, this: &mut Self| match bound(s) {
                    Some(b) => Some(b),
                    None => {
                        this.at(
                            p,
                            "created_at compares with an RFC 3339 timestamp, e.g. \"2026-01-01T00:00:00Z\"",
                        );
                        None
                    }
                };
                match op {
                    Op::Within(_) | Op::OlderThan(_) => Some(op),
                    Op::Gt(s) => Some(Op::Gt(fix(&s, self)?)),
                    Op::Gte(s) => Some(Op::Gte(fix(&s, self)?)),
                    Op::Lt(s) => Some(Op::Lt(fix(&s, self)?)),
                    Op::Lte(s) => Some(Op::Lte(fix(&s, self)?)),
                    _ => {
                        self.at_key(p, "created_at takes within, older_than, gt, gte, lt or lte");
                        None
                    }
                }
            }
            Subject::Column(_) => {
                let text = |s: &Scalar| matches!(s, Scalar::Text(_));
                let ok = match &op {
                    Op::Eq(s) | Op::Ne(s) | Op::Gt(s) | Op::Gte(s) | Op::Lt(s) | Op::Lte(s) => {
                        text(s)
                    }
                    Op::In(l) | Op::NotIn(l) => l.iter().all(text),
                    Op::Within(_) | Op::OlderThan(_) => {
                        self.at_key(p, format!("{name} is text, not a timestamp"));
                        return None;
                    }
                    _ => true,
                };
                if !ok {
                    self.at(p, format!("{name} is text: compare it with strings"));
                    return None;
                }
                Some(op)
            }
        }
    }

    fn event(&mut self, entries: &Entries<'_>, p: &Path, kind: &Value) -> Option<Condition> {
        let before = self.issues.len();
        let allowed: Vec<&str> = std::iter::once("event")
            .chain(EVENT_KEYS.iter().copied())
            .collect();
        for (k, _) in entries {
            if !allowed.contains(k) {
                self.at_key(
                    &key(p, k),
                    format!(
                        "unknown key \"{k}\" in an event condition; expected one of {}",
                        one_of(EVENT_KEYS)
                    ),
                );
            }
        }
        let kind = self.event_kind(kind, &key(p, "event"));
        let within = get(entries, "within").and_then(|v| self.span(v, &key(p, "within")));
        let min =
            get(entries, "min_count").and_then(|v| self.count(v, &key(p, "min_count"), 1_000_000));
        let max =
            get(entries, "max_count").and_then(|v| self.count(v, &key(p, "max_count"), 1_000_000));
        // "max_count: 0" alone means none: the default minimum is 1 only without a maximum.
        let min_count = min.unwrap_or(if max.is_some() { 0 } else { 1 });
        if let Some(max) = max
            && min_count > max
        {
            self.at(
                &key(p, "max_count"),
                format!("max_count ({max}) is below min_count ({min_count})"),
            );
        }
        let filters = self.where_of(entries, p);
        if self.issues.len() > before {
            return None;
        }
        Some(Condition::Event(EventCondition {
            kind: kind?,
            within,
            min_count,
            max_count: max,
            filters,
        }))
    }
}

fn get<'v>(entries: &Entries<'v>, name: &str) -> Option<&'v Value> {
    entries.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// The step ids a step's route names, each with where its `goto:` is written.
fn goto_paths<'s>(step: &'s Step, sp: &Path) -> Vec<(&'s str, Path)> {
    step.route
        .targets()
        .into_iter()
        .map(|(arm, target)| (target, goto_path(sp, arm)))
        .collect()
}

/// Where the `goto:` of step path `sp` is written: on the step, or in arm
/// `arm` of its `branch:`.
fn goto_path(sp: &Path, arm: Option<usize>) -> Path {
    match arm {
        Some(j) => key(&index(&key(sp, "branch"), j), "goto"),
        None => key(sp, "goto"),
    }
}

/// Exit reasons: a short word of lower-case letters, digits, '-' and '_'.
pub fn valid_reason(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Campaign names and step ids: lower-case letters, digits and '-'.
/// A subject is a Handlebars template: its syntax is checked here, so the
/// problem points at the campaign file, not at a compiled-template name.
fn subject_syntax(subject: &str) -> Result<(), String> {
    handlebars::Template::compile(subject).map(drop).map_err(|e| {
        let reason = match e.reason() {
            // The parser's list of every token it expected helps nobody.
            handlebars::TemplateErrorReason::InvalidSyntax(_) => {
                "invalid Handlebars syntax (an unclosed or unbalanced {{…}} tag?)".to_string()
            }
            other => other.to_string(),
        };
        match e.pos() {
            Some((_, column)) => {
                format!("the subject is not a valid template: {reason}, at character {column} of the subject")
            }
            None => format!("the subject is not a valid template: {reason}"),
        }
    })
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Template names map to files, so no separators or dots.
pub fn valid_template(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("MON", Weekday::Mon),
    ("TUE", Weekday::Tue),
    ("WED", Weekday::Wed),
    ("THU", Weekday::Thu),
    ("FRI", Weekday::Fri),
    ("SAT", Weekday::Sat),
    ("SUN", Weekday::Sun),
];
