//! The module map's rules (docs/architecture.md), checked on the source: no
//! two top-level modules import each other, directly or through others; the
//! pure modules import only pure modules and no I/O crate; `store` knows
//! nothing of templates, SMTP or its users; nothing in the library imports the
//! CLI.
//!
//! A module's imports are the `crate::X` (`$crate::X`, `super::…` up to the
//! crate root) paths in its files, and `herald::X` in the binary (`main.rs`,
//! `cli/`), test modules included; comments and string literals are not code.
//! `cargo test --test modules -- --nocapture` prints the dependency table.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Modules that compute without I/O (they may read files at start-up with
/// `std::fs`, as `campaign` and `render` do, but use no I/O crate).
const PURE: &[&str] = &[
    "api_key", "campaign", "clock", "customer", "dialect", "message", "quantity", "render",
    "segment", "status", "token",
];

/// Crates that do network, database or async I/O.
const IO_CRATES: &[&str] = &[
    "apalis",
    "apalis_core",
    "apalis_cron",
    "apalis_postgres",
    "apalis_sqlite",
    "axum",
    "deadpool",
    "governor",
    "hyper",
    "reqwest",
    "sqlx",
    "tokio",
    "tower",
    "tower_http",
];

/// What pure modules may use of lettre: its message and address types. Its
/// transports (SMTP, files, executors) are I/O.
const LETTRE_DATA: &[&str] = &["Address", "Message", "address", "message"];

/// `store` knows nothing of templates or SMTP, nor of the modules that use it.
/// Of `mailer` it knows one value: the relay's [`Reply`] that a bounce
/// records (`store_knows_only_the_reply_of_mailer`).
const STORE_NEVER: &[&str] = &[
    "http", "message", "pipeline", "render", "report", "tracking",
];

/// The binary's part of the tree: `main.rs` and `cli/`, as one module.
const CLI: &str = "cli";

/// The one thing `store` takes from `mailer`: a bounce is recorded with the
/// relay's `Reply`, which alone says whether it is hard. Nothing else of
/// SMTP (transports, envelopes, rate limits) reaches the store.
#[test]
fn store_knows_only_the_reply_of_mailer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
    let mut files = Vec::new();
    collect(&root, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (at, _) in text.match_indices("crate::mailer") {
            let rest = &text[at + "crate::mailer".len()..];
            if !rest.starts_with("::Reply") {
                let line = text[..at].lines().count() + 1;
                problems.push(format!("{}:{line}", file.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "store imports more of mailer than Reply: {problems:?}"
    );
}

#[test]
fn module_map_rules_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let scan = scan_tree(&src);
    let table: Vec<String> = scan
        .deps
        .iter()
        .map(|(m, ds)| format!("{m} -> {}", join(ds)))
        .collect();
    eprintln!("{}", table.join("\n"));

    // The rules below name modules; a renamed module must rename them too.
    for m in PURE.iter().chain(["store", "pipeline", CLI].iter()) {
        assert!(scan.modules.contains(*m), "no module {m} in src/");
    }
    // The scanner sees imports at all (a broken scan would pass everything).
    for (from, to) in [
        ("pipeline", "store"),
        (CLI, "pipeline"),
        ("store", "dialect"),
    ] {
        assert!(
            scan.deps.get(from).is_some_and(|d| d.contains(to)),
            "{from} -> {to} not found; the scan is broken:\n{}",
            table.join("\n")
        );
    }

    let mut problems = Vec::new();
    for cycle in cycles(&scan.deps) {
        problems.push(format!("import loop: {}", cycle.join(" -> ")));
    }
    for m in PURE {
        let impure: Vec<&String> = scan
            .deps
            .get(*m)
            .into_iter()
            .flatten()
            .filter(|d| !PURE.contains(&d.as_str()))
            .collect();
        if !impure.is_empty() {
            problems.push(format!(
                "pure module {m} imports {}",
                join(impure.into_iter())
            ));
        }
        for (file, use_) in scan.io.get(*m).into_iter().flatten() {
            problems.push(format!("pure module {m} uses {use_} ({file})"));
        }
    }
    for d in scan.deps.get("store").into_iter().flatten() {
        if STORE_NEVER.contains(&d.as_str()) {
            problems.push(format!("store imports {d}"));
        }
    }
    for (m, ds) in &scan.deps {
        if m != CLI && ds.contains(CLI) {
            problems.push(format!("{m} imports the CLI"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\ndependencies:\n{}",
        problems.join("\n"),
        table.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The scan.

#[derive(Debug, Default)]
struct Scan {
    /// Every top-level module (`src/x.rs`, `src/x/`), and `cli`.
    modules: BTreeSet<String>,
    /// Module -> the other top-level modules it imports.
    deps: BTreeMap<String, BTreeSet<String>>,
    /// Module -> (file, path) for each use of an I/O crate or lettre transport.
    io: BTreeMap<String, Vec<(String, String)>>,
}

fn scan_tree(src: &Path) -> Scan {
    let mut scan = Scan::default();
    let mut files = Vec::new();
    collect(src, &mut files);
    files.sort();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["lib.rs"] {
            continue;
        }
        let binary = parts[0] == "main.rs" || parts[0] == CLI;
        let top = if binary {
            CLI.to_string()
        } else {
            parts[0].trim_end_matches(".rs").to_string()
        };
        // The file's module path below the crate root.
        let mut path: Vec<String> = parts
            .iter()
            .map(|p| p.trim_end_matches(".rs").to_string())
            .collect();
        if path.last().is_some_and(|l| l == "mod" || l == "main") {
            path.pop();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let found = imports(&text, &path, binary);
        scan.modules.insert(top.clone());
        let deps = scan.deps.entry(top.clone()).or_default();
        deps.extend(found.modules.into_iter().filter(|m| *m != top));
        if !found.io.is_empty() {
            let name = rel.display().to_string();
            let io = scan.io.entry(top.clone()).or_default();
            io.extend(found.io.into_iter().map(|u| (name.clone(), u)));
        }
    }
    scan.deps.retain(|_, d| !d.is_empty());
    scan
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// Rust source as identifiers, `::` and punctuation, without comments,
/// string, byte-string and character literals.
fn tokens(src: &str) -> Vec<Tok> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&s, i + 1);
        } else if (c == 'r' || c == 'b')
            && let Some(end) = raw_or_byte_string(&s, i)
        {
            i = end;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if s.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push(Tok::Sep);
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(Tok::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// The index after the closing quote of a string whose body starts at `i`.
fn skip_string(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i] != '"' {
        if s[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// `r"…"`, `r#"…"#`, `b"…"`, `br#"…"#` and `b'x'` starting at `i`: the index
/// after them, `None` when `i` starts an identifier instead.
fn raw_or_byte_string(s: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if s[j] == 'b' {
        j += 1;
        match s.get(j) {
            Some('"') => return Some(skip_string(s, j + 1)),
            Some('\'') => {
                let mut k = j + 1;
                if s.get(k) == Some(&'\\') {
                    k += 1;
                }
                return Some(k + 2);
            }
            Some('r') => {}
            _ => return None,
        }
    }
    if s.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = s[j..].iter().take_while(|c| **c == '#').count();
    j += hashes;
    if s.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    loop {
        if j >= s.len() {
            return Some(j);
        }
        if s[j] == '"'
            && s[j + 1..]
                .iter()
                .take(hashes)
                .filter(|c| **c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
}

#[derive(Debug, Default)]
struct Found {
    modules: BTreeSet<String>,
    io: Vec<String>,
}

/// The top-level modules a file at module path `path` imports, and its uses
/// of I/O crates. In the binary, the library is `herald`.
fn imports(src: &str, path: &[String], binary: bool) -> Found {
    let t = tokens(src);
    let mut found = Found::default();
    let ident = |i: usize| match t.get(i) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let starts_path = |i: usize| i == 0 || !matches!(t[i - 1], Tok::Sep | Tok::Punct('.'));
    // Inline `mod name { … }` blocks: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    for i in 0..t.len() {
        match &t[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            _ => {}
        }
        if ident(i) == Some("mod")
            && let Some(name) = ident(i + 1)
            && t.get(i + 2) == Some(&Tok::Punct('{'))
        {
            inline.push((name.to_string(), depth + 1));
        }
        let Some(word) = ident(i) else { continue };
        if !starts_path(i) || t.get(i + 1) != Some(&Tok::Sep) {
            continue;
        }
        // The first segments after the crate root, if this path starts there.
        let root_at = match word {
            "crate" if !binary => Some(i + 2),
            "herald" if binary => Some(i + 2),
            "super" if !binary => {
                let mut n = 0;
                let mut j = i;
                while ident(j) == Some("super") && t.get(j + 1) == Some(&Tok::Sep) {
                    n += 1;
                    j += 2;
                }
                let here = path.len() + inline.len();
                let before_super = i == 0 || ident(i - 1) != Some("super");
                (before_super && n == here).then_some(j)
            }
            _ => None,
        };
        if let Some(at) = root_at {
            found.modules.extend(firsts(&t, at));
            continue;
        }
        if IO_CRATES.contains(&word) {
            found.io.push(word.to_string());
        } else if word == "lettre" {
            for item in firsts(&t, i + 2) {
                if !LETTRE_DATA.contains(&item.as_str()) {
                    found.io.push(format!("lettre::{item}"));
                }
            }
        }
    }
    found
}

/// The first segment of the path at `at`, or of each path in a `{…}` group.
fn firsts(t: &[Tok], at: usize) -> Vec<String> {
    match t.get(at) {
        Some(Tok::Ident(s)) => vec![s.clone()],
        Some(Tok::Punct('{')) => {
            let mut out = Vec::new();
            let mut depth = 0;
            let mut expect = true;
            for tok in &t[at..] {
                match tok {
                    Tok::Punct('{') => {
                        depth += 1;
                        if depth == 1 {
                            expect = true;
                        }
                    }
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') if depth == 1 => expect = true,
                    Tok::Ident(s) if depth == 1 && expect => {
                        if s != "self" {
                            out.push(s.clone());
                        }
                        expect = false;
                    }
                    _ if depth == 1 => expect = false,
                    _ => {}
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Every loop in the graph, once each: the shortest path from a module back
/// to itself through an edge that closes it.
fn cycles(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut seen: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut out = Vec::new();
    for (from, tos) in deps {
        for to in tos {
            let Some(back) = shortest_path(deps, to, from) else {
                continue;
            };
            let mut cycle = vec![from.clone()];
            cycle.extend(back);
            let members: BTreeSet<String> = cycle.iter().cloned().collect();
            if seen.insert(members) {
                out.push(cycle);
            }
        }
    }
    out
}

fn shortest_path(
    deps: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut visited = BTreeSet::from([from]);
    while let Some(m) = queue.pop_front() {
        if m == to {
            let mut path = vec![to.to_string()];
            let mut at = to;
            while at != from {
                at = prev[at];
                path.push(at.to_string());
            }
            path.reverse();
            return Some(path);
        }
        for n in deps.get(m).into_iter().flatten() {
            if visited.insert(n.as_str()) {
                prev.insert(n.as_str(), m);
                queue.push_back(n.as_str());
            }
        }
    }
    None
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// The scanner on its own.

fn modules_of(src: &str, path: &[&str], binary: bool) -> Vec<String> {
    let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
    imports(src, &path, binary).modules.into_iter().collect()
}

#[test]
fn scanner_reads_every_form_of_import() {
    let src = r##"
        use crate::store::{Store, StoreError};
        use crate::{clock::Millis, quantity::{Rate, Span}, self};
        use super::super::token::Signer; // from src/render/x.rs: the crate root
        use super::Local;                 // a sibling: not a top-level module
        fn f() -> $crate::segment::Param { crate::customer::Email::parse("a") }
        mod tests {
            use super::*;
            use super::super::super::dialect::Backend;
        }
        // use crate::mailer::Mailer;
        /* crate::pipeline /* nested */ crate::tracking */
        const S: &str = "crate::report";
        const R: &str = r#"crate::seed " still a string"#;
        const C: char = '"';
        fn g<'a>(x: &'a str) -> &'a str { let _ = b'"'; x }
        use crate::import;
    "##;
    assert_eq!(
        modules_of(src, &["render", "x"], false),
        [
            "clock", "customer", "dialect", "import", "quantity", "segment", "store", "token"
        ]
    );
    // In the binary the library is `herald`; its own `crate::` is not.
    assert_eq!(
        modules_of(
            "use herald::{config::Settings, report};\nuse crate::cli::x;",
            &["cli", "run"],
            true
        ),
        ["config", "report"]
    );
}

#[test]
fn scanner_tells_io_crates_and_lettre_transports_from_data() {
    let src = "use lettre::message::Mailbox;\nuse lettre::{Address, AsyncSmtpTransport};\n\
               async fn f() { tokio::task::yield_now().await; let _: sqlx::Error; }\n\
               // axum::Router in a comment\n";
    let found = imports(src, &["message".to_string()], false);
    assert_eq!(found.io, ["lettre::AsyncSmtpTransport", "tokio", "sqlx"]);
}

#[test]
fn loops_are_found_with_their_path() {
    let deps: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a", "d"]),
        ("d", vec![]),
        ("e", vec!["d"]),
    ]
    .into_iter()
    .map(|(m, ds)| (m.to_string(), ds.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&deps), [["a", "b", "c", "a"]]);
}
