//! The operations a PV guest (or the kernel on its behalf) asks for, one request at
//! a time: `mmu_update` requests, `mmuext_op` operations, `update_va_mapping`, the
//! emulated write to a read-only L1 (Xen's `ptwr_emulated_update`), and the
//! kernel's own uses: descriptor pages, giving frames back, a vCPU's or the whole
//! domain's end.
//!
//! Each returns what the kernel must do next that is not page-type state: a TLB
//! flush, a CR3 or LDT reload, an M2P write. Every operation either succeeds or
//! leaves the references as they were (types of unreferenced frames aside).

use core::alloc::Allocator;

use keel_hypercall::abi::mmu::{self as abi, MmuUpdate, MmuextOp};

use crate::addr::{Gva, Hpa, Mfn};

use super::entry::{self, ACCESSED, DIRTY, ENTRIES, FASTPATH_FLAGS, is_guest_l4_slot, is_present};
use super::page::{DomainFrames, Level, PageInfo, PageType};
use super::{PvError, PvMemory};

/// Which translations a flush drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// All non-global ones (a CR3 reload; Xen's `FLUSH_TLB`).
    Full,
    /// Those of one page (`invlpg`).
    Page(Gva),
}

/// TLB maintenance the kernel owes before the calling vCPU next runs guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// On this pCPU.
    Local(Extent),
    /// On every pCPU that may hold the domain's translations (Xen's
    /// `d->dirty_cpumask`), this one included.
    Domain(Extent),
}

impl Flush {
    pub fn extent(self) -> Extent {
        match self {
            Flush::Local(e) | Flush::Domain(e) => e,
        }
    }

    /// One flush that does the work of both (for a batch of requests): the wider
    /// set of pCPUs, and one page only if both name the same page.
    pub fn merge(a: Option<Flush>, b: Option<Flush>) -> Option<Flush> {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some(a), Some(b)) => {
                let extent = if a.extent() == b.extent() {
                    a.extent()
                } else {
                    Extent::Full
                };
                Some(match (a, b) {
                    (Flush::Local(_), Flush::Local(_)) => Flush::Local(extent),
                    _ => Flush::Domain(extent),
                })
            }
        }
    }
}

/// What one `mmu_update` request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuUpdateDone {
    /// The entry (or the word of an ordinary page) was written. An L2..L4 change
    /// asks for [`Flush::Domain`]: Xen does so (`flush_linear_pt` in
    /// `do_mmu_update`) because translations through linear page tables, the
    /// guest's and its own, may be stale. An L1 change asks for nothing: the guest
    /// flushes its own TLB, and keel's safety never rests on an L1 mapping being
    /// gone before a frame changes type or is freed (see the hazards in `pv`).
    Written { flush: Option<Flush> },
    /// `MMU_MACHPHYS_UPDATE` was checked (the frame is the domain's): the kernel
    /// sets its machine-to-phys entry for `mfn` to `gpfn`.
    MachPhys { mfn: Mfn, gpfn: u64 },
}

/// What the kernel does after one `mmuext_op` operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuextAction {
    /// Nothing more.
    None,
    /// A TLB flush.
    Flush(Flush),
    /// `MMUEXT_TLB_FLUSH_MULTI` / `MMUEXT_INVLPG_MULTI`: copy the vCPU bitmap in
    /// from the guest handle `vcpumask` (`unsigned long` words covering the
    /// domain's vCPUs; a fault fails the operation with EINVAL, as in Xen's
    /// `do_mmuext_op`), and flush on the pCPUs those vCPUs may have translations
    /// on. `extent` is `None` for an INVLPG of an address a guest may not name:
    /// Xen checks the bitmap then and flushes nothing.
    FlushMulti {
        vcpumask: u64,
        extent: Option<Extent>,
    },
    /// `MMUEXT_FLUSH_CACHE` (this pCPU) / `_GLOBAL` (every pCPU): `wbinvd`.
    FlushCache { global: bool },
    /// `MMUEXT_NEW_BASEPTR`: load [`PvVcpu::kernel_root`] into CR3 (which flushes
    /// this pCPU's non-global translations). If `changed`, first tear down the
    /// vCPU's LDT shadow mappings (Xen's `pv_destroy_ldt`), dropping their
    /// descriptor-page references ([`DomainFrames::put_segdesc_page`]).
    LoadBaseptr { changed: bool },
    /// `MMUEXT_SET_LDT` changed the vCPU's LDT: tear down its LDT shadow mappings
    /// as above, flush this pCPU's TLB if there were any, and load the new LDT
    /// (`ents` descriptors at guest-virtual `base`; none if `ents` is 0). Its pages
    /// are typed lazily, when the guest first uses them, with
    /// [`DomainFrames::get_segdesc_page`].
    LoadLdt { base: u64, ents: u32 },
}

/// What an emulated write to a read-only L1 did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtwrDone {
    /// The entry was written; the instruction retires.
    Written,
    /// A `cmpxchg` found `seen` (the operand-sized part) instead of the expected
    /// value; nothing was written and the instruction reports the failure.
    CmpxchgFailed { seen: u64 },
}

/// Most descriptors an LDT may have (Xen's `do_mmuext_op`, `MMUEXT_SET_LDT`).
pub const LDT_MAX_ENTS: u32 = 8192;

/// A vCPU's references into its domain's frames, and its LDT (Xen's
/// `v->arch.guest_table`, `guest_table_user`, `pv.ldt_base`, `pv.ldt_ents`).
///
/// The root references are counted in the domain's [`DomainFrames`], so a
/// `PvVcpu` is only ever used with its own domain's, under the domain's lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PvVcpu {
    kernel_root: Option<Mfn>,
    user_root: Option<Mfn>,
    ldt_base: u64,
    ldt_ents: u32,
}

impl PvVcpu {
    pub fn new() -> PvVcpu {
        PvVcpu::default()
    }
    /// The L4 loaded into CR3 while the guest runs in kernel mode.
    pub fn kernel_root(&self) -> Option<Mfn> {
        self.kernel_root
    }
    /// The L4 loaded into CR3 while the guest runs in user mode (none: the guest
    /// cannot enter user mode).
    pub fn user_root(&self) -> Option<Mfn> {
        self.user_root
    }
    /// LDT base (guest-virtual) and number of descriptors.
    pub fn ldt(&self) -> (u64, u32) {
        (self.ldt_base, self.ldt_ents)
    }
}

/// A guest-supplied frame number as an `Mfn`: a number no frame has is no frame of
/// the domain.
fn frame(raw: u64) -> Result<Mfn, PvError> {
    Mfn::new(raw).ok_or(PvError::NotDomainFrame(raw))
}

/// The low `bytes` bytes.
const fn width_mask(bytes: usize) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1 << (bytes * 8)) - 1
    }
}

impl<A: Allocator + Clone> DomainFrames<A> {
    /// Stores `new` over `old` in a live table (Xen's `update_intpte`): a plain
    /// 64-bit store, or, to preserve accessed/dirty bits the hardware may be
    /// setting meanwhile, a compare-exchange that ORs them in. The hardware only
    /// ever sets those two bits, so three attempts always suffice; anything else
    /// changing the entry is someone writing a validated table behind keel's back.
    fn update_entry<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        index: usize,
        old: u64,
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), PvError> {
        if !preserve_ad {
            mem.write_entry(mfn, index, new);
            return Ok(());
        }
        let mut old = old;
        for _ in 0..3 {
            match mem.cmpxchg_entry(mfn, index, old, new | (old & (ACCESSED | DIRTY))) {
                Ok(()) => return Ok(()),
                Err(seen) if (seen ^ old) & !(ACCESSED | DIRTY) == 0 => old = seen,
                Err(_) => break,
            }
        }
        Err(PvError::EntryRaced(mfn))
    }

    /// Changes entry `index` of the validated L1 `l1` to `new` (Xen's
    /// `mod_l1_entry`): allowed bits, then the fast path if only
    /// [`FASTPATH_FLAGS`] change (no references move), else the new entry's
    /// references are taken before the old one's are dropped, so a frame both map
    /// never loses its type in between.
    pub(crate) fn mod_l1_entry<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        l1: Mfn,
        index: usize,
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), PvError> {
        let old = mem.read_entry(l1, index);
        if is_present(new) {
            let bad = new & entry::disallow_mask(Level::L1, &self.policy);
            if bad != 0 {
                return Err(PvError::BadFlags {
                    level: 1,
                    bits: bad,
                });
            }
            let new = entry::adjust_guest_l1e(new);
            if !entry::has_changed(old, new, FASTPATH_FLAGS) {
                return self.update_entry(mem, l1, index, old, new, preserve_ad);
            }
            let new = new ^ self.get_page_from_l1e(mem, new)?;
            if let Err(e) = self.update_entry(mem, l1, index, old, new, preserve_ad) {
                self.put_page_from_l1e(mem, new)?;
                return Err(e);
            }
        } else {
            self.check_l1tf(new)?;
            self.update_entry(mem, l1, index, old, new, preserve_ad)?;
        }
        self.put_page_from_l1e(mem, old)
    }

    /// Changes entry `index` of the validated `level` (L2..L4) table `table` to
    /// `new` (Xen's `mod_l2_entry`..`mod_l4_entry`): keel's L4 slots are refused
    /// (`KeelSlot`), then as [`DomainFrames::mod_l1_entry`] with the directory
    /// rules and fast-path flags.
    fn mod_pde<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        table: Mfn,
        level: Level,
        index: usize,
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), PvError> {
        if level == Level::L4 && !is_guest_l4_slot(index) {
            return Err(PvError::KeelSlot(index));
        }
        let old = mem.read_entry(table, index);
        if is_present(new) {
            let bad = new & entry::disallow_mask(level, &self.policy);
            if bad != 0 {
                return Err(PvError::BadFlags {
                    level: level.number(),
                    bits: bad,
                });
            }
            let new = entry::adjust_guest_pde(level, new);
            if !entry::has_changed(old, new, entry::pde_fastpath_flags(&self.policy)) {
                return self.update_entry(mem, table, index, old, new, preserve_ad);
            }
            self.get_page_from_pde(mem, new, level, table)?;
            if let Err(e) = self.update_entry(mem, table, index, old, new, preserve_ad) {
                self.put_page_from_pde(mem, new, table)?;
                return Err(e);
            }
        } else {
            self.check_l1tf(new)?;
            self.update_entry(mem, table, index, old, new, preserve_ad)?;
        }
        self.put_page_from_pde(mem, old, table)
    }

    /// One `mmu_update` request (the body of Xen's `do_mmu_update` loop), for page
    /// tables and frames of the calling domain (`foreigndom` `DOMID_SELF`; the
    /// kernel refuses others before calling).
    ///
    /// - `MMU_NORMAL_PT_UPDATE`, `MMU_PT_UPDATE_PRESERVE_AD`,
    ///   `MMU_PT_UPDATE_NO_TRANSLATE` (the same as normal for a PV domain): the
    ///   entry at machine address `ptr & !7` of one of the domain's frames
    ///   (`NotDomainFrame` otherwise). A validated page table has the entry
    ///   changed by the level's rules; a descriptor page is refused
    ///   (`DescriptorPage`); any other frame is written as data, under a writable
    ///   type reference (so not while it is a table or descriptor page).
    /// - `MMU_MACHPHYS_UPDATE`: checks that the frame at `ptr` is the domain's and
    ///   says what to write into the M2P.
    /// - Anything else: `UnknownCommand` (ENOSYS).
    pub fn mmu_update<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        req: &MmuUpdate,
    ) -> Result<MmuUpdateDone, PvError> {
        let cmd = (req.ptr & abi::MMU_UPDATE_CMD_MASK) as u32;
        let addr = req.ptr & !abi::MMU_UPDATE_CMD_MASK;
        match cmd {
            abi::MMU_NORMAL_PT_UPDATE
            | abi::MMU_PT_UPDATE_PRESERVE_AD
            | abi::MMU_PT_UPDATE_NO_TRANSLATE => {
                let mfn = Hpa::new(addr)
                    .map(Hpa::mfn)
                    .ok_or(PvError::NotDomainFrame(addr >> 12))?;
                let index = ((addr & 0xFFF) >> 3) as usize;
                let preserve_ad = cmd == abi::MMU_PT_UPDATE_PRESERVE_AD;
                let page = self.info(mfn)?;
                let flush = if page.type_count > 0 && page.is_validated() {
                    match page.ty {
                        PageType::PageTable(Level::L1) => {
                            self.mod_l1_entry(mem, mfn, index, req.val, preserve_ad)?;
                            None
                        }
                        PageType::PageTable(level) => {
                            self.mod_pde(mem, mfn, level, index, req.val, preserve_ad)?;
                            Some(Flush::Domain(Extent::Full))
                        }
                        PageType::Writable => {
                            mem.write_entry(mfn, index, req.val);
                            None
                        }
                        PageType::SegDesc | PageType::None => {
                            return Err(PvError::DescriptorPage(mfn));
                        }
                    }
                } else {
                    self.get_page_type(mem, mfn, PageType::Writable)?;
                    mem.write_entry(mfn, index, req.val);
                    self.put_page_type(mem, mfn, None)?;
                    None
                };
                Ok(MmuUpdateDone::Written { flush })
            }
            abi::MMU_MACHPHYS_UPDATE => {
                let raw = req.ptr >> 12;
                let mfn = frame(raw)?;
                self.info(mfn)?;
                Ok(MmuUpdateDone::MachPhys { mfn, gpfn: req.val })
            }
            _ => Err(PvError::UnknownCommand(cmd)),
        }
    }

    /// Entry `index` of the validated L1 `l1` becomes `val` (the core of Xen's
    /// `update_va_mapping`, once the kernel has found the L1 mapping the address
    /// by walking the guest's page tables; the `UVMF_*` flush is the kernel's).
    pub fn update_l1_entry<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        l1: Mfn,
        index: usize,
        val: u64,
    ) -> Result<(), PvError> {
        if index >= ENTRIES {
            return Err(PvError::BadIndex(index));
        }
        if !self.is_ptwr_target(l1) {
            return Err(PvError::NotL1(l1));
        }
        self.mod_l1_entry(mem, l1, index, val, false)
    }

    /// `MMUEXT_PIN_L*_TABLE`: a type reference of `level` on frame `raw`
    /// (validating it), kept until unpinned. A frame is pinned at most once
    /// (`AlreadyPinned`; the reference just taken is dropped again).
    pub fn pin<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        raw: u64,
        level: Level,
    ) -> Result<(), PvError> {
        let mfn = frame(raw)?;
        self.get_page_and_type(mem, mfn, PageType::PageTable(level))?;
        if self.info(mfn)?.is_pinned() {
            self.put_page_and_type(mem, mfn)?;
            return Err(PvError::AlreadyPinned(mfn));
        }
        self.info_mut(mfn)?.set_pinned(true);
        Ok(())
    }

    /// `MMUEXT_UNPIN_TABLE`: drops the pin's references; a table in use elsewhere
    /// (a base pointer, another table's entry) stays validated, the others are
    /// devalidated, recursively.
    pub fn unpin<M: PvMemory + ?Sized>(&mut self, mem: &mut M, raw: u64) -> Result<(), PvError> {
        let mfn = frame(raw)?;
        let info = self.info_mut(mfn)?;
        if !info.is_pinned() {
            return Err(PvError::NotPinned(mfn));
        }
        info.set_pinned(false);
        self.put_page_and_type(mem, mfn)
    }

    /// `MMUEXT_NEW_BASEPTR` (Xen's `new_guest_cr3`, 64-bit guest): the vCPU's
    /// kernel root becomes the L4 `raw`, under an L4 type reference (validating
    /// it); the old root's references are dropped after.
    pub fn new_baseptr<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        vcpu: &mut PvVcpu,
        raw: u64,
    ) -> Result<MmuextAction, PvError> {
        let mfn = frame(raw)?;
        if vcpu.kernel_root == Some(mfn) {
            return Ok(MmuextAction::LoadBaseptr { changed: false });
        }
        self.get_page_and_type(mem, mfn, PageType::PageTable(Level::L4))?;
        if let Some(old) = vcpu.kernel_root.replace(mfn) {
            self.put_page_and_type(mem, old)?;
        }
        Ok(MmuextAction::LoadBaseptr { changed: true })
    }

    /// `MMUEXT_NEW_USER_BASEPTR`: the vCPU's user root becomes the L4 `raw` (0:
    /// none), as [`DomainFrames::new_baseptr`]. It takes effect on the next switch
    /// to user mode, so the kernel does nothing now.
    pub fn new_user_baseptr<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        vcpu: &mut PvVcpu,
        raw: u64,
    ) -> Result<MmuextAction, PvError> {
        let new = match raw {
            0 => None,
            raw => Some(frame(raw)?),
        };
        if new == vcpu.user_root {
            return Ok(MmuextAction::None);
        }
        if let Some(mfn) = new {
            self.get_page_and_type(mem, mfn, PageType::PageTable(Level::L4))?;
        }
        if let Some(old) = core::mem::replace(&mut vcpu.user_root, new) {
            self.put_page_and_type(mem, old)?;
        }
        Ok(MmuextAction::None)
    }

    /// One `mmuext_op` operation of the calling vCPU on its own domain (the body of
    /// Xen's `do_mmuext_op` loop; the kernel refuses a `foreigndom` other than
    /// `DOMID_SELF` with the operations Xen refuses it for).
    pub fn mmuext_op<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        vcpu: &mut PvVcpu,
        op: &MmuextOp,
    ) -> Result<MmuextAction, PvError> {
        let none = |()| MmuextAction::None;
        match op.cmd {
            abi::MMUEXT_PIN_L1_TABLE => self.pin(mem, op.arg1, Level::L1).map(none),
            abi::MMUEXT_PIN_L2_TABLE => self.pin(mem, op.arg1, Level::L2).map(none),
            abi::MMUEXT_PIN_L3_TABLE => self.pin(mem, op.arg1, Level::L3).map(none),
            abi::MMUEXT_PIN_L4_TABLE => self.pin(mem, op.arg1, Level::L4).map(none),
            abi::MMUEXT_UNPIN_TABLE => self.unpin(mem, op.arg1).map(none),
            abi::MMUEXT_NEW_BASEPTR => self.new_baseptr(mem, vcpu, op.arg1),
            abi::MMUEXT_NEW_USER_BASEPTR => self.new_user_baseptr(mem, vcpu, op.arg1),
            abi::MMUEXT_TLB_FLUSH_LOCAL => Ok(MmuextAction::Flush(Flush::Local(Extent::Full))),
            abi::MMUEXT_INVLPG_LOCAL => {
                // Xen's `paging_invlpg` ignores a non-canonical address.
                let va = Gva::new(op.arg1);
                Ok(if va.is_canonical() {
                    MmuextAction::Flush(Flush::Local(Extent::Page(va)))
                } else {
                    MmuextAction::None
                })
            }
            abi::MMUEXT_TLB_FLUSH_MULTI => Ok(MmuextAction::FlushMulti {
                vcpumask: op.arg2,
                extent: Some(Extent::Full),
            }),
            abi::MMUEXT_INVLPG_MULTI => Ok(MmuextAction::FlushMulti {
                vcpumask: op.arg2,
                extent: entry::addr_ok(op.arg1).then_some(Extent::Page(Gva::new(op.arg1))),
            }),
            abi::MMUEXT_TLB_FLUSH_ALL => Ok(MmuextAction::Flush(Flush::Domain(Extent::Full))),
            abi::MMUEXT_INVLPG_ALL => Ok(if entry::addr_ok(op.arg1) {
                MmuextAction::Flush(Flush::Domain(Extent::Page(Gva::new(op.arg1))))
            } else {
                MmuextAction::None
            }),
            abi::MMUEXT_FLUSH_CACHE if self.policy.io_caps => {
                Ok(MmuextAction::FlushCache { global: false })
            }
            abi::MMUEXT_FLUSH_CACHE => Err(PvError::CacheFlushDenied),
            abi::MMUEXT_FLUSH_CACHE_GLOBAL if self.policy.io_caps => {
                Ok(MmuextAction::FlushCache { global: true })
            }
            abi::MMUEXT_FLUSH_CACHE_GLOBAL => Err(PvError::GlobalCacheFlushDenied),
            abi::MMUEXT_SET_LDT => set_ldt(vcpu, op.arg1, op.nr_ents()),
            abi::MMUEXT_CLEAR_PAGE => self.clear_page(mem, op.arg1).map(none),
            abi::MMUEXT_COPY_PAGE => self.copy_page(mem, op.arg1, op.arg2).map(none),
            abi::MMUEXT_MARK_SUPER | abi::MMUEXT_UNMARK_SUPER => Err(PvError::Superpages),
            cmd => Err(PvError::UnknownCommand(cmd)),
        }
    }

    /// `MMUEXT_CLEAR_PAGE`: zeroes one of the domain's frames, under a writable type
    /// reference (so never a page table or descriptor page: `TypeConflict`).
    pub fn clear_page<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        raw: u64,
    ) -> Result<(), PvError> {
        let mfn = frame(raw)?;
        self.get_page_and_type(mem, mfn, PageType::Writable)?;
        mem.clear_frame(mfn);
        self.put_page_and_type(mem, mfn)
    }

    /// `MMUEXT_COPY_PAGE`: copies frame `src` over frame `dst`, both the domain's,
    /// `dst` under a writable type reference.
    pub fn copy_page<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        dst: u64,
        src: u64,
    ) -> Result<(), PvError> {
        let src = frame(src)?;
        self.get_page(src)?;
        let dst = match frame(dst).and_then(|d| {
            self.get_page_and_type(mem, d, PageType::Writable)
                .map(|()| d)
        }) {
            Ok(d) => d,
            Err(e) => {
                self.put_page(src)?;
                return Err(e);
            }
        };
        mem.copy_frame(dst, src);
        self.put_page_and_type(mem, dst)?;
        self.put_page(src)
    }

    /// Whether a write fault on a read-only mapping of `mfn` is the guest writing
    /// one of its L1 page tables, for [`DomainFrames::ptwr_emulate`] (Xen's
    /// `ptwr_do_page_fault`: the domain's frame, a validated L1).
    pub fn is_ptwr_target(&self, mfn: Mfn) -> bool {
        matches!(self.page(mfn), Some(p)
            if p.ty == PageType::PageTable(Level::L1) && p.type_count > 0 && p.is_validated())
    }

    /// An emulated guest write of `bytes` (1, 2, 4 or 8) at byte `offset` of the
    /// L1 `l1`, which the guest maps read-only (Xen's `ptwr_emulated_update`, for
    /// writable page tables). With `expected`, a compare-exchange.
    ///
    /// The access must be naturally aligned (`BadPtwrAccess`); a narrower one is
    /// merged with the rest of the entry. The resulting entry must obey the L1
    /// rules as in [`DomainFrames::update_l1_entry`], but there is no fast path: the new entry's references are always taken and
    /// the old one's dropped. On any error nothing changed and the kernel delivers
    /// the original page fault to the guest.
    pub fn ptwr_emulate<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        l1: Mfn,
        offset: usize,
        bytes: usize,
        value: u64,
        expected: Option<u64>,
    ) -> Result<PtwrDone, PvError> {
        if !self.is_ptwr_target(l1) {
            return Err(PvError::NotL1(l1));
        }
        if !matches!(bytes, 1 | 2 | 4 | 8) || offset >= 4096 || !offset.is_multiple_of(bytes) {
            return Err(PvError::BadPtwrAccess { offset, bytes });
        }
        let index = offset / 8;
        let shift = (offset % 8) * 8;
        let field = width_mask(bytes) << shift;
        let (val, old) = if bytes == 8 {
            (value, expected.unwrap_or(0))
        } else {
            let full = mem.read_entry(l1, index) & !field;
            let merge = |v: u64| full | ((v << shift) & field);
            (merge(value), merge(expected.unwrap_or(0)))
        };
        let new = if is_present(val) {
            val ^ self.get_page_from_l1e(mem, val)?
        } else {
            self.check_l1tf(val)?;
            val
        };
        let new = entry::adjust_guest_l1e(new);
        let prev = if expected.is_some() {
            match mem.cmpxchg_entry(l1, index, old, new) {
                Ok(()) => old,
                Err(seen) => {
                    self.put_page_from_l1e(mem, new)?;
                    return Ok(PtwrDone::CmpxchgFailed {
                        seen: (seen & field) >> shift,
                    });
                }
            }
        } else {
            let prev = mem.read_entry(l1, index);
            mem.write_entry(l1, index, new);
            prev
        };
        self.put_page_from_l1e(mem, prev)?;
        Ok(PtwrDone::Written)
    }

    /// A descriptor-page type reference on one of the domain's frames, for the
    /// kernel's GDT frames (`set_gdt`) and LDT shadow mappings (Xen's
    /// `get_page_and_type(page, PGT_seg_desc_page)`): validated with
    /// [`PvMemory::check_segdesc_page`] on first use. While it is held the frame
    /// cannot be mapped writable.
    pub fn get_segdesc_page<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
    ) -> Result<(), PvError> {
        self.get_page_and_type(mem, mfn, PageType::SegDesc)
    }

    /// Drops a reference [`DomainFrames::get_segdesc_page`] took.
    pub fn put_segdesc_page<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
    ) -> Result<(), PvError> {
        if self.info(mfn)?.ty != PageType::SegDesc {
            return Err(PvError::Inconsistent {
                mfn,
                what: "descriptor-page reference dropped on another type",
            });
        }
        self.put_page_and_type(mem, mfn)
    }

    /// The guest gives frame `mfn` back (Xen's `guest_remove_page`, for
    /// `XENMEM_decrease_reservation`): its pin, if any, and the allocation's
    /// reference are dropped. The frame stays the domain's while anything still
    /// references it (a mapping, a table entry, a base pointer) and is freed with
    /// the last reference; giving it back twice does nothing more. Special frames
    /// are keel's to take back (`SpecialFrame`).
    pub fn remove_page<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
    ) -> Result<(), PvError> {
        let info = self.info_mut(mfn)?;
        if info.is_special() {
            return Err(PvError::SpecialFrame(mfn));
        }
        if info.is_pinned() {
            info.set_pinned(false);
            self.put_page_and_type(mem, mfn)?;
        }
        if self.owns(mfn) {
            self.drop_allocation(mfn)?;
        }
        Ok(())
    }

    /// Drops a vCPU's root references (Xen's `vcpu_destroy_pagetables`), for a vCPU
    /// reset or the domain's end.
    pub fn destroy_pagetables<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        vcpu: &mut PvVcpu,
    ) -> Result<(), PvError> {
        if let Some(root) = vcpu.kernel_root.take() {
            self.put_page_and_type(mem, root)?;
        }
        if let Some(root) = vcpu.user_root.take() {
            self.put_page_and_type(mem, root)?;
        }
        Ok(())
    }

    /// The domain's end (Xen's `relinquish_memory`): every pin is dropped, which
    /// devalidates every table nothing else holds, then every allocation's
    /// reference and the special frames' permanent type references. Type references
    /// never form a cycle (directory entries point one level down, linear ones
    /// at tables with no linear entries), so once the kernel has also run
    /// [`DomainFrames::destroy_pagetables`] on every vCPU and dropped its
    /// descriptor-page references, every frame is freed and the domain holds none.
    /// Work: every frame and every validated entry of the domain, once; outside
    /// any hypercall (Xen preempts it, keel does not yet).
    pub fn relinquish<M: PvMemory + ?Sized>(&mut self, mem: &mut M) -> Result<(), PvError> {
        let pinned = |(m, p): (Mfn, &PageInfo)| p.is_pinned().then_some(m);
        let mut next = self.pages().find_map(pinned);
        while let Some(mfn) = next {
            self.unpin(mem, mfn.as_u64())?;
            next = self.pages_from(mfn).find_map(pinned);
        }
        let mut next = self.pages().next().map(|(m, _)| m);
        while let Some(mfn) = next {
            if let Some(info) = self.page(mfn) {
                // An allocated special frame still has its permanent reference.
                if info.is_special() && info.is_allocated() {
                    self.put_page_type(mem, mfn, None)?;
                }
                self.drop_allocation(mfn)?;
            }
            next = self
                .pages_from(mfn)
                .find(|(m, _)| *m != mfn)
                .map(|(m, _)| m);
        }
        Ok(())
    }
}

/// `MMUEXT_SET_LDT`: at most [`LDT_MAX_ENTS`] descriptors, at a page-aligned
/// address a guest may name (Xen's `do_mmuext_op`).
fn set_ldt(vcpu: &mut PvVcpu, base: u64, ents: u32) -> Result<MmuextAction, PvError> {
    let base = if ents == 0 { 0 } else { base };
    if ents > LDT_MAX_ENTS || (ents != 0 && (base & 0xFFF != 0 || !entry::addr_ok(base))) {
        return Err(PvError::BadLdt { base, ents });
    }
    if (vcpu.ldt_base, vcpu.ldt_ents) == (base, ents) {
        return Ok(MmuextAction::None);
    }
    vcpu.ldt_base = base;
    vcpu.ldt_ents = ents;
    Ok(MmuextAction::LoadLdt { base, ents })
}
