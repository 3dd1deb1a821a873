//! What happens when a domain is admitted or ends: its grant table's first
//! frame, a domU's PV console, its vCPUs' place (and affinity) in the scheduler;
//! at the end its vCPUs stopped on every pCPU, its grants revoked, its channels
//! closed, and its frames freed once nobody holds it. The table of domains itself
//! is `registry.rs`'s.
//!
//! [`destroy`] takes the domain out of the table, so that no new reference can be
//! had, tears down what other domains see of it (keeping it reachable for their
//! channel teardown meanwhile), and drops the table's reference; the frames go
//! back when the last holder lets go.
//!
//! # Locking
//! - [`DOMAINS`]: a read-write lock, held only to look up or change the table
//!   (never while taking another lock).
//! - Grant and event-channel tables are per domain (`Domain::grants`,
//!   `Domain::evtchn`; `channels.rs` for the event protocol).
//! - The lock order (docs/architecture.md, "Lock order"): grant tables (two:
//!   lower domid first), then event tables (likewise), then a vCPU's `st`, then
//!   a domain's `mem` (likewise), then the scheduler's; [`DYING`], [`ENDED`] and
//!   the frame allocator are leaves. `DOMAINS` is read under any of them and
//!   written under none.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use keel_hypercall::dispatch::ShutdownReason;
use keel_sched::{CpuSet, Params, VcpuId};

use crate::channels;
use crate::domain::{ConsoleRing, Domain};
use crate::events;
use crate::logger::say;
use crate::paging::PagingMode as _;
use crate::registry::DYING;
pub use crate::registry::{DOMAINS, any, find, get, ids};
use crate::scheduler;

/// Grant-table frames a domain may have (Xen's default `gnttab_max_frames`).
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;

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

/// Takes a freshly built domain in: its grant table's first frame, its console
/// channel (domUs), its clock, and a place in the scheduler (runnable, where
/// `place` lets it run). (Its event-channel and grant tables came with it.)
pub fn admit(d: Domain, place: &Placement) -> Result<(), String> {
    let id = d.id;
    // Xen starts every table with its first frame.
    d.grants
        .lock()
        .setup_table(keel_grant::INITIAL_NR_GRANT_FRAMES, || {
            d.mem.lock().alloc_owned(1).map(|m| m.as_u64())
        })
        .map_err(|e| format!("grant table: {e}"))?;
    let d = Arc::new(d);
    if !d.privileged {
        attach_console(&d)?;
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
        let runnable = v.st.lock().runnable();
        let affinity = place.get(v.id as usize).copied();
        if let Some((hard, soft)) = affinity {
            log::debug!("d{id}v{}: runs on pCPUs {hard:?}, prefers {soft:?}", v.id);
        }
        scheduler::add(vid, params, affinity, runnable)
            .map_err(|e| format!("scheduler: {e}"))?;
    }
    DOMAINS.write().insert(id, d);
    Ok(())
}

/// Gives a domU its PV console: a ring page at `CONSOLE_RING_GFN` and an event
/// channel whose other end is keel's.
fn attach_console(d: &Arc<Domain>) -> Result<(), String> {
    use keel_builder::pvh::CONSOLE_RING_GFN;
    use keel_hypercall::abi::hvm::{HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN};
    // A PV domU's ring is the builder's console page; its event channel goes
    // into start_info, where the guest looks for both.
    let pv = match &d.mem.lock().p2m {
        crate::paging::Paging::Pv(pv) => Some((pv.console, pv.start_info)),
        _ => None,
    };
    if let Some((console, start_info)) = pv {
        let Some(mfn) = console else { return Ok(()) };
        let (xen_port, port) =
            channels::attach_console(d).map_err(|e| format!("console channel: {e}"))?;
        // SAFETY: start_info is a frame of the domain's RAM (the builder's page),
        // owned by it while the domain lives; the domain holds this reference.
        let si = unsafe { crate::frames::Frame::new(start_info) };
        si.write(crate::pv::START_INFO_CONSOLE_EVTCHN, &port.to_le_bytes());
        d.console_ring.call_once(|| ConsoleRing { mfn, xen_port });
        return Ok(());
    }
    if d.ram_bytes > keel_builder::pvh::SPECIAL_PAGES_START {
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
    let (xen_port, port) =
        channels::attach_console(d).map_err(|e| format!("console channel: {e}"))?;
    {
        let mut p = d.hvm_params.lock();
        p[HVM_PARAM_CONSOLE_PFN as usize] = CONSOLE_RING_GFN;
        p[HVM_PARAM_CONSOLE_EVTCHN as usize] = u64::from(port);
    }
    d.console_ring.call_once(|| ConsoleRing { mfn, xen_port });
    Ok(())
}

/// Ends domain `id`: says how, takes it out of the table and the scheduler,
/// closes its channels, revokes and releases its grants. Its frames go back to
/// the allocator when the last reference is dropped (at once, unless a pCPU is
/// still holding it). `None` if it was already gone.
pub fn destroy(id: u16, end: DomainEnd) -> Option<()> {
    let d = DOMAINS.write().remove(&id)?;
    DYING.lock().insert(id, d.clone());
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
    release_grants(&d);
    channels::destroy(&d);
    DYING.lock().remove(&id);
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

/// Undoes a dying domain's grants, one other domain at a time (the grant
/// crate's death protocol): the pins it holds as a mapper on each granter go
/// (their `GTF_*` bits cleared); every other domain's mappings of its grants are
/// revoked, removed from that mapper's p2m and flushed from every pCPU's TLB,
/// the handle left in the mapper's maptrack so its later unmap succeeds.
fn release_grants(d: &Arc<Domain>) {
    use keel_grant::pair;
    let id = d.id;
    let mut frames = crate::frames::GrantFrames;
    let (granters, mappers) = {
        let mut g = d.grants.lock();
        g.start_dying();
        (g.granters(), g.mappers())
    };
    for gid in granters {
        let r = if gid == id {
            pair::release_own_mappings(&mut d.grants.lock(), &mut frames)
        } else if let Some(g) = find(gid) {
            let (mut dg, mut gg) = crate::domain::lock_pair(&d.grants, id, &g.grants, gid);
            pair::release_mappings(&mut dg, &mut gg, &mut frames)
        } else {
            // Its own death released everything between the two.
            continue;
        };
        if let Err(e) = r {
            log::error!("d{id}: releasing its mappings of d{gid}'s grants: {e:?}");
        }
    }
    for mid in mappers {
        let Some(m) = find(mid) else { continue };
        {
            let (mut dg, mut mg) = crate::domain::lock_pair(&d.grants, id, &m.grants, mid);
            let revoked = match pair::revoke_mappings(&mut dg, &mut mg, &mut frames) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("d{id}: revoking d{mid}'s mappings: {e:?}");
                    continue;
                }
            };
            // Out of the mapper's p2m before its grant lock goes.
            let mut mem = m.mem.lock();
            for r in revoked {
                if let Some(gfn) = keel_mm::addr::Gfn::new(r.host_gfn) {
                    let _ = mem.p2m.set_entry(gfn, None);
                    mem.foreign.remove(&r.host_gfn);
                    log::debug!(
                        "d{mid}: grant mapping at gfn {:#x} revoked (d{id} ended)",
                        r.host_gfn
                    );
                }
            }
        }
        // Before any of the dead domain's frames can be freed (they go with the
        // last reference to it, after this returns).
        m.flush_tlbs();
    }
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
