//! The serving certificate: `tls.crt` and `tls.key` in a directory (cert-manager's Secret layout),
//! reloaded when their contents change. A pair that does not load (unparsable, or a key that does
//! not match the certificate, as while the two files are replaced one after the other) keeps the
//! old pair in service and is logged once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
/// Larger than any certificate chain or key we serve.
const MAX_PEM: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_PEM} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("{key} does not belong to the certificate in {cert}: {problem}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        problem: String,
    },
    #[error("the TLS configuration cannot be built: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    f.take(MAX_PEM + 1)
        .read_to_end(&mut out)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > MAX_PEM {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Builds a certified key from PEM bytes, checking that the key matches the certificate.
fn certified(dir: &Path, crt: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let der = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key {
        path: key_path.clone(),
        problem: e.to_string(),
    })?;
    let signing = any_supported_type(&der).map_err(|e| TlsError::Key {
        path: key_path.clone(),
        problem: e.to_string(),
    })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert_path,
        key: key_path,
        problem: e.to_string(),
    })?;
    Ok(ck)
}

/// The pair in service, and the file contents it was last compared with.
#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl CertStore {
    /// Loads the pair in `dir`; it must load now.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let crt = read(&dir.join(CERT_FILE))?;
        let key = read(&dir.join(KEY_FILE))?;
        let ck = certified(dir, &crt, &key)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            seen: Mutex::new((crt, key)),
        })
    }

    /// Reloads the pair when the files' contents changed. `Ok(true)` when a new pair is in
    /// service; an error (the old pair stays) is returned once per changed content.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let crt = read(&self.dir.join(CERT_FILE))?;
        let key = read(&self.dir.join(KEY_FILE))?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.0 == crt && seen.1 == key {
                return Ok(false);
            }
            *seen = (crt.clone(), key.clone());
        }
        let ck = certified(&self.dir, &crt, &key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        Ok(true)
    }

    /// Polls the files every `every` until the task is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(dir = %self.dir.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => tracing::error!(
                    dir = %self.dir.display(),
                    error = %e,
                    "the new serving certificate does not load; the old one stays in service"
                ),
            }
        }
    }

    /// A rustls server config that serves the current pair (HTTP/1.1 only).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatched_or_broken_pair_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::certs::generate("ns", "svc").unwrap();
        crate::certs::write(dir.path(), &first).unwrap();
        let store = CertStore::load(dir.path()).unwrap();
        let served = || store.current.read().unwrap().cert.clone();
        let before = served();
        assert!(!store.reload_if_changed().unwrap());

        let second = crate::certs::generate("ns", "svc").unwrap();
        std::fs::write(dir.path().join(KEY_FILE), &second.key_pem).unwrap();
        assert!(matches!(
            store.reload_if_changed(),
            Err(TlsError::Mismatch { .. })
        ));
        // The same broken contents are not reported again.
        assert!(!store.reload_if_changed().unwrap());
        assert_eq!(served(), before);

        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        assert!(matches!(
            store.reload_if_changed(),
            Err(TlsError::NoCertificate { .. })
        ));
        assert_eq!(served(), before);

        crate::certs::write(dir.path(), &second).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert_ne!(served(), before);
        assert!(CertStore::load(&dir.path().join("missing")).is_err());
    }
}
