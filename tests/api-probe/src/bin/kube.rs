//! genie's API step with kube's client (rustls): `api-probe-kube KUBECONFIG NAMESPACE POD` reads
//! the pod and writes one annotation back through `pods/status` (a replace carrying the read
//! object's resourceVersion, as genie's own client does), then exits.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn step(
    kubeconfig: &str,
    namespace: &str,
    pod: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let mut obj = pods.get(pod).await?;
    obj.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("vfgenie.io/probe".into(), "kube".into());
    pods.replace_status(pod, &PostParams::default(), &obj)
        .await?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kubeconfig, namespace, pod] = args.as_slice() else {
        eprintln!("usage: api-probe-kube KUBECONFIG NAMESPACE POD");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("api-probe-kube: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(step(kubeconfig, namespace, pod)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api-probe-kube: {e}");
            ExitCode::FAILURE
        }
    }
}
