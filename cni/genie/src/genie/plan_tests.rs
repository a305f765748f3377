//! Planning a pod's attachments from its annotations, the genie conf, the conf dir and the
//! Kubernetes objects (served by an in-memory fake). The fixtures are here, the tests in the
//! modules below.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::annotations::{parse_pod_annotations, PodRef};
use crate::k8s::objects::{
    Kind, LogicalNetwork, LogicalNetworkSpec, NadSpec, NetworkAttachmentDefinition, ObjectMeta,
    ObjectRef,
};
use crate::spec::error::CniError;

/// The Kubernetes objects a test cluster holds; `down` makes every read fail as an outage would.
#[derive(Default)]
struct FakeKube {
    nads: BTreeMap<(String, String), NetworkAttachmentDefinition>,
    lns: BTreeMap<(String, String), LogicalNetwork>,
    down: bool,
}

impl FakeKube {
    fn outage(object: ObjectRef) -> crate::k8s::Error {
        crate::k8s::Error::Unreachable {
            object,
            server: "https://10.96.0.1:443".into(),
            attempts: 3,
            reason: "connection refused".into(),
        }
    }

    fn with_nad(mut self, namespace: &str, name: &str, config: Value) -> Self {
        self.nads.insert(
            (namespace.into(), name.into()),
            nad_object(namespace, name, config, None),
        );
        self
    }

    fn with_resource_nad(
        mut self,
        namespace: &str,
        name: &str,
        config: Value,
        resource: &str,
    ) -> Self {
        self.nads.insert(
            (namespace.into(), name.into()),
            nad_object(namespace, name, config, Some(resource)),
        );
        self
    }

    fn with_ln(mut self, namespace: &str, name: &str, plugin: &str, subnet: &str) -> Self {
        self.lns.insert(
            (namespace.into(), name.into()),
            LogicalNetwork {
                metadata: meta(namespace, name),
                spec: LogicalNetworkSpec {
                    physical_net: String::new(),
                    plugin: plugin.into(),
                    subnet: subnet.into(),
                    vlan: None,
                },
                status: None,
            },
        );
        self
    }
}

impl KubeReads for FakeKube {
    fn nad(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<NetworkAttachmentDefinition, crate::k8s::Error> {
        let object = ObjectRef::new(Kind::NetworkAttachmentDefinition, namespace, name);
        if self.down {
            return Err(Self::outage(object));
        }
        self.nads
            .get(&(namespace.into(), name.into()))
            .cloned()
            .ok_or(crate::k8s::Error::NotFound { object })
    }

    fn logical_network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<LogicalNetwork, crate::k8s::Error> {
        let object = ObjectRef::new(Kind::LogicalNetwork, namespace, name);
        if self.down {
            return Err(Self::outage(object));
        }
        self.lns
            .get(&(namespace.into(), name.into()))
            .cloned()
            .ok_or(crate::k8s::Error::NotFound { object })
    }
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        namespace: namespace.into(),
        ..ObjectMeta::default()
    }
}

fn nad_object(
    namespace: &str,
    name: &str,
    config: Value,
    resource: Option<&str>,
) -> NetworkAttachmentDefinition {
    let mut metadata = meta(namespace, name);
    if let Some(r) = resource {
        metadata
            .annotations
            .insert(RESOURCE_NAME_ANNOTATION.into(), r.into());
    }
    NetworkAttachmentDefinition {
        metadata,
        spec: NadSpec {
            config: if config.is_null() {
                String::new()
            } else {
                config.to_string()
            },
        },
    }
}

fn bridge(name: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "bridge",
           "ipam": {"type": "host-local", "subnet": "10.10.0.0/16"}})
}

/// A genie conf; `confDir` defaults to a directory that holds nothing.
fn genie(extra: Value) -> GenieConf {
    let empty = std::env::temp_dir().join("vfgenie-plan-tests-empty-conf-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let mut v = json!({"name": "genie", "type": "genie", "cniVersion": "1.0.0",
                       "confDir": empty.to_str().unwrap()});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    GenieConf::from_value(&v).unwrap()
}

fn genie_in(dir: &Path, extra: Value) -> GenieConf {
    let mut e = json!({"confDir": dir.to_str().unwrap()});
    if let (Value::Object(m), Value::Object(x)) = (&mut e, extra) {
        m.extend(x);
    }
    genie(e)
}

fn write_conf(dir: &Path, file: &str, v: Value) {
    std::fs::write(dir.join(file), v.to_string()).unwrap();
}

fn pod_request(namespace: &str, annotations: &[(&str, &str)]) -> PodNetworkRequest {
    let a: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_pod_annotations(&PodRef::new(namespace, "web"), &a).unwrap()
}

fn plan_in(
    conf: &GenieConf,
    namespace: &str,
    annotations: &[(&str, &str)],
    kube: &FakeKube,
) -> Result<Vec<Planned>, CniError> {
    let request = pod_request(namespace, annotations);
    let ctx = PodContext {
        namespace,
        name: "web",
        request: &request,
        switch_to: None,
        switch_reason: None,
    };
    // What the runtime would see: the code and message of genie's boundary.
    plan(conf, "eth0", Some(&ctx), Some(kube))
        .map_err(|e| CniError::from(crate::genie::error::GenieError::from(e)))
}

fn plan_for(
    conf: &GenieConf,
    annotations: &[(&str, &str)],
    kube: &FakeKube,
) -> Result<Vec<Planned>, CniError> {
    plan_in(conf, "default", annotations, kube)
}

fn networks(p: &[Planned]) -> Vec<&str> {
    p.iter().map(|a| a.network.as_str()).collect()
}

fn ifnames(p: &[Planned]) -> Vec<&str> {
    p.iter().map(|a| a.ifname.as_str()).collect()
}

fn defaults(p: &[Planned]) -> Vec<bool> {
    p.iter().map(|a| a.default).collect()
}

fn refused<E: Into<crate::genie::error::GenieError>>(r: Result<Vec<Planned>, E>) -> CniError {
    match r {
        Ok(p) => panic!("planned {:?} on {:?}", networks(&p), ifnames(&p)),
        Err(e) => CniError::from(e.into()),
    }
}

fn delegating() -> GenieConf {
    genie(json!({"delegates": [bridge("cluster")]}))
}

/// A conf dir with CNI-Genie plugins: weave (by name), flannel-net (type flannel), br-net
/// (type bridge), and genie's own conf.
fn genie_plugins_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_conf(
        dir.path(),
        "10-weave.conf",
        json!({"cniVersion": "1.0.0", "name": "weave",
        "type": "weave-net"}),
    );
    write_conf(
        dir.path(),
        "20-flannel.conflist",
        json!({"cniVersion": "1.0.0",
        "name": "flannel-net", "plugins": [{"type": "flannel"}, {"type": "portmap"}]}),
    );
    write_conf(dir.path(), "30-bridge.conf", bridge("br-net"));
    write_conf(
        dir.path(),
        "99-genie.conf",
        json!({"name": "genie", "type": "genie"}),
    );
    dir
}

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";

#[path = "plan_tests_npwg.rs"]
mod npwg;

#[path = "plan_tests_genie.rs"]
mod cni_genie;

#[path = "plan_tests_guards.rs"]
mod guards;
