//! Which segment descriptors a 64-bit PV guest may put in its GDT and LDT, and the
//! part of every GDT that is the hypervisor's.
//!
//! # What and why
//!
//! A PV guest's GDT and LDT frames are loaded into the CPU as they are, so every
//! descriptor in them is checked when a frame becomes a descriptor page
//! (`validate_segdesc_page`) and when the guest writes one (`update_descriptor`).
//! A guest descriptor must never give ring 0..2 a segment (the guest kernel runs
//! in ring 3) or offer a gate into keel. Xen's rules for a 64-bit guest
//! ([`check_descriptor`]):
//!
//! 1. Not present (P clear): accepted unchanged; loading it faults anyway.
//! 2. Code or data (S set): accepted with its DPL raised to 3. No base or limit
//!    check: in 64-bit mode they do not confine anything keel relies on.
//! 3. System type 0: accepted *unchanged* (P set or not); it is the second half
//!    of a 16-byte call gate, and harmless on its own.
//! 4. 64-bit call gate (type 12): accepted if its target selector is a guest
//!    GDT entry (index < 7168), an LDT selector, or `FLAT_KERNEL_CS`, and its
//!    bits 32..39 are zero; rewritten to DPL 0 with the target selector's RPL
//!    set to the (raised) DPL, i.e. 3. A DPL-0 gate used from ring 3 faults
//!    with #GP, so the gate itself can never be taken.
//! 5. Any other system descriptor (LDT, TSS, interrupt, trap or task gate,
//!    16-bit gates): refused, `-EINVAL`.
//!
//! A 16-byte call gate is two 8-byte slots, and Xen checks each on its own, as
//! every other descriptor: the lower by rule 4, the upper (offset bits 63..32 in
//! its low dword) by rule 1, 2 or 3.
//!
//! # Invariants
//!
//! - An accepted descriptor is either not present, a code/data segment with DPL 3,
//!   a system descriptor of type 0 (unusable as a segment, as a gate's upper
//!   half, type 0 is what the CPU requires), or a DPL-0 call gate whose selector
//!   is not one of keel's reserved ones other than `FLAT_KERNEL_CS`.
//! - [`check_descriptor`] is idempotent: checking an accepted result again gives
//!   the same value (tested over all inputs).
//!
//! # Hazard: call gates do nothing for a 64-bit guest
//!
//! Xen 4.17 emulates a use of a (DPL-0) call gate only for 32-bit PV guests
//! (`do_general_protection`: `is_pv_32bit_vcpu(v) && regs->error_code` goes to
//! `pv_emulate_gate_op`). A 64-bit guest's `lcall` through its gate just gets the
//! #GP. keel does the same: accept, rewrite, never emulate.
//!
//! # Sources
//!
//! `xen/arch/x86/pv/descriptor-tables.c`: `check_descriptor`,
//! `validate_segdesc_page`, `do_update_descriptor`, `pv_set_gdt`, `do_set_gdt`;
//! `xen/arch/x86/include/asm/desc.h`: `__fixup_guest_selector`,
//! `guest_gate_selector_okay`, `_SEGMENT_*`, `NR_RESERVED_GDT_PAGES`,
//! `TSS_ENTRY`, `LDT_ENTRY`, `PER_CPU_GDT_ENTRY`; `xen/arch/x86/desc.c`:
//! `boot_gdt`; `xen/arch/x86/include/asm/config.h`: `GDT_VIRT_START`,
//! `LDT_VIRT_START`; `xen/arch/x86/mm.c`: `MMUEXT_SET_LDT` (the 8192 limit);
//! `xen/include/public/arch-x86/xen.h`: `FIRST_RESERVED_GDT_*`.
//!
//! # Locking
//!
//! None: values only. The caller holds the domain's lock around validating a
//! frame and installing it, as Xen holds `domain_lock` in `do_set_gdt`.

use core::fmt;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::pv::{
    FIRST_RESERVED_GDT_ENTRY, FIRST_RESERVED_GDT_PAGE, FLAT_KERNEL_CS, FLAT_RING3_CS32,
    FLAT_RING3_CS64, FLAT_RING3_DS32,
};

// --- The GDT's reserved page (Xen-internal, asm/desc.h and desc.c) ---

/// `NR_RESERVED_GDT_PAGES`: one page of descriptors is the hypervisor's.
pub const NR_RESERVED_GDT_PAGES: usize = 1;
/// `NR_RESERVED_GDT_ENTRIES`.
pub const NR_RESERVED_GDT_ENTRIES: usize = NR_RESERVED_GDT_PAGES * 4096 / 8;
/// `LAST_RESERVED_GDT_PAGE`: page 14. Pages 0..=13 are the guest's frames.
pub const LAST_RESERVED_GDT_PAGE: usize = FIRST_RESERVED_GDT_PAGE + NR_RESERVED_GDT_PAGES - 1;
/// `LAST_RESERVED_GDT_ENTRY`: 7679.
pub const LAST_RESERVED_GDT_ENTRY: usize = FIRST_RESERVED_GDT_ENTRY + NR_RESERVED_GDT_ENTRIES - 1;
/// `LAST_RESERVED_GDT_BYTE`: the GDTR limit Xen loads, 15 pages minus one byte.
pub const LAST_RESERVED_GDT_BYTE: usize = (LAST_RESERVED_GDT_PAGE + 1) * 4096 - 1;
/// Pages of a vCPU's GDT virtual area (`LDT_VIRT_START(v) = GDT_VIRT_START(v) +
/// 64 KiB`): 14 guest pages, the reserved page, one page unused.
pub const GDT_VIRT_PAGES: usize = 16;
/// The most LDT entries a guest may set (`MMUEXT_SET_LDT`: `ents > 8192` is
/// `-EINVAL`): the 64 KiB LDT area above the GDT's.
pub const LDT_MAX_ENTRIES: usize = 8192;
/// The most entries `set_gdt` takes: the guest's 14 pages.
pub const GDT_MAX_ENTRIES: usize = FIRST_RESERVED_GDT_ENTRY;

/// `__HYPERVISOR_CS`: ring-0 64-bit code (reserved index 1).
pub const HYPERVISOR_CS: u16 = 0xe008;
/// `__HYPERVISOR_DS32`: ring-0 flat data (reserved index 2).
pub const HYPERVISOR_DS32: u16 = 0xe010;
/// `TSS_SELECTOR`: the 16-byte TSS descriptor (reserved indices 8..9).
pub const TSS_SELECTOR: u16 = ((FIRST_RESERVED_GDT_ENTRY + 8) << 3) as u16;
/// `LDT_SELECTOR`: the 16-byte LDT descriptor (reserved indices 10..11).
pub const LDT_SELECTOR: u16 = ((FIRST_RESERVED_GDT_ENTRY + 10) << 3) as u16;
/// `PER_CPU_SELECTOR`: a data descriptor whose limit is the CPU number (index 12).
pub const PER_CPU_SELECTOR: u16 = ((FIRST_RESERVED_GDT_ENTRY + 12) << 3) as u16;

/// The fixed descriptors of the reserved page, by selector (`boot_gdt`). The R3
/// ones are ABI: a PV guest runs on them. Flat (base 0, limit 4 GiB, G), accessed.
pub const RESERVED_DESCRIPTORS: [(u16, u64); 5] = [
    // Present, DPL 0, code execute/read, L.
    (HYPERVISOR_CS, 0x00af_9b00_0000_ffff),
    // Present, DPL 0, data read/write, B.
    (HYPERVISOR_DS32, 0x00cf_9300_0000_ffff),
    // Present, DPL 3, code execute/read, D.
    (FLAT_RING3_CS32, 0x00cf_fb00_0000_ffff),
    // Present, DPL 3, data read/write, B.
    (FLAT_RING3_DS32, 0x00cf_f300_0000_ffff),
    // Present, DPL 3, code execute/read, L.
    (FLAT_RING3_CS64, 0x00af_fb00_0000_ffff),
];

/// The per-CPU descriptor for CPU `cpu`: present, DPL 0, read-only data,
/// accessed, limit `cpu` (bits 0..15 and 48..51). Xen reads it with `lsl`.
pub const fn per_cpu_descriptor(cpu: u32) -> u64 {
    let limit = cpu as u64 & 0xF_FFFF;
    0x0000_9100_0000_0000 | (limit & 0xFFFF) | ((limit >> 16) << 48)
}

// --- Descriptor bits (asm/desc.h, as bits of the whole 64-bit descriptor) ---

/// `_SEGMENT_TYPE`.
const TYPE_MASK: u64 = 0xF << 40;
/// `_SEGMENT_S`: code or data.
const S: u64 = 1 << 44;
/// `_SEGMENT_DPL`.
const DPL_MASK: u64 = 3 << 45;
const DPL_SHIFT: u32 = 45;
/// `_SEGMENT_P`.
const P: u64 = 1 << 47;
/// `SYS_DESC_call_gate`: a 64-bit call gate (in long mode).
const TYPE_CALL_GATE: u64 = 12;
/// A call gate's target selector, bits 16..31.
const GATE_SELECTOR_SHIFT: u32 = 16;
/// Bits 32..39 of a call gate: a 32-bit gate's parameter count, reserved in a
/// 64-bit one (Xen: `b & 0xff` for a 64-bit domain).
const GATE_RESERVED: u64 = 0xFF << 32;

/// The guest kernel's RPL (`GUEST_KERNEL_RPL` for a 64-bit domain).
const GUEST_KERNEL_RPL: u64 = 3;

/// Why a descriptor is refused. Xen returns `-EINVAL` for each ([`Self::errno`]).
/// The doc comment of each variant is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorError {
    /// a present system descriptor other than a call gate
    SystemType { kind: u8 },
    /// a call gate whose target is one of the hypervisor's reserved selectors
    GateSelector { selector: u16 },
    /// a 64-bit call gate with bits 32..39 set
    GateReserved,
}

impl DescriptorError {
    /// The errno Xen returns: `validate_segdesc_page` and `do_update_descriptor`
    /// both fail with `-EINVAL`.
    pub const fn errno(self) -> Errno {
        Errno::EINVAL
    }
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescriptorError::SystemType { kind } => {
                write!(
                    f,
                    "a present system descriptor of type {kind} (not a call gate)"
                )
            }
            DescriptorError::GateSelector { selector } => write!(
                f,
                "a call gate whose target is the hypervisor's reserved selector {selector:#x}"
            ),
            DescriptorError::GateReserved => f.write_str("a 64-bit call gate with bits 32..39 set"),
        }
    }
}

/// `guest_gate_selector_okay` for a 64-bit domain: a guest GDT entry, exactly
/// `FLAT_KERNEL_CS`, or an LDT selector (TI set).
pub const fn gate_selector_okay(selector: u16) -> bool {
    ((selector >> 3) as usize) < FIRST_RESERVED_GDT_ENTRY
        || selector == FLAT_KERNEL_CS
        || selector & 4 != 0
}

/// Xen's `check_descriptor` for a 64-bit PV domain: the descriptor to store for
/// the guest's `raw`, or why it is refused (module doc, rules 1..5).
pub fn check_descriptor(raw: u64) -> Result<u64, DescriptorError> {
    // "A not-present descriptor will always fault, so is safe."
    if raw & P == 0 {
        return Ok(raw);
    }

    // "Check and fix up the DPL": __fixup_guest_selector raises any DPL below the
    // guest kernel's RPL (3) to it, so every present descriptor's DPL becomes 3.
    let dpl = ((raw & DPL_MASK) >> DPL_SHIFT).max(GUEST_KERNEL_RPL);
    let fixed = (raw & !DPL_MASK) | (dpl << DPL_SHIFT);

    // "All code and data segments are okay. No base/limit checking." (The 32-bit
    // domain's L and M2P-limit rules do not apply.)
    if raw & S != 0 {
        return Ok(fixed);
    }

    // "Invalid type 0 is harmless. It is used for 2nd half of a call gate." Xen
    // returns before storing the fixed-up DPL: the slot stays as the guest wrote it.
    let kind = (raw & TYPE_MASK) >> 40;
    if kind == 0 {
        return Ok(raw);
    }

    // "Everything but a call gate is discarded here."
    if kind != TYPE_CALL_GATE {
        // `kind` is four bits: the cast cannot truncate.
        return Err(DescriptorError::SystemType { kind: kind as u8 });
    }

    // "Validate the target code selector."
    let selector = (raw >> GATE_SELECTOR_SHIFT) as u16;
    if !gate_selector_okay(selector) {
        return Err(DescriptorError::GateSelector { selector });
    }

    // "Force DPL to zero ... Store the original DPL in the selector's RPL field."
    // The DPL stored is the fixed-up one, so the RPL is always 3.
    let selector = u64::from(selector & !3) | dpl;
    let gate =
        (fixed & !DPL_MASK & !(0xFFFF << GATE_SELECTOR_SHIFT)) | (selector << GATE_SELECTOR_SHIFT);

    // "Reserved bits must be zero."
    if gate & GATE_RESERVED != 0 {
        return Err(DescriptorError::GateReserved);
    }
    Ok(gate)
}

/// A descriptor page that failed validation: which entry, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadDescriptor {
    /// The first refused entry, `0..512`.
    pub index: usize,
    pub error: DescriptorError,
}

/// Xen's `validate_segdesc_page`: checks the 512 descriptors of a frame becoming a
/// GDT or LDT page, rewriting each accepted one in place, and stops at the first
/// refused one. As in Xen, the entries before it stay rewritten; the frame does
/// not get the descriptor-page type (`-EINVAL`, [`DescriptorError::errno`]).
pub fn validate_segdesc_page(page: &mut [u64; 512]) -> Result<(), BadDescriptor> {
    for (index, desc) in page.iter_mut().enumerate() {
        *desc = check_descriptor(*desc).map_err(|error| BadDescriptor { index, error })?;
    }
    Ok(())
}

/// The checks `do_update_descriptor` makes before it looks up the frame: the
/// guest-physical address must be 8-byte aligned ("or it will corrupt adjacent
/// descriptors") and the descriptor acceptable; both fail with `-EINVAL`. Gives
/// the descriptor to store. The frame lookup and its type (a descriptor page, or
/// else one that can be made writable) are the caller's, also `-EINVAL`.
pub fn update_descriptor(gaddr: u64, raw: u64) -> Result<u64, Errno> {
    if !gaddr.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    check_descriptor(raw).map_err(DescriptorError::errno)
}

/// `do_set_gdt`/`pv_set_gdt`'s first check: at most [`GDT_MAX_ENTRIES`] entries
/// (`-EINVAL`). Gives how many frames the guest's list must hold,
/// `DIV_ROUND_UP(entries, 512)`, at most 14.
pub fn set_gdt_frames(entries: u32) -> Result<usize, Errno> {
    let entries = entries as usize;
    if entries > GDT_MAX_ENTRIES {
        return Err(Errno::EINVAL);
    }
    Ok(entries.div_ceil(512))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A descriptor from its parts: `access` is bits 40..47 (type, S, DPL, P).
    fn seg(access: u8, flags: u8) -> u64 {
        0x0000_0000_0000_ffff | (u64::from(access) << 40) | (u64::from(flags & 0xF) << 52)
    }

    /// A 64-bit call gate's lower half.
    fn gate(selector: u16, offset: u32, dpl: u8) -> u64 {
        u64::from(offset & 0xFFFF)
            | (u64::from(selector) << 16)
            | (u64::from(0x80 | (dpl << 5) | 0x0C) << 40)
            | (u64::from(offset >> 16) << 48)
    }

    #[test]
    fn not_present_is_accepted_unchanged() {
        // "A not-present descriptor will always fault, so is safe."
        for raw in [0, 0x0000_7c00_dead_beef, 0x00af_1b00_0000_ffff, !P] {
            assert_eq!(check_descriptor(raw), Ok(raw));
        }
    }

    #[test]
    fn code_and_data_get_dpl_3() {
        // __fixup_guest_selector(dom, dpl) with GUEST_KERNEL_RPL 3, then "All code
        // and data segments are okay. No base/limit checking."
        for dpl in 0..4u8 {
            let code64 = seg(0x9B | (dpl << 5), 0xA);
            assert_eq!(check_descriptor(code64), Ok(seg(0xFB, 0xA)));
            let data = seg(0x93 | (dpl << 5), 0xC);
            assert_eq!(check_descriptor(data), Ok(seg(0xF3, 0xC)));
        }
        // No base or limit check, no L check for a 64-bit domain.
        let odd = 0xFFEF_9BFF_FFFF_FFFF;
        assert_eq!(check_descriptor(odd), Ok(odd | DPL_MASK));
    }

    #[test]
    fn reserved_r3_descriptors_pass_as_they_are() {
        for (sel, desc) in RESERVED_DESCRIPTORS {
            let want = if sel & 3 == 3 { desc } else { desc | DPL_MASK };
            assert_eq!(check_descriptor(desc), Ok(want), "{sel:#x}");
        }
    }

    #[test]
    fn system_type_0_is_accepted_without_dpl_fixup() {
        // "Invalid type 0 is harmless": `return true` before `good:`, so the DPL
        // fix-up is not stored.
        let upper_half = P | 0x0000_0000_ffff_8000;
        assert_eq!(check_descriptor(upper_half), Ok(upper_half));
    }

    #[test]
    fn other_system_descriptors_are_refused() {
        // "Everything but a call gate is discarded here."
        for kind in (1..16u8).filter(|&k| k != 12) {
            let raw = seg(0x80 | 0x60 | kind, 0);
            assert_eq!(
                check_descriptor(raw),
                Err(DescriptorError::SystemType { kind })
            );
        }
        assert_eq!(DescriptorError::GateReserved.errno(), Errno::EINVAL);
    }

    #[test]
    fn call_gates_are_forced_to_dpl_0_with_rpl_3() {
        // "Force DPL to zero ... Store the original DPL in the selector's RPL
        // field": the DPL is already fixed up to 3.
        for dpl in 0..4u8 {
            let raw = gate(0x0010, 0x1234_5678, dpl);
            assert_eq!(check_descriptor(raw), Ok(gate(0x0013, 0x1234_5678, 0)));
        }
        // FLAT_KERNEL_CS and LDT selectors are fine targets
        // (guest_gate_selector_okay).
        assert_eq!(
            check_descriptor(gate(FLAT_KERNEL_CS, 0, 3)),
            Ok(gate(FLAT_KERNEL_CS, 0, 0))
        );
        assert_eq!(
            check_descriptor(gate(0xe00c, 0, 3)),
            Ok(gate(0xe00f, 0, 0)),
            "TI set: an LDT selector, whatever its index"
        );
        // The last guest GDT entry is fine, Xen's are not.
        assert!(check_descriptor(gate(0xdff8, 0, 3)).is_ok());
        for sel in [0xe000, HYPERVISOR_CS, FLAT_RING3_CS32, 0xe030, 0xfffb] {
            assert_eq!(
                check_descriptor(gate(sel, 0, 3)),
                Err(DescriptorError::GateSelector { selector: sel })
            );
        }
    }

    #[test]
    fn call_gate_reserved_bits() {
        // "Reserved bits must be zero": b & 0xff for a 64-bit domain.
        let raw = gate(0x10, 0, 3) | (1 << 32);
        assert_eq!(check_descriptor(raw), Err(DescriptorError::GateReserved));
    }

    #[test]
    fn a_16_byte_call_gate_is_two_independent_slots() {
        let lower = gate(0x10, 0x8000_1000, 3);
        let upper = 0x0000_0000_ffff_ffff; // offset 63..32; type 0, P clear
        assert_eq!(check_descriptor(lower), Ok(gate(0x13, 0x8000_1000, 0)));
        assert_eq!(check_descriptor(upper), Ok(upper));
    }

    #[test]
    fn a_page_is_rewritten_in_place_up_to_the_first_bad_entry() {
        let mut page = [0u64; 512];
        page[1] = seg(0x9B, 0xA);
        page[2] = seg(0x89, 0); // a TSS: refused
        page[3] = seg(0x93, 0xC);
        assert_eq!(
            validate_segdesc_page(&mut page),
            Err(BadDescriptor {
                index: 2,
                error: DescriptorError::SystemType { kind: 9 }
            })
        );
        assert_eq!(page[1], seg(0xFB, 0xA), "rewritten before the failure");
        assert_eq!(page[3], seg(0x93, 0xC), "not reached");
        page[2] = 0;
        assert_eq!(validate_segdesc_page(&mut page), Ok(()));
        assert_eq!(page[3], seg(0xF3, 0xC));
    }

    #[test]
    fn update_descriptor_needs_alignment() {
        // do_update_descriptor: !IS_ALIGNED(gaddr, sizeof(d)) -> -EINVAL.
        assert_eq!(update_descriptor(0x1004, 0), Err(Errno::EINVAL));
        assert_eq!(
            update_descriptor(0x1008, seg(0x93, 0xC)),
            Ok(seg(0xF3, 0xC))
        );
        assert_eq!(update_descriptor(0x1008, seg(0x82, 0)), Err(Errno::EINVAL));
    }

    #[test]
    fn gdt_geometry() {
        // pv_set_gdt: entries > FIRST_RESERVED_GDT_ENTRY -> -EINVAL.
        assert_eq!(set_gdt_frames(0), Ok(0));
        assert_eq!(set_gdt_frames(1), Ok(1));
        assert_eq!(set_gdt_frames(513), Ok(2));
        assert_eq!(set_gdt_frames(7168), Ok(14));
        assert_eq!(set_gdt_frames(7169), Err(Errno::EINVAL));
        assert_eq!(set_gdt_frames(u32::MAX), Err(Errno::EINVAL));
        assert_eq!(LAST_RESERVED_GDT_ENTRY, 7679);
        assert_eq!(LAST_RESERVED_GDT_BYTE, 0xEFFF);
        assert_eq!(
            (TSS_SELECTOR, LDT_SELECTOR, PER_CPU_SELECTOR),
            (0xe040, 0xe050, 0xe060)
        );
        assert_eq!(per_cpu_descriptor(0), 0x0000_9100_0000_0000);
        assert_eq!(per_cpu_descriptor(0x12345), 0x0001_9100_0000_2345);
        const { assert!(GDT_VIRT_PAGES > LAST_RESERVED_GDT_PAGE) };
        assert_eq!(LDT_MAX_ENTRIES * 8, 64 * 1024);
    }

    proptest! {
        #[test]
        fn check_descriptor_is_total_and_idempotent(raw in any::<u64>()) {
            if let Ok(d) = check_descriptor(raw) {
                prop_assert_eq!(check_descriptor(d), Ok(d));
                if d & P != 0 && d & S != 0 {
                    prop_assert_eq!((d & DPL_MASK) >> DPL_SHIFT, 3);
                }
                if d & P != 0 && d & S == 0 && d & TYPE_MASK != 0 {
                    prop_assert_eq!(d & DPL_MASK, 0, "a gate nobody can use directly");
                    prop_assert_eq!((d >> 16) & 3, 3);
                }
                // Only the DPL and the gate's RPL may change.
                prop_assert_eq!(d & !DPL_MASK & !(3 << 16), raw & !DPL_MASK & !(3 << 16));
            }
        }
    }
}
