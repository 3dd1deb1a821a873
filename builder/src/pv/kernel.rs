//! Reading a PV kernel: its ELF image and its Xen notes, with libelf's checks.
//!
//! # The image
//!
//! Only ELF64, little-endian, x86-64, `ET_EXEC` or `ET_DYN` (a PV kernel is loaded
//! at its linked addresses whatever its type; a 32-bit kernel would need the compat
//! ABI keel does not have). A program header is loaded when it is `PT_LOAD` *and*
//! has one of `PF_R`, `PF_W`, `PF_X` (libelf `elf_phdr_is_loadable`). Loadable
//! segments must lie inside the file (shared with [`crate::image`]) and must not
//! overlap one another (libelf would let the later one win; keel refuses);
//! segments with `p_memsz == 0` load nothing and are dropped.
//!
//! # Addresses (libelf `elf_xen_addr_calc_check`)
//!
//! Segments are placed by `p_paddr`, not `p_vaddr`: with `pstart..pend` the span
//! of their physical addresses, the kernel occupies virtual addresses
//! `virt_kstart = pstart + VIRT_BASE - PADDR_OFFSET` to
//! `virt_kend = pend + VIRT_BASE - PADDR_OFFSET`, and pseudo-physical frame 0 is
//! `VIRT_BASE`. `VIRT_BASE` defaults to 0 and `PADDR_OFFSET` to 0 (for kernels
//! with notes; the legacy `__xen_guest` default is refused with the section);
//! `PADDR_OFFSET` without `VIRT_BASE` is an error. The entry is `XEN_ELFNOTE_ENTRY`,
//! else the ELF `e_entry`. libelf requires `VIRT_BASE <= virt_kstart`, the entry
//! within `virt_kstart..=virt_kend` and `INIT_P2M` outside `virt_kstart..virt_kend`;
//! keel, as its PVH builder does, wants the entry in the file-backed part of a
//! segment (an entry in a zero tail would run zeroes), `VIRT_BASE` page-aligned
//! (frame 0 starts there), the range `VIRT_BASE..virt_kend` canonical and clear of
//! the hypervisor's range, and the hypercall page page-aligned inside the kernel
//! (Xen's Dom0 builder only wants it in the boot region, where it would overwrite
//! whatever is there). On x86_64 Xen ignores `HV_START_LOW`; since its meaning is
//! "the lowest address the hole may start at", keel refuses a value above
//! `HYPERVISOR_VIRT_START`, which is where its hole is.
//!
//! # Notes (libelf `elf_xen_parse_note`, `elf_xen_note_check`)
//!
//! Read by [`crate::elfnotes`] (`PT_NOTE` segments, else `SHT_NOTE` sections; note
//! segments at file offset 0 skipped, as libelf does). Numeric notes: `ENTRY`,
//! `HYPERCALL_PAGE`, `VIRT_BASE`, `PADDR_OFFSET`, `HV_START_LOW`, `INIT_P2M`,
//! `MOD_START_PFN`, `SUSPEND_CANCEL`, `PHYS32_ENTRY`, 1, 2, 4 or 8 bytes (libelf
//! reads other sizes as 0; keel refuses them). `SUPPORTED_FEATURES` is an array of
//! 32-bit words whose first (Xen has one submap) is or-ed into the supported set.
//! String notes: `XEN_VERSION`, `GUEST_OS`, `GUEST_VERSION`, `LOADER`, `PAE_MODE`,
//! `FEATURES`, `BSD_SYMTAB`. Other types are ignored; a later note of a type
//! replaces an earlier one, except that feature notes accumulate and `PAE_MODE`
//! only changes on "yes" (exactly) or a value containing "bimodal".
//!
//! `FEATURES` is a `|`-separated list of `XENFEAT_*` names without the prefix, one
//! `!` in front meaning required (and also supported). libelf knows seven names
//! (`writable_page_tables`, `writable_descriptor_tables`, `auto_translated_physmap`,
//! `supervisor_mode_kernel`, `pae_pgdir_above_4gb`, `hvm_callback_vector`, `dom0`);
//! an unknown supported name is ignored, an unknown required one is an error. Its
//! token buffer holds 63 bytes: a longer token is read as several. Linux requires
//! `writable_page_tables`, which Xen gives every PV guest (writes to page tables
//! are emulated); [`PvKernel::check_features`] is for the caller to compare the
//! required set with what it offers. Requiring `supervisor_mode_kernel` is refused
//! here (Xen's Dom0 builder panics on it).
//!
//! A kernel with no Xen note is refused ([`PvError::NotXenKernel`], or
//! [`PvError::LegacyXenGuest`] if it has a `__xen_guest` section); one with Xen
//! notes must be for the generic loader (`LOADER` starting "generic") or Linux
//! (`GUEST_OS` starting "linux"), and for Xen 3.0 (`XEN_VERSION` starting
//! "xen-3.0"). A kernel with `PHYS32_ENTRY` but no `ENTRY` is PVH only: libelf would
//! start it at `e_entry` (a PVH-only Linux's native entry, which cannot run PV);
//! keel says so instead ([`PvError::PvhOnly`]).

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use elf::ElfBytes;
use elf::abi::{
    ELFCLASS32, ELFDATA2LSB, ELFDATA2MSB, EM_X86_64, ET_DYN, ET_EXEC, PF_R, PF_W, PF_X, PT_LOAD,
};
use elf::endian::AnyEndian;
use elf::file::Class;

use keel_hypercall::abi::elfnote::{
    XEN_ELFNOTE_BSD_SYMTAB, XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_FEATURES, XEN_ELFNOTE_GUEST_OS,
    XEN_ELFNOTE_GUEST_VERSION, XEN_ELFNOTE_HV_START_LOW, XEN_ELFNOTE_HYPERCALL_PAGE,
    XEN_ELFNOTE_INIT_P2M, XEN_ELFNOTE_LOADER, XEN_ELFNOTE_MOD_START_PFN, XEN_ELFNOTE_PADDR_OFFSET,
    XEN_ELFNOTE_PAE_MODE, XEN_ELFNOTE_PHYS32_ENTRY, XEN_ELFNOTE_SUPPORTED_FEATURES,
    XEN_ELFNOTE_SUSPEND_CANCEL, XEN_ELFNOTE_VIRT_BASE, XEN_ELFNOTE_XEN_VERSION,
};
use keel_hypercall::abi::features::{
    XENFEAT_AUTO_TRANSLATED_PHYSMAP, XENFEAT_DOM0, XENFEAT_HVM_CALLBACK_VECTOR,
    XENFEAT_PAE_PGDIR_ABOVE_4GB, XENFEAT_SUPERVISOR_MODE_KERNEL,
    XENFEAT_WRITABLE_DESCRIPTOR_TABLES, XENFEAT_WRITABLE_PAGE_TABLES, bit,
};
use keel_hypercall::abi::start_info::HYPERVISOR_VIRT_START;

use super::layout::check_va_range;
use super::{Area, PAGE_SIZE, PvError};
use crate::elfnotes::{self, XenNote, ZeroOffsetNotes};
use crate::image::{self, ImageError, Segment};

/// The feature names libelf knows (`elf_xen_feature_names`), with their bits.
const FEATURE_NAMES: [(&str, u32); 7] = [
    ("writable_page_tables", XENFEAT_WRITABLE_PAGE_TABLES),
    (
        "writable_descriptor_tables",
        XENFEAT_WRITABLE_DESCRIPTOR_TABLES,
    ),
    ("auto_translated_physmap", XENFEAT_AUTO_TRANSLATED_PHYSMAP),
    ("supervisor_mode_kernel", XENFEAT_SUPERVISOR_MODE_KERNEL),
    ("pae_pgdir_above_4gb", XENFEAT_PAE_PGDIR_ABOVE_4GB),
    ("hvm_callback_vector", XENFEAT_HVM_CALLBACK_VECTOR),
    ("dom0", XENFEAT_DOM0),
];

/// libelf reads `FEATURES` tokens into a 64-byte buffer, NUL included.
const FEATURE_TOKEN_MAX: usize = 63;

/// The kernel's `XENFEAT_*` bitmaps (submap 0, the only one Xen defines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// What the kernel can use: `FEATURES` names (required ones too) and
    /// `SUPPORTED_FEATURES`.
    pub supported: u32,
    /// What the kernel cannot run without: `FEATURES` names preceded by `!`.
    pub required: u32,
    /// Whether a `SUPPORTED_FEATURES` note was present (Xen then insists on
    /// `XENFEAT_dom0` for a Dom0 kernel).
    pub supported_note: bool,
}

/// `XEN_ELFNOTE_PAE_MODE` (libelf `XEN_PAE_*`; meaningful for 32-bit kernels, but
/// Xen's Dom0 builder lets it change `start_info.magic`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaeMode {
    /// No note, or a value other than below.
    #[default]
    No,
    /// "yes" (`XEN_PAE_EXTCR3`).
    Yes,
    /// A value containing "bimodal" (`XEN_PAE_BIMODAL`).
    Bimodal,
}

/// A checked PV kernel image; only [`parse`] makes one. All addresses are virtual
/// unless named otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvKernel<'a> {
    /// The non-empty loadable segments, in program-header order, pairwise disjoint
    /// in `p_paddr` and inside the file.
    pub segments: Vec<Segment>,
    /// Lowest `p_paddr` and highest `p_paddr + p_memsz` of the segments.
    pub paddr_range: (u64, u64),
    /// `XEN_ELFNOTE_VIRT_BASE` (default 0): the virtual address of pfn 0,
    /// page-aligned.
    pub virt_base: u64,
    /// `XEN_ELFNOTE_PADDR_OFFSET` (default 0).
    pub paddr_offset: u64,
    /// Where the kernel's first byte goes: `paddr_range.0 + virt_base - paddr_offset`.
    pub virt_kstart: u64,
    /// End (exclusive) of the kernel: `paddr_range.1 + virt_base - paddr_offset`.
    pub virt_kend: u64,
    /// Where vCPU 0 starts: `XEN_ELFNOTE_ENTRY`, else `e_entry`.
    pub virt_entry: u64,
    /// Whether `virt_entry` came from `XEN_ELFNOTE_ENTRY`.
    pub entry_note: bool,
    /// `XEN_ELFNOTE_HYPERCALL_PAGE`: a page-aligned address inside the kernel.
    pub hypercall_page: Option<u64>,
    /// `XEN_ELFNOTE_INIT_P2M`: where the kernel wants its p2m list mapped, outside
    /// the kernel (whether it is used depends on the role; see [`crate::pv::layout`]).
    pub p2m_base: Option<u64>,
    /// `XEN_ELFNOTE_HV_START_LOW`, at most `HYPERVISOR_VIRT_START`.
    pub hv_start_low: Option<u64>,
    /// `XEN_ELFNOTE_MOD_START_PFN` non-zero: the initrd need not be mapped.
    pub mod_start_pfn: bool,
    /// `XEN_ELFNOTE_FEATURES` and `XEN_ELFNOTE_SUPPORTED_FEATURES`.
    pub features: Features,
    /// `XEN_ELFNOTE_PAE_MODE`.
    pub pae: PaeMode,
    /// `XEN_ELFNOTE_SUSPEND_CANCEL` non-zero.
    pub suspend_cancel: bool,
    /// `XEN_ELFNOTE_BSD_SYMTAB` "yes". keel does not load the symbol table.
    pub bsd_symtab: bool,
    /// `XEN_ELFNOTE_PHYS32_ENTRY`: the kernel can also boot as PVH.
    pub phys32_entry: Option<u64>,
    /// `XEN_ELFNOTE_GUEST_OS`
    pub guest_os: Option<&'a str>,
    /// `XEN_ELFNOTE_GUEST_VERSION`
    pub guest_version: Option<&'a str>,
    /// `XEN_ELFNOTE_XEN_VERSION`
    pub xen_version: Option<&'a str>,
    /// `XEN_ELFNOTE_LOADER`
    pub loader: Option<&'a str>,
    bytes: &'a [u8],
}

impl<'a> PvKernel<'a> {
    /// The whole image the kernel was parsed from.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The pseudo-physical address (offset from `virt_base`) where a segment's
    /// first byte goes. `parse` checked that it is below `virt_kend - virt_base`.
    pub fn segment_offset(&self, s: &Segment) -> u64 {
        // Saturating: the fields are public, and a caller may have changed them.
        let kernel = self.virt_kstart.saturating_sub(self.virt_base);
        kernel.saturating_add(s.paddr.saturating_sub(self.paddr_range.0))
    }

    /// Whether the kernel's required features are all in `offered` (`XENFEAT_*`
    /// bits of submap 0): the hypervisor's half of libxg's `xc_dom_parse_image`
    /// check.
    pub fn check_features(&self, offered: u32) -> Result<(), PvError> {
        let missing = self.features.required & !offered;
        if missing == 0 {
            Ok(())
        } else {
            Err(PvError::UnsupportedFeatures { missing })
        }
    }
}

/// Xen notes found so far.
#[derive(Default)]
struct PvNotes<'a> {
    entry: Option<u64>,
    hypercall_page: Option<u64>,
    virt_base: Option<u64>,
    paddr_offset: Option<u64>,
    hv_start_low: Option<u64>,
    p2m_base: Option<u64>,
    mod_start_pfn: bool,
    suspend_cancel: bool,
    phys32_entry: Option<u64>,
    features: Features,
    pae: PaeMode,
    bsd_symtab: bool,
    guest_os: Option<&'a str>,
    guest_version: Option<&'a str>,
    xen_version: Option<&'a str>,
    loader: Option<&'a str>,
}

fn numeric(note: &XenNote<'_>) -> Result<u64, PvError> {
    elfnotes::note_numeric(note.desc).ok_or(PvError::BadNumericNote {
        kind: note.kind,
        descsz: note.desc.len(),
    })
}

fn string<'a>(note: &XenNote<'a>) -> Result<&'a str, PvError> {
    elfnotes::note_str(note.desc).ok_or(PvError::BadNoteString { kind: note.kind })
}

impl<'a> PvNotes<'a> {
    fn take(&mut self, note: XenNote<'a>) -> Result<(), PvError> {
        match note.kind {
            XEN_ELFNOTE_ENTRY => self.entry = Some(numeric(&note)?),
            XEN_ELFNOTE_HYPERCALL_PAGE => self.hypercall_page = Some(numeric(&note)?),
            XEN_ELFNOTE_VIRT_BASE => self.virt_base = Some(numeric(&note)?),
            XEN_ELFNOTE_PADDR_OFFSET => self.paddr_offset = Some(numeric(&note)?),
            XEN_ELFNOTE_HV_START_LOW => self.hv_start_low = Some(numeric(&note)?),
            XEN_ELFNOTE_INIT_P2M => self.p2m_base = Some(numeric(&note)?),
            XEN_ELFNOTE_MOD_START_PFN => self.mod_start_pfn = numeric(&note)? != 0,
            XEN_ELFNOTE_SUSPEND_CANCEL => self.suspend_cancel = numeric(&note)? != 0,
            XEN_ELFNOTE_PHYS32_ENTRY => self.phys32_entry = Some(numeric(&note)?),
            XEN_ELFNOTE_SUPPORTED_FEATURES => {
                let descsz = note.desc.len();
                match *note.desc {
                    [a, b, c, d, ..] if descsz.is_multiple_of(4) => {
                        self.features.supported |= u32::from_le_bytes([a, b, c, d]);
                        self.features.supported_note = true;
                    }
                    _ => return Err(PvError::BadSupportedFeatures { descsz }),
                }
            }
            XEN_ELFNOTE_FEATURES => {
                let (supported, required) = parse_features(string(&note)?)?;
                self.features.supported |= supported;
                self.features.required |= required;
            }
            XEN_ELFNOTE_PAE_MODE => {
                let s = string(&note)?;
                if s == "yes" {
                    self.pae = PaeMode::Yes;
                }
                if s.contains("bimodal") {
                    self.pae = PaeMode::Bimodal;
                }
            }
            XEN_ELFNOTE_BSD_SYMTAB => self.bsd_symtab = string(&note)? == "yes",
            XEN_ELFNOTE_GUEST_OS => self.guest_os = Some(string(&note)?),
            XEN_ELFNOTE_GUEST_VERSION => self.guest_version = Some(string(&note)?),
            XEN_ELFNOTE_XEN_VERSION => self.xen_version = Some(string(&note)?),
            XEN_ELFNOTE_LOADER => self.loader = Some(string(&note)?),
            _ => {}
        }
        Ok(())
    }
}

/// Reads a `XEN_ELFNOTE_FEATURES` string into (supported, required) bitmaps, with
/// libelf's rules (`elf_xen_parse_features`; see the module docs).
pub fn parse_features(s: &str) -> Result<(u32, u32), PvError> {
    let b = s.as_bytes();
    let (mut supported, mut required) = (0u32, 0u32);
    let mut pos = 0usize;
    while pos < b.len() {
        let rest = &b[pos..];
        let mut len = 0usize;
        let consumed = loop {
            if len >= FEATURE_TOKEN_MAX || len == rest.len() {
                break len;
            }
            if rest[len] == b'|' {
                break len + 1;
            }
            len += 1;
        };
        pos += consumed;
        let token = &rest[..len];
        let (name, is_required) = match token.split_first() {
            Some((b'!', name)) => (name, true),
            _ => (token, false),
        };
        let known = FEATURE_NAMES
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|&(_, feat)| bit(feat));
        match (known, is_required) {
            (Some(mask), true) => {
                supported |= mask;
                required |= mask;
            }
            (Some(mask), false) => supported |= mask,
            (None, true) => {
                return Err(PvError::UnknownRequiredFeature {
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            (None, false) => {}
        }
    }
    Ok((supported, required))
}

/// Rejects what is not a little-endian ELF64 before the `elf` crate reads it (it
/// would parse a big-endian header and fail later with a less helpful message).
fn open(bytes: &[u8]) -> Result<ElfBytes<'_, AnyEndian>, PvError> {
    if bytes.starts_with(b"\x7fELF") {
        if bytes.get(elf::abi::EI_DATA) == Some(&ELFDATA2MSB) {
            return Err(PvError::BigEndian);
        }
        if bytes.get(elf::abi::EI_CLASS) == Some(&ELFCLASS32) {
            return Err(PvError::Elf32);
        }
    }
    let file = image::open(bytes)?;
    if bytes.get(elf::abi::EI_DATA) != Some(&ELFDATA2LSB) {
        return Err(PvError::BigEndian);
    }
    if file.ehdr.class != Class::ELF64 {
        return Err(PvError::Elf32);
    }
    Ok(file)
}

fn has_xen_guest_section(file: &ElfBytes<'_, AnyEndian>) -> bool {
    // A malformed section name table only loses this better message: the image
    // is refused either way.
    matches!(file.section_header_by_name("__xen_guest"), Ok(Some(_)))
}

/// What a kernel image can boot as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenKernelKind {
    /// A PV entry only.
    PvOnly,
    /// A PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`) only.
    PvhOnly,
    /// Both.
    Both,
    /// Neither: not a Xen kernel.
    Neither,
}

impl XenKernelKind {
    /// Whether the kernel can boot PV.
    pub fn pv(self) -> bool {
        matches!(self, XenKernelKind::PvOnly | XenKernelKind::Both)
    }

    /// Whether the kernel can boot PVH.
    pub fn pvh(self) -> bool {
        matches!(self, XenKernelKind::PvhOnly | XenKernelKind::Both)
    }

    /// `self`, or [`PvError::NotXenKernel`] for [`XenKernelKind::Neither`].
    pub fn require_xen(self) -> Result<Self, PvError> {
        match self {
            XenKernelKind::Neither => Err(PvError::NotXenKernel),
            k => Ok(k),
        }
    }
}

/// Says whether the ELF image `bytes` is a PV kernel, a PVH kernel, both or
/// neither, from its Xen notes alone (the full checks are [`parse`]'s and
/// [`crate::pvh::parse`]'s). PVH: it has `XEN_ELFNOTE_PHYS32_ENTRY`. PV: it has
/// `XEN_ELFNOTE_ENTRY`, or Xen notes without `PHYS32_ENTRY` (libelf then enters at
/// `e_entry`), or a legacy `__xen_guest` section (which `parse` refuses with its
/// own message). Errors only for what is not a little-endian ELF or has malformed
/// notes.
pub fn classify(bytes: &[u8]) -> Result<XenKernelKind, PvError> {
    if bytes.starts_with(b"\x7fELF") && bytes.get(elf::abi::EI_DATA) == Some(&ELFDATA2MSB) {
        return Err(PvError::BigEndian);
    }
    let file = image::open(bytes)?;
    let (mut entry, mut phys32) = (false, false);
    let count = elfnotes::for_each_xen_note(bytes, &file, ZeroOffsetNotes::Skip, |n| {
        match n.kind {
            XEN_ELFNOTE_ENTRY => entry = true,
            XEN_ELFNOTE_PHYS32_ENTRY => phys32 = true,
            _ => {}
        }
        Ok::<(), PvError>(())
    })?;
    let pv = entry || (count > 0 && !phys32) || (count == 0 && has_xen_guest_section(&file));
    Ok(match (pv, phys32) {
        (true, true) => XenKernelKind::Both,
        (true, false) => XenKernelKind::PvOnly,
        (false, true) => XenKernelKind::PvhOnly,
        (false, false) => XenKernelKind::Neither,
    })
}

/// `base + offset - sub`, if it is an address.
fn offset_addr(base: u64, offset: u64, sub: u64) -> Option<u64> {
    u64::try_from(i128::from(base) + i128::from(offset) - i128::from(sub)).ok()
}

/// Checks that `bytes` is a 64-bit PV kernel keel can load and reads what the
/// builder needs from it (see the module docs). Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<PvKernel<'_>, PvError> {
    let file = open(bytes)?;
    let ehdr = file.ehdr;
    if ehdr.e_machine != EM_X86_64 {
        return Err(PvError::WrongMachine(ehdr.e_machine));
    }
    if ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN {
        return Err(PvError::WrongType(ehdr.e_type));
    }

    let phdrs = file.segments().ok_or(ImageError::NoLoadSegments)?;
    let mut segments = Vec::new();
    for (i, ph) in phdrs.iter().enumerate() {
        if ph.p_type != PT_LOAD || ph.p_flags & (PF_R | PF_W | PF_X) == 0 {
            continue;
        }
        let seg = image::check_load_segment(i, &ph, bytes.len())?;
        if seg.memsz > 0 {
            segments.push(seg);
        }
    }
    let mut by_addr: Vec<&Segment> = segments.iter().collect();
    by_addr.sort_unstable_by_key(|s| s.paddr);
    for pair in by_addr.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.end() > b.paddr {
            return Err(PvError::SegmentsOverlap {
                first: a.index,
                first_start: a.paddr,
                first_end: a.end(),
                second: b.index,
                second_start: b.paddr,
                second_end: b.end(),
            });
        }
    }
    let (Some(first), Some(last)) = (by_addr.first(), by_addr.last()) else {
        return Err(ImageError::NoLoadSegments.into());
    };
    let (pstart, pend) = (first.paddr, last.end());

    let mut notes = PvNotes::default();
    let count =
        elfnotes::for_each_xen_note(bytes, &file, ZeroOffsetNotes::Skip, |n| notes.take(n))?;
    if count == 0 {
        return Err(if has_xen_guest_section(&file) {
            PvError::LegacyXenGuest
        } else {
            PvError::NotXenKernel
        });
    }
    if notes.entry.is_none() && notes.phys32_entry.is_some() {
        return Err(PvError::PvhOnly);
    }
    let generic = notes.loader.is_some_and(|l| l.starts_with("generic"));
    let linux = notes.guest_os.is_some_and(|o| o.starts_with("linux"));
    if !generic && !linux {
        return Err(PvError::WrongLoader {
            loader: notes.loader.map(String::from),
            guest_os: notes.guest_os.map(String::from),
        });
    }
    if !notes.xen_version.is_some_and(|v| v.starts_with("xen-3.0")) {
        return Err(PvError::WrongXenVersion {
            found: notes.xen_version.map(String::from),
        });
    }
    if notes.features.required & bit(XENFEAT_SUPERVISOR_MODE_KERNEL) != 0 {
        return Err(PvError::SupervisorModeKernel);
    }
    if let Some(low) = notes.hv_start_low
        && low > HYPERVISOR_VIRT_START
    {
        return Err(PvError::HvStartLowTooHigh(low));
    }

    if notes.paddr_offset.is_some() && notes.virt_base.is_none() {
        return Err(PvError::PaddrOffsetWithoutVirtBase);
    }
    let virt_base = notes.virt_base.unwrap_or(0);
    let paddr_offset = notes.paddr_offset.unwrap_or(0);
    if !virt_base.is_multiple_of(PAGE_SIZE) {
        return Err(PvError::VirtBaseMisaligned(virt_base));
    }
    let overflow = PvError::VirtOverflow {
        pstart,
        pend,
        virt_base,
        paddr_offset,
    };
    let kstart = offset_addr(pstart, virt_base, paddr_offset).ok_or(overflow.clone())?;
    let kend = offset_addr(pend, virt_base, paddr_offset).ok_or(overflow)?;
    if virt_base > kstart {
        return Err(PvError::VirtBaseAboveKernel { virt_base, kstart });
    }
    check_va_range(Area::Kernel, virt_base, kend)?;

    let virt_entry = notes.entry.unwrap_or(ehdr.e_entry);
    // Segment i covers virtual kstart + (paddr - pstart) onwards; all below kend.
    let entry_ok = segments.iter().any(|s| {
        let va = kstart + (s.paddr - pstart);
        va <= virt_entry && virt_entry - va < s.filesz
    });
    if !entry_ok {
        return Err(PvError::EntryOutsideKernel { entry: virt_entry });
    }
    if let Some(p2m_base) = notes.p2m_base
        && (kstart..kend).contains(&p2m_base)
    {
        return Err(PvError::P2mBaseInKernel {
            p2m_base,
            kstart,
            kend,
        });
    }
    if let Some(va) = notes.hypercall_page
        && (!va.is_multiple_of(PAGE_SIZE) || va < kstart || va >= kend)
    {
        return Err(PvError::BadHypercallPage { va, kstart, kend });
    }

    Ok(PvKernel {
        segments,
        paddr_range: (pstart, pend),
        virt_base,
        paddr_offset,
        virt_kstart: kstart,
        virt_kend: kend,
        virt_entry,
        entry_note: notes.entry.is_some(),
        hypercall_page: notes.hypercall_page,
        p2m_base: notes.p2m_base,
        hv_start_low: notes.hv_start_low,
        mod_start_pfn: notes.mod_start_pfn,
        features: notes.features,
        pae: notes.pae,
        suspend_cancel: notes.suspend_cancel,
        bsd_symtab: notes.bsd_symtab,
        phys32_entry: notes.phys32_entry,
        guest_os: notes.guest_os,
        guest_version: notes.guest_version,
        xen_version: notes.xen_version,
        loader: notes.loader,
        bytes,
    })
}
