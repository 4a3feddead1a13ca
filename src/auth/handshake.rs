//! The authentication exchange of the spec: HELLO names the methods the client offers
//! (`authmethods`, default `["anonymous"]`), its `authid` and `authextra`; the router takes the
//! first offered method this realm can use for that client, and either welcomes it at once
//! (`anonymous`, `tls`) or sends a CHALLENGE and waits for AUTHENTICATE. A principal the config
//! does not list may be asked of the realm's dynamic authenticator ([`super::dynamic`]): at HELLO
//! for `wampcra`, `cryptosign` and `wamp-scram` (its answer holds the credential to challenge
//! with), at AUTHENTICATE for `ticket` (it checks the ticket itself).
//!
//! A method the realm offers over TLS only (`require_tls`) is skipped on a plain connection.
//!
//! Refusals are ABORTs with the spec's URIs:
//!
//! | case | URI |
//! |---|---|
//! | no offered method is one this realm can use for the client | `wamp.error.no_matching_auth_method` |
//! | the authid, cryptosign key or client certificate names no principal | `wamp.error.no_such_principal` |
//! | wrong ticket, signature, proof or key | `wamp.error.authentication_denied` |
//! | the check could not run (no randomness, authenticator missing, failing or late) | `wamp.error.authentication_failed` |
//!
//! The caller ([`crate::session::protocol`]) logs each refusal with the peer's address and the
//! authid; nothing here puts a secret, a signature or a ticket into a reason.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use super::dynamic::{self, Answer, Question};
use super::permissions::Role;
use super::{cryptosign, random, scram, ticket, wampcra, RealmAuth};
use crate::error::{Refusal, WampError};
use crate::realm::Realm;
use crate::router::RouterShared;
use crate::session::SessionHandle;
use crate::wire::{Dict, Message, Value};

/// Who a session is once admitted.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// `authid`.
    pub authid: String,
    /// The role; its name is `authrole`.
    pub role: Arc<Role>,
    /// `authmethod`.
    pub authmethod: &'static str,
    /// `authprovider`: where the principal came from (`static`: the config; `dynamic`: the
    /// realm's authenticator).
    pub authprovider: &'static str,
    /// `WELCOME.Details.authextra`, if any (the SCRAM verifier, an authenticator's extra).
    pub authextra: Option<Dict>,
}

/// What the router does with a HELLO.
pub enum Hello {
    /// WELCOME now.
    Welcome(Admitted),
    /// Send this CHALLENGE and wait for AUTHENTICATE.
    Challenge(Message, Box<Pending>),
    /// Ask the dynamic authenticator first ([`consult`]).
    Ask(Box<Asking>),
    /// ABORT.
    Refused(Refusal),
}

/// A HELLO waiting for the dynamic authenticator's answer.
pub struct Asking {
    question: Question,
    /// HELLO's `authextra` (the cryptosign key, the SCRAM nonce).
    authextra: Option<Dict>,
    /// The cryptosign key HELLO named.
    pubkey: Option<VerifyingKey>,
    /// The cryptosign channel binding agreed for this connection, if any.
    binding: Option<[u8; 32]>,
}

/// A CHALLENGE sent and not answered yet.
pub struct Pending {
    authid: String,
    /// `None` until the authenticator answers (dynamic `ticket`).
    role: Option<Arc<Role>>,
    authprovider: &'static str,
    authextra: Option<Dict>,
    check: Check,
}

enum Check {
    Ticket(ticket::TicketHash),
    /// The authenticator checks the ticket.
    DynamicTicket(Box<Question>),
    Wampcra {
        key: wampcra::CraKey,
        challenge: String,
    },
    Cryptosign {
        key: VerifyingKey,
        challenge: [u8; 32],
    },
    Scram(Box<scram::Exchange>),
}

impl Pending {
    /// The authid being authenticated.
    pub fn authid(&self) -> &str {
        &self.authid
    }

    /// The method being used.
    pub fn method(&self) -> &'static str {
        match self.check {
            Check::Ticket(_) | Check::DynamicTicket(_) => "ticket",
            Check::Wampcra { .. } => "wampcra",
            Check::Cryptosign { .. } => "cryptosign",
            Check::Scram(_) => "wamp-scram",
        }
    }
}

/// Where a HELLO comes from.
pub struct Context<'a> {
    /// The joining session.
    pub session: &'a SessionHandle,
    /// The realm it asks for.
    pub realm: &'a str,
}

/// Why the offered methods found nobody, kept for the ABORT if no later method does better.
#[derive(Default)]
struct Misses {
    /// The first reason a method found no principal.
    unknown: Option<String>,
    /// Methods skipped because they are offered over TLS only.
    tls_only: Vec<&'static str>,
}

/// Chooses a method for a HELLO and starts it.
pub fn hello(auth: &RealmAuth, details: &Dict, ctx: &Context<'_>) -> Hello {
    let offered: Vec<&str> = match details.get("authmethods") {
        Some(Value::List(methods)) if !methods.is_empty() => methods.iter().filter_map(Value::as_str).collect(),
        _ => vec!["anonymous"],
    };
    let authid = details.get("authid").and_then(Value::as_str);
    let authextra = details.get("authextra").and_then(Value::as_dict);
    let mut misses = Misses::default();
    let session = ctx.session.id;
    for method in &offered {
        let Some(method) = super::config::METHODS.iter().copied().find(|m| m == method) else { continue };
        if auth.requires_tls(method) && ctx.session.tls().is_none() {
            misses.tls_only.push(method);
            continue;
        }
        let question = |authenticator: &dynamic::Authenticator| {
            Question::new(authenticator, ctx.realm, method, details, ctx.session)
        };
        let ask = |pubkey: Option<VerifyingKey>| {
            auth.dynamic(method).map(|authenticator| {
                let binding = binding(authextra, ctx);
                let question = question(authenticator);
                Hello::Ask(Box::new(Asking { question, authextra: authextra.cloned(), pubkey, binding }))
            })
        };
        let started = match method {
            "anonymous" => auth.anonymous.as_ref().map(|role| {
                Hello::Welcome(Admitted {
                    authid: format!("anonymous-{session}"),
                    role: role.clone(),
                    authmethod: "anonymous",
                    authprovider: "static",
                    authextra: None,
                })
            }),
            "tls" => admit_tls(auth, authid, ctx, &mut misses),
            "ticket" | "wampcra" | "wamp-scram" => {
                let Some(authid) = authid else {
                    if auth.offers(method) {
                        misses
                            .unknown
                            .get_or_insert_with(|| format!("{method} authentication needs HELLO.Details.authid"));
                    }
                    continue;
                };
                let principal = auth.principals.get(authid);
                let started = match (method, principal) {
                    ("ticket", Some(p)) => p.ticket.as_ref().map(|hash| {
                        let pending = Pending::new(authid, Some(p.role.clone()), Check::Ticket(hash.clone()));
                        challenge(pending, Dict::new())
                    }),
                    ("wampcra", Some(p)) => {
                        p.wampcra.as_ref().map(|key| challenge_wampcra(authid, &p.role, key, session, "static"))
                    }
                    ("wamp-scram", Some(p)) => {
                        p.scram.as_ref().map(|key| challenge_scram(authid, &p.role, key, authextra, "static"))
                    }
                    _ => None,
                };
                match (started, auth.dynamic(method)) {
                    (Some(started), _) => Some(started),
                    // The ticket itself is what the authenticator checks: it is asked at AUTHENTICATE.
                    (None, Some(authenticator)) if method == "ticket" => {
                        let pending = Pending {
                            authid: authid.to_owned(),
                            role: None,
                            authprovider: dynamic::PROVIDER,
                            authextra: None,
                            check: Check::DynamicTicket(Box::new(question(authenticator))),
                        };
                        Some(challenge(pending, Dict::new()))
                    }
                    (None, Some(_)) => ask(None),
                    (None, None) => {
                        if principal.is_none() && auth.offers(method) {
                            misses.unknown.get_or_insert_with(|| format!("no principal '{authid}' in this realm"));
                        }
                        None
                    }
                }
            }
            "cryptosign" => {
                let pubkey = authextra.and_then(|e| e.get("pubkey")).and_then(Value::as_str);
                let offered_key = pubkey.and_then(|k| cryptosign::parse_public_key(k).ok());
                match offered_key {
                    None if auth.offers("cryptosign") => {
                        misses.unknown.get_or_insert_with(|| {
                            "cryptosign authentication needs an Ed25519 key in HELLO.Details.authextra.pubkey"
                                .to_owned()
                        });
                        None
                    }
                    None => None,
                    Some(key) => match static_cryptosign(auth, authid, &key) {
                        Ok(Some(holder)) => {
                            let role = auth.principals.get(holder).map(|p| p.role.clone());
                            role.map(|role| challenge_cryptosign(holder, role, key, "static", binding(authextra, ctx)))
                        }
                        Ok(None) => match ask(Some(key)) {
                            Some(asking) => Some(asking),
                            None => {
                                if !auth.keys.is_empty() {
                                    misses
                                        .unknown
                                        .get_or_insert_with(|| "no principal in this realm holds this key".to_owned());
                                }
                                None
                            }
                        },
                        Err(reason) => {
                            misses.unknown.get_or_insert(reason);
                            None
                        }
                    },
                }
            }
            _ => None,
        };
        if let Some(started) = started {
            return started;
        }
    }
    Hello::Refused(match misses.unknown {
        Some(reason) => Refusal::new(WampError::NoSuchPrincipal, reason),
        None => {
            let methods = auth.methods();
            let available = if methods.is_empty() { "none".to_owned() } else { methods.join(", ") };
            let tls_only = if misses.tls_only.is_empty() {
                String::new()
            } else {
                format!(" ({} only over TLS)", misses.tls_only.join(", "))
            };
            Refusal::new(
                WampError::NoMatchingAuthMethod,
                format!(
                    "none of the offered methods ({}) is accepted here; this realm offers {available}{tls_only}",
                    offered.join(", ")
                ),
            )
        }
    })
}

impl Pending {
    fn new(authid: &str, role: Option<Arc<Role>>, check: Check) -> Self {
        Pending { authid: authid.to_owned(), role, authprovider: "static", authextra: None, check }
    }
}

/// The CHALLENGE for `pending`, with `extra`.
fn challenge(pending: Pending, extra: Dict) -> Hello {
    let message = Message::Challenge { auth_method: pending.method().to_owned(), extra };
    Hello::Challenge(message, Box::new(pending))
}

fn challenge_wampcra(
    authid: &str,
    role: &Arc<Role>,
    key: &wampcra::CraKey,
    session: u64,
    provider: &'static str,
) -> Hello {
    let nonce = match random::<16>() {
        Ok(nonce) => hex::encode(nonce),
        Err(reason) => return Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason)),
    };
    let timestamp = crate::meta::iso8601(std::time::SystemTime::now());
    let text = wampcra::challenge_text(authid, role.name(), provider, session, &nonce, &timestamp);
    let extra = key.challenge_extra(&text);
    let check = Check::Wampcra { key: key.clone(), challenge: text };
    challenge(Pending { authprovider: provider, ..Pending::new(authid, Some(role.clone()), check) }, extra)
}

/// A cryptosign CHALLENGE. With `binding` (the connection's `tls-exporter` value), the client
/// must sign `challenge XOR binding`, so its signature is worth nothing on another connection.
fn challenge_cryptosign(
    authid: &str,
    role: Arc<Role>,
    key: VerifyingKey,
    provider: &'static str,
    binding: Option<[u8; 32]>,
) -> Hello {
    let nonce = match random::<32>() {
        Ok(nonce) => nonce,
        Err(reason) => return Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason)),
    };
    let (signed, kind) = match binding {
        Some(binding) => (std::array::from_fn(|i| nonce[i] ^ binding[i]), Value::from(cryptosign::TLS_EXPORTER)),
        None => (nonce, Value::Null),
    };
    let extra = Dict::new().with("challenge", hex::encode(nonce)).with("channel_binding", kind);
    let check = Check::Cryptosign { key, challenge: signed };
    challenge(Pending { authprovider: provider, ..Pending::new(authid, Some(role), check) }, extra)
}

fn challenge_scram(
    authid: &str,
    role: &Arc<Role>,
    key: &scram::ScramKey,
    hello: Option<&Dict>,
    provider: &'static str,
) -> Hello {
    let nonce = match random::<16>() {
        Ok(nonce) => nonce,
        Err(reason) => return Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason)),
    };
    match key.challenge(authid, hello, &nonce) {
        Ok(mut exchange) => {
            // Sent in the CHALLENGE; AUTHENTICATE is checked against the rest.
            let extra = std::mem::take(&mut exchange.extra);
            let check = Check::Scram(Box::new(exchange));
            challenge(Pending { authprovider: provider, ..Pending::new(authid, Some(role.clone()), check) }, extra)
        }
        Err(reason) => Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason)),
    }
}

/// The channel binding a cryptosign login gets: `tls-exporter` when HELLO asks for it
/// (`authextra.channel_binding`) and the connection has one (TLS 1.3); otherwise none, and the
/// CHALLENGE says `channel_binding: null` (the spec lets the login go on unbound).
fn binding(authextra: Option<&Dict>, ctx: &Context<'_>) -> Option<[u8; 32]> {
    let asked = authextra.and_then(|e| e.get("channel_binding")).and_then(Value::as_str);
    if asked != Some(cryptosign::TLS_EXPORTER) {
        return None;
    }
    ctx.session.tls().and_then(|tls| tls.channel_binding)
}

/// The principal holding `key` among the config's: `Ok(None)` when none does.
fn static_cryptosign<'a>(
    auth: &'a RealmAuth,
    authid: Option<&'a str>,
    key: &VerifyingKey,
) -> Result<Option<&'a str>, String> {
    let holders = auth.keys.get(&key.to_bytes()).map(Vec::as_slice).unwrap_or_default();
    match (authid, holders) {
        (Some(authid), holders) if holders.iter().any(|h| h == authid) => Ok(Some(authid)),
        (None, [only]) => Ok(Some(only.as_str())),
        (None, [_, _, ..]) => Err("several principals hold this key; name the authid".to_owned()),
        _ => Ok(None),
    }
}

/// `tls`: the principal the verified client certificate maps to (fingerprint first, then
/// subject CN); WELCOME at once. Not available on a plain connection.
fn admit_tls(auth: &RealmAuth, authid: Option<&str>, ctx: &Context<'_>, misses: &mut Misses) -> Option<Hello> {
    let connection = ctx.session.tls()?;
    if auth.tls_fingerprints.is_empty() && auth.tls_cns.is_empty() {
        return None;
    }
    let Some(cert) = &connection.client_cert else {
        misses.unknown.get_or_insert_with(|| "tls authentication needs a client certificate".to_owned());
        return None;
    };
    let holder = auth
        .tls_fingerprints
        .get(&cert.fingerprint_sha256)
        .or_else(|| cert.subject_cn.as_ref().and_then(|cn| auth.tls_cns.get(cn)));
    let Some(holder) = holder else {
        misses.unknown.get_or_insert_with(|| "no principal in this realm has this client certificate".to_owned());
        return None;
    };
    if authid.is_some_and(|a| a != holder) {
        let reason = format!("the client certificate belongs to another principal than '{}'", authid.unwrap_or(""));
        return Some(Hello::Refused(Refusal::new(WampError::AuthenticationDenied, reason)));
    }
    let principal = auth.principals.get(holder)?;
    Some(Hello::Welcome(Admitted {
        authid: holder.clone(),
        role: principal.role.clone(),
        authmethod: "tls",
        authprovider: "static",
        authextra: None,
    }))
}

/// Asks the dynamic authenticator about a HELLO and goes on with its answer: the CHALLENGE with
/// the credential it returned, or the ABORT it calls for. The caller bounds the wait.
pub async fn consult(router: &RouterShared, realm: &Realm, asking: Asking, session: u64) -> Hello {
    let Asking { question, authextra, pubkey, binding } = asking;
    let auth = realm.auth.load_full();
    let answer = match dynamic::ask(router, &question, session, |name| auth.role(name).cloned()).await {
        Ok(answer) => answer,
        Err(refusal) => return Hello::Refused(refusal),
    };
    let failed = |reason: &str| {
        let (procedure, authmethod) = (question.authenticator().procedure(), question.authmethod);
        tracing::warn!(procedure, authmethod, reason, "dynamic authentication failed");
        Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason.to_owned()))
    };
    let Some(authid) = answer.authid.clone() else {
        return Hello::Refused(Refusal::new(
            WampError::NoSuchPrincipal,
            "neither HELLO nor the authenticator named the authid",
        ));
    };
    let mut started = match question.authmethod {
        "wampcra" => match cra_key(&answer) {
            Ok(key) => challenge_wampcra(&authid, &answer.role, &key, session, dynamic::PROVIDER),
            Err(reason) => return failed(&format!("the authenticator's wampcra credential: {reason}")),
        },
        "cryptosign" => {
            let Some(key) = pubkey else { return failed("no cryptosign key") };
            let keys: Vec<&str> = match (answer.fields.get("pubkey"), answer.fields.get("pubkeys")) {
                (Some(Value::Str(one)), _) => vec![one.as_str()],
                (_, Some(Value::List(many))) => many.iter().filter_map(Value::as_str).collect(),
                _ => return failed("the authenticator's answer has no `pubkey` or `pubkeys`"),
            };
            let holds = keys.iter().filter_map(|k| cryptosign::parse_public_key(k).ok()).any(|k| k == key);
            if !holds {
                return Hello::Refused(Refusal::new(
                    WampError::NoSuchPrincipal,
                    format!("principal '{authid}' does not hold this key"),
                ));
            }
            challenge_cryptosign(&authid, answer.role.clone(), key, dynamic::PROVIDER, binding)
        }
        "wamp-scram" => match scram_key(&answer) {
            Ok(key) => challenge_scram(&authid, &answer.role, &key, authextra.as_ref(), dynamic::PROVIDER),
            Err(reason) => return failed(&format!("the authenticator's wamp-scram credential: {reason}")),
        },
        other => return failed(&format!("the authenticator cannot be asked about {other} at HELLO")),
    };
    if let Hello::Challenge(_, pending) = &mut started {
        pending.authextra = answer.authextra;
    }
    started
}

fn cra_key(answer: &Answer) -> Result<wampcra::CraKey, String> {
    let config = super::config::WampcraConfig {
        secret: answer.text("secret").map(str::to_owned),
        derived_key: answer.text("derived_key").map(str::to_owned),
        salt: answer.text("salt").map(str::to_owned),
        iterations: answer.uint("iterations"),
        keylen: answer.uint("keylen"),
    };
    wampcra::CraKey::from_config(&config)
}

fn scram_key(answer: &Answer) -> Result<scram::ScramKey, String> {
    let text = |k: &str| answer.text(k).map(str::to_owned).ok_or_else(|| format!("no `{k}`"));
    let config = super::config::ScramConfig {
        kdf: text("kdf")?,
        salt: text("salt")?,
        iterations: answer.uint("iterations").ok_or("no `iterations`")?,
        memory: answer.uint("memory"),
        stored_key: text("stored_key")?,
        server_key: text("server_key")?,
    };
    scram::ScramKey::from_config(&config)
}

/// Checks AUTHENTICATE (its signature and extra) against a pending CHALLENGE; a dynamic ticket
/// is checked by the realm's authenticator, which `router` and `realm` reach.
pub async fn authenticate(
    pending: Pending,
    signature: &str,
    extra: &Dict,
    router: &RouterShared,
    realm: &Realm,
    session: u64,
) -> Result<Admitted, Refusal> {
    let authmethod = pending.method();
    let mut authextra = pending.authextra;
    let verified = match &pending.check {
        Check::Ticket(hash) => match ticket::verify(hash.clone(), signature.to_owned()).await {
            Some(ok) => ok,
            None => return Err(Refusal::new(WampError::AuthenticationFailed, "the ticket could not be checked")),
        },
        Check::DynamicTicket(question) => {
            let mut question = (**question).clone();
            question.details.insert("ticket", signature);
            let auth = realm.auth.load_full();
            let answer = dynamic::ask(router, &question, session, |name| auth.role(name).cloned()).await?;
            let authid = answer.authid.unwrap_or(pending.authid);
            return Ok(Admitted {
                authid,
                role: answer.role,
                authmethod,
                authprovider: dynamic::PROVIDER,
                authextra: answer.authextra,
            });
        }
        Check::Wampcra { key, challenge } => key.verify(challenge, signature),
        Check::Cryptosign { key, challenge } => cryptosign::verify(key, challenge, signature),
        Check::Scram(exchange) => match exchange.verify(signature, extra) {
            Ok(verifier) => {
                authextra.get_or_insert_with(Dict::new).insert("verifier", verifier);
                true
            }
            Err(reason) => return Err(Refusal::new(WampError::AuthenticationDenied, reason)),
        },
    };
    if !verified {
        let what = match authmethod {
            "ticket" => "wrong ticket",
            "wampcra" => "wrong WAMP-CRA signature",
            _ => "wrong cryptosign signature",
        };
        return Err(Refusal::new(WampError::AuthenticationDenied, what));
    }
    let role = pending.role.ok_or_else(|| Refusal::new(WampError::AuthenticationFailed, "no role"))?;
    Ok(Admitted { authid: pending.authid, role, authmethod, authprovider: pending.authprovider, authextra })
}
