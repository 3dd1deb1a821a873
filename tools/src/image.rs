//! Building the hypervisor image and checking that boot loaders will take it.
//!
//! The kernel crate is built for `x86_64-hypervisor.json` with `core`, `alloc` and
//! `compiler_builtins` compiled from source (build-std), then copied to the stable
//! path `target/keel/keel.elf` that `run`, the tests and humans use. Two checks
//! follow, because a kernel that fails them builds fine and then dies silently:
//! `grub-file` must recognise both the multiboot2 header (GRUB) and the multiboot v1
//! header (QEMU `-kernel`), and the loadable segments must be laid out linearly in
//! the file (see [`crate::elfcheck`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::args::BuildOpts;
use crate::elfcheck::check_linear_load;
use crate::{Error, cargo};

/// The JSON target spec at the workspace root.
const TARGET_SPEC: &str = "x86_64-hypervisor.json";
/// Its name as a target directory.
const TARGET_NAME: &str = "x86_64-hypervisor";
/// The kernel package and its binary.
const KERNEL_PACKAGE: &str = "keel-kernel";
const KERNEL_BIN: &str = "keel";

/// What cargo needs to build for the hypervisor target.
const TARGET_ARGS: [&str; 5] = [
    "--target",
    TARGET_SPEC,
    "-Zbuild-std=core,alloc,compiler_builtins",
    "-Zbuild-std-features=compiler-builtins-mem",
    "-Zjson-target-spec",
];

/// `cargo clippy` of the hypervisor binary, for its target, with the workspace's
/// lints as errors (`undocumented_unsafe_blocks`, `missing_safety_doc`, ...).
pub fn clippy_kernel() -> Result<(), Error> {
    let mut cmd = cargo();
    cmd.args([
        "clippy",
        "-p",
        KERNEL_PACKAGE,
        "--bin",
        KERNEL_BIN,
        "--release",
    ]);
    cmd.args(TARGET_ARGS);
    cmd.args(["--", "-D", "warnings"]);
    let status = cmd
        .status()
        .map_err(|e| Error(format!("cannot run cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!(
            "cargo clippy of {KERNEL_BIN} failed ({status})"
        )))
    }
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn cargo_target_dir() -> PathBuf {
    let root = keel_tests::workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Builds keel, copies it to `target/keel/keel.elf`, verifies it; returns that path.
pub fn build(opts: &BuildOpts) -> Result<PathBuf, Error> {
    let profile = if opts.debug { "debug" } else { "release" };
    eprintln!("xtask: building {KERNEL_PACKAGE} ({profile}) for {TARGET_SPEC}");
    let mut cmd = cargo();
    cmd.args(["build", "-p", KERNEL_PACKAGE]);
    if !opts.debug {
        cmd.arg("--release");
    }
    cmd.args(TARGET_ARGS);
    let status = cmd
        .status()
        .map_err(|e| Error(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(Error(format!(
            "cargo build -p {KERNEL_PACKAGE} failed ({status})"
        )));
    }

    let built = cargo_target_dir()
        .join(TARGET_NAME)
        .join(profile)
        .join(KERNEL_BIN);
    let out_dir = keel_tests::keel_target_dir();
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| Error(format!("creating {}: {e}", out_dir.display())))?;
    let elf = keel_tests::default_keel_elf();
    std::fs::copy(&built, &elf).map_err(|e| {
        Error(format!(
            "copying {} to {}: {e}",
            built.display(),
            elf.display()
        ))
    })?;
    verify(&elf)?;
    Ok(elf)
}

/// Runs `grub-file FLAG elf`; true if it accepts the image.
fn grub_file_accepts(flag: &str, elf: &Path) -> Result<bool, Error> {
    let status = Command::new("grub-file")
        .arg(flag)
        .arg(elf)
        .status()
        .map_err(|e| {
            Error(format!(
                "cannot run grub-file (Debian package grub-common): {e}"
            ))
        })?;
    Ok(status.success())
}

/// Checks both multiboot headers and the linear PT_LOAD layout; prints a summary.
pub fn verify(elf: &Path) -> Result<(), Error> {
    for (flag, what, used_by) in [
        (
            "--is-x86-multiboot2",
            "multiboot2",
            "GRUB's multiboot2 command",
        ),
        ("--is-x86-multiboot", "multiboot (v1)", "QEMU's -kernel"),
    ] {
        if !grub_file_accepts(flag, elf)? {
            return Err(Error(format!(
                "{} has no valid {what} header (grub-file {flag} rejects it), so {used_by} cannot boot it; \
                 the header must lie within the first 32 KiB (multiboot2) / 8 KiB (v1) of the file, \
                 be aligned, and have a correct checksum",
                elf.display()
            )));
        }
    }
    let data = std::fs::read(elf).map_err(|e| Error(format!("reading {}: {e}", elf.display())))?;
    let layout = check_linear_load(&data).map_err(|e| Error(format!("{}: {e}", elf.display())))?;
    let (lo, hi) = layout.physical_span();
    eprintln!(
        "xtask: {}: {} bytes ({} KiB); {} PT_LOAD segment(s) at {lo:#x}..{hi:#x} ({} KiB in memory); \
         entry {:#x}; multiboot2 and multiboot v1 headers ok",
        elf.display(),
        data.len(),
        data.len().div_ceil(1024),
        layout.segments.len(),
        (hi - lo).div_ceil(1024),
        layout.entry
    );
    Ok(())
}
