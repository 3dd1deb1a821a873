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
