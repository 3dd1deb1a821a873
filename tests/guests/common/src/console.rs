//! Printing: one line per [`out!`], through the hypervisor once the hypercall page
//! is installed, through COM1 ([`crate::uart`]) before that or without a hypervisor.
//!
//! Through the hypervisor means one of two things, as for any Xen guest:
//!
//! - the initial domain (dom0) writes with `HYPERVISOR_console_io(CONSOLEIO_write)`,
//!   which keel prefixes with `(d0) `;
//! - any other domain gets `-EPERM` from `console_io` (Xen's XSM default), and talks
//!   to the *PV console* instead: a shared page, `struct xencons_interface`
//!   (`xen/include/public/io/console.h`), at the gfn `HVM_PARAM_CONSOLE_PFN` names,
//!   plus the event channel `HVM_PARAM_CONSOLE_EVTCHN` names. The guest is the
//!   producer of `out[]`: it copies bytes to `out[prod & 2047]`, publishes
//!   `out_prod` after a write barrier, and notifies the backend with
//!   `EVTCHNOP_send`; keel consumes them (advancing `out_cons`) and prints each line
//!   as `(d<id>) <line>`. [`use_ring_if_offered`] switches to it at start-up when
//!   `hvm_start_info` says the guest is not the initial domain.
//!
//! A line is assembled in a stack buffer (no allocation) and written whole (up to
//! [`LINE_MAX`] bytes per write, longer ones in pieces) so that the prefix lands
//! where the tests expect it.
//!
//! # Locking
//!
//! One lock, `LOCK`, held for the whole of a [`print_line`] (formatting and
//! writing), so that with several vCPUs (the smp mode) lines never interleave
//! and the ring keeps a single producer. Nothing else is taken while it is held.
//! It is a test-and-set spinlock whose waiters `pause`, then `SCHEDOP_yield` (the
//! holder may be a vCPU that is not running: one pCPU, or more vCPUs than
//! pCPUs), and after [`LOCK_STUCK_YIELDS`] yields take it anyway: a holder that
//! never lets go (it faulted while printing and is now printing its own report,
//! or it was taken down) must cost interleaved output, never a hang.
//!
//! # Invariants and hazards
//!
//! - The ring has one producer at a time (whoever holds `LOCK`; the upcall
//!   handlers never print) and one consumer (the backend). `out_cons` is the
//!   backend's and only read here; a value that makes the ring look more than full
//!   is treated as full.
//! - A full ring is waited out with `SCHEDOP_yield`, boundedly: after
//!   [`RING_STUCK_YIELDS`] yields without progress the console gives up on the ring
//!   (output is lost, the guest keeps running) rather than hang.
//! - [`flush`] waits (boundedly) for the backend to consume everything; the guest
//!   calls it before `SCHEDOP_shutdown`, so its last lines are not lost with it.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use keel_hypercall::abi::console::CONSOLEIO_WRITE;
use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::evtchn::EVTCHNOP_SEND;
use keel_hypercall::abi::hvm::{
    HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, HVMOP_GET_PARAM, XenHvmParam,
};
use keel_hypercall::abi::sched::SCHEDOP_YIELD;

use crate::{arch, hypercall, uart};

/// Bytes per console write.
pub const LINE_MAX: usize = 200;

/// `struct xencons_interface` (`io/console.h`): `char in[1024]; char out[2048];`
/// then the four `XENCONS_RING_IDX` (u32) indexes.
pub mod xencons {
    /// Offset of `out[]`.
    pub const OUT: usize = 1024;
    /// Size of `out[]` (a power of two: indexes are masked with `OUT_SIZE - 1`).
    pub const OUT_SIZE: u32 = 2048;
    /// Offset of `in_cons`.
    pub const IN_CONS: usize = 3072;
    /// Offset of `in_prod`.
    pub const IN_PROD: usize = 3076;
    /// Offset of `out_cons` (the backend's).
    pub const OUT_CONS: usize = 3080;
    /// Offset of `out_prod` (the guest's).
    pub const OUT_PROD: usize = 3084;
}

/// Yields without the backend making room before the ring is given up.
pub const RING_STUCK_YIELDS: u32 = 20_000;

static XEN_CONSOLE: AtomicBool = AtomicBool::new(false);

/// The PV console ring's address (0: not in use), gfn and event channel.
static RING_VA: AtomicUsize = AtomicUsize::new(0);
static RING_GFN: AtomicU64 = AtomicU64::new(0);
static RING_PORT: AtomicU32 = AtomicU32::new(0);

/// From now on, print through the hypervisor (call after installing the page).
pub fn use_xen_console() {
    XEN_CONSOLE.store(true, Ordering::Relaxed);
}

/// Whether output goes through the hypervisor.
pub fn xen_console() -> bool {
    XEN_CONSOLE.load(Ordering::Relaxed)
}

/// `HVMOP_get_param(DOMID_SELF, index)`: the value, or the hypercall's error.
fn get_param(index: u32) -> Result<u64, i64> {
    let param = XenHvmParam {
        domid: DOMID_SELF,
        pad: 0,
        index,
        value: 0,
    };
    let (rc, out) =
        hypercall::with_arg(param.to_bytes(), |a| hypercall::hvm_op(HVMOP_GET_PARAM, a));
    if rc == 0 {
        Ok(XenHvmParam::from_bytes(&out).value)
    } else {
        Err(rc)
    }
}

/// What the PV console offer looked like, for the start-up line.
#[derive(Clone, Copy, Debug)]
pub enum RingOffer {
    /// In use: the ring's gfn and event channel.
    Using { gfn: u64, port: u32 },
    /// `HVMOP_get_param` failed (the value is its return).
    NoParam(i64),
    /// The parameter is 0: no ring.
    NotOffered,
    /// The ring's gfn is beyond what the guest maps (4 GiB).
    Unreachable(u64),
}

/// Switches output to the PV console ring if the hypervisor offers one (the
/// guest is not the initial domain); keeps `console_io` otherwise.
pub fn use_ring_if_offered() -> RingOffer {
    let gfn = match get_param(HVM_PARAM_CONSOLE_PFN) {
        Ok(0) => return RingOffer::NotOffered,
        Ok(gfn) => gfn,
        Err(rc) => return RingOffer::NoParam(rc),
    };
    let port = match get_param(HVM_PARAM_CONSOLE_EVTCHN) {
        Ok(port) => port as u32,
        Err(rc) => return RingOffer::NoParam(rc),
    };
    // Both guests reach the low 4 GiB at its physical address at start-up
    // (pvh64's identity map; pvh32 with paging off); pvh32's PAE phase maps the
    // ring into its window (crate::paging).
    if gfn >= 1 << 20 {
        return RingOffer::Unreachable(gfn);
    }
    RING_GFN.store(gfn, Ordering::Relaxed);
    RING_PORT.store(port, Ordering::Relaxed);
    RING_VA.store((gfn << 12) as usize, Ordering::Relaxed);
    RingOffer::Using { gfn, port }
}

/// Switches output to a PV console ring the guest has mapped at `va`, with
/// event channel `port`: a PV domU's, from its `start_info` (`crate::pv`).
pub fn use_ring_at(va: usize, mfn: u64, port: u32) {
    RING_GFN.store(mfn, Ordering::Relaxed);
    RING_PORT.store(port, Ordering::Relaxed);
    RING_VA.store(va, Ordering::Relaxed);
    XEN_CONSOLE.store(true, Ordering::Relaxed);
}

/// The ring's gfn, if output goes through it.
pub fn ring_gfn() -> Option<u64> {
    (RING_VA.load(Ordering::Relaxed) != 0).then(|| RING_GFN.load(Ordering::Relaxed))
}

/// The ring's event channel, if output goes through it.
pub fn ring_port() -> Option<u32> {
    (RING_VA.load(Ordering::Relaxed) != 0).then(|| RING_PORT.load(Ordering::Relaxed))
}

/// Moves the ring to virtual address `va` (pvh32 after turning paging on).
pub fn move_ring(va: usize) {
    if RING_VA.load(Ordering::Relaxed) != 0 {
        RING_VA.store(va, Ordering::Relaxed);
    }
}

/// The ring index at byte `offset` of the ring page.
fn ring_index(va: usize, offset: usize) -> &'static AtomicU32 {
    // SAFETY: `va` maps the ring page (a whole 4 KiB page the hypervisor gave
    // this guest for the purpose), `offset` is one of the 4-aligned index
    // offsets inside it, and both sides access the indexes atomically.
    unsafe { AtomicU32::from_ptr((va + offset) as *mut u32) }
}

/// `EVTCHNOP_send` on the ring's port (the backend's notification).
fn notify_backend() {
    let port = RING_PORT.load(Ordering::Relaxed);
    // `struct evtchn_send` is one u32, the port. A failure cannot be reported
    // (this *is* the console); the backend polls on the next line anyway.
    let _ = hypercall::with_arg(port.to_le_bytes(), |a| {
        hypercall::event_channel_op(EVTCHNOP_SEND, a)
    });
}

/// Appends `bytes` to the ring, waiting (yielding) while it is full.
fn ring_write(va: usize, bytes: &[u8]) {
    let out_cons = ring_index(va, xencons::OUT_CONS);
    let out_prod = ring_index(va, xencons::OUT_PROD);
    let mut prod = out_prod.load(Ordering::Relaxed);
    let mut stuck = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        let cons = out_cons.load(Ordering::Acquire);
        let used = prod.wrapping_sub(cons);
        if used >= xencons::OUT_SIZE {
            // Full (or a consumer index that makes no sense): publish what is
            // there, tell the backend, and give it the CPU.
            out_prod.store(prod, Ordering::Release);
            notify_backend();
            stuck += 1;
            if stuck > RING_STUCK_YIELDS {
                RING_VA.store(0, Ordering::Relaxed);
                return;
            }
            hypercall::sched_op(SCHEDOP_YIELD, 0);
            continue;
        }
        stuck = 0;
        let at = va + xencons::OUT + (prod & (xencons::OUT_SIZE - 1)) as usize;
        // SAFETY: inside `out[]` of the ring page (index masked to 2047).
        unsafe { core::ptr::write_volatile(at as *mut u8, bytes[i]) };
        prod = prod.wrapping_add(1);
        i += 1;
    }
    // The bytes must be visible before the index that publishes them.
    fence(Ordering::Release);
    out_prod.store(prod, Ordering::Release);
    notify_backend();
}

/// Waits (boundedly, yielding) until the backend has consumed everything written
/// to the ring; returns at once when output does not go through a ring.
pub fn flush() {
    let va = RING_VA.load(Ordering::Relaxed);
    if va == 0 {
        return;
    }
    let out_cons = ring_index(va, xencons::OUT_CONS);
    let out_prod = ring_index(va, xencons::OUT_PROD);
    for _ in 0..RING_STUCK_YIELDS {
        if out_cons.load(Ordering::Acquire) == out_prod.load(Ordering::Relaxed) {
            return;
        }
        notify_backend();
        hypercall::sched_op(SCHEDOP_YIELD, 0);
    }
}

/// Writes raw bytes to the current console; returns what `console_io` returned (0
/// for COM1 and the ring).
pub fn write_bytes(bytes: &[u8]) -> i64 {
    if !xen_console() {
        uart::write(bytes);
        return 0;
    }
    let va = RING_VA.load(Ordering::Relaxed);
    if va != 0 {
        ring_write(va, bytes);
        0
    } else {
        // The pointer is to a live slice the hypervisor only reads.
        hypercall::console_io(CONSOLEIO_WRITE, bytes.len(), bytes.as_ptr() as usize)
    }
}

/// A line being assembled.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    fn flush(&mut self) {
        if self.len > 0 {
            write_bytes(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE_MAX {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Serialises [`print_line`] across vCPUs (see "Locking" in the module docs).
static LOCK: AtomicBool = AtomicBool::new(false);

/// Yields a waiter for `LOCK` makes before it takes the lock regardless.
pub const LOCK_STUCK_YIELDS: u32 = 20_000;

/// Spins on `LOCK` before each yield.
const LOCK_SPINS: u32 = 64;

/// Takes `LOCK` (or gives up waiting, see the module docs).
fn lock() {
    let mut yields = 0u32;
    let mut spins = 0u32;
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < LOCK_SPINS {
            arch::pause();
            continue;
        }
        spins = 0;
        yields += 1;
        if yields > LOCK_STUCK_YIELDS {
            return;
        }
        // Before the hypercall page there is only ever one vCPU (the boot one).
        if xen_console() {
            hypercall::sched_op(SCHEDOP_YIELD, 0);
        }
    }
}

/// Releases `LOCK`.
fn unlock() {
    LOCK.store(false, Ordering::Release);
}

/// Prints `args` and a newline as one console write (if it fits).
pub fn print_line(args: fmt::Arguments<'_>) {
    lock();
    let mut line = Line {
        buf: [0; LINE_MAX],
        len: 0,
    };
    // Formatting into the buffer cannot fail (write_str never errors).
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    line.flush();
    unlock();
    // The first line's end is a benchmark point (`crate::bench`); later lines
    // leave it alone.
    let _ = FIRST_LINE_TSC.compare_exchange(0, arch::rdtsc(), Ordering::Relaxed, Ordering::Relaxed);
}

/// The TSC just after the first line was written (0: none yet).
static FIRST_LINE_TSC: AtomicU64 = AtomicU64::new(0);

/// The TSC read just after the first console line was written, if there was one.
pub fn first_line_tsc() -> Option<u64> {
    match FIRST_LINE_TSC.load(Ordering::Relaxed) {
        0 => None,
        t => Some(t),
    }
}

/// Prints one line: `out!("x = {}", x)`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}

/// Bytes shown as text: printable ASCII as is, anything else (and `"` and `\`) as
/// `\xNN`, so a line never contains control characters.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}
