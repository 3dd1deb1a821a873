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

use keel_arch::hvm::Vcpu as HwVcpu;
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
use keel_mm::pv::{DomainFrames, IoFrame, Level, PageType, Policy, PvMemory, PvVcpu};
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
}

/// Offset of `console.domU.evtchn` in `start_info` (`xen.h`, x86_64).
pub const START_INFO_CONSOLE_EVTCHN: usize = 80;

impl PvPaging {
    /// Drops every base pointer and page type and checks that every frame came
    /// back through `pop_freed` (a dead domain's, before its frames are freed).
    pub fn teardown(&mut self, domid: u16) {
        let held = self.frames.len();
        let mut result = Ok(());
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
    /// guest that is not translated); writable unless it is a page table or
    /// descriptor page.
    fn translate(&self, gfn: Gfn) -> Option<(Mfn, Access)> {
        let mfn = Mfn::new(gfn.as_u64())?;
        let w = self.access(mfn)?;
        Some((mfn, if w { Access::RW } else { Access::R }))
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
    };
    let checked = (|| {
        for &m in pv.p2m.iter() {
            pv.frames.assign(m)?;
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

    fn check_segdesc_page(&self, mfn: Mfn) -> bool {
        let f = Self::frame(mfn);
        let mut descs = [0u64; 512];
        for (i, d) in descs.iter_mut().enumerate() {
            *d = f.read_u64(i * 8);
        }
        keel_x86::pv::descriptor::validate_segdesc_page(&mut descs).is_ok()
    }

    fn clear_frame(&mut self, mfn: Mfn) {
        zero_frames(mfn, 1);
    }

    fn copy_frame(&mut self, dst: Mfn, src: Mfn) {
        crate::frames::copy(&Self::frame(src), 0, &Self::frame(dst), 0, 4096);
    }
}
