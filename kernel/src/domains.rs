//! Every domain on the machine, by id, and what happens when one is admitted or
//! ends: its event-channel and grant tables, a domU's PV console, its place in the
//! scheduler; at the end its channels closed, its grants revoked, and its frames
//! freed once nobody holds it.
//!
//! Domains are shared, not lent (Xen: `rcu_lock_domain_by_id`): [`get`] hands out
//! an `Arc<Domain>`, which keeps the domain (and every frame it owns) alive for as
//! long as the caller holds it. [`destroy`] takes the domain out of the table, so
//! that no new reference can be had, tears down what other domains see of it, and
//! drops the table's reference; the frames go back when the last holder lets go.
//!
//! # Locking
//! - [`DOMAINS`]: a read-write lock, held only to look up or change the table
//!   (never while taking another lock).
//! - [`EVTCHN`] and [`GRANTS`]: every domain's event-channel and grant tables,
//!   one lock each for now (`keel_evtchn::Table` and `keel_grant::DomainGrants`
//!   are ready to be locked per domain, which comes next).
//! - The lock order (docs/architecture.md, "Lock order"): `GRANTS`, then
//!   `EVTCHN`, then a vCPU's `st`, then a domain's `mem` (two domains: lower
//!   domid first), then the scheduler's; [`CONSOLE_PORTS`], [`ENDED`] and the
//!   frame allocator are leaves. `DOMAINS` is read under any of them and written
//!   under none.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use keel_evtchn::{Hub, Notify};
use keel_grant::Grants;
use keel_hypercall::abi::domid::DOMID_XEN;
use keel_hypercall::dispatch::ShutdownReason;
use keel_sched::{CpuSet, Params, VcpuId};

use crate::domain::{ConsoleRing, Domain};
use crate::events::{self, Wakes};
use crate::frames::Frame;
use crate::logger::say;
use crate::scheduler;

/// Event channels a domain may use unless its configuration says otherwise (xl's
/// default `max_event_channels`).
pub const DEFAULT_MAX_EVTCHN: u32 = 1023;
/// Grant-table frames a domain may have (Xen's default `gnttab_max_frames`).
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;
/// Grant mappings a domain may hold at once (Xen's default `gnttab_max_maptrack_frames`
/// of 1024 frames of 512 entries is far more than keel's guests need).
pub const DEFAULT_MAX_MAPTRACK: u32 = 4096;

/// Every live domain.
pub static DOMAINS: spin::RwLock<BTreeMap<u16, Arc<Domain>>> = spin::RwLock::new(BTreeMap::new());
/// Every domain's event-channel table, keel's own (`DOMID_XEN`) included.
pub static EVTCHN: spin::Lazy<spin::Mutex<Hub>> = spin::Lazy::new(|| {
    let mut hub = Hub::new();
    // keel's own table, for its ends of the domUs' consoles.
    if let Err(e) = hub.add_domain(DOMID_XEN, DEFAULT_MAX_EVTCHN, 1) {
        log::error!("event channels: keel's own table: {e}");
    }
    spin::Mutex::new(hub)
});
/// Every domain's grant table and maptrack.
pub static GRANTS: spin::Lazy<spin::Mutex<Grants>> =
    spin::Lazy::new(|| spin::Mutex::new(Grants::new()));
/// keel's ends of the domUs' console channels (DOMID_XEN's table): port -> domid.
pub static CONSOLE_PORTS: spin::Mutex<BTreeMap<u32, u16>> = spin::Mutex::new(BTreeMap::new());
/// How each ended domain ended, for the summary line.
pub static ENDED: spin::Mutex<Vec<Ended>> = spin::Mutex::new(Vec::new());

/// How a domain ended.
pub enum DomainEnd {
    /// The guest asked (SCHEDOP_shutdown).
    Shutdown(ShutdownReason),
    /// keel stopped it: the reason, for the log.
    Crashed(String),
    /// keel ended it through no fault of its own (Dom0 ended the machine).
    Destroyed(String),
}

/// How each domain ended, for the summary line.
pub struct Ended {
    pub id: u16,
    pub how: String,
    pub failed: bool,
}

/// Domain `id`, kept alive while the `Arc` is held.
pub fn get(id: u16) -> Option<Arc<Domain>> {
    DOMAINS.read().get(&id).cloned()
}

/// Whether any domain is left.
pub fn any() -> bool {
    !DOMAINS.read().is_empty()
}

/// The ids of every live domain.
pub fn ids() -> Vec<u16> {
    DOMAINS.read().keys().copied().collect()
}

/// Where a domain's vCPUs may run and prefer to: (hard, soft) per vCPU, checked
/// against the machine's pCPUs ([`placement`]). A vCPU past the list may run
/// anywhere.
pub type Placement = Vec<(CpuSet, CpuSet)>;

/// Turns xl.cfg's `cpus`/`cpus_soft` (or Dom0's pinning) into a [`Placement`] for
/// `nr_vcpus` vCPUs on `nr_cpus` pCPUs: the pCPUs the machine lacks are left out;
/// a vCPU left with no pCPU to run on is an error (Xen: EINVAL), one left with no
/// preference has none (a warning, in `warnings`).
pub fn placement(
    nr_vcpus: u32,
    nr_cpus: u32,
    hard: impl Fn(u32) -> Option<CpuSet>,
    soft: impl Fn(u32) -> Option<CpuSet>,
    warnings: &mut Vec<String>,
) -> Result<Placement, String> {
    let all = CpuSet::all(nr_cpus);
    let has = if nr_cpus == 1 {
        String::from("0")
    } else {
        format!("0-{}", nr_cpus - 1)
    };
    (0..nr_vcpus)
        .map(|v| {
            let h = match hard(v) {
                Some(set) => {
                    let h = set.intersect(&all);
                    if h.is_empty() {
                        return Err(format!(
                            "cpus: vCPU {v} may run on no pCPU this machine has (it has {has})"
                        ));
                    }
                    h
                }
                None => all,
            };
            let s = match soft(v) {
                Some(set) => {
                    let s = set.intersect(&all);
                    if s.is_empty() {
                        warnings.push(format!(
                            "cpus_soft: vCPU {v} prefers no pCPU this machine has (it has {has}): no preference"
                        ));
                    }
                    s
                }
                None => CpuSet::new(),
            };
            Ok((h, s))
        })
        .collect()
}

/// Takes a freshly built domain in: its event-channel and grant tables, its
/// console channel (domUs), its clock, and a place in the scheduler (runnable,
/// where `place` lets it run).
pub fn admit(
    d: Domain,
    max_evtchn: u32,
    max_grant_frames: u32,
    place: &Placement,
) -> Result<(), String> {
    let id = d.id;
    let nr_vcpus = d.vcpus.len() as u32;
    // xl's max_event_channels is the highest port; the table holds one more.
    EVTCHN
        .lock()
        .add_domain(id, max_evtchn.saturating_add(1), nr_vcpus)
        .map_err(|e| format!("event channels: {e}"))?;
    let undo_evtchn = || EVTCHN.lock().remove_domain(id);
    let grants = {
        let mut g = GRANTS.lock();
        g.add_domain(id, max_grant_frames, DEFAULT_MAX_MAPTRACK)
            .map_err(|e| format!("grant table: {e:?}"))
            .and_then(|()| {
                // Xen starts every table with its first frame.
                g.setup_table(id, keel_grant::INITIAL_NR_GRANT_FRAMES, || {
                    d.mem.lock().alloc_owned(1).map(|m| m.as_u64())
                })
                .map(|_| ())
                .map_err(|e| format!("grant table: {e}"))
            })
    };
    if let Err(e) = grants {
        undo_evtchn();
        return Err(e);
    }
    if !d.privileged
        && let Err(e) = attach_console(&d)
    {
        undo_evtchn();
        return Err(e);
    }
    for v in d.vcpus.iter() {
        events::publish_time(&d, &v.st.lock(), None);
    }
    events::publish_wallclock(&d);
    let params = Params {
        weight: d.weight,
        cap: d.cap,
    };
    for v in d.vcpus.iter() {
        let vid = VcpuId {
            dom: id,
            vcpu: v.id,
        };
        scheduler::add(vid, params).map_err(|e| format!("scheduler: {e}"))?;
        if let Some(&(hard, soft)) = place.get(v.id as usize) {
            scheduler::set_affinity(vid, hard, soft).map_err(|e| format!("scheduler: {e}"))?;
        }
    }
    DOMAINS.write().insert(id, Arc::new(d));
    Ok(())
}

/// Gives a domU its PV console: a ring page at `CONSOLE_RING_GFN` and an event
/// channel whose other end is keel's.
fn attach_console(d: &Domain) -> Result<(), String> {
    use keel_hypercall::abi::hvm::{HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN};
    use keel_kernel::pvh::CONSOLE_RING_GFN;
    if d.ram_bytes > keel_kernel::pvh::SPECIAL_PAGES_START {
        log::warn!("d{}: RAM reaches the special pages: no PV console", d.id);
        return Ok(());
    }
    let mfn = {
        let mut mem = d.mem.lock();
        let mfn = mem
            .alloc_owned(1)
            .ok_or_else(|| String::from("no memory for the console ring"))?;
        let gfn = keel_mm::addr::Gfn::new(CONSOLE_RING_GFN).ok_or("console gfn")?;
        mem.p2m
            .set_entry(gfn, Some((mfn, keel_mm::p2m::Access::RW)))
            .map_err(|e| format!("mapping the console ring: {e}"))?;
        mfn
    };
    let (xen_port, port) = {
        let mut hub = EVTCHN.lock();
        let xen_port = hub
            .alloc_unbound(DOMID_XEN, true, DOMID_XEN, d.id)
            .map_err(|e| format!("console channel: {e}"))?;
        let (port, _) = hub
            .bind_interdomain(d.id, DOMID_XEN, xen_port)
            .map_err(|e| format!("console channel: {e}"))?;
        (xen_port, port)
    };
    {
        let mut p = d.hvm_params.lock();
        p[HVM_PARAM_CONSOLE_PFN as usize] = CONSOLE_RING_GFN;
        p[HVM_PARAM_CONSOLE_EVTCHN as usize] = u64::from(port);
    }
    d.console_ring.call_once(|| ConsoleRing { mfn, xen_port });
    CONSOLE_PORTS.lock().insert(xen_port, d.id);
    Ok(())
}

/// Delivers a notification (with the event-channel lock held by the caller, as
/// `keel_evtchn` asks): to keel's own end of a console channel, or to a domain.
/// `caller`, if given, is the domain whose operation raised it (no look-up when
/// it notifies itself).
pub fn deliver(hub: &mut Hub, n: Notify, caller: Option<&Arc<Domain>>, wakes: &mut Wakes) {
    if n.dom == DOMID_XEN {
        let id = CONSOLE_PORTS.lock().get(&n.port).copied();
        if let Some(d) = id.and_then(get) {
            serve_console(hub, &d, wakes);
        }
        return;
    }
    match caller {
        Some(d) if d.id == n.dom => events::raise(d, n.vcpu, n.port, wakes),
        _ => {
            if let Some(d) = get(n.dom) {
                events::raise(&d, n.vcpu, n.port, wakes);
            }
        }
    }
}

/// Prints what a domU wrote to its console ring, and tells it the ring has room.
fn serve_console(hub: &mut Hub, d: &Domain, wakes: &mut Wakes) {
    let Some(ring) = d.console_ring.get().copied() else {
        return;
    };
    // SAFETY: the ring is a frame the domain owns until it is dropped; `d` is held.
    let f = unsafe { Frame::new(ring.mfn) };
    // struct xencons_interface: in[1024], out[2048], in_cons, in_prod,
    // out_cons, out_prod (io/console.h).
    const OUT: usize = 1024;
    const OUT_SIZE: u32 = 2048;
    let (cons_a, prod_a) = (f.atomic_u32(3072 + 8), f.atomic_u32(3072 + 12));
    use core::sync::atomic::Ordering;
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
        && let Ok(Some(n)) = hub.send(DOMID_XEN, ring.xen_port)
    {
        events::raise(d, n.vcpu, n.port, wakes);
    }
}

/// Ends domain `id`: says how, takes it out of the table and the scheduler,
/// closes its channels, revokes and releases its grants. Its frames go back to
/// the allocator when the last reference is dropped (at once, unless a pCPU is
/// still holding it). `None` if it was already gone.
pub fn destroy(id: u16, end: DomainEnd) -> Option<()> {
    let d = DOMAINS.write().remove(&id)?;
    d.console.lock().flush_if_pending(d.id);
    let (how, failed) = match &end {
        DomainEnd::Shutdown(r) => {
            say!("d{} shut down: {r}", d.id);
            (format!("{r}"), *r == ShutdownReason::Crash)
        }
        DomainEnd::Crashed(why) => {
            say!("d{} crashed: {why}", d.id);
            (String::from("crashed"), true)
        }
        DomainEnd::Destroyed(why) => {
            say!("d{} destroyed: {why}", d.id);
            (String::from("destroyed"), false)
        }
    };
    for v in d.vcpus.iter() {
        if let Some(cpu) = scheduler::remove(VcpuId {
            dom: id,
            vcpu: v.id,
        }) && cpu != crate::percpu::me()
        {
            crate::percpu::kick(cpu);
        }
    }
    // No vCPU of it runs past this point: what follows takes away memory and
    // channels they could still be using.
    d.stop_vcpus();
    // Grants first, channels after: a peer that sees a channel to the dead
    // domain go finds its mappings of the dead domain's pages gone too.
    let revoked = match GRANTS
        .lock()
        .remove_domain(id, &mut crate::hypercalls::GrantFrames)
    {
        Ok(r) => r.revoked,
        Err(e) => {
            log::error!("d{id}: grant table: {e:?}");
            Vec::new()
        }
    };
    for r in revoked {
        if let Some(m) = get(r.mapper)
            && let Some(gfn) = keel_mm::addr::Gfn::new(r.host_gfn)
        {
            {
                let mut mem = m.mem.lock();
                let _ = mem.p2m.set_entry(gfn, None);
                mem.foreign.remove(&r.host_gfn);
            }
            m.flush_tlbs();
            log::debug!(
                "d{}: grant mapping at gfn {:#x} revoked (d{id} ended)",
                m.id,
                r.host_gfn
            );
        }
    }
    {
        let mut hub = EVTCHN.lock();
        if let Some(ring) = d.console_ring.get() {
            CONSOLE_PORTS.lock().remove(&ring.xen_port);
            let _ = hub.close(DOMID_XEN, ring.xen_port);
        }
        hub.remove_domain(id);
    }
    log::debug!("d{id} ({}): resources freed", d.name);
    ENDED.lock().push(Ended { id, how, failed });
    drop(d);
    if !any() {
        // The other pCPUs may be asleep until a deadline of a domain that is
        // gone: wake them to notice that nothing is left.
        for cpu in 0..crate::percpu::nr_online() {
            crate::percpu::kick(cpu);
        }
    }
    Some(())
}

/// Destroys every remaining domain: Dom0 has ended (`failed` false), or
/// nothing can ever run again (`failed` true: they are stuck).
pub fn end_all(why: &str, failed: bool) {
    for id in ids() {
        let why = String::from(why);
        let end = if failed {
            DomainEnd::Crashed(why)
        } else {
            DomainEnd::Destroyed(why)
        };
        destroy(id, end);
    }
}
