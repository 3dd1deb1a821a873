//! `mode=bench`: the hot paths of the Xen guest ABI, counted (pvh64).
//!
//! # What
//!
//! `cargo xtask bench` boots this guest as Dom0 on keel and on Xen 4.17 under QEMU
//! with `-icount shift=0,sleep=off`. There, the TSC advances by one per instruction
//! the whole emulated machine retires, so a TSC delta around an operation is the
//! number of instructions the hypervisor and the guest spent on it, the same on
//! every run. The guest uses nothing but Xen's public ABI, so it runs unchanged on
//! both. Each metric is one line,
//!
//! ```text
//! BENCH <metric> n=<iterations> min=<insns> median=<insns> unit=insns
//! ```
//!
//! after a few unrecorded warm-up rounds; then `BENCH done`, `Test result:
//! SUCCESS` and a poweroff. Something that fails prints `BENCH error <what>`
//! and ends with `Test result: FAILURE`. The metrics:
//!
//! - `rdtsc_overhead`: two back-to-back `rdtsc`s, which every other metric
//!   includes once. The guest prints raw counts; the harness subtracts this
//!   metric's minimum. It matters: Xen 4.17 traps RDTSC (`vtsc`) unless the CPU
//!   reports an invariant TSC, which QEMU's TCG cannot, so on Xen each read is a
//!   VM exit of its own.
//! - `hypercall_xen_version`: `xen_version(XENVER_version, NULL)` through the
//!   hypercall page: the bare round trip.
//! - `console_io_64b`: `console_io(CONSOLEIO_write)` of one 64-byte line.
//! - `evtchn_send_upcall`: `EVTCHNOP_send` on an IPI port bound to this vCPU,
//!   made with interrupts enabled for exactly the call (`sti; vmmcall; cli`), until
//!   the upcall handler has run and returned. The upcall is the
//!   `HVM_PARAM_CALLBACK_IRQ` vector, which needs no local-APIC EOI on either
//!   hypervisor (the per-vCPU `HVMOP_set_evtchn_upcall_vector` does on Xen). The
//!   handler only counts the event: it reads no clock.
//! - `grant_copy_4k`: `GNTTABOP_copy` of a whole page from a grant this domain
//!   made to itself (source by grant ref, `DOMID_SELF`) to another of its pages.
//!   The first copy's result is checked byte for byte.
//! - `sched_yield`: `SCHEDOP_yield` with nothing else to run.
//! - `boot_to_first_line`: from the entry stub's first instruction (`rdtsc`,
//!   pvh64's `pvh_entry_tsc`) to the return of the first console write (n=1).
//!
//! With `vcpus=2` on the command line the guest prints `rdtsc_overhead` and
//! this metric instead (see "Two vCPUs" below):
//!
//! - `evtchn_ipi_cross_cpu_round_trip`: a round trip of event-channel IPIs
//!   between vCPU 0 and vCPU 1, each on a pCPU of its own and each waiting in
//!   `sti; hlt`, so that the hypervisor blocks it and its pCPU idles. vCPU 0
//!   sends on an IPI port bound to vCPU 1 (`EVTCHNOP_send`, interrupts off),
//!   then waits in `sti; hlt`; vCPU 1's upcall handler counts the event and
//!   answers on an IPI port bound to vCPU 0 from inside the handler, then goes
//!   back to its `sti; hlt`; the round ends once vCPU 0's upcall handler has
//!   counted the answer. Both upcalls are the domain's `HVM_PARAM_CALLBACK_IRQ`
//!   vector, which Xen and keel deliver to every vCPU without an EOI. Under
//!   `-icount` the TSC is one clock advanced by every instruction either CPU
//!   retires, and neither CPU spins waiting for the other, so the delta is the
//!   sum of what both execute for two IPIs: two hypercall exits, two kicks of
//!   the other pCPU, two HLT exits and ways into idle and out, two schedules
//!   and injections, two handlers. What it is not: a latency (QEMU runs the
//!   CPUs in turns, in an order of its own; `bench/ipi.rs` and docs/performance.md
//!   say what follows from that).
//!
//! `iterations=N` on the command line sets the rounds per metric (default
//! [`DEFAULT_ITERATIONS`], at most [`MAX_ITERATIONS`]); the console metric does a
//! fifth of them to keep the log short.
//!
//! # Two vCPUs
//!
//! `vcpus=2` needs a Dom0 with (at least) two vCPUs, each pinned to a pCPU of
//! its own (`dom0_max_vcpus=2 dom0_vcpus_pin` on both hypervisors, QEMU `-smp
//! 2`), and runs in a boot of its own (`bench/ipi.rs`). vCPU 1 is started with the smp
//! mode's machinery (`crate::smp::vcpus`: `VCPUOP_initialise` with a 64-bit
//! context, `VCPUOP_up`, its command mailbox) but asks for no upcall vector of
//! its own, and waits in `sti; hlt` ([`crate::smp::vcpus::Cmd::Idle`]) for the whole
//! metric. vCPU 0 binds both IPI ports and checks afterwards that every request
//! and every answer was counted exactly once.
//!
//! # Invariants and hazards
//!
//! - Interrupts stay off except inside the event-channel send (and, with two
//!   vCPUs, the waits in `sti; hlt`), so nothing but the hypervisor's own work
//!   (its timer ticks included) lands between two reads: the median is the
//!   typical cost, the minimum the cost without interference.
//! - The grant table frame is mapped over [`grants::TABLE`] and the shared-info
//!   page over [`shared::SHARED_INFO`], both statics of this image; the copy's
//!   source and destination are two more.

use keel_hypercall::abi::console::CONSOLEIO_WRITE;
use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::sched::SCHEDOP_YIELD;
use keel_hypercall::abi::start_info::SIF_INITDOMAIN;
use keel_hypercall::abi::version::XENVER_VERSION;

use crate::checks::Rc;
use crate::grants::{self, End};
use crate::hypercall::{self, Xen};
use crate::paging::Page;
use crate::start_info::BootInfo;
use crate::{arch, cmdline, console, domu, events, out, shared};

mod ipi;

/// Rounds per metric unless `iterations=` says otherwise.
pub const DEFAULT_ITERATIONS: usize = 1000;
/// The most rounds a metric records (its samples live on the stack).
pub const MAX_ITERATIONS: usize = 1000;
/// Unrecorded rounds before each metric.
const WARMUP: usize = 8;
/// The grant ref the copy source is granted at.
const GREF: u32 = 1;

/// The copy's source and destination.
static SOURCE: Page = Page::new();
static DEST: Page = Page::new();

/// A failed step: printed as `BENCH error`.
struct Failed;

/// Runs every metric, prints them and shuts down.
pub fn run(xen: &Xen, boot: &BootInfo) -> ! {
    let n = cmdline::get(boot.cmdline(), "iterations")
        .and_then(|v| core::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
        .clamp(1, MAX_ITERATIONS);
    let vcpus = match cmdline::get(boot.cmdline(), "vcpus") {
        None => Some(1),
        Some(v) => core::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse::<usize>().ok()),
    };
    let result = match vcpus {
        Some(1) => measure_all(xen, boot, n),
        Some(2) => ipi::measure_all(xen, boot, n),
        _ => fail(format_args!("vcpus= must be 1 or 2")),
    };
    match result {
        Ok(()) => {
            out!("BENCH done");
            out!("Test result: SUCCESS");
            crate::modes::shutdown(keel_hypercall::abi::sched::SHUTDOWN_POWEROFF)
        }
        Err(Failed) => {
            out!("Test result: FAILURE (bench)");
            crate::modes::shutdown(keel_hypercall::abi::sched::SHUTDOWN_CRASH)
        }
    }
}

fn measure_all(xen: &Xen, boot: &BootInfo, n: usize) -> Result<(), Failed> {
    // The first line has been printed by now (modes::run's banner).
    let Some(first) = console::first_line_tsc() else {
        return fail(format_args!("no console line was printed"));
    };
    report(
        "boot_to_first_line",
        &mut [first.wrapping_sub(arch::entry_tsc())],
    );
    initial_domain(boot)?;

    metric("rdtsc_overhead", n, || Ok(()))?;

    metric("hypercall_xen_version", n, || {
        expect(
            "xen_version",
            hypercall::xen_version(XENVER_VERSION, 0),
            |rc| rc > 0,
        )
    })?;

    let mut line = [b'.'; 64];
    line[..12].copy_from_slice(b"bench: 64 B ");
    line[63] = b'\n';
    metric("console_io_64b", (n / 5).max(1), || {
        // The buffer is a live local the hypervisor only reads.
        let rc = hypercall::console_io(CONSOLEIO_WRITE, line.len(), line.as_ptr() as usize);
        expect("console_io", rc, |rc| rc == 0)
    })?;

    let port = setup_events()?;
    metric("evtchn_send_upcall", n, || send_and_take(xen, port))?;

    setup_grant()?;
    metric("grant_copy_4k", n, || {
        let g = copy_page();
        if g.ok() {
            Ok(())
        } else {
            fail(format_args!("GNTTABOP_copy: {g}"))
        }
    })?;

    metric("sched_yield", n, || {
        expect(
            "SCHEDOP_yield",
            hypercall::sched_op(SCHEDOP_YIELD, 0),
            |rc| rc == 0,
        )
    })?;
    Ok(())
}

/// `Ok` if this is Dom0 (the metrics print through `console_io`, which is Dom0's).
fn initial_domain(boot: &BootInfo) -> Result<(), Failed> {
    if boot.raw.flags & SIF_INITDOMAIN == 0 {
        return fail(format_args!(
            "not the initial domain: console_io is Dom0's, boot me as Dom0"
        ));
    }
    Ok(())
}

/// Times `n` rounds of `op` (after [`WARMUP`] unrecorded ones) and prints them.
fn metric(name: &str, n: usize, mut op: impl FnMut() -> Result<(), Failed>) -> Result<(), Failed> {
    for _ in 0..WARMUP {
        op()?;
    }
    let mut samples = [0u64; MAX_ITERATIONS];
    for s in samples.iter_mut().take(n) {
        let t0 = arch::rdtsc();
        let r = op();
        let t1 = arch::rdtsc();
        r?;
        *s = t1.wrapping_sub(t0);
    }
    report(name, &mut samples[..n]);
    Ok(())
}

/// Prints one metric line (sorts `samples`).
fn report(name: &str, samples: &mut [u64]) {
    samples.sort_unstable();
    let min = samples.first().copied().unwrap_or(0);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    out!(
        "BENCH {} n={} min={} median={} unit=insns",
        name,
        samples.len(),
        min,
        median
    );
}

/// Prints `BENCH error <what>`: the failure to return.
fn error(what: core::fmt::Arguments<'_>) -> Failed {
    out!("BENCH error {}", what);
    Failed
}

fn fail(what: core::fmt::Arguments<'_>) -> Result<(), Failed> {
    Err(error(what))
}

/// `Ok` if `good(rc)`, else a `BENCH error` naming `what`.
fn expect(what: &str, rc: i64, good: impl FnOnce(i64) -> bool) -> Result<(), Failed> {
    if good(rc) {
        Ok(())
    } else {
        fail(format_args!("{what} returned {}", Rc(rc)))
    }
}

/// Maps shared info, asks for the callback-vector upcall, binds and unmasks an
/// IPI port to vCPU 0: the port.
fn setup_events() -> Result<u32, Failed> {
    expect("XENMEM_add_to_physmap(shared_info)", shared::map(), |rc| {
        rc == 0
    })?;
    events::stamp_events(false);
    expect(
        "HVM_PARAM_CALLBACK_IRQ",
        events::register_upcall(events::Upcall::Callback),
        |rc| rc == 0,
    )?;
    let port = match events::bind_ipi(0) {
        Ok(p) => p,
        Err(rc) => {
            fail(format_args!("EVTCHNOP_bind_ipi returned {}", Rc(rc)))?;
            0
        }
    };
    expect("EVTCHNOP_unmask", events::unmask(port), |rc| rc == 0)?;
    Ok(port)
}

/// One send on `port` with interrupts on for the call; the upcall must have
/// counted exactly that event by the time it returns.
fn send_and_take(xen: &Xen, port: u32) -> Result<(), Failed> {
    let rc = events::send_irq(xen, port);
    expect("EVTCHNOP_send", rc, |rc| rc == 0)?;
    match events::take(port) {
        1 => Ok(()),
        seen => fail(format_args!(
            "EVTCHNOP_send on port {port}: the upcall saw {seen} events, not 1"
        )),
    }
}

/// Maps grant frame 0, fills [`SOURCE`] with a pattern, grants it read-only to
/// this domain, and checks that one copy brings the pattern over.
fn setup_grant() -> Result<(), Failed> {
    expect(
        "XENMEM_add_to_physmap(grant_table)",
        grants::map_table(),
        |rc| rc == 0,
    )?;
    for i in 0..4096 {
        SOURCE.set(i, (domu::pattern(0xB0, i / 8) >> ((i % 8) * 8)) as u8);
        DEST.set(i, 0);
    }
    let me = domu::self_domid().unwrap_or(0);
    grants::grant(GREF, me, (SOURCE.addr() >> 12) as u64, true);
    let g = copy_page();
    if !g.ok() {
        return fail(format_args!("the first GNTTABOP_copy: {g}"));
    }
    match (0..4096).find(|&i| DEST.get(i) != SOURCE.get(i)) {
        None => Ok(()),
        Some(i) => fail(format_args!(
            "GNTTABOP_copy: byte {i} differs after the copy"
        )),
    }
}

/// One 4 KiB copy from the grant to [`DEST`].
fn copy_page() -> grants::Gnt {
    grants::copy(
        End::Gref {
            domid: DOMID_SELF,
            gref: GREF,
            offset: 0,
        },
        End::Local {
            gfn: (DEST.addr() >> 12) as u64,
            offset: 0,
        },
        4096,
    )
}
