//! keel's Xen hypercall layer: the guest ABI ([`abi`]) and the dispatcher
//! ([`dispatch`](mod@dispatch)).
//!
//! Portable and host-tested: no `asm!`, no `unsafe`, no allocation. The
//! kernel collects a hypercall's registers into a [`HypercallArgs`], calls
//! [`dispatch()`] with something implementing [`Domain`], and applies the
//! returned [`Outcome`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod dispatch;

pub use abi::Errno;
pub use dispatch::{
    Action, Domain, GuestWidth, HypercallArgs, Outcome, ShutdownReason, VersionInfo, dispatch,
};
