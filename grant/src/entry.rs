//! The shared grant entries of both versions, and the protocols for
//! changing the hypervisor's flags in them (Xen's `_set_status_v1`,
//! `_set_status_v2` and `reduce_status_for_pin`; the rules are in
//! `public/grant_table.h`).
//!
//! # What
//!
//! Version 1: entry `r` lives in table frame `r / 512` at byte
//! `(r % 512) * 8`: `flags: u16`, `domid: u16`, `frame: u32`
//! ([`GrantEntryV1`]); `GTF_reading`/`GTF_writing` are bits of `flags`.
//! Version 2: entry `r` lives in table frame `r / 256` at byte
//! `(r % 256) * 16` ([`GrantEntryV2`]: the same header, then a 64-bit
//! frame, a sub-page range or a transitive reference), and its
//! `GTF_reading`/`GTF_writing` live apart, in the `u16` at byte
//! `(r % 2048) * 2` of *status frame* `r / 2048`. [`Slot`] names both
//! places of one entry; its `status` word is the entry's `flags` in
//! version 1.
//!
//! The granting guest owns everything but those two bits, and may change
//! any of it at any moment. The hypervisor therefore
//! - in version 1 sets the bits only with a compare-and-exchange of the
//!   entry's first 32 bits (`flags` *and* `domid`), re-checking the type,
//!   the grantee and `GTF_readonly` in the same value it exchanges, so a
//!   concurrent revoke (the granter's own cmpxchg of the flags to 0 while
//!   they show no use) is either seen or loses; it gives up after
//!   [`SET_STATUS_ATTEMPTS`] lost races (`GNTST_general_error`), since a
//!   guest rewriting the entry in a loop must not livelock a CPU;
//! - in version 2 checks the header, sets the bits in the status word
//!   (an atomic OR, a full barrier), then reads the header again and, if it
//!   no longer permits the access, takes the bits back and fails: a
//!   granter revokes by clearing `flags` and then reading the status word,
//!   so either it sees the bits or the hypervisor sees the revoke;
//! - reads the rest of the entry (frame, range, transitive reference) only
//!   once the bits are set: from then on the granter must not change it;
//! - clears the bits with an atomic AND, which no guest write can undo
//!   except by rewriting the word, which only hurts the guest itself.
//!
//! # Invariants
//!
//! The functions here touch only the entry and status word they are given,
//! and [`locate`], [`locate_v2`] and [`locate_status`] return `None` for a
//! ref beyond the frames they are given, so no offset outside a frame is
//! ever formed.
//!
//! # Locking
//!
//! The caller holds the granting domain's lock, so the only concurrent
//! writer of the entry is the granting guest.

use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{
    GRANT_ENTRIES_PER_FRAME_V1, GRANT_ENTRIES_PER_FRAME_V2, GRANT_STATUS_PER_FRAME,
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TRANSITIVE, GTF_TYPE_MASK,
    GTF_WRITING, GrantEntryV1, GrantEntryV2, GrantRef, GrantStatus,
};

use crate::{FrameWords, GntSt};

/// How many compare-and-exchanges a version 1 status change tries before
/// it calls the entry unstable (Xen: the first try and four retries).
pub const SET_STATUS_ATTEMPTS: usize = 5;

/// Bytes per version 1 entry.
const ENTRY_SIZE: usize = GrantEntryV1::SIZE;
/// Bytes per version 2 entry.
const ENTRY_SIZE_V2: usize = GrantEntryV2::SIZE;
/// Bytes per status word.
const STATUS_SIZE: usize = core::mem::size_of::<GrantStatus>();

/// Where one word lives: a frame (the kernel's handle) and a byte offset
/// in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryAt {
    /// The frame (the kernel's handle).
    pub frame: u64,
    /// Byte offset in the frame (aligned to what lives there, < 4096).
    pub offset: usize,
}

/// Both places of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The entry itself, in a table frame.
    pub entry: EntryAt,
    /// The `u16` holding its `GTF_reading`/`GTF_writing`: the entry's
    /// `flags` in version 1, its word of a status frame in version 2.
    pub status: EntryAt,
}

fn locate_in(frames: &[u64], gref: GrantRef, per_frame: u32, size: usize) -> Option<EntryAt> {
    let index = usize::try_from(gref / per_frame).ok()?;
    let frame = *frames.get(index)?;
    let slot = usize::try_from(gref % per_frame).ok()?;
    Some(EntryAt {
        frame,
        offset: slot * size,
    })
}

/// The location of version 1 entry `gref` of a table made of `frames`, or
/// `None` if the table has no such entry.
#[must_use]
pub fn locate(frames: &[u64], gref: GrantRef) -> Option<EntryAt> {
    locate_in(frames, gref, GRANT_ENTRIES_PER_FRAME_V1, ENTRY_SIZE)
}

/// The location of version 2 entry `gref` of a table made of `frames`.
#[must_use]
pub fn locate_v2(frames: &[u64], gref: GrantRef) -> Option<EntryAt> {
    locate_in(frames, gref, GRANT_ENTRIES_PER_FRAME_V2, ENTRY_SIZE_V2)
}

/// The location of entry `gref`'s status word in `status` frames.
#[must_use]
pub fn locate_status(status: &[u64], gref: GrantRef) -> Option<EntryAt> {
    locate_in(status, gref, GRANT_STATUS_PER_FRAME, STATUS_SIZE)
}

/// Reads a whole version 1 entry (one 8-byte access).
#[must_use]
pub fn read(mem: &impl FrameWords, at: EntryAt) -> GrantEntryV1 {
    GrantEntryV1::from_word(mem.read_u64(at.frame, at.offset))
}

/// Reads a whole version 2 entry (two 8-byte accesses: the guest may
/// change it in between, which only hurts the guest).
#[must_use]
pub fn read_v2(mem: &impl FrameWords, at: EntryAt) -> GrantEntryV2 {
    GrantEntryV2::from_words(
        mem.read_u64(at.frame, at.offset),
        mem.read_u64(at.frame, at.offset + 8),
    )
}

/// Writes a whole version 1 entry.
pub fn write(mem: &mut impl FrameWords, at: EntryAt, e: GrantEntryV1) {
    mem.write_u64(at.frame, at.offset, e.to_word());
}

/// Writes a whole version 2 entry.
pub fn write_v2(mem: &mut impl FrameWords, at: EntryAt, e: GrantEntryV2) {
    let [lo, hi] = e.to_words();
    mem.write_u64(at.frame, at.offset, lo);
    mem.write_u64(at.frame, at.offset + 8, hi);
}

/// Reads the `u16` at `at` (2-aligned), through the 8-byte word holding it.
#[must_use]
pub fn read_u16(mem: &impl FrameWords, at: EntryAt) -> u16 {
    let base = at.offset & !7;
    // Deliberate truncation: the 16 bits at `at.offset`.
    (mem.read_u64(at.frame, base) >> ((at.offset - base) * 8)) as u16
}

/// Replaces the `u16` at `at` (2-aligned) with `value`: two atomic
/// operations, between which the guest may see the bits of both.
pub fn write_u16(mem: &mut impl FrameWords, at: EntryAt, value: u16) {
    mem.clear_u16_bits(at.frame, at.offset, !value);
    mem.or_u16_bits(at.frame, at.offset, value);
}

/// What a pin asks of the entry.
#[derive(Clone, Copy, Debug)]
pub struct PinRequest {
    /// The domain that will map or copy.
    pub accessor: DomId,
    /// Read-only access (else read and write).
    pub readonly: bool,
    /// A mapping (sub-page and transitive grants may be copied, never
    /// mapped).
    pub mapping: bool,
    /// The entry is already pinned by `accessor`: the type and grantee were
    /// checked by the first pin and are not checked again (Xen), only
    /// `GTF_readonly` for a write.
    pub already_pinned: bool,
}

/// Whether `flags`/`domid` permit a first pin: the type (`GTF_permit_access`,
/// not sub-page for a mapping; in version 2 also `GTF_transitive` for a
/// copy) and the grantee.
fn permits(flags: u16, domid: DomId, req: PinRequest, v2: bool) -> bool {
    let mask = if req.mapping {
        GTF_TYPE_MASK | GTF_SUB_PAGE
    } else {
        GTF_TYPE_MASK
    };
    let ty = flags & mask;
    let type_ok = ty == GTF_PERMIT_ACCESS || (v2 && !req.mapping && ty == GTF_TRANSITIVE);
    type_ok && domid == req.accessor
}

/// Version 1: sets `GTF_reading` (and `GTF_writing` unless read-only) in
/// the entry, checking in the same compare-and-exchange that the entry
/// permits the access; returns the flags it exchanged.
/// `GNTST_general_error` if it does not permit it, or if the guest keeps
/// changing the entry under us.
pub fn set_status(mem: &mut impl FrameWords, at: EntryAt, req: PinRequest) -> Result<u16, GntSt> {
    // The low 32 bits of the entry: flags, then domid.
    let mut seen = mem.read_u64(at.frame, at.offset) as u32;
    for _ in 0..SET_STATUS_ATTEMPTS {
        let flags = seen as u16;
        let domid = (seen >> 16) as u16;
        if !req.already_pinned && !permits(flags, domid, req, false) {
            return Err(GntSt::GeneralError);
        }
        let mut new_flags = flags | GTF_READING;
        if !req.readonly {
            if flags & GTF_READONLY != 0 {
                return Err(GntSt::GeneralError);
            }
            new_flags |= GTF_WRITING;
        }
        let new = (seen & 0xffff_0000) | u32::from(new_flags);
        let found = mem.cmpxchg_u32(at.frame, at.offset, seen, new);
        if found == seen {
            return Ok(flags);
        }
        seen = found;
    }
    Err(GntSt::GeneralError)
}

/// Version 2: checks the entry's header permits the access, sets
/// `GTF_reading` (and `GTF_writing` unless read-only) in its status word
/// `status`, then reads the header again: if it no longer permits the
/// access (a first pin) or has become read-only (a write), takes back
/// what it set and fails. Returns the flags of the header it checked last.
/// `GNTST_general_error` if the entry does not permit the access.
pub fn set_status_v2(
    mem: &mut impl FrameWords,
    at: EntryAt,
    status: EntryAt,
    req: PinRequest,
) -> Result<u16, GntSt> {
    let (flags, domid) = read_header(mem, at);
    if !req.already_pinned && !permits(flags, domid, req, true) {
        return Err(GntSt::GeneralError);
    }
    let bits = if req.readonly {
        GTF_READING
    } else {
        if flags & GTF_READONLY != 0 {
            return Err(GntSt::GeneralError);
        }
        GTF_READING | GTF_WRITING
    };
    // A full barrier: the granter sees the bits before we look again.
    mem.or_u16_bits(status.frame, status.offset, bits);
    let (flags, domid) = read_header(mem, at);
    if !req.already_pinned {
        if !permits(flags, domid, req, true) || (!req.readonly && flags & GTF_READONLY != 0) {
            mem.clear_u16_bits(status.frame, status.offset, GTF_READING | GTF_WRITING);
            return Err(GntSt::GeneralError);
        }
    } else if flags & GTF_READONLY != 0 {
        // Only a first writable pin of a pinned entry gets here.
        mem.clear_u16_bits(status.frame, status.offset, GTF_WRITING);
        return Err(GntSt::GeneralError);
    }
    Ok(flags)
}

/// The entry's header: (`flags`, `domid`), its first 32 bits.
fn read_header(mem: &impl FrameWords, at: EntryAt) -> (u16, DomId) {
    // Deliberate truncations: the header is the low half of the first word.
    let word = mem.read_u64(at.frame, at.offset);
    (word as u16, (word >> 16) as u16)
}

/// Clears the hypervisor's flags that no pin needs any more, in the status
/// word `status`: `GTF_writing` when no writable pin is left, and both when
/// no pin at all is left.
pub fn reduce_status(
    mem: &mut impl FrameWords,
    status: EntryAt,
    pins_left: u64,
    write_pins_left: u64,
) {
    let mut clear = 0;
    if pins_left == 0 {
        clear |= GTF_READING | GTF_WRITING;
    } else if write_pins_left == 0 {
        clear |= GTF_WRITING;
    }
    if clear != 0 {
        mem.clear_u16_bits(status.frame, status.offset, clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMem;
    use keel_hypercall::abi::grant_table::GTF_ACCEPT_TRANSFER;

    fn entry(flags: u16, domid: DomId, frame: u32) -> GrantEntryV1 {
        GrantEntryV1 {
            flags,
            domid,
            frame,
        }
    }

    fn req(accessor: DomId, readonly: bool) -> PinRequest {
        PinRequest {
            accessor,
            readonly,
            mapping: true,
            already_pinned: false,
        }
    }

    #[test]
    fn locate_bounds() {
        let frames = [10, 20];
        assert_eq!(
            locate(&frames, 0),
            Some(EntryAt {
                frame: 10,
                offset: 0
            })
        );
        assert_eq!(
            locate(&frames, 511),
            Some(EntryAt {
                frame: 10,
                offset: 4088
            })
        );
        assert_eq!(
            locate(&frames, 512),
            Some(EntryAt {
                frame: 20,
                offset: 0
            })
        );
        assert_eq!(locate(&frames, 1024), None);
        assert_eq!(locate(&frames, u32::MAX), None);
        assert_eq!(locate(&[], 0), None);
    }

    #[test]
    fn set_status_sets_bits_and_keeps_the_rest() {
        let mut mem = FakeMem::default();
        let at = EntryAt {
            frame: 1,
            offset: 16,
        };
        mem.write_entry(at, entry(GTF_PERMIT_ACCESS, 3, 0xabc));
        set_status(&mut mem, at, req(3, true)).unwrap();
        assert_eq!(
            read(&mem, at),
            entry(GTF_PERMIT_ACCESS | GTF_READING, 3, 0xabc)
        );
        set_status(
            &mut mem,
            at,
            PinRequest {
                already_pinned: true,
                ..req(3, false)
            },
        )
        .unwrap();
        assert_eq!(
            read(&mem, at).flags,
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
        );
        reduce_status(&mut mem, at, 1, 0);
        assert_eq!(read(&mem, at).flags, GTF_PERMIT_ACCESS | GTF_READING);
        reduce_status(&mut mem, at, 0, 0);
        assert_eq!(read(&mem, at), entry(GTF_PERMIT_ACCESS, 3, 0xabc));
    }

    #[test]
    fn set_status_refusals() {
        let mut mem = FakeMem::default();
        let at = EntryAt {
            frame: 1,
            offset: 0,
        };
        for (e, r) in [
            (entry(GTF_PERMIT_ACCESS, 4, 1), req(3, true)),
            (entry(0, 3, 1), req(3, true)),
            (entry(2, 3, 1), req(3, true)),
            (entry(3, 3, 1), req(3, true)),
            (entry(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, 3, 1), req(3, true)),
            (entry(GTF_PERMIT_ACCESS | GTF_READONLY, 3, 1), req(3, false)),
            (
                entry(GTF_PERMIT_ACCESS | GTF_READONLY, 3, 1),
                PinRequest {
                    already_pinned: true,
                    ..req(3, false)
                },
            ),
        ] {
            mem.write_entry(at, e);
            assert_eq!(
                set_status(&mut mem, at, r),
                Err(GntSt::GeneralError),
                "{e:?} {r:?}"
            );
            assert_eq!(read(&mem, at), e, "untouched");
        }
        // A sub-page grant may be copied.
        mem.write_entry(at, entry(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, 3, 1));
        set_status(
            &mut mem,
            at,
            PinRequest {
                mapping: false,
                ..req(3, true)
            },
        )
        .unwrap();
    }

    #[test]
    fn set_status_sees_a_concurrent_revoke() {
        let mut mem = FakeMem::default();
        let at = EntryAt {
            frame: 1,
            offset: 8,
        };
        mem.write_entry(at, entry(GTF_PERMIT_ACCESS, 3, 1));
        // The granter revokes between our read and our exchange.
        mem.interfere = Some(Box::new(|word| word & !0xffff));
        assert_eq!(
            set_status(&mut mem, at, req(3, true)),
            Err(GntSt::GeneralError)
        );
        assert_eq!(read(&mem, at).flags, 0);
    }

    #[test]
    fn set_status_gives_up_on_an_unstable_entry() {
        let mut mem = FakeMem::default();
        let at = EntryAt {
            frame: 1,
            offset: 8,
        };
        mem.write_entry(at, entry(GTF_PERMIT_ACCESS, 3, 1));
        // The guest toggles GTF_PWT before every one of our exchanges.
        mem.interfere = Some(Box::new(|word| word ^ 0x20));
        assert_eq!(
            set_status(&mut mem, at, req(3, true)),
            Err(GntSt::GeneralError)
        );
        assert_eq!(mem.cmpxchgs, SET_STATUS_ATTEMPTS);
        assert_eq!(read(&mem, at).flags & GTF_READING, 0);
    }

    #[test]
    fn locate_v2_and_status_bounds() {
        let frames = [10, 20];
        assert_eq!(
            locate_v2(&frames, 255),
            Some(EntryAt {
                frame: 10,
                offset: 4080
            })
        );
        assert_eq!(
            locate_v2(&frames, 256),
            Some(EntryAt {
                frame: 20,
                offset: 0
            })
        );
        assert_eq!(locate_v2(&frames, 512), None);
        assert_eq!(
            locate_status(&[7], 2047),
            Some(EntryAt {
                frame: 7,
                offset: 4094
            })
        );
        assert_eq!(locate_status(&[7], 2048), None);
        assert_eq!(locate_status(&[], 0), None);
    }

    #[test]
    fn u16_access() {
        let mut mem = FakeMem::default();
        let at = EntryAt {
            frame: 3,
            offset: 6,
        };
        mem.write_word(3, 0, 0x1111_2222_3333_4444);
        assert_eq!(read_u16(&mem, at), 0x1111);
        write_u16(&mut mem, at, 0xabcd);
        assert_eq!(mem.word(3, 0), 0xabcd_2222_3333_4444);
    }

    fn v2_entry(flags: u16, domid: DomId) -> GrantEntryV2 {
        GrantEntryV2::from_words(u64::from(flags) | u64::from(domid) << 16, 0x1_0000_0001)
    }

    const AT: EntryAt = EntryAt {
        frame: 1,
        offset: 32,
    };
    const STATUS: EntryAt = EntryAt {
        frame: 9,
        offset: 4,
    };

    #[test]
    fn set_status_v2_sets_the_status_word_only() {
        let mut mem = FakeMem::default();
        let e = v2_entry(GTF_PERMIT_ACCESS, 3);
        mem.write_entry_v2(AT, e);
        assert_eq!(
            set_status_v2(&mut mem, AT, STATUS, req(3, true)),
            Ok(GTF_PERMIT_ACCESS)
        );
        assert_eq!(read_u16(&mem, STATUS), GTF_READING);
        assert_eq!(read_v2(&mem, AT), e, "the entry is the guest's alone");
        let upgrade = PinRequest {
            already_pinned: true,
            ..req(3, false)
        };
        set_status_v2(&mut mem, AT, STATUS, upgrade).unwrap();
        assert_eq!(read_u16(&mem, STATUS), GTF_READING | GTF_WRITING);
        reduce_status(&mut mem, STATUS, 1, 0);
        assert_eq!(read_u16(&mem, STATUS), GTF_READING);
        reduce_status(&mut mem, STATUS, 0, 0);
        assert_eq!(read_u16(&mem, STATUS), 0);
        assert_eq!(mem.cmpxchgs, 0, "no compare-and-exchange in version 2");
    }

    #[test]
    fn set_status_v2_refusals() {
        let mut mem = FakeMem::default();
        let copy = |accessor, readonly| PinRequest {
            mapping: false,
            ..req(accessor, readonly)
        };
        for (flags, domid, r) in [
            (GTF_PERMIT_ACCESS, 4, req(3, true)),
            (0, 3, req(3, true)),
            (GTF_ACCEPT_TRANSFER, 3, req(3, true)),
            (GTF_TRANSITIVE, 3, req(3, true)),
            (GTF_PERMIT_ACCESS | GTF_SUB_PAGE, 3, req(3, true)),
            (GTF_PERMIT_ACCESS | GTF_READONLY, 3, req(3, false)),
            (GTF_TRANSITIVE | GTF_READONLY, 3, copy(3, false)),
            (GTF_ACCEPT_TRANSFER, 3, copy(3, true)),
        ] {
            mem.write_entry_v2(AT, v2_entry(flags, domid));
            assert_eq!(
                set_status_v2(&mut mem, AT, STATUS, r),
                Err(GntSt::GeneralError),
                "{flags:#x} {r:?}"
            );
            assert_eq!(read_u16(&mem, STATUS), 0, "{flags:#x}: nothing left set");
        }
        // Copies may go through sub-page and transitive grants.
        for flags in [GTF_PERMIT_ACCESS | GTF_SUB_PAGE, GTF_TRANSITIVE] {
            mem.write_entry_v2(AT, v2_entry(flags, 3));
            assert_eq!(
                set_status_v2(&mut mem, AT, STATUS, copy(3, false)),
                Ok(flags)
            );
            write_u16(&mut mem, STATUS, 0);
        }
    }

    #[test]
    fn set_status_v2_sees_a_revoke_after_setting_the_bits() {
        let mut mem = FakeMem::default();
        mem.write_entry_v2(AT, v2_entry(GTF_PERMIT_ACCESS, 3));
        // The granter clears the flags, then (in its own protocol) reads the
        // status word: the hypervisor must take its bits back.
        mem.after_or = Some(Box::new(|m: &mut FakeMem| {
            let w = m.word(AT.frame, AT.offset);
            m.write_word(AT.frame, AT.offset, w & !0xffff);
        }));
        assert_eq!(
            set_status_v2(&mut mem, AT, STATUS, req(3, false)),
            Err(GntSt::GeneralError)
        );
        assert_eq!(read_u16(&mem, STATUS), 0);
        assert_eq!(mem.ors, 1);
        // A pinned entry the granter makes read-only under a first write.
        mem.after_or = None;
        mem.write_entry_v2(AT, v2_entry(GTF_PERMIT_ACCESS, 3));
        set_status_v2(&mut mem, AT, STATUS, req(3, true)).unwrap();
        mem.after_or = Some(Box::new(|m: &mut FakeMem| {
            let w = m.word(AT.frame, AT.offset);
            m.write_word(AT.frame, AT.offset, w | u64::from(GTF_READONLY));
        }));
        let upgrade = PinRequest {
            already_pinned: true,
            ..req(3, false)
        };
        assert_eq!(
            set_status_v2(&mut mem, AT, STATUS, upgrade),
            Err(GntSt::GeneralError)
        );
        assert_eq!(
            read_u16(&mem, STATUS),
            GTF_READING,
            "the read pin's bit stays"
        );
    }

    #[test]
    fn set_status_wins_after_one_lost_race() {
        let mut mem = FakeMem::default();
        let at = EntryAt {
            frame: 1,
            offset: 8,
        };
        mem.write_entry(at, entry(GTF_PERMIT_ACCESS, 3, 1));
        let mut once = true;
        mem.interfere = Some(Box::new(move |word| {
            if core::mem::take(&mut once) {
                word | 0x40
            } else {
                word
            }
        }));
        set_status(&mut mem, at, req(3, true)).unwrap();
        assert_eq!(read(&mem, at).flags, GTF_PERMIT_ACCESS | 0x40 | GTF_READING);
        assert_eq!(mem.cmpxchgs, 2);
    }
}
