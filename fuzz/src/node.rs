//! Targets for what a node's files and its kernel hand the agent and genie: the agent's config,
//! kubeconfig, the kubelet checkpoint, device-info files, records, netlink replies, uevents, the
//! policy socket's requests.

use super::*;

// ---------------------------------------------------------------------------------------------
// Node files: the agent's config, kubeconfig, the kubelet checkpoint, device-info, records

pub(crate) fn agent_config(scratch: &Scratch, input: &[u8]) -> Result<(), String> {
    let path = scratch.path().join("agent-config.json");
    write_file(&path, input)?;
    let config = vfagent::config::Config::load(&path);
    accepted(config.is_ok());
    proportionate("Config::load", input.len(), &config)
}

pub(crate) fn kubeconfig(scratch: &Scratch, input: &[u8]) -> Result<(), String> {
    let path = scratch.path().join("kubeconfig");
    write_file(&path, input)?;
    let config = vfmeta::k8s::kubeconfig::ClusterConfig::from_kubeconfig(&path);
    accepted(config.is_ok());
    // Secrets are redacted in Debug; the size bound still holds.
    proportionate("ClusterConfig::from_kubeconfig", input.len(), &config)
}

pub(crate) fn kubelet_checkpoint(scratch: &Scratch, input: &[u8]) -> Result<(), String> {
    let path = scratch.path().join("kubelet_internal_checkpoint");
    write_file(&path, input)?;
    for uid in ["pod-uid-1", ""] {
        let devices = vfmeta::devices::checkpoint::pod_devices(&path, uid);
        if !uid.is_empty() {
            accepted(devices.is_ok());
        }
        proportionate("checkpoint::pod_devices", input.len(), &devices)?;
    }
    Ok(())
}

pub(crate) fn device_info(scratch: &Scratch, input: &[u8]) -> Result<(), String> {
    let dir = scratch.fresh("devinfo")?;
    let path = dir.join("read-device.json");
    write_file(&path, input)?;
    let info = vfdp::devinfo::read(&path);
    accepted(info.is_ok());
    proportionate("devinfo::read", input.len(), &info)?;
    let Ok(info) = info else { return Ok(()) };
    let out = dir.join("written-device.json");
    vfdp::devinfo::write(&out, &info).map_err(|e| format!("writing what was read: {e}"))?;
    let again = vfdp::devinfo::read(&out).map_err(|e| format!("reading what was written: {e}"))?;
    if again != info {
        return Err(format!(
            "device-info round trip differs:\n read {info:?}\n then {again:?}"
        ));
    }
    Ok(())
}

pub(crate) fn genie_record(scratch: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfmeta::cache::{CacheDir, PodKey};
    let root = scratch.fresh("genie-cache")?;
    let cache = CacheDir::new(&root);
    // The file where genie would look for the record: the key it names, when that is a valid
    // key, so a record that reads whole reaches the round trip.
    let named = serde_json::from_slice::<Value>(input).ok().and_then(|v| {
        let id = v.get("containerId")?.as_str()?.to_string();
        let ifname = v.get("ifName")?.as_str()?.to_string();
        PodKey::new(id, ifname).ok()
    });
    let key = match named {
        Some(k) => k,
        None => PodKey::new("c0ffee", "eth0").map_err(|e| e.to_string())?,
    };
    let path = cache.pod_path(&key);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    write_file(&path, input)?;
    let read = cache.read_pod(&key);
    accepted(matches!(read, Ok(Some(_))));
    proportionate("CacheDir::read_pod", input.len(), &read)?;
    let listed = cache.list_pods();
    proportionate("CacheDir::list_pods", input.len(), &listed)?;
    let Ok(Some(record)) = read else {
        return Ok(());
    };
    // Whatever was accepted, written back and read again, is the same record.
    std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    cache
        .write_pod(&record)
        .map_err(|e| format!("writing what was read: {e}"))?;
    match cache.read_pod(&key) {
        Ok(Some(again)) if again == record => Ok(()),
        other => Err(format!(
            "genie record round trip differs:\n read {record:?}\n then {other:?}"
        )),
    }
}

pub(crate) fn sriov_record(scratch: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfsriov::state::StateDir;
    let root = scratch.fresh("sriov-state")?;
    let state = StateDir::new(&root);
    let path = state
        .record_path("c0ffee", "net1")
        .map_err(|e| e.to_string())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    write_file(&path, input)?;
    let read = state.read("c0ffee", "net1");
    accepted(matches!(read, Ok(Some(_))));
    proportionate("StateDir::read", input.len(), &read)?;
    let listed = state.list();
    proportionate("StateDir::list", input.len(), &listed)?;
    let Ok(Some(record)) = read else {
        return Ok(());
    };
    // The reader accepts a record whose names differ from its file's; write it under its own.
    let Ok(own) = state.record_path(&record.container_id, &record.ifname) else {
        return Ok(());
    };
    std::fs::remove_file(&path).map_err(|e| e.to_string())?;
    state
        .write(&record)
        .map_err(|e| format!("writing what was read: {e}"))?;
    if !own.exists() {
        return Err(format!("the record was not written at {}", own.display()));
    }
    match state.read(&record.container_id, &record.ifname) {
        Ok(Some(again)) if again == record => Ok(()),
        other => Err(format!(
            "sriov record round trip differs:\n read {record:?}\n then {other:?}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel input: netlink replies and uevents

pub(crate) fn netlink(_: &Scratch, input: &[u8]) -> Result<(), String> {
    use vfcore::netlink::parse;
    let attrs = parse::split_attributes(input);
    proportionate("split_attributes", input.len(), &attrs)?;
    let Ok(messages) = parse::split_messages(input) else {
        return Ok(());
    };
    accepted(!messages.is_empty());
    proportionate("split_messages", input.len(), &messages)?;
    for (header, payload) in &messages {
        let error = parse::parse_error(header, payload);
        proportionate("parse_error", input.len(), &error)?;
        if let Ok(link) = parse::parse_link_message(payload) {
            proportionate("parse_link_message", input.len(), &link)?;
            let info = parse::link_info(&link);
            proportionate("link_info", input.len(), &info)?;
        }
        proportionate("address", input.len(), &parse::address(payload))?;
        proportionate("route", input.len(), &parse::route(payload))?;
        proportionate("vf_configs", input.len(), &parse::vf_configs(payload))?;
    }
    Ok(())
}

pub(crate) fn uevent(_: &Scratch, input: &[u8]) -> Result<(), String> {
    // Must answer for anything; what it answers is checked by core's own tests.
    accepted(vfcore::events::uevent_matters(input));
    Ok(())
}

pub(crate) fn policy_request(_: &Scratch, input: &[u8]) -> Result<(), String> {
    let req = vfagent::policy::protocol::parse(input);
    accepted(req.is_ok());
    proportionate("protocol::parse", input.len(), &req)
}
