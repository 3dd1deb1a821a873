//! `mode=pingpong role=server|client peer=<domid> [count=N] [gref=R]
//! [evtchn=fifo] [gnttab=2]`: a request/reply exchange over grants and an event
//! channel, with no xenstore and no dom0; `evtchn=fifo` puts this side on FIFO
//! event channels first ([`crate::fifo`], check `FIFO event channels`),
//! `gnttab=2` its grant table on version 2 (check `grant table v2`).
//!
//! # What
//!
//! - Set-up. Each side maps its grant table and grants one page of its own to the
//!   other, writable, at ref `gref` (default 8). The server allocates an unbound
//!   port for the client; the client finds it ([`super::connect`]), maps the
//!   server's page at a gfn just above its RAM, registers its upcall and binds
//!   `VIRQ_TIMER` (a watchdog timer bounds its waits).
//! - For i in 0..N (default 1000): the client writes request i (a header, then
//!   [`PAYLOAD`] bytes derived from i) into the server's page through its mapping
//!   and sends; the server, waiting in `SCHEDOP_poll` with no upcall at all,
//!   checks the request in its own page, writes reply i into the *client's*
//!   granted page with `GNTTABOP_copy` (from a local gfn to the client's grant)
//!   and sends; the client, waiting in `SCHEDOP_block`, checks the reply in its
//!   own page. A request or reply with the wrong sequence number (an early or
//!   stray event) is waited past, not counted.
//! - Teardown. The client unmaps, sends a last event ("bye"), closes its port and
//!   ends its grant; the server, woken by "bye", ends its grant — which works only
//!   because the mapping is gone — and closes its port.
//!
//! Both print `messages verified N: ok` (check `messages verified <N>`) and, as
//! `info:`, the round-trip rate in pvclock time.

use core::sync::atomic::{Ordering, fence};

use keel_hypercall::abi::evtchn::EVTCHNSTAT_INTERDOMAIN;

use super::{Env, connect, pattern, read_gpa_u64, write_gpa_u64};
use crate::checks::Rc;
use crate::domu::DEFAULT_GREF;
use crate::events::{self, Sleep};
use crate::grants::{self, End};
use crate::paging::Page;
use crate::{time, trap};

/// Payload bytes per message (a multiple of 8).
pub const PAYLOAD: usize = 256;
/// Where the payload starts in the page (after the header).
const BODY: usize = 64;
/// Header word 0 of a request.
const REQUEST: u64 = 0x5150_4b45_454c_0001; // "\x01LEEKPQ" read little-endian
/// Header word 0 of a reply.
const REPLY: u64 = 0x5150_4b45_454c_0002;

/// The page this guest grants its peer.
static GRANTED: Page = Page::new();
/// The server's replies are assembled here, then copied to the client.
static OUTBOX: Page = Page::new();

/// How long one message may take before a side gives up (pvclock ns).
const PER_MESSAGE: u64 = 5 * time::S;

/// Runs the mode.
pub fn run(env: &Env<'_>) {
    let Some(peer) = env.domid("peer") else {
        return;
    };
    let count = env.num("count", 1000);
    let gref = env.num("gref", DEFAULT_GREF);
    match env.word("role") {
        Some(b"server") => server(env, peer, count, gref),
        Some(b"client") => client(env, peer, count, gref),
        _ => env.c.fail(
            "command line",
            format_args!("role=server or role=client is required"),
        ),
    }
}

/// Word `i` of the payload of message `seq` (`reply` picks the other pattern).
fn payload_word(seq: u32, reply: bool, i: usize) -> u64 {
    pattern(u64::from(seq) * 2 + u64::from(reply) + 1, i)
}

/// Grants [`GRANTED`] to `peer` at `gref`, writable (checks `grant table mapped`,
/// `grant to peer`).
fn grant_page(env: &Env<'_>, peer: u16, gref: u32) -> bool {
    if env.word("evtchn") == Some(b"fifo") && !use_fifo(env) {
        return false;
    }
    let rc = grants::map_table();
    if !env.c.rc("grant table mapped", rc, 0) {
        return false;
    }
    if env.word("gnttab") == Some(b"2") && !env.c.rc("grant table v2", grants::use_v2(), 0) {
        return false;
    }
    GRANTED.fill(0, 4096, 0);
    grants::grant(gref, peer, (GRANTED.addr() >> 12) as u64, false);
    env.c.check(
        "grant to peer",
        grants::flags(gref) & keel_hypercall::abi::grant_table::GTF_PERMIT_ACCESS != 0,
        format_args!("entry {gref} reads back flags {:#x}", grants::flags(gref)),
    );
    true
}

/// Switches to FIFO event channels with one array page (check `FIFO event
/// channels`).
fn use_fifo(env: &Env<'_>) -> bool {
    let (rc, _) = crate::fifo::init();
    let rc = if rc == 0 { crate::fifo::expand() } else { rc };
    env.c.rc("FIFO event channels", rc, 0)
}

/// Ends the grant at `gref` (check `end grant`).
fn end_grant(env: &Env<'_>, gref: u32) {
    match grants::end_grant(gref) {
        Ok(()) => env.c.ok("end grant"),
        Err(flags) => env.c.fail(
            "end grant",
            format_args!("entry {gref} is still in use: flags {flags:#x}"),
        ),
    }
}

/// Reads header word `w` of [`GRANTED`].
fn granted_word(w: usize) -> u64 {
    let mut b = [0u8; 8];
    GRANTED.read(w * 8, &mut b);
    u64::from_le_bytes(b)
}

/// Whether [`GRANTED`] holds a complete, correct message `seq` of kind `magic`:
/// `Ok(true)` if so, `Ok(false)` if it holds something older (keep waiting),
/// `Err(word)` for the first payload word that is wrong.
fn check_message(magic: u64, seq: u32) -> Result<bool, usize> {
    if granted_word(0) != magic || granted_word(1) != u64::from(seq) {
        return Ok(false);
    }
    fence(Ordering::Acquire);
    let reply = magic == REPLY;
    for i in 0..PAYLOAD / 8 {
        let mut b = [0u8; 8];
        GRANTED.read(BODY + i * 8, &mut b);
        if u64::from_le_bytes(b) != payload_word(seq, reply, i) {
            return Err(i);
        }
    }
    Ok(true)
}

/// Prints the round-trip rate.
fn rate(env: &Env<'_>, n: u32, ns: u64) {
    let per_s = (u64::from(n) * time::S).checked_div(ns).unwrap_or(0);
    env.c.info(format_args!(
        "{n} round trips in {}: {per_s} per second",
        time::Ms(ns as i64)
    ));
}

/// The server side.
fn server(env: &Env<'_>, peer: u16, count: u32, gref: u32) {
    let c = &env.c;
    if !grant_page(env, peer, gref) {
        return;
    }
    let port = match events::alloc_unbound(peer) {
        Ok(p) => {
            c.ok("alloc_unbound for peer");
            c.info(format_args!("port {p} waits for d{peer}"));
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
    // The client's first request comes once it has bound; allow for its start-up.
    let connect_wait = u64::from(env.num("connect-seconds", 10)) * time::S;
    let start = time::now();
    let mut first_at = 0;
    let mut verified = 0u32;
    let mut failure: Option<(u32, &str, i64)> = None;
    'messages: for seq in 1..=count {
        let deadline = time::now() + if seq == 1 { connect_wait } else { PER_MESSAGE };
        loop {
            if events::wait_for(env.xen, port, deadline, Sleep::Poll) == 0 {
                failure = Some((seq, "no request before the deadline", 0));
                break 'messages;
            }
            match check_message(REQUEST, seq) {
                Ok(true) => break,
                Ok(false) => continue,
                Err(word) => {
                    failure = Some((seq, "request payload wrong at word", word as i64));
                    break 'messages;
                }
            }
        }
        if seq == 1 {
            first_at = time::now();
        }
        // Reply: header then payload in OUTBOX, copied into the client's grant.
        OUTBOX.write(0, &REPLY.to_le_bytes());
        OUTBOX.write(8, &u64::from(seq).to_le_bytes());
        for i in 0..PAYLOAD / 8 {
            OUTBOX.write(BODY + i * 8, &payload_word(seq, true, i).to_le_bytes());
        }
        let r = grants::copy(
            End::Local {
                gfn: (OUTBOX.addr() >> 12) as u64,
                offset: 0,
            },
            End::Gref {
                domid: peer,
                gref,
                offset: 0,
            },
            (BODY + PAYLOAD) as u16,
        );
        if !r.ok() {
            c.fail("copy reply to peer", format_args!("message {seq}: {r}"));
            break;
        }
        let rc = events::send(port);
        if rc != 0 {
            failure = Some((seq, "send returned", rc));
            break;
        }
        verified = seq;
    }
    let elapsed = time::now().saturating_sub(if first_at == 0 { start } else { first_at });
    match failure {
        None => {}
        Some((seq, what, v)) => {
            // What the page and the port hold now tells a lost event from a
            // request never written.
            let word = port as usize / 64;
            let bit = 1u64 << (port % 64);
            c.fail(
                "exchange",
                format_args!(
                    "message {seq}: {what} {v} ({verified} verified before; page holds \
                     {:#x} seq {}; port pending {}, masked {})",
                    granted_word(0),
                    granted_word(1),
                    crate::shared::pending(word).load(Ordering::SeqCst) & bit != 0,
                    crate::shared::mask(word).load(Ordering::SeqCst) & bit != 0,
                ),
            );
        }
    }
    let name = super::name(format_args!("messages verified {count}"));
    c.check(
        name.as_str(),
        verified == count,
        format_args!("{verified} of {count} requests verified and answered"),
    );
    rate(env, verified, elapsed);

    // "bye": the client has unmapped our page when it sends this.
    if events::wait_for(env.xen, port, time::now() + PER_MESSAGE, Sleep::Poll) == 0 {
        c.fail(
            "peer done",
            format_args!("no final event from d{peer} within 5 s"),
        );
    } else {
        c.ok("peer done");
    }
    end_grant(env, gref);
    c.rc("close port", events::close(port), 0);
}

/// The client side.
fn client(env: &Env<'_>, peer: u16, count: u32, gref: u32) {
    let c = &env.c;
    if !grant_page(env, peer, gref) {
        return;
    }
    if !super::register_upcall(env) {
        return;
    }
    let Some(timer) = super::bind_timer(env) else {
        return;
    };
    let Some((port, _)) = connect(env, peer) else {
        return;
    };
    match events::status(keel_hypercall::abi::domid::DOMID_SELF, port) {
        Ok(s) => {
            c.check(
                "status of bound port",
                s.status == EVTCHNSTAT_INTERDOMAIN && s.dom_member() == peer,
                format_args!(
                    "status {}, remote d{} port {}",
                    s.status,
                    s.dom_member(),
                    s.interdomain_port()
                ),
            );
        }
        Err(rc) => c.fail("status of bound port", format_args!("returned {}", Rc(rc))),
    };
    let Some(gpa) = grants::free_gfns(env.boot, 1) else {
        c.fail(
            "map peer grant",
            format_args!("no free gfn above RAM below 4 GiB"),
        );
        return;
    };
    let (r, handle) = grants::map(peer, gref, gpa, false);
    if !c.check(
        "map peer grant",
        r.ok(),
        format_args!("d{peer} ref {gref} at {gpa:#x}: {r}"),
    ) {
        return;
    }
    c.info(format_args!(
        "d{peer} ref {gref} mapped at {gpa:#x}, handle {handle}"
    ));

    // One watchdog for the whole exchange: SCHEDOP_block sleeps until an event,
    // and the timer's VIRQ is the event that ends a wait for a reply that never
    // comes.
    let budget = PER_MESSAGE + u64::from(count) * 20 * time::MS;
    let start = time::now();
    let deadline = start + budget;
    let rc = time::set_singleshot(deadline, false);
    c.rc("watchdog timer", rc, 0);

    let mut verified = 0u32;
    let mut failure: Option<(u32, &str, i64)> = None;
    'messages: for seq in 1..=count {
        // Payload first, then the header that makes it a request.
        for i in 0..PAYLOAD / 8 {
            write_gpa_u64(gpa + (BODY + i * 8) as u64, payload_word(seq, false, i));
        }
        write_gpa_u64(gpa + 8, u64::from(seq));
        fence(Ordering::Release);
        write_gpa_u64(gpa, REQUEST);
        let rc = events::send(port);
        if rc != 0 {
            failure = Some((seq, "send returned", rc));
            break;
        }
        loop {
            if events::wait_for(env.xen, port, deadline, Sleep::Block) == 0 {
                failure = Some((seq, "no reply before the watchdog", 0));
                break 'messages;
            }
            match check_message(REPLY, seq) {
                Ok(true) => break,
                Ok(false) => continue,
                Err(word) => {
                    failure = Some((seq, "reply payload wrong at word", word as i64));
                    break 'messages;
                }
            }
        }
        verified = seq;
    }
    let elapsed = time::now() - start;
    time::stop_singleshot();
    if let Some((seq, what, v)) = failure {
        c.fail(
            "exchange",
            format_args!("message {seq}: {what} {v} ({verified} verified before)"),
        );
    }
    let name = super::name(format_args!("messages verified {count}"));
    c.check(
        name.as_str(),
        verified == count,
        format_args!("{verified} of {count} replies verified"),
    );
    rate(env, verified, elapsed);
    c.info(format_args!(
        "{} upcalls, {} timer events, {} stray upcalls",
        events::upcalls(),
        events::take(timer),
        trap::stray_upcalls()
    ));

    let r = grants::unmap(gpa, handle);
    c.check("unmap peer grant", r.ok(), format_args!("{r}"));
    let left = read_gpa_u64(gpa);
    c.check(
        "gfn empty after unmap",
        left == u64::MAX,
        format_args!("{gpa:#x} still reads {left:#x}"),
    );
    c.rc("send bye", events::send(port), 0);
    c.rc("close port", events::close(port), 0);
    end_grant(env, gref);
}
