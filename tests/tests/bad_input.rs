//! Bad input from the boot loader is reported and survived, never a crash.
//!
//! The command line and the modules come from whoever configured the boot loader:
//! keel must say what is wrong with them in its contract lines and still power off
//! cleanly. Mostly on QEMU (fast); the garbage module also on Bochs VMX, and through
//! QEMU's multiboot v1 loader, whose module list arrives in a different structure.

use keel_tests::contract::*;
use keel_tests::{Backend, Boot, Loader, RunResult, fixtures, workdir};

/// Writes an 8 KiB garbage module for test `name` and returns its path.
fn garbage_module(name: &str) -> std::path::PathBuf {
    let dir = workdir::create(&format!("{name}-input")).unwrap_or_else(|e| panic!("{e}"));
    fixtures::write_garbage_module(&dir, "junk.bin", 0x6b65_656c).unwrap_or_else(|e| panic!("{e}"))
}

fn check_garbage_module_refused(run: &RunResult) {
    run.assert_line(BANNER);
    run.assert_line(BAD_MODULE);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

#[test]
fn garbage_module_is_refused_on_qemu_svm() {
    let module = garbage_module("garbage_module_qemu");
    let run = Boot::new("garbage_module", Backend::QemuSvm)
        .module(&module, "")
        .run();
    check_garbage_module_refused(&run);
}

#[test]
fn garbage_module_is_refused_on_bochs_vmx() {
    let module = garbage_module("garbage_module_bochs");
    let run = Boot::new("garbage_module", Backend::BochsVmx)
        .module(&module, "")
        .run();
    check_garbage_module_refused(&run);
}

#[test]
fn garbage_module_is_refused_on_bochs_svm() {
    let module = garbage_module("garbage_module_bochs_svm");
    let run = Boot::new("garbage_module", Backend::BochsSvm)
        .module(&module, "")
        .run();
    check_garbage_module_refused(&run);
}

#[test]
fn garbage_module_is_refused_with_qemu_multiboot_v1() {
    let module = garbage_module("garbage_module_direct");
    let run = Boot::new("garbage_module_direct", Backend::QemuSvm)
        .loader(Loader::QemuDirect)
        .module(&module, "")
        .run();
    run.assert_line(BOOT_MULTIBOOT1);
    check_garbage_module_refused(&run);
}

#[test]
fn unknown_option_is_ignored_with_a_warning() {
    let run = Boot::new("unknown_option", Backend::QemuSvm)
        .extra_cmdline("bogus-option=1")
        .run();
    let warning = run.assert_line(UNKNOWN_OPTION);
    assert!(
        warning[1].starts_with("bogus-option"),
        "warning names {:?}, not bogus-option\n{}",
        &warning[1],
        run.report()
    );
    run.assert_line(NO_DOM0);
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}

#[test]
fn malformed_known_option_is_an_error_not_a_crash() {
    let cmdline =
        keel_tests::default_cmdline(Backend::QemuSvm).replace("loglvl=all", "loglvl=shouting");
    assert!(
        cmdline.contains("loglvl=shouting"),
        "default command line changed: {cmdline}"
    );
    let run = Boot::new("malformed_option", Backend::QemuSvm)
        .cmdline(&cmdline)
        .run();
    let error = run.assert_line(COMMAND_LINE_ERROR);
    assert!(
        error[1].contains("loglvl"),
        "error {:?} does not name loglvl\n{}",
        &error[1],
        run.report()
    );
    run.assert_no_line(FATAL);
    run.assert_powered_off_cleanly();
}
