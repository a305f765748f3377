//! genie's API step with genie's own client: `api-probe-ours KUBECONFIG NAMESPACE POD` reads the
//! pod and writes one annotation back through `pods/status`, as genie's ADD does, then exits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use vfcni::k8s::{Client, ClientOptions, ClusterConfig, InClusterPaths};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kubeconfig, namespace, pod] = args.as_slice() else {
        eprintln!("usage: api-probe-ours KUBECONFIG NAMESPACE POD");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let path = PathBuf::from(kubeconfig);
        let cluster = ClusterConfig::load(Some(&path), &InClusterPaths::default())?;
        let client = Client::new(cluster, ClientOptions::default())?;
        let (_, whole) = client.get_pod_object(namespace, pod)?;
        let changes = BTreeMap::from([("vfgenie.io/probe".to_string(), Some("ours".to_string()))]);
        client.set_pod_annotations_from(namespace, pod, Some(whole), &changes)?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api-probe-ours: {e}");
            ExitCode::FAILURE
        }
    }
}
