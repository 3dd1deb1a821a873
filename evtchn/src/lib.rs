//! keel's event channels: Xen's `EVTCHNOP_*` state machine and the 2-level
//! and FIFO delivery rules, portable and host-tested.
//!
//! # What
//!
//! An event channel is a port in one domain's table; a port is free, unbound
//! (waiting for a named peer), interdomain (connected to a port of another
//! domain, or of the same one: loopback), bound to a VIRQ, or an IPI. Each
//! domain's ports live in its own [`Table`], which implements the hypercall
//! sub-ops with Xen's semantics and error codes (`xen/common/event_channel.c`,
//! `public/event_channel.h`); the sub-ops that reach a second domain are
//! functions of both tables ([`table::interdomain`]). An operation that raises
//! an event returns a [`Notify`], which the kernel delivers by the ABI the
//! domain uses ([`Table::abi`]):
//!
//! - 2-level (every domain starts here): the kernel sets the port pending
//!   with [`two_level::set_pending`] over the guest's `shared_info` and
//!   `vcpu_info` (an [`two_level::EventWords`] implementation); the table
//!   does not touch guest memory.
//! - FIFO (from the domain's first `EVTCHNOP_init_control`, if the kernel
//!   offers it with [`Table::enable_fifo`]): the table links the port into
//!   the guest's queues itself, through the kernel's [`FifoMem`] accessor
//!   ([`Table::fifo_mut`], [`FifoPorts::set_pending`]), and answers what is
//!   left to the kernel ([`Raised`]: mark a vCPU's events pending, wake
//!   pollers). The table holds the frames of the guest's control blocks and
//!   event array and hands them back for unpinning when the domain leaves
//!   FIFO ([`Table::take_released_frames`]).
//!
//! Split as Xen splits it: [`table`] is `event_channel.c` (ports, states,
//! permissions), [`two_level`] is `event_2l.c` (the pending/mask bitmaps),
//! [`fifo`] is `event_fifo.c` (the queues), [`virq`] classifies VIRQs and
//! records who handles the global ones. [`hub`] keeps every table in one map
//! behind the one-call-per-op API of a kernel with one lock.
//!
//! # Invariants (each module states its own in full)
//!
//! - Interdomain channels are symmetric: if `(a, p)` is `Interdomain` with
//!   `(b, q)` then `(b, q)` is `Interdomain` with `(a, p)`.
//! - A domain's ABI is 2-level until its first `init_control`, then FIFO
//!   until its table has been emptied (`EVTCHNOP_reset`, destruction).
//! - Nothing panics on guest input, whatever the guest writes into its
//!   event words and control blocks, and no operation loops on what it
//!   reads there; every failure is a Xen [`Errno`].
//!
//! # Locking
//!
//! Tables are per domain: the kernel keeps each domain's [`Table`] under
//! that domain's own lock (Xen's `d->event_lock`), and there is one order:
//! **an operation on two domains locks both, the lower domain id first**
//! (the same domain: one lock). The global-VIRQ handlers
//! ([`GlobalVirqHandlers`]) have their own lock, taken after table locks.
//!
//! - One table: allocating, binding VIRQs and IPIs, `bind_vcpu`, status,
//!   unmask and poll checks, VIRQ delivery, loopback binds, and the FIFO
//!   ABI's `init_control`, `expand_array` and `set_priority`.
//! - Two tables: [`bind_interdomain`] to another domain; [`send_interdomain`]
//!   and [`close_interdomain`] when [`Table::send`] or [`Table::close`]
//!   answers [`Reach::Remote`]; [`close_peer`], a step of `EVTCHNOP_reset`
//!   and of domain destruction, once per peer.
//! - The remote domain is learnt under the local lock, which is dropped to
//!   take both in order; the two-table functions therefore read the port
//!   again and act on what it is then (`EINVAL` if it was freed and rebound
//!   elsewhere meanwhile). The step-by-step protocol per operation is in
//!   [`table`].
//! - A [`Notify`] is delivered before the lock of the domain it names is
//!   dropped (for an interdomain send, the remote's): closing a port clears
//!   its pending bit under that lock, and a delivery that came after would
//!   leave a freed port pending, to fire on whatever reuses it.
//! - The FIFO queues have no lock of their own (Xen locks each queue): the
//!   table's lock serializes every delivery, unmask, close and priority
//!   change of the domain, so a FIFO delivery ([`FifoPorts::set_pending`]) is
//!   made under the lock of the domain it names, like any other. The guest
//!   races on its words regardless; see [`fifo`].
//!
//! [`Hub`] needs none of this inside: it is for a kernel that holds every
//! table under one lock.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod fifo;
pub mod hub;
pub mod table;
pub mod two_level;
pub mod virq;

pub use fifo::{FifoMem, PageMem, Raised};
pub use hub::Hub;
pub use keel_hypercall::abi::Errno;
pub use keel_hypercall::abi::domid::DomId;
pub use keel_hypercall::abi::evtchn::EvtchnPort as Port;
pub use table::{
    Abi, FifoPorts, Notify, PORTS_PER_BUCKET, Reach, State, Status, Table, bind_interdomain,
    close_interdomain, close_peer, send_interdomain,
};
pub use two_level::{ArrayWords, EventWords};
pub use virq::{GlobalVirqHandlers, VirqKind};
