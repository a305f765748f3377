//! The fuzz runner (its own main: `harness = false`).
//!
//!   cargo test -p vfgenie-fuzz                      every target, a short budget each (CI)
//!   fuzz TARGET... [--time 10m] [--seed N]          chosen targets, longer (hack/fuzz)
//!   fuzz --list                                     the targets
//!
//! Each target first runs its seed corpus as is, then inputs that proptest generates from the
//! seeds: structural mutations of the JSON (keys dropped or added, values replaced by other
//! types, huge numbers, deep nesting, odd unicode, `../` paths, long strings, JSON embedded in
//! strings mutated in turn), then sometimes byte-level damage. A failing input (panic,
//! violated invariant, or a case over the time limit) is shrunk, printed, and saved under
//! `target/fuzz-failures/`; the run then fails. The closing line has cargo test's form, so
//! hack/test counts one passed or failed test per target.

use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value};

use vffuzz::{Scratch, Shape, Target};

/// Each target's budget under `cargo test` (VFGENIE_FUZZ_SECS overrides).
const DEFAULT_SECS: f64 = 2.0;
/// The fixed seed of a default run, so CI runs the same cases every time.
const DEFAULT_SEED: u64 = 0x5eed_f00d;
/// The largest generated input: bigger ones are cut (a parser's own caps are larger, and a case
/// of many megabytes would make the dev-build run in hack/test slow and its timing noisy).
const MAX_INPUT: usize = 1 << 20;
/// One case over this is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Generators

/// Values that break parsers: wrong types, edges of number ranges, odd strings.
fn odd_string() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("../../../etc/shadow".to_string()),
        Just("/dev/zero".to_string()),
        Just("/proc/self/mem".to_string()),
        Just("a/../../b".to_string()),
        Just("..".to_string()),
        Just("eth0\0x".to_string()),
        Just("\u{202e}lanretni\u{200b}".to_string()),
        Just("ﬀ\u{0301}İı🦀".to_string()),
        Just("net1@eth1,net2@eth2".to_string()),
        Just("ns/name@if".to_string()),
        Just("a=b;c=d;IgnoreUnknown=true".to_string()),
        Just("{\"name\":\"x\"}".to_string()),
        Just("[{\"name\":\"x\",\"interface\":\"eth9\"}]".to_string()),
        Just("0000:03:00.1".to_string()),
        Just("10.0.0.1/24".to_string()),
        Just("fe80::1%eth0".to_string()),
        Just("1.1.0".to_string()),
        Just("0.3.1".to_string()),
        Just(" \t\r\n".to_string()),
        (1usize..70_000).prop_map(|n| "x".repeat(n)),
        (1usize..2_000).prop_map(|n| "a,".repeat(n)),
        (1usize..500).prop_map(|n| "é@".repeat(n)),
        "[a-z0-9@/._,=;-]{0,40}",
        any::<String>(),
    ]
    .boxed()
}

fn odd_scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(4095)),
        Just(Value::from(65536)),
        Just(Value::from(1e308)),
        Just(Value::from(-0.5)),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        odd_string().prop_map(Value::String),
    ]
    .boxed()
}

fn odd_value() -> BoxedStrategy<Value> {
    odd_scalar()
        .prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(odd_key(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

fn odd_key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-zA-Z_-]{1,12}",
        1 => odd_string(),
    ]
    .boxed()
}

/// One structural change at the `at`-th node (pre-order, modulo the node count).
#[derive(Debug, Clone)]
enum Mutation {
    Drop(usize),
    Replace(usize, Value),
    AddKey(usize, String, Value),
    Nest(usize, usize, bool),
    Repeat(usize, usize),
    /// The node is a string holding JSON (a NAD's config, an annotation): mutate that JSON.
    Embedded(usize, Box<Mutation>),
}

fn mutation() -> BoxedStrategy<Mutation> {
    let leaf = prop_oneof![
        2 => any::<usize>().prop_map(Mutation::Drop),
        4 => (any::<usize>(), odd_value()).prop_map(|(a, v)| Mutation::Replace(a, v)),
        2 => (any::<usize>(), odd_key(), odd_value()).prop_map(|(a, k, v)| Mutation::AddKey(a, k, v)),
        1 => (any::<usize>(), 1usize..300, any::<bool>()).prop_map(|(a, d, o)| Mutation::Nest(a, d, o)),
        1 => (any::<usize>(), 1usize..300).prop_map(|(a, n)| Mutation::Repeat(a, n)),
    ];
    leaf.prop_recursive(2, 4, 1, |inner| {
        (any::<usize>(), inner).prop_map(|(a, m)| Mutation::Embedded(a, Box::new(m)))
    })
    .boxed()
}

/// The paths of every node, pre-order.
fn node_paths(v: &Value, path: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(path.clone());
    match v {
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                path.push(PathStep::Index(i));
                node_paths(e, path, out);
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, e) in m {
                path.push(PathStep::Key(k.clone()));
                node_paths(e, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The paths of the strings that hold a JSON object or list.
fn embedded_paths(v: &Value, path: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match v {
        Value::String(s)
            if s.starts_with(['{', '[']) && serde_json::from_str::<Value>(s).is_ok() =>
        {
            out.push(path.clone());
        }
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                path.push(PathStep::Index(i));
                embedded_paths(e, path, out);
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, e) in m {
                path.push(PathStep::Key(k.clone()));
                embedded_paths(e, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Index(usize),
    Key(String),
}

fn node_mut<'a>(v: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    let mut cur = v;
    for step in path {
        cur = match (step, cur) {
            (PathStep::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            (PathStep::Key(k), Value::Object(m)) => m.get_mut(k)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn pick(v: &Value, at: usize) -> Vec<PathStep> {
    let mut all = Vec::new();
    node_paths(v, &mut Vec::new(), &mut all);
    all.swap_remove(at % all.len())
}

fn apply(doc: &mut Value, m: &Mutation) {
    match m {
        Mutation::Drop(at) => {
            let path = pick(doc, *at);
            let Some((last, parent)) = path.split_last() else {
                *doc = Value::Null;
                return;
            };
            match (last, node_mut(doc, parent)) {
                (PathStep::Index(i), Some(Value::Array(a))) if *i < a.len() => {
                    a.remove(*i);
                }
                (PathStep::Key(k), Some(Value::Object(o))) => {
                    o.remove(k);
                }
                _ => {}
            }
        }
        Mutation::Replace(at, v) => {
            let path = pick(doc, *at);
            if let Some(n) = node_mut(doc, &path) {
                *n = v.clone();
            }
        }
        Mutation::AddKey(at, k, v) => {
            let path = pick(doc, *at);
            match node_mut(doc, &path) {
                Some(Value::Object(o)) => {
                    o.insert(k.clone(), v.clone());
                }
                Some(Value::Array(a)) => a.push(v.clone()),
                _ => {}
            }
        }
        Mutation::Nest(at, depth, object) => {
            let path = pick(doc, *at);
            if let Some(n) = node_mut(doc, &path) {
                let mut cur = n.take();
                for _ in 0..*depth {
                    cur = if *object {
                        let mut m = Map::new();
                        m.insert("a".into(), cur);
                        Value::Object(m)
                    } else {
                        Value::Array(vec![cur])
                    };
                }
                *n = cur;
            }
        }
        Mutation::Repeat(at, times) => {
            let path = pick(doc, *at);
            if let Some(n) = node_mut(doc, &path) {
                let one = n.clone();
                *n = Value::Array(vec![one; *times]);
            }
        }
        Mutation::Embedded(at, inner) => {
            let mut strings = Vec::new();
            embedded_paths(doc, &mut Vec::new(), &mut strings);
            if strings.is_empty() {
                return apply(doc, inner);
            }
            let path = &strings[*at % strings.len()];
            if let Some(Value::String(s)) = node_mut(doc, path) {
                if let Ok(mut v) = serde_json::from_str::<Value>(s) {
                    apply(&mut v, inner);
                    *s = v.to_string();
                }
            }
        }
    }
}

/// Byte-level damage after the structure is written.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Splice(usize, usize, usize),
    Overwrite(usize, Vec<u8>),
}

fn damage(weight_none: u32) -> BoxedStrategy<Damage> {
    let interesting = prop_oneof![
        Just(vec![0u8]),
        Just(vec![0xff, 0xff]),
        Just(vec![0xff, 0xff, 0xff, 0xff]),
        Just(vec![4, 0]),
        Just(vec![0, 0, 0, 0]),
        Just(vec![0x10, 0, 0, 0]),
        Just(vec![0xc0]),
        Just(vec![0xed, 0xa0, 0x80]),
        Just(b"\\u0000".to_vec()),
        Just(b"\\ud800".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"@".to_vec()),
        Just(b",".to_vec()),
        Just(b"/".to_vec()),
        Just(b"[".to_vec()),
        Just(b"{".to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        weight_none => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Damage::Flip(a, b)),
        2 => (any::<usize>(), interesting.clone()).prop_map(|(a, b)| Damage::Insert(a, b)),
        1 => (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Damage::Splice(a, b, n)),
        2 => (any::<usize>(), interesting).prop_map(|(a, b)| Damage::Overwrite(a, b)),
    ]
    .boxed()
}

fn damaged(mut bytes: Vec<u8>, d: &Damage) -> Vec<u8> {
    let n = bytes.len();
    match d {
        Damage::None => {}
        Damage::Truncate(at) => bytes.truncate(at % (n + 1)),
        Damage::Flip(at, b) if n > 0 => bytes[at % n] ^= b | 1,
        Damage::Insert(at, what) => {
            let at = at % (n + 1);
            bytes.splice(at..at, what.iter().copied());
        }
        Damage::Splice(from, to, len) if n > 0 => {
            let from = from % n;
            let piece: Vec<u8> = bytes[from..(from + len).min(n)].to_vec();
            let to = to % (n + 1);
            bytes.splice(to..to, piece);
        }
        Damage::Overwrite(at, what) if n > 0 => {
            let at = at % n;
            for (i, b) in what.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        _ => {}
    }
    bytes
}

/// Text edits for the short forms: a seed, pieces of other seeds and odd strings spliced in.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Replace(String),
}

fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        4 => (any::<usize>(), odd_string()).prop_map(|(a, s)| Edit::Insert(a, s)),
        2 => (any::<usize>(), 1usize..16).prop_map(|(a, n)| Edit::Delete(a, n)),
        1 => odd_string().prop_map(Edit::Replace),
    ]
    .boxed()
}

fn edited(mut s: String, e: &Edit) -> String {
    let boundary = |s: &str, at: usize| {
        let mut at = at % (s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match e {
        Edit::Insert(at, what) => {
            let at = boundary(&s, *at);
            s.insert_str(at, what);
        }
        Edit::Delete(at, n) => {
            let from = boundary(&s, *at);
            let to = boundary(&s, from + n);
            if to > from {
                s.replace_range(from..to, "");
            }
        }
        Edit::Replace(what) => s = what.clone(),
    }
    s
}

/// Netlink: a structured message with nested attributes, then damaged.
fn netlink_message() -> BoxedStrategy<Vec<u8>> {
    let attr = (0u16..64, prop::collection::vec(any::<u8>(), 0..24))
        .prop_map(|(t, v)| nla(t, &v))
        .prop_recursive(3, 16, 4, |inner| {
            (0u16..64, any::<bool>(), prop::collection::vec(inner, 0..4)).prop_map(
                |(t, nested_flag, kids)| {
                    let body: Vec<u8> = kids.concat();
                    nla(if nested_flag { t | 0x8000 } else { t }, &body)
                },
            )
        });
    (
        prop_oneof![
            Just(2u16),
            Just(3),
            Just(16),
            Just(20),
            Just(24),
            any::<u16>()
        ],
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(attr, 0..6),
    )
        .prop_map(|(kind, fixed, attrs)| {
            let mut payload = fixed;
            payload.extend(attrs.concat());
            let len = 16 + payload.len();
            let mut msg = Vec::with_capacity(len);
            msg.extend((len as u32).to_ne_bytes());
            msg.extend(kind.to_ne_bytes());
            msg.extend(0u16.to_ne_bytes());
            msg.extend(1u32.to_ne_bytes());
            msg.extend(0u32.to_ne_bytes());
            msg.extend(payload);
            msg
        })
        .boxed()
}

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len + 3);
    out.extend((len as u16).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn strategy(target: &Target, seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let seeds = Arc::new(seeds);
    let seed_index = 0..seeds.len();
    match target.shape {
        Shape::Json => {
            let docs: Arc<Vec<Value>> = Arc::new(
                seeds
                    .iter()
                    .map(|s| serde_json::from_slice(s).unwrap_or(Value::Null))
                    .collect(),
            );
            (
                seed_index,
                prop::collection::vec(mutation(), 0..5),
                damage(6),
                any::<bool>(),
            )
                .prop_map(move |(i, ms, d, pretty)| {
                    let mut doc = docs[i].clone();
                    for m in &ms {
                        apply(&mut doc, m);
                    }
                    let bytes = if pretty {
                        serde_json::to_vec_pretty(&doc)
                    } else {
                        serde_json::to_vec(&doc)
                    };
                    let mut bytes = damaged(bytes.unwrap_or_default(), &d);
                    bytes.truncate(MAX_INPUT);
                    bytes
                })
                .boxed()
        }
        Shape::Text => (seed_index, prop::collection::vec(edit(), 0..4), damage(8))
            .prop_map(move |(i, es, d)| {
                let mut s = String::from_utf8_lossy(&seeds[i]).into_owned();
                for e in &es {
                    s = edited(s, e);
                }
                let mut bytes = damaged(s.into_bytes(), &d);
                bytes.truncate(MAX_INPUT);
                bytes
            })
            .boxed(),
        Shape::Binary => prop_oneof![
            (seed_index, prop::collection::vec(damage(0), 1..4))
                .prop_map(move |(i, ds)| { ds.iter().fold(seeds[i].clone(), damaged) }),
            (prop::collection::vec(netlink_message(), 1..4), damage(3))
                .prop_map(|(ms, d)| damaged(ms.concat(), &d)),
            prop::collection::vec(any::<u8>(), 0..512),
        ]
        .boxed(),
    }
}

// ---------------------------------------------------------------------------------------------
// Running

enum Verdict {
    /// Passed; whether the target's parser accepted the input.
    Ok(bool),
    Failed(String),
}

/// The input being run on each worker, for the watchdog.
type Current = Arc<Mutex<Option<(String, Instant, Vec<u8>)>>>;

fn run_case(target: &Target, scratch: &Scratch, input: &[u8]) -> (Verdict, Duration) {
    let t0 = Instant::now();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(scratch, input)));
    let took = t0.elapsed();
    let accepted = vffuzz::take_accepted();
    let verdict = match outcome {
        Ok(Ok(())) if took <= CASE_LIMIT => Verdict::Ok(accepted),
        Ok(Ok(())) => Verdict::Failed(format!("one case took {took:?} (limit {CASE_LIMIT:?})")),
        Ok(Err(violation)) => Verdict::Failed(violation),
        Err(panic) => Verdict::Failed(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    (verdict, took)
}

struct Report {
    name: &'static str,
    cases: u64,
    accepted: u64,
    /// The longest case, against CASE_LIMIT.
    slowest: Duration,
    seeds: usize,
    secs: f64,
    failure: Option<String>,
}

fn failures_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("fuzz-failures")
}

fn save_failure(name: &str, input: &[u8]) -> String {
    let dir = failures_dir().join(name);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("crash-{}.bin", input.len()));
    match std::fs::write(&file, input) {
        Ok(()) => file.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    }
}

fn show(input: &[u8]) -> String {
    let s = String::from_utf8_lossy(input);
    if s.len() > 2000 {
        format!(
            "{}... ({} bytes)",
            &s[..(0..=2000)
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0)],
            input.len()
        )
    } else {
        format!("{s:?}")
    }
}

fn fuzz_target(target: &'static Target, budget: Duration, seed: u64, current: &Current) -> Report {
    let t0 = Instant::now();
    let mut report = Report {
        name: target.name,
        cases: 0,
        accepted: 0,
        slowest: Duration::ZERO,
        seeds: 0,
        secs: 0.0,
        failure: None,
    };
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            report.failure = Some(format!("no scratch directory: {e}"));
            return report;
        }
    };
    let seeds = match vffuzz::seeds(target.name) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            report.failure = Some("no seeds in the corpus".into());
            return report;
        }
        Err(e) => {
            report.failure = Some(e);
            return report;
        }
    };
    report.seeds = seeds.len();
    let slowest = std::cell::Cell::new(Duration::ZERO);
    // What the watchdog sees: the case being run, never the time spent generating the next.
    let run = |input: &[u8]| {
        if let Ok(mut c) = current.lock() {
            *c = Some((target.name.to_string(), Instant::now(), input.to_vec()));
        }
        let verdict = run_case(target, &scratch, input);
        if let Ok(mut c) = current.lock() {
            *c = None;
        }
        slowest.set(slowest.get().max(verdict.1));
        verdict
    };
    // The corpus as is: every seed, regression inputs included.
    for (file, input) in &seeds {
        report.cases += 1;
        let verdict = run(input).0;
        if let Verdict::Ok(yes) = verdict {
            report.accepted += u64::from(yes);
        }
        if let Verdict::Failed(why) = verdict {
            report.failure = Some(format!(
                "corpus file {file}: {why}\n  input: {}",
                show(input)
            ));
            report.secs = t0.elapsed().as_secs_f64();
            report.slowest = slowest.get();
            return report;
        }
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(target.name.len() as u64).to_le_bytes());
    for (i, b) in target.name.bytes().enumerate() {
        key[16 + i % 16] ^= b;
    }
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    let strategy = strategy(target, seeds.into_iter().map(|(_, b)| b).collect());
    while t0.elapsed() < budget {
        let Ok(mut tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let input = tree.current();
        report.cases += 1;
        let why = match run(&input).0 {
            Verdict::Ok(yes) => {
                report.accepted += u64::from(yes);
                continue;
            }
            Verdict::Failed(why) => why,
        };
        // Shrink: keep the smallest input that still fails (bounded number of steps).
        let (mut smallest, mut reason) = (input, why);
        let mut steps = 0;
        let mut ok = tree.simplify();
        while ok && steps < 2_000 {
            steps += 1;
            let candidate = tree.current();
            match run(&candidate) {
                (Verdict::Failed(why), _) => {
                    smallest = candidate;
                    reason = why;
                    ok = tree.simplify();
                }
                (Verdict::Ok(_), _) => ok = tree.complicate(),
            }
        }
        let saved = save_failure(target.name, &smallest);
        report.failure = Some(format!(
            "{reason}\n  input ({} bytes, saved at {saved}): {}",
            smallest.len(),
            show(&smallest)
        ));
        break;
    }
    report.secs = t0.elapsed().as_secs_f64();
    report.slowest = slowest.get();
    report
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn main() {
    let mut filters = Vec::new();
    let mut budget = std::env::var("VFGENIE_FUZZ_SECS")
        .ok()
        .and_then(|s| parse_duration(&s))
        .unwrap_or(Duration::from_secs_f64(DEFAULT_SECS));
    let mut seed = std::env::var("VFGENIE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => {
                for t in vffuzz::targets() {
                    println!("{:<20} {}", t.name, t.about);
                }
                return;
            }
            "--time" => match args.next().as_deref().and_then(parse_duration) {
                Some(d) => budget = d,
                None => usage("--time needs a duration: 30s, 10m, 1h"),
            },
            "--seed" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = s,
                None => usage("--seed needs a number"),
            },
            // Flags cargo test may pass to every test binary.
            a if a.starts_with('-') => {}
            name => {
                if vffuzz::target(name).is_none() {
                    usage(&format!("no target {name} (see --list)"));
                }
                filters.push(name.to_string());
            }
        }
    }
    let chosen: Vec<&'static Target> = vffuzz::targets()
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| f == t.name))
        .collect();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(chosen.len())
        .max(1);
    println!(
        "fuzz: {} target(s), {:.1} s each, seed {seed}, {workers} worker(s)",
        chosen.len(),
        budget.as_secs_f64()
    );
    let queue = Arc::new(Mutex::new(chosen.into_iter()));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let currents: Vec<Current> = (0..workers).map(|_| Arc::new(Mutex::new(None))).collect();
    // The watchdog: a case that runs far past the limit will never return; report it and stop.
    let watchdog = {
        let currents = currents.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                for c in &currents {
                    let Ok(c) = c.lock() else { continue };
                    if let Some((name, since, input)) = c.as_ref() {
                        if since.elapsed() > CASE_LIMIT * 6 {
                            let saved = save_failure(name, input);
                            eprintln!(
                                "fuzz {name}: HANG, one case has run {:?}; input ({} bytes) saved at {saved}: {}",
                                since.elapsed(),
                                input.len(),
                                show(input)
                            );
                            println!("test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
                            let _ = std::io::stdout().flush();
                            std::process::exit(101);
                        }
                    }
                }
            }
        })
    };
    let handles: Vec<_> = currents
        .iter()
        .map(|current| {
            let queue = queue.clone();
            let reports = reports.clone();
            let current = current.clone();
            std::thread::spawn(move || loop {
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some(target) = next else { break };
                let r = fuzz_target(target, budget, seed, &current);
                if let Ok(mut c) = current.lock() {
                    *c = None;
                }
                let line = format!(
                    "fuzz {:<20} {:>9} cases ({} seeds, {:>3.0}% accepted) in {:>6.1} s, {:>8.0} cases/s, slowest {:>5} ms: {}",
                    r.name,
                    r.cases,
                    r.seeds,
                    100.0 * r.accepted as f64 / (r.cases.max(1) as f64),
                    r.secs,
                    r.cases as f64 / r.secs.max(1e-9),
                    r.slowest.as_millis(),
                    if r.failure.is_some() { "FAILED" } else { "ok" }
                );
                println!("{line}");
                if let Some(f) = &r.failure {
                    println!("  {}: {f}", r.name);
                }
                if let Ok(mut all) = reports.lock() {
                    all.push(r);
                }
            })
        })
        .collect();
    let mut crashed = 0;
    for h in handles {
        if h.join().is_err() {
            crashed += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let (passed, failed) = reports
        .lock()
        .map(|all| {
            let failed = all.iter().filter(|r| r.failure.is_some()).count();
            (all.len() - failed, failed)
        })
        .unwrap_or((0, 1));
    let failed = failed + crashed;
    println!(
        "test result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("fuzz: {problem}\nusage: fuzz [--list] [TARGET...] [--time 10m] [--seed N]");
    std::process::exit(2);
}
