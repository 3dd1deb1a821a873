//! The guest's own IDT: expected faults are recorded and skipped, anything else is
//! reported and ends the test.
//!
//! Some checks need the CPU (through the hypervisor) to raise an exception in the
//! guest: reading an MSR that does not exist must raise #GP. [`expect`] arms the
//! handler for one vector and a number of bytes to skip, runs the probe, and returns
//! what happened. Any other exception is a failure: [`dispatch`] prints the vector,
//! the address and the error code (and CR2 for a page fault), prints the failure
//! marker and crashes the domain, so a broken hypervisor shows up as a readable line
//! rather than as a triple fault.
//!
//! All 32 exception vectors have gates, and so have the three interrupts a guest
//! can take: [`UPCALL_VECTOR`], the hypervisor's event-channel upcall (every mode
//! that waits for events), and, for the smp mode only ([`crate::smp`], which
//! software-enables the local APICs), [`IPI_VECTOR`] for fixed IPIs between vCPUs
//! and [`SPURIOUS_VECTOR`], the local APIC's spurious vector. The upcall's and the
//! IPI's handlers are whatever [`set_upcall_handler`] and [`set_ipi_handler`]
//! installed (the domU modes' or the smp mode's event code); a spurious interrupt
//! is only counted (it must not be acknowledged, SDM Vol. 3A §11.9). Interrupts
//! are enabled only around the hypercalls that wait for events
//! ([`crate::arch`]'s `hypercall_sti_cli`), so a handler runs between two
//! instructions of a wait and must touch nothing but atomics (and, for the smp
//! mode's, its own vCPU's local APIC). The other 221 vectors have not-present
//! gates: one delivered by mistake becomes a #NP, which is reported like any
//! other unexpected exception. [`remove`] loads an empty IDT for the
//! triple-fault mode.
//!
//! # Several vCPUs
//!
//! The smp mode's vCPUs share the one IDT: the boot vCPU fills it ([`install`])
//! before any other vCPU starts, and the others only load it ([`load`]). The
//! handlers are per-vCPU-safe (they keep their counts per vCPU themselves). The
//! expected-fault machinery ([`expect`]) is global and used by vCPU 0's checks
//! only: a fault on another vCPU is always unexpected, and ends the test.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence};

use crate::arch::{self, Frame};
use crate::out;

/// Exception vectors (all have gates).
const EXCEPTIONS: usize = 32;

/// IDT entries: every vector, so the upcall vector can be anywhere above 31.
const VECTORS: usize = 256;

/// The vector event upcalls arrive on: Linux's `HYPERVISOR_CALLBACK_VECTOR`
/// (0xf3). Xen requires at least 0x10 (`HVMOP_set_evtchn_upcall_vector`).
pub const UPCALL_VECTOR: u8 = 0xF3;

/// The vector of the fixed IPIs the smp mode's vCPUs send each other through
/// their local APICs (below the upcall's, in the same priority class).
pub const IPI_VECTOR: u8 = 0xF0;

/// The local APIC's spurious-interrupt vector (its SVR's low byte, set by the
/// smp mode; the architectural reset value 0xFF).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// The IDT itself.
#[repr(C, align(16))]
struct Idt(UnsafeCell<[[u8; arch::GATE_SIZE]; VECTORS]>);

// SAFETY: only `install` writes it, on the boot vCPU, before any interrupt can
// arrive and before any other vCPU exists (see the module docs); after that it
// is only read, by the CPUs.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([[0; arch::GATE_SIZE]; VECTORS]));

/// Fills the IDT with gates to the entry stubs and loads it.
pub fn install() {
    let cs = arch::read_cs();
    let base = IDT.0.get() as usize;
    let set_gate = |v: usize, gate: [u8; arch::GATE_SIZE]| {
        for (i, &b) in gate.iter().enumerate() {
            // SAFETY: within the IDT; nothing reads it concurrently (the CPU only
            // reads it on an exception or interrupt, and none can happen while
            // filling it: interrupts are off).
            unsafe { core::ptr::write_volatile((base + v * arch::GATE_SIZE + i) as *mut u8, b) };
        }
    };
    for v in 0..EXCEPTIONS {
        set_gate(v, arch::gate(arch::trap_stub(v), cs));
    }
    set_gate(
        usize::from(UPCALL_VECTOR),
        arch::gate(arch::upcall_stub(), cs),
    );
    set_gate(usize::from(IPI_VECTOR), arch::gate(arch::ipi_stub(), cs));
    set_gate(
        usize::from(SPURIOUS_VECTOR),
        arch::gate(arch::spurious_stub(), cs),
    );
    load();
}

/// Loads the IDT [`install`] filled (on another vCPU: the smp mode's APs, whose
/// code segment selector is the boot vCPU's).
pub fn load() {
    let base = IDT.0.get() as usize;
    // SAFETY: `install` gave every exception vector and the three interrupt
    // vectors gates to stubs that save the state and call `dispatch`; the rest
    // are not present (zero).
    unsafe { arch::lidt(base, (VECTORS * arch::GATE_SIZE - 1) as u16) };
}

/// The upcall handler, as a `fn()` address (0: none).
static UPCALL_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Upcalls taken with no handler installed.
static STRAY_UPCALLS: AtomicU32 = AtomicU32::new(0);
/// The fixed-IPI handler, as a `fn()` address (0: none).
static IPI_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// IPIs taken with no handler installed.
static STRAY_IPIS: AtomicU32 = AtomicU32::new(0);
/// Spurious interrupts taken.
static SPURIOUS: AtomicU32 = AtomicU32::new(0);

/// Installs `handler` to run on every [`UPCALL_VECTOR`] interrupt.
pub fn set_upcall_handler(handler: fn()) {
    UPCALL_HANDLER.store(handler as usize, Ordering::Relaxed);
}

/// Upcalls that arrived before a handler was installed (counted and ignored).
pub fn stray_upcalls() -> u32 {
    STRAY_UPCALLS.load(Ordering::Relaxed)
}

/// Installs `handler` to run on every [`IPI_VECTOR`] interrupt (it must
/// acknowledge the local APIC itself).
pub fn set_ipi_handler(handler: fn()) {
    IPI_HANDLER.store(handler as usize, Ordering::Relaxed);
}

/// IPIs that arrived with no handler installed (counted and not acknowledged).
pub fn stray_ipis() -> u32 {
    STRAY_IPIS.load(Ordering::Relaxed)
}

/// Spurious local APIC interrupts taken ([`SPURIOUS_VECTOR`]).
pub fn spurious_interrupts() -> u32 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// Runs the `fn()` stored in `slot`, or counts the interrupt in `stray`.
fn run_handler(slot: &AtomicUsize, stray: &AtomicU32) {
    let handler = slot.load(Ordering::Relaxed);
    if handler == 0 {
        stray.fetch_add(1, Ordering::Relaxed);
    } else {
        // SAFETY: the only values stored are `fn()` addresses
        // (`set_upcall_handler`, `set_ipi_handler`).
        let handler: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler) };
        handler();
    }
}

/// Loads an empty IDT (limit 0): the next exception cannot be delivered, nor the
/// #GP that causes, nor the #DF after it — a triple fault.
pub fn remove() {
    // SAFETY: on purpose (triple-fault mode); the caller raises an exception next.
    unsafe { arch::lidt(0, 0) };
}

const NOT_ARMED: u32 = u32::MAX;
static ARMED_VECTOR: AtomicU32 = AtomicU32::new(NOT_ARMED);
static ARMED_SKIP: AtomicU32 = AtomicU32::new(0);
static HITS: AtomicU32 = AtomicU32::new(0);
static HIT_VECTOR: AtomicU32 = AtomicU32::new(0);
static HIT_ERROR: AtomicU64 = AtomicU64::new(0);

/// An exception the guest took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The vector.
    pub vector: u32,
    /// Its error code (0 if none).
    pub error_code: u64,
}

/// Runs `probe` with the handler armed to accept one exception `vector` and resume
/// `skip` bytes after the faulting instruction; returns the probe's result and the
/// fault, if one was taken.
pub fn expect<R>(vector: u32, skip: u32, probe: impl FnOnce() -> R) -> (R, Option<Fault>) {
    HITS.store(0, Ordering::Relaxed);
    ARMED_SKIP.store(skip, Ordering::Relaxed);
    ARMED_VECTOR.store(vector, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let r = probe();
    compiler_fence(Ordering::SeqCst);
    ARMED_VECTOR.store(NOT_ARMED, Ordering::Relaxed);
    let fault = (HITS.load(Ordering::Relaxed) > 0).then(|| Fault {
        vector: HIT_VECTOR.load(Ordering::Relaxed),
        error_code: HIT_ERROR.load(Ordering::Relaxed),
    });
    (r, fault)
}

/// The mnemonic of an exception vector.
pub fn mnemonic(vector: u32) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        _ => "reserved",
    }
}

/// Called by the common entry stub with the saved state; returning resumes at the
/// frame's (possibly adjusted) instruction pointer.
pub extern "C" fn dispatch(frame: &mut Frame) {
    let vector = frame.vector();
    if vector == u32::from(UPCALL_VECTOR) {
        run_handler(&UPCALL_HANDLER, &STRAY_UPCALLS);
        return;
    }
    if vector == u32::from(IPI_VECTOR) {
        run_handler(&IPI_HANDLER, &STRAY_IPIS);
        return;
    }
    if vector == u32::from(SPURIOUS_VECTOR) {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if ARMED_VECTOR.load(Ordering::Relaxed) == vector {
        // One fault per arming: a second one is unexpected.
        ARMED_VECTOR.store(NOT_ARMED, Ordering::Relaxed);
        HIT_VECTOR.store(vector, Ordering::Relaxed);
        HIT_ERROR.store(frame.error_code(), Ordering::Relaxed);
        HITS.fetch_add(1, Ordering::Relaxed);
        frame.skip(u64::from(ARMED_SKIP.load(Ordering::Relaxed)));
        return;
    }
    if vector == 14 {
        out!(
            "unexpected exception {} ({}) at {:#x}, error code {:#x}, CR2 {:#x}",
            vector,
            mnemonic(vector),
            frame.ip(),
            frame.error_code(),
            arch::read_cr2()
        );
    } else {
        out!(
            "unexpected exception {} ({}) at {:#x}, error code {:#x}",
            vector,
            mnemonic(vector),
            frame.ip(),
            frame.error_code()
        );
    }
    out!("Test result: FAILURE (unexpected exception)");
    crate::modes::shutdown_crash()
}
