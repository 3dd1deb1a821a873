//! The emulator harness: everything needed to boot `keel.elf` in an emulator and
//! judge what it printed.
//!
//! keel cannot run on the build machine itself (no usable VT-x/AMD-V there), so every
//! end-to-end check boots it inside an emulator that emulates hardware virtualization:
//! QEMU TCG for SVM and Bochs for VMX and SVM (see `shared/EMULATORS.md`). This crate
//! is the one implementation of that, shared by `cargo xtask run` (a human watching
//! serial) and the integration tests in `tests/tests/` (which match serial lines
//! against `docs/serial-contract.md`).
//!
//! The pieces, in the order a boot uses them:
//! - [`Backend`]: which emulator and which CPU model.
//! - [`workdir`]: one fresh directory per boot under `target/keel/work/`, so tests
//!   running in parallel never share a file.
//! - [`iso`]: the GRUB rescue ISO (`grub.cfg` + `grub-mkrescue`).
//! - [`qemu`] and [`bochs`]: the emulator command lines and config files.
//! - [`run`]: [`Boot`] ties the above together, runs the emulator under a timeout,
//!   streams serial, and returns a [`RunResult`].
//! - [`outcome`]: how a run ended, judged from exit status and serial lines.
//! - [`contract`]: the lines of `docs/serial-contract.md` as regexes, and
//!   [`fixtures`]: inputs the tests make (garbage modules).
//! - [`guests`]: the PVH test guests the xtask builds, and the lines they and keel
//!   print about them, as dom0 or as domUs ([`Boot::domu`]).
//! - [`debian`]: Debian's kernels and busybox, fetched with `apt-get download` into
//!   `target/keel/cache/debian/` (never installed), and [`initramfs`]: the newc
//!   initramfs the real-Linux tests boot.
//! - [`xen`]: reference runs that boot a test guest as Dom0 of the real Xen 4.17
//!   instead of keel, to validate the guest itself (pv64 ahead of keel's PV
//!   support).
//!
//! Everything that can fail because of the environment (a missing tool, an I/O
//! error) returns [`HarnessError`]; only the test-facing helpers (`Boot::run`,
//! `RunResult::assert_*`) panic, with the whole serial log in the message.

pub mod backend;
pub mod bench;
pub mod bochs;
pub mod contract;
pub mod debian;
pub mod error;
pub mod fixtures;
pub mod guests;
pub mod initramfs;
pub mod iso;
pub mod outcome;
pub mod qemu;
pub mod run;
pub mod serial;
pub mod workdir;
pub mod xen;

use std::path::PathBuf;

pub use backend::Backend;
pub use error::HarnessError;
pub use iso::Module;
pub use outcome::Outcome;
pub use run::{Boot, Loader, RunResult};

/// Debian packages the harness needs: GRUB + xorriso + mtools to make ISOs, QEMU,
/// and Bochs with its BIOS images. `cargo xtask` installs whichever are missing.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "grub-pc-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "qemu-system-x86",
    "bochs",
    "bochsbios",
    "vgabios",
];

/// Environment variable naming the keel ELF to boot (set by `cargo xtask test`).
pub const KEEL_ELF_ENV: &str = "KEEL_ELF";

/// I/O port keel writes its failure status to when given `debug-exit=0xf4`; QEMU's
/// `isa-debug-exit` device sits there and turns a write of V into exit status
/// `(V << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
///
/// This crate lives in `<root>/tests`, so the root is its manifest directory's parent.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent() {
        Some(root) => root.to_path_buf(),
        // CARGO_MANIFEST_DIR is an absolute path ending in `/tests`, so it always has
        // a parent; fall back to it rather than panic if that ever changes.
        None => manifest,
    }
}

/// `<workspace>/target/keel`: where `cargo xtask build` puts `keel.elf` and where
/// per-boot work directories live.
pub fn keel_target_dir() -> PathBuf {
    workspace_root().join("target").join("keel")
}

/// Where `cargo xtask build` leaves the hypervisor image.
pub fn default_keel_elf() -> PathBuf {
    keel_target_dir().join("keel.elf")
}

/// The keel ELF to boot: `$KEEL_ELF` if set, else `target/keel/keel.elf`.
pub fn try_keel_elf() -> Result<PathBuf, HarnessError> {
    let path = match std::env::var_os(KEEL_ELF_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_keel_elf(),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::KeelElfMissing(path))
    }
}

/// Like [`try_keel_elf`], for tests: panics with "build it first" if there is none.
pub fn keel_elf() -> PathBuf {
    try_keel_elf().unwrap_or_else(|e| panic!("{e}"))
}

/// keel's command line for a normal run on `backend`: COM1 console at 115200 8n1,
/// every log level, and (QEMU only, where the `isa-debug-exit` device exists) the
/// debug-exit port so a keel failure shows in QEMU's exit status.
pub fn default_cmdline(backend: Backend) -> String {
    let mut cmdline = String::from("console=com1 com1=115200,8n1 loglvl=all");
    if backend.is_qemu() {
        cmdline.push_str(&format!(" debug-exit={DEBUG_EXIT_PORT:#x}"));
    }
    cmdline
}

/// `base` followed by `extra` (if any), separated by one space.
pub fn join_cmdline(base: &str, extra: &str) -> String {
    match (base.trim(), extra.trim()) {
        (b, "") => b.to_string(),
        ("", e) => e.to_string(),
        (b, e) => format!("{b} {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cmdline_has_debug_exit_only_on_qemu() {
        assert_eq!(
            default_cmdline(Backend::QemuSvm),
            "console=com1 com1=115200,8n1 loglvl=all debug-exit=0xf4"
        );
        assert_eq!(
            default_cmdline(Backend::BochsVmx),
            "console=com1 com1=115200,8n1 loglvl=all"
        );
        assert_eq!(
            default_cmdline(Backend::BochsSvm),
            "console=com1 com1=115200,8n1 loglvl=all"
        );
    }

    #[test]
    fn join_cmdline_handles_empty_sides() {
        assert_eq!(join_cmdline("a=1", ""), "a=1");
        assert_eq!(join_cmdline("", " b "), "b");
        assert_eq!(join_cmdline("a=1 ", "b=2"), "a=1 b=2");
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("tests").join("Cargo.toml").is_file());
    }
}
