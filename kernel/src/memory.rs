//! Memory bring-up glue: the memory map from the boot loader, the frame allocator,
//! keel's own page tables, and the heap. The logic lives in `mm`; this file feeds it
//! real memory and is the only place that turns physical addresses into references.
//!
//! Order matters: everything the boot loader placed in memory and keel's own image
//! are reserved before the allocator exists, so no frame holding them is handed out.
//!
//! # Locking
//! The frame allocator and the heap each sit behind one spin lock, taken by any
//! CPU, never in interrupt context and never while holding the other (the heap's
//! lock is held only inside `alloc`/`dealloc`). The memory map's lock is taken
//! only during boot, on the boot CPU.

use core::fmt;

use keel_arch::image::ImageLayout;
use keel_arch::paging::{DirectMapTables, FIXMAP_LAPIC};
use keel_builder::bootinfo::{BootInfo, MemKind, Occupant};
use keel_mm::frame::{FrameAllocator, FrameError};
use keel_mm::layout::directmap_va;
use keel_mm::memmap::{MemMapError, MemoryMap, RegionKind};
use keel_mm::paging::{MapError, PageSize, PageTableBuilder, PteFlags};
use keel_mm::{Hpa, Mfn};
use linked_list_allocator::LockedHeap;
use spin::Mutex;

/// 4 GiB: what the boot page tables' direct map reaches.
const LOW_4G: u64 = 1 << 32;
/// The first frame above [`LOW_4G`].
const FRAME_4G: Mfn = match Mfn::new(LOW_4G >> 12) {
    Some(m) => m,
    None => panic!("4 GiB is a valid frame number"),
};
/// keel's heap (metadata only: guests' memory never comes from it).
const HEAP_BYTES: u64 = 8 << 20;

static MEMMAP: Mutex<MemoryMap> = Mutex::new(MemoryMap::new());
/// The frame allocator, once [`init`] has run.
pub static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

/// The page below 1 MiB reserved for starting APs (0: none could be found).
static AP_TRAMPOLINE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The page APs start in, if one was reserved.
pub fn ap_trampoline() -> Option<u64> {
    match AP_TRAMPOLINE.load(core::sync::atomic::Ordering::Relaxed) {
        0 => None,
        t => Some(t),
    }
}

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Why memory bring-up failed. The variant's doc is the message.
#[derive(Debug)]
pub enum MemoryError {
    /// the memory map could not be built
    Map(MemMapError),
    /// no room below 4 GiB for the frame allocator's bitmap
    NoRoomForBitmap,
    /// the frame allocator could not be set up
    Frames(FrameError),
    /// keel's page tables could not be built
    Paging(MapError),
    /// not enough memory for keel's heap
    NoHeap,
    /// the frame allocator is not set up yet (init order bug)
    FramesNotReady,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::Map(e) => write!(f, "memory map: {e}"),
            MemoryError::NoRoomForBitmap => {
                f.write_str("no room below 4 GiB for the frame allocator's bitmap")
            }
            MemoryError::Frames(e) => write!(f, "frame allocator: {e}"),
            MemoryError::Paging(e) => write!(f, "page tables: {e}"),
            MemoryError::NoHeap => f.write_str("not enough memory for keel's heap"),
            MemoryError::FramesNotReady => {
                f.write_str("the frame allocator is not set up yet (init order bug)")
            }
        }
    }
}

/// What memory bring-up found, for the banner.
pub struct MemoryReport {
    pub usable_bytes: u64,
    pub free_frames: u64,
}

fn region_kind(k: MemKind) -> RegionKind {
    match k {
        MemKind::Usable => RegionKind::Usable,
        MemKind::Reserved => RegionKind::Reserved,
        MemKind::AcpiReclaimable => RegionKind::AcpiReclaimable,
        MemKind::AcpiNvs => RegionKind::AcpiNvs,
        MemKind::Defective => RegionKind::Defective,
    }
}

/// Builds the memory map and the frame allocator.
pub fn init(boot: &BootInfo<'_>, image: &ImageLayout) -> Result<MemoryReport, MemoryError> {
    let mut map = MEMMAP.lock();
    for r in boot.regions() {
        map.add(r.start, r.len, region_kind(r.kind))
            .map_err(MemoryError::Map)?;
    }
    map.reserve(
        image.phys.0,
        image.phys.1 - image.phys.0,
        RegionKind::Kernel,
    )
    .map_err(MemoryError::Map)?;
    for r in boot.reserved() {
        let kind = match r.what {
            Occupant::BootInfo => RegionKind::BootInfo,
            Occupant::Module => RegionKind::Module,
        };
        map.reserve(r.start, r.end - r.start, kind)
            .map_err(MemoryError::Map)?;
    }
    // The page APs start in (real mode: below 1 MiB). None free: keel runs on the
    // boot CPU alone, and says so when it brings CPUs up.
    if let Some(t) = map.find_free(4096, 4096, 0x10_0000) {
        map.reserve(t.as_u64(), 4096, RegionKind::ApTrampoline)
            .map_err(MemoryError::Map)?;
        AP_TRAMPOLINE.store(t.as_u64(), core::sync::atomic::Ordering::Relaxed);
    }
    let words = FrameAllocator::storage_words_for(&map);
    let bytes = (words as u64 * 8).next_multiple_of(4096);
    let storage_pa = map
        .find_free(bytes, 4096, LOW_4G)
        .ok_or(MemoryError::NoRoomForBitmap)?;
    map.reserve(storage_pa.as_u64(), bytes, RegionKind::AllocatorMetadata)
        .map_err(MemoryError::Map)?;
    // SAFETY: [storage_pa, +bytes) is usable RAM below 4 GiB (so mapped by the boot
    // direct map and by keel's own), now reserved as AllocatorMetadata so nothing else
    // will ever own it; it lives for as long as keel runs.
    let storage =
        unsafe { core::slice::from_raw_parts_mut(directmap_va(storage_pa) as *mut u64, words) };
    let frames = FrameAllocator::new(&*map, storage).map_err(MemoryError::Frames)?;
    let report = MemoryReport {
        usable_bytes: map.usable_bytes(),
        free_frames: frames.free_frames(),
    };
    *FRAMES.lock() = Some(frames);
    Ok(report)
}

/// Builds keel's own address space and switches to it: the direct map of the low
/// 4 GiB and of every range in the memory map above it (WB, NX where the CPU has
/// it; 1 GiB pages only where it has those, else 2 MiB: a CPU without them faults
/// on the PS bit of a PDPT entry as a reserved bit), the image with
/// per-section permissions (text RX, rodata R, data/bss RW) and an unmapped guard page
/// below the boot stack, and the xAPIC page in the fixmap (UC) when `xapic_phys` is
/// given. The identity map and the `.boot` section are left behind.
pub fn switch_address_space(
    image: &ImageLayout,
    nx: bool,
    page_1g: bool,
    xapic_phys: Option<u64>,
) -> Result<(), MemoryError> {
    let map = MEMMAP.lock();
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().ok_or(MemoryError::FramesNotReady)?;
    // SAFETY: the frames come from the allocator (so are ours alone) and below 4 GiB
    // (so reachable through the boot direct map while the tables are built, and
    // through the new direct map after).
    let tables = unsafe {
        DirectMapTables::new(|| frames.alloc_below(1, 1, FRAME_4G).ok().map(|m| m.hpa()))
    };
    let mut pt = PageTableBuilder::new(tables).map_err(MemoryError::Paging)?;
    let nx_flag = if nx { PteFlags::NX } else { PteFlags::empty() };
    let rw = PteFlags::WRITABLE | nx_flag;
    let hpa = |a: u64| Hpa::new(a).ok_or(MemoryError::Paging(MapError::PhysOutOfRange));

    pt.map_range(directmap_va(hpa(0)?), hpa(0)?, LOW_4G, rw, page_1g)
        .map_err(MemoryError::Paging)?;
    for r in map.regions().iter().filter(|r| r.end > LOW_4G) {
        let start = r.start.max(LOW_4G) & !0xFFF;
        let end = r.end.next_multiple_of(4096);
        pt.map_range(
            directmap_va(hpa(start)?),
            hpa(start)?,
            end - start,
            rw,
            page_1g,
        )
        .map_err(MemoryError::Paging)?;
    }

    let to_phys = |va: u64| va - keel_mm::layout::IMAGE_VIRT_BASE;
    let mut map_section = |(start, end): (u64, u64), flags: PteFlags| -> Result<(), MemoryError> {
        if end > start {
            pt.map_range(start, hpa(to_phys(start))?, end - start, flags, false)
                .map_err(MemoryError::Paging)?;
        }
        Ok(())
    };
    map_section(image.text, PteFlags::empty())?;
    map_section(image.rodata, nx_flag)?;
    map_section(image.data, rw)?;
    // .bss with a hole for the boot stack's guard page.
    let guard_page = keel_arch::boot::boot_stack_guard();
    map_section((image.bss.0, guard_page), rw)?;
    map_section((guard_page + 4096, image.bss.1), rw)?;

    if let Some(apic) = xapic_phys {
        pt.map(
            FIXMAP_LAPIC,
            hpa(apic)?,
            PageSize::Size4K,
            rw | PteFlags::PCD | PteFlags::PWT,
        )
        .map_err(MemoryError::Paging)?;
    }
    let (root, _) = pt.into_inner();
    // SAFETY: the new tables map keel's text, rodata, data and bss (with the stacks,
    // the GDT, IDT and TSS), the direct map (the heap, the allocator bitmap, boot
    // information and modules, ACPI tables) and the device pages keel uses; nothing
    // keel touches from here on lives only in the identity map or `.boot`.
    unsafe { keel_arch::paging::activate(root) };
    Ok(())
}

/// Gives keel its heap, from the frame allocator.
pub fn init_heap() -> Result<(), MemoryError> {
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().ok_or(MemoryError::FramesNotReady)?;
    let first = frames
        .alloc_contiguous(HEAP_BYTES / 4096, 1)
        .map_err(|_| MemoryError::NoHeap)?;
    // SAFETY: the frames were just allocated for the heap alone and are mapped by the
    // direct map for as long as keel runs.
    unsafe {
        HEAP.lock()
            .init(directmap_va(first.hpa()) as *mut u8, HEAP_BYTES as usize)
    };
    Ok(())
}

/// Free frames right now.
pub fn free_frames() -> u64 {
    FRAMES.lock().as_ref().map_or(0, |f| f.free_frames())
}

/// The bytes of a module, through the direct map; `None` if the loader's range is
/// beyond what keel maps.
pub fn module_bytes(start: u64, len: u64) -> Option<&'static [u8]> {
    let end = start.checked_add(len)?;
    let va = keel_mm::layout::try_directmap_va(Hpa::new(start)?)?;
    keel_mm::layout::try_directmap_va(Hpa::new(end)?)?;
    // SAFETY: modules are reserved in the memory map (never allocated or written) and
    // every reserved range is covered by the direct map; the loader said the module
    // has `len` bytes, and the range was checked to be inside the direct map.
    Some(unsafe { core::slice::from_raw_parts(va as *const u8, len as usize) })
}

/// Zeroes `count` frames from `first`, which the caller has just allocated.
pub fn zero_frames(first: Mfn, count: u64) {
    // SAFETY: the frames were just allocated by the caller (nobody else holds them)
    // and the direct map covers all RAM.
    unsafe {
        core::ptr::write_bytes(
            directmap_va(first.hpa()) as *mut u8,
            0,
            (count * 4096) as usize,
        )
    };
}

/// A zeroed buffer of whole frames from the frame allocator, for a large transient
/// job (a decompressed kernel image) that the 8 MiB heap cannot hold. The frames go
/// back to the allocator when it drops.
pub struct ScratchBuffer {
    first: Mfn,
    frames: u64,
    len: usize,
}

impl ScratchBuffer {
    /// `len` bytes (rounded up to whole frames), physically contiguous; `None` if
    /// the allocator has no such run.
    pub fn new(len: usize) -> Option<ScratchBuffer> {
        let frames = (len as u64).div_ceil(4096).max(1);
        let first = FRAMES.lock().as_mut()?.alloc_contiguous(frames, 1).ok()?;
        zero_frames(first, frames);
        Some(ScratchBuffer { first, frames, len })
    }

    /// The buffer's bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the frames belong to this buffer alone until it drops (type
        // invariant), are mapped by the direct map, and hold at least `len` bytes;
        // the borrow of `self` keeps the slice from outliving them.
        unsafe {
            core::slice::from_raw_parts_mut(directmap_va(self.first.hpa()) as *mut u8, self.len)
        }
    }

    /// The buffer's bytes, read-only.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as for `as_mut_slice`.
        unsafe {
            core::slice::from_raw_parts(directmap_va(self.first.hpa()) as *const u8, self.len)
        }
    }
}

impl Drop for ScratchBuffer {
    fn drop(&mut self) {
        if let Some(f) = FRAMES.lock().as_mut()
            && let Err(e) = f.free_contiguous(self.first, self.frames)
        {
            log::error!("scratch buffer at {:?}: {e:?}", self.first);
        }
    }
}

/// Gives runs of frames (first, count) back to the allocator; a run it refuses is
/// logged (a keel bug: freeing what it does not own).
pub fn free_runs(runs: impl IntoIterator<Item = (Mfn, u64)>) {
    let mut g = FRAMES.lock();
    let Some(frames) = g.as_mut() else { return };
    for (first, count) in runs {
        if let Err(e) = frames.free_contiguous(first, count) {
            log::error!("freeing {count} frame(s) at {first:?}: {e}");
        }
    }
}

/// keel's frame allocator as a [`core::alloc::Allocator`], for data that grows
/// with a domain's memory and must not live on keel's small heap (the PV MMU's
/// per-frame state, a PV domain's p2m while it is built): each allocation is a
/// run of whole, zeroed frames reached through the direct map. It fails (never
/// panics) when the frame allocator cannot give the run.
///
/// # Locking
/// Takes the frame allocator's lock for each allocation and free: callers must
/// not hold it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameAlloc;

impl FrameAlloc {
    fn frames(layout: core::alloc::Layout) -> u64 {
        layout.size().div_ceil(4096) as u64
    }
}

// SAFETY: every non-empty block is a run of frames taken from the frame
// allocator, which gives each frame out once; it stays valid (mapped by the
// direct map, unused by anyone else) until `deallocate` gives the same run back.
// Copies of `FrameAlloc` share the one frame allocator, so a block may be freed
// through any of them. Alignment up to a page is met by every frame.
unsafe impl core::alloc::Allocator for FrameAlloc {
    fn allocate(
        &self,
        layout: core::alloc::Layout,
    ) -> Result<core::ptr::NonNull<[u8]>, core::alloc::AllocError> {
        use core::alloc::AllocError;
        if layout.align() > 4096 {
            return Err(AllocError);
        }
        let n = Self::frames(layout);
        if n == 0 {
            return Ok(core::ptr::NonNull::slice_from_raw_parts(layout.dangling_ptr(), 0));
        }
        let first = FRAMES
            .lock()
            .as_mut()
            .ok_or(AllocError)?
            .alloc_contiguous(n, 1)
            .map_err(|_| AllocError)?;
        zero_frames(first, n);
        let va = directmap_va(first.hpa());
        let ptr = core::ptr::NonNull::new(va as *mut u8).ok_or(AllocError)?;
        Ok(core::ptr::NonNull::slice_from_raw_parts(
            ptr,
            (n * 4096) as usize,
        ))
    }

    unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
        let n = Self::frames(layout);
        if n == 0 {
            return;
        }
        match keel_mm::layout::directmap_hpa(ptr.as_ptr() as u64) {
            Some(hpa) => free_runs([(hpa.mfn(), n)]),
            None => log::error!("FrameAlloc: freeing {ptr:p}, which is not in the direct map"),
        }
    }
}
