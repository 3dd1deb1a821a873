//! keel's command line, in Xen's syntax (docs/misc/xen-command-line.pandoc).
//!
//! Options are separated by spaces; each is `name`, `no-name`, or `name=value`. As in
//! Xen, `-` and `_` are the same in names. Unknown options are reported back to the
//! caller (which warns and goes on: a typo must not stop a machine from booting), while
//! a known option with a value keel cannot use is an error (the caller prints it and
//! powers off cleanly: running with a console or log level the user did not ask for
//! would hide what they wanted to see).
//!
//! Parsing allocates nothing: it runs before the heap exists.
//!
//! Boolean options (`dom0_vcpus_pin`) are read as Xen reads an `OPT_BOOL`
//! (`xen/common/kernel.c` `parse_params`/`parse_bool`): `name` alone, or with an
//! empty value (`name=`), is yes; `name=<bool>` takes `1`, `on`, `yes`, `true`,
//! `enable` or `0`, `no`, `off`, `false`, `disable`; and a `no-` prefix inverts the
//! result (`no-name` is no, `no-name=no` yes). Only `no-` is a prefix, as in Xen:
//! `no_name` is an unknown option. Any other value is an error.
//!
//! `dom0_mem=` follows Xen's x86 syntax and semantics (`xen/arch/x86/dom0_build.c`
//! `parse_dom0_mem`/`parse_amt`/`dom0_compute_nr_pages`, `xen/lib/parse-size.c`):
//! a list of `min:<sz>`, `max:<sz>` and `<sz>`, where `<sz>` is `[-]<size>`,
//! `[-]<frac>%` or `[-]<size>+<frac>%`, `<frac>` < 100. A `<size>` is a number in C
//! syntax (`0x` hex, a leading `0` octal, else decimal) with an optional unit `B`, `K`,
//! `M`, `G` or `T` (either case); **without a unit it is in KiB**, as in Xen. A
//! negative size means "all available memory but this much". Parsing records what was
//! written ([`Dom0Mem`]); [`dom0_mem_bytes`] turns it into a size once the amount of
//! available memory is known. As in Xen, each `dom0_mem=` only replaces the parts it
//! names, so `dom0_mem=max:1G dom0_mem=512M` sets both.

use core::fmt;

/// Longest command line accepted (Xen's `COMMAND_LINE_SIZE` on x86 is 1024).
pub const MAX_LEN: usize = 1024;

/// Log levels, Xen's names (`loglvl=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    None,
    Error,
    Warning,
    Info,
    Debug,
    All,
}

impl LogLevel {
    fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "none" => LogLevel::None,
            "error" => LogLevel::Error,
            "warning" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "all" => LogLevel::All,
            _ => return None,
        })
    }
}

/// Parity, as in `com1=115200,8n1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Odd,
    Even,
    Mark,
    Space,
}

/// COM1 settings (`com1=<baud>[/<clock>][,DPS[,<io-base>[,<irq>]]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComConfig {
    /// `None` is `auto`: keep what the firmware or boot loader programmed.
    pub baud: Option<u32>,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub io_base: u16,
}

impl Default for ComConfig {
    fn default() -> Self {
        ComConfig {
            baud: Some(115_200),
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            io_base: 0x3F8,
        }
    }
}

/// Where keel's console goes (`console=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    Com1,
    /// `console=none`: keel prints nothing (errors still power off cleanly).
    None,
}

/// Everything keel understands on its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub console: Console,
    pub com1: ComConfig,
    pub loglvl: LogLevel,
    pub guest_loglvl: LogLevel,
    /// keel's own: QEMU isa-debug-exit port to report failures through (tests).
    pub debug_exit: Option<u16>,
    /// keel's own: crash on purpose once booted, to test the fatal path.
    pub debug_crash: Option<CrashKind>,
    /// `dom0_mem=`: dom0's memory size, resolved later by [`dom0_mem_bytes`].
    pub dom0_mem: Dom0Mem,
    /// `sched=`: the scheduling policy (Xen's option name).
    pub sched: SchedPolicy,
    /// `nr_cpus=` / `maxcpus=`: bring up at most this many CPUs, the boot CPU
    /// included (Xen's two options; keel takes the smaller of the two).
    pub max_cpus: Option<u32>,
    /// keel's own: the CPU `debug-crash=` crashes on (default: the boot CPU).
    pub debug_crash_cpu: u32,
    /// `dom0_vcpus_pin`: dom0's vCPU i is pinned to pCPU i (its hard affinity is
    /// that pCPU alone), as in Xen. Off by default: dom0's vCPUs may run anywhere.
    pub dom0_vcpus_pin: bool,
    /// `dom0_max_vcpus=`: how many vCPUs dom0 gets ([`Dom0Vcpus::count`]).
    pub dom0_max_vcpus: Dom0Vcpus,
    /// `dom0=pv` / `dom0=pvh`: the mode Dom0 must be built in; `None`: keel's
    /// default, PVH when the kernel has a PVH entry, else PV.
    pub dom0_mode: Option<Dom0Mode>,
    /// `dom0=shadow=<bool>`: build Dom0 with shadow paging.
    pub dom0_shadow: bool,
}

/// Xen's `dom0=pv` and `dom0=pvh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dom0Mode {
    Pv,
    Pvh,
}

/// `dom0_max_vcpus=` in Xen's syntax: `<n>` gives dom0 exactly n vCPUs;
/// `<min>-<max>` (either may be left out) one per pCPU, but at least `min` and
/// at most `max` (`max` wins over `min`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dom0Vcpus {
    pub min: u32,
    pub max: u32,
}

impl Default for Dom0Vcpus {
    fn default() -> Self {
        Dom0Vcpus {
            min: 1,
            max: u32::MAX,
        }
    }
}

impl Dom0Vcpus {
    /// The count for a machine with `pcpus` pCPUs, at most `limit` (what keel
    /// allows a domain), and at least 1: Xen's `dom0_max_vcpus()`.
    pub fn count(&self, pcpus: u32, limit: u32) -> u32 {
        pcpus.max(self.min).min(self.max).clamp(1, limit.max(1))
    }
}

/// What `sched=` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchedPolicy {
    /// `credit2`: weighted fair sharing (Xen's default too).
    #[default]
    Credit2,
    /// `null`: one vCPU per physical CPU, no time slices.
    Null,
}

impl SchedPolicy {
    /// The name `keel_sched::by_name` knows.
    pub fn name(self) -> &'static str {
        match self {
            SchedPolicy::Credit2 => "credit2",
            SchedPolicy::Null => "null",
        }
    }
}

/// What `debug-crash=` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    PageFault,
    InvalidOpcode,
    StackOverflow,
    Panic,
}

/// One `dom0_mem=` amount: `[-]<size>`, `[-]<frac>%` or `[-]<size>+<frac>%` (Xen's
/// `struct memsize`, kept in bytes rather than pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeSpec {
    /// The `<size>` part, in bytes (0 if absent).
    pub bytes: u64,
    /// The `<frac>%` part, a percentage (< 100) of the available memory (0 if absent).
    pub percent: u8,
    /// A leading `-`: the amount is "available memory minus this".
    pub minus: bool,
}

impl SizeSpec {
    /// The amount in bytes when `available` bytes are available (Xen's
    /// `get_memsize`); a negative amount larger than `available` gives 0.
    pub fn resolve(&self, available: u64) -> u64 {
        let part = u128::from(available) * u128::from(self.percent) / 100;
        let part = u64::try_from(part).unwrap_or(u64::MAX);
        let amount = self.bytes.saturating_add(part);
        if self.minus {
            available.saturating_sub(amount)
        } else {
            amount
        }
    }
}

/// `dom0_mem=[min:<sz>,][max:<sz>,][<sz>]`: what the user asked for dom0's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dom0Mem {
    /// `<sz>`: the amount; `None` means the default (see [`dom0_mem_bytes`]).
    pub amount: Option<SizeSpec>,
    /// `min:<sz>`: at least this much (if available, and unless `max` says less).
    pub min: Option<SizeSpec>,
    /// `max:<sz>`: at most this much; wins over `min`.
    pub max: Option<SizeSpec>,
}

/// Smallest dom0 keel will build: below this no PVH kernel boots usefully.
pub const DOM0_MIN_BYTES: u64 = 4 << 20;
/// The default dom0 leaves keel at least this much of the available memory...
pub const DOM0_RESERVE_MIN_BYTES: u64 = 16 << 20;
/// ...and at least this fraction (1/16) of it.
pub const DOM0_RESERVE_DIVISOR: u64 = 16;

/// Why no dom0 size can be chosen. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum Dom0MemError {
    /// dom0 would get {bytes:#x} bytes of the {available:#x} available; at least {minimum:#x} are needed (check dom0_mem=)
    TooSmall {
        bytes: u64,
        available: u64,
        minimum: u64,
    },
}

/// How many bytes of RAM dom0 gets, out of `available_bytes`, as `spec` asks.
///
/// Xen's rules (`dom0_compute_nr_pages`): the amount is `spec.amount`, or the default
/// if that is absent or resolves to 0; it is raised to `min`, then lowered to `max`
/// (so `max` wins over `min`) and to what is available. The default is everything
/// available but a reserve for keel of `max(16 MiB, available / 16)`. (Xen's own
/// default reserve is `min(available / 16, 128 MiB)`: Xen subtracts its p2m and IOMMU
/// page tables from `available` beforehand, which keel's caller does not yet, so keel
/// keeps a proportional reserve.) The result is rounded down to a whole 4 KiB page
/// and must be at least [`DOM0_MIN_BYTES`].
pub fn dom0_mem_bytes(spec: &Dom0Mem, available_bytes: u64) -> Result<u64, Dom0MemError> {
    const PAGE_MASK: u64 = !0xFFF;
    let available = available_bytes & PAGE_MASK;
    let reserve = DOM0_RESERVE_MIN_BYTES.max(available / DOM0_RESERVE_DIVISOR);
    let default = available.saturating_sub(reserve);
    let amount = spec
        .amount
        .map(|s| s.resolve(available))
        .filter(|&n| n != 0)
        .unwrap_or(default);
    let min = spec.min.map_or(0, |s| s.resolve(available));
    let max = spec.max.map_or(u64::MAX, |s| s.resolve(available));
    let bytes = amount.max(min).min(max).min(available) & PAGE_MASK;
    if bytes < DOM0_MIN_BYTES {
        return Err(Dom0MemError::TooSmall {
            bytes,
            available: available_bytes,
            minimum: DOM0_MIN_BYTES,
        });
    }
    Ok(bytes)
}

impl Default for Options {
    fn default() -> Self {
        Options {
            console: Console::Com1,
            com1: ComConfig::default(),
            loglvl: LogLevel::Info,
            guest_loglvl: LogLevel::Info,
            debug_exit: None,
            debug_crash: None,
            dom0_mem: Dom0Mem::default(),
            sched: SchedPolicy::default(),
            max_cpus: None,
            debug_crash_cpu: 0,
            dom0_vcpus_pin: false,
            dom0_max_vcpus: Dom0Vcpus::default(),
            dom0_mode: None,
            dom0_shadow: false,
        }
    }
}

/// A command line keel cannot use. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// the command line is longer than 1024 bytes
    TooLong(usize),
    /// the command line has a byte that is not printable ASCII
    BadByte { offset: usize, byte: u8 },
    /// an option has an empty name
    EmptyName(&'a str),
    /// an option's value is not one keel understands
    BadValue {
        option: &'a str,
        value: &'a str,
        expected: &'static str,
    },
    /// an option that takes a value was given none
    MissingValue {
        option: &'a str,
        expected: &'static str,
    },
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::TooLong(n) => write!(
                f,
                "the command line is {n} bytes long; at most {MAX_LEN} are accepted"
            ),
            CmdlineError::BadByte { offset, byte } => {
                write!(
                    f,
                    "byte {byte:#04x} at offset {offset} is not printable ASCII"
                )
            }
            CmdlineError::EmptyName(word) => write!(f, "option '{word}' has an empty name"),
            CmdlineError::BadValue {
                option,
                value,
                expected,
            } => {
                write!(f, "option '{option}': '{value}' is not {expected}")
            }
            CmdlineError::MissingValue { option, expected } => {
                write!(f, "option '{option}' needs a value: {expected}")
            }
        }
    }
}

/// Names equal under Xen's rule that `-` and `_` are interchangeable.
fn name_is(name: &str, want: &str) -> bool {
    name.len() == want.len()
        && name
            .bytes()
            .zip(want.bytes())
            .all(|(a, b)| a == b || (a == b'-' && b == b'_') || (a == b'_' && b == b'-'))
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

const LOGLVL_EXPECTED: &str =
    "a log level (none, error, warning, info, debug, all), optionally /<level>";
const COM_EXPECTED: &str =
    "<baud>|auto[/<clock>][,<data><parity><stop>[,<io-base>[,<irq>]]], e.g. 115200,8n1";
const CONSOLE_EXPECTED: &str = "a list of com1, none (vga is not supported)";
const PORT_EXPECTED: &str = "an I/O port number (e.g. 0xf4)";
const SCHED_EXPECTED: &str = "credit2 or null";
const CPUS_EXPECTED: &str = "a number of CPUs, at least 1";
const DOM0_EXPECTED: &str = "a comma-separated list of pv, pvh, shadow=<bool>, verbose=<bool>, \
     cpuid-faulting=<bool>, msr-relaxed=<bool>";
const DOM0_VCPUS_EXPECTED: &str = "<n>, <min>-<max>, <min>- or -<max> (vCPU counts)";
const CPU_EXPECTED: &str = "a CPU index (0 is the boot CPU)";
const CRASH_EXPECTED: &str = "one of page-fault, invalid-opcode, stack-overflow, panic";
const BOOL_EXPECTED: &str = "a boolean (1, on, yes, true, enable or 0, no, off, false, disable; \
     nothing means yes)";

const DOM0_MEM_EXPECTED: &str = "a list of [min:|max:]<sz>, <sz> being [-]<size>, [-]<n>% or \
     [-]<size>+<n>% (n < 100), <size> a number with unit B, K, M, G or T (KiB if none), \
     e.g. 512M,max:1G";

/// A C-syntax unsigned number as Xen's `simple_strtoull(s, _, 0)` reads it: `0x`
/// followed by a hex digit is hex, a leading `0` octal, else decimal. Returns the
/// value and the rest; `None` on overflow or if `s` does not start with a digit.
fn parse_c_number(s: &str) -> Option<(u64, &str)> {
    let b = s.as_bytes();
    let (radix, start) = match b {
        [b'0', b'x' | b'X', h, ..] if h.is_ascii_hexdigit() => (16, 2),
        [b'0', ..] => (8, 1),
        [d, ..] if d.is_ascii_digit() => (10, 0),
        _ => return None,
    };
    let digits = b[start..]
        .iter()
        .take_while(|c| char::from(**c).is_digit(radix))
        .count();
    let end = start + digits;
    let value = if digits == 0 {
        0 // a lone "0"
    } else {
        u64::from_str_radix(&s[start..end], radix).ok()?
    };
    Some((value, &s[end..]))
}

/// One `dom0_mem=` item without its `min:`/`max:` prefix (Xen's `parse_amt`).
fn parse_size_spec(item: &str) -> Option<SizeSpec> {
    let (minus, s) = match item.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, item),
    };
    let mut spec = SizeSpec {
        minus,
        ..SizeSpec::default()
    };
    let (n, rest) = parse_c_number(s)?;
    if let Some(rest) = rest.strip_prefix('%') {
        // A percentage alone.
        spec.percent = u8::try_from(n).ok().filter(|&p| p < 100)?;
        return rest.is_empty().then_some(spec);
    }
    let (shift, rest) = match rest.as_bytes().first() {
        Some(b'T' | b't') => (40, &rest[1..]),
        Some(b'G' | b'g') => (30, &rest[1..]),
        Some(b'M' | b'm') => (20, &rest[1..]),
        Some(b'K' | b'k') => (10, &rest[1..]),
        Some(b'B' | b'b') => (0, &rest[1..]),
        _ => (10, rest), // no unit: KiB
    };
    spec.bytes = n.checked_mul(1u64 << shift)?;
    if rest.is_empty() {
        return Some(spec);
    }
    // Only `<size>+<frac>%` may follow.
    let (p, rest) = parse_c_number(rest.strip_prefix('+')?)?;
    spec.percent = u8::try_from(p).ok().filter(|&p| p < 100)?;
    (rest == "%").then_some(spec)
}

fn parse_dom0_mem<'a>(
    option: &'a str,
    value: &'a str,
    mut mem: Dom0Mem,
) -> Result<Dom0Mem, CmdlineError<'a>> {
    let bad = CmdlineError::BadValue {
        option,
        value,
        expected: DOM0_MEM_EXPECTED,
    };
    for item in value.split(',') {
        if let Some(s) = item.strip_prefix("min:") {
            mem.min = Some(parse_size_spec(s).ok_or(bad)?);
        } else if let Some(s) = item.strip_prefix("max:") {
            mem.max = Some(parse_size_spec(s).ok_or(bad)?);
        } else {
            mem.amount = Some(parse_size_spec(item).ok_or(bad)?);
        }
    }
    Ok(mem)
}

fn parse_loglvl<'a>(option: &'a str, value: &'a str) -> Result<LogLevel, CmdlineError<'a>> {
    let bad = CmdlineError::BadValue {
        option,
        value,
        expected: LOGLVL_EXPECTED,
    };
    // `<level>[/<rate-limited level>]`: keel does not rate-limit, so the second part
    // is checked and then ignored.
    let (level, limited) = match value.split_once('/') {
        Some((l, r)) => (l, Some(r)),
        None => (value, None),
    };
    if let Some(r) = limited {
        LogLevel::parse(r).ok_or(bad)?;
    }
    LogLevel::parse(level).ok_or(bad)
}

fn parse_com<'a>(option: &'a str, value: &'a str) -> Result<ComConfig, CmdlineError<'a>> {
    let bad = CmdlineError::BadValue {
        option,
        value,
        expected: COM_EXPECTED,
    };
    let mut cfg = ComConfig::default();
    let mut parts = value.split(',');
    let speed = parts.next().unwrap_or("");
    let baud = speed.split_once('/').map_or(speed, |(b, _clock)| b);
    cfg.baud = match baud {
        "auto" => None,
        b => match parse_u32(b) {
            Some(n) if (50..=4_000_000).contains(&n) => Some(n),
            _ => return Err(bad),
        },
    };
    if let Some(dps) = parts.next().filter(|s| !s.is_empty()) {
        let b = dps.as_bytes();
        if b.len() != 3 {
            return Err(bad);
        }
        cfg.data_bits = match b[0] {
            d @ b'5'..=b'8' => d - b'0',
            _ => return Err(bad),
        };
        cfg.parity = match b[1] {
            b'n' => Parity::None,
            b'o' => Parity::Odd,
            b'e' => Parity::Even,
            b'm' => Parity::Mark,
            b's' => Parity::Space,
            _ => return Err(bad),
        };
        cfg.stop_bits = match b[2] {
            b'1' => 1,
            b'2' => 2,
            _ => return Err(bad),
        };
    }
    if let Some(base) = parts.next().filter(|s| !s.is_empty()) {
        cfg.io_base = match parse_u32(base) {
            Some(p) if p > 0 && p <= 0xFFF8 => p as u16,
            _ => return Err(bad),
        };
    }
    if let Some(irq) = parts.next().filter(|s| !s.is_empty()) {
        // keel's console is polled; the IRQ is checked for sanity and not used.
        if !matches!(parse_u32(irq), Some(0..=15)) {
            return Err(bad);
        }
    }
    if parts.next().is_some() {
        return Err(bad);
    }
    Ok(cfg)
}

fn parse_console<'a>(option: &'a str, value: &'a str) -> Result<Console, CmdlineError<'a>> {
    let mut console = Console::None;
    for item in value.split(',') {
        match item {
            "com1" => console = Console::Com1,
            "none" => {}
            _ => {
                return Err(CmdlineError::BadValue {
                    option,
                    value,
                    expected: CONSOLE_EXPECTED,
                });
            }
        }
    }
    Ok(console)
}

/// Xen's `parse_bool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "on" | "yes" | "true" | "enable" => Some(true),
        "0" | "no" | "off" | "false" | "disable" => Some(false),
        _ => None,
    }
}

/// A boolean option's value (see the module documentation): `negated` is whether
/// the option was written with Xen's `no-` prefix.
fn parse_boolean<'a>(
    option: &'a str,
    value: Option<&'a str>,
    negated: bool,
) -> Result<bool, CmdlineError<'a>> {
    let yes = match value {
        None | Some("") => true,
        Some(v) => parse_bool(v).ok_or(CmdlineError::BadValue {
            option,
            value: v,
            expected: BOOL_EXPECTED,
        })?,
    };
    Ok(yes != negated)
}

fn value_of<'a>(
    option: &'a str,
    value: Option<&'a str>,
    expected: &'static str,
) -> Result<&'a str, CmdlineError<'a>> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(CmdlineError::MissingValue { option, expected })
}

/// Parses `line`. Each option keel does not know is passed to `unknown`, in order.
pub fn parse<'a>(
    line: &'a str,
    mut unknown: impl FnMut(&'a str),
) -> Result<Options, CmdlineError<'a>> {
    if line.len() > MAX_LEN {
        return Err(CmdlineError::TooLong(line.len()));
    }
    if let Some((offset, &byte)) = line
        .as_bytes()
        .iter()
        .enumerate()
        .find(|(_, b)| !(b' '..=b'~').contains(*b) && **b != b'\t')
    {
        return Err(CmdlineError::BadByte { offset, byte });
    }
    let mut opts = Options::default();
    for word in line.split([' ', '\t']).filter(|w| !w.is_empty()) {
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (word, None),
        };
        if name.is_empty() {
            return Err(CmdlineError::EmptyName(word));
        }
        // Xen's `no-` prefix inverts a boolean option (and means nothing for others).
        let (negated, bool_name) = match name.strip_prefix("no-") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if name_is(bool_name, "dom0_vcpus_pin") {
            opts.dom0_vcpus_pin = parse_boolean(word, value, negated)?;
        } else if name_is(name, "loglvl") {
            opts.loglvl = parse_loglvl(word, value_of(word, value, LOGLVL_EXPECTED)?)?;
        } else if name_is(name, "guest_loglvl") {
            opts.guest_loglvl = parse_loglvl(word, value_of(word, value, LOGLVL_EXPECTED)?)?;
        } else if name_is(name, "com1") {
            opts.com1 = parse_com(word, value_of(word, value, COM_EXPECTED)?)?;
        } else if name_is(name, "console") {
            opts.console = parse_console(word, value_of(word, value, CONSOLE_EXPECTED)?)?;
        } else if name_is(name, "dom0_mem") {
            let v = value_of(word, value, DOM0_MEM_EXPECTED)?;
            opts.dom0_mem = parse_dom0_mem(word, v, opts.dom0_mem)?;
        } else if name_is(name, "debug_exit") {
            let v = value_of(word, value, PORT_EXPECTED)?;
            opts.debug_exit = match parse_u32(v) {
                Some(p) if p > 0 && p <= 0xFFFF => Some(p as u16),
                _ => {
                    return Err(CmdlineError::BadValue {
                        option: word,
                        value: v,
                        expected: PORT_EXPECTED,
                    });
                }
            };
        } else if name_is(name, "sched") {
            let v = value_of(word, value, SCHED_EXPECTED)?;
            opts.sched = match v {
                "credit2" => SchedPolicy::Credit2,
                "null" => SchedPolicy::Null,
                _ => {
                    return Err(CmdlineError::BadValue {
                        option: word,
                        value: v,
                        expected: SCHED_EXPECTED,
                    });
                }
            };
        } else if name_is(name, "nr_cpus") || name_is(name, "maxcpus") {
            let v = value_of(word, value, CPUS_EXPECTED)?;
            let n = match parse_u32(v) {
                Some(n) if n >= 1 => n,
                _ => {
                    return Err(CmdlineError::BadValue {
                        option: word,
                        value: v,
                        expected: CPUS_EXPECTED,
                    });
                }
            };
            opts.max_cpus = Some(opts.max_cpus.map_or(n, |m| m.min(n)));
        } else if name_is(name, "dom0") {
            // Xen's parse_dom0_param: a list; `pv` and `pvh` choose the mode (the
            // last wins), the rest are booleans keel accepts (`shadow` is kept,
            // `verbose`, `cpuid-faulting` and `msr-relaxed` change nothing here).
            let v = value_of(word, value, DOM0_EXPECTED)?;
            for item in v.split(',') {
                let bad = CmdlineError::BadValue {
                    option: word,
                    value: item,
                    expected: DOM0_EXPECTED,
                };
                let (key, val) = match item.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (item, None),
                };
                let (neg, key) = match key.strip_prefix("no-") {
                    Some(rest) => (true, rest),
                    None => (false, key),
                };
                if !neg && val.is_none() && name_is(key, "pv") {
                    opts.dom0_mode = Some(Dom0Mode::Pv);
                } else if !neg && val.is_none() && name_is(key, "pvh") {
                    opts.dom0_mode = Some(Dom0Mode::Pvh);
                } else if name_is(key, "shadow") {
                    opts.dom0_shadow = parse_boolean(word, val, neg).map_err(|_| bad)?;
                } else if name_is(key, "verbose")
                    || name_is(key, "cpuid-faulting")
                    || name_is(key, "msr-relaxed")
                {
                    parse_boolean(word, val, neg).map_err(|_| bad)?;
                } else {
                    return Err(bad);
                }
            }
        } else if name_is(name, "dom0_max_vcpus") {
            let v = value_of(word, value, DOM0_VCPUS_EXPECTED)?;
            let bad = CmdlineError::BadValue {
                option: word,
                value: v,
                expected: DOM0_VCPUS_EXPECTED,
            };
            // Xen's parse_dom0_max_vcpus: `-M`, `N` (exactly N), `N-`, `N-M`;
            // a minimum of 0 means 1.
            let r = match v.split_once('-') {
                None => parse_u32(v).map(|n| Dom0Vcpus {
                    min: n.max(1),
                    max: n.max(1),
                }),
                Some(("", hi)) => parse_u32(hi).map(|max| Dom0Vcpus { min: 1, max }),
                Some((lo, "")) => parse_u32(lo).map(|min| Dom0Vcpus {
                    min: min.max(1),
                    max: u32::MAX,
                }),
                Some((lo, hi)) => parse_u32(lo).zip(parse_u32(hi)).map(|(min, max)| Dom0Vcpus {
                    min: min.max(1),
                    max,
                }),
            };
            opts.dom0_max_vcpus = r.ok_or(bad)?;
        } else if name_is(name, "debug_crash_cpu") {
            let v = value_of(word, value, CPU_EXPECTED)?;
            opts.debug_crash_cpu = parse_u32(v).ok_or(CmdlineError::BadValue {
                option: word,
                value: v,
                expected: CPU_EXPECTED,
            })?;
        } else if name_is(name, "debug_crash") {
            let v = value_of(word, value, CRASH_EXPECTED)?;
            opts.debug_crash = Some(match v {
                "page-fault" => CrashKind::PageFault,
                "invalid-opcode" => CrashKind::InvalidOpcode,
                "stack-overflow" => CrashKind::StackOverflow,
                "panic" => CrashKind::Panic,
                _ => {
                    return Err(CmdlineError::BadValue {
                        option: word,
                        value: v,
                        expected: CRASH_EXPECTED,
                    });
                }
            });
        } else {
            unknown(word);
        }
    }
    Ok(opts)
}

/// Drops the first word of `s` (and the blanks after it): multiboot v1 loaders such
/// as QEMU put the image's file name first on keel's command line, and module strings
/// start with the module's name (Xen's `cmdline_cook`).
pub fn skip_first_word(s: &str) -> &str {
    let s = s.trim_start_matches([' ', '\t']);
    match s.find([' ', '\t']) {
        Some(i) => s[i..].trim_start_matches([' ', '\t']),
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(line: &str) -> (Options, Vec<String>) {
        let mut unknown = Vec::new();
        let opts = parse(line, |w| unknown.push(w.to_string())).expect("parses");
        (opts, unknown)
    }

    #[test]
    fn empty_line_gives_defaults() {
        assert_eq!(parse_ok(""), (Options::default(), vec![]));
        assert_eq!(parse_ok("   \t  "), (Options::default(), vec![]));
    }

    #[test]
    fn the_test_harness_line() {
        let (o, u) = parse_ok("console=com1 com1=115200,8n1 loglvl=all debug-exit=0xf4");
        assert!(u.is_empty());
        assert_eq!(o.console, Console::Com1);
        assert_eq!(o.com1, ComConfig::default());
        assert_eq!(o.loglvl, LogLevel::All);
        assert_eq!(o.debug_exit, Some(0xF4));
    }

    #[test]
    fn dash_and_underscore_are_the_same() {
        assert_eq!(
            parse_ok("guest-loglvl=debug").0.guest_loglvl,
            LogLevel::Debug
        );
        assert_eq!(parse_ok("debug_exit=244").0.debug_exit, Some(244));
        assert_eq!(
            parse_ok("debug_crash=stack-overflow").0.debug_crash,
            Some(CrashKind::StackOverflow)
        );
    }

    #[test]
    fn com1_variants() {
        let c = parse_ok("com1=9600,7e2,0x2f8,3").0.com1;
        assert_eq!(
            c,
            ComConfig {
                baud: Some(9600),
                data_bits: 7,
                parity: Parity::Even,
                stop_bits: 2,
                io_base: 0x2F8
            }
        );
        assert_eq!(parse_ok("com1=auto").0.com1.baud, None);
        assert_eq!(parse_ok("com1=115200/1843200").0.com1.baud, Some(115_200));
        assert_eq!(parse_ok("com1=57600,,0x3e8").0.com1.io_base, 0x3E8);
    }

    #[test]
    fn loglvl_with_rate_limited_part() {
        assert_eq!(parse_ok("loglvl=warning/all").0.loglvl, LogLevel::Warning);
        assert!(parse("loglvl=warning/loud", |_| {}).is_err());
    }

    #[test]
    fn unknown_options_are_reported_in_order_and_not_fatal() {
        let (o, u) = parse_ok("bogus-option=1 loglvl=error noreboot x=");
        assert_eq!(u, ["bogus-option=1", "noreboot", "x="]);
        assert_eq!(o.loglvl, LogLevel::Error);
    }

    #[test]
    fn malformed_known_options_are_errors() {
        for (line, needle) in [
            ("loglvl=shouting", "loglvl=shouting"),
            ("loglvl", "needs a value"),
            ("loglvl=", "needs a value"),
            ("com1=fast", "com1=fast"),
            ("com1=115200,9n1", "com1"),
            ("com1=115200,8x1", "com1"),
            ("com1=115200,8n1,0x0", "com1"),
            ("com1=115200,8n1,0x3f8,99", "com1"),
            ("com1=115200,8n1,0x3f8,4,extra", "com1"),
            ("com1=10", "com1"),
            ("console=vga", "vga is not supported"),
            ("debug-exit=0x10000", "debug-exit"),
            ("debug-exit=port", "debug-exit"),
            ("debug-crash=boom", "debug-crash=boom"),
            ("dom0_mem", "needs a value"),
            ("dom0_mem=lots", "dom0_mem=lots"),
            ("sched=credit", "credit2 or null"),
            ("sched", "needs a value"),
            ("dom0_vcpus_pin=maybe", "dom0_vcpus_pin=maybe"),
            ("=5", "empty name"),
        ] {
            let err = parse(line, |_| {}).expect_err(line);
            assert!(err.to_string().contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn hostile_bytes_and_lengths() {
        assert_eq!(
            parse("a\u{1b}b", |_| {}),
            Err(CmdlineError::BadByte {
                offset: 1,
                byte: 0x1B
            })
        );
        assert!(matches!(
            parse("loglvl=all\n", |_| {}),
            Err(CmdlineError::BadByte { offset: 10, .. })
        ));
        assert!(matches!(
            parse("é", |_| {}),
            Err(CmdlineError::BadByte { offset: 0, .. })
        ));
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(
            parse(&long, |_| {}),
            Err(CmdlineError::TooLong(MAX_LEN + 1))
        );
        let ok = "x".repeat(MAX_LEN);
        assert_eq!(parse_ok(&ok).1.len(), 1);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        assert_eq!(
            parse_ok("loglvl=none loglvl=debug").0.loglvl,
            LogLevel::Debug
        );
    }

    #[test]
    fn skip_first_word_cases() {
        assert_eq!(
            skip_first_word("/boot/keel.elf console=com1"),
            "console=com1"
        );
        assert_eq!(
            skip_first_word("  dom0   root=/dev/xvda  "),
            "root=/dev/xvda  "
        );
        assert_eq!(skip_first_word("dom0"), "");
        assert_eq!(skip_first_word(""), "");
    }

    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;

    fn size(bytes: u64) -> SizeSpec {
        SizeSpec {
            bytes,
            ..SizeSpec::default()
        }
    }

    fn dom0_mem(line: &str) -> Dom0Mem {
        parse_ok(line).0.dom0_mem
    }

    #[test]
    fn dom0_mem_sizes_and_units() {
        assert_eq!(dom0_mem("").amount, None);
        for (v, bytes) in [
            ("512M", 512 * M),
            ("512m", 512 * M),
            ("2G", 2 * G),
            ("1T", 1 << 40),
            ("4096B", 4096),
            ("4096b", 4096),
            ("64K", 64 * K),
            ("524288", 512 * M), // no unit: KiB, as in Xen
            ("0x100M", 256 * M),
            ("010M", 8 * M), // C syntax: a leading 0 is octal
            ("0", 0),
        ] {
            assert_eq!(
                dom0_mem(&format!("dom0_mem={v}")).amount,
                Some(size(bytes)),
                "{v}"
            );
        }
    }

    #[test]
    fn dom0_mem_lists_negatives_and_percentages() {
        let d = dom0_mem("dom0_mem=min:128M,max:-1G,25%");
        assert_eq!(d.min, Some(size(128 * M)));
        assert_eq!(
            d.max,
            Some(SizeSpec {
                bytes: G,
                percent: 0,
                minus: true
            })
        );
        assert_eq!(
            d.amount,
            Some(SizeSpec {
                bytes: 0,
                percent: 25,
                minus: false
            })
        );
        assert_eq!(
            dom0_mem("dom0-mem=-1G+10%").amount,
            Some(SizeSpec {
                bytes: G,
                percent: 10,
                minus: true
            })
        );
        // Each dom0_mem= replaces only the parts it names.
        let d = dom0_mem("dom0_mem=max:1G dom0_mem=512M");
        assert_eq!(
            (d.amount, d.max, d.min),
            (Some(size(512 * M)), Some(size(G)), None)
        );
    }

    #[test]
    fn malformed_dom0_mem_values() {
        for v in [
            "",
            ",",
            "512M,",
            "min:",
            "max:x",
            "lots",
            "M",
            "-",
            "--1G",
            "1G+",
            "1G+2G",
            "1G+25",
            "25%+1G",
            "1G+25%+1",
            "100%",
            "1G+100%",
            "25K%",
            "1Q",
            "08M",
            "0xZ",
            "99999999999999999999",
            "17000000000T",
            "min=1G",
            "MIN:1G",
        ] {
            let line = format!("dom0_mem={v}");
            let err = parse(&line, |_| {}).expect_err(&line);
            let text = err.to_string();
            assert!(
                text.contains("dom0_mem")
                    && (text.contains("<sz>") || text.contains("needs a value")),
                "{line}: {text}"
            );
        }
    }

    #[test]
    fn cpu_limits_take_the_smaller() {
        assert_eq!(parse("", |_| {}).unwrap().max_cpus, None);
        assert_eq!(parse("nr_cpus=2", |_| {}).unwrap().max_cpus, Some(2));
        assert_eq!(parse("maxcpus=3", |_| {}).unwrap().max_cpus, Some(3));
        assert_eq!(
            parse("nr_cpus=4 maxcpus=1", |_| {}).unwrap().max_cpus,
            Some(1)
        );
        assert_eq!(
            parse("maxcpus=1 nr-cpus=8", |_| {}).unwrap().max_cpus,
            Some(1)
        );
        for bad in ["nr_cpus=0", "maxcpus=two", "nr_cpus", "debug-crash-cpu=x"] {
            assert!(parse(bad, |_| {}).is_err(), "{bad}");
        }
        assert_eq!(
            parse("debug-crash-cpu=1", |_| {}).unwrap().debug_crash_cpu,
            1
        );
    }

    #[test]
    fn dom0_mode_and_suboptions_follow_xen() {
        let m = |line| parse(line, |_| {}).map(|o| (o.dom0_mode, o.dom0_shadow));
        assert_eq!(m(""), Ok((None, false)));
        assert_eq!(m("dom0=pv"), Ok((Some(Dom0Mode::Pv), false)));
        assert_eq!(m("dom0=pvh"), Ok((Some(Dom0Mode::Pvh), false)));
        // The last mode wins, within one option and across options.
        assert_eq!(m("dom0=pv,pvh"), Ok((Some(Dom0Mode::Pvh), false)));
        assert_eq!(m("dom0=pvh dom0=pv"), Ok((Some(Dom0Mode::Pv), false)));
        assert_eq!(m("dom0=pvh,shadow"), Ok((Some(Dom0Mode::Pvh), true)));
        assert_eq!(m("dom0=pvh,shadow=1,no-shadow"), Ok((Some(Dom0Mode::Pvh), false)));
        assert_eq!(
            m("dom0=pvh,verbose,cpuid-faulting=0,msr_relaxed=yes"),
            Ok((Some(Dom0Mode::Pvh), false))
        );
        for bad in ["dom0=hvm", "dom0=pvh,shadow=maybe", "dom0=pv=1", "dom0=no-pvh", "dom0=pvh,", "dom0="] {
            assert!(m(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn dom0_max_vcpus_follows_xen() {
        fn v(line: &str) -> Option<Dom0Vcpus> {
            parse(line, |_| {}).ok().map(|o| o.dom0_max_vcpus)
        }
        assert_eq!(v(""), Some(Dom0Vcpus::default()));
        let r = |min, max| Some(Dom0Vcpus { min, max });
        assert_eq!(v("dom0_max_vcpus=2"), r(2, 2));
        assert_eq!(v("dom0_max_vcpus=0"), r(1, 1));
        assert_eq!(v("dom0-max-vcpus=2-4"), r(2, 4));
        assert_eq!(v("dom0_max_vcpus=3-"), r(3, u32::MAX));
        assert_eq!(v("dom0_max_vcpus=-3"), r(1, 3));
        assert_eq!(v("dom0_max_vcpus=4-2"), r(4, 2));
        for bad in ["dom0_max_vcpus=x", "dom0_max_vcpus", "dom0_max_vcpus=1-2-3", "dom0_max_vcpus=-"] {
            assert!(v(bad).is_none(), "{bad}");
        }
        // One per pCPU, within min..=max and keel's limit.
        let d = Dom0Vcpus::default();
        assert_eq!(d.count(4, 32), 4);
        assert_eq!(d.count(64, 32), 32);
        assert_eq!(Dom0Vcpus { min: 1, max: 2 }.count(4, 32), 2);
        assert_eq!(Dom0Vcpus { min: 3, max: 8 }.count(1, 32), 3);
        // Xen's table for 4-8: 2 -> 4, 4 -> 4, 6 -> 6, 8 -> 8, 10 -> 8.
        let x = Dom0Vcpus { min: 4, max: 8 };
        let got: Vec<u32> = [2, 4, 6, 8, 10].iter().map(|&p| x.count(p, 32)).collect();
        assert_eq!(got, [4, 4, 6, 8, 8]);
        // max wins over min; never 0.
        assert_eq!(Dom0Vcpus { min: 4, max: 2 }.count(8, 32), 2);
        assert_eq!(Dom0Vcpus { min: 1, max: 0 }.count(8, 32), 1);
    }

    #[test]
    fn dom0_vcpus_pin_is_a_xen_boolean() {
        fn pin(line: &str) -> Result<bool, CmdlineError<'_>> {
            parse(line, |_| {}).map(|o| o.dom0_vcpus_pin)
        }
        assert_eq!(pin(""), Ok(false));
        assert_eq!(pin("dom0_vcpus_pin"), Ok(true));
        assert_eq!(pin("dom0-vcpus-pin"), Ok(true));
        assert_eq!(
            pin("dom0_vcpus_pin="),
            Ok(true),
            "an empty value is yes, as in Xen"
        );
        assert_eq!(pin("no-dom0_vcpus_pin"), Ok(false));
        assert_eq!(pin("no-dom0_vcpus_pin="), Ok(false));
        for v in ["1", "on", "yes", "true", "enable"] {
            assert_eq!(pin(&format!("dom0_vcpus_pin={v}")), Ok(true), "{v}");
            assert_eq!(
                pin(&format!("no-dom0_vcpus_pin={v}")),
                Ok(false),
                "no-...={v}"
            );
        }
        for v in ["0", "no", "off", "false", "disable"] {
            assert_eq!(pin(&format!("dom0_vcpus_pin={v}")), Ok(false), "{v}");
            assert_eq!(
                pin(&format!("no-dom0_vcpus_pin={v}")),
                Ok(true),
                "no-...={v}"
            );
        }
        // The last one wins.
        assert_eq!(pin("dom0_vcpus_pin no-dom0_vcpus_pin"), Ok(false));
        assert_eq!(pin("no-dom0-vcpus-pin dom0_vcpus_pin=on"), Ok(true));
        // Anything else is an error, naming the option and what it takes.
        let e = parse("dom0_vcpus_pin=maybe", |_| {}).unwrap_err();
        assert_eq!(
            e,
            CmdlineError::BadValue {
                option: "dom0_vcpus_pin=maybe",
                value: "maybe",
                expected: BOOL_EXPECTED
            }
        );
        assert_eq!(
            e.to_string(),
            "option 'dom0_vcpus_pin=maybe': 'maybe' is not a boolean (1, on, yes, true, \
             enable or 0, no, off, false, disable; nothing means yes)"
        );
        for bad in [
            "dom0_vcpus_pin=TRUE",
            "dom0_vcpus_pin=2",
            "dom0_vcpus_pin=y",
            "no-dom0_vcpus_pin=x",
        ] {
            assert!(pin(bad).is_err(), "{bad}");
        }
        // Only Xen's `no-` prefix inverts, and only boolean options.
        let (o, u) = parse_ok("no_dom0_vcpus_pin nodom0_vcpus_pin no-loglvl=none");
        assert_eq!(
            u,
            ["no_dom0_vcpus_pin", "nodom0_vcpus_pin", "no-loglvl=none"]
        );
        assert!(!o.dom0_vcpus_pin);
        assert_eq!(o.loglvl, LogLevel::Info);
    }

    #[test]
    fn sched_picks_the_policy() {
        assert_eq!(parse("", |_| {}).unwrap().sched, SchedPolicy::Credit2);
        assert_eq!(
            parse("sched=null", |_| {}).unwrap().sched,
            SchedPolicy::Null
        );
        assert_eq!(
            parse("sched=credit2", |_| {}).unwrap().sched.name(),
            "credit2"
        );
    }

    #[test]
    fn dom0_mem_bytes_follows_xen_rules() {
        let avail = 8 * G;
        let none = Dom0Mem::default();
        // Default: all but max(16 MiB, 1/16).
        assert_eq!(dom0_mem_bytes(&none, avail), Ok(avail - avail / 16));
        assert_eq!(dom0_mem_bytes(&none, 128 * M), Ok(112 * M));
        let with = |line: &str| dom0_mem_bytes(&dom0_mem(line), avail);
        assert_eq!(with("dom0_mem=512M"), Ok(512 * M));
        assert_eq!(with("dom0_mem=-1G"), Ok(7 * G));
        assert_eq!(with("dom0_mem=25%"), Ok(2 * G));
        assert_eq!(with("dom0_mem=1G+25%"), Ok(3 * G));
        assert_eq!(with("dom0_mem=-1G+25%"), Ok(5 * G));
        // Clamps: min raises, max lowers and wins over min, availability caps.
        assert_eq!(with("dom0_mem=512M,min:1G"), Ok(G));
        assert_eq!(with("dom0_mem=2G,max:1G"), Ok(G));
        assert_eq!(with("dom0_mem=min:2G,max:1G"), Ok(G));
        assert_eq!(with("dom0_mem=max:1G"), Ok(G));
        assert_eq!(with("dom0_mem=64G"), Ok(avail));
        // An amount of 0 (or all of it subtracted) means the default, as in Xen.
        assert_eq!(with("dom0_mem=0"), dom0_mem_bytes(&none, avail));
        assert_eq!(with("dom0_mem=-16G"), dom0_mem_bytes(&none, avail));
        // Rounded down to whole pages.
        assert_eq!(with("dom0_mem=4099K"), Ok(4 * M));
        assert_eq!(
            dom0_mem_bytes(&none, avail + 0x123),
            dom0_mem_bytes(&none, avail)
        );
        // Too little is an error with the numbers in it.
        let e = with("dom0_mem=1M").expect_err("too small");
        assert_eq!(
            e,
            Dom0MemError::TooSmall {
                bytes: M,
                available: avail,
                minimum: DOM0_MIN_BYTES
            }
        );
        assert!(e.to_string().contains("0x100000 bytes"), "{e}");
        assert!(dom0_mem_bytes(&none, 16 * M).is_err());
        assert!(dom0_mem_bytes(&none, 0).is_err());
        assert!(with("dom0_mem=max:0").is_err());
        // Nothing overflows, whatever the inputs.
        let huge = Dom0Mem {
            amount: Some(SizeSpec {
                bytes: u64::MAX,
                percent: 255,
                minus: false,
            }),
            min: None,
            max: None,
        };
        assert_eq!(dom0_mem_bytes(&huge, u64::MAX), Ok(!0xFFF));
    }
}
