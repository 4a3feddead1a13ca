//! The WebSocket `Origin` check of a listener: which web pages may open a WebSocket to it.
//!
//! Browsers send `Origin` with every WebSocket handshake and let any page connect anywhere, so
//! without a check any page a user visits could talk to a router on their network. Clients that
//! are not browsers send no `Origin`, and are always accepted.
//!
//! - With no `allowed_origins` (the default), a loopback listener accepts loopback origins
//!   (`http(s)://localhost`, `127.x.x.x`, `[::1]`, any port) and nothing else; any other listener
//!   accepts no origin at all.
//! - With a list, exactly the origins it names are accepted, nothing else. An entry is `*` (any
//!   origin), an exact origin `scheme://host[:port]` (compared case-insensitively; the port must
//!   match as written), or `scheme://*.domain[:port]`, which accepts any subdomain of `domain`
//!   (not `domain` itself). The opaque origin `null` (sandboxed pages, `file:` URLs) is accepted
//!   only by `*`.

use std::net::{IpAddr, SocketAddr};

/// Which origins a listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    patterns: Vec<Pattern>,
    loopback_listener: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    /// `scheme://*.suffix[:port]`: `suffix` holds the leading dot.
    Subdomains {
        scheme: String,
        suffix: String,
        port: String,
    },
}

/// An origin split into its parts, lowercased: `scheme`, `host`, `port` (with its colon, or empty).
struct Origin {
    scheme: String,
    host: String,
    port: String,
}

fn split(origin: &str) -> Option<Origin> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    if scheme.is_empty() || authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    // An IPv6 host is bracketed; its colons are not the port's.
    let port_at = match authority.rfind(']') {
        Some(close) => authority[close..].find(':').map(|i| close + i),
        None => authority.find(':'),
    };
    let (host, port) = authority.split_at(port_at.unwrap_or(authority.len()));
    if host.is_empty() || (port.len() == 1) || !port.chars().skip(1).all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(Origin { scheme: scheme.to_owned(), host: host.to_owned(), port: port.to_owned() })
}

impl OriginPolicy {
    /// The policy of a listener bound to `listen` with `allowed_origins` from the config; an
    /// entry that is no origin pattern is an error naming it.
    pub fn new(allowed_origins: &[String], listen: SocketAddr) -> Result<Self, String> {
        let patterns = allowed_origins.iter().map(|entry| parse_pattern(entry)).collect::<Result<_, _>>()?;
        Ok(OriginPolicy { patterns, loopback_listener: listen.ip().is_loopback() })
    }

    /// Whether a handshake with this `Origin` header (if any) is accepted; the error says why not.
    pub fn check(&self, origin: Option<&str>) -> Result<(), String> {
        let Some(origin) = origin else { return Ok(()) };
        let parsed = split(origin);
        let allowed = if self.patterns.is_empty() {
            self.loopback_listener && parsed.as_ref().is_some_and(|o| is_loopback_host(&o.host))
        } else {
            self.patterns.iter().any(|pattern| matches(pattern, origin, parsed.as_ref()))
        };
        if allowed {
            return Ok(());
        }
        Err(if self.patterns.is_empty() && self.loopback_listener {
            format!("origin {origin} is not allowed: this listener accepts only loopback origins unless allowed_origins lists others")
        } else if self.patterns.is_empty() {
            format!("origin {origin} is not allowed: this listener's allowed_origins is empty")
        } else {
            format!("origin {origin} is not in this listener's allowed_origins")
        })
    }
}

fn parse_pattern(entry: &str) -> Result<Pattern, String> {
    if entry.trim() == "*" {
        return Ok(Pattern::Any);
    }
    let bad =
        || format!("allowed_origins entry '{entry}' is not '*', scheme://host[:port] or scheme://*.domain[:port]");
    let Origin { scheme, host, port } = split(entry).ok_or_else(bad)?;
    match host.strip_prefix("*.") {
        Some(domain) if !domain.is_empty() && !domain.contains('*') => {
            Ok(Pattern::Subdomains { scheme, suffix: format!(".{domain}"), port })
        }
        Some(_) => Err(bad()),
        None if host.contains('*') => Err(bad()),
        None => Ok(Pattern::Exact(format!("{scheme}://{host}{port}"))),
    }
}

fn matches(pattern: &Pattern, raw: &str, origin: Option<&Origin>) -> bool {
    match (pattern, origin) {
        (Pattern::Any, _) => true,
        (Pattern::Exact(exact), Some(o)) => *exact == format!("{}://{}{}", o.scheme, o.host, o.port),
        (Pattern::Exact(exact), None) => exact.eq_ignore_ascii_case(raw.trim()),
        (Pattern::Subdomains { scheme, suffix, port }, Some(o)) => {
            o.scheme == *scheme && o.port == *port && o.host.len() > suffix.len() && o.host.ends_with(suffix.as_str())
        }
        (Pattern::Subdomains { .. }, None) => false,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str], listen: &str) -> OriginPolicy {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        OriginPolicy::new(&list, listen.parse().unwrap()).unwrap()
    }

    #[test]
    fn by_default_loopback_listeners_take_loopback_origins_and_no_origin() {
        let local = policy(&[], "127.0.0.1:8080");
        for ok in [None, Some("http://localhost:3000"), Some("https://127.0.0.1"), Some("http://[::1]:8080")] {
            assert!(local.check(ok).is_ok(), "{ok:?}");
        }
        for refused in ["https://evil.example", "http://localhost.evil.example", "null", "http://10.0.0.1"] {
            assert!(local.check(Some(refused)).is_err(), "{refused}");
        }
        let public = policy(&[], "0.0.0.0:8080");
        assert!(public.check(None).is_ok());
        assert!(public.check(Some("http://localhost:3000")).is_err());
    }

    #[test]
    fn a_list_names_exact_origins_and_subdomain_patterns() {
        let list = policy(&["https://app.example.com", "https://*.example.org", "http://dev.local:3000"], "0.0.0.0:1");
        for ok in
            ["https://app.example.com", "HTTPS://App.Example.com", "https://a.example.org", "https://a.b.example.org"]
        {
            assert!(list.check(Some(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://example.org",
            "https://evilexample.org",
            "https://a.example.org:444",
            "http://dev.local",
            "http://localhost",
        ] {
            assert!(list.check(Some(refused)).is_err(), "{refused}");
        }
        let any = policy(&["*"], "0.0.0.0:1");
        assert!(any.check(Some("https://anything.example")).is_ok());
        assert!(any.check(Some("null")).is_ok(), "only * takes the opaque origin");
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in
            ["null", "example.com", "https://", "https://a.*.com", "https://*.", "https://x.com/path", "https://x.com:"]
        {
            assert!(OriginPolicy::new(&[bad.to_owned()], "0.0.0.0:1".parse().unwrap()).is_err(), "{bad}");
        }
    }
}
