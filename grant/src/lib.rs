//! keel's grant tables: Xen's grant-table state machine (`GNTTABOP_*`),
//! versions 1 and 2, portable and host-tested.
//!
//! # What
//!
//! A domain *grants* another domain access to one of its frames by filling
//! in an entry of its grant table, a set of frames it shares with the
//! hypervisor (`xen/include/public/grant_table.h`). The grantee names the
//! entry by (granter, grant ref) to *map* the frame into its own p2m
//! (`GNTTABOP_map_grant_ref`, undone by `unmap_grant_ref` with the returned
//! handle) or to have the hypervisor *copy* to or from it
//! (`GNTTABOP_copy`). While an entry is in use the hypervisor keeps
//! `GTF_reading`/`GTF_writing` set for it, so the granter knows not to
//! revoke or reuse the frame.
//!
//! Two layouts exist, chosen by the granter (`GNTTABOP_set_version`; every
//! domain starts at version 1, and may switch to 2 if it was created with
//! `max_version` 2). Version 1 has 8-byte entries with the two bits in
//! their `flags`. Version 2 has 16-byte entries (64-bit frames, *sub-page*
//! grants of a byte range, which may be copied but not mapped, and
//! *transitive* grants, which pass another domain's grant on for copying)
//! and keeps the two bits apart, in *status frames* the kernel allocates
//! beside the table frames (one per eight table frames) and the guest
//! maps with `XENMAPIDX_grant_table_status`. A grantee's operations are the
//! same for both; only the granter's layout differs.
//!
//! The state is per domain, as in Xen's `xen/common/grant_table.c`, with
//! Xen's checks and status codes. A [`DomainGrants`] holds one domain's
//! - grant table, as a granter: its version, table frames and status
//!   frames (opaque `u64` handles the kernel allocated), its limits, and
//!   the *active* entries (refs pinned by a mapping or a copy: by whom,
//!   what the entry granted, pin counts);
//! - maptrack table, as a mapper: handle to mapping.
//!
//! Operations of one domain are its methods ([`domain`]); those that need
//! a mapper's and a granter's state at once are the functions of
//! [`pair`]. [`Grants`] holds every domain's state in one map, for a
//! kernel with one lock; it is built on the other two and keeps their
//! results.
//!
//! The crate never sees a machine address. Shared entries and status words
//! are reached only through [`FrameWords`], which the kernel implements
//! with atomic accesses to the frames; everything else is owned state.
//! Operations return what the kernel must do to the p2ms (see each
//! function and `# Hazards`), and hand back every frame they stop using.
//!
//! Not here: `GNTTABOP_transfer` (Xen refuses it for translated guests,
//! and keel has no others), `unmap_and_replace`, the cache maintenance of
//! `cache_flush` (only the check that the caller has the frame granted,
//! [`DomainGrants::is_frame_pinned_by`]), device (IOMMU) mappings, XSM.
//!
//! # Invariants
//!
//! - Every active entry has at least one pin, and all pins of an entry
//!   belong to one domain (Xen's `act->domid`).
//! - Every live maptrack slot holds exactly one map pin, of its kind, on an
//!   active entry of its granter, whose death has not completed. Mapped
//!   entries are never sub-page or transitive.
//! - Every pin of an active transitive entry is matched by one pin, held
//!   by the transitive entry's granter, on the grant it names (its hop),
//!   from the kernel's second step of the acquire to its release; hops are
//!   never transitive themselves, so a chain has at most two grants.
//! - In a granter's table, `GTF_reading` is set for an entry iff it is
//!   active, and `GTF_writing` iff it has a writable pin, as long as the
//!   granter itself leaves those two bits alone (they are Xen's, per the
//!   header). They live in the entry's flags in version 1 and in its
//!   status word in version 2. Pins are counted per kind, so the bits
//!   follow the last pin.
//! - [`DomainGrants::is_frame_mapped`] is exact: some active entry of the
//!   granter names that frame of the granter (transitive entries name
//!   another domain's, and count there).
//! - A version 1 table has no status frames; a version 2 table has a
//!   status word for every entry. The version changes only while no entry
//!   past the first 8 is in use.
//! - Every frame handle the kernel gave the crate is handed back exactly
//!   once: by a version change ([`VersionReply::freed`]), or at the
//!   domain's end ([`DomainGrants::table_frames`],
//!   [`DomainGrants::status_frames`], [`Removal`]).
//! - A maptrack handle names only its own domain's table; handles are the
//!   lowest free index below the domain's limit.
//! - Nothing panics on guest input; every guest-visible failure is a
//!   [`GntSt`] (or an [`Errno`] where Xen returns one), and a misuse by
//!   the kernel an [`Error`] or a status, never a panic.
//!
//! # Locking
//!
//! Nothing inside takes a lock. The kernel keeps each domain's
//! [`DomainGrants`] under that domain's own lock and holds the locks each
//! operation needs for the whole call, and for the p2m and TLB work that
//! goes with it:
//! - **One domain's lock**: table setup and growth
//!   ([`DomainGrants::setup_table`], [`DomainGrants::map_table_frame`],
//!   [`DomainGrants::map_status_frame`], [`DomainGrants::add_table_frame`]),
//!   `query_size`, [`DomainGrants::set_version`] (and removing the freed
//!   status frames from the domain's p2m), `get_version`,
//!   [`DomainGrants::get_status_frames`], [`DomainGrants::swap_grant_ref`],
//!   [`DomainGrants::is_frame_mapped`] (held while the kernel frees the
//!   frame, so no pin can take it meanwhile), and each step of a copy:
//!   [`DomainGrants::acquire`] and [`DomainGrants::release`] under the
//!   *granter's* lock (per grant end; the two ends of a copy are pinned
//!   one after the other, never two locks at once). The copy itself runs
//!   unlocked between them: the pin keeps the entry and the frame, and
//!   the kernel's reference to the granter keeps its memory.
//! - **A transitive copy**, one lock at a time (Xen's
//!   `acquire_grant_for_copy`, which drops the granter's lock to recurse).
//!   For one end naming grant `gref` of domain `A`, by copier `C`:
//!
//!     1. Lock `A`: [`DomainGrants::acquire`]`(C, gref, write)` answers
//!        [`Acquired::Transitive`]`(hop)`: `A`'s entry is now pinned for
//!        `C` and its status bits set, so it can neither change hands nor
//!        be revoked meanwhile. Unlock `A`.
//!     2. Look `hop.domid` up (any id, reserved ones too: the granter wrote
//!        it) and take a reference to it, `T`. If there is none, the result
//!        of this step is `Err(GNTST_general_error)`. Else lock `T`:
//!        [`DomainGrants::acquire_target`]`(A, hop.gref, write)` pins `T`'s
//!        grant *for `A`* (it must be granted to `A`; a transitive grant
//!        there is refused, which ends loops and longer chains); that is
//!        the result. Unlock `T`.
//!     3. Lock `A`: [`DomainGrants::finish_transitive`]`(C, gref, write,
//!        result)` drops `A`'s pin if step 2 failed, and returns what the
//!        copy may touch: a frame of `T`, translated through `T`'s p2m.
//!        Unlock `A`.
//!
//!   `A` (and `T`) may start dying between the steps; each step still
//!   works, and the kernel's references keep both domains' state and
//!   memory until the copy ends. To release, lock `A`:
//!   [`DomainGrants::release`]`(C, gref, write)` answers `Some(hop)`; unlock
//!   `A`, lock `T`: [`DomainGrants::release_target`]`(A, hop.gref, write)`.
//!   `T` counts hop pins apart from `A`'s own copies, so neither can drop
//!   the other's. On
//!   every path out of a copy (a failure of the other end, a range check,
//!   the copy itself) each end acquired is released this way, so each hop
//!   holds as many pins as copies in flight through it.
//! - **Two domains' locks, lower domid first**, whenever an operation
//!   involves two domains (one lock when they are the same domain: the
//!   `_own` forms):
//!   - map: [`pair::map`] / [`pair::map_own`]; under the same locks the
//!     kernel translates the returned gfn through the granter's p2m and
//!     installs the mapper's p2m entry, or undoes the map with
//!     [`pair::unmap`]. Dropping the locks before the p2m entry is in
//!     would let the granter's death revoke a mapping not yet made, and
//!     the late entry outlive the frame.
//!   - unmap: first [`DomainGrants::check_unmap`] under the mapper's lock
//!     alone, to learn the granter; a revoked mapping is freed there with
//!     [`DomainGrants::unmap_revoked`]. For a live one, the kernel takes
//!     both locks in domid order (dropping the mapper's first if the
//!     granter's domid is lower; it keeps the granter alive by reference),
//!     re-checks with [`pair::check_unmap`], removes the p2m entry,
//!     flushes, and calls [`pair::unmap`]. If the granter is already gone
//!     from the domain table, its death has revoked the mapping:
//!     `unmap_revoked` under the mapper's lock.
//!   - death, split so each step holds the dead domain and one other:
//!
//!     0. Under the dead domain's lock alone, once its vCPUs are off every
//!        pCPU for good (outside any hypercall, so no copy of its own is
//!        in flight) and their translations flushed:
//!        [`DomainGrants::start_dying`], then read
//!        [`DomainGrants::granters`] and [`DomainGrants::mappers`]. From
//!        here on nothing can add to either list.
//!     1. (a) For each granter: both locks in domid order,
//!        [`pair::release_mappings`] ([`pair::release_own_mappings`] for
//!        the dead domain itself, one lock).
//!     2. (b) For each mapper: both locks in domid order,
//!        [`pair::revoke_mappings`], and the returned mappings removed
//!        from that mapper's p2m before its lock is dropped.
//!     3. [`DomainGrants::death_complete`] holds. The kernel frees the
//!        dead domain's table and status frames and memory only after the
//!        TLB shootdown below and once copies in flight through its grants
//!        (or through it as a hop) have dropped their references, and
//!        reuses the domid only after that.
//!
//!     Steps 1 and 2 may run in any order and interleaved with other
//!     operations; each re-checks what it finds, and a list entry whose
//!     domain has gone meanwhile is skipped (its own death has done the
//!     work).
//!
//! No operation takes three locks, and no lock is taken while one of a
//! higher domid is held, so two pCPUs can never wait on each other here.
//! The shared entries and status words are also written by the granting
//! guest at any time, without any lock; that is what the protocols in
//! [`entry`] are for.
//!
//! # Hazards
//!
//! - TLBs are per pCPU, and a mapper's vCPUs may run on several. A frame
//!   must not be reused until every pCPU's TLB has dropped every mapping
//!   of it; the crate cannot see TLBs, so this is the kernel's job:
//!   - unmap: the mapper's p2m entry must be gone, and the flush done on
//!     every pCPU that may hold the mapper's translations (a shootdown
//!     acknowledged by all of them), *before* [`pair::unmap`] clears
//!     `GTF_writing`/`GTF_reading`: the granter may reuse the frame the
//!     moment it sees them clear.
//!   - death: the mappings [`pair::revoke_mappings`] returns are out of
//!     the mappers' p2ms when their locks drop, but may live on in TLBs
//!     until the shootdown completes; the dead domain's frames are not
//!     freed before that. Likewise the dead domain's own translations are
//!     flushed everywhere before step 1 drops its pins on other domains'
//!     frames.
//!   - version change: status frames handed back by
//!     [`DomainGrants::set_version`] may be in the domain's p2m (placed by
//!     the guest); the kernel removes them and flushes the domain's
//!     translations before freeing them.
//! - The granter's frame number in an entry is the granter's own *gfn*; the
//!   kernel translates it through the granter's p2m, under the granter's
//!   lock (and fails the map with `GNTST_bad_page`, undoing it with
//!   `unmap`, if that gfn is not RAM). For a transitive copy it is a gfn of
//!   the hop's domain, translated through that domain's p2m.
//! - Status frames are writable by the granting guest: the bits in them
//!   only inform the granter, and nothing here reads them back to decide
//!   anything (but a version change, which carries the first 8 over).
//! - Domain ids are resolved before calling (`DOMID_SELF` to the caller),
//!   and a domid is not reused until its death has completed: a maptrack
//!   slot names its granter by domid alone. A transitive grant's hop is
//!   the granter's word, and is looked up as such.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use core::fmt;

pub mod domain;
pub mod entry;
pub mod grants;
pub mod maptrack;
pub mod pair;
mod table;

#[cfg(test)]
mod domain_tests;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod pair_proptests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod v2_tests;

pub use domain::{
    Acquired, CopyGrant, DomainGrants, Hop, INITIAL_NR_GRANT_FRAMES, MAX_GRANT_FRAMES_LIMIT,
    Version, VersionReply,
};
pub use grants::{Grants, Removal};
pub use keel_hypercall::abi::Errno;
pub use keel_hypercall::abi::domid::DomId;
pub use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};
pub use maptrack::MapInfo;
pub use pair::{Mapped, Released, Revoked, Unmapped};

use keel_hypercall::abi::grant_table as abi;

/// Word access to the grant-table and status frames, implemented by the
/// kernel over the frames it allocated (with atomic instructions: the
/// granting guest writes the same words concurrently). Frames are the
/// opaque handles the kernel gave a table ([`DomainGrants::add_table_frame`],
/// or the `alloc` of `setup_table`, `map_table_frame`, `map_status_frame`
/// and `set_version`); offsets are always within the 4 KiB frame and
/// aligned to the access size.
pub trait FrameWords {
    /// Reads the u64 at `offset` (8-aligned, < 4096) of frame `frame`.
    fn read_u64(&self, frame: u64, offset: usize) -> u64;
    /// Writes the u64 at `offset` (8-aligned) with one atomic store.
    fn write_u64(&mut self, frame: u64, offset: usize, value: u64);
    /// Compare-and-exchange of the u32 at `offset` (4-aligned): returns the
    /// value found (the exchange happened iff it equals `old`).
    fn cmpxchg_u32(&mut self, frame: u64, offset: usize, old: u32, new: u32) -> u32;
    /// Atomically clears `bits` of the u16 at `offset` (2-aligned).
    fn clear_u16_bits(&mut self, frame: u64, offset: usize, bits: u16);
    /// Atomically sets `bits` of the u16 at `offset` (2-aligned), as a full
    /// barrier (x86 `lock or`): reads after it are not done before it, as
    /// version 2's status protocol needs ([`entry::set_status_v2`]).
    fn or_u16_bits(&mut self, frame: u64, offset: usize, bits: u16);
}

/// A failed grant operation: Xen's `GNTST_*` status, which the dispatcher
/// writes into the op's `status` field (`GNTST_okay` is `Ok`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GntSt {
    /// Undefined error (also Xen's answer to a grant that is not for the
    /// caller, not `GTF_permit_access`, or read-only for a write).
    GeneralError,
    /// Unrecognised domain id.
    BadDomain,
    /// Unrecognised or inappropriate grant ref.
    BadGntref,
    /// Unrecognised or inappropriate handle.
    BadHandle,
    /// Inappropriate virtual address to map.
    BadVirtAddr,
    /// Inappropriate device address to unmap.
    BadDevAddr,
    /// Out of space in the I/O MMU.
    NoDeviceSpace,
    /// Not enough privilege for the operation.
    PermissionDenied,
    /// The page was invalid for the operation.
    BadPage,
    /// Copy arguments cross a page boundary.
    BadCopyArg,
    /// Transfer page address too large.
    AddressTooBig,
    /// Operation not done; try again.
    Eagain,
    /// Out of space (maptrack handles).
    NoSpace,
}

impl GntSt {
    /// Every status, in `GNTST_*` order (-1 down to -13).
    pub const ALL: [GntSt; 13] = [
        GntSt::GeneralError,
        GntSt::BadDomain,
        GntSt::BadGntref,
        GntSt::BadHandle,
        GntSt::BadVirtAddr,
        GntSt::BadDevAddr,
        GntSt::NoDeviceSpace,
        GntSt::PermissionDenied,
        GntSt::BadPage,
        GntSt::BadCopyArg,
        GntSt::AddressTooBig,
        GntSt::Eagain,
        GntSt::NoSpace,
    ];

    /// The `GNTST_*` value (negative).
    #[must_use]
    pub fn code(self) -> i16 {
        match self {
            GntSt::GeneralError => abi::GNTST_GENERAL_ERROR,
            GntSt::BadDomain => abi::GNTST_BAD_DOMAIN,
            GntSt::BadGntref => abi::GNTST_BAD_GNTREF,
            GntSt::BadHandle => abi::GNTST_BAD_HANDLE,
            GntSt::BadVirtAddr => abi::GNTST_BAD_VIRT_ADDR,
            GntSt::BadDevAddr => abi::GNTST_BAD_DEV_ADDR,
            GntSt::NoDeviceSpace => abi::GNTST_NO_DEVICE_SPACE,
            GntSt::PermissionDenied => abi::GNTST_PERMISSION_DENIED,
            GntSt::BadPage => abi::GNTST_BAD_PAGE,
            GntSt::BadCopyArg => abi::GNTST_BAD_COPY_ARG,
            GntSt::AddressTooBig => abi::GNTST_ADDRESS_TOO_BIG,
            GntSt::Eagain => abi::GNTST_EAGAIN,
            GntSt::NoSpace => abi::GNTST_NO_SPACE,
        }
    }

    /// The status for a `GNTST_*` error value; `None` for `GNTST_okay` and
    /// values the header does not define.
    #[must_use]
    pub fn from_code(code: i16) -> Option<GntSt> {
        GntSt::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The `status` field for an operation's result: 0 or the error's code.
    #[must_use]
    pub fn status_of<T>(result: &Result<T, GntSt>) -> i16 {
        match result {
            Ok(_) => abi::GNTST_OKAY,
            Err(e) => e.code(),
        }
    }
}

impl fmt::Display for GntSt {
    /// Xen's message for the status (`GNTTABOP_error_msgs`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(abi::gntst_message(self.code()).unwrap_or("unknown grant status"))
    }
}

/// A misuse of [`Grants`], [`DomainGrants`] or [`pair`] by the kernel
/// (never caused by a guest alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// No such domain was added.
    UnknownDomain,
    /// The domain was already added.
    DomainExists,
    /// Reserved ids (`DOMID_SELF` and above) are not domains.
    ReservedDomid,
    /// `max_frames` must be from 1 to [`MAX_GRANT_FRAMES_LIMIT`].
    BadLimits,
    /// The grant table is already at its `max_frames`.
    TableFull,
    /// The domain is dying: it takes no new table frames.
    Dying,
    /// A death step on a domain that was not marked dying first.
    NotDying,
    /// A two-domain operation was given one domain's state twice.
    SameDomain,
    /// `max_version` must be 1 or 2.
    BadVersion,
    /// A version 2 table grows with its status frames
    /// ([`DomainGrants::setup_table`]), not one frame at a time.
    WrongVersion,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::UnknownDomain => "no such domain",
            Error::DomainExists => "domain already has grant tables",
            Error::ReservedDomid => "reserved domain id",
            Error::BadLimits => "bad grant-table limits",
            Error::TableFull => "grant table at its maximum size",
            Error::Dying => "domain is dying",
            Error::NotDying => "domain is not dying",
            Error::SameDomain => "one domain given as two",
            Error::BadVersion => "bad grant-table version limit",
            Error::WrongVersion => "not for this grant-table version",
        })
    }
}
