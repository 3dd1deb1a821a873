//! The test guests: where `cargo xtask build` leaves them, what they print, and what
//! keel must print about them.
//!
//! The guests (`tests/guests/`, built by the xtask into `target/keel/guests/`) are
//! tiny PVH kernels that keel boots as dom0 (module 0). They check keel's Xen guest
//! ABI from the inside and print one line per check through
//! `HYPERVISOR_console_io`, which keel prefixes with `(d0) `:
//!
//! ```text
//! (d0) <check>: ok
//! (d0) <check>: FAIL <why>
//! (d0) info: <value worth seeing>
//! (d0) Test result: SUCCESS            (or: Test result: FAILURE (<n> failed))
//! ```
//!
//! then end with `SCHEDOP_shutdown` (poweroff on success, crash on failure). pvh32
//! prefixes its per-mode checks with `paging off: ` or `PAE paging: `. The guest
//! side of this contract is `tests/guests/common/src/probe.rs`; the lines keel itself
//! prints about dom0's end are the `DOM0_*` constants below (to be added to
//! `docs/serial-contract.md` with keel's PVH dom0 support).
//!
//! Found through `$KEEL_GUESTS_DIR` (set by `cargo xtask test`), else
//! `target/keel/guests/`.

use std::path::PathBuf;

use crate::outcome::Outcome;
use crate::run::RunResult;

/// Environment variable naming the directory with the built guests.
pub const KEEL_GUESTS_DIR_ENV: &str = "KEEL_GUESTS_DIR";

/// The 64-bit PVH guest, ELF64 (EM_X86_64).
pub const PVH64: &str = "pvh64.elf";
/// The same kernel as ELF32 with machine x86-64 (how Xen's XTF ships 64-bit tests).
pub const PVH64_ELF32: &str = "pvh64-elf32.elf";
/// The 32-bit PVH guest, ELF32 (EM_386).
pub const PVH32: &str = "pvh32.elf";
/// Every guest the xtask builds.
pub const ALL: [&str; 3] = [PVH64, PVH64_ELF32, PVH32];

/// Where `cargo xtask build` puts the guests: `target/keel/guests/`.
pub fn default_guests_dir() -> PathBuf {
    crate::keel_target_dir().join("guests")
}

/// `$KEEL_GUESTS_DIR` if set, else [`default_guests_dir`].
pub fn guests_dir() -> PathBuf {
    match std::env::var_os(KEEL_GUESTS_DIR_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_guests_dir(),
    }
}

/// The path of guest `name` (one of [`ALL`]), if it has been built.
pub fn try_guest(name: &str) -> Option<PathBuf> {
    let path = guests_dir().join(name);
    path.is_file().then_some(path)
}

/// The path of guest `name`, for tests: panics with "build it first" if missing.
pub fn guest(name: &str) -> PathBuf {
    try_guest(name).unwrap_or_else(|| {
        panic!(
            "test guest {} not found in {}: build the guests with `cargo xtask build` \
             (or point ${KEEL_GUESTS_DIR_ENV} at them)",
            name,
            guests_dir().display()
        )
    })
}

/// keel's line when dom0 asks to power off (`SCHEDOP_shutdown(SHUTDOWN_poweroff)`).
pub const DOM0_POWEROFF: &str = r"^\(KEEL\) d0 shut down: poweroff";
/// keel's line when dom0 asks to reboot (`SHUTDOWN_reboot`).
pub const DOM0_REBOOT: &str = r"^\(KEEL\) d0 shut down: reboot";
/// keel's line when dom0 asks to be crashed (`SHUTDOWN_crash`, what a guest does
/// when it fails).
pub const DOM0_SHUTDOWN_CRASH: &str = r"^\(KEEL\) d0 shut down: crash";
/// keel's line when it crashes dom0 itself (a triple fault, an exit it cannot
/// handle); group 1 says why.
pub const DOM0_CRASHED: &str = r"^\(KEEL\) d0 crashed: (.+)$";
/// [`DOM0_CRASHED`] for a triple fault in the guest.
pub const DOM0_TRIPLE_FAULT: &str = r"^\(KEEL\) d0 crashed: .*(?i:triple fault)";
/// keel's last line if it resets the machine because dom0 asked for a reboot (as
/// Xen does); keel may instead power off cleanly.
pub const MACHINE_REBOOT: &str = r"^\(KEEL\) Rebooting";

/// A guest line: `(d0) ` then exactly `text` (a literal, not a regex).
pub fn d0_line(text: &str) -> String {
    format!(r"^\(d0\) {}$", regex::escape(text))
}

/// The line of a passed check (`prefix` is `""`, `"paging off: "` or
/// `"PAE paging: "`).
pub fn check_ok(prefix: &str, name: &str) -> String {
    d0_line(&format!("{prefix}{name}: ok"))
}

/// Any failed check.
pub const CHECK_FAILED: &str = r"^\(d0\) .*: FAIL( |$)";
/// The guest's verdict when every check passed.
pub const TEST_SUCCESS: &str = r"^\(d0\) Test result: SUCCESS$";
/// The guest's verdict when some failed.
pub const TEST_FAILURE: &str = r"^\(d0\) Test result: FAILURE";
/// The guest found an exception it did not expect (it then crashes itself).
pub const UNEXPECTED_EXCEPTION: &str = r"^\(d0\) unexpected exception ";

/// Panics unless every one of `lines` (regexes) matches some serial line; lists
/// all the missing ones at once.
#[track_caller]
pub fn assert_lines(run: &RunResult, lines: &[String]) {
    let missing: Vec<&str> = lines
        .iter()
        .filter(|re| run.first_match(re).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        panic!(
            "{} expected line(s) missing:\n  {}\n{}",
            missing.len(),
            missing.join("\n  "),
            run.report()
        );
    }
}

/// A guest that passed: no failed check, `Test result: SUCCESS`, keel saw dom0
/// power off, and then powered the machine off cleanly.
#[track_caller]
pub fn assert_guest_succeeded(run: &RunResult) {
    run.assert_no_line(CHECK_FAILED);
    run.assert_no_line(UNEXPECTED_EXCEPTION);
    run.assert_line(TEST_SUCCESS);
    run.assert_line(DOM0_POWEROFF);
    run.assert_no_line(crate::contract::FATAL);
    run.assert_powered_off_cleanly();
}

/// keel ended the run as failed because dom0 crashed, not because keel did: no
/// `(KEEL) FATAL:` line, and [`Outcome::DomainFailed`] (keel's `Powering off after
/// a domain failure` line, and on QEMU the domain-failure isa-debug-exit status).
#[track_caller]
pub fn assert_failure_exit(run: &RunResult) {
    run.assert_no_line(crate::contract::FATAL);
    let outcome = run.outcome();
    assert!(
        matches!(outcome, Outcome::DomainFailed(_)),
        "expected keel to power off reporting a domain failure, got: {outcome} (emulator {})\n{}",
        run.exit_description(),
        run.report()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn keel_line_patterns_compile_and_match_their_samples() {
        let samples = [
            (DOM0_POWEROFF, "(KEEL) d0 shut down: poweroff"),
            (DOM0_REBOOT, "(KEEL) d0 shut down: reboot"),
            (DOM0_SHUTDOWN_CRASH, "(KEEL) d0 shut down: crash"),
            (DOM0_CRASHED, "(KEEL) d0 crashed: unhandled exit"),
            (
                DOM0_TRIPLE_FAULT,
                "(KEEL) d0 crashed: triple fault at rip 0x100123",
            ),
            (MACHINE_REBOOT, "(KEEL) Rebooting"),
            (TEST_SUCCESS, "(d0) Test result: SUCCESS"),
            (TEST_FAILURE, "(d0) Test result: FAILURE (2 failed)"),
            (
                CHECK_FAILED,
                "(d0) PAE paging: console_io unmapped: FAIL returned 0",
            ),
            (
                UNEXPECTED_EXCEPTION,
                "(d0) unexpected exception 14 (#PF) at 0x1",
            ),
        ];
        for (re, sample) in samples {
            let re = Regex::new(re).expect("compiles");
            assert!(re.is_match(sample), "{re} should match {sample:?}");
        }
        let guest_says = Regex::new(DOM0_POWEROFF).expect("compiles");
        assert!(!guest_says.is_match("(d0) (KEEL) d0 shut down: poweroff"));
        let failed = Regex::new(CHECK_FAILED).expect("compiles");
        assert!(!failed.is_match("(d0) console_io unmapped: ok"));
        assert!(!failed.is_match("(d0) Test result: SUCCESS"));
    }

    #[test]
    fn check_lines_are_literal() {
        let re = Regex::new(&check_ok("PAE paging: ", "hypercall 0xffffffff direct")).expect("ok");
        assert!(re.is_match("(d0) PAE paging: hypercall 0xffffffff direct: ok"));
        assert!(!re.is_match("(d0) PAE paging: hypercall 0xffffffff direct: ok, mostly"));
        let re = Regex::new(&check_ok("", "unknown MSR raises #GP")).expect("ok");
        assert!(re.is_match("(d0) unknown MSR raises #GP: ok"));
    }

    #[test]
    fn guest_dir_defaults_under_target_keel() {
        assert!(default_guests_dir().ends_with("target/keel/guests"));
    }
}
