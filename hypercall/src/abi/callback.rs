//! `HYPERVISOR_callback_op` (`xen/include/public/callback.h`): where a PV
//! guest wants Xen to enter it for events, failsafe returns, system calls
//! and NMIs, and `CALLBACKF_mask_events`.
//!
//! `callback_op(int cmd, const void *arg)`: `arg` is a
//! [`CallbackRegister`] for [`CALLBACKOP_REGISTER`], a
//! [`CallbackUnregister`] for [`CALLBACKOP_UNREGISTER`].
//!
//! These are the native (x86-64) layouts: `xen_callback_t` is an `unsigned
//! long` there (`arch-x86/xen-x86_64.h`). A 32-bit guest's
//! `xen_callback_t` is a `{ cs, eip }` pair, not described here (keel runs
//! 64-bit PV guests only).

/// `CALLBACKTYPE_event`: the event-channel upcall.
pub const CALLBACKTYPE_EVENT: u16 = 0;
/// `CALLBACKTYPE_failsafe`: entered when Xen cannot restore the guest's
/// segment state on a return to it.
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;
/// `CALLBACKTYPE_syscall`: `syscall` by a 64-bit guest application.
pub const CALLBACKTYPE_SYSCALL: u16 = 2;
/// `CALLBACKTYPE_sysenter_deprecated`: x86-32 hypervisors only; Xen's x86-64
/// handler does not know it (`-ENOSYS`).
pub const CALLBACKTYPE_SYSENTER_DEPRECATED: u16 = 3;
/// `CALLBACKTYPE_nmi`: NMI delivery.
pub const CALLBACKTYPE_NMI: u16 = 4;
/// `CALLBACKTYPE_sysenter`: `sysenter` by a 32-bit guest application (Intel).
pub const CALLBACKTYPE_SYSENTER: u16 = 5;
/// `CALLBACKTYPE_syscall32`: `syscall` by a 32-bit guest application (AMD).
/// (6 was never assigned.)
pub const CALLBACKTYPE_SYSCALL32: u16 = 7;

/// `_CALLBACKF_mask_events`: the bit number of [`CALLBACKF_MASK_EVENTS`].
pub const CALLBACKF_MASK_EVENTS_BIT: u32 = 0;
/// `CALLBACKF_mask_events`: entering the callback masks events (sets
/// `evtchn_upcall_mask`). Ignored for the event and NMI callbacks, which
/// always mask them.
pub const CALLBACKF_MASK_EVENTS: u16 = 1 << CALLBACKF_MASK_EVENTS_BIT;

/// `CALLBACKOP_register`: `arg` is a [`CallbackRegister`].
pub const CALLBACKOP_REGISTER: u32 = 0;
/// `CALLBACKOP_unregister`: `arg` is a [`CallbackUnregister`]. Only some
/// callbacks can be unregistered; the others are `-EINVAL`.
pub const CALLBACKOP_UNREGISTER: u32 = 1;

abi_struct! {
    /// `struct callback_register`, native.
    #[repr(C)]
    pub struct CallbackRegister(16) {
        /// IN: `CALLBACKTYPE_*`.
        pub type_: u16 => 0,
        /// IN: [`CALLBACKF_MASK_EVENTS`] or 0.
        pub flags: u16 => 2,
        /// Padding the C compiler inserts before `address`.
        pub pad: u32 => 4,
        /// IN: `xen_callback_t`, the entry point (a canonical address).
        pub address: u64 => 8,
    }
}

abi_struct! {
    /// `struct callback_unregister`.
    #[repr(C)]
    pub struct CallbackUnregister(4) {
        /// IN: `CALLBACKTYPE_*`.
        pub type_: u16 => 0,
        /// `_unused`.
        pub unused: u16 => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_callback_h() {
        assert_eq!(
            [
                CALLBACKTYPE_EVENT,
                CALLBACKTYPE_FAILSAFE,
                CALLBACKTYPE_SYSCALL,
                CALLBACKTYPE_SYSENTER_DEPRECATED,
                CALLBACKTYPE_NMI,
                CALLBACKTYPE_SYSENTER,
                CALLBACKTYPE_SYSCALL32,
            ],
            [0, 1, 2, 3, 4, 5, 7]
        );
        assert_eq!(CALLBACKF_MASK_EVENTS, 1);
        assert_eq!((CALLBACKOP_REGISTER, CALLBACKOP_UNREGISTER), (0, 1));
    }

    #[test]
    fn layouts_as_a_guest_writes_them() {
        let r = CallbackRegister {
            type_: CALLBACKTYPE_SYSCALL,
            flags: CALLBACKF_MASK_EVENTS,
            pad: 0,
            address: 0xffff_ffff_8180_0000,
        };
        let b = r.to_bytes();
        assert_eq!(b[0..4], [2, 0, 1, 0]);
        assert_eq!(b[8..16], 0xffff_ffff_8180_0000u64.to_le_bytes());
        assert_eq!(CallbackRegister::from_bytes(&b), r);
        let u = CallbackUnregister {
            type_: CALLBACKTYPE_NMI,
            unused: 0,
        };
        assert_eq!(u.to_bytes(), [4, 0, 0, 0]);
    }
}
