//! keel's event channels: Xen's `EVTCHNOP_*` state machine and the 2-level
//! delivery rules, portable and host-tested.
//!
//! # What
//!
//! An event channel is a port in one domain's table; a port is free, unbound
//! (waiting for a named peer), interdomain (connected to a port of another
//! domain, or of the same one: loopback), bound to a VIRQ, or an IPI. The
//! [`Hub`] holds every domain's table and implements the hypercall sub-ops
//! with Xen's semantics and error codes (`xen/common/event_channel.c`,
//! `public/event_channel.h`). It never touches guest memory: an operation
//! that raises an event returns a [`Notify`], and the kernel sets the port
//! pending with [`two_level::set_pending`] over the guest's `shared_info`
//! and `vcpu_info` (an [`two_level::EventWords`] implementation).
//!
//! Split as Xen splits it: [`hub`] is `event_channel.c` (ports, states,
//! permissions), [`two_level`] is `event_2l.c` (the pending/mask bitmaps),
//! [`virq`] classifies VIRQs.
//!
//! # Invariants (each module states its own in full)
//!
//! - Interdomain channels are symmetric: if `(a, p)` is `Interdomain` with
//!   `(b, q)` then `(b, q)` is `Interdomain` with `(a, p)`.
//! - Nothing panics on guest input; every failure is a Xen [`Errno`].
//!
//! # Locking
//!
//! None inside: the kernel holds the one [`Hub`] under one lock, so an
//! interdomain operation sees both tables at once (Xen takes two domains'
//! `event_lock`s in domain order instead).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod hub;
pub mod two_level;
pub mod virq;

pub use hub::{Hub, Notify, PORTS_PER_BUCKET, State, Status};
pub use keel_hypercall::abi::Errno;
pub use keel_hypercall::abi::domid::DomId;
pub use keel_hypercall::abi::evtchn::EvtchnPort as Port;
pub use two_level::{ArrayWords, EventWords};
pub use virq::VirqKind;
