//! vfgenie-controller: `serve` (the admission webhook over the reflector caches) and `certs`
//! (a CA and serving certificate for the webhook's Service).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vfcontroller::caches::Caches;
use vfcontroller::lookup::Settings;
use vfcontroller::server::{Server, ServerConfig, Webhook};
use vfcontroller::status_loop::StatusLoop;
use vfkube::isolation::Isolation;

#[derive(Parser)]
#[command(name = "vfgenie-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook.
    Serve {
        #[arg(long, default_value = vfcontroller::server::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// The directory holding tls.crt and tls.key (a mounted cert-manager Secret).
        #[arg(long, default_value = vfcontroller::server::DEFAULT_TLS_DIR)]
        tls_dir: PathBuf,
        /// A namespace whose NetworkAttachmentDefinitions every pod may use under namespace
        /// isolation (genie conf `globalNamespaces`); repeat for several.
        #[arg(long = "global-namespace")]
        global_namespaces: Vec<String>,
        /// Pods may only use NetworkAttachmentDefinitions of their own or the global namespaces
        /// (genie conf `namespaceIsolation`); set it as the nodes' genie conf does.
        #[arg(long)]
        namespace_isolation: bool,
        /// How often, in milliseconds, LogicalNetwork statuses are recomputed (and written where
        /// they changed).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..))]
        status_interval_ms: u64,
        /// tracing filter (error, warn, info, debug, trace, or directives).
        #[arg(long, default_value = "info", env = "VFGENIE_LOG")]
        log_level: String,
    },
    /// Make a CA and a serving certificate for the webhook's Service; prints the caBundle.
    Certs {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Certs {
            namespace,
            service,
            out,
        } => {
            let g = vfcontroller::certs::generate(&namespace, &service)?;
            vfcontroller::certs::write(&out, &g)?;
            println!("{}", vfcontroller::certs::ca_bundle(&g));
            Ok(())
        }
        Command::Serve {
            listen,
            tls_dir,
            global_namespaces,
            namespace_isolation,
            status_interval_ms,
            log_level,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_new(&log_level)
                        .with_context(|| format!("--log-level {log_level:?}"))?,
                )
                .with_writer(std::io::stderr)
                .init();
            for ns in &global_namespaces {
                anyhow::ensure!(
                    vfkube::objects::is_dns_label(ns),
                    "--global-namespace {ns:?} is not a namespace name"
                );
            }
            let settings = Settings {
                isolation: Isolation {
                    enabled: namespace_isolation,
                    global_namespaces,
                },
            };
            let config = ServerConfig {
                listen,
                tls_dir,
                reload_every: Duration::from_secs(5),
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(
                    config,
                    settings,
                    Duration::from_millis(status_interval_ms),
                ))
        }
    }
}

async fn serve(
    config: ServerConfig,
    settings: Settings,
    status_interval: Duration,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API")?;
    let caches = Arc::new(Caches::start(client.clone()));
    let webhook = Arc::new(Webhook::new(Arc::clone(&caches), settings));
    // Beside the webhook, in every replica (no leader election: see status_loop).
    let _status = StatusLoop::start(client, caches, status_interval, webhook.shared_metrics());
    let server = Server::bind(&config, webhook).await?;
    tracing::info!(listen = %server.local_addr()?, "serving");
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
