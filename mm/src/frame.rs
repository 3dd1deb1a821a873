//! The physical frame allocator: a bitmap, one bit per 4 KiB frame, 1 = free.
//!
//! It runs before the heap exists, so it owns no memory: the caller finds room with
//! `MemoryMap::find_free(storage_words * 8, ..)`, reserves it as `AllocatorMetadata`,
//! and lends it here as a `&mut [u64]`.
//!
//! That storage holds two bitmaps of equal length: `free` (changes with every call)
//! and `usable` (which frames were ever RAM we own; fixed at construction). The second
//! is what lets `free` reject a frame that is reserved, a hole, or beyond RAM, rather
//! than silently adding the kernel image to the free pool. Hence `storage_words` is
//! 2 × ceil(frames / 64).
//!
//! Invariants: `free ⊆ usable`; `free_count == popcount(free)`; every frame outside
//! `MemoryMap::usable_frames` is permanently not free.
//!
//! Policy: next-fit from a hint that starts at 1 MiB, so ordinary allocations leave low
//! memory (AP trampolines, legacy DMA) for last; `alloc_below` is lowest-fit.
//!
//! Locking: none here; the owner wraps the allocator in its lock.
//!
//! Hazard: there is no ownership tracking beyond the bit. A frame freed by someone
//! who did not allocate it is indistinguishable from a legitimate free.

use crate::addr::Mfn;
use crate::memmap::MemoryMap;

/// Errors from the frame allocator.
#[derive(Debug, PartialEq, Eq, displaydoc::Display)]
pub enum FrameError {
    /// no run of free frames large enough
    OutOfMemory,
    /// freeing frame {0} that is not allocated (double free) or never was usable
    NotAllocated(Mfn),
    /// bad count/alignment argument
    BadRequest,
    /// bitmap storage too small for the map: {needed_words} words needed
    StorageTooSmall { needed_words: usize },
}

/// Where next-fit starts: the first frame above 1 MiB.
const LOW_MEMORY_FRAMES: u64 = 256;

/// Sets (or clears) bits `[start, end)`, a word at a time where possible.
fn write_bits(map: &mut [u64], start: u64, end: u64, value: bool) {
    let mut i = start;
    while i < end {
        let (w, b) = ((i / 64) as usize, i % 64);
        let n = (64 - b).min(end - i);
        let mask = if n == 64 { !0 } else { ((1u64 << n) - 1) << b };
        if value {
            map[w] |= mask
        } else {
            map[w] &= !mask
        }
        i += n;
    }
}

/// First frame in `[start, end)` whose bit equals `want`.
fn find_bit(map: &[u64], start: u64, end: u64, want: bool) -> Option<u64> {
    let mut w = (start / 64) as usize;
    let mut mask = !0u64 << (start % 64);
    while (w as u64) * 64 < end {
        let word = if want { map[w] } else { !map[w] };
        let hits = word & mask;
        if hits != 0 {
            let f = w as u64 * 64 + u64::from(hits.trailing_zeros());
            return (f < end).then_some(f);
        }
        mask = !0;
        w += 1;
    }
    None
}

fn bit(map: &[u64], i: u64) -> bool {
    map[(i / 64) as usize] & (1 << (i % 64)) != 0
}

/// Bitmap frame allocator over frames `[0, frames)`.
pub struct FrameAllocator<'a> {
    free: &'a mut [u64],
    usable: &'a [u64],
    /// Frames tracked: one past the highest usable frame.
    frames: u64,
    free_count: u64,
    total: u64,
    hint: u64,
}

impl<'a> FrameAllocator<'a> {
    /// Words of storage needed for frames `[0, max_frame)`: two bitmaps.
    pub const fn storage_words(max_frame: u64) -> usize {
        2 * max_frame.div_ceil(64) as usize
    }

    /// Words of storage needed for `map` as it stands.
    pub fn storage_words_for<const N: usize>(map: &MemoryMap<N>) -> usize {
        Self::storage_words(map.highest_usable().map_or(0, |a| a.mfn().as_u64()))
    }

    /// Zeroes `storage` and marks free exactly the frames in `map.usable_frames()`.
    pub fn new<const N: usize>(
        map: &MemoryMap<N>,
        storage: &'a mut [u64],
    ) -> Result<Self, FrameError> {
        let frames = map.highest_usable().map_or(0, |a| a.mfn().as_u64());
        let needed_words = Self::storage_words(frames);
        if storage.len() < needed_words {
            return Err(FrameError::StorageTooSmall { needed_words });
        }
        storage.fill(0);
        let (free, rest) = storage.split_at_mut(needed_words / 2);
        let usable = &mut rest[..needed_words / 2];
        let mut total = 0;
        for r in map.usable_frames() {
            let (s, e) = (r.start.as_u64(), r.end.as_u64());
            write_bits(free, s, e, true);
            write_bits(usable, s, e, true);
            total += e - s;
        }
        Ok(FrameAllocator {
            free,
            usable,
            frames,
            free_count: total,
            total,
            hint: LOW_MEMORY_FRAMES,
        })
    }

    /// One frame.
    pub fn alloc(&mut self) -> Result<Mfn, FrameError> {
        self.alloc_contiguous(1, 1)
    }

    /// `count` contiguous frames, the first a multiple of `align_frames` (a power of
    /// two; 1 = none). Next-fit: searches from the hint to the top, then wraps.
    pub fn alloc_contiguous(&mut self, count: u64, align_frames: u64) -> Result<Mfn, FrameError> {
        Self::check_request(count, align_frames)?;
        let hint = self.hint.min(self.frames);
        let start = self
            .find_run(hint, self.frames, count, align_frames, self.frames)
            .or_else(|| self.find_run(0, hint, count, align_frames, self.frames))
            .ok_or(FrameError::OutOfMemory)?;
        self.take(start, count)
    }

    /// Like `alloc_contiguous`, but the whole run lies below `limit`; lowest fit.
    pub fn alloc_below(
        &mut self,
        count: u64,
        align_frames: u64,
        limit: Mfn,
    ) -> Result<Mfn, FrameError> {
        Self::check_request(count, align_frames)?;
        let end = limit.as_u64().min(self.frames);
        let start = self
            .find_run(0, end, count, align_frames, end)
            .ok_or(FrameError::OutOfMemory)?;
        self.take(start, count)
    }

    pub fn free(&mut self, mfn: Mfn) -> Result<(), FrameError> {
        self.free_contiguous(mfn, 1)
    }

    /// Frees `[first, first + count)`; all-or-nothing: if any frame is not allocated,
    /// nothing is freed and that frame is named in the error.
    pub fn free_contiguous(&mut self, first: Mfn, count: u64) -> Result<(), FrameError> {
        let start = first.as_u64();
        let end = start
            .checked_add(count)
            .filter(|_| count > 0)
            .ok_or(FrameError::BadRequest)?;
        let bad = find_bit(self.usable, start, end.min(self.frames), false)
            .or_else(|| find_bit(self.free, start, end.min(self.frames), true))
            .or_else(|| (end > self.frames).then_some(start.max(self.frames)));
        if let Some(bad) = bad {
            return Err(FrameError::NotAllocated(
                Mfn::new(bad).ok_or(FrameError::BadRequest)?,
            ));
        }
        write_bits(self.free, start, end, true);
        self.free_count += count;
        Ok(())
    }

    pub fn free_frames(&self) -> u64 {
        self.free_count
    }

    /// Frames that were ever usable.
    pub fn total_frames(&self) -> u64 {
        self.total
    }

    pub fn is_free(&self, mfn: Mfn) -> bool {
        mfn.as_u64() < self.frames && bit(self.free, mfn.as_u64())
    }

    fn check_request(count: u64, align: u64) -> Result<(), FrameError> {
        if count == 0 || !align.is_power_of_two() {
            Err(FrameError::BadRequest)
        } else {
            Ok(())
        }
    }

    /// First aligned `s` in `[lo, hi)` with `[s, s + count)` free and `s + count <= end`.
    fn find_run(&self, lo: u64, hi: u64, count: u64, align: u64, end: u64) -> Option<u64> {
        let mut s = lo;
        loop {
            s = find_bit(self.free, s, hi, true)?.checked_next_multiple_of(align)?;
            let run_end = s.checked_add(count)?;
            if s >= hi || run_end > end {
                return None;
            }
            match find_bit(self.free, s, run_end, false) {
                None => return Some(s),
                Some(busy) => s = busy + 1,
            }
        }
    }

    fn take(&mut self, start: u64, count: u64) -> Result<Mfn, FrameError> {
        let mfn = Mfn::new(start).ok_or(FrameError::OutOfMemory)?;
        write_bits(self.free, start, start + count, false);
        self.free_count -= count;
        self.hint = if start + count >= self.frames {
            0
        } else {
            start + count
        };
        Ok(mfn)
    }
}

#[cfg(test)]
mod tests {
    use super::FrameError::*;
    use super::*;
    use crate::memmap::RegionKind::*;

    fn mfn(n: u64) -> Mfn {
        Mfn::new(n).unwrap()
    }

    /// Frames 1..16 usable except 8 (Kernel); 16..32 a hole; 32..40 usable.
    fn small_map() -> MemoryMap<8> {
        let mut m = MemoryMap::new();
        m.add(0, 16 * 4096, Usable).unwrap();
        m.add(32 * 4096, 8 * 4096, Usable).unwrap();
        m.reserve(8 * 4096, 4096, Kernel).unwrap();
        m
    }

    #[test]
    fn storage_too_small() {
        let m = small_map();
        assert_eq!(FrameAllocator::storage_words_for(&m), 2);
        let err = FrameAllocator::new(&m, &mut [0u64; 1]).err();
        assert_eq!(err, Some(StorageTooSmall { needed_words: 2 }));
    }

    #[test]
    fn alloc_until_exhausted_never_reserved() {
        let m = small_map();
        let mut s = [!0u64; 4];
        let mut fa = FrameAllocator::new(&m, &mut s).unwrap();
        assert_eq!((fa.total_frames(), fa.free_frames()), (22, 22));
        let mut got: Vec<u64> = (0..22).map(|_| fa.alloc().unwrap().as_u64()).collect();
        assert_eq!(fa.alloc(), Err(OutOfMemory));
        got.sort();
        assert_eq!(got, (1..8).chain(9..16).chain(32..40).collect::<Vec<_>>());
        assert_eq!(fa.free_frames(), 0);
        fa.free(mfn(5)).unwrap();
        assert_eq!((fa.free_frames(), fa.alloc()), (1, Ok(mfn(5))));
    }

    #[test]
    fn contiguous_alignment_and_below() {
        let m = small_map();
        let mut s = [0u64; 2];
        let mut fa = FrameAllocator::new(&m, &mut s).unwrap();
        let mut contiguous = |count, align| fa.alloc_contiguous(count, align);
        assert_eq!(contiguous(8, 8), Ok(mfn(32)));
        assert_eq!(contiguous(4, 4), Ok(mfn(4)), "wrapped to the bottom");
        assert_eq!(
            contiguous(8, 1),
            Err(OutOfMemory),
            "frame 8 splits the rest"
        );
        assert_eq!(contiguous(0, 1), Err(BadRequest));
        assert_eq!(contiguous(1, 3), Err(BadRequest));
        assert_eq!(fa.alloc_below(2, 1, mfn(4)), Ok(mfn(1)));
        assert_eq!(
            fa.alloc_below(2, 1, mfn(4)),
            Err(OutOfMemory),
            "3..5 crosses the limit"
        );
        assert_eq!(fa.alloc_below(1, 1, mfn(4)), Ok(mfn(3)));
        assert_eq!(fa.free_frames(), 22 - 8 - 4 - 3);
    }

    #[test]
    fn double_free_and_reserved_rejected_all_or_nothing() {
        let m = small_map();
        let mut s = [0u64; 2];
        let mut fa = FrameAllocator::new(&m, &mut s).unwrap();
        let a = fa.alloc_contiguous(6, 1).unwrap();
        assert_eq!(fa.free(a), Ok(()));
        // Double free, reserved, frame 0, hole, beyond RAM.
        for f in [a.as_u64(), 8, 0, 20, 1000] {
            assert_eq!(fa.free(mfn(f)), Err(NotAllocated(mfn(f))));
        }
        let before = fa.free_frames();
        let second = mfn(a.as_u64() + 1);
        assert_eq!(fa.free_contiguous(a, 5), Err(NotAllocated(a)));
        assert!(!fa.is_free(second), "nothing freed on error");
        assert_eq!(fa.free_frames(), before);
        assert_eq!(fa.free_contiguous(second, 5), Ok(()));
        assert_eq!(fa.free_frames(), before + 5);
        assert_eq!(fa.free_contiguous(a, 0), Err(BadRequest));
        let msg = "freeing frame 0x8 that is not allocated (double free) or never was usable";
        assert_eq!(
            NotAllocated(mfn(8)).to_string(),
            msg,
            "the doc comment is the message"
        );
    }

    #[test]
    fn next_fit_starts_above_1mib() {
        let mut m = MemoryMap::<4>::new();
        m.add(0, 0x20_0000, Usable).unwrap();
        let mut s = vec![0u64; FrameAllocator::storage_words_for(&m)];
        let mut fa = FrameAllocator::new(&m, &mut s).unwrap();
        assert_eq!(fa.alloc(), Ok(mfn(256)));
        assert_eq!(fa.alloc_contiguous(2, 1), Ok(mfn(257)));
        assert_eq!(fa.alloc_below(1, 1, mfn(256)), Ok(mfn(1)));
        assert_eq!(fa.alloc_contiguous(300, 1), Err(OutOfMemory));
        assert_eq!(
            fa.alloc_contiguous(254, 1),
            Ok(mfn(2)),
            "wraps below the hint"
        );
    }
}
