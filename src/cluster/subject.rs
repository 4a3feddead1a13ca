//! NATS subjects for WAMP topics and realms: a reversible escaping of URI components into subject
//! tokens, and the subject pattern (plus local filter) a WAMP subscription listens on.
//!
//! NATS splits subjects at `.`, gives `*` and `>` a meaning, forbids whitespace and reserves a
//! leading `$`; WAMP loose URIs allow all of those inside a component. So a component made only
//! of `[A-Za-z0-9_-]` is its own token, and any other component (empty ones included) becomes
//! `~` followed by the URL-safe base64 of its bytes. A literal token never holds `~`, so the
//! mapping is injective and distinct topics never share a subject. One WAMP component is always
//! one NATS token, which is what lets a wildcard subscription's empty component be NATS's `*`.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::wire::uri::MatchPolicy;

/// Marks an escaped token; never part of a literal one.
const ESCAPE: char = '~';

fn is_literal(component: &str) -> bool {
    !component.is_empty() && component.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The NATS token for one URI component (or a whole realm name).
pub fn escape(component: &str) -> Cow<'_, str> {
    if is_literal(component) {
        Cow::Borrowed(component)
    } else {
        let mut token = String::with_capacity(1 + component.len().div_ceil(3) * 4);
        token.push(ESCAPE);
        URL_SAFE_NO_PAD.encode_string(component.as_bytes(), &mut token);
        Cow::Owned(token)
    }
}

/// The component a token stands for; `None` for something [`escape`] never makes.
pub fn unescape(token: &str) -> Option<Cow<'_, str>> {
    match token.strip_prefix(ESCAPE) {
        Some(encoded) => {
            let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
            let component = String::from_utf8(bytes).ok()?;
            // Only one spelling per component: a literal-safe one escaped is not ours.
            (!is_literal(&component)).then_some(Cow::Owned(component))
        }
        None => is_literal(token).then_some(Cow::Borrowed(token)),
    }
}

/// The tokens of a topic URI, joined by `.`.
pub fn topic_tokens(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len() + 8);
    for (i, component) in topic.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&escape(component));
    }
    out
}

/// The topic URI a token list stands for (the inverse of [`topic_tokens`]).
pub fn topic_from_tokens(tokens: &str) -> Option<String> {
    let mut out = String::with_capacity(tokens.len());
    for (i, token) in tokens.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&unescape(token)?);
    }
    Some(out)
}

/// The subject an event on `topic` in `realm` is published to; `events` is the cluster's event
/// prefix (`rh.<cluster>.ev`).
pub fn event_subject(events: &str, realm: &str, topic: &str) -> String {
    format!("{events}.{}.{}", escape(realm), topic_tokens(topic))
}

/// What one WAMP subscription listens to on NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// The NATS subject or pattern to subscribe.
    pub subject: String,
    /// For a prefix subscription: the string prefix a topic must start with. NATS can only
    /// select whole tokens, and a WAMP prefix may end inside a component (`a.b` matches `a.bc`).
    pub starts_with: Option<String>,
}

impl Interest {
    /// True when an event on `topic` that arrived on [`Interest::subject`] is for this
    /// subscription.
    pub fn admits(&self, topic: &str) -> bool {
        self.starts_with.as_deref().is_none_or(|prefix| topic.starts_with(prefix))
    }
}

/// The NATS interest of a subscription to `uri` with `policy` in `realm`.
///
/// - exact `a.b.c`: the subject itself;
/// - wildcard `a..c`: each empty component is `*` (exactly one token, as a WAMP empty component
///   is exactly one component);
/// - prefix `a.b`: the tokens of every component but the last, then `>`, filtered by
///   `starts_with("a.b")`. A topic starting with `a.b` has `a` as its first component and at
///   least one more, so `a.>` never misses one; no separate exact subject is needed.
pub fn interest(events: &str, realm: &str, policy: MatchPolicy, uri: &str) -> Interest {
    let base = format!("{events}.{}", escape(realm));
    match policy {
        MatchPolicy::Exact => Interest { subject: format!("{base}.{}", topic_tokens(uri)), starts_with: None },
        MatchPolicy::Wildcard => {
            let mut subject = base;
            for component in uri.split('.') {
                subject.push('.');
                let token = if component.is_empty() { Cow::Borrowed("*") } else { escape(component) };
                subject.push_str(&token);
            }
            Interest { subject, starts_with: None }
        }
        MatchPolicy::Prefix => {
            let mut subject = base;
            let components: Vec<&str> = uri.split('.').collect();
            for component in &components[..components.len() - 1] {
                subject.push('.');
                subject.push_str(&escape(component));
            }
            subject.push_str(".>");
            Interest { subject, starts_with: Some(uri.to_owned()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// NATS subject matching, as the server does it, to check our patterns against.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), subject.split('.').collect());
        for (i, token) in p.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if i < s.len() && s[i] == t => {}
                _ => return false,
            }
        }
        p.len() == s.len()
    }

    fn wamp_matches(policy: MatchPolicy, uri: &str, topic: &str) -> bool {
        match policy {
            MatchPolicy::Exact => uri == topic,
            MatchPolicy::Prefix => topic.starts_with(uri),
            MatchPolicy::Wildcard => {
                let (u, t): (Vec<&str>, Vec<&str>) = (uri.split('.').collect(), topic.split('.').collect());
                u.len() == t.len() && u.iter().zip(&t).all(|(u, t)| u.is_empty() || u == t)
            }
        }
    }

    fn valid_token(token: &str) -> bool {
        !token.is_empty()
            && !token.starts_with('$')
            && !token.contains(['.', '*', '>', ' ', '\t', '\r', '\n'])
            && token.is_ascii()
    }

    #[test]
    fn plain_components_stay_readable() {
        assert_eq!(topic_tokens("com.myapp.topic_1-x"), "com.myapp.topic_1-x");
        assert_eq!(event_subject("rh.c.ev", "realm1", "a.b"), "rh.c.ev.realm1.a.b");
        assert_eq!(escape("com.example"), "~Y29tLmV4YW1wbGU");
    }

    #[test]
    fn special_components_are_escaped_and_distinct() {
        for component in ["*", ">", "$SYS", "a b", "~", "", "é", "a~b", "x\ty"] {
            let token = escape(component).into_owned();
            assert!(valid_token(&token), "{component:?} -> {token:?}");
            assert_eq!(unescape(&token).map(Cow::into_owned).as_deref(), Some(component));
        }
        assert_ne!(escape("*"), escape(">"));
        assert_eq!(unescape("~YQ"), None, "'a' has one spelling only");
        assert_eq!(unescape("a*b"), None);
    }

    #[test]
    fn prefix_ends_inside_a_component() {
        let i = interest("rh.c.ev", "r", MatchPolicy::Prefix, "a.b");
        assert_eq!(i.subject, "rh.c.ev.r.a.>");
        for topic in ["a.b", "a.bc", "a.b.x", "a.b-low"] {
            assert!(nats_matches(&i.subject, &event_subject("rh.c.ev", "r", topic)) && i.admits(topic), "{topic}");
        }
        assert!(!i.admits("a.c"));
        let one = interest("rh.c.ev", "r", MatchPolicy::Prefix, "a");
        assert_eq!(one.subject, "rh.c.ev.r.>");
        let w = interest("rh.c.ev", "r", MatchPolicy::Wildcard, "a..c");
        assert_eq!(w.subject, "rh.c.ev.r.a.*.c");
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{1,3}",
            "[a-c*>$~ é_-]{1,4}",
            Just("*".to_owned()),
            Just(">".to_owned()),
            Just("a".to_owned()),
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(component(), 1..5).prop_map(|c| c.join("."))
    }

    fn pattern() -> impl Strategy<Value = (MatchPolicy, String)> {
        let parts = prop::collection::vec(prop_oneof![component(), Just(String::new())], 1..5);
        (prop_oneof![Just(MatchPolicy::Exact), Just(MatchPolicy::Prefix), Just(MatchPolicy::Wildcard)], parts)
            .prop_map(|(policy, parts)| (policy, parts.join(".")))
    }

    proptest! {
        #[test]
        fn tokens_round_trip(topic in topic(), realm in "[a-z.*~]{1,8}") {
            let tokens = topic_tokens(&topic);
            prop_assert!(tokens.split('.').all(valid_token), "{tokens}");
            prop_assert_eq!(topic_from_tokens(&tokens), Some(topic.clone()));
            let token = escape(&realm).into_owned();
            prop_assert_eq!(unescape(&token).map(Cow::into_owned), Some(realm.clone()));
        }

        #[test]
        fn distinct_topics_get_distinct_subjects(a in topic(), b in topic()) {
            prop_assert_eq!(a == b, topic_tokens(&a) == topic_tokens(&b));
        }

        #[test]
        fn interest_selects_exactly_the_matching_topics((policy, uri) in pattern(), topic in topic()) {
            let interest = interest("rh.c.ev", "r", policy, &uri);
            let subject = event_subject("rh.c.ev", "r", &topic);
            let delivered = nats_matches(&interest.subject, &subject) && interest.admits(&topic);
            prop_assert_eq!(delivered, wamp_matches(policy, &uri, &topic), "{:?} {} {}", policy, uri, topic);
        }
    }
}
