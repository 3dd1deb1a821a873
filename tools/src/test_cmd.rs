//! `cargo xtask test`: what CI runs (`.ci/run`), in five steps:
//!
//! 1. install missing Debian packages;
//! 2. build keel.elf and the PVH test guests;
//! 3. host unit tests of every crate except the emulator tests (plus the kernel's
//!    host-testable library, if it has one);
//! 4. `cargo clippy` with the workspace's lints as errors: the host crates (among
//!    them `builder`, the kernel's host-tested logic) and the hypervisor binary for
//!    its own target;
//! 5. the emulator integration tests, told which image to boot through `$KEEL_ELF`
//!    and where the guests are through `$KEEL_GUESTS_DIR`.
//!
//! A failing step does not hide the others' results: unit tests run even if the
//! kernel does not build; only the emulator tests need the image. The exit status is
//! non-zero if any step failed.

use std::time::Instant;

use crate::args::BuildOpts;
use crate::{Error, cargo, deps, guests, image};

const STEPS: usize = 5;

fn step(n: usize, what: &str) {
    eprintln!("xtask: [{n}/{STEPS}] {what}");
}

/// Runs `cargo <args>` in the workspace; Err describes the failure.
fn cargo_run(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<(), Error> {
    let mut cmd = cargo();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .map_err(|e| Error(format!("cannot run cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!("cargo {} failed ({status})", args.join(" "))))
    }
}

/// `cargo clippy` over the host crates (all targets) and the hypervisor binary for
/// its target.
fn lints() -> Result<(), Error> {
    let deny = ["--", "-D", "warnings"];
    let host = [
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "keel-kernel",
            "--all-targets",
        ][..],
        &deny[..],
    ]
    .concat();
    let results = [cargo_run(&host, &[]), image::clippy_kernel()];
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.0))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error(errors.join("; ")))
    }
}

/// Whether package `name` has a library target, per `cargo metadata`.
fn package_has_lib(name: &str) -> Result<bool, Error> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| Error(format!("cannot run cargo metadata: {e}")))?;
    if !out.status.success() {
        return Err(Error(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error(format!("cargo metadata printed invalid JSON: {e}")))?;
    Ok(lib_in_metadata(&meta, name))
}

/// The pure part of [`package_has_lib`].
fn lib_in_metadata(meta: &serde_json::Value, name: &str) -> bool {
    let packages = meta["packages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    packages.iter().filter(|p| p["name"] == name).any(|p| {
        p["targets"].as_array().is_some_and(|targets| {
            targets.iter().any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "lib"))
            })
        })
    })
}

fn host_unit_tests() -> Result<(), Error> {
    cargo_run(
        &[
            "test",
            "--workspace",
            "--exclude",
            "keel-kernel",
            "--exclude",
            "keel-tests",
        ],
        &[],
    )?;
    if package_has_lib("keel-kernel")? {
        cargo_run(&["test", "-p", "keel-kernel", "--lib"], &[])?;
    } else {
        eprintln!("xtask: keel-kernel has no library target; no kernel host tests to run");
    }
    Ok(())
}

fn integration_tests(elf: &std::path::Path, guests: Option<&std::path::Path>) -> Result<(), Error> {
    // Old boots' ISOs and logs: each test run starts with an empty work area.
    let work = keel_tests::workdir::work_root();
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .map_err(|e| Error(format!("clearing {}: {e}", work.display())))?;
    }
    let mut env = vec![(keel_tests::KEEL_ELF_ENV, elf.as_os_str())];
    if let Some(dir) = guests {
        env.push((keel_tests::guests::KEEL_GUESTS_DIR_ENV, dir.as_os_str()));
    }
    cargo_run(&["test", "-p", "keel-tests"], &env)
}

/// Runs `cargo xtask test`; returns the process exit status.
pub fn test() -> Result<u8, Error> {
    let start = Instant::now();
    let mut summary: Vec<(String, Result<(), Error>, f64)> = Vec::new();
    let mut record = |name: &str, t: Instant, r: Result<(), Error>| {
        if let Err(e) = &r {
            eprintln!("xtask: {name}: FAILED: {e}");
        }
        let ok = r.is_ok();
        summary.push((name.to_string(), r, t.elapsed().as_secs_f64()));
        ok
    };

    step(1, "Debian packages (grub, xorriso, mtools, qemu, bochs)");
    let t = Instant::now();
    let deps_ok = record("[1/5] Debian packages", t, deps::ensure_installed());

    step(2, "building keel and the test guests");
    let t = Instant::now();
    let built = if deps_ok {
        image::build(&BuildOpts::default())
    } else {
        Err(Error("skipped: packages missing".into()))
    };
    let elf = built.as_ref().ok().cloned();
    // The guests are built even if keel is not (their failure is reported on its
    // own); without them only the PVH tests fail.
    let guests_built = if deps_ok {
        guests::build(&BuildOpts::default())
    } else {
        Err(Error("skipped: packages missing".into()))
    };
    let guests_dir = guests_built.as_ref().ok().cloned();
    let both = match (built, guests_built) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(Error(format!(
            "keel.elf built, but the test guests did not: {e}"
        ))),
    };
    record("[2/5] build keel.elf and guests", t, both);

    step(3, "host unit tests");
    let t = Instant::now();
    record("[3/5] host unit tests", t, host_unit_tests());

    step(4, "lints (cargo clippy, warnings are errors)");
    let t = Instant::now();
    record("[4/5] clippy", t, lints());

    step(5, "emulator integration tests");
    let t = Instant::now();
    let result = match &elf {
        Some(elf) => integration_tests(elf, guests_dir.as_deref()),
        None => Err(Error("skipped: keel.elf was not built".into())),
    };
    record("[5/5] emulator integration tests", t, result);

    eprintln!("xtask: summary");
    let mut failed = 0;
    for (name, result, secs) in &summary {
        match result {
            Ok(()) => eprintln!("xtask:   {name:<36} ok      {secs:>6.1} s"),
            Err(e) => {
                failed += 1;
                eprintln!("xtask:   {name:<36} FAILED  {secs:>6.1} s  ({e})");
            }
        }
    }
    let total = start.elapsed().as_secs_f64();
    if failed == 0 {
        eprintln!("xtask: all {STEPS} steps passed in {total:.0} s");
        Ok(0)
    } else {
        eprintln!("xtask: {failed} of {STEPS} steps failed ({total:.0} s)");
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lib_targets_in_metadata() {
        let meta: serde_json::Value = serde_json::from_str(
            r#"{"packages": [
                {"name": "keel-kernel", "targets": [{"kind": ["lib"]}, {"kind": ["bin"]}]},
                {"name": "xtask", "targets": [{"kind": ["bin"]}]}
            ]}"#,
        )
        .expect("valid JSON");
        assert!(lib_in_metadata(&meta, "keel-kernel"));
        assert!(!lib_in_metadata(&meta, "xtask"));
        assert!(!lib_in_metadata(&meta, "absent"));
        assert!(!lib_in_metadata(&serde_json::Value::Null, "keel-kernel"));
    }
}
