//! Headless Chromium for layout checks: pages are laid out in frames of exact
//! widths (a desktop window cannot be narrower than 500 px, a frame can) and
//! measured by a script in the browser, all in one launch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Chromium binary, or `None` (with a line on stderr) outside CI.
pub fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var("HERALD_TEST_CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".into(),
        "/usr/bin/chromium-browser".into(),
    ];
    let found = candidates
        .iter()
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(!in_ci(), "Chromium is missing in CI (.ci/run installs it)");
        eprintln!("skipped: no Chromium; install the Debian package `chromium` to run this test");
    }
    found
}

/// Headless Chromium as root in a sandbox of a machine with no outside
/// network: no sandbox of its own, no GPU, none of its background traffic.
pub const HEADLESS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Runs Chromium on `page` with `args`, no network (every host name fails to
/// resolve, so a message's pixel cannot reach anything), and returns stdout.
pub fn run(browser: &Path, profile: &Path, args: &[String], page: &Path) -> String {
    let mut child = Command::new(browser)
        .args(HEADLESS)
        .args(["--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Both pipes are read on threads of their own: a full pipe would stall
    // the browser while this thread waits for it to exit.
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = stderr.join().expect("stderr reader");
    assert!(status.success(), "chromium failed: {stderr}");
    stdout.join().expect("stdout reader")
}

/// Lays out every page of `pages` (name, HTML) in a frame of each of `widths`
/// px, and returns what `measure` — a JavaScript function `(window, document)`
/// returning something JSON can hold — returned for each, by (name, width).
///
/// Each page is the `srcdoc` of its frame, so the frame's window is exactly
/// that wide and media queries see that width; the measuring script runs in
/// the frame's load event, before the harness's own (after which Chromium
/// dumps the DOM).
pub fn layout(
    browser: &Path,
    work: &Path,
    pages: &[(&str, &str)],
    widths: &[u32],
    measure: &str,
) -> BTreeMap<(String, u32), serde_json::Value> {
    let mut harness = format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><script>
var results = {{}}, pending = {};
var measure = {measure};
function loaded(frame) {{
  // Only the page itself, once (not an empty document before it).
  if (frame.contentDocument.URL !== "about:srcdoc" || frame.id in results) return;
  results[frame.id] = measure(frame.contentWindow, frame.contentDocument);
  if (--pending === 0) {{
    var out = document.createElement("script");
    out.type = "application/json";
    out.id = "results";
    out.textContent = JSON.stringify(results);
    document.body.appendChild(out);
  }}
}}
</script></head><body style="margin:0">"#,
        pages.len() * widths.len()
    );
    let mut ids = Vec::new();
    for (n, (name, html)) in pages.iter().enumerate() {
        for width in widths {
            let id = format!("p{n}w{width}");
            harness.push_str(&format!(
                r#"<iframe id="{id}" width="{width}" height="2000" style="border:0;display:block" onload="loaded(this)" srcdoc="{}"></iframe>"#,
                attribute(html)
            ));
            ids.push((id, (name.to_string(), *width)));
        }
    }
    harness.push_str("</body></html>");
    let page = work.join("layout-harness.html");
    std::fs::write(&page, harness).expect("write the harness");
    let dom = run(
        browser,
        &work.join("chromium-profile"),
        &["--window-size=1300,900".into(), "--dump-dom".into()],
        &page,
    );
    let start = r#"<script type="application/json" id="results">"#;
    let json = dom
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("no measurements in the page: {dom}"));
    let mut all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).expect("measurements as JSON");
    ids.into_iter()
        .map(|(id, key)| {
            let value = all
                .remove(&id)
                .unwrap_or_else(|| panic!("no result for {id}"));
            (key, value)
        })
        .collect()
}

/// Text as an HTML attribute value in double quotes.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
