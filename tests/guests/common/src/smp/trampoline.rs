//! The real-mode trampoline an AP runs after INIT + SIPI: 16-bit code -> 32-bit
//! protected mode -> long mode on vCPU 0's page tables -> the common AP entry
//! ([`super::vcpus::ap_entry`]).
//!
//! # Why a trampoline
//!
//! A start-up IPI starts a vCPU in real mode at CS:IP = (vector << 8):0000, i.e.
//! guest-physical `vector << 12`, paging off, every general register 0 (Xen
//! `hvm_vcpu_reset_state`, SDM Vol. 3A §9.4.4). That is below 1 MiB, where the
//! image (linked at 1 MiB) is not; so vCPU 0 copies this code to [`PA`] (a page
//! of the RAM the memory map reports below 640 KiB, which nothing else of the
//! guest uses: the image, `hvm_start_info` and its data are at or above 1 MiB,
//! the ACPI tables in the reserved 0xE0000 area — the mode checks all of that
//! before it copies) and sends the vector [`PAGE`].
//!
//! # Position-independent, not linked low
//!
//! The code is assembled into the image's `.text` like everything else and uses
//! only offsets from its own start, `smp_trampoline_start`: assembler constants
//! (differences of labels in one section), so it runs from wherever it is copied.
//! The alternative, a section linked at 0x8000 and loaded in the image, would put
//! a second load address into the shared linker script (`link.ld`, pvh32's too)
//! and into the ELF every PVH loader reads, for no gain. The price is small: in
//! real mode the page's physical address is CS x 16, computed into EBX at the
//! top, and the three values that need an absolute address (the GDT pointer's
//! base and the two far-jump targets) are patched into the copy by the AP itself
//! before it uses them. The patch writes the same values every time, so a start
//! interrupted by another INIT + SIPI (the storm) and begun again is harmless.
//!
//! # The way to long mode (SDM Vol. 3A §9.9, §9.8.5)
//!
//! 1. Real mode: DS = CS; count the start in `smp_tramp_entries` (`lock incl`);
//!    EBX = CS << 4; patch; `lgdtl` the trampoline's own GDT (32-bit code 0x08,
//!    data 0x10, 64-bit code 0x18); CR0.PE; far jump to the 32-bit code.
//! 2. Protected mode, flat segments: CR4.PAE, CR3 = the hand-off's `cr3` (vCPU
//!    0's PML4, which must lie below 4 GiB: CR3 is loaded from a 32-bit register
//!    here), EFER.LME, CR0.PG (|PE): long mode is active, in compatibility mode
//!    until the far jump to the 64-bit code segment.
//! 3. 64-bit: RSP, RDI and the target from the hand-off, jump to the common AP
//!    entry, which loads the guest's own GDT and the IDT.
//!
//! No stack is used before step 3 and interrupts stay off throughout (the SIPI
//! leaves RFLAGS.IF clear; `cli` anyway). The A20 gate is not touched: no
//! hypervisor masks it.
//!
//! # The hand-off
//!
//! Four 8-byte words inside the copy, written by vCPU 0 before it sends INIT +
//! SIPI ([`install`], [`hand_off`]): `cr3`, `stack`, `entry` (the AP entry
//! stub's address) and `vcpu` (the id the AP starts as, in RDI). One AP starts at
//! a time, so one set suffices. While no start is expected, the hand-off names
//! a stack no AP owns (`vcpus::stray_stack_top`), so a start nobody asked for is
//! noticed and halts instead of running on another vCPU's stack.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The start-up IPI's vector: the page the trampoline runs in.
pub const PAGE: u8 = 0x08;

/// That page's guest-physical (and, identity-mapped, virtual) address.
pub const PA: u64 = (PAGE as u64) << 12;

unsafe extern "C" {
    /// First byte of the trampoline (in `.text`).
    static smp_trampoline_start: u8;
    /// One past its last byte.
    static smp_trampoline_end: u8;
    /// The hand-off words and the start counter (inside it).
    static smp_tramp_cr3: u8;
    static smp_tramp_stack: u8;
    static smp_tramp_entry: u8;
    static smp_tramp_vcpu: u8;
    static smp_tramp_entries: u8;
}

/// The trampoline's start in the image, and its length.
fn source() -> (usize, usize) {
    let start = &raw const smp_trampoline_start as usize;
    let end = &raw const smp_trampoline_end as usize;
    (start, end - start)
}

/// The trampoline's length in bytes (it must fit the page).
pub fn len() -> usize {
    source().1
}

/// The offset of a label inside the trampoline.
fn offset(label: *const u8) -> usize {
    label as usize - source().0
}

/// Writes the 8-byte hand-off word at `label`'s offset in the copy.
fn write_word(label: *const u8, value: u64) {
    let at = PA as usize + offset(label);
    assert!(at.is_multiple_of(8) && at + 8 <= PA as usize + 4096);
    // SAFETY: inside the trampoline page at PA, which `install` checked is RAM
    // no part of the guest uses, identity-mapped, and 8-aligned (`.balign 8` in
    // the asm). No AP executes the trampoline while vCPU 0 writes it (see the
    // module docs).
    unsafe { core::ptr::write_volatile(at as *mut u64, value) };
}

/// Set once [`install`] has copied the trampoline.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether the trampoline is in place (INIT + SIPI would run garbage without).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// Copies the trampoline to [`PA`] and sets the hand-off's `cr3` and `entry`
/// (and a stray stack, see the module docs).
///
/// The caller has checked that the page is RAM nothing else uses, and that
/// `cr3` is below 4 GiB.
pub fn install(cr3: u64, entry: u64, stray_stack: u64) {
    let (start, len) = source();
    assert!(len <= 4096 && cr3 < 1 << 32);
    for i in 0..len {
        // SAFETY: reading the image's own code (mapped, never written) and
        // writing the trampoline page (see `write_word`).
        unsafe {
            let b = core::ptr::read_volatile((start + i) as *const u8);
            core::ptr::write_volatile((PA as usize + i) as *mut u8, b);
        }
    }
    write_word(&raw const smp_tramp_cr3, cr3);
    write_word(&raw const smp_tramp_entry, entry);
    hand_off(stray_stack, u64::MAX);
    INSTALLED.store(true, Ordering::SeqCst);
}

/// Sets who the next start is: its stack top and vcpu id.
pub fn hand_off(stack: u64, vcpu: u64) {
    write_word(&raw const smp_tramp_stack, stack);
    write_word(&raw const smp_tramp_vcpu, vcpu);
}

/// How many times an AP has begun the trampoline (its first instructions count).
pub fn entries() -> u32 {
    if !installed() {
        return 0;
    }
    let at = PA as usize + offset(&raw const smp_tramp_entries);
    assert!(at.is_multiple_of(4));
    // SAFETY: inside the installed trampoline page (see `write_word`), 4-aligned;
    // APs increment it with `lock incl`, so it is accessed atomically both ways.
    unsafe { AtomicU32::from_ptr(at as *mut u32) }.load(Ordering::SeqCst)
}

global_asm!(
    r#"
    .pushsection .text.smp_trampoline, "ax"
    .balign 16
    .globl smp_trampoline_start
smp_trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    mov $(smp_tramp_entries - smp_trampoline_start), %si
    lock incl (%si)
    xor %ebx, %ebx
    mov %ax, %bx
    shl $4, %ebx                    /* ebx = this page's physical address */

    mov %ebx, %eax                  /* patch the GDT pointer's base */
    add $(smp_tramp_gdt - smp_trampoline_start), %eax
    mov $(smp_tramp_gdt_ptr - smp_trampoline_start), %si
    mov %eax, 2(%si)
    mov %ebx, %eax                  /* and the far jumps' targets */
    add $(smp_tramp_pm32 - smp_trampoline_start), %eax
    mov $(smp_tramp_far32 - smp_trampoline_start), %si
    mov %eax, (%si)
    mov %ebx, %eax
    add $(smp_tramp_lm64 - smp_trampoline_start), %eax
    mov $(smp_tramp_far64 - smp_trampoline_start), %si
    mov %eax, (%si)

    mov $(smp_tramp_gdt_ptr - smp_trampoline_start), %si
    lgdtl (%si)
    mov %cr0, %eax
    or $1, %eax                     /* CR0.PE */
    mov %eax, %cr0
    mov $(smp_tramp_far32 - smp_trampoline_start), %si
    ljmpl *(%si)

    .code32
smp_tramp_pm32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr4, %eax
    or $0x20, %eax                  /* CR4.PAE */
    mov %eax, %cr4
    mov (smp_tramp_cr3 - smp_trampoline_start)(%ebx), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx           /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax            /* CR0.PG | PE */
    mov %eax, %cr0
    ljmpl *(smp_tramp_far64 - smp_trampoline_start)(%ebx)

    .code64
smp_tramp_lm64:
    mov %ebx, %ebx                  /* zero-extends: the upper half is undefined */
    mov (smp_tramp_stack - smp_trampoline_start)(%rbx), %rsp
    mov (smp_tramp_vcpu - smp_trampoline_start)(%rbx), %rdi
    mov (smp_tramp_entry - smp_trampoline_start)(%rbx), %rax
    jmp *%rax

    .balign 8
smp_tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code, flat */
    .quad 0x00cf92000000ffff        /* 0x10: data, flat */
    .quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
smp_tramp_gdt_end:
    .balign 8
smp_tramp_gdt_ptr:
    .word smp_tramp_gdt_end - smp_tramp_gdt - 1
    .long 0                         /* base: patched */
    .balign 8
smp_tramp_far32:
    .long 0                         /* offset: patched */
    .word 0x08
    .balign 8
smp_tramp_far64:
    .long 0                         /* offset: patched */
    .word 0x18
    .balign 8
    .globl smp_tramp_cr3, smp_tramp_stack, smp_tramp_entry, smp_tramp_vcpu, smp_tramp_entries
smp_tramp_cr3:
    .quad 0
smp_tramp_stack:
    .quad 0
smp_tramp_entry:
    .quad 0
smp_tramp_vcpu:
    .quad 0
smp_tramp_entries:
    .long 0
    .balign 8
    .globl smp_trampoline_end
smp_trampoline_end:
    .popsection
"#,
    options(att_syntax)
);
