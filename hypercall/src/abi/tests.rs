//! Host tests of the ABI module: values against the headers, and byte
//! layouts as a loader or guest sees them. (Sizes and offsets are already
//! compile-time assertions.)

use super::errno::Errno;
use super::*;

#[test]
fn errno_values_match_xen_errno_h() {
    // (name, value) in header order, transcribed from errno.h.
    let table: [(&str, i32); 49] = [
        ("EPERM", 1),
        ("ENOENT", 2),
        ("ESRCH", 3),
        ("EINTR", 4),
        ("EIO", 5),
        ("ENXIO", 6),
        ("E2BIG", 7),
        ("ENOEXEC", 8),
        ("EBADF", 9),
        ("ECHILD", 10),
        ("EAGAIN", 11),
        ("ENOMEM", 12),
        ("EACCES", 13),
        ("EFAULT", 14),
        ("EBUSY", 16),
        ("EEXIST", 17),
        ("EXDEV", 18),
        ("ENODEV", 19),
        ("ENOTDIR", 20),
        ("EISDIR", 21),
        ("EINVAL", 22),
        ("ENFILE", 23),
        ("EMFILE", 24),
        ("ENOSPC", 28),
        ("EROFS", 30),
        ("EMLINK", 31),
        ("EDOM", 33),
        ("ERANGE", 34),
        ("EDEADLK", 35),
        ("ENAMETOOLONG", 36),
        ("ENOLCK", 37),
        ("ENOSYS", 38),
        ("ENOTEMPTY", 39),
        ("ENODATA", 61),
        ("ETIME", 62),
        ("EBADMSG", 74),
        ("EOVERFLOW", 75),
        ("EILSEQ", 84),
        ("ERESTART", 85),
        ("ENOTSOCK", 88),
        ("EMSGSIZE", 90),
        ("EOPNOTSUPP", 95),
        ("EADDRINUSE", 98),
        ("EADDRNOTAVAIL", 99),
        ("ENOBUFS", 105),
        ("EISCONN", 106),
        ("ENOTCONN", 107),
        ("ETIMEDOUT", 110),
        ("ECONNREFUSED", 111),
    ];
    let all: Vec<Errno> = Errno::all().collect();
    assert_eq!(all.len(), table.len());
    for (e, (name, value)) in all.iter().zip(table) {
        assert_eq!(e.raw(), value);
        assert_eq!(e.name(), name);
        assert_eq!(format!("{e}"), name);
        assert_eq!(e.neg(), -i64::from(value));
        assert_eq!(Errno::from_raw(value), Some(*e));
        assert_eq!(Errno::from_ret(e.neg()), Some(*e));
    }
    assert_eq!(Errno::EWOULDBLOCK, Errno::EAGAIN);
    assert_eq!(Errno::EDEADLOCK, Errno::EDEADLK);
    assert_eq!(Errno::from_raw(15), None);
    assert_eq!(Errno::from_ret(0), None);
    assert_eq!(Errno::from_ret(-4096), None);
}

#[test]
fn hypercall_numbers_spot_check() {
    use hypercall::*;
    assert_eq!(
        [
            PLATFORM_OP,
            MEMORY_OP,
            MULTICALL,
            UPDATE_VA_MAPPING,
            SET_TIMER_OP,
            XEN_VERSION
        ],
        [7, 12, 13, 14, 15, 17]
    );
    assert_eq!(
        [CONSOLE_IO, GRANT_TABLE_OP, VCPU_OP, XSM_OP, SCHED_OP],
        [18, 20, 24, 27, 29]
    );
    assert_eq!(
        [EVENT_CHANNEL_OP, PHYSDEV_OP, HVM_OP, SYSCTL, DOMCTL],
        [32, 33, 34, 35, 36]
    );
    assert_eq!(
        (HYPERCALL_PAGE_ENTRY_SIZE, HYPERCALL_PAGE_ENTRIES),
        (32, 128)
    );
    assert_eq!(name(18), Some("console_io"));
    assert_eq!(name(11), None);
    assert_eq!(name(u64::MAX), None);
}

#[test]
fn hvm_start_info_bytes() {
    use start_info::*;
    let si = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: SIF_PRIVILEGED | SIF_INITDOMAIN,
        nr_modules: 2,
        modlist_paddr: 0x1122_3344_5566_7788,
        cmdline_paddr: 0x2000,
        rsdp_paddr: 0xe_0000,
        memmap_paddr: 0x3000,
        memmap_entries: 5,
        reserved: 0,
    };
    let b = si.to_bytes();
    assert_eq!(
        b[0..4],
        [0x78, 0xc5, 0x6e, 0x33],
        "\"xEn3\" with the top bit of E"
    );
    assert_eq!(b[8..12], 3u32.to_le_bytes());
    assert_eq!(b[16..24], 0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(b[40..48], 0x3000u64.to_le_bytes());
    assert_eq!(b[48..52], 5u32.to_le_bytes());
    assert_eq!(HvmStartInfo::from_bytes(&b), si);
    assert_eq!(
        HVM_START_INFO_V0_SIZE,
        core::mem::offset_of!(HvmStartInfo, memmap_paddr)
    );

    let m = HvmMemmapTableEntry {
        addr: 1 << 20,
        size: 4096,
        type_: XEN_HVM_MEMMAP_TYPE_RAM,
        reserved: 0,
    };
    let mb = m.to_bytes();
    assert_eq!(mb[16..24], [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(HvmModlistEntry::default().to_bytes(), [0; 32]);
}

#[test]
fn e820_entry_is_packed() {
    use memory::*;
    let e = E820Entry {
        addr: 0x100000,
        size: 0x200000,
        type_: E820_RAM,
    };
    let b = e.to_bytes();
    assert_eq!(b.len(), 20);
    assert_eq!(b[16..20], [1, 0, 0, 0]);
    assert_eq!(core::mem::align_of::<E820Entry>(), 1);
}

#[test]
fn shared_info_offsets_through_the_encoding() {
    use xen::*;
    let mut si = SharedInfo::default();
    si.vcpu_info[1].evtchn_upcall_mask = 1;
    si.vcpu_info[1].time.version = 0x0102_0304;
    si.evtchn_pending[1] = 1;
    si.evtchn_mask[63] = 1 << 63;
    si.wc_sec_hi = 0xabcd;
    si.arch.p2m_generation = 0x77;
    let b = si.to_bytes();
    assert_eq!(b[64 + 1], 1, "vcpu_info[1].evtchn_upcall_mask");
    assert_eq!(
        b[64 + 32..64 + 36],
        [4, 3, 2, 1],
        "vcpu_info[1].time.version"
    );
    assert_eq!(b[2048 + 8], 1, "evtchn_pending[1]");
    assert_eq!(b[2560 + 63 * 8 + 7], 0x80, "evtchn_mask[63] bit 63");
    assert_eq!(b[3084..3088], [0xcd, 0xab, 0, 0], "wc_sec_hi");
    assert_eq!(b[3088 + 40], 0x77, "arch.p2m_generation");
    assert_eq!(SharedInfo::from_bytes(&b), si);
}

#[test]
fn cpuid_signature() {
    use cpuid::*;
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&XEN_CPUID_SIGNATURE_EBX.to_le_bytes());
    sig[4..8].copy_from_slice(&XEN_CPUID_SIGNATURE_ECX.to_le_bytes());
    sig[8..12].copy_from_slice(&XEN_CPUID_SIGNATURE_EDX.to_le_bytes());
    assert_eq!(&sig, b"XenVMMXenVMM");
    assert_eq!(xen_cpuid_leaf(LEAF_HVM), 0x4000_0004);
}

#[test]
fn evtchn_structures() {
    use evtchn::*;
    assert_eq!(
        EvtchnBindInterdomain {
            remote_dom: 0x7ff0,
            pad: 0,
            remote_port: 5,
            local_port: 6
        }
        .to_bytes(),
        [0xf0, 0x7f, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0]
    );
    let mut st = EvtchnStatus::default();
    st.set_dom(0x0102);
    st.set_interdomain_port(0x0304_0506);
    assert_eq!(st.to_bytes()[16..24], [2, 1, 0, 0, 6, 5, 4, 3]);
    assert_eq!(
        (st.dom_member(), st.interdomain_port()),
        (0x0102, 0x0304_0506)
    );
    st.set_irq(0x11);
    assert_eq!(st.u, [0x11, 0, 0, 0, 6, 5, 4, 3]);
    assert_eq!(st.irq(), 0x11);
    // The legacy evtchn_op: cmd, then the 24-byte union.
    assert_eq!(EvtchnOp::SIZE, 4 + EVTCHN_OP_UNION_SIZE);
    assert_eq!(EVTCHN_OP_UNION_OFFSET, 4);
    assert_eq!(EvtchnInitControl::SIZE, 24);
}

#[test]
fn vcpu_runstate_compat_is_packed() {
    use vcpu::*;
    let n = VcpuRunstateInfo {
        state: RUNSTATE_BLOCKED,
        pad: 0,
        state_entry_time: 0x0807_0605_0403_0201 | XEN_RUNSTATE_UPDATE,
        time: [10, 20, 30, 40],
    };
    let b = n.to_bytes();
    assert_eq!(b[8..16], (0x0807_0605_0403_0201u64 | 1 << 63).to_le_bytes());
    assert_eq!(b[40..48], 40u64.to_le_bytes());
    let c = VcpuRunstateInfoCompat::from(n).to_bytes();
    assert_eq!(c.len(), 44);
    assert_eq!(c[0..4], 2i32.to_le_bytes());
    assert_eq!(c[4..12], b[8..16], "state_entry_time right after state");
    assert_eq!(c[12..44], b[16..48]);
    assert_eq!(core::mem::align_of::<VcpuRunstateInfoCompat>(), 4);
    let s = VcpuSetSingleshotTimerCompat {
        timeout_abs_ns: 1 << 40,
        flags: VCPU_SSHOTTMR_FUTURE,
    };
    assert_eq!(s.to_bytes()[8..12], [1, 0, 0, 0]);
    assert_eq!(
        (RUNSTATE_RUNNING, RUNSTATE_RUNNABLE, RUNSTATE_OFFLINE),
        (0, 1, 3)
    );
}

#[test]
fn memory_reservation_both_widths() {
    use memory::*;
    let c = XenMemoryReservationCompat {
        extent_start: 0x8000_1000,
        nr_extents: 3,
        extent_order: 9,
        mem_flags: XENMEMF_POPULATE_ON_DEMAND | 32,
        domid: 0x7ff0,
        pad: 0,
    };
    let b = c.to_bytes();
    assert_eq!(b[16..18], [0xf0, 0x7f]);
    let n = XenMemoryReservation::from(c);
    assert_eq!(
        (n.extent_start, n.nr_extents, n.extent_order, n.domid),
        (0x8000_1000, 3, 9, 0x7ff0)
    );
    assert_eq!(n.to_bytes()[24..26], [0xf0, 0x7f]);
    assert_eq!(xenmemf_get_address_bits(n.mem_flags), 32);
    assert_eq!(xenmemf_get_node(0), XENMEMF_NO_NODE);
    assert_eq!(xenmemf_get_node(xenmemf_node(5) | 12), 5);
    assert_eq!(xenmemf_node(0), 0x100);
}

#[test]
fn callback_via_decoding() {
    use hvm::*;
    let cases = [
        (0u64, HvmCallbackVia::None),
        (0x28, HvmCallbackVia::Gsi(0x28)),
        // A GSI is the low 8 bits; 0 there means none.
        (0x100, HvmCallbackVia::None),
        (
            1 << 56 | 0x0002_0003_1800 | 2,
            HvmCallbackVia::PciIntx {
                segment: 2,
                bus: 3,
                devfn: 0x18,
                intx: 2,
            },
        ),
        (2 << 56 | 0xf3, HvmCallbackVia::Vector(0xf3)),
        (2 << 56 | 0x1f3, HvmCallbackVia::Vector(0xf3)),
        (3 << 56 | 0xf3, HvmCallbackVia::None),
        (0xff << 56, HvmCallbackVia::None),
    ];
    for (raw, via) in cases {
        assert_eq!(HvmCallbackVia::decode(raw), via, "{raw:#x}");
        assert_eq!(HvmCallbackVia::decode(via.encode()), via);
    }
}

#[test]
fn vcpu_hvm_context_union() {
    use hvm::*;
    let r = VcpuHvmX86_32 {
        eip: 0x1000,
        efer: 1 << 11,
        cs_ar: 0xc9b,
        tr_ar: 0x8b,
        ..Default::default()
    };
    let b = r.to_bytes();
    assert_eq!(b[32..36], [0, 0x10, 0, 0]);
    assert_eq!(b[56..64], (1u64 << 11).to_le_bytes());
    assert_eq!(b[104..106], [0x9b, 0x0c]);
    assert_eq!(b[112..114], [0x8b, 0]);
    let mut ctx = VcpuHvmContext {
        mode: VCPU_HVM_MODE_32B,
        pad: 0,
        cpu_regs: [0; 120],
    };
    ctx.cpu_regs.copy_from_slice(&b);
    assert_eq!(ctx.x86_32(), r);
    let bytes = ctx.to_bytes();
    assert_eq!(bytes[8 + 32..8 + 36], [0, 0x10, 0, 0]);
    let r64 = VcpuHvmX86_64 {
        rip: 0xffff_ffff_8100_0000,
        efer: 0xd01,
        ..Default::default()
    };
    ctx.cpu_regs[..112].copy_from_slice(&r64.to_bytes());
    assert_eq!(ctx.x86_64(), r64);
    assert_eq!((VCPU_HVM_MODE_32B, VCPU_HVM_MODE_64B), (0, 1));
}

#[test]
fn multicall_entry_both_widths() {
    use xen::*;
    let e = MulticallEntry {
        op: 26,
        result: (-22i64) as u64,
        args: [1, 2, 3, 4, 5, 0x0102_0304_0506_0708],
    };
    let b = e.to_bytes();
    assert_eq!(b[0..8], 26u64.to_le_bytes());
    assert_eq!(b[8..16], [0xea, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(b[16..24], 1u64.to_le_bytes());
    assert_eq!(b[56..64], 0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(MulticallEntry::from_bytes(&b), e);
    let c = MulticallEntryCompat {
        op: 29,
        result: 0xffff_fff2,
        args: [7, 0, 0, 0, 0, 9],
    };
    let cb = c.to_bytes();
    assert_eq!(cb[0..8], [29, 0, 0, 0, 0xf2, 0xff, 0xff, 0xff]);
    assert_eq!(cb[8..12], [7, 0, 0, 0]);
    assert_eq!(cb[28..32], [9, 0, 0, 0]);
}

#[test]
fn vm_assist_numbers() {
    use xen::*;
    assert_eq!((VMASST_CMD_ENABLE, VMASST_CMD_DISABLE), (0, 1));
    assert_eq!(
        [
            VMASST_TYPE_4GB_SEGMENTS,
            VMASST_TYPE_4GB_SEGMENTS_NOTIFY,
            VMASST_TYPE_WRITABLE_PAGETABLES,
            VMASST_TYPE_PAE_EXTENDED_CR3,
            VMASST_TYPE_ARCHITECTURAL_IOPL,
            VMASST_TYPE_RUNSTATE_UPDATE_FLAG,
            VMASST_TYPE_M2P_STRICT,
        ],
        [0, 1, 2, 3, 4, 5, 32]
    );
    assert_eq!(PV64_VM_ASSIST_MASK, 0x1_0000_003f);
}
