//! xl.cfg: the domain configuration files of Xen's `xl` (xl.cfg(5)), as keel reads
//! them to build domUs at boot.
//!
//! # What
//!
//! [`parse_settings`] reads the file's syntax into [`Settings`] (every key, with its
//! value and line); [`Config::parse`] then takes the subset keel acts on:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `name` | the domain's name (required, unique) | — |
//! | `type` | `"pvh"`, or `"pv"` (built and checked, not run yet: docs/pv.md) (required; `"hvm"` is refused as not supported yet, and so is the deprecated `builder`) | — |
//! | `kernel`, `ramdisk` | the images, named as multiboot modules (see `launch`) | —, none |
//! | `cmdline`, or `root` + `extra` | the kernel command line | empty |
//! | `memory`, `maxmem` | MiB of RAM at boot, and at most | 128, `memory` |
//! | `vcpus`, `maxvcpus` | vCPUs online at boot, and at most (≤ 128, `HVM_MAX_VCPUS`) | 1, `vcpus` |
//! | `max_event_channels` | highest event channel port | 1023 |
//! | `max_grant_frames` | grant table frames | 64 |
//! | `max_grant_version` | highest grant table version the domain may switch to (1 or 2) | 2 |
//! | `on_poweroff`, `on_reboot`, `on_crash` | what to do when it ends | destroy, restart, destroy |
//! | `cpu_weight`, `cap` | scheduling weight; cap in % of one pCPU (0 = none) | 256, 0 |
//! | `cpus` | hard vCPU affinity: the pCPUs each vCPU may run on (see below) | every pCPU |
//! | `cpus_soft` | soft vCPU affinity: the pCPUs each vCPU prefers (see below) | no preference |
//!
//! Any other key is kept in [`Config::settings`] and reported as a [`Warning`]: known
//! xl keys keel does not act on yet (`disk`, `vif`, ...) as ignored, others as
//! unknown (a typo must not stop a machine from booting, as in xl).
//!
//! # Syntax (libxlu's grammar, `tools/libs/util/libxlu_cfg_[ly].[ly]`)
//!
//! - Settings are `KEY = VALUE` or `KEY += VALUE`, ended by a newline or `;`. Keys
//!   are a lowercase letter followed by lowercase letters, digits, `_` and `.`.
//! - A value is a string in double or single quotes (on one line), a number, or a
//!   list `[ VALUE, ... ]` (nested lists allowed, newlines and a trailing comma
//!   allowed inside).
//! - `#` starts a comment to the end of the line. Spaces, tabs and (unlike xl) a
//!   carriage return before a newline are blanks.
//! - String escapes: `\" \' \\ \a \b \f \n \r \t \v`, `\xHH` (two hex digits) and
//!   `\OOO` (one to three octal digits). xl's own numeric escapes are broken (octal
//!   read as decimal, hex always refused); keel reads them as C does. An escape may
//!   not produce NUL, and a string must be UTF-8.
//! - Numbers follow `strtol(.., 0)`, as xl reads them: decimal, `0x` hex, and a
//!   leading `0` means **octal** (`memory = 0100` is 64). A quoted number is also a
//!   number (`memory = "512"`), and a number is also a string (`name = 42`).
//! - A key given twice: the last wins. `+=` appends to the earlier value (strings
//!   concatenate, lists extend; mixing is an error) and cannot be used for numbers.
//! - `cmdline` wins over `root` and `extra` (with a warning); otherwise the command
//!   line is `root=ROOT EXTRA`, as xl builds it.
//!
//! # vCPU affinity (`cpus`, `cpus_soft`; xl's `parse_vcpu_affinity`)
//!
//! A *CPU list* is a string of comma-separated items: `all`, a pCPU `N`, a range
//! `N-M` (N ≤ M), and `^N` or `^N-M` to take pCPUs out. Items apply in order, as xl
//! applies them (`parse_cpurange`): `"0-3,5,^1"` is 0, 2, 3, 5, and `"all,^4-7,5"`
//! every pCPU but 4, 6 and 7. A CPU list of exclusions only starts from every pCPU
//! (`"^0"` is all but pCPU 0), where xl starts from none (and Xen then refuses the
//! empty hard affinity). Numbers are decimal even with a leading `0` (xl reads pCPU
//! ids with `strtoul(.., 10)`, unlike the numeric keys above). Blanks around an
//! item, after `^` and around `-` are ignored (xl ignores those before a number
//! only), and empty items are skipped (as xl's `strtok` skips them).
//!
//! `cpus = "CPU-LIST"` (or a bare number) gives every vCPU the same set
//! ([`Affinity::All`]); `cpus = ["2", "3-8,^5"]` gives vCPU 0 pCPU 2, vCPU 1 pCPUs
//! 3, 4, 6, 7 and 8, and the vCPUs past the list every pCPU ([`Affinity::PerVcpu`]).
//!
//! Refused, naming the line: NUMA nodes (`node:N`, `nodes:N-M`; keel has no NUMA
//! support), `^all`, malformed numbers and ranges (`M < N`), a pCPU id of
//! [`keel_sched::MAX_CPUS`] or more, a set that ends up empty, a list with more
//! entries than `maxvcpus` (xl drops the extra ones silently; here they are most
//! likely a mistake), and lists inside the list. Whether the pCPUs named exist is
//! known only at boot: see [`Affinity`] for what the kernel does then.
//!
//! # Invariants
//!
//! - Nothing here panics, whatever the bytes (property-tested). Lists nest at most
//!   [`MAX_DEPTH`] deep (no unbounded recursion); work is linear in the input.
//! - Every error names its line (0 when it is about the file as a whole, such as a
//!   missing key) and says what is wrong in words meant for the administrator.
//!
//! # Locking
//!
//! None: pure functions over bytes, run once at boot.

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use keel_sched::{CpuSet, MAX_CPUS};

/// Deepest list nesting accepted.
pub const MAX_DEPTH: usize = 16;
/// Default `memory`, MiB (keel's choice; libxl's is 32).
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Largest `memory`/`maxmem` accepted, MiB (16 TiB); the builder checks what is free.
pub const MAX_MEMORY_MIB: u64 = 1 << 24;
/// Most vCPUs a PVH/HVM domain can have (`HVM_MAX_VCPUS`, `public/hvm/hvm_info_table.h`).
pub const MAX_VCPUS: u32 = 128;
/// Default `max_event_channels` (xl.cfg(5)).
pub const DEFAULT_MAX_EVENT_CHANNELS: u32 = 1023;
/// Largest `max_event_channels`: the FIFO ABI's last port (`EVTCHN_FIFO_NR_CHANNELS`
/// is `1 << EVTCHN_FIFO_LINK_BITS` = 2^17, `public/event_channel.h`).
pub const MAX_EVENT_CHANNELS: u32 = (1 << 17) - 1;
/// Default and largest `max_grant_version`: Xen's `opt_gnttab_max_version`
/// (`GNTTAB_MAX_VERSION`, `xen/common/grant_table.c`), which xl uses by default.
pub const MAX_GRANT_VERSION: u32 = 2;
/// Default `max_grant_frames`: Xen's `gnttab_max_frames` default
/// (`opt_max_grant_frames`, `xen/common/grant_table.c`), which xl uses when neither
/// the config nor xl.conf sets one.
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;
/// Default and largest `cpu_weight` (xl.cfg(5)).
pub const DEFAULT_WEIGHT: u32 = 256;
pub const MAX_WEIGHT: u32 = 65535;

/// A value as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, escapes resolved (or the result of `+=` on atoms).
    Str(String),
    /// An unquoted number, as written (interpreted only when a number is wanted).
    Num(String),
    List(Vec<Value>),
}

impl Value {
    /// The text of a string or number; `None` for a list.
    pub fn atom(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Num(s) => Some(s),
            Value::List(_) => None,
        }
    }
}

/// One key's value, and the line of the assignment that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub line: u32,
    pub value: Value,
    /// The last assignment was `+=`.
    pub appended: bool,
}

/// Every key of a file, by name.
pub type Settings = BTreeMap<String, Setting>;

/// The domain type (`type =`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainType {
    Pvh,
    /// A paravirtualized kernel (`XEN_ELFNOTE_ENTRY`): keel builds and checks
    /// it, and does not run it yet (docs/pv.md).
    Pv,
}

/// What to do when a domain ends (`on_poweroff` etc.; libxl's
/// `libxl_action_on_shutdown`, xl's names). keel acts on `Destroy` only so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Destroy,
    Restart,
    RenameRestart,
    Preserve,
    CoredumpDestroy,
    CoredumpRestart,
    SoftReset,
}

const ACTIONS: [(&str, Action); 7] = [
    ("destroy", Action::Destroy),
    ("restart", Action::Restart),
    ("rename-restart", Action::RenameRestart),
    ("preserve", Action::Preserve),
    ("coredump-destroy", Action::CoredumpDestroy),
    ("coredump-restart", Action::CoredumpRestart),
    ("soft-reset", Action::SoftReset),
];

impl Action {
    /// xl's name for the action.
    pub fn name(self) -> &'static str {
        ACTIONS
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("destroy", |(n, _)| n)
    }
}

/// A vCPU affinity, from `cpus` (hard: the pCPUs a vCPU may run on, never any
/// other) or `cpus_soft` (soft: the pCPUs it prefers when one of them is free). See
/// the module documentation for the syntax.
///
/// Every set is non-empty and holds ids below [`keel_sched::MAX_CPUS`] only; `all`
/// is every such id. How many pCPUs the machine has is known only at boot, so the
/// kernel must check that when it applies the affinity, as Xen does with the online
/// pCPUs: keep the pCPUs of a set that exist (`set.intersect(&CpuSet::all(nr))`),
/// refuse to start a domain whose hard affinity for some vCPU is then empty (Xen:
/// `EINVAL` from `XEN_DOMCTL_setvcpuaffinity`), and take a soft set with no pCPU
/// left, or none in common with the hard set, as no preference (as `keel_sched`
/// does with `soft ∩ hard`). `keel_sched::Policy::set_affinity` refuses sets naming
/// pCPUs that do not exist, so these sets must not be handed to it unreduced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// One set for every vCPU (`cpus = "0-3,^2"`).
    All(CpuSet),
    /// Element `i` for vCPU `i` (`cpus = ["2", "3-8,^5"]`); vCPUs past the list get
    /// every pCPU (hard) or no preference (soft). At most `maxvcpus` elements; may be
    /// empty (`cpus = []`, which pins nothing).
    PerVcpu(Vec<CpuSet>),
}

impl Affinity {
    /// vCPU `vcpu`'s set; `None` when this affinity does not restrict it (every
    /// pCPU for a hard affinity, no preference for a soft one).
    pub fn for_vcpu(&self, vcpu: u32) -> Option<&CpuSet> {
        match self {
            Affinity::All(set) => Some(set),
            Affinity::PerVcpu(sets) => usize::try_from(vcpu).ok().and_then(|i| sets.get(i)),
        }
    }
}

/// A domU's configuration: what keel acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub kind: DomainType,
    pub kernel: String,
    pub ramdisk: Option<String>,
    /// The command line from `cmdline`, or `root` and `extra`; empty if none.
    pub cmdline: String,
    pub memory_mib: u64,
    pub maxmem_mib: u64,
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub max_event_channels: u32,
    pub max_grant_frames: u32,
    /// Highest grant table version the domain may use (Xen's `max_grant_version`).
    pub max_grant_version: u32,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
    pub cpu_weight: u32,
    /// Percent of one pCPU for the whole domain; 0 = no cap.
    pub cap: u32,
    /// `cpus`: the hard affinity, the pCPUs each vCPU may run on; `None` = every
    /// pCPU. The pCPUs are checked against the machine at boot (see [`Affinity`]).
    pub cpus: Option<Affinity>,
    /// `cpus_soft`: the soft affinity, the pCPUs each vCPU prefers; `None` = no
    /// preference. What counts is its intersection with the hard affinity.
    pub cpus_soft: Option<Affinity>,
    /// Everything the file said, including keys keel does not act on.
    pub settings: Settings,
    pub warnings: Vec<Warning>,
}

impl Config {
    /// Reads an xl.cfg file. See the module documentation for what is accepted.
    pub fn parse(text: &[u8]) -> Result<Config, Error> {
        let settings = parse_settings(text)?;
        let mut warnings = Vec::new();
        for (key, s) in &settings {
            if USED.contains(&key.as_str()) {
                continue;
            }
            let kind = if IGNORED.contains(&key.as_str()) {
                WarningKind::Ignored(key.clone())
            } else {
                WarningKind::UnknownKey(key.clone())
            };
            warnings.push(Warning { line: s.line, kind });
        }
        let get = Get {
            settings: &settings,
        };

        let name = get
            .string("name")?
            .ok_or(Error::whole(ErrorKind::Missing("name")))?;
        check_name(&name, get.line("name"))?;

        if let Some(b) = get.string("builder")? {
            return Err(Error::at(get.line("builder"), ErrorKind::Builder(b)));
        }
        let kind = match get.string("type")?.as_deref() {
            Some("pvh") => DomainType::Pvh,
            Some("pv") => DomainType::Pv,
            Some(t @ "hvm") => {
                return Err(Error::at(
                    get.line("type"),
                    ErrorKind::UnsupportedType(t.to_string()),
                ));
            }
            Some(t) => {
                return Err(Error::at(
                    get.line("type"),
                    ErrorKind::UnknownType(t.to_string()),
                ));
            }
            None => return Err(Error::whole(ErrorKind::MissingType)),
        };

        let kernel = get
            .string("kernel")?
            .ok_or(Error::whole(ErrorKind::Missing("kernel")))?;
        if kernel.trim().is_empty() {
            return Err(Error::at(get.line("kernel"), ErrorKind::Empty("kernel")));
        }
        let ramdisk = get.string("ramdisk")?;
        if ramdisk.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(Error::at(get.line("ramdisk"), ErrorKind::Empty("ramdisk")));
        }

        let cmdline = match (
            get.string("cmdline")?,
            get.string("root")?,
            get.string("extra")?,
        ) {
            (Some(c), root, extra) => {
                if root.is_some() || extra.is_some() {
                    warnings.push(Warning {
                        line: get.line("cmdline"),
                        kind: WarningKind::RootExtraIgnored,
                    });
                }
                c
            }
            (None, Some(r), Some(e)) => alloc::format!("root={r} {e}"),
            (None, Some(r), None) => alloc::format!("root={r}"),
            (None, None, Some(e)) => e,
            (None, None, None) => String::new(),
        };
        let memory_mib = get
            .number("memory", 1, MAX_MEMORY_MIB as i64)?
            .map_or(DEFAULT_MEMORY_MIB, |m| m as u64);
        let maxmem_mib = get
            .number("maxmem", 1, MAX_MEMORY_MIB as i64)?
            .map_or(memory_mib, |m| m as u64);
        if maxmem_mib < memory_mib {
            return Err(Error::at(
                get.line("maxmem"),
                ErrorKind::MaxmemBelowMemory {
                    memory: memory_mib,
                    maxmem: maxmem_mib,
                },
            ));
        }

        let vcpus = match get.number("vcpus", 0, i64::from(MAX_VCPUS))? {
            Some(0) => {
                warnings.push(Warning {
                    line: get.line("vcpus"),
                    kind: WarningKind::ZeroVcpus,
                });
                1
            }
            Some(n) => n as u32,
            None => 1,
        };
        let max_vcpus = get
            .number("maxvcpus", 1, i64::from(MAX_VCPUS))?
            .map_or(vcpus, |n| n as u32);
        if max_vcpus < vcpus {
            return Err(Error::at(
                get.line("maxvcpus"),
                ErrorKind::MaxvcpusBelowVcpus { vcpus, max_vcpus },
            ));
        }

        let max_event_channels = get
            .number("max_event_channels", 1, i64::from(MAX_EVENT_CHANNELS))?
            .map_or(DEFAULT_MAX_EVENT_CHANNELS, |n| n as u32);
        let max_grant_frames = get
            .number("max_grant_frames", 1, i64::from(i32::MAX))?
            .map_or(DEFAULT_MAX_GRANT_FRAMES, |n| n as u32);
        // Xen's grant_table_init refuses 0 and anything above what it supports.
        let max_grant_version = get
            .number("max_grant_version", 1, i64::from(MAX_GRANT_VERSION))?
            .map_or(MAX_GRANT_VERSION, |n| n as u32);

        let on_poweroff = get.action("on_poweroff", Action::Destroy)?;
        let on_reboot = get.action("on_reboot", Action::Restart)?;
        let on_crash = get.action("on_crash", Action::Destroy)?;

        let cpu_weight = get
            .number("cpu_weight", 1, i64::from(MAX_WEIGHT))?
            .map_or(DEFAULT_WEIGHT, |n| n as u32);
        // Xen's credit2 refuses a cap above 100% per vCPU of the domain.
        let cap = get
            .number("cap", 0, 100 * i64::from(max_vcpus))?
            .map_or(0, |n| n as u32);

        let cpus = get.affinity("cpus", max_vcpus)?;
        let cpus_soft = get.affinity("cpus_soft", max_vcpus)?;

        warnings.sort_by_key(|w| w.line);
        Ok(Config {
            name,
            kind,
            kernel,
            ramdisk,
            cmdline,
            memory_mib,
            maxmem_mib,
            vcpus,
            max_vcpus,
            max_event_channels,
            max_grant_frames,
            max_grant_version,
            on_poweroff,
            on_reboot,
            on_crash,
            cpu_weight,
            cap,
            cpus,
            cpus_soft,
            settings,
            warnings,
        })
    }

    /// The scheduling parameters of each of the domain's vCPUs. `cap` is for the
    /// whole domain (as in xl); keel's policies cap each vCPU, so each gets
    /// `ceil(cap / vcpus)` %, at most 100 (a static split of Xen's shared budget).
    pub fn sched_params(&self) -> keel_sched::Params {
        let cap = match self.cap {
            0 => 0,
            c => c.div_ceil(self.vcpus.max(1)).min(keel_sched::MAX_CAP),
        };
        keel_sched::Params {
            weight: self.cpu_weight,
            cap,
        }
    }
}

/// Keys [`Config::parse`] acts on.
const USED: &[&str] = &[
    "name",
    "type",
    "builder",
    "kernel",
    "ramdisk",
    "cmdline",
    "root",
    "extra",
    "memory",
    "maxmem",
    "vcpus",
    "maxvcpus",
    "max_event_channels",
    "max_grant_frames",
    "max_grant_version",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "cpu_weight",
    "cap",
    "cpus",
    "cpus_soft",
];

/// xl keys keel knows but does not act on yet: warned about as "ignored".
const IGNORED: &[&str] = &[
    "uuid",
    "pool",
    "disk",
    "vif",
    "vfb",
    "vkb",
    "vtpm",
    "p9",
    "pvcalls",
    "channel",
    "usbctrl",
    "usbdev",
    "pci",
    "dtdev",
    "vdispl",
    "vsnd",
    "vdevice",
    "serial",
    "on_watchdog",
    "on_soft_reset",
    "max_maptrack_frames",
    "max_grant_version",
    "seclabel",
    "init_seclabel",
    "bootloader",
    "bootloader_args",
    "firmware",
    "device_tree",
    "hap",
    "oos",
    "nomigrate",
    "driver_domain",
    "device_model_version",
    "device_model_override",
    "localtime",
    "rtc_timeoffset",
    "tsc_mode",
    "vnuma",
    "cpuid",
    "viridian",
    "pvshim",
    "pvshim_path",
    "pvshim_cmdline",
    "pvshim_extra",
    "acpi",
    "apic",
    "nestedhvm",
    "altp2m",
    "vga",
    "vnc",
    "sdl",
    "boot",
    "period",
    "slice",
    "latency",
    "extratime",
];

/// Typed reads of [`Settings`].
struct Get<'a> {
    settings: &'a Settings,
}

impl Get<'_> {
    fn line(&self, key: &str) -> u32 {
        self.settings.get(key).map_or(0, |s| s.line)
    }

    fn string(&self, key: &'static str) -> Result<Option<String>, Error> {
        let Some(s) = self.settings.get(key) else {
            return Ok(None);
        };
        match s.value.atom() {
            Some(a) => Ok(Some(a.to_string())),
            None => Err(Error::at(s.line, ErrorKind::NotAString(key))),
        }
    }

    fn number(&self, key: &'static str, min: i64, max: i64) -> Result<Option<i64>, Error> {
        let Some(s) = self.settings.get(key) else {
            return Ok(None);
        };
        let Some(text) = s.value.atom() else {
            return Err(Error::at(
                s.line,
                ErrorKind::NotANumber(key, "a list".to_string()),
            ));
        };
        if s.appended {
            return Err(Error::at(s.line, ErrorKind::AppendNumber(key)));
        }
        let n = match parse_long(text) {
            Ok(n) => n,
            Err(LongError::Invalid) => {
                return Err(Error::at(
                    s.line,
                    ErrorKind::NotANumber(key, alloc::format!("{text:?}")),
                ));
            }
            Err(LongError::Overflow) => {
                return Err(Error::at(
                    s.line,
                    ErrorKind::OutOfRange {
                        key,
                        value: text.to_string(),
                        min,
                        max,
                    },
                ));
            }
        };
        if n < min || n > max {
            return Err(Error::at(
                s.line,
                ErrorKind::OutOfRange {
                    key,
                    value: n.to_string(),
                    min,
                    max,
                },
            ));
        }
        Ok(Some(n))
    }

    fn action(&self, key: &'static str, default: Action) -> Result<Action, Error> {
        let Some(name) = self.string(key)? else {
            return Ok(default);
        };
        ACTIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .ok_or(Error::at(
                self.line(key),
                ErrorKind::UnknownAction(key, name),
            ))
    }

    /// `cpus` or `cpus_soft` (see the module documentation), for a domain of at
    /// most `max_vcpus` vCPUs.
    fn affinity(&self, key: &'static str, max_vcpus: u32) -> Result<Option<Affinity>, Error> {
        let Some(s) = self.settings.get(key) else {
            return Ok(None);
        };
        let at = |kind| Error::at(s.line, kind);
        let items = match &s.value {
            Value::Str(text) | Value::Num(text) => {
                let set = parse_cpu_list(text, AffinityEntry { key, vcpu: None }).map_err(at)?;
                return Ok(Some(Affinity::All(set)));
            }
            Value::List(items) => items,
        };
        if items.len() > max_vcpus as usize {
            return Err(at(ErrorKind::AffinityTooLong {
                key,
                entries: items.len(),
                max_vcpus,
            }));
        }
        let mut sets = Vec::with_capacity(items.len());
        // `vcpu < items.len() <= max_vcpus`, a u32.
        for (vcpu, item) in (0u32..).zip(items) {
            let text = item
                .atom()
                .ok_or_else(|| at(ErrorKind::AffinityNested(key)))?;
            let entry = AffinityEntry {
                key,
                vcpu: Some(vcpu),
            };
            sets.push(parse_cpu_list(text, entry).map_err(at)?);
        }
        Ok(Some(Affinity::PerVcpu(sets)))
    }
}

/// Blanks ignored around the items of a CPU list.
const CPU_LIST_BLANKS: [char; 2] = [' ', '\t'];

/// One CPU list (see the module documentation): the set it names, never empty.
fn parse_cpu_list(text: &str, at: AffinityEntry) -> Result<CpuSet, ErrorKind> {
    let items = || {
        text.split(',')
            .map(|i| i.trim_matches(CPU_LIST_BLANKS))
            .filter(|i| !i.is_empty())
    };
    // Exclusions alone start from every pCPU (xl would start from none).
    let only_exclusions = items().next().is_some() && items().all(|i| i.starts_with('^'));
    let mut set = if only_exclusions {
        CpuSet::all(MAX_CPUS)
    } else {
        CpuSet::new()
    };
    for item in items() {
        let (exclude, what) = match item.strip_prefix('^') {
            Some(rest) => (true, rest.trim_start_matches(CPU_LIST_BLANKS)),
            None => (false, item),
        };
        let malformed = || ErrorKind::AffinityMalformed {
            at,
            item: item.to_string(),
        };
        if what.starts_with("node:") || what.starts_with("nodes:") {
            return Err(ErrorKind::AffinityNodes {
                at,
                item: item.to_string(),
            });
        }
        if what == "all" {
            if exclude {
                return Err(ErrorKind::AffinityExcludeAll(at));
            }
            set = CpuSet::all(MAX_CPUS);
            continue;
        }
        let (first, last) = match what.split_once('-') {
            Some((a, b)) => (
                a.trim_end_matches(CPU_LIST_BLANKS),
                b.trim_start_matches(CPU_LIST_BLANKS),
            ),
            None => (what, what),
        };
        let (Some(first), Some(last)) = (cpu_id(first), cpu_id(last)) else {
            return Err(malformed());
        };
        if last < first {
            return Err(malformed());
        }
        let too_high = || ErrorKind::AffinityCpuTooHigh {
            at,
            item: item.to_string(),
            max: MAX_CPUS - 1,
        };
        if last >= MAX_CPUS {
            return Err(too_high());
        }
        for cpu in first..=last {
            if exclude {
                set.remove(cpu);
            } else {
                // Cannot fail: `cpu <= last < MAX_CPUS`.
                set.insert(cpu).map_err(|_| too_high())?;
            }
        }
    }
    if set.is_empty() {
        return Err(ErrorKind::AffinityEmpty(at));
    }
    Ok(set)
}

/// A pCPU id: decimal digits only (a leading 0 is not octal). Too large for a u32
/// reads as `u32::MAX`, which the caller refuses as too high.
fn cpu_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only digits: the parse can fail only by overflowing.
    Some(text.parse().unwrap_or(u32::MAX))
}

fn check_name(name: &str, line: u32) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::at(line, ErrorKind::Empty("name")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::at(line, ErrorKind::NameControl));
    }
    Ok(())
}

enum LongError {
    Invalid,
    Overflow,
}

/// `strtol(text, &end, 0)` requiring `*end == 0`: leading blanks, a sign, then
/// `0x` hex, `0` octal or decimal digits, and nothing after.
fn parse_long(text: &str) -> Result<i64, LongError> {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(hex) = t.strip_prefix("0x").or(t.strip_prefix("0X")) {
        (16, hex)
    } else if t.len() > 1 && t.starts_with('0') {
        (8, &t[1..])
    } else {
        (10, t)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(LongError::Invalid);
    }
    let magnitude = u64::from_str_radix(digits, radix).map_err(|_| LongError::Overflow)?;
    let value = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    value.ok_or(LongError::Overflow)
}

/// A non-fatal remark about a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub line: u32,
    pub kind: WarningKind,
}

/// What a [`Warning`] is about. The variant's doc is the message.
#[derive(Clone, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum WarningKind {
    /// unknown key `{0}` ignored
    UnknownKey(String),
    /// `{0}` is not supported by keel yet and is ignored
    Ignored(String),
    /// `cmdline` is set, so `root` and `extra` are ignored (as xl does)
    RootExtraIgnored,
    /// `vcpus = 0` means 1 vCPU (as in xl)
    ZeroVcpus,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

/// Why a config file is refused: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// 1-based; 0 when the error is about the whole file (a missing key).
    pub line: u32,
    pub kind: ErrorKind,
}

impl Error {
    fn at(line: u32, kind: ErrorKind) -> Error {
        Error { line, kind }
    }

    fn whole(kind: ErrorKind) -> Error {
        Error { line: 0, kind }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "line {}: {}", self.line, self.kind)
        }
    }
}

/// What is wrong. The variant's doc is the message.
#[derive(Clone, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum ErrorKind {
    /// unexpected {0} (keys are lowercase names, strings are quoted, numbers are digits)
    Unexpected(Found),
    /// expected a setting (`key = value`), found {0}; keys are a lowercase letter followed by lowercase letters, digits, `_` or `.`
    ExpectedKey(Found),
    /// expected `=` or `+=` after `{0}`, found {1}
    ExpectedEquals(String, Found),
    /// expected a value for `{0}` (a "string", a number or a [list]), found {1}
    ExpectedValue(String, Found),
    /// expected the end of the line or `;` after the value of `{0}`, found {1}
    ExpectedEnd(String, Found),
    /// expected `,` or `]` in the list for `{0}`, found {1}
    ExpectedComma(String, Found),
    /// the list for `{0}` opened on line {1} is never closed
    UnclosedList(String, u32),
    /// lists nested more than 16 deep
    TooDeep,
    /// unterminated string (a string must end on the line it starts)
    UnterminatedString,
    /// invalid escape `\{0}` in a string (use \" \' \\ \a \b \f \n \r \t \v \xHH or \OOO)
    BadEscape(char),
    /// a string holds a NUL character (raw or escaped), which a C string cannot
    Nul,
    /// the string is not valid UTF-8
    NotUtf8,
    /// `{0} +=` mixes a list and a string
    AppendMismatch(String),
    /// `{0}` is required
    Missing(&'static str),
    /// `{0}` must not be empty
    Empty(&'static str),
    /// `name` must not contain control characters
    NameControl,
    /// `type` is required: keel builds PVH domUs (type = "pvh"); xl's default, pv, is not supported yet
    MissingType,
    /// type = "{0}" is not supported yet: keel builds PVH (and checks PV) domUs only (type = "pvh" or "pv")
    UnsupportedType(String),
    /// unknown type "{0}": keel builds PVH domUs (type = "pvh")
    UnknownType(String),
    /// builder = "{0}" (deprecated) selects a PV or HVM guest, which keel does not support yet: use type = "pvh"
    Builder(String),
    /// `{0}` must be a string, not a list
    NotAString(&'static str),
    /// `{0}` must be a number (decimal, 0x hex or 0-prefixed octal), not {1}
    NotANumber(&'static str, String),
    /// `{0}`: += cannot be used with numbers
    AppendNumber(&'static str),
    /// `{key}` = {value} is out of range ({min}..={max})
    OutOfRange {
        key: &'static str,
        value: String,
        min: i64,
        max: i64,
    },
    /// maxmem ({maxmem} MiB) must not be less than memory ({memory} MiB)
    MaxmemBelowMemory { memory: u64, maxmem: u64 },
    /// maxvcpus ({max_vcpus}) must not be less than vcpus ({vcpus})
    MaxvcpusBelowVcpus { vcpus: u32, max_vcpus: u32 },
    /// unknown {0} action "{1}" (destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart or soft-reset)
    UnknownAction(&'static str, String),
    /// {at}: {item:?} names NUMA nodes, which keel does not support: list pCPUs instead (e.g. "0-3,^2")
    AffinityNodes { at: AffinityEntry, item: String },
    /// {at}: {item:?} is not `all`, a pCPU N or a range N-M (decimal, N <= M), each optionally after `^` to exclude it
    AffinityMalformed { at: AffinityEntry, item: String },
    /// {0}: "^all" would exclude every pCPU
    AffinityExcludeAll(AffinityEntry),
    /// {at}: {item:?} names a pCPU above {max}, the highest keel supports
    AffinityCpuTooHigh {
        at: AffinityEntry,
        item: String,
        max: u32,
    },
    /// {0} names no pCPU
    AffinityEmpty(AffinityEntry),
    /// `{key}` has {entries} entries, one per vCPU, but the domain has at most {max_vcpus} vCPUs (maxvcpus)
    AffinityTooLong {
        key: &'static str,
        entries: usize,
        max_vcpus: u32,
    },
    /// `{0}` must be a CPU list such as "0-3,^2", or a list of them (one per vCPU), not a list of lists
    AffinityNested(&'static str),
}

/// Which CPU list of `cpus` or `cpus_soft` an error is about, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityEntry {
    /// `cpus` or `cpus_soft`.
    pub key: &'static str,
    /// The vCPU, when the key is a list of CPU lists (one per vCPU).
    pub vcpu: Option<u32>,
}

impl fmt::Display for AffinityEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vcpu {
            None => write!(f, "`{}`", self.key),
            Some(v) => write!(f, "`{}` for vCPU {v}", self.key),
        }
    }
}

/// What the parser found instead of what it expected, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Char(char),
    Byte(u8),
    Token(&'static str),
    EndOfFile,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) => write!(f, "{c:?}"),
            Found::Byte(b) => write!(f, "byte {b:#04x}"),
            Found::Token(t) => f.write_str(t),
            Found::EndOfFile => f.write_str("the end of the file"),
        }
    }
}

// ---- the lexer ----

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Number(String),
    Str(String),
    Comma,
    Open,
    Close,
    Assign,
    Append,
    Semi,
    Newline,
    Eof,
}

impl Tok {
    fn found(&self) -> Found {
        Found::Token(match self {
            Tok::Ident(_) => "a bare word",
            Tok::Number(_) => "a number",
            Tok::Str(_) => "a string",
            Tok::Comma => "`,`",
            Tok::Open => "`[`",
            Tok::Close => "`]`",
            Tok::Assign => "`=`",
            Tok::Append => "`+=`",
            Tok::Semi => "`;`",
            Tok::Newline => "the end of the line",
            Tok::Eof => return Found::EndOfFile,
        })
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
}

impl Lexer<'_> {
    fn peek_byte(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &[u8] {
        let start = self.pos;
        while self.peek_byte().is_some_and(&f) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// The next token and the line it is on.
    fn next(&mut self) -> Result<(Tok, u32), Error> {
        self.take_while(|b| matches!(b, b' ' | b'\t' | b'\r'));
        let line = self.line;
        let Some(b) = self.peek_byte() else {
            return Ok((Tok::Eof, line));
        };
        let tok = match b {
            b'\n' => {
                self.pos += 1;
                self.line = self.line.saturating_add(1);
                Tok::Newline
            }
            b'#' => {
                self.take_while(|b| b != b'\n');
                return self.next_after_comment(line);
            }
            b'a'..=b'z' => {
                let word =
                    self.take_while(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.'));
                Tok::Ident(ascii(word))
            }
            b'0'..=b'9' => {
                let word = self.take_while(|b| b.is_ascii_alphanumeric());
                Tok::Number(ascii(word))
            }
            b'"' | b'\'' => Tok::Str(self.string(b)?),
            b',' => self.one(Tok::Comma),
            b'[' => self.one(Tok::Open),
            b']' => self.one(Tok::Close),
            b';' => self.one(Tok::Semi),
            b'=' => self.one(Tok::Assign),
            b'+' if self.src.get(self.pos + 1) == Some(&b'=') => {
                self.pos += 2;
                Tok::Append
            }
            _ => return Err(Error::at(line, ErrorKind::Unexpected(self.found_here()))),
        };
        Ok((tok, line))
    }

    /// A comment ends with its newline, which is the token (or the file ends).
    fn next_after_comment(&mut self, line: u32) -> Result<(Tok, u32), Error> {
        match self.peek_byte() {
            Some(_) => {
                self.pos += 1;
                self.line = self.line.saturating_add(1);
                Ok((Tok::Newline, line))
            }
            None => Ok((Tok::Eof, line)),
        }
    }

    fn one(&mut self, t: Tok) -> Tok {
        self.pos += 1;
        t
    }

    /// What starts at the current position, for an error message.
    fn found_here(&self) -> Found {
        let rest = &self.src[self.pos.min(self.src.len())..];
        let Some(&b) = rest.first() else {
            return Found::EndOfFile;
        };
        let len = utf8_len(b).min(rest.len());
        match core::str::from_utf8(&rest[..len])
            .ok()
            .and_then(|s| s.chars().next())
        {
            Some(c) => Found::Char(c),
            None => Found::Byte(b),
        }
    }

    /// A quoted string starting at the current position (the opening quote).
    fn string(&mut self, quote: u8) -> Result<String, Error> {
        let line = self.line;
        let err = |kind| Error::at(line, kind);
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek_byte() else {
                return Err(err(ErrorKind::UnterminatedString));
            };
            self.pos += 1;
            match b {
                b'\n' => return Err(err(ErrorKind::UnterminatedString)),
                0 => return Err(err(ErrorKind::Nul)),
                _ if b == quote => break,
                b'\\' => {
                    let Some(e) = self.peek_byte() else {
                        return Err(err(ErrorKind::UnterminatedString));
                    };
                    self.pos += 1;
                    let byte = match e {
                        b'"' | b'\'' | b'\\' => e,
                        b'a' => 0x07,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'v' => 0x0b,
                        b'x' => {
                            let hex = self.src.get(self.pos..self.pos + 2);
                            let v = hex
                                .and_then(|h| core::str::from_utf8(h).ok())
                                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                                .ok_or(err(ErrorKind::BadEscape('x')))?;
                            self.pos += 2;
                            v
                        }
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek_byte() {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            u8::try_from(v).map_err(|_| err(ErrorKind::BadEscape(char::from(e))))?
                        }
                        b'\n' => return Err(err(ErrorKind::UnterminatedString)),
                        _ => {
                            let c = if e.is_ascii() { char::from(e) } else { '?' };
                            return Err(err(ErrorKind::BadEscape(c)));
                        }
                    };
                    if byte == 0 {
                        return Err(err(ErrorKind::Nul));
                    }
                    out.push(byte);
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| err(ErrorKind::NotUtf8))
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Bytes the lexer matched as ASCII-only: always valid UTF-8.
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

// ---- the parser ----

/// Reads the syntax of an xl.cfg file into its settings (see the module
/// documentation). Nothing is interpreted yet.
pub fn parse_settings(text: &[u8]) -> Result<Settings, Error> {
    let mut lx = Lexer {
        src: text,
        pos: 0,
        line: 1,
    };
    let mut settings = Settings::new();
    loop {
        let (tok, line) = lx.next()?;
        let key = match tok {
            Tok::Newline | Tok::Semi => continue,
            Tok::Eof => return Ok(settings),
            Tok::Ident(key) => key,
            other => return Err(Error::at(line, ErrorKind::ExpectedKey(other.found()))),
        };
        let (op, line) = lx.next()?;
        let appended = match op {
            Tok::Assign => false,
            Tok::Append => true,
            other => {
                return Err(Error::at(
                    line,
                    ErrorKind::ExpectedEquals(key, other.found()),
                ));
            }
        };
        let (first, value_line) = lx.next()?;
        let value = parse_value(&mut lx, &key, first, value_line)?;
        let (end, line) = lx.next()?;
        if !matches!(end, Tok::Newline | Tok::Semi | Tok::Eof) {
            return Err(Error::at(line, ErrorKind::ExpectedEnd(key, end.found())));
        }
        let value = match (appended, settings.remove(&key)) {
            (true, Some(prev)) => append(prev.value, value).ok_or(Error::at(
                value_line,
                ErrorKind::AppendMismatch(key.clone()),
            ))?,
            _ => value,
        };
        settings.insert(
            key,
            Setting {
                line: value_line,
                value,
                appended,
            },
        );
        if end == Tok::Eof {
            return Ok(settings);
        }
    }
}

fn append(prev: Value, more: Value) -> Option<Value> {
    match (prev, more) {
        (Value::List(mut a), Value::List(b)) => {
            a.extend(b);
            Some(Value::List(a))
        }
        (Value::Str(mut a) | Value::Num(mut a), Value::Str(b) | Value::Num(b)) => {
            a.push_str(&b);
            Some(Value::Str(a))
        }
        _ => None,
    }
}

/// A value whose first token is `first`. Lists are read with an explicit stack, so
/// nesting costs no recursion.
fn parse_value(lx: &mut Lexer<'_>, key: &str, first: Tok, line: u32) -> Result<Value, Error> {
    // Open lists: their items so far, and the line each opened on.
    let mut stack: Vec<(Vec<Value>, u32)> = Vec::new();
    let mut tok = first;
    let mut line = line;
    loop {
        // Expecting a value (or, inside a list, the list's end).
        let mut value = match tok {
            Tok::Str(s) => Value::Str(s),
            Tok::Number(n) => Value::Num(n),
            Tok::Open => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::at(line, ErrorKind::TooDeep));
                }
                stack.push((Vec::new(), line));
                (tok, line) = next_skipping_newlines(lx)?;
                if tok == Tok::Close {
                    let (items, _) = stack.pop().unwrap_or_default();
                    Value::List(items)
                } else {
                    continue;
                }
            }
            Tok::Eof if !stack.is_empty() => {
                let opened = stack.last().map_or(line, |s| s.1);
                return Err(Error::at(
                    opened,
                    ErrorKind::UnclosedList(key.to_string(), opened),
                ));
            }
            other => {
                return Err(Error::at(
                    line,
                    ErrorKind::ExpectedValue(key.to_string(), other.found()),
                ));
            }
        };
        // A value is complete: close as many lists as end here.
        loop {
            let Some((items, _)) = stack.last_mut() else {
                return Ok(value);
            };
            items.push(value);
            (tok, line) = next_skipping_newlines(lx)?;
            match tok {
                Tok::Comma => {
                    (tok, line) = next_skipping_newlines(lx)?;
                    if tok != Tok::Close {
                        break; // the next item
                    }
                }
                Tok::Close => {}
                Tok::Eof => {
                    let opened = stack.last().map_or(line, |s| s.1);
                    return Err(Error::at(
                        opened,
                        ErrorKind::UnclosedList(key.to_string(), opened),
                    ));
                }
                other => {
                    return Err(Error::at(
                        line,
                        ErrorKind::ExpectedComma(key.to_string(), other.found()),
                    ));
                }
            }
            // `]`: this list is a value of the one around it (or the result).
            let (items, _) = stack.pop().unwrap_or_default();
            value = Value::List(items);
        }
    }
}

fn next_skipping_newlines(lx: &mut Lexer<'_>) -> Result<(Tok, u32), Error> {
    loop {
        let (tok, line) = lx.next()?;
        if tok != Tok::Newline {
            return Ok((tok, line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text.as_bytes())
    }

    fn err(text: &str) -> Error {
        parse(text).expect_err("should be refused")
    }

    const MINIMAL: &str = "name = \"d1\"\ntype = \"pvh\"\nkernel = \"/boot/vmlinuz\"\n";

    #[test]
    fn a_full_config() {
        let text = r#"
# A PVH guest.
name = "web"
type = 'pvh'
kernel = "/boot/vmlinuz-6.1"   # the kernel module
ramdisk = "/boot/initrd.img-6.1"
cmdline = "console=hvc0 quiet"
memory = 512
maxmem = 1024
vcpus = 2; maxvcpus = 4
max_event_channels = 0x7ff
max_grant_frames = 32
max_grant_version = 1
on_poweroff = "destroy"
on_reboot = "preserve"
on_crash = "restart"
cpu_weight = 512
cap = 150
disk = [ 'phy:/dev/vg/web,xvda,w',
         'file:/srv/web.iso,xvdc:cdrom,r', ]
vif = []
cpus = "0-3,^2"
cpus_soft = ["1", "3"]
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.kind, DomainType::Pvh);
        assert_eq!(c.kernel, "/boot/vmlinuz-6.1");
        assert_eq!(c.ramdisk.as_deref(), Some("/boot/initrd.img-6.1"));
        assert_eq!(c.cmdline, "console=hvc0 quiet");
        assert_eq!((c.memory_mib, c.maxmem_mib), (512, 1024));
        assert_eq!((c.vcpus, c.max_vcpus), (2, 4));
        assert_eq!(c.max_event_channels, 0x7ff);
        assert_eq!(c.max_grant_frames, 32);
        assert_eq!(c.max_grant_version, 1);
        assert_eq!(
            (c.on_poweroff, c.on_reboot, c.on_crash),
            (Action::Destroy, Action::Preserve, Action::Restart)
        );
        assert_eq!((c.cpu_weight, c.cap), (512, 150));
        assert_eq!(
            c.settings["disk"].value,
            Value::List(vec![
                Value::Str("phy:/dev/vg/web,xvda,w".into()),
                Value::Str("file:/srv/web.iso,xvdc:cdrom,r".into()),
            ])
        );
        assert_eq!(c.settings["disk"].line, 19);
        assert_eq!(c.settings["vif"].value, Value::List(vec![]));
        assert_eq!(c.cpus, Some(Affinity::All(set(&[0, 1, 3]))));
        assert_eq!(
            c.cpus_soft,
            Some(Affinity::PerVcpu(vec![set(&[1]), set(&[3])]))
        );
        let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "line 19: `disk` is not supported by keel yet and is ignored",
                "line 21: `vif` is not supported by keel yet and is ignored",
            ]
        );
        assert_eq!(
            c.sched_params(),
            keel_sched::Params {
                weight: 512,
                cap: 75
            }
        );
    }

    #[test]
    fn defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.ramdisk, None);
        assert_eq!(c.cmdline, "");
        assert_eq!((c.memory_mib, c.maxmem_mib), (128, 128));
        assert_eq!((c.vcpus, c.max_vcpus), (1, 1));
        assert_eq!(c.max_event_channels, 1023);
        assert_eq!(c.max_grant_frames, 64);
        assert_eq!(c.max_grant_version, 2);
        assert_eq!(
            (c.on_poweroff, c.on_reboot, c.on_crash),
            (Action::Destroy, Action::Restart, Action::Destroy)
        );
        assert_eq!((c.cpu_weight, c.cap), (256, 0));
        assert_eq!((&c.cpus, &c.cpus_soft), (&None, &None));
        assert!(c.warnings.is_empty());
        assert_eq!(c.sched_params(), keel_sched::Params::default());
        // maxmem follows memory; maxvcpus follows vcpus.
        let c = parse(&format!("{MINIMAL}memory = 300\nvcpus = 3")).unwrap();
        assert_eq!((c.maxmem_mib, c.max_vcpus), (300, 3));
    }

    #[test]
    fn cmdline_root_and_extra_as_xl() {
        let c = parse(&format!(
            "{MINIMAL}root = \"/dev/xvda1 ro\"\nextra = \"quiet\""
        ))
        .unwrap();
        assert_eq!(c.cmdline, "root=/dev/xvda1 ro quiet");
        let c = parse(&format!("{MINIMAL}root = \"/dev/xvda1\"")).unwrap();
        assert_eq!(c.cmdline, "root=/dev/xvda1");
        let c = parse(&format!("{MINIMAL}extra = \"quiet\"")).unwrap();
        assert_eq!(c.cmdline, "quiet");
        let c = parse(&format!(
            "{MINIMAL}extra = \"x\"\ncmdline = \"a b\"\nroot='r'"
        ))
        .unwrap();
        assert_eq!(c.cmdline, "a b");
        assert_eq!(
            c.warnings,
            [Warning {
                line: 5,
                kind: WarningKind::RootExtraIgnored
            }]
        );
    }

    #[test]
    fn syntax() {
        // `;`, comments, no final newline, blank lines, CRLF.
        let c = parse("name='a';type=\"pvh\" ; kernel = \"k\"\r\n\n\n  # c\nmemory=64").unwrap();
        assert_eq!((c.name.as_str(), c.memory_mib), ("a", 64));
        // Escapes.
        let s = parse_settings(br#"s = "q\"\'\\\a\b\f\n\r\t\v\x41\101\7z\0101" t = 'it''s'"#);
        assert!(s.is_err(), "two values on a line");
        let s = parse_settings(br#"s = "q\"\'\\\a\b\f\n\r\t\v\x41\101\7z\1010""#).unwrap();
        assert_eq!(
            s["s"].value,
            Value::Str("q\"'\\\x07\x08\x0c\n\r\t\x0bAA\x07zA0".into())
        );
        let s = parse_settings("s = '\\xc3\\xa9t\u{e9}'".as_bytes()).unwrap();
        assert_eq!(s["s"].value.atom(), Some("\u{e9}t\u{e9}"));
        // Nested lists across lines, trailing commas, comments inside.
        let s = parse_settings(b"l = [ 1, [ 'a', [] ,],\n # c\n 0x2 ,\n ]\nm=[\n]").unwrap();
        assert_eq!(
            s["l"].value,
            Value::List(vec![
                Value::Num("1".into()),
                Value::List(vec![Value::Str("a".into()), Value::List(vec![])]),
                Value::Num("0x2".into()),
            ])
        );
        assert_eq!(s["l"].line, 1);
        assert_eq!(s["m"].line, 5);
        assert_eq!(s["m"].value, Value::List(vec![]));
        // Keys may contain digits, `_` and `.`.
        let s = parse_settings(b"a.b_2 = 1").unwrap();
        assert!(s.contains_key("a.b_2"));
        // The last assignment wins; += appends.
        let s =
            parse_settings(b"a = 'x'\na = 'y'\nb = 'p'\nb += \"q\"\nl = [1]\nl += [2]\nn += 'z'")
                .unwrap();
        assert_eq!(s["a"].value.atom(), Some("y"));
        assert_eq!(s["a"].line, 2);
        assert_eq!(s["b"].value.atom(), Some("pq"));
        assert_eq!(
            s["l"].value,
            Value::List(vec![Value::Num("1".into()), Value::Num("2".into())])
        );
        assert_eq!(s["n"].value.atom(), Some("z"));
        // Empty file, comments only.
        assert!(parse_settings(b"").unwrap().is_empty());
        assert!(
            parse_settings(b"# nothing\n\n;;\n# at the end")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn numbers_as_xl_reads_them() {
        let mem = |v: &str| parse(&format!("{MINIMAL}memory = {v}")).map(|c| c.memory_mib);
        assert_eq!(mem("100"), Ok(100));
        assert_eq!(mem("0x100"), Ok(256));
        assert_eq!(mem("0100"), Ok(64), "a leading 0 is octal, as in xl");
        assert_eq!(mem("\"512\""), Ok(512), "a quoted number is a number");
        assert_eq!(mem("' +7'"), Ok(7), "strtol's leading blanks and sign");
        let e = mem("12k").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 4: `memory` must be a number (decimal, 0x hex or 0-prefixed octal), not \"12k\""
        );
        assert!(mem("09").is_err(), "9 is not octal");
        assert!(mem("0x").is_err());
        assert!(mem("'7 '").is_err(), "trailing blanks");
        assert_eq!(
            mem("0").unwrap_err().to_string(),
            "line 4: `memory` = 0 is out of range (1..=16777216)"
        );
        assert_eq!(
            mem("'-1'").unwrap_err().kind,
            ErrorKind::OutOfRange {
                key: "memory",
                value: "-1".into(),
                min: 1,
                max: 1 << 24
            }
        );
        assert!(matches!(
            mem("99999999999999999999999").unwrap_err().kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            mem("'-9223372036854775808'").unwrap_err().kind,
            ErrorKind::OutOfRange { .. }
        ));
        assert_eq!(
            mem("[1]").unwrap_err().to_string(),
            "line 4: `memory` must be a number (decimal, 0x hex or 0-prefixed octal), not a list"
        );
        let e = parse(&format!("{MINIMAL}memory = 1\nmemory += 2")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 5: `memory`: += cannot be used with numbers"
        );
        // A number is also a string.
        let c = parse("name = 42\ntype='pvh'\nkernel=7").unwrap();
        assert_eq!((c.name.as_str(), c.kernel.as_str()), ("42", "7"));
    }

    #[test]
    fn ranges_and_relations() {
        let e = |extra: &str| err(&format!("{MINIMAL}{extra}")).to_string();
        assert_eq!(
            e("memory = 512\nmaxmem = 256"),
            "line 5: maxmem (256 MiB) must not be less than memory (512 MiB)"
        );
        assert_eq!(
            e("vcpus = 129"),
            "line 4: `vcpus` = 129 is out of range (0..=128)"
        );
        assert_eq!(
            e("vcpus = 4\nmaxvcpus = 2"),
            "line 5: maxvcpus (2) must not be less than vcpus (4)"
        );
        assert_eq!(
            e("cpu_weight = 0"),
            "line 4: `cpu_weight` = 0 is out of range (1..=65535)"
        );
        assert_eq!(
            e("cap = 101"),
            "line 4: `cap` = 101 is out of range (0..=100)"
        );
        assert_eq!(
            e("max_event_channels = 131072"),
            "line 4: `max_event_channels` = 131072 is out of range (1..=131071)"
        );
        assert_eq!(
            e("max_grant_frames = 0"),
            "line 4: `max_grant_frames` = 0 is out of range (1..=2147483647)"
        );
        assert_eq!(
            e("max_grant_version = 3"),
            "line 4: `max_grant_version` = 3 is out of range (1..=2)"
        );
        let c = parse(&format!("{MINIMAL}vcpus = 0")).unwrap();
        assert_eq!(c.vcpus, 1);
        assert_eq!(
            c.warnings[0].to_string(),
            "line 4: `vcpus = 0` means 1 vCPU (as in xl)"
        );
        let c = parse(&format!("{MINIMAL}vcpus = 3\ncap = 300")).unwrap();
        assert_eq!(c.sched_params().cap, 100);
        let c = parse(&format!("{MINIMAL}vcpus = 3\ncap = 1")).unwrap();
        assert_eq!(c.sched_params().cap, 1, "rounded up, never to 0 (no cap)");
    }

    #[test]
    fn required_keys_and_types() {
        assert_eq!(
            err("type='pvh'\nkernel='k'").to_string(),
            "`name` is required"
        );
        assert_eq!(
            err("name='a'\ntype='pvh'").to_string(),
            "`kernel` is required"
        );
        assert_eq!(
            err("name='a'\nkernel='k'").to_string(),
            "`type` is required: keel builds PVH domUs (type = \"pvh\"); xl's default, pv, is not supported yet"
        );
        assert_eq!(
            err("name='a'\ntype='hvm'\nkernel='k'").to_string(),
            "line 2: type = \"hvm\" is not supported yet: keel builds PVH (and checks PV) domUs only (type = \"pvh\" or \"pv\")"
        );
        assert_eq!(
            parse("name='a'\ntype='pv'\nkernel='k'").map(|c| c.kind),
            Ok(DomainType::Pv)
        );
        assert_eq!(
            err("name='a'\ntype='kvm'\nkernel='k'").to_string(),
            "line 2: unknown type \"kvm\": keel builds PVH domUs (type = \"pvh\")"
        );
        assert_eq!(
            err(&format!("{MINIMAL}builder = 'generic'")).kind,
            ErrorKind::Builder("generic".into())
        );
        assert_eq!(
            err("name=['a']\ntype='pvh'\nkernel='k'").to_string(),
            "line 1: `name` must be a string, not a list"
        );
        assert_eq!(
            err("name=''\ntype='pvh'\nkernel='k'").to_string(),
            "line 1: `name` must not be empty"
        );
        assert_eq!(
            err("name='a\\tb'\ntype='pvh'\nkernel='k'").kind,
            ErrorKind::NameControl
        );
        assert_eq!(
            err("name='a'\ntype='pvh'\nkernel=' '").kind,
            ErrorKind::Empty("kernel")
        );
        assert_eq!(
            err(&format!("{MINIMAL}ramdisk=''")).kind,
            ErrorKind::Empty("ramdisk")
        );
        assert_eq!(
            err(&format!("{MINIMAL}on_crash = 'reboot'")).to_string(),
            "line 4: unknown on_crash action \"reboot\" (destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart or soft-reset)"
        );
        for (name, a) in ACTIONS {
            let c = parse(&format!("{MINIMAL}on_reboot = '{name}'")).unwrap();
            assert_eq!(c.on_reboot, a);
            assert_eq!(a.name(), name);
        }
    }

    /// The set of `ids` (all below `MAX_CPUS`).
    fn set(ids: &[u32]) -> CpuSet {
        let mut s = CpuSet::new();
        for &c in ids {
            s.insert(c).expect("test ids are below MAX_CPUS");
        }
        s
    }

    /// Every pCPU id but `ids`.
    fn all_but(ids: &[u32]) -> CpuSet {
        let mut s = CpuSet::all(MAX_CPUS);
        for &c in ids {
            s.remove(c);
        }
        s
    }

    /// `cpus` for a domain of up to 4 vCPUs (on line 5).
    fn cpus(value: &str) -> Result<Option<Affinity>, Error> {
        parse(&format!("{MINIMAL}maxvcpus = 4\ncpus = {value}")).map(|c| c.cpus)
    }

    #[test]
    fn cpu_lists_as_xl_reads_them() {
        let every = |s: CpuSet| Ok(Some(Affinity::All(s)));
        assert_eq!(cpus("'all'"), every(CpuSet::all(MAX_CPUS)));
        assert_eq!(cpus("'3'"), every(set(&[3])));
        assert_eq!(cpus("3"), every(set(&[3])), "a bare number is a CPU list");
        assert_eq!(
            cpus("'010'"),
            every(set(&[10])),
            "decimal, as xl's strtoul(.., 10)"
        );
        assert_eq!(cpus("'255'"), every(set(&[255])));
        assert_eq!(cpus("'0-3'"), every(set(&[0, 1, 2, 3])));
        assert_eq!(cpus("'2-2'"), every(set(&[2])));
        // xl.cfg(5)'s examples.
        assert_eq!(cpus("'0-3,5,^1'"), every(set(&[0, 2, 3, 5])));
        assert_eq!(cpus("'all,^7'"), every(all_but(&[7])));
        assert_eq!(cpus("'all,^5-8'"), every(all_but(&[5, 6, 7, 8])));
        // Items apply in order, as in xl: a later item undoes an earlier one.
        assert_eq!(cpus("'all,^4-7,5'"), every(all_but(&[4, 6, 7])));
        assert_eq!(cpus("'0-3,^1,1'"), every(set(&[0, 1, 2, 3])));
        assert_eq!(cpus("'^3,3'"), every(set(&[3])));
        assert_eq!(cpus("'^1,1-2'"), every(set(&[1, 2])));
        assert_eq!(cpus("'1,all'"), every(CpuSet::all(MAX_CPUS)));
        // Exclusions alone start from every pCPU.
        assert_eq!(cpus("'^0'"), every(all_but(&[0])));
        assert_eq!(cpus("'^0-1,^255'"), every(all_but(&[0, 1, 255])));
        // Blanks around items, after `^` and around `-`; empty items are skipped.
        assert_eq!(cpus("' 0 - 3 , ^ 1 ,,5,\t'"), every(set(&[0, 2, 3, 5])));
        assert_eq!(cpus("',4,'"), every(set(&[4])));
        // `+=` on a string concatenates, as for any string.
        let c = parse(&format!("{MINIMAL}cpus = '0-1'\ncpus += ',3'")).unwrap();
        assert_eq!(c.cpus, Some(Affinity::All(set(&[0, 1, 3]))));

        // A list: one CPU list per vCPU (xl.cfg(5)'s example), numbers allowed.
        let per = |sets: Vec<CpuSet>| Ok(Some(Affinity::PerVcpu(sets)));
        assert_eq!(
            cpus("['2', '3-8,^5']"),
            per(vec![set(&[2]), set(&[3, 4, 6, 7, 8])])
        );
        assert_eq!(
            cpus("[1, 'all', \"^0\"]"),
            per(vec![set(&[1]), CpuSet::all(MAX_CPUS), all_but(&[0])])
        );
        assert_eq!(
            cpus("['0', '1', '2', '3']"),
            per(vec![set(&[0]), set(&[1]), set(&[2]), set(&[3])]),
            "as many entries as maxvcpus"
        );
        assert_eq!(cpus("[]"), per(vec![]));
        let c = parse(&format!(
            "{MINIMAL}cpus = ['0']\ncpus += ['1']\nmaxvcpus = 2"
        ))
        .unwrap();
        assert_eq!(c.cpus, Some(Affinity::PerVcpu(vec![set(&[0]), set(&[1])])));

        // What each vCPU gets.
        let a = Affinity::PerVcpu(vec![set(&[2]), set(&[3])]);
        assert_eq!(a.for_vcpu(0), Some(&set(&[2])));
        assert_eq!(a.for_vcpu(1), Some(&set(&[3])));
        assert_eq!(a.for_vcpu(2), None, "past the list: not restricted");
        assert_eq!(a.for_vcpu(u32::MAX), None);
        let a = Affinity::All(set(&[1]));
        assert_eq!(a.for_vcpu(0), Some(&set(&[1])));
        assert_eq!(a.for_vcpu(127), Some(&set(&[1])));

        // cpus_soft reads the same way, independently; neither is ignored any more.
        let c = parse(&format!(
            "{MINIMAL}vcpus = 2\ncpus = '0-1'\ncpus_soft = ['1', 0]"
        ))
        .unwrap();
        assert_eq!(c.cpus, Some(Affinity::All(set(&[0, 1]))));
        assert_eq!(
            c.cpus_soft,
            Some(Affinity::PerVcpu(vec![set(&[1]), set(&[0])]))
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = parse(&format!("{MINIMAL}cpus_soft = 'all,^0'")).unwrap();
        assert_eq!(
            (c.cpus, c.cpus_soft),
            (None, Some(Affinity::All(all_but(&[0]))))
        );
    }

    #[test]
    fn cpu_lists_refused() {
        let e = |value: &str| err(&format!("{MINIMAL}maxvcpus = 2\ncpus = {value}"));
        let msg = |value: &str| e(value).to_string();
        let whole = AffinityEntry {
            key: "cpus",
            vcpu: None,
        };
        // NUMA nodes.
        assert_eq!(
            msg("'nodes:0-1'"),
            "line 5: `cpus`: \"nodes:0-1\" names NUMA nodes, which keel does not support: \
             list pCPUs instead (e.g. \"0-3,^2\")"
        );
        for v in ["'node:0'", "'0-3,^node:1'", "'nodes:all'", "'^ nodes:1'"] {
            assert!(matches!(e(v).kind, ErrorKind::AffinityNodes { .. }), "{v}");
        }
        // `^all`.
        assert_eq!(
            msg("'^all'"),
            "line 5: `cpus`: \"^all\" would exclude every pCPU"
        );
        assert_eq!(e("'0,^ all'").kind, ErrorKind::AffinityExcludeAll(whole));
        // Malformed numbers and ranges.
        assert_eq!(
            msg("'3-1'"),
            "line 5: `cpus`: \"3-1\" is not `all`, a pCPU N or a range N-M (decimal, N <= M), \
             each optionally after `^` to exclude it"
        );
        for v in [
            "'x'",
            "'1-'",
            "'-1'",
            "'1-2-3'",
            "'0x3'",
            "0x3",
            "'+1'",
            "'1 2'",
            "'^'",
            "'all,^'",
            "'ALL'",
            "'1;2'",
            "'1.5'",
            "'^^1'",
            "'\u{663}'",
        ] {
            let kind = e(v).kind;
            assert!(
                matches!(&kind, ErrorKind::AffinityMalformed { at, .. } if *at == whole),
                "{v}: {kind:?}"
            );
        }
        // pCPU ids beyond what a CpuSet holds, excluded or not.
        assert_eq!(
            msg("'256'"),
            "line 5: `cpus`: \"256\" names a pCPU above 255, the highest keel supports"
        );
        for v in [
            "'0-256'",
            "'all,^300'",
            "'99999999999999999999'",
            "'4294967296'",
        ] {
            assert!(
                matches!(e(v).kind, ErrorKind::AffinityCpuTooHigh { max: 255, .. }),
                "{v}"
            );
        }
        // Sets that end up empty.
        assert_eq!(msg("''"), "line 5: `cpus` names no pCPU");
        for v in [
            "','",
            "' '",
            "'1,^1'",
            "'0-3,^0-3'",
            "'all,^0-255'",
            "'^0-255'",
        ] {
            assert_eq!(e(v).kind, ErrorKind::AffinityEmpty(whole), "{v}");
        }
        // Per-vCPU lists: the vCPU is named.
        assert_eq!(msg("['1', '']"), "line 5: `cpus` for vCPU 1 names no pCPU");
        assert_eq!(
            msg("['1', 'x']"),
            "line 5: `cpus` for vCPU 1: \"x\" is not `all`, a pCPU N or a range N-M (decimal, \
             N <= M), each optionally after `^` to exclude it"
        );
        // More entries than vCPUs.
        assert_eq!(
            msg("['0', '1', '2']"),
            "line 5: `cpus` has 3 entries, one per vCPU, but the domain has at most 2 vCPUs (maxvcpus)"
        );
        assert_eq!(
            err(&format!("{MINIMAL}vcpus = 1\ncpus = ['0', '1']")).kind,
            ErrorKind::AffinityTooLong {
                key: "cpus",
                entries: 2,
                max_vcpus: 1
            },
            "maxvcpus defaults to vcpus"
        );
        // Lists in the list.
        assert_eq!(
            msg("[['1']]"),
            "line 5: `cpus` must be a CPU list such as \"0-3,^2\", or a list of them (one per vCPU), \
             not a list of lists"
        );
        // cpus_soft is checked alike, on its own line.
        assert_eq!(
            err(&format!("{MINIMAL}cpus = '0'\ncpus_soft = 'nodes:0'")).to_string(),
            "line 5: `cpus_soft`: \"nodes:0\" names NUMA nodes, which keel does not support: \
             list pCPUs instead (e.g. \"0-3,^2\")"
        );
        assert_eq!(
            err(&format!("{MINIMAL}maxvcpus = 2\ncpus_soft = ['0', '0,^0']")).to_string(),
            "line 5: `cpus_soft` for vCPU 1 names no pCPU"
        );
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let c = parse(&format!(
            "{MINIMAL}colour = 'blue'\nvif = ['bridge=xenbr0']\n"
        ))
        .unwrap();
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            [
                "line 4: unknown key `colour` ignored",
                "line 5: `vif` is not supported by keel yet and is ignored",
            ]
        );
        assert_eq!(c.settings["colour"].value.atom(), Some("blue"));
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        let e = |t: &str| parse_settings(t.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            e("a = 1\nName = 'x'"),
            "line 2: unexpected 'N' (keys are lowercase names, strings are quoted, numbers are digits)"
        );
        assert_eq!(
            e("a = 1\n\nb 'x'"),
            "line 3: expected `=` or `+=` after `b`, found a string"
        );
        assert_eq!(
            e("a ="),
            "line 1: expected a value for `a` (a \"string\", a number or a [list]), found the end of the file"
        );
        assert_eq!(
            e("a =\nb = 1"),
            "line 1: expected a value for `a` (a \"string\", a number or a [list]), found the end of the line"
        );
        assert_eq!(
            e("a = b"),
            "line 1: expected a value for `a` (a \"string\", a number or a [list]), found a bare word"
        );
        assert_eq!(
            e("a = 1 2"),
            "line 1: expected the end of the line or `;` after the value of `a`, found a number"
        );
        assert_eq!(
            e("a = 'x"),
            "line 1: unterminated string (a string must end on the line it starts)"
        );
        assert_eq!(
            e("\na = \"x\ny\""),
            "line 2: unterminated string (a string must end on the line it starts)"
        );
        assert_eq!(
            e("a = 'x\\"),
            "line 1: unterminated string (a string must end on the line it starts)"
        );
        assert_eq!(
            e("a = 'x\\q'"),
            "line 1: invalid escape `\\q` in a string (use \\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v \\xHH or \\OOO)"
        );
        assert_eq!(
            e("a = '\\x4'"),
            "line 1: invalid escape `\\x` in a string (use \\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v \\xHH or \\OOO)"
        );
        assert_eq!(
            e("a = '\\777'"),
            "line 1: invalid escape `\\7` in a string (use \\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v \\xHH or \\OOO)"
        );
        assert_eq!(
            e("a = 'x\\0'"),
            "line 1: a string holds a NUL character (raw or escaped), which a C string cannot"
        );
        assert_eq!(
            e("a = 'x\0'"),
            "line 1: a string holds a NUL character (raw or escaped), which a C string cannot"
        );
        assert_eq!(e("a = '\\xff'"), "line 1: the string is not valid UTF-8");
        assert_eq!(
            e("a = [1,\n2\n"),
            "line 1: the list for `a` opened on line 1 is never closed"
        );
        assert_eq!(
            e("a = [\n[1,\n"),
            "line 2: the list for `a` opened on line 2 is never closed"
        );
        assert_eq!(
            e("a = [1 2]"),
            "line 1: expected `,` or `]` in the list for `a`, found a number"
        );
        assert_eq!(
            e("a = [,]"),
            "line 1: expected a value for `a` (a \"string\", a number or a [list]), found `,`"
        );
        assert_eq!(
            e("a = ]"),
            "line 1: expected a value for `a` (a \"string\", a number or a [list]), found `]`"
        );
        assert_eq!(
            e("= 1"),
            "line 1: expected a setting (`key = value`), found `=`; keys are a lowercase letter followed by lowercase letters, digits, `_` or `.`"
        );
        assert_eq!(
            e("a = -1"),
            "line 1: unexpected '-' (keys are lowercase names, strings are quoted, numbers are digits)"
        );
        assert_eq!(
            e("a = \u{e9}"),
            "line 1: unexpected '\u{e9}' (keys are lowercase names, strings are quoted, numbers are digits)"
        );
        assert_eq!(
            parse_settings(b"a = \xff").unwrap_err().to_string(),
            "line 1: unexpected byte 0xff (keys are lowercase names, strings are quoted, numbers are digits)"
        );
        assert_eq!(
            e("a = 'x'\na += [1]"),
            "line 2: `a +=` mixes a list and a string"
        );
        let deep = format!("a = {}{}", "[".repeat(16), "]".repeat(16));
        assert!(parse_settings(deep.as_bytes()).is_ok());
        let deeper = format!("a = {}{}", "[".repeat(17), "]".repeat(17));
        assert_eq!(e(&deeper), "line 1: lists nested more than 16 deep");
        // Bytes that are not UTF-8 are fine in comments.
        assert!(parse_settings(b"# \xff\xfe\na = 1").is_ok());
    }

    /// Tokens that make syntactically interesting files.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("name".to_string()),
            Just("memory".to_string()),
            Just("type".to_string()),
            Just("kernel".to_string()),
            Just("vcpus".to_string()),
            Just("cap".to_string()),
            Just("cpus".to_string()),
            Just("cpus_soft".to_string()),
            Just("maxvcpus".to_string()),
            Just(" = ".to_string()),
            Just("+=".to_string()),
            Just("\n".to_string()),
            Just(";".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just("#".to_string()),
            Just("'pvh'".to_string()),
            Just("\"".to_string()),
            Just("'".to_string()),
            Just("\\".to_string()),
            Just("0x".to_string()),
            Just("07".to_string()),
            "[0-9]{1,25}",
            "'[ -~]{0,8}'",
            "'\\^?(all|nodes?:[0-9]|[0-9]{1,3}(-[0-9]{1,3})?)(,\\^?[0-9]{1,3}(-[0-9]{1,3})?){0,3}'",
            "\\\\[0-9a-z]{0,3}",
            any::<char>().prop_map(String::from),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Config::parse(&bytes);
            let _ = parse_settings(&bytes);
        }

        #[test]
        fn token_soup_never_panics(parts in prop::collection::vec(fragment(), 0..60)) {
            let text = parts.concat();
            match Config::parse(text.as_bytes()) {
                Ok(c) => {
                    prop_assert!(!c.name.is_empty() && c.vcpus >= 1);
                    for a in [&c.cpus, &c.cpus_soft].into_iter().flatten() {
                        let sets = match a {
                            Affinity::All(s) => core::slice::from_ref(s),
                            Affinity::PerVcpu(v) => v.as_slice(),
                        };
                        prop_assert!(sets.len() <= c.max_vcpus as usize);
                        prop_assert!(sets.iter().all(|s| !s.is_empty()));
                    }
                }
                Err(e) => {
                    // Errors point into the file.
                    let lines = text.split('\n').count() as u32;
                    prop_assert!(e.line <= lines, "{} > {}", e.line, lines);
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }

        #[test]
        fn well_formed_configs_read_back(
            name in "[a-zA-Z0-9_-]{1,20}",
            memory in 1u64..100_000,
            vcpus in 1u32..=128,
            weight in 1u32..=65535,
            hex in any::<bool>(),
            cmdline in "[ -~&&[^'\\\\]]{0,40}",
        ) {
            let mem = if hex { format!("{memory:#x}") } else { memory.to_string() };
            let text = format!(
                "name = \"{name}\"\ntype = 'pvh'\nkernel = 'k'\nmemory = {mem}\nvcpus = {vcpus}\n\
                 cpu_weight = {weight}\ncmdline = '{cmdline}'\n"
            );
            let c = Config::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(c.name, name);
            prop_assert_eq!(c.memory_mib, memory);
            prop_assert_eq!(c.vcpus, vcpus);
            prop_assert_eq!(c.cpu_weight, weight);
            prop_assert_eq!(c.cmdline, cmdline);
        }
    }

    /// One item of a CPU list: `(excluded, what)`.
    #[derive(Clone, Debug)]
    enum CpuItem {
        All,
        One(u32),
        Range(u32, u32),
    }

    fn cpu_item() -> impl Strategy<Value = (bool, CpuItem)> {
        let what = prop_oneof![
            1 => Just(CpuItem::All),
            4 => (0u32..270).prop_map(CpuItem::One),
            4 => (0u32..270, 0u32..270).prop_map(|(a, b)| CpuItem::Range(a, b)),
        ];
        (prop::bool::weighted(0.4), what)
    }

    fn render((exclude, what): &(bool, CpuItem)) -> String {
        let what = match what {
            CpuItem::All => "all".to_string(),
            CpuItem::One(n) => n.to_string(),
            CpuItem::Range(a, b) => format!("{a}-{b}"),
        };
        format!("{}{what}", if *exclude { "^" } else { "" })
    }

    /// xl's `parse_cpurange` (each item in order on one bitmap) with keel's
    /// refusals, and exclusions alone starting from every pCPU. `None`: refused.
    fn cpu_list_model(items: &[(bool, CpuItem)]) -> Option<std::collections::BTreeSet<u32>> {
        let only_exclusions = !items.is_empty() && items.iter().all(|(x, _)| *x);
        let mut ids: std::collections::BTreeSet<u32> = if only_exclusions {
            (0..MAX_CPUS).collect()
        } else {
            Default::default()
        };
        for (exclude, what) in items {
            let range = match *what {
                CpuItem::All if *exclude => return None,
                CpuItem::All => 0..=MAX_CPUS - 1,
                CpuItem::One(n) => n..=n,
                CpuItem::Range(a, b) => a..=b,
            };
            if range.is_empty() || *range.end() >= MAX_CPUS {
                return None;
            }
            for c in range {
                if *exclude {
                    ids.remove(&c);
                } else {
                    ids.insert(c);
                }
            }
        }
        (!ids.is_empty()).then_some(ids)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn cpu_lists_match_the_model(items in prop::collection::vec(cpu_item(), 0..6)) {
            let text = items.iter().map(render).collect::<Vec<_>>().join(",");
            let got = parse(&format!("{MINIMAL}cpus = '{text}'")).map(|c| c.cpus);
            match cpu_list_model(&items) {
                Some(ids) => {
                    let mut want = CpuSet::new();
                    for c in ids {
                        want.insert(c).unwrap(); // the model keeps ids below MAX_CPUS
                    }
                    prop_assert_eq!(got, Ok(Some(Affinity::All(want))), "{}", text);
                }
                None => {
                    let kind = got.map_err(|e| e.kind);
                    prop_assert!(
                        matches!(
                            kind,
                            Err(ErrorKind::AffinityMalformed { .. }
                                | ErrorKind::AffinityExcludeAll(_)
                                | ErrorKind::AffinityCpuTooHigh { .. }
                                | ErrorKind::AffinityEmpty(_))
                        ),
                        "{}: {:?}", text, kind
                    );
                }
            }
        }

        #[test]
        fn any_cpu_list_text_is_read_or_refused(
            text in "[0-9,^ \\-a-z:]{0,24}",
            soft in prop::collection::vec("[0-9,^\\-al]{0,8}", 0..6),
        ) {
            let soft = soft.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",");
            let config = format!("{MINIMAL}maxvcpus = 4\ncpus = '{text}'\ncpus_soft = [{soft}]");
            match parse(&config) {
                Ok(c) => {
                    let Some(Affinity::All(hard)) = c.cpus else {
                        return Err(TestCaseError::fail("cpus is one CPU list"));
                    };
                    prop_assert!(!hard.is_empty());
                    let Some(Affinity::PerVcpu(sets)) = c.cpus_soft else {
                        return Err(TestCaseError::fail("cpus_soft is a list"));
                    };
                    prop_assert!(sets.len() <= 4 && sets.iter().all(|s| !s.is_empty()));
                }
                Err(e) => prop_assert!(matches!(e.line, 5 | 6), "{}", e),
            }
        }
    }
}
