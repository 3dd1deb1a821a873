//! vCPUs going online and offline, and the interrupts one vCPU sends another
//! (Xen: `VCPUOP_initialise`/`up`/`down`, `hvm_vcpu_down`, the local APIC's
//! INIT, SIPI, NMI and fixed IPIs in `vlapic.c`).
//!
//! A vCPU is *initialised* once it has a start state (vCPU 0 from the build;
//! another from `VCPUOP_initialise` or a SIPI) and *down* while it is offline.
//! The rules, as Xen's:
//! - `VCPUOP_initialise` of an initialised vCPU is -EEXIST; a valid context
//!   makes it initialised and (still) down.
//! - `VCPUOP_up` of a vCPU never initialised is -EINVAL; otherwise it comes up.
//! - `VCPUOP_down`, HLT with interrupts off and an INIT take a vCPU down; when
//!   that leaves no vCPU of the domain up, the domain is powered off instead.
//! - An INIT also resets the vCPU (not initialised, its local APIC reset); an
//!   INIT to a vCPU that is not initialised does nothing.
//! - A SIPI starts a vCPU that is not initialised, in real mode at the vector's
//!   page; a SIPI to an initialised (online) vCPU is ignored.
//! - An NMI brings an initialised, down vCPU back up (Xen's `vlapic_accept_irq`).
//!
//! The register state a transition gives a vCPU is not written here: it goes
//! into [`VcpuState::start`], and the pCPU that next runs the vCPU loads it
//! (`run.rs`). No pCPU ever touches another's hardware vCPU, and a vCPU that
//! SIPIs a vCPU whose state another pCPU holds never waits for that pCPU.
//!
//! # Locking
//! Every transition takes the domain's [`Domain::online`] lock and then the
//! target's `st`: "is any other vCPU up?" and the change are one step, so two
//! vCPUs taking each other down cannot both succeed and leave the domain with
//! none. `online` comes after the event tables and before any vCPU's `st`
//! (docs/architecture.md, "Lock order"); IPI delivery takes each target's `st`
//! alone, one at a time, never the sender's at the same time. A PV vCPU's
//! `VCPUOP_initialise` takes `online`, then the domain's `mem` (its L4 and GDT
//! references, `pv::check_initialise`) with no `st` held, then the target's
//! `st` to store the state: never `st` before `mem`.

use keel_devices::vlapic::{DeliveryMode, Ipi, Trigger};
use keel_hypercall::abi::Errno;
use keel_hypercall::abi::hvm::VcpuHvmContext;
use keel_x86::context::Context;

use crate::domain::Domain;
use crate::events::{self, Wakes};
use crate::vcpu::{Vcpu, VcpuState, Wait};

/// What taking a vCPU down did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Down {
    /// It is down (or already was); others are up.
    Done,
    /// It was the last vCPU up: the domain powers off instead (Xen's
    /// "All CPUs offline -- powering off").
    LastVcpu,
}

/// CR4 bits a start context may set (Xen: `hvm_cr4_guest_valid_bits`, from the
/// domain's CPUID policy): those whose features `keel_x86::cpuid_policy` may
/// show. Of these, FSGSBASE, SMEP and SMAP are shown only if the host has them;
/// a guest setting one its CPUID hid makes its own entry fail (the hardware
/// checks CR4 against what it has), which crashes that guest alone.
const CR4_VALID: u64 = 0x7FF // VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE, OSFXSR, OSXMMEXCPT
    | 1 << 16 // FSGSBASE
    | 1 << 20 // SMEP
    | 1 << 21; // SMAP

/// Makes a down vCPU runnable (its `st` locked): it goes to the scheduler
/// through `wakes`.
fn bring_up(v: &Vcpu, st: &mut VcpuState, wakes: &mut Wakes) {
    if st.down {
        st.down = false;
        st.wait = Wait::None;
        wakes.push(v.domid, v.id);
    }
}

/// Whether a vCPU of `d` other than `except` is up (`d.online` held).
fn others_up(d: &Domain, except: u32) -> bool {
    d.vcpus
        .iter()
        .any(|o| o.id != except && !o.st.lock().down)
}

/// `VCPUOP_initialise`: `v` gets the start state `ctx` describes, and stays
/// down until `VCPUOP_up`.
pub fn initialise(d: &Domain, v: &Vcpu, ctx: &VcpuHvmContext) -> Result<(), Errno> {
    let _online = d.online.lock();
    let mut st = v.st.lock();
    if st.initialised {
        return Err(Errno::EEXIST);
    }
    let start = Context::from_vcpu_hvm(ctx, CR4_VALID).map_err(|e| {
        log::info!("d{}v{}: VCPUOP_initialise refused: {e}", d.id, v.id);
        Errno::EINVAL
    })?;
    st.start = Some(start);
    st.initialised = true;
    st.down = true;
    Ok(())
}

/// `VCPUOP_initialise` of a PV vCPU: `v` gets the state `ctx` describes
/// (checked, its page tables and GDT referenced: `pv::check_initialise`) and
/// stays down until `VCPUOP_up`.
pub fn initialise_pv(
    d: &Domain,
    v: &Vcpu,
    ctx: &keel_hypercall::abi::pv::VcpuGuestContext,
) -> Result<(), Errno> {
    let _online = d.online.lock();
    if v.st.lock().initialised {
        return Err(Errno::EEXIST);
    }
    // The domain's `mem` before the vCPU's `st` would invert the lock order:
    // `online` keeps anyone else from initialising it meanwhile.
    let init = crate::pv::check_initialise(d, v.id, ctx)?;
    let mut st = v.st.lock();
    st.pv_start = Some(alloc::boxed::Box::new(init));
    st.initialised = true;
    st.down = true;
    Ok(())
}

/// `VCPUOP_up`.
pub fn up(d: &Domain, v: &Vcpu, wakes: &mut Wakes) -> Result<(), Errno> {
    let _online = d.online.lock();
    let mut st = v.st.lock();
    if !st.initialised {
        return Err(Errno::EINVAL);
    }
    bring_up(v, &mut st, wakes);
    Ok(())
}

/// Takes `v` down (`VCPUOP_down`, HLT with interrupts off): unless it is the
/// last vCPU up. A vCPU running on another pCPU is made to exit; the calling
/// vCPU's own slice ends when it next looks at its state.
pub fn down(d: &Domain, v: &Vcpu) -> Down {
    let _online = d.online.lock();
    if !others_up(d, v.id) {
        return Down::LastVcpu;
    }
    v.st.lock().down = true;
    v.notify();
    Down::Done
}

/// Whether `v` is up (`VCPUOP_is_up`).
pub fn is_up(v: &Vcpu) -> bool {
    !v.st.lock().down
}

/// An INIT: `v` goes down and is reset (Xen's `vlapic_init_sipi_one`).
pub fn init(d: &Domain, v: &Vcpu) -> Down {
    let _online = d.online.lock();
    if !v.st.lock().initialised {
        return Down::Done;
    }
    let last = !others_up(d, v.id);
    {
        let mut st = v.st.lock();
        st.initialised = false;
        st.down = true;
        st.start = None;
        st.wait = Wait::None;
        st.nmi_pending = false;
        st.lapic.init();
    }
    v.notify();
    if last { Down::LastVcpu } else { Down::Done }
}

/// A SIPI with start page `vector`: `v` starts in real mode at `vector << 12`,
/// unless it is initialised (then nothing happens).
pub fn sipi(d: &Domain, v: &Vcpu, vector: u8, wakes: &mut Wakes) {
    let _online = d.online.lock();
    let mut st = v.st.lock();
    if st.initialised {
        log::debug!("d{}v{}: SIPI to an initialised vCPU ignored", d.id, v.id);
        return;
    }
    st.start = Some(Context::sipi(vector));
    st.initialised = true;
    bring_up(v, &mut st, wakes);
}

/// How an NMI came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiFrom {
    /// The local APIC (an NMI IPI): an initialised vCPU that is down comes
    /// back up for it (Xen's `vlapic_accept_irq`).
    Ipi,
    /// `VCPUOP_send_nmi`: only pending and a kick, as Xen's.
    Hypercall,
}

/// An NMI for `v`: pending until delivered (NMIs do not queue).
pub fn nmi(d: &Domain, v: &Vcpu, from: NmiFrom, wakes: &mut Wakes) {
    let _online = d.online.lock();
    let mut st = v.st.lock();
    if st.nmi_pending {
        return;
    }
    st.nmi_pending = true;
    if st.initialised && from == NmiFrom::Ipi {
        bring_up(v, &mut st, wakes);
    }
    events::wake_locked(v, &mut st, wakes);
    drop(st);
    v.notify();
}

/// Accepts a fixed or lowest-priority interrupt `vector` in `v`'s local APIC,
/// waking or interrupting it as needed.
fn fixed(v: &Vcpu, vector: u8, level: bool, wakes: &mut Wakes) {
    let mut st = v.st.lock();
    st.lapic.accept(vector, level);
    if st.lapic.pending().is_some() {
        // A halted or polling vCPU wakes for it (a poll may return early).
        events::wake_locked(v, &mut st, wakes);
    }
    drop(st);
    v.notify();
}

/// Delivers an IPI `from` wrote to its ICR to every vCPU of `d` it targets.
/// `Down::LastVcpu` if an INIT took the domain's last vCPU down.
pub fn deliver_ipi(d: &Domain, from: &Vcpu, ipi: &Ipi, wakes: &mut Wakes) -> Down {
    let targets = d
        .vcpus
        .iter()
        .filter(|t| t.st.lock().lapic.targets_me(ipi));
    let level = ipi.trigger == Trigger::Level;
    let mut end = Down::Done;
    match ipi.delivery {
        DeliveryMode::Fixed => {
            for t in targets {
                fixed(t, ipi.vector, level, wakes);
            }
        }
        DeliveryMode::LowestPriority => {
            // The target whose processor priority is lowest (ties: the lowest
            // vCPU id), among those whose APIC is enabled (Xen's
            // `vlapic_lowest_prio`, without its round-robin).
            let pick = targets
                .filter_map(|t| {
                    let st = t.st.lock();
                    st.lapic.is_sw_enabled().then(|| (st.lapic.ppr(), t.id, t))
                })
                .min_by_key(|&(ppr, id, _)| (ppr, id));
            if let Some((_, _, t)) = pick {
                fixed(t, ipi.vector, level, wakes);
            }
        }
        DeliveryMode::Nmi => {
            for t in targets {
                nmi(d, t, NmiFrom::Ipi, wakes);
            }
        }
        DeliveryMode::Init => {
            if ipi.is_init_deassert() {
                return Down::Done;
            }
            for t in targets {
                if init(d, t) == Down::LastVcpu {
                    end = Down::LastVcpu;
                }
            }
        }
        DeliveryMode::StartUp => {
            for t in targets {
                sipi(d, t, ipi.vector, wakes);
            }
        }
        DeliveryMode::Smi => {
            log::debug!("d{}v{}: SMI IPI ignored", d.id, from.id);
        }
    }
    end
}
