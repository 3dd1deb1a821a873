//! The domU modes: guests that run as ordinary domains (no dom0 needed) and test
//! keel's Xen ABI core — event channels, grant tables, timers, scheduling and the
//! PV console — from the inside, alone or in pairs (pvh64 only).
//!
//! # What
//!
//! Each mode is picked by `mode=` and steered by the rest of its command line
//! (`key=value` words, see each module):
//!
//! | mode | module | what |
//! |---|---|---|
//! | `pingpong role=server\|client peer=D` | [`pingpong`] | a grant + event-channel request/reply exchange |
//! | `timers` | [`timers`] | single-shot, periodic and `set_timer_op` timers, pvclock |
//! | `spin seconds=S`, `block seconds=S` | [`sched`] | CPU share as the spinner measures it; sleeping until a timer |
//! | `hostile-evtchn peer=D` | [`hostile_evtchn`] | bad event-channel calls, Xen's exact errnos |
//! | `hostile-grant peer=D`, `granter peer=D` | [`hostile_grant`] | bad grant calls against a granting peer |
//! | `die-holding role=victim\|holder peer=D` | [`die_holding`] | a granter crashes while its grant is mapped |
//! | `fifo [ports=N]` | [`fifo`] | FIFO event channels: the switch, 10,000+ ports, priorities, Xen's errnos |
//!
//! Two guests meet without xenstore: the domain ids come from the command line
//! (`peer=`; keel numbers domUs 1, 2, ... in config order), grant refs are fixed
//! (`gref=`, default [`DEFAULT_GREF`]), and the side that binds finds the other's
//! unbound port by trying `EVTCHNOP_bind_interdomain(peer, p)` for p = 1..=64
//! until one succeeds ([`find_peer_port`]), retrying with `SCHEDOP_yield` for a few
//! seconds while the peer is still starting.
//!
//! Every mode prints `<check>: ok` / `<check>: FAIL <why>` and `info: ...` lines
//! (the names are listed in `tests/tests/domu.rs`) and ends through
//! [`crate::modes::finish`]: `Test result: SUCCESS` and `SHUTDOWN_poweroff`, or
//! `FAILURE` and `SHUTDOWN_crash` (`die-holding`'s victim crashes on purpose).
//!
//! # Invariants and hazards
//!
//! - One vCPU; interrupts are on only inside the waits of [`crate::events`].
//! - Time is pvclock system time ([`crate::time`]), so every mode maps the
//!   shared-info page first; without it no deadline could pass, so a mode that
//!   cannot map it fails at once.
//! - A peer that misbehaves must not hang a mode: every wait has a deadline, and
//!   a mode that gives up says why in a `FAIL` line.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::cpuid as xcpuid;
use keel_hypercall::abi::sched::SCHEDOP_YIELD;

use crate::checks::{Checks, Rc};
use crate::console::Escaped;
use crate::hypercall::{self, Xen};
use crate::start_info::BootInfo;
use crate::{arch, cmdline, events, shared, time};

pub mod die_holding;
pub mod fifo;
pub mod hostile_evtchn;
pub mod hostile_grant;
pub mod pingpong;
pub mod sched;
pub mod timers;

/// The grant ref two peers use unless `gref=` says otherwise (above the 8 refs
/// Xen reserves for the toolstack, `GNTTAB_NR_RESERVED_ENTRIES`).
pub const DEFAULT_GREF: u32 = 8;

/// Ports tried by [`find_peer_port`].
pub const PEER_PORTS: u32 = 64;

/// What a mode works with.
pub struct Env<'a> {
    /// The hypervisor.
    pub xen: &'a Xen,
    /// What `hvm_start_info` said.
    pub boot: &'a BootInfo,
    /// The reporter.
    pub c: Checks,
}

impl Env<'_> {
    /// The decimal value of `key=`, or `default` if absent; a malformed value is
    /// reported (once per call) and `default` used.
    pub fn num(&self, key: &str, default: u32) -> u32 {
        match cmdline::get(self.boot.cmdline(), key) {
            None => default,
            Some(text) => cmdline::number(text).unwrap_or_else(|| {
                self.c.fail(
                    "command line",
                    format_args!(
                        "{}={} is not a number; using {}",
                        key,
                        Escaped(text),
                        default
                    ),
                );
                default
            }),
        }
    }

    /// The domain id in `key=` (required): `None`, with a failed check, if absent
    /// or malformed.
    pub fn domid(&self, key: &str) -> Option<u16> {
        let v = cmdline::get(self.boot.cmdline(), key)
            .and_then(cmdline::number)
            .and_then(|n| u16::try_from(n).ok());
        if v.is_none() {
            self.c
                .fail("command line", format_args!("{key}=<domid> is required"));
        }
        v
    }

    /// The value of `key=`, if present.
    pub fn word(&self, key: &str) -> Option<&[u8]> {
        cmdline::get(self.boot.cmdline(), key)
    }
}

/// Runs domU mode `mode` (one of [`crate::modes::DOMU_MODES`]); the caller then
/// finishes.
pub fn run(mode: &[u8], xen: &Xen, boot: &BootInfo) {
    let env = Env {
        xen,
        boot,
        c: Checks::new("", ""),
    };
    match self_domid() {
        Some(id) => env.c.info(format_args!("this is d{id}")),
        None => env.c.info(format_args!("the domid is not advertised")),
    }
    if !map_shared_info(&env) {
        return;
    }
    match mode {
        b"pingpong" => pingpong::run(&env),
        b"timers" => timers::run(&env),
        b"spin" => sched::spin(&env),
        b"block" => sched::block(&env),
        b"hostile-evtchn" => hostile_evtchn::run(&env),
        b"hostile-grant" => hostile_grant::run(&env),
        b"granter" => hostile_grant::granter(&env),
        b"die-holding" => die_holding::run(&env),
        b"fifo" => fifo::run(&env),
        other => env.c.fail(
            "mode",
            format_args!("mode={} is not a domU mode", Escaped(other)),
        ),
    }
}

/// This domain's id, from Xen's HVM CPUID leaf (base + 4, ECX) when advertised.
pub fn self_domid() -> Option<u16> {
    let xen = hypercall::discover()?;
    if xen.max_leaf < xen.base + xcpuid::LEAF_HVM {
        return None;
    }
    let l = arch::cpuid(xen.base + xcpuid::LEAF_HVM, 0);
    (l.eax & xcpuid::XEN_HVM_CPUID_DOMID_PRESENT != 0).then_some(l.ecx as u16)
}

/// Maps the shared-info page (check `shared_info mapped`) and says what the
/// pvclock looks like.
pub fn map_shared_info(env: &Env<'_>) -> bool {
    let rc = shared::map();
    if !env.c.rc("shared_info mapped", rc, 0) {
        return false;
    }
    let (p, _) = time::read();
    env.c.info(format_args!(
        "pvclock: system time {} ns, mul {:#x}, shift {}, flags {:#x}",
        time::now(),
        p.mul,
        p.shift,
        p.flags
    ));
    true
}

/// Registers the upcall as `upcall=vector|callback` (default `vector`) asks
/// (check `upcall registered`).
pub fn register_upcall(env: &Env<'_>) -> bool {
    let how = match env.word("upcall") {
        Some(b"callback") => events::Upcall::Callback,
        _ => events::Upcall::Vector,
    };
    let rc = events::register_upcall(how);
    env.c.check(
        "upcall registered",
        rc == 0,
        format_args!("upcall={} returned {}", how.name(), Rc(rc)),
    )
}

/// Binds `VIRQ_TIMER` on vCPU 0 (check `bind VIRQ_TIMER`); the port.
pub fn bind_timer(env: &Env<'_>) -> Option<u32> {
    use keel_hypercall::abi::evtchn::VIRQ_TIMER;
    match events::bind_virq(VIRQ_TIMER, 0) {
        Ok(port) => {
            env.c.ok("bind VIRQ_TIMER");
            env.c.info(format_args!("VIRQ_TIMER on port {port}"));
            Some(port)
        }
        Err(rc) => {
            env.c
                .fail("bind VIRQ_TIMER", format_args!("returned {}", Rc(rc)));
            None
        }
    }
}

/// Finds the port `peer` allocated unbound for this domain: tries
/// `bind_interdomain(peer, p)` for p = 1..=[`PEER_PORTS`], yielding between
/// rounds, until one succeeds or `timeout` ns of system time have passed. Returns
/// `(local port, peer's port)`, or the last error.
pub fn find_peer_port(peer: u16, timeout: u64) -> Result<(u32, u32), i64> {
    let deadline = time::now().saturating_add(timeout);
    let mut last = Errno::EINVAL.neg();
    loop {
        for p in 1..=PEER_PORTS {
            match events::bind_interdomain(peer, p) {
                Ok(local) => return Ok((local, p)),
                Err(rc) => last = rc,
            }
        }
        if time::now() >= deadline {
            return Err(last);
        }
        hypercall::sched_op(SCHEDOP_YIELD, 0);
    }
}

/// [`find_peer_port`] as a check (`bind_interdomain to peer`); the ports.
pub fn connect(env: &Env<'_>, peer: u16) -> Option<(u32, u32)> {
    let wait = u64::from(env.num("connect-seconds", 10)) * time::S;
    match find_peer_port(peer, wait) {
        Ok((local, remote)) => {
            env.c.ok("bind_interdomain to peer");
            env.c.info(format_args!(
                "local port {local} bound to d{peer} port {remote}"
            ));
            // Xen marks the new local port pending ("we may have lost
            // notifications on the remote unbound port"): not a message.
            events::collect();
            events::take(local);
            Some((local, remote))
        }
        Err(rc) => {
            env.c.fail(
                "bind_interdomain to peer",
                format_args!(
                    "no port of d{peer} in 1..={PEER_PORTS} accepted a bind within {} s; last error {}",
                    wait / time::S,
                    Rc(rc)
                ),
            );
            None
        }
    }
}

/// Reads 8 bytes at guest-physical `gpa` with one `mov` (a mapped grant, or the
/// hole it leaves: an unpopulated gfn reads as all ones).
pub fn read_gpa_u64(gpa: u64) -> u64 {
    // SAFETY: below 4 GiB, identity-mapped by pvh64's entry stub; RAM, a grant
    // mapping, or nothing (emulated as unbacked MMIO: all ones), never a device.
    unsafe { arch::mmio_read(gpa as usize, 8) }
}

/// Writes 8 bytes at guest-physical `gpa` with one `mov`.
pub fn write_gpa_u64(gpa: u64, value: u64) {
    // SAFETY: as in `read_gpa_u64`; callers write only into a writable grant
    // mapping they made, never into memory Rust uses.
    unsafe { arch::mmio_write64(gpa as usize, value) }
}

/// A page's worth of test pattern: word `i` of page `tag`.
pub fn pattern(tag: u64, i: usize) -> u64 {
    (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .rotate_left((i % 64) as u32)
}

/// A check name built at run time (`messages verified 1000`).
pub fn name(args: core::fmt::Arguments<'_>) -> NameBuf {
    let mut n = NameBuf {
        buf: [0; 64],
        len: 0,
    };
    // Writing into the buffer cannot fail (it truncates).
    let _ = core::fmt::Write::write_fmt(&mut n, args);
    n
}

/// A short text built at run time (at most 64 bytes, truncated).
pub struct NameBuf {
    buf: [u8; 64],
    len: usize,
}

impl NameBuf {
    /// The text (ASCII by construction).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for NameBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
