//! TLS of the node's listeners: one certificate (`http.tls_cert` / `http.tls_key`) serves
//! HTTPS on the read/control listener and RTMPS ingest on `rtmp.tls_listen`.
//!
//! Invariants:
//! - [`Certs`] always holds a usable certificate: it is built only from a pair that parsed and
//!   whose key matches the certificate, and a reload that fails (missing file, half-written
//!   renewal, mismatched key) keeps the pair in use and says why in the log.
//! - A reload swaps the pair for *new* handshakes only; established connections (and the
//!   streams they carry) are untouched, so a Let's Encrypt renewal plus SIGHUP drops nothing.
//! - Handshakes are bounded by the callers ([`HANDSHAKE_TIMEOUT`]): a client that connects and
//!   never finishes its handshake holds a slot for that long at most.
//!
//! File reads are blocking and small; they run at startup and on SIGHUP via `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// Longest a TLS handshake may take from accept (HTTPS and RTMPS).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN of the HTTPS listener: HTTP/2 first, HTTP/1.1 for everyone else.
pub const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1): {why}")]
    NoKey { path: PathBuf, why: String },
    #[error("{path}: unusable private key: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("{cert} and {key} do not belong together: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("{0}")]
    Config(String),
}

/// The crypto provider of every TLS config of the node (aws-lc-rs, also used by the clients).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key.to_owned(),
        why: e.to_string(),
    })?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::BadKey {
            path: key.to_owned(),
            why: e.to_string(),
        })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(e) => Err(TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            why: e.to_string(),
        }),
    }
}

/// The node's certificate, swappable while serving.
#[derive(Debug)]
pub struct Certs {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// std lock, held only to clone or replace the `Arc`.
    current: RwLock<Arc<CertifiedKey>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl Certs {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certs>, TlsError> {
        let pair = load_pair(cert, key)?;
        Ok(Arc::new(Certs {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: RwLock::new(Arc::new(pair)),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// Reads both files again; on success new handshakes use the new pair, on failure the old
    /// pair stays. Blocking (file reads).
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_pair(&self.cert_path, &self.key_path) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Successful and failed reloads so far (`/metrics`).
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        )
    }

    /// A server config answering every handshake with the current pair.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Reloads on every SIGHUP until `shutdown` (Unix; elsewhere nothing listens).
    pub fn reload_on_sighup(self: &Arc<Self>, shutdown: CancellationToken) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGHUP: certificates will not be reloaded");
                    return;
                }
            };
            let certs = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        got = hup.recv() => if got.is_none() { return },
                        _ = shutdown.cancelled() => return,
                    }
                    let c = certs.clone();
                    let result = tokio::task::spawn_blocking(move || c.reload()).await;
                    match result {
                        Ok(Ok(())) => tracing::info!(
                            cert = %certs.cert_path.display(),
                            "SIGHUP: certificate reloaded; new connections use it"
                        ),
                        Ok(Err(e)) => tracing::error!(
                            error = %e,
                            "SIGHUP: certificate not reloaded; still serving the previous one"
                        ),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
                    }
                }
            });
        }
        #[cfg(not(unix))]
        let _ = shutdown;
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The TLS reason of a failed request (bad certificate, wrong name, protocol mismatch), found
/// in its chain of causes. `io::Error` hides what it wraps from `source()`, so the walk goes
/// through `get_ref()` for those.
pub fn failure_of(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    // Bounded: error chains are short; a cycle cannot keep this going.
    for _ in 0..16 {
        let c = cause?;
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    fn leaf(certs: &Certs) -> Vec<u8> {
        certs.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn loads_a_pair_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "a");
        let (c2, k2) = write_pair(dir.path(), "b");
        Certs::load(&c, &k).unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(
            Certs::load(&missing, &k),
            Err(TlsError::Read { .. })
        ));
        assert!(matches!(
            Certs::load(&k, &k),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(Certs::load(&c, &c), Err(TlsError::NoKey { .. })));
        let e = Certs::load(&c, &k2).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("do not belong together"), "{e}");
        let garbage = dir.path().join("garbage.key");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(Certs::load(&c2, &garbage).is_err());
    }

    #[test]
    fn reload_swaps_the_pair_and_keeps_the_old_one_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "live");
        let certs = Certs::load(&c, &k).unwrap();
        let first = leaf(&certs);
        // A half-written renewal: the old pair stays.
        std::fs::write(&c, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(certs.reload().is_err());
        assert_eq!(leaf(&certs), first);
        assert_eq!(certs.reload_counts(), (0, 1));
        // The renewal lands: new handshakes get the new certificate.
        let (c2, k2) = write_pair(dir.path(), "new");
        std::fs::rename(c2, &c).unwrap();
        std::fs::rename(k2, &k).unwrap();
        certs.reload().unwrap();
        assert_ne!(leaf(&certs), first);
        assert_eq!(certs.reload_counts(), (1, 1));
        let config = certs.server_config(&HTTP_ALPN).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
