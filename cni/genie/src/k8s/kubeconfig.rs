//! Where the API server is and how to authenticate to it: a kubeconfig file (YAML) or the in-cluster
//! service-account files. Secrets are held in [`Secret`], whose `Debug` never shows them; errors name
//! files and keys, never their contents.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// The service-account directory mounted into every pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Errors while loading a kubeconfig or the in-cluster configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the kubeconfig {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML parser's message is left out on purpose: it may quote the file's contents.
    #[error("the kubeconfig {path} is not valid YAML for a kubeconfig{location}")]
    Parse { path: PathBuf, location: String },
    #[error("the kubeconfig {path} has no current-context")]
    NoCurrentContext { path: PathBuf },
    #[error("the kubeconfig {path} has no {kind} named {name:?}")]
    Missing {
        path: PathBuf,
        kind: &'static str,
        name: String,
    },
    #[error("the kubeconfig {path}: {key} is invalid: {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
    #[error("cannot read {what} {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not running in a cluster: {var} is not set")]
    NotInCluster { var: &'static str },
    #[error("the API server address {server:?} is invalid: {problem}")]
    Server { server: String, problem: String },
    #[error("the TLS settings are invalid: {problem}")]
    Tls { problem: String },
}

/// A secret value (a bearer token); `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// A fixed bearer token.
    Token(Secret),
    /// A bearer token read from this file on every request (so that rotation is picked up).
    TokenFile(PathBuf),
}

/// A client certificate and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// TLS settings for an https server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM bundle of the CAs to trust; `None` means the built-in web roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
    pub client_identity: Option<ClientIdentity>,
    /// Overrides the name checked against the server's certificate.
    pub server_name: Option<String>,
}

/// Everything needed to reach one API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `http://` or `https://` with host and optional port; no path.
    pub server: http::Uri,
    pub tls: TlsConfig,
    pub auth: Auth,
}

/// Where the in-cluster configuration comes from; [`Default`] gives the real paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InClusterPaths {
    pub token: PathBuf,
    pub ca: PathBuf,
}

impl Default for InClusterPaths {
    fn default() -> Self {
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        Self {
            token: dir.join("token"),
            ca: dir.join("ca.crt"),
        }
    }
}

impl ClusterConfig {
    /// The kubeconfig if one is given, otherwise the in-cluster configuration.
    pub fn load(
        kubeconfig: Option<&Path>,
        in_cluster: &InClusterPaths,
    ) -> Result<Self, ConfigError> {
        match kubeconfig {
            Some(path) => Self::from_kubeconfig(path),
            None => Self::in_cluster(in_cluster),
        }
    }

    /// Reads a kubeconfig file and resolves its current context. Relative file names in it are
    /// relative to the kubeconfig's directory, as kubectl has it.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, ConfigError> {
        let text =
            crate::bounded::read_to_string(path, crate::bounded::CONFIG_MAX).map_err(|source| {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Self::from_kubeconfig_str(&text, path)
    }

    /// Parses kubeconfig text; `path` names it in errors and anchors relative file names.
    pub fn from_kubeconfig_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let kc: Kubeconfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            location: e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let missing = |kind, name: &str| ConfigError::Missing {
            path: path.to_path_buf(),
            kind,
            name: name.to_string(),
        };
        let invalid = |key, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
        };
        let current = kc
            .current_context
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConfigError::NoCurrentContext {
                path: path.to_path_buf(),
            })?;
        let context = kc
            .contexts
            .iter()
            .find(|c| c.name == current)
            .map(|c| &c.context)
            .ok_or_else(|| missing("context", &current))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .map(|c| &c.cluster)
            .ok_or_else(|| missing("cluster", &context.cluster))?;
        let user = match &context.user {
            Some(name) if !name.is_empty() => Some(
                kc.users
                    .iter()
                    .find(|u| &u.name == name)
                    .map(|u| &u.user)
                    .ok_or_else(|| missing("user", name))?,
            ),
            _ => None,
        };

        let server = parse_server(&cluster.server)?;
        let ca_pem = data_or_file(
            cluster.certificate_authority_data.as_deref(),
            cluster.certificate_authority.as_deref(),
            base,
            "certificate-authority-data",
            "the certificate authority",
        )
        .map_err(|e| e.into_config(&invalid))?;
        let mut tls = TlsConfig {
            ca_pem,
            insecure_skip_verify: cluster.insecure_skip_tls_verify,
            client_identity: None,
            server_name: cluster.tls_server_name.clone().filter(|s| !s.is_empty()),
        };
        let mut auth = Auth::None;
        if let Some(user) = user {
            let cert = data_or_file(
                user.client_certificate_data.as_deref(),
                user.client_certificate.as_deref(),
                base,
                "client-certificate-data",
                "the client certificate",
            )
            .map_err(|e| e.into_config(&invalid))?;
            let key = data_or_file(
                user.client_key_data.as_deref(),
                user.client_key.as_deref(),
                base,
                "client-key-data",
                "the client key",
            )
            .map_err(|e| e.into_config(&invalid))?;
            tls.client_identity = match (cert, key) {
                (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(invalid(
                        "client-key",
                        "a client certificate needs a key".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "client-certificate",
                        "a client key needs a certificate".into(),
                    ))
                }
            };
            auth = match (&user.token, &user.token_file) {
                (Some(token), _) if !token.is_empty() => Auth::Token(Secret::new(token.trim())),
                (_, Some(file)) if !file.is_empty() => Auth::TokenFile(resolve(base, file)),
                _ => Auth::None,
            };
        }
        Ok(Self { server, tls, auth })
    }

    /// The in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's CA,
    /// and its token file (re-read on every request).
    pub fn in_cluster(paths: &InClusterPaths) -> Result<Self, ConfigError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .ok_or(ConfigError::NotInCluster {
                var: "KUBERNETES_SERVICE_HOST",
            })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or(ConfigError::NotInCluster {
                var: "KUBERNETES_SERVICE_PORT",
            })?;
        Self::in_cluster_at(&host, &port, paths)
    }

    /// The in-cluster configuration for an explicit service host and port.
    pub fn in_cluster_at(
        host: &str,
        port: &str,
        paths: &InClusterPaths,
    ) -> Result<Self, ConfigError> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let server = parse_server(&format!("https://{host}:{port}"))?;
        let ca = crate::bounded::read(&paths.ca, crate::bounded::CONFIG_MAX).map_err(|source| {
            ConfigError::ReadFile {
                what: "the service account CA",
                path: paths.ca.clone(),
                source,
            }
        })?;
        Ok(Self {
            server,
            tls: TlsConfig {
                ca_pem: Some(ca),
                ..TlsConfig::default()
            },
            auth: Auth::TokenFile(paths.token.clone()),
        })
    }

    /// Replaces the server address (CNI-Genie's `kubernetes.k8s_api_root`).
    pub fn with_server(mut self, server: &str) -> Result<Self, ConfigError> {
        self.server = parse_server(server)?;
        Ok(self)
    }
}

/// Checks an API server address: http or https, a host, no path beyond `/`.
pub fn parse_server(server: &str) -> Result<http::Uri, ConfigError> {
    let err = |problem: &str| ConfigError::Server {
        server: server.to_string(),
        problem: problem.to_string(),
    };
    let uri: http::Uri = server
        .trim_end_matches('/')
        .parse()
        .map_err(|_| err("it is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(err("the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(err("it has no host"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(err("a path after the host is not supported"));
    }
    Ok(uri)
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

enum DataError {
    Base64(&'static str),
    Read(&'static str, PathBuf, std::io::Error),
}

impl DataError {
    fn into_config(self, invalid: &dyn Fn(&'static str, String) -> ConfigError) -> ConfigError {
        match self {
            DataError::Base64(key) => invalid(key, "it is not base64".into()),
            DataError::Read(what, path, source) => ConfigError::ReadFile { what, path, source },
        }
    }
}

fn data_or_file(
    data: Option<&str>,
    file: Option<&str>,
    base: &Path,
    key: &'static str,
    what: &'static str,
) -> Result<Option<Vec<u8>>, DataError> {
    if let Some(data) = data.filter(|d| !d.trim().is_empty()) {
        let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|_| DataError::Base64(key));
    }
    match file.filter(|f| !f.is_empty()) {
        Some(file) => {
            let path = resolve(base, file);
            crate::bounded::read(&path, crate::bounded::CONFIG_MAX)
                .map(Some)
                .map_err(|e| DataError::Read(what, path, e))
        }
        None => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(default)]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<KcCluster>>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    cluster: T,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: KcUser,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: KcContext,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KcCluster {
    server: String,
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    #[serde(default)]
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct KcUser {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<String>,
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
}

#[derive(Deserialize)]
struct KcContext {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC: &str = r#"
apiVersion: v1
kind: Config
current-context: b
clusters:
- name: c1
  cluster:
    server: https://10.96.0.1:443
    certificate-authority-data: LS0tLS1CRUdJTg==
- name: c2
  cluster:
    server: http://127.0.0.1:8080/
    insecure-skip-tls-verify: true
contexts:
- name: a
  context: {cluster: c1, user: u1}
- name: b
  context: {cluster: c2, user: u2}
users:
- name: u1
  user: {token: abc}
- name: u2
  user: {tokenFile: tok}
"#;

    #[test]
    fn current_context_selects_cluster_and_user() {
        let c = ClusterConfig::from_kubeconfig_str(KC, Path::new("/etc/cni/net.d/kc")).unwrap();
        assert_eq!(c.server.to_string(), "http://127.0.0.1:8080/");
        assert!(c.tls.insecure_skip_verify);
        assert_eq!(c.auth, Auth::TokenFile(PathBuf::from("/etc/cni/net.d/tok")));
        let a = ClusterConfig::from_kubeconfig_str(
            &KC.replace("current-context: b", "current-context: a"),
            Path::new("/x/kc"),
        )
        .unwrap();
        assert_eq!(a.server.host(), Some("10.96.0.1"));
        assert_eq!(a.tls.ca_pem.as_deref(), Some(&b"-----BEGIN"[..]));
        assert_eq!(a.auth, Auth::Token(Secret::new("abc")));
        assert_eq!(format!("{:?}", a.auth), "Token(<redacted>)");
    }

    #[test]
    fn errors_name_the_problem_without_contents() {
        let e = ClusterConfig::from_kubeconfig_str(
            &KC.replace("current-context: b", "current-context: zz"),
            Path::new("/kc"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the kubeconfig /kc has no context named \"zz\""
        );
        let e = ClusterConfig::from_kubeconfig_str(
            "users: [{name: u, user: {token: [s3cret]}}]",
            Path::new("/kc"),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = ClusterConfig::from_kubeconfig_str(
            &KC.replace("LS0tLS1CRUdJTg==", "not*base64"),
            Path::new("/kc"),
        );
        assert!(e.is_ok(), "context b does not use c1");
        let e = ClusterConfig::from_kubeconfig_str(
            &KC.replace("LS0tLS1CRUdJTg==", "not*base64")
                .replace("current-context: b", "current-context: a"),
            Path::new("/kc"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate-authority-data is invalid"),
            "{e}"
        );
    }

    #[test]
    fn a_kubeconfig_or_file_that_is_a_device_fails_fast_naming_it() {
        let e = ClusterConfig::from_kubeconfig(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        let why = std::error::Error::source(&e).unwrap().to_string();
        assert!(why.contains("character device"), "{why}");
        let d = tempfile::tempdir().unwrap();
        let kc = d.path().join("kubeconfig");
        std::fs::write(
            &kc,
            KC.replace("current-context: b", "current-context: a")
                .replace(
                    "certificate-authority-data: LS0tLS1CRUdJTg==",
                    "certificate-authority: /dev/zero",
                ),
        )
        .unwrap();
        let e = ClusterConfig::from_kubeconfig(&kc).unwrap_err();
        assert!(e.to_string().contains("/dev/zero"), "{e}");
    }

    #[test]
    fn server_addresses_are_checked() {
        assert!(parse_server("https://api.example:6443").is_ok());
        assert!(parse_server("ftp://x").is_err());
        assert!(parse_server("https://x/api").is_err());
        assert!(parse_server("not a url").is_err());
    }

    #[test]
    fn in_cluster_reads_the_ca_and_uses_the_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = InClusterPaths {
            token: dir.path().join("token"),
            ca: dir.path().join("ca.crt"),
        };
        assert!(matches!(
            ClusterConfig::in_cluster_at("10.0.0.1", "443", &paths),
            Err(ConfigError::ReadFile { .. })
        ));
        std::fs::write(&paths.ca, "pem").unwrap();
        let c = ClusterConfig::in_cluster_at("fd00::1", "443", &paths).unwrap();
        assert_eq!(c.server.to_string(), "https://[fd00::1]:443/");
        assert_eq!(c.auth, Auth::TokenFile(paths.token.clone()));
    }
}
