//! Building x86-64 4-level page tables (SDM Vol. 3A §4.5) for keel's own address space.
//!
//! The builder knows the format, not the memory: it reaches table frames only through
//! `TableMemory`, which the kernel implements over the direct map (or the boot identity
//! map) and the tests implement over a `Vec`. That keeps this module free of `unsafe`
//! and testable on the host; EPT and NPT walkers will follow the same seam.
//!
//! Invariants:
//! - Every leaf is PRESENT; HUGE (PS, bit 7) is set exactly on 2 MiB and 1 GiB leaves,
//!   whatever the caller passed.
//! - Intermediate entries are PRESENT | WRITABLE, plus USER once any leaf below them is
//!   USER, and never NX: the leaf alone decides access (the effective permission is the
//!   AND of all levels, SDM Vol. 3A §4.6).
//! - A mapping is never silently replaced. Mapping the identical entry again is `Ok`
//!   (ACCESSED/DIRTY set by hardware are ignored); anything else is `AlreadyMapped`.
//!
//! Hazards:
//! - On error, intermediate tables allocated on the way stay linked in (empty, harmless)
//!   and `map_range` leaves the pages it mapped before the failure mapped.
//! - This is a builder, not a live-table editor: it does no TLB maintenance and takes
//!   no locks. PAT (bit 7 on 4 KiB, bit 12 on huge leaves) and protection keys are not
//!   supported.

use crate::addr::{Hpa, PHYS_ADDR_LIMIT, is_canonical};

bitflags::bitflags! {
    /// Flag bits of a page-table entry (SDM Vol. 3A §4.5, Tables 4-15..4-20).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct PteFlags: u64 {
        const PRESENT = 1 << 0;
        const WRITABLE = 1 << 1;
        const USER = 1 << 2;
        /// Page-level write-through.
        const PWT = 1 << 3;
        /// Page-level cache disable.
        const PCD = 1 << 4;
        const ACCESSED = 1 << 5;
        const DIRTY = 1 << 6;
        /// Page size (PS): this entry maps a 2 MiB / 1 GiB page. Managed by the builder.
        const HUGE = 1 << 7;
        /// Not flushed on CR3 switch (needs CR4.PGE).
        const GLOBAL = 1 << 8;
        /// No execute (needs EFER.NXE).
        const NX = 1 << 63;
    }
}

/// Address bits 12..51 of an entry.
const ADDR_MASK: u64 = (PHYS_ADDR_LIMIT - 1) & !0xFFF;
const ENTRIES: usize = 512;

/// The size of one leaf mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageSize {
    Size4K,
    Size2M,
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }
    const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }
    /// The level holding this leaf: 1 = PT, 2 = PD, 3 = PDPT (4 = PML4).
    const fn level(self) -> u32 {
        (self.shift() - 12) / 9 + 1
    }
}

/// Index of `va` in a table at `level` (4 = PML4).
const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & (ENTRIES as u64 - 1)) as usize
}

/// How the builder reaches page-table frames.
pub trait TableMemory {
    /// Allocate and zero a frame for a page table.
    fn alloc_table(&mut self) -> Result<Hpa, MapError>;
    /// Read entry `index` (0..512) of the table at `table`.
    fn read_entry(&self, table: Hpa, index: usize) -> u64;
    /// Write entry `index` (0..512) of the table at `table`.
    fn write_entry(&mut self, table: Hpa, index: usize, value: u64);
}

/// Errors from building page tables.
#[derive(Debug, PartialEq, Eq, displaydoc::Display)]
pub enum MapError {
    /// out of memory for page tables
    OutOfMemory,
    /// va/pa not aligned to the page size
    Misaligned,
    /// va not canonical
    NonCanonical,
    /// an existing mapping conflicts at {va:#x} (different target, or a huge page where a table is needed)
    AlreadyMapped { va: u64 },
    /// physical range runs past the end of the physical address space
    PhysOutOfRange,
}

/// Builds a 4-level page-table tree rooted at a PML4 it allocates.
pub struct PageTableBuilder<M: TableMemory> {
    root: Hpa,
    mem: M,
}

impl<M: TableMemory> PageTableBuilder<M> {
    /// Allocates the PML4.
    pub fn new(mut mem: M) -> Result<Self, MapError> {
        let root = mem.alloc_table()?;
        Ok(PageTableBuilder { root, mem })
    }

    /// The PML4, for CR3.
    pub fn root(&self) -> Hpa {
        self.root
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Maps one page of `size` at `va` to `pa`.
    pub fn map(
        &mut self,
        va: u64,
        pa: Hpa,
        size: PageSize,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        if !is_canonical(va) {
            return Err(MapError::NonCanonical);
        }
        if !va.is_multiple_of(size.bytes()) || !pa.as_u64().is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned);
        }
        let user = flags.contains(PteFlags::USER);
        let mut table = self.root;
        for level in (size.level() + 1..=4).rev() {
            table = self.next_table(table, index(va, level), va, user)?;
        }
        let mut leaf = flags.difference(PteFlags::HUGE) | PteFlags::PRESENT;
        if size != PageSize::Size4K {
            leaf |= PteFlags::HUGE;
        }
        let new = pa.as_u64() | leaf.bits();
        let idx = index(va, size.level());
        let old = self.mem.read_entry(table, idx);
        let hw_bits = (PteFlags::ACCESSED | PteFlags::DIRTY).bits();
        if old & PteFlags::PRESENT.bits() == 0 {
            self.mem.write_entry(table, idx, new);
            Ok(())
        } else if (old ^ new) & !hw_bits == 0 {
            Ok(())
        } else {
            Err(MapError::AlreadyMapped { va })
        }
    }

    /// Follows (or creates) the entry `idx` of `table` down to the next table.
    fn next_table(&mut self, table: Hpa, idx: usize, va: u64, user: bool) -> Result<Hpa, MapError> {
        let link = (PteFlags::PRESENT | PteFlags::WRITABLE).bits();
        let user_bit = if user { PteFlags::USER.bits() } else { 0 };
        let e = self.mem.read_entry(table, idx);
        if e & PteFlags::PRESENT.bits() == 0 {
            let next = self.mem.alloc_table()?;
            self.mem
                .write_entry(table, idx, next.as_u64() | link | user_bit);
            return Ok(next);
        }
        if e & PteFlags::HUGE.bits() != 0 {
            return Err(MapError::AlreadyMapped { va });
        }
        if e | user_bit != e {
            self.mem.write_entry(table, idx, e | user_bit);
        }
        Ok(Hpa::masked(e & ADDR_MASK))
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)` with the largest pages alignment
    /// allows (1 GiB only if `allow_1g`), 4 KiB at the edges. All of `va`, `pa`,
    /// `len` must be page aligned; the range must not cross the canonical hole.
    pub fn map_range(
        &mut self,
        va: u64,
        pa: Hpa,
        len: u64,
        flags: PteFlags,
        allow_1g: bool,
    ) -> Result<(), MapError> {
        if len == 0 {
            return Ok(());
        }
        if !(va | pa.as_u64() | len).is_multiple_of(PageSize::Size4K.bytes()) {
            return Err(MapError::Misaligned);
        }
        let last = va.checked_add(len - 1).ok_or(MapError::NonCanonical)?;
        if !is_canonical(va) || !is_canonical(last) || (va ^ last) >> 63 != 0 {
            return Err(MapError::NonCanonical);
        }
        if pa
            .as_u64()
            .checked_add(len)
            .is_none_or(|end| end > PHYS_ADDR_LIMIT)
        {
            return Err(MapError::PhysOutOfRange);
        }
        let mut off = 0;
        while off < len {
            let (v, p) = (va + off, pa.as_u64() + off);
            let fits = |s: PageSize| (v | p) % s.bytes() == 0 && len - off >= s.bytes();
            let size = if allow_1g && fits(PageSize::Size1G) {
                PageSize::Size1G
            } else if fits(PageSize::Size2M) {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            };
            self.map(v, Hpa::masked(p), size, flags)?;
            off += size.bytes();
        }
        Ok(())
    }

    /// Walks the tables: the physical address `va` translates to (page base plus
    /// `va`'s offset in the page), the leaf's size, and its flags (without HUGE).
    pub fn translate(&self, va: u64) -> Option<(Hpa, PageSize, PteFlags)> {
        if !is_canonical(va) {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4).rev() {
            let e = self.mem.read_entry(table, index(va, level));
            if e & PteFlags::PRESENT.bits() == 0 {
                return None;
            }
            let size = match level {
                1 => Some(PageSize::Size4K),
                2 if e & PteFlags::HUGE.bits() != 0 => Some(PageSize::Size2M),
                3 if e & PteFlags::HUGE.bits() != 0 => Some(PageSize::Size1G),
                _ => None,
            };
            if let Some(size) = size {
                let base = e & ADDR_MASK & !(size.bytes() - 1);
                let flags = PteFlags::from_bits_truncate(e).difference(PteFlags::HUGE);
                return Some((Hpa::masked(base | (va & (size.bytes() - 1))), size, flags));
            }
            table = Hpa::masked(e & ADDR_MASK);
        }
        None
    }

    pub fn into_inner(self) -> (Hpa, M) {
        (self.root, self.mem)
    }
}

#[cfg(test)]
mod tests {
    use super::MapError::*;
    use super::PageSize::*;
    use super::*;

    const BASE: u64 = 0x100_0000;
    const W: PteFlags = PteFlags::WRITABLE;
    const P: PteFlags = PteFlags::PRESENT;
    const G: u64 = 1 << 30;
    const M2: u64 = 1 << 21;

    /// Page tables in a `Vec`, at fake addresses `BASE + i * 4096`; `limit` tables max.
    struct FakeMem(Vec<[u64; ENTRIES]>, usize);

    impl TableMemory for FakeMem {
        fn alloc_table(&mut self) -> Result<Hpa, MapError> {
            if self.0.len() == self.1 {
                return Err(OutOfMemory);
            }
            self.0.push([0; ENTRIES]);
            Ok(hpa(BASE + (self.0.len() as u64 - 1) * 4096))
        }
        fn read_entry(&self, table: Hpa, index: usize) -> u64 {
            self.0[((table.as_u64() - BASE) / 4096) as usize][index]
        }
        fn write_entry(&mut self, table: Hpa, index: usize, value: u64) {
            self.0[((table.as_u64() - BASE) / 4096) as usize][index] = value;
        }
    }

    fn builder(limit: usize) -> PageTableBuilder<FakeMem> {
        PageTableBuilder::new(FakeMem(Vec::new(), limit)).unwrap()
    }

    fn hpa(a: u64) -> Hpa {
        Hpa::new(a).unwrap()
    }

    /// (pa, size) that `va` translates to.
    fn leaf(pt: &PageTableBuilder<FakeMem>, va: u64) -> Option<(u64, PageSize)> {
        pt.translate(va).map(|(pa, size, _)| (pa.as_u64(), size))
    }

    #[test]
    fn map_and_translate_each_size() {
        let mut pt = builder(64);
        let nx = W | PteFlags::NX;
        pt.map(0xFFFF_8000_0000_1000, hpa(0x5000), Size4K, nx)
            .unwrap();
        pt.map(0xFFFF_8000_0020_0000, hpa(0x40_0000), Size2M, W)
            .unwrap();
        pt.map(0x40_0000_0000, hpa(0x8000_0000), Size1G, PteFlags::HUGE)
            .unwrap();
        for (va, want) in [
            (0xFFFF_8000_0000_1234, Some((hpa(0x5234), Size4K, P | nx))),
            (0xFFFF_8000_002F_FFFF, Some((hpa(0x4F_FFFF), Size2M, P | W))),
            (0x40_1234_5678, Some((hpa(0x9234_5678), Size1G, P))),
            (0xFFFF_8000_0000_2000, None),
            (0x8000_0000_0000, None), // non-canonical
        ] {
            assert_eq!(pt.translate(va), want, "{va:#x}");
        }
        let (root, mem) = pt.into_inner();
        assert_eq!(root, hpa(BASE));
        // 4K: PML4+PDPT+PD+PT, 2M shares PML4..PD, 1G: another PDPT.
        assert_eq!(mem.0.len(), 5);
    }

    #[test]
    fn intermediates_get_present_writable_user_never_nx() {
        let mut pt = builder(64);
        let va = 0x7F00_0000_0000;
        let walk = |pt: &PageTableBuilder<FakeMem>| {
            let mut t = pt.root();
            let entries: Vec<u64> = (1..=4)
                .rev()
                .map(|level| {
                    let e = pt.memory().read_entry(t, index(va, level));
                    t = Hpa::masked(e & ADDR_MASK);
                    e
                })
                .collect();
            entries
        };
        pt.map(va, hpa(0x1000), Size4K, PteFlags::NX).unwrap();
        let e = walk(&pt);
        assert!(
            e[..3]
                .iter()
                .all(|&e| e & (0xFFF | 1 << 63) == (P | W).bits())
        );
        assert_eq!(e[3], 0x1000 | (P | PteFlags::NX).bits());
        pt.map(va + 0x1000, hpa(0x2000), Size4K, PteFlags::USER)
            .unwrap();
        let e = walk(&pt);
        let user = (P | W | PteFlags::USER).bits();
        assert!(
            e[..3].iter().all(|&e| e & 0xFFF == user),
            "upgraded to USER"
        );
    }

    #[test]
    fn bad_arguments_and_oom() {
        let mut pt = builder(64);
        for (va, pa, size, want) in [
            (0x1000, 0, Size2M, Misaligned),
            (0x20_0000, 0x1000, Size2M, Misaligned),
            (0x20_0000, 0x20_0000, Size1G, Misaligned),
            (0x8000_0000_0000, 0, Size4K, NonCanonical),
        ] {
            assert_eq!(pt.map(va, hpa(pa), size, W), Err(want), "{va:#x} {size:?}");
        }
        for (va, pa, len, want) in [
            (0x7FFF_FFFF_F000, 0, 0x2000, NonCanonical),
            (0xFFFF_FFFF_FFFF_F000, 0, 0x2000, NonCanonical),
            (0, 0x800, 0x1000, Misaligned),
            (0, PHYS_ADDR_LIMIT - 0x1000, 0x2000, PhysOutOfRange),
        ] {
            assert_eq!(
                pt.map_range(va, hpa(pa), len, W, false),
                Err(want),
                "{va:#x}"
            );
        }
        let mut pt = builder(3);
        assert_eq!(pt.map(0, hpa(0), Size4K, W), Err(OutOfMemory));
        assert_eq!(
            pt.map(0, hpa(0), Size2M, W),
            Ok(()),
            "tables made so far are reused"
        );
    }

    #[test]
    fn conflicting_remaps() {
        let mut pt = builder(64);
        pt.map(0x20_0000, hpa(0x20_0000), Size2M, W).unwrap();
        pt.map(0x40_0000, hpa(0x1000), Size4K, W).unwrap();
        for (va, pa, size, flags, want) in [
            (0x20_0000, 0x20_0000, Size2M, W, Ok(())), // identical
            (
                0x20_0000,
                0x40_0000,
                Size2M,
                W,
                Err(AlreadyMapped { va: 0x20_0000 }),
            ),
            (
                0x20_0000,
                0x20_0000,
                Size2M,
                PteFlags::NX,
                Err(AlreadyMapped { va: 0x20_0000 }),
            ),
            (
                0x20_1000,
                0x1000,
                Size4K,
                W,
                Err(AlreadyMapped { va: 0x20_1000 }),
            ), // huge in the way
            (
                0x40_0000,
                0x40_0000,
                Size2M,
                W,
                Err(AlreadyMapped { va: 0x40_0000 }),
            ), // table in the way
            (0, 0, Size1G, W, Err(AlreadyMapped { va: 0 })),
        ] {
            assert_eq!(pt.map(va, hpa(pa), size, flags), want, "{va:#x} {size:?}");
        }
    }

    #[test]
    fn map_range_picks_largest_pages() {
        let mut pt = builder(64);
        let va = 0xFFFF_8300_0000_0000 + G - 0x1000;
        pt.map_range(va, hpa(G - 0x1000), G + M2 + 0x2000, W, true)
            .unwrap();
        assert_eq!(leaf(&pt, va), Some((G - 0x1000, Size4K)));
        assert_eq!(leaf(&pt, va + 0x1000), Some((G, Size1G)));
        assert_eq!(leaf(&pt, va + G + 0x1000), Some((2 * G, Size2M)));
        assert_eq!(leaf(&pt, va + G + M2 + 0x1000), Some((2 * G + M2, Size4K)));
        assert_eq!(leaf(&pt, va + G + M2 + 0x2000), None);
        let mut pt = builder(64);
        pt.map_range(0, hpa(0x1000), 4 * M2, W, true).unwrap();
        assert_eq!(
            leaf(&pt, M2),
            Some((M2 + 0x1000, Size4K)),
            "pa offset forbids huge pages"
        );
        pt.map_range(G, hpa(G), G, W, false).unwrap();
        assert_eq!(
            leaf(&pt, G + G / 2),
            Some((G + G / 2, Size2M)),
            "1G not allowed"
        );
    }
}
