//! keel's memory management core: typed addresses, the physical memory map, the
//! physical frame allocator, page-table building, and the virtual layout.
//!
//! Everything here is portable and runs before the heap exists: no `alloc`, no
//! `asm!`, no `unsafe`. Hardware is reached only through traits (`TableMemory`), and
//! memory the allocator needs is lent to it by the caller. The kernel's boot order is:
//! build a `MemoryMap` from firmware, `reserve` the image, boot info and modules,
//! `find_free` + `reserve` room for the `FrameAllocator` bitmap, construct the
//! allocator, then build keel's page tables per `layout` with a `PageTableBuilder`.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod addr;
pub mod frame;
pub mod layout;
pub mod memmap;
pub mod paging;

#[cfg(test)]
mod proptests;

pub use addr::{Gfn, Gpa, Gva, Hpa, Mfn, PAGE_SHIFT, PAGE_SIZE};
pub use frame::{FrameAllocator, FrameError};
pub use memmap::{MemMapError, MemoryMap, Region, RegionKind};
pub use paging::{MapError, PageSize, PageTableBuilder, PteFlags, TableMemory};
