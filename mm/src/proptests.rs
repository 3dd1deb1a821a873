//! Property tests: the memory map and the frame allocator against brute-force models.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::addr::Mfn;
use crate::frame::{FrameAllocator, FrameError};
use crate::memmap::{MemoryMap, RegionKind, RegionKind::*};

/// Model resolution: inputs are multiples of this, so partial pages occur.
const GRAIN: u64 = 0x100;
/// Model address space: 64 pages.
const SPACE: u64 = 0x4_0000;

const FIRMWARE: [RegionKind; 5] = [Usable, Reserved, AcpiReclaimable, AcpiNvs, Defective];
const KEEL: [RegionKind; 5] = [Kernel, BootInfo, Module, AllocatorMetadata, ApTrampoline];

fn entry(kinds: &'static [RegionKind]) -> impl Strategy<Value = (u64, u64, RegionKind)> {
    (
        0..SPACE / GRAIN,
        0..SPACE / GRAIN / 4,
        prop::sample::select(kinds),
    )
        .prop_map(|(s, l, k)| (s * GRAIN, l * GRAIN, k))
}

/// Kind of each grain: firmware entries by rank, then reserves in order.
fn model(
    adds: &[(u64, u64, RegionKind)],
    reserves: &[(u64, u64, RegionKind)],
) -> Vec<Option<RegionKind>> {
    let mut kinds: Vec<Option<RegionKind>> = vec![None; (2 * SPACE / GRAIN) as usize];
    for &(s, l, k) in adds {
        for g in s / GRAIN..(s + l) / GRAIN {
            let slot = &mut kinds[g as usize];
            if slot.is_none_or(|old| k.rank() > old.rank()) {
                *slot = Some(k);
            }
        }
    }
    for &(s, l, k) in reserves {
        for g in s / GRAIN..(s + l) / GRAIN {
            kinds[g as usize] = Some(k);
        }
    }
    kinds
}

fn build(adds: &[(u64, u64, RegionKind)], reserves: &[(u64, u64, RegionKind)]) -> MemoryMap<64> {
    let mut m = MemoryMap::new();
    for &(s, l, k) in adds {
        m.add(s, l, k).unwrap();
    }
    for &(s, l, k) in reserves {
        m.reserve(s, l, k).unwrap();
    }
    m
}

proptest! {
    #[test]
    fn memmap_matches_model(
        adds in prop::collection::vec(entry(&FIRMWARE), 0..12),
        reserves in prop::collection::vec(entry(&KEEL), 0..4),
        rotate in 0usize..12,
    ) {
        let m = build(&adds, &reserves);
        let regions = m.regions();
        for w in regions.windows(2) {
            prop_assert!(w[0].end <= w[1].start, "sorted, non-overlapping: {m:?}");
            prop_assert!(w[0].end < w[1].start || w[0].kind != w[1].kind, "merged: {m:?}");
        }
        prop_assert!(regions.iter().all(|r| r.start < r.end));
        // Exact agreement with the model, grain by grain (covers "every usable byte was
        // usable in the input and in no non-usable input region").
        let want = model(&adds, &reserves);
        for (g, want) in want.iter().enumerate() {
            let x = g as u64 * GRAIN;
            let got = regions.iter().find(|r| r.start <= x && x < r.end).map(|r| r.kind);
            prop_assert_eq!(got, *want, "at {:#x}: {:?}", x, m);
        }
        // Usable frames are exactly the whole usable pages but frame 0.
        let frames: BTreeSet<u64> = m.usable_frames().flat_map(|r| r.start.as_u64()..r.end.as_u64()).collect();
        let per_page = (PAGE / GRAIN) as usize;
        let whole: BTreeSet<u64> = want.chunks(per_page).enumerate()
            .filter(|(p, c)| *p > 0 && c.iter().all(|k| *k == Some(Usable)))
            .map(|(p, _)| p as u64).collect();
        prop_assert_eq!(&frames, &whole);
        prop_assert_eq!(m.usable_bytes(), whole.len() as u64 * PAGE);
        // `add` is order-independent.
        let mut rotated = adds.clone();
        if !rotated.is_empty() {
            let n = rotate % rotated.len();
            rotated.rotate_left(n);
        }
        let again = build(&rotated, &reserves);
        prop_assert_eq!(again.regions(), regions);
    }

    #[test]
    fn frame_allocator_matches_model(
        adds in prop::collection::vec(entry(&FIRMWARE), 1..8),
        ops in prop::collection::vec((0u8..4, 0u64..70, 0u32..4), 1..200),
    ) {
        let m = build(&adds, &[]);
        let mut storage = vec![0u64; FrameAllocator::storage_words_for(&m)];
        let mut fa = FrameAllocator::new(&m, &mut storage).unwrap();
        let usable: BTreeSet<u64> = m.usable_frames().flat_map(|r| r.start.as_u64()..r.end.as_u64()).collect();
        prop_assert_eq!(fa.total_frames(), usable.len() as u64);
        let mut allocated = BTreeSet::new();
        for (op, n, align_log) in ops {
            let align = 1u64 << align_log;
            let count = n % 5 + 1;
            let got = match op {
                0 => fa.alloc().map(|m| (m, 1)),
                1 => fa.alloc_contiguous(count, align).map(|m| (m, count)),
                2 => fa.alloc_below(count, align, Mfn::new(n).unwrap()).map(|m| (m, count)),
                _ => {
                    let first = Mfn::new(n).unwrap();
                    let range = n..n + count;
                    let ok = range.clone().all(|f| allocated.contains(&f));
                    let res = fa.free_contiguous(first, count);
                    prop_assert_eq!(res.is_ok(), ok, "free {:?} x{}: {:?}", first, count, res);
                    if ok {
                        for f in range { allocated.remove(&f); }
                    } else {
                        prop_assert!(matches!(res, Err(FrameError::NotAllocated(_))));
                    }
                    continue;
                }
            };
            match got {
                Ok((first, count)) => {
                    let want_align = if op == 0 { 1 } else { align };
                    prop_assert_eq!(first.as_u64() % want_align, 0);
                    if op == 2 { prop_assert!(first.as_u64() + count <= n); }
                    for f in first.as_u64()..first.as_u64() + count {
                        prop_assert!(usable.contains(&f), "handed out unusable frame {}", f);
                        prop_assert!(allocated.insert(f), "frame {} handed out twice", f);
                    }
                }
                Err(e) => prop_assert_eq!(e, FrameError::OutOfMemory),
            }
            prop_assert_eq!(fa.free_frames(), (usable.len() - allocated.len()) as u64);
        }
        for f in 0..80 {
            let free = usable.contains(&f) && !allocated.contains(&f);
            prop_assert_eq!(fa.is_free(Mfn::new(f).unwrap()), free);
        }
    }
}

const PAGE: u64 = crate::addr::PAGE_SIZE;
