use super::*;

fn kernel_with_vf() -> (Arc<Mutex<FakeKernel>>, IfIndex) {
    let k = FakeKernel::shared();
    let mac: MacAddr = "02:00:00:00:00:10".parse().unwrap();
    let link = FakeLink::physical("enp3s0f0v0", mac, "0000:03:10.0".parse().unwrap());
    let index = k.lock().unwrap().add_link(link);
    (k, index)
}

#[test]
fn an_injected_fault_fails_the_chosen_call_once() {
    let (k, index) = kernel_with_vf();
    k.lock().unwrap().fail(FakeOp::SetMtu, 1);
    let mut nl = FakeNetlink::new(k.clone(), HOST_NS);
    nl.set_mtu(index, 9000).unwrap();
    assert!(nl.set_mtu(index, 9001).is_err());
    nl.set_mtu(index, 9002).unwrap();
    assert!(!k.lock().unwrap().faults_pending());
    assert_eq!(k.lock().unwrap().link(index).unwrap().mtu, 9002);
}

#[test]
fn links_are_renamed_only_while_down_and_seen_only_in_their_namespace() {
    let (k, index) = kernel_with_vf();
    let mut host = FakeNetlink::new(k.clone(), HOST_NS);
    host.set_up(index, true).unwrap();
    assert!(matches!(
        host.set_name(index, "net1"),
        Err(NetlinkError::LinkUp { .. })
    ));
    k.lock().unwrap().add_netns("pod");
    host.move_to(index, "pod").unwrap();
    assert!(host.link_by_name("enp3s0f0v0").unwrap().is_none());
    let mut pod = FakeNetlink::new(k.clone(), "pod");
    let link = pod.link_by_name("enp3s0f0v0").unwrap().unwrap();
    assert!(!link.up, "a moved link is down");
    pod.set_name(index, "net1").unwrap();
    assert!(pod.link_by_name("net1").unwrap().is_some());
}

#[test]
fn deleting_a_namespace_returns_its_physical_links_to_the_host() {
    let (k, index) = kernel_with_vf();
    let mut host = FakeNetlink::new(k.clone(), HOST_NS);
    k.lock().unwrap().add_netns("pod");
    host.move_to(index, "pod").unwrap();
    // A host link now holds the name: the returning link becomes devN.
    let other = FakeLink::physical(
        "enp3s0f0v0",
        "02:00:00:00:00:11".parse().unwrap(),
        "0000:03:10.2".parse().unwrap(),
    );
    k.lock().unwrap().add_link(other);
    assert!(k.lock().unwrap().del_netns("pod"));
    let back = host.link_by_index(index).unwrap().unwrap();
    assert_eq!(back.name, format!("dev{index}"));
    assert!(!k.lock().unwrap().has_netns("pod"));
}
