//! The small PV vCPU hypercalls: `stack_switch`, `fpu_taskswitch`,
//! `set_debugreg`, `get_debugreg`, `set_segment_base` (Xen 4.17
//! `xen/arch/x86/pv/misc-hypercalls.c`), `iret` (`xen/arch/x86/pv/iret.c`),
//! `vm_assist` (`do_vm_assist`, `xen/common/domain.c`) and `physdev_op`'s
//! `PHYSDEVOP_set_iopl` (`do_physdev_op`, `xen/arch/x86/physdev.c`). 64-bit
//! PV callers only (the dispatcher answers `-ENOSYS` to anyone else). Each
//! is one call into the domain after the checks Xen makes on the arguments
//! alone:
//!
//! - `stack_switch(unsigned long ss, unsigned long esp)`:
//!   [`Domain::pv_stack_switch`].
//! - `fpu_taskswitch(int set)`: [`Domain::pv_fpu_taskswitch`] with the low
//!   32 bits non-zero.
//! - `set_debugreg(int reg, unsigned long value)`,
//!   `get_debugreg(int reg)`: [`Domain::pv_set_debugreg`],
//!   [`Domain::pv_get_debugreg`] with `reg` the low 32 bits; `get_debugreg`
//!   returns the register's value itself in `rax`.
//! - `set_segment_base(unsigned int which, unsigned long base)`: `which`
//!   other than `SEGBASE_*` is `-EINVAL`, so is a non-canonical base for
//!   `SEGBASE_FS`, `GS_USER` and `GS_KERNEL`; else
//!   [`Domain::pv_set_segment_base`].
//! - `iret(void)`: [`Domain::pv_iret`], which reads the frame from the
//!   guest's stack itself; its value is the RAX the guest returns with.
//! - `vm_assist(unsigned int cmd, unsigned int type)`: a `type` not in
//!   Xen's `PV64_VM_ASSIST_MASK` is `-EINVAL`; then a `cmd` other than
//!   `VMASST_CMD_enable`/`disable` `-ENOSYS`; else
//!   [`Domain::pv_vm_assist`].
//! - `physdev_op(int cmd, void *arg)`: `PHYSDEVOP_set_iopl` copies in a
//!   `physdev_set_iopl` (`-EFAULT`), refuses an `iopl` above 3 (`-EINVAL`),
//!   then [`Domain::pv_set_iopl`]. Every other sub-op (interrupts, PCI,
//!   the I/O bitmap) is `-ENOSYS` for now.
//!
//! Deviation: `vm_assist` is Xen's for HVM/PVH guests too (one assist,
//! `runstate_update_flag`), and so is a subset of `physdev_op`; keel still
//! answers `-ENOSYS` to them, as before it had PV guests.

use super::{Ctx, Domain, Outcome, is_canonical};
use crate::abi::Errno;
use crate::abi::physdev::{PHYSDEVOP_SET_IOPL, PhysdevSetIopl};
use crate::abi::pv::{SEGBASE_FS, SEGBASE_GS_KERNEL, SEGBASE_GS_USER, SEGBASE_GS_USER_SEL};
use crate::abi::xen::{PV64_VM_ASSIST_MASK, VMASST_CMD_DISABLE, VMASST_CMD_ENABLE};

/// `0` for `Ok(())`.
fn unit(r: Result<(), Errno>) -> Outcome {
    Outcome::from_result(r.map(|()| 0))
}

/// `stack_switch`.
pub(super) fn do_stack_switch<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    ss: u64,
    sp: u64,
) -> Outcome {
    unit(cx.d.pv_stack_switch(ss, sp))
}

/// `fpu_taskswitch`.
pub(super) fn do_fpu_taskswitch<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, set: u64) -> Outcome {
    // `int set`.
    unit(cx.d.pv_fpu_taskswitch(set as u32 != 0))
}

/// `set_debugreg`.
pub(super) fn do_set_debugreg<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    reg: u64,
    value: u64,
) -> Outcome {
    // `int reg`, which Xen's `set_debugreg` takes as `unsigned int`.
    unit(cx.d.pv_set_debugreg(reg as u32, value))
}

/// `get_debugreg`.
pub(super) fn do_get_debugreg<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, reg: u64) -> Outcome {
    // Xen returns the value through a union, bit for bit.
    Outcome::from_result(cx.d.pv_get_debugreg(reg as u32).map(|v| v as i64))
}

/// `set_segment_base`.
pub(super) fn do_set_segment_base<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    which: u64,
    base: u64,
) -> Outcome {
    // `unsigned int which`.
    let which = which as u32;
    match which {
        SEGBASE_FS | SEGBASE_GS_USER | SEGBASE_GS_KERNEL if !is_canonical(base) => {
            Outcome::err(Errno::EINVAL)
        }
        SEGBASE_FS | SEGBASE_GS_USER | SEGBASE_GS_KERNEL | SEGBASE_GS_USER_SEL => {
            unit(cx.d.pv_set_segment_base(which, base))
        }
        _ => Outcome::err(Errno::EINVAL),
    }
}

/// `iret`.
pub(super) fn do_iret<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>) -> Outcome {
    // The restored RAX, bit for bit: "the hypercall" must not clobber it.
    Outcome::from_result(cx.d.pv_iret().map(|rax| rax as i64))
}

/// `vm_assist`.
pub(super) fn do_vm_assist<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u64,
    kind: u64,
) -> Outcome {
    // `unsigned int cmd, unsigned int type`.
    let (cmd, kind) = (cmd as u32, kind as u32);
    if kind >= 64 || PV64_VM_ASSIST_MASK & (1 << kind) == 0 {
        return Outcome::err(Errno::EINVAL);
    }
    match cmd {
        VMASST_CMD_ENABLE | VMASST_CMD_DISABLE => unit(cx.d.pv_vm_assist(cmd, kind)),
        _ => Outcome::err(Errno::ENOSYS),
    }
}

/// `physdev_op`.
pub(super) fn do_physdev_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u64,
    arg: u64,
) -> Outcome {
    // `int cmd`.
    match cmd as u32 {
        PHYSDEVOP_SET_IOPL => {
            let set = match cx.read::<{ PhysdevSetIopl::SIZE }>(arg) {
                Ok(raw) => PhysdevSetIopl::from_bytes(&raw),
                Err(e) => return Outcome::err(e),
            };
            if set.iopl > 3 {
                return Outcome::err(Errno::EINVAL);
            }
            unit(cx.d.pv_set_iopl(set.iopl))
        }
        _ => Outcome::err(Errno::ENOSYS),
    }
}
