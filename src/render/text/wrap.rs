//! The text part's layout: lines trimmed, runs of blank lines collapsed,
//! lines longer than 78 characters wrapped at a space (a long URL stays whole).

/// Longest line of the text part before wrapping at a space.
const WRAP: usize = 78;

/// Appends `line`, wrapped at spaces to at most [`WRAP`] characters where it can
/// be (a long URL stays whole).
///
/// The usual line, words between single spaces, is cut where the greedy fill
/// would break it: at the last space within [`WRAP`] characters of the line's
/// start (or, when the first word is longer than that, at the space after it),
/// found with memchr instead of looking at every word.
fn push_wrapped(out: &mut String, line: &str) {
    let bytes = line.as_bytes();
    if bytes.first() == Some(&b' ')
        || bytes.last() == Some(&b' ')
        || memchr::memmem::find(bytes, b"  ").is_some()
    {
        return push_wrapped_words(out, line);
    }
    let ascii = line.is_ascii();
    let mut rest = line;
    loop {
        // Byte offset of the character just past WRAP characters, if any.
        let past = if ascii {
            (rest.len() > WRAP).then_some(WRAP)
        } else {
            rest.char_indices().nth(WRAP).map(|(at, _)| at)
        };
        let Some(past) = past else {
            break;
        };
        let head = rest.as_bytes();
        // `rest` starts with a word, so a space found is past its first byte.
        let cut = memchr::memrchr(b' ', &head[..=past])
            .or_else(|| memchr::memchr(b' ', &head[past..]).map(|at| past + at));
        let Some(cut) = cut else {
            break;
        };
        out.push_str(&rest[..cut]);
        out.push('\n');
        rest = &rest[cut + 1..];
    }
    out.push_str(rest);
}

/// [`push_wrapped`] for lines with runs of spaces, which collapse to one: a
/// byte scan finds the words and counts their characters (bytes that do not
/// continue a UTF-8 sequence).
fn push_wrapped_words(out: &mut String, line: &str) {
    let bytes = line.as_bytes();
    let mut width = 0;
    let mut first = true;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' {
            i += 1;
            continue;
        }
        let start = i;
        let mut len = 0;
        while i < bytes.len() && bytes[i] != b' ' {
            len += usize::from(bytes[i] & 0xC0 != 0x80);
            i += 1;
        }
        if !first {
            if width + 1 + len > WRAP {
                out.push('\n');
                width = 0;
            } else {
                out.push(' ');
                width += 1;
            }
        }
        first = false;
        // `start` and `i` are at spaces or the ends: character boundaries.
        out.push_str(&line[start..i]);
        width += len;
    }
}

/// Appends one line, wrapped if it is longer than [`WRAP`] characters.
fn push_line(out: &mut String, line: &str) {
    // A line of at most WRAP bytes has at most WRAP characters.
    if line.len() > WRAP && line.chars().count() > WRAP {
        push_wrapped(out, line);
    } else {
        out.push_str(line);
    }
}

/// Wraps lines longer than [`WRAP`] at spaces; text with no long line is returned as is.
pub fn wrap(text: String) -> String {
    if text.lines().all(|l| l.len() <= WRAP) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(body) => {
                push_line(&mut out, body);
                out.push('\n');
            }
            None => push_line(&mut out, line),
        }
    }
    out
}

/// Trims each line and collapses runs of blank lines.
pub fn tidy(s: &str) -> String {
    tidy_lines(s, |out, line| out.push_str(line))
}

/// `wrap(tidy(s))` in one pass and one buffer.
pub fn tidy_wrapped(s: &str) -> String {
    tidy_lines(s, push_line)
}

fn tidy_lines(s: &str, push: impl Fn(&mut String, &str)) -> String {
    let mut out = String::with_capacity(s.len() + 64);
    let mut blank = 0;
    for line in s.lines().map(str::trim) {
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        push(&mut out, line);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::super::from_html;
    use super::*;

    #[test]
    fn wraps_long_lines_but_not_urls() {
        let long = format!(
            "<p>{} https://shop.example/{}</p>",
            "word ".repeat(40),
            "x".repeat(100)
        );
        let text = wrap(from_html(&long));
        assert!(
            text.lines()
                .all(|l| l.chars().count() <= WRAP || !l.contains(' ')),
            "{text}"
        );
        assert!(text.contains(&format!("https://shop.example/{}", "x".repeat(100))));
    }

    #[test]
    fn tidy_wrapped_is_wrap_of_tidy() {
        let samples = [
            String::new(),
            "  \n\n".to_string(),
            format!("  a  \n\n\n b {}\n", "wörd ".repeat(30)),
            format!("{}\r\n x\ty  \n", "ab  c".repeat(40)),
            format!("é{}", "\u{a0}€ ".repeat(50)),
            format!("{} {}", "x".repeat(90), "y ".repeat(50)),
            format!("{} {}z", "x".repeat(90), "y ".repeat(50)),
            format!(
                "{}{}{}",
                "ß ".repeat(20),
                "q".repeat(80),
                " Ünï cödé".repeat(30)
            ),
            format!(" {} ", "ab ".repeat(60)),
        ];
        for s in samples {
            assert_eq!(tidy_wrapped(&s), wrap(tidy(&s)), "{s:?}");
            for line in s.lines().chain([s.as_str()]) {
                let (mut new, mut old) = (String::new(), String::new());
                push_wrapped(&mut new, line);
                push_wrapped_reference(&mut old, line);
                assert_eq!(new, old, "{line:?}");
            }
        }
    }

    #[test]
    fn wrapping_matches_the_word_by_word_fill() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        let spaced = "[a é€ x]{0,400}".boxed();
        // Single spaces: the memchr path.
        let single = prop::collection::vec("[aé€x]{1,100}", 0..40)
            .prop_map(|words| words.join(" "))
            .boxed();
        let ascii = prop::collection::vec("[ax]{1,20}", 0..60)
            .prop_map(|words| words.join(" "))
            .boxed();
        for strategy in [spaced, single, ascii] {
            runner
                .run(&strategy, |line| {
                    let (mut new, mut old) = (String::new(), String::new());
                    push_wrapped(&mut new, &line);
                    push_wrapped_reference(&mut old, &line);
                    prop_assert_eq!(new, old);
                    Ok(())
                })
                .unwrap();
        }
    }

    /// The wrapping as first written: the oracle for the faster versions.
    fn push_wrapped_reference(out: &mut String, line: &str) {
        let mut width = 0;
        for (i, word) in line.split(' ').filter(|w| !w.is_empty()).enumerate() {
            let len = word.chars().count();
            if i > 0 {
                if width + 1 + len > WRAP {
                    out.push('\n');
                    width = 0;
                } else {
                    out.push(' ');
                    width += 1;
                }
            }
            out.push_str(word);
            width += len;
        }
    }
}
