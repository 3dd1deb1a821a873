//! A host stand-in for the kernel's side of [`PvMemory`]: frames as arrays, a
//! table of I/O frames, and a record of what was asked of the kernel.

use std::collections::BTreeMap;

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
pub(crate) fn freed(d: &mut super::DomainFrames) -> Vec<Mfn> {
    let mut out: Vec<Mfn> = std::iter::from_fn(|| d.pop_freed()).collect();
    out.reverse();
    out
}
