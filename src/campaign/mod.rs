//! Campaign files: the YAML model, parsing with file:line:column locations,
//! semantic checks across files, and the JSON Schema of the format.
//!
//! A [`Campaign`] that exists is valid: every duration, address, cron expression
//! and condition in it has been checked, and its steps form a journey every
//! step of which can be reached and no loop of which runs without a wait
//! (`route.rs`). [`load`] reports every problem of every file at once, which is
//! what `herald validate` prints.

mod locate;
mod parse;
mod route;
pub mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;
use lettre::message::Mailbox;

use crate::clock::Millis;
use crate::dialect::Backend;
use crate::quantity::{Rate, Span};
use crate::segment::{self, Compiled, Condition, FieldTest, Predicate};

pub use locate::{Seg, Target};
pub use parse::{valid_name, valid_reason, valid_template};

/// One campaign file, parsed and checked.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub name: String,
    pub description: Option<String>,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    /// Marketing (the default) or transactional.
    pub kind: CampaignKind,
    /// Runs on this cron schedule; with neither `schedule` nor `trigger` a
    /// campaign runs only when asked (`herald run`).
    pub schedule: Option<Schedule>,
    /// Each matching interaction enters its customer (a real-time journey).
    pub trigger: Option<Trigger>,
    pub timezone: Tz,
    /// `never` by default, `always` for a transactional campaign (a receipt
    /// goes out for every order).
    pub reentry: Reentry,
    pub tracking: bool,
    /// Who may enter; with a trigger, the customer must also match it at the
    /// moment of the event. A transactional campaign without `audience:` holds
    /// `All([])`, which everyone matches.
    pub audience: Condition,
    pub steps: Vec<Step>,
    pub goal: Option<Condition>,
    pub limits: Limits,
    pub send_window: Option<SendWindow>,
}

impl Campaign {
    /// The audience as SQL for `backend`, evaluated at `now`.
    pub fn audience_sql(&self, backend: Backend, now: Millis) -> Compiled {
        segment::compile(
            Predicate::Audience(&self.audience),
            &segment::Context::new(backend, now, &self.name),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub subject: String,
    /// `templates/{template}.html.hbs` (and optionally `.txt.hbs`).
    pub template: String,
    /// After the previous step was sent to this customer. At most one of
    /// `wait`, `wait_until` and `wait_for` is set.
    pub wait: Option<Span>,
    /// The next time this time of day comes in the customer's time zone (else
    /// the campaign's) after the previous step was sent.
    pub wait_until: Option<NaiveTime>,
    /// Until the customer does something, or for at most a while.
    pub wait_for: Option<WaitFor>,
    /// Extra conditions, may use `opened:`/`clicked:` of earlier steps.
    pub when: Option<Condition>,
    /// Recent interactions handed to the template: (kind, how many).
    pub events: Vec<(String, u32)>,
    /// Where the customer goes after this step's message.
    pub route: Route,
}

impl Step {
    /// Whether the step waits before it is sent: a loop through a step that
    /// waits cannot send its messages all at once. `wait: 0s` is no wait.
    pub fn waits(&self) -> bool {
        self.wait.is_some_and(|w| w.as_secs() > 0)
            || self.wait_until.is_some()
            || self.wait_for.is_some()
    }
}

impl Campaign {
    /// The step with this id, if the campaign (still) has it.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The keys of real-time journeys this campaign uses, as written in its
    /// file, each once: `trigger`, `kind: transactional`, `wait_until`,
    /// `wait_for`, `goto`, `exit`, `branch`. Empty for a campaign of straight
    /// steps.
    pub fn journey_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut note = |key: &'static str| {
            if !keys.contains(&key) {
                keys.push(key);
            }
        };
        if self.trigger.is_some() {
            note("trigger");
        }
        if self.kind == CampaignKind::Transactional {
            note("kind: transactional");
        }
        for step in &self.steps {
            if step.wait_until.is_some() {
                note("wait_until");
            }
            if step.wait_for.is_some() {
                note("wait_for");
            }
            match &step.route {
                Route::Next => {}
                Route::Goto(_) => note("goto"),
                Route::Exit(_) => note("exit"),
                Route::Branch(_) => note("branch"),
            }
        }
        keys
    }
}

/// What a campaign is for: `kind: marketing` (the default) or `kind:
/// transactional`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CampaignKind {
    #[default]
    Marketing,
    /// Messages a customer's own action calls for (receipts, password
    /// resets); `audience:` and `schedule:` may be left out.
    Transactional,
}

/// `trigger:`: an interaction that enters its customer into the campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The interaction's kind, e.g. `cart_abandoned`.
    pub event: String,
    /// The event's `where:` tests on its data, as in an audience's `event:`
    /// condition; all must hold.
    pub filter: Vec<FieldTest>,
}

/// A step's `wait_for:`: the step is due when the customer does `event`
/// (matching `filter`) after the previous step, or when `within` has passed.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitFor {
    pub event: String,
    pub filter: Vec<FieldTest>,
    pub within: Span,
}

/// Where a customer goes after a step's message.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// No routing key: on to the next step in the file; after the last step
    /// the entry is completed.
    Next,
    /// `goto: STEP`.
    Goto(String),
    /// `exit: REASON`: the entry ends here, exited with this reason.
    Exit(String),
    /// `branch:`: the first arm whose `when:` holds is taken; the last arm has
    /// no `when:`, so one always is.
    Branch(Vec<Arm>),
}

/// One arm of a `branch:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// `None` only on the last arm, the default.
    pub when: Option<Condition>,
    pub to: Jump,
}

/// Where an arm of a branch sends the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jump {
    /// `goto: STEP`.
    Goto(String),
    /// `exit: REASON`.
    Exit(String),
}

impl Route {
    /// The steps this route may go to, in the order written, each with the
    /// arm of the `branch:` that names it (`None` for a `goto:`). `Next` is
    /// not one: where it goes depends on the step's place.
    pub fn targets(&self) -> Vec<(Option<usize>, &str)> {
        match self {
            Route::Next | Route::Exit(_) => Vec::new(),
            Route::Goto(s) => vec![(None, s.as_str())],
            Route::Branch(arms) => arms
                .iter()
                .enumerate()
                .filter_map(|(j, a)| match &a.to {
                    Jump::Goto(s) => Some((Some(j), s.as_str())),
                    Jump::Exit(_) => None,
                })
                .collect(),
        }
    }

    /// The ids of [`Route::targets`].
    pub fn gotos(&self) -> Vec<&str> {
        self.targets().into_iter().map(|(_, s)| s).collect()
    }
}

/// Whether a customer may enter the campaign again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    Never,
    Always,
    /// Again once this long has passed since the last entry.
    After(Span),
}

#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub rate: Option<Rate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    pub days: Vec<Weekday>,
    pub from: NaiveTime,
    pub to: NaiveTime,
}

impl SendWindow {
    /// `at` itself when it falls inside the window in time zone `tz`, else the
    /// window's next opening. The window opens at `from` on each of `days` and
    /// closes at `to` the same day, or the next day when `to` is not after
    /// `from` (a window across midnight belongs to the day it opens). Local
    /// times that a daylight-saving change skips move to the first instant
    /// after the gap; times it repeats take their first occurrence.
    pub fn next_open(&self, at: Millis, tz: Tz) -> Millis {
        use chrono::{Datelike, Duration, TimeZone};
        let Some(now) = tz.timestamp_millis_opt(at).single() else {
            return at;
        };
        let today = now.date_naive();
        let mut best: Option<Millis> = None;
        // Yesterday's window may still be open (across midnight); a week and a
        // day ahead always holds an opening when `days` is not empty.
        for offset in -1..=8i64 {
            let day = today + Duration::days(offset);
            if !self.days.contains(&day.weekday()) {
                continue;
            }
            let open = local_millis(tz, day.and_time(self.from));
            let close_day = if self.to > self.from {
                day
            } else {
                day + Duration::days(1)
            };
            let close = local_millis(tz, close_day.and_time(self.to));
            if open <= at && at < close {
                return at;
            }
            if open > at {
                best = Some(best.map_or(open, |b: Millis| b.min(open)));
            }
        }
        best.unwrap_or(at)
    }
}

/// The instant of a local time in `tz`: the earlier of two in a repeated hour,
/// the end of the gap for a skipped one.
fn local_millis(tz: Tz, local: chrono::NaiveDateTime) -> Millis {
    use chrono::{LocalResult, TimeZone};
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(a, b) => a.timestamp_millis().min(b.timestamp_millis()),
        LocalResult::None => {
            // Walk forward minute by minute to the end of the gap (at most a few hours).
            let mut probe = local;
            for _ in 0..24 * 60 {
                probe += chrono::Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.timestamp_millis();
                }
            }
            tz.from_utc_datetime(&local).timestamp_millis()
        }
    }
}

/// A 5-field cron expression (minute hour day-of-month month day-of-week).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub text: String,
    pub cron: cron::Schedule,
}

impl Schedule {
    /// Parses a 5-field expression; the error is a message for the marketer.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "invalid schedule \"{text}\": expected 5 cron fields (minute hour day-of-month month day-of-week), e.g. \"0 9 * * MON-FRI\""
            ));
        }
        // cron dialects number weekdays differently (0 or 1 = Sunday); names are unambiguous.
        if fields[4].chars().any(|c| c.is_ascii_digit()) {
            return Err(format!(
                "invalid schedule \"{text}\": write days of the week as names (MON-FRI, SUN), not numbers"
            ));
        }
        let cron = format!("0 {}", fields.join(" "))
            .parse::<cron::Schedule>()
            .map_err(|e| format!("invalid schedule \"{text}\": {e}"))?;
        Ok(Schedule {
            text: text.to_string(),
            cron,
        })
    }
}

/// One problem in one file, with its position when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Why campaigns could not be used: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

fn problem(file: &str, text: &str, target: &Target, message: String) -> Problem {
    Problem {
        file: file.to_string(),
        position: locate::locate(text, target),
        message,
    }
}

/// Parses one campaign file's text; `file` is how problems name it.
pub fn parse(file: &str, text: &str) -> Result<Campaign, Vec<Problem>> {
    let mut doc: serde_norway::Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let message = e.to_string();
            // Two of serde_norway's errors carry no position; find it.
            let (position, message) = match e.location() {
                Some(l) => (Some((l.line(), l.column())), strip_positions(&message)),
                None if message.contains("more than one document") => (
                    locate::second_document(text),
                    "a second YAML document starts here; a campaign file holds one".to_string(),
                ),
                None if message.contains("repetition limit exceeded") => (
                    locate::first_alias(text),
                    "aliases expand beyond the limit (a YAML alias bomb?); write the values out"
                        .to_string(),
                ),
                None => (None, message),
            };
            return Err(vec![Problem {
                file: file.to_string(),
                position,
                message,
            }]);
        }
    };
    if let Err(e) = doc.apply_merge() {
        return Err(vec![Problem {
            file: file.to_string(),
            position: e.location().map(|l| (l.line(), l.column())),
            message: strip_positions(&e.to_string()),
        }]);
    }
    let mut parser = parse::Parser::default();
    match parser.campaign(&doc) {
        Some(c) if parser.issues.is_empty() => Ok(c),
        _ => Err(parser
            .issues
            .into_iter()
            .map(|i| problem(file, text, &i.target, i.message))
            .collect()),
    }
}

/// serde_norway appends "at line L column C" to its messages; we print positions first.
fn strip_positions(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + " at line ".len()..];
        let skip = tail
            .split_once(" column ")
            .filter(|(line, _)| line.bytes().all(|b| b.is_ascii_digit()))
            .map(|(line, col)| {
                line.len() + " column ".len() + col.bytes().take_while(u8::is_ascii_digit).count()
            });
        match skip {
            Some(n) => rest = &tail[n..],
            None => {
                out.push_str(" at line ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo (an edit or two, a third of the word at most).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Campaigns loaded from files, and every problem found on the way.
#[derive(Debug, Default)]
pub struct Catalog {
    pub campaigns: Vec<(PathBuf, Campaign)>,
    pub problems: Vec<Problem>,
}

/// What [`load`] checks beyond each file on its own.
#[derive(Debug, Clone, Default)]
pub struct Checks<'a> {
    /// When set, every step's template must exist as `DIR/NAME.html.hbs`.
    pub templates: Option<&'a Path>,
}

/// The campaign files a path names: the file itself, or a directory's `*.yaml`
/// and `*.yml` files in name order.
pub fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Loads and checks campaign files (directories are expanded): each file on its
/// own, then names unique across files and templates present.
pub fn load(paths: &[PathBuf], checks: &Checks<'_>) -> Catalog {
    let mut catalog = Catalog::default();
    // Read first, then checked in order: problems come out file by file.
    let mut texts: Vec<(PathBuf, Result<String, Problems>)> = Vec::new();
    for path in paths {
        match files(path) {
            Ok(list) => {
                for file in list {
                    let text = read(&file);
                    texts.push((file, text));
                }
            }
            Err(e) => catalog.problems.push(Problem {
                file: path.display().to_string(),
                position: None,
                message: format!("cannot list the directory: {e}"),
            }),
        }
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    for (file, text) in texts {
        let text = match text {
            Ok(text) => text,
            Err(Problems(mut p)) => {
                catalog.problems.append(&mut p);
                continue;
            }
        };
        let label = file.display().to_string();
        match parse(&label, &text) {
            Ok(c) => {
                let at = |path: Vec<Seg>| Target { path, key: false };
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == c.name) {
                    catalog.problems.push(problem(
                        &label,
                        &text,
                        &at(vec![Seg::Key("name".into())]),
                        format!("campaign name \"{}\" is already used by {first}", c.name),
                    ));
                }
                seen.push((c.name.clone(), label.clone()));
                if let Some(dir) = checks.templates {
                    for (i, step) in c.steps.iter().enumerate() {
                        let html = dir.join(format!("{}.html.hbs", step.template));
                        if !html.is_file() {
                            catalog.problems.push(problem(
                                &label,
                                &text,
                                &at(vec![
                                    Seg::Key("steps".into()),
                                    Seg::Index(i),
                                    Seg::Key("template".into()),
                                ]),
                                format!(
                                    "template \"{}\" not found: expected {}",
                                    step.template,
                                    html.display()
                                ),
                            ));
                        }
                    }
                }
                catalog.campaigns.push((file, c));
            }
            Err(mut problems) => catalog.problems.append(&mut problems),
        }
    }
    catalog
}

/// Finds one campaign by name (or file path) among the files of `dir`.
pub fn find(name_or_path: &str, dir: &Path) -> Result<Campaign, Problems> {
    let direct = Path::new(name_or_path);
    if direct.is_file() {
        return parse(&direct.display().to_string(), &read(direct)?).map_err(Problems);
    }
    // campaigns/NAME.yaml is the convention; anything else is found by scanning.
    for ext in ["yaml", "yml"] {
        let file = dir.join(format!("{name_or_path}.{ext}"));
        if file.is_file() {
            let c = parse(&file.display().to_string(), &read(&file)?).map_err(Problems)?;
            if c.name == name_or_path {
                return Ok(c);
            }
        }
    }
    let mut catalog = load(&[dir.to_path_buf()], &Checks::default());
    if let Some(at) = catalog
        .campaigns
        .iter()
        .position(|(_, c)| c.name == name_or_path)
    {
        return Ok(catalog.campaigns.swap_remove(at).1);
    }
    let suggestion = closest(
        name_or_path,
        catalog.campaigns.iter().map(|(_, c)| c.name.as_str()),
    )
    .map(|c| format!("; did you mean \"{c}\"?"))
    .unwrap_or_default();
    let mut problems = catalog.problems;
    problems.insert(
        0,
        Problem {
            file: dir.display().to_string(),
            position: None,
            message: format!("no campaign named \"{name_or_path}\"{suggestion}"),
        },
    );
    Err(Problems(problems))
}

/// A campaign file's text; bytes that are not UTF-8 are a problem at their
/// line and column.
fn read(path: &Path) -> Result<String, Problems> {
    let problem = |position, message| {
        Problems(vec![Problem {
            file: path.display().to_string(),
            position,
            message,
        }])
    };
    let bytes =
        std::fs::read(path).map_err(|e| problem(None, format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let valid = e.utf8_error().valid_up_to();
        problem(
            Some(locate::position_of(bytes, valid)),
            "the file is not valid UTF-8 here; save it as UTF-8".to_string(),
        )
    })
}

#[cfg(test)]
mod tests;
