//! The physical memory map: what firmware says is RAM, minus what keel already uses.
//!
//! Firmware maps (e820, multiboot2 mmap tags, EFI) are allegations too: entries arrive
//! unsorted, overlap, and disagree. `MemoryMap` folds them into one sorted,
//! non-overlapping, merged table before anything is allocated from it, so that the
//! frame allocator only ever sees a clean answer to "is this byte RAM nobody owns?".
//!
//! Precedence where firmware entries overlap: the more restrictive kind wins, with
//! `Usable < AcpiReclaimable < Reserved < AcpiNvs < Defective`. ACPI reclaimable memory
//! becomes RAM once the tables are parsed, so it is the least restrictive; NVS must
//! survive sleep states; defective RAM must never be touched by anyone. keel's own
//! kinds beat every firmware kind (`BootInfo < Module < AllocatorMetadata < ApTrampoline < Kernel`,
//! an arbitrary but total order, so that the result of `add` never depends on the
//! order entries arrive in). `reserve` is different: it records a fact about where
//! keel put something, so it overwrites whatever was there, holes included.
//!
//! Invariants (after every call): `regions()` is sorted by `start`, no two regions
//! overlap, no region is empty, and adjacent regions of the same kind are merged.
//! Addresses at or above 2^52 cannot exist (MAXPHYADDR, SDM Vol. 3A §4.1.4), so the
//! part of any input region beyond that is dropped.
//!
//! No allocation: the table is a fixed array, plus an equal scratch array that each
//! update is built in. An update that would not fit returns `Full` and leaves the map
//! exactly as it was. `MemoryMap<256>` is about 12 KiB; keep it in a static or `.bss`
//! rather than on a small early-boot stack.
//!
//! Hazards: partial pages at region edges are never usable, and neither is frame 0
//! (the real-mode IVT/BDA page). `find_free` only answers from usable memory; the
//! caller must `reserve` what it takes before building anything else from the map.

use core::fmt;
use core::ops::Range;

use crate::addr::{FRAME_LIMIT, Hpa, Mfn, PAGE_SHIFT, PAGE_SIZE, PHYS_ADDR_LIMIT};

/// What a range of physical memory is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RegionKind {
    /// RAM free for the frame allocator.
    Usable,
    /// Firmware: not RAM for us (MMIO, firmware code, holes it chose to list).
    Reserved,
    /// Firmware: ACPI tables, reusable once parsed.
    AcpiReclaimable,
    /// Firmware: ACPI non-volatile storage, preserved across sleep.
    AcpiNvs,
    /// Firmware: RAM known to be bad.
    Defective,
    /// keel: the hypervisor image.
    Kernel,
    /// keel: the bootloader's information structures.
    BootInfo,
    /// keel: a boot module (dom0 kernel, initrd).
    Module,
    /// keel: the frame allocator's own bitmap.
    AllocatorMetadata,
    /// keel: the page below 1 MiB application processors start in.
    ApTrampoline,
}

impl RegionKind {
    /// Restrictiveness under `MemoryMap::add`: higher wins.
    pub(crate) const fn rank(self) -> u8 {
        match self {
            RegionKind::Usable => 0,
            RegionKind::AcpiReclaimable => 1,
            RegionKind::Reserved => 2,
            RegionKind::AcpiNvs => 3,
            RegionKind::Defective => 4,
            RegionKind::BootInfo => 5,
            RegionKind::Module => 6,
            RegionKind::AllocatorMetadata => 7,
            RegionKind::ApTrampoline => 8,
            RegionKind::Kernel => 9,
        }
    }

    /// Whether this kind records something keel itself placed in memory.
    pub const fn is_keel(self) -> bool {
        self.rank() >= RegionKind::BootInfo.rank()
    }
}

/// A half-open range `[start, end)` of physical memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

impl Region {
    const EMPTY: Region = Region {
        start: 0,
        end: 0,
        kind: RegionKind::Reserved,
    };
}

/// Errors from building the memory map.
#[derive(Debug, PartialEq, Eq, displaydoc::Display)]
pub enum MemMapError {
    /// too many regions for the fixed table
    Full,
    /// bad range {start:#x}..{end:#x}: start > end or end overflow
    BadRange { start: u64, end: u64 },
    /// only keel's own kinds can be reserved, not {0:?}
    NotKeelKind(RegionKind),
}

/// The sorted, merged physical memory map; `N` is its capacity in regions.
#[derive(Clone)]
pub struct MemoryMap<const N: usize = 256> {
    regions: [Region; N],
    len: usize,
    /// Where updates are built; only meaningful during `paint`.
    scratch: [Region; N],
}

impl<const N: usize> Default for MemoryMap<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for MemoryMap<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.regions()).finish()
    }
}

/// Appends to a region table, merging with the previous region where possible.
struct Builder<'b> {
    buf: &'b mut [Region],
    len: usize,
}

impl Builder<'_> {
    fn push(&mut self, start: u64, end: u64, kind: RegionKind) -> Result<(), MemMapError> {
        if start >= end {
            return Ok(());
        }
        if let Some(last) = self.len.checked_sub(1).and_then(|i| self.buf.get_mut(i))
            && last.end == start
            && last.kind == kind
        {
            last.end = end;
            return Ok(());
        }
        let slot = self.buf.get_mut(self.len).ok_or(MemMapError::Full)?;
        *slot = Region { start, end, kind };
        self.len += 1;
        Ok(())
    }
}

impl<const N: usize> MemoryMap<N> {
    pub const fn new() -> Self {
        MemoryMap {
            regions: [Region::EMPTY; N],
            len: 0,
            scratch: [Region::EMPTY; N],
        }
    }

    /// Adds a firmware-reported region. Overlaps resolve to the more restrictive kind
    /// (see the module docs); zero-length regions are ignored.
    pub fn add(&mut self, start: u64, len: u64, kind: RegionKind) -> Result<(), MemMapError> {
        self.paint(start, len, kind, |old, new| {
            if new.rank() > old.rank() { new } else { old }
        })
    }

    /// Marks `[start, start + len)` as `kind`, one of keel's own kinds, overwriting
    /// whatever was there, holes included (a module in a hole is still reserved).
    pub fn reserve(&mut self, start: u64, len: u64, kind: RegionKind) -> Result<(), MemMapError> {
        if !kind.is_keel() {
            return Err(MemMapError::NotKeelKind(kind));
        }
        self.paint(start, len, kind, |_, new| new)
    }

    /// Sorted, non-overlapping, adjacent same-kind regions merged.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Paints `kind` over `[start, start + len)`: holes get `kind`, existing regions get
    /// `combine(old, kind)`. Built in `scratch`, committed only if it all fits.
    fn paint(
        &mut self,
        start: u64,
        len: u64,
        kind: RegionKind,
        combine: fn(RegionKind, RegionKind) -> RegionKind,
    ) -> Result<(), MemMapError> {
        let end = start.checked_add(len).ok_or(MemMapError::BadRange {
            start,
            end: start.wrapping_add(len),
        })?;
        let end = end.min(PHYS_ADDR_LIMIT);
        if start >= end {
            return Ok(());
        }
        let mut out = Builder {
            buf: &mut self.scratch,
            len: 0,
        };
        // Next byte of [start, end) not yet covered by an existing region.
        let mut cursor = start;
        for r in &self.regions[..self.len] {
            if r.end <= start || r.start >= end {
                if r.start >= end && cursor < end {
                    out.push(cursor, end, kind)?;
                    cursor = end;
                }
                out.push(r.start, r.end, r.kind)?;
                continue;
            }
            let (lo, hi) = (r.start.max(start), r.end.min(end));
            out.push(cursor, r.start, kind)?; // hole before r (empty if none)
            out.push(r.start, lo, r.kind)?;
            out.push(lo, hi, combine(r.kind, kind))?;
            out.push(hi, r.end, r.kind)?;
            cursor = hi;
        }
        out.push(cursor, end, kind)?;
        let n = out.len;
        self.regions[..n].copy_from_slice(&self.scratch[..n]);
        self.len = n;
        Ok(())
    }

    /// Usable ranges shrunk inward to whole pages, without frame 0; empty ones skipped.
    pub fn usable_frames(&self) -> impl Iterator<Item = Range<Mfn>> + '_ {
        self.regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .filter_map(|r| {
                let first = r.start.div_ceil(PAGE_SIZE).max(1);
                // The one-past-the-end frame 2^40 is not an `Mfn`: lose the last frame.
                let end = (r.end >> PAGE_SHIFT).min(FRAME_LIMIT - 1);
                (first < end).then_some(Mfn::new(first)?..Mfn::new(end)?)
            })
    }

    /// Bytes in `usable_frames`.
    pub fn usable_bytes(&self) -> u64 {
        self.usable_frames()
            .map(|r| (r.end.as_u64() - r.start.as_u64()) * PAGE_SIZE)
            .sum()
    }

    /// End of the highest usable page-aligned range.
    pub fn highest_usable(&self) -> Option<Hpa> {
        self.usable_frames().last().map(|r| r.end.hpa())
    }

    /// Highest end of any region (for sizing a direct map); 0 when empty.
    pub fn max_addr(&self) -> u64 {
        self.regions().last().map_or(0, |r| r.end)
    }

    /// Lowest start of `len` bytes (rounded up to pages) of usable memory, aligned to
    /// `align` (a power of two; anything below a page means a page), ending at or below
    /// `limit`. Used to place the allocator's bitmap before the allocator exists;
    /// the caller must `reserve` the result.
    pub fn find_free(&self, len: u64, align: u64, limit: u64) -> Option<Hpa> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(PAGE_SIZE);
        let len = len.checked_next_multiple_of(PAGE_SIZE)?;
        self.usable_frames().find_map(|r| {
            let start = r.start.hpa().align_up(align)?.as_u64();
            let end = start.checked_add(len)?;
            (end <= r.end.hpa().as_u64() && end <= limit).then_some(Hpa::new(start)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::RegionKind::*;
    use super::*;

    fn r(start: u64, end: u64, kind: RegionKind) -> Region {
        Region { start, end, kind }
    }

    fn map(entries: &[(u64, u64, RegionKind)]) -> MemoryMap<16> {
        let mut m = MemoryMap::new();
        for &(s, e, k) in entries {
            m.add(s, e - s, k).unwrap();
        }
        m
    }

    fn frames(m: &MemoryMap<16>) -> Vec<(u64, u64)> {
        m.usable_frames()
            .map(|r| (r.start.as_u64(), r.end.as_u64()))
            .collect()
    }

    #[test]
    fn unsorted_input_is_sorted_and_adjacent_merged() {
        let m = map(&[
            (0x3000, 0x4000, Usable),
            (0x1000, 0x2000, Usable),
            (0x2000, 0x3000, Usable),
        ]);
        assert_eq!(m.regions(), &[r(0x1000, 0x4000, Usable)]);
        let m = map(&[(0x2000, 0x3000, Reserved), (0x1000, 0x2000, Usable)]);
        assert_eq!(m.regions().len(), 2, "different kinds stay apart");
    }

    #[test]
    fn precedence_rules() {
        let order = [
            Usable,
            AcpiReclaimable,
            Reserved,
            AcpiNvs,
            Defective,
            BootInfo,
            Module,
            AllocatorMetadata,
            Kernel,
        ];
        for (i, &lo) in order.iter().enumerate() {
            for &hi in &order[i + 1..] {
                for entries in [
                    [(0, 0x3000, lo), (0x1000, 0x2000, hi)],
                    [(0x1000, 0x2000, hi), (0, 0x3000, lo)],
                ] {
                    let m = map(&entries);
                    assert_eq!(
                        m.regions(),
                        &[
                            r(0, 0x1000, lo),
                            r(0x1000, 0x2000, hi),
                            r(0x2000, 0x3000, lo)
                        ],
                        "{hi:?} must beat {lo:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn holes_and_partial_pages_and_frame_zero() {
        let m = map(&[
            (0, 0x9_F800, Usable),
            (0x10_0100, 0x20_0000, Usable),
            (0x30_0000, 0x30_0FFF, Usable),
        ]);
        assert_eq!(frames(&m), vec![(1, 0x9F), (0x101, 0x200)]);
        assert_eq!(m.usable_bytes(), (0x9E + 0xFF) * PAGE_SIZE);
        assert_eq!(m.highest_usable(), Hpa::new(0x20_0000));
        assert_eq!(m.max_addr(), 0x30_0FFF);
        assert_eq!(MemoryMap::<4>::new().highest_usable(), None);
    }

    #[test]
    fn reserve_carves_inside_across_and_in_holes() {
        let mut m = map(&[(0x1000, 0x10000, Usable), (0x20000, 0x30000, Usable)]);
        m.reserve(0x4000, 0x1000, Kernel).unwrap();
        m.reserve(0xF000, 0x12000, Module).unwrap(); // usable tail, hole, usable head
        m.reserve(0x40000, 0x1000, BootInfo).unwrap(); // entirely in a hole
        assert_eq!(
            m.regions(),
            &[
                r(0x1000, 0x4000, Usable),
                r(0x4000, 0x5000, Kernel),
                r(0x5000, 0xF000, Usable),
                r(0xF000, 0x21000, Module),
                r(0x21000, 0x30000, Usable),
                r(0x40000, 0x41000, BootInfo),
            ]
        );
        // reserve overrides even a more restrictive firmware kind, and needs a keel kind
        m.add(0x40000, 0x1000, Defective).unwrap();
        assert_eq!(m.regions().last(), Some(&r(0x40000, 0x41000, BootInfo)));
        assert_eq!(
            m.reserve(0, 0x1000, Reserved),
            Err(MemMapError::NotKeelKind(Reserved))
        );
    }

    #[test]
    fn capacity_zero_length_and_overflow() {
        let mut m = MemoryMap::<2>::new();
        m.add(0x1000, 0x1000, Usable).unwrap();
        m.add(0x3000, 0x1000, Usable).unwrap();
        let before = m.regions().to_vec();
        assert_eq!(m.add(0x5000, 0x1000, Usable), Err(MemMapError::Full));
        assert_eq!(m.reserve(0x1800, 0x100, Kernel), Err(MemMapError::Full));
        assert_eq!(m.regions(), &before[..], "a failed update changes nothing");
        m.add(0x2000, 0x1000, Usable).unwrap(); // fills the gap: merges to one
        assert_eq!(m.regions(), &[r(0x1000, 0x4000, Usable)]);
        m.add(0x9000, 0, Reserved).unwrap();
        assert_eq!(m.regions().len(), 1);
        let bad = MemMapError::BadRange {
            start: u64::MAX,
            end: 1,
        };
        assert_eq!(m.add(u64::MAX, 2, Usable), Err(bad));
        let msg = "bad range 0xffffffffffffffff..0x1: start > end or end overflow";
        assert_eq!(
            MemMapError::BadRange {
                start: u64::MAX,
                end: 1
            }
            .to_string(),
            msg
        );
        m.add(PHYS_ADDR_LIMIT - 0x1000, 0x10000, Reserved).unwrap();
        assert_eq!(m.max_addr(), PHYS_ADDR_LIMIT, "clamped to 2^52");
        m.add(PHYS_ADDR_LIMIT, 0x10000, Reserved).unwrap(); // entirely beyond: dropped
        assert_eq!(m.regions().len(), 2);
    }

    #[test]
    fn find_free_respects_reservations_alignment_and_limit() {
        let mut m = map(&[(0, 0x10_0000, Usable), (0x20_0000, 0x80_0000, Usable)]);
        m.reserve(0x20_0000, 0x10_0000, Kernel).unwrap();
        for (len, align, limit, want) in [
            (0x1000, 1, u64::MAX, Some(0x1000)),            // frame 0 skipped
            (0x10_0000, 0x1000, u64::MAX, Some(0x30_0000)), // kernel skipped
            (0x1000, 0x40_0000, u64::MAX, Some(0x40_0000)),
            (0x1, 0x1000, 0x2000, Some(0x1000)),
            (0x10_0000, 0x1000, 0x3F_FFFF, None),
            (0x1000, 3, u64::MAX, None),
            (0x60_0000, 0x1000, u64::MAX, None),
        ] {
            let got = m.find_free(len, align, limit).map(Hpa::as_u64);
            assert_eq!(got, want, "len {len:#x} align {align:#x} limit {limit:#x}");
        }
    }
}
