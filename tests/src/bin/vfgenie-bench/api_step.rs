//! `cni.api_step`: genie's API step (read the pod, write its network-status through pods/status)
//! exec'd as a process of its own, once with genie's hand-written client (`api-probe-ours`) and
//! once with kube's (`api-probe-kube`, rustls), alternating against one https API-server stand-in
//! with a CA and a token, as on a node. Each sample is exec to exit, so it holds what genie pays
//! per ADD for its client: loading and relocating the code, reading the kubeconfig, the TLS
//! handshake and both requests. The decision rule (architecture.md, "kube in the CNI"): genie
//! switches to kube's client when it costs less than 0.5 ms more per ADD at the p50.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vfgenie_tests::apiserver::{ApiServer, KubeAuth, KubeTls};

use super::{fmt, sibling_binary, Samples, NS};

/// Execs of each probe.
const RUNS: usize = 200;
/// The aim's threshold: kube's client may cost at most this much more per ADD.
const SWITCH_BELOW: Duration = Duration::from_micros(500);

fn one(probe: &Path, kubeconfig: &Path, pod: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new(probe)
        .arg(kubeconfig)
        .arg(NS)
        .arg(pod)
        .output()
        .with_context(|| format!("running {}", probe.display()))?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            probe.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

pub fn api_step() -> anyhow::Result<()> {
    let ours = sibling_binary("api-probe-ours")?;
    let kube = sibling_binary("api-probe-kube")?;
    let (api, tls) = ApiServer::start_tls(false)?;
    api.set_token(Some("t0ken"));
    let dir = tempfile::tempdir()?;
    let kubeconfig = api.write_kubeconfig_tls(
        &dir.path().join("kubeconfig"),
        KubeAuth::Token("t0ken"),
        KubeTls {
            ca_pem: Some(&tls.ca_pem),
            ..KubeTls::default()
        },
    )?;
    api.add_pod(NS, "probe", &[]);
    // Warm the page cache and check both work before measuring.
    one(&ours, &kubeconfig, "probe")?;
    one(&kube, &kubeconfig, "probe")?;
    let (mut o, mut k) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    let mut diffs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let a = one(&ours, &kubeconfig, "probe")?;
        let b = one(&kube, &kubeconfig, "probe")?;
        o.push(a);
        k.push(b);
        diffs.push(b.as_secs_f64() - a.as_secs_f64());
    }
    let (o, k) = (Samples::new(o), Samples::new(k));
    diffs.sort_by(f64::total_cmp);
    let d50 = diffs[diffs.len().div_ceil(2) - 1];
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1_048_576.0);
    println!(
        "cni.api_step.ours (exec + kubeconfig + TLS + GET pod + PUT status, genie's client): p50 {} p90 {} (n={}) binary {:.1} MiB",
        fmt(o.pct(50.0)),
        fmt(o.pct(90.0)),
        o.n(),
        size(&ours)?
    );
    println!(
        "cni.api_step.kube (the same with kube 5.0.0, rustls): p50 {} p90 {} (n={}) binary {:.1} MiB",
        fmt(k.pct(50.0)),
        fmt(k.pct(90.0)),
        k.n(),
        size(&kube)?
    );
    let extra = Duration::from_secs_f64(d50.max(0.0));
    println!(
        "cni.api_step.kube_extra (kube - ours, per pair): p50 {:+.3} ms, ratio of p50s {:.2}  switch to kube when < {}: {}",
        d50 * 1000.0,
        k.pct(50.0).as_secs_f64() / o.pct(50.0).as_secs_f64(),
        fmt(SWITCH_BELOW),
        if extra < SWITCH_BELOW {
            "yes, switch"
        } else {
            "no, keep genie's client"
        }
    );
    Ok(())
}
