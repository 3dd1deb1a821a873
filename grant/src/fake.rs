//! A fake of the kernel's table-frame memory for host tests: words in a
//! map, alignment and bounds asserted (a violation is a bug in this crate),
//! and a hook that plays the granting guest writing an entry between the
//! hypervisor's read and its compare-and-exchange.

use std::collections::BTreeMap;

use keel_hypercall::abi::grant_table::GrantEntryV1;

use crate::FrameWords;
use crate::entry::EntryAt;

type Interfere = Box<dyn FnMut(u64) -> u64>;

#[derive(Default)]
pub struct FakeMem {
    /// (frame, offset of an 8-byte word) -> word; absent words read 0.
    words: BTreeMap<(u64, usize), u64>,
    /// Called with the word before every compare-and-exchange; its result
    /// is stored first, as if the guest wrote it just then.
    pub interfere: Option<Interfere>,
    /// Compare-and-exchanges performed.
    pub cmpxchgs: usize,
}

impl FakeMem {
    pub fn write_entry(&mut self, at: EntryAt, e: GrantEntryV1) {
        self.write_word(at.frame, at.offset, e.to_word());
    }

    pub fn write_word(&mut self, frame: u64, offset: usize, word: u64) {
        assert!(offset.is_multiple_of(8) && offset < 4096);
        self.words.insert((frame, offset), word);
    }

    pub fn word(&self, frame: u64, offset: usize) -> u64 {
        assert!(
            offset.is_multiple_of(8) && offset < 4096,
            "bad offset {offset}"
        );
        self.words.get(&(frame, offset)).copied().unwrap_or(0)
    }
}

impl FrameWords for FakeMem {
    fn read_u64(&self, frame: u64, offset: usize) -> u64 {
        self.word(frame, offset)
    }

    fn cmpxchg_u32(&mut self, frame: u64, offset: usize, old: u32, new: u32) -> u32 {
        assert!(
            offset.is_multiple_of(4) && offset < 4096,
            "bad offset {offset}"
        );
        self.cmpxchgs += 1;
        let base = offset & !7;
        let shift = (offset - base) * 8;
        let mut word = self.word(frame, base);
        if let Some(f) = self.interfere.as_mut() {
            word = f(word);
            self.write_word(frame, base, word);
        }
        let found = (word >> shift) as u32;
        if found == old {
            let mask = 0xffff_ffffu64 << shift;
            self.write_word(frame, base, (word & !mask) | (u64::from(new) << shift));
        }
        found
    }

    fn clear_u16_bits(&mut self, frame: u64, offset: usize, bits: u16) {
        assert!(
            offset.is_multiple_of(2) && offset < 4096,
            "bad offset {offset}"
        );
        let base = offset & !7;
        let shift = (offset - base) * 8;
        let word = self.word(frame, base);
        self.write_word(frame, base, word & !(u64::from(bits) << shift));
    }
}
