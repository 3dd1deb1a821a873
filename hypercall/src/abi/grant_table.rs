//! `HYPERVISOR_grant_table_op` commands, grant-entry flags, status codes and
//! argument structures (`xen/include/public/grant_table.h`; the command
//! mask from `xen/common/grant_table.c`; the compat layouts are what Xen
//! generates as `compat_gnttab_*` for a 32-bit caller).
//!
//! `grant_table_op(unsigned int cmd, void *args, unsigned int count)`:
//! `args` is an array of `count` structures of the type `cmd` names. Only
//! the low [`GNTTABOP_CMD_MASK`] bits of `cmd` select the operation; the
//! bits above carry a continuation's progress and must be zero from a
//! guest except for `GNTTABOP_cache_flush` (Xen returns `-EINVAL`).
//!
//! Per-entry results are `GNTST_*` values written to each structure's
//! `status` field; the hypercall's own return value is an errno (`-EFAULT`
//! for an unreadable array, `-EINVAL` for a bad `count`), except
//! `GNTTABOP_set_version`/`get_version`, which report through the errno
//! alone.
//!
//! Layouts. The grant *entries* ([`GrantEntryV1`], [`GrantEntryV2`]) and
//! version 2's status words ([`GrantStatus`]) live in frames shared with
//! the granting guest and are the same for every guest width. Of the op
//! structures, `gnttab_setup_table` and `gnttab_get_status_frames` (a guest
//! handle), `gnttab_copy` (a `xen_pfn_t` in a union) and `gnttab_transfer`
//! (a `xen_pfn_t`) differ between native and compat, and so have a
//! `...Compat` type; the others are identical for both (every field is
//! fixed-width and naturally placed even with i386's 4-byte `u64`
//! alignment), which Xen's `xlat.lst` records by checking (`?`) rather than
//! translating (`!`) them.
//!
//! `XENMAPSPACE_grant_table` and `XENMAPIDX_grant_table_status` are in
//! [`super::memory`].

use super::domid::DomId;

/// `grant_ref_t`: index of an entry in a granting domain's grant table.
pub type GrantRef = u32;

/// `grant_handle_t`: a mapper's handle for one mapping (its maptrack index).
pub type GrantHandle = u32;

// `enum grant_table_op`: values of `cmd`.
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
pub const GNTTABOP_TRANSFER: u32 = 4;
pub const GNTTABOP_COPY: u32 = 5;
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
pub const GNTTABOP_SET_VERSION: u32 = 8;
pub const GNTTABOP_GET_STATUS_FRAMES: u32 = 9;
pub const GNTTABOP_GET_VERSION: u32 = 10;
pub const GNTTABOP_SWAP_GRANT_REF: u32 = 11;
pub const GNTTABOP_CACHE_FLUSH: u32 = 12;

/// Bits of `cmd` above this carry a continuation's progress
/// (`GNTTABOP_CONTINUATION_ARG_SHIFT`, `xen/common/grant_table.c`).
pub const GNTTABOP_CONTINUATION_ARG_SHIFT: u32 = 12;
/// Bits of `cmd` naming the operation.
pub const GNTTABOP_CMD_MASK: u32 = (1 << GNTTABOP_CONTINUATION_ARG_SHIFT) - 1;
/// Bits of `cmd` that are not the operation.
pub const GNTTABOP_ARG_MASK: u32 = !GNTTABOP_CMD_MASK;

/// Version 1 entries per 4 KiB grant-table frame (4096 / 8).
pub const GRANT_ENTRIES_PER_FRAME_V1: u32 = 512;

/// Version 2 entries per 4 KiB grant-table frame (4096 / 16).
pub const GRANT_ENTRIES_PER_FRAME_V2: u32 = 256;

/// `grant_status_t` entries per 4 KiB status frame (4096 / 2): one status
/// frame serves eight version 2 table frames.
pub const GRANT_STATUS_PER_FRAME: u32 = 2048;

/// `grant_status_t`: in version 2, the word of a *status frame* holding an
/// entry's `GTF_reading`/`GTF_writing` (\[XEN\]), one per grant ref: entry
/// `r`'s is word `r % 2048` of status frame `r / 2048`.
pub type GrantStatus = u16;

/// The first entries survive a version change and may be filled in by the
/// toolstack at domain creation.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Reserved entry granting the console ring to the console backend.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Reserved entry granting the xenstore ring to xenstored.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

// `GTF_*`: `grant_entry_v1.flags`. The low two bits are the type.
/// The entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `domid` may map or copy to/from `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `domid` may transfer one page to this domain; Xen writes `frame`.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `domid` may use another domain's grant through this one (v2 only).
pub const GTF_TRANSITIVE: u16 = 3;
/// The type bits.
pub const GTF_TYPE_MASK: u16 = 3;

// Subflags of `GTF_permit_access` (and `GTF_transitive`). [GST] is set by
// the granting guest, [XEN] by the hypervisor.
/// \[GST\] Read-only mappings and accesses only.
pub const GTF_READONLY: u16 = 1 << 2;
/// \[XEN\] Currently mapped or accessed (for reading or writing).
pub const GTF_READING: u16 = 1 << 3;
/// \[XEN\] Currently mapped or accessed for writing.
pub const GTF_WRITING: u16 = 1 << 4;
/// \[GST\] x86 cache attribute for mappings: write-through.
pub const GTF_PWT: u16 = 1 << 5;
/// \[GST\] x86 cache attribute for mappings: cache disable.
pub const GTF_PCD: u16 = 1 << 6;
/// \[GST\] x86 cache attribute for mappings: PAT.
pub const GTF_PAT: u16 = 1 << 7;
/// \[GST\] Grants a subrange of the page: copy only, never map.
pub const GTF_SUB_PAGE: u16 = 1 << 8;

// Subflags of `GTF_accept_transfer`.
/// \[XEN\] Xen is committed to the transfer; the guest must not touch the
/// entry until [`GTF_TRANSFER_COMPLETED`].
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// \[XEN\] The transfer is done and `frame` holds the page.
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

// `GNTTAB_CACHE_*`: `gnttab_cache_flush.op`.
/// Write back the range's dirty cache lines.
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// Invalidate the range's cache lines.
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// `a` is a grant ref rather than a bus address (not implemented by Xen:
/// refused with the other unknown bits).
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

// `GNTMAP_*`: `gnttab_map_grant_ref.flags`.
/// Map for access by I/O devices.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// Map for access by host CPUs.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// The mapping is read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// With `GNTMAP_host_map` (PV): usable by the current application too.
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// With `GNTMAP_host_map` (PV): `host_addr` is the machine address of a PTE.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// Shift of the bits placed in guest-available PTE bits
/// (`XENFEAT_gnttab_map_avail_bits`).
pub const GNTMAP_GUEST_AVAIL0: u32 = 16;
/// Mask of the guest-available PTE bits.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = !0 << GNTMAP_GUEST_AVAIL0;

// `GNTCOPY_*`: `gnttab_copy.flags`.
/// `source.u` is a grant ref of `source.domid` (else the caller's gmfn).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `dest.u` is a grant ref of `dest.domid` (else the caller's gmfn).
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

// `enum grant_status`: per-op results. All errors are negative.
/// Normal return.
pub const GNTST_OKAY: i16 = 0;
/// General undefined error.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// Unrecognised domain id.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// Unrecognised or inappropriate grant ref.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// Unrecognised or inappropriate handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// Inappropriate virtual address to map.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// Inappropriate device address to unmap.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// Out of space in the I/O MMU.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// Not enough privilege for the operation.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// The page was invalid for the operation.
pub const GNTST_BAD_PAGE: i16 = -9;
/// Copy arguments cross a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// Transfer page address too large.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// Operation not done; try again.
pub const GNTST_EAGAIN: i16 = -12;
/// Out of space (handles etc).
pub const GNTST_NO_SPACE: i16 = -13;

/// The name of a `GNTST_*` value without the prefix (`"bad_gntref"`), or
/// `None` for a value the header does not define.
#[must_use]
pub fn gntst_name(status: i16) -> Option<&'static str> {
    Some(match status {
        0 => "okay",
        -1 => "general_error",
        -2 => "bad_domain",
        -3 => "bad_gntref",
        -4 => "bad_handle",
        -5 => "bad_virt_addr",
        -6 => "bad_dev_addr",
        -7 => "no_device_space",
        -8 => "permission_denied",
        -9 => "bad_page",
        -10 => "bad_copy_arg",
        -11 => "address_too_big",
        -12 => "eagain",
        -13 => "no_space",
        _ => return None,
    })
}

/// The message Xen gives a `GNTST_*` value (`GNTTABOP_error_msgs`), or
/// `None` for a value the header does not define.
#[must_use]
pub fn gntst_message(status: i16) -> Option<&'static str> {
    Some(match status {
        0 => "okay",
        -1 => "undefined error",
        -2 => "unrecognised domain id",
        -3 => "invalid grant reference",
        -4 => "invalid mapping handle",
        -5 => "invalid virtual address",
        -6 => "invalid device address",
        -7 => "no spare translation slot in the I/O MMU",
        -8 => "permission denied",
        -9 => "bad page",
        -10 => "copy arguments cross page boundary",
        -11 => "page address size too large",
        -12 => "operation not done; try again",
        -13 => "out of space",
        _ => return None,
    })
}

abi_struct! {
    /// `struct grant_entry_v1`: one entry of a version 1 grant table, in a
    /// frame shared with the granting guest; same for every guest width.
    /// The guest writes `domid` and `frame` before `flags`; Xen updates
    /// `flags` only with a compare-and-exchange of the first 32 bits
    /// (`flags` and `domid` together), so it sees a concurrent change.
    #[repr(C)]
    pub struct GrantEntryV1(8) {
        /// \[XEN,GST\]: `GTF_*` type and flags.
        pub flags: u16 => 0,
        /// \[GST\]: the domain being granted access.
        pub domid: DomId => 2,
        /// \[GST\]: for `GTF_permit_access`, the granter's gfn that `domid`
        /// may map and access.
        pub frame: u32 => 4,
    }
}

impl GrantEntryV1 {
    /// Decodes the entry from its 64-bit little-endian word (an aligned
    /// 8-byte read of the shared frame).
    #[must_use]
    pub fn from_word(word: u64) -> Self {
        Self::from_bytes(&word.to_le_bytes())
    }

    /// The entry as one 64-bit little-endian word.
    #[must_use]
    pub fn to_word(&self) -> u64 {
        u64::from_le_bytes(self.to_bytes())
    }

    /// The first 32 bits (`flags` in the low half, `domid` in the high),
    /// the unit Xen compares and exchanges.
    #[must_use]
    pub fn header(&self) -> u32 {
        u32::from(self.flags) | (u32::from(self.domid) << 16)
    }
}

abi_struct! {
    /// `struct grant_entry_header`: the prefix common to both versions'
    /// entries (`flags` then `domid`, the 32 bits Xen compares and
    /// exchanges in version 1).
    #[repr(C)]
    pub struct GrantEntryHeader(4) {
        /// \[XEN,GST\] (version 1) or \[GST\] (version 2): `GTF_*` type and
        /// flags. In version 2 `GTF_reading`/`GTF_writing` live in the
        /// entry's [`GrantStatus`] word instead.
        pub flags: u16 => 0,
        /// \[GST\]: the domain being granted access.
        pub domid: DomId => 2,
    }
}

abi_struct! {
    /// `grant_entry_v2.full_page`: a whole-page `GTF_permit_access` grant
    /// (no `GTF_sub_page`), or a `GTF_accept_transfer` slot.
    #[repr(C)]
    pub struct GrantEntryV2FullPage(16) {
        /// \[GST\]: type, flags and grantee.
        pub hdr: GrantEntryHeader => 0,
        /// Padding, ignored.
        pub pad0: u32 => 4,
        /// \[GST\]: the granter's gfn `hdr.domid` may map and access.
        pub frame: u64 => 8,
    }
}

abi_struct! {
    /// `grant_entry_v2.sub_page`: a `GTF_permit_access | GTF_sub_page`
    /// grant of bytes `[page_off, page_off + length)` of `frame`, which
    /// may be copied but never mapped.
    #[repr(C)]
    pub struct GrantEntryV2SubPage(16) {
        /// \[GST\]: type, flags and grantee.
        pub hdr: GrantEntryHeader => 0,
        /// \[GST\]: first byte granted.
        pub page_off: u16 => 4,
        /// \[GST\]: bytes granted.
        pub length: u16 => 6,
        /// \[GST\]: the granter's gfn.
        pub frame: u64 => 8,
    }
}

abi_struct! {
    /// `grant_entry_v2.transitive`: a `GTF_transitive` grant: `hdr.domid`
    /// may copy (never map) through grant `gref` of `trans_domid`, which
    /// must be granted to this domain. 12 bytes; the union is 16.
    #[repr(C)]
    pub struct GrantEntryV2Transitive(12) {
        /// \[GST\]: type, flags and grantee.
        pub hdr: GrantEntryHeader => 0,
        /// \[GST\]: the domain whose grant is passed on.
        pub trans_domid: DomId => 4,
        /// Padding, ignored.
        pub pad0: u16 => 6,
        /// \[GST\]: the grant ref in `trans_domid`'s table.
        pub gref: GrantRef => 8,
    }
}

abi_struct! {
    /// `union grant_entry_v2`: one entry of a version 2 grant table (16
    /// bytes, in a frame shared with the granting guest; the same for
    /// every guest width). Kept as the union's `__spacer[4]` member; read
    /// it as the member its `hdr.flags` select with [`Self::hdr`],
    /// [`Self::full_page`], [`Self::sub_page`] and [`Self::transitive`].
    #[repr(C)]
    pub struct GrantEntryV2(16) {
        /// \[GST\]: the union's bytes, as four 32-bit words.
        pub raw: [u32; 4] => 0,
    }
}

impl GrantEntryV2 {
    /// Decodes the entry from its two 64-bit little-endian words (aligned
    /// 8-byte reads at offsets 0 and 8).
    #[must_use]
    pub fn from_words(lo: u64, hi: u64) -> Self {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&lo.to_le_bytes());
        b[8..].copy_from_slice(&hi.to_le_bytes());
        Self::from_bytes(&b)
    }

    /// The entry as its two 64-bit little-endian words.
    #[must_use]
    pub fn to_words(&self) -> [u64; 2] {
        let b = self.to_bytes();
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        [word(0), word(8)]
    }

    /// The union read as `hdr`.
    #[must_use]
    pub fn hdr(&self) -> GrantEntryHeader {
        let b = self.to_bytes();
        GrantEntryHeader::from_bytes(&[b[0], b[1], b[2], b[3]])
    }

    /// The union read as `full_page`.
    #[must_use]
    pub fn full_page(&self) -> GrantEntryV2FullPage {
        GrantEntryV2FullPage::from_bytes(&self.to_bytes())
    }

    /// The union read as `sub_page`.
    #[must_use]
    pub fn sub_page(&self) -> GrantEntryV2SubPage {
        GrantEntryV2SubPage::from_bytes(&self.to_bytes())
    }

    /// The union read as `transitive` (its first 12 bytes).
    #[must_use]
    pub fn transitive(&self) -> GrantEntryV2Transitive {
        let b = self.to_bytes();
        let mut t = [0u8; GrantEntryV2Transitive::SIZE];
        t.copy_from_slice(&b[..GrantEntryV2Transitive::SIZE]);
        GrantEntryV2Transitive::from_bytes(&t)
    }
}

impl From<GrantEntryV2FullPage> for GrantEntryV2 {
    fn from(e: GrantEntryV2FullPage) -> Self {
        Self::from_bytes(&e.to_bytes())
    }
}

impl From<GrantEntryV2SubPage> for GrantEntryV2 {
    fn from(e: GrantEntryV2SubPage) -> Self {
        Self::from_bytes(&e.to_bytes())
    }
}

impl From<GrantEntryV2Transitive> for GrantEntryV2 {
    /// The transitive member, the union's last four bytes zero.
    fn from(e: GrantEntryV2Transitive) -> Self {
        let mut b = [0u8; 16];
        b[..GrantEntryV2Transitive::SIZE].copy_from_slice(&e.to_bytes());
        Self::from_bytes(&b)
    }
}

abi_struct! {
    /// `struct gnttab_map_grant_ref` (`GNTTABOP_map_grant_ref`); the same
    /// for native and compat callers.
    #[repr(C)]
    pub struct GnttabMapGrantRef(32) {
        /// IN: where to map: for an HVM/PVH caller (`GNTMAP_host_map`
        /// alone) the guest-physical address; for PV a virtual address or,
        /// with `GNTMAP_contains_pte`, a PTE's machine address.
        pub host_addr: u64 => 0,
        /// IN: `GNTMAP_*`.
        pub flags: u32 => 8,
        /// IN: the grant ref in `dom`'s table.
        pub ref_: GrantRef => 12,
        /// IN: the granting domain.
        pub dom: DomId => 16,
        /// OUT: `GNTST_*`.
        pub status: i16 => 18,
        /// OUT: the handle to unmap with.
        pub handle: GrantHandle => 20,
        /// OUT: with `GNTMAP_device_map`, the bus address of the frame.
        pub dev_bus_addr: u64 => 24,
    }
}

abi_struct! {
    /// `struct gnttab_unmap_grant_ref` (`GNTTABOP_unmap_grant_ref`); the
    /// same for native and compat callers.
    #[repr(C)]
    pub struct GnttabUnmapGrantRef(24) {
        /// IN: the host address the mapping was made at, or 0 to leave the
        /// host mapping alone.
        pub host_addr: u64 => 0,
        /// IN: the device address returned by the map, or 0 to ignore.
        pub dev_bus_addr: u64 => 8,
        /// IN: the handle returned by the map.
        pub handle: GrantHandle => 16,
        /// OUT: `GNTST_*`.
        pub status: i16 => 20,
        /// Padding the C compiler inserts at the end.
        pub pad: u16 => 22,
    }
}

abi_struct! {
    /// `struct gnttab_setup_table` (`GNTTABOP_setup_table`), native
    /// (64-bit caller). `count` must be 1.
    #[repr(C)]
    pub struct GnttabSetupTable(24) {
        /// IN: the domain (`DOMID_SELF` for the caller).
        pub dom: DomId => 0,
        /// Padding the C compiler inserts before `nr_frames`.
        pub pad0: u16 => 2,
        /// IN: frames wanted, at least; also the length of `frame_list`.
        pub nr_frames: u32 => 4,
        /// OUT: `GNTST_*`.
        pub status: i16 => 8,
        /// Padding the C compiler inserts before `frame_list`.
        pub pad1: [u16; 3] => 10,
        /// IN: guest handle of an array of `xen_pfn_t` (64-bit), OUT: the
        /// table's frames.
        pub frame_list: u64 => 16,
    }
}

abi_struct! {
    /// `struct compat_gnttab_setup_table` (32-bit caller).
    #[repr(C)]
    pub struct GnttabSetupTableCompat(16) {
        /// IN: as in [`GnttabSetupTable`].
        pub dom: DomId => 0,
        /// Padding the C compiler inserts before `nr_frames`.
        pub pad0: u16 => 2,
        /// IN: frames wanted, at least; also the length of `frame_list`.
        pub nr_frames: u32 => 4,
        /// OUT: `GNTST_*`.
        pub status: i16 => 8,
        /// Padding the C compiler inserts before `frame_list`.
        pub pad1: u16 => 10,
        /// IN: 32-bit guest handle of an array of 32-bit `xen_pfn_t`.
        pub frame_list: u32 => 12,
    }
}

impl From<GnttabSetupTableCompat> for GnttabSetupTable {
    /// Widens a compat request (zero extension of the handle).
    fn from(c: GnttabSetupTableCompat) -> Self {
        GnttabSetupTable {
            dom: c.dom,
            pad0: 0,
            nr_frames: c.nr_frames,
            status: c.status,
            pad1: [0; 3],
            frame_list: u64::from(c.frame_list),
        }
    }
}

abi_struct! {
    /// `struct gnttab_copy_ptr`, native (64-bit caller): one end of a copy.
    /// `u` is the C union `{ grant_ref_t ref; xen_pfn_t gmfn; }`, kept as
    /// its 8 bytes: a grant ref is the low 32 bits ([`Self::gref`]), a
    /// gmfn all 64 ([`Self::gmfn`]).
    #[repr(C)]
    pub struct GnttabCopyPtr(16) {
        /// IN: the union `u`: a grant ref (with the matching
        /// `GNTCOPY_*_gref` flag) or the caller's own gmfn.
        pub u: u64 => 0,
        /// IN: whose grant ref (`DOMID_SELF` for a gmfn).
        pub domid: DomId => 8,
        /// IN: byte offset in the frame.
        pub offset: u16 => 10,
        /// Padding the C compiler inserts at the end.
        pub pad: u32 => 12,
    }
}

impl GnttabCopyPtr {
    /// A grant-ref end: `domid`'s grant `gref`, at `offset`.
    #[must_use]
    pub fn by_gref(gref: GrantRef, domid: DomId, offset: u16) -> Self {
        Self {
            u: u64::from(gref),
            domid,
            offset,
            pad: 0,
        }
    }

    /// A frame end: the caller's gmfn, at `offset`.
    #[must_use]
    pub fn by_gmfn(gmfn: u64, domid: DomId, offset: u16) -> Self {
        Self {
            u: gmfn,
            domid,
            offset,
            pad: 0,
        }
    }

    /// `u.ref`: the low 32 bits of the union (the rest is ignored).
    #[must_use]
    pub fn gref(&self) -> GrantRef {
        // Deliberate truncation: `ref` overlays the union's first 4 bytes.
        self.u as u32
    }

    /// `u.gmfn`: the whole union.
    #[must_use]
    pub fn gmfn(&self) -> u64 {
        self.u
    }
}

abi_struct! {
    /// `struct compat_gnttab_copy_ptr` (32-bit caller): the union is 4
    /// bytes, since both a grant ref and a compat `xen_pfn_t` are.
    #[repr(C)]
    pub struct GnttabCopyPtrCompat(8) {
        /// IN: the union `u`: a grant ref or a 32-bit gmfn.
        pub u: u32 => 0,
        /// IN: whose grant ref (`DOMID_SELF` for a gmfn).
        pub domid: DomId => 4,
        /// IN: byte offset in the frame.
        pub offset: u16 => 6,
    }
}

impl From<GnttabCopyPtrCompat> for GnttabCopyPtr {
    /// Widens a compat end (zero extension of the union).
    fn from(c: GnttabCopyPtrCompat) -> Self {
        GnttabCopyPtr {
            u: u64::from(c.u),
            domid: c.domid,
            offset: c.offset,
            pad: 0,
        }
    }
}

abi_struct! {
    /// `struct gnttab_copy` (`GNTTABOP_copy`), native (64-bit caller).
    #[repr(C)]
    pub struct GnttabCopy(40) {
        /// IN: where to copy from.
        pub source: GnttabCopyPtr => 0,
        /// IN: where to copy to.
        pub dest: GnttabCopyPtr => 16,
        /// IN: bytes to copy; neither end may cross its page.
        pub len: u16 => 32,
        /// IN: `GNTCOPY_*`.
        pub flags: u16 => 34,
        /// OUT: `GNTST_*`.
        pub status: i16 => 36,
        /// Padding the C compiler inserts at the end.
        pub pad: u16 => 38,
    }
}

abi_struct! {
    /// `struct compat_gnttab_copy` (32-bit caller).
    #[repr(C)]
    pub struct GnttabCopyCompat(24) {
        /// IN: where to copy from.
        pub source: GnttabCopyPtrCompat => 0,
        /// IN: where to copy to.
        pub dest: GnttabCopyPtrCompat => 8,
        /// IN: bytes to copy; neither end may cross its page.
        pub len: u16 => 16,
        /// IN: `GNTCOPY_*`.
        pub flags: u16 => 18,
        /// OUT: `GNTST_*`.
        pub status: i16 => 20,
        /// Padding the C compiler inserts at the end.
        pub pad: u16 => 22,
    }
}

impl From<GnttabCopyCompat> for GnttabCopy {
    /// Widens a compat request (Xen's `XLAT_gnttab_copy`).
    fn from(c: GnttabCopyCompat) -> Self {
        GnttabCopy {
            source: c.source.into(),
            dest: c.dest.into(),
            len: c.len,
            flags: c.flags,
            status: c.status,
            pad: 0,
        }
    }
}

abi_struct! {
    /// `struct gnttab_query_size` (`GNTTABOP_query_size`); the same for
    /// native and compat callers. `count` must be 1.
    #[repr(C)]
    pub struct GnttabQuerySize(16) {
        /// IN: the domain (`DOMID_SELF` for the caller).
        pub dom: DomId => 0,
        /// Padding the C compiler inserts before `nr_frames`.
        pub pad0: u16 => 2,
        /// OUT: current number of grant-table frames.
        pub nr_frames: u32 => 4,
        /// OUT: the most frames the table may grow to.
        pub max_nr_frames: u32 => 8,
        /// OUT: `GNTST_*`.
        pub status: i16 => 12,
        /// Padding the C compiler inserts at the end.
        pub pad1: u16 => 14,
    }
}

abi_struct! {
    /// `struct gnttab_set_version` (`GNTTABOP_set_version`); the same for
    /// native and compat callers. `count` must be 1. The result is the
    /// hypercall's errno; `version` is written back with the version in
    /// effect afterwards, whatever the result.
    #[repr(C)]
    pub struct GnttabSetVersion(4) {
        /// IN: the version wanted (1 or 2). OUT: the version in effect.
        pub version: u32 => 0,
    }
}

abi_struct! {
    /// `struct gnttab_get_version` (`GNTTABOP_get_version`); the same for
    /// native and compat callers. `count` must be 1.
    #[repr(C)]
    pub struct GnttabGetVersion(8) {
        /// IN: the domain (`DOMID_SELF` for the caller).
        pub dom: DomId => 0,
        /// IN: padding, ignored.
        pub pad: u16 => 2,
        /// OUT: the domain's grant-table version.
        pub version: u32 => 4,
    }
}

abi_struct! {
    /// `struct gnttab_transfer` (`GNTTABOP_transfer`), native (64-bit
    /// caller). Only PV guests may transfer pages.
    #[repr(C)]
    pub struct GnttabTransfer(24) {
        /// IN: the caller's frame to give away (`xen_pfn_t`; a gfn for a
        /// translated caller).
        pub mfn: u64 => 0,
        /// IN: the domain to give it to.
        pub domid: DomId => 8,
        /// Padding the C compiler inserts before `ref_`.
        pub pad0: u16 => 10,
        /// IN: its `GTF_accept_transfer` grant ref.
        pub ref_: GrantRef => 12,
        /// OUT: `GNTST_*`.
        pub status: i16 => 16,
        /// Padding the C compiler inserts at the end.
        pub pad1: [u16; 3] => 18,
    }
}

abi_struct! {
    /// `struct compat_gnttab_transfer` (32-bit caller).
    #[repr(C)]
    pub struct GnttabTransferCompat(16) {
        /// IN: the caller's frame (32-bit `xen_pfn_t`).
        pub mfn: u32 => 0,
        /// IN: the domain to give it to.
        pub domid: DomId => 4,
        /// Padding the C compiler inserts before `ref_`.
        pub pad0: u16 => 6,
        /// IN: its `GTF_accept_transfer` grant ref.
        pub ref_: GrantRef => 8,
        /// OUT: `GNTST_*`.
        pub status: i16 => 12,
        /// Padding the C compiler inserts at the end.
        pub pad1: u16 => 14,
    }
}

impl From<GnttabTransferCompat> for GnttabTransfer {
    /// Widens a compat request (Xen's `XLAT_gnttab_transfer`).
    fn from(c: GnttabTransferCompat) -> Self {
        GnttabTransfer {
            mfn: u64::from(c.mfn),
            domid: c.domid,
            pad0: 0,
            ref_: c.ref_,
            status: c.status,
            pad1: [0; 3],
        }
    }
}

abi_struct! {
    /// `struct gnttab_get_status_frames` (`GNTTABOP_get_status_frames`),
    /// native (64-bit caller). `count` must be 1.
    #[repr(C)]
    pub struct GnttabGetStatusFrames(16) {
        /// IN: frames wanted; also the length of `frame_list`.
        pub nr_frames: u32 => 0,
        /// IN: the domain (`DOMID_SELF` for the caller).
        pub dom: DomId => 4,
        /// OUT: `GNTST_*`.
        pub status: i16 => 6,
        /// IN: guest handle of an array of `uint64_t`, OUT: the status
        /// frames' gfns.
        pub frame_list: u64 => 8,
    }
}

abi_struct! {
    /// `struct compat_gnttab_get_status_frames` (32-bit caller): the
    /// handle is 32 bits, the array's elements stay `uint64_t`.
    #[repr(C)]
    pub struct GnttabGetStatusFramesCompat(12) {
        /// IN: frames wanted; also the length of `frame_list`.
        pub nr_frames: u32 => 0,
        /// IN: the domain (`DOMID_SELF` for the caller).
        pub dom: DomId => 4,
        /// OUT: `GNTST_*`.
        pub status: i16 => 6,
        /// IN: 32-bit guest handle of an array of `uint64_t`.
        pub frame_list: u32 => 8,
    }
}

impl From<GnttabGetStatusFramesCompat> for GnttabGetStatusFrames {
    /// Widens a compat request (zero extension of the handle).
    fn from(c: GnttabGetStatusFramesCompat) -> Self {
        GnttabGetStatusFrames {
            nr_frames: c.nr_frames,
            dom: c.dom,
            status: c.status,
            frame_list: u64::from(c.frame_list),
        }
    }
}

abi_struct! {
    /// `struct gnttab_swap_grant_ref` (`GNTTABOP_swap_grant_ref`): swaps
    /// two of the caller's entries (and in version 2 their status words);
    /// the same for native and compat callers.
    #[repr(C)]
    pub struct GnttabSwapGrantRef(12) {
        /// IN: one grant ref of the caller's table.
        pub ref_a: GrantRef => 0,
        /// IN: the other.
        pub ref_b: GrantRef => 4,
        /// OUT: `GNTST_*`.
        pub status: i16 => 8,
        /// Padding the C compiler inserts at the end.
        pub pad: u16 => 10,
    }
}

abi_struct! {
    /// `struct gnttab_cache_flush` (`GNTTABOP_cache_flush`): cache
    /// maintenance on part of a page another domain granted to the caller;
    /// the same for native and compat callers (the union's `uint64_t` keeps
    /// it 16 bytes). The hypercall's result is an errno; there is no status.
    #[repr(C)]
    pub struct GnttabCacheFlush(16) {
        /// IN: the union `a`: `dev_bus_addr` (the machine address of the
        /// page, as a map returned it) or, with
        /// [`GNTTAB_CACHE_SOURCE_GREF`], a grant ref in the low 32 bits.
        pub a: u64 => 0,
        /// IN: byte offset in the page.
        pub offset: u16 => 8,
        /// IN: bytes.
        pub length: u16 => 10,
        /// IN: `GNTTAB_CACHE_*`.
        pub op: u32 => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_grant_table_h() {
        assert_eq!(
            [
                GNTTABOP_MAP_GRANT_REF,
                GNTTABOP_UNMAP_GRANT_REF,
                GNTTABOP_SETUP_TABLE,
                GNTTABOP_DUMP_TABLE,
                GNTTABOP_TRANSFER,
                GNTTABOP_COPY,
                GNTTABOP_QUERY_SIZE,
                GNTTABOP_UNMAP_AND_REPLACE,
                GNTTABOP_SET_VERSION,
                GNTTABOP_GET_STATUS_FRAMES,
                GNTTABOP_GET_VERSION,
                GNTTABOP_SWAP_GRANT_REF,
                GNTTABOP_CACHE_FLUSH,
            ],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert_eq!((GNTTABOP_CMD_MASK, GNTTABOP_ARG_MASK), (0xfff, 0xffff_f000));
        assert_eq!(
            [
                GTF_INVALID,
                GTF_PERMIT_ACCESS,
                GTF_ACCEPT_TRANSFER,
                GTF_TRANSITIVE,
                GTF_TYPE_MASK
            ],
            [0, 1, 2, 3, 3]
        );
        assert_eq!(
            [
                GTF_READONLY,
                GTF_READING,
                GTF_WRITING,
                GTF_PWT,
                GTF_PCD,
                GTF_PAT,
                GTF_SUB_PAGE
            ],
            [0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100]
        );
        assert_eq!((GTF_TRANSFER_COMMITTED, GTF_TRANSFER_COMPLETED), (0x4, 0x8));
        assert_eq!(
            [
                GNTMAP_DEVICE_MAP,
                GNTMAP_HOST_MAP,
                GNTMAP_READONLY,
                GNTMAP_APPLICATION_MAP,
                GNTMAP_CONTAINS_PTE
            ],
            [1, 2, 4, 8, 16]
        );
        assert_eq!(GNTMAP_GUEST_AVAIL_MASK, 0xffff_0000);
        assert_eq!((GNTCOPY_SOURCE_GREF, GNTCOPY_DEST_GREF), (1, 2));
        assert_eq!(
            (
                GNTTAB_NR_RESERVED_ENTRIES,
                GNTTAB_RESERVED_CONSOLE,
                GNTTAB_RESERVED_XENSTORE
            ),
            (8, 0, 1)
        );
        assert_eq!(
            GRANT_ENTRIES_PER_FRAME_V1 as usize * GrantEntryV1::SIZE,
            4096
        );
    }

    #[test]
    fn status_codes_and_names() {
        let all = [
            (GNTST_OKAY, "okay"),
            (GNTST_GENERAL_ERROR, "general_error"),
            (GNTST_BAD_DOMAIN, "bad_domain"),
            (GNTST_BAD_GNTREF, "bad_gntref"),
            (GNTST_BAD_HANDLE, "bad_handle"),
            (GNTST_BAD_VIRT_ADDR, "bad_virt_addr"),
            (GNTST_BAD_DEV_ADDR, "bad_dev_addr"),
            (GNTST_NO_DEVICE_SPACE, "no_device_space"),
            (GNTST_PERMISSION_DENIED, "permission_denied"),
            (GNTST_BAD_PAGE, "bad_page"),
            (GNTST_BAD_COPY_ARG, "bad_copy_arg"),
            (GNTST_ADDRESS_TOO_BIG, "address_too_big"),
            (GNTST_EAGAIN, "eagain"),
            (GNTST_NO_SPACE, "no_space"),
        ];
        for (i, (code, name)) in all.into_iter().enumerate() {
            assert_eq!(i32::from(code), -(i as i32), "codes run 0, -1, ... -13");
            assert_eq!(gntst_name(code), Some(name));
            assert!(gntst_message(code).is_some());
        }
        assert_eq!(gntst_message(GNTST_NO_SPACE), Some("out of space"));
        assert_eq!(gntst_name(1), None);
        assert_eq!(gntst_name(-14), None);
        assert_eq!(gntst_message(i16::MIN), None);
    }

    #[test]
    fn grant_entry_v1_word() {
        let e = GrantEntryV1 {
            flags: GTF_PERMIT_ACCESS | GTF_READONLY,
            domid: 7,
            frame: 0x1234_5678,
        };
        assert_eq!(e.to_bytes(), [0x05, 0, 7, 0, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(e.to_word(), 0x1234_5678_0007_0005);
        assert_eq!(e.header(), 0x0007_0005);
        assert_eq!(GrantEntryV1::from_word(e.to_word()), e);
    }

    #[test]
    fn map_and_unmap_bytes() {
        let m = GnttabMapGrantRef {
            host_addr: 0x1_0000_2000,
            flags: GNTMAP_HOST_MAP | GNTMAP_READONLY,
            ref_: 9,
            dom: 3,
            status: GNTST_BAD_GNTREF,
            handle: 0xaabb_ccdd,
            dev_bus_addr: 0x5000,
        };
        let b = m.to_bytes();
        assert_eq!(b[8..12], [6, 0, 0, 0]);
        assert_eq!(b[12..16], [9, 0, 0, 0]);
        assert_eq!(b[16..18], [3, 0]);
        assert_eq!(b[18..20], (-3i16).to_le_bytes());
        assert_eq!(b[20..24], [0xdd, 0xcc, 0xbb, 0xaa]);
        assert_eq!(GnttabMapGrantRef::from_bytes(&b), m);

        let u = GnttabUnmapGrantRef {
            host_addr: 1,
            dev_bus_addr: 2,
            handle: 3,
            status: -4,
            pad: 0,
        };
        let b = u.to_bytes();
        assert_eq!(b[16..20], [3, 0, 0, 0]);
        assert_eq!(b[20..22], (-4i16).to_le_bytes());
        assert_eq!(GnttabUnmapGrantRef::from_bytes(&b), u);
    }

    #[test]
    fn setup_table_both_widths() {
        let mut c = [0u8; GnttabSetupTableCompat::SIZE];
        c[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
        c[4..8].copy_from_slice(&4u32.to_le_bytes());
        c[12..16].copy_from_slice(&0x8000_1000u32.to_le_bytes());
        let compat = GnttabSetupTableCompat::from_bytes(&c);
        let native = GnttabSetupTable::from(compat);
        assert_eq!(
            (native.dom, native.nr_frames, native.frame_list),
            (0x7ff0, 4, 0x8000_1000)
        );
        let b = native.to_bytes();
        assert_eq!(b[4..8], [4, 0, 0, 0]);
        assert_eq!(b[16..24], 0x8000_1000u64.to_le_bytes());
        assert_eq!(core::mem::offset_of!(GnttabSetupTable, status), 8);
        assert_eq!(core::mem::offset_of!(GnttabSetupTableCompat, status), 8);
    }

    #[test]
    fn copy_both_widths_and_the_union() {
        let p = GnttabCopyPtr::by_gref(0x55, 2, 0x80);
        assert_eq!((p.gref(), p.gmfn()), (0x55, 0x55));
        let b = p.to_bytes();
        assert_eq!(b[0..4], [0x55, 0, 0, 0]);
        assert_eq!(b[8..12], [2, 0, 0x80, 0]);
        // A ref is the union's first four bytes; a gmfn all eight.
        let g = GnttabCopyPtr::by_gmfn(0x1_0000_0007, 0x7ff0, 0);
        assert_eq!((g.gref(), g.gmfn()), (7, 0x1_0000_0007));

        let mut c = [0u8; GnttabCopyCompat::SIZE];
        c[0..4].copy_from_slice(&11u32.to_le_bytes());
        c[4..6].copy_from_slice(&1u16.to_le_bytes());
        c[6..8].copy_from_slice(&16u16.to_le_bytes());
        c[8..12].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        c[12..14].copy_from_slice(&0x7ff0u16.to_le_bytes());
        c[16..18].copy_from_slice(&512u16.to_le_bytes());
        c[18..20].copy_from_slice(&GNTCOPY_SOURCE_GREF.to_le_bytes());
        let n = GnttabCopy::from(GnttabCopyCompat::from_bytes(&c));
        assert_eq!(
            (n.source.gref(), n.source.domid, n.source.offset),
            (11, 1, 16)
        );
        assert_eq!((n.dest.gmfn(), n.dest.domid), (0xffff_ffff, 0x7ff0));
        assert_eq!((n.len, n.flags), (512, GNTCOPY_SOURCE_GREF));
        let b = n.to_bytes();
        assert_eq!(b[16..24], 0xffff_ffffu64.to_le_bytes());
        assert_eq!(b[32..38], [0, 2, 1, 0, 0, 0]);
        assert_eq!(core::mem::offset_of!(GnttabCopy, status), 36);
        assert_eq!(core::mem::offset_of!(GnttabCopyCompat, status), 20);
    }

    #[test]
    fn grant_entry_v2_members() {
        assert_eq!(
            (GRANT_ENTRIES_PER_FRAME_V2 as usize) * GrantEntryV2::SIZE,
            4096
        );
        assert_eq!(
            (GRANT_STATUS_PER_FRAME as usize) * core::mem::size_of::<GrantStatus>(),
            4096
        );
        let hdr = GrantEntryHeader {
            flags: GTF_PERMIT_ACCESS | GTF_SUB_PAGE,
            domid: 3,
        };
        let sub = GrantEntryV2SubPage {
            hdr,
            page_off: 0x100,
            length: 0x80,
            frame: 0x1_2345_6789,
        };
        let e = GrantEntryV2::from(sub);
        assert_eq!(e.to_bytes()[..8], [0x01, 0x01, 3, 0, 0, 1, 0x80, 0]);
        assert_eq!(e.hdr(), hdr);
        assert_eq!(e.sub_page(), sub);
        // The same bytes as `full_page`: the frame is in the same place.
        assert_eq!(e.full_page().frame, 0x1_2345_6789);
        assert_eq!(e.full_page().pad0, 0x0080_0100);
        let [lo, hi] = e.to_words();
        assert_eq!((lo, hi), (0x0080_0100_0003_0101, 0x1_2345_6789));
        assert_eq!(GrantEntryV2::from_words(lo, hi), e);

        let t = GrantEntryV2Transitive {
            hdr: GrantEntryHeader {
                flags: GTF_TRANSITIVE | GTF_READONLY,
                domid: 1,
            },
            trans_domid: 7,
            pad0: 0,
            gref: 0x55,
        };
        let e = GrantEntryV2::from(t);
        assert_eq!(e.transitive(), t);
        assert_eq!(e.to_words(), [0x0000_0007_0001_0007, 0x55]);
        let f = GrantEntryV2FullPage {
            hdr,
            pad0: 0,
            frame: u64::MAX,
        };
        assert_eq!(GrantEntryV2::from(f).full_page(), f);
    }

    #[test]
    fn v2_op_structures_both_widths() {
        let g = GnttabGetStatusFrames {
            nr_frames: 3,
            dom: 0x7ff0,
            status: -1,
            frame_list: 0x8000_1000,
        };
        let b = g.to_bytes();
        assert_eq!(b[..8], [3, 0, 0, 0, 0xf0, 0x7f, 0xff, 0xff]);
        assert_eq!(b[8..], 0x8000_1000u64.to_le_bytes());
        let mut c = [0u8; GnttabGetStatusFramesCompat::SIZE];
        c[..4].copy_from_slice(&3u32.to_le_bytes());
        c[4..6].copy_from_slice(&0x7ff0u16.to_le_bytes());
        c[6..8].copy_from_slice(&(-1i16).to_le_bytes());
        c[8..].copy_from_slice(&0x8000_1000u32.to_le_bytes());
        assert_eq!(
            GnttabGetStatusFrames::from(GnttabGetStatusFramesCompat::from_bytes(&c)),
            g
        );
        assert_eq!(
            core::mem::offset_of!(GnttabGetStatusFramesCompat, status),
            6
        );

        let s = GnttabSwapGrantRef {
            ref_a: 1,
            ref_b: 0x0203_0405,
            status: GNTST_EAGAIN,
            pad: 0,
        };
        assert_eq!(s.to_bytes(), [1, 0, 0, 0, 5, 4, 3, 2, 0xf4, 0xff, 0, 0]);

        let f = GnttabCacheFlush {
            a: 0x1234_5000,
            offset: 16,
            length: 32,
            op: GNTTAB_CACHE_CLEAN | GNTTAB_CACHE_SOURCE_GREF,
        };
        let b = f.to_bytes();
        assert_eq!(b[8..], [16, 0, 32, 0, 1, 0, 0, 0x80]);
        assert_eq!(GnttabCacheFlush::from_bytes(&b), f);
        assert_eq!(
            (
                GNTTAB_CACHE_CLEAN,
                GNTTAB_CACHE_INVAL,
                GNTTAB_CACHE_SOURCE_GREF
            ),
            (1, 2, 0x8000_0000)
        );

        let mut c = [0u8; GnttabTransferCompat::SIZE];
        c[..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        c[4..6].copy_from_slice(&2u16.to_le_bytes());
        c[8..12].copy_from_slice(&9u32.to_le_bytes());
        let t = GnttabTransfer::from(GnttabTransferCompat::from_bytes(&c));
        assert_eq!((t.mfn, t.domid, t.ref_), (0xffff_fff0, 2, 9));
        assert_eq!(t.to_bytes()[12..16], [9, 0, 0, 0]);
        assert_eq!(core::mem::offset_of!(GnttabTransfer, status), 16);
        assert_eq!(core::mem::offset_of!(GnttabTransferCompat, status), 12);
    }

    #[test]
    fn query_size_and_versions() {
        let q = GnttabQuerySize {
            dom: 1,
            pad0: 0,
            nr_frames: 4,
            max_nr_frames: 64,
            status: -2,
            pad1: 0,
        };
        let b = q.to_bytes();
        assert_eq!(b[4..12], [4, 0, 0, 0, 64, 0, 0, 0]);
        assert_eq!(b[12..14], (-2i16).to_le_bytes());
        assert_eq!(GnttabQuerySize::from_bytes(&b), q);
        assert_eq!(GnttabSetVersion { version: 2 }.to_bytes(), [2, 0, 0, 0]);
        let v = GnttabGetVersion {
            dom: 0x7ff0,
            pad: 0,
            version: 1,
        };
        assert_eq!(v.to_bytes(), [0xf0, 0x7f, 0, 0, 1, 0, 0, 0]);
    }
}
