use super::*;
use crate::error::IntoCni;
use serde_json::json;

fn list() -> NetConfList {
    NetConfList::from_value(json!({
        "cniVersion": "0.4.0",
        "cniVersions": ["0.4.0", "1.0.0", "5.0.0"],
        "name": "net-a",
        "plugins": [
            {"type": "bridge", "bridge": "br0", "someUnknownKey": {"deep": [1, 2]},
             "capabilities": {"mac": true, "ips": true},
             "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
             "runtimeConfig": {"static": 1},
             "args": {"cni": {"keep": "me", "over": "old"}, "other": 1}},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
        ]
    }))
    .unwrap()
}

fn build(
    conf: &NetConf,
    rc: &Map<String, Value>,
    cni_args: Option<&Map<String, Value>>,
    prev: Option<&CniResult>,
) -> Value {
    let ctx = DelegateContext {
        name: "net-a",
        cni_version: CniVersion::V1_0_0,
        prev_result: prev,
        runtime_config: rc,
        cni_args,
    };
    serde_json::from_slice(&conf.delegate_config(&ctx).unwrap()).unwrap()
}

#[test]
fn parses_a_conflist_and_negotiates() {
    let l = list();
    assert_eq!(l.name, "net-a");
    assert_eq!(l.plugins.len(), 2);
    assert_eq!(l.plugins[0].plugin_type, "bridge");
    assert!(l.plugins[0].declares("mac"));
    assert!(!l.plugins[1].declares("bandwidth"));
    assert_eq!(l.plugins[0].ipam_type().unwrap(), Some("host-local"));
    assert_eq!(l.negotiated_version().unwrap(), CniVersion::V1_0_0);
    assert_eq!(l.plugins[0].ipam().unwrap()["subnet"], "10.1.0.0/24");
}

#[test]
fn single_conf_becomes_a_list_of_one() {
    let l = NetConfList::from_bytes_any(
        br#"{"cniVersion":"0.3.1","name":"n1","type":"macvlan","master":"eth0"}"#,
    )
    .unwrap();
    assert_eq!(l.name, "n1");
    assert_eq!(l.plugins.len(), 1);
    assert_eq!(l.negotiated_version().unwrap(), CniVersion::V0_3_1);
    assert_eq!(l.plugins[0].raw()["master"], "eth0");
    let nameless = NetConfList::from_bytes_any(br#"{"type":"macvlan"}"#)
        .unwrap_err()
        .cni();
    assert_eq!(nameless.code, 7);
}

#[test]
fn delegate_config_keeps_unknown_keys_and_injects() {
    let l = list();
    let prev = CniResult::parse(
        br#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.5/24"}]}"#,
        CniVersion::V0_3_1,
    )
    .unwrap();
    let mut rc = Map::new();
    rc.insert("mac".into(), json!("0a:00:00:00:00:01"));
    rc.insert(
        "portMappings".into(),
        json!([{"hostPort": 80, "containerPort": 8080}]),
    );
    let mut cni_args = Map::new();
    cni_args.insert("over".into(), json!("new"));
    cni_args.insert("added".into(), json!(true));
    let v = build(&l.plugins[0], &rc, Some(&cni_args), Some(&prev));
    assert_eq!(v["name"], "net-a");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["someUnknownKey"], json!({"deep": [1, 2]}));
    assert_eq!(
        v["runtimeConfig"],
        json!({"static": 1, "mac": "0a:00:00:00:00:01"})
    );
    assert_eq!(
        v["args"],
        json!({"cni": {"keep": "me", "over": "new", "added": true}, "other": 1})
    );
    // prevResult converted to the delegate's version: no "version" in ips any more.
    assert_eq!(
        v["prevResult"],
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}], "dns": {}})
    );
    let pm = build(&l.plugins[1], &rc, None, None);
    assert_eq!(
        pm["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}]})
    );
    assert!(pm.get("prevResult").is_none());
    assert!(pm.get("args").is_none());
    // Nothing requested: no runtimeConfig appears.
    let plain = build(&l.plugins[1], &Map::new(), None, None);
    assert!(plain.get("runtimeConfig").is_none());
}

#[test]
fn an_undeclared_capability_is_code_2() {
    let l = list();
    let mut rc = Map::new();
    rc.insert("mac".into(), json!("x"));
    assert!(l.check_capabilities(&rc).is_ok());
    rc.insert("bandwidth".into(), json!({}));
    rc.insert("deviceID".into(), json!("0000:03:02.0"));
    let e = l.check_capabilities(&rc).unwrap_err().cni();
    assert_eq!(e.code, 2);
    assert!(
        e.msg.contains("bandwidth") && e.msg.contains("deviceID"),
        "{e}"
    );
}

#[test]
fn traversal_through_plugin_types_is_refused() {
    for t in ["../bridge", "/usr/bin/id", ".", "..", "a/b", "", "br\0idge"] {
        let e = NetConf::from_value(json!({"type": t, "name": "n"}))
            .unwrap_err()
            .cni();
        assert_eq!(e.code, 7, "{t:?}");
    }
    let bad_ipam =
        NetConf::from_value(json!({"type": "bridge", "ipam": {"type": "../../tmp/x"}})).unwrap();
    assert_eq!(bad_ipam.ipam_type().unwrap_err().cni().code, 7);
    let in_list = NetConfList::from_value(json!({"name": "n", "plugins": [{"type": "../x"}]}))
        .unwrap_err()
        .cni();
    assert_eq!(in_list.code, 7);
    assert!(in_list.msg.contains("\"n\""), "{in_list}");
}

#[test]
fn gc_attachments_and_config() {
    let c = NetConf::from_value(json!({"type": "genie", "name": "g", "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}))
    .unwrap();
    assert_eq!(
        c.valid_attachments().unwrap().unwrap(),
        vec![GcAttachment {
            container_id: "c1".into(),
            ifname: "eth0".into()
        }]
    );
    let legacy = NetConf::from_value(json!({"type": "x",
        "cni.dev/attachments": [{"containerID": "c2", "ifname": "net1"}]}))
    .unwrap();
    assert_eq!(
        legacy.valid_attachments().unwrap().unwrap()[0].container_id,
        "c2"
    );
    let none = NetConf::from_value(json!({"type": "x"})).unwrap();
    assert_eq!(none.valid_attachments().unwrap(), None);
    let bad =
        NetConf::from_value(json!({"type": "x", "cni.dev/valid-attachments": "all"})).unwrap();
    assert_eq!(bad.valid_attachments().unwrap_err().cni().code, 7);

    let keep = vec![GcAttachment {
        container_id: "c9".into(),
        ifname: "net2".into(),
    }];
    let v: Value =
        serde_json::from_slice(&none.gc_config("n", CniVersion::V1_1_0, &keep).unwrap()).unwrap();
    assert_eq!(v["name"], "n");
    assert_eq!(
        v["cni.dev/valid-attachments"],
        json!([{"containerID": "c9", "ifname": "net2"}])
    );
    assert_eq!(v["cni.dev/attachments"], v["cni.dev/valid-attachments"]);
    assert_eq!(
        none.gc_config("n", CniVersion::V1_0_0, &keep)
            .unwrap_err()
            .cni()
            .code,
        1
    );
}

#[test]
fn typed_prev_result() {
    let c = NetConf::from_value(json!({"type": "x", "prevResult":
        {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}}))
    .unwrap();
    let r = c.parsed_prev_result(CniVersion::V1_0_0).unwrap().unwrap();
    assert_eq!(r.cni_version, CniVersion::V0_4_0);
    assert_eq!(r.ips[0].address.to_string(), "10.0.0.2/24");
    let bad = NetConf::from_value(json!({"type": "x", "prevResult": {"ips": 3}})).unwrap();
    let e = bad
        .parsed_prev_result(CniVersion::V1_0_0)
        .unwrap_err()
        .cni();
    assert_eq!(e.code, 6);
    assert!(e.msg.starts_with("prevResult"), "{e}");
    assert_eq!(
        NetConf::from_value(json!({"type": "x"}))
            .unwrap()
            .parsed_prev_result(CniVersion::V1_0_0)
            .unwrap(),
        None
    );
}

#[test]
fn malformed_configs() {
    assert_eq!(NetConf::from_bytes(b"{").unwrap_err().cni().code, 6);
    assert_eq!(NetConf::from_bytes(b"[]").unwrap_err().cni().code, 6);
    assert_eq!(
        NetConf::from_bytes(br#"{"name":"n"}"#)
            .unwrap_err()
            .cni()
            .code,
        7
    );
    assert_eq!(
        NetConf::from_bytes(br#"{"type":"x","name":"bad name"}"#)
            .unwrap_err()
            .cni()
            .code,
        7
    );
    assert_eq!(
        NetConf::from_bytes(br#"{"type":"x","capabilities":{"mac":"yes"}}"#)
            .unwrap_err()
            .cni()
            .code,
        7
    );
    assert_eq!(
        NetConfList::from_bytes(br#"{"name":"n","plugins":[]}"#)
            .unwrap_err()
            .cni()
            .code,
        7
    );
    let unsupported =
        NetConfList::from_bytes(br#"{"name":"n","cniVersion":"9.9.9","plugins":[{"type":"x"}]}"#)
            .unwrap();
    assert_eq!(unsupported.negotiated_version().unwrap_err().cni().code, 1);
    let bad_args = NetConf::from_value(json!({"type": "x", "args": 5})).unwrap();
    let mut ca = Map::new();
    ca.insert("k".into(), json!(1));
    let ctx = DelegateContext {
        name: "n",
        cni_version: CniVersion::V1_0_0,
        prev_result: None,
        runtime_config: &Map::new(),
        cni_args: Some(&ca),
    };
    assert_eq!(bad_args.delegate_config(&ctx).unwrap_err().cni().code, 7);
}
