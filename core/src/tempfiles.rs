//! The temporary files of atomic writers (temp file, fsync, rename) that were killed before
//! their rename. Every writer of the project names its temp file `.<name>.tmp` followed by
//! numbers (its pid, and a counter where one process writes several), each after a `.` or `-`:
//! genie's cache `.<name>.tmp.<pid>.<n>`, the sriov plugin's records `.<name>.tmp.<pid>`,
//! device-info files `.<name>.tmp-<pid>-<n>`. A file whose name only starts like one (another
//! attachment's name that happens to extend this one) is never taken.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// True when `file` is a temporary file of a writer of `name`.
pub fn is_temp_of(file: &str, name: &str) -> bool {
    let Some(rest) = file
        .strip_prefix('.')
        .and_then(|f| f.strip_prefix(name))
        .and_then(|f| f.strip_prefix(".tmp"))
    else {
        return false;
    };
    let mut numbers = 0;
    let mut digits = 0;
    for b in rest.bytes() {
        match b {
            b'.' | b'-' if numbers == 0 || digits > 0 => {
                numbers += 1;
                digits = 0;
            }
            b'0'..=b'9' if numbers > 0 => digits += 1,
            _ => return false,
        }
    }
    numbers > 0 && digits > 0
}

/// Removes the temporary files of writers of `dir/name` that were killed before their rename,
/// and returns them. Only call it where no writer of `name` can be alive (the caller holds the
/// lock its writers take, or the runtime's contract rules them out). A directory that cannot be
/// listed has nothing to remove; a file that cannot be removed is the error, with its path.
pub fn remove_killed_writers(
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        if !file.to_str().is_some_and(|f| is_temp_of(f, name)) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err((path, e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temp_names_of_every_writer_and_nothing_else() {
        for temp in [
            ".c1-eth0.json.tmp.9423.0",
            ".c1-net1.json.tmp.4242",
            ".ns-net-c1-net1-device.json.tmp-15185-0",
        ] {
            let name = temp[1..temp.find(".tmp").unwrap()].to_string();
            assert!(is_temp_of(temp, &name), "{temp}");
        }
        for (file, name) in [
            ("c1-net1.json", "c1-net1.json"),
            (".c1-net1.json", "c1-net1.json"),
            (".c1-net1.json.tmp", "c1-net1.json"),
            (".c1-net1.json.tmp.", "c1-net1.json"),
            (".c1-net1.json.tmp.x", "c1-net1.json"),
            (".c1-net1.json.tmp.1..2", "c1-net1.json"),
            (".c1-net1.json.tmp-x-1", "c1-net1.json"),
            (".c1-net1.json.tmp.x-net1.json.tmp.5", "c1-net1.json"),
            (".c1-net1.json.tmpx.5", "c1-net1.json"),
            (".c10-net1.json.tmp.5", "c1-net1.json"),
            (".c1-net1.json.tmp.5", "c1-net"),
        ] {
            assert!(!is_temp_of(file, name), "{file} of {name}");
        }
    }

    #[test]
    fn only_the_temp_files_of_that_name_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = [".r.json.tmp-2-3", ".r.json.tmp.1"];
        let others = ["r.json", ".q.json.tmp.1", ".r.json.tmp.x"];
        for f in mine.iter().chain(&others) {
            fs::write(dir.path().join(f), "").unwrap();
        }
        let mut removed = remove_killed_writers(dir.path(), "r.json").unwrap();
        removed.sort();
        assert_eq!(removed, mine.map(|f| dir.path().join(f)));
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".q.json.tmp.1", ".r.json.tmp.x", "r.json"]);
        // A directory that does not exist has nothing to remove.
        assert!(remove_killed_writers(&dir.path().join("none"), "r.json")
            .unwrap()
            .is_empty());
    }
}
