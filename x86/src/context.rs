//! A vCPU's whole architectural register state in vendor-neutral terms
//! ([`Context`]), and the three ways keel gets one: the PVH start of day
//! ([`Context::pvh_start`]), an INIT-SIPI start-up ([`Context::sipi`]), and
//! `VCPUOP_initialise` ([`Context::from_vcpu_hvm`], Xen's `arch_set_info_hvm_guest`).
//!
//! # Why here
//!
//! The VMX and SVM backends in `arch` load a `Context` into a vCPU whenever its whole
//! state is replaced (`HvmVcpu::load_context`): when it is built, and when a guest
//! starts a secondary vCPU. Which states are legal is x86 architecture and Xen ABI,
//! not hardware access, so it is decided here, once for both vendors, and tested on
//! the host.
//!
//! # Invariant: a `Context` can be entered
//!
//! The fields are private: a `Context` comes only from the constructors here, and
//! each returns only a state that
//! - Xen would accept (the checks of `arch_set_info_hvm_guest`,
//!   `xen/arch/x86/hvm/domain.c`, transcribed rule by rule in
//!   [`Context::from_hvm_32`] and [`Context::from_hvm_64`]), and
//! - VM entry accepts on both vendors: the rules of SDM Vol. 3C §26.3.1 "Checks on
//!   the Guest-State Area" (§27.3.1 in recent editions) and APM Vol. 2 §15.5.1
//!   "VMRUN" (consistency checks) that a guest-supplied state could break. Xen does
//!   not check these; there such a state makes VM entry fail and the domain crash,
//!   keel refuses it with `-EINVAL` instead. They are listed at [`ContextError`].
//!
//! What depends on the CPU (which CR0/CR4 bits it has, its physical-address width,
//! the PDPTEs a PAE CR3 points at) is left to the backend, which checks it before
//! loading.
//!
//! # Segment attributes
//!
//! [`Segment::attr`] is the 12-bit packed form of Xen's `segment_register` and the
//! AMD VMCB: descriptor bits 40..47 (type, S, DPL, P) in bits 0..7 and bits 52..55
//! (AVL, L, D/B, G) in bits 8..11. The limit is the byte-granular limit the CPU
//! applies (the VMCS and VMCB hold it so), not the descriptor's 20-bit field. A
//! segment register whose P bit is clear is a null (VMX: "unusable") one.
//!
//! # Locking
//!
//! None: values only.

use core::fmt;

use keel_hypercall::abi::hvm::{
    VCPU_HVM_MODE_32B, VCPU_HVM_MODE_64B, VcpuHvmContext, VcpuHvmX86_32, VcpuHvmX86_64,
};

/// CR0 bits (SDM Vol. 3A §2.5).
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const ET: u64 = 1 << 4;
    pub const WP: u64 = 1 << 16;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM Vol. 3A §2.5).
pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const PCIDE: u64 = 1 << 17;
    pub const CET: u64 = 1 << 23;
}

/// IA32_EFER bits (SDM Vol. 3A §2.2.1).
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
    /// The bits a guest may hand `VCPUOP_initialise`.
    pub const VALID: u64 = SCE | LME | LMA | NXE;
}

/// RFLAGS bits (SDM Vol. 1 §3.4.3).
pub mod rflags {
    /// Bit 1 is always 1 (Xen `X86_EFLAGS_MBS`).
    pub const FIXED: u64 = 1 << 1;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// The architectural flags (Xen `X86_EFLAGS_ALL`): CF, PF, AF, ZF, SF, TF, IF, DF,
    /// OF, IOPL, NT, RF, VM, AC, VIF, VIP, ID.
    pub const ARCH: u64 = 0x003F_7FD5;
}

/// Bits of [`Segment::attr`] (see the module doc).
pub mod attr {
    /// Type bit 0: accessed (code/data), or busy for a TSS (bit 1).
    pub const ACCESSED: u16 = 1 << 0;
    /// Type bit 1: writable (data) or readable (code); busy for a TSS.
    pub const RW: u16 = 1 << 1;
    /// Type bit 3: code (S = 1).
    pub const CODE: u16 = 1 << 3;
    /// S: code or data (1), system (0).
    pub const S: u16 = 1 << 4;
    pub const DPL_SHIFT: u16 = 5;
    pub const P: u16 = 1 << 7;
    pub const AVL: u16 = 1 << 8;
    pub const L: u16 = 1 << 9;
    pub const DB: u16 = 1 << 10;
    pub const G: u16 = 1 << 11;
    /// Bits 12..15, which the packed form does not have.
    pub const RESERVED: u16 = 0xF000;

    /// System type 2: LDT.
    pub const TYPE_LDT: u16 = 0x2;
    /// System type 0xB: busy 32-bit TSS (the busy 64-bit TSS in long mode).
    pub const TYPE_TSS_BUSY: u16 = 0xB;

    /// 16-bit code, execute/read, accessed, ring 0 (real mode after reset).
    pub const REAL_CODE: u16 = 0x9B;
    /// 16-bit data, read/write, accessed, ring 0.
    pub const REAL_DATA: u16 = 0x93;
    /// A present LDT.
    pub const LDT: u16 = P | TYPE_LDT;
    /// A present busy 32-bit TSS.
    pub const TSS_BUSY: u16 = P | TYPE_TSS_BUSY;
    /// Flat 32-bit code (G, D), execute/read, accessed, ring 0.
    pub const CODE32: u16 = G | DB | REAL_CODE;
    /// Flat 32-bit data (G, B), read/write, accessed, ring 0.
    pub const DATA32: u16 = G | DB | REAL_DATA;
    /// 64-bit code (G, L), execute/read, accessed, ring 0.
    pub const CODE64: u16 = G | L | REAL_CODE;
}

/// A segment register: its selector and the descriptor cache the CPU holds for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    /// The byte-granular limit.
    pub limit: u32,
    /// The packed attributes (module doc, [`attr`]).
    pub attr: u16,
}

impl Segment {
    pub const fn new(selector: u16, base: u64, limit: u32, attr: u16) -> Segment {
        Segment {
            selector,
            base,
            limit,
            attr,
        }
    }

    /// The descriptor type (attr bits 0..3).
    pub const fn kind(&self) -> u16 {
        self.attr & 0xF
    }

    /// S: a code or data segment (not a system one).
    pub const fn code_data(&self) -> bool {
        self.attr & attr::S != 0
    }

    /// A code segment (S = 1, type bit 3).
    pub const fn is_code(&self) -> bool {
        self.code_data() && self.attr & attr::CODE != 0
    }

    pub const fn dpl(&self) -> u8 {
        ((self.attr >> attr::DPL_SHIFT) & 3) as u8
    }

    /// P: present. A segment register that is not is null (VMX: unusable).
    pub const fn present(&self) -> bool {
        self.attr & attr::P != 0
    }

    pub const fn avl(&self) -> bool {
        self.attr & attr::AVL != 0
    }

    /// L: 64-bit code.
    pub const fn long(&self) -> bool {
        self.attr & attr::L != 0
    }

    /// D/B: 32-bit default operand size (code) or big stack (SS).
    pub const fn default_big(&self) -> bool {
        self.attr & attr::DB != 0
    }

    /// G: the descriptor's limit counts 4 KiB units.
    pub const fn granularity(&self) -> bool {
        self.attr & attr::G != 0
    }

    /// Whether the limit is one a descriptor with this G bit can produce, as VM entry
    /// checks (SDM Vol. 3C §26.3.1.2): with G = 1 the low 12 bits are all ones, with
    /// G = 0 bits 31..20 are all zeros.
    pub const fn limit_fits_granularity(&self) -> bool {
        if self.granularity() {
            self.limit & 0xFFF == 0xFFF
        } else {
            self.limit >> 20 == 0
        }
    }
}

/// GDTR or IDTR. The limit is 16 bits, as the architecture has it (a VMCS limit
/// field wider than that fails VM entry, SDM Vol. 3C §26.3.1.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// The general-purpose registers other than RSP. The VMX and SVM entry stubs
/// save and load them at offsets 8 * index (`arch::hvm::GuestGprs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gprs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl Gprs {
    /// Register by its instruction-encoding number (0 = rax, 1 = rcx, 2 = rdx,
    /// 3 = rbx, 4 = rsp, 5 = rbp, 6 = rsi, 7 = rdi, 8..15 = r8..r15). RSP is not here:
    /// `None` for 4, which the caller reads from the VMCS/VMCB.
    pub fn by_encoding(&self, n: u8) -> Option<u64> {
        Some(match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => return None,
        })
    }

    /// Mutable register by encoding number; `None` for RSP (4) or out of range.
    pub fn by_encoding_mut(&mut self, n: u8) -> Option<&mut u64> {
        Some(match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return None,
        })
    }
}

/// A segment register, to name one in a [`ContextError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentRegister {
    Cs,
    Ds,
    Es,
    Ss,
    Fs,
    Gs,
    Tr,
    Ldtr,
}

impl fmt::Display for SegmentRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SegmentRegister::Cs => "CS",
            SegmentRegister::Ds => "DS",
            SegmentRegister::Es => "ES",
            SegmentRegister::Ss => "SS",
            SegmentRegister::Fs => "FS",
            SegmentRegister::Gs => "GS",
            SegmentRegister::Tr => "TR",
            SegmentRegister::Ldtr => "LDTR",
        })
    }
}

/// Why a guest-supplied state was refused (the kernel logs it and returns `-EINVAL`).
/// Each variant's doc is its message. The first group are Xen's own rules
/// (`arch_set_info_hvm_guest`, `check_segment`, `hvm_efer_valid`); the second are
/// what VM entry would refuse (SDM Vol. 3C §26.3.1, APM Vol. 2 §15.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// a padding field of `vcpu_hvm_context` is not zero
    Padding,
    /// `mode` is neither VCPU_HVM_MODE_32B nor VCPU_HVM_MODE_64B
    UnknownMode(u32),
    /// segment attribute bits 12-15 are not zero
    AttrReservedBits(SegmentRegister),
    /// null segment attributes for CS, SS or TR
    NullSegment(SegmentRegister),
    /// code or data segment provided for TR
    TrNotSystem,
    /// TR is not a (busy) 32-bit TSS
    TrNotTss,
    /// system segment provided for a code or data segment register
    SystemSegment(SegmentRegister),
    /// non-present segment provided
    NotPresent(SegmentRegister),
    /// CS is not a code segment
    CsNotCode,
    /// SS is not a writable data segment
    SsNotWritable,
    /// DS or ES is an execute-only code segment
    NotReadable(SegmentRegister),
    /// EIP is outside the CS limit
    EipOutsideCsLimit { eip: u32, limit: u32 },
    /// SS.DPL differs from CS.DPL
    SsDplNotCsDpl { ss: u8, cs: u8 },
    /// the DPL of DS or ES is greater than CS.DPL
    DplAboveCsDpl {
        reg: SegmentRegister,
        dpl: u8,
        cs: u8,
    },
    /// EFER.LMA set without EFER.LME
    LmaWithoutLme,
    /// RIP is not canonical
    NonCanonicalRip(u64),
    /// 64-bit mode without CR0.PG
    LongModeWithoutPaging,
    /// long mode with paging but without CR4.PAE
    LongModeWithoutPae,
    /// 64-bit mode without EFER.LME
    LongModeWithoutLme,
    /// CR4 sets bits the guest may not set
    Cr4Invalid { cr4: u64, rejected: u64 },
    /// EFER sets unknown bits
    EferInvalid { efer: u64, rejected: u64 },
    /// EFER.LMA set with paging off
    LmaWithoutPaging,
    /// CR0 bits 63:32 are not zero
    Cr0HighBits,
    /// CR0.PG set without CR0.PE
    PagingWithoutProtection,
    /// CR0.NW set without CR0.CD
    NwWithoutCd,
    /// CR3 bits 63:52 are not zero
    Cr3HighBits,
    /// CR4.PCIDE set outside long mode
    PcideWithoutLongMode,
    /// CR4.CET set without CR0.WP
    CetWithoutWp,
    /// RFLAGS.VM set (virtual-8086 mode is not a start state)
    VirtualMode,
    /// CS has both L and D/B set
    CsLongAndBig,
    /// real mode (CR0.PE clear) with SS.DPL not 0
    RealModeDpl,
    /// a segment limit does not fit its G bit
    LimitGranularity(SegmentRegister),
    /// RIP bits 63:32 set outside 64-bit mode
    RipAbove4G,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ContextError::*;
        match *self {
            Padding => f.write_str("a padding field of vcpu_hvm_context is not zero"),
            UnknownMode(m) => write!(f, "mode {m} is neither 32B (0) nor 64B (1)"),
            AttrReservedBits(r) => write!(f, "{r}: segment attribute bits 12-15 are not zero"),
            NullSegment(r) => write!(f, "{r}: null segment attributes for CS, SS or TR"),
            TrNotSystem => f.write_str("TR: code or data segment provided for TR"),
            TrNotTss => f.write_str("TR: not a (busy) 32-bit TSS"),
            SystemSegment(r) => write!(f, "{r}: system segment provided for a code/data register"),
            NotPresent(r) => write!(f, "{r}: non-present segment provided"),
            CsNotCode => f.write_str("CS: not a code segment"),
            SsNotWritable => f.write_str("SS: not a writable data segment"),
            NotReadable(r) => write!(f, "{r}: execute-only code segment"),
            EipOutsideCsLimit { eip, limit } => {
                write!(f, "EIP {eip:#x} is outside the CS limit {limit:#x}")
            }
            SsDplNotCsDpl { ss, cs } => write!(f, "SS.DPL ({ss}) differs from CS.DPL ({cs})"),
            DplAboveCsDpl { reg, dpl, cs } => {
                write!(f, "{reg}.DPL ({dpl}) is greater than CS.DPL ({cs})")
            }
            LmaWithoutLme => f.write_str("EFER.LMA set without EFER.LME"),
            NonCanonicalRip(rip) => write!(f, "RIP {rip:#x} is not canonical"),
            LongModeWithoutPaging => f.write_str("64-bit mode without CR0.PG"),
            LongModeWithoutPae => f.write_str("long mode with paging but without CR4.PAE"),
            LongModeWithoutLme => f.write_str("64-bit mode without EFER.LME"),
            Cr4Invalid { cr4, rejected } => {
                write!(
                    f,
                    "CR4 {cr4:#x} sets bits the guest may not set ({rejected:#x})"
                )
            }
            EferInvalid { efer, rejected } => {
                write!(f, "EFER {efer:#x} sets unknown bits ({rejected:#x})")
            }
            LmaWithoutPaging => f.write_str("EFER.LMA set with paging off"),
            Cr0HighBits => f.write_str("CR0 bits 63:32 are not zero"),
            PagingWithoutProtection => f.write_str("CR0.PG set without CR0.PE"),
            NwWithoutCd => f.write_str("CR0.NW set without CR0.CD"),
            Cr3HighBits => f.write_str("CR3 bits 63:52 are not zero"),
            PcideWithoutLongMode => f.write_str("CR4.PCIDE set outside long mode"),
            CetWithoutWp => f.write_str("CR4.CET set without CR0.WP"),
            VirtualMode => f.write_str("RFLAGS.VM set (virtual-8086 mode is not a start state)"),
            CsLongAndBig => f.write_str("CS has both L and D/B set"),
            RealModeDpl => f.write_str("real mode (CR0.PE clear) with SS.DPL not 0"),
            LimitGranularity(r) => write!(f, "{r}: the segment limit does not fit its G bit"),
            RipAbove4G => f.write_str("RIP bits 63:32 set outside 64-bit mode"),
        }
    }
}

/// A vCPU's complete architectural state, as one value (see the module doc for its
/// invariant). What it does not hold (MSRs other than EFER, CR2, DR7, pending events,
/// x87/SSE) a backend resets when it loads one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    gprs: Gprs,
    rip: u64,
    rsp: u64,
    rflags: u64,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    cs: Segment,
    ds: Segment,
    es: Segment,
    ss: Segment,
    fs: Segment,
    gs: Segment,
    tr: Segment,
    ldtr: Segment,
    gdtr: DescriptorTable,
    idtr: DescriptorTable,
}

/// FS, GS, LDTR, GDTR and IDTR as `hvm_vcpu_reset_state` leaves them (selector 0,
/// base 0, limit 0xFFFF): what `VCPUOP_initialise`, which sets neither, starts from.
const RESET_DATA: Segment = Segment::new(0, 0, 0xFFFF, attr::REAL_DATA);
const RESET_LDTR: Segment = Segment::new(0, 0, 0xFFFF, attr::LDT);
const RESET_TABLE: DescriptorTable = DescriptorTable {
    base: 0,
    limit: 0xFFFF,
};

impl Context {
    /// PVH's start of day (Xen `docs/misc/pvh.pandoc`): 32-bit protected mode, paging
    /// off, flat 4 GiB code (CS 0x10) and data (DS..GS 0x18) segments, a busy 32-bit
    /// TSS in TR (0x20, limit 0x67: VM entry needs a usable TR even though nothing
    /// uses it), a null LDTR, GDTR and IDTR base 0 limit 0xFFFF, CR0 = PE | ET,
    /// EFER 0, RFLAGS 2, EIP = `entry`, EBX = `start_info`, everything else 0.
    pub fn pvh_start(entry: u32, start_info: u32) -> Context {
        let data = Segment::new(0x18, 0, u32::MAX, attr::DATA32);
        Context {
            gprs: Gprs {
                rbx: u64::from(start_info),
                ..Gprs::default()
            },
            rip: u64::from(entry),
            rsp: 0,
            rflags: rflags::FIXED,
            cr0: cr0::PE | cr0::ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs: Segment::new(0x10, 0, u32::MAX, attr::CODE32),
            ds: data,
            es: data,
            ss: data,
            fs: data,
            gs: data,
            tr: Segment::new(0x20, 0, 0x67, attr::TSS_BUSY),
            ldtr: Segment::default(),
            gdtr: RESET_TABLE,
            idtr: RESET_TABLE,
        }
    }

    /// The state a start-up IPI with `vector` gives a vCPU waiting for one (Xen
    /// `hvm_vcpu_reset_state(v, vector << 8, 0)`; SDM Vol. 3A, "MP Initialization"):
    /// real mode, CS selector `vector << 8` with base `vector << 12`, IP 0; the
    /// other segments selector 0, base 0, limit 0xFFFF, 16-bit read/write data; LDTR
    /// a present LDT and TR a busy 32-bit TSS, both limit 0xFFFF; GDTR and IDTR base 0
    /// limit 0xFFFF; CR0 = ET, CR3 = CR4 = EFER = 0, RFLAGS 2, GPRs 0.
    ///
    /// VM entry takes this under VMX's "unrestricted guest" (SDM Vol. 3C §26.3.1.2):
    /// CS type 11 with DPL 0 = SS.DPL, SS type 3 with DPL 0 as CR0.PE = 0 requires,
    /// accessed data segments, usable LDTR type 2 and TR type 11, limits that fit
    /// G = 0.
    pub fn sipi(vector: u8) -> Context {
        let cs_selector = u16::from(vector) << 8;
        Context {
            gprs: Gprs::default(),
            rip: 0,
            rsp: 0,
            rflags: rflags::FIXED,
            cr0: cr0::ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs: Segment::new(
                cs_selector,
                u64::from(cs_selector) << 4,
                0xFFFF,
                attr::REAL_CODE,
            ),
            ds: RESET_DATA,
            es: RESET_DATA,
            ss: RESET_DATA,
            fs: RESET_DATA,
            gs: RESET_DATA,
            tr: Segment::new(0, 0, 0xFFFF, attr::TSS_BUSY),
            ldtr: RESET_LDTR,
            gdtr: RESET_TABLE,
            idtr: RESET_TABLE,
        }
    }

    /// `VCPUOP_initialise`'s `vcpu_hvm_context` (Xen `arch_set_info_hvm_guest`):
    /// `pad` must be 0, `mode` picks [`Context::from_hvm_32`] or
    /// [`Context::from_hvm_64`]. `cr4_valid` is the CR4 bits the domain's CPUID
    /// policy allows (Xen `hvm_cr4_guest_valid_bits`).
    pub fn from_vcpu_hvm(ctx: &VcpuHvmContext, cr4_valid: u64) -> Result<Context, ContextError> {
        if ctx.pad != 0 {
            return Err(ContextError::Padding);
        }
        match ctx.mode {
            VCPU_HVM_MODE_32B => Context::from_hvm_32(&ctx.x86_32(), cr4_valid),
            VCPU_HVM_MODE_64B => Context::from_hvm_64(&ctx.x86_64(), cr4_valid),
            m => Err(ContextError::UnknownMode(m)),
        }
    }

    /// `VCPU_HVM_MODE_32B`: protected mode (or, with EFER.LME and paging,
    /// compatibility mode) with the segments given. Xen's rules: padding 0; CS, DS,
    /// SS, ES as given with the accessed bit set in present ones, TR as given with
    /// the busy bit set, each passing `check_segment` ([`ContextError::AttrReservedBits`]
    /// to [`ContextError::NotReadable`]); EIP within the CS limit; SS.DPL = CS.DPL;
    /// present DS/ES with DPL <= CS.DPL; no EFER.LMA without EFER.LME; RFLAGS
    /// reduced to the architectural flags, bit 1 set. Selectors are 0; FS, GS, LDTR,
    /// GDTR and IDTR are as after reset. Then the rules common to both modes
    /// (`finish`).
    ///
    /// The limits are the byte-granular limits the CPU will apply (what Xen writes to
    /// the VMCS/VMCB and what its toolstack passes, `~0` for flat segments). Xen's
    /// EIP check scales `cs_limit` by G once more (`limit << 12 | 0xfff`, in 32 bits),
    /// which admits EIPs the CPU then faults on at the first fetch and refuses some it
    /// would run; keel compares EIP with the limit as given.
    pub fn from_hvm_32(r: &VcpuHvmX86_32, cr4_valid: u64) -> Result<Context, ContextError> {
        use SegmentRegister as R;
        if r.pad1 != 0 || r.pad2 != [0; 3] {
            return Err(ContextError::Padding);
        }
        let cs = hvm32_segment(R::Cs, r.cs_ar, r.cs_limit, r.cs_base)?;
        let ds = hvm32_segment(R::Ds, r.ds_ar, r.ds_limit, r.ds_base)?;
        let ss = hvm32_segment(R::Ss, r.ss_ar, r.ss_limit, r.ss_base)?;
        let es = hvm32_segment(R::Es, r.es_ar, r.es_limit, r.es_base)?;
        let tr = hvm32_segment(R::Tr, r.tr_ar | attr::RW, r.tr_limit, r.tr_base)?;
        if r.eip > cs.limit {
            return Err(ContextError::EipOutsideCsLimit {
                eip: r.eip,
                limit: cs.limit,
            });
        }
        if ss.dpl() != cs.dpl() {
            return Err(ContextError::SsDplNotCsDpl {
                ss: ss.dpl(),
                cs: cs.dpl(),
            });
        }
        for (reg, s) in [(R::Ds, ds), (R::Es, es)] {
            if s.present() && s.dpl() > cs.dpl() {
                return Err(ContextError::DplAboveCsDpl {
                    reg,
                    dpl: s.dpl(),
                    cs: cs.dpl(),
                });
            }
        }
        if r.efer & efer::LMA != 0 && r.efer & efer::LME == 0 {
            return Err(ContextError::LmaWithoutLme);
        }
        let c = Context {
            gprs: Gprs {
                rax: u64::from(r.eax),
                rbx: u64::from(r.ebx),
                rcx: u64::from(r.ecx),
                rdx: u64::from(r.edx),
                rsi: u64::from(r.esi),
                rdi: u64::from(r.edi),
                rbp: u64::from(r.ebp),
                ..Gprs::default()
            },
            rip: u64::from(r.eip),
            rsp: u64::from(r.esp),
            rflags: (u64::from(r.eflags) & rflags::ARCH) | rflags::FIXED,
            cr0: u64::from(r.cr0),
            cr3: u64::from(r.cr3),
            cr4: u64::from(r.cr4),
            efer: r.efer,
            cs,
            ds,
            es,
            ss,
            fs: RESET_DATA,
            gs: RESET_DATA,
            tr,
            ldtr: RESET_LDTR,
            gdtr: RESET_TABLE,
            idtr: RESET_TABLE,
        };
        c.finish(cr4_valid)
    }

    /// `VCPU_HVM_MODE_64B`: 64-bit mode with flat segments. Xen's rules: RIP
    /// canonical, CR0.PG, CR4.PAE and EFER.LME set; RFLAGS reduced to the
    /// architectural flags, bit 1 set. CS is 64-bit code (attributes 0xA9B), DS, ES
    /// and SS flat data (0xC93), all limit `~0`; TR a busy TSS limit 0x67; selectors
    /// and bases 0; FS, GS, LDTR, GDTR and IDTR as after reset. Then the rules common
    /// to both modes (`finish`).
    pub fn from_hvm_64(r: &VcpuHvmX86_64, cr4_valid: u64) -> Result<Context, ContextError> {
        if !is_canonical(r.rip) {
            return Err(ContextError::NonCanonicalRip(r.rip));
        }
        if r.cr0 & cr0::PG == 0 {
            return Err(ContextError::LongModeWithoutPaging);
        }
        if r.cr4 & cr4::PAE == 0 {
            return Err(ContextError::LongModeWithoutPae);
        }
        if r.efer & efer::LME == 0 {
            return Err(ContextError::LongModeWithoutLme);
        }
        let data = Segment::new(0, 0, u32::MAX, attr::DATA32);
        let c = Context {
            gprs: Gprs {
                rax: r.rax,
                rbx: r.rbx,
                rcx: r.rcx,
                rdx: r.rdx,
                rsi: r.rsi,
                rdi: r.rdi,
                rbp: r.rbp,
                ..Gprs::default()
            },
            rip: r.rip,
            rsp: r.rsp,
            rflags: (r.rflags & rflags::ARCH) | rflags::FIXED,
            cr0: r.cr0,
            cr3: r.cr3,
            cr4: r.cr4,
            efer: r.efer,
            cs: Segment::new(0, 0, u32::MAX, attr::CODE64),
            ds: data,
            es: data,
            ss: data,
            fs: RESET_DATA,
            gs: RESET_DATA,
            tr: Segment::new(0, 0, 0x67, attr::TSS_BUSY),
            ldtr: RESET_LDTR,
            gdtr: RESET_TABLE,
            idtr: RESET_TABLE,
        };
        c.finish(cr4_valid)
    }

    /// The rules both modes share: Xen's (EFER.LME makes EFER.LMA, CR4 within
    /// `cr4_valid`, EFER within SCE | LME | LMA | NXE), then what VM entry needs
    /// ([`Context::check_entry`]).
    ///
    /// Xen sets EFER.LMA from EFER.LME alone, and does not check it against CR0.PG
    /// here (`hvm_efer_valid(v, efer, -1)`). LMA with paging off is a state no CPU
    /// can be in and VM entry refuses (SDM Vol. 3C §26.3.1.1: "IA-32e mode guest"
    /// requires CR0.PG): keel derives LMA as the CPU does, LME and PG, and refuses
    /// an explicit LMA with paging off.
    fn finish(mut self, cr4_valid: u64) -> Result<Context, ContextError> {
        let pg = self.cr0 & cr0::PG != 0;
        if self.efer & efer::LMA != 0 && !pg {
            return Err(ContextError::LmaWithoutPaging);
        }
        if self.efer & efer::LME != 0 && pg {
            self.efer |= efer::LMA;
        }
        if self.cr4 & !cr4_valid != 0 {
            return Err(ContextError::Cr4Invalid {
                cr4: self.cr4,
                rejected: self.cr4 & !cr4_valid,
            });
        }
        if self.efer & !efer::VALID != 0 {
            return Err(ContextError::EferInvalid {
                efer: self.efer,
                rejected: self.efer & !efer::VALID,
            });
        }
        self.check_entry()?;
        Ok(self)
    }

    /// What VM entry checks and a guest-supplied state could get wrong, on VMX (SDM
    /// Vol. 3C §26.3.1.1 control registers, §26.3.1.2 segments, §26.3.1.4 RIP and
    /// RFLAGS) or SVM (APM Vol. 2 §15.5.1): CR0 bits 63:32 clear, no PG without PE,
    /// no NW without CD (SVM), CR3 bits 63:52 clear, long mode with paging needs
    /// PAE, PCIDE only in long mode (VMX), CET only with WP (VMX), no RFLAGS.VM
    /// (virtual-8086 mode needs its own segment shapes), CS not both L and D/B
    /// (VMX in IA-32e mode; SVM always), SS.DPL 0 in real mode (VMX), limits that
    /// fit G in CS, TR and the present segments (VMX), RIP below 4 GiB unless in
    /// 64-bit code (VMX). Every constructor's result passes (tested).
    fn check_entry(&self) -> Result<(), ContextError> {
        use ContextError::*;
        let pe = self.cr0 & cr0::PE != 0;
        let pg = self.cr0 & cr0::PG != 0;
        let lma = self.efer & efer::LMA != 0;
        if self.cr0 >> 32 != 0 {
            return Err(Cr0HighBits);
        }
        if pg && !pe {
            return Err(PagingWithoutProtection);
        }
        if self.cr0 & cr0::NW != 0 && self.cr0 & cr0::CD == 0 {
            return Err(NwWithoutCd);
        }
        if self.cr3 >> 52 != 0 {
            return Err(Cr3HighBits);
        }
        if self.efer & efer::LME != 0 && pg && self.cr4 & cr4::PAE == 0 {
            return Err(LongModeWithoutPae);
        }
        if self.cr4 & cr4::PCIDE != 0 && !lma {
            return Err(PcideWithoutLongMode);
        }
        if self.cr4 & cr4::CET != 0 && self.cr0 & cr0::WP == 0 {
            return Err(CetWithoutWp);
        }
        if self.rflags & rflags::VM != 0 {
            return Err(VirtualMode);
        }
        if self.cs.long() && self.cs.default_big() {
            return Err(CsLongAndBig);
        }
        if !pe && self.ss.dpl() != 0 {
            return Err(RealModeDpl);
        }
        for (reg, s, always) in self.segments() {
            if (always || s.present()) && !s.limit_fits_granularity() {
                return Err(LimitGranularity(reg));
            }
        }
        if !(lma && self.cs.long()) && self.rip >> 32 != 0 {
            return Err(RipAbove4G);
        }
        Ok(())
    }

    /// The segment registers, with whether VM entry checks each even when it is null
    /// (CS and TR: they cannot be).
    fn segments(&self) -> [(SegmentRegister, Segment, bool); 8] {
        use SegmentRegister as R;
        [
            (R::Cs, self.cs, true),
            (R::Ds, self.ds, false),
            (R::Es, self.es, false),
            (R::Ss, self.ss, false),
            (R::Fs, self.fs, false),
            (R::Gs, self.gs, false),
            (R::Tr, self.tr, true),
            (R::Ldtr, self.ldtr, false),
        ]
    }

    pub fn gprs(&self) -> &Gprs {
        &self.gprs
    }

    pub fn rip(&self) -> u64 {
        self.rip
    }

    pub fn rsp(&self) -> u64 {
        self.rsp
    }

    pub fn rflags(&self) -> u64 {
        self.rflags
    }

    /// CR0 as the guest sees it.
    pub fn cr0(&self) -> u64 {
        self.cr0
    }

    pub fn cr3(&self) -> u64 {
        self.cr3
    }

    /// CR4 as the guest sees it.
    pub fn cr4(&self) -> u64 {
        self.cr4
    }

    /// EFER, with LMA = LME and CR0.PG.
    pub fn efer(&self) -> u64 {
        self.efer
    }

    pub fn cs(&self) -> Segment {
        self.cs
    }

    pub fn ds(&self) -> Segment {
        self.ds
    }

    pub fn es(&self) -> Segment {
        self.es
    }

    pub fn ss(&self) -> Segment {
        self.ss
    }

    pub fn fs(&self) -> Segment {
        self.fs
    }

    pub fn gs(&self) -> Segment {
        self.gs
    }

    pub fn tr(&self) -> Segment {
        self.tr
    }

    pub fn ldtr(&self) -> Segment {
        self.ldtr
    }

    pub fn gdtr(&self) -> DescriptorTable {
        self.gdtr
    }

    pub fn idtr(&self) -> DescriptorTable {
        self.idtr
    }

    /// The privilege level the state runs at: SS.DPL, 0 in real mode (SDM Vol. 3C
    /// §24.4.1: the CPL is SS.DPL; APM Vol. 2 §15.5.1: the VMCB's CPL field).
    pub fn cpl(&self) -> u8 {
        if self.cr0 & cr0::PE == 0 {
            0
        } else {
            self.ss.dpl()
        }
    }

    /// Whether the state pages with PAE outside long mode, so that the four PDPTEs
    /// at CR3 are loaded with it (SDM Vol. 3A §4.4.1).
    pub fn pae_paging(&self) -> bool {
        self.cr0 & cr0::PG != 0 && self.cr4 & cr4::PAE != 0 && self.efer & efer::LMA == 0
    }
}

/// One of CS, DS, SS, ES or TR of a `vcpu_hvm_x86_32` (Xen's `SEG` macro and
/// `check_segment`): selector 0, the accessed bit set if present (TR's busy bit is
/// the caller's), then Xen's rules in Xen's order.
fn hvm32_segment(
    reg: SegmentRegister,
    ar: u16,
    limit: u32,
    base: u32,
) -> Result<Segment, ContextError> {
    use ContextError::*;
    use SegmentRegister as R;
    let mut s = Segment::new(0, u64::from(base), limit, ar);
    if s.present() && reg != R::Tr {
        s.attr |= attr::ACCESSED;
    }
    if s.attr & attr::RESERVED != 0 {
        return Err(AttrReservedBits(reg));
    }
    if s.attr == 0 {
        return match reg {
            R::Ds | R::Es => Ok(s),
            _ => Err(NullSegment(reg)),
        };
    }
    if reg == R::Tr {
        if s.code_data() {
            return Err(TrNotSystem);
        }
        if s.kind() != attr::TYPE_TSS_BUSY {
            return Err(TrNotTss);
        }
    } else if !s.code_data() {
        return Err(SystemSegment(reg));
    }
    if !s.present() {
        return Err(NotPresent(reg));
    }
    let writable = s.attr & attr::RW != 0;
    let code = s.attr & attr::CODE != 0;
    match reg {
        R::Cs if !code => Err(CsNotCode),
        R::Ss if code || !writable => Err(SsNotWritable),
        R::Ds | R::Es if code && !writable => Err(NotReadable(reg)),
        _ => Ok(s),
    }
}

/// Whether `addr` is canonical for 48-bit linear addresses (Xen
/// `is_canonical_address`): bits 63:47 all equal.
fn is_canonical(addr: u64) -> bool {
    ((addr as i64) >> 47) == ((addr as i64) >> 63)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContextError as E;
    use SegmentRegister as R;

    /// The CR4 bits a domain may set in these tests: VME..OSXMMEXCPT, FSGSBASE,
    /// PCIDE, OSXSAVE, SMEP, SMAP, CET; not VMXE or PKE.
    const CR4_VALID: u64 = 0x0037_07FF | cr4::CET;

    /// What Xen's toolstack (`xg_dom_x86.c`, `vcpu_hvm`) hands a 32-bit vCPU: flat
    /// ring-0 segments and a busy TSS, paging off.
    fn flat32() -> VcpuHvmX86_32 {
        VcpuHvmX86_32 {
            eip: 0x10_0000,
            ebx: 0x1234,
            esp: 0x8000,
            eflags: 0x2,
            cr0: (cr0::PE | cr0::ET) as u32,
            cs_limit: u32::MAX,
            ds_limit: u32::MAX,
            ss_limit: u32::MAX,
            es_limit: u32::MAX,
            tr_limit: 0x67,
            cs_ar: 0xc9b,
            ds_ar: 0xc93,
            ss_ar: 0xc93,
            es_ar: 0xc93,
            tr_ar: 0x8b,
            ..Default::default()
        }
    }

    /// A 64-bit vCPU with 4-level paging.
    fn long64() -> VcpuHvmX86_64 {
        VcpuHvmX86_64 {
            rip: 0xffff_ffff_8100_0000,
            rsi: 0x5000,
            rflags: 0x2,
            cr0: cr0::PE | cr0::ET | cr0::PG | cr0::WP,
            cr3: 0x20_0000,
            cr4: cr4::PAE,
            efer: efer::LME | efer::NXE,
            ..Default::default()
        }
    }

    fn ok32(r: &VcpuHvmX86_32) -> Result<Context, ContextError> {
        Context::from_hvm_32(r, CR4_VALID)
    }

    fn ok64(r: &VcpuHvmX86_64) -> Result<Context, ContextError> {
        Context::from_hvm_64(r, CR4_VALID)
    }

    #[test]
    fn pvh_start_shape() {
        let c = Context::pvh_start(0x10_0080, 0x6000);
        assert_eq!(c.rip(), 0x10_0080);
        assert_eq!(
            *c.gprs(),
            Gprs {
                rbx: 0x6000,
                ..Gprs::default()
            }
        );
        assert_eq!((c.rsp(), c.rflags()), (0, 2));
        assert_eq!((c.cr0(), c.cr3(), c.cr4(), c.efer()), (0x11, 0, 0, 0));
        assert_eq!(c.cs(), Segment::new(0x10, 0, 0xFFFF_FFFF, 0xC9B));
        for s in [c.ds(), c.es(), c.ss(), c.fs(), c.gs()] {
            assert_eq!(s, Segment::new(0x18, 0, 0xFFFF_FFFF, 0xC93));
        }
        assert_eq!(c.tr(), Segment::new(0x20, 0, 0x67, 0x8B));
        assert!(!c.ldtr().present());
        assert_eq!(c.ldtr(), Segment::default());
        for t in [c.gdtr(), c.idtr()] {
            assert_eq!(
                t,
                DescriptorTable {
                    base: 0,
                    limit: 0xFFFF
                }
            );
        }
        assert_eq!(c.cpl(), 0);
        assert!(!c.pae_paging());
        assert_eq!(c.check_entry(), Ok(()));
    }

    #[test]
    fn sipi_shape() {
        for vector in [0u8, 0x10, 0x9F, 0xFF] {
            let c = Context::sipi(vector);
            let sel = u16::from(vector) << 8;
            assert_eq!(
                c.cs(),
                Segment::new(sel, u64::from(vector) << 12, 0xFFFF, 0x9B)
            );
            assert_eq!(c.cs().base, u64::from(sel) << 4);
            for s in [c.ds(), c.es(), c.ss(), c.fs(), c.gs()] {
                assert_eq!(s, Segment::new(0, 0, 0xFFFF, 0x93));
            }
            assert_eq!(c.ldtr(), Segment::new(0, 0, 0xFFFF, 0x82));
            assert_eq!(c.tr(), Segment::new(0, 0, 0xFFFF, 0x8B));
            for t in [c.gdtr(), c.idtr()] {
                assert_eq!(
                    t,
                    DescriptorTable {
                        base: 0,
                        limit: 0xFFFF
                    }
                );
            }
            assert_eq!((c.cr0(), c.cr3(), c.cr4(), c.efer()), (0x10, 0, 0, 0));
            assert_eq!((c.rip(), c.rsp(), c.rflags()), (0, 0, 2));
            assert_eq!(*c.gprs(), Gprs::default());
            assert_eq!(c.cpl(), 0);
            assert_eq!(c.check_entry(), Ok(()));
        }
        assert_eq!(Context::sipi(0x9F).cs().base, 0x9_F000);
    }

    #[test]
    fn sipi_meets_the_real_mode_entry_rules() {
        // SDM Vol. 3C §26.3.1.2 with unrestricted guest and CR0.PE = 0.
        let c = Context::sipi(0x9A);
        assert_eq!(c.cr0() & cr0::PE, 0);
        assert!(matches!(c.cs().kind(), 3 | 9 | 11 | 13 | 15));
        assert_eq!((c.cs().dpl(), c.ss().dpl()), (0, 0));
        assert!(matches!(c.ss().kind(), 3 | 7));
        for s in [c.ds(), c.es(), c.fs(), c.gs()] {
            assert!(s.present() && s.code_data() && s.kind() & 1 == 1);
        }
        assert_eq!(
            (c.ldtr().kind(), c.ldtr().code_data()),
            (attr::TYPE_LDT, false)
        );
        assert!(matches!(c.tr().kind(), 3 | 11) && !c.tr().code_data());
    }

    #[test]
    fn flat_32bit_context() {
        let mut r = flat32();
        r.eflags = !(rflags::VM as u32);
        r.eax = 1;
        r.edi = 7;
        let c = ok32(&r).unwrap();
        assert_eq!(c.rip(), 0x10_0000);
        assert_eq!((c.gprs().rax, c.gprs().rbx, c.gprs().rdi), (1, 0x1234, 7));
        assert_eq!(c.rsp(), 0x8000);
        assert_eq!(c.rflags(), (rflags::ARCH & !rflags::VM) | rflags::FIXED);
        assert_eq!(c.cs(), Segment::new(0, 0, u32::MAX, 0xC9B));
        for s in [c.ds(), c.es(), c.ss()] {
            assert_eq!(s, Segment::new(0, 0, u32::MAX, 0xC93));
        }
        assert_eq!(c.tr(), Segment::new(0, 0, 0x67, 0x8B));
        // What the structure does not carry is as after reset.
        assert_eq!(c.fs(), Segment::new(0, 0, 0xFFFF, 0x93));
        assert_eq!(c.gs(), c.fs());
        assert_eq!(c.ldtr(), Segment::new(0, 0, 0xFFFF, 0x82));
        assert_eq!(
            c.gdtr(),
            DescriptorTable {
                base: 0,
                limit: 0xFFFF
            }
        );
        assert_eq!(c.efer(), 0);
    }

    #[test]
    fn accessed_and_busy_bits_are_set() {
        let mut r = flat32();
        r.cs_ar = 0xc9a;
        r.ds_ar = 0xc92;
        r.tr_ar = 0x89; // an available TSS becomes busy
        let c = ok32(&r).unwrap();
        assert_eq!(
            (c.cs().attr, c.ds().attr, c.tr().attr),
            (0xC9B, 0xC93, 0x8B)
        );
    }

    #[test]
    fn padding() {
        let mut r = flat32();
        r.pad1 = 1;
        assert_eq!(ok32(&r), Err(E::Padding));
        for i in 0..3 {
            let mut r = flat32();
            r.pad2[i] = 1;
            assert_eq!(ok32(&r), Err(E::Padding));
        }
        let mut ctx = VcpuHvmContext {
            mode: VCPU_HVM_MODE_32B,
            pad: 0,
            cpu_regs: [0; 120],
        };
        ctx.cpu_regs.copy_from_slice(&flat32().to_bytes());
        assert!(Context::from_vcpu_hvm(&ctx, CR4_VALID).is_ok());
        ctx.pad = 1;
        assert_eq!(Context::from_vcpu_hvm(&ctx, CR4_VALID), Err(E::Padding));
    }

    #[test]
    fn modes() {
        let mut ctx = VcpuHvmContext {
            mode: VCPU_HVM_MODE_64B,
            pad: 0,
            cpu_regs: [0; 120],
        };
        ctx.cpu_regs[..VcpuHvmX86_64::SIZE].copy_from_slice(&long64().to_bytes());
        let c = Context::from_vcpu_hvm(&ctx, CR4_VALID).unwrap();
        assert_eq!(c, ok64(&long64()).unwrap());
        // The 64-bit registers are the union's first 112 bytes: the rest is ignored.
        ctx.cpu_regs[VcpuHvmX86_64::SIZE..].fill(0xFF);
        assert_eq!(Context::from_vcpu_hvm(&ctx, CR4_VALID), Ok(c));
        ctx.mode = 2;
        assert_eq!(
            Context::from_vcpu_hvm(&ctx, CR4_VALID),
            Err(E::UnknownMode(2))
        );
    }

    #[test]
    fn check_segment_rules() {
        let with = |f: fn(&mut VcpuHvmX86_32)| {
            let mut r = flat32();
            f(&mut r);
            ok32(&r)
        };
        assert_eq!(with(|r| r.ss_ar |= 0x1000), Err(E::AttrReservedBits(R::Ss)));
        assert_eq!(with(|r| r.tr_ar = 0x808b), Err(E::AttrReservedBits(R::Tr)));
        assert_eq!(with(|r| r.cs_ar = 0), Err(E::NullSegment(R::Cs)));
        assert_eq!(with(|r| r.ss_ar = 0), Err(E::NullSegment(R::Ss)));
        assert_eq!(with(|r| r.tr_ar = 0x9b), Err(E::TrNotSystem));
        assert_eq!(with(|r| r.tr_ar = 0x82), Err(E::TrNotTss));
        assert_eq!(with(|r| r.tr_ar = 0x83), Err(E::TrNotTss)); // a 16-bit TSS
        assert_eq!(with(|r| r.tr_ar = 0x0b), Err(E::NotPresent(R::Tr)));
        assert_eq!(with(|r| r.cs_ar = 0x8b), Err(E::SystemSegment(R::Cs)));
        assert_eq!(with(|r| r.es_ar = 0x82), Err(E::SystemSegment(R::Es)));
        assert_eq!(with(|r| r.ds_ar = 0xc13), Err(E::NotPresent(R::Ds)));
        assert_eq!(with(|r| r.cs_ar = 0xc93), Err(E::CsNotCode));
        assert_eq!(with(|r| r.ss_ar = 0xc9b), Err(E::SsNotWritable));
        assert_eq!(with(|r| r.ss_ar = 0xc91), Err(E::SsNotWritable));
        assert_eq!(with(|r| r.ds_ar = 0xc99), Err(E::NotReadable(R::Ds)));
        assert_eq!(with(|r| r.es_ar = 0xc99), Err(E::NotReadable(R::Es)));
        // Null DS/ES are fine (VMX: unusable); readable code in DS too.
        let c = with(|r| {
            r.ds_ar = 0;
            r.es_ar = 0;
        })
        .unwrap();
        assert!(!c.ds().present() && !c.es().present());
        assert_eq!(c.ds().attr, 0);
        assert_eq!(with(|r| r.ds_ar = 0xc9b).unwrap().ds().attr, 0xC9B);
        // A read-only data segment is fine for DS.
        assert_eq!(with(|r| r.ds_ar = 0xc91).unwrap().ds().attr, 0xC91);
    }

    #[test]
    fn eip_within_cs_limit() {
        let mut r = flat32();
        r.cs_ar = 0x9b; // G = 0
        r.cs_limit = 0xFFFF;
        r.eip = 0xFFFF;
        assert!(ok32(&r).is_ok());
        r.eip = 0x1_0000;
        assert_eq!(
            ok32(&r),
            Err(E::EipOutsideCsLimit {
                eip: 0x1_0000,
                limit: 0xFFFF
            })
        );
        // G = 1: the limit given is the byte limit the CPU applies.
        r.cs_ar = 0xc9b;
        r.cs_limit = 0x00FF_FFFF;
        r.eip = 0x00FF_FFFF;
        assert!(ok32(&r).is_ok());
        r.eip = 0x0100_0000;
        assert!(matches!(ok32(&r), Err(E::EipOutsideCsLimit { .. })));
        r.cs_limit = u32::MAX;
        r.eip = u32::MAX;
        assert!(ok32(&r).is_ok());
    }

    #[test]
    fn privilege_levels() {
        let mut r = flat32();
        r.ss_ar = 0xcf3; // DPL 3
        assert_eq!(ok32(&r), Err(E::SsDplNotCsDpl { ss: 3, cs: 0 }));
        r.cs_ar = 0xcfb;
        r.ds_ar = 0xcf3;
        r.es_ar = 0xcf3;
        let c = ok32(&r).unwrap();
        assert_eq!(c.cpl(), 3);
        r.cs_ar = 0xcbb; // DPL 1
        r.ss_ar = 0xcb3;
        assert_eq!(
            ok32(&r),
            Err(E::DplAboveCsDpl {
                reg: R::Ds,
                dpl: 3,
                cs: 1
            })
        );
        r.ds_ar = 0xc93;
        assert_eq!(
            ok32(&r),
            Err(E::DplAboveCsDpl {
                reg: R::Es,
                dpl: 3,
                cs: 1
            })
        );
        // A null ES's DPL does not count.
        r.es_ar = 0;
        assert!(ok32(&r).is_ok());
    }

    #[test]
    fn efer_rules_32bit() {
        let mut r = flat32();
        r.efer = efer::LMA;
        assert_eq!(ok32(&r), Err(E::LmaWithoutLme));
        // LMA asked for with paging off: no CPU state has that.
        r.efer = efer::LMA | efer::LME;
        assert_eq!(ok32(&r), Err(E::LmaWithoutPaging));
        // LME without paging: long mode enabled, not active.
        r.efer = efer::LME;
        assert_eq!(ok32(&r).unwrap().efer(), efer::LME);
        // LME with paging and PAE: compatibility mode, LMA derived.
        r.cr0 |= cr0::PG as u32;
        r.cr4 = cr4::PAE as u32;
        let c = ok32(&r).unwrap();
        assert_eq!(c.efer(), efer::LME | efer::LMA);
        assert!(!c.pae_paging());
        // ...but not without PAE.
        r.cr4 = 0;
        assert_eq!(ok32(&r), Err(E::LongModeWithoutPae));
        // NXE is fine, SVME is not.
        r.efer = efer::NXE;
        assert!(ok32(&r).is_ok());
        r.efer = 1 << 12;
        assert_eq!(
            ok32(&r),
            Err(E::EferInvalid {
                efer: 1 << 12,
                rejected: 1 << 12
            })
        );
    }

    #[test]
    fn pae_paging_32bit() {
        let mut r = flat32();
        r.cr0 |= cr0::PG as u32;
        r.cr4 = cr4::PAE as u32;
        r.cr3 = 0x10_0000;
        let c = ok32(&r).unwrap();
        assert!(c.pae_paging());
        assert_eq!(c.efer(), 0);
    }

    #[test]
    fn cr4_must_be_valid() {
        let mut r = flat32();
        r.cr4 = 1 << 13; // VMXE
        assert_eq!(
            ok32(&r),
            Err(E::Cr4Invalid {
                cr4: 1 << 13,
                rejected: 1 << 13
            })
        );
        let mut r = long64();
        r.cr4 |= 1 << 22; // PKE, not in the policy below
        assert_eq!(
            Context::from_hvm_64(&r, cr4::PAE),
            Err(E::Cr4Invalid {
                cr4: cr4::PAE | 1 << 22,
                rejected: 1 << 22
            })
        );
    }

    #[test]
    fn control_register_entry_rules() {
        let mut r = flat32();
        r.cr0 = cr0::PG as u32;
        assert_eq!(ok32(&r), Err(E::PagingWithoutProtection));
        r.cr0 = (cr0::PE | cr0::NW) as u32;
        assert_eq!(ok32(&r), Err(E::NwWithoutCd));
        r.cr0 = (cr0::PE | cr0::NW | cr0::CD) as u32;
        assert!(ok32(&r).is_ok());
        r.cr0 = cr0::PE as u32;
        r.cr4 = cr4::PCIDE as u32;
        assert_eq!(ok32(&r), Err(E::PcideWithoutLongMode));
        r.cr4 = cr4::CET as u32;
        assert_eq!(ok32(&r), Err(E::CetWithoutWp));
        r.cr0 |= cr0::WP as u32;
        assert!(ok32(&r).is_ok());

        let mut r = long64();
        r.cr0 |= 1 << 32;
        assert_eq!(ok64(&r), Err(E::Cr0HighBits));
        let mut r = long64();
        r.cr3 = 1 << 52 | 0x1000;
        assert_eq!(ok64(&r), Err(E::Cr3HighBits));
        r.cr3 = (1 << 52) - 0x1000;
        assert!(ok64(&r).is_ok());
        let mut r = long64();
        r.cr0 &= !cr0::PE;
        assert_eq!(ok64(&r), Err(E::PagingWithoutProtection));
        let mut r = long64();
        r.cr4 |= cr4::PCIDE;
        assert!(ok64(&r).is_ok());
        r.cr4 |= cr4::CET;
        r.cr0 &= !cr0::WP;
        assert_eq!(ok64(&r), Err(E::CetWithoutWp));
    }

    #[test]
    fn rflags_rules() {
        let mut r = flat32();
        r.eflags = 0;
        assert_eq!(ok32(&r).unwrap().rflags(), 2);
        r.eflags = 0xFFC0_8028; // reserved bits only
        assert_eq!(ok32(&r).unwrap().rflags(), 2);
        r.eflags = rflags::VM as u32;
        assert_eq!(ok32(&r), Err(E::VirtualMode));
        let mut r = long64();
        r.rflags = !rflags::VM;
        assert_eq!(ok64(&r).unwrap().rflags(), (rflags::ARCH & !rflags::VM) | 2);
        r.rflags = rflags::VM | 0x200;
        assert_eq!(ok64(&r), Err(E::VirtualMode));
    }

    #[test]
    fn segment_entry_rules() {
        let mut r = flat32();
        r.cs_ar = 0x69b; // L and D
        assert_eq!(ok32(&r), Err(E::CsLongAndBig));
        // L alone, outside long mode, is tolerated (the CPU ignores it).
        r.cs_ar = 0xa9b;
        assert!(ok32(&r).is_ok());
        // Real mode needs SS.DPL 0.
        let mut r = flat32();
        r.cr0 = cr0::ET as u32;
        r.cs_ar = 0xcfb;
        r.ss_ar = 0xcf3;
        r.ds_ar = 0xcf3;
        r.es_ar = 0xcf3;
        assert_eq!(ok32(&r), Err(E::RealModeDpl));
        r.cs_ar = 0xc9b;
        r.ss_ar = 0xc93;
        r.ds_ar = 0xc93;
        r.es_ar = 0xc93;
        let c = ok32(&r).unwrap();
        assert_eq!(c.cpl(), 0);
        // Limits must fit G.
        let mut r = flat32();
        r.ds_limit = 0x10_0000; // G = 1 but low 12 bits not all ones
        assert_eq!(ok32(&r), Err(E::LimitGranularity(R::Ds)));
        let mut r = flat32();
        r.cs_ar = 0x49b; // G = 0 but limit above 1 MiB
        assert_eq!(ok32(&r), Err(E::LimitGranularity(R::Cs)));
        let mut r = flat32();
        r.tr_ar = 0x88b;
        assert_eq!(ok32(&r), Err(E::LimitGranularity(R::Tr)));
        // A null segment's limit is not checked.
        let mut r = flat32();
        r.es_ar = 0;
        r.es_limit = 0x10_0000;
        assert!(ok32(&r).is_ok());
    }

    #[test]
    fn rip_above_4g_outside_64bit_code() {
        let mut c = Context::pvh_start(0, 0);
        c.rip = 1 << 32;
        assert_eq!(c.check_entry(), Err(E::RipAbove4G));
        let c = ok64(&long64()).unwrap();
        assert!(c.rip() >> 32 != 0);
        assert_eq!(c.check_entry(), Ok(()));
    }

    #[test]
    fn long_mode_context() {
        let c = ok64(&long64()).unwrap();
        assert_eq!(c.rip(), 0xffff_ffff_8100_0000);
        assert_eq!(c.gprs().rsi, 0x5000);
        assert_eq!(c.efer(), efer::LME | efer::LMA | efer::NXE);
        assert_eq!(c.cs(), Segment::new(0, 0, u32::MAX, 0xA9B));
        assert!(c.cs().long() && !c.cs().default_big());
        for s in [c.ds(), c.es(), c.ss()] {
            assert_eq!(s, Segment::new(0, 0, u32::MAX, 0xC93));
        }
        assert_eq!(c.tr(), Segment::new(0, 0, 0x67, 0x8B));
        assert_eq!(c.fs(), Segment::new(0, 0, 0xFFFF, 0x93));
        assert_eq!(c.gs(), c.fs());
        assert_eq!(c.ldtr(), Segment::new(0, 0, 0xFFFF, 0x82));
        assert_eq!(
            c.idtr(),
            DescriptorTable {
                base: 0,
                limit: 0xFFFF
            }
        );
        assert_eq!(c.cpl(), 0);
        assert!(!c.pae_paging());
    }

    #[test]
    fn long_mode_rules() {
        let mut r = long64();
        r.rip = 0x0000_8000_0000_0000;
        assert_eq!(ok64(&r), Err(E::NonCanonicalRip(0x0000_8000_0000_0000)));
        r.rip = 0x0000_7FFF_FFFF_FFFF;
        assert!(ok64(&r).is_ok());
        let mut r = long64();
        r.cr0 &= !cr0::PG;
        assert_eq!(ok64(&r), Err(E::LongModeWithoutPaging));
        let mut r = long64();
        r.cr4 = 0;
        assert_eq!(ok64(&r), Err(E::LongModeWithoutPae));
        let mut r = long64();
        r.efer = efer::NXE;
        assert_eq!(ok64(&r), Err(E::LongModeWithoutLme));
        let mut r = long64();
        r.efer |= efer::LMA;
        assert!(ok64(&r).is_ok());
        r.efer |= 1 << 12;
        assert!(matches!(ok64(&r), Err(E::EferInvalid { .. })));
    }

    #[test]
    fn segment_helpers() {
        let s = Segment::new(0x10, 0, u32::MAX, 0xDFB);
        assert_eq!((s.kind(), s.dpl()), (0xB, 3));
        assert!(s.present() && s.code_data() && s.is_code());
        assert!(s.avl() && !s.long() && s.default_big() && s.granularity());
        assert!(s.limit_fits_granularity());
        let tss = Segment::new(0x20, 0, 0x67, attr::TSS_BUSY);
        assert!(!tss.code_data() && !tss.is_code() && tss.limit_fits_granularity());
        assert!(Segment::new(0, 0, 0xFFF, attr::G).limit_fits_granularity());
        assert!(!Segment::new(0, 0, 0xFFE, attr::G).limit_fits_granularity());
        assert!(Segment::new(0, 0, 0xF_FFFF, 0).limit_fits_granularity());
        assert!(!Segment::new(0, 0, 0x10_0000, 0).limit_fits_granularity());
    }

    #[test]
    fn messages() {
        assert_eq!(
            E::NotPresent(R::Ldtr).to_string(),
            "LDTR: non-present segment provided"
        );
        assert_eq!(
            E::EipOutsideCsLimit {
                eip: 0x10000,
                limit: 0xffff
            }
            .to_string(),
            "EIP 0x10000 is outside the CS limit 0xffff"
        );
        assert_eq!(
            E::UnknownMode(7).to_string(),
            "mode 7 is neither 32B (0) nor 64B (1)"
        );
    }
}
