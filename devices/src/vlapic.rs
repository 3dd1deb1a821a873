//! The virtual local APIC a PVH vCPU sees (Xen's `vlapic`): the xAPIC register model,
//! interrupt acceptance and priority, IPIs and the APIC timer, as pure logic.
//!
//! # Why keel emulates it
//!
//! Linux booted as a PVH domU still probes the local APIC: it reads the ID and
//! version, programs SVR, the LVTs and TPR, scans IRR/ISR for stale bits and EOIs
//! them, sends itself IPIs through the ICR (irq_work) and masks everything before it
//! halts. An unbacked page that reads all-ones looks like "APIC id 255, every IRR bit
//! stale" and sends it into an EOI loop. This module is the register file behind that
//! page; the caller (the VM-exit glue) routes MMIO at [`APIC_BASE_ADDR`], the
//! `IA32_APIC_BASE` MSR, interrupt injection and the timer through it.
//!
//! Facts: Intel SDM Vol. 3A ch. 11 "Advanced Programmable Interrupt Controller"
//! (register map Table 11-1, §11.4.4 `IA32_APIC_BASE`, §11.4.7 reset and software
//! disable, §11.5 LVT/timer/ESR, §11.6 ICR and destinations, §11.8 priority, IRR/ISR/TMR
//! and EOI) and AMD APM Vol. 2 ch. 16.
//!
//! # The model
//!
//! * xAPIC only: x2APIC and TSC-deadline are hidden in CPUID, so setting
//!   `IA32_APIC_BASE.EXTD` is refused and LVT timer mode `10` (TSC-deadline) leaves the
//!   timer disarmed. Registers are keyed by their MMIO offset (the [`reg`] constants),
//!   so an x2APIC MSR front end (`msr = 0x800 + offset / 16`) can be added later.
//! * The APIC ID register is **read-only** (some real parts let xAPIC software write
//!   it; Xen and keel do not). Version = [`VERSION`]: 6 LVT entries, version 0x14.
//! * Accesses are 32 bits wide at 16-byte aligned offsets. [`Vlapic::read_mmio`]
//!   answers any read of 1..=8 bytes with the bytes of the containing registers
//!   (the 12 bytes after each register read 0). [`Vlapic::write_mmio`] refuses any
//!   write that is not a 4-byte access at a 4-byte aligned offset
//!   ([`VlapicError::BadWrite`]); the caller crashes the domain with that message.
//!   Aligned writes inside a register's slot but off its first dword are reserved.
//! * Reserved offsets read 0 and drop writes; writes to read-only registers are
//!   dropped. Both are reported ([`WriteEffect::Ignored`], [`Vlapic::access`]) so the
//!   caller may log them once. ESR bit 7 (illegal register address) is not raised.
//! * While `IA32_APIC_BASE.EN` is clear the page is unbacked: [`Vlapic::read`] gives
//!   all-ones, writes are ignored, nothing is accepted. Clearing or setting EN resets
//!   every register to the power-on state (SDM §11.4.3, §11.4.7.1), ID excepted.
//! * Software disable (SVR bit 8 clear, the power-on state): every LVT gets its mask
//!   bit set and keeps it on writes; fixed interrupts are not accepted (as in Xen)
//!   and [`Vlapic::pending`] is `None`. IRR/ISR are kept.
//! * Priority (SDM §11.8.3.1): PPR = TPR if TPR\[7:4\] >= ISRV\[7:4\], else
//!   ISRV & 0xF0, where ISRV is the highest vector in service. An IRR vector is
//!   deliverable only if its class (bits 7:4) is above PPR's.
//! * ICR: writing the low word sends. The send is returned as an [`Ipi`] for the
//!   caller to route; nothing is delivered here, not even to self. Delivery status
//!   (bit 12) always reads 0. Fixed or lowest-priority with a vector below 16 sets
//!   ESR "send illegal vector" and sends nothing; reserved delivery modes (3, 7) send
//!   nothing. Lowest priority is reported as such; the caller picks one target.
//! * ESR: errors accumulate invisibly; a write to ESR copies them into the readable
//!   ESR and clears the accumulator (SDM §11.5.3). Each detected error accepts the
//!   error LVT's vector when that LVT is unmasked.
//! * Timer: 1 bus tick = 1 ns before the divider (a 1 GHz APIC bus). The timer is
//!   an absolute deadline in the caller's ns clock; the current count is derived
//!   from it. Changing the divider mid-count keeps the remaining ticks and counts
//!   them at the new rate.
//! * Not modelled: APR (reads 0), remote read (RRD reads 0), focus processor
//!   checking, directed EOI, SMI/NMI/INIT/ExtINT delivery through LINT0/LINT1 and
//!   the thermal/perf/CMCI sources (those LVTs are storage only).
//!
//! # Times
//!
//! The caller passes its monotonic ns clock (`now_ns`) wherever time matters: to
//! [`Vlapic::read`]/[`Vlapic::read_mmio`] (current count), to
//! [`Vlapic::write`]/[`Vlapic::write_mmio`] (initial count and divider writes), and
//! to [`Vlapic::timer_fire`]. After every write, and after `timer_fire`, it should
//! re-read [`Vlapic::timer_deadline`] and re-arm its own timer, and re-check
//! [`Vlapic::pending`].
//!
//! # Invariants
//!
//! * No vector below 16 is ever set in IRR or ISR (they are refused at acceptance,
//!   and ISR is filled from IRR only).
//! * `pending() == Some(v)` implies `v >> 4 > ppr >> 4`, the APIC is globally and
//!   software enabled, and `v` is set in IRR.
//! * While software-disabled every LVT has its mask bit set.
//! * After `timer_fire(now)` returns, the deadline (if any) is after `now`.
//! * No input panics: every offset, size, value and time is accepted, and all timer
//!   arithmetic saturates.
//!
//! # Locking
//!
//! None here. A `Vlapic` belongs to one vCPU; the caller serialises access (the
//! vCPU's own exits, plus other vCPUs' IPIs and device interrupts through
//! [`Vlapic::accept`] under whatever lock guards that vCPU's state).
#![forbid(unsafe_code)]

use core::fmt;

/// The only APIC base keel offers (the architectural default).
pub const APIC_BASE_ADDR: u64 = 0xFEE0_0000;
/// `IA32_APIC_BASE` MSR number.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// `IA32_APIC_BASE` bit 8: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10: x2APIC mode (refused: keel does not offer x2APIC).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11: the APIC is globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// Size of the APIC register page.
pub const APIC_PAGE_SIZE: u32 = 0x1000;
/// The version register: max LVT entry 5 (six LVTs) in bits 23:16, version 0x14
/// (an integrated xAPIC) in bits 7:0; no directed-EOI support (bit 24).
pub const VERSION: u32 = 0x0005_0014;

/// Register offsets in the APIC page (SDM Vol. 3A Table 11-1).
pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const APR: u32 = 0x90;
    pub const PPR: u32 = 0xA0;
    pub const EOI: u32 = 0xB0;
    pub const RRD: u32 = 0xC0;
    pub const LDR: u32 = 0xD0;
    pub const DFR: u32 = 0xE0;
    pub const SVR: u32 = 0xF0;
    /// ISR bits 31:0; the eight words are at `ISR + 0x10 * i`.
    pub const ISR: u32 = 0x100;
    /// TMR bits 31:0; the eight words are at `TMR + 0x10 * i`.
    pub const TMR: u32 = 0x180;
    /// IRR bits 31:0; the eight words are at `IRR + 0x10 * i`.
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const LVT_CMCI: u32 = 0x2F0;
    pub const ICR_LO: u32 = 0x300;
    pub const ICR_HI: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// LVT bit 16: the entry is masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;

/// ESR bit 5: an ICR write named an illegal vector (SDM §11.5.3).
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: an illegal vector was received (or raised by an LVT).
pub const ESR_RECV_ILLEGAL_VECTOR: u32 = 1 << 6;

const LVT_RESET: u32 = LVT_MASKED;
const SVR_RESET: u32 = 0xFF;
const DFR_RESET: u32 = 0xFFFF_FFFF;
/// SVR: vector, software enable, focus processor checking.
const SVR_WRITABLE: u32 = 0x3FF;
/// ICR low: vector, delivery mode, destination mode, level, trigger, shorthand.
const ICR_LO_WRITABLE: u32 = 0x000C_CFFF;
const ICR_HI_WRITABLE: u32 = 0xFF00_0000;
/// Divide configuration bits 0, 1 and 3.
const DIVIDE_WRITABLE: u32 = 0b1011;
const TIMER_MODE_SHIFT: u32 = 17;
/// The highest vector that is illegal for fixed delivery (SDM §11.5.2).
const LAST_ILLEGAL_VECTOR: u8 = 15;

/// The local vector table entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    Cmci,
    Timer,
    Thermal,
    Perf,
    Lint0,
    Lint1,
    Error,
}

impl Lvt {
    const ALL: [Lvt; 7] = [
        Lvt::Cmci,
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::Perf,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
    ];

    /// The entry's register offset.
    pub const fn offset(self) -> u32 {
        match self {
            Lvt::Cmci => reg::LVT_CMCI,
            Lvt::Timer => reg::LVT_TIMER,
            Lvt::Thermal => reg::LVT_THERMAL,
            Lvt::Perf => reg::LVT_PERF,
            Lvt::Lint0 => reg::LVT_LINT0,
            Lvt::Lint1 => reg::LVT_LINT1,
            Lvt::Error => reg::LVT_ERROR,
        }
    }

    fn from_offset(offset: u32) -> Option<Lvt> {
        Lvt::ALL.into_iter().find(|l| l.offset() == offset)
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// The bits software may write (SDM Figure 11-8). Delivery status (12) and remote
    /// IRR (14) are read-only and never set here.
    const fn writable(self) -> u32 {
        match self {
            // vector, delivery mode, mask
            Lvt::Cmci | Lvt::Thermal | Lvt::Perf => 0x0001_07FF,
            // vector, mask, timer mode
            Lvt::Timer => 0x0007_00FF,
            // vector, delivery mode, polarity, trigger mode, mask
            Lvt::Lint0 | Lvt::Lint1 => 0x0001_A7FF,
            // vector, mask
            Lvt::Error => 0x0001_00FF,
        }
    }
}

/// What kind of access a register offset allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// Writes are dropped.
    ReadOnly,
    /// Reads give 0 (EOI).
    WriteOnly,
    /// No register: reads give 0, writes are dropped.
    Reserved,
}

/// Why a write had no effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// The offset holds no register.
    Reserved,
    /// The register is read-only.
    ReadOnly,
    /// The APIC is globally disabled (`IA32_APIC_BASE.EN` clear).
    Disabled,
}

/// What a register write asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// Nothing beyond the register update (including an EOI with nothing in service
    /// and an ICR write that sent nothing).
    Done,
    /// The write was dropped; the caller may log this once.
    Ignored(Ignored),
    /// An EOI retired `vector`. With `level` (its TMR bit set) the caller should
    /// forward the EOI to the interrupt's source (an IO-APIC's remote IRR).
    Eoi { vector: u8, level: bool },
    /// An ICR write sent an IPI; the caller routes it (see [`Vlapic::targets_me`]).
    Ipi(Ipi),
}

/// ICR bits 18-19.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// Use the destination field.
    None,
    /// The sender only (Linux's irq_work self-IPI).
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// ICR bit 11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestMode {
    Physical,
    Logical,
}

/// ICR bits 8-10 (values 3 and 7 are reserved and send nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
}

/// ICR bit 15.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// An inter-processor interrupt, as written to the ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// The sender's APIC ID (needed to resolve the "self" shorthands).
    pub source: u8,
    pub shorthand: Shorthand,
    /// ICR bits 63:56; meaningful only with [`Shorthand::None`].
    pub dest: u8,
    pub dest_mode: DestMode,
    pub delivery: DeliveryMode,
    /// For fixed/lowest priority: the vector (>= 16); for start-up: the start page.
    pub vector: u8,
    /// ICR bit 14 (assert).
    pub level: bool,
    pub trigger: Trigger,
}

impl Ipi {
    /// The "INIT level de-assert" message (INIT, level-triggered, de-assert), which
    /// modern processors ignore (SDM §11.6.1).
    pub fn is_init_deassert(&self) -> bool {
        self.delivery == DeliveryMode::Init && self.trigger == Trigger::Level && !self.level
    }
}

/// What [`Vlapic::accept`] did with an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Set in IRR.
    Accepted,
    /// Vector 0-15: dropped, ESR "receive illegal vector" set.
    IllegalVector,
    /// The APIC is globally or software disabled: dropped.
    Disabled,
}

/// Errors of the local APIC model. The doc comment of each variant is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VlapicError {
    /// IA32_APIC_BASE write sets the x2APIC enable bit, which keel does not offer
    ApicBaseX2apic,
    /// IA32_APIC_BASE write sets reserved bits
    ApicBaseReserved,
    /// IA32_APIC_BASE write moves the APIC away from 0xFEE00000
    ApicBaseMoved,
    /// local APIC write is not a 32-bit access at a 32-bit aligned offset
    BadWrite { offset: u32, size: usize },
    /// local APIC read is not 1 to 8 bytes wide
    BadReadSize { size: usize },
}

impl fmt::Display for VlapicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlapicError::ApicBaseX2apic => f.write_str(
                "IA32_APIC_BASE write sets the x2APIC enable bit, which keel does not offer",
            ),
            VlapicError::ApicBaseReserved => f.write_str("IA32_APIC_BASE write sets reserved bits"),
            VlapicError::ApicBaseMoved => {
                f.write_str("IA32_APIC_BASE write moves the APIC away from 0xFEE00000")
            }
            VlapicError::BadWrite { offset, size } => write!(
                f,
                "local APIC write is not a 32-bit access at a 32-bit aligned offset \
                 (offset {offset:#x}, {size} bytes)"
            ),
            VlapicError::BadReadSize { size } => {
                write!(f, "local APIC read is not 1 to 8 bytes wide ({size} bytes)")
            }
        }
    }
}

/// A 256-bit vector set laid out as the APIC's IRR/ISR/TMR words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VectorSet([u32; 8]);

impl VectorSet {
    fn set(&mut self, v: u8) {
        self.0[usize::from(v >> 5)] |= 1 << (v & 31);
    }

    fn clear(&mut self, v: u8) {
        self.0[usize::from(v >> 5)] &= !(1 << (v & 31));
    }

    fn test(&self, v: u8) -> bool {
        self.0[usize::from(v >> 5)] & (1 << (v & 31)) != 0
    }

    fn highest(&self) -> Option<u8> {
        (0u8..8).rev().find_map(|i| {
            let w = self.0[usize::from(i)];
            // 31 - leading_zeros < 32 when w != 0, so the sum fits in a u8.
            (w != 0).then(|| i * 32 + (31 - w.leading_zeros() as u8))
        })
    }

    /// Word `i` (0..8) of the register group whose first word is at `base`.
    fn word_at(&self, base: u32, offset: u32) -> Option<u32> {
        let i = offset.checked_sub(base)? / 0x10;
        self.0.get(usize::try_from(i).ok()?).copied()
    }
}

/// LVT timer mode (bits 18:17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    /// TSC-deadline (not offered) or the reserved mode: the timer stays disarmed.
    Unsupported,
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct Vlapic {
    id: u8,
    bsp: bool,
    /// `IA32_APIC_BASE.EN`.
    enabled: bool,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    /// The readable ESR, as of the last ESR write.
    esr: u32,
    /// Errors detected since the last ESR write.
    esr_pending: u32,
    lvt: [u32; 7],
    icr_lo: u32,
    icr_hi: u32,
    timer_initial: u32,
    timer_divide: u32,
    /// The ns time of the next expiry, while the timer is armed.
    timer_deadline: Option<u64>,
}

impl Vlapic {
    /// A local APIC in its power-on state (globally enabled, software disabled), with
    /// APIC ID `id`; `bsp` for vCPU 0.
    pub fn new(id: u8, bsp: bool) -> Self {
        let mut v = Vlapic {
            id,
            bsp,
            enabled: true,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            lvt: [0; 7],
            icr_lo: 0,
            icr_hi: 0,
            timer_initial: 0,
            timer_divide: 0,
            timer_deadline: None,
        };
        v.reset();
        v
    }

    /// Power-on reset (SDM §11.4.7.1): `IA32_APIC_BASE` back to enabled at
    /// [`APIC_BASE_ADDR`] and every register to its reset value; the ID is kept.
    pub fn reset(&mut self) {
        self.enabled = true;
        self.reset_registers();
    }

    /// An INIT (SDM §11.4.7.3): every register to its reset value, the ID and
    /// `IA32_APIC_BASE` kept.
    pub fn init(&mut self) {
        self.reset_registers();
    }

    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = DFR_RESET;
        self.svr = SVR_RESET;
        self.isr = VectorSet::default();
        self.tmr = VectorSet::default();
        self.irr = VectorSet::default();
        self.esr = 0;
        self.esr_pending = 0;
        self.lvt = [LVT_RESET; 7];
        self.icr_lo = 0;
        self.icr_hi = 0;
        self.timer_initial = 0;
        self.timer_divide = 0;
        self.timer_deadline = None;
    }

    /// This APIC's ID.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Globally enabled (`IA32_APIC_BASE.EN`): when false the caller treats the page
    /// as unbacked.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Software enabled (SVR bit 8) as well as globally enabled.
    pub fn is_sw_enabled(&self) -> bool {
        self.enabled && self.svr & SVR_ENABLE != 0
    }

    // ---- IA32_APIC_BASE -------------------------------------------------------------

    /// The `IA32_APIC_BASE` value RDMSR returns.
    pub fn apic_base_msr(&self) -> u64 {
        let mut v = APIC_BASE_ADDR;
        if self.bsp {
            v |= APIC_BASE_BSP;
        }
        if self.enabled {
            v |= APIC_BASE_ENABLE;
        }
        v
    }

    /// WRMSR `IA32_APIC_BASE`. Only EN may change (the BSP bit is the vCPU's, and a
    /// written value of it is ignored); an `Err` is a #GP for the guest. Changing EN
    /// resets the registers.
    pub fn set_apic_base_msr(&mut self, value: u64) -> Result<(), VlapicError> {
        if value & APIC_BASE_EXTD != 0 {
            return Err(VlapicError::ApicBaseX2apic);
        }
        // Bits 7:0 and 9 are reserved; bits 12 and up are the base (up to MAXPHYADDR,
        // reserved above it), which must stay where it is.
        if value & 0x2FF != 0 {
            return Err(VlapicError::ApicBaseReserved);
        }
        if value & !0xFFF != APIC_BASE_ADDR {
            return Err(VlapicError::ApicBaseMoved);
        }
        let enable = value & APIC_BASE_ENABLE != 0;
        if enable != self.enabled {
            self.enabled = enable;
            self.reset_registers();
        }
        Ok(())
    }

    // ---- registers ------------------------------------------------------------------

    /// How the register at `offset` may be accessed (offsets that are not 16-byte
    /// aligned, and everything past the last register, are reserved).
    pub fn access(offset: u32) -> Access {
        if !offset.is_multiple_of(0x10) {
            return Access::Reserved;
        }
        match offset {
            reg::ID | reg::VERSION | reg::APR | reg::PPR | reg::RRD | reg::TIMER_CURRENT => {
                Access::ReadOnly
            }
            reg::ISR..=0x270 => Access::ReadOnly, // ISR, TMR, IRR
            reg::EOI => Access::WriteOnly,
            reg::TPR
            | reg::LDR
            | reg::DFR
            | reg::SVR
            | reg::ESR
            | reg::ICR_LO
            | reg::ICR_HI
            | reg::TIMER_INITIAL
            | reg::TIMER_DIVIDE => Access::ReadWrite,
            _ if Lvt::from_offset(offset).is_some() => Access::ReadWrite,
            _ => Access::Reserved,
        }
    }

    /// The 32-bit register at `offset` (all-ones while globally disabled; 0 for a
    /// reserved or write-only offset).
    pub fn read(&self, offset: u32, now_ns: u64) -> u32 {
        if !self.enabled {
            return u32::MAX;
        }
        if !offset.is_multiple_of(0x10) {
            return 0;
        }
        match offset {
            reg::ID => u32::from(self.id) << 24,
            reg::VERSION => VERSION,
            reg::TPR => self.tpr,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            reg::ISR..=0x170 => self.isr.word_at(reg::ISR, offset).unwrap_or(0),
            reg::TMR..=0x1F0 => self.tmr.word_at(reg::TMR, offset).unwrap_or(0),
            reg::IRR..=0x270 => self.irr.word_at(reg::IRR, offset).unwrap_or(0),
            reg::ESR => self.esr,
            reg::ICR_LO => self.icr_lo,
            reg::ICR_HI => self.icr_hi,
            reg::TIMER_INITIAL => self.timer_initial,
            reg::TIMER_CURRENT => self.current_count(now_ns),
            reg::TIMER_DIVIDE => self.timer_divide,
            _ => Lvt::from_offset(offset).map_or(0, |l| self.lvt[l.index()]),
        }
    }

    /// An MMIO read of `size` (1..=8) bytes at page offset `offset`: the bytes of the
    /// containing registers, little-endian, zero for the reserved bytes of each
    /// 16-byte slot and past the page (all-ones while globally disabled).
    pub fn read_mmio(&self, offset: u32, size: usize, now_ns: u64) -> Result<u64, VlapicError> {
        if !(1..=8).contains(&size) {
            return Err(VlapicError::BadReadSize { size });
        }
        if !self.enabled {
            return Ok(u64::MAX >> (64 - 8 * size));
        }
        let mut value = 0u64;
        for i in 0..size {
            let at = u64::from(offset) + i as u64;
            let byte = match u32::try_from(at) {
                Ok(at) if at < APIC_PAGE_SIZE && at % 0x10 < 4 => {
                    let reg = self.read(at & !0xF, now_ns);
                    (reg >> (8 * (at % 4))) & 0xFF
                }
                _ => 0,
            };
            value |= u64::from(byte) << (8 * i);
        }
        Ok(value)
    }

    /// An MMIO write of `size` bytes at page offset `offset`: only 4-byte writes at a
    /// 4-byte aligned offset are accepted (see the module doc).
    pub fn write_mmio(
        &mut self,
        offset: u32,
        size: usize,
        value: u64,
        now_ns: u64,
    ) -> Result<WriteEffect, VlapicError> {
        if size != 4 || !offset.is_multiple_of(4) {
            return Err(VlapicError::BadWrite { offset, size });
        }
        // size == 4: the low 32 bits are the whole access.
        Ok(self.write(offset, value as u32, now_ns))
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write(&mut self, offset: u32, value: u32, now_ns: u64) -> WriteEffect {
        if !self.enabled {
            return WriteEffect::Ignored(Ignored::Disabled);
        }
        match Self::access(offset) {
            Access::Reserved => return WriteEffect::Ignored(Ignored::Reserved),
            Access::ReadOnly => return WriteEffect::Ignored(Ignored::ReadOnly),
            Access::ReadWrite | Access::WriteOnly => {}
        }
        match offset {
            reg::TPR => self.tpr = value & 0xFF,
            reg::EOI => return self.eoi(),
            reg::LDR => self.ldr = value & 0xFF00_0000,
            reg::DFR => self.dfr = (value & 0xF000_0000) | 0x0FFF_FFFF,
            reg::SVR => self.write_svr(value),
            reg::ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            reg::ICR_LO => {
                self.icr_lo = value & ICR_LO_WRITABLE;
                return self.send_ipi();
            }
            reg::ICR_HI => self.icr_hi = value & ICR_HI_WRITABLE,
            reg::TIMER_INITIAL => self.write_initial_count(value, now_ns),
            reg::TIMER_DIVIDE => self.write_divide(value, now_ns),
            _ => {
                if let Some(lvt) = Lvt::from_offset(offset) {
                    self.write_lvt(lvt, value);
                }
            }
        }
        WriteEffect::Done
    }

    /// The LVT entry `which`, as the guest would read it.
    pub fn lvt(&self, which: Lvt) -> u32 {
        self.lvt[which.index()]
    }

    /// CR8 as the guest sees it in 64-bit mode: TPR\[7:4\] (SDM §11.8.6.1).
    pub fn cr8(&self) -> u8 {
        (self.tpr >> 4) as u8
    }

    /// MOV to CR8: TPR = `cr8[3:0] << 4` (the caller raises #GP for bits above 3).
    pub fn set_cr8(&mut self, cr8: u8) {
        self.tpr = u32::from(cr8 & 0xF) << 4;
    }

    fn write_svr(&mut self, value: u32) {
        self.svr = value & SVR_WRITABLE;
        if self.svr & SVR_ENABLE == 0 {
            // SDM §11.4.7.2: software disable masks every LVT.
            for l in &mut self.lvt {
                *l |= LVT_MASKED;
            }
        }
    }

    fn write_lvt(&mut self, lvt: Lvt, value: u32) {
        let mut v = value & lvt.writable();
        if !self.is_sw_enabled() {
            v |= LVT_MASKED;
        }
        let slot = &mut self.lvt[lvt.index()];
        let old = *slot;
        *slot = v;
        if lvt == Lvt::Timer {
            let unsupported = |x: u32| timer_mode(x) == TimerMode::Unsupported;
            if unsupported(old) != unsupported(v) {
                // Entering or leaving TSC-deadline mode disarms the timer (SDM
                // §11.5.4.1); keel has no TSC-deadline, so it stays disarmed.
                self.timer_initial = 0;
                self.timer_deadline = None;
            }
        }
    }

    // ---- priority, acceptance, EOI --------------------------------------------------

    /// The processor priority (SDM §11.8.3.1).
    pub fn ppr(&self) -> u32 {
        let tpr = self.tpr & 0xFF;
        let isrv = self.isr.highest().map_or(0, u32::from);
        if tpr & 0xF0 >= isrv & 0xF0 {
            tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The highest vector in IRR whose priority class is above PPR's: the one to
    /// inject next. `None` while (globally or software) disabled.
    pub fn pending(&self) -> Option<u8> {
        if !self.is_sw_enabled() {
            return None;
        }
        let v = self.irr.highest()?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// A fixed interrupt arrives: set `vector` in IRR, and in TMR if level-triggered
    /// (clear it if edge), SDM §11.8.4.
    pub fn accept(&mut self, vector: u8, level: bool) -> Accept {
        if !self.is_sw_enabled() {
            return Accept::Disabled;
        }
        if vector <= LAST_ILLEGAL_VECTOR {
            self.record_error(ESR_RECV_ILLEGAL_VECTOR);
            return Accept::IllegalVector;
        }
        self.irr.set(vector);
        if level {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
        Accept::Accepted
    }

    /// The caller injected `vector` (normally what [`Vlapic::pending`] returned): move
    /// it from IRR to ISR. False, and nothing changes, if it is not in IRR.
    pub fn ack(&mut self, vector: u8) -> bool {
        if !self.irr.test(vector) {
            return false;
        }
        self.irr.clear(vector);
        self.isr.set(vector);
        true
    }

    /// End of interrupt: retire the highest vector in service (ignored if none).
    pub fn eoi(&mut self) -> WriteEffect {
        match self.isr.highest() {
            Some(vector) => {
                self.isr.clear(vector);
                WriteEffect::Eoi {
                    vector,
                    level: self.tmr.test(vector),
                }
            }
            None => WriteEffect::Done,
        }
    }

    /// An error was detected: accumulate it, and raise the error LVT if unmasked.
    fn record_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[Lvt::Error.index()];
        if lvt & LVT_MASKED != 0 || !self.is_sw_enabled() {
            return;
        }
        let vector = lvt as u8;
        if vector <= LAST_ILLEGAL_VECTOR {
            // Not through `accept`: an illegal error vector must not recurse.
            self.esr_pending |= ESR_RECV_ILLEGAL_VECTOR;
        } else {
            self.irr.set(vector);
            self.tmr.clear(vector);
        }
    }

    // ---- IPIs -----------------------------------------------------------------------

    fn send_ipi(&mut self) -> WriteEffect {
        let lo = self.icr_lo;
        let delivery = match (lo >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            _ => return WriteEffect::Done,
        };
        let vector = lo as u8;
        if matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
            && vector <= LAST_ILLEGAL_VECTOR
        {
            self.record_error(ESR_SEND_ILLEGAL_VECTOR);
            return WriteEffect::Done;
        }
        WriteEffect::Ipi(Ipi {
            source: self.id,
            shorthand: match (lo >> 18) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::SelfOnly,
                2 => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
            dest: (self.icr_hi >> 24) as u8,
            dest_mode: if lo & (1 << 11) != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            delivery,
            vector,
            level: lo & (1 << 14) != 0,
            trigger: if lo & (1 << 15) != 0 {
                Trigger::Level
            } else {
                Trigger::Edge
            },
        })
    }

    /// Whether this APIC is a destination of `ipi` (SDM §11.6.2): by shorthand, or by
    /// physical ID (0xFF broadcasts), or by logical ID in the flat or cluster model of
    /// DFR. Lowest-priority IPIs match like fixed ones; the caller picks one.
    pub fn targets_me(&self, ipi: &Ipi) -> bool {
        match ipi.shorthand {
            Shorthand::SelfOnly => ipi.source == self.id,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => ipi.source != self.id,
            Shorthand::None => match ipi.dest_mode {
                DestMode::Physical => ipi.dest == 0xFF || ipi.dest == self.id,
                DestMode::Logical => self.matches_logical(ipi.dest),
            },
        }
    }

    fn matches_logical(&self, dest: u8) -> bool {
        let ldr = (self.ldr >> 24) as u8;
        match self.dfr >> 28 {
            // Flat: one bit per APIC.
            0xF => ldr & dest != 0,
            // Cluster: high nibble the cluster (15 = all), low nibble a member mask.
            0x0 => {
                let cluster_ok = dest >> 4 == 0xF || dest >> 4 == ldr >> 4;
                cluster_ok && dest & ldr & 0xF != 0
            }
            _ => false,
        }
    }

    // ---- timer ----------------------------------------------------------------------

    /// The divisor selected by the divide configuration (SDM Figure 11-10).
    fn divisor(&self) -> u64 {
        let code = (self.timer_divide & 3) | ((self.timer_divide >> 1) & 4);
        if code == 7 { 1 } else { 2 << code }
    }

    fn timer_mode(&self) -> TimerMode {
        timer_mode(self.lvt[Lvt::Timer.index()])
    }

    fn period_ns(&self) -> u64 {
        u64::from(self.timer_initial).saturating_mul(self.divisor())
    }

    fn write_initial_count(&mut self, value: u32, now_ns: u64) {
        if self.timer_mode() == TimerMode::Unsupported {
            // As in TSC-deadline mode, the initial count is ignored.
            return;
        }
        self.timer_initial = value;
        self.timer_deadline = (value != 0).then(|| now_ns.saturating_add(self.period_ns()));
    }

    fn write_divide(&mut self, value: u32, now_ns: u64) {
        let remaining = self.current_count(now_ns);
        self.timer_divide = value & DIVIDE_WRITABLE;
        if let Some(deadline) = self.timer_deadline
            && now_ns < deadline
        {
            // The remaining ticks continue at the new rate.
            let left = u64::from(remaining).saturating_mul(self.divisor());
            self.timer_deadline = Some(now_ns.saturating_add(left));
        }
    }

    fn current_count(&self, now_ns: u64) -> u32 {
        let Some(deadline) = self.timer_deadline else {
            return 0;
        };
        let remaining_ns = if now_ns < deadline {
            deadline - now_ns
        } else if self.timer_mode() == TimerMode::Periodic {
            // Expired but not yet fired: the hardware has reloaded and counts on.
            let period = self.period_ns();
            (now_ns - deadline)
                .checked_rem(period)
                .map_or(0, |past| period - past)
        } else {
            0
        };
        let ticks = remaining_ns.div_ceil(self.divisor());
        u32::try_from(ticks)
            .unwrap_or(u32::MAX)
            .min(self.timer_initial)
    }

    /// The ns time of the next timer expiry, if armed.
    pub fn timer_deadline(&self) -> Option<u64> {
        self.timer_deadline
    }

    /// Fires the timer if it has expired by `now_ns`: accepts the LVT timer vector
    /// unless masked, then re-arms a periodic timer one period after the last missed
    /// deadline (missed periods collapse into this one interrupt) or ends a one-shot
    /// (current count 0). Returns whether it expired.
    pub fn timer_fire(&mut self, now_ns: u64) -> bool {
        let Some(deadline) = self.timer_deadline else {
            return false;
        };
        if now_ns < deadline {
            return false;
        }
        let lvt = self.lvt[Lvt::Timer.index()];
        if lvt & LVT_MASKED == 0 {
            // The timer LVT always delivers fixed, edge-triggered.
            let _ = self.accept(lvt as u8, false);
        }
        self.timer_deadline = None;
        if self.timer_mode() == TimerMode::Periodic {
            let period = self.period_ns();
            // The period is never 0 while armed (initial count != 0, divisor >= 1).
            if let Some(missed) = (now_ns - deadline).checked_div(period) {
                let periods = missed.saturating_add(1);
                let next = deadline.saturating_add(periods.saturating_mul(period));
                // Only a saturated deadline can fail this; then the timer stops.
                self.timer_deadline = (next > now_ns).then_some(next);
            }
        }
        true
    }
}

fn timer_mode(lvt_timer: u32) -> TimerMode {
    match (lvt_timer >> TIMER_MODE_SHIFT) & 3 {
        0 => TimerMode::OneShot,
        1 => TimerMode::Periodic,
        _ => TimerMode::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ONE_SHOT: u32 = 0;
    const PERIODIC: u32 = 1 << 17;

    /// An APIC as Linux leaves it after setup: software-enabled, flat logical mode.
    fn enabled(id: u8) -> Vlapic {
        let mut a = Vlapic::new(id, id == 0);
        assert_eq!(a.write(reg::SVR, SVR_ENABLE | 0xFF, 0), WriteEffect::Done);
        a
    }

    fn icr(a: &mut Vlapic, hi: u32, lo: u32) -> WriteEffect {
        a.write(reg::ICR_HI, hi, 0);
        a.write(reg::ICR_LO, lo, 0)
    }

    #[test]
    fn reset_values() {
        let a = Vlapic::new(3, false);
        assert_eq!(a.read(reg::ID, 0), 3 << 24);
        assert_eq!(a.read(reg::VERSION, 0), 0x0005_0014);
        assert_eq!(a.read(reg::TPR, 0), 0);
        assert_eq!(a.read(reg::APR, 0), 0);
        assert_eq!(a.read(reg::PPR, 0), 0);
        assert_eq!(a.read(reg::LDR, 0), 0);
        assert_eq!(a.read(reg::DFR, 0), 0xFFFF_FFFF);
        assert_eq!(a.read(reg::SVR, 0), 0xFF);
        for i in 0..8 {
            assert_eq!(a.read(reg::ISR + 0x10 * i, 0), 0);
            assert_eq!(a.read(reg::TMR + 0x10 * i, 0), 0);
            assert_eq!(a.read(reg::IRR + 0x10 * i, 0), 0);
        }
        assert_eq!(a.read(reg::ESR, 0), 0);
        for l in Lvt::ALL {
            assert_eq!(a.read(l.offset(), 0), LVT_MASKED, "{l:?}");
        }
        assert_eq!(a.read(reg::ICR_LO, 0), 0);
        assert_eq!(a.read(reg::ICR_HI, 0), 0);
        assert_eq!(a.read(reg::TIMER_INITIAL, 0), 0);
        assert_eq!(a.read(reg::TIMER_CURRENT, 0), 0);
        assert_eq!(a.read(reg::TIMER_DIVIDE, 0), 0);
        assert!(a.is_enabled());
        assert!(!a.is_sw_enabled());
        assert_eq!(a.apic_base_msr(), 0xFEE0_0800);
        assert_eq!(Vlapic::new(0, true).apic_base_msr(), 0xFEE0_0900);
        assert_eq!(a.timer_deadline(), None);
        assert_eq!(a.pending(), None);
    }

    #[test]
    fn reset_keeps_id_and_clears_state() {
        let mut a = enabled(7);
        a.write(reg::TPR, 0x20, 0);
        a.write(reg::LVT_TIMER, 0x30, 0);
        a.write(reg::TIMER_INITIAL, 100, 0);
        assert_eq!(a.accept(0x40, true), Accept::Accepted);
        a.set_apic_base_msr(APIC_BASE_ADDR).unwrap();
        a.reset();
        assert_eq!(a.read(reg::ID, 0), 7 << 24);
        assert_eq!(a.read(reg::TPR, 0), 0);
        assert_eq!(a.read(reg::SVR, 0), 0xFF);
        assert_eq!(a.read(reg::IRR + 0x20, 0), 0);
        assert_eq!(a.read(reg::TMR + 0x20, 0), 0);
        assert_eq!(a.lvt(Lvt::Timer), LVT_MASKED);
        assert_eq!(a.timer_deadline(), None);
        assert!(a.is_enabled());
    }

    #[test]
    fn read_only_and_reserved_writes_are_ignored() {
        let mut a = enabled(1);
        let ignored_ro = WriteEffect::Ignored(Ignored::ReadOnly);
        for off in [
            reg::ID,
            reg::VERSION,
            reg::APR,
            reg::PPR,
            reg::RRD,
            reg::TIMER_CURRENT,
        ] {
            assert_eq!(a.write(off, 0xFFFF_FFFF, 0), ignored_ro, "{off:#x}");
        }
        assert_eq!(a.write(reg::IRR + 0x70, 0xFFFF_FFFF, 0), ignored_ro);
        assert_eq!(a.write(reg::ISR, 0xFFFF_FFFF, 0), ignored_ro);
        assert_eq!(a.read(reg::ID, 0), 1 << 24);
        assert_eq!(a.read(reg::IRR + 0x70, 0), 0);
        for off in [
            0x0,
            0x10,
            0x40,
            0x2A0,
            0x3A0,
            0x3F0,
            0x400,
            0xFF0,
            0x24,
            0xFFFF_FFF0,
        ] {
            assert_eq!(
                a.write(off, 0x1234, 0),
                WriteEffect::Ignored(Ignored::Reserved)
            );
            assert_eq!(a.read(off, 0), 0, "{off:#x}");
            assert_eq!(Vlapic::access(off), Access::Reserved);
        }
        assert_eq!(Vlapic::access(reg::EOI), Access::WriteOnly);
        assert_eq!(Vlapic::access(reg::LVT_CMCI), Access::ReadWrite);
        assert_eq!(a.read(reg::EOI, 0), 0);
    }

    #[test]
    fn register_write_masks() {
        let mut a = enabled(1);
        a.write(reg::TPR, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::TPR, 0), 0xFF);
        a.write(reg::LDR, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::LDR, 0), 0xFF00_0000);
        a.write(reg::DFR, 0, 0);
        assert_eq!(a.read(reg::DFR, 0), 0x0FFF_FFFF);
        a.write(reg::ICR_HI, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::ICR_HI, 0), 0xFF00_0000);
        a.write(reg::LVT_LINT0, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::LVT_LINT0, 0), 0x0001_A7FF);
        a.write(reg::LVT_ERROR, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::LVT_ERROR, 0), 0x0001_00FF);
        a.write(reg::TIMER_DIVIDE, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::TIMER_DIVIDE, 0), 0b1011);
        a.write(reg::SVR, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::SVR, 0), 0x3FF);
    }

    #[test]
    fn cr8_mirrors_tpr() {
        let mut a = enabled(0);
        a.write(reg::TPR, 0x5A, 0);
        assert_eq!(a.cr8(), 5);
        a.set_cr8(0xF3);
        assert_eq!(a.read(reg::TPR, 0), 0x30);
    }

    #[test]
    fn software_disable_masks_lvts() {
        let mut a = enabled(0);
        a.write(reg::LVT_TIMER, 0x30 | PERIODIC, 0);
        a.write(reg::LVT_LINT0, 0x700, 0);
        assert_eq!(a.read(reg::LVT_TIMER, 0), 0x30 | PERIODIC);
        a.write(reg::SVR, 0xFF, 0);
        assert!(!a.is_sw_enabled());
        assert_eq!(a.read(reg::LVT_TIMER, 0), 0x30 | PERIODIC | LVT_MASKED);
        assert_eq!(a.read(reg::LVT_LINT0, 0), 0x700 | LVT_MASKED);
        // Writes cannot unmask while disabled.
        a.write(reg::LVT_ERROR, 0xFE, 0);
        assert_eq!(a.read(reg::LVT_ERROR, 0), 0xFE | LVT_MASKED);
        // Nothing is accepted or pending.
        assert_eq!(a.accept(0x40, false), Accept::Disabled);
        assert_eq!(a.pending(), None);
        // Re-enabling leaves the masks for software to clear.
        a.write(reg::SVR, SVR_ENABLE | 0xFF, 0);
        assert_eq!(a.read(reg::LVT_ERROR, 0), 0xFE | LVT_MASKED);
        a.write(reg::LVT_ERROR, 0xFE, 0);
        assert_eq!(a.read(reg::LVT_ERROR, 0), 0xFE);
    }

    #[test]
    fn software_disable_keeps_irr_but_hides_it() {
        let mut a = enabled(0);
        a.accept(0x50, false);
        a.write(reg::SVR, 0xFF, 0);
        assert_eq!(a.pending(), None);
        assert_eq!(a.read(reg::IRR + 0x20, 0), 1 << 16);
        a.write(reg::SVR, 0x1FF, 0);
        assert_eq!(a.pending(), Some(0x50));
    }

    #[test]
    fn tpr_holds_back_same_class() {
        let mut a = enabled(0);
        a.write(reg::TPR, 0x45, 0);
        assert_eq!(a.read(reg::PPR, 0), 0x45);
        assert_eq!(a.accept(0x41, false), Accept::Accepted);
        assert_eq!(a.pending(), None, "same class as TPR");
        assert_eq!(a.accept(0x3F, false), Accept::Accepted);
        assert_eq!(a.pending(), None, "below TPR");
        a.write(reg::TPR, 0x3F, 0);
        assert_eq!(a.pending(), Some(0x41));
        a.write(reg::TPR, 0, 0);
        assert_eq!(a.pending(), Some(0x41));
        assert_eq!(a.accept(0x50, false), Accept::Accepted);
        assert_eq!(a.pending(), Some(0x50));
    }

    #[test]
    fn ppr_follows_isr() {
        let mut a = enabled(0);
        a.write(reg::TPR, 0x21, 0);
        a.accept(0x61, false);
        assert!(a.ack(0x61));
        assert_eq!(a.read(reg::PPR, 0), 0x60);
        a.write(reg::TPR, 0x72, 0);
        assert_eq!(a.read(reg::PPR, 0), 0x72);
        a.write(reg::TPR, 0x65, 0);
        assert_eq!(a.read(reg::PPR, 0), 0x65, "equal class: TPR wins");
    }

    #[test]
    fn nested_irr_isr_eoi() {
        let mut a = enabled(0);
        assert_eq!(a.accept(0x31, false), Accept::Accepted);
        assert_eq!(a.pending(), Some(0x31));
        assert!(a.ack(0x31));
        assert_eq!(a.read(reg::ISR + 0x10, 0), 1 << 17);
        assert_eq!(a.read(reg::IRR + 0x10, 0), 0);
        assert_eq!(a.pending(), None);
        // A lower class waits; a higher one nests.
        a.accept(0x35, false);
        assert_eq!(a.pending(), None);
        a.accept(0x81, true);
        assert_eq!(a.pending(), Some(0x81));
        assert!(a.ack(0x81));
        assert_eq!(a.read(reg::PPR, 0), 0x80);
        assert_eq!(a.pending(), None);
        // EOI retires only the highest in service.
        assert_eq!(
            a.write(reg::EOI, 0, 0),
            WriteEffect::Eoi {
                vector: 0x81,
                level: true
            }
        );
        assert_eq!(a.read(reg::ISR + 0x10, 0), 1 << 17);
        assert_eq!(a.read(reg::ISR + 0x40, 0), 0);
        assert_eq!(a.pending(), None, "0x35 is in 0x31's class");
        assert_eq!(
            a.write(reg::EOI, 0, 0),
            WriteEffect::Eoi {
                vector: 0x31,
                level: false
            }
        );
        assert_eq!(a.pending(), Some(0x35));
        assert!(a.ack(0x35));
        assert_eq!(
            a.eoi(),
            WriteEffect::Eoi {
                vector: 0x35,
                level: false
            }
        );
        // Nothing in service: ignored.
        assert_eq!(a.write(reg::EOI, 0, 0), WriteEffect::Done);
        assert!(!a.ack(0x99), "not in IRR");
        assert_eq!(a.read(reg::ISR + 0x40, 0), 0);
    }

    #[test]
    fn tmr_tracks_trigger_mode() {
        let mut a = enabled(0);
        a.accept(0x90, true);
        assert_eq!(a.read(reg::TMR + 0x40, 0), 1 << 16);
        a.accept(0x90, false);
        assert_eq!(a.read(reg::TMR + 0x40, 0), 0);
    }

    #[test]
    fn illegal_vectors_set_esr() {
        let mut a = enabled(0);
        for v in 0..16 {
            assert_eq!(a.accept(v, false), Accept::IllegalVector);
        }
        assert_eq!(a.read(reg::IRR, 0), 0);
        assert_eq!(a.pending(), None);
        // Invisible until ESR is written.
        assert_eq!(a.read(reg::ESR, 0), 0);
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), ESR_RECV_ILLEGAL_VECTOR);
        // A fixed IPI with an illegal vector: send error, nothing sent.
        assert_eq!(icr(&mut a, 0, 0x0004_0005), WriteEffect::Done);
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), ESR_SEND_ILLEGAL_VECTOR);
        // An NMI's vector field is not a vector.
        assert!(matches!(icr(&mut a, 0, 0x0004_0400), WriteEffect::Ipi(_)));
        // The LVT timer with an illegal vector.
        a.write(reg::LVT_TIMER, 0x3, 0);
        a.write(reg::TIMER_INITIAL, 1, 0);
        assert!(a.timer_fire(10));
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), ESR_RECV_ILLEGAL_VECTOR);
        assert_eq!(a.read(reg::IRR, 0), 0);
    }

    #[test]
    fn esr_write_latches_and_clears() {
        let mut a = enabled(0);
        a.accept(1, false);
        a.write(reg::ESR, 0xFFFF_FFFF, 0);
        assert_eq!(a.read(reg::ESR, 0), ESR_RECV_ILLEGAL_VECTOR);
        // Later errors do not show until the next write...
        icr(&mut a, 0, 0x0004_0001);
        assert_eq!(a.read(reg::ESR, 0), ESR_RECV_ILLEGAL_VECTOR);
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), ESR_SEND_ILLEGAL_VECTOR);
        // ...and back-to-back writes clear it.
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), 0);
    }

    #[test]
    fn error_lvt_raises_its_vector() {
        let mut a = enabled(0);
        a.accept(2, false);
        assert_eq!(a.pending(), None, "error LVT masked");
        a.write(reg::LVT_ERROR, 0xFE, 0);
        a.accept(2, false);
        assert_eq!(a.pending(), Some(0xFE));
        // An illegal error vector only adds to the ESR (and does not recurse).
        let mut b = enabled(0);
        b.write(reg::LVT_ERROR, 0x05, 0);
        icr(&mut b, 0, 0x0004_0001);
        b.write(reg::ESR, 0, 0);
        assert_eq!(
            b.read(reg::ESR, 0),
            ESR_SEND_ILLEGAL_VECTOR | ESR_RECV_ILLEGAL_VECTOR
        );
        assert_eq!(b.read(reg::IRR, 0), 0);
    }

    #[test]
    fn self_ipi_by_shorthand() {
        let mut a = enabled(2);
        let WriteEffect::Ipi(ipi) = icr(&mut a, 0, 0x0004_00F6) else {
            panic!("no IPI sent");
        };
        assert_eq!(ipi.shorthand, Shorthand::SelfOnly);
        assert_eq!(ipi.delivery, DeliveryMode::Fixed);
        assert_eq!(ipi.vector, 0xF6);
        assert_eq!(ipi.source, 2);
        assert!(a.targets_me(&ipi));
        assert!(!enabled(3).targets_me(&ipi));
        assert_eq!(
            a.read(reg::ICR_LO, 0) & (1 << 12),
            0,
            "delivery status reads idle"
        );
        assert_eq!(
            a.accept(ipi.vector, ipi.trigger == Trigger::Level),
            Accept::Accepted
        );
        assert_eq!(a.pending(), Some(0xF6));
    }

    #[test]
    fn self_ipi_by_physical_id_and_broadcasts() {
        let mut a = enabled(2);
        let WriteEffect::Ipi(ipi) = icr(&mut a, 2 << 24, 0x0000_40EC) else {
            panic!("no IPI sent");
        };
        assert_eq!(ipi.shorthand, Shorthand::None);
        assert_eq!(ipi.dest_mode, DestMode::Physical);
        assert_eq!(ipi.dest, 2);
        assert!(ipi.level);
        assert!(a.targets_me(&ipi));
        assert!(!enabled(1).targets_me(&ipi));
        let bcast = Ipi { dest: 0xFF, ..ipi };
        assert!(enabled(1).targets_me(&bcast));
        let all = Ipi {
            shorthand: Shorthand::AllIncludingSelf,
            ..ipi
        };
        assert!(a.targets_me(&all) && enabled(9).targets_me(&all));
        let others = Ipi {
            shorthand: Shorthand::AllExcludingSelf,
            ..ipi
        };
        assert!(!a.targets_me(&others) && enabled(9).targets_me(&others));
    }

    #[test]
    fn logical_flat_and_cluster() {
        let mut a = enabled(0);
        a.write(reg::LDR, 0x0400_0000, 0); // flat bit 2
        let WriteEffect::Ipi(ipi) = icr(&mut a, 0x0600_0000, 0x0000_0830) else {
            panic!("no IPI sent");
        };
        assert_eq!(ipi.dest_mode, DestMode::Logical);
        assert_eq!(ipi.dest, 0x06);
        assert!(a.targets_me(&ipi));
        assert!(!a.targets_me(&Ipi { dest: 0x09, ..ipi }));
        assert!(a.targets_me(&Ipi { dest: 0xFF, ..ipi }));
        // Cluster model: cluster 3, member bit 1.
        a.write(reg::DFR, 0x0FFF_FFFF, 0);
        a.write(reg::LDR, 0x3200_0000, 0);
        assert!(a.targets_me(&Ipi { dest: 0x33, ..ipi }));
        assert!(!a.targets_me(&Ipi { dest: 0x31, ..ipi }), "other member");
        assert!(!a.targets_me(&Ipi { dest: 0x23, ..ipi }), "other cluster");
        assert!(a.targets_me(&Ipi { dest: 0xF2, ..ipi }), "all clusters");
        // An unknown model matches nothing.
        a.write(reg::DFR, 0x5000_0000, 0);
        assert!(!a.targets_me(&Ipi { dest: 0xFF, ..ipi }));
    }

    #[test]
    fn icr_delivery_modes() {
        let mut a = enabled(0);
        let sent = |a: &mut Vlapic, lo| match icr(a, 0x0100_0000, lo) {
            WriteEffect::Ipi(ipi) => Some(ipi),
            _ => None,
        };
        assert_eq!(
            sent(&mut a, 0x140).unwrap().delivery,
            DeliveryMode::LowestPriority
        );
        assert_eq!(sent(&mut a, 0x200).unwrap().delivery, DeliveryMode::Smi);
        assert_eq!(sent(&mut a, 0x300), None, "reserved");
        assert_eq!(sent(&mut a, 0x400).unwrap().delivery, DeliveryMode::Nmi);
        let init = sent(&mut a, 0xC500).unwrap();
        assert_eq!(
            (init.delivery, init.trigger, init.level),
            (DeliveryMode::Init, Trigger::Level, true)
        );
        assert!(!init.is_init_deassert());
        assert!(sent(&mut a, 0x8500).unwrap().is_init_deassert());
        let sipi = sent(&mut a, 0x69A).unwrap();
        assert_eq!((sipi.delivery, sipi.vector), (DeliveryMode::StartUp, 0x9A));
        assert_eq!(sent(&mut a, 0x700), None, "reserved");
        assert_eq!(
            sent(&mut a, 0x000C_0400).unwrap().shorthand,
            Shorthand::AllExcludingSelf
        );
    }

    /// Arms a timer with `lvt` and divide configuration `divide`.
    fn timer(lvt: u32, divide: u32, count: u32, now: u64) -> Vlapic {
        let mut a = enabled(0);
        a.write(reg::LVT_TIMER, lvt, now);
        a.write(reg::TIMER_DIVIDE, divide, now);
        a.write(reg::TIMER_INITIAL, count, now);
        a
    }

    #[test]
    fn one_shot_with_dividers() {
        for (divide, div) in [
            (0b0000, 2u64),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ] {
            let mut a = timer(ONE_SHOT | 0xEF, divide, 1000, 5_000);
            assert_eq!(
                a.timer_deadline(),
                Some(5_000 + 1000 * div),
                "divide {divide:#b}"
            );
            assert_eq!(a.read(reg::TIMER_CURRENT, 5_000), 1000);
            assert_eq!(a.read(reg::TIMER_CURRENT, 5_000 + 250 * div), 750);
            assert_eq!(a.read(reg::TIMER_INITIAL, 5_000 + 250 * div), 1000);
            assert!(!a.timer_fire(5_000 + 1000 * div - 1));
            assert_eq!(a.pending(), None);
            assert!(a.timer_fire(5_000 + 1000 * div));
            assert_eq!(a.pending(), Some(0xEF));
            assert_eq!(a.timer_deadline(), None);
            assert_eq!(a.read(reg::TIMER_CURRENT, 5_000 + 1000 * div), 0);
            assert!(!a.timer_fire(u64::MAX));
        }
    }

    #[test]
    fn initial_count_zero_stops_and_rewrite_restarts() {
        let mut a = timer(0xEF, 0b1011, 100, 0);
        a.write(reg::TIMER_INITIAL, 0, 50);
        assert_eq!(a.timer_deadline(), None);
        assert_eq!(a.read(reg::TIMER_CURRENT, 60), 0);
        a.write(reg::TIMER_INITIAL, 10, 70);
        assert_eq!(a.timer_deadline(), Some(80));
    }

    #[test]
    fn divider_change_mid_count_keeps_remaining_ticks() {
        let mut a = timer(0xEF, 0b1011, 100, 0); // divide by 1
        a.write(reg::TIMER_DIVIDE, 0b0001, 40); // divide by 4: 60 ticks left
        assert_eq!(a.read(reg::TIMER_CURRENT, 40), 60);
        assert_eq!(a.timer_deadline(), Some(40 + 240));
    }

    #[test]
    fn huge_counts_saturate() {
        let mut a = timer(PERIODIC | 0xEF, 0b1010, u32::MAX, u64::MAX - 10);
        assert_eq!(a.timer_deadline(), Some(u64::MAX));
        assert_eq!(a.read(reg::TIMER_CURRENT, u64::MAX - 10), 1);
        assert!(a.timer_fire(u64::MAX));
        assert_eq!(a.timer_deadline(), None);
        let b = timer(PERIODIC | 0xEF, 0b1010, u32::MAX, 0);
        assert_eq!(b.timer_deadline(), Some(u64::from(u32::MAX) * 128));
    }

    #[test]
    fn periodic_rearms_skipping_missed_periods() {
        let mut a = timer(PERIODIC | 0xD0, 0b1011, 100, 1_000);
        assert_eq!(a.timer_deadline(), Some(1_100));
        assert!(a.timer_fire(1_100));
        assert_eq!(a.timer_deadline(), Some(1_200));
        assert_eq!(a.pending(), Some(0xD0));
        assert!(a.ack(0xD0));
        a.eoi();
        // Late by three and a half periods: one interrupt, next on the grid.
        assert_eq!(a.read(reg::TIMER_CURRENT, 1_550), 50);
        assert!(a.timer_fire(1_550));
        assert_eq!(a.timer_deadline(), Some(1_600));
        assert_eq!(a.pending(), Some(0xD0));
        assert_eq!(a.read(reg::TIMER_CURRENT, 1_575), 25);
    }

    #[test]
    fn masked_timer_fires_without_accepting() {
        let mut a = timer(LVT_MASKED | PERIODIC | 0xD0, 0b1011, 10, 0);
        assert!(a.timer_fire(10));
        assert_eq!(a.pending(), None);
        assert_eq!(a.read(reg::IRR + 0x60, 0), 0);
        assert_eq!(a.timer_deadline(), Some(20), "still periodic");
    }

    #[test]
    fn tsc_deadline_mode_stays_disarmed() {
        let mut a = timer(0xD0, 0b1011, 100, 0);
        a.write(reg::LVT_TIMER, (2 << 17) | 0xD0, 10);
        assert_eq!(a.timer_deadline(), None);
        a.write(reg::TIMER_INITIAL, 100, 20);
        assert_eq!(a.timer_deadline(), None);
        assert_eq!(a.read(reg::TIMER_CURRENT, 20), 0);
        assert_eq!(a.read(reg::TIMER_INITIAL, 20), 0);
        // Back to one-shot: armed again only by a new count.
        a.write(reg::LVT_TIMER, 0xD0, 30);
        assert_eq!(a.timer_deadline(), None);
        a.write(reg::TIMER_INITIAL, 5, 30);
        assert_eq!(a.timer_deadline(), Some(35));
        // One-shot <-> periodic keeps counting.
        a.write(reg::LVT_TIMER, PERIODIC | 0xD0, 31);
        assert_eq!(a.timer_deadline(), Some(35));
    }

    #[test]
    fn apic_base_msr() {
        let mut a = enabled(0);
        assert_eq!(
            a.set_apic_base_msr(0xFEE0_0C00),
            Err(VlapicError::ApicBaseX2apic)
        );
        assert_eq!(
            a.set_apic_base_msr(0xFEE0_0801),
            Err(VlapicError::ApicBaseReserved)
        );
        assert_eq!(
            a.set_apic_base_msr(0xFEE0_0A00),
            Err(VlapicError::ApicBaseReserved)
        );
        assert_eq!(
            a.set_apic_base_msr(0xFED0_0800),
            Err(VlapicError::ApicBaseMoved)
        );
        assert_eq!(
            a.set_apic_base_msr(1 << 63 | 0xFEE0_0800),
            Err(VlapicError::ApicBaseMoved)
        );
        assert!(a.is_sw_enabled(), "errors change nothing");
        // Writing back what was read (BSP bit included) is fine.
        let v = a.apic_base_msr();
        assert_eq!(a.set_apic_base_msr(v), Ok(()));
        assert!(a.is_sw_enabled());
        // Disable: unbacked, nothing accepted.
        a.accept(0x40, false);
        assert_eq!(a.set_apic_base_msr(APIC_BASE_ADDR), Ok(()));
        assert!(!a.is_enabled());
        assert_eq!(a.apic_base_msr(), 0xFEE0_0100);
        assert_eq!(a.read(reg::ID, 0), u32::MAX);
        assert_eq!(a.read_mmio(reg::ID, 2, 0), Ok(0xFFFF));
        assert_eq!(
            a.write(reg::SVR, 0x1FF, 0),
            WriteEffect::Ignored(Ignored::Disabled)
        );
        assert_eq!(a.accept(0x40, false), Accept::Disabled);
        assert_eq!(a.pending(), None);
        // Re-enable: power-on state.
        assert_eq!(
            a.set_apic_base_msr(APIC_BASE_ADDR | APIC_BASE_ENABLE),
            Ok(())
        );
        assert!(a.is_enabled() && !a.is_sw_enabled());
        assert_eq!(a.read(reg::SVR, 0), 0xFF);
        assert_eq!(a.read(reg::IRR + 0x20, 0), 0);
        assert_eq!(a.read(reg::ID, 0), 0);
    }

    #[test]
    fn partial_width_reads() {
        let mut a = enabled(0x12);
        a.write(reg::TPR, 0x5A, 0);
        assert_eq!(a.read_mmio(reg::VERSION, 4, 0), Ok(0x0005_0014));
        assert_eq!(a.read_mmio(reg::VERSION, 1, 0), Ok(0x14));
        assert_eq!(a.read_mmio(reg::VERSION + 2, 1, 0), Ok(0x05));
        assert_eq!(a.read_mmio(reg::VERSION + 2, 2, 0), Ok(0x0005));
        assert_eq!(a.read_mmio(reg::ID + 3, 1, 0), Ok(0x12));
        assert_eq!(a.read_mmio(reg::ID + 2, 4, 0), Ok(0x1200));
        assert_eq!(a.read_mmio(reg::ID + 4, 4, 0), Ok(0));
        assert_eq!(a.read_mmio(reg::ID, 8, 0), Ok(0x1200_0000));
        // Spanning two slots: the ID's top byte then the version's low bytes.
        assert_eq!(a.read_mmio(reg::ID + 12, 8, 0), Ok(0x0005_0014 << 32));
        assert_eq!(a.read_mmio(reg::TPR, 2, 0), Ok(0x5A));
        assert_eq!(a.read_mmio(0xFFE, 8, 0), Ok(0));
        assert_eq!(a.read_mmio(u32::MAX, 8, 0), Ok(0));
        assert_eq!(
            a.read_mmio(0, 0, 0),
            Err(VlapicError::BadReadSize { size: 0 })
        );
        assert_eq!(
            a.read_mmio(0, 9, 0),
            Err(VlapicError::BadReadSize { size: 9 })
        );
    }

    #[test]
    fn mmio_writes_must_be_aligned_dwords() {
        let mut a = enabled(0);
        assert_eq!(a.write_mmio(reg::TPR, 4, 0x20, 0), Ok(WriteEffect::Done));
        assert_eq!(a.read(reg::TPR, 0), 0x20);
        for (off, size) in [
            (reg::TPR, 1),
            (reg::TPR, 2),
            (reg::TPR, 8),
            (reg::TPR + 1, 4),
        ] {
            assert_eq!(
                a.write_mmio(off, size, 0x30, 0),
                Err(VlapicError::BadWrite { offset: off, size })
            );
        }
        assert_eq!(a.read(reg::TPR, 0), 0x20);
        assert_eq!(
            a.write_mmio(reg::TPR + 4, 4, 0x30, 0),
            Ok(WriteEffect::Ignored(Ignored::Reserved))
        );
        assert_eq!(
            a.write_mmio(reg::TPR, 4, 0xFFFF_FFFF_0000_0040, 0),
            Ok(WriteEffect::Done)
        );
        assert_eq!(a.read(reg::TPR, 0), 0x40);
    }

    #[test]
    fn error_messages() {
        let e = VlapicError::BadWrite {
            offset: 0x81,
            size: 2,
        };
        assert_eq!(
            e.to_string(),
            "local APIC write is not a 32-bit access at a 32-bit aligned offset \
             (offset 0x81, 2 bytes)"
        );
        assert!(
            VlapicError::ApicBaseMoved
                .to_string()
                .contains("0xFEE00000")
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read(u32),
        ReadMmio(u32, usize),
        Write(u32, u32),
        WriteMmio(u32, usize, u64),
        Accept(u8, bool),
        AckPending,
        Ack(u8),
        Eoi,
        Fire,
        Advance(u64),
        ApicBase(u64),
        Reset,
    }

    fn offset() -> impl Strategy<Value = u32> {
        prop_oneof![
            8 => (0u32..0x40).prop_map(|i| i * 0x10),
            1 => 0u32..0x1010,
            1 => any::<u32>(),
        ]
    }

    fn value() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            Just(0x1FF),
            Just(PERIODIC | 0x40),
            (0u32..0x100),
            Just(0x0004_0050),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => offset().prop_map(Op::Read),
            1 => (offset(), 0usize..10).prop_map(|(o, s)| Op::ReadMmio(o, s)),
            6 => (offset(), value()).prop_map(|(o, v)| Op::Write(o, v)),
            1 => (offset(), 0usize..10, any::<u64>()).prop_map(|(o, s, v)| Op::WriteMmio(o, s, v)),
            4 => (any::<u8>(), any::<bool>()).prop_map(|(v, l)| Op::Accept(v, l)),
            3 => Just(Op::AckPending),
            1 => any::<u8>().prop_map(Op::Ack),
            2 => Just(Op::Eoi),
            2 => Just(Op::Fire),
            2 => prop_oneof![0u64..1000, any::<u64>()].prop_map(Op::Advance),
            1 => prop_oneof![
                Just(0xFEE0_0000u64),
                Just(0xFEE0_0800u64),
                any::<u64>(),
            ]
            .prop_map(Op::ApicBase),
            1 => Just(Op::Reset),
        ]
    }

    fn check_invariants(a: &Vlapic) -> Result<(), TestCaseError> {
        if let Some(v) = a.pending() {
            prop_assert!(
                u32::from(v) >> 4 > a.ppr() >> 4,
                "pending {v:#x} ppr {:#x}",
                a.ppr()
            );
            prop_assert!(a.irr.test(v));
            prop_assert!(a.is_sw_enabled());
        }
        prop_assert_eq!(a.irr.0[0] & 0xFFFF, 0);
        prop_assert_eq!(a.isr.0[0] & 0xFFFF, 0);
        if !a.is_sw_enabled() && a.is_enabled() {
            for l in Lvt::ALL {
                prop_assert!(a.lvt(l) & LVT_MASKED != 0);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_sequences_keep_invariants(ops in prop::collection::vec(op(), 1..200)) {
            let mut a = Vlapic::new(1, false);
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Read(o) => { let _ = a.read(o, now); }
                    Op::ReadMmio(o, s) => { let _ = a.read_mmio(o, s, now); }
                    Op::Write(o, v) => {
                        if let WriteEffect::Ipi(ipi) = a.write(o, v, now)
                            && a.targets_me(&ipi)
                            && ipi.delivery == DeliveryMode::Fixed
                        {
                            let _ = a.accept(ipi.vector, ipi.trigger == Trigger::Level);
                        }
                    }
                    Op::WriteMmio(o, s, v) => { let _ = a.write_mmio(o, s, v, now); }
                    Op::Accept(v, l) => { let _ = a.accept(v, l); }
                    Op::AckPending => {
                        if let Some(v) = a.pending() {
                            prop_assert!(a.ack(v));
                        }
                    }
                    Op::Ack(v) => { let _ = a.ack(v); }
                    Op::Eoi => { let _ = a.eoi(); }
                    Op::Fire => {
                        a.timer_fire(now);
                        if let Some(d) = a.timer_deadline() {
                            prop_assert!(d > now);
                        }
                    }
                    Op::Advance(dt) => now = now.saturating_add(dt),
                    Op::ApicBase(v) => { let _ = a.set_apic_base_msr(v); }
                    Op::Reset => a.reset(),
                }
                prop_assert!(a.read(reg::TIMER_CURRENT, now) <= a.timer_initial || !a.is_enabled());
                check_invariants(&a)?;
            }
        }
    }
}
