//! One domain's event-channel table, and the `EVTCHNOP_*` operations on it
//! (the per-domain half of Xen's `xen/common/event_channel.c`; semantics
//! from `public/event_channel.h`). The operations that involve a second
//! domain are in [`interdomain`], taking both tables.
//!
//! # What
//!
//! A [`Table`] is what Xen keeps in `struct domain` for event channels
//! (`evtchn` buckets, `valid_evtchns`, `max_evtchn_port`, `is_dying` as far
//! as channels care) plus each vCPU's `virq_to_evtchn`: the domain's ports,
//! its port limit and vCPU count, and its VIRQ bindings. It knows its own
//! domain id, so the two-table functions can check which end is which.
//!
//! A port number names a slot in *this* table only; the other end of an
//! interdomain channel is reached through the channel's own state
//! ([`State::Interdomain`]), never by a guest-supplied (domain, port) pair,
//! except when binding to a port the peer left [`State::Unbound`] for
//! exactly this domain. Each operation returns what `EVTCHNOP_*` returns,
//! with Xen's error codes in Xen's order of checks; an operation that raises
//! an event returns a [`Notify`] for the kernel to deliver (see
//! [`crate::two_level`]).
//!
//! Tables grow on demand in buckets of [`PORTS_PER_BUCKET`] slots, starting
//! with one bucket, and never shrink while the domain lives; a port is
//! *valid* (may be named in any op, [`Table::is_valid`]) when its bucket
//! exists. Allocation takes the lowest free port below the limit and grows
//! the table by a bucket when the scan reaches its end, so validity is
//! observable as in Xen (whose bucket size is build-dependent).
//!
//! A table also knows its domain's event-channel ABI ([`Abi`]): 2-level
//! until the first [`Table::init_control`], then FIFO until the table is
//! emptied. It holds the FIFO state ([`crate::fifo`]: the frames of the
//! event array and control blocks, the queue tails, each port's priority)
//! and the kernel's accessor to those frames, so under FIFO it raises,
//! unmasks and clears ports itself ([`Table::fifo_mut`]). The ABI sets the
//! limit of ports ([`Table::port_limit`]): the configured `max_ports`, at
//! most 4096 under 2-level and 131,072 under FIFO.
//!
//! Not here: PIRQs (`EVTCHNOP_bind_pirq`; Xen without `CONFIG_HAS_PIRQ`
//! answers `-EOPNOTSUPP`), Xen-attached channels (ioreq servers), XSM beyond
//! the default "self or privileged" policy.
//!
//! # Which operations need which tables
//!
//! - One table, always: [`Table::alloc_unbound`], [`Table::bind_virq`]
//!   (plus a look at [`GlobalVirqHandlers`]), [`Table::bind_ipi`],
//!   [`Table::bind_vcpu`], [`Table::status`], [`Table::virq`],
//!   [`Table::notify_vcpu`], [`Table::is_valid`], [`Table::ports_in_use`],
//!   [`Table::bind_loopback`] (`EVTCHNOP_bind_interdomain` to the
//!   caller's own domain), and the FIFO ABI: [`Table::init_control`],
//!   [`Table::expand_array`], [`Table::set_priority`], and delivering,
//!   unmasking and poll checks through [`Table::fifo_mut`].
//! - One table, sometimes two: [`Table::send`] and [`Table::close`] finish
//!   alone for a port whose channel lies within the table (IPI, VIRQ,
//!   unbound, loopback) and otherwise answer [`Reach::Remote`] with the peer
//!   domain, changing nothing; the caller then locks both tables and calls
//!   [`send_interdomain`] or [`close_interdomain`], which read the port
//!   again and act on what it is *then*.
//! - Two tables: [`bind_interdomain`] (to another domain), and the per-peer
//!   step [`close_peer`] of emptying a table.
//! - Emptying a table (`EVTCHNOP_reset`, domain destruction) is a loop:
//!   [`Table::reset`] or [`Table::destroy`] closes what the table can close
//!   alone and names a peer it still has channels with; [`close_peer`]
//!   closes the channels with that peer; [`Table::close_local`] again names
//!   the next peer, until there is none and the table is empty.
//!
//! # Invariants
//!
//! - Port 0 is never allocated (Xen reserves it); it reads as closed.
//! - The table length is a multiple of [`PORTS_PER_BUCKET`], at least one
//!   bucket and at most `EVTCHN_FIFO_NR_CHANNELS`. No port at or beyond
//!   [`Table::port_limit`] is ever in use: the limit only drops (FIFO back
//!   to 2-level) once the table is empty. The table keeps its length then,
//!   as Xen keeps its buckets.
//! - The FIFO state exists exactly while the ABI is FIFO, and only with the
//!   kernel's accessor; every frame it held is handed back once, through
//!   [`Table::take_released_frames`].
//! - Under FIFO, a free port whose event word is still LINKED (the guest has
//!   not consumed it since it was closed) is not allocated (Xen's
//!   `evtchn_is_busy`): it would be linked twice.
//! - Interdomain channels are symmetric: `(a, p)` is `Interdomain` with
//!   `(b, q)` exactly when `(b, q)` is `Interdomain` with `(a, p)`. Each
//!   function here changes both ends together, and the caller holds both
//!   tables' locks whenever it calls one that takes two tables, so the
//!   invariant holds for any two tables locked together. A function that
//!   finds it broken does the safe thing (frees its own end, or refuses)
//!   rather than trusting it.
//! - `virq_to_port[v][virq]` is non-zero exactly when a port of the table
//!   is `Virq { virq }` and `v` is its vCPU (per-vCPU VIRQs) or 0 (others).
//! - A free port notifies vCPU 0 (freeing resets the binding, as Xen does);
//!   a bound port's vCPU is below the domain's vCPU count.
//! - A dying table ([`Table::destroy`]) allocates nothing (`EINVAL`, as
//!   Xen's `get_free_port` for a dying domain), and its channels only ever
//!   close: a peer closing its end frees the dying end rather than leaving it
//!   unbound. So its ports in use only decrease, and the emptying loop ends.
//! - Nothing panics, whatever the numbers; the only allocation is table
//!   growth, which fails with `ENOMEM` rather than aborting.
//!
//! # Locking
//!
//! None inside: every method takes `&self` or `&mut self`. The kernel keeps
//! each domain's table in that domain's own lock (Xen's `d->event_lock`)
//! and follows one order: **when an operation needs two domains it locks
//! both, the lower domain id first** (one lock when both are the same
//! domain). [`GlobalVirqHandlers`] has its own lock, taken after any table
//! lock. Per operation:
//!
//! - Single-table operations: the table's lock.
//! - `EVTCHNOP_bind_interdomain`: look up both domains (`ESRCH`), lock both
//!   in order, [`bind_interdomain`] (or [`Table::bind_loopback`] under the
//!   one lock), and deliver the returned [`Notify`] before unlocking.
//! - `EVTCHNOP_send`: lock the caller, [`Table::send`]. For
//!   [`Reach::Local`], deliver under that lock. For [`Reach::Remote`]`(d)`,
//!   unlock, look up `d` (keeping a reference), lock both in order,
//!   [`send_interdomain`], deliver, unlock both. The port may have changed
//!   in between; [`send_interdomain`] answers for the port as it is once
//!   both are locked. If `d` is no longer found, its destruction has
//!   finished since the read and the port is no longer connected to it:
//!   start over.
//! - `EVTCHNOP_close`: the same shape: [`Table::close`], then for
//!   [`Reach::Remote`] [`close_interdomain`] under both locks.
//! - `EVTCHNOP_reset` and domain destruction: [`Table::reset`] or
//!   [`Table::destroy`] under the table's lock, then per peer `p` it names:
//!   unlock, look up `p` (not found: skip it, its destruction already
//!   unbound these channels), lock both in order, [`close_peer`], then
//!   [`Table::close_local`] (still under both, or under the table's lock
//!   alone) for the next peer. A dying domain stays findable by its id until
//!   this loop has emptied its table, and its id is not reused while anyone
//!   holds a reference to it (Xen's rule: the id is taken until the last
//!   reference drops). Destruction then forgets the domain in
//!   [`GlobalVirqHandlers::forget`].
//! - `EVTCHNOP_bind_virq`: the caller's table, then the handler lock (read),
//!   for [`Table::bind_virq`].
//! - `XEN_DOMCTL_set_virq_handler`: read the current handler `h` under the
//!   handler lock; unlock; lock the tables of the new handler and of `h` (in
//!   order; one if the same; only the new one's if `h` has no table); lock
//!   the handlers; [`GlobalVirqHandlers::set`], which answers `EAGAIN` if
//!   the handler changed meanwhile (start over).
//! - Global VIRQ delivery: read the handler, lock its table, [`Table::virq`],
//!   deliver. A stale handler is harmless: the old one cannot have the VIRQ
//!   bound any more.
//! - FIFO: `EVTCHNOP_init_control`, `expand_array`, `set_priority` and
//!   `unmask` under the caller's table lock; every [`Notify`] is delivered
//!   under the lock of the domain it names, whichever the ABI. The FIFO
//!   queues rely on that lock alone (see [`crate::fifo`]).
//!
//! **Deliver a [`Notify`] before dropping the lock of the domain it names**
//! (for an interdomain send, the remote's). Closing a port clears its
//! pending bit under that lock (see the hazards); a delivery made after the
//! lock is dropped can land after such a close, leaving a freed port pending,
//! to fire spuriously on whatever channel reuses it. Xen holds the channel's
//! lock across `evtchn_port_set_pending` for the same reason.
//!
//! # Hazards
//!
//! - The caller resolves `DOMID_SELF` before calling: for
//!   `EVTCHNOP_alloc_unbound` a `remote_dom` of `DOMID_SELF` means the
//!   *caller* (not the table's domain), as in Xen.
//! - Under 2-level, freeing a port must clear its pending bit in the
//!   guest's `shared_info` ([`crate::two_level::clear_pending`]); the table
//!   cannot. That is the closed port after a close, and every port after a
//!   reset (including those [`close_peer`] frees). Under FIFO the table
//!   clears the port's PENDING itself when it frees it. A peer's end that
//!   becomes unbound keeps its pending bit, as in Xen.
//! - FIFO frames: the kernel checks and pins a frame before
//!   [`Table::init_control`] or [`Table::expand_array`] (after their
//!   `check_` forms, to keep Xen's order of errors), unpins it if the call
//!   fails, and otherwise unpins it when [`Table::take_released_frames`]
//!   hands it back, after the table has been emptied. A table dropped
//!   before that still holds frames the kernel pinned.
//! - `EVTCHNOP_bind_vcpu` under FIFO: the port's later events go to the new
//!   vCPU's queues. An event already linked is consumed on the old vCPU;
//!   if the port was the old queue's tail, the next link resets that tail
//!   (Xen's `fifo_lastq`), so the two queues never share a word.
//! - `EVTCHNOP_reset` of another domain also requires that domain to be
//!   paused by its controller (Xen: `-EINVAL` otherwise); the kernel checks.
//! - `privileged` means what Xen's default XSM policy accepts for
//!   `XSM_TARGET`: the control domain, or the device model of the target.
//! - The emptying loop of a table that is not dying (`EVTCHNOP_reset`) can
//!   be prolonged by the domain's other vCPUs binding new channels; the
//!   kernel may bound it by [`Table::valid_ports`] rounds, as Xen's reset
//!   visits each port once.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DOMID_XEN, DomId};
use keel_hypercall::abi::evtchn::{
    EVTCHN_2L_NR_CHANNELS, EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_NR_CHANNELS,
    EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ,
    NR_VIRQS,
};

use crate::Port;
use crate::fifo::{self, Fifo, FifoMem, PortFifo, Raised};
use crate::two_level::{self, EventWords};
use crate::virq::{GlobalVirqHandlers, VirqKind, check_bind_virq, virq_kind};

pub mod interdomain;

pub use interdomain::{bind_interdomain, close_interdomain, close_peer, send_interdomain};

#[cfg(test)]
mod fifo_tests;
#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod tests;

/// Ports per table bucket: the granule of growth and of [`Table::is_valid`].
/// One 2-level bitmap word.
pub const PORTS_PER_BUCKET: u32 = 64;

const NR_VIRQS_USIZE: usize = NR_VIRQS as usize;

/// An event to deliver: set `port` pending in domain `dom`, notifying
/// vCPU `vcpu` (for the 2-level ABI, [`crate::two_level::set_pending`]).
/// Deliver it while holding `dom`'s table lock (see the module's locking).
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
        /// The peer domain (the domain itself for loopback).
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

/// How far one table got with an operation on a port.
#[must_use = "`Remote` means the operation is not done: call the two-table form"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reach<T> {
    /// The channel lies within this table: the operation is done, with
    /// this result.
    Local(T),
    /// The port is connected to this other domain, and nothing was changed:
    /// lock that domain's table too (lower domain id first) and call the
    /// two-table form, which reads the port again.
    Remote(DomId),
}

/// The event-channel ABI a domain uses (Xen's `evtchn_port_ops`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Abi {
    /// Bitmaps in `shared_info` ([`crate::two_level`]): every domain starts
    /// here, and returns here after `EVTCHNOP_reset`.
    TwoLevel,
    /// Queues in guest memory ([`crate::fifo`]), from the first
    /// `EVTCHNOP_init_control` on.
    Fifo,
}

/// One slot of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channel {
    state: State,
    /// Xen's `notify_vcpu_id`.
    vcpu: u32,
    /// The port's FIFO state; kept (its last queue) while the port is free.
    fifo: PortFifo,
}

impl Channel {
    const FREE: Channel = Channel {
        state: State::Free,
        vcpu: 0,
        fifo: PortFifo::NEW,
    };
}

/// The kernel's access to the domain's frames for the FIFO ABI.
struct SharedMem(Box<dyn FifoMem + Send + Sync>);

impl fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FifoMem")
    }
}

/// Checks the arguments of [`Table::new`] that do not need memory.
pub(crate) fn check_new(dom: DomId, nr_vcpus: u32) -> Result<(), Errno> {
    if (dom >= DOMID_FIRST_RESERVED && dom != DOMID_XEN) || nr_vcpus == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// One domain's event channels (see the module documentation). The kernel
/// keeps it under the domain's own lock.
#[derive(Debug)]
pub struct Table {
    dom: DomId,
    /// Set by [`Table::destroy`]; never cleared.
    dying: bool,
    /// Xen's `max_evtchn_port + 1`, capped at the FIFO ABI's 131,072; ports
    /// below both this and the ABI's limit may be allocated
    /// ([`Table::port_limit`]).
    max_ports: u32,
    nr_vcpus: u32,
    /// The valid ports; the length is a multiple of [`PORTS_PER_BUCKET`].
    chans: Vec<Channel>,
    /// Per vCPU, the port bound to each VIRQ, 0 for none (Xen's
    /// `virq_to_evtchn`). Non-per-vCPU VIRQs use vCPU 0's row.
    virq_to_port: Vec<[Port; NR_VIRQS_USIZE]>,
    /// The domain's frames for the FIFO ABI, if the kernel offers it
    /// ([`Table::enable_fifo`]).
    fifo_mem: Option<SharedMem>,
    /// The FIFO state: `Some` exactly when the domain uses the FIFO ABI.
    /// Only ever `Some` with `fifo_mem`.
    fifo: Option<Fifo>,
    /// Frames the FIFO state held when it was dropped, for the kernel to
    /// unpin ([`Table::take_released_frames`]).
    released_frames: Vec<u64>,
}

impl Table {
    /// A table for `dom` with ports `0..max_ports` (port 0 never allocated;
    /// `max_ports` capped at `EVTCHN_FIFO_NR_CHANNELS`, and below
    /// `EVTCHN_2L_NR_CHANNELS` while the domain uses the 2-level ABI) and
    /// `nr_vcpus` vCPUs. Xen's `evtchn_init`, with `max_ports` its
    /// `max_evtchn_port + 1` (xl's default: 1024). It starts with the 2-level
    /// ABI and no FIFO memory ([`Table::enable_fifo`]).
    ///
    /// # Errors
    ///
    /// `EINVAL` for a reserved domain id (except `DOMID_XEN`: the
    /// hypervisor's own ends of channels it serves, such as the domUs'
    /// consoles) or no vCPUs; `ENOMEM` if the first bucket cannot be
    /// allocated.
    pub fn new(dom: DomId, max_ports: u32, nr_vcpus: u32) -> Result<Table, Errno> {
        check_new(dom, nr_vcpus)?;
        let mut virq_to_port = Vec::new();
        virq_to_port
            .try_reserve_exact(nr_vcpus as usize)
            .map_err(|_| Errno::ENOMEM)?;
        virq_to_port.resize(nr_vcpus as usize, [0; NR_VIRQS_USIZE]);
        let mut t = Table {
            dom,
            dying: false,
            max_ports: max_ports.min(EVTCHN_FIFO_NR_CHANNELS),
            nr_vcpus,
            chans: Vec::new(),
            virq_to_port,
            fifo_mem: None,
            fifo: None,
            released_frames: Vec::new(),
        };
        t.grow()?;
        Ok(t)
    }

    /// The domain whose table this is.
    #[must_use]
    pub const fn dom(&self) -> DomId {
        self.dom
    }

    /// The domain's vCPU count.
    #[must_use]
    pub const fn nr_vcpus(&self) -> u32 {
        self.nr_vcpus
    }

    /// How many ports are valid (`0..valid_ports()`); a multiple of
    /// [`PORTS_PER_BUCKET`].
    #[must_use]
    pub fn valid_ports(&self) -> u32 {
        // The length never exceeds EVTCHN_FIFO_NR_CHANNELS (invariant).
        u32::try_from(self.chans.len()).unwrap_or(u32::MAX)
    }

    /// Ports below this may be allocated: the configured limit, capped by
    /// the ABI in use (Xen's `max_evtchn_port + 1` and `max_evtchns(d)`):
    /// 4096 for 2-level, 131,072 for FIFO.
    #[must_use]
    pub fn port_limit(&self) -> u32 {
        let abi = match self.abi() {
            Abi::TwoLevel => EVTCHN_2L_NR_CHANNELS,
            Abi::Fifo => EVTCHN_FIFO_NR_CHANNELS,
        };
        self.max_ports.min(abi)
    }

    /// Whether [`Table::destroy`] has been called.
    #[must_use]
    pub const fn is_dying(&self) -> bool {
        self.dying
    }

    /// `EVTCHNOP_alloc_unbound` in this table: a fresh port,
    /// [`State::Unbound`] for `remote_dom` to bind to. `caller` may name
    /// another domain's table only if `privileged`. `remote_dom` is recorded
    /// as given: whether it exists is the caller's business (Xen checks it;
    /// keel's hub never did).
    ///
    /// # Errors
    ///
    /// In Xen's order: `ENOSPC` if the table has no free port (`ENOMEM` if
    /// it cannot grow, `EINVAL` if dying); `EPERM` if the table is not
    /// `caller`'s and `caller` is not privileged. (`ESRCH` for a missing
    /// table is the kernel's.)
    pub fn alloc_unbound(
        &mut self,
        caller: DomId,
        privileged: bool,
        remote_dom: DomId,
    ) -> Result<Port, Errno> {
        let port = self.get_free_port()?;
        if self.dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        self.bind(port, State::Unbound { remote: remote_dom }, 0);
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain` with `remote_dom` the caller itself: a
    /// loopback channel from a fresh port to `remote_port` of this table,
    /// which must be [`State::Unbound`] for this domain. Returns the new
    /// port and the event Xen raises on it unconditionally.
    ///
    /// # Errors
    ///
    /// In Xen's order: `ENOSPC`/`ENOMEM` if no port is free (`EINVAL` if
    /// dying); `EINVAL` if `remote_port` is not valid or not unbound for this
    /// domain.
    pub fn bind_loopback(&mut self, remote_port: Port) -> Result<(Port, Notify), Errno> {
        let lport = self.get_free_port()?;
        if !self.is_unbound_for(remote_port, self.dom) {
            return Err(Errno::EINVAL);
        }
        let dom = self.dom;
        self.set_state(
            remote_port,
            State::Interdomain {
                remote_dom: dom,
                remote_port: lport,
            },
        );
        self.bind(
            lport,
            State::Interdomain {
                remote_dom: dom,
                remote_port,
            },
            0,
        );
        Ok((
            lport,
            Notify {
                dom,
                port: lport,
                vcpu: 0,
            },
        ))
    }

    /// `EVTCHNOP_bind_virq`: a fresh port bound to `virq`, notifying `vcpu`.
    /// Per-vCPU VIRQs bind on any vCPU, once per vCPU; the others on vCPU 0,
    /// once per domain, and a global VIRQ only in the domain `handlers`
    /// names for it.
    ///
    /// # Errors
    ///
    /// In Xen's order: `EINVAL` if `virq >= NR_VIRQS`, or it is not
    /// per-vCPU and `vcpu != 0`; `ENOENT` if there is no vCPU `vcpu`;
    /// `EBUSY` if it is global and this domain does not handle it; `EEXIST`
    /// if already bound (on that vCPU); `ENOSPC`/`ENOMEM` if no port is free
    /// (`EINVAL` if dying).
    pub fn bind_virq(
        &mut self,
        virq: u32,
        vcpu: u32,
        handlers: &GlobalVirqHandlers,
    ) -> Result<Port, Errno> {
        let kind = check_bind_virq(virq, vcpu)?;
        if !self.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        if kind == VirqKind::Global && handlers.handler(virq) != self.dom {
            return Err(Errno::EBUSY);
        }
        if self.virq_slot(virq, vcpu).is_none_or(|p| *p != 0) {
            return Err(Errno::EEXIST);
        }
        let port = self.get_free_port()?;
        self.bind(port, State::Virq { virq }, vcpu);
        if let Some(slot) = self.virq_slot(virq, vcpu) {
            *slot = port;
        }
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`: a fresh port that notifies `vcpu` of the same
    /// domain when sent to.
    ///
    /// # Errors
    ///
    /// `ENOENT` if there is no vCPU `vcpu`; `ENOSPC`/`ENOMEM` if no port is
    /// free (`EINVAL` if dying).
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<Port, Errno> {
        if !self.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        let port = self.get_free_port()?;
        self.bind(port, State::Ipi, vcpu);
        Ok(port)
    }

    /// `EVTCHNOP_bind_vcpu`: makes `port` notify `vcpu`. Allowed for unbound
    /// and interdomain ports and non-per-vCPU VIRQs; IPIs and per-vCPU VIRQs
    /// keep the vCPU they were bound on. Only this end of an interdomain
    /// channel changes, so one lock suffices.
    ///
    /// Under FIFO, the port's later events are linked on `vcpu`'s queues; an
    /// event already linked stays on the old vCPU's queue and is consumed
    /// there (Xen's `fifo_lastq` resets the old queue's tail when the port
    /// is next linked).
    ///
    /// # Errors
    ///
    /// In Xen's order: `ENOENT` if there is no vCPU `vcpu`; `EINVAL` if
    /// `port` is not valid, or free, an IPI or a per-vCPU VIRQ.
    pub fn bind_vcpu(&mut self, port: Port, vcpu: u32) -> Result<(), Errno> {
        if !self.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        let c = self.chan_mut(port).ok_or(Errno::EINVAL)?;
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

    /// `EVTCHNOP_close` of `port`, as far as this table can: frees an
    /// unbound, IPI or VIRQ port (dropping the VIRQ binding), or a loopback
    /// end (whose other end becomes [`State::Unbound`] towards this domain,
    /// keeping its vCPU). A port connected to another domain is left as it
    /// is: [`Reach::Remote`] names the domain, for [`close_interdomain`].
    ///
    /// # Errors
    ///
    /// `EINVAL` if `port` is not valid or already free.
    pub fn close(&mut self, port: Port) -> Result<Reach<()>, Errno> {
        let c = self.chan(port).ok_or(Errno::EINVAL)?;
        match c.state {
            State::Free => return Err(Errno::EINVAL),
            State::Unbound { .. } | State::Ipi => {}
            State::Virq { virq } => {
                if let Some(slot) = self.virq_slot(virq, c.vcpu) {
                    *slot = 0;
                }
            }
            State::Interdomain {
                remote_dom,
                remote_port,
            } => {
                if remote_dom != self.dom {
                    return Ok(Reach::Remote(remote_dom));
                }
                self.free(port);
                let dom = self.dom;
                self.unbind_end(remote_port, dom, port);
                return Ok(Reach::Local(()));
            }
        }
        self.free(port);
        Ok(Reach::Local(()))
    }

    /// `EVTCHNOP_send` on `port`, as far as this table can: an IPI raises
    /// the port itself, a loopback channel its other end, an unbound port
    /// nothing (Xen drops it silently). A port connected to another domain:
    /// [`Reach::Remote`] names the domain, for [`send_interdomain`].
    ///
    /// # Errors
    ///
    /// `EINVAL` if `port` is not valid, free or a VIRQ.
    pub fn send(&self, port: Port) -> Result<Reach<Option<Notify>>, Errno> {
        let c = self.chan(port).ok_or(Errno::EINVAL)?;
        match c.state {
            State::Interdomain {
                remote_dom,
                remote_port,
            } => {
                if remote_dom != self.dom {
                    return Ok(Reach::Remote(remote_dom));
                }
                let rc = self.chan(remote_port).ok_or(Errno::EINVAL)?;
                Ok(Reach::Local(Some(Notify {
                    dom: self.dom,
                    port: remote_port,
                    vcpu: rc.vcpu,
                })))
            }
            State::Ipi => Ok(Reach::Local(Some(Notify {
                dom: self.dom,
                port,
                vcpu: c.vcpu,
            }))),
            State::Unbound { .. } => Ok(Reach::Local(None)),
            State::Free | State::Virq { .. } => Err(Errno::EINVAL),
        }
    }

    /// `EVTCHNOP_status` of `port`; another domain's table only if
    /// `privileged`. Port 0 and free ports read as [`State::Free`].
    ///
    /// # Errors
    ///
    /// In Xen's order: `EINVAL` if `port` is not valid; `EPERM` if the table
    /// is not `caller`'s and `caller` is not privileged.
    pub fn status(&self, caller: DomId, privileged: bool, port: Port) -> Result<Status, Errno> {
        let c = self.chan(port).ok_or(Errno::EINVAL)?;
        if self.dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        Ok(Status {
            state: c.state,
            vcpu: c.vcpu,
        })
    }

    /// `EVTCHNOP_reset`, as far as this table can: checks permission, then
    /// [`Table::close_local`]. `Ok(Some(peer))`: channels with `peer`
    /// remain; continue with [`close_peer`] (see the module's locking). The
    /// table keeps its size. Once emptied, a FIFO domain is back on the
    /// 2-level ABI (Xen's `evtchn_reset`), and its frames are to be taken
    /// with [`Table::take_released_frames`].
    ///
    /// # Errors
    ///
    /// `EPERM` if the table is not `caller`'s and `caller` is not
    /// privileged. (Xen's `EINVAL` for resetting a domain its controller has
    /// not paused is the kernel's check.)
    pub fn reset(&mut self, caller: DomId, privileged: bool) -> Result<Option<DomId>, Errno> {
        if self.dom != caller && !privileged {
            return Err(Errno::EPERM);
        }
        Ok(self.close_local())
    }

    /// The first step of destroying the domain (Xen's `evtchn_destroy`, with
    /// the domain's `is_dying` set): marks the table dying, so it allocates
    /// no port again and its peers' closes free its ends, then
    /// [`Table::close_local`]. Calling it again just continues. Once emptied,
    /// the FIFO state is dropped (Xen's `evtchn_fifo_destroy`) and its frames
    /// are to be taken with [`Table::take_released_frames`].
    #[must_use = "`Some(peer)`: channels with `peer` remain; continue with `close_peer`"]
    pub fn destroy(&mut self) -> Option<DomId> {
        self.dying = true;
        self.close_local()
    }

    /// Closes every port whose channel lies within this table (unbound, IPI,
    /// VIRQ, loopback), highest first as Xen's `evtchn_destroy`, and names
    /// the lowest other domain the table still has channels with, for
    /// [`close_peer`]. Bounded by the table size (at most 131,072).
    ///
    /// `None`: the table is empty, and emptying it (`EVTCHNOP_reset` or
    /// destruction) is done. A FIFO domain then returns to the 2-level ABI,
    /// as Xen's `evtchn_reset` and `evtchn_destroy` end with
    /// `evtchn_fifo_destroy`: take the frames to unpin with
    /// [`Table::take_released_frames`].
    #[must_use = "`Some(peer)`: channels with `peer` remain; continue with `close_peer`"]
    pub fn close_local(&mut self) -> Option<DomId> {
        for port in (1..self.valid_ports()).rev() {
            if self.remote_end(port).is_none() {
                // Free ports answer EINVAL: nothing to do for them. Nothing
                // else can answer Remote (remote_end is None).
                let _ = self.close(port);
            }
        }
        let peer = self
            .chans
            .iter()
            .filter_map(|c| match c.state {
                State::Interdomain { remote_dom, .. } if remote_dom != self.dom => Some(remote_dom),
                _ => None,
            })
            .min();
        if peer.is_none() {
            self.drop_fifo();
        }
        peer
    }

    /// The event for `virq` in this domain, if bound: for a per-vCPU VIRQ,
    /// the port bound on `vcpu`, notifying `vcpu` (Xen's
    /// `send_guest_vcpu_virq`); for the others, the domain's port, notifying
    /// its current vCPU, and `vcpu` is ignored (Xen's
    /// `send_guest_domain_virq`; for a global VIRQ, `send_global_virq` on
    /// the handler's table).
    #[must_use]
    pub fn virq(&self, vcpu: u32, virq: u32) -> Option<Notify> {
        let kind = virq_kind(virq)?;
        let row = if kind == VirqKind::Vcpu { vcpu } else { 0 };
        let port = *self.virq_to_port.get(row as usize)?.get(virq as usize)?;
        if port == 0 {
            return None;
        }
        let c = self.chan(port)?;
        let vcpu = if kind == VirqKind::Vcpu { vcpu } else { c.vcpu };
        Some(Notify {
            dom: self.dom,
            port,
            vcpu,
        })
    }

    /// The vCPU `port` notifies, for `EVTCHNOP_unmask` (which acts on any
    /// valid port, free ones included, as in Xen). `None` if the port is not
    /// valid (unmask answers `EINVAL`).
    #[must_use]
    pub fn notify_vcpu(&self, port: Port) -> Option<u32> {
        Some(self.chan(port)?.vcpu)
    }

    /// Whether `port` names a slot of the table (Xen's `port_is_valid`), for
    /// `SCHEDOP_poll`, which answers `EINVAL` otherwise.
    #[must_use]
    pub fn is_valid(&self, port: Port) -> bool {
        self.chan(port).is_some()
    }

    /// Ports in use (not free).
    #[must_use]
    pub fn ports_in_use(&self) -> u32 {
        let n = self.chans.iter().filter(|c| c.state != State::Free).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    // ---- The FIFO ABI (see `crate::fifo`). ----

    /// Offers the FIFO ABI to the domain: `mem` reaches the frames the
    /// kernel will hand to [`Table::init_control`] and
    /// [`Table::expand_array`]. Without it (a new table), those answer
    /// `ENOSYS`, which makes a guest keep the 2-level ABI. Call it once,
    /// when the domain is built; a later call replaces the accessor.
    pub fn enable_fifo(&mut self, mem: Box<dyn FifoMem + Send + Sync>) {
        self.fifo_mem = Some(SharedMem(mem));
    }

    /// The ABI the domain uses now.
    #[must_use]
    pub const fn abi(&self) -> Abi {
        if self.fifo.is_some() {
            Abi::Fifo
        } else {
            Abi::TwoLevel
        }
    }

    /// The checks of `EVTCHNOP_init_control` to make before the kernel
    /// looks up and pins the control block's frame, in Xen's order.
    ///
    /// # Errors
    ///
    /// `ENOSYS` if the kernel does not offer FIFO ([`Table::enable_fifo`]);
    /// `ENOENT` if there is no vCPU `vcpu`; `EINVAL` if a control block at
    /// `offset` would cross its page's end or `offset` is not 8-aligned.
    pub fn check_init_control(&self, vcpu: u32, offset: u32) -> Result<(), Errno> {
        if self.fifo_mem.is_none() {
            return Err(Errno::ENOSYS);
        }
        fifo::check_init_control(self.nr_vcpus, vcpu, offset)
    }

    /// `EVTCHNOP_init_control`: vCPU `vcpu`'s control block is at `offset`
    /// in `frame` (the kernel's handle of the pinned frame). Returns the
    /// `link_bits` to report (17).
    ///
    /// The first call switches the domain to FIFO for good (until
    /// `EVTCHNOP_reset`), as Xen's `evtchn_fifo_init_control` with
    /// `setup_ports`: the limit of ports rises to [`Table::port_limit`], every
    /// port gets the default priority, and each port in use whose 2-level
    /// pending bit is set in `words` (the guest's `shared_info`) is saved
    /// pending, to be raised when the event array reaches it. Other pending
    /// events of the 2-level ABI are not carried over (nor are they in Xen).
    ///
    /// On success the table holds `frame` until it hands it back through
    /// [`Table::take_released_frames`]; on error it did not take it.
    ///
    /// # Errors
    ///
    /// Those of [`Table::check_init_control`]; then `EINVAL` if the vCPU has
    /// a control block already; `ENOMEM` if the FIFO state cannot be
    /// allocated (the domain stays 2-level).
    pub fn init_control<W: EventWords + ?Sized>(
        &mut self,
        vcpu: u32,
        offset: u32,
        frame: u64,
        words: &W,
    ) -> Result<u8, Errno> {
        self.check_init_control(vcpu, offset)?;
        if let Some(fifo) = &mut self.fifo {
            fifo.init_control(vcpu, offset, frame)?;
            return Ok(fifo::LINK_BITS);
        }
        let mut fifo = Fifo::new(self.nr_vcpus)?;
        fifo.init_control(vcpu, offset, frame)?;
        // Xen's setup_ports.
        for (port, c) in (0u32..).zip(self.chans.iter_mut()).skip(1) {
            c.fifo.set_default_priority();
            if c.state != State::Free && two_level::is_pending(words, port) {
                c.fifo.save_pending();
            }
        }
        self.fifo = Some(fifo);
        Ok(fifo::LINK_BITS)
    }

    /// The checks of `EVTCHNOP_expand_array` to make before the kernel looks
    /// up and pins the page's frame, in Xen's order.
    ///
    /// # Errors
    ///
    /// `ENOSYS` if the kernel does not offer FIFO; `EOPNOTSUPP` if the
    /// domain uses the 2-level ABI (no `init_control` yet); `ENOSPC` if the
    /// event array has its 128 pages.
    pub fn check_expand_array(&self) -> Result<(), Errno> {
        if self.fifo_mem.is_none() {
            return Err(Errno::ENOSYS);
        }
        self.fifo
            .as_ref()
            .ok_or(Errno::EOPNOTSUPP)?
            .check_expand_array()
    }

    /// `EVTCHNOP_expand_array`: `frame` (the kernel's handle of the pinned
    /// frame) is the event array's next page, for 1024 more ports. Ports
    /// in use that page covers and that were raised before it existed are
    /// raised again now (Xen's `add_page_to_event_array`); the answer lists
    /// what each of those asks of the kernel (see [`FifoPorts::set_pending`]),
    /// leaving out those that ask nothing.
    ///
    /// On success the table holds `frame` until it hands it back through
    /// [`Table::take_released_frames`]; on error it did not take it.
    ///
    /// # Errors
    ///
    /// Those of [`Table::check_expand_array`]; `ENOMEM` if the answer
    /// cannot be allocated.
    pub fn expand_array(&mut self, frame: u64) -> Result<Vec<(Port, Raised)>, Errno> {
        self.check_expand_array()?;
        let (Some(fifo), Some(mem)) = (&mut self.fifo, &self.fifo_mem) else {
            return Err(Errno::EOPNOTSUPP);
        };
        let start = usize::try_from(fifo.nr_ports()).map_err(|_| Errno::ENOMEM)?;
        let covered = self.chans.get(start..).unwrap_or(&[]);
        let saved = covered
            .iter()
            .take(EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as usize)
            .filter(|c| c.fifo.saved_pending())
            .count();
        let mut raised = Vec::new();
        raised.try_reserve_exact(saved).map_err(|_| Errno::ENOMEM)?;
        for port in fifo.expand_array(frame)? {
            let Some(c) = self
                .chans
                .get_mut(usize::try_from(port).unwrap_or(usize::MAX))
            else {
                break;
            };
            if c.state == State::Free || !c.fifo.saved_pending() {
                continue;
            }
            c.fifo.clear_saved_pending();
            let r = fifo.set_pending(&*mem.0, port, c.vcpu, &mut c.fifo);
            if r != Raised::NONE {
                raised.push((port, r));
            }
        }
        Ok(raised)
    }

    /// `EVTCHNOP_set_priority`: `port`'s later events are queued at
    /// `priority` (0 highest, 15 lowest). An event already linked stays on
    /// its queue, as in Xen.
    ///
    /// # Errors
    ///
    /// In Xen's order: `EINVAL` if `port` is not valid; `ENOSYS` if the
    /// domain uses the 2-level ABI (which has no priorities); `EACCES` if
    /// the port is free (Xen's `evtchn_usable`); `EINVAL` if `priority` is
    /// above 15.
    pub fn set_priority(&mut self, port: Port, priority: u32) -> Result<(), Errno> {
        let fifo = self.fifo.is_some();
        let c = self.chan_mut(port).ok_or(Errno::EINVAL)?;
        if !fifo {
            return Err(Errno::ENOSYS);
        }
        if c.state == State::Free {
            return Err(Errno::EACCES);
        }
        c.fifo.set_priority(priority)
    }

    /// The FIFO operations on this table's ports, if the domain uses the
    /// FIFO ABI (for the 2-level ABI, the kernel uses [`crate::two_level`]
    /// on the guest's `shared_info`).
    #[must_use]
    pub fn fifo_mut(&mut self) -> Option<FifoPorts<'_>> {
        Some(FifoPorts {
            fifo: self.fifo.as_mut()?,
            mem: &*self.fifo_mem.as_ref()?.0,
            chans: &mut self.chans,
        })
    }

    /// Whether the FIFO state holds `frame` (a control block's or an event
    /// array page's): the kernel keeps such a frame in the domain while it
    /// is held.
    #[must_use]
    pub fn holds_frame(&self, frame: u64) -> bool {
        self.fifo.as_ref().is_some_and(|f| f.frames().any(|h| h == frame))
    }

    /// The frames the FIFO state held when it was dropped, for the kernel
    /// to unpin; empty if none. The state is dropped when emptying the table
    /// finishes ([`Table::close_local`] answers `None`), which ends both
    /// `EVTCHNOP_reset` (the domain returns to the 2-level ABI, as Xen's
    /// `evtchn_reset` does) and destruction; take them then. A frame given
    /// twice (two pins) appears twice.
    #[must_use = "the frames are pinned: unpin them"]
    pub fn take_released_frames(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.released_frames)
    }

    /// Xen's `evtchn_fifo_destroy`: back to 2-level, the frames kept for
    /// [`Table::take_released_frames`]. If they cannot be kept (no memory
    /// to add them to frames not yet taken), the state stays, to be dropped
    /// by the next emptying.
    fn drop_fifo(&mut self) {
        let Some(n) = self.fifo.as_ref().map(|f| f.frames().count()) else {
            return;
        };
        if !self.released_frames.is_empty() && self.released_frames.try_reserve(n).is_err() {
            return;
        }
        let Some(fifo) = self.fifo.take() else {
            return;
        };
        let frames = fifo.into_frames();
        if self.released_frames.is_empty() {
            self.released_frames = frames;
        } else {
            self.released_frames.extend(frames);
        }
        for c in &mut self.chans {
            c.fifo.clear_saved_pending();
        }
    }

    // ---- Crate-private helpers. ----

    fn chan(&self, port: Port) -> Option<Channel> {
        self.chans.get(usize::try_from(port).ok()?).copied()
    }

    fn chan_mut(&mut self, port: Port) -> Option<&mut Channel> {
        self.chans.get_mut(usize::try_from(port).ok()?)
    }

    fn has_vcpu(&self, vcpu: u32) -> bool {
        vcpu < self.nr_vcpus
    }

    /// Whether `port` is [`State::Unbound`] for `dom` to bind to.
    fn is_unbound_for(&self, port: Port, dom: DomId) -> bool {
        matches!(
            self.chan(port),
            Some(Channel { state: State::Unbound { remote }, .. }) if remote == dom
        )
    }

    /// The other end of `port` if it is connected to another domain.
    fn remote_end(&self, port: Port) -> Option<(DomId, Port)> {
        match self.chan(port)?.state {
            State::Interdomain {
                remote_dom,
                remote_port,
            } if remote_dom != self.dom => Some((remote_dom, remote_port)),
            _ => None,
        }
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
    /// caller binds it (the growth stays, as in Xen). `EINVAL` when dying.
    fn get_free_port(&mut self) -> Result<Port, Errno> {
        if self.dying {
            return Err(Errno::EINVAL);
        }
        for port in 1..self.port_limit() {
            if port == self.valid_ports() {
                self.grow()?;
            }
            if self.chan(port).is_some_and(|c| c.state == State::Free) && !self.is_busy(port) {
                return Ok(port);
            }
        }
        Err(Errno::ENOSPC)
    }

    /// Xen's `evtchn_is_busy`: under FIFO, the port's word is still LINKED
    /// (the guest has not consumed it since it was closed), so it is not
    /// free for allocation.
    fn is_busy(&self, port: Port) -> bool {
        match (&self.fifo, &self.fifo_mem) {
            (Some(fifo), Some(mem)) => fifo.is_busy(&*mem.0, port),
            _ => false,
        }
    }

    /// Binds free port `port`, at the default FIFO priority (Xen's
    /// `evtchn_port_init`).
    fn bind(&mut self, port: Port, state: State, vcpu: u32) {
        if let Some(c) = self.chan_mut(port) {
            c.state = state;
            c.vcpu = vcpu;
            c.fifo.set_default_priority();
        }
    }

    /// Changes `port`'s state, keeping its vCPU.
    fn set_state(&mut self, port: Port, state: State) {
        if let Some(c) = self.chan_mut(port) {
            c.state = state;
        }
    }

    /// Xen's `evtchn_free`. Under FIFO it clears the port's PENDING itself;
    /// under 2-level the pending bit is the kernel's (see the module's
    /// hazards). The port's last FIFO queue stays, as in Xen.
    fn free(&mut self, port: Port) {
        if let (Some(fifo), Some(mem), Some(c)) = (
            &self.fifo,
            &self.fifo_mem,
            self.chans
                .get_mut(usize::try_from(port).unwrap_or(usize::MAX)),
        ) && c.state != State::Free
        {
            fifo.clear_pending(&*mem.0, port, &mut c.fifo);
        }
        if let Some(c) = self.chan_mut(port) {
            c.state = State::Free;
            c.vcpu = 0;
        }
    }

    /// The other end's half of closing (`closer`, `closer_port`): if `port`
    /// is still connected to exactly that end, it becomes unbound towards
    /// the closer (keeping its vCPU) so it can be bound again, or free if
    /// this table is dying. Anything else is left alone: symmetry
    /// guarantees the match, but it is checked rather than trusted (Xen
    /// `BUG()`s here).
    fn unbind_end(&mut self, port: Port, closer: DomId, closer_port: Port) {
        let connected = State::Interdomain {
            remote_dom: closer,
            remote_port: closer_port,
        };
        if self.chan(port).is_none_or(|c| c.state != connected) {
            return;
        }
        if self.dying {
            self.free(port);
        } else {
            self.set_state(port, State::Unbound { remote: closer });
        }
    }

    /// Frees `port` if it is connected to another domain, without touching
    /// that domain's table: only for a peer whose table is gone or going (a
    /// kernel that can no longer reach a dying peer; the [`crate::Hub`]'s
    /// fallback rather than a panic). The peer's own teardown re-validates
    /// and finds nothing to do for this end.
    pub fn forget_end(&mut self, port: Port) {
        if self.remote_end(port).is_some() {
            self.free(port);
        }
    }

    /// [`Table::forget_end`] for every port connected to `dom`.
    pub fn forget_peer(&mut self, dom: DomId) {
        for port in 1..self.valid_ports() {
            if self.remote_end(port).is_some_and(|(d, _)| d == dom) {
                self.forget_end(port);
            }
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
}

/// The FIFO ABI's operations on one table's ports ([`Table::fifo_mut`]):
/// what Xen's `evtchn_port_*` calls do when the domain uses FIFO. Each
/// takes a port number, acts only on ports in use (Xen's `evtchn_usable`)
/// and uses the port's own priority and FIFO state. Call them under the
/// table's lock, like every other operation on the table.
pub struct FifoPorts<'t> {
    fifo: &'t mut Fifo,
    mem: &'t (dyn FifoMem + Send + Sync),
    chans: &'t mut [Channel],
}

impl FifoPorts<'_> {
    /// Delivers an event ([`Notify`] `n`: `set_pending(n.port, n.vcpu)`),
    /// Xen's `evtchn_port_set_pending` ([`Fifo::set_pending`]). Apply the
    /// answer: mark `mark`'s events pending (its `evtchn_upcall_pending`;
    /// kick it if that was clear) and, if `newly_pending`, wake the vCPUs
    /// polling `port`. Nothing for a free or invalid port.
    pub fn set_pending(&mut self, port: Port, vcpu: u32) -> Raised {
        let Some(c) = chan_mut(self.chans, port) else {
            return Raised::NONE;
        };
        if c.state == State::Free {
            return Raised::NONE;
        }
        self.fifo.set_pending(self.mem, port, vcpu, &mut c.fifo)
    }

    /// `EVTCHNOP_unmask` ([`Fifo::unmask`]): relinks the port on its notify
    /// vCPU if it is pending. Apply the answer as for
    /// [`FifoPorts::set_pending`]. Nothing for a free port (Xen's
    /// `evtchn_usable`).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `port` is not valid.
    pub fn unmask(&mut self, port: Port) -> Result<Raised, Errno> {
        let c = chan_mut(self.chans, port).ok_or(Errno::EINVAL)?;
        if c.state == State::Free {
            return Ok(Raised::NONE);
        }
        Ok(self.fifo.unmask(self.mem, port, c.vcpu, &mut c.fifo))
    }

    /// Whether `port` is pending, for `SCHEDOP_poll` (Xen's
    /// `evtchn_port_poll`): false if free or invalid, or beyond the event
    /// array.
    #[must_use]
    pub fn is_pending(&self, port: Port) -> bool {
        self.in_use(port) && self.fifo.is_pending(self.mem, port)
    }

    /// Whether `port` is masked: true if free or invalid, or beyond the
    /// event array.
    #[must_use]
    pub fn is_masked(&self, port: Port) -> bool {
        !self.in_use(port) || self.fifo.is_masked(self.mem, port)
    }

    /// Whether `port`'s word is LINKED (on a queue), in use or not.
    #[must_use]
    pub fn is_busy(&self, port: Port) -> bool {
        self.fifo.is_busy(self.mem, port)
    }

    /// `port`'s priority, if valid.
    #[must_use]
    pub fn priority(&self, port: Port) -> Option<u32> {
        Some(chan(self.chans, port)?.fifo.priority())
    }

    /// Whether `vcpu` has a control block.
    #[must_use]
    pub fn has_control_block(&self, vcpu: u32) -> bool {
        self.fifo.has_control_block(vcpu)
    }

    /// Ports the event array reaches.
    #[must_use]
    pub fn array_ports(&self) -> Port {
        self.fifo.nr_ports()
    }

    fn in_use(&self, port: Port) -> bool {
        chan(self.chans, port).is_some_and(|c| c.state != State::Free)
    }
}

fn chan(chans: &[Channel], port: Port) -> Option<&Channel> {
    chans.get(usize::try_from(port).ok()?)
}

fn chan_mut(chans: &mut [Channel], port: Port) -> Option<&mut Channel> {
    chans.get_mut(usize::try_from(port).ok()?)
}
