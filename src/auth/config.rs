//! The security part of a realm's configuration, as it is written in the TOML file: who may join
//! (anonymous sessions, principals and their credentials) and what each role may do. Parsed here,
//! checked and compiled by [`super::RealmAuth::compile`].

use serde::Deserialize;

/// A principal: an `authid`, the role it gets, and the credentials it may log in with. A
/// principal may have several; which one is used follows the client's `HELLO.Details.authmethods`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The `authid` the client names in HELLO.
    pub authid: String,
    /// The role (`[[realm.role]]`) the session gets.
    pub role: String,
    /// `ticket`: an Argon2id or PBKDF2-SHA256 hash of the ticket in PHC form, as printed by
    /// `roundhouse hash-secret`. Never the ticket itself.
    #[serde(default)]
    pub ticket: Option<String>,
    /// `wampcra`: the shared secret, or the key derived from it (salted WAMP-CRA).
    #[serde(default)]
    pub wampcra: Option<WampcraConfig>,
    /// `cryptosign`: the principal's Ed25519 public keys, 64 hex digits each.
    #[serde(default)]
    pub cryptosign: Vec<String>,
    /// `tls`: the subject common name of the client certificates (verified by a listener's
    /// `client_ca`) that log in as this principal.
    #[serde(default)]
    pub tls_cn: Option<String>,
    /// `tls`: the SHA-256 fingerprint (64 hex digits, colons allowed) of a client certificate
    /// that logs in as this principal. Checked before `tls_cn`.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    /// `wamp-scram`: the stored keys (never the password), as `roundhouse hash-secret --method
    /// wamp-scram` prints them.
    #[serde(default)]
    pub scram: Option<ScramConfig>,
}

/// A principal's WAMP-SCRAM credential: what the spec's server stores. The password itself is
/// not needed: `stored_key` lets the router check the client's proof, `server_key` lets it prove
/// itself to the client.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScramConfig {
    /// The key derivation function: `argon2id13` or `pbkdf2` (PBKDF2-HMAC-SHA256).
    pub kdf: String,
    /// The per-principal salt, base64.
    pub salt: String,
    /// The KDF's iterations (Argon2id: passes).
    pub iterations: u32,
    /// Argon2id's memory cost in KiB; absent for `pbkdf2`.
    #[serde(default)]
    pub memory: Option<u32>,
    /// base64 of StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: String,
    /// base64 of ServerKey = HMAC(SaltedPassword, "Server Key").
    pub server_key: String,
}

/// `[realm.authenticator]`: the procedure that supplies principals the config does not list (a
/// dynamic authenticator). It is an ordinary registration: a trusted session registers it (its
/// role needs the `register` permission on the URI) in `realm`, and the router calls it during
/// the handshake, as an internal caller, with `(realm, authid, authmethod, details)`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorConfig {
    /// The procedure's URI.
    pub procedure: String,
    /// The realm it is registered in; default: the realm being joined.
    #[serde(default)]
    pub realm: Option<String>,
    /// The methods it answers for (default all it can: `ticket`, `wampcra`, `cryptosign`,
    /// `wamp-scram`). Principals listed in the config are still found first.
    #[serde(default = "dynamic_methods")]
    pub methods: Vec<String>,
}

/// The methods a dynamic authenticator can answer for.
pub const DYNAMIC_METHODS: &[&str] = &["ticket", "wampcra", "cryptosign", "wamp-scram"];

/// Every method a realm may offer, in the order the router names them.
pub const METHODS: &[&str] = &["anonymous", "ticket", "wampcra", "cryptosign", "wamp-scram", "tls"];

fn dynamic_methods() -> Vec<String> {
    DYNAMIC_METHODS.iter().map(|m| (*m).to_owned()).collect()
}

/// The WAMP-CRA secret of a principal. WAMP-CRA signs with the secret itself, so the router must
/// hold something secret-equivalent: either `secret`, or (salted WAMP-CRA) `derived_key` with the
/// `salt`, `iterations` and `keylen` it was derived with, which keeps the password itself off
/// the router. `roundhouse hash-secret --method wampcra` prints the salted form.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WampcraConfig {
    /// The plain shared secret (unsalted WAMP-CRA).
    #[serde(default)]
    pub secret: Option<String>,
    /// The base64 text of PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen) (salted WAMP-CRA).
    #[serde(default)]
    pub derived_key: Option<String>,
    /// The salt, used as its UTF-8 bytes.
    #[serde(default)]
    pub salt: Option<String>,
    /// PBKDF2 iterations.
    #[serde(default)]
    pub iterations: Option<u32>,
    /// Derived key length in bytes.
    #[serde(default)]
    pub keylen: Option<u32>,
}

/// A role: a name and its permissions.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The role's name (`authrole` in WELCOME).
    pub name: String,
    /// Its rules; the most specific rule matching a URI decides, no rule means deny.
    #[serde(default)]
    pub permissions: Vec<RuleConfig>,
}

/// One permission rule: what a role may do on the URIs a pattern matches.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The URI or pattern.
    pub uri: String,
    /// How `uri` matches (default `exact`).
    #[serde(default, rename = "match")]
    pub policy: RuleMatch,
    /// The actions allowed; everything else is denied on the URIs this rule wins for.
    #[serde(default)]
    pub allow: Vec<Action>,
    /// Whose identity the router discloses even when the client did not ask.
    #[serde(default)]
    pub disclose: Vec<Disclose>,
}

/// How a rule's URI matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMatch {
    /// The URI itself.
    #[default]
    Exact,
    /// Every URI that starts with the string (`com.app.` covers `com.app.add`; `""` covers all).
    Prefix,
    /// Empty components match any one component (`com..get` covers `com.users.get`).
    Wildcard,
}

/// Something a session asks the router to do with a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// CALL.
    Call,
    /// REGISTER.
    Register,
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
}

/// Whose identity a rule discloses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Disclose {
    /// The caller's, in INVOCATION (`caller`, `caller_authid`, `caller_authrole`).
    Caller,
    /// The publisher's, in EVENT (`publisher`, `publisher_authid`, `publisher_authrole`).
    Publisher,
}

/// The role anonymous sessions get unless a realm says otherwise.
pub const ANONYMOUS_ROLE: &str = "anonymous";

/// The roles of a realm that configures none: `anonymous`, which may call, register, publish and
/// subscribe on every URI, but not use the meta API's admin procedures (those need a rule that
/// names a `wamp.` URI, see [`super::permissions`]).
pub fn default_roles() -> Vec<RoleConfig> {
    vec![RoleConfig {
        name: ANONYMOUS_ROLE.to_owned(),
        permissions: vec![RuleConfig {
            uri: String::new(),
            policy: RuleMatch::Prefix,
            allow: vec![Action::Call, Action::Register, Action::Publish, Action::Subscribe],
            disclose: Vec::new(),
        }],
    }]
}
