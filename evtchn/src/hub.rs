//! Every domain's event-channel table in one map, behind the API the kernel
//! used before tables were per domain: each `EVTCHNOP_*` as one call naming
//! domains by id (Xen's `do_event_channel_op` view).
//!
//! # What
//!
//! A [`Hub`] is a `BTreeMap` from domain id to [`Table`] plus the
//! [`GlobalVirqHandlers`]. Each method looks up the tables it needs and runs
//! the per-domain operation ([`crate::table`]); for a port connected to
//! another domain it runs the two-table form on both entries of the map,
//! exactly as the kernel does under two locks. So the hub answers what the
//! per-domain pieces answer, with Xen's error codes and order of checks
//! (`ESRCH` for a missing domain first, as Xen's domain lookup).
//!
//! It suits a kernel that holds the whole hub under one lock (keel on one
//! CPU), and the tests: its property test checks the per-domain pieces,
//! through the hub, against an independent model.
//!
//! # Invariants
//!
//! Those of [`crate::table`], across the map: both ends of every
//! interdomain channel are in tables of the map, so no table in the map is
//! ever dying (removal destroys and drops a table in one call).
//!
//! # Locking
//!
//! None here: a kernel using the hub holds it under one lock for every
//! call, which also covers the two domains of an interdomain operation.
//! Deliver a returned [`Notify`] before dropping that lock, so a concurrent
//! close (which clears the port's pending bit) cannot be overtaken by a stale
//! delivery. A kernel with a lock per domain uses [`Table`] directly, with
//! the protocol in [`crate::table`].
//!
//! # Hazards
//!
//! As [`crate::table`]'s: the caller resolves `DOMID_SELF`; under 2-level,
//! freed ports' pending bits are the kernel's to clear (after [`Hub::close`]
//! the closed port, after [`Hub::reset`] every port); `EVTCHNOP_reset` of
//! another domain needs it paused (the kernel's check). After
//! [`Hub::reset`] of a FIFO domain, and before [`Hub::remove_domain`] of
//! one, its frames are the kernel's to unpin: [`Table::take_released_frames`]
//! (for a removed domain, [`Hub::remove_domain`] answers them).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::DomId;

pub use crate::table::{Notify, PORTS_PER_BUCKET, State, Status};
pub use crate::virq::HARDWARE_DOMAIN;

use crate::Port;
use crate::table::{
    Reach, Table, bind_interdomain, check_new, close_interdomain, close_peer, send_interdomain,
};
use crate::virq::{GlobalVirqHandlers, VirqKind, check_bind_virq, virq_kind};

#[cfg(test)]
pub(crate) mod model;
#[cfg(test)]
mod tests;

/// Every domain's event channels.
#[derive(Debug)]
pub struct Hub {
    tables: BTreeMap<DomId, Table>,
    /// Per global VIRQ, the domain set to receive it.
    handlers: GlobalVirqHandlers,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// No domains.
    #[must_use]
    pub fn new() -> Hub {
        Hub {
            tables: BTreeMap::new(),
            handlers: GlobalVirqHandlers::new(),
        }
    }

    /// Gives `dom` a table with ports `0..max_ports` (port 0 never
    /// allocated; `max_ports` capped by the ABI in use, see
    /// [`Table::port_limit`]) and `nr_vcpus` vCPUs ([`Table::new`]). The
    /// table has no FIFO memory: for the FIFO ABI, give it some through
    /// [`Hub::table_mut`] and [`Table::enable_fifo`].
    ///
    /// # Errors
    ///
    /// `EINVAL` for a reserved domain id (except `DOMID_XEN`) or no vCPUs;
    /// `EEXIST` if `dom` has a table; `ENOMEM` if the first bucket cannot be
    /// allocated.
    pub fn add_domain(&mut self, dom: DomId, max_ports: u32, nr_vcpus: u32) -> Result<(), Errno> {
        check_new(dom, nr_vcpus)?;
        if self.tables.contains_key(&dom) {
            return Err(Errno::EEXIST);
        }
        let t = Table::new(dom, max_ports, nr_vcpus)?;
        self.tables.insert(dom, t);
        Ok(())
    }

    /// Closes every port of `dom` (the peers of its interdomain channels
    /// become [`State::Unbound`] towards `dom`, as Xen's `evtchn_destroy`
    /// leaves them), stops it handling global VIRQs, and forgets it. Nothing
    /// happens if `dom` has no table. Answers the frames its FIFO state
    /// held, for the kernel to unpin ([`Table::take_released_frames`]).
    pub fn remove_domain(&mut self, dom: DomId) -> Vec<u64> {
        let mut frames = Vec::new();
        if let Some(t) = self.tables.get_mut(&dom) {
            let mut next = t.destroy();
            while let Some(peer) = next {
                next = self.close_with(dom, peer);
            }
            if let Some(mut t) = self.tables.remove(&dom) {
                frames = t.take_released_frames();
            }
        }
        self.handlers.forget(dom);
        frames
    }

    /// `EVTCHNOP_alloc_unbound`: a fresh port in `dom`, [`State::Unbound`]
    /// for `remote_dom` to bind to ([`Table::alloc_unbound`]). `remote_dom`
    /// need not exist.
    ///
    /// # Errors
    ///
    /// In Xen's order: `ESRCH` if `dom` has no table; `ENOSPC` if it has no
    /// free port (`ENOMEM` if the table cannot grow); `EPERM` if `dom` is
    /// not the caller and the caller is not privileged.
    pub fn alloc_unbound(
        &mut self,
        caller: DomId,
        privileged: bool,
        dom: DomId,
        remote_dom: DomId,
    ) -> Result<Port, Errno> {
        self.table_or_esrch(dom)?
            .alloc_unbound(caller, privileged, remote_dom)
    }

    /// `EVTCHNOP_bind_interdomain`: connects a fresh port of `caller` to
    /// `remote_port` of `remote_dom`, which must be [`State::Unbound`] for
    /// `caller`. `remote_dom == caller` makes a loopback channel. Returns
    /// the local port and the event Xen raises on it unconditionally.
    ///
    /// # Errors
    ///
    /// In Xen's order: `ESRCH` if `remote_dom` (or `caller`) has no table;
    /// `ENOSPC`/`ENOMEM` if `caller` has no free port; `EINVAL` if
    /// `remote_port` is not valid or not unbound for `caller`.
    pub fn bind_interdomain(
        &mut self,
        caller: DomId,
        remote_dom: DomId,
        remote_port: Port,
    ) -> Result<(Port, Notify), Errno> {
        if !self.tables.contains_key(&remote_dom) {
            return Err(Errno::ESRCH);
        }
        if caller == remote_dom {
            return self.table_or_esrch(caller)?.bind_loopback(remote_port);
        }
        let (local, remote) = self.pair_mut(caller, remote_dom).ok_or(Errno::ESRCH)?;
        bind_interdomain(local, remote, remote_port)
    }

    /// `EVTCHNOP_bind_virq` ([`Table::bind_virq`]).
    ///
    /// # Errors
    ///
    /// In Xen's order: `EINVAL` if `virq >= NR_VIRQS`, or it is not
    /// per-vCPU and `vcpu != 0`; `ENOENT` if `caller` has no vCPU `vcpu`
    /// (`ESRCH` if `caller` has no table); `EBUSY` if it is global and
    /// `caller` does not handle it; `EEXIST` if already bound (on that
    /// vCPU); `ENOSPC`/`ENOMEM` if no port is free.
    pub fn bind_virq(&mut self, caller: DomId, virq: u32, vcpu: u32) -> Result<Port, Errno> {
        check_bind_virq(virq, vcpu)?;
        let t = self.tables.get_mut(&caller).ok_or(Errno::ESRCH)?;
        t.bind_virq(virq, vcpu, &self.handlers)
    }

    /// `EVTCHNOP_bind_ipi` ([`Table::bind_ipi`]).
    ///
    /// # Errors
    ///
    /// `ENOENT` if `caller` has no vCPU `vcpu` (`ESRCH` if no table);
    /// `ENOSPC`/`ENOMEM` if no port is free.
    pub fn bind_ipi(&mut self, caller: DomId, vcpu: u32) -> Result<Port, Errno> {
        self.table_or_esrch(caller)?.bind_ipi(vcpu)
    }

    /// `EVTCHNOP_bind_vcpu` ([`Table::bind_vcpu`]).
    ///
    /// # Errors
    ///
    /// In Xen's order: `ENOENT` if `caller` has no vCPU `vcpu` (`ESRCH` if
    /// no table); `EINVAL` if `port` is not valid, or free, an IPI or a
    /// per-vCPU VIRQ.
    pub fn bind_vcpu(&mut self, caller: DomId, port: Port, vcpu: u32) -> Result<(), Errno> {
        self.table_or_esrch(caller)?.bind_vcpu(port, vcpu)
    }

    /// `EVTCHNOP_close`: frees `port` of `caller`. An interdomain peer
    /// becomes [`State::Unbound`] towards `caller`, keeping its vCPU, so it
    /// can be bound again; a VIRQ binding is dropped.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `port` is not valid or already free (`ESRCH` if `caller`
    /// has no table).
    pub fn close(&mut self, caller: DomId, port: Port) -> Result<(), Errno> {
        let Reach::Remote(remote_dom) = self.table_or_esrch(caller)?.close(port)? else {
            return Ok(());
        };
        match self.pair_mut(caller, remote_dom) {
            Some((local, remote)) => close_interdomain(local, port, remote),
            None => {
                // The peer's table is gone, which symmetry rules out: free
                // our end rather than trust it (Xen BUG()s here).
                self.table_or_esrch(caller)?.forget_end(port);
                Ok(())
            }
        }
    }

    /// `EVTCHNOP_send`: the event `port` of `caller` raises: on the peer's
    /// port for an interdomain channel, on the port itself for an IPI, none
    /// for an unbound port (Xen drops it silently).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `port` is not valid, free or a VIRQ (`ESRCH` if `caller`
    /// has no table).
    pub fn send(&mut self, caller: DomId, port: Port) -> Result<Option<Notify>, Errno> {
        let local = self.tables.get(&caller).ok_or(Errno::ESRCH)?;
        match local.send(port)? {
            Reach::Local(n) => Ok(n),
            Reach::Remote(d) => {
                let remote = self.tables.get(&d).ok_or(Errno::EINVAL)?;
                send_interdomain(local, port, remote)
            }
        }
    }

    /// `EVTCHNOP_status` of `port` in `dom`; another domain's only if
    /// `privileged`. Port 0 and free ports read as [`State::Free`].
    ///
    /// # Errors
    ///
    /// In Xen's order: `ESRCH` if `dom` has no table; `EINVAL` if `port` is
    /// not valid; `EPERM` if `dom` is not the caller and the caller is not
    /// privileged.
    pub fn status(
        &self,
        caller: DomId,
        privileged: bool,
        dom: DomId,
        port: Port,
    ) -> Result<Status, Errno> {
        let t = self.tables.get(&dom).ok_or(Errno::ESRCH)?;
        t.status(caller, privileged, port)
    }

    /// `EVTCHNOP_reset`: closes every port of `dom` (as [`Hub::close`] each);
    /// another domain's only if `privileged`. The table keeps its size.
    ///
    /// # Errors
    ///
    /// `ESRCH` if `dom` has no table; `EPERM` if `dom` is not the caller and
    /// the caller is not privileged. (Xen's `EINVAL` for resetting a domain
    /// its controller has not paused is the kernel's check.)
    pub fn reset(&mut self, caller: DomId, privileged: bool, dom: DomId) -> Result<(), Errno> {
        let mut next = self.table_or_esrch(dom)?.reset(caller, privileged)?;
        while let Some(peer) = next {
            next = self.close_with(dom, peer);
        }
        Ok(())
    }

    /// Makes `dom` the receiver of global VIRQ `virq` (Xen's
    /// `set_global_virq_handler`, for `XEN_DOMCTL_set_virq_handler`).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `virq` is not a global VIRQ or `dom` has no table;
    /// `EBUSY` if the current handler, another domain, has it bound.
    pub fn set_global_virq_handler(&mut self, dom: DomId, virq: u32) -> Result<(), Errno> {
        if virq_kind(virq) != Some(VirqKind::Global) {
            return Err(Errno::EINVAL);
        }
        let new = self.tables.get(&dom).ok_or(Errno::EINVAL)?;
        let current = self.tables.get(&self.handlers.handler(virq));
        self.handlers.set(new, virq, current)
    }

    /// The domain that receives global VIRQ `virq` (the hardware domain
    /// unless set otherwise). Meaningless for other VIRQs.
    #[must_use]
    pub fn global_virq_handler(&self, virq: u32) -> DomId {
        self.handlers.handler(virq)
    }

    /// The event for `virq` in `dom`, if bound ([`Table::virq`]).
    #[must_use]
    pub fn virq(&self, dom: DomId, vcpu: u32, virq: u32) -> Option<Notify> {
        self.tables.get(&dom)?.virq(vcpu, virq)
    }

    /// The event for global VIRQ `virq` (`VIRQ_CONSOLE`, `VIRQ_DOM_EXC`,
    /// ...), in whichever domain handles it, if bound there (Xen's
    /// `send_global_virq`). `None` for other VIRQs.
    #[must_use]
    pub fn global_virq(&self, virq: u32) -> Option<Notify> {
        if virq_kind(virq) != Some(VirqKind::Global) {
            return None;
        }
        self.virq(self.handlers.handler(virq), 0, virq)
    }

    /// The vCPU `port` of `dom` notifies, for `EVTCHNOP_unmask` (which acts
    /// on any valid port, free ones included, as in Xen). `None` if the port
    /// is not valid (unmask answers `EINVAL`) or `dom` has no table.
    #[must_use]
    pub fn notify_vcpu(&self, dom: DomId, port: Port) -> Option<u32> {
        self.tables.get(&dom)?.notify_vcpu(port)
    }

    /// Whether `port` names a slot of `dom`'s table (Xen's `port_is_valid`),
    /// for `SCHEDOP_poll`, which answers `EINVAL` otherwise.
    #[must_use]
    pub fn is_valid(&self, dom: DomId, port: Port) -> bool {
        self.tables.get(&dom).is_some_and(|t| t.is_valid(port))
    }

    /// Ports of `dom` in use (not free); 0 if `dom` has no table.
    #[must_use]
    pub fn ports_in_use(&self, dom: DomId) -> u32 {
        self.tables.get(&dom).map_or(0, Table::ports_in_use)
    }

    /// Whether `dom` has a table.
    #[must_use]
    pub fn has_domain(&self, dom: DomId) -> bool {
        self.tables.contains_key(&dom)
    }

    /// `dom`'s table, for what the hub has no call of its own: the FIFO
    /// ABI's operations ([`Table::enable_fifo`], [`Table::init_control`],
    /// [`Table::fifo_mut`], ...), and [`Table::take_released_frames`] after
    /// [`Hub::reset`].
    #[must_use]
    pub fn table_mut(&mut self, dom: DomId) -> Option<&mut Table> {
        self.tables.get_mut(&dom)
    }

    fn table_or_esrch(&mut self, dom: DomId) -> Result<&mut Table, Errno> {
        self.tables.get_mut(&dom).ok_or(Errno::ESRCH)
    }

    /// The tables of two different domains, `a`'s first, if both exist:
    /// the map's view of "lock both, lower id first".
    fn pair_mut(&mut self, a: DomId, b: DomId) -> Option<(&mut Table, &mut Table)> {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        if lo == hi {
            return None;
        }
        let mut range = self.tables.range_mut(lo..=hi);
        let (&k_lo, t_lo) = range.next()?;
        let (&k_hi, t_hi) = range.next_back()?;
        if k_lo != lo || k_hi != hi {
            return None;
        }
        Some(if a == lo { (t_lo, t_hi) } else { (t_hi, t_lo) })
    }

    /// One round of emptying `dom`'s table: closes its channels with `peer`
    /// ([`close_peer`]) and names the next peer ([`Table::close_local`]).
    fn close_with(&mut self, dom: DomId, peer: DomId) -> Option<DomId> {
        match self.pair_mut(dom, peer) {
            Some((t, p)) => {
                close_peer(t, p);
                t.close_local()
            }
            None => {
                // No table for `peer` (ruled out by symmetry): free our ends
                // so the loop still ends.
                let t = self.tables.get_mut(&dom)?;
                t.forget_peer(peer);
                t.close_local()
            }
        }
    }
}
