//! The policy socket end to end: a server on a temp path, requests written as genie writes
//! them, and (as root) a real setup in a real network namespace.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdStream;
use std::process::Command;

use serde_json::{json, Value};

use super::*;
use crate::policy::compile::testdata::*;
use crate::policy::model::{Inputs, TrafficPath};
use crate::policy::nft::Nft;

/// A server on a temp socket, on a runtime of its own; stopped on drop.
struct Running {
    dir: tempfile::TempDir,
    path: PathBuf,
    stop: watch::Sender<bool>,
    rt: tokio::runtime::Runtime,
    engine: Arc<Mutex<Engine<Nft>>>,
}

impl Running {
    fn start(inputs: Inputs, tune: impl FnOnce(&mut SocketOptions)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/policy.sock");
        let mut options = SocketOptions {
            path: path.clone(),
            ..SocketOptions::default()
        };
        tune(&mut options);
        let engine = Arc::new(Mutex::new(Engine::new(Nft::new(None).unwrap())));
        let server = Arc::new(Server {
            engine: engine.clone(),
            snapshots: Arc::new(inputs),
            options,
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = bind(&path).unwrap();
        let (stop, stop_rx) = watch::channel(false);
        rt.spawn(serve(listener, server, stop_rx));
        Self {
            dir,
            path,
            stop,
            rt,
            engine,
        }
    }

    /// Sends `bytes` as they are, then reads the reply line.
    fn send_raw(&self, bytes: &[u8]) -> Value {
        let mut s = StdStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.ends_with('\n'), "{out:?}");
        serde_json::from_str(out.trim_end()).unwrap()
    }

    fn send(&self, request: &Value) -> Value {
        self.send_raw(format!("{request}\n").as_bytes())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = &self.rt;
    }
}

fn request(netns: &str) -> Value {
    json!({"version": 1, "op": "setup", "namespace": "team", "name": "web", "uid": "u-1",
           "netns": netns, "labels": {"app": "web"},
           "interfaces": [{"ifname": "net1", "network": "team/blue"}]})
}

fn error_of(reply: &Value) -> String {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"].as_str().unwrap().to_string()
}

#[test]
fn bind_makes_a_private_socket_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vfgenie/policy.sock");
    let first = bind(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    drop(first);
    // The file of an earlier run is still there: replaced.
    assert!(path.exists());
    let _second = bind(&path).unwrap();

    let file = dir.path().join("vfgenie/file");
    std::fs::write(&file, b"").unwrap();
    let e = bind(&file).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} exists and is not a socket; it is not replaced",
            file.display()
        )
    );
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = bind(&open.join("p.sock")).unwrap_err();
    assert!(
        e.to_string()
            .contains("may be written by other users (mode 0777)"),
        "{e}"
    );
}

#[test]
fn bad_requests_get_clear_errors() {
    let running = Running::start(Inputs::default(), |o| {
        o.read_timeout = Duration::from_millis(300);
    });
    // A namespace path that is a plain file in an accepted directory.
    let fake = running.dir.path().join("fake-netns");
    std::fs::write(&fake, b"").unwrap();

    let e = error_of(&running.send_raw(b"{\"version\": 1,\n"));
    assert!(e.starts_with("the request is not JSON: "), "{e}");

    let mut big = vec![b' '; MAX_REQUEST + 10];
    big.push(b'\n');
    assert_eq!(
        error_of(&running.send_raw(&big)),
        "the request is larger than 65536 bytes"
    );

    let mut v = request("/run/netns/x");
    v["version"] = json!(7);
    assert_eq!(
        error_of(&running.send(&v)),
        "protocol version 7 is not supported; this agent speaks version 1"
    );

    let e = error_of(&running.send(&request(&fake.display().to_string())));
    assert!(
        e.starts_with("pod team/web: netns ") && e.contains("is neither in"),
        "{e}"
    );
    let e = error_of(&running.send(&request("/run/netns/../../etc/passwd")));
    assert_eq!(
        e,
        "pod team/web: netns \"/run/netns/../../etc/passwd\" is not an absolute path of plain components"
    );
    let mut v = request("/run/netns/x");
    v["interfaces"][0]["ifname"] = json!("../../x");
    assert!(error_of(&running.send(&v)).starts_with("pod team/web: interface name \"../../x\""));
    let mut v = request("/run/netns/x");
    v["interfaces"][0]["network"] = json!("../etc");
    assert!(error_of(&running.send(&v)).starts_with("pod team/web: network \"../etc\""));

    // Nothing sent: the read times out.
    let mut s = StdStream::connect(&running.path).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(
        out,
        "{\"ok\":false,\"error\":\"no request arrived within 300ms\"}\n"
    );
}

#[test]
fn a_plain_file_where_namespaces_live_is_not_a_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(Inputs::default(), |o| {
        o.netns.dirs = vec![dir.path().to_path_buf()]
    });
    let fake = dir.path().join("fake-netns");
    std::fs::write(&fake, b"").unwrap();
    assert_eq!(
        error_of(&running.send(&request(&fake.display().to_string()))),
        format!(
            "pod team/web: {} is not a network namespace",
            fake.display()
        )
    );
}

/// A named network namespace, deleted on drop.
struct TestNetns(String);

impl TestNetns {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates network namespaces: run it as root"
        );
        let name = format!("vfpol{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{:?}", out);
        Self(name)
    }
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
    fn table(&self) -> Option<Value> {
        Nft::new(None)
            .unwrap()
            .list(
                Some(&self.path()),
                crate::policy::nft::Family::Inet,
                "vfgenie",
            )
            .unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn a_setup_installs_the_pods_table_in_its_namespace_before_it_has_interfaces() {
    let ns = TestNetns::new();
    let mut inputs = Inputs::default();
    add_net(
        &mut inputs,
        net("team", "blue", &["10.71.0.0/24"], TrafficPath::Host),
    );
    inputs.pods.push(pod(
        "team",
        "client",
        &[("app", "client")],
        vec![iface(key("team", "blue"), "net1", &["10.71.0.5"])],
        None,
    ));
    inputs.multi.push(multi(
        "team",
        "web-in",
        &[key("team", "blue")],
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    ));
    let running = Running::start(inputs, |_| {});
    assert_eq!(ns.table(), None);

    let reply = running.send(&request(&ns.path().display().to_string()));
    assert_eq!(reply, json!({"ok": true, "applied": true}));
    let listed = ns
        .table()
        .expect("no table in the pod's namespace")
        .to_string();
    assert!(listed.contains("\"net1\""), "{listed}");
    assert!(listed.contains("10.71.0.5"), "{listed}");
    assert!(listed.contains("in_isolated"), "{listed}");

    // The same request again (a retried ADD): already in place.
    let reply = running.send(&request(&ns.path().display().to_string()));
    assert_eq!(reply, json!({"ok": true, "applied": false}));
    assert_eq!(running.engine.lock().unwrap().pending().count(), 1);
}
