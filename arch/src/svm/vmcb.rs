//! The Virtual Machine Control Block (AMD APM Vol. 2 §15.5, appendix B "Layout of
//! VMCB"): one 4 KiB page per vCPU, a control area at offset 0 (intercepts, exit
//! code and information, event injection, nested paging) and a state save area at
//! 0x400 (the guest's segments, control registers, RIP/RSP/RAX and the MSRs VMRUN,
//! VMLOAD and VMSAVE move).
//!
//! Every field is a typed constant ([`Field<T>`]) naming its offset and width, with
//! the APM table it comes from; code reads and writes the VMCB only through
//! [`Vmcb::get`] and [`Vmcb::set`], never by offset arithmetic of its own.
//!
//! Invariant: a [`Vmcb`] owns its page exclusively (the CPU touches it only inside
//! VMRUN, which runs on the same thread), so plain volatile accesses suffice.

use core::marker::PhantomData;

use keel_mm::addr::Hpa;

/// A VMCB field of type `T` (u8, u16, u32 or u64) at a byte offset.
#[derive(Clone, Copy, Debug)]
pub struct Field<T> {
    pub offset: usize,
    _t: PhantomData<T>,
}

impl<T> Field<T> {
    const fn at(offset: usize) -> Field<T> {
        Field {
            offset,
            _t: PhantomData,
        }
    }
}

/// A segment register in the state save area: selector, attributes (the descriptor's
/// type/S/DPL/P in bits 0-7 and AVL/L/D/G in bits 8-11), limit and base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// Segment attribute bits (APM Vol. 2 §15.5.1, "Segment state in the VMCB"): the
/// packed form `keel_x86::context::Segment::attr` uses, which holds the shapes keel
/// loads.
pub mod attrib {
    pub const PRESENT: u16 = 1 << 7;
    pub const S: u16 = 1 << 4;
    pub const L: u16 = 1 << 9;
    pub const DB: u16 = 1 << 10;
    pub const G: u16 = 1 << 11;
}

/// Segment registers of the state save area, 16 bytes each from 0x400 (table B-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    Es = 0x400,
    Cs = 0x410,
    Ss = 0x420,
    Ds = 0x430,
    Fs = 0x440,
    Gs = 0x450,
    Gdtr = 0x460,
    Ldtr = 0x470,
    Idtr = 0x480,
    Tr = 0x490,
}

// Control area (APM Vol. 2 table B-1).
/// Intercepts of CR reads (bits 0-15) and writes (bits 16-31).
pub const INTERCEPT_CR: Field<u32> = Field::at(0x000);
/// Intercepts of DR reads and writes.
pub const INTERCEPT_DR: Field<u32> = Field::at(0x004);
/// One bit per exception vector.
pub const INTERCEPT_EXCEPTIONS: Field<u32> = Field::at(0x008);
/// INTR ... SHUTDOWN (see [`intercept1`]).
pub const INTERCEPT_MISC1: Field<u32> = Field::at(0x00C);
/// VMRUN ... XSETBV (see [`intercept2`]).
pub const INTERCEPT_MISC2: Field<u32> = Field::at(0x010);
pub const IOPM_BASE_PA: Field<u64> = Field::at(0x040);
pub const MSRPM_BASE_PA: Field<u64> = Field::at(0x048);
pub const TSC_OFFSET: Field<u64> = Field::at(0x050);
pub const GUEST_ASID: Field<u32> = Field::at(0x058);
/// 0 = nothing, 1 = flush the whole TLB on VMRUN, 3 = this ASID, 7 = non-global.
pub const TLB_CONTROL: Field<u8> = Field::at(0x05C);
/// V_TPR (0-7), V_IRQ (8), V_INTR_PRIO (16-19), V_IGN_TPR (20), V_INTR_MASKING (24),
/// V_INTR_VECTOR (32-39).
pub const VINTR: Field<u64> = Field::at(0x060);
/// Bit 0: the guest is in an interrupt shadow (after STI or MOV SS).
pub const INTERRUPT_SHADOW: Field<u64> = Field::at(0x068);
pub const EXITCODE: Field<u64> = Field::at(0x070);
pub const EXITINFO1: Field<u64> = Field::at(0x078);
pub const EXITINFO2: Field<u64> = Field::at(0x080);
/// An event that was being delivered when the exit happened (same format as EVENTINJ).
pub const EXITINTINFO: Field<u64> = Field::at(0x088);
/// Bit 0: nested paging enable.
pub const NP_ENABLE: Field<u64> = Field::at(0x090);
/// Event injection: vector (0-7), type (8-10), EV (11), V (31), error code (32-63).
pub const EVENTINJ: Field<u64> = Field::at(0x0A8);
/// Nested page table root (nCR3).
pub const N_CR3: Field<u64> = Field::at(0x0B0);
/// Which state areas are unchanged since the last VMRUN (only with the CPUID feature).
pub const VMCB_CLEAN: Field<u32> = Field::at(0x0C0);
/// The next sequential RIP (only with nRIP save).
pub const NRIP: Field<u64> = Field::at(0x0C8);

// State save area (APM Vol. 2 table B-2), offsets from the page start.
pub const CPL: Field<u8> = Field::at(0x4CB);
pub const EFER: Field<u64> = Field::at(0x4D0);
pub const CR4: Field<u64> = Field::at(0x548);
pub const CR3: Field<u64> = Field::at(0x550);
pub const CR0: Field<u64> = Field::at(0x558);
pub const DR7: Field<u64> = Field::at(0x560);
pub const DR6: Field<u64> = Field::at(0x568);
pub const RFLAGS: Field<u64> = Field::at(0x570);
pub const RIP: Field<u64> = Field::at(0x578);
pub const RSP: Field<u64> = Field::at(0x5D8);
pub const RAX: Field<u64> = Field::at(0x5F8);
pub const STAR: Field<u64> = Field::at(0x600);
pub const LSTAR: Field<u64> = Field::at(0x608);
pub const CSTAR: Field<u64> = Field::at(0x610);
pub const SFMASK: Field<u64> = Field::at(0x618);
pub const KERNEL_GS_BASE: Field<u64> = Field::at(0x620);
pub const SYSENTER_CS: Field<u64> = Field::at(0x628);
pub const SYSENTER_ESP: Field<u64> = Field::at(0x630);
pub const SYSENTER_EIP: Field<u64> = Field::at(0x638);
pub const CR2: Field<u64> = Field::at(0x640);
pub const G_PAT: Field<u64> = Field::at(0x668);
pub const DBGCTL: Field<u64> = Field::at(0x670);

/// INTERCEPT_MISC1 bits (APM Vol. 2 table B-1, offset 0x0C).
pub mod intercept1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    /// A pending virtual interrupt (V_IRQ) can be taken.
    pub const VINTR: u32 = 1 << 4;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const TASK_SWITCH: u32 = 1 << 29;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// INTERCEPT_MISC2 bits (APM Vol. 2 table B-1, offset 0x10).
pub mod intercept2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const ICEBP: u32 = 1 << 8;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_ARMED: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
}

/// One VMCB page, reached through keel's direct map.
pub struct Vmcb {
    pa: Hpa,
    va: *mut u8,
}

// SAFETY: a Vmcb is the exclusive owner of its page (module invariant); moving it to
// another CPU moves that ownership with it.
unsafe impl Send for Vmcb {}

impl Vmcb {
    /// Wraps the page at `pa`.
    ///
    /// # Safety
    /// `pa` must be a 4 KiB-aligned page that nothing else uses for as long as the
    /// returned `Vmcb` lives, mapped in the direct map.
    pub unsafe fn new(pa: Hpa) -> Vmcb {
        Vmcb {
            pa,
            va: keel_mm::layout::directmap_va(pa) as *mut u8,
        }
    }

    /// Physical address, for VMRUN/VMLOAD/VMSAVE.
    pub fn pa(&self) -> Hpa {
        self.pa
    }

    /// Reads a field.
    pub fn get<T: Copy>(&self, f: Field<T>) -> T {
        debug_assert!(f.offset + core::mem::size_of::<T>() <= 4096);
        // SAFETY: the page is ours and mapped (Vmcb::new); every Field constant lies
        // inside the page and is naturally aligned for its type.
        unsafe { core::ptr::read_volatile(self.va.add(f.offset).cast::<T>()) }
    }

    /// Writes a field.
    pub fn set<T: Copy>(&mut self, f: Field<T>, v: T) {
        debug_assert!(f.offset + core::mem::size_of::<T>() <= 4096);
        // SAFETY: as in `get`; `&mut self` means no other reference reads it now.
        unsafe { core::ptr::write_volatile(self.va.add(f.offset).cast::<T>(), v) }
    }

    /// Reads a segment register.
    pub fn seg(&self, s: Seg) -> Segment {
        let o = s as usize;
        Segment {
            selector: self.get(Field::<u16>::at(o)),
            attrib: self.get(Field::<u16>::at(o + 2)),
            limit: self.get(Field::<u32>::at(o + 4)),
            base: self.get(Field::<u64>::at(o + 8)),
        }
    }

    /// Writes a segment register.
    pub fn set_seg(&mut self, s: Seg, v: Segment) {
        let o = s as usize;
        self.set(Field::<u16>::at(o), v.selector);
        self.set(Field::<u16>::at(o + 2), v.attrib);
        self.set(Field::<u32>::at(o + 4), v.limit);
        self.set(Field::<u64>::at(o + 8), v.base);
    }

    /// Sets bits in a u32 field.
    pub fn or32(&mut self, f: Field<u32>, bits: u32) {
        let v = self.get(f);
        self.set(f, v | bits);
    }
}
