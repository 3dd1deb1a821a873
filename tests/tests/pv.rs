//! PV guests on keel (issue 14). keel does not run PV guests yet: until it does,
//! these tests hold it to saying so, and to telling a PV kernel, a PVH kernel and
//! something that is no Xen kernel at all apart. The pv64 guest itself is proven
//! on Xen 4.17 by `pv_on_xen.rs`; once keel runs PV, the same checks
//! (`guests::PV64_PROBE_CHECKS`) move here.

use keel_tests::contract::FATAL;
use keel_tests::guests::{self, PV64};
use keel_tests::{Backend, Boot};

/// pv64 as Dom0: refused by name, keel powers off cleanly. The same on a machine
/// without hardware virtualization, where PV is all that could run.
#[test]
fn pv_dom0_is_refused_by_name_on_qemu_svm_and_qemu_nohvm() {
    for backend in [Backend::QemuSvm, Backend::QemuNoHvm] {
        let run = Boot::new("pv_dom0_refused", backend)
            .module(guests::guest(PV64), "mode=hello")
            .run();
        run.assert_line(
            r"^\(KEEL\) dom0: module 0 'pv64\.elf': cannot build the domain: a PV kernel \(Xen PV entry, no XEN_ELFNOTE_PHYS32_ENTRY\): keel cannot run PV guests yet$",
        );
        run.assert_no_line(FATAL);
        run.assert_powered_off_cleanly();
    }
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
