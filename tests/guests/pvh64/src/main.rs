//! pvh64: the long-mode PVH test guest.
//!
//! The PVH ABI (Xen `docs/misc/pvh.pandoc`) enters a kernel at the 32-bit address in
//! its `XEN_ELFNOTE_PHYS32_ENTRY` note, in protected mode with paging off, flat
//! 4 GiB segments, interrupts off and `ebx` = guest-physical address of
//! `hvm_start_info`. This file is that note and the stub behind it: zero `.bss`, set
//! up a stack, build page tables identity-mapping the first 4 GiB with 2 MiB pages
//! (PML4 -> one PDPT -> four page directories), enable PAE, EFER.LME and paging
//! (SDM Vol. 3A §9.8.5), load a GDT with a 64-bit code segment, far-jump into long
//! mode and call [`pvh_common::main`]. Everything else is in `pvh-common`.
//!
//! The very first instruction reads the TSC into `pvh_entry_tsc` (in `.data`,
//! which is loaded, not zeroed): `mode=bench` measures from there to its first
//! console line.
//!
//! The image is an ELF64 for x86-64; `cargo xtask build` also converts it to ELF32
//! with machine x86-64 (`pvh64-elf32.elf`, as Xen's XTF does), which PVH loaders
//! must accept the same way.
//!
//! Hazard: after the switch to long mode the upper halves of the registers are
//! undefined, so the start_info address is moved into `edi` by a 32-bit `mov` in
//! 64-bit code (which zero-extends).

#![no_std]
#![no_main]

use core::arch::global_asm;

/// Rust entry, called by the stub in long mode with the identity map active.
#[unsafe(no_mangle)]
extern "C" fn pvh64_main(start_info_pa: u64) -> ! {
    pvh_common::main(start_info_pa)
}

global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                     /* namesz: "Xen\0" */
    .long 4                     /* descsz */
    .long {phys32_entry}        /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4
    .popsection

    .pushsection .text.pvh_entry, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    rdtsc                       /* the benchmark's time zero (pvh_entry_tsc) */
    mov %eax, pvh_entry_tsc
    mov %edx, pvh_entry_tsc+4
    cli
    cld
    mov %ebx, %esi              /* hvm_start_info, kept in esi */

    mov $__bss_start, %edi      /* zero .bss: stack, page tables, statics */
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $pvh_stack_top, %esp

    mov $pvh_pdpt, %eax         /* PML4[0] -> PDPT */
    or $3, %eax
    mov %eax, pvh_pml4

    mov $pvh_pd, %eax           /* PDPT[0..4] -> the four page directories */
    or $3, %eax
    xor %ecx, %ecx
1:  mov %eax, pvh_pdpt(,%ecx,8)
    add $4096, %eax
    inc %ecx
    cmp $4, %ecx
    jb 1b

    mov $0x83, %eax             /* 2048 x 2 MiB: present, writable, PS */
    xor %ecx, %ecx
2:  mov %eax, pvh_pd(,%ecx,8)
    add $0x200000, %eax
    inc %ecx
    cmp $2048, %ecx
    jb 2b

    mov %cr4, %eax              /* CR4.PAE */
    or $0x20, %eax
    mov %eax, %cr4
    mov $pvh_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx       /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax              /* CR0.PG (PE is already set) */
    or $0x80000001, %eax
    mov %eax, %cr0

    lgdt pvh_gdt_ptr
    ljmp $0x08, $3f

    .code64
3:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $pvh_stack_top, %rsp
    mov %esi, %edi              /* zero-extends: the argument of pvh64_main */
    call pvh64_main
4:  cli
    hlt
    jmp 4b
    .popsection

    .pushsection .data.pvh_gdt, "aw"
    .balign 16
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
pvh_gdt_end:
    .balign 4
pvh_gdt_ptr:
    .word pvh_gdt_end - pvh_gdt - 1
    .long pvh_gdt
    .balign 8
    .globl pvh_entry_tsc
pvh_entry_tsc:                  /* in .data: .bss is zeroed after the read */
    .quad 0
    .popsection

    .pushsection .bss.pvh_boot, "aw", @nobits
    .balign 4096
pvh_pml4:
    .skip 4096
pvh_pdpt:
    .skip 4096
pvh_pd:
    .skip 4096 * 4
    .balign 16
pvh_stack:
    .skip 65536
pvh_stack_top:
    .popsection
"#,
    phys32_entry = const pvh_common::abi::elfnote::XEN_ELFNOTE_PHYS32_ENTRY,
    options(att_syntax)
);
