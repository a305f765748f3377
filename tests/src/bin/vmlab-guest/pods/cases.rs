//! The pods scenario's later cases: concurrent ADDs, GC, a vfio VF, crashes mid-ADD, rollback,
//! a netns gone before DEL.

use super::*;

/// Two ADDs of one VF at once, for two pods: the VF's lock lets exactly one have it; the other
/// is refused as busy. DEL of the winner restores the VF.
pub(super) fn concurrent(lab: &Lab, root: &SysRoot) -> Result<()> {
    let vf = &lab.vfs[0];
    let pods: Vec<Pod> = ["pod-race-1", "pod-race-2"]
        .iter()
        .map(|id| Pod::new(id, conf("race", vf, 100, "10.56.80.0/24", json!({}))))
        .collect();
    for p in &pods {
        p.create_netns(root)?;
    }
    let result = (|| -> Result<()> {
        let runs: Vec<Result<Run>> = std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .map(|p| s.spawn(move || p.call("ADD", None)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked"))))
                .collect()
        });
        let runs = runs.into_iter().collect::<Result<Vec<Run>>>()?;
        let winners: Vec<usize> = (0..2).filter(|i| runs[*i].ok).collect();
        ensure!(
            winners.len() == 1,
            "{} of 2 concurrent ADDs succeeded: {:?}",
            winners.len(),
            runs.iter().map(|r| r.stdout.trim()).collect::<Vec<_>>()
        );
        let loser = &runs[1 - winners[0]];
        let code = loser.json()?.get("code").cloned();
        ensure!(code == Some(json!(101)), "loser's error: {}", loser.stdout);
        for p in &pods {
            p.call("DEL", None)?.require_ok(&format!("DEL {}", p.id))?;
        }
        assert_restored(lab, vf)?;
        ensure!(leases("race")?.is_empty(), "IP leases left");
        ensure!(records()?.is_empty(), "records left: {:?}", records()?);
        Ok(())
    })();
    for p in &pods {
        let _ = NetNs::delete_named(root, &p.id);
    }
    result
}

/// GC (CNI 1.1.0) with no valid attachments releases the network's VFs.
pub(super) fn gc(lab: &Lab, root: &SysRoot) -> Result<()> {
    let vf = &lab.vfs[1];
    let mut c = conf(
        "gc",
        vf,
        100,
        "10.56.90.0/24",
        json!({"cniVersion": "1.1.0", "mac": "02:00:00:00:09:01"}),
    );
    let pod = Pod::new("pod-gc", c.clone());
    pod.create_netns(root)?;
    let result = (|| -> Result<()> {
        pod.call("ADD", None)?.require_ok("ADD pod-gc")?;
        ensure!(!leases("gc")?.is_empty(), "no lease after ADD");
        c["cni.dev/valid-attachments"] = json!([]);
        let r = call_plugin(PLUGIN, "GC", "", "", &c, None)?;
        r.require_ok("GC")?;
        assert_restored(lab, vf)?;
        ensure!(leases("gc")?.is_empty(), "IP leases left after GC");
        ensure!(records()?.is_empty(), "records left: {:?}", records()?);
        pod.call("DEL", None)?.require_ok("DEL after GC")?;
        Ok(())
    })();
    let _ = NetNs::delete_named(root, &pod.id);
    result
}

pub(super) fn dpdk(lab: &Lab, root: &SysRoot) -> Result<()> {
    let vf = &lab.vfs[3];
    bind::bind_vfio(root, &vf.pci, TIMEOUT)?;
    let devinfo = format!("{}/cni/net1-device.json", devinfo_dir());
    let mut c = conf(
        "dpdk300",
        vf,
        300,
        "10.56.30.0/24",
        json!({"cniVersion": "1.1.0", "runtimeConfig": {"CNIDeviceInfoFile": devinfo}}),
    );
    if let Some(o) = c.as_object_mut() {
        o.remove("ipam");
    }
    let pod = Pod::new("pod-dpdk", c);
    pod.create_netns(root)?;
    let result = (|| -> Result<()> {
        let r = pod.call("ADD", None)?;
        r.require_ok("ADD pod-dpdk")?;
        let v = r.json()?;
        note(&format!("DPDK result: {}", v));
        ensure!(
            v.pointer("/interfaces/0/pciID") == Some(&json!(vf.pci.to_string())),
            "result does not carry {}: {v}",
            vf.pci
        );
        let (_, names) = pod_links(&pod.ns()?)?;
        ensure!(names.is_empty(), "links moved into the pod: {names:?}");
        let driver = sysfs::read_device(root, &vf.pci)?.driver;
        ensure!(
            driver.as_deref() == Some("vfio-pci"),
            "driver now {driver:?}"
        );
        let pf_side = lab.pf_side(vf.index)?;
        ensure!(pf_side.vlan == 300, "PF-side VLAN {}", pf_side.vlan);
        let info: Value = serde_json::from_slice(&std::fs::read(&devinfo)?)?;
        ensure!(
            info.pointer("/pci/pci-address") == Some(&json!(vf.pci.to_string())),
            "device-info {info}"
        );
        pod.call("DEL", None)?.require_ok("DEL pod-dpdk")?;
        let pf_side = lab.pf_side(vf.index)?;
        ensure!(pf_side.vlan == 0, "PF-side VLAN {} after DEL", pf_side.vlan);
        ensure!(!Path::new(&devinfo).exists(), "device-info left behind");
        ensure!(records()?.is_empty(), "records left: {:?}", records()?);
        Ok(())
    })();
    let _ = NetNs::delete_named(root, &pod.id);
    let back = bind::bind_default(root, &vf.pci, TIMEOUT);
    result?;
    back?;
    Ok(())
}

pub(super) fn crash(lab: &Lab, root: &SysRoot, step: &str) -> Result<()> {
    let vf = &lab.vfs[4];
    let pod = Pod::new(
        &format!("pod-crash-{step}"),
        conf(
            "crash",
            vf,
            100,
            "10.56.40.0/24",
            json!({"mac": "02:00:00:00:04:04", "mtu": 1400}),
        ),
    );
    pod.create_netns(root)?;
    let result = (|| -> Result<()> {
        let r = pod.call("ADD", Some(step))?;
        ensure!(
            r.signal == Some(6),
            "ADD with the crash point {step} did not abort: ok={} {}",
            r.ok,
            r.stdout.trim()
        );
        if step == "after-ipam" {
            ensure!(
                !leases("crash")?.is_empty(),
                "no lease taken before the crash"
            );
        }
        pod.call("DEL", None)?.require_ok("DEL after the crash")?;
        assert_restored(lab, vf)?;
        let (link, names) = pod_links(&pod.ns()?)?;
        ensure!(
            link.is_none() && names.is_empty(),
            "pod still has {names:?}"
        );
        let left = leases("crash")?;
        ensure!(left.is_empty(), "IP leases left: {left:?}");
        ensure!(records()?.is_empty(), "records left: {:?}", records()?);
        let temp = Path::new("/run/netns").join(format!(
            "vfgenie-sriov-{}",
            vf.pci.to_string().replace([':', '.'], "-")
        ));
        ensure!(!temp.exists(), "temporary netns {} left", temp.display());
        Ok(())
    })();
    let _ = NetNs::delete_named(root, &pod.id);
    result
}

/// An ADD that fails after the VF is in the pod (its IPAM plugin does not exist) leaves the VF
/// as it found it and no record.
pub(super) fn rollback(lab: &Lab, root: &SysRoot) -> Result<()> {
    let vf = &lab.vfs[4];
    let mut c = conf(
        "rollback",
        vf,
        100,
        "10.56.70.0/24",
        json!({"mac": "02:00:00:00:07:07", "mtu": 1400}),
    );
    c["ipam"]["type"] = json!("no-such-ipam");
    let pod = Pod::new("pod-rollback", c);
    pod.create_netns(root)?;
    let result = (|| -> Result<()> {
        let r = pod.call("ADD", None)?;
        ensure!(!r.ok, "ADD with a missing IPAM plugin succeeded");
        note(&format!("failed ADD: {}", r.stdout.trim()));
        assert_restored(lab, vf)?;
        let (_, names) = pod_links(&pod.ns()?)?;
        ensure!(names.is_empty(), "pod still has {names:?}");
        ensure!(records()?.is_empty(), "records left: {:?}", records()?);
        pod.call("DEL", None)?
            .require_ok("DEL after the failed ADD")?;
        Ok(())
    })();
    let _ = NetNs::delete_named(root, &pod.id);
    result
}

/// The pod's netns is destroyed before DEL: the kernel hands the VF back to the host (maybe as
/// devN); DEL finds it by PCI address and restores it.
pub(super) fn netns_gone(lab: &Lab, root: &SysRoot) -> Result<()> {
    let vf = &lab.vfs[5];
    let pod = Pod::new(
        "pod-gone",
        conf(
            "gone",
            vf,
            100,
            "10.56.50.0/24",
            json!({"mac": "02:00:00:00:05:05"}),
        ),
    );
    pod.create_netns(root)?;
    pod.call("ADD", None)?.require_ok("ADD pod-gone")?;
    NetNs::delete_named(root, &pod.id)?;
    let started = Instant::now();
    let r = pod.call("DEL", None)?;
    r.require_ok("DEL after the netns was deleted")?;
    note(&format!(
        "DEL without the netns took {:?}",
        started.elapsed()
    ));
    assert_restored(lab, vf)?;
    ensure!(leases("gone")?.is_empty(), "IP leases left");
    ensure!(records()?.is_empty(), "records left");
    Ok(())
}
