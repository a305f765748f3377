//! The guest side of the SR-IOV lab (`hack/vmlab`): runs one scenario inside the lab VM and reports
//! each check on the console as `VMLAB CHECK <name>: ok` or `VMLAB CHECK <name>: FAIL <reason>`,
//! then `VMLAB RESULT passed=N failed=M`. The host side turns those lines into an exit status.

mod agent;
mod bench_pods;
mod chaos;
mod core_checks;
mod demo;
mod genie_ln;
mod genie_pods;
mod podnet;
mod pods;
mod report;
mod smoke;
mod util;

use std::process::ExitCode;

use report::Report;

fn main() -> ExitCode {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let mut report = Report::default();
    match scenario.as_str() {
        "agent" => agent::run(&mut report),
        "bench-pods" => bench_pods::run(&mut report),
        "chaos" => chaos::run(&mut report),
        "core" => core_checks::run(&mut report),
        "demo" => demo::run(&mut report),
        "discover" => {
            // `vmlab-guest discover [ROOT]`: the discovery table of this node or of a fixture tree.
            let root = std::env::args().nth(2).unwrap_or_else(|| "/".into());
            report.check("discover", || {
                let devs = vfcore::sysfs::discover(&vfcore::SysRoot::new(&root))?;
                report::note(&core_checks::discovery_table(&devs));
                Ok(())
            });
        }
        "genie-pods" => genie_pods::run(&mut report),
        // The whole pods scenario: the sriov plugin as Multus calls it, then pods through
        // genie with VFs from the agent's pools.
        "pods" => {
            pods::run(&mut report);
            genie_pods::run(&mut report);
        }
        "smoke" => smoke::run(&mut report),
        other => report.fail("scenario", &format!("unknown scenario {other:?}")),
    }
    report.finish()
}
