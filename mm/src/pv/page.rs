//! One PV domain's frames and their state (Xen's `struct page_info`: `count_info`,
//! `u.inuse.type_info`, `linear_pt_count`), and the general references.
//!
//! A frame is in a [`DomainFrames`] from the moment keel gives it to the domain
//! ([`DomainFrames::assign`]) until its last general reference goes; then it leaves
//! the map and waits in the freed list for the kernel ([`DomainFrames::pop_freed`]).
//! Being in the map *is* being the domain's: that is the ownership test every rule
//! below starts from.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

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

/// The state of one frame of a PV domain.
///
/// General references (`count`) keep the frame the domain's: the allocation holds
/// one, and so do each pin, each vCPU base pointer, each present entry of a
/// validated table that points at it (but an L2..L4 entry pointing at its own
/// table), and each reference the kernel took (GDT/LDT frames). Type references
/// (`type_count`) come with a general reference each, except the permanent one of
/// a special frame, and are counted as in Xen: pins, base pointers, directory
/// entries, writable L1 entries, descriptor-table uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageInfo {
    pub(crate) count: u32,
    pub(crate) allocated: bool,
    pub(crate) special: bool,
    pub(crate) ty: PageType,
    pub(crate) type_count: u32,
    pub(crate) validated: bool,
    pub(crate) pinned: bool,
    pub(crate) linear_entries: u16,
    pub(crate) linear_uses: u16,
}

impl PageInfo {
    /// General references (Xen's `count_info & PGC_count_mask`).
    pub fn count(&self) -> u32 {
        self.count
    }
    /// The allocation's reference is still held (Xen's `PGC_allocated`): the guest
    /// has not given the frame back.
    pub fn is_allocated(&self) -> bool {
        self.allocated
    }
    /// A keel frame shared with the guest (shared info): writable, forever.
    pub fn is_special(&self) -> bool {
        self.special
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
        self.validated
    }
    pub fn is_pinned(&self) -> bool {
        self.pinned
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
}

/// One PV domain's frames and their page-type state: what the kernel keeps per
/// domain, under that domain's lock (see the module documentation of `pv`).
#[derive(Clone, Debug)]
pub struct DomainFrames {
    pub(crate) frames: BTreeMap<Mfn, PageInfo>,
    pub(crate) policy: Policy,
    /// Frames whose last reference went, in order; the capacity always covers every
    /// frame in `frames` too, so pushing never allocates.
    freed: Vec<Mfn>,
}

impl DomainFrames {
    pub fn new(policy: Policy) -> DomainFrames {
        DomainFrames {
            frames: BTreeMap::new(),
            policy,
            freed: Vec::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Gives `mfn` to the domain (populate_physmap, increase_reservation, the domain
    /// builder): one general reference, the allocation's, and no type. The kernel
    /// zeroes (scrubs) the frame first.
    pub fn assign(&mut self, mfn: Mfn) -> Result<(), PvError> {
        self.insert(mfn, PageType::None, false)
    }

    /// Gives the domain a keel frame it may map but never retype or free (Xen's
    /// `share_xen_page_with_guest`, e.g. shared info): allocated, special, and with
    /// one permanent writable type reference, so it can never become a page table
    /// or descriptor page. Only [`DomainFrames::relinquish`] takes it back.
    pub fn assign_special(&mut self, mfn: Mfn) -> Result<(), PvError> {
        self.insert(mfn, PageType::Writable, true)
    }

    fn insert(&mut self, mfn: Mfn, ty: PageType, special: bool) -> Result<(), PvError> {
        if self.frames.contains_key(&mfn) {
            return Err(PvError::AlreadyAssigned(mfn));
        }
        // Room to free every frame of the domain without allocating (see `freed`).
        self.freed
            .try_reserve(self.frames.len() + 1)
            .map_err(|_| PvError::NoMemory)?;
        let writable = ty == PageType::Writable;
        self.frames.insert(
            mfn,
            PageInfo {
                count: 1,
                allocated: true,
                special,
                ty,
                type_count: u32::from(writable),
                validated: writable,
                pinned: false,
                linear_entries: 0,
                linear_uses: 0,
            },
        );
        Ok(())
    }

    /// Whether `mfn` is the domain's (Xen's `page_get_owner(page) == d` with a
    /// non-zero count).
    pub fn owns(&self, mfn: Mfn) -> bool {
        self.frames.contains_key(&mfn)
    }

    /// The state of one of the domain's frames.
    pub fn page(&self, mfn: Mfn) -> Option<&PageInfo> {
        self.frames.get(&mfn)
    }

    /// Every frame of the domain, in frame order.
    pub fn pages(&self) -> impl Iterator<Item = (Mfn, &PageInfo)> {
        self.frames.iter().map(|(m, p)| (*m, p))
    }

    /// How many frames the domain holds (allocated or still referenced).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// A frame that stopped being the domain's (its last reference went), if any
    /// is left; the kernel calls this until `None` after every operation. It frees
    /// them, but only after the TLBs of every pCPU the domain ran on have been
    /// flushed since (mappings of them may linger there; Xen's
    /// `tlbflush_timestamp` filter serves the same purpose). Never allocates.
    pub fn pop_freed(&mut self) -> Option<Mfn> {
        self.freed.pop()
    }

    pub(crate) fn info(&self, mfn: Mfn) -> Result<&PageInfo, PvError> {
        self.frames
            .get(&mfn)
            .ok_or(PvError::NotDomainFrame(mfn.as_u64()))
    }

    pub(crate) fn info_mut(&mut self, mfn: Mfn) -> Result<&mut PageInfo, PvError> {
        self.frames
            .get_mut(&mfn)
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
        let info = self.frames.get_mut(&mfn).ok_or(PvError::Inconsistent {
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
            if info.allocated || info.type_count != 0 || info.pinned {
                return Err(PvError::Inconsistent {
                    mfn,
                    what: "last reference dropped while the frame is still in use",
                });
            }
            self.frames.remove(&mfn);
            // Never allocates: see `freed`.
            self.freed.push(mfn);
        }
        Ok(())
    }

    /// Drops the allocation's reference (the guest gave the frame back, or the
    /// domain is dying); a no-op if it is already gone.
    pub(crate) fn drop_allocation(&mut self, mfn: Mfn) -> Result<(), PvError> {
        let info = self.info_mut(mfn)?;
        if !info.allocated {
            return Ok(());
        }
        info.allocated = false;
        self.put_page(mfn)
    }
}
