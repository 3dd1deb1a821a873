//! One domain's grant state, [`DomainGrants`]: its grant table (as a
//! granter) and its maptrack table (as a mapper), with the operations that
//! involve that domain alone (Xen's `gnttab_setup_table`,
//! `gnttab_query_size`, `gnttab_set_version`, `gnttab_get_status_frames`,
//! `gnttab_swap_grant_ref`, `gnttab_grow_table`, `gnttab_map_frame`,
//! `acquire_grant_for_copy`/`release_grant_for_copy`).
//!
//! # What
//!
//! The kernel keeps one [`DomainGrants`] in each domain, under that
//! domain's lock. Everything here reads or changes that one value: the
//! table's frames, status frames and active entries, the maptrack's slots.
//! Operations that involve a second domain's state (a map, an unmap, the
//! steps of a domain's death) are in [`crate::pair`] and take both values.
//!
//! A copy (`GNTTABOP_copy`) pins the granter's entry only: [`acquire`] and
//! [`release`] are methods of the *granter*, with the accessor's domid an
//! argument, so a copy needs no lock but the granter's. The accessor keeps
//! no record of its copy pins; they last one hypercall. A version 2
//! *transitive* grant passes another domain's grant on: [`acquire`] then
//! answers with the [`Hop`] to pin next, which the kernel pins with
//! [`acquire_target`] under the *other* domain's lock alone, and reports
//! back with [`finish_transitive`] (the crate's `# Locking` gives the
//! steps).
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
//!   one domain's, `frame_users` counts active page entries per frame, at
//!   most `max_frames` frames, status frames for every entry in version 2
//!   and none in version 1) and of the [`crate::maptrack`].
//! - The version is 2 only if the domain may have it (`max_version`).
//! - Once dying, never alive again: no new pin on its entries from a map
//!   or a copy, no new slot in its maptrack, no new table frame.
//!
//! # Locking
//!
//! Every method runs under this domain's lock and touches nothing else.
//!
//! [`acquire`]: DomainGrants::acquire
//! [`release`]: DomainGrants::release
//! [`acquire_target`]: DomainGrants::acquire_target
//! [`finish_transitive`]: DomainGrants::finish_transitive

use alloc::vec::Vec;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DomId};
use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};

use crate::maptrack::{MapInfo, Maptrack, Slot};
use crate::table::{GrowError, PinKind, Table, Unpinned};
use crate::{Error, FrameWords, GntSt, Unmapped};

/// Frames a grant table has from the start in Xen
/// (`INITIAL_NR_GRANT_FRAMES`); the kernel gives each new domain this many
/// ([`DomainGrants::setup_table`] with it), as guests may use ref 0..511
/// without asking.
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;

/// The largest `max_frames` accepted: 2^23 frames of 512 entries are 2^32
/// entries, every `grant_ref_t`.
pub const MAX_GRANT_FRAMES_LIMIT: u32 = 1 << 23;

/// A grant-table version: the layout of the shared entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// 8-byte entries with the hypervisor's flags in them; every domain
    /// starts with it.
    V1,
    /// 16-byte entries (64-bit frames, sub-page and transitive grants), the
    /// hypervisor's flags in separate status frames.
    V2,
}

impl Version {
    /// The version's number, as the ABI writes it.
    #[must_use]
    pub fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// The version numbered `n`, if there is one.
    #[must_use]
    pub fn from_number(n: u32) -> Option<Version> {
        match n {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }
}

/// The answer to `GNTTABOP_set_version`: the hypercall's result, the
/// version to write back into the argument whatever the result (Xen does),
/// and frames the kernel gets back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VersionReply {
    /// `Ok` for 0, else the errno.
    pub result: Result<(), Errno>,
    /// The version in effect.
    pub version: u32,
    /// Frames the table no longer uses: version 2's status frames after a
    /// switch to version 1, or those a failed switch to version 2 did
    /// allocate. The kernel removes each from the domain's p2m (where the
    /// guest may have placed it with `XENMAPIDX_grant_table_status`),
    /// flushes the domain's translations on every pCPU, and frees it.
    pub freed: Vec<u64>,
}

/// What a copy may touch of a pinned grant: bytes `[start, start +
/// length)` of the granter's gfn `frame` (the whole page unless it is a
/// version 2 sub-page grant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CopyGrant {
    /// The granter's gfn; the kernel translates it through the p2m of the
    /// domain whose grant was pinned last (the hop's, for a transitive
    /// grant).
    pub frame: u64,
    /// First byte granted.
    pub start: u16,
    /// Bytes granted (the granter's word: `start + length` may pass the
    /// page end; the copy itself never does).
    pub length: u16,
}

impl CopyGrant {
    /// The whole page `frame`.
    #[must_use]
    pub fn page(frame: u64) -> Self {
        CopyGrant {
            frame,
            start: 0,
            length: 4096,
        }
    }

    /// `GNTTABOP_copy`'s bounds check of one end, made once both ends are
    /// pinned (Xen's `gnttab_copy_buf`): `len` bytes at `offset` must lie
    /// within the granted range, else `GNTST_general_error`. (That the copy
    /// stays within its page, `GNTST_bad_copy_arg`, is checked before.)
    pub fn check_range(&self, offset: u16, len: u16) -> Result<(), GntSt> {
        let end = u32::from(offset) + u32::from(len);
        if offset < self.start || end > u32::from(self.start) + u32::from(self.length) {
            return Err(GntSt::GeneralError);
        }
        Ok(())
    }
}

/// The next grant of a transitive grant: `gref` of domain `domid`, to be
/// pinned by the transitive grant's granter. `domid` is the granter's word:
/// it may name no domain (any value, reserved ones included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The domain whose grant is passed on.
    pub domid: DomId,
    /// Its grant ref.
    pub gref: GrantRef,
}

/// What [`DomainGrants::acquire`] pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acquired {
    /// A frame of this domain: the copy may go ahead.
    Page(CopyGrant),
    /// A version 2 transitive grant: this domain's entry is pinned, and
    /// the hop's grant must be pinned too ([`DomainGrants::acquire_target`],
    /// then [`DomainGrants::finish_transitive`]).
    Transitive(Hop),
}

/// One domain's grant table and maptrack table. See the module
/// documentation.
#[derive(Debug)]
pub struct DomainGrants {
    pub(crate) id: DomId,
    pub(crate) dying: bool,
    pub(crate) max_version: Version,
    pub(crate) table: Table,
    pub(crate) maptrack: Maptrack,
}

impl DomainGrants {
    /// The grant state of a new domain `dom` that may use version 1 only
    /// (Xen's `max_grant_version=1`): an empty grant table that may grow to
    /// `max_frames` frames (Xen's `max_grant_frames`, default 64), and a
    /// maptrack table of at most `max_maptrack` mappings (Xen counts
    /// `max_maptrack_frames` of 256 entries; default 1024 frames).
    pub fn new(dom: DomId, max_frames: u32, max_maptrack: u32) -> Result<Self, Error> {
        Self::with_max_version(dom, max_frames, max_maptrack, 1)
    }

    /// [`DomainGrants::new`] for a domain that may switch to versions up
    /// to `max_version` (Xen's `max_grant_version`, whose default is the
    /// highest the hypervisor has, 2). The table starts at version 1.
    /// [`Error::BadVersion`] unless `max_version` is 1 or 2 (Xen's
    /// `grant_table_init` refuses the domain with `-EINVAL`).
    pub fn with_max_version(
        dom: DomId,
        max_frames: u32,
        max_maptrack: u32,
        max_version: u32,
    ) -> Result<Self, Error> {
        if dom >= DOMID_FIRST_RESERVED {
            return Err(Error::ReservedDomid);
        }
        if !(INITIAL_NR_GRANT_FRAMES..=MAX_GRANT_FRAMES_LIMIT).contains(&max_frames) {
            return Err(Error::BadLimits);
        }
        let max_version = Version::from_number(max_version).ok_or(Error::BadVersion)?;
        Ok(DomainGrants {
            id: dom,
            dying: false,
            max_version,
            table: Table::new(max_frames),
            maptrack: Maptrack::new(max_maptrack),
        })
    }

    /// The domain this state belongs to.
    #[must_use]
    pub fn id(&self) -> DomId {
        self.id
    }

    /// Appends a frame to a version 1 grant table, returning its index. The
    /// frame must be zeroed (all entries `GTF_invalid`), and the kernel
    /// shares it with the domain (the guest maps it with
    /// `XENMAPSPACE_grant_table`). [`Error::WrongVersion`] in version 2,
    /// whose growth needs status frames too ([`DomainGrants::setup_table`]).
    pub fn add_table_frame(&mut self, frame: u64) -> Result<u32, Error> {
        if self.dying {
            return Err(Error::Dying);
        }
        if self.table.version != Version::V1 {
            return Err(Error::WrongVersion);
        }
        self.table.push_frame(frame).ok_or(Error::TableFull)
    }

    /// `GNTTABOP_setup_table`: grows the table to at least `nr_frames`
    /// (frames from `alloc`, zeroed; in version 2 also the status frames
    /// they need, one per eight table frames) and returns the table's
    /// frames, of which the kernel reports the first `nr_frames` to the
    /// guest (as gfns: where it placed them in the domain's p2m).
    /// `GNTST_general_error` beyond `max_frames` or when `alloc` fails (the
    /// frames it did give stay); `GNTST_bad_domain` once dying.
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

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`: table frame
    /// `idx`, growing the table up to it first (frames from `alloc`, as for
    /// [`DomainGrants::setup_table`]). `-EINVAL` beyond `max_frames` or
    /// when `alloc` fails; `-ESRCH` once dying. A status frame
    /// (`XENMAPIDX_grant_table_status`) is [`DomainGrants::map_status_frame`].
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

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table` and
    /// `XENMAPIDX_grant_table_status` (the flag taken off `idx`): status
    /// frame `idx` (Xen's `gnttab_get_status_frame_mfn`). In version 2, if
    /// there is no such frame yet, the table grows to the `8 * (idx + 1)`
    /// table frames that have it, if `max_frames` allows (frames from
    /// `alloc`); `-EINVAL` if the frame is still missing. In version 1,
    /// `-EINVAL` (Xen takes the index, flag and all, for a table frame
    /// beyond any table). `-ESRCH` once dying.
    pub fn map_status_frame(
        &mut self,
        idx: u64,
        mut alloc: impl FnMut() -> Option<u64>,
    ) -> Result<u64, Errno> {
        if self.dying {
            return Err(Errno::ESRCH);
        }
        if self.table.version != Version::V2 {
            return Err(Errno::EINVAL);
        }
        if self.status_frame(idx).is_none() {
            let want = idx
                .checked_add(1)
                .and_then(|n| n.checked_mul(8))
                .ok_or(Errno::EINVAL)?;
            if want <= u64::from(self.table.max_frames) {
                // Whatever it manages: the frame is there or it is not.
                let _ = self.table.grow(want, &mut alloc);
            }
        }
        self.status_frame(idx).ok_or(Errno::EINVAL)
    }

    fn status_frame(&self, idx: u64) -> Option<u64> {
        self.table.status.get(usize::try_from(idx).ok()?).copied()
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

    /// All status frames, in order (none in version 1).
    #[must_use]
    pub fn status_frames(&self) -> &[u64] {
        &self.table.status
    }

    /// `GNTTABOP_query_size`: (`nr_frames`, `max_nr_frames`).
    #[must_use]
    pub fn query_size(&self) -> (u32, u32) {
        (self.table.nr_frames(), self.table.max_frames)
    }

    /// `GNTTABOP_set_version` by this domain, for itself (Xen's
    /// `gnttab_set_version`), in Xen's order: `-EINVAL` for a version other
    /// than 1 or 2; `-ENOSYS` for 2 when the domain may only have 1 ("as
    /// before set_version was introduced"); nothing if it is in effect;
    /// `-EBUSY` while an entry past the first `GNTTAB_NR_RESERVED_ENTRIES`
    /// (8) is mapped or being copied; to version 2, one status frame per
    /// eight table frames from `alloc` (zeroed; `-ENOMEM` if it fails);
    /// to version 1, `-ERANGE` if one of the first 8 entries is transitive
    /// or names a frame above 32 bits. On success every entry is cleared
    /// but the first 8, which are converted to the new layout with their
    /// `GTF_reading`/`GTF_writing` (pins on them carry over). The reply
    /// always carries the version in effect, and the frames for the kernel
    /// to free ([`VersionReply::freed`]).
    pub fn set_version(
        &mut self,
        version: u32,
        mem: &mut impl FrameWords,
        mut alloc: impl FnMut() -> Option<u64>,
    ) -> VersionReply {
        let mut freed = Vec::new();
        let result = match Version::from_number(version) {
            None => Err(Errno::EINVAL),
            Some(v) if v > self.max_version => Err(Errno::ENOSYS),
            Some(v) => self.table.set_version(v, mem, &mut alloc, &mut freed),
        };
        VersionReply {
            result,
            version: self.get_version(),
            freed,
        }
    }

    /// `GNTTABOP_get_version`: the version in effect.
    #[must_use]
    pub fn get_version(&self) -> u32 {
        self.table.version.number()
    }

    /// The version in effect.
    #[must_use]
    pub fn version(&self) -> Version {
        self.table.version
    }

    /// `GNTTABOP_get_status_frames`: the first `nr_frames` status frames,
    /// whose gfns (where the kernel placed them in the domain's p2m, or
    /// `INVALID_GFN`) the kernel reports. `GNTST_general_error` if there
    /// are fewer (so in version 1 anything but 0: Xen checks the count
    /// alone).
    pub fn get_status_frames(&self, nr_frames: u32) -> Result<&[u64], GntSt> {
        let n = usize::try_from(nr_frames).map_err(|_| GntSt::GeneralError)?;
        self.table.status.get(..n).ok_or(GntSt::GeneralError)
    }

    /// `GNTTABOP_swap_grant_ref` of this domain's `ref_a` and `ref_b`:
    /// `GNTST_bad_gntref` if either is beyond the table (a first), nothing
    /// for the same ref, `GNTST_eagain` if either is in use, else the two
    /// entries change places (in version 2 with their status words).
    pub fn swap_grant_ref(
        &mut self,
        ref_a: GrantRef,
        ref_b: GrantRef,
        mem: &mut impl FrameWords,
    ) -> Result<(), GntSt> {
        self.table.swap(ref_a, ref_b, mem)
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

    /// Whether `accessor` holds a pin (of a mapping or a copy) on an entry
    /// of this domain's table naming `frame` (a gfn of this domain): Xen's
    /// `grant_map_exists`, for `GNTTABOP_cache_flush` of a frame another
    /// domain granted.
    #[must_use]
    pub fn is_frame_pinned_by(&self, accessor: DomId, frame: u64) -> bool {
        self.table.is_frame_pinned_by(accessor, frame)
    }

    /// Pins this domain's `gref` for one `GNTTABOP_copy` by `accessor`
    /// (Xen's `acquire_grant_for_copy`), for writing if `write`. `accessor`
    /// may be this domain. Checks, in Xen's order: the ref is in the table
    /// (`bad_gntref`), the entry is in use by no one else, permits access
    /// to `accessor` and is writable if `write` (`general_error`). Sub-page
    /// grants give their range ([`CopyGrant`]). A version 2 transitive
    /// grant is pinned here and answers with its [`Hop`]; a transitive
    /// grant whose hop is this very domain is `general_error`. The kernel
    /// then drops this domain's lock, pins the hop's grant with
    /// [`DomainGrants::acquire_target`] under the hop's lock, and retakes
    /// this one for [`DomainGrants::finish_transitive`].
    /// `GNTST_bad_domain` once dying. Undo with [`DomainGrants::release`]
    /// once the copy is done.
    pub fn acquire(
        &mut self,
        accessor: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<Acquired, GntSt> {
        if self.dying {
            return Err(GntSt::BadDomain);
        }
        let kind = PinKind::new(false, !write);
        self.table.pin(self.id, accessor, gref, kind, true, mem)
    }

    /// The second hop of a transitive copy: pins this domain's `gref` for
    /// `intermediate`, the domain whose transitive grant names it, as
    /// [`DomainGrants::acquire`] would for `intermediate`, but a transitive
    /// grant here is `GNTST_general_error` (Xen allows one level, which
    /// also ends every loop). The pin is counted apart from
    /// `intermediate`'s own copies. Undo with
    /// [`DomainGrants::release_target`].
    pub fn acquire_target(
        &mut self,
        intermediate: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<CopyGrant, GntSt> {
        if self.dying {
            return Err(GntSt::BadDomain);
        }
        let kind = PinKind::hop(!write);
        match self
            .table
            .pin(self.id, intermediate, gref, kind, false, mem)?
        {
            Acquired::Page(grant) => Ok(grant),
            Acquired::Transitive(_) => {
                // Not reached: a pin without transitivity never makes one.
                self.table.unpin(gref, intermediate, kind, mem);
                Err(GntSt::GeneralError)
            }
        }
    }

    /// The last step of a transitive copy's acquire, under this domain's
    /// lock again: `target` is what pinning the hop gave
    /// ([`DomainGrants::acquire_target`]), or `GNTST_general_error` if the
    /// hop names no domain. On success that is what the copy may touch (in
    /// the hop's domain); on failure the pin [`DomainGrants::acquire`] took
    /// here is dropped and the failure returned (a revoked or ended target
    /// answers as the target did). Works on a dying domain too.
    pub fn finish_transitive(
        &mut self,
        accessor: DomId,
        gref: GrantRef,
        write: bool,
        target: Result<CopyGrant, GntSt>,
        mem: &mut impl FrameWords,
    ) -> Result<CopyGrant, GntSt> {
        if target.is_err() {
            // The hop was never pinned: nothing to pass on.
            self.table
                .unpin(gref, accessor, PinKind::new(false, !write), mem);
        }
        target
    }

    /// Drops a pin taken by [`DomainGrants::acquire`] with the same
    /// arguments, clearing `GTF_writing` with the last writable pin and
    /// `GTF_reading` with the last pin. For a transitive grant, returns its
    /// [`Hop`]: the kernel then drops the hop's pin under the hop's lock,
    /// [`DomainGrants::release_target`]`(this domain, hop.gref, write)`.
    /// Works on a dying domain too (its death leaves copy pins alone). Does
    /// nothing, and says why, if there is no such pin (`bad_gntref`: no
    /// such ref; `general_error`: no such pin).
    pub fn release(
        &mut self,
        accessor: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<Option<Hop>, GntSt> {
        if self.table.slot(gref).is_none() {
            return Err(GntSt::BadGntref);
        }
        match self
            .table
            .unpin(gref, accessor, PinKind::new(false, !write), mem)
        {
            Unpinned::NoSuchPin => Err(GntSt::GeneralError),
            Unpinned::Done => Ok(None),
            Unpinned::Then(hop) => Ok(Some(hop)),
        }
    }

    /// Drops a pin taken by [`DomainGrants::acquire_target`] with the same
    /// arguments, as [`DomainGrants::release`] does a copy's. Works on a
    /// dying domain too.
    pub fn release_target(
        &mut self,
        intermediate: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<(), GntSt> {
        if self.table.slot(gref).is_none() {
            return Err(GntSt::BadGntref);
        }
        match self
            .table
            .unpin(gref, intermediate, PinKind::hop(!write), mem)
        {
            Unpinned::NoSuchPin => Err(GntSt::GeneralError),
            // A hop is never transitive.
            Unpinned::Done | Unpinned::Then(_) => Ok(()),
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
    /// Copies still in flight may hold pins on its grants, and pins it took
    /// as the hop of other domains' transitive copies; the kernel keeps the
    /// domain (and this state) until they end (they hold a reference to
    /// it), then frees [`DomainGrants::table_frames`] and
    /// [`DomainGrants::status_frames`].
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
