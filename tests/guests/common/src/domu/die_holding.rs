//! `mode=die-holding role=victim|holder peer=<domid> [gref=8]`: a domain crashes
//! while another has its grant mapped and an event channel bound to it.
//!
//! - The **victim** grants a page (a pattern) read-only to the holder at `gref`,
//!   allocates an unbound port for it, waits (`SCHEDOP_poll`, `wait-seconds=`,
//!   default 60) for the holder's event saying the page is mapped, prints
//!   `crashing on purpose while d<holder> holds the grant` and ends with
//!   `SCHEDOP_shutdown(SHUTDOWN_crash)`.
//! - With `write=1` (both roles) the grant is writable and the holder, while it
//!   (the victim lingers `linger-ms=` after the holder mapped the grant)
//!   waits, writes the page without pause (a burst of writes between status
//!   checks), on its own pCPU while the victim dies on another. Once the death
//!   shows, a write followed by a read of the gfn must read as nothing: keel has
//!   revoked the mapping and every pCPU has dropped it from its TLB before the
//!   frame went back to the allocator (a stale TLB entry would read the write
//!   back).
//! - The **holder** binds the victim's port, maps the grant, checks the pattern,
//!   sends, and then watches its port's status until the victim's death shows: in
//!   Xen a dying domain's channels are closed, which leaves this end
//!   `EVTCHNSTAT_unbound`. Then: `send` on the now-unbound port succeeds (Xen
//!   drops it silently); the mapped gfn still shows the pattern (Xen keeps a dying
//!   domain's granted pages until the last mapping goes) or reads as nothing, all
//!   ones (keel revokes the p2m entry) — either passes, nothing else does; the
//!   unmap returns `GNTST_okay` (Xen) or `GNTST_bad_handle` (already revoked) and
//!   the gfn reads as nothing afterwards; closing the port works. The holder ends
//!   cleanly.

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::evtchn::{EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND};
use keel_hypercall::abi::grant_table::{GNTST_BAD_HANDLE, GNTST_OKAY};
use keel_hypercall::abi::sched::{SCHEDOP_YIELD, SHUTDOWN_CRASH};

use super::{Env, connect, pattern, read_gpa_u64, write_gpa_u64};
use crate::checks::{self, Rc};
use crate::domu::DEFAULT_GREF;
use crate::events::{self, Sleep};
use crate::paging::Page;
use crate::{grants, hypercall, modes, out, time};

/// Pattern tag of the victim's page.
const TAG: u64 = 0x4449_4521;
/// Words of pattern.
const WORDS: usize = 512;
/// Writes between two status checks, with `write=1`.
const WRITE_BURST: usize = 4096;

/// The victim's granted page.
static PAGE: Page = Page::new();

/// Runs the mode.
pub fn run(env: &Env<'_>) {
    let Some(peer) = env.domid("peer") else {
        return;
    };
    let gref = env.num("gref", DEFAULT_GREF);
    match env.word("role") {
        Some(b"victim") => victim(env, peer, gref),
        Some(b"holder") => holder(env, peer, gref),
        _ => env.c.fail(
            "command line",
            format_args!("role=victim or role=holder is required"),
        ),
    }
}

/// The victim: grant, bind, wait for the holder, crash.
fn victim(env: &Env<'_>, peer: u16, gref: u32) {
    let c = &env.c;
    if !c.rc("grant table mapped", grants::map_table(), 0) {
        return;
    }
    for i in 0..WORDS {
        PAGE.write(i * 8, &pattern(TAG, i).to_le_bytes());
    }
    let writable = env.num("write", 0) != 0;
    grants::grant(gref, peer, (PAGE.addr() >> 12) as u64, !writable);
    c.ok("grant to peer");
    let port = match events::alloc_unbound(peer) {
        Ok(p) => {
            c.ok("alloc_unbound for peer");
            p
        }
        Err(rc) => {
            c.fail(
                "alloc_unbound for peer",
                format_args!("returned {}", Rc(rc)),
            );
            return;
        }
    };
    let wait = u64::from(env.num("wait-seconds", 60)) * time::S;
    let mapped = events::wait_for(env.xen, port, time::now() + wait, Sleep::Poll) > 0;
    if !c.check(
        "peer mapped the grant",
        mapped,
        format_args!("no event from d{peer} within {} s", wait / time::S),
    ) {
        return;
    }
    c.info(format_args!(
        "ref {gref} flags now {:#x}",
        grants::flags(gref)
    ));
    let failed = checks::failed();
    if failed > 0 {
        return;
    }
    // `linger-ms=`: live on a while with the grant mapped (the holder writes it
    // meanwhile with `write=1`), then die.
    let linger = time::now() + u64::from(env.num("linger-ms", 0)) * time::MS;
    while time::now() < linger {
        hypercall::sched_op(SCHEDOP_YIELD, 0);
    }
    out!(
        "{} checks passed; crashing on purpose while d{} holds the grant",
        checks::passed(),
        peer
    );
    modes::shutdown(SHUTDOWN_CRASH)
}

/// The holder: bind, map, signal, watch the victim die, clean up.
fn holder(env: &Env<'_>, peer: u16, gref: u32) {
    let c = &env.c;
    let Some((port, _)) = connect(env, peer) else {
        return;
    };
    let Some(gpa) = grants::free_gfns(env.boot, 1) else {
        c.fail(
            "map peer grant",
            format_args!("no free gfn above RAM below 4 GiB"),
        );
        return;
    };
    let writing = env.num("write", 0) != 0;
    let (g, handle) = grants::map(peer, gref, gpa, !writing);
    if !c.check(
        "map peer grant",
        g.ok(),
        format_args!("d{peer} ref {gref} at {gpa:#x}: {g}"),
    ) {
        return;
    }
    let bad = (0..WORDS).find(|&i| read_gpa_u64(gpa + i as u64 * 8) != pattern(TAG, i));
    c.check(
        "read through map",
        bad.is_none(),
        format_args!("word {} differs", bad.unwrap_or(0)),
    );
    c.rc("send mapped to peer", events::send(port), 0);

    // The victim's death shows as our end of the channel becoming unbound.
    let wait = u64::from(env.num("wait-seconds", 60)) * time::S;
    let deadline = time::now() + wait;
    let mut last = (0i64, 0u32);
    let mut writes = 0u64;
    let died = loop {
        match events::status(DOMID_SELF, port) {
            Ok(s) if s.status == EVTCHNSTAT_UNBOUND => break true,
            Ok(s) => last = (0, s.status),
            Err(rc) => last = (rc, 0),
        }
        if time::now() >= deadline {
            break false;
        }
        if writing {
            // Keep the mapping busy in guest mode, away from keel.
            for i in 0..WRITE_BURST {
                write_gpa_u64(gpa + (i % WORDS) as u64 * 8, writes);
                writes += 1;
            }
        } else {
            hypercall::sched_op(SCHEDOP_YIELD, 0);
        }
    };
    if writing {
        c.info(format_args!("{writes} writes to the mapping while the peer lived"));
        write_gpa_u64(gpa, 0x5741_5321);
        let back = read_gpa_u64(gpa);
        c.check(
            "write after peer died lands nowhere",
            back == u64::MAX,
            format_args!("wrote 0x57415321 at {gpa:#x} and read back {back:#x}: the mapping outlived the domain"),
        );
    }
    c.check(
        "port unbound after peer died",
        died,
        format_args!(
            "after {} s the port's status is {} (returned {}); {} is interdomain",
            wait / time::S,
            last.1,
            Rc(last.0),
            EVTCHNSTAT_INTERDOMAIN
        ),
    );
    c.rc("send after peer died", events::send(port), 0);

    let w0 = read_gpa_u64(gpa);
    let kept = !writing && (0..WORDS).all(|i| read_gpa_u64(gpa + i as u64 * 8) == pattern(TAG, i));
    let revoked = (0..WORDS).all(|i| read_gpa_u64(gpa + i as u64 * 8) == u64::MAX);
    c.info(format_args!(
        "after the peer died the mapping {}",
        if kept {
            "still shows the page (Xen keeps it until unmapped)"
        } else if revoked {
            "reads as nothing (revoked)"
        } else {
            "shows something else"
        }
    ));
    c.check(
        "mapping after peer died",
        kept || revoked,
        format_args!("word 0 reads {w0:#x}: neither the page nor all ones"),
    );
    let g = grants::unmap(gpa, handle);
    c.info(format_args!("unmap after the peer died: {g}"));
    c.check(
        "unmap after peer died",
        g.rc == 0 && (g.status == GNTST_OKAY || g.status == GNTST_BAD_HANDLE),
        format_args!("{g}; expected okay or bad_handle"),
    );
    let left = read_gpa_u64(gpa);
    c.check(
        "gfn empty after unmap",
        left == u64::MAX,
        format_args!("{gpa:#x} still reads {left:#x}"),
    );
    c.rc("close port", events::close(port), 0);
}
