//! One domain's grant table as a *granter*: its shared frames and its
//! *active* entries (Xen's `struct grant_table` and its
//! `struct active_grant_entry` array).
//!
//! # What
//!
//! An active entry records a ref that is in use: the one domain using it,
//! the granter's gfn the entry named when it was first pinned (later pins
//! get the same frame, whatever the entry says by then), and four pin
//! counts: read-only and writable, by mappings and by copies. Pinning sets
//! the hypervisor's flags in the shared entry ([`crate::entry`]); dropping
//! the last pin of a kind clears them.
//!
//! # Invariants
//!
//! - An active entry has at least one pin, and all its pins belong to its
//!   `accessor` (Xen's `act->domid`).
//! - `frame_users[f]` is the number of active entries whose frame is `f`,
//!   and is never 0.
//! - `frames.len() <= max_frames <= MAX_GRANT_FRAMES_LIMIT`, so every entry
//!   has a 32-bit grant ref.
//!
//! # Locking
//!
//! Part of one domain's [`DomainGrants`](crate::DomainGrants), so under that
//! domain's lock. The only other writer of the shared entries is the
//! granting guest itself, which is what [`crate::entry`]'s protocol is for.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{GTF_READING, GTF_WRITING, GrantRef};

use crate::entry::{self, PinRequest};
use crate::{FrameWords, GntSt};

/// What a pin is for; each kind has its own count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PinKind {
    MapRo,
    MapRw,
    CopyRo,
    CopyRw,
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

    fn readonly(self) -> bool {
        matches!(self, PinKind::MapRo | PinKind::CopyRo)
    }

    fn mapping(self) -> bool {
        matches!(self, PinKind::MapRo | PinKind::MapRw)
    }
}

/// A grant entry in use (Xen's `struct active_grant_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Active {
    /// The one domain all pins belong to.
    pub(crate) accessor: DomId,
    /// The granter's gfn, read from the entry at the first pin.
    pub(crate) frame: u32,
    pub(crate) map_ro: u32,
    pub(crate) map_rw: u32,
    pub(crate) copy_ro: u32,
    pub(crate) copy_rw: u32,
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

    pub(crate) fn pins(&self) -> u64 {
        u64::from(self.map_ro)
            + u64::from(self.map_rw)
            + u64::from(self.copy_ro)
            + u64::from(self.copy_rw)
    }

    pub(crate) fn write_pins(&self) -> u64 {
        u64::from(self.map_rw) + u64::from(self.copy_rw)
    }

    fn map_pins(&self) -> u64 {
        u64::from(self.map_ro) + u64::from(self.map_rw)
    }
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
    /// The shared frames, in order (entry `r` in `frames[r / 512]`).
    pub(crate) frames: Vec<u64>,
    pub(crate) max_frames: u32,
    /// Refs in use.
    pub(crate) active: BTreeMap<GrantRef, Active>,
    /// Granter gfn -> number of active entries naming it.
    pub(crate) frame_users: BTreeMap<u32, u32>,
}

impl Table {
    /// An empty table that may grow to `max_frames` (checked by the caller
    /// against `MAX_GRANT_FRAMES_LIMIT`).
    pub(crate) fn new(max_frames: u32) -> Self {
        Table {
            frames: Vec::new(),
            max_frames,
            active: BTreeMap::new(),
            frame_users: BTreeMap::new(),
        }
    }

    pub(crate) fn nr_frames(&self) -> u32 {
        // At most `max_frames`, a u32: `push_frame` and `grow` stop there.
        self.frames.len() as u32
    }

    /// Appends `frame`, returning its index; `None` if the table is at
    /// `max_frames`.
    pub(crate) fn push_frame(&mut self, frame: u64) -> Option<u32> {
        let index = self.nr_frames();
        if index >= self.max_frames {
            return None;
        }
        self.frames.push(frame);
        Some(index)
    }

    /// Grows the table to at least `nr_frames`, getting each new (zeroed)
    /// frame from `alloc`. Frames added before a failure stay.
    pub(crate) fn grow(
        &mut self,
        nr_frames: u64,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), GrowError> {
        if nr_frames > u64::from(self.max_frames) {
            return Err(GrowError::TooLarge);
        }
        while u64::from(self.nr_frames()) < nr_frames {
            self.frames.push(alloc().ok_or(GrowError::NoMemory)?);
        }
        Ok(())
    }

    /// Pins `gref` for `accessor`, setting the entry's flags on the first
    /// pin (and on the first writable one). Returns the granter's gfn.
    pub(crate) fn pin(
        &mut self,
        accessor: DomId,
        gref: GrantRef,
        kind: PinKind,
        mem: &mut impl FrameWords,
    ) -> Result<u32, GntSt> {
        let at = entry::locate(&self.frames, gref).ok_or(GntSt::BadGntref)?;
        let existing = self.active.get(&gref).copied();
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
                *self.frame_users.entry(frame).or_insert(0) += 1;
                self.active.entry(gref).or_insert(Active {
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
                self.active.entry(gref).or_insert(act)
            }
        };
        *act.count(kind) += 1;
        Ok(act.frame)
    }

    /// Whether `accessor` holds at least one pin of `kind` on `gref`, on
    /// `frame`: what a maptrack slot claims, checked before it is trusted.
    pub(crate) fn holds_pin(
        &self,
        gref: GrantRef,
        accessor: DomId,
        kind: PinKind,
        frame: u64,
    ) -> bool {
        self.active.get(&gref).is_some_and(|act| {
            let mut act = *act;
            act.accessor == accessor && *act.count(kind) > 0 && u64::from(act.frame) == frame
        })
    }

    /// Drops one pin of `kind` held by `accessor` on `gref` and clears the
    /// flags no pin needs any more. `false` if there is no such pin.
    pub(crate) fn unpin(
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

    /// Forgets every pin `accessor` holds, of any kind, clearing the flags.
    pub(crate) fn unpin_all(&mut self, accessor: DomId, mem: &mut impl FrameWords) {
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

    /// Whether an active entry names `frame`.
    pub(crate) fn is_frame_mapped(&self, frame: u64) -> bool {
        u32::try_from(frame).is_ok_and(|f| self.frame_users.contains_key(&f))
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
