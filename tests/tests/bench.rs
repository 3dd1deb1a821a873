//! The benchmark guest runs on keel: a smoke run of what `cargo xtask bench` does.
//!
//! `cargo xtask bench` (not part of `cargo xtask test`) boots pvh64 with
//! `mode=bench` as Dom0 on keel and on Xen 4.17 under QEMU's `-icount` and compares
//! the counts, on one CPU and, for the cross-CPU IPI, on two. These tests only make
//! sure the bench cannot rot unnoticed: the guest runs every measurement on keel,
//! on both hardware vendors' hypercall instruction, on each machine the bench
//! boots ([`Cpus`]), and prints every metric the harness expects, in a form
//! `keel_tests::bench::parse` accepts; and keel ends cleanly. The numbers
//! themselves are not judged here (these runs have no `-icount`, so the TSC
//! is not an instruction count), except that keel does not trap RDTSC: two
//! back-to-back reads stay a handful of cycles, not a VM exit.

use keel_tests::bench::{self, Cpus, RDTSC_OVERHEAD};
use keel_tests::contract::FATAL;
use keel_tests::guests::{self, DOM0_POWEROFF, PVH64, d0_line};
use keel_tests::{Backend, Boot};

/// Few rounds: enough to exercise each path's repeat, quick on Bochs.
const GUEST_ARGS: &str = "mode=bench iterations=20";

fn smoke(name: &str, backend: Backend, cpus: Cpus) {
    // One CPU for the one-vCPU metrics, as `cargo xtask bench` runs them
    // (-smp 1): the guest's TSC-based counts assume nothing else shares the
    // machine's clock (Bochs runs two CPUs in turns, 16 instructions each, and
    // two back-to-back RDTSCs can then read the same value). Two for the IPI,
    // with Dom0's vCPUs pinned apart as the bench has them.
    let extra = format!("dom0_mem=32M {}", cpus.hypervisor_args());
    let run = Boot::new(name, backend)
        .cpus(cpus.count())
        .extra_cmdline(extra.trim_end())
        .module(guests::guest(PVH64), &cpus.guest_cmdline(GUEST_ARGS))
        .run();
    let report = bench::parse(&run.serial).unwrap_or_else(|e| {
        panic!(
            "the bench guest's output does not parse: {e}\n{}",
            run.report()
        )
    });
    let missing = report.missing(cpus.metrics());
    assert!(
        missing.is_empty(),
        "metrics missing: {missing:?}\n{}",
        run.report()
    );
    for name in cpus.metrics() {
        let m = report.get(name).expect("checked above");
        // On two CPUs Bochs's turns can give two back-to-back RDTSCs one value.
        let may_be_zero = cpus == Cpus::Two && *name == RDTSC_OVERHEAD;
        assert!(
            (m.min > 0 || may_be_zero) && m.min <= m.median,
            "{name}: {m:?}"
        );
        let want = match *name {
            "boot_to_first_line" => 1,
            "console_io_64b" => 4,
            _ => 20,
        };
        assert_eq!(m.n, want, "{name}: iterations");
    }
    let overhead = report.get(RDTSC_OVERHEAD).expect("checked above");
    assert!(
        overhead.min < 200,
        "two back-to-back RDTSCs took {} TSC ticks: does keel trap RDTSC now?",
        overhead.min
    );
    run.assert_line(&d0_line("BENCH done"));
    run.assert_line(&d0_line("Test result: SUCCESS"));
    run.assert_line(DOM0_POWEROFF);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

#[test]
fn bench_guest_runs_on_qemu_svm() {
    smoke("bench_guest_qemu_svm", Backend::QemuSvm, Cpus::One);
}

#[test]
fn bench_guest_runs_on_bochs_vmx() {
    smoke("bench_guest_bochs_vmx", Backend::BochsVmx, Cpus::One);
}

#[test]
fn bench_guest_runs_on_bochs_svm() {
    smoke("bench_guest_bochs_svm", Backend::BochsSvm, Cpus::One);
}

/// The cross-CPU IPI round trip: vCPU 1 started, both vCPUs waiting in HLT on
/// pCPUs of their own, every request and answer counted (the guest checks).
#[test]
fn bench_ipi_runs_on_qemu_svm() {
    smoke("bench_ipi_qemu_svm", Backend::QemuSvm, Cpus::Two);
}

#[test]
fn bench_ipi_runs_on_bochs_vmx() {
    smoke("bench_ipi_bochs_vmx", Backend::BochsVmx, Cpus::Two);
}

#[test]
fn bench_ipi_runs_on_bochs_svm() {
    smoke("bench_ipi_bochs_svm", Backend::BochsSvm, Cpus::Two);
}
