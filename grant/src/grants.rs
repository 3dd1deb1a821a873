//! Every domain's grant state in one value, [`Grants`], for a kernel that
//! keeps it under one lock: a map from domid to [`DomainGrants`], with
//! each operation of Xen's `xen/common/grant_table.c` (`map_grant_ref`,
//! `unmap_common`, `acquire_grant_for_copy`/`release_grant_for_copy`,
//! `gnttab_setup_table`, `gnttab_query_size`, `gnttab_set_version`,
//! `gnttab_get_status_frames`, `gnttab_swap_grant_ref`,
//! `gnttab_grow_table`, `gnttab_map_frame`, `gnttab_release_mappings`)
//! looking up the domains it names and calling the per-domain method or the
//! [`crate::pair`] function, exactly as a kernel with per-domain locks does
//! after locking (a transitive copy's steps included).
//!
//! # What
//!
//! Each operation returns what the op returns in Xen, with Xen's status
//! codes and order of checks, and tells the kernel which p2m entries to
//! add or remove; the crate itself never touches a p2m.
//!
//! Status codes follow Xen's code, not the header's prose: a grant that is
//! not `GTF_permit_access`, not for the caller, or read-only for a
//! writable request is `GNTST_general_error` (Xen's `_set_status_v1`), a
//! full maptrack table `GNTST_no_space`, a mapping's host address that
//! does not match the unmap request `GNTST_general_error`
//! (`replace_grant_p2m_mapping`). A domain that is not here is
//! `GNTST_bad_domain` as a granter and `GNTST_general_error` as a mapper
//! or copier (the kernel's bug: it resolves the caller itself).
//!
//! Where keel differs from Xen, on purpose:
//! - When a granter dies, Xen keeps its mapped pages alive (a zombie
//!   domain) until every mapper unmaps. keel revokes the mappings instead:
//!   [`Grants::remove_domain`] reports each one so the kernel removes it
//!   from the mapper's p2m, and the mapper's later unmap of the handle
//!   succeeds without doing anything.
//! - A failed table growth keeps the frames it did add (Xen frees them);
//!   the table is only ever larger, never inconsistent. In version 2 the
//!   status frame a new table frame needs comes first, so a growth that
//!   fails after it may leave one status frame more than the table needs.
//! - A switch from version 2 to 1 turns a reserved entry that is not
//!   `GTF_permit_access` into an empty one but keeps its `GTF_reading`/
//!   `GTF_writing` if it is in use (the granter rewrote it meanwhile); Xen
//!   drops them.
//! - An active entry keeps what it granted at its first pin: a pin of an
//!   entry already in use follows the record, whatever the granter wrote
//!   since (Xen re-reads a transitive entry, and restarts the copy if it
//!   changed).
//! - Pins a domain holds as the hop of another domain's transitive copy
//!   are counted apart from its own copies' (Xen counts them together), so
//!   neither release can drop the other's pin.
//! - A `GNTTABOP_copy` never needs `ERESTART`: the transitive grant's pin
//!   is taken before its granter's lock is dropped, so nothing it relies
//!   on can change before the hop is pinned.
//!
//! # Invariants
//!
//! Those of [`crate::pair`], with "a domain present here" for "a granter
//! whose death has not completed": [`Grants::remove_domain`] runs a whole
//! death at once, so no domain here is ever dying.
//!
//! # Locking
//!
//! None here: the kernel calls every method under one lock over the whole
//! value. This is the single-lock form of the per-domain API; a kernel
//! that locks per domain keeps [`DomainGrants`] in each domain instead
//! (the crate's `# Locking` notes).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};

use crate::pair;
use crate::{Acquired, CopyGrant, DomainGrants, Error, FrameWords, GntSt};

pub use crate::domain::{INITIAL_NR_GRANT_FRAMES, MAX_GRANT_FRAMES_LIMIT, VersionReply};
pub use crate::pair::{Mapped, Released, Revoked, Unmapped};

/// What [`Grants::remove_domain`] did, and what the kernel must do next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Other domains' mappings of the dead domain's grants: remove each
    /// from its mapper's p2m, and flush, before freeing any of the dead
    /// domain's frames.
    pub revoked: Vec<Revoked>,
    /// The dead domain's own mappings, released, in handle order. Its p2m
    /// is going away with it; nothing else to do.
    pub released: Vec<Released>,
    /// The dead domain's grant-table frames, in order, for the kernel to
    /// unmap from its p2m and free.
    pub table_frames: Vec<u64>,
    /// The dead domain's status frames (version 2), in order, likewise.
    pub status_frames: Vec<u64>,
}

/// The grant state of every domain. See the module documentation.
#[derive(Debug, Default)]
pub struct Grants {
    domains: BTreeMap<DomId, DomainGrants>,
}

impl Grants {
    /// No domains.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `dom` with [`DomainGrants::new`]`(dom, max_frames,
    /// max_maptrack)` (version 1 only).
    pub fn add_domain(
        &mut self,
        dom: DomId,
        max_frames: u32,
        max_maptrack: u32,
    ) -> Result<(), Error> {
        self.add_domain_with_version(dom, max_frames, max_maptrack, 1)
    }

    /// Starts tracking `dom` with [`DomainGrants::with_max_version`].
    pub fn add_domain_with_version(
        &mut self,
        dom: DomId,
        max_frames: u32,
        max_maptrack: u32,
        max_version: u32,
    ) -> Result<(), Error> {
        let d = DomainGrants::with_max_version(dom, max_frames, max_maptrack, max_version)?;
        if self.domains.contains_key(&dom) {
            return Err(Error::DomainExists);
        }
        self.domains.insert(dom, d);
        Ok(())
    }

    /// Whether `dom` is tracked.
    #[must_use]
    pub fn has_domain(&self, dom: DomId) -> bool {
        self.domains.contains_key(&dom)
    }

    /// `dom`'s state, for tests.
    #[cfg(test)]
    pub(crate) fn domain(&self, dom: DomId) -> Option<&DomainGrants> {
        self.domains.get(&dom)
    }

    /// `a`'s and `b`'s state at once (`None` unless both are tracked and
    /// differ), as a kernel holding both their locks would.
    fn two_mut(&mut self, a: DomId, b: DomId) -> Option<(&mut DomainGrants, &mut DomainGrants)> {
        let (lo, hi) = (a.min(b), a.max(b));
        let mut range = self.domains.range_mut(lo..=hi);
        let (&lo_id, lo_dom) = range.next()?;
        let (&hi_id, hi_dom) = range.next_back()?;
        if (lo_id, hi_id) != (lo, hi) {
            return None;
        }
        Some(if a < b {
            (lo_dom, hi_dom)
        } else {
            (hi_dom, lo_dom)
        })
    }

    /// [`DomainGrants::add_table_frame`] of `dom`.
    pub fn add_table_frame(&mut self, dom: DomId, frame: u64) -> Result<u32, Error> {
        self.domains
            .get_mut(&dom)
            .ok_or(Error::UnknownDomain)?
            .add_table_frame(frame)
    }

    /// `GNTTABOP_setup_table`: [`DomainGrants::setup_table`] of `dom`;
    /// `GNTST_bad_domain` for an unknown domain.
    pub fn setup_table(
        &mut self,
        dom: DomId,
        nr_frames: u32,
        alloc: impl FnMut() -> Option<u64>,
    ) -> Result<&[u64], GntSt> {
        self.domains
            .get_mut(&dom)
            .ok_or(GntSt::BadDomain)?
            .setup_table(nr_frames, alloc)
    }

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`:
    /// [`DomainGrants::map_table_frame`] of `dom`; `-ESRCH` for an unknown
    /// domain.
    pub fn map_table_frame(
        &mut self,
        dom: DomId,
        idx: u64,
        alloc: impl FnMut() -> Option<u64>,
    ) -> Result<u64, Errno> {
        self.domains
            .get_mut(&dom)
            .ok_or(Errno::ESRCH)?
            .map_table_frame(idx, alloc)
    }

    /// `XENMEM_add_to_physmap` of status frame `idx`
    /// (`XENMAPIDX_grant_table_status`): [`DomainGrants::map_status_frame`]
    /// of `dom`; `-ESRCH` for an unknown domain.
    pub fn map_status_frame(
        &mut self,
        dom: DomId,
        idx: u64,
        alloc: impl FnMut() -> Option<u64>,
    ) -> Result<u64, Errno> {
        self.domains
            .get_mut(&dom)
            .ok_or(Errno::ESRCH)?
            .map_status_frame(idx, alloc)
    }

    /// All status frames of `dom`, in order.
    #[must_use]
    pub fn status_frames(&self, dom: DomId) -> Option<&[u64]> {
        Some(self.domains.get(&dom)?.status_frames())
    }

    /// `GNTTABOP_get_status_frames`: [`DomainGrants::get_status_frames`] of
    /// `dom`; `GNTST_bad_domain` for an unknown domain.
    pub fn get_status_frames(&self, dom: DomId, nr_frames: u32) -> Result<&[u64], GntSt> {
        self.domains
            .get(&dom)
            .ok_or(GntSt::BadDomain)?
            .get_status_frames(nr_frames)
    }

    /// `GNTTABOP_swap_grant_ref` by `dom`: [`DomainGrants::swap_grant_ref`];
    /// `GNTST_bad_domain` for an unknown domain.
    pub fn swap_grant_ref(
        &mut self,
        dom: DomId,
        ref_a: GrantRef,
        ref_b: GrantRef,
        mem: &mut impl FrameWords,
    ) -> Result<(), GntSt> {
        self.domains
            .get_mut(&dom)
            .ok_or(GntSt::BadDomain)?
            .swap_grant_ref(ref_a, ref_b, mem)
    }

    /// Number of frames in `dom`'s grant table.
    #[must_use]
    pub fn nr_frames(&self, dom: DomId) -> Option<u32> {
        Some(self.domains.get(&dom)?.nr_frames())
    }

    /// The most frames `dom`'s grant table may have.
    #[must_use]
    pub fn max_frames(&self, dom: DomId) -> Option<u32> {
        Some(self.domains.get(&dom)?.max_frames())
    }

    /// Frame `idx` of `dom`'s grant table.
    #[must_use]
    pub fn table_frame(&self, dom: DomId, idx: u32) -> Option<u64> {
        self.domains.get(&dom)?.table_frame(idx)
    }

    /// All frames of `dom`'s grant table, in order.
    #[must_use]
    pub fn table_frames(&self, dom: DomId) -> Option<&[u64]> {
        Some(self.domains.get(&dom)?.table_frames())
    }

    /// `GNTTABOP_query_size`: (`nr_frames`, `max_nr_frames`) of `dom`'s
    /// table; `GNTST_bad_domain` for an unknown domain.
    pub fn query_size(&self, dom: DomId) -> Result<(u32, u32), GntSt> {
        Ok(self.domains.get(&dom).ok_or(GntSt::BadDomain)?.query_size())
    }

    /// `GNTTABOP_set_version` by `dom`: [`DomainGrants::set_version`];
    /// `-ESRCH` (and version 0) for an unknown domain.
    pub fn set_version(
        &mut self,
        dom: DomId,
        version: u32,
        mem: &mut impl FrameWords,
        alloc: impl FnMut() -> Option<u64>,
    ) -> VersionReply {
        match self.domains.get_mut(&dom) {
            Some(d) => d.set_version(version, mem, alloc),
            None => VersionReply {
                result: Err(Errno::ESRCH),
                version: 0,
                freed: Vec::new(),
            },
        }
    }

    /// `GNTTABOP_get_version`: the version of a known domain, `-ESRCH`
    /// otherwise.
    pub fn get_version(&self, dom: DomId) -> Result<u32, Errno> {
        self.domains
            .get(&dom)
            .map(DomainGrants::get_version)
            .ok_or(Errno::ESRCH)
    }

    /// `GNTTABOP_map_grant_ref` of `granter`'s `gref` by `mapper` at its
    /// gfn `host_gfn`: [`pair::map`] (or [`pair::map_own`]), after
    /// `GNTST_bad_domain` for an unknown granter and `general_error` for an
    /// unknown mapper. If the kernel cannot map the returned frame, it
    /// undoes this with [`Grants::unmap`].
    pub fn map(
        &mut self,
        mapper: DomId,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
        host_gfn: u64,
        mem: &mut impl FrameWords,
    ) -> Result<Mapped, GntSt> {
        if !self.has_domain(granter) {
            return Err(GntSt::BadDomain);
        }
        if mapper == granter {
            let d = self.domains.get_mut(&mapper).ok_or(GntSt::BadDomain)?;
            return pair::map_own(d, gref, readonly, host_gfn, mem);
        }
        let (m, g) = self.two_mut(mapper, granter).ok_or(GntSt::GeneralError)?;
        pair::map(m, g, gref, readonly, host_gfn, mem)
    }

    /// Validates `GNTTABOP_unmap_grant_ref` of `mapper`'s `handle` at
    /// `host_gfn` without changing anything, so the kernel can remove the
    /// p2m entry and flush before [`Grants::unmap`]: [`pair::check_unmap`]
    /// with the mapping's granter. `GNTST_bad_handle` if the handle is free
    /// (or out of range, or the mapper unknown), `GNTST_general_error` if
    /// the live mapping is not at `host_gfn`. A revoked mapping matches any
    /// `host_gfn`.
    pub fn check_unmap(
        &self,
        mapper: DomId,
        handle: GrantHandle,
        host_gfn: u64,
    ) -> Result<Unmapped, GntSt> {
        let m = self.domains.get(&mapper).ok_or(GntSt::BadHandle)?;
        match m.check_unmap(handle, host_gfn)? {
            Unmapped::Live(info) if info.granter == mapper => {
                pair::check_unmap_own(m, handle, host_gfn)
            }
            Unmapped::Live(info) => {
                let g = self.domains.get(&info.granter).ok_or(GntSt::GeneralError)?;
                pair::check_unmap(m, g, handle, host_gfn)
            }
            revoked @ Unmapped::Revoked(_) => Ok(revoked),
        }
    }

    /// `GNTTABOP_unmap_grant_ref`: as [`Grants::check_unmap`], then frees
    /// the handle and, for a live mapping, drops its pin ([`pair::unmap`],
    /// [`pair::unmap_own`], [`DomainGrants::unmap_revoked`]). A second
    /// unmap of the handle is `GNTST_bad_handle`.
    pub fn unmap(
        &mut self,
        mapper: DomId,
        handle: GrantHandle,
        host_gfn: u64,
        mem: &mut impl FrameWords,
    ) -> Result<Unmapped, GntSt> {
        match self.check_unmap(mapper, handle, host_gfn)? {
            Unmapped::Revoked(_) => {
                let m = self.domains.get_mut(&mapper).ok_or(GntSt::BadHandle)?;
                m.unmap_revoked(handle).map(Unmapped::Revoked)
            }
            Unmapped::Live(info) if info.granter == mapper => {
                let d = self.domains.get_mut(&mapper).ok_or(GntSt::BadHandle)?;
                pair::unmap_own(d, handle, host_gfn, mem)
            }
            Unmapped::Live(info) => {
                let (m, g) = self
                    .two_mut(mapper, info.granter)
                    .ok_or(GntSt::GeneralError)?;
                pair::unmap(m, g, handle, host_gfn, mem)
            }
        }
    }

    /// Pins `granter`'s `gref` for one `GNTTABOP_copy` by `accessor`:
    /// [`DomainGrants::acquire`], after `GNTST_bad_domain` for an unknown
    /// granter and `general_error` for an unknown accessor; for a
    /// transitive grant, the hop's grant too ([`DomainGrants::acquire_target`]
    /// and [`DomainGrants::finish_transitive`]; a hop naming no domain is
    /// `general_error`). Returns what the copy may touch: a frame of the
    /// granter, or of the hop's domain. Undo with [`Grants::release`] once
    /// the copy is done.
    pub fn acquire(
        &mut self,
        accessor: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<CopyGrant, GntSt> {
        if !self.has_domain(granter) {
            return Err(GntSt::BadDomain);
        }
        if !self.has_domain(accessor) {
            return Err(GntSt::GeneralError);
        }
        let g = self.domains.get_mut(&granter).ok_or(GntSt::BadDomain)?;
        let hop = match g.acquire(accessor, gref, write, mem)? {
            Acquired::Page(grant) => return Ok(grant),
            Acquired::Transitive(hop) => hop,
        };
        let target = match self.domains.get_mut(&hop.domid) {
            Some(t) => t.acquire_target(granter, hop.gref, write, mem),
            None => Err(GntSt::GeneralError),
        };
        self.domains
            .get_mut(&granter)
            .ok_or(GntSt::BadDomain)?
            .finish_transitive(accessor, gref, write, target, mem)
    }

    /// Drops a pin taken by [`Grants::acquire`] with the same arguments:
    /// [`DomainGrants::release`], and the hop's pin for a transitive grant
    /// (if the hop's domain is still here: its removal forgot the pin);
    /// `GNTST_bad_domain` if the granter is gone.
    pub fn release(
        &mut self,
        accessor: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<(), GntSt> {
        let hop = self
            .domains
            .get_mut(&granter)
            .ok_or(GntSt::BadDomain)?
            .release(accessor, gref, write, mem)?;
        if let Some(hop) = hop
            && let Some(t) = self.domains.get_mut(&hop.domid)
        {
            // Taken with the acquire, so it is there.
            let _ = t.release_target(granter, hop.gref, write, mem);
        }
        Ok(())
    }

    /// Whether any entry of `granter`'s table that names `frame` (a gfn of
    /// `granter`) is in use by a mapping or a copy
    /// ([`DomainGrants::is_frame_mapped`]); `false` for an unknown domain.
    #[must_use]
    pub fn is_frame_mapped(&self, granter: DomId, frame: u64) -> bool {
        self.domains
            .get(&granter)
            .is_some_and(|d| d.is_frame_mapped(frame))
    }

    /// Forgets `dom`, which is dying: its vCPUs never run again and its
    /// TLBs are flushed. Runs every step of its death at once:
    /// - As a mapper (or copier, or the hop of a transitive copy): every
    ///   pin it holds on any domain's entries is dropped and the flags
    ///   cleared ([`Removal::released`] lists its mappings); for a pin of a
    ///   transitive grant, so is the pin it stood for on that grant's hop.
    /// - As a granter: every live mapping of its grants by another domain
    ///   is revoked ([`Removal::revoked`]; the kernel removes them from
    ///   the mappers' p2ms), and stays in the mapper's maptrack so a later
    ///   unmap of the handle succeeds. Copies of its grants in progress
    ///   are forgotten: their [`Grants::release`] does nothing; so are
    ///   copies through other domains' transitive grants that it was the
    ///   hop of (their release answers `GNTST_general_error`).
    /// - Its table and status frames are returned for the kernel to free,
    ///   after the revoked mappings are gone from every p2m and TLB.
    pub fn remove_domain(
        &mut self,
        dom: DomId,
        mem: &mut impl FrameWords,
    ) -> Result<Removal, Error> {
        let mut dead = self.domains.remove(&dom).ok_or(Error::UnknownDomain)?;
        dead.start_dying();
        // Step (a) on every other domain, not only `dead.granters()`: with
        // them all at hand this also drops any copy pin `dead` still held.
        // Neither step can fail: `dead` is dying and no longer in the map.
        let mut released = pair::release_own_mappings(&mut dead, mem)?;
        let mut hops = Vec::new();
        for granter in self.domains.values_mut() {
            released.extend(pair::release_mappings(&mut dead, granter, mem)?);
            let id = granter.id;
            hops.extend(
                granter
                    .table
                    .unpin_all(dom, mem)
                    .into_iter()
                    .map(|h| (id, h)),
            );
        }
        // The dead domain's copies through transitive grants: their hops.
        for (via, (hop, write)) in hops {
            if let Some(t) = self.domains.get_mut(&hop.domid) {
                let _ = t.release_target(via, hop.gref, write, mem);
            }
        }
        // Copies through transitive grants whose hop was the dead domain
        // are forgotten, as copies of its own grants are.
        for other in self.domains.values_mut() {
            other.table.forget_hops_to(dom, mem);
        }
        released.sort_by_key(|r| r.handle);
        // Step (b).
        let mut revoked = Vec::new();
        for mapper in dead.mappers() {
            if let Some(m) = self.domains.get_mut(&mapper) {
                revoked.extend(pair::revoke_mappings(&mut dead, m, mem)?);
            }
        }
        Ok(Removal {
            revoked,
            released,
            table_frames: dead.table.frames,
            status_frames: dead.table.status,
        })
    }

    /// (accessor, pins, writable pins) of an active entry, for tests.
    #[cfg(test)]
    pub(crate) fn pins(&self, granter: DomId, gref: GrantRef) -> Option<(DomId, u64, u64)> {
        self.domains.get(&granter)?.pins(gref)
    }
}
