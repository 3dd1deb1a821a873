//! The p2m: a domain's guest-physical to machine map (Xen's `p2m`), kept as the
//! second-level page table the hardware walks on every guest memory access: EPT on
//! Intel (SDM Vol. 3C §29.3 "The Extended Page Table Mechanism"), NPT on AMD (APM
//! Vol. 2 §15.25 "Nested Paging").
//!
//! Both are 4-level radix trees of 512 8-byte entries per 4 KiB table, indexed by
//! guest-physical address bits 47:39, 38:30, 29:21 and 20:12, with 1 GiB leaves
//! possible at level 3 and 2 MiB leaves at level 2. Only the entry encoding differs,
//! so this module owns the tree and the policy and asks an [`SlptFormat`] for the
//! bits; `keel-arch` provides `vmx::ept::EptFormat` and `svm::npt::NptFormat`. Table
//! frames are reached through the same [`TableMemory`] seam as `paging`, so the
//! whole thing runs on the host against fakes.
//!
//! There is no separate software copy of the map: the tables *are* the p2m, and
//! [`P2m::translate`] reads them back. That keeps a single source of truth, at the cost
//! of a 4-level walk per lookup; a handful of recently used leaves are remembered
//! (the leaf cache, below) so the lookups of every exit's guest walk and copies
//! rarely pay it.
//!
//! The leaf cache: [`LEAF_CACHE`] entries, each one leaf as `lookup` found it (its
//! first gfn, size, machine frame and permissions) and the [`P2m::generation`] it was
//! found in. Every write to a table goes through one helper that bumps the
//! generation, and an entry of an older generation is never used, so any change
//! at all (a hole filled, a leaf replaced, removed or split, a failed map undone)
//! forgets everything cached before it. It lives in `Cell`s, which keeps `lookup`
//! `&self` and makes a `P2m` `!Sync`: another CPU cannot share one without a lock.
//!
//! Invariants:
//! - Every gfn with an entry is below [`P2m::limit`], and the limit is at most
//!   [`P2M_FRAME_LIMIT`] (48-bit guest-physical addresses, what 4 levels reach).
//! - Every leaf is readable: [`Access`] without `read` is refused (`Unreadable`). EPT
//!   treats write-without-read as a misconfiguration and execute-only needs an
//!   optional capability (SDM Vol. 3C §29.3.3.1); NPT cannot express either.
//! - Intermediate entries grant everything ([`SlptFormat::table_entry`]); the leaf
//!   alone decides access (the effective permission is the AND of all levels).
//! - Every table frame allocated is linked into the tree the moment it is allocated,
//!   so [`P2m::for_each_table`] finds all of them; nothing is ever unlinked (an emptied
//!   table stays in place), hence nothing leaks until the domain dies.
//! - [`P2m::map`] never overwrites: it fills holes only, all or nothing (on running
//!   out of table memory it takes back the leaves it wrote).
//!
//! Locking: none here. The owning domain serialises writers with its p2m lock; readers
//! on other CPUs (the hardware walker, other vCPUs' hypercalls) may run concurrently,
//! which is why every change is a single entry write and a split fills the new table
//! completely before linking it.
//!
//! Hazards:
//! - No TLB maintenance happens here. `map` only fills holes, and translations that
//!   faulted are not cached (SDM Vol. 3C §29.4), so it needs none; but after
//!   `set_entry` replaces or removes a mapping the caller must INVEPT (VMX) or flush
//!   the ASID (SVM) on every CPU that ran the domain before it frees or reuses the old
//!   machine frame. Splitting a large page keeps every translation, so a stale large
//!   TLB entry is still correct, except for the frame `set_entry` changed.
//! - `TableMemory::write_entry` must be a single 64-bit store on a live table.
//! - `TableMemory::alloc_table` must return zeroed tables, and every format must read
//!   0 as not present.
//! - The leaf cache is only sound because this module is the only writer of the
//!   tables (`memory()` lends them shared): nothing may write a p2m table behind
//!   its `P2m`'s back.

use core::cell::Cell;
use core::marker::PhantomData;

use crate::addr::{FRAME_LIMIT, Gfn, Hpa, Mfn};
use crate::paging::{PageSize, TableMemory};

/// Exclusive upper bound of a gfn a 4-level p2m can map: 48-bit guest-physical
/// addresses (SDM Vol. 3C §29.3.2; APM Vol. 2 §15.25.5).
pub const P2M_FRAME_LIMIT: u64 = 1 << 36;

const ENTRIES: usize = 512;

/// How many leaves the leaf cache remembers (a domain's RAM is mostly 2 MiB or 1 GiB
/// leaves, so a few cover its kernel text, stacks and page tables).
pub const LEAF_CACHE: usize = 8;

/// A leaf as [`P2m::lookup`] found it: gfns `gfn .. gfn + frames` map to machine
/// frames `mfn ..` with `access`, as of p2m generation `generation`. `frames` is 0
/// in an empty slot, which no gfn matches.
#[derive(Clone, Copy)]
struct CachedLeaf {
    generation: u64,
    gfn: u64,
    frames: u64,
    mfn: u64,
    access: Access,
}

impl CachedLeaf {
    const EMPTY: CachedLeaf = CachedLeaf {
        generation: 0,
        gfn: 0,
        frames: 0,
        mfn: 0,
        access: Access::R,
    };
}

/// Permissions of a guest-physical mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Access {
    /// Ordinary RAM.
    pub const RWX: Access = Access {
        read: true,
        write: true,
        exec: true,
    };
    /// Data the guest may not execute (e.g. shared_info).
    pub const RW: Access = Access {
        read: true,
        write: true,
        exec: false,
    };
    /// Code or firmware the guest may run but not change.
    pub const RX: Access = Access {
        read: true,
        write: false,
        exec: true,
    };
    /// Read-only data (e.g. a read-only grant mapping).
    pub const R: Access = Access {
        read: true,
        write: false,
        exec: false,
    };
}

/// The entry encoding of a second-level page table (EPT or NPT).
///
/// Levels are numbered like the hardware tables: 1 = PT, 2 = PD, 3 = PDPT, 4 = PML4.
/// An all-zero entry must be not present (tables are allocated zeroed).
pub trait SlptFormat {
    /// Entry pointing at a next-level table (all permissions granted, leaf decides).
    fn table_entry(table: Hpa) -> u64;
    /// Leaf entry for `mfn` of `size` (4K at level 1, 2M at level 2, 1G at level 3)
    /// with `access`. Memory type WB. `mfn` is aligned to `size`; `access.read` is
    /// always set when [`P2m`] calls this.
    fn leaf_entry(mfn: Mfn, size: PageSize, access: Access) -> u64;
    fn is_present(entry: u64) -> bool;
    /// Whether `entry` (present) at `level` is a leaf: a large page at level 2 or 3,
    /// always at level 1. [`P2m`] asks only for levels 2 and 3.
    fn is_leaf(entry: u64, level: u8) -> bool;
    /// Address field (table or frame). For a large leaf, [`P2m`] rounds it down to the
    /// page size itself, so bits below it (e.g. NPT's PAT bit 12) may come back set.
    fn entry_addr(entry: u64) -> Hpa;
    /// Permissions of a leaf.
    fn leaf_access(entry: u64) -> Access;
}

/// Errors from changing the p2m.
#[derive(Debug, PartialEq, Eq, displaydoc::Display)]
pub enum P2mError {
    /// out of memory for p2m tables
    OutOfMemory,
    /// gfn {gfn:#x} is at or beyond this domain's p2m limit
    OutOfRange { gfn: u64 },
    /// machine frames from {mfn:#x} run past the end of the machine address space
    MfnOutOfRange { mfn: u64 },
    /// gfn {gfn} is already mapped
    AlreadyMapped { gfn: Gfn },
    /// guest mappings must be readable (EPT forbids write-only, NPT cannot express it)
    Unreadable,
    /// p2m limit {limit:#x} frames is beyond what 4-level tables reach (2^36)
    LimitTooLarge { limit: u64 },
}

/// Frames covered by one entry at `level`.
const fn span(level: u8) -> u64 {
    1 << (9 * (level as u32 - 1))
}

/// Index of `gfn` in a table at `level`.
const fn index(gfn: u64, level: u8) -> usize {
    ((gfn >> (9 * (level as u32 - 1))) & (ENTRIES as u64 - 1)) as usize
}

/// The leaf size an entry at `level` maps (level 1..=3).
const fn size_at(level: u8) -> PageSize {
    match level {
        1 => PageSize::Size4K,
        2 => PageSize::Size2M,
        _ => PageSize::Size1G,
    }
}

const fn level_of(size: PageSize) -> u8 {
    match size {
        PageSize::Size4K => 1,
        PageSize::Size2M => 2,
        PageSize::Size1G => 3,
    }
}

/// A domain's p2m, written out as an EPT or NPT tree.
pub struct P2m<M: TableMemory, F: SlptFormat> {
    root: Hpa,
    mem: M,
    /// Highest level a leaf may sit at (1..=3), from the `max_page` given to `new`.
    max_level: u8,
    limit: Gfn,
    /// Bumped by every table write ([`write_entry`](Self::write_entry)).
    generation: u64,
    /// Recently used leaves; an entry is valid only if its generation is current.
    cache: [Cell<CachedLeaf>; LEAF_CACHE],
    /// The cache slot the next miss fills (round robin).
    victim: Cell<usize>,
    format: PhantomData<fn() -> F>,
}

impl<M: TableMemory, F: SlptFormat> P2m<M, F> {
    /// An empty p2m: allocates the root table. `max_page` is the largest leaf the
    /// hardware supports (VMX: IA32_VMX_EPT_VPID_CAP bits 16/17; SVM: 2M always, 1G
    /// with CPUID 8000_0001h EDX.Page1GB); `limit` is the exclusive upper bound of the
    /// gfns this domain may use.
    pub fn new(mut mem: M, max_page: PageSize, limit: Gfn) -> Result<Self, P2mError> {
        if limit.as_u64() > P2M_FRAME_LIMIT {
            return Err(P2mError::LimitTooLarge {
                limit: limit.as_u64(),
            });
        }
        let root = mem.alloc_table().map_err(|_| P2mError::OutOfMemory)?;
        Ok(P2m {
            root,
            mem,
            max_level: level_of(max_page),
            limit,
            generation: 0,
            cache: [const { Cell::new(CachedLeaf::EMPTY) }; LEAF_CACHE],
            victim: Cell::new(0),
            format: PhantomData,
        })
    }

    /// Changes each time any entry of the tree is written: two equal generations
    /// mean nothing was written in between.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes one entry: the only way this module changes a table, so that every
    /// change moves the generation on (and so empties the leaf cache).
    fn write_entry(&mut self, table: Hpa, index: usize, value: u64) {
        self.generation = self.generation.wrapping_add(1);
        self.mem.write_entry(table, index, value);
    }

    /// The root (PML4) table: the base of the EPTP (VMX) or nCR3 (SVM).
    pub fn root(&self) -> Hpa {
        self.root
    }

    /// Exclusive upper bound of the gfns this domain may use.
    pub fn limit(&self) -> Gfn {
        self.limit
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The root and the table memory, e.g. to free the tables after
    /// [`for_each_table`](Self::for_each_table) listed them.
    pub fn into_inner(self) -> (Hpa, M) {
        (self.root, self.mem)
    }

    /// Maps `count` frames `gfn..` to `mfn..` with `access`, using the largest pages
    /// (up to `max_page`) where both sides are aligned, the run fits, and the slot is
    /// empty (a table left behind by an earlier unmap is reused, not replaced).
    ///
    /// Fails without changing any translation if any of the gfns is already mapped
    /// (`AlreadyMapped` names the first), past the limit, or `access` is unreadable.
    /// On `OutOfMemory` the leaves written so far are removed again; empty tables
    /// allocated on the way stay linked.
    pub fn map(&mut self, gfn: Gfn, mfn: Mfn, count: u64, access: Access) -> Result<(), P2mError> {
        check_access(access)?;
        if count == 0 {
            return Ok(());
        }
        let (g0, m0) = (gfn.as_u64(), mfn.as_u64());
        let limit = self.limit.as_u64();
        let end = g0
            .checked_add(count)
            .filter(|&end| end <= limit)
            .ok_or(P2mError::OutOfRange { gfn: g0.max(limit) })?;
        if m0.checked_add(count).is_none_or(|end| end > FRAME_LIMIT) {
            return Err(P2mError::MfnOutOfRange { mfn: m0 });
        }
        if let Some(gfn) = self.first_mapped(g0, end) {
            return Err(P2mError::AlreadyMapped { gfn });
        }
        let mut done = 0;
        while done < count {
            match self.install(g0 + done, m0 + done, count - done, access) {
                Ok(frames) => done += frames,
                Err(e) => {
                    self.clear(g0, g0 + done);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Replaces the mapping of one gfn (`None` unmaps it), splitting a large page
    /// that covers it into smaller ones; the other frames of the large page keep
    /// their mapping. Returns the machine frame `gfn` was mapped to before.
    ///
    /// Setting the mapping a gfn already has changes nothing (no split). On
    /// `OutOfMemory` no translation has changed (a split may have happened, which
    /// translates exactly as the large page did).
    pub fn set_entry(
        &mut self,
        gfn: Gfn,
        new: Option<(Mfn, Access)>,
    ) -> Result<Option<Mfn>, P2mError> {
        if let Some((_, access)) = new {
            check_access(access)?;
        }
        let g = gfn.as_u64();
        if g >= self.limit.as_u64() {
            return Err(P2mError::OutOfRange { gfn: g });
        }
        if new.is_some() && self.translate(gfn) == new {
            return Ok(new.map(|(mfn, _)| mfn));
        }
        let mut table = self.root;
        let mut level = 4;
        loop {
            let idx = index(g, level);
            let e = self.mem.read_entry(table, idx);
            if !F::is_present(e) {
                let Some((mfn, access)) = new else {
                    return Ok(None);
                };
                if level == 1 {
                    let leaf = F::leaf_entry(mfn, PageSize::Size4K, access);
                    self.write_entry(table, idx, leaf);
                    return Ok(None);
                }
                let next = self.alloc_table()?;
                self.write_entry(table, idx, F::table_entry(next));
                table = next;
            } else if level == 1 {
                let old = F::entry_addr(e).mfn();
                let value = match new {
                    Some((mfn, access)) => F::leaf_entry(mfn, PageSize::Size4K, access),
                    None => 0,
                };
                self.write_entry(table, idx, value);
                return Ok(Some(old));
            } else if self.is_leaf(e, level) {
                let next = self.split(e, level)?;
                self.write_entry(table, idx, F::table_entry(next));
                table = next;
            } else {
                table = F::entry_addr(e);
            }
            level -= 1;
        }
    }

    /// The machine frame `gfn` maps to and its permissions; `None` for a hole.
    pub fn translate(&self, gfn: Gfn) -> Option<(Mfn, Access)> {
        self.lookup(gfn).map(|(mfn, access, _)| (mfn, access))
    }

    /// Like [`translate`](Self::translate), plus the size of the leaf that maps it.
    pub fn lookup(&self, gfn: Gfn) -> Option<(Mfn, Access, PageSize)> {
        let g = gfn.as_u64();
        if g >= self.limit.as_u64() {
            return None;
        }
        for slot in &self.cache {
            let c = slot.get();
            let offset = g.wrapping_sub(c.gfn);
            if offset < c.frames && c.generation == self.generation {
                let size = match c.frames {
                    1 => PageSize::Size4K,
                    f if f == span(2) => PageSize::Size2M,
                    _ => PageSize::Size1G,
                };
                return Some((Mfn::new(c.mfn + offset)?, c.access, size));
            }
        }
        let found = self.walk(g);
        if let Some((mfn, access, size)) = found {
            let frames = size.bytes() >> 12;
            let offset = g & (frames - 1);
            let victim = self.victim.get() % LEAF_CACHE;
            self.cache[victim].set(CachedLeaf {
                generation: self.generation,
                gfn: g - offset,
                frames,
                mfn: mfn.as_u64() - offset,
                access,
            });
            self.victim.set(victim + 1);
        }
        found
    }

    /// [`lookup`](Self::lookup) through the tables, without the cache.
    fn walk(&self, g: u64) -> Option<(Mfn, Access, PageSize)> {
        let mut table = self.root;
        for level in (1..=4).rev() {
            let e = self.mem.read_entry(table, index(g, level));
            if !F::is_present(e) {
                return None;
            }
            if self.is_leaf(e, level) {
                let frames = span(level);
                let base = F::entry_addr(e).mfn().as_u64() & !(frames - 1);
                let mfn = Mfn::new(base + (g & (frames - 1)))?;
                return Some((mfn, F::leaf_access(e), size_at(level)));
            }
            table = F::entry_addr(e);
        }
        None
    }

    /// Calls `f` once for every table frame of the tree, the root included, children
    /// before their parent (so a caller may free each frame as it is reported). This
    /// is every frame the p2m ever allocated: tables are never unlinked.
    pub fn for_each_table(&self, mut f: impl FnMut(Hpa)) {
        self.visit(self.root, 4, &mut f);
    }

    fn visit<G: FnMut(Hpa)>(&self, table: Hpa, level: u8, f: &mut G) {
        if level > 1 {
            for idx in 0..ENTRIES {
                let e = self.mem.read_entry(table, idx);
                if F::is_present(e) && !self.is_leaf(e, level) {
                    self.visit(F::entry_addr(e), level - 1, f);
                }
            }
        }
        f(table);
    }

    /// Level 1 entries are always leaves, level 4 entries never (a format claiming
    /// otherwise is not trusted with a 512 GiB page).
    fn is_leaf(&self, e: u64, level: u8) -> bool {
        match level {
            1 => true,
            2 | 3 => F::is_leaf(e, level),
            _ => false,
        }
    }

    fn alloc_table(&mut self) -> Result<Hpa, P2mError> {
        self.mem.alloc_table().map_err(|_| P2mError::OutOfMemory)
    }

    /// The first mapped gfn in `[start, end)`, skipping holes a whole entry at a time.
    fn first_mapped(&self, start: u64, end: u64) -> Option<Gfn> {
        self.scan(self.root, 4, 0, start, end).and_then(Gfn::new)
    }

    /// `scan` of the table at `level` whose first gfn is `base`.
    fn scan(&self, table: Hpa, level: u8, base: u64, start: u64, end: u64) -> Option<u64> {
        let span = span(level);
        let first = ((start.max(base) - base) / span) as usize;
        for idx in first..ENTRIES {
            let entry_base = base + idx as u64 * span;
            if entry_base >= end {
                break;
            }
            let e = self.mem.read_entry(table, idx);
            if !F::is_present(e) {
                continue;
            }
            if self.is_leaf(e, level) {
                return Some(entry_base.max(start));
            }
            if let Some(g) = self.scan(F::entry_addr(e), level - 1, entry_base, start, end) {
                return Some(g);
            }
        }
        None
    }

    /// Writes the largest leaf that fits at `g -> m` (at most `remaining` frames) and
    /// returns how many frames it maps. The caller has checked that `g` is a hole.
    fn install(&mut self, g: u64, m: u64, remaining: u64, access: Access) -> Result<u64, P2mError> {
        let mut table = self.root;
        let mut level = 4;
        loop {
            let idx = index(g, level);
            let e = self.mem.read_entry(table, idx);
            let frames = span(level);
            if !F::is_present(e) {
                // Always true at level 1 (frames == 1), so the loop ends there.
                if level <= self.max_level && (g | m).is_multiple_of(frames) && remaining >= frames
                {
                    let mfn = Mfn::new(m).ok_or(P2mError::MfnOutOfRange { mfn: m })?;
                    let leaf = F::leaf_entry(mfn, size_at(level), access);
                    self.write_entry(table, idx, leaf);
                    return Ok(frames);
                }
                let next = self.alloc_table()?;
                self.write_entry(table, idx, F::table_entry(next));
                table = next;
            } else if self.is_leaf(e, level) {
                // Unreachable after `first_mapped`; refuse rather than overwrite.
                let gfn = Gfn::new(g).ok_or(P2mError::OutOfRange { gfn: g })?;
                return Err(P2mError::AlreadyMapped { gfn });
            } else {
                table = F::entry_addr(e);
            }
            level -= 1;
        }
    }

    /// Removes every leaf that maps a gfn in `[start, end)`. Only for undoing `map`,
    /// whose leaves lie entirely inside the range it mapped.
    fn clear(&mut self, start: u64, end: u64) {
        let mut g = start;
        while g < end {
            let mut table = self.root;
            let mut level = 4;
            loop {
                let idx = index(g, level);
                let e = self.mem.read_entry(table, idx);
                if F::is_present(e) && self.is_leaf(e, level) {
                    self.write_entry(table, idx, 0);
                }
                if !F::is_present(e) || self.is_leaf(e, level) {
                    // Next gfn not covered by this entry.
                    g = (g / span(level) + 1) * span(level);
                    break;
                }
                table = F::entry_addr(e);
                level -= 1;
            }
        }
    }

    /// A new table of 512 leaves one level down that together map what the large leaf
    /// `e` at `level` mapped, with the same permissions. Not yet linked.
    fn split(&mut self, e: u64, level: u8) -> Result<Hpa, P2mError> {
        let frames = span(level);
        let base = F::entry_addr(e).mfn().as_u64() & !(frames - 1);
        let access = F::leaf_access(e);
        let (child_frames, child_size) = (span(level - 1), size_at(level - 1));
        let next = self.alloc_table()?;
        for idx in 0..ENTRIES {
            let m = base + idx as u64 * child_frames;
            let mfn = Mfn::new(m).ok_or(P2mError::MfnOutOfRange { mfn: m })?;
            self.write_entry(next, idx, F::leaf_entry(mfn, child_size, access));
        }
        Ok(next)
    }
}

fn check_access(access: Access) -> Result<(), P2mError> {
    if access.read {
        Ok(())
    } else {
        Err(P2mError::Unreadable)
    }
}

/// Fakes shared with the other modules' tests: tables in a `Vec` and an entry format
/// unlike either EPT or NPT, so that nothing here depends on one of them by accident.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use crate::paging::MapError;

    /// Where the fake tables pretend to live: far from any fake RAM.
    const BASE: u64 = 0x70_0000_0000;

    /// Page tables at fake addresses `BASE + i * 4096`; at most `limit` of them.
    pub(crate) struct FakeTables {
        pub(crate) tables: Vec<[u64; ENTRIES]>,
        pub(crate) limit: usize,
        /// Entries read so far (to tell a leaf-cache hit from a walk).
        pub(crate) reads: core::cell::Cell<usize>,
    }

    impl FakeTables {
        pub(crate) fn new(limit: usize) -> FakeTables {
            FakeTables {
                tables: Vec::new(),
                limit,
                reads: core::cell::Cell::new(0),
            }
        }
        fn slot(table: Hpa) -> usize {
            ((table.as_u64() - BASE) / 4096) as usize
        }
    }

    impl TableMemory for FakeTables {
        fn alloc_table(&mut self) -> Result<Hpa, MapError> {
            if self.tables.len() == self.limit {
                return Err(MapError::OutOfMemory);
            }
            self.tables.push([0; ENTRIES]);
            Ok(Hpa::masked(BASE + (self.tables.len() as u64 - 1) * 4096))
        }
        fn read_entry(&self, table: Hpa, index: usize) -> u64 {
            self.reads.set(self.reads.get() + 1);
            self.tables[Self::slot(table)][index]
        }
        fn write_entry(&mut self, table: Hpa, index: usize, value: u64) {
            self.tables[Self::slot(table)][index] = value;
        }
    }

    /// bit 0 present, bits 1..=3 r/w/x, bit 11 leaf (on every leaf, even level 1),
    /// bits 12..52 address.
    pub(crate) struct FakeFormat;

    const PRESENT: u64 = 1;
    const LEAF: u64 = 1 << 11;
    const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

    impl SlptFormat for FakeFormat {
        fn table_entry(table: Hpa) -> u64 {
            table.as_u64() | PRESENT
        }
        fn leaf_entry(mfn: Mfn, size: PageSize, access: Access) -> u64 {
            assert!(
                mfn.hpa().as_u64().is_multiple_of(size.bytes()),
                "misaligned leaf"
            );
            mfn.hpa().as_u64()
                | PRESENT
                | LEAF
                | u64::from(access.read) << 1
                | u64::from(access.write) << 2
                | u64::from(access.exec) << 3
        }
        fn is_present(entry: u64) -> bool {
            entry & PRESENT != 0
        }
        fn is_leaf(entry: u64, level: u8) -> bool {
            assert!(level == 2 || level == 3, "asked about level {level}");
            entry & LEAF != 0
        }
        fn entry_addr(entry: u64) -> Hpa {
            Hpa::masked(entry & ADDR)
        }
        fn leaf_access(entry: u64) -> Access {
            Access {
                read: entry & 1 << 1 != 0,
                write: entry & 1 << 2 != 0,
                exec: entry & 1 << 3 != 0,
            }
        }
    }

    pub(crate) type FakeP2m = P2m<FakeTables, FakeFormat>;

    /// A p2m over `tables` fake tables with the given largest page and limit.
    pub(crate) fn p2m(tables: usize, max_page: PageSize, limit: u64) -> FakeP2m {
        P2m::new(
            FakeTables::new(tables),
            max_page,
            Gfn::new(limit).expect("test limit below 2^40"),
        )
        .expect("room for the root")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::P2mError::*;
    use super::PageSize::*;
    use super::fake::*;
    use super::*;

    const G1: u64 = 1 << 18; // frames in 1 GiB
    const M2: u64 = 1 << 9; // frames in 2 MiB

    fn gfn(g: u64) -> Gfn {
        Gfn::new(g).unwrap()
    }
    fn mfn(m: u64) -> Mfn {
        Mfn::new(m).unwrap()
    }
    fn tables(p: &FakeP2m) -> usize {
        p.memory().tables.len()
    }
    /// (mfn, size) of `g`.
    fn leaf(p: &FakeP2m, g: u64) -> Option<(u64, PageSize)> {
        p.lookup(gfn(g)).map(|(m, _, s)| (m.as_u64(), s))
    }

    #[test]
    fn new_root_and_limits() {
        let p = p2m(8, Size1G, P2M_FRAME_LIMIT);
        assert_eq!(tables(&p), 1);
        assert_eq!(p.limit(), gfn(P2M_FRAME_LIMIT));
        assert_eq!(p.root(), p.into_inner().0);
        let too_big = P2m::<FakeTables, FakeFormat>::new(
            FakeTables::new(8),
            Size4K,
            gfn(P2M_FRAME_LIMIT + 1),
        );
        assert_eq!(
            too_big.err(),
            Some(LimitTooLarge {
                limit: P2M_FRAME_LIMIT + 1
            })
        );
        let no_room = P2m::<FakeTables, FakeFormat>::new(FakeTables::new(0), Size4K, gfn(1));
        assert_eq!(no_room.err(), Some(OutOfMemory));
    }

    #[test]
    fn largest_pages_where_aligned() {
        let mut p = p2m(64, Size1G, 1 << 24);
        // One frame before a 1 GiB boundary, then 1G + 2M + 2 frames; the mfn offset
        // (4 GiB) keeps both sides congruent modulo 1 GiB.
        let (g, m) = (G1 - 1, G1 - 1 + 4 * G1);
        p.map(gfn(g), mfn(m), 1 + G1 + M2 + 2, Access::RWX).unwrap();
        assert_eq!(leaf(&p, g), Some((m, Size4K)));
        assert_eq!(leaf(&p, g + 1), Some((m + 1, Size1G)));
        assert_eq!(leaf(&p, g + 1 + 12345), Some((m + 1 + 12345, Size1G)));
        assert_eq!(leaf(&p, 2 * G1 + 7), Some((m + 1 + G1 + 7, Size2M)));
        assert_eq!(leaf(&p, 2 * G1 + M2 + 1), Some((m + 2 + G1 + M2, Size4K)));
        assert_eq!(leaf(&p, 2 * G1 + M2 + 2), None);
        assert_eq!(leaf(&p, g - 1), None);
        // PML4, PDPT, PD + PT for the first frame, PD + PT for the tail.
        assert_eq!(tables(&p), 6);
        assert_eq!(
            p.translate(gfn(g + 1)),
            Some((mfn(m + 1), Access::RWX)),
            "access kept"
        );
    }

    #[test]
    fn misaligned_runs_fall_back() {
        let mut p = p2m(64, Size1G, 1 << 24);
        // mfn off by one frame: nothing larger than 4K can be used.
        p.map(gfn(0), mfn(1), 2 * M2, Access::RW).unwrap();
        assert!((0..2 * M2).all(|g| leaf(&p, g) == Some((g + 1, Size4K))));
        // mfn 2M- but not 1G-congruent: 2M pages across a whole 1 GiB.
        p.map(gfn(G1), mfn(G1 + M2), G1, Access::RW).unwrap();
        for g in [G1, G1 + 1, G1 + G1 / 2, 2 * G1 - 1] {
            assert_eq!(leaf(&p, g), Some((g + M2, Size2M)));
        }
        // A run shorter than 2M at an aligned spot.
        p.map(gfn(4 * G1), mfn(4 * G1), M2 - 1, Access::R).unwrap();
        assert_eq!(leaf(&p, 4 * G1), Some((4 * G1, Size4K)));
        assert_eq!(leaf(&p, 4 * G1 + M2 - 1), None);
    }

    #[test]
    fn max_page_caps_the_leaf_size() {
        let mut p = p2m(64, Size2M, 1 << 24);
        p.map(gfn(G1), mfn(G1), G1, Access::RWX).unwrap();
        assert_eq!(leaf(&p, G1 + 5), Some((G1 + 5, Size2M)));
        let mut p = p2m(64, Size4K, 1 << 24);
        p.map(gfn(0), mfn(0), M2, Access::RWX).unwrap();
        assert_eq!(leaf(&p, M2 - 1), Some((M2 - 1, Size4K)));
        assert_eq!(tables(&p), 4);
    }

    #[test]
    fn map_refuses_overlap_without_changing_anything() {
        let mut p = p2m(64, Size1G, 1 << 24);
        p.map(gfn(M2), mfn(0), M2, Access::RW).unwrap();
        p.map(gfn(3 * M2), mfn(0x77), 1, Access::RW).unwrap();
        let before = p.memory().tables.clone();
        for (g, count, first) in [
            (0, M2 + 1, M2),             // runs into the 2M page
            (2 * M2 - 1, 1, 2 * M2 - 1), // inside it
            (2 * M2, 3 * M2, 3 * M2),    // runs into the 4K page
            (3 * M2 - 5, 10, 3 * M2),    // straddles into it
            (M2 + 3, G1, M2 + 3),        // starts inside the 2M page
        ] {
            assert_eq!(
                p.map(gfn(g), mfn(0x100000), count, Access::RW),
                Err(AlreadyMapped { gfn: gfn(first) }),
                "{g:#x}+{count:#x}"
            );
        }
        assert!(p.memory().tables == before, "nothing written");
        // Filling the hole in between is fine.
        p.map(gfn(2 * M2), mfn(0), M2, Access::RW).unwrap();
        assert_eq!(leaf(&p, 2 * M2), Some((0, Size2M)));
    }

    #[test]
    fn range_and_access_checks() {
        let limit = 0x1000;
        let mut p = p2m(64, Size1G, limit);
        for (g, count, bad) in [
            (limit, 1, limit),
            (limit - 1, 2, limit),
            (0, u64::MAX, limit),
            (FRAME_LIMIT - 1, 1, FRAME_LIMIT - 1),
        ] {
            assert_eq!(
                p.map(gfn(g), mfn(0), count, Access::RW),
                Err(OutOfRange { gfn: bad })
            );
        }
        assert_eq!(
            p.map(gfn(0), mfn(FRAME_LIMIT - 1), 2, Access::RW),
            Err(MfnOutOfRange {
                mfn: FRAME_LIMIT - 1
            })
        );
        let write_only = Access {
            read: false,
            write: true,
            exec: false,
        };
        assert_eq!(p.map(gfn(0), mfn(0), 1, write_only), Err(Unreadable));
        assert_eq!(
            p.set_entry(gfn(0), Some((mfn(0), write_only))),
            Err(Unreadable)
        );
        assert_eq!(
            p.set_entry(gfn(limit), Some((mfn(0), Access::RW))),
            Err(OutOfRange { gfn: limit })
        );
        assert_eq!(
            p.set_entry(gfn(limit), None),
            Err(OutOfRange { gfn: limit })
        );
        assert_eq!(
            p.map(gfn(limit), mfn(0), 0, Access::RW),
            Ok(()),
            "empty run"
        );
        p.map(gfn(limit - 1), mfn(5), 1, Access::RW).unwrap();
        assert_eq!(leaf(&p, limit - 1), Some((5, Size4K)));
        assert_eq!(p.translate(gfn(limit)), None);
        assert_eq!(tables(&p), 4);
    }

    #[test]
    fn holes_translate_to_none() {
        let mut p = p2m(64, Size1G, 1 << 24);
        assert_eq!(p.translate(gfn(0)), None);
        p.map(gfn(M2 + 1), mfn(9), 1, Access::RW).unwrap();
        for g in [0, M2, M2 + 2, 2 * M2, G1, (1 << 24) - 1] {
            assert_eq!(p.translate(gfn(g)), None, "{g:#x}");
        }
    }

    #[test]
    fn running_out_of_tables_undoes_the_map() {
        // Root + PDPT + PD fit; the PT for the 4K tail does not.
        let mut p = p2m(3, Size2M, 1 << 24);
        assert_eq!(
            p.map(gfn(0), mfn(0), 3 * M2 + 1, Access::RW),
            Err(OutOfMemory)
        );
        assert!((0..3 * M2 + 1).step_by(97).all(|g| leaf(&p, g).is_none()));
        assert_eq!(tables(&p), 3, "the empty PDPT and PD stay linked");
        let mut seen = 0;
        p.for_each_table(|_| seen += 1);
        assert_eq!(seen, 3);
        // What fits still maps, reusing those tables.
        p.map(gfn(0), mfn(0), 3 * M2, Access::RW).unwrap();
        assert_eq!(leaf(&p, 3 * M2 - 1), Some((3 * M2 - 1, Size2M)));
    }

    #[test]
    fn set_entry_splits_a_2m_page() {
        let mut p = p2m(64, Size2M, 1 << 24);
        p.map(gfn(M2), mfn(0x1000), M2, Access::RW).unwrap();
        let n = tables(&p);
        assert_eq!(
            p.set_entry(gfn(M2 + 0x34), Some((mfn(0x9999), Access::R))),
            Ok(Some(mfn(0x1034)))
        );
        assert_eq!(tables(&p), n + 1);
        for i in 0..M2 {
            let want = if i == 0x34 {
                Some((mfn(0x9999), Access::R))
            } else {
                Some((mfn(0x1000 + i), Access::RW))
            };
            assert_eq!(p.translate(gfn(M2 + i)), want, "{i:#x}");
        }
        assert_eq!(leaf(&p, M2).map(|l| l.1), Some(Size4K));
        // Unmapping one frame of the now-split page, then a hole.
        assert_eq!(p.set_entry(gfn(M2 + 1), None), Ok(Some(mfn(0x1001))));
        assert_eq!(p.translate(gfn(M2 + 1)), None);
        assert_eq!(p.set_entry(gfn(M2 + 1), None), Ok(None));
        assert_eq!(p.translate(gfn(M2 + 2)), Some((mfn(0x1002), Access::RW)));
    }

    #[test]
    fn set_entry_splits_a_1g_page() {
        let mut p = p2m(64, Size1G, 1 << 24);
        let (g, m) = (G1, 2 * G1);
        p.map(gfn(g), mfn(m), G1, Access::RWX).unwrap();
        let n = tables(&p);
        let victim = g + 0x12345;
        assert_eq!(p.set_entry(gfn(victim), None), Ok(Some(mfn(m + 0x12345))));
        assert_eq!(tables(&p), n + 2, "1G -> 2M table -> 4K table");
        for i in 0..G1 {
            let want = (g + i != victim).then_some((mfn(m + i), Access::RWX));
            assert_eq!(p.translate(gfn(g + i)), want, "{i:#x}");
        }
        let chunk = victim & !(M2 - 1);
        assert_eq!(leaf(&p, chunk).map(|l| l.1), Some(Size4K));
        assert_eq!(leaf(&p, chunk - 1).map(|l| l.1), Some(Size2M));
        assert_eq!(leaf(&p, chunk + M2).map(|l| l.1), Some(Size2M));
    }

    #[test]
    fn set_entry_in_holes_and_no_op_sets() {
        let mut p = p2m(64, Size1G, 1 << 24);
        assert_eq!(p.set_entry(gfn(0x1234), None), Ok(None));
        assert_eq!(tables(&p), 1, "unmapping a hole allocates nothing");
        assert_eq!(
            p.set_entry(gfn(0x1234), Some((mfn(7), Access::RW))),
            Ok(None)
        );
        assert_eq!(tables(&p), 4);
        assert_eq!(leaf(&p, 0x1234), Some((7, Size4K)));
        p.map(gfn(G1), mfn(G1), G1, Access::RWX).unwrap();
        let n = tables(&p);
        assert_eq!(
            p.set_entry(gfn(G1 + 5), Some((mfn(G1 + 5), Access::RWX))),
            Ok(Some(mfn(G1 + 5)))
        );
        assert_eq!(tables(&p), n, "same mapping: no split");
        assert_eq!(
            p.set_entry(gfn(G1 + 5), Some((mfn(G1 + 5), Access::RW))),
            Ok(Some(mfn(G1 + 5)))
        );
        assert_eq!(tables(&p), n + 2, "new access: split");
    }

    #[test]
    fn split_out_of_memory_keeps_translations() {
        // Root, PDPT; the split's 2M table fits, the 4K one does not.
        let mut p = p2m(3, Size1G, 1 << 24);
        p.map(gfn(0), mfn(G1), G1, Access::RW).unwrap();
        assert_eq!(p.set_entry(gfn(5), None), Err(OutOfMemory));
        for g in [0, 5, M2, G1 - 1] {
            assert_eq!(p.translate(gfn(g)), Some((mfn(G1 + g), Access::RW)));
        }
        assert_eq!(leaf(&p, 5).map(|l| l.1), Some(Size2M), "split once");
    }

    #[test]
    fn for_each_table_lists_every_table_children_first() {
        let mut p = p2m(64, Size1G, 1 << 24);
        p.map(gfn(0), mfn(0), 1, Access::RW).unwrap();
        p.map(gfn(G1), mfn(G1), G1, Access::RW).unwrap();
        p.set_entry(gfn(G1 + 3), None).unwrap();
        p.map(gfn(1 << 23), mfn(0), 1, Access::RW).unwrap();
        let mut seen = Vec::new();
        p.for_each_table(|t| seen.push(t));
        assert_eq!(seen.len(), tables(&p));
        assert_eq!(seen.last(), Some(&p.root()), "root last");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "each once");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            AlreadyMapped { gfn: gfn(0x10) }.to_string(),
            "gfn 0x10 is already mapped"
        );
        assert_eq!(
            OutOfRange { gfn: 0x1000 }.to_string(),
            "gfn 0x1000 is at or beyond this domain's p2m limit"
        );
    }

    /// Table entries `f` read.
    fn reads_by(p: &FakeP2m, f: impl FnOnce(&FakeP2m)) -> usize {
        let before = p.memory().reads.get();
        f(p);
        p.memory().reads.get() - before
    }

    #[test]
    fn leaf_cache_hits_and_misses() {
        let mut p = p2m(16, Size2M, 4 * G1);
        p.map(gfn(0), mfn(8 * M2), 2 * M2, Access::RWX).unwrap();
        p.set_entry(gfn(2 * M2), Some((mfn(77), Access::R)))
            .unwrap();
        // A miss walks (PML4, PDPT, PD); then the whole 2M leaf is a hit.
        assert_eq!(
            reads_by(&p, |p| assert_eq!(
                p.translate(gfn(5)),
                Some((mfn(8 * M2 + 5), Access::RWX))
            )),
            3
        );
        for g in [0, 5, M2 - 1] {
            assert_eq!(
                reads_by(&p, |p| assert_eq!(
                    p.translate(gfn(g)),
                    Some((mfn(8 * M2 + g), Access::RWX))
                )),
                0
            );
        }
        // The next 2M leaf is another leaf: a miss, then a hit.
        assert_eq!(
            reads_by(&p, |p| assert_eq!(
                p.lookup(gfn(M2 + 1)),
                Some((mfn(9 * M2 + 1), Access::RWX, Size2M))
            )),
            3
        );
        assert_eq!(
            reads_by(&p, |p| assert_eq!(
                p.lookup(gfn(2 * M2 - 1)),
                Some((mfn(10 * M2 - 1), Access::RWX, Size2M))
            )),
            0
        );
        // A 4K leaf covers its own frame only.
        assert_eq!(
            reads_by(&p, |p| assert_eq!(
                p.translate(gfn(2 * M2)),
                Some((mfn(77), Access::R))
            )),
            4
        );
        assert_eq!(
            reads_by(&p, |p| assert_eq!(
                p.translate(gfn(2 * M2)),
                Some((mfn(77), Access::R))
            )),
            0
        );
        assert_eq!(
            reads_by(&p, |p| assert_eq!(p.translate(gfn(2 * M2 + 1)), None)),
            4
        );
        // Holes and gfns past the limit are never cached.
        assert_eq!(
            reads_by(&p, |p| assert_eq!(p.translate(gfn(2 * M2 + 1)), None)),
            4
        );
        assert_eq!(
            reads_by(&p, |p| assert_eq!(p.translate(gfn(4 * G1)), None)),
            0
        );
        // More leaves than slots: every answer is still right.
        let leaves = (0..2)
            .map(|i| i * M2)
            .chain([2 * M2])
            .cycle()
            .take(5 * LEAF_CACHE);
        for g in leaves {
            let want = if g == 2 * M2 {
                (mfn(77), Access::R)
            } else {
                (mfn(8 * M2 + g), Access::RWX)
            };
            assert_eq!(p.translate(gfn(g)), Some(want));
        }
    }

    #[test]
    fn every_change_empties_the_leaf_cache() {
        let mut p = p2m(16, Size2M, 4 * G1);
        let g0 = p.generation();
        p.map(gfn(0), mfn(8 * M2), M2, Access::RWX).unwrap();
        assert_ne!(p.generation(), g0);
        assert_eq!(p.translate(gfn(3)), Some((mfn(8 * M2 + 3), Access::RWX)));

        // Replacing one frame splits the cached 2M leaf.
        let g1 = p.generation();
        p.set_entry(gfn(3), Some((mfn(5), Access::R))).unwrap();
        assert_ne!(p.generation(), g1);
        assert_eq!(p.translate(gfn(3)), Some((mfn(5), Access::R)));
        assert_eq!(p.translate(gfn(4)), Some((mfn(8 * M2 + 4), Access::RWX)));

        // Removing it.
        p.set_entry(gfn(3), None).unwrap();
        assert_eq!(p.translate(gfn(3)), None);
        assert_eq!(p.translate(gfn(4)), Some((mfn(8 * M2 + 4), Access::RWX)));

        // Filling the hole again, then changing only the permissions.
        p.map(gfn(3), mfn(9), 1, Access::RW).unwrap();
        assert_eq!(p.translate(gfn(3)), Some((mfn(9), Access::RW)));
        p.set_entry(gfn(3), Some((mfn(9), Access::R))).unwrap();
        assert_eq!(p.translate(gfn(3)), Some((mfn(9), Access::R)));

        // A no-op set writes nothing and keeps the generation (and the cache).
        let g2 = p.generation();
        p.set_entry(gfn(3), Some((mfn(9), Access::R))).unwrap();
        assert_eq!(p.generation(), g2);
        assert_eq!(
            reads_by(&p, |p| assert_eq!(
                p.translate(gfn(3)),
                Some((mfn(9), Access::R))
            )),
            0
        );

        // A refused map changes nothing, a failed one is undone: both still answer right.
        assert_eq!(
            p.map(gfn(3), mfn(1), 1, Access::RWX),
            Err(AlreadyMapped { gfn: gfn(3) })
        );
        assert_eq!(p.translate(gfn(3)), Some((mfn(9), Access::R)));
        let mut q = p2m(4, Size4K, 4 * G1);
        q.map(gfn(0), mfn(100), 1, Access::RWX).unwrap();
        assert_eq!(q.translate(gfn(0)), Some((mfn(100), Access::RWX)));
        assert_eq!(
            q.map(gfn(1), mfn(101), M2 + 1, Access::RWX),
            Err(OutOfMemory)
        );
        assert_eq!(q.translate(gfn(1)), None);
        assert_eq!(q.translate(gfn(0)), Some((mfn(100), Access::RWX)));
    }

    // Property tests: random operations against a BTreeMap gfn -> (mfn, access).

    const SPACE: u64 = 8 * M2;
    const ACCESSES: [Access; 4] = [Access::RWX, Access::RW, Access::RX, Access::R];

    #[derive(Clone, Debug)]
    enum Op {
        Map(u64, u64, u64, Access),
        Set(u64, Option<(u64, Access)>),
    }

    /// Frame numbers biased towards 2M alignment so that large pages happen.
    fn frame(space: u64) -> impl Strategy<Value = u64> {
        prop_oneof![
            (0..space / M2).prop_map(|i| i * M2),
            (0..space / M2, 0..3u64).prop_map(|(i, d)| i * M2 + d),
            0..space,
        ]
    }

    fn access() -> impl Strategy<Value = Access> {
        prop::sample::select(&ACCESSES[..])
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                frame(SPACE),
                frame(1 << 20),
                prop_oneof![Just(M2), Just(2 * M2), 1..M2 + 4],
                access()
            )
                .prop_map(|(g, m, c, a)| Op::Map(g, m, c, a)),
            (
                frame(SPACE + 4),
                prop::option::of((frame(1 << 20), access()))
            )
                .prop_map(|(g, new)| Op::Set(g, new)),
        ]
    }

    proptest! {
        #[test]
        fn p2m_matches_model(ops in prop::collection::vec(op(), 1..24)) {
            let mut p = p2m(1024, Size2M, SPACE);
            let mut model: BTreeMap<u64, (u64, Access)> = BTreeMap::new();
            for op in &ops {
                match *op {
                    Op::Map(g, m, count, access) => {
                        let want = if g + count > SPACE {
                            Err(OutOfRange { gfn: g.max(SPACE) })
                        } else if let Some((&first, _)) = model.range(g..g + count).next() {
                            Err(AlreadyMapped { gfn: gfn(first) })
                        } else {
                            for i in 0..count {
                                model.insert(g + i, (m + i, access));
                            }
                            Ok(())
                        };
                        prop_assert_eq!(p.map(gfn(g), mfn(m), count, access), want, "{:?}", op);
                    }
                    Op::Set(g, new) => {
                        let want = if g >= SPACE {
                            Err(OutOfRange { gfn: g })
                        } else {
                            Ok(match new {
                                Some((m, a)) => model.insert(g, (m, a)),
                                None => model.remove(&g),
                            }.map(|(m, _)| mfn(m)))
                        };
                        let new = new.map(|(m, a)| (mfn(m), a));
                        prop_assert_eq!(p.set_entry(gfn(g), new), want, "{:?}", op);
                    }
                }
            }
            for g in 0..SPACE {
                let want = model.get(&g).map(|&(m, a)| (mfn(m), a));
                prop_assert_eq!(p.translate(gfn(g)), want, "gfn {:#x}", g);
            }
            let mut seen = 0;
            p.for_each_table(|_| seen += 1);
            prop_assert_eq!(seen, tables(&p));
        }

        /// The leaf cache never answers with a translation an operation changed:
        /// the same random operations, each followed by lookups (which fill the
        /// cache) of frames near the ones it touched and of random ones.
        #[test]
        fn leaf_cache_matches_model(
            ops in prop::collection::vec(op(), 1..24),
            probes in prop::collection::vec(0..SPACE, 8),
        ) {
            let mut p = p2m(1024, Size2M, SPACE);
            let mut model: BTreeMap<u64, (u64, Access)> = BTreeMap::new();
            let check = |p: &FakeP2m, model: &BTreeMap<u64, (u64, Access)>, g: u64| {
                let want = model.get(&g).map(|&(m, a)| (mfn(m), a));
                prop_assert_eq!(p.translate(gfn(g)), want, "gfn {:#x}", g);
                Ok(())
            };
            for op in &ops {
                let g = match *op {
                    Op::Map(g, m, count, access) => {
                        if p.map(gfn(g), mfn(m), count, access).is_ok() {
                            for i in 0..count {
                                model.insert(g + i, (m + i, access));
                            }
                        }
                        g
                    }
                    Op::Set(g, new) => {
                        if p.set_entry(gfn(g), new.map(|(m, a)| (mfn(m), a))).is_ok() {
                            match new {
                                Some(n) => model.insert(g, n),
                                None => model.remove(&g),
                            };
                        }
                        g
                    }
                };
                let near = [g.saturating_sub(1), g, g + 1, g ^ 1, g & !(M2 - 1)];
                for &probe in near.iter().chain(&probes) {
                    if probe < SPACE {
                        check(&p, &model, probe)?;
                    }
                }
            }
        }

        #[test]
        fn splitting_a_1g_page_keeps_its_neighbours(
            sets in prop::collection::vec(
                (0..G1, prop::option::of((frame(1 << 20), access()))), 1..16),
            probes in prop::collection::vec(0..G1, 64),
        ) {
            let (g0, m0) = (G1, 8 * G1);
            let mut p = p2m(64, Size1G, 4 * G1);
            p.map(gfn(g0), mfn(m0), G1, Access::RWX).unwrap();
            let mut changed: BTreeMap<u64, Option<(u64, Access)>> = BTreeMap::new();
            let now = |changed: &BTreeMap<u64, Option<(u64, Access)>>, i: u64| {
                changed.get(&i).copied().unwrap_or(Some((m0 + i, Access::RWX)))
            };
            for &(i, new) in &sets {
                let want = Ok(now(&changed, i).map(|(m, _)| mfn(m)));
                prop_assert_eq!(p.set_entry(gfn(g0 + i), new.map(|(m, a)| (mfn(m), a))), want);
                changed.insert(i, new);
            }
            let near = sets.iter().flat_map(|&(i, _)| [i.saturating_sub(1), i, (i + 1).min(G1 - 1)]);
            for i in near.chain(probes.iter().copied()) {
                let want = now(&changed, i).map(|(m, a)| (mfn(m), a));
                prop_assert_eq!(p.translate(gfn(g0 + i)), want, "frame {:#x} of the 1G page", i);
            }
        }
    }
}
