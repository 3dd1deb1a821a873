//! Reference tests: the PV test guest (pv64) on the **real Xen 4.17**, not on keel.
//!
//! **These validate the guest, not keel.** keel does not run PV guests yet; pv64
//! (`tests/guests/pv64/`, with its start-of-day code in
//! `tests/guests/common/src/pv/`) is the known-good guest keel's PV work will be
//! measured against, and these tests are what makes it known-good: Debian's Xen
//! 4.17 (fetched once into `target/keel/cache/xen/`) boots it as a PV Dom0 under
//! QEMU TCG ([`keel_tests::xen`]), and every line the guest prints must come out as
//! the guest contract says. If pv64 later fails on keel, the difference is keel's.
//!
//! Xen prints Dom0's `console_io` lines bare, without keel's `(d0) ` prefix
//! ([`xen::dom0_line`]), and announces Dom0's end itself (`(XEN) Hardware Dom0
//! halted: halting machine` for a poweroff, [`Dom0End`]), after which it halts
//! and the harness stops QEMU. Each test takes some seconds of Xen boot.
//!
//! Run them (after `cargo xtask build`, which builds `target/keel/guests/pv64.elf`):
//!
//! ```sh
//! cargo test -p keel-tests --test pv_on_xen
//! ```

use keel_tests::guests::{self, PV64, PV64_PROBE_CHECKS};
use keel_tests::xen::{self, DOM0_PAGES, Dom0End, XenBoot, dom0_line};

/// The guest's first line, whatever the mode: it found and read `start_info`.
const FIRST_LINE: &str =
    r#"^pv64 \(long mode, PV\): start_info at 0xffffffff80[0-9a-f]{6}, command line ""#;

/// No check failed, no panic, no unexpected verdict.
fn assert_nothing_failed(run: &xen::XenRun) {
    run.assert_no_line(r"^[^(].*: FAIL( |$)");
    run.assert_no_line(r"^PANIC in ");
    run.assert_no_line(r"^Test result: FAILURE");
    run.assert_no_line(r"^\(XEN\) Panic on CPU");
}

/// `mode=hello`: one line, then a poweroff Xen reports.
#[test]
fn pv64_hello_on_xen() {
    let run = XenBoot::new("pv64_hello", guests::guest(PV64), "mode=hello").run();
    run.assert_line(FIRST_LINE);
    run.assert_line(&dom0_line("hello from pv64"));
    assert_nothing_failed(&run);
    run.assert_dom0_end(Dom0End::Poweroff);
}

/// `mode=probe`: every start-of-day check passes, in order, and the verdict is
/// SUCCESS followed by a poweroff.
#[test]
fn pv64_probe_on_xen() {
    let cmdline = format!("mode=probe pages={DOM0_PAGES}");
    let run = XenBoot::new("pv64_probe", guests::guest(PV64), &cmdline).run();
    run.assert_line(FIRST_LINE);
    let expected: Vec<String> = PV64_PROBE_CHECKS
        .iter()
        .map(|check| dom0_line(&format!("{check}: ok")))
        .collect();
    run.assert_lines(&expected);
    // In the guest's order, and each exactly once.
    let printed: Vec<&str> = run
        .dom0_lines()
        .filter_map(|l| l.strip_suffix(": ok"))
        .collect();
    assert_eq!(printed, PV64_PROBE_CHECKS, "\n{}", run.report());
    run.assert_line(&dom0_line(&format!(
        "{} checks passed, 0 failed",
        PV64_PROBE_CHECKS.len()
    )));
    run.assert_line(&dom0_line("Test result: SUCCESS"));
    // What Xen 4.17's Dom0 builder gives a kernel with a PAE_MODE note.
    run.assert_line(&dom0_line(r#"info: magic "xen-3.0-x86_64p""#));
    assert_nothing_failed(&run);
    run.assert_dom0_end(Dom0End::Poweroff);
}

/// `mode=crash`: the guest's `SHUTDOWN_crash` is what Xen reports, so a failing
/// probe's crash is told apart from a poweroff.
#[test]
fn pv64_crash_on_xen() {
    let run = XenBoot::new("pv64_crash", guests::guest(PV64), "mode=crash").run();
    run.assert_line(&dom0_line(
        "crashing on purpose: SCHEDOP_shutdown(SHUTDOWN_crash)",
    ));
    run.assert_dom0_end(Dom0End::Crash);
}

/// A failing check is reported and ends the domain with a crash, so a probe
/// cannot pass by accident: `pages=` one off from what Xen gives.
#[test]
fn pv64_failed_check_crashes_on_xen() {
    let cmdline = format!("mode=probe pages={}", DOM0_PAGES + 1);
    let run = XenBoot::new("pv64_probe_fail", guests::guest(PV64), &cmdline).run();
    run.assert_line(&dom0_line(&format!(
        "nr_pages: FAIL {DOM0_PAGES}, the command line says {}",
        DOM0_PAGES + 1
    )));
    run.assert_line(&dom0_line("Test result: FAILURE (1 failed)"));
    run.assert_dom0_end(Dom0End::Crash);
}
