//! The PV MMU: Xen's page types and reference counts, which let a paravirtualized
//! x86-64 guest kernel, running in ring 3, use page tables it builds itself
//! (Xen's `xen/arch/x86/mm.c` and `xen/arch/x86/pv/ro-page-fault.c`).
//!
//! # What
//!
//! A PV guest sees machine frames. It builds its page tables in its own frames and
//! asks keel to use them; keel must make sure they never give the guest more than
//! its own memory, and never a writable view of a page table, GDT or LDT (which
//! would let it map anything). Xen's answer, transcribed here, is a *type* per
//! frame ([`PageType`]: page table of a level, descriptor page, writable data) with
//! a *type count*: the frame may change type only while nobody uses it as the
//! current one. A table is *validated* when it gains its first reference of its
//! type (every present entry checked, and references taken on what the entries
//! point at), and *devalidated* when it loses its last (those references dropped).
//! Writable mappings take writable type references, so a frame cannot be a page
//! table and mapped writable at once. Besides, a *general* count per frame keeps it
//! the domain's while anything refers to it.
//!
//! - [`DomainFrames`]: one domain's frames and their [`PageInfo`] (owner implied,
//!   type, type count, general count, validated, pinned, linear counts), plus the
//!   operations ([`DomainFrames::mmu_update`], [`DomainFrames::mmuext_op`],
//!   [`DomainFrames::ptwr_emulate`], ...). Its per-frame state lives in memory
//!   from an allocator the kernel supplies (below, "Memory").
//! - [`PvVcpu`]: a vCPU's base pointers (references into its domain's frames) and
//!   LDT.
//! - [`PvMemory`]: how the operations reach the frames' contents and ask the
//!   kernel what it alone knows (I/O memory, its L4 template, TLB flushes), so all
//!   of this runs on the host against a fake.
//!
//! # Rules, and where they come from in Xen 4.17
//!
//! - L1 entries (Xen's `get_page_from_l1e`): no PWT/PCD/PAT unless the domain
//!   has I/O capabilities, no NX if the CPU has none (`l1_disallow_mask`); a frame
//!   of the domain takes a general reference, and a writable type reference if
//!   RW; a frame that is someone else's RAM is refused (EBUSY); I/O memory only as
//!   the kernel permits (EPERM otherwise), uncacheable, and read-only where it
//!   says so. Stored with Xen's adjustments (USER everywhere, the guest-kernel
//!   marker, GLOBAL for user pages).
//! - L2/L3/L4 entries (`get_page_from_l2e`..`l4e`): no PWT, PCD, GLOBAL, nor PSE,
//!   so no superpages (Xen 4.17 has no PV superpages); the target takes a type
//!   reference of the level below, validated recursively.
//! - Linear entries (`get_l*_linear_pagetable`): allowed, as in Xen by default
//!   (`pv-linear-pt`; [`Policy::linear_pt`] turns them off), read-only only, onto an
//!   already validated table of the same level, one level deep. An entry pointing
//!   at its own table takes no reference.
//! - L4 slots 256..=271 ([`entry::KEEL_L4_SLOTS`], Xen's `is_guest_l4_slot`): keel's.
//!   Never validated, never written by the guest (`KeelSlot`, EINVAL), filled from
//!   keel's template whenever an L4 is validated (`init_xen_l4_slots`).
//! - Updates (`mod_l1_entry`..`mod_l4_entry`): a change of accessed, dirty, user,
//!   global, NX or available bits only is written as is (the fast path; RW joins
//!   them in directories when linear page tables are off); otherwise the new
//!   entry's references are taken, the entry written, the old entry's dropped.
//!   `MMU_PT_UPDATE_PRESERVE_AD` keeps the A/D bits the hardware sets meanwhile.
//! - Types (`_get_page_type`, `_put_page_type`): a type changes only at type count
//!   zero; a table is validated on its 0→1 transition and devalidated on 1→0.
//! - Pins (`do_mmuext_op`): a pin is one type reference, at most one per frame.
//!
//! Errnos are Xen's for each failure ([`PvError::errno`]).
//!
//! # Invariants
//!
//! Between operations, for every frame of the domain (checked from scratch by the
//! property tests after every step):
//! - Its general count is the number of references held: allocation, pin, base
//!   pointers, present entries of validated tables pointing at it (but directory
//!   entries pointing at their own table), descriptor-page uses by the kernel.
//! - Its type count is the number of type references held: the same, minus the
//!   allocation and read-only L1 entries, plus a special frame's permanent one.
//! - A page table is validated iff its type count is non-zero; every entry of a
//!   validated table obeys the rules above; a pinned frame is a page table.
//! - No writable L1 entry of a validated table maps a page table or descriptor
//!   page: each maps a frame of type [`PageType::Writable`] (or permitted I/O).
//! - A table with linear entries is no linear target, and the linear counts are
//!   the numbers of such entries.
//! - A frame leaves the domain exactly when its general count reaches zero, and is
//!   handed back to the kernel exactly once ([`DomainFrames::pop_freed`]).
//! - A failed operation leaves every reference as it was (a frame with no type
//!   references may have another type).
//! - Nothing panics, whatever the guest writes or asks: a broken invariant found on
//!   the way is [`PvError::Inconsistent`], and the kernel crashes the domain.
//! - Only giving the domain a frame allocates; running out of memory there is
//!   [`PvError::NoMemory`] with nothing changed, and nothing else allocates.
//!
//! # Memory
//!
//! A frame's [`PageInfo`] takes 16 bytes, in chunks of 256 consecutive frames
//! (one 4 KiB block each, found through a sorted index of 16-byte entries): about
//! 16 bytes a frame for a domain whose frames come in runs (2 MiB for 512 MiB of
//! guest), at worst one 4 KiB chunk per frame for frames scattered 1 MiB apart.
//! Chunks and index come from the `A: core::alloc::Allocator` given to
//! [`DomainFrames::new_in`], not the global heap ([`DomainFrames::new`] uses the
//! heap, `Global`, for the tests and small domains); the heap holds the
//! [`DomainFrames`] itself, under 128 bytes, whatever the domain's size.
//!
//! The allocator's contract: `Allocator`'s own (blocks stay valid until freed;
//! any clone may free what another allocated, as each chunk keeps a clone), and
//! failure returned as `AllocError`, never `handle_alloc_error` (which would
//! stop keel). Requests are 4096 bytes for a chunk and, for the index, a block of
//! about 4 KiB that grows by doubling (8 KiB past 256 chunks, i.e. 256 MiB of
//! guest), so a frame allocator serves them with single frames and, rarely, a
//! few contiguous ones. Only [`DomainFrames::assign`] and
//! [`DomainFrames::assign_special`] allocate; freeing never does (the freed list
//! runs through the freed frames' own slots), and a chunk is given back when
//! [`DomainFrames::pop_freed`] empties its last slot, the index with the last
//! chunk, so a torn-down domain holds nothing. The allocator is used under the
//! domain's lock (below): it must not need that lock itself.
//!
//! # Locking
//!
//! None inside. One domain's page-type state, its [`DomainFrames`] and the
//! [`PvVcpu`] of each of its vCPUs, lives under that domain's lock, held across
//! each call and the [`PvMemory`] accesses and allocations it makes. Xen instead updates
//! `type_info` with compare-exchange and spins on tables being validated; a
//! per-domain lock makes that unnecessary (only this domain's own requests touch
//! its frames' types). References across domains (grant mappings of another
//! domain's frames, foreign mappings by a privileged domain) are not here yet;
//! they would take the two domains' locks in domid order.
//!
//! What runs *without* the lock, concurrently, is the domain itself: its other
//! vCPUs use the page tables (and the hardware sets accessed/dirty bits in them)
//! while an operation runs. Hence the hazards below.
//!
//! # Work per operation
//!
//! Bounded, but not small: one operation validates each frame of the domain at
//! most once and devalidates it at most once (a table is validated only on its
//! first type reference, and an unwinding only undoes what the same operation
//! did), and each of those visits 512 entries, with O(log chunks) work per entry:
//! at most 2 × 512 × (the domain's frames) entry visits. Tables nest at most five
//! deep while this happens (four levels, plus a linear entry's target during a
//! devalidation), each Rust frame a few words, so the stack use is small and
//! fixed. Xen splits such work with hypercall continuations (`-ERESTART`,
//! `PGT_partial`); keel does not yet (below). Everything else is O(log chunks)
//! (giving the domain a frame of a new chunk: O(chunks), an insertion in the index).
//!
//! # How the kernel uses this
//!
//! - Storage: a [`DomainFrames`] per PV domain, made with
//!   [`DomainFrames::new_in`] and an allocator handing out keel's frames (see
//!   "Memory"), and a [`PvVcpu`] per vCPU, under the domain's lock. Frames given
//!   to the domain go in with [`DomainFrames::assign`] (zeroed), keel's shared
//!   pages with [`DomainFrames::assign_special`]; `NoMemory` from either fails
//!   the populate request (ENOMEM) or the build. After every operation the kernel
//!   takes the
//!   freed frames ([`DomainFrames::pop_freed`]) and returns them to its allocator
//!   once the domain's pCPUs have flushed their TLBs.
//! - Guest access: [`PvMemory::read_entry`] / [`PvMemory::write_entry`] are single
//!   64-bit loads and stores, [`PvMemory::cmpxchg_entry`] a `lock cmpxchg`: the
//!   hardware walker sets bits in live tables concurrently.
//! - `mmu_update`: for each request in turn, copy it in (EFAULT stops the batch),
//!   call [`DomainFrames::mmu_update`], stop at the first error. Merge the
//!   requested flushes ([`Flush::merge`]) and perform them once after the loop,
//!   error or not (Xen flushes before returning, so before a multicall's next
//!   call), write the M2P
//!   entries [`MmuUpdateDone::MachPhys`] names as they come, and add the number of
//!   requests done to `*pdone` (Xen's `success_count`). To preempt between
//!   requests (never within one), flush, then continue the hypercall with the
//!   remaining count ORed with `MMU_UPDATE_PREEMPTED` (`abi::mmu`). `mmuext_op` is
//!   the same loop over [`DomainFrames::mmuext_op`], each [`MmuextAction`] carried
//!   out before the next operation.
//! - Flushes: [`Flush::Local`] is this pCPU; [`Flush::Domain`] every pCPU in the
//!   domain's dirty mask, this one included; [`PvMemory::before_type_change`] is
//!   a synchronous flush of the domain's other pCPUs (see the hazards).
//! - Writable page tables: on a write fault by the guest kernel where the guest's
//!   own L1 entry is present and read-only, and [`DomainFrames::is_ptwr_target`] of
//!   its frame, decode the instruction; a naturally aligned write (or `cmpxchg`)
//!   of at most 8 bytes within the faulting page goes to
//!   [`DomainFrames::ptwr_emulate`]; on any error, the #PF goes to the guest.
//! - `update_va_mapping`: walk the guest's page tables to the L1 and index, call
//!   [`DomainFrames::update_l1_entry`], then flush as `UVMF_*` says.
//! - Initial page tables (the domain builder's): they must map themselves
//!   read-only; pin the L4 ([`DomainFrames::pin`]), which validates the tree, and
//!   make it vCPU 0's base with [`DomainFrames::new_baseptr`].
//! - The domain's end: [`DomainFrames::destroy_pagetables`] per vCPU, descriptor
//!   pages put back, [`DomainFrames::relinquish`], then every frame has been freed.
//!
//! # Hazards
//!
//! - Stale writable TLB entries. When a frame's type changes (say from writable
//!   to L1), another pCPU may still hold a writable translation of it from a
//!   mapping already removed, and the guest's other vCPUs run *during* the
//!   operation: the kernel must flush them in [`PvMemory::before_type_change`],
//!   synchronously, before it returns (the contents are validated next). Xen does
//!   this in `_get_page_type`, filtered by `tlbflush_timestamp`. The domain's lock
//!   is held meanwhile, so acknowledging the flush IPI must never need it.
//! - Freed frames may likewise still be mapped in TLBs (see `pop_freed`).
//! - Keel's L4 slots are written by [`DomainFrames`] on validation only; if the
//!   kernel changes its template, it must rewrite them in every validated L4.
//! - Nothing but this module may write a validated table: [`DomainFrames`] reads
//!   the entries back to know what references they hold.
//! - A frame the kernel calls I/O ([`IoFrame`]) must never be the domain's RAM:
//!   an entry mapping a frame that is not the domain's is taken to hold nothing.
//!
//! # Deviations from Xen
//!
//! - No preemption: validation and devalidation run to completion (bound above)
//!   rather than returning `-ERESTART` with `PGT_partial` state. A failed
//!   validation is undone at once, not via `old_guest_table`; old entries'
//!   references are dropped at once too, not deferred (`PTF_defer`).
//! - A failed validation leaves the frame with no type even for L2..L4 (Xen leaves
//!   those partially validated until `put_old_guest_table`); the result is the
//!   same for the guest.
//! - General-reference overflow on an L1 mapping fails with EINVAL, not EBUSY
//!   (needs 2^32 references; Xen's `could_not_pin`).
//! - The L1TF check ([`Policy::l1tf_safe_maddr`]) fails the operation
//!   (`L1tfUnsafe`) for the kernel to crash the domain; Xen would shadow it.
//! - Not here: foreign domains (`foreigndom` other than `DOMID_SELF`, `DOMID_IO`),
//!   32-bit (compat) guests, shadow and log-dirty modes, the IOMMU, cache flushes
//!   for non-coherent mappings, XSM, and checking descriptor contents (the
//!   kernel's [`PvMemory::check_segdesc_page`]).

pub mod copy;
pub mod entry;
mod ops;
mod page;
mod validate;

#[cfg(test)]
mod audit;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use keel_hypercall::abi::Errno;
pub use ops::{Extent, Flush, LDT_MAX_ENTS, MmuUpdateDone, MmuextAction, PtwrDone, PvVcpu};
pub use page::{DomainFrames, Level, PageInfo, PageType};

use crate::addr::Mfn;

/// Per-domain choices Xen makes from the hardware, its command line and the
/// domain's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The CPU has NX (and keel enabled EFER.NXE): guests may set it (Xen's
    /// `base_disallow_mask`).
    pub nx: bool,
    /// The domain has I/O capabilities (I/O memory or ports, or devices): its L1
    /// entries may set caching attributes (`l1_disallow_mask`), and it may flush
    /// caches (`cache_flush_permitted`).
    pub io_caps: bool,
    /// Guests may make linear page tables (Xen's `pv-linear-pt`, on by default).
    pub linear_pt: bool,
    /// On CPUs affected by L1TF: the first machine address at or above which no
    /// RAM lies. Non-present entries with address bits below it are refused
    /// (Xen's `pv-l1tf`); `None` where the CPU is not affected.
    pub l1tf_safe_maddr: Option<u64>,
}

impl Default for Policy {
    /// Xen's defaults for an unprivileged domain on a CPU with NX and without L1TF.
    fn default() -> Policy {
        Policy {
            nx: true,
            io_caps: false,
            linear_pt: true,
            l1tf_safe_maddr: None,
        }
    }
}

/// What a frame that is not the domain's is, as far as its L1 entries go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoFrame {
    /// RAM (another domain's, keel's, free): never mapped (EBUSY). Grant mappings
    /// of another domain's frames will come through the grant-table path, not
    /// this one.
    NotIo,
    /// I/O memory (or nothing) the domain may not map (EPERM).
    Denied,
    /// I/O memory the domain may map (Xen's `iomem_access_permitted`).
    ReadWrite,
    /// I/O memory the domain may map read-only (Xen's `mmio_ro_ranges`).
    ReadOnly,
}

/// How the PV MMU reaches frames and the kernel. The kernel implements it over the
/// direct map, per domain; the tests over a `BTreeMap`.
pub trait PvMemory {
    /// Entry `index` (0..512) of frame `mfn`: one 64-bit load.
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64;
    /// Stores entry `index` of frame `mfn`: one 64-bit store (the frame may be a
    /// live page table).
    fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64);
    /// `lock cmpxchg` on entry `index`: `Err(current)` if it was not `old`.
    fn cmpxchg_entry(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64>;
    /// What `mfn`, which is not the domain's, is.
    fn io_frame(&self, mfn: Mfn) -> IoFrame;
    /// keel's entry for `slot` ([`entry::KEEL_L4_SLOTS`]) of the guest L4 `l4`.
    fn keel_l4_entry(&self, l4: Mfn, slot: usize) -> u64;
    /// `mfn` is about to change type (its type count is zero): flush, on every
    /// other pCPU the domain may have run on, any translation of it, and wait for
    /// that to finish (Xen's flush in `_get_page_type`).
    fn before_type_change(&mut self, mfn: Mfn, from: PageType, to: PageType);
    /// Whether every descriptor in frame `mfn` is one a PV guest may use (Xen's
    /// `validate_segdesc_page` / `check_descriptor`).
    fn check_segdesc_page(&self, mfn: Mfn) -> bool;
    /// Zeroes frame `mfn`.
    fn clear_frame(&mut self, mfn: Mfn);
    /// Copies frame `src` over frame `dst`.
    fn copy_frame(&mut self, dst: Mfn, src: Mfn);
}

/// Why a PV MMU operation failed: [`PvError::errno`] is what the guest gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum PvError {
    /// an L{level} entry sets bits a guest may not set there: {bits:#x}
    BadFlags { level: u8, bits: u64 },
    /// frame {0:#x} is not this domain's
    NotDomainFrame(u64),
    /// frame {0} is someone else's and no I/O memory
    ForeignFrame(Mfn),
    /// the domain may not map I/O frame {0}
    IoNotPermitted(Mfn),
    /// the all-ones frame (INVALID_MFN) cannot be mapped
    InvalidMfn,
    /// frame {0} cannot be mapped writable: it is a page table or descriptor page
    NotWritable(Mfn),
    /// frame {0} is keel's and stays write-back cacheable
    CacheAttrsOnSpecial(Mfn),
    /// frame {0} is in use with another type
    TypeConflict(Mfn),
    /// too many references to frame {0}
    RefOverflow(Mfn),
    /// frame {0} holds a descriptor the guest may not use
    BadDescriptor(Mfn),
    /// L4 slot {0} is keel's
    KeelSlot(usize),
    /// frame {0} is already pinned
    AlreadyPinned(Mfn),
    /// frame {0} is not pinned
    NotPinned(Mfn),
    /// frame {0} is a descriptor page; its words are not updated this way
    DescriptorPage(Mfn),
    /// unknown command {0}
    UnknownCommand(u32),
    /// superpages are not supported
    Superpages,
    /// bad LDT: {ents} descriptors at {base:#x}
    BadLdt { base: u64, ents: u32 },
    /// the domain may not flush caches
    CacheFlushDenied,
    /// the domain may not flush every CPU's caches
    GlobalCacheFlushDenied,
    /// non-present entry {0:#x} names memory an L1TF-affected CPU would read; crash the domain
    L1tfUnsafe(u64),
    /// frame {0} is not a validated L1 of this domain
    NotL1(Mfn),
    /// entry index {0} is outside a table
    BadIndex(usize),
    /// emulated page-table write of {bytes} bytes at offset {offset:#x} is not allowed
    BadPtwrAccess { offset: usize, bytes: usize },
    /// an entry of frame {0} changed beyond its accessed/dirty bits while keel wrote it
    EntryRaced(Mfn),
    /// frame {0} is already the domain's, or freed and not yet taken back
    AlreadyAssigned(Mfn),
    /// frame {0} is keel's to take back
    SpecialFrame(Mfn),
    /// out of memory for frame bookkeeping
    NoMemory,
    /// page-type state of frame {mfn} is inconsistent: {what}
    Inconsistent { mfn: Mfn, what: &'static str },
}

impl PvError {
    /// The errno Xen returns for this failure.
    pub fn errno(self) -> Errno {
        use PvError::*;
        match self {
            ForeignFrame(_) | NotWritable(_) | EntryRaced(_) => Errno::EBUSY,
            IoNotPermitted(_) | L1tfUnsafe(_) => Errno::EPERM,
            CacheAttrsOnSpecial(_) | CacheFlushDenied => Errno::EACCES,
            UnknownCommand(_) => Errno::ENOSYS,
            Superpages => Errno::EOPNOTSUPP,
            AlreadyAssigned(_) => Errno::EEXIST,
            NoMemory => Errno::ENOMEM,
            BadFlags { .. }
            | NotDomainFrame(_)
            | InvalidMfn
            | TypeConflict(_)
            | RefOverflow(_)
            | BadDescriptor(_)
            | KeelSlot(_)
            | AlreadyPinned(_)
            | NotPinned(_)
            | DescriptorPage(_)
            | BadLdt { .. }
            | GlobalCacheFlushDenied
            | NotL1(_)
            | BadIndex(_)
            | BadPtwrAccess { .. }
            | SpecialFrame(_)
            | Inconsistent { .. } => Errno::EINVAL,
        }
    }

    /// Whether the kernel should crash the domain rather than only fail the call
    /// (STYLE's error ladder, rung 2): keel's bookkeeping for it is broken, or
    /// letting it run would be unsafe.
    pub fn is_domain_fatal(self) -> bool {
        matches!(
            self,
            PvError::Inconsistent { .. } | PvError::EntryRaced(_) | PvError::L1tfUnsafe(_)
        )
    }
}
