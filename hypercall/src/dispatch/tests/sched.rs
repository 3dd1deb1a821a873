//! `SCHEDOP_poll` and `set_timer_op`.

use super::*;

const PORTS: u64 = BUF;

fn poll_args(d: &mut FakeDomain, width: GuestWidth, ports: &[u32], nr_ports: u32, timeout: u64) {
    let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_le_bytes()).collect();
    d.poke(PORTS, &bytes);
    match width {
        GuestWidth::Bits64 => d.poke(
            ARG,
            &SchedPoll {
                ports: PORTS,
                nr_ports,
                pad: 0,
                timeout,
            }
            .to_bytes(),
        ),
        GuestWidth::Bits32 => {
            d.poke(
                ARG,
                &SchedPollCompat {
                    ports: PORTS as u32,
                    nr_ports,
                    timeout,
                }
                .to_bytes(),
            );
            // The compat structure is 16 bytes: nothing beyond is read.
            d.faults.push(ARG + 16..ARG + 24);
        }
    }
}

fn poll(d: &mut FakeDomain, width: GuestWidth) -> Outcome {
    run(d, width, nr::SCHED_OP, &[SCHEDOP_POLL.into(), ARG])
}

#[test]
fn poll_blocks_when_nothing_is_pending() {
    for width in WIDTHS {
        let mut d = domu();
        poll_args(&mut d, width, &[5], 1, 0x1234_5678_9abc);
        assert_eq!(
            poll(&mut d, width),
            Outcome {
                ret: 0,
                action: Action::Poll {
                    port: Some(5),
                    timeout: 0x1234_5678_9abc
                }
            }
        );
        // Several ports, or none: any port wakes the vCPU.
        let mut d = domu();
        poll_args(&mut d, width, &[5, 6, 7], 3, 0);
        assert_eq!(
            poll(&mut d, width),
            Outcome {
                ret: 0,
                action: Action::Poll {
                    port: None,
                    timeout: 0
                }
            }
        );
        assert_eq!(d.calls, ["sched_poll([5, 6, 7])"]);
        let mut d = domu();
        poll_args(&mut d, width, &[], 0, 9);
        assert_eq!(
            poll(&mut d, width).action,
            Action::Poll {
                port: None,
                timeout: 9
            }
        );
        assert_eq!(d.calls, ["sched_poll([])"]);
    }
}

#[test]
fn poll_returns_at_once_when_something_is_pending() {
    let mut d = domu();
    d.ports[6].pending = true;
    d.ports[6].masked = true;
    poll_args(&mut d, GuestWidth::Bits64, &[5, 6, 99], 3, 0);
    // A pending port before the invalid one: ready, as Xen.
    assert_eq!(poll(&mut d, GuestWidth::Bits64), ok());
    let mut d = domu();
    d.upcall_pending = true;
    poll_args(&mut d, GuestWidth::Bits32, &[99], 1, 0);
    assert_eq!(poll(&mut d, GuestWidth::Bits32), ok());
}

#[test]
fn poll_argument_errors() {
    let mut d = domu();
    poll_args(&mut d, GuestWidth::Bits64, &[99], 1, 0);
    assert_eq!(poll(&mut d, GuestWidth::Bits64), err(Errno::EINVAL));
    // At most 128 ports, checked before the array is read.
    let many = vec![5u32; 128];
    let mut d = domu();
    poll_args(&mut d, GuestWidth::Bits64, &many, 128, 0);
    assert_eq!(poll(&mut d, GuestWidth::Bits64).ret, 0);
    assert_eq!(d.calls.len(), 1);
    for n in [129, u32::MAX] {
        let mut d = domu();
        poll_args(&mut d, GuestWidth::Bits64, &many, n, 0);
        d.faults.push(PORTS..PORTS + 1);
        assert_eq!(poll(&mut d, GuestWidth::Bits64), err(Errno::EINVAL));
        assert!(d.calls.is_empty());
    }
    // An unreadable array or structure.
    let mut d = domu();
    poll_args(&mut d, GuestWidth::Bits64, &[1, 2, 3], 3, 0);
    d.faults.push(PORTS + 11..PORTS + 12);
    assert_eq!(poll(&mut d, GuestWidth::Bits64), err(Errno::EFAULT));
    assert!(d.calls.is_empty());
    for p in [0, END - 8, u64::MAX] {
        assert_eq!(run64(&mut d, nr::SCHED_OP, &[3, p]), err(Errno::EFAULT));
    }
    // The array must lie in the caller's address space.
    let mut d = domu();
    d.poke(
        ARG,
        &SchedPollCompat {
            ports: 0xffff_fffc,
            nr_ports: 2,
            timeout: 0,
        }
        .to_bytes(),
    );
    assert_eq!(poll(&mut d, GuestWidth::Bits32), err(Errno::EFAULT));
}

#[test]
fn set_timer_op_64() {
    let mut d = domu();
    let now = d.now;
    let hundred_ms = 100_000_000;
    for (timeout, want) in [
        (now + 5, Some(now + 5)),
        // Already past: set anyway; the domain fires it at once.
        (1, Some(1)),
        (now, Some(now)),
        (now + (1 << 50) - 1, Some(now + (1 << 50) - 1)),
        // Xen's Linux workaround: implausible timeouts become 100 ms.
        (now + (1 << 50), Some(now + hundred_ms)),
        (1 << 63, Some(now + hundred_ms)),
        (u64::MAX, Some(now + hundred_ms)),
        (0, None),
    ] {
        d.singleshot = Some(7);
        assert_eq!(
            run64(&mut d, nr::SET_TIMER_OP, &[timeout, 0xdead]),
            ok(),
            "{timeout:#x}"
        );
        assert_eq!(d.singleshot, want, "{timeout:#x}");
    }
    assert_eq!(d.calls.last().unwrap(), "stop_singleshot_timer");
}

#[test]
fn set_timer_op_32_splits_the_timeout() {
    let mut d = domu();
    let t = d.now + 0x1_0000_0005;
    assert_eq!(
        run32(&mut d, nr::SET_TIMER_OP, &[t & 0xffff_ffff, t >> 32]),
        ok()
    );
    assert_eq!(d.singleshot, Some(t));
    // Junk above bit 31 of either register is not part of the value.
    assert_eq!(
        run32(
            &mut d,
            nr::SET_TIMER_OP,
            &[
                0xffff_ffff_0000_0000 | (t & 0xffff_ffff),
                0xffff_ffff_0000_0000 | (t >> 32)
            ]
        ),
        ok()
    );
    assert_eq!(d.singleshot, Some(t));
    assert_eq!(run32(&mut d, nr::SET_TIMER_OP, &[0, 0]), ok());
    assert_eq!(d.singleshot, None);
    // Only the low half zero is not "stop".
    assert_eq!(run32(&mut d, nr::SET_TIMER_OP, &[0, 1]), ok());
    assert_eq!(d.singleshot, Some(1 << 32));
}
