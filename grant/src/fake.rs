//! A fake of the kernel's table- and status-frame memory for host tests:
//! words in a map, alignment and bounds asserted (a violation is a bug in
//! this crate), and hooks that play the granting guest writing an entry
//! between the hypervisor's read and its compare-and-exchange (version 1),
//! or just after it set the status bits (version 2).

use std::collections::BTreeMap;

use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{
    GTF_READING, GTF_SUB_PAGE, GTF_TRANSITIVE, GTF_TYPE_MASK, GTF_WRITING, GrantEntryV1,
    GrantEntryV2, GrantRef,
};

use crate::entry::EntryAt;
use crate::{DomainGrants, FrameWords, Version};

type Interfere = Box<dyn FnMut(u64) -> u64>;
type AfterOr = Box<dyn FnMut(&mut FakeMem)>;

#[derive(Default)]
pub struct FakeMem {
    /// (frame, offset of an 8-byte word) -> word; absent words read 0.
    words: BTreeMap<(u64, usize), u64>,
    /// Called with the word before every compare-and-exchange; its result
    /// is stored first, as if the guest wrote it just then.
    pub interfere: Option<Interfere>,
    /// Compare-and-exchanges performed.
    pub cmpxchgs: usize,
    /// Called just after every OR of status bits, to change the memory as
    /// the guest would just then (version 2's race: the granter revokes
    /// while the hypervisor sets the bits).
    pub after_or: Option<AfterOr>,
    /// ORs of status bits performed.
    pub ors: usize,
}

impl FakeMem {
    pub fn write_entry(&mut self, at: EntryAt, e: GrantEntryV1) {
        self.write_word(at.frame, at.offset, e.to_word());
    }

    pub fn write_entry_v2(&mut self, at: EntryAt, e: GrantEntryV2) {
        let [lo, hi] = e.to_words();
        self.write_word(at.frame, at.offset, lo);
        self.write_word(at.frame, at.offset + 8, hi);
    }

    /// The u16 at `at` (2-aligned).
    pub fn u16_at(&self, at: EntryAt) -> u16 {
        assert!(at.offset.is_multiple_of(2) && at.offset < 4096);
        let base = at.offset & !7;
        (self.word(at.frame, base) >> ((at.offset - base) * 8)) as u16
    }

    /// Stores `value` as the u16 at `at`, as the guest would.
    pub fn set_u16(&mut self, at: EntryAt, value: u16) {
        assert!(at.offset.is_multiple_of(2) && at.offset < 4096);
        let base = at.offset & !7;
        let shift = (at.offset - base) * 8;
        let word = self.word(at.frame, base) & !(0xffffu64 << shift);
        self.write_word(at.frame, base, word | (u64::from(value) << shift));
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

    fn write_u64(&mut self, frame: u64, offset: usize, value: u64) {
        self.write_word(frame, offset, value);
    }

    fn or_u16_bits(&mut self, frame: u64, offset: usize, bits: u16) {
        assert!(
            offset.is_multiple_of(2) && offset < 4096,
            "bad offset {offset}"
        );
        let base = offset & !7;
        let shift = (offset - base) * 8;
        let word = self.word(frame, base);
        self.write_word(frame, base, word | (u64::from(bits) << shift));
        self.ors += 1;
        if let Some(mut f) = self.after_or.take() {
            f(self);
            self.after_or = Some(f);
        }
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

/// What a granting guest writes into an entry, in either layout. Version 1
/// takes `flags`, `domid` and the low 32 bits of `w2` (its frame); version
/// 2 writes `flags` and `domid`, then `w1` at bytes 4..8 (`page_off` and
/// `length`, or `trans_domid`) and `w2` at 8..16 (the frame, or the
/// transitive gref in its low half).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestEntry {
    pub flags: u16,
    pub domid: DomId,
    pub w1: u32,
    pub w2: u64,
}

impl GuestEntry {
    pub fn page(flags: u16, domid: DomId, frame: u64) -> Self {
        GuestEntry {
            flags,
            domid,
            w1: 0,
            w2: frame,
        }
    }

    pub fn sub_page(flags: u16, domid: DomId, frame: u64, off: u16, len: u16) -> Self {
        GuestEntry {
            flags: flags | GTF_SUB_PAGE,
            domid,
            w1: u32::from(off) | u32::from(len) << 16,
            w2: frame,
        }
    }

    pub fn transitive(flags: u16, domid: DomId, trans_domid: DomId, gref: GrantRef) -> Self {
        GuestEntry {
            flags: (flags & !GTF_TYPE_MASK) | GTF_TRANSITIVE,
            domid,
            w1: u32::from(trans_domid),
            w2: u64::from(gref),
        }
    }

    /// The entry's bytes in `version`'s layout (version 1: `flags`, and
    /// nothing of `w1`).
    fn words(self, version: Version) -> [u64; 2] {
        let hdr = u64::from(self.flags) | u64::from(self.domid) << 16;
        match version {
            Version::V1 => [hdr | (self.w2 & 0xffff_ffff) << 32, 0],
            Version::V2 => [hdr | u64::from(self.w1) << 32, self.w2],
        }
    }

    /// Writes it as `d`'s entry `gref` in `d`'s layout, keeping the
    /// hypervisor's bits (of the flags, in version 1). `false` if `d` has
    /// no such entry.
    pub fn write(self, mem: &mut FakeMem, d: &DomainGrants, gref: GrantRef) -> bool {
        let Some(slot) = d.table.slot(gref) else {
            return false;
        };
        let [lo, hi] = self.words(d.version());
        match d.version() {
            Version::V1 => {
                let xen = u64::from(GTF_READING | GTF_WRITING);
                let keep = mem.word(slot.entry.frame, slot.entry.offset) & xen;
                mem.write_word(slot.entry.frame, slot.entry.offset, (lo & !xen) | keep);
            }
            Version::V2 => {
                mem.write_word(slot.entry.frame, slot.entry.offset, lo);
                mem.write_word(slot.entry.frame, slot.entry.offset + 8, hi);
            }
        }
        true
    }

    /// `d`'s entry `gref` as the guest sees it, `GTF_reading`/`GTF_writing`
    /// taken out of version 1's flags.
    pub fn read(mem: &FakeMem, d: &DomainGrants, gref: GrantRef) -> Option<GuestEntry> {
        let slot = d.table.slot(gref)?;
        let lo = mem.word(slot.entry.frame, slot.entry.offset);
        let flags = lo as u16;
        let domid = (lo >> 16) as u16;
        Some(match d.version() {
            Version::V1 => GuestEntry {
                flags: flags & !(GTF_READING | GTF_WRITING),
                domid,
                w1: 0,
                w2: lo >> 32,
            },
            Version::V2 => GuestEntry {
                flags,
                domid,
                w1: (lo >> 32) as u32,
                w2: mem.word(slot.entry.frame, slot.entry.offset + 8),
            },
        })
    }
}

/// `GTF_reading`/`GTF_writing` of `d`'s entry `gref` where its version
/// keeps them (the entry's flags, or its status word).
pub fn status_bits(mem: &FakeMem, d: &DomainGrants, gref: GrantRef) -> u16 {
    let slot = d.table.slot(gref).expect("an entry of the table");
    mem.u16_at(slot.status) & (GTF_READING | GTF_WRITING)
}
