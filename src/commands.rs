//! The command line's subcommands besides running the router: `check-config`, which validates a
//! config file and explains what it sets up, and `hash-secret`, which turns a secret into what
//! the config stores for it. `src/main.rs` parses the flags; the work is here, where tests reach it.

use std::fmt::Write as _;
use std::path::Path;

use crate::auth::config::Action;
use crate::auth::ticket::{self, HashKind};
use crate::auth::{scram, wampcra, RealmAuth};
use crate::config::{ConfigError, RouterConfig};

/// Exit code: the config is valid / the secret was hashed.
pub const EXIT_OK: u8 = 0;
/// Exit code: the router failed at run time (cannot bind, no runtime).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the config file cannot be read, is not valid TOML for the schema, or has a value
/// the router cannot run with; also for a bad command line.
pub const EXIT_INVALID: u8 = 2;

/// Validates the config at `path`; `Ok` holds the explanation to print, `Err` the reason.
pub fn check_config(path: &Path) -> Result<String, ConfigError> {
    let config = RouterConfig::from_file(path)?;
    Ok(explain(&config))
}

/// What a valid config sets up, in a few lines a person can check.
pub fn explain(config: &RouterConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "WebSocket: ws://{}{}", config.listen, config.path);
    if config.rawsocket_on_websocket_port {
        let _ = writeln!(out, "RawSocket: also on {}", config.listen);
    }
    if let Some(address) = config.rawsocket_listen {
        let _ = writeln!(out, "RawSocket: {address}");
    }
    if !config.listen.ip().is_loopback() {
        let _ = writeln!(out, "note: the listener is reachable from other hosts; it speaks no TLS");
    }
    for realm in &config.realms {
        let _ = writeln!(out, "realm {}:", realm.name);
        let methods = RealmAuth::compile(realm).map(|auth| auth.methods().join(", ")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  authentication: {}",
            if methods.is_empty() { "none (nobody can join)" } else { methods.as_str() }
        );
        if realm.anonymous {
            let _ = writeln!(out, "  anonymous sessions get role '{}'", realm.anonymous_role);
        }
        if let Some(authenticator) = &realm.authenticator {
            let _ = writeln!(
                out,
                "  authenticator: procedure '{}' in realm '{}' answers for {}",
                authenticator.procedure,
                authenticator.realm.as_deref().unwrap_or(&realm.name),
                authenticator.methods.join(", ")
            );
        }
        if !realm.require_tls.is_empty() {
            let _ = writeln!(out, "  only over TLS: {}", realm.require_tls.join(", "));
        }
        for principal in &realm.principals {
            let mut methods = Vec::new();
            if principal.ticket.is_some() {
                methods.push("ticket");
            }
            if principal.wampcra.is_some() {
                methods.push("wampcra");
            }
            if !principal.cryptosign.is_empty() {
                methods.push("cryptosign");
            }
            if principal.scram.is_some() {
                methods.push("wamp-scram");
            }
            if principal.tls_cn.is_some() || principal.tls_fingerprint.is_some() {
                methods.push("tls");
            }
            let _ =
                writeln!(out, "  principal '{}' (role '{}'): {}", principal.authid, principal.role, methods.join(", "));
        }
        for role in &realm.roles {
            let _ = writeln!(out, "  role '{}': {} rule(s)", role.name, role.permissions.len());
            for rule in &role.permissions {
                let allow: Vec<&str> = rule
                    .allow
                    .iter()
                    .map(|a| match a {
                        Action::Call => "call",
                        Action::Register => "register",
                        Action::Publish => "publish",
                        Action::Subscribe => "subscribe",
                    })
                    .collect();
                let allow = if allow.is_empty() { "nothing (deny)".to_owned() } else { allow.join(", ") };
                let _ = writeln!(out, "    {:?} {:?}: {allow}", rule.uri, rule.policy);
            }
            let admin = crate::auth::permissions::Role::compile(role);
            let admin: Vec<&str> = crate::auth::permissions::ADMIN_PROCEDURES
                .iter()
                .copied()
                .filter(|p| admin.decide(p).allows(Action::Call))
                .collect();
            if !admin.is_empty() {
                let _ = writeln!(out, "    may use admin meta procedures: {}", admin.join(", "));
            }
        }
        for procedure in &realm.procedures {
            let mut sets = Vec::new();
            if let Some(invoke) = &procedure.invoke {
                sets.push(format!("invoke {invoke}"));
            }
            if let Some(rkey) = &procedure.rkey {
                sets.push(format!("key from {rkey}"));
            }
            for (key, value) in [
                ("concurrency", procedure.concurrency),
                ("max_queued_calls", procedure.max_queued_calls),
                ("max_queue_ms", procedure.max_queue_ms),
            ] {
                if let Some(value) = value {
                    sets.push(format!("{key} {value}"));
                }
            }
            let _ = writeln!(
                out,
                "  procedure {:?} {:?}: {} (over what callees ask)",
                procedure.uri,
                procedure.policy,
                sets.join(", ")
            );
        }
    }
    out
}

/// What `hash-secret` produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFor {
    /// A ticket: a PHC string for `ticket = "..."`.
    Ticket(HashKind),
    /// A salted WAMP-CRA key: an inline table for `wampcra = {...}`.
    Wampcra,
    /// A WAMP-SCRAM credential (stored and server keys): an inline table for `scram = {...}`.
    Scram(HashKind),
}

/// The config value that stores `secret` (never the secret itself, for tickets).
pub fn hash_secret(secret: &str, kind: SecretFor) -> Result<String, String> {
    match kind {
        SecretFor::Ticket(kind) => Ok(format!("ticket = \"{}\"", ticket::hash(secret.as_bytes(), kind)?)),
        SecretFor::Wampcra => {
            let salt = hex::encode(crate::auth::random::<16>()?);
            let (iterations, keylen) = (100_000, 32);
            let key = wampcra::derive_key(secret.as_bytes(), &salt, iterations, keylen);
            Ok(format!(
                "wampcra = {{ derived_key = \"{key}\", salt = \"{salt}\", iterations = {iterations}, keylen = {keylen} }}"
            ))
        }
        SecretFor::Scram(kind) => {
            let salt = crate::auth::random::<16>()?;
            let (kdf, iterations) = match kind {
                HashKind::Argon2id => (scram::Kdf::Argon2id13 { memory: ticket::ARGON2_M_KIB }, ticket::ARGON2_T),
                HashKind::Pbkdf2 => (scram::Kdf::Pbkdf2, ticket::PBKDF2_ITERATIONS),
            };
            let c = scram::derive(secret.as_bytes(), &salt, kdf, iterations)?;
            let memory = c.memory.map_or(String::new(), |m| format!(", memory = {m}"));
            Ok(format!(
                "scram = {{ kdf = \"{}\", salt = \"{}\", iterations = {}{memory}, stored_key = \"{}\", server_key = \"{}\" }}",
                c.kdf, c.salt, c.iterations, c.stored_key, c.server_key
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::WampcraConfig;

    #[test]
    fn hashed_secrets_load_as_principals() {
        for kind in [SecretFor::Ticket(HashKind::Pbkdf2), SecretFor::Wampcra, SecretFor::Scram(HashKind::Pbkdf2)] {
            let line = hash_secret("s3cret", kind).unwrap();
            assert!(!line.contains("s3cret"));
            let toml =
                format!("[[realm]]\nname = \"r\"\n[[realm.principal]]\nauthid = \"a\"\nrole = \"anonymous\"\n{line}\n");
            let config: RouterConfig = toml::from_str(&toml).unwrap();
            config.validate().unwrap();
            if let Some(WampcraConfig { derived_key: Some(key), salt: Some(salt), .. }) =
                &config.realms[0].principals[0].wampcra
            {
                assert_eq!(*key, wampcra::derive_key(b"s3cret", salt, 100_000, 32));
            }
            if let Some(credential) = &config.realms[0].principals[0].scram {
                let salt =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &credential.salt).unwrap();
                let again = scram::derive(b"s3cret", &salt, scram::Kdf::Pbkdf2, credential.iterations).unwrap();
                assert_eq!(&again, credential);
            }
        }
    }

    #[test]
    fn the_example_config_is_explained() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("roundhouse.toml");
        let text = check_config(&path).unwrap();
        assert!(text.contains("realm realm1:"), "{text}");
        assert!(text.contains("anonymous sessions get role 'anonymous'"), "{text}");
        assert!(!text.contains("admin meta"), "the default grants the admin procedures to nobody: {text}");
    }
}
