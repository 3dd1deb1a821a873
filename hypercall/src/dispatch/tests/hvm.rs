//! `HVMOP_set_evtchn_upcall_vector`.

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
