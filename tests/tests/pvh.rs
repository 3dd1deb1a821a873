//! keel runs PVH guests as dom0 and implements Xen's guest ABI as Xen does.
//!
//! Each test boots keel with one of the test guests (`tests/guests/`, built by
//! `cargo xtask build`) as module 0, i.e. dom0's kernel, and `dom0_mem=32M` to keep
//! Bochs fast. The guest's command line (the module string less its first word,
//! Xen's convention) picks what it does:
//!
//! - `mode=probe`: every check in `tests/guests/common/src/probe.rs`, each printing
//!   `(d0) <check>: ok`. The lists below name every line expected, so a check that
//!   silently does not run fails the test as surely as one that fails. pvh64 runs
//!   the per-mode checks once (long mode), pvh32 twice (`paging off: `, then
//!   `PAE paging: `), and the same pvh64 image also comes as ELF32 (XTF's format).
//! - `mode=hello`, `mode=crash`, `mode=reboot`, `mode=triple-fault`: how keel
//!   handles the ways a domain can end.
//!
//! A probe passes on `(d0) Test result: SUCCESS`, keel's `d0 shut down: poweroff`,
//! and a clean power-off; a crash must be reported by keel (`d0 shut down: crash`
//! when the guest asks, `d0 crashed: ...` when keel ends it) and end the run as a
//! domain failure, never a keel `FATAL` or a hang. The keel lines
//! are regexes in `keel_tests::guests` (the `DOM0_*` constants).

use keel_tests::contract::*;
use keel_tests::guests::{self, *};
use keel_tests::{Backend, Boot, RunResult, workdir};

/// keel's extra command line for every guest test.
const DOM0_MEM: &str = "dom0_mem=32M";

/// Checks made once, whatever the mode (start_info, CPUID, hypercall page).
const BOOT_CHECKS: &[&str] = &[
    "start_info magic and version",
    "start_info flags",
    "start_info cmdline",
    "start_info modules",
    "start_info memory map",
    "cpuid Xen leaves",
    "hypercall page",
    "cpuid hypervisor bit",
    "cpuid VMX hidden",
    "cpuid SVM hidden",
    "cpuid Xen domid",
];

/// Checks made in every paging mode.
const MODE_CHECKS: &[&str] = &[
    "console_io write",
    "console_io zero length",
    "console_io beyond RAM",
    "xen_version version",
    "xen_version extraversion",
    "xen_version compile_info",
    "xen_version capabilities",
    "xen_version pagesize",
    "xen_version get_features",
    "xen_version get_features bad submap",
    "xen_version unknown sub-op",
    "xen_version extraversion beyond RAM",
    "memory_op memory_map",
    "memory_op add_to_physmap shared_info",
    "hvm_op get_param CALLBACK_IRQ",
    "hvm_op get_param out of range",
    "hypercall 46 unused",
    "hypercall 63",
    "hypercall 64 direct",
    "hypercall 0xffffffff direct",
    "sched_op unknown cmd",
    "sched_op yield",
    "sched_op shutdown beyond RAM",
    "vcpu_op is_up of a vCPU past the last",
    "vcpu_op up of vCPU 127",
    "vcpu_op runstate of vCPU 0xffffffff",
    "vcpu_op unknown command to a vCPU past the last",
    "vcpu_op unknown command to vCPU 0",
    "unbacked MMIO read",
    "unbacked MMIO write",
    "unbacked port read",
    "unbacked port write",
    "unknown MSR raises #GP",
];

/// Checks made only with paging on (they need the guest's page tables).
const PAGING_CHECKS: &[&str] = &[
    "console_io unmapped",
    "xen_version extraversion unmapped",
    "sched_op shutdown unmapped",
    "console_io huge length",
    "console_io through alias",
    "xen_version through alias",
];

/// The guests' paging modes: (prefix of their check lines, paging on?).
fn phases(guest: &str) -> &'static [(&'static str, bool)] {
    if guest == PVH32 {
        &[("paging off: ", false), ("PAE paging: ", true)]
    } else {
        &[("", true)]
    }
}

/// Every line a passing probe of `guest` prints (as regexes).
fn expected_probe_lines(guest: &str) -> Vec<String> {
    let mut lines: Vec<String> = BOOT_CHECKS.iter().map(|c| check_ok("", c)).collect();
    for &(prefix, paging) in phases(guest) {
        lines.extend(MODE_CHECKS.iter().map(|c| check_ok(prefix, c)));
        lines.push(d0_line(&format!("{prefix}console_io probe line")));
        if paging {
            lines.extend(PAGING_CHECKS.iter().map(|c| check_ok(prefix, c)));
            // The alias text is padded with spaces to the length of the wrong one.
            lines.push(format!(
                r"^\(d0\) {}alias probe: read through the guest's page tables *$",
                regex::escape(prefix)
            ));
        }
    }
    lines
}

/// Boots keel with `guest` as dom0 and `args` as its command line.
fn boot(name: &str, backend: Backend, guest: &str, args: &str) -> RunResult {
    Boot::new(name, backend)
        .extra_cmdline(DOM0_MEM)
        .module(guests::guest(guest), args)
        .run()
}

/// A full probe of `guest` on `backend`: every check passes and keel powers off.
fn probe(name: &str, backend: Backend, guest: &str) -> RunResult {
    let run = boot(name, backend, guest, "mode=probe modules=0");
    assert_lines(&run, &expected_probe_lines(guest));
    run.assert_no_line(r"alias probe: WRONG PAGE");
    assert_guest_succeeded(&run);
    run
}

#[test]
fn pvh64_probe_on_qemu_svm() {
    probe("pvh64_probe", Backend::QemuSvm, PVH64);
}

#[test]
fn pvh64_probe_on_bochs_vmx() {
    probe("pvh64_probe", Backend::BochsVmx, PVH64);
}

#[test]
fn pvh64_probe_on_bochs_svm() {
    probe("pvh64_probe", Backend::BochsSvm, PVH64);
}

#[test]
fn pvh64_elf32_probe_on_qemu_svm() {
    probe("pvh64_elf32_probe", Backend::QemuSvm, PVH64_ELF32);
}

#[test]
fn pvh32_probe_on_qemu_svm() {
    probe("pvh32_probe", Backend::QemuSvm, PVH32);
}

#[test]
fn pvh32_probe_on_bochs_vmx() {
    probe("pvh32_probe", Backend::BochsVmx, PVH32);
}

#[test]
fn pvh32_probe_on_bochs_svm() {
    probe("pvh32_probe", Backend::BochsSvm, PVH32);
}

/// A second multiboot module reaches dom0 as `hvm_start_info` module 0, with its
/// contents and command line.
#[test]
fn pvh64_gets_its_module_on_qemu_svm() {
    let dir = workdir::create("pvh64_module-input").unwrap_or_else(|e| panic!("{e}"));
    let module = dir.join("payload.txt");
    std::fs::write(&module, "KEEL-PVH-MODULE payload\n").expect("writing the module");
    let run = Boot::new("pvh64_module", Backend::QemuSvm)
        .extra_cmdline(DOM0_MEM)
        .module(
            guests::guest(PVH64),
            "mode=probe modules=1 module0-prefix=KEEL-PVH-MODULE",
        )
        .module(&module, "payload-arg=1")
        .run();
    assert_lines(&run, &expected_probe_lines(PVH64));
    run.assert_line(r#"^\(d0\) info: module 0: 0x[0-9a-f]+\+0x18, cmdline "([^"]*payload-arg=1)?", starts "KEEL-PVH-MODULE payload\\x0a"$"#);
    assert_guest_succeeded(&run);
}

#[test]
fn pvh64_hello_on_qemu_svm() {
    let run = boot("pvh64_hello", Backend::QemuSvm, PVH64, "mode=hello");
    run.assert_line(&d0_line("hello from pvh64"));
    run.assert_line(DOM0_POWEROFF);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// dom0 asking to crash: keel reports it and ends the run as failed.
#[test]
fn pvh64_crash_on_qemu_svm() {
    let run = boot("pvh64_crash", Backend::QemuSvm, PVH64, "mode=crash");
    run.assert_line(&d0_line(
        "crashing on purpose: SCHEDOP_shutdown(SHUTDOWN_crash)",
    ));
    run.assert_line(DOM0_SHUTDOWN_CRASH);
    assert_failure_exit(&run);
}

/// dom0 asking to reboot: keel says so, then either resets the machine as Xen does
/// (its last line [`MACHINE_REBOOT`]; QEMU's `-no-reboot` turns the reset into exit
/// status 0) or powers it off cleanly. Either way not as a failure.
#[test]
fn pvh64_reboot_on_qemu_svm() {
    let run = boot("pvh64_reboot", Backend::QemuSvm, PVH64, "mode=reboot");
    run.assert_line(&d0_line(
        "rebooting on purpose: SCHEDOP_shutdown(SHUTDOWN_reboot)",
    ));
    run.assert_line(DOM0_REBOOT);
    run.assert_no_line(FATAL);
    let reset = keel_tests::outcome::last_keel_line(&run.serial)
        .is_some_and(|l| regex::Regex::new(MACHINE_REBOOT).is_ok_and(|re| re.is_match(l)));
    assert!(
        (reset && run.exit_code == Some(0)) || run.powered_off_cleanly(),
        "expected a reset (exit 0 after {MACHINE_REBOOT:?}) or a clean power-off, got: {}\n{}",
        run.outcome(),
        run.report()
    );
}

/// A guest triple fault: keel crashes the domain with a report and ends the run as
/// failed, without crashing itself.
fn triple_fault(name: &str, backend: Backend, guest: &str) {
    let run = boot(name, backend, guest, "mode=triple-fault");
    run.assert_line(DOM0_TRIPLE_FAULT);
    assert_failure_exit(&run);
    run.assert_line(&d0_line("triple-faulting on purpose: empty IDT, then ud2"));
}

#[test]
fn pvh64_triple_fault_on_qemu_svm() {
    triple_fault("pvh64_triple_fault", Backend::QemuSvm, PVH64);
}

#[test]
fn pvh64_triple_fault_on_bochs_vmx() {
    triple_fault("pvh64_triple_fault", Backend::BochsVmx, PVH64);
}

#[test]
fn pvh64_triple_fault_on_bochs_svm() {
    triple_fault("pvh64_triple_fault", Backend::BochsSvm, PVH64);
}

#[test]
fn pvh32_triple_fault_on_qemu_svm() {
    triple_fault("pvh32_triple_fault", Backend::QemuSvm, PVH32);
}
