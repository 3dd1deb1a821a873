//! A host stand-in for the kernel's side of [`PvMemory`]: frames as arrays, a
//! table of I/O frames, and a record of what was asked of the kernel; and an
//! allocator that counts and fails on demand ([`Counting`]).

use std::alloc::{AllocError, Allocator, Global, Layout};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::rc::Rc;

use crate::addr::Mfn;

use super::entry::{ACCESSED, ENTRIES, PRESENT, RW};
use super::{IoFrame, PageType, PvMemory};

pub(crate) fn mfn(n: u64) -> Mfn {
    Mfn::new(n).expect("test frame numbers are small")
}

/// keel's template entry for `slot` of L4 `l4`: slot 258 maps the L4 itself, as
/// Xen's linear slot does; the others a fixed table each.
pub(crate) fn keel_entry(l4: Mfn, slot: usize) -> u64 {
    let target = if slot == 258 {
        l4.as_u64()
    } else {
        0xF_0000 + slot as u64
    };
    (target << 12) | PRESENT | RW | ACCESSED
}

#[derive(Clone, Default)]
pub(crate) struct FakeMem {
    frames: BTreeMap<Mfn, Box<[u64; ENTRIES]>>,
    /// Frames that are not the domain's and are I/O; anything else is `NotIo`.
    pub io: BTreeMap<Mfn, IoFrame>,
    /// Every `before_type_change`, in order.
    pub type_changes: Vec<(Mfn, PageType, PageType)>,
    /// What `check_segdesc_page` answers.
    pub bad_segdesc: bool,
    /// The next compare-exchange on a present entry finds these bits flipped
    /// first (ACCESSED: the hardware walker; anything else: a rogue writer).
    pub race: u64,
}

impl FakeMem {
    pub fn new() -> FakeMem {
        FakeMem::default()
    }

    /// What the guest (or the hardware) writes directly.
    pub fn set(&mut self, m: Mfn, index: usize, value: u64) {
        self.frames
            .entry(m)
            .or_insert_with(|| Box::new([0; ENTRIES]))[index] = value;
    }

    pub fn get(&self, m: Mfn, index: usize) -> u64 {
        self.frames.get(&m).map_or(0, |f| f[index])
    }

    pub fn frame(&self, m: Mfn) -> [u64; ENTRIES] {
        self.frames.get(&m).map_or([0; ENTRIES], |f| **f)
    }

    /// Zeroes a frame, as the kernel scrubs one before giving it to a domain.
    pub fn scrub(&mut self, m: Mfn) {
        self.frames.remove(&m);
    }
}

impl PvMemory for FakeMem {
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
        self.get(mfn, index)
    }

    fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64) {
        self.set(mfn, index, value);
    }

    fn cmpxchg_entry(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64> {
        let mut cur = self.get(mfn, index);
        if self.race != 0 && cur & PRESENT != 0 {
            cur ^= core::mem::take(&mut self.race);
            self.set(mfn, index, cur);
        }
        if cur != old {
            return Err(cur);
        }
        self.set(mfn, index, new);
        Ok(())
    }

    fn io_frame(&self, mfn: Mfn) -> IoFrame {
        self.io.get(&mfn).copied().unwrap_or(IoFrame::NotIo)
    }

    fn keel_l4_entry(&self, l4: Mfn, slot: usize) -> u64 {
        keel_entry(l4, slot)
    }

    fn before_type_change(&mut self, mfn: Mfn, from: PageType, to: PageType) {
        self.type_changes.push((mfn, from, to));
    }

    fn check_segdesc_page(&self, _mfn: Mfn) -> bool {
        !self.bad_segdesc
    }

    fn clear_frame(&mut self, mfn: Mfn) {
        self.frames.remove(&mfn);
    }

    fn copy_frame(&mut self, dst: Mfn, src: Mfn) {
        let contents = self.frame(src);
        self.frames.insert(dst, Box::new(contents));
    }
}

/// Every frame the domain freed since the last call, in the order freed.
pub(crate) fn freed<A: Allocator + Clone>(d: &mut super::DomainFrames<A>) -> Vec<Mfn> {
    let mut out: Vec<Mfn> = std::iter::from_fn(|| d.pop_freed()).collect();
    out.reverse();
    out
}

/// An allocator for the tests: `Global`, counted, and failing every allocation
/// once its budget is spent. Clones share the counts (an `Rc`), so every chunk of
/// a domain, which keeps a clone, is counted in one place.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counting(Rc<CountingState>);

#[derive(Debug, Default)]
struct CountingState {
    /// Blocks allocated and not yet freed, and their bytes.
    live: Cell<usize>,
    live_bytes: Cell<usize>,
    /// Allocations left before every further one fails; `None`: no limit.
    budget: Cell<Option<usize>>,
}

impl Counting {
    pub fn new() -> Counting {
        Counting::default()
    }

    /// Blocks allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.0.live.get()
    }

    /// Bytes allocated and not yet freed.
    pub fn live_bytes(&self) -> usize {
        self.0.live_bytes.get()
    }

    /// From now on, `budget` more allocations succeed (`None`: all of them).
    pub fn set_budget(&self, budget: Option<usize>) {
        self.0.budget.set(budget);
    }
}

// SAFETY: every block comes from `Global` and goes back to it with the caller's
// layout, so blocks stay valid until deallocated; clones share one state and one
// `Global`, so a block may be freed through any clone, as `Allocator` requires.
#[allow(unsafe_code)]
unsafe impl Allocator for Counting {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let s = &self.0;
        match s.budget.get() {
            Some(0) => return Err(AllocError),
            Some(n) => s.budget.set(Some(n - 1)),
            None => {}
        }
        let block = Global.allocate(layout)?;
        s.live.set(s.live.get() + 1);
        s.live_bytes.set(s.live_bytes.get() + layout.size());
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        let s = &self.0;
        s.live.set(s.live.get() - 1);
        s.live_bytes.set(s.live_bytes.get() - layout.size());
        // SAFETY: the caller passes a block this allocator, so `Global`, allocated
        // with `layout`, and uses it no more.
        unsafe { Global.deallocate(ptr, layout) }
    }
}
