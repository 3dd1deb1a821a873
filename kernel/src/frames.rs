//! The direct-map view of machine frames: the one place the kernel turns a frame
//! keel owns into memory it reads and writes.
//!
//! A [`Frame`] names a 4 KiB machine frame keel allocated (for itself, or for a
//! domain: its RAM, shared_info, a grant-table frame, a console ring) and that stays
//! allocated while the `Frame` is used; making one is the `unsafe` step that argues
//! it. Everything after that is safe and bounds-checked: byte copies (a guest may
//! be writing the frame at the same time: keel only ever parses its copy), and
//! atomic words
//! for the fields keel and guests share (event bits, grant flags, ring indices,
//! pvclock versions), which must be read and written with the guest's concurrent
//! writes in mind.
//!
//! An out-of-frame or misaligned offset is a keel bug, not guest input (offsets
//! come from keel's own layouts or from checks made before), so it panics.
//!
//! # Locking
//! None: frames are plain memory; who may touch which frame when is the owner's
//! rule (a domain's lock, the grant table's pins).

use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use keel_mm::addr::{Hpa, Mfn};
use keel_mm::layout::directmap_va;

/// Bytes in a frame.
pub const FRAME_SIZE: usize = 4096;

/// One machine frame keel owns, reached through the direct map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    va: u64,
}

impl Frame {
    /// # Safety
    /// `mfn` is RAM keel allocated (so the direct map covers it), and it stays
    /// allocated for as long as this `Frame`, and every reference it hands out, is
    /// used.
    pub unsafe fn new(mfn: Mfn) -> Frame {
        Frame {
            va: directmap_va(mfn.hpa()),
        }
    }

    /// The frame holding `hpa`, and `hpa`'s offset in it.
    ///
    /// # Safety
    /// As for [`Frame::new`], for the frame holding `hpa`.
    pub unsafe fn containing(hpa: Hpa) -> (Frame, usize) {
        // SAFETY: the caller's contract is ours.
        let f = unsafe { Frame::new(hpa.mfn()) };
        (f, (hpa.as_u64() & 0xFFF) as usize)
    }

    fn at(&self, off: usize, len: usize, align: usize) -> u64 {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= FRAME_SIZE) && off.is_multiple_of(align),
            "frame access at {off:#x}+{len} (align {align}) is outside the frame"
        );
        self.va + off as u64
    }

    /// Copies `buf.len()` bytes out of the frame at `off`. The guest may change
    /// them meanwhile: what lands in `buf` is some mix of old and new bytes, which
    /// is all a byte copy promises (keel parses its own copy, never the frame).
    pub fn read(&self, off: usize, buf: &mut [u8]) {
        let src = self.at(off, buf.len(), 1) as *const u8;
        // SAFETY: inside the frame (checked by `at`), which is mapped and live
        // (type invariant); `buf` is keel's own memory, so they cannot overlap.
        unsafe { core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
    }

    /// Copies `data` into the frame at `off`.
    pub fn write(&self, off: usize, data: &[u8]) {
        let dst = self.at(off, data.len(), 1) as *mut u8;
        // SAFETY: as in `read`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    /// The byte at `off`, as an atomic.
    pub fn atomic_u8(&self, off: usize) -> &AtomicU8 {
        // SAFETY: in-frame (checked), mapped and live for as long as `self` is used
        // (type invariant, which the borrow carries).
        unsafe { AtomicU8::from_ptr(self.at(off, 1, 1) as *mut u8) }
    }

    /// The 2-aligned 16-bit word at `off`, as an atomic.
    pub fn atomic_u16(&self, off: usize) -> &AtomicU16 {
        // SAFETY: as in `atomic_u8`, 2-aligned (checked).
        unsafe { AtomicU16::from_ptr(self.at(off, 2, 2) as *mut u16) }
    }

    /// The 4-aligned 32-bit word at `off`, as an atomic.
    pub fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as in `atomic_u8`, 4-aligned (checked).
        unsafe { AtomicU32::from_ptr(self.at(off, 4, 4) as *mut u32) }
    }

    /// The 8-aligned 64-bit word at `off`, as an atomic.
    pub fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as in `atomic_u8`, 8-aligned (checked).
        unsafe { AtomicU64::from_ptr(self.at(off, 8, 8) as *mut u64) }
    }

    /// The 8-aligned 64-bit word at `off`, read once (volatile, not atomic: for
    /// page-table entries the guest owns, which keel only reads).
    pub fn read_u64(&self, off: usize) -> u64 {
        // SAFETY: as in `atomic_u8`, 8-aligned (checked).
        unsafe { (self.at(off, 8, 8) as *const u64).read_volatile() }
    }
}

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off` (the two
/// ranges may overlap: a copy within one frame).
pub fn copy(src: &Frame, src_off: usize, dst: &Frame, dst_off: usize, len: usize) {
    let s = src.at(src_off, len, 1);
    let d = dst.at(dst_off, len, 1);
    // SAFETY: both ranges lie inside live frames (checked; type invariant);
    // `copy` allows overlap.
    unsafe { core::ptr::copy(s as *const u8, d as *mut u8, len) };
}

/// Grant-table frames, reached through the direct map: the frame handles the grant
/// crate holds are machine frame numbers of frames keel allocated for a domain's
/// table (so they are RAM, and live while the table lists them).
pub struct GrantFrames;

impl GrantFrames {
    fn frame(frame: u64) -> Frame {
        // Every handle came from keel's allocator through the table's `alloc`, so
        // it is a valid frame number; anything else is a keel bug.
        let mfn = Mfn::new(frame)
            .unwrap_or_else(|| panic!("grant frame {frame:#x} is not a frame keel handed out"));
        // SAFETY: `frame` is a grant-table frame (see the type's doc): keel
        // allocated it for a domain's table, and it lives while the table lists it.
        unsafe { Frame::new(mfn) }
    }
}

impl keel_grant::FrameWords for GrantFrames {
    fn read_u64(&self, frame: u64, offset: usize) -> u64 {
        // Atomic: the granting guest writes its entries concurrently.
        Self::frame(frame)
            .atomic_u64(offset & 0xFF8)
            .load(core::sync::atomic::Ordering::Acquire)
    }

    fn cmpxchg_u32(&mut self, frame: u64, offset: usize, old: u32, new: u32) -> u32 {
        match Self::frame(frame)
            .atomic_u32(offset & 0xFFC)
            .compare_exchange(
                old,
                new,
                core::sync::atomic::Ordering::AcqRel,
                core::sync::atomic::Ordering::Acquire,
            ) {
            Ok(v) | Err(v) => v,
        }
    }

    fn write_u64(&mut self, frame: u64, offset: usize, value: u64) {
        Self::frame(frame)
            .atomic_u64(offset & 0xFF8)
            .store(value, Ordering::SeqCst);
    }

    fn or_u16_bits(&mut self, frame: u64, offset: usize, bits: u16) {
        // A locked OR: a full barrier, as the status protocol needs.
        Self::frame(frame)
            .atomic_u16(offset & 0xFFE)
            .fetch_or(bits, Ordering::SeqCst);
    }

    fn clear_u16_bits(&mut self, frame: u64, offset: usize, bits: u16) {
        Self::frame(frame)
            .atomic_u16(offset & 0xFFE)
            .fetch_and(!bits, core::sync::atomic::Ordering::AcqRel);
    }
}

/// Guest frames as FIFO event words (`keel_evtchn::FifoMem`): a handle is the
/// machine frame number of a frame of the domain's RAM that its event table
/// holds (a control block's or an event array page's). The domain keeps such a
/// frame while the table holds it (`hypercalls::is_special`), and the table
/// drops its handles before the domain's memory is freed.
pub struct GuestFrames;

impl GuestFrames {
    /// Runs `op` on the word at `offset` of `frame`.
    fn on<R>(frame: u64, offset: usize, op: impl FnOnce(&AtomicU32) -> R) -> R {
        let mfn = Mfn::new(frame)
            .unwrap_or_else(|| panic!("FIFO frame {frame:#x} is not a frame keel handed out"));
        // SAFETY: `frame` is a RAM frame of a live domain (see the type's docs),
        // reached through the direct map; the guest writes it concurrently,
        // hence atomics only.
        let f = unsafe { Frame::new(mfn) };
        // The crate's offsets are 4-aligned and below 4096; masking keeps a
        // slip inside the frame rather than panicking.
        op(f.atomic_u32(offset & 0xFFC))
    }
}

impl keel_evtchn::FifoMem for GuestFrames {
    fn load(&self, frame: u64, offset: usize) -> u32 {
        Self::on(frame, offset, |w| w.load(Ordering::SeqCst))
    }

    fn store(&self, frame: u64, offset: usize, val: u32) {
        Self::on(frame, offset, |w| w.store(val, Ordering::SeqCst));
    }

    fn fetch_or(&self, frame: u64, offset: usize, val: u32) -> u32 {
        Self::on(frame, offset, |w| w.fetch_or(val, Ordering::SeqCst))
    }

    fn fetch_and(&self, frame: u64, offset: usize, val: u32) -> u32 {
        Self::on(frame, offset, |w| w.fetch_and(val, Ordering::SeqCst))
    }

    fn compare_exchange(&self, frame: u64, offset: usize, current: u32, new: u32) -> Result<u32, u32> {
        Self::on(frame, offset, |w| {
            w.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
        })
    }
}
