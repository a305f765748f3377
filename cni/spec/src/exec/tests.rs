use super::talk::StderrLog;
use super::*;
use std::os::unix::fs::PermissionsExt;

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn inv(dir: &Path, command: CniCommand) -> Invocation {
    Invocation {
        command,
        container_id: "c1".into(),
        netns: "/var/run/netns/none".into(),
        ifname: "eth7".into(),
        args: "K8S_POD_NAME=p".into(),
        path: vec![PathBuf::from("/nonexistent"), dir.to_path_buf()],
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn finds_plugins_and_refuses_traversal() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "okplug", "true");
    let path = vec![PathBuf::from("/nonexistent"), d.path().to_path_buf()];
    assert_eq!(
        find_plugin("okplug", &path).unwrap(),
        d.path().join("okplug")
    );
    let e = find_plugin("nope", &path).unwrap_err();
    assert!(
        e.to_string().contains("\"nope\"") && e.to_string().contains("/nonexistent:"),
        "{e}"
    );
    assert_eq!(e.to_cni_error().code, 7);
    for t in ["../okplug", "/bin/sh", "..", "."] {
        let e = find_plugin(t, &path).unwrap_err();
        assert!(matches!(e, ExecError::InvalidType(_)), "{t}");
    }
    // A directory is not a plugin.
    std::fs::create_dir(d.path().join("adir")).unwrap();
    assert!(matches!(
        find_plugin("adir", &path).unwrap_err(),
        ExecError::NotFound { .. }
    ));
}

#[test]
fn passes_env_and_stdin_and_reads_the_result() {
    let d = tempfile::tempdir().unwrap();
    script(
        d.path(),
        "echoer",
        r#"conf=$(cat)
echo "log line on stderr" >&2
printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"dns":{"domain":"%s|%s|%s|%s|%s"}}' "$CNI_IFNAME" "$CNI_NETNS" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_ARGS" "$CNI_PATH" "$conf""#,
    );
    let i = inv(d.path(), CniCommand::Add);
    let r = exec_add("echoer", &i, b"{cfg}", CniVersion::V1_0_0).unwrap();
    assert_eq!(r.interfaces[0].name, "eth7");
    assert_eq!(r.interfaces[0].sandbox, "/var/run/netns/none");
    assert_eq!(
        r.dns.domain,
        format!(
            "ADD|c1|K8S_POD_NAME=p|/nonexistent:{}|{{cfg}}",
            d.path().display()
        )
    );
}

#[test]
fn plugin_errors_garbage_and_bad_results() {
    let d = tempfile::tempdir().unwrap();
    script(
        d.path(),
        "fails",
        r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":117,"msg":"no luck","details":"really"}'; exit 1"#,
    );
    script(
        d.path(),
        "garbage",
        "echo 'segfault or so'; echo oops >&2; exit 2",
    );
    script(
        d.path(),
        "badresult",
        "echo '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"x\"}]}'",
    );
    script(d.path(), "silent", "exit 0");
    let i = inv(d.path(), CniCommand::Add);
    match exec_add("fails", &i, b"{}", CniVersion::V1_0_0).unwrap_err() {
        ExecError::Plugin { plugin, error, .. } => {
            assert_eq!(plugin, "fails");
            assert_eq!(error, CniError::new(117, "no luck").with_details("really"));
        }
        other => panic!("{other}"),
    }
    let g = exec_add("garbage", &i, b"{}", CniVersion::V1_0_0).unwrap_err();
    let ge = g.to_cni_error();
    assert_eq!(ge.code, 6);
    assert!(
        ge.msg.contains("garbage") && ge.msg.contains("segfault") && ge.msg.contains("oops"),
        "{ge}"
    );
    let b = exec_add("badresult", &i, b"{}", CniVersion::V1_0_0).unwrap_err();
    assert_eq!(b.to_cni_error().code, 6);
    assert!(b.to_string().contains("badresult"), "{b}");
    exec_no_result("silent", &i.with_command(CniCommand::Del), b"{}").unwrap();
}

#[test]
fn a_hung_plugin_is_killed_at_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    // The sleep is a grandchild holding stdout: the whole group must go.
    script(d.path(), "hangs", "sleep 30; echo '{}'");
    let mut i = inv(d.path(), CniCommand::Add);
    i.timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let e = exec_raw("hangs", &i, b"{}").unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("hangs"), "{e}");
    assert_eq!(e.to_cni_error().code, 5);
}

#[test]
fn a_plugin_that_ignores_stdin_is_fine() {
    let d = tempfile::tempdir().unwrap();
    script(
        d.path(),
        "noread",
        r#"echo '{"cniVersion":"0.4.0","supportedVersions":["0.4.0"]}'"#,
    );
    let big = vec![b' '; 1 << 20];
    exec_raw("noread", &inv(d.path(), CniCommand::Add), &big).unwrap();
    let v = exec_version("noread", &[d.path().to_path_buf()], Duration::from_secs(5)).unwrap();
    assert!(v.supports(CniVersion::V0_4_0));
    assert!(!v.supports(CniVersion::V1_0_0));
}

#[test]
fn large_configs_and_answers_pass_whole_and_stderr_is_kept() {
    let d = tempfile::tempdir().unwrap();
    // Both far larger than a pipe's buffer: the config goes in while the answer comes out.
    script(
        d.path(),
        "echoes",
        "printf 'first line\\nno newline at the end' >&2; cat; exit 3",
    );
    let big: Vec<u8> = (0..3 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    match exec_raw("echoes", &inv(d.path(), CniCommand::Add), &big).unwrap_err() {
        ExecError::Garbage { stdout, stderr, .. } => {
            assert!(stdout.starts_with("abcdefghij") && stdout.ends_with("..."));
            assert_eq!(stderr, "first line\nno newline at the end");
        }
        other => panic!("{other:?}"),
    }
    script(d.path(), "cats", "cat");
    let out = exec_raw("cats", &inv(d.path(), CniCommand::Add), &big).unwrap();
    assert!(out == big, "{} bytes back of {}", out.len(), big.len());
}

#[test]
fn a_leftover_child_holding_stdout_is_bounded_too() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "forks", "sleep 30 & echo '{}'; exit 0");
    let mut i = inv(d.path(), CniCommand::Add);
    i.timeout = Duration::from_millis(500);
    let t0 = Instant::now();
    let e = exec_raw("forks", &i, b"{}").unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(e.to_string().contains("stdout open"), "{e}");
}

#[test]
fn a_plugin_printing_endlessly_is_killed_at_the_stdout_limit() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "chatty", "exec yes '{\"cniVersion\":\"1.0.0\"}'");
    let t0 = Instant::now();
    let e = exec_raw("chatty", &inv(d.path(), CniCommand::Add), b"{}").unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(matches!(e, ExecError::OutputTooLarge { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"chatty\"") && msg.contains(&STDOUT_MAX.to_string()),
        "{msg}"
    );
}

#[test]
fn endless_stderr_keeps_only_a_bounded_tail() {
    let d = tempfile::tempdir().unwrap();
    // 8 MB of stderr without a newline, then a last line, then a failure.
    script(
        d.path(),
        "noisy",
        "head -c 8000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the last words' >&2; echo garbage; exit 1",
    );
    match exec_raw("noisy", &inv(d.path(), CniCommand::Add), b"{}").unwrap_err() {
        ExecError::Garbage { stderr, .. } => {
            assert!(stderr.len() <= QUOTE_MAX + 3, "{}", stderr.len());
        }
        other => panic!("{other:?}"),
    }
    let mut log = StderrLog::new("noisy");
    for _ in 0..1000 {
        log.push(&[b'x'; 8192]);
    }
    log.push(b"\nthe last words\n");
    let kept = log.finish();
    assert!(kept.len() <= STDERR_KEEP, "{}", kept.len());
    assert!(kept.ends_with("the last words\n"), "{kept:?}");
}

#[test]
fn a_path_entry_with_a_colon_is_refused() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "okplug", "true");
    let mut i = inv(d.path(), CniCommand::Add);
    i.path.push(PathBuf::from("/a:b"));
    let e = exec_raw("okplug", &i, b"{}").unwrap_err();
    assert!(e.to_string().contains("CNI_PATH"), "{e}");
}
