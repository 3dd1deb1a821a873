//! The smp mode's vCPUs from the inside: who runs where, what each vCPU keeps,
//! how the application processors (APs) start and what they do when asked.
//!
//! # Who am I
//!
//! Each AP runs on a stack of its own, [`STACK_SIZE`] bytes of [`AP_STACKS`]
//! (vCPU k on the k-th), and vCPU 0 on pvh64's boot stack; interrupts arrive on
//! the interrupted stack (no IST, no privilege change). So the stack pointer
//! says which vCPU the code runs on ([`this_vcpu`]) without an instruction the
//! hypervisor must emulate, and without trusting it. The handlers compare that
//! with the local APIC ID register (which the hypervisor provides per vCPU) to
//! check each interrupt reached the vCPU it was meant for.
//!
//! # What each vCPU keeps
//!
//! One [`Slot`] per vCPU, all atomics: what the vCPU reported when it came
//! online, a command mailbox (vCPU 0 posts, the AP runs it and acknowledges),
//! and the counts its interrupt handlers keep — upcalls, fixed IPIs, timer
//! events, and the ports bound to it (the `owned` bitmap its upcall handler
//! takes events from; see [`events::collect_on`]). Per-port event counts are in
//! [`PORT_EVENTS`], written only by the handler of the port's owner.
//!
//! # How an AP starts
//!
//! Two ways, both ending at `smp_ap_entry64` in long mode with RDI = its vcpu
//! id and RSP = the top of its stack: `VCPUOP_initialise` with a 64-bit
//! `vcpu_hvm_context` ([`context64`]) then `VCPUOP_up`; or INIT + SIPI through
//! the real-mode trampoline (`super::trampoline`). The stub loads the guest's
//! GDT (CS 0x08, data 0x10, as pvh64's), and `smp_ap_main` loads the shared
//! IDT, waits at its *gate* (open except during the INIT/SIPI storm, so that only
//! the last restart gets further), software-enables its local APIC, asks for
//! its upcall vector, and marks itself online. Then it serves commands
//! ([`Cmd`]) until the test ends.
//!
//! # Waiting
//!
//! Every wait, on any vCPU, is [`wait_until`]: test the condition, and if it
//! does not hold yet `SCHEDOP_yield` with interrupts enabled for exactly the
//! call, until a pvclock deadline. Yielding never sleeps, so a wake-up cannot be
//! lost; it hands the pCPU to another vCPU when there is one, so the guest is
//! correct on one pCPU or on more vCPUs than pCPUs; and an upcall or IPI that
//! became pending runs at the `cli` after the call. A deadline that passes is a
//! failed check, never a hang.
//!
//! # Invariants and hazards
//!
//! - Every field has one writer at a time: the "reported" fields and the
//!   handler counts are the vCPU's own; the mailbox's command and arguments
//!   (published by a release store of `cmd_seq`), `gate_open`, and `online`
//!   while the vCPU is being (re)started are vCPU 0's; `owned` bits are set (an
//!   atomic OR) by whichever vCPU binds the port, and cleared by vCPU 0.
//! - An AP is taken down (VCPUOP_down, HLT, INIT) only while it is idle or in a
//!   command that expects it, never while it holds the console lock (APs print
//!   nothing unless they take an unexpected exception).
//! - The stack an AP starts on is chosen by vCPU 0 (context or trampoline
//!   hand-off); a start on any other stack, or with an id that does not match the
//!   stack, is counted in [`BAD_STARTS`] and the vCPU halts.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::evtchn::VIRQ_TIMER;
use keel_hypercall::abi::hvm::{VCPU_HVM_MODE_64B, VcpuHvmContext, VcpuHvmX86_64};
use keel_hypercall::abi::sched::SCHEDOP_YIELD;
use keel_hypercall::abi::vcpu::{VCPUOP_DOWN, VCPUOP_INITIALISE};

use super::lapic;
use crate::hypercall::{self, Xen};
use crate::{arch, events, shared, time, trap};

/// Most vCPUs the mode handles (the shared-info page has 32 `vcpu_info` slots).
pub const MAX_VCPUS: usize = 16;

/// Each AP's stack.
pub const STACK_SIZE: usize = 16 * 1024;

/// Ports with an event count.
pub const COUNTED_PORTS: usize = 1024;

const _: () = assert!(MAX_VCPUS <= shared::VCPU_SLOTS);

/// The APs' stacks: vCPU k (1 <= k < [`MAX_VCPUS`]) uses the (k-1)-th.
#[repr(C, align(4096))]
pub struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_VCPUS - 1]>);

// SAFETY: each stack is used by one vCPU at a time (the one whose id it belongs
// to, which vCPU 0 starts only on it), and only as a stack: Rust never makes a
// reference to its bytes, it only takes the array's address.
unsafe impl Sync for Stacks {}

/// See [`Stacks`].
pub static AP_STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_VCPUS - 1]));

/// A stack for a start that should not happen (the trampoline's hand-off while
/// nobody is expected to start): big enough for `smp_ap_main` to notice and
/// halt.
#[repr(C, align(4096))]
pub struct StrayStack(UnsafeCell<[u8; 4096]>);

// SAFETY: as for `Stacks`: only ever a stack, never referenced.
unsafe impl Sync for StrayStack {}

/// See [`StrayStack`].
pub static STRAY_STACK: StrayStack = StrayStack(UnsafeCell::new([0; 4096]));

/// Top (initial RSP) of vCPU `vcpu`'s stack (1 <= `vcpu` < [`MAX_VCPUS`]).
pub fn stack_top(vcpu: usize) -> u64 {
    assert!((1..MAX_VCPUS).contains(&vcpu));
    (AP_STACKS.0.get() as usize + vcpu * STACK_SIZE) as u64
}

/// Top of [`STRAY_STACK`].
pub fn stray_stack_top() -> u64 {
    (STRAY_STACK.0.get() as usize + 4096) as u64
}

/// The vCPU the caller runs on, by its stack (0: the boot stack, or any stack
/// that is not an AP's).
pub fn this_vcpu() -> usize {
    let sp = arch::stack_pointer();
    let base = AP_STACKS.0.get() as usize;
    if sp > base && sp <= base + (MAX_VCPUS - 1) * STACK_SIZE {
        (sp - base - 1) / STACK_SIZE + 1
    } else {
        0
    }
}

/// A command vCPU 0 posts to an AP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Cmd {
    /// Nothing: acknowledging it proves the AP is alive and serving.
    Ping = 1,
    /// Bind an IPI port to itself and one to vCPU 0 (`EVTCHNOP_bind_ipi` made
    /// by the AP); results: the two ports (or the errors).
    BindIpis = 2,
    /// `arg[0]` round trips: wait for an event on its own IPI port (count above
    /// `arg[1]` + i), answer on vCPU 0's; results: replies sent, first error.
    EchoEvtchn = 3,
    /// As `EchoEvtchn` with fixed IPIs: wait for its fixed-IPI count to pass
    /// `arg[1]` + i, answer with a fixed IPI to vCPU 0's APIC id.
    EchoLapic = 4,
    /// Bind `VIRQ_TIMER` to itself, arm a single-shot timer `arg[0]` ns ahead,
    /// wait for it; results: see [`timer_test`].
    Timer = 5,
    /// `VCPUOP_down` of itself; result: what it returned (once someone ups it).
    SelfDown = 6,
    /// Mark itself offline and `cli; hlt` (Xen takes the vCPU down): comes back
    /// only by INIT + SIPI, as a new start.
    Halt = 7,
    /// Wait in `sti; hlt` (the hypervisor blocks the vCPU and its pCPU idles)
    /// until the next command is posted, which an event or interrupt must then
    /// wake it to see; whatever upcall handler is installed runs at each wake-up.
    /// Result 0 is 1 once it waits. (`mode=bench vcpus=2`: the receiving end of
    /// the cross-CPU IPI, `crate::bench`.)
    Idle = 8,
}

impl Cmd {
    fn from_u32(v: u32) -> Option<Cmd> {
        Some(match v {
            1 => Cmd::Ping,
            2 => Cmd::BindIpis,
            3 => Cmd::EchoEvtchn,
            4 => Cmd::EchoLapic,
            5 => Cmd::Timer,
            6 => Cmd::SelfDown,
            7 => Cmd::Halt,
            8 => Cmd::Idle,
            _ => return None,
        })
    }
}

/// What one vCPU keeps (see the module docs for who writes what).
pub struct Slot {
    /// Reported: online and serving commands.
    pub online: AtomicBool,
    /// Reported: starts that got past the gate.
    pub arrivals: AtomicU32,
    /// Reported: starts that reached the gate.
    pub gate_reached: AtomicU32,
    /// Set by vCPU 0: starts may pass the gate (true but during the storm).
    pub gate_open: AtomicBool,
    /// Reported: RDI it started with.
    pub entry_arg: AtomicU64,
    /// Reported: its local APIC ID register.
    pub apic_id: AtomicU32,
    /// Reported: what `HVMOP_set_evtchn_upcall_vector` returned.
    pub upcall_rc: AtomicI64,
    /// Reported: passes through the idle loop.
    pub heartbeat: AtomicU64,
    /// Reported: entered `VCPUOP_down` of itself / came back out.
    pub downing: AtomicBool,
    /// See `downing`.
    pub resumed: AtomicBool,
    /// Mailbox: the command ([`Cmd`] as u32) and its arguments.
    pub cmd: AtomicU32,
    /// Mailbox arguments.
    pub arg: [AtomicU64; 2],
    /// Mailbox: bumped by vCPU 0 to post; copied to `done_seq` by the AP when done.
    pub cmd_seq: AtomicU32,
    /// See `cmd_seq`.
    pub done_seq: AtomicU32,
    /// Mailbox results.
    pub res: [AtomicI64; 4],
    /// Its IPI ports: events to it, and its answers to vCPU 0 (0: none).
    pub ipi_in: AtomicU32,
    /// See `ipi_in`.
    pub ipi_out: AtomicU32,
    /// Handler counts: upcalls taken.
    pub upcalls: AtomicU32,
    /// Handler counts: fixed IPIs taken.
    pub lapic_ipis: AtomicU32,
    /// Handler counts: interrupts taken while the local APIC ID register named
    /// another vCPU than the stack.
    pub wrong_apic: AtomicU32,
    /// Its `VIRQ_TIMER` port (0: none).
    pub timer_port: AtomicU32,
    /// Handler counts: events on `timer_port`.
    pub timer_events: AtomicU32,
    /// System time of the last of them.
    pub timer_last_ns: AtomicU64,
    /// The ports bound to it (2-level words).
    pub owned: [AtomicU64; shared::WORDS],
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            online: AtomicBool::new(false),
            arrivals: AtomicU32::new(0),
            gate_reached: AtomicU32::new(0),
            gate_open: AtomicBool::new(true),
            entry_arg: AtomicU64::new(0),
            apic_id: AtomicU32::new(u32::MAX),
            upcall_rc: AtomicI64::new(i64::MIN),
            heartbeat: AtomicU64::new(0),
            downing: AtomicBool::new(false),
            resumed: AtomicBool::new(false),
            cmd: AtomicU32::new(0),
            arg: [const { AtomicU64::new(0) }; 2],
            cmd_seq: AtomicU32::new(0),
            done_seq: AtomicU32::new(0),
            res: [const { AtomicI64::new(0) }; 4],
            ipi_in: AtomicU32::new(0),
            ipi_out: AtomicU32::new(0),
            upcalls: AtomicU32::new(0),
            lapic_ipis: AtomicU32::new(0),
            wrong_apic: AtomicU32::new(0),
            timer_port: AtomicU32::new(0),
            timer_events: AtomicU32::new(0),
            timer_last_ns: AtomicU64::new(0),
            owned: [const { AtomicU64::new(0) }; shared::WORDS],
        }
    }

    /// Marks `port` as bound to this vCPU.
    pub fn own(&self, port: u32) {
        if let Some(w) = self.owned.get((port / 64) as usize) {
            w.fetch_or(1 << (port % 64), Ordering::SeqCst);
        }
    }
}

/// Every vCPU's slot, by vcpu id.
pub static SLOTS: [Slot; MAX_VCPUS] = [const { Slot::new() }; MAX_VCPUS];

/// Each vCPU's APIC id (from the MADT; vCPU 0 sets them before any AP starts).
pub static APIC_IDS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_VCPUS];

/// Events counted per port (by the handler of the vCPU the port is bound to).
pub static PORT_EVENTS: [AtomicU32; COUNTED_PORTS] = [const { AtomicU32::new(0) }; COUNTED_PORTS];

/// Events on ports beyond [`COUNTED_PORTS`].
pub static UNCOUNTED_EVENTS: AtomicU32 = AtomicU32::new(0);

/// Whether each AP asks for its own upcall vector when it starts
/// (`HVMOP_set_evtchn_upcall_vector`, as Linux does; the smp mode). Cleared,
/// the APs rely on the domain's `HVM_PARAM_CALLBACK_IRQ` vector instead, which
/// both Xen and keel deliver to every vCPU without a local-APIC EOI
/// (`mode=bench vcpus=2`, which counts the instructions of an IPI and wants no
/// EOI exit in them); `upcall_rc` then reads 0.
pub static APS_SET_UPCALL_VECTOR: AtomicBool = AtomicBool::new(true);

/// Starts on a stack that is no AP's, or with an id its stack does not match.
pub static BAD_STARTS: AtomicU32 = AtomicU32::new(0);

/// The RDI of the last such start.
pub static BAD_START_ARG: AtomicU64 = AtomicU64::new(0);

/// Events counted on `port`.
pub fn port_events(port: u32) -> u32 {
    PORT_EVENTS
        .get(port as usize)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

/// Counts one event on `port` (in [`PORT_EVENTS`], or [`UNCOUNTED_EVENTS`]
/// beyond them): for the upcall handler of the vCPU the port is bound to.
pub fn count_event(port: u32) {
    match PORT_EVENTS.get(port as usize) {
        Some(c) => c.fetch_add(1, Ordering::SeqCst),
        None => UNCOUNTED_EVENTS.fetch_add(1, Ordering::SeqCst),
    };
}

/// Forgets `port` in every vCPU's bitmap (after closing or rebinding it).
pub fn disown(port: u32) {
    for s in &SLOTS {
        if let Some(w) = s.owned.get((port / 64) as usize) {
            w.fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
        }
    }
}

/// vCPU `vcpu`'s APIC id.
pub fn apic_id(vcpu: usize) -> u32 {
    APIC_IDS[vcpu].load(Ordering::Relaxed)
}

/// Counts an interrupt taken while the local APIC says another vCPU.
fn check_apic(me: usize) {
    if lapic::id() != apic_id(me) {
        SLOTS[me].wrong_apic.fetch_add(1, Ordering::SeqCst);
    }
}

/// The upcall handler (every vCPU): EOI first (on Xen the per-vCPU vector came
/// through the local APIC; as Linux's `sysvec_xen_hvm_callback`), then take this
/// vCPU's ports from its own `vcpu_info`.
fn on_upcall() {
    let me = this_vcpu();
    let s = &SLOTS[me];
    lapic::eoi();
    s.upcalls.fetch_add(1, Ordering::SeqCst);
    check_apic(me);
    let timer = s.timer_port.load(Ordering::SeqCst);
    events::collect_on(
        me,
        |w| s.owned[w].load(Ordering::SeqCst),
        |port| {
            count_event(port);
            if port == timer {
                s.timer_last_ns.store(time::now(), Ordering::SeqCst);
                s.timer_events.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
}

/// The fixed-IPI handler (every vCPU).
fn on_ipi() {
    let me = this_vcpu();
    SLOTS[me].lapic_ipis.fetch_add(1, Ordering::SeqCst);
    check_apic(me);
    lapic::eoi();
}

/// Installs the handlers (once, on vCPU 0, before any AP starts).
pub fn install_handlers() {
    trap::set_upcall_handler(on_upcall);
    trap::set_ipi_handler(on_ipi);
}

/// Waits until `cond` holds or system time reaches `deadline` (see "Waiting"
/// in the module docs); returns whether it held.
pub fn wait_until(xen: &Xen, deadline: u64, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if time::now() >= deadline {
            return cond();
        }
        events::yield_irq(xen);
    }
}

/// Lets `ns` of system time pass (yielding, interrupts on for each yield).
pub fn pause_for(xen: &Xen, ns: u64) {
    let until = time::now().saturating_add(ns);
    wait_until(xen, until, || false);
}

/// `VCPUOP_is_up(vcpu)`.
pub fn is_up(vcpu: u32) -> i64 {
    hypercall::vcpu_op(keel_hypercall::abi::vcpu::VCPUOP_IS_UP, vcpu, 0)
}

/// Posts `cmd` with `args` to AP `vcpu`; returns the sequence number
/// [`done`] waits for.
pub fn post(vcpu: usize, cmd: Cmd, args: [u64; 2]) -> u32 {
    let s = &SLOTS[vcpu];
    for (a, v) in s.arg.iter().zip(args) {
        a.store(v, Ordering::Relaxed);
    }
    s.cmd.store(cmd as u32, Ordering::Relaxed);
    let seq = s.cmd_seq.load(Ordering::Relaxed).wrapping_add(1);
    s.cmd_seq.store(seq, Ordering::Release);
    seq
}

/// Whether AP `vcpu` has finished command `seq`.
pub fn done(vcpu: usize, seq: u32) -> bool {
    SLOTS[vcpu].done_seq.load(Ordering::Acquire) == seq
}

/// Result `i` of AP `vcpu`'s last command.
pub fn result(vcpu: usize, i: usize) -> i64 {
    SLOTS[vcpu].res[i].load(Ordering::Acquire)
}

unsafe extern "C" {
    /// The AP entry stub (`global_asm!` below); never called from Rust.
    fn smp_ap_entry64();
}

/// The 64-bit `vcpu_hvm_context` that starts vCPU `vcpu` at
/// `smp_ap_entry64` on its stack with RDI = `vcpu`, on vCPU 0's page tables
/// and with its CR0, CR4 and EFER (long mode, paging on), interrupts off.
pub fn context64(vcpu: usize) -> VcpuHvmContext {
    let regs = VcpuHvmX86_64 {
        rax: 0,
        rcx: 0,
        rdx: 0,
        rbx: 0,
        rsp: stack_top(vcpu),
        rbp: 0,
        rsi: 0,
        rdi: vcpu as u64,
        rip: ap_entry(),
        rflags: 0x2,
        cr0: arch::read_cr0(),
        cr3: arch::read_cr3() as u64,
        cr4: arch::read_cr4(),
        efer: arch::read_efer(),
    };
    wrap64(regs)
}

/// `regs` as a 64-bit `vcpu_hvm_context`.
pub fn wrap64(regs: VcpuHvmX86_64) -> VcpuHvmContext {
    let mut cpu_regs = [0u8; 120];
    cpu_regs[..VcpuHvmX86_64::SIZE].copy_from_slice(&regs.to_bytes());
    VcpuHvmContext {
        mode: VCPU_HVM_MODE_64B,
        pad: 0,
        cpu_regs,
    }
}

/// `VCPUOP_initialise(vcpu, ctx)` with the context on the stack.
pub fn initialise(vcpu: u32, ctx: &VcpuHvmContext) -> i64 {
    hypercall::with_arg(ctx.to_bytes(), |a| {
        hypercall::vcpu_op(VCPUOP_INITIALISE, vcpu, a)
    })
    .0
}

/// The address of `smp_ap_entry64` (the trampoline jumps there).
pub fn ap_entry() -> u64 {
    smp_ap_entry64 as *const () as usize as u64
}

/// The Rust side of an AP's start (called by `smp_ap_entry64` on the AP's
/// stack, interrupts off, the guest's GDT loaded).
extern "C" fn smp_ap_main(arg: u64) -> ! {
    trap::load();
    let me = this_vcpu();
    if me == 0 || arg != me as u64 {
        // Not a start vCPU 0 asked for: touch nothing and go down (HLT with
        // interrupts off).
        BAD_STARTS.fetch_add(1, Ordering::SeqCst);
        BAD_START_ARG.store(arg, Ordering::SeqCst);
        arch::halt();
    }
    let s = &SLOTS[me];
    s.entry_arg.store(arg, Ordering::SeqCst);
    s.gate_reached.fetch_add(1, Ordering::SeqCst);
    while !s.gate_open.load(Ordering::Acquire) {
        // Nothing is set up for interrupts yet: a plain yield.
        hypercall::sched_op(SCHEDOP_YIELD, 0);
    }
    // The hypercall page is installed (vCPU 0 did it, for the domain).
    let Some(xen) = hypercall::discover() else {
        arch::halt()
    };
    lapic::enable();
    s.apic_id.store(lapic::id(), Ordering::SeqCst);
    let upcall_rc = if APS_SET_UPCALL_VECTOR.load(Ordering::SeqCst) {
        events::set_upcall_vector(me as u32)
    } else {
        0
    };
    s.upcall_rc.store(upcall_rc, Ordering::SeqCst);
    // A command the previous life did not finish (Halt) is abandoned.
    s.done_seq
        .store(s.cmd_seq.load(Ordering::Acquire), Ordering::Release);
    s.arrivals.fetch_add(1, Ordering::SeqCst);
    s.online.store(true, Ordering::SeqCst);
    serve(&xen, me)
}

/// An AP's idle loop: run posted commands, else yield (interrupts on for it).
fn serve(xen: &Xen, me: usize) -> ! {
    let s = &SLOTS[me];
    loop {
        s.heartbeat.fetch_add(1, Ordering::SeqCst);
        let seq = s.cmd_seq.load(Ordering::Acquire);
        if seq != s.done_seq.load(Ordering::Relaxed) {
            if let Some(cmd) = Cmd::from_u32(s.cmd.load(Ordering::Relaxed)) {
                run(xen, me, cmd);
            }
            s.done_seq.store(seq, Ordering::Release);
            continue;
        }
        events::yield_irq(xen);
    }
}

/// Sets result `i`.
fn set_res(s: &Slot, i: usize, v: i64) {
    s.res[i].store(v, Ordering::Release);
}

/// Runs one command on AP `me`.
fn run(xen: &Xen, me: usize, cmd: Cmd) {
    let s = &SLOTS[me];
    let arg = |i: usize| s.arg[i].load(Ordering::Relaxed);
    for r in &s.res {
        r.store(0, Ordering::Relaxed);
    }
    match cmd {
        Cmd::Ping => set_res(s, 0, s.heartbeat.load(Ordering::Relaxed) as i64),
        Cmd::BindIpis => {
            let inbound = events::bind_ipi(me as u32);
            let outbound = events::bind_ipi(0);
            if let Ok(p) = inbound {
                s.own(p);
                s.ipi_in.store(p, Ordering::SeqCst);
            }
            if let Ok(p) = outbound {
                SLOTS[0].own(p);
                s.ipi_out.store(p, Ordering::SeqCst);
            }
            set_res(s, 0, inbound.map_or_else(|rc| rc, i64::from));
            set_res(s, 1, outbound.map_or_else(|rc| rc, i64::from));
        }
        Cmd::EchoEvtchn => {
            let (rounds, base) = (arg(0), arg(1));
            let (inbound, outbound) = (
                s.ipi_in.load(Ordering::SeqCst),
                s.ipi_out.load(Ordering::SeqCst),
            );
            let timeout = super::timeout();
            let (sent, err) = echo(rounds, |i| {
                let want = base + i + 1;
                if !wait_until(xen, time::now() + timeout, || {
                    u64::from(port_events(inbound)) >= want
                }) {
                    return Errno::ETIMEDOUT.neg();
                }
                events::send(outbound)
            });
            set_res(s, 0, sent);
            set_res(s, 1, err);
        }
        Cmd::EchoLapic => {
            let (rounds, base) = (arg(0), arg(1));
            let timeout = super::timeout();
            let (sent, err) = echo(rounds, |i| {
                let want = base + i + 1;
                if !wait_until(xen, time::now() + timeout, || {
                    u64::from(s.lapic_ipis.load(Ordering::SeqCst)) >= want
                }) {
                    return Errno::ETIMEDOUT.neg();
                }
                if lapic::send_fixed(apic_id(0)) {
                    0
                } else {
                    Errno::EBUSY.neg()
                }
            });
            set_res(s, 0, sent);
            set_res(s, 1, err);
        }
        Cmd::Timer => {
            let r = timer_test(xen, me, arg(0));
            for (i, v) in r.into_iter().enumerate() {
                set_res(s, i, v);
            }
        }
        Cmd::SelfDown => {
            s.resumed.store(false, Ordering::SeqCst);
            s.downing.store(true, Ordering::SeqCst);
            let rc = hypercall::vcpu_op(VCPUOP_DOWN, me as u32, 0);
            set_res(s, 0, rc);
            s.resumed.store(true, Ordering::SeqCst);
        }
        Cmd::Idle => {
            let posted = s.cmd_seq.load(Ordering::Acquire);
            set_res(s, 0, 1);
            while s.cmd_seq.load(Ordering::Acquire) == posted {
                arch::wait_for_interrupt();
            }
        }
        Cmd::Halt => {
            s.online.store(false, Ordering::SeqCst);
            // Xen's hvm_hlt: HLT with interrupts off takes the vCPU down; it
            // comes back only by INIT + SIPI, from the trampoline.
            arch::halt();
        }
    }
}

/// `rounds` steps of `step(i)` (0 or an error), stopping at the first error;
/// returns (steps done, first error or 0).
fn echo(rounds: u64, mut step: impl FnMut(u64) -> i64) -> (i64, i64) {
    for i in 0..rounds {
        let rc = step(i);
        if rc != 0 {
            return (i as i64, rc);
        }
    }
    (rounds as i64, 0)
}

/// Result of [`timer_test`] when the timer never fired.
pub const NEVER: i64 = i64::MIN;

/// The per-vCPU timer check, run by vCPU `me` on itself: bind `VIRQ_TIMER` to
/// itself, arm `VCPUOP_set_singleshot_timer` `delay` ns ahead, wait for the
/// event (deadline + timeout), then a settle period for a duplicate. Returns
/// [port or error, set's result, ns from the deadline to the event (or
/// [`NEVER`]), events counted]. The port stays bound (and in `timer_port`).
pub fn timer_test(xen: &Xen, me: usize, delay: u64) -> [i64; 4] {
    let s = &SLOTS[me];
    let port = match events::bind_virq(VIRQ_TIMER, me as u32) {
        Ok(p) => p,
        Err(rc) => return [rc, 0, NEVER, 0],
    };
    s.own(port);
    s.timer_port.store(port, Ordering::SeqCst);
    let base = s.timer_events.load(Ordering::SeqCst);
    let deadline = time::now() + delay;
    let rc = time::set_singleshot_for(me as u32, deadline, false);
    if rc != 0 {
        return [i64::from(port), rc, NEVER, 0];
    }
    let fired = wait_until(xen, deadline + super::timeout(), || {
        s.timer_events.load(Ordering::SeqCst) != base
    });
    let late = if fired {
        s.timer_last_ns.load(Ordering::SeqCst) as i64 - deadline as i64
    } else {
        NEVER
    };
    pause_for(xen, super::settle());
    let count = s.timer_events.load(Ordering::SeqCst).wrapping_sub(base);
    [i64::from(port), 0, late, i64::from(count)]
}

// The AP entry stub: reached in long mode (from `VCPUOP_initialise`'s context or
// the trampoline) with RDI = vcpu id and RSP = the top of its stack, interrupts
// off, and whatever CS/GDT the way in left (CS 0 with 64-bit attributes after
// VCPUOP_initialise, the trampoline's own GDT after INIT + SIPI). Loads the
// guest's GDT, reloads CS by a far return and the data segments, and calls
// `smp_ap_main` with a 16-byte aligned stack.
core::arch::global_asm!(
    r#"
    .pushsection .text.smp_ap_entry, "ax"
    .globl smp_ap_entry64
    .code64
smp_ap_entry64:
    cli
    cld
    lgdt smp_gdt_ptr(%rip)
    pushq $0x08
    leaq 1f(%rip), %rax
    pushq %rax
    lretq
1:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    xor %ebp, %ebp
    and $-16, %rsp
    call {main}
2:  cli
    hlt
    jmp 2b
    .popsection

    .pushsection .data.smp_gdt, "aw"
    .balign 16
smp_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 (as pvh64's) */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
smp_gdt_end:
    .balign 8
smp_gdt_ptr:
    .word smp_gdt_end - smp_gdt - 1
    .quad smp_gdt
    .popsection
"#,
    main = sym smp_ap_main,
    options(att_syntax)
);
