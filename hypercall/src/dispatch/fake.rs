//! A fake domain for host tests: a flat guest address space backed by a
//! `Vec<u8>`, with ranges that fault on any access or on writes, simple
//! in-memory event channels, timers and grant tables, and a record of every
//! call the dispatcher makes into the domain (`calls`), so tests can check
//! both what the guest sees and what the kernel would have been asked.

use core::ops::Range;

use super::{
    Domain, EvtchnState, EvtchnStatusInfo, GnttabCopyOp, GnttabMapped, GnttabSize, GuestWidth,
    PollResult, VersionInfo,
};
use crate::abi::Errno;
use crate::abi::domid::DomId;
use crate::abi::evtchn::EvtchnPort;
use crate::abi::grant_table::{
    GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_BAD_PAGE, GNTST_EAGAIN, GNTST_GENERAL_ERROR,
    GNTST_OKAY,
};
use crate::abi::hvm::{HVM_NR_PARAMS, VCPU_HVM_MODE_32B, VCPU_HVM_MODE_64B, VcpuHvmContext};
use crate::abi::memory::E820Entry;
use crate::abi::mmu::{MmuUpdate, MmuextOp};
use crate::abi::pv::TrapInfo;
use crate::abi::vcpu::VcpuRunstateInfo;
use crate::abi::xen::{VcpuTimeInfo, XEN_PVCLOCK_TSC_STABLE_BIT};

/// Ports in the fake's event-channel table (port 0 is reserved).
pub const FAKE_PORTS: u32 = 16;
/// Grant references the fake's other domains offer.
pub const FAKE_GREFS: u32 = 32;

/// One port of the fake's table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FakePort {
    pub state: EvtchnState,
    pub vcpu: u32,
    pub pending: bool,
    pub masked: bool,
}

/// Where the fake address space starts; below it everything faults, so a
/// NULL pointer is `-EFAULT`.
pub const BASE: u64 = 0x1000;
/// Size of the fake address space.
pub const SIZE: usize = 96 * 1024;
/// One past its end.
pub const END: u64 = BASE + SIZE as u64;

pub struct FakeDomain {
    pub domid: DomId,
    pub privileged: bool,
    pub console: bool,
    pub mem: Vec<u8>,
    /// Inaccessible ranges inside `[BASE, END)`.
    pub faults: Vec<Range<u64>>,
    /// Readable but not writable ranges.
    pub read_only: Vec<Range<u64>>,
    /// Every `console_write`, in order.
    pub console_out: Vec<Vec<u8>>,
    pub shared_info_gpfn: Option<u64>,
    pub map_shared_info_err: Option<Errno>,
    pub params: [u64; HVM_NR_PARAMS as usize],
    pub set_param_err: Option<Errno>,
    pub e820: Vec<E820Entry>,
    pub extraversion: Vec<u8>,
    pub capabilities: Vec<u8>,
    pub changeset: Vec<u8>,
    pub commandline: Vec<u8>,
    pub build_id: Vec<u8>,
    pub features: [u32; 1],
    pub handle: [u8; 16],
    /// Every call into the domain beyond plain memory access, formatted.
    pub calls: Vec<String>,
    pub vcpu_id: u32,
    pub max_vcpus: u32,
    pub now: u64,
    /// Other domains that exist.
    pub others: Vec<DomId>,
    /// The event-channel table, indexed by port.
    pub ports: Vec<FakePort>,
    /// Returned by every event-channel method when set.
    pub evtchn_err: Option<Errno>,
    /// Whether an upcall is pending for the calling vCPU (for `sched_poll`).
    pub upcall_pending: bool,
    pub vcpu_up: Vec<bool>,
    /// Returned by `vcpu_initialise`, `vcpu_up`, `vcpu_down`,
    /// `vcpu_send_nmi` when set.
    pub vcpu_err: Option<Errno>,
    /// Each vCPU's pending NMI.
    pub nmi_pending: Vec<bool>,
    /// What `vcpu_get_physid` answers (for every vCPU); `None`: `-EINVAL`,
    /// as Xen for a vCPU that is not a pinned hardware-domain one.
    pub physid: Option<u64>,
    /// Times `hvm_flush_tlbs` was called.
    pub tlb_flushes: u32,
    /// Returned by `hvm_flush_tlbs` when set.
    pub flush_err: Option<Errno>,
    pub runstate: VcpuRunstateInfo,
    /// What `vcpu_time_info` answers (for every vCPU).
    pub time_info: VcpuTimeInfo,
    /// Each vCPU's registered secondary time area (0: none).
    pub time_areas: Vec<u64>,
    pub singleshot: Option<u64>,
    pub periodic: Vec<u64>,
    /// `register_vcpu_info` answers `-EBUSY` for vCPUs listed here.
    pub vcpu_info_registered: Vec<u32>,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub max_ram_page: u64,
    /// `populate_physmap` / `decrease_reservation` fail at this gfn.
    pub fail_gfn: Option<u64>,
    /// `(dom, gfn, order)` of each extent populated.
    pub populated: Vec<(DomId, u64, u32)>,
    /// `(dom, gfn, order)` of each extent freed.
    pub decreased: Vec<(DomId, u64, u32)>,
    /// `(idx, gpfn)` of each grant frame mapped.
    pub grant_frames: Vec<(u32, u64)>,
    pub gnt_nr_frames: u32,
    pub gnt_max_frames: u32,
    /// Live grant mappings, indexed by handle.
    pub gnt_maps: Vec<Option<(DomId, u32, u64)>>,
    /// Every copy the domain was asked to do.
    pub gnt_copies: Vec<GnttabCopyOp>,
    /// Grant-table version, and the highest the domain may have.
    pub gnt_version: u32,
    pub gnt_max_version: u32,
    /// `set_version` answers `-EBUSY` while set (entries in use).
    pub gnt_busy: bool,
    /// `(idx, gpfn)` of each status frame mapped.
    pub status_frames_mapped: Vec<(u32, u64)>,
    /// Returned by `gnttab_cache_flush` when set.
    pub gnt_flush_err: Option<Errno>,
    pub upcall_vectors: Vec<(u32, u8)>,
    /// Whether the fake is a PV domain ([`Domain::is_pv`]).
    pub pv: bool,
    /// A PV request fails with this errno when its key matches:
    /// `mmu_update`'s `ptr`, `mmuext_op`'s `arg1`, `update_va_mapping`'s
    /// `va`, `set_trap`'s `address`, a callback's `address`.
    pub pv_fail: Option<(u64, Errno)>,
    /// Returned by the other PV methods when set.
    pub pv_err: Option<Errno>,
    /// Times `pv_mmu_update_flush` was called.
    pub mmu_flushes: u32,
    /// The calling vCPU's debug registers.
    pub debugregs: [u64; 8],
    /// What `pv_iret` answers.
    pub iret_rax: u64,
}

impl FakeDomain {
    pub fn new(domid: DomId, privileged: bool) -> FakeDomain {
        FakeDomain {
            domid,
            privileged,
            console: false,
            // A recognisable fill, so tests can tell untouched bytes.
            mem: vec![0xAA; SIZE],
            faults: Vec::new(),
            read_only: Vec::new(),
            console_out: Vec::new(),
            shared_info_gpfn: None,
            map_shared_info_err: None,
            params: [0; HVM_NR_PARAMS as usize],
            set_param_err: None,
            e820: vec![
                E820Entry {
                    addr: 0,
                    size: 0x9_f000,
                    type_: 1,
                },
                E820Entry {
                    addr: 0xf_0000,
                    size: 0x1_0000,
                    type_: 2,
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: 0x3ff0_0000,
                    type_: 1,
                },
            ],
            extraversion: b".0-keel".to_vec(),
            capabilities: b"hvm-3.0-x86_32 hvm-3.0-x86_64".to_vec(),
            changeset: b"keel 0123456789abcdef".to_vec(),
            commandline: b"console=com1 loglvl=all".to_vec(),
            build_id: Vec::new(),
            features: [0x0000_0304],
            handle: [0; 16],
            calls: Vec::new(),
            vcpu_id: 0,
            max_vcpus: 4,
            now: 1_000_000_000,
            others: vec![0, 1, 2, 3, 4],
            ports: vec![
                FakePort {
                    state: EvtchnState::Closed,
                    vcpu: 0,
                    pending: false,
                    masked: false,
                };
                FAKE_PORTS as usize
            ],
            evtchn_err: None,
            upcall_pending: false,
            vcpu_up: vec![true, false, false, false],
            vcpu_err: None,
            nmi_pending: vec![false; 4],
            physid: None,
            tlb_flushes: 0,
            flush_err: None,
            runstate: VcpuRunstateInfo {
                state: 0,
                pad: 0,
                state_entry_time: 0x1122_3344_5566_7788,
                time: [1, 2, 3, 4],
            },
            time_info: VcpuTimeInfo {
                version: 6,
                // Junk the dispatcher must pass on as it is.
                pad0: 0x1234_5678,
                tsc_timestamp: 0x0102_0304_0506_0708,
                system_time: 0x1111_2222_3333,
                tsc_to_system_mul: 0x8000_0000,
                tsc_shift: -1,
                flags: XEN_PVCLOCK_TSC_STABLE_BIT,
                pad1: [0x5a; 2],
            },
            time_areas: vec![0; 4],
            singleshot: None,
            periodic: vec![0; 4],
            vcpu_info_registered: Vec::new(),
            tot_pages: 0x4_0000,
            max_pages: 0x8_0000,
            max_ram_page: 0x12_3456,
            fail_gfn: None,
            populated: Vec::new(),
            decreased: Vec::new(),
            grant_frames: Vec::new(),
            gnt_nr_frames: 1,
            gnt_max_frames: 64,
            gnt_maps: Vec::new(),
            gnt_copies: Vec::new(),
            gnt_version: 1,
            gnt_max_version: 2,
            gnt_busy: false,
            status_frames_mapped: Vec::new(),
            gnt_flush_err: None,
            upcall_vectors: Vec::new(),
            pv: false,
            pv_fail: None,
            pv_err: None,
            mmu_flushes: 0,
            debugregs: [0x10, 0x11, 0x12, 0x13, 0, 0, 0xffff_0ff0, 0x400],
            iret_rax: 0x5eed,
        }
    }

    /// A PV domain: as [`FakeDomain::new`] with `pv` set.
    pub fn new_pv(domid: DomId, privileged: bool) -> FakeDomain {
        FakeDomain {
            pv: true,
            ..FakeDomain::new(domid, privileged)
        }
    }

    /// `Err` if `pv_fail` names `key`.
    fn pv_check(&self, key: u64) -> Result<(), Errno> {
        match self.pv_fail {
            Some((k, e)) if k == key => Err(e),
            _ => Ok(()),
        }
    }

    /// `Err` if `pv_err` is set.
    fn pv_result(&self) -> Result<(), Errno> {
        self.pv_err.map_or(Ok(()), Err)
    }

    fn log(&mut self, call: String) {
        self.calls.push(call);
    }

    /// A free port (not 0), or `-ENOSPC`.
    fn free_port(&self) -> Result<u32, Errno> {
        (1..FAKE_PORTS)
            .find(|&p| self.ports[p as usize].state == EvtchnState::Closed)
            .ok_or(Errno::ENOSPC)
    }

    /// Port `p` if it is valid.
    fn port(&mut self, p: EvtchnPort) -> Result<&mut FakePort, Errno> {
        if p == 0 {
            return Err(Errno::EINVAL);
        }
        self.ports.get_mut(p as usize).ok_or(Errno::EINVAL)
    }

    fn bind(&mut self, state: EvtchnState, vcpu: u32) -> Result<u32, Errno> {
        let p = self.free_port()?;
        self.ports[p as usize] = FakePort {
            state,
            vcpu,
            pending: false,
            masked: false,
        };
        Ok(p)
    }

    fn accessible(&self, gva: u64, len: usize, write: bool) -> bool {
        let Some(end) = gva.checked_add(len as u64) else {
            return false;
        };
        if gva < BASE || end > END {
            return false;
        }
        let hits = |r: &Range<u64>| gva < r.end && r.start < end;
        !self.faults.iter().any(hits) && !(write && self.read_only.iter().any(hits))
    }

    fn idx(gva: u64) -> usize {
        (gva - BASE) as usize
    }

    /// Test helper: bytes at `gva`.
    pub fn peek(&self, gva: u64, len: usize) -> &[u8] {
        &self.mem[Self::idx(gva)..Self::idx(gva) + len]
    }

    /// Test helper: store bytes at `gva` regardless of faults.
    pub fn poke(&mut self, gva: u64, data: &[u8]) {
        let i = Self::idx(gva);
        self.mem[i..i + data.len()].copy_from_slice(data);
    }

    /// All console output, concatenated.
    pub fn console_text(&self) -> Vec<u8> {
        self.console_out.concat()
    }

    /// Status frames: one per eight table frames in version 2.
    fn gnt_status_frames(&self) -> u32 {
        if self.gnt_version == 2 {
            self.gnt_nr_frames.div_ceil(8)
        } else {
            0
        }
    }
}

impl Domain for FakeDomain {
    fn domid(&self) -> DomId {
        self.domid
    }
    fn is_privileged(&self) -> bool {
        self.privileged
    }
    fn is_console(&self) -> bool {
        self.console
    }
    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if !self.accessible(gva, buf.len(), false) {
            return Err(Errno::EFAULT);
        }
        buf.copy_from_slice(self.peek(gva, buf.len()));
        Ok(())
    }
    fn copy_to_guest(&mut self, gva: u64, data: &[u8]) -> Result<(), Errno> {
        if !self.accessible(gva, data.len(), true) {
            return Err(Errno::EFAULT);
        }
        self.poke(gva, data);
        Ok(())
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.console_out.push(bytes.to_vec());
    }
    fn map_shared_info(&mut self, gpfn: u64) -> Result<(), Errno> {
        if let Some(e) = self.map_shared_info_err {
            return Err(e);
        }
        self.shared_info_gpfn = Some(gpfn);
        Ok(())
    }
    fn memory_map_entry(&self, index: u32) -> Option<E820Entry> {
        self.e820.get(index as usize).copied()
    }
    fn get_hvm_param(&self, index: u32) -> Result<u64, Errno> {
        Ok(self.params[index as usize])
    }
    fn set_hvm_param(&mut self, index: u32, value: u64) -> Result<(), Errno> {
        if let Some(e) = self.set_param_err {
            return Err(e);
        }
        self.params[index as usize] = value;
        Ok(())
    }
    fn vcpu_id(&self) -> u32 {
        self.vcpu_id
    }
    fn max_vcpus(&self) -> u32 {
        self.max_vcpus
    }
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn domain_exists(&self, domid: DomId) -> bool {
        assert_ne!(domid, self.domid, "the dispatcher asks only about others");
        self.others.contains(&domid)
    }

    fn evtchn_alloc_unbound(&mut self, dom: DomId, remote_dom: DomId) -> Result<u32, Errno> {
        self.log(format!("evtchn_alloc_unbound({dom}, {remote_dom})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        self.bind(EvtchnState::Unbound { remote_dom }, 0)
    }
    fn evtchn_bind_interdomain(
        &mut self,
        remote_dom: DomId,
        remote_port: EvtchnPort,
    ) -> Result<u32, Errno> {
        self.log(format!(
            "evtchn_bind_interdomain({remote_dom}, {remote_port})"
        ));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        // Loopback only: the fake has one table.
        let me = self.domid;
        if remote_dom != me {
            return Err(Errno::EINVAL);
        }
        let peer = *self.port(remote_port)?;
        if peer.state != (EvtchnState::Unbound { remote_dom: me }) {
            return Err(Errno::EINVAL);
        }
        let local = self.bind(
            EvtchnState::Interdomain {
                remote_dom: me,
                remote_port,
            },
            0,
        )?;
        self.ports[remote_port as usize].state = EvtchnState::Interdomain {
            remote_dom: me,
            remote_port: local,
        };
        self.ports[local as usize].pending = true;
        Ok(local)
    }
    fn evtchn_bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        self.log(format!("evtchn_bind_virq({virq}, {vcpu})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        let bound = EvtchnState::Virq(virq);
        if self
            .ports
            .iter()
            .any(|p| p.state == bound && p.vcpu == vcpu)
        {
            return Err(Errno::EEXIST);
        }
        self.bind(bound, vcpu)
    }
    fn evtchn_bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno> {
        self.log(format!("evtchn_bind_ipi({vcpu})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        self.bind(EvtchnState::Ipi, vcpu)
    }
    fn evtchn_bind_vcpu(&mut self, port: EvtchnPort, vcpu: u32) -> Result<(), Errno> {
        self.log(format!("evtchn_bind_vcpu({port}, {vcpu})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        let p = self.port(port)?;
        match p.state {
            EvtchnState::Unbound { .. } | EvtchnState::Interdomain { .. } => {
                p.vcpu = vcpu;
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }
    fn evtchn_close(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        self.log(format!("evtchn_close({port})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        let p = self.port(port)?;
        if p.state == EvtchnState::Closed {
            return Err(Errno::EINVAL);
        }
        let old = p.state;
        *p = FakePort {
            state: EvtchnState::Closed,
            vcpu: 0,
            pending: false,
            masked: false,
        };
        if let EvtchnState::Interdomain {
            remote_dom,
            remote_port,
        } = old
            && let Some(peer) = self.ports.get_mut(remote_port as usize)
        {
            peer.state = EvtchnState::Unbound { remote_dom };
        }
        Ok(())
    }
    fn evtchn_send(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        self.log(format!("evtchn_send({port})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        let p = *self.port(port)?;
        match p.state {
            EvtchnState::Interdomain { remote_port, .. } => {
                self.ports[remote_port as usize].pending = true;
                Ok(())
            }
            EvtchnState::Ipi => {
                self.ports[port as usize].pending = true;
                Ok(())
            }
            EvtchnState::Unbound { .. } => Ok(()),
            _ => Err(Errno::EINVAL),
        }
    }
    fn evtchn_status(&self, dom: DomId, port: EvtchnPort) -> Result<EvtchnStatusInfo, Errno> {
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        if dom != self.domid {
            // Another domain: a fixed answer.
            return Ok(EvtchnStatusInfo {
                state: EvtchnState::Pirq(port),
                vcpu: 3,
            });
        }
        let p = self.ports.get(port as usize).ok_or(Errno::EINVAL)?;
        Ok(EvtchnStatusInfo {
            state: p.state,
            vcpu: p.vcpu,
        })
    }
    fn evtchn_unmask(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        self.log(format!("evtchn_unmask({port})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        let p = self.port(port)?;
        p.masked = false;
        Ok(())
    }
    fn evtchn_init_control(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
        self.log(format!("evtchn_init_control({vcpu}, {gfn:#x}, {offset})"));
        self.evtchn_err.map_or(Ok(()), Err)
    }
    fn evtchn_expand_array(&mut self, gfn: u64) -> Result<(), Errno> {
        self.log(format!("evtchn_expand_array({gfn:#x})"));
        self.evtchn_err.map_or(Ok(()), Err)
    }
    fn evtchn_set_priority(&mut self, port: EvtchnPort, priority: u32) -> Result<(), Errno> {
        self.log(format!("evtchn_set_priority({port}, {priority})"));
        self.evtchn_err.map_or(Ok(()), Err)
    }
    fn evtchn_reset(&mut self, dom: DomId) -> Result<(), Errno> {
        self.log(format!("evtchn_reset({dom})"));
        if let Some(e) = self.evtchn_err {
            return Err(e);
        }
        for p in self.ports.iter_mut() {
            p.state = EvtchnState::Closed;
        }
        Ok(())
    }
    fn sched_poll(&mut self, ports: &[EvtchnPort]) -> Result<PollResult, Errno> {
        self.log(format!("sched_poll({ports:?})"));
        if self.upcall_pending {
            return Ok(PollResult::Ready);
        }
        for &port in ports {
            let p = self.ports.get(port as usize).ok_or(Errno::EINVAL)?;
            if p.pending {
                return Ok(PollResult::Ready);
            }
        }
        Ok(PollResult::Block)
    }

    fn vcpu_initialise(&mut self, vcpu: u32, ctx: &VcpuHvmContext) -> Result<(), Errno> {
        let regs = match ctx.mode {
            VCPU_HVM_MODE_32B => format!(" eip={:#x}", ctx.x86_32().eip),
            VCPU_HVM_MODE_64B => format!(" rip={:#x}", ctx.x86_64().rip),
            _ => String::new(),
        };
        let pad = if ctx.pad != 0 {
            format!(" pad={:#x}", ctx.pad)
        } else {
            String::new()
        };
        self.log(format!(
            "vcpu_initialise({vcpu}, mode {}{regs}{pad})",
            ctx.mode
        ));
        self.vcpu_err.map_or(Ok(()), Err)
    }
    fn vcpu_up(&mut self, vcpu: u32) -> Result<(), Errno> {
        self.log(format!("vcpu_up({vcpu})"));
        if let Some(e) = self.vcpu_err {
            return Err(e);
        }
        self.vcpu_up[vcpu as usize] = true;
        Ok(())
    }
    fn vcpu_down(&mut self, vcpu: u32) -> Result<(), Errno> {
        self.log(format!("vcpu_down({vcpu})"));
        if let Some(e) = self.vcpu_err {
            return Err(e);
        }
        self.vcpu_up[vcpu as usize] = false;
        Ok(())
    }
    fn vcpu_is_up(&self, vcpu: u32) -> bool {
        self.vcpu_up[vcpu as usize]
    }
    fn vcpu_send_nmi(&mut self, vcpu: u32) -> Result<(), Errno> {
        self.log(format!("vcpu_send_nmi({vcpu})"));
        if let Some(e) = self.vcpu_err {
            return Err(e);
        }
        self.nmi_pending[vcpu as usize] = true;
        Ok(())
    }
    fn vcpu_get_physid(&self, _vcpu: u32) -> Result<u64, Errno> {
        self.physid.ok_or(Errno::EINVAL)
    }
    fn vcpu_runstate(&self, vcpu: u32) -> VcpuRunstateInfo {
        VcpuRunstateInfo {
            state: vcpu as i32,
            // The fake's own pad is junk the dispatcher must not pass on.
            pad: 0xdead,
            ..self.runstate
        }
    }
    fn register_runstate_area(
        &mut self,
        vcpu: u32,
        gva: u64,
        width: GuestWidth,
    ) -> Result<(), Errno> {
        self.log(format!(
            "register_runstate_area({vcpu}, {gva:#x}, {width:?})"
        ));
        Ok(())
    }
    fn register_vcpu_time_area(&mut self, vcpu: u32, gva: u64) -> Result<(), Errno> {
        self.log(format!("register_vcpu_time_area({vcpu}, {gva:#x})"));
        self.time_areas[vcpu as usize] = gva;
        Ok(())
    }
    fn vcpu_time_info(&self, _vcpu: u32) -> VcpuTimeInfo {
        self.time_info
    }
    fn register_vcpu_info(&mut self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), Errno> {
        self.log(format!("register_vcpu_info({vcpu}, {gfn:#x}, {offset:#x})"));
        if self.vcpu_info_registered.contains(&vcpu) {
            return Err(Errno::EBUSY);
        }
        self.vcpu_info_registered.push(vcpu);
        Ok(())
    }
    fn set_periodic_timer(&mut self, vcpu: u32, period_ns: u64) {
        self.log(format!("set_periodic_timer({vcpu}, {period_ns})"));
        self.periodic[vcpu as usize] = period_ns;
    }
    fn set_singleshot_timer(&mut self, deadline_ns: u64) {
        self.log(format!("set_singleshot_timer({deadline_ns})"));
        self.singleshot = Some(deadline_ns);
    }
    fn stop_singleshot_timer(&mut self) {
        self.log("stop_singleshot_timer".to_string());
        self.singleshot = None;
    }

    fn maximum_ram_page(&self) -> u64 {
        self.max_ram_page
    }
    fn current_reservation(&self, dom: DomId) -> u64 {
        self.tot_pages + u64::from(dom)
    }
    fn maximum_reservation(&self, dom: DomId) -> u64 {
        self.max_pages + u64::from(dom)
    }
    fn populate_physmap(&mut self, dom: DomId, gfn: u64, order: u32) -> Result<(), Errno> {
        if self.fail_gfn == Some(gfn) {
            return Err(Errno::ENOMEM);
        }
        self.populated.push((dom, gfn, order));
        Ok(())
    }
    fn decrease_reservation(&mut self, dom: DomId, gfn: u64, order: u32) -> Result<(), Errno> {
        if self.fail_gfn == Some(gfn) {
            return Err(Errno::ENOENT);
        }
        self.decreased.push((dom, gfn, order));
        Ok(())
    }
    fn map_grant_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
        if idx >= self.gnt_max_frames {
            return Err(Errno::EINVAL);
        }
        self.gnt_nr_frames = self.gnt_nr_frames.max(idx + 1);
        self.grant_frames.push((idx, gpfn));
        Ok(())
    }

    fn set_evtchn_upcall_vector(&mut self, vcpu: u32, vector: u8) -> Result<(), Errno> {
        self.upcall_vectors.push((vcpu, vector));
        Ok(())
    }
    fn hvm_flush_tlbs(&mut self) -> Result<(), Errno> {
        self.log("hvm_flush_tlbs".to_string());
        if let Some(e) = self.flush_err {
            return Err(e);
        }
        self.tlb_flushes += 1;
        Ok(())
    }

    fn gnttab_setup_table(&mut self, dom: DomId, nr_frames: u32) -> Result<(), i16> {
        self.log(format!("gnttab_setup_table({dom}, {nr_frames})"));
        if nr_frames > self.gnt_max_frames {
            return Err(GNTST_GENERAL_ERROR);
        }
        self.gnt_nr_frames = self.gnt_nr_frames.max(nr_frames);
        Ok(())
    }
    fn gnttab_shared_gfn(&self, dom: DomId, idx: u32) -> u64 {
        assert!(idx < self.gnt_nr_frames, "asked beyond the table");
        // Frames of domain 4 live above 4 GiB.
        if dom == 4 {
            0x1_0000_0000 + u64::from(idx)
        } else {
            0xf_0000 + u64::from(idx)
        }
    }
    fn gnttab_query_size(&self, _dom: DomId) -> GnttabSize {
        GnttabSize {
            nr_frames: self.gnt_nr_frames,
            max_nr_frames: self.gnt_max_frames,
        }
    }
    fn gnttab_map_grant_ref(
        &mut self,
        dom: DomId,
        gref: u32,
        flags: u32,
        host_addr: u64,
    ) -> Result<GnttabMapped, i16> {
        self.log(format!(
            "gnttab_map_grant_ref({dom}, {gref}, {flags:#x}, {host_addr:#x})"
        ));
        if gref >= FAKE_GREFS {
            return Err(GNTST_BAD_GNTREF);
        }
        self.gnt_maps.push(Some((dom, gref, host_addr)));
        Ok(GnttabMapped {
            handle: (self.gnt_maps.len() - 1) as u32,
            dev_bus_addr: 0xabc_0000 + u64::from(gref) * 4096,
        })
    }
    fn gnttab_unmap_grant_ref(&mut self, host_addr: u64, _dev_bus_addr: u64, handle: u32) -> i16 {
        match self.gnt_maps.get_mut(handle as usize) {
            Some(m @ Some(_)) if host_addr == 0 || m.is_some_and(|(_, _, a)| a == host_addr) => {
                *m = None;
                GNTST_OKAY
            }
            _ => GNTST_BAD_HANDLE,
        }
    }
    fn gnttab_copy(&mut self, op: &GnttabCopyOp) -> i16 {
        self.gnt_copies.push(*op);
        match op.source.target {
            super::GnttabCopyTarget::Gref { gref, .. } if gref >= FAKE_GREFS => GNTST_BAD_GNTREF,
            _ => GNTST_OKAY,
        }
    }
    fn map_grant_status_frame(&mut self, idx: u32, gpfn: u64) -> Result<(), Errno> {
        self.log(format!("map_grant_status_frame({idx}, {gpfn:#x})"));
        if self.gnt_version != 2 || idx >= self.gnt_status_frames() {
            return Err(Errno::EINVAL);
        }
        self.status_frames_mapped.push((idx, gpfn));
        Ok(())
    }
    fn gnttab_set_version(&mut self, version: u32) -> Result<(), Errno> {
        self.log(format!("gnttab_set_version({version})"));
        if version > self.gnt_max_version {
            return Err(Errno::ENOSYS);
        }
        if version != self.gnt_version && self.gnt_busy {
            return Err(Errno::EBUSY);
        }
        self.gnt_version = version;
        Ok(())
    }
    fn gnttab_get_version(&self, _dom: DomId) -> u32 {
        self.gnt_version
    }
    fn gnttab_get_status_frames(&mut self, dom: DomId, nr_frames: u32) -> Result<(), i16> {
        self.log(format!("gnttab_get_status_frames({dom}, {nr_frames})"));
        if nr_frames > self.gnt_status_frames() {
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok(())
    }
    fn gnttab_status_gfn(&self, dom: DomId, idx: u32) -> u64 {
        assert!(idx < self.gnt_status_frames(), "asked beyond the frames");
        // Frames of domain 4 live above 4 GiB.
        if dom == 4 {
            0x2_0000_0000 + u64::from(idx)
        } else {
            0xe_0000 + u64::from(idx)
        }
    }
    fn gnttab_swap_grant_ref(&mut self, ref_a: u32, ref_b: u32) -> Result<i16, Errno> {
        self.log(format!("gnttab_swap_grant_ref({ref_a}, {ref_b})"));
        Ok(if ref_a >= FAKE_GREFS || ref_b >= FAKE_GREFS {
            GNTST_BAD_GNTREF
        } else if ref_a != ref_b && (ref_a == 5 || ref_b == 5) {
            // Ref 5 is in use.
            GNTST_EAGAIN
        } else {
            GNTST_OKAY
        })
    }
    fn gnttab_cache_flush(
        &mut self,
        dev_bus_addr: u64,
        offset: u16,
        length: u16,
        op: u32,
    ) -> Result<(), Errno> {
        self.log(format!(
            "gnttab_cache_flush({dev_bus_addr:#x}, {offset}, {length}, {op:#x})"
        ));
        self.gnt_flush_err.map_or(Ok(()), Err)
    }
    fn gnttab_transfer(&mut self, gfn: u64, domid: DomId, gref: u32) -> i16 {
        self.log(format!("gnttab_transfer({gfn:#x}, {domid}, {gref})"));
        // Frames from 1 GiB up are not RAM.
        if gfn >= 0x4_0000 {
            GNTST_BAD_PAGE
        } else {
            GNTST_GENERAL_ERROR
        }
    }

    fn is_pv(&self) -> bool {
        self.pv
    }
    fn pv_mmu_update(&mut self, req: &MmuUpdate, foreigndom: DomId) -> Result<(), Errno> {
        self.log(format!(
            "mmu_update({:#x}, {:#x}, {foreigndom:#x})",
            req.ptr, req.val
        ));
        self.pv_check(req.ptr)
    }
    fn pv_mmu_update_flush(&mut self) {
        self.mmu_flushes += 1;
    }
    fn pv_mmuext_op(&mut self, op: &MmuextOp, foreigndom: DomId) -> Result<(), Errno> {
        self.log(format!(
            "mmuext_op({}, {:#x}, {:#x}, {foreigndom:#x})",
            op.cmd, op.arg1, op.arg2
        ));
        self.pv_check(op.arg1)
    }
    fn pv_update_va_mapping(&mut self, va: u64, val: u64, flags: u64) -> Result<(), Errno> {
        self.log(format!("update_va_mapping({va:#x}, {val:#x}, {flags:#x})"));
        self.pv_check(va)
    }
    fn pv_update_va_mapping_otherdomain(
        &mut self,
        va: u64,
        val: u64,
        flags: u64,
        domid: DomId,
    ) -> Result<(), Errno> {
        self.log(format!(
            "update_va_mapping_otherdomain({va:#x}, {val:#x}, {flags:#x}, {domid:#x})"
        ));
        self.pv_check(va)
    }
    fn pv_clear_trap_table(&mut self) -> Result<(), Errno> {
        self.log("clear_trap_table".to_string());
        self.pv_result()
    }
    fn pv_set_trap(&mut self, t: &TrapInfo) -> Result<(), Errno> {
        self.log(format!(
            "set_trap({}, {}, {:#x}, {:#x})",
            t.vector, t.flags, t.cs, t.address
        ));
        self.pv_check(t.address)
    }
    fn pv_stack_switch(&mut self, ss: u64, sp: u64) -> Result<(), Errno> {
        self.log(format!("stack_switch({ss:#x}, {sp:#x})"));
        self.pv_result()
    }
    fn pv_fpu_taskswitch(&mut self, set: bool) -> Result<(), Errno> {
        self.log(format!("fpu_taskswitch({set})"));
        self.pv_result()
    }
    fn pv_set_debugreg(&mut self, reg: u32, value: u64) -> Result<(), Errno> {
        self.log(format!("set_debugreg({reg}, {value:#x})"));
        self.pv_result()?;
        let r = self.debugregs.get_mut(reg as usize).ok_or(Errno::ENODEV)?;
        *r = value;
        Ok(())
    }
    fn pv_get_debugreg(&mut self, reg: u32) -> Result<u64, Errno> {
        self.debugregs
            .get(reg as usize)
            .copied()
            .ok_or(Errno::ENODEV)
    }
    fn pv_update_descriptor(&mut self, maddr: u64, desc: u64) -> Result<(), Errno> {
        self.log(format!("update_descriptor({maddr:#x}, {desc:#x})"));
        self.pv_result()
    }
    fn pv_set_gdt(&mut self, frames: &[u64], entries: u32) -> Result<(), Errno> {
        self.log(format!("set_gdt({frames:x?}, {entries})"));
        self.pv_result()
    }
    fn pv_vm_assist(&mut self, cmd: u32, kind: u32) -> Result<(), Errno> {
        self.log(format!("vm_assist({cmd}, {kind})"));
        self.pv_result()
    }
    fn pv_set_segment_base(&mut self, which: u32, base: u64) -> Result<(), Errno> {
        self.log(format!("set_segment_base({which}, {base:#x})"));
        self.pv_result()
    }
    fn pv_iret(&mut self) -> Result<u64, Errno> {
        self.log("iret".to_string());
        self.pv_result().map(|()| self.iret_rax)
    }
    fn pv_register_callback(&mut self, kind: u16, flags: u16, address: u64) -> Result<(), Errno> {
        self.log(format!("register_callback({kind}, {flags}, {address:#x})"));
        self.pv_check(address)
    }
    fn pv_unregister_callback(&mut self, kind: u16) -> Result<(), Errno> {
        self.log(format!("unregister_callback({kind})"));
        self.pv_result()
    }
    fn pv_set_iopl(&mut self, iopl: u32) -> Result<(), Errno> {
        self.log(format!("set_iopl({iopl})"));
        self.pv_result()
    }

    fn version(&self) -> VersionInfo<'_> {
        VersionInfo {
            major: 4,
            minor: 19,
            extraversion: &self.extraversion,
            compiler: b"rustc 1.x nightly",
            compile_by: b"keel",
            compile_domain: b"example.org",
            compile_date: b"2026-01-01",
            capabilities: &self.capabilities,
            changeset: &self.changeset,
            commandline: &self.commandline,
            build_id: &self.build_id,
            features: self.features,
            handle: self.handle,
        }
    }
}
