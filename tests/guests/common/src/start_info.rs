//! Reading `hvm_start_info` (`arch-x86/hvm/start_info.h`) into owned values.
//!
//! The PVH entry's `ebx` holds the structure's guest-physical address. Everything it
//! points to (command line, module list, module command lines, memory map) is
//! guest-physical too and read through the identity mapping the guest runs on
//! (paging off for pvh32 at this point; the entry stub's 4 GiB identity map for
//! pvh64). Addresses outside that range are recorded as unreadable rather than
//! dereferenced. The values are copied once, at start-up, so later phases (pvh32's
//! PAE phase maps only the first GiB) need not reach them again.

use keel_hypercall::abi::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_MEMMAP_TYPE_RAM,
};

/// Highest address (exclusive) the guest can read physical memory at while parsing.
pub const READABLE_LIMIT: u64 = 0x1_0000_0000;

/// How many modules and memory-map entries are kept.
pub const MAX_MODULES: usize = 4;
/// Memory-map entries kept.
pub const MAX_MEMMAP: usize = 32;
/// Bytes of each module kept for checks and printing.
pub const MODULE_HEAD: usize = 32;

/// A NUL-terminated string copied from guest memory (at most `N` bytes kept).
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
    /// A NUL was found within the first `N` bytes.
    pub terminated: bool,
    /// The address was readable (non-zero, below [`READABLE_LIMIT`]).
    pub readable: bool,
}

impl<const N: usize> Text<N> {
    const fn empty() -> Self {
        Text {
            bytes: [0; N],
            len: 0,
            terminated: false,
            readable: false,
        }
    }

    /// Reads the string at guest-physical `pa`.
    fn read(pa: u64) -> Self {
        let mut t = Self::empty();
        if !readable(pa, 1) {
            return t;
        }
        t.readable = true;
        for i in 0..N as u64 {
            if !readable(pa + i, 1) {
                break;
            }
            let b = read_phys_u8(pa + i);
            if b == 0 {
                t.terminated = true;
                break;
            }
            t.bytes[t.len] = b;
            t.len += 1;
        }
        t
    }

    /// The bytes before the NUL (or the first `N`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What the guest keeps of one module.
#[derive(Clone, Copy)]
pub struct Module {
    /// The list entry.
    pub entry: HvmModlistEntry,
    /// Its first bytes (up to [`MODULE_HEAD`]).
    pub head: [u8; MODULE_HEAD],
    /// How many of `head` are valid.
    pub head_len: usize,
    /// Its command line.
    pub cmdline: Text<128>,
}

/// Everything the guest keeps of `hvm_start_info`.
pub struct BootInfo {
    /// The structure's guest-physical address (`ebx` at entry).
    pub pa: u64,
    /// Whether it could be read at all.
    pub readable: bool,
    /// The structure (all zero if unreadable).
    pub raw: HvmStartInfo,
    /// The guest's command line.
    pub cmdline: Text<512>,
    /// The first [`MAX_MODULES`] modules.
    pub modules: [Option<Module>; MAX_MODULES],
    /// The first [`MAX_MEMMAP`] memory-map entries.
    pub memmap: [HvmMemmapTableEntry; MAX_MEMMAP],
    /// How many of `memmap` are valid.
    pub memmap_len: usize,
}

/// Whether `[pa, pa + len)` is non-null and below [`READABLE_LIMIT`].
pub fn readable(pa: u64, len: u64) -> bool {
    pa != 0 && pa.checked_add(len).is_some_and(|end| end <= READABLE_LIMIT)
}

/// One byte of guest-physical memory (the caller checked [`readable`]).
fn read_phys_u8(pa: u64) -> u8 {
    // SAFETY: `pa` is below 4 GiB, which is identity-mapped (pvh64) or directly
    // addressed (pvh32, paging off) at this point; reading RAM or even MMIO here
    // has no effect the guest cares about.
    unsafe { core::ptr::read_volatile(pa as usize as *const u8) }
}

/// Copies `out.len()` bytes of guest-physical memory (the caller checked).
fn read_phys(pa: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = read_phys_u8(pa + i as u64);
    }
}

/// Reads the structure at `pa` and what it points to.
pub fn read(pa: u64) -> BootInfo {
    let mut info = BootInfo {
        pa,
        readable: false,
        raw: HvmStartInfo::default(),
        cmdline: Text::empty(),
        modules: [None; MAX_MODULES],
        memmap: [HvmMemmapTableEntry::default(); MAX_MEMMAP],
        memmap_len: 0,
    };
    if !readable(pa, HvmStartInfo::SIZE as u64) {
        return info;
    }
    info.readable = true;
    let mut bytes = [0u8; HvmStartInfo::SIZE];
    read_phys(pa, &mut bytes);
    info.raw = HvmStartInfo::from_bytes(&bytes);
    // Version 0 ends before the memory map; whatever follows is not ours to read.
    if info.raw.version < 1 {
        info.raw.memmap_paddr = 0;
        info.raw.memmap_entries = 0;
        info.raw.reserved = 0;
    }

    if info.raw.cmdline_paddr != 0 {
        info.cmdline = Text::read(info.raw.cmdline_paddr);
    }

    let n = (info.raw.nr_modules as usize).min(MAX_MODULES);
    for i in 0..n {
        let at = info.raw.modlist_paddr + (i * HvmModlistEntry::SIZE) as u64;
        if !readable(at, HvmModlistEntry::SIZE as u64) {
            break;
        }
        let mut e = [0u8; HvmModlistEntry::SIZE];
        read_phys(at, &mut e);
        let entry = HvmModlistEntry::from_bytes(&e);
        let mut m = Module {
            entry,
            head: [0; MODULE_HEAD],
            head_len: 0,
            cmdline: Text::empty(),
        };
        let head_len = (entry.size.min(MODULE_HEAD as u64)) as usize;
        if readable(entry.paddr, head_len as u64) {
            read_phys(entry.paddr, &mut m.head[..head_len]);
            m.head_len = head_len;
        }
        if entry.cmdline_paddr != 0 {
            m.cmdline = Text::read(entry.cmdline_paddr);
        }
        info.modules[i] = Some(m);
    }

    let n = (info.raw.memmap_entries as usize).min(MAX_MEMMAP);
    for i in 0..n {
        let at = info.raw.memmap_paddr + (i * HvmMemmapTableEntry::SIZE) as u64;
        if !readable(at, HvmMemmapTableEntry::SIZE as u64) {
            break;
        }
        let mut e = [0u8; HvmMemmapTableEntry::SIZE];
        read_phys(at, &mut e);
        info.memmap[i] = HvmMemmapTableEntry::from_bytes(&e);
        info.memmap_len = i + 1;
    }
    info
}

impl BootInfo {
    /// The command line's bytes.
    pub fn cmdline(&self) -> &[u8] {
        self.cmdline.as_bytes()
    }

    /// The memory-map entries read.
    pub fn memmap(&self) -> &[HvmMemmapTableEntry] {
        &self.memmap[..self.memmap_len]
    }

    /// Whether one RAM entry of the memory map covers all of `[start, end)`.
    pub fn ram_covers(&self, start: u64, end: u64) -> bool {
        self.memmap().iter().any(|e| {
            e.type_ == XEN_HVM_MEMMAP_TYPE_RAM
                && e.addr <= start
                && e.addr.checked_add(e.size).is_some_and(|top| end <= top)
        })
    }

    /// Whether a RAM entry of the memory map overlaps the page at `pa`.
    pub fn ram_overlaps_page(&self, pa: u64) -> bool {
        self.memmap().iter().any(|e| {
            e.type_ == XEN_HVM_MEMMAP_TYPE_RAM
                && e.addr < pa + 4096
                && e.addr.checked_add(e.size).is_none_or(|top| top > pa)
        })
    }
}
