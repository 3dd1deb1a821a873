//! Unit tests: one per rule and errno, each followed by the audit of every
//! invariant; then how the frames' state is stored, in a counting allocator that
//! fails on demand.

use std::collections::BTreeMap;

use keel_hypercall::abi::mmu::{self as abi, MmuUpdate, MmuextOp};

use super::audit::audit;
use super::entry::*;
use super::fake::{Counting, FakeMem, freed, keel_entry, mfn};
use super::*;
use crate::addr::Gva;

const P: u64 = PRESENT;
/// Present, user, accessed: a typical guest entry before keel adjusts it.
const PUA: u64 = PRESENT | USER | ACCESSED;

/// The domain's frames: 0x100..0x120.
const FIRST: u64 = 0x100;
const FRAMES: u64 = 0x20;
/// Someone else's RAM.
const FOREIGN: u64 = 0x200;
const IO_RW: u64 = 0x300;
const IO_RO: u64 = 0x301;
const IO_DENIED: u64 = 0x302;
const ALL_ONES: u64 = (1 << 40) - 1;

fn pte(target: u64, flags: u64) -> u64 {
    (target << 12) | flags
}

struct Dom {
    d: DomainFrames,
    mem: FakeMem,
    v: PvVcpu,
    seg: BTreeMap<Mfn, u32>,
}

impl Dom {
    fn new() -> Dom {
        Dom::with(Policy::default())
    }

    fn with(policy: Policy) -> Dom {
        let mut d = DomainFrames::new(policy);
        for f in FIRST..FIRST + FRAMES {
            d.assign(mfn(f)).unwrap();
        }
        let mut mem = FakeMem::new();
        mem.io.insert(mfn(IO_RW), IoFrame::ReadWrite);
        mem.io.insert(mfn(IO_RO), IoFrame::ReadOnly);
        mem.io.insert(mfn(IO_DENIED), IoFrame::Denied);
        mem.io.insert(mfn(ALL_ONES), IoFrame::Denied);
        Dom {
            d,
            mem,
            v: PvVcpu::new(),
            seg: BTreeMap::new(),
        }
    }

    fn set(&mut self, t: u64, i: usize, v: u64) {
        self.mem.set(mfn(t), i, v);
    }

    fn get(&self, t: u64, i: usize) -> u64 {
        self.mem.get(mfn(t), i)
    }

    fn page(&self, t: u64) -> PageInfo {
        self.d.page(mfn(t)).expect("the domain's frame").clone()
    }

    fn counts(&self, t: u64) -> (u32, u32) {
        let p = self.page(t);
        (p.count(), p.type_count())
    }

    fn update(&mut self, t: u64, i: usize, v: u64) -> Result<MmuUpdateDone, PvError> {
        self.update_cmd(t, i, v, abi::MMU_NORMAL_PT_UPDATE)
    }

    fn update_cmd(&mut self, t: u64, i: usize, v: u64, cmd: u32) -> Result<MmuUpdateDone, PvError> {
        let req = MmuUpdate {
            ptr: (t << 12) + 8 * i as u64 + u64::from(cmd),
            val: v,
        };
        self.d.mmu_update(&mut self.mem, &req)
    }

    fn pin(&mut self, t: u64, level: Level) -> Result<(), PvError> {
        self.d.pin(&mut self.mem, t, level)
    }

    fn unpin(&mut self, t: u64) -> Result<(), PvError> {
        self.d.unpin(&mut self.mem, t)
    }

    fn ext(&mut self, cmd: u32, arg1: u64, arg2: u64) -> Result<MmuextAction, PvError> {
        let op = MmuextOp {
            cmd,
            pad: 0,
            arg1,
            arg2,
        };
        self.d.mmuext_op(&mut self.mem, &mut self.v, &op)
    }

    fn ptwr(
        &mut self,
        t: u64,
        offset: usize,
        bytes: usize,
        value: u64,
    ) -> Result<PtwrDone, PvError> {
        self.d
            .ptwr_emulate(&mut self.mem, mfn(t), offset, bytes, value, None)
    }

    #[track_caller]
    fn check(&self) {
        if let Err(e) = audit(&self.d, &self.mem, std::slice::from_ref(&self.v), &self.seg) {
            panic!("audit: {e}");
        }
    }

    /// L4 0x100 -> L3 0x101 -> L2 0x102 -> L1 0x103, which maps data 0x104
    /// writable and itself read-only; written by the guest, not yet validated.
    fn tree(&mut self) {
        self.set(0x100, 0, pte(0x101, PUA | RW));
        self.set(0x101, 0, pte(0x102, PUA | RW));
        self.set(0x102, 0, pte(0x103, PUA | RW));
        self.set(0x103, 0, pte(0x104, PUA | RW));
        self.set(0x103, 1, pte(0x103, PUA));
    }
}

#[track_caller]
fn errno<T: core::fmt::Debug>(r: Result<T, PvError>) -> Errno {
    r.expect_err("must fail").errno()
}

#[test]
fn pin_validates_the_tree_and_unpin_devalidates_it() {
    let mut t = Dom::new();
    t.tree();
    t.set(0x100, 260, 0xdead_beef); // Guest junk in a keel slot.
    t.pin(0x100, Level::L4).unwrap();
    t.check();
    assert_eq!(t.page(0x100).page_type(), PageType::PageTable(Level::L4));
    assert!(t.page(0x100).is_pinned());
    for (f, ty) in [
        (0x101, PageType::PageTable(Level::L3)),
        (0x102, PageType::PageTable(Level::L2)),
        (0x103, PageType::PageTable(Level::L1)),
        (0x104, PageType::Writable),
    ] {
        assert_eq!(
            (t.page(f).page_type(), t.page(f).type_count()),
            (ty, 1),
            "{f:#x}"
        );
    }
    // The L1 maps itself read-only: a general reference, no type reference.
    assert_eq!(t.counts(0x103), (3, 1));
    // Keel's slots come from the template; the guest's are adjusted.
    for slot in KEEL_L4_SLOTS {
        assert_eq!(t.get(0x100, slot), keel_entry(mfn(0x100), slot));
    }
    assert_eq!(t.get(0x100, 260), keel_entry(mfn(0x100), 260));
    assert_eq!(t.get(0x100, 0), pte(0x101, PUA | RW));
    assert_eq!(t.get(0x103, 0), pte(0x104, PUA | RW | GLOBAL));

    t.unpin(0x100).unwrap();
    t.check();
    for f in 0x100..=0x104 {
        let p = t.page(f);
        assert_eq!(
            (p.count(), p.type_count(), p.is_validated() && f != 0x104),
            (1, 0, false)
        );
    }
}

#[test]
fn a_foreign_frame_cannot_be_mapped() {
    let mut t = Dom::new();
    t.set(0x103, 0, pte(FOREIGN, PUA));
    assert_eq!(errno(t.pin(0x103, Level::L1)), Errno::EBUSY);
    t.check();
    assert_eq!(t.page(0x103).page_type(), PageType::None);
    t.set(0x103, 0, 0);
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(errno(t.update(0x103, 5, pte(FOREIGN, PUA))), Errno::EBUSY);
    assert_eq!(t.get(0x103, 5), 0);
    // Directory entries pointing at foreign frames: EINVAL.
    t.set(0x102, 0, pte(FOREIGN, PUA));
    assert_eq!(errno(t.pin(0x102, Level::L2)), Errno::EINVAL);
    t.check();
}

#[test]
fn io_frames_as_the_kernel_permits() {
    // Without I/O capabilities, no I/O at all.
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(errno(t.update(0x103, 0, pte(IO_RW, PUA))), Errno::EPERM);

    let mut t = Dom::with(Policy {
        io_caps: true,
        ..Policy::default()
    });
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(errno(t.update(0x103, 0, pte(IO_DENIED, PUA))), Errno::EPERM);
    assert_eq!(errno(t.update(0x103, 0, pte(ALL_ONES, PUA))), Errno::EINVAL);
    // Permitted I/O holds no references, and is made uncacheable.
    t.update(0x103, 0, pte(IO_RW, PUA | RW)).unwrap();
    assert_eq!(t.get(0x103, 0), pte(IO_RW, PUA | RW | PCD | PWT | GLOBAL));
    // Read-only I/O loses RW.
    t.update(0x103, 1, pte(IO_RO, PUA | RW)).unwrap();
    assert_eq!(t.get(0x103, 1), pte(IO_RO, PUA | PCD | PWT | GLOBAL));
    t.check();
    // A domain with I/O capabilities may ask for caching: WT becomes UC, UC-
    // stays.
    t.update(0x103, 0, pte(IO_RW, PUA | PWT)).unwrap();
    assert_eq!(t.get(0x103, 0) & CACHE_ATTRS, PCD | PWT);
    t.update(0x103, 1, pte(IO_RW, PUA | PCD)).unwrap();
    assert_eq!(t.get(0x103, 1) & CACHE_ATTRS, PCD);
    t.check();
}

#[test]
fn a_page_table_cannot_be_mapped_writable() {
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    t.pin(0x105, Level::L1).unwrap();
    // Directly.
    assert_eq!(
        errno(t.update(0x105, 0, pte(0x103, PUA | RW))),
        Errno::EBUSY
    );
    assert_eq!(t.counts(0x103), (2, 1));
    t.update(0x105, 0, pte(0x103, PUA)).unwrap();
    assert_eq!(t.counts(0x103), (3, 1));
    // Turning a read-only mapping writable is no fast path.
    assert_eq!(
        errno(t.update(0x105, 0, pte(0x103, PUA | RW))),
        Errno::EBUSY
    );
    assert_eq!(t.get(0x105, 0), pte(0x103, PUA | GLOBAL));
    // Through an alias: a frame mapped writable cannot become a table.
    t.update(0x105, 1, pte(0x106, PUA | RW)).unwrap();
    assert_eq!(errno(t.pin(0x106, Level::L1)), Errno::EINVAL);
    assert_eq!(errno(t.pin(0x106, Level::L4)), Errno::EINVAL);
    // Nor a descriptor page.
    assert_eq!(
        errno(t.d.get_segdesc_page(&mut t.mem, mfn(0x106))),
        Errno::EINVAL
    );
    // Through the emulated write.
    assert_eq!(
        errno(t.ptwr(0x105, 16, 8, pte(0x103, PUA | RW))),
        Errno::EBUSY
    );
    assert_eq!(t.get(0x105, 2), 0);
    t.check();
    // A descriptor page neither.
    t.d.get_segdesc_page(&mut t.mem, mfn(0x107)).unwrap();
    t.seg.insert(mfn(0x107), 1);
    assert_eq!(
        errno(t.update(0x105, 3, pte(0x107, PUA | RW))),
        Errno::EBUSY
    );
    t.update(0x105, 3, pte(0x107, PUA)).unwrap();
    t.check();
}

#[test]
fn a_table_mapping_itself_writable_is_refused() {
    let mut t = Dom::new();
    t.set(0x103, 7, pte(0x103, PUA | RW));
    assert_eq!(errno(t.pin(0x103, Level::L1)), Errno::EBUSY);
    assert_eq!(t.counts(0x103), (1, 0));
    assert_eq!(t.page(0x103).page_type(), PageType::None);
    t.check();
    // Read-only, it can.
    t.set(0x103, 7, pte(0x103, PUA));
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(t.counts(0x103), (3, 1));
    t.check();
    t.unpin(0x103).unwrap();
    assert_eq!(t.counts(0x103), (1, 0));
    t.check();
}

#[test]
fn keel_l4_slots_are_keels() {
    let mut t = Dom::new();
    t.pin(0x100, Level::L4).unwrap();
    for slot in [256, 260, 271] {
        assert_eq!(
            t.update(0x100, slot, pte(0x101, PUA)),
            Err(PvError::KeelSlot(slot))
        );
        assert_eq!(t.update(0x100, slot, 0), Err(PvError::KeelSlot(slot)));
        assert_eq!(t.get(0x100, slot), keel_entry(mfn(0x100), slot));
    }
    for slot in [255, 272] {
        let done = t.update(0x100, slot, pte(0x101, PUA)).unwrap();
        assert_eq!(
            done,
            MmuUpdateDone::Written {
                flush: Some(Flush::Domain(Extent::Full))
            }
        );
    }
    t.check();
    assert_eq!(PvError::KeelSlot(256).errno(), Errno::EINVAL);
}

#[test]
fn no_superpages() {
    let mut t = Dom::new();
    t.set(0x102, 0, pte(0x110, PUA | PSE));
    assert_eq!(
        t.pin(0x102, Level::L2),
        Err(PvError::BadFlags {
            level: 2,
            bits: PSE
        })
    );
    t.set(0x102, 0, 0);
    t.pin(0x102, Level::L2).unwrap();
    assert_eq!(
        errno(t.update(0x102, 1, pte(0x110, PUA | PSE | RW))),
        Errno::EINVAL
    );
    t.set(0x101, 0, pte(0x110, PUA | PSE));
    assert_eq!(errno(t.pin(0x101, Level::L3)), Errno::EINVAL);
    t.check();
}

#[test]
fn bits_a_guest_may_not_set() {
    let mut t = Dom::new();
    t.pin(0x102, Level::L2).unwrap();
    t.pin(0x103, Level::L1).unwrap();
    t.pin(0x100, Level::L4).unwrap();
    for bad in [PWT, PCD, GLOBAL] {
        assert_eq!(
            t.update(0x102, 0, pte(0x105, PUA | bad)),
            Err(PvError::BadFlags {
                level: 2,
                bits: bad
            })
        );
        assert_eq!(
            errno(t.update(0x100, 0, pte(0x105, PUA | bad))),
            Errno::EINVAL
        );
    }
    for bad in [PWT, PCD, PAT] {
        assert_eq!(
            t.update(0x103, 0, pte(0x105, PUA | bad)),
            Err(PvError::BadFlags {
                level: 1,
                bits: bad
            })
        );
    }
    // GLOBAL, NX and the available bits are the guest's.
    t.update(
        0x103,
        0,
        pte(0x105, PUA | GLOBAL | NX | AVAIL | GUEST_KERNEL | (1 << 62)),
    )
    .unwrap();
    t.update(0x102, 0, pte(0x106, PUA | NX | AVAIL)).unwrap();
    t.check();

    let mut t = Dom::with(Policy {
        nx: false,
        ..Policy::default()
    });
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(
        t.update(0x103, 0, pte(0x105, PUA | NX)),
        Err(PvError::BadFlags { level: 1, bits: NX })
    );
    // Non-present entries are not checked.
    t.update(0x103, 0, pte(0x105, NX | PCD)).unwrap();
    t.check();
}

#[test]
fn pins_are_not_nested() {
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(
        t.pin(0x103, Level::L1),
        Err(PvError::AlreadyPinned(mfn(0x103)))
    );
    assert_eq!(t.counts(0x103), (2, 1));
    // Another level: the type is in use.
    assert_eq!(
        t.pin(0x103, Level::L2),
        Err(PvError::TypeConflict(mfn(0x103)))
    );
    t.unpin(0x103).unwrap();
    assert_eq!(t.unpin(0x103), Err(PvError::NotPinned(mfn(0x103))));
    assert_eq!(errno(t.unpin(0x104)), Errno::EINVAL);
    assert_eq!(errno(t.pin(FOREIGN, Level::L1)), Errno::EINVAL);
    assert_eq!(errno(t.unpin(FOREIGN)), Errno::EINVAL);
    assert_eq!(errno(t.pin(1 << 50, Level::L1)), Errno::EINVAL);
    t.check();
    for (cmd, level) in [
        (abi::MMUEXT_PIN_L1_TABLE, Level::L1),
        (abi::MMUEXT_PIN_L2_TABLE, Level::L2),
        (abi::MMUEXT_PIN_L3_TABLE, Level::L3),
        (abi::MMUEXT_PIN_L4_TABLE, Level::L4),
    ] {
        let f = 0x107 + u64::from(level.number());
        assert_eq!(t.ext(cmd, f, 0), Ok(MmuextAction::None));
        assert_eq!(t.page(f).page_type(), PageType::PageTable(level));
        assert_eq!(t.ext(abi::MMUEXT_UNPIN_TABLE, f, 0), Ok(MmuextAction::None));
    }
    t.check();
}

#[test]
fn unpinning_a_table_in_use_keeps_it_validated() {
    let mut t = Dom::new();
    t.tree();
    t.pin(0x100, Level::L4).unwrap();
    assert_eq!(
        t.ext(abi::MMUEXT_NEW_BASEPTR, 0x100, 0),
        Ok(MmuextAction::LoadBaseptr { changed: true })
    );
    t.check();
    t.unpin(0x100).unwrap();
    assert!(t.page(0x100).is_validated());
    assert_eq!(t.page(0x104).type_count(), 1);
    t.check();
    // Switching away drops the last reference: the whole tree goes.
    t.pin(0x10a, Level::L4).unwrap();
    t.ext(abi::MMUEXT_NEW_BASEPTR, 0x10a, 0).unwrap();
    assert_eq!(t.v.kernel_root(), Some(mfn(0x10a)));
    for f in 0x100..=0x104 {
        assert_eq!(t.counts(f), (1, 0), "{f:#x}");
    }
    t.check();
}

#[test]
fn base_pointers() {
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(
        errno(t.ext(abi::MMUEXT_NEW_BASEPTR, 0x103, 0)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_NEW_BASEPTR, FOREIGN, 0)),
        Errno::EINVAL
    );
    assert_eq!(t.v.kernel_root(), None);
    // A fresh L4 is validated by the base pointer alone.
    t.ext(abi::MMUEXT_NEW_BASEPTR, 0x100, 0).unwrap();
    assert_eq!(t.counts(0x100), (2, 1));
    assert_eq!(
        t.ext(abi::MMUEXT_NEW_BASEPTR, 0x100, 0),
        Ok(MmuextAction::LoadBaseptr { changed: false })
    );
    assert_eq!(t.counts(0x100), (2, 1));
    // The user root: the same L4 may serve both.
    assert_eq!(
        t.ext(abi::MMUEXT_NEW_USER_BASEPTR, 0x100, 0),
        Ok(MmuextAction::None)
    );
    assert_eq!(t.counts(0x100), (3, 2));
    assert_eq!(
        errno(t.ext(abi::MMUEXT_NEW_USER_BASEPTR, 0x103, 0)),
        Errno::EINVAL
    );
    assert_eq!(t.v.user_root(), Some(mfn(0x100)));
    t.check();
    t.ext(abi::MMUEXT_NEW_USER_BASEPTR, 0, 0).unwrap();
    assert_eq!((t.v.user_root(), t.counts(0x100)), (None, (2, 1)));
    t.ext(abi::MMUEXT_NEW_USER_BASEPTR, 0x10f, 0).unwrap();
    t.check();
    t.d.destroy_pagetables(&mut t.mem, &mut t.v).unwrap();
    assert_eq!((t.counts(0x100), t.counts(0x10f)), ((1, 0), (1, 0)));
    t.check();
}

#[test]
fn linear_page_tables() {
    let mut t = Dom::new();
    t.pin(0x100, Level::L4).unwrap();
    // Read-only onto a validated L4 of its own level.
    t.set(0x10a, 0, pte(0x100, PUA));
    t.pin(0x10a, Level::L4).unwrap();
    assert_eq!(t.page(0x100).linear_uses(), 1);
    assert_eq!(t.page(0x10a).linear_entries(), 1);
    assert_eq!(t.counts(0x100), (3, 2));
    t.check();
    // Writable: refused.
    assert_eq!(
        errno(t.update(0x10a, 1, pte(0x100, PUA | RW))),
        Errno::EINVAL
    );
    // Onto a table not validated: refused (it would start a validation). 0x10b
    // is no valid L3 (a superpage), so only a linear entry could take it.
    t.set(0x10b, 0, pte(0x10d, PUA | PSE));
    assert_eq!(errno(t.update(0x10a, 1, pte(0x10b, PUA))), Errno::EINVAL);
    assert_eq!(t.page(0x10b).page_type(), PageType::None);
    t.set(0x10b, 0, 0);
    // Validated as an L3 (an ordinary entry), it is no linear target.
    t.update(0x10a, 1, pte(0x10b, PUA)).unwrap();
    assert_eq!(t.page(0x10b).page_type(), PageType::PageTable(Level::L3));
    assert_eq!(t.page(0x10a).linear_entries(), 1);
    // Not two deep: 0x10a has linear entries, so it is no target...
    t.pin(0x10c, Level::L4).unwrap();
    assert_eq!(errno(t.update(0x10c, 0, pte(0x10a, PUA))), Errno::EINVAL);
    // ... and 0x100, a target, gets no linear entries.
    assert_eq!(errno(t.update(0x100, 1, pte(0x10c, PUA))), Errno::EINVAL);
    // A table may map itself, read-only, without references.
    t.update(0x10c, 5, pte(0x10c, PUA)).unwrap();
    assert_eq!(t.counts(0x10c), (2, 1));
    assert_eq!(
        errno(t.update(0x10c, 6, pte(0x10c, PUA | RW))),
        Errno::EINVAL
    );
    t.check();
    // Dropping the linear entry drops its references.
    t.update(0x10a, 0, 0).unwrap();
    assert_eq!(
        (t.page(0x100).linear_uses(), t.page(0x10a).linear_entries()),
        (0, 0)
    );
    assert_eq!(t.counts(0x100), (2, 1));
    // A linear reference can be the last: unpinning the target leaves it to the
    // linear entry, and removing that entry devalidates it.
    t.update(0x10a, 0, pte(0x100, PUA)).unwrap();
    t.unpin(0x100).unwrap();
    assert!(t.page(0x100).is_validated());
    t.update(0x10a, 0, 0).unwrap();
    assert_eq!(t.counts(0x100), (1, 0));
    t.check();
    // L2s too; unpinning the table with linear entries releases its target.
    t.pin(0x102, Level::L2).unwrap();
    t.set(0x105, 9, pte(0x102, PUA));
    t.pin(0x105, Level::L2).unwrap();
    assert_eq!(t.counts(0x102), (3, 2));
    t.unpin(0x105).unwrap();
    assert_eq!(t.counts(0x102), (2, 1));
    t.check();

    let mut t = Dom::with(Policy {
        linear_pt: false,
        ..Policy::default()
    });
    t.pin(0x100, Level::L4).unwrap();
    t.set(0x10a, 0, pte(0x100, PUA));
    assert_eq!(errno(t.pin(0x10a, Level::L4)), Errno::EINVAL);
    t.set(0x10a, 0, pte(0x10a, PUA));
    assert_eq!(errno(t.pin(0x10a, Level::L4)), Errno::EINVAL);
    t.check();
}

#[test]
fn fast_path_and_preserved_accessed_dirty() {
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    t.update(0x103, 0, pte(0x105, PUA | RW)).unwrap();
    let changes = t.mem.type_changes.len();
    // Only fast-path flags change: no references move.
    t.update(0x103, 0, pte(0x105, PUA | RW | DIRTY | NX | AVAIL))
        .unwrap();
    assert_eq!(t.counts(0x105), (2, 1));
    assert_eq!(
        t.get(0x103, 0),
        pte(0x105, PUA | RW | DIRTY | NX | AVAIL | GLOBAL)
    );
    // The hardware sets ACCESSED on an entry while keel writes it.
    t.update(0x103, 1, pte(0x106, P | USER)).unwrap();
    t.mem.race = ACCESSED;
    t.update_cmd(
        0x103,
        1,
        pte(0x106, P | USER | NX),
        abi::MMU_PT_UPDATE_PRESERVE_AD,
    )
    .unwrap();
    assert_eq!(t.mem.race, 0);
    assert_eq!(
        t.get(0x103, 1),
        pte(0x106, P | USER | NX | ACCESSED | GLOBAL)
    );
    // A plain update drops what the hardware set; NO_TRANSLATE is the same for PV.
    t.update_cmd(
        0x103,
        1,
        pte(0x106, P | USER),
        abi::MMU_PT_UPDATE_NO_TRANSLATE,
    )
    .unwrap();
    assert_eq!(t.get(0x103, 1), pte(0x106, P | USER | GLOBAL));
    assert_eq!(t.mem.type_changes.len(), changes);
    t.check();
    // An entry that changes beyond A/D behind keel's back: the update is undone,
    // and the domain crashed.
    t.mem.race = RW;
    let before = t.counts(0x105);
    assert_eq!(
        t.update_cmd(
            0x103,
            1,
            pte(0x105, P | USER),
            abi::MMU_PT_UPDATE_PRESERVE_AD
        ),
        Err(PvError::EntryRaced(mfn(0x103)))
    );
    assert_eq!(t.counts(0x105), before);
    assert!(PvError::EntryRaced(mfn(0x103)).is_domain_fatal());
}

#[test]
fn directory_updates_move_references_and_flush() {
    let mut t = Dom::new();
    t.tree();
    t.pin(0x100, Level::L4).unwrap();
    // Point the L2 at another (fresh) L1: it is validated, the old one devalidated.
    t.set(0x108, 3, pte(0x109, PUA | RW));
    let done = t.update(0x102, 0, pte(0x108, PUA | RW)).unwrap();
    assert_eq!(
        done,
        MmuUpdateDone::Written {
            flush: Some(Flush::Domain(Extent::Full))
        }
    );
    assert_eq!(t.counts(0x103), (1, 0));
    assert_eq!(t.counts(0x104), (1, 0));
    assert_eq!(t.counts(0x108), (2, 1));
    assert_eq!(t.counts(0x109), (2, 1));
    t.check();
    // Pointing at the table already there again takes the new references first.
    t.update(0x102, 0, pte(0x108, PUA)).unwrap();
    assert_eq!(t.counts(0x108), (2, 1));
    // A failing validation below leaves nothing behind.
    t.set(0x10a, 0, pte(0x10b, PUA | RW));
    t.set(0x10a, 1, pte(FOREIGN, PUA));
    assert_eq!(errno(t.update(0x102, 1, pte(0x10a, PUA))), Errno::EBUSY);
    assert_eq!((t.counts(0x10a), t.counts(0x10b)), ((1, 0), (1, 0)));
    assert_eq!(t.get(0x102, 1), 0);
    t.check();
    // L1 updates ask for no flush.
    assert_eq!(
        t.update(0x108, 4, pte(0x10c, PUA)),
        Ok(MmuUpdateDone::Written { flush: None })
    );
}

#[test]
fn failed_validation_unwinds_in_full() {
    let mut t = Dom::new();
    t.tree();
    // The second L3 entry points at an L2 whose L1 maps a foreign frame.
    t.set(0x101, 1, pte(0x105, PUA));
    t.set(0x105, 0, pte(0x106, PUA));
    t.set(0x106, 0, pte(0x107, PUA | RW));
    t.set(0x106, 1, pte(FOREIGN, PUA));
    assert_eq!(errno(t.pin(0x100, Level::L4)), Errno::EBUSY);
    for f in 0x100..=0x107 {
        assert_eq!(t.counts(f), (1, 0), "{f:#x}");
    }
    t.check();
    t.set(0x106, 1, 0);
    t.pin(0x100, Level::L4).unwrap();
    t.check();
}

#[test]
fn machphys_and_unknown_commands() {
    let mut t = Dom::new();
    assert_eq!(
        t.update_cmd(0x104, 3, 0x1234, abi::MMU_MACHPHYS_UPDATE),
        Ok(MmuUpdateDone::MachPhys {
            mfn: mfn(0x104),
            gpfn: 0x1234
        })
    );
    assert_eq!(
        errno(t.update_cmd(FOREIGN, 0, 1, abi::MMU_MACHPHYS_UPDATE)),
        Errno::EINVAL
    );
    for cmd in 4..8 {
        assert_eq!(
            t.update_cmd(0x104, 0, 1, cmd),
            Err(PvError::UnknownCommand(cmd))
        );
    }
    assert_eq!(errno(t.update_cmd(0x104, 0, 1, 5)), Errno::ENOSYS);
    assert_eq!(errno(t.update(FOREIGN, 0, 1)), Errno::EINVAL);
    let req = MmuUpdate { ptr: !7, val: 0 };
    assert_eq!(errno(t.d.mmu_update(&mut t.mem, &req)), Errno::EINVAL);
    t.check();
}

#[test]
fn ordinary_frames_are_written_as_data() {
    let mut t = Dom::new();
    t.update(0x104, 17, 0x5555).unwrap();
    assert_eq!(t.get(0x104, 17), 0x5555);
    assert_eq!(t.page(0x104).page_type(), PageType::Writable);
    assert_eq!(t.counts(0x104), (1, 0));
    // A devalidated table is data again.
    t.pin(0x103, Level::L1).unwrap();
    t.unpin(0x103).unwrap();
    t.update(0x103, 0, pte(FOREIGN, PUA | RW)).unwrap();
    assert_eq!(t.page(0x103).page_type(), PageType::Writable);
    assert!(t.mem.type_changes.contains(&(
        mfn(0x103),
        PageType::PageTable(Level::L1),
        PageType::Writable
    )));
    // But not a descriptor page in use.
    t.d.get_segdesc_page(&mut t.mem, mfn(0x105)).unwrap();
    t.seg.insert(mfn(0x105), 1);
    assert_eq!(
        t.update(0x105, 0, 1),
        Err(PvError::DescriptorPage(mfn(0x105)))
    );
    t.check();
    t.d.put_segdesc_page(&mut t.mem, mfn(0x105)).unwrap();
    t.seg.clear();
    t.update(0x105, 0, 1).unwrap();
    t.check();
}

#[test]
fn type_changes_are_announced() {
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    t.update(0x103, 0, pte(0x104, PUA | RW)).unwrap();
    t.update(0x103, 0, 0).unwrap();
    t.pin(0x104, Level::L1).unwrap();
    assert_eq!(
        t.mem.type_changes,
        [
            (mfn(0x103), PageType::None, PageType::PageTable(Level::L1)),
            (mfn(0x104), PageType::None, PageType::Writable),
            (
                mfn(0x104),
                PageType::Writable,
                PageType::PageTable(Level::L1)
            ),
        ]
    );
    // Re-taking the same type announces nothing.
    t.unpin(0x104).unwrap();
    t.pin(0x104, Level::L1).unwrap();
    assert_eq!(t.mem.type_changes.len(), 3);
}

#[test]
fn tlb_and_cache_operations() {
    let mut t = Dom::new();
    let local = |e| Ok(MmuextAction::Flush(Flush::Local(e)));
    let domain = |e| Ok(MmuextAction::Flush(Flush::Domain(e)));
    let va = Gva::new(0x7000_0000);
    assert_eq!(
        t.ext(abi::MMUEXT_TLB_FLUSH_LOCAL, 0, 0),
        local(Extent::Full)
    );
    assert_eq!(
        t.ext(abi::MMUEXT_INVLPG_LOCAL, va.as_u64(), 0),
        local(Extent::Page(va))
    );
    assert_eq!(
        t.ext(abi::MMUEXT_INVLPG_LOCAL, 1 << 47, 0),
        Ok(MmuextAction::None)
    );
    assert_eq!(t.ext(abi::MMUEXT_TLB_FLUSH_ALL, 0, 0), domain(Extent::Full));
    assert_eq!(
        t.ext(abi::MMUEXT_INVLPG_ALL, va.as_u64(), 0),
        domain(Extent::Page(va))
    );
    assert_eq!(
        t.ext(abi::MMUEXT_INVLPG_ALL, 0xffff_8100_0000_0000, 0),
        Ok(MmuextAction::None)
    );
    assert_eq!(
        t.ext(abi::MMUEXT_TLB_FLUSH_MULTI, 0, 0x9000),
        Ok(MmuextAction::FlushMulti {
            vcpumask: 0x9000,
            extent: Some(Extent::Full)
        })
    );
    assert_eq!(
        t.ext(abi::MMUEXT_INVLPG_MULTI, va.as_u64(), 0x9000),
        Ok(MmuextAction::FlushMulti {
            vcpumask: 0x9000,
            extent: Some(Extent::Page(va))
        })
    );
    assert_eq!(
        t.ext(abi::MMUEXT_INVLPG_MULTI, 0xffff_8000_0000_0000, 0x9000),
        Ok(MmuextAction::FlushMulti {
            vcpumask: 0x9000,
            extent: None
        })
    );
    assert_eq!(errno(t.ext(abi::MMUEXT_FLUSH_CACHE, 0, 0)), Errno::EACCES);
    assert_eq!(
        errno(t.ext(abi::MMUEXT_FLUSH_CACHE_GLOBAL, 0, 0)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_MARK_SUPER, 0x104, 0)),
        Errno::EOPNOTSUPP
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_UNMARK_SUPER, 0x104, 0)),
        Errno::EOPNOTSUPP
    );
    for cmd in [14, 21, u32::MAX] {
        assert_eq!(t.ext(cmd, 0, 0), Err(PvError::UnknownCommand(cmd)));
    }
    let mut t = Dom::with(Policy {
        io_caps: true,
        ..Policy::default()
    });
    assert_eq!(
        t.ext(abi::MMUEXT_FLUSH_CACHE, 0, 0),
        Ok(MmuextAction::FlushCache { global: false })
    );
    assert_eq!(
        t.ext(abi::MMUEXT_FLUSH_CACHE_GLOBAL, 0, 0),
        Ok(MmuextAction::FlushCache { global: true })
    );
    // Merging a batch's flushes.
    let page = |a| Some(Flush::Local(Extent::Page(Gva::new(a))));
    assert_eq!(Flush::merge(None, page(1)), page(1));
    assert_eq!(Flush::merge(page(1), page(1)), page(1));
    assert_eq!(
        Flush::merge(page(1), page(2)),
        Some(Flush::Local(Extent::Full))
    );
    assert_eq!(
        Flush::merge(page(1), Some(Flush::Domain(Extent::Page(Gva::new(1))))),
        Some(Flush::Domain(Extent::Page(Gva::new(1))))
    );
    assert_eq!(
        Flush::merge(
            Some(Flush::Local(Extent::Full)),
            Some(Flush::Domain(Extent::Page(Gva::new(1))))
        ),
        Some(Flush::Domain(Extent::Full))
    );
}

#[test]
fn set_ldt() {
    let mut t = Dom::new();
    let base = 0x7fff_0000_0000u64;
    assert_eq!(
        t.ext(abi::MMUEXT_SET_LDT, base, 16),
        Ok(MmuextAction::LoadLdt { base, ents: 16 })
    );
    assert_eq!(t.v.ldt(), (base, 16));
    assert_eq!(t.ext(abi::MMUEXT_SET_LDT, base, 16), Ok(MmuextAction::None));
    // Only the low half of arg2 is nr_ents.
    assert_eq!(
        t.ext(abi::MMUEXT_SET_LDT, base, (0xdead << 32) | 16),
        Ok(MmuextAction::None)
    );
    assert_eq!(
        t.ext(abi::MMUEXT_SET_LDT, base + 8, 16),
        Err(PvError::BadLdt {
            base: base + 8,
            ents: 16
        })
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_SET_LDT, base, u64::from(LDT_MAX_ENTS) + 1)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_SET_LDT, 0xffff_8000_0000_0000, 1)),
        Errno::EINVAL
    );
    assert_eq!(errno(t.ext(abi::MMUEXT_SET_LDT, 1 << 47, 1)), Errno::EINVAL);
    t.ext(
        abi::MMUEXT_SET_LDT,
        0xffff_8800_0000_0000,
        LDT_MAX_ENTS.into(),
    )
    .unwrap();
    // No descriptors: the base is ignored.
    assert_eq!(
        t.ext(abi::MMUEXT_SET_LDT, 0x1234, 0),
        Ok(MmuextAction::LoadLdt { base: 0, ents: 0 })
    );
    assert_eq!(t.v.ldt(), (0, 0));
}

#[test]
fn clear_and_copy_page() {
    let mut t = Dom::new();
    t.set(0x104, 3, 0xabc);
    t.ext(abi::MMUEXT_COPY_PAGE, 0x105, 0x104).unwrap();
    assert_eq!(t.get(0x105, 3), 0xabc);
    t.ext(abi::MMUEXT_CLEAR_PAGE, 0x104, 0).unwrap();
    assert_eq!(t.get(0x104, 3), 0);
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(
        errno(t.ext(abi::MMUEXT_CLEAR_PAGE, 0x103, 0)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_COPY_PAGE, 0x103, 0x105)),
        Errno::EINVAL
    );
    // A table may be the source.
    t.ext(abi::MMUEXT_COPY_PAGE, 0x106, 0x103).unwrap();
    assert_eq!(
        errno(t.ext(abi::MMUEXT_COPY_PAGE, 0x106, FOREIGN)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_COPY_PAGE, FOREIGN, 0x106)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.ext(abi::MMUEXT_CLEAR_PAGE, 1 << 45, 0)),
        Errno::EINVAL
    );
    assert_eq!(t.counts(0x106), (1, 0));
    t.check();
}

#[test]
fn writable_page_tables() {
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    assert!(t.d.is_ptwr_target(mfn(0x103)));
    assert!(!t.d.is_ptwr_target(mfn(0x104)));
    assert!(!t.d.is_ptwr_target(mfn(FOREIGN)));
    // A full entry.
    assert_eq!(
        t.ptwr(0x103, 8, 8, pte(0x104, PUA | RW)),
        Ok(PtwrDone::Written)
    );
    assert_eq!(t.get(0x103, 1), pte(0x104, PUA | RW | GLOBAL));
    assert_eq!(t.counts(0x104), (2, 1));
    // The high half alone: NX, merged with the rest.
    assert_eq!(t.ptwr(0x103, 12, 4, 1 << 31), Ok(PtwrDone::Written));
    assert_eq!(t.get(0x103, 1), pte(0x104, PUA | RW | GLOBAL | NX));
    assert_eq!(t.counts(0x104), (2, 1));
    // One byte: clear RW and the other low flags but PRESENT.
    assert_eq!(t.ptwr(0x103, 8, 1, P), Ok(PtwrDone::Written));
    assert_eq!(
        t.get(0x103, 1),
        pte(0x104, PUA | GLOBAL | NX) & !ACCESSED | GUEST_KERNEL
    );
    assert_eq!(t.counts(0x104), (2, 0));
    // Alignment and size.
    for (offset, bytes) in [(9, 2), (12, 8), (4, 3), (0, 16), (0, 0), (4096, 1)] {
        assert_eq!(
            t.ptwr(0x103, offset, bytes, 0),
            Err(PvError::BadPtwrAccess { offset, bytes })
        );
    }
    // Only a validated L1.
    assert_eq!(t.ptwr(0x104, 0, 8, 0), Err(PvError::NotL1(mfn(0x104))));
    t.check();
    // cmpxchg.
    let cur = t.get(0x103, 1);
    let new = pte(0x105, PUA);
    assert_eq!(
        t.d.ptwr_emulate(&mut t.mem, mfn(0x103), 8, 8, new, Some(cur ^ 1)),
        Ok(PtwrDone::CmpxchgFailed { seen: cur })
    );
    assert_eq!(t.counts(0x105), (1, 0));
    assert_eq!(
        t.d.ptwr_emulate(&mut t.mem, mfn(0x103), 8, 8, new, Some(cur)),
        Ok(PtwrDone::Written)
    );
    assert_eq!((t.counts(0x104), t.counts(0x105)), ((1, 0), (2, 0)));
    let low = t.get(0x103, 1) as u32;
    assert_eq!(
        t.d.ptwr_emulate(&mut t.mem, mfn(0x103), 8, 4, 0, Some(u64::from(low) + 1)),
        Ok(PtwrDone::CmpxchgFailed {
            seen: u64::from(low)
        })
    );
    t.d.ptwr_emulate(&mut t.mem, mfn(0x103), 8, 4, 0, Some(u64::from(low)))
        .unwrap();
    assert_eq!(t.counts(0x105), (1, 0));
    t.check();
    // update_va_mapping's core.
    t.d.update_l1_entry(&mut t.mem, mfn(0x103), 511, pte(0x106, PUA))
        .unwrap();
    assert_eq!(
        errno(t.d.update_l1_entry(&mut t.mem, mfn(0x103), 512, 0)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(t.d.update_l1_entry(&mut t.mem, mfn(0x104), 0, 0)),
        Errno::EINVAL
    );
    t.check();
}

#[test]
fn giving_frames_back() {
    let mut t = Dom::new();
    t.pin(0x103, Level::L1).unwrap();
    t.update(0x103, 0, pte(0x104, PUA | RW)).unwrap();
    // Still mapped: the frame stays the domain's.
    t.d.remove_page(&mut t.mem, mfn(0x104)).unwrap();
    assert!(t.d.owns(mfn(0x104)));
    assert!(!t.page(0x104).is_allocated());
    t.d.remove_page(&mut t.mem, mfn(0x104)).unwrap();
    assert_eq!(freed(&mut t.d).len(), 0);
    t.check();
    // Unmapped: freed, once.
    t.update(0x103, 0, 0).unwrap();
    assert!(!t.d.owns(mfn(0x104)));
    assert_eq!(freed(&mut t.d), [mfn(0x104)]);
    assert_eq!(
        errno(t.d.remove_page(&mut t.mem, mfn(0x104))),
        Errno::EINVAL
    );
    // A pinned table given back is unpinned and freed.
    t.d.remove_page(&mut t.mem, mfn(0x103)).unwrap();
    assert_eq!(freed(&mut t.d), [mfn(0x103)]);
    // A mapping of a freed frame is refused: it is no longer the domain's.
    t.pin(0x105, Level::L1).unwrap();
    assert_eq!(errno(t.update(0x105, 0, pte(0x104, PUA))), Errno::EBUSY);
    // Given again, it is fresh.
    t.mem.scrub(mfn(0x104));
    t.d.assign(mfn(0x104)).unwrap();
    assert_eq!(
        t.d.assign(mfn(0x104)),
        Err(PvError::AlreadyAssigned(mfn(0x104)))
    );
    t.update(0x105, 0, pte(0x104, PUA)).unwrap();
    t.check();
}

#[test]
fn special_frames() {
    let mut t = Dom::with(Policy {
        io_caps: true,
        ..Policy::default()
    });
    let shared = 0x180;
    t.d.assign_special(mfn(shared)).unwrap();
    assert_eq!(t.counts(shared), (1, 1));
    assert_eq!(errno(t.pin(shared, Level::L1)), Errno::EINVAL);
    assert_eq!(
        errno(t.d.get_segdesc_page(&mut t.mem, mfn(shared))),
        Errno::EINVAL
    );
    t.pin(0x103, Level::L1).unwrap();
    t.update(0x103, 0, pte(shared, PUA | RW)).unwrap();
    assert_eq!(t.counts(shared), (2, 2));
    assert_eq!(
        t.update(0x103, 1, pte(shared, PUA | RW | PCD)),
        Err(PvError::CacheAttrsOnSpecial(mfn(shared)))
    );
    assert_eq!(
        errno(t.update(0x103, 1, pte(shared, PUA | PWT))),
        Errno::EACCES
    );
    assert_eq!(t.counts(shared), (2, 2));
    assert_eq!(
        t.d.remove_page(&mut t.mem, mfn(shared)),
        Err(PvError::SpecialFrame(mfn(shared)))
    );
    t.check();
    t.d.relinquish(&mut t.mem).unwrap();
    assert!(t.d.is_empty());
    assert_eq!(freed(&mut t.d).len(), FRAMES as usize + 1);
}

#[test]
fn descriptor_pages() {
    let mut t = Dom::new();
    t.mem.bad_segdesc = true;
    assert_eq!(
        t.d.get_segdesc_page(&mut t.mem, mfn(0x107)),
        Err(PvError::BadDescriptor(mfn(0x107)))
    );
    assert_eq!(t.counts(0x107), (1, 0));
    t.mem.bad_segdesc = false;
    t.d.get_segdesc_page(&mut t.mem, mfn(0x107)).unwrap();
    t.d.get_segdesc_page(&mut t.mem, mfn(0x107)).unwrap();
    t.seg.insert(mfn(0x107), 2);
    assert_eq!(t.counts(0x107), (3, 2));
    assert_eq!(errno(t.pin(0x107, Level::L1)), Errno::EINVAL);
    t.check();
    assert_eq!(
        errno(t.d.put_segdesc_page(&mut t.mem, mfn(0x108))),
        Errno::EINVAL
    );
    t.d.put_segdesc_page(&mut t.mem, mfn(0x107)).unwrap();
    t.d.put_segdesc_page(&mut t.mem, mfn(0x107)).unwrap();
    t.seg.clear();
    assert_eq!(t.counts(0x107), (1, 0));
    t.check();
}

#[test]
fn l1tf_unsafe_entries() {
    let mut t = Dom::with(Policy {
        l1tf_safe_maddr: Some(1 << 40),
        ..Policy::default()
    });
    t.set(0x103, 0, 0x5000);
    assert_eq!(t.pin(0x103, Level::L1), Err(PvError::L1tfUnsafe(0x5000)));
    assert!(PvError::L1tfUnsafe(0x5000).is_domain_fatal());
    // Linux inverts the address of swap entries: safe.
    t.set(0x103, 0, (1 << 51) | 0x5000);
    t.pin(0x103, Level::L1).unwrap();
    assert_eq!(errno(t.update(0x103, 1, 0x6000)), Errno::EPERM);
    t.update(0x103, 1, 0).unwrap();
    t.check();
}

#[test]
fn the_domains_end_frees_every_frame() {
    let mut t = Dom::new();
    t.tree();
    t.pin(0x100, Level::L4).unwrap();
    t.ext(abi::MMUEXT_NEW_BASEPTR, 0x100, 0).unwrap();
    t.set(0x10a, 0, pte(0x100, PUA));
    t.pin(0x10a, Level::L4).unwrap();
    t.pin(0x10b, Level::L1).unwrap();
    t.update(0x10b, 0, pte(0x10b, PUA)).unwrap();
    t.d.remove_page(&mut t.mem, mfn(0x104)).unwrap();
    t.check();
    t.d.destroy_pagetables(&mut t.mem, &mut t.v).unwrap();
    t.d.relinquish(&mut t.mem).unwrap();
    assert!(t.d.is_empty());
    let mut freed: Vec<u64> = freed(&mut t.d).iter().map(|m| m.as_u64()).collect();
    freed.sort_unstable();
    assert_eq!(freed, (FIRST..FIRST + FRAMES).collect::<Vec<_>>());
}

#[test]
fn errnos_are_xens() {
    let m = mfn(1);
    let table = [
        (PvError::BadFlags { level: 1, bits: 8 }, Errno::EINVAL),
        (PvError::NotDomainFrame(1), Errno::EINVAL),
        (PvError::ForeignFrame(m), Errno::EBUSY),
        (PvError::IoNotPermitted(m), Errno::EPERM),
        (PvError::InvalidMfn, Errno::EINVAL),
        (PvError::NotWritable(m), Errno::EBUSY),
        (PvError::CacheAttrsOnSpecial(m), Errno::EACCES),
        (PvError::TypeConflict(m), Errno::EINVAL),
        (PvError::RefOverflow(m), Errno::EINVAL),
        (PvError::BadDescriptor(m), Errno::EINVAL),
        (PvError::KeelSlot(256), Errno::EINVAL),
        (PvError::AlreadyPinned(m), Errno::EINVAL),
        (PvError::NotPinned(m), Errno::EINVAL),
        (PvError::DescriptorPage(m), Errno::EINVAL),
        (PvError::UnknownCommand(4), Errno::ENOSYS),
        (PvError::Superpages, Errno::EOPNOTSUPP),
        (PvError::BadLdt { base: 1, ents: 1 }, Errno::EINVAL),
        (PvError::CacheFlushDenied, Errno::EACCES),
        (PvError::GlobalCacheFlushDenied, Errno::EINVAL),
        (PvError::L1tfUnsafe(1), Errno::EPERM),
        (PvError::NotL1(m), Errno::EINVAL),
        (PvError::BadIndex(512), Errno::EINVAL),
        (
            PvError::BadPtwrAccess {
                offset: 1,
                bytes: 8,
            },
            Errno::EINVAL,
        ),
        (PvError::EntryRaced(m), Errno::EBUSY),
        (PvError::AlreadyAssigned(m), Errno::EEXIST),
        (PvError::SpecialFrame(m), Errno::EINVAL),
        (PvError::NoMemory, Errno::ENOMEM),
        (PvError::Inconsistent { mfn: m, what: "x" }, Errno::EINVAL),
    ];
    for (e, want) in table {
        assert_eq!(e.errno(), want, "{e}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        PvError::BadFlags {
            level: 2,
            bits: 0x80
        }
        .to_string(),
        "an L2 entry sets bits a guest may not set there: 0x80"
    );
}

/// A domain whose state lives in a counting allocator.
fn counted() -> (DomainFrames<Counting>, Counting, FakeMem) {
    let alloc = Counting::new();
    let d = DomainFrames::new_in(Policy::default(), alloc.clone());
    (d, alloc, FakeMem::new())
}

#[track_caller]
fn check_counted(d: &DomainFrames<Counting>, mem: &FakeMem) {
    if let Err(e) = audit(d, mem, &[], &BTreeMap::new()) {
        panic!("audit: {e}");
    }
}

#[test]
fn assign_fails_cleanly_when_the_allocator_is_spent() {
    let (mut d, alloc, mut mem) = counted();
    // An empty domain holds no memory.
    assert_eq!(alloc.live(), 0);
    // The first frame needs the index and a chunk: with no allocation left,
    // neither is there, and nothing changed.
    alloc.set_budget(Some(0));
    assert_eq!(d.assign(mfn(0x100)), Err(PvError::NoMemory));
    assert_eq!(PvError::NoMemory.errno(), Errno::ENOMEM);
    assert!(d.is_empty() && !d.owns(mfn(0x100)));
    assert_eq!(alloc.live(), 0);
    // With one: the index, but no chunk.
    alloc.set_budget(Some(1));
    assert_eq!(d.assign(mfn(0x100)), Err(PvError::NoMemory));
    assert_eq!(d.assign_special(mfn(0x100)), Err(PvError::NoMemory));
    assert!(d.is_empty() && d.page(mfn(0x100)).is_none());
    assert_eq!(alloc.live(), 1);
    check_counted(&d, &mem);
    // With one more: the chunk, and the rest of its 256 frames need nothing.
    alloc.set_budget(Some(1));
    for f in 0x100..0x200 {
        d.assign(mfn(f)).unwrap();
    }
    assert_eq!((d.len(), alloc.live()), (256, 2));
    // The next chunk's frames fail; a frame already there is still refused as such.
    assert_eq!(d.assign(mfn(0x200)), Err(PvError::NoMemory));
    assert_eq!(d.assign(mfn(0xff)), Err(PvError::NoMemory));
    assert_eq!(
        d.assign(mfn(0x1ff)),
        Err(PvError::AlreadyAssigned(mfn(0x1ff)))
    );
    assert_eq!(d.len(), 256);
    check_counted(&d, &mem);
    // Operations never allocate: validate a table, map, give frames back.
    mem.set(mfn(0x103), 0, pte(0x104, PUA | RW));
    d.pin(&mut mem, 0x103, Level::L1).unwrap();
    d.update_l1_entry(&mut mem, mfn(0x103), 1, pte(0x105, PUA))
        .unwrap();
    d.remove_page(&mut mem, mfn(0x106)).unwrap();
    assert_eq!(freed(&mut d), [mfn(0x106)]);
    check_counted(&d, &mem);
    // Neither does the teardown, which frees it all.
    d.relinquish(&mut mem).unwrap();
    assert_eq!(freed(&mut d).len(), 255);
    assert_eq!(alloc.live(), 0);
    // And with memory again, the domain works as new.
    alloc.set_budget(None);
    d.assign(mfn(0x200)).unwrap();
    check_counted(&d, &mem);
}

#[test]
fn frames_spread_over_many_chunks() {
    let (mut d, alloc, mut mem) = counted();
    // Chunk edges, frames far apart, out of order, the last frame there is.
    let last = (1 << 40) - 1;
    let frames = [
        0x1_0000,
        0xff,
        0,
        0x100,
        0x1ff,
        last,
        0x12_3456,
        0x1_00ff,
        0x200,
        last - 1,
    ];
    for f in frames {
        d.assign(mfn(f)).unwrap();
    }
    // Chunks 0, 1, 2, 0x100, 0x1234 and the last, and the index.
    assert_eq!(alloc.live(), 6 + 1);
    assert_eq!(d.len(), frames.len());
    let mut sorted = frames.to_vec();
    sorted.sort_unstable();
    let held = |d: &DomainFrames<Counting>| d.pages().map(|(m, _)| m.as_u64()).collect::<Vec<_>>();
    assert_eq!(held(&d), sorted);
    for near in [
        1,
        0xfe,
        0x101,
        0x201,
        0x1_0001,
        0x1_00fe,
        0x12_3455,
        last - 2,
    ] {
        assert!(
            !d.owns(mfn(near)) && d.page(mfn(near)).is_none(),
            "{near:#x}"
        );
    }
    assert_eq!(
        d.pin(&mut mem, 0x300, Level::L1),
        Err(PvError::NotDomainFrame(0x300))
    );
    // A tree across chunks: L4 0x1_0000 -> L3 0xff -> L2 last-1 -> L1 0x12_3456,
    // which maps 0x200 writable and 0 read-only.
    mem.set(mfn(0x1_0000), 0, pte(0xff, PUA | RW));
    mem.set(mfn(0xff), 0, pte(last - 1, PUA | RW));
    mem.set(mfn(last - 1), 0, pte(0x12_3456, PUA | RW));
    mem.set(mfn(0x12_3456), 0, pte(0x200, PUA | RW));
    mem.set(mfn(0x12_3456), 1, pte(0, PUA));
    d.pin(&mut mem, 0x1_0000, Level::L4).unwrap();
    check_counted(&d, &mem);
    for (f, ty) in [
        (0x1_0000, PageType::PageTable(Level::L4)),
        (0xff, PageType::PageTable(Level::L3)),
        (last - 1, PageType::PageTable(Level::L2)),
        (0x12_3456, PageType::PageTable(Level::L1)),
        (0x200, PageType::Writable),
    ] {
        let p = d.page(mfn(f)).unwrap();
        assert_eq!((p.page_type(), p.type_count()), (ty, 1), "{f:#x}");
    }
    assert_eq!(d.page(mfn(0)).unwrap().count(), 2);
    // Given back while mapped: still the domain's; the chunk stays.
    d.remove_page(&mut mem, mfn(0x200)).unwrap();
    d.remove_page(&mut mem, mfn(0)).unwrap();
    assert!(freed(&mut d).is_empty());
    assert_eq!(alloc.live(), 7);
    // The domain's end: every frame back once, every chunk and the index freed.
    d.relinquish(&mut mem).unwrap();
    assert!(d.is_empty());
    let mut back: Vec<u64> = freed(&mut d).iter().map(|m| m.as_u64()).collect();
    back.sort_unstable();
    assert_eq!(back, sorted);
    assert_eq!(alloc.live(), 0);
    check_counted(&d, &mem);
}

#[test]
fn a_chunk_goes_with_its_last_frame() {
    let (mut d, alloc, mut mem) = counted();
    for f in 0x100..0x300 {
        d.assign(mfn(f)).unwrap();
    }
    assert_eq!(alloc.live(), 3);
    // The second chunk's frames all given back, but 0x2ff is still mapped.
    mem.set(mfn(0x100), 0, pte(0x2ff, PUA));
    d.pin(&mut mem, 0x100, Level::L1).unwrap();
    for f in 0x200..0x300 {
        d.remove_page(&mut mem, mfn(f)).unwrap();
    }
    assert_eq!(freed(&mut d).len(), 255);
    assert_eq!(alloc.live(), 3);
    check_counted(&d, &mem);
    // Unmapped, it is freed; its slot holds it until the kernel takes it back,
    // and then the chunk goes.
    d.update_l1_entry(&mut mem, mfn(0x100), 0, 0).unwrap();
    assert!(!d.owns(mfn(0x2ff)));
    assert_eq!(alloc.live(), 3);
    check_counted(&d, &mem);
    assert_eq!(d.pop_freed(), Some(mfn(0x2ff)));
    assert_eq!(d.pop_freed(), None);
    assert_eq!(alloc.live(), 2);
    check_counted(&d, &mem);
    // A frame in its range again: a new chunk.
    d.assign(mfn(0x280)).unwrap();
    assert_eq!(alloc.live(), 3);
    // A frame freed and not yet taken back cannot be given again.
    d.remove_page(&mut mem, mfn(0x280)).unwrap();
    assert_eq!(
        d.assign(mfn(0x280)),
        Err(PvError::AlreadyAssigned(mfn(0x280)))
    );
    assert_eq!(freed(&mut d), [mfn(0x280)]);
    assert_eq!(alloc.live(), 2);
    // The domain's end returns every byte; so does dropping it with frames left.
    d.unpin(&mut mem, 0x100).unwrap();
    d.relinquish(&mut mem).unwrap();
    assert_eq!(freed(&mut d).len(), 256);
    assert_eq!(alloc.live(), 0);
    let (mut d, alloc, _) = counted();
    d.assign(mfn(5)).unwrap();
    d.assign(mfn(1 << 20)).unwrap();
    drop(d);
    assert_eq!(alloc.live(), 0);
}

#[test]
fn sixteen_bytes_a_frame() {
    // A 512 MiB domain, in one run of frames.
    let (mut d, alloc, mut mem) = counted();
    let frames: u64 = 512 << 8;
    for f in 0..frames {
        d.assign(mfn(0x10_0000 + f)).unwrap();
    }
    // 512 chunks of 4 KiB, and the index (a few KiB).
    assert_eq!(alloc.live(), 512 + 1);
    let bytes = alloc.live_bytes() as u64;
    assert!(bytes >= 512 * 4096 && bytes < 17 * frames, "{bytes} bytes");
    // The heap holds the structure only.
    assert!(core::mem::size_of::<DomainFrames>() <= 128);
    d.relinquish(&mut mem).unwrap();
    assert_eq!(freed(&mut d).len() as u64, frames);
    assert_eq!(alloc.live(), 0);
}
