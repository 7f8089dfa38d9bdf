//! Who sends each campaign, so the unsubscribe page can say whose emails stop.

use std::collections::BTreeMap;

use crate::campaign::Campaign;

/// Each campaign's sender as its readers see it: the From display name, or
/// the address when the From has no name.
#[derive(Debug, Clone, Default)]
pub struct Senders(BTreeMap<String, String>);

impl Senders {
    pub fn new(campaigns: &[Campaign]) -> Senders {
        Senders(
            campaigns
                .iter()
                .map(|c| {
                    let name = match c.from.name.as_deref().map(str::trim) {
                        Some(n) if !n.is_empty() => n.to_string(),
                        _ => c.from.email.to_string(),
                    };
                    (c.name.clone(), name)
                })
                .collect(),
        )
    }

    /// The sender of `campaign`; the campaign's own name when its file was
    /// not loaded here (`herald serve` without the campaign files).
    pub fn name<'a>(&'a self, campaign: &'a str) -> &'a str {
        self.0.get(campaign).map_or(campaign, String::as_str)
    }

    /// The other names the campaigns send as, each once, in order: an
    /// unsubscribe stops those too.
    pub fn others(&self, name: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .0
            .values()
            .map(String::as_str)
            .filter(|n| *n != name)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(name: &str, from: &str) -> Campaign {
        let yaml = format!(
            "name: {name}\nfrom: '{from}'\naudience:\n  attribute: country\n  exists: true\n\
             steps:\n  - id: a\n    subject: s\n    template: t\n"
        );
        crate::campaign::parse("t.yaml", &yaml).unwrap()
    }

    #[test]
    fn names_come_from_the_from_header() {
        let s = Senders::new(&[
            campaign("shop", "Acme Shop <hello@acme.example>"),
            campaign("deals", "Acme Shop <deals@acme.example>"),
            campaign("news", "Acme Journal <journal@acme.example>"),
            campaign("bare", "support@acme.example"),
        ]);
        assert_eq!(s.name("shop"), "Acme Shop");
        assert_eq!(s.name("bare"), "support@acme.example");
        assert_eq!(s.name("gone"), "gone");
        assert_eq!(
            s.others("Acme Shop"),
            ["Acme Journal", "support@acme.example"]
        );
    }
}
