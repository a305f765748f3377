//! Kubeconfigs pointing at a stand-in (or anywhere).

use std::path::Path;

use anyhow::Context;

/// How a written kubeconfig authenticates.
#[derive(Debug, Clone, Copy)]
pub enum KubeAuth<'a> {
    None,
    Token(&'a str),
    TokenFile(&'a Path),
}

/// TLS settings of a written kubeconfig.
#[derive(Debug, Clone, Copy, Default)]
pub struct KubeTls<'a> {
    /// Written to a file beside the kubeconfig and named by `certificate-authority` (relative).
    pub ca_pem: Option<&'a str>,
    pub insecure_skip_tls_verify: bool,
    /// Written inline as `client-certificate-data` / `client-key-data`.
    pub client_cert_pem: Option<&'a str>,
    pub client_key_pem: Option<&'a str>,
}

/// Writes a kubeconfig (one cluster, one user, one context) pointing at `server`.
pub fn write_kubeconfig(path: &Path, server: &str, auth: KubeAuth<'_>) -> anyhow::Result<()> {
    write_kubeconfig_with(path, server, auth, KubeTls::default())
}

/// Writes a kubeconfig pointing at `server`, with TLS settings. A CA goes to `<path>.ca.crt`,
/// named relative to the kubeconfig (as kubectl resolves it).
pub fn write_kubeconfig_with(
    path: &Path,
    server: &str,
    auth: KubeAuth<'_>,
    tls: KubeTls<'_>,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut user = Vec::new();
    match auth {
        KubeAuth::None => {}
        KubeAuth::Token(t) => user.push(format!("token: {}", serde_json::to_string(t)?)),
        KubeAuth::TokenFile(p) => user.push(format!(
            "tokenFile: {}",
            serde_json::to_string(&p.to_string_lossy())?
        )),
    }
    if let Some(cert) = tls.client_cert_pem {
        user.push(format!("client-certificate-data: {}", b64(cert)));
    }
    if let Some(key) = tls.client_key_pem {
        user.push(format!("client-key-data: {}", b64(key)));
    }
    let mut cluster = vec![format!("server: {server}")];
    if let Some(ca) = tls.ca_pem {
        let file_name = format!(
            "{}.ca.crt",
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kubeconfig".into())
        );
        let ca_path = path.with_file_name(&file_name);
        std::fs::write(&ca_path, ca).with_context(|| format!("writing {}", ca_path.display()))?;
        cluster.push(format!("certificate-authority: {file_name}"));
    }
    if tls.insecure_skip_tls_verify {
        cluster.push("insecure-skip-tls-verify: true".into());
    }
    let user = format!("{{{}}}", user.join(", "));
    let cluster = cluster.join("\n    ");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: standin\nclusters:\n- name: standin\n  cluster:\n    {cluster}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: genie\nusers:\n- name: genie\n  user: {user}\n"
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
