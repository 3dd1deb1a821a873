//! One mapping domain's maptrack table: grant handle to mapping (Xen's
//! `struct grant_mapping` array and its free lists).
//!
//! # What
//!
//! A handle is an index into the *mapper's own* table, so a guest can only
//! ever name its own mappings. A slot is free, holds a live mapping, or
//! holds a mapping revoked because its granter died (the mapper's p2m entry
//! is already gone; the next unmap of the handle just frees the slot).
//!
//! Handles are allocated lowest-free-first (Xen hands them out from
//! per-vCPU free lists instead; guests must not rely on either order).
//!
//! # Invariants
//!
//! - `free` holds exactly the indices below `slots.len()` whose slot is
//!   `None`; `slots.len() <= limit`.
//! - Lookups and allocation are `O(log n)`; nothing scans the table except
//!   the steps of a domain's death ([`crate::pair`]) and
//!   [`crate::DomainGrants::granters`].
//!
//! # Locking
//!
//! Part of its domain's [`DomainGrants`](crate::DomainGrants), so under that
//! domain's lock. Only the owning domain's own operations, and the steps of
//! its own death, add or free slots; a granter's death, holding both
//! domains' locks, turns live slots into revoked ones.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};

/// One mapping, as recorded in the mapper's maptrack table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapInfo {
    /// The granting domain.
    pub granter: DomId,
    /// The grant ref in `granter`'s table.
    pub gref: GrantRef,
    /// The granter's gfn the entry named when it was first pinned.
    pub frame: u64,
    /// Where the mapper mapped it (its gfn).
    pub host_gfn: u64,
    /// A read-only mapping.
    pub readonly: bool,
}

/// The state of one occupied maptrack slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A live mapping, holding a pin on the granter's entry.
    Live(MapInfo),
    /// Revoked when the granter died: no pin, no p2m entry.
    Revoked(MapInfo),
}

/// A domain's maptrack table.
#[derive(Debug)]
pub struct Maptrack {
    slots: Vec<Option<Slot>>,
    free: BTreeSet<u32>,
    limit: u32,
}

impl Maptrack {
    /// An empty table that will hold at most `limit` mappings.
    #[must_use]
    pub fn new(limit: u32) -> Self {
        Maptrack {
            slots: Vec::new(),
            free: BTreeSet::new(),
            limit,
        }
    }

    /// The handle the next [`Maptrack::insert`] will use, or `None` if the
    /// table is full.
    #[must_use]
    pub fn next_free(&self) -> Option<GrantHandle> {
        if let Some(&h) = self.free.first() {
            return Some(h);
        }
        let len = u32::try_from(self.slots.len()).ok()?;
        (len < self.limit).then_some(len)
    }

    /// Stores `slot` at the lowest free handle; `None` if full.
    pub fn insert(&mut self, slot: Slot) -> Option<GrantHandle> {
        let handle = self.next_free()?;
        if let Some(h) = self.free.pop_first() {
            self.slots[h as usize] = Some(slot);
        } else {
            self.slots.push(Some(slot));
        }
        Some(handle)
    }

    /// The slot behind `handle`, if occupied.
    #[must_use]
    pub fn get(&self, handle: GrantHandle) -> Option<Slot> {
        *self.slots.get(usize::try_from(handle).ok()?)?
    }

    /// Frees `handle`, returning what it held.
    pub fn remove(&mut self, handle: GrantHandle) -> Option<Slot> {
        let index = usize::try_from(handle).ok()?;
        let slot = self.slots.get_mut(index)?.take()?;
        self.free.insert(handle);
        // Give back a free tail, so the table shrinks after a burst.
        while let Some(None) = self.slots.last() {
            self.slots.pop();
            let tail = self.slots.len() as u32;
            self.free.remove(&tail);
        }
        Some(slot)
    }

    /// Marks every live mapping of `granter`'s grants revoked, calling `f`
    /// with each (handle, mapping).
    pub fn revoke_granter(&mut self, granter: DomId, mut f: impl FnMut(GrantHandle, MapInfo)) {
        for (handle, slot) in self.slots.iter_mut().enumerate() {
            if let Some(Slot::Live(info)) = *slot
                && info.granter == granter
            {
                *slot = Some(Slot::Revoked(info));
                f(handle as GrantHandle, info);
            }
        }
    }

    /// Frees every live mapping of `granter`'s grants, calling `f` with each
    /// (handle, mapping) in handle order.
    pub fn remove_live_of(&mut self, granter: DomId, mut f: impl FnMut(GrantHandle, MapInfo)) {
        let handles: Vec<(GrantHandle, MapInfo)> = self
            .live()
            .filter(|(_, info)| info.granter == granter)
            .collect();
        for (handle, info) in handles {
            self.remove(handle);
            f(handle, info);
        }
    }

    /// The granters of the live mappings, ascending, each once.
    #[must_use]
    pub fn granters(&self) -> Vec<DomId> {
        let ids: BTreeSet<DomId> = self.live().map(|(_, info)| info.granter).collect();
        ids.into_iter().collect()
    }

    /// Whether any slot holds a live mapping.
    #[must_use]
    pub fn has_live(&self) -> bool {
        self.live().next().is_some()
    }

    /// Every occupied slot, in handle order.
    pub fn slots(&self) -> impl Iterator<Item = (GrantHandle, Slot)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(h, s)| s.map(|s| (h as GrantHandle, s)))
    }

    /// Every live mapping, in handle order.
    pub fn live(&self) -> impl Iterator<Item = (GrantHandle, MapInfo)> + '_ {
        self.slots.iter().enumerate().filter_map(|(h, s)| match s {
            Some(Slot::Live(info)) => Some((h as GrantHandle, *info)),
            _ => None,
        })
    }

    /// Number of occupied slots (live or revoked).
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// No slot is occupied.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(gref: GrantRef) -> MapInfo {
        MapInfo {
            granter: 1,
            gref,
            frame: 0,
            host_gfn: 0,
            readonly: false,
        }
    }

    #[test]
    fn lowest_free_and_limit() {
        let mut m = Maptrack::new(3);
        assert_eq!(m.insert(Slot::Live(info(0))), Some(0));
        assert_eq!(m.insert(Slot::Live(info(1))), Some(1));
        assert_eq!(m.insert(Slot::Live(info(2))), Some(2));
        assert_eq!(m.next_free(), None);
        assert_eq!(m.insert(Slot::Live(info(3))), None);
        assert_eq!(m.remove(1), Some(Slot::Live(info(1))));
        assert_eq!(m.remove(1), None);
        assert_eq!(m.get(1), None);
        assert_eq!(m.insert(Slot::Live(info(4))), Some(1));
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(u32::MAX), None);
        assert_eq!(m.remove(u32::MAX), None);
    }

    #[test]
    fn free_tail_shrinks() {
        let mut m = Maptrack::new(10);
        for g in 0..4 {
            m.insert(Slot::Live(info(g)));
        }
        m.remove(1);
        m.remove(3);
        m.remove(2);
        assert_eq!(m.slots.len(), 1);
        assert!(m.free.is_empty());
        assert_eq!(m.insert(Slot::Live(info(9))), Some(1));
        m.remove(0);
        m.remove(1);
        assert!(m.is_empty() && m.slots.is_empty() && m.free.is_empty());
    }

    #[test]
    fn zero_limit_holds_nothing() {
        let mut m = Maptrack::new(0);
        assert_eq!(m.insert(Slot::Live(info(0))), None);
    }

    #[test]
    fn revoke_only_that_granter() {
        let mut m = Maptrack::new(10);
        m.insert(Slot::Live(info(0)));
        m.insert(Slot::Live(MapInfo {
            granter: 2,
            ..info(1)
        }));
        let mut seen = Vec::new();
        m.revoke_granter(1, |h, i| seen.push((h, i.gref)));
        assert_eq!(seen, [(0, 0)]);
        assert_eq!(m.get(0), Some(Slot::Revoked(info(0))));
        assert_eq!(m.live().map(|(h, _)| h).collect::<Vec<_>>(), [1]);
    }
}
