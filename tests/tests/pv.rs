//! PV guests on keel (issue 14). keel builds PV domains but does not run them
//! yet: until it does, these tests hold it to a build its PV MMU accepts and that
//! gives every frame back, to saying that it cannot run it, and to telling a PV
//! kernel, a PVH kernel and something that is no Xen kernel at all apart. The pv64 guest itself is proven
//! on Xen 4.17 by `pv_on_xen.rs`; once keel runs PV, the same checks
//! (`guests::PV64_PROBE_CHECKS`) move here.

use keel_tests::contract::FATAL;
use keel_tests::guests::{self, PV64};
use keel_tests::{Backend, Boot};

/// The line keel prints when it refuses to run a PV Dom0 it has built.
const PV_NOT_YET: &str = r"^\(KEEL\) dom0: module 0 'pv64\.elf': cannot build the domain: a PV kernel \(Xen PV entry, no XEN_ELFNOTE_PHYS32_ENTRY\): keel cannot run PV guests yet$";

/// Asserts keel's trial-build line for PV domain `dom`: `pages` pages (any number
/// if `None`), every page-table level validated and exactly the boot tables,
/// and every frame returned (the RAM and shared_info). Returns the page count.
#[track_caller]
fn assert_pv_trial(run: &keel_tests::RunResult, dom: u16, pages: Option<u64>) -> u64 {
    let pages_re = pages.map_or(String::from(r"\d+"), |p| p.to_string());
    let c = run.assert_line(&format!(
        r"^\(KEEL\) d{dom}: PV kernel laid out and checked: ({pages_re}) pages, (\d+) boot page-table frames validated as vCPU 0's base \(L4 0x[0-9a-f]+: 1 L4, (\d+) L3, (\d+) L2, (\d+) L1\), entry 0xffffffff80100000, start_info at 0x[0-9a-f]+; torn down, (\d+) frames returned$"
    ));
    let n = |i: usize| c[i].parse::<u64>().unwrap_or(0);
    assert!(
        n(3) >= 1 && n(4) >= 1 && n(5) >= 1 && n(2) == 1 + n(3) + n(4) + n(5),
        "every level validated, and exactly the boot tables:\n{}",
        run.report()
    );
    assert_eq!(
        n(6),
        n(1) + 1,
        "every frame returned (RAM and shared_info):\n{}",
        run.report()
    );
    n(1)
}

/// pv64 as a 64 MiB Dom0 (docs/pv.md step 1): keel lays it out in its own frames,
/// validates the builder's page tables with the PV MMU as vCPU 0's base (every
/// level present: L4, L3, L2, L1), tears it down with every frame returned
/// (16384 of RAM and shared_info), and then refuses to run it by name, powering
/// off cleanly. The same on a machine without hardware virtualization, where PV
/// is all that could run, and on Bochs's VMX.
#[test]
fn pv_dom0_is_built_checked_and_refused_on_qemu_svm_qemu_nohvm_and_bochs_vmx() {
    for backend in [Backend::QemuSvm, Backend::QemuNoHvm, Backend::BochsVmx] {
        let run = Boot::new("pv_dom0_refused", backend)
            .extra_cmdline("dom0_mem=64M")
            .module(guests::guest(PV64), "mode=hello")
            .run();
        assert_pv_trial(&run, 0, Some(16384));
        run.assert_line(PV_NOT_YET);
        run.assert_no_line(FATAL);
        run.assert_powered_off_cleanly();
    }
}

/// A PV Dom0 of the default size (most of the machine: about 466 MiB here) is
/// built and checked too: the PV MMU's per-frame state and the p2m being built
/// live in frames keel allocates for them, not on its 8 MiB heap, and every one
/// of those goes back with the domain's own.
#[test]
fn a_default_sized_pv_dom0_is_built_and_checked_on_qemu_svm() {
    let run = Boot::new("pv_dom0_default_size", Backend::QemuSvm)
        .module(guests::guest(PV64), "mode=hello")
        .run();
    let pages = assert_pv_trial(&run, 0, None);
    assert!(
        pages > 65536,
        "a Dom0 of more than 256 MiB:\n{}",
        run.report()
    );
    run.assert_line(PV_NOT_YET);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

/// xl.cfg `type = "pv"` (docs/pv.md step 1, domU half): pv64 as a 32 MiB domU is
/// laid out and checked as the Dom0 is (libxg's layout: xenstore and console
/// pages too), every frame returned, then refused by name; `type = "pv"` with a
/// kernel that has no PV entry (pvh64) is refused as such, and a PVH domU beside
/// them runs as before.
#[test]
fn pv_domu_is_built_checked_and_refused_on_qemu_svm() {
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
    assert_pv_trial(&run, 1, Some(8192));
    run.assert_line(
        r#"^\(KEEL\) d1 \(pv-hello\): cannot build: type = "pv": keel cannot run PV guests yet$"#,
    );
    run.assert_line(
        r#"^\(KEEL\) d2 \(pv-not\): cannot build: type = "pv" needs a kernel with a Xen PV entry \(XEN_ELFNOTE_ENTRY\), and this one has none$"#,
    );
    run.assert_line(r"^\(d3\) hello from pvh64$");
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

/// Xen's `dom0=pv` asks for a PV Dom0 (even of a kernel that could run PVH):
/// refused by name; `dom0=pvh,shadow` asks for shadow paging, which keel does not
/// have yet: refused by name too.
#[test]
fn dom0_mode_options_are_honoured_or_refused_on_qemu_svm() {
    use keel_tests::guests::PVH64;
    for (opt, why) in [
        ("dom0=pv", "dom0=pv: keel cannot run PV guests yet"),
        ("dom0=pvh,shadow", "dom0=shadow: keel has no shadow paging yet"),
    ] {
        let run = Boot::new("dom0_mode", Backend::QemuSvm)
            .extra_cmdline(opt)
            .module(guests::guest(PVH64), "mode=hello")
            .run();
        run.assert_line(&format!(
            r"^\(KEEL\) dom0: module 0 'pvh64\.elf': cannot build the domain: {}$",
            regex::escape(why)
        ));
        run.assert_no_line(FATAL);
        run.assert_powered_off_cleanly();
    }
    // dom0=pvh is what keel does anyway.
    let run = Boot::new("dom0_mode", Backend::QemuSvm)
        .extra_cmdline("dom0=pvh")
        .module(guests::guest(PVH64), "mode=hello")
        .run();
    run.assert_line(r"^\(d0\) hello from pvh64$");
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}
