//! The CNI binary the container runtime execs: reads the network config from stdin and the `CNI_*`
//! variables, prints only the result (or the error JSON) on stdout, and logs to stderr or to the
//! conf's `logFile` (for the sriov plugin only a file under /var/log: its conf may be a tenant's).
//!
//! The conf's `type` picks the plugin: `sriov` runs the SR-IOV plugin ([`vfcni::sriov`]), anything
//! else the meta-plugin; installed under the name `sriov` it is always the SR-IOV plugin.
//!
//! Run with arguments it is a tool, not a plugin: `genie install --to DIR [--name NAME ...]`
//! copies itself into a CNI bin dir (see [`vfcni::install`]). Runtimes exec plugins without
//! arguments.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use vfcni::spec::error::chain;

/// Whether this invocation is the SR-IOV plugin (as `main` decides it).
fn runs_as_sriov(stdin: &[u8]) -> bool {
    std::env::args_os()
        .next()
        .as_ref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "sriov")
        || vfcni::sriov::is_sriov_conf(stdin)
}

/// The conf's `logFile`, opened for appending. genie's own conf (`"type": "genie"`) is the
/// node's (`trusted`): any absolute path, as ever. Any other, the sriov plugin's first, may be a
/// tenant's: only a file under /var/log ([`vfcni::sriov::logfile`]); a refused one comes back
/// as the reason, and the process logs to stderr.
fn open_log_file(
    conf: &serde_json::Value,
    trusted: bool,
) -> (Option<std::fs::File>, Option<String>) {
    let Some(path) = conf
        .get("logFile")
        .and_then(|v| v.as_str())
        .filter(|p| !p.is_empty())
    else {
        return (None, None);
    };
    if !trusted {
        return match vfcni::sriov::logfile::open_confined(path) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(chain(&e))),
        };
    }
    let file = Some(path).filter(|p| p.starts_with('/')).and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(p)
            .ok()
    });
    (file, None)
}

fn init_logging(stdin: &[u8]) {
    let conf: serde_json::Value = serde_json::from_slice(stdin).unwrap_or_default();
    let level = conf
        .get("logLevel")
        .or_else(|| conf.get("log_level"))
        .and_then(|v| v.as_str())
        .unwrap_or("info")
        .to_ascii_lowercase();
    let level = match level.as_str() {
        "panic" | "fatal" | "error" => "error",
        "warning" | "warn" => "warn",
        "debug" | "verbose" => "debug",
        _ => "info",
    };
    let filter = EnvFilter::try_from_env("VFGENIE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let genie_conf = conf.get("type").and_then(|t| t.as_str()) == Some("genie");
    let (file, refused) = open_log_file(&conf, genie_conf && !runs_as_sriov(stdin));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match file {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
    if let Some(reason) = refused {
        tracing::warn!(
            reason = %reason,
            "the logFile of this network config was refused; logging to stderr instead"
        );
    }
}

/// `genie install ...`; logs go to stderr.
fn run_tool(mut args: std::env::ArgsOs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VFGENIE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    match args.next().as_ref().and_then(|a| a.to_str()) {
        Some("install") => {}
        other => {
            eprintln!(
                "genie: unknown command {:?}; usage: genie install --to DIR [--name NAME ...] (as a CNI plugin genie takes no arguments)",
                other.unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    }
    let result =
        vfcni::install::InstallArgs::parse(args).and_then(|a| vfcni::install::install_self(&a));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("genie install: {}", chain(&e));
            match e {
                vfcni::install::InstallError::Usage { .. }
                | vfcni::install::InstallError::Name { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// A run this binary may not make: the error JSON on stdout, the reason on stderr, nothing else.
fn refuse(
    env: &std::collections::HashMap<String, String>,
    stdin: &[u8],
    e: vfcni::spec::CniError,
) -> ExitCode {
    eprintln!("genie: {}", e.msg);
    let out = vfcni::invocation::invoke("genie", env, stdin, || Err(e));
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.write_all(b"\n");
    let _ = so.flush();
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    args.next();
    if args.len() > 0 {
        return run_tool(args);
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("genie: cannot read the network config from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let env = vfcni::spec::env::CniEnv::capture();
    // One binary, two plugins: installed as `sriov` (`genie install --name sriov`) or handed a
    // `"type": "sriov"` config, it is the SR-IOV plugin.
    let as_sriov = runs_as_sriov(&stdin);
    // A delegate of genie may only be the sriov plugin, a delegate of that nothing of ours: checked
    // before the conf is used for anything (its log file, its API server, its delegates).
    let caller = std::env::var(vfcni::nesting::ENV).ok();
    let command = env.get("CNI_COMMAND").map(String::as_str).unwrap_or("");
    let role = match vfcni::nesting::role(caller.as_deref(), as_sriov) {
        Ok(role) => role,
        Err(_) if command == "VERSION" => vfcni::nesting::Role::Genie,
        // A refused role never attached anything, so its DEL and GC have nothing to undo.
        Err(e) if command == "DEL" || command == "GC" => {
            eprintln!("genie: {}; nothing to undo", e.msg);
            return ExitCode::SUCCESS;
        }
        Err(e) => return refuse(&env, &stdin, e),
    };
    vfcni::nesting::enter(role);
    init_logging(&stdin);
    let out = match role {
        vfcni::nesting::Role::Sriov => {
            vfcni::sriov::run(&env, &stdin, &vfcni::sriov::CrashAt::from_process_env())
        }
        vfcni::nesting::Role::Genie => vfcni::genie::run(&env, &stdin),
    };
    let mut so = std::io::stdout().lock();
    if !out.stdout.is_empty() {
        let _ = so.write_all(out.stdout.as_bytes());
        let _ = so.write_all(b"\n");
    }
    let _ = so.flush();
    if out.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
