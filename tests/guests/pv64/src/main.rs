//! pv64: the 64-bit PV test guest.
//!
//! A PV kernel is an ELF whose Xen notes say where it runs and how to enter it,
//! with no `XEN_ELFNOTE_PHYS32_ENTRY` (that note would make a loader boot it as
//! PVH; Xen's Dom0 builder picks PV for a kernel without it). This file is those
//! notes (`xen/include/public/elfnote.h`; Linux's `arch/x86/xen/xen-head.S` carries
//! the same set) and the entry stub behind `XEN_ELFNOTE_ENTRY`. Everything else
//! is in `pvh-common`'s `pv` module, which documents the start-of-day state.
//!
//! | note | value | why |
//! |---|---|---|
//! | `GUEST_OS` | `keel-pv64` | a name; libelf needs `GUEST_OS` "linux" or `LOADER` "generic" |
//! | `LOADER` | `generic` | the loader Xen's libelf accepts for any guest OS |
//! | `XEN_VERSION` | `xen-3.0` | the only interface version libelf loads |
//! | `VIRT_BASE` | 0xffffffff80000000 (`link.ld`) | bottom of the region the builder maps |
//! | `PADDR_OFFSET` | 0 | `p_paddr` is the pseudo-physical address itself (as in Linux) |
//! | `ENTRY` | `pv_start64` | virtual entry point |
//! | `HYPERCALL_PAGE` | `pvh_common::hypercall::HYPERCALL_PAGE` | filled by the builder before entry |
//! | `PAE_MODE` | `yes` | what every 64-bit PV kernel says (Xen's Dom0 builder then appends `p` to the start_info magic) |
//! | `FEATURES` | `dom0` | may run as Dom0; nothing *required*: the guest never writes its page tables directly |
//!
//! The stub, entered in ring 3 with `rsi` = virtual address of `start_info` and
//! `rsp` = the top of the builder's one-page boot stack: clear the direction
//! flag, keep that `rsp` (in `.data`, for the probe's layout checks), zero `.bss`
//! (the stack, the statics; the hypercall page is outside it, see `link.ld`),
//! switch to a 64 KiB stack of its own and call [`pvh_common::pv::main`] with
//! `start_info` and the boot `rsp`. It touches only `rdi`, `rcx`, `rax` before
//! the call, so `rsi` arrives intact.
//!
//! Every symbol is in the top 2 GiB of the address space (`x86_64-pv-guest.json`:
//! code model `kernel`), and the stub addresses them RIP-relative.

#![no_std]
#![no_main]

use core::arch::global_asm;

use pvh_common::abi::elfnote::{
    XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_FEATURES, XEN_ELFNOTE_GUEST_OS, XEN_ELFNOTE_HYPERCALL_PAGE,
    XEN_ELFNOTE_LOADER, XEN_ELFNOTE_PADDR_OFFSET, XEN_ELFNOTE_PAE_MODE, XEN_ELFNOTE_VIRT_BASE,
    XEN_ELFNOTE_XEN_VERSION,
};

/// Rust entry, called by the stub on its own stack.
#[unsafe(no_mangle)]
extern "C" fn pv64_main(start_info_va: u64, boot_rsp: u64) -> ! {
    pvh_common::pv::main(start_info_va, boot_rsp)
}

global_asm!(
    r#"
    /* One Xen note: namesz 4 ("Xen\0"), descsz, type, name, descriptor, each
       padded to 4 bytes. String descriptors include their NUL. */
    .macro pv_xen_note type:req, desc:vararg
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 2f - 1f
    .long \type
    .asciz "Xen"
    .balign 4
1:  \desc
2:  .balign 4
    .popsection
    .endm

    pv_xen_note {guest_os}, .asciz "keel-pv64"
    pv_xen_note {loader}, .asciz "generic"
    pv_xen_note {xen_version}, .asciz "xen-3.0"
    pv_xen_note {virt_base}, .quad __virt_base
    pv_xen_note {paddr_offset}, .quad 0
    pv_xen_note {entry}, .quad pv_start64
    pv_xen_note {hypercall_page}, .quad {page}
    pv_xen_note {pae_mode}, .asciz "yes"
    pv_xen_note {features}, .asciz "dom0"

    .pushsection .text.pv_entry, "ax"
    .globl pv_start64
pv_start64:
    cld
    mov %rsp, pv_boot_rsp(%rip)

    lea __bss_start(%rip), %rdi     /* zero .bss: stack, statics */
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb

    lea pv_stack_top(%rip), %rsp
    mov %rsi, %rdi                  /* start_info's virtual address */
    mov pv_boot_rsp(%rip), %rsi
    call pv64_main
3:  ud2                             /* not reached; without a trap table, #UD ends the domain */
    jmp 3b
    .popsection

    .pushsection .data.pv_boot, "aw"
    .balign 8
pv_boot_rsp:                        /* in .data: .bss is zeroed after the store */
    .quad 0
    .popsection

    .pushsection .bss.pv_stack, "aw", @nobits
    .balign 16
    .skip 65536
pv_stack_top:
    .popsection
"#,
    guest_os = const XEN_ELFNOTE_GUEST_OS,
    loader = const XEN_ELFNOTE_LOADER,
    xen_version = const XEN_ELFNOTE_XEN_VERSION,
    virt_base = const XEN_ELFNOTE_VIRT_BASE,
    paddr_offset = const XEN_ELFNOTE_PADDR_OFFSET,
    entry = const XEN_ELFNOTE_ENTRY,
    hypercall_page = const XEN_ELFNOTE_HYPERCALL_PAGE,
    page = sym pvh_common::hypercall::HYPERCALL_PAGE,
    pae_mode = const XEN_ELFNOTE_PAE_MODE,
    features = const XEN_ELFNOTE_FEATURES,
    options(att_syntax)
);
