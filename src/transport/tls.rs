//! TLS on a listener (rustls, ring provider): what the config says, the server config built from
//! its PEM files, the handshake, and the client certificate a handshake verified.
//!
//! TLS wraps the TCP stream before anything else: `wss://` is the WebSocket upgrade inside TLS,
//! RawSocket over TLS is the same 4-octet handshake and framing inside TLS. Only TLS 1.2 and 1.3
//! are offered. With `client_ca`, client certificates are verified against that CA (mTLS), either
//! required or optional; the session learns that it came over TLS and the verified leaf, if any
//! ([`TlsPeer`]), for the `tls` authentication method and for methods offered over TLS only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The first octet of every TLS connection: a handshake record.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// TLS settings of one listener (the `tls` table).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to; needed when
    /// `client_auth` is not `none`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether clients present certificates: `none` (default), `optional`, `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether a listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are asked for.
    #[default]
    None,
    /// A client may present one; if it does, it must verify against `client_ca`.
    Optional,
    /// A client must present one that verifies against `client_ca`.
    Required,
}

impl TlsConfig {
    /// Makes relative paths relative to `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        for path in [Some(&mut self.cert), Some(&mut self.key), self.client_ca.as_mut()].into_iter().flatten() {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    /// Reads the PEM files and builds the acceptor; the error names the file and what is wrong.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("tls.key {}: no private key read: {e}", self.key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match (self.client_auth, &self.client_ca) {
            (ClientAuth::None, None) => builder.with_no_client_auth(),
            (ClientAuth::None, Some(_)) => return Err("tls.client_ca is set but tls.client_auth is none".into()),
            (_, None) => return Err("tls.client_auth needs tls.client_ca".into()),
            (auth, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("tls.client_ca {}: unusable CA certificate: {e}", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
                let verifier = verifier.build().map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("tls.cert {} with tls.key {}: {e}", self.cert.display(), self.key.display()))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// What a TLS connection tells its session: that it came over TLS (for methods a realm offers
/// over TLS only), and the client certificate the handshake verified, if any (for the `tls`
/// authentication method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The verified client certificate; `None` when the client presented none.
    pub client_cert: Option<ClientCert>,
    /// The connection's `tls-exporter` channel binding (RFC 9266): 32 bytes exported with the
    /// label `EXPORTER-Channel-Binding` and an empty context. TLS 1.3 only: on TLS 1.2 it is sound
    /// only with the extended master secret, which is not checked here.
    pub channel_binding: Option<[u8; 32]>,
}

/// The RFC 9266 exporter label.
const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The client certificate a TLS handshake verified (the leaf), as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's common name (the first CN attribute), when it has one.
    pub subject_cn: Option<String>,
    /// SHA-256 of the certificate's DER encoding.
    pub fingerprint_sha256: [u8; 32],
}

impl ClientCert {
    /// Reads a verified leaf certificate.
    pub fn from_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut fingerprint_sha256 = [0u8; 32];
        fingerprint_sha256.copy_from_slice(digest.as_ref());
        ClientCert { subject_cn: der::subject_cn(der), fingerprint_sha256 }
    }

    /// The fingerprint as lowercase hex without separators (what `openssl x509 -fingerprint
    /// -sha256` prints, without its colons).
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint_sha256)
    }
}

/// Runs the server side of a TLS handshake before `deadline` (the connection's handshake
/// deadline, which the WebSocket or RawSocket handshake shares). A failure is logged once, with
/// the peer and the reason, and gives `None`.
///
/// A peer that speaks plain text to a TLS listener is told so in its own words where it has any:
/// an HTTP request gets `400` saying the port speaks TLS.
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<(TlsStream<TcpStream>, std::sync::Arc<TlsPeer>)> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            tracing::info!(%peer, first_octet = first[0], "TLS handshake failed: the peer speaks plain text");
            if first[0] != crate::transport::rawsocket::MAGIC {
                let body = "this port speaks TLS: use wss:// (or RawSocket over TLS)\n";
                let refusal = crate::transport::answer_http(tcp, "400 Bad Request", "", body);
                let _ = tokio::time::timeout_at(deadline, refusal).await;
            }
            return None;
        }
        Ok(_) => return None, // gone before saying anything
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return None;
        }
    }
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, reason = %error, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let (_, connection) = stream.get_ref();
    let cert = connection.peer_certificates().and_then(|chain| chain.first()).map(|leaf| ClientCert::from_der(leaf));
    if let Some(cert) = &cert {
        tracing::debug!(%peer, cn = cert.subject_cn.as_deref(), fingerprint = cert.fingerprint_hex(), "client certificate");
    }
    let channel_binding = (connection.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
        .then(|| connection.export_keying_material([0u8; 32], CHANNEL_BINDING_LABEL, Some(&[])).ok())
        .flatten();
    Some((stream, std::sync::Arc::new(TlsPeer { client_cert: cert, channel_binding })))
}

/// Just enough DER to find a certificate's subject CN. The certificate was verified (so it is
/// well-formed DER) but the walk checks every bound anyway and gives `None` on anything odd.
mod der {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const VERSION: u8 = 0xa0;
    /// id-at-commonName, 2.5.4.3.
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    /// One TLV: its tag, its contents, and what follows it.
    fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-octet tags never occur in the fields we walk
        }
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let octets = usize::from(first & 0x7f);
            if octets == 0 || octets > 4 || rest.len() < octets {
                return None;
            }
            let length = rest[..octets].iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
            (length, &rest[octets..])
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }

    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (found, contents, rest) = next(input)?;
        (found == tag).then_some((contents, rest))
    }

    /// The first CN attribute of the certificate's subject, if it is a string type we can read.
    pub fn subject_cn(certificate: &[u8]) -> Option<String> {
        let (certificate, _) = expect(certificate, SEQUENCE)?;
        let (tbs, _) = expect(certificate, SEQUENCE)?;
        let mut fields = tbs;
        if fields.first() == Some(&VERSION) {
            fields = next(fields)?.2;
        }
        // serialNumber, signature, issuer, validity, then subject.
        for _ in 0..4 {
            fields = next(fields)?.2;
        }
        let (mut names, _) = expect(fields, SEQUENCE)?;
        while !names.is_empty() {
            let (mut set, rest) = expect(names, SET)?;
            names = rest;
            while !set.is_empty() {
                let (attribute, rest) = expect(set, SEQUENCE)?;
                set = rest;
                let (oid, value) = expect(attribute, OID)?;
                if oid == COMMON_NAME {
                    let (tag, text, _) = next(value)?;
                    // UTF8String, PrintableString, IA5String
                    return matches!(tag, 0x0c | 0x13 | 0x16)
                        .then(|| std::str::from_utf8(text).ok().map(str::to_owned))
                        .flatten();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_cn(cn: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["client.example".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Roundhouse tests");
        if let Some(cn) = cn {
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_cn_and_fingerprint_are_read_from_a_certificate() {
        let der = cert_with_cn(Some("alice"));
        let cert = ClientCert::from_der(&der);
        assert_eq!(cert.subject_cn.as_deref(), Some("alice"));
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        assert_eq!(&cert.fingerprint_sha256[..], digest.as_ref());
        assert_eq!(cert.fingerprint_hex().len(), 64);
        assert_eq!(ClientCert::from_der(&cert_with_cn(None)).subject_cn, None);
    }

    #[test]
    fn truncated_or_garbage_der_gives_no_cn_and_no_panic() {
        let der = cert_with_cn(Some("bob"));
        for cut in 0..der.len() {
            let _ = der::subject_cn(&der[..cut]);
        }
        assert_eq!(der::subject_cn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(der::subject_cn(b"not der at all"), None);
    }

    #[test]
    fn client_auth_needs_a_ca_and_a_ca_needs_client_auth() {
        let config = |client_ca: Option<&str>, client_auth| TlsConfig {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: client_ca.map(PathBuf::from),
            client_auth,
        };
        let error = config(None, ClientAuth::None).acceptor().err().expect("no such files");
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
        let mut relative = config(Some("ca.pem"), ClientAuth::Required);
        relative.cert = "cert.pem".into();
        relative.resolve_paths(Path::new("/etc/roundhouse"));
        assert_eq!(relative.cert, Path::new("/etc/roundhouse/cert.pem"));
        assert_eq!(relative.client_ca.as_deref(), Some(Path::new("/etc/roundhouse/ca.pem")));
        assert_eq!(relative.key, Path::new("/nonexistent/key.pem"));
    }
}
