//! Line and column of a node in a YAML text.
//!
//! serde_norway keeps no positions in its `Value`, but it stamps the position of
//! the node being read on any error a visitor raises. So to find where
//! `steps[1].template` is, we walk the text once more with a visitor that raises
//! a marker error on arriving there, and read the position off that error. This
//! runs only when there is a problem to report.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A node to point at: the value at `path`, or with `key` the last key itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub path: Vec<Seg>,
    pub key: bool,
}

const MARKER: &str = "\u{1}herald-locate";

/// 1-based (line, column) of the target, or of its nearest ancestor found.
pub fn locate(text: &str, target: &Target) -> Option<(usize, usize)> {
    let mut len = target.path.len();
    loop {
        let key = target.key && len == target.path.len() && len > 0;
        if let Some(found) = probe(text, &target.path[..len], key) {
            return Some(found);
        }
        if len == 0 {
            return None;
        }
        len -= 1;
    }
}

/// 1-based (line, column, in characters) of byte `offset` in `bytes`, which
/// are valid UTF-8 up to there.
pub fn position_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Where a second YAML document starts: a `---` line after content, or the
/// second `---` line of a file that opened with one.
pub fn second_document(text: &str) -> Option<(usize, usize)> {
    let mut started = false;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            if started {
                return Some((i + 1, 1));
            }
            started = true;
            continue;
        }
        let content = line.trim();
        if !content.is_empty() && !content.starts_with('#') && !content.starts_with('%') {
            started = true;
        }
        if line == "..." {
            started = true;
        }
    }
    None
}

/// The first alias (`*name`) outside quotes and comments: where expanding
/// aliases begins.
pub fn first_alias(text: &str) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate() {
        let mut quote = None;
        let mut prev = ' ';
        for (col, c) in line.chars().enumerate() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if prev.is_whitespace() => break,
                (None, '*') if prev.is_whitespace() || "[{,:-".contains(prev) => {
                    return Some((i + 1, col + 1));
                }
                _ => {}
            }
            prev = c;
        }
    }
    None
}

fn probe(text: &str, path: &[Seg], key: bool) -> Option<(usize, usize)> {
    let de = serde_norway::Deserializer::from_str(text);
    match (Seek { path, key }).deserialize(de) {
        Err(e) if e.to_string().contains(MARKER) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct Seek<'a> {
    path: &'a [Seg],
    key: bool,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Seek<'_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(MARKER))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(name), rest)) = self.path.split_first() else {
            return self.scalar();
        };
        let at_key = self.key && rest.is_empty();
        while let Some(hit) = map.next_key_seed(KeyProbe {
            name,
            raise: at_key,
        })? {
            if hit {
                return map.next_value_seed(Seek {
                    path: rest,
                    key: self.key,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(index), rest)) = self.path.split_first() else {
            return self.scalar();
        };
        for _ in 0..*index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek {
            path: rest,
            key: self.key,
        })
        .map(|_| ())
    }
}

/// Reads a mapping key: `true` when it is `name`; raises the marker there when
/// the key itself is the target.
struct KeyProbe<'a> {
    name: &'a str,
    raise: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.name, self.raise) {
            (true, true) => Err(E::custom(MARKER)),
            (hit, _) => Ok(hit),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: x\naudience:\n  all:\n    - attribute: country\n      in: [DE, AT]\n    - not: { event: purchase }\nsteps:\n  - id: a\n";

    fn at(path: Vec<Seg>, key: bool) -> Option<(usize, usize)> {
        locate(DOC, &Target { path, key })
    }
    fn k(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn finds_values_keys_and_items() {
        assert_eq!(at(vec![k("name")], false), Some((1, 7)));
        assert_eq!(at(vec![k("name")], true), Some((1, 1)));
        let item = vec![k("audience"), k("all"), Seg::Index(0)];
        assert_eq!(
            at([item.clone(), vec![k("in")]].concat(), true),
            Some((5, 7))
        );
        assert_eq!(
            at([item.clone(), vec![k("in"), Seg::Index(1)]].concat(), false),
            Some((5, 16))
        );
        let flow = vec![k("audience"), k("all"), Seg::Index(1), k("not"), k("event")];
        assert_eq!(at(flow, false), Some((6, 21)));
        assert_eq!(
            at(vec![k("steps"), Seg::Index(0), k("id")], false),
            Some((8, 9))
        );
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        assert_eq!(
            at(vec![k("steps"), Seg::Index(0), k("template")], false),
            Some((8, 5))
        );
    }
}
