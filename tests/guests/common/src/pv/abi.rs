//! The x86_64 PV start-of-day ABI the guest reads: `struct start_info`
//! (`xen/include/public/xen.h`), the flat selectors and the hypervisor's hole
//! (`xen/include/public/arch-x86/xen-x86_64.h`).
//!
//! Transcribed here because `keel_hypercall::abi` (the one home of the ABI, shared
//! with keel) has only the PVH start-of-day structure at the time of writing; once it
//! gains `struct start_info` and these constants, this module should go and the
//! guest import them from there. Offsets are for the 64-bit layout, where
//! `unsigned long` and `xen_pfn_t` are 8 bytes and the C compiler pads each
//! `uint32_t` that precedes an 8-byte member to 8.

/// `struct start_info` (64-bit): byte offsets of its fields, and its size.
pub mod start_info {
    /// `char magic[32]`: `"xen-<version>-<platform>"`, NUL-padded.
    pub const MAGIC: usize = 0;
    /// Bytes of `magic`.
    pub const MAGIC_LEN: usize = 32;
    /// `unsigned long nr_pages`: pages allocated to the domain.
    pub const NR_PAGES: usize = 32;
    /// `unsigned long shared_info`: *machine* address of the shared info page.
    pub const SHARED_INFO: usize = 40;
    /// `uint32_t flags`: `SIF_*` (then 4 bytes of padding).
    pub const FLAGS: usize = 48;
    /// `xen_pfn_t store_mfn`: machine frame of the xenstore ring (0 for Dom0).
    pub const STORE_MFN: usize = 56;
    /// `uint32_t store_evtchn` (then 4 bytes of padding).
    pub const STORE_EVTCHN: usize = 64;
    /// The `console` union, 16 bytes. Dom0's view: `uint32_t info_off`, ...
    pub const CONSOLE_DOM0_INFO_OFF: usize = 72;
    /// ... `uint32_t info_size` (of a `dom0_vga_console_info` in the same page).
    pub const CONSOLE_DOM0_INFO_SIZE: usize = 76;
    /// A domU's view: `xen_pfn_t mfn` of its console ring, ...
    pub const CONSOLE_DOMU_MFN: usize = 72;
    /// ... and `uint32_t evtchn`.
    pub const CONSOLE_DOMU_EVTCHN: usize = 80;
    /// `unsigned long pt_base`: *virtual* address of the top-level page table.
    pub const PT_BASE: usize = 88;
    /// `unsigned long nr_pt_frames`: bootstrap page-table frames from `pt_base`.
    pub const NR_PT_FRAMES: usize = 96;
    /// `unsigned long mfn_list`: *virtual* address of the p2m list.
    pub const MFN_LIST: usize = 104;
    /// `unsigned long mod_start`: virtual address (or pfn, with
    /// `SIF_MOD_START_PFN`) of the initial ramdisk.
    pub const MOD_START: usize = 112;
    /// `unsigned long mod_len`: its size in bytes.
    pub const MOD_LEN: usize = 120;
    /// `int8_t cmd_line[MAX_GUEST_CMDLINE]`.
    pub const CMD_LINE: usize = 128;
    /// `MAX_GUEST_CMDLINE`.
    pub const CMD_LINE_LEN: usize = 1024;
    /// `unsigned long first_p2m_pfn`: first pfn of a p2m placed by
    /// `XEN_ELFNOTE_INIT_P2M` (Xen's Dom0 builder writes the domain's page count
    /// here when there is none).
    pub const FIRST_P2M_PFN: usize = 1152;
    /// `unsigned long nr_p2m_frames`: frames of that p2m (0 when there is none).
    pub const NR_P2M_FRAMES: usize = 1160;
    /// `sizeof(struct start_info)`.
    pub const SIZE: usize = 1168;
}

/// The start of `start_info.magic` for a 64-bit PV guest. Xen's Dom0 builder
/// appends `p` when the kernel's `XEN_ELFNOTE_PAE_MODE` note says it does PAE (every
/// 64-bit kernel does; pv64 carries the note), libxg's domain builder does not.
pub const MAGIC_X86_64: &[u8] = b"xen-3.0-x86_64";

/// `FLAT_KERNEL_CS` (= `FLAT_RING3_CS64`, GDT index 262, RPL 3): a 64-bit PV
/// kernel runs in ring 3 on Xen's own descriptors.
pub const FLAT_KERNEL_CS: u16 = 0xe033;
/// `FLAT_KERNEL_SS` (= `FLAT_RING3_SS64`, GDT index 261, RPL 3).
pub const FLAT_KERNEL_SS: u16 = 0xe02b;
/// `FLAT_KERNEL_DS` (= `FLAT_RING3_DS64`): the null selector, also what ES, FS
/// and GS hold at entry.
pub const FLAT_KERNEL_DS: u16 = 0;

/// `HYPERVISOR_VIRT_START`: the hypervisor's hole, L4 slots 256 to 271, which a
/// 64-bit PV guest may read partly (the machine-to-phys table) but never map.
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// `HYPERVISOR_VIRT_END` (exclusive).
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;

/// A frame number no page has (Xen's `INVALID_MFN`, all ones): never a valid p2m
/// entry.
pub const INVALID_MFN: u64 = u64::MAX;
