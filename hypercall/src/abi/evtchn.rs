//! Event-channel op numbers and constants
//! (`xen/include/public/event_channel.h`, `VIRQ_*` from `xen.h`).
//!
//! Only the numbers for now: the argument structures arrive with the
//! `evtchn` crate's hypercalls. `event_channel_op(int cmd, void *arg)`.

/// `evtchn_port_t`.
pub type EvtchnPort = u32;

pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
pub const EVTCHNOP_CLOSE: u32 = 3;
pub const EVTCHNOP_SEND: u32 = 4;
pub const EVTCHNOP_STATUS: u32 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
pub const EVTCHNOP_BIND_IPI: u32 = 7;
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
pub const EVTCHNOP_UNMASK: u32 = 9;
pub const EVTCHNOP_RESET: u32 = 10;
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;
pub const EVTCHNOP_RESET_CONT: u32 = 14;

// `EVTCHNSTAT_*`, returned by `EVTCHNOP_status`.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;

/// Ports of the 2-level ABI for a 64-bit guest (64 * 64).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;
/// Ports of the 2-level ABI for a 32-bit guest (32 * 32).
pub const EVTCHN_2L_NR_CHANNELS_COMPAT: u32 = 1024;

// `VIRQ_*`: per-vCPU (V) or global (G) virtual interrupts.
pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;
pub const VIRQ_TBUF: u32 = 4;
pub const VIRQ_DEBUGGER: u32 = 6;
pub const VIRQ_XENOPROF: u32 = 7;
pub const VIRQ_CON_RING: u32 = 8;
pub const VIRQ_PCPU_STATE: u32 = 9;
pub const VIRQ_MEM_EVENT: u32 = 10;
pub const VIRQ_ARGO: u32 = 11;
pub const VIRQ_ENOMEM: u32 = 12;
pub const VIRQ_XENPMU: u32 = 13;
/// Architecture-specific VIRQs 16..=23.
pub const VIRQ_ARCH_0: u32 = 16;
/// Number of VIRQs.
pub const NR_VIRQS: u32 = 24;
