//! One fresh directory per boot: `target/keel/work/<name>-<pid>-<n>/`.
//!
//! cargo runs the tests of one binary on several threads and the test binaries one
//! after another, and a developer may run `cargo xtask run` meanwhile: the process id
//! plus a per-process counter keeps every boot's ISO, serial log and Bochs files
//! apart. Directories are left behind on purpose (the serial and Bochs logs are what
//! you read when a test fails); `cargo xtask test` clears `target/keel/work/` before
//! it starts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::HarnessError;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Turns a test or boot name into something safe as a path component (and in QEMU
/// and Bochs option strings): ASCII letters, digits, `-` and `_`; at most 48 chars.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if out.is_empty() {
        out.push_str("boot");
    }
    out
}

/// The root of all work directories: `target/keel/work`.
pub fn work_root() -> PathBuf {
    crate::keel_target_dir().join("work")
}

/// Creates a new, empty work directory for a boot called `name` under `root`.
pub fn create_in(root: &Path, name: &str) -> Result<PathBuf, HarnessError> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = root.join(format!("{}-{}-{n}", sanitize(name), std::process::id()));
    if dir.exists() {
        // Left over from an earlier process that had the same pid.
        std::fs::remove_dir_all(&dir).map_err(HarnessError::io(format!(
            "removing stale {}",
            dir.display()
        )))?;
    }
    std::fs::create_dir_all(&dir)
        .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Creates a new, empty work directory for a boot called `name` under [`work_root`].
pub fn create(name: &str) -> Result<PathBuf, HarnessError> {
    create_in(&work_root(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_safe_characters_only() {
        assert_eq!(
            sanitize("bad_input::garbage module"),
            "bad_input--garbage-module"
        );
        assert_eq!(sanitize(""), "boot");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 48);
    }

    #[test]
    fn directories_are_unique_and_empty() {
        let root = std::env::temp_dir().join(format!("keel-workdir-test-{}", std::process::id()));
        let a = create_in(&root, "same").expect("create a");
        let b = create_in(&root, "same").expect("create b");
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
