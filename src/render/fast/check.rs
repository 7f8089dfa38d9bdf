//! The fast renderer checked against Handlebars, the reference: every message
//! in debug builds (the whole test suite), where a difference panics; one
//! message in [`RELEASE_SAMPLE`] in release builds, where a difference is
//! logged as an error and the message is still sent.

use std::sync::atomic::{AtomicU64, Ordering};

/// A release build compares one message in this many (about 0.1 % more
/// render work).
pub(crate) const RELEASE_SAMPLE: u64 = 1000;

/// Which part of a message a render is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Subject,
    Html,
    Text,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Html => "html",
            Part::Text => "text",
        }
    }
}

/// How often renders are compared with Handlebars', and what a difference does.
#[derive(Debug)]
pub(crate) struct Check {
    /// One message in `every` is compared (the first, then every `every`-th).
    every: u64,
    /// A difference panics instead of being logged.
    strict: bool,
    messages: AtomicU64,
}

impl Default for Check {
    /// This build's check: every message, strictly, in debug builds; a
    /// sample, logged, in release builds.
    fn default() -> Check {
        if cfg!(debug_assertions) {
            Check::new(1, true)
        } else {
            Check::new(RELEASE_SAMPLE, false)
        }
    }
}

impl Check {
    pub(crate) fn new(every: u64, strict: bool) -> Check {
        Check {
            every: every.max(1),
            strict,
            messages: AtomicU64::new(0),
        }
    }

    /// Counts a message; whether its parts are to be compared.
    pub(crate) fn next_message(&self) -> bool {
        self.every == 1
            || self
                .messages
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.every)
    }

    /// The part to send, from the fast renderer's output and Handlebars'
    /// render of the same part. On a difference Handlebars' output is sent
    /// (it is the reference); where Handlebars fails, the fast renderer's.
    /// The log names the template and the part, never the message's text
    /// (it holds customer data): only where the two first differ.
    pub(crate) fn compare(
        &self,
        template: &str,
        part: Part,
        fast: String,
        reference: Result<String, handlebars::RenderError>,
    ) -> String {
        match reference {
            Ok(reference) if reference == fast => fast,
            Ok(reference) => {
                let at = first_difference(&fast, &reference);
                if self.strict {
                    panic!(
                        "the compiled renderer and Handlebars differ on {template} ({}) at byte {at}:\n{fast}\n---\n{reference}",
                        part.as_str()
                    );
                }
                tracing::error!(
                    template,
                    part = part.as_str(),
                    at_byte = at,
                    fast_len = fast.len(),
                    handlebars_len = reference.len(),
                    "the fast renderer and Handlebars differ; sending Handlebars' output (please report)"
                );
                reference
            }
            Err(e) => {
                if self.strict {
                    panic!(
                        "the compiled renderer rendered {template} ({}), where Handlebars fails: {e}",
                        part.as_str()
                    );
                }
                tracing::error!(
                    template,
                    part = part.as_str(),
                    error = %e,
                    "the fast renderer rendered a part Handlebars fails on; sending the fast renderer's output (please report)"
                );
                fast
            }
        }
    }
}

/// Byte offset of the first difference of two different strings.
fn first_difference(a: &str, b: &str) -> usize {
    a.bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> handlebars::RenderError {
        handlebars::RenderErrorReason::MissingVariable(Some("x".into())).into()
    }

    #[test]
    fn samples_one_message_in_every() {
        let check = Check::new(3, false);
        let due: Vec<bool> = (0..7).map(|_| check.next_message()).collect();
        assert_eq!(due, [true, false, false, true, false, false, true]);
        let every = Check::new(1, true);
        assert!((0..5).all(|_| every.next_message()));
    }

    #[test]
    fn sends_the_fast_output_where_handlebars_fails() {
        let check = Check::new(1, false);
        let out = check.compare("t", Part::Text, "fast".into(), Err(failure()));
        assert_eq!(out, "fast");
        let same = check.compare("t", Part::Text, "same".into(), Ok("same".into()));
        assert_eq!(same, "same");
    }

    #[test]
    #[should_panic(expected = "differ on t (subject) at byte 1")]
    fn strict_check_panics_on_a_difference() {
        Check::new(1, true).compare("t", Part::Subject, "ab".into(), Ok("ax".into()));
    }

    #[test]
    #[should_panic(expected = "where Handlebars fails")]
    fn strict_check_panics_where_handlebars_fails() {
        Check::new(1, true).compare("t", Part::Html, "x".into(), Err(failure()));
    }

    #[test]
    fn first_difference_is_a_byte_offset() {
        assert_eq!(first_difference("abc", "abd"), 2);
        assert_eq!(first_difference("ab", "abc"), 2);
        assert_eq!(first_difference("é", "è"), 1);
    }
}
