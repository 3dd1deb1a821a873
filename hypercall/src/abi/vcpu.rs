//! `HYPERVISOR_vcpu_op` command numbers (`xen/include/public/vcpu.h`).
//!
//! `vcpu_op(int cmd, unsigned int vcpuid, void *extra_args)`. Only the
//! numbers for now; the argument structures arrive with the handlers.

pub const VCPUOP_INITIALISE: u32 = 0;
pub const VCPUOP_UP: u32 = 1;
pub const VCPUOP_DOWN: u32 = 2;
pub const VCPUOP_IS_UP: u32 = 3;
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
pub const VCPUOP_SET_PERIODIC_TIMER: u32 = 6;
pub const VCPUOP_STOP_PERIODIC_TIMER: u32 = 7;
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u32 = 9;
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;
pub const VCPUOP_SEND_NMI: u32 = 11;
pub const VCPUOP_GET_PHYSID: u32 = 12;
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u32 = 13;
pub const VCPUOP_REGISTER_RUNSTATE_PHYS_AREA: u32 = 14;
pub const VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA: u32 = 15;
