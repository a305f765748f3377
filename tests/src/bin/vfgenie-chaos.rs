//! `hack/chaos`: pod lifecycles through the real genie binary (exec'd as a runtime does, Debian's
//! plugins as delegates, the API-server stand-in), three networks per pod (the cluster bridge,
//! a ptp NAD through a shim that can kill it, a macvlan CNI-Genie conf), with faults injected at
//! random points from a seeded generator: kills, API faults, damaged records, and genie's cache
//! and host-local's leases on a full or read-only file system. The runtime's contract applies: a failed or killed ADD
//! is followed by DEL; a DEL is retried with the faults cleared, at most [`DEL_TRIES`] times.
//!
//! After every lifecycle: no link left in the pod, no host-local lease, no genie record or other
//! file in its cache directory, no genie or delegate process of the node; and after a successful
//! ADD, the pod's network-status names exactly the addresses in its netns. One line of figures at
//! the end; the exit status is non-zero when anything leaked or a DEL never succeeded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use vfgenie_tests::chaos::{self, Call};
use vfgenie_tests::runtime::{run, HostLink, Node, Sandbox};

const NS: &str = "team";
/// DELs of one pod before it counts as stuck.
const DEL_TRIES: usize = 5;

/// The faults, each injected into one lifecycle.
const FAULTS: [&str; 13] = [
    "none",
    "api-reset",
    "disk-full",
    "read-only-state",
    "kill-genie-add",
    "kill-genie-del",
    "kill-delegate",
    "api-503",
    "api-slow",
    "api-409-storm",
    "api-outage-del",
    "corrupt-record",
    "truncate-record",
];

#[derive(Default)]
struct Figures {
    lifecycles: usize,
    faults: BTreeMap<&'static str, usize>,
    /// Per fault, the ADDs that failed under it.
    failed_adds: BTreeMap<&'static str, usize>,
    leaked_links: usize,
    leaked_leases: usize,
    leaked_records: usize,
    leaked_files: usize,
    leaked_processes: usize,
    status_mismatches: usize,
    stuck_dels: usize,
    adds_ok: usize,
}

fn main() -> anyhow::Result<()> {
    let mut seed = None;
    let mut lifecycles = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => seed = Some(args.next().context("--seed N")?.parse()?),
            "--lifecycles" => lifecycles = args.next().context("--lifecycles N")?.parse()?,
            other => bail!("unknown argument {other:?}: --seed N, --lifecycles N"),
        }
    }
    let seed: u64 = seed.unwrap_or_else(chaos::clock_seed);
    println!("chaos: seed {seed} (replay: hack/chaos --seed {seed} --lifecycles {lifecycles})");
    let mut rng = chaos::Rng::new(seed);

    let node = Node::new()?;
    let master = HostLink::veth("chm")?;
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.71.0.0/24"),
    )?;
    node.write_conf(
        "20-red.conf",
        &json!({"cniVersion": "1.0.0", "name": "red", "type": "macvlan", "master": master.0,
                "mode": "bridge", "ipam": node.ipam("10.73.0.0/24")}),
    )?;
    // The NAD's plugin: a shim that runs Debian's ptp, or kills it and itself mid-way when the
    // run asks (a flag file).
    let flag = node.dir.path().join("kill-delegate");
    let shim = node.bin_dir.join("chaosptp");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nin=$(cat)\nif [ -e '{flag}' ]; then\n  printf '%s' \"$in\" | '{ptp}' & p=$!\n  sleep 0.00$(( $$ % 9 + 1 ))\n  kill -9 $p 2>/dev/null\n  kill -9 $$\nfi\nprintf '%s' \"$in\" | exec '{ptp}'\n",
            flag = flag.display(),
            ptp = node.plugin_dir.join("ptp").display()
        ),
    )?;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
    let blue = json!({"cniVersion": "1.0.0", "name": "blue", "type": "chaosptp", "ipMasq": false,
                      "ipam": node.ipam("10.72.0.0/24")});
    node.api.add_nad(NS, "blue", &blue.to_string(), None);
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    // genie's cache and host-local's leases on small file systems of their own, which the run
    // fills or makes read-only.
    let cache_fs = StateFs::mount(&node.cache_dir)?;
    let ipam_fs = StateFs::mount(&node.ipam_dir)?;

    let mut f = Figures::default();
    let (mut seen_leases, mut seen_records, mut seen_files, mut seen_procs) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    let started = Instant::now();
    for i in 0..lifecycles {
        let fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        *f.faults.entry(fault).or_default() += 1;
        let pod = format!("p{i}");
        let cid = format!("c{i}");
        node.api.add_pod(
            NS,
            &pod,
            &[("k8s.v1.cni.cncf.io/networks", "blue"), ("cni", "red")],
        );
        let sb = Sandbox::new()?;
        let kill_after = Duration::from_millis(rng.below(60));

        // ADD, with this lifecycle's fault.
        match fault {
            "api-503" => node.api.inject_failures(&[503, 503]),
            "api-reset" => node.api.inject_resets(1 + rng.below(3) as usize),
            "api-slow" => node.api.set_delay(Duration::from_millis(200)),
            // genie retries a conflict 5 times: storms of 1 to 8 in a row, some beyond that.
            "api-409-storm" => node.api.inject_conflicts(1 + rng.below(8) as usize),
            "kill-delegate" => std::fs::write(&flag, b"")?,
            _ => {}
        }
        // Full: no room left but a few pages, so that some writes of the ADD may still fit.
        let state_faults = |on: bool| -> anyhow::Result<()> {
            match fault {
                "disk-full" => {
                    for fs in [&cache_fs, &ipam_fs] {
                        match on {
                            true => fs.fill(4096 * (i as u64 % 5))?,
                            false => fs.clear()?,
                        }
                    }
                }
                "read-only-state" => cache_fs.read_only(on)?,
                _ => {}
            }
            Ok(())
        };
        let state_at_add = rng.below(2) == 0;
        if state_at_add {
            state_faults(true)?;
        }
        let added = match fault {
            "kill-genie-add" => {
                let call = Call {
                    command: "ADD",
                    container_id: &cid,
                    netns: &sb.path,
                    namespace: NS,
                    pod: &pod,
                };
                chaos::kill_genie_during(&node, &call, &conf, kill_after)?;
                false
            }
            _ => {
                let out = node.cni("ADD", &cid, &sb.path, "eth0", Some((NS, &pod)), &conf)?;
                out.success
            }
        };
        node.api.inject_failures(&[]);
        node.api.set_delay(Duration::ZERO);
        node.api.inject_conflicts(0);
        node.api.inject_resets(0);
        let _ = std::fs::remove_file(&flag);
        if !added {
            *f.failed_adds.entry(fault).or_default() += 1;
        }
        if added {
            f.adds_ok += 1;
            if !status_matches(&node, &pod, &sb)? {
                f.status_mismatches += 1;
            }
        }

        // Faults between ADD and DEL, then DEL, retried with the faults cleared.
        let record = node.cache_dir.join(format!("vfgenie/{cid}-eth0.json"));
        match fault {
            "corrupt-record" if record.exists() => std::fs::write(&record, b"{\"kind\": 7, ")?,
            "truncate-record" if record.exists() => {
                let len = std::fs::metadata(&record)?.len();
                let file = std::fs::OpenOptions::new().write(true).open(&record)?;
                file.set_len(len / 2)?;
            }
            "api-outage-del" => node.api.set_available(false),
            "kill-genie-del" => {
                let call = Call {
                    command: "DEL",
                    container_id: &cid,
                    netns: &sb.path,
                    namespace: NS,
                    pod: &pod,
                };
                chaos::kill_genie_during(&node, &call, &conf, kill_after)?
            }
            _ => {}
        }
        if !state_at_add {
            state_faults(true)?;
        }
        let mut deleted = false;
        for _ in 0..DEL_TRIES {
            let out = node.cni("DEL", &cid, &sb.path, "eth0", Some((NS, &pod)), &conf)?;
            node.api.set_available(true);
            state_faults(false)?;
            if out.success {
                deleted = true;
                break;
            }
        }
        if !deleted {
            f.stuck_dels += 1;
            println!("chaos: lifecycle {i} ({fault}): DEL never succeeded");
        }
        node.api.delete_pod(NS, &pod);

        // Invariants: what this lifecycle left (earlier lifecycles' leftovers counted once).
        let links = sb.links()?;
        let fresh = |now: Vec<String>, seen: &mut BTreeSet<String>| -> Vec<String> {
            now.into_iter().filter(|x| seen.insert(x.clone())).collect()
        };
        let leases = fresh(node.leases(), &mut seen_leases);
        let records = fresh(node.cache_records(), &mut seen_records);
        let files = fresh(stray_files(&node.cache_dir), &mut seen_files);
        let procs = fresh(chaos::node_processes(&node)?, &mut seen_procs);
        if !(links.is_empty()
            && leases.is_empty()
            && records.is_empty()
            && files.is_empty()
            && procs.is_empty())
        {
            println!(
                "chaos: lifecycle {i} ({fault}) left links {links:?} leases {leases:?} records {records:?} files {files:?} processes {procs:?}"
            );
        }
        f.leaked_links += links.len();
        f.leaked_leases += leases.len();
        f.leaked_records += records.len();
        f.leaked_files += files.len();
        f.leaked_processes += procs.len();
        f.lifecycles += 1;
    }
    let leaked = f.leaked_links
        + f.leaked_leases
        + f.leaked_records
        + f.leaked_files
        + f.leaked_processes
        + f.status_mismatches;
    println!(
        "chaos: lifecycles {}, faults injected: {}, ADDs that succeeded {}, leaked: links={} leases={} VFs=n/a (host tier) records={} files={} processes={}, network-status mismatches {}, double assignments n/a (host tier), stuck DELs {}, in {:.1} s, seed {seed}",
        f.lifecycles,
        chaos::faults_summary(&f.faults, &f.failed_adds),
        f.adds_ok,
        f.leaked_links,
        f.leaked_leases,
        f.leaked_records,
        f.leaked_files,
        f.leaked_processes,
        f.status_mismatches,
        f.stuck_dels,
        started.elapsed().as_secs_f64()
    );
    if leaked > 0 || f.stuck_dels > 0 {
        bail!("chaos: something leaked or a DEL never succeeded (seed {seed})");
    }
    Ok(())
}

/// A small tmpfs over one of the node's state directories; unmounted on drop.
struct StateFs(std::path::PathBuf);

const FILLER: &str = ".chaos-filler";

impl StateFs {
    fn mount(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display().to_string();
        run(
            "mount",
            &["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", &d],
        )?;
        Ok(Self(dir.to_path_buf()))
    }

    /// Fills the file system, then frees `leave` bytes.
    fn fill(&self, leave: u64) -> anyhow::Result<()> {
        use std::io::Write;
        let path = self.0.join(FILLER);
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let len = std::fs::metadata(&path)?.len();
        f.set_len(len.saturating_sub(leave))?;
        Ok(())
    }

    fn clear(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.0.join(FILLER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn read_only(&self, ro: bool) -> anyhow::Result<()> {
        let opts = if ro { "remount,ro" } else { "remount,rw" };
        run("mount", &["-o", opts, &self.0.display().to_string()])?;
        Ok(())
    }
}

impl Drop for StateFs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.0.display().to_string()]);
    }
}

/// The pod's last network-status names exactly the addresses its netns has, per interface.
fn status_matches(node: &Node, pod: &str, sb: &Sandbox) -> anyhow::Result<bool> {
    let said = chaos::status_addresses(node, pod)?;
    let have = chaos::addresses_of(sb.addresses()?);
    if said.as_ref() != Some(&have) {
        println!("chaos: {pod}: network-status {said:?}, netns {have:?}");
    }
    Ok(said.as_ref() == Some(&have))
}

/// Files left in genie's cache directory other than its per-pod lock files' directory.
fn stray_files(cache: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![cache.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("/locks/") && !p.ends_with("vfgenie.lock") {
                out.push(p.strip_prefix(cache).unwrap_or(&p).display().to_string());
            }
        }
    }
    // genie's pod records are counted on their own.
    out.retain(|f| {
        !f.strip_prefix("vfgenie/")
            .is_some_and(|r| r.ends_with(".json") && !r.contains('/'))
    });
    out
}
