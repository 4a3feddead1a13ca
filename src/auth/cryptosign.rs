//! `cryptosign` authentication: the client names its Ed25519 public key in
//! `HELLO.Details.authextra.pubkey`, the router sends 32 random bytes (hex) and the client answers
//! with its signature over them.
//!
//! Clients answer in two forms: Autobahn|Python sends the 64-byte signature followed by the
//! 32-byte message it signed (96 bytes, 192 hex digits), Autobahn|JS and others send the
//! 64-byte signature alone. Both are accepted; in the 96-byte form the trailing bytes must be the
//! challenge. Signatures are checked with `verify_strict`, which refuses small-order keys and
//! non-canonical signatures, so a signature cannot be bent into another valid one.
//!
//! # Channel binding
//! A client that asks for `tls-exporter` (`HELLO.Details.authextra.channel_binding`) on a TLS 1.3
//! connection gets `channel_binding: "tls-exporter"` in its CHALLENGE and must sign
//! `challenge XOR exporter`, where `exporter` is the connection's RFC 9266 value (32 bytes of
//! keying material exported with the label `EXPORTER-Channel-Binding` and an empty context, which
//! both ends of the TLS connection compute). A signature made for one connection then fails on
//! any other, so a man-in-the-middle who terminates TLS cannot relay the login. Anything else
//! (no binding asked, plain TCP, TLS 1.2, Autobahn's `tls-unique`, which TLS 1.3 does not define
//! and rustls does not expose) gets `channel_binding: null` and signs the bare challenge, as the
//! spec allows.

use ed25519_dalek::{Signature, VerifyingKey};
use subtle::ConstantTimeEq;

/// The channel binding type this router offers.
pub const TLS_EXPORTER: &str = "tls-exporter";

/// Parses a public key: 64 hex digits.
pub fn parse_public_key(hex_text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a cryptosign public key must be 64 hex digits".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid Ed25519 public key".to_owned())
}

/// Whether `signature` (hex, 64 or 96 bytes) is `key`'s signature over `challenge`.
pub fn verify(key: &VerifyingKey, challenge: &[u8; 32], signature: &str) -> bool {
    let Ok(bytes) = hex::decode(signature.trim()) else { return false };
    let signed = match bytes.len() {
        64 => true,
        96 => bool::from(bytes[64..].ct_eq(challenge)),
        _ => false,
    };
    let Ok(signature) = <[u8; 64]>::try_from(&bytes[..bytes.len().min(64)]) else { return false };
    signed && key.verify_strict(challenge, &Signature::from_bytes(&signature)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// The spec's test_vectors_1: (channel_id, private_key, challenge, signature ‖ signed message).
    const VECTORS: &[(Option<&str>, &str, &str, &str)] = &[
        (None, "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510", "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "b32675b221f08593213737bef8240e7c15228b07028e19595294678c90d11c0cae80a357331bfc5cc9fb71081464e6e75013517c2cf067ad566a6b7b728e5d03ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        (None, "d511fe78e23934b3dadb52fcd022974b80bd92bccc7c5cf404e46cc0a8a2f5cd", "b26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d", "d4209ad10d5aff6bfbc009d7e924795de138a63515efc7afc6b01b7fe5201372190374886a70207b042294af5bd64ce725cd8dceb344e6d11c09d1aaaf4d660fb26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d"),
        (None, "6e1fde9cf9e2359a87420b65a87dc0c66136e66945196ba2475990d8a0c3a25b", "b05e6b8ad4d69abf74aa3be3c0ee40ae07d66e1895b9ab09285a2f1192d562d2", "7beb282184baadd08f166f16dd683b39cab53816ed81e6955def951cb2ddad1ec184e206746fd82bda075af03711d3d5658fc84a76196b0fa8d1ebc92ef9f30bb05e6b8ad4d69abf74aa3be3c0ee40ae07d66e1895b9ab09285a2f1192d562d2"),
        (Some("62e935ae755f3d48f80d4d59f6121358c435722a67e859cc0caa8b539027f2ff"), "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510", "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "9b6f41540c9b95b4b7b281c3042fa9c54cef43c842d62ea3fd6030fcb66e70b3e80d49d44c29d1635da9348d02ec93f3ed1ef227dfb59a07b580095c2b82f80f9d16ca518aa0c2b707f2b2a609edeca73bca8dd59817a633f35574ac6fd80d00"),
        (Some("62e935ae755f3d48f80d4d59f6121358c435722a67e859cc0caa8b539027f2ff"), "d511fe78e23934b3dadb52fcd022974b80bd92bccc7c5cf404e46cc0a8a2f5cd", "b26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d", "305aaa3ac25e98f651427688b3fc43fe7d8a68a7ec1d7d61c61517c519bd4a427c3015599d83ca28b4c652333920223844ef0725eb5dc2febfd6af7677b73f01d0852a29b460fc92ec943242ac638a053bbacc200512b18b30d15083cbdc9282"),
        (Some("62e935ae755f3d48f80d4d59f6121358c435722a67e859cc0caa8b539027f2ff"), "6e1fde9cf9e2359a87420b65a87dc0c66136e66945196ba2475990d8a0c3a25b", "b05e6b8ad4d69abf74aa3be3c0ee40ae07d66e1895b9ab09285a2f1192d562d2", "ee3c7644fd8070532bc1fde3d70d742267da545d8c8f03e63bda63f1ad4214f4d2c4bfdb4eb9526def42deeb7e31602a6ff99eba893e0a4ad4d45892ca75e608d2b75e24a189a7f78ca776ba36fc53f6c3e31c32f251f2c524f0a44202f2902d"),
    ];

    fn bytes32(hex_text: &str) -> [u8; 32] {
        hex::decode(hex_text).unwrap().try_into().unwrap()
    }

    #[test]
    fn spec_vectors_sign_and_verify() {
        for (channel, private, challenge, expected) in VECTORS {
            let key = SigningKey::from_bytes(&bytes32(private));
            let mut message = bytes32(challenge);
            if let Some(channel) = channel {
                for (m, c) in message.iter_mut().zip(bytes32(channel)) {
                    *m ^= c;
                }
            }
            let signature = key.sign(&message).to_bytes();
            assert_eq!(format!("{}{}", hex::encode(signature), hex::encode(message)), *expected);
            let public = parse_public_key(&hex::encode(key.verifying_key().to_bytes())).unwrap();
            assert!(verify(&public, &message, expected), "96-byte form");
            assert!(verify(&public, &message, &expected[..128]), "64-byte form");
        }
    }

    #[test]
    fn wrong_truncated_and_mismatched_signatures_fail() {
        let (_, private, challenge, good) = VECTORS[0];
        let public = SigningKey::from_bytes(&bytes32(private)).verifying_key();
        let challenge = bytes32(challenge);
        assert!(verify(&public, &challenge, good));
        assert!(!verify(&public, &challenge, &good[..126]), "truncated");
        assert!(!verify(&public, &challenge, &good[..190]), "truncated 96-byte form");
        let mut flipped = good.to_owned();
        flipped.replace_range(0..2, if &good[0..2] == "00" { "01" } else { "00" });
        assert!(!verify(&public, &challenge, &flipped), "altered signature");
        let other_message = format!("{}{}", &good[..128], "00".repeat(32));
        assert!(!verify(&public, &challenge, &other_message), "signed message is not the challenge");
        let other_key = SigningKey::from_bytes(&bytes32(VECTORS[1].1)).verifying_key();
        assert!(!verify(&other_key, &challenge, good), "another principal's key");
        assert!(!verify(&public, &challenge, "zz"), "not hex");
        assert!(parse_public_key("abcd").is_err());
    }
}
