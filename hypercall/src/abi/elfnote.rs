//! Xen ELF note types (`xen/include/public/elfnote.h`).
//!
//! A Xen-aware kernel carries `PT_NOTE`/`SHT_NOTE` entries whose name is
//! [`XEN_ELFNOTE_NAME`] and whose type is one of these. "Numeric" notes
//! hold a little-endian integer of the note's size; "string" notes a
//! NUL-terminated string. For PVH only `PHYS32_ENTRY` (and optionally
//! `PHYS32_RELOC`) matters.

/// The note name, without the terminating NUL (`namesz` is 4, with it).
pub const XEN_ELFNOTE_NAME: &[u8] = b"Xen";

/// NAME=VALUE pair (string).
pub const XEN_ELFNOTE_INFO: u32 = 0;
/// Virtual entry point (numeric).
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
/// Virtual address of the hypercall page (numeric).
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
/// Virtual address the image is mapped at (numeric, default 0).
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
/// Offset of ELF paddr from the required pseudo-physical address (numeric).
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
/// Xen version the kernel expects (string).
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
/// Guest OS name (string).
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
/// Guest OS version (string).
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
/// Loader type, e.g. "generic" (string).
pub const XEN_ELFNOTE_LOADER: u32 = 8;
/// PAE support: "yes", "no", "bimodal" (string).
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
/// `|`-separated `XENFEAT` names, `!` = required (string).
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
/// Symbol table must be loaded: "yes"/"no" (string).
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
/// Lowest address the hypervisor hole may start at (numeric).
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
/// Mask/value pairs recognising L1 entries with valid MFNs (numeric).
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
/// Cooperative suspend cancellation supported (numeric).
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
/// Virtual address for the initial p2m (numeric).
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
/// The kernel copes with an initrd given by pfn (numeric).
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
/// Supported `XENFEAT` bitmap (numeric).
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
/// 32-bit physical entry point for PVH (numeric).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Up to three u32: alignment, minimum and maximum load address for a
/// relocatable PVH kernel.
pub const XEN_ELFNOTE_PHYS32_RELOC: u32 = 19;
/// Highest note type defined above.
pub const XEN_ELFNOTE_MAX: u32 = XEN_ELFNOTE_PHYS32_RELOC;

/// Crash-dump notes (not for loading).
pub const XEN_ELFNOTE_CRASH_INFO: u32 = 0x100_0001;
pub const XEN_ELFNOTE_CRASH_REGS: u32 = 0x100_0002;
pub const XEN_ELFNOTE_DUMPCORE_NONE: u32 = 0x200_0000;
pub const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x200_0001;
pub const XEN_ELFNOTE_DUMPCORE_XEN_VERSION: u32 = 0x200_0002;
pub const XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: u32 = 0x200_0003;
