//! Host tests of the dispatcher against [`FakeDomain`]. The hypercalls of
//! the Xen core ops (event channels, vCPU ops and timers, memory
//! reservations, grant tables, the upcall vector, multicalls) and the
//! PV-only ones have a submodule each.

mod evtchn;
mod grant;
mod hvm;
mod memory;
mod multicall;
mod pv;
mod sched;
mod vcpu;

use proptest::prelude::*;

use super::fake::{BASE, END, FakeDomain, FakePort};
use super::*;
use crate::abi::console::*;
use crate::abi::domid::{DOMID_IO, DOMID_SELF, DOMID_XEN};
use crate::abi::hvm::*;
use crate::abi::hypercall as nr;
use crate::abi::memory::*;
use crate::abi::mmu::MMU_UPDATE_PREEMPTED;
use crate::abi::sched::*;
use crate::abi::version::*;

/// Where tests put argument structures.
const ARG: u64 = BASE + 0x100;
/// Where tests put buffers.
const BUF: u64 = BASE + 0x1000;

fn call(width: GuestWidth, nr: u32, args: &[u64]) -> HypercallArgs {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    HypercallArgs {
        nr: u64::from(nr),
        args: a,
        width,
    }
}

fn run64(d: &mut FakeDomain, nr: u32, args: &[u64]) -> Outcome {
    dispatch(d, &call(GuestWidth::Bits64, nr, args))
}

fn run32(d: &mut FakeDomain, nr: u32, args: &[u64]) -> Outcome {
    dispatch(d, &call(GuestWidth::Bits32, nr, args))
}

fn run(d: &mut FakeDomain, width: GuestWidth, nr: u32, args: &[u64]) -> Outcome {
    dispatch(d, &call(width, nr, args))
}

const WIDTHS: [GuestWidth; 2] = [GuestWidth::Bits32, GuestWidth::Bits64];

/// `Outcome::ret(0)`.
fn ok() -> Outcome {
    Outcome::ret(0)
}

fn dom0() -> FakeDomain {
    FakeDomain::new(0, true)
}

fn domu() -> FakeDomain {
    FakeDomain::new(3, false)
}

fn err(e: Errno) -> Outcome {
    Outcome::err(e)
}

// ---------------------------------------------------------------- general

#[test]
fn unknown_and_unimplemented_hypercalls_are_enosys() {
    let mut d = dom0();
    for n in [
        0u64,
        nr::MMU_UPDATE.into(),
        11,
        nr::SCHED_OP_COMPAT.into(),
        nr::PHYSDEV_OP.into(),
        43,
        55,
        56,
        63,
        64,
        1000,
        0x8000_0000,
        u64::MAX,
    ] {
        let c = HypercallArgs {
            nr: n,
            args: [BUF; 6],
            width: GuestWidth::Bits64,
        };
        assert_eq!(dispatch(&mut d, &c), err(Errno::ENOSYS), "nr {n:#x}");
    }
    assert!(d.console_out.is_empty());
    // A PV domain has more, but not these.
    let mut d = FakeDomain::new_pv(0, true);
    for n in [
        u64::from(nr::SCHED_OP_COMPAT),
        nr::PHYSDEV_OP_COMPAT.into(),
        nr::NMI_OP.into(),
        11,
        43,
        63,
        64,
        1 << 32 | u64::from(nr::MMU_UPDATE),
        u64::MAX,
    ] {
        let c = HypercallArgs {
            nr: n,
            args: [BUF; 6],
            width: GuestWidth::Bits64,
        };
        assert_eq!(dispatch(&mut d, &c), err(Errno::ENOSYS), "nr {n:#x}");
    }
    assert!(d.calls.is_empty());
}

#[test]
fn a_32bit_caller_only_has_32bit_registers() {
    let mut d = dom0();
    // eax = 17 (xen_version) with junk above bit 31, ebx = XENVER_version.
    let c = HypercallArgs {
        nr: 0xdead_beef_0000_0011,
        args: [0xffff_ffff_0000_0000, 0, 0, 0, 0, 0],
        width: GuestWidth::Bits32,
    };
    assert_eq!(dispatch(&mut d, &c), Outcome::ret(4 << 16 | 19));
    // The same junk in 64-bit mode is an unknown hypercall.
    let c64 = HypercallArgs {
        width: GuestWidth::Bits64,
        ..c
    };
    assert_eq!(dispatch(&mut d, &c64), err(Errno::ENOSYS));
}

#[test]
fn register_value_by_width() {
    let o = err(Errno::EFAULT);
    assert_eq!(o.register_value(GuestWidth::Bits64), (-14i64) as u64);
    assert_eq!(o.register_value(GuestWidth::Bits32), 0xffff_fff2);
    assert_eq!(Outcome::ret(4096).register_value(GuestWidth::Bits32), 4096);
}

#[test]
fn dispatch_works_through_dyn_domain() {
    let mut d = dom0();
    let dy: &mut dyn Domain = &mut d;
    assert_eq!(
        dispatch(dy, &call(GuestWidth::Bits64, nr::XEN_VERSION, &[7, 0])),
        Outcome::ret(4096)
    );
}

// ---------------------------------------------------------------- xen_version

#[test]
fn xenver_version() {
    assert_eq!(
        run64(&mut domu(), nr::XEN_VERSION, &[XENVER_VERSION.into(), 0]),
        Outcome::ret(0x0004_0013)
    );
}

#[test]
fn xenver_cmd_is_an_int() {
    // Bits above 31 of rdi are not part of `int cmd`.
    assert_eq!(
        run64(&mut domu(), nr::XEN_VERSION, &[1 << 32, 0]),
        Outcome::ret(0x0004_0013)
    );
}

#[test]
fn xenver_extraversion_is_nul_padded_and_truncated() {
    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[1, BUF]), Outcome::ret(0));
    let mut want = [0u8; 16];
    want[..7].copy_from_slice(b".0-keel");
    assert_eq!(d.peek(BUF, 16), want);
    assert_eq!(d.peek(BUF + 16, 1), [0xAA], "nothing past the buffer");

    d.extraversion = b"0123456789abcdefXYZ".to_vec();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[1, BUF]), Outcome::ret(0));
    assert_eq!(d.peek(BUF, 16), b"0123456789abcde\0");
}

#[test]
fn xenver_compile_info_layout() {
    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[2, BUF]), Outcome::ret(0));
    let info = XenCompileInfo::from_bytes(d.peek(BUF, 144).try_into().unwrap());
    assert!(info.compiler.starts_with(b"rustc 1.x nightly\0"));
    assert!(info.compile_by.starts_with(b"keel\0"));
    assert!(info.compile_domain.starts_with(b"example.org\0"));
    assert!(info.compile_date.starts_with(b"2026-01-01\0"));
    assert_eq!(d.peek(BUF + 64, 5), b"keel\0");
    assert_eq!(d.peek(BUF + 144, 1), [0xAA]);
}

#[test]
fn xenver_capabilities_and_changeset() {
    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[3, BUF]), Outcome::ret(0));
    let caps = d.peek(BUF, 1024).to_vec();
    assert!(caps.starts_with(b"hvm-3.0-x86_32 hvm-3.0-x86_64\0"));
    assert!(caps[29..].iter().all(|&b| b == 0));
    assert_eq!(d.peek(BUF + 1024, 1), [0xAA]);

    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[4, BUF]), Outcome::ret(0));
    assert!(d.peek(BUF, 64).starts_with(b"keel 0123456789abcdef\0"));
    assert_eq!(d.peek(BUF + 64, 1), [0], "still the capabilities' zeros");
}

#[test]
fn xenver_platform_parameters_native_and_compat() {
    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[5, BUF]), Outcome::ret(0));
    assert_eq!(d.peek(BUF, 9), [0, 0, 0, 0, 0, 0, 0, 0, 0xAA]);

    let mut d = domu();
    assert_eq!(run32(&mut d, nr::XEN_VERSION, &[5, BUF]), Outcome::ret(0));
    assert_eq!(d.peek(BUF, 5), [0, 0, 0, 0, 0xAA]);
}

#[test]
fn xenver_get_features() {
    let mut d = domu();
    d.poke(
        ARG,
        &XenFeatureInfo {
            submap_idx: 0,
            submap: 0xdead,
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[6, ARG]), Outcome::ret(0));
    let fi = XenFeatureInfo::from_bytes(d.peek(ARG, 8).try_into().unwrap());
    assert_eq!(
        fi,
        XenFeatureInfo {
            submap_idx: 0,
            submap: 0x304
        }
    );

    // Only submap 0 exists: Xen says -EINVAL and writes nothing.
    let before = XenFeatureInfo {
        submap_idx: 1,
        submap: 0xdead,
    }
    .to_bytes();
    d.poke(ARG, &before);
    assert_eq!(
        run64(&mut d, nr::XEN_VERSION, &[6, ARG]),
        err(Errno::EINVAL)
    );
    assert_eq!(d.peek(ARG, 8), before);

    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[6, 0]), err(Errno::EFAULT));
    // Readable but not writable: the copy-out faults.
    d.poke(ARG, &XenFeatureInfo::default().to_bytes());
    d.read_only.push(ARG..ARG + 8);
    assert_eq!(
        run64(&mut d, nr::XEN_VERSION, &[6, ARG]),
        err(Errno::EFAULT)
    );
}

#[test]
fn xenver_pagesize() {
    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[7, 0]), Outcome::ret(4096));
    assert_eq!(
        run64(&mut d, nr::XEN_VERSION, &[7, BUF]),
        err(Errno::EINVAL)
    );
    assert_eq!(run32(&mut d, nr::XEN_VERSION, &[7, 0]), Outcome::ret(4096));
}

#[test]
fn xenver_guest_handle() {
    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[8, BUF]), Outcome::ret(0));
    assert_eq!(d.peek(BUF, 17), [&[0u8; 16][..], &[0xAA]].concat());
    d.handle = [7; 16];
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[8, BUF]), Outcome::ret(0));
    assert_eq!(d.peek(BUF, 16), [7; 16]);
}

#[test]
fn xenver_commandline_privileged_and_denied() {
    let mut d = dom0();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[9, BUF]), Outcome::ret(0));
    assert!(d.peek(BUF, 1024).starts_with(b"console=com1 loglvl=all\0"));
    assert!(d.peek(BUF + 23, 1001).iter().all(|&b| b == 0));
    assert_eq!(d.peek(BUF + 1024, 1), [0xAA]);

    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[9, BUF]), Outcome::ret(0));
    assert_eq!(d.peek(BUF, 10), b"<denied>\0\xAA");
}

#[test]
fn xenver_build_id_and_varbufs() {
    let mut d = domu();
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[10, 0]), err(Errno::EPERM));
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[14, 0]), err(Errno::EPERM));

    let mut d = dom0();
    assert_eq!(
        run64(&mut d, nr::XEN_VERSION, &[10, 0]),
        err(Errno::ENODATA)
    );
    d.build_id = vec![0x12, 0x00, 0x34];
    // NULL asks for the size.
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[10, 0]), Outcome::ret(3));
    // Too small a buffer.
    d.poke(ARG, &2u32.to_le_bytes());
    assert_eq!(
        run64(&mut d, nr::XEN_VERSION, &[10, ARG]),
        err(Errno::ENOBUFS)
    );
    assert_eq!(d.peek(ARG + 4, 1), [0xAA]);
    // Binary data, NULs and all.
    d.poke(ARG, &8u32.to_le_bytes());
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[10, ARG]), Outcome::ret(3));
    assert_eq!(d.peek(ARG + 4, 4), [0x12, 0x00, 0x34, 0xAA]);

    // extraversion2 is open to everyone and has no NUL.
    let mut d = domu();
    d.poke(ARG, &100u32.to_le_bytes());
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[11, ARG]), Outcome::ret(7));
    assert_eq!(d.peek(ARG + 4, 8), b".0-keel\xAA");
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[12, 0]), Outcome::ret(29));
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[13, 0]), Outcome::ret(21));

    // A long string crosses several 128-byte pieces intact.
    let mut d = dom0();
    d.commandline = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    d.poke(ARG, &1000u32.to_le_bytes());
    assert_eq!(
        run64(&mut d, nr::XEN_VERSION, &[14, ARG]),
        Outcome::ret(1000)
    );
    assert_eq!(d.peek(ARG + 4, 1000), &d.commandline[..]);

    // Over Xen's 64 KiB limit.
    d.commandline = vec![b'x'; 64 * 1024 + 1];
    assert_eq!(run64(&mut d, nr::XEN_VERSION, &[14, 0]), err(Errno::E2BIG));
}

#[test]
fn xenver_bad_pointers_fault() {
    let mut d = dom0();
    d.build_id = vec![1, 2, 3];
    for cmd in [1u64, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14] {
        for p in [0, BASE - 1, END - 1, u64::MAX - 3] {
            let o = run64(&mut d, nr::XEN_VERSION, &[cmd, p]);
            // The varbuf family treats NULL as a size request.
            if p == 0 && cmd >= 10 {
                assert!(o.ret >= 0, "cmd {cmd}");
            } else {
                assert_eq!(o, err(Errno::EFAULT), "cmd {cmd} at {p:#x}");
            }
        }
    }
}

#[test]
fn xenver_unknown_subops() {
    let mut d = dom0();
    for cmd in [15u64, 16, 0x7fff_ffff, 0xffff_ffff] {
        assert_eq!(
            run64(&mut d, nr::XEN_VERSION, &[cmd, BUF]),
            err(Errno::ENOSYS)
        );
    }
}

// ---------------------------------------------------------------- console_io

fn put_text(d: &mut FakeDomain, at: u64, text: &[u8]) {
    d.poke(at, text);
}

#[test]
fn console_write_from_privileged_domain() {
    let mut d = dom0();
    put_text(&mut d, BUF, b"hello\x1b[2J\n");
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[CONSOLEIO_WRITE.into(), 10, BUF]),
        Outcome::ret(0)
    );
    assert_eq!(
        d.console_text(),
        b"hello\x1b[2J\n",
        "hardware domain: raw bytes"
    );
}

#[test]
fn console_is_denied_to_unprivileged_domains() {
    let mut d = domu();
    put_text(&mut d, BUF, b"hi\n");
    for cmd in [0u64, 1, 2, 99] {
        assert_eq!(
            run64(&mut d, nr::CONSOLE_IO, &[cmd, 3, BUF]),
            err(Errno::EPERM)
        );
    }
    assert!(d.console_out.is_empty());
}

#[test]
fn console_domain_output_is_filtered() {
    let mut d = domu();
    d.console = true;
    put_text(&mut d, BUF, b"a\x1b[2Jb\tc\x00\x7f\xffd\n");
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[0, 13, BUF]),
        Outcome::ret(0)
    );
    assert_eq!(d.console_text(), b"a[2Jb\tcd\n");
}

#[test]
fn console_write_zero_count_touches_nothing() {
    let mut d = dom0();
    assert_eq!(run64(&mut d, nr::CONSOLE_IO, &[0, 0, 0]), Outcome::ret(0));
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[0, 0, u64::MAX]),
        Outcome::ret(0)
    );
    assert!(d.console_out.is_empty());
}

#[test]
fn console_write_count_is_an_unsigned_int() {
    let mut d = dom0();
    put_text(&mut d, BUF, b"xyz");
    // rsi = 2^32 + 3: the count is 3.
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[1 << 32, (1 << 32) + 3, BUF]),
        Outcome::ret(0)
    );
    assert_eq!(d.console_text(), b"xyz");
}

#[test]
fn console_write_fault_midway() {
    let mut d = dom0();
    d.faults.push(BUF + 200..BUF + 300);
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[0, 400, BUF]),
        err(Errno::EFAULT)
    );
    // The first 128-byte piece was already out, as in Xen.
    assert_eq!(d.console_text().len(), 128);
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[0, 10, 0]),
        err(Errno::EFAULT)
    );
}

#[test]
fn console_write_large_count_preempts_and_resumes() {
    let mut d = dom0();
    let total: u32 = 40_000;
    let text: Vec<u8> = (0..total).map(|i| b'0' + (i % 10) as u8).collect();
    put_text(&mut d, BUF, &text);
    let mut c = call(GuestWidth::Bits64, nr::CONSOLE_IO, &[0, total.into(), BUF]);
    let mut entries = 0;
    loop {
        entries += 1;
        let o = dispatch(&mut d, &c);
        match o.action {
            Action::Preempted { args } => {
                assert_eq!(
                    d.console_text().len() as u32,
                    entries * CONSOLE_WRITE_BUDGET
                );
                assert_eq!(args[0], 0);
                assert_eq!(args[1], u64::from(total - entries * CONSOLE_WRITE_BUDGET));
                assert_eq!(args[2], BUF + u64::from(entries * CONSOLE_WRITE_BUDGET));
                c.args = args;
            }
            Action::Continue => {
                assert_eq!(o.ret, 0);
                break;
            }
            a => panic!("unexpected {a:?}"),
        }
    }
    assert_eq!(entries, 3);
    assert_eq!(d.console_text(), text);
}

#[test]
fn console_write_huge_count_is_bounded_per_entry() {
    let mut d = dom0();
    let o = run64(&mut d, nr::CONSOLE_IO, &[0, u32::MAX.into(), BUF]);
    assert!(matches!(o.action, Action::Preempted { .. }));
    assert_eq!(d.console_text().len() as u32, CONSOLE_WRITE_BUDGET);
}

#[test]
fn console_write_32bit_range_must_not_wrap() {
    let mut d = dom0();
    // 0xffff_fff0 + 0x20 leaves the 32-bit address space.
    assert_eq!(
        run32(&mut d, nr::CONSOLE_IO, &[0, 0x20, 0xffff_fff0]),
        err(Errno::EFAULT)
    );
    put_text(&mut d, BUF, b"ok");
    assert_eq!(run32(&mut d, nr::CONSOLE_IO, &[0, 2, BUF]), Outcome::ret(0));
    assert_eq!(d.console_text(), b"ok");
}

#[test]
fn console_read_and_unknown() {
    let mut d = dom0();
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[1, 100, BUF]),
        Outcome::ret(0)
    );
    assert_eq!(d.peek(BUF, 1), [0xAA]);
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[1, 0x8000_0000, BUF]),
        err(Errno::E2BIG)
    );
    assert_eq!(
        run64(&mut d, nr::CONSOLE_IO, &[2, 1, BUF]),
        err(Errno::ENOSYS)
    );
}

// ---------------------------------------------------------------- sched_op

#[test]
fn sched_yield_and_block() {
    let mut d = domu();
    assert_eq!(
        run64(&mut d, nr::SCHED_OP, &[SCHEDOP_YIELD.into(), 0]),
        Outcome {
            ret: 0,
            action: Action::Yield
        }
    );
    assert_eq!(
        run32(&mut d, nr::SCHED_OP, &[SCHEDOP_BLOCK.into(), 0]),
        Outcome {
            ret: 0,
            action: Action::Block
        }
    );
}

#[test]
fn sched_shutdown_reasons() {
    let cases = [
        (0u32, ShutdownReason::Poweroff),
        (1, ShutdownReason::Reboot),
        (2, ShutdownReason::Suspend),
        (3, ShutdownReason::Crash),
        (4, ShutdownReason::Watchdog),
        (5, ShutdownReason::SoftReset),
        (6, ShutdownReason::Other(6)),
        (255, ShutdownReason::Other(255)),
        // Xen keeps only the low 8 bits.
        (0x103, ShutdownReason::Crash),
    ];
    for (raw, want) in cases {
        for width in [GuestWidth::Bits32, GuestWidth::Bits64] {
            let mut d = domu();
            d.poke(ARG, &SchedShutdown { reason: raw }.to_bytes());
            let o = dispatch(&mut d, &call(width, nr::SCHED_OP, &[2, ARG]));
            assert_eq!(
                o,
                Outcome {
                    ret: 0,
                    action: Action::Shutdown(want)
                }
            );
        }
        assert_eq!(ShutdownReason::from_raw(raw).code(), raw as u8);
    }
}

#[test]
fn sched_shutdown_bad_pointer() {
    let mut d = domu();
    for p in [0, BASE - 2, END - 3, u64::MAX] {
        assert_eq!(run64(&mut d, nr::SCHED_OP, &[2, p]), err(Errno::EFAULT));
    }
    assert_eq!(
        run32(&mut d, nr::SCHED_OP, &[2, 0xffff_fffe]),
        err(Errno::EFAULT)
    );
}

#[test]
fn sched_other_commands() {
    let mut d = domu();
    d.poke(ARG, &[0; 24]);
    for cmd in [4u64, 5, 6, 8, 100, 0xffff_ffff] {
        assert_eq!(
            run64(&mut d, nr::SCHED_OP, &[cmd, ARG]),
            err(Errno::ENOSYS),
            "cmd {cmd}"
        );
    }
    assert_eq!(run64(&mut d, nr::SCHED_OP, &[7, ARG]), err(Errno::EPERM));
    assert_eq!(
        run64(&mut dom0(), nr::SCHED_OP, &[7, ARG]),
        err(Errno::ENOSYS)
    );
}

// ---------------------------------------------------------------- memory_op

fn xatp(domid: u16, space: u32, idx: u64, gpfn: u64) -> XenAddToPhysmap {
    XenAddToPhysmap {
        domid,
        size: 0,
        space,
        idx,
        gpfn,
    }
}

#[test]
fn add_to_physmap_shared_info_native() {
    for domid in [DOMID_SELF, 3] {
        let mut d = domu();
        d.poke(
            ARG,
            &xatp(domid, XENMAPSPACE_SHARED_INFO, 0, 0xf_eedf_00d1).to_bytes(),
        );
        assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, ARG]), Outcome::ret(0));
        assert_eq!(d.shared_info_gpfn, Some(0xf_eedf_00d1));
    }
}

#[test]
fn add_to_physmap_shared_info_compat() {
    let mut d = domu();
    let c = XenAddToPhysmapCompat {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: 0xfee01,
    };
    d.poke(ARG, &c.to_bytes());
    // Only 16 bytes are readable: the compat layout must not read 24.
    d.faults.push(ARG + 16..ARG + 32);
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[7, ARG]), Outcome::ret(0));
    assert_eq!(d.shared_info_gpfn, Some(0xfee01));
    // The native layout would need 24 bytes.
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, ARG]), err(Errno::EFAULT));
}

#[test]
fn add_to_physmap_errors() {
    let cases = [
        (
            xatp(DOMID_SELF, XENMAPSPACE_SHARED_INFO, 1, 5),
            Errno::EINVAL,
        ),
        (
            xatp(DOMID_SELF, XENMAPSPACE_SHARED_INFO, 0, u64::MAX),
            Errno::EINVAL,
        ),
        (xatp(4, XENMAPSPACE_SHARED_INFO, 0, 5), Errno::ESRCH),
        (xatp(DOMID_IO, XENMAPSPACE_SHARED_INFO, 0, 5), Errno::ESRCH),
        (
            xatp(DOMID_SELF, XENMAPSPACE_GMFN_FOREIGN, 0, 5),
            Errno::ENOSYS,
        ),
        (xatp(4, XENMAPSPACE_GMFN_FOREIGN, 0, 5), Errno::ENOSYS),
        (
            xatp(
                DOMID_SELF,
                XENMAPSPACE_GRANT_TABLE,
                XENMAPIDX_GRANT_TABLE_STATUS.into(),
                5,
            ),
            Errno::EINVAL,
        ),
        (
            xatp(DOMID_SELF, XENMAPSPACE_GRANT_TABLE, 1 << 32, 5),
            Errno::EINVAL,
        ),
        (xatp(4, XENMAPSPACE_GRANT_TABLE, 0, 5), Errno::ESRCH),
        (xatp(DOMID_SELF, XENMAPSPACE_GMFN, 0, 5), Errno::ENOSYS),
        (
            xatp(DOMID_SELF, XENMAPSPACE_GMFN_RANGE, 0, 5),
            Errno::ENOSYS,
        ),
        (xatp(DOMID_SELF, XENMAPSPACE_DEV_MMIO, 0, 5), Errno::EINVAL),
        (xatp(DOMID_SELF, 99, 0, 5), Errno::EINVAL),
    ];
    for (x, e) in cases {
        let mut d = domu();
        d.poke(ARG, &x.to_bytes());
        assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, ARG]), err(e), "{x:?}");
        assert_eq!(d.shared_info_gpfn, None);
        assert!(d.grant_frames.is_empty());
    }
    let mut d = domu();
    d.map_shared_info_err = Some(Errno::ENOMEM);
    d.poke(ARG, &xatp(DOMID_SELF, 0, 0, 5).to_bytes());
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, ARG]), err(Errno::ENOMEM));
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, 0]), err(Errno::EFAULT));
}

#[test]
fn memory_op_cmd_carries_a_start_extent() {
    let mut d = domu();
    d.poke(ARG, &xatp(DOMID_SELF, 0, 0, 9).to_bytes());
    // Extent 0xffff fits xen_add_to_physmap.size; 0x10000 does not.
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[7 | 0xffff << 6, ARG]),
        Outcome::ret(0)
    );
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[7 | 0x1_0000 << 6, ARG]),
        err(Errno::EDOM)
    );
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[7 | 1 << 63, ARG]),
        err(Errno::EDOM)
    );
}

fn e820_at(d: &FakeDomain, i: u64) -> E820Entry {
    E820Entry::from_bytes(d.peek(BUF + i * 20, 20).try_into().unwrap())
}

#[test]
fn memory_map_native() {
    let mut d = domu();
    let hdr = XenMemoryMap {
        nr_entries: 10,
        pad: 0x5555_5555,
        buffer: BUF,
    };
    d.poke(ARG, &hdr.to_bytes());
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, ARG]), Outcome::ret(0));
    let out = XenMemoryMap::from_bytes(d.peek(ARG, 16).try_into().unwrap());
    assert_eq!(
        out,
        XenMemoryMap {
            nr_entries: 3,
            ..hdr
        }
    );
    for i in 0..3 {
        assert_eq!(e820_at(&d, i), d.e820[i as usize]);
    }
    assert_eq!(d.peek(BUF + 60, 1), [0xAA]);
}

#[test]
fn memory_map_truncates_to_the_callers_capacity() {
    let mut d = domu();
    d.poke(
        ARG,
        &XenMemoryMap {
            nr_entries: 2,
            pad: 0,
            buffer: BUF,
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, ARG]), Outcome::ret(0));
    assert_eq!(d.peek(ARG, 4), 2u32.to_le_bytes());
    assert_eq!(d.peek(BUF + 40, 1), [0xAA]);

    d.poke(
        ARG,
        &XenMemoryMap {
            nr_entries: 0,
            pad: 0,
            buffer: 0,
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, ARG]), Outcome::ret(0));
    assert_eq!(d.peek(ARG, 4), 0u32.to_le_bytes());

    d.poke(
        ARG,
        &XenMemoryMap {
            nr_entries: u32::MAX,
            pad: 0,
            buffer: BUF,
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, ARG]), Outcome::ret(0));
    assert_eq!(d.peek(ARG, 4), 3u32.to_le_bytes());
}

#[test]
fn memory_map_compat() {
    let mut d = domu();
    d.poke(
        ARG,
        &XenMemoryMapCompat {
            nr_entries: 8,
            buffer: BUF as u32,
        }
        .to_bytes(),
    );
    d.faults.push(ARG + 8..ARG + 16);
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[9, ARG]), Outcome::ret(0));
    assert_eq!(
        d.peek(ARG, 8),
        XenMemoryMapCompat {
            nr_entries: 3,
            buffer: BUF as u32
        }
        .to_bytes()
    );
    assert_eq!(e820_at(&d, 2), d.e820[2]);
}

#[test]
fn memory_map_faults_leave_the_header_alone() {
    let mut d = domu();
    let hdr = XenMemoryMap {
        nr_entries: 3,
        pad: 0,
        buffer: BUF,
    };
    d.poke(ARG, &hdr.to_bytes());
    d.faults.push(BUF + 30..BUF + 31);
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, ARG]), err(Errno::EFAULT));
    assert_eq!(d.peek(ARG, 16), hdr.to_bytes());

    let hdr = XenMemoryMap {
        nr_entries: 3,
        pad: 0,
        buffer: u64::MAX - 30,
    };
    d.poke(ARG, &hdr.to_bytes());
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, ARG]), err(Errno::EFAULT));
    assert_eq!(d.peek(ARG, 16), hdr.to_bytes());

    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, END]), err(Errno::EFAULT));
}

#[test]
fn memory_map_without_a_map_is_enosys() {
    let mut d = domu();
    d.e820.clear();
    d.poke(
        ARG,
        &XenMemoryMap {
            nr_entries: 3,
            pad: 0,
            buffer: BUF,
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[9, ARG]), err(Errno::ENOSYS));
}

#[test]
fn other_memory_ops_are_enosys() {
    let mut d = dom0();
    for op in [0u64, 5, 8, 10, 11, 12, 13, 14, 15, 23, 28, 63] {
        assert_eq!(
            run64(&mut d, nr::MEMORY_OP, &[op, ARG]),
            err(Errno::ENOSYS),
            "op {op}"
        );
    }
}

// ---------------------------------------------------------------- hvm_op

fn param(domid: u16, index: u32, value: u64) -> XenHvmParam {
    XenHvmParam {
        domid,
        pad: 0,
        index,
        value,
    }
}

/// A PV domain has no HVM parameters, upcall vectors or HVM TLB flush:
/// -EINVAL after the argument's own checks, as Xen's `do_hvm_op`.
#[test]
fn hvm_op_is_einval_for_a_pv_domain() {
    let mut d = FakeDomain::new_pv(3, false);
    d.poke(ARG, &param(DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, 1).to_bytes());
    for op in [0u64, 1] {
        assert_eq!(
            dispatch(&mut d, &call(GuestWidth::Bits64, nr::HVM_OP, &[op, ARG])),
            err(Errno::EINVAL)
        );
    }
    assert_eq!(d.params[HVM_PARAM_CALLBACK_IRQ as usize], 0);
    // A bad index is still that first.
    d.poke(ARG, &param(DOMID_SELF, HVM_NR_PARAMS, 1).to_bytes());
    assert_eq!(
        dispatch(&mut d, &call(GuestWidth::Bits64, nr::HVM_OP, &[0, ARG])),
        err(Errno::EINVAL)
    );
    for op in [HVMOP_FLUSH_TLBS, HVMOP_SET_EVTCHN_UPCALL_VECTOR] {
        assert_eq!(
            dispatch(&mut d, &call(GuestWidth::Bits64, nr::HVM_OP, &[u64::from(op), 0])),
            err(Errno::EINVAL)
        );
    }
}

#[test]
fn hvm_set_then_get_param() {
    for width in [GuestWidth::Bits32, GuestWidth::Bits64] {
        let mut d = domu();
        let v = 2 << 56 | 0xf3;
        d.poke(
            ARG,
            &param(DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, v).to_bytes(),
        );
        assert_eq!(
            dispatch(&mut d, &call(width, nr::HVM_OP, &[0, ARG])),
            Outcome::ret(0)
        );
        assert_eq!(d.params[HVM_PARAM_CALLBACK_IRQ as usize], v);

        d.poke(ARG, &param(3, HVM_PARAM_CALLBACK_IRQ, 0).to_bytes());
        assert_eq!(
            dispatch(&mut d, &call(width, nr::HVM_OP, &[1, ARG])),
            Outcome::ret(0)
        );
        assert_eq!(
            d.peek(ARG, 16),
            param(3, HVM_PARAM_CALLBACK_IRQ, v).to_bytes()
        );
    }
}

#[test]
fn hvm_param_policy_for_the_domain_itself() {
    let set = [
        (HVM_PARAM_STORE_EVTCHN, Ok(())),
        (HVM_PARAM_CONSOLE_EVTCHN, Ok(())),
        (HVM_PARAM_X87_FIP_WIDTH, Ok(())),
        (HVM_PARAM_STORE_PFN, Err(Errno::EPERM)),
        (HVM_PARAM_CONSOLE_PFN, Err(Errno::EPERM)),
        (HVM_PARAM_IDENT_PT, Err(Errno::EPERM)),
        (HVM_PARAM_ACPI_S_STATE, Err(Errno::EPERM)),
        (HVM_PARAM_ALTP2M, Err(Errno::EEXIST)),
        (HVM_PARAM_PAE_ENABLED, Err(Errno::EINVAL)),
        (HVM_PARAM_MEMORY_EVENT_MSR, Err(Errno::EINVAL)),
        (HVM_PARAM_MCA_CAP, Err(Errno::EPERM)),
    ];
    let get = [
        (HVM_PARAM_STORE_PFN, Ok(())),
        (HVM_PARAM_CONSOLE_PFN, Ok(())),
        (HVM_PARAM_ALTP2M, Ok(())),
        (HVM_PARAM_IDENT_PT, Err(Errno::EPERM)),
        (HVM_PARAM_TIMER_MODE, Err(Errno::EPERM)),
        (HVM_PARAM_NESTEDHVM, Err(Errno::EINVAL)),
    ];
    // The same for privileged and unprivileged callers acting on themselves.
    for mut d in [domu(), dom0()] {
        for (op, table) in [(0u64, &set[..]), (1, &get[..])] {
            for &(index, want) in table {
                let before = param(DOMID_SELF, index, 77).to_bytes();
                d.poke(ARG, &before);
                let o = run64(&mut d, nr::HVM_OP, &[op, ARG]);
                match want {
                    Ok(()) => assert_eq!(o, Outcome::ret(0), "op {op} index {index}"),
                    Err(e) => {
                        assert_eq!(o, err(e), "op {op} index {index}");
                        assert_eq!(d.peek(ARG, 16), before, "untouched on failure");
                        assert_ne!(d.params[index as usize], 77);
                    }
                }
            }
        }
    }
}

#[test]
fn hvm_param_bad_input() {
    let mut d = domu();
    for (p, e) in [
        (param(DOMID_SELF, HVM_NR_PARAMS, 1), Errno::EINVAL),
        (param(DOMID_SELF, u32::MAX, 1), Errno::EINVAL),
        (param(4, HVM_PARAM_CALLBACK_IRQ, 1), Errno::ESRCH),
        (param(0, HVM_PARAM_CALLBACK_IRQ, 1), Errno::ESRCH),
    ] {
        for op in [0u64, 1] {
            d.poke(ARG, &p.to_bytes());
            assert_eq!(run64(&mut d, nr::HVM_OP, &[op, ARG]), err(e));
            assert_eq!(d.peek(ARG, 16), p.to_bytes());
        }
    }
    for op in [0u64, 1] {
        assert_eq!(run64(&mut d, nr::HVM_OP, &[op, 0]), err(Errno::EFAULT));
        assert_eq!(
            run64(&mut d, nr::HVM_OP, &[op, END - 8]),
            err(Errno::EFAULT)
        );
    }
    // get with a read-only argument: the copy-out faults.
    d.poke(ARG, &param(DOMID_SELF, HVM_PARAM_STORE_PFN, 0).to_bytes());
    d.read_only.push(ARG..ARG + 16);
    assert_eq!(run64(&mut d, nr::HVM_OP, &[1, ARG]), err(Errno::EFAULT));
    // The domain's own verdict is passed on.
    let mut d = domu();
    d.set_param_err = Some(Errno::EINVAL);
    d.poke(
        ARG,
        &param(DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, 1 << 60).to_bytes(),
    );
    assert_eq!(run64(&mut d, nr::HVM_OP, &[0, ARG]), err(Errno::EINVAL));
}

#[test]
fn other_hvm_ops_are_enosys() {
    let mut d = dom0();
    for op in [2u64, 4, 9, 10, 25, 1 << 32 | 23, 1 << 32 | 5, u64::MAX] {
        assert_eq!(
            run64(&mut d, nr::HVM_OP, &[op, ARG]),
            err(Errno::ENOSYS),
            "op {op}"
        );
    }
}

// ---------------------------------------------------------------- properties

fn any_width() -> impl Strategy<Value = GuestWidth> {
    prop_oneof![Just(GuestWidth::Bits32), Just(GuestWidth::Bits64)]
}

/// Hypercall numbers: mostly the implemented ones, sometimes anything.
fn any_nr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => prop::sample::select(vec![
            nr::XEN_VERSION, nr::CONSOLE_IO, nr::SCHED_OP, nr::MEMORY_OP, nr::HVM_OP,
            nr::EVENT_CHANNEL_OP, nr::EVENT_CHANNEL_OP_COMPAT, nr::VCPU_OP, nr::SET_TIMER_OP,
            nr::GRANT_TABLE_OP, nr::MULTICALL,
        ])
        .prop_map(u64::from),
        4 => prop::sample::select(vec![
            nr::SET_TRAP_TABLE, nr::MMU_UPDATE, nr::SET_GDT, nr::STACK_SWITCH,
            nr::SET_CALLBACKS, nr::FPU_TASKSWITCH, nr::SET_DEBUGREG, nr::GET_DEBUGREG,
            nr::UPDATE_DESCRIPTOR, nr::UPDATE_VA_MAPPING, nr::VM_ASSIST,
            nr::UPDATE_VA_MAPPING_OTHERDOMAIN, nr::IRET, nr::SET_SEGMENT_BASE, nr::MMUEXT_OP,
            nr::CALLBACK_OP, nr::PHYSDEV_OP,
        ])
        .prop_map(u64::from),
        1 => 0u64..64,
        1 => any::<u64>(),
    ]
}

/// Argument values: sub-op numbers, addresses in and around the fake
/// address space, boundaries, and anything.
fn any_arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..40,
        3 => BASE - 64..END + 64,
        1 => prop::sample::select(vec![
            0, u64::MAX, u64::from(u32::MAX), 0x7fff_ffff, 0x8000_0000, 1 << 32, END - 1,
        ]),
        1 => any::<u64>(),
    ]
}

/// Bytes of a multicall entry for `width`.
fn mc_size(width: GuestWidth) -> u64 {
    match width {
        GuestWidth::Bits64 => 64,
        GuestWidth::Bits32 => 32,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// `dispatch` never panics, returns a real errno when it fails, only
    /// preempts console writes, reservations, grant batches, the PV MMU
    /// batches, trap tables and multicalls, each continuation makes
    /// progress (a multicall's may stay on an entry whose own call
    /// continues, within the 16 rounds), a preempted call can be resumed,
    /// and only `SCHEDOP_poll` (alone or in a multicall) polls. PV and
    /// HVM/PVH domains alike. (The fake's debug registers and `iret` value
    /// are small, so a successful result is never mistaken for an errno.)
    #[test]
    fn dispatch_never_panics(
        nr in any_nr(),
        args in prop::array::uniform6(any_arg()),
        width in any_width(),
        privileged in any::<bool>(),
        pv in any::<bool>(),
        fill in any::<u8>(),
        struct_at in BASE..END,
        struct_bytes in prop::collection::vec(any::<u8>(), 128),
    ) {
        let mut d = FakeDomain::new(1, privileged);
        d.pv = pv;
        d.mem.fill(fill);
        d.faults.push(BASE + 0x8000..BASE + 0x8100);
        // Sometimes plant a plausible structure where arg 1 points.
        let at = struct_at.min(END - 128);
        d.poke(at, &struct_bytes);
        let mut c = HypercallArgs { nr, args, width };
        for _ in 0..16 {
            let o = dispatch(&mut d, &c);
            if o.ret < 0 {
                let e = Errno::from_ret(o.ret);
                prop_assert!(e.is_some(), "ret {}", o.ret);
                prop_assert!(!matches!(e, Some(Errno::EINTR | Errno::ERESTART)));
            }
            let n = c.normalized();
            match o.action {
                Action::Preempted { args } => {
                    prop_assert!(args.iter().all(|&a| a & !width.mask() == 0));
                    // Progress: less left to do on every entry.
                    match n.nr {
                        x if x == u64::from(nr::CONSOLE_IO) => prop_assert!(args[1] < n.args[1]),
                        x if x == u64::from(nr::MEMORY_OP) => {
                            prop_assert_eq!(args[0] & MEMOP_CMD_MASK, n.args[0] & MEMOP_CMD_MASK);
                            prop_assert!(args[0] >> MEMOP_EXTENT_SHIFT > n.args[0] >> MEMOP_EXTENT_SHIFT);
                        }
                        x if x == u64::from(nr::GRANT_TABLE_OP) => {
                            prop_assert_eq!(args[0], n.args[0]);
                            prop_assert!(args[2] < n.args[2] && args[1] > n.args[1]);
                        }
                        x if x == u64::from(nr::MMU_UPDATE) || x == u64::from(nr::MMUEXT_OP) => {
                            let left = |c: u64| c as u32 & !MMU_UPDATE_PREEMPTED;
                            prop_assert!(args[1] as u32 & MMU_UPDATE_PREEMPTED != 0);
                            prop_assert!(left(args[1]) < left(n.args[1]) && args[0] > n.args[0]);
                            prop_assert_eq!(&args[2..], &n.args[2..]);
                        }
                        x if x == u64::from(nr::SET_TRAP_TABLE) => {
                            prop_assert!(args[0] > n.args[0]);
                            prop_assert_eq!(&args[1..], &n.args[1..]);
                        }
                        x if x == u64::from(nr::MULTICALL) => {
                            prop_assert!(args[1] as u32 <= n.args[1] as u32 && args[0] >= n.args[0]);
                            prop_assert_eq!(
                                u64::from(n.args[1] as u32 - args[1] as u32) * mc_size(width),
                                args[0] - n.args[0]
                            );
                        }
                        x => prop_assert!(false, "hypercall {} preempted", x),
                    }
                    c.args = args;
                }
                Action::Poll { .. } => {
                    prop_assert!(n.nr == u64::from(nr::SCHED_OP) || n.nr == u64::from(nr::MULTICALL));
                    prop_assert_eq!(o.ret, 0);
                    break;
                }
                _ => break,
            }
        }
    }

    /// Every ABI structure decodes and re-encodes any bytes unchanged.
    #[test]
    fn abi_structures_round_trip(bytes in prop::collection::vec(any::<u8>(), 128)) {
        macro_rules! rt {
            ($($t:ty),*) => {$(
                let b: [u8; <$t>::SIZE] = bytes[..<$t>::SIZE].try_into().unwrap();
                prop_assert_eq!(<$t>::from_bytes(&b).to_bytes(), b);
            )*};
        }
        use crate::abi::start_info::*;
        use crate::abi::evtchn::*;
        use crate::abi::vcpu::*;
        use crate::abi::grant_table as g;
        rt!(XenAddToPhysmap, XenAddToPhysmapCompat, XenMemoryMap, XenMemoryMapCompat,
            E820Entry, XenHvmParam, SchedShutdown, SchedPoll, SchedPollCompat,
            XenFeatureInfo, HvmStartInfo, HvmModlistEntry, HvmMemmapTableEntry,
            crate::abi::xen::VcpuTimeInfo);
        rt!(EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindVirq, EvtchnBindPirq,
            EvtchnBindIpi, EvtchnPortArg, EvtchnStatus, EvtchnBindVcpu, EvtchnReset,
            EvtchnInitControl, EvtchnExpandArray, EvtchnSetPriority, EvtchnOp);
        rt!(VcpuRunstateInfo, VcpuRunstateInfoCompat, VcpuRegisterRunstateMemoryArea,
            VcpuRegisterRunstateMemoryAreaCompat, VcpuSetPeriodicTimer,
            VcpuSetSingleshotTimer, VcpuSetSingleshotTimerCompat, VcpuRegisterVcpuInfo,
            VcpuGetPhysid, XenMemoryReservation, XenMemoryReservationCompat, XenMemoryDomain,
            XenHvmEvtchnUpcallVector, VcpuHvmContext, VcpuHvmX86_32, VcpuHvmX86_64);
        rt!(g::GnttabMapGrantRef, g::GnttabUnmapGrantRef, g::GnttabSetupTable,
            g::GnttabSetupTableCompat, g::GnttabCopy, g::GnttabCopyCompat, g::GnttabQuerySize,
            g::GnttabSetVersion, g::GnttabGetVersion);
        rt!(g::GnttabGetStatusFrames, g::GnttabGetStatusFramesCompat, g::GnttabSwapGrantRef,
            g::GnttabCacheFlush, g::GnttabTransfer, g::GnttabTransferCompat, g::GrantEntryHeader,
            g::GrantEntryV2, g::GrantEntryV2FullPage, g::GrantEntryV2SubPage,
            g::GrantEntryV2Transitive);
        use crate::abi::{callback, mmu, physdev, pv, xen};
        rt!(callback::CallbackRegister, callback::CallbackUnregister, physdev::PhysdevSetIopl,
            mmu::MmuUpdate, mmu::MmuextOp, mmu::MmuextOpCompat, pv::TrapInfo, pv::IretContext,
            xen::MulticallEntry, xen::MulticallEntryCompat);
    }
}

#[test]
fn shutdown_reason_names() {
    assert_eq!(ShutdownReason::Poweroff.to_string(), "poweroff");
    assert_eq!(ShutdownReason::SoftReset.to_string(), "soft_reset");
    assert_eq!(ShutdownReason::Other(9).to_string(), "unknown reason 9");
}
