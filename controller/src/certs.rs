//! `vfgenie-controller certs`: a CA and a serving certificate for the webhook's Service, for
//! clusters without cert-manager. Writes `ca.crt`, `tls.crt` and `tls.key` (the key mode 0600),
//! each atomically (a new file created exclusively, then renamed over the old one).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub const CA_FILE: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{what} is not a DNS-1123 label: {value:?}")]
    Name { what: &'static str, value: String },
    #[error("cannot make the {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A CA and a serving certificate signed by it, in PEM.
#[derive(Debug, Clone)]
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The DNS names the API server may use for the Service.
pub fn dns_names(namespace: &str, service: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn generate_err(what: &'static str) -> impl Fn(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}

/// Makes a new CA and a serving certificate for `service.namespace`.
pub fn generate(namespace: &str, service: &str) -> Result<Generated, CertError> {
    for (what, value) in [("namespace", namespace), ("service", service)] {
        if !vfkube::objects::is_dns_label(value) {
            return Err(CertError::Name {
                what,
                value: value.to_string(),
            });
        }
    }
    let ca_key = KeyPair::generate().map_err(generate_err("CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(generate_err("CA"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("vfgenie-controller CA {namespace}/{service}"),
    );
    ca.distinguished_name = dn;
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(generate_err("CA certificate"))?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(generate_err("serving key"))?;
    let names = dns_names(namespace, service);
    let mut leaf =
        CertificateParams::new(names.clone()).map_err(generate_err("serving certificate"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[2].clone());
    leaf.distinguished_name = dn;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf
        .signed_by(&key, &issuer)
        .map_err(generate_err("serving certificate"))?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `contents` to `dir/name` atomically: a temporary file created exclusively with `mode`,
/// synced, renamed over `name`.
fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let err = |source| CertError::Write {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    let done = f
        .write_all(contents)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir` (created if missing). The certificate is
/// written before the key; a reader of the directory may see a mismatched pair for a moment
/// (the server's reload keeps the old pair until both match).
pub fn write(dir: &Path, g: &Generated) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomic(dir, CA_FILE, g.ca_pem.as_bytes(), 0o644)?;
    write_atomic(dir, crate::tls::CERT_FILE, g.cert_pem.as_bytes(), 0o644)?;
    write_atomic(dir, crate::tls::KEY_FILE, g.key_pem.as_bytes(), 0o600)?;
    Ok(())
}

/// The webhook configuration's `caBundle`: the CA's PEM, base64.
pub fn ca_bundle(g: &Generated) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(g.ca_pem.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_pair_loads_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate("vfgenie", "webhook").unwrap();
        write(dir.path(), &g).unwrap();
        write(dir.path(), &g).unwrap();
        crate::tls::CertStore::load(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(ca_bundle(&g).len() > 100);
        assert!(generate("a/b", "w").is_err());
        assert_eq!(dns_names("ns", "svc")[3], "svc.ns.svc.cluster.local");
    }
}
