//! `mode=hostile-grant peer=<domid>` and its partner `mode=granter peer=<domid>`:
//! grant-table calls a well-behaved guest never makes, each answered as Xen
//! answers them (`xen/common/grant_table.c`).
//!
//! # The granter
//!
//! Maps its grant table and grants, to its peer: page RO at ref `gref` (default
//! 8) read-only, filled with a pattern; page RW at `gref + 1` writable, zeroed;
//! and page RO again at `gref + 2`, but to a domain that does not exist. It then
//! allocates `decoys=` (default 8) unbound ports for itself and one unbound port
//! for the peer, and waits (`SCHEDOP_poll`, no upcall, `wait-seconds=`, default
//! 60) for the peer's one event ("done"). Then it checks that the peer left no
//! mapping behind (`GTF_reading`/`GTF_writing` clear on every entry), with
//! `expect-write` that the peer's pattern arrived in page RW, ends its grants and
//! closes its ports. `hostile-evtchn` uses the same partner for its ports.
//!
//! # The hostile side
//!
//! After finding the granter's port ([`super::connect`]):
//!
//! - `query_size`, `setup_table`, `get_version` work; `set_version(1)` is 0,
//!   `set_version(2)` is refused with `-ENOSYS` (what Xen answers a domain whose
//!   `max_grant_version` is 1, as the test's config sets), `set_version(3)` is
//!   `-EINVAL`, and the version stays 1;
//! - mapping: ref `gref` read-only works and shows the pattern; the same ref
//!   writable is `GNTST_general_error` (Xen: "Attempt to write-pin a r/o grant
//!   entry"); a ref beyond the table is `GNTST_bad_gntref`; a ref granted to
//!   someone else, and one never granted, `GNTST_general_error` (the entry's
//!   domid or type does not match, `_set_status_v1`); a domain that does not exist
//!   `GNTST_bad_domain`; ref `gref + 1` writable works, and the guest writes a
//!   pattern through it;
//! - copying: a range past the end of the page is `GNTST_bad_copy_arg`; from a
//!   bad ref `GNTST_bad_gntref`; from the read-only grant into a local page works
//!   and copies the pattern; into the read-only grant is `GNTST_general_error`;
//! - unmapping: a handle never handed out is `GNTST_bad_handle`; the read-only
//!   mapping unmaps, a second unmap of it is `GNTST_bad_handle`, and the gfn reads
//!   as nothing (all ones) afterwards; the writable one unmaps.
//!
//! With `v2-peer` (against a granter run with `gnttab=2`, whose table is then
//! version 2 while this side stays at version 1), also [`v2_checks`]: a copy
//! within a sub-page grant works and copies the right bytes, one past its end or
//! before its start is `GNTST_general_error`, as is mapping it; a copy through a
//! transitive grant reaches this side's own page granted back to the granter, and
//! a transitive grant that names itself, an ended grant or no domain is
//! `GNTST_general_error`, as is mapping one or copying into a read-only one. The
//! granter also checks `set_version(1)` is `-EBUSY` while one of its grants is
//! mapped, and goes back to version 1 at the end.
//!
//! Then it sends "done" and closes its port.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::grant_table::{
    GNTST_BAD_COPY_ARG, GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_GENERAL_ERROR,
    GTF_READING, GTF_WRITING,
};

use super::{Env, connect, pattern, read_gpa_u64, write_gpa_u64};
use crate::checks::Rc;
use crate::domu::DEFAULT_GREF;
use crate::events::{self, Sleep};
use crate::grants::{self, End, Gnt};
use crate::paging::Page;
use crate::time;

/// A domain id no domain has.
const MISSING_DOMID: u16 = super::hostile_evtchn::MISSING_DOMID;
/// A grant ref beyond any table (Xen's largest is 64 frames of 512 entries).
const BEYOND_REF: u32 = 1 << 20;
/// A handle never handed out.
const BAD_HANDLE: u32 = 0x7FFF_FFFF;

/// Pattern tag of the read-only page.
const RO_TAG: u64 = 0x524f;
/// Pattern tag of what the peer writes into the writable page.
const RW_TAG: u64 = 0x5257;
/// Words of pattern written and checked.
const WORDS: usize = 512;

/// The granter's pages.
static RO_PAGE: Page = Page::new();
static RW_PAGE: Page = Page::new();
/// The hostile side's copy target.
static COPY_PAGE: Page = Page::new();
/// The hostile side's page that a transitive grant reaches.
static TRANS_PAGE: Page = Page::new();

/// Word `i` of `page`.
fn word(page: &Page, i: usize) -> u64 {
    let mut b = [0u8; 8];
    page.read(i * 8, &mut b);
    u64::from_le_bytes(b)
}

/// `mode=granter`.
pub fn granter(env: &Env<'_>) {
    let c = &env.c;
    let Some(peer) = env.domid("peer") else {
        return;
    };
    let gref = env.num("gref", DEFAULT_GREF);
    let rc = grants::map_table();
    if !c.rc("grant table mapped", rc, 0) {
        return;
    }
    let v2 = env.word("gnttab") == Some(b"2");
    if v2 && !c.rc("grant table v2", grants::use_v2(), 0) {
        return;
    }
    for i in 0..WORDS {
        RO_PAGE.write(i * 8, &pattern(RO_TAG, i).to_le_bytes());
    }
    RW_PAGE.fill(0, 4096, 0);
    let ro_gfn = (RO_PAGE.addr() >> 12) as u64;
    grants::grant(gref, peer, ro_gfn, true);
    grants::grant(gref + 1, peer, (RW_PAGE.addr() >> 12) as u64, false);
    grants::grant(gref + 2, MISSING_DOMID, ro_gfn, true);
    c.ok("grants made");
    c.info(format_args!(
        "ref {gref} read-only, ref {} writable to d{peer}; ref {} to d{MISSING_DOMID}",
        gref + 1,
        gref + 2
    ));
    if v2 {
        v2_grants(env, peer, gref);
    }

    let decoys = env.num("decoys", 8).min(64);
    let mut held = [0u32; 64];
    let mut n = 0;
    for _ in 0..decoys {
        match events::alloc_unbound(keel_hypercall::abi::domid::DOMID_SELF) {
            Ok(p) => {
                held[n] = p;
                n += 1;
            }
            Err(rc) => {
                c.fail(
                    "decoy ports",
                    format_args!("alloc_unbound returned {}", Rc(rc)),
                );
                break;
            }
        }
    }
    if n == decoys as usize {
        c.ok("decoy ports");
    }
    let port = match events::alloc_unbound(peer) {
        Ok(p) => {
            c.ok("alloc_unbound for peer");
            c.info(format_args!(
                "decoys {:?}, port {p} waits for d{peer}",
                &held[..n]
            ));
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
    let done = events::wait_for(env.xen, port, time::now() + wait, Sleep::Poll) > 0;
    c.check(
        "peer done",
        done,
        format_args!("no event from d{peer} within {} s", wait / time::S),
    );

    let busy = [gref, gref + 1, gref + 2]
        .into_iter()
        .map(|r| (r, grants::flags(r)))
        .find(|(_, f)| f & (GTF_READING | GTF_WRITING) != 0);
    match busy {
        None => c.ok("peer released grants"),
        Some((r, f)) => c.fail(
            "peer released grants",
            format_args!("ref {r} still has flags {f:#x}"),
        ),
    }
    if crate::cmdline::has(env.boot.cmdline(), "expect-write") {
        let bad = (0..WORDS).find(|&i| word(&RW_PAGE, i) != pattern(RW_TAG, i));
        c.check(
            "peer wrote through writable grant",
            bad.is_none(),
            format_args!(
                "word {} of the writable page is {:#x}",
                bad.unwrap_or(0),
                word(&RW_PAGE, bad.unwrap_or(0))
            ),
        );
    }
    let extra = if v2 { V2_REFS } else { 0 };
    let unended = (gref..gref + 3)
        .chain(gref + V2_BASE..gref + V2_BASE + extra)
        .find_map(|r| grants::end_grant(r).err().map(|f| (r, f)));
    match unended {
        None => c.ok("end grants"),
        Some((r, f)) => c.fail("end grants", format_args!("ref {r}: flags {f:#x}")),
    }
    if v2 {
        // No grant in use now: back to version 1, the status frame given up.
        let (rc, version) = grants::set_version(1);
        if c.check(
            "back to version 1",
            rc == 0 && version == 1,
            format_args!("returned {}, version {version}", Rc(rc)),
        ) {
            grants::forget_v2();
        }
    }
    let mut bad_close = None;
    for &p in held[..n].iter().chain(core::iter::once(&port)) {
        let rc = events::close(p);
        if rc != 0 {
            bad_close.get_or_insert((p, rc));
        }
    }
    match bad_close {
        None => c.ok("close ports"),
        Some((p, rc)) => c.fail("close ports", format_args!("port {p}: {}", Rc(rc))),
    }
}

/// With `gnttab=2`, the granter's version 2 entries from ref `gref` +
/// [`V2_BASE`] on: a sub-page grant of bytes [`SUB_OFF`]`..+`[`SUB_LEN`] of page
/// RO; a transitive grant of the peer's own ref [`PEER_REF`] (which the peer
/// grants back to this domain); one naming itself (a loop); one naming the
/// peer's ref [`PEER_REF`] + 1 (which the peer grants and then ends); one
/// naming a domain that does not exist.
const V2_BASE: u32 = 16;
/// Entries [`v2_grants`] makes.
const V2_REFS: u32 = 5;
/// The sub-page grant's range.
const SUB_OFF: u16 = 1024;
const SUB_LEN: u16 = 256;
/// The hostile side's own refs that the transitive grants name.
const PEER_REF: u32 = 16;
/// Pattern tag of the page the peer grants back for the transitive copy.
const TRANS_TAG: u64 = 0x5452;

/// The granter's version 2 entries (see [`V2_BASE`]), and `set_version(1)`
/// refused while one of its own grants is mapped (`-EBUSY`).
fn v2_grants(env: &Env<'_>, peer: u16, gref: u32) {
    let c = &env.c;
    let b = gref + V2_BASE;
    let ro_gfn = (RO_PAGE.addr() >> 12) as u64;
    grants::grant_sub_page(b, peer, ro_gfn, SUB_OFF, SUB_LEN, true);
    grants::grant_transitive(b + 1, peer, peer, PEER_REF, true);
    let me = super::self_domid().unwrap_or(0);
    grants::grant_transitive(b + 2, peer, me, b + 2, true);
    grants::grant_transitive(b + 3, peer, peer, PEER_REF + 1, true);
    grants::grant_transitive(b + 4, peer, MISSING_DOMID, 0, true);
    c.ok("v2 grants made");
    // A grant of its own, mapped by itself: the table is in use.
    let own = b + V2_REFS;
    grants::grant(own, me, ro_gfn, true);
    let Some(gpa) = grants::free_gfns(env.boot, 1) else {
        c.fail("free gfns", format_args!("none above RAM below 4 GiB"));
        return;
    };
    let (g, handle) = grants::map(me, own, gpa, true);
    if c.check("map own v2 grant", g.ok(), format_args!("{g}")) {
        c.errno(
            "set_version 1 with a live v2 grant",
            grants::set_version(1).0,
            Errno::EBUSY,
        );
        let (rc, v) = grants::get_version();
        c.check(
            "still version 2",
            rc == 0 && v == 2,
            format_args!("returned {}, version {v}", Rc(rc)),
        );
        let g = grants::unmap(gpa, handle);
        c.check("unmap own v2 grant", g.ok(), format_args!("{g}"));
    }
    match grants::end_grant(own) {
        Ok(()) => c.ok("end own v2 grant"),
        Err(f) => c.fail("end own v2 grant", format_args!("flags {f:#x}")),
    }
}

/// The hostile side's checks against a version 2 granter (`v2-peer`): sub-page
/// bounds, transitive copies (valid, looping, to an ended grant, to no domain),
/// and maps of either refused. This side stays at version 1.
fn v2_checks(env: &Env<'_>, peer: u16, gref: u32) {
    let c = &env.c;
    let b = gref + V2_BASE;
    if !c.rc("own grant table mapped", grants::map_table(), 0) {
        return;
    }
    for i in 0..WORDS {
        TRANS_PAGE.write(i * 8, &pattern(TRANS_TAG, i).to_le_bytes());
    }
    let trans_gfn = (TRANS_PAGE.addr() >> 12) as u64;
    grants::grant(PEER_REF, peer, trans_gfn, true);
    grants::grant(PEER_REF + 1, peer, trans_gfn, true);
    let _ = grants::end_grant(PEER_REF + 1);
    let local = End::Local {
        gfn: (COPY_PAGE.addr() >> 12) as u64,
        offset: 0,
    };
    let at = |gref, offset| End::Gref {
        domid: peer,
        gref,
        offset,
    };

    // Sub-page.
    COPY_PAGE.fill(0, 4096, 0);
    let g = grants::copy(at(b, SUB_OFF), local, SUB_LEN);
    let first = usize::from(SUB_OFF) / 8;
    let bad = (0..usize::from(SUB_LEN) / 8).find(|&i| word(&COPY_PAGE, i) != pattern(RO_TAG, first + i));
    c.check(
        "copy within sub-page grant",
        g.ok() && bad.is_none(),
        format_args!("{g}; first wrong word: {bad:?}"),
    );
    copy_is(
        env,
        "copy past sub-page end",
        grants::copy(at(b, SUB_OFF + 128), local, SUB_LEN),
        GNTST_GENERAL_ERROR,
    );
    copy_is(
        env,
        "copy before sub-page start",
        grants::copy(at(b, SUB_OFF - 8), local, 16),
        GNTST_GENERAL_ERROR,
    );
    let Some(spare) = grants::free_gfns(env.boot, 1) else {
        c.fail("free gfns", format_args!("none above RAM below 4 GiB"));
        return;
    };
    map_fails(
        env,
        "map sub-page grant",
        grants::map(peer, b, spare, true),
        spare,
        GNTST_GENERAL_ERROR,
    );

    // Transitive.
    COPY_PAGE.fill(0, 4096, 0);
    let g = grants::copy(at(b + 1, 0), local, 4096);
    let bad = (0..WORDS).find(|&i| word(&COPY_PAGE, i) != pattern(TRANS_TAG, i));
    c.check(
        "copy through transitive grant",
        g.ok() && bad.is_none(),
        format_args!("{g}; first wrong word: {bad:?}"),
    );
    map_fails(
        env,
        "map transitive grant",
        grants::map(peer, b + 1, spare, true),
        spare,
        GNTST_GENERAL_ERROR,
    );
    copy_is(
        env,
        "transitive grant naming itself",
        grants::copy(at(b + 2, 0), local, 8),
        GNTST_GENERAL_ERROR,
    );
    copy_is(
        env,
        "transitive grant to an ended grant",
        grants::copy(at(b + 3, 0), local, 8),
        GNTST_GENERAL_ERROR,
    );
    copy_is(
        env,
        "transitive grant to no domain",
        grants::copy(at(b + 4, 0), local, 8),
        GNTST_GENERAL_ERROR,
    );
    copy_is(
        env,
        "copy into readonly transitive grant",
        grants::copy(local, at(b + 1, 0), 8),
        GNTST_GENERAL_ERROR,
    );
    // The copies left the hop pinned nowhere: this side ends its grant.
    match grants::end_grant(PEER_REF) {
        Ok(()) => c.ok("end grant the transitive one passed on"),
        Err(f) => c.fail(
            "end grant the transitive one passed on",
            format_args!("flags {f:#x}"),
        ),
    }
}

/// Checks a map op failed with `want` (unmapping it if it wrongly worked).
fn map_fails(env: &Env<'_>, name: &str, r: (Gnt, u32), gpa: u64, want: i16) {
    let (g, handle) = r;
    if g.ok() {
        grants::unmap(gpa, handle);
    }
    env.c.check(
        name,
        g.rc == 0 && g.status == want,
        format_args!(
            "{g}; expected status {want} ({})",
            keel_hypercall::abi::grant_table::gntst_name(want).unwrap_or("?")
        ),
    );
}

/// Checks a copy op's status is `want`.
fn copy_is(env: &Env<'_>, name: &str, g: Gnt, want: i16) {
    env.c.check(
        name,
        g.rc == 0 && g.status == want,
        format_args!(
            "{g}; expected status {want} ({})",
            keel_hypercall::abi::grant_table::gntst_name(want).unwrap_or("?")
        ),
    );
}

/// `mode=hostile-grant`.
pub fn run(env: &Env<'_>) {
    let c = &env.c;
    let Some(peer) = env.domid("peer") else {
        return;
    };
    let gref = env.num("gref", DEFAULT_GREF);

    // This domain's own table.
    let (g, nr, max) = grants::query_size();
    c.info(format_args!(
        "query_size: {g}, {nr} frames of at most {max}"
    ));
    c.check(
        "query_size",
        g.ok() && nr >= 1 && max >= nr,
        format_args!("{g}, nr_frames {nr}, max_nr_frames {max}"),
    );
    let (g, frame) = grants::setup_table(1);
    c.info(format_args!("setup_table: {g}, frame 0 at {frame:#x}"));
    c.check("setup_table", g.ok(), format_args!("{g}"));
    let (rc, v) = grants::get_version();
    c.check(
        "get_version",
        rc == 0 && v == 1,
        format_args!("returned {}, version {v}", Rc(rc)),
    );
    c.rc("set_version 1", grants::set_version(1).0, 0);
    c.errno(
        "set_version 2 refused",
        grants::set_version(2).0,
        Errno::ENOSYS,
    );
    c.errno("set_version 3", grants::set_version(3).0, Errno::EINVAL);
    let (rc, v) = grants::get_version();
    c.check(
        "still version 1",
        rc == 0 && v == 1,
        format_args!("returned {}, version {v}", Rc(rc)),
    );

    let Some((port, _)) = connect(env, peer) else {
        return;
    };
    let Some(base) = grants::free_gfns(env.boot, 4) else {
        c.fail("free gfns", format_args!("none above RAM below 4 GiB"));
        return;
    };
    let (ro_gpa, rw_gpa, spare) = (base, base + 4096, base + 2 * 4096);
    c.info(format_args!("mapping at {base:#x}.."));

    // Maps.
    let (g, ro_handle) = grants::map(peer, gref, ro_gpa, true);
    let ro_ok = c.check(
        "map readonly grant",
        g.ok(),
        format_args!("d{peer} ref {gref}: {g}"),
    );
    if ro_ok {
        let bad = (0..WORDS).find(|&i| read_gpa_u64(ro_gpa + i as u64 * 8) != pattern(RO_TAG, i));
        c.check(
            "read through readonly map",
            bad.is_none(),
            format_args!(
                "word {} reads {:#x}",
                bad.unwrap_or(0),
                read_gpa_u64(ro_gpa + bad.unwrap_or(0) as u64 * 8)
            ),
        );
    }
    map_fails(
        env,
        "writable map of readonly grant",
        grants::map(peer, gref, spare, false),
        spare,
        GNTST_GENERAL_ERROR,
    );
    map_fails(
        env,
        "map ref beyond table",
        grants::map(peer, BEYOND_REF, spare, true),
        spare,
        GNTST_BAD_GNTREF,
    );
    map_fails(
        env,
        "map ref granted to another domain",
        grants::map(peer, gref + 2, spare, true),
        spare,
        GNTST_GENERAL_ERROR,
    );
    map_fails(
        env,
        "map ref never granted",
        grants::map(peer, gref + 3, spare, true),
        spare,
        GNTST_GENERAL_ERROR,
    );
    map_fails(
        env,
        "map from missing domain",
        grants::map(MISSING_DOMID, gref, spare, true),
        spare,
        GNTST_BAD_DOMAIN,
    );
    let (g, rw_handle) = grants::map(peer, gref + 1, rw_gpa, false);
    let rw_ok = c.check(
        "map writable grant",
        g.ok(),
        format_args!("d{peer} ref {}: {g}", gref + 1),
    );
    if rw_ok {
        for i in 0..WORDS {
            write_gpa_u64(rw_gpa + i as u64 * 8, pattern(RW_TAG, i));
        }
    }

    // Copies.
    let local = End::Local {
        gfn: (COPY_PAGE.addr() >> 12) as u64,
        offset: 0,
    };
    let ro_at = |offset| End::Gref {
        domid: peer,
        gref,
        offset,
    };
    copy_is(
        env,
        "copy beyond page",
        grants::copy(ro_at(4000), local, 200),
        GNTST_BAD_COPY_ARG,
    );
    copy_is(
        env,
        "copy from bad gref",
        grants::copy(
            End::Gref {
                domid: peer,
                gref: BEYOND_REF,
                offset: 0,
            },
            local,
            8,
        ),
        GNTST_BAD_GNTREF,
    );
    COPY_PAGE.fill(0, 4096, 0);
    let g = grants::copy(ro_at(0), local, 4096);
    let bad = (0..WORDS).find(|&i| word(&COPY_PAGE, i) != pattern(RO_TAG, i));
    c.check(
        "copy from readonly grant",
        g.ok() && bad.is_none(),
        format_args!("{g}; first wrong word: {bad:?}"),
    );
    copy_is(
        env,
        "copy to readonly grant",
        grants::copy(local, ro_at(0), 8),
        GNTST_GENERAL_ERROR,
    );

    // Unmaps.
    let g = grants::unmap(spare, BAD_HANDLE);
    c.check(
        "unmap bad handle",
        g.rc == 0 && g.status == GNTST_BAD_HANDLE,
        format_args!("{g}"),
    );
    if ro_ok {
        let g = grants::unmap(ro_gpa, ro_handle);
        c.check("unmap readonly map", g.ok(), format_args!("{g}"));
        let g = grants::unmap(ro_gpa, ro_handle);
        c.check(
            "double unmap",
            g.rc == 0 && g.status == GNTST_BAD_HANDLE,
            format_args!("{g}"),
        );
        let left = read_gpa_u64(ro_gpa);
        c.check(
            "gfn empty after unmap",
            left == u64::MAX,
            format_args!("{ro_gpa:#x} still reads {left:#x}"),
        );
    }
    if rw_ok {
        let g = grants::unmap(rw_gpa, rw_handle);
        c.check("unmap writable map", g.ok(), format_args!("{g}"));
    }

    if crate::cmdline::has(env.boot.cmdline(), "v2-peer") {
        v2_checks(env, peer, gref);
    }

    c.rc("send done to peer", events::send(port), 0);
    c.rc("close port", events::close(port), 0);
}
