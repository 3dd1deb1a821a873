//! The grant operations that involve two domains' state: a mapper's
//! maptrack and a granter's table (Xen's `map_grant_ref`, `unmap_common`,
//! `gnttab_release_mappings`), each taking both [`DomainGrants`].
//!
//! # What
//!
//! Every function here takes the mapper's and the granter's state as two
//! `&mut` (the caller holds both domains' locks), and has a one-value
//! `_own` form for a domain mapping its own grants (one lock). Passing the
//! same domain's state as two values is refused (`GNTST_general_error`,
//! [`Error::SameDomain`]): it would be two copies of one domain's state.
//!
//! Nothing here trusts what it is given. Between the kernel's first look
//! (under one lock) and the call (under two), the other domain may have
//! started dying, revoked the mapping, or the mapper's other vCPUs may
//! have reused the handle; each function re-checks and answers with a
//! status code, changing nothing on failure:
//! - a dying granter is `GNTST_bad_domain` to [`map`], a dying mapper
//!   `GNTST_general_error`;
//! - an unmap of a handle whose live mapping is of another granter than the
//!   one given is `GNTST_bad_handle` (the handle the guest named is gone);
//!   one whose granter no longer holds the matching pin is
//!   `GNTST_general_error`;
//! - a revoked mapping unmaps with any granter, or with none
//!   ([`DomainGrants::unmap_revoked`]).
//!
//! A domain's death is split into steps that each hold the dead domain and
//! one other ([`release_mappings`], [`revoke_mappings`]); the crate's
//! `# Locking` notes give the order the kernel runs them in.
//!
//! # Invariants
//!
//! - Every live maptrack slot holds exactly one map pin, of its kind, on an
//!   active entry of its granter, whose death has not completed.
//! - Revoked slots hold no pin; they are freed by the mapper's unmap.
//!
//! # Locking
//!
//! The caller holds both domains' locks, taken lower domid first (one lock
//! for the `_own` forms). See the crate's `# Locking` notes.

use alloc::vec::Vec;

use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};

use crate::maptrack::{MapInfo, Maptrack, Slot};
use crate::table::{PinKind, Table};
use crate::{Acquired, DomainGrants, Error, FrameWords, GntSt};

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
    /// `host_gfn` and flushes before [`unmap`] drops the pin.
    Live(MapInfo),
    /// A mapping revoked when its granter died: its p2m entry is already
    /// gone and there is nothing to do but report `GNTST_okay`.
    Revoked(MapInfo),
}

/// A mapping of a dying granter's grant, revoked by [`revoke_mappings`]:
/// remove it from the mapper's p2m.
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

/// A mapping held by a dying domain, released by [`release_mappings`] (its
/// pin dropped and the granter's flags cleared, its handle freed).
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

/// The mapper's half of a pair.
struct Mapper<'a> {
    id: DomId,
    dying: bool,
    maptrack: &'a mut Maptrack,
}

/// The granter's half of a pair.
struct Granter<'a> {
    id: DomId,
    dying: bool,
    table: &'a mut Table,
}

/// Two domains' halves.
fn two<'a>(
    mapper: &'a mut DomainGrants,
    granter: &'a mut DomainGrants,
) -> (Mapper<'a>, Granter<'a>) {
    (
        Mapper {
            id: mapper.id,
            dying: mapper.dying,
            maptrack: &mut mapper.maptrack,
        },
        Granter {
            id: granter.id,
            dying: granter.dying,
            table: &mut granter.table,
        },
    )
}

/// One domain as both mapper and granter.
fn own(dom: &mut DomainGrants) -> (Mapper<'_>, Granter<'_>) {
    (
        Mapper {
            id: dom.id,
            dying: dom.dying,
            maptrack: &mut dom.maptrack,
        },
        Granter {
            id: dom.id,
            dying: dom.dying,
            table: &mut dom.table,
        },
    )
}

/// `GNTTABOP_map_grant_ref` of `granter`'s `gref` by `mapper` at its gfn
/// `host_gfn` (the two are different domains; see [`map_own`]). Checks, in
/// Xen's order: the granter is not dying (`bad_domain`), the mapper is not
/// dying (`general_error`), the mapper has a free handle (`no_space`), the
/// ref is in the table (`bad_gntref`), the entry is in use by no one else
/// and is not copy-pinned as a sub-page or transitive grant, permits access
/// to `mapper`, is neither sub-page nor transitive, and is writable unless
/// `readonly` (`general_error`). Either version: the frame is 32 bits in
/// version 1, 64 in version 2. On success the entry is pinned; the kernel
/// translates the returned frame through the granter's p2m and maps it at
/// `host_gfn` *before* dropping the two locks, and if it cannot, undoes
/// this with [`unmap`] under the same locks.
pub fn map(
    mapper: &mut DomainGrants,
    granter: &mut DomainGrants,
    gref: GrantRef,
    readonly: bool,
    host_gfn: u64,
    mem: &mut impl FrameWords,
) -> Result<Mapped, GntSt> {
    if mapper.id == granter.id {
        return Err(GntSt::GeneralError);
    }
    let (m, g) = two(mapper, granter);
    map_in(m, g, gref, readonly, host_gfn, mem)
}

/// [`map`] of one of `dom`'s own grants by `dom` (one lock).
pub fn map_own(
    dom: &mut DomainGrants,
    gref: GrantRef,
    readonly: bool,
    host_gfn: u64,
    mem: &mut impl FrameWords,
) -> Result<Mapped, GntSt> {
    let (m, g) = own(dom);
    map_in(m, g, gref, readonly, host_gfn, mem)
}

fn map_in(
    m: Mapper<'_>,
    g: Granter<'_>,
    gref: GrantRef,
    readonly: bool,
    host_gfn: u64,
    mem: &mut impl FrameWords,
) -> Result<Mapped, GntSt> {
    if g.dying {
        return Err(GntSt::BadDomain);
    }
    if m.dying {
        return Err(GntSt::GeneralError);
    }
    if m.maptrack.next_free().is_none() {
        return Err(GntSt::NoSpace);
    }
    let kind = PinKind::new(true, readonly);
    let frame = match g.table.pin(g.id, m.id, gref, kind, false, mem)? {
        Acquired::Page(grant) => grant.frame,
        Acquired::Transitive(_) => {
            // Not reached: a mapping's status check refuses transitive
            // grants. Undo rather than keep a pin no slot holds.
            g.table.unpin(gref, m.id, kind, mem);
            return Err(GntSt::GeneralError);
        }
    };
    let info = MapInfo {
        granter: g.id,
        gref,
        frame,
        host_gfn,
        readonly,
    };
    match m.maptrack.insert(Slot::Live(info)) {
        Some(handle) => Ok(Mapped { handle, frame }),
        None => {
            // Not reached: the free handle was checked above and pinning
            // does not touch the maptrack. Undo rather than leak a pin.
            g.table.unpin(gref, m.id, kind, mem);
            Err(GntSt::NoSpace)
        }
    }
}

/// Validates `GNTTABOP_unmap_grant_ref` of `mapper`'s `handle` at
/// `host_gfn` under both locks, without changing anything, so the kernel
/// can remove the p2m entry and flush before [`unmap`]. As
/// [`DomainGrants::check_unmap`] (`bad_handle`: free handle;
/// `general_error`: live mapping not at `host_gfn`), and also checks the
/// live mapping is of `granter` (else `bad_handle`) and that `granter`
/// still holds its pin (else `general_error`). A revoked mapping matches
/// any granter and any `host_gfn`.
pub fn check_unmap(
    mapper: &DomainGrants,
    granter: &DomainGrants,
    handle: GrantHandle,
    host_gfn: u64,
) -> Result<Unmapped, GntSt> {
    if mapper.id == granter.id {
        return Err(GntSt::GeneralError);
    }
    check_in(
        mapper.id,
        &mapper.maptrack,
        granter.id,
        &granter.table,
        handle,
        host_gfn,
    )
}

/// [`check_unmap`] of a mapping of `dom`'s own grant (one lock).
pub fn check_unmap_own(
    dom: &DomainGrants,
    handle: GrantHandle,
    host_gfn: u64,
) -> Result<Unmapped, GntSt> {
    check_in(dom.id, &dom.maptrack, dom.id, &dom.table, handle, host_gfn)
}

fn check_in(
    mapper: DomId,
    maptrack: &Maptrack,
    granter: DomId,
    table: &Table,
    handle: GrantHandle,
    host_gfn: u64,
) -> Result<Unmapped, GntSt> {
    match maptrack.get(handle).ok_or(GntSt::BadHandle)? {
        Slot::Revoked(info) => Ok(Unmapped::Revoked(info)),
        Slot::Live(info) if info.granter != granter => Err(GntSt::BadHandle),
        Slot::Live(info) if info.host_gfn != host_gfn => Err(GntSt::GeneralError),
        Slot::Live(info) => {
            let kind = PinKind::new(true, info.readonly);
            if table.holds_pin(info.gref, mapper, kind, info.frame) {
                Ok(Unmapped::Live(info))
            } else {
                Err(GntSt::GeneralError)
            }
        }
    }
}

/// `GNTTABOP_unmap_grant_ref`: as [`check_unmap`], then frees the handle
/// and, for a live mapping, drops its pin, clearing `GTF_writing` with the
/// last writable pin and `GTF_reading` with the last pin. The kernel has
/// removed the mapper's p2m entry and flushed every pCPU's translations of
/// it first: the granter may reuse the frame the moment the flags clear.
/// A second unmap of the handle is `GNTST_bad_handle`.
pub fn unmap(
    mapper: &mut DomainGrants,
    granter: &mut DomainGrants,
    handle: GrantHandle,
    host_gfn: u64,
    mem: &mut impl FrameWords,
) -> Result<Unmapped, GntSt> {
    if mapper.id == granter.id {
        return Err(GntSt::GeneralError);
    }
    let (m, g) = two(mapper, granter);
    unmap_in(m, g, handle, host_gfn, mem)
}

/// [`unmap`] of a mapping of `dom`'s own grant (one lock).
pub fn unmap_own(
    dom: &mut DomainGrants,
    handle: GrantHandle,
    host_gfn: u64,
    mem: &mut impl FrameWords,
) -> Result<Unmapped, GntSt> {
    let (m, g) = own(dom);
    unmap_in(m, g, handle, host_gfn, mem)
}

fn unmap_in(
    m: Mapper<'_>,
    g: Granter<'_>,
    handle: GrantHandle,
    host_gfn: u64,
    mem: &mut impl FrameWords,
) -> Result<Unmapped, GntSt> {
    let found = check_in(m.id, m.maptrack, g.id, g.table, handle, host_gfn)?;
    m.maptrack.remove(handle);
    if let Unmapped::Live(info) = found {
        // Checked above: the pin is there.
        g.table
            .unpin(info.gref, m.id, PinKind::new(true, info.readonly), mem);
    }
    Ok(found)
}

/// Death step (a), for one granter of [`DomainGrants::granters`]: frees
/// every live mapping the dying `dead` holds of `granter`'s grants,
/// dropping their pins and clearing the flags. Returns the mappings, in
/// handle order; `dead`'s own p2m is going away with it. Other pins `dead`
/// holds there stay: its own copies ended before its death began (the
/// kernel's part), and the pins it holds as the hop of other domains'
/// transitive copies still in flight are dropped by those copies when they
/// end.
/// [`Error::NotDying`] unless [`DomainGrants::start_dying`] was called,
/// [`Error::SameDomain`] if `granter` is `dead`
/// ([`release_own_mappings`]).
pub fn release_mappings(
    dead: &mut DomainGrants,
    granter: &mut DomainGrants,
    mem: &mut impl FrameWords,
) -> Result<Vec<Released>, Error> {
    if !dead.dying {
        return Err(Error::NotDying);
    }
    if dead.id == granter.id {
        return Err(Error::SameDomain);
    }
    let (m, g) = two(dead, granter);
    Ok(release_in(m, g, mem))
}

/// Death step (a) for the dying domain's mappings of its own grants (one
/// lock).
pub fn release_own_mappings(
    dead: &mut DomainGrants,
    mem: &mut impl FrameWords,
) -> Result<Vec<Released>, Error> {
    if !dead.dying {
        return Err(Error::NotDying);
    }
    let (m, g) = own(dead);
    Ok(release_in(m, g, mem))
}

fn release_in(m: Mapper<'_>, g: Granter<'_>, mem: &mut impl FrameWords) -> Vec<Released> {
    let mut released = Vec::new();
    let (mapper, granter) = (m.id, g.id);
    m.maptrack.remove_live_of(granter, |handle, info| {
        g.table
            .unpin(info.gref, mapper, PinKind::new(true, info.readonly), mem);
        released.push(Released {
            granter,
            handle,
            gref: info.gref,
            frame: info.frame,
            host_gfn: info.host_gfn,
        });
    });
    released
}

/// Death step (b), for one mapper of [`DomainGrants::mappers`]: revokes
/// every live mapping `mapper` holds of the dying `dead`'s grants, dropping
/// their pins in `dead`'s table. Each stays in `mapper`'s maptrack as
/// revoked, so its later unmap succeeds without doing anything. Returns
/// them in handle order: the kernel removes each from `mapper`'s p2m
/// before dropping `mapper`'s lock, and no frame of `dead` is freed until
/// every pCPU has flushed those translations. Copies of `dead`'s grants
/// in flight keep their pins ([`DomainGrants::release`] still works).
/// [`Error::NotDying`] unless [`DomainGrants::start_dying`] was called,
/// [`Error::SameDomain`] if `mapper` is `dead` (its own mappings are step
/// (a)'s).
pub fn revoke_mappings(
    dead: &mut DomainGrants,
    mapper: &mut DomainGrants,
    mem: &mut impl FrameWords,
) -> Result<Vec<Revoked>, Error> {
    if !dead.dying {
        return Err(Error::NotDying);
    }
    if dead.id == mapper.id {
        return Err(Error::SameDomain);
    }
    let (m, g) = two(mapper, dead);
    let mut revoked = Vec::new();
    let (mapper, granter) = (m.id, g.id);
    m.maptrack.revoke_granter(granter, |handle, info| {
        g.table
            .unpin(info.gref, mapper, PinKind::new(true, info.readonly), mem);
        revoked.push(Revoked {
            mapper,
            handle,
            gref: info.gref,
            frame: info.frame,
            host_gfn: info.host_gfn,
        });
    });
    Ok(revoked)
}
