//! pv64's `mode=events`: event channels delivered through the event callback
//! (Xen's PV upcall), with `evtchn_upcall_mask` as the virtual IF.
//!
//! The guest maps shared_info (`update_va_mapping` at the machine address
//! `start_info` names), registers its event callback (`callback_op`), binds an
//! IPI port to itself and:
//! - sends on it with upcalls masked (the start of day): nothing is delivered,
//!   `evtchn_upcall_pending` is set;
//! - unmasks and makes any hypercall: the callback runs on its way back (Xen's
//!   `xen_force_evtchn_callback`), with the frame's saved upcall mask 0 and
//!   RFLAGS.IF set, and the `iret` leaves upcalls unmasked;
//! - sends again, unmasked: the callback runs before the send returns;
//! - binds VIRQ_TIMER, sets a single-shot timer 20 ms on and blocks
//!   (`SCHEDOP_block`): the timer's event wakes it, through the callback.
//!
//! The callback stub clears `evtchn_upcall_pending`, counts, records the
//! frame's CS word and RFLAGS, and returns with `iret`; the checks clear the
//! port's pending bit (2-level event channels) between sends.

use core::sync::atomic::{AtomicU64, Ordering};

use keel_hypercall::abi::callback::CALLBACKTYPE_EVENT;
use keel_hypercall::abi::evtchn::VIRQ_TIMER;
use keel_hypercall::abi::hypercall as nr;
use keel_hypercall::abi::sched::SCHEDOP_BLOCK;

use super::Layout;
use super::start_info::StartInfo;
use crate::checks::Checks;
use crate::{events, hypercall};

/// vCPU 0's `vcpu_info` (shared_info's first 64 bytes), once mapped.
#[unsafe(no_mangle)]
static PV64_VCPU_INFO: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_EVENT_COUNT: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_EVENT_CS: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_EVENT_RFLAGS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    static pv64_event_entry: u8;
}

core::arch::global_asm!(
    r#"
    .pushsection .text.pv64_events, "ax"
    .globl pv64_event_entry
pv64_event_entry:
    pop %rcx
    pop %r11
    push %rax
    mov PV64_VCPU_INFO(%rip), %rax
    movb $0, (%rax)
    mov 16(%rsp), %rax
    mov %rax, PV64_EVENT_CS(%rip)
    mov 24(%rsp), %rax
    mov %rax, PV64_EVENT_RFLAGS(%rip)
    lock incq PV64_EVENT_COUNT(%rip)
    pop %rax
    pushq $0
    jmp {page} + {iret_slot}
    .popsection
"#,
    page = sym hypercall::HYPERCALL_PAGE,
    iret_slot = const nr::IRET as usize * nr::HYPERCALL_PAGE_ENTRY_SIZE,
    options(att_syntax)
);

fn byte(va: u64) -> u8 {
    // SAFETY: `va` is in the mapped shared_info page.
    unsafe { core::ptr::read_volatile(va as *const u8) }
}

fn set_byte(va: u64, v: u8) {
    // SAFETY: as in `byte`; the guest owns these bytes of its vcpu_info.
    unsafe { core::ptr::write_volatile(va as *mut u8, v) }
}

/// Clears `port`'s pending bit and vCPU 0's selector bit (shared_info at `s`).
fn clear_pending(s: u64, port: u32) {
    let word = s + 0x800 + u64::from(port / 64) * 8;
    // SAFETY: the pending bitmap and the selector are words of the mapped
    // shared_info page, updated atomically by both sides.
    unsafe {
        AtomicU64::from_ptr(word as *mut u64).fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
        AtomicU64::from_ptr((s + 8) as *mut u64).store(0, Ordering::SeqCst);
    }
}

fn count() -> u64 {
    PV64_EVENT_COUNT.load(Ordering::SeqCst)
}

/// `mode=events`.
pub fn run(si: &StartInfo, layout: &Layout) {
    let c = Checks::new("", "");
    let s = match super::mmu::map_shared_info(si, layout) {
        Ok(s) => s,
        Err(rc) => {
            c.rc("map shared_info", rc, 0);
            return;
        }
    };
    PV64_VCPU_INFO.store(s, Ordering::SeqCst);
    // Only the address is taken.
    let rc = super::register_callback(CALLBACKTYPE_EVENT, 0, &raw const pv64_event_entry as u64);
    c.rc("register the event callback", rc, 0);
    let port = match events::bind_ipi(0) {
        Ok(p) => p,
        Err(rc) => {
            c.rc("bind an IPI port", rc, 0);
            return;
        }
    };

    // Masked: pending, not delivered.
    c.check("upcalls start masked", byte(s + 1) == 1, format_args!("mask {}", byte(s + 1)));
    c.rc("send while masked", events::send(port), 0);
    c.check(
        "nothing delivered while masked, upcall pending",
        count() == 0 && byte(s) == 1,
        format_args!("count {}, pending {}", count(), byte(s)),
    );

    // Unmask, then any hypercall: delivered on its way back.
    set_byte(s + 1, 0);
    hypercall::xen_version(0, 0);
    let cs = PV64_EVENT_CS.load(Ordering::SeqCst);
    let rflags = PV64_EVENT_RFLAGS.load(Ordering::SeqCst);
    c.check(
        "unmasked, the next hypercall's return enters the callback",
        count() == 1 && byte(s) == 0,
        format_args!("count {}, pending {}", count(), byte(s)),
    );
    c.check(
        "frame: saved upcall mask 0, RFLAGS.IF set",
        (cs >> 32) & 0xFF == 0 && rflags & (1 << 9) != 0,
        format_args!("cs word {cs:#x}, rflags {rflags:#x}"),
    );
    c.check(
        "iret leaves upcalls unmasked",
        byte(s + 1) == 0,
        format_args!("mask {}", byte(s + 1)),
    );

    // Unmasked: the send itself returns through the callback.
    clear_pending(s, port);
    c.rc("send while unmasked", events::send(port), 0);
    c.check(
        "delivered before the send returns",
        count() == 2,
        format_args!("count {}", count()),
    );
    clear_pending(s, port);

    // A timer already due, then block: the timer's event wakes the vCPU.
    let tport = match events::bind_virq(VIRQ_TIMER, 0) {
        Ok(p) => p,
        Err(rc) => {
            c.rc("bind VIRQ_TIMER", rc, 0);
            return;
        }
    };
    // 20 ms after the system time keel last published in vcpu_info (at
    // offset 32 + 16; it is at most now, so the deadline is at most 20 ms
    // away). Should it already have passed, the event comes at once, on the
    // timer hypercall's way back, and there is nothing to block for.
    // SAFETY: vcpu_info's time record is in the mapped shared_info page.
    let published = unsafe { core::ptr::read_volatile((s + 48) as *const u64) };
    c.rc(
        "set_timer_op 20 ms on",
        hypercall::set_timer_op(published + 20_000_000),
        0,
    );
    let rc = if count() == 2 {
        hypercall::sched_op(SCHEDOP_BLOCK, 0)
    } else {
        0
    };
    c.check(
        "the timer's event arrives through the callback (waking SCHEDOP_block)",
        rc == 0 && count() == 3,
        format_args!("rc {rc}, count {}", count()),
    );
    clear_pending(s, tport);
}
