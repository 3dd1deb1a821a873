//! PV domains, as far as keel builds them today (docs/pv.md, step 1): a PV kernel
//! is laid out by `builder::pv` in frames keel allocates, its initial page tables
//! are validated by the PV MMU (`mm::pv`) exactly as a running guest's would be,
//! and the domain is torn down again, every frame accounted for, because keel
//! cannot run a PV vCPU yet (steps 2 to 4).
//!
//! # What the trial build proves
//!
//! - The builder's start-of-day image fits keel's allocator and direct map: the
//!   kernel, initrd, p2m list, start_info, xenstore/console pages, page tables and
//!   boot stack land in the domain's own frames ([`PfnWriter`]).
//! - keel's PV MMU accepts the builder's page tables: vCPU 0's base pointer takes
//!   an L4 type reference (Xen's `new_guest_cr3` in `dom0_construct_pv`), which
//!   validates every table below it against Xen's rules, with keel's own L4 slots
//!   256..=271 filled from keel's page tables ([`DirectMapPv::keel_l4_entry`]).
//! - Teardown balances: dropping the base pointer and relinquishing the domain's
//!   memory returns every frame through `DomainFrames::pop_freed`, once.
//!
//! # Locking
//! None shared: the domain under construction is reachable from nowhere else (it
//! has no id in the domain table, no vCPU runs it), so its `DomainFrames` needs no
//! lock here. Only the frame allocator's lock is taken, briefly, per allocation
//! and at the final free. Once PV domains run, their `DomainFrames` lives under the
//! domain's lock (`mm::pv`'s `# Locking`).

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use keel_builder::pv::{self as bpv, PvBoot, PvSpec, Role};
use keel_builder::pvh::{GuestMemWriter, PvhError};
use keel_hypercall::abi::features::{
    XENFEAT_DOM0, XENFEAT_PAE_PGDIR_ABOVE_4GB, XENFEAT_WRITABLE_PAGE_TABLES, bit,
};
use keel_mm::addr::Mfn;
use keel_mm::pv::{DomainFrames, IoFrame, Level, PageType, Policy, PvMemory, PvVcpu};
use keel_x86::hypercall_page::HYPERCALL_PAGE_SIZE;

use crate::domain::{BuildError, PvhSpec};
use crate::frames::Frame;
use crate::memory::{FRAMES, FrameAlloc, free_runs, zero_frames};

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

/// What a trial build found, for the log.
#[derive(Clone, Copy, Debug)]
pub struct Trial {
    /// Pages of RAM the domain got (`start_info.nr_pages`).
    pub pages: u64,
    /// Page-table frames of the boot region (`start_info.nr_pt_frames`).
    pub pt_frames: u64,
    /// Validated page tables, by level (L1..L4), once vCPU 0's base was set.
    pub tables: [u32; 4],
    /// The L4 vCPU 0 would start on.
    pub l4: Mfn,
    /// Where it would start, and its start_info.
    pub entry: u64,
    pub start_info_va: u64,
    /// Frames the teardown returned (equal to `pages` + 1 for shared_info
    /// when it balances).
    pub returned: u64,
}

impl core::fmt::Display for Trial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [l1, l2, l3, l4] = self.tables;
        write!(
            f,
            "{} pages, {} boot page-table frames validated as vCPU 0's base \
             (L4 {:#x}: {l4} L4, {l3} L3, {l2} L2, {l1} L1), entry {:#x}, start_info at {:#x}; \
             torn down, {} frames returned",
            self.pages,
            self.pt_frames,
            self.l4.as_u64(),
            self.entry,
            self.start_info_va,
            self.returned,
        )
    }
}

/// [`trial_build`], then the line that says what it found (`d<id>: PV kernel
/// laid out and checked: ...`): what a PV Dom0 or domU gets until keel runs PV.
pub fn check(spec: &PvhSpec<'_>) -> Result<(), BuildError> {
    let trial = trial_build(spec)?;
    crate::logger::say!("d{}: PV kernel laid out and checked: {trial}", spec.id);
    Ok(())
}

/// Builds the PV domain `spec` describes, validates its page tables, and tears it
/// down again (see the module doc). A failure of any step is the build's error;
/// every frame taken is returned either way.
pub fn trial_build(spec: &PvhSpec<'_>) -> Result<Trial, BuildError> {
    let role = if spec.privileged && spec.id == 0 {
        Role::Dom0
    } else {
        Role::DomU
    };
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

    let mut mem = DirectMapPv::new();
    // The page-type state lives in frames, not on keel's heap (16 bytes a frame).
    let mut df = DomainFrames::new_in(
        Policy {
        nx: keel_arch::cpu::CpuInfo::detect().nx,
            io_caps: false,
            linear_pt: true,
            l1tf_safe_maddr: None,
        },
        FrameAlloc,
    );
    let mut vcpu0 = PvVcpu::new();
    let checked = (|| {
        for &m in &p2m {
            df.assign(m)?;
        }
        df.assign_special(shared_info)?;
        // vCPU 0's base pointer: an L4 type reference, validating the tree.
        df.new_baseptr(&mut mem, &mut vcpu0, regs.cr3 >> 12)?;
        let mut tables = [0u32; 4];
        for (_, p) in df.pages() {
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
    // Teardown, whatever the validation said: the base pointer, then everything.
    let torn = df
        .destroy_pagetables(&mut mem, &mut vcpu0)
        .and_then(|()| df.relinquish(&mut mem));
    let mut returned = 0u64;
    while df.pop_freed().is_some() {
        returned += 1;
    }
    let held = df.len();
    drop(df);
    // Every frame goes back to the allocator now, counted or not: the domain never
    // ran, so no TLB holds a translation of them.
    drop(frames);
    let tables = checked.map_err(BuildError::PvMmu)?;
    torn.map_err(BuildError::PvMmu)?;
    if held != 0 || returned != layout.nr_pages + 1 {
        log::error!(
            "PV trial build: teardown returned {returned} of {} frames, {held} still held",
            layout.nr_pages + 1
        );
        return Err(BuildError::PvTeardown);
    }
    Ok(Trial {
        pages: layout.nr_pages,
        pt_frames: layout.nr_pt_frames,
        tables,
        l4: Mfn::new(regs.cr3 >> 12).unwrap_or(shared_info),
        entry: regs.rip,
        start_info_va: regs.rsi,
        returned,
    })
}

/// The frames a trial build took from the allocator, in the runs it got them:
/// all returned when dropped.
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
struct DirectMapPv {
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

    /// The domain has never run: no pCPU holds a translation of its frames.
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
