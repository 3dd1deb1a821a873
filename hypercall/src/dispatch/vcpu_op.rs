//! `HYPERVISOR_vcpu_op` (Xen `do_vcpu_op`, `xen/arch/x86/domain.c`;
//! `common_vcpu_op`, `xen/common/domain.c`; `compat_vcpu_op`,
//! `xen/arch/x86/x86_64/domain.c`, `xen/common/compat/domain.c`).
//!
//! `vcpu_op(int cmd, unsigned int vcpuid, void *extra_args)`: `cmd` and
//! `vcpuid` are the low 32 bits. A `vcpuid` the domain does not have is
//! `-ENOENT` before the command is looked at (so even for an unknown one).
//!
//! - `initialise`: copies in a `vcpu_hvm_context` (`-EFAULT`) and hands it
//!   to [`Domain::vcpu_initialise`] unchecked: Xen's next check is "already
//!   initialised" (`-EEXIST`), state only the kernel has, and only after it
//!   does `arch_set_info_hvm_guest` look at `pad` and `mode` (`-EINVAL`),
//!   so the kernel makes all of them, in that order.
//! - `up`, `down`, `is_up` (returns 1 or 0): the domain decides.
//! - `get_runstate_info`: [`Domain::vcpu_runstate`] copied out in the
//!   caller's layout (48 bytes native, 44 compat; `-EFAULT`).
//! - `register_runstate_memory_area`: copies in the address (8 bytes
//!   native; the 4-byte handle for a 32-bit caller, as Xen); `-EFAULT` if
//!   a runstate there would leave the address space; then
//!   [`Domain::register_runstate_area`], and, unless the address is 0, the
//!   current runstate is written there at once, ignoring faults, as Xen.
//! - `set_periodic_timer`: copies in the period (`-EFAULT`); below 1 ms or
//!   above `STIME_DELTA_MAX` (2^62 - 1) is `-EINVAL`;
//!   `stop_periodic_timer` sets a period of 0. Any vCPU of the domain.
//! - `set_singleshot_timer` / `stop_singleshot_timer`: only the calling
//!   vCPU (`-EINVAL` for another: checked before copying in the native
//!   16-byte structure, after copying in the compat 12-byte one, as Xen's
//!   two paths do); `flags` is ignored
//!   as by Xen since 4.18: a timeout in the past fires at once rather than
//!   failing with `-ETIME`.
//! - `register_vcpu_info`: `gfn << 12 + offset` must be a valid address
//!   whose frame is `gfn` (so `offset < 4096`; else `-EINVAL`); the 64-byte
//!   `vcpu_info` must not cross the page and must be aligned to the
//!   caller's `xen_ulong_t` (8, or 4 for a 32-bit caller) (`-ENXIO`); then
//!   [`Domain::register_vcpu_info`]. Xen aligns to the width latched for
//!   the shared-info page rather than the caller's, and checks "already
//!   registered" (`-EBUSY`) before the page checks; keel's kernel answers
//!   that after them.
//! - `register_vcpu_time_memory_area`: copies in the address as for the
//!   runstate area (8 bytes native, the 4-byte handle for a 32-bit caller,
//!   as Xen's `compat_vcpu_op`); `-EFAULT` if the 32-byte
//!   `vcpu_time_info` there would leave the address space (Xen skips that
//!   check for a translated guest); then
//!   [`Domain::register_vcpu_time_area`] (0 stops the copies: Xen's null
//!   handle), and, unless the address is 0, [`Domain::vcpu_time_info`] is
//!   written there at once with [`update_secondary_system_time`], ignoring
//!   faults. Xen instead forces a rewrite of the primary copy too
//!   (`force_update_vcpu_system_time`), which bumps its version; keel's
//!   never changes, so it is left alone. Any vCPU of the domain, as Xen.
//! - `send_nmi`: `extra_args` must be NULL (`-EINVAL`, after the vCPU
//!   check, as Xen); then [`Domain::vcpu_send_nmi`]. Any vCPU of the
//!   domain, the caller included.
//! - `get_physid`: [`Domain::vcpu_get_physid`] (`-EINVAL` but for a
//!   hardware domain's vCPU pinned to one pCPU, as Xen's
//!   `is_hwdom_pinned_vcpu`; for HVM/PVH as for PV), then the ids are
//!   copied out (`-EFAULT`).
//! - The physical-area registrations (14, 15), and unknown commands:
//!   `-ENOSYS`.
//!
//! # The secondary time area
//!
//! Xen keeps each registered area a copy of the vCPU's `vcpu_time_info`
//! (`update_secondary_system_time`, `xen/arch/x86/time.c`): every time it
//! rewrites the primary one in `vcpu_info`, it copies the same data, under
//! the same odd version, to the guest-virtual address, then makes the
//! version even. Guests read it where they cannot read `vcpu_info` (Linux
//! maps it into its vDSO for `clock_gettime`). The kernel writes it with
//! [`update_secondary_system_time`] too, so the protocol lives here once.

use super::{Ctx, Domain, GuestWidth, Outcome};
use crate::abi::Errno;
use crate::abi::hvm::VcpuHvmContext;
use crate::abi::vcpu::*;
use crate::abi::xen::{VcpuInfo, VcpuTimeInfo};

/// Xen's `MILLISECS(1)`: the shortest periodic timer.
const MIN_PERIOD_NS: u64 = 1_000_000;
/// Xen's `STIME_DELTA_MAX`: the longest.
const MAX_PERIOD_NS: u64 = u64::MAX >> 2;

pub(super) fn do_vcpu_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u64,
    vcpuid: u64,
    arg: u64,
) -> Outcome {
    // `int cmd`, `unsigned int vcpuid`: the low 32 bits.
    Outcome::from_result(
        cx.vcpu(vcpuid as u32)
            .and_then(|v| vcpu_op(cx, cmd as u32, v, arg)),
    )
}

fn vcpu_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u32,
    vcpu: u32,
    arg: u64,
) -> Result<i64, Errno> {
    match cmd {
        // A PV domain's argument is a `vcpu_guest_context` (its whole state),
        // an HVM/PVH domain's a `vcpu_hvm_context` (Xen's
        // `arch_initialise_vcpu`).
        VCPUOP_INITIALISE if cx.d.is_pv() => {
            if cx.width != GuestWidth::Bits64 {
                return Err(Errno::ENOSYS);
            }
            let ctx = crate::abi::pv::VcpuGuestContext::from_bytes(&cx.read(arg)?);
            cx.d.pv_vcpu_initialise(vcpu, &ctx).map(|()| 0)
        }
        VCPUOP_INITIALISE => {
            let ctx = VcpuHvmContext::from_bytes(&cx.read(arg)?);
            cx.d.vcpu_initialise(vcpu, &ctx).map(|()| 0)
        }
        VCPUOP_UP => cx.d.vcpu_up(vcpu).map(|()| 0),
        VCPUOP_DOWN => cx.d.vcpu_down(vcpu).map(|()| 0),
        VCPUOP_IS_UP => Ok(i64::from(cx.d.vcpu_is_up(vcpu))),
        VCPUOP_GET_RUNSTATE_INFO => {
            let r = cx.d.vcpu_runstate(vcpu);
            write_runstate(cx, arg, r).map(|()| 0)
        }
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let (gva, size) = match cx.width {
                GuestWidth::Bits64 => (
                    VcpuRegisterRunstateMemoryArea::from_bytes(&cx.read(arg)?).addr,
                    VcpuRunstateInfo::SIZE,
                ),
                GuestWidth::Bits32 => (
                    u64::from(
                        VcpuRegisterRunstateMemoryAreaCompat::from_bytes(&cx.read(arg)?).addr,
                    ),
                    VcpuRunstateInfoCompat::SIZE,
                ),
            };
            cx.check_range(gva, size)?;
            cx.d.register_runstate_area(vcpu, gva, cx.width)?;
            if gva != 0 {
                let r = cx.d.vcpu_runstate(vcpu);
                // Xen ignores a fault here (`__copy_to_guest` unchecked).
                let _ = write_runstate(cx, gva, r);
            }
            Ok(0)
        }
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA => {
            // `vcpu_register_time_memory_area` has the runstate area's layout:
            // a union of a handle, a pointer and a `uint64_t`, of which Xen
            // reads the handle (4 bytes for a 32-bit caller).
            let gva = match cx.width {
                GuestWidth::Bits64 => {
                    VcpuRegisterRunstateMemoryArea::from_bytes(&cx.read(arg)?).addr
                }
                GuestWidth::Bits32 => {
                    u64::from(VcpuRegisterRunstateMemoryAreaCompat::from_bytes(&cx.read(arg)?).addr)
                }
            };
            cx.check_range(gva, VcpuTimeInfo::SIZE)?;
            cx.d.register_vcpu_time_area(vcpu, gva)?;
            if gva != 0 {
                let t = cx.d.vcpu_time_info(vcpu);
                // Faults are ignored, as Xen's unchecked `__copy_to_guest`s.
                update_secondary_system_time(gva, &t, |a, b| cx.write(a, b));
            }
            Ok(0)
        }
        VCPUOP_SET_PERIODIC_TIMER => {
            let a = VcpuSetPeriodicTimer::from_bytes(&cx.read(arg)?);
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&a.period_ns) {
                return Err(Errno::EINVAL);
            }
            cx.d.set_periodic_timer(vcpu, a.period_ns);
            Ok(0)
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            cx.d.set_periodic_timer(vcpu, 0);
            Ok(0)
        }
        VCPUOP_SET_SINGLESHOT_TIMER => {
            let current = cx.d.vcpu_id();
            // Xen's compat path copies in before the vCPU check, the native
            // one after.
            let timeout = match cx.width {
                GuestWidth::Bits64 => {
                    if vcpu != current {
                        return Err(Errno::EINVAL);
                    }
                    VcpuSetSingleshotTimer::from_bytes(&cx.read(arg)?).timeout_abs_ns
                }
                GuestWidth::Bits32 => {
                    let a = VcpuSetSingleshotTimerCompat::from_bytes(&cx.read(arg)?);
                    if vcpu != current {
                        return Err(Errno::EINVAL);
                    }
                    a.timeout_abs_ns
                }
            };
            cx.d.set_singleshot_timer(timeout);
            Ok(0)
        }
        VCPUOP_STOP_SINGLESHOT_TIMER => {
            if vcpu != cx.d.vcpu_id() {
                return Err(Errno::EINVAL);
            }
            cx.d.stop_singleshot_timer();
            Ok(0)
        }
        VCPUOP_REGISTER_VCPU_INFO => {
            let a = VcpuRegisterVcpuInfo::from_bytes(&cx.read(arg)?);
            check_vcpu_info_area(a.mfn, a.offset, cx.width)?;
            cx.d.register_vcpu_info(vcpu, a.mfn, a.offset).map(|()| 0)
        }
        VCPUOP_SEND_NMI => {
            // `guest_handle_is_null`: the argument register, cut to the
            // caller's width, is 0.
            if arg != 0 {
                return Err(Errno::EINVAL);
            }
            cx.d.vcpu_send_nmi(vcpu).map(|()| 0)
        }
        VCPUOP_GET_PHYSID => {
            let phys_id = cx.d.vcpu_get_physid(vcpu)?;
            cx.write(arg, &VcpuGetPhysid { phys_id }.to_bytes())
                .map(|()| 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Xen's `update_secondary_system_time`: copies the `vcpu_time_info` `t`
/// to guest-virtual `gva` with `copy_to_guest`, under the version protocol
/// its readers rely on (a reader retries while the version is odd or
/// changed under it):
///
/// 1. the version alone, `t.version | 1` (odd: an update is under way);
/// 2. the whole structure, with that odd version;
/// 3. the version again, one more (even: settled).
///
/// Pass the odd version the primary copy carries while it is rewritten, and
/// the secondary ends with the primary's version, as in Xen; pass a settled
/// (even) version `v` and it gets `v + 1`, then `v + 2`, the next update.
/// The same bytes suit both guest widths (`vcpu_time_info` has no compat
/// layout). Faults are the guest's problem and ignored; but if the first
/// write faults nothing more is written, as in Xen.
pub fn update_secondary_system_time<E>(
    gva: u64,
    t: &VcpuTimeInfo,
    mut copy_to_guest: impl FnMut(u64, &[u8]) -> Result<(), E>,
) {
    let begin = t.version | 1;
    if copy_to_guest(gva, &begin.to_le_bytes()).is_err() {
        return;
    }
    let body = VcpuTimeInfo {
        version: begin,
        ..*t
    };
    let _ = copy_to_guest(gva, &body.to_bytes());
    let _ = copy_to_guest(gva, &begin.wrapping_add(1).to_le_bytes());
}

/// Copies `r` out to `gva` in the caller's layout.
fn write_runstate<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    gva: u64,
    r: VcpuRunstateInfo,
) -> Result<(), Errno> {
    match cx.width {
        GuestWidth::Bits64 => cx.write(gva, &VcpuRunstateInfo { pad: 0, ..r }.to_bytes()),
        GuestWidth::Bits32 => cx.write(gva, &VcpuRunstateInfoCompat::from(r).to_bytes()),
    }
}

/// The checks Xen's `VCPUOP_register_vcpu_info` and `map_guest_area` make
/// on the address alone.
fn check_vcpu_info_area(gfn: u64, offset: u32, width: GuestWidth) -> Result<(), Errno> {
    // `gfn_to_gaddr(gfn) + offset`, in 64-bit arithmetic that may wrap, must
    // not be ~0 and must lie in frame `gfn`.
    let gaddr = (gfn << 12).wrapping_add(u64::from(offset));
    if gaddr == u64::MAX || gaddr >> 12 != gfn {
        return Err(Errno::EINVAL);
    }
    // `gaddr >> 12 == gfn < 2^52`, so this cannot overflow.
    let last = gaddr + (VcpuInfo::SIZE as u64 - 1);
    if last >> 12 != gfn {
        return Err(Errno::ENXIO);
    }
    let align = match width {
        GuestWidth::Bits64 => 8,
        GuestWidth::Bits32 => 4,
    };
    if gaddr % align != 0 {
        return Err(Errno::ENXIO);
    }
    Ok(())
}
