//! One libFuzzer binary for every fuzz target of `vffuzz`: the target is named by
//! `VFGENIE_FUZZ_TARGET`. Each input goes to the same `Target::run` as the proptest runner
//! (`fuzz/tests/fuzz.rs`), and a violated invariant panics, which libFuzzer reports as a crash and
//! saves. When `VFGENIE_FUZZ_CORPUS` names a directory, the target's seed corpus (`.hex` seeds
//! decoded) is written into it at start, before libFuzzer reads it. `hack/fuzz --coverage` builds
//! and runs this; see there for the flags.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Fuzzing {
    target: &'static vffuzz::Target,
    scratch: vffuzz::Scratch,
}

static FUZZING: OnceLock<Fuzzing> = OnceLock::new();

fn setup() -> Fuzzing {
    let name = std::env::var("VFGENIE_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = vffuzz::target(&name) else {
        let known: Vec<_> = vffuzz::targets().iter().map(|t| t.name).collect();
        eprintln!(
            "VFGENIE_FUZZ_TARGET={name:?} is not a target; the targets: {}",
            known.join(" ")
        );
        std::process::exit(2);
    };
    if let Some(dir) = std::env::var_os("VFGENIE_FUZZ_CORPUS") {
        let dir = std::path::PathBuf::from(dir);
        let seeds = vffuzz::seeds(name.as_str()).unwrap_or_else(|e| {
            eprintln!("reading the seed corpus of {name}: {e}");
            std::process::exit(2);
        });
        for (file, bytes) in seeds {
            let path = dir.join(format!("seed-{file}"));
            if let Err(e) = std::fs::write(&path, bytes) {
                eprintln!("writing {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    }
    let scratch = vffuzz::Scratch::new().unwrap_or_else(|e| {
        eprintln!("creating a scratch directory: {e}");
        std::process::exit(2);
    });
    Fuzzing { target, scratch }
}

fuzz_target!(
    init: {
        FUZZING.get_or_init(setup);
    },
    |data: &[u8]| {
        let f = FUZZING.get_or_init(setup);
        if let Err(violated) = (f.target.run)(&f.scratch, data) {
            panic!("{}: {violated}", f.target.name);
        }
        vffuzz::take_accepted();
    }
);
