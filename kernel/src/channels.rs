//! Event channels across per-domain tables: every `EVTCHNOP_*` the kernel does,
//! with the locks `keel_evtchn` asks for. Each domain's [`Table`] lives in its own
//! lock ([`Domain::evtchn`], Xen's `d->event_lock`); keel's own ends (the domUs'
//! console channels, `DOMID_XEN`) live in [`XEN`].
//!
//! # Locking
//! One table: that lock alone. Two (an interdomain bind, send or close, a peer's
//! end at a reset or a death): both, **the lower domain id first** ([`lock2`];
//! `DOMID_XEN` is above every domain, so keel's table comes last). The peer of a
//! channel is learnt under the local lock, which is dropped before both are
//! taken; the two-table functions then check the channel again (`keel_evtchn`'s
//! `# Locking`). A [`Notify`] is delivered (the port set pending, the vCPU woken)
//! before the lock of the domain it names is dropped, so a concurrent close,
//! which clears the pending bit under that lock, cannot be overtaken. Under a
//! table lock keel takes only vCPU `st` locks, domain `mem` locks (console
//! rings: none) and the scheduler's (never: wakes are collected).
//! [`GLOBAL_VIRQS`] is taken after table locks.
//!
//! A dying domain stays reachable here until its table is empty
//! (`registry::find`); one that is gone entirely has unbound or forgotten every
//! channel to it, so a peer that cannot find it forgets its own end.

use alloc::sync::Arc;

use keel_evtchn::{GlobalVirqHandlers, Notify, Reach, Status, Table};
use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::DOMID_XEN;

use crate::domain::{ConsoleRing, Domain};
use crate::registry;

/// Event channels a domain may use unless its configuration says otherwise (xl's
/// default `max_event_channels`).
pub const DEFAULT_MAX_EVTCHN: u32 = 1023;
use crate::events::{self, Wakes};
use crate::frames::Frame;

/// keel's own table (`DOMID_XEN`): its ends of the domUs' console channels.
pub static XEN: spin::Lazy<spin::Mutex<Table>> = spin::Lazy::new(|| {
    spin::Mutex::new(
        Table::new(DOMID_XEN, DEFAULT_MAX_EVTCHN, 1)
            // DOMID_XEN with one vCPU is a table Table::new always makes.
            .unwrap_or_else(|e| panic!("event channels: keel's own table: {e}")),
    )
});

/// Which domain receives each global VIRQ.
pub static GLOBAL_VIRQS: spin::Mutex<GlobalVirqHandlers> =
    spin::Mutex::new(GlobalVirqHandlers::new());

/// A table an operation reaches: a domain's, or keel's own.
pub enum Owner {
    Dom(Arc<Domain>),
    Xen,
}

impl Owner {
    fn id(&self) -> u16 {
        match self {
            Owner::Dom(d) => d.id,
            Owner::Xen => DOMID_XEN,
        }
    }

    fn table(&self) -> &spin::Mutex<Table> {
        match self {
            Owner::Dom(d) => &d.evtchn,
            Owner::Xen => &XEN,
        }
    }
}

/// The table of domain `id` (live or dying), or keel's.
fn find(id: u16) -> Option<Owner> {
    if id == DOMID_XEN {
        Some(Owner::Xen)
    } else {
        registry::find(id).map(Owner::Dom)
    }
}

/// Locks two different tables, the lower domain id first; returns (a's, b's).
fn lock2<'a>(
    a: &'a spin::Mutex<Table>,
    a_id: u16,
    b: &'a spin::Mutex<Table>,
    b_id: u16,
) -> (spin::MutexGuard<'a, Table>, spin::MutexGuard<'a, Table>) {
    crate::domain::lock_pair(a, a_id, b, b_id)
}

/// Delivers `n`, which names a port of `to` (whose table the caller holds, as
/// `to_table`); `other` is the other table the caller holds, if any (a console
/// kick needs keel's and the domU's).
fn deliver(
    to: &Owner,
    to_table: &mut Table,
    other: Option<(&Owner, &mut Table)>,
    n: Notify,
    wakes: &mut Wakes,
) {
    match to {
        Owner::Dom(d) => events::deliver(d, to_table, n, wakes),
        Owner::Xen => {
            // A domU kicked its console channel: serve the ring, kick it back.
            if let Some((Owner::Dom(d), dom_table)) = other {
                serve_console(d, dom_table, to_table, wakes);
            }
        }
    }
}

/// Prints what a domU wrote to its console ring, and tells it the ring has room
/// (both tables held by the caller).
fn serve_console(d: &Domain, dom_table: &mut Table, xen: &mut Table, wakes: &mut Wakes) {
    let Some(ring) = d.console_ring.get().copied() else {
        return;
    };
    // SAFETY: the ring is a frame the domain owns until it is dropped; `d` is held.
    let f = unsafe { Frame::new(ring.mfn) };
    // struct xencons_interface: in[1024], out[2048], in_cons, in_prod,
    // out_cons, out_prod (io/console.h).
    const OUT: usize = 1024;
    const OUT_SIZE: u32 = 2048;
    use core::sync::atomic::Ordering;
    let (cons_a, prod_a) = (f.atomic_u32(3072 + 8), f.atomic_u32(3072 + 12));
    let mut cons = cons_a.load(Ordering::Acquire);
    let prod = prod_a.load(Ordering::Acquire);
    // A guest may publish any index: take at most one ring's worth.
    let avail = prod.wrapping_sub(cons).min(OUT_SIZE);
    let mut buf = [0u8; 2048];
    for b in buf.iter_mut().take(avail as usize) {
        let mut one = [0u8];
        f.read(OUT + (cons % OUT_SIZE) as usize, &mut one);
        *b = one[0];
        cons = cons.wrapping_add(1);
    }
    cons_a.store(cons, Ordering::Release);
    d.console.lock().push(d.id, &buf[..avail as usize]);
    if avail > 0
        && let Ok(Some(n)) = keel_evtchn::send_interdomain(xen, ring.xen_port, dom_table)
    {
        events::deliver(d, dom_table, n, wakes);
    }
}

/// Gives domU `d` its console channel: a port of keel's, bound to a fresh port
/// of `d`'s; returns (keel's port, `d`'s port).
pub fn attach_console(d: &Arc<Domain>) -> Result<(u32, u32), Errno> {
    let me = Owner::Dom(d.clone());
    let (mut dt, mut xt) = lock2(me.table(), d.id, &XEN, DOMID_XEN);
    let xen_port = xt.alloc_unbound(DOMID_XEN, true, d.id)?;
    let (port, _) = keel_evtchn::bind_interdomain(&mut dt, &mut xt, xen_port)?;
    Ok((xen_port, port))
}

/// The table an operation of `caller` on domain `dom` reaches (`ESRCH`: none).
fn target(caller: &Arc<Domain>, dom: u16) -> Result<Owner, Errno> {
    if dom == caller.id {
        Ok(Owner::Dom(caller.clone()))
    } else {
        find(dom).ok_or(Errno::ESRCH)
    }
}

/// `EVTCHNOP_alloc_unbound` in `dom` (the caller or, if privileged, another)
/// for `remote_dom`.
pub fn alloc_unbound(caller: &Arc<Domain>, dom: u16, remote_dom: u16) -> Result<u32, Errno> {
    target(caller, dom)?
        .table()
        .lock()
        .alloc_unbound(caller.id, caller.privileged, remote_dom)
}

/// `EVTCHNOP_bind_interdomain`: a fresh port of the caller's connected to
/// `remote_port` of `remote_dom`; Xen raises the new port at once.
pub fn bind_interdomain(
    caller: &Arc<Domain>,
    remote_dom: u16,
    remote_port: u32,
    wakes: &mut Wakes,
) -> Result<u32, Errno> {
    let me = Owner::Dom(caller.clone());
    if remote_dom == caller.id {
        let mut t = caller.evtchn.lock();
        let (port, n) = t.bind_loopback(remote_port)?;
        deliver(&me, &mut t, None, n, wakes);
        return Ok(port);
    }
    let remote = find(remote_dom).ok_or(Errno::ESRCH)?;
    let (mut lt, mut rt) = lock2(me.table(), me.id(), remote.table(), remote.id());
    let (port, n) = keel_evtchn::bind_interdomain(&mut lt, &mut rt, remote_port)?;
    deliver(&me, &mut lt, Some((&remote, &mut rt)), n, wakes);
    Ok(port)
}

/// How often an operation that found its peer gone looks again (each time the
/// peer's teardown has changed the channel, so a second look settles it).
const RETRIES: usize = 4;

/// `EVTCHNOP_send` on `port` of the caller.
pub fn send(caller: &Arc<Domain>, port: u32, wakes: &mut Wakes) -> Result<(), Errno> {
    let me = Owner::Dom(caller.clone());
    for _ in 0..RETRIES {
        let mut t = caller.evtchn.lock();
        let d = match t.send(port)? {
            Reach::Local(n) => {
                if let Some(n) = n {
                    deliver(&me, &mut t, None, n, wakes);
                }
                return Ok(());
            }
            Reach::Remote(d) => d,
        };
        drop(t);
        let Some(remote) = find(d) else {
            // Gone entirely: its teardown unbound this end; look again.
            continue;
        };
        let (mut lt, mut rt) = lock2(me.table(), me.id(), remote.table(), remote.id());
        match keel_evtchn::send_interdomain(&lt, port, &rt) {
            Ok(Some(n)) => deliver(&remote, &mut rt, Some((&me, &mut lt)), n, wakes),
            Ok(None) => {}
            // The channel changed between the two looks: look again.
            Err(Errno::EINVAL) => continue,
            Err(e) => return Err(e),
        }
        return Ok(());
    }
    Ok(())
}

/// `EVTCHNOP_close` of `port` of the caller.
pub fn close(caller: &Arc<Domain>, port: u32) -> Result<(), Errno> {
    let me = Owner::Dom(caller.clone());
    for _ in 0..RETRIES {
        let mut t = caller.evtchn.lock();
        let d = match t.close(port)? {
            Reach::Local(()) => return Ok(()),
            Reach::Remote(d) => d,
        };
        let Some(remote) = find(d) else {
            // The peer is gone entirely: free this end on its own.
            t.forget_end(port);
            return Ok(());
        };
        drop(t);
        let (mut lt, mut rt) = lock2(me.table(), me.id(), remote.table(), remote.id());
        match keel_evtchn::close_interdomain(&mut lt, port, &mut rt) {
            // The channel changed between the two looks: look again.
            Err(Errno::EINVAL) => continue,
            r => return r,
        }
    }
    Ok(())
}

/// `EVTCHNOP_bind_virq` in the caller's table.
pub fn bind_virq(caller: &Domain, virq: u32, vcpu: u32) -> Result<u32, Errno> {
    let mut t = caller.evtchn.lock();
    let handlers = GLOBAL_VIRQS.lock();
    t.bind_virq(virq, vcpu, &handlers)
}

/// `EVTCHNOP_status` of `port` in `dom` (the caller's own, or, if privileged,
/// another's).
pub fn status(caller: &Arc<Domain>, dom: u16, port: u32) -> Result<Status, Errno> {
    target(caller, dom)?
        .table()
        .lock()
        .status(caller.id, caller.privileged, port)
}

/// Ends every channel of `table`'s domain with its peers, one peer at a time
/// (`next` is the first peer the table named): for `EVTCHNOP_reset` and a
/// domain's death.
fn close_peers(dom: &Owner, mut next: Option<u16>) {
    while let Some(peer) = next {
        next = match find(peer) {
            Some(p) if p.id() != dom.id() => {
                let (mut t, mut pt) = lock2(dom.table(), dom.id(), p.table(), p.id());
                keel_evtchn::close_peer(&mut t, &mut pt);
                t.close_local()
            }
            _ => {
                let mut t = dom.table().lock();
                t.forget_peer(peer);
                t.close_local()
            }
        };
    }
}

/// `EVTCHNOP_reset` of the caller's own table.
pub fn reset(caller: &Arc<Domain>) -> Result<(), Errno> {
    let first = caller.evtchn.lock().reset(caller.id, caller.privileged)?;
    close_peers(&Owner::Dom(caller.clone()), first);
    Ok(())
}

/// Closes every channel of a dying domain (its peers' ends become unbound) and
/// keel's end of its console channel.
pub fn destroy(d: &Arc<Domain>) {
    if let Some(ring) = d.console_ring.get().copied() {
        let _ = close_xen_port(ring);
    }
    let me = Owner::Dom(d.clone());
    let first = d.evtchn.lock().destroy();
    close_peers(&me, first);
    GLOBAL_VIRQS.lock().forget(d.id);
}

/// Closes keel's end of a console channel.
fn close_xen_port(ring: ConsoleRing) -> Result<(), Errno> {
    let mut t = XEN.lock();
    match t.close(ring.xen_port)? {
        Reach::Local(()) => Ok(()),
        Reach::Remote(d) => match find(d) {
            Some(remote) => {
                drop(t);
                let (mut xt, mut rt) = lock2(&XEN, DOMID_XEN, remote.table(), remote.id());
                keel_evtchn::close_interdomain(&mut xt, ring.xen_port, &mut rt)
            }
            None => {
                t.forget_end(ring.xen_port);
                Ok(())
            }
        },
    }
}
