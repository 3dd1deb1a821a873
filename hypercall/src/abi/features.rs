//! `XENFEAT_*` feature bit numbers reported by `XENVER_get_features`
//! (`xen/include/public/features.h`).
//!
//! Bit `n` lives in submap `n / 32`, bit `n % 32`. Xen defines one submap.

/// The guest may write its page tables directly (translated guests).
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
/// The guest may write its descriptor tables directly.
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
/// The guest's physical address space is translated (HVM/PVH): pfn != mfn.
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// The guest kernel runs in ring 0 (obsolete).
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
/// PAE page directories may live above 4 GiB.
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
/// `MMU_PT_UPDATE_PRESERVE_AD` is available.
pub const XENFEAT_MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
/// Highmem assistance for PV guests.
pub const XENFEAT_HIGHMEM_ASSIST: u32 = 6;
/// Grant-table PTE bits 9-11 are available to the guest.
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
/// HVM_PARAM_CALLBACK_IRQ may deliver events through a vector.
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// The pvclock in `vcpu_time_info` is safe to use in an HVM guest.
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// HVM guest may use PIRQs (physical IRQs as event channels).
pub const XENFEAT_HVM_PIRQS: u32 = 10;
/// The domain is the hardware domain (dom0).
pub const XENFEAT_DOM0: u32 = 11;
/// Grant mappings are identity-mapped (ARM).
pub const XENFEAT_GRANT_MAP_IDENTITY: u32 = 12;
/// `XENMEM_get_vnumainfo` is supported.
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
/// ARM SMCCC is supported.
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
/// Linux may put the RSDP anywhere (not only below 1 MiB).
pub const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 15;
/// Guest physical memory is not 1:1 with machine memory.
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
/// Guest physical memory is 1:1 with machine memory.
pub const XENFEAT_DIRECT_MAPPED: u32 = 17;
/// `VCPUOP_register_runstate_phys_area` is supported.
pub const XENFEAT_RUNSTATE_PHYS_AREA: u32 = 18;
/// `VCPUOP_register_vcpu_time_phys_area` is supported.
pub const XENFEAT_VCPU_TIME_PHYS_AREA: u32 = 19;
/// Device models see all MSI-X table writes.
pub const XENFEAT_DM_MSIX_ALL_WRITES: u32 = 20;

/// Number of 32-bit submaps Xen defines.
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// The submap bit for feature number `feat` (which must be `< 32`).
#[must_use]
pub const fn bit(feat: u32) -> u32 {
    1 << feat
}
