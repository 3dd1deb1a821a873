//! `HYPERVISOR_memory_op` commands and arguments
//! (`xen/include/public/memory.h`; E820 from `xen/arch/x86/include/asm/e820.h`).
//!
//! `memory_op(unsigned long cmd, void *arg)`. Only the low
//! [`MEMOP_EXTENT_SHIFT`] bits of `cmd` select the operation
//! ([`MEMOP_CMD_MASK`]); the bits above are a continuation's start extent
//! (`xen/include/xen/hypercall.h`). The `XENMEMF_*` flags live inside
//! `xen_memory_reservation.mem_flags`, not in `cmd`. A 32-bit caller's
//! `cmd` is an `unsigned int`.

/// Bits of `cmd` above this are the start extent of a continued call.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// Bits of `cmd` naming the operation.
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;

pub const XENMEM_INCREASE_RESERVATION: u32 = 0;
pub const XENMEM_DECREASE_RESERVATION: u32 = 1;
pub const XENMEM_MAXIMUM_RAM_PAGE: u32 = 2;
pub const XENMEM_CURRENT_RESERVATION: u32 = 3;
pub const XENMEM_MAXIMUM_RESERVATION: u32 = 4;
pub const XENMEM_MACHPHYS_MFN_LIST: u32 = 5;
pub const XENMEM_POPULATE_PHYSMAP: u32 = 6;
/// Place a frame of some space (see `XENMAPSPACE_*`) at a guest pfn;
/// `arg` is a [`XenAddToPhysmap`] / [`XenAddToPhysmapCompat`].
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
// 8 was XENMEM_translate_gpfn_list, removed.
/// The domain's pseudo-physical memory map; `arg` is a [`XenMemoryMap`] /
/// [`XenMemoryMapCompat`], the buffer holds [`E820Entry`]s.
pub const XENMEM_MEMORY_MAP: u32 = 9;
pub const XENMEM_MACHINE_MEMORY_MAP: u32 = 10;
pub const XENMEM_EXCHANGE: u32 = 11;
pub const XENMEM_MACHPHYS_MAPPING: u32 = 12;
pub const XENMEM_SET_MEMORY_MAP: u32 = 13;
pub const XENMEM_MAXIMUM_GPFN: u32 = 14;
/// `arg` is a [`XenRemoveFromPhysmap`] / [`XenRemoveFromPhysmapCompat`].
pub const XENMEM_REMOVE_FROM_PHYSMAP: u32 = 15;
pub const XENMEM_SET_POD_TARGET: u32 = 16;
pub const XENMEM_GET_POD_TARGET: u32 = 17;
pub const XENMEM_GET_SHARING_FREED_PAGES: u32 = 18;
pub const XENMEM_GET_SHARING_SHARED_PAGES: u32 = 19;
pub const XENMEM_PAGING_OP: u32 = 20;
pub const XENMEM_ACCESS_OP: u32 = 21;
pub const XENMEM_SHARING_OP: u32 = 22;
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u32 = 23;
pub const XENMEM_CLAIM_PAGES: u32 = 24;
pub const XENMEM_MACHPHYS_COMPAT_MFN_LIST: u32 = 25;
pub const XENMEM_GET_VNUMAINFO: u32 = 26;
pub const XENMEM_RESERVED_DEVICE_MEMORY_MAP: u32 = 27;
pub const XENMEM_ACQUIRE_RESOURCE: u32 = 28;

// Flags of `xen_memory_reservation.mem_flags`.
/// Populate with populate-on-demand entries.
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// Allocate only from the node `XENMEMF_node` names.
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// The node named is a virtual (vNUMA) node.
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// `XENMEMF_get_address_bits`: bits 7:0 of `mem_flags`, the most address
/// bits the allocated memory may use (0: no limit).
#[must_use]
pub const fn xenmemf_get_address_bits(mem_flags: u32) -> u32 {
    mem_flags & 0xff
}

/// `XENMEMF_node(n)`: the `mem_flags` bits asking for node `n`.
#[must_use]
pub const fn xenmemf_node(node: u32) -> u32 {
    node.wrapping_add(1) << 8
}

/// `XENMEMF_get_node`: the node asked for, [`XENMEMF_NO_NODE`] if none
/// (bits 15:8 hold node + 1).
#[must_use]
pub const fn xenmemf_get_node(mem_flags: u32) -> u32 {
    ((mem_flags >> 8).wrapping_sub(1)) & 0xff
}

/// What [`xenmemf_get_node`] returns when no node is asked for (Xen's
/// `NUMA_NO_NODE`).
pub const XENMEMF_NO_NODE: u32 = 0xff;

// `XENMAPSPACE_*` (`enum phys_map_space`): where the frame comes from.
/// The shared-info page; `idx` must be 0.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// A grant-table frame; `idx` is the frame number, with
/// [`XENMAPIDX_GRANT_TABLE_STATUS`] set for a status frame.
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// Move the guest's own frame `idx`.
pub const XENMAPSPACE_GMFN: u32 = 2;
/// Move `size` of the guest's frames starting at `idx`.
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// A frame of another domain; `XENMEM_add_to_physmap_batch` only.
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// Device MMIO (ARM only).
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;

/// In `idx` for `XENMAPSPACE_grant_table`: map a status frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u32 = 0x8000_0000;

// E820 types (`asm/e820.h`; the ACPI address range types).
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
pub const E820_ACPI: u32 = 3;
pub const E820_NVS: u32 = 4;
pub const E820_UNUSABLE: u32 = 5;

abi_struct! {
    /// `struct xen_add_to_physmap`, native (64-bit caller).
    #[repr(C)]
    pub struct XenAddToPhysmap(24) {
        /// IN: domain whose physmap changes (`DOMID_SELF` for the caller).
        pub domid: u16 => 0,
        /// IN: number of pages, for `XENMAPSPACE_gmfn_range` only.
        pub size: u16 => 2,
        /// IN: `XENMAPSPACE_*`.
        pub space: u32 => 4,
        /// IN: index into the space (`xen_ulong_t`).
        pub idx: u64 => 8,
        /// IN: guest pfn to place the frame at (`xen_pfn_t`).
        pub gpfn: u64 => 16,
    }
}

abi_struct! {
    /// `struct compat_add_to_physmap` (32-bit caller).
    #[repr(C)]
    pub struct XenAddToPhysmapCompat(16) {
        /// IN: as in [`XenAddToPhysmap`].
        pub domid: u16 => 0,
        /// IN: number of pages, for `XENMAPSPACE_gmfn_range` only.
        pub size: u16 => 2,
        /// IN: `XENMAPSPACE_*`.
        pub space: u32 => 4,
        /// IN: index into the space (32-bit `xen_ulong_t`).
        pub idx: u32 => 8,
        /// IN: guest pfn (32-bit `xen_pfn_t`).
        pub gpfn: u32 => 12,
    }
}

impl From<XenAddToPhysmapCompat> for XenAddToPhysmap {
    /// Widens a compat request the way Xen's `XLAT_add_to_physmap` does
    /// (zero extension).
    fn from(c: XenAddToPhysmapCompat) -> Self {
        XenAddToPhysmap {
            domid: c.domid,
            size: c.size,
            space: c.space,
            idx: u64::from(c.idx),
            gpfn: u64::from(c.gpfn),
        }
    }
}

abi_struct! {
    /// `struct xen_remove_from_physmap`, native (64-bit caller).
    #[repr(C)]
    pub struct XenRemoveFromPhysmap(16) {
        /// IN: domain whose physmap changes.
        pub domid: u16 => 0,
        /// Padding the C compiler inserts before `gpfn`.
        pub pad: [u16; 3] => 2,
        /// IN: guest pfn of the mapping to remove.
        pub gpfn: u64 => 8,
    }
}

abi_struct! {
    /// `struct compat_remove_from_physmap` (32-bit caller).
    #[repr(C)]
    pub struct XenRemoveFromPhysmapCompat(8) {
        /// IN: domain whose physmap changes.
        pub domid: u16 => 0,
        /// Padding the C compiler inserts before `gpfn`.
        pub pad: u16 => 2,
        /// IN: guest pfn of the mapping to remove.
        pub gpfn: u32 => 4,
    }
}

abi_struct! {
    /// `struct xen_memory_map`, native (64-bit caller).
    #[repr(C)]
    pub struct XenMemoryMap(16) {
        /// IN: capacity of `buffer` in entries. OUT: entries stored.
        pub nr_entries: u32 => 0,
        /// Padding the C compiler inserts before `buffer`.
        pub pad: u32 => 4,
        /// IN: guest handle of an array of [`E820Entry`].
        pub buffer: u64 => 8,
    }
}

abi_struct! {
    /// `struct compat_memory_map` (32-bit caller).
    #[repr(C)]
    pub struct XenMemoryMapCompat(8) {
        /// IN: capacity of `buffer` in entries. OUT: entries stored.
        pub nr_entries: u32 => 0,
        /// IN: 32-bit guest handle of an array of [`E820Entry`].
        pub buffer: u32 => 4,
    }
}

abi_struct! {
    /// `struct e820entry` (`xen/arch/x86/include/asm/e820.h`, `__packed`):
    /// the BIOS INT 15h/E820h format, 20 bytes, same for both widths.
    #[repr(C, packed)]
    pub struct E820Entry(20) {
        /// OUT: start address.
        pub addr: u64 => 0,
        /// OUT: length in bytes.
        pub size: u64 => 8,
        /// OUT: `E820_*`.
        pub type_: u32 => 16,
    }
}

abi_struct! {
    /// `struct xen_memory_reservation`, native (64-bit caller): the
    /// argument of `XENMEM_increase_reservation`, `decrease_reservation`
    /// and `populate_physmap`.
    #[repr(C)]
    pub struct XenMemoryReservation(32) {
        /// IN: guest handle of an array of `nr_extents` `xen_pfn_t` (64-bit):
        /// the gfns to populate or free (OUT for a PV increase: the mfns).
        pub extent_start: u64 => 0,
        /// IN: number of extents (`xen_ulong_t`).
        pub nr_extents: u64 => 8,
        /// IN: each extent is 2^`extent_order` pages, aligned to that.
        pub extent_order: u32 => 16,
        /// IN: `XENMEMF_*`.
        pub mem_flags: u32 => 20,
        /// IN: the domain (`DOMID_SELF`; others only for a privileged
        /// caller).
        pub domid: u16 => 24,
        /// Padding the C compiler inserts at the end.
        pub pad: [u16; 3] => 26,
    }
}

abi_struct! {
    /// `struct compat_memory_reservation` (32-bit caller).
    #[repr(C)]
    pub struct XenMemoryReservationCompat(20) {
        /// IN: 32-bit guest handle of an array of 32-bit `xen_pfn_t`.
        pub extent_start: u32 => 0,
        /// IN: number of extents (32-bit `xen_ulong_t`).
        pub nr_extents: u32 => 4,
        /// IN: as in [`XenMemoryReservation`].
        pub extent_order: u32 => 8,
        /// IN: `XENMEMF_*`.
        pub mem_flags: u32 => 12,
        /// IN: the domain.
        pub domid: u16 => 16,
        /// Padding the C compiler inserts at the end.
        pub pad: u16 => 18,
    }
}

impl From<XenMemoryReservationCompat> for XenMemoryReservation {
    /// Widens a compat request (zero extension, as `XLAT_memory_reservation`;
    /// the extent list itself stays 32-bit entries).
    fn from(c: XenMemoryReservationCompat) -> Self {
        XenMemoryReservation {
            extent_start: u64::from(c.extent_start),
            nr_extents: u64::from(c.nr_extents),
            extent_order: c.extent_order,
            mem_flags: c.mem_flags,
            domid: c.domid,
            pad: [0; 3],
        }
    }
}

abi_struct! {
    /// `struct xen_memory_domain`: the argument of
    /// `XENMEM_current_reservation`, `maximum_reservation` and
    /// `maximum_gpfn`. Same for both widths.
    #[repr(C)]
    pub struct XenMemoryDomain(2) {
        /// IN: the domain queried (`DOMID_SELF`; others only for a
        /// privileged caller).
        pub domid: u16 => 0,
    }
}
