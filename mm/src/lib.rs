//! keel's memory management core: typed addresses, the physical memory map, the
//! physical frame allocator, page-table building, and the virtual layout.
//!
//! Everything here is portable and, but for `pv`, runs before the heap exists: no
//! `alloc` outside `pv`, no `asm!`, no `unsafe`. Hardware is reached only through
//! traits (`TableMemory`), and memory the allocator needs is lent to it by the
//! caller. (`pv` allocates through a `core::alloc::Allocator` its user supplies.) The kernel's boot order is: build a `MemoryMap` from firmware, `reserve`
//! the image, boot info and modules, `find_free` + `reserve` room for the
//! `FrameAllocator` bitmap, construct the allocator, then build keel's page tables
//! per `layout` with a `PageTableBuilder`.
//!
//! For domains: `p2m` keeps a domain's guest-physical to machine map as an EPT/NPT
//! tree (the entry format comes from `keel-arch`), `guest_walk` walks a guest's own
//! page tables in any x86 paging mode, and `guest_mem` combines the two into the
//! checked `copy_from_guest` / `copy_to_guest` every hypercall argument goes through.
//!
//! For PV domains: `pv` is Xen's PV MMU, the page types and reference counts that let
//! a paravirtualized guest run on page tables it builds itself and keel validates.

#![cfg_attr(not(test), no_std)]
// `pv` keeps its per-frame state in memory from an allocator the kernel supplies.
// On the pinned nightly `Allocator`, `Global`, `Vec::new_in` and `try_reserve` are
// stable (`allocator_api` was partly stabilized); `Box::try_new_in` is not yet.
#![feature(allocator_ext)]
// No `unsafe` in keel-mm; the tests' counting allocator (`pv::fake::Counting`) is
// the one exception, as implementing `Allocator` needs it.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

extern crate alloc;

pub mod addr;
pub mod frame;
pub mod guest_mem;
pub mod guest_walk;
pub mod layout;
pub mod memmap;
pub mod p2m;
pub mod paging;
pub mod pv;

#[cfg(test)]
mod proptests;

pub use addr::{Gfn, Gpa, Gva, Hpa, Mfn, PAGE_SHIFT, PAGE_SIZE};
pub use frame::{FrameAllocator, FrameError};
pub use guest_mem::{CopyError, FrameAccess, GuestPhys, copy_from_guest, copy_to_guest};
pub use guest_walk::{AccessKind, GuestPhysRead, PagingMode, WalkCtx, WalkFault};
pub use memmap::{MemMapError, MemoryMap, Region, RegionKind};
pub use p2m::{Access, P2m, P2mError, SlptFormat};
pub use paging::{MapError, PageSize, PageTableBuilder, PteFlags, TableMemory};
