//! One domain's grant state, [`DomainGrants`]: its grant table (as a
//! granter) and its maptrack table (as a mapper), with the operations that
//! involve that domain alone (Xen's `gnttab_setup_table`,
//! `gnttab_query_size`, `gnttab_set_version`, `gnttab_grow_table`,
//! `acquire_grant_for_copy`/`release_grant_for_copy`).
//!
//! # What
//!
//! The kernel keeps one [`DomainGrants`] in each domain, under that
//! domain's lock. Everything here reads or changes that one value: the
//! table's frames and active entries, the maptrack's slots. Operations
//! that involve a second domain's state (a map, an unmap, the steps of a
//! domain's death) are in [`crate::pair`] and take both values.
//!
//! A copy (`GNTTABOP_copy`) pins the granter's entry only: [`acquire`] and
//! [`release`] are methods of the *granter*, with the accessor's domid an
//! argument, so a copy needs no lock but the granter's. The accessor keeps
//! no record of its copy pins; they last one hypercall.
//!
//! A domain is *dying* from [`DomainGrants::start_dying`] on: it is
//! refused as a granter, mapper and for growth, so the lists of domains
//! its death must visit ([`DomainGrants::granters`],
//! [`DomainGrants::mappers`]) can only shrink while the kernel works
//! through them two domains at a time.
//!
//! # Invariants
//!
//! - Those of the table (every active entry has a pin, all its pins are
//!   one domain's, `frame_users` counts active entries per frame, at most
//!   `max_frames` frames) and of the [`crate::maptrack`].
//! - Once dying, never alive again: no new pin on its entries from a map
//!   or a copy, no new slot in its maptrack, no new table frame.
//!
//! # Locking
//!
//! Every method runs under this domain's lock and touches nothing else.
//!
//! [`acquire`]: DomainGrants::acquire
//! [`release`]: DomainGrants::release

use alloc::vec::Vec;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DomId};
use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};

use crate::maptrack::{MapInfo, Maptrack, Slot};
use crate::table::{GrowError, PinKind, Table};
use crate::{Error, FrameWords, GntSt, Unmapped};

/// Frames a grant table has from the start in Xen
/// (`INITIAL_NR_GRANT_FRAMES`); the kernel gives each new domain this many
/// ([`DomainGrants::setup_table`] with it), as guests may use ref 0..511
/// without asking.
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;

/// The largest `max_frames` accepted: 2^23 frames of 512 entries are 2^32
/// entries, every `grant_ref_t`.
pub const MAX_GRANT_FRAMES_LIMIT: u32 = 1 << 23;

/// The only grant-table version keel implements.
const VERSION: u32 = 1;

/// The answer to `GNTTABOP_set_version`: the hypercall's result, and the
/// version to write back into the argument whatever the result (Xen does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionReply {
    /// `Ok` for 0, else the errno.
    pub result: Result<(), Errno>,
    /// The version in effect.
    pub version: u32,
}

/// One domain's grant table and maptrack table. See the module
/// documentation.
#[derive(Debug)]
pub struct DomainGrants {
    pub(crate) id: DomId,
    pub(crate) dying: bool,
    pub(crate) table: Table,
    pub(crate) maptrack: Maptrack,
}

impl DomainGrants {
    /// The grant state of a new domain `dom`: an empty grant table that may
    /// grow to `max_frames` frames (Xen's `max_grant_frames`, default 64),
    /// and a maptrack table of at most `max_maptrack` mappings (Xen counts
    /// `max_maptrack_frames` of 256 entries; default 1024 frames).
    pub fn new(dom: DomId, max_frames: u32, max_maptrack: u32) -> Result<Self, Error> {
        if dom >= DOMID_FIRST_RESERVED {
            return Err(Error::ReservedDomid);
        }
        if !(INITIAL_NR_GRANT_FRAMES..=MAX_GRANT_FRAMES_LIMIT).contains(&max_frames) {
            return Err(Error::BadLimits);
        }
        Ok(DomainGrants {
            id: dom,
            dying: false,
            table: Table::new(max_frames),
            maptrack: Maptrack::new(max_maptrack),
        })
    }

    /// The domain this state belongs to.
    #[must_use]
    pub fn id(&self) -> DomId {
        self.id
    }

    /// Appends a frame to the grant table, returning its index. The frame
    /// must be zeroed (all entries `GTF_invalid`), and the kernel shares it
    /// with the domain (the guest maps it with `XENMAPSPACE_grant_table`).
    pub fn add_table_frame(&mut self, frame: u64) -> Result<u32, Error> {
        if self.dying {
            return Err(Error::Dying);
        }
        self.table.push_frame(frame).ok_or(Error::TableFull)
    }

    /// `GNTTABOP_setup_table`: grows the table to at least `nr_frames`
    /// (frames from `alloc`) and returns the table's frames, of which the
    /// kernel reports the first `nr_frames` to the guest (as gfns: where
    /// it placed them in the domain's p2m). `GNTST_general_error` beyond
    /// `max_frames` or when `alloc` fails (the frames it did give stay);
    /// `GNTST_bad_domain` once dying.
    pub fn setup_table(
        &mut self,
        nr_frames: u32,
        mut alloc: impl FnMut() -> Option<u64>,
    ) -> Result<&[u64], GntSt> {
        if self.dying {
            return Err(GntSt::BadDomain);
        }
        self.table
            .grow(u64::from(nr_frames), &mut alloc)
            .map_err(|_| GntSt::GeneralError)?;
        Ok(&self.table.frames)
    }

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`: frame `idx`
    /// of the table, growing the table up to it first (frames from
    /// `alloc`). `-EINVAL` beyond `max_frames` (including any `idx` with
    /// `XENMAPIDX_grant_table_status`, since there are no v2 status
    /// frames) or when `alloc` fails; `-ESRCH` once dying.
    pub fn map_table_frame(
        &mut self,
        idx: u64,
        mut alloc: impl FnMut() -> Option<u64>,
    ) -> Result<u64, Errno> {
        if self.dying {
            return Err(Errno::ESRCH);
        }
        let want = idx.checked_add(1).ok_or(Errno::EINVAL)?;
        self.table.grow(want, &mut alloc).map_err(|e| match e {
            GrowError::TooLarge | GrowError::NoMemory => Errno::EINVAL,
        })?;
        let idx = u32::try_from(idx).map_err(|_| Errno::EINVAL)?;
        self.table_frame(idx).ok_or(Errno::EINVAL)
    }

    /// Number of frames in the grant table.
    #[must_use]
    pub fn nr_frames(&self) -> u32 {
        self.table.nr_frames()
    }

    /// The most frames the grant table may have.
    #[must_use]
    pub fn max_frames(&self) -> u32 {
        self.table.max_frames
    }

    /// Frame `idx` of the grant table.
    #[must_use]
    pub fn table_frame(&self, idx: u32) -> Option<u64> {
        self.table.frames.get(usize::try_from(idx).ok()?).copied()
    }

    /// All frames of the grant table, in order.
    #[must_use]
    pub fn table_frames(&self) -> &[u64] {
        &self.table.frames
    }

    /// `GNTTABOP_query_size`: (`nr_frames`, `max_nr_frames`).
    #[must_use]
    pub fn query_size(&self) -> (u32, u32) {
        (self.table.nr_frames(), self.table.max_frames)
    }

    /// `GNTTABOP_set_version`: 1 is accepted (and is already in effect); 2
    /// is `-ENOSYS`, Xen's answer when v2 is not allowed ("behave as before
    /// set_version was introduced"); anything else, including 0,
    /// `-EINVAL`. The version written back is always 1.
    #[must_use]
    pub fn set_version(&self, version: u32) -> VersionReply {
        let result = match version {
            VERSION => Ok(()),
            2 => Err(Errno::ENOSYS),
            _ => Err(Errno::EINVAL),
        };
        VersionReply {
            result,
            version: VERSION,
        }
    }

    /// `GNTTABOP_get_version`: always 1.
    #[must_use]
    pub fn get_version(&self) -> u32 {
        VERSION
    }

    /// Whether any entry of this domain's table that names `frame` (a gfn
    /// of this domain) is in use by a mapping or a copy. The kernel asks,
    /// under this domain's lock, before freeing or reusing one of its
    /// frames and refuses while this is true; since a new pin is only taken
    /// under the same lock, the answer holds until it unlocks.
    #[must_use]
    pub fn is_frame_mapped(&self, frame: u64) -> bool {
        self.table.is_frame_mapped(frame)
    }

    /// Pins this domain's `gref` for one `GNTTABOP_copy` by `accessor`
    /// (Xen's `acquire_grant_for_copy`), for writing if `write`; returns
    /// the gfn (of this domain) to copy to or from. `accessor` may be this
    /// domain. Checks, in Xen's order: the ref is in the table
    /// (`bad_gntref`), the entry is in use by no one else, permits access
    /// to `accessor` and is writable if `write` (`general_error`);
    /// sub-page grants are allowed. `GNTST_bad_domain` once dying. Undo
    /// with [`DomainGrants::release`] once the copy is done.
    pub fn acquire(
        &mut self,
        accessor: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<u64, GntSt> {
        if self.dying {
            return Err(GntSt::BadDomain);
        }
        let frame = self
            .table
            .pin(accessor, gref, PinKind::new(false, !write), mem)?;
        Ok(u64::from(frame))
    }

    /// Drops a pin taken by [`DomainGrants::acquire`] with the same
    /// arguments, clearing `GTF_writing` with the last writable pin and
    /// `GTF_reading` with the last pin. Works on a dying domain too (its
    /// death leaves copy pins alone). Does nothing, and says why, if there
    /// is no such pin (`bad_gntref`: no such ref; `general_error`: no such
    /// pin).
    pub fn release(
        &mut self,
        accessor: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<(), GntSt> {
        if crate::entry::locate(&self.table.frames, gref).is_none() {
            return Err(GntSt::BadGntref);
        }
        if self
            .table
            .unpin(gref, accessor, PinKind::new(false, !write), mem)
        {
            Ok(())
        } else {
            Err(GntSt::GeneralError)
        }
    }

    /// The first check of `GNTTABOP_unmap_grant_ref` of this domain's
    /// `handle` at `host_gfn`, with this domain's lock alone: what the
    /// handle holds, so the kernel knows which granter to lock next
    /// ([`crate::pair::check_unmap`] then checks again under both locks).
    /// Changes nothing. `GNTST_bad_handle` if the handle is free (or out of
    /// range), `GNTST_general_error` if the live mapping is not at
    /// `host_gfn`. A revoked mapping matches any `host_gfn`.
    pub fn check_unmap(&self, handle: GrantHandle, host_gfn: u64) -> Result<Unmapped, GntSt> {
        match self.maptrack.get(handle).ok_or(GntSt::BadHandle)? {
            Slot::Revoked(info) => Ok(Unmapped::Revoked(info)),
            Slot::Live(info) if info.host_gfn == host_gfn => Ok(Unmapped::Live(info)),
            Slot::Live(_) => Err(GntSt::GeneralError),
        }
    }

    /// `GNTTABOP_unmap_grant_ref` of a mapping revoked when its granter
    /// died: frees the handle (its p2m entry is already gone; there is no
    /// granter to lock). `GNTST_bad_handle` if the handle is free, and
    /// `GNTST_general_error`, changing nothing, if it holds a live mapping
    /// (that needs the granter: [`crate::pair::unmap`]).
    pub fn unmap_revoked(&mut self, handle: GrantHandle) -> Result<MapInfo, GntSt> {
        match self.maptrack.get(handle).ok_or(GntSt::BadHandle)? {
            Slot::Revoked(info) => {
                self.maptrack.remove(handle);
                Ok(info)
            }
            Slot::Live(_) => Err(GntSt::GeneralError),
        }
    }

    /// Step 0 of the domain's death, under its lock alone: from now on it
    /// is refused as a granter (`bad_domain`), as a mapper
    /// (`general_error`) and for table growth, so its pins and mappings
    /// only go away. The kernel has already taken its vCPUs off every pCPU
    /// for good (outside any hypercall, so it holds no copy pin) and
    /// flushed their translations. Idempotent.
    pub fn start_dying(&mut self) {
        self.dying = true;
    }

    /// Whether [`DomainGrants::start_dying`] was called.
    #[must_use]
    pub fn is_dying(&self) -> bool {
        self.dying
    }

    /// For death step (a): every granter whose grants this domain holds
    /// live mappings of, in ascending domid order, this domain included if
    /// it maps its own grants. Visit each with
    /// [`crate::pair::release_mappings`] (or
    /// [`crate::pair::release_own_mappings`] for itself).
    #[must_use]
    pub fn granters(&self) -> Vec<DomId> {
        self.maptrack.granters()
    }

    /// For death step (b): every *other* domain holding live mappings of
    /// this domain's grants, in ascending domid order. Visit each with
    /// [`crate::pair::revoke_mappings`]. (This domain's mappings of its own
    /// grants are step (a)'s.)
    #[must_use]
    pub fn mappers(&self) -> Vec<DomId> {
        self.table.mappers(self.id)
    }

    /// Whether the domain's death has done its part here: it is dying, it
    /// holds no live mapping, and no domain holds a mapping of its grants.
    /// Copies of its grants still in flight may hold pins; the kernel keeps
    /// the domain's memory until they end (they hold a reference to it).
    #[must_use]
    pub fn death_complete(&self) -> bool {
        self.dying && !self.maptrack.has_live() && !self.table.has_map_pins()
    }

    /// (accessor, pins, writable pins) of an active entry, for tests.
    #[cfg(test)]
    pub(crate) fn pins(&self, gref: GrantRef) -> Option<(DomId, u64, u64)> {
        let act = self.table.active.get(&gref)?;
        Some((act.accessor, act.pins(), act.write_pins()))
    }
}
