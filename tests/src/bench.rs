//! The benchmark harness: the bench guest booted as Dom0 on keel and on Xen 4.17,
//! under one QEMU configuration, and what its serial output means.
//!
//! # What
//!
//! Under QEMU with `-icount shift=0,sleep=off` the emulated TSC advances by one per
//! instruction the whole machine executes, so the bench guest (`pvh64.elf
//! mode=bench`), reading the TSC around an operation, counts the instructions the
//! hypervisor and the guest spent on it, the same on every run. This module is
//! everything `cargo xtask bench` needs apart from building and printing:
//!
//! - [`parse`]: a serial log into a [`Report`], one [`Metric`] per `BENCH` line;
//!   [`METRICS`] lists the metrics the guest is expected to print on one CPU,
//!   [`IPI_METRICS`] those of the two-CPU boot ([`Cpus::metrics`]).
//! - [`qemu_args`]: the one QEMU command line, differing between [`Hypervisor`]s only
//!   in `-kernel` and `-append`, for each of the two machines a bench boots
//!   ([`Cpus`]): one CPU for the metrics of one vCPU, two for the cross-CPU IPI.
//! - [`boot`]: one bench boot in a fresh work directory, watched until `BENCH done`;
//!   [`BenchRun::sample`] judges it.
//! - [`fetch_xen`]: Debian's `xen-hypervisor-4.17-amd64`, fetched with
//!   `apt-get download` into `target/keel/cache/xen/` (see [`crate::debian`]) and
//!   gunzipped there, never installed.
//! - [`Results`]: statistics across runs ([`MetricStats`]), the table and the JSON.
//!
//! # The guest's output (the contract with `tests/guests`)
//!
//! Lines may carry keel's `(d0) ` prefix (Xen prints Dom0's lines bare), so every
//! match is unanchored: `pvh64 (long mode): hvm_start_info ...` first, then per metric
//! `BENCH <metric> n=<iterations> min=<u64> median=<u64> unit=<unit>`, then
//! `BENCH done`, then `Test result: SUCCESS`. `BENCH error <text>` or a `Test result:`
//! other than `SUCCESS` is a failure.
//!
//! # Invariants
//!
//! - A [`Report`] holds each metric once, in the guest's order, and only if the guest
//!   reached `BENCH done` without reporting an error.
//! - The QEMU options of the two hypervisors are identical except `-kernel` and
//!   `-append`; the files they name are copies in the boot's work directory, so a
//!   rebuild during a bench cannot change a run's image. The two-CPU boot adds the
//!   same words to both hypervisors' command lines ([`Cpus::hypervisor_args`]).
//! - Statistics are per hypervisor, machine ([`Cpus`]) and metric: a metric both
//!   boots print (`rdtsc_overhead`) is two metrics, and each boot's metrics are net
//!   of its own `rdtsc_overhead`.
//! - Every QEMU process [`boot`] starts is waited for (killed first if it has not
//!   exited), on every path out.
//!
//! # Locking
//!
//! None of its own: boots use separate work directories ([`crate::workdir`]), the
//! package fetch holds the cache lock of [`crate::debian::fetch_in`], and the
//! gunzipped image is written under a per-process temporary name and renamed into
//! place, so concurrent benches at worst both unpack it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{Value, json};

use crate::qemu::{self, QEMU};
use crate::run::{self, Supervision};
use crate::serial;
use crate::{HarnessError, debian, workdir};

/// The bench guest's command line.
pub const GUEST_CMDLINE: &str = "mode=bench";

/// The metrics the bench guest prints, in its order. The set is open: [`parse`]
/// accepts any well-formed metric, and a report may be checked against this list
/// with [`Report::missing`].
pub const METRICS: &[&str] = &[
    "hypercall_xen_version",
    "console_io_64b",
    "evtchn_send_upcall",
    "grant_copy_4k",
    "sched_yield",
    "boot_to_first_line",
    "rdtsc_overhead",
];

/// The metric of the two-CPU boot: an event-channel IPI round trip between two
/// vCPUs on two pCPUs.
pub const IPI_METRIC: &str = "evtchn_ipi_cross_cpu_round_trip";

/// The metrics the bench guest prints with `vcpus=2` ([`Cpus::Two`]), in its order.
pub const IPI_METRICS: &[&str] = &["rdtsc_overhead", IPI_METRIC];

/// The unit of metrics counted in instructions (TSC ticks under icount).
pub const INSTRUCTIONS: &str = "insns";

/// The guest's first line (unanchored): its arrival is the wall-clock time to first line.
pub const FIRST_LINE: &str = r"pvh64 \(long mode\): hvm_start_info";

/// Largest relative spread of an instruction metric across runs that still counts
/// as reproducible (issue #6: "the same instruction counts within 1%").
pub const SPREAD_LIMIT: f64 = 0.01;

/// How long one bench boot may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long to keep reading after `BENCH done` (for `Test result:`) or after a
/// failure line (for the context around it).
pub const GRACE: Duration = Duration::from_secs(1);

/// Debian's package of Xen 4.17.
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";

/// keel's command line in a bench: the console only, everything else default.
pub const KEEL_CMDLINE: &str = "console=com1";

/// Xen's command line in a bench: the console and a PVH Dom0 without an IOMMU
/// (QEMU's default machine has none).
pub const XEN_CMDLINE: &str = "console=com1 dom0=pvh dom0-iommu=none";

/// The QEMU options both hypervisors run under, before `-smp`, `-kernel`, `-append`
/// and `-initrd`. TCG (the build machines have no KVM; it also emulates SVM for
/// keel), `-icount shift=0,sleep=off` so the TSC counts instructions (with several
/// CPUs: the instructions all of them retire, as QEMU runs them in turns on one
/// thread), no display, monitor or reboot, serial to `serial.log`.
pub const QEMU_OPTIONS: &[&str] = &[
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-icount",
    "shift=0,sleep=off",
    "-m",
    "512M",
    "-display",
    "none",
    "-monitor",
    "none",
    "-no-reboot",
    "-serial",
    "file:serial.log",
];

/// The serial log in a boot's work directory.
pub const SERIAL_FILE: &str = "serial.log";
/// The guest's file name in a boot's work directory (also its module name).
pub const GUEST_FILE: &str = "pvh64.elf";

const TAIL_LINES: usize = 20;

/// A pattern of this module; all are constants, checked by the unit tests.
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad bench regex {pattern:?}: {e}"))
}

static BENCH_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"(?:^|\s)BENCH(?:\s+(.*?))?\s*$"));
static TEST_RESULT: LazyLock<Regex> = LazyLock::new(|| re(r"Test result: (\S+)"));
static FIRST_LINE_RE: LazyLock<Regex> = LazyLock::new(|| re(FIRST_LINE));
static KEEL_VERSION: LazyLock<Regex> = LazyLock::new(|| re(r"^\(KEEL\) keel (\d+\.\d+\.\d+\S*)"));
static XEN_VERSION: LazyLock<Regex> = LazyLock::new(|| re(r"^\(XEN\) Xen version (\S+)"));
/// Lines after which a hypervisor will not produce a bench result: keel's and Xen's
/// panics, and Xen saying Dom0 has ended (it then halts without QEMU exiting).
static HYPERVISOR_END: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^(?:\(KEEL\) FATAL: |\(XEN\) (?:Panic on CPU|Hardware Dom0 (?:halted|shutdown|crashed)))")
});
static HYPERVISOR_FAILED: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:\(KEEL\) FATAL: |\(XEN\) Panic on CPU)"));

/// Which hypervisor a bench boot runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hypervisor {
    /// keel, `target/keel/keel.elf`.
    Keel,
    /// Xen 4.17 from Debian's package.
    Xen,
}

impl Hypervisor {
    /// Both, in the order a bench alternates them.
    pub const ALL: [Hypervisor; 2] = [Hypervisor::Keel, Hypervisor::Xen];

    /// Its name in messages and tables: `keel`, `Xen`.
    pub fn name(self) -> &'static str {
        match self {
            Hypervisor::Keel => "keel",
            Hypervisor::Xen => "Xen",
        }
    }

    /// Its key in the JSON: `keel`, `xen`.
    pub fn key(self) -> &'static str {
        match self {
            Hypervisor::Keel => "keel",
            Hypervisor::Xen => "xen",
        }
    }

    /// Its command line (`-append`) on one CPU.
    pub fn cmdline(self) -> &'static str {
        match self {
            Hypervisor::Keel => KEEL_CMDLINE,
            Hypervisor::Xen => XEN_CMDLINE,
        }
    }

    /// Its command line on the machine `cpus`.
    pub fn cmdline_on(self, cpus: Cpus) -> String {
        match cpus.hypervisor_args() {
            "" => self.cmdline().to_string(),
            more => format!("{} {more}", self.cmdline()),
        }
    }

    /// Its image's file name in a boot's work directory (`-kernel`).
    pub fn kernel_file(self) -> &'static str {
        match self {
            Hypervisor::Keel => "keel.elf",
            Hypervisor::Xen => "xen",
        }
    }

    /// Its version, from its banner in `serial`: keel's `(KEEL) keel X.Y.Z ...`,
    /// Xen's `(XEN) Xen version 4.17.x ...`.
    pub fn version(self, serial: &str) -> Option<String> {
        let re = match self {
            Hypervisor::Keel => &*KEEL_VERSION,
            Hypervisor::Xen => &*XEN_VERSION,
        };
        serial
            .lines()
            .find_map(|l| re.captures(l).map(|c| c[1].to_string()))
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The machine a bench boot runs on. A bench boots each hypervisor on both:
/// the metrics of one vCPU keep the machine they have always had (a second pCPU
/// changes a few of them a little, docs/performance.md), and the IPI gets its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cpus {
    /// `-smp 1`, Dom0 with one vCPU: every metric but the IPI ([`METRICS`]).
    One,
    /// `-smp 2`, Dom0 with two vCPUs pinned to pCPUs 0 and 1, the guest with
    /// `vcpus=2`: the cross-CPU IPI ([`IPI_METRICS`]).
    Two,
}

impl Cpus {
    /// Both, in the order a bench boots them.
    pub const ALL: [Cpus; 2] = [Cpus::One, Cpus::Two];

    /// QEMU's `-smp`.
    pub fn count(self) -> u32 {
        match self {
            Cpus::One => 1,
            Cpus::Two => 2,
        }
    }

    /// Words added to either hypervisor's command line (the same for both):
    /// Dom0 gets two vCPUs, each pinned to the pCPU of its number.
    pub fn hypervisor_args(self) -> &'static str {
        match self {
            Cpus::One => "",
            Cpus::Two => "dom0_max_vcpus=2 dom0_vcpus_pin",
        }
    }

    /// The bench guest's command line on this machine: `base`, and for two CPUs
    /// `vcpus=2`.
    pub fn guest_cmdline(self, base: &str) -> String {
        match self {
            Cpus::One => base.to_string(),
            Cpus::Two => format!("{base} vcpus=2"),
        }
    }

    /// The metrics the guest prints on this machine.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            Cpus::One => METRICS,
            Cpus::Two => IPI_METRICS,
        }
    }

    /// Its key in the JSON and in work-directory names: `1cpu`, `2cpus`.
    pub fn key(self) -> &'static str {
        match self {
            Cpus::One => "1cpu",
            Cpus::Two => "2cpus",
        }
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cpus::One => f.write_str("1 CPU"),
            Cpus::Two => f.write_str("2 CPUs"),
        }
    }
}

/// Why a bench could not produce numbers.
#[derive(Debug)]
pub enum BenchError {
    /// The environment failed (a missing tool, an I/O error, the Xen fetch).
    Harness(HarnessError),
    /// The guest reported a failure (`BENCH error ...`, `Test result: FAILURE ...`).
    GuestFailed {
        /// The line, as printed.
        line: String,
    },
    /// The hypervisor itself failed (keel's `FATAL:`, Xen's `Panic on CPU`).
    HypervisorFailed {
        /// The line, as printed.
        line: String,
    },
    /// A `BENCH` line does not have the contract's form.
    Malformed {
        /// The line, as printed.
        line: String,
        /// What is wrong with it.
        why: String,
    },
    /// A metric was printed twice.
    Duplicate {
        /// The metric.
        metric: String,
    },
    /// The log ends without `BENCH done`.
    NoDone {
        /// How many metrics came before the end.
        metrics: usize,
        /// The last lines of the log.
        tail: String,
    },
    /// `BENCH done` came without a single metric.
    NoMetrics,
    /// The guest's first line (`pvh64 (long mode): hvm_start_info`) never came.
    NoFirstLine,
    /// The boot hit its time limit (QEMU was killed).
    TimedOut {
        /// The limit.
        after: Duration,
        /// The last lines of the log.
        tail: String,
    },
    /// One boot failed: which hypervisor, where its logs are, and why.
    Run {
        /// The hypervisor booted.
        hypervisor: Hypervisor,
        /// The boot's work directory (serial.log, emulator.out, command.txt).
        work_dir: PathBuf,
        /// The last lines QEMU printed itself, if any.
        emulator_output: String,
        /// Why.
        source: Box<BenchError>,
    },
}

impl From<HarnessError> for BenchError {
    fn from(e: HarnessError) -> BenchError {
        BenchError::Harness(e)
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Harness(e) => write!(f, "{e}"),
            BenchError::GuestFailed { line } => {
                write!(f, "the bench guest reported a failure: {line:?}")
            }
            BenchError::HypervisorFailed { line } => {
                write!(f, "the hypervisor failed: {line:?}")
            }
            BenchError::Malformed { line, why } => {
                write!(f, "malformed BENCH line ({why}): {line:?}")
            }
            BenchError::Duplicate { metric } => {
                write!(f, "the guest printed metric {metric} twice")
            }
            BenchError::NoDone { metrics, tail } => write!(
                f,
                "the serial log ends without `BENCH done` (after {metrics} metric(s)); its last lines:\n{tail}"
            ),
            BenchError::NoMetrics => f.write_str("`BENCH done` without any metric"),
            BenchError::NoFirstLine => {
                write!(f, "the guest's first line (/{FIRST_LINE}/) never appeared")
            }
            BenchError::TimedOut { after, tail } => write!(
                f,
                "timed out after {} s (QEMU killed); the serial log's last lines:\n{tail}",
                after.as_secs()
            ),
            BenchError::Run {
                hypervisor,
                work_dir,
                emulator_output,
                source,
            } => {
                write!(f, "bench run on {hypervisor} failed: {source}")?;
                if !emulator_output.trim().is_empty() {
                    write!(f, "\nQEMU said:\n{}", emulator_output.trim_end())?;
                }
                write!(f, "\n(logs in {})", work_dir.display())
            }
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Harness(e) => Some(e),
            BenchError::Run { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// One `BENCH <metric> ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Its name (`hypercall_xen_version`).
    pub name: String,
    /// How many iterations it was measured over.
    pub n: u64,
    /// The smallest iteration.
    pub min: u64,
    /// The median iteration.
    pub median: u64,
    /// What it counts (`insns`).
    pub unit: String,
}

/// Everything one bench guest run printed, in its order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The metrics, each once, in the guest's order.
    pub metrics: Vec<Metric>,
}

impl Report {
    /// The metric called `name`, if the guest printed it.
    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The names in `expected` (say [`Cpus::metrics`]) the guest did not print.
    pub fn missing(&self, expected: &[&'static str]) -> Vec<&'static str> {
        expected
            .iter()
            .copied()
            .filter(|name| self.get(name).is_none())
            .collect()
    }
}

/// The last `n` lines of `text`, joined.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parses the text after `BENCH ` of a metric line.
fn parse_metric(rest: &str) -> Result<Metric, String> {
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or_default();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let (mut n, mut min, mut median, mut unit) = (None, None, None, None);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("{word:?} is not key=value"));
        };
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value:?} is not an unsigned integer"))
        };
        let slot_taken = match key {
            "n" => n.replace(number()?).is_some(),
            "min" => min.replace(number()?).is_some(),
            "median" => median.replace(number()?).is_some(),
            "unit" if !value.is_empty() => unit.replace(value.to_string()).is_some(),
            "unit" => return Err("empty unit".to_string()),
            // Fields a later guest may add are ignored.
            _ => false,
        };
        if slot_taken {
            return Err(format!("{key}= given twice"));
        }
    }
    let missing = |what: &str| format!("no {what}=");
    let metric = Metric {
        name: name.to_string(),
        n: n.ok_or_else(|| missing("n"))?,
        min: min.ok_or_else(|| missing("min"))?,
        median: median.ok_or_else(|| missing("median"))?,
        unit: unit.ok_or_else(|| missing("unit"))?,
    };
    if metric.n == 0 {
        return Err("n=0".to_string());
    }
    if metric.min > metric.median {
        return Err(format!("min {} > median {}", metric.min, metric.median));
    }
    Ok(metric)
}

/// Parses a bench guest's serial log (keel's `(d0) ` prefixes, Xen's bare lines and
/// either hypervisor's own lines may be mixed in) into its metrics.
///
/// Errors, first in log order wins: `BENCH error ...` or a `Test result:` other than
/// `SUCCESS` ([`BenchError::GuestFailed`]); a `BENCH` line of the wrong form, or a
/// metric after `BENCH done` ([`BenchError::Malformed`]); a metric printed twice
/// ([`BenchError::Duplicate`]); no `BENCH done` ([`BenchError::NoDone`]); no metric
/// at all ([`BenchError::NoMetrics`]).
///
/// ```
/// let log = "(d0) BENCH sched_yield n=100 min=900 median=910 unit=insns\n(d0) BENCH done\n";
/// let report = keel_tests::bench::parse(log).expect("a good log");
/// assert_eq!(report.get("sched_yield").map(|m| m.median), Some(910));
/// ```
pub fn parse(serial: &str) -> Result<Report, BenchError> {
    let mut report = Report::default();
    let mut done = false;
    for line in serial.lines() {
        if let Some(c) = TEST_RESULT.captures(line)
            && &c[1] != "SUCCESS"
        {
            return Err(BenchError::GuestFailed {
                line: line.to_string(),
            });
        }
        let Some(c) = BENCH_LINE.captures(line) else {
            continue;
        };
        let rest = c.get(1).map_or("", |m| m.as_str());
        let malformed = |why: &str| BenchError::Malformed {
            line: line.to_string(),
            why: why.to_string(),
        };
        let first = rest.split_whitespace().next().unwrap_or_default();
        match first {
            "" => return Err(malformed("nothing after BENCH")),
            "error" => {
                return Err(BenchError::GuestFailed {
                    line: line.to_string(),
                });
            }
            "done" if rest == "done" => {
                if done {
                    return Err(malformed("a second BENCH done"));
                }
                done = true;
            }
            "done" => return Err(malformed("text after BENCH done")),
            _ if done => return Err(malformed("a metric after BENCH done")),
            _ => {
                let metric = parse_metric(rest).map_err(|why| malformed(&why))?;
                if report.get(&metric.name).is_some() {
                    return Err(BenchError::Duplicate {
                        metric: metric.name,
                    });
                }
                report.metrics.push(metric);
            }
        }
    }
    if !done {
        return Err(BenchError::NoDone {
            metrics: report.metrics.len(),
            tail: tail(serial, TAIL_LINES),
        });
    }
    if report.metrics.is_empty() {
        return Err(BenchError::NoMetrics);
    }
    Ok(report)
}

/// QEMU's arguments (not the program name) for a bench boot of `hypervisor` on the
/// machine `cpus`, run in a work directory holding [`Hypervisor::kernel_file`] and
/// [`GUEST_FILE`]: [`QEMU_OPTIONS`], `-smp`, then `-kernel`, `-append` and the guest
/// as the one module, with `guest_cmdline` as [`Cpus::guest_cmdline`] makes it.
pub fn qemu_args(
    hypervisor: Hypervisor,
    cpus: Cpus,
    guest_cmdline: &str,
) -> Result<Vec<String>, BenchError> {
    let mut args: Vec<String> = QEMU_OPTIONS.iter().map(|s| s.to_string()).collect();
    args.extend([
        "-smp".to_string(),
        cpus.count().to_string(),
        "-kernel".to_string(),
        hypervisor.kernel_file().to_string(),
        "-append".to_string(),
        hypervisor.cmdline_on(cpus),
    ]);
    let module = [(GUEST_FILE.to_string(), cpus.guest_cmdline(guest_cmdline))];
    if let Some(initrd) = qemu::initrd_arg(&module)? {
        args.extend(["-initrd".to_string(), initrd]);
    }
    Ok(args)
}

/// `args` as one shell command line (single quotes where needed).
pub fn shell_line(program: &str, args: &[String]) -> String {
    let quote = |s: &str| {
        let safe = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/+%@".contains(c));
        if safe {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Watches serial lines as they arrive and decides when a bench boot is over.
#[derive(Debug, Default)]
struct Watch {
    /// When the guest's first line arrived.
    first_line: Option<Duration>,
    /// `BENCH done` seen.
    done: bool,
    /// Stop reading at this time (since QEMU started).
    stop_at: Option<Duration>,
}

impl Watch {
    fn stop_by(&mut self, at: Duration) {
        self.stop_at = Some(self.stop_at.map_or(at, |s| s.min(at)));
    }

    fn line(&mut self, line: &str, now: Duration) {
        if self.first_line.is_none() && FIRST_LINE_RE.is_match(line) {
            self.first_line = Some(now);
        }
        if let Some(c) = TEST_RESULT.captures(line) {
            // After `BENCH done` this is the guest's last word; otherwise (another
            // mode, a failure) leave a moment for what follows it.
            if self.done && &c[1] == "SUCCESS" {
                self.stop_by(now);
            } else {
                self.stop_by(now + GRACE);
            }
        } else if let Some(c) = BENCH_LINE.captures(line) {
            let rest = c.get(1).map_or("", |m| m.as_str());
            if rest == "done" {
                self.done = true;
                self.stop_by(now + GRACE);
            } else if rest.starts_with("error") {
                self.stop_by(now + GRACE);
            }
        } else if HYPERVISOR_END.is_match(line) {
            self.stop_by(now + GRACE);
        }
    }

    fn should_stop(&self, now: Duration) -> bool {
        self.stop_at.is_some_and(|s| now >= s)
    }
}

/// One bench boot, as it happened.
#[derive(Clone, Debug)]
pub struct BenchRun {
    /// The hypervisor booted.
    pub hypervisor: Hypervisor,
    /// On which machine.
    pub cpus: Cpus,
    /// Everything on COM1 (cleaned by [`serial::clean`]).
    pub serial: String,
    /// Wall time from starting QEMU to the guest's first line.
    pub first_line: Option<Duration>,
    /// Wall time from starting QEMU to stopping it (or its exit).
    pub elapsed: Duration,
    /// QEMU's exit status (after our kill, if it did not exit by itself).
    pub status: ExitStatus,
    /// Whether QEMU was killed (it had not exited when the run was over).
    pub killed: bool,
    /// Whether the run hit its time limit.
    pub timed_out: bool,
    /// The time limit.
    pub timeout: Duration,
    /// The work directory: images, serial.log, emulator.out, command.txt.
    pub work_dir: PathBuf,
    /// The QEMU command line, runnable in `work_dir`.
    pub command_line: String,
}

/// What one successful bench boot measured.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The hypervisor booted.
    pub hypervisor: Hypervisor,
    /// On which machine.
    pub cpus: Cpus,
    /// The guest's metrics.
    pub report: Report,
    /// Wall time from starting QEMU to the guest's first line.
    pub first_line: Duration,
    /// Wall time of the whole boot.
    pub elapsed: Duration,
    /// The hypervisor's version, from its banner.
    pub version: Option<String>,
    /// The boot's work directory.
    pub work_dir: PathBuf,
}

impl BenchRun {
    /// The last lines QEMU printed on its stdout/stderr.
    pub fn emulator_output(&self) -> String {
        let text = std::fs::read_to_string(self.work_dir.join("emulator.out")).unwrap_or_default();
        tail(&text, 15)
    }

    /// Judges the run: its metrics, or why there are none (a [`BenchError::Run`]
    /// naming the hypervisor and the work directory).
    pub fn sample(&self) -> Result<Sample, BenchError> {
        self.judge().map_err(|source| BenchError::Run {
            hypervisor: self.hypervisor,
            work_dir: self.work_dir.clone(),
            emulator_output: self.emulator_output(),
            source: Box::new(source),
        })
    }

    fn judge(&self) -> Result<Sample, BenchError> {
        if let Some(line) = self.serial.lines().find(|l| HYPERVISOR_FAILED.is_match(l)) {
            return Err(BenchError::HypervisorFailed {
                line: line.to_string(),
            });
        }
        let report = match parse(&self.serial) {
            Err(BenchError::NoDone { .. }) if self.timed_out => {
                return Err(BenchError::TimedOut {
                    after: self.timeout,
                    tail: tail(&self.serial, TAIL_LINES),
                });
            }
            other => other?,
        };
        let first_line = self.first_line.ok_or(BenchError::NoFirstLine)?;
        Ok(Sample {
            hypervisor: self.hypervisor,
            cpus: self.cpus,
            report,
            first_line,
            elapsed: self.elapsed,
            version: self.hypervisor.version(&self.serial),
            work_dir: self.work_dir.clone(),
        })
    }
}

/// Starts QEMU with `args` in `work`: the command line saved to `command.txt`
/// (to rerun by hand), stdout and stderr to `emulator.out`. Returns the child and
/// when it started, and the command line.
pub(crate) fn spawn_qemu(
    work: &Path,
    args: &[String],
) -> Result<(Child, Instant, String), HarnessError> {
    let command_line = shell_line(QEMU, args);
    std::fs::write(
        work.join("command.txt"),
        format!("cd {} && {command_line}\n", work.display()),
    )
    .map_err(HarnessError::io(format!(
        "writing {}/command.txt",
        work.display()
    )))?;
    let out_path = work.join("emulator.out");
    let out = File::create(&out_path)
        .map_err(HarnessError::io(format!("creating {}", out_path.display())))?;
    let err = out
        .try_clone()
        .map_err(HarnessError::io("duplicating a file handle"))?;
    let start = Instant::now();
    let child = Command::new(QEMU)
        .args(args)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| HarnessError::Spawn {
            program: QEMU.to_string(),
            package: "qemu-system-x86",
            source,
        })?;
    Ok((child, start, command_line))
}

/// Copies `from` into the directory `work` as `name`; returns the copy's path.
pub fn copy_into(work: &Path, from: &Path, name: &str) -> Result<PathBuf, HarnessError> {
    let to = work.join(name);
    std::fs::copy(from, &to)
        .map(|_| to.clone())
        .map_err(HarnessError::io(format!(
            "copying {} to {}",
            from.display(),
            to.display()
        )))
}

/// Boots `guest` (run with `guest_cmdline`, as [`Cpus::guest_cmdline`] makes it for
/// `cpus`) as Dom0 of `hypervisor` (its image at `kernel`) under QEMU with `cpus`
/// CPUs in a fresh work directory, and watches serial until the guest is done (see
/// the module docs), failed, or `timeout` passed; QEMU is then killed if it has not
/// exited, and always reaped. Judge the result with [`BenchRun::sample`].
pub fn boot(
    hypervisor: Hypervisor,
    cpus: Cpus,
    kernel: &Path,
    guest: &Path,
    guest_cmdline: &str,
    timeout: Duration,
) -> Result<BenchRun, BenchError> {
    let work = workdir::create(&format!("bench-{}-{}", hypervisor.key(), cpus.key()))?;
    copy_into(&work, kernel, hypervisor.kernel_file())?;
    copy_into(&work, guest, GUEST_FILE)?;
    let args = qemu_args(hypervisor, cpus, guest_cmdline)?;
    let (child, start, command_line) = spawn_qemu(&work, &args)?;
    let watched = watch(child, &work.join(SERIAL_FILE), start, timeout)?;
    Ok(BenchRun {
        hypervisor,
        cpus,
        serial: serial::clean(&watched.raw),
        first_line: watched.watch.first_line,
        elapsed: watched.elapsed,
        status: watched.status,
        killed: watched.killed,
        timed_out: watched.timed_out,
        timeout,
        work_dir: work,
        command_line,
    })
}

struct Watched {
    raw: Vec<u8>,
    watch: Watch,
    elapsed: Duration,
    status: ExitStatus,
    killed: bool,
    timed_out: bool,
}

/// [`Watch`] as [`run::supervise`] drives it, each line timed from `start`.
struct Timed {
    start: Instant,
    watch: Watch,
}

impl Supervision for Timed {
    fn line(&mut self, line: &str) {
        self.watch.line(line, self.start.elapsed());
    }

    fn over(&mut self) -> bool {
        self.watch.should_stop(self.start.elapsed())
    }
}

/// Supervises `child` (started at `start`) until [`Watch`] says the run is over,
/// the child exits, or `timeout`; it is killed if still running, and reaped.
fn watch(
    child: Child,
    serial_path: &Path,
    start: Instant,
    timeout: Duration,
) -> Result<Watched, HarnessError> {
    let mut timed = Timed {
        start,
        watch: Watch::default(),
    };
    let s = run::supervise(child, serial_path, timeout, &mut timed)?;
    Ok(Watched {
        raw: s.raw,
        watch: timed.watch,
        elapsed: start.elapsed(),
        status: s.status,
        killed: s.stopped || s.timed_out,
        timed_out: s.timed_out,
    })
}

/// Xen's image, unpacked in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenImage {
    /// The Debian package (`xen-hypervisor-4.17-amd64`).
    pub package: String,
    /// Its Debian version.
    pub version: String,
    /// The gunzipped multiboot image (`.../boot/xen-4.17-amd64`).
    pub image: PathBuf,
    /// Whether the image was already there (nothing fetched or unpacked).
    pub cached: bool,
}

/// `target/keel/cache/xen`.
pub fn xen_cache_dir() -> PathBuf {
    crate::keel_target_dir().join("cache").join("xen")
}

/// For a file of the package's `boot/`: the unpacked image's name if this is the
/// compressed hypervisor (`xen-4.17-amd64.gz` -> `xen-4.17-amd64`).
pub fn xen_image_name(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(".gz")
        .filter(|stem| stem.starts_with("xen-") && stem.len() > 4)
}

/// [`fetch_xen_in`] the default cache, [`xen_cache_dir`].
pub fn fetch_xen() -> Result<XenImage, BenchError> {
    fetch_xen_in(&xen_cache_dir())
}

/// Fetches [`XEN_PACKAGE`] into `cache` (unless there already) and gunzips its
/// `boot/xen-*.gz` beside it (unless done already). Idempotent.
pub fn fetch_xen_in(cache: &Path) -> Result<XenImage, BenchError> {
    let fetched = debian::fetch_in(cache, XEN_PACKAGE, false, &["./boot"])?;
    let boot = fetched.root.join("boot");
    let entries = std::fs::read_dir(&boot)
        .map_err(HarnessError::io(format!("listing {}", boot.display())))?;
    let mut images = Vec::new();
    for entry in entries {
        let entry = entry.map_err(HarnessError::io(format!("listing {}", boot.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = xen_image_name(&name) {
            images.push((entry.path(), boot.join(stem)));
        }
    }
    let (gz, image) = match <[_; 1]>::try_from(images) {
        Ok([pair]) => pair,
        Err(images) => {
            return Err(BenchError::Harness(HarnessError::Io {
                what: format!("finding Xen in {}", fetched.package),
                source: std::io::Error::other(format!(
                    "expected exactly one xen-*.gz in {}, found {}",
                    boot.display(),
                    images.len()
                )),
            }));
        }
    };
    let cached = image.is_file();
    if !cached {
        gunzip(&gz, &image)?;
    }
    Ok(XenImage {
        package: fetched.package,
        version: fetched.version,
        image,
        cached,
    })
}

/// `gzip -dc gz > image`, through a temporary file renamed into place; the result
/// must be an ELF file.
fn gunzip(gz: &Path, image: &Path) -> Result<(), HarnessError> {
    let tmp = image.with_extension(format!("tmp-{}", std::process::id()));
    let out =
        File::create(&tmp).map_err(HarnessError::io(format!("creating {}", tmp.display())))?;
    let output = Command::new("gzip")
        .arg("-dc")
        .arg(gz)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| HarnessError::Spawn {
            program: "gzip".to_string(),
            package: "gzip",
            source,
        })?;
    let check = || -> Result<(), String> {
        if !output.status.success() {
            return Err(format!(
                "gzip -dc {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let mut magic = [0u8; 4];
        File::open(&tmp)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| format!("reading {}: {e}", tmp.display()))?;
        if &magic != b"\x7fELF" {
            return Err(format!("{} is not an ELF file", gz.display()));
        }
        std::fs::rename(&tmp, image).map_err(|e| format!("renaming into place: {e}"))
    };
    check().map_err(|detail| {
        // Best effort: a leftover temporary file is only wasted space.
        let _ = std::fs::remove_file(&tmp);
        HarnessError::Io {
            what: format!("unpacking {} to {}", gz.display(), image.display()),
            source: std::io::Error::other(detail),
        }
    })
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[u64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2] as f64,
        n => (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0,
    }
}

/// `(max - min) / median` of `values`: 0 for fewer than two values or a zero median.
pub fn spread(values: &[u64]) -> f64 {
    let (Some(lo), Some(hi)) = (values.iter().min(), values.iter().max()) else {
        return 0.0;
    };
    let mid = median(values);
    if values.len() < 2 || mid == 0.0 {
        0.0
    } else {
        (hi - lo) as f64 / mid
    }
}

/// One metric of one hypervisor on one machine across runs.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricStats {
    /// The metric.
    pub name: String,
    /// The machine it was measured on.
    pub cpus: Cpus,
    /// Its unit (from the first run that printed it).
    pub unit: String,
    /// Its iteration count (from the first run that printed it).
    pub n: u64,
    /// Each run's `min=`, in run order (runs that printed the metric).
    pub runs_min: Vec<u64>,
    /// Each run's `median=`, in run order.
    pub runs_median: Vec<u64>,
}

impl MetricStats {
    /// The median across runs of the per-run medians: the headline number.
    pub fn median(&self) -> f64 {
        median(&self.runs_median)
    }

    /// The median across runs of the per-run minimums.
    pub fn min(&self) -> f64 {
        median(&self.runs_min)
    }

    /// The relative spread of the per-run medians ([`spread`]).
    pub fn spread(&self) -> f64 {
        spread(&self.runs_median)
    }

    /// Whether it counts instructions (so must reproduce within [`SPREAD_LIMIT`]).
    pub fn is_instructions(&self) -> bool {
        self.unit == INSTRUCTIONS
    }

    /// Its name in the table and in messages: the metric, and the machine unless
    /// it is the one-CPU boot (`rdtsc_overhead, 2 CPUs`).
    pub fn label(&self) -> String {
        match self.cpus {
            Cpus::One => self.name.clone(),
            cpus => format!("{}, {cpus}", self.name),
        }
    }

    /// The headline number with the cost of the measurement taken out: the
    /// median less `overhead`'s minimum (the [`RDTSC_OVERHEAD`] of the same
    /// hypervisor and machine, [`overhead_of`]). Every instruction metric but that one brackets its operation
    /// with two TSC reads; on Xen under TCG each read is a VM exit (Xen traps
    /// RDTSC when the CPU has no invariant TSC), on keel it is one instruction.
    pub fn net(&self, overhead: Option<&MetricStats>) -> f64 {
        match overhead {
            Some(o) if self.is_instructions() && self.name != RDTSC_OVERHEAD => {
                (self.median() - o.min()).max(0.0)
            }
            _ => self.median(),
        }
    }
}

/// The metric that measures two back-to-back TSC reads ([`MetricStats::net`]).
pub const RDTSC_OVERHEAD: &str = "rdtsc_overhead";

/// The [`RDTSC_OVERHEAD`] among `stats` measured on the same machine as `of`.
pub fn overhead_of<'a>(stats: &'a [MetricStats], of: &MetricStats) -> Option<&'a MetricStats> {
    stats
        .iter()
        .find(|s| s.name == RDTSC_OVERHEAD && s.cpus == of.cpus)
}

/// Per-metric statistics over `reports`, each with the machine it ran on, in the
/// order metrics first appear; the same name on two machines is two metrics.
pub fn stats<'a>(reports: impl IntoIterator<Item = (Cpus, &'a Report)>) -> Vec<MetricStats> {
    let mut out: Vec<MetricStats> = Vec::new();
    for (cpus, report) in reports {
        for m in &report.metrics {
            let i = match out.iter().position(|s| s.name == m.name && s.cpus == cpus) {
                Some(i) => i,
                None => {
                    out.push(MetricStats {
                        name: m.name.clone(),
                        cpus,
                        unit: m.unit.clone(),
                        n: m.n,
                        runs_min: Vec::new(),
                        runs_median: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[i].runs_min.push(m.min);
            out[i].runs_median.push(m.median);
        }
    }
    out
}

/// How big a hypervisor image is, from its ELF program headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSize {
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// Sum of `p_filesz` over PT_LOAD segments: what a loader copies.
    pub load_filesz: u64,
    /// Sum of `p_memsz` over PT_LOAD segments: memory taken, bss included.
    pub load_memsz: u64,
}

/// What is known about one hypervisor in a bench.
#[derive(Clone, Debug)]
pub struct HypervisorInfo {
    /// Which.
    pub hypervisor: Hypervisor,
    /// The image benchmarked (where it came from; the runs boot copies of it).
    pub image_path: PathBuf,
    /// Its sizes, if they could be read.
    pub image: Option<ImageSize>,
    /// The Debian package and version it came from (Xen).
    pub package: Option<(String, String)>,
    /// The QEMU command line of its runs on each machine.
    pub qemu_commands: Vec<(Cpus, String)>,
}

/// A metric whose per-run medians spread by more than [`SPREAD_LIMIT`].
#[derive(Clone, Debug, PartialEq)]
pub struct Unstable {
    /// On which hypervisor.
    pub hypervisor: Hypervisor,
    /// Which metric ([`MetricStats::label`]: with the machine).
    pub metric: String,
    /// Its spread ([`spread`]).
    pub spread: f64,
    /// The per-run medians.
    pub runs_median: Vec<u64>,
}

/// A whole bench: every run of every hypervisor, and what is known about them.
#[derive(Clone, Debug)]
pub struct Results {
    /// When it ran (seconds since the Unix epoch).
    pub unix_time: u64,
    /// The guest's command line (on one CPU; see [`Cpus::guest_cmdline`]).
    pub guest_cmdline: String,
    /// One entry per hypervisor.
    pub hypervisors: Vec<HypervisorInfo>,
    /// Every successful run, in the order they ran.
    pub samples: Vec<Sample>,
}

/// `a / b`, if both exist and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// A number for the table: an integer if it is one, else one decimal.
fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A ratio for the table: two decimals, or two significant digits below 0.1
/// (so a tiny ratio does not print as 0.00).
pub fn format_ratio(r: f64) -> String {
    if !r.is_finite() || r == 0.0 || r >= 0.1 {
        return format!("{r:.2}");
    }
    let decimals = (1.0 - r.log10().floor()).clamp(2.0, 9.0) as usize;
    format!("{r:.decimals$}")
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".to_string())
}

/// Renders rows as an aligned Markdown table (readable on a terminal, pasteable
/// into docs/performance.md); the first row is the header, and every column but
/// the first is right-aligned.
pub fn markdown_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |c: usize| {
        rows.iter()
            .filter_map(|r| r.get(c))
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
            .max(3)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let render = |row: &Vec<String>| {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(c, &w)| {
                let s = row.get(c).map_or("", String::as_str);
                if c == 0 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&render(row));
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, &w)| {
                    if c == 0 {
                        "-".repeat(w)
                    } else {
                        format!("{}:", "-".repeat(w - 1))
                    }
                })
                .collect();
            out.push_str(&format!("| {} |\n", rule.join(" | ")));
        }
    }
    out
}

impl Results {
    /// The successful runs of `hypervisor`, in order.
    pub fn samples_of(&self, hypervisor: Hypervisor) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.hypervisor == hypervisor)
    }

    /// Per-metric statistics of `hypervisor`'s runs (on either machine).
    pub fn stats(&self, hypervisor: Hypervisor) -> Vec<MetricStats> {
        stats(self.samples_of(hypervisor).map(|s| (s.cpus, &s.report)))
    }

    /// The median wall time (seconds) from QEMU's start to the guest's first line,
    /// on one CPU.
    pub fn wall_first_line(&self, hypervisor: Hypervisor) -> Option<f64> {
        let millis: Vec<u64> = self
            .samples_of(hypervisor)
            .filter(|s| s.cpus == Cpus::One)
            .map(|s| s.first_line.as_millis() as u64)
            .collect();
        (!millis.is_empty()).then(|| median(&millis) / 1000.0)
    }

    /// The version `hypervisor` printed (first run that printed one).
    pub fn version(&self, hypervisor: Hypervisor) -> Option<&str> {
        self.samples_of(hypervisor)
            .find_map(|s| s.version.as_deref())
    }

    fn info(&self, hypervisor: Hypervisor) -> Option<&HypervisorInfo> {
        self.hypervisors.iter().find(|i| i.hypervisor == hypervisor)
    }

    /// Metrics (machine, name) in table order: keel's order (one CPU first), then
    /// any only Xen printed.
    fn metric_names(&self) -> Vec<(Cpus, String)> {
        let mut names: Vec<(Cpus, String)> = Vec::new();
        for hv in Hypervisor::ALL {
            for s in self.stats(hv) {
                let key = (s.cpus, s.name);
                if !names.contains(&key) {
                    names.push(key);
                }
            }
        }
        names.sort_by_key(|(cpus, _)| *cpus);
        names
    }

    /// Instruction metrics whose per-run medians spread beyond [`SPREAD_LIMIT`].
    pub fn unstable(&self) -> Vec<Unstable> {
        let mut out = Vec::new();
        for hv in Hypervisor::ALL {
            for s in self.stats(hv) {
                if s.is_instructions() && s.spread() > SPREAD_LIMIT {
                    out.push(Unstable {
                        hypervisor: hv,
                        spread: s.spread(),
                        metric: s.label(),
                        runs_median: s.runs_median,
                    });
                }
            }
        }
        out
    }

    /// The comparison table (Markdown): per metric the median across runs of the
    /// per-run medians on keel and on Xen and their ratio, then image sizes and the
    /// wall time to the guest's first line.
    pub fn table(&self) -> String {
        let (keel, xen) = (self.stats(Hypervisor::Keel), self.stats(Hypervisor::Xen));
        let find = |stats: &[MetricStats], cpus: Cpus, name: &str| {
            stats
                .iter()
                .find(|s| s.name == name && s.cpus == cpus)
                .map(|s| s.net(overhead_of(stats, s)))
        };
        let mut rows = vec![vec![
            "metric".to_string(),
            "keel".to_string(),
            "Xen".to_string(),
            "keel/Xen".to_string(),
        ]];
        for (cpus, name) in self.metric_names() {
            let unit = keel
                .iter()
                .chain(&xen)
                .find(|s| s.name == name && s.cpus == cpus)
                .map_or(INSTRUCTIONS, |s| s.unit.as_str());
            let (k, x) = (find(&keel, cpus, &name), find(&xen, cpus, &name));
            let net = if unit == INSTRUCTIONS && name != RDTSC_OVERHEAD {
                ", net"
            } else {
                ""
            };
            let machine = match cpus {
                Cpus::One => String::new(),
                cpus => format!(", {cpus}"),
            };
            let label = format!("{name} ({unit}{net}{machine})");
            rows.push(vec![
                label,
                or_dash(k.map(number)),
                or_dash(x.map(number)),
                or_dash(ratio(k, x).map(format_ratio)),
            ]);
        }
        let size = |hv: Hypervisor, f: fn(&ImageSize) -> u64| {
            self.info(hv)
                .and_then(|i| i.image.as_ref())
                .map(f)
                .map(|b| b as f64)
        };
        for (label, f) in [
            (
                "image: PT_LOAD file bytes (KiB)",
                (|i: &ImageSize| i.load_filesz) as fn(&ImageSize) -> u64,
            ),
            ("image: PT_LOAD memory incl. bss (KiB)", |i| i.load_memsz),
        ] {
            let (k, x) = (size(Hypervisor::Keel, f), size(Hypervisor::Xen, f));
            rows.push(vec![
                label.to_string(),
                or_dash(k.map(|b| format!("{:.0}", b / 1024.0))),
                or_dash(x.map(|b| format!("{:.0}", b / 1024.0))),
                or_dash(ratio(k, x).map(format_ratio)),
            ]);
        }
        let (k, x) = (
            self.wall_first_line(Hypervisor::Keel),
            self.wall_first_line(Hypervisor::Xen),
        );
        rows.push(vec![
            "wall time to first guest line, s (noisy)".to_string(),
            or_dash(k.map(|s| format!("{s:.2}"))),
            or_dash(x.map(|s| format!("{s:.2}"))),
            or_dash(ratio(k, x).map(format_ratio)),
        ]);
        markdown_table(&rows)
    }

    /// Everything as one JSON value: versions, QEMU command lines, image sizes,
    /// every run's values, and per metric the medians, ratios and spreads.
    pub fn json(&self) -> Value {
        let mut hypervisors = serde_json::Map::new();
        for hv in Hypervisor::ALL {
            let info = self.info(hv);
            let runs = self.samples_of(hv).count();
            hypervisors.insert(
                hv.key().to_string(),
                json!({
                    "name": hv.name(),
                    "version": self.version(hv),
                    "package": info.and_then(|i| i.package.as_ref()).map(|(p, v)| json!({"name": p, "version": v})),
                    "image_path": info.map(|i| i.image_path.display().to_string()),
                    "image": info.and_then(|i| i.image).map(|s| json!({
                        "file_bytes": s.file_bytes,
                        "pt_load_filesz": s.load_filesz,
                        "pt_load_memsz": s.load_memsz,
                    })),
                    "cmdlines": Cpus::ALL.iter().map(|c| (c.key().to_string(), json!(hv.cmdline_on(*c)))).collect::<serde_json::Map<_, _>>(),
                    "qemu_commands": info.map(|i| i.qemu_commands.iter().map(|(c, q)| (c.key().to_string(), json!(q))).collect::<serde_json::Map<_, _>>()),
                    "runs": runs,
                    "wall_first_line_s_median": self.wall_first_line(hv),
                }),
            );
        }
        let runs: Vec<Value> = self
            .samples
            .iter()
            .map(|s| {
                json!({
                    "hypervisor": s.hypervisor.key(),
                    "cpus": s.cpus.count(),
                    "wall_first_line_s": s.first_line.as_secs_f64(),
                    "elapsed_s": s.elapsed.as_secs_f64(),
                    "work_dir": s.work_dir.display().to_string(),
                    "metrics": s.report.metrics.iter().map(|m| json!({
                        "name": m.name, "n": m.n, "min": m.min, "median": m.median, "unit": m.unit,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let per_hv: Vec<(Hypervisor, Vec<MetricStats>)> = Hypervisor::ALL
            .iter()
            .map(|&hv| (hv, self.stats(hv)))
            .collect();
        let metrics: Vec<Value> = self
            .metric_names()
            .into_iter()
            .map(|(cpus, name)| {
                let mut entry = serde_json::Map::new();
                entry.insert("name".into(), json!(name));
                entry.insert("cpus".into(), json!(cpus.count()));
                let mut medians = Vec::new();
                for (hv, stats) in &per_hv {
                    let s = stats.iter().find(|s| s.name == name && s.cpus == cpus);
                    if let Some(s) = s {
                        entry.entry("unit").or_insert_with(|| json!(s.unit));
                    }
                    medians.push(s.map(|s| s.net(overhead_of(stats, s))));
                    entry.insert(
                        hv.key().to_string(),
                        s.map_or(Value::Null, |s| {
                            json!({
                                "median": s.median(),
                                "net": s.net(overhead_of(stats, s)),
                                "min": s.min(),
                                "n": s.n,
                                "spread": s.spread(),
                                "runs_median": s.runs_median,
                                "runs_min": s.runs_min,
                            })
                        }),
                    );
                }
                let r = match medians[..] {
                    [k, x] => ratio(k, x),
                    _ => None,
                };
                entry.insert("keel_over_xen".into(), json!(r));
                Value::Object(entry)
            })
            .collect();
        let unstable: Vec<Value> = self
            .unstable()
            .iter()
            .map(|u| {
                json!({"hypervisor": u.hypervisor.key(), "metric": u.metric, "spread": u.spread})
            })
            .collect();
        json!({
            "unix_time": self.unix_time,
            "guest_cmdline": self.guest_cmdline,
            "guest_cmdlines": Cpus::ALL.iter().map(|c| (c.key().to_string(), json!(c.guest_cmdline(&self.guest_cmdline)))).collect::<serde_json::Map<_, _>>(),
            "qemu_options": QEMU_OPTIONS,
            "spread_limit": SPREAD_LIMIT,
            "hypervisors": hypervisors,
            "metrics": metrics,
            "unstable": unstable,
            "runs": runs,
        })
    }
}

/// The largest relative change of any metric's median between two benches' JSON
/// ([`Results::json`]): `(hypervisor key, metric, change)`, change as a fraction
/// of the previous value; a metric of the two-CPU boot is named with its machine
/// (`rdtsc_overhead, 2 CPUs`), and one without `cpus` (a bench from before the
/// two-CPU boot) counts as the one-CPU boot's. `None` if they share no metric.
pub fn drift(previous: &Value, current: &Value) -> Option<(String, String, f64)> {
    let medians = |v: &Value| -> Vec<(String, String, f64)> {
        let mut out = Vec::new();
        for m in v["metrics"].as_array().into_iter().flatten() {
            let Some(name) = m["name"].as_str() else {
                continue;
            };
            let name = match m["cpus"].as_u64().unwrap_or(1) {
                1 => name.to_string(),
                n => format!("{name}, {n} CPUs"),
            };
            for hv in Hypervisor::ALL {
                if let Some(median) = m[hv.key()]["median"].as_f64() {
                    out.push((hv.key().to_string(), name.clone(), median));
                }
            }
        }
        out
    };
    let before = medians(previous);
    let mut worst: Option<(String, String, f64)> = None;
    for (hv, name, now) in medians(current) {
        let Some((_, _, then)) = before.iter().find(|(h, n, _)| *h == hv && *n == name) else {
            continue;
        };
        let change = if *then == 0.0 {
            if now == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            (now - then).abs() / then
        };
        if worst.as_ref().is_none_or(|w| change > w.2) {
            worst = Some((hv, name, change));
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEL_LOG: &str = "\
(KEEL) keel 0.1.0 (x86_64, release)
(KEEL) d0: built
(d0) pvh64 (long mode): hvm_start_info at 0x1000, command line \"mode=bench\"
(d0) BENCH hypercall_xen_version n=1000 min=1834 median=1840 unit=insns
(d0) BENCH console_io_64b n=100 min=5000 median=5100 unit=insns
(KEEL) d0: some log line in between
(d0) BENCH boot_to_first_line n=1 min=123456 median=123456 unit=insns
(d0) BENCH done
(d0) Test result: SUCCESS
(KEEL) d0 shut down: poweroff
(KEEL) Powering off
";

    const XEN_LOG: &str = "\
 Xen 4.17.5-pre
(XEN) Xen version 4.17.5-pre (Debian 4.17.5+72-g01140da4e8-1) (pkg-xen-devel@lists.alioth.debian.org) (x86_64-linux-gnu-gcc (Debian 12.2.0-14+deb12u1) 12.2.0) debug=n Mon Jan  1 00:00:00 UTC 2025
(XEN) Dom0 has maximum 1 VCPUs
pvh64 (long mode): hvm_start_info at 0x1000, command line \"mode=bench\"
BENCH hypercall_xen_version n=1000 min=1500 median=1520 unit=insns
BENCH console_io_64b n=100 min=4000 median=4100 unit=insns
BENCH boot_to_first_line n=1 min=99999 median=99999 unit=insns
BENCH done
Test result: SUCCESS
(XEN) Hardware Dom0 halted: halting machine
";

    #[test]
    fn the_patterns_compile() {
        for r in [
            &BENCH_LINE,
            &TEST_RESULT,
            &FIRST_LINE_RE,
            &KEEL_VERSION,
            &XEN_VERSION,
            &HYPERVISOR_END,
            &HYPERVISOR_FAILED,
        ] {
            LazyLock::force(r);
        }
    }

    #[test]
    fn parses_keel_and_xen_logs() {
        let keel = parse(KEEL_LOG).expect("keel log parses");
        assert_eq!(
            keel.metrics[0],
            Metric {
                name: "hypercall_xen_version".into(),
                n: 1000,
                min: 1834,
                median: 1840,
                unit: "insns".into()
            }
        );
        let names: Vec<&str> = keel.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hypercall_xen_version",
                "console_io_64b",
                "boot_to_first_line"
            ]
        );
        assert_eq!(
            keel.missing(METRICS),
            [
                "evtchn_send_upcall",
                "grant_copy_4k",
                "sched_yield",
                "rdtsc_overhead"
            ]
        );
        assert_eq!(keel.missing(Cpus::Two.metrics()), IPI_METRICS);
        let xen = parse(XEN_LOG).expect("xen log parses");
        assert_eq!(xen.get("console_io_64b").map(|m| m.min), Some(4000));
        assert_eq!(Hypervisor::Keel.version(KEEL_LOG).as_deref(), Some("0.1.0"));
        assert_eq!(
            Hypervisor::Xen.version(XEN_LOG).as_deref(),
            Some("4.17.5-pre")
        );
        assert_eq!(Hypervisor::Xen.version(KEEL_LOG), None);
    }

    #[test]
    fn unknown_metrics_and_fields_are_accepted() {
        let r = parse("BENCH new_thing n=3 min=1 median=2 unit=ns extra=7\nBENCH done\n")
            .expect("open set");
        assert_eq!(r.metrics[0].unit, "ns");
        assert_eq!(r.metrics[0].name, "new_thing");
    }

    fn malformed_why(log: &str) -> String {
        match parse(log) {
            Err(BenchError::Malformed { why, .. }) => why,
            other => panic!("expected Malformed for {log:?}, got {other:?}"),
        }
    }

    #[test]
    fn malformed_lines_are_errors() {
        let done = "\nBENCH done\n";
        for (line, why) in [
            ("BENCH", "nothing after BENCH"),
            ("BENCH x n=1 min=1 median=1", "no unit="),
            ("BENCH x n=1 min=1 unit=insns", "no median="),
            ("BENCH x min=1 median=1 unit=insns", "no n="),
            ("BENCH x n=1 min=-1 median=1 unit=insns", "not an unsigned"),
            ("BENCH x n=1 min=1 median=1e3 unit=insns", "not an unsigned"),
            ("BENCH x n=1 min=1 min=1 median=1 unit=insns", "given twice"),
            ("BENCH x n=1 min=1 median=1 unit=", "empty unit"),
            ("BENCH x n=0 min=1 median=1 unit=insns", "n=0"),
            ("BENCH x n=1 min=5 median=1 unit=insns", "min 5 > median 1"),
            (
                "BENCH x n=1 min=1 median=1 unit=insns junk",
                "not key=value",
            ),
            ("BENCH x! n=1 min=1 median=1 unit=insns", "bad metric name"),
            ("BENCH done now", "text after BENCH done"),
        ] {
            let why_got = malformed_why(&format!("{line}{done}"));
            assert!(why_got.contains(why), "{line:?}: {why_got:?}");
        }
        assert!(
            malformed_why("BENCH done\nBENCH x n=1 min=1 median=1 unit=insns\n")
                .contains("after BENCH done")
        );
        assert!(malformed_why("BENCH done\nBENCH done\n").contains("second"));
        let err = parse("(d0) BENCH x n=1 min=1\nBENCH done\n").unwrap_err();
        assert!(err.to_string().contains("(d0) BENCH x n=1 min=1"), "{err}");
    }

    #[test]
    fn failures_duplicates_and_missing_done() {
        let err = parse("(d0) BENCH a n=1 min=1 median=1 unit=insns\n(d0) BENCH error grant copy: -22\nBENCH done\n")
            .unwrap_err();
        assert!(
            matches!(&err, BenchError::GuestFailed { line } if line == "(d0) BENCH error grant copy: -22"),
            "{err:?}"
        );
        let err = parse("BENCH done\nTest result: FAILURE evtchn\n").unwrap_err();
        assert!(matches!(err, BenchError::GuestFailed { .. }), "{err:?}");
        let err = parse(
            "BENCH a n=1 min=1 median=1 unit=insns\n(d0) BENCH a n=2 min=1 median=1 unit=insns\nBENCH done\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, BenchError::Duplicate { metric } if metric == "a"),
            "{err:?}"
        );
        let err = parse("(d0) unknown mode=bench\n(KEEL) d0 crashed: triple fault\n").unwrap_err();
        match &err {
            BenchError::NoDone { metrics: 0, tail } => {
                assert!(tail.contains("unknown mode=bench"), "{tail}")
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("without `BENCH done`"));
        assert!(matches!(parse("BENCH done\n"), Err(BenchError::NoMetrics)));
        assert!(matches!(parse(""), Err(BenchError::NoDone { .. })));
    }

    #[test]
    fn bench_must_be_a_word() {
        let r = parse("(XEN) BENCHMARK foo\nxBENCH junk\nBENCH a n=1 min=1 median=1 unit=insns\n\tBENCH done  \n")
            .expect("only whole-word BENCH counts");
        assert_eq!(r.metrics.len(), 1);
    }

    #[test]
    fn never_panics_on_junk() {
        for log in [
            "BENCH \u{fffd}\u{fffd}",
            "BENCH a n=99999999999999999999999 min=1 median=1 unit=insns",
            "BENCH a =1",
            "BENCH a n= min= median= unit=",
            "Test result:",
            "BENCH error",
        ] {
            let _ = parse(log);
        }
    }

    fn strip(args: &[String], hv: Hypervisor, cpus: Cpus) -> Vec<String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-kernel" => assert_eq!(it.next().map(String::as_str), Some(hv.kernel_file())),
                "-append" => assert_eq!(it.next(), Some(&hv.cmdline_on(cpus))),
                _ => out.push(a.clone()),
            }
        }
        out
    }

    #[test]
    fn qemu_options_differ_only_in_kernel_and_append() {
        for cpus in Cpus::ALL {
            let keel = qemu_args(Hypervisor::Keel, cpus, GUEST_CMDLINE).expect("keel args");
            let xen = qemu_args(Hypervisor::Xen, cpus, GUEST_CMDLINE).expect("xen args");
            assert_ne!(keel, xen);
            let (k, x) = (
                strip(&keel, Hypervisor::Keel, cpus),
                strip(&xen, Hypervisor::Xen, cpus),
            );
            assert_eq!(k, x, "{cpus}");
        }
        let keel = qemu_args(Hypervisor::Keel, Cpus::One, GUEST_CMDLINE).expect("keel args");
        let line = keel.join(" ");
        assert!(
            line.starts_with("-accel tcg -cpu max -icount shift=0,sleep=off -m 512M"),
            "{line}"
        );
        assert!(line.contains("-serial file:serial.log"), "{line}");
        assert!(
            line.ends_with(
                "-smp 1 -kernel keel.elf -append console=com1 -initrd pvh64.elf mode=bench"
            ),
            "{line}"
        );
        let xen = qemu_args(Hypervisor::Xen, Cpus::One, GUEST_CMDLINE).expect("xen args");
        assert!(
            xen.join(" ").contains(
                "-smp 1 -kernel xen -append console=com1 dom0=pvh dom0-iommu=none -initrd"
            )
        );
        assert!(qemu_args(Hypervisor::Keel, Cpus::One, "a,b").is_err());
    }

    #[test]
    fn the_two_cpu_boot_gives_both_the_same_words() {
        let two = |hv| {
            qemu_args(hv, Cpus::Two, GUEST_CMDLINE)
                .expect("args")
                .join(" ")
        };
        assert!(
            two(Hypervisor::Keel).ends_with(
                "-smp 2 -kernel keel.elf -append console=com1 dom0_max_vcpus=2 dom0_vcpus_pin \
                 -initrd pvh64.elf mode=bench vcpus=2"
            ),
            "{}",
            two(Hypervisor::Keel)
        );
        assert!(
            two(Hypervisor::Xen).contains(
                "-smp 2 -kernel xen -append console=com1 dom0=pvh dom0-iommu=none \
                 dom0_max_vcpus=2 dom0_vcpus_pin -initrd pvh64.elf mode=bench vcpus=2"
            ),
            "{}",
            two(Hypervisor::Xen)
        );
        assert_eq!(Hypervisor::Keel.cmdline_on(Cpus::One), KEEL_CMDLINE);
        assert_eq!(
            Cpus::Two.guest_cmdline("mode=bench iterations=5"),
            "mode=bench iterations=5 vcpus=2"
        );
        assert_eq!(Cpus::Two.metrics(), IPI_METRICS);
        assert!(
            IPI_METRICS.contains(&RDTSC_OVERHEAD),
            "each boot nets its own"
        );
    }

    #[test]
    fn shell_lines_quote_what_needs_it() {
        let args = [
            "-append".to_string(),
            "console=com1 x".to_string(),
            "it's".to_string(),
        ];
        assert_eq!(
            shell_line(QEMU, &args),
            r"qemu-system-x86_64 -append 'console=com1 x' 'it'\''s'"
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn watch_stops_after_done_and_test_result() {
        let mut w = Watch::default();
        w.line("(KEEL) keel 0.1.0", ms(10));
        w.line("(d0) pvh64 (long mode): hvm_start_info at 0x0", ms(100));
        w.line("(d0) pvh64 (long mode): hvm_start_info again", ms(200));
        assert_eq!(w.first_line, Some(ms(100)));
        w.line("(d0) BENCH a n=1 min=1 median=1 unit=insns", ms(300));
        assert!(!w.should_stop(ms(100_000)));
        w.line("(d0) BENCH done", ms(400));
        assert!(!w.should_stop(ms(450)));
        assert!(
            w.should_stop(ms(400) + GRACE),
            "no Test result: grace ends it"
        );
        w.line("(d0) Test result: SUCCESS", ms(500));
        assert!(w.should_stop(ms(500)));
    }

    #[test]
    fn watch_gives_failures_a_grace_period() {
        for line in [
            "BENCH error boom",
            "Test result: FAILURE x",
            "Test result: SUCCESS",
            "(KEEL) FATAL: page fault",
            "(XEN) Panic on CPU 0:",
            "(XEN) Hardware Dom0 halted: halting machine",
            "(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.",
        ] {
            let mut w = Watch::default();
            w.line(line, ms(1000));
            assert!(!w.should_stop(ms(1001)), "{line}");
            assert!(w.should_stop(ms(1000) + GRACE), "{line}");
        }
        let mut w = Watch::default();
        w.line("(XEN) Xen version 4.17", ms(1));
        w.line("(d0) hello", ms(2));
        assert!(!w.should_stop(ms(1_000_000)));
    }

    fn run(hv: Hypervisor, serial: &str) -> BenchRun {
        BenchRun {
            hypervisor: hv,
            cpus: Cpus::One,
            serial: serial.to_string(),
            first_line: Some(ms(1500)),
            elapsed: ms(9000),
            status: std::os::unix::process::ExitStatusExt::from_raw(0),
            killed: false,
            timed_out: false,
            timeout: RUN_TIMEOUT,
            work_dir: PathBuf::from("/nonexistent/bench-keel"),
            command_line: String::new(),
        }
    }

    #[test]
    fn samples_name_the_hypervisor_and_the_line() {
        let s = run(Hypervisor::Keel, KEEL_LOG).sample().expect("good run");
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        assert_eq!(s.first_line, ms(1500));

        let bad = format!("{XEN_LOG}BENCH error late\n");
        let err = run(Hypervisor::Xen, &bad).sample().unwrap_err().to_string();
        assert!(err.starts_with("bench run on Xen failed: "), "{err}");
        assert!(err.contains("\"BENCH error late\""), "{err}");
        assert!(err.contains("/nonexistent/bench-keel"), "{err}");

        let fatal = "(KEEL) FATAL: double fault\n(d0) BENCH done\n";
        let err = run(Hypervisor::Keel, fatal)
            .sample()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hypervisor failed: \"(KEEL) FATAL: double fault\""),
            "{err}"
        );

        let mut slow = run(
            Hypervisor::Keel,
            "(d0) BENCH a n=1 min=1 median=1 unit=insns\n",
        );
        slow.timed_out = true;
        let err = slow.sample().unwrap_err().to_string();
        assert!(err.contains("timed out after 300 s"), "{err}");

        let mut silent = run(Hypervisor::Keel, KEEL_LOG);
        silent.first_line = None;
        assert!(
            silent
                .sample()
                .unwrap_err()
                .to_string()
                .contains("first line")
        );
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3, 1, 2]), 2.0);
        assert_eq!(median(&[4, 1, 3, 2]), 2.5);
        assert_eq!(spread(&[100]), 0.0);
        assert_eq!(spread(&[100, 100, 100]), 0.0);
        assert_eq!(spread(&[99, 100, 101]), 0.02);
        assert_eq!(spread(&[0, 0]), 0.0);
    }

    fn report(values: &[(&str, u64, u64)]) -> Report {
        Report {
            metrics: values
                .iter()
                .map(|&(name, min, median)| Metric {
                    name: name.into(),
                    n: 10,
                    min,
                    median,
                    unit: INSTRUCTIONS.into(),
                })
                .collect(),
        }
    }

    fn sample(hv: Hypervisor, values: &[(&str, u64, u64)], first_ms: u64) -> Sample {
        Sample {
            hypervisor: hv,
            cpus: Cpus::One,
            report: report(values),
            first_line: ms(first_ms),
            elapsed: ms(first_ms * 2),
            version: Some(
                if hv == Hypervisor::Keel {
                    "0.1.0"
                } else {
                    "4.17.5"
                }
                .into(),
            ),
            work_dir: PathBuf::from("/w"),
        }
    }

    fn results() -> Results {
        let k = Hypervisor::Keel;
        let x = Hypervisor::Xen;
        Results {
            unix_time: 1_700_000_000,
            guest_cmdline: GUEST_CMDLINE.into(),
            hypervisors: vec![
                HypervisorInfo {
                    hypervisor: k,
                    image_path: "/w/keel.elf".into(),
                    image: Some(ImageSize {
                        file_bytes: 4 << 20,
                        load_filesz: 512 * 1024,
                        load_memsz: 1024 * 1024,
                    }),
                    package: None,
                    qemu_commands: vec![
                        (Cpus::One, "qemu keel".into()),
                        (Cpus::Two, "qemu keel -smp 2".into()),
                    ],
                },
                HypervisorInfo {
                    hypervisor: x,
                    image_path: "/w/xen".into(),
                    image: Some(ImageSize {
                        file_bytes: 2 << 20,
                        load_filesz: 2048 * 1024,
                        load_memsz: 4096 * 1024,
                    }),
                    package: Some((XEN_PACKAGE.into(), "4.17.5+72-1".into())),
                    qemu_commands: vec![
                        (Cpus::One, "qemu xen".into()),
                        (Cpus::Two, "qemu xen -smp 2".into()),
                    ],
                },
            ],
            samples: vec![
                sample(k, &[("a", 90, 100), ("b", 10, 20)], 2000),
                sample(x, &[("a", 180, 200), ("c", 5, 5)], 8000),
                sample(k, &[("a", 91, 103), ("b", 10, 20)], 2100),
                sample(x, &[("a", 180, 200), ("c", 5, 5)], 8200),
                sample(k, &[("a", 90, 100), ("b", 10, 20)], 1900),
                sample(x, &[("a", 180, 200), ("c", 5, 5)], 9000),
            ],
        }
    }

    #[test]
    fn stats_across_runs() {
        let r = results();
        let keel = r.stats(Hypervisor::Keel);
        assert_eq!(keel[0].name, "a");
        assert_eq!(keel[0].runs_median, [100, 103, 100]);
        assert_eq!(keel[0].median(), 100.0);
        assert_eq!(keel[0].min(), 90.0);
        assert!((keel[0].spread() - 0.03).abs() < 1e-9);
        assert_eq!(r.wall_first_line(Hypervisor::Keel), Some(2.0));
        assert_eq!(r.wall_first_line(Hypervisor::Xen), Some(8.2));
        let unstable = r.unstable();
        assert_eq!(unstable.len(), 1);
        assert_eq!(
            (unstable[0].hypervisor, unstable[0].metric.as_str()),
            (Hypervisor::Keel, "a")
        );
        assert_eq!(r.version(Hypervisor::Xen), Some("4.17.5"));
    }

    #[test]
    fn table_rows() {
        let t = results().table();
        let lines: Vec<&str> = t.lines().collect();
        let header: Vec<&str> = lines[0].split('|').map(str::trim).collect();
        assert_eq!(header, ["", "metric", "keel", "Xen", "keel/Xen", ""], "{t}");
        assert!(lines[1].starts_with("| ------"), "{t}");
        let row = |label: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(&format!("| {label}")))
                .map(|l| {
                    l.split('|')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_else(|| panic!("no row {label} in\n{t}"))
        };
        assert_eq!(row("a (insns"), ["a (insns, net)", "100", "200", "0.50"]);
        assert_eq!(row("b (insns"), ["b (insns, net)", "20", "-", "-"]);
        assert_eq!(row("c (insns"), ["c (insns, net)", "-", "5", "-"]);
        assert_eq!(
            row("image: PT_LOAD file bytes"),
            ["image: PT_LOAD file bytes (KiB)", "512", "2048", "0.25"]
        );
        assert_eq!(row("image: PT_LOAD memory")[1..], ["1024", "4096", "0.25"]);
        assert_eq!(row("wall time")[1..], ["2.00", "8.20", "0.24"]);
        // Aligned: every line as wide as the header.
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{t}"
        );
    }

    #[test]
    fn net_takes_out_the_minimum_rdtsc_overhead() {
        let m = |name: &str, unit: &str, mins: &[u64], medians: &[u64]| MetricStats {
            name: name.to_string(),
            cpus: Cpus::One,
            unit: unit.to_string(),
            n: 10,
            runs_min: mins.to_vec(),
            runs_median: medians.to_vec(),
        };
        let overhead = m(
            RDTSC_OVERHEAD,
            INSTRUCTIONS,
            &[5750, 5750, 5751],
            &[5751; 3],
        );
        let call = m("hypercall", INSTRUCTIONS, &[11679; 3], &[11680; 3]);
        assert_eq!(call.net(Some(&overhead)), 11680.0 - 5750.0);
        assert_eq!(call.net(None), 11680.0, "no overhead metric: raw");
        assert_eq!(
            overhead.net(Some(&overhead)),
            5751.0,
            "the overhead itself stays raw"
        );
        let secs = m("wall", "s", &[3; 3], &[3; 3]);
        assert_eq!(
            secs.net(Some(&overhead)),
            3.0,
            "only instruction counts are net"
        );
        let tiny = m("tiny", INSTRUCTIONS, &[1; 3], &[2; 3]);
        assert_eq!(tiny.net(Some(&overhead)), 0.0, "never negative");
    }

    #[test]
    fn json_holds_everything() {
        let v = results().json();
        assert_eq!(v["hypervisors"]["keel"]["version"], "0.1.0");
        assert_eq!(v["hypervisors"]["xen"]["package"]["version"], "4.17.5+72-1");
        assert_eq!(v["hypervisors"]["xen"]["qemu_commands"]["1cpu"], "qemu xen");
        assert_eq!(
            v["hypervisors"]["xen"]["qemu_commands"]["2cpus"],
            "qemu xen -smp 2"
        );
        assert_eq!(
            v["hypervisors"]["keel"]["cmdlines"]["2cpus"],
            "console=com1 dom0_max_vcpus=2 dom0_vcpus_pin"
        );
        assert_eq!(v["guest_cmdlines"]["2cpus"], "mode=bench vcpus=2");
        assert_eq!(v["runs"][0]["cpus"], 1);
        assert_eq!(
            v["hypervisors"]["xen"]["image"]["pt_load_filesz"],
            2048 * 1024
        );
        assert_eq!(v["runs"].as_array().map(Vec::len), Some(6));
        assert_eq!(v["runs"][1]["hypervisor"], "xen");
        assert_eq!(v["runs"][1]["metrics"][0]["median"], 200);
        let a = &v["metrics"][0];
        assert_eq!(a["name"], "a");
        assert_eq!(a["cpus"], 1);
        assert_eq!(a["unit"], "insns");
        assert_eq!(a["keel"]["median"], 100.0);
        assert_eq!(a["keel"]["runs_median"], json!([100, 103, 100]));
        assert_eq!(a["xen"]["spread"], 0.0);
        assert_eq!(a["keel_over_xen"], 0.5);
        assert_eq!(v["metrics"][1]["xen"], Value::Null);
        assert_eq!(v["metrics"][1]["keel_over_xen"], Value::Null);
        assert_eq!(v["unstable"][0]["metric"], "a");
        assert_eq!(v["qemu_options"][4], "-icount");
    }

    /// keel and Xen, each booted on one CPU and on two, with an `rdtsc_overhead`
    /// on each machine that differs.
    fn two_machines() -> Results {
        let mut r = results();
        r.samples.clear();
        for (hv, o1, o2, first_ms) in [
            (Hypervisor::Keel, 3, 4, 2000),
            (Hypervisor::Xen, 5750, 5800, 8000),
        ] {
            for _ in 0..3 {
                let mut one = sample(hv, &[(RDTSC_OVERHEAD, o1, o1), ("a", 100, 110)], first_ms);
                one.cpus = Cpus::One;
                let mut two = sample(
                    hv,
                    &[(RDTSC_OVERHEAD, o2, o2), (IPI_METRIC, 20_000, 20_500)],
                    first_ms * 3,
                );
                two.cpus = Cpus::Two;
                r.samples.extend([one, two]);
            }
        }
        r
    }

    #[test]
    fn two_machines_are_kept_apart() {
        let r = two_machines();
        let keel = r.stats(Hypervisor::Keel);
        let labels: Vec<String> = keel.iter().map(MetricStats::label).collect();
        assert_eq!(
            labels,
            [
                "rdtsc_overhead",
                "a",
                "rdtsc_overhead, 2 CPUs",
                &format!("{IPI_METRIC}, 2 CPUs")
            ]
        );
        assert!(keel.iter().all(|s| s.runs_median.len() == 3), "{keel:?}");
        let ipi = &keel[3];
        assert_eq!(
            ipi.net(overhead_of(&keel, ipi)),
            20_500.0 - 4.0,
            "net of its own machine's overhead"
        );
        assert_eq!(keel[1].net(overhead_of(&keel, &keel[1])), 107.0);
        assert_eq!(
            r.wall_first_line(Hypervisor::Keel),
            Some(2.0),
            "one CPU only"
        );

        let t = r.table();
        let row = |label: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("| {label} ")))
                .unwrap_or_else(|| panic!("no row {label} in\n{t}"))
                .split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(row("rdtsc_overhead (insns)")[1..], ["3", "5750", "0.00052"]);
        assert_eq!(
            row("rdtsc_overhead (insns, 2 CPUs)")[1..],
            ["4", "5800", "0.00069"]
        );
        assert_eq!(
            row(&format!("{IPI_METRIC} (insns, net, 2 CPUs)"))[1..],
            ["20496", "14700", "1.39"]
        );
        let order: Vec<&str> = t
            .lines()
            .map(|l| l.split('|').nth(1).unwrap_or("").trim())
            .collect();
        let at = |label: &str| order.iter().position(|l| l.starts_with(label));
        assert!(
            at("a (") < at("rdtsc_overhead (insns, 2"),
            "one CPU first:\n{t}"
        );

        let v = r.json();
        let ipi = v["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == IPI_METRIC))
            .expect("the IPI metric in the JSON");
        assert_eq!(ipi["cpus"], 2);
        assert_eq!(ipi["xen"]["net"], 20_500.0 - 5800.0);
        let overheads: Vec<&Value> = v["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["name"] == RDTSC_OVERHEAD)
            .collect();
        assert_eq!(overheads.len(), 2, "one per machine");

        // The two-CPU boot's rdtsc_overhead is its own metric.
        let mut later = two_machines();
        for s in later.samples.iter_mut().filter(|s| s.cpus == Cpus::Two) {
            s.report.metrics[0].median = 1_000_000;
        }
        let (_, metric, _) = drift(&r.json(), &later.json()).expect("shared metrics");
        assert_eq!(metric, "rdtsc_overhead, 2 CPUs");
        // A bench from before the two-CPU boot has no `cpus`: its metrics are
        // the one-CPU boot's.
        let mut old = r.json();
        if let Some(metrics) = old["metrics"].as_array_mut() {
            metrics.retain(|m| m["cpus"] == 1);
            for m in metrics.iter_mut().filter_map(Value::as_object_mut) {
                m.remove("cpus");
            }
        }
        assert_eq!(drift(&old, &later.json()).map(|d| d.2), Some(0.0));
    }

    #[test]
    fn drift_between_benches() {
        let before = results().json();
        assert_eq!(drift(&before, &before).map(|d| d.2), Some(0.0));
        let mut later = results();
        for s in later
            .samples
            .iter_mut()
            .filter(|s| s.hypervisor == Hypervisor::Xen)
        {
            s.report.metrics[1].median = 6;
            s.report.metrics[1].min = 6;
        }
        let (hv, metric, change) = drift(&before, &later.json()).expect("shared metrics");
        assert_eq!((hv.as_str(), metric.as_str()), ("xen", "c"));
        assert!((change - 0.2).abs() < 1e-9);
        assert_eq!(drift(&json!({}), &before), None);
    }

    #[test]
    fn ratios_keep_two_significant_digits() {
        assert_eq!(format_ratio(0.2218), "0.22");
        assert_eq!(format_ratio(3.5), "3.50");
        assert_eq!(format_ratio(3.0 / 5751.0), "0.00052");
        assert_eq!(format_ratio(0.05), "0.050");
        assert_eq!(format_ratio(0.0), "0.00");
    }

    #[test]
    fn xen_image_names() {
        assert_eq!(xen_image_name("xen-4.17-amd64.gz"), Some("xen-4.17-amd64"));
        assert_eq!(xen_image_name("xen-4.17-amd64.config"), None);
        assert_eq!(xen_image_name("vmlinuz.gz"), None);
        assert_eq!(xen_image_name("xen-.gz"), None);
    }

    #[test]
    fn watch_reaps_and_reads_the_final_serial() {
        let dir = std::env::temp_dir().join(format!("keel-bench-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        // Like Xen: says it is done and then never exits.
        let child = Command::new("sh")
            .args([
                "-c",
                "printf 'pvh64 (long mode): hvm_start_info x\\r\\nBENCH done\\nTest result: SUCCESS\\n' > serial.log; exec sleep 30",
            ])
            .current_dir(&dir)
            .spawn()
            .expect("sh runs");
        let start = Instant::now();
        let w = watch(
            child,
            &dir.join(SERIAL_FILE),
            start,
            Duration::from_secs(20),
        )
        .expect("watched");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(w.killed && !w.timed_out);
        assert!(w.watch.first_line.is_some() && w.watch.done);
        assert!(w.raw.ends_with(b"Test result: SUCCESS\n"));

        // Exits by itself, like keel.
        let child = Command::new("sh")
            .args(["-c", "echo 'BENCH done' > second.log; exit 0"])
            .current_dir(&dir)
            .spawn()
            .expect("sh runs");
        let w = watch(
            child,
            &dir.join("second.log"),
            Instant::now(),
            Duration::from_secs(20),
        )
        .expect("watched");
        assert!(!w.killed && w.status.success());
        assert_eq!(w.raw, b"BENCH done\n");

        // Hangs silently: the timeout kills it.
        let child = Command::new("sh")
            .args(["-c", "exec sleep 30"])
            .current_dir(&dir)
            .spawn()
            .expect("sh runs");
        let w = watch(child, &dir.join("none.log"), Instant::now(), ms(200)).expect("watched");
        assert!(w.killed && w.timed_out && w.raw.is_empty());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn metric() -> impl Strategy<Value = Metric> {
            (
                "[a-z][a-z0-9_]{0,20}",
                1u64..100_000,
                any::<u64>(),
                any::<u64>(),
                "[a-z]{1,6}",
            )
                .prop_map(|(name, n, a, b, unit)| Metric {
                    name,
                    n,
                    min: a.min(b),
                    median: a.max(b),
                    unit,
                })
        }

        proptest! {
            /// Whatever the prefixes and the hypervisor lines in between, every
            /// metric comes back as printed, in order.
            #[test]
            fn printed_metrics_parse_back(
                metrics in proptest::collection::vec(metric(), 1..10),
                prefixes in proptest::collection::vec(prop_oneof![Just(""), Just("(d0) "), Just("  ")], 12),
                noise in proptest::collection::vec("\\(XEN\\) [ -~]{0,40}", 12),
            ) {
                let mut seen = Vec::new();
                let metrics: Vec<Metric> = metrics
                    .into_iter()
                    .filter(|m| {
                        let fresh = !seen.contains(&m.name);
                        seen.push(m.name.clone());
                        fresh
                    })
                    .collect();
                let mut log = String::from("(d0) pvh64 (long mode): hvm_start_info at 0x0\n");
                for (i, m) in metrics.iter().enumerate() {
                    let junk = &noise[i];
                    if !junk.contains("BENCH") && !junk.contains("Test result") {
                        log.push_str(junk);
                        log.push('\n');
                    }
                    log.push_str(&format!(
                        "{}BENCH {} n={} min={} median={} unit={}\n",
                        prefixes[i], m.name, m.n, m.min, m.median, m.unit
                    ));
                }
                log.push_str(&format!("{}BENCH done\n", prefixes[11]));
                let report = parse(&log).expect("a well-formed log parses");
                prop_assert_eq!(report.metrics, metrics);
            }

            /// Arbitrary serial output never panics the parser.
            #[test]
            fn parse_never_panics(log in "(BENCH|done|error|n=|min=|median=|unit=|[0-9]|Test result: |\\n| |[ -~])*") {
                let _ = parse(&log);
            }
        }
    }
}
