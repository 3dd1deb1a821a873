//! The devices a guest sees that keel emulates, and the bus that finds them.
//!
//! # What
//!
//! One module per emulated device (as Xen keeps `hvm/vlapic.c`, `vpic.c`, `i8254.c`,
//! `rtc.c` apart): today [`vlapic`], the local APIC a PVH vCPU sees. Beside them,
//! [`bus`]: disjoint port or MMIO ranges mapped to devices, so an exit handler finds
//! the one device behind an address with a single map lookup (Xen's
//! `register_io_handler`, Firecracker's `vstate/bus.rs`).
//!
//! # Why a crate of its own
//!
//! A device model is the register file and rules a guest reaches through port I/O and
//! MMIO exits: pure logic over the values the exit handler passes in, with no
//! hardware of its own. So it lives outside `arch` (which keeps only what touches the
//! machine) and is tested on the host (`cargo test -p keel-devices`).
//!
//! # Invariants
//!
//! No `unsafe` (forbidden), no `asm!`, no clocks read: a model that needs the time
//! takes the caller's monotonic ns as an argument. No input a guest controls (an
//! offset, a size, a value) panics.
//!
//! # Locking
//!
//! None here: a bus and its devices belong to a domain (a local APIC to one of its
//! vCPUs) and are used under that owner's lock. Each module says what it expects.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bus;
pub mod vlapic;
