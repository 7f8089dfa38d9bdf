//! Progress for long imports and seeds: a bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use herald::import::{Observer, RowError};
use indicatif::{ProgressBar, ProgressStyle};

/// Reports progress on stderr and rejected rows as `FILE:LINE: reason`.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    last_line: Instant,
    started: Instant,
}

impl Progress {
    /// `total` is the expected amount (bytes of a file, or rows), if known.
    pub fn new(label: &str, total: Option<u64>, unit_bytes: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            let template = if unit_bytes {
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})"
            } else {
                "{msg} [{bar:40}] {human_pos}/{human_len} ({eta})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            bar,
            last_line: Instant::now(),
            started: Instant::now(),
        }
    }

    pub fn for_file(label: &str, path: &Path) -> Progress {
        let size = std::fs::metadata(path).map(|m| m.len()).ok();
        Progress::new(label, size, true)
    }

    /// Moves the bar to `position` or, off a terminal, prints a line every few seconds.
    pub fn update(&mut self, rows: u64, position: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(5) {
                    self.last_line = Instant::now();
                    eprintln!(
                        "{}: {rows} rows ({:.0} s)",
                        self.label,
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn println(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

/// A [`Progress`] that also prints each rejected row against its file.
pub struct FileObserver {
    pub progress: Progress,
    pub path: String,
}

impl Observer for FileObserver {
    fn rejected(&mut self, error: &RowError) {
        self.progress
            .println(&format!("{}:{}: {}", self.path, error.line, error.reason));
    }

    fn progress(&mut self, rows: u64, bytes: u64) {
        self.progress.update(rows, bytes);
    }
}
