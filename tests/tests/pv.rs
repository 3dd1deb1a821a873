//! PV guests on keel (issue 14). keel builds PV domains but does not run them
//! yet: until it does, these tests hold it to a build its PV MMU accepts and that
//! gives every frame back, to saying that it cannot run it, and to telling a PV
//! kernel, a PVH kernel and something that is no Xen kernel at all apart. The pv64 guest itself is proven
//! on Xen 4.17 by `pv_on_xen.rs`; once keel runs PV, the same checks
//! (`guests::PV64_PROBE_CHECKS`) move here.

use keel_tests::contract::FATAL;
use keel_tests::guests::{self, PV64};
use keel_tests::{Backend, Boot};

/// Asserts keel's build line for PV domain `dom` (`pages` pages, any number if
/// `None`; every page-table level validated, exactly the boot tables) and, once
/// the domain has ended, its teardown line: every frame back through the PV
/// MMU (the RAM and shared_info). Returns the page count.
#[track_caller]
fn assert_pv_built(run: &keel_tests::RunResult, dom: u16, pages: Option<u64>) -> u64 {
    let pages_re = pages.map_or(String::from(r"\d+"), |p| p.to_string());
    let c = run.assert_line(&format!(
        r"^\(KEEL\) d{dom}: PV kernel laid out and checked: ({pages_re}) pages, (\d+) boot page-table frames validated as vCPU 0's base \(L4 0x[0-9a-f]+: 1 L4, (\d+) L3, (\d+) L2, (\d+) L1\), entry 0xffffffff80100000, start_info at 0x[0-9a-f]+$"
    ));
    let n = |i: usize| c[i].parse::<u64>().unwrap_or(0);
    assert!(
        n(3) >= 1 && n(4) >= 1 && n(5) >= 1 && n(2) == 1 + n(3) + n(4) + n(5),
        "every level validated, and exactly the boot tables:\n{}",
        run.report()
    );
    run.assert_line(&format!(
        r"^\(KEEL\) d{dom}: PV teardown: {} frames returned$",
        n(1) + 1
    ));
    n(1)
}

/// pv64 as a 64 MiB Dom0 (docs/pv.md step 2): keel lays it out in its own frames,
/// validates the builder's page tables with the PV MMU as vCPU 0's base (every
/// level present: L4, L3, L2, L1), and runs it in ring 3: it reads its
/// start_info, prints through `console_io` and powers off with `sched_op`,
/// hypercalls made with `syscall` through the PV hypercall page. When it has
/// ended every frame is back (16384 of RAM and shared_info through the PV MMU,
/// and the machine's count). The same on a machine without hardware
/// virtualization, where PV is all that runs, on Bochs's VMX and SVM CPUs, and
/// on an old one (`core2_penryn_t9600`: no EPT, no 1 GiB pages), where PV is all
/// that runs too; `mode=crash` ends it as crashed. On QEMU keel runs with SMEP
/// and SMAP on (the CPU has them); on Bochs as its CPU models offer.
#[test]
fn pv_dom0_runs_on_qemu_svm_qemu_nohvm_bochs_vmx_bochs_svm_and_an_old_cpu() {
    for backend in [
        Backend::QemuSvm,
        Backend::QemuNoHvm,
        Backend::BochsVmx,
        Backend::BochsSvm,
        Backend::BochsVmxNoEpt,
    ] {
        let run = Boot::new("pv_dom0_hello", backend)
            .extra_cmdline("dom0_mem=64M")
            .module(guests::guest(PV64), "mode=hello")
            .run();
        assert_pv_built(&run, 0, Some(16384));
        // QEMU's `max` CPU has SMEP and SMAP, and keel turns them on.
        let prot = run.assert_line(
            r"^\(KEEL\) Protection: SMEP (on|not offered by the CPU), SMAP (on|not offered by the CPU)$",
        );
        if matches!(backend, Backend::QemuSvm | Backend::QemuNoHvm) {
            assert_eq!(
                (&prot[1][..], &prot[2][..]),
                ("on", "on"),
                "{}",
                run.report()
            );
        }
        run.assert_line(r"^\(KEEL\) d0: PV, 64 MiB, \d+ vCPU\(s\), 0 module\(s\), entry 0xffffffff80100000, command line 'mode=hello'$");
        run.assert_line(
            r#"^\(d0\) pv64 \(long mode, PV\): start_info at 0xffffffff[0-9a-f]+, command line "mode=hello"$"#,
        );
        run.assert_line(r"^\(d0\) hello from pv64$");
        run.assert_line(r"^\(KEEL\) d0 shut down: poweroff$");
        guests::assert_frames_balance(&run);
        run.assert_no_line(FATAL);
        run.assert_powered_off_cleanly();
    }
    let run = Boot::new("pv_dom0_crash", Backend::QemuSvm)
        .extra_cmdline("dom0_mem=64M")
        .module(guests::guest(PV64), "mode=crash")
        .run();
    run.assert_line(r"^\(d0\) crashing on purpose: SCHEDOP_shutdown\(SHUTDOWN_crash\)$");
    run.assert_line(r"^\(KEEL\) d0 shut down: crash$");
    assert_pv_built(&run, 0, Some(16384));
    guests::assert_frames_balance(&run);
    run.assert_no_line(FATAL);
}

/// A PV Dom0 of the default size (most of the machine: about 466 MiB here)
/// runs too: the PV MMU's per-frame state and the p2m list live in frames keel
/// allocates for them, not on its 8 MiB heap, and every one of those goes back
/// with the domain's own.
#[test]
fn a_default_sized_pv_dom0_runs_on_qemu_svm() {
    let run = Boot::new("pv_dom0_default_size", Backend::QemuSvm)
        .module(guests::guest(PV64), "mode=hello")
        .run();
    let pages = assert_pv_built(&run, 0, None);
    assert!(
        pages > 65536,
        "a Dom0 of more than 256 MiB:\n{}",
        run.report()
    );
    run.assert_line(r"^\(d0\) hello from pv64$");
    guests::assert_frames_balance(&run);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// xl.cfg `type = "pv"`: pv64 as a 32 MiB domU beside a PVH domU, under a PVH
/// Dom0. It is laid out as libxg lays one out (xenstore and console pages
/// too), finds its console ring and event channel in start_info, prints
/// through the ring and powers off, every frame back through the PV MMU;
/// `type = "pv"` with a kernel that has no PV entry (pvh64) is refused as such,
/// and the PVH domU beside them runs as before.
#[test]
fn pv_domu_runs_beside_pvh_domains_on_qemu_svm() {
    use keel_tests::guests::PVH64;
    let cfg = |name: &str, kernel: &str, ty: &str, mib: u32| {
        format!(
            "name = \"{name}\"\ntype = \"{ty}\"\nkernel = \"{kernel}\"\ncmdline = \"mode=hello\"\nmemory = {mib}\nvcpus = 1\n"
        )
    };
    let run = Boot::new("pv_domu", Backend::QemuSvm)
        .module(guests::guest(PVH64), "")
        .module(guests::guest(PV64), "")
        .domu("pv-hello", &cfg("pv-hello", PV64, "pv", 32))
        .domu("pv-not", &cfg("pv-not", PVH64, "pv", 8))
        .domu("pvh-hello", &cfg("pvh-hello", PVH64, "pvh", 8))
        .run();
    assert_pv_built(&run, 1, Some(8192));
    run.assert_line(r"^\(KEEL\) d1: PV, 32 MiB, 1 vCPU\(s\) \(1 at most\), 0 module\(s\), entry 0xffffffff80100000, command line 'mode=hello' \(pv-hello\)$");
    run.assert_line(r#"^\(d1\) pv64 \(long mode, PV\): start_info at 0xffffffff[0-9a-f]+, command line "mode=hello"$"#);
    run.assert_line(r"^\(d1\) hello from pv64$");
    run.assert_line(r"^\(KEEL\) d1 shut down: poweroff$");
    run.assert_line(
        r#"^\(KEEL\) d2 \(pv-not\): cannot build: type = "pv" needs a kernel with a Xen PV entry \(XEN_ELFNOTE_ENTRY\), and this one has none$"#,
    );
    run.assert_line(r"^\(d3\) hello from pvh64$");
    guests::assert_frames_balance(&run);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// An ELF that carries no Xen notes at all (keel's own image) as Dom0: refused
/// as no Xen kernel.
#[test]
fn an_elf_without_xen_notes_is_not_a_xen_kernel_on_qemu_svm() {
    let run = Boot::new("not_xen_dom0", Backend::QemuSvm)
        .module(keel_tests::keel_elf(), "")
        .run();
    run.assert_line(
        r"^\(KEEL\) dom0: module 0 '[^']+': cannot build the domain: neither a PV nor a PVH entry: not a Xen kernel$",
    );
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// Xen's `dom0=pv` asks for a PV Dom0: honoured for a kernel with a PV entry,
/// refused by name for one without (pvh64); `dom0=pvh` of a PV-only kernel is
/// refused by name; `dom0=pvh,shadow` asks for shadow paging, which keel does
/// not have yet: refused by name too.
#[test]
fn dom0_mode_options_are_honoured_or_refused_on_qemu_svm() {
    use keel_tests::guests::PVH64;
    for (opt, guest, why) in [
        (
            "dom0=pv",
            PVH64,
            "dom0=pv: the kernel has no Xen PV entry (XEN_ELFNOTE_ENTRY)",
        ),
        (
            "dom0=pvh",
            PV64,
            "dom0=pvh: the kernel has no PVH entry (XEN_ELFNOTE_PHYS32_ENTRY)",
        ),
        (
            "dom0=pvh,shadow",
            PVH64,
            "dom0=shadow: keel has no shadow paging yet",
        ),
    ] {
        let run = Boot::new("dom0_mode", Backend::QemuSvm)
            .extra_cmdline(opt)
            .module(guests::guest(guest), "mode=hello")
            .run();
        run.assert_line(&format!(
            r"^\(KEEL\) dom0: module 0 '{}': cannot build the domain: {}$",
            regex::escape(guest),
            regex::escape(why)
        ));
        run.assert_no_line(FATAL);
        run.assert_powered_off_cleanly();
    }
    let run = Boot::new("dom0_mode", Backend::QemuSvm)
        .extra_cmdline("dom0=pv dom0_mem=32M")
        .module(guests::guest(PV64), "mode=hello")
        .run();
    run.assert_line(r"^\(d0\) hello from pv64$");
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
    // dom0=pvh is what keel does anyway.
    let run = Boot::new("dom0_mode", Backend::QemuSvm)
        .extra_cmdline("dom0=pvh")
        .module(guests::guest(PVH64), "mode=hello")
        .run();
    run.assert_line(r"^\(d0\) hello from pvh64$");
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// pv64's `mode=probe` on keel, as on Xen 4.17 (`pv_on_xen.rs`): every
/// start-of-day check of a PV Dom0 passes, in the guest's order, and the
/// verdict is SUCCESS followed by a poweroff.
#[test]
fn pv64_probe_passes_as_dom0_on_every_backend() {
    for backend in MODE_BACKENDS {
        let run = Boot::new("pv64_probe", backend)
            .extra_cmdline("dom0_mem=64M")
            .module(guests::guest(PV64), "mode=probe pages=16384")
            .run();
        for check in guests::PV64_PROBE_CHECKS {
            run.assert_line(&format!(r"^\(d0\) {}: ok$", regex::escape(check)));
        }
        run.assert_line(&format!(
            r"^\(d0\) {} checks passed, 0 failed$",
            guests::PV64_PROBE_CHECKS.len()
        ));
        run.assert_line(r"^\(d0\) Test result: SUCCESS$");
        run.assert_line(r#"^\(d0\) info: magic "xen-3\.0-x86_64p"$"#);
        run.assert_line(r"^\(KEEL\) d0 shut down: poweroff$");
        guests::assert_frames_balance(&run);
        run.assert_no_line(FATAL);
    }
}

/// What a hostile PV kernel tries (pv64 `mode=hostile` and `mode=fault`), as
/// domUs beside a PVH domU, on one machine:
/// - hypercalls with pointers into keel's range (its direct map, its image, the
///   top of its L4 slots), non-canonical, unmapped, wrapping, or at the guest's
///   own read-only page tables, an unknown hypercall, `VCPUOP_up` of a vCPU with
///   no state; with the PV MMU: writing keel's L4 slot, a superpage entry,
///   request arrays in keel's range or non-canonical, unpinning or re-typing
///   the L4 in use, `update_va_mapping` at a non-canonical address, an L1
///   mapped writable through an alias; a non-canonical segment base or
///   callback, an unknown callback type, a nested multicall: each fails with
///   Xen's errno and the guest goes on;
/// - one forbidden instruction each: reading, writing and jumping into keel's
///   memory, writing its own page tables, a null dereference, CLI, HLT, a CR3
///   write, WRMSR, LIDT, SWAPGS, port I/O, `int $0xf0` (keel's timer vector, a
///   #GP: its gate is DPL 0), INT3 (a #BP: its gate is DPL 3, as Xen's), UD2.
///   Then what keel cannot do for it: an `iret` to a non-canonical RIP (keel's
///   own IRETQ faults on Intel, the guest's fetch on AMD: the guest's #GP
///   either way), a bounce onto a kernel stack in keel's range, a writable
///   page-table store mapping keel's frame (refused: the guest's #PF), an
///   `iret` to user mode with no user L4. keel ends that domain alone, naming the exception, where, and
///   (page faults) the address; the PVH domU and keel go on, and every frame
///   comes back. Each fault domU is pinned to one of the pCPUs in turn, so every
///   CPU's tables are exercised (an AP's TSS once let port I/O through). (The IDT error code of an `int n` through a DPL-0 gate is
///   `n * 8 + 2` on hardware and `n * 16 + 2` on QEMU TCG: either is the CPU's.)
#[test]
fn hostile_pv_domus_fail_or_crash_alone_on_qemu_svm_and_bochs_vmx() {
    use keel_tests::guests::PVH64;
    let exceptions: &[(&str, &str)] = &[
        (
            "read-keel",
            r"#PF page fault at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x5, cr2 0xffff830000000000",
        ),
        (
            "write-keel",
            r"#PF page fault at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x7, cr2 0xffff82d080240000",
        ),
        (
            "jump-keel",
            r"#PF page fault at rip 0xffff82d080240000, rsp 0x[0-9a-f]+, error code 0x(5|15), cr2 0xffff82d080240000",
        ),
        (
            "write-pagetable",
            r"#PF page fault at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x7, cr2 0xffffffff80[0-9a-f]+000",
        ),
        (
            "null",
            r"#PF page fault at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x4, cr2 0x0",
        ),
        (
            "cli",
            r"#GP general protection at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x0",
        ),
        (
            "hlt",
            r"#GP general protection at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x0",
        ),
        (
            "mov-cr3",
            r"#GP general protection at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x0",
        ),
        (
            "wrmsr",
            r"#GP general protection at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x0",
        ),
        (
            "lidt",
            r"#GP general protection at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x0",
        ),
        (
            "swapgs",
            r"#(GP general protection|UD invalid opcode) at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+(, error code 0x0)?",
        ),
        (
            "port-io",
            r"#GP general protection at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x0",
        ),
        (
            "int-timer",
            r"#GP general protection at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x(782|f02)",
        ),
        (
            "int3",
            r"#BP breakpoint at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+",
        ),
        (
            "ud2",
            r"#UD invalid opcode at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+",
        ),
    ];
    let no_handler =
        |why: &str| format!("PV guest {why}, in Kernel mode: the guest has no handler for it");
    let mut faults: Vec<(&str, String)> = exceptions
        .iter()
        .map(|&(k, why)| (k, no_handler(why)))
        .collect();
    faults.extend([
        // keel's own IRETQ into the guest faults (Intel), or the guest's
        // first fetch does (AMD): either way the guest's #GP.
        (
            "iret-noncanonical",
            no_handler(r"#GP general protection at rip 0x800000000000, rsp 0x[0-9a-f]+, error code 0x0"),
        ),
        // A handler exists, but the kernel stack is keel's: no frame is written.
        (
            "bounce-keel-stack",
            String::from(r"PV guest #UD invalid opcode at rip 0x[0-9a-f]+, rsp 0xffff830000010000, in Kernel mode: bouncing it: the guest kernel's stack \(0xffff830000010000\) is in or just above the hypervisor's range"),
        ),
        (
            "ptwr-keel-frame",
            no_handler(r"#PF page fault at rip 0x[0-9a-f]+, rsp 0x[0-9a-f]+, error code 0x7, cr2 0xffffffff80[0-9a-f]+"),
        ),
        (
            "iret-user-no-l4",
            String::from(r"iret: the guest switched to user mode with no user page table"),
        ),
    ]);
    let cfg = |name: &str, kernel: &str, ty: &str, cmdline: &str, vcpus: &str| {
        format!(
            "name = \"{name}\"\ntype = \"{ty}\"\nkernel = \"{kernel}\"\ncmdline = \"{cmdline}\"\nmemory = 8\n{vcpus}\n"
        )
    };
    // keel takes at most 16 modules: the faults go in two boots, each with
    // the hostile-hypercall domU and a PVH domU beside them.
    for (backend, chunk) in [Backend::QemuSvm, Backend::BochsVmx]
        .into_iter()
        .flat_map(|b| faults.chunks(8).map(move |c| (b, c)))
        .collect::<Vec<_>>()
    {
        let mut boot = Boot::new("pv_hostile", backend)
            .module(guests::guest(PVH64), "")
            .module(guests::guest(PV64), "")
            .domu(
                "pv-hostile",
                &cfg(
                    "pv-hostile",
                    PV64,
                    "pv",
                    "mode=hostile",
                    "vcpus = 1\nmaxvcpus = 2",
                ),
            )
            .domu(
                "pvh-hello",
                &cfg("pvh-hello", PVH64, "pvh", "mode=hello", "vcpus = 1"),
            );
        // Pinned round the pCPUs (QEMU has four, Bochs two): each CPU's own
        // tables (its TSS, its GDT, its entry stack) are what a fault meets.
        let cpus = if backend == Backend::BochsVmx { 2 } else { 4 };
        for (i, (kind, _)) in chunk.iter().enumerate() {
            let pin = format!("vcpus = 1\ncpus = \"{}\"", i % cpus);
            boot = boot.domu(
                kind,
                &cfg(kind, PV64, "pv", &format!("mode=fault fault={kind}"), &pin),
            );
        }
        let run = boot.run();
        run.assert_line(r"^\(d1\) unknown hypercall 60: ok$");
        run.assert_line(r"^\(d1\) xen_version into its own L4 \(mapped read-only\): ok$");
        run.assert_line(r"^\(d1\) \d+ checks passed, 0 failed$");
        run.assert_line(r"^\(d1\) Test result: SUCCESS$");
        run.assert_line(r"^\(KEEL\) d1 shut down: poweroff$");
        run.assert_line(r"^\(d2\) hello from pvh64$");
        run.assert_line(r"^\(KEEL\) d2 shut down: poweroff$");
        for (i, (kind, why)) in chunk.iter().enumerate() {
            let d = i + 3;
            run.assert_line(&format!(
                r"^\(d{d}\) faulting on purpose: {}$",
                regex::escape(kind)
            ));
            run.assert_line(&format!(r"^\(KEEL\) d{d} crashed: {why}$"));
            run.assert_no_line(&format!(r"^\(d{d}\) surviving"));
        }
        guests::assert_frames_balance(&run);
        run.assert_no_line(FATAL);
    }
}

/// Where the pv64 modes run: SVM present but unused (QEMU `-cpu max`), no
/// hardware virtualization at all (QEMU `-cpu max,-svm`), and Bochs's VMX and
/// SVM CPUs (without SMEP/SMAP; QEMU's have them).
const MODE_BACKENDS: [Backend; 4] = [
    Backend::QemuSvm,
    Backend::QemuNoHvm,
    Backend::BochsVmx,
    Backend::BochsSvm,
];

/// Boots pv64 `mode=<mode>` as a 32 MiB Dom0 on every backend of
/// [`MODE_BACKENDS`]: each of `checks` passes (`(d0) <check>: ok`), none
/// fails, the verdict is SUCCESS and a poweroff, every frame comes back, and
/// keel reports nothing fatal.
fn pv64_mode(mode: &str, checks: &[&str]) {
    for backend in MODE_BACKENDS {
        let run = Boot::new(&format!("pv64_{mode}"), backend)
            .extra_cmdline("dom0_mem=32M")
            .module(guests::guest(PV64), &format!("mode={mode}"))
            .run();
        for check in checks {
            run.assert_line(&format!(r"^\(d0\) {}: ok$", regex::escape(check)));
        }
        run.assert_line(r"^\(d0\) \d+ checks passed, 0 failed$");
        run.assert_line(r"^\(d0\) Test result: SUCCESS$");
        run.assert_line(r"^\(KEEL\) d0 shut down: poweroff$");
        guests::assert_frames_balance(&run);
        run.assert_no_line(FATAL);
    }
}

/// pv64's `mode=traps` (docs/pv.md step 3): the guest installs its own trap
/// table (`set_trap_table`) and keel bounces its exceptions to it with Xen's
/// frame: #UD, #GP(0) from CLI, a kernel-mode #PF (error code without the U
/// bit), #BP after INT3 (a DPL-3 gate, as Xen's), #DE, and `int $0x80` to a
/// DPL-3 entry (emulated from the #GP, RIP past the instruction); each handler
/// returns with the `iret` hypercall, registers intact. A non-canonical handler
/// is -EINVAL, a table in keel's range -EFAULT; `set_trap_table(NULL)` clears.
#[test]
fn pv64_traps_bounce_and_iret_on_every_backend() {
    pv64_mode(
        "traps",
        &[
            "#UD bounced to trap 6 at the ud2",
            "int $0x80 delivered to its DPL-3 entry",
            "registers survive a bounce and iret",
        ],
    );
}

/// pv64's `mode=mmu` (docs/pv.md step 3): the PV MMU as a kernel uses it, and
/// as it must refuse it: `mmu_update` single and batched (100 requests across
/// continuations, `*pdone`), a batch stopped at a frame that is not the
/// guest's, `update_va_mapping` (and its refusals: the L4 writable, keel's
/// frame, keel's range), pin/unpin of an L1 (no writable mapping while pinned,
/// no double pin or unpin, no L1 that maps itself writable), `multicall`,
/// writable page tables (a plain store to its read-only L1, emulated and
/// validated), and shared_info mapped at its machine address with the
/// start-of-day upcall mask.
#[test]
fn pv64_mmu_on_every_backend() {
    pv64_mode(
        "mmu",
        &[
            "a 100-request mmu_update batch, done = 100",
            "an L1 mapping itself writable cannot be pinned",
            "a multicall of two update_va_mappings",
            "a store to its read-only L1 remaps the page (writable page tables)",
            "CMPXCHG with a stale old value: nothing written, ZF clear, RAX the entry",
            "vCPU 0 starts with upcalls masked",
        ],
    );
}

/// pv64's `mode=events` (docs/pv.md step 4): event channels through the event
/// callback. A send while upcalls are masked (the start of day) is only
/// pending; once unmasked, the next hypercall returns through the callback
/// (frame: saved upcall mask 0, IF set; `iret` leaves upcalls unmasked); a
/// send while unmasked is delivered before it returns; a single-shot timer
/// 20 ms on wakes `SCHEDOP_block` through VIRQ_TIMER's event.
#[test]
fn pv64_events_through_the_callback_on_every_backend() {
    pv64_mode(
        "events",
        &[
            "delivered before the send returns",
            "the timer's event arrives through the callback (waking SCHEDOP_block)",
        ],
    );
}

/// pv64's `mode=user` (docs/pv.md step 3): a process of the guest kernel's in
/// user mode. `stack_switch`, the syscall callback, a user L4
/// (`MMUEXT_NEW_USER_BASEPTR`), `iret` into user mode; each `syscall` of the
/// process arrives at the callback in kernel mode on the `stack_switch` stack
/// with the process's RIP and the flat user CS in the frame, and the first
/// returns to user mode with `iret`.
#[test]
fn pv64_user_mode_and_syscalls_on_every_backend() {
    pv64_mode(
        "user",
        &[
            "two syscalls from user mode reached the callback",
            "the callback ran on the stack_switch stack",
        ],
    );
}

/// pv64's `mode=privop` (docs/pv.md step 3): the privileged instructions keel
/// emulates for a PV kernel, as Xen's `emul-priv-op.c` does: CPUID through the
/// forced-emulation prefix (Xen's leaves), WRMSR/RDMSR of GS_BASE (and the base
/// really in use: `%gs:0` reads through it), MOV from CR0 and CR3 (its L4's
/// machine address), `fpu_taskswitch` and CLTS (TS in the guest's CR0, an x87
/// instruction its #NM while set), WBINVD; and those it does not (RDMSR of
/// another MSR, a CR4 write) as the guest's own #GP. Debug registers
/// (`set_debugreg`/`get_debugreg`): a write breakpoint on its own word is its
/// #DB with DR6 saying so; keel's address, an I/O breakpoint, upper bits and
/// DR4 are refused.
#[test]
fn pv64_privileged_instructions_on_every_backend() {
    pv64_mode(
        "privop",
        &[
            "forced-emulation CPUID: Xen's signature",
            "WRMSR GS_BASE, RDMSR reads it back, %gs:0 reads through it",
            "an x87 instruction with TS set is the guest's #NM",
            "a write to it is the guest's #DB, after the store",
            "set_debugreg(0, keel's address)",
        ],
    );
}

/// pv64's `mode=gdt` (docs/pv.md step 3): its own GDT. `set_gdt` of a frame
/// mapped writable, of keel's frame, of 7169 entries: -EINVAL; of its
/// unmapped frame: FS loads one of its selectors, one past its entries is its
/// #GP(selector); the frame's ring-0 data descriptor reads back with DPL 3 and
/// the frame cannot be mapped writable; `update_descriptor` writes a valid
/// descriptor and refuses a call gate to keel's code, a system descriptor, a
/// misaligned address, keel's frame and its own L4; `set_gdt` of nothing gives
/// it back.
#[test]
fn pv64_gdt_on_every_backend() {
    pv64_mode(
        "gdt",
        &[
            "FS loads a selector of its GDT",
            "update_descriptor: a call gate to keel's code",
        ],
    );
}

/// pv64's `mode=smp`: a second vCPU of a PV Dom0 from a `vcpu_guest_context`
/// (`VCPUOP_initialise`, its own L4 reference and stack), brought up with
/// `VCPUOP_up`, running its entry on its stack beside vCPU 0 and taking
/// itself down; refused contexts (a data page as L4, a non-canonical callback)
/// leave nothing held, a second initialise is -EEXIST, an unknown vCPU
/// -ENOENT. Every frame comes back.
#[test]
fn pv64_second_vcpu_on_every_backend() {
    pv64_mode(
        "smp",
        &[
            "vCPU 1 ran its entry, on its stack",
            "vCPU 1 took itself down",
        ],
    );
}
