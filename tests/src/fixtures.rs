//! The sysfs fixture trees of `core/fixtures` ([`vfcore::fixtures`]), copied where a test's agent
//! may change them, and whole-tree snapshots to tell whether it did.

pub use vfcore::fixtures::{contents, copy as copy_fixture};
