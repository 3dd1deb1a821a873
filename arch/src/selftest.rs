//! Deliberate crashes, for testing keel's own fatal path (`debug-crash=` on the
//! command line). Each one must end in a `(KEEL) FATAL:` report and a clean stop,
//! never a triple fault.

use core::arch::asm;

/// Which fault to raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// read an unmapped address (#PF)
    PageFault,
    /// execute UD2 (#UD)
    InvalidOpcode,
    /// recurse into the boot stack's guard page (#PF that cannot be delivered on the
    /// same stack, so #DF on its IST stack)
    StackOverflow,
    /// a Rust panic
    Panic,
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: it must overflow
fn recurse(depth: u64) -> u64 {
    let pad = [depth; 64];
    core::hint::black_box(&pad);
    recurse(depth + 1).wrapping_add(core::hint::black_box(pad[0]))
}

/// Raises `crash`. Never returns.
pub fn crash(crash: Crash) -> ! {
    match crash {
        Crash::PageFault => {
            // SAFETY: deliberately faulting: the low identity map is gone after keel
            // switches to its own page tables, so this read raises #PF before touching
            // anything.
            let v = unsafe { core::ptr::read_volatile(0x1000 as *const u64) };
            panic!("read of an unmapped address returned {v:#x}");
        }
        Crash::InvalidOpcode => {
            // SAFETY: UD2 raises #UD; nothing executes after it.
            unsafe { asm!("ud2", options(noreturn)) }
        }
        Crash::StackOverflow => {
            let r = recurse(0);
            panic!("unbounded recursion returned {r}");
        }
        Crash::Panic => panic!("deliberate panic (debug-crash=panic)"),
    }
}
