//! Which opens (and clicks) were made by machines rather than people.
//!
//! Machine events are recorded like the others, with `data.machine: true` and
//! `data.machine_reason`, so reports can count human engagement apart and
//! follow-ups never fire on a machine open alone. The rule:
//!
//! 1. User-Agent exactly `Mozilla/5.0`: Apple Mail Privacy Protection, which
//!    fetches every image of every message on delivery (`apple_mpp`).
//! 2. No User-Agent at all: every mail client and browser sends one (`no_user_agent`).
//! 3. A User-Agent of a known scanner, proxy that prefetches, headless browser
//!    or HTTP library (`scanner`), see [`SCANNERS`].
//! 4. Within [`MACHINE_WINDOW_MS`] of the delivery's `sent_at`, or before it was
//!    recorded sent: gateways scan a message as it arrives, people are not
//!    that fast (`soon_after_send`).
//!
//! Image proxies that fetch when the person opens the message — Gmail's
//! `GoogleImageProxy`, Yahoo's `YahooMailProxy` — count as human: they are the
//! only signal a Gmail or Yahoo open ever gives (rule 4 still applies).

use crate::clock::Millis;

/// Opens sooner than this after the send are a machine's.
pub const MACHINE_WINDOW_MS: Millis = 5_000;

/// Lower-case fragments of User-Agents that belong to machines: mail security
/// gateways and link scanners, crawlers, headless browsers, HTTP libraries.
pub const SCANNERS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "scanner",
    "barracuda",
    "mimecast",
    "proofpoint",
    "trendmicro",
    "trend micro",
    "symantec",
    "messagelabs",
    "forcepoint",
    "sophos",
    "fortiguard",
    "ironport",
    "zscaler",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww-perl",
    "apache-httpclient",
    "node-fetch",
    "axios/",
];

/// Why an event counts as a machine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineReason {
    AppleMpp,
    NoUserAgent,
    Scanner,
    SoonAfterSend,
}

impl MachineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineReason::AppleMpp => "apple_mpp",
            MachineReason::NoUserAgent => "no_user_agent",
            MachineReason::Scanner => "scanner",
            MachineReason::SoonAfterSend => "soon_after_send",
        }
    }
}

/// Rules 1–3: what the User-Agent alone says.
pub fn by_user_agent(user_agent: Option<&str>) -> Option<MachineReason> {
    let ua = user_agent.map(str::trim).unwrap_or("");
    if ua.is_empty() {
        return Some(MachineReason::NoUserAgent);
    }
    if ua == "Mozilla/5.0" {
        return Some(MachineReason::AppleMpp);
    }
    let lower = ua.to_ascii_lowercase();
    SCANNERS
        .iter()
        .any(|s| lower.contains(s))
        .then_some(MachineReason::Scanner)
}

/// Rule 4: what the timing says, given when the delivery was recorded sent.
pub fn by_timing(occurred_at: Millis, sent_at: Option<Millis>) -> Option<MachineReason> {
    match sent_at {
        Some(sent) if occurred_at >= sent + MACHINE_WINDOW_MS => None,
        _ => Some(MachineReason::SoonAfterSend),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_rules() {
        assert_eq!(
            by_user_agent(Some("Mozilla/5.0")),
            Some(MachineReason::AppleMpp)
        );
        assert_eq!(by_user_agent(None), Some(MachineReason::NoUserAgent));
        assert_eq!(by_user_agent(Some(" ")), Some(MachineReason::NoUserAgent));
        assert_eq!(
            by_user_agent(Some("Mozilla/5.0 (compatible; Barracuda Sentinel)")),
            Some(MachineReason::Scanner)
        );
        assert_eq!(
            by_user_agent(Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36"
            )),
            Some(MachineReason::Scanner)
        );
        assert_eq!(
            by_user_agent(Some("python-requests/2.31")),
            Some(MachineReason::Scanner)
        );
        // People behind Gmail's and Yahoo's image proxies, and real clients.
        for human in [
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
            "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17126; Pro)",
        ] {
            assert_eq!(by_user_agent(Some(human)), None, "{human}");
        }
    }

    #[test]
    fn timing_rule() {
        let sent = 1_000_000;
        assert_eq!(
            by_timing(sent + 1_000, Some(sent)),
            Some(MachineReason::SoonAfterSend)
        );
        assert_eq!(
            by_timing(sent - 10, Some(sent)),
            Some(MachineReason::SoonAfterSend)
        );
        assert_eq!(by_timing(sent, None), Some(MachineReason::SoonAfterSend));
        assert_eq!(by_timing(sent + MACHINE_WINDOW_MS, Some(sent)), None);
        assert_eq!(by_timing(sent + 3_600_000, Some(sent)), None);
    }
}
