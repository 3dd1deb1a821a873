//! One domain's grant table as a *granter*: its shared frames, its status
//! frames (version 2) and its *active* entries (Xen's `struct grant_table`
//! and its `struct active_grant_entry` array).
//!
//! # What
//!
//! An active entry records a ref that is in use: the one domain using it,
//! what the entry granted when it was first pinned (later pins get the
//! same, whatever the entry says by then), and six pin counts: read-only
//! and writable, by mappings, by copies, and as the hop of another
//! domain's transitive copy. What it granted is a *page*
//! (the granter's gfn and the byte range a copy may touch: the whole page,
//! or a version 2 sub-page range) or, for a version 2 transitive grant, a
//! *hop*: another domain's grant ref. Every pin of a hop holds one pin on
//! that other grant, taken and dropped by the kernel under that domain's
//! lock (see the crate's `# Locking`). Pinning sets the hypervisor's flags
//! in the entry's status word ([`crate::entry`]); dropping the last pin of
//! a kind clears them.
//!
//! The layout follows the version: 512 entries of 8 bytes per table frame
//! with the flags in the entries (version 1), or 256 entries of 16 bytes
//! per table frame and the flags in status frames of 2048 words, one
//! status frame per eight table frames (version 2). A version change
//! ([`Table::set_version`]) is refused while any entry past the first
//! [`GNTTAB_NR_RESERVED_ENTRIES`] is in use, clears the table, and carries
//! those first entries (and their flags) over into the new layout.
//!
//! # Invariants
//!
//! - An active entry has at least one pin, and all its pins belong to its
//!   `accessor` (Xen's `act->domid`). A hop's entry has copy pins only.
//! - `frame_users[f]` is the number of active *page* entries whose frame
//!   is `f`, and is never 0.
//! - `frames.len() <= max_frames <= MAX_GRANT_FRAMES_LIMIT`, so every entry
//!   has a 32-bit grant ref.
//! - Version 1 has no status frames; version 2 has at least one per eight
//!   table frames (so every entry has its status word), and at most one
//!   more than that (a growth that failed half way keeps what it got).
//! - Only refs below [`GNTTAB_NR_RESERVED_ENTRIES`] can be active across a
//!   version change, and those exist in both layouts (every non-empty
//!   table has at least 256 entries).
//!
//! # Locking
//!
//! Part of one domain's [`DomainGrants`](crate::DomainGrants), so under that
//! domain's lock. The only other writer of the shared entries and status
//! words is the granting guest itself, which is what [`crate::entry`]'s
//! protocol is for.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{
    GNTTAB_NR_RESERVED_ENTRIES, GRANT_ENTRIES_PER_FRAME_V1, GRANT_ENTRIES_PER_FRAME_V2,
    GRANT_STATUS_PER_FRAME, GTF_PERMIT_ACCESS, GTF_READING, GTF_SUB_PAGE, GTF_TRANSITIVE,
    GTF_TYPE_MASK, GTF_WRITING, GrantEntryHeader, GrantEntryV1, GrantEntryV2FullPage, GrantRef,
};

use crate::domain::{Acquired, CopyGrant, Hop, Version};
use crate::entry::{self, PinRequest, Slot};
use crate::{FrameWords, GntSt};

/// Bytes in a frame.
const PAGE_SIZE: usize = 4096;

/// Version 2 table frames served by one status frame.
const FRAMES_PER_STATUS_FRAME: usize =
    (GRANT_STATUS_PER_FRAME / GRANT_ENTRIES_PER_FRAME_V2) as usize;

/// What a pin is for; each kind has its own count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PinKind {
    MapRo,
    MapRw,
    /// A copy by the accessor itself.
    CopyRo,
    CopyRw,
    /// The hop of another domain's transitive copy, held by the accessor
    /// (the transitive grant's granter): counted apart, so that neither
    /// can be dropped for the other.
    HopRo,
    HopRw,
}

impl PinKind {
    pub(crate) fn new(mapping: bool, readonly: bool) -> Self {
        match (mapping, readonly) {
            (true, true) => PinKind::MapRo,
            (true, false) => PinKind::MapRw,
            (false, true) => PinKind::CopyRo,
            (false, false) => PinKind::CopyRw,
        }
    }

    pub(crate) fn hop(readonly: bool) -> Self {
        if readonly {
            PinKind::HopRo
        } else {
            PinKind::HopRw
        }
    }

    fn readonly(self) -> bool {
        matches!(self, PinKind::MapRo | PinKind::CopyRo | PinKind::HopRo)
    }

    fn mapping(self) -> bool {
        matches!(self, PinKind::MapRo | PinKind::MapRw)
    }
}

/// What an active entry grants, fixed at its first pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A frame of the granter. A `sub_page` grant (version 2) is never
    /// mapped, even once copy-pinned.
    Page { grant: CopyGrant, sub_page: bool },
    /// A version 2 transitive grant: each pin here holds one pin, taken by
    /// this domain, on the hop's grant.
    Transitive(Hop),
}

impl Target {
    /// The granter's gfn, for a page.
    pub(crate) fn frame(self) -> Option<u64> {
        match self {
            Target::Page { grant, .. } => Some(grant.frame),
            Target::Transitive(_) => None,
        }
    }

    /// Whether the entry must not be mapped (Xen's `act->is_sub_page`,
    /// which it also sets for transitive grants).
    fn blocks_maps(self) -> bool {
        match self {
            Target::Page { sub_page, .. } => sub_page,
            Target::Transitive(_) => true,
        }
    }
}

/// A grant entry in use (Xen's `struct active_grant_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Active {
    /// The one domain all pins belong to.
    pub(crate) accessor: DomId,
    /// What the entry granted at the first pin.
    pub(crate) target: Target,
    pub(crate) map_ro: u32,
    pub(crate) map_rw: u32,
    pub(crate) copy_ro: u32,
    pub(crate) copy_rw: u32,
    pub(crate) hop_ro: u32,
    pub(crate) hop_rw: u32,
}

impl Active {
    fn count(&mut self, kind: PinKind) -> &mut u32 {
        match kind {
            PinKind::MapRo => &mut self.map_ro,
            PinKind::MapRw => &mut self.map_rw,
            PinKind::CopyRo => &mut self.copy_ro,
            PinKind::CopyRw => &mut self.copy_rw,
            PinKind::HopRo => &mut self.hop_ro,
            PinKind::HopRw => &mut self.hop_rw,
        }
    }

    pub(crate) fn pins(&self) -> u64 {
        u64::from(self.map_ro)
            + u64::from(self.map_rw)
            + u64::from(self.copy_ro)
            + u64::from(self.copy_rw)
            + u64::from(self.hop_ro)
            + u64::from(self.hop_rw)
    }

    pub(crate) fn write_pins(&self) -> u64 {
        u64::from(self.map_rw) + u64::from(self.copy_rw) + u64::from(self.hop_rw)
    }

    fn map_pins(&self) -> u64 {
        u64::from(self.map_ro) + u64::from(self.map_rw)
    }
}

/// What dropping a pin found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unpinned {
    /// There was no such pin; nothing changed.
    NoSuchPin,
    /// Dropped.
    Done,
    /// Dropped a pin of a transitive grant: its pin on the hop is the
    /// caller's to drop next.
    Then(Hop),
}

/// Why a table could not grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrowError {
    TooLarge,
    NoMemory,
}

/// One domain's grant table, as a granter.
#[derive(Debug)]
pub(crate) struct Table {
    /// The layout of the shared frames.
    pub(crate) version: Version,
    /// The shared frames, in order.
    pub(crate) frames: Vec<u64>,
    /// The status frames (version 2 only), in order.
    pub(crate) status: Vec<u64>,
    pub(crate) max_frames: u32,
    /// Refs in use.
    pub(crate) active: BTreeMap<GrantRef, Active>,
    /// Granter gfn -> number of active page entries naming it.
    pub(crate) frame_users: BTreeMap<u64, u32>,
}

/// Status frames needed for `nr_frames` version 2 table frames.
fn status_needed(nr_frames: usize) -> usize {
    nr_frames.div_ceil(FRAMES_PER_STATUS_FRAME)
}

impl Table {
    /// An empty version 1 table that may grow to `max_frames` (checked by
    /// the caller against `MAX_GRANT_FRAMES_LIMIT`).
    pub(crate) fn new(max_frames: u32) -> Self {
        Table {
            version: Version::V1,
            frames: Vec::new(),
            status: Vec::new(),
            max_frames,
            active: BTreeMap::new(),
            frame_users: BTreeMap::new(),
        }
    }

    pub(crate) fn nr_frames(&self) -> u32 {
        // At most `max_frames`, a u32: `push_frame` and `grow` stop there.
        self.frames.len() as u32
    }

    /// Entries in the table.
    fn nr_entries(&self) -> u64 {
        let per_frame = match self.version {
            Version::V1 => GRANT_ENTRIES_PER_FRAME_V1,
            Version::V2 => GRANT_ENTRIES_PER_FRAME_V2,
        };
        u64::from(self.nr_frames()) * u64::from(per_frame)
    }

    /// Where entry `gref` and its status word live, or `None` if the table
    /// has no such entry.
    pub(crate) fn slot(&self, gref: GrantRef) -> Option<Slot> {
        match self.version {
            Version::V1 => {
                let at = entry::locate(&self.frames, gref)?;
                Some(Slot {
                    entry: at,
                    status: at,
                })
            }
            Version::V2 => Some(Slot {
                entry: entry::locate_v2(&self.frames, gref)?,
                status: entry::locate_status(&self.status, gref)?,
            }),
        }
    }

    /// Appends `frame` (version 1), returning its index; `None` if the
    /// table is at `max_frames`.
    pub(crate) fn push_frame(&mut self, frame: u64) -> Option<u32> {
        let index = self.nr_frames();
        if index >= self.max_frames {
            return None;
        }
        self.frames.push(frame);
        Some(index)
    }

    /// Grows the table to at least `nr_frames`, getting each new (zeroed)
    /// frame from `alloc`: in version 2 the status frame a new table frame
    /// needs comes first. Frames added before a failure stay.
    pub(crate) fn grow(
        &mut self,
        nr_frames: u64,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), GrowError> {
        if nr_frames > u64::from(self.max_frames) {
            return Err(GrowError::TooLarge);
        }
        while u64::from(self.nr_frames()) < nr_frames {
            if self.version == Version::V2 {
                while self.status.len() < status_needed(self.frames.len() + 1) {
                    self.status.push(alloc().ok_or(GrowError::NoMemory)?);
                }
            }
            self.frames.push(alloc().ok_or(GrowError::NoMemory)?);
        }
        Ok(())
    }

    /// Sets the entry's flags for `req` ([`entry::set_status`] or
    /// [`entry::set_status_v2`]); the header flags it checked.
    fn set_status(
        &self,
        slot: Slot,
        req: PinRequest,
        mem: &mut impl FrameWords,
    ) -> Result<u16, GntSt> {
        match self.version {
            Version::V1 => entry::set_status(mem, slot.entry, req),
            Version::V2 => entry::set_status_v2(mem, slot.entry, slot.status, req),
        }
    }

    /// The frame the entry names now (the same place in a full-page and a
    /// sub-page version 2 entry).
    fn read_frame(&self, slot: Slot, mem: &impl FrameWords) -> u64 {
        match self.version {
            Version::V1 => u64::from(entry::read(mem, slot.entry).frame),
            Version::V2 => entry::read_v2(mem, slot.entry).full_page().frame,
        }
    }

    /// What a first pin gets, the status set for it with header `flags`.
    /// `me` is this table's domain.
    fn first_target(
        &self,
        me: DomId,
        slot: Slot,
        flags: u16,
        allow_transitive: bool,
        mem: &impl FrameWords,
    ) -> Result<Target, GntSt> {
        if self.version == Version::V1 {
            return Ok(Target::Page {
                grant: CopyGrant::page(self.read_frame(slot, mem)),
                sub_page: false,
            });
        }
        let e = entry::read_v2(mem, slot.entry);
        if flags & GTF_TYPE_MASK == GTF_TRANSITIVE {
            // Only a copy's status check lets a transitive grant through.
            let t = e.transitive();
            if !allow_transitive || t.trans_domid == me {
                return Err(GntSt::GeneralError);
            }
            return Ok(Target::Transitive(Hop {
                domid: t.trans_domid,
                gref: t.gref,
            }));
        }
        if flags & GTF_SUB_PAGE != 0 {
            let s = e.sub_page();
            return Ok(Target::Page {
                grant: CopyGrant {
                    frame: s.frame,
                    start: s.page_off,
                    length: s.length,
                },
                sub_page: true,
            });
        }
        Ok(Target::Page {
            grant: CopyGrant::page(e.full_page().frame),
            sub_page: false,
        })
    }

    /// Pins `gref` of this table (domain `me`) for `accessor`, setting the
    /// entry's flags on the first pin (and on the first writable one).
    /// Returns what it grants; a transitive grant only with
    /// `allow_transitive`, and never to a mapping.
    pub(crate) fn pin(
        &mut self,
        me: DomId,
        accessor: DomId,
        gref: GrantRef,
        kind: PinKind,
        allow_transitive: bool,
        mem: &mut impl FrameWords,
    ) -> Result<Acquired, GntSt> {
        let slot = self.slot(gref).ok_or(GntSt::BadGntref)?;
        let existing = self.active.get(&gref).copied();
        if let Some(mut act) = existing {
            // Pinned by someone else, a count about to overflow, a map of
            // what may only be copied, or a transitive grant where none may
            // be (the hop of another: Xen looks at the entry's type).
            let transitive = matches!(act.target, Target::Transitive(_));
            if act.accessor != accessor
                || *act.count(kind) == u32::MAX
                || (kind.mapping() && act.target.blocks_maps())
                || (transitive && !allow_transitive)
            {
                return Err(GntSt::GeneralError);
            }
        }
        let req = PinRequest {
            accessor,
            readonly: kind.readonly(),
            mapping: kind.mapping(),
            already_pinned: existing.is_some(),
        };
        let act = match existing {
            None => {
                let flags = self.set_status(slot, req, mem)?;
                // The flags are set: from here on the granter must leave the
                // entry alone, so this is what it grants.
                let target = match self.first_target(me, slot, flags, allow_transitive, mem) {
                    Ok(t) => t,
                    Err(e) => {
                        entry::reduce_status(mem, slot.status, 0, 0);
                        return Err(e);
                    }
                };
                if let Some(frame) = target.frame() {
                    *self.frame_users.entry(frame).or_insert(0) += 1;
                }
                self.active.entry(gref).or_insert(Active {
                    accessor,
                    target,
                    map_ro: 0,
                    map_rw: 0,
                    copy_ro: 0,
                    copy_rw: 0,
                    hop_ro: 0,
                    hop_rw: 0,
                })
            }
            Some(act) => {
                if act.write_pins() == 0 && !kind.readonly() {
                    self.set_status(slot, req, mem)?;
                    // A copy that upgrades to writing re-reads the entry and
                    // insists on the frame already pinned (a mapping does
                    // not re-read).
                    if let Target::Page { grant, .. } = act.target
                        && !kind.mapping()
                        && self.read_frame(slot, mem) != grant.frame
                    {
                        entry::reduce_status(mem, slot.status, act.pins(), act.write_pins());
                        return Err(GntSt::GeneralError);
                    }
                }
                self.active.entry(gref).or_insert(act)
            }
        };
        *act.count(kind) += 1;
        Ok(match act.target {
            Target::Page { grant, .. } => Acquired::Page(grant),
            Target::Transitive(hop) => Acquired::Transitive(hop),
        })
    }

    /// Whether `accessor` holds at least one pin of `kind` on `gref`, on
    /// page `frame`: what a maptrack slot claims, checked before it is
    /// trusted.
    pub(crate) fn holds_pin(
        &self,
        gref: GrantRef,
        accessor: DomId,
        kind: PinKind,
        frame: u64,
    ) -> bool {
        self.active.get(&gref).is_some_and(|act| {
            let mut act = *act;
            act.accessor == accessor && *act.count(kind) > 0 && act.target.frame() == Some(frame)
        })
    }

    /// Drops one pin of `kind` held by `accessor` on `gref` and clears the
    /// flags no pin needs any more.
    pub(crate) fn unpin(
        &mut self,
        gref: GrantRef,
        accessor: DomId,
        kind: PinKind,
        mem: &mut impl FrameWords,
    ) -> Unpinned {
        let Some(act) = self.active.get_mut(&gref) else {
            return Unpinned::NoSuchPin;
        };
        if act.accessor != accessor || *act.count(kind) == 0 {
            return Unpinned::NoSuchPin;
        }
        *act.count(kind) -= 1;
        let (pins, write_pins, target) = (act.pins(), act.write_pins(), act.target);
        if pins == 0 {
            self.active.remove(&gref);
            if let Some(frame) = target.frame() {
                self.forget_frame_user(frame);
            }
        }
        if let Some(slot) = self.slot(gref) {
            entry::reduce_status(mem, slot.status, pins, write_pins);
        }
        match target {
            Target::Page { .. } => Unpinned::Done,
            Target::Transitive(hop) => Unpinned::Then(hop),
        }
    }

    /// Forgets every pin `accessor` holds, of any kind, clearing the flags.
    /// Returns the hops of the transitive pins dropped, once per pin, with
    /// whether it was writable: their pins on the hop are the caller's to
    /// drop.
    pub(crate) fn unpin_all(
        &mut self,
        accessor: DomId,
        mem: &mut impl FrameWords,
    ) -> Vec<(Hop, bool)> {
        let refs: Vec<GrantRef> = self
            .active
            .iter()
            .filter(|(_, act)| act.accessor == accessor)
            .map(|(r, _)| *r)
            .collect();
        let mut hops = Vec::new();
        for gref in refs {
            if let Some(act) = self.active.remove(&gref) {
                match act.target {
                    Target::Page { grant, .. } => self.forget_frame_user(grant.frame),
                    Target::Transitive(hop) => {
                        for _ in 0..act.copy_ro {
                            hops.push((hop, false));
                        }
                        for _ in 0..act.copy_rw {
                            hops.push((hop, true));
                        }
                    }
                }
            }
            if let Some(slot) = self.slot(gref) {
                mem.clear_u16_bits(
                    slot.status.frame,
                    slot.status.offset,
                    GTF_READING | GTF_WRITING,
                );
            }
        }
        hops
    }

    /// Forgets every transitive entry whose hop is in `dom`, with all its
    /// pins, clearing the flags: for a kernel that forgets `dom` at once
    /// ([`crate::Grants::remove_domain`]), whose hop pins went with it and
    /// whose domid may come back.
    pub(crate) fn forget_hops_to(&mut self, dom: DomId, mem: &mut impl FrameWords) {
        let refs: Vec<GrantRef> = self
            .active
            .iter()
            .filter(|(_, act)| matches!(act.target, Target::Transitive(h) if h.domid == dom))
            .map(|(r, _)| *r)
            .collect();
        for gref in refs {
            self.active.remove(&gref);
            if let Some(slot) = self.slot(gref) {
                mem.clear_u16_bits(
                    slot.status.frame,
                    slot.status.offset,
                    GTF_READING | GTF_WRITING,
                );
            }
        }
    }

    /// Every domain other than `except` that holds a map pin here, in
    /// ascending order.
    pub(crate) fn mappers(&self, except: DomId) -> Vec<DomId> {
        let ids: BTreeSet<DomId> = self
            .active
            .values()
            .filter(|act| act.map_pins() > 0 && act.accessor != except)
            .map(|act| act.accessor)
            .collect();
        ids.into_iter().collect()
    }

    /// Whether any domain holds a map pin here.
    pub(crate) fn has_map_pins(&self) -> bool {
        self.active.values().any(|act| act.map_pins() > 0)
    }

    /// Whether an active page entry names `frame`.
    pub(crate) fn is_frame_mapped(&self, frame: u64) -> bool {
        self.frame_users.contains_key(&frame)
    }

    /// Whether `accessor` pins an entry naming page `frame`.
    pub(crate) fn is_frame_pinned_by(&self, accessor: DomId, frame: u64) -> bool {
        self.is_frame_mapped(frame)
            && self
                .active
                .values()
                .any(|act| act.accessor == accessor && act.target.frame() == Some(frame))
    }

    /// `GNTTABOP_set_version` to `new`, once the version is known to be
    /// allowed (Xen's `gnttab_set_version` from its write lock on): nothing
    /// if it is in effect; `-EBUSY` if an entry past the reserved ones is in
    /// use; from version 1, status frames for the whole table from `alloc`
    /// (`-ENOMEM`, the ones it did give going to `freed`); from version 2,
    /// `-ERANGE` if a reserved entry cannot be written as a version 1 entry
    /// (transitive, or a frame above 32 bits). Then the table is cleared
    /// but for the reserved entries, converted with their flags; version
    /// 2's status frames go to `freed`.
    pub(crate) fn set_version(
        &mut self,
        new: Version,
        mem: &mut impl FrameWords,
        alloc: &mut impl FnMut() -> Option<u64>,
        freed: &mut Vec<u64>,
    ) -> Result<(), Errno> {
        if new == self.version {
            return Ok(());
        }
        if self
            .active
            .range(GNTTAB_NR_RESERVED_ENTRIES..)
            .next()
            .is_some()
        {
            return Err(Errno::EBUSY);
        }
        let reserved = u64::from(GNTTAB_NR_RESERVED_ENTRIES).min(self.nr_entries());
        // Below 8.
        let reserved = 0..reserved as GrantRef;
        let mut new_status = Vec::new();
        match self.version {
            Version::V1 => {
                for _ in 0..status_needed(self.frames.len()) {
                    match alloc() {
                        Some(f) => new_status.push(f),
                        None => {
                            freed.append(&mut new_status);
                            return Err(Errno::ENOMEM);
                        }
                    }
                }
            }
            Version::V2 => {
                for gref in reserved.clone() {
                    let Some(slot) = self.slot(gref) else {
                        continue;
                    };
                    let e = entry::read_v2(mem, slot.entry);
                    match e.hdr().flags & GTF_TYPE_MASK {
                        GTF_PERMIT_ACCESS if e.full_page().frame >> 32 == 0 => {}
                        GTF_PERMIT_ACCESS | GTF_TRANSITIVE => return Err(Errno::ERANGE),
                        _ => {}
                    }
                }
            }
        }
        // The reserved entries as version 1 entries, flags included.
        let saved: Vec<(GrantRef, GrantEntryV1)> = reserved
            .filter_map(|gref| {
                let slot = self.slot(gref)?;
                Some((gref, self.read_as_v1(slot, mem)))
            })
            .collect();
        match new {
            Version::V1 => freed.append(&mut self.status),
            Version::V2 => self.status = new_status,
        }
        self.version = new;
        for &frame in &self.frames {
            for offset in (0..PAGE_SIZE).step_by(8) {
                mem.write_u64(frame, offset, 0);
            }
        }
        for (gref, e) in saved {
            let Some(slot) = self.slot(gref) else {
                continue;
            };
            match new {
                Version::V1 => entry::write(mem, slot.entry, e),
                Version::V2 => {
                    let xen = GTF_READING | GTF_WRITING;
                    let full = GrantEntryV2FullPage {
                        hdr: GrantEntryHeader {
                            flags: e.flags & !xen,
                            domid: e.domid,
                        },
                        pad0: 0,
                        frame: u64::from(e.frame),
                    };
                    entry::write_v2(mem, slot.entry, full.into());
                    entry::write_u16(mem, slot.status, e.flags & xen);
                }
            }
        }
        Ok(())
    }

    /// Entry `slot` as a version 1 entry, flags and status bits together
    /// (Xen's conversion of the reserved entries; a frame was checked to
    /// fit 32 bits). A version 2 entry that is not `GTF_permit_access`
    /// becomes empty, but keeps its `GTF_reading`/`GTF_writing` (Xen drops
    /// them; keel keeps telling the granter that an entry it rewrote while
    /// in use is still in use).
    fn read_as_v1(&self, slot: Slot, mem: &impl FrameWords) -> GrantEntryV1 {
        match self.version {
            Version::V1 => entry::read(mem, slot.entry),
            Version::V2 => {
                let e = entry::read_v2(mem, slot.entry).full_page();
                let status = entry::read_u16(mem, slot.status) & (GTF_READING | GTF_WRITING);
                if e.hdr.flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
                    return GrantEntryV1 {
                        flags: status,
                        domid: 0,
                        frame: 0,
                    };
                }
                GrantEntryV1 {
                    flags: e.hdr.flags | status,
                    domid: e.hdr.domid,
                    // Checked to fit before the conversion.
                    frame: e.frame as u32,
                }
            }
        }
    }

    /// `GNTTABOP_swap_grant_ref` of `a` and `b` (Xen's `swap_grant_ref`):
    /// `GNTST_bad_gntref` if either is beyond the table; nothing for the
    /// same ref; `GNTST_eagain` if either is in use; else the two entries
    /// (and in version 2 their status words) change places.
    pub(crate) fn swap(
        &mut self,
        a: GrantRef,
        b: GrantRef,
        mem: &mut impl FrameWords,
    ) -> Result<(), GntSt> {
        let sa = self.slot(a).ok_or(GntSt::BadGntref)?;
        let sb = self.slot(b).ok_or(GntSt::BadGntref)?;
        if a == b {
            return Ok(());
        }
        if self.active.contains_key(&a) || self.active.contains_key(&b) {
            return Err(GntSt::Eagain);
        }
        match self.version {
            Version::V1 => {
                let (ea, eb) = (entry::read(mem, sa.entry), entry::read(mem, sb.entry));
                entry::write(mem, sa.entry, eb);
                entry::write(mem, sb.entry, ea);
            }
            Version::V2 => {
                let (ea, eb) = (entry::read_v2(mem, sa.entry), entry::read_v2(mem, sb.entry));
                let (xa, xb) = (
                    entry::read_u16(mem, sa.status),
                    entry::read_u16(mem, sb.status),
                );
                entry::write_v2(mem, sa.entry, eb);
                entry::write_u16(mem, sa.status, xb);
                entry::write_v2(mem, sb.entry, ea);
                entry::write_u16(mem, sb.status, xa);
            }
        }
        Ok(())
    }

    fn forget_frame_user(&mut self, frame: u64) {
        if let Some(n) = self.frame_users.get_mut(&frame) {
            *n -= 1;
            if *n == 0 {
                self.frame_users.remove(&frame);
            }
        }
    }
}
