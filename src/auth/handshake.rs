//! The authentication exchange of the spec: HELLO names the methods the client offers
//! (`authmethods`, default `["anonymous"]`), its `authid` and `authextra`; the router takes the
//! first offered method this realm can use for that client, and either welcomes it at once
//! (`anonymous`) or sends a CHALLENGE and waits for AUTHENTICATE.
//!
//! Refusals are ABORTs with the spec's URIs:
//!
//! | case | URI |
//! |---|---|
//! | no offered method is one this realm can use for the client | `wamp.error.no_matching_auth_method` |
//! | the authid (or cryptosign key) names no principal | `wamp.error.no_such_principal` |
//! | wrong ticket, signature or key | `wamp.error.authentication_denied` |
//! | the check could not run (no randomness, shutting down) | `wamp.error.authentication_failed` |
//!
//! The caller ([`crate::session::protocol`]) logs each refusal with the peer's address and the
//! authid; nothing here puts a secret, a signature or a ticket into a reason.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use super::permissions::Role;
use super::{cryptosign, random, ticket, wampcra, RealmAuth};
use crate::error::{Refusal, WampError};
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
    /// `authprovider`: where the principal came from (`static`: the config).
    pub authprovider: &'static str,
}

/// What the router does with a HELLO.
pub enum Hello {
    /// WELCOME now.
    Welcome(Admitted),
    /// Send this CHALLENGE and wait for AUTHENTICATE.
    Challenge(Message, Box<Pending>),
    /// ABORT.
    Refused(Refusal),
}

/// A CHALLENGE sent and not answered yet.
pub struct Pending {
    authid: String,
    role: Arc<Role>,
    check: Check,
}

enum Check {
    Ticket(ticket::TicketHash),
    Wampcra { key: wampcra::CraKey, challenge: String },
    Cryptosign { key: VerifyingKey, challenge: [u8; 32] },
}

impl Pending {
    /// The authid being authenticated.
    pub fn authid(&self) -> &str {
        &self.authid
    }

    /// The method being used.
    pub fn method(&self) -> &'static str {
        match self.check {
            Check::Ticket(_) => "ticket",
            Check::Wampcra { .. } => "wampcra",
            Check::Cryptosign { .. } => "cryptosign",
        }
    }
}

/// Chooses a method for a HELLO and starts it.
pub fn hello(auth: &RealmAuth, details: &Dict, session: u64) -> Hello {
    let offered: Vec<&str> = match details.get("authmethods") {
        Some(Value::List(methods)) if !methods.is_empty() => methods.iter().filter_map(Value::as_str).collect(),
        _ => vec!["anonymous"],
    };
    let authid = details.get("authid").and_then(Value::as_str);
    let authextra = details.get("authextra").and_then(Value::as_dict);
    let mut unknown = None;
    for method in &offered {
        let chosen = match *method {
            "anonymous" => match &auth.anonymous {
                Some(role) => {
                    let authid = format!("anonymous-{session}");
                    let admitted =
                        Admitted { authid, role: role.clone(), authmethod: "anonymous", authprovider: "static" };
                    return Hello::Welcome(admitted);
                }
                None => continue,
            },
            "ticket" | "wampcra" if (*method == "ticket" && auth.ticket) || (*method == "wampcra" && auth.wampcra) => {
                let Some(authid) = authid else {
                    unknown.get_or_insert_with(|| format!("{method} authentication needs HELLO.Details.authid"));
                    continue;
                };
                match auth.principals.get(authid) {
                    None => {
                        unknown.get_or_insert_with(|| format!("no principal '{authid}' in this realm"));
                        continue;
                    }
                    Some(principal) => match (*method, &principal.ticket, &principal.wampcra) {
                        ("ticket", Some(hash), _) => {
                            (authid.to_owned(), principal.role.clone(), Check::Ticket(hash.clone()))
                        }
                        ("wampcra", _, Some(key)) => {
                            let nonce = match random::<16>() {
                                Ok(nonce) => hex::encode(nonce),
                                Err(reason) => {
                                    return Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason))
                                }
                            };
                            let timestamp = crate::meta::iso8601(std::time::SystemTime::now());
                            let challenge =
                                wampcra::challenge_text(authid, principal.role.name(), session, &nonce, &timestamp);
                            (authid.to_owned(), principal.role.clone(), Check::Wampcra { key: key.clone(), challenge })
                        }
                        _ => continue,
                    },
                }
            }
            "cryptosign" if !auth.keys.is_empty() => {
                let pubkey = authextra.and_then(|e| e.get("pubkey")).and_then(Value::as_str);
                let Some(key) = pubkey.and_then(|k| cryptosign::parse_public_key(k).ok()) else {
                    unknown.get_or_insert_with(|| {
                        "cryptosign authentication needs an Ed25519 key in HELLO.Details.authextra.pubkey".to_owned()
                    });
                    continue;
                };
                let holders = auth.keys.get(&key.to_bytes()).map(Vec::as_slice).unwrap_or_default();
                let holder = match (authid, holders) {
                    (Some(authid), holders) if holders.iter().any(|h| h == authid) => authid,
                    (None, [only]) => only.as_str(),
                    (None, [_, _, ..]) => {
                        unknown.get_or_insert_with(|| "several principals hold this key; name the authid".to_owned());
                        continue;
                    }
                    _ => {
                        unknown.get_or_insert_with(|| "no principal in this realm holds this key".to_owned());
                        continue;
                    }
                };
                let Some(principal) = auth.principals.get(holder) else { continue };
                let challenge = match random::<32>() {
                    Ok(challenge) => challenge,
                    Err(reason) => return Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason)),
                };
                (holder.to_owned(), principal.role.clone(), Check::Cryptosign { key, challenge })
            }
            _ => continue,
        };
        let (authid, role, check) = chosen;
        let extra = match &check {
            Check::Ticket(_) => Dict::new(),
            Check::Wampcra { key, challenge } => key.challenge_extra(challenge),
            Check::Cryptosign { challenge, .. } => {
                Dict::new().with("challenge", hex::encode(challenge)).with("channel_binding", Value::Null)
            }
        };
        let pending = Pending { authid, role, check };
        let message = Message::Challenge { auth_method: pending.method().to_owned(), extra };
        return Hello::Challenge(message, Box::new(pending));
    }
    Hello::Refused(match unknown {
        Some(reason) => Refusal::new(WampError::NoSuchPrincipal, reason),
        None => Refusal::new(
            WampError::NoMatchingAuthMethod,
            format!("none of the offered methods ({}) is accepted here; this realm offers {}", offered.join(", "), {
                let methods = auth.methods();
                if methods.is_empty() {
                    "none".to_owned()
                } else {
                    methods.join(", ")
                }
            }),
        ),
    })
}

/// Checks AUTHENTICATE's signature against a pending CHALLENGE.
pub async fn authenticate(pending: Pending, signature: &str) -> Result<Admitted, Refusal> {
    let authmethod = pending.method();
    let verified = match &pending.check {
        Check::Ticket(hash) => match ticket::verify(hash.clone(), signature.to_owned()).await {
            Some(ok) => ok,
            None => return Err(Refusal::new(WampError::AuthenticationFailed, "the ticket could not be checked")),
        },
        Check::Wampcra { key, challenge } => key.verify(challenge, signature),
        Check::Cryptosign { key, challenge } => cryptosign::verify(key, challenge, signature),
    };
    if !verified {
        let what = match authmethod {
            "ticket" => "wrong ticket",
            "wampcra" => "wrong WAMP-CRA signature",
            _ => "wrong cryptosign signature",
        };
        return Err(Refusal::new(WampError::AuthenticationDenied, what));
    }
    Ok(Admitted { authid: pending.authid, role: pending.role, authmethod, authprovider: "static" })
}
