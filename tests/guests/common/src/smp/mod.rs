//! `mode=smp`: a domain with several vCPUs, checked from the inside (pvh64; as a
//! domU with xl.cfg `vcpus`/`maxvcpus`, or as Dom0 with `dom0_max_vcpus`).
//!
//! # What
//!
//! Xen's multi-vCPU ABI for PVH/HVM guests (`xen/include/public/vcpu.h`,
//! `hvm/hvm_vcpu.h`, `hvm/hvm_op.h`, `event_channel.h`; `xen/common/domain.c`,
//! `xen/arch/x86/hvm/domain.c`, `hvm/vlapic.c`, `hvm/hvm.c`): vCPU 0 starts at the
//! PVH entry, the others exist but are down and uninitialised; the MADT lists
//! them all; a guest starts them with `VCPUOP_initialise` + `VCPUOP_up`, or as on
//! real hardware with INIT + SIPI through a real-mode trampoline; events, timers
//! and local APICs are per vCPU. Each check below is one line, `<name>: ok` or
//! `<name>: FAIL <why>`, printed by vCPU 0 (the APs only report through memory,
//! [`vcpus::Slot`]); the line set is the same for any number of vCPUs from 2 to
//! [`vcpus::MAX_VCPUS`] (vCPU numbers go into `FAIL` reasons and `info:` lines).
//! In order (every name exactly as printed):
//!
//! 1. **Topology**: `MADT found`, `MADT lists every vCPU`, `MADT APIC ids are 2 x
//!    vcpu id`, `MADT enabled flags`, `vCPU count as configured`, `only vCPU 0 up
//!    at start`. N = the first id `VCPUOP_is_up` answers `-ENOENT`; the MADT has
//!    N processor entries, APIC id 2k (vCPU 0's local APIC ID register agrees),
//!    "enabled" for a prefix of them (the `vcpus` of a `maxvcpus` domain);
//!    `vcpus=`/`maxvcpus=` on the command line, if given, must match. Then vCPU
//!    0's own: `local APIC enabled`, `upcall registered`.
//! 2. **Refused before any start** (`refused.rs`), aimed at vCPU N-1: `VCPUOP_up
//!    of an uninitialised vCPU refused`; `-EINVAL` for `VCPUOP_initialise 32-bit
//!    data segment as CS refused`, `... 32-bit non-present CS refused`, `...
//!    32-bit SS.DPL != CS.DPL refused`, `... 32-bit EIP beyond CS limit refused`,
//!    `... 64-bit non-canonical RIP refused`, `... 64-bit without CR0.PG
//!    refused`, `... 64-bit without CR4.PAE refused`, `... 64-bit without
//!    EFER.LME refused`, `... non-zero pad refused`, `... unknown mode refused`
//!    (each `VCPUOP_initialise ...`); `-EFAULT` for `VCPUOP_initialise unmapped
//!    context refused`; `refused contexts leave the vCPU down`; `-ENOENT` for
//!    vcpu ids N and 0xFFFFFFFF: `VCPUOP_initialise of a missing vCPU refused`,
//!    `VCPUOP_up of a missing vCPU refused`, `VCPUOP_is_up of a missing vCPU
//!    refused`, `EVTCHNOP_bind_ipi to a missing vCPU refused`, `EVTCHNOP_bind_virq
//!    to a missing vCPU refused`, `EVTCHNOP_bind_vcpu to a missing vCPU
//!    refused`, `HVMOP_set_evtchn_upcall_vector for a missing vCPU refused`.
//! 3. **vCPU 1 by hypercall** (`start.rs`): `VCPUOP_initialise vCPU 1`,
//!    `initialised vCPU stays down until VCPUOP_up`, `VCPUOP_up vCPU 1`, `vCPU 1
//!    online`, `vCPU 1 started with the registers it was given`, `vCPU 1 sees its
//!    own local APIC`, `vCPU 1 upcall vector set`, `VCPUOP_is_up vCPU 1`,
//!    `VCPUOP_initialise of an online vCPU refused` (`-EEXIST`).
//! 4. **The rest by INIT + SIPI** (`start.rs`, [`trampoline`]): `trampoline page
//!    is free RAM`, `page tables below 4 GiB`, `vCPUs started by INIT+SIPI`
//!    (vCPUs 2..N-1; with N = 2, vCPU 1 halted with interrupts off, which takes
//!    it down, and restarted that way), `SIPI to an online vCPU ignored`, `every
//!    vCPU up`.
//! 5. **IPIs** (`ipis.rs`): `EVTCHNOP_bind_ipi on every vCPU`, `EVTCHNOP_status
//!    names each IPI port's vCPU`, `event-channel IPI round trips`, `fixed IPI
//!    round trips` (`rounds=` round trips between vCPU 0 and each AP, by event
//!    channel and by local APIC id, every count exact at both ends), `fixed IPI
//!    to self`, `fixed IPI to all excluding self` (each reaches exactly whom it
//!    names, once).
//! 6. **Timers** (`timers.rs`): `VIRQ_TIMER bound on every vCPU`, `singleshot
//!    timer fires on every vCPU` (once, not early, on that vCPU),
//!    `VCPUOP_set_singleshot_timer for another vCPU refused`, `periodic timer set
//!    for another vCPU fires there`, `VCPUOP_stop_periodic_timer for another vCPU
//!    stops it`.
//! 7. **Down and up** (`updown.rs`): `VCPUOP_down of another vCPU`, `VCPUOP_up
//!    resumes a downed vCPU`, `VCPUOP_down of itself`, `self-down returns after
//!    VCPUOP_up`, `HLT with interrupts off takes a vCPU down`, `INIT+SIPI brings
//!    a halted vCPU back`.
//! 8. **Hostile, with the APs running** (`hostile.rs`): `EVTCHNOP_bind_vcpu to a
//!    down vCPU accepted`, `event for a down vCPU waits in its selector`, `event
//!    for a down vCPU delivered when it comes up`, `fixed IPI to a missing APIC
//!    id goes nowhere`, `INIT and SIPI to a missing APIC id go nowhere`,
//!    `INIT+SIPI storm restarts the vCPU once`.
//! 9. **Afterwards**: `every vCPU answers`, `interrupts ran on their own vCPU`
//!    (no handler saw another vCPU's APIC id, no start on a wrong stack), `no
//!    stray interrupts`.
//!
//! (Before step 1, as in the domU modes: `shared_info mapped`.)
//!
//! Command line: `vcpus=E` and `maxvcpus=N` (the expected counts; without
//! them any N >= 2 is accepted), `rounds=R` (100), `storm=S` (200 INIT + SIPI
//! pairs), `timeout-s=T` (30: every wait's bound; Bochs is ~100x slower than
//! hardware), `settle-ms=M` (50: how long "nothing more arrives" is watched).
//!
//! # Xen facts the expectations rest on
//!
//! - `VCPUOP_*` with a vcpu id the domain lacks: `-ENOENT` before anything else
//!   (`do_vcpu_op`). `VCPUOP_initialise` copies the context first (`-EFAULT`),
//!   then refuses an initialised vCPU (`-EEXIST`), then checks it
//!   (`arch_set_info_hvm_guest`: `-EINVAL`), and leaves the vCPU down.
//!   `VCPUOP_up` of an uninitialised vCPU: `-EINVAL`. `VCPUOP_down` of the
//!   caller returns once the vCPU is up again. `VCPUOP_set_singleshot_timer`
//!   only for the caller (`-EINVAL`); the periodic timer for any vCPU.
//! - `EVTCHNOP_bind_ipi`/`bind_virq`/`bind_vcpu` with a missing vcpu: `-ENOENT`.
//!   `bind_vcpu` of an IPI port is `-EINVAL` in Xen, so the down-vCPU check uses
//!   a loopback interdomain channel (`alloc_unbound` + `bind_interdomain` to
//!   `DOMID_SELF`), whose notify vCPU may be any vCPU, down or not.
//! - The per-vCPU upcall vector is injected through that vCPU's local APIC:
//!   only while it is software-enabled, and it needs an EOI (`hvm_assert_evtchn_irq`).
//! - HLT with interrupts off takes the vCPU down (`hvm_hlt`); INIT resets an
//!   initialised vCPU (down, uninitialised); SIPI starts an uninitialised one at
//!   (vector << 8):0000 in real mode and is ignored by an initialised one
//!   (`vlapic_init_sipi_one`, `hvm_vcpu_reset_state`). APIC id = 2 x vcpu id
//!   (`hvm/vlapic.c`, libacpi's MADT). Physical destination 0xFF is a broadcast,
//!   so the "missing APIC id" checks use ids nobody has below it.
//! - Once the sender's ICR write has completed, its INIT or SIPI has taken
//!   effect (Xen pauses the sender until its tasklet has run them): the storm
//!   relies on it to know which start is the last.
//!
//! # Locking
//!
//! None of its own. Everything shared between vCPUs is an atomic with one
//! writer (see [`vcpus`]); the only lock is the console's, taken only to print,
//! and APs print nothing unless they take an unexpected exception.
//!
//! # Invariants and hazards
//!
//! - Any number of pCPUs: no check assumes another vCPU runs at the same time;
//!   every wait yields ([`vcpus::wait_until`]) and has a deadline.
//! - vCPU 0 is the only one that prints, posts commands and takes other vCPUs
//!   down, and never while an AP could be holding the console lock.
//! - An AP that never comes online is left out of the later checks (they fail
//!   with its id rather than wait for it again).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::checks::{Checks, Rc};
use crate::domu::{self, Env};
use crate::hypercall::Xen;
use crate::start_info::BootInfo;
use crate::time::{self, MS, S};
use crate::trap;

pub mod acpi;
mod hostile;
mod ipis;
pub mod lapic;
mod refused;
mod start;
mod timers;
mod topology;
pub mod trampoline;
mod updown;
pub mod vcpus;

use vcpus::{Cmd, SLOTS};

/// Every wait's bound, in ns (`timeout-s=`).
static TIMEOUT_NS: AtomicU64 = AtomicU64::new(30 * S);
/// How long "nothing more arrives" is watched, in ns (`settle-ms=`).
static SETTLE_NS: AtomicU64 = AtomicU64::new(50 * MS);

/// Every wait's bound (ns).
pub fn timeout() -> u64 {
    TIMEOUT_NS.load(Ordering::Relaxed)
}

/// The settle period (ns).
pub fn settle() -> u64 {
    SETTLE_NS.load(Ordering::Relaxed)
}

/// How early (ns) a timer event may be seen: an AP computes system time from
/// vCPU 0's pvclock parameters (see `crate::time`), which may differ from its own
/// by rounding.
const EARLY_SLACK: u64 = 50 * time::US;

/// Where the single-shot timers are armed, ahead of now.
const TIMER_DELAY: u64 = 20 * MS;

/// The periodic timer's period, and the ticks expected.
const PERIOD: u64 = 10 * MS;
const PERIODIC_TICKS: u32 = 3;

/// A guest-virtual address nothing maps (pvh64 maps the low 4 GiB, and the
/// probes' window at 4 GiB in `mode=probe` only).
const UNMAPPED_VA: usize = 0x2_0000_0000;

/// The mode's state on vCPU 0.
struct Smp<'a> {
    xen: &'a Xen,
    boot: &'a BootInfo,
    c: Checks,
    /// vCPUs the domain has.
    n: usize,
    rounds: u32,
    storm: u32,
}

/// A failure reason assembled while a check looks at every vCPU: the first one
/// is kept (up to [`Why::CAP`] bytes).
struct Why {
    buf: [u8; Why::CAP],
    len: usize,
}

impl Why {
    const CAP: usize = 160;

    fn new() -> Why {
        Why {
            buf: [0; Why::CAP],
            len: 0,
        }
    }

    /// Records `args` unless a reason is already there.
    fn set(&mut self, args: fmt::Arguments<'_>) {
        if self.len == 0 {
            let _ = self.write_fmt(args);
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reports check `name`: ok if no reason was recorded.
    fn report(&self, c: &Checks, name: &str) -> bool {
        c.check(name, self.is_empty(), format_args!("{}", self))
    }
}

impl fmt::Write for Why {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(Why::CAP - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ASCII by construction (formatted numbers and literal text).
        f.write_str(core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?"))
    }
}

/// Runs the mode; the caller finishes.
pub fn run(xen: &Xen, boot: &BootInfo) {
    let env = Env {
        xen,
        boot,
        c: Checks::new("", ""),
    };
    match domu::self_domid() {
        Some(id) => env.c.info(format_args!("this is d{id}")),
        None => env.c.info(format_args!("the domid is not advertised")),
    }
    TIMEOUT_NS.store(
        u64::from(env.num("timeout-s", 30).max(1)) * S,
        Ordering::Relaxed,
    );
    SETTLE_NS.store(u64::from(env.num("settle-ms", 50)) * MS, Ordering::Relaxed);
    let expect_vcpus = env.word("vcpus").map(|_| env.num("vcpus", 0));
    let expect_max = env.word("maxvcpus").map(|_| env.num("maxvcpus", 0));
    let mut smp = Smp {
        xen,
        boot,
        c: env.c,
        n: 0,
        rounds: env.num("rounds", 100),
        storm: env.num("storm", 200),
    };
    if !domu::map_shared_info(&env) {
        return;
    }
    let Some(n) = smp.topology(expect_vcpus, expect_max) else {
        return;
    };
    smp.n = n;
    if !smp.local_apic() {
        return;
    }
    smp.refused_before_start();
    smp.start_vcpu1();
    smp.start_by_init_sipi();
    smp.ipis();
    smp.timers();
    smp.down_and_up();
    smp.hostile_after();
    smp.afterwards();
}

impl Smp<'_> {
    /// A deadline [`timeout`] from now.
    fn deadline(&self) -> u64 {
        time::now().saturating_add(timeout())
    }

    /// Waits (boundedly) for `cond`.
    fn wait(&self, cond: impl FnMut() -> bool) -> bool {
        vcpus::wait_until(self.xen, self.deadline(), cond)
    }

    /// Watches for [`settle`] ns.
    fn settle(&self) {
        vcpus::pause_for(self.xen, settle());
    }

    /// The APs that are online, in id order.
    fn aps(&self) -> impl Iterator<Item = usize> + use<> {
        (1..self.n).filter(|&k| SLOTS[k].online.load(Ordering::SeqCst))
    }

    /// Records in `why` every AP that is not online.
    fn need_all_online(&self, why: &mut Why) {
        if let Some(k) = (1..self.n).find(|&k| !SLOTS[k].online.load(Ordering::SeqCst)) {
            why.set(format_args!("vCPU {k} is not online"));
        }
    }

    /// Posts `cmd` to `k` and waits for it; whether it finished in time.
    fn command(&self, k: usize, cmd: Cmd, args: [u64; 2]) -> bool {
        let seq = vcpus::post(k, cmd, args);
        self.wait(|| vcpus::done(k, seq))
    }

    /// `Ping` to every online AP; the first that does not answer.
    fn ping_all(&self) -> Option<usize> {
        self.aps().find(|&k| !self.command(k, Cmd::Ping, [0; 2]))
    }

    // ---------------------------------------------------------------------
    // 9. Afterwards

    fn afterwards(&self) {
        let c = &self.c;
        let mut why = Why::new();
        self.need_all_online(&mut why);
        if let Some(k) = self.ping_all() {
            why.set(format_args!("vCPU {k} does not answer"));
        }
        if let Some(k) = (0..self.n as u32).find(|&k| vcpus::is_up(k) != 1) {
            why.set(format_args!(
                "VCPUOP_is_up({k}) returned {}",
                Rc(vcpus::is_up(k))
            ));
        }
        why.report(c, "every vCPU answers");

        let mut why = Why::new();
        for (k, s) in SLOTS[..self.n].iter().enumerate() {
            let wrong = s.wrong_apic.load(Ordering::SeqCst);
            c.info(format_args!(
                "vCPU {k}: {} upcalls, {} fixed IPIs, started {} times",
                s.upcalls.load(Ordering::SeqCst),
                s.lapic_ipis.load(Ordering::SeqCst),
                s.arrivals.load(Ordering::SeqCst)
            ));
            if wrong != 0 {
                why.set(format_args!(
                    "vCPU {k} took {wrong} interrupts while its local APIC said another id"
                ));
            }
        }
        let bad = vcpus::BAD_STARTS.load(Ordering::SeqCst);
        if bad != 0 {
            why.set(format_args!(
                "{bad} starts on a wrong stack (last RDI {:#x})",
                vcpus::BAD_START_ARG.load(Ordering::SeqCst)
            ));
        }
        why.report(c, "interrupts ran on their own vCPU");

        let (upcalls, ipis, spurious, uncounted) = (
            trap::stray_upcalls(),
            trap::stray_ipis(),
            trap::spurious_interrupts(),
            vcpus::UNCOUNTED_EVENTS.load(Ordering::SeqCst),
        );
        c.info(format_args!("{spurious} spurious local APIC interrupts"));
        c.check(
            "no stray interrupts",
            upcalls == 0 && ipis == 0 && uncounted == 0,
            format_args!(
                "{upcalls} upcalls and {ipis} IPIs with no handler, {uncounted} events on ports beyond {}",
                vcpus::COUNTED_PORTS
            ),
        );
    }
}
