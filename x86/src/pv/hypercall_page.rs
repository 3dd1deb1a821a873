//! The hypercall page of a 64-bit PV guest: 128 stubs that enter keel with
//! `syscall`.
//!
//! # What and why
//!
//! A PV guest kernel runs in ring 3, so a `syscall` from it reaches the hypervisor
//! (LSTAR) like any other; in kernel mode that *is* the hypercall instruction. The
//! stubs save RCX and R11 around it because `syscall` overwrites them (return RIP
//! and RFLAGS) and the hypercall ABI promises them back. The guest calls
//! `hypercall_page + 32 * nr` (`xen-x86_64.h`).
//!
//! # Layout (Xen's `pv_ring3_init_hypercall_page`, after `init_hypercall_page`
//! fills the page with `0xCC`)
//!
//! * 128 entries of 32 bytes. Entry `i` is, 14 bytes:
//!   `push %rcx` (`51`), `push %r11` (`41 53`), `mov $i, %eax` (`B8` + imm32),
//!   `syscall` (`0F 05`), `pop %r11` (`41 5B`), `pop %rcx` (`59`), `ret` (`C3`).
//! * Entry 23, `__HYPERVISOR_iret`, does not return and is jumped to, not called.
//!   It is 11 bytes: `push %rcx`, `push %r11`, `push %rax` (`50`), `mov $23, %eax`,
//!   `syscall`. The three pushes complete the `iret_context` on the guest stack
//!   (RAX lowest), which `do_iret` reads at the RSP of the `syscall`
//!   ([`super::iret`]).
//! * Every other byte is `0xCC` (INT3).
//!
//! # Invariants
//!
//! * The page is completely rewritten: nothing of its previous (guest) contents
//!   survives.
//! * Every entry decodes, from its first byte, to the instructions above (tested
//!   with keel's own decoder).
//!
//! # Sources
//!
//! `xen/arch/x86/pv/hypercall.c`: `pv_ring3_init_hypercall_page`;
//! `xen/arch/x86/domain.c`: `init_hypercall_page` (the `0xCC` fill).
//!
//! # Locking
//!
//! None: the caller owns the page it passes in.

use crate::hypercall_page::{HYPERCALL_ENTRY_SIZE, HYPERCALL_PAGE_SIZE, HYPERVISOR_IRET};

/// The filler: INT3.
const INT3: u8 = 0xCC;
/// `push %rcx; push %r11`.
const SAVE: [u8; 3] = [0x51, 0x41, 0x53];
/// `push %rax`.
const PUSH_RAX: u8 = 0x50;
/// `mov imm32, %eax`.
const MOV_EAX_IMM32: u8 = 0xB8;
/// `syscall`.
const SYSCALL: [u8; 2] = [0x0F, 0x05];
/// `pop %r11; pop %rcx; ret`.
const RESTORE_RET: [u8; 4] = [0x41, 0x5B, 0x59, 0xC3];

/// Length of an ordinary entry's code.
pub const ENTRY_LEN: usize = 14;
/// Length of the `iret` entry's code.
pub const IRET_ENTRY_LEN: usize = 11;

/// Writes the hypercall page of a 64-bit PV guest into `page`.
pub fn fill_pv_hypercall_page(page: &mut [u8; HYPERCALL_PAGE_SIZE]) {
    page.fill(INT3);
    // 4096 is a multiple of 32: there is no remainder.
    let (entries, _) = page.as_chunks_mut::<HYPERCALL_ENTRY_SIZE>();
    for (nr, entry) in entries.iter_mut().enumerate() {
        // `nr < 128`: the cast cannot truncate.
        let imm = (nr as u32).to_le_bytes();
        entry[..3].copy_from_slice(&SAVE);
        if nr == HYPERVISOR_IRET {
            entry[3] = PUSH_RAX;
            entry[4] = MOV_EAX_IMM32;
            entry[5..9].copy_from_slice(&imm);
            entry[9..11].copy_from_slice(&SYSCALL);
            continue;
        }
        entry[3] = MOV_EAX_IMM32;
        entry[4..8].copy_from_slice(&imm);
        entry[8..10].copy_from_slice(&SYSCALL);
        entry[10..14].copy_from_slice(&RESTORE_RET);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::{CodeMode, InsnKind, decode};

    fn page() -> [u8; HYPERCALL_PAGE_SIZE] {
        // Start from guest garbage: nothing of it may survive.
        let mut p = [0x5Au8; HYPERCALL_PAGE_SIZE];
        fill_pv_hypercall_page(&mut p);
        p
    }

    /// Decodes `entry` from its start: each instruction's (length, opcode, REX byte).
    fn expect_insns(entry: &[u8], want: &[(u8, u32, Option<u8>)]) -> usize {
        let mut off = 0;
        for &(len, opcode, rex) in want {
            let i = decode(&entry[off..], CodeMode::Long64).expect("decodes");
            assert_eq!(i.len, len, "at {off}");
            assert_eq!(i.kind, InsnKind::Other { opcode }, "at {off}");
            assert_eq!(i.prefixes.rex.map(|r| r.raw()), rex, "at {off}");
            off += usize::from(len);
        }
        off
    }

    fn expect_int3_from(entry: &[u8], from: usize) {
        for off in from..entry.len() {
            let i = decode(&entry[off..], CodeMode::Long64).expect("int3 decodes");
            assert_eq!((i.len, i.kind), (1, InsnKind::Int3));
        }
    }

    #[test]
    fn every_entry_saves_rcx_r11_around_syscall() {
        // pv_ring3_init_hypercall_page, the loop body after the iret case.
        let p = page();
        for (nr, entry) in p.as_chunks::<HYPERCALL_ENTRY_SIZE>().0.iter().enumerate() {
            if nr == HYPERVISOR_IRET {
                continue;
            }
            let end = expect_insns(
                entry,
                &[
                    (1, 0x51, None),       // push %rcx
                    (2, 0x53, Some(0x41)), // push %r11
                    (5, 0xB8, None),       // mov $nr, %eax
                    (2, 0x0F05, None),     // syscall
                    (2, 0x5B, Some(0x41)), // pop %r11
                    (1, 0x59, None),       // pop %rcx
                    (1, 0xC3, None),       // ret
                ],
            );
            assert_eq!(end, ENTRY_LEN);
            assert_eq!(entry[4..8], (nr as u32).to_le_bytes());
            expect_int3_from(entry, ENTRY_LEN);
        }
    }

    #[test]
    fn the_iret_entry_pushes_rax_and_does_not_return() {
        // pv_ring3_init_hypercall_page: "HYPERVISOR_iret is special because it
        // doesn't return and expects a special stack frame."
        let p = page();
        let entry = &p[HYPERVISOR_IRET * 32..(HYPERVISOR_IRET + 1) * 32];
        let end = expect_insns(
            entry,
            &[
                (1, 0x51, None),       // push %rcx
                (2, 0x53, Some(0x41)), // push %r11
                (1, 0x50, None),       // push %rax
                (5, 0xB8, None),       // mov $23, %eax
                (2, 0x0F05, None),     // syscall
            ],
        );
        assert_eq!(end, IRET_ENTRY_LEN);
        assert_eq!(entry[5..9], 23u32.to_le_bytes());
        expect_int3_from(entry, IRET_ENTRY_LEN);
    }

    #[test]
    fn the_whole_page_decodes_with_entry_boundaries_on_instruction_boundaries() {
        crate::hypercall_page::tests::assert_entries_on_instruction_boundaries(&page());
    }

    #[test]
    fn documented_bytes() {
        let p = page();
        // Entry 0 and entry 127, byte for byte.
        assert_eq!(
            &p[..16],
            &[
                0x51, 0x41, 0x53, 0xB8, 0, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3, 0xCC, 0xCC
            ]
        );
        assert_eq!(&p[127 * 32 + 3..127 * 32 + 8], &[0xB8, 127, 0, 0, 0]);
        assert_eq!(
            &p[23 * 32..23 * 32 + 12],
            &[0x51, 0x41, 0x53, 0x50, 0xB8, 23, 0, 0, 0, 0x0F, 0x05, 0xCC]
        );
    }
}
