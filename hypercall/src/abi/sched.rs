//! `HYPERVISOR_sched_op` commands and arguments
//! (`xen/include/public/sched.h`).
//!
//! `sched_op(int cmd, void *arg)`. `evtchn_port_t` is `u32`.

/// Yield the vCPU; `arg` is NULL.
pub const SCHEDOP_YIELD: u32 = 0;
/// Block the vCPU until an event is pending, re-enabling event delivery
/// atomically first; `arg` is NULL.
pub const SCHEDOP_BLOCK: u32 = 1;
/// Shut the whole domain down; `arg` points to a [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// Poll event-channel ports; `arg` points to a [`SchedPoll`].
pub const SCHEDOP_POLL: u32 = 3;
/// Shut another domain down; `arg` points to a [`SchedRemoteShutdown`].
pub const SCHEDOP_REMOTE_SHUTDOWN: u32 = 4;
/// Latch the shutdown code reported later; `arg` points to a [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN_CODE: u32 = 5;
/// Domain watchdog; `arg` points to a [`SchedWatchdog`].
pub const SCHEDOP_WATCHDOG: u32 = 6;
/// Hardware domain only: pin the vCPU; `arg` points to a [`SchedPinOverride`].
pub const SCHEDOP_PIN_OVERRIDE: u32 = 7;

/// Domain exited normally: clean up and kill.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// Clean up, kill, and restart.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// Clean up, save suspend info, kill.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// The domain crashed.
pub const SHUTDOWN_CRASH: u32 = 3;
/// Restart because the watchdog expired.
pub const SHUTDOWN_WATCHDOG: u32 = 4;
/// Reset Xen's state for the domain, keeping memory and vCPU contexts.
pub const SHUTDOWN_SOFT_RESET: u32 = 5;
/// Largest defined reason.
pub const SHUTDOWN_MAX: u32 = 5;

abi_struct! {
    /// `struct sched_shutdown`. Same layout for both widths.
    #[repr(C)]
    pub struct SchedShutdown(4) {
        /// IN: `SHUTDOWN_*`.
        pub reason: u32 => 0,
    }
}

abi_struct! {
    /// `struct sched_poll`, native (64-bit caller).
    #[repr(C)]
    pub struct SchedPoll(24) {
        /// IN: guest handle of an array of `nr_ports` `evtchn_port_t` (u32).
        pub ports: u64 => 0,
        /// IN: number of ports.
        pub nr_ports: u32 => 8,
        /// Padding the C compiler inserts before `timeout`.
        pub pad: u32 => 12,
        /// IN: absolute system time (ns) to give up at; 0 for none.
        pub timeout: u64 => 16,
    }
}

abi_struct! {
    /// `struct compat_sched_poll` (32-bit caller).
    #[repr(C)]
    pub struct SchedPollCompat(16) {
        /// IN: 32-bit guest handle of the `evtchn_port_t` array.
        pub ports: u32 => 0,
        /// IN: number of ports.
        pub nr_ports: u32 => 4,
        /// IN: absolute system time (ns) to give up at; 0 for none.
        pub timeout: u64 => 8,
    }
}

abi_struct! {
    /// `struct sched_remote_shutdown`. Same layout for both widths.
    #[repr(C)]
    pub struct SchedRemoteShutdown(8) {
        /// IN: the domain to shut down.
        pub domain_id: u16 => 0,
        /// Padding the C compiler inserts before `reason`.
        pub pad: u16 => 2,
        /// IN: `SHUTDOWN_*`.
        pub reason: u32 => 4,
    }
}

abi_struct! {
    /// `struct sched_watchdog`. Same layout for both widths.
    #[repr(C)]
    pub struct SchedWatchdog(8) {
        /// IN: 0 to create a watchdog, else the id returned at creation.
        pub id: u32 => 0,
        /// IN: seconds; 0 with a non-zero id destroys the watchdog.
        pub timeout: u32 => 4,
    }
}

abi_struct! {
    /// `struct sched_pin_override`. Same layout for both widths.
    #[repr(C)]
    pub struct SchedPinOverride(4) {
        /// IN: physical CPU to pin to; negative undoes the override.
        pub pcpu: i32 => 0,
    }
}
