//! Where one run's time goes: each step's own time (nested steps are subtracted from the step
//! around them), logged at debug level as one line when the run ends:
//!
//! `sriov step timings: command=ADD total=5123us pf_netlink=410us rebind=0us ...`
//!
//! The sriov plugin's steps: `resolve` (the VF in sysfs), `lock`, `cache` (records read and written), `read_netlink`
//! (the VF's original state), `pf_netlink` (PF-side VF settings), `mac_netlink` (the netdev's
//! MAC), `rebind` (a VF driver rebind so the VF reads its MAC from the PF, with the wait for its
//! new netdev), `netns_move` (temporary netns, moves, rename, MTU and up in the pod),
//! `ipam_exec` (the IPAM plugin, VERSION included), `addr_route` (addresses and routes in the
//! pod), `netdev_restore` (DEL: the host netdev's name, MAC, MTU, up).
//!
//! genie's: `cache` (its pod records), `api` (Kubernetes API requests), `plan` (annotations,
//! confs and NADs resolved, API requests excluded), `podresources` (the kubelet asked for the
//! pod's devices), `policy` (the node agent installs the pod's policy table), `device_info`,
//! `delegates` (the delegate plugins exec'd, start to exit), `finish` (ADD's last step: the
//! pod's default routes settled, the network-status written and the results' cache record
//! written, side by side).
//!
//! `total` runs from the start of the plugin's work to its end; what no step covers is the
//! plugin's own code. Steps are timed on the thread that runs the plugin's work; work that other
//! threads do in parallel is inside a step of that thread (`finish`), never timed on its own, so
//! that the steps and the plugin's own code add up to `total`.
//!
//! Nothing is measured unless debug logging is on, so a normal run pays one level check per step.

use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Timings {
    /// Own time per step, in first-seen order.
    steps: Vec<(&'static str, Duration)>,
    /// For each step in progress, the time of the steps nested in it so far.
    nested: Vec<Duration>,
}

static TIMINGS: Mutex<Timings> = Mutex::new(Timings {
    steps: Vec::new(),
    nested: Vec::new(),
});

fn with(f: impl FnOnce(&mut Timings)) {
    if let Ok(mut t) = TIMINGS.lock() {
        f(&mut t);
    }
}

fn enabled() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// Runs `f` as the step `step`, adding its own time to the step's total.
pub fn timed<T>(step: &'static str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    with(|t| t.nested.push(Duration::ZERO));
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    with(|t| {
        let inner = t.nested.pop().unwrap_or_default();
        if let Some(outer) = t.nested.last_mut() {
            *outer += elapsed;
        }
        let own = elapsed.saturating_sub(inner);
        match t.steps.iter_mut().find(|(s, _)| *s == step) {
            Some((_, d)) => *d += own,
            None => t.steps.push((step, own)),
        }
    });
    out
}

/// The timings line for a run of `command` that took `total` (without the log prefix).
fn line(command: &str, total: Duration, steps: &[(&'static str, Duration)]) -> String {
    let mut s = format!("command={command} total={}us", total.as_micros());
    for (step, d) in steps {
        s.push_str(&format!(" {step}={}us", d.as_micros()));
    }
    s
}

fn take() -> Vec<(&'static str, Duration)> {
    let mut steps = Vec::new();
    with(|t| steps = std::mem::take(&mut t.steps));
    steps
}

/// Logs the run's timings (debug level) as `<plugin> step timings: ...` and forgets them.
pub fn report(plugin: &str, command: &str, started: Instant) {
    if !enabled() {
        return;
    }
    let total = started.elapsed();
    let steps = take();
    tracing::debug!("{plugin} step timings: {}", line(command, total, &steps));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_every_step_in_microseconds() {
        let steps = [
            ("lock", Duration::from_micros(12)),
            ("rebind", Duration::from_millis(3)),
        ];
        assert_eq!(
            line("ADD", Duration::from_micros(5123), &steps),
            "command=ADD total=5123us lock=12us rebind=3000us"
        );
    }

    #[test]
    fn a_nested_step_is_not_counted_in_the_step_around_it() {
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let _ = take();
            let t0 = Instant::now();
            timed("outer", || {
                std::thread::sleep(Duration::from_millis(20));
                timed("inner", || std::thread::sleep(Duration::from_millis(40)));
            });
            let wall = t0.elapsed();
            let steps = take();
            let get = |n: &str| steps.iter().find(|(s, _)| *s == n).unwrap().1;
            assert!(get("inner") >= Duration::from_millis(40), "{steps:?}");
            assert!(get("outer") >= Duration::from_millis(20), "{steps:?}");
            // Counted once: the outer step's own time and the inner step's fit in the wall time
            // (counting the inner step in the outer one too would exceed it by the inner step).
            assert!(get("outer") + get("inner") <= wall, "{steps:?} in {wall:?}");
        });
    }
}
