//! The first instructions keel runs: multiboot headers, the 32-bit entry, and the
//! switch to 64-bit mode at keel's high virtual address.
//!
//! Two boot protocols reach the same entry, `_start32`, in 32-bit protected mode with
//! paging off (Multiboot2 spec §3.3; Multiboot 0.6.96 §3.2):
//! - multiboot2 (GRUB's `multiboot2` command, the path on real hardware): EAX =
//!   0x36D76289, EBX = physical address of the boot information;
//! - multiboot v1 with the a.out-kludge address fields (header flag bit 16): QEMU's
//!   `-kernel keel.elf -initrd "..."` (the way QEMU boots the real Xen) and GRUB's
//!   `multiboot`: EAX = 0x2BADB002, EBX = the v1 information structure. Because a v1
//!   loader copies the file linearly from the header's file offset, every loadable
//!   byte of the image must sit in the file at `paddr - load_addr + header offset`;
//!   `cargo xtask build` checks that property of the linked ELF.
//!
//! The image is loaded at physical [`PHYS_BASE`] and linked to run at
//! `mm::layout::IMAGE_VIRT_BASE + phys`, inside the range the x86_64 PV ABI reserves
//! for the hypervisor. The `.boot` section is the exception: it runs at its physical
//! address (VMA = LMA) because it executes before paging is on.
//!
//! The early page tables built here map, with 2 MiB pages:
//! - the first 4 GiB at virtual 0 (identity; needed for the instructions that switch
//!   modes, and dropped when keel loads its own page tables),
//! - the same 4 GiB at `DIRECTMAP_BASE` (so Rust can read the boot information and
//!   modules through the direct map from its first line),
//! - the first 1 GiB at `IMAGE_VIRT_BASE` (where the image runs).
//!
//! Registers handed to Rust: `keel_start(magic: u32, info_phys: u32)` on the boot stack,
//! RBP = 0 so that stack walks stop there.
//!
//! Hazards: this code runs with no exception handling at all; if the CPU lacks long
//! mode it writes a message to COM1 and halts rather than faulting.

/// Physical load address of the image (2 MiB: above legacy low memory, 2 MiB aligned
/// so the image window can use large pages).
pub const PHYS_BASE: u64 = 0x20_0000;

/// Size of the boot stack keel's Rust code starts on (BSP).
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

/// The BSP's boot stack with a guard page below it, which keel leaves unmapped in its
/// own page tables: an overflow faults (and the #DF handler, on its own IST stack,
/// reports it) instead of silently corrupting `.bss`.
#[repr(C, align(4096))]
pub struct BootStack {
    guard: [u8; 4096],
    stack: [u8; BOOT_STACK_SIZE],
}

/// The boot stack, in `.bss`. Only the boot assembly touches it by name.
#[unsafe(no_mangle)]
pub static mut KEEL_BOOT_STACK: BootStack = BootStack {
    guard: [0; 4096],
    stack: [0; BOOT_STACK_SIZE],
};

/// Virtual address of the boot stack's guard page.
pub fn boot_stack_guard() -> u64 {
    // SAFETY: only the address of the static is taken.
    unsafe { core::ptr::addr_of!(KEEL_BOOT_STACK.guard) as u64 }
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    /* The road to long mode every CPU takes (32-bit code, paging off, the
       early tables in .boot.data): CR4.PAE, CR3, EFER.LME (+ NXE if bit 20 of
       `feat`, CPUID 0x80000001 EDX, says the CPU has it), CR0.PG|WP, the
       boot GDT. Clobbers eax, ecx, edx. */
    .macro enter_long_mode feat
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    bt $20, \feat
    jnc .Lno_nx\@
    or $(1 << 11), %eax
.Lno_nx\@:
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | 1), %eax
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    .endm

    .set MB1_MAGIC, 0x1BADB002
    .set MB1_FLAGS, 0x00010003      /* page-align modules, memory info, address fields */
    .set MB2_MAGIC, 0xE85250D6
    .set MB2_ARCH_I386, 0
    .set MB2_HDR_LEN, mb2_header_end - mb2_header
    .set DIRECTMAP_PML4_SLOT, 262   /* 0xFFFF830000000000 >> 39 & 511 */
    .set IMAGE_PML4_SLOT, 261       /* 0xFFFF82D080000000 >> 39 & 511 */
    .set IMAGE_PDPT_SLOT, 322       /* 0xFFFF82D080000000 >> 30 & 511 */

    .section .boot.header, "a"
    .p2align 3
    /* Multiboot v1 header with the a.out-kludge address fields. */
mb1_header:
    .long MB1_MAGIC
    .long MB1_FLAGS
    .long -(MB1_MAGIC + MB1_FLAGS)
    .long mb1_header                /* header_addr */
    .long __keel_load_start         /* load_addr */
    .long __keel_load_end_phys      /* load_end_addr */
    .long __keel_bss_end_phys       /* bss_end_addr */
    .long _start32                  /* entry_addr */

    /* Multiboot2 header: no tags but module alignment; GRUB loads the ELF by its
       program headers and enters at e_entry (= _start32, a physical address). */
    .p2align 3
mb2_header:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long MB2_HDR_LEN
    .long -(MB2_MAGIC + MB2_ARCH_I386 + MB2_HDR_LEN)
    /* module alignment tag (type 6): modules page aligned */
    .short 6, 0
    .long 8
    /* end tag */
    .short 0, 0
    .long 8
mb2_header_end:

    .section .boot.text, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov $boot32_stack_top, %esp
    push %eax                       /* boot protocol magic */
    push %ebx                       /* boot information, physical */

    /* Long mode (CPUID 0x80000001 EDX bit 29) is required. */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb .Lno_long_mode
    mov $0x80000001, %eax
    cpuid
    bt $29, %edx
    jnc .Lno_long_mode
    mov %edx, %ebp                  /* keep for the NX check below */

    /* Zero the seven early tables. */
    mov $boot_pml4, %edi
    xor %eax, %eax
    mov $(7 * 4096 / 4), %ecx
    rep stosl

    /* PML4: identity slot 0, direct-map slot, image slot. */
    mov $boot_pdpt_low, %eax
    or $0x3, %eax
    mov %eax, boot_pml4 + 0 * 8
    mov %eax, boot_pml4 + DIRECTMAP_PML4_SLOT * 8
    mov $boot_pdpt_image, %eax
    or $0x3, %eax
    mov %eax, boot_pml4 + IMAGE_PML4_SLOT * 8

    /* PDPT (low): four page directories for 0..4 GiB. */
    mov $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt_low + 0 * 8
    add $0x1000, %eax
    mov %eax, boot_pdpt_low + 1 * 8
    add $0x1000, %eax
    mov %eax, boot_pdpt_low + 2 * 8
    add $0x1000, %eax
    mov %eax, boot_pdpt_low + 3 * 8

    /* PDPT (image): the image window's first GiB is the first page directory. */
    mov $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt_image + IMAGE_PDPT_SLOT * 8

    /* 2048 large-page entries: entry i maps i * 2 MiB, present|writable|PS. */
    mov $boot_pd, %ebx
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%ebx, %ecx, 8)
    mov %ecx, %eax
    shr $11, %eax                   /* bits 32+ of i * 2 MiB */
    mov %eax, 4(%ebx, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    enter_long_mode %ebp
    pop %esi                        /* info: second argument of keel_start */
    pop %edi                        /* magic: first argument */
    ljmp $0x08, $start64_low

.Lno_long_mode:
    mov $msg_no_long_mode, %esi
3:
    lodsb
    test %al, %al
    jz 5f
    mov %al, %ah
    mov $0x3FD, %dx
4:
    in %dx, %al                     /* wait for the transmit holding register */
    test $0x20, %al
    jz 4b
    mov $0x3F8, %dx
    mov %ah, %al
    out %al, %dx
    jmp 3b
5:
    hlt
    jmp 5b

    .code64
start64_low:
    xor %eax, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    /* Into the image window: from here on we run at the linked address. */
    movabs $start64_high, %rax
    jmp *%rax

    .section .boot.data, "aw"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF92000000FFFF        /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
msg_no_long_mode:
    .asciz "keel: this CPU has no 64-bit long mode; keel needs an x86_64 CPU. Halting.\r\n"
    /* Early tables and the 32-bit stack live in the (file-backed) boot data so that
       the image stays linear for multiboot v1 loaders; bss must come last. */
    .p2align 12
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pdpt_image:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot32_stack:
    .skip 1024
boot32_stack_top:

    .section .text.keel_start64, "ax"
start64_high:
    lea {stack}(%rip), %rsp
    add ${stack_top}, %rsp
    xor %ebp, %ebp
    /* GS base: the boot CPU's per-CPU area, whose first word names itself
       (percpu.rs). WRMSR takes ecx/eax/edx: keep magic and info meanwhile. */
    mov %edi, %r12d
    mov %esi, %r13d
    lea {bsp_percpu}(%rip), %rax
    mov %rax, (%rax)
    mov %rax, %rdx
    shr $32, %rdx
    mov $0xC0000101, %ecx
    wrmsr
    /* edi = magic, esi = info (32-bit moves zero-extended them) */
    mov %r12d, %edi
    mov %r13d, %esi
    call keel_start
6:
    cli
    hlt
    jmp 6b

    /* ---------------------------------------------------------------- APs
       An application processor arrives here from the real-mode trampoline
       (smp.rs) in 32-bit protected mode with flat segments (selector 0x10 for
       data), paging off, no stack. It takes the same road as the boot CPU
       (enter_long_mode: PAE, the early page tables, still in .boot.data,
       which keel never frees; EFER.LME and NXE; paging), then 64-bit code and
       the image window; then keel's own page tables, its own stack and GS
       base from the hand-off words the starting CPU filled (KEEL_AP_BOOT_*),
       and Rust. */
    .section .boot.text, "ax"
    .code32
    .global keel_ap_start32
keel_ap_start32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $0x80000001, %eax
    cpuid
    mov %edx, %esi
    enter_long_mode %esi
    ljmp $0x08, $ap_start64_low

    .code64
ap_start64_low:
    xor %eax, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    movabs $ap_start64_high, %rax
    jmp *%rax

    /* The trampoline's GDT (physical, so that the 16-bit code can name it):
       0x08 flat 32-bit code, 0x10 flat data. */
    .section .boot.data, "aw"
    .p2align 3
    .global keel_ap_gdt
keel_ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
keel_ap_gdt_end:

    .section .text.keel_ap_start64, "ax"
ap_start64_high:
    mov {ap_cr3}(%rip), %rax
    mov %rax, %cr3
    mov {ap_stack}(%rip), %rsp
    xor %ebp, %ebp
    mov {ap_percpu}(%rip), %rax
    mov %rax, %rdi
    mov %rax, %rdx
    shr $32, %rdx
    mov $0xC0000101, %ecx
    wrmsr
    call keel_ap_start
8:
    cli
    hlt
    jmp 8b

    /* The real-mode trampoline: copied to a page below 1 MiB, where a STARTUP
       IPI starts the AP at CS = page >> 4, IP = 0 (SDM Vol. 3A §9.4.4). It
       only loads the GDT above and jumps to keel_ap_start32. Position
       independent: DS = CS, and everything it names is at a fixed physical
       address or an offset into itself. */
    .section .rodata.keel_ap_trampoline, "a"
    .code16
    .global keel_ap_trampoline, keel_ap_trampoline_end
keel_ap_trampoline:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_tramp_gdt_ptr - keel_ap_trampoline)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl *(ap_tramp_far - keel_ap_trampoline)
    .p2align 2
ap_tramp_gdt_ptr:
    .short keel_ap_gdt_end - keel_ap_gdt - 1
    .long keel_ap_gdt
ap_tramp_far:
    .long keel_ap_start32
    .short 0x08
keel_ap_trampoline_end:
    .code64
    /* Back to .text: global_asm! blocks of one codegen unit are assembled as
       one file, so a block that does not name its section lands in this one. */
    .text
"#,
    stack = sym KEEL_BOOT_STACK,
    stack_top = const 4096 + BOOT_STACK_SIZE,
    bsp_percpu = sym crate::percpu::KEEL_BSP_PERCPU,
    ap_cr3 = sym crate::smp::KEEL_AP_BOOT_CR3,
    ap_stack = sym crate::smp::KEEL_AP_BOOT_STACK,
    ap_percpu = sym crate::smp::KEEL_AP_BOOT_PERCPU,
    options(att_syntax)
);
