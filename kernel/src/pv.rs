//! PV domains (docs/pv.md): a PV kernel is laid out by `builder::pv` in frames
//! keel allocates, its initial page tables are validated by the PV MMU
//! (`mm::pv`) as vCPU 0's base pointer, and the domain runs with its vCPUs in
//! ring 3 (`arch::pv`) behind the same run loop as PVH's.
//!
//! # What a build proves
//!
//! - The builder's start-of-day image fits keel's allocator and direct map: the
//!   kernel, initrd, p2m list, start_info, xenstore/console pages, page tables and
//!   boot stack land in the domain's own frames ([`PfnWriter`]).
//! - keel's PV MMU accepts the builder's page tables: vCPU 0's base pointer takes
//!   an L4 type reference (Xen's `new_guest_cr3` in `dom0_construct_pv`), which
//!   validates every table below it against Xen's rules, with keel's own L4 slots
//!   256..=271 filled from keel's page tables ([`DirectMapPv::keel_l4_entry`]).
//! - Teardown balances: when the domain dies, dropping the base pointers and
//!   relinquishing its memory returns every frame through
//!   `DomainFrames::pop_freed`, once ([`PvPaging::teardown`]), before the
//!   frames themselves go back to the allocator.
//!
//! # Guest memory
//!
//! A PV guest is not translated: the frame numbers in its page tables and
//! hypercalls are machine frames, which `Paging::Pv` accepts only where the
//! domain owns them. keel reaches a guest virtual address by walking the
//! guest's page tables (`mm::pv::copy`), never by dereferencing it, and never
//! in keel's own range.
//!
//! # Locking
//! A running PV domain's `PvPaging` lives in its `mem` lock (`domain.rs`), like
//! any paging mode; a build in progress is reachable from nowhere else, so it
//! needs none. Only the frame allocator's lock is taken, briefly, per
//! allocation.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use alloc::boxed::Box;
use alloc::string::String;

use keel_arch::hvm::{HvmVcpu, Vcpu as HwVcpu};
use keel_arch::pv::{PvStart, PvVcpu as ArchPv};
use keel_builder::pv::{self as bpv, PvBoot, PvSpec, Role};
use keel_builder::pvh::{GuestMemWriter, PvhError};
use keel_hypercall::abi::features::{
    XENFEAT_DOM0, XENFEAT_PAE_PGDIR_ABOVE_4GB, XENFEAT_WRITABLE_PAGE_TABLES, bit,
};
use keel_hypercall::abi::memory::{E820_RAM, E820Entry};
use keel_mm::addr::Mfn;
use keel_mm::addr::{Gfn, Hpa};
use keel_mm::guest_mem::CopyError;
use keel_mm::guest_walk::WalkCtx;
use keel_mm::p2m::{Access, P2mError};
use keel_mm::pv::{DomainFrames, IoFrame, Level, PageType, Policy, PvMemory, PvVcpu, entry};
use keel_x86::hypercall_page::HYPERCALL_PAGE_SIZE;

use crate::domain::{BuildError, Domain, GuestType, Parts, PvhSpec};
use crate::frames::Frame;
use crate::memory::{FRAMES, FrameAlloc, free_runs, zero_frames};
use crate::paging::{Paging, PagingMode};
use crate::vcpu::ArchVcpu;

/// The `XENFEAT_*` bits (submap 0) keel's PV support offers a kernel: what a
/// kernel may require (`!name` in its `FEATURES` note). Writable page tables
/// are `mm::pv`'s `ptwr`; Dom0 gets `dom0`.
fn offered_features(role: Role) -> u32 {
    let mut f = bit(XENFEAT_WRITABLE_PAGE_TABLES) | bit(XENFEAT_PAE_PGDIR_ABOVE_4GB);
    if role == Role::Dom0 {
        f |= bit(XENFEAT_DOM0);
    }
    f
}

/// What a PV build found, for the log.
#[derive(Clone, Copy, Debug)]
pub struct Built {
    /// Pages of RAM the domain got (`start_info.nr_pages`).
    pub pages: u64,
    /// Page-table frames of the boot region (`start_info.nr_pt_frames`).
    pub pt_frames: u64,
    /// Validated page tables, by level (L1..L4), once vCPU 0's base was set.
    pub tables: [u32; 4],
    /// The L4 vCPU 0 starts on.
    pub l4: Mfn,
    /// Where it starts, and its start_info.
    pub entry: u64,
    pub start_info_va: u64,
}

impl core::fmt::Display for Built {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [l1, l2, l3, l4] = self.tables;
        write!(
            f,
            "{} pages, {} boot page-table frames validated as vCPU 0's base \
             (L4 {:#x}: {l4} L4, {l3} L3, {l2} L2, {l1} L1), entry {:#x}, start_info at {:#x}",
            self.pages,
            self.pt_frames,
            self.l4.as_u64(),
            self.entry,
            self.start_info_va,
        )
    }
}

/// A PV domain's memory (the `Paging::Pv` mode): the page types of its frames
/// (`mm::pv`), each vCPU's base pointers, and its p2m list.
pub struct PvPaging {
    pub frames: DomainFrames<FrameAlloc>,
    pub mem: DirectMapPv,
    /// The PV MMU's per-vCPU state (kernel and user base pointers, LDT).
    pub vcpus: Vec<PvVcpu>,
    /// pfn -> mfn, as the guest's p2m list started.
    pub p2m: Vec<Mfn, FrameAlloc>,
    /// The start_info frame, and a domU's console ring (its event channel is
    /// connected at admission, `domains::attach_console`).
    pub start_info: Mfn,
    pub console: Option<Mfn>,
    /// The `vm_assist` types the guest turned on (bit n: `VMASST_TYPE_`n).
    pub vm_assist: u64,
    /// Each vCPU's GDT frames (`set_gdt`), each held as a descriptor page.
    pub gdts: Vec<Vec<Mfn>>,
}

/// Offset of `console.domU.evtchn` in `start_info` (`xen.h`, x86_64).
pub const START_INFO_CONSOLE_EVTCHN: usize = 80;

impl PvPaging {
    /// Drops every base pointer and page type and checks that every frame came
    /// back through `pop_freed` (a dead domain's, before its frames are freed).
    pub fn teardown(&mut self, domid: u16) {
        let held = self.frames.len();
        let mut result = Ok(());
        for g in self.gdts.iter_mut() {
            for m in g.drain(..) {
                result = result.and(self.frames.put_segdesc_page(&mut self.mem, m));
            }
        }
        for v in self.vcpus.iter_mut() {
            result = result.and(self.frames.destroy_pagetables(&mut self.mem, v));
        }
        let result = result.and_then(|()| self.frames.relinquish(&mut self.mem));
        let mut returned = 0usize;
        while self.frames.pop_freed().is_some() {
            returned += 1;
        }
        if let Err(e) = result {
            log::error!("d{domid}: PV teardown: {e}");
        }
        if returned != held || !self.frames.is_empty() {
            log::error!(
                "d{domid}: PV teardown returned {returned} of {held} frames, {} still held",
                self.frames.len()
            );
        } else {
            log::debug!("d{domid}: PV teardown: {returned} frames returned");
        }
    }

    /// The L1 that maps `va` in the tables rooted at machine frame `root`:
    /// the guest's own (validated) tables walked from the L4, each level's
    /// entry present, no superpage (PV tables have none), every table the
    /// domain's. `None` where the walk stops.
    fn l1_of(&self, root: u64, va: u64) -> Option<Mfn> {
        let mut table = Mfn::new(root)?;
        for shift in [39u32, 30, 21] {
            if !self.frames.owns(table) {
                return None;
            }
            let e = self.mem.read_entry(table, ((va >> shift) & 511) as usize);
            if !entry::is_present(e) || e & entry::PSE != 0 {
                return None;
            }
            table = entry::entry_mfn(e);
        }
        Some(table)
    }

    /// Whether the domain may have keel write frame `mfn` for it: its own, and
    /// not one of its page tables or descriptor pages.
    fn access(&self, mfn: Mfn) -> Option<bool> {
        let p = self.frames.page(mfn)?;
        Some(matches!(p.page_type(), PageType::None | PageType::Writable) || p.type_count() == 0)
    }
}

/// Guest copies through the domain's own page tables (`mm::pv::copy`).
struct CopyMem<'a>(&'a PvPaging);

impl keel_mm::pv::copy::MachineMem for CopyMem<'_> {
    fn access(&self, mfn: Mfn) -> Option<bool> {
        self.0.access(mfn)
    }
    fn read(&self, maddr: u64, buf: &mut [u8]) {
        if let Some(m) = Mfn::new(maddr >> 12) {
            DirectMapPv::frame(m).read((maddr & 0xFFF) as usize, buf);
        }
    }
    fn write(&mut self, maddr: u64, data: &[u8]) {
        if let Some(m) = Mfn::new(maddr >> 12) {
            DirectMapPv::frame(m).write((maddr & 0xFFF) as usize, data);
        }
    }
}

impl PagingMode for PvPaging {
    /// No root the hardware walks for the domain: vCPU 0's L4 (or nothing).
    fn root(&self) -> Hpa {
        self.vcpus
            .first()
            .and_then(|v| v.kernel_root())
            .map_or(Hpa::new(0).unwrap_or_else(|| unreachable!()), |m| m.hpa())
    }
    /// A PV guest is not translated: nothing is mapped at a gfn.
    fn map(&mut self, gfn: Gfn, _mfn: Mfn, _count: u64, _access: Access) -> Result<(), P2mError> {
        Err(P2mError::OutOfRange { gfn: gfn.as_u64() })
    }
    fn set_entry(
        &mut self,
        gfn: Gfn,
        _new: Option<(Mfn, Access)>,
    ) -> Result<Option<Mfn>, P2mError> {
        Err(P2mError::OutOfRange { gfn: gfn.as_u64() })
    }
    /// A gfn is an mfn, if the domain owns it (Xen's `get_page_from_gfn` for a
    /// guest that is not translated). Writable only for its special frames
    /// (shared_info, the console and xenstore rings): the users of this
    /// translation (FIFO event pages, `register_vcpu_info`, grant copies) write
    /// the frame after the domain's lock is dropped, and an ordinary frame
    /// could become a page table meanwhile. Xen holds a writable type
    /// reference for as long as it writes; until keel does too, those uses
    /// are refused for a PV domain's ordinary frames.
    fn translate(&self, gfn: Gfn) -> Option<(Mfn, Access)> {
        let mfn = Mfn::new(gfn.as_u64())?;
        let special = self.frames.page(mfn)?.is_special();
        Some((mfn, if special { Access::RW } else { Access::R }))
    }
    fn for_each_table(&self, _f: &mut dyn FnMut(Hpa)) {}
    fn copy_from_guest(&self, walk: &WalkCtx, gva: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        keel_mm::pv::copy::copy_from_guest(&CopyMem(self), walk, gva, buf)
    }
    fn copy_to_guest(&self, walk: &WalkCtx, gva: u64, data: &[u8]) -> Result<(), CopyError> {
        keel_mm::pv::copy::copy_to_guest(&mut CopyMem(self), walk, gva, data)
    }
    /// A PV guest has no guest-physical address space keel writes.
    fn write_gpa(&self, gpa: u64, _data: &[u8]) -> Result<(), CopyError> {
        Err(CopyError::Unbacked { gpa })
    }
}

/// Builds the PV domain `spec` describes (Dom0, or a domU), ready to run: its
/// vCPU 0 starts at the kernel's entry in kernel mode on the builder's page
/// tables, validated by the PV MMU as its base pointer. Every frame taken is
/// returned if any step fails.
pub fn build(spec: &PvhSpec<'_>) -> Result<Domain, BuildError> {
    let role = if spec.privileged && spec.id == 0 {
        Role::Dom0
    } else {
        Role::DomU
    };
    if spec.vcpus == 0 || spec.vcpus > spec.max_vcpus || spec.max_vcpus > crate::domain::MAX_VCPUS {
        return Err(BuildError::Vcpu(alloc::format!(
            "{} vCPUs up of {}: 1 ..= maxvcpus <= {} are possible",
            spec.vcpus,
            spec.max_vcpus,
            crate::domain::MAX_VCPUS
        )));
    }
    let kernel = bpv::parse(spec.kernel).map_err(BuildError::Pv)?;
    kernel
        .check_features(offered_features(role))
        .map_err(BuildError::Pv)?;
    let pv_spec = PvSpec {
        role,
        nr_pages: spec.ram_bytes / 4096,
        initrd: spec.modules.first().map_or(&[][..], |m| m.bytes),
        cmdline: spec.cmdline,
    };
    let layout = bpv::plan(&kernel, &pv_spec).map_err(BuildError::Pv)?;

    let mut frames = Frames::default();
    let p2m = frames.alloc_ram(layout.nr_pages)?;
    let shared_info = frames.alloc_one()?;
    // Every vCPU starts with its upcalls masked (Xen's `dom0_construct_pv`
    // and libxg's shared_info setup): the kernel unmasks once it has its
    // event callback.
    {
        // SAFETY: a frame this build just allocated and zeroed.
        let f = unsafe { Frame::new(shared_info) };
        for i in 0..crate::domain::MAX_VCPUS as usize {
            f.write(i * 64 + 1, &[1]);
        }
    }
    let mfn_of = |pfn: u64| p2m.get(usize::try_from(pfn).ok()?).map(|m| m.as_u64());

    let mut hypercall_page = [0u8; HYPERCALL_PAGE_SIZE];
    keel_x86::pv::hypercall_page::fill_pv_hypercall_page(&mut hypercall_page);
    let boot = PvBoot {
        shared_info_maddr: shared_info.hpa().as_u64(),
        store_evtchn: 0,
        console_evtchn: 0,
        hypercall_page: Some(&hypercall_page),
    };
    bpv::load(
        &kernel,
        &layout,
        &pv_spec,
        &boot,
        mfn_of,
        &mut PfnWriter { p2m: &p2m },
    )
    .map_err(BuildError::Pv)?;
    let regs = bpv::initial_regs(&layout, mfn_of).map_err(BuildError::Pv)?;

    let nx = keel_arch::cpu::CpuInfo::detect().nx;
    let mut pv = PvPaging {
        // The page-type state lives in frames, not on keel's heap (16 bytes a frame).
        frames: DomainFrames::new_in(
            Policy {
                nx,
                io_caps: false,
                linear_pt: true,
                l1tf_safe_maddr: None,
            },
            FrameAlloc,
        ),
        mem: DirectMapPv::new(),
        vcpus: (0..spec.max_vcpus).map(|_| PvVcpu::new()).collect(),
        start_info: mfn_at(&p2m, layout.start_info.pfn)?,
        console: layout.console.map(|c| mfn_at(&p2m, c.pfn)).transpose()?,
        p2m,
        vm_assist: 0,
        gdts: (0..spec.max_vcpus).map(|_| Vec::new()).collect(),
    };
    // The pages keel itself writes (a domU's console and xenstore rings) are
    // special, as shared_info: a permanent writable type reference, so the
    // guest can never make one a page table under keel's writes.
    let keel_written: Vec<Mfn> = [layout.console, layout.xenstore]
        .into_iter()
        .flatten()
        .filter_map(|p| mfn_at(&pv.p2m, p.pfn).ok())
        .collect();
    let checked = (|| {
        for &m in pv.p2m.iter() {
            if keel_written.contains(&m) {
                pv.frames.assign_special(m)?;
            } else {
                pv.frames.assign(m)?;
            }
        }
        pv.frames.assign_special(shared_info)?;
        // vCPU 0's base pointer: an L4 type reference, validating the tree
        // (Xen's `new_guest_cr3` in `dom0_construct_pv`).
        let PvPaging {
            frames, mem, vcpus, ..
        } = &mut pv;
        if let Some(v0) = vcpus.first_mut() {
            frames.new_baseptr(mem, v0, regs.cr3 >> 12)?;
        }
        let mut tables = [0u32; 4];
        for (_, p) in pv.frames.pages() {
            if let PageType::PageTable(level) = p.page_type()
                && p.is_validated()
            {
                let i = match level {
                    Level::L1 => 0,
                    Level::L2 => 1,
                    Level::L3 => 2,
                    Level::L4 => 3,
                };
                tables[i] += 1;
            }
        }
        Ok(tables)
    })();
    let tables = match checked {
        Ok(t) => t,
        Err(e) => {
            // The domain never ran: tear its types down, then `frames` frees
            // every frame when it goes.
            pv.teardown(spec.id);
            return Err(BuildError::PvMmu(e));
        }
    };
    let built = Built {
        pages: layout.nr_pages,
        pt_frames: layout.nr_pt_frames,
        tables,
        l4: Mfn::new(regs.cr3 >> 12).unwrap_or(shared_info),
        entry: regs.rip,
        start_info_va: regs.rsi,
    };
    crate::logger::say!("d{}: PV kernel laid out and checked: {built}", spec.id);

    let start = PvStart {
        rip: regs.rip,
        rsp: regs.rsp,
        rsi: regs.rsi,
        rflags: regs.rflags,
        cs: regs.cs,
        ss: regs.ss,
        cr3: regs.cr3,
        kernel_ss: regs.kernel_ss,
        kernel_sp: regs.kernel_sp,
    };
    let arch_vcpus = (0..spec.max_vcpus)
        .map(|i| {
            let v = if i == 0 {
                ArchPv::new(&start, nx)
            } else {
                ArchPv::new_down(nx)
            };
            ArchVcpu::new(HwVcpu::Pv(Box::new(v)), Vec::new())
        })
        .collect();
    let (evtchn, grants) = crate::domain::channel_tables(spec)?;
    let ram = layout.nr_pages * 4096;
    let memmap = alloc::vec![E820Entry {
        addr: 0,
        size: ram,
        type_: E820_RAM,
    }];
    let owned = core::mem::take(&mut frames.runs);
    Ok(crate::domain::assemble(
        spec,
        Parts {
            guest_type: GuestType::Pv,
            shared_info,
            memmap,
            arch_vcpus,
            p2m: Paging::Pv(pv),
            owned,
            p2m_limit: layout.nr_pages,
            mmio: keel_devices::bus::MmioBus::default(),
            evtchn,
            grants,
        },
    ))
}

/// The machine frame of `pfn` (one of the builder's pages: always in the p2m).
fn mfn_at(p2m: &[Mfn], pfn: u64) -> Result<Mfn, BuildError> {
    usize::try_from(pfn)
        .ok()
        .and_then(|i| p2m.get(i).copied())
        .ok_or(BuildError::PvLayout { pfn })
}

/// The frames a build took from the allocator, in the runs it got them: all
/// returned when dropped (a failed build), unless taken for the domain.
#[derive(Default)]
struct Frames {
    runs: Vec<(Mfn, u64)>,
}

impl Frames {
    /// `n` zeroed frames for pfns 0..n, in 2 MiB runs where the allocator has
    /// them: the machine frame of each pfn, in order.
    fn alloc_ram(&mut self, n: u64) -> Result<Vec<Mfn, FrameAlloc>, BuildError> {
        let mut p2m = Vec::new_in(FrameAlloc);
        p2m.try_reserve_exact(usize::try_from(n).map_err(|_| BuildError::OutOfMemory)?)
            .map_err(|_| BuildError::OutOfMemory)?;
        while (p2m.len() as u64) < n {
            let left = n - p2m.len() as u64;
            let want = left.min(512);
            let got = {
                let mut g = FRAMES.lock();
                let a = g.as_mut().ok_or(BuildError::OutOfMemory)?;
                match a.alloc_contiguous(want, want.next_power_of_two()) {
                    Ok(m) => Some((m, want)),
                    Err(_) => a.alloc().ok().map(|m| (m, 1)),
                }
            };
            let (first, count) = got.ok_or(BuildError::OutOfMemory)?;
            self.runs.push((first, count));
            zero_frames(first, count);
            for i in 0..count {
                p2m.push(Mfn::new(first.as_u64() + i).ok_or(BuildError::OutOfMemory)?);
            }
        }
        Ok(p2m)
    }

    /// One zeroed frame.
    fn alloc_one(&mut self) -> Result<Mfn, BuildError> {
        let m = FRAMES
            .lock()
            .as_mut()
            .ok_or(BuildError::OutOfMemory)?
            .alloc()
            .map_err(|_| BuildError::OutOfMemory)?;
        self.runs.push((m, 1));
        zero_frames(m, 1);
        Ok(m)
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        free_runs(self.runs.drain(..));
    }
}

/// Writes the builder's output at pseudo-physical addresses: pfn `gpa >> 12` is
/// machine frame `p2m[pfn]`.
struct PfnWriter<'a> {
    p2m: &'a [Mfn],
}

impl GuestMemWriter for PfnWriter<'_> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), PvhError> {
        let fail = PvhError::GuestWrite {
            gpa,
            len: data.len() as u64,
        };
        let mut done = 0usize;
        while done < data.len() {
            let at = gpa.checked_add(done as u64).ok_or(fail)?;
            let pfn = usize::try_from(at >> 12).map_err(|_| fail)?;
            let mfn = *self.p2m.get(pfn).ok_or(fail)?;
            let off = (at & 0xFFF) as usize;
            let n = (4096 - off).min(data.len() - done);
            // SAFETY: `mfn` is one of the frames `Frames::alloc_ram` took for this
            // build; they are freed only when the build is over.
            let f = unsafe { Frame::new(mfn) };
            f.write(off, &data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

/// The PV MMU's view of machine memory during a build: the domain's frames
/// through the direct map, and keel's own L4 slots.
pub struct DirectMapPv {
    /// keel's PML4 entries for slots 256..=271, as every guest L4 gets them.
    keel_l4: [u64; 16],
}

impl DirectMapPv {
    fn new() -> DirectMapPv {
        let root = Mfn::new(keel_arch::cpu::read_cr3() >> 12);
        let mut keel_l4 = [0u64; 16];
        if let Some(root) = root {
            // SAFETY: CR3 is keel's own page-table root, a frame keel allocated
            // at boot (`memory::switch_address_space`) and never frees.
            let f = unsafe { Frame::new(root) };
            for (i, e) in keel_l4.iter_mut().enumerate() {
                *e = f.read_u64((256 + i) * 8);
            }
        }
        DirectMapPv { keel_l4 }
    }

    /// The frame `mfn`, which `mm::pv` only names for frames the domain holds
    /// (it checks ownership before it reads or writes a frame's entries).
    fn frame(mfn: Mfn) -> Frame {
        // SAFETY: as above: every frame the domain holds was allocated by
        // `Frames` for this build and is freed only after `DomainFrames` is gone.
        unsafe { Frame::new(mfn) }
    }
}

impl PvMemory for DirectMapPv {
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
        Self::frame(mfn)
            .atomic_u64(index * 8)
            .load(Ordering::Acquire)
    }

    fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64) {
        Self::frame(mfn)
            .atomic_u64(index * 8)
            .store(value, Ordering::Release);
    }

    fn cmpxchg_entry(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64> {
        Self::frame(mfn)
            .atomic_u64(index * 8)
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    /// The boot image maps only the domain's own frames; anything else is
    /// refused as RAM that is not the domain's. (A running domain's I/O memory
    /// rules come with the PV hypercalls, docs/pv.md step 3.)
    fn io_frame(&self, _mfn: Mfn) -> IoFrame {
        IoFrame::NotIo
    }

    fn keel_l4_entry(&self, _l4: Mfn, slot: usize) -> u64 {
        slot.checked_sub(256)
            .and_then(|i| self.keel_l4.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Types change only at the build (nothing ran yet) and at the teardown
    /// (no vCPU runs any more, keel's own CR3 is back on every pCPU, and a pCPU
    /// flushes every guest translation before it runs another PV vCPU,
    /// `arch::pv`). The MMU hypercalls (docs/pv.md step 3) flush here.
    fn before_type_change(&mut self, _mfn: Mfn, _from: PageType, _to: PageType) {}

    /// Xen's `validate_segdesc_page`: the accepted descriptors are written
    /// back as `check_descriptor` fixed them (DPL raised to 3, gates' RPL).
    fn check_segdesc_page(&self, mfn: Mfn) -> bool {
        let f = Self::frame(mfn);
        let mut descs = [0u64; 512];
        for (i, d) in descs.iter_mut().enumerate() {
            *d = f.read_u64(i * 8);
        }
        let ok = keel_x86::pv::descriptor::validate_segdesc_page(&mut descs).is_ok();
        if ok {
            for (i, d) in descs.iter().enumerate() {
                f.write(i * 8, &d.to_le_bytes());
            }
        }
        ok
    }

    fn clear_frame(&mut self, mfn: Mfn) {
        zero_frames(mfn, 1);
    }

    fn copy_frame(&mut self, dst: Mfn, src: Mfn) {
        crate::frames::copy(&Self::frame(src), 0, &Self::frame(dst), 0, 4096);
    }
}

// ---------------------------------------------------------------------------
// The running PV vCPU: bounces (exceptions, a process's `syscall`, events) and
// `iret`, built on `keel_x86::pv`'s pure transitions (docs/pv.md, steps 3-4).
//
// Each runs on the pCPU that holds the vCPU's `arch` lock, with the vCPU's `st`
// lock taken briefly for its `vcpu_info` words and the domain's `mem` lock for
// the guest-stack copy (in that order, the lock order).

/// The PV vCPU behind `arch`, if it is one.
pub fn pv_vcpu(arch: &mut ArchVcpu) -> Option<&mut ArchPv> {
    match &mut **arch {
        HwVcpu::Pv(p) => Some(p),
        _ => None,
    }
}

/// What a bounce reads of the vCPU besides its registers.
fn bounce_vcpu(p: &ArchPv, upcall_mask: u8) -> keel_x86::pv::bounce::BounceVcpu {
    keel_x86::pv::bounce::BounceVcpu {
        mode: p.guest_mode(),
        kernel_sp: p.kernel_sp,
        upcall_mask,
        iopl: p.iopl,
        architectural_iopl: false,
    }
}

/// Writes bounce `b`'s frame on the guest kernel's stack (in kernel mode's
/// address space) and enters the handler; the new upcall mask goes into
/// `vcpu_info`. A frame the guest's tables do not let keel write crashes the
/// domain, as Xen's faulting store does.
fn enter_bounce(
    d: &Domain,
    words: &crate::events::SharedWords,
    arch: &mut ArchVcpu,
    b: &keel_x86::pv::bounce::Bounced,
) -> Result<(), String> {
    let mut bytes = [0u8; 8 * keel_x86::pv::bounce::MAX_FRAME_WORDS];
    let n = b.frame.words().len() * 8;
    for (i, w) in b.frame.words().iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let Some(p) = pv_vcpu(arch) else {
        return Err(String::from("a PV bounce on a vCPU that is not PV (keel bug)"));
    };
    if b.toggle_to_kernel {
        p.set_guest_mode(keel_x86::pv::GuestMode::Kernel);
    }
    let walk = arch.walk_ctx();
    d.copy_to_guest(&walk, b.frame.addr(), &bytes[..n])
        .map_err(|e| alloc::format!("cannot write the bounce frame at {:#x}: {e}", b.frame.addr()))?;
    if let Some(p) = pv_vcpu(arch) {
        p.apply_bounce(b);
    }
    words.set_upcall_mask(b.upcall_mask);
    Ok(())
}

/// Xen's forced-emulation prefix: `ud2; .ascii "xen"`, then the instruction
/// (`xen/include/public/arch-x86/xen.h`, `XEN_EMULATE_PREFIX`). Only CPUID
/// follows it (`XEN_CPUID`).
const FORCED_CPUID: [u8; 7] = [0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2];

/// What a PV kernel's privileged instructions do (Xen's
/// `pv_emulate_privileged_op` and `pv_emulate_forced_invop`): `Some(Ok)` when
/// keel carried the instruction out (RIP moved past it), `None` when the
/// exception goes to the guest as it is.
fn emulate(
    d: &Domain,
    v: &crate::vcpu::Vcpu,
    arch: &mut ArchVcpu,
    vector: u8,
    error_code: Option<u32>,
) -> Option<Result<(), String>> {
    use keel_x86::insn::InsnKind;
    let p = pv_vcpu(arch)?;
    // Only the guest kernel's instructions are emulated, as in Xen.
    if p.guest_mode() != keel_x86::pv::GuestMode::Kernel {
        return None;
    }
    let rip = p.rip();
    let walk = arch.walk_ctx();
    let mut bytes = [0u8; 15];
    // Up to the end of the page first, then the rest if it is mapped.
    let first = ((4096 - (rip & 0xFFF)) as usize).min(15);
    d.copy_from_guest(&walk, rip, &mut bytes[..first]).ok()?;
    let mut have = first;
    if have < 15 && d.copy_from_guest(&walk, rip + have as u64, &mut bytes[have..]).is_ok() {
        have = 15;
    }
    if vector == 14 {
        return ptwr(d, arch, error_code?, &bytes[..have]);
    }
    if vector == 6 {
        if bytes[..have].starts_with(&FORCED_CPUID) {
            crate::vmexit::guest_cpuid(d, v, arch);
            pv_vcpu(arch)?.advance_rip(FORCED_CPUID.len() as u64);
            return Some(Ok(()));
        }
        return None;
    }
    if vector != 13 || error_code != Some(0) {
        return None;
    }
    let insn = keel_x86::insn::decode(&bytes[..have], keel_x86::insn::CodeMode::Long64).ok()?;
    let len = u64::from(insn.len);
    let p = pv_vcpu(arch)?;
    match insn.kind {
        InsnKind::Rdmsr => {
            let msr = p.gprs().rcx as u32;
            let value = p.read_held_msr(msr)?;
            let g = p.gprs_mut();
            g.rax = value & 0xFFFF_FFFF;
            g.rdx = value >> 32;
        }
        InsnKind::Wrmsr => {
            let g = p.gprs();
            let (msr, value) = (g.rcx as u32, (g.rdx << 32) | (g.rax & 0xFFFF_FFFF));
            // The segment bases (Linux writes GS_BASE before it has a trap
            // table); a non-canonical base is the guest's #GP.
            if !keel_x86::pv::is_canonical(value) || !p.write_held_msr(msr, value) {
                return None;
            }
        }
        InsnKind::MovFromCr { cr, gpr } => {
            let value = match cr {
                0 => p.cr0(),
                2 => p.cr2(),
                // The machine address of the L4 (Xen: `xen_pfn_to_cr3`).
                3 => p.cr3_of(keel_x86::pv::GuestMode::Kernel),
                4 => p.cr4(),
                _ => return None,
            };
            *p.gprs_mut().by_encoding_mut(gpr.index())? = value;
        }
        // CR0: only TS may change (Xen's `write_cr`).
        InsnKind::MovToCr { cr: 0, gpr } => {
            let value = p.gprs().by_encoding(gpr.index())?;
            if (value ^ p.cr0()) & !CR0_TS != 0 {
                return None;
            }
            p.cr0_ts = value & CR0_TS != 0;
        }
        InsnKind::Clts => p.cr0_ts = false,
        // Caches keel keeps coherent: nothing to do (Xen flushes only for a
        // domain with cache-flush rights).
        InsnKind::Wbinvd => {}
        _ => return None,
    }
    p.advance_rip(len);
    Some(Ok(()))
}

/// CR0.TS.
const CR0_TS: u64 = 1 << 3;

/// Writable page tables (Xen's `ptwr_do_page_fault`, with
/// `VMASST_TYPE_writable_pagetables` on): a guest kernel's write to one of its
/// own L1 tables, which it maps read-only, is carried out by keel through the
/// PV MMU (`DomainFrames::ptwr_emulate`), which validates the new entry. Only
/// a present-page write fault whose L1 entry maps a validated L1 read-only, by
/// a MOV store, an XCHG or a CMPXCHG (`insn`, the instruction's bytes), is
/// emulated (of CMPXCHG's flags, ZF is set as the CPU would; the others are
/// left alone); anything else, and a write the PV MMU refuses, is the guest's
/// #PF as it was.
fn ptwr(
    d: &Domain,
    arch: &mut ArchVcpu,
    error_code: u32,
    insn: &[u8],
) -> Option<Result<(), String>> {
    use keel_hypercall::abi::xen::VMASST_TYPE_WRITABLE_PAGETABLES;
    use keel_x86::insn::{InsnKind, Operand};
    const PRESENT: u32 = 1;
    const WRITE: u32 = 2;
    const FETCH: u32 = 16;
    if error_code & (PRESENT | WRITE) != PRESENT | WRITE || error_code & FETCH != 0 {
        return None;
    }
    let p = pv_vcpu(arch)?;
    let va = p.cr2();
    let root = p.cr3() >> 12;
    let i = keel_x86::insn::decode(insn, keel_x86::insn::CodeMode::Long64).ok()?;
    let reg_value = |r: keel_x86::insn::Reg, size: u8| {
        p.gprs().by_encoding(r.index()).map(|v| r.read(v, size))
    };
    // What to write, what to compare with (CMPXCHG), and which register gets
    // the old value (XCHG) or, on a failed compare, the accumulator.
    let (size, value, expected, reg) = match i.kind {
        InsnKind::Store { size, src } => (
            size,
            match src {
                Operand::Imm(v) => v,
                Operand::Reg(r, sz) => reg_value(r, sz)?,
            },
            None,
            None,
        ),
        InsnKind::Xchg { size, reg } => (size, reg_value(reg, size)?, None, Some(reg)),
        InsnKind::Cmpxchg { size, reg } => (
            size,
            reg_value(reg, size)?,
            Some(reg_value(keel_x86::insn::Reg::RAX, size)?),
            None,
        ),
        _ => return None,
    };
    let mut mem = d.mem.lock();
    let Paging::Pv(pv) = &mut mem.p2m else {
        return None;
    };
    if pv.vm_assist & (1 << VMASST_TYPE_WRITABLE_PAGETABLES) == 0 {
        return None;
    }
    // The L1 entry that maps `va`: present and read-only, and the frame it
    // maps a validated L1 of this domain.
    let l1 = pv.l1_of(root, va)?;
    if !pv.frames.owns(l1) {
        return None;
    }
    let e = pv.mem.read_entry(l1, ((va >> 12) & 511) as usize);
    if !entry::is_present(e) || e & entry::RW != 0 {
        return None;
    }
    let target = entry::entry_mfn(e);
    if !pv.frames.is_ptwr_target(target) {
        return None;
    }
    let offset = (va & 0xFFF) as usize;
    let field = |e: u64| {
        let shift = (offset % 8) * 8;
        let mask = if size >= 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 };
        (e >> shift) & mask
    };
    let before = field(pv.mem.read_entry(target, offset / 8));
    let mut live = LiveMem { m: &mut pv.mem, d };
    let done = match pv.frames.ptwr_emulate(
        &mut live,
        target,
        offset,
        usize::from(size),
        value,
        expected,
    ) {
        Ok(done) => done,
        Err(e) if e.is_domain_fatal() => return Some(Err(alloc::format!("PV MMU: {e}"))),
        Err(_) => return None,
    };
    drop(mem);
    let p = pv_vcpu(arch)?;
    const ZF: u64 = 1 << 6;
    match (done, i.kind) {
        (keel_mm::pv::PtwrDone::CmpxchgFailed { seen }, _) => {
            let rax = &mut p.gprs_mut().rax;
            *rax = keel_x86::insn::Reg::RAX.write(*rax, seen, size);
            p.set_rflags_bits(ZF, false);
        }
        (_, InsnKind::Cmpxchg { .. }) => p.set_rflags_bits(ZF, true),
        _ => {}
    }
    if let Some(r) = reg {
        let g = p.gprs_mut().by_encoding_mut(r.index())?;
        *g = r.write(*g, before, size);
    }
    p.advance_rip(u64::from(i.len));
    Some(Ok(()))
}

/// An exception of the guest's (`Exit::Exception`): bounced to its trap-table
/// handler (Xen's `pv_inject_event`), CR2 into `vcpu_info` for a page fault.
/// Without a handler, or with a frame keel cannot write, the domain crashes
/// with the reason (as Xen's does).
pub fn exception(
    d: &Domain,
    v: &crate::vcpu::Vcpu,
    arch: &mut ArchVcpu,
    vector: u8,
    error_code: Option<u32>,
) -> Result<(), String> {
    if let Some(done) = emulate(d, v, arch, vector, error_code) {
        return done;
    }
    let Some(p) = pv_vcpu(arch) else {
        return Err(String::from("a PV exception on a vCPU that is not PV (keel bug)"));
    };
    let name = keel_arch::traps::exception_name(u64::from(vector));
    let (rip, rsp, mode, cr2) = (p.rip(), p.rsp(), p.guest_mode(), p.cr2());
    let tb = p
        .traps
        .inject_exception(vector, error_code.unwrap_or(0), mode);
    let report = |why: &str| {
        let code = error_code.map_or(String::new(), |c| alloc::format!(", error code {c:#x}"));
        let cr2 = if vector == 14 {
            alloc::format!(", cr2 {cr2:#x}")
        } else {
            String::new()
        };
        alloc::format!("PV guest {name} at rip {rip:#x}, rsp {rsp:#x}{code}{cr2}, in {mode:?} mode: {why}")
    };
    // `int $n` through a DPL-0 gate is a #GP whose error code names the IDT
    // (bit 1): Xen's `do_general_protection` delivers it to the guest's entry
    // `n` if that entry's DPL allows, RIP past the 2-byte instruction. The
    // vector comes from the instruction itself (QEMU's TCG puts `n * 16 + 2`
    // in the error code, hardware `n * 8 + 2`).
    let mut tb = tb;
    if vector == 13 && error_code.is_some_and(|ec| ec & 3 == 2) {
        let walk = arch.walk_ctx();
        let mut insn = [0u8; 2];
        if d.copy_from_guest(&walk, rip, &mut insn).is_ok() && insn[0] == 0xCD {
            let p = pv_vcpu(arch).ok_or_else(|| report("not a PV vCPU (keel bug)"))?;
            if p.traps.permit_softint(insn[1], mode) {
                p.advance_rip(2);
                tb = p.traps.inject_sw_interrupt(insn[1]);
            }
        }
    }
    let Some(p) = pv_vcpu(arch) else {
        return Err(report("not a PV vCPU (keel bug)"));
    };
    if tb.eip == 0 {
        return Err(report("the guest has no handler for it"));
    }
    let st = v.st.lock();
    let words = crate::events::SharedWords::of(d, &st);
    if vector == 14 {
        words.set_cr2(cr2);
    }
    let b = keel_x86::pv::bounce::create_bounce_frame(
        &p.bounce_regs(),
        &bounce_vcpu(p, words.upcall_mask_byte()),
        &tb,
    )
    .map_err(|e| report(&alloc::format!("bouncing it: {e}")))?;
    enter_bounce(d, &words, arch, &b).map_err(|e| report(&e))
}

/// A `syscall` from one of the guest's processes: bounced to the guest
/// kernel's syscall callback (or #UD to its trap 6 without one; Xen's
/// `lstar_enter`/`cstar_enter` from user mode).
pub fn guest_syscall(
    d: &Domain,
    v: &crate::vcpu::Vcpu,
    arch: &mut ArchVcpu,
    compat: bool,
) -> Result<(), String> {
    use keel_x86::pv::bounce::{SyscallCallbacks, SyscallFrom, user_syscall};
    let Some(p) = pv_vcpu(arch) else {
        return Err(String::from("a PV syscall on a vCPU that is not PV (keel bug)"));
    };
    let st = v.st.lock();
    let words = crate::events::SharedWords::of(d, &st);
    let cb = SyscallCallbacks {
        syscall: p.callbacks.syscall,
        syscall32: p.callbacks.syscall32,
        disables_events: p.callbacks.syscall_disables_events,
    };
    let from = if compat {
        SyscallFrom::Compat
    } else {
        SyscallFrom::Long
    };
    let r = p.bounce_regs();
    let b = user_syscall(
        from,
        r.rip,
        r.rflags,
        r.rsp,
        &cb,
        &p.traps,
        &bounce_vcpu(p, words.upcall_mask_byte()),
    )
    .map_err(|e| alloc::format!("PV guest process SYSCALL at rip {:#x}: {e}", r.rip))?;
    enter_bounce(d, &words, arch, &b)
}

/// On the way into the guest: an upcall pending and not masked is bounced to
/// the event callback, masking events (Xen's `test_guest_events`). Without a
/// callback the event waits, as in Xen.
pub fn deliver_events(
    d: &Domain,
    st: &crate::vcpu::VcpuState,
    arch: &mut ArchVcpu,
) -> Result<(), String> {
    let Some(p) = pv_vcpu(arch) else {
        return Ok(());
    };
    let words = crate::events::SharedWords::of(d, st);
    if !words.has_upcall() || words.upcalls_masked() || p.callbacks.event == 0 {
        return Ok(());
    }
    let tb = keel_x86::pv::bounce::TrapBounce {
        eip: p.callbacks.event,
        mask_events: true,
        error_code: None,
    };
    let b = keel_x86::pv::bounce::create_bounce_frame(
        &p.bounce_regs(),
        &bounce_vcpu(p, words.upcall_mask_byte()),
        &tb,
    )
    .map_err(|e| alloc::format!("delivering an event to the PV guest: {e}"))?;
    enter_bounce(d, &words, arch, &b)
        .map_err(|e| alloc::format!("delivering an event to the PV guest: {e}"))
}

/// The `iret` hypercall: reads the `iret_context` at the guest's RSP and
/// returns as it says (`keel_x86::pv::iret::do_iret`). `Ok`: the new RAX (the
/// hypercall's return value must not clobber the restored one). A context
/// keel cannot read, or a return to user mode with no user page table,
/// crashes the domain, as in Xen.
pub fn iret(
    d: &Domain,
    v: &crate::vcpu::Vcpu,
    arch: &mut ArchVcpu,
) -> Result<u64, String> {
    use keel_hypercall::abi::pv::IretContext;
    use keel_x86::pv::iret::{IretVcpu, do_iret};
    let walk = arch.walk_ctx();
    let Some(p) = pv_vcpu(arch) else {
        return Err(String::from("iret on a vCPU that is not PV (keel bug)"));
    };
    let rsp = p.rsp();
    let mut raw = [0u8; IretContext::SIZE];
    d.copy_from_guest(&walk, rsp, &mut raw)
        .map_err(|e| alloc::format!("iret: cannot read the iret context at {rsp:#x}: {e}"))?;
    let ctx = IretContext::from_bytes(&raw);
    let r = do_iret(
        &ctx,
        &IretVcpu {
            mode: p.guest_mode(),
            has_user_pagetable: p.has_user_root(),
            architectural_iopl: false,
        },
    )
    .map_err(|e| alloc::format!("iret: {e}"))?;
    p.apply_iret(&r);
    let st = v.st.lock();
    crate::events::SharedWords::of(d, &st).set_upcall_mask(r.upcall_mask);
    Ok(r.rax)
}

// ---------------------------------------------------------------------------
// The PV MMU hypercalls (`mmu_update`, `mmuext_op`, `update_va_mapping`), one
// request at a time on the calling vCPU's domain, under its `mem` lock
// (`mm::pv`'s "How the kernel uses this").

/// The PV MMU's view of a running domain's memory: [`DirectMapPv`], plus the
/// synchronous flush a type change needs (`mm::pv`'s first hazard): a frame
/// that was writable may still be mapped writable in some pCPU's TLB, and the
/// guest's other vCPUs run during the operation, so before it becomes a page
/// table or descriptor page every vCPU of the domain flushes (those in guest
/// mode on other pCPUs are interrupted and waited for; `Domain::flush_tlbs`
/// never needs the `mem` lock held here).
struct LiveMem<'a> {
    m: &'a mut DirectMapPv,
    d: &'a Domain,
}

impl PvMemory for LiveMem<'_> {
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
        self.m.read_entry(mfn, index)
    }
    fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64) {
        self.m.write_entry(mfn, index, value)
    }
    fn cmpxchg_entry(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64> {
        self.m.cmpxchg_entry(mfn, index, old, new)
    }
    fn io_frame(&self, mfn: Mfn) -> IoFrame {
        self.m.io_frame(mfn)
    }
    fn keel_l4_entry(&self, l4: Mfn, slot: usize) -> u64 {
        self.m.keel_l4_entry(l4, slot)
    }
    fn before_type_change(&mut self, _mfn: Mfn, from: PageType, to: PageType) {
        if from == PageType::Writable && to != PageType::Writable {
            self.d.flush_tlbs();
        }
    }
    fn check_segdesc_page(&self, mfn: Mfn) -> bool {
        self.m.check_segdesc_page(mfn)
    }
    fn clear_frame(&mut self, mfn: Mfn) {
        self.m.clear_frame(mfn)
    }
    fn copy_frame(&mut self, dst: Mfn, src: Mfn) {
        self.m.copy_frame(dst, src)
    }
}

/// Carries out a flush the PV MMU asks for: this vCPU before its next entry
/// ([`Flush::Local`]), or every vCPU of the domain ([`Flush::Domain`]).
fn do_flush(d: &Domain, arch: &mut ArchVcpu, f: Option<keel_mm::pv::Flush>) {
    match f {
        None => {}
        Some(keel_mm::pv::Flush::Local(_)) => arch.flush_guest_tlb(),
        Some(keel_mm::pv::Flush::Domain(_)) => {
            d.flush_tlbs();
            arch.flush_guest_tlb();
        }
    }
}

/// Why a PV MMU request failed: the errno, or (for a failure that leaves keel's
/// bookkeeping for the domain unsafe to trust) the domain's end.
pub enum MmuError {
    Errno(keel_hypercall::abi::Errno),
    Crash(String),
}

fn mmu_error(e: keel_mm::pv::PvError) -> MmuError {
    if e.is_domain_fatal() {
        MmuError::Crash(alloc::format!("PV MMU: {e}"))
    } else {
        MmuError::Errno(e.errno())
    }
}

/// Only the calling domain's own tables: Xen lets a privileged domain name a
/// foreign one (for its tools); keel does not yet.
fn check_foreigndom(d: &Domain, foreigndom: u16) -> Result<(), MmuError> {
    use keel_hypercall::abi::domid::DOMID_SELF;
    if foreigndom == DOMID_SELF || foreigndom == d.id {
        Ok(())
    } else if d.privileged {
        Err(MmuError::Errno(keel_hypercall::abi::Errno::EINVAL))
    } else {
        Err(MmuError::Errno(keel_hypercall::abi::Errno::EPERM))
    }
}

/// One `mmu_update` request.
pub fn mmu_update(
    d: &Domain,
    arch: &mut ArchVcpu,
    req: &keel_hypercall::abi::mmu::MmuUpdate,
    foreigndom: u16,
) -> Result<(), MmuError> {
    check_foreigndom(d, foreigndom)?;
    let flush = {
        let mut mem = d.mem.lock();
        let Paging::Pv(pv) = &mut mem.p2m else {
            return Err(MmuError::Errno(keel_hypercall::abi::Errno::ENOSYS));
        };
        let mut live = LiveMem { m: &mut pv.mem, d };
        match pv.frames.mmu_update(&mut live, req).map_err(mmu_error)? {
            keel_mm::pv::MmuUpdateDone::Written { flush } => flush,
            // keel keeps no machine-to-phys table a guest reads yet: the
            // request is checked (the frame is the domain's) and has no
            // further effect.
            keel_mm::pv::MmuUpdateDone::MachPhys { .. } => None,
        }
    };
    do_flush(d, arch, flush);
    Ok(())
}

/// One `mmuext_op` operation of vCPU `v`.
pub fn mmuext_op(
    d: &Domain,
    v: &crate::vcpu::Vcpu,
    arch: &mut ArchVcpu,
    op: &keel_hypercall::abi::mmu::MmuextOp,
    foreigndom: u16,
) -> Result<(), MmuError> {
    use keel_hypercall::abi::Errno;
    use keel_mm::pv::{Flush, MmuextAction};
    check_foreigndom(d, foreigndom)?;
    let (action, kernel_root, user_root) = {
        let mut mem = d.mem.lock();
        let Paging::Pv(pv) = &mut mem.p2m else {
            return Err(MmuError::Errno(Errno::ENOSYS));
        };
        let Some(vm) = pv.vcpus.get_mut(v.id as usize) else {
            return Err(MmuError::Errno(Errno::EINVAL));
        };
        let mut live = LiveMem { m: &mut pv.mem, d };
        let action = pv.frames.mmuext_op(&mut live, vm, op).map_err(mmu_error)?;
        (action, vm.kernel_root(), vm.user_root())
    };
    let Some(p) = pv_vcpu(arch) else {
        return Err(MmuError::Errno(Errno::ENOSYS));
    };
    // The arch vCPU loads what the PV MMU holds references for.
    if let Some(k) = kernel_root
        && p.cr3_of(keel_x86::pv::GuestMode::Kernel) != k.hpa().as_u64()
    {
        p.set_kernel_root(k.hpa().as_u64());
    }
    let user = user_root.map(|u| u.hpa().as_u64());
    if p.user_root() != user {
        p.set_user_root(user);
    }
    match action {
        MmuextAction::None | MmuextAction::LoadBaseptr { .. } => {}
        MmuextAction::Flush(f) => do_flush(d, arch, Some(f)),
        // Every vCPU of the domain rather than those in the mask (a superset).
        MmuextAction::FlushMulti { .. } => do_flush(d, arch, Some(Flush::Domain(keel_mm::pv::Extent::Full))),
        // keel runs guests on write-back memory it keeps coherent; nothing a
        // guest's WBINVD would change is keel's to do.
        MmuextAction::FlushCache { .. } => {}
        MmuextAction::LoadLdt { ents: 0, .. } => {}
        MmuextAction::LoadLdt { .. } => {
            return Err(MmuError::Errno(Errno::ENOSYS));
        }
    }
    Ok(())
}

/// `update_va_mapping(va, val, flags)`: the L1 entry that maps `va` in the
/// vCPU's current page tables becomes `val`, then the `UVMF_*` flush.
pub fn update_va_mapping(
    d: &Domain,
    arch: &mut ArchVcpu,
    va: u64,
    val: u64,
    flags: u64,
) -> Result<(), MmuError> {
    use keel_hypercall::abi::Errno;
    use keel_hypercall::abi::mmu::{UVMF_ALL, UVMF_FLUSHTYPE_MASK, UVMF_NONE};
    if !keel_x86::pv::guest_addr_ok(va) {
        return Err(MmuError::Errno(Errno::EINVAL));
    }
    let root = arch.cr3() >> 12;
    {
        let mut mem = d.mem.lock();
        let Paging::Pv(pv) = &mut mem.p2m else {
            return Err(MmuError::Errno(Errno::ENOSYS));
        };
        let table = pv.l1_of(root, va).ok_or(MmuError::Errno(Errno::EINVAL))?;
        let index = ((va >> 12) & 511) as usize;
        let mut live = LiveMem { m: &mut pv.mem, d };
        pv.frames
            .update_l1_entry(&mut live, table, index, val)
            .map_err(mmu_error)?;
    }
    let flush = match flags & UVMF_FLUSHTYPE_MASK {
        UVMF_NONE => None,
        // A vCPU mask (UVMF_MULTI: a pointer in the upper bits) or every vCPU:
        // the whole domain; otherwise this vCPU.
        _ if flags & !UVMF_FLUSHTYPE_MASK != 0 || flags & UVMF_ALL != 0 => {
            Some(keel_mm::pv::Flush::Domain(keel_mm::pv::Extent::Full))
        }
        _ => Some(keel_mm::pv::Flush::Local(keel_mm::pv::Extent::Full)),
    };
    do_flush(d, arch, flush);
    Ok(())
}

// ---------------------------------------------------------------------------
// The guest's GDT (`set_gdt`, `update_descriptor`).

/// `set_gdt(frames, entries)` for vCPU `v`: each frame must be the domain's
/// and become a descriptor page (every descriptor checked, Xen's
/// `validate_segdesc_page`; a frame mapped writable cannot); the old frames'
/// references go. The pCPU shows them from the next entry (`arch::pv`).
pub fn set_gdt(
    d: &Domain,
    v: &crate::vcpu::Vcpu,
    arch: &mut ArchVcpu,
    frames: &[u64],
    entries: u32,
) -> Result<(), MmuError> {
    use keel_hypercall::abi::Errno;
    let nframes = keel_x86::pv::descriptor::set_gdt_frames(entries).map_err(MmuError::Errno)?;
    if frames.len() < nframes {
        return Err(MmuError::Errno(Errno::EINVAL));
    }
    let mut mem = d.mem.lock();
    let Paging::Pv(pv) = &mut mem.p2m else {
        return Err(MmuError::Errno(Errno::ENOSYS));
    };
    let mut live = LiveMem { m: &mut pv.mem, d };
    let mut taken: Vec<Mfn> = Vec::new();
    for &f in &frames[..nframes] {
        let got = Mfn::new(f)
            .ok_or(keel_mm::pv::PvError::InvalidMfn)
            .and_then(|m| pv.frames.get_segdesc_page(&mut live, m).map(|()| m));
        match got {
            Ok(m) => taken.push(m),
            Err(e) => {
                for m in taken {
                    let _ = pv.frames.put_segdesc_page(&mut live, m);
                }
                return Err(mmu_error(e));
            }
        }
    }
    let slot = pv
        .gdts
        .get_mut(v.id as usize)
        .ok_or(MmuError::Errno(Errno::EINVAL))?;
    let old = core::mem::replace(slot, taken);
    for m in old {
        pv.frames.put_segdesc_page(&mut live, m).map_err(mmu_error)?;
    }
    let maddrs: Vec<u64> = slot.iter().map(|m| m.hpa().as_u64()).collect();
    drop(mem);
    if let Some(p) = pv_vcpu(arch) {
        p.set_gdt(&maddrs, entries);
    }
    Ok(())
}

/// `update_descriptor(maddr, desc)`: one descriptor of the domain's frame,
/// checked (`check_descriptor`); the frame must be a descriptor page or one
/// that can be written (Xen's `do_update_descriptor`). A GDT frame of the
/// calling vCPU's is shown from its next entry.
pub fn update_descriptor(
    d: &Domain,
    arch: &mut ArchVcpu,
    maddr: u64,
    desc: u64,
) -> Result<(), MmuError> {
    use keel_hypercall::abi::Errno;
    let checked = keel_x86::pv::descriptor::update_descriptor(maddr, desc).map_err(MmuError::Errno)?;
    let mfn = Mfn::new(maddr >> 12).ok_or(MmuError::Errno(Errno::EINVAL))?;
    let mut mem = d.mem.lock();
    let Paging::Pv(pv) = &mut mem.p2m else {
        return Err(MmuError::Errno(Errno::ENOSYS));
    };
    let (is_segdesc, is_table) = pv.frames.page(mfn).map_or((false, false), |p| {
        let held = p.type_count() > 0;
        (
            held && p.page_type() == PageType::SegDesc,
            held && matches!(p.page_type(), PageType::PageTable(_)),
        )
    });
    // A page table cannot take a writable reference (Xen's
    // `get_page_type(page, PGT_writable_page)` fails): -EINVAL, rather than
    // an entry update by another name.
    if is_table {
        return Err(MmuError::Errno(Errno::EINVAL));
    }
    if is_segdesc {
        // Its type cannot change while the domain's lock is held.
        DirectMapPv::frame(mfn).write((maddr & 0xFFF) as usize, &checked.to_le_bytes());
    } else {
        // Any other frame of the domain's: written as data, under a writable
        // type reference (refused for page tables).
        let mut live = LiveMem { m: &mut pv.mem, d };
        let req = keel_hypercall::abi::mmu::MmuUpdate {
            ptr: maddr & !7,
            val: checked,
        };
        pv.frames
            .mmu_update(&mut live, &req)
            .map_err(|_| MmuError::Errno(Errno::EINVAL))?;
    }
    drop(mem);
    if let Some(p) = pv_vcpu(arch) {
        p.gdt_changed();
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// `VCPUOP_initialise` of a PV vCPU (Xen's `arch_set_info_guest`, 64-bit PV).

/// Checks `ctx` for vCPU `vid` of `d` and takes what it references: its L4
/// (and user L4) as base pointers, validated; its GDT frames as descriptor
/// pages. Gives the state the vCPU loads at its next entry. On any error
/// nothing is held: `EINVAL` for a state Xen refuses (non-canonical handlers
/// or bases, an LDT, a GDT or L4 the PV MMU refuses).
pub fn check_initialise(
    d: &Domain,
    vid: u32,
    ctx: &keel_hypercall::abi::pv::VcpuGuestContext,
) -> Result<keel_arch::pv::PvInit, keel_hypercall::abi::Errno> {
    use keel_hypercall::abi::Errno;
    use keel_hypercall::abi::pv::{VGCF_FAILSAFE_DISABLES_EVENTS, VGCF_IN_KERNEL};
    use keel_x86::pv::is_canonical;
    let canonical = [
        ctx.event_callback_eip,
        ctx.failsafe_callback_eip,
        ctx.syscall_callback_eip,
        ctx.fs_base,
        ctx.gs_base_kernel,
        ctx.gs_base_user,
        ctx.ldt_base,
    ];
    if !canonical.into_iter().all(is_canonical) || ctx.ldt_ents != 0 {
        return Err(Errno::EINVAL);
    }
    let mut traps = keel_x86::pv::trap::TrapTable::new();
    for t in ctx.trap_ctxt.iter().filter(|t| t.address != 0) {
        traps.set_trap(*t)?;
    }
    let gdt_entries = u32::try_from(ctx.gdt_ents).map_err(|_| Errno::EINVAL)?;
    let nframes = keel_x86::pv::descriptor::set_gdt_frames(gdt_entries)?;
    let kernel_l4 = Mfn::new(ctx.ctrlreg[3] >> 12).ok_or(Errno::EINVAL)?;
    let user_l4 = match ctx.ctrlreg[1] >> 12 {
        0 => None,
        m => Some(Mfn::new(m).ok_or(Errno::EINVAL)?),
    };

    let mut mem = d.mem.lock();
    let Paging::Pv(pv) = &mut mem.p2m else {
        return Err(Errno::ENOSYS);
    };
    let PvPaging {
        frames,
        mem: dm,
        vcpus,
        gdts,
        ..
    } = pv;
    let mut live = LiveMem { m: dm, d };
    let vm = vcpus.get_mut(vid as usize).ok_or(Errno::ENOENT)?;
    let gdt = gdts.get_mut(vid as usize).ok_or(Errno::ENOENT)?;
    if vm.kernel_root().is_some() || !gdt.is_empty() {
        // Only a vCPU without a state gets one (the caller checked
        // `initialised`; this is what the PV MMU holds for it).
        return Err(Errno::EEXIST);
    }
    let undo = |frames: &mut DomainFrames<FrameAlloc>,
                live: &mut LiveMem<'_>,
                vm: &mut PvVcpu,
                gdt: &mut Vec<Mfn>| {
        let _ = frames.destroy_pagetables(live, vm);
        for m in gdt.drain(..) {
            let _ = frames.put_segdesc_page(live, m);
        }
    };
    let r = (|| {
        frames.new_baseptr(&mut live, vm, kernel_l4.as_u64())?;
        if let Some(u) = user_l4 {
            frames.new_user_baseptr(&mut live, vm, u.as_u64())?;
        }
        for &f in &ctx.gdt_frames[..nframes] {
            let m = Mfn::new(f).ok_or(keel_mm::pv::PvError::InvalidMfn)?;
            frames.get_segdesc_page(&mut live, m)?;
            gdt.push(m);
        }
        Ok::<(), keel_mm::pv::PvError>(())
    })();
    if let Err(e) = r {
        log::info!("d{}v{vid}: VCPUOP_initialise refused: {e}", d.id);
        undo(frames, &mut live, vm, gdt);
        return Err(Errno::EINVAL);
    }
    let mut gdt_frames = [0u64; keel_arch::pv::GDT_GUEST_PAGES];
    for (dst, m) in gdt_frames.iter_mut().zip(gdt.iter()) {
        *dst = m.hpa().as_u64();
    }
    let r = &ctx.user_regs;
    Ok(keel_arch::pv::PvInit {
        gprs: keel_arch::hvm::GuestGprs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
        },
        rip: r.rip,
        rsp: r.rsp,
        rflags: r.rflags,
        cs: r.cs,
        ss: r.ss,
        kernel_mode: ctx.flags & VGCF_IN_KERNEL != 0,
        kernel_cr3: kernel_l4.hpa().as_u64(),
        user_cr3: user_l4.map(|m| m.hpa().as_u64()),
        traps,
        callbacks: keel_arch::pv::Callbacks {
            event: ctx.event_callback_eip,
            failsafe: ctx.failsafe_callback_eip,
            failsafe_disables_events: ctx.flags & VGCF_FAILSAFE_DISABLES_EVENTS != 0,
            syscall: ctx.syscall_callback_eip,
            syscall32: 0,
            syscall_disables_events: ctx.flags
                & keel_hypercall::abi::pv::VGCF_SYSCALL_DISABLES_EVENTS
                != 0,
        },
        kernel_ss: ctx.kernel_ss as u16 | 3,
        kernel_sp: ctx.kernel_sp,
        gdt_frames,
        gdt_entries,
        fs_base: ctx.fs_base,
        gs_base_kernel: ctx.gs_base_kernel,
        gs_base_user: ctx.gs_base_user,
    })
}
