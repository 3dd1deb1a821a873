//! VIRQ classes: who may bind a VIRQ, on which vCPU, and who receives it.
//!
//! # What
//!
//! Xen sorts its virtual interrupts (`VIRQ_*`, `public/xen.h`) into three
//! classes (`get_virq_type` in `xen/common/event_channel.c`):
//!
//! - per-vCPU ([`VirqKind::Vcpu`]): `VIRQ_TIMER`, `VIRQ_DEBUG`,
//!   `VIRQ_XENOPROF`, `VIRQ_XENPMU`. Each vCPU binds its own port, on itself;
//!   the binding cannot move.
//! - per-domain ([`VirqKind::Domain`]): `VIRQ_ARGO`. Bound on vCPU 0, may be
//!   moved with `EVTCHNOP_bind_vcpu`.
//! - global ([`VirqKind::Global`]): everything else, including the unassigned
//!   numbers and, on x86, every architecture VIRQ (`VIRQ_ARCH_0..7`). Bound on
//!   vCPU 0 by the one domain that handles it (the hardware domain unless
//!   changed), movable like per-domain ones.
//!
//! # Invariants
//!
//! - [`virq_kind`] is `Some` exactly for `virq < NR_VIRQS`.
//!
//! # Locking
//!
//! None: pure functions.

use keel_hypercall::abi::evtchn::{
    NR_VIRQS, VIRQ_ARGO, VIRQ_DEBUG, VIRQ_TIMER, VIRQ_XENOPROF, VIRQ_XENPMU,
};

/// The class of a VIRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VirqKind {
    /// One binding per vCPU, fixed to that vCPU (Xen `VIRQ_VCPU`).
    Vcpu,
    /// One binding per domain, made on vCPU 0 (Xen `VIRQ_DOMAIN`).
    Domain,
    /// One binding machine-wide, in the handling domain, made on vCPU 0
    /// (Xen `VIRQ_GLOBAL`).
    Global,
}

/// The class of `virq`, or `None` when it is not a VIRQ (`>= NR_VIRQS`).
#[must_use]
pub const fn virq_kind(virq: u32) -> Option<VirqKind> {
    if virq >= NR_VIRQS {
        return None;
    }
    Some(match virq {
        VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU => VirqKind::Vcpu,
        VIRQ_ARGO => VirqKind::Domain,
        _ => VirqKind::Global,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_hypercall::abi::evtchn::{VIRQ_ARCH_0, VIRQ_CONSOLE, VIRQ_DOM_EXC};

    #[test]
    fn classes_follow_xen() {
        assert_eq!(virq_kind(VIRQ_TIMER), Some(VirqKind::Vcpu));
        assert_eq!(virq_kind(VIRQ_DEBUG), Some(VirqKind::Vcpu));
        assert_eq!(virq_kind(VIRQ_XENOPROF), Some(VirqKind::Vcpu));
        assert_eq!(virq_kind(VIRQ_XENPMU), Some(VirqKind::Vcpu));
        assert_eq!(virq_kind(VIRQ_ARGO), Some(VirqKind::Domain));
        assert_eq!(virq_kind(VIRQ_CONSOLE), Some(VirqKind::Global));
        assert_eq!(virq_kind(VIRQ_DOM_EXC), Some(VirqKind::Global));
        assert_eq!(virq_kind(5), Some(VirqKind::Global));
        for arch in VIRQ_ARCH_0..NR_VIRQS {
            assert_eq!(virq_kind(arch), Some(VirqKind::Global));
        }
        assert_eq!(virq_kind(NR_VIRQS), None);
        assert_eq!(virq_kind(u32::MAX), None);
    }
}
