//! `ticket` authentication: the client sends its ticket (a password) in AUTHENTICATE; the router
//! holds only a slow hash of it, in PHC string form:
//!
//! - `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>`
//! - `$pbkdf2-sha256$i=<iterations>,l=<length>$<salt>$<hash>`
//!
//! (salt and hash in unpadded standard base64). `roundhouse hash-secret` prints the first form.
//!
//! A slow hash is a lever for denial of service: each AUTHENTICATE costs the router one hash
//! (about 100 ms and 19 MiB for the default Argon2id cost). Hashes run on the blocking pool, on
//! at most half the CPUs at a time (one on a 2-core machine; [`verify`]); the rest wait in line,
//! each within its session's handshake deadline. So a flood of logins slows logins down, costs
//! bounded memory, never blocks the runtime's threads and leaves the other CPUs to routing.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// A ticket hash as stored in the config, parsed.
#[derive(Clone)]
pub struct TicketHash {
    kdf: Kdf,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Kdf {
    Argon2id { m_kib: u32, t: u32, p: u32 },
    Pbkdf2Sha256 { iterations: u32 },
}

impl std::fmt::Debug for TicketHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketHash(..)")
    }
}

/// The Argon2id cost `hash-secret` uses: OWASP's first recommendation (19 MiB, 2 passes).
pub const ARGON2_M_KIB: u32 = 19_456;
/// See [`ARGON2_M_KIB`].
pub const ARGON2_T: u32 = 2;
/// PBKDF2-HMAC-SHA256 iterations `hash-secret --kdf pbkdf2` uses (OWASP's recommendation).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

impl TicketHash {
    /// Parses a PHC string; the error says what is wrong with it (never echoing it).
    pub fn parse(phc: &str) -> Result<Self, String> {
        let fields: Vec<&str> = phc.split('$').collect();
        let b64 = |s: &str, what: &str| {
            STANDARD_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| format!("its {what} is not base64"))
        };
        let params = |s: &str| -> Result<Vec<(String, u32)>, String> {
            s.split(',')
                .map(|kv| -> Result<(String, u32), String> {
                    let (k, v) = kv.split_once('=').ok_or("its parameters are not k=v")?;
                    Ok((k.to_owned(), v.parse::<u32>().map_err(|_| format!("parameter {k} is not a number"))?))
                })
                .collect()
        };
        let get = |ps: &[(String, u32)], key: &str| {
            ps.iter().find(|(k, _)| k == key).map(|(_, v)| *v).ok_or(format!("parameter {key} is missing"))
        };
        let parsed = match fields.as_slice() {
            ["", "argon2id", version, ps, salt, hash] => {
                if *version != "v=19" {
                    return Err("only Argon2 version 19 (v=19) is supported".into());
                }
                let ps = params(ps)?;
                let kdf = Kdf::Argon2id { m_kib: get(&ps, "m")?, t: get(&ps, "t")?, p: get(&ps, "p")? };
                TicketHash { kdf, salt: b64(salt, "salt")?, hash: b64(hash, "hash")? }
            }
            ["", "pbkdf2-sha256", ps, salt, hash] => {
                let ps = params(ps)?;
                let kdf = Kdf::Pbkdf2Sha256 { iterations: get(&ps, "i")? };
                TicketHash { kdf, salt: b64(salt, "salt")?, hash: b64(hash, "hash")? }
            }
            _ => return Err("not an $argon2id$ or $pbkdf2-sha256$ PHC string".into()),
        };
        if parsed.hash.len() < 16 || parsed.salt.len() < 8 {
            return Err("its salt must have at least 8 bytes and its hash at least 16".into());
        }
        if let Kdf::Argon2id { m_kib, t, p } = parsed.kdf {
            argon2::Params::new(m_kib, t, p, Some(parsed.hash.len()))
                .map_err(|e| format!("its Argon2 parameters are invalid: {e}"))?;
        }
        if matches!(parsed.kdf, Kdf::Pbkdf2Sha256 { iterations: 0 }) {
            return Err("its iteration count must be positive".into());
        }
        Ok(parsed)
    }

    /// Whether `ticket` hashes to this hash; compares in constant time. Slow by design: call it
    /// through [`verify`].
    pub fn matches(&self, ticket: &[u8]) -> bool {
        let mut out = Zeroizing::new(vec![0u8; self.hash.len()]);
        let ok = match self.kdf {
            Kdf::Argon2id { m_kib, t, p } => {
                let Ok(params) = argon2::Params::new(m_kib, t, p, Some(self.hash.len())) else { return false };
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(ticket, &self.salt, &mut out)
                    .is_ok()
            }
            Kdf::Pbkdf2Sha256 { iterations } => {
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(ticket, &self.salt, iterations, &mut out);
                true
            }
        };
        ok && bool::from(out.ct_eq(&self.hash))
    }
}

/// Which slow hash `hash-secret` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// Argon2id, m = 19 MiB, t = 2, p = 1.
    Argon2id,
    /// PBKDF2-HMAC-SHA256, 600,000 iterations.
    Pbkdf2,
}

/// Hashes a ticket with a fresh random salt into a PHC string for the config.
pub fn hash(ticket: &[u8], kind: HashKind) -> Result<String, String> {
    match kind {
        HashKind::Argon2id => {
            let salt = super::random::<16>()?;
            let mut out = Zeroizing::new([0u8; 32]);
            let params = argon2::Params::new(ARGON2_M_KIB, ARGON2_T, 1, Some(32)).map_err(|e| e.to_string())?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(ticket, &salt, &mut *out)
                .map_err(|e| e.to_string())?;
            let (s, h) = (STANDARD_NO_PAD.encode(salt), STANDARD_NO_PAD.encode(*out));
            Ok(format!("$argon2id$v=19$m={ARGON2_M_KIB},t={ARGON2_T},p=1${s}${h}"))
        }
        HashKind::Pbkdf2 => pbkdf2_phc(ticket, PBKDF2_ITERATIONS),
    }
}

/// A PBKDF2-HMAC-SHA256 hash of `ticket` with `iterations` and a fresh salt, as a PHC string
/// (tests use few iterations; the config wants [`PBKDF2_ITERATIONS`] or more).
pub fn pbkdf2_phc(ticket: &[u8], iterations: u32) -> Result<String, String> {
    let salt = super::random::<16>()?;
    let mut out = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(ticket, &salt, iterations, &mut *out);
    let (s, h) = (STANDARD_NO_PAD.encode(salt), STANDARD_NO_PAD.encode(*out));
    Ok(format!("$pbkdf2-sha256$i={iterations},l=32${s}${h}"))
}

/// Hash verifications that may run at once, router-wide: half the CPUs, at least one.
fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new((std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)))
}

/// Checks `ticket` against `hash` on the blocking pool, waiting for a free slot first. `None`
/// when the check could not run (the runtime is shutting down).
pub async fn verify(hash: TicketHash, ticket: String) -> Option<bool> {
    let slot = slots().acquire().await.ok()?;
    let ticket = Zeroizing::new(ticket);
    // The slot goes with the work: a session that stops waiting does not free it early.
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        hash.matches(ticket.as_bytes())
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_and_argon2id_vectors() {
        // autobahn-python's test_pbkdf2_static and test_argon2id_static.
        let salt = STANDARD_NO_PAD.encode(b"1234567890abcdef");
        let pbkdf2 = hex::decode("f6991a28c75f43751e0d75499fd7b8649f659118ddc1d61cee5883af547d15f5").unwrap();
        let phc = format!("$pbkdf2-sha256$i=8,l=32${salt}${}", STANDARD_NO_PAD.encode(pbkdf2));
        let hash = TicketHash::parse(&phc).unwrap();
        assert!(hash.matches(b"p4ssw0rd"));
        assert!(!hash.matches(b"p4ssw0rD"));
        let argon = hex::decode("ee4a8acf9d5958354fb79a95ae20692d05e42591ba49fae85eb6700e8b0ed293").unwrap();
        let phc = format!("$argon2id$v=19$m=512,t=32,p=1${salt}${}", STANDARD_NO_PAD.encode(argon));
        let hash = TicketHash::parse(&phc).unwrap();
        assert!(hash.matches(b"p4ssw0rd"));
        assert!(!hash.matches(b"password"));
    }

    #[test]
    fn hashes_printed_by_hash_secret_verify() {
        for kind in [HashKind::Argon2id, HashKind::Pbkdf2] {
            let phc = hash(b"secret!!!", kind).unwrap();
            let parsed = TicketHash::parse(&phc).unwrap();
            assert!(parsed.matches(b"secret!!!"), "{phc}");
            assert!(!parsed.matches(b"secret!!"), "{phc}");
            assert_ne!(phc, hash(b"secret!!!", kind).unwrap(), "a fresh salt each time");
        }
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        for bad in [
            "secret",
            "$argon2id$v=16$m=512,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$pbkdf2-sha256$i=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(TicketHash::parse(bad).is_err(), "{bad}");
        }
    }
}
