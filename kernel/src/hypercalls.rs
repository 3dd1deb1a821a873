//! keel's side of the hypercall dispatcher: `keel_hypercall::Domain` for a running
//! domain. Guest pointers become memory only through the domain's checked copies
//! (its page tables, then its p2m); any failure is -EFAULT to the guest.
//!
//! # Locking
//! The caller's vCPU hardware state is held by this pCPU for the whole call (the
//! run loop's). Each handler takes what it touches in the lock order
//! (docs/architecture.md): grant tables (a map or unmap: mapper and granter,
//! lower domid first; a copy: one granter at a time, and a transitive copy the
//! granter, then the hop's domain, then the granter again, never two at once),
//! then event tables (`channels.rs`), then vCPU `st`, then domain `mem`; never
//! the scheduler's (woken vCPUs go into `Wakes`). A handler that removes a p2m
//! entry calls `Domain::flush_tlbs` before the frame behind it can be reused.
//! `EVTCHNOP_init_control`/`expand_array` hold the caller's grant lock from the
//! frame's check until its event table holds the frame, as
//! `decrease_reservation` holds it from its check to the free, so a FIFO frame
//! is never freed while the table uses it (`is_special` asks the table, under
//! the grant lock). The Xen timers are set and stopped under the domain's event
//! table lock and then the vCPU's `st`, the locks a tick's delivery holds
//! (`run::fire_due_in`), so no tick decided before a stop arrives after it.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::hvm::{HVM_NR_PARAMS, VcpuHvmContext};
use keel_hypercall::abi::memory::E820Entry;
use keel_hypercall::dispatch::{Domain as HcDomain, VersionInfo};
use keel_mm::addr::Gfn;
use keel_mm::p2m::Access;

use alloc::sync::Arc;

use keel_mm::guest_walk::WalkCtx;

use crate::channels;
use crate::domain::{Domain, DomainMem};
use crate::events::{SharedWords, Wakes};
use crate::frames::{self, Frame, GrantFrames};
use crate::paging::PagingMode as _;
use crate::registry;
use crate::vcpu::{ArchVcpu, Vcpu, VcpuInfoAt};
use keel_evtchn::{Abi, two_level};
use keel_grant::DomainGrants;
use keel_hypercall::abi::evtchn::EvtchnPort;
use keel_hypercall::abi::vcpu::VcpuRunstateInfo;
use keel_hypercall::abi::xen::VcpuTimeInfo;
use keel_hypercall::dispatch::{
    EvtchnState, EvtchnStatusInfo, GnttabCopyOp, GnttabCopyTarget, GnttabMapped, GnttabSize,
    GuestWidth, PollResult,
};
use keel_mm::addr::Mfn;

/// The capabilities keel reports (XENVER_capabilities): HVM-style guests, 32 and
/// 64-bit, which is what PVH guests look for.
const CAPABILITIES: &[u8] = b"hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64";

/// The hypercall context: the calling vCPU (its hardware state held by this pCPU)
/// and its domain; every other domain is looked up ([`crate::registry::get`]).
pub struct Ctx<'a> {
    pub d: &'a Arc<Domain>,
    pub v: &'a Vcpu,
    pub arch: &'a mut ArchVcpu,
    pub wakes: &'a mut Wakes,
    /// Set when `VCPUOP_down` found the vCPU to be the domain's last one up:
    /// the domain powers off once the call returns (Xen's `domain_shutdown`).
    pub last_down: bool,
    /// Set when the call found the domain must end (a PV `iret` keel cannot
    /// carry out, broken PV MMU bookkeeping): it crashes with this reason
    /// once the call returns (Xen's `domain_crash`).
    pub crash: Option<alloc::string::String>,
}

impl Ctx<'_> {
    /// Domain `dom`: the caller or another, held while the `Arc` is.
    fn dom(&self, dom: u16) -> Option<Arc<Domain>> {
        if dom == self.d.id {
            Some(self.d.clone())
        } else {
            registry::get(dom)
        }
    }

    fn walk(&self) -> WalkCtx {
        self.arch.walk_ctx()
    }
}

/// Whether `mfn` is one of `d`'s frames that are not plain RAM: shared_info, the
/// console ring, a grant-table or status frame, a FIFO control block's or
/// event array page's frame, or a page holding one of its vcpu_infos.
/// These never leave the domain while it lives.
/// `grants` is `d`'s grant state (its grant lock is the caller's).
fn is_special(d: &Domain, grants: &DomainGrants, mfn: Mfn) -> bool {
    is_special_but_vcpu_info(d, grants, mfn)
        || d.vcpus.iter().any(|v| {
            let st = v.st.lock();
            st.vcpu_info_registered && st.vcpu_info.mfn == mfn
        })
}

/// [`is_special`] leaving out the pages that hold registered `vcpu_info`s:
/// several vCPUs may keep theirs in one page (Xen allows it; their 64-byte
/// areas are apart or the guest's own doing).
fn is_special_but_vcpu_info(d: &Domain, grants: &DomainGrants, mfn: Mfn) -> bool {
    is_keel_frame(d, grants, mfn) || d.evtchn.lock().holds_frame(mfn.as_u64())
}

/// Whether `mfn` is a frame keel gave `d` for its own structures: shared_info,
/// the console ring, a grant-table frame or a grant status frame.
fn is_keel_frame(d: &Domain, grants: &DomainGrants, mfn: Mfn) -> bool {
    let m = mfn.as_u64();
    mfn == d.shared_info
        || d.console_ring.get().is_some_and(|r| r.mfn == mfn)
        || grants.table_frames().contains(&m)
        || grants.status_frames().contains(&m)
}

/// Translates `gfn` of a domain whose memory is `mem` to a frame it owns as RAM
/// (not a foreign mapping), with its access.
fn own_frame(mem: &DomainMem, gfn: u64) -> Option<(Mfn, Access)> {
    if mem.foreign.contains(&gfn) {
        return None;
    }
    mem.p2m.translate(Gfn::new(gfn)?)
}

/// The frame of `d`'s RAM at `gfn` for a FIFO control block or event array
/// page (Xen's `map_guest_page`: a page of the domain's, writable): `EINVAL`
/// for a gfn that is not the domain's own writable RAM, or whose frame keel
/// gave another role (shared_info, the console ring, a grant-table or status
/// frame).
/// A page holding vcpu_infos or other FIFO structures is fine, as on Xen.
/// The caller holds `d`'s grant lock (`grants`).
fn fifo_frame(d: &Domain, grants: &DomainGrants, gfn: u64) -> Result<Mfn, Errno> {
    let mem = d.mem.lock();
    let (mfn, access) = own_frame(&mem, gfn).ok_or(Errno::EINVAL)?;
    if !access.write || mem.owned_run(mfn).is_none() {
        return Err(Errno::EINVAL);
    }
    drop(mem);
    if is_keel_frame(d, grants, mfn) {
        return Err(Errno::EINVAL);
    }
    Ok(mfn)
}

/// A grant end of a `GNTTABOP_copy`, pinned until the copy ends: the granter
/// (kept alive by the reference), the ref, the direction, and for a transitive
/// grant the domain whose grant it passed on (pinned too, through the hop).
struct CopyPin {
    granter: Arc<Domain>,
    gref: u32,
    write: bool,
    hop: Option<Arc<Domain>>,
}

/// A grant operation's result as the `GNTST_*` status the guest gets.
fn gnttab_status<T>(r: Result<T, keel_grant::GntSt>) -> i16 {
    match r {
        Ok(_) => keel_hypercall::abi::grant_table::GNTST_OKAY,
        Err(e) => e.code(),
    }
}

fn copy_frames(src: Mfn, src_off: u16, dst: Mfn, dst_off: u16, len: u16) {
    // SAFETY: both are RAM frames of live domains (p2m translations of their own
    // frames, checked by the caller, whose domains are held and whose grants are
    // pinned for the copy).
    let (s, t) = unsafe { (Frame::new(src), Frame::new(dst)) };
    frames::copy(
        &s,
        usize::from(src_off),
        &t,
        usize::from(dst_off),
        usize::from(len),
    );
}

impl Ctx<'_> {
    /// The PV vCPU making the call (the PV hypercalls reach the kernel only
    /// for a PV domain, whose vCPUs are all PV).
    fn pv(&mut self) -> Result<&mut keel_arch::pv::PvVcpu, Errno> {
        crate::pv::pv_vcpu(self.arch).ok_or(Errno::ENOSYS)
    }

    /// The errno of a PV MMU failure, or the domain's end.
    fn mmu(&mut self, r: Result<(), crate::pv::MmuError>) -> Result<(), Errno> {
        match r {
            Ok(()) => Ok(()),
            Err(crate::pv::MmuError::Errno(e)) => Err(e),
            Err(crate::pv::MmuError::Crash(why)) => {
                self.crash = Some(why);
                Err(Errno::EINVAL)
            }
        }
    }
}

impl HcDomain for Ctx<'_> {
    fn domid(&self) -> u16 {
        self.d.id
    }

    fn is_pv(&self) -> bool {
        self.d.guest_type == crate::domain::GuestType::Pv
    }

    fn pv_mmu_update(
        &mut self,
        req: &keel_hypercall::abi::mmu::MmuUpdate,
        foreigndom: u16,
    ) -> Result<(), Errno> {
        let r = crate::pv::mmu_update(self.d, self.arch, req, foreigndom);
        self.mmu(r)
    }

    fn pv_mmuext_op(
        &mut self,
        op: &keel_hypercall::abi::mmu::MmuextOp,
        foreigndom: u16,
    ) -> Result<(), Errno> {
        let r = crate::pv::mmuext_op(self.d, self.v, self.arch, op, foreigndom);
        self.mmu(r)
    }

    fn pv_update_va_mapping(&mut self, va: u64, val: u64, flags: u64) -> Result<(), Errno> {
        let r = crate::pv::update_va_mapping(self.d, self.arch, va, val, flags);
        self.mmu(r)
    }

    fn pv_clear_trap_table(&mut self) -> Result<(), Errno> {
        self.pv()?.traps.clear();
        Ok(())
    }

    fn pv_set_trap(&mut self, t: &keel_hypercall::abi::pv::TrapInfo) -> Result<(), Errno> {
        self.pv()?.traps.set_trap(*t).map(|_| ())
    }

    fn pv_stack_switch(&mut self, ss: u64, sp: u64) -> Result<(), Errno> {
        let (ss, sp) = keel_x86::pv::bounce::stack_switch(ss, sp);
        let p = self.pv()?;
        p.kernel_ss = ss as u16;
        p.kernel_sp = sp;
        Ok(())
    }

    fn pv_set_segment_base(&mut self, which: u32, base: u64) -> Result<(), Errno> {
        use keel_hypercall::abi::pv::{SEGBASE_FS, SEGBASE_GS_KERNEL, SEGBASE_GS_USER};
        let p = self.pv()?;
        match which {
            SEGBASE_FS => p.set_fs_base(base),
            SEGBASE_GS_USER => p.set_gs_base_user(base),
            SEGBASE_GS_KERNEL => p.set_gs_base_kernel(base),
            // SEGBASE_GS_USER_SEL loads a selector from the guest's GDT or
            // LDT, which keel does not keep yet.
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    fn pv_iret(&mut self) -> Result<u64, Errno> {
        match crate::pv::iret(self.d, self.v, self.arch) {
            Ok(rax) => Ok(rax),
            Err(why) => {
                self.crash = Some(why);
                Err(Errno::EFAULT)
            }
        }
    }

    fn pv_register_callback(&mut self, kind: u16, flags: u16, address: u64) -> Result<(), Errno> {
        use keel_hypercall::abi::callback::*;
        let mask = flags & CALLBACKF_MASK_EVENTS != 0;
        let cb = &mut self.pv()?.callbacks;
        match kind {
            CALLBACKTYPE_EVENT => cb.event = address,
            CALLBACKTYPE_FAILSAFE => {
                cb.failsafe = address;
                cb.failsafe_disables_events = mask;
            }
            CALLBACKTYPE_SYSCALL => {
                cb.syscall = address;
                cb.syscall_disables_events = mask;
            }
            CALLBACKTYPE_SYSCALL32 => cb.syscall32 = address,
            // sysenter and NMI callbacks: not offered yet.
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    fn pv_unregister_callback(&mut self, kind: u16) -> Result<(), Errno> {
        use keel_hypercall::abi::callback::*;
        let cb = &mut self.pv()?.callbacks;
        match kind {
            CALLBACKTYPE_EVENT => cb.event = 0,
            CALLBACKTYPE_FAILSAFE => cb.failsafe = 0,
            CALLBACKTYPE_SYSCALL => cb.syscall = 0,
            CALLBACKTYPE_SYSCALL32 => cb.syscall32 = 0,
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    fn pv_set_gdt(&mut self, frames: &[u64], entries: u32) -> Result<(), Errno> {
        let r = crate::pv::set_gdt(self.d, self.v, self.arch, frames, entries);
        self.mmu(r)
    }

    fn pv_update_descriptor(&mut self, maddr: u64, desc: u64) -> Result<(), Errno> {
        let r = crate::pv::update_descriptor(self.d, self.arch, maddr, desc);
        self.mmu(r)
    }

    fn pv_vm_assist(&mut self, cmd: u32, kind: u32) -> Result<(), Errno> {
        use keel_hypercall::abi::xen::{VMASST_CMD_DISABLE, VMASST_CMD_ENABLE};
        let mut mem = self.d.mem.lock();
        let crate::paging::Paging::Pv(pv) = &mut mem.p2m else {
            return Err(Errno::ENOSYS);
        };
        // The dispatcher checked `kind` against Xen's 64-bit PV mask.
        let bit = 1u64.checked_shl(kind).ok_or(Errno::EINVAL)?;
        match cmd {
            VMASST_CMD_ENABLE => pv.vm_assist |= bit,
            VMASST_CMD_DISABLE => pv.vm_assist &= !bit,
            _ => return Err(Errno::ENOSYS),
        }
        Ok(())
    }

    /// Xen's `set_debugreg` for a 64-bit PV vCPU: DR0..DR3 must be addresses
    /// the guest may name (else -EPERM); DR6 and DR7 are 32 bits (else
    /// -EINVAL) with their reserved bits forced; I/O breakpoints (which need
    /// CR4.DE emulation) are -EPERM; DR4, DR5 and others -EINVAL.
    /// **Deviation**: DR7.GD is dropped (Xen emulates it; keel does not).
    fn pv_set_debugreg(&mut self, reg: u32, value: u64) -> Result<(), Errno> {
        const DR6_RESERVED_ONE: u64 = 0xffff_0ff0;
        // Bits 11, 12, 14, 15 and the upper half reserved; and GD (bit 13):
        // general detect would make keel's own MOV to DR7 on the way out a
        // #DB in ring 0.
        const DR7_RESERVED_ZERO: u64 = 0x0000_f800 | (0xffff_ffff << 32);
        const DR7_RESERVED_ONE: u64 = 0x400;
        let v = match reg {
            0..=3 => {
                if !keel_x86::pv::guest_addr_ok(value) {
                    return Err(Errno::EPERM);
                }
                value
            }
            6 => {
                if value >> 32 != 0 {
                    return Err(Errno::EINVAL);
                }
                value | DR6_RESERVED_ONE
            }
            7 => {
                if value >> 32 != 0 {
                    return Err(Errno::EINVAL);
                }
                // RW bits 10 (I/O) for any breakpoint.
                if (0..4).any(|i| (value >> (16 + 4 * i)) & 3 == 2) {
                    return Err(Errno::EPERM);
                }
                (value & !DR7_RESERVED_ZERO) | DR7_RESERVED_ONE
            }
            _ => return Err(Errno::EINVAL),
        };
        self.pv()?.debugreg[reg as usize] = v;
        Ok(())
    }

    fn pv_get_debugreg(&mut self, reg: u32) -> Result<u64, Errno> {
        match reg {
            0..=3 | 6 | 7 => Ok(self.pv()?.debugreg[reg as usize]),
            _ => Err(Errno::EINVAL),
        }
    }

    fn pv_fpu_taskswitch(&mut self, set: bool) -> Result<(), Errno> {
        self.pv()?.cr0_ts = set;
        Ok(())
    }

    fn pv_set_iopl(&mut self, iopl: u32) -> Result<(), Errno> {
        self.pv()?.iopl = (u64::from(iopl) & 3) << 12;
        Ok(())
    }

    fn is_privileged(&self) -> bool {
        self.d.privileged
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.d.copy_from_guest(&self.walk(), gva, buf).map_err(|e| {
            log::debug!(
                "d{}: copy_from_guest {gva:#x}+{}: {e}",
                self.d.id,
                buf.len()
            );
            Errno::EFAULT
        })
    }

    fn copy_to_guest(&mut self, gva: u64, data: &[u8]) -> Result<(), Errno> {
        self.d.copy_to_guest(&self.walk(), gva, data).map_err(|e| {
            log::debug!("d{}: copy_to_guest {gva:#x}+{}: {e}", self.d.id, data.len());
            Errno::EFAULT
        })
    }

    fn console_write(&mut self, bytes: &[u8]) {
        self.d.console.lock().push(self.d.id, bytes);
    }

    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno> {
        let gfn = Gfn::new(gpfn).ok_or(Errno::EINVAL)?;
        if gpfn >= self.d.ram_bytes / 4096 + 0x10_0000 {
            // Far beyond RAM: refuse rather than grow tables for a hostile gfn.
            return Err(Errno::EINVAL);
        }
        let mut mem = self.d.mem.lock();
        if let Some(old) = mem.shared_info_gfn.take()
            && old != gfn
        {
            // shared_info moves: the old gfn becomes a hole, as in Xen.
            let _ = mem.p2m.set_entry(old, None);
        }
        // The RAM frame that was at gpfn stays owned by the domain (freed when it
        // dies); the guest gave it up by asking for shared_info there.
        mem.p2m
            .set_entry(gfn, Some((self.d.shared_info, Access::RW)))
            .map_err(|e| {
                log::warn!("d{}: shared_info at gfn {gpfn:#x}: {e}", self.d.id);
                Errno::EINVAL
            })?;
        mem.shared_info_gfn = Some(gfn);
        drop(mem);
        self.d.flush_tlbs();
        Ok(())
    }

    fn memory_map_entry(&self, index: u32) -> Option<E820Entry> {
        self.d.memmap.get(index as usize).copied()
    }

    fn get_hvm_param(&self, index: u32) -> Result<u64, Errno> {
        self.d
            .hvm_params
            .lock()
            .get(index as usize)
            .copied()
            .ok_or(Errno::EINVAL)
    }

    fn set_hvm_param(&mut self, index: u32, value: u64) -> Result<(), Errno> {
        if index >= HVM_NR_PARAMS {
            return Err(Errno::EINVAL);
        }
        use keel_hypercall::abi::hvm::{HVM_PARAM_CALLBACK_IRQ, HvmCallbackVia};
        if index == HVM_PARAM_CALLBACK_IRQ {
            match HvmCallbackVia::decode(value) {
                HvmCallbackVia::Vector(v) if v >= 0x10 => self.d.set_callback_vector(Some(v)),
                HvmCallbackVia::Vector(_) => return Err(Errno::EINVAL),
                HvmCallbackVia::None => self.d.set_callback_vector(None),
                other => {
                    // GSI and PCI INTx need an emulated interrupt controller, which
                    // PVH domains do not have: events then go nowhere.
                    log::warn!(
                        "d{}: callback via {other:?} not supported; use a vector",
                        self.d.id
                    );
                    self.d.set_callback_vector(None);
                }
            }
        }
        self.d.hvm_params.lock()[index as usize] = value;
        Ok(())
    }

    fn vcpu_id(&self) -> u32 {
        self.v.id
    }

    fn max_vcpus(&self) -> u32 {
        self.d.vcpus.len() as u32
    }

    fn now_ns(&self) -> u64 {
        crate::clock::now()
    }

    fn domain_exists(&self, domid: u16) -> bool {
        self.dom(domid).is_some()
    }

    // ------------------------------------------------------------ event channels

    fn evtchn_alloc_unbound(&mut self, dom: u16, remote_dom: u16) -> Result<u32, Errno> {
        channels::alloc_unbound(self.d, dom, remote_dom)
    }

    fn evtchn_bind_interdomain(
        &mut self,
        remote_dom: u16,
        remote_port: EvtchnPort,
    ) -> Result<u32, Errno> {
        channels::bind_interdomain(self.d, remote_dom, remote_port, self.wakes)
    }

    fn evtchn_bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        channels::bind_virq(self.d, virq, vcpu)
    }

    fn evtchn_bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno> {
        self.d.evtchn.lock().bind_ipi(vcpu)
    }

    fn evtchn_bind_vcpu(&mut self, port: EvtchnPort, vcpu: u32) -> Result<(), Errno> {
        self.d.evtchn.lock().bind_vcpu(port, vcpu)
    }

    fn evtchn_close(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        channels::close(self.d, port)?;
        // The freed port's pending bit goes too (shared_info's bitmap, which
        // every vCPU of the domain shares); the FIFO table cleared its event
        // word's itself.
        if self.d.evtchn.lock().abi() == Abi::TwoLevel {
            let st = self.v.st.lock();
            two_level::clear_pending(&mut SharedWords::of(self.d, &st), port);
        }
        Ok(())
    }

    fn evtchn_send(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        channels::send(self.d, port, self.wakes)
    }

    fn evtchn_status(&self, dom: u16, port: EvtchnPort) -> Result<EvtchnStatusInfo, Errno> {
        use keel_evtchn::State;
        let s = channels::status(self.d, dom, port)?;
        Ok(EvtchnStatusInfo {
            state: match s.state {
                State::Free => EvtchnState::Closed,
                State::Unbound { remote } => EvtchnState::Unbound { remote_dom: remote },
                State::Interdomain {
                    remote_dom,
                    remote_port,
                } => EvtchnState::Interdomain {
                    remote_dom,
                    remote_port,
                },
                State::Virq { virq } => EvtchnState::Virq(virq),
                State::Ipi => EvtchnState::Ipi,
            },
            vcpu: s.vcpu,
        })
    }

    fn evtchn_unmask(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        let mut t = self.d.evtchn.lock();
        if let Some(mut f) = t.fifo_mut() {
            let r = f.unmask(port)?;
            crate::events::raise_fifo(self.d, port, r, self.wakes);
            return Ok(());
        }
        let vcpu = t.notify_vcpu(port).ok_or(Errno::EINVAL)?;
        let Some(target) = self.d.vcpu(vcpu) else {
            return Ok(());
        };
        let mut st = target.st.lock();
        if two_level::unmask(&mut SharedWords::of(self.d, &st), port, vcpu) {
            // The port was pending: its vCPU has an upcall now.
            if target.id != self.v.id {
                crate::events::wake_locked(target, &mut st, self.wakes);
                drop(st);
                target.notify();
            }
        }
        Ok(())
    }

    fn evtchn_reset(&mut self, dom: u16) -> Result<(), Errno> {
        if dom != self.d.id {
            // Xen resets another domain only while it is paused; keel has no
            // pausing yet.
            return Err(Errno::EINVAL);
        }
        channels::reset(self.d)?;
        // Back to 2-level if the domain was on FIFO (Xen's evtchn_reset); the
        // frames the FIFO state held are plain RAM again.
        drop(self.d.evtchn.lock().take_released_frames());
        let st = self.v.st.lock();
        let mut words = SharedWords::of(self.d, &st);
        for port in 0..keel_hypercall::abi::evtchn::EVTCHN_2L_NR_CHANNELS {
            two_level::clear_pending(&mut words, port);
        }
        Ok(())
    }

    fn sched_poll(&mut self, ports: &[EvtchnPort]) -> Result<PollResult, Errno> {
        // The event table's lock before the vCPU's (the lock order).
        let mut t = self.d.evtchn.lock();
        let st = self.v.st.lock();
        let words = SharedWords::of(self.d, &st);
        if words.has_upcall() && !words.upcalls_masked() {
            return Ok(PollResult::Ready);
        }
        for &p in ports {
            if !t.is_valid(p) {
                return Err(Errno::EINVAL);
            }
            let pending = match t.fifo_mut() {
                Some(f) => f.is_pending(p),
                None => two_level::is_pending(&words, p),
            };
            if pending {
                return Ok(PollResult::Ready);
            }
        }
        Ok(PollResult::Block)
    }

    fn evtchn_init_control(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
        // Xen's order: the arguments (the dispatcher checked them), then the
        // frame, then the table's state. The grant lock, held from the frame's
        // check until the table holds it, keeps decrease_reservation (which
        // holds it from its own check to the free) from freeing it between.
        self.d.evtchn.lock().check_init_control(vcpu, offset)?;
        let grants = self.d.grants.lock();
        let mfn = fifo_frame(self.d, &grants, gfn)?;
        let mut t = self.d.evtchn.lock();
        let st = self.v.st.lock();
        t.init_control(vcpu, offset, mfn.as_u64(), &SharedWords::of(self.d, &st))?;
        Ok(())
    }

    fn evtchn_expand_array(&mut self, gfn: u64) -> Result<(), Errno> {
        self.d.evtchn.lock().check_expand_array()?;
        // The grant lock as in `evtchn_init_control`.
        let grants = self.d.grants.lock();
        let mfn = fifo_frame(self.d, &grants, gfn)?;
        let mut t = self.d.evtchn.lock();
        drop(grants);
        for (port, r) in t.expand_array(mfn.as_u64())? {
            crate::events::raise_fifo(self.d, port, r, self.wakes);
        }
        Ok(())
    }

    fn evtchn_set_priority(&mut self, port: EvtchnPort, priority: u32) -> Result<(), Errno> {
        self.d.evtchn.lock().set_priority(port, priority)
    }

    // ------------------------------------------------------------ vCPUs, timers

    fn vcpu_initialise(&mut self, vcpu: u32, ctx: &VcpuHvmContext) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        crate::online::initialise(self.d, v, ctx)
    }

    fn pv_vcpu_initialise(
        &mut self,
        vcpu: u32,
        ctx: &keel_hypercall::abi::pv::VcpuGuestContext,
    ) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        crate::online::initialise_pv(self.d, v, ctx)
    }

    fn vcpu_up(&mut self, vcpu: u32) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        crate::online::up(self.d, v, self.wakes)
    }

    fn vcpu_down(&mut self, vcpu: u32) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        if crate::online::down(self.d, v) == crate::online::Down::LastVcpu {
            self.last_down = true;
        }
        Ok(())
    }

    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        self.d.vcpu(vcpu).is_some_and(crate::online::is_up)
    }

    fn vcpu_send_nmi(&mut self, vcpu: u32) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        crate::online::nmi(self.d, v, crate::online::NmiFrom::Hypercall, self.wakes);
        Ok(())
    }

    fn vcpu_runstate(&self, vcpu: u32) -> VcpuRunstateInfo {
        let Some(v) = self.d.vcpu(vcpu) else {
            return VcpuRunstateInfo::default();
        };
        let r = v.st.lock().runstate;
        let mut time = r.time;
        // Time in the current state counts up to now.
        if let Some(t) = time.get_mut(r.state as usize) {
            *t = t.wrapping_add(crate::clock::now().saturating_sub(r.entry_time));
        }
        VcpuRunstateInfo {
            state: r.state,
            pad: 0,
            state_entry_time: r.entry_time,
            time,
        }
    }

    fn register_runstate_area(
        &mut self,
        vcpu: u32,
        gva: u64,
        width: GuestWidth,
    ) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        let mut st = v.st.lock();
        st.runstate.area = (gva != 0).then_some(gva);
        st.runstate.area_compat = width == GuestWidth::Bits32;
        Ok(())
    }

    fn register_vcpu_time_area(&mut self, vcpu: u32, gva: u64) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        v.st.lock().time_area = (gva != 0).then_some(gva);
        Ok(())
    }

    fn vcpu_time_info(&self, vcpu: u32) -> VcpuTimeInfo {
        let v = self.d.vcpu(vcpu).unwrap_or(self.v);
        crate::events::current_time(self.d, &v.st.lock())
    }

    fn register_vcpu_info(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        if v.st.lock().vcpu_info_registered {
            return Err(Errno::EBUSY);
        }
        let mfn = {
            let grants = self.d.grants.lock();
            let mem = self.d.mem.lock();
            let (mfn, access) = own_frame(&mem, gfn).ok_or(Errno::EINVAL)?;
            if !access.write {
                return Err(Errno::EACCES);
            }
            drop(mem);
            if is_special_but_vcpu_info(self.d, &grants, mfn) {
                return Err(Errno::EINVAL);
            }
            mfn
        };
        let offset = u16::try_from(offset).map_err(|_| Errno::EINVAL)?;
        if !offset.is_multiple_of(8) || u64::from(offset) + 64 > 4096 {
            return Err(Errno::EINVAL);
        }
        let mut st = v.st.lock();
        if st.vcpu_info_registered {
            return Err(Errno::EBUSY);
        }
        let new = VcpuInfoAt { mfn, offset };
        let (old_f, old_off) = st.vcpu_info.frame();
        let (new_f, new_off) = new.frame();
        let mut bytes = [0u8; 64];
        old_f.read(old_off, &mut bytes);
        new_f.write(new_off, &bytes);
        st.vcpu_info = new;
        st.vcpu_info_registered = true;
        // Xen then marks every selector bit and the upcall pending, so the guest
        // rescans everything once.
        SharedWords::of(self.d, &st).mark_all_pending();
        let walk = (v.id == self.v.id).then(|| self.walk());
        crate::events::publish_time(self.d, &st, walk.as_ref());
        Ok(())
    }

    // The timers change under the event table's lock, which a tick's delivery
    // holds too (`run::fire_due_in`): once a set or stop returns, no tick
    // decided before it arrives after it.

    fn set_periodic_timer(&mut self, vcpu: u32, period_ns: u64) {
        if let Some(v) = self.d.vcpu(vcpu) {
            let _table = self.d.evtchn.lock();
            let mut st = v.st.lock();
            st.timers.periodic = (period_ns != 0)
                .then(|| (period_ns, crate::clock::now().saturating_add(period_ns)));
            st.timers.periodic_changes = st.timers.periodic_changes.wrapping_add(1);
            drop(st);
            crate::vcpu::deadlines_changed();
        }
    }

    fn set_singleshot_timer(&mut self, deadline_ns: u64) {
        let _table = self.d.evtchn.lock();
        let mut st = self.v.st.lock();
        st.timers.singleshot = Some(deadline_ns);
        st.timers.singleshot_changes = st.timers.singleshot_changes.wrapping_add(1);
        drop(st);
        crate::vcpu::deadlines_changed();
    }

    fn stop_singleshot_timer(&mut self) {
        let _table = self.d.evtchn.lock();
        let mut st = self.v.st.lock();
        st.timers.singleshot = None;
        st.timers.singleshot_changes = st.timers.singleshot_changes.wrapping_add(1);
    }

    // ------------------------------------------------------------ memory

    fn maximum_ram_page(&self) -> u64 {
        self.d.max_pages
    }

    fn current_reservation(&self, dom: u16) -> u64 {
        self.dom(dom).map_or(0, |d| d.mem.lock().tot_pages)
    }

    fn maximum_reservation(&self, dom: u16) -> u64 {
        self.dom(dom).map_or(0, |d| d.max_pages)
    }

    fn populate_physmap(&mut self, dom: u16, gfn: u64, order: u32) -> Result<(), Errno> {
        let count = 1u64.checked_shl(order).ok_or(Errno::EINVAL)?;
        let d = self.dom(dom).ok_or(Errno::ESRCH)?;
        let mut mem = d.mem.lock();
        if mem.tot_pages.saturating_add(count) > d.max_pages {
            return Err(Errno::ENOMEM);
        }
        if !gfn.is_multiple_of(count) || gfn.saturating_add(count) > mem.p2m_limit {
            return Err(Errno::EINVAL);
        }
        for g in gfn..gfn + count {
            if Gfn::new(g).and_then(|g| mem.p2m.translate(g)).is_some() {
                return Err(Errno::EEXIST);
            }
        }
        let mfn = mem.alloc_owned(count).ok_or(Errno::ENOMEM)?;
        let first = Gfn::new(gfn).ok_or(Errno::EINVAL)?;
        if let Err(e) = mem.p2m.map(first, mfn, count, Access::RWX) {
            log::warn!("d{}: populate {gfn:#x}+{count}: {e}", d.id);
            for i in 0..count {
                if let Some(m) = Mfn::new(mfn.as_u64() + i) {
                    mem.release_frame(m);
                }
            }
            return Err(Errno::ENOMEM);
        }
        mem.tot_pages += count;
        Ok(())
    }

    fn decrease_reservation(&mut self, dom: u16, gfn: u64, order: u32) -> Result<(), Errno> {
        let count = 1u64.checked_shl(order).ok_or(Errno::EINVAL)?;
        let end = gfn.checked_add(count).ok_or(Errno::EINVAL)?;
        let d = self.dom(dom).ok_or(Errno::ESRCH)?;
        for g in gfn..end {
            // Held until the frame is gone: a grant of it cannot be mapped
            // meanwhile.
            let grants = d.grants.lock();
            let mem = d.mem.lock();
            let (mfn, _) = own_frame(&mem, g).ok_or(Errno::ENOENT)?;
            if mem.owned_run(mfn).is_none() {
                return Err(Errno::ENOENT);
            }
            drop(mem);
            if is_special(&d, &grants, mfn) {
                return Err(Errno::ENOENT);
            }
            // A frame another domain has mapped stays until it is unmapped.
            if grants.is_frame_mapped(g) {
                return Err(Errno::EBUSY);
            }
            let mut mem = d.mem.lock();
            let gf = Gfn::new(g).ok_or(Errno::EINVAL)?;
            mem.p2m.set_entry(gf, None).map_err(|_| Errno::EINVAL)?;
            d.flush_tlbs();
            mem.release_frame(mfn);
            mem.tot_pages = mem.tot_pages.saturating_sub(1);
        }
        Ok(())
    }

    fn map_grant_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
        let gfn = Gfn::new(gpfn).ok_or(Errno::EINVAL)?;
        let mut grants = self.d.grants.lock();
        let mut mem = self.d.mem.lock();
        if gpfn >= mem.p2m_limit {
            return Err(Errno::EINVAL);
        }
        let frame =
            grants.map_table_frame(u64::from(idx), || mem.alloc_owned(1).map(|m| m.as_u64()))?;
        let mfn = Mfn::new(frame).ok_or(Errno::EINVAL)?;
        if let Some(old) = mem.grant_gfns.insert(idx, gpfn)
            && old != gpfn
            && let Some(o) = Gfn::new(old)
        {
            // The frame moves: its old place becomes a hole, as in Xen.
            let _ = mem.p2m.set_entry(o, None);
        }
        mem.foreign.remove(&gpfn);
        mem.p2m
            .set_entry(gfn, Some((mfn, Access::RW)))
            .map_err(|_| Errno::EINVAL)?;
        drop(mem);
        self.d.flush_tlbs();
        Ok(())
    }

    fn map_grant_status_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
        let gfn = Gfn::new(gpfn).ok_or(Errno::EINVAL)?;
        let mut grants = self.d.grants.lock();
        let mut mem = self.d.mem.lock();
        if gpfn >= mem.p2m_limit {
            return Err(Errno::EINVAL);
        }
        let frame = grants
            .map_status_frame(u64::from(idx), || mem.alloc_owned(1).map(|m| m.as_u64()))?;
        let mfn = Mfn::new(frame).ok_or(Errno::EINVAL)?;
        if let Some(old) = mem.status_gfns.insert(idx, gpfn)
            && old != gpfn
            && let Some(o) = Gfn::new(old)
        {
            // The frame moves: its old place becomes a hole, as in Xen.
            let _ = mem.p2m.set_entry(o, None);
        }
        mem.foreign.remove(&gpfn);
        mem.p2m
            .set_entry(gfn, Some((mfn, Access::RW)))
            .map_err(|_| Errno::EINVAL)?;
        drop(mem);
        self.d.flush_tlbs();
        Ok(())
    }

    // ------------------------------------------------------------ hvm_op

    fn set_evtchn_upcall_vector(&mut self, vcpu: u32, vector: u8) -> Result<(), Errno> {
        let v = self.d.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        v.st.lock().upcall_vector = Some(vector);
        // An upcall already pending goes in on the new vector.
        v.notify();
        Ok(())
    }

    fn hvm_flush_tlbs(&mut self) -> Result<(), Errno> {
        self.d.flush_tlbs();
        Ok(())
    }

    // ------------------------------------------------------------ grant tables

    fn gnttab_setup_table(&mut self, dom: u16, nr_frames: u32) -> Result<(), i16> {
        use keel_hypercall::abi::grant_table::GNTST_BAD_DOMAIN;
        let d = self.dom(dom).ok_or(GNTST_BAD_DOMAIN)?;
        let mut grants = d.grants.lock();
        grants
            .setup_table(nr_frames, || {
                d.mem.lock().alloc_owned(1).map(|m| m.as_u64())
            })
            .map(|_| ())
            .map_err(|e| e.code())
    }

    fn gnttab_shared_gfn(&self, dom: u16, idx: u32) -> u64 {
        self.dom(dom)
            .and_then(|d| d.mem.lock().grant_gfns.get(&idx).copied())
            .unwrap_or(u64::MAX)
    }

    fn gnttab_query_size(&self, dom: u16) -> GnttabSize {
        let (nr_frames, max_nr_frames) = self
            .dom(dom)
            .map_or((0, 0), |d| d.grants.lock().query_size());
        GnttabSize {
            nr_frames,
            max_nr_frames,
        }
    }

    fn gnttab_map_grant_ref(
        &mut self,
        dom: u16,
        gref: u32,
        flags: u32,
        host_addr: u64,
    ) -> Result<GnttabMapped, i16> {
        use keel_grant::pair;
        use keel_hypercall::abi::grant_table::*;
        let me = self.d.id;
        let readonly = flags & GNTMAP_READONLY != 0;
        let host_gfn = host_addr >> 12;
        let host = Gfn::new(host_gfn).ok_or(GNTST_BAD_VIRT_ADDR)?;
        let granter = self.dom(dom).ok_or(GNTST_BAD_DOMAIN)?;
        // Both grant locks (one if the caller maps its own grant), held until
        // the mapping is in the caller's p2m or undone.
        let (mut mine, mut theirs) = if dom == me {
            (self.d.grants.lock(), None)
        } else {
            let (a, b) = crate::domain::lock_pair(&self.d.grants, me, &granter.grants, dom);
            (a, Some(b))
        };
        // The mapping goes into a hole, or replaces one of the caller's plain RAM
        // frames (which stays the caller's); never over special or foreign pages.
        {
            let mem = self.d.mem.lock();
            if host_gfn >= mem.p2m_limit || mem.foreign.contains(&host_gfn) {
                return Err(GNTST_BAD_VIRT_ADDR);
            }
            let here = mem.p2m.translate(host);
            drop(mem);
            if let Some((m, _)) = here
                && is_special(self.d, &mine, m)
            {
                return Err(GNTST_BAD_VIRT_ADDR);
            }
        }
        let mapped = match theirs.as_deref_mut() {
            Some(t) => pair::map(&mut mine, t, gref, readonly, host_gfn, &mut GrantFrames),
            None => pair::map_own(&mut mine, gref, readonly, host_gfn, &mut GrantFrames),
        }
        .map_err(|e| e.code())?;
        let undo = |mine: &mut keel_grant::DomainGrants,
                    theirs: Option<&mut keel_grant::DomainGrants>| {
            let _ = match theirs {
                Some(t) => pair::unmap(mine, t, mapped.handle, host_gfn, &mut GrantFrames),
                None => pair::unmap_own(mine, mapped.handle, host_gfn, &mut GrantFrames),
            };
        };
        // The granted frame must be the granter's own RAM.
        let frame = own_frame(&granter.mem.lock(), mapped.frame);
        let granter_grants = theirs.as_deref().unwrap_or(&*mine);
        let mfn = match frame {
            Some((mfn, _)) if !is_special(&granter, granter_grants, mfn) => mfn,
            _ => {
                undo(&mut mine, theirs.as_deref_mut());
                return Err(GNTST_BAD_PAGE);
            }
        };
        let access = if readonly { Access::R } else { Access::RW };
        let mut mem = self.d.mem.lock();
        if mem.p2m.set_entry(host, Some((mfn, access))).is_err() {
            drop(mem);
            undo(&mut mine, theirs.as_deref_mut());
            return Err(GNTST_GENERAL_ERROR);
        }
        mem.foreign.insert(host_gfn);
        drop(mem);
        self.d.flush_tlbs();
        Ok(GnttabMapped {
            handle: mapped.handle,
            dev_bus_addr: 0,
        })
    }

    fn gnttab_unmap_grant_ref(&mut self, host_addr: u64, _dev_bus_addr: u64, handle: u32) -> i16 {
        use keel_grant::{Unmapped, pair};
        use keel_hypercall::abi::grant_table::*;
        let me = self.d.id;
        if host_addr == 0 {
            // Leaving the host mapping in place while dropping the pin would let
            // the granter free a frame still mapped here.
            return GNTST_GENERAL_ERROR;
        }
        let host_gfn = host_addr >> 12;
        // First look, under the caller's lock alone: which granter to lock too.
        // (Bound first: a guard in a `match` scrutinee would live through the
        // arms, which lock again.)
        let first = self.d.grants.lock().check_unmap(handle, host_gfn);
        let granter = match first {
            Ok(Unmapped::Revoked(_)) => {
                return gnttab_status(self.d.grants.lock().unmap_revoked(handle));
            }
            Ok(Unmapped::Live(info)) => info.granter,
            Err(e) => return e.code(),
        };
        let other = if granter == me {
            None
        } else {
            match registry::find(granter) {
                Some(g) => Some(g),
                // Gone: its death revoked the mapping meanwhile.
                None => {
                    return gnttab_status(self.d.grants.lock().unmap_revoked(handle));
                }
            }
        };
        let (mut mine, mut theirs) = match &other {
            None => (self.d.grants.lock(), None),
            Some(g) => {
                let (a, b) = crate::domain::lock_pair(&self.d.grants, me, &g.grants, granter);
                (a, Some(b))
            }
        };
        // Again under both locks: the mapping may have been revoked or replaced.
        let again = match theirs.as_deref() {
            Some(t) => pair::check_unmap(&mine, t, handle, host_gfn),
            None => pair::check_unmap_own(&mine, handle, host_gfn),
        };
        match again {
            Ok(Unmapped::Live(_)) => {
                let mut mem = self.d.mem.lock();
                if let Some(g) = Gfn::new(host_gfn) {
                    let _ = mem.p2m.set_entry(g, None);
                }
                mem.foreign.remove(&host_gfn);
                drop(mem);
                // Gone from every pCPU before the pin, and so the frame, goes.
                self.d.flush_tlbs();
            }
            Ok(Unmapped::Revoked(_)) => {
                return gnttab_status(mine.unmap_revoked(handle));
            }
            Err(e) => return e.code(),
        }
        let r = match theirs.as_deref_mut() {
            Some(t) => pair::unmap(&mut mine, t, handle, host_gfn, &mut GrantFrames),
            None => pair::unmap_own(&mut mine, handle, host_gfn, &mut GrantFrames),
        };
        gnttab_status(r)
    }

    fn gnttab_copy(&mut self, op: &GnttabCopyOp) -> i16 {
        use keel_grant::{Acquired, CopyGrant, GntSt};
        use keel_hypercall::abi::grant_table::*;
        let me = self.d.id;
        // Each grant end acquired: its granter, ref and direction, and for a
        // transitive grant the domain whose grant it passed on (held until the
        // copy ends, as is the granter).
        let mut held: [Option<CopyPin>; 2] = [None, None];
        // Each end: the domain whose p2m translates the gfn, and what of the
        // page a grant allows (a gmfn end: the whole page).
        let mut ends = [(0u16, CopyGrant::page(0)); 2];
        let mut status = GNTST_OKAY;
        for (i, (end, write)) in [(op.source, false), (op.dest, true)]
            .into_iter()
            .enumerate()
        {
            match end.target {
                GnttabCopyTarget::Gref { domid, gref } => {
                    let Some(g) = self.dom(domid) else {
                        status = GNTST_BAD_DOMAIN;
                        break;
                    };
                    // The granter's lock alone, for the pin (a copy never holds
                    // two grant locks).
                    let pinned = g.grants.lock().acquire(me, gref, write, &mut GrantFrames);
                    let (owner, grant, hop_dom) = match pinned {
                        Ok(Acquired::Page(cg)) => (domid, Ok(cg), None),
                        Ok(Acquired::Transitive(hop)) => {
                            // The hop's lock alone, then the granter's again
                            // (keel_grant's transitive protocol).
                            let t = self.dom(hop.domid);
                            let target = t.as_ref().map_or(Err(GntSt::GeneralError), |t| {
                                t.grants
                                    .lock()
                                    .acquire_target(domid, hop.gref, write, &mut GrantFrames)
                            });
                            let r = g.grants.lock().finish_transitive(
                                me,
                                gref,
                                write,
                                target,
                                &mut GrantFrames,
                            );
                            (hop.domid, r, t)
                        }
                        Err(e) => (domid, Err(e), None),
                    };
                    match grant {
                        Ok(cg) => {
                            held[i] = Some(CopyPin {
                                granter: g,
                                gref,
                                write,
                                hop: hop_dom,
                            });
                            ends[i] = (owner, cg);
                        }
                        Err(e) => {
                            status = e.code();
                            break;
                        }
                    }
                }
                GnttabCopyTarget::Gmfn(gfn) => ends[i] = (me, CopyGrant::page(gfn)),
            }
        }
        // What a grant allows: a version 2 sub-page grant's range (Xen checks
        // it once both ends are acquired, source first).
        if status == GNTST_OKAY {
            let ranges = [
                (op.source.target, ends[0].1, op.source.offset),
                (op.dest.target, ends[1].1, op.dest.offset),
            ];
            for (target, grant, offset) in ranges {
                if matches!(target, GnttabCopyTarget::Gref { .. })
                    && let Err(e) = grant.check_range(offset, op.len)
                {
                    status = e.code();
                    break;
                }
            }
        }
        if status == GNTST_OKAY {
            let resolve = |(dom, grant): (u16, CopyGrant)| {
                let d = self.dom(dom)?;
                let (mfn, access) = own_frame(&d.mem.lock(), grant.frame)?;
                (dom == me || !is_special(&d, &d.grants.lock(), mfn)).then_some((mfn, access))
            };
            match (resolve(ends[0]), resolve(ends[1])) {
                (Some((src, _)), Some((dst, acc))) if acc.write => {
                    copy_frames(src, op.source.offset, dst, op.dest.offset, op.len);
                }
                _ => status = GNTST_BAD_PAGE,
            }
        }
        for pin in held.into_iter().flatten() {
            let hop = pin
                .granter
                .grants
                .lock()
                .release(me, pin.gref, pin.write, &mut GrantFrames);
            if let (Ok(Some(hop)), Some(t)) = (hop, pin.hop) {
                let _ = t.grants.lock().release_target(
                    pin.granter.id,
                    hop.gref,
                    pin.write,
                    &mut GrantFrames,
                );
            }
        }
        status
    }

    fn gnttab_set_version(&mut self, version: u32) -> Result<(), Errno> {
        let mut grants = self.d.grants.lock();
        let reply = grants.set_version(version, &mut GrantFrames, || {
            self.d.mem.lock().alloc_owned(1).map(|m| m.as_u64())
        });
        if !reply.freed.is_empty() {
            // Out of the p2m (where the guest placed them) and every pCPU's TLB
            // before the frames go back (the grant lock keeps them meanwhile).
            let mut mem = self.d.mem.lock();
            let placed: alloc::vec::Vec<(u32, u64)> =
                mem.status_gfns.iter().map(|(&i, &g)| (i, g)).collect();
            for (idx, gfn) in placed {
                let here = Gfn::new(gfn).and_then(|g| mem.p2m.translate(g));
                if here.is_some_and(|(m, _)| reply.freed.contains(&m.as_u64())) {
                    if let Some(g) = Gfn::new(gfn) {
                        let _ = mem.p2m.set_entry(g, None);
                    }
                    mem.status_gfns.remove(&idx);
                }
            }
            drop(mem);
            self.d.flush_tlbs();
            let mut mem = self.d.mem.lock();
            for f in &reply.freed {
                if let Some(m) = Mfn::new(*f) {
                    mem.release_frame(m);
                }
            }
        }
        reply.result
    }

    fn gnttab_get_version(&self, dom: u16) -> u32 {
        self.dom(dom).map_or(1, |d| d.grants.lock().get_version())
    }

    fn gnttab_get_status_frames(&mut self, dom: u16, nr_frames: u32) -> Result<(), i16> {
        use keel_hypercall::abi::grant_table::GNTST_BAD_DOMAIN;
        let d = self.dom(dom).ok_or(GNTST_BAD_DOMAIN)?;
        let g = d.grants.lock();
        g.get_status_frames(nr_frames)
            .map(|_| ())
            .map_err(keel_grant::GntSt::code)
    }

    fn gnttab_status_gfn(&self, dom: u16, idx: u32) -> u64 {
        self.dom(dom)
            .and_then(|d| d.mem.lock().status_gfns.get(&idx).copied())
            .unwrap_or(u64::MAX)
    }

    fn gnttab_swap_grant_ref(&mut self, ref_a: u32, ref_b: u32) -> Result<i16, Errno> {
        let r = self
            .d
            .grants
            .lock()
            .swap_grant_ref(ref_a, ref_b, &mut GrantFrames);
        Ok(keel_grant::GntSt::status_of(&r))
    }

    fn version(&self) -> VersionInfo<'_> {
        VersionInfo {
            major: crate::XEN_MAJOR,
            minor: crate::XEN_MINOR,
            extraversion: b".0-keel",
            compiler: b"rustc",
            compile_by: b"keel",
            compile_domain: b"keel",
            compile_date: b"",
            capabilities: CAPABILITIES,
            changeset: concat!("keel ", env!("CARGO_PKG_VERSION")).as_bytes(),
            commandline: crate::hypervisor_cmdline().as_bytes(),
            build_id: b"",
            features: [features(self.d.privileged)],
            handle: Default::default(),
        }
    }
}

/// XENVER_get_features submap 0 for PVH guests (Xen's HVM set, minus what keel
/// does not do yet): an auto-translated physmap, supervisor mode kernel,
/// HVM callback vector, a pvclock safe to use (keel's TSC is invariant and the
/// parameters never change), and XENFEAT_dom0 for the hardware domain.
fn features(privileged: bool) -> u32 {
    use keel_hypercall::abi::features::*;
    (u32::from(privileged) << XENFEAT_DOM0)
        | (1 << XENFEAT_WRITABLE_PAGE_TABLES)
        | (1 << XENFEAT_WRITABLE_DESCRIPTOR_TABLES)
        | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
        | (1 << XENFEAT_SUPERVISOR_MODE_KERNEL)
        | (1 << XENFEAT_HVM_CALLBACK_VECTOR)
        | (1 << XENFEAT_HVM_SAFE_PVCLOCK)
}
