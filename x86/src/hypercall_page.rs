//! The hypercall page: the code an HVM/PVH guest calls to make a hypercall.
//!
//! # What and why
//!
//! A Xen guest does not hard-code VMCALL or VMMCALL: it asks CPUID leaf 0x40000002 for
//! the MSR (EBX) and writes the guest-physical address of a page of its own to it; the
//! hypervisor then fills that page with one stub per hypercall, and the guest calls
//! `hypercall_page + 32 * nr`. That keeps the guest vendor-neutral: the same kernel runs
//! on VMX (VMCALL, `0F 01 C1`, SDM Vol. 2B / Vol. 3C §25.1.3) and SVM (VMMCALL,
//! `0F 01 D9`, APM Vol. 3), and a VMCALL on AMD or a VMMCALL on Intel would be #UD.
//!
//! # Layout (as Xen's `vmx_init_hypercall_page` / `svm_init_hypercall_page`, with the
//! page first filled with `0xCC` by `init_hypercall_page`)
//!
//! * 128 entries of 32 bytes. Entry `i` is `mov $i, %eax` (`B8` + imm32, little
//!   endian), then VMCALL or VMMCALL, then `ret` (`C3`): 5 + 3 + 1 = 9 bytes.
//! * Entry 23, `__HYPERVISOR_iret`, is `ud2` (`0F 0B`) instead: HYPERVISOR_iret is a PV
//!   operation that HVM guests do not have, and Xen makes calling it fault in the guest
//!   rather than reach the hypervisor.
//! * Every other byte is `0xCC` (INT3), so a jump into the middle of an entry traps.
//!
//! The stubs only load EAX: the arguments are already in RDI, RSI, RDX, R10, R8 (64-bit)
//! or EBX, ECX, EDX, ESI, EDI (32-bit), where the guest put them before the call.
//! `mov $i, %eax` encodes the same way in 32- and 64-bit code, so one page serves both.
//!
//! # Invariants
//!
//! * The page is completely rewritten: nothing of its previous contents survives (it is
//!   guest memory, so it held whatever the guest left there).
//! * Every entry decodes, from its first byte, to the instructions above (tested with
//!   keel's own decoder, the one that checks VMCALL/VMMCALL exits).

/// Which hypercall instruction the stubs use: the one the CPU's virtualization
/// extension intercepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallInsn {
    /// Intel VMX: `0F 01 C1`.
    Vmcall,
    /// AMD SVM: `0F 01 D9`.
    Vmmcall,
}

impl HypercallInsn {
    /// The instruction's bytes.
    pub const fn bytes(self) -> [u8; 3] {
        match self {
            HypercallInsn::Vmcall => [0x0F, 0x01, 0xC1],
            HypercallInsn::Vmmcall => [0x0F, 0x01, 0xD9],
        }
    }
}

/// Size of the hypercall page.
pub const HYPERCALL_PAGE_SIZE: usize = 4096;
/// Size of one entry.
pub const HYPERCALL_ENTRY_SIZE: usize = 32;
/// Number of entries: hypercall numbers 0..=127.
pub const HYPERCALL_ENTRIES: usize = HYPERCALL_PAGE_SIZE / HYPERCALL_ENTRY_SIZE;
/// `__HYPERVISOR_iret` (xen/include/public/xen.h): its entry is `ud2` for HVM guests.
pub const HYPERVISOR_IRET: usize = 23;

/// The filler: INT3.
const INT3: u8 = 0xCC;
/// `ud2`.
const UD2: [u8; 2] = [0x0F, 0x0B];
/// `mov imm32, %eax`.
const MOV_EAX_IMM32: u8 = 0xB8;
/// `ret`.
const RET: u8 = 0xC3;

/// Writes the hypercall page a guest gets for `insn`'s vendor into `page`.
pub fn fill_hypercall_page(page: &mut [u8; HYPERCALL_PAGE_SIZE], insn: HypercallInsn) {
    page.fill(INT3);
    // 4096 is a multiple of 32: there is no remainder.
    let (entries, _) = page.as_chunks_mut::<HYPERCALL_ENTRY_SIZE>();
    for (nr, entry) in entries.iter_mut().enumerate() {
        if nr == HYPERVISOR_IRET {
            entry[..2].copy_from_slice(&UD2);
            continue;
        }
        entry[0] = MOV_EAX_IMM32;
        // `nr < 128`: the cast cannot truncate.
        entry[1..5].copy_from_slice(&(nr as u32).to_le_bytes());
        entry[5..8].copy_from_slice(&insn.bytes());
        entry[8] = RET;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decodes the whole 64-bit page `p` from its first byte: every byte is
    /// code, and every entry starts on an instruction boundary (the HVM and
    /// the PV page alike).
    pub(crate) fn assert_entries_on_instruction_boundaries(p: &[u8; HYPERCALL_PAGE_SIZE]) {
        let mut off = 0;
        let mut starts = [false; HYPERCALL_PAGE_SIZE];
        while off < HYPERCALL_PAGE_SIZE {
            starts[off] = true;
            let i = decode(&p[off..], CodeMode::Long64).expect("the page is all code");
            off += usize::from(i.len);
        }
        assert_eq!(off, HYPERCALL_PAGE_SIZE);
        for nr in 0..HYPERCALL_ENTRIES {
            assert!(starts[nr * HYPERCALL_ENTRY_SIZE], "entry {nr}");
        }
    }
    use crate::insn::{CodeMode, InsnKind, decode};

    fn page(insn: HypercallInsn) -> [u8; HYPERCALL_PAGE_SIZE] {
        // Start from guest garbage: nothing of it may survive.
        let mut p = [0x5Au8; HYPERCALL_PAGE_SIZE];
        fill_hypercall_page(&mut p, insn);
        p
    }

    fn expect_int3_padding(entry: &[u8], from: usize, mode: CodeMode) {
        for off in from..entry.len() {
            assert_eq!(entry[off], 0xCC);
            let i = decode(&entry[off..], mode).expect("int3 decodes");
            assert_eq!((i.len, i.kind), (1, InsnKind::Int3));
        }
    }

    #[test]
    fn every_entry_is_mov_hypercall_ret() {
        for (insn, kind) in [
            (HypercallInsn::Vmcall, InsnKind::Vmcall),
            (HypercallInsn::Vmmcall, InsnKind::Vmmcall),
        ] {
            let p = page(insn);
            for mode in [CodeMode::Long64, CodeMode::Prot32] {
                for (nr, entry) in p.as_chunks::<HYPERCALL_ENTRY_SIZE>().0.iter().enumerate() {
                    if nr == HYPERVISOR_IRET {
                        continue;
                    }
                    let mov = decode(entry, mode).expect("mov decodes");
                    assert_eq!(mov.len, 5);
                    assert_eq!(mov.kind, InsnKind::Other { opcode: 0xB8 });
                    let imm = u32::from_le_bytes([entry[1], entry[2], entry[3], entry[4]]);
                    assert_eq!(imm as usize, nr);

                    let call = decode(&entry[5..], mode).expect("hypercall decodes");
                    assert_eq!((call.len, call.kind), (3, kind));

                    let ret = decode(&entry[8..], mode).expect("ret decodes");
                    assert_eq!((ret.len, ret.kind), (1, InsnKind::Other { opcode: 0xC3 }));

                    expect_int3_padding(entry, 9, mode);
                }
            }
        }
    }

    #[test]
    fn the_iret_entry_is_ud2() {
        for insn in [HypercallInsn::Vmcall, HypercallInsn::Vmmcall] {
            let p = page(insn);
            let entry = &p[HYPERVISOR_IRET * 32..(HYPERVISOR_IRET + 1) * 32];
            let ud2 = decode(entry, CodeMode::Long64).expect("ud2 decodes");
            assert_eq!((ud2.len, ud2.kind), (2, InsnKind::Other { opcode: 0x0F0B }));
            expect_int3_padding(entry, 2, CodeMode::Long64);
            // Its neighbours are ordinary.
            assert_eq!(&p[22 * 32..22 * 32 + 5], &[0xB8, 22, 0, 0, 0]);
            assert_eq!(&p[24 * 32..24 * 32 + 5], &[0xB8, 24, 0, 0, 0]);
        }
    }

    #[test]
    fn the_whole_page_decodes_with_entry_boundaries_on_instruction_boundaries() {
        assert_entries_on_instruction_boundaries(&page(HypercallInsn::Vmcall));
    }

    #[test]
    fn vendors_differ_only_in_the_hypercall_instruction() {
        let a = page(HypercallInsn::Vmcall);
        let b = page(HypercallInsn::Vmmcall);
        for (off, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            let in_insn = off % 32 == 7 && off / 32 != HYPERVISOR_IRET;
            assert_eq!(x != y, in_insn, "offset {off}");
        }
        assert_eq!(&a[5..9], &[0x0F, 0x01, 0xC1, 0xC3]);
        assert_eq!(&b[5..9], &[0x0F, 0x01, 0xD9, 0xC3]);
        assert_eq!(HYPERCALL_ENTRIES, 128);
    }
}
