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
//!   changed, [`GlobalVirqHandlers`]), movable like per-domain ones.
//!
//! # Invariants
//!
//! - [`virq_kind`] is `Some` exactly for `virq < NR_VIRQS`.
//! - A global VIRQ is bound in at most one domain, its handler's: the
//!   handler changes only while the current one has it unbound, and only
//!   the handler may bind it.
//!
//! # Locking
//!
//! The classes are pure functions. [`GlobalVirqHandlers`] is machine-wide
//! state (Xen's `global_virq_handlers` under `global_virq_handlers_lock`):
//! the kernel keeps it under a lock of its own, taken *after* any domain's
//! table lock (see [`crate::table`]).

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::evtchn::{
    NR_VIRQS, VIRQ_ARGO, VIRQ_DEBUG, VIRQ_TIMER, VIRQ_XENOPROF, VIRQ_XENPMU,
};

use crate::table::Table;

/// The domain whose VIRQ bindings receive global VIRQs unless
/// [`GlobalVirqHandlers::set`] says otherwise (Xen's hardware domain;
/// keel's dom0).
pub const HARDWARE_DOMAIN: DomId = 0;

const NR_VIRQS_USIZE: usize = NR_VIRQS as usize;

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

/// The checks of `EVTCHNOP_bind_virq` that need no table, first in Xen's
/// order: `EINVAL` if `virq >= NR_VIRQS`, or it is not per-vCPU and `vcpu`
/// is not 0.
pub(crate) fn check_bind_virq(virq: u32, vcpu: u32) -> Result<VirqKind, Errno> {
    let kind = virq_kind(virq).ok_or(Errno::EINVAL)?;
    if kind != VirqKind::Vcpu && vcpu != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(kind)
}

/// Which domain receives each global VIRQ (Xen's `global_virq_handlers`):
/// the hardware domain unless set otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalVirqHandlers {
    /// Per VIRQ, the handler if not the hardware domain.
    handlers: [Option<DomId>; NR_VIRQS_USIZE],
}

impl Default for GlobalVirqHandlers {
    fn default() -> Self {
        Self::new()
    }
}

impl GlobalVirqHandlers {
    /// Every global VIRQ to the hardware domain.
    #[must_use]
    pub const fn new() -> GlobalVirqHandlers {
        GlobalVirqHandlers {
            handlers: [None; NR_VIRQS_USIZE],
        }
    }

    /// The domain that receives global VIRQ `virq` (the hardware domain
    /// unless set otherwise). Meaningless for other VIRQs.
    #[must_use]
    pub fn handler(&self, virq: u32) -> DomId {
        self.handlers
            .get(virq as usize)
            .copied()
            .flatten()
            .unwrap_or(HARDWARE_DOMAIN)
    }

    /// Makes `new`'s domain the receiver of global VIRQ `virq` (Xen's
    /// `set_global_virq_handler`, for `XEN_DOMCTL_set_virq_handler`).
    /// `current` is the table of the current handler ([`Self::handler`]),
    /// `None` if that domain has no table.
    ///
    /// # Locking
    ///
    /// The tables of `new` and `current` (lower domain id first; one lock if
    /// the same), then this. The current handler was read before those
    /// locks were taken, so it is checked again here.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `virq` is not a global VIRQ or `new` is dying; `EAGAIN`
    /// if `current` is no longer the handler's table (the handler changed
    /// since it was read: read it again); `EBUSY` if the current handler,
    /// another domain, has the VIRQ bound.
    pub fn set(&mut self, new: &Table, virq: u32, current: Option<&Table>) -> Result<(), Errno> {
        if virq_kind(virq) != Some(VirqKind::Global) || new.is_dying() {
            return Err(Errno::EINVAL);
        }
        let handler = self.handler(virq);
        if handler == new.dom() {
            return Ok(());
        }
        if let Some(t) = current {
            if t.dom() != handler {
                return Err(Errno::EAGAIN);
            }
            if t.virq(0, virq).is_some() {
                return Err(Errno::EBUSY);
            }
        }
        if let Some(h) = self.handlers.get_mut(virq as usize) {
            *h = Some(new.dom());
        }
        Ok(())
    }

    /// Hands every global VIRQ `dom` handles back to the hardware domain
    /// (Xen's `clear_global_virq_handlers`), when `dom` is destroyed.
    pub fn forget(&mut self, dom: DomId) {
        for h in &mut self.handlers {
            if *h == Some(dom) {
                *h = None;
            }
        }
    }
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
