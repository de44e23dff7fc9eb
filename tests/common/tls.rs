//! Test certificates: one CA per test process (trusted by [`super::http`]) and leaf
//! certificates for `localhost` / `127.0.0.1` signed by it, made with rcgen in a temporary
//! folder. [`untrusted_pair`] is signed by a CA nobody trusts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// The test CA and a leaf certificate it signed.
pub struct Pki {
    /// The CA certificate (PEM): what `relay.ca_file` and test clients trust.
    pub ca: PathBuf,
    pub ca_pem: String,
    /// A leaf for `localhost` and `127.0.0.1` (PEM chain) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// Writes a leaf for `localhost` and `127.0.0.1` signed by `issuer` into `dir`.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, issuer).expect("leaf");
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

/// The process's test PKI (made once).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("dvrgate-pki")
            .tempdir()
            .expect("pki dir")
            .keep();
        let issuer = ca("dvrgate test CA");
        let ca_pem = issuer.pem();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &ca_pem).expect("write CA");
        let (cert, key) = leaf(&issuer, &dir, "node");
        Pki {
            ca,
            ca_pem,
            cert,
            key,
            issuer,
            dir,
        }
    })
}

impl Pki {
    /// A new leaf of the test CA (e.g. a renewal), written under `name`.
    pub fn new_leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        leaf(&self.issuer, &self.dir, name)
    }
}

/// A leaf for `localhost` / `127.0.0.1` signed by a CA no client trusts, written into `dir`.
pub fn untrusted_pair(dir: &Path) -> (PathBuf, PathBuf) {
    leaf(&ca("nobody's CA"), dir, "untrusted")
}

/// `tls_cert` / `tls_key` lines (for an `[http]` section) of `pair`.
pub fn tls_lines(pair: (&Path, &Path)) -> String {
    format!("tls_cert = {:?}\ntls_key = {:?}\n", pair.0, pair.1)
}

/// `[http]` of a node serving HTTPS with the test PKI's leaf.
pub fn https_section() -> String {
    let p = pki();
    format!("[http]\n{}", tls_lines((&p.cert, &p.key)))
}
