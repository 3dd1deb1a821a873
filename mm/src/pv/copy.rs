//! Copies to and from a PV guest's virtual addresses (Xen's `copy_from_guest` and
//! `copy_to_guest` for a guest that is not translated: its page tables hold
//! machine addresses).
//!
//! keel never dereferences a guest pointer on the guest's own page tables: it
//! walks them ([`crate::guest_walk`], as the guest's MMU would for a supervisor
//! access) and reaches the frame through its direct map. Three checks make a
//! guest-supplied address name only the guest's memory:
//!
//! - the range must lie where a 64-bit PV guest may point (Xen's `__addr_ok`):
//!   below the canonical hole, or at or above [`HYPERVISOR_VIRT_END`]. keel's
//!   own L4 slots (256..=271) are in every guest L4, so a walk of an address in
//!   them would reach keel's memory: refused before any walk;
//! - every table the walk reads and the frame it ends at must be the domain's
//!   own ([`MachineMem::access`]);
//! - a write needs a frame the domain may write (not one of its page tables or
//!   descriptor pages, whatever its mappings say), and the walk's own R/W checks
//!   (CR0.WP set) on top.
//!
//! # Locking
//! None here: the caller holds the domain's memory lock across a copy, so frames
//! neither change owner nor type during it.

use crate::addr::{Gpa, Gva, Mfn};
use crate::guest_mem::{CopyError, pages};
use crate::guest_walk::{self, AccessKind, GuestPhysRead, WalkCtx, WalkFault};
use crate::layout::HYPERVISOR_VIRT_END;

/// A PV domain's machine memory, as a copy needs it.
pub trait MachineMem {
    /// Whether frame `mfn` is the domain's: `Some(true)` if the domain may
    /// write it through keel, `Some(false)` if only read, `None` if not its.
    fn access(&self, mfn: Mfn) -> Option<bool>;
    /// Reads `buf.len()` bytes at machine address `maddr` (within one frame the
    /// domain owns).
    fn read(&self, maddr: u64, buf: &mut [u8]);
    /// Writes `data` at `maddr` (within one frame the domain may write).
    fn write(&mut self, maddr: u64, data: &[u8]);
}

/// Whether `[start, start + len)` lies where a 64-bit PV guest may point.
pub fn range_ok(start: u64, len: usize) -> bool {
    let Some(last) = start.checked_add((len as u64).saturating_sub(1)) else {
        return false;
    };
    let ok = |a: u64| !((1 << 47)..HYPERVISOR_VIRT_END).contains(&a);
    // The two allowed regions are separated by the hole and keel's range: a
    // range is allowed when both ends are in the same one.
    ok(start) && ok(last) && ((start < (1 << 47)) == (last < (1 << 47)))
}

/// The walker's view: page-table entries at machine addresses, only in the
/// domain's frames.
struct Tables<'a, M: MachineMem>(&'a M);

impl<M: MachineMem> GuestPhysRead for Tables<'_, M> {
    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        let a = gpa.as_u64();
        if !a.is_multiple_of(8) {
            return None;
        }
        self.0.access(Mfn::new(a >> 12)?)?;
        let mut b = [0u8; 8];
        self.0.read(a, &mut b);
        Some(u64::from_le_bytes(b))
    }
    fn read_u32(&self, gpa: Gpa) -> Option<u32> {
        let a = gpa.as_u64();
        if !a.is_multiple_of(4) {
            return None;
        }
        self.0.access(Mfn::new(a >> 12)?)?;
        let mut b = [0u8; 4];
        self.0.read(a, &mut b);
        Some(u32::from_le_bytes(b))
    }
}


/// The machine address of `va`, and whether the domain may write its frame.
fn translate<M: MachineMem>(
    mem: &M,
    walk: &WalkCtx,
    va: u64,
    access: AccessKind,
) -> Result<(u64, bool), CopyError> {
    let ma = guest_walk::translate(walk, Gva::new(va), access, &Tables(mem))
        .map_err(|fault| CopyError::Walk { gva: va, fault })?;
    let unbacked = CopyError::Unbacked { gpa: ma.as_u64() };
    let writable = Mfn::new(ma.as_u64() >> 12)
        .and_then(|m| mem.access(m))
        .ok_or(unbacked)?;
    Ok((ma.as_u64(), writable))
}

fn check_range(gva: u64, len: usize) -> Result<(), CopyError> {
    if len == 0 || range_ok(gva, len) {
        Ok(())
    } else if gva.checked_add(len as u64 - 1).is_none() {
        Err(CopyError::Overflow)
    } else {
        Err(CopyError::Walk {
            gva,
            fault: WalkFault::NonCanonical,
        })
    }
}

/// Copies `buf.len()` bytes from the guest's `gva`.
pub fn copy_from_guest<M: MachineMem>(
    mem: &M,
    walk: &WalkCtx,
    gva: u64,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    check_range(gva, buf.len())?;
    for (va, off, n) in pages(gva, buf.len()) {
        let (ma, _) = translate(mem, walk, va, AccessKind::Read)?;
        mem.read(ma, &mut buf[off..off + n]);
    }
    Ok(())
}

/// Copies `data` to the guest's `gva`. Every page is checked first; on error
/// nothing has been written.
pub fn copy_to_guest<M: MachineMem>(
    mem: &mut M,
    walk: &WalkCtx,
    gva: u64,
    data: &[u8],
) -> Result<(), CopyError> {
    check_range(gva, data.len())?;
    for (va, _, _) in pages(gva, data.len()) {
        let (ma, writable) = translate(mem, walk, va, AccessKind::Write)?;
        if !writable {
            return Err(CopyError::ReadOnly { gpa: ma });
        }
    }
    for (va, off, n) in pages(gva, data.len()) {
        let (ma, _) = translate(mem, walk, va, AccessKind::Write)?;
        mem.write(ma, &data[off..off + n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_walk::PagingMode;
    use std::collections::BTreeMap;

    /// Frames 1..=8 are the domain's (5 read-only to keel's writes: a page
    /// table), frame 9 is not.
    struct Mem {
        frames: BTreeMap<u64, [u8; 4096]>,
    }

    impl Mem {
        fn entry(&mut self, frame: u64, index: usize, value: u64) {
            let f = self.frames.entry(frame).or_insert([0; 4096]);
            f[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
    }

    impl MachineMem for Mem {
        fn access(&self, mfn: Mfn) -> Option<bool> {
            match mfn.as_u64() {
                5 => Some(false),
                1..=8 => Some(true),
                _ => None,
            }
        }
        fn read(&self, maddr: u64, buf: &mut [u8]) {
            let f = self
                .frames
                .get(&(maddr >> 12))
                .copied()
                .unwrap_or([0; 4096]);
            let o = (maddr & 0xFFF) as usize;
            buf.copy_from_slice(&f[o..o + buf.len()]);
        }
        fn write(&mut self, maddr: u64, data: &[u8]) {
            let f = self.frames.entry(maddr >> 12).or_insert([0; 4096]);
            let o = (maddr & 0xFFF) as usize;
            f[o..o + data.len()].copy_from_slice(data);
        }
    }

    const P_RW_U: u64 = 0b111;

    /// L4 in frame 1 -> L3 in 2 -> L2 in 3 -> L1 in 4, mapping va 0x0 to frame
    /// 6, 0x1000 to frame 5 (writable entry, but a table), 0x2000 to frame 9
    /// (not the domain's), 0x3000 to frame 7 read-only; and L4 slot 256 (keel's)
    /// pointing at the same L3.
    fn setup() -> (Mem, WalkCtx) {
        let mut m = Mem {
            frames: BTreeMap::new(),
        };
        m.entry(1, 0, 0x2000 | P_RW_U);
        m.entry(1, 256, 0x2000 | P_RW_U);
        m.entry(2, 0, 0x3000 | P_RW_U);
        m.entry(3, 0, 0x4000 | P_RW_U);
        m.entry(4, 0, 0x6000 | P_RW_U);
        m.entry(4, 1, 0x5000 | P_RW_U);
        m.entry(4, 2, 0x9000 | P_RW_U);
        m.entry(4, 3, 0x7000 | 0b101);
        m.entry(6, 0, 0x1122_3344_5566_7788);
        let walk = WalkCtx {
            mode: PagingMode::Long4,
            cr3: 0x1000,
            nxe: true,
            wp: true,
        };
        (m, walk)
    }

    #[test]
    fn reads_and_writes_the_domains_frames() {
        let (mut m, w) = setup();
        let mut b = [0u8; 8];
        copy_from_guest(&m, &w, 0, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
        copy_to_guest(&mut m, &w, 0x10, &[1, 2, 3]).unwrap();
        let mut c = [0u8; 3];
        copy_from_guest(&m, &w, 0x10, &mut c).unwrap();
        assert_eq!(c, [1, 2, 3]);
    }

    #[test]
    fn keels_range_and_non_canonical_addresses_are_refused_before_any_walk() {
        let (m, w) = setup();
        let mut b = [0u8; 8];
        // Slot 256 maps the same tables, but is keel's.
        for va in [
            0xFFFF_8000_0000_0000u64,
            0xFFFF_87FF_FFFF_FFF8,
            0x0000_8000_0000_0000,
        ] {
            assert!(matches!(
                copy_from_guest(&m, &w, va, &mut b),
                Err(CopyError::Walk {
                    fault: WalkFault::NonCanonical,
                    ..
                })
            ));
        }
        // A range that starts below the hole and ends above it.
        assert!(copy_from_guest(&m, &w, 0x7FFF_FFFF_FFFC, &mut b).is_err());
        assert_eq!(
            copy_from_guest(&m, &w, u64::MAX - 3, &mut b),
            Err(CopyError::Overflow)
        );
        assert!(range_ok(0, 0) && range_ok(HYPERVISOR_VIRT_END, 8));
    }

    #[test]
    fn foreign_frames_and_keel_only_frames_are_refused() {
        let (mut m, w) = setup();
        let mut b = [0u8; 8];
        assert_eq!(
            copy_from_guest(&m, &w, 0x2000, &mut b),
            Err(CopyError::Unbacked { gpa: 0x9000 })
        );
        // Readable, but a page table: no write through keel.
        copy_from_guest(&m, &w, 0x1000, &mut b).unwrap();
        assert_eq!(
            copy_to_guest(&mut m, &w, 0x1000, &[1]),
            Err(CopyError::ReadOnly { gpa: 0x5000 })
        );
        // A read-only mapping: the walk refuses the write.
        assert!(matches!(
            copy_to_guest(&mut m, &w, 0x3000, &[1]),
            Err(CopyError::Walk { .. })
        ));
        // Nothing of a refused multi-page write is written.
        assert!(copy_to_guest(&mut m, &w, 0xFFC, &[9; 8]).is_err());
        copy_from_guest(&m, &w, 0xFF8, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
    }

    #[test]
    fn a_table_outside_the_domain_ends_the_walk() {
        let (mut m, w) = setup();
        m.entry(3, 1, 0x9000 | P_RW_U); // an L2 entry pointing at a foreign "L1"
        let mut b = [0u8; 1];
        assert!(matches!(
            copy_from_guest(&m, &w, 0x20_0000, &mut b),
            Err(CopyError::Walk { .. })
        ));
    }
}
