//! URI syntax and matching. Syntax per the WAMP spec's "loose" rule: dot-separated components, none empty, none
//! containing whitespace or `#`. The strict rule (lowercase letters, digits, `_`) is only a
//! recommendation for applications, so the router accepts what the loose rule allows, as Crossbar
//! does by default.

/// True when `uri` is a valid loose URI with no empty components.
pub fn is_valid(uri: &str) -> bool {
    !uri.is_empty() && uri.split('.').all(|c| !c.is_empty() && !c.chars().any(|ch| ch.is_whitespace() || ch == '#'))
}

/// True when `uri` is in the `wamp.` namespace that only the router may register or publish in.
pub fn is_reserved(uri: &str) -> bool {
    uri.starts_with("wamp.")
}

/// How a registration or subscription matches URIs (`Options.match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchPolicy {
    /// The URI equals the registered one.
    Exact,
    /// The URI starts with the registered one (a string prefix).
    Prefix,
    /// Same number of components, and every non-empty component of the pattern is equal.
    Wildcard,
}

impl MatchPolicy {
    /// Reads `Options.match`; absent means exact.
    pub fn from_option(value: Option<&crate::wire::Value>) -> Result<Self, String> {
        let Some(value) = value else { return Ok(MatchPolicy::Exact) };
        match value.as_str() {
            Some("exact") => Ok(MatchPolicy::Exact),
            Some("prefix") => Ok(MatchPolicy::Prefix),
            Some("wildcard") => Ok(MatchPolicy::Wildcard),
            _ => Err(format!("unknown match policy {} (expected exact, prefix or wildcard)", value.describe())),
        }
    }

    /// The policy's name as `Options.match` spells it.
    pub fn name(self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard => "wildcard",
        }
    }

    /// The policy's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard => "wildcard",
        }
    }

    /// True when `uri` is a valid registration or subscription URI under this policy (wildcard
    /// patterns may have empty components).
    pub fn accepts(self, uri: &str) -> bool {
        match self {
            MatchPolicy::Exact | MatchPolicy::Prefix => is_valid(uri),
            MatchPolicy::Wildcard => {
                !uri.is_empty() && uri.split('.').all(|c| !c.chars().any(|ch| ch.is_whitespace() || ch == '#'))
            }
        }
    }
}

/// True when `uri` matches the wildcard `pattern` (empty components match any one component).
pub fn wildcard_matches(pattern: &str, uri: &str) -> bool {
    let mut parts = uri.split('.');
    for part in pattern.split('.') {
        match parts.next() {
            Some(p) if part.is_empty() || part == p => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// True when `pattern`'s components are the first components of `uri` (`a1.b2` matches `a1.b2`
/// and `a1.b2.c3`, not `a1.b22`). Prefix registrations match this way: the spec's selection
/// examples require it (a call to `a1.b2.c33.d4.e5` has no prefix match with `a1.b2.c3`), although
/// its introduction also shows a bare string prefix; subscriptions keep the string prefix.
pub fn component_prefix_matches(pattern: &str, uri: &str) -> bool {
    uri.strip_prefix(pattern).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// How specific a prefix pattern is: its number of URI components (the spec's "longest prefix").
pub fn prefix_rank(pattern: &str) -> usize {
    pattern.split('.').count()
}

/// How specific a wildcard pattern is: the lengths of its runs of concrete components, left to
/// right, compared in order — `a1.b2..d4` ranks `[2, 1]`, above `a1...d4` at `[1, 0, 1]`. The
/// spec's rule for choosing among several matching wildcard registrations.
pub fn wildcard_rank(pattern: &str) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut run = 0;
    for part in pattern.split('.') {
        if part.is_empty() {
            runs.push(run);
            run = 0;
        } else {
            run += 1;
        }
    }
    runs.push(run);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_rule() {
        for ok in ["com.example.add", "a", "com.Example-1.x_y", "ünï.cödé"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a.#", "a\tb"] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(is_reserved("wamp.session.count"));
        assert!(MatchPolicy::Wildcard.accepts("a..b"));
        assert!(!MatchPolicy::Exact.accepts("a..b"));
        let unknown = MatchPolicy::from_option(Some(&crate::wire::Value::from("regex"))).unwrap_err();
        assert_eq!(unknown, r#"unknown match policy "regex" (expected exact, prefix or wildcard)"#);
        let wrong_type = MatchPolicy::from_option(Some(&crate::wire::Value::Int(-1))).unwrap_err();
        assert!(wrong_type.starts_with("unknown match policy -1 "), "{wrong_type}");
        assert!(!is_reserved("wampx.a"));
    }
}

#[cfg(test)]
mod matching {
    use super::*;

    #[test]
    fn wildcards_match_whole_components() {
        assert!(wildcard_matches("com.myapp..update", "com.myapp.foo.update"));
        assert!(!wildcard_matches("com.myapp..update", "com.myapp.foo.bar.update"));
        assert!(!wildcard_matches("com.myapp..update", "com.myapp.update"));
        assert!(wildcard_matches(".a.", "x.a.y"));
    }

    #[test]
    fn the_specs_selection_examples_rank_as_it_says() {
        assert!(prefix_rank("a1.b2.c3.d4") > prefix_rank("a1.b2.c3"));
        assert!(component_prefix_matches("a1.b2.c3", "a1.b2.c3.d98.e74"));
        assert!(component_prefix_matches("a1.b2.c3", "a1.b2.c3"));
        assert!(!component_prefix_matches("a1.b2.c3", "a1.b2.c33.d4.e5"));
        assert!(wildcard_rank("a1.b2.c33..e5") > wildcard_rank("a1.b2..d4.e5"));
        assert!(wildcard_rank("a1.b2..d4.e5..g7") > wildcard_rank("a1.b2..d4..f6.g7"));
        assert!(wildcard_rank("a1.b2..d4") > wildcard_rank("a1...d4"));
    }
}
