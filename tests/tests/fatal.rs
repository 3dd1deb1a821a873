//! keel's own failures end in a readable report and a clean stop, never a triple
//! fault or a hang.
//!
//! `debug-crash=` makes keel crash on purpose once booted. On QEMU the run must end
//! with isa-debug-exit status 1 (QEMU exit code 3): a triple fault would reset the
//! machine instead, which `-no-reboot` turns into exit code 0, and a hang would time
//! out. On Bochs, which has no exit status to give, the report and the closing
//! `Powering off` line must both be on serial.

use keel_tests::contract::*;
use keel_tests::outcome::Outcome;
use keel_tests::{Backend, Boot, RunResult};

fn crash(name: &str, backend: Backend, kind: &str) -> RunResult {
    crash_on(name, backend, kind, 0)
}

/// Crashes keel on CPU `cpu` (0: the boot CPU) and checks the one report.
fn crash_on(name: &str, backend: Backend, kind: &str, cpu: u32) -> RunResult {
    let run = Boot::new(name, backend)
        .extra_cmdline(&format!("debug-crash={kind} debug-crash-cpu={cpu}"))
        .run();
    assert!(
        matches!(run.outcome(), Outcome::KeelFailure(_)),
        "expected keel to report its own failure\n{}",
        run.report()
    );
    if backend.is_qemu() {
        assert_eq!(
            run.exit_code,
            Some(3),
            "QEMU must exit through isa-debug-exit status 1\n{}",
            run.report()
        );
    }
    run.assert_line(FATAL_STACK);
    run.assert_line(r"^\(KEEL\) Powering off: keel failed");
    // One CPU reports; every other one was stopped, so there is one report.
    let who = run.lines_matching(FATAL_CPU);
    assert_eq!(who.len(), 1, "one report, from one CPU\n{}", run.report());
    let c = run.assert_line(FATAL_CPU);
    assert_eq!(&c[1], cpu.to_string(), "the failing CPU\n{}", run.report());
    assert_eq!(run.lines_matching(FATAL_STACK).len(), 1, "{}", run.report());
    run
}

fn assert_exception(run: &RunResult, vector: &str, mnemonic: &str) {
    let caps = run.assert_line(FATAL_EXCEPTION);
    assert_eq!((&caps[1], &caps[2]), (vector, mnemonic), "{}", run.report());
    run.assert_line(FATAL_REGISTERS);
}

#[test]
fn page_fault_in_keel_is_reported_on_qemu_svm() {
    let run = crash("crash_page_fault", Backend::QemuSvm, "page-fault");
    assert_exception(&run, "14", "#PF");
    run.assert_line(r"^\(KEEL\) FATAL: CR0 0x[0-9a-f]+ CR2 0x0000000000001000 ");
    run.assert_line(r"^\(KEEL\) FATAL: page fault: not-present page at read access to 0x1000$");
}

#[test]
fn invalid_opcode_in_keel_is_reported_on_qemu_svm() {
    let run = crash("crash_invalid_opcode", Backend::QemuSvm, "invalid-opcode");
    assert_exception(&run, "6", "#UD");
}

#[test]
fn stack_overflow_hits_the_guard_page_and_is_reported_on_qemu_svm() {
    let run = crash(
        "crash_stack_overflow_qemu",
        Backend::QemuSvm,
        "stack-overflow",
    );
    assert_exception(&run, "8", "#DF");
}

#[test]
fn stack_overflow_is_reported_on_bochs_vmx() {
    let run = crash(
        "crash_stack_overflow_vmx",
        Backend::BochsVmx,
        "stack-overflow",
    );
    assert_exception(&run, "8", "#DF");
}

#[test]
fn stack_overflow_is_reported_on_bochs_svm() {
    let run = crash(
        "crash_stack_overflow_svm",
        Backend::BochsSvm,
        "stack-overflow",
    );
    assert_exception(&run, "8", "#DF");
}

#[test]
fn panic_in_keel_is_reported_on_qemu_svm() {
    let run = crash("crash_panic", Backend::QemuSvm, "panic");
    let caps = run.assert_line(FATAL_PANIC);
    assert!(caps[3].contains("deliberate panic"), "{}", run.report());
    run.assert_no_line(FATAL_EXCEPTION);
}

/// keel's fatal error on an AP stops every CPU, with one report naming that CPU.
#[test]
fn panic_on_an_ap_stops_every_cpu_on_qemu_svm() {
    let run = crash_on("crash_panic_ap", Backend::QemuSvm, "panic", 2);
    let caps = run.assert_line(FATAL_PANIC);
    assert!(caps[3].contains("deliberate panic"), "{}", run.report());
    assert_eq!(run.lines_matching(FATAL_PANIC).len(), 1, "{}", run.report());
}

#[test]
fn page_fault_on_an_ap_is_reported_on_bochs_vmx() {
    let run = crash_on("crash_page_fault_ap", Backend::BochsVmx, "page-fault", 1);
    assert_exception(&run, "14", "#PF");
}

#[test]
fn invalid_opcode_on_an_ap_is_reported_on_bochs_svm() {
    let run = crash_on(
        "crash_invalid_opcode_ap",
        Backend::BochsSvm,
        "invalid-opcode",
        1,
    );
    assert_exception(&run, "6", "#UD");
}
