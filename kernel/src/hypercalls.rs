//! keel's side of the hypercall dispatcher: `keel_hypercall::Domain` for a running
//! domain. Guest pointers become memory only through the domain's checked copies
//! (its page tables, then its p2m); any failure is -EFAULT to the guest.

use keel_arch::hvm::HvmVcpu as _;
use keel_hypercall::abi::Errno;
use keel_hypercall::abi::hvm::HVM_NR_PARAMS;
use keel_hypercall::abi::memory::E820Entry;
use keel_hypercall::dispatch::{Domain as HcDomain, VersionInfo};
use keel_mm::addr::Gfn;
use keel_mm::p2m::Access;

use crate::domain::Domain;
use crate::world::{SharedWords, World};
use keel_evtchn::two_level;
use keel_hypercall::abi::evtchn::EvtchnPort;
use keel_hypercall::abi::vcpu::VcpuRunstateInfo;
use keel_hypercall::abi::xen::VcpuTimeInfo;
use keel_hypercall::dispatch::{
    EvtchnState, EvtchnStatusInfo, GnttabCopyOp, GnttabCopyTarget, GnttabMapped, GnttabSize,
    GuestWidth, PollResult, VcpuHvmRegs,
};
use keel_mm::addr::Mfn;

/// The capabilities keel reports (XENVER_capabilities): HVM-style guests, 32 and
/// 64-bit, which is what PVH guests look for.
const CAPABILITIES: &[u8] = b"hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64";

/// The hypercall context: the calling domain, and the rest of the machine (the
/// caller is out of `w.doms` while it runs).
pub struct Ctx<'a> {
    pub d: &'a mut Domain,
    pub w: &'a mut World,
}

impl Ctx<'_> {
    /// Domain `dom`: the caller or one in the map.
    fn dom_mut(&mut self, dom: u16) -> Option<&mut Domain> {
        if dom == self.d.id {
            Some(&mut *self.d)
        } else {
            self.w.doms.get_mut(&dom).map(|b| &mut **b)
        }
    }

    fn dom(&self, dom: u16) -> Option<&Domain> {
        if dom == self.d.id {
            Some(&*self.d)
        } else {
            self.w.doms.get(&dom).map(|b| &**b)
        }
    }

    /// Delivers what an event-channel operation asks to be notified.
    fn notify(&mut self, n: Option<keel_evtchn::Notify>) {
        if let Some(n) = n {
            self.w.deliver(self.d, n);
        }
    }
}

/// Whether `mfn` is one of `d`'s frames that are not plain RAM: shared_info, the
/// console ring, a grant-table frame, or the page holding its vcpu_info. These
/// never leave the domain while it lives.
fn is_special(d: &Domain, w: &World, mfn: Mfn) -> bool {
    mfn == d.shared_info
        || d.console_ring.is_some_and(|r| r.mfn == mfn)
        || (d.vcpu_info_registered && d.vcpu_info.mfn == mfn)
        || w.grants
            .table_frames(d.id)
            .is_some_and(|f| f.contains(&mfn.as_u64()))
}

/// Translates `gfn` of `d` to a frame the domain owns as RAM (not a foreign
/// mapping), with its access.
fn own_frame(d: &Domain, gfn: u64) -> Option<(Mfn, Access)> {
    if d.foreign.contains(&gfn) {
        return None;
    }
    d.p2m.translate(Gfn::new(gfn)?)
}

fn copy_frames(src: Mfn, src_off: u16, dst: Mfn, dst_off: u16, len: u16) {
    let s = keel_mm::layout::directmap_va(src.hpa()) + u64::from(src_off);
    let t = keel_mm::layout::directmap_va(dst.hpa()) + u64::from(dst_off);
    // SAFETY: both frames are RAM mapped by the direct map (p2m translations of
    // domains' own frames), and the dispatcher checked offset + len <= 4096 for
    // each end; `copy` allows the ranges to overlap (a copy within one frame).
    unsafe { core::ptr::copy(s as *const u8, t as *mut u8, usize::from(len)) };
}

impl HcDomain for Ctx<'_> {
    fn domid(&self) -> u16 {
        self.d.id
    }

    fn is_privileged(&self) -> bool {
        self.d.privileged
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.d.copy_from_guest(gva, buf).map_err(|e| {
            log::debug!(
                "d{}: copy_from_guest {gva:#x}+{}: {e}",
                self.d.id,
                buf.len()
            );
            Errno::EFAULT
        })
    }

    fn copy_to_guest(&mut self, gva: u64, data: &[u8]) -> Result<(), Errno> {
        let id = self.d.id;
        self.d.copy_to_guest(gva, data).map_err(|e| {
            log::debug!("d{id}: copy_to_guest {gva:#x}+{}: {e}", data.len());
            Errno::EFAULT
        })
    }

    fn console_write(&mut self, bytes: &[u8]) {
        let id = self.d.id;
        self.d.console.push(id, bytes);
    }

    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno> {
        let gfn = Gfn::new(gpfn).ok_or(Errno::EINVAL)?;
        if gpfn >= self.d.ram_bytes / 4096 + 0x10_0000 {
            // Far beyond RAM: refuse rather than grow tables for a hostile gfn.
            return Err(Errno::EINVAL);
        }
        if let Some(old) = self.d.shared_info_gfn.take()
            && old != gfn
        {
            // shared_info moves: the old gfn becomes a hole, as in Xen.
            let _ = self.d.p2m.set_entry(old, None);
        }
        // The RAM frame that was at gpfn stays owned by the domain (freed when it
        // dies); the guest gave it up by asking for shared_info there.
        self.d
            .p2m
            .set_entry(gfn, Some((self.d.shared_info, Access::RW)))
            .map_err(|e| {
                log::warn!("d{}: shared_info at gfn {gpfn:#x}: {e}", self.d.id);
                Errno::EINVAL
            })?;
        self.d.shared_info_gfn = Some(gfn);
        self.d.vcpu.flush_guest_tlb();
        Ok(())
    }

    fn memory_map_entry(&self, index: u32) -> Option<E820Entry> {
        self.d.memmap.get(index as usize).copied()
    }

    fn get_hvm_param(&self, index: u32) -> Result<u64, Errno> {
        self.d
            .hvm_params
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
                HvmCallbackVia::Vector(v) if v >= 0x10 => self.d.upcall_vector = Some(v),
                HvmCallbackVia::Vector(_) => return Err(Errno::EINVAL),
                HvmCallbackVia::None => self.d.upcall_vector = None,
                other => {
                    // GSI and PCI INTx need an emulated interrupt controller, which
                    // PVH domains do not have: events then go nowhere.
                    log::warn!(
                        "d{}: callback via {other:?} not supported; use a vector",
                        self.d.id
                    );
                    self.d.upcall_vector = None;
                }
            }
        }
        self.d.hvm_params[index as usize] = value;
        Ok(())
    }

    fn vcpu_id(&self) -> u32 {
        0
    }

    fn max_vcpus(&self) -> u32 {
        1
    }

    fn now_ns(&self) -> u64 {
        crate::clock::now()
    }

    fn domain_exists(&self, domid: u16) -> bool {
        self.dom(domid).is_some()
    }

    // ------------------------------------------------------------ event channels

    fn evtchn_alloc_unbound(&mut self, dom: u16, remote_dom: u16) -> Result<u32, Errno> {
        let me = self.d.id;
        self.w
            .evtchn
            .alloc_unbound(me, self.d.privileged, dom, remote_dom)
    }

    fn evtchn_bind_interdomain(
        &mut self,
        remote_dom: u16,
        remote_port: EvtchnPort,
    ) -> Result<u32, Errno> {
        let me = self.d.id;
        let (port, n) = self
            .w
            .evtchn
            .bind_interdomain(me, remote_dom, remote_port)?;
        self.notify(Some(n));
        Ok(port)
    }

    fn evtchn_bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        let me = self.d.id;
        self.w.evtchn.bind_virq(me, virq, vcpu)
    }

    fn evtchn_bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno> {
        let me = self.d.id;
        self.w.evtchn.bind_ipi(me, vcpu)
    }

    fn evtchn_bind_vcpu(&mut self, port: EvtchnPort, vcpu: u32) -> Result<(), Errno> {
        let me = self.d.id;
        self.w.evtchn.bind_vcpu(me, port, vcpu)
    }

    fn evtchn_close(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        let me = self.d.id;
        self.w.evtchn.close(me, port)?;
        two_level::clear_pending(&mut SharedWords::of(self.d), port);
        Ok(())
    }

    fn evtchn_send(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        let me = self.d.id;
        let n = self.w.evtchn.send(me, port)?;
        self.notify(n);
        Ok(())
    }

    fn evtchn_status(&self, dom: u16, port: EvtchnPort) -> Result<EvtchnStatusInfo, Errno> {
        use keel_evtchn::State;
        let s = self
            .w
            .evtchn
            .status(self.d.id, self.d.privileged, dom, port)?;
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
        let me = self.d.id;
        if !self.w.evtchn.is_valid(me, port) {
            return Err(Errno::EINVAL);
        }
        let vcpu = self.w.evtchn.notify_vcpu(me, port).unwrap_or(0);
        // A kick needs nothing more: the caller is running, and the upcall goes in
        // at its next entry.
        two_level::unmask(&mut SharedWords::of(self.d), port, vcpu);
        Ok(())
    }

    fn evtchn_reset(&mut self, dom: u16) -> Result<(), Errno> {
        if dom != self.d.id {
            // Xen resets another domain only while it is paused; keel has no
            // pausing yet.
            return Err(Errno::EINVAL);
        }
        self.w.evtchn.reset(dom, self.d.privileged, dom)?;
        let mut words = SharedWords::of(self.d);
        for port in 0..keel_hypercall::abi::evtchn::EVTCHN_2L_NR_CHANNELS {
            two_level::clear_pending(&mut words, port);
        }
        Ok(())
    }

    fn sched_poll(&mut self, ports: &[EvtchnPort]) -> Result<PollResult, Errno> {
        let me = self.d.id;
        let words = SharedWords::of(self.d);
        if words.has_upcall() && !words.upcalls_masked() {
            return Ok(PollResult::Ready);
        }
        for &p in ports {
            if !self.w.evtchn.is_valid(me, p) {
                return Err(Errno::EINVAL);
            }
            if two_level::is_pending(&words, p) {
                return Ok(PollResult::Ready);
            }
        }
        Ok(PollResult::Block)
    }

    // ------------------------------------------------------------ vCPUs, timers

    fn vcpu_initialise(&mut self, _vcpu: u32, _regs: &VcpuHvmRegs) -> Result<(), Errno> {
        // One vCPU per domain for now: there is no second one to initialise.
        Err(Errno::ENOSYS)
    }

    fn vcpu_up(&mut self, _vcpu: u32) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    fn vcpu_down(&mut self, _vcpu: u32) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        vcpu == 0
    }

    fn vcpu_runstate(&self, _vcpu: u32) -> VcpuRunstateInfo {
        let r = self.d.runstate;
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
        _vcpu: u32,
        gva: u64,
        width: GuestWidth,
    ) -> Result<(), Errno> {
        self.d.runstate.area = (gva != 0).then_some(gva);
        self.d.runstate.area_compat = width == GuestWidth::Bits32;
        Ok(())
    }

    fn register_vcpu_time_area(&mut self, _vcpu: u32, gva: u64) -> Result<(), Errno> {
        self.d.time_area = (gva != 0).then_some(gva);
        Ok(())
    }

    fn vcpu_time_info(&self, _vcpu: u32) -> VcpuTimeInfo {
        crate::world::current_time(self.d)
    }

    fn register_vcpu_info(&mut self, _vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
        if self.d.vcpu_info_registered {
            return Err(Errno::EBUSY);
        }
        let (mfn, access) = own_frame(self.d, gfn).ok_or(Errno::EINVAL)?;
        if !access.write {
            return Err(Errno::EACCES);
        }
        if is_special(self.d, self.w, mfn) {
            return Err(Errno::EINVAL);
        }
        let offset = u16::try_from(offset).map_err(|_| Errno::EINVAL)?;
        if !offset.is_multiple_of(8) || u64::from(offset) + 64 > 4096 {
            return Err(Errno::EINVAL);
        }
        let old = self.d.vcpu_info_va();
        let new = keel_mm::layout::directmap_va(mfn.hpa()) + u64::from(offset);
        // SAFETY: both are 64-byte vcpu_info areas inside frames the domain owns
        // (checked above; the old one is shared_info's slot 0 or a page checked
        // the same way), mapped by the direct map; they may overlap only if equal.
        unsafe { core::ptr::copy(old as *const u8, new as *mut u8, 64) };
        self.d.vcpu_info = crate::domain::VcpuInfoAt { mfn, offset };
        self.d.vcpu_info_registered = true;
        // Xen then marks every selector bit and the upcall pending, so the guest
        // rescans everything once.
        let mut words = SharedWords::of(self.d);
        words.mark_all_pending();
        crate::world::publish_time(self.d);
        Ok(())
    }

    fn set_periodic_timer(&mut self, _vcpu: u32, period_ns: u64) {
        self.d.timers.periodic =
            (period_ns != 0).then(|| (period_ns, crate::clock::now().saturating_add(period_ns)));
    }

    fn set_singleshot_timer(&mut self, deadline_ns: u64) {
        self.d.timers.singleshot = Some(deadline_ns);
    }

    fn stop_singleshot_timer(&mut self) {
        self.d.timers.singleshot = None;
    }

    // ------------------------------------------------------------ memory

    fn maximum_ram_page(&self) -> u64 {
        self.d.max_pages
    }

    fn current_reservation(&self, dom: u16) -> u64 {
        self.dom(dom).map_or(0, |d| d.tot_pages)
    }

    fn maximum_reservation(&self, dom: u16) -> u64 {
        self.dom(dom).map_or(0, |d| d.max_pages)
    }

    fn populate_physmap(&mut self, dom: u16, gfn: u64, order: u32) -> Result<(), Errno> {
        let count = 1u64.checked_shl(order).ok_or(Errno::EINVAL)?;
        let d = self.dom_mut(dom).ok_or(Errno::ESRCH)?;
        if d.tot_pages.saturating_add(count) > d.max_pages {
            return Err(Errno::ENOMEM);
        }
        if !gfn.is_multiple_of(count) || gfn.saturating_add(count) > d.p2m_limit() {
            return Err(Errno::EINVAL);
        }
        for g in gfn..gfn + count {
            if Gfn::new(g).and_then(|g| d.p2m.translate(g)).is_some() {
                return Err(Errno::EEXIST);
            }
        }
        let mfn = d.alloc_owned(count).ok_or(Errno::ENOMEM)?;
        let first = Gfn::new(gfn).ok_or(Errno::EINVAL)?;
        if let Err(e) = d.p2m.map(first, mfn, count, Access::RWX) {
            log::warn!("d{}: populate {gfn:#x}+{count}: {e}", d.id);
            for i in 0..count {
                if let Some(m) = Mfn::new(mfn.as_u64() + i) {
                    d.release_frame(m);
                }
            }
            return Err(Errno::ENOMEM);
        }
        d.tot_pages += count;
        Ok(())
    }

    fn decrease_reservation(&mut self, dom: u16, gfn: u64, order: u32) -> Result<(), Errno> {
        let count = 1u64.checked_shl(order).ok_or(Errno::EINVAL)?;
        let end = gfn.checked_add(count).ok_or(Errno::EINVAL)?;
        for g in gfn..end {
            let w = &*self.w;
            let d = if dom == self.d.id {
                &*self.d
            } else {
                w.doms.get(&dom).map(|b| &**b).ok_or(Errno::ESRCH)?
            };
            let (mfn, _) = own_frame(d, g).ok_or(Errno::ENOENT)?;
            if is_special(d, w, mfn) || d.owned_run(mfn).is_none() {
                return Err(Errno::ENOENT);
            }
            // A frame another domain has mapped stays until it is unmapped.
            if w.grants.is_frame_mapped(dom, g) {
                return Err(Errno::EBUSY);
            }
            let d = self.dom_mut(dom).ok_or(Errno::ESRCH)?;
            let gf = Gfn::new(g).ok_or(Errno::EINVAL)?;
            d.p2m.set_entry(gf, None).map_err(|_| Errno::EINVAL)?;
            d.vcpu.flush_guest_tlb();
            d.release_frame(mfn);
            d.tot_pages = d.tot_pages.saturating_sub(1);
        }
        Ok(())
    }

    fn map_grant_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
        let me = self.d.id;
        let gfn = Gfn::new(gpfn).ok_or(Errno::EINVAL)?;
        if gpfn >= self.d.p2m_limit() {
            return Err(Errno::EINVAL);
        }
        let d = &mut *self.d;
        let frame = self
            .w
            .grants
            .map_table_frame(me, u64::from(idx), || d.alloc_owned(1).map(|m| m.as_u64()))?;
        let mfn = Mfn::new(frame).ok_or(Errno::EINVAL)?;
        if let Some(old) = self.d.grant_gfns.insert(idx, gpfn)
            && old != gpfn
            && let Some(o) = Gfn::new(old)
        {
            // The frame moves: its old place becomes a hole, as in Xen.
            let _ = self.d.p2m.set_entry(o, None);
        }
        self.d.foreign.remove(&gpfn);
        self.d
            .p2m
            .set_entry(gfn, Some((mfn, Access::RW)))
            .map_err(|_| Errno::EINVAL)?;
        self.d.vcpu.flush_guest_tlb();
        Ok(())
    }

    // ------------------------------------------------------------ hvm_op

    fn set_evtchn_upcall_vector(&mut self, _vcpu: u32, vector: u8) -> Result<(), Errno> {
        self.d.upcall_vector = Some(vector);
        Ok(())
    }

    // ------------------------------------------------------------ grant tables

    fn gnttab_setup_table(&mut self, dom: u16, nr_frames: u32) -> Result<(), i16> {
        use keel_hypercall::abi::grant_table::GNTST_BAD_DOMAIN;
        let w = &mut *self.w;
        let d: &mut Domain = if dom == self.d.id {
            &mut *self.d
        } else {
            w.doms
                .get_mut(&dom)
                .map(|b| &mut **b)
                .ok_or(GNTST_BAD_DOMAIN)?
        };
        w.grants
            .setup_table(dom, nr_frames, || d.alloc_owned(1).map(|m| m.as_u64()))
            .map(|_| ())
            .map_err(|e| e.code())
    }

    fn gnttab_shared_gfn(&self, dom: u16, idx: u32) -> u64 {
        self.dom(dom)
            .and_then(|d| d.grant_gfns.get(&idx).copied())
            .unwrap_or(u64::MAX)
    }

    fn gnttab_query_size(&self, dom: u16) -> GnttabSize {
        let (nr_frames, max_nr_frames) = self.w.grants.query_size(dom).unwrap_or((0, 0));
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
        use keel_hypercall::abi::grant_table::*;
        let me = self.d.id;
        let readonly = flags & GNTMAP_READONLY != 0;
        let host_gfn = host_addr >> 12;
        let host = Gfn::new(host_gfn).ok_or(GNTST_BAD_VIRT_ADDR)?;
        // The mapping goes into a hole, or replaces one of the caller's plain RAM
        // frames (which stays the caller's); never over special or foreign pages.
        if host_gfn >= self.d.p2m_limit() || self.d.foreign.contains(&host_gfn) {
            return Err(GNTST_BAD_VIRT_ADDR);
        }
        if let Some((m, _)) = self.d.p2m.translate(host)
            && is_special(self.d, self.w, m)
        {
            return Err(GNTST_BAD_VIRT_ADDR);
        }
        if self.dom(dom).is_none() {
            return Err(GNTST_BAD_DOMAIN);
        }
        let mapped = self
            .w
            .grants
            .map(me, dom, gref, readonly, host_gfn, &mut GrantFrames)
            .map_err(|e| e.code())?;
        let undo = |w: &mut World| {
            let _ = w
                .grants
                .unmap(me, mapped.handle, host_gfn, &mut GrantFrames);
        };
        // The granted frame must be the granter's own RAM.
        let frame = self
            .dom(dom)
            .and_then(|g| own_frame(g, mapped.frame).map(|f| (f, g)));
        let mfn = match frame {
            Some(((mfn, _), g)) if !is_special(g, self.w, mfn) => mfn,
            _ => {
                undo(self.w);
                return Err(GNTST_BAD_PAGE);
            }
        };
        let access = if readonly { Access::R } else { Access::RW };
        if self.d.p2m.set_entry(host, Some((mfn, access))).is_err() {
            undo(self.w);
            return Err(GNTST_GENERAL_ERROR);
        }
        self.d.foreign.insert(host_gfn);
        self.d.vcpu.flush_guest_tlb();
        Ok(GnttabMapped {
            handle: mapped.handle,
            dev_bus_addr: 0,
        })
    }

    fn gnttab_unmap_grant_ref(&mut self, host_addr: u64, _dev_bus_addr: u64, handle: u32) -> i16 {
        use keel_grant::Unmapped;
        use keel_hypercall::abi::grant_table::*;
        let me = self.d.id;
        if host_addr == 0 {
            // Leaving the host mapping in place while dropping the pin would let
            // the granter free a frame still mapped here.
            return GNTST_GENERAL_ERROR;
        }
        let host_gfn = host_addr >> 12;
        match self.w.grants.check_unmap(me, handle, host_gfn) {
            Ok(Unmapped::Live(_)) => {
                if let Some(g) = Gfn::new(host_gfn) {
                    let _ = self.d.p2m.set_entry(g, None);
                }
                self.d.foreign.remove(&host_gfn);
                self.d.vcpu.flush_guest_tlb();
            }
            Ok(Unmapped::Revoked(_)) => {}
            Err(e) => return e.code(),
        }
        match self.w.grants.unmap(me, handle, host_gfn, &mut GrantFrames) {
            Ok(_) => GNTST_OKAY,
            Err(e) => e.code(),
        }
    }

    fn gnttab_copy(&mut self, op: &GnttabCopyOp) -> i16 {
        use keel_hypercall::abi::grant_table::*;
        let me = self.d.id;
        // Each end: (domain, gfn, acquired grant to release).
        let mut held: [Option<(u16, u32, bool)>; 2] = [None, None];
        let mut ends = [(0u16, 0u64); 2];
        let mut status = GNTST_OKAY;
        for (i, (end, write)) in [(op.source, false), (op.dest, true)]
            .into_iter()
            .enumerate()
        {
            match end.target {
                GnttabCopyTarget::Gref { domid, gref } => {
                    match self
                        .w
                        .grants
                        .acquire(me, domid, gref, write, &mut GrantFrames)
                    {
                        Ok(frame) => {
                            held[i] = Some((domid, gref, write));
                            ends[i] = (domid, frame);
                        }
                        Err(e) => {
                            status = e.code();
                            break;
                        }
                    }
                }
                GnttabCopyTarget::Gmfn(gfn) => ends[i] = (me, gfn),
            }
        }
        if status == GNTST_OKAY {
            let resolve = |(dom, gfn): (u16, u64)| {
                let d = self.dom(dom)?;
                let (mfn, access) = own_frame(d, gfn)?;
                (!is_special(d, self.w, mfn) || dom == me).then_some((mfn, access))
            };
            match (resolve(ends[0]), resolve(ends[1])) {
                (Some((src, _)), Some((dst, acc))) if acc.write => {
                    copy_frames(src, op.source.offset, dst, op.dest.offset, op.len);
                }
                _ => status = GNTST_BAD_PAGE,
            }
        }
        for (dom, gref, write) in held.into_iter().flatten() {
            let _ = self
                .w
                .grants
                .release(me, dom, gref, write, &mut GrantFrames);
        }
        status
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

/// Grant-table frames, reached through the direct map: the frame handles the grant
/// crate holds are machine frame numbers of frames keel allocated for a domain's
/// table (so they are RAM, and live while the table lists them).
pub struct GrantFrames;

impl GrantFrames {
    fn va(frame: u64, offset: usize) -> u64 {
        keel_mm::layout::DIRECTMAP_BASE + ((frame << 12) | (offset as u64 & 0xFFF))
    }
}

impl keel_grant::FrameWords for GrantFrames {
    fn read_u64(&self, frame: u64, offset: usize) -> u64 {
        // SAFETY: `frame` is a grant-table frame (see the type's doc) and offset is
        // 8-aligned below 4096 (the crate's contract); atomic because the granting
        // guest writes its entries concurrently.
        unsafe { core::sync::atomic::AtomicU64::from_ptr(Self::va(frame, offset & !7) as *mut u64) }
            .load(core::sync::atomic::Ordering::Acquire)
    }

    fn cmpxchg_u32(&mut self, frame: u64, offset: usize, old: u32, new: u32) -> u32 {
        // SAFETY: as in `read_u64`, 4-aligned.
        let a = unsafe {
            core::sync::atomic::AtomicU32::from_ptr(Self::va(frame, offset & !3) as *mut u32)
        };
        match a.compare_exchange(
            old,
            new,
            core::sync::atomic::Ordering::AcqRel,
            core::sync::atomic::Ordering::Acquire,
        ) {
            Ok(v) | Err(v) => v,
        }
    }

    fn clear_u16_bits(&mut self, frame: u64, offset: usize, bits: u16) {
        // SAFETY: as in `read_u64`, 2-aligned.
        let a = unsafe {
            core::sync::atomic::AtomicU16::from_ptr(Self::va(frame, offset & !1) as *mut u16)
        };
        a.fetch_and(!bits, core::sync::atomic::Ordering::AcqRel);
    }
}

/// Writes the vCPU's runstate to the area the guest registered, if any (Xen's
/// `update_runstate_area`, native layout: state, pad, state_entry_time, time[4]).
/// A bad area is the guest's problem: the write is dropped, as in Xen.
pub fn write_runstate(d: &mut Domain) {
    let Some(gva) = d.runstate.area else { return };
    let r = d.runstate;
    // The 32-bit layout is packed: no pad after `state` (44 bytes).
    let (at, len) = if r.area_compat { (4, 44) } else { (8, 48) };
    let mut buf = [0u8; 48];
    buf[0..4].copy_from_slice(&r.state.to_le_bytes());
    buf[at..at + 8].copy_from_slice(&r.entry_time.to_le_bytes());
    for (i, t) in r.time.iter().enumerate() {
        buf[at + 8 + 8 * i..at + 16 + 8 * i].copy_from_slice(&t.to_le_bytes());
    }
    let _ = d.copy_to_guest(gva, &buf[..len]);
}
