use super::*;

fn rule(sel: &str, peers: &[&str]) -> GeniePolicyRule {
    GeniePolicyRule {
        network_selector: sel.into(),
        peer_networks: peers.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn cni_genies_unquoted_form_of_the_seeds_parses() {
    let v = "[\n  {\n    networkSelector: net1\n    peerNetworks: net2\n  },\n  {\n    networkSelector: net4\n    peerNetworks: net3,net5 \n  }\n]\n";
    assert_eq!(
        parse_genie_policy(v).unwrap(),
        vec![rule("net1", &["net2"]), rule("net4", &["net3", "net5"])]
    );
    let v = "[\n {\n  networkSelector: net1\n  peerNetworks: net2    # Removed net3\n }\n]  \n";
    assert_eq!(
        parse_genie_policy(v).unwrap(),
        vec![rule("net1", &["net2"])]
    );
    let v = r#"[{networkSelector: net1, peerNetworks: "net2,net3"}]"#;
    assert_eq!(
        parse_genie_policy(v).unwrap(),
        vec![rule("net1", &["net2", "net3"])]
    );
    let v = "[{networkSelector: net1, peerNetworks: net2, net3}, {networkSelector: 'net9'}]";
    assert_eq!(
        parse_genie_policy(v).unwrap(),
        vec![rule("net1", &["net2", "net3"]), rule("net9", &[])]
    );
}

#[test]
fn json_parses_too() {
    let v = r#"[{"networkSelector":"net1","peerNetworks":"net2,net3"},{"networkSelector":"a","peerNetworks":["b"]}]"#;
    assert_eq!(
        parse_genie_policy(v).unwrap(),
        vec![rule("net1", &["net2", "net3"]), rule("a", &["b"])]
    );
    let v = r#"{"networkSelector":"net1"}"#;
    assert_eq!(parse_genie_policy(v).unwrap(), vec![rule("net1", &[])]);
}

#[test]
fn bad_values_are_refused_naming_the_annotation() {
    for v in [
        "",
        "[]",
        "net1",
        "[{peerNetworks: net2}]",
        "[{networkSelector: net1 net2}]",
        "[{networkSelector: ../x}]",
        "[{networkSelector: net1, peerNetworks: a/b}]",
        "[{networkSelector: net1, other: x}]",
        "[{networkSelector: net1",
        "[{networkSelector: \"net1}]",
        "[{networkSelector: net1}] x",
        r#"[{"networkSelector":"net1","bogus":1}]"#,
        r#"[{"networkSelector":"NET"}]"#,
    ] {
        let e = parse_genie_policy(v).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("annotation genieNetworkpolicy is invalid"),
            "{v}: {e}"
        );
    }
}

#[test]
fn policy_for_lists_namespaced_networks() {
    assert_eq!(
        parse_policy_for("a, other/b").unwrap(),
        vec![
            PolicyTarget {
                namespace: None,
                name: "a".into()
            },
            PolicyTarget {
                namespace: Some("other".into()),
                name: "b".into()
            },
        ]
    );
    for bad in ["", "a,,b", "a/b/c", "../x", "A", "ns/"] {
        let e = parse_policy_for(bad).unwrap_err();
        assert_eq!(e.annotation, POLICY_FOR, "{bad}");
    }
}

#[test]
fn a_large_value_parses_in_linear_time() {
    let rule = "{networkSelector: net1, peerNetworks: net2,net3}, ";
    let v = format!("[{}]", rule.repeat(20_000));
    let start = std::time::Instant::now();
    assert_eq!(parse_genie_policy(&v).unwrap().len(), 20_000);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn deeply_nested_values_are_refused_without_overflowing_the_stack() {
    // JSON (serde's recursion limit) and CNI-Genie's flow form (not JSON: the tokenizer path).
    for v in [
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{}{}", "{".repeat(100_000), "}".repeat(100_000)),
        format!(
            "[{{networkSelector: {}net1{}}}]",
            "[".repeat(50_000),
            "]".repeat(50_000)
        ),
    ] {
        let e = parse_genie_policy(&v).unwrap_err();
        assert_eq!(e.annotation, GENIE_NETWORK_POLICY);
    }
}
