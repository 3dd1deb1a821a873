//! `HYPERVISOR_vcpu_op` commands and arguments (`xen/include/public/vcpu.h`).
//!
//! `vcpu_op(int cmd, unsigned int vcpuid, void *extra_args)`: `vcpuid`
//! names a vCPU of the calling domain.
//!
//! Native and compat layouts differ where a `uint64_t` follows a 32-bit
//! field: i386 aligns `uint64_t` to 4 bytes, so the compat structures are
//! packed tighter ([`VcpuRunstateInfoCompat`] is 44 bytes, not 48;
//! [`VcpuSetSingleshotTimerCompat`] 12, not 16) and guest handles are 32
//! bits. The others are identical for both widths.

/// Initialise a vCPU's state; `extra_args` is a `vcpu_hvm_context`
/// ([`super::hvm::VcpuHvmContext`]) for an HVM/PVH domain.
pub const VCPUOP_INITIALISE: u32 = 0;
/// Make an initialised vCPU runnable.
pub const VCPUOP_UP: u32 = 1;
/// Make a vCPU not runnable.
pub const VCPUOP_DOWN: u32 = 2;
/// Returns 1 if the vCPU is up, else 0.
pub const VCPUOP_IS_UP: u32 = 3;
/// `extra_args` is a [`VcpuRunstateInfo`] / [`VcpuRunstateInfoCompat`] (OUT).
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
/// `extra_args` is a [`VcpuRegisterRunstateMemoryArea`]: a guest-virtual
/// address at which Xen keeps the vCPU's runstate up to date.
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// `extra_args` is a [`VcpuSetPeriodicTimer`].
pub const VCPUOP_SET_PERIODIC_TIMER: u32 = 6;
/// `extra_args` is NULL.
pub const VCPUOP_STOP_PERIODIC_TIMER: u32 = 7;
/// `extra_args` is a [`VcpuSetSingleshotTimer`] / [`VcpuSetSingleshotTimerCompat`].
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
/// `extra_args` is NULL.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u32 = 9;
/// `extra_args` is a [`VcpuRegisterVcpuInfo`]; once per vCPU.
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;
/// `extra_args` is NULL.
pub const VCPUOP_SEND_NMI: u32 = 11;
/// `extra_args` is a [`VcpuGetPhysid`] (OUT).
pub const VCPUOP_GET_PHYSID: u32 = 12;
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u32 = 13;
pub const VCPUOP_REGISTER_RUNSTATE_PHYS_AREA: u32 = 14;
pub const VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA: u32 = 15;

/// `RUNSTATE_running`: running on a physical CPU.
pub const RUNSTATE_RUNNING: i32 = 0;
/// `RUNSTATE_runnable`: runnable, but not running.
pub const RUNSTATE_RUNNABLE: i32 = 1;
/// `RUNSTATE_blocked`: blocked (idle); not runnable.
pub const RUNSTATE_BLOCKED: i32 = 2;
/// `RUNSTATE_offline`: neither runnable nor blocked (down, paused).
pub const RUNSTATE_OFFLINE: i32 = 3;

/// `XEN_RUNSTATE_UPDATE`: set in `state_entry_time` while Xen updates a
/// registered runstate area (with `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `VCPU_SSHOTTMR_future`: the caller asks for `-ETIME` if the timeout has
/// passed. The header allows the hypervisor to ignore it, and Xen does
/// since 4.18 (a past timeout fires at once); so does keel.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1;

abi_struct! {
    /// `struct vcpu_runstate_info`, native (64-bit caller).
    #[repr(C)]
    pub struct VcpuRunstateInfo(48) {
        /// OUT: `RUNSTATE_*`.
        pub state: i32 => 0,
        /// Padding the C compiler inserts before `state_entry_time`.
        pub pad: u32 => 4,
        /// OUT: system time (ns) the current state was entered; may carry
        /// [`XEN_RUNSTATE_UPDATE`].
        pub state_entry_time: u64 => 8,
        /// OUT: ns spent in each `RUNSTATE_*`, indexed by state.
        pub time: [u64; 4] => 16,
    }
}

abi_struct! {
    /// `struct compat_vcpu_runstate_info` (32-bit caller): no padding before
    /// `state_entry_time`, so 44 bytes.
    #[repr(C, packed(4))]
    pub struct VcpuRunstateInfoCompat(44) {
        /// OUT: `RUNSTATE_*`.
        pub state: i32 => 0,
        /// OUT: as in [`VcpuRunstateInfo`].
        pub state_entry_time: u64 => 4,
        /// OUT: ns spent in each `RUNSTATE_*`.
        pub time: [u64; 4] => 12,
    }
}

impl From<VcpuRunstateInfo> for VcpuRunstateInfoCompat {
    /// Xen's `XLAT_vcpu_runstate_info`: the same values, repacked.
    fn from(n: VcpuRunstateInfo) -> Self {
        VcpuRunstateInfoCompat {
            state: n.state,
            state_entry_time: n.state_entry_time,
            time: n.time,
        }
    }
}

abi_struct! {
    /// `struct vcpu_register_runstate_memory_area`, native. `addr` is the
    /// union `{ handle h; vcpu_runstate_info *v; uint64_t p; }`: on x86 a
    /// guest-virtual address.
    #[repr(C)]
    pub struct VcpuRegisterRunstateMemoryArea(8) {
        /// IN: guest-virtual address of a [`VcpuRunstateInfo`].
        pub addr: u64 => 0,
    }
}

abi_struct! {
    /// `struct compat_vcpu_register_runstate_memory_area` (32-bit caller).
    /// Xen reads only the 32-bit handle, the first 4 bytes.
    #[repr(C)]
    pub struct VcpuRegisterRunstateMemoryAreaCompat(4) {
        /// IN: guest-virtual address of a [`VcpuRunstateInfoCompat`].
        pub addr: u32 => 0,
    }
}

abi_struct! {
    /// `struct vcpu_set_periodic_timer`. Same for both widths.
    #[repr(C)]
    pub struct VcpuSetPeriodicTimer(8) {
        /// IN: the period in ns (at least 1 ms).
        pub period_ns: u64 => 0,
    }
}

abi_struct! {
    /// `struct vcpu_set_singleshot_timer`, native (64-bit caller).
    #[repr(C)]
    pub struct VcpuSetSingleshotTimer(16) {
        /// IN: absolute system time (ns) to fire at.
        pub timeout_abs_ns: u64 => 0,
        /// IN: `VCPU_SSHOTTMR_*`.
        pub flags: u32 => 8,
        /// Padding the C compiler inserts at the end.
        pub pad: u32 => 12,
    }
}

abi_struct! {
    /// `struct compat_vcpu_set_singleshot_timer` (32-bit caller): 12 bytes.
    #[repr(C, packed(4))]
    pub struct VcpuSetSingleshotTimerCompat(12) {
        /// IN: absolute system time (ns) to fire at.
        pub timeout_abs_ns: u64 => 0,
        /// IN: `VCPU_SSHOTTMR_*`.
        pub flags: u32 => 8,
    }
}

abi_struct! {
    /// `struct vcpu_register_vcpu_info`. Same for both widths.
    #[repr(C)]
    pub struct VcpuRegisterVcpuInfo(16) {
        /// IN: guest frame (gfn for HVM/PVH) of the page to hold the
        /// `vcpu_info`.
        pub mfn: u64 => 0,
        /// IN: byte offset of the `vcpu_info` in that page; the 64 bytes
        /// must not cross the page.
        pub offset: u32 => 8,
        /// IN: unused.
        pub rsvd: u32 => 12,
    }
}

abi_struct! {
    /// `struct vcpu_get_physid`. Same for both widths.
    #[repr(C)]
    pub struct VcpuGetPhysid(8) {
        /// OUT: bits 31:0 the APIC id, 63:32 the ACPI id.
        pub phys_id: u64 => 0,
    }
}
