//! Domain ids (`domid_t`, a `u16`) and the reserved ones
//! (`xen/include/public/xen.h`).
//!
//! Ordinary domains are numbered below [`DOMID_FIRST_RESERVED`]; the values
//! from there up name something other than a domain.

/// `domid_t`.
pub type DomId = u16;

/// Ids at or above this are not ordinary domains.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// The calling domain itself.
pub const DOMID_SELF: DomId = 0x7FF0;
/// Restricts page-table updates to mapping I/O memory.
pub const DOMID_IO: DomId = 0x7FF1;
/// Lets privileged domains map restricted parts of Xen's heap.
pub const DOMID_XEN: DomId = 0x7FF2;
/// Owner of sharable (copy-on-write) pages.
pub const DOMID_COW: DomId = 0x7FF3;
/// Owner of pages with unknown owner.
pub const DOMID_INVALID: DomId = 0x7FF4;
/// No specific domain id requested.
pub const DOMID_ANY: DomId = 0x7FF5;
/// The idle domain.
pub const DOMID_IDLE: DomId = 0x7FFF;
/// Mask of the bits a domain id can use.
pub const DOMID_MASK: DomId = 0x7FFF;
