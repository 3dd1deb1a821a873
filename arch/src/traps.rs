//! Exceptions and interrupts: the IDT, 256 tiny entry stubs, and the dispatcher.
//!
//! Every vector enters through a 16-byte stub that pushes a dummy error code (for
//! vectors where the CPU pushes none) and the vector number, then `trap_common`
//! saves all general-purpose registers into a [`TrapFrame`] and calls the safe Rust
//! [`trap_dispatch`]. So every handler sees the same frame, and the exception report
//! can print every register (SDM Vol. 3 §6.12, §6.14).
//!
//! Policy: an exception raised by keel itself is a keel bug; the report is printed and
//! the machine is stopped ([`crate::power::fatal_stop`]). Exceptions raised by
//! hardware-virtualized guests arrive as VM exits, not here; those of a PV guest
//! (ring 3) and interrupts that arrive while it runs enter here and go to the PV
//! exit path (`trap_common` tests the saved CS, [`crate::pv`]). Interrupt vectors (32..=255) go to handlers the
//! kernel registers; an unexpected one is logged and acknowledged.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Registers saved on entry, lowest address first (the order `trap_common` pushes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU:
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

/// The LAPIC spurious-interrupt vector (never acknowledged, SDM Vol. 3 §11.9).
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// The LAPIC timer vector.
pub const TIMER_VECTOR: u8 = 0xF0;
/// keel's kick IPI: wakes a halted CPU, or makes the guest it runs exit.
pub const KICK_VECTOR: u8 = 0xF1;
/// keel's remote-call IPI: run the function another CPU left in this CPU's
/// mailbox (`kernel/src/percpu.rs`).
pub const CALL_VECTOR: u8 = 0xF2;

/// Exception names, SDM Vol. 3 Table 6-1.
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range exceeded",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack-segment fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating-point error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating-point",
        20 => "#VE virtualization exception",
        21 => "#CP control protection",
        28 => "#HV hypervisor injection",
        29 => "#VC VMM communication",
        30 => "#SX security exception",
        _ => "reserved exception",
    }
}

/// An interrupt handler: gets the frame, must acknowledge (EOI) itself.
pub type IrqHandler = fn(&mut TrapFrame);

static IRQ_HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Registers `handler` for interrupt `vector` (32..=254).
pub fn register_irq(vector: u8, handler: IrqHandler) {
    assert!(
        vector >= 32 && vector != SPURIOUS_VECTOR,
        "vector {vector} is not an interrupt vector"
    );
    IRQ_HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

/// Runs the handler of interrupt `frame.vector` for an interrupt that arrived
/// while a PV guest ran (`crate::pv`: its exit path took it, on keel's stack).
pub(crate) fn dispatch_guest_interrupt(frame: &mut TrapFrame) {
    if frame.vector >= 32 {
        trap_dispatch(frame);
    }
}

/// Where every stub lands (called from `trap_common` with RSP 16-byte aligned).
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if vector < 32 {
        crate::power::fatal_exception(frame);
    }
    if vector == u64::from(SPURIOUS_VECTOR) {
        return;
    }
    let raw = IRQ_HANDLERS[vector as usize].load(Ordering::Acquire);
    if raw == 0 {
        log::warn!("unexpected interrupt vector {vector:#x}");
        crate::apic::eoi();
        return;
    }
    // SAFETY: only `register_irq` stores non-zero values, and it stores `IrqHandler`s.
    let handler: IrqHandler = unsafe { core::mem::transmute::<usize, IrqHandler>(raw) };
    handler(frame);
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .text.traps, "ax"
    .p2align 4
    .global keel_trap_stubs
keel_trap_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push $0
    .endif
    push $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

trap_common:
    /* From a PV guest (ring 3): its registers go to the PV exit path
       (crate::pv), not to keel's handlers. */
    testb $3, 24(%rsp)
    jnz keel_pv_trap_entry
    /* A fault on the IRETQ that enters a PV guest: the guest's GS base is
       already active, and the frame was the guest's (crate::pv). */
    push %rax
    lea keel_pv_iret(%rip), %rax
    cmp %rax, 24(%rsp)
    pop %rax
    je keel_pv_iret_fault
    .global keel_trap_common_body
keel_trap_common_body:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call {dispatch}
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
"#,
    dispatch = sym trap_dispatch,
    options(att_syntax)
);

#[cfg(target_os = "none")]
unsafe extern "C" {
    static keel_trap_stubs: [u8; 256 * 16];
}

/// One IDT gate (SDM Vol. 3 Figure 6-8).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_hi: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

/// Builds the IDT (all 256 vectors to their stubs) and loads it on this CPU.
/// Call after [`crate::gdt::init`].
#[cfg(target_os = "none")]
pub fn init() {
    use x86_64::instructions::segmentation::Segment;
    let cs = x86_64::instructions::segmentation::CS::get_reg();
    let idt = IDT.call_once(|| {
        // Only the address of the assembly symbol is taken.
        let base = core::ptr::addr_of!(keel_trap_stubs) as u64;
        let mut gates = [Gate {
            offset_lo: 0,
            selector: 0,
            ist: 0,
            type_attr: 0,
            offset_mid: 0,
            offset_hi: 0,
            reserved: 0,
        }; 256];
        for (v, gate) in gates.iter_mut().enumerate() {
            let addr = base + (v as u64) * 16;
            let ist = match v {
                8 => crate::gdt::IST_DOUBLE_FAULT,
                2 => crate::gdt::IST_NMI,
                18 => crate::gdt::IST_MACHINE_CHECK,
                _ => 0,
            };
            // INT3 and INTO are allowed from ring 3 (DPL 3), as in Xen: a PV
            // guest's `int3` is its #BP, bounced to its own trap 3. Every other
            // gate is DPL 0, so `int n` from ring 3 is a #GP keel sees.
            let dpl: u8 = if v == 3 || v == 4 { 3 } else { 0 };
            *gate = Gate {
                offset_lo: addr as u16,
                selector: cs.0,
                ist,
                // Present, DPL, 64-bit interrupt gate (IF cleared on entry).
                type_attr: 0x8E | (dpl << 5),
                offset_mid: (addr >> 16) as u16,
                offset_hi: (addr >> 32) as u32,
                reserved: 0,
            };
        }
        Idt(gates)
    });
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is a static that lives forever and every gate points at a stub
    // in keel's text with keel's code selector.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}
