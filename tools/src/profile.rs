//! The pure half of `cargo xtask profile`: QEMU's translation-block log in, VM-exit
//! spans out, with the hypervisor's instructions attributed to its functions.
//!
//! # What
//!
//! QEMU TCG with `-d in_asm,exec,nochain` logs each translation block (TB) once
//! when it is translated (an `IN:` line, then one `0x<pc>:  <bytes> <insn>` line per
//! guest instruction) and every time it runs (`Trace <cpu>: 0x<host> [<cs_base>/
//! <pc>/<flags>/<cflags>] ...`; `nochain` makes that every run, not only the first
//! of a chain). A TB that was entered but stopped before its first instruction (an
//! exit request or the icount budget) is followed by `Stopped execution of TB chain
//! before 0x<host> [<pc>]`. [`Profiler`] reads those lines one at a time:
//!
//! - Nothing before the guest's first TB (a pc in the guest range, by default
//!   0x100000..0x200000, where the PVH test guest runs) is attributed: that is the
//!   hypervisor booting; it is only totalled.
//! - After it, every maximal run of non-guest TBs is one *exit span*, keyed by the
//!   pc of the last guest TB before it (the guest TB holding the exiting
//!   instruction, or the one about to run when an interrupt came).
//! - With several CPUs (`Trace <cpu>:`; under `-icount` QEMU runs them in turns on
//!   one thread, so their lines interleave in runs) each CPU is followed on its
//!   own: "before the guest's first TB", the span and its key are that CPU's, and
//!   a key is a CPU and a guest pc. A span on an idle pCPU is then everything from
//!   its vCPU's last instruction to its next: the exit, the way into idle, the
//!   wake-up and the way back in.
//! - Per key: the number of spans, the hypervisor instructions (the sum of the
//!   sizes of the TBs run), and those instructions per function, from the
//!   hypervisor ELF's symbol table ([`Symbols`]); without one (Xen's image is
//!   stripped) every instruction is `?`.
//! - The run of non-guest TBs after the guest's last TB (the shutdown) is not a
//!   span: nothing ends it. It is reported on its own.
//!
//! [`GuestNames`] names a key for the reader: a hypercall page entry by its number
//! and [`keel_hypercall::abi::hypercall::name`], otherwise the guest function.
//!
//! # Invariants
//!
//! - A TB's size is the one QEMU printed when it translated *that* TB: the `IN:`
//!   block is bound to the host address of the `Trace` line that follows it (QEMU
//!   runs a TB right after translating it), so two translations of one guest pc
//!   (different flags, an icount-shortened copy) keep their own sizes. A TB whose
//!   translation was never seen falls back to the last size seen for its pc, then
//!   to 1 (counted in [`Profile::unsized_tbs`]).
//! - A TB left early by an exception still counts in full: the log cannot tell.
//!   Under icount that is the only inexactness.
//! - Malformed lines are skipped, never a panic: the log is QEMU's, but a killed
//!   QEMU can leave a torn last line.
//!
//! # Locking
//!
//! None: a [`Profiler`] is fed from one thread.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use elf::ElfBytes;
use elf::abi::{SHF_EXECINSTR, SHN_LORESERVE, SHN_UNDEF, STT_FUNC, STT_NOTYPE};
use elf::endian::AnyEndian;
use keel_hypercall::abi::hypercall;

/// Where the PVH test guest's code runs (it is linked at 1 MiB).
pub const DEFAULT_GUEST_RANGE: Range<u64> = 0x10_0000..0x20_0000;

/// Longest function name printed; Rust generics get long.
const NAME_WIDTH: usize = 100;

/// A hasher for addresses: one multiply, high bits folded down (hashbrown picks
/// buckets with the low bits, and TB host addresses share their low bits).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
}

type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;

/// One symbol of an ELF file, as stored (mangled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSymbol {
    /// Its name, mangled.
    pub name: String,
    /// Its address.
    pub addr: u64,
    /// Its size (0 for assembly labels).
    pub size: u64,
    /// `STT_FUNC`, or `STT_NOTYPE` in an executable section (an assembly label).
    pub code: bool,
}

/// The symbols of an ELF file and where its code is.
#[derive(Clone, Debug, Default)]
pub struct ElfSymbols {
    /// Defined symbols with a name.
    pub symbols: Vec<RawSymbol>,
    /// Address ranges of its executable sections.
    pub exec: Vec<Range<u64>>,
}

impl ElfSymbols {
    /// Reads the symbol table of an ELF file (32 or 64 bit); a file without one
    /// (stripped) gives none, which is not an error.
    pub fn parse(data: &[u8]) -> Result<ElfSymbols, String> {
        let file = ElfBytes::<AnyEndian>::minimal_parse(data)
            .map_err(|e| format!("not an ELF file: {e}"))?;
        let mut out = ElfSymbols::default();
        let mut exec_index = Vec::new();
        if let Some(shdrs) = file.section_headers() {
            for (i, sh) in shdrs.iter().enumerate() {
                let executable = sh.sh_flags & u64::from(SHF_EXECINSTR) != 0;
                if executable && sh.sh_size > 0 {
                    out.exec
                        .push(sh.sh_addr..sh.sh_addr.saturating_add(sh.sh_size));
                    exec_index.push(i);
                }
            }
        }
        let Some((symtab, strtab)) = file
            .symbol_table()
            .map_err(|e| format!("bad symbol table: {e}"))?
        else {
            return Ok(out);
        };
        for sym in symtab.iter() {
            let section = sym.st_shndx;
            if section == SHN_UNDEF || section >= SHN_LORESERVE {
                continue;
            }
            let Ok(name) = strtab.get(sym.st_name as usize) else {
                continue;
            };
            if name.is_empty() || name.starts_with(".L") || name.starts_with('$') {
                continue;
            }
            let in_code = exec_index.contains(&usize::from(section));
            let code = match sym.st_symtype() {
                STT_FUNC => true,
                STT_NOTYPE => in_code,
                _ => false,
            };
            out.symbols.push(RawSymbol {
                name: name.to_string(),
                addr: sym.st_value,
                size: sym.st_size,
                code,
            });
        }
        Ok(out)
    }

    /// The address of the first symbol whose (mangled) name contains `needle`.
    pub fn find(&self, needle: &str) -> Option<u64> {
        self.symbols
            .iter()
            .find(|s| s.name.contains(needle))
            .map(|s| s.addr)
    }
}

/// `name` (demangled) without the arguments of its generic types and functions:
/// `<a::P2m<a::Tables<fn() -> X>>>::lookup` becomes `<a::P2m<…>>::lookup`. The
/// brackets of a qualified path (`<T as Trait>::f`, at the start or after a space,
/// `(`, `&` or `<`) stay, with their contents shortened in turn; `->` is no bracket.
pub fn short_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // Depth inside elided generic arguments (0: copying).
    let mut elided = 0usize;
    let mut prev: Option<char> = None;
    for c in name.chars() {
        let opens_args = c == '<'
            && prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ':' || p == '>');
        match c {
            '<' if elided > 0 => elided += 1,
            '<' if opens_args => {
                out.push_str("<…");
                elided = 1;
            }
            '>' if prev == Some('-') => {
                if elided == 0 {
                    out.push(c);
                }
            }
            '>' if elided > 0 => {
                elided -= 1;
                if elided == 0 {
                    out.push('>');
                }
            }
            _ if elided > 0 => {}
            _ => out.push(c),
        }
        prev = Some(c);
    }
    out
}

/// A function index of [`Symbols`]; [`UNKNOWN`] is `?`.
type FuncId = u32;
const UNKNOWN: FuncId = 0;

/// Code addresses to demangled function names: the nearest code symbol at or
/// below an address, if the address is in an executable section.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    /// Sorted by address, one per address.
    starts: Vec<u64>,
    /// Demangled, without the hash; `names[i]` is function `i + 1`.
    names: Vec<String>,
    exec: Vec<Range<u64>>,
}

impl Symbols {
    /// The code symbols of `elf`, demangled.
    pub fn new(elf: &ElfSymbols) -> Symbols {
        let mut code: Vec<&RawSymbol> = elf.symbols.iter().filter(|s| s.code).collect();
        // At one address keep a sized symbol (a function) over a label.
        code.sort_by_key(|s| (s.addr, s.size == 0));
        code.dedup_by_key(|s| s.addr);
        Symbols {
            starts: code.iter().map(|s| s.addr).collect(),
            names: code
                .iter()
                .map(|s| format!("{:#}", rustc_demangle::demangle(&s.name)))
                .collect(),
            exec: elf.exec.clone(),
        }
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none (a stripped image).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The function holding `pc`.
    fn lookup(&self, pc: u64) -> FuncId {
        if !self.exec.iter().any(|r| r.contains(&pc)) {
            return UNKNOWN;
        }
        match self.starts.partition_point(|&a| a <= pc) {
            0 => UNKNOWN,
            // At most u32::MAX symbols: a symbol table that large is no ELF we load.
            i => FuncId::try_from(i).unwrap_or(UNKNOWN),
        }
    }

    /// The name of function `id`; `?` for [`UNKNOWN`].
    fn name(&self, id: FuncId) -> &str {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.names.get(i))
            .map_or("?", String::as_str)
    }

    /// The name of the function holding `pc`, if any.
    pub fn function_at(&self, pc: u64) -> Option<&str> {
        match self.lookup(pc) {
            UNKNOWN => None,
            id => Some(self.name(id)),
        }
    }
}

/// Names guest pcs for the report.
#[derive(Clone, Debug, Default)]
pub struct GuestNames {
    /// The guest's hypercall page (its `HYPERCALL_PAGE` symbol).
    pub hypercall_page: Option<u64>,
    /// The guest's functions.
    pub symbols: Symbols,
}

impl GuestNames {
    /// From the guest ELF's symbols.
    pub fn new(elf: &ElfSymbols) -> GuestNames {
        GuestNames {
            hypercall_page: elf.find("HYPERCALL_PAGE"),
            symbols: Symbols::new(elf),
        }
    }

    /// What `pc` is: `hypercall page entry 17 (xen_version)`, `in <function>`, or
    /// nothing known.
    pub fn describe(&self, pc: u64) -> Option<String> {
        if let Some(offset) = self
            .hypercall_page
            .and_then(|page| pc.checked_sub(page))
            .filter(|&off| {
                off < (hypercall::HYPERCALL_PAGE_ENTRIES * hypercall::HYPERCALL_PAGE_ENTRY_SIZE)
                    as u64
            })
        {
            let size = hypercall::HYPERCALL_PAGE_ENTRY_SIZE as u64;
            let nr = offset / size;
            let mut text = format!("hypercall page entry {nr}");
            if let Some(name) = hypercall::name(nr) {
                text.push_str(&format!(" ({name})"));
            }
            if offset % size != 0 {
                text.push_str(&format!(" +{:#x}", offset % size));
            }
            return Some(text);
        }
        self.symbols.function_at(pc).map(|f| format!("in {f}"))
    }
}

/// Parses hexadecimal digits (an optional `0x` first) up to the first other byte;
/// returns the value and the rest. `None` without a digit or above 64 bits.
fn hex(s: &[u8]) -> Option<(u64, &[u8])> {
    let s = s.strip_prefix(b"0x").unwrap_or(s);
    let mut value: u64 = 0;
    let mut n = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        if n == 16 {
            return None;
        }
        value = (value << 4) | u64::from(d);
        n += 1;
    }
    (n > 0).then(|| (value, &s[n..]))
}

/// Most CPUs followed; a `Trace` line naming a higher one is skipped.
const MAX_CPUS: u32 = 64;

/// A `Trace` line: the CPU, the TB's host code address and its guest pc.
fn parse_trace(line: &[u8]) -> Option<(u32, u64, u64)> {
    // `Trace 0: 0x7f0efc000100 [00000000ffff0000/00000000fffffff0/00000040/ff020200] `
    let rest = line.strip_prefix(b"Trace ")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let cpu = std::str::from_utf8(&rest[..colon])
        .ok()?
        .parse::<u32>()
        .ok()
        .filter(|&c| c < MAX_CPUS)?;
    let rest = rest[colon + 1..].strip_prefix(b" ")?;
    let (host, rest) = hex(rest)?;
    let rest = rest.strip_prefix(b" [")?;
    let (_cs_base, rest) = hex(rest)?;
    // A torn line (a killed QEMU's last) must not pass for a shorter pc.
    let (pc, rest) = hex(rest.strip_prefix(b"/")?)?;
    rest.starts_with(b"/").then_some((cpu, host, pc))
}

/// A `Stopped execution of TB chain before 0x<host> [<pc>]` line: the host address.
fn parse_stopped(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"Stopped execution of TB chain before ")?;
    hex(rest).map(|(host, _)| host)
}

/// What the profiler knows of a translated TB.
#[derive(Clone, Copy, Debug)]
struct Tb {
    insns: u32,
    func: FuncId,
}

/// The TB that ran last, to take back if QEMU says it never started.
#[derive(Clone, Copy, Debug)]
struct LastTb {
    cpu: u32,
    host: u64,
    tb: Tb,
    /// Counted in the current span (or in the boot, before the guest).
    counted: bool,
}

/// Accumulated exits after one guest pc.
#[derive(Clone, Debug, Default)]
struct KeyAcc {
    spans: u64,
    insns: u64,
    funcs: AddrMap<u64>,
}

/// One exit key of a [`Profile`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExitKey {
    /// The CPU the spans ran on (QEMU's index).
    pub cpu: u32,
    /// The guest pc of the last guest TB before the spans.
    pub guest_pc: u64,
    /// How many spans (exits).
    pub spans: u64,
    /// Hypervisor instructions over all of them.
    pub insns: u64,
    /// Instructions per function ([`short_name`]), most first (`?` for no symbol).
    pub functions: Vec<(String, u64)>,
}

impl ExitKey {
    /// Hypervisor instructions per span.
    pub fn per_span(&self) -> f64 {
        self.insns as f64 / self.spans.max(1) as f64
    }
}

/// What a whole log showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// `Trace` lines (TB executions) seen.
    pub tbs: u64,
    /// CPUs seen (the highest index in a `Trace` line, plus one).
    pub cpus: u32,
    /// TBs before the guest's first (on each CPU).
    pub boot_tbs: u64,
    /// Hypervisor instructions before the guest's first TB.
    pub boot_insns: u64,
    /// Guest TBs run.
    pub guest_tbs: u64,
    /// TBs after the guest's last TB (on each CPU; no span: nothing ended it).
    pub tail_tbs: u64,
    /// Their instructions.
    pub tail_insns: u64,
    /// TBs whose translation was not in the log (counted as 1 instruction).
    pub unsized_tbs: u64,
    /// Exit keys, most instructions first.
    pub keys: Vec<ExitKey>,
}

impl Profile {
    /// All exit spans.
    pub fn spans(&self) -> u64 {
        self.keys.iter().map(|k| k.spans).sum()
    }

    /// All hypervisor instructions in exit spans.
    pub fn span_insns(&self) -> u64 {
        self.keys.iter().map(|k| k.insns).sum()
    }

    /// The report: a summary, then the `top` keys with their `functions` biggest
    /// functions per span. `hv` names the hypervisor (`keel`); `guest` names keys.
    pub fn render(
        &self,
        hv: &str,
        top: usize,
        functions: usize,
        guest: &dyn Fn(u64) -> Option<String>,
    ) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "{hv}: {} TBs logged; before the guest's first TB: {} TBs, {} {hv} insns (boot)",
            self.tbs, self.boot_tbs, self.boot_insns
        ));
        line(format!(
            "{hv}: after it: {} exits at {} guest pcs, {} {hv} insns; {} guest TBs",
            self.spans(),
            self.keys.len(),
            self.span_insns(),
            self.guest_tbs
        ));
        if self.tail_tbs > 0 {
            line(format!(
                "{hv}: not in any exit: {} TBs, {} insns after the guest's last TB (shutdown)",
                self.tail_tbs, self.tail_insns
            ));
        }
        if self.unsized_tbs > 0 {
            line(format!(
                "{hv}: warning: {} TBs ran without their translation in the log (counted as 1 insn)",
                self.unsized_tbs
            ));
        }
        for key in self.keys.iter().take(top) {
            let what = guest(key.guest_pc).map_or(String::new(), |w| format!(", {w}"));
            let cpu = if self.cpus > 1 {
                format!("cpu {}, ", key.cpu)
            } else {
                String::new()
            };
            line(String::new());
            line(format!(
                "== {cpu}after guest pc {:#x}{what}: {} exits, {} {hv} insns, {:.0} per exit",
                key.guest_pc,
                key.spans,
                key.insns,
                key.per_span()
            ));
            for (name, insns) in key.functions.iter().take(functions) {
                let name: String = name.chars().take(NAME_WIDTH).collect();
                line(format!(
                    "   {:8.0}  {name}",
                    *insns as f64 / key.spans.max(1) as f64
                ));
            }
            if key.functions.len() > functions {
                let rest: u64 = key.functions[functions..].iter().map(|f| f.1).sum();
                line(format!(
                    "   {:8.0}  ({} more functions)",
                    rest as f64 / key.spans.max(1) as f64,
                    key.functions.len() - functions
                ));
            }
        }
        if self.keys.len() > top {
            line(String::new());
            line(format!(
                "({} more guest pcs, {} {hv} insns, not shown; --top N shows more)",
                self.keys.len() - top,
                self.keys[top..].iter().map(|k| k.insns).sum::<u64>()
            ));
        }
        out
    }
}

/// One CPU's place in the log: its last guest TB and the span it is running.
#[derive(Debug)]
struct CpuSpan {
    /// The pc of its last guest TB; `None` until its first.
    last_guest: Option<u64>,
    /// The span being run: TBs, instructions, per function (indexed by FuncId)
    /// and which functions it touched.
    span_tbs: u64,
    span_insns: u64,
    span_funcs: Vec<u64>,
    touched: Vec<FuncId>,
}

/// Reads a QEMU `-d in_asm,exec,nochain` log line by line (see the module docs).
#[derive(Debug)]
pub struct Profiler {
    guest: Range<u64>,
    symbols: Symbols,
    /// Translated TBs by host code address, and the latest by guest pc.
    by_host: AddrMap<Tb>,
    by_pc: AddrMap<Tb>,
    /// Inside an `IN:` block.
    in_block: bool,
    /// The last `IN:` block not yet bound to a `Trace`: its pc and size.
    pending: Option<(u64, u32)>,
    last: Option<LastTb>,
    /// Each CPU seen so far, by index.
    cpus: Vec<CpuSpan>,
    /// Accumulated spans by (CPU, guest pc).
    keys: HashMap<(u32, u64), KeyAcc>,
    profile: Profile,
}

impl Profiler {
    /// A profiler for a guest running at `guest`, attributing to `symbols`.
    pub fn new(guest: Range<u64>, symbols: Symbols) -> Profiler {
        Profiler {
            guest,
            symbols,
            by_host: AddrMap::default(),
            by_pc: AddrMap::default(),
            in_block: false,
            pending: None,
            last: None,
            cpus: Vec::new(),
            keys: HashMap::new(),
            profile: Profile::default(),
        }
    }

    /// CPU `cpu`'s state (created on its first line).
    fn cpu(&mut self, cpu: u32) -> &mut CpuSpan {
        while self.cpus.len() <= cpu as usize {
            self.cpus.push(CpuSpan {
                last_guest: None,
                span_tbs: 0,
                span_insns: 0,
                span_funcs: vec![0; self.symbols.len() + 1],
                touched: Vec::new(),
            });
        }
        &mut self.cpus[cpu as usize]
    }

    /// `Trace` lines seen so far.
    pub fn tbs(&self) -> u64 {
        self.profile.tbs
    }

    /// One line of the log, without or with its `\n`.
    pub fn line(&mut self, line: &[u8]) {
        match line.first() {
            Some(b'0') if self.in_block => {
                if line.starts_with(b"0x") {
                    match &mut self.pending {
                        Some((_, n)) => *n = n.saturating_add(1),
                        None => self.pending = hex(line).map(|(pc, _)| (pc, 1)),
                    }
                } else {
                    self.in_block = false;
                }
            }
            Some(b'T') => {
                self.in_block = false;
                if let Some((cpu, host, pc)) = parse_trace(line) {
                    self.trace(cpu, host, pc);
                }
            }
            Some(b'I') if line.starts_with(b"IN:") => {
                self.in_block = true;
                self.pending = None;
            }
            Some(b'S') => {
                self.in_block = false;
                if let Some(host) = parse_stopped(line) {
                    self.stopped(host);
                }
            }
            _ => self.in_block = false,
        }
    }

    /// The TB at `host` (guest pc `pc`) runs on CPU `cpu`.
    fn trace(&mut self, cpu: u32, host: u64, pc: u64) {
        self.profile.tbs += 1;
        self.profile.cpus = self.profile.cpus.max(cpu + 1);
        let tb = match self.pending.take() {
            Some((block_pc, insns)) if block_pc == pc => {
                let tb = Tb {
                    insns,
                    func: self.symbols.lookup(pc),
                };
                self.by_host.insert(host, tb);
                self.by_pc.insert(pc, tb);
                tb
            }
            _ => match self.by_host.get(&host).or_else(|| self.by_pc.get(&pc)) {
                Some(&tb) => tb,
                None => {
                    self.profile.unsized_tbs += 1;
                    Tb {
                        insns: 1,
                        func: self.symbols.lookup(pc),
                    }
                }
            },
        };
        let guest = self.guest.contains(&pc);
        let mut counted = false;
        match (self.cpu(cpu).last_guest, guest) {
            (None, false) => {
                self.profile.boot_tbs += 1;
                self.profile.boot_insns += u64::from(tb.insns);
                counted = true;
            }
            (_, true) => {
                self.profile.guest_tbs += 1;
                self.end_span(cpu);
                self.cpu(cpu).last_guest = Some(pc);
            }
            (Some(_), false) => {
                let c = self.cpu(cpu);
                c.span_tbs += 1;
                c.span_insns += u64::from(tb.insns);
                let slot = &mut c.span_funcs[tb.func as usize];
                if *slot == 0 {
                    c.touched.push(tb.func);
                }
                *slot += u64::from(tb.insns);
                counted = true;
            }
        }
        self.last = Some(LastTb {
            cpu,
            host,
            tb,
            counted,
        });
    }

    /// QEMU says the TB at `host` was entered but not run (by the CPU that ran
    /// the last TB: the line names none, and one thread runs them in turns).
    fn stopped(&mut self, host: u64) {
        let Some(last) = self.last.take().filter(|l| l.host == host && l.counted) else {
            return;
        };
        let insns = u64::from(last.tb.insns);
        self.cpu(last.cpu);
        let c = &mut self.cpus[last.cpu as usize];
        if c.last_guest.is_none() {
            self.profile.boot_tbs -= 1;
            self.profile.boot_insns -= insns;
        } else {
            c.span_tbs -= 1;
            c.span_insns -= insns;
            // Stays in `touched` if it drops to 0: end_span skips zeros.
            c.span_funcs[last.tb.func as usize] -= insns;
        }
    }

    /// A guest TB runs on `cpu`: its span since its last one (if any) is an exit.
    fn end_span(&mut self, cpu: u32) {
        self.cpu(cpu);
        let c = &mut self.cpus[cpu as usize];
        if c.span_tbs == 0 {
            return;
        }
        let Some(pc) = c.last_guest else {
            return;
        };
        let acc = self.keys.entry((cpu, pc)).or_default();
        acc.spans += 1;
        acc.insns += c.span_insns;
        for func in c.touched.drain(..) {
            let n = std::mem::take(&mut c.span_funcs[func as usize]);
            if n > 0 {
                *acc.funcs.entry(u64::from(func)).or_default() += n;
            }
        }
        c.span_tbs = 0;
        c.span_insns = 0;
    }

    /// The profile of everything fed.
    pub fn finish(mut self) -> Profile {
        self.profile.tail_tbs = self.cpus.iter().map(|c| c.span_tbs).sum();
        self.profile.tail_insns = self.cpus.iter().map(|c| c.span_insns).sum();
        let symbols = &self.symbols;
        let mut keys: Vec<ExitKey> = self
            .keys
            .drain()
            .map(|((cpu, guest_pc), acc)| {
                // Instantiations of one generic function become one line.
                let mut merged: HashMap<String, u64> = HashMap::new();
                for (f, n) in acc.funcs {
                    *merged
                        .entry(short_name(symbols.name(f as FuncId)))
                        .or_default() += n;
                }
                let mut functions: Vec<(String, u64)> = merged.into_iter().collect();
                functions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                ExitKey {
                    cpu,
                    guest_pc,
                    spans: acc.spans,
                    insns: acc.insns,
                    functions,
                }
            })
            .collect();
        keys.sort_by(|a, b| {
            b.insns
                .cmp(&a.insns)
                .then(a.cpu.cmp(&b.cpu))
                .then(a.guest_pc.cmp(&b.guest_pc))
        });
        self.profile.keys = keys;
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keel-like symbols: two functions and an assembly label in .text at
    /// 0xffff_8000_0000_1000.., one data object.
    fn keel_symbols() -> ElfSymbols {
        let sym = |name: &str, addr, size, code| RawSymbol {
            name: name.to_string(),
            addr,
            size,
            code,
        };
        ElfSymbols {
            symbols: vec![
                sym(
                    "_ZN6kernel6vmexit11handle_exit17h0123456789abcdefE",
                    0xffff_8000_0000_1000,
                    0x100,
                    true,
                ),
                sym("_RNvCs1234_2mm6lookup", 0xffff_8000_0000_1100, 0x80, true),
                sym("svm_entry", 0xffff_8000_0000_2000, 0, true),
                sym("svm_entry_alias", 0xffff_8000_0000_2000, 0, true),
                sym("DATA", 0xffff_8000_0000_1200, 8, false),
            ],
            exec: core::iter::once(0xffff_8000_0000_1000..0xffff_8000_0000_3000).collect(),
        }
    }

    const H: u64 = 0xffff_8000_0000_0000;

    /// A log: each (host, pc, insns, translate) runs TB `pc` at `host`, with an
    /// `IN:` block of `insns` instructions first when `translate`.
    fn log(tbs: &[(u64, u64, u32, bool)]) -> String {
        let mut s = String::new();
        for &(host, pc, insns, translate) in tbs {
            if translate {
                s.push_str("----------------\nIN: \n");
                for i in 0..insns {
                    s.push_str(&format!(
                        "0x{:016x}:  90                       nop      \n",
                        pc + u64::from(i)
                    ));
                }
                s.push('\n');
            }
            s.push_str(&format!(
                "Trace 0: 0x{host:x} [0000000000000000/{pc:016x}/00c0b0/ff020000] \n"
            ));
        }
        s
    }

    fn run(text: &str) -> Profile {
        let mut p = Profiler::new(DEFAULT_GUEST_RANGE, Symbols::new(&keel_symbols()));
        for l in text.split_inclusive('\n') {
            p.line(l.as_bytes());
        }
        p.finish()
    }

    #[test]
    fn hex_and_line_parsers() {
        assert_eq!(hex(b"0x1f:"), Some((0x1f, &b":"[..])));
        assert_eq!(hex(b"ffffffffffffffff"), Some((u64::MAX, &b""[..])));
        assert_eq!(hex(b"1ffffffffffffffff"), None, "above 64 bits");
        assert_eq!(hex(b"0x"), None);
        assert_eq!(hex(b"zz"), None);
        assert_eq!(
            parse_trace(
                b"Trace 0: 0x7f0efc000100 [00000000ffff0000/00000000fffffff0/00000040/ff020200] \n"
            ),
            Some((0, 0x7f0e_fc00_0100, 0xffff_fff0))
        );
        assert_eq!(
            parse_trace(b"Trace 12: 0x10 [0/149220/0/0] sym"),
            Some((12, 0x10, 0x14_9220))
        );
        assert_eq!(parse_trace(b"Trace 0: 0x7f0efc000100 [000000"), None);
        assert_eq!(parse_trace(b"Trace"), None);
        assert_eq!(
            parse_stopped(
                b"Stopped execution of TB chain before 0x7f0efc000100 [0000000000100000] \n"
            ),
            Some(0x7f0e_fc00_0100)
        );
    }

    #[test]
    fn short_names_drop_generic_arguments() {
        assert_eq!(
            short_name(
                "<keel_mm::p2m::P2m<keel_arch::paging::DirectMapTables<fn() -> \
                 core::option::Option<keel_mm::addr::Hpa>>>>::lookup"
            ),
            "<keel_mm::p2m::P2m<…>>::lookup"
        );
        assert_eq!(
            short_name("keel_mm::guest_walk::walk64::<keel_mm::guest_mem::GuestPhys<X<Y>>>"),
            "keel_mm::guest_walk::walk64::<…>"
        );
        assert_eq!(
            short_name("<keel_arch::svm::npt::NptFormat as keel_mm::p2m::SlptFormat>::entry_addr"),
            "<keel_arch::svm::npt::NptFormat as keel_mm::p2m::SlptFormat>::entry_addr"
        );
        assert_eq!(
            short_name("<a::Vcpu as a::Trait<u8>>::run::<fn() -> u8>"),
            "<a::Vcpu as a::Trait<…>>::run::<…>"
        );
        assert_eq!(
            short_name("<&mut [u8] as core::fmt::Debug>::fmt"),
            "<&mut [u8] as core::fmt::Debug>::fmt"
        );
        assert_eq!(
            short_name("<<a::B<u8> as c::D>::E as f::G>::h"),
            "<<a::B<…> as c::D>::E as f::G>::h"
        );
        assert_eq!(short_name("memcpy"), "memcpy");
        assert_eq!(short_name("a<<>"), "a<…");
        assert_eq!(short_name("?"), "?");
    }

    #[test]
    fn symbols_demangle_and_stay_in_code() {
        let s = Symbols::new(&keel_symbols());
        assert_eq!(s.len(), 3, "one per address, data left out");
        assert_eq!(
            s.function_at(H + 0x1000),
            Some("kernel::vmexit::handle_exit")
        );
        assert_eq!(
            s.function_at(H + 0x10ff),
            Some("kernel::vmexit::handle_exit")
        );
        assert_eq!(s.function_at(H + 0x1150), Some("mm::lookup"));
        assert_eq!(s.function_at(H + 0x2fff), Some("svm_entry"));
        assert_eq!(s.function_at(H + 0x3000), None, "past .text");
        assert_eq!(s.function_at(H + 0xfff), None, "before .text");
        assert_eq!(s.function_at(0x100000), None);
        assert!(Symbols::new(&ElfSymbols::default()).is_empty());
        assert_eq!(Symbols::default().function_at(H + 0x1000), None);
    }

    #[test]
    fn elf_symbols_of_a_real_elf() {
        let me = std::env::current_exe().expect("test binary path");
        let data = std::fs::read(me).expect("test binary");
        let elf = ElfSymbols::parse(&data).expect("an ELF");
        // This very function is in the test binary's symbol table.
        let name = "elf_symbols_of_a_real_elf";
        let addr = elf.find(name).expect("own symbol");
        let s = Symbols::new(&elf);
        // The linker may give one address several code symbols (identical code
        // folded, aliases); the lookup names one of them.
        let at_addr: Vec<String> = elf
            .symbols
            .iter()
            .filter(|r| r.code && r.addr == addr)
            .map(|r| format!("{:#}", rustc_demangle::demangle(&r.name)))
            .collect();
        assert!(at_addr.iter().any(|n| n.contains(name)), "{at_addr:?}");
        let got = s.function_at(addr);
        assert!(
            got.is_some_and(|f| at_addr.iter().any(|n| n == f)),
            "{got:?} is none of {at_addr:?}"
        );
        assert!(ElfSymbols::parse(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn spans_are_keyed_by_the_last_guest_tb() {
        let text = log(&[
            // Boot: two hypervisor TBs, 3 + 2 insns.
            (0xa0, H + 0x1000, 3, true),
            (0xb0, H + 0x1100, 2, true),
            // The guest starts; a hypercall page TB exits.
            (0xc0, 0x10_0000, 4, true),
            (0xd0, 0x14_9220, 2, true),
            (0xa0, H + 0x1000, 0, false),
            (0xe0, H + 0x2010, 5, true),
            // Back in the guest, the same exit again.
            (0xc0, 0x10_0000, 0, false),
            (0xd0, 0x14_9220, 0, false),
            (0xa0, H + 0x1000, 0, false),
            (0xb0, H + 0x1100, 0, false),
            // Another exit elsewhere.
            (0xf0, 0x10_0040, 1, true),
            (0xe0, H + 0x2010, 0, false),
            (0xc0, 0x10_0000, 0, false),
            // Shutdown.
            (0xb0, H + 0x1100, 0, false),
        ]);
        let p = run(&text);
        assert_eq!(p.tbs, 14);
        assert_eq!((p.boot_tbs, p.boot_insns), (2, 5));
        assert_eq!(p.guest_tbs, 6);
        assert_eq!((p.tail_tbs, p.tail_insns), (1, 2));
        assert_eq!(p.unsized_tbs, 0);
        assert_eq!(p.spans(), 3);
        assert_eq!(p.keys.len(), 2);
        let hc = &p.keys[0];
        assert_eq!((hc.guest_pc, hc.spans, hc.insns), (0x14_9220, 2, 13));
        assert_eq!(hc.per_span(), 6.5);
        assert_eq!(
            hc.functions,
            [
                ("kernel::vmexit::handle_exit".to_string(), 6),
                ("svm_entry".to_string(), 5),
                ("mm::lookup".to_string(), 2),
            ]
        );
        let other = &p.keys[1];
        assert_eq!(
            (other.guest_pc, other.spans, other.insns),
            (0x10_0040, 1, 5)
        );
    }

    #[test]
    fn each_cpu_has_its_own_spans() {
        // Two CPUs in turns, as QEMU's icount runs them: CPU 1's hypervisor TBs
        // while CPU 0 waits belong to CPU 1's span, not to CPU 0's.
        let on = |cpu: u32, text: String| text.replace("Trace 0:", &format!("Trace {cpu}:"));
        let mut text = on(
            0,
            log(&[
                (0xa0, H + 0x1000, 3, true), // CPU 0 boots
                (0xc0, 0x10_0000, 4, true),  // its guest
                (0xd0, 0x14_9220, 2, true),  // exits (a hypercall)...
                (0xb0, H + 0x1100, 2, true),
            ]),
        );
        text += &on(
            1,
            log(&[
                (0xa0, H + 0x1000, 0, false), // CPU 1: still booting
                (0xf0, 0x10_0040, 1, true),   // its guest halts...
                (0xe0, H + 0x2010, 5, true),  // into the hypervisor
            ]),
        );
        text += &on(
            0,
            log(&[
                (0xe0, H + 0x2010, 0, false), // CPU 0's exit goes on
                (0xc0, 0x10_0000, 0, false),  // ... and ends
            ]),
        );
        text += &on(
            1,
            log(&[
                (0xb0, H + 0x1100, 0, false), // CPU 1's goes on
                (0xf0, 0x10_0040, 0, false),  // ... and ends
            ]),
        );
        text += "Stopped execution of TB chain before 0x1f0 [0000000000100040]\n";
        let p = run(&text);
        assert_eq!(p.cpus, 2);
        assert_eq!((p.boot_tbs, p.boot_insns), (2, 6), "each CPU's own boot");
        assert_eq!(p.spans(), 2);
        let keys: Vec<(u32, u64, u64, u64)> = p
            .keys
            .iter()
            .map(|k| (k.cpu, k.guest_pc, k.spans, k.insns))
            .collect();
        assert_eq!(keys, [(0, 0x14_9220, 1, 7), (1, 0x10_0040, 1, 7)]);
        let shown = p.render("keel", 10, 5, &|_| None);
        assert!(
            shown.contains("== cpu 1, after guest pc 0x100040:"),
            "{shown}"
        );
        let one = run(&log(&[
            (0xc0, 0x10_0000, 1, true),
            (0xa0, H + 0x1000, 1, true),
            (0xc0, 0x10_0000, 0, false),
        ]));
        assert!(
            !one.render("keel", 10, 5, &|_| None).contains("cpu 0"),
            "one CPU: as before"
        );
    }

    #[test]
    fn sizes_follow_the_translation_of_each_host_tb() {
        // One pc translated twice (an icount-shortened copy at another host
        // address): each execution counts its own translation's size.
        let text = log(&[
            (0xc0, 0x10_0000, 1, true),
            (0xa0, H + 0x1000, 6, true),
            (0xa8, H + 0x1000, 1, true),
            (0xa0, H + 0x1000, 0, false),
            (0xc0, 0x10_0000, 0, false),
        ]);
        let p = run(&text);
        assert_eq!(p.keys[0].insns, 6 + 1 + 6);
        // A TB never seen translated: its pc's last size, else 1.
        let text = log(&[
            (0xc0, 0x10_0000, 1, true),
            (0xa0, H + 0x1000, 6, true),
            (0xa9, H + 0x1000, 0, false),
            (0xaa, H + 0x1100, 0, false),
            (0xc0, 0x10_0000, 0, false),
        ]);
        let p = run(&text);
        assert_eq!(p.keys[0].insns, 6 + 6 + 1);
        assert_eq!(p.unsized_tbs, 1);
    }

    #[test]
    fn stopped_tbs_are_taken_back() {
        let mut text = log(&[
            (0xc0, 0x10_0000, 1, true),
            (0xa0, H + 0x1000, 6, true),
            (0xb0, H + 0x1100, 2, true),
        ]);
        text.push_str("Stopped execution of TB chain before 0xb0 [ffff800000001100] \n");
        // A stop naming another TB changes nothing.
        text.push_str("Stopped execution of TB chain before 0x99 [ffff800000001100] \n");
        text.push_str(&log(&[
            (0xb0, H + 0x1100, 0, false),
            (0xc0, 0x10_0000, 0, false),
        ]));
        let p = run(&text);
        assert_eq!((p.keys[0].spans, p.keys[0].insns), (1, 8));
        assert_eq!(
            p.keys[0].functions,
            [
                ("kernel::vmexit::handle_exit".to_string(), 6),
                ("mm::lookup".to_string(), 2)
            ]
        );
        // A span of nothing but a stopped TB is no exit.
        let mut text = log(&[(0xc0, 0x10_0000, 1, true), (0xa0, H + 0x1000, 6, true)]);
        text.push_str("Stopped execution of TB chain before 0xa0 [ffff800000001000] \n");
        text.push_str(&log(&[(0xc0, 0x10_0000, 0, false)]));
        assert_eq!(run(&text).spans(), 0);
    }

    #[test]
    fn nothing_is_attributed_before_the_guest() {
        let p = run(&log(&[
            (0xa0, H + 0x1000, 3, true),
            (0xa0, H + 0x1000, 0, false),
        ]));
        assert_eq!((p.boot_tbs, p.boot_insns, p.spans()), (2, 6, 0));
        assert_eq!(p.tail_tbs, 0, "no guest yet: boot, not shutdown");
        assert_eq!(run(""), Profile::default());
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped() {
        let mut text = log(&[(0xc0, 0x10_0000, 1, true), (0xa0, H + 0x1000, 2, true)]);
        text.push_str("Trace 0: 0x7f0e\nTrace 0: zz [\nIN: \n0xzz\nOBJD-T: 90\n\nrandom\n");
        text.push_str(&log(&[(0xc0, 0x10_0000, 0, false)]));
        text.push_str("Trace 0: 0xa0 [0000000000000000/ffff8000000");
        let p = run(&text);
        assert_eq!(p.keys[0].insns, 2);
        assert_eq!(p.tbs, 3);
    }

    #[test]
    fn stripped_hypervisor_gives_question_marks() {
        let mut p = Profiler::new(DEFAULT_GUEST_RANGE, Symbols::default());
        let text = log(&[
            (0xc0, 0x10_0000, 1, true),
            (0xa0, 0xffff_82d0_4020_0000, 7, true),
            (0xc0, 0x10_0000, 0, false),
        ]);
        for l in text.lines() {
            p.line(l.as_bytes());
        }
        let p = p.finish();
        assert_eq!(p.keys[0].functions, [("?".to_string(), 7)]);
    }

    #[test]
    fn guest_names() {
        let names = GuestNames {
            hypercall_page: Some(0x14_9000),
            symbols: Symbols::new(&ElfSymbols {
                symbols: vec![RawSymbol {
                    name: "_ZN10pvh_common5bench4send17h0123456789abcdefE".into(),
                    addr: 0x10_0800,
                    size: 0x80,
                    code: true,
                }],
                exec: core::iter::once(0x10_0000..0x11_0000).collect(),
            }),
        };
        assert_eq!(
            names.describe(0x14_9220).as_deref(),
            Some("hypercall page entry 17 (xen_version)")
        );
        assert_eq!(
            names.describe(0x14_9000 + 60 * 32).as_deref(),
            Some("hypercall page entry 60")
        );
        assert_eq!(
            names.describe(0x14_9224).as_deref(),
            Some("hypercall page entry 17 (xen_version) +0x4")
        );
        assert_eq!(
            names.describe(0x10_083e).as_deref(),
            Some("in pvh_common::bench::send")
        );
        assert_eq!(names.describe(0x14_a000), None);
        assert_eq!(GuestNames::default().describe(0x14_9220), None);
    }

    #[test]
    fn render_sorts_and_trims() {
        let text = log(&[
            (0xc0, 0x10_0000, 1, true),
            (0xa0, H + 0x1000, 10, true),
            (0xb0, H + 0x1100, 1, true),
            (0xd0, 0x14_9220, 1, true),
            (0xa0, H + 0x1000, 0, false),
            (0xd0, 0x14_9220, 0, false),
            (0xe0, H + 0x2000, 4, true),
            (0xc0, 0x10_0000, 0, false),
        ]);
        let p = run(&text);
        let names = GuestNames {
            hypercall_page: Some(0x14_9000),
            symbols: Symbols::default(),
        };
        let r = p.render("keel", 1, 1, &|pc| names.describe(pc));
        assert!(
            r.contains(
                "== after guest pc 0x149220, hypercall page entry 17 (xen_version): \
                 2 exits, 14 keel insns, 7 per exit\n\
                 \x20         5  kernel::vmexit::handle_exit\n\
                 \x20         2  (1 more functions)\n"
            ),
            "{r}"
        );
        assert!(!r.contains("== after guest pc 0x100000"), "{r}");
        assert!(
            r.contains("(1 more guest pcs, 11 keel insns, not shown"),
            "{r}"
        );
        let r = p.render("keel", 10, 10, &|pc| names.describe(pc));
        assert!(
            r.contains(
                "== after guest pc 0x100000: 1 exits, 11 keel insns, 11 per exit\n\
                 \x20        10  kernel::vmexit::handle_exit\n\
                 \x20         1  mm::lookup\n"
            ),
            "{r}"
        );
        assert!(
            r.contains("after it: 3 exits at 2 guest pcs, 25 keel insns; 4 guest TBs"),
            "{r}"
        );
        assert!(r.find("0x149220,") < r.find("0x100000:"), "most first: {r}");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes never panic the profiler.
            #[test]
            fn lines_never_panic(lines in proptest::collection::vec(
                prop_oneof![
                    Just(b"IN: ".to_vec()),
                    Just(b"Trace 0: 0x10 [0/100000/0/0]".to_vec()),
                    Just(b"Trace 0: 0x20 [0/ffff800000001000/0/0]".to_vec()),
                    Just(b"Stopped execution of TB chain before 0x20 [0]".to_vec()),
                    Just(b"0x0000000000100000:  90  nop".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..60),
                ],
                0..200,
            )) {
                let mut p = Profiler::new(DEFAULT_GUEST_RANGE, Symbols::default());
                for l in &lines {
                    p.line(l);
                }
                let profile = p.finish();
                prop_assert!(profile.span_insns() + profile.boot_insns + profile.tail_insns
                    <= profile.tbs.saturating_mul(u64::from(u32::MAX)));
            }
        }
    }
}
