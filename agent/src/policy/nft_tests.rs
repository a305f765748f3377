//! Unit tests of nft.rs: document checks, binary lookup, and the exec layer against stand-ins.

use super::*;

fn doc(cmds: Value) -> Value {
    json!({ "nftables": cmds })
}

const T: &str = r#"{"family": "inet", "name": "vfgenie"}"#;

fn table() -> Value {
    serde_json::from_str(T).unwrap()
}

#[test]
fn a_replacement_document_is_about_its_one_table() {
    let d = doc(json!([
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": table()}},
        {"delete": {"table": table()}},
        {"add": {"table": table()}},
        {"add": {"chain": {"family": "inet", "table": "vfgenie", "name": "in",
            "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}},
        {"set": {"family": "inet", "table": "vfgenie", "name": "peers", "type": "ipv4_addr"}},
        {"add": {"element": {"family": "inet", "table": "vfgenie", "name": "peers",
            "elem": ["10.0.0.1"]}}},
        {"add": {"rule": {"family": "inet", "table": "vfgenie", "chain": "in",
            "expr": [{"accept": null}]}}},
    ]));
    assert_eq!(
        table_of(&d).unwrap(),
        ("inet".to_string(), "vfgenie".to_string())
    );
}

#[test]
fn documents_that_reach_other_tables_are_refused() {
    let cases = [
        (json!({"tables": []}), "\"nftables\" array"),
        (doc(json!([])), "names no table"),
        (
            doc(json!([{"flush": {"ruleset": null}}])),
            "touches every table",
        ),
        (
            doc(json!([{"add": {"table": table()}},
                {"add": {"table": {"family": "ip", "name": "vfgenie"}}}])),
            "entry 1 is about table ip vfgenie, the document about inet vfgenie",
        ),
        (
            doc(json!([{"add": {"table": table()}},
                {"flush": {"chain": {"family": "inet", "table": "filter", "name": "input"}}}])),
            "entry 1 is about table inet filter",
        ),
        (
            doc(json!([{"delete": {"table": {"family": "inet", "handle": 3}}}])),
            "entry 0 (delete table) does not name its table",
        ),
        (
            doc(json!([{"add": {"table": table()}}, 7])),
            "entry 1 is not an object",
        ),
    ];
    for (d, want) in cases {
        let e = table_of(&d).unwrap_err();
        assert!(
            matches!(e, NftError::Document { .. }) && e.to_string().contains(want),
            "{d}: {e}"
        );
    }
}

#[test]
fn table_names_are_checked_before_nft_sees_them() {
    for good in ["vfgenie", "kube-proxy", "a_b.c", "_x"] {
        check_name(good).unwrap();
    }
    for bad in ["", "-h", "1abc", "a b", "a;b", "a\"b", &"x".repeat(300)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn nft_is_found_in_path_or_named_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nft");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
    let e = find_in_path(Some(path.clone())).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "nft is not installed: no executable nft in PATH (/nonexistent:{})",
            dir.path().display()
        )
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(find_in_path(Some(path)).unwrap(), fake);
    assert!(find_in_path(None).is_err());

    let e = Nft::new(Some(&dir.path().join("nope"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "nft binary {}/nope is not an executable file",
            dir.path().display()
        )
    );
    assert_eq!(Nft::new(Some(&fake)).unwrap().binary(), fake);
}

#[test]
fn stderr_is_trimmed_and_bounded() {
    assert_eq!(
        trim_stderr(b"\ninternal:0:0-0: Error: No such file or directory\n\n"),
        "internal:0:0-0: Error: No such file or directory"
    );
    assert_eq!(trim_stderr(b"  \n"), "(no message)");
    let long = trim_stderr("é".repeat(5000).as_bytes());
    assert!(long.len() <= STDERR_LIMIT + 6 && long.ends_with(" [...]"));
}

/// A stand-in for nft (a shell script); the tests run nft itself in tests/tests/policy_nft.rs.
fn fake_nft(dir: &Path, script: &str) -> Nft {
    let p = dir.join("nft");
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    Nft::new(Some(&p)).unwrap()
}

/// Runs `f`, again while another test thread's fork still holds the fresh script open for
/// writing (ETXTBSY), for a bounded number of times.
fn retry_busy<T>(mut f: impl FnMut() -> Result<T, NftError>) -> Result<T, NftError> {
    for _ in 0..100 {
        match f() {
            Err(NftError::Spawn { source, .. })
                if source.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) =>
            {
                std::thread::yield_now()
            }
            r => return r,
        }
    }
    f()
}

fn minimal() -> Value {
    doc(json!([{"add": {"table": table()}}]))
}

#[test]
fn a_hanging_nft_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let nft = fake_nft(dir.path(), "exec sleep 30").with_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    let e = retry_busy(|| nft.apply(None, &minimal())).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(
        e.to_string(),
        "nft did not finish within 300ms in the host network namespace and was killed"
    );
}

#[test]
fn a_failing_nft_reports_its_stderr_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let nft = fake_nft(
        dir.path(),
        "cat >/dev/null; echo '  Error: bad rule  ' >&2; echo >&2; exit 3",
    );
    let e = retry_busy(|| nft.apply(None, &minimal())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nft failed in the host network namespace (exit status: 3): Error: bad rule"
    );
}

#[test]
fn the_document_reaches_nft_whole() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen.json");
    let nft = fake_nft(
        dir.path(),
        &format!("[ \"$*\" = '-j -f -' ] || exit 9; cat > {}", seen.display()),
    );
    // Bigger than a pipe's buffer, so the writer and nft must overlap.
    let elems: Vec<String> = (0..20000)
        .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
        .collect();
    let d = doc(json!([{"add": {"table": table()}},
        {"add": {"element": {"family": "inet", "table": "vfgenie", "name": "s", "elem": elems}}}]));
    retry_busy(|| nft.apply(None, &d)).unwrap();
    let got: Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(got, d);
}

#[test]
fn a_missing_namespace_is_named() {
    let nft = Nft {
        binary: PathBuf::from("/bin/true"),
        timeout: DEFAULT_TIMEOUT,
    };
    let e = nft
        .apply(Some(Path::new("/nonexistent/netns/pod1")), &minimal())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "opening network namespace /nonexistent/netns/pod1 failed: no such file or directory (ENOENT)"
    );
}
