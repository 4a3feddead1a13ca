//! `wampcra` authentication (WAMP Challenge-Response): the router sends a challenge, a JSON text
//! naming the session and a fresh nonce; the client answers base64(HMAC-SHA256(key, challenge)).
//!
//! Unsalted, the key is the shared secret. Salted, the challenge's extra also carries `salt`,
//! `iterations` and `keylen`, and the key is the base64 *text* of
//! PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen) — its ASCII bytes, not the decoded bytes,
//! as Autobahn and Crossbar derive it. The router stores only that derived text, so it runs no
//! KDF per login.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::config::WampcraConfig;
use crate::wire::value::quoted;
use crate::wire::Dict;

/// A principal's WAMP-CRA key, as the router holds it.
#[derive(Clone)]
pub struct CraKey {
    /// The HMAC key: the secret, or the derived key's base64 text.
    key: Zeroizing<Vec<u8>>,
    /// The salt parameters sent in the challenge (salted WAMP-CRA).
    salt: Option<(String, u32, u32)>,
}

impl std::fmt::Debug for CraKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CraKey(..)")
    }
}

impl CraKey {
    /// The key a principal's config describes; the error says what is missing.
    pub fn from_config(config: &WampcraConfig) -> Result<Self, String> {
        match config {
            WampcraConfig { secret: Some(secret), derived_key: None, salt: None, iterations: None, keylen: None } => {
                Ok(CraKey { key: Zeroizing::new(secret.as_bytes().to_vec()), salt: None })
            }
            WampcraConfig {
                secret: None,
                derived_key: Some(key),
                salt: Some(salt),
                iterations: Some(iterations),
                keylen: Some(keylen),
            } => {
                let decoded = STANDARD.decode(key).map_err(|_| "wampcra.derived_key is not base64".to_owned())?;
                if decoded.len() != *keylen as usize || *iterations == 0 {
                    return Err("wampcra.derived_key must be keylen bytes, derived with at least one iteration".into());
                }
                Ok(CraKey {
                    key: Zeroizing::new(key.as_bytes().to_vec()),
                    salt: Some((salt.clone(), *iterations, *keylen)),
                })
            }
            _ => {
                Err("wampcra needs either `secret` alone, or `derived_key` with `salt`, `iterations` and `keylen`"
                    .into())
            }
        }
    }

    /// The CHALLENGE's extra for `challenge`.
    pub fn challenge_extra(&self, challenge: &str) -> Dict {
        let extra = Dict::new().with("challenge", challenge);
        match &self.salt {
            Some((salt, iterations, keylen)) => extra
                .with("salt", salt.as_str())
                .with("iterations", u64::from(*iterations))
                .with("keylen", u64::from(*keylen)),
            None => extra,
        }
    }

    /// Whether `signature` signs `challenge`; compares in constant time.
    pub fn verify(&self, challenge: &str, signature: &str) -> bool {
        let expected = sign(&self.key, challenge);
        bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes()))
    }
}

/// base64(HMAC-SHA256(key, challenge)), as the client computes it.
pub fn sign(key: &[u8], challenge: &str) -> String {
    STANDARD.encode(super::hmac_sha256(key, challenge.as_bytes()))
}

/// The salted key: the base64 text of PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen).
pub fn derive_key(secret: &[u8], salt: &str, iterations: u32, keylen: usize) -> String {
    let mut out = Zeroizing::new(vec![0u8; keylen]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret, salt.as_bytes(), iterations, &mut out);
    STANDARD.encode(&*out)
}

/// The challenge text: a JSON object with the fields the spec requires.
pub fn challenge_text(
    authid: &str,
    authrole: &str,
    authprovider: &str,
    session: u64,
    nonce: &str,
    timestamp: &str,
) -> String {
    format!(
        "{{\"authid\":{},\"authrole\":{},\"authmethod\":\"wampcra\",\"authprovider\":{},\"nonce\":\"{nonce}\",\"timestamp\":\"{timestamp}\",\"session\":{session}}}",
        quoted(authid),
        quoted(authrole),
        quoted(authprovider),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autobahn_vectors() {
        // autobahn-python test_wamp_auth.py: test_derive_key and test_compute_wcs.
        let derived = derive_key(b"L3L1YUE8Txlw", "salt123", 1000, 32);
        assert_eq!(derived, "qzcdsr9uu/L5hnss3kjNTRe490ETgA70ZBaB5rvnJ5Y=");
        assert_eq!(sign(b"L3L1YUE8Txlw", "[1, 2, 3]"), "1njQtmmeYO41N5EWEzD2kAjjEKRZ5kPZt/TzpYXOzR0=");
        assert_eq!(sign(derived.as_bytes(), "[1, 2, 3]"), "c3pCfyceJEbMIYZ/MRvn3RbPu4aqaQ/IeiCmHKfGMx4=");
    }

    #[test]
    fn keys_from_config_verify_their_signatures_only() {
        let plain = CraKey::from_config(&WampcraConfig {
            secret: Some("L3L1YUE8Txlw".into()),
            derived_key: None,
            salt: None,
            iterations: None,
            keylen: None,
        })
        .unwrap();
        assert!(plain.verify("[1, 2, 3]", "1njQtmmeYO41N5EWEzD2kAjjEKRZ5kPZt/TzpYXOzR0="));
        assert!(!plain.verify("[1, 2, 4]", "1njQtmmeYO41N5EWEzD2kAjjEKRZ5kPZt/TzpYXOzR0="));
        let salted = CraKey::from_config(&WampcraConfig {
            secret: None,
            derived_key: Some("qzcdsr9uu/L5hnss3kjNTRe490ETgA70ZBaB5rvnJ5Y=".into()),
            salt: Some("salt123".into()),
            iterations: Some(1000),
            keylen: Some(32),
        })
        .unwrap();
        assert!(salted.verify("[1, 2, 3]", "c3pCfyceJEbMIYZ/MRvn3RbPu4aqaQ/IeiCmHKfGMx4="));
        assert!(!salted.verify("[1, 2, 3]", "1njQtmmeYO41N5EWEzD2kAjjEKRZ5kPZt/TzpYXOzR0="));
        let extra = salted.challenge_extra("x");
        assert_eq!(extra.get("iterations").and_then(|v| v.as_u64()), Some(1000));
    }

    #[test]
    fn challenge_text_is_json() {
        let text = challenge_text("jo\"e", "user", "static", 7, "abc", "2026-12-02T00:00:00.000Z");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["authid"], "jo\"e");
        assert_eq!(parsed["session"], 7);
        assert_eq!(parsed["authmethod"], "wampcra");
    }
}
