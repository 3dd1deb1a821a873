//! `mode=die-holding role=victim|holder peer=<domid> [gref=8]`: a domain crashes
//! while another has its grant mapped and an event channel bound to it.
//!
//! - The **victim** grants a page (a pattern) read-only to the holder at `gref`,
//!   allocates an unbound port for it, waits (`SCHEDOP_poll`, `wait-seconds=`,
//!   default 60) for the holder's event saying the page is mapped, prints
//!   `crashing on purpose while d<holder> holds the grant` and ends with
//!   `SCHEDOP_shutdown(SHUTDOWN_crash)`.
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

use super::{Env, connect, pattern, read_gpa_u64};
use crate::checks::{self, Rc};
use crate::domu::DEFAULT_GREF;
use crate::events::{self, Sleep};
use crate::paging::Page;
use crate::{grants, hypercall, modes, out, time};

/// Pattern tag of the victim's page.
const TAG: u64 = 0x4449_4521;
/// Words of pattern.
const WORDS: usize = 512;

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
    grants::grant(gref, peer, (PAGE.addr() >> 12) as u64, true);
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
    let (g, handle) = grants::map(peer, gref, gpa, true);
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
    let died = loop {
        match events::status(DOMID_SELF, port) {
            Ok(s) if s.status == EVTCHNSTAT_UNBOUND => break true,
            Ok(s) => last = (0, s.status),
            Err(rc) => last = (rc, 0),
        }
        if time::now() >= deadline {
            break false;
        }
        hypercall::sched_op(SCHEDOP_YIELD, 0);
    };
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
    let kept = (0..WORDS).all(|i| read_gpa_u64(gpa + i as u64 * 8) == pattern(TAG, i));
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
