//! pvh32: the 32-bit protected-mode PVH test guest.
//!
//! Entered like every PVH kernel (Xen `docs/misc/pvh.pandoc`): at the address in the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note, 32-bit protected mode, paging off, `ebx` =
//! guest-physical address of `hvm_start_info`. The stub zeroes `.bss`, sets a
//! stack, loads its own flat GDT (the loader's may live in memory the guest does not
//! own) and calls [`pvh_common::main`] (cdecl), still with paging off. The checks
//! then run twice: with paging off, and after `pvh-common` turns on PAE paging, so
//! the hypervisor's handling of 32-bit guests' pointers is tested both untranslated
//! and translated.
//!
//! The image is a native ELF32 (EM_386), built for `i686-pvh-guest.json`:
//! soft-float, no MMX/SSE, static.

#![no_std]
#![no_main]

use core::arch::global_asm;

/// Rust entry, called by the stub (cdecl) with paging still off.
#[unsafe(no_mangle)]
extern "C" fn pvh32_main(start_info_pa: u32) -> ! {
    pvh_common::main(u64::from(start_info_pa))
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
    cli
    cld
    mov %ebx, %esi              /* hvm_start_info, kept in esi */

    mov $__bss_start, %edi      /* zero .bss: stack and statics */
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $pvh_stack_top, %esp
    lgdt pvh_gdt_ptr
    ljmp $0x08, $1f
1:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs

    sub $12, %esp               /* keep the stack 16-byte aligned at the call */
    push %esi
    call pvh32_main
2:  cli
    hlt
    jmp 2b
    .popsection

    .pushsection .data.pvh_gdt, "aw"
    .balign 16
pvh_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: flat 32-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
pvh_gdt_end:
    .balign 4
pvh_gdt_ptr:
    .word pvh_gdt_end - pvh_gdt - 1
    .long pvh_gdt
    .popsection

    .pushsection .bss.pvh_boot, "aw", @nobits
    .balign 16
pvh_stack:
    .skip 65536
pvh_stack_top:
    .popsection
"#,
    phys32_entry = const pvh_common::abi::elfnote::XEN_ELFNOTE_PHYS32_ENTRY,
    options(att_syntax)
);
