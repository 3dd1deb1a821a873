//! A PV vCPU's virtual IDT ([`TrapTable`]) and which handler an event goes to.
//!
//! # What and why
//!
//! A PV guest has no IDT of its own: it hands Xen an array of `trap_info` records
//! (`set_trap_table`), and when an exception or a permitted `int $n` is to be
//! delivered, Xen looks the vector up here and bounces to the handler
//! ([`super::bounce`]). Xen's rules:
//!
//! - A null argument clears all 256 entries ([`TrapTable::clear`]).
//! - The records are read one by one until one has `address == 0` (it is not
//!   stored). A record with a non-canonical address fails the hypercall with
//!   `-EINVAL`; the records before it stay installed. Each record is stored
//!   whole at `trap_ctxt[vector]` (`vector` is a `u8`: there is no range to
//!   check), with its `cs` RPL raised to 3 (`fixup_guest_code_selector`). The
//!   flags are not checked. A copy fault is `-EFAULT`, also leaving the earlier
//!   records installed; both are the caller's, as is the preemption check Xen
//!   makes after each record.
//! - An exception is delivered to `trap_ctxt[vector].address`, masking events iff
//!   the entry has `TI_IF`, with an error code iff the vector has one
//!   (`X86_EXC_HAVE_EC`); a page fault's error code gets its U bit from the
//!   guest's mode, not from the CPU (the guest kernel runs in ring 3). An address
//!   of 0 means no handler; Xen sets the bounce up anyway, and
//!   `create_bounce_frame` then crashes the domain.
//! - `int $n` faults with #GP (Xen's IDT gives the guest no gates), and is
//!   delivered as a software interrupt to vector `n` iff the entry's DPL permits
//!   the guest's mode: DPL >= 1 from kernel mode, DPL 3 from user mode
//!   ([`TrapTable::permit_softint`]). The `cs` of an entry is never used for a
//!   64-bit guest: Xen always enters with `FLAT_KERNEL_CS`.
//!
//! # Invariants
//!
//! Every entry has a canonical address (0: no handler), and every entry with a
//! handler has a `cs` with RPL 3 (tested over all inputs).
//!
//! # Sources
//!
//! `xen/arch/x86/pv/callback.c`: `do_set_trap_table`,
//! `register_guest_nmi_callback`, `unregister_guest_nmi_callback`;
//! `xen/arch/x86/pv/traps.c`: `pv_inject_event`; `xen/arch/x86/traps.c`:
//! `do_general_protection` (the `int $n` path); `xen/arch/x86/include/asm/
//! x86_64/regs.h`: `permit_softint`, `guest_kernel_mode`, `null_trap_bounce`;
//! `xen/arch/x86/include/asm/x86-defns.h`: `X86_EXC_HAVE_EC`;
//! `xen/include/public/arch-x86/xen.h`: `struct trap_info`, `TI_*`.
//!
//! # Locking
//!
//! None: a `TrapTable` belongs to one vCPU and is changed only by that vCPU's own
//! hypercalls (Xen's `current->arch.pv.trap_ctxt`).

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::pv::{FLAT_KERNEL_CS, TI_IF, TrapInfo};

use super::bounce::TrapBounce;
use super::{GuestMode, is_canonical};

/// `TRAP_nmi`.
pub const TRAP_NMI: u8 = 2;
/// `TRAP_invalid_op` (#UD).
pub const TRAP_INVALID_OP: u8 = 6;
/// `TRAP_page_fault`.
pub const TRAP_PAGE_FAULT: u8 = 14;
/// `X86_EXC_HAVE_EC`: the exceptions that push an error code (#DF, #TS, #NP, #SS,
/// #GP, #PF, #AC, #CP, #VC, #SX).
pub const EXC_HAVE_EC: u32 = (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 17)
    | (1 << 21)
    | (1 << 29)
    | (1 << 30);
/// `PFEC_user_mode`: the page-fault error code's U bit.
pub const PFEC_USER_MODE: u32 = 1 << 2;

/// An empty entry (`memset(0)`).
const EMPTY: TrapInfo = TrapInfo {
    vector: 0,
    flags: 0,
    cs: 0,
    pad: 0,
    address: 0,
};

/// What one `trap_info` record did ([`TrapTable::set_trap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTrap {
    /// It was stored; read the next one.
    Stored,
    /// Its address is 0: the array ends here, the hypercall returns 0.
    End,
}

/// A PV vCPU's virtual IDT: 256 `trap_info` entries (Xen `trap_ctxt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrapTable {
    entries: [TrapInfo; 256],
}

impl Default for TrapTable {
    fn default() -> Self {
        TrapTable::new()
    }
}

impl TrapTable {
    /// A table with no handlers (a new vCPU's).
    pub const fn new() -> TrapTable {
        TrapTable {
            entries: [EMPTY; 256],
        }
    }

    /// `set_trap_table(NULL)`: "clear the entire virtual IDT".
    pub fn clear(&mut self) {
        self.entries = [EMPTY; 256];
    }

    /// The entry for `vector`.
    pub fn get(&self, vector: u8) -> &TrapInfo {
        &self.entries[usize::from(vector)]
    }

    /// One record of `set_trap_table`'s array, as Xen's loop body: address 0 ends
    /// the array, a non-canonical address is `-EINVAL` (earlier records stay),
    /// otherwise the record is stored at its vector with its `cs` RPL raised to 3.
    pub fn set_trap(&mut self, record: TrapInfo) -> Result<SetTrap, Errno> {
        if record.address == 0 {
            return Ok(SetTrap::End);
        }
        if !is_canonical(record.address) {
            return Err(Errno::EINVAL);
        }
        let mut record = record;
        record.cs = fixup_guest_selector(record.cs);
        self.entries[usize::from(record.vector)] = record;
        Ok(SetTrap::Stored)
    }

    /// `CALLBACKOP_register` of `CALLBACKTYPE_nmi`: entry 2 becomes the handler at
    /// `address` with events masked, `FLAT_KERNEL_CS`, DPL 0; `-EINVAL` for a
    /// non-canonical address. (Re-raising a lost NMI edge is the caller's.)
    pub fn set_nmi_callback(&mut self, address: u64) -> Result<(), Errno> {
        if !is_canonical(address) {
            return Err(Errno::EINVAL);
        }
        self.entries[usize::from(TRAP_NMI)] = TrapInfo {
            vector: TRAP_NMI,
            flags: TI_IF,
            cs: FLAT_KERNEL_CS,
            pad: 0,
            address,
        };
        Ok(())
    }

    /// `CALLBACKOP_unregister` of `CALLBACKTYPE_nmi`: entry 2 is cleared.
    pub fn clear_nmi_callback(&mut self) {
        self.entries[usize::from(TRAP_NMI)] = EMPTY;
    }

    /// `pv_inject_event` for a hardware exception: the bounce to `vector`'s
    /// handler. `error_code` is used iff the vector has one ([`EXC_HAVE_EC`];
    /// vectors from 32 have none); a page fault's U bit is set iff the guest is in
    /// user mode. For a page fault the caller also stores CR2 in the vCPU
    /// (`vcpu_info.arch.cr2`, Xen's `arch_set_cr2`).
    pub fn inject_exception(&self, vector: u8, error_code: u32, mode: GuestMode) -> TrapBounce {
        let has_ec = vector < 32 && EXC_HAVE_EC & (1 << vector) != 0;
        let error_code = if vector == TRAP_PAGE_FAULT {
            match mode {
                GuestMode::Kernel => error_code & !PFEC_USER_MODE,
                GuestMode::User => error_code | PFEC_USER_MODE,
            }
        } else {
            error_code
        };
        self.bounce_to(vector, has_ec.then_some(error_code))
    }

    /// `pv_inject_event` for a software interrupt (`int $n` the guest may make,
    /// [`TrapTable::permit_softint`]): no error code. The caller first advances
    /// RIP past the 2-byte `int $n`, as `do_general_protection` does.
    pub fn inject_sw_interrupt(&self, vector: u8) -> TrapBounce {
        self.bounce_to(vector, None)
    }

    /// `permit_softint(TI_GET_DPL(ti), v, regs)`: whether `int $vector` from
    /// `mode` is delivered (DPL >= 1 from kernel mode, DPL 3 from user mode) or
    /// the #GP is passed on. Vectors 3 and 4 (`int3`, `into`) do not come here:
    /// they have their own DPL-3 gates, and their entries' DPL is not checked.
    pub fn permit_softint(&self, vector: u8, mode: GuestMode) -> bool {
        let need = match mode {
            GuestMode::Kernel => 1,
            GuestMode::User => 3,
        };
        self.get(vector).dpl() >= need
    }

    fn bounce_to(&self, vector: u8, error_code: Option<u32>) -> TrapBounce {
        let ti = self.get(vector);
        TrapBounce {
            eip: ti.address,
            mask_events: ti.masks_events(),
            error_code,
        }
    }
}

/// `__fixup_guest_selector` for a 64-bit domain: an RPL below 3 becomes 3.
pub const fn fixup_guest_selector(selector: u16) -> u16 {
    selector | 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_hypercall::abi::pv::TI_DPL_MASK;
    use proptest::prelude::*;

    fn ti(vector: u8, flags: u8, cs: u16, address: u64) -> TrapInfo {
        TrapInfo {
            vector,
            flags,
            cs,
            pad: 0,
            address,
        }
    }

    #[test]
    fn records_are_stored_by_vector_with_cs_rpl_3() {
        // do_set_trap_table: fixup_guest_code_selector, memcpy(&dst[cur.vector]).
        let mut t = TrapTable::new();
        let r = ti(14, TI_IF, 0xe030, 0xFFFF_FFFF_8100_0000);
        assert_eq!(t.set_trap(r), Ok(SetTrap::Stored));
        assert_eq!(*t.get(14), ti(14, TI_IF, 0xe033, 0xFFFF_FFFF_8100_0000));
        // Flags are not checked; the padding is copied as given.
        let odd = TrapInfo {
            pad: 7,
            ..ti(255, 0xFF, 0, 1)
        };
        assert_eq!(t.set_trap(odd), Ok(SetTrap::Stored));
        assert_eq!(t.get(255).flags, 0xFF);
        assert_eq!(t.get(255).pad, 7);
    }

    #[test]
    fn address_0_ends_the_array_and_is_not_stored() {
        // do_set_trap_table: "if ( cur.address == 0 ) break;"
        let mut t = TrapTable::new();
        t.set_trap(ti(3, 3, 0xe033, 0x1000)).unwrap();
        assert_eq!(t.set_trap(ti(3, 0, 0, 0)), Ok(SetTrap::End));
        assert_eq!(t.get(3).address, 0x1000);
    }

    #[test]
    fn non_canonical_address_is_einval_and_keeps_earlier_records() {
        // do_set_trap_table: "if ( !is_canonical_address(cur.address) ) return
        // -EINVAL;"
        let mut t = TrapTable::new();
        t.set_trap(ti(0, 0, 0xe033, 0x1000)).unwrap();
        assert_eq!(
            t.set_trap(ti(1, 0, 0xe033, 0x0000_8000_0000_0000)),
            Err(Errno::EINVAL)
        );
        assert_eq!(t.get(0).address, 0x1000);
        assert_eq!(t.get(1).address, 0);
        t.clear();
        assert_eq!(t, TrapTable::new());
    }

    #[test]
    fn exceptions_carry_error_codes_only_where_the_cpu_pushes_one() {
        // pv_inject_event: use_error_code = TRAP_HAVE_EC & (1u << vector).
        let mut t = TrapTable::new();
        for v in 0..=255u8 {
            t.set_trap(ti(v, 0, 0xe033, 0x1000 + u64::from(v))).unwrap();
        }
        for v in 0..=255u8 {
            let tb = t.inject_exception(v, 0x18, GuestMode::Kernel);
            let want = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30].contains(&v);
            assert_eq!(tb.error_code.is_some(), want, "vector {v}");
            assert_eq!(tb.eip, 0x1000 + u64::from(v));
            assert!(!tb.mask_events);
        }
        assert_eq!(t.inject_sw_interrupt(13).error_code, None);
    }

    #[test]
    fn page_fault_u_bit_follows_the_guest_mode() {
        // pv_inject_event: "Re-set error_code.user flag appropriately for the
        // guest."
        let t = TrapTable::new();
        let k = t.inject_exception(TRAP_PAGE_FAULT, 0x7, GuestMode::Kernel);
        assert_eq!(k.error_code, Some(0x3));
        let u = t.inject_exception(TRAP_PAGE_FAULT, 0x2, GuestMode::User);
        assert_eq!(u.error_code, Some(0x6));
        // No handler: eip 0, which create_bounce_frame refuses.
        assert_eq!(k.eip, 0);
    }

    #[test]
    fn ti_if_masks_events() {
        // pv_inject_event: "if ( TI_GET_IF(ti) ) tb->flags |= TBF_INTERRUPT;"
        let mut t = TrapTable::new();
        t.set_trap(ti(32, TI_IF, 0, 0x2000)).unwrap();
        assert!(t.inject_sw_interrupt(32).mask_events);
    }

    #[test]
    fn softint_dpl() {
        // permit_softint: dpl >= (guest_kernel_mode ? 1 : 3).
        let mut t = TrapTable::new();
        for dpl in 0..4u8 {
            t.set_trap(ti(0x80 + dpl, dpl, 0, 0x3000)).unwrap();
        }
        let allowed = |v, m| t.permit_softint(v, m);
        assert!(!allowed(0x80, GuestMode::Kernel));
        assert!(allowed(0x81, GuestMode::Kernel));
        assert!(allowed(0x82, GuestMode::Kernel));
        assert!(allowed(0x83, GuestMode::Kernel));
        assert!(!allowed(0x82, GuestMode::User));
        assert!(allowed(0x83, GuestMode::User));
    }

    #[test]
    fn nmi_callback() {
        // register_guest_nmi_callback / unregister_guest_nmi_callback.
        let mut t = TrapTable::new();
        assert_eq!(t.set_nmi_callback(0x8000_0000_0000), Err(Errno::EINVAL));
        t.set_nmi_callback(0x4000).unwrap();
        assert_eq!(*t.get(TRAP_NMI), ti(2, TI_IF, FLAT_KERNEL_CS, 0x4000));
        assert_eq!(t.get(TRAP_NMI).flags & TI_DPL_MASK, 0);
        t.clear_nmi_callback();
        assert_eq!(t.get(TRAP_NMI).address, 0);
    }

    proptest! {
        #[test]
        fn set_trap_is_total_and_keeps_the_invariant(
            records in proptest::collection::vec(
                (any::<u8>(), any::<u8>(), any::<u16>(), any::<u32>(), any::<u64>()), 0..64),
            vector in any::<u8>(), ec in any::<u32>(), user in any::<bool>(),
        ) {
            let mut t = TrapTable::new();
            for (vector, flags, cs, pad, address) in records {
                let _ = t.set_trap(TrapInfo { vector, flags, cs, pad, address });
            }
            for v in 0..=255u8 {
                let e = t.get(v);
                prop_assert!(is_canonical(e.address));
                prop_assert!(e.address == 0 || e.cs & 3 == 3);
            }
            let mode = if user { GuestMode::User } else { GuestMode::Kernel };
            let tb = t.inject_exception(vector, ec, mode);
            prop_assert_eq!(tb.eip, t.get(vector).address);
        }
    }
}
