//! Type references and validation: what a page table's entries may point at, and
//! the references they hold (Xen's `xen/arch/x86/mm.c`: `_get_page_type`,
//! `_put_page_type`, `promote_l1_table`..`promote_l4_table`,
//! `demote_l1_table`..`demote_l4_table`, `get_page_from_l1e`..`get_page_from_l4e`,
//! `put_page_from_l1e`..`put_page_from_l4e`, `get_l*_linear_pagetable`).
//!
//! Validation recurses through type references: an L4 entry takes an L3 type
//! reference on its target, which validates that L3 if it had none, and so on
//! down to the L1s, whose writable entries take writable type references. The
//! depth is bounded by the levels: a directory entry points one level down, and a
//! linear entry (same level) only at a table already validated, which starts
//! nothing. Dropping the last type reference of a table devalidates it, dropping
//! the references its entries held, recursively: again at most four levels, plus
//! one for a linear entry (a linear target has no linear entries of its own).

use core::alloc::Allocator;

use crate::addr::Mfn;

use super::entry::{self, ENTRIES, RW, is_guest_slot, is_present};
use super::page::{DomainFrames, Level, PageType};
use super::{IoFrame, PvError, PvMemory};

impl<A: Allocator + Clone> DomainFrames<A> {
    /// Takes a type reference of `ty` on `mfn` (Xen's `_get_page_type`), validating
    /// the frame's contents if this is the first one since its type changed. The
    /// caller holds a general reference.
    ///
    /// - A type count of zero lets the type change: `mem` is told first, so it can
    ///   flush stale mappings of the frame's old use.
    /// - Otherwise the type must match (`TypeConflict`).
    /// - A page table is validated on its first reference; if that fails the frame
    ///   is left with no type and no type references, as before.
    pub(crate) fn get_page_type<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        ty: PageType,
    ) -> Result<(), PvError> {
        let info = self.info_mut(mfn)?;
        let count = info
            .type_count
            .checked_add(1)
            .ok_or(PvError::RefOverflow(mfn))?;
        if info.type_count == 0 {
            if info.ty != ty {
                let from = info.ty;
                info.ty = ty;
                info.set_validated(false);
                mem.before_type_change(mfn, from, ty);
            }
        } else if info.ty != ty {
            return Err(PvError::TypeConflict(mfn));
        } else if !info.is_validated() {
            // Only the validation of this very frame holds a reference to an
            // unvalidated frame, and nothing it starts can ask for the same type
            // again: directory entries point one level down, linear entries only
            // at validated tables.
            return Err(PvError::Inconsistent {
                mfn,
                what: "type reference wanted on a table being validated",
            });
        }
        info.type_count = count;
        if info.is_validated() {
            return Ok(());
        }
        let checked = match ty {
            PageType::None => Err(PvError::Inconsistent {
                mfn,
                what: "type reference of no type",
            }),
            PageType::Writable => Ok(()),
            PageType::SegDesc => {
                if mem.check_segdesc_page(mfn) {
                    Ok(())
                } else {
                    Err(PvError::BadDescriptor(mfn))
                }
            }
            PageType::PageTable(level) => self.promote(mem, mfn, level),
        };
        let info = self.info_mut(mfn)?;
        match checked {
            Ok(()) => info.set_validated(true),
            Err(e) => {
                // Xen's `validate_page` failure: type_info = 0.
                info.ty = PageType::None;
                info.type_count = 0;
                info.set_validated(false);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops a type reference (Xen's `_put_page_type`). The last one of a page
    /// table devalidates it: the references its entries held are dropped
    /// ([`DomainFrames::demote`]). `container` is the table whose entry held the
    /// reference, if any: a reference between two tables of one level is a linear
    /// one, and its counts go with it.
    pub(crate) fn put_page_type<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        container: Option<Mfn>,
    ) -> Result<(), PvError> {
        let info = self.page(mfn).ok_or(PvError::Inconsistent {
            mfn,
            what: "type reference dropped on a frame that is not the domain's",
        })?;
        if info.type_count == 0 || !info.is_validated() {
            return Err(PvError::Inconsistent {
                mfn,
                what: "type reference dropped that was not held",
            });
        }
        let ty = info.ty;
        let last = info.type_count == 1;
        let linear = match container {
            Some(c) => self.info(c)?.ty == ty,
            None => false,
        };
        if let (true, PageType::PageTable(level)) = (last, ty) {
            // Devalidate with the count still 1, as Xen does: nothing can take a
            // reference to an unvalidated table meanwhile.
            self.info_mut(mfn)?.set_validated(false);
            self.demote(mem, mfn, level)?;
        }
        if let (true, Some(c)) = (linear, container) {
            let target = self.info_mut(mfn)?;
            target.linear_uses =
                target
                    .linear_uses
                    .checked_sub(1)
                    .ok_or(PvError::Inconsistent {
                        mfn,
                        what: "linear use count underflow",
                    })?;
            let table = self.info_mut(c)?;
            table.linear_entries =
                table
                    .linear_entries
                    .checked_sub(1)
                    .ok_or(PvError::Inconsistent {
                        mfn: c,
                        what: "linear entry count underflow",
                    })?;
        }
        let info = self.info_mut(mfn)?;
        info.type_count = info
            .type_count
            .checked_sub(1)
            .ok_or(PvError::Inconsistent {
                mfn,
                what: "type count underflow",
            })?;
        if info.type_count == 0
            && matches!(ty, PageType::PageTable(_))
            && (info.linear_entries != 0 || info.linear_uses != 0)
        {
            return Err(PvError::Inconsistent {
                mfn,
                what: "devalidated table still has linear references",
            });
        }
        Ok(())
    }

    /// A general and a type reference on one of the domain's frames (Xen's
    /// `get_page_and_type_from_mfn`): `NotDomainFrame` if it is not the domain's.
    pub(crate) fn get_page_and_type<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        ty: PageType,
    ) -> Result<(), PvError> {
        self.get_page(mfn)?;
        if let Err(e) = self.get_page_type(mem, mfn, ty) {
            self.put_page(mfn)?;
            return Err(e);
        }
        Ok(())
    }

    /// Drops what [`DomainFrames::get_page_and_type`] took (Xen's
    /// `put_page_and_type`).
    pub(crate) fn put_page_and_type<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
    ) -> Result<(), PvError> {
        self.put_page_type(mem, mfn, None)?;
        self.put_page(mfn)
    }

    /// Checks every guest entry of the table `mfn` and takes the references they
    /// need (Xen's `promote_l1_table`..`promote_l4_table`), storing each entry back
    /// as keel wants it ([`entry::adjust_guest_l1e`], I/O flips). An L4 then gets
    /// keel's slots from the template. On failure the references taken are dropped
    /// again, newest first, and the first error is returned.
    ///
    /// Work: 512 entries, each O(1) plus whatever validation its target starts.
    fn promote<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        level: Level,
    ) -> Result<(), PvError> {
        for i in 0..ENTRIES {
            if !is_guest_slot(level, i) {
                continue;
            }
            let e = mem.read_entry(mfn, i);
            let checked = if !is_present(e) {
                self.check_l1tf(e).map(|()| e)
            } else {
                match level.below() {
                    None => self.get_page_from_l1e(mem, e).map(|flip| e ^ flip),
                    Some(_) => self.get_page_from_pde(mem, e, level, mfn).map(|()| e),
                }
            };
            match checked {
                Ok(stored) => {
                    let stored = entry::adjust_guest_pde(level, stored);
                    if stored != e {
                        mem.write_entry(mfn, i, stored);
                    }
                }
                Err(err) => {
                    self.put_entries(mem, mfn, level, i)?;
                    return Err(err);
                }
            }
        }
        if level == Level::L4 {
            for slot in entry::KEEL_L4_SLOTS {
                let e = mem.keel_l4_entry(mfn, slot);
                mem.write_entry(mfn, slot, e);
            }
        }
        Ok(())
    }

    /// Drops the references the guest entries of a table held (Xen's
    /// `demote_l1_table`..`demote_l4_table`).
    fn demote<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        level: Level,
    ) -> Result<(), PvError> {
        self.put_entries(mem, mfn, level, ENTRIES)
    }

    /// Drops the references held by the guest entries `0..end` of a table, from the
    /// last to the first.
    fn put_entries<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        mfn: Mfn,
        level: Level,
        end: usize,
    ) -> Result<(), PvError> {
        for i in (0..end).rev() {
            if !is_guest_slot(level, i) {
                continue;
            }
            let e = mem.read_entry(mfn, i);
            match level {
                Level::L1 => self.put_page_from_l1e(mem, e)?,
                _ => self.put_page_from_pde(mem, e, mfn)?,
            }
        }
        Ok(())
    }

    /// Refuses a non-present entry that would let an L1TF-affected CPU read host
    /// memory speculatively, if the policy asks for it (Xen's `pv_l1tf_check_*`;
    /// Xen shadows such a domain, or crashes it where it cannot).
    pub(crate) fn check_l1tf(&self, e: u64) -> Result<(), PvError> {
        match self.policy.l1tf_safe_maddr {
            Some(safe) if entry::l1tf_unsafe(e, safe) => Err(PvError::L1tfUnsafe(e)),
            _ => Ok(()),
        }
    }

    /// Takes what a present L1 entry needs (Xen's `get_page_from_l1e`) and returns
    /// the flags to flip in it before it is stored:
    ///
    /// - Bits outside the level's allowance: `BadFlags`.
    /// - A frame of the domain: a general reference; if RW, a writable type
    ///   reference too, which a page table or descriptor page cannot give
    ///   (`NotWritable`). A special frame keeps write-back caching
    ///   (`CacheAttrsOnSpecial`).
    /// - Anything else is asked of the kernel ([`PvMemory::io_frame`]): RAM that is
    ///   not the domain's is refused (`ForeignFrame`), I/O memory the domain may not
    ///   map too (`IoNotPermitted`, or `InvalidMfn` for the all-ones frame), and I/O
    ///   it may map takes no reference, but is made uncacheable and, if so
    ///   permitted, read-only (the returned flip).
    pub(crate) fn get_page_from_l1e<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        e: u64,
    ) -> Result<u64, PvError> {
        let bad = e & entry::disallow_mask(Level::L1, &self.policy);
        if bad != 0 {
            return Err(PvError::BadFlags {
                level: 1,
                bits: bad,
            });
        }
        let mfn = entry::entry_mfn(e);
        if !self.owns(mfn) {
            // A domain without I/O capabilities may map no I/O at all, whatever
            // the kernel says (Xen's `iomem_access_permitted` on an empty set).
            let io = match mem.io_frame(mfn) {
                IoFrame::ReadWrite | IoFrame::ReadOnly if !self.policy.io_caps => IoFrame::Denied,
                io => io,
            };
            return match io {
                IoFrame::NotIo => Err(PvError::ForeignFrame(mfn)),
                IoFrame::Denied if mfn.as_u64() == entry::ADDR_MASK >> 12 => {
                    Err(PvError::InvalidMfn)
                }
                IoFrame::Denied => Err(PvError::IoNotPermitted(mfn)),
                IoFrame::ReadWrite => Ok(entry::io_flip(e, false)),
                IoFrame::ReadOnly => Ok(entry::io_flip(e, true)),
            };
        }
        self.get_page(mfn)?;
        let write = e & RW != 0;
        if write && let Err(err) = self.get_page_type(mem, mfn, PageType::Writable) {
            self.put_page(mfn)?;
            return Err(match err {
                PvError::TypeConflict(_) | PvError::RefOverflow(_) => PvError::NotWritable(mfn),
                other => other,
            });
        }
        if e & entry::CACHE_ATTRS != 0 && self.info(mfn)?.is_special() {
            if write {
                self.put_page_type(mem, mfn, None)?;
            }
            self.put_page(mfn)?;
            return Err(PvError::CacheAttrsOnSpecial(mfn));
        }
        Ok(0)
    }

    /// Drops what a present L1 entry held (Xen's `put_page_from_l1e`). An entry
    /// naming a frame that is not the domain's maps I/O memory and held nothing.
    pub(crate) fn put_page_from_l1e<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        e: u64,
    ) -> Result<(), PvError> {
        if !is_present(e) {
            return Ok(());
        }
        let mfn = entry::entry_mfn(e);
        if !self.owns(mfn) {
            return Ok(());
        }
        if e & RW != 0 {
            self.put_page_type(mem, mfn, None)?;
        }
        self.put_page(mfn)
    }

    /// Takes what a present entry of the `level` (L2..L4) table `container` needs
    /// (Xen's `get_page_from_l2e`..`get_page_from_l4e`): the allowed bits, then a
    /// type reference of the level below on the target, validating it if need be;
    /// failing that with EINVAL, a linear reference ([`DomainFrames::get_linear`]).
    pub(crate) fn get_page_from_pde<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        e: u64,
        level: Level,
        container: Mfn,
    ) -> Result<(), PvError> {
        let bad = e & entry::disallow_mask(level, &self.policy);
        if bad != 0 {
            return Err(PvError::BadFlags {
                level: level.number(),
                bits: bad,
            });
        }
        let Some(below) = level.below() else {
            return Err(PvError::Inconsistent {
                mfn: container,
                what: "directory rules applied to an L1",
            });
        };
        let target = entry::entry_mfn(e);
        match self.get_page_and_type(mem, target, PageType::PageTable(below)) {
            Ok(()) => Ok(()),
            Err(err) if err.errno() == super::Errno::EINVAL && !err.is_domain_fatal() => {
                if self.get_linear(e, level, container)? {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Drops what a present directory entry of `container` held (Xen's
    /// `put_page_from_l2e`..`put_page_from_l4e`); an entry pointing at its own table
    /// held nothing.
    pub(crate) fn put_page_from_pde<M: PvMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        e: u64,
        container: Mfn,
    ) -> Result<(), PvError> {
        let target = entry::entry_mfn(e);
        if !is_present(e) || target == container {
            return Ok(());
        }
        self.put_page_type(mem, target, Some(container))?;
        self.put_page(target)
    }

    /// A linear entry: one pointing at a table of its own level, giving the guest a
    /// read-only window on its page tables (Xen's `get_l2_linear_pagetable`..
    /// `get_l4_linear_pagetable`). Allowed only
    ///
    /// 1. if the policy allows linear page tables at all (Xen's `pv-linear-pt`);
    /// 2. read-only, or the guest could write its own page tables;
    /// 3. onto a table already validated, so that this never starts a validation
    ///    (which could need the table being validated: a deadlock in Xen, unbounded
    ///    recursion here);
    /// 4. one level deep: a table with linear entries is never a linear target, and
    ///    a linear target never gets linear entries (Xen's signed `linear_pt_count`).
    ///
    /// An entry pointing at its own table takes no references at all (otherwise a
    /// table mapping itself could never be devalidated). Returns whether the entry
    /// is accepted as linear; it then holds a general and a type reference.
    fn get_linear(&mut self, e: u64, level: Level, container: Mfn) -> Result<bool, PvError> {
        if !self.policy.linear_pt || e & RW != 0 {
            return Ok(false);
        }
        let target = entry::entry_mfn(e);
        if target == container {
            return Ok(true);
        }
        let (Some(table), Some(page)) = (self.page(container), self.page(target)) else {
            return Ok(false);
        };
        let usable = table.linear_uses == 0
            && table.linear_entries < u16::MAX
            && page.linear_entries == 0
            && page.linear_uses < u16::MAX
            && page.ty == PageType::PageTable(level)
            && page.is_validated()
            && page.type_count < u32::MAX
            && page.count < u32::MAX;
        if !usable {
            return Ok(false);
        }
        let page = self.info_mut(target)?;
        page.count += 1;
        page.type_count += 1;
        page.linear_uses += 1;
        self.info_mut(container)?.linear_entries += 1;
        Ok(true)
    }
}
