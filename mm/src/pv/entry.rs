//! Page-table entries as a 64-bit PV guest writes them: the bits (SDM Vol. 3A §4.5,
//! Tables 4-15..4-20), which of them Xen lets a guest set at each level, which it
//! lets a guest change without revalidation, and the bits it adds itself.
//!
//! Everything here is a pure function of an entry's `u64` and the domain's
//! [`Policy`]; nothing looks at a frame.

use crate::addr::{Hpa, Mfn};

use super::Policy;
use super::page::Level;

/// Entries in one table (every level).
pub const ENTRIES: usize = 512;

pub const PRESENT: u64 = 1 << 0;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User accessible.
pub const USER: u64 = 1 << 2;
/// Page-level write-through.
pub const PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PCD: u64 = 1 << 4;
pub const ACCESSED: u64 = 1 << 5;
pub const DIRTY: u64 = 1 << 6;
/// In an L2 or L3 entry: page size (a superpage). In an L1 entry the same bit is
/// [`PAT`].
pub const PSE: u64 = 1 << 7;
/// In an L1 entry: the third bit of the PAT index (with [`PCD`] and [`PWT`]).
pub const PAT: u64 = 1 << 7;
pub const GLOBAL: u64 = 1 << 8;
/// Bits 11:9, ignored by the hardware, the guest's own.
pub const AVAIL: u64 = 0x7 << 9;
/// The frame address, bits 51:12 (Xen's `PADDR_MASK & PAGE_MASK`). Bits the CPU's
/// MAXPHYADDR makes reserved belong to the frame number, as in Xen: such a frame
/// is nobody's RAM, so it is refused as I/O memory the domain may not map.
pub const ADDR_MASK: u64 = ((1 << 52) - 1) & !0xFFF;
/// Bits 62:52, ignored by the hardware (Xen's `_PAGE_AVAIL_HIGH`).
pub const AVAIL_HIGH: u64 = 0x7FF << 52;
/// Bit 52: Xen marks an L1 entry the guest made kernel-only with it
/// ([`adjust_guest_l1e`]; Xen's `_PAGE_GUEST_KERNEL`).
pub const GUEST_KERNEL: u64 = 1 << 52;
/// No execute.
pub const NX: u64 = 1 << 63;
/// The caching attributes of an L1 entry (Xen's `PAGE_CACHE_ATTRS`).
pub const CACHE_ATTRS: u64 = PAT | PCD | PWT;
/// Every bit that is not the frame address (Xen's 24 "flags" bits).
pub const FLAGS_MASK: u64 = !ADDR_MASK;

/// PTE flags a guest may change without the entry being revalidated: none of them
/// affects translation, caching, or keel's safety (Xen's `FASTPATH_FLAG_WHITELIST`).
pub const FASTPATH_FLAGS: u64 = NX | AVAIL_HIGH | AVAIL | GLOBAL | DIRTY | ACCESSED | USER;

/// The L4 slots that are keel's in every PV address space: 256..=271, i.e.
/// `HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END` (Xen's `ROOT_PAGETABLE_FIRST_XEN_SLOT`
/// ..=`ROOT_PAGETABLE_LAST_XEN_SLOT`). A guest neither validates nor writes them; keel
/// fills them from its template when an L4 is validated.
pub const KEEL_L4_SLOTS: core::ops::RangeInclusive<usize> = 256..=271;

/// Whether slot `i` of an L4 is the guest's (Xen's `is_guest_l4_slot`, 64-bit).
#[inline]
pub const fn is_guest_l4_slot(i: usize) -> bool {
    i < *KEEL_L4_SLOTS.start() || i > *KEEL_L4_SLOTS.end()
}

/// Whether slot `i` of a table at `level` is the guest's to fill.
#[inline]
pub const fn is_guest_slot(level: Level, i: usize) -> bool {
    !matches!(level, Level::L4) || is_guest_l4_slot(i)
}

#[inline]
pub const fn is_present(e: u64) -> bool {
    e & PRESENT != 0
}

/// The frame an entry names (total: 40 address bits always make an `Mfn`).
#[inline]
pub const fn entry_mfn(e: u64) -> Mfn {
    Hpa::masked(e & ADDR_MASK).mfn()
}

/// Xen's `base_disallow_mask`: every flag but PRESENT, RW, USER, ACCESSED, DIRTY,
/// the available bits and (if the CPU has it) NX (`arch_init_memory`). That leaves
/// PWT, PCD, PSE/PAT and GLOBAL refused.
const fn base_disallow(policy: &Policy) -> u64 {
    let mut allowed = PRESENT | RW | USER | ACCESSED | DIRTY | AVAIL | AVAIL_HIGH;
    if policy.nx {
        allowed |= NX;
    }
    FLAGS_MASK & !allowed
}

/// The bits a present entry of a table at `level` may not set (Xen's
/// `l1_disallow_mask`, `L2_DISALLOW_MASK`, `l3_disallow_mask` for a 64-bit guest,
/// `L4_DISALLOW_MASK`).
///
/// - L1: GLOBAL is allowed (for user mappings); the caching attributes only to a
///   domain with I/O capabilities ([`Policy::io_caps`]). Xen's `_PAGE_GNTTAB` is 0
///   outside debug builds and not modelled.
/// - L2, L3: PSE is refused, so there are no PV superpages (Xen 4.17 has none), and
///   neither are caching attributes nor GLOBAL on a directory entry.
/// - L4: the same; PSE is reserved there anyway.
pub const fn disallow_mask(level: Level, policy: &Policy) -> u64 {
    let base = base_disallow(policy);
    match level {
        Level::L1 => {
            let l1 = base & !GLOBAL;
            if policy.io_caps {
                l1 & !CACHE_ATTRS
            } else {
                l1
            }
        }
        Level::L2 | Level::L3 | Level::L4 => base,
    }
}

/// The flags a guest may change in a present directory entry (L2..L4) without
/// revalidation (Xen's `FASTPATH_PDE_FLAG_WHITELIST`): RW joins them when linear page
/// tables are off, since then no directory entry maps a page table as data.
pub const fn pde_fastpath_flags(policy: &Policy) -> u64 {
    if policy.linear_pt {
        FASTPATH_FLAGS
    } else {
        FASTPATH_FLAGS | RW
    }
}

/// Whether `new` differs from `old` in the frame or in a flag outside `fastpath`
/// (Xen's `l1e_has_changed(old, new, ~whitelist)`). PRESENT is never in a fast-path
/// set, so a present entry never "unchanged" from a non-present one.
#[inline]
pub const fn has_changed(old: u64, new: u64, fastpath: u64) -> bool {
    (old ^ new) & (ADDR_MASK | (FLAGS_MASK & !fastpath)) != 0
}

/// The entry keel stores for a present L1 entry the guest asked for (Xen's
/// `adjust_guest_l1e`, 64-bit guest): the guest kernel runs in ring 3, so a mapping
/// the guest made supervisor-only becomes USER and is marked [`GUEST_KERNEL`]; a
/// mapping that is the guest's user space becomes GLOBAL (it is the same in the
/// kernel's and the user's page tables).
#[inline]
pub const fn adjust_guest_l1e(e: u64) -> u64 {
    if !is_present(e) {
        return e;
    }
    let mut e = e;
    if e & USER == 0 {
        e |= GUEST_KERNEL | USER;
    }
    if e & GUEST_KERNEL == 0 {
        e |= GLOBAL | USER;
    }
    e
}

/// The entry keel stores for a present directory entry (Xen's `adjust_guest_l2e`,
/// `adjust_guest_l3e`, `adjust_guest_l4e`, 64-bit guest): USER, since the guest
/// kernel runs in ring 3; an L4 entry also gets ACCESSED (Xen sets it so that it
/// could shadow L4s without syncing the bit back).
#[inline]
pub const fn adjust_guest_pde(level: Level, e: u64) -> u64 {
    if !is_present(e) {
        return e;
    }
    match level {
        Level::L1 => adjust_guest_l1e(e),
        Level::L2 | Level::L3 => e | USER,
        Level::L4 => e | USER | ACCESSED,
    }
}

/// The flags to flip in an L1 entry mapping I/O memory (Xen's `get_page_from_l1e`,
/// the I/O branch, with `mmio-relax` off): RW off for a frame the domain may map
/// only read-only, and caching forced to uncacheable: write-back (PAT index 0)
/// becomes UC (PCD|PWT), WT (PWT) and WP (PAT|PWT) lose PAT and gain PCD.
pub const fn io_flip(e: u64, read_only: bool) -> u64 {
    let mut flip = 0;
    if read_only && e & RW != 0 {
        flip |= RW;
    }
    let cache = e & CACHE_ATTRS;
    if cache == 0 {
        flip |= PWT | PCD;
    } else if cache == PWT || cache == PWT | PAT {
        flip |= PCD | (e & PAT);
    }
    flip
}

/// Whether a non-present entry names an address an L1TF-affected CPU would read
/// speculatively (Xen's `is_l1tf_safe_maddr`, inverted): address bits set, and
/// below `safe`, the first address no RAM lies at or above.
#[inline]
pub const fn l1tf_unsafe(e: u64, safe: u64) -> bool {
    let addr = e & ADDR_MASK;
    !is_present(e) && addr != 0 && addr < safe
}

/// Whether `va` may be named in a flush or as an LDT base: below the canonical
/// hole, or above keel's slots (Xen's `__addr_ok`, x86-64).
#[inline]
pub const fn addr_ok(va: u64) -> bool {
    va < (1 << 47) || va >= crate::layout::HYPERVISOR_VIRT_END
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_per_level() {
        let p = Policy::default();
        assert_eq!(disallow_mask(Level::L1, &p), PWT | PCD | PAT);
        for l in [Level::L2, Level::L3, Level::L4] {
            assert_eq!(disallow_mask(l, &p), PWT | PCD | PSE | GLOBAL);
        }
        let no_nx = Policy { nx: false, ..p };
        assert_eq!(
            disallow_mask(Level::L2, &no_nx),
            PWT | PCD | PSE | GLOBAL | NX
        );
        let io = Policy { io_caps: true, ..p };
        assert_eq!(disallow_mask(Level::L1, &io), 0);
        assert_eq!(disallow_mask(Level::L3, &io), PWT | PCD | PSE | GLOBAL);
    }

    #[test]
    fn adjustments() {
        let kernel = 0x1000 | PRESENT;
        assert_eq!(adjust_guest_l1e(kernel), kernel | USER | GUEST_KERNEL);
        let user = 0x1000 | PRESENT | USER;
        assert_eq!(adjust_guest_l1e(user), user | GLOBAL);
        assert_eq!(adjust_guest_l1e(0x1000), 0x1000);
        assert_eq!(adjust_guest_pde(Level::L2, kernel), kernel | USER);
        assert_eq!(
            adjust_guest_pde(Level::L4, kernel),
            kernel | USER | ACCESSED
        );
        // Idempotent, so a validated table reads back as what keel stored.
        for e in [kernel, user, kernel | GLOBAL, user | GUEST_KERNEL] {
            assert_eq!(adjust_guest_l1e(adjust_guest_l1e(e)), adjust_guest_l1e(e));
        }
    }

    #[test]
    fn fast_path_and_io_flips() {
        let e = 0x5000 | PRESENT | USER;
        assert!(!has_changed(
            e,
            e | ACCESSED | DIRTY | NX | GLOBAL,
            FASTPATH_FLAGS
        ));
        assert!(has_changed(e, e | RW, FASTPATH_FLAGS));
        assert!(has_changed(e, e ^ 0x1000, FASTPATH_FLAGS));
        assert!(has_changed(e & !PRESENT, e, FASTPATH_FLAGS));
        let p = Policy::default();
        assert!(has_changed(e, e | RW, pde_fastpath_flags(&p)));
        let no_linear = Policy {
            linear_pt: false,
            ..p
        };
        assert!(!has_changed(e, e | RW, pde_fastpath_flags(&no_linear)));

        assert_eq!(io_flip(e | RW, true), RW | PWT | PCD);
        assert_eq!(io_flip(e | PWT, false), PCD);
        assert_eq!(io_flip(e | PWT | PAT, false), PCD | PAT);
        assert_eq!(io_flip(e | PWT | PCD, false), 0);
        assert_eq!(io_flip(e | PCD, false), 0);
        assert_eq!(entry_mfn(u64::MAX).as_u64(), (1 << 40) - 1);
        assert!(l1tf_unsafe(0x5000, 1 << 40));
        assert!(!l1tf_unsafe(0, 1 << 40));
        assert!(!l1tf_unsafe(0x5001, 1 << 40));
        assert!(addr_ok(0x7fff_ffff_f000) && !addr_ok(0xffff_8000_0000_0000));
        assert!(addr_ok(0xffff_8800_0000_0000) && !addr_ok(1 << 47));
    }
}
