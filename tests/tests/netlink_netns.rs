//! Host tier: netlink and network namespaces against the real kernel, with veth pairs standing in
//! for VFs. Privileged: every test asserts it runs as root and fails otherwise.
//!
//! Each test makes its own uniquely named namespaces (pid and a counter in the name) and links,
//! and guards remove them on every path, so the tests run in parallel.

// Test helpers outside #[test] functions: failing loudly is their job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vfcore::netlink::{LinkOps, Netlink, NetlinkError, RouteSpec, VfSettings};
use vfcore::netns::{NetNs, NetNsError};
use vfcore::{IfIndex, MacAddr, SysRoot, VfIndex};
use vfgenie_tests::runtime::{run, HostLink};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and links: run them as root"
    );
}

/// A short unique token: `<pid>x<n>`, so link names stay within 15 bytes.
fn unique() -> String {
    format!(
        "{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named namespace deleted (with every link inside) when dropped.
struct TestNs {
    name: String,
    ns: NetNs,
}

impl TestNs {
    fn new(tag: &str) -> Self {
        let name = format!("vfg-{tag}-{}", unique());
        let ns = NetNs::create_named(&SysRoot::host(), &name)
            .unwrap_or_else(|e| panic!("creating test namespace: {e}"));
        Self { name, ns }
    }

    /// Runs `ip <args>` inside this namespace (the child inherits the worker thread's netns).
    fn ip(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.ns
            .run(move || Command::new("ip").args(&args).output())
            .unwrap()
            .unwrap()
    }

    fn ip_ok(&self, args: &[&str]) -> String {
        let out = self.ip(args);
        assert!(
            out.status.success(),
            "ip {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs netlink work with a handle opened inside this namespace.
    fn netlink<T: Send>(
        &self,
        f: impl FnOnce(&mut Netlink) -> Result<T, NetlinkError> + Send,
    ) -> Result<T, NetlinkError> {
        self.ns
            .run(|| {
                let mut nl = Netlink::open()?;
                f(&mut nl)
            })
            .unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = NetNs::delete_named(&SysRoot::host(), &self.name) {
            eprintln!("cleaning up namespace {}: {e}", self.name);
        }
    }
}

fn index_of(nl: &mut Netlink, name: &str) -> IfIndex {
    nl.link_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no link {name}"))
        .index
}

#[test]
fn veth_end_moved_renamed_configured_pings_its_peer_and_comes_back() {
    require_root();
    let a_ns = TestNs::new("a");
    let b_ns = TestNs::new("b");
    let token = unique();
    let (a, b) = (format!("va{token}"), format!("vb{token}"));
    let _guard = HostLink(a.clone());
    run(
        "ip",
        &["link", "add", &a, "type", "veth", "peer", "name", &b],
    )
    .unwrap();

    let mut host = Netlink::open().unwrap();
    let a_idx = index_of(&mut host, &a);
    let b_idx = index_of(&mut host, &b);
    host.move_to_netns(a_idx, &a_ns.ns).unwrap();
    host.move_to_netns(b_idx, &b_ns.ns).unwrap();
    assert_eq!(
        host.link_by_name(&a).unwrap(),
        None,
        "{a} still in the host"
    );

    let mac: MacAddr = "02:42:ac:11:00:07".parse().unwrap();
    let a_addr: IpAddr = "10.99.0.1".parse().unwrap();
    let b_addr: IpAddr = "10.99.0.2".parse().unwrap();
    let a_name = a.clone();
    let net1 = a_ns
        .netlink(move |nl| {
            let idx = nl.wait_for_link(&a_name, Duration::from_secs(2))?.index;
            nl.set_name(idx, "net1")?;
            nl.set_mac(idx, mac)?;
            nl.set_mtu(idx, 1400)?;
            nl.set_up(idx, true)?;
            nl.add_address(idx, a_addr, 24)?;
            let addrs = nl.addresses(idx)?;
            Ok((nl.link_by_name("net1")?, addrs))
        })
        .unwrap();
    let (link, addrs) = net1;
    let link = link.expect("net1 in namespace a");
    assert_eq!(link.mac, Some(mac));
    assert_eq!(link.mtu, 1400);
    assert!(link.up);
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert!(
        addrs.iter().any(|x| x.addr == a_addr && x.prefix_len == 24),
        "{addrs:?}"
    );

    let b_name = b.clone();
    b_ns.netlink(move |nl| {
        let idx = nl.wait_for_link(&b_name, Duration::from_secs(2))?.index;
        nl.set_up(idx, true)?;
        nl.add_address(idx, b_addr, 24)?;
        nl.add_route(&RouteSpec::default_via(a_addr))
    })
    .unwrap();
    let routes = b_ns.ip_ok(&["route", "show", "default"]);
    assert!(routes.contains("via 10.99.0.1"), "{routes}");

    // Traffic, not only attributes: ping the peer from inside namespace a.
    let ping = a_ns
        .ns
        .run(|| {
            Command::new("ping")
                .args(["-c1", "-W2", "10.99.0.2"])
                .output()
        })
        .unwrap()
        .expect("running ping (install iputils-ping)");
    assert!(
        ping.status.success(),
        "ping from net1 to its peer failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Back to the host under its original name, as a CNI DEL does.
    let host_ns = NetNs::current().unwrap();
    let a_name = a.clone();
    a_ns.netlink(|nl| {
        let idx = index_of(nl, "net1");
        nl.set_up(idx, false)?;
        nl.set_name(idx, &a_name)?;
        nl.move_to_netns(idx, &host_ns)
    })
    .unwrap();
    let back = host
        .link_by_name(&a)
        .unwrap()
        .expect("link back in the host");
    assert_eq!(back.name, a);
    assert_eq!(back.mac, Some(mac));
    assert_eq!(a_ns.netlink(|nl| nl.link_by_name("net1")).unwrap(), None);
}

#[test]
fn renaming_an_up_link_says_to_bring_it_down() {
    require_root();
    let ns = TestNs::new("ren");
    ns.ip_ok(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    let err = ns
        .netlink(|nl| {
            let idx = index_of(nl, "up0");
            nl.set_up(idx, true)?;
            nl.set_name(idx, "net1")
        })
        .unwrap_err();
    assert!(matches!(err, NetlinkError::LinkUp { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "renaming up0 to net1 failed: up0 is up; set it down first (links are renamed only while down)"
    );
    assert_eq!(err.errno(), Some(nix::errno::Errno::EBUSY));
    // Down, the same rename works.
    ns.netlink(|nl| {
        let idx = index_of(nl, "up0");
        nl.set_up(idx, false)?;
        nl.set_name(idx, "net1")
    })
    .unwrap();
    assert!(ns.netlink(|nl| nl.link_by_name("net1")).unwrap().is_some());
}

#[test]
fn a_veth_has_no_vfs_and_the_kernel_refuses_vf_settings() {
    require_root();
    let ns = TestNs::new("vf");
    ns.ip_ok(&["link", "add", "pf0", "type", "veth", "peer", "name", "pf1"]);
    let (vfs, mac_err, vlan_err, rate_err) = ns
        .netlink(|nl| {
            let idx = index_of(nl, "pf0");
            let vfs = nl.vf_configs(idx)?;
            let set = |nl: &mut Netlink, s: VfSettings| nl.set_vf(idx, VfIndex(2), &s);
            let mac_err = set(
                nl,
                VfSettings {
                    mac: Some("02:00:00:00:00:01".parse().unwrap_or_default()),
                    ..Default::default()
                },
            );
            let vlan_err = set(
                nl,
                VfSettings {
                    vlan: Some(100),
                    qos: Some(1),
                    ..Default::default()
                },
            );
            let rate_err = set(
                nl,
                VfSettings {
                    min_tx_rate: Some(0),
                    max_tx_rate: Some(100),
                    ..Default::default()
                },
            );
            // Only one rate given: the other is read from the PF, which has no VF 2.
            let half_rate = set(
                nl,
                VfSettings {
                    max_tx_rate: Some(100),
                    ..Default::default()
                },
            );
            assert_eq!(
                half_rate.unwrap_err().to_string(),
                "setting tx rate of VF 2 on pf0: pf0 reports no VF 2"
            );
            Ok((vfs, mac_err, vlan_err, rate_err))
        })
        .unwrap();
    assert_eq!(vfs, vec![]);
    // EOPNOTSUPP (not EINVAL) shows the kernel parsed our IFLA_VFINFO_LIST past its attribute
    // policy and reached the driver, which has no VF operations.
    assert_eq!(
        mac_err.unwrap_err().to_string(),
        "setting MAC of VF 2 on pf0 failed: operation not supported (EOPNOTSUPP)"
    );
    assert_eq!(
        vlan_err.unwrap_err().to_string(),
        "setting VLAN of VF 2 on pf0 failed: operation not supported (EOPNOTSUPP)"
    );
    assert_eq!(
        rate_err.unwrap_err().to_string(),
        "setting tx rate of VF 2 on pf0 failed: operation not supported (EOPNOTSUPP)"
    );
}

#[test]
fn run_never_moves_the_caller_and_turns_panics_into_errors() {
    require_root();
    let ns = TestNs::new("run");
    let before = NetNs::current().unwrap();
    let inside = ns
        .ns
        .run(|| NetNs::current().and_then(|cur| cur.same_as(&ns.ns)))
        .unwrap()
        .unwrap();
    assert!(inside, "the worker thread was not in the namespace");
    let after = NetNs::current().unwrap();
    assert!(before.same_as(&after).unwrap());
    assert!(!after.same_as(&ns.ns).unwrap());

    let err = ns.ns.run(|| -> u32 { panic!("boom inside") }).unwrap_err();
    assert!(matches!(err, NetNsError::Panicked { .. }), "{err:?}");
    assert!(err.to_string().contains("boom inside"), "{err}");
    assert!(NetNs::current().unwrap().same_as(&before).unwrap());

    // A child spawned inside runs in the namespace, and of_pid finds it there.
    let mut child = ns
        .ns
        .run(|| Command::new("sleep").arg("10").spawn())
        .unwrap()
        .unwrap();
    let of_child = NetNs::of_pid(&SysRoot::host(), child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(of_child.unwrap().same_as(&ns.ns).unwrap());

    // Borrowed (non-'static) data works in and out.
    let mut seen = Vec::new();
    ns.ns.run(|| seen.push(1)).unwrap();
    assert_eq!(seen, [1]);
}

#[test]
fn named_namespaces_are_visible_to_ip_netns() {
    require_root();
    let root = SysRoot::host();
    let name = format!("vfg-named-{}", unique());
    let ns = NetNs::create_named(&root, &name).unwrap();
    let guard = TestNs {
        name: name.clone(),
        ns,
    };
    let list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str())),
        "{list}"
    );
    run(
        "ip",
        &["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
    )
    .unwrap();
    let by_name = NetNs::named(&root, &name).unwrap();
    assert!(by_name.same_as(&guard.ns).unwrap());
    assert!(by_name
        .run(|| Netlink::open()?.link_by_name("lo"))
        .unwrap()
        .unwrap()
        .is_some_and(|lo| lo.up));

    assert!(matches!(
        NetNs::create_named(&root, &name),
        Err(NetNsError::AlreadyExists { .. })
    ));
    for bad in ["", "..", "a/b", "../../etc/x"] {
        assert!(matches!(
            NetNs::create_named(&root, bad),
            Err(NetNsError::InvalidName { .. })
        ));
    }

    NetNs::delete_named(&root, &name).unwrap();
    let list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str())),
        "{list}"
    );
    // Already gone is fine.
    NetNs::delete_named(&root, &name).unwrap();
    drop(guard);
}

#[test]
fn dumps_lookups_and_alt_names_agree_with_the_kernel() {
    require_root();
    let ns = TestNs::new("dump");
    ns.ip_ok(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    let (links, by_index, missing, alt, after_del) = ns
        .netlink(|nl| {
            let links = nl.links()?;
            let d0 = index_of(nl, "d0");
            let by_index = nl.link_by_index(d0)?;
            let missing = nl.link_by_name("nosuchlink")?;
            nl.add_alt_name(d0, "enp99s0f0v7")?;
            nl.add_alt_name(d0, "a-long-alternative-name-for-d0")?;
            let by_alt = nl.link_by_name("enp99s0f0v7")?.map(|l| l.name);
            let by_long_alt = nl
                .link_by_name("a-long-alternative-name-for-d0")?
                .map(|l| l.name);
            assert_eq!(by_alt.as_deref(), Some("d0"));
            assert_eq!(by_long_alt.as_deref(), Some("d0"));
            nl.del_alt_name(d0, "a-long-alternative-name-for-d0")?;
            let alt = nl.link_by_name("d0")?;
            nl.del_alt_name(d0, "enp99s0f0v7")?;
            let after_del = nl.link_by_name("d0")?;
            Ok((links, by_index, missing, alt, after_del))
        })
        .unwrap();
    let mut names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["d0", "d1", "lo"]);
    let d0 = links.iter().find(|l| l.name == "d0").unwrap();
    assert_eq!(by_index.as_ref(), Some(d0));
    assert_eq!(d0.kind.as_deref(), Some("veth"));
    assert_eq!(d0.oper_state, "DOWN");
    assert_eq!(missing, None);
    assert_eq!(alt.unwrap().alt_names, ["enp99s0f0v7"]);
    assert_eq!(after_del.unwrap().alt_names, Vec::<String>::new());
}

#[test]
fn errors_name_the_link_and_waits_are_bounded() {
    require_root();
    let ns = TestNs::new("err");
    let other = TestNs::new("err2");
    let (wait, gone, dup, route) = ns
        .netlink(|nl| {
            let wait = nl.wait_for_link("late0", Duration::from_millis(200));
            let gone = nl.move_to_netns(IfIndex(999_999), &other.ns);
            let lo = index_of(nl, "lo");
            let dup = nl
                .add_address(
                    lo,
                    "127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    8,
                )
                .and_then(|()| nl.add_address(lo, IpAddr::from([127, 0, 0, 1]), 8));
            let route = nl.add_route(&RouteSpec::default_via(IpAddr::from([10, 55, 0, 1])));
            Ok((wait, gone, dup, route))
        })
        .unwrap();
    // The kernel's extended ACK reaches the message.
    let route = route.unwrap_err();
    assert_eq!(
        route.errno(),
        Some(nix::errno::Errno::ENETUNREACH),
        "{route}"
    );
    assert!(
        route
            .to_string()
            .starts_with("adding route default via 10.55.0.1 failed: network is unreachable (ENETUNREACH); the kernel says: "),
        "{route}"
    );
    assert_eq!(
        wait.unwrap_err().to_string(),
        "no link named \"late0\" appeared within 200ms"
    );
    let gone = gone.unwrap_err();
    assert!(matches!(gone, NetlinkError::NoSuchLink { .. }), "{gone:?}");
    assert!(
        gone.to_string()
            .contains("failed: link 999999 does not exist"),
        "{gone}"
    );
    let dup = dup.unwrap_err();
    assert_eq!(dup.errno(), Some(nix::errno::Errno::EEXIST), "{dup}");
    assert!(
        dup.to_string()
            .starts_with("adding address 127.0.0.1/8 to lo failed: file exists (EEXIST)"),
        "{dup}"
    );
}
