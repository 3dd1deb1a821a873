//! The world switch: an assembly stub that enters the guest with VMLAUNCH or
//! VMRESUME and is where the CPU lands on VM exit (HOST_RIP), behind one `unsafe`
//! Rust function.
//!
//! The stub is a SysV function `keel_vmx_enter(gprs, resume) -> status`: it saves
//! the callee-saved registers and RFLAGS (a VM exit leaves RFLAGS = 2, so interrupts
//! off; restoring the caller's RFLAGS gives back its IF), pushes `gprs`, writes
//! HOST_RSP = its stack pointer, loads the guest's GPRs from `gprs` and enters.
//!
//! - On a VM exit the CPU loads RIP = `keel_vmx_exit` and RSP = HOST_RSP, where the
//!   `gprs` pointer sits; the stub stores the guest's GPRs there and returns 0.
//! - If VMLAUNCH/VMRESUME (or the HOST_RSP write) fails, execution falls through with
//!   CF (VMfailInvalid, returns 1) or ZF (VMfailValid, returns 2) set; the guest's
//!   registers in `gprs` are unchanged.
//!
//! `GuestGprs` is `#[repr(C)]` with RAX..R15 (no RSP) at offsets 8 * index, which the
//! offsets below rely on (asserted at compile time).
//!
//! Everything the stub does not switch stays in the hardware across the exit: CR2,
//! DR0-DR3, DR6, XCR0, x87/SSE/AVX state, and the MSRs the MSR bitmap passes through
//! without a VMCS field (KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK). keel touches
//! none of them; switching vCPUs (issue #4) must save and restore them.

use crate::hvm::GuestGprs;

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(GuestGprs, rax) == 0);
    assert!(offset_of!(GuestGprs, rbx) == 8);
    assert!(offset_of!(GuestGprs, rcx) == 16);
    assert!(offset_of!(GuestGprs, rdx) == 24);
    assert!(offset_of!(GuestGprs, rsi) == 32);
    assert!(offset_of!(GuestGprs, rdi) == 40);
    assert!(offset_of!(GuestGprs, rbp) == 48);
    assert!(offset_of!(GuestGprs, r8) == 56);
    assert!(offset_of!(GuestGprs, r15) == 112);
    assert!(core::mem::size_of::<GuestGprs>() == 120);
};

core::arch::global_asm!(
    r#"
    .pushsection .text.keel_vmx_enter, "ax"
    .p2align 4
    .global keel_vmx_enter
keel_vmx_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    pushfq
    push rdi
    mov rax, {host_rsp}
    vmwrite rax, rsp
    jbe 3f
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    jnz 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    mov eax, 1
    jc 4f
    mov eax, 2
    jz 4f
    mov eax, 3
    jmp 4f

    .p2align 4
    .global keel_vmx_exit
keel_vmx_exit:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
    pop rax
    mov [rdi + 40], rax
    xor eax, eax
4:
    add rsp, 8
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    .popsection
"#,
    host_rsp = const super::vmcs::HOST_RSP.encoding(),
);

unsafe extern "C" {
    fn keel_vmx_enter(gprs: *mut GuestGprs, resume: u64) -> u64;
    /// The exit label; only its address is used.
    static keel_vmx_exit: u8;
}

/// How an entry attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest ran and a VM exit (or a VM-entry failure exit) brought us back.
    Exited,
    /// VMfailInvalid: no current VMCS.
    FailInvalid,
    /// VMfailValid: the VM-instruction error field says why.
    FailValid,
}

/// The address VM exits land on (for HOST_RIP).
pub fn exit_label() -> u64 {
    core::ptr::addr_of!(keel_vmx_exit) as u64
}

/// Enters the guest whose VMCS is current, with `gprs`; returns at its next exit
/// with `gprs` updated.
///
/// # Safety
/// VMX operation is on on this CPU; the current VMCS was set up by `VmxVcpu::new`:
/// its host state is keel's (CR3, GDT, IDT, TSS, selectors, HOST_RIP =
/// [`exit_label`]) and every address in its control fields (EPTP, bitmaps) names
/// memory keel owns and keeps for as long as the VMCS can be entered. `launched`
/// is the VMCS's launch state.
pub unsafe fn enter(gprs: &mut GuestGprs, launched: bool) -> Outcome {
    // SAFETY: the caller guarantees the VMCS makes the entry and the exit land back
    // here with keel's own state; the stub preserves every callee-saved register and
    // RFLAGS, and writes only `gprs` and its own stack frame.
    match unsafe { keel_vmx_enter(gprs, u64::from(launched)) } {
        0 => Outcome::Exited,
        1 => Outcome::FailInvalid,
        _ => Outcome::FailValid,
    }
}
