//! The PVH start-of-day structure (`xen/include/public/arch-x86/hvm/start_info.h`)
//! and the `SIF_*` flags (`xen/include/public/xen.h`).
//!
//! A PVH guest starts at its `XEN_ELFNOTE_PHYS32_ENTRY` in 32-bit protected
//! mode, paging off, with `ebx` holding the physical address of an
//! [`HvmStartInfo`]. Every address in these structures is guest-physical;
//! 0 means "absent" (nothing is ever loaded at address 0). The layouts are
//! defined in bytes by the header (all fields little-endian, naturally
//! aligned) and are the same for 32- and 64-bit guests.
//!
//! A loader builds these with `to_bytes()` and copies them into guest
//! memory; a guest may read them in place through `#[repr(C)]`.

/// `hvm_start_info.magic`: `"xEn3"` with the top bit of `E` set.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// The structure version keel writes. Version 1 added the memory map.
pub const HVM_START_INFO_VERSION: u32 = 1;

/// Size of a version-0 [`HvmStartInfo`] (up to and including `rsdp_paddr`).
pub const HVM_START_INFO_V0_SIZE: usize = 40;

// `XEN_HVM_MEMMAP_TYPE_*`: the ACPI address range types (ACPI 6.2 §15).
pub const XEN_HVM_MEMMAP_TYPE_RAM: u32 = 1;
pub const XEN_HVM_MEMMAP_TYPE_RESERVED: u32 = 2;
pub const XEN_HVM_MEMMAP_TYPE_ACPI: u32 = 3;
pub const XEN_HVM_MEMMAP_TYPE_NVS: u32 = 4;
pub const XEN_HVM_MEMMAP_TYPE_UNUSABLE: u32 = 5;
pub const XEN_HVM_MEMMAP_TYPE_DISABLED: u32 = 6;
pub const XEN_HVM_MEMMAP_TYPE_PMEM: u32 = 7;

// `SIF_*` flags, in `start_info.flags` (PV) and `hvm_start_info.flags`.
/// The domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// The domain is the initial control domain (dom0).
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// `mod_start` is a multiboot module (PV).
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// `mod_start` is a pfn (PV).
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// The tools understand a virtually mapped p2m (PV).
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;
/// Byte reserved for power-management options.
pub const SIF_PM_MASK: u32 = 0xFF << 8;

abi_struct! {
    /// `struct hvm_start_info` (version 1).
    #[repr(C)]
    pub struct HvmStartInfo(56) {
        /// IN (to the guest): [`XEN_HVM_START_MAGIC_VALUE`].
        pub magic: u32 => 0,
        /// IN: structure version; later versions only append fields.
        pub version: u32 => 4,
        /// IN: `SIF_*`.
        pub flags: u32 => 8,
        /// IN: number of [`HvmModlistEntry`] at `modlist_paddr`.
        pub nr_modules: u32 => 12,
        /// IN: physical address of the module list.
        pub modlist_paddr: u64 => 16,
        /// IN: physical address of the NUL-terminated command line.
        pub cmdline_paddr: u64 => 24,
        /// IN: physical address of the ACPI RSDP.
        pub rsdp_paddr: u64 => 32,
        /// IN (v1): physical address of [`HvmMemmapTableEntry`]s.
        pub memmap_paddr: u64 => 40,
        /// IN (v1): number of memory-map entries; 0 means no map given.
        pub memmap_entries: u32 => 48,
        /// IN (v1): must be zero.
        pub reserved: u32 => 52,
    }
}

abi_struct! {
    /// `struct hvm_modlist_entry`.
    #[repr(C)]
    pub struct HvmModlistEntry(32) {
        /// IN: physical address of the module.
        pub paddr: u64 => 0,
        /// IN: size of the module in bytes.
        pub size: u64 => 8,
        /// IN: physical address of the module's NUL-terminated command line.
        pub cmdline_paddr: u64 => 16,
        /// IN: reserved, zero.
        pub reserved: u64 => 24,
    }
}

abi_struct! {
    /// `struct hvm_memmap_table_entry`.
    #[repr(C)]
    pub struct HvmMemmapTableEntry(24) {
        /// IN: base address.
        pub addr: u64 => 0,
        /// IN: size in bytes.
        pub size: u64 => 8,
        /// IN: `XEN_HVM_MEMMAP_TYPE_*`.
        pub type_: u32 => 16,
        /// IN: must be zero (version 1).
        pub reserved: u32 => 20,
    }
}
