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
//! [`Grants`] holds that state for the whole machine, as Xen's
//! `xen/common/grant_table.c` does, with Xen's checks and status codes:
//! - per granting domain, its table frames (opaque `u64` handles the kernel
//!   allocated), its limit, and the *active* entries (refs pinned by a
//!   mapping or a copy: by whom, the frame the entry named, pin counts);
//! - per mapping domain, its *maptrack* table: handle to mapping.
//!
//! The crate never sees a machine address. Shared entries are reached only
//! through [`FrameWords`], which the kernel implements with atomic accesses
//! to the table frames; everything else is owned state. Operations return
//! what the kernel must do to the p2ms (see each method and `# Hazards`).
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
//! - In a live granter's table, `GTF_reading` is set in an entry iff it is
//!   active, and `GTF_writing` iff it has a writable pin, as long as the
//!   granter itself leaves those two bits alone (they are Xen's, per the
//!   header). Pins are counted per kind, so the bits follow the last pin.
//! - [`Grants::is_frame_mapped`] is exact: some active entry of the granter
//!   names that frame.
//! - A maptrack handle names only its own domain's table; handles are the
//!   lowest free index below the domain's limit.
//! - Nothing panics on guest input; every guest-visible failure is a
//!   [`GntSt`] (or an [`Errno`] where Xen returns one).
//!
//! # Locking
//!
//! None inside: the kernel holds the one [`Grants`] under one lock for
//! every call, which covers the two domains of a map or copy at once (Xen
//! takes the granter's grant-table lock and an active-entry lock instead).
//! The shared entries are also written by the granting guest at any time,
//! without any lock; that is what the compare-and-exchange protocol in
//! [`entry`] is for.
//!
//! # Hazards
//!
//! - Order of unmap: the mapper's p2m entry must be gone, and its TLBs
//!   flushed, *before* [`Grants::unmap`] clears `GTF_writing`/`GTF_reading`:
//!   the granter may reuse the frame the moment it sees them clear. Use
//!   [`Grants::check_unmap`] to validate first, then change the p2m, flush,
//!   then call `unmap` (all under the lock).
//! - The granter's frame number in an entry is the granter's own *gfn*; the
//!   kernel translates it through the granter's p2m (and fails the map with
//!   `GNTST_bad_page`, undoing it with `unmap`, if that gfn is not RAM).
//! - Domain ids are resolved before calling (`DOMID_SELF` to the caller).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use core::fmt;

pub mod entry;
pub mod grants;
pub mod maptrack;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use grants::{
    Grants, INITIAL_NR_GRANT_FRAMES, MAX_GRANT_FRAMES_LIMIT, Mapped, Released, Removal, Revoked,
    Unmapped, VersionReply,
};
pub use keel_hypercall::abi::Errno;
pub use keel_hypercall::abi::domid::DomId;
pub use keel_hypercall::abi::grant_table::{GrantHandle, GrantRef};
pub use maptrack::MapInfo;

use keel_hypercall::abi::grant_table as abi;

/// Word access to the grant-table frames, implemented by the kernel over
/// the frames it allocated (with atomic instructions: the granting guest
/// writes the same words concurrently). Frames are the opaque handles the
/// kernel gave [`Grants::add_table_frame`]; offsets are always within the
/// 4 KiB frame and aligned to the access size.
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

/// A misuse of [`Grants`] by the kernel (never caused by a guest alone).
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::UnknownDomain => "no such domain",
            Error::DomainExists => "domain already has grant tables",
            Error::ReservedDomid => "reserved domain id",
            Error::BadLimits => "bad grant-table limits",
            Error::TableFull => "grant table at its maximum size",
        })
    }
}
