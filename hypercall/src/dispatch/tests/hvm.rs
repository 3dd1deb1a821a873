//! `HVMOP_set_evtchn_upcall_vector`, `HVMOP_flush_tlbs`.

use super::*;

fn upcall(vcpu: u32, vector: u8) -> XenHvmEvtchnUpcallVector {
    XenHvmEvtchnUpcallVector {
        vcpu,
        vector,
        pad: [0; 3],
    }
}

#[test]
fn set_evtchn_upcall_vector() {
    for width in WIDTHS {
        let mut d = domu();
        for (a, want) in [
            (upcall(0, 0xf3), ok()),
            (upcall(3, 0x10), ok()),
            (upcall(1, 0x0f), err(Errno::EINVAL)),
            (upcall(1, 0), err(Errno::EINVAL)),
            (upcall(4, 0xf3), err(Errno::ENOENT)),
            // The vector is checked first.
            (upcall(4, 2), err(Errno::EINVAL)),
        ] {
            d.poke(ARG, &a.to_bytes());
            let o = run(
                &mut d,
                width,
                nr::HVM_OP,
                &[HVMOP_SET_EVTCHN_UPCALL_VECTOR.into(), ARG],
            );
            assert_eq!(o, want, "{a:?}");
        }
        assert_eq!(d.upcall_vectors, [(0, 0xf3), (3, 0x10)]);
        assert_eq!(
            run(&mut d, width, nr::HVM_OP, &[23, END - 4]),
            err(Errno::EFAULT)
        );
    }
}

#[test]
fn flush_tlbs() {
    let op = u64::from(HVMOP_FLUSH_TLBS);
    for width in WIDTHS {
        let mut d = domu();
        assert_eq!(run(&mut d, width, nr::HVM_OP, &[op, 0]), ok());
        assert_eq!(d.tlb_flushes, 1);
        // `arg` must be NULL; it is not read.
        for arg in [ARG, 1, 0xffff_ffff] {
            assert_eq!(
                run(&mut d, width, nr::HVM_OP, &[op, arg]),
                err(Errno::EINVAL),
                "arg {arg:#x}"
            );
        }
        // The domain's verdict is passed on.
        d.flush_err = Some(Errno::EINVAL);
        assert_eq!(run(&mut d, width, nr::HVM_OP, &[op, 0]), err(Errno::EINVAL));
        assert_eq!(d.calls, ["hvm_flush_tlbs", "hvm_flush_tlbs"]);
        assert_eq!(d.tlb_flushes, 1);
    }
    // A 32-bit caller passes `op` and the handle in 32-bit registers.
    let mut d = dom0();
    assert_eq!(run32(&mut d, nr::HVM_OP, &[1 << 32 | op, 1 << 32]), ok());
    assert_eq!(
        run64(&mut d, nr::HVM_OP, &[op, 1 << 32]),
        err(Errno::EINVAL)
    );
    assert_eq!(
        run64(&mut d, nr::HVM_OP, &[1 << 32 | op, 0]),
        err(Errno::ENOSYS),
        "`unsigned long op`: all 64 bits count"
    );
    assert_eq!(d.tlb_flushes, 1);
}
