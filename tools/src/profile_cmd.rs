//! `cargo xtask profile`: where each VM exit's instructions go (issue #6).
//!
//! # What
//!
//! Boots the bench guest as Dom0 on keel (or Xen) under exactly the QEMU command
//! line of [`keel_tests::bench::qemu_args`] (on one CPU, or with `--cpus 2` on
//! bench's two-CPU machine) plus `-d in_asm,exec,nochain -D trace.fifo`: QEMU
//! logs every translation block it translates and runs, tens of
//! millions of lines and gigabytes, into a FIFO that this process reads as QEMU
//! writes (nothing goes to disk). [`crate::profile::Profiler`] turns the lines into
//! exit spans per guest pc; the report names the guest pcs from the guest ELF
//! (hypercall page entries, functions) and the hypervisor's functions from its ELF.
//! QEMU runs only as fast as the log is read, so the parser is byte-level and the
//! serial log is watched from a second thread. QEMU's logging is then the limit:
//! a keel profile (~70M TBs, most of them keel zeroing memory before the guest)
//! takes 2-3 minutes on a busy 2-CPU machine, Xen's (~115M) about 5, and draining
//! the FIFO with `cat > /dev/null` is no faster.
//!
//! The last exits (the guest's final console lines) depend on how far QEMU got
//! before the watcher, polling serial.log, killed it: compare the keys above them.
//!
//! # Invariants
//!
//! - QEMU is always killed (if still running) and reaped, and the FIFO removed, on
//!   every path out once it has started; a QEMU that dies before opening its log
//!   cannot leave this process blocked opening the FIFO (see [`unblock_reader`]).
//! - The images booted are copies in the work directory (as in a bench), so a
//!   rebuild meanwhile does not change what is profiled or how it is symbolised.
//!
//! # Locking
//!
//! Two threads: this one reads the FIFO, the watcher owns QEMU and `serial.log`.
//! They share only `opened` (an atomic flag) and the watcher's result, returned by
//! `join`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_tests::bench::{self, Hypervisor};
use keel_tests::qemu::QEMU;
use keel_tests::run::{self, Supervision};
use keel_tests::workdir;

use crate::Error;
use crate::args::ProfileOpts;
use crate::profile::{ElfSymbols, GuestNames, Profiler, Symbols};

/// QEMU's log, in the work directory.
const FIFO: &str = "trace.fifo";
/// What QEMU logs: translations, executions, no chaining (so every run is logged).
const LOG_ITEMS: &str = "in_asm,exec,nochain";
/// The guest's last line in every mode; the profile ends there.
const TEST_RESULT: &str = "Test result:";
/// Longest profile run (keel takes about 2 minutes, Xen several).
const TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A progress line every this many TBs.
const PROGRESS_EVERY: u64 = 10_000_000;
/// The FIFO read buffer.
const READ_BUFFER: usize = 4 << 20;

/// How the watched QEMU ended.
struct Watched {
    status: Result<ExitStatus, keel_tests::HarnessError>,
    /// Killed by us (the guest was done, or the timeout).
    killed: bool,
    timed_out: bool,
    /// The guest printed `Test result:`.
    test_result: bool,
    elapsed: Duration,
}

/// Opens the FIFO read-write and closes it again. On Linux that never blocks, and it
/// counts as a writer arriving, so a reader blocked in `open` (QEMU died before
/// opening its log) returns and then reads end-of-file.
fn unblock_reader(fifo: &Path) {
    // Best effort: if the FIFO is gone the reader is not blocked on it.
    let _ = OpenOptions::new().read(true).write(true).open(fifo);
}

/// Watches the guest's serial lines for `Test result:`, its last word in every mode.
#[derive(Default)]
struct TestResult(bool);

impl Supervision for TestResult {
    fn line(&mut self, line: &str) {
        self.0 |= line.contains(TEST_RESULT);
    }

    fn over(&mut self) -> bool {
        self.0
    }
}

/// Owns QEMU: supervises it until the guest prints `Test result:`, QEMU exits, or
/// [`TIMEOUT`] (it is killed if still running, and reaped); then unblocks the
/// FIFO's reader until it says it has opened the FIFO.
fn watch(child: Child, serial: PathBuf, fifo: PathBuf, opened: Arc<AtomicBool>) -> Watched {
    let start = Instant::now();
    let mut seen = TestResult::default();
    let supervised = run::supervise(child, &serial, TIMEOUT, &mut seen);
    let (status, killed, timed_out) = match supervised {
        Ok(s) => (Ok(s.status), s.stopped || s.timed_out, s.timed_out),
        Err(e) => (Err(e), false, false),
    };
    let test_result = seen.0;
    let elapsed = start.elapsed();
    while !opened.load(Ordering::Acquire) {
        unblock_reader(&fifo);
        std::thread::sleep(Duration::from_millis(10));
    }
    Watched {
        status,
        killed,
        timed_out,
        test_result,
        elapsed,
    }
}

/// The symbols of the ELF at `path`; none (with a warning) if it cannot be read.
fn symbols_of(path: &Path, what: &str) -> ElfSymbols {
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|data| ElfSymbols::parse(&data));
    match parsed {
        Ok(symbols) => symbols,
        Err(e) => {
            eprintln!(
                "profile: warning: no symbols for {what} ({}): {e}",
                path.display()
            );
            ElfSymbols::default()
        }
    }
}

/// Reads the FIFO to its end through `profiler`, with a progress line every
/// [`PROGRESS_EVERY`] TBs. Sets `opened` once the FIFO is open.
fn parse_log(fifo: &Path, opened: &AtomicBool, profiler: &mut Profiler) -> Result<u64, Error> {
    let file = File::open(fifo);
    opened.store(true, Ordering::Release);
    let file = file.map_err(|e| Error(format!("opening {}: {e}", fifo.display())))?;
    let start = Instant::now();
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    let mut line = Vec::with_capacity(256);
    let mut lines: u64 = 0;
    let mut next_progress = PROGRESS_EVERY;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(Error(format!("reading {}: {e}", fifo.display()))),
        }
        lines += 1;
        profiler.line(&line);
        if profiler.tbs() >= next_progress {
            eprintln!(
                "profile: {}M TBs parsed ({:.0} s)",
                next_progress / 1_000_000,
                start.elapsed().as_secs_f64()
            );
            next_progress += PROGRESS_EVERY;
        }
    }
    Ok(lines)
}

/// Runs `cargo xtask profile`; returns the process exit status.
pub fn profile(opts: &ProfileOpts) -> Result<u8, Error> {
    let hv = opts.hypervisor;
    let (keel_elf, guest) = crate::bench_cmd::keel_and_guest(opts.build, "profile")?;
    let kernel = match hv {
        Hypervisor::Keel => keel_elf,
        Hypervisor::Xen => {
            eprintln!("profile: fetching Xen ({})", bench::XEN_PACKAGE);
            bench::fetch_xen()?.image
        }
    };

    let work = workdir::create(&format!("profile-{}-{}", hv.key(), opts.cpus.key()))?;
    let kernel = bench::copy_into(&work, &kernel, hv.kernel_file())?;
    let guest = bench::copy_into(&work, &guest, bench::GUEST_FILE)?;
    let hv_symbols = Symbols::new(&symbols_of(&kernel, hv.name()));
    let guest_names = GuestNames::new(&symbols_of(&guest, "the guest"));
    if hv_symbols.is_empty() {
        eprintln!(
            "profile: {hv}'s image has no symbols (stripped): totals only, functions show as ?"
        );
    }
    if guest_names.hypercall_page.is_none() {
        eprintln!("profile: warning: no HYPERCALL_PAGE symbol in the guest");
    }

    let fifo = work.join(FIFO);
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map_err(|e| Error(format!("running mkfifo: {e}")))?;
    if !made.success() {
        return Err(Error(format!("mkfifo {} failed: {made}", fifo.display())));
    }
    let result = run(opts, &work, &fifo, hv_symbols);
    // Best effort: a leftover FIFO in the work directory is harmless.
    let _ = std::fs::remove_file(&fifo);
    let (profile, watched) = result?;

    let serial_path = work.join(bench::SERIAL_FILE);
    let serial = keel_tests::serial::clean(&std::fs::read(&serial_path).unwrap_or_default());
    println!();
    print!(
        "{}",
        profile.render(hv.name(), opts.top, opts.functions, &|pc| {
            guest_names.describe(pc)
        })
    );
    println!();
    println!("guest (serial.log, for reference):");
    for line in serial.lines().filter(|l| l.contains("BENCH ")) {
        println!("  {}", line.trim());
    }
    // The images are copies; the logs stay for a look.
    for copy in [&kernel, &guest] {
        let _ = std::fs::remove_file(copy);
    }

    let passed = serial.contains("Test result: SUCCESS");
    eprintln!(
        "profile: {hv}: QEMU {} after {:.0} s; logs in {}",
        match (&watched.status, watched.killed) {
            (_, true) if watched.timed_out => "killed at the time limit".to_string(),
            (_, true) => "stopped at the guest's `Test result:`".to_string(),
            (Ok(status), false) => format!("exited ({status})"),
            (Err(e), false) => format!("not reaped: {e}"),
        },
        watched.elapsed.as_secs_f64(),
        work.display()
    );
    if profile.tbs == 0 {
        let out = std::fs::read_to_string(work.join("emulator.out")).unwrap_or_default();
        return Err(Error(format!(
            "QEMU logged no translation block; it said:\n{}",
            out.trim_end()
        )));
    }
    if !watched.test_result || !passed {
        eprintln!(
            "profile: warning: the guest did not print `Test result: SUCCESS`; the profile \
             above is of a run that failed or was cut short (see serial.log)"
        );
        return Ok(1);
    }
    Ok(0)
}

/// Starts QEMU logging into `fifo`, watches it from a thread, and parses the log.
fn run(
    opts: &ProfileOpts,
    work: &Path,
    fifo: &Path,
    symbols: Symbols,
) -> Result<(crate::profile::Profile, Watched), Error> {
    let hv = opts.hypervisor;
    let mut args = bench::qemu_args(hv, opts.cpus, &opts.guest_cmdline)?;
    args.extend(["-d", LOG_ITEMS, "-D", FIFO].map(String::from));
    let command_line = bench::shell_line(QEMU, &args);
    std::fs::write(
        work.join("command.txt"),
        format!("cd {} && {command_line}\n", work.display()),
    )
    .map_err(|e| Error(format!("writing {}/command.txt: {e}", work.display())))?;
    let out_path = work.join("emulator.out");
    let out = File::create(&out_path)
        .map_err(|e| Error(format!("creating {}: {e}", out_path.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| Error(format!("duplicating a file handle: {e}")))?;
    eprintln!("profile: {hv}: {command_line}");
    eprintln!(
        "profile: {hv} boot, every TB logged (guest pcs {:#x}..{:#x}) ...",
        opts.guest_range.start, opts.guest_range.end
    );
    let child = Command::new(QEMU)
        .args(&args)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error(format!("starting {QEMU}: {e}")))?;

    let opened = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (serial, fifo, opened) = (
            work.join(bench::SERIAL_FILE),
            fifo.to_path_buf(),
            Arc::clone(&opened),
        );
        std::thread::spawn(move || watch(child, serial, fifo, opened))
    };
    let start = Instant::now();
    let mut profiler = Profiler::new(opts.guest_range.clone(), symbols);
    let parsed = parse_log(fifo, &opened, &mut profiler);
    // The watcher ends once QEMU is reaped; if parsing failed, QEMU (blocked on a
    // full FIFO) is still running: closing our end (done, `parse_log` returned)
    // makes its writes fail, so it goes on to the end without us.
    let watched = watcher
        .join()
        .map_err(|_| Error("the QEMU watcher thread panicked".into()))?;
    let lines = parsed?;
    let profile = profiler.finish();
    eprintln!(
        "profile: {}M lines, {}M TBs parsed in {:.0} s",
        lines / 1_000_000,
        profile.tbs / 1_000_000,
        start.elapsed().as_secs_f64()
    );
    Ok((profile, watched))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_blocked_on_a_dead_writer_gets_eof() {
        let dir = std::env::temp_dir().join(format!("keel-profile-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let fifo = dir.join("f");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .expect("mkfifo runs")
                .success()
        );
        // A "QEMU" that exits without opening its log.
        let child = Command::new("true").spawn().expect("true runs");
        let opened = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (serial, fifo, opened) = (dir.join("none.log"), fifo.clone(), opened.clone());
            std::thread::spawn(move || watch(child, serial, fifo, opened))
        };
        let mut p = Profiler::new(crate::profile::DEFAULT_GUEST_RANGE, Symbols::default());
        let lines = parse_log(&fifo, &opened, &mut p).expect("EOF, not a hang");
        let w = watcher.join().expect("watcher");
        assert_eq!(lines, 0);
        assert!(!w.killed && !w.test_result && w.status.is_ok());

        // A "QEMU" that logs, says it is done, and hangs (like Xen): killed.
        let script = format!(
            "printf 'Trace 0: 0x10 [0/100000/0/0]\\n' > {f}; echo 'Test result: SUCCESS' > s.log; exec sleep 30",
            f = fifo.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .spawn()
            .expect("sh runs");
        let opened = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (serial, fifo, opened) = (dir.join("s.log"), fifo.clone(), opened.clone());
            std::thread::spawn(move || watch(child, serial, fifo, opened))
        };
        let mut p = Profiler::new(crate::profile::DEFAULT_GUEST_RANGE, Symbols::default());
        let started = Instant::now();
        assert_eq!(parse_log(&fifo, &opened, &mut p).expect("read"), 1);
        let w = watcher.join().expect("watcher");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(w.killed && w.test_result && !w.timed_out);
        assert_eq!(p.tbs(), 1);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
