//! The outbound allow-list: which URLs Herald may request.
//!
//! The rules, in the order they are asked:
//! - the scheme is `http` or `https`;
//! - the host is listed: a name exactly (`hooks.example.com`), a name and
//!   every subdomain (`*.example.com`), or, for an address written in the URL,
//!   a network containing it (`203.0.113.7`, `10.1.0.0/16`, `::1`);
//! - every address the host resolves to is a public one, or inside a listed
//!   network. Loopback, private (RFC 1918), shared (100.64/10), link-local
//!   (169.254/16, where cloud metadata lives), unspecified, multicast,
//!   broadcast and IPv6 unique-local or link-local addresses are refused
//!   unless listed, and an IPv4 address inside IPv6 is judged as the IPv4
//!   address it is. A name listed by name does not admit a private address
//!   it happens to resolve to: that needs the network listed too (tests list
//!   `127.0.0.1`).
//!
//! The caller connects to the addresses [`AllowList::resolve`] returns, not to
//! the name again, so a name that resolves differently a moment later (DNS
//! rebinding) cannot slip past.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use url::{Host, Url};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host name, lower case, exactly.
    Name(String),
    /// `*.example.com`: the name `example.com`'s subdomains (lower case, no
    /// leading dot), not the name itself.
    Subdomains(String),
    /// An address or a network.
    Net(IpNet),
}

/// Why an entry of the list is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("outbound allow-list entry {entry:?}: {reason}")]
pub struct EntryError {
    pub entry: String,
    pub reason: &'static str,
}

/// Why a URL may not be requested. Each names the URL's host.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("{url}: only http and https URLs can be requested")]
    Scheme { url: String },
    #[error("{url}: the URL has no host")]
    NoHost { url: String },
    #[error("{host} is not on the outbound allow-list (outbound_allow in the config)")]
    NotListed { host: String },
    #[error(
        "{host} resolves to {addr}, a {range} address: list that address or its network in outbound_allow to allow it"
    )]
    Private {
        host: String,
        addr: IpAddr,
        range: &'static str,
    },
    #[error("{host} could not be resolved: {reason}")]
    Unresolved { host: String, reason: String },
}

/// The operator's list of hosts and networks Herald may request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Reads the configured entries; an empty list allows nothing.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, EntryError> {
        let entries = entries
            .iter()
            .map(|e| parse_entry(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    /// Checks the URL's scheme and host against the list, before any lookup:
    /// what `herald validate` can say about a campaign's URL. Returns the host
    /// and port to resolve.
    pub fn check_url(&self, url: &Url) -> Result<(String, u16), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme {
                url: url.to_string(),
            });
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let listed = match url.host() {
            None => {
                return Err(Refusal::NoHost {
                    url: url.to_string(),
                });
            }
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let ok = self.entries.iter().any(|e| match e {
                    Entry::Name(n) => *n == name,
                    Entry::Subdomains(d) => name
                        .strip_suffix(d.as_str())
                        .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                    Entry::Net(_) => false,
                });
                (name, ok)
            }
            Some(Host::Ipv4(a)) => (a.to_string(), self.lists(IpAddr::V4(a))),
            Some(Host::Ipv6(a)) => (a.to_string(), self.lists(IpAddr::V6(a))),
        };
        match listed {
            (host, true) => Ok((host, port)),
            (host, false) => Err(Refusal::NotListed { host }),
        }
    }

    /// Whether a listed network contains `addr`.
    fn lists(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.entries.iter().any(|e| match e {
            Entry::Net(net) => net.contains(&addr),
            _ => false,
        })
    }

    /// Judges one resolved address of `host`.
    pub fn check_addr(&self, host: &str, addr: IpAddr) -> Result<(), Refusal> {
        let plain = canonical(addr);
        match special_range(plain) {
            Some(range) if !self.lists(plain) => Err(Refusal::Private {
                host: host.to_string(),
                addr: plain,
                range,
            }),
            _ => Ok(()),
        }
    }

    /// Checks the URL, resolves its host and checks every address: the
    /// addresses to connect to, all of them allowed. One refused address
    /// refuses the URL (a name that mixes public and private addresses is
    /// not one to trust with either).
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, Refusal> {
        let (host, port) = self.check_url(url)?;
        let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(addr) => vec![SocketAddr::new(addr, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Refusal::Unresolved {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        if found.is_empty() {
            return Err(Refusal::Unresolved {
                host,
                reason: "no address".into(),
            });
        }
        for a in &found {
            self.check_addr(&host, a.ip())?;
        }
        Ok(found)
    }
}

fn parse_entry(text: &str) -> Result<Entry, EntryError> {
    let err = |reason| EntryError {
        entry: text.to_string(),
        reason,
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(err("empty"));
    }
    if t.contains("://") || t.contains('/') && t.parse::<IpNet>().is_err() {
        return Err(err(
            "write a host name, *.domain, an address or a network (a.b.c.d/n), not a URL",
        ));
    }
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(Entry::Net(net.trunc()));
    }
    let bare = t.trim_start_matches('[').trim_end_matches(']');
    if let Ok(addr) = bare.parse::<IpAddr>() {
        return Ok(Entry::Net(IpNet::from(canonical(addr))));
    }
    let (wild, name) = match t.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match Host::parse(&name) {
        Ok(Host::Domain(_)) if !name.contains('*') => {}
        _ => return Err(err("not a valid host name")),
    }
    Ok(if wild {
        Entry::Subdomains(name)
    } else {
        Entry::Name(name)
    })
}

/// An IPv4 address inside IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The kind of non-public range `addr` is in, if any.
fn special_range(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [b0, b1, ..] = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if b0 == 100 && (64..128).contains(&b1) {
        Some("shared (carrier-grade NAT)")
    } else if b0 == 0 {
        Some("unspecified")
    } else if a.is_multicast() || b0 >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let first = a.segments()[0];
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_multicast() {
        Some("multicast")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).unwrap()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn names_subdomains_and_networks_are_listed_as_written() {
        let l = list(&[
            "hooks.example.com",
            "*.crm.example",
            "127.0.0.1",
            "10.1.0.0/16",
        ]);
        assert_eq!(
            l.check_url(&url("https://HOOKS.example.com./x")),
            Ok(("hooks.example.com".into(), 443))
        );
        assert_eq!(
            l.check_url(&url("http://eu.crm.example:8080/in")),
            Ok(("eu.crm.example".into(), 8080))
        );
        assert_eq!(
            l.check_url(&url("http://crm.example/")),
            Err(Refusal::NotListed {
                host: "crm.example".into()
            }),
            "*.crm.example lists the subdomains, not the name"
        );
        assert_eq!(
            l.check_url(&url("http://evilcrm.example/")),
            Err(Refusal::NotListed {
                host: "evilcrm.example".into()
            })
        );
        assert_eq!(
            l.check_url(&url("http://hooks.example.com.attacker.net/")),
            Err(Refusal::NotListed {
                host: "hooks.example.com.attacker.net".into()
            })
        );
        assert!(l.check_url(&url("http://127.0.0.1:9000/hook")).is_ok());
        assert!(l.check_url(&url("http://10.1.200.3/")).is_ok());
        assert!(l.check_url(&url("http://10.2.0.1/")).is_err());
        assert_eq!(
            l.check_url(&url("ftp://hooks.example.com/")),
            Err(Refusal::Scheme {
                url: "ftp://hooks.example.com/".into()
            })
        );
        assert!(
            AllowList::default()
                .check_url(&url("https://example.com/"))
                .is_err()
        );
    }

    #[test]
    fn private_addresses_need_their_network_listed() {
        let l = list(&["hooks.example.com"]);
        for (addr, range) in [
            ("127.0.0.1", "loopback"),
            ("10.0.0.5", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast or reserved"),
            ("::1", "loopback"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            let a: IpAddr = addr.parse().unwrap();
            match l.check_addr("hooks.example.com", a) {
                Err(Refusal::Private { range: r, .. }) => assert_eq!(r, range, "{addr}"),
                other => panic!("{addr}: {other:?}"),
            }
        }
        assert!(
            l.check_addr("hooks.example.com", "93.184.215.14".parse().unwrap())
                .is_ok()
        );
        assert!(
            l.check_addr(
                "hooks.example.com",
                "2606:2800:21f:cb07::1".parse().unwrap()
            )
            .is_ok()
        );
        let with_loopback = list(&["hooks.example.com", "127.0.0.1"]);
        assert!(
            with_loopback
                .check_addr("hooks.example.com", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            with_loopback
                .check_addr("x", "::ffff:127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            with_loopback
                .check_addr("x", "127.0.0.2".parse().unwrap())
                .is_err()
        );
        let err = l
            .check_addr("hooks.example.com", "169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "hooks.example.com resolves to 169.254.169.254, a link-local address: list that address or its network in outbound_allow to allow it"
        );
    }

    #[tokio::test]
    async fn resolve_checks_every_address_a_name_has() {
        // localhost resolves to loopback addresses: listed by name only, refused.
        let by_name = list(&["localhost"]);
        match by_name.resolve(&url("http://localhost:9/")).await {
            Err(Refusal::Private {
                range: "loopback",
                host,
                ..
            }) => assert_eq!(host, "localhost"),
            other => panic!("{other:?}"),
        }
        let with_nets = list(&["localhost", "127.0.0.0/8", "::1"]);
        let found = with_nets
            .resolve(&url("http://localhost:9/"))
            .await
            .unwrap();
        assert!(!found.is_empty());
        assert!(found.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        let literal = list(&["127.0.0.1"])
            .resolve(&url("http://127.0.0.1:8025/"))
            .await
            .unwrap();
        assert_eq!(literal, vec!["127.0.0.1:8025".parse().unwrap()]);
    }

    #[test]
    fn bad_entries_are_named() {
        for (entry, reason) in [
            ("", "empty"),
            (
                "https://hooks.example.com/in",
                "write a host name, *.domain, an address or a network (a.b.c.d/n), not a URL",
            ),
            (
                "hooks.example.com/in",
                "write a host name, *.domain, an address or a network (a.b.c.d/n), not a URL",
            ),
            ("hooks example", "not a valid host name"),
            ("*.*.example.com", "not a valid host name"),
        ] {
            let err = AllowList::parse(&[entry]).unwrap_err();
            assert_eq!(err.reason, reason, "{entry:?}");
            assert_eq!(err.entry, entry);
        }
        assert_eq!(
            AllowList::parse(&["10.1.2.3/16"]).unwrap(),
            AllowList::parse(&["10.1.0.0/16"]).unwrap()
        );
        assert_eq!(
            AllowList::parse(&["[::1]"]).unwrap(),
            AllowList::parse(&["::1"]).unwrap()
        );
    }
}
