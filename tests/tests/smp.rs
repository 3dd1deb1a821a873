//! Guests with several vCPUs, checked from inside by the pvh64 test guest's
//! `mode=smp` (`tests/guests/common/src/smp/`), on every backend.
//!
//! The guest brings up its vCPUs through `VCPUOP_initialise` + `VCPUOP_up` and
//! through INIT + SIPI (a real-mode trampoline), sends event-channel and local
//! APIC IPIs both ways with exact counts, runs a timer on every vCPU, takes vCPUs
//! down and up again (`VCPUOP_down`, HLT with interrupts off), and makes every
//! hostile call the issue names: bad contexts (segment state, non-canonical RIP,
//! an unmapped context pointer), initialising an online vCPU, vCPU ids the domain
//! lacks, IPIs to APIC ids nobody has, an INIT+SIPI storm, ports bound to a down
//! vCPU. Each check is a line; every test lists them all ([`CHECKS`]), so a check
//! that does not run fails the test as surely as one that fails.
//!
//! The runs: as a domU with as many vCPUs as the machine has pCPUs (QEMU 4,
//! Bochs VMX and SVM 2), with more vCPUs than pCPUs (4 on 2, and 3 on 1), with
//! `maxvcpus` above `vcpus` (the MADT's enabled flags), and as an SMP Dom0
//! (`dom0_max_vcpus=`). Around the guest's verdict keel must end the domain with
//! `poweroff`, give back every frame and never print `FATAL`.

use keel_tests::contract::FATAL;
use keel_tests::guests::{self, PVH64, domain_line, domain_shut_down};
use keel_tests::{Backend, Boot, RunResult};

/// The checks `mode=smp` prints, in order, each as `<check>: ok`.
const CHECKS: &[&str] = &[
    "shared_info mapped",
    "MADT found",
    "MADT lists every vCPU",
    "MADT APIC ids are 2 x vcpu id",
    "MADT enabled flags",
    "vCPU count as configured",
    "only vCPU 0 up at start",
    "local APIC enabled",
    "upcall registered",
    "VCPUOP_up of an uninitialised vCPU refused",
    "VCPUOP_initialise 32-bit data segment as CS refused",
    "VCPUOP_initialise 32-bit non-present CS refused",
    "VCPUOP_initialise 32-bit SS.DPL != CS.DPL refused",
    "VCPUOP_initialise 32-bit EIP beyond CS limit refused",
    "VCPUOP_initialise 64-bit non-canonical RIP refused",
    "VCPUOP_initialise 64-bit without CR0.PG refused",
    "VCPUOP_initialise 64-bit without CR4.PAE refused",
    "VCPUOP_initialise 64-bit without EFER.LME refused",
    "VCPUOP_initialise non-zero pad refused",
    "VCPUOP_initialise unknown mode refused",
    "VCPUOP_initialise unmapped context refused",
    "refused contexts leave the vCPU down",
    "VCPUOP_initialise of a missing vCPU refused",
    "VCPUOP_up of a missing vCPU refused",
    "VCPUOP_is_up of a missing vCPU refused",
    "EVTCHNOP_bind_ipi to a missing vCPU refused",
    "EVTCHNOP_bind_virq to a missing vCPU refused",
    "EVTCHNOP_bind_vcpu to a missing vCPU refused",
    "HVMOP_set_evtchn_upcall_vector for a missing vCPU refused",
    "VCPUOP_initialise vCPU 1",
    "initialised vCPU stays down until VCPUOP_up",
    "VCPUOP_up vCPU 1",
    "vCPU 1 online",
    "vCPU 1 started with the registers it was given",
    "vCPU 1 sees its own local APIC",
    "vCPU 1 upcall vector set",
    "VCPUOP_is_up vCPU 1",
    "VCPUOP_initialise of an online vCPU refused",
    "trampoline page is free RAM",
    "page tables below 4 GiB",
    "vCPUs started by INIT+SIPI",
    "SIPI to an online vCPU ignored",
    "every vCPU up",
    "EVTCHNOP_bind_ipi on every vCPU",
    "EVTCHNOP_status names each IPI port's vCPU",
    "event-channel IPI round trips",
    "fixed IPI round trips",
    "fixed IPI to self",
    "fixed IPI to all excluding self",
    "VIRQ_TIMER bound on every vCPU",
    "singleshot timer fires on every vCPU",
    "VCPUOP_set_singleshot_timer for another vCPU refused",
    "periodic timer set for another vCPU fires there",
    "VCPUOP_stop_periodic_timer for another vCPU stops it",
    "VCPUOP_down of another vCPU",
    "VCPUOP_up resumes a downed vCPU",
    "VCPUOP_down of itself",
    "self-down returns after VCPUOP_up",
    "HLT with interrupts off takes a vCPU down",
    "INIT+SIPI brings a halted vCPU back",
    "EVTCHNOP_bind_vcpu to a down vCPU accepted",
    "event for a down vCPU waits in its selector",
    "event for a down vCPU delivered when it comes up",
    "fixed IPI to a missing APIC id goes nowhere",
    "INIT and SIPI to a missing APIC id go nowhere",
    "INIT+SIPI storm restarts the vCPU once",
    "every vCPU answers",
    "interrupts ran on their own vCPU",
    "no stray interrupts",
];

/// A domU's memory (MiB): the guest image is ~1.7 MiB.
const MEMORY_MIB: u32 = 16;

/// The xl.cfg of the SMP guest domU.
fn config(vcpus: u32, maxvcpus: u32) -> String {
    format!(
        "name = \"smp\"\ntype = \"pvh\"\nkernel = \"{PVH64}\"\n\
         cmdline = \"mode=smp vcpus={vcpus} maxvcpus={maxvcpus}\"\n\
         memory = {MEMORY_MIB}\nvcpus = {vcpus}\nmaxvcpus = {maxvcpus}\n"
    )
}

/// Every check of domain `id` passed, the domain powered off, keel gave back
/// every frame and powered off cleanly.
#[track_caller]
fn assert_passed(run: &RunResult, id: u16) {
    run.assert_no_line(FATAL);
    let mut lines: Vec<String> = CHECKS
        .iter()
        .map(|c| domain_line(id, &format!("{c}: ok")))
        .collect();
    lines.push(domain_line(
        id,
        &format!("{} checks passed, 0 failed", CHECKS.len()),
    ));
    lines.push(domain_line(id, "Test result: SUCCESS"));
    lines.push(domain_shut_down(id, "poweroff"));
    guests::assert_lines(run, &lines);
    run.assert_no_line(&format!(r"^\(d{id}\) .*: FAIL( |$)"));
    run.assert_no_line(&format!(r"^\(d{id}\) unexpected exception "));
    run.assert_no_line(&format!(r"^\(d{id}\) PANIC "));
    guests::assert_frames_balance(run);
    run.assert_powered_off_cleanly();
}

/// The guest as domU d1 with `vcpus` of `maxvcpus` vCPUs, on a machine with
/// `pcpus` pCPUs.
fn smp_domu(test: &str, backend: Backend, pcpus: u32, vcpus: u32, maxvcpus: u32) {
    let run = Boot::new(test, backend)
        .cpus(pcpus)
        .module(guests::guest(PVH64), "")
        .domu("smp", &config(vcpus, maxvcpus))
        .run();
    run.assert_line(&format!(
        r"^\(KEEL\) d1: PVH, {MEMORY_MIB} MiB, {vcpus} vCPU\(s\) \({maxvcpus} at most\)"
    ));
    assert_passed(&run, 1);
    assert_eq!(
        guests::domains_ended(&run),
        [(1, "poweroff".to_string())],
        "how the domain ended\n{}",
        run.report()
    );
}

/// As many vCPUs as the machine has pCPUs.
fn native(backend: Backend) {
    let n = backend.default_cpus();
    smp_domu("smp_domu", backend, n, n, n);
}

/// Beside a domain doing all of the above (the hostile calls included), another
/// keeps running and ends on its own terms: a one-vCPU domU spinning for a
/// second of its pvclock (not a timing check: on an emulator sharing two host
/// cores with a busy 4-vCPU neighbour, deadlines slip).
#[test]
fn smp_domu_beside_another_on_qemu_svm() {
    let bystander = format!(
        "name = \"bystander\"\ntype = \"pvh\"\nkernel = \"{PVH64}\"\n\
         cmdline = \"mode=spin seconds=1\"\nmemory = 8\nvcpus = 1\n"
    );
    let run = Boot::new("smp_domu_beside", Backend::QemuSvm)
        .module(guests::guest(PVH64), "")
        .domu("smp", &config(4, 4))
        .domu("bystander", &bystander)
        .run();
    assert_passed(&run, 1);
    run.assert_line(&domain_line(2, "Test result: SUCCESS"));
    run.assert_line(&domain_shut_down(2, "poweroff"));
    let mut ended = guests::domains_ended(&run);
    ended.sort();
    assert_eq!(
        ended,
        [(1, "poweroff".to_string()), (2, "poweroff".to_string())],
        "how the domains ended\n{}",
        run.report()
    );
}

#[test]
fn smp_domu_on_qemu_svm() {
    native(Backend::QemuSvm);
}

#[test]
fn smp_domu_on_bochs_vmx() {
    native(Backend::BochsVmx);
}

#[test]
fn smp_domu_on_bochs_svm() {
    native(Backend::BochsSvm);
}

/// More vCPUs than pCPUs: 4 time-share 2; every wait in the guest yields, so
/// the counts come out exact all the same.
///
/// Ignored for now (run it with `--ignored`): on QEMU 7.2's multi-threaded TCG
/// this machine triple-faults in about half the runs under the suite's load and
/// most runs on a quiet host, at the commit before this was noticed too; keel's
/// page tables are intact at the fault. docs/architecture.md, "A triple fault
/// under QEMU's multi-threaded SVM", has the evidence and what to try next.
/// vCPUs time-sharing pCPUs stay covered by `smp_domu_3_vcpus_on_1_pcpu_on_bochs_vmx`
/// and the scheduler tests.
#[test]
#[ignore = "QEMU 7.2 MTTCG triple fault after #VMEXIT: docs/architecture.md (open)"]
fn smp_domu_4_vcpus_on_2_pcpus_on_qemu_svm() {
    smp_domu("smp_domu_4on2", Backend::QemuSvm, 2, 4, 4);
}

/// Three vCPUs on one pCPU: nothing runs at once at all.
#[test]
fn smp_domu_3_vcpus_on_1_pcpu_on_bochs_vmx() {
    smp_domu("smp_domu_3on1", Backend::BochsVmx, 1, 3, 3);
}

/// `maxvcpus = 4`, `vcpus = 2`: the MADT lists four local APICs, the first two
/// enabled; the guest may still bring all four up, as on Xen.
#[test]
fn smp_domu_maxvcpus_above_vcpus_on_qemu_svm() {
    smp_domu("smp_domu_maxvcpus", Backend::QemuSvm, 4, 2, 4);
}

/// The guest as an SMP Dom0: `dom0_max_vcpus=2`.
#[test]
fn smp_dom0_on_qemu_svm() {
    let run = Boot::new("smp_dom0", Backend::QemuSvm)
        .extra_cmdline("dom0_mem=32M dom0_max_vcpus=2")
        .module(guests::guest(PVH64), "mode=smp vcpus=2 maxvcpus=2")
        .run();
    run.assert_line(r"^\(KEEL\) d0: PVH, 32 MiB, 2 vCPU\(s\)");
    assert_passed(&run, 0);
}
