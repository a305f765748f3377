//! The rustls client configuration (ring provider) for an https API server.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::kubeconfig::{ConfigError, TlsConfig};

fn tls_err(problem: impl Into<String>) -> ConfigError {
    ConfigError::Tls {
        problem: problem.into(),
    }
}

/// Builds the TLS client configuration; fails on unreadable PEM or a mismatched key.
pub(crate) fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca_pem {
            Some(pem) => {
                let mut n = 0;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|_| tls_err("the CA bundle is not valid PEM"))?;
                    roots
                        .add(cert)
                        .map_err(|e| tls_err(format!("a CA certificate is unusable: {e}")))?;
                    n += 1;
                }
                if n == 0 {
                    return Err(tls_err("the CA bundle holds no certificate"));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &tls.client_identity {
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(&id.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| tls_err("the client certificate is not valid PEM"))?;
            if certs.is_empty() {
                return Err(tls_err("the client certificate holds no certificate"));
            }
            let key = PrivateKeyDer::from_pem_slice(&id.key_pem)
                .map_err(|_| tls_err("the client key is not a valid PEM private key"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_err(format!("the client certificate is unusable: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server name to verify: the override, or the host of the server address.
pub(crate) fn server_name(tls: &TlsConfig, host: &str) -> Result<ServerName<'static>, ConfigError> {
    let name = tls
        .server_name
        .as_deref()
        .unwrap_or(host.trim_start_matches('[').trim_end_matches(']'));
    ServerName::try_from(name.to_string())
        .map_err(|_| tls_err(format!("{name:?} is not a valid server name")))
}

/// `insecure-skip-tls-verify`: accept any certificate, still check handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_refused_and_insecure_builds() {
        let bad = TlsConfig {
            ca_pem: Some(b"not pem".to_vec()),
            ..TlsConfig::default()
        };
        assert!(client_config(&bad).is_err());
        let insecure = TlsConfig {
            insecure_skip_verify: true,
            ..TlsConfig::default()
        };
        assert!(client_config(&insecure).is_ok());
        assert!(client_config(&TlsConfig::default()).is_ok());
        assert!(server_name(&TlsConfig::default(), "[fd00::1]").is_ok());
    }
}
