//! Every domain's grant table and maptrack table, and the grant operations
//! on them (Xen's `xen/common/grant_table.c`: `map_grant_ref`,
//! `unmap_common`, `acquire_grant_for_copy`/`release_grant_for_copy`,
//! `gnttab_setup_table`, `gnttab_query_size`, `gnttab_set_version`,
//! `gnttab_grow_table`, `gnttab_release_mappings`).
//!
//! # What
//!
//! [`Grants`] maps each domain to its grant table (as a granter) and its
//! [`Maptrack`] (as a mapper). An *active* entry records a ref that is in
//! use: the one domain using it, the granter's gfn the entry named when it
//! was first pinned (later pins get the same frame, whatever the entry
//! says by then), and four pin counts: read-only and writable, by mappings
//! and by copies. Each operation returns what the op returns in Xen, with
//! Xen's status codes and order of checks, and tells the kernel which p2m
//! entries to add or remove; the crate itself never touches a p2m.
//!
//! Status codes follow Xen's code, not the header's prose: a grant that is
//! not `GTF_permit_access`, not for the caller, or read-only for a
//! writable request is `GNTST_general_error` (Xen's `_set_status_v1`), a
//! full maptrack table `GNTST_no_space`, a mapping's host address that
//! does not match the unmap request `GNTST_general_error`
//! (`replace_grant_p2m_mapping`).
//!
//! Where keel differs from Xen, on purpose:
//! - When a granter dies, Xen keeps its mapped pages alive (a zombie
//!   domain) until every mapper unmaps. keel revokes the mappings instead:
//!   [`Grants::remove_domain`] reports each one so the kernel removes it
//!   from the mapper's p2m, and the mapper's later unmap of the handle
//!   succeeds without doing anything.
//! - A failed table growth keeps the frames it did add (Xen frees them);
//!   the table is only ever larger, never inconsistent.
//!
//! # Invariants
//!
//! - An active entry has at least one pin; all its pins belong to
//!   `accessor`; `Table::frame_users` counts active entries per frame.
//! - Every live maptrack slot holds exactly one map pin on an active entry
//!   of a domain present here, of its kind (read-only or writable); copy
//!   pins are the rest.
//! - A table has at most `max_frames` frames, at most
//!   [`MAX_GRANT_FRAMES_LIMIT`], so every entry has a 32-bit grant ref.
//!
//! # Locking
//!
//! None here: the kernel calls every method under its one grants lock.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DomId};
use keel_hypercall::abi::grant_table::{GTF_READING, GTF_WRITING, GrantHandle, GrantRef};

use crate::entry::{self, PinRequest};
use crate::maptrack::{MapInfo, Maptrack, Slot};
use crate::{Error, FrameWords, GntSt};

/// Frames a grant table has from the start in Xen
/// (`INITIAL_NR_GRANT_FRAMES`); the kernel gives each new domain this many
/// ([`Grants::setup_table`] with it), as guests may use ref 0..511 without
/// asking.
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;

/// The largest `max_frames` accepted: 2^23 frames of 512 entries are 2^32
/// entries, every `grant_ref_t`.
pub const MAX_GRANT_FRAMES_LIMIT: u32 = 1 << 23;

/// The only grant-table version keel implements.
const VERSION: u32 = 1;

/// A successful map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapped {
    /// The handle to unmap with, in the mapper's maptrack table.
    pub handle: GrantHandle,
    /// The granter's gfn named by the entry: the kernel translates it
    /// through the granter's p2m and maps the result at `host_gfn`.
    pub frame: u64,
}

/// What an unmap found, and so what the kernel must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unmapped {
    /// A live mapping: the kernel removes the mapper's p2m entry at
    /// `host_gfn` and flushes before [`Grants::unmap`] drops the pin.
    Live(MapInfo),
    /// A mapping revoked when its granter died: its p2m entry is already
    /// gone and there is nothing to do but report `GNTST_okay`.
    Revoked(MapInfo),
}

/// A mapping of a dying granter's grant, revoked by
/// [`Grants::remove_domain`]: remove it from the mapper's p2m.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Revoked {
    /// The domain that had mapped it.
    pub mapper: DomId,
    /// Its handle in `mapper`'s maptrack (still occupied, as revoked).
    pub handle: GrantHandle,
    /// The grant ref in the dead granter's table.
    pub gref: GrantRef,
    /// The dead granter's gfn it mapped.
    pub frame: u64,
    /// Where `mapper` had mapped it.
    pub host_gfn: u64,
}

/// A mapping held by a dying domain, released by
/// [`Grants::remove_domain`] (its pin dropped and the granter's flags
/// cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Released {
    /// The granting domain (possibly the dying domain itself).
    pub granter: DomId,
    /// The dying domain's handle for it.
    pub handle: GrantHandle,
    /// The grant ref in `granter`'s table.
    pub gref: GrantRef,
    /// The granter's gfn it mapped.
    pub frame: u64,
    /// Where the dying domain had mapped it.
    pub host_gfn: u64,
}

/// What [`Grants::remove_domain`] did, and what the kernel must do next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Other domains' mappings of the dead domain's grants: remove each
    /// from its mapper's p2m, and flush, before freeing any of the dead
    /// domain's frames.
    pub revoked: Vec<Revoked>,
    /// The dead domain's own mappings, released. Its p2m is going away
    /// with it; nothing else to do.
    pub released: Vec<Released>,
    /// The dead domain's grant-table frames, in order, for the kernel to
    /// unmap from its p2m and free.
    pub table_frames: Vec<u64>,
}

/// The answer to `GNTTABOP_set_version`: the hypercall's result, and the
/// version to write back into the argument whatever the result (Xen does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionReply {
    /// `Ok` for 0, else the errno.
    pub result: Result<(), Errno>,
    /// The version in effect.
    pub version: u32,
}

/// What a pin is for; each kind has its own count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PinKind {
    MapRo,
    MapRw,
    CopyRo,
    CopyRw,
}

impl PinKind {
    fn new(mapping: bool, readonly: bool) -> Self {
        match (mapping, readonly) {
            (true, true) => PinKind::MapRo,
            (true, false) => PinKind::MapRw,
            (false, true) => PinKind::CopyRo,
            (false, false) => PinKind::CopyRw,
        }
    }

    fn readonly(self) -> bool {
        matches!(self, PinKind::MapRo | PinKind::CopyRo)
    }

    fn mapping(self) -> bool {
        matches!(self, PinKind::MapRo | PinKind::MapRw)
    }
}

/// A grant entry in use (Xen's `struct active_grant_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Active {
    /// The one domain all pins belong to.
    accessor: DomId,
    /// The granter's gfn, read from the entry at the first pin.
    frame: u32,
    map_ro: u32,
    map_rw: u32,
    copy_ro: u32,
    copy_rw: u32,
}

impl Active {
    fn count(&mut self, kind: PinKind) -> &mut u32 {
        match kind {
            PinKind::MapRo => &mut self.map_ro,
            PinKind::MapRw => &mut self.map_rw,
            PinKind::CopyRo => &mut self.copy_ro,
            PinKind::CopyRw => &mut self.copy_rw,
        }
    }

    fn pins(&self) -> u64 {
        u64::from(self.map_ro)
            + u64::from(self.map_rw)
            + u64::from(self.copy_ro)
            + u64::from(self.copy_rw)
    }

    fn write_pins(&self) -> u64 {
        u64::from(self.map_rw) + u64::from(self.copy_rw)
    }
}

/// One domain's grant table, as a granter.
#[derive(Debug)]
struct Table {
    /// The shared frames, in order (entry `r` in `frames[r / 512]`).
    frames: Vec<u64>,
    max_frames: u32,
    /// Refs in use.
    active: BTreeMap<GrantRef, Active>,
    /// Granter gfn -> number of active entries naming it.
    frame_users: BTreeMap<u32, u32>,
}

impl Table {
    fn nr_frames(&self) -> u32 {
        // At most MAX_GRANT_FRAMES_LIMIT, see `Grants::add_table_frame`.
        self.frames.len() as u32
    }

    /// Drops one pin of `kind` held by `accessor` on `gref` and clears the
    /// flags no pin needs any more. `false` if there is no such pin.
    fn unpin(
        &mut self,
        gref: GrantRef,
        accessor: DomId,
        kind: PinKind,
        mem: &mut impl FrameWords,
    ) -> bool {
        let Some(act) = self.active.get_mut(&gref) else {
            return false;
        };
        if act.accessor != accessor || *act.count(kind) == 0 {
            return false;
        }
        *act.count(kind) -= 1;
        let (pins, write_pins, frame) = (act.pins(), act.write_pins(), act.frame);
        if pins == 0 {
            self.active.remove(&gref);
            self.forget_frame_user(frame);
        }
        if let Some(at) = entry::locate(&self.frames, gref) {
            entry::reduce_status(mem, at, pins, write_pins);
        }
        true
    }

    /// Forgets every pin `accessor` holds, clearing the flags.
    fn unpin_all(&mut self, accessor: DomId, mem: &mut impl FrameWords) {
        let refs: Vec<GrantRef> = self
            .active
            .iter()
            .filter(|(_, act)| act.accessor == accessor)
            .map(|(r, _)| *r)
            .collect();
        for gref in refs {
            if let Some(act) = self.active.remove(&gref) {
                self.forget_frame_user(act.frame);
            }
            if let Some(at) = entry::locate(&self.frames, gref) {
                mem.clear_u16_bits(at.frame, at.offset, GTF_READING | GTF_WRITING);
            }
        }
    }

    fn forget_frame_user(&mut self, frame: u32) {
        if let Some(n) = self.frame_users.get_mut(&frame) {
            *n -= 1;
            if *n == 0 {
                self.frame_users.remove(&frame);
            }
        }
    }
}

/// One domain's grant state.
#[derive(Debug)]
struct Domain {
    table: Table,
    maptrack: Maptrack,
}

/// The grant tables of every domain. See the module documentation.
#[derive(Debug, Default)]
pub struct Grants {
    domains: BTreeMap<DomId, Domain>,
}

impl Grants {
    /// No domains.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `dom`: an empty grant table that may grow to
    /// `max_frames` frames (Xen's `max_grant_frames`, default 64), and a
    /// maptrack table of at most `max_maptrack` mappings (Xen counts
    /// `max_maptrack_frames` of 256 entries; default 1024 frames).
    pub fn add_domain(
        &mut self,
        dom: DomId,
        max_frames: u32,
        max_maptrack: u32,
    ) -> Result<(), Error> {
        if dom >= DOMID_FIRST_RESERVED {
            return Err(Error::ReservedDomid);
        }
        if !(INITIAL_NR_GRANT_FRAMES..=MAX_GRANT_FRAMES_LIMIT).contains(&max_frames) {
            return Err(Error::BadLimits);
        }
        if self.domains.contains_key(&dom) {
            return Err(Error::DomainExists);
        }
        let table = Table {
            frames: Vec::new(),
            max_frames,
            active: BTreeMap::new(),
            frame_users: BTreeMap::new(),
        };
        self.domains.insert(
            dom,
            Domain {
                table,
                maptrack: Maptrack::new(max_maptrack),
            },
        );
        Ok(())
    }

    /// Whether `dom` is tracked.
    #[must_use]
    pub fn has_domain(&self, dom: DomId) -> bool {
        self.domains.contains_key(&dom)
    }

    /// Appends a frame to `dom`'s grant table, returning its index. The
    /// frame must be zeroed (all entries `GTF_invalid`), and the kernel
    /// shares it with `dom` (the guest maps it with
    /// `XENMAPSPACE_grant_table`).
    pub fn add_table_frame(&mut self, dom: DomId, frame: u64) -> Result<u32, Error> {
        let table = &mut self
            .domains
            .get_mut(&dom)
            .ok_or(Error::UnknownDomain)?
            .table;
        let index = table.nr_frames();
        if index >= table.max_frames {
            return Err(Error::TableFull);
        }
        table.frames.push(frame);
        Ok(index)
    }

    /// Grows `dom`'s table to at least `nr_frames`, getting each new
    /// (zeroed) frame from `alloc`.
    fn grow(
        &mut self,
        dom: DomId,
        nr_frames: u64,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), GrowError> {
        let table = &mut self.domains.get_mut(&dom).ok_or(GrowError::NoDomain)?.table;
        if nr_frames > u64::from(table.max_frames) {
            return Err(GrowError::TooLarge);
        }
        while u64::from(table.nr_frames()) < nr_frames {
            table.frames.push(alloc().ok_or(GrowError::NoMemory)?);
        }
        Ok(())
    }

    /// `GNTTABOP_setup_table`: grows `dom`'s table to at least `nr_frames`
    /// (frames from `alloc`) and returns the table's frames, of which the
    /// kernel reports the first `nr_frames` to the guest (as gfns: where
    /// it placed them in `dom`'s p2m). `GNTST_bad_domain` for an unknown
    /// domain, `GNTST_general_error` beyond `max_frames` or when `alloc`
    /// fails.
    pub fn setup_table(
        &mut self,
        dom: DomId,
        nr_frames: u32,
        mut alloc: impl FnMut() -> Option<u64>,
    ) -> Result<&[u64], GntSt> {
        self.grow(dom, u64::from(nr_frames), &mut alloc)
            .map_err(|e| match e {
                GrowError::NoDomain => GntSt::BadDomain,
                GrowError::TooLarge | GrowError::NoMemory => GntSt::GeneralError,
            })?;
        self.table_frames(dom).ok_or(GntSt::BadDomain)
    }

    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`: frame `idx`
    /// of `dom`'s table, growing the table up to it first (frames from
    /// `alloc`). `-EINVAL` beyond `max_frames` (including any `idx` with
    /// `XENMAPIDX_grant_table_status`, since there are no v2 status
    /// frames) or when `alloc` fails, `-ESRCH` for an unknown domain.
    pub fn map_table_frame(
        &mut self,
        dom: DomId,
        idx: u64,
        mut alloc: impl FnMut() -> Option<u64>,
    ) -> Result<u64, Errno> {
        let want = idx.checked_add(1).ok_or(Errno::EINVAL)?;
        self.grow(dom, want, &mut alloc).map_err(|e| match e {
            GrowError::NoDomain => Errno::ESRCH,
            GrowError::TooLarge | GrowError::NoMemory => Errno::EINVAL,
        })?;
        let idx = u32::try_from(idx).map_err(|_| Errno::EINVAL)?;
        self.table_frame(dom, idx).ok_or(Errno::EINVAL)
    }

    /// Number of frames in `dom`'s grant table.
    #[must_use]
    pub fn nr_frames(&self, dom: DomId) -> Option<u32> {
        Some(self.domains.get(&dom)?.table.nr_frames())
    }

    /// The most frames `dom`'s grant table may have.
    #[must_use]
    pub fn max_frames(&self, dom: DomId) -> Option<u32> {
        Some(self.domains.get(&dom)?.table.max_frames)
    }

    /// Frame `idx` of `dom`'s grant table.
    #[must_use]
    pub fn table_frame(&self, dom: DomId, idx: u32) -> Option<u64> {
        let frames = self.table_frames(dom)?;
        frames.get(usize::try_from(idx).ok()?).copied()
    }

    /// All frames of `dom`'s grant table, in order.
    #[must_use]
    pub fn table_frames(&self, dom: DomId) -> Option<&[u64]> {
        Some(&self.domains.get(&dom)?.table.frames)
    }

    /// `GNTTABOP_query_size`: (`nr_frames`, `max_nr_frames`) of `dom`'s
    /// table; `GNTST_bad_domain` for an unknown domain.
    pub fn query_size(&self, dom: DomId) -> Result<(u32, u32), GntSt> {
        let table = &self.domains.get(&dom).ok_or(GntSt::BadDomain)?.table;
        Ok((table.nr_frames(), table.max_frames))
    }

    /// `GNTTABOP_set_version` by `dom`: 1 is accepted (and is already in
    /// effect); 2 is `-ENOSYS`, Xen's answer when v2 is not allowed
    /// ("behave as before set_version was introduced"); anything else,
    /// including 0, `-EINVAL`. The version written back is always 1.
    /// `-ESRCH` (and version 0) for an unknown domain.
    #[must_use]
    pub fn set_version(&self, dom: DomId, version: u32) -> VersionReply {
        if !self.has_domain(dom) {
            return VersionReply {
                result: Err(Errno::ESRCH),
                version: 0,
            };
        }
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

    /// `GNTTABOP_get_version`: 1 for a known domain, `-ESRCH` otherwise.
    pub fn get_version(&self, dom: DomId) -> Result<u32, Errno> {
        if self.has_domain(dom) {
            Ok(VERSION)
        } else {
            Err(Errno::ESRCH)
        }
    }

    /// Pins `gref` of `granter` for `accessor`, setting the entry's flags
    /// on the first pin (and on the first writable one). Returns the
    /// granter's gfn.
    fn pin(
        &mut self,
        accessor: DomId,
        granter: DomId,
        gref: GrantRef,
        kind: PinKind,
        mem: &mut impl FrameWords,
    ) -> Result<u32, GntSt> {
        let table = &mut self
            .domains
            .get_mut(&granter)
            .ok_or(GntSt::BadDomain)?
            .table;
        let at = entry::locate(&table.frames, gref).ok_or(GntSt::BadGntref)?;
        let existing = table.active.get(&gref).copied();
        if let Some(mut act) = existing {
            // Pinned by someone else, or a count about to overflow.
            if act.accessor != accessor || *act.count(kind) == u32::MAX {
                return Err(GntSt::GeneralError);
            }
        }
        let first_write = existing.is_some_and(|act| act.write_pins() == 0) && !kind.readonly();
        if existing.is_none() || first_write {
            let req = PinRequest {
                accessor,
                readonly: kind.readonly(),
                mapping: kind.mapping(),
                already_pinned: existing.is_some(),
            };
            entry::set_status(mem, at, req)?;
        }
        let act = match existing {
            None => {
                // The flags are set: from here on the granter must leave the
                // entry alone, so this is the frame it grants.
                let frame = entry::read(mem, at).frame;
                *table.frame_users.entry(frame).or_insert(0) += 1;
                table.active.entry(gref).or_insert(Active {
                    accessor,
                    frame,
                    map_ro: 0,
                    map_rw: 0,
                    copy_ro: 0,
                    copy_rw: 0,
                })
            }
            Some(act) => {
                // A copy that upgrades to writing re-reads the entry and
                // insists on the frame already pinned (Xen does; a mapping
                // does not re-read).
                if first_write && !kind.mapping() && entry::read(mem, at).frame != act.frame {
                    entry::reduce_status(mem, at, act.pins(), act.write_pins());
                    return Err(GntSt::GeneralError);
                }
                table.active.entry(gref).or_insert(act)
            }
        };
        *act.count(kind) += 1;
        Ok(act.frame)
    }

    /// `GNTTABOP_map_grant_ref` of `granter`'s `gref` by `mapper` at its
    /// gfn `host_gfn`. Checks, in Xen's order: the granter exists
    /// (`bad_domain`), the mapper has a free handle (`no_space`), the ref
    /// is in the table (`bad_gntref`), the entry is in use by no one else,
    /// permits access to `mapper`, is not sub-page, and is writable unless
    /// `readonly` (`general_error`). On success the entry is pinned and
    /// the kernel maps the returned frame at `host_gfn`; if it cannot, it
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
        let maptrack = &self
            .domains
            .get(&mapper)
            .ok_or(GntSt::GeneralError)?
            .maptrack;
        if maptrack.next_free().is_none() {
            return Err(GntSt::NoSpace);
        }
        let kind = PinKind::new(true, readonly);
        let frame = self.pin(mapper, granter, gref, kind, mem)?;
        let info = MapInfo {
            granter,
            gref,
            frame: u64::from(frame),
            host_gfn,
            readonly,
        };
        let handle = self
            .domains
            .get_mut(&mapper)
            .and_then(|d| d.maptrack.insert(Slot::Live(info)));
        match handle {
            Some(handle) => Ok(Mapped {
                handle,
                frame: u64::from(frame),
            }),
            None => {
                // Not reached: the free handle was checked above and pinning
                // does not touch any maptrack. Undo rather than leak a pin.
                if let Some(d) = self.domains.get_mut(&granter) {
                    d.table.unpin(gref, mapper, kind, mem);
                }
                Err(GntSt::NoSpace)
            }
        }
    }

    /// Validates `GNTTABOP_unmap_grant_ref` of `mapper`'s `handle` at
    /// `host_gfn` without changing anything, so the kernel can remove the
    /// p2m entry and flush before [`Grants::unmap`]. `GNTST_bad_handle` if
    /// the handle is free (or out of range), `GNTST_general_error` if the
    /// live mapping is not at `host_gfn`. A revoked mapping matches any
    /// `host_gfn`.
    pub fn check_unmap(
        &self,
        mapper: DomId,
        handle: GrantHandle,
        host_gfn: u64,
    ) -> Result<Unmapped, GntSt> {
        let maptrack = &self.domains.get(&mapper).ok_or(GntSt::BadHandle)?.maptrack;
        match maptrack.get(handle).ok_or(GntSt::BadHandle)? {
            Slot::Revoked(info) => Ok(Unmapped::Revoked(info)),
            Slot::Live(info) if info.host_gfn == host_gfn => Ok(Unmapped::Live(info)),
            Slot::Live(_) => Err(GntSt::GeneralError),
        }
    }

    /// `GNTTABOP_unmap_grant_ref`: as [`Grants::check_unmap`], then frees
    /// the handle and, for a live mapping, drops its pin, clearing
    /// `GTF_writing` with the last writable pin and `GTF_reading` with the
    /// last pin. A second unmap of the handle is `GNTST_bad_handle`.
    pub fn unmap(
        &mut self,
        mapper: DomId,
        handle: GrantHandle,
        host_gfn: u64,
        mem: &mut impl FrameWords,
    ) -> Result<Unmapped, GntSt> {
        let found = self.check_unmap(mapper, handle, host_gfn)?;
        if let Some(d) = self.domains.get_mut(&mapper) {
            d.maptrack.remove(handle);
        }
        if let Unmapped::Live(info) = found {
            let kind = PinKind::new(true, info.readonly);
            if let Some(d) = self.domains.get_mut(&info.granter) {
                d.table.unpin(info.gref, mapper, kind, mem);
            }
        }
        Ok(found)
    }

    /// Pins `granter`'s `gref` for one `GNTTABOP_copy` by `accessor`
    /// (Xen's `acquire_grant_for_copy`), for writing if `write`; returns
    /// the granter's gfn to copy to or from. The same checks and flag
    /// handling as [`Grants::map`], except that sub-page grants are
    /// allowed and there is no handle; `general_error` also for an
    /// accessor not tracked here. Undo with [`Grants::release`] once the
    /// copy is done.
    pub fn acquire(
        &mut self,
        accessor: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<u64, GntSt> {
        if !self.has_domain(granter) {
            return Err(GntSt::BadDomain);
        }
        if !self.has_domain(accessor) {
            return Err(GntSt::GeneralError);
        }
        let frame = self.pin(accessor, granter, gref, PinKind::new(false, !write), mem)?;
        Ok(u64::from(frame))
    }

    /// Drops a pin taken by [`Grants::acquire`] with the same arguments,
    /// clearing flags as [`Grants::unmap`] does. Does nothing, and says
    /// why, if there is no such pin (`bad_domain`: the granter is gone;
    /// `bad_gntref`: no such ref; `general_error`: no such pin).
    pub fn release(
        &mut self,
        accessor: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        mem: &mut impl FrameWords,
    ) -> Result<(), GntSt> {
        let table = &mut self
            .domains
            .get_mut(&granter)
            .ok_or(GntSt::BadDomain)?
            .table;
        if entry::locate(&table.frames, gref).is_none() {
            return Err(GntSt::BadGntref);
        }
        if table.unpin(gref, accessor, PinKind::new(false, !write), mem) {
            Ok(())
        } else {
            Err(GntSt::GeneralError)
        }
    }

    /// Whether any entry of `granter`'s table that names `frame` (a gfn of
    /// `granter`) is in use by a mapping or a copy. The kernel asks before
    /// freeing or reusing one of `granter`'s frames and refuses while this
    /// is true.
    #[must_use]
    pub fn is_frame_mapped(&self, granter: DomId, frame: u64) -> bool {
        let (Some(d), Ok(frame)) = (self.domains.get(&granter), u32::try_from(frame)) else {
            return false;
        };
        d.table.frame_users.contains_key(&frame)
    }

    /// Forgets `dom`, which is dying: its vCPUs never run again and its
    /// TLBs are flushed.
    /// - As a mapper (or copier): every pin it holds on other domains'
    ///   entries is dropped and the flags cleared ([`Removal::released`]
    ///   lists its mappings).
    /// - As a granter: every live mapping of its grants by another domain
    ///   is revoked ([`Removal::revoked`]; the kernel removes them from
    ///   the mappers' p2ms), and stays in the mapper's maptrack so a later
    ///   unmap of the handle succeeds. Copies of its grants in progress
    ///   are forgotten: their [`Grants::release`] does nothing.
    /// - Its table frames are returned for the kernel to free, after the
    ///   revoked mappings are gone from every p2m and TLB.
    pub fn remove_domain(
        &mut self,
        dom: DomId,
        mem: &mut impl FrameWords,
    ) -> Result<Removal, Error> {
        let gone = self.domains.remove(&dom).ok_or(Error::UnknownDomain)?;
        let released = gone
            .maptrack
            .live()
            .map(|(handle, info)| Released {
                granter: info.granter,
                handle,
                gref: info.gref,
                frame: info.frame,
                host_gfn: info.host_gfn,
            })
            .collect();
        let mut revoked = Vec::new();
        for (&id, d) in &mut self.domains {
            d.table.unpin_all(dom, mem);
            d.maptrack.revoke_granter(dom, |handle, info| {
                revoked.push(Revoked {
                    mapper: id,
                    handle,
                    gref: info.gref,
                    frame: info.frame,
                    host_gfn: info.host_gfn,
                });
            });
        }
        Ok(Removal {
            revoked,
            released,
            table_frames: gone.table.frames,
        })
    }

    /// (accessor, pins, writable pins) of an active entry, for tests.
    #[cfg(test)]
    pub(crate) fn pins(&self, granter: DomId, gref: GrantRef) -> Option<(DomId, u64, u64)> {
        let act = self.domains.get(&granter)?.table.active.get(&gref)?;
        Some((act.accessor, act.pins(), act.write_pins()))
    }
}

/// Why a table could not grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrowError {
    NoDomain,
    TooLarge,
    NoMemory,
}
