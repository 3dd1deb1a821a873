//! The smp mode's step 2: what `VCPUOP_initialise`, `VCPUOP_up` and the
//! per-vCPU event-channel and upcall calls must refuse before any AP has started
//! (Xen `do_vcpu_op`, `arch_set_info_hvm_guest`, `evtchn_bind_*`,
//! `hvmop_set_evtchn_upcall_vector`).
//!
//! The bad contexts target vCPU N-1, uninitialised at this point (a context is
//! checked only then: an initialised vCPU gets `-EEXIST` first). Each is wrong
//! in exactly one way, so a hypervisor that checks that one thing wrongly is the
//! only way to fail its line. Should one be accepted all the same, vCPU N-1 is
//! initialised but down; with N > 2 the INIT of step 4 resets it.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::evtchn::VIRQ_TIMER;
use keel_hypercall::abi::hvm::{VCPU_HVM_MODE_32B, VcpuHvmContext, VcpuHvmX86_32, VcpuHvmX86_64};
use keel_hypercall::abi::vcpu::{VCPUOP_INITIALISE, VCPUOP_UP};

use super::{Smp, UNMAPPED_VA, Why, vcpus};
use crate::checks::Rc;
use crate::{events, hypercall};

impl Smp<'_> {
    pub(super) fn refused_before_start(&self) {
        let c = &self.c;
        let t = (self.n - 1) as u32;
        c.errno(
            "VCPUOP_up of an uninitialised vCPU refused",
            hypercall::vcpu_op(VCPUOP_UP, t, 0),
            Errno::EINVAL,
        );
        for (name, ctx) in bad_contexts(t as usize) {
            c.errno(name, vcpus::initialise(t, &ctx), Errno::EINVAL);
        }
        c.errno(
            "VCPUOP_initialise unmapped context refused",
            hypercall::vcpu_op(VCPUOP_INITIALISE, t, UNMAPPED_VA),
            Errno::EFAULT,
        );
        c.rc("refused contexts leave the vCPU down", vcpus::is_up(t), 0);

        let good = vcpus::context64(1);
        let missing = [self.n as u32, u32::MAX];
        let enoent = Errno::ENOENT.neg();
        let each = |name: &str, op: &dyn Fn(u32) -> i64| {
            let mut why = Why::new();
            for &k in &missing {
                let rc = op(k);
                if rc != enoent {
                    why.set(format_args!(
                        "vcpu {k:#x}: returned {}, expected -2 (ENOENT)",
                        Rc(rc)
                    ));
                }
            }
            why.report(c, name);
        };
        each("VCPUOP_initialise of a missing vCPU refused", &|k| {
            vcpus::initialise(k, &good)
        });
        each("VCPUOP_up of a missing vCPU refused", &|k| {
            hypercall::vcpu_op(VCPUOP_UP, k, 0)
        });
        each("VCPUOP_is_up of a missing vCPU refused", &|k| {
            vcpus::is_up(k)
        });
        each("EVTCHNOP_bind_ipi to a missing vCPU refused", &|k| {
            keep_errors(events::bind_ipi(k))
        });
        each("EVTCHNOP_bind_virq to a missing vCPU refused", &|k| {
            keep_errors(events::bind_virq(VIRQ_TIMER, k))
        });
        match events::alloc_unbound(DOMID_SELF) {
            Ok(p) => {
                each("EVTCHNOP_bind_vcpu to a missing vCPU refused", &|k| {
                    events::bind_vcpu(p, k)
                });
                events::close(p);
            }
            Err(rc) => c.fail(
                "EVTCHNOP_bind_vcpu to a missing vCPU refused",
                format_args!("no port to try it on: alloc_unbound returned {}", Rc(rc)),
            ),
        }
        each(
            "HVMOP_set_evtchn_upcall_vector for a missing vCPU refused",
            &|k| events::set_upcall_vector(k),
        );
    }
}

/// A bind's result as a return value: an unexpected success is its (positive)
/// port, which the check then reports, closed again.
fn keep_errors(r: Result<u32, i64>) -> i64 {
    match r {
        Ok(port) => {
            events::close(port);
            i64::from(port)
        }
        Err(rc) => rc,
    }
}

/// A flat 32-bit protected-mode context (valid but for what the caller
/// changes): CS 0xC9B (code, G, D), data 0xC93, a busy 32-bit TSS 0x8B.
fn context32() -> VcpuHvmX86_32 {
    VcpuHvmX86_32 {
        eip: 0x1000,
        eflags: 0x2,
        cr0: 0x11, // PE | ET
        cs_limit: 0xF_FFFF,
        ds_limit: 0xF_FFFF,
        ss_limit: 0xF_FFFF,
        es_limit: 0xF_FFFF,
        tr_limit: 0x67,
        cs_ar: 0xC9B,
        ds_ar: 0xC93,
        ss_ar: 0xC93,
        es_ar: 0xC93,
        tr_ar: 0x8B,
        ..VcpuHvmX86_32::default()
    }
}

/// `regs` as a 32-bit `vcpu_hvm_context`.
fn wrap32(regs: VcpuHvmX86_32) -> VcpuHvmContext {
    VcpuHvmContext {
        mode: VCPU_HVM_MODE_32B,
        pad: 0,
        cpu_regs: regs.to_bytes(),
    }
}

/// The contexts `arch_set_info_hvm_guest` refuses with `-EINVAL`, each wrong in
/// one way only, for vCPU `vcpu`.
fn bad_contexts(vcpu: usize) -> [(&'static str, VcpuHvmContext); 10] {
    let good = vcpus::context64(vcpu).x86_64();
    let r64 = |f: fn(&mut VcpuHvmX86_64)| {
        let mut r = good;
        f(&mut r);
        vcpus::wrap64(r)
    };
    let r32 = |f: fn(&mut VcpuHvmX86_32)| {
        let mut r = context32();
        f(&mut r);
        wrap32(r)
    };
    const CR0_PG: u64 = 1 << 31;
    const CR4_PAE: u64 = 1 << 5;
    const EFER_LME_LMA: u64 = (1 << 8) | (1 << 10);
    [
        (
            "VCPUOP_initialise 32-bit data segment as CS refused",
            r32(|r| r.cs_ar = 0xC93),
        ),
        (
            "VCPUOP_initialise 32-bit non-present CS refused",
            r32(|r| r.cs_ar = 0xC1B),
        ),
        (
            "VCPUOP_initialise 32-bit SS.DPL != CS.DPL refused",
            r32(|r| r.ss_ar = 0xCB3),
        ),
        (
            "VCPUOP_initialise 32-bit EIP beyond CS limit refused",
            r32(|r| {
                r.cs_ar = 0x49B;
                r.cs_limit = 0xFFFF;
                r.eip = 0x1_0000;
            }),
        ),
        (
            "VCPUOP_initialise 64-bit non-canonical RIP refused",
            r64(|r| r.rip = 0x8000_0000_0000_0000),
        ),
        (
            "VCPUOP_initialise 64-bit without CR0.PG refused",
            r64(|r| r.cr0 &= !CR0_PG),
        ),
        (
            "VCPUOP_initialise 64-bit without CR4.PAE refused",
            r64(|r| r.cr4 &= !CR4_PAE),
        ),
        (
            "VCPUOP_initialise 64-bit without EFER.LME refused",
            r64(|r| r.efer &= !EFER_LME_LMA),
        ),
        ("VCPUOP_initialise non-zero pad refused", {
            let mut ctx = vcpus::wrap64(good);
            ctx.pad = 1;
            ctx
        }),
        ("VCPUOP_initialise unknown mode refused", {
            let mut ctx = vcpus::wrap64(good);
            ctx.mode = 2;
            ctx
        }),
    ]
}
