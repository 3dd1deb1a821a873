//! `HYPERVISOR_physdev_op` (`xen/include/public/physdev.h`), the sub-ops
//! keel knows.
//!
//! `physdev_op(int cmd, void *args)`: `args` points at the structure `cmd`
//! names. Only `PHYSDEVOP_set_iopl`, a PV vCPU's virtual I/O privilege
//! level, is described here; the interrupt and PCI sub-ops are not.

/// `PHYSDEVOP_set_iopl`: `args` is a [`PhysdevSetIopl`].
pub const PHYSDEVOP_SET_IOPL: u32 = 6;

abi_struct! {
    /// `struct physdev_set_iopl`.
    #[repr(C)]
    pub struct PhysdevSetIopl(4) {
        /// IN: the calling vCPU's new I/O privilege level, 0..=3.
        pub iopl: u32 => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_iopl() {
        assert_eq!(PHYSDEVOP_SET_IOPL, 6);
        assert_eq!(PhysdevSetIopl { iopl: 3 }.to_bytes(), [3, 0, 0, 0]);
    }
}
