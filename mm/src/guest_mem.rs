//! Checked copies to and from a guest: the only way a guest pointer becomes memory
//! (Xen's `copy_from_guest` / `copy_to_guest`, `hvm_copy_{from,to}_guest_linear`).
//!
//! A guest hands keel guest-virtual addresses. Each is an allegation: it becomes a
//! host frame only after two translations, both of which can fail and both of which
//! are the guest's to control:
//!
//! 1. gva -> gpa through the guest's own page tables ([`guest_walk::translate`]), read
//!    through the p2m like any other guest memory;
//! 2. gpa -> mfn through the domain's p2m ([`P2m::translate`]), which also says
//!    whether the guest may read or write that frame.
//!
//! The host frame is then reached through [`FrameAccess`], which the kernel implements
//! over its direct map and the tests over a `HashMap`. Nothing here is `unsafe`, and
//! no pointer into host memory ever leaves this module.
//!
//! Invariants:
//! - Copies are split at every 4 KiB boundary of the address being translated
//!   (guest-virtual for `copy_*_guest`, guest-physical for [`GuestPhys`]) and each
//!   piece is translated on its own: contiguous guest-virtual memory is not contiguous
//!   guest-physical memory, nor guest-physical memory machine memory. Hence a
//!   `FrameAccess` call never crosses a host page.
//! - Writes are all or nothing as far as the checks go: every page is translated and
//!   checked for write access before the first byte is written, so a failing
//!   `copy_to_guest` or [`GuestPhys::write`] leaves the guest unchanged. (This is
//!   stronger than Xen, whose copies report how many bytes were left uncopied; there
//!   is never a partial result to report here.) A failing read leaves the buffer with
//!   unspecified contents.
//! - Zero-length copies succeed without translating anything, whatever the address.
//! - Errors name the first address that failed, in the space where it failed.
//!
//! Locking: a [`GuestPhys`] borrows the p2m shared, so the p2m cannot change while a
//! copy runs; the domain's p2m lock (held for reading) provides that on the target.
//!
//! Hazards:
//! - `copy_to_guest` walks the guest's tables twice (check, then copy) when the copy
//!   spans pages (within one page a single walk serves both). Between the two,
//!   another vCPU may change them, or the copy itself may, if the guest pointed the
//!   buffer at its own page tables. The second walk is still fully checked, so the
//!   worst case is a copy that fails part-way, or lands somewhere else, inside this
//!   guest's own writable RAM: the guest can only hurt itself.
//! - Guest memory is shared with the guest's other vCPUs while we copy; a value read
//!   twice may differ. Callers copy an argument in once and work on their copy.
//! - p2m table frames must never be guest RAM, or a guest write could edit the p2m
//!   under a [`GuestPhys`] that believes it immutable.

use crate::addr::{Gfn, Gpa, Gva, Hpa, PAGE_SIZE};
use crate::guest_walk::{self, AccessKind, GuestPhysRead, WalkCtx, WalkFault};
use crate::p2m::{P2m, SlptFormat};
use crate::paging::TableMemory;

/// Reaches host frames (the kernel implements it through its direct map). Calls never
/// cross a page boundary: callers split.
pub trait FrameAccess {
    fn read(&self, hpa: Hpa, buf: &mut [u8]);
    fn write(&mut self, hpa: Hpa, data: &[u8]);
    /// The little-endian u64 at 8-aligned `hpa` (a page-table entry): `read` of 8
    /// bytes, which an implementation may do in one load.
    fn read_u64(&self, hpa: Hpa) -> u64 {
        let mut b = [0; 8];
        self.read(hpa, &mut b);
        u64::from_le_bytes(b)
    }
}

/// Why a copy to or from a guest failed; the hypercall layer turns all of them into
/// `EFAULT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum CopyError {
    /// guest page tables do not map {gva:#x}: {fault}
    Walk { gva: u64, fault: WalkFault },
    /// guest-physical {gpa:#x} is not RAM of this domain
    Unbacked { gpa: u64 },
    /// guest-physical {gpa:#x} is read-only to the guest
    ReadOnly { gpa: u64 },
    /// the range wraps around the address space
    Overflow,
}

/// A domain's guest-physical memory: its p2m and a way to reach host frames.
///
/// It borrows both: the p2m shared (so it cannot change under a copy) and the frame
/// access exclusively (so that writes need `&mut`). Build one per operation:
/// `GuestPhys::new(&domain.p2m, &mut direct_map)`.
pub struct GuestPhys<'a, M: TableMemory, F: SlptFormat, A: FrameAccess> {
    pub p2m: &'a P2m<M, F>,
    pub frames: &'a mut A,
}

/// Splits `[start, start + len)` at 4 KiB boundaries into (address, offset into the
/// buffer, length). The caller has checked that the range does not wrap.
pub(crate) fn pages(start: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut off = 0;
    core::iter::from_fn(move || {
        if off >= len {
            return None;
        }
        let addr = start + off as u64;
        let n = ((PAGE_SIZE - addr % PAGE_SIZE) as usize).min(len - off);
        let piece = (addr, off, n);
        off += n;
        Some(piece)
    })
}

/// `Overflow` if `[start, start + len)` runs past the top of the 64-bit space.
fn check_wrap(start: u64, len: usize) -> Result<(), CopyError> {
    match len {
        0 => Ok(()),
        _ => start
            .checked_add(len as u64 - 1)
            .map(|_| ())
            .ok_or(CopyError::Overflow),
    }
}

/// Bytes of zeros for `zero`, a page at a time.
static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

impl<'a, M: TableMemory, F: SlptFormat, A: FrameAccess> GuestPhys<'a, M, F, A> {
    pub fn new(p2m: &'a P2m<M, F>, frames: &'a mut A) -> Self {
        GuestPhys { p2m, frames }
    }

    /// The host address backing guest-physical `gpa`, if the guest may read it (and
    /// write it, if `write`).
    fn backing(&self, gpa: u64, write: bool) -> Result<Hpa, CopyError> {
        let unbacked = CopyError::Unbacked { gpa };
        let gfn = Gfn::new(gpa >> PAGE_SIZE.trailing_zeros()).ok_or(unbacked)?;
        let (mfn, access) = self.p2m.translate(gfn).ok_or(unbacked)?;
        if !access.read {
            return Err(unbacked);
        }
        if write && !access.write {
            return Err(CopyError::ReadOnly { gpa });
        }
        mfn.hpa().checked_add(gpa % PAGE_SIZE).ok_or(unbacked)
    }

    /// Reads `buf.len()` bytes at `gpa`; every page must be mapped readable.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), CopyError> {
        let at = gpa.as_u64();
        if !buf.is_empty() && at % PAGE_SIZE + buf.len() as u64 <= PAGE_SIZE {
            // Within one page (most hypercall arguments, instruction fetches): no
            // splitting. Page-table entries take `read_u64`'s own path.
            let hpa = self.backing(at, false)?;
            self.frames.read(hpa, buf);
            return Ok(());
        }
        check_wrap(gpa.as_u64(), buf.len())?;
        for (at, off, n) in pages(gpa.as_u64(), buf.len()) {
            let hpa = self.backing(at, false)?;
            self.frames.read(hpa, &mut buf[off..off + n]);
        }
        Ok(())
    }

    /// Writes `data` at `gpa`; every page must be mapped writable, which is checked
    /// for all of them before anything is written.
    pub fn write(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), CopyError> {
        self.write_with(gpa, data.len(), |off, n| &data[off..off + n])
    }

    /// Writes `len` zero bytes at `gpa`, with the checks of [`write`](Self::write).
    pub fn zero(&mut self, gpa: Gpa, len: usize) -> Result<(), CopyError> {
        self.write_with(gpa, len, |_, n| &ZEROS[..n])
    }

    /// Checks then writes `[gpa, gpa + len)`, taking each page's bytes (offset in
    /// the range, length) from `bytes`.
    fn write_with<'d>(
        &mut self,
        gpa: Gpa,
        len: usize,
        bytes: impl Fn(usize, usize) -> &'d [u8],
    ) -> Result<(), CopyError> {
        check_wrap(gpa.as_u64(), len)?;
        for (at, _, _) in pages(gpa.as_u64(), len) {
            self.backing(at, true)?;
        }
        for (at, off, n) in pages(gpa.as_u64(), len) {
            let hpa = self.backing(at, true)?;
            self.frames.write(hpa, bytes(off, n));
        }
        Ok(())
    }
}

/// The walker reads guest page tables as ordinary guest RAM.
impl<M: TableMemory, F: SlptFormat, A: FrameAccess> GuestPhysRead for GuestPhys<'_, M, F, A> {
    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        if gpa.as_u64().is_multiple_of(8) {
            // Naturally aligned, so inside one page: what `read` would do, in one go.
            return Some(
                self.frames
                    .read_u64(self.backing(gpa.as_u64(), false).ok()?),
            );
        }
        let mut b = [0; 8];
        self.read(gpa, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
    fn read_u32(&self, gpa: Gpa) -> Option<u32> {
        let mut b = [0; 4];
        self.read(gpa, &mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }
}

/// The guest-physical address of `va` for `access`, or the walk error for it.
fn walk<M: TableMemory, F: SlptFormat, A: FrameAccess>(
    mem: &GuestPhys<'_, M, F, A>,
    ctx: &WalkCtx,
    va: u64,
    access: AccessKind,
) -> Result<Gpa, CopyError> {
    guest_walk::translate(ctx, Gva::new(va), access, mem)
        .map_err(|fault| CopyError::Walk { gva: va, fault })
}

/// Copies `buf.len()` bytes from guest-virtual `gva` (Xen `copy_from_guest`).
pub fn copy_from_guest<M: TableMemory, F: SlptFormat, A: FrameAccess>(
    mem: &GuestPhys<'_, M, F, A>,
    ctx: &WalkCtx,
    gva: Gva,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    check_wrap(gva.as_u64(), buf.len())?;
    for (va, off, n) in pages(gva.as_u64(), buf.len()) {
        let gpa = walk(mem, ctx, va, AccessKind::Read)?;
        mem.read(gpa, &mut buf[off..off + n])?;
    }
    Ok(())
}

/// Copies `data` to guest-virtual `gva` (Xen `copy_to_guest`). Every page is
/// translated and checked writable first; on error nothing has been written.
pub fn copy_to_guest<M: TableMemory, F: SlptFormat, A: FrameAccess>(
    mem: &mut GuestPhys<'_, M, F, A>,
    ctx: &WalkCtx,
    gva: Gva,
    data: &[u8],
) -> Result<(), CopyError> {
    check_wrap(gva.as_u64(), data.len())?;
    let va = gva.as_u64();
    if !data.is_empty() && va % PAGE_SIZE + data.len() as u64 <= PAGE_SIZE {
        // One page: one walk serves the check and the copy (`write` checks first).
        let gpa = walk(mem, ctx, va, AccessKind::Write)?;
        return mem.write(gpa, data);
    }
    for (va, _, _) in pages(gva.as_u64(), data.len()) {
        let gpa = walk(mem, ctx, va, AccessKind::Write)?;
        mem.backing(gpa.as_u64(), true)?;
    }
    for (va, off, n) in pages(gva.as_u64(), data.len()) {
        let gpa = walk(mem, ctx, va, AccessKind::Write)?;
        mem.write(gpa, &data[off..off + n])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::CopyError::*;
    use super::*;
    use crate::addr::Mfn;
    use crate::guest_walk::PagingMode::{self, *};
    use crate::p2m::Access;
    use crate::p2m::fake::{FakeFormat, FakeP2m, FakeTables, p2m};
    use crate::paging::PageSize;

    /// Host frames by mfn; absent frames read as zero.
    #[derive(Default)]
    struct Frames(HashMap<u64, [u8; 4096]>);

    impl FrameAccess for Frames {
        fn read(&self, hpa: Hpa, buf: &mut [u8]) {
            let o = (hpa.as_u64() % 4096) as usize;
            assert!(o + buf.len() <= 4096, "read crosses a page");
            match self.0.get(&hpa.mfn().as_u64()) {
                Some(f) => buf.copy_from_slice(&f[o..o + buf.len()]),
                None => buf.fill(0),
            }
        }
        fn write(&mut self, hpa: Hpa, data: &[u8]) {
            let o = (hpa.as_u64() % 4096) as usize;
            assert!(o + data.len() <= 4096, "write crosses a page");
            let f = self.0.entry(hpa.mfn().as_u64()).or_insert([0; 4096]);
            f[o..o + data.len()].copy_from_slice(data);
        }
    }

    impl Frames {
        fn byte(&self, mfn: u64, off: usize) -> u8 {
            self.0.get(&mfn).map_or(0, |f| f[off])
        }
    }

    type Mem<'a> = GuestPhys<'a, FakeTables, FakeFormat, Frames>;

    /// Guest RAM: gfns 0..0x100 -> mfns 0x1000.. (RW); gfn 0x100 -> mfn 0x2000 (R);
    /// gfns above are holes; p2m limit 0x1000.
    const RAM_MFN: u64 = 0x1000;
    const RO_GFN: u64 = 0x100;

    fn domain() -> FakeP2m {
        let mut p = p2m(64, PageSize::Size2M, 0x1000);
        p.map(gfn(0), Mfn::new(RAM_MFN).unwrap(), 0x100, Access::RWX)
            .unwrap();
        p.map(gfn(RO_GFN), Mfn::new(0x2000).unwrap(), 1, Access::R)
            .unwrap();
        p
    }

    fn gfn(g: u64) -> Gfn {
        Gfn::new(g).unwrap()
    }
    fn gpa(a: u64) -> Gpa {
        Gpa::new(a).unwrap()
    }
    fn hpa_byte(frames: &Frames, gpa: u64) -> u8 {
        frames.byte(RAM_MFN + (gpa >> 12), (gpa & 0xFFF) as usize)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 1) as u8).collect()
    }

    #[test]
    fn phys_read_write_across_pages() {
        let p = domain();
        let mut frames = Frames::default();
        let mut m = GuestPhys::new(&p, &mut frames);
        let data = pattern(0x1800);
        m.write(gpa(0x3F00), &data).unwrap();
        let mut back = vec![0; 0x1800];
        m.read(gpa(0x3F00), &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(hpa_byte(&frames, 0x3F00), data[0]);
        assert_eq!(hpa_byte(&frames, 0x4000), data[0x100]);
        assert_eq!(frames.byte(RAM_MFN + 5, 0x6FF), data[0x17FF]);
    }

    #[test]
    fn phys_errors_and_atomic_writes() {
        let p = domain();
        let mut frames = Frames::default();
        let mut m = GuestPhys::new(&p, &mut frames);
        let last_ram = RO_GFN * 4096 - 8;
        // Runs into the read-only page: nothing written, not even the first page.
        assert_eq!(
            m.write(gpa(last_ram), &[1; 16]),
            Err(ReadOnly { gpa: RO_GFN * 4096 })
        );
        // Reading it is fine.
        let mut buf = [0xAA; 16];
        m.read(gpa(last_ram), &mut buf).unwrap();
        // A hole, beyond the limit, and beyond the physical address space.
        let hole = (RO_GFN + 1) * 4096;
        assert_eq!(m.read(gpa(hole - 1), &mut buf), Err(Unbacked { gpa: hole }));
        assert_eq!(
            m.zero(gpa(0x1000 * 4096), 1),
            Err(Unbacked { gpa: 0x1000 * 4096 })
        );
        let top = (1 << 52) - 4;
        assert_eq!(m.read(gpa(top), &mut buf), Err(Unbacked { gpa: top }));
        assert_eq!(m.read(gpa(top), &mut []), Ok(()), "zero length");
        assert!(frames.0.is_empty(), "no frame written");
    }

    #[test]
    fn phys_zero_and_walker_reads() {
        let p = domain();
        let mut frames = Frames::default();
        let mut m = GuestPhys::new(&p, &mut frames);
        m.write(gpa(0x2000), &[0xFF; 0x3000]).unwrap();
        m.zero(gpa(0x2010), 0x2000).unwrap();
        let mut buf = [0; 0x3000];
        m.read(gpa(0x2000), &mut buf).unwrap();
        assert!(buf[..0x10].iter().all(|&b| b == 0xFF));
        assert!(buf[0x10..0x2010].iter().all(|&b| b == 0));
        assert!(buf[0x2010..].iter().all(|&b| b == 0xFF));
        m.write(gpa(0x5008), &0x1122_3344_5566_7788u64.to_le_bytes())
            .unwrap();
        assert_eq!(m.read_u64(gpa(0x5008)), Some(0x1122_3344_5566_7788));
        assert_eq!(m.read_u32(gpa(0x500C)), Some(0x1122_3344));
        assert_eq!(m.read_u64(gpa(0x200_0000)), None);
    }

    // Long mode guest: PML4 at gpa 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, mapping
    // gva 0x4000_0000 + i * 4 KiB per `layout`.
    const GVA: u64 = 0x4000_0000;

    /// PTEs of the gva pages: 0 -> gpa 0x10000 (RW), 1 -> 0x7000 (RW), 2 -> not
    /// present, 3 -> RO_GFN (RW in the guest, R in the p2m), 4 -> hole gfn 0x200,
    /// 5 -> gpa 0x9000 read-only in the guest.
    fn long_guest(m: &mut Mem<'_>) -> WalkCtx {
        let pw = 0b11;
        let set = |m: &mut Mem<'_>, a: u64, v: u64| m.write(gpa(a), &v.to_le_bytes()).unwrap();
        set(m, 0x1000, 0x2000 | pw);
        set(m, 0x2000 + 8, 0x3000 | pw); // PDPT[1]: 1 GiB
        set(m, 0x3000, 0x4000 | pw);
        for (i, pte) in [
            0x10000 | pw,
            0x7000 | pw,
            0,
            RO_GFN << 12 | pw,
            0x200 << 12 | pw,
            0x9000 | 1,
        ]
        .into_iter()
        .enumerate()
        {
            set(m, 0x4000 + 8 * i as u64, pte);
        }
        WalkCtx {
            mode: Long4,
            cr3: 0x1000,
            nxe: true,
            wp: true,
        }
    }

    #[test]
    fn copies_split_at_guest_virtual_pages() {
        let p = domain();
        let mut frames = Frames::default();
        let mut m = GuestPhys::new(&p, &mut frames);
        let ctx = long_guest(&mut m);
        let data = pattern(0x1080);
        copy_to_guest(&mut m, &ctx, Gva::new(GVA + 0xF80), &data).unwrap();
        let mut back = vec![0; 0x1080];
        copy_from_guest(&m, &ctx, Gva::new(GVA + 0xF80), &mut back).unwrap();
        assert_eq!(back, data);
        // Not contiguous in guest-physical memory: 0x10F80.. then 0x7000..
        assert_eq!(hpa_byte(&frames, 0x10F80), data[0]);
        assert_eq!(hpa_byte(&frames, 0x10FFF), data[0x7F]);
        assert_eq!(hpa_byte(&frames, 0x7000), data[0x80]);
        assert_eq!(hpa_byte(&frames, 0x7FFF), data[0x107F]);
        assert_eq!(hpa_byte(&frames, 0x11000), 0);
    }

    #[test]
    fn copy_errors_name_the_first_bad_address_and_write_nothing() {
        let p = domain();
        let mut frames = Frames::default();
        let mut m = GuestPhys::new(&p, &mut frames);
        let ctx = long_guest(&mut m);
        let before = m.frames.0.clone();
        let not_present = CopyError::Walk {
            gva: GVA + 0x2000,
            fault: WalkFault::NotPresent { level: 1 },
        };
        // Second page unmapped in the guest: the first is not written either.
        assert_eq!(
            copy_to_guest(&mut m, &ctx, Gva::new(GVA + 0x1F00), &[1; 0x200]),
            Err(not_present)
        );
        let mut buf = [0; 0x200];
        assert_eq!(
            copy_from_guest(&m, &ctx, Gva::new(GVA + 0x1F00), &mut buf),
            Err(not_present)
        );
        // Guest maps it, p2m says read-only / hole.
        assert_eq!(
            copy_to_guest(&mut m, &ctx, Gva::new(GVA + 0x3FF0), &[1; 0x10]),
            Err(ReadOnly {
                gpa: RO_GFN << 12 | 0xFF0
            })
        );
        assert_eq!(
            copy_from_guest(&m, &ctx, Gva::new(GVA + 0x3FF0), &mut buf[..0x10]),
            Ok(())
        );
        assert_eq!(
            copy_from_guest(&m, &ctx, Gva::new(GVA + 0x4010), &mut buf[..0x10]),
            Err(Unbacked { gpa: 0x200_010 })
        );
        assert_eq!(
            copy_to_guest(&mut m, &ctx, Gva::new(GVA + 0x3000), &[1; 0x2000]),
            Err(ReadOnly { gpa: RO_GFN << 12 })
        );
        // Guest PTE read-only: honoured with CR0.WP, ignored without.
        assert_eq!(
            copy_to_guest(&mut m, &ctx, Gva::new(GVA + 0x5000), &[1; 4]),
            Err(CopyError::Walk {
                gva: GVA + 0x5000,
                fault: WalkFault::ReadOnly { level: 1 }
            })
        );
        assert!(m.frames.0 == before, "nothing written");
        let no_wp = WalkCtx { wp: false, ..ctx };
        copy_to_guest(&mut m, &no_wp, Gva::new(GVA + 0x5000), &[9; 4]).unwrap();
        assert_eq!(hpa_byte(&frames, 0x9003), 9);
    }

    #[test]
    fn wraparound_and_zero_length() {
        let p = domain();
        let mut frames = Frames::default();
        let mut m = GuestPhys::new(&p, &mut frames);
        let ctx = long_guest(&mut m);
        let mut buf = [0; 4];
        assert_eq!(
            copy_from_guest(&m, &ctx, Gva::new(u64::MAX - 1), &mut buf),
            Err(Overflow)
        );
        assert_eq!(
            copy_to_guest(&mut m, &ctx, Gva::new(u64::MAX - 2), &buf),
            Err(Overflow)
        );
        // Ending exactly at the top does not wrap; it just is not mapped.
        assert_eq!(
            copy_from_guest(&m, &ctx, Gva::new(u64::MAX - 3), &mut buf),
            Err(CopyError::Walk {
                gva: u64::MAX - 3,
                fault: WalkFault::NotPresent { level: 4 }
            })
        );
        // Zero length: nothing is translated, so even garbage succeeds.
        let broken = WalkCtx {
            cr3: 0xDEAD_0000,
            ..ctx
        };
        for va in [0x8000_0000_0000, u64::MAX, 0] {
            assert_eq!(copy_from_guest(&m, &broken, Gva::new(va), &mut []), Ok(()));
            assert_eq!(copy_to_guest(&mut m, &broken, Gva::new(va), &[]), Ok(()));
        }
        // Guest page tables outside guest RAM.
        assert_eq!(
            copy_from_guest(&m, &broken, Gva::new(GVA), &mut buf),
            Err(CopyError::Walk {
                gva: GVA,
                fault: WalkFault::TableUnbacked { gpa: 0xDEAD_0000 }
            })
        );
        assert_eq!(
            copy_from_guest(&m, &ctx, Gva::new(0x8000_0000_0000), &mut buf),
            Err(CopyError::Walk {
                gva: 0x8000_0000_0000,
                fault: WalkFault::NonCanonical
            })
        );
    }

    /// A round trip across a page boundary in each paging mode: the guest maps gva
    /// `va` and `va + 4K` to gpas 0x20000 and 0x30000 (with paging off, `va` is
    /// 0x20FF0 itself).
    #[test]
    fn every_paging_mode() {
        let va = 0x8040_0FF0u64;
        type Setup = (PagingMode, u64, u64, &'static [(u64, u64, usize)]);
        let setups: [Setup; 4] = [
            (Off, 0x20FF0, 0, &[]),
            (
                Bits32 { pse: false },
                va,
                0x1000,
                &[
                    (0x1000 + 0x201 * 4, 0x2003, 4), // PDE 0x201
                    (0x2000, 0x20003, 4),
                    (0x2004, 0x30003, 4),
                ],
            ),
            (
                Pae,
                va,
                0x1FE0,
                &[
                    (0x1FE0 + 2 * 8, 0x3001, 8), // PDPTE 2
                    (0x3000 + 2 * 8, 0x4003, 8), // PDE 2
                    (0x4000, 0x20003, 8),
                    (0x4008, 0x30003, 8),
                ],
            ),
            (
                Long4,
                va,
                0x1000,
                &[
                    (0x1000, 0x2003, 8),
                    (0x2000 + 2 * 8, 0x3003, 8),
                    (0x3000 + 2 * 8, 0x4003, 8),
                    (0x4000, 0x20003, 8),
                    (0x4008, 0x30003, 8),
                ],
            ),
        ];
        for (mode, va, cr3, entries) in setups {
            let p = domain();
            let mut frames = Frames::default();
            let mut m = GuestPhys::new(&p, &mut frames);
            for &(at, value, size) in entries {
                m.write(gpa(at), &value.to_le_bytes()[..size]).unwrap();
            }
            let ctx = WalkCtx {
                mode,
                cr3,
                nxe: true,
                wp: true,
            };
            let data = pattern(0x20);
            copy_to_guest(&mut m, &ctx, Gva::new(va), &data).unwrap();
            let mut back = [0; 0x20];
            copy_from_guest(&m, &ctx, Gva::new(va), &mut back).unwrap();
            assert_eq!(back.as_slice(), data.as_slice(), "{mode:?}");
            let second = if mode == Off { 0x21000 } else { 0x30000 };
            assert_eq!(hpa_byte(&frames, 0x20FF0), data[0], "{mode:?}");
            assert_eq!(hpa_byte(&frames, 0x20FFF), data[0xF], "{mode:?}");
            assert_eq!(hpa_byte(&frames, second), data[0x10], "{mode:?}");
        }
    }

    #[test]
    fn messages() {
        let e = CopyError::Walk {
            gva: 0x1000,
            fault: WalkFault::NotPresent { level: 1 },
        };
        assert_eq!(
            e.to_string(),
            "guest page tables do not map 0x1000: level-1 entry not present"
        );
        assert_eq!(
            ReadOnly { gpa: 0x5000 }.to_string(),
            "guest-physical 0x5000 is read-only to the guest"
        );
    }
}
