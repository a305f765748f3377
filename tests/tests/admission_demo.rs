//! `hack/demo`'s admission part stays true: the demo binary runs the real controller against the
//! API-server stand-in and exits non-zero unless every pod is admitted or refused as it says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn the_admission_demo_refuses_the_broken_pods_and_admits_the_good_ones() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_admission-demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("Error from server (Forbidden)").count(),
        4,
        "{stdout}"
    );
    assert!(stdout.contains("pod/web-1 created"), "{stdout}");
    assert!(stdout.contains("pod/dpdk-1 created"), "{stdout}");
}
