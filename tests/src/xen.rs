//! Reference runs on the real Xen: a test guest booted as Dom0 of Xen 4.17 under
//! QEMU, to validate the *guest* against the hypervisor whose ABI keel implements.
//! Nothing here runs keel.
//!
//! # Why
//!
//! A guest written ahead of keel's support for it (pv64, for keel's PV work) must
//! be known to be right before it can judge keel: if it passes on Xen, a failure
//! on keel is keel's. [`XenBoot`] boots it the way `cargo xtask bench` boots Xen
//! ([`crate::bench`]), with what a PV Dom0 needs, and [`XenRun`] holds what came
//! out with the assertions a test needs.
//!
//! # The boot
//!
//! Debian's `xen-hypervisor-4.17-amd64` ([`crate::bench::fetch_xen`]: fetched once
//! into `target/keel/cache/xen/`, never installed) through QEMU's multiboot v1
//! loader: `-kernel xen -append <Xen's command line> -initrd "<guest> <guest's
//! command line>"` (Xen drops the module string's first word, the file name, to
//! make Dom0's command line). TCG, one CPU, 512 MiB, serial to `serial.log` in a
//! fresh work directory ([`crate::workdir`]), no reboot. The CPU is
//! [`QEMU_CPU`], `max` without SMAP: QEMU 7.2's TCG checks the stack read of an
//! `iretq` to a ring-3 PV kernel as a supervisor access and faults it when SMAP is
//! on (`shared/EMULATORS.md`). Xen's command line is [`XEN_CMDLINE`] by default: a
//! PV Dom0 (Xen's default for a kernel without a PVH entry, said explicitly) of
//! [`DOM0_MEM`], and every Xen log level, so the log shows the Dom0 builder's
//! layout.
//!
//! # What Xen prints
//!
//! Xen's own lines start `(XEN) `. Dom0's `console_io` writes come out **bare**:
//! Xen copies the hardware domain's bytes straight to the serial port
//! (`guest_console_write`, `xen/drivers/char/console.c`); other domains' lines
//! would be prefixed `(d<N>) `. When Dom0 ends, Xen says how
//! (`hwdom_shutdown`, `xen/common/shutdown.c`), see [`Dom0End`], and then halts
//! (poweroff: QEMU keeps running) or resets (reboot, and crash after five seconds;
//! `-no-reboot` turns a reset into QEMU's exit).
//!
//! # Invariants
//!
//! - A run stops [`GRACE`] after Xen's Dom0-end line or its `Panic on CPU` line,
//!   when QEMU exits, or at the timeout; QEMU is then killed if it still runs, and
//!   always reaped ([`crate::run::supervise`]).
//! - Each run has its own work directory holding copies of Xen and the guest,
//!   `serial.log`, `emulator.out` and `command.txt` (the QEMU command, runnable
//!   there), so runs in parallel share nothing.
//!
//! # Locking
//!
//! None of its own; the Xen fetch takes the package cache's lock
//! ([`crate::debian::fetch_in`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::bench::{self, BenchError};
use crate::qemu;
use crate::run::{self, Supervision};
use crate::{HarnessError, serial, workdir};

/// Xen's command line: serial console, every log level, a PV Dom0 of [`DOM0_MEM`].
pub const XEN_CMDLINE: &str = "console=com1 loglvl=all dom0=pv dom0_mem=32M";

/// The Dom0 size in [`XEN_CMDLINE`], in 4 KiB pages: what Xen's Dom0 builder puts
/// in `start_info.nr_pages` (pv64 checks it with `pages=`).
pub const DOM0_MEM: &str = "32M";
/// [`DOM0_MEM`] in pages.
pub const DOM0_PAGES: u64 = 32 * 1024 * 1024 / 4096;

/// QEMU's CPU: everything TCG has but SMAP (see the module docs).
pub const QEMU_CPU: &str = "max,-smap";

/// How long one run may take (Xen boots in some seconds under TCG).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// How long to keep reading after the line that ends a run (for what follows it).
pub const GRACE: Duration = Duration::from_secs(1);

/// Xen's file name in the work directory (QEMU's `-kernel`).
pub const XEN_FILE: &str = "xen";

/// The serial log in the work directory.
pub const SERIAL_FILE: &str = "serial.log";

/// How Xen says the hardware domain ended (`hwdom_shutdown`,
/// `xen/common/shutdown.c`, Xen 4.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dom0End {
    /// `SHUTDOWN_poweroff`: `(XEN) Hardware Dom0 halted: halting machine`.
    Poweroff,
    /// `SHUTDOWN_reboot`: `(XEN) Hardware Dom0 shutdown: rebooting machine`.
    Reboot,
    /// `SHUTDOWN_crash`, asked for or imposed by Xen (a fault with no trap table,
    /// say): `(XEN) Hardware Dom0 crashed: ...`.
    Crash,
    /// Any other reason: `(XEN) Hardware Dom0 shutdown (unknown reason N): ...`.
    Other,
}

static DOM0_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\(XEN\) Hardware Dom0 (halted: |shutdown: |crashed: |shutdown \(unknown reason)")
        .unwrap_or_else(|e| panic!("bad Dom0-end regex: {e}"))
});

static XEN_PANIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\(XEN\) Panic on CPU").unwrap_or_else(|e| panic!("bad panic regex: {e}"))
});

/// The [`Dom0End`] a serial line announces, if it is Xen's line about Dom0's end.
pub fn dom0_end(line: &str) -> Option<Dom0End> {
    let caps = DOM0_END.captures(line)?;
    Some(match &caps[1] {
        "halted: " => Dom0End::Poweroff,
        "shutdown: " => Dom0End::Reboot,
        "crashed: " => Dom0End::Crash,
        _ => Dom0End::Other,
    })
}

/// A line Dom0 printed through `console_io` on Xen: exactly `text` (a literal),
/// bare (see the module docs).
pub fn dom0_line(text: &str) -> String {
    format!(r"^{}$", regex::escape(text))
}

/// One boot of a guest as Xen's Dom0, described builder-style.
#[derive(Clone, Debug)]
pub struct XenBoot {
    name: String,
    guest: PathBuf,
    guest_cmdline: String,
    xen_cmdline: String,
    timeout: Duration,
}

impl XenBoot {
    /// Boots `guest` with `guest_cmdline` on Xen with [`XEN_CMDLINE`] and
    /// [`TIMEOUT`]; `name` names the work directory (use the test's name).
    pub fn new(name: &str, guest: impl Into<PathBuf>, guest_cmdline: &str) -> XenBoot {
        XenBoot {
            name: name.to_string(),
            guest: guest.into(),
            guest_cmdline: guest_cmdline.to_string(),
            xen_cmdline: XEN_CMDLINE.to_string(),
            timeout: TIMEOUT,
        }
    }

    /// Replaces Xen's whole command line.
    pub fn xen_cmdline(mut self, cmdline: &str) -> XenBoot {
        self.xen_cmdline = cmdline.to_string();
        self
    }

    /// Sets the time limit.
    pub fn timeout(mut self, timeout: Duration) -> XenBoot {
        self.timeout = timeout;
        self
    }

    /// The guest's file name in the work directory (that of `guest`).
    fn guest_file(&self) -> String {
        self.guest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "guest.elf".to_string())
    }

    /// QEMU's arguments (not the program name), run in a work directory holding
    /// [`XEN_FILE`] and the guest under its own file name.
    pub fn qemu_args(&self) -> Result<Vec<String>, HarnessError> {
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-cpu",
            QEMU_CPU,
            "-smp",
            "1",
            "-m",
            "512M",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-serial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("file:{SERIAL_FILE}"));
        args.extend([
            "-kernel".to_string(),
            XEN_FILE.to_string(),
            "-append".to_string(),
            self.xen_cmdline.clone(),
        ]);
        let module = [(self.guest_file(), self.guest_cmdline.clone())];
        if let Some(initrd) = qemu::initrd_arg(&module)? {
            args.extend(["-initrd".to_string(), initrd]);
        }
        Ok(args)
    }

    /// Boots, for tests: panics with a clear message if the harness fails (Xen
    /// cannot be fetched, QEMU is missing, I/O errors). The guest misbehaving is
    /// not a panic here: check the returned [`XenRun`].
    pub fn run(&self) -> XenRun {
        self.try_run()
            .unwrap_or_else(|e| panic!("cannot boot Xen ({}): {e}", self.name))
    }

    /// Fetches Xen (unless cached), boots, watches serial until Dom0's end (see
    /// the module docs), and reaps QEMU.
    pub fn try_run(&self) -> Result<XenRun, HarnessError> {
        let xen = bench::fetch_xen().map_err(|e| match e {
            BenchError::Harness(h) => h,
            other => HarnessError::Io {
                what: "fetching Xen".to_string(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        if !self.guest.is_file() {
            return Err(HarnessError::Io {
                what: format!("reading the guest {}", self.guest.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not built (cargo xtask build)",
                ),
            });
        }
        let work = workdir::create(&format!("xen-{}", self.name))?;
        bench::copy_into(&work, &xen.image, XEN_FILE)?;
        bench::copy_into(&work, &self.guest, &self.guest_file())?;
        let args = self.qemu_args()?;
        let (child, start, command_line) = bench::spawn_qemu(&work, &args)?;
        let mut watch = Watch {
            start,
            stop_at: None,
            dom0_end: None,
        };
        let s = run::supervise(child, &work.join(SERIAL_FILE), self.timeout, &mut watch)?;
        let serial = serial::clean(&s.raw);
        Ok(XenRun {
            xen_version: bench::Hypervisor::Xen.version(&serial),
            xen_package: format!("{} {}", xen.package, xen.version),
            dom0_end: watch.dom0_end,
            serial,
            status: s.status,
            timed_out: s.timed_out,
            elapsed: start.elapsed(),
            timeout: self.timeout,
            work_dir: work,
            command_line,
        })
    }
}

/// Decides when a run is over (see the module docs).
struct Watch {
    start: Instant,
    stop_at: Option<Duration>,
    dom0_end: Option<Dom0End>,
}

impl Supervision for Watch {
    fn line(&mut self, line: &str) {
        let line = line.trim_end_matches('\r');
        let end = dom0_end(line);
        if end.is_some() && self.dom0_end.is_none() {
            self.dom0_end = end;
        }
        if (end.is_some() || XEN_PANIC.is_match(line)) && self.stop_at.is_none() {
            self.stop_at = Some(self.start.elapsed() + GRACE);
        }
    }

    fn over(&mut self) -> bool {
        self.stop_at.is_some_and(|at| self.start.elapsed() >= at)
    }
}

/// What one boot on Xen produced.
#[derive(Clone, Debug)]
pub struct XenRun {
    /// Everything on COM1 (cleaned by [`serial::clean`]).
    pub serial: String,
    /// Xen's version from its banner (`4.17.7`).
    pub xen_version: Option<String>,
    /// The Debian package and version Xen came from.
    pub xen_package: String,
    /// How Xen said Dom0 ended, if it did.
    pub dom0_end: Option<Dom0End>,
    /// QEMU's exit status (after our kill, if it did not exit by itself).
    pub status: ExitStatus,
    /// Whether the run hit its time limit.
    pub timed_out: bool,
    /// Wall time from starting QEMU to its end.
    pub elapsed: Duration,
    /// The time limit.
    pub timeout: Duration,
    /// The work directory: Xen, the guest, serial.log, emulator.out, command.txt.
    pub work_dir: PathBuf,
    /// The QEMU command line, runnable in `work_dir`.
    pub command_line: String,
}

fn compile(re: &str) -> Regex {
    Regex::new(re).unwrap_or_else(|e| panic!("bad regular expression in a test: {re:?}: {e}"))
}

impl XenRun {
    /// The lines that are not Xen's own (`(XEN) `): what Dom0 printed.
    pub fn dom0_lines(&self) -> impl Iterator<Item = &str> {
        self.serial.lines().filter(|l| !l.starts_with("(XEN)"))
    }

    /// The capture groups of the first serial line matching `re`, if any.
    pub fn first_match(&self, re: &str) -> Option<regex::Captures<'_>> {
        let re = compile(re);
        self.serial.lines().find_map(|l| re.captures(l))
    }

    /// Panics (with the report) unless some line matches `re`; returns the first
    /// match's captures.
    #[track_caller]
    pub fn assert_line(&self, re: &str) -> regex::Captures<'_> {
        match self.first_match(re) {
            Some(caps) => caps,
            None => panic!("no serial line matches {re:?}\n{}", self.report()),
        }
    }

    /// Panics (with the report) if any line matches `re`.
    #[track_caller]
    pub fn assert_no_line(&self, re: &str) {
        let re_c = compile(re);
        let hits: Vec<&str> = self.serial.lines().filter(|l| re_c.is_match(l)).collect();
        if !hits.is_empty() {
            panic!(
                "serial line(s) match {re:?} but should not: {hits:?}\n{}",
                self.report()
            );
        }
    }

    /// Panics unless every one of `lines` (regexes) matches some line; lists all
    /// the missing ones at once.
    #[track_caller]
    pub fn assert_lines(&self, lines: &[String]) {
        let missing: Vec<&str> = lines
            .iter()
            .filter(|re| self.first_match(re).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            panic!(
                "{} expected line(s) missing:\n  {}\n{}",
                missing.len(),
                missing.join("\n  "),
                self.report()
            );
        }
    }

    /// Panics unless Xen said Dom0 ended as `end`.
    #[track_caller]
    pub fn assert_dom0_end(&self, end: Dom0End) {
        if self.dom0_end != Some(end) {
            panic!(
                "expected Xen to report Dom0's end as {end:?}, got {:?}{}\n{}",
                self.dom0_end,
                if self.timed_out { " (timed out)" } else { "" },
                self.report()
            );
        }
    }

    /// The work directory's `emulator.out`, last lines.
    pub fn emulator_output_tail(&self) -> String {
        let text = std::fs::read_to_string(self.work_dir.join("emulator.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// A human-readable account: Xen, how the run ended, its files, the serial log.
    pub fn report(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(
            r,
            "---- Xen {} ({}) with a guest as Dom0, under QEMU ----",
            self.xen_version.as_deref().unwrap_or("(no banner)"),
            self.xen_package
        );
        let _ = writeln!(
            r,
            "Dom0 end: {:?}; QEMU: {}{}; elapsed {:.1} s (limit {} s)",
            self.dom0_end,
            self.status,
            if self.timed_out { ", timed out" } else { "" },
            self.elapsed.as_secs_f64(),
            self.timeout.as_secs()
        );
        let _ = writeln!(r, "work directory: {}", self.work_dir.display());
        let _ = writeln!(r, "command: {}", self.command_line);
        let tail = self.emulator_output_tail();
        if !tail.trim().is_empty() {
            let _ = writeln!(r, "---- emulator output (last lines) ----\n{tail}");
        }
        let _ = writeln!(r, "---- serial ----");
        r.push_str(&self.serial);
        if !self.serial.ends_with('\n') {
            r.push('\n');
        }
        r.push_str("---- end of serial ----");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dom0_end_lines() {
        assert_eq!(
            dom0_end("(XEN) Hardware Dom0 halted: halting machine"),
            Some(Dom0End::Poweroff)
        );
        assert_eq!(
            dom0_end("(XEN) Hardware Dom0 shutdown: rebooting machine"),
            Some(Dom0End::Reboot)
        );
        assert_eq!(
            dom0_end("(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds."),
            Some(Dom0End::Crash)
        );
        assert_eq!(
            dom0_end("(XEN) Hardware Dom0 shutdown (unknown reason 9): rebooting machine"),
            Some(Dom0End::Other)
        );
        assert_eq!(dom0_end("Hardware Dom0 halted: halting machine"), None);
        assert_eq!(dom0_end("(XEN) Hardware Dom1 halted: x"), None);
    }

    #[test]
    fn dom0_lines_are_bare_and_literal() {
        let re = compile(&dom0_line("hello from pv64"));
        assert!(re.is_match("hello from pv64"));
        assert!(!re.is_match("(d0) hello from pv64"));
        assert!(!re.is_match("hello from pv64, again"));
        assert!(compile(&dom0_line("nr_pages: ok")).is_match("nr_pages: ok"));
    }

    #[test]
    fn qemu_arguments() {
        let boot = XenBoot::new("t", "/g/pv64.elf", "mode=hello pages=8192");
        let args = boot.qemu_args().expect("representable");
        let line = args.join(" ");
        assert!(
            line.starts_with("-accel tcg -cpu max,-smap -smp 1 -m 512M"),
            "{line}"
        );
        assert!(
            line.contains("-no-reboot -serial file:serial.log"),
            "{line}"
        );
        let tail: Vec<&str> = args
            .iter()
            .rev()
            .take(6)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "-kernel",
                "xen",
                "-append",
                XEN_CMDLINE,
                "-initrd",
                "pv64.elf mode=hello pages=8192"
            ]
        );
        let comma = XenBoot::new("t", "/g/pv64.elf", "a,b");
        assert!(
            comma.qemu_args().is_err(),
            "QEMU's -initrd splits at commas"
        );
        assert_eq!(DOM0_PAGES, 8192);
        assert!(XEN_CMDLINE.contains(&format!("dom0_mem={DOM0_MEM}")));
    }

    #[test]
    fn the_watch_stops_a_grace_after_dom0_ends() {
        let mut w = Watch {
            start: Instant::now(),
            stop_at: None,
            dom0_end: None,
        };
        w.line("(XEN) Freed 656kB init memory\r");
        assert!(!w.over() && w.stop_at.is_none());
        w.line("(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.\r");
        assert_eq!(w.dom0_end, Some(Dom0End::Crash));
        assert!(w.stop_at.is_some());
        w.line("(XEN) Hardware Dom0 halted: halting machine");
        assert_eq!(w.dom0_end, Some(Dom0End::Crash), "the first end counts");

        let mut p = Watch {
            start: Instant::now(),
            stop_at: None,
            dom0_end: None,
        };
        p.line("(XEN) Panic on CPU 0:");
        assert!(p.stop_at.is_some() && p.dom0_end.is_none());
    }
}
