//! Every domain's event-channel table, and the `EVTCHNOP_*` operations on
//! them (Xen's `xen/common/event_channel.c`, semantics from
//! `public/event_channel.h`).
//!
//! # What
//!
//! A [`Hub`] maps each domain to its table of ports. A port number names a
//! slot in the *caller's* table only; the other end of an interdomain channel
//! is reached through the channel's own state, never by a guest-supplied
//! (domain, port) pair, except when binding to a port the peer left
//! [`State::Unbound`] for exactly this caller. Each operation returns what
//! `EVTCHNOP_*` returns, with Xen's error codes and Xen's order of checks;
//! an operation that raises an event returns a [`Notify`] for the kernel to
//! deliver (see [`crate::two_level`]).
//!
//! Tables grow on demand in buckets of [`PORTS_PER_BUCKET`] slots, starting
//! with one bucket, and never shrink while the domain lives; a port is
//! *valid* (may be named in any op, [`Hub::is_valid`]) when its bucket
//! exists. Allocation takes the lowest free port below the domain's limit
//! and grows the table by a bucket when the scan reaches its end, so validity
//! is observable as in Xen (whose bucket size is build-dependent;
//! `PAGE_SIZE / sizeof(struct evtchn)` rounded).
//!
//! Not here: PIRQs (`EVTCHNOP_bind_pirq`; Xen without `CONFIG_HAS_PIRQ`
//! answers `-EOPNOTSUPP`), Xen-attached channels (ioreq servers), XSM beyond
//! the default "self or privileged" policy, the FIFO ABI.
//!
//! # Invariants
//!
//! - Port 0 is never allocated (Xen reserves it); it reads as closed.
//! - A domain's table length is a multiple of [`PORTS_PER_BUCKET`], at least
//!   one bucket and at most `EVTCHN_2L_NR_CHANNELS`; its limit `max_ports`
//!   is at most `EVTCHN_2L_NR_CHANNELS`, and no port at or beyond the limit
//!   is ever in use.
//! - Interdomain channels are symmetric (both domains present, each end
//!   naming the other), including loopback within one domain.
//! - `virq_to_port[v][virq]` is non-zero exactly when a port of the domain
//!   is `Virq { virq }` and `v` is its vCPU (per-vCPU VIRQs) or 0 (others).
//! - A free port notifies vCPU 0 (freeing resets the binding, as Xen does);
//!   a bound port's vCPU is below the domain's `nr_vcpus`.
//! - Nothing panics on guest input; the only allocation is table growth,
//!   which fails with `ENOMEM` rather than aborting.
//!
//! # Locking
//!
//! None here: the kernel holds the one [`Hub`] under one lock for every
//! call, which also covers the two domains of an interdomain operation (Xen
//! takes their `event_lock`s in domain-id order). Deliver a returned
//! [`Notify`] before dropping that lock, so a concurrent close (which clears
//! the port's pending bit) cannot be overtaken by a stale delivery.
//!
//! # Hazards
//!
//! - The caller resolves `DOMID_SELF` before calling: for
//!   `EVTCHNOP_alloc_unbound` a `remote_dom` of `DOMID_SELF` means the
//!   *caller* (not `dom`), as in Xen.
//! - Freeing a port must clear its pending bit in the guest's `shared_info`
//!   ([`crate::two_level::clear_pending`]); the hub cannot. After
//!   [`Hub::close`] that is the closed port; after [`Hub::reset`] every port.
//! - `EVTCHNOP_reset` of another domain also requires that domain to be
//!   paused by its controller (Xen: `-EINVAL` otherwise); the hub does not
//!   know about pausing, so the kernel checks that before [`Hub::reset`].
//! - `privileged` means what Xen's default XSM policy accepts for
//!   `XSM_TARGET`: the control domain, or the device model of the target.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DOMID_XEN, DomId};
use keel_hypercall::abi::evtchn::{
    EVTCHN_2L_NR_CHANNELS, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI,
    EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ, NR_VIRQS,
};

use crate::Port;
use crate::virq::{VirqKind, virq_kind};

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

/// Ports per table bucket: the granule of growth and of [`Hub::is_valid`].
/// One 2-level bitmap word.
pub const PORTS_PER_BUCKET: u32 = 64;

/// The domain whose VIRQ bindings receive global VIRQs unless
/// [`Hub::set_global_virq_handler`] says otherwise (Xen's hardware domain;
/// keel's dom0).
pub const HARDWARE_DOMAIN: DomId = 0;

const NR_VIRQS_USIZE: usize = NR_VIRQS as usize;

/// An event to deliver: set `port` pending in domain `dom`, notifying
/// vCPU `vcpu` (for the 2-level ABI, [`crate::two_level::set_pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Notify {
    /// The domain that receives the event.
    pub dom: DomId,
    /// The port, in `dom`'s table.
    pub port: Port,
    /// The vCPU to notify.
    pub vcpu: u32,
}

/// The state of one port: what it is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not in use (Xen `ECS_FREE`, and `ECS_RESERVED` for port 0).
    Free,
    /// Allocated, waiting for `remote` to bind to it (`ECS_UNBOUND`).
    Unbound {
        /// The only domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `remote_port` of `remote_dom` (`ECS_INTERDOMAIN`).
    Interdomain {
        /// The peer domain (the caller itself for loopback).
        remote_dom: DomId,
        /// The peer's port, in `remote_dom`'s table.
        remote_port: Port,
    },
    /// Bound to a VIRQ (`ECS_VIRQ`).
    Virq {
        /// The VIRQ number, below `NR_VIRQS`.
        virq: u32,
    },
    /// An IPI channel to one vCPU of the same domain (`ECS_IPI`).
    Ipi,
}

impl State {
    /// The `EVTCHNSTAT_*` value for `EVTCHNOP_status`.
    #[must_use]
    pub const fn evtchnstat(&self) -> u32 {
        match self {
            State::Free => EVTCHNSTAT_CLOSED,
            State::Unbound { .. } => EVTCHNSTAT_UNBOUND,
            State::Interdomain { .. } => EVTCHNSTAT_INTERDOMAIN,
            State::Virq { .. } => EVTCHNSTAT_VIRQ,
            State::Ipi => EVTCHNSTAT_IPI,
        }
    }
}

/// The answer to `EVTCHNOP_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    /// What the port is bound to.
    pub state: State,
    /// The vCPU it notifies.
    pub vcpu: u32,
}

/// One slot of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channel {
    state: State,
    /// Xen's `notify_vcpu_id`.
    vcpu: u32,
}

impl Channel {
    const FREE: Channel = Channel {
        state: State::Free,
        vcpu: 0,
    };
}

/// One domain's table.
#[derive(Debug)]
struct Domain {
    /// Ports `1..max_ports` may be allocated (Xen's `max_evtchn_port + 1`,
    /// capped at the 2-level ABI's 4096).
    max_ports: u32,
    nr_vcpus: u32,
    /// The valid ports; the length is a multiple of [`PORTS_PER_BUCKET`].
    chans: Vec<Channel>,
    /// Per vCPU, the port bound to each VIRQ, 0 for none (Xen's
    /// `virq_to_evtchn`). Non-per-vCPU VIRQs use vCPU 0's row.
    virq_to_port: Vec<[Port; NR_VIRQS_USIZE]>,
}

impl Domain {
    fn chan(&self, port: Port) -> Option<Channel> {
        self.chans.get(usize::try_from(port).ok()?).copied()
    }

    fn chan_mut(&mut self, port: Port) -> Option<&mut Channel> {
        self.chans.get_mut(usize::try_from(port).ok()?)
    }

    fn has_vcpu(&self, vcpu: u32) -> bool {
        vcpu < self.nr_vcpus
    }

    fn valid_ports(&self) -> u32 {
        // The length never exceeds EVTCHN_2L_NR_CHANNELS (invariant).
        u32::try_from(self.chans.len()).unwrap_or(u32::MAX)
    }

    /// Adds one bucket of free ports.
    fn grow(&mut self) -> Result<(), Errno> {
        let n = PORTS_PER_BUCKET as usize;
        self.chans.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
        self.chans.resize(self.chans.len() + n, Channel::FREE);
        Ok(())
    }

    /// Xen's `get_free_port`: the lowest free port below the limit, growing
    /// the table if the scan runs off its end. The port stays free until the
    /// caller binds it (the growth stays, as in Xen).
    fn get_free_port(&mut self) -> Result<Port, Errno> {
        for port in 1..self.max_ports {
            if port == self.valid_ports() {
                self.grow()?;
            }
            if self.chan(port).is_some_and(|c| c.state == State::Free) {
                return Ok(port);
            }
        }
        Err(Errno::ENOSPC)
    }

    /// Binds free port `port`.
    fn bind(&mut self, port: Port, state: State, vcpu: u32) {
        if let Some(c) = self.chan_mut(port) {
            *c = Channel { state, vcpu };
        }
    }

    /// Xen's `evtchn_free`, less the pending bit (the kernel's, see the
    /// module's hazards).
    fn free(&mut self, port: Port) {
        if let Some(c) = self.chan_mut(port) {
            *c = Channel::FREE;
        }
    }

    /// The `virq_to_port` slot for `virq` bound on `vcpu`.
    fn virq_slot(&mut self, virq: u32, vcpu: u32) -> Option<&mut Port> {
        let row = match virq_kind(virq)? {
            VirqKind::Vcpu => vcpu,
            VirqKind::Domain | VirqKind::Global => 0,
        };
        self.virq_to_port
            .get_mut(row as usize)?
            .get_mut(virq as usize)
    }

    fn ports_in_use(&self) -> u32 {
        let n = self.chans.iter().filter(|c| c.state != State::Free).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// Every domain's event channels.
#[derive(Debug)]
pub struct Hub {
    domains: BTreeMap<DomId, Domain>,
    /// Per global VIRQ, the domain set to receive it, if not the hardware
    /// domain (Xen's `global_virq_handlers`).
    global_virq_handlers: [Option<DomId>; NR_VIRQS_USIZE],
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
            domains: BTreeMap::new(),
            global_virq_handlers: [None; NR_VIRQS_USIZE],
        }
    }

    /// Gives `dom` a table with ports `0..max_ports` (port 0 never
    /// allocated; `max_ports` capped at `EVTCHN_2L_NR_CHANNELS`) and
    /// `nr_vcpus` vCPUs. Xen's `evtchn_init`, with `max_ports` its
    /// `max_evtchn_port + 1`.
    ///
    /// # Errors
    ///
    /// `EEXIST` if `dom` has a table; `EINVAL` for a reserved domain id
    /// (except `DOMID_XEN`: the hypervisor's own ends of channels it serves,
    /// such as the domUs' consoles) or no vCPUs; `ENOMEM` if the first bucket
    /// cannot be allocated.
    pub fn add_domain(&mut self, dom: DomId, max_ports: u32, nr_vcpus: u32) -> Result<(), Errno> {
        if (dom >= DOMID_FIRST_RESERVED && dom != DOMID_XEN) || nr_vcpus == 0 {
            return Err(Errno::EINVAL);
        }
        if self.domains.contains_key(&dom) {
            return Err(Errno::EEXIST);
        }
        let mut virq_to_port = Vec::new();
        virq_to_port
            .try_reserve_exact(nr_vcpus as usize)
            .map_err(|_| Errno::ENOMEM)?;
        virq_to_port.resize(nr_vcpus as usize, [0; NR_VIRQS_USIZE]);
        let mut d = Domain {
            max_ports: max_ports.min(EVTCHN_2L_NR_CHANNELS),
            nr_vcpus,
            chans: Vec::new(),
            virq_to_port,
        };
        d.grow()?;
        self.domains.insert(dom, d);
        Ok(())
    }

    /// Closes every port of `dom` (the peers of its interdomain channels
    /// become [`State::Unbound`] towards `dom`, as Xen's `evtchn_destroy`
    /// leaves them), stops it handling global VIRQs, and forgets it. Nothing
    /// happens if `dom` has no table.
    pub fn remove_domain(&mut self, dom: DomId) {
        self.close_all(dom);
        self.domains.remove(&dom);
        for h in &mut self.global_virq_handlers {
            if *h == Some(dom) {
                *h = None;
            }
        }
    }

    /// `EVTCHNOP_alloc_unbound`: a fresh port in `dom`, [`State::Unbound`]
    /// for `remote_dom` to bind to. The caller may name another `dom` only if
    /// `privileged`. `remote_dom` need not exist.
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
        let d = self.domains.get_mut(&dom).ok_or(Errno::ESRCH)?;
        let port = d.get_free_port()?;
        if dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        d.bind(port, State::Unbound { remote: remote_dom }, 0);
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain`: connects a fresh port of `caller` to
    /// `remote_port` of `remote_dom`, which must be [`State::Unbound`] for
    /// `caller`. `remote_dom == caller` makes a loopback channel. Returns
    /// the local port and the event Xen raises on it unconditionally (the
    /// peer may have signalled before the bind).
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
        if !self.domains.contains_key(&remote_dom) {
            return Err(Errno::ESRCH);
        }
        let ld = self.domains.get_mut(&caller).ok_or(Errno::ESRCH)?;
        let lport = ld.get_free_port()?;
        let rd = self.domains.get_mut(&remote_dom).ok_or(Errno::ESRCH)?;
        match rd.chan(remote_port) {
            Some(Channel {
                state: State::Unbound { remote },
                ..
            }) if remote == caller => {}
            _ => return Err(Errno::EINVAL),
        }
        // The remote end keeps its notify vCPU; the local one is fresh (0).
        if let Some(c) = rd.chan_mut(remote_port) {
            c.state = State::Interdomain {
                remote_dom: caller,
                remote_port: lport,
            };
        }
        let ld = self.domains.get_mut(&caller).ok_or(Errno::ESRCH)?;
        ld.bind(
            lport,
            State::Interdomain {
                remote_dom,
                remote_port,
            },
            0,
        );
        Ok((
            lport,
            Notify {
                dom: caller,
                port: lport,
                vcpu: 0,
            },
        ))
    }

    /// `EVTCHNOP_bind_virq`: a fresh port of `caller` bound to `virq`,
    /// notifying `vcpu`. Per-vCPU VIRQs bind on any vCPU, once per vCPU;
    /// the others on vCPU 0, once per domain, and a global VIRQ only in the
    /// domain that handles it.
    ///
    /// # Errors
    ///
    /// In Xen's order: `EINVAL` if `virq >= NR_VIRQS`, or it is not
    /// per-vCPU and `vcpu != 0`; `ENOENT` if `caller` has no vCPU `vcpu`
    /// (`ESRCH` if `caller` has no table); `EBUSY` if it is global and
    /// `caller` does not handle it; `EEXIST` if already bound (on that
    /// vCPU); `ENOSPC`/`ENOMEM` if no port is free.
    pub fn bind_virq(&mut self, caller: DomId, virq: u32, vcpu: u32) -> Result<Port, Errno> {
        let kind = virq_kind(virq).ok_or(Errno::EINVAL)?;
        if kind != VirqKind::Vcpu && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        let handler = self.global_virq_handler(virq);
        let d = self.domains.get_mut(&caller).ok_or(Errno::ESRCH)?;
        if !d.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        if kind == VirqKind::Global && handler != caller {
            return Err(Errno::EBUSY);
        }
        if d.virq_slot(virq, vcpu).is_none_or(|p| *p != 0) {
            return Err(Errno::EEXIST);
        }
        let port = d.get_free_port()?;
        d.bind(port, State::Virq { virq }, vcpu);
        if let Some(slot) = d.virq_slot(virq, vcpu) {
            *slot = port;
        }
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`: a fresh port of `caller` that notifies `vcpu`
    /// of the same domain when sent to.
    ///
    /// # Errors
    ///
    /// `ENOENT` if `caller` has no vCPU `vcpu` (`ESRCH` if no table);
    /// `ENOSPC`/`ENOMEM` if no port is free.
    pub fn bind_ipi(&mut self, caller: DomId, vcpu: u32) -> Result<Port, Errno> {
        let d = self.domains.get_mut(&caller).ok_or(Errno::ESRCH)?;
        if !d.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        let port = d.get_free_port()?;
        d.bind(port, State::Ipi, vcpu);
        Ok(port)
    }

    /// `EVTCHNOP_bind_vcpu`: makes `port` of `caller` notify `vcpu`. Allowed
    /// for unbound and interdomain ports and non-per-vCPU VIRQs; IPIs and
    /// per-vCPU VIRQs keep the vCPU they were bound on.
    ///
    /// # Errors
    ///
    /// In Xen's order: `ENOENT` if `caller` has no vCPU `vcpu` (`ESRCH` if
    /// no table); `EINVAL` if `port` is not valid, or free, an IPI or a
    /// per-vCPU VIRQ.
    pub fn bind_vcpu(&mut self, caller: DomId, port: Port, vcpu: u32) -> Result<(), Errno> {
        let d = self.domains.get_mut(&caller).ok_or(Errno::ESRCH)?;
        if !d.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        let c = d.chan_mut(port).ok_or(Errno::EINVAL)?;
        let movable = match c.state {
            State::Unbound { .. } | State::Interdomain { .. } => true,
            State::Virq { virq } => virq_kind(virq) != Some(VirqKind::Vcpu),
            State::Free | State::Ipi => false,
        };
        if !movable {
            return Err(Errno::EINVAL);
        }
        c.vcpu = vcpu;
        Ok(())
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
        let d = self.domains.get_mut(&caller).ok_or(Errno::ESRCH)?;
        let c = d.chan(port).ok_or(Errno::EINVAL)?;
        match c.state {
            State::Free => return Err(Errno::EINVAL),
            State::Unbound { .. } | State::Ipi => {}
            State::Virq { virq } => {
                if let Some(slot) = d.virq_slot(virq, c.vcpu) {
                    *slot = 0;
                }
            }
            State::Interdomain {
                remote_dom,
                remote_port,
            } => {
                d.free(port);
                // Symmetry guarantees the peer; check anyway rather than
                // trust it blindly (Xen BUG()s here).
                if let Some(rd) = self.domains.get_mut(&remote_dom)
                    && let Some(rc) = rd.chan_mut(remote_port)
                    && rc.state
                        == (State::Interdomain {
                            remote_dom: caller,
                            remote_port: port,
                        })
                {
                    rc.state = State::Unbound { remote: caller };
                }
                return Ok(());
            }
        }
        d.free(port);
        Ok(())
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
        let d = self.domains.get(&caller).ok_or(Errno::ESRCH)?;
        let c = d.chan(port).ok_or(Errno::EINVAL)?;
        match c.state {
            State::Interdomain {
                remote_dom,
                remote_port,
            } => {
                let rc = self
                    .domains
                    .get(&remote_dom)
                    .and_then(|rd| rd.chan(remote_port))
                    .ok_or(Errno::EINVAL)?;
                Ok(Some(Notify {
                    dom: remote_dom,
                    port: remote_port,
                    vcpu: rc.vcpu,
                }))
            }
            State::Ipi => Ok(Some(Notify {
                dom: caller,
                port,
                vcpu: c.vcpu,
            })),
            State::Unbound { .. } => Ok(None),
            State::Free | State::Virq { .. } => Err(Errno::EINVAL),
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
        let d = self.domains.get(&dom).ok_or(Errno::ESRCH)?;
        let c = d.chan(port).ok_or(Errno::EINVAL)?;
        if dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        Ok(Status {
            state: c.state,
            vcpu: c.vcpu,
        })
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
        if !self.domains.contains_key(&dom) {
            return Err(Errno::ESRCH);
        }
        if dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        self.close_all(dom);
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
        if virq_kind(virq) != Some(VirqKind::Global) || !self.domains.contains_key(&dom) {
            return Err(Errno::EINVAL);
        }
        let current = self.global_virq_handler(virq);
        if self.global_virq_handlers[virq as usize] == Some(dom) || current == dom {
            return Ok(());
        }
        if self.virq(current, 0, virq).is_some() {
            return Err(Errno::EBUSY);
        }
        self.global_virq_handlers[virq as usize] = Some(dom);
        Ok(())
    }

    /// The domain that receives global VIRQ `virq` (the hardware domain
    /// unless set otherwise). Meaningless for other VIRQs.
    #[must_use]
    pub fn global_virq_handler(&self, virq: u32) -> DomId {
        self.global_virq_handlers
            .get(virq as usize)
            .copied()
            .flatten()
            .unwrap_or(HARDWARE_DOMAIN)
    }

    /// The event for `virq` in `dom`, if bound: for a per-vCPU VIRQ, the
    /// port bound on `vcpu`, notifying `vcpu` (Xen's `send_guest_vcpu_virq`);
    /// for the others, the domain's port, notifying its current vCPU, and
    /// `vcpu` is ignored (Xen's `send_guest_domain_virq`).
    #[must_use]
    pub fn virq(&self, dom: DomId, vcpu: u32, virq: u32) -> Option<Notify> {
        let kind = virq_kind(virq)?;
        let d = self.domains.get(&dom)?;
        let row = if kind == VirqKind::Vcpu { vcpu } else { 0 };
        let port = *d.virq_to_port.get(row as usize)?.get(virq as usize)?;
        if port == 0 {
            return None;
        }
        let c = d.chan(port)?;
        let vcpu = if kind == VirqKind::Vcpu { vcpu } else { c.vcpu };
        Some(Notify { dom, port, vcpu })
    }

    /// The event for global VIRQ `virq` (`VIRQ_CONSOLE`, `VIRQ_DOM_EXC`,
    /// ...), in whichever domain handles it, if bound there (Xen's
    /// `send_global_virq`). `None` for other VIRQs.
    #[must_use]
    pub fn global_virq(&self, virq: u32) -> Option<Notify> {
        if virq_kind(virq) != Some(VirqKind::Global) {
            return None;
        }
        self.virq(self.global_virq_handler(virq), 0, virq)
    }

    /// The vCPU `port` of `dom` notifies, for `EVTCHNOP_unmask` (which acts
    /// on any valid port, free ones included, as in Xen). `None` if the port
    /// is not valid (unmask answers `EINVAL`) or `dom` has no table.
    #[must_use]
    pub fn notify_vcpu(&self, dom: DomId, port: Port) -> Option<u32> {
        Some(self.domains.get(&dom)?.chan(port)?.vcpu)
    }

    /// Whether `port` names a slot of `dom`'s table (Xen's `port_is_valid`),
    /// for `SCHEDOP_poll`, which answers `EINVAL` otherwise.
    #[must_use]
    pub fn is_valid(&self, dom: DomId, port: Port) -> bool {
        self.domains
            .get(&dom)
            .is_some_and(|d| d.chan(port).is_some())
    }

    /// Ports of `dom` in use (not free); 0 if `dom` has no table.
    #[must_use]
    pub fn ports_in_use(&self, dom: DomId) -> u32 {
        self.domains.get(&dom).map_or(0, Domain::ports_in_use)
    }

    /// Whether `dom` has a table.
    #[must_use]
    pub fn has_domain(&self, dom: DomId) -> bool {
        self.domains.contains_key(&dom)
    }

    /// Closes every port of `dom` in use, highest first as Xen's
    /// `evtchn_destroy` does. Bounded by the table size (at most 4096).
    fn close_all(&mut self, dom: DomId) {
        let Some(d) = self.domains.get(&dom) else {
            return;
        };
        for port in (1..d.valid_ports()).rev() {
            // Free ports answer EINVAL: nothing to do for them.
            let _ = self.close(dom, port);
        }
    }
}
