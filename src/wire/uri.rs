//! URI syntax, per the WAMP spec's "loose" rule: dot-separated components, none empty, none
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
        assert!(!is_reserved("wampx.a"));
    }
}
