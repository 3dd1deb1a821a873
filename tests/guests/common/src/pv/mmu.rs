//! pv64's `mode=mmu`: the PV MMU as a PV kernel uses it.
//!
//! A PV kernel's page tables hold machine frames and are mapped read-only to it;
//! it changes them only through the hypervisor (`mmu_update`,
//! `update_va_mapping`, `mmuext_op`), which validates every entry. The checks use
//! pages of the boot region's padding (at least 512 KiB mapped past the boot
//! stack, `xen.h`), which nothing else uses:
//!
//! - `mmu_update` remaps a padding page to another frame; a batch of 100 such
//!   requests runs to the end (across the dispatcher's continuations) with
//!   `*pdone` = 100; a batch whose third request maps a frame that is not the
//!   guest's stops there with `*pdone` = 2 and -EBUSY (Xen's
//!   `get_page_from_l1e`);
//! - `update_va_mapping` with `UVMF_INVLPG` remaps a page; it refuses to map a
//!   page table writable, or a frame that is not the guest's;
//! - `mmuext_op`: a frame pinned as an L1 cannot be mapped writable, can be
//!   mapped read-only, is unpinned once (a second unpin and a second pin fail);
//!   an L1 that maps itself writable cannot be pinned;
//! - `multicall` batches two `update_va_mapping`s;
//! - with `VMASST_TYPE_writable_pagetables`, a plain store, an XCHG and a
//!   CMPXCHG (both outcomes) on its own read-only L1 remap a page: the
//!   hypervisor emulates and validates them;
//! - shared_info, mapped through `update_va_mapping` at the machine address
//!   `start_info` gives, shows the start-of-day upcall mask.
//!
//! Machine frames come from the p2m list (`start_info.mfn_list`); the virtual
//! address of a page-table frame from a search of it (the boot region maps pfn
//! `p` at VIRT_BASE + `p` pages).

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::hypercall as nr;
use keel_hypercall::abi::mmu::{
    MMU_NORMAL_PT_UPDATE, MMUEXT_PIN_L1_TABLE, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE,
    MmuUpdate, MmuextOp, UVMF_INVLPG,
};
use keel_hypercall::abi::xen::MulticallEntry;

use super::Layout;
use super::start_info::StartInfo;
use crate::checks::Checks;
use crate::hypercall;
use crate::paging::Page;

pub const PAGE: u64 = 4096;
/// Present, writable, user, accessed, dirty: an ordinary data mapping.
pub const RW: u64 = 0x67;
/// Present, user, accessed: read-only.
const RO: u64 = 0x25;

/// Requests and results handed to the hypervisor (a page each).
static REQS: Page = Page::new();
static DONE: Page = Page::new();

/// What the checks need of the guest's memory.
pub struct Mem<'a> {
    pub si: &'a StartInfo,
    pub layout: &'a Layout,
}

impl Mem<'_> {
    /// The machine frame of the boot-region page at `va`.
    pub fn mfn(&self, va: u64) -> u64 {
        let pfn = (va - self.layout.virt_base) / PAGE;
        // SAFETY: the p2m list is mapped (the probe's checks); `pfn` is in the
        // boot region, below nr_pages.
        unsafe { core::ptr::read_volatile((self.si.mfn_list + pfn * 8) as *const u64) }
    }

    /// The boot-region address of machine frame `mfn` (0 if it is not there).
    pub fn va_of(&self, mfn: u64) -> u64 {
        (0..self.si.nr_pages)
            .find(|&p| {
                // SAFETY: as in `mfn`.
                unsafe { core::ptr::read_volatile((self.si.mfn_list + p * 8) as *const u64) == mfn }
            })
            .map_or(0, |p| self.layout.virt_base + p * PAGE)
    }

    /// The machine address of the L1 entry that maps `va`, by walking the
    /// guest's own (read-only mapped) tables from `pt_base`.
    pub fn l1e(&self, va: u64) -> u64 {
        let mut table_va = self.si.pt_base;
        for shift in [39u32, 30, 21] {
            let i = (va >> shift) & 511;
            // SAFETY: the builder maps every page-table frame read-only in the
            // boot region; `table_va` is one of them.
            let e = unsafe { core::ptr::read_volatile((table_va + i * 8) as *const u64) };
            table_va = self.va_of((e & 0x000F_FFFF_FFFF_F000) >> 12);
        }
        let l1_mfn = self.mfn(table_va);
        (l1_mfn << 12) + ((va >> 12) & 511) * 8
    }
}

fn read(va: u64) -> u64 {
    // SAFETY: `va` is a mapped padding page (or shared_info mapped by a check).
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn write(va: u64, v: u64) {
    // SAFETY: `va` is a padding page mapped writable.
    unsafe { core::ptr::write_volatile(va as *mut u64, v) }
}

/// `lock cmpxchg` of `new` into the word at `va`, expecting `expected`: what
/// RAX holds after it, and ZF.
fn cmpxchg(va: u64, expected: u64, new: u64) -> (u64, u8) {
    let (seen, zf): (u64, u8);
    // SAFETY: `va` is one of this guest's L1 entries, mapped read-only: the
    // hypervisor emulates the compare-exchange (writable page tables).
    unsafe {
        core::arch::asm!(
            "lock cmpxchg {new}, ({at})",
            "sete {zf}",
            at = in(reg) va,
            new = in(reg) new,
            zf = out(reg_byte) zf,
            inout("rax") expected => seen,
            options(att_syntax)
        );
    }
    (seen, zf)
}

pub fn mmu_update(reqs: &[(u64, u64)]) -> (i64, u64) {
    for (i, &(ptr, val)) in reqs.iter().enumerate() {
        REQS.write(i * MmuUpdate::SIZE, &MmuUpdate { ptr, val }.to_bytes());
    }
    // `*pdone` is an `unsigned int`.
    DONE.write(0, &u32::MAX.to_le_bytes());
    let rc = hypercall::call(
        nr::MMU_UPDATE,
        [REQS.addr(), reqs.len(), DONE.addr(), usize::from(DOMID_SELF), 0],
    );
    let mut d = [0u8; 4];
    DONE.read(0, &mut d);
    (rc, u64::from(u32::from_le_bytes(d)))
}

pub fn mmuext(cmd: u32, arg1: u64) -> i64 {
    let op = MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2: 0,
    };
    REQS.write(0, &op.to_bytes());
    hypercall::call(
        nr::MMUEXT_OP,
        [REQS.addr(), 1, 0, usize::from(DOMID_SELF), 0],
    )
}

pub fn update_va_mapping(va: u64, val: u64, flags: u64) -> i64 {
    hypercall::call(
        nr::UPDATE_VA_MAPPING,
        [va as usize, val as usize, flags as usize, 0, 0],
    )
}

/// Maps shared_info (at the machine address `start_info` gives) on the fourth
/// padding page past the boot stack; its address, or the hypercall's error.
pub fn map_shared_info(si: &StartInfo, layout: &Layout) -> Result<u64, i64> {
    let s = layout.boot_rsp.next_multiple_of(PAGE) + 3 * PAGE;
    match update_va_mapping(s, (si.shared_info & !0xFFF) | RW, UVMF_INVLPG) {
        0 => Ok(s),
        rc => Err(rc),
    }
}

/// `mode=mmu`.
pub fn run(si: &StartInfo, layout: &Layout) {
    let c = Checks::new("", "");
    let m = Mem { si, layout };
    // Four padding pages past the boot stack.
    let pad = layout.boot_rsp.next_multiple_of(PAGE);
    let (p, q, r, s) = (pad, pad + PAGE, pad + 2 * PAGE, pad + 3 * PAGE);
    let (pm, qm, rm) = (m.mfn(p), m.mfn(q), m.mfn(r));
    write(p, 0xAAAA);
    write(q, 0xBBBB);
    let l1e_p = m.l1e(p);
    c.info(format_args!(
        "padding at {p:#x}: frames {pm:#x} {qm:#x} {rm:#x}, L1 entry of the first at {l1e_p:#x}"
    ));

    // mmu_update: remap P to Q's frame, flush, read; then back.
    let (rc, done) = mmu_update(&[(l1e_p | u64::from(MMU_NORMAL_PT_UPDATE), (qm << 12) | RW)]);
    c.check(
        "mmu_update of one entry",
        rc == 0 && done == 1,
        format_args!("rc {rc}, done {done}"),
    );
    c.rc("TLB_FLUSH_LOCAL", mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0), 0);
    c.check(
        "the page now shows the other frame",
        read(p) == 0xBBBB,
        format_args!("read {:#x}", read(p)),
    );

    // A batch of 100: P alternates between the two frames, ending on its own.
    let batch: alloc_free::Batch = alloc_free::Batch::new(l1e_p, pm, qm, 100);
    let (rc, done) = mmu_update(batch.as_slice());
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    c.check(
        "a 100-request mmu_update batch, done = 100",
        rc == 0 && done == 100 && read(p) == 0xAAAA,
        format_args!("rc {rc}, done {done}, read {:#x}", read(p)),
    );

    // A batch whose third request maps a frame that is not the guest's (machine
    // frame 1: keel's low memory).
    let bad = [
        (l1e_p, (qm << 12) | RW),
        (l1e_p, (pm << 12) | RW),
        (l1e_p, (1 << 12) | RW),
        (l1e_p, (qm << 12) | RW),
    ];
    let (rc, done) = mmu_update(&bad);
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    c.check(
        "a batch stops at a frame that is not the guest's, done = 2",
        rc == Errno::EBUSY.neg() && done == 2 && read(p) == 0xAAAA,
        format_args!("rc {rc}, done {done}, read {:#x}", read(p)),
    );

    // Writable page tables: with the assist on, a plain store to its own
    // (read-only) L1 is carried out by the hypervisor.
    c.rc(
        "vm_assist(enable, writable_pagetables)",
        hypercall::call(nr::VM_ASSIST, [0, 2, 0, 0, 0]),
        0,
    );
    let l1e_va = m.va_of(l1e_p >> 12) + (l1e_p & 0xFFF);
    write(l1e_va, (qm << 12) | RW);
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    c.check(
        "a store to its read-only L1 remaps the page (writable page tables)",
        read(p) == 0xBBBB,
        format_args!("read {:#x}", read(p)),
    );
    write(l1e_va, (pm << 12) | RW);
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    c.check(
        "and back",
        read(p) == 0xAAAA && read(l1e_va) & !0xFFF & 0x000F_FFFF_FFFF_F000 == pm << 12,
        format_args!("read {:#x}, entry {:#x}", read(p), read(l1e_va)),
    );

    // XCHG and CMPXCHG on the read-only L1, as Linux's PTE helpers do.
    let old: u64;
    // SAFETY: an exchange with the L1 entry (emulated, module doc).
    unsafe {
        core::arch::asm!(
            "xchg %rax, ({at})",
            at = in(reg) l1e_va,
            inout("rax") (qm << 12) | RW => old,
            options(att_syntax)
        );
    }
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    c.check(
        "XCHG on its L1: the page remapped, the old entry returned",
        read(p) == 0xBBBB && old & 0x000F_FFFF_FFFF_F000 == pm << 12,
        format_args!("read {:#x}, old {old:#x}", read(p)),
    );
    let cur = read(l1e_va);
    let (seen, zf) = cmpxchg(l1e_va, cur, (pm << 12) | RW);
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    c.check(
        "CMPXCHG on its L1 with the right old value: written, ZF set",
        zf == 1 && seen == cur && read(p) == 0xAAAA,
        format_args!("zf {zf}, rax {seen:#x}, read {:#x}", read(p)),
    );
    // A stale expected value (the entry now maps P's own frame again).
    let (seen, zf) = cmpxchg(l1e_va, cur, (qm << 12) | RW);
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
    c.check(
        "CMPXCHG with a stale old value: nothing written, ZF clear, RAX the entry",
        zf == 0 && seen == read(l1e_va) && read(p) == 0xAAAA,
        format_args!("zf {zf}, rax {seen:#x}, read {:#x}", read(p)),
    );

    // update_va_mapping.
    c.rc(
        "update_va_mapping remaps a page",
        update_va_mapping(p, (qm << 12) | RW, UVMF_INVLPG),
        0,
    );
    c.check(
        "update_va_mapping took effect",
        read(p) == 0xBBBB,
        format_args!("read {:#x}", read(p)),
    );
    c.rc(
        "update_va_mapping back",
        update_va_mapping(p, (pm << 12) | RW, UVMF_INVLPG),
        0,
    );
    let l4m = m.mfn(si.pt_base);
    let rc = update_va_mapping(p, (l4m << 12) | RW, UVMF_INVLPG);
    c.check(
        "the L4 cannot be mapped writable",
        rc < 0,
        format_args!("rc {rc}"),
    );
    let rc = update_va_mapping(p, (1 << 12) | RW, UVMF_INVLPG);
    // Xen's get_page_from_l1e: a frame of another owner "could not pin".
    c.errno("keel's frame cannot be mapped", rc, Errno::EBUSY);
    let rc = update_va_mapping(0xffff_8300_0000_0000, (pm << 12) | RW, UVMF_INVLPG);
    c.errno("update_va_mapping in keel's range", rc, Errno::EINVAL);
    c.check(
        "the page is its own again",
        read(p) == 0xAAAA,
        format_args!("read {:#x}", read(p)),
    );

    // Pin and unpin: R, emptied and unmapped, becomes an L1.
    for i in 0..512 {
        write(r + i * 8, 0);
    }
    c.rc("unmap a page", update_va_mapping(r, 0, UVMF_INVLPG), 0);
    c.rc("pin it as an L1", mmuext(MMUEXT_PIN_L1_TABLE, rm), 0);
    c.errno(
        "pin it again",
        mmuext(MMUEXT_PIN_L1_TABLE, rm),
        Errno::EINVAL,
    );
    let rc = update_va_mapping(r, (rm << 12) | RW, UVMF_INVLPG);
    c.check(
        "a pinned L1 cannot be mapped writable",
        rc < 0,
        format_args!("rc {rc}"),
    );
    c.rc(
        "a pinned L1 can be mapped read-only",
        update_va_mapping(r, (rm << 12) | RO, UVMF_INVLPG),
        0,
    );
    c.check("and reads as zeroes", read(r) == 0, format_args!("read {:#x}", read(r)));
    c.rc("unpin it", mmuext(MMUEXT_UNPIN_TABLE, rm), 0);
    c.errno("unpin it again", mmuext(MMUEXT_UNPIN_TABLE, rm), Errno::EINVAL);
    c.rc(
        "once unpinned it maps writable again",
        update_va_mapping(r, (rm << 12) | RW, UVMF_INVLPG),
        0,
    );

    // An L1 that maps itself writable is no page table.
    write(r, (rm << 12) | RW);
    update_va_mapping(r, 0, UVMF_INVLPG);
    let rc = mmuext(MMUEXT_PIN_L1_TABLE, rm);
    c.check(
        "an L1 mapping itself writable cannot be pinned",
        rc < 0,
        format_args!("rc {rc}"),
    );
    update_va_mapping(r, (rm << 12) | RW, UVMF_INVLPG);
    write(r, 0);

    // multicall: two update_va_mappings.
    let calls = [
        (p, (qm << 12) | RW),
        (q, (pm << 12) | RW),
    ];
    for (i, &(va, val)) in calls.iter().enumerate() {
        let e = MulticallEntry {
            op: u64::from(nr::UPDATE_VA_MAPPING),
            result: u64::MAX,
            args: [va, val, UVMF_INVLPG, 0, 0, 0],
        };
        REQS.write(i * MulticallEntry::SIZE, &e.to_bytes());
    }
    let rc = hypercall::call(nr::MULTICALL, [REQS.addr(), 2, 0, 0, 0]);
    let result = |i: usize| {
        let mut b = [0u8; 8];
        REQS.read(i * MulticallEntry::SIZE + 8, &mut b);
        u64::from_le_bytes(b)
    };
    c.check(
        "a multicall of two update_va_mappings",
        rc == 0 && result(0) == 0 && result(1) == 0 && read(p) == 0xBBBB && read(q) == 0xAAAA,
        format_args!(
            "rc {rc}, results {:#x} {:#x}, reads {:#x} {:#x}",
            result(0),
            result(1),
            read(p),
            read(q)
        ),
    );
    update_va_mapping(p, (pm << 12) | RW, UVMF_INVLPG);
    update_va_mapping(q, (qm << 12) | RW, UVMF_INVLPG);

    // shared_info, at the machine address start_info gives.
    c.rc(
        "map shared_info",
        update_va_mapping(s, (si.shared_info & !0xFFF) | RW, UVMF_INVLPG),
        0,
    );
    // vcpu_info[0].evtchn_upcall_mask is byte 1.
    let mask = read(s) >> 8 & 0xFF;
    c.check(
        "vCPU 0 starts with upcalls masked",
        mask == 1,
        format_args!("mask {mask}"),
    );
}

/// A batch of mmu_update requests without an allocator.
mod alloc_free {
    /// Up to 256 (ptr, val) pairs.
    pub struct Batch {
        reqs: [(u64, u64); 256],
        len: usize,
    }

    impl Batch {
        /// `n` requests alternating the entry at `ptr` between frames `b` and
        /// `a`, ending on `a`.
        pub fn new(ptr: u64, a: u64, b: u64, n: usize) -> Batch {
            let mut reqs = [(0, 0); 256];
            let n = n.min(256);
            for (i, r) in reqs.iter_mut().enumerate().take(n) {
                let frame = if (n - 1 - i).is_multiple_of(2) { a } else { b };
                *r = (ptr, (frame << 12) | super::RW);
            }
            Batch { reqs, len: n }
        }

        pub fn as_slice(&self) -> &[(u64, u64)] {
            &self.reqs[..self.len]
        }
    }
}
