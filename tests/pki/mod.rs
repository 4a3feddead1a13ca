//! Test support: certificate authorities and certificates made at test time (rcgen), written to
//! PEM files in a directory of their own, and TLS client configs that trust them.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use roundhouse::transport::tls::{ClientAuth, TlsConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    /// A fresh CA called `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `cn`, valid for the names in `sans` (DNS names or IP addresses).
    pub fn issue(&self, cn: &str, sans: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A router certificate for loopback (`localhost`, 127.0.0.1).
    pub fn server(&self) -> Leaf {
        self.issue("roundhouse test router", &["localhost", "127.0.0.1"])
    }
}

impl Leaf {
    /// The chain and key, as a TLS client presents them.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.der.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())))
    }
}

/// A directory of PEM files, removed when dropped.
pub struct Dir {
    pub path: PathBuf,
}

impl Dir {
    /// A fresh directory under the system's temporary directory.
    pub fn temp() -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("roundhouse-tls-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        Dir { path }
    }

    /// Writes `contents` to `name` in the directory (replacing it atomically) and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        let staging = self.path.join(format!(".{name}.new"));
        std::fs::write(&staging, contents).unwrap();
        std::fs::rename(&staging, &path).unwrap();
        path
    }

    /// Writes a router certificate and key, and returns a `tls` config naming them.
    pub fn server_tls(&self, leaf: &Leaf) -> TlsConfig {
        TlsConfig {
            cert: self.write("router.pem", &leaf.cert_pem),
            key: self.write("router.key", &leaf.key_pem),
            client_ca: None,
            client_auth: ClientAuth::None,
        }
    }

    /// [`Dir::server_tls`] asking for client certificates issued by `clients`.
    pub fn mtls(&self, leaf: &Leaf, clients: &Ca, client_auth: ClientAuth) -> TlsConfig {
        TlsConfig {
            client_ca: Some(self.write("clients-ca.pem", &clients.pem())),
            client_auth,
            ..self.server_tls(leaf)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A client config that trusts `ca` and presents no certificate.
pub fn trusting(ca: &Ca) -> Arc<rustls::ClientConfig> {
    roundhouse::client::tls_config(vec![ca.der()], None).unwrap()
}

/// A client config that trusts `ca` and presents `identity`.
pub fn presenting(ca: &Ca, identity: &Leaf) -> Arc<rustls::ClientConfig> {
    roundhouse::client::tls_config(vec![ca.der()], Some(identity.identity())).unwrap()
}
