//! The PVH domain builder's portable part: read a PVH kernel ELF, decide where
//! everything goes in the new domain's guest-physical memory, and write it there.
//!
//! # What
//!
//! PVH ("x86/HVM direct boot ABI", Xen `docs/misc/pvh.pandoc`) boots a kernel in a
//! hardware-virtualized container without firmware: the domain builder copies the
//! kernel's `PT_LOAD` segments to their physical addresses, lays out a
//! `hvm_start_info` structure (`xen/include/public/arch-x86/hvm/start_info.h`) with
//! the command line, the modules and a memory map, and starts vCPU 0 at the address
//! the kernel names in its `XEN_ELFNOTE_PHYS32_ENTRY` ELF note (18, `elfnote.h`), in
//! 32-bit protected mode with paging off, flat segments and `EBX` = the start info's
//! guest-physical address. Setting registers is the caller's job; [`plan`] returns the
//! entry and the start info address.
//!
//! Three steps, each a pure function over bytes so that all of it runs on the host:
//! [`parse`] checks the image and reads its Xen notes, [`plan`] computes a
//! [`PvhLayout`] for a given amount of guest RAM, and [`load`] writes through a
//! [`GuestMemWriter`] (the p2m-backed copy in the hypervisor, a `Vec<u8>` in tests).
//!
//! # Why these checks
//!
//! The kernel image is the administrator's, but it is still input: a malformed file
//! must give a message, never a panic or a write outside the new domain. `parse`
//! accepts ELF64 x86-64, and ELF32 with machine x86-64 (XTF-style images made with
//! `objcopy -O elf32-x86-64`) or i386 (plain 32-bit kernels); only `ET_EXEC`, since
//! keel loads segments at their linked `p_paddr` and does not implement the
//! relocation `XEN_ELFNOTE_PHYS32_RELOC` allows. Loadable segments must lie inside
//! the file (shared with [`crate::image`]), below 4 GiB (the entry runs with paging
//! off), and must not overlap one another; together these bound their total size by
//! 4 GiB. Segments with `p_memsz == 0` load nothing and are dropped.
//!
//! # Notes
//!
//! Xen notes (name `"Xen"`) are read from `PT_NOTE` segments; if those hold none, from
//! `SHT_NOTE` sections (libelf's order, `elf_xen_parse`), by the walker shared with the
//! PV builder ([`crate::elfnotes`], which says how a note is laid out and what is an
//! error). The `PHYS32_ENTRY` descriptor is 4 bytes (`.long`, as in
//! `pvh.pandoc`) or 8 (Linux emits `_ASM_PTR`, a `.quad` on x86-64); an 8-byte value
//! must fit in 32 bits. Where a note appears twice the last one wins, as in libelf.
//! The string notes `GUEST_OS`, `GUEST_VERSION`, `XEN_VERSION` and `LOADER` are
//! taken up to their first NUL and must be UTF-8. Xen's checks for PV kernels (e.g.
//! `XEN_VERSION` = "xen-3.0") do not apply to PVH and are not made.
//!
//! # Guest memory map and placement
//!
//! Guest RAM is gpa `0..mem_bytes`, all of it backed. The memory map handed to the
//! guest (start info version 1, [`guest_memory_map`]) is RAM `[0, 0xA0000)`, reserved
//! `[0xA0000, 0x100000)` (the legacy VGA/option-ROM/BIOS hole a PC-compatible kernel
//! expects not to use), RAM `[0x100000, mem_bytes)`. Kernel segments must lie in
//! advertised RAM. The boot information (start info, memory map, module list, then
//! the NUL-terminated command lines) goes in one page-aligned area starting at the
//! first page boundary at or above both the highest kernel segment's end and 1 MiB;
//! the modules follow, each page-aligned. Everything must end below `mem_bytes` and
//! below 4 GiB (the start info's addresses are 64-bit, but the guest reads them with
//! paging off). Sources: libxg `bootlate_hvm` (start info, command line, module list
//! and memory map share one segment), Xen `pvh_load_kernel` (PVH dom0: metadata after
//! the kernel, start info written last), libxl `domain_construct_memmap`. The same map,
//! as `e820entry`s, is what `XENMEM_memory_map` should return ([`memory_map`]). The
//! structures' encodings come from `keel_hypercall::abi` (`start_info`, `elfnote`,
//! `memory`).
//!
//! # Invariants and hazards
//!
//! - A [`PvhKernel`] is only built by `parse`, so its segments are checked, kept in
//!   program-header order and pairwise disjoint, and its entry lies in the
//!   file-backed part of one of them (an entry in a zero-filled tail would run zeroes).
//! - `load` re-plans and refuses a layout that does not match its arguments, so a
//!   stale layout cannot make it write module bytes over the kernel.
//! - `load` writes the zero tail of every segment even though the caller hands over
//!   zeroed memory: cheap, and it keeps a reused domain from leaking old contents.
//! - The memory map advertises RAM up to `mem_bytes` with no MMIO hole: a caller
//!   giving a guest more than ~3.9 GiB must punch the LAPIC/IOAPIC window itself.
//! - Command lines are bounded by [`MAX_CMDLINE`] bytes including the NUL and may not
//!   contain NUL. An empty module command line is passed as address 0 (as Xen's PVH
//!   dom0 builder does); the kernel's command line is always present, possibly "".
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;

use elf::abi::{ELFDATA2LSB, ELFDATA2MSB, EM_386, EM_X86_64, ET_DYN, ET_EXEC, PT_LOAD};
use elf::file::Class;

use keel_hypercall::abi::elfnote::{
    XEN_ELFNOTE_GUEST_OS, XEN_ELFNOTE_GUEST_VERSION, XEN_ELFNOTE_LOADER, XEN_ELFNOTE_PHYS32_ENTRY,
    XEN_ELFNOTE_PHYS32_RELOC, XEN_ELFNOTE_XEN_VERSION,
};
use keel_hypercall::abi::memory::{E820_RAM, E820_RESERVED, E820Entry};
use keel_hypercall::abi::start_info::{
    HVM_START_INFO_VERSION, HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo,
    XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_MEMMAP_TYPE_RESERVED, XEN_HVM_START_MAGIC_VALUE,
};

use crate::elfnotes::{self, NoteError, XenNote, ZeroOffsetNotes};
use crate::image::{self, ImageError, SegmentError};

pub use crate::elfnotes::NoteSource;
pub use crate::image::Segment;
pub use keel_hypercall::abi::start_info::{SIF_INITDOMAIN, SIF_PRIVILEGED};

/// Flags a PVH dom0 gets in its start info (Xen's `pvh_load_kernel`).
pub const DOM0_FLAGS: u32 = SIF_PRIVILEGED | SIF_INITDOMAIN;

/// Longest command line passed to a guest, in bytes including the terminating NUL.
/// (Linux keeps 2048 on x86 and truncates the rest itself; this only bounds keel.)
pub const MAX_CMDLINE: usize = 4096;

const PAGE_SIZE: u64 = 0x1000;
/// 4 GiB: the PVH entry runs in 32-bit mode with paging off.
const LIMIT_32BIT: u64 = 1 << 32;
/// The legacy hole below 1 MiB: not RAM in the guest's memory map.
const LEGACY_HOLE_START: u64 = 0xA_0000;
const LEGACY_HOLE_END: u64 = 0x10_0000;

/// ELF file class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

/// Whose command line, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineOwner {
    Kernel,
    Module(usize),
}

impl fmt::Display for CmdlineOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineOwner::Kernel => f.write_str("kernel"),
            CmdlineOwner::Module(i) => write!(f, "module {i}"),
        }
    }
}

/// Why a PVH domain cannot be built. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum PvhError {
    /// {0}
    Image(ImageError),
    /// {0}
    Segment(SegmentError),
    /// the ELF is big-endian; x86 kernels are little-endian
    BigEndian,
    /// {class:?} ELF machine {machine} cannot be loaded: ELF64 kernels must be x86-64 (62), ELF32 kernels x86-64 (62) or i386 (3)
    WrongMachine { class: ElfClass, machine: u16 },
    /// the kernel is ET_DYN (position-independent): keel loads kernels at their linked physical addresses and does not implement XEN_ELFNOTE_PHYS32_RELOC relocation; link it as ET_EXEC
    PositionIndependent,
    /// ELF type {0} is not an executable (ET_EXEC)
    WrongType(u16),
    /// loadable segment {index} at {paddr:#x}..{end:#x} reaches above 4 GiB; the PVH entry runs with paging off, so the kernel must lie below 4 GiB
    SegmentAbove4G { index: usize, paddr: u64, end: u64 },
    /// loadable segments {first} ({first_start:#x}..{first_end:#x}) and {second} ({second_start:#x}..{second_end:#x}) overlap
    SegmentsOverlap {
        first: usize,
        first_start: u64,
        first_end: u64,
        second: usize,
        second_start: u64,
        second_end: u64,
    },
    /// {source} (file bytes {offset:#x}+{size:#x}) reaches past the end of the {file_len:#x}-byte file
    NoteOutsideFile {
        source: NoteSource,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    /// {source} starts at file offset {offset:#x}, which is not 4-byte aligned
    NoteMisaligned { source: NoteSource, offset: u64 },
    /// {source}: the note at file offset {at:#x} (namesz {namesz:#x}, descsz {descsz:#x}) runs past the end of its area
    NoteTruncated {
        source: NoteSource,
        at: u64,
        namesz: u32,
        descsz: u32,
    },
    /// {source}: {left} bytes at file offset {at:#x} are too short for a note header and are not zero padding
    NoteHeaderTruncated {
        source: NoteSource,
        at: u64,
        left: usize,
    },
    /// XEN_ELFNOTE_PHYS32_ENTRY has a {descsz}-byte value; 4 or 8 bytes are expected
    BadPhys32EntrySize { descsz: usize },
    /// XEN_ELFNOTE_PHYS32_ENTRY {entry:#x} is above 4 GiB; the PVH entry point is 32-bit
    EntryAbove4G { entry: u64 },
    /// the Xen ELF note of type {kind} is not a UTF-8 string
    BadNoteString { kind: u32 },
    /// not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY
    NotPvh,
    /// the PVH entry point {entry:#x} is not inside the file-backed part of any loadable segment
    EntryOutsideSegments { entry: u32 },
    /// guest memory size {mem_bytes:#x} must be a multiple of 4 KiB above 1 MiB
    BadGuestMemSize { mem_bytes: u64 },
    /// loadable segment {index} at {paddr:#x}..{end:#x} lies outside the guest's {mem_bytes:#x} bytes of RAM
    SegmentOutsideGuestRam {
        index: usize,
        paddr: u64,
        end: u64,
        mem_bytes: u64,
    },
    /// loadable segment {index} at {paddr:#x}..{end:#x} overlaps the legacy hole 0xa0000..0x100000, which is not RAM in the guest's memory map
    SegmentInLegacyHole { index: usize, paddr: u64, end: u64 },
    /// the {owner} command line is {len} bytes long; at most 4095 (4096 with the NUL) are accepted
    CmdlineTooLong { owner: CmdlineOwner, len: usize },
    /// the {owner} command line contains a NUL byte
    CmdlineHasNul { owner: CmdlineOwner },
    /// the kernel, boot information and modules need guest memory up to {needed_end:#x}, but only memory below {limit:#x} can be used (guest RAM, below 4 GiB)
    DoesNotFit { needed_end: u64, limit: u64 },
    /// the layout was planned for a different kernel, memory size, command line or modules
    LayoutMismatch,
    /// writing {len:#x} bytes to guest-physical address {gpa:#x} failed
    GuestWrite { gpa: u64, len: u64 },
}

impl From<ImageError> for PvhError {
    fn from(e: ImageError) -> Self {
        PvhError::Image(e)
    }
}

impl From<NoteError> for PvhError {
    fn from(e: NoteError) -> Self {
        match e {
            NoteError::OutsideFile {
                source,
                offset,
                size,
                file_len,
            } => PvhError::NoteOutsideFile {
                source,
                offset,
                size,
                file_len,
            },
            NoteError::Misaligned { source, offset } => PvhError::NoteMisaligned { source, offset },
            NoteError::Truncated {
                source,
                at,
                namesz,
                descsz,
            } => PvhError::NoteTruncated {
                source,
                at,
                namesz,
                descsz,
            },
            NoteError::HeaderTruncated { source, at, left } => {
                PvhError::NoteHeaderTruncated { source, at, left }
            }
        }
    }
}

impl From<SegmentError> for PvhError {
    fn from(e: SegmentError) -> Self {
        PvhError::Segment(e)
    }
}

/// A checked PVH kernel image; only [`parse`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvhKernel<'a> {
    pub class: ElfClass,
    pub machine: u16,
    /// `XEN_ELFNOTE_PHYS32_ENTRY`: where vCPU 0 starts, in 32-bit protected mode.
    pub phys32_entry: u32,
    /// The non-empty `PT_LOAD` segments, in program-header order, pairwise disjoint,
    /// each inside the file and below 4 GiB.
    pub segments: Vec<Segment>,
    /// `XEN_ELFNOTE_GUEST_OS`
    pub guest_os: Option<&'a str>,
    /// `XEN_ELFNOTE_GUEST_VERSION`
    pub guest_version: Option<&'a str>,
    /// `XEN_ELFNOTE_XEN_VERSION`
    pub xen_version: Option<&'a str>,
    /// `XEN_ELFNOTE_LOADER`
    pub loader: Option<&'a str>,
    /// Whether the kernel carries `XEN_ELFNOTE_PHYS32_RELOC` (it may be moved). keel
    /// loads at the linked addresses regardless; this is for messages.
    pub phys32_reloc: bool,
    bytes: &'a [u8],
}

impl<'a> PvhKernel<'a> {
    /// The whole image the kernel was parsed from.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Lowest start and highest end (exclusive) of the loadable segments.
    pub fn paddr_range(&self) -> (u64, u64) {
        self.segments.iter().fold((u64::MAX, 0), |(lo, hi), s| {
            (lo.min(s.paddr), hi.max(s.end()))
        })
    }
}

/// Xen notes found so far.
#[derive(Default)]
struct XenNotes<'a> {
    entry: Option<u64>,
    reloc: bool,
    guest_os: Option<&'a str>,
    guest_version: Option<&'a str>,
    xen_version: Option<&'a str>,
    loader: Option<&'a str>,
}

fn note_str(kind: u32, desc: &[u8]) -> Result<&str, PvhError> {
    elfnotes::note_str(desc).ok_or(PvhError::BadNoteString { kind })
}

impl<'a> XenNotes<'a> {
    fn take(&mut self, note: XenNote<'a>) -> Result<(), PvhError> {
        let desc = note.desc;
        match note.kind {
            XEN_ELFNOTE_PHYS32_ENTRY => {
                let entry = match *desc {
                    [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
                    [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
                    _ => return Err(PvhError::BadPhys32EntrySize { descsz: desc.len() }),
                };
                self.entry = Some(entry);
            }
            XEN_ELFNOTE_PHYS32_RELOC => self.reloc = true,
            XEN_ELFNOTE_GUEST_OS => self.guest_os = Some(note_str(note.kind, desc)?),
            XEN_ELFNOTE_GUEST_VERSION => {
                self.guest_version = Some(note_str(note.kind, desc)?);
            }
            XEN_ELFNOTE_XEN_VERSION => self.xen_version = Some(note_str(note.kind, desc)?),
            XEN_ELFNOTE_LOADER => self.loader = Some(note_str(note.kind, desc)?),
            _ => {}
        }
        Ok(())
    }
}

/// Checks that `bytes` is a PVH kernel keel can load, and reads what the builder
/// needs from it. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<PvhKernel<'_>, PvhError> {
    // Before `open`: the `elf` crate would parse a big-endian header and fail on the
    // swapped fields with a less helpful message.
    if bytes.starts_with(b"\x7fELF") && bytes.get(elf::abi::EI_DATA) == Some(&ELFDATA2MSB) {
        return Err(PvhError::BigEndian);
    }
    let file = image::open(bytes)?;
    let ehdr = file.ehdr;
    if bytes.get(elf::abi::EI_DATA) != Some(&ELFDATA2LSB) {
        return Err(PvhError::BigEndian);
    }
    let class = match ehdr.class {
        Class::ELF32 => ElfClass::Elf32,
        Class::ELF64 => ElfClass::Elf64,
    };
    let machine_ok = match class {
        ElfClass::Elf64 => ehdr.e_machine == EM_X86_64,
        ElfClass::Elf32 => ehdr.e_machine == EM_X86_64 || ehdr.e_machine == EM_386,
    };
    if !machine_ok {
        return Err(PvhError::WrongMachine {
            class,
            machine: ehdr.e_machine,
        });
    }
    match ehdr.e_type {
        ET_EXEC => {}
        ET_DYN => return Err(PvhError::PositionIndependent),
        t => return Err(PvhError::WrongType(t)),
    }

    let phdrs = file.segments().ok_or(ImageError::NoLoadSegments)?;
    let mut segments = Vec::new();
    for (i, ph) in phdrs.iter().enumerate() {
        if ph.p_type != PT_LOAD {
            continue;
        }
        let seg = image::check_load_segment(i, &ph, bytes.len())?;
        if seg.end() > LIMIT_32BIT {
            return Err(PvhError::SegmentAbove4G {
                index: i,
                paddr: seg.paddr,
                end: seg.end(),
            });
        }
        if seg.memsz > 0 {
            segments.push(seg);
        }
    }
    if segments.is_empty() {
        return Err(ImageError::NoLoadSegments.into());
    }
    let mut by_addr: Vec<&Segment> = segments.iter().collect();
    by_addr.sort_unstable_by_key(|s| s.paddr);
    for pair in by_addr.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.end() > b.paddr {
            return Err(PvhError::SegmentsOverlap {
                first: a.index,
                first_start: a.paddr,
                first_end: a.end(),
                second: b.index,
                second_start: b.paddr,
                second_end: b.end(),
            });
        }
    }

    let mut notes = XenNotes::default();
    elfnotes::for_each_xen_note(bytes, &file, ZeroOffsetNotes::Read, |n| notes.take(n))?;

    let entry = notes.entry.ok_or(PvhError::NotPvh)?;
    let phys32_entry = u32::try_from(entry).map_err(|_| PvhError::EntryAbove4G { entry })?;
    let e = u64::from(phys32_entry);
    if !segments
        .iter()
        .any(|s| s.paddr <= e && e < s.paddr + s.filesz)
    {
        return Err(PvhError::EntryOutsideSegments {
            entry: phys32_entry,
        });
    }

    Ok(PvhKernel {
        class,
        machine: ehdr.e_machine,
        phys32_entry,
        segments,
        guest_os: notes.guest_os,
        guest_version: notes.guest_version,
        xen_version: notes.xen_version,
        loader: notes.loader,
        phys32_reloc: notes.reloc,
        bytes,
    })
}

/// What a range of the guest memory map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMemKind {
    Ram,
    Reserved,
}

/// One entry of the memory map a guest is given: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMemRange {
    pub start: u64,
    pub end: u64,
    pub kind: GuestMemKind,
}

/// Where keel puts a domain's special pages (the PV console ring; later the
/// xenstore ring), below 4 GiB as Xen's HVM builder does, and reserved in the
/// memory map. Guests with RAM reaching this far get no special pages.
pub const SPECIAL_PAGES_START: u64 = 0xFEFF_0000;
/// End (exclusive) of the special-page region.
pub const SPECIAL_PAGES_END: u64 = 0xFF00_0000;
/// Where keel puts a PVH domain's ACPI tables (`hvm_start_info.rsdp_paddr`): in
/// the reserved legacy hole, where the RSDP also sits in the range a kernel that
/// ignores `rsdp_paddr` scans (0xE0000..0x100000).
pub const ACPI_TABLES_GPA: u64 = 0xE_0000;
/// The guest frame of the PV console ring (`HVM_PARAM_CONSOLE_PFN`).
pub const CONSOLE_RING_GFN: u64 = (SPECIAL_PAGES_END >> 12) - 1;

/// The memory map of a guest with RAM at `0..mem_bytes`: RAM below 640 KiB, the
/// legacy hole reserved, RAM from 1 MiB (empty ranges left out), and the special
/// pages reserved when RAM ends below them. The same answer belongs in
/// `XENMEM_memory_map` for this guest.
pub fn guest_memory_map(mem_bytes: u64) -> Vec<GuestMemRange> {
    let special = if mem_bytes <= SPECIAL_PAGES_START {
        (SPECIAL_PAGES_START, SPECIAL_PAGES_END)
    } else {
        (0, 0)
    };
    let candidates = [
        (0, LEGACY_HOLE_START.min(mem_bytes), GuestMemKind::Ram),
        (
            LEGACY_HOLE_START,
            LEGACY_HOLE_END.min(mem_bytes),
            GuestMemKind::Reserved,
        ),
        (LEGACY_HOLE_END, mem_bytes, GuestMemKind::Ram),
        (special.0, special.1, GuestMemKind::Reserved),
    ];
    candidates
        .into_iter()
        .map(|(start, end, kind)| GuestMemRange { start, end, kind })
        .filter(|r| r.start < r.end)
        .collect()
}

/// [`guest_memory_map`] in the `e820entry` form `XENMEM_memory_map` returns.
pub fn memory_map(mem_bytes: u64) -> Vec<E820Entry> {
    guest_memory_map(mem_bytes)
        .into_iter()
        .map(|r| E820Entry {
            addr: r.start,
            size: r.end - r.start,
            type_: match r.kind {
                GuestMemKind::Ram => E820_RAM,
                GuestMemKind::Reserved => E820_RESERVED,
            },
        })
        .collect()
}

/// A module to hand to the guest (an initrd, say) and its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleSpec<'m> {
    pub bytes: &'m [u8],
    pub cmdline: &'m str,
}

/// Where everything goes in guest-physical memory (all addresses are gpas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvhLayout {
    /// The `hvm_start_info`: the guest's `EBX` at entry. Page-aligned.
    pub start_info_gpa: u64,
    /// The kernel's NUL-terminated command line.
    pub cmdline_gpa: u64,
    /// The `hvm_modlist_entry` array; 0 when there are no modules.
    pub modlist_gpa: u64,
    /// The `hvm_memmap_table_entry` array.
    pub memmap_gpa: u64,
    /// Entries in that array.
    pub memmap_entries: u32,
    /// Per module: gpa (page-aligned), size in bytes, command line gpa (0 if none).
    pub modules: Vec<(u64, u64, u64)>,
    /// The PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`): the guest's `EIP`.
    pub entry: u32,
    /// End (exclusive, page-aligned) of everything placed.
    pub highest_used: u64,
    /// The guest RAM size the layout was planned for.
    pub mem_bytes: u64,
}

fn align_up_page(n: u64) -> Option<u64> {
    Some(n.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

fn check_cmdline(owner: CmdlineOwner, s: &str) -> Result<u64, PvhError> {
    if s.len() >= MAX_CMDLINE {
        return Err(PvhError::CmdlineTooLong {
            owner,
            len: s.len(),
        });
    }
    if s.as_bytes().contains(&0) {
        return Err(PvhError::CmdlineHasNul { owner });
    }
    Ok(s.len() as u64 + 1)
}

/// Where everything goes in guest-physical memory; errors if kernel segments fall
/// outside guest RAM (or in the 0xA0000-0x100000 hole), or everything does not fit in
/// `mem_bytes` below 4 GiB. See the module docs for the placement policy.
pub fn plan(
    kernel: &PvhKernel,
    mem_bytes: u64,
    cmdline: &str,
    modules: &[ModuleSpec],
) -> Result<PvhLayout, PvhError> {
    if !mem_bytes.is_multiple_of(PAGE_SIZE) || mem_bytes <= LEGACY_HOLE_END {
        return Err(PvhError::BadGuestMemSize { mem_bytes });
    }
    for s in &kernel.segments {
        if s.end() > mem_bytes {
            return Err(PvhError::SegmentOutsideGuestRam {
                index: s.index,
                paddr: s.paddr,
                end: s.end(),
                mem_bytes,
            });
        }
        if s.paddr < LEGACY_HOLE_END && s.end() > LEGACY_HOLE_START {
            return Err(PvhError::SegmentInLegacyHole {
                index: s.index,
                paddr: s.paddr,
                end: s.end(),
            });
        }
    }
    let cmdline_size = check_cmdline(CmdlineOwner::Kernel, cmdline)?;
    let mut module_cmdline_sizes = Vec::with_capacity(modules.len());
    for (i, m) in modules.iter().enumerate() {
        module_cmdline_sizes.push(check_cmdline(CmdlineOwner::Module(i), m.cmdline)?);
    }

    let limit = mem_bytes.min(LIMIT_32BIT);
    let too_big = |needed_end: u64| PvhError::DoesNotFit { needed_end, limit };
    // Sizes are bounded by the host's memory, but add with care all the same.
    let add = |a: u64, b: u64| a.checked_add(b).ok_or(too_big(u64::MAX));
    let mul = |a: u64, b: u64| a.checked_mul(b).ok_or(too_big(u64::MAX));

    let (_, kernel_end) = kernel.paddr_range();
    let start_info_gpa = align_up_page(kernel_end.max(LEGACY_HOLE_END)).ok_or(too_big(u64::MAX))?;
    let memmap_entries = guest_memory_map(mem_bytes).len() as u64;
    let memmap_gpa = add(start_info_gpa, HvmStartInfo::SIZE as u64)?;
    let modlist_at = add(
        memmap_gpa,
        mul(memmap_entries, HvmMemmapTableEntry::SIZE as u64)?,
    )?;
    let modlist_gpa = if modules.is_empty() { 0 } else { modlist_at };
    let cmdline_gpa = add(
        modlist_at,
        mul(modules.len() as u64, HvmModlistEntry::SIZE as u64)?,
    )?;
    let mut cursor = add(cmdline_gpa, cmdline_size)?;
    let mut module_cmdlines = Vec::with_capacity(modules.len());
    for (m, size) in modules.iter().zip(&module_cmdline_sizes) {
        if m.cmdline.is_empty() {
            module_cmdlines.push(0);
        } else {
            module_cmdlines.push(cursor);
            cursor = add(cursor, *size)?;
        }
    }
    cursor = align_up_page(cursor).ok_or(too_big(u64::MAX))?;
    let mut placed = Vec::with_capacity(modules.len());
    for (m, cmdline_gpa) in modules.iter().zip(module_cmdlines) {
        let size = m.bytes.len() as u64;
        placed.push((cursor, size, cmdline_gpa));
        cursor = align_up_page(add(cursor, size)?).ok_or(too_big(u64::MAX))?;
    }
    if cursor > limit {
        return Err(too_big(cursor));
    }
    Ok(PvhLayout {
        start_info_gpa,
        cmdline_gpa,
        modlist_gpa,
        memmap_gpa,
        memmap_entries: memmap_entries as u32,
        modules: placed,
        entry: kernel.phys32_entry,
        highest_used: cursor,
        mem_bytes,
    })
}

/// Copies bytes into the guest being built.
pub trait GuestMemWriter {
    /// Copies `data` to guest-physical address `gpa`. An implementation that cannot
    /// (the range is not backed) should return [`PvhError::GuestWrite`].
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), PvhError>;
}

static ZEROES: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

fn write_zeroes(mem: &mut impl GuestMemWriter, gpa: u64, len: u64) -> Result<(), PvhError> {
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(PAGE_SIZE);
        // chunk <= PAGE_SIZE, the length of ZEROES.
        mem.write(gpa.saturating_add(done), &ZEROES[..chunk as usize])?;
        done += chunk;
    }
    Ok(())
}

fn write_cmdline(mem: &mut impl GuestMemWriter, gpa: u64, s: &str) -> Result<(), PvhError> {
    mem.write(gpa, s.as_bytes())?;
    mem.write(gpa + s.len() as u64, &[0])
}

/// Writes the kernel segments (file bytes, then zeroes up to memsz), the modules, the
/// command lines (NUL-terminated), the module list, the memory map and, last, the
/// `hvm_start_info` (version 1, `flags` as given: [`DOM0_FLAGS`] for dom0;
/// `rsdp_paddr` where the caller put the ACPI tables, 0 for none) into guest memory through `mem`, as `layout` (from [`plan`] with the same
/// arguments) says.
pub fn load(
    kernel: &PvhKernel,
    layout: &PvhLayout,
    cmdline: &str,
    modules: &[ModuleSpec],
    flags: u32,
    rsdp_paddr: u64,
    mem: &mut impl GuestMemWriter,
) -> Result<(), PvhError> {
    if plan(kernel, layout.mem_bytes, cmdline, modules)? != *layout {
        return Err(PvhError::LayoutMismatch);
    }
    for s in &kernel.segments {
        // `parse` checked the segment against these very bytes.
        let data = s.file_bytes(kernel.bytes).ok_or(PvhError::LayoutMismatch)?;
        mem.write(s.paddr, data)?;
        // `plan` (just above) checked `paddr + memsz` against guest RAM; saturate
        // anyway in case the caller edited the segment's public fields.
        write_zeroes(
            mem,
            s.paddr.saturating_add(s.filesz),
            s.memsz.saturating_sub(s.filesz),
        )?;
    }
    for (m, &(gpa, _, cmdline_gpa)) in modules.iter().zip(&layout.modules) {
        mem.write(gpa, m.bytes)?;
        if cmdline_gpa != 0 {
            write_cmdline(mem, cmdline_gpa, m.cmdline)?;
        }
    }
    write_cmdline(mem, layout.cmdline_gpa, cmdline)?;
    for (i, &(paddr, size, cmdline_paddr)) in layout.modules.iter().enumerate() {
        let entry = HvmModlistEntry {
            paddr,
            size,
            cmdline_paddr,
            reserved: 0,
        };
        let at = layout.modlist_gpa + (i * HvmModlistEntry::SIZE) as u64;
        mem.write(at, &entry.to_bytes())?;
    }
    for (i, r) in guest_memory_map(layout.mem_bytes).iter().enumerate() {
        let entry = HvmMemmapTableEntry {
            addr: r.start,
            size: r.end - r.start,
            type_: match r.kind {
                GuestMemKind::Ram => XEN_HVM_MEMMAP_TYPE_RAM,
                GuestMemKind::Reserved => XEN_HVM_MEMMAP_TYPE_RESERVED,
            },
            reserved: 0,
        };
        let at = layout.memmap_gpa + (i * HvmMemmapTableEntry::SIZE) as u64;
        mem.write(at, &entry.to_bytes())?;
    }
    let start_info = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: HVM_START_INFO_VERSION,
        flags,
        // `plan` fitted a 32-byte list entry per module below 4 GiB: < 2^27 modules.
        nr_modules: layout.modules.len() as u32,
        modlist_paddr: layout.modlist_gpa,
        cmdline_paddr: layout.cmdline_gpa,
        rsdp_paddr,
        memmap_paddr: layout.memmap_gpa,
        memmap_entries: layout.memmap_entries,
        reserved: 0,
    };
    mem.write(layout.start_info_gpa, &start_info.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use elf::abi::{PT_NOTE, SHT_NOTE};
    use proptest::prelude::*;

    const CODE_AT: u64 = 0x10_0000;

    /// One program header, in the class-independent form the builder writes out.
    #[derive(Clone, Copy)]
    struct Ph {
        p_type: u32,
        offset: u64,
        paddr: u64,
        filesz: u64,
        memsz: u64,
    }

    /// One section header (only what the note fallback reads).
    #[derive(Clone, Copy)]
    struct Sh {
        sh_type: u32,
        offset: u64,
        size: u64,
    }

    /// Builds little ELF files by hand: the header and up to 8 program headers in the
    /// first 0x200 bytes, blobs after that, 8-aligned, then the section headers.
    struct Elf {
        class64: bool,
        machine: u16,
        etype: u16,
        data: u8,
        phs: Vec<Ph>,
        shs: Vec<Sh>,
        body: Vec<u8>,
    }

    const BODY_AT: u64 = 0x200;

    impl Elf {
        fn new(class64: bool, machine: u16) -> Elf {
            Elf {
                class64,
                machine,
                etype: ET_EXEC,
                data: 1,
                phs: Vec::new(),
                shs: Vec::new(),
                body: Vec::new(),
            }
        }

        fn x64() -> Elf {
            Elf::new(true, EM_X86_64)
        }

        /// Appends `bytes` to the file, returning their offset.
        fn blob(&mut self, bytes: &[u8]) -> u64 {
            while !self.body.len().is_multiple_of(8) {
                self.body.push(0);
            }
            let at = BODY_AT + self.body.len() as u64;
            self.body.extend_from_slice(bytes);
            at
        }

        fn ph(mut self, ph: Ph) -> Elf {
            self.phs.push(ph);
            self
        }

        fn load(mut self, paddr: u64, content: &[u8], memsz: u64) -> Elf {
            let offset = self.blob(content);
            self.ph(Ph {
                p_type: PT_LOAD,
                offset,
                paddr,
                filesz: content.len() as u64,
                memsz,
            })
        }

        fn notes(mut self, notes: &[u8]) -> Elf {
            let offset = self.blob(notes);
            self.ph(Ph {
                p_type: PT_NOTE,
                offset,
                paddr: 0,
                filesz: notes.len() as u64,
                memsz: 0,
            })
        }

        fn note_section(mut self, notes: &[u8]) -> Elf {
            let offset = self.blob(notes);
            if self.shs.is_empty() {
                self.shs.push(Sh {
                    sh_type: 0,
                    offset: 0,
                    size: 0,
                });
            }
            self.shs.push(Sh {
                sh_type: SHT_NOTE,
                offset,
                size: notes.len() as u64,
            });
            self
        }

        /// A PVH kernel: code at 1 MiB (8 KiB in memory), entry at its start.
        fn pvh(self) -> Elf {
            self.load(CODE_AT, &code(), 0x2000)
                .notes(&[entry_note(CODE_AT as u32), os_note()].concat())
        }

        fn build(&self) -> Vec<u8> {
            assert!(
                self.phs.len() <= 8,
                "the builder has room for 8 program headers"
            );
            let mut b = vec![0u8; BODY_AT as usize];
            b.extend_from_slice(&self.body);
            while !b.len().is_multiple_of(8) {
                b.push(0);
            }
            let shoff = if self.shs.is_empty() {
                0
            } else {
                b.len() as u64
            };
            for sh in &self.shs {
                if self.class64 {
                    let mut e = [0u8; 64];
                    e[4..8].copy_from_slice(&sh.sh_type.to_le_bytes());
                    e[24..32].copy_from_slice(&sh.offset.to_le_bytes());
                    e[32..40].copy_from_slice(&sh.size.to_le_bytes());
                    e[48..56].copy_from_slice(&4u64.to_le_bytes());
                    b.extend_from_slice(&e);
                } else {
                    let mut e = [0u8; 40];
                    e[4..8].copy_from_slice(&sh.sh_type.to_le_bytes());
                    e[16..20].copy_from_slice(&(sh.offset as u32).to_le_bytes());
                    e[20..24].copy_from_slice(&(sh.size as u32).to_le_bytes());
                    e[32..36].copy_from_slice(&4u32.to_le_bytes());
                    b.extend_from_slice(&e);
                }
            }
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = if self.class64 { 2 } else { 1 };
            b[5] = self.data;
            b[6] = 1;
            let put16 = |b: &mut Vec<u8>, at: usize, v: u16| {
                b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            };
            put16(&mut b, 16, self.etype);
            put16(&mut b, 18, self.machine);
            b[20..24].copy_from_slice(&1u32.to_le_bytes());
            let phnum = self.phs.len() as u16;
            let shnum = self.shs.len() as u16;
            if self.class64 {
                b[24..32].copy_from_slice(&CODE_AT.to_le_bytes()); // e_entry (unused)
                b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
                b[40..48].copy_from_slice(&shoff.to_le_bytes());
                put16(&mut b, 52, 64);
                put16(&mut b, 54, 56);
                put16(&mut b, 56, phnum);
                put16(&mut b, 58, 64);
                put16(&mut b, 60, shnum);
                for (i, ph) in self.phs.iter().enumerate() {
                    let e = &mut b[64 + 56 * i..64 + 56 * (i + 1)];
                    e[0..4].copy_from_slice(&ph.p_type.to_le_bytes());
                    e[8..16].copy_from_slice(&ph.offset.to_le_bytes());
                    e[16..24].copy_from_slice(&ph.paddr.to_le_bytes()); // vaddr
                    e[24..32].copy_from_slice(&ph.paddr.to_le_bytes());
                    e[32..40].copy_from_slice(&ph.filesz.to_le_bytes());
                    e[40..48].copy_from_slice(&ph.memsz.to_le_bytes());
                    e[48..56].copy_from_slice(&4u64.to_le_bytes());
                }
            } else {
                b[24..28].copy_from_slice(&(CODE_AT as u32).to_le_bytes());
                b[28..32].copy_from_slice(&52u32.to_le_bytes());
                b[32..36].copy_from_slice(&(shoff as u32).to_le_bytes());
                put16(&mut b, 40, 52);
                put16(&mut b, 42, 32);
                put16(&mut b, 44, phnum);
                put16(&mut b, 46, 40);
                put16(&mut b, 48, shnum);
                for (i, ph) in self.phs.iter().enumerate() {
                    let e = &mut b[52 + 32 * i..52 + 32 * (i + 1)];
                    let w = |v: u64| (v as u32).to_le_bytes();
                    e[0..4].copy_from_slice(&ph.p_type.to_le_bytes());
                    e[4..8].copy_from_slice(&w(ph.offset));
                    e[8..12].copy_from_slice(&w(ph.paddr));
                    e[12..16].copy_from_slice(&w(ph.paddr));
                    e[16..20].copy_from_slice(&w(ph.filesz));
                    e[20..24].copy_from_slice(&w(ph.memsz));
                    e[28..32].copy_from_slice(&4u32.to_le_bytes());
                }
            }
            b
        }
    }

    /// Recognisable "code": 0x100 bytes counting up.
    fn code() -> Vec<u8> {
        (0..0x100u32).map(|i| i as u8).collect()
    }

    /// One ELF note, padded as `ELFNOTE()` does.
    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        while !n.len().is_multiple_of(4) {
            n.push(0);
        }
        n.extend_from_slice(desc);
        while !n.len().is_multiple_of(4) {
            n.push(0);
        }
        n
    }

    fn entry_note(entry: u32) -> Vec<u8> {
        note(b"Xen\0", 18, &entry.to_le_bytes())
    }

    fn entry_note64(entry: u64) -> Vec<u8> {
        note(b"Xen\0", 18, &entry.to_le_bytes())
    }

    fn os_note() -> Vec<u8> {
        note(b"Xen\0", 6, b"keel-test\0")
    }

    fn good() -> Vec<u8> {
        Elf::x64().pvh().build()
    }

    fn err(bytes: &[u8]) -> PvhError {
        parse(bytes).expect_err("parse should fail")
    }

    // ---- parse: good images ----

    #[test]
    fn elf64_with_a_4_byte_entry_note() {
        let bytes = good();
        let k = parse(&bytes).expect("parses");
        assert_eq!(k.class, ElfClass::Elf64);
        assert_eq!(k.machine, EM_X86_64);
        assert_eq!(k.phys32_entry, 0x10_0000);
        assert_eq!(k.guest_os, Some("keel-test"));
        assert_eq!(
            (k.guest_version, k.xen_version, k.loader),
            (None, None, None)
        );
        assert!(!k.phys32_reloc);
        assert_eq!(k.segments.len(), 1);
        let s = k.segments[0];
        assert_eq!((s.paddr, s.memsz, s.filesz), (CODE_AT, 0x2000, 0x100));
        assert_eq!(s.file_bytes(k.bytes()), Some(&code()[..]));
        assert_eq!(k.paddr_range(), (CODE_AT, CODE_AT + 0x2000));
    }

    #[test]
    fn elf64_with_an_8_byte_entry_note_like_linux() {
        let notes = [
            note(b"Xen\0", 5, b"xen-3.0\0"),
            note(b"Xen\0", 7, b"2.6\0"),
            note(b"Xen\0", 8, b"generic\0"),
            note(b"Xen\0", 19, &[0; 12]),
            entry_note64(CODE_AT + 0x10),
        ]
        .concat();
        let bytes = Elf::x64()
            .load(CODE_AT, &code(), 0x100)
            .notes(&notes)
            .build();
        let k = parse(&bytes).expect("parses");
        assert_eq!(k.phys32_entry, 0x10_0010);
        assert_eq!(k.xen_version, Some("xen-3.0"));
        assert_eq!(k.guest_version, Some("2.6"));
        assert_eq!(k.loader, Some("generic"));
        assert!(k.phys32_reloc);
    }

    #[test]
    fn elf32_x86_64_and_i386() {
        for machine in [EM_X86_64, EM_386] {
            let bytes = Elf::new(false, machine).pvh().build();
            let k = parse(&bytes).expect("parses");
            assert_eq!((k.class, k.machine), (ElfClass::Elf32, machine));
            assert_eq!(k.phys32_entry, 0x10_0000);
            assert_eq!(k.guest_os, Some("keel-test"));
        }
    }

    #[test]
    fn notes_in_sections_when_no_note_segment_has_xen_notes() {
        let bytes = Elf::x64()
            .load(CODE_AT, &code(), 0x1000)
            .notes(&note(b"GNU\0", 3, &[1, 2, 3, 4]))
            .note_section(&entry_note(CODE_AT as u32 + 4))
            .build();
        assert_eq!(parse(&bytes).expect("parses").phys32_entry, 0x10_0004);
    }

    #[test]
    fn other_owners_notes_and_zero_padding_are_ignored() {
        let notes = [
            note(b"GNU\0", 18, &[0xFF; 4]),
            note(b"Xenon\0", 18, &[0xFF; 4]),
            entry_note(CODE_AT as u32),
            vec![0; 8],
        ]
        .concat();
        let bytes = Elf::x64()
            .load(CODE_AT, &code(), 0x100)
            .notes(&notes)
            .build();
        assert_eq!(parse(&bytes).expect("parses").phys32_entry, 0x10_0000);
    }

    #[test]
    fn the_last_of_duplicate_notes_wins_as_in_libelf() {
        let notes = [entry_note(0x1234), entry_note(CODE_AT as u32 + 8)].concat();
        let bytes = Elf::x64()
            .load(CODE_AT, &code(), 0x100)
            .notes(&notes)
            .build();
        assert_eq!(parse(&bytes).expect("parses").phys32_entry, 0x10_0008);
    }

    #[test]
    fn empty_segments_are_dropped_and_may_sit_anywhere() {
        let bytes = Elf::x64()
            .pvh()
            .ph(Ph {
                p_type: PT_LOAD,
                offset: 0,
                paddr: CODE_AT,
                filesz: 0,
                memsz: 0,
            })
            .build();
        assert_eq!(parse(&bytes).expect("parses").segments.len(), 1);
    }

    // ---- parse: refusals ----

    #[test]
    fn missing_entry_note_is_not_pvh() {
        let bytes = Elf::x64()
            .load(CODE_AT, &code(), 0x100)
            .notes(&os_note())
            .build();
        assert_eq!(err(&bytes), PvhError::NotPvh);
        assert_eq!(
            PvhError::NotPvh.to_string(),
            "not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY"
        );
        let bare = Elf::x64().load(CODE_AT, &code(), 0x100).build();
        assert_eq!(err(&bare), PvhError::NotPvh);
    }

    #[test]
    fn note_segment_past_the_end_of_the_file() {
        let mut bytes = good();
        let len = bytes.len();
        // Cut the file inside the note segment (the last blob).
        bytes.truncate(len - 4);
        let e = err(&bytes);
        assert!(
            matches!(
                e,
                PvhError::NoteOutsideFile {
                    source: NoteSource::Segment(1),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("note segment 1"), "{e}");
    }

    #[test]
    fn malformed_note_sizes() {
        let build = |notes: &[u8]| {
            Elf::x64()
                .load(CODE_AT, &code(), 0x100)
                .notes(notes)
                .build()
        };
        let mut huge_name = entry_note(CODE_AT as u32);
        huge_name[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut huge_desc = entry_note(CODE_AT as u32);
        huge_desc[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut long_desc = entry_note(CODE_AT as u32);
        long_desc[4..8].copy_from_slice(&8u32.to_le_bytes());
        for (what, notes) in [
            ("huge namesz", huge_name),
            ("huge descsz", huge_desc),
            ("descsz past the area", long_desc),
        ] {
            let e = err(&build(&notes));
            assert!(matches!(e, PvhError::NoteTruncated { .. }), "{what}: {e:?}");
        }
        // A stray partial header that is not padding.
        let stray = [entry_note(CODE_AT as u32), vec![1, 0, 0, 0]].concat();
        assert!(matches!(
            err(&build(&stray)),
            PvhError::NoteHeaderTruncated { left: 4, .. }
        ));
        // Entry descriptors of the wrong size.
        for size in [0usize, 2, 3, 5, 16] {
            let n = note(b"Xen\0", 18, &vec![0; size]);
            assert_eq!(
                err(&build(&n)),
                PvhError::BadPhys32EntrySize { descsz: size }
            );
        }
        // Not UTF-8.
        let n = [entry_note(CODE_AT as u32), note(b"Xen\0", 6, b"\xff\xfe\0")].concat();
        assert_eq!(err(&build(&n)), PvhError::BadNoteString { kind: 6 });
    }

    #[test]
    fn misaligned_note_segment() {
        let mut e = Elf::x64().load(CODE_AT, &code(), 0x100);
        let at = e.blob(&[0, 0]) + 2;
        e.body.extend_from_slice(&entry_note(CODE_AT as u32));
        let bytes = e
            .ph(Ph {
                p_type: PT_NOTE,
                offset: at,
                paddr: 0,
                filesz: 20,
                memsz: 0,
            })
            .build();
        assert!(matches!(err(&bytes), PvhError::NoteMisaligned { .. }));
    }

    #[test]
    fn entry_above_4g_in_an_8_byte_note() {
        let bytes = Elf::x64()
            .load(CODE_AT, &code(), 0x100)
            .notes(&entry_note64(0x1_0010_0000))
            .build();
        assert_eq!(
            err(&bytes),
            PvhError::EntryAbove4G {
                entry: 0x1_0010_0000
            }
        );
    }

    #[test]
    fn overlapping_segments() {
        let bytes = Elf::x64()
            .load(CODE_AT + 0x1000, &[1; 16], 0x1000)
            .load(CODE_AT, &code(), 0x1001)
            .notes(&entry_note(CODE_AT as u32))
            .build();
        let e = err(&bytes);
        assert_eq!(
            e,
            PvhError::SegmentsOverlap {
                first: 1,
                first_start: CODE_AT,
                first_end: CODE_AT + 0x1001,
                second: 0,
                second_start: CODE_AT + 0x1000,
                second_end: CODE_AT + 0x2000,
            }
        );
        assert!(e.to_string().contains("0x100000..0x101001"), "{e}");
    }

    #[test]
    fn bad_segment_sizes_and_ranges() {
        let with = |ph: Ph| Elf::x64().pvh().ph(ph).build();
        let base = Ph {
            p_type: PT_LOAD,
            offset: BODY_AT,
            paddr: 0x20_0000,
            filesz: 0x10,
            memsz: 0x10,
        };
        assert_eq!(
            err(&with(Ph { memsz: 0x8, ..base })),
            PvhError::Segment(SegmentError::FileszAboveMemsz {
                index: 2,
                filesz: 0x10,
                memsz: 0x8
            })
        );
        let past_end = with(Ph {
            filesz: 0x10_0000,
            memsz: 0x10_0000,
            ..base
        });
        assert!(matches!(
            err(&past_end),
            PvhError::Segment(SegmentError::OutsideFile { index: 2, .. })
        ));
        assert!(matches!(
            err(&with(Ph {
                offset: u64::MAX - 4,
                ..base
            })),
            PvhError::Segment(SegmentError::OutsideFile { .. })
        ));
        assert!(matches!(
            err(&with(Ph {
                paddr: u64::MAX - 8,
                ..base
            })),
            PvhError::Segment(SegmentError::PaddrWraps { index: 2, .. })
        ));
        let e = err(&with(Ph {
            paddr: 0xFFFF_FFF8,
            ..base
        }));
        assert_eq!(
            e,
            PvhError::SegmentAbove4G {
                index: 2,
                paddr: 0xFFFF_FFF8,
                end: 0x1_0000_0008
            }
        );
        // Ending exactly at 4 GiB is fine as far as parse is concerned.
        let top = with(Ph {
            paddr: 0xFFFF_FFF0,
            ..base
        });
        assert!(parse(&top).is_ok());
    }

    #[test]
    fn entry_outside_the_loaded_bytes() {
        for entry in [
            CODE_AT as u32 - 1,
            CODE_AT as u32 + 0x100,
            CODE_AT as u32 + 0x1FFF,
        ] {
            let bytes = Elf::x64()
                .load(CODE_AT, &code(), 0x2000)
                .notes(&entry_note(entry))
                .build();
            assert_eq!(err(&bytes), PvhError::EntryOutsideSegments { entry });
        }
    }

    #[test]
    fn wrong_machine_endianness_and_type() {
        assert_eq!(
            err(&Elf::new(true, 40).pvh().build()),
            PvhError::WrongMachine {
                class: ElfClass::Elf64,
                machine: 40
            }
        );
        assert_eq!(
            err(&Elf::new(true, EM_386).pvh().build()),
            PvhError::WrongMachine {
                class: ElfClass::Elf64,
                machine: EM_386
            }
        );
        assert!(matches!(
            err(&Elf::new(false, 183).pvh().build()),
            PvhError::WrongMachine { machine: 183, .. }
        ));
        let mut big = Elf::x64().pvh();
        big.data = 2;
        assert_eq!(err(&big.build()), PvhError::BigEndian);
        let mut dyn_ = Elf::x64().pvh();
        dyn_.etype = ET_DYN;
        let e = err(&dyn_.build());
        assert_eq!(e, PvhError::PositionIndependent);
        assert!(e.to_string().contains("PHYS32_RELOC"), "{e}");
        let mut rel = Elf::x64().pvh();
        rel.etype = 1;
        assert_eq!(err(&rel.build()), PvhError::WrongType(1));
    }

    #[test]
    fn no_loadable_segments() {
        let notes_only = Elf::x64().notes(&entry_note(CODE_AT as u32)).build();
        assert_eq!(
            err(&notes_only),
            PvhError::Image(ImageError::NoLoadSegments)
        );
        let nothing = Elf::x64().build();
        assert_eq!(err(&nothing), PvhError::Image(ImageError::NoLoadSegments));
    }

    #[test]
    fn not_elf_at_all() {
        assert_eq!(err(&[]), PvhError::Image(ImageError::Empty));
        assert_eq!(err(b"MZ\x90\0"), PvhError::Image(ImageError::NotElf));
        let g = good();
        for cut in [4, 16, 40, 63, 100] {
            assert!(parse(&g[..cut]).is_err(), "cut at {cut}");
        }
    }

    // ---- plan ----

    const MIB: u64 = 1 << 20;

    fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
        a.0 < b.1 && b.0 < a.1
    }

    #[test]
    fn memory_map_shapes() {
        use GuestMemKind::{Ram, Reserved};
        let r = |start, end, kind| GuestMemRange { start, end, kind };
        assert_eq!(
            guest_memory_map(64 * MIB),
            [
                r(0, 0xA_0000, Ram),
                r(0xA_0000, 0x10_0000, Reserved),
                r(0x10_0000, 64 * MIB, Ram),
                r(SPECIAL_PAGES_START, SPECIAL_PAGES_END, Reserved),
            ]
        );
        let special = r(SPECIAL_PAGES_START, SPECIAL_PAGES_END, Reserved);
        assert_eq!(guest_memory_map(0x8_0000), [r(0, 0x8_0000, Ram), special]);
        assert_eq!(
            guest_memory_map(0x10_0000),
            [
                r(0, 0xA_0000, Ram),
                r(0xA_0000, 0x10_0000, Reserved),
                special
            ]
        );
        // RAM up to the special pages (and beyond): none of them.
        assert_eq!(guest_memory_map(SPECIAL_PAGES_START + 4096).len(), 3);
    }

    #[test]
    fn plan_places_everything_after_the_kernel_without_overlap() {
        let bytes = Elf::x64()
            .load(CODE_AT, &code(), 0x2345)
            .load(0x1000, &[0x90; 8], 0x10)
            .notes(&entry_note(CODE_AT as u32))
            .build();
        let k = parse(&bytes).expect("parses");
        let initrd = vec![7u8; 0x1801];
        let other = vec![9u8; 3];
        let modules = [
            ModuleSpec {
                bytes: &initrd,
                cmdline: "initrd args",
            },
            ModuleSpec {
                bytes: &other,
                cmdline: "",
            },
        ];
        let l = plan(&k, 64 * MIB, "console=hvc0", &modules).expect("plans");
        assert_eq!(l.entry, 0x10_0000);
        assert_eq!(l.start_info_gpa, 0x10_3000, "first page after the kernel");
        assert_eq!(l.memmap_gpa, l.start_info_gpa + 56);
        assert_eq!(l.memmap_entries, 4);
        assert_eq!(l.modlist_gpa, l.memmap_gpa + 4 * 24);
        assert_eq!(l.cmdline_gpa, l.modlist_gpa + 2 * 32);
        assert_eq!(l.modlist_gpa % 8, 0);
        let info_end = l.cmdline_gpa + "console=hvc0".len() as u64 + 1;
        assert_eq!(l.modules[0].2, info_end, "module command lines follow");
        assert_eq!(l.modules[1].2, 0, "empty module command line: no address");
        let info = (l.start_info_gpa, info_end + "initrd args".len() as u64 + 1);
        let mut used = vec![(CODE_AT, CODE_AT + 0x2345), (0x1000, 0x1010), info];
        for &(gpa, size, _) in &l.modules {
            assert_eq!(gpa % PAGE_SIZE, 0, "modules are page-aligned");
            used.push((gpa, gpa + size));
        }
        assert_eq!(l.modules[0], (0x10_4000, 0x1801, info_end));
        assert_eq!((l.modules[1].0, l.modules[1].1), (0x10_6000, 3));
        for (i, a) in used.iter().enumerate() {
            for b in &used[i + 1..] {
                assert!(!overlaps(*a, *b), "{a:x?} and {b:x?} overlap");
            }
            assert!(a.1 <= l.highest_used);
        }
        assert_eq!(l.highest_used, 0x10_7000);
        assert_eq!(l.highest_used % PAGE_SIZE, 0);
    }

    #[test]
    fn plan_without_modules_and_with_a_kernel_below_640k() {
        let bytes = Elf::x64()
            .load(0x8000, &code(), 0x100)
            .notes(&entry_note(0x8000))
            .build();
        let k = parse(&bytes).expect("parses");
        let l = plan(&k, 2 * MIB, "", &[]).expect("plans");
        assert_eq!(l.start_info_gpa, 0x10_0000, "never in the legacy hole");
        assert_eq!(l.modlist_gpa, 0);
        assert!(l.modules.is_empty());
        assert_eq!(l.highest_used, 0x10_1000);
    }

    #[test]
    fn plan_refusals() {
        let bytes = good();
        let k = parse(&bytes).expect("parses");
        for mem in [0, 0x10_0000, 64 * MIB + 1] {
            assert_eq!(
                plan(&k, mem, "", &[]),
                Err(PvhError::BadGuestMemSize { mem_bytes: mem })
            );
        }
        assert_eq!(
            plan(&k, 0x10_1000, "", &[]),
            Err(PvhError::SegmentOutsideGuestRam {
                index: 0,
                paddr: CODE_AT,
                end: CODE_AT + 0x2000,
                mem_bytes: 0x10_1000
            })
        );
        let hole = Elf::x64()
            .load(0xF_F000, &code(), 0x2000)
            .notes(&entry_note(0xF_F000))
            .build();
        let hk = parse(&hole).expect("parses");
        let e = plan(&hk, 64 * MIB, "", &[]).expect_err("in the hole");
        assert_eq!(
            e,
            PvhError::SegmentInLegacyHole {
                index: 0,
                paddr: 0xF_F000,
                end: 0x10_1000
            }
        );
        // The kernel fits, the boot information does not.
        assert_eq!(
            plan(&k, 0x10_2000, "", &[]),
            Err(PvhError::DoesNotFit {
                needed_end: 0x10_3000,
                limit: 0x10_2000
            })
        );
        // A module too big for the guest.
        let big = vec![0u8; 2 * MIB as usize];
        let m = [ModuleSpec {
            bytes: &big,
            cmdline: "",
        }];
        assert!(matches!(
            plan(&k, 2 * MIB, "", &m),
            Err(PvhError::DoesNotFit { limit, .. }) if limit == 2 * MIB
        ));
        // Command lines: bounded, no NUL.
        let long = "x".repeat(MAX_CMDLINE);
        assert_eq!(
            plan(&k, 64 * MIB, &long, &[]),
            Err(PvhError::CmdlineTooLong {
                owner: CmdlineOwner::Kernel,
                len: MAX_CMDLINE
            })
        );
        assert!(plan(&k, 64 * MIB, &long[1..], &[]).is_ok());
        let m = [ModuleSpec {
            bytes: &[],
            cmdline: "a\0b",
        }];
        let e = plan(&k, 64 * MIB, "", &m).expect_err("NUL");
        assert_eq!(
            e,
            PvhError::CmdlineHasNul {
                owner: CmdlineOwner::Module(0)
            }
        );
        assert_eq!(
            e.to_string(),
            "the module 0 command line contains a NUL byte"
        );
    }

    #[test]
    fn everything_stays_below_4g_even_with_more_ram() {
        let bytes = Elf::x64()
            .load(0xFFFF_0000, &code(), 0x1_0000)
            .notes(&entry_note(0xFFFF_0000))
            .build();
        let k = parse(&bytes).expect("parses");
        assert_eq!(
            plan(&k, 8 << 30, "", &[]),
            Err(PvhError::DoesNotFit {
                needed_end: 0x1_0000_1000,
                limit: 1 << 32
            })
        );
    }

    // ---- load ----

    /// Guest memory as a vector; records each write.
    struct VecMem {
        ram: Vec<u8>,
        writes: Vec<(u64, usize)>,
    }

    impl VecMem {
        fn new(size: u64, fill: u8) -> VecMem {
            VecMem {
                ram: vec![fill; size as usize],
                writes: Vec::new(),
            }
        }
    }

    impl GuestMemWriter for VecMem {
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), PvhError> {
            let fail = PvhError::GuestWrite {
                gpa,
                len: data.len() as u64,
            };
            let start = usize::try_from(gpa).map_err(|_| fail)?;
            let end = start.checked_add(data.len()).ok_or(fail)?;
            self.ram
                .get_mut(start..end)
                .ok_or(fail)?
                .copy_from_slice(data);
            self.writes.push((gpa, data.len()));
            Ok(())
        }
    }

    fn bytes_at<const N: usize>(m: &[u8], at: u64) -> [u8; N] {
        let at = at as usize;
        m[at..at + N].try_into().expect("N bytes")
    }

    fn cstr_at(m: &[u8], at: u64) -> &str {
        let tail = &m[at as usize..];
        let nul = tail.iter().position(|&b| b == 0).expect("NUL-terminated");
        core::str::from_utf8(&tail[..nul]).expect("UTF-8")
    }

    #[test]
    fn load_writes_exactly_the_right_bytes() {
        const MEM: u64 = 4 * MIB;
        let bytes = Elf::new(false, EM_386)
            .load(CODE_AT, &code(), 0x1800)
            .load(0x2000, b"low", 0x3)
            .notes(&[entry_note(CODE_AT as u32 + 2), os_note()].concat())
            .build();
        let k = parse(&bytes).expect("parses");
        let initrd: Vec<u8> = (0..0x1234u32).map(|i| (i * 7) as u8).collect();
        let modules = [
            ModuleSpec {
                bytes: &initrd,
                cmdline: "rd",
            },
            ModuleSpec {
                bytes: b"x",
                cmdline: "",
            },
        ];
        let cmdline = "root=/dev/ram0 console=hvc0";
        let l = plan(&k, MEM, cmdline, &modules).expect("plans");
        let mut mem = VecMem::new(MEM, 0);
        load(&k, &l, cmdline, &modules, DOM0_FLAGS, 0xE0000, &mut mem).expect("loads");
        let m = &mem.ram;

        // start_info decodes back.
        let si = l.start_info_gpa;
        let info = HvmStartInfo::from_bytes(&bytes_at(m, si));
        assert_eq!(
            info,
            HvmStartInfo {
                magic: 0x336E_C578,
                version: 1,
                flags: SIF_PRIVILEGED | SIF_INITDOMAIN,
                nr_modules: 2,
                modlist_paddr: l.modlist_gpa,
                cmdline_paddr: l.cmdline_gpa,
                rsdp_paddr: 0xE0000,
                memmap_paddr: l.memmap_gpa,
                memmap_entries: 4,
                reserved: 0,
            }
        );
        assert_eq!(cstr_at(m, info.cmdline_paddr), cmdline);

        // Memory map, also as XENMEM_memory_map would give it.
        let want_map = [
            (0, 0xA_0000, 1),
            (0xA_0000, 0x6_0000, 2),
            (0x10_0000, MEM - 0x10_0000, 1),
            (
                SPECIAL_PAGES_START,
                SPECIAL_PAGES_END - SPECIAL_PAGES_START,
                2,
            ),
        ];
        for (i, (addr, size, type_)) in want_map.into_iter().enumerate() {
            let at = info.memmap_paddr + 24 * i as u64;
            assert_eq!(
                HvmMemmapTableEntry::from_bytes(&bytes_at(m, at)),
                HvmMemmapTableEntry {
                    addr,
                    size,
                    type_,
                    reserved: 0
                }
            );
            let e820 = memory_map(MEM)[i];
            assert_eq!((e820.addr, e820.size, e820.type_), (addr, size, type_));
        }

        // Module list and modules.
        for (i, spec) in modules.iter().enumerate() {
            let at = info.modlist_paddr + 32 * i as u64;
            let e = HvmModlistEntry::from_bytes(&bytes_at(m, at));
            assert_eq!((e.paddr, e.size, e.cmdline_paddr), l.modules[i]);
            assert_eq!(e.reserved, 0);
            assert_eq!(
                &m[e.paddr as usize..(e.paddr + e.size) as usize],
                spec.bytes
            );
            if e.cmdline_paddr != 0 {
                assert_eq!(cstr_at(m, e.cmdline_paddr), spec.cmdline);
            }
        }

        // And nothing else: rebuild the expected image independently and compare.
        let mut want = vec![0u8; MEM as usize];
        want[CODE_AT as usize..CODE_AT as usize + 0x100].copy_from_slice(&code());
        want[0x2000..0x2003].copy_from_slice(b"low");
        let mut put =
            |at: u64, b: &[u8]| want[at as usize..at as usize + b.len()].copy_from_slice(b);
        put(si, &m[si as usize..si as usize + 56]);
        put(
            l.memmap_gpa,
            &m[l.memmap_gpa as usize..l.memmap_gpa as usize + 96],
        );
        put(
            l.modlist_gpa,
            &m[l.modlist_gpa as usize..l.modlist_gpa as usize + 64],
        );
        put(l.cmdline_gpa, cmdline.as_bytes());
        put(l.modules[0].2, b"rd");
        put(l.modules[0].0, &initrd);
        put(l.modules[1].0, b"x");
        assert!(
            want == mem.ram,
            "guest memory differs from the expected image"
        );
        // The start info is written last (a guest could be started the moment it is).
        assert_eq!(mem.writes.last(), Some(&(si, 56)));
    }

    #[test]
    fn load_zeroes_segment_tails_even_in_dirty_memory() {
        let bytes = good();
        let k = parse(&bytes).expect("parses");
        let l = plan(&k, 2 * MIB, "", &[]).expect("plans");
        let mut mem = VecMem::new(2 * MIB, 0xAA);
        load(&k, &l, "", &[], 0, 0, &mut mem).expect("loads");
        let seg = &mem.ram[CODE_AT as usize..CODE_AT as usize + 0x2000];
        assert_eq!(&seg[..0x100], &code()[..]);
        assert!(seg[0x100..].iter().all(|&b| b == 0));
        assert_eq!(
            l.start_info_gpa,
            CODE_AT + 0x2000,
            "boot information right after"
        );
        let info_end = (l.cmdline_gpa + 1) as usize;
        assert!(
            mem.ram[info_end..].iter().all(|&b| b == 0xAA),
            "no stray writes"
        );
        let info = HvmStartInfo::from_bytes(&bytes_at(&mem.ram, l.start_info_gpa));
        assert_eq!(info.flags, 0, "flags as given");
        assert_eq!(info.nr_modules, 0);
    }

    #[test]
    fn load_refuses_a_stale_layout_and_reports_write_failures() {
        let bytes = good();
        let k = parse(&bytes).expect("parses");
        let l = plan(&k, 2 * MIB, "a", &[]).expect("plans");
        let mut mem = VecMem::new(2 * MIB, 0);
        let m = [ModuleSpec {
            bytes: b"x",
            cmdline: "",
        }];
        assert_eq!(
            load(&k, &l, "a", &m, 0, 0, &mut mem),
            Err(PvhError::LayoutMismatch)
        );
        let moved = PvhLayout {
            start_info_gpa: CODE_AT,
            ..l.clone()
        };
        assert_eq!(
            load(&k, &moved, "a", &[], 0, 0, &mut mem),
            Err(PvhError::LayoutMismatch)
        );
        let grown = PvhLayout {
            highest_used: l.highest_used + PAGE_SIZE,
            ..l.clone()
        };
        assert_eq!(
            load(&k, &grown, "a", &[], 0, 0, &mut mem),
            Err(PvhError::LayoutMismatch)
        );
        assert!(mem.writes.is_empty(), "nothing written on mismatch");
        // A command line of another length but the same layout is fine.
        assert_eq!(load(&k, &l, "ab", &[], 0, 0, &mut mem), Ok(()));
        // Guest memory smaller than the layout says: the first write that does not
        // fit (the segment's zero tail, from the end of its file bytes) fails.
        let mut small = VecMem::new(CODE_AT + 0x1000, 0);
        assert_eq!(
            load(&k, &l, "a", &[], 0, 0, &mut small),
            Err(PvhError::GuestWrite {
                gpa: CODE_AT + 0x100,
                len: 0x1000
            })
        );
    }

    // ---- property tests ----

    fn good_images() -> Vec<Vec<u8>> {
        vec![
            good(),
            Elf::new(false, EM_386).pvh().build(),
            Elf::x64()
                .load(CODE_AT, &code(), 0x100)
                .notes(&note(b"GNU\0", 1, &[1; 8]))
                .note_section(&entry_note64(CODE_AT))
                .build(),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_elf_looking_bytes(
            tail in prop::collection::vec(any::<u8>(), 0..1024),
            class in 1u8..=2,
        ) {
            let mut bytes = vec![0x7F, b'E', b'L', b'F', class, 1, 1];
            bytes.extend_from_slice(&tail);
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_mutated_images(
            which in 0usize..3,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = good_images().swap_remove(which);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if truncate {
                let len = cut.index(bytes.len());
                bytes.truncate(len);
            }
            if let Ok(k) = parse(&bytes) {
                // Whatever was accepted is consistent, and plans and loads without panic.
                for s in &k.segments {
                    prop_assert!(s.file_bytes(&bytes).is_some());
                    prop_assert!(s.end() <= LIMIT_32BIT);
                }
                let e = u64::from(k.phys32_entry);
                prop_assert!(k.segments.iter().any(|s| s.paddr <= e && e < s.paddr + s.filesz));
                if let Ok(l) = plan(&k, 8 * MIB, "x", &[]) {
                    let mut mem = VecMem::new(8 * MIB, 0);
                    prop_assert_eq!(load(&k, &l, "x", &[], 0, 0, &mut mem), Ok(()));
                }
            }
        }
    }
}
