//! Booting keel once: [`Boot`] describes the boot, [`RunResult`] is what came out.
//!
//! A boot gets its own work directory (see [`crate::workdir`]) holding everything it
//! made and everything the emulator wrote: `keel.iso`, `bochsrc`, `serial.log`,
//! `bochs.log`, `emulator.out` (the emulator's own stdout and stderr),
//! `command.txt` (the command line, to rerun it by hand) and `domu/`, the xl.cfg
//! files of the domUs given as text ([`Boot::domu`]).
//!
//! The emulator runs with its serial port going to a file, which the harness tails
//! while waiting (to show it live, for `cargo xtask run`) and reads once more after
//! the process is gone: output is never lost to a kill or a pipe buffer. Every run is
//! bounded by a timeout, after which the emulator is killed (it spawns no children,
//! so killing its pid stops it).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::bochs::{self, BOCHS};
use crate::iso::{self, Module};
use crate::outcome::{self, Outcome};
use crate::qemu::{self, QEMU, QemuBoot};
use crate::serial::{self, LineSplitter};
use crate::{Backend, HarnessError, workdir};

/// How long a QEMU boot may take by default (a healthy one takes a few seconds).
pub const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a Bochs boot may take by default (a healthy one takes 5-20 s).
pub const BOCHS_TIMEOUT: Duration = Duration::from_secs(150);

const SERIAL_FILE: &str = "serial.log";
const BOCHS_LOG: &str = "bochs.log";
const ISO_FILE: &str = "keel.iso";
const POLL: Duration = Duration::from_millis(20);

/// Who loads keel into memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// GRUB from an ISO, multiboot2: what real machines do. Every backend.
    Grub,
    /// QEMU's `-kernel` multiboot (v1) loader. QEMU backends only.
    QemuDirect,
}

/// One boot of keel, described builder-style.
///
/// ```no_run
/// use keel_tests::{Backend, Boot};
/// let run = Boot::new("banner", Backend::QemuSvm).run();
/// run.assert_line(r"^\(KEEL\) keel \d+\.\d+\.\d+ ");
/// run.assert_powered_off_cleanly();
/// ```
#[derive(Clone, Debug)]
pub struct Boot {
    name: String,
    backend: Backend,
    loader: Loader,
    elf: Option<PathBuf>,
    cmdline: String,
    modules: Vec<BootModule>,
    timeout: Duration,
    cpus: u32,
}

/// A module as the builder was told about it: a file, or a domU config that is
/// written into the work directory when the boot runs.
#[derive(Clone, Debug)]
enum BootModule {
    File(Module),
    DomuConfig {
        /// The module's name, ending in `.cfg`.
        name: String,
        /// The xl.cfg text.
        text: String,
    },
}

impl Boot {
    /// A GRUB boot of keel (`$KEEL_ELF` or `target/keel/keel.elf`) on `backend` with
    /// [`crate::default_cmdline`], no modules and the backend's default timeout.
    /// `name` names the work directory (use the test's name).
    pub fn new(name: &str, backend: Backend) -> Boot {
        Boot {
            name: name.to_string(),
            backend,
            loader: Loader::Grub,
            elf: None,
            cmdline: crate::default_cmdline(backend),
            modules: Vec::new(),
            timeout: if backend.is_qemu() {
                QEMU_TIMEOUT
            } else {
                BOCHS_TIMEOUT
            },
            cpus: backend.default_cpus(),
        }
    }

    /// Gives the machine `cpus` CPUs instead of the backend's default
    /// ([`Backend::default_cpus`]).
    pub fn cpus(mut self, cpus: u32) -> Boot {
        self.cpus = cpus.max(1);
        self
    }

    /// How many CPUs the machine has.
    pub fn nr_cpus(&self) -> u32 {
        self.cpus
    }

    /// Uses `loader` instead of GRUB.
    pub fn loader(mut self, loader: Loader) -> Boot {
        self.loader = loader;
        self
    }

    /// Boots this ELF instead of the default one.
    pub fn elf(mut self, path: impl Into<PathBuf>) -> Boot {
        self.elf = Some(path.into());
        self
    }

    /// Replaces keel's whole command line.
    pub fn cmdline(mut self, cmdline: &str) -> Boot {
        self.cmdline = cmdline.to_string();
        self
    }

    /// Appends options to keel's command line.
    pub fn extra_cmdline(mut self, extra: &str) -> Boot {
        self.cmdline = crate::join_cmdline(&self.cmdline, extra);
        self
    }

    /// Adds a multiboot module (module 0 is the first one added), named after its
    /// file (see [`iso::layout`]).
    pub fn module(mut self, path: impl Into<PathBuf>, args: &str) -> Boot {
        self.modules.push(BootModule::File(Module::new(path, args)));
        self
    }

    /// Adds a multiboot module named `name` (what an xl.cfg `kernel = "..."` refers
    /// to), whatever its file is called; e.g. the same kernel file once as dom0 and
    /// once, under another name, as a domU's kernel. `name` is checked when the boot
    /// runs ([`iso::check_module_name`]).
    pub fn module_as(mut self, path: impl Into<PathBuf>, name: &str, args: &str) -> Boot {
        self.modules
            .push(BootModule::File(Module::named(path, name, args)));
        self
    }

    /// Adds several modules.
    pub fn modules(mut self, modules: impl IntoIterator<Item = Module>) -> Boot {
        self.modules
            .extend(modules.into_iter().map(BootModule::File));
        self
    }

    /// Adds a domU: `config_text` (xl.cfg(5) syntax) becomes the module
    /// `<name>.cfg` (`name` may already end in `.cfg`), written to `domu/` in the
    /// boot's work directory when it runs. Its `kernel`/`ramdisk` name other modules,
    /// added with [`Boot::module`] (by file name) or [`Boot::module_as`].
    ///
    /// keel builds a domU from each `.cfg` module; dom0 is the first module that is
    /// neither a config nor named by one (none if there is no such module).
    pub fn domu(mut self, name: &str, config_text: &str) -> Boot {
        let name = if name.ends_with(".cfg") {
            name.to_string()
        } else {
            format!("{name}.cfg")
        };
        self.modules.push(BootModule::DomuConfig {
            name,
            text: config_text.to_string(),
        });
        self
    }

    /// Sets the time limit for the emulator (not counting building the ISO).
    pub fn timeout(mut self, timeout: Duration) -> Boot {
        self.timeout = timeout;
        self
    }

    /// The backend this boot runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// keel's command line as it will be passed.
    pub fn keel_cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The modules as files: domU configs are written to `<work>/domu/<name>.cfg`.
    /// Two configs with one name would overwrite each other and are refused.
    fn materialize_modules(&self, work: &Path) -> Result<Vec<Module>, HarnessError> {
        let dir = work.join("domu");
        let mut written: Vec<&str> = Vec::new();
        let mut modules = Vec::with_capacity(self.modules.len());
        for m in &self.modules {
            match m {
                BootModule::File(m) => modules.push(m.clone()),
                BootModule::DomuConfig { name, text } => {
                    iso::check_module_name(name)?;
                    if written.contains(&name.as_str()) {
                        return Err(HarnessError::Unrepresentable {
                            context: "a second domU config of the same name",
                            value: name.clone(),
                        });
                    }
                    std::fs::create_dir_all(&dir)
                        .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
                    let path = dir.join(name);
                    write(&path, text)?;
                    written.push(name);
                    modules.push(Module::named(path, name.clone(), ""));
                }
            }
        }
        Ok(modules)
    }

    /// Boots, for tests: panics with a clear message if the harness itself fails
    /// (missing keel.elf or tools, I/O errors). keel misbehaving is not a panic here:
    /// check the returned [`RunResult`].
    pub fn run(&self) -> RunResult {
        self.try_run(None)
            .unwrap_or_else(|e| panic!("cannot boot keel ({} on {}): {e}", self.name, self.backend))
    }

    /// Boots, calling `on_serial` with each line of serial output as it arrives.
    ///
    /// An emulator that dies from a signal at start-up, before keel could print
    /// anything, is retried once: that is the emulator failing (a CI run once saw
    /// Bochs killed 0.1 s in, never reproduced), not keel. The first attempt's work
    /// directory is kept and named on stderr.
    pub fn try_run(
        &self,
        mut on_serial: Option<&mut dyn FnMut(&str)>,
    ) -> Result<RunResult, HarnessError> {
        let first = self.try_run_once(on_serial.as_deref_mut())?;
        if !first.died_at_start_up() {
            return Ok(first);
        }
        eprintln!(
            "harness: {} died at start-up ({}) with no serial output; retrying once. \
             First attempt: {}\n{}",
            self.backend,
            first.exit_description(),
            first.work_dir.display(),
            first.emulator_output_tail()
        );
        self.try_run_once(on_serial)
    }

    fn try_run_once(
        &self,
        on_serial: Option<&mut (dyn FnMut(&str) + '_)>,
    ) -> Result<RunResult, HarnessError> {
        let elf = match &self.elf {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => return Err(HarnessError::KeelElfMissing(p.clone())),
            None => crate::try_keel_elf()?,
        };
        // QEMU runs in the work directory; give it an absolute ELF path.
        let elf = std::fs::canonicalize(&elf)
            .map_err(HarnessError::io(format!("resolving {}", elf.display())))?;
        if self.loader == Loader::QemuDirect && !self.backend.is_qemu() {
            return Err(HarnessError::DirectBootUnsupported(self.backend));
        }
        let work = workdir::create(&format!("{}-{}", self.name, self.backend))?;
        let modules = self.materialize_modules(&work)?;

        let mut cmd = match (self.backend, self.loader) {
            (Backend::QemuSvm | Backend::QemuNoHvm, Loader::Grub) => {
                iso::build_iso(&work, &elf, &self.cmdline, &modules)?;
                let mut cmd = Command::new(QEMU);
                cmd.args(qemu::qemu_args(
                    &QemuBoot::Iso(ISO_FILE),
                    SERIAL_FILE,
                    self.cpus,
                    self.backend.qemu_cpu().unwrap_or("max"),
                )?);
                cmd
            }
            (Backend::QemuSvm | Backend::QemuNoHvm, Loader::QemuDirect) => {
                let pairs = copy_direct_modules(&work, &modules)?;
                let boot = QemuBoot::Direct {
                    elf: &elf,
                    cmdline: &self.cmdline,
                    modules: &pairs,
                };
                let mut cmd = Command::new(QEMU);
                cmd.args(qemu::qemu_args(
                    &boot,
                    SERIAL_FILE,
                    self.cpus,
                    self.backend.qemu_cpu().unwrap_or("max"),
                )?);
                cmd
            }
            (Backend::BochsVmx | Backend::BochsSvm | Backend::BochsVmxNoEpt, _) => {
                iso::build_iso(&work, &elf, &self.cmdline, &modules)?;
                // Every Bochs backend names its CPU model; the fallback is never used.
                let model = self.backend.bochs_cpu_model().unwrap_or("corei7_skylake_x");
                write(
                    &work.join("bochsrc"),
                    &bochs::bochsrc(model, self.cpus, ISO_FILE, SERIAL_FILE, BOCHS_LOG),
                )?;
                write(&work.join("bochs.rc"), bochs::BOCHS_RC)?;
                let mut cmd = Command::new(BOCHS);
                cmd.args(["-q", "-f", "bochsrc", "-rc", "bochs.rc"]);
                cmd
            }
        };
        write(
            &work.join("command.txt"),
            &format!("cd {} && {:?}\n", work.display(), cmd),
        )?;

        let package = if self.backend.is_qemu() {
            "qemu-system-x86"
        } else {
            "bochs"
        };
        let program = if self.backend.is_qemu() { QEMU } else { BOCHS };
        let out_path = work.join("emulator.out");
        let out = File::create(&out_path)
            .map_err(HarnessError::io(format!("creating {}", out_path.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io("duplicating a file handle"))?;
        cmd.current_dir(&work)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);

        let start = Instant::now();
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            program: program.to_string(),
            package,
            source,
        })?;
        let Supervised {
            status,
            timed_out,
            raw,
            ..
        } = supervise(
            child,
            &work.join(SERIAL_FILE),
            self.timeout,
            &mut Lines(on_serial),
        )?;
        Ok(RunResult {
            backend: self.backend,
            loader: self.loader,
            serial: serial::clean(&raw),
            exit_code: status.code(),
            signal: status.signal(),
            timed_out,
            elapsed: start.elapsed(),
            timeout: self.timeout,
            work_dir: work.clone(),
            bochs_log: self.backend.is_bochs().then(|| work.join(BOCHS_LOG)),
        })
    }
}

/// For QEMU's `-kernel`: copies each module to `<work>/<its name>` (QEMU's module
/// string starts with the path it was given, so the file must carry the module's
/// name) and returns `(name, args)` per module. Modules sharing a name share the
/// copy; two different files under one name cannot be represented.
fn copy_direct_modules(
    work: &Path,
    modules: &[Module],
) -> Result<Vec<(String, String)>, HarnessError> {
    let names = iso::module_names(modules)?;
    let mut copied: Vec<(&str, PathBuf)> = Vec::new();
    for (m, name) in modules.iter().zip(&names) {
        let key = std::fs::canonicalize(&m.path).unwrap_or_else(|_| m.path.clone());
        match copied.iter().find(|(n, _)| n == name) {
            Some((_, k)) if *k == key => continue,
            Some(_) => {
                return Err(HarnessError::Unrepresentable {
                    context: "QEMU's -initrd list (two different files under one module name)",
                    value: name.clone(),
                });
            }
            None => {}
        }
        let dest = work.join(name);
        if dest != key {
            std::fs::copy(&m.path, &dest).map_err(HarnessError::io(format!(
                "copying module {} to {}",
                m.path.display(),
                work.display()
            )))?;
        }
        copied.push((name, key));
    }
    Ok(names
        .into_iter()
        .zip(modules.iter().map(|m| m.args.clone()))
        .collect())
}

fn write(path: &Path, contents: &str) -> Result<(), HarnessError> {
    std::fs::write(path, contents).map_err(HarnessError::io(format!("writing {}", path.display())))
}

/// What [`supervise`] reports while an emulator runs, and asks it.
pub trait Supervision {
    /// One complete serial line, as it arrives (`\r` kept; see [`LineSplitter`]).
    fn line(&mut self, line: &str);
    /// Asked at every poll: whether the run is over although the emulator still
    /// runs (e.g. a hypervisor that halts instead of powering off). It is then
    /// killed, and [`Supervised::stopped`] says so.
    fn over(&mut self) -> bool {
        false
    }
}

/// A [`Supervision`] that only passes lines on, if anyone wants them.
struct Lines<'a, 'f>(Option<&'a mut (dyn FnMut(&str) + 'f)>);

impl Supervision for Lines<'_, '_> {
    fn line(&mut self, line: &str) {
        if let Some(sink) = self.0.as_deref_mut() {
            sink(line);
        }
    }
}

/// How a supervised emulator ended.
#[derive(Debug)]
pub struct Supervised {
    /// Its exit status (after our kill, if we killed it).
    pub status: ExitStatus,
    /// Killed at the time limit.
    pub timed_out: bool,
    /// Killed because the [`Supervision`] said the run was over.
    pub stopped: bool,
    /// Every serial byte.
    pub raw: Vec<u8>,
}

/// Waits for `child` while tailing `serial_path` every [`POLL`], feeding lines to
/// `watch`; kills it after `timeout` or once `watch` says the run is over. Every
/// way out, errors included, kills (if still running) and reaps the child.
pub fn supervise(
    mut child: Child,
    serial_path: &Path,
    timeout: Duration,
    watch: &mut dyn Supervision,
) -> Result<Supervised, HarnessError> {
    let start = Instant::now();
    let mut raw = Vec::new();
    let mut serial_file: Option<File> = None;
    let mut splitter = LineSplitter::default();
    let (mut timed_out, mut stopped) = (false, false);

    let mut pump = |raw: &mut Vec<u8>, watch: &mut dyn Supervision| {
        if serial_file.is_none() {
            // The emulator creates the file when it starts; until then there is nothing.
            serial_file = File::open(serial_path).ok();
        }
        if let Some(f) = serial_file.as_mut() {
            let before = raw.len();
            // A read error mid-run is retried on the next poll; the final read reports it.
            let _ = f.read_to_end(raw);
            splitter.push(&raw[before..], &mut |l| watch.line(l));
        }
    };

    let waited = loop {
        pump(&mut raw, watch);
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Err(e) => break Err(HarnessError::io("waiting for the emulator")(e)),
            Ok(None) if watch.over() => stopped = true,
            Ok(None) if start.elapsed() >= timeout => timed_out = true,
            Ok(None) => {
                std::thread::sleep(POLL);
                continue;
            }
        }
        // kill() fails only if the process already exited; wait() reaps it either way.
        let _ = child.kill();
        break child
            .wait()
            .map_err(HarnessError::io("waiting for the killed emulator"));
    };
    let status = waited?;
    pump(&mut raw, watch);
    splitter.finish(&mut |l| watch.line(l));
    if serial_file.is_none() && serial_path.exists() {
        raw = std::fs::read(serial_path).map_err(HarnessError::io(format!(
            "reading {}",
            serial_path.display()
        )))?;
    }
    Ok(Supervised {
        status,
        timed_out,
        stopped,
        raw,
    })
}

/// What one boot produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The backend it ran on.
    pub backend: Backend,
    /// Who loaded keel.
    pub loader: Loader,
    /// Everything on COM1, `\r` and terminal escape sequences removed
    /// (see [`crate::serial`]).
    pub serial: String,
    /// The emulator's exit status; `None` if it was killed (e.g. on timeout).
    pub exit_code: Option<i32>,
    /// The signal that ended the emulator, if one did.
    pub signal: Option<i32>,
    /// Whether the run hit its time limit.
    pub timed_out: bool,
    /// Wall time from starting the emulator to its exit.
    pub elapsed: Duration,
    /// The time limit it ran under.
    pub timeout: Duration,
    /// The boot's work directory (ISO, logs, command line).
    pub work_dir: PathBuf,
    /// Bochs's own log, for Bochs runs.
    pub bochs_log: Option<PathBuf>,
}

fn compile(re: &str) -> Regex {
    Regex::new(re).unwrap_or_else(|e| panic!("bad regular expression in a test: {re:?}: {e}"))
}

impl RunResult {
    /// The emulator died from a signal quickly, on its own, before any serial output.
    fn died_at_start_up(&self) -> bool {
        self.signal.is_some()
            && !self.timed_out
            && self.serial.trim().is_empty()
            && self.elapsed < Duration::from_secs(3)
    }

    /// How the emulator process ended: "status N", "signal N" or "killed".
    pub fn exit_description(&self) -> String {
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("status {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "killed".to_string(),
        }
    }

    /// The last lines the emulator printed on stdout/stderr.
    pub fn emulator_output_tail(&self) -> String {
        let text = std::fs::read_to_string(self.work_dir.join("emulator.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// How the run ended.
    pub fn outcome(&self) -> Outcome {
        outcome::judge(self.backend, self.exit_code, self.timed_out, &self.serial)
    }

    /// Whether keel powered the machine off cleanly (see [`crate::outcome`]).
    pub fn powered_off_cleanly(&self) -> bool {
        self.outcome().is_clean()
    }

    /// Serial lines matching `re` (matched per line, so `^` and `$` anchor to lines).
    pub fn lines_matching(&self, re: &str) -> Vec<&str> {
        let re = compile(re);
        self.serial.lines().filter(|l| re.is_match(l)).collect()
    }

    /// The capture groups of the first line matching `re`, if any.
    pub fn first_match(&self, re: &str) -> Option<regex::Captures<'_>> {
        let re = compile(re);
        self.serial.lines().find_map(|l| re.captures(l))
    }

    /// Panics (with the whole serial log) unless some line matches `re`; returns the
    /// first matching line's captures.
    #[track_caller]
    pub fn assert_line(&self, re: &str) -> regex::Captures<'_> {
        match self.first_match(re) {
            Some(caps) => caps,
            None => panic!("no serial line matches {re:?}\n{}", self.report()),
        }
    }

    /// Panics (with the whole serial log) if any line matches `re`.
    #[track_caller]
    pub fn assert_no_line(&self, re: &str) {
        let hits = self.lines_matching(re);
        if !hits.is_empty() {
            panic!(
                "serial line(s) match {re:?} but should not: {hits:?}\n{}",
                self.report()
            );
        }
    }

    /// Panics (with the whole serial log) unless keel powered off cleanly.
    #[track_caller]
    pub fn assert_powered_off_cleanly(&self) {
        let outcome = self.outcome();
        if !outcome.is_clean() {
            panic!(
                "expected a clean power-off, got: {outcome}\n{}",
                self.report()
            );
        }
    }

    /// A human-readable account of the run: how it ended, where its files are, and
    /// the whole serial log.
    pub fn report(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(
            r,
            "---- keel on {} ({:?} loader) ----",
            self.backend, self.loader
        );
        let _ = writeln!(
            r,
            "outcome: {}; emulator exit: {}; elapsed {:.1} s (limit {} s)",
            self.outcome(),
            self.exit_description(),
            self.elapsed.as_secs_f64(),
            self.timeout.as_secs()
        );
        let _ = writeln!(r, "work directory: {}", self.work_dir.display());
        if let Some(log) = &self.bochs_log {
            let _ = writeln!(r, "bochs log: {}", log.display());
        }
        if !self.outcome().is_clean() {
            let _ = writeln!(r, "---- emulator output (last lines) ----");
            let _ = writeln!(r, "{}", self.emulator_output_tail());
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

    fn result(backend: Backend, exit_code: Option<i32>, serial: &str) -> RunResult {
        RunResult {
            backend,
            loader: Loader::Grub,
            serial: serial.to_string(),
            exit_code,
            signal: None,
            timed_out: false,
            elapsed: Duration::from_millis(1500),
            timeout: QEMU_TIMEOUT,
            work_dir: PathBuf::from("/nonexistent"),
            bochs_log: None,
        }
    }

    #[test]
    fn only_a_quick_silent_signal_death_counts_as_a_start_up_failure() {
        let mut r = result(Backend::BochsSvm, None, "");
        r.signal = Some(9);
        r.elapsed = Duration::from_millis(100);
        assert!(r.died_at_start_up());
        assert_eq!(r.exit_description(), "signal 9");
        let mut printed = r.clone();
        printed.serial = "  Booting `keel'\n".to_string();
        assert!(
            !printed.died_at_start_up(),
            "output means the emulator did start"
        );
        let mut slow = r.clone();
        slow.elapsed = Duration::from_secs(10);
        assert!(!slow.died_at_start_up());
        let mut timed_out = r.clone();
        timed_out.timed_out = true;
        assert!(
            !timed_out.died_at_start_up(),
            "our own kill is not a start-up failure"
        );
        let exited = result(Backend::BochsSvm, Some(1), "");
        assert!(!exited.died_at_start_up());
    }

    const LOG: &str = "  Booting `keel'\n(KEEL) keel 0.1.0 (x)\n(KEEL) ACPI: 1 CPU(s), LAPIC at 0xfee00000, 1 IOAPIC(s)\n(KEEL) Powering off\n";

    #[test]
    fn line_matching_is_per_line() {
        let r = result(Backend::QemuSvm, Some(0), LOG);
        assert_eq!(
            r.lines_matching(r"^\(KEEL\) "),
            LOG.lines().skip(1).collect::<Vec<_>>()
        );
        let caps = r.assert_line(r"^\(KEEL\) ACPI: (\d+) CPU\(s\)");
        assert_eq!(&caps[1], "1");
        r.assert_no_line(r"^\(KEEL\) FATAL: ");
        assert!(r.powered_off_cleanly());
    }

    #[test]
    #[should_panic(expected = "no serial line matches")]
    fn assert_line_panics_with_the_log() {
        result(Backend::QemuSvm, Some(0), LOG).assert_line("^nope$");
    }

    #[test]
    fn report_shows_outcome_and_serial() {
        let r = result(Backend::QemuSvm, Some(3), "(KEEL) FATAL: boom\n");
        let text = r.report();
        assert!(
            text.contains("keel reported a failure: (KEEL) FATAL: boom"),
            "{text}"
        );
        assert!(
            text.contains("---- serial ----\n(KEEL) FATAL: boom\n---- end of serial ----"),
            "{text}"
        );
    }

    /// Runs `script` under `sh` in a scratch directory as if it were an emulator.
    fn supervise_script(
        script: &str,
        timeout: Duration,
    ) -> (Option<i32>, bool, Vec<u8>, Vec<String>) {
        let dir = std::env::temp_dir().join(format!(
            "keel-supervise-{}-{}",
            std::process::id(),
            script.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let child = Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .spawn()
            .expect("sh runs");
        let mut lines = Vec::new();
        let mut sink = |l: &str| lines.push(l.to_string());
        let s = supervise(
            child,
            &dir.join(SERIAL_FILE),
            timeout,
            &mut Lines(Some(&mut sink)),
        )
        .expect("supervise");
        std::fs::remove_dir_all(&dir).expect("clean up");
        (s.status.code(), s.timed_out, s.raw, lines)
    }

    #[test]
    fn supervise_collects_serial_and_exit_code() {
        let (code, timed_out, raw, lines) = supervise_script(
            "printf '(KEEL) a\\r\\n(KEEL) b' > serial.log; exit 3",
            Duration::from_secs(20),
        );
        assert_eq!((code, timed_out), (Some(3), false));
        assert_eq!(raw, b"(KEEL) a\r\n(KEEL) b");
        assert_eq!(lines, ["(KEEL) a", "(KEEL) b"]);
    }

    #[test]
    fn supervise_kills_on_timeout_and_keeps_serial() {
        let start = Instant::now();
        let (code, timed_out, raw, _) = supervise_script(
            "echo '(KEEL) stuck' > serial.log; exec sleep 30",
            Duration::from_millis(300),
        );
        assert!(timed_out && code.is_none(), "{code:?} {timed_out}");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(raw, b"(KEEL) stuck\n");
    }

    /// A scratch directory of this test process (removed by the caller).
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn domu_configs_become_named_modules_in_order() {
        let work = scratch("domu");
        let boot = Boot::new("domu", Backend::QemuSvm)
            .module("/k/pvh64.elf", "mode=probe")
            .domu("d1", "kernel = \"pvh64.elf\"\n")
            .module_as("/k/pvh64.elf", "d2-kernel.elf", "")
            .domu("d2.cfg", "kernel = \"d2-kernel.elf\"\n");
        let modules = boot.materialize_modules(&work).expect("written");
        let d1 = work.join("domu").join("d1.cfg");
        let d2 = work.join("domu").join("d2.cfg");
        assert_eq!(
            modules,
            [
                Module::new("/k/pvh64.elf", "mode=probe"),
                Module::named(&d1, "d1.cfg", ""),
                Module::named("/k/pvh64.elf", "d2-kernel.elf", ""),
                Module::named(&d2, "d2.cfg", ""),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&d1).expect("d1.cfg"),
            "kernel = \"pvh64.elf\"\n"
        );
        assert_eq!(
            iso::module_names(&modules).expect("valid"),
            ["pvh64.elf", "d1.cfg", "d2-kernel.elf", "d2.cfg"]
        );
        let twice = Boot::new("twice", Backend::QemuSvm)
            .domu("d1", "")
            .domu("d1.cfg", "");
        assert!(twice.materialize_modules(&work).is_err());
        let bad = Boot::new("bad", Backend::QemuSvm).domu("a b", "");
        assert!(bad.materialize_modules(&work).is_err());
        std::fs::remove_dir_all(&work).expect("clean up");
    }

    #[test]
    fn direct_modules_are_copied_once_per_name() {
        let dir = scratch("direct");
        let src = dir.join("src");
        let work = dir.join("work");
        std::fs::create_dir_all(&src).expect("src");
        std::fs::create_dir_all(&work).expect("work");
        let kernel = src.join("pvh64.elf");
        let cfg = src.join("d1.cfg");
        std::fs::write(&kernel, b"kernel").expect("kernel");
        std::fs::write(&cfg, b"kernel = \"k.elf\"\n").expect("cfg");
        let mods = [
            Module::new(&kernel, "mode=probe"),
            Module::new(&cfg, ""),
            Module::named(&kernel, "k.elf", ""),
            Module::new(&kernel, ""),
        ];
        let pairs = copy_direct_modules(&work, &mods).expect("copied");
        assert_eq!(
            pairs,
            [
                ("pvh64.elf".to_string(), "mode=probe".to_string()),
                ("d1.cfg".to_string(), String::new()),
                ("k.elf".to_string(), String::new()),
                ("pvh64.elf".to_string(), String::new()),
            ]
        );
        for name in ["pvh64.elf", "d1.cfg", "k.elf"] {
            assert!(work.join(name).is_file(), "{name}");
        }
        let other = src.join("other.elf");
        std::fs::write(&other, b"other").expect("other");
        let clash = [
            Module::named(&kernel, "k.elf", ""),
            Module::named(&other, "k.elf", ""),
        ];
        assert!(copy_direct_modules(&work, &clash).is_err());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn direct_boot_is_refused_on_bochs() {
        let elf = std::env::current_exe().expect("test binary path");
        let err = Boot::new("refused", Backend::BochsVmx)
            .elf(elf)
            .loader(Loader::QemuDirect)
            .try_run(None)
            .expect_err("Bochs has no -kernel");
        assert!(matches!(
            err,
            HarnessError::DirectBootUnsupported(Backend::BochsVmx)
        ));
    }
}
