//! keel boots to its "nothing to run" end on every backend, and powers off cleanly.
//!
//! With no module there is no dom0: keel must bring the machine up (memory, ACPI,
//! hardware virtualization, timers), say `No dom0 kernel given`, and power off. Each
//! backend checks the lines its emulated CPU must produce (vendor, VMX or SVM with
//! second-level paging), and an old VMX CPU without EPT or 1 GiB pages boots too.
//! One more test boots through QEMU's `-kernel` (multiboot v1) instead of GRUB.

use keel_tests::contract::*;
use keel_tests::{Backend, Boot, Loader, RunResult};

/// Everything a plain boot without modules must print on `backend`.
fn check_plain_boot(run: &RunResult, backend: Backend, boot_cpus: u32) {
    run.assert_line(BANNER);
    let cmdline = run.assert_line(COMMAND_LINE);
    assert!(
        cmdline[1].contains("loglvl=all"),
        "command line echo {:?} lacks loglvl=all\n{}",
        &cmdline[1],
        run.report()
    );
    run.assert_line(BOOT_MULTIBOOT2);

    let vendor = run.assert_line(CPU_VENDOR);
    assert_eq!(
        &vendor[1],
        backend.cpu_vendor(),
        "CPU vendor on {backend}\n{}",
        run.report()
    );

    let mem = run.assert_line(MEMORY);
    let (mib, frames): (u64, u64) = (number(run, &mem[1]), number(run, &mem[2]));
    assert!(
        mib > 0 && frames > 0,
        "no usable memory reported\n{}",
        run.report()
    );

    run.assert_line(ACPI_RSDP);
    let madt = run.assert_line(ACPI_MADT);
    assert!(
        number(run, &madt[1]) >= 1,
        "ACPI reports no CPU\n{}",
        run.report()
    );

    run.assert_line(hvm_line(backend));
    let tsc = run.assert_line(TIMER_TSC);
    assert!(
        number(run, &tsc[1]) > 0,
        "TSC frequency of 0 kHz\n{}",
        run.report()
    );
    run.assert_line(TIMER_LAPIC);
    check_cpus(run, boot_cpus, boot_cpus, false);

    run.assert_line(NO_DOM0);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// The `CPUs:` line: `up` of `listed` CPUs came up, with distinct APIC ids, and
/// whether the count was limited on the command line.
fn check_cpus(run: &RunResult, up: u32, listed: u32, limited: bool) {
    let c = run.assert_line(CPUS_UP);
    assert_eq!(
        (number(run, &c[1]), number(run, &c[2])),
        (u64::from(up), u64::from(listed)),
        "CPUs up / listed\n{}",
        run.report()
    );
    let mut ids: Vec<&str> = c[3].split(' ').collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        up as usize,
        "APIC ids not distinct\n{}",
        run.report()
    );
    assert_eq!(c.get(4).is_some(), limited, "limit note\n{}", run.report());
    run.assert_no_line(r"not started");
    // Every AP runs a function the boot CPU posts to it (the remote-call IPI).
    if up > 1 {
        let aps = up - 1;
        run.assert_line(&format!(
            r"^\(KEEL\) SMP: remote calls answered by {aps} of {aps} APs$"
        ));
    }
}

fn number(run: &RunResult, text: &str) -> u64 {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not a number: {e}\n{}", run.report()))
}

#[test]
fn boots_and_powers_off_on_qemu_svm() {
    let run = Boot::new("boots_and_powers_off", Backend::QemuSvm).run();
    check_plain_boot(&run, Backend::QemuSvm, 4);
}

#[test]
fn boots_and_powers_off_on_bochs_vmx() {
    let run = Boot::new("boots_and_powers_off", Backend::BochsVmx).run();
    check_plain_boot(&run, Backend::BochsVmx, 2);
}

#[test]
fn boots_and_powers_off_on_bochs_svm() {
    let run = Boot::new("boots_and_powers_off", Backend::BochsSvm).run();
    check_plain_boot(&run, Backend::BochsSvm, 2);
}

/// An old CPU: VMX without EPT and without 1 GiB pages (Bochs
/// `core2_penryn_t9600`, which faults on a 1 GiB entry's reserved bit). keel
/// must map itself with the page sizes the CPU has, boot every CPU, and say it
/// has no second-level paging.
#[test]
fn boots_on_a_cpu_without_ept_or_1g_pages_on_bochs_vmx_noept() {
    let b = Backend::BochsVmxNoEpt;
    let run = Boot::new("boots_on_an_old_cpu", b).run();
    check_plain_boot(&run, b, 2);
    run.assert_line(NO_HAP);
}

/// A machine without hardware virtualization (QEMU `-cpu max,-svm`): keel boots
/// every CPU and says only PV guests can run there.
#[test]
fn boots_without_hardware_virtualization_on_qemu_nohvm() {
    let b = Backend::QemuNoHvm;
    let run = Boot::new("boots_without_hvm", b).run();
    check_plain_boot(&run, b, 4);
    run.assert_no_line(NO_HAP);
}

/// A PVH Dom0 on that machine is refused with a reason, and keel powers off
/// cleanly (PV guests are what such a machine can run).
#[test]
fn pvh_dom0_without_hardware_virtualization_is_refused_on_qemu_nohvm() {
    use keel_tests::guests::{self, PVH64};
    let run = Boot::new("pvh_without_hvm", Backend::QemuNoHvm)
        .module(guests::guest(PVH64), "")
        .run();
    run.assert_line(HVM_NONE);
    run.assert_line(
        r"^\(KEEL\) dom0: module 0 'pvh64\.elf': cannot build the domain: this CPU has no hardware virtualization",
    );
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// One-CPU machines stay covered.
#[test]
fn boots_on_one_cpu_on_qemu_svm() {
    let run = Boot::new("boots_on_one_cpu", Backend::QemuSvm)
        .cpus(1)
        .run();
    check_plain_boot(&run, Backend::QemuSvm, 1);
}

#[test]
fn boots_on_one_cpu_on_bochs_vmx() {
    let run = Boot::new("boots_on_one_cpu", Backend::BochsVmx)
        .cpus(1)
        .run();
    check_plain_boot(&run, Backend::BochsVmx, 1);
}

/// Xen's `nr_cpus=` and `maxcpus=` limit how many CPUs keel brings up; the
/// smaller wins.
#[test]
fn nr_cpus_and_maxcpus_limit_the_cpus_on_qemu_svm() {
    let run = Boot::new("nr_cpus_limit", Backend::QemuSvm)
        .extra_cmdline("nr_cpus=3 maxcpus=2")
        .run();
    check_cpus(&run, 2, 4, true);
    run.assert_line(NO_DOM0);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// QEMU's own multiboot v1 loader (`-kernel`), with a minimal command line: the
/// defaults (COM1 at 115200) must do.
#[test]
fn boots_directly_with_qemu_multiboot_v1() {
    let run = Boot::new("direct_multiboot_v1", Backend::QemuSvm)
        .loader(Loader::QemuDirect)
        .cmdline("console=com1 loglvl=all")
        .run();
    run.assert_line(BANNER);
    run.assert_line(BOOT_MULTIBOOT1);
    run.assert_no_line(BOOT_MULTIBOOT2);
    run.assert_line(NO_DOM0);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}
