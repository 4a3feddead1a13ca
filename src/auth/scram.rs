//! `wamp-scram` authentication, the spec's dialect of SCRAM-SHA-256 (RFC 5802, RFC 7677): the
//! client sends a nonce in HELLO, the router answers with the combined nonce, the principal's
//! salt and KDF parameters, the client proves it knows the password (`ClientProof`), and the
//! router proves it knows the stored keys (`WELCOME.Details.authextra.verifier`).
//!
//! The router stores `StoredKey` and `ServerKey` only, never the password, so a login runs two
//! HMACs and a SHA-256, no KDF: the KDF (`argon2id13` or `pbkdf2`) runs on the client, and once in
//! `roundhouse hash-secret --method wamp-scram`.
//!
//! Choices where the spec leaves room:
//! - The verifier is the bare base64 `ServerSignature`, as the spec's text says (its example
//!   shows `v=` in front, RFC 5802's attribute syntax).
//! - Without channel binding (`channel_binding` absent or null), `c=biws` (base64 of `n,,`), as
//!   RFC 5802 defines it. A client asking for a binding gets ABORT: the router offers none.
//! - Usernames are used as given, not SASLprep-normalized (an authid is matched exactly, as for
//!   every other method); a password is normalized by whoever derives the keys.
//!
//! Autobahn|Python and Crossbar speak another dialect (`scram`, `argon2id-13`, `c=` empty, the
//! verifier under another key), so they cannot log in here with SCRAM.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::config::ScramConfig;
use super::hmac_sha256 as hmac;
use crate::wire::{Dict, Value};

/// The key derivation function a credential was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// Argon2id, version 1.3, parallelism 1, 32-byte output; `memory` in KiB.
    Argon2id13 {
        /// Memory cost in KiB.
        memory: u32,
    },
    /// PBKDF2-HMAC-SHA256, 32-byte output.
    Pbkdf2,
}

impl Kdf {
    /// The name on the wire and in the config.
    pub fn name(self) -> &'static str {
        match self {
            Kdf::Argon2id13 { .. } => "argon2id13",
            Kdf::Pbkdf2 => "pbkdf2",
        }
    }
}

/// A principal's SCRAM credential, as the router holds it.
#[derive(Clone)]
pub struct ScramKey {
    kdf: Kdf,
    /// The salt as configured (base64), sent as is and used as is in the AuthMessage.
    salt: String,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ScramKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKey(..)")
    }
}

fn key32(text: &str, what: &str) -> Result<[u8; 32], String> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{what} must be base64 of 32 bytes"))
}

impl ScramKey {
    /// The credential a config describes; the error says what is wrong.
    pub fn from_config(config: &ScramConfig) -> Result<Self, String> {
        let kdf = match (config.kdf.as_str(), config.memory) {
            ("argon2id13", Some(memory)) => {
                argon2::Params::new(memory, config.iterations, 1, Some(32))
                    .map_err(|e| format!("argon2id13 parameters: {e}"))?;
                Kdf::Argon2id13 { memory }
            }
            ("argon2id13", None) => return Err("kdf argon2id13 needs `memory` (KiB)".into()),
            ("pbkdf2", None) => Kdf::Pbkdf2,
            ("pbkdf2", Some(_)) => return Err("kdf pbkdf2 takes no `memory`".into()),
            (other, _) => return Err(format!("kdf must be argon2id13 or pbkdf2, not '{other}'")),
        };
        if config.iterations == 0 {
            return Err("iterations must be at least 1".into());
        }
        if !STANDARD.decode(config.salt.trim()).is_ok_and(|s| !s.is_empty()) {
            return Err("salt must be non-empty base64".into());
        }
        Ok(ScramKey {
            kdf,
            salt: config.salt.trim().to_owned(),
            iterations: config.iterations,
            stored_key: key32(&config.stored_key, "stored_key")?,
            server_key: Zeroizing::new(key32(&config.server_key, "server_key")?),
        })
    }

    /// Starts an exchange: the CHALLENGE's extra and what AUTHENTICATE is checked against.
    /// `hello_extra` is HELLO's `authextra`; `server_nonce` fresh random bytes.
    pub fn challenge(&self, authid: &str, hello_extra: Option<&Dict>, server_nonce: &[u8]) -> Result<Exchange, String> {
        let extra = hello_extra.ok_or("wamp-scram needs HELLO.Details.authextra.nonce")?;
        let client_nonce = extra
            .get("nonce")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && STANDARD.decode(n).is_ok())
            .ok_or("wamp-scram needs a base64 nonce in HELLO.Details.authextra.nonce")?;
        if !matches!(extra.get("channel_binding"), None | Some(Value::Null)) {
            return Err("this router offers no channel binding for wamp-scram".into());
        }
        let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
        let client_first_bare = format!("n={},r={client_nonce}", escape(authid));
        let server_first = format!("r={nonce},s={},i={}", self.salt, self.iterations);
        let memory = match self.kdf {
            Kdf::Argon2id13 { memory } => Value::UInt(u64::from(memory)),
            Kdf::Pbkdf2 => Value::Null,
        };
        let extra = Dict::new()
            .with("nonce", nonce.as_str())
            .with("salt", self.salt.as_str())
            .with("kdf", self.kdf.name())
            .with("iterations", u64::from(self.iterations))
            .with("memory", memory);
        Ok(Exchange {
            key: self.clone(),
            nonce,
            auth_message_head: format!("{client_first_bare},{server_first}"),
            extra,
        })
    }
}

/// A SCRAM exchange between CHALLENGE and AUTHENTICATE.
#[derive(Debug, Clone)]
pub struct Exchange {
    key: ScramKey,
    nonce: String,
    /// `client-first-message-bare "," server-first-message`.
    auth_message_head: String,
    /// The CHALLENGE's extra.
    pub extra: Dict,
}

impl Exchange {
    /// Checks AUTHENTICATE (the base64 `ClientProof` and its extra); on success, the base64
    /// `ServerSignature` for `WELCOME.Details.authextra.verifier`. `Err` says what was wrong.
    pub fn verify(&self, proof: &str, extra: &Dict) -> Result<String, &'static str> {
        if extra.get("nonce").and_then(Value::as_str) != Some(self.nonce.as_str()) {
            return Err("AUTHENTICATE.Extra.nonce is not the CHALLENGE's nonce");
        }
        if !matches!(extra.get("channel_binding"), None | Some(Value::Null))
            || !matches!(extra.get("cbind_data"), None | Some(Value::Null))
        {
            return Err("channel binding was not agreed");
        }
        let auth_message = format!("{},c=biws,r={}", self.auth_message_head, self.nonce);
        let proof: [u8; 32] =
            STANDARD.decode(proof.trim()).ok().and_then(|p| p.try_into().ok()).ok_or("wrong SCRAM proof")?;
        let client_signature = hmac(&self.key.stored_key, auth_message.as_bytes());
        let client_key: Zeroizing<Vec<u8>> =
            Zeroizing::new(proof.iter().zip(client_signature.iter()).map(|(p, s)| p ^ s).collect());
        let recovered = Sha256::digest(&*client_key);
        if !bool::from(recovered.as_slice().ct_eq(&self.key.stored_key)) {
            return Err("wrong SCRAM proof");
        }
        Ok(STANDARD.encode(hmac(&*self.key.server_key, auth_message.as_bytes())))
    }
}

/// RFC 5802's `saslname`: `,` and `=` escaped.
fn escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Derives a credential from a password: what `roundhouse hash-secret --method wamp-scram`
/// prints and a dynamic authenticator may return.
pub fn derive(password: &[u8], salt: &[u8], kdf: Kdf, iterations: u32) -> Result<ScramConfig, String> {
    let salted = salted_password(password, salt, kdf, iterations)?;
    let client_key = hmac(&*salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&*salted, b"Server Key");
    Ok(ScramConfig {
        kdf: kdf.name().to_owned(),
        salt: STANDARD.encode(salt),
        iterations,
        memory: match kdf {
            Kdf::Argon2id13 { memory } => Some(memory),
            Kdf::Pbkdf2 => None,
        },
        stored_key: STANDARD.encode(stored_key),
        server_key: STANDARD.encode(server_key),
    })
}

/// SaltedPassword = KDF(password, salt, params).
fn salted_password(password: &[u8], salt: &[u8], kdf: Kdf, iterations: u32) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut salted = Zeroizing::new([0u8; 32]);
    match kdf {
        Kdf::Argon2id13 { memory } => {
            let params = argon2::Params::new(memory, iterations, 1, Some(32)).map_err(|e| e.to_string())?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(password, salt, &mut *salted)
                .map_err(|e| e.to_string())?;
        }
        Kdf::Pbkdf2 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut *salted),
    }
    Ok(salted)
}

/// The client's side of the exchange: the `ClientProof` (base64) for a password. Used by the
/// tests and the handshake benchmark; the router never sees a password.
pub fn client_proof(password: &[u8], authid: &str, client_nonce: &str, challenge: &Dict) -> Option<String> {
    let text = |k: &str| challenge.get(k).and_then(Value::as_str);
    let (nonce, salt_b64) = (text("nonce")?, text("salt")?);
    let iterations = u32::try_from(challenge.get("iterations")?.as_u64()?).ok()?;
    let salt = STANDARD.decode(salt_b64).ok()?;
    let kdf = match text("kdf")? {
        "pbkdf2" => Kdf::Pbkdf2,
        "argon2id13" => Kdf::Argon2id13 { memory: u32::try_from(challenge.get("memory")?.as_u64()?).ok()? },
        _ => return None,
    };
    let salted = salted_password(password, &salt, kdf, iterations).ok()?;
    let client_key = hmac(&*salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let auth_message =
        format!("n={},r={client_nonce},r={nonce},s={salt_b64},i={iterations},c=biws,r={nonce}", escape(authid));
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(signature.iter()).map(|(k, s)| k ^ s).collect();
    Some(STANDARD.encode(proof))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3, which the spec's own AUTHENTICATE and WELCOME examples use.
    const USER: &str = "user";
    const PASSWORD: &[u8] = b"pencil";
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const VERIFIER: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramConfig {
        derive(PASSWORD, &STANDARD.decode(SALT).unwrap(), Kdf::Pbkdf2, 4096).unwrap()
    }

    /// The RFC's exchange, whose server nonce is not base64 of random bytes: built by hand.
    fn rfc_exchange() -> Exchange {
        let key = ScramKey::from_config(&rfc_credential()).unwrap();
        Exchange {
            key,
            nonce: NONCE.to_owned(),
            auth_message_head: format!("n={USER},r={CLIENT_NONCE},r={NONCE},s={SALT},i=4096"),
            extra: Dict::new(),
        }
    }

    #[test]
    fn rfc7677_vectors_stored_and_server_keys() {
        let credential = rfc_credential();
        let hex64 = |b64: &str| hex::encode(STANDARD.decode(b64).unwrap());
        assert!(hex64(&credential.stored_key).starts_with("586e5df2"), "{}", hex64(&credential.stored_key));
        assert!(hex64(&credential.stored_key).ends_with("e2a6"));
        assert!(hex64(&credential.server_key).starts_with("c1f3cbc1"), "{}", hex64(&credential.server_key));
        assert!(hex64(&credential.server_key).ends_with("d9d5"));
    }

    #[test]
    fn rfc7677_vectors_proof_is_accepted_and_the_verifier_matches() {
        let exchange = rfc_exchange();
        let extra = Dict::new().with("nonce", NONCE).with("channel_binding", Value::Null);
        assert_eq!(exchange.verify(PROOF, &extra).as_deref(), Ok(VERIFIER));
        let challenge =
            Dict::new().with("nonce", NONCE).with("salt", SALT).with("kdf", "pbkdf2").with("iterations", 4096u64);
        assert_eq!(client_proof(PASSWORD, USER, CLIENT_NONCE, &challenge).as_deref(), Some(PROOF));
    }

    #[test]
    fn a_wrong_proof_nonce_or_binding_is_refused() {
        let exchange = rfc_exchange();
        let extra = Dict::new().with("nonce", NONCE);
        let mut wrong = STANDARD.decode(PROOF).unwrap();
        wrong[0] ^= 1;
        assert_eq!(exchange.verify(&STANDARD.encode(&wrong), &extra), Err("wrong SCRAM proof"));
        assert_eq!(exchange.verify("short", &extra), Err("wrong SCRAM proof"));
        assert!(exchange.verify(PROOF, &Dict::new().with("nonce", CLIENT_NONCE)).is_err());
        assert!(exchange.verify(PROOF, &extra.clone().with("channel_binding", "tls-unique")).is_err());
    }

    #[test]
    fn argon2id13_credentials_round_trip_through_a_challenge() {
        let credential = derive(b"p4ssw0rd", b"1234567890abcdef", Kdf::Argon2id13 { memory: 512 }, 2).unwrap();
        let key = ScramKey::from_config(&credential).unwrap();
        let hello = Dict::new().with("nonce", "egVDf3DMJh0=");
        let exchange = key.challenge("us,er=", Some(&hello), &[1; 16]).unwrap();
        assert_eq!(exchange.extra.get("kdf").and_then(Value::as_str), Some("argon2id13"));
        assert_eq!(exchange.extra.get("memory").and_then(Value::as_u64), Some(512));
        let nonce = exchange.extra.get("nonce").and_then(Value::as_str).unwrap().to_owned();
        assert!(nonce.starts_with("egVDf3DMJh0="));
        let proof = client_proof(b"p4ssw0rd", "us,er=", "egVDf3DMJh0=", &exchange.extra).unwrap();
        assert!(exchange.verify(&proof, &Dict::new().with("nonce", nonce.as_str())).is_ok());
        let wrong = client_proof(b"password", "us,er=", "egVDf3DMJh0=", &exchange.extra).unwrap();
        assert!(exchange.verify(&wrong, &Dict::new().with("nonce", nonce.as_str())).is_err());
    }

    #[test]
    fn bad_credentials_and_hellos_are_refused_with_a_reason() {
        let mut config = rfc_credential();
        config.kdf = "scrypt".into();
        assert!(ScramKey::from_config(&config).unwrap_err().contains("kdf"));
        let mut config = rfc_credential();
        config.stored_key = "AAAA".into();
        assert!(ScramKey::from_config(&config).unwrap_err().contains("stored_key"));
        let key = ScramKey::from_config(&rfc_credential()).unwrap();
        assert!(key.challenge("user", None, &[0; 16]).is_err());
        assert!(key.challenge("user", Some(&Dict::new()), &[0; 16]).is_err());
        let binding = Dict::new().with("nonce", "abcd").with("channel_binding", "tls-unique");
        assert!(key.challenge("user", Some(&binding), &[0; 16]).unwrap_err().contains("channel binding"));
    }
}
