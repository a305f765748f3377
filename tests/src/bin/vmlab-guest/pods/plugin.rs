//! Calling the sriov plugin as a runtime does, and reading back what it did (addresses, links,
//! leases, records, the VF restored).

use super::*;

pub(super) fn call_plugin(
    binary: &str,
    command: &str,
    id: &str,
    netns: &str,
    conf: &Value,
    crash: Option<&str>,
) -> Result<Run> {
    let mut cmd = Command::new(binary);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}"),
        )
        .env("VFGENIE_LOG", "info")
        .env("VFGENIE_SRIOV_STATE_DIR", state_dir())
        .env("VFGENIE_DEVICE_INFO_DIR", devinfo_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match crash {
        Some(step) => cmd.env("VFGENIE_SRIOV_CRASH_AT", step),
        None => cmd.env_remove("VFGENIE_SRIOV_CRASH_AT"),
    };
    let mut child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        stdin.write_all(conf.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        signal: out.status.signal(),
    })
}

pub(super) fn conf(network: &str, vf: &Original, vlan: u16, subnet: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": network,
        "type": "sriov",
        "deviceID": vf.pci.to_string(),
        "vlan": vlan,
        "spoofchk": "on",
        "trust": "off",
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": ipam_dir()},
        "logLevel": "debug",
        "logFile": SRIOV_LOG,
    });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

pub(super) fn result_ip(r: &Value) -> Result<IpAddr> {
    let a = r
        .pointer("/ips/0/address")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("result has no address: {r}"))?;
    let ip = a.split('/').next().unwrap_or_default();
    Ok(ip.parse()?)
}

pub(super) fn ping(ns: &NetNs, target: IpAddr, count: u32) -> Result<(bool, String)> {
    let (target, count) = (target.to_string(), count.to_string());
    let out = ns.run(|| {
        Command::new("ping")
            .args(["-c", &count, "-W", "2", &target])
            .output()
    })??;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The pod's view of net1 (None when absent) and its non-loopback link names.
pub(super) fn pod_links(ns: &NetNs) -> Result<(Option<vfcore::netlink::LinkInfo>, Vec<String>)> {
    ns.run(|| -> Result<_> {
        let mut nl = Netlink::open()?;
        let names = nl
            .links()?
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n != "lo")
            .collect();
        Ok((nl.link_by_name("net1")?, names))
    })?
}

/// Host-local's leases: files named by an address in the network's dir.
pub(super) fn leases(network: &str) -> Result<Vec<String>> {
    let dir = Path::new(&ipam_dir()).join(network);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.parse::<IpAddr>().is_ok() {
            out.push(name);
        }
    }
    Ok(out)
}

pub(super) fn records() -> Result<Vec<String>> {
    let dir = Path::new(&state_dir()).join("attachments");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// The VF is back in the host as it was: name, MAC, MTU, PF-side MAC and VLAN.
pub(crate) fn assert_restored(lab: &Lab, vf: &Original) -> Result<()> {
    let name = provision::wait_vf_netdev(&lab.root, &vf.pci, TIMEOUT)?;
    ensure!(
        name == vf.name,
        "{} is back as {name}, not {}",
        vf.pci,
        vf.name
    );
    let mut nl = Netlink::open()?;
    let link = nl
        .link_by_name(&name)?
        .ok_or_else(|| anyhow!("no link {name}"))?;
    ensure!(
        link.mac == vf.mac,
        "{name} has MAC {:?}, not {:?}",
        link.mac.map(|m| m.to_string()),
        vf.mac.map(|m| m.to_string())
    );
    ensure!(
        link.mtu == vf.mtu,
        "{name} has MTU {}, not {}",
        link.mtu,
        vf.mtu
    );
    let pf_side = lab.pf_side(vf.index)?;
    ensure!(
        pf_side.vlan == 0 && pf_side.qos == 0,
        "VF {} still has VLAN {}",
        vf.index,
        pf_side.vlan
    );
    ensure!(
        pf_side.mac == vf.pf_side.mac,
        "VF {} has PF-side MAC {}, not {}",
        vf.index,
        pf_side.mac,
        vf.pf_side.mac
    );
    ensure!(
        pf_side.spoofchk == vf.pf_side.spoofchk && pf_side.trust == vf.pf_side.trust,
        "VF {} spoofchk/trust {:?}/{:?}, not {:?}/{:?}",
        vf.index,
        pf_side.spoofchk,
        pf_side.trust,
        vf.pf_side.spoofchk,
        vf.pf_side.trust
    );
    Ok(())
}

/// The VF is as free as before ADD: its own netdev can change its MAC (igb refuses that once the
/// PF has set an administrative MAC), and back.
pub(super) fn vf_sets_own_mac(vf: &Original) -> Result<()> {
    let mut nl = Netlink::open()?;
    let link = nl
        .link_by_name(&vf.name)?
        .ok_or_else(|| anyhow!("no link {}", vf.name))?;
    let other = MacAddr([0x02, 0, 0, 0, 0x09, 0x09]);
    nl.set_mac(link.index, other)
        .with_context(|| format!("{} cannot change its own MAC after DEL", vf.name))?;
    let now = nl.link_by_index(link.index)?.and_then(|l| l.mac);
    ensure!(
        now == Some(other),
        "{} shows {now:?} after a MAC change",
        vf.name
    );
    if let Some(mac) = vf.mac {
        nl.set_mac(link.index, mac)?;
    }
    Ok(())
}
