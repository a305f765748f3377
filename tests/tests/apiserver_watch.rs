//! The API-server stand-in as kube-runtime's watchers and reflectors see it: a reflector's store
//! converges through changes, selectors narrow what a watch sees, a compaction makes a lagging
//! watcher relist, bookmarks spare that relist, a server restart is survived, 1,200 objects arrive
//! through pages of 500, and a status write changes only the status. A few raw-HTTP checks pin
//! the wire format (chunked newline-delimited events, the 410 ERROR event).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vfgenie_tests::apiserver::ApiServer;

const WAIT: Duration = Duration::from_secs(10);

fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse::<hyper::Uri>().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn pod(ns: &str, name: &str, node: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    })
}

/// Polls `cond` until it holds; fails naming `what` after 10 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reflector running in the background: its store, every object it was given, every error.
struct Reflected {
    store: Store<Pod>,
    seen: Arc<Mutex<Vec<Pod>>>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reflected {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs a reflector of `api` with `config`; after an error it waits 100 ms before polling on (a
/// short fixed backoff, so recoveries are quick).
fn reflect(api: Api<Pod>, config: watcher::Config) -> Reflected {
    let (store, writer) = reflector::store();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (s, e) = (seen.clone(), errors.clone());
    let task = tokio::spawn(async move {
        let mut stream = pin!(reflector::reflector(writer, watcher(api, config)));
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    s.lock().unwrap().push(p)
                }
                Ok(_) => {}
                Err(err) => {
                    e.lock().unwrap().push(format!("{err:?}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Reflected {
        store,
        seen,
        errors,
        task,
    }
}

/// namespace/name → resourceVersion of a reflector's store.
fn store_view(store: &Store<Pod>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                p.resource_version().unwrap_or_default(),
            )
        })
        .collect()
}

/// namespace/name → resourceVersion of the stand-in's pods (those `keep` accepts).
fn server_view(server: &ApiServer, keep: impl Fn(&Value) -> bool) -> BTreeMap<String, String> {
    server
        .list("pods", None)
        .iter()
        .filter(|p| keep(p))
        .map(|p| {
            let m = &p["metadata"];
            (
                format!(
                    "{}/{}",
                    m["namespace"].as_str().unwrap(),
                    m["name"].as_str().unwrap()
                ),
                m["resourceVersion"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn converged(server: &ApiServer, r: &Reflected, keep: impl Fn(&Value) -> bool) {
    let t0 = Instant::now();
    loop {
        let last = (store_view(&r.store), server_view(server, &keep));
        if last.0 == last.1 {
            return;
        }
        assert!(
            t0.elapsed() < WAIT,
            "the store never matched the server: store {:?}\nserver {:?}\nerrors {:?}",
            last.0,
            last.1,
            r.errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn everything(_: &Value) -> bool {
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_store_converges_through_add_modify_and_delete() {
    let server = ApiServer::start().unwrap();
    server
        .create(pod("team", "p1", "node-a", json!({"app": "web"})))
        .unwrap();
    server
        .create(pod("other", "p2", "node-b", json!({"app": "db"})))
        .unwrap();
    let r = reflect(Api::all(client(&server)), watcher::Config::default());
    converged(&server, &r, everything).await;
    assert_eq!(store_view(&r.store).len(), 2);

    server.add_pod("team", "p3", &[("k", "v")]);
    let mut p1 = server.pod("team", "p1").unwrap();
    p1["metadata"]["labels"]["app"] = json!("web-2");
    server.update(p1).unwrap();
    server.delete("pods", "other", "p2").unwrap();
    converged(&server, &r, everything).await;

    let names: Vec<String> = r.store.state().iter().map(|p| p.name_any()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let p1 = r
        .store
        .state()
        .into_iter()
        .find(|p| p.name_any() == "p1")
        .unwrap();
    assert_eq!(p1.labels()["app"], "web-2");
    assert!(!names.contains(&"p2".to_string()), "{names:?}");
    // One LIST, then the watch carried every change.
    assert_eq!(server.list_requests(), 1, "{:?}", server.request_uris());
    assert!(r.errors.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_api_are_watched_like_any_other() {
    let server = ApiServer::start().unwrap();
    let r = reflect(Api::all(client(&server)), watcher::Config::default());
    converged(&server, &r, everything).await;
    let api: Api<Pod> = Api::namespaced(client(&server), "team");
    let new: Pod = serde_json::from_value(pod("team", "made", "node-a", json!({}))).unwrap();
    let created = api.create(&Default::default(), &new).await.unwrap();
    assert!(created.uid().is_some());
    let e = api.create(&Default::default(), &new).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{e:?}"
    );
    converged(&server, &r, everything).await;
    assert_eq!(store_view(&r.store).len(), 1);

    let patch = json!({"metadata": {"labels": {"patched": "yes"}}});
    api.patch("made", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    converged(&server, &r, everything).await;
    let seen = r.store.state();
    assert_eq!(seen[0].labels()["patched"], "yes");

    api.delete("made", &Default::default()).await.unwrap();
    converged(&server, &r, everything).await;
    assert!(r.store.state().is_empty());
    assert!(server.pod("team", "made").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_change_moves_a_pod_out_of_and_back_into_a_selecting_watch() {
    let server = ApiServer::start().unwrap();
    server
        .create(pod("team", "w", "node-a", json!({"app": "web"})))
        .unwrap();
    server
        .create(pod("team", "d", "node-a", json!({"app": "db"})))
        .unwrap();
    let is_web = |p: &Value| p["metadata"]["labels"]["app"] == "web";
    let r = reflect(
        Api::all(client(&server)),
        watcher::Config::default().labels("app=web"),
    );
    converged(&server, &r, is_web).await;
    assert_eq!(store_view(&r.store).keys().collect::<Vec<_>>(), ["team/w"]);

    let relabel = |name: &str, app: &str| {
        let mut p = server.pod("team", name).unwrap();
        p["metadata"]["labels"]["app"] = json!(app);
        server.update(p).unwrap();
    };
    relabel("w", "db");
    converged(&server, &r, is_web).await;
    assert!(r.store.state().is_empty());
    relabel("d", "web");
    converged(&server, &r, is_web).await;
    assert_eq!(store_view(&r.store).keys().collect::<Vec<_>>(), ["team/d"]);
    assert_eq!(server.list_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_list_watcher_starts_without_a_list() {
    let server = ApiServer::start().unwrap();
    for i in 0..5 {
        server
            .create(pod("team", &format!("p{i}"), "node-a", json!({})))
            .unwrap();
    }
    let r = reflect(
        Api::all(client(&server)),
        watcher::Config::default().streaming_lists(),
    );
    converged(&server, &r, everything).await;
    server.delete("pods", "team", "p0").unwrap();
    server
        .create(pod("team", "p5", "node-a", json!({})))
        .unwrap();
    converged(&server, &r, everything).await;
    assert_eq!(store_view(&r.store).len(), 5);
    assert_eq!(server.list_requests(), 0, "{:?}", server.request_uris());
    let uris = server.request_uris();
    assert!(uris[0].contains("sendInitialEvents=true"), "{uris:?}");
}

fn on_node_a(p: &Value) -> bool {
    p["spec"]["nodeName"] == "node-a"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_selector_watch_sees_only_its_nodes_pods() {
    let server = ApiServer::start().unwrap();
    server
        .create(pod("team", "a1", "node-a", json!({})))
        .unwrap();
    server
        .create(pod("team", "b1", "node-b", json!({})))
        .unwrap();
    let config = watcher::Config::default().fields("spec.nodeName=node-a");
    let r = reflect(Api::all(client(&server)), config);
    converged(&server, &r, on_node_a).await;

    server
        .create(pod("team", "b2", "node-b", json!({})))
        .unwrap();
    server
        .create(pod("other", "a2", "node-a", json!({})))
        .unwrap();
    server.delete("pods", "team", "a1").unwrap();
    let mut b1 = server.pod("team", "b1").unwrap();
    b1["metadata"]["labels"] = json!({"touched": "yes"});
    server.update(b1).unwrap();
    converged(&server, &r, on_node_a).await;

    assert_eq!(
        store_view(&r.store).keys().collect::<Vec<_>>(),
        ["other/a2"]
    );
    let seen: Vec<String> = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    assert!(seen.iter().all(|n| n == "node-a"), "{seen:?}");
    let uris = server.request_uris();
    assert!(
        uris.iter()
            .all(|u| u.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{uris:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_compaction_a_lagging_watcher_gets_410_and_relists() {
    let server = ApiServer::start().unwrap();
    for i in 0..3 {
        server
            .create(pod("team", &format!("p{i}"), "node-a", json!({})))
            .unwrap();
    }
    let r = reflect(Api::all(client(&server)), watcher::Config::default());
    converged(&server, &r, everything).await;
    wait_until("the watch is open", || server.open_watches() == 1).await;
    assert_eq!(server.list_requests(), 1);

    // Down while things change and the log is compacted past what the watcher has seen.
    server.stop_serving().unwrap();
    server.delete("pods", "team", "p0").unwrap();
    server
        .create(pod("team", "p9", "node-b", json!({})))
        .unwrap();
    let mut p1 = server.pod("team", "p1").unwrap();
    p1["metadata"]["labels"] = json!({"after": "compaction"});
    server.update(p1).unwrap();
    server.compact();
    server.resume_serving().unwrap();

    converged(&server, &r, everything).await;
    assert_eq!(
        store_view(&r.store).keys().collect::<Vec<_>>(),
        ["team/p1", "team/p2", "team/p9"]
    );
    assert!(
        server.list_requests() >= 2,
        "no relist: {:?}",
        server.request_uris()
    );
    let errors = r.errors.lock().unwrap().clone();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("410") && e.contains("Expired")),
        "{errors:?}"
    );
}

/// A watcher on node-a while only node-b pods change, then a compaction and a restart: with
/// bookmarks its resourceVersion follows the server's, without it stays at its last node-a event.
/// Returns whether the watcher relisted after the restart.
async fn restart_after_foreign_changes(bookmarks: bool) -> bool {
    let server = ApiServer::start().unwrap();
    server.set_bookmark_interval(Duration::from_millis(100));
    server
        .create(pod("team", "a1", "node-a", json!({})))
        .unwrap();
    let mut config = watcher::Config::default()
        .fields("spec.nodeName=node-a")
        .timeout(1);
    if !bookmarks {
        config = config.disable_bookmarks();
    }
    let r = reflect(Api::all(client(&server)), config);
    converged(&server, &r, on_node_a).await;
    for i in 0..3 {
        server
            .create(pod("team", &format!("b{i}"), "node-b", json!({})))
            .unwrap();
    }
    let target = server.resource_version();
    // Every watch ends after 1 s and the watcher starts the next from what it knows.
    let watches = server.watch_requests();
    wait_until("two more watches", || {
        server.watch_requests() >= watches + 2
    })
    .await;
    let resumed_from: u64 = server
        .request_uris()
        .iter()
        .rev()
        .find(|u| u.contains("watch=true"))
        .and_then(|u| u.split("resourceVersion=").nth(1))
        .and_then(|v| v.split('&').next())
        .unwrap()
        .parse()
        .unwrap();
    if bookmarks {
        assert_eq!(
            resumed_from, target,
            "bookmarks did not move the watcher on"
        );
        assert!(server.bookmarks_sent() > 0);
    } else {
        assert!(resumed_from < target, "{resumed_from} {target}");
        assert_eq!(server.bookmarks_sent(), 0);
    }

    server.compact();
    let lists = server.list_requests();
    server.restart().unwrap();
    server
        .create(pod("team", "a2", "node-a", json!({})))
        .unwrap();
    converged(&server, &r, on_node_a).await;
    assert_eq!(store_view(&r.store).len(), 2);
    server.list_requests() > lists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_let_a_watcher_resume_after_a_compaction_without_relisting() {
    assert!(!restart_after_foreign_changes(true).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bookmarks_the_same_watcher_has_to_relist() {
    assert!(restart_after_foreign_changes(false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_survives_a_server_restart_and_catches_up_on_what_changed_meanwhile() {
    let server = ApiServer::start().unwrap();
    for i in 0..3 {
        server
            .create(pod("team", &format!("p{i}"), "node-a", json!({})))
            .unwrap();
    }
    let r = reflect(Api::all(client(&server)), watcher::Config::default());
    converged(&server, &r, everything).await;
    wait_until("the watch is open", || server.open_watches() == 1).await;
    let watches = server.watch_requests();

    server.stop_serving().unwrap();
    assert_eq!(
        server.open_watches(),
        0,
        "stopping closes the watch streams"
    );
    assert!(std::net::TcpStream::connect(server.addr()).is_err());
    server.delete("pods", "team", "p0").unwrap();
    server
        .create(pod("team", "p7", "node-a", json!({})))
        .unwrap();
    let mut p2 = server.pod("team", "p2").unwrap();
    p2["status"] = json!({"phase": "Running"});
    server.update(p2).unwrap();
    server.resume_serving().unwrap();
    converged(&server, &r, everything).await;
    let p2 = r
        .store
        .state()
        .into_iter()
        .find(|p| p.name_any() == "p2")
        .unwrap();
    assert_eq!(
        p2.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );

    // And a plain restart with a change right after it.
    server.restart().unwrap();
    server
        .create(pod("team", "p8", "node-a", json!({})))
        .unwrap();
    converged(&server, &r, everything).await;
    assert_eq!(
        store_view(&r.store).keys().collect::<Vec<_>>(),
        ["team/p1", "team/p2", "team/p7", "team/p8"]
    );
    assert!(server.watch_requests() >= watches + 2);
    // The log still held everything: the watch resumed from its resourceVersion, no relist.
    assert_eq!(server.list_requests(), 1, "{:?}", server.request_uris());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_hundred_pods_arrive_through_pages_of_five_hundred() {
    let server = ApiServer::start().unwrap();
    for i in 0..1200 {
        let ns = if i % 2 == 0 { "even" } else { "odd" };
        server
            .create(pod(ns, &format!("p{i:04}"), "node-a", json!({})))
            .unwrap();
    }
    let r = reflect(Api::all(client(&server)), watcher::Config::default());
    converged(&server, &r, everything).await;
    assert_eq!(store_view(&r.store).len(), 1200);
    let lists: Vec<String> = server
        .request_uris()
        .into_iter()
        .filter(|u| !u.contains("watch="))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists.iter().all(|u| u.contains("limit=500")), "{lists:?}");
    assert!(
        lists[1..].iter().all(|u| u.contains("continue=")),
        "{lists:?}"
    );

    // Every page of one list is the same snapshot, whatever changes between pages.
    let api: Api<Pod> = Api::all(client(&server));
    let first = api.list(&ListParams::default().limit(500)).await.unwrap();
    let at = first.metadata.resource_version.clone().unwrap();
    server.delete("pods", "odd", "p1199").unwrap();
    server
        .create(pod("odd", "p9999", "node-a", json!({})))
        .unwrap();
    let mut names: Vec<String> = first.items.iter().map(|p| p.name_any()).collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(500).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(at.as_str()));
        names.extend(page.items.iter().map(|p| p.name_any()));
        token = page.metadata.continue_;
    }
    assert_eq!(names.len(), 1200);
    assert!(names.contains(&"p1199".to_string()) && !names.contains(&"p9999".to_string()));
    // A continue token from before a compaction is expired.
    let stale = api.list(&ListParams::default().limit(10)).await.unwrap();
    server
        .create(pod("odd", "p10000", "node-a", json!({})))
        .unwrap();
    server.compact();
    let e = api
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(stale.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 410 && s.reason == "Expired"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_network_status_write_changes_only_its_status() {
    let server = ApiServer::start().unwrap();
    server.add_logical_network("team", "blue", "physnet1", "sriov", "10.1.0.0/24");
    let gvk = GroupVersionKind::gvk("alpha.network.k8s.io", "v1", "LogicalNetwork");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "logicalnetworks");
    let api: Api<DynamicObject> = Api::namespaced_with(client(&server), "team", &ar);
    let rv0: u64 = server.resource_version();

    // A merge patch of the status that also tries to change the spec.
    let patch = json!({"spec": {"subnet": "10.9.0.0/16"}, "status": {"phase": "Ready", "vfs": 4}});
    let out = api
        .patch_status("blue", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(out.data["status"], json!({"phase": "Ready", "vfs": 4}));
    assert_eq!(out.data["spec"]["subnet"], "10.1.0.0/24");
    let stored = server.get("logicalnetworks", "team", "blue").unwrap();
    assert_eq!(stored["spec"]["subnet"], "10.1.0.0/24");
    assert_eq!(stored["status"]["phase"], "Ready");
    assert!(out.resource_version().unwrap().parse::<u64>().unwrap() > rv0);

    // A PUT of the status with a changed spec: the spec stays; a stale resourceVersion conflicts.
    let mut obj = api.get_status("blue").await.unwrap();
    obj.data["spec"]["plugin"] = json!("macvlan");
    obj.data["status"] = json!({"phase": "Degraded"});
    let out = api
        .replace_status("blue", &Default::default(), &obj)
        .await
        .unwrap();
    assert_eq!(out.data["status"], json!({"phase": "Degraded"}));
    assert_eq!(out.data["spec"]["plugin"], "sriov");
    let e = api
        .replace_status("blue", &Default::default(), &obj)
        .await
        .unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 409), "{e:?}");

    // And a patch of the object leaves the status alone.
    let patch = json!({"spec": {"subnet": "10.2.0.0/24"}, "status": {"phase": "Gone"}});
    let out = api
        .patch("blue", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(out.data["spec"]["subnet"], "10.2.0.0/24");
    assert_eq!(out.data["status"]["phase"], "Degraded");
}

/// One raw HTTP/1.1 GET (`Connection: close`): status line, lower-cased headers, and the body
/// read to the end (chunks undone when chunked), with the chunk sizes seen.
async fn raw_get(server: &ApiServer, target: &str) -> (String, String, Vec<u8>, Vec<usize>) {
    let mut s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: standin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("the response did not end")
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    let headers = headers.to_lowercase();
    let mut rest = &raw[split + 4..];
    if !headers.contains("transfer-encoding: chunked") {
        return (status.to_string(), headers, rest.to_vec(), Vec::new());
    }
    let (mut body, mut chunks) = (Vec::new(), Vec::new());
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        chunks.push(size);
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    (status.to_string(), headers, body, chunks)
}

fn ndjson(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_is_a_chunked_stream_of_newline_delimited_events() {
    let server = Arc::new(ApiServer::start().unwrap());
    server.set_bookmark_interval(Duration::from_millis(100));
    server
        .create(pod("team", "before", "node-a", json!({})))
        .unwrap();
    let from = server.resource_version();
    let target = format!(
        "/api/v1/namespaces/team/pods?watch=true&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=2"
    );
    let s = server.clone();
    let watch = tokio::spawn(async move { raw_get(&s, &target).await });
    wait_until("the watch is open", || server.open_watches() == 1).await;
    server
        .create(pod("team", "p", "node-a", json!({})))
        .unwrap();
    server
        .create(pod("elsewhere", "q", "node-a", json!({})))
        .unwrap();
    let mut p = server.pod("team", "p").unwrap();
    p["metadata"]["labels"] = json!({"x": "y"});
    server.update(p).unwrap();
    server.delete("pods", "team", "p").unwrap();
    let last = server.resource_version();

    let t0 = Instant::now();
    let (status, headers, body, chunks) = watch.await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "timeoutSeconds ignored"
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    assert!(chunks.len() > 4 && chunks.last() == Some(&0), "{chunks:?}");
    let events = ndjson(&body);
    let changes: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
                e["object"]["metadata"]["resourceVersion"].as_str().unwrap(),
            )
        })
        .collect();
    let kinds: Vec<_> = changes.iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(kinds, [("ADDED", "p"), ("MODIFIED", "p"), ("DELETED", "p")]);
    let rvs: Vec<u64> = changes.iter().map(|c| c.2.parse().unwrap()).collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]) && rvs[2] == last,
        "{rvs:?}"
    );
    for e in events.iter().filter(|e| e["type"] != "BOOKMARK") {
        assert_eq!(e["object"]["kind"], "Pod");
        assert_eq!(e["object"]["apiVersion"], "v1");
    }
    let bookmarks: Vec<&Value> = events.iter().filter(|e| e["type"] == "BOOKMARK").collect();
    assert!(!bookmarks.is_empty());
    let b = bookmarks.last().unwrap();
    assert_eq!(b["object"]["kind"], "Pod");
    assert_eq!(b["object"]["metadata"]["resourceVersion"], last.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_the_compaction_gets_one_410_expired_error_event() {
    let server = ApiServer::start().unwrap();
    server
        .create(pod("team", "p", "node-a", json!({})))
        .unwrap();
    let old = server.resource_version();
    server.delete("pods", "team", "p").unwrap();
    let compacted = server.compact();
    let (status, _, body, _) = raw_get(
        &server,
        &format!("/api/v1/pods?watch=1&resourceVersion={old}"),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let events = ndjson(&body);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    let st = &events[0]["object"];
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["code"], 410);
    assert_eq!(st["reason"], "Expired");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains(&compacted.to_string()),
        "{st}"
    );
    // From the compaction point on, the log is there.
    let (_, _, body, _) = raw_get(
        &server,
        &format!("/api/v1/pods?watch=true&resourceVersion={compacted}&timeoutSeconds=1"),
    )
    .await;
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_take_label_and_field_selectors_and_say_their_kind() {
    let server = ApiServer::start().unwrap();
    server
        .create(pod(
            "team",
            "web1",
            "node-a",
            json!({"app": "web", "tier": "front"}),
        ))
        .unwrap();
    server
        .create(pod("team", "web2", "node-b", json!({"app": "web"})))
        .unwrap();
    server
        .create(pod("team", "db", "node-a", json!({"app": "db"})))
        .unwrap();
    server
        .create(pod("other", "web3", "node-a", json!({"app": "web"})))
        .unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}))
        .unwrap();
    let names = |body: &[u8]| -> Vec<String> {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let cases = [
        (
            "/api/v1/namespaces/team/pods?labelSelector=app%3Dweb",
            vec!["web1", "web2"],
        ),
        ("/api/v1/pods?labelSelector=app%3Dweb%2Ctier", vec!["web1"]),
        ("/api/v1/pods?labelSelector=app!%3Dweb", vec!["db"]),
        (
            "/api/v1/pods?labelSelector=app+in+(db%2Cweb)%2C!tier",
            vec!["web3", "db", "web2"],
        ),
        (
            "/api/v1/pods?fieldSelector=spec.nodeName%3D%3Dnode-a%2Cmetadata.namespace!%3Dother",
            vec!["db", "web1"],
        ),
        (
            "/api/v1/pods?fieldSelector=metadata.name%3Dweb3",
            vec!["web3"],
        ),
        ("/api/v1/namespaces", vec!["team"]),
    ];
    for (target, want) in cases {
        let (status, _, body, _) = raw_get(&server, target).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{target}");
        assert_eq!(names(&body), want, "{target}");
    }
    let (_, _, body, _) = raw_get(&server, "/api/v1/namespaces/team/pods").await;
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["kind"] == "Pod"));
    // Both versions of MultiNetworkPolicy serve the same objects.
    server
        .create(json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
            "metadata": {"name": "deny", "namespace": "team"}, "spec": {"podSelector": {}}
        }))
        .unwrap();
    let (_, _, body, _) = raw_get(
        &server,
        "/apis/k8s.cni.cncf.io/v1beta2/namespaces/team/multi-networkpolicies/deny",
    )
    .await;
    let mnp: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(mnp["apiVersion"], "k8s.cni.cncf.io/v1beta2");
    assert_eq!(mnp["metadata"]["name"], "deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_resource_version_list_shows_the_past_until_it_is_compacted() {
    let server = ApiServer::start().unwrap();
    server
        .create(pod("team", "old", "node-a", json!({})))
        .unwrap();
    let then = server.resource_version();
    server.delete("pods", "team", "old").unwrap();
    server
        .create(pod("team", "new", "node-a", json!({})))
        .unwrap();
    let names = |body: &[u8]| -> (Vec<String>, String) {
        let v: Value = serde_json::from_slice(body).unwrap();
        let names = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        (
            names,
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let exact = format!("/api/v1/pods?resourceVersion={then}&resourceVersionMatch=Exact");
    let (_, _, body, _) = raw_get(&server, &exact).await;
    assert_eq!(names(&body), (vec!["old".to_string()], then.to_string()));
    // NotOlderThan an old revision is satisfied by now.
    let (_, _, body, _) = raw_get(
        &server,
        &format!("/api/v1/pods?resourceVersion={then}&resourceVersionMatch=NotOlderThan"),
    )
    .await;
    let now = server.resource_version().to_string();
    assert_eq!(names(&body), (vec!["new".to_string()], now));
    server.compact();
    let (status, _, body, _) = raw_get(&server, &exact).await;
    assert_eq!(status, "HTTP/1.1 410 Gone");
    let st: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (st["kind"].as_str(), st["reason"].as_str()),
        (Some("Status"), Some("Expired"))
    );
}
