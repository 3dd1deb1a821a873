//! The PVH start-of-day structure (`xen/include/public/arch-x86/hvm/start_info.h`),
//! the x86_64 PV one (`struct start_info`, `xen/include/public/xen.h`), the `SIF_*`
//! flags (`xen.h`), and what else an x86_64 PV vCPU is started with: its flat
//! selectors and the hypervisor's reserved hole (`arch-x86/xen-x86_64.h`).
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

// ---- x86_64 PV ----
//
// A PV guest starts at its `XEN_ELFNOTE_ENTRY` in 64-bit mode, on page tables the
// builder made, with `rsi` holding the *virtual* address of a [`StartInfo`]
// (`xen.h`, "Start-of-day memory layout"). Unlike the PVH structure above, its
// addresses are virtual, page numbers are machine frames (`store_mfn`) or, where
// the flags say so, pseudo-physical frames (`mod_start` with `SIF_MOD_START_PFN`).

/// The `start_info.magic` of a 64-bit PV guest: `"xen-<version>-<platform>"`,
/// NUL-padded to 32 bytes. Xen's Dom0 builder appends `p` when the kernel's
/// `XEN_ELFNOTE_PAE_MODE` says it does PAE (`"xen-3.0-x86_64p"`); libxg does not.
pub const START_INFO_MAGIC_X86_64: &[u8] = b"xen-3.0-x86_64";

/// Bytes of `start_info.cmd_line`, including the terminating NUL.
pub const MAX_GUEST_CMDLINE: usize = 1024;

abi_struct! {
    /// `struct start_info`, 64-bit layout (`xen_pfn_t` and `unsigned long` are 8
    /// bytes). The first part is refilled on resume; from `pt_base` on it is only
    /// meaningful at first boot.
    #[repr(C)]
    pub struct StartInfo(1168) {
        /// IN (to the guest): "xen-<version>-<platform>", NUL-padded
        /// ([`START_INFO_MAGIC_X86_64`]).
        pub magic: [u8; 32] => 0,
        /// IN: pages allocated to the domain (the p2m list's length).
        pub nr_pages: u64 => 32,
        /// IN: *machine* address of the domain's `shared_info` page.
        pub shared_info: u64 => 40,
        /// IN: `SIF_*`.
        pub flags: u32 => 48,
        /// Padding (C alignment of the next field); zero.
        pub pad0: u32 => 52,
        /// IN: machine frame of the xenstore ring (domU; 0 for Dom0).
        pub store_mfn: u64 => 56,
        /// IN: event channel of the xenstore ring.
        pub store_evtchn: u32 => 64,
        /// Padding; zero.
        pub pad1: u32 => 68,
        /// IN: the `console` union: [`ConsoleDomU`] for a domU, [`ConsoleDom0`]
        /// for Dom0.
        pub console: [u8; 16] => 72,
        /// IN: *virtual* address of the top-level page table (the L4, also CR3).
        pub pt_base: u64 => 88,
        /// IN: number of bootstrap page-table frames, from `pt_base` on.
        pub nr_pt_frames: u64 => 96,
        /// IN: *virtual* address of the p2m list (`nr_pages` machine frame numbers).
        pub mfn_list: u64 => 104,
        /// IN: *virtual* address of the initial ramdisk, or its first
        /// pseudo-physical frame when `flags` has [`SIF_MOD_START_PFN`]; 0 if none.
        pub mod_start: u64 => 112,
        /// IN: size of the initial ramdisk in bytes; 0 if none.
        pub mod_len: u64 => 120,
        /// IN: the kernel's command line, NUL-terminated.
        pub cmd_line: [u8; MAX_GUEST_CMDLINE] => 128,
        /// IN: first pseudo-physical frame of the p2m list and the page tables
        /// mapping it, when it lies outside the bootstrap region
        /// (`XEN_ELFNOTE_INIT_P2M`); 0 otherwise.
        pub first_p2m_pfn: u64 => 1152,
        /// IN: number of those frames; 0 when the p2m list is in the region.
        pub nr_p2m_frames: u64 => 1160,
    }
}

abi_struct! {
    /// `start_info.console.domU`: the domain's PV console ring.
    #[repr(C)]
    pub struct ConsoleDomU(16) {
        /// IN: machine frame of the console ring.
        pub mfn: u64 => 0,
        /// IN: event channel of the console ring.
        pub evtchn: u32 => 8,
        /// Padding; zero.
        pub pad: u32 => 12,
    }
}

abi_struct! {
    /// `start_info.console.dom0`: where Dom0's `dom0_vga_console_info` is, as an
    /// offset from the start of the start info page (0 and 0: none).
    #[repr(C)]
    pub struct ConsoleDom0(16) {
        /// IN: offset of the console information from the start info.
        pub info_off: u32 => 0,
        /// IN: its size.
        pub info_size: u32 => 4,
        /// The rest of the union (the domU view's `evtchn` and padding); zero.
        pub pad: u64 => 8,
    }
}

// Selectors a 64-bit PV guest is started with (`arch-x86/xen-x86_64.h`): its kernel
// runs in ring 3, on descriptors Xen keeps in its own part of the GDT.
/// `FLAT_KERNEL_CS` (= `FLAT_RING3_CS64`, GDT index 7174, RPL 3).
pub const FLAT_KERNEL_CS: u16 = 0xe033;
/// `FLAT_KERNEL_SS` (= `FLAT_RING3_SS64`, GDT index 7173, RPL 3).
pub const FLAT_KERNEL_SS: u16 = 0xe02b;
/// `FLAT_KERNEL_DS` (= `FLAT_RING3_DS64`): the null selector.
pub const FLAT_KERNEL_DS: u16 = 0;

/// Start of the virtual range a 64-bit PV guest may not map: the hypervisor's
/// (`HYPERVISOR_VIRT_START`, L4 slot 256).
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of that range (`HYPERVISOR_VIRT_END`, the start of L4 slot 272).
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
/// Start of the read-only machine-to-phys table inside the hole
/// (`MACH2PHYS_VIRT_START`).
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the machine-to-phys table (`MACH2PHYS_VIRT_END`).
pub const MACH2PHYS_VIRT_END: u64 = 0xFFFF_8040_0000_0000;

// The machine-to-phys table lies inside the hole.
const _: () = assert!(
    HYPERVISOR_VIRT_START <= MACH2PHYS_VIRT_START && MACH2PHYS_VIRT_END <= HYPERVISOR_VIRT_END
);

#[cfg(test)]
mod pv_tests {
    use super::*;

    #[test]
    fn start_info_bytes() {
        let mut magic = [0u8; 32];
        magic[..START_INFO_MAGIC_X86_64.len()].copy_from_slice(START_INFO_MAGIC_X86_64);
        let mut cmd_line = [0u8; MAX_GUEST_CMDLINE];
        cmd_line[..5].copy_from_slice(b"quiet");
        let console = ConsoleDomU {
            mfn: 0x1234_5678,
            evtchn: 2,
            pad: 0,
        };
        let si = StartInfo {
            magic,
            nr_pages: 0x4_0000,
            shared_info: 0xABC_D000,
            flags: SIF_MOD_START_PFN,
            store_mfn: 0x777,
            store_evtchn: 1,
            console: console.to_bytes(),
            pt_base: 0xFFFF_FFFF_8200_0000,
            nr_pt_frames: 6,
            mfn_list: 0x80_0000_0000,
            mod_start: 0x2000,
            mod_len: 0x12_3456,
            cmd_line,
            first_p2m_pfn: 0x2100,
            nr_p2m_frames: 0x203,
            ..StartInfo::default()
        };
        let b = si.to_bytes();
        assert_eq!(&b[..15], b"xen-3.0-x86_64\0");
        assert_eq!(b[32..40], 0x4_0000u64.to_le_bytes());
        assert_eq!(b[48..52], 8u32.to_le_bytes());
        assert_eq!(b[56..64], 0x777u64.to_le_bytes());
        assert_eq!(b[72..80], 0x1234_5678u64.to_le_bytes(), "console.domU.mfn");
        assert_eq!(b[80..84], 2u32.to_le_bytes(), "console.domU.evtchn");
        assert_eq!(b[88..96], 0xFFFF_FFFF_8200_0000u64.to_le_bytes());
        assert_eq!(b[104..112], 0x80_0000_0000u64.to_le_bytes());
        assert_eq!(&b[128..134], b"quiet\0");
        assert_eq!(b[1152..1160], 0x2100u64.to_le_bytes());
        assert_eq!(b[1160..1168], 0x203u64.to_le_bytes());
        assert_eq!(StartInfo::from_bytes(&b), si);
        assert_eq!(ConsoleDomU::from_bytes(&si.console), console);

        let dom0 = ConsoleDom0 {
            info_off: 1168,
            info_size: 40,
            pad: 0,
        };
        assert_eq!(dom0.to_bytes()[..8], [0x90, 4, 0, 0, 40, 0, 0, 0]);
    }

    #[test]
    fn the_hole_is_l4_slots_256_to_271() {
        let slot = |va: u64| (va >> 39) & 511;
        assert_eq!(slot(HYPERVISOR_VIRT_START), 256);
        assert_eq!(slot(HYPERVISOR_VIRT_END - 1), 271);
        assert_eq!(slot(HYPERVISOR_VIRT_END), 272);
        assert_eq!(FLAT_KERNEL_CS & 3, 3, "the PV kernel runs in ring 3");
        assert_eq!(FLAT_KERNEL_SS & 3, 3);
    }
}
