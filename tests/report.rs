//! `herald report` opened in real headless Chromium (no console output, a
//! screenshot that is not blank, laid out on a phone's and a desktop's
//! width), and the Prometheus `/metrics` endpoint parsed by a strict reader
//! of the text format (and by promtool), its OpenMetrics answer by a strict
//! reader and the OpenMetrics parser of the Python client; both backends.

mod common;
mod report_data;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::chromium;
use common::{TestDb, stderr, stdout};
use herald::http::metrics;
use herald::mailer::Reply;
use herald::metrics::Metrics;
use herald::store::deliveries::Outcome;
use report_data::{CAMPAIGN, generated, load, scripted, write_campaign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- Chromium

/// Opens `page` in headless Chromium, saves a 1200×2000 screenshot to `png`
/// and returns the console messages Chromium logged.
fn screenshot(browser: &Path, page: &Path, png: &Path, profile: &Path) -> Vec<String> {
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,2000")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("chromium output");
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    // Console messages of every level are logged as `…:CONSOLE…] "text", source: …`.
    stderr(&out)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// Distinct colours and the share of pixels that are not (near) white.
fn png_stats(path: &Path) -> (u32, u32, usize, f64) {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("screenshot exists"));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "colour screenshot, got {:?}",
        info.color_type
    );
    let mut colours = HashSet::new();
    let mut inked = 0usize;
    let pixels = (info.width * info.height) as usize;
    for y in 0..info.height as usize {
        let row = &buf[y * info.line_size..][..info.width as usize * channels];
        for px in row.chunks_exact(channels) {
            colours.insert((px[0], px[1], px[2]));
            if px[..3].iter().any(|c| *c < 235) {
                inked += 1;
            }
        }
    }
    (
        info.width,
        info.height,
        colours.len(),
        inked as f64 / pixels as f64,
    )
}

/// The page refers to nothing outside itself.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "no scripts");
    assert!(!lower.contains("src="), "no external sources");
    assert!(!lower.contains("url("), "no CSS urls");
    assert!(!lower.contains("@import"), "no CSS imports");
    for (i, _) in lower.match_indices("href=") {
        assert!(
            lower[i..].starts_with("href=\"data:"),
            "only data: links: {}",
            &html[i..(i + 60).min(html.len())]
        );
    }
}

/// Six hundred customers' activity, and `herald report` of it in report.html.
async fn write_report(db: &TestDb) {
    let s = generated(600, 5);
    load(db, &s).await;
    write_campaign(db);
    let out = db.herald(&["report", CAMPAIGN, "--out", "report.html"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("wrote report.html"),
        "{}",
        stdout(&out)
    );
}

async fn report_renders_in_chromium(db: TestDb) {
    write_report(&db).await;
    let page = db.path("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    for part in [
        "Activity over time",
        "Funnel by step",
        "Top links",
        "Conversions",
        "Figures by step",
        "<svg",
    ] {
        assert!(html.contains(part), "report has {part}");
    }
    // Text from data is escaped: the description and a URL hold markup.
    assert!(html.contains("Autumn promo &lt;with&gt; markup &amp; quotes"));
    assert!(html.contains("x=&lt;1&gt;"), "escaped URL");
    assert!(!html.contains("<with>") && !html.contains("<1>"));

    let Some(browser) = chromium() else { return };
    let png = db.path("report.png");
    let console = screenshot(&browser, &page, &png, &db.path("chromium-profile"));
    assert!(console.is_empty(), "console output: {console:#?}");
    let (w, h, colours, inked) = png_stats(&png);
    assert_eq!((w, h), (1200, 2000));
    assert!(colours >= 200, "only {colours} distinct colours");
    assert!(
        inked > 0.15,
        "only {:.1}% of pixels are not white",
        inked * 100.0
    );
    // Keep a copy to look at: TARGET/tmp/report-BACKEND.{png,html}
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let name = format!("report-{}", db.backend.name());
    let _ = std::fs::copy(&png, keep.join(format!("{name}.png")));
    let _ = std::fs::copy(&page, keep.join(format!("{name}.html")));
}
both_backends!(report_in_chromium, report_renders_in_chromium);

/// Measured in the report's frame: the widths, every chart label at the size
/// it is drawn (SVG text scaled by its chart), labels of one axis that
/// overlap, and the lines each link's URL takes.
const FITS: &str = r#"function (win, doc) {
  function visible(e) {
    var b = e.getBoundingClientRect();
    return b.width > 0 && b.height > 0;
  }
  var labels = [];
  doc.querySelectorAll(".lc .xl, .lc .yl, .bars .bl, .bars .bn, .bars .bh, .legend span, svg text")
    .forEach(function (e) {
      if (!visible(e)) return;
      var size = parseFloat(win.getComputedStyle(e).fontSize);
      if (e instanceof win.SVGElement) {
        var m = e.getScreenCTM();
        size *= Math.min(Math.abs(m.a), Math.abs(m.d));
      }
      labels.push({ text: e.textContent, size: Math.round(size * 10) / 10 });
    });
  var overlaps = [];
  var timeLabels = 0;
  doc.querySelectorAll(".lc").forEach(function (chart) {
    [".xl", ".yl"].forEach(function (axis) {
      var shown = Array.prototype.filter.call(chart.querySelectorAll(axis), visible);
      if (axis === ".xl") timeLabels += shown.length;
      shown.forEach(function (a, i) {
        shown.slice(i + 1).forEach(function (b) {
          var p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
          if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom) {
            overlaps.push(a.textContent + " / " + b.textContent);
          }
        });
      });
    });
  });
  var links = Array.prototype.map.call(doc.querySelectorAll("td.url code"), function (c) {
    var box = c.getBoundingClientRect();
    return {
      url: c.title,
      lines: Math.round(box.height / parseFloat(win.getComputedStyle(c).lineHeight)),
      width: Math.round(box.width)
    };
  });
  return {
    width: win.innerWidth,
    scrollWidth: doc.documentElement.scrollWidth,
    lineCharts: doc.querySelectorAll(".lc").length,
    labels: labels,
    overlaps: overlaps,
    timeLabels: timeLabels,
    links: links
  };
}"#;

/// The report on a 390 px phone and a 1200 px desktop: no page wider than
/// the screen, chart labels at a readable size that do not overlap (one
/// scaled SVG shrank them to 4 px on the phone), and every link's URL on at
/// most two lines in a column wide enough to read (it took 7 to 12 lines
/// in a sliver beside a fixed-width bar).
async fn report_fits_a_phone_and_a_desktop(db: TestDb) {
    write_report(&db).await;
    let Some(browser) = chromium() else { return };
    let html = std::fs::read_to_string(db.path("report.html")).unwrap();
    let measured = common::browser::layout(
        &browser,
        db.dir.path(),
        &[("report", &html)],
        &[390, 1200],
        FITS,
    );
    for ((_, width), m) in &measured {
        let at = format!("at {width} px");
        assert_eq!(m["width"], *width, "{at}: the frame is the screen");
        assert!(
            m["scrollWidth"].as_u64().unwrap() <= u64::from(*width),
            "{at}: the page is wider than the screen: {m}"
        );
        assert_eq!(m["lineCharts"], 1, "{at}: {m}");
        let labels = m["labels"].as_array().unwrap();
        assert!(labels.len() > 20, "{at}: chart labels: {m}");
        let small: Vec<&serde_json::Value> = labels
            .iter()
            .filter(|l| l["size"].as_f64().unwrap() < 11.0)
            .collect();
        assert!(small.is_empty(), "{at}: labels under 11 px: {small:?}");
        assert_eq!(
            m["overlaps"],
            serde_json::json!([]),
            "{at}: overlapping labels"
        );
        let min_time_labels = if *width < 600 { 3 } else { 6 };
        assert!(
            m["timeLabels"].as_u64().unwrap() >= min_time_labels,
            "{at}: time labels: {m}"
        );
        let links = m["links"].as_array().unwrap();
        assert_eq!(links.len(), 3, "{at}: {m}");
        for l in links {
            assert!(
                l["lines"].as_u64().unwrap() <= 2 && l["width"].as_u64().unwrap() >= 180,
                "{at}: a link takes {} lines in {} px: {}",
                l["lines"],
                l["width"],
                l["url"]
            );
        }
    }
    // The longest link is cut on the page, and whole in its title.
    assert!(html.contains(&format!(
        "title=\"{}\"",
        report_data::LINK_LONG.replace('&', "&amp;")
    )));
}
both_backends!(report_on_a_phone, report_fits_a_phone_and_a_desktop);

/// The console check catches what it is meant to catch.
#[test]
fn chromium_console_check_sees_errors() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        r#"<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><p>x</p><script>console.error("report-broke"); missing();</script></body></html>"#,
    )
    .unwrap();
    let png = dir.path().join("bad.png");
    let console = screenshot(&browser, &page, &png, &dir.path().join("profile"));
    assert!(
        console.iter().any(|l| l.contains("report-broke")),
        "{console:#?}"
    );
    assert!(
        console.iter().any(|l| l.contains("ReferenceError")),
        "{console:#?}"
    );
    let (_, _, colours, inked) = png_stats(&png);
    assert!(
        colours < 200 || inked < 0.15,
        "a near-empty page looks blank"
    );
}

async fn empty_campaign_report(db: TestDb) {
    write_campaign(&db);
    let _ = db.store().await;
    let out = db.herald(&["report", CAMPAIGN, "--out", "empty.html"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(db.path("empty.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("No sends or tracked events yet."));
    assert!(html.contains("nothing sent yet"));
}
both_backends!(empty_report, empty_campaign_report);

// ---------------------------------------------------------------- metrics

#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// `{a="x",b="y"}` → labels; the rest of the line after the closing brace.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        }
    }
}

/// A strict reader of the text exposition format 0.0.4.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("must end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (word, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let arg = parts.next().ok_or_else(|| err("missing text".into()))?;
            if !valid_name(name) {
                return Err(err("bad metric name".into()));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                if finished.contains(name) {
                    return Err(err("family continued after another".into()));
                }
                current = Some(name.to_string());
            }
            let f = families.entry(name.to_string()).or_default();
            match word {
                "HELP" if f.help.is_none() => f.help = Some(arg.to_string()),
                "TYPE" if f.kind.is_none() && f.samples.is_empty() => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(err("unknown type".into()));
                    }
                    f.kind = Some(arg.to_string());
                }
                _ => return Err(err("unexpected or repeated comment".into())),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(err("stray line".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("expected a space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = current
            .clone()
            .ok_or_else(|| err("sample before TYPE".into()))?;
        let kind = families[&family]
            .kind
            .clone()
            .ok_or_else(|| err("no TYPE".into()))?;
        let belongs = match kind.as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_string()),
            _ => name == family,
        };
        if !belongs {
            return Err(err(format!("sample outside its family {family}")));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(err("duplicate sample".into()));
        }
        families
            .get_mut(&family)
            .unwrap()
            .samples
            .push((name.to_string(), labels, value));
    }
    for (name, f) in &families {
        if f.help.is_none() || f.kind.is_none() {
            return Err(format!("{name}: HELP and TYPE are both required"));
        }
        if f.kind.as_deref() == Some("histogram") {
            let buckets: Vec<(f64, f64)> = f
                .samples
                .iter()
                .filter(|s| s.0.ends_with("_bucket"))
                .map(|s| Ok((parse_value(s.1.get("le").ok_or("bucket without le")?)?, s.2)))
                .collect::<Result<_, String>>()?;
            if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                return Err(format!("{name}: last bucket must be +Inf"));
            }
            for w in buckets.windows(2) {
                if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
                    return Err(format!("{name}: buckets not monotonic: {w:?}"));
                }
            }
            let count = f.samples.iter().find(|s| s.0.ends_with("_count"));
            let sum = f.samples.iter().find(|s| s.0.ends_with("_sum"));
            match (count, sum) {
                (Some(c), Some(_)) if c.2 == buckets[buckets.len() - 1].1 => {}
                _ => {
                    return Err(format!(
                        "{name}: _count must equal the +Inf bucket, _sum present"
                    ));
                }
            }
        }
    }
    Ok(families)
}

fn sample(f: &BTreeMap<String, Family>, name: &str, label: Option<(&str, &str)>) -> f64 {
    let family = name
        .trim_end_matches("_bucket")
        .trim_end_matches("_count")
        .trim_end_matches("_sum");
    f[family]
        .samples
        .iter()
        .find(|s| {
            s.0 == name && label.is_none_or(|(k, v)| s.1.get(k).map(String::as_str) == Some(v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
        .2
}

/// `GET /metrics` over a plain connection, with `Accept: accept` when given:
/// the whole response, head and body.
async fn scrape(addr: std::net::SocketAddr, accept: Option<&str>) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    response
}

/// A strict reader of OpenMetrics 1.0.0 text, as far as Herald's families
/// go: `# EOF` once and last, `# UNIT` only for a name ending in its unit,
/// counter families named without `_total` (their samples with it); the rest
/// is read by [`parse_exposition`], counter families renamed as in 0.0.4.
fn parse_openmetrics(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let body = text.strip_suffix("# EOF\n").ok_or("must end with # EOF")?;
    let mut counters = HashSet::new();
    for line in body.lines() {
        if line == "# EOF" {
            return Err("# EOF before the end".into());
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').ok_or("# UNIT without a unit")?;
            if unit.is_empty() || !name.ends_with(&format!("_{unit}")) {
                return Err(format!("{line:?}: the name must end with its unit"));
            }
        }
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            if name.ends_with("_total") {
                return Err(format!(
                    "{line:?}: a counter family is named without _total"
                ));
            }
            counters.insert(name.to_string());
        }
    }
    let mut classic = String::new();
    for line in body.lines().filter(|l| !l.starts_with("# UNIT ")) {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|word| {
            let rest = line.strip_prefix(word)?;
            let (name, text) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{word}{name}_total {text}"))
        });
        classic.push_str(renamed.as_deref().unwrap_or(line));
        classic.push('\n');
    }
    parse_exposition(&classic)
}

/// Every sample as (name, labels, value), `le` read as a number: the two
/// formats write bounds their own way (`10`, `10.0`).
fn samples(f: &BTreeMap<String, Family>) -> Vec<(String, BTreeMap<String, String>, String)> {
    let mut all: Vec<_> = f
        .values()
        .flat_map(|family| &family.samples)
        .map(|(name, labels, value)| {
            let mut labels = labels.clone();
            if let Some(le) = labels.get_mut("le") {
                *le = parse_value(le).map_or_else(|e| e, |v| v.to_string());
            }
            (name.clone(), labels, value.to_string())
        })
        .collect();
    all.sort();
    all
}

/// Whether an outside checker runs; in CI a missing one fails the test
/// (`.ci/run` installs it), elsewhere the check is skipped with a line.
fn have(probe: &mut Command, install: &str) -> bool {
    let have = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(!common::in_ci(), "required in CI: {install}");
        eprintln!("skipped: {install} to check the scrape with it");
    }
    have
}

/// Runs `command` with `input` on stdin; its exit status and output.
fn pipe(command: &mut Command, input: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The Prometheus text scrape through Prometheus's own parser and linter.
fn promtool_check(body: &str) {
    let install = "install promtool (Debian: `apt-get install prometheus`)";
    if !have(Command::new("promtool").arg("--version"), install) {
        return;
    }
    let (ok, out) = pipe(Command::new("promtool").args(["check", "metrics"]), body);
    assert!(ok, "promtool check metrics: {out}\n{body}");
}

/// The OpenMetrics scrape through the OpenMetrics parser of the Python
/// client (`prometheus_client.openmetrics.parser`), which refuses anything
/// the specification does not allow.
fn openmetrics_check(body: &str) {
    let install = "install the Python client (`python3 -m pip install prometheus-client`)";
    let probe = "import prometheus_client.openmetrics.parser";
    if !have(Command::new("python3").args(["-c", probe]), install) {
        return;
    }
    let script = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
print(sum(len(f.samples) for f in parse(sys.stdin.read())), 'samples')\n";
    let (ok, out) = pipe(Command::new("python3").args(["-c", script]), body);
    assert!(ok, "OpenMetrics parser: {out}\n{body}");
}

#[test]
fn the_parser_rejects_malformed_text() {
    for bad in [
        "x 1\n",                                      // no TYPE
        "# TYPE x counter\nx 1\n",                    // no HELP
        "# HELP x h\n# TYPE x counter\nx{a=\"1} 1\n", // unterminated
        "# HELP x h\n# TYPE x counter\nx -1\n",       // negative counter
        "# HELP x h\n# TYPE x counter\nx 1",          // no final newline
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
    for bad in [
        "# HELP x h\n# TYPE x counter\nx_total 1\n", // no # EOF
        "# HELP x h\n# TYPE x counter\nx_total 1\n# EOF\nx_total 2\n", // after # EOF
        "# HELP x_total h\n# TYPE x_total counter\nx_total 1\n# EOF\n", // family with _total
        "# HELP x h\n# TYPE x counter\nx 1\n# EOF\n", // sample without _total
        "# HELP x h\n# TYPE x gauge\n# UNIT x seconds\nx 1\n# EOF\n", // unit not in the name
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
    let good = "# HELP x h\n# TYPE x counter\nx_total 1\n# HELP t_seconds h\n# TYPE t_seconds gauge\n# UNIT t_seconds seconds\nt_seconds 1\n# EOF\n";
    assert!(parse_openmetrics(good).is_ok());
}

async fn metrics_endpoint_speaks_prometheus(db: TestDb) {
    let s = scripted();
    load(&db, &s).await;
    let queued = s.deliveries.iter().filter(|d| d.status == "queued").count();
    let store = db.store().await;

    let m = Metrics::new();
    let feed = m.clone(); // clones share their counters
    for _ in 0..3 {
        feed.outcome(&Outcome::Sent {
            message_id: "m".into(),
        });
    }
    feed.outcome(&Outcome::Retry {
        at: 0,
        error: "451 4.3.0 try later".into(),
        unknown: false,
    });
    feed.outcome(&Outcome::Failed {
        error: "attempts".into(),
    });
    feed.outcome(&Outcome::Bounced {
        reply: Reply::parse(550, "5.1.1 <gone@x.example>: no such user"),
    });
    feed.outcome(&Outcome::Bounced {
        reply: Reply::parse(554, "5.7.1 relay access denied"),
    });
    feed.bounced(&Reply::parse(550, "mailbox unavailable"));
    feed.tracking_event("email_opened");
    feed.tracking_event("email_opened");
    feed.tracking_event("email_clicked");
    feed.tracking_event("something_else");
    for ms in [2, 30, 2_000] {
        feed.observe_send_latency(Duration::from_millis(ms));
    }
    feed.observe_rate_limit_wait(Duration::ZERO);
    feed.observe_rate_limit_wait(Duration::from_millis(200));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, metrics::router(m, store))
            .await
            .unwrap();
    });
    let response = scrape(addr, None).await;
    // The same metrics as OpenMetrics, for a scraper that asks for them.
    let open_response = scrape(addr, Some("application/openmetrics-text; version=1.0.0")).await;
    server.abort();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let f = parse_exposition(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    promtool_check(body);
    let (open_head, open_body) = open_response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(open_head.starts_with("HTTP/1.1 200"), "{open_head}");
    assert!(
        open_head
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{open_head}"
    );
    let open = parse_openmetrics(open_body).unwrap_or_else(|e| panic!("{e}\n{open_body}"));
    openmetrics_check(open_body);
    assert_eq!(samples(&open), samples(&f), "{open_body}\n{body}");

    assert_eq!(
        f["herald_messages_sent_total"].kind.as_deref(),
        Some("counter")
    );
    assert_eq!(sample(&f, "herald_messages_sent_total", None), 3.0);
    assert_eq!(sample(&f, "herald_messages_retried_total", None), 1.0);
    assert_eq!(sample(&f, "herald_messages_failed_total", None), 1.0);
    let bounced = "herald_messages_bounced_total";
    assert_eq!(sample(&f, bounced, Some(("class", "5.1"))), 1.0);
    assert_eq!(sample(&f, bounced, Some(("class", "5.7"))), 1.0);
    assert_eq!(sample(&f, bounced, Some(("class", "5xx"))), 1.0);
    assert_eq!(sample(&f, bounced, Some(("class", "4xx"))), 0.0);
    let events = "herald_tracking_events_total";
    assert_eq!(sample(&f, events, Some(("kind", "email_opened"))), 2.0);
    assert_eq!(sample(&f, events, Some(("kind", "email_clicked"))), 1.0);
    assert_eq!(sample(&f, events, Some(("kind", "other"))), 1.0);
    assert_eq!(f["herald_queue_depth"].kind.as_deref(), Some("gauge"));
    assert_eq!(sample(&f, "herald_queue_depth", None), queued as f64);
    let latency = "herald_send_latency_seconds";
    assert_eq!(f[latency].kind.as_deref(), Some("histogram"));
    assert_eq!(sample(&f, "herald_send_latency_seconds_count", None), 3.0);
    assert!((sample(&f, "herald_send_latency_seconds_sum", None) - 2.032).abs() < 1e-9);
    assert_eq!(
        sample(
            &f,
            "herald_send_latency_seconds_bucket",
            Some(("le", "0.05"))
        ),
        2.0
    );
    assert_eq!(
        sample(&f, "herald_rate_limit_wait_seconds_count", None),
        2.0
    );
    assert_eq!(
        sample(
            &f,
            "herald_rate_limit_wait_seconds_bucket",
            Some(("le", "0.0001"))
        ),
        1.0
    );
}
both_backends!(metrics_endpoint, metrics_endpoint_speaks_prometheus);
