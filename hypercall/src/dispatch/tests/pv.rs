//! The PV-only hypercalls: the MMU batches and `update_va_mapping`, the
//! trap table and callbacks, the GDT and descriptors, and the small vCPU
//! calls.

use super::*;
use crate::abi::callback::*;
use crate::abi::mmu::*;
use crate::abi::physdev::*;
use crate::abi::pv::*;
use crate::abi::xen::*;

/// Where tests put `*pdone`.
const PDONE: u64 = BASE + 0x80;
/// A canonical kernel address.
const KADDR: u64 = 0xffff_ffff_8100_0000;
/// A non-canonical one.
const NONCANON: u64 = 0x8000_0000_0000_0000;

fn pv() -> FakeDomain {
    FakeDomain::new_pv(3, false)
}

/// The PV-only numbers, with `physdev_op` (PV-only in keel).
const PV_ONLY: [u32; 17] = [
    nr::SET_TRAP_TABLE,
    nr::MMU_UPDATE,
    nr::SET_GDT,
    nr::STACK_SWITCH,
    nr::SET_CALLBACKS,
    nr::FPU_TASKSWITCH,
    nr::SET_DEBUGREG,
    nr::GET_DEBUGREG,
    nr::UPDATE_DESCRIPTOR,
    nr::UPDATE_VA_MAPPING,
    nr::VM_ASSIST,
    nr::UPDATE_VA_MAPPING_OTHERDOMAIN,
    nr::IRET,
    nr::SET_SEGMENT_BASE,
    nr::MMUEXT_OP,
    nr::CALLBACK_OP,
    nr::PHYSDEV_OP,
];

fn pdone(d: &FakeDomain) -> u32 {
    u32::from_le_bytes(d.peek(PDONE, 4).try_into().unwrap())
}

/// Requests whose `ptr` is `0x10_0000 + 8 * k` (command 0), `val` `k`.
fn put_mmu_updates(d: &mut FakeDomain, at: u64, n: u64) {
    for k in 0..n {
        let req = MmuUpdate {
            ptr: 0x10_0000 + 8 * k,
            val: k,
        };
        d.poke(at + 16 * k, &req.to_bytes());
    }
}

fn mmu_update(d: &mut FakeDomain, reqs: u64, count: u32, pdone: u64, fd: u64) -> Outcome {
    run64(d, nr::MMU_UPDATE, &[reqs, count.into(), pdone, fd])
}

fn preempted(args: [u64; 6]) -> Outcome {
    Outcome {
        ret: 0,
        action: Action::Preempted { args },
    }
}

// ---------------------------------------------------------------- gating

#[test]
fn pv_hypercalls_are_enosys_unless_a_64bit_pv_caller() {
    // An HVM/PVH domain, privileged or not, in either width: as before.
    for mut d in [dom0(), domu()] {
        d.poke(ARG, &PhysdevSetIopl { iopl: 1 }.to_bytes());
        for width in WIDTHS {
            for n in PV_ONLY {
                assert_eq!(
                    run(&mut d, width, n, &[ARG, 1, 0, 0, 0, 0]),
                    err(Errno::ENOSYS),
                    "nr {n} {width:?}"
                );
            }
        }
        assert!(d.calls.is_empty(), "{:?}", d.calls);
    }
    // A PV domain in a 32-bit mode: keel has no compat PV layouts.
    let mut d = pv();
    for n in PV_ONLY {
        assert_eq!(
            run32(&mut d, n, &[ARG, 1, 0, 0, 0, 0]),
            err(Errno::ENOSYS),
            "nr {n}"
        );
    }
    assert!(d.calls.is_empty(), "{:?}", d.calls);
    // The hypercalls every guest has still work for a PV one.
    assert_eq!(
        run64(&mut d, nr::XEN_VERSION, &[0, 0]),
        Outcome::ret(4 << 16 | 19)
    );
}

// ---------------------------------------------------------------- mmu_update

#[test]
fn mmu_update_runs_the_batch_and_counts_it() {
    let mut d = pv();
    put_mmu_updates(&mut d, BUF, 5);
    let fd = u64::from(DOMID_SELF);
    assert_eq!(mmu_update(&mut d, BUF, 5, PDONE, fd), ok());
    assert_eq!(pdone(&d), 5);
    assert_eq!(d.mmu_flushes, 1);
    assert_eq!(
        d.calls,
        (0..5)
            .map(|k| format!("mmu_update({:#x}, {k:#x}, 0x7ff0)", 0x10_0000 + 8 * k))
            .collect::<Vec<_>>()
    );

    // NULL pdone: nothing written.
    d.calls.clear();
    d.poke(PDONE, &[0xAA; 4]);
    assert_eq!(mmu_update(&mut d, BUF, 2, 0, fd), ok());
    assert_eq!(d.calls.len(), 2);
    assert_eq!(d.peek(PDONE, 4), [0xAA; 4]);

    // Nothing to do: pdone says so.
    assert_eq!(mmu_update(&mut d, 0, 0, PDONE, fd), ok());
    assert_eq!(pdone(&d), 0);

    // foreigndom's low 16 bits are passed on unresolved; bits 31:16 name
    // the page tables' owner plus one (here the caller, 3); bits above 31
    // are not part of the argument.
    d.calls.clear();
    assert_eq!(mmu_update(&mut d, BUF, 1, 0, 0xdead_0000_0004_0003), ok());
    assert_eq!(mmu_update(&mut d, BUF, 1, 0, u64::from(DOMID_IO)), ok());
    assert_eq!(
        d.calls,
        [
            "mmu_update(0x100000, 0x0, 0x3)",
            "mmu_update(0x100000, 0x0, 0x7ff1)"
        ]
    );
}

#[test]
fn mmu_update_page_table_owner() {
    for privileged in [false, true] {
        let mut d = FakeDomain::new_pv(3, privileged);
        put_mmu_updates(&mut d, BUF, 2);
        for (pt_dom, want) in [
            // DOMID_SELF is not resolved there: no such domain.
            (u32::from(DOMID_SELF) + 1, Errno::ESRCH),
            (100, Errno::ESRCH),
            (0xffff, Errno::ESRCH),
            // Domain 1 exists: another domain's tables.
            (
                2,
                if privileged {
                    Errno::EINVAL
                } else {
                    Errno::EPERM
                },
            ),
        ] {
            d.poke(PDONE, &7u32.to_le_bytes());
            let fd = u64::from(pt_dom) << 16 | u64::from(DOMID_SELF);
            // Checked before the first request, after the array; pdone is
            // written (a fresh call: 0; a continuation: what it held).
            assert_eq!(mmu_update(&mut d, BUF, 2, PDONE, fd), err(want));
            assert_eq!(pdone(&d), 0);
            d.poke(PDONE, &7u32.to_le_bytes());
            assert_eq!(
                mmu_update(&mut d, BUF, 2 | MMU_UPDATE_PREEMPTED, PDONE, fd),
                err(want)
            );
            assert_eq!(pdone(&d), 7);
            assert_eq!(
                mmu_update(&mut d, u64::MAX, 2, PDONE, fd),
                err(Errno::EFAULT)
            );
        }
        assert!(d.calls.is_empty());
        assert_eq!(d.mmu_flushes, 0);
    }
}

#[test]
fn mmu_update_stops_at_the_first_error() {
    let mut d = pv();
    put_mmu_updates(&mut d, BUF, 5);
    d.pv_fail = Some((0x10_0000 + 8 * 2, Errno::EINVAL));
    assert_eq!(
        mmu_update(&mut d, BUF, 5, PDONE, DOMID_SELF.into()),
        err(Errno::EINVAL)
    );
    assert_eq!(d.calls.len(), 3, "the failing request was tried");
    assert_eq!(pdone(&d), 2, "and is not counted");
    assert_eq!(d.mmu_flushes, 1, "what was done is flushed");
}

#[test]
fn mmu_update_continues_with_pdone_accumulating() {
    let mut d = pv();
    let n = 150u32;
    put_mmu_updates(&mut d, BUF, n.into());
    let fd = u64::from(DOMID_SELF);
    let budget = PV_MMU_BUDGET;
    let mut o = mmu_update(&mut d, BUF, n, PDONE, fd);
    let mut passes = 1;
    let mut expect_done = 0;
    while let Action::Preempted { args } = o.action {
        expect_done += budget;
        assert_eq!(
            args,
            [
                BUF + 16 * u64::from(expect_done),
                u64::from((n - expect_done) | MMU_UPDATE_PREEMPTED),
                PDONE,
                fd,
                0,
                0
            ]
        );
        assert_eq!(pdone(&d), expect_done);
        assert_eq!(d.mmu_flushes, passes, "each pass flushes");
        o = run64(&mut d, nr::MMU_UPDATE, &args);
        passes += 1;
    }
    assert_eq!(o, ok());
    assert_eq!(passes, 3);
    assert_eq!(pdone(&d), n);
    assert_eq!(d.calls.len(), n as usize);
    assert_eq!(
        d.calls.last().unwrap(),
        &format!("mmu_update({:#x}, {:#x}, 0x7ff0)", 0x10_0000 + 8 * 149, 149)
    );

    // The count so far lives in guest memory, as in Xen: a continuation
    // adds to whatever *pdone holds.
    d.poke(PDONE, &1000u32.to_le_bytes());
    assert_eq!(
        mmu_update(&mut d, BUF, 3 | MMU_UPDATE_PREEMPTED, PDONE, fd),
        ok()
    );
    assert_eq!(pdone(&d), 1003);
    // An unreadable pdone counts from 0 (Xen ignores the fault).
    d.faults.push(PDONE..PDONE + 4);
    assert_eq!(
        mmu_update(&mut d, BUF, 3 | MMU_UPDATE_PREEMPTED, PDONE, fd),
        ok()
    );
    d.faults.clear();
    assert_eq!(pdone(&d), 1003, "and writing it failed silently too");
    // A fresh call does not read it.
    assert_eq!(mmu_update(&mut d, BUF, 3, PDONE, fd), ok());
    assert_eq!(pdone(&d), 3);
}

#[test]
fn mmu_update_erestart_continues_from_that_request() {
    let mut d = pv();
    put_mmu_updates(&mut d, BUF, 5);
    d.pv_fail = Some((0x10_0000 + 8 * 3, Errno::ERESTART));
    let o = mmu_update(&mut d, BUF, 5, PDONE, DOMID_SELF.into());
    let args = [
        BUF + 16 * 3,
        u64::from(2 | MMU_UPDATE_PREEMPTED),
        PDONE,
        DOMID_SELF.into(),
        0,
        0,
    ];
    assert_eq!(o, preempted(args));
    assert_eq!(pdone(&d), 3);
    d.pv_fail = None;
    assert_eq!(run64(&mut d, nr::MMU_UPDATE, &args), ok());
    assert_eq!(pdone(&d), 5);
    assert_eq!(d.calls.len(), 6, "request 3 was tried twice");
}

#[test]
fn mmu_update_faults() {
    let mut d = pv();
    put_mmu_updates(&mut d, BUF, 4);
    d.poke(PDONE, &[0xAA; 4]);
    // An array leaving the address space: nothing done, pdone untouched.
    for (reqs, count) in [(u64::MAX - 15, 2), (u64::MAX - 0x1000, 0x1000)] {
        assert_eq!(
            mmu_update(&mut d, reqs, count, PDONE, 0),
            err(Errno::EFAULT)
        );
    }
    assert_eq!(d.peek(PDONE, 4), [0xAA; 4]);
    assert!(d.calls.is_empty());
    assert_eq!(d.mmu_flushes, 0);
    // An unreadable request ends the batch; those before it count.
    put_mmu_updates(&mut d, END - 32, 2);
    assert_eq!(
        mmu_update(&mut d, END - 32, 4, PDONE, 0),
        err(Errno::EFAULT)
    );
    assert_eq!(pdone(&d), 2);
    assert_eq!(d.calls.len(), 2);
    // An unwritable pdone is ignored.
    d.read_only.push(PDONE..PDONE + 4);
    assert_eq!(mmu_update(&mut d, BUF, 1, PDONE, 0), ok());
    assert_eq!(pdone(&d), 2);
}

// ---------------------------------------------------------------- mmuext_op

fn put_mmuext_ops(d: &mut FakeDomain, at: u64, ops: &[MmuextOp]) {
    for (k, op) in ops.iter().enumerate() {
        d.poke(at + 24 * k as u64, &op.to_bytes());
    }
}

fn ext(cmd: u32, arg1: u64, arg2: u64) -> MmuextOp {
    MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2,
    }
}

#[test]
fn mmuext_op_batch() {
    let mut d = pv();
    put_mmuext_ops(
        &mut d,
        BUF,
        &[
            ext(MMUEXT_PIN_L4_TABLE, 0x1234, 0),
            ext(MMUEXT_NEW_BASEPTR, 0x1234, 0),
            ext(MMUEXT_SET_LDT, 0xffff_8000_0000_0000, 0xaaaa_aaaa_0000_0010),
        ],
    );
    // foreigndom is a domid_t: its low 16 bits.
    let o = run64(&mut d, nr::MMUEXT_OP, &[BUF, 3, PDONE, 0x1_7ff0]);
    assert_eq!(o, ok());
    assert_eq!(pdone(&d), 3);
    assert_eq!(
        d.calls,
        [
            "mmuext_op(3, 0x1234, 0x0, 0x7ff0)",
            "mmuext_op(5, 0x1234, 0x0, 0x7ff0)",
            "mmuext_op(13, 0xffff800000000000, 0xaaaaaaaa00000010, 0x7ff0)",
        ]
    );
    assert_eq!(d.mmu_flushes, 0, "mmuext_op flushes as it goes");

    // The first error stops it.
    d.calls.clear();
    d.pv_fail = Some((0x1234, Errno::EINVAL));
    let o = run64(&mut d, nr::MMUEXT_OP, &[BUF, 3, PDONE, DOMID_SELF.into()]);
    assert_eq!(o, err(Errno::EINVAL));
    assert_eq!(pdone(&d), 0);
    assert_eq!(d.calls.len(), 1);

    // Faults.
    assert_eq!(
        run64(&mut d, nr::MMUEXT_OP, &[u64::MAX - 23, 1, PDONE, 0]),
        err(Errno::EFAULT)
    );
    d.calls.clear();
    put_mmuext_ops(&mut d, END - 24, &[ext(MMUEXT_TLB_FLUSH_LOCAL, 0, 0)]);
    assert_eq!(
        run64(&mut d, nr::MMUEXT_OP, &[END - 24, 2, PDONE, 0]),
        err(Errno::EFAULT)
    );
    assert_eq!(pdone(&d), 1, "the readable op was done");
    assert_eq!(d.calls, ["mmuext_op(6, 0x0, 0x0, 0x0)"]);
}

#[test]
fn mmuext_op_continues() {
    let mut d = pv();
    let ops: Vec<MmuextOp> = (0..70)
        .map(|k| ext(MMUEXT_INVLPG_LOCAL, 0x4000 * k, 0))
        .collect();
    put_mmuext_ops(&mut d, BUF, &ops);
    let o = run64(&mut d, nr::MMUEXT_OP, &[BUF, 70, PDONE, 0x7ff0]);
    let args = [
        BUF + 24 * u64::from(PV_MMU_BUDGET),
        u64::from((70 - PV_MMU_BUDGET) | MMU_UPDATE_PREEMPTED),
        PDONE,
        0x7ff0,
        0,
        0,
    ];
    assert_eq!(o, preempted(args));
    assert_eq!(pdone(&d), PV_MMU_BUDGET);
    assert_eq!(run64(&mut d, nr::MMUEXT_OP, &args), ok());
    assert_eq!(pdone(&d), 70);
    assert_eq!(d.calls.len(), 70);
}

// ---------------------------------------------------------------- update_va_mapping

#[test]
fn update_va_mapping() {
    let mut d = pv();
    let va = 0xffff_8800_0000_1000;
    let o = run64(
        &mut d,
        nr::UPDATE_VA_MAPPING,
        &[va, 0x8000_0000_1234_5067, UVMF_INVLPG | UVMF_ALL],
    );
    assert_eq!(o, ok());
    d.pv_fail = Some((va, Errno::EINVAL));
    assert_eq!(
        run64(&mut d, nr::UPDATE_VA_MAPPING, &[va, 0, 0]),
        err(Errno::EINVAL)
    );
    // -ERESTART re-issues the same call.
    d.pv_fail = Some((va, Errno::ERESTART));
    let args = [va, 7, UVMF_TLB_FLUSH, 0xdead, 0xbeef, 0];
    assert_eq!(run64(&mut d, nr::UPDATE_VA_MAPPING, &args), preempted(args));
    d.pv_fail = None;
    assert_eq!(
        run64(
            &mut d,
            nr::UPDATE_VA_MAPPING_OTHERDOMAIN,
            &[va, 7, UVMF_TLB_FLUSH, 0xffff_0001]
        ),
        ok()
    );
    assert_eq!(
        d.calls,
        [
            "update_va_mapping(0xffff880000001000, 0x8000000012345067, 0x6)",
            "update_va_mapping(0xffff880000001000, 0x0, 0x0)",
            "update_va_mapping(0xffff880000001000, 0x7, 0x1)",
            "update_va_mapping_otherdomain(0xffff880000001000, 0x7, 0x1, 0x1)",
        ]
    );
}

// ---------------------------------------------------------------- set_trap_table

fn trap(vector: u8, address: u64) -> TrapInfo {
    TrapInfo {
        vector,
        flags: TI_IF | 3,
        cs: FLAT_KERNEL_CS,
        pad: 0,
        address,
    }
}

fn put_traps(d: &mut FakeDomain, at: u64, traps: &[TrapInfo]) {
    for (k, t) in traps.iter().enumerate() {
        d.poke(at + 16 * k as u64, &t.to_bytes());
    }
}

#[test]
fn set_trap_table_null_clears() {
    let mut d = pv();
    assert_eq!(run64(&mut d, nr::SET_TRAP_TABLE, &[0]), ok());
    assert_eq!(d.calls, ["clear_trap_table"]);
}

#[test]
fn set_trap_table_reads_until_address_0() {
    let mut d = pv();
    put_traps(
        &mut d,
        BUF,
        &[
            trap(0, KADDR),
            trap(14, KADDR + 0x10),
            trap(0x80, KADDR + 0x20),
            trap(3, 0),
            trap(4, KADDR + 0x30),
        ],
    );
    assert_eq!(run64(&mut d, nr::SET_TRAP_TABLE, &[BUF]), ok());
    assert_eq!(
        d.calls,
        [
            "set_trap(0, 7, 0xe033, 0xffffffff81000000)",
            "set_trap(14, 7, 0xe033, 0xffffffff81000010)",
            "set_trap(128, 7, 0xe033, 0xffffffff81000020)",
        ]
    );
    // An empty table.
    d.calls.clear();
    assert_eq!(run64(&mut d, nr::SET_TRAP_TABLE, &[BUF + 48]), ok());
    assert!(d.calls.is_empty());
}

#[test]
fn set_trap_table_refusals() {
    let mut d = pv();
    // A non-canonical handler: -EINVAL, the ones before it stored.
    put_traps(
        &mut d,
        BUF,
        &[
            trap(1, KADDR),
            trap(2, NONCANON),
            trap(3, KADDR),
            trap(0, 0),
        ],
    );
    assert_eq!(
        run64(&mut d, nr::SET_TRAP_TABLE, &[BUF]),
        err(Errno::EINVAL)
    );
    assert_eq!(d.calls.len(), 1);
    // Faults: at once, or after the readable records.
    d.calls.clear();
    assert_eq!(
        run64(&mut d, nr::SET_TRAP_TABLE, &[0x10]),
        err(Errno::EFAULT)
    );
    assert_eq!(
        run64(&mut d, nr::SET_TRAP_TABLE, &[u64::MAX - 7]),
        err(Errno::EFAULT)
    );
    put_traps(&mut d, END - 32, &[trap(1, KADDR), trap(2, KADDR)]);
    assert_eq!(
        run64(&mut d, nr::SET_TRAP_TABLE, &[END - 32]),
        err(Errno::EFAULT)
    );
    assert_eq!(d.calls.len(), 2);
    // The domain's refusal ends it.
    d.calls.clear();
    d.pv_fail = Some((KADDR, Errno::EPERM));
    assert_eq!(run64(&mut d, nr::SET_TRAP_TABLE, &[BUF]), err(Errno::EPERM));
    assert_eq!(d.calls.len(), 1);
}

#[test]
fn set_trap_table_continues() {
    let mut d = pv();
    let mut traps: Vec<TrapInfo> = (0..100).map(|v| trap(v, KADDR + u64::from(v))).collect();
    traps.push(trap(0, 0));
    put_traps(&mut d, BUF, &traps);
    let o = run64(&mut d, nr::SET_TRAP_TABLE, &[BUF, 0xa1, 0xa2]);
    let args = [BUF + 16 * u64::from(TRAP_TABLE_BUDGET), 0xa1, 0xa2, 0, 0, 0];
    assert_eq!(o, preempted(args));
    assert_eq!(d.calls.len(), TRAP_TABLE_BUDGET as usize);
    assert_eq!(run64(&mut d, nr::SET_TRAP_TABLE, &args), ok());
    assert_eq!(d.calls.len(), 100);
    assert_eq!(d.calls[99], "set_trap(99, 7, 0xe033, 0xffffffff81000063)");
}

// ---------------------------------------------------------------- set_gdt, update_descriptor

#[test]
fn set_gdt() {
    let mut d = pv();
    let frames: Vec<u8> = (0..14u64)
        .flat_map(|k| (0xabc_0000 + k).to_le_bytes())
        .collect();
    d.poke(BUF, &frames);
    // Over the limit: -EINVAL before reading (the list is NULL).
    assert_eq!(run64(&mut d, nr::SET_GDT, &[0, 7169]), err(Errno::EINVAL));
    assert_eq!(
        run64(&mut d, nr::SET_GDT, &[0, u64::from(u32::MAX)]),
        err(Errno::EINVAL)
    );
    assert!(d.calls.is_empty());
    // ceil(entries / 512) frames.
    assert_eq!(run64(&mut d, nr::SET_GDT, &[BUF, 513]), ok());
    assert_eq!(run64(&mut d, nr::SET_GDT, &[BUF, 7168]), ok());
    // `unsigned int entries`: the high half is not part of it.
    assert_eq!(run64(&mut d, nr::SET_GDT, &[BUF, 1 << 32 | 512]), ok());
    // No entries: nothing read, NULL is fine.
    assert_eq!(run64(&mut d, nr::SET_GDT, &[0, 0]), ok());
    assert_eq!(
        d.calls,
        [
            "set_gdt([abc0000, abc0001], 513)".to_string(),
            format!(
                "set_gdt({:x?}, 7168)",
                (0..14u64).map(|k| 0xabc_0000 + k).collect::<Vec<_>>()
            ),
            "set_gdt([abc0000], 512)".to_string(),
            "set_gdt([], 0)".to_string(),
        ]
    );
    // The list must be readable.
    d.calls.clear();
    assert_eq!(
        run64(&mut d, nr::SET_GDT, &[END - 8, 1024]),
        err(Errno::EFAULT)
    );
    assert_eq!(run64(&mut d, nr::SET_GDT, &[0, 1]), err(Errno::EFAULT));
    assert!(d.calls.is_empty());
    // The domain's verdict.
    d.pv_err = Some(Errno::EINVAL);
    assert_eq!(run64(&mut d, nr::SET_GDT, &[BUF, 16]), err(Errno::EINVAL));
}

#[test]
fn update_descriptor() {
    let mut d = pv();
    let desc = 0x00cf_9a00_0000_ffff;
    assert_eq!(
        run64(&mut d, nr::UPDATE_DESCRIPTOR, &[0x1234_5678, desc]),
        ok()
    );
    for misaligned in [0x1234_5671, 0x1234_5674] {
        assert_eq!(
            run64(&mut d, nr::UPDATE_DESCRIPTOR, &[misaligned, desc]),
            err(Errno::EINVAL)
        );
    }
    assert_eq!(d.calls, ["update_descriptor(0x12345678, 0xcf9a000000ffff)"]);
}

// ---------------------------------------------------------------- callbacks

fn register(kind: u16, flags: u16, address: u64) -> CallbackRegister {
    CallbackRegister {
        type_: kind,
        flags,
        pad: 0,
        address,
    }
}

fn callback_op(d: &mut FakeDomain, cmd: u64) -> Outcome {
    run64(d, nr::CALLBACK_OP, &[cmd, ARG])
}

#[test]
fn callback_op_register() {
    let mut d = pv();
    let reg = u64::from(CALLBACKOP_REGISTER);
    for (r, want) in [
        (
            register(CALLBACKTYPE_SYSCALL, CALLBACKF_MASK_EVENTS, KADDR),
            ok(),
        ),
        (register(CALLBACKTYPE_EVENT, 0, KADDR + 8), ok()),
        (register(CALLBACKTYPE_NMI, 0, KADDR + 16), ok()),
        (register(CALLBACKTYPE_SYSCALL32, 1, KADDR + 24), ok()),
        (register(CALLBACKTYPE_SYSENTER, 0, KADDR + 32), ok()),
        (register(CALLBACKTYPE_FAILSAFE, 0xfffe, KADDR + 40), ok()),
        (
            register(CALLBACKTYPE_SYSENTER_DEPRECATED, 0, KADDR),
            err(Errno::ENOSYS),
        ),
        (register(6, 0, KADDR), err(Errno::ENOSYS)),
        (register(0xffff, 0, KADDR), err(Errno::ENOSYS)),
        // The address is checked before the type.
        (
            register(CALLBACKTYPE_EVENT, 0, NONCANON),
            err(Errno::EINVAL),
        ),
        (register(0xffff, 0, NONCANON), err(Errno::EINVAL)),
    ] {
        d.poke(ARG, &r.to_bytes());
        assert_eq!(callback_op(&mut d, reg), want, "{r:?}");
    }
    assert_eq!(
        d.calls,
        [
            "register_callback(2, 1, 0xffffffff81000000)",
            "register_callback(0, 0, 0xffffffff81000008)",
            "register_callback(4, 0, 0xffffffff81000010)",
            "register_callback(7, 1, 0xffffffff81000018)",
            "register_callback(5, 0, 0xffffffff81000020)",
            "register_callback(1, 65534, 0xffffffff81000028)",
        ]
    );
    // The domain's verdict; `int cmd`; unknown commands; faults.
    d.calls.clear();
    d.poke(ARG, &register(CALLBACKTYPE_EVENT, 0, KADDR).to_bytes());
    d.pv_fail = Some((KADDR, Errno::EINVAL));
    assert_eq!(callback_op(&mut d, 1 << 32 | reg), err(Errno::EINVAL));
    assert_eq!(d.calls.len(), 1);
    for cmd in [2, 3, u64::from(u32::MAX)] {
        assert_eq!(callback_op(&mut d, cmd), err(Errno::ENOSYS), "cmd {cmd}");
    }
    assert_eq!(
        run64(&mut d, nr::CALLBACK_OP, &[reg, END - 8]),
        err(Errno::EFAULT)
    );
}

#[test]
fn callback_op_unregister() {
    let mut d = pv();
    let unreg = u64::from(CALLBACKOP_UNREGISTER);
    for (kind, want) in [
        (CALLBACKTYPE_NMI, ok()),
        (CALLBACKTYPE_EVENT, err(Errno::EINVAL)),
        (CALLBACKTYPE_FAILSAFE, err(Errno::EINVAL)),
        (CALLBACKTYPE_SYSCALL, err(Errno::EINVAL)),
        (CALLBACKTYPE_SYSCALL32, err(Errno::EINVAL)),
        (CALLBACKTYPE_SYSENTER, err(Errno::EINVAL)),
        (CALLBACKTYPE_SYSENTER_DEPRECATED, err(Errno::ENOSYS)),
        (9, err(Errno::ENOSYS)),
    ] {
        d.poke(
            ARG,
            &CallbackUnregister {
                type_: kind,
                unused: 0xffff,
            }
            .to_bytes(),
        );
        assert_eq!(callback_op(&mut d, unreg), want, "type {kind}");
    }
    assert_eq!(d.calls, ["unregister_callback(4)"]);
    // Only the 4-byte structure is read.
    d.poke(END - 4, &[4, 0, 0, 0]);
    assert_eq!(run64(&mut d, nr::CALLBACK_OP, &[unreg, END - 4]), ok());
    assert_eq!(
        run64(&mut d, nr::CALLBACK_OP, &[unreg, END - 2]),
        err(Errno::EFAULT)
    );
}

#[test]
fn set_callbacks() {
    let mut d = pv();
    assert_eq!(
        run64(
            &mut d,
            nr::SET_CALLBACKS,
            &[KADDR, KADDR + 0x40, KADDR + 0x80]
        ),
        ok()
    );
    assert_eq!(
        d.calls,
        [
            "register_callback(0, 0, 0xffffffff81000000)",
            "register_callback(1, 0, 0xffffffff81000040)",
            "register_callback(2, 0, 0xffffffff81000080)",
        ]
    );
    // A non-canonical address is not registered; the domain's refusals are
    // ignored; the result is 0 all the same.
    d.calls.clear();
    d.pv_fail = Some((KADDR, Errno::EINVAL));
    assert_eq!(
        run64(&mut d, nr::SET_CALLBACKS, &[KADDR, NONCANON, 0]),
        ok()
    );
    assert_eq!(
        d.calls,
        [
            "register_callback(0, 0, 0xffffffff81000000)",
            "register_callback(2, 0, 0x0)",
        ]
    );
}

// ---------------------------------------------------------------- the small ones

#[test]
fn debug_registers() {
    let mut d = pv();
    assert_eq!(run64(&mut d, nr::GET_DEBUGREG, &[7]), Outcome::ret(0x400));
    assert_eq!(run64(&mut d, nr::GET_DEBUGREG, &[8]), err(Errno::ENODEV));
    // `int reg`: the high half is not part of it.
    assert_eq!(run64(&mut d, nr::SET_DEBUGREG, &[1 << 32, KADDR]), ok());
    // The value comes back whole in rax, even one that looks negative.
    let o = run64(&mut d, nr::GET_DEBUGREG, &[0]);
    assert_eq!(o.register_value(GuestWidth::Bits64), KADDR);
    assert_eq!(
        run64(&mut d, nr::SET_DEBUGREG, &[u64::from(u32::MAX), 0]),
        err(Errno::ENODEV)
    );
    assert_eq!(
        d.calls,
        [
            "set_debugreg(0, 0xffffffff81000000)",
            "set_debugreg(4294967295, 0x0)"
        ]
    );
}

#[test]
fn iret_returns_the_restored_rax() {
    let mut d = pv();
    d.iret_rax = 0xffff_ffff_ffff_fff2;
    let o = run64(&mut d, nr::IRET, &[0xdead; 6]);
    assert_eq!(o.action, Action::Continue);
    assert_eq!(o.register_value(GuestWidth::Bits64), 0xffff_ffff_ffff_fff2);
    assert_eq!(d.calls, ["iret"]);
    d.pv_err = Some(Errno::EFAULT);
    assert_eq!(run64(&mut d, nr::IRET, &[]), err(Errno::EFAULT));
}

#[test]
fn stack_switch_and_fpu_taskswitch() {
    let mut d = pv();
    assert_eq!(
        run64(
            &mut d,
            nr::STACK_SWITCH,
            &[u64::from(FLAT_KERNEL_SS), KADDR]
        ),
        ok()
    );
    for set in [1, 1 << 32, u64::from(u32::MAX)] {
        assert_eq!(run64(&mut d, nr::FPU_TASKSWITCH, &[set]), ok());
    }
    assert_eq!(
        d.calls,
        [
            "stack_switch(0xe02b, 0xffffffff81000000)",
            "fpu_taskswitch(true)",
            "fpu_taskswitch(false)",
            "fpu_taskswitch(true)",
        ]
    );
    d.pv_err = Some(Errno::EINVAL);
    assert_eq!(run64(&mut d, nr::STACK_SWITCH, &[0, 0]), err(Errno::EINVAL));
}

#[test]
fn set_segment_base() {
    let mut d = pv();
    for (which, base, want) in [
        (SEGBASE_FS, 0x7fff_ffff_f000, ok()),
        (SEGBASE_GS_USER, KADDR, ok()),
        (SEGBASE_GS_KERNEL, 0, ok()),
        // The selector is base[15:0]: the rest is not an address.
        (SEGBASE_GS_USER_SEL, NONCANON | 0x2b, ok()),
        (SEGBASE_FS, NONCANON, err(Errno::EINVAL)),
        (SEGBASE_GS_USER, 0x0000_8000_0000_0000, err(Errno::EINVAL)),
        (SEGBASE_GS_KERNEL, 0xffff_7fff_ffff_ffff, err(Errno::EINVAL)),
        (4, 0, err(Errno::EINVAL)),
        (u32::MAX, 0, err(Errno::EINVAL)),
    ] {
        assert_eq!(
            run64(&mut d, nr::SET_SEGMENT_BASE, &[which.into(), base]),
            want,
            "which {which} base {base:#x}"
        );
    }
    assert_eq!(
        d.calls,
        [
            "set_segment_base(0, 0x7ffffffff000)",
            "set_segment_base(1, 0xffffffff81000000)",
            "set_segment_base(2, 0x0)",
            "set_segment_base(3, 0x800000000000002b)",
        ]
    );
}

#[test]
fn vm_assist() {
    let mut d = pv();
    let (on, off) = (u64::from(VMASST_CMD_ENABLE), u64::from(VMASST_CMD_DISABLE));
    for (cmd, kind, want) in [
        (on, VMASST_TYPE_WRITABLE_PAGETABLES, ok()),
        (off, VMASST_TYPE_M2P_STRICT, ok()),
        (on, VMASST_TYPE_4GB_SEGMENTS, ok()),
        (on, VMASST_TYPE_RUNSTATE_UPDATE_FLAG, ok()),
        (on, 6, err(Errno::EINVAL)),
        (on, 31, err(Errno::EINVAL)),
        (on, 64, err(Errno::EINVAL)),
        (on, u32::MAX, err(Errno::EINVAL)),
        (2, VMASST_TYPE_WRITABLE_PAGETABLES, err(Errno::ENOSYS)),
        // The type is checked first.
        (2, 6, err(Errno::EINVAL)),
    ] {
        assert_eq!(
            run64(&mut d, nr::VM_ASSIST, &[cmd, kind.into()]),
            want,
            "cmd {cmd} type {kind}"
        );
    }
    assert_eq!(
        d.calls,
        [
            "vm_assist(0, 2)",
            "vm_assist(1, 32)",
            "vm_assist(0, 0)",
            "vm_assist(0, 5)"
        ]
    );
}

#[test]
fn physdev_set_iopl() {
    let mut d = pv();
    let cmd = u64::from(PHYSDEVOP_SET_IOPL);
    for (iopl, want) in [(3, ok()), (0, ok()), (4, err(Errno::EINVAL))] {
        d.poke(ARG, &PhysdevSetIopl { iopl }.to_bytes());
        assert_eq!(run64(&mut d, nr::PHYSDEV_OP, &[cmd, ARG]), want);
    }
    assert_eq!(d.calls, ["set_iopl(3)", "set_iopl(0)"]);
    assert_eq!(
        run64(&mut d, nr::PHYSDEV_OP, &[cmd, END - 2]),
        err(Errno::EFAULT)
    );
    // `int cmd`; other sub-ops are not there yet.
    d.poke(ARG, &PhysdevSetIopl { iopl: 1 }.to_bytes());
    assert_eq!(run64(&mut d, nr::PHYSDEV_OP, &[1 << 32 | cmd, ARG]), ok());
    for other in [0, 5, 7, 12, 28] {
        assert_eq!(
            run64(&mut d, nr::PHYSDEV_OP, &[other, ARG]),
            err(Errno::ENOSYS),
            "cmd {other}"
        );
    }
}
