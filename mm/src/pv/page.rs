//! One PV domain's frames and their state (Xen's `struct page_info`: `count_info`,
//! `u.inuse.type_info`, `linear_pt_count`), and the general references.
//!
//! A frame is in a [`DomainFrames`] from the moment keel gives it to the domain
//! ([`DomainFrames::assign`]) until its last general reference goes; then it leaves
//! the domain and waits in the freed list for the kernel ([`DomainFrames::pop_freed`]).
//! Being in the domain's table *is* being the domain's: that is the ownership test
//! every rule below starts from.
//!
//! # Storage
//!
//! Each frame's [`PageInfo`] is packed into 16 bytes. The domain's frames are kept
//! in *chunks*: the 256 slots of 256 consecutive mfns (`mfn >> 8` names the chunk),
//! 4096 bytes, so one chunk is exactly one frame of the allocator behind it. A
//! sorted vector of chunk entries (chunk number, slots in use, the chunk) finds
//! them by binary search. Chunks and the vector come from the allocator `A` the
//! kernel gives [`DomainFrames::new_in`] (the global heap for
//! [`DomainFrames::new`]), never from the global heap otherwise, so the heap holds
//! only the [`DomainFrames`] itself, whatever the domain's size.
//!
//! - Memory: 16 bytes a frame where the domain's frames are dense (256 frames per
//!   4 KiB chunk), plus one index entry (16 bytes with a zero-sized allocator) per
//!   chunk; at worst, one chunk per frame (frames each in their own 1 MiB-aligned
//!   group of machine memory), about as much as the domain's own memory.
//! - Allocation: only [`DomainFrames::assign`] and
//!   [`DomainFrames::assign_special`] allocate (a chunk, and room in the index),
//!   fallibly: an allocator that fails makes them return [`PvError::NoMemory`]
//!   with nothing changed. No operation and no freeing ever allocates.
//! - The freed list is intrusive: a freed frame's slot stays in its chunk, marked
//!   freed, and holds the next freed frame's number, so freeing needs no memory.
//!   [`DomainFrames::pop_freed`] empties the slot, and frees the chunk (and the
//!   index, when it was the last) once no slot of it is in use.
//! - Lookup: O(log chunks) for a frame; iteration in frame order.
//!
//! The allocator contract is `core::alloc::Allocator`'s: blocks stay valid until
//! deallocated, and a clone of the allocator may free what another allocated (each
//! chunk keeps a clone). Errors must be returned, not raised: an allocator that
//! calls `handle_alloc_error` would stop keel.

use alloc::alloc::Global;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Allocator;
use core::fmt;

use crate::addr::Mfn;

use super::{Policy, PvError};

/// A page-table level (SDM Vol. 3A §4.5: PT = L1, PD = L2, PDPT = L3, PML4 = L4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    L1 = 1,
    L2 = 2,
    L3 = 3,
    L4 = 4,
}

impl Level {
    /// The level of the tables an entry of this level points at; `None` for L1,
    /// whose entries map data.
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::L1 => None,
            Level::L2 => Some(Level::L1),
            Level::L3 => Some(Level::L2),
            Level::L4 => Some(Level::L3),
        }
    }

    /// 1..=4.
    pub const fn number(self) -> u8 {
        self as u8
    }
}

/// What a frame is in use as (Xen's `PGT_*` types). A frame's type changes only
/// while its type count is zero; references of one type exclude every other use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PageType {
    /// Never used with a type, or its validation failed (`PGT_none`).
    #[default]
    None,
    /// Mapped writable, or written by keel on the guest's behalf
    /// (`PGT_writable_page`).
    Writable,
    /// A page table of that level (`PGT_l1_page_table`..`PGT_l4_page_table`).
    PageTable(Level),
    /// A GDT or LDT page (`PGT_seg_desc_page`).
    SegDesc,
}

bitflags::bitflags! {
    /// The booleans of a [`PageInfo`], and the state of its slot.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Flags: u8 {
        /// The slot holds a frame of the domain.
        const IN_DOMAIN = 1 << 0;
        /// The slot holds a freed frame waiting for `pop_freed` (then `count` and
        /// `type_count` hold the next one's number).
        const FREED = 1 << 1;
        const ALLOCATED = 1 << 2;
        const SPECIAL = 1 << 3;
        const VALIDATED = 1 << 4;
        const PINNED = 1 << 5;
    }
}

/// The state of one frame of a PV domain.
///
/// General references (`count`) keep the frame the domain's: the allocation holds
/// one, and so do each pin, each vCPU base pointer, each present entry of a
/// validated table that points at it (but an L2..L4 entry pointing at its own
/// table), and each reference the kernel took (GDT/LDT frames). Type references
/// (`type_count`) come with a general reference each, except the permanent one of
/// a special frame, and are counted as in Xen: pins, base pointers, directory
/// entries, writable L1 entries, descriptor-table uses.
///
/// Packed into 16 bytes (the counts at their full widths, the booleans in one
/// byte), as the slot of a chunk (module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct PageInfo {
    pub(crate) count: u32,
    pub(crate) type_count: u32,
    pub(crate) linear_entries: u16,
    pub(crate) linear_uses: u16,
    pub(crate) ty: PageType,
    flags: Flags,
}

const _: () = assert!(core::mem::size_of::<PageType>() == 1);
const _: () = assert!(core::mem::size_of::<PageInfo>() == 16);

impl PageInfo {
    /// An empty slot.
    const VACANT: PageInfo = PageInfo {
        count: 0,
        type_count: 0,
        linear_entries: 0,
        linear_uses: 0,
        ty: PageType::None,
        flags: Flags::empty(),
    };

    /// A slot on the freed list, `next` the frame freed before it.
    fn freed(next: Option<Mfn>) -> PageInfo {
        let raw = next.map_or(u64::MAX, Mfn::as_u64);
        PageInfo {
            count: raw as u32,
            type_count: (raw >> 32) as u32,
            flags: Flags::FREED,
            ..PageInfo::VACANT
        }
    }

    /// The frame after this freed one on the freed list.
    fn freed_next(&self) -> Option<Mfn> {
        Mfn::new(u64::from(self.type_count) << 32 | u64::from(self.count))
    }

    fn in_domain(&self) -> bool {
        self.flags.contains(Flags::IN_DOMAIN)
    }

    fn set(&mut self, flag: Flags, on: bool) {
        self.flags.set(flag, on);
    }

    /// General references (Xen's `count_info & PGC_count_mask`).
    pub fn count(&self) -> u32 {
        self.count
    }
    /// The allocation's reference is still held (Xen's `PGC_allocated`): the guest
    /// has not given the frame back.
    pub fn is_allocated(&self) -> bool {
        self.flags.contains(Flags::ALLOCATED)
    }
    /// A keel frame shared with the guest (shared info): writable, forever.
    pub fn is_special(&self) -> bool {
        self.flags.contains(Flags::SPECIAL)
    }
    pub fn page_type(&self) -> PageType {
        self.ty
    }
    /// References of [`PageInfo::page_type`] (Xen's `type_info & PGT_count_mask`).
    pub fn type_count(&self) -> u32 {
        self.type_count
    }
    /// The contents were checked for the type (`PGT_validated`). A page table is
    /// validated exactly while its type count is non-zero (outside an operation).
    pub fn is_validated(&self) -> bool {
        self.flags.contains(Flags::VALIDATED)
    }
    pub fn is_pinned(&self) -> bool {
        self.flags.contains(Flags::PINNED)
    }
    /// How many entries of this table are linear: point at another table of its own
    /// level (Xen's positive `linear_pt_count`).
    pub fn linear_entries(&self) -> u16 {
        self.linear_entries
    }
    /// How many linear entries of other tables point at this one (Xen's negative
    /// `linear_pt_count`). At most one of the two is non-zero.
    pub fn linear_uses(&self) -> u16 {
        self.linear_uses
    }

    pub(crate) fn set_allocated(&mut self, on: bool) {
        self.set(Flags::ALLOCATED, on);
    }
    pub(crate) fn set_validated(&mut self, on: bool) {
        self.set(Flags::VALIDATED, on);
    }
    pub(crate) fn set_pinned(&mut self, on: bool) {
        self.set(Flags::PINNED, on);
    }
}

impl fmt::Debug for PageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageInfo")
            .field("count", &self.count)
            .field("allocated", &self.is_allocated())
            .field("special", &self.is_special())
            .field("ty", &self.ty)
            .field("type_count", &self.type_count)
            .field("validated", &self.is_validated())
            .field("pinned", &self.is_pinned())
            .field("linear_entries", &self.linear_entries)
            .field("linear_uses", &self.linear_uses)
            .finish()
    }
}

/// log2 of the frames per chunk.
const CHUNK_SHIFT: u32 = 8;
/// Frames per chunk: as many 16-byte slots as fill 4 KiB.
const CHUNK_FRAMES: usize = 1 << CHUNK_SHIFT;

/// The slots of 256 consecutive mfns: one 4 KiB frame.
struct Chunk([PageInfo; CHUNK_FRAMES]);

const _: () = assert!(core::mem::size_of::<Chunk>() == 4096);
const _: () = assert!(core::mem::size_of::<ChunkEntry<Global>>() == 16);

/// One chunk in the index.
struct ChunkEntry<A: Allocator> {
    /// `mfn >> CHUNK_SHIFT` of its frames (an `Mfn` is below 2^40).
    number: u32,
    /// Slots in use: frames of the domain, and freed frames not yet popped.
    used: u16,
    chunk: Box<Chunk, A>,
}

/// Where `mfn` lives: its chunk's number and its slot in it.
fn split(mfn: Mfn) -> (u32, usize) {
    // An `Mfn` is below 2^40, so its chunk number fits 32 bits.
    (
        (mfn.as_u64() >> CHUNK_SHIFT) as u32,
        (mfn.as_u64() as usize) & (CHUNK_FRAMES - 1),
    )
}

/// The frames of one chunk, in order.
fn chunk_frames<A: Allocator>(e: &ChunkEntry<A>) -> impl Iterator<Item = (Mfn, &PageInfo)> {
    let base = u64::from(e.number) << CHUNK_SHIFT;
    e.chunk
        .0
        .iter()
        .enumerate()
        .filter(|(_, p)| p.in_domain())
        .filter_map(move |(i, p)| Some((Mfn::new(base + i as u64)?, p)))
}

/// One PV domain's frames and their page-type state: what the kernel keeps per
/// domain, under that domain's lock (see the module documentation of `pv`).
///
/// The per-frame state lives in memory from `A` (module documentation, "Storage");
/// the global heap holds this structure only.
pub struct DomainFrames<A: Allocator + Clone = Global> {
    /// The chunks holding a slot in use, by chunk number.
    chunks: Vec<ChunkEntry<A>, A>,
    alloc: A,
    pub(crate) policy: Policy,
    /// Frames of the domain.
    len: usize,
    /// The last frame freed and not yet popped; its slot names the one before.
    freed: Option<Mfn>,
}

impl DomainFrames {
    /// A domain with no frames, its state on the global heap.
    pub fn new(policy: Policy) -> DomainFrames {
        DomainFrames::new_in(policy, Global)
    }
}

impl<A: Allocator + Clone> fmt::Debug for DomainFrames<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainFrames")
            .field("policy", &self.policy)
            .field("frames", &self.len)
            .field("chunks", &self.chunks.len())
            .field("freed", &self.freed)
            .finish()
    }
}

impl<A: Allocator + Clone> DomainFrames<A> {
    /// A domain with no frames, whose per-frame state will come from `alloc`
    /// (allocating nothing yet).
    pub fn new_in(policy: Policy, alloc: A) -> DomainFrames<A> {
        DomainFrames {
            chunks: Vec::new_in(alloc.clone()),
            alloc,
            policy,
            len: 0,
            freed: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Gives `mfn` to the domain (populate_physmap, increase_reservation, the domain
    /// builder): one general reference, the allocation's, and no type. The kernel
    /// zeroes (scrubs) the frame first.
    ///
    /// `AlreadyAssigned` if the frame is the domain's, or was freed and not yet
    /// taken back with [`DomainFrames::pop_freed`]; `NoMemory` if the allocator
    /// has no room for its state. Either way nothing changed.
    pub fn assign(&mut self, mfn: Mfn) -> Result<(), PvError> {
        self.insert(mfn, PageType::None, false)
    }

    /// Gives the domain a keel frame it may map but never retype or free (Xen's
    /// `share_xen_page_with_guest`, e.g. shared info): allocated, special, and with
    /// one permanent writable type reference, so it can never become a page table
    /// or descriptor page. Only [`DomainFrames::relinquish`] takes it back. Fails as
    /// [`DomainFrames::assign`].
    pub fn assign_special(&mut self, mfn: Mfn) -> Result<(), PvError> {
        self.insert(mfn, PageType::Writable, true)
    }

    fn insert(&mut self, mfn: Mfn, ty: PageType, special: bool) -> Result<(), PvError> {
        let (number, slot) = split(mfn);
        let at = match self.chunks.binary_search_by_key(&number, |e| e.number) {
            Ok(at) => at,
            Err(at) => {
                // Room in the index first (at least a frame's worth of entries):
                // if the chunk then fails, the room is merely unused.
                if self.chunks.len() == self.chunks.capacity() {
                    let frame = 4096 / core::mem::size_of::<ChunkEntry<A>>();
                    let more = self.chunks.len().max(frame).max(1);
                    self.chunks
                        .try_reserve_exact(more)
                        .map_err(|_| PvError::NoMemory)?;
                }
                let chunk =
                    Box::try_new_in(Chunk([PageInfo::VACANT; CHUNK_FRAMES]), self.alloc.clone())
                        .map_err(|_| PvError::NoMemory)?;
                // Never allocates: room was made above.
                self.chunks.insert(
                    at,
                    ChunkEntry {
                        number,
                        used: 0,
                        chunk,
                    },
                );
                at
            }
        };
        let entry = &mut self.chunks[at];
        let info = &mut entry.chunk.0[slot];
        if *info != PageInfo::VACANT {
            return Err(PvError::AlreadyAssigned(mfn));
        }
        let writable = ty == PageType::Writable;
        *info = PageInfo {
            count: 1,
            type_count: u32::from(writable),
            ty,
            flags: Flags::IN_DOMAIN
                | Flags::ALLOCATED
                | if special {
                    Flags::SPECIAL
                } else {
                    Flags::empty()
                }
                | if writable {
                    Flags::VALIDATED
                } else {
                    Flags::empty()
                },
            ..PageInfo::VACANT
        };
        // At most 256 slots, so `used` never overflows.
        entry.used += 1;
        self.len += 1;
        Ok(())
    }

    /// The slot of `mfn`, whatever its state.
    fn slot(&self, mfn: Mfn) -> Option<&PageInfo> {
        let (number, slot) = split(mfn);
        let at = self
            .chunks
            .binary_search_by_key(&number, |e| e.number)
            .ok()?;
        Some(&self.chunks[at].chunk.0[slot])
    }

    /// The state of `mfn` if it is the domain's, mutably.
    fn page_mut(&mut self, mfn: Mfn) -> Option<&mut PageInfo> {
        let (number, slot) = split(mfn);
        let at = self
            .chunks
            .binary_search_by_key(&number, |e| e.number)
            .ok()?;
        Some(&mut self.chunks[at].chunk.0[slot]).filter(|p| p.in_domain())
    }

    /// Whether `mfn` is the domain's (Xen's `page_get_owner(page) == d` with a
    /// non-zero count).
    pub fn owns(&self, mfn: Mfn) -> bool {
        self.page(mfn).is_some()
    }

    /// The state of one of the domain's frames.
    pub fn page(&self, mfn: Mfn) -> Option<&PageInfo> {
        self.slot(mfn).filter(|p| p.in_domain())
    }

    /// Every frame of the domain, in frame order.
    pub fn pages(&self) -> impl Iterator<Item = (Mfn, &PageInfo)> {
        self.chunks.iter().flat_map(chunk_frames)
    }

    /// The frames of the domain from `from` on, in frame order.
    pub(crate) fn pages_from(&self, from: Mfn) -> impl Iterator<Item = (Mfn, &PageInfo)> {
        let (number, _) = split(from);
        let first = self.chunks.partition_point(|e| e.number < number);
        self.chunks[first..]
            .iter()
            .flat_map(chunk_frames)
            .skip_while(move |(m, _)| *m < from)
    }

    /// How many frames the domain holds (allocated or still referenced).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A frame that stopped being the domain's (its last reference went), if any
    /// is left; the kernel calls this until `None` after every operation. It frees
    /// them, but only after the TLBs of every pCPU the domain ran on have been
    /// flushed since (mappings of them may linger there; Xen's
    /// `tlbflush_timestamp` filter serves the same purpose). Never allocates; frees
    /// the frame's chunk once none of its slots is in use, and the index with the
    /// last chunk. Frames come back last freed first.
    pub fn pop_freed(&mut self) -> Option<Mfn> {
        let mfn = self.freed?;
        let (number, slot) = split(mfn);
        let found = self.chunks.binary_search_by_key(&number, |e| e.number);
        let Ok(at) = found else {
            // The list is broken (no chunk holds its head): stop handing frames
            // back, leaking them rather than freeing one the domain may hold.
            self.freed = None;
            return None;
        };
        let entry = &mut self.chunks[at];
        let info = &mut entry.chunk.0[slot];
        if info.flags != Flags::FREED {
            // As above.
            self.freed = None;
            return None;
        }
        self.freed = info.freed_next();
        *info = PageInfo::VACANT;
        entry.used = entry.used.saturating_sub(1);
        if entry.used == 0 {
            // Frees the chunk.
            self.chunks.remove(at);
            if self.chunks.is_empty() {
                // And the index: a domain with nothing left holds no memory.
                self.chunks = Vec::new_in(self.alloc.clone());
            }
        }
        Some(mfn)
    }

    pub(crate) fn info(&self, mfn: Mfn) -> Result<&PageInfo, PvError> {
        self.page(mfn).ok_or(PvError::NotDomainFrame(mfn.as_u64()))
    }

    pub(crate) fn info_mut(&mut self, mfn: Mfn) -> Result<&mut PageInfo, PvError> {
        self.page_mut(mfn)
            .ok_or(PvError::NotDomainFrame(mfn.as_u64()))
    }

    /// Takes a general reference on one of the domain's frames (Xen's `get_page`).
    pub(crate) fn get_page(&mut self, mfn: Mfn) -> Result<(), PvError> {
        let info = self.info_mut(mfn)?;
        info.count = info.count.checked_add(1).ok_or(PvError::RefOverflow(mfn))?;
        Ok(())
    }

    /// Drops a general reference (Xen's `put_page`); the last one hands the frame
    /// back to keel.
    pub(crate) fn put_page(&mut self, mfn: Mfn) -> Result<(), PvError> {
        let freed = self.freed;
        let info = self.page_mut(mfn).ok_or(PvError::Inconsistent {
            mfn,
            what: "reference dropped on a frame that is not the domain's",
        })?;
        if info.count == 0 {
            return Err(PvError::Inconsistent {
                mfn,
                what: "reference count underflow",
            });
        }
        info.count -= 1;
        if info.count == 0 {
            if info.is_allocated() || info.type_count != 0 || info.is_pinned() {
                return Err(PvError::Inconsistent {
                    mfn,
                    what: "last reference dropped while the frame is still in use",
                });
            }
            // Onto the freed list, in the frame's own slot: never allocates.
            *info = PageInfo::freed(freed);
            self.freed = Some(mfn);
            self.len = self.len.saturating_sub(1);
        }
        Ok(())
    }

    /// Drops the allocation's reference (the guest gave the frame back, or the
    /// domain is dying); a no-op if it is already gone.
    pub(crate) fn drop_allocation(&mut self, mfn: Mfn) -> Result<(), PvError> {
        let info = self.info_mut(mfn)?;
        if !info.is_allocated() {
            return Ok(());
        }
        info.set_allocated(false);
        self.put_page(mfn)
    }

    /// The storage's own invariants, for the tests' audit: chunks in order, none
    /// empty, their counts of slots in use right, the frame count right, and the
    /// freed list exactly the freed slots.
    #[cfg(test)]
    pub(crate) fn check_storage(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let mut frames = 0;
        let mut freed_slots = 0;
        for (i, e) in self.chunks.iter().enumerate() {
            if i > 0 && self.chunks[i - 1].number >= e.number {
                return Err(format!("chunk {:#x} out of order", e.number));
            }
            let inside = e.chunk.0.iter().filter(|p| p.in_domain()).count();
            let waiting = e.chunk.0.iter().filter(|p| p.flags == Flags::FREED).count();
            let odd =
                e.chunk.0.iter().filter(|p| {
                    !p.in_domain() && p.flags != Flags::FREED && **p != PageInfo::VACANT
                });
            if odd.count() != 0 {
                return Err(format!("chunk {:#x} has a slot in no state", e.number));
            }
            if usize::from(e.used) != inside + waiting || e.used == 0 {
                return Err(format!(
                    "chunk {:#x}: {} slots used, {inside} frames and {waiting} freed",
                    e.number, e.used
                ));
            }
            frames += inside;
            freed_slots += waiting;
        }
        if frames != self.len {
            return Err(format!("{} frames counted, {frames} found", self.len));
        }
        let mut listed = 0;
        let mut next = self.freed;
        while let Some(m) = next {
            match self.slot(m) {
                Some(p) if p.flags == Flags::FREED => next = p.freed_next(),
                _ => return Err(format!("freed list names {m}, no freed frame")),
            }
            listed += 1;
            if listed > freed_slots {
                return Err("freed list loops".into());
            }
        }
        if listed != freed_slots {
            return Err(format!(
                "{listed} frames on the freed list, {freed_slots} freed"
            ));
        }
        Ok(())
    }
}
