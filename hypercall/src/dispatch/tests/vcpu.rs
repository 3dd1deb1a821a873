//! `vcpu_op`.

use super::*;
use crate::abi::hvm::{
    VCPU_HVM_MODE_32B, VCPU_HVM_MODE_64B, VcpuHvmContext, VcpuHvmX86_32, VcpuHvmX86_64,
};
use crate::abi::vcpu::*;
use crate::abi::xen::VcpuTimeInfo;

const OP: u32 = nr::VCPU_OP;

#[test]
fn vcpu_ids_are_checked_first() {
    let mut d = domu();
    for cmd in [0u64, 1, 3, 4, 10, 11, 12, 13, 99] {
        for vcpu in [4u64, 0xffff_ffff] {
            assert_eq!(
                run64(&mut d, OP, &[cmd, vcpu, 0]),
                err(Errno::ENOENT),
                "cmd {cmd}"
            );
        }
    }
    // `unsigned int vcpuid`: bits above 31 are not part of it.
    assert_eq!(run64(&mut d, OP, &[3, 1 << 32, 0]), Outcome::ret(1));
    assert_eq!(run64(&mut d, OP, &[3, 1 << 32 | 1, 0]), Outcome::ret(0));
    assert!(d.calls.is_empty());
}

#[test]
fn up_down_is_up() {
    let mut d = domu();
    assert_eq!(run32(&mut d, OP, &[VCPUOP_UP.into(), 2, 0]), ok());
    assert_eq!(
        run32(&mut d, OP, &[VCPUOP_IS_UP.into(), 2, 0]),
        Outcome::ret(1)
    );
    assert_eq!(run64(&mut d, OP, &[VCPUOP_DOWN.into(), 2, 0]), ok());
    assert_eq!(
        run64(&mut d, OP, &[VCPUOP_IS_UP.into(), 2, 0]),
        Outcome::ret(0)
    );
    d.vcpu_err = Some(Errno::ENOSYS);
    assert_eq!(
        run64(&mut d, OP, &[VCPUOP_UP.into(), 1, 0]),
        err(Errno::ENOSYS)
    );
    assert_eq!(d.calls, ["vcpu_up(2)", "vcpu_down(2)", "vcpu_up(1)"]);
}

#[test]
fn initialise_passes_the_context_as_copied_in() {
    for width in WIDTHS {
        let mut d = domu();
        let r32 = VcpuHvmX86_32 {
            eip: 0x10_0000,
            cs_ar: 0xc9b,
            ..Default::default()
        };
        let mut ctx = VcpuHvmContext {
            mode: VCPU_HVM_MODE_32B,
            pad: 0,
            cpu_regs: [0; 120],
        };
        ctx.cpu_regs.copy_from_slice(&r32.to_bytes());
        d.poke(ARG, &ctx.to_bytes());
        assert_eq!(run(&mut d, width, OP, &[0, 1, ARG]), ok());

        let r64 = VcpuHvmX86_64 {
            rip: 0xffff_8000_0000_1000,
            ..Default::default()
        };
        ctx.mode = VCPU_HVM_MODE_64B;
        ctx.cpu_regs = [0xee; 120];
        ctx.cpu_regs[..112].copy_from_slice(&r64.to_bytes());
        d.poke(ARG, &ctx.to_bytes());
        assert_eq!(run(&mut d, width, OP, &[0, 2, ARG]), ok());

        // An unknown mode and a nonzero pad are the kernel's to refuse,
        // after its "already initialised" check, as in Xen.
        ctx.mode = 2;
        d.poke(ARG, &ctx.to_bytes());
        assert_eq!(run(&mut d, width, OP, &[0, 3, ARG]), ok());
        ctx.mode = VCPU_HVM_MODE_64B;
        ctx.pad = 7;
        d.poke(ARG, &ctx.to_bytes());
        d.vcpu_err = Some(Errno::EEXIST);
        assert_eq!(run(&mut d, width, OP, &[0, 2, ARG]), err(Errno::EEXIST));
        d.vcpu_err = Some(Errno::EINVAL);
        assert_eq!(run(&mut d, width, OP, &[0, 3, ARG]), err(Errno::EINVAL));
        assert_eq!(
            d.calls,
            [
                "vcpu_initialise(1, mode 0 eip=0x100000)",
                "vcpu_initialise(2, mode 1 rip=0xffff800000001000)",
                "vcpu_initialise(3, mode 2)",
                "vcpu_initialise(2, mode 1 rip=0xffff800000001000 pad=0x7)",
                "vcpu_initialise(3, mode 1 rip=0xffff800000001000 pad=0x7)",
            ]
        );

        // All 128 bytes are read, before the domain is asked.
        d.faults.push(ARG + 127..ARG + 128);
        assert_eq!(run(&mut d, width, OP, &[0, 2, ARG]), err(Errno::EFAULT));
        assert_eq!(run(&mut d, width, OP, &[0, 2, 0]), err(Errno::EFAULT));
        assert_eq!(d.calls.len(), 5);
    }
}

#[test]
fn send_nmi() {
    for width in WIDTHS {
        let mut d = domu();
        d.vcpu_id = 1;
        // Any vCPU, the caller included.
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_SEND_NMI.into(), 2, 0]),
            ok()
        );
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_SEND_NMI.into(), 1, 0]),
            ok()
        );
        assert_eq!(d.nmi_pending, [false, true, true, false]);
        // extra_args must be NULL.
        for arg in [ARG, 1, 0xffff_ffff] {
            assert_eq!(
                run(&mut d, width, OP, &[VCPUOP_SEND_NMI.into(), 0, arg]),
                err(Errno::EINVAL),
                "arg {arg:#x}"
            );
        }
        // The vCPU is checked first.
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_SEND_NMI.into(), 4, ARG]),
            err(Errno::ENOENT)
        );
        d.vcpu_err = Some(Errno::ENOSYS);
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_SEND_NMI.into(), 3, 0]),
            err(Errno::ENOSYS)
        );
        assert_eq!(
            d.calls,
            ["vcpu_send_nmi(2)", "vcpu_send_nmi(1)", "vcpu_send_nmi(3)"]
        );
    }
    // A 32-bit caller's handle is the low half of the register: NULL here.
    let mut d = domu();
    assert_eq!(
        run32(&mut d, OP, &[VCPUOP_SEND_NMI.into(), 0, 1 << 32]),
        ok()
    );
    assert_eq!(
        run64(&mut d, OP, &[VCPUOP_SEND_NMI.into(), 0, 1 << 32]),
        err(Errno::EINVAL)
    );
    assert_eq!(d.calls, ["vcpu_send_nmi(0)"]);
}

#[test]
fn get_physid() {
    for width in WIDTHS {
        // Not a pinned hardware-domain vCPU: `-EINVAL`, before the copy-out.
        let mut d = dom0();
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_GET_PHYSID.into(), 0, BUF]),
            err(Errno::EINVAL)
        );
        assert_eq!(d.peek(BUF, 8), [0xAA; 8]);
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_GET_PHYSID.into(), 0, 0]),
            err(Errno::EINVAL)
        );

        d.physid = Some(0x0000_0003_0000_0006);
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_GET_PHYSID.into(), 1, BUF]),
            ok()
        );
        assert_eq!(
            d.peek(BUF, 9),
            [6, 0, 0, 0, 3, 0, 0, 0, 0xAA],
            "8 bytes: APIC id, then ACPI id"
        );
        for bad in [0, END - 4] {
            assert_eq!(
                run(&mut d, width, OP, &[VCPUOP_GET_PHYSID.into(), 1, bad]),
                err(Errno::EFAULT)
            );
        }
        d.read_only.push(BUF..BUF + 8);
        assert_eq!(
            run(&mut d, width, OP, &[VCPUOP_GET_PHYSID.into(), 1, BUF]),
            err(Errno::EFAULT)
        );
    }
}

#[test]
fn get_runstate_info_both_layouts() {
    let mut d = domu();
    assert_eq!(
        run64(&mut d, OP, &[VCPUOP_GET_RUNSTATE_INFO.into(), 2, BUF]),
        ok()
    );
    let native = VcpuRunstateInfo::from_bytes(d.peek(BUF, 48).try_into().unwrap());
    assert_eq!(
        native,
        VcpuRunstateInfo {
            state: 2,
            pad: 0,
            ..d.runstate
        }
    );
    assert_eq!(d.peek(BUF + 48, 1), [0xAA]);

    let mut d = domu();
    assert_eq!(
        run32(&mut d, OP, &[VCPUOP_GET_RUNSTATE_INFO.into(), 1, BUF]),
        ok()
    );
    let b = d.peek(BUF, 45).to_vec();
    assert_eq!(b[0..4], 1i32.to_le_bytes());
    assert_eq!(
        b[4..12],
        0x1122_3344_5566_7788u64.to_le_bytes(),
        "no padding"
    );
    assert_eq!(b[12..20], 1u64.to_le_bytes());
    assert_eq!(b[36..44], 4u64.to_le_bytes());
    assert_eq!(b[44], 0xAA, "44 bytes only");

    for p in [0, END - 40, u64::MAX - 8] {
        assert_eq!(run64(&mut d, OP, &[4, 0, p]), err(Errno::EFAULT));
    }
}

#[test]
fn register_runstate_area_native() {
    let mut d = domu();
    d.poke(
        ARG,
        &VcpuRegisterRunstateMemoryArea { addr: BUF }.to_bytes(),
    );
    assert_eq!(run64(&mut d, OP, &[5, 1, ARG]), ok());
    assert_eq!(
        d.calls,
        [format!("register_runstate_area(1, {BUF:#x}, Bits64)")]
    );
    // Written at once.
    assert_eq!(d.peek(BUF, 4), 1i32.to_le_bytes());
    assert_eq!(d.peek(BUF + 40, 8), 4u64.to_le_bytes());
    assert_eq!(d.peek(BUF + 48, 1), [0xAA]);

    // A fault writing is ignored, as in Xen.
    let mut d = domu();
    d.read_only.push(BUF..BUF + 48);
    d.poke(
        ARG,
        &VcpuRegisterRunstateMemoryArea { addr: BUF }.to_bytes(),
    );
    assert_eq!(run64(&mut d, OP, &[5, 0, ARG]), ok());
    // 0 unregisters, and nothing is written.
    d.poke(ARG, &VcpuRegisterRunstateMemoryArea { addr: 0 }.to_bytes());
    assert_eq!(run64(&mut d, OP, &[5, 0, ARG]), ok());
    assert_eq!(d.calls[1], "register_runstate_area(0, 0x0, Bits64)");
    // Beyond the address space.
    d.poke(
        ARG,
        &VcpuRegisterRunstateMemoryArea {
            addr: u64::MAX - 40,
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, OP, &[5, 0, ARG]), err(Errno::EFAULT));
    assert_eq!(run64(&mut d, OP, &[5, 0, END - 4]), err(Errno::EFAULT));
    assert_eq!(d.calls.len(), 2);
}

#[test]
fn register_runstate_area_compat() {
    let mut d = domu();
    d.poke(ARG, &(BUF as u32).to_le_bytes());
    // Only the 4-byte handle is read.
    d.faults.push(ARG + 4..ARG + 8);
    assert_eq!(run32(&mut d, OP, &[5, 3, ARG]), ok());
    assert_eq!(
        d.calls,
        [format!("register_runstate_area(3, {BUF:#x}, Bits32)")]
    );
    assert_eq!(d.peek(BUF + 4, 8), 0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(d.peek(BUF + 44, 1), [0xAA]);
    // 44 bytes from 0xffff_ffd4 end exactly at 4 GiB; from 0xffff_ffd5 they
    // do not fit.
    d.poke(ARG, &0xffff_ffd5u32.to_le_bytes());
    assert_eq!(run32(&mut d, OP, &[5, 3, ARG]), err(Errno::EFAULT));
    d.poke(ARG, &0xffff_ffd4u32.to_le_bytes());
    assert_eq!(run32(&mut d, OP, &[5, 3, ARG]), ok());
}

const TIME_AREA: u32 = VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA;

/// The fake's `vcpu_time_info` as a registered area must hold it after
/// one update: the same fields, the version one update on (6 -> 8).
fn settled_time(d: &FakeDomain) -> VcpuTimeInfo {
    VcpuTimeInfo {
        version: d.time_info.version + 2,
        ..d.time_info
    }
}

fn time_at(d: &FakeDomain, gva: u64) -> VcpuTimeInfo {
    VcpuTimeInfo::from_bytes(d.peek(gva, 32).try_into().unwrap())
}

#[test]
fn register_time_area_native() {
    let mut d = domu();
    d.poke(
        ARG,
        &VcpuRegisterRunstateMemoryArea { addr: BUF }.to_bytes(),
    );
    // Any vCPU of the domain, not only the caller (vCPU 0).
    assert_eq!(run64(&mut d, OP, &[TIME_AREA.into(), 2, ARG]), ok());
    assert_eq!(d.calls, [format!("register_vcpu_time_area(2, {BUF:#x})")]);
    assert_eq!(d.time_areas[2], BUF);
    // Written at once, 32 bytes, version even at the end.
    assert_eq!(time_at(&d, BUF), settled_time(&d));
    assert_eq!(d.peek(BUF + 32, 1), [0xAA]);
    assert_eq!(d.peek(BUF - 1, 1), [0xAA]);

    // Re-registration moves it: the new area is written, the old one left.
    d.poke(BUF, &[0xAA; 32]);
    let new = BUF + 0x200;
    d.poke(
        ARG,
        &VcpuRegisterRunstateMemoryArea { addr: new }.to_bytes(),
    );
    assert_eq!(run64(&mut d, OP, &[TIME_AREA.into(), 2, ARG]), ok());
    assert_eq!(d.time_areas[2], new);
    assert_eq!(time_at(&d, new), settled_time(&d));
    assert_eq!(d.peek(BUF, 32), [0xAA; 32]);

    // 0 unregisters (Xen's null handle) and nothing is written.
    d.poke(ARG, &VcpuRegisterRunstateMemoryArea { addr: 0 }.to_bytes());
    assert_eq!(run64(&mut d, OP, &[TIME_AREA.into(), 2, ARG]), ok());
    assert_eq!(d.calls[2], "register_vcpu_time_area(2, 0x0)");
    assert_eq!(d.time_areas[2], 0);
}

#[test]
fn register_time_area_compat() {
    let mut d = domu();
    d.poke(ARG, &(BUF as u32).to_le_bytes());
    // Only the 4-byte handle is read.
    d.faults.push(ARG + 4..ARG + 8);
    assert_eq!(run32(&mut d, OP, &[TIME_AREA.into(), 1, ARG]), ok());
    assert_eq!(d.calls, [format!("register_vcpu_time_area(1, {BUF:#x})")]);
    // The same layout as for a 64-bit caller.
    assert_eq!(time_at(&d, BUF), settled_time(&d));
    assert_eq!(d.peek(BUF + 32, 1), [0xAA]);
    // 32 bytes from 0xffff_ffe0 end exactly at 4 GiB (not in the fake's
    // memory: the write faults, which is ignored); from 0xffff_ffe1 they do
    // not fit.
    d.poke(ARG, &0xffff_ffe1u32.to_le_bytes());
    assert_eq!(
        run32(&mut d, OP, &[TIME_AREA.into(), 1, ARG]),
        err(Errno::EFAULT)
    );
    d.poke(ARG, &0xffff_ffe0u32.to_le_bytes());
    assert_eq!(run32(&mut d, OP, &[TIME_AREA.into(), 1, ARG]), ok());
    assert_eq!(d.time_areas[1], 0xffff_ffe0);
}

#[test]
fn register_time_area_faults() {
    for width in WIDTHS {
        let mut d = domu();
        // The argument is unreadable.
        for p in [0, END - 2, u64::MAX] {
            assert_eq!(
                run(&mut d, width, OP, &[TIME_AREA.into(), 0, p]),
                err(Errno::EFAULT),
                "{p:#x} {width:?}"
            );
        }
        // A fault writing the area is ignored, as in Xen; it stays registered.
        d.read_only.push(BUF..BUF + 32);
        d.poke(ARG, &BUF.to_le_bytes());
        assert_eq!(run(&mut d, width, OP, &[TIME_AREA.into(), 0, ARG]), ok());
        assert_eq!(d.time_areas[0], BUF);
        assert_eq!(d.peek(BUF, 32), [0xAA; 32]);
        assert_eq!(d.calls.len(), 1);
    }
    // Beyond the 64-bit address space.
    let mut d = domu();
    d.poke(ARG, &(u64::MAX - 30).to_le_bytes());
    assert_eq!(
        run64(&mut d, OP, &[TIME_AREA.into(), 0, ARG]),
        err(Errno::EFAULT)
    );
    d.poke(ARG, &(u64::MAX - 31).to_le_bytes());
    assert_eq!(run64(&mut d, OP, &[TIME_AREA.into(), 0, ARG]), ok());
    assert_eq!(d.calls.len(), 1);
}

/// Records each `copy_to_guest` of [`update_secondary_system_time`], and
/// fails the ones numbered in `fail`.
fn secondary_writes(t: &VcpuTimeInfo, fail: &[usize]) -> Vec<(u64, Vec<u8>)> {
    let mut writes = Vec::new();
    update_secondary_system_time(0x5000, t, |gva, b| {
        writes.push((gva, b.to_vec()));
        if fail.contains(&(writes.len() - 1)) {
            Err(Errno::EFAULT)
        } else {
            Ok(())
        }
    });
    writes
}

#[test]
fn secondary_time_version_protocol() {
    let t = domu().time_info;
    for (version, begin, end) in [
        // A settled primary: the next update.
        (6u32, 7u32, 8u32),
        // The primary's odd version while it is rewritten: the same.
        (9, 9, 10),
        (u32::MAX, u32::MAX, 0),
        (0, 1, 2),
    ] {
        let w = secondary_writes(&VcpuTimeInfo { version, ..t }, &[]);
        let body = VcpuTimeInfo {
            version: begin,
            ..t
        };
        assert_eq!(
            w,
            [
                (0x5000, begin.to_le_bytes().to_vec()),
                (0x5000, body.to_bytes().to_vec()),
                (0x5000, end.to_le_bytes().to_vec()),
            ],
            "{version}"
        );
    }
    // A fault on the first write stops there; later ones are ignored.
    assert_eq!(secondary_writes(&t, &[0]).len(), 1);
    assert_eq!(secondary_writes(&t, &[1]).len(), 3);
    assert_eq!(secondary_writes(&t, &[1, 2]).len(), 3);
}

#[test]
fn periodic_timer_limits() {
    let mut d = domu();
    for (period, want) in [
        (1_000_000u64, ok()),
        (999_999, err(Errno::EINVAL)),
        (0, err(Errno::EINVAL)),
        ((1 << 62) - 1, ok()),
        (1 << 62, err(Errno::EINVAL)),
        (u64::MAX, err(Errno::EINVAL)),
    ] {
        d.poke(ARG, &VcpuSetPeriodicTimer { period_ns: period }.to_bytes());
        for width in WIDTHS {
            assert_eq!(run(&mut d, width, OP, &[6, 2, ARG]), want, "{period}");
        }
    }
    assert_eq!(d.periodic[2], (1 << 62) - 1);
    // Any vCPU of the domain, not only the caller.
    assert_eq!(
        run64(&mut d, OP, &[VCPUOP_STOP_PERIODIC_TIMER.into(), 2, 0]),
        ok()
    );
    assert_eq!(d.periodic[2], 0);
    assert_eq!(run64(&mut d, OP, &[6, 2, 0]), err(Errno::EFAULT));
    assert_eq!(d.calls.len(), 5);
}

#[test]
fn singleshot_timer() {
    let mut d = domu();
    d.vcpu_id = 1;
    let native = VcpuSetSingleshotTimer {
        timeout_abs_ns: 0x1234_5678_9abc,
        flags: VCPU_SSHOTTMR_FUTURE,
        pad: 0,
    };
    d.poke(ARG, &native.to_bytes());
    assert_eq!(run64(&mut d, OP, &[8, 1, ARG]), ok());
    assert_eq!(d.singleshot, Some(0x1234_5678_9abc));
    // A time in the past, with the "future" flag: still set (fires at once).
    d.poke(
        ARG,
        &VcpuSetSingleshotTimer {
            timeout_abs_ns: 1,
            ..native
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, OP, &[8, 1, ARG]), ok());
    assert_eq!(d.singleshot, Some(1));
    // Compat: 12 bytes.
    d.poke(
        ARG,
        &VcpuSetSingleshotTimerCompat {
            timeout_abs_ns: 0x55_0000_0000,
            flags: 0,
        }
        .to_bytes(),
    );
    d.faults.push(ARG + 12..ARG + 16);
    assert_eq!(run32(&mut d, OP, &[8, 1, ARG]), ok());
    assert_eq!(d.singleshot, Some(0x55_0000_0000));
    assert_eq!(run64(&mut d, OP, &[8, 1, ARG]), err(Errno::EFAULT));
    assert_eq!(run64(&mut d, OP, &[9, 1, 0]), ok());
    assert_eq!(d.singleshot, None);
    // Another vCPU's single-shot timer: -EINVAL, before the native copy-in,
    // after the compat one.
    assert_eq!(run64(&mut d, OP, &[8, 0, 0]), err(Errno::EINVAL));
    assert_eq!(run32(&mut d, OP, &[8, 0, 0]), err(Errno::EFAULT));
    d.faults.clear();
    assert_eq!(run32(&mut d, OP, &[8, 0, ARG]), err(Errno::EINVAL));
    assert_eq!(run64(&mut d, OP, &[9, 2, 0]), err(Errno::EINVAL));
    assert_eq!(d.calls.len(), 4);
}

fn vcpu_info(mfn: u64, offset: u32) -> VcpuRegisterVcpuInfo {
    VcpuRegisterVcpuInfo {
        mfn,
        offset,
        rsvd: 0xffff_ffff,
    }
}

#[test]
fn register_vcpu_info_checks() {
    let cases = [
        (vcpu_info(0x1234, 0), Ok(())),
        (vcpu_info(0x1234, 0xfc0), Ok(())),
        (vcpu_info(0, 8), Ok(())),
        // Crosses into the next page.
        (vcpu_info(0x1234, 0xfc1), Err(Errno::ENXIO)),
        (vcpu_info(0x1234, 0xfc8), Err(Errno::ENXIO)),
        // Not in the frame at all.
        (vcpu_info(0x1234, 0x1000), Err(Errno::EINVAL)),
        (vcpu_info(0x1234, u32::MAX), Err(Errno::EINVAL)),
        // A frame number that does not fit an address.
        (vcpu_info(1 << 52, 0), Err(Errno::EINVAL)),
        (vcpu_info(u64::MAX, 0), Err(Errno::EINVAL)),
        // gaddr == ~0.
        (vcpu_info((1 << 52) - 1, 0xfff), Err(Errno::EINVAL)),
    ];
    for width in WIDTHS {
        for (a, want) in cases {
            let mut d = domu();
            d.poke(ARG, &a.to_bytes());
            let o = run(&mut d, width, OP, &[10, 2, ARG]);
            assert_eq!(o, Outcome::from_result(want.map(|()| 0)), "{a:?} {width:?}");
            if want.is_ok() {
                assert_eq!(
                    d.calls,
                    [format!(
                        "register_vcpu_info(2, {:#x}, {:#x})",
                        a.mfn, a.offset
                    )]
                );
            } else {
                assert!(d.calls.is_empty());
            }
        }
    }
    // Alignment: 8 bytes for a 64-bit caller, 4 for a 32-bit one.
    let mut d = domu();
    d.poke(ARG, &vcpu_info(0x1234, 0x44).to_bytes());
    assert_eq!(run64(&mut d, OP, &[10, 0, ARG]), err(Errno::ENXIO));
    assert_eq!(run32(&mut d, OP, &[10, 0, ARG]), ok());
    d.poke(ARG, &vcpu_info(0x1234, 0x42).to_bytes());
    assert_eq!(run32(&mut d, OP, &[10, 1, ARG]), err(Errno::ENXIO));
    // Once only: the domain's -EBUSY.
    d.poke(ARG, &vcpu_info(0x1234, 0x40).to_bytes());
    assert_eq!(run64(&mut d, OP, &[10, 0, ARG]), err(Errno::EBUSY));
    assert_eq!(run64(&mut d, OP, &[10, 0, END - 8]), err(Errno::EFAULT));
}

#[test]
fn unimplemented_vcpu_ops() {
    let mut d = dom0();
    for cmd in [
        VCPUOP_REGISTER_RUNSTATE_PHYS_AREA,
        VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA,
        16,
        u32::MAX,
    ] {
        assert_eq!(
            run64(&mut d, OP, &[cmd.into(), 0, ARG]),
            err(Errno::ENOSYS),
            "cmd {cmd}"
        );
    }
    assert!(d.calls.is_empty());
}
