//! The shared version 1 grant entries, and the protocol for changing the
//! hypervisor's flags in them (Xen's `_set_status_v1` and
//! `reduce_status_for_pin`; the rules are in `public/grant_table.h`).
//!
//! # What
//!
//! Entry `r` of a table lives in frame `r / 512` at byte `(r % 512) * 8`:
//! `flags: u16`, `domid: u16`, `frame: u32` ([`GrantEntryV1`]). The granting
//! guest owns everything but `GTF_reading`/`GTF_writing`, and may change any
//! of it at any moment. The hypervisor therefore
//! - sets `GTF_reading`/`GTF_writing` only with a compare-and-exchange of
//!   the entry's first 32 bits (`flags` *and* `domid`), re-checking the
//!   type, the grantee and `GTF_readonly` in the same value it exchanges, so
//!   a concurrent revoke (the granter's own cmpxchg of the flags to 0 while
//!   they show no use) is either seen or loses;
//! - gives up after [`SET_STATUS_ATTEMPTS`] lost races (`GNTST_general_error`),
//!   since a guest rewriting the entry in a loop must not livelock a CPU;
//! - reads `frame` after the flags are set: from then on the granter must
//!   not change the entry;
//! - clears the bits with an atomic AND, which no guest write can undo
//!   except by rewriting the flags, which only hurts the guest itself.
//!
//! # Invariants
//!
//! The functions here touch only the entry they are given, and
//! [`locate`] returns `None` for a ref beyond the table, so no offset
//! outside a table frame is ever formed.
//!
//! # Locking
//!
//! The caller holds the granting domain's lock, so the only concurrent
//! writer of the entry is the granting guest.

use keel_hypercall::abi::domid::DomId;
use keel_hypercall::abi::grant_table::{
    GRANT_ENTRIES_PER_FRAME_V1, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE,
    GTF_TYPE_MASK, GTF_WRITING, GrantEntryV1, GrantRef,
};

use crate::{FrameWords, GntSt};

/// How many compare-and-exchanges a status change tries before it calls
/// the entry unstable (Xen: the first try and four retries).
pub const SET_STATUS_ATTEMPTS: usize = 5;

/// Bytes per version 1 entry.
const ENTRY_SIZE: usize = GrantEntryV1::SIZE;

/// Where one entry lives: a table frame and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryAt {
    /// The table frame (the kernel's handle).
    pub frame: u64,
    /// Byte offset of the entry in the frame (a multiple of 8, < 4096).
    pub offset: usize,
}

/// The location of entry `gref` of a table made of `frames`, or `None` if
/// the table has no such entry.
#[must_use]
pub fn locate(frames: &[u64], gref: GrantRef) -> Option<EntryAt> {
    let per_frame = GRANT_ENTRIES_PER_FRAME_V1;
    let index = usize::try_from(gref / per_frame).ok()?;
    let frame = *frames.get(index)?;
    let slot = usize::try_from(gref % per_frame).ok()?;
    Some(EntryAt {
        frame,
        offset: slot * ENTRY_SIZE,
    })
}

/// Reads the whole entry (one 8-byte access).
#[must_use]
pub fn read(mem: &impl FrameWords, at: EntryAt) -> GrantEntryV1 {
    GrantEntryV1::from_word(mem.read_u64(at.frame, at.offset))
}

/// What a pin asks of the entry.
#[derive(Clone, Copy, Debug)]
pub struct PinRequest {
    /// The domain that will map or copy.
    pub accessor: DomId,
    /// Read-only access (else read and write).
    pub readonly: bool,
    /// A mapping (sub-page grants may be copied, never mapped).
    pub mapping: bool,
    /// The entry is already pinned by `accessor`: the type and grantee were
    /// checked by the first pin and are not checked again (Xen), only
    /// `GTF_readonly` for a write.
    pub already_pinned: bool,
}

/// Sets `GTF_reading` (and `GTF_writing` unless read-only) in the entry,
/// checking in the same compare-and-exchange that the entry permits the
/// access. `GNTST_general_error` if it does not, or if the guest keeps
/// changing the entry under us.
pub fn set_status(mem: &mut impl FrameWords, at: EntryAt, req: PinRequest) -> Result<(), GntSt> {
    let type_mask = if req.mapping {
        GTF_TYPE_MASK | GTF_SUB_PAGE
    } else {
        GTF_TYPE_MASK
    };
    // The low 32 bits of the entry: flags, then domid.
    let mut seen = mem.read_u64(at.frame, at.offset) as u32;
    for _ in 0..SET_STATUS_ATTEMPTS {
        let flags = seen as u16;
        let domid = (seen >> 16) as u16;
        if !req.already_pinned && (flags & type_mask != GTF_PERMIT_ACCESS || domid != req.accessor)
        {
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
            return Ok(());
        }
        seen = found;
    }
    Err(GntSt::GeneralError)
}

/// Clears the hypervisor's flags that no pin needs any more: `GTF_writing`
/// when no writable pin is left, and both when no pin at all is left.
pub fn reduce_status(mem: &mut impl FrameWords, at: EntryAt, pins_left: u64, write_pins_left: u64) {
    let mut clear = 0;
    if pins_left == 0 {
        clear |= GTF_READING | GTF_WRITING;
    } else if write_pins_left == 0 {
        clear |= GTF_WRITING;
    }
    if clear != 0 {
        mem.clear_u16_bits(at.frame, at.offset, clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeMem;

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
