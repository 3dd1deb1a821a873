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
//! pv64 ([`PV64`]) is a PV kernel that keel cannot run yet; it is proven against
//! Xen 4.17 instead ([`crate::xen`], `tests/tests/pv_on_xen.rs`), where its lines
//! come out bare, and its probe's checks are [`PV64_PROBE_CHECKS`].
//!
//! The same guests also run as domUs, built by keel at boot from xl.cfg modules
//! ([`crate::Boot::domu`]); domain `N`'s console lines start `(dN) `. keel's lines
//! about domUs, as regexes: [`domain_built`], [`domain_shut_down`],
//! [`domain_crashed`], then, once every domain has ended, [`ALL_DOMAINS_ENDED`] and
//! [`FRAMES_BALANCE`] ([`assert_frames_balance`]) before it powers off.
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
/// The 64-bit PV guest, ELF64 (EM_X86_64): a PV kernel linked at
/// 0xffffffff80100000 (`tests/guests/pv64/`). keel does not run PV guests yet; it
/// is validated against Xen 4.17 (`tests/tests/pv_on_xen.rs`, [`crate::xen`]).
pub const PV64: &str = "pv64.elf";
/// Every guest the xtask builds.
pub const ALL: [&str; 4] = [PVH64, PVH64_ELF32, PVH32, PV64];

/// Every check pv64's `mode=probe` prints, in its order
/// (`tests/guests/common/src/pv/probe.rs`), each as `<check>: ok` when it passes.
/// The guest adds `nr_pages` equality when its command line has `pages=N`.
pub const PV64_PROBE_CHECKS: &[&str] = &[
    "start_info magic",
    "start_info flags",
    "nr_pages",
    "shared_info",
    "no xenstore or console ring for dom0",
    "dom0 console info",
    "cmd_line NUL-terminated",
    "no initial ramdisk",
    "no relocated p2m",
    "nr_pages covers the bootstrap region",
    "mfn_list follows the image",
    "start_info follows the p2m list",
    "p2m entries",
    "pt_base follows start_info",
    "nr_pt_frames",
    "L4 maps the kernel",
    "boot stack follows the page tables",
    "512 KiB mapped past the boot stack",
    "code and stack selectors",
    "data selectors null",
    "xen_version version",
    "xen_version extraversion",
];

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
    domain_line(0, text)
}

/// A line of domain `id`'s console: `(d<id>) ` then exactly `text` (a literal).
pub fn domain_line(id: u16, text: &str) -> String {
    format!(r"^\(d{id}\) {}$", regex::escape(text))
}

/// keel's line when it has built domain `id` (a domU from a `.cfg` module, e.g.
/// `(KEEL) d1: PVH, 32 MiB, ...`); groups: the guest type, its memory in MiB.
pub fn domain_built(id: u16) -> String {
    format!(r"^\(KEEL\) d{id}: (\w+), (\d+) MiB")
}

/// keel's line when domain `id` shuts itself down (`SCHEDOP_shutdown`) with
/// `reason` (a literal: `poweroff`, `reboot`, `crash`, ...).
pub fn domain_shut_down(id: u16, reason: &str) -> String {
    format!(r"^\(KEEL\) d{id} shut down: {}", regex::escape(reason))
}

/// keel's line when it crashes domain `id` itself; group 1 says why.
pub fn domain_crashed(id: u16) -> String {
    format!(r"^\(KEEL\) d{id} crashed: (.+)$")
}

/// keel's line once every domain has ended, before it powers off; group 1 lists
/// them, e.g. `d1 poweroff, d2 crash` (see [`parse_domains_ended`]).
pub const ALL_DOMAINS_ENDED: &str = r"^\(KEEL\) All domains have ended: (.*)$";

/// keel's free-frame count before it built the domains and after they all ended;
/// groups: before, after. Equal when every domain's frames came back.
pub const FRAMES_BALANCE: &str =
    r"^\(KEEL\) Frames: (\d+) free before the domains were built, (\d+) after they ended$";

/// The list of [`ALL_DOMAINS_ENDED`] (`d1 poweroff, d2 crash`) as `(domid, how)`
/// pairs; `None` if it is not in that shape.
pub fn parse_domains_ended(list: &str) -> Option<Vec<(u16, String)>> {
    list.split(", ")
        .map(|entry| {
            let (dom, how) = entry.trim().split_once(' ')?;
            let id = dom.strip_prefix('d')?.parse().ok()?;
            (!how.is_empty() && !how.contains(',')).then(|| (id, how.to_string()))
        })
        .collect()
}

/// How each domain ended, from keel's [`ALL_DOMAINS_ENDED`] line; panics (with the
/// serial log) if there is no such line or it cannot be read.
#[track_caller]
pub fn domains_ended(run: &RunResult) -> Vec<(u16, String)> {
    let list = run.assert_line(ALL_DOMAINS_ENDED)[1].to_string();
    parse_domains_ended(&list).unwrap_or_else(|| {
        panic!(
            "cannot read keel's list of ended domains {list:?}\n{}",
            run.report()
        )
    })
}

/// Panics (with the serial log) unless keel printed [`FRAMES_BALANCE`] with the
/// same count before and after: every frame the domains had came back. Returns
/// that count.
#[track_caller]
pub fn assert_frames_balance(run: &RunResult) -> u64 {
    let caps = run.assert_line(FRAMES_BALANCE);
    let (before, after) = (caps[1].parse::<u64>(), caps[2].parse::<u64>());
    match (before, after) {
        (Ok(b), Ok(a)) if a == b => a,
        _ => panic!(
            "frames leaked: {} free before the domains were built, {} after they ended\n{}",
            &caps[1],
            &caps[2],
            run.report()
        ),
    }
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

/// keel ended the run as failed because a domain crashed (or shut down with
/// `crash`), not because keel did: no
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
            (
                ALL_DOMAINS_ENDED,
                "(KEEL) All domains have ended: d1 poweroff, d2 crash",
            ),
            (
                FRAMES_BALANCE,
                "(KEEL) Frames: 120000 free before the domains were built, 120000 after they ended",
            ),
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

    fn matches(re: &str, line: &str) -> bool {
        Regex::new(re).expect("compiles").is_match(line)
    }

    #[test]
    fn domain_line_patterns() {
        let off = domain_shut_down(1, "poweroff");
        assert!(matches(&off, "(KEEL) d1 shut down: poweroff"));
        assert!(!matches(&off, "(KEEL) d10 shut down: poweroff"));
        assert!(!matches(&off, "(KEEL) d1 shut down: reboot"));
        assert!(!matches(&off, "(d1) (KEEL) d1 shut down: poweroff"));
        assert_eq!(domain_shut_down(0, "poweroff"), DOM0_POWEROFF);
        assert!(matches(
            &domain_shut_down(2, "crash"),
            "(KEEL) d2 shut down: crash"
        ));

        let crashed = Regex::new(&domain_crashed(3)).expect("compiles");
        let caps = crashed
            .captures("(KEEL) d3 crashed: triple fault at rip 0x1000")
            .expect("matches");
        assert_eq!(&caps[1], "triple fault at rip 0x1000");
        assert!(!crashed.is_match("(KEEL) d31 crashed: x"));
        assert_eq!(domain_crashed(0), DOM0_CRASHED);

        let built = Regex::new(&domain_built(1)).expect("compiles");
        let caps = built
            .captures("(KEEL) d1: PVH, 32 MiB, kernel pvh64.elf, entry 0x100000")
            .expect("matches");
        assert_eq!((&caps[1], &caps[2]), ("PVH", "32"));
        assert!(!built.is_match("(KEEL) d1 shut down: poweroff"));

        let line = domain_line(2, "Test result: SUCCESS");
        assert!(matches(&line, "(d2) Test result: SUCCESS"));
        assert!(!matches(&line, "(d1) Test result: SUCCESS"));
        assert_eq!(d0_line("x"), r"^\(d0\) x$");
    }

    #[test]
    fn all_domains_ended_and_frames_balance() {
        let re = Regex::new(ALL_DOMAINS_ENDED).expect("compiles");
        let caps = re
            .captures("(KEEL) All domains have ended: d1 poweroff, d2 crash")
            .expect("matches");
        assert_eq!(
            parse_domains_ended(&caps[1]),
            Some(vec![(1, "poweroff".into()), (2, "crash".into())])
        );
        assert_eq!(
            parse_domains_ended("d0 reboot"),
            Some(vec![(0, "reboot".into())])
        );
        for bad in ["", "d1", "x1 poweroff", "d1 poweroff,d2 crash", "dx crash"] {
            assert_eq!(parse_domains_ended(bad), None, "{bad:?}");
        }

        let re = Regex::new(FRAMES_BALANCE).expect("compiles");
        let caps = re
            .captures("(KEEL) Frames: 123 free before the domains were built, 120 after they ended")
            .expect("matches");
        assert_eq!((&caps[1], &caps[2]), ("123", "120"));
        assert!(!re.is_match("(KEEL) Frames: 1 free before the domains were built, 1 after"));
    }

    fn run_with(serial: &str) -> RunResult {
        RunResult {
            backend: crate::Backend::QemuSvm,
            loader: crate::Loader::Grub,
            serial: serial.to_string(),
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            elapsed: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(60),
            work_dir: PathBuf::from("/nonexistent"),
            bochs_log: None,
        }
    }

    #[test]
    fn frames_balance_assertion() {
        let run = run_with(
            "(KEEL) All domains have ended: d1 poweroff\n\
             (KEEL) Frames: 500 free before the domains were built, 500 after they ended\n",
        );
        assert_eq!(assert_frames_balance(&run), 500);
        assert_eq!(domains_ended(&run), [(1, "poweroff".to_string())]);
    }

    #[test]
    #[should_panic(expected = "frames leaked: 500 free before the domains were built, 499")]
    fn frames_balance_assertion_catches_a_leak() {
        assert_frames_balance(&run_with(
            "(KEEL) Frames: 500 free before the domains were built, 499 after they ended\n",
        ));
    }

    #[test]
    #[should_panic(expected = "no serial line matches")]
    fn frames_balance_assertion_needs_the_line() {
        assert_frames_balance(&run_with("(KEEL) Powering off\n"));
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
