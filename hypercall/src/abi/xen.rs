//! From `xen/include/public/xen.h` (with `arch-x86/xen.h`,
//! `arch-x86/xen-x86_64.h`): the shared-info page and per-vCPU info (x86-64,
//! native layout), `multicall_entry` (both widths) and the `vm_assist`
//! commands and types.
//!
//! Xen writes the shared-info page into a frame the guest placed with
//! `XENMEM_add_to_physmap(XENMAPSPACE_shared_info)`; the guest reads it in
//! place. Fields the guest writes are marked IN (guest to Xen), fields Xen
//! writes OUT. The 32-bit (compat) shared-info layout differs (`xen_ulong_t`
//! is 32 bits, so the event bitmaps and `vcpu_info` shrink) and is not
//! described here yet.
//!
//! Time fields follow a seqlock: Xen makes `version` odd, updates, then
//! makes it even again; a reader retries while it is odd or changed.

// --- vm_assist (xen.h) ---

/// `VMASST_CMD_enable`: turn the assist on for the calling domain.
pub const VMASST_CMD_ENABLE: u32 = 0;
/// `VMASST_CMD_disable`: turn it off.
pub const VMASST_CMD_DISABLE: u32 = 1;

/// `VMASST_TYPE_4gb_segments`: x86-32 guests, full 4 GiB segment limits.
pub const VMASST_TYPE_4GB_SEGMENTS: u32 = 0;
/// `VMASST_TYPE_4gb_segments_notify`: x86-32 guests, trap (vector 15) when
/// the above is used.
pub const VMASST_TYPE_4GB_SEGMENTS_NOTIFY: u32 = 1;
/// `VMASST_TYPE_writable_pagetables`: the guest may write its L1 page-table
/// entries directly (Xen emulates the write).
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u32 = 2;
/// `VMASST_TYPE_pae_extended_cr3`: x86/PAE guests, PDPTs above 4 GiB.
pub const VMASST_TYPE_PAE_EXTENDED_CR3: u32 = 3;
/// `VMASST_TYPE_architectural_iopl`: the virtual IOPL follows `iret`, is
/// reported in bounce frames, and the guest kernel counts as ring 0 for
/// IOPL checks.
pub const VMASST_TYPE_ARCHITECTURAL_IOPL: u32 = 4;
/// `VMASST_TYPE_runstate_update_flag`: set `XEN_RUNSTATE_UPDATE` in a
/// registered runstate area while updating it. The only assist Xen offers
/// HVM/PVH guests.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u32 = 5;
/// `VMASST_TYPE_m2p_strict`: x86-64 guests, hide the M2P from user mode.
pub const VMASST_TYPE_M2P_STRICT: u32 = 32;

/// The assists Xen accepts from a 64-bit PV domain (Xen's
/// `PV64_VM_ASSIST_MASK`, `xen/arch/x86/include/asm/domain.h`: every x86-32
/// assist, "we can't make such requests fail all of the sudden", and
/// `m2p_strict`). Bit `n` is `VMASST_TYPE_*` `n`.
pub const PV64_VM_ASSIST_MASK: u64 = 1 << VMASST_TYPE_4GB_SEGMENTS
    | 1 << VMASST_TYPE_4GB_SEGMENTS_NOTIFY
    | 1 << VMASST_TYPE_WRITABLE_PAGETABLES
    | 1 << VMASST_TYPE_PAE_EXTENDED_CR3
    | 1 << VMASST_TYPE_ARCHITECTURAL_IOPL
    | 1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG
    | 1 << VMASST_TYPE_M2P_STRICT;

// --- multicall (xen.h) ---

abi_struct! {
    /// `struct multicall_entry`, native: one hypercall of a
    /// `HYPERVISOR_multicall` batch. "The caller must depend only on the
    /// 'result' field on return" (Xen `do_multicall`).
    #[repr(C)]
    pub struct MulticallEntry(64) {
        /// IN: the hypercall number.
        pub op: u64 => 0,
        /// OUT: its return value (a `long`, in an `xen_ulong_t`).
        pub result: u64 => 8,
        /// IN: its arguments, in register order. IN/OUT when a continuation
        /// rewrites them.
        pub args: [u64; 6] => 16,
    }
}

abi_struct! {
    /// `struct compat_multicall_entry` (32-bit caller): the same with
    /// 32-bit fields.
    #[repr(C)]
    pub struct MulticallEntryCompat(32) {
        /// IN: the hypercall number.
        pub op: u32 => 0,
        /// OUT: its return value (a 32-bit `long`).
        pub result: u32 => 4,
        /// IN: its arguments.
        pub args: [u32; 6] => 8,
    }
}

/// `XEN_LEGACY_MAX_VCPUS`: `vcpu_info` slots embedded in `shared_info`.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

/// `vcpu_time_info.flags`: TSC is stable across vCPUs.
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `vcpu_time_info.flags`: the guest was stopped (e.g. paused).
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

abi_struct! {
    /// `struct vcpu_time_info`: parameters to turn the TSC into system time.
    /// `now = system_time + (((tsc - tsc_timestamp) << tsc_shift) *
    /// tsc_to_system_mul) >> 32` (negative `tsc_shift` shifts right).
    #[repr(C)]
    pub struct VcpuTimeInfo(32) {
        /// OUT: seqlock version; odd while an update is in progress.
        pub version: u32 => 0,
        /// OUT: padding.
        pub pad0: u32 => 4,
        /// OUT: TSC at the last update.
        pub tsc_timestamp: u64 => 8,
        /// OUT: nanoseconds since boot at `tsc_timestamp`.
        pub system_time: u64 => 16,
        /// OUT: 32.32 fixed-point multiplier from shifted TSC to ns.
        pub tsc_to_system_mul: u32 => 24,
        /// OUT: power-of-two shift applied to the TSC delta first.
        pub tsc_shift: i8 => 28,
        /// OUT: `XEN_PVCLOCK_*`.
        pub flags: u8 => 29,
        /// OUT: padding.
        pub pad1: [u8; 2] => 30,
    }
}

abi_struct! {
    /// `struct arch_vcpu_info`, x86-64.
    #[repr(C)]
    pub struct ArchVcpuInfo(16) {
        /// OUT: CR2 at the last page fault (PV only).
        pub cr2: u64 => 0,
        /// Padding that makes `vcpu_info` 64 bytes.
        pub pad: u64 => 8,
    }
}

abi_struct! {
    /// `struct vcpu_info`, x86-64: 64 bytes.
    #[repr(C)]
    pub struct VcpuInfo(64) {
        /// OUT (Xen sets), IN (guest clears): an upcall is pending.
        pub evtchn_upcall_pending: u8 => 0,
        /// IN: non-zero masks event upcalls to this vCPU.
        pub evtchn_upcall_mask: u8 => 1,
        /// Padding the C compiler inserts before `evtchn_pending_sel`.
        pub pad0: [u8; 6] => 2,
        /// OUT (Xen sets bits), IN (guest clears them): which words of
        /// `evtchn_pending` to scan (2-level ABI).
        pub evtchn_pending_sel: u64 => 8,
        /// Architecture-specific part.
        pub arch: ArchVcpuInfo => 16,
        /// OUT: this vCPU's time parameters.
        pub time: VcpuTimeInfo => 32,
    }
}

abi_struct! {
    /// `struct arch_shared_info`, x86-64. Used by PV guests for the p2m;
    /// HVM guests ignore it.
    #[repr(C)]
    pub struct ArchSharedInfo(48) {
        /// IN: number of valid p2m entries.
        pub max_pfn: u64 => 0,
        /// IN: frame of the p2m frame-list list (0 unset, ~0 invalid).
        pub pfn_to_mfn_frame_list_list: u64 => 8,
        /// OUT: NMI reason bits.
        pub nmi_reason: u64 => 16,
        /// IN: CR3 of the address space holding the linear p2m.
        pub p2m_cr3: u64 => 24,
        /// IN: virtual address of the linear p2m.
        pub p2m_vaddr: u64 => 32,
        /// IN: p2m generation count (odd while being changed).
        pub p2m_generation: u64 => 40,
    }
}

abi_struct! {
    /// `struct shared_info`, x86-64: 3136 bytes at the start of its frame.
    #[repr(C)]
    pub struct SharedInfo(3136) {
        /// Per-vCPU info for vCPUs 0..32 (others register their own).
        pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS] => 0,
        /// OUT (Xen sets), IN (guest clears): pending bit per port
        /// (2-level ABI).
        pub evtchn_pending: [u64; 64] => 2048,
        /// IN: mask bit per port (2-level ABI).
        pub evtchn_mask: [u64; 64] => 2560,
        /// OUT: wall-clock seqlock version.
        pub wc_version: u32 => 3072,
        /// OUT: wall-clock seconds at system time 0 (low 32 bits).
        pub wc_sec: u32 => 3076,
        /// OUT: wall-clock nanoseconds at system time 0.
        pub wc_nsec: u32 => 3080,
        /// OUT: wall-clock seconds, high 32 bits.
        pub wc_sec_hi: u32 => 3084,
        /// Architecture-specific part.
        pub arch: ArchSharedInfo => 3088,
    }
}
