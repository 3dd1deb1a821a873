//! `cargo xtask run`: boot keel once, with its serial output on the terminal.
//!
//! Serial lines go to stdout as they arrive (GRUB's screen-control sequences
//! removed); the xtask's own messages go to stderr, ending with how the machine
//! stopped. The exit status says the same: 0 clean power-off, 1 keel failure or
//! unexplained stop, 2 a domain crashed (keel powered off with the domain-failure
//! status), 124 timeout (like `timeout(1)`).
//!
//! Modules: Dom0's (`--dom0`, `--module`) first, then per `--domu` the config and the
//! kernel and ramdisk it names (see [`crate::domu`]); with none of these, the test
//! guest pvh64 as Dom0.

use std::io::Write;

use keel_tests::{Boot, Loader, Outcome, workdir};

use crate::args::RunOpts;
use crate::domu::{self, Item};
use crate::{Error, deps, guests, image};

/// Work-directory name of `run`'s boots; older ones are removed on each run.
const RUN_NAME: &str = "xtask-run";

/// Removes the work directories of earlier `cargo xtask run`s.
fn remove_old_runs() {
    let Ok(entries) = std::fs::read_dir(workdir::work_root()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(RUN_NAME) {
            // Best effort: a leftover directory only costs disk space.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `cargo xtask run`; returns the process exit status.
pub fn run(opts: &RunOpts) -> Result<u8, Error> {
    deps::ensure_installed()?;
    let elf = image::build(&opts.build)?;
    // The test guests too, so `--module target/keel/guests/pvh64.elf=...` works; a
    // run that does not use them goes ahead without.
    let guests_dir = match guests::build(&opts.build) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("xtask: warning: the test guests were not built: {e}");
            None
        }
    };
    let mut modules = opts.modules.clone();
    let mut xen_cmdline = opts.xen_cmdline.clone();
    if modules.is_empty() && opts.domus.is_empty() {
        // The default run: keel with its own PVH test guest as Dom0, probing the ABI.
        let dir = guests_dir.ok_or_else(|| {
            Error("no --dom0 given and the default guest could not be built".into())
        })?;
        let pvh64 = dir.join(keel_tests::guests::PVH64);
        eprintln!(
            "xtask: no --dom0 given: booting the test guest {} as Dom0 (mode=probe)",
            pvh64.display()
        );
        modules.push(keel_tests::Module::new(pvh64, "mode=probe"));
        if !xen_cmdline.contains("dom0_mem=") {
            xen_cmdline = keel_tests::join_cmdline(&xen_cmdline, "dom0_mem=32M");
        }
    }
    for m in &modules {
        if !m.path.is_file() {
            return Err(Error(format!("module {} does not exist", m.path.display())));
        }
    }
    if modules.is_empty() {
        eprintln!("xtask: no --dom0 or --module given: keel boots the domUs without a Dom0");
    }
    let items = domu::plan(&modules, &opts.domus)?;
    remove_old_runs();

    let mut boot = Boot::new(RUN_NAME, opts.backend)
        .elf(&elf)
        .extra_cmdline(&xen_cmdline);
    for item in items {
        boot = match item {
            Item::File(m) => boot.modules([m]),
            Item::Config { name, text } => {
                eprintln!(
                    "xtask: {name}: booting a copy (in the run's domu/ directory) whose \
                     kernel/ramdisk name their modules"
                );
                boot.domu(&name, &text)
            }
        };
    }
    if opts.direct {
        boot = boot.loader(Loader::QemuDirect);
    }
    if let Some(t) = opts.timeout {
        boot = boot.timeout(t);
    }
    eprintln!(
        "xtask: booting keel on {} via {}; keel command line: {}",
        opts.backend,
        if opts.direct {
            "QEMU -kernel (multiboot v1)"
        } else {
            "GRUB (multiboot2)"
        },
        boot.keel_cmdline()
    );

    let stdout = std::io::stdout();
    let mut show = |line: &str| {
        let mut out = stdout.lock();
        // A closed terminal must not stop the run: the log is on disk anyway.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let result = boot.try_run(Some(&mut show))?;

    eprintln!("xtask: logs in {}", result.work_dir.display());
    let secs = result.elapsed.as_secs_f64();
    Ok(match result.outcome() {
        Outcome::PoweredOff => {
            eprintln!("xtask: keel powered off cleanly after {secs:.1} s");
            0
        }
        Outcome::KeelFailure(why) => {
            eprintln!("xtask: keel reported a failure after {secs:.1} s: {why}");
            1
        }
        Outcome::DomainFailed(why) => {
            eprintln!("xtask: a domain crashed; keel powered off after {secs:.1} s: {why}");
            2
        }
        Outcome::TimedOut => {
            eprintln!(
                "xtask: timed out after {} s (emulator killed)",
                result.timeout.as_secs()
            );
            124
        }
        Outcome::Unexplained(why) => {
            eprintln!(
                "xtask: the machine stopped after {secs:.1} s without a clean power-off: {why}"
            );
            1
        }
    })
}
