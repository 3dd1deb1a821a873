//! `HYPERVISOR_mmu_update`, `HYPERVISOR_mmuext_op` and the flags of
//! `HYPERVISOR_update_va_mapping` (`xen/include/public/xen.h`): how a PV
//! guest asks for changes to the page tables it may not write itself.
//!
//! `mmu_update(const struct mmu_update reqs[], unsigned count, unsigned
//! *done, unsigned foreigndom)`: each request is a `(ptr, val)` pair, the
//! command in the low bits of `ptr` ([`MMU_UPDATE_CMD_MASK`]) and the
//! machine address of the entry to write in the rest. `foreigndom` bits
//! 15:0 name the owner of the frames mapped (`DOMID_SELF` for the caller),
//! bits 31:16 the owner of the page tables written, plus one (0 for the
//! caller).
//!
//! `mmuext_op(struct mmuext_op ops[], unsigned count, unsigned *done,
//! unsigned foreigndom)`: one [`MmuextOp`] per operation; its two argument
//! words are unions whose meaning depends on `cmd` (see each `MMUEXT_*`).

/// `ptr[2:0]`: a checked `*ptr = val`; `ptr` is the machine address of a
/// page-table entry (or of a word of an ordinary page).
pub const MMU_NORMAL_PT_UPDATE: u32 = 0;
/// `ptr[2:0]`: set the machine-to-phys entry of the frame `ptr` lies in to
/// `val`.
pub const MMU_MACHPHYS_UPDATE: u32 = 1;
/// `ptr[2:0]`: as [`MMU_NORMAL_PT_UPDATE`], but the accessed and dirty bits
/// already in the entry are ORed into `val`, atomically.
pub const MMU_PT_UPDATE_PRESERVE_AD: u32 = 2;
/// `ptr[2:0]`: as [`MMU_NORMAL_PT_UPDATE`], but `val` is never translated
/// through the foreign domain's p2m (the same thing for a PV domain).
pub const MMU_PT_UPDATE_NO_TRANSLATE: u32 = 3;
/// Bits of `mmu_update.ptr` holding the command. The header speaks of
/// `ptr[1:0]`, but Xen masks with `sizeof(l1_pgentry_t) - 1` (`do_mmu_update`
/// in `xen/arch/x86/mm.c`), so values 4..=7 are commands too, unknown ones.
pub const MMU_UPDATE_CMD_MASK: u64 = 7;

/// Xen-internal, not in the public headers (`xen/arch/x86/include/asm/
/// hypercall.h`): set in `count` when Xen continues a preempted
/// `mmu_update` or `mmuext_op`; `*done` then already holds the work done.
pub const MMU_UPDATE_PREEMPTED: u32 = 0x8000_0000;

// `enum mmuext_cmd`.
/// `arg1.mfn`: pin that frame as an L1 page table (validating it).
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
/// `arg1.mfn`: pin that frame as an L2 page table.
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
/// `arg1.mfn`: pin that frame as an L3 page table.
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
/// `arg1.mfn`: pin that frame as an L4 page table.
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// `arg1.mfn`: drop the pin of a table of any level.
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
/// `arg1.mfn`: the new page-table base (kernel mode) of the calling vCPU.
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
/// No arguments: flush the local TLB.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// `arg1.linear_addr`: flush that address from the local TLB.
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
/// `arg2.vcpumask`: flush the TLBs of the vCPUs in that bitmap.
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
/// `arg1.linear_addr`, `arg2.vcpumask`: flush that address from the TLBs of
/// the vCPUs in the bitmap.
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
/// No arguments: flush the TLBs of all the domain's vCPUs.
pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
/// `arg1.linear_addr`: flush that address from all the domain's vCPUs.
pub const MMUEXT_INVLPG_ALL: u32 = 11;
/// No arguments: write back and invalidate the local caches.
pub const MMUEXT_FLUSH_CACHE: u32 = 12;
/// `arg1.linear_addr` (page aligned), `arg2.nr_ents`: the calling vCPU's
/// LDT.
pub const MMUEXT_SET_LDT: u32 = 13;
// 14 was never assigned.
/// `arg1.mfn` (0 for none): the page-table base of the calling vCPU in user
/// mode (x86-64 only).
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;
/// `arg1.mfn`: zero that frame.
pub const MMUEXT_CLEAR_PAGE: u32 = 16;
/// `arg1.mfn` (destination), `arg2.src_mfn`: copy a frame.
pub const MMUEXT_COPY_PAGE: u32 = 17;
/// No arguments: write back and invalidate the caches of all CPUs.
pub const MMUEXT_FLUSH_CACHE_GLOBAL: u32 = 18;
/// `arg1.mfn`: mark a superpage (removed from Xen; always refused).
pub const MMUEXT_MARK_SUPER: u32 = 19;
/// `arg1.mfn`: unmark a superpage (removed from Xen; always refused).
pub const MMUEXT_UNMARK_SUPER: u32 = 20;

// `enum uvm_flags`, the `flags` of `update_va_mapping`.
/// No flushing at all.
pub const UVMF_NONE: u64 = 0;
/// Flush entire TLB(s).
pub const UVMF_TLB_FLUSH: u64 = 1;
/// Flush only the one entry.
pub const UVMF_INVLPG: u64 = 2;
/// The flush-type bits.
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
/// Flush a subset of TLBs: OR in a pointer to a vCPU bitmap.
pub const UVMF_MULTI: u64 = 0;
/// Flush the local TLB (`UVMF_MULTI` with a NULL bitmap).
pub const UVMF_LOCAL: u64 = 0;
/// Flush all the domain's TLBs.
pub const UVMF_ALL: u64 = 1 << 2;

abi_struct! {
    /// `struct mmu_update`. Same layout for both widths (`uint64_t` fields).
    #[repr(C)]
    pub struct MmuUpdate(16) {
        /// IN: machine address of the entry, command in bits 2:0
        /// ([`MMU_UPDATE_CMD_MASK`]).
        pub ptr: u64 => 0,
        /// IN: the new entry (for `MMU_MACHPHYS_UPDATE`, the pfn).
        pub val: u64 => 8,
    }
}

abi_struct! {
    /// `struct mmuext_op`, native (64-bit caller).
    #[repr(C)]
    pub struct MmuextOp(24) {
        /// IN: `MMUEXT_*`.
        pub cmd: u32 => 0,
        /// Padding the C compiler inserts before `arg1`.
        pub pad: u32 => 4,
        /// IN: union `arg1`: `mfn` (`xen_pfn_t`) or `linear_addr`
        /// (`unsigned long`), per `cmd`.
        pub arg1: u64 => 8,
        /// IN: union `arg2`: `nr_ents` (`unsigned int`, the low half),
        /// `vcpumask` (guest handle) or `src_mfn` (`xen_pfn_t`), per `cmd`.
        pub arg2: u64 => 16,
    }
}

impl MmuextOp {
    /// `arg2.nr_ents`: only the low 32 bits of the union are the count; the
    /// guest need not have written the rest.
    #[must_use]
    pub const fn nr_ents(&self) -> u32 {
        self.arg2 as u32
    }
}

abi_struct! {
    /// `struct compat_mmuext_op` (32-bit caller).
    #[repr(C)]
    pub struct MmuextOpCompat(12) {
        /// IN: `MMUEXT_*`.
        pub cmd: u32 => 0,
        /// IN: union `arg1`, 32-bit `mfn` or `linear_addr`.
        pub arg1: u32 => 4,
        /// IN: union `arg2`, `nr_ents`, 32-bit handle or `src_mfn`.
        pub arg2: u32 => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_xen_h() {
        assert_eq!(
            [
                MMU_NORMAL_PT_UPDATE,
                MMU_MACHPHYS_UPDATE,
                MMU_PT_UPDATE_PRESERVE_AD,
                MMU_PT_UPDATE_NO_TRANSLATE
            ],
            [0, 1, 2, 3]
        );
        let ext = [
            (MMUEXT_PIN_L1_TABLE, 0),
            (MMUEXT_PIN_L2_TABLE, 1),
            (MMUEXT_PIN_L3_TABLE, 2),
            (MMUEXT_PIN_L4_TABLE, 3),
            (MMUEXT_UNPIN_TABLE, 4),
            (MMUEXT_NEW_BASEPTR, 5),
            (MMUEXT_TLB_FLUSH_LOCAL, 6),
            (MMUEXT_INVLPG_LOCAL, 7),
            (MMUEXT_TLB_FLUSH_MULTI, 8),
            (MMUEXT_INVLPG_MULTI, 9),
            (MMUEXT_TLB_FLUSH_ALL, 10),
            (MMUEXT_INVLPG_ALL, 11),
            (MMUEXT_FLUSH_CACHE, 12),
            (MMUEXT_SET_LDT, 13),
            (MMUEXT_NEW_USER_BASEPTR, 15),
            (MMUEXT_CLEAR_PAGE, 16),
            (MMUEXT_COPY_PAGE, 17),
            (MMUEXT_FLUSH_CACHE_GLOBAL, 18),
            (MMUEXT_MARK_SUPER, 19),
            (MMUEXT_UNMARK_SUPER, 20),
        ];
        for (got, want) in ext {
            assert_eq!(got, want);
        }
        assert_eq!((UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_ALL), (1, 2, 4));
        assert_eq!(MMU_UPDATE_PREEMPTED, !(!0u32 >> 1));
    }

    #[test]
    fn layouts_as_a_guest_writes_them() {
        let req = MmuUpdate {
            ptr: 0x1234_5008 | u64::from(MMU_PT_UPDATE_PRESERVE_AD),
            val: 0x8000_0000_0000_0067,
        };
        let bytes = req.to_bytes();
        assert_eq!(bytes[0], 0x0a);
        assert_eq!(bytes[15], 0x80);
        assert_eq!(MmuUpdate::from_bytes(&bytes), req);

        let mut raw = [0u8; 24];
        raw[0] = MMUEXT_SET_LDT as u8;
        raw[8..16].copy_from_slice(&0xffff_8000_dead_0000u64.to_le_bytes());
        raw[16..20].copy_from_slice(&512u32.to_le_bytes());
        // Stale bytes in the other half of the union.
        raw[20..24].copy_from_slice(&[0xaa; 4]);
        let op = MmuextOp::from_bytes(&raw);
        assert_eq!(op.cmd, MMUEXT_SET_LDT);
        assert_eq!(op.arg1, 0xffff_8000_dead_0000);
        assert_eq!(op.nr_ents(), 512);

        let compat = MmuextOpCompat {
            cmd: MMUEXT_COPY_PAGE,
            arg1: 7,
            arg2: 9,
        };
        assert_eq!(&compat.to_bytes()[4..12], &[7, 0, 0, 0, 9, 0, 0, 0]);
    }
}
