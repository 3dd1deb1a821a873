//! keel's grant tables: Xen's version 1 grant-table state machine
//! (`GNTTABOP_*`), portable and host-tested.
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
//! `GTF_reading`/`GTF_writing` set in it, so the granter knows not to
//! revoke or reuse the frame.
//!
//! The state is per domain, as in Xen's `xen/common/grant_table.c`, with
//! Xen's checks and status codes. A [`DomainGrants`] holds one domain's
//! - grant table, as a granter: its table frames (opaque `u64` handles the
//!   kernel allocated), its limit, and the *active* entries (refs pinned by
//!   a mapping or a copy: by whom, the frame the entry named, pin counts);
//! - maptrack table, as a mapper: handle to mapping.
//!
//! Operations of one domain are its methods ([`domain`]); those that need
//! a mapper's and a granter's state at once are the functions of
//! [`pair`]. [`Grants`] holds every domain's state in one map, for a
//! kernel with one lock; it is built on the other two and keeps their
//! results.
//!
//! The crate never sees a machine address. Shared entries are reached only
//! through [`FrameWords`], which the kernel implements with atomic accesses
//! to the table frames; everything else is owned state. Operations return
//! what the kernel must do to the p2ms (see each function and `# Hazards`).
//!
//! Not here: grant table version 2 (refused, as by a Xen built or booted
//! with `gnttab=max-ver:1`), transitive and sub-page grants (v2 only),
//! `GNTTABOP_transfer`, `unmap_and_replace`, `swap_grant_ref`,
//! `cache_flush`, device (IOMMU) mappings, XSM.
//!
//! # Invariants
//!
//! - Every active entry has at least one pin, and all pins of an entry
//!   belong to one domain (Xen's `act->domid`).
//! - Every live maptrack slot holds exactly one map pin, of its kind, on an
//!   active entry of its granter, whose death has not completed.
//! - In a granter's table, `GTF_reading` is set in an entry iff it is
//!   active, and `GTF_writing` iff it has a writable pin, as long as the
//!   granter itself leaves those two bits alone (they are Xen's, per the
//!   header). Pins are counted per kind, so the bits follow the last pin.
//! - [`DomainGrants::is_frame_mapped`] is exact: some active entry of the
//!   granter names that frame.
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
//!   [`DomainGrants::add_table_frame`]), `query_size`, `set_version`,
//!   `get_version`, [`DomainGrants::is_frame_mapped`] (held while the
//!   kernel frees the frame, so no pin can take it meanwhile), and a copy:
//!   [`DomainGrants::acquire`] and [`DomainGrants::release`] under the
//!   *granter's* lock (per grant end; the two ends of a copy are pinned
//!   one after the other, never two locks at once). The copy itself runs
//!   unlocked between them: the pin keeps the entry and the frame, and
//!   the kernel's reference to the granter keeps its memory.
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
//!        pCPU for good (outside any hypercall, so no copy of its is in
//!        flight) and their translations flushed:
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
//!        dead domain's table frames and memory only after the TLB
//!        shootdown below and once copies of its grants in flight have
//!        dropped their references, and reuses the domid only after that.
//!
//!     Steps 1 and 2 may run in any order and interleaved with other
//!     operations; each re-checks what it finds, and a list entry whose
//!     domain has gone meanwhile is skipped (its own death has done the
//!     work).
//!
//! No operation takes three locks, and no lock is taken while one of a
//! higher domid is held, so two pCPUs can never wait on each other here.
//! The shared entries are also written by the granting guest at any time,
//! without any lock; that is what the compare-and-exchange protocol in
//! [`entry`] is for.
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
//! - The granter's frame number in an entry is the granter's own *gfn*; the
//!   kernel translates it through the granter's p2m, under the granter's
//!   lock (and fails the map with `GNTST_bad_page`, undoing it with
//!   `unmap`, if that gfn is not RAM).
//! - Domain ids are resolved before calling (`DOMID_SELF` to the caller),
//!   and a domid is not reused until its death has completed: a maptrack
//!   slot names its granter by domid alone.

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

pub use domain::{DomainGrants, INITIAL_NR_GRANT_FRAMES, MAX_GRANT_FRAMES_LIMIT, VersionReply};
pub use grants::{Grants, Removal};
pub use keel_hypercall::abi::Errno;
pub use keel_hypercall::abi::domid::DomId;
pub use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};
pub use maptrack::MapInfo;
pub use pair::{Mapped, Released, Revoked, Unmapped};

use keel_hypercall::abi::grant_table as abi;

/// Word access to the grant-table frames, implemented by the kernel over
/// the frames it allocated (with atomic instructions: the granting guest
/// writes the same words concurrently). Frames are the opaque handles the
/// kernel gave a table ([`DomainGrants::add_table_frame`], or the `alloc` of
/// `setup_table` and `map_table_frame`); offsets are always within the 4 KiB
/// frame and aligned to the access size.
pub trait FrameWords {
    /// Reads the u64 at `offset` (8-aligned, < 4096) of table frame `frame`.
    fn read_u64(&self, frame: u64, offset: usize) -> u64;
    /// Compare-and-exchange of the u32 at `offset` (4-aligned): returns the
    /// value found (the exchange happened iff it equals `old`).
    fn cmpxchg_u32(&mut self, frame: u64, offset: usize, old: u32, new: u32) -> u32;
    /// Atomically clears `bits` of the u16 at `offset` (2-aligned).
    fn clear_u16_bits(&mut self, frame: u64, offset: usize, bits: u16);
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
        })
    }
}
