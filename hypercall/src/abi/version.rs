//! `HYPERVISOR_xen_version` sub-ops and their buffers
//! (`xen/include/public/version.h`).
//!
//! `xen_version(int cmd, void *arg)`. All sub-ops return 0 on success except
//! `XENVER_version` (returns `major << 16 | minor`), `XENVER_pagesize`
//! (returns the page size) and the `xen_varbuf` family (return a length).
//!
//! The fixed-size string buffers (`xen_extraversion_t` and friends) are C
//! `char` arrays; here they are `[u8; N]` type aliases, NUL-padded by Xen.
//! The legacy fixed-size sub-ops truncate; the `*2` sub-ops (11..=14) and
//! `XENVER_build_id` use [`XenVarbuf`] and never truncate.

/// Returns `major << 16 | minor`; `arg` is unused.
pub const XENVER_VERSION: u32 = 0;
/// Copies out a [`XenExtraversion`].
pub const XENVER_EXTRAVERSION: u32 = 1;
/// Copies out a [`XenCompileInfo`].
pub const XENVER_COMPILE_INFO: u32 = 2;
/// Copies out a [`XenCapabilitiesInfo`].
pub const XENVER_CAPABILITIES: u32 = 3;
/// Copies out a [`XenChangesetInfo`].
pub const XENVER_CHANGESET: u32 = 4;
/// Copies out [`XenPlatformParameters`] (native) or
/// [`XenPlatformParametersCompat`] (32-bit caller).
pub const XENVER_PLATFORM_PARAMETERS: u32 = 5;
/// Copies a [`XenFeatureInfo`] in and out.
pub const XENVER_GET_FEATURES: u32 = 6;
/// Returns the page size; `arg` must be NULL.
pub const XENVER_PAGESIZE: u32 = 7;
/// Copies out the domain's [`XenDomainHandle`] (its UUID).
pub const XENVER_GUEST_HANDLE: u32 = 8;
/// Copies out a [`XenCommandline`] (Xen's own command line).
pub const XENVER_COMMANDLINE: u32 = 9;
/// [`XenVarbuf`] with the build id; `-ENODATA` if Xen has none.
pub const XENVER_BUILD_ID: u32 = 10;

// [`XenVarbuf`] forms of 1, 3, 4 and 9 that do not truncate.
pub const XENVER_EXTRAVERSION2: u32 = 11;
pub const XENVER_CAPABILITIES2: u32 = 12;
pub const XENVER_CHANGESET2: u32 = 13;
pub const XENVER_COMMANDLINE2: u32 = 14;

/// `xen_extraversion_t`: e.g. `".0-keel"`, NUL-padded. OUT.
pub type XenExtraversion = [u8; XEN_EXTRAVERSION_LEN];
pub const XEN_EXTRAVERSION_LEN: usize = 16;

/// `xen_capabilities_info_t`: space-separated ABI names such as
/// `"xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_64"`, NUL-padded. OUT.
pub type XenCapabilitiesInfo = [u8; XEN_CAPABILITIES_INFO_LEN];
pub const XEN_CAPABILITIES_INFO_LEN: usize = 1024;

/// `xen_changeset_info_t`: source revision, NUL-padded. OUT.
pub type XenChangesetInfo = [u8; XEN_CHANGESET_INFO_LEN];
pub const XEN_CHANGESET_INFO_LEN: usize = 64;

/// `xen_commandline_t`: the hypervisor's command line, NUL-padded. OUT.
pub type XenCommandline = [u8; XEN_COMMANDLINE_LEN];
pub const XEN_COMMANDLINE_LEN: usize = 1024;

/// `xen_domain_handle_t` (`xen.h`): the domain's 16-byte UUID. OUT.
pub type XenDomainHandle = [u8; XEN_DOMAIN_HANDLE_LEN];
pub const XEN_DOMAIN_HANDLE_LEN: usize = 16;

/// The text Xen substitutes for information a domain may not see
/// (`xen_deny()`, `xen/common/version.c`).
pub const XEN_DENY: &[u8] = b"<denied>";

/// Page size `XENVER_pagesize` reports on x86.
pub const XEN_PAGE_SIZE: u64 = 4096;

/// Largest string the `xen_varbuf` sub-ops return; longer is `-E2BIG`
/// (an arbitrary limit in `xenver_varbuf_op`, `xen/common/kernel.c`).
pub const XEN_VARBUF_MAX: usize = 64 * 1024;

abi_struct! {
    /// `struct xen_compile_info`: strings describing the build, NUL-padded
    /// and truncated to fit.
    #[repr(C)]
    pub struct XenCompileInfo(144) {
        /// OUT: compiler name and version.
        pub compiler: [u8; 64] => 0,
        /// OUT: user who built it.
        pub compile_by: [u8; 16] => 64,
        /// OUT: build host's domain.
        pub compile_domain: [u8; 32] => 80,
        /// OUT: build date.
        pub compile_date: [u8; 32] => 112,
    }
}

abi_struct! {
    /// `struct xen_platform_parameters`, native (64-bit caller).
    #[repr(C)]
    pub struct XenPlatformParameters(8) {
        /// OUT: start of the hypervisor's virtual-address hole. Only
        /// meaningful for PV guests; HVM guests get 0.
        pub virt_start: u64 => 0,
    }
}

abi_struct! {
    /// `struct compat_platform_parameters` (32-bit caller).
    #[repr(C)]
    pub struct XenPlatformParametersCompat(4) {
        /// OUT: as in [`XenPlatformParameters`]; 0 for HVM guests.
        pub virt_start: u32 => 0,
    }
}

abi_struct! {
    /// `struct xen_feature_info`: one 32-bit word of the `XENFEAT_*` bitmap
    /// (see [`super::features`]). Same layout for both widths.
    #[repr(C)]
    pub struct XenFeatureInfo(8) {
        /// IN: which 32-bit submap to return (only 0 exists:
        /// `XENFEAT_NR_SUBMAPS` is 1).
        pub submap_idx: u32 => 0,
        /// OUT: the submap; bit `n` is feature `XENFEAT_*` number
        /// `32 * submap_idx + n`.
        pub submap: u32 => 4,
    }
}

abi_struct! {
    /// The fixed header of `struct xen_varbuf` (and of the older
    /// `struct xen_build_id`): `len` followed by `len` bytes of `buf`.
    #[repr(C)]
    pub struct XenVarbuf(4) {
        /// IN: size of the `buf[]` that follows, in bytes. OUT: `buf[]` is
        /// filled with the string, without a NUL; the hypercall returns its
        /// length.
        pub len: u32 => 0,
    }
}

/// Byte offset of `buf[]` in `struct xen_varbuf`.
pub const XEN_VARBUF_BUF_OFFSET: usize = 4;
