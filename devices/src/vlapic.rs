//! The virtual local APIC a vCPU sees (Xen's `vlapic`): the xAPIC and x2APIC register
//! models, interrupt acceptance and priority, IPIs and the APIC timer, as pure logic.
//!
//! # Why keel emulates it
//!
//! Linux booted as a PVH domU still probes the local APIC: it reads the ID and
//! version, programs SVR, the LVTs and TPR, scans IRR/ISR for stale bits and EOIs
//! them, sends itself IPIs through the ICR (irq_work) and masks everything before it
//! halts. An unbacked page that reads all-ones looks like "APIC id 255, every IRR bit
//! stale" and sends it into an EOI loop. With several vCPUs it also wakes the APs with
//! INIT/SIPI and sends them IPIs, and where CPUID offers x2APIC it prefers the MSR
//! interface. This module is the register file behind both; the caller (the VM-exit
//! glue) routes MMIO at [`APIC_BASE_ADDR`], the x2APIC MSRs, the `IA32_APIC_BASE` MSR,
//! interrupt injection, IPI delivery and the timer through it.
//!
//! Facts: Intel SDM Vol. 3A ch. 11 "Advanced Programmable Interrupt Controller"
//! (register map Table 11-1, §11.4.4 `IA32_APIC_BASE`, §11.4.7 reset and software
//! disable, §11.5 LVT/timer/ESR, §11.6 ICR and destinations, §11.8 priority, IRR/ISR/TMR
//! and EOI, §11.12 x2APIC with its register map Table 11-6) and AMD APM Vol. 2 ch. 16.
//!
//! # The model
//!
//! * Three modes, the [`ApicMode`] that `IA32_APIC_BASE` EN and EXTD select (SDM
//!   §11.12.5.1): disabled, xAPIC (the power-on state) and x2APIC.
//!   [`Vlapic::set_apic_base_msr`] allows disabled <-> xAPIC, xAPIC -> x2APIC and
//!   x2APIC -> disabled. It refuses x2APIC -> xAPIC, disabled -> x2APIC (the SDM's only
//!   way back from x2APIC is through disabled, and disabled leads only to xAPIC) and
//!   the invalid EN=0,EXTD=1 with a [`VlapicError`] the caller turns into #GP.
//!   Entering or leaving disabled resets every register but the ID (SDM §11.4.3,
//!   §11.4.7.1). xAPIC -> x2APIC keeps every register; only the ID and LDR change
//!   their view (below), and DFR and the xAPIC page go away. The model does not
//!   know CPUID: a caller whose CPUID hides x2APIC refuses EXTD itself.
//! * APIC ids are 32 bits ([`Vlapic::new`]; keel gives vCPU n the id 2n, as Xen
//!   does). The ID is read-only in both modes (some real parts let xAPIC software
//!   write it; Xen and keel do not). x2APIC shows it whole (MSR 0x802) and derives
//!   the read-only LDR from it, `(id >> 4) << 16 | 1 << (id & 0xF)` (cluster in bits
//!   31:16, one member bit in 15:0; SDM §11.12.10.2). The xAPIC ID register has 8
//!   bits: it shows `id << 24`, that is the id's low 8 bits only. A vCPU whose id
//!   is above 255 cannot be named by an xAPIC (8-bit) destination: it has to switch
//!   to x2APIC mode to take part in IPIs, which is why a domain with more than 128
//!   vCPUs needs x2APIC offered. Until it does (an AP starts in xAPIC mode) it is
//!   reached only by a broadcast or by an x2APIC sender naming its whole id, never
//!   through the alias its ID register shows (see Destinations). Id 0xFFFF_FFFF is
//!   the x2APIC broadcast and cannot be assigned (SDM §11.12.1.3).
//! * Version = [`VERSION`]: 6 LVT entries, version 0x14, in both modes.
//! * The xAPIC page: accesses are 32 bits wide at 16-byte aligned offsets.
//!   [`Vlapic::read_mmio`] answers any read of 1..=8 bytes with the bytes of the
//!   containing registers (the 12 bytes after each register read 0).
//!   [`Vlapic::write_mmio`] refuses any write that is not a 4-byte access at a 4-byte
//!   aligned offset ([`VlapicError::BadWrite`]); the caller crashes the domain with
//!   that message. Aligned writes inside a register's slot but off its first dword
//!   are reserved. Reserved offsets read 0 and drop writes; writes to read-only
//!   registers are dropped. Both are reported ([`WriteEffect::Ignored`],
//!   [`Vlapic::access`]) so the caller may log them once. ESR bit 7 (illegal
//!   register address) is not raised.
//! * The page is there only in xAPIC mode. While disabled, and in x2APIC mode (SDM
//!   §11.12.2: the MMIO interface behaves as a globally disabled xAPIC), reads give
//!   all-ones and writes are ignored ([`Ignored::Disabled`], [`Ignored::X2apic`]).
//!   While disabled nothing is accepted either.
//! * The x2APIC MSRs: register `offset` is MSR `0x800 + offset / 16`
//!   ([`x2apic_msr`]; SDM §11.12.1.2, Table 11-6), reached through
//!   [`Vlapic::read_msr`]/[`Vlapic::write_msr`] and classified by
//!   [`Vlapic::msr_access`]. Every refusal is a [`VlapicError`], a #GP for the guest:
//!   any access outside x2APIC mode (SDM §11.12.2); an MSR with no register, which
//!   includes APR, RRD, DFR and the ICR's high half (gone in x2APIC) and everything
//!   after SELF IPI up to 0x8FF; a read of a write-only register (EOI, SELF IPI); a
//!   write to a read-only one (ID, VERSION, PPR, LDR, ISR/TMR/IRR, current count);
//!   and a write that sets a reserved bit (SDM §11.12.1.3): bits 63:32 of every
//!   register but the ICR, any bit of EOI and ESR, and the bits each register
//!   leaves undefined. Read-only status bits (LVT delivery status and remote IRR)
//!   are not reserved: writing them back is allowed and has no effect. TPR, SVR,
//!   the LVTs, ESR and the timer registers otherwise behave as in xAPIC mode.
//! * Software disable (SVR bit 8 clear, the power-on state): every LVT gets its mask
//!   bit set and keeps it on writes; fixed interrupts are not accepted (as in Xen)
//!   and [`Vlapic::pending`] is `None`. IRR/ISR are kept.
//! * Priority (SDM §11.8.3.1): PPR = TPR if TPR\[7:4\] >= ISRV\[7:4\], else
//!   ISRV & 0xF0, where ISRV is the highest vector in service. An IRR vector is
//!   deliverable only if its class (bits 7:4) is above PPR's.
//! * ICR: in xAPIC mode writing the low word sends, with the destination in bits
//!   63:56 of the ICR; in x2APIC mode the ICR is one 64-bit MSR (0x830) whose write
//!   sends, with a 32-bit destination in bits 63:32 (SDM §11.12.9). The x2APIC SELF
//!   IPI MSR (0x83F) sends a fixed, edge-triggered IPI with the "self" shorthand
//!   and leaves the ICR as it was (SDM §11.12.11). A send is returned as an [`Ipi`]
//!   for the caller to route; nothing is delivered here, not even to self. Delivery
//!   status (bit 12) always reads 0. Fixed or lowest-priority with a vector below 16
//!   sets ESR "send illegal vector" and sends nothing; reserved delivery modes (3, 7)
//!   send nothing. Lowest priority is reported as such; the caller picks one target.
//! * Destinations ([`Vlapic::targets_me`], SDM §11.6.2 and §11.12.10): the caller asks
//!   each vCPU's `Vlapic` whether it is a target, and each answers by its **own**
//!   mode. xAPIC: physical 8-bit id (0xFF broadcasts), logical flat or cluster as
//!   DFR says. x2APIC: physical 32-bit id (0xFFFF_FFFF broadcasts), logical cluster
//!   only (bits 31:16 the cluster, 0xFFFF for every cluster; bits 15:0 a member
//!   bitmap). A domain's vCPUs are all in one mode once they run, but not while
//!   Linux brings them up: its BSP switches to x2APIC first and sends INIT/SIPI to
//!   APs still in their power-on xAPIC mode. So a physical destination is compared
//!   with an xAPIC receiver's whole id, not its 8-bit view: ids up to 255 match as
//!   in xAPIC, a wider id only when an x2APIC sender names all of it (KVM does the
//!   same), and no two vCPUs answer to one destination (a SIPI to id 0x58 does not
//!   also start the AP with id 0x158). Otherwise mixed modes read a destination as
//!   the receiver's mode would: an xAPIC logical receiver matches no destination
//!   above 0xFF, and an xAPIC sender's 0xFF is not a broadcast for an x2APIC
//!   receiver. The shorthands compare the sender's full 32-bit id
//!   ([`Ipi::source`]).
//! * INIT ([`Vlapic::init`], SDM §11.4.7.3 and §11.12.5.1): every register back to its
//!   reset value except the ID; `IA32_APIC_BASE` is untouched, so the APIC stays
//!   disabled, xAPIC or x2APIC as it was (an AP that Linux restarts with INIT/SIPI
//!   keeps its x2APIC mode, and its x2APIC LDR, which follows from the ID).
//! * ESR: errors accumulate invisibly; a write to ESR copies them into the readable
//!   ESR and clears the accumulator (SDM §11.5.3). Each detected error accepts the
//!   error LVT's vector when that LVT is unmasked.
//! * Timer: 1 bus tick = 1 ns before the divider (a 1 GHz APIC bus). The timer is
//!   an absolute deadline in the caller's ns clock; the current count is derived
//!   from it. Changing the divider mid-count keeps the remaining ticks and counts
//!   them at the new rate. TSC-deadline is hidden in CPUID, so LVT timer mode `10`
//!   (and the reserved `11`) is accepted in both modes but leaves the timer
//!   disarmed.
//! * Not modelled: APR (reads 0), remote read (RRD reads 0), focus processor
//!   checking, directed EOI (so SVR bit 12 is reserved), SMI/NMI/INIT/ExtINT delivery
//!   through LINT0/LINT1 and the thermal/perf/CMCI sources (those LVTs are storage
//!   only).
//!
//! # Times
//!
//! The caller passes its monotonic ns clock (`now_ns`) wherever time matters: to
//! [`Vlapic::read`]/[`Vlapic::read_mmio`]/[`Vlapic::read_msr`] (current count), to
//! [`Vlapic::write`]/[`Vlapic::write_mmio`]/[`Vlapic::write_msr`] (initial count and
//! divider writes), and to [`Vlapic::timer_fire`]. After every write, and after
//! `timer_fire`, it should re-read [`Vlapic::timer_deadline`] and re-arm its own timer,
//! and re-check [`Vlapic::pending`].
//!
//! # Invariants
//!
//! * No vector below 16 is ever set in IRR or ISR (they are refused at acceptance,
//!   and ISR is filled from IRR only).
//! * `pending() == Some(v)` implies `v >> 4 > ppr >> 4`, the APIC is globally and
//!   software enabled, and `v` is set in IRR.
//! * While software-disabled every LVT has its mask bit set.
//! * The mode only ever changes along the transitions above; x2APIC is entered
//!   only from xAPIC.
//! * After `timer_fire(now)` returns, the deadline (if any) is after `now`.
//! * No input panics: every offset, MSR, size, value and time is accepted, and all
//!   timer arithmetic saturates.
//!
//! # Locking
//!
//! None here. A `Vlapic` belongs to one vCPU; the caller serialises access (the
//! vCPU's own exits, plus other vCPUs' IPIs and device interrupts through
//! [`Vlapic::targets_me`] and [`Vlapic::accept`] under whatever lock guards that
//! vCPU's state).
#![forbid(unsafe_code)]

/// The only APIC base keel offers (the architectural default).
pub const APIC_BASE_ADDR: u64 = 0xFEE0_0000;
/// `IA32_APIC_BASE` MSR number.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// `IA32_APIC_BASE` bit 8: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10 (EXTD): x2APIC mode, with EN (SDM §11.12.1).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11 (EN): the APIC is globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// Size of the APIC register page.
pub const APIC_PAGE_SIZE: u32 = 0x1000;
/// The version register: max LVT entry 5 (six LVTs) in bits 23:16, version 0x14
/// (an integrated xAPIC) in bits 7:0; no directed-EOI support (bit 24).
pub const VERSION: u32 = 0x0005_0014;

/// The first x2APIC register MSR (the register at offset 0).
pub const MSR_X2APIC_FIRST: u32 = 0x800;
/// The last MSR of the x2APIC block [`Vlapic::read_msr`] and [`Vlapic::write_msr`]
/// decode (the registers end at SELF IPI, 0x83F; the rest are reserved).
pub const MSR_X2APIC_LAST: u32 = 0x8FF;
/// The x2APIC broadcast destination (SDM §11.12.9).
pub const X2APIC_BROADCAST: u32 = 0xFFFF_FFFF;
/// The xAPIC broadcast destination.
pub const XAPIC_BROADCAST: u32 = 0xFF;

/// The MSR of the x2APIC register at page offset `offset` (SDM §11.12.1.2).
pub const fn x2apic_msr(offset: u32) -> u32 {
    MSR_X2APIC_FIRST + offset / 0x10
}

/// The page offset of x2APIC register MSR `msr`, if it is in the block.
const fn msr_offset(msr: u32) -> Option<u32> {
    if msr >= MSR_X2APIC_FIRST && msr <= MSR_X2APIC_LAST {
        Some((msr - MSR_X2APIC_FIRST) * 0x10)
    } else {
        None
    }
}

/// The logical x2APIC id of the APIC with id `id` (SDM §11.12.10.2): the cluster
/// `id >> 4` in bits 31:16 (16 bits of it), member bit `id & 0xF` in bits 15:0.
pub const fn x2apic_ldr(id: u32) -> u32 {
    (((id >> 4) & 0xFFFF) << 16) | (1 << (id & 0xF))
}

/// Register offsets in the APIC page (SDM Vol. 3A Table 11-1); the x2APIC MSR of
/// each is [`x2apic_msr`] of it (Table 11-6).
pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    /// xAPIC only.
    pub const APR: u32 = 0x90;
    pub const PPR: u32 = 0xA0;
    pub const EOI: u32 = 0xB0;
    /// xAPIC only.
    pub const RRD: u32 = 0xC0;
    /// Writable in xAPIC mode, read-only (derived from the ID) in x2APIC mode.
    pub const LDR: u32 = 0xD0;
    /// xAPIC only.
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
    /// In x2APIC mode the whole 64-bit ICR (MSR 0x830).
    pub const ICR_LO: u32 = 0x300;
    /// xAPIC only.
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
    /// x2APIC only (MSR 0x83F), write-only; reserved in the xAPIC page.
    pub const SELF_IPI: u32 = 0x3F0;
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
/// ICR low: vector, delivery mode, destination mode, level, trigger, shorthand. In
/// x2APIC mode every other bit of the low half is reserved (SDM §11.12.9).
const ICR_LO_WRITABLE: u32 = 0x000C_CFFF;
const ICR_HI_WRITABLE: u32 = 0xFF00_0000;
/// ICR bits 19:18 = 01: the "self" shorthand.
const ICR_SHORTHAND_SELF: u32 = 1 << 18;
/// Divide configuration bits 0, 1 and 3.
const DIVIDE_WRITABLE: u32 = 0b1011;
/// LVT bit 12: delivery status (read-only).
const LVT_DELIVERY_STATUS: u32 = 1 << 12;
/// LVT LINT0/LINT1 bit 14: remote IRR (read-only).
const LVT_REMOTE_IRR: u32 = 1 << 14;
const TIMER_MODE_SHIFT: u32 = 17;
/// The highest vector that is illegal for fixed delivery (SDM §11.5.2).
const LAST_ILLEGAL_VECTOR: u8 = 15;

/// The APIC's mode, from `IA32_APIC_BASE` EN and EXTD (SDM §11.12.5.1). The fourth
/// combination (EN=0, EXTD=1) is invalid and never held. The variant's doc is its
/// name in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum ApicMode {
    /// disabled (EN=0, EXTD=0)
    Disabled,
    /// xAPIC mode (EN=1, EXTD=0)
    XApic,
    /// x2APIC mode (EN=1, EXTD=1)
    X2Apic,
}

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

    /// The bits that are not reserved: the writable ones and the read-only status
    /// bits (an x2APIC write setting any other bit is a #GP, SDM §11.12.1.3).
    const fn defined(self) -> u32 {
        match self {
            Lvt::Lint0 | Lvt::Lint1 => self.writable() | LVT_DELIVERY_STATUS | LVT_REMOTE_IRR,
            _ => self.writable() | LVT_DELIVERY_STATUS,
        }
    }
}

/// What kind of access a register allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// MMIO writes are dropped; an MSR write is a #GP.
    ReadOnly,
    /// MMIO reads give 0 (EOI); an MSR read is a #GP.
    WriteOnly,
    /// No register. MMIO: reads give 0, writes are dropped; MSR: any access is a #GP.
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
    /// The APIC is in x2APIC mode: the xAPIC page is not there (SDM §11.12.2).
    X2apic,
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
    /// An ICR or SELF IPI write sent an IPI; the caller routes it (see
    /// [`Vlapic::targets_me`]).
    Ipi(Ipi),
}

/// ICR bits 18-19.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// Use the destination field.
    None,
    /// The sender only (Linux's irq_work self-IPI, and every x2APIC SELF IPI).
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

/// An inter-processor interrupt, as written to the ICR (or the SELF IPI register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// The sender's full 32-bit APIC ID, whatever its mode (it resolves the "self"
    /// shorthands).
    pub source: u32,
    pub shorthand: Shorthand,
    /// The destination, meaningful only with [`Shorthand::None`]: ICR bits 63:56
    /// (0..=0xFF) from an xAPIC sender, ICR bits 63:32 from an x2APIC one. Each
    /// receiver reads it by its own mode ([`Vlapic::targets_me`]).
    pub dest: u32,
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
/// The `IA32_APIC_BASE` and x2APIC MSR errors are a #GP for the guest; the MMIO ones
/// crash the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum VlapicError {
    /// IA32_APIC_BASE write sets EXTD without EN, an invalid APIC state
    ApicBaseInvalid,
    /// IA32_APIC_BASE write makes the illegal transition from {from} to {to}
    ApicBaseTransition { from: ApicMode, to: ApicMode },
    /// IA32_APIC_BASE write sets reserved bits
    ApicBaseReserved,
    /// IA32_APIC_BASE write moves the APIC away from 0xFEE00000
    ApicBaseMoved,
    /// local APIC write is not a 32-bit access at a 32-bit aligned offset (offset {offset:#x}, {size} bytes)
    BadWrite { offset: u32, size: usize },
    /// local APIC read is not 1 to 8 bytes wide ({size} bytes)
    BadReadSize { size: usize },
    /// x2APIC MSR {msr:#x} accessed while the local APIC is not in x2APIC mode
    NotX2apic { msr: u32 },
    /// MSR {msr:#x} holds no x2APIC register
    MsrReserved { msr: u32 },
    /// read of the write-only x2APIC MSR {msr:#x}
    MsrWriteOnly { msr: u32 },
    /// write to the read-only x2APIC MSR {msr:#x}
    MsrReadOnly { msr: u32 },
    /// write of {value:#x} to x2APIC MSR {msr:#x} sets reserved bits
    MsrReservedBits { msr: u32, value: u64 },
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
    /// The x2APIC id; xAPIC mode shows its low 8 bits.
    id: u32,
    bsp: bool,
    /// `IA32_APIC_BASE` EN and EXTD.
    mode: ApicMode,
    tpr: u32,
    /// The xAPIC LDR (x2APIC mode derives its own from the ID).
    ldr: u32,
    /// xAPIC only; kept, unseen, in x2APIC mode.
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
    /// ICR bits 63:32 as stored: the 8-bit destination in bits 31:24 in xAPIC mode,
    /// the 32-bit destination in x2APIC mode (kept as is across the switch).
    icr_hi: u32,
    timer_initial: u32,
    timer_divide: u32,
    /// The ns time of the next expiry, while the timer is armed.
    timer_deadline: Option<u64>,
}

impl Vlapic {
    /// A local APIC in its power-on state (xAPIC mode, software disabled), with the
    /// 32-bit APIC ID `id` (keel: 2 × vcpu_id); `bsp` for vCPU 0. `id` must not be
    /// 0xFFFF_FFFF (the x2APIC broadcast); an id above 255 is usable only in x2APIC
    /// mode (see the module doc).
    pub fn new(id: u32, bsp: bool) -> Self {
        let mut v = Vlapic {
            id,
            bsp,
            mode: ApicMode::XApic,
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

    /// Power-on reset (SDM §11.4.7.1, §11.12.5.1): xAPIC mode at [`APIC_BASE_ADDR`]
    /// and every register to its reset value; the ID is kept.
    pub fn reset(&mut self) {
        self.mode = ApicMode::XApic;
        self.reset_registers();
    }

    /// An INIT (SDM §11.4.7.3, §11.12.5.1): every register to its reset value except
    /// the ID; `IA32_APIC_BASE` is kept, so the mode (disabled, xAPIC or x2APIC) is
    /// too, and in x2APIC mode so is the LDR, which follows from the ID.
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

    /// This APIC's 32-bit (x2APIC) ID, whatever the mode. CPUID's 8-bit initial APIC
    /// id is its low byte.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The mode `IA32_APIC_BASE` selects.
    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// In x2APIC mode: the registers are MSRs and the xAPIC page is not there.
    pub fn is_x2apic(&self) -> bool {
        self.mode == ApicMode::X2Apic
    }

    /// Globally enabled (`IA32_APIC_BASE.EN`, xAPIC or x2APIC mode). The xAPIC page is
    /// backed only in xAPIC mode.
    pub fn is_enabled(&self) -> bool {
        self.mode != ApicMode::Disabled
    }

    /// Software enabled (SVR bit 8) as well as globally enabled.
    pub fn is_sw_enabled(&self) -> bool {
        self.is_enabled() && self.svr & SVR_ENABLE != 0
    }

    // ---- IA32_APIC_BASE -------------------------------------------------------------

    /// The `IA32_APIC_BASE` value RDMSR returns.
    pub fn apic_base_msr(&self) -> u64 {
        let mut v = APIC_BASE_ADDR;
        if self.bsp {
            v |= APIC_BASE_BSP;
        }
        match self.mode {
            ApicMode::Disabled => {}
            ApicMode::XApic => v |= APIC_BASE_ENABLE,
            ApicMode::X2Apic => v |= APIC_BASE_ENABLE | APIC_BASE_EXTD,
        }
        v
    }

    /// WRMSR `IA32_APIC_BASE`. Only EN and EXTD may change (the BSP bit is the
    /// vCPU's, and a written value of it is ignored), along the transitions of the
    /// module doc; an `Err` is a #GP for the guest and changes nothing. Entering or
    /// leaving disabled resets the registers; xAPIC -> x2APIC keeps them.
    pub fn set_apic_base_msr(&mut self, value: u64) -> Result<(), VlapicError> {
        // Bits 7:0 and 9 are reserved; bits 12 and up are the base (up to MAXPHYADDR,
        // reserved above it), which must stay where it is.
        if value & 0x2FF != 0 {
            return Err(VlapicError::ApicBaseReserved);
        }
        if value & !0xFFF != APIC_BASE_ADDR {
            return Err(VlapicError::ApicBaseMoved);
        }
        let to = match (value & APIC_BASE_ENABLE != 0, value & APIC_BASE_EXTD != 0) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => return Err(VlapicError::ApicBaseInvalid),
        };
        let from = self.mode;
        match (from, to) {
            _ if from == to => {}
            // SDM §11.12.5.1: the ID (now shown whole) and the LDR (now derived from
            // it) change their view; nothing is reset.
            (ApicMode::XApic, ApicMode::X2Apic) => self.mode = to,
            // Back from x2APIC only through disabled; from disabled only to xAPIC.
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => {
                return Err(VlapicError::ApicBaseTransition { from, to });
            }
            // Into or out of disabled (SDM §11.4.3).
            _ => {
                self.mode = to;
                self.reset_registers();
            }
        }
        Ok(())
    }

    // ---- the xAPIC page -------------------------------------------------------------

    /// How the xAPIC register at `offset` may be accessed (offsets that are not
    /// 16-byte aligned, and everything past the last register, are reserved).
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

    /// The 32-bit xAPIC register at `offset` (all-ones unless in xAPIC mode; 0 for a
    /// reserved or write-only offset).
    pub fn read(&self, offset: u32, now_ns: u64) -> u32 {
        if self.mode != ApicMode::XApic {
            return u32::MAX;
        }
        if !offset.is_multiple_of(0x10) {
            return 0;
        }
        match offset {
            reg::ID => (self.id & 0xFF) << 24,
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::ICR_LO => self.icr_lo,
            reg::ICR_HI => self.icr_hi,
            _ => self.read_common(offset, now_ns),
        }
    }

    /// The registers both modes share, by offset (0 for anything else).
    fn read_common(&self, offset: u32, now_ns: u64) -> u32 {
        match offset {
            reg::VERSION => VERSION,
            reg::TPR => self.tpr,
            reg::PPR => self.ppr(),
            reg::SVR => self.svr,
            reg::ISR..=0x170 => self.isr.word_at(reg::ISR, offset).unwrap_or(0),
            reg::TMR..=0x1F0 => self.tmr.word_at(reg::TMR, offset).unwrap_or(0),
            reg::IRR..=0x270 => self.irr.word_at(reg::IRR, offset).unwrap_or(0),
            reg::ESR => self.esr,
            reg::TIMER_INITIAL => self.timer_initial,
            reg::TIMER_CURRENT => self.current_count(now_ns),
            reg::TIMER_DIVIDE => self.timer_divide,
            _ => Lvt::from_offset(offset).map_or(0, |l| self.lvt[l.index()]),
        }
    }

    /// An MMIO read of `size` (1..=8) bytes at page offset `offset`: the bytes of the
    /// containing registers, little-endian, zero for the reserved bytes of each
    /// 16-byte slot and past the page (all-ones unless in xAPIC mode).
    pub fn read_mmio(&self, offset: u32, size: usize, now_ns: u64) -> Result<u64, VlapicError> {
        if !(1..=8).contains(&size) {
            return Err(VlapicError::BadReadSize { size });
        }
        if self.mode != ApicMode::XApic {
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
    /// 4-byte aligned offset are accepted, in any mode (see the module doc).
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

    /// Writes the 32-bit xAPIC register at `offset` (ignored unless in xAPIC mode).
    pub fn write(&mut self, offset: u32, value: u32, now_ns: u64) -> WriteEffect {
        match self.mode {
            ApicMode::Disabled => return WriteEffect::Ignored(Ignored::Disabled),
            ApicMode::X2Apic => return WriteEffect::Ignored(Ignored::X2apic),
            ApicMode::XApic => {}
        }
        match Self::access(offset) {
            Access::Reserved => return WriteEffect::Ignored(Ignored::Reserved),
            Access::ReadOnly => return WriteEffect::Ignored(Ignored::ReadOnly),
            Access::ReadWrite | Access::WriteOnly => {}
        }
        match offset {
            reg::LDR => self.ldr = value & 0xFF00_0000,
            reg::DFR => self.dfr = (value & 0xF000_0000) | 0x0FFF_FFFF,
            reg::ICR_LO => {
                self.icr_lo = value & ICR_LO_WRITABLE;
                return self.send_ipi(self.icr_lo, self.icr_hi >> 24);
            }
            reg::ICR_HI => self.icr_hi = value & ICR_HI_WRITABLE,
            _ => return self.write_common(offset, value, now_ns),
        }
        WriteEffect::Done
    }

    /// Writes a register both modes share, the value already checked or masked by
    /// the caller's rules (xAPIC drops undefined bits, x2APIC refuses them).
    fn write_common(&mut self, offset: u32, value: u32, now_ns: u64) -> WriteEffect {
        match offset {
            reg::TPR => self.tpr = value & 0xFF,
            reg::EOI => return self.eoi(),
            reg::SVR => self.write_svr(value),
            reg::ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
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

    // ---- the x2APIC MSRs ------------------------------------------------------------

    /// How x2APIC register MSR `msr` may be accessed (SDM Table 11-6). Every MSR
    /// outside [`MSR_X2APIC_FIRST`]..=[`MSR_X2APIC_LAST`], and APR, RRD, DFR and the
    /// ICR's high half, are reserved; LDR is read-only; SELF IPI is write-only.
    pub fn msr_access(msr: u32) -> Access {
        let Some(offset) = msr_offset(msr) else {
            return Access::Reserved;
        };
        match offset {
            reg::APR | reg::RRD | reg::DFR | reg::ICR_HI => Access::Reserved,
            reg::LDR => Access::ReadOnly,
            reg::SELF_IPI => Access::WriteOnly,
            _ => Self::access(offset),
        }
    }

    /// The page offset of `msr` for an access the mode allows.
    fn x2apic_offset(&self, msr: u32) -> Result<u32, VlapicError> {
        if self.mode != ApicMode::X2Apic {
            return Err(VlapicError::NotX2apic { msr });
        }
        msr_offset(msr).ok_or(VlapicError::MsrReserved { msr })
    }

    /// RDMSR of x2APIC register `msr`. An `Err` (see the module doc) is a #GP for the
    /// guest.
    pub fn read_msr(&self, msr: u32, now_ns: u64) -> Result<u64, VlapicError> {
        let offset = self.x2apic_offset(msr)?;
        match Self::msr_access(msr) {
            Access::Reserved => return Err(VlapicError::MsrReserved { msr }),
            Access::WriteOnly => return Err(VlapicError::MsrWriteOnly { msr }),
            Access::ReadOnly | Access::ReadWrite => {}
        }
        Ok(match offset {
            reg::ID => u64::from(self.id),
            reg::LDR => u64::from(x2apic_ldr(self.id)),
            reg::ICR_LO => (u64::from(self.icr_hi) << 32) | u64::from(self.icr_lo),
            _ => u64::from(self.read_common(offset, now_ns)),
        })
    }

    /// WRMSR of x2APIC register `msr`. An `Err` (see the module doc) is a #GP for the
    /// guest and changes nothing.
    pub fn write_msr(
        &mut self,
        msr: u32,
        value: u64,
        now_ns: u64,
    ) -> Result<WriteEffect, VlapicError> {
        let offset = self.x2apic_offset(msr)?;
        match Self::msr_access(msr) {
            Access::Reserved => return Err(VlapicError::MsrReserved { msr }),
            Access::ReadOnly => return Err(VlapicError::MsrReadOnly { msr }),
            Access::WriteOnly | Access::ReadWrite => {}
        }
        let reserved = Err(VlapicError::MsrReservedBits { msr, value });
        match offset {
            // SDM §11.12.9: one 64-bit write, the destination in bits 63:32.
            reg::ICR_LO => {
                let lo = value as u32;
                if lo & !ICR_LO_WRITABLE != 0 {
                    return reserved;
                }
                self.icr_lo = lo;
                self.icr_hi = (value >> 32) as u32;
                return Ok(self.send_ipi(self.icr_lo, self.icr_hi));
            }
            // SDM §11.12.11: a fixed, edge-triggered self-IPI; the ICR is untouched.
            reg::SELF_IPI => {
                if value > 0xFF {
                    return reserved;
                }
                return Ok(self.send_ipi(ICR_SHORTHAND_SELF | value as u32, 0));
            }
            _ => {}
        }
        // Every other register is 32 bits: bits 63:32 are reserved.
        let Ok(v) = u32::try_from(value) else {
            return reserved;
        };
        let defined = match offset {
            reg::TPR => 0xFF,
            // SDM Table 11-6: a non-zero write is a #GP.
            reg::EOI | reg::ESR => 0,
            reg::SVR => SVR_WRITABLE,
            reg::TIMER_INITIAL => u32::MAX,
            reg::TIMER_DIVIDE => DIVIDE_WRITABLE,
            _ => Lvt::from_offset(offset).map_or(0, Lvt::defined),
        };
        if v & !defined != 0 {
            return reserved;
        }
        Ok(self.write_common(offset, v, now_ns))
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

    /// Sends the IPI an ICR value describes: `lo` is ICR bits 31:0, `dest` the
    /// destination as the mode reads it (xAPIC: ICR bits 63:56; x2APIC: 63:32).
    fn send_ipi(&mut self, lo: u32, dest: u32) -> WriteEffect {
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
            dest,
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

    /// Whether this APIC is a destination of `ipi` (SDM §11.6.2, §11.12.10), read by
    /// this APIC's own mode: by shorthand (against the sender's 32-bit id); else in
    /// x2APIC mode by physical 32-bit ID (0xFFFF_FFFF broadcasts) or logical cluster
    /// and member bitmap (cluster 0xFFFF is every cluster); else (xAPIC, or disabled)
    /// by physical ID (0xFF broadcasts; compared with the whole id, see the module
    /// doc) or by 8-bit logical ID in the flat or cluster model of DFR. Lowest-priority IPIs match like fixed ones; the caller
    /// picks one. Whether the match can accept anything is [`Vlapic::accept`]'s
    /// business.
    pub fn targets_me(&self, ipi: &Ipi) -> bool {
        match ipi.shorthand {
            Shorthand::SelfOnly => ipi.source == self.id,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => ipi.source != self.id,
            Shorthand::None => match (self.mode, ipi.dest_mode) {
                (ApicMode::X2Apic, DestMode::Physical) => {
                    ipi.dest == X2APIC_BROADCAST || ipi.dest == self.id
                }
                (ApicMode::X2Apic, DestMode::Logical) => self.matches_x2apic_logical(ipi.dest),
                // The full id, not its low 8 bits: an id up to 255 is its xAPIC id;
                // a wider one is reached only by an x2APIC sender naming all of it
                // (a BSP in x2APIC mode waking this AP), never by an 8-bit alias.
                (_, DestMode::Physical) => ipi.dest == XAPIC_BROADCAST || ipi.dest == self.id,
                (_, DestMode::Logical) => {
                    u8::try_from(ipi.dest).is_ok_and(|d| self.matches_logical(d))
                }
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

    /// x2APIC logical destinations are always clustered (SDM §11.12.10.1): bits 31:16
    /// the cluster (0xFFFF, which no APIC of fewer than 2^20 - 16 has, for all of
    /// them, so 0xFFFF_FFFF is the broadcast), bits 15:0 a member bitmap.
    fn matches_x2apic_logical(&self, dest: u32) -> bool {
        let ldr = x2apic_ldr(self.id);
        let cluster = dest >> 16;
        (cluster == 0xFFFF || cluster == ldr >> 16) && dest & ldr & 0xFFFF != 0
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
    fn enabled(id: u32) -> Vlapic {
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
            a.set_apic_base_msr(0xFEE0_0400),
            Err(VlapicError::ApicBaseInvalid)
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

    // ---- x2APIC ----------------------------------------------------------------------

    const X2APIC_ON: u64 = APIC_BASE_ADDR | APIC_BASE_ENABLE | APIC_BASE_EXTD;
    const XAPIC_ON: u64 = APIC_BASE_ADDR | APIC_BASE_ENABLE;

    /// A software-enabled APIC switched to x2APIC mode, as Linux leaves it.
    fn x2(id: u32) -> Vlapic {
        let mut a = enabled(id);
        assert_eq!(a.set_apic_base_msr(X2APIC_ON), Ok(()));
        assert!(a.is_x2apic());
        a
    }

    fn msr(offset: u32) -> u32 {
        x2apic_msr(offset)
    }

    fn sent(effect: Result<WriteEffect, VlapicError>) -> Ipi {
        match effect {
            Ok(WriteEffect::Ipi(ipi)) => ipi,
            other => panic!("no IPI sent: {other:?}"),
        }
    }

    #[test]
    fn msr_numbers() {
        assert_eq!(msr(reg::ID), 0x802);
        assert_eq!(msr(reg::EOI), 0x80B);
        assert_eq!(msr(reg::LDR), 0x80D);
        assert_eq!(msr(reg::ICR_LO), 0x830);
        assert_eq!(msr(reg::TIMER_DIVIDE), 0x83E);
        assert_eq!(msr(reg::SELF_IPI), 0x83F);
    }

    #[test]
    fn xapic_to_x2apic_keeps_state() {
        let mut a = enabled(0);
        a.write(reg::TPR, 0x20, 0);
        a.write(reg::LVT_TIMER, PERIODIC | 0xEC, 0);
        a.write(reg::TIMER_INITIAL, 100, 0);
        a.write(reg::LDR, 0x0100_0000, 0);
        a.accept(0x40, true);
        assert_eq!(a.set_apic_base_msr(X2APIC_ON), Ok(()));
        assert_eq!(a.mode(), ApicMode::X2Apic);
        assert!(a.is_x2apic() && a.is_enabled() && a.is_sw_enabled());
        assert_eq!(a.apic_base_msr(), 0xFEE0_0D00, "EN, EXTD and BSP");
        assert_eq!(a.read_msr(msr(reg::TPR), 10), Ok(0x20));
        assert_eq!(a.read_msr(msr(reg::SVR), 10), Ok(0x1FF));
        assert_eq!(
            a.read_msr(msr(reg::LVT_TIMER), 10),
            Ok(u64::from(PERIODIC | 0xEC))
        );
        // Divide by 2 (the reset divider): 5 ticks gone.
        assert_eq!(a.read_msr(msr(reg::TIMER_CURRENT), 10), Ok(95));
        assert_eq!(a.timer_deadline(), Some(200));
        assert_eq!(a.read_msr(msr(reg::IRR + 0x20), 10), Ok(1));
        assert_eq!(a.read_msr(msr(reg::TMR + 0x20), 10), Ok(1));
        assert_eq!(a.pending(), Some(0x40));
        // The LDR is now the logical x2APIC id, whatever xAPIC software wrote.
        assert_eq!(a.read_msr(msr(reg::LDR), 10), Ok(1));
        // Writing the same state again changes nothing.
        assert_eq!(a.set_apic_base_msr(X2APIC_ON), Ok(()));
        assert_eq!(a.read_msr(msr(reg::TPR), 10), Ok(0x20));
    }

    #[test]
    fn apic_base_transitions() {
        use ApicMode::*;
        let modes = [
            (Disabled, APIC_BASE_ADDR),
            (XApic, XAPIC_ON),
            (X2Apic, X2APIC_ON),
        ];
        // From each mode to each mode: ok, or which error.
        let expect = |from: ApicMode, to: ApicMode| match (from, to) {
            (X2Apic, XApic) | (Disabled, X2Apic) => {
                Err(VlapicError::ApicBaseTransition { from, to })
            }
            _ => Ok(()),
        };
        for (from, from_value) in modes {
            for (to, value) in modes {
                let mut a = Vlapic::new(4, false);
                // Reach `from` by legal steps.
                if from == Disabled {
                    a.set_apic_base_msr(from_value).unwrap();
                }
                if from == X2Apic {
                    a.set_apic_base_msr(X2APIC_ON).unwrap();
                }
                assert_eq!(a.mode(), from);
                assert_eq!(
                    a.set_apic_base_msr(value),
                    expect(from, to),
                    "{from:?} -> {to:?}"
                );
                let now = if expect(from, to).is_ok() { to } else { from };
                assert_eq!(a.mode(), now, "{from:?} -> {to:?}");
                // EN=0, EXTD=1 is never reachable.
                assert_eq!(
                    a.set_apic_base_msr(APIC_BASE_ADDR | APIC_BASE_EXTD),
                    Err(VlapicError::ApicBaseInvalid)
                );
                assert_eq!(a.mode(), now);
            }
        }
    }

    #[test]
    fn leaving_x2apic_resets_through_disabled() {
        let mut a = x2(6);
        a.write_msr(msr(reg::TPR), 0x30, 0).unwrap();
        a.accept(0x50, false);
        // x2APIC -> xAPIC refused, nothing changed.
        assert_eq!(
            a.set_apic_base_msr(XAPIC_ON),
            Err(VlapicError::ApicBaseTransition {
                from: ApicMode::X2Apic,
                to: ApicMode::XApic
            })
        );
        assert_eq!(a.read_msr(msr(reg::TPR), 0), Ok(0x30));
        // x2APIC -> disabled -> xAPIC: the power-on registers, the id kept.
        assert_eq!(a.set_apic_base_msr(APIC_BASE_ADDR), Ok(()));
        assert_eq!(a.mode(), ApicMode::Disabled);
        assert_eq!(a.apic_base_msr(), APIC_BASE_ADDR);
        assert_eq!(
            a.read_msr(msr(reg::ID), 0),
            Err(VlapicError::NotX2apic { msr: 0x802 })
        );
        assert_eq!(a.set_apic_base_msr(XAPIC_ON), Ok(()));
        assert_eq!(a.read(reg::ID, 0), 6 << 24);
        assert_eq!(a.read(reg::TPR, 0), 0);
        assert_eq!(a.read(reg::SVR, 0), 0xFF);
        assert_eq!(a.read(reg::IRR + 0x20, 0), 0);
        assert_eq!(a.read(reg::DFR, 0), 0xFFFF_FFFF);
    }

    #[test]
    fn msr_access_outside_x2apic_mode() {
        let mut a = enabled(1);
        for m in [0x802, 0x808, 0x830, 0x83F, 0x801, 0x8FF] {
            assert_eq!(a.read_msr(m, 0), Err(VlapicError::NotX2apic { msr: m }));
            assert_eq!(a.write_msr(m, 0, 0), Err(VlapicError::NotX2apic { msr: m }));
        }
        a.set_apic_base_msr(APIC_BASE_ADDR).unwrap();
        assert_eq!(
            a.write_msr(0x808, 0, 0),
            Err(VlapicError::NotX2apic { msr: 0x808 })
        );
        assert_eq!(
            a.read_msr(0x802, 0),
            Err(VlapicError::NotX2apic { msr: 0x802 })
        );
    }

    #[test]
    fn msr_access_map() {
        use Access::*;
        let expected = |m: u32| -> Access {
            match m {
                0x802 | 0x803 | 0x80A | 0x80D | 0x810..=0x827 | 0x839 => ReadOnly,
                0x80B | 0x83F => WriteOnly,
                0x808 | 0x80F | 0x828 | 0x82F | 0x830 | 0x832..=0x838 | 0x83E => ReadWrite,
                _ => Reserved,
            }
        };
        for m in (0x7F0..0x910).chain([0, 0x1B, 0xBFF, u32::MAX]) {
            assert_eq!(Vlapic::msr_access(m), expected(m), "{m:#x}");
        }
        // APR, RRD, DFR and ICR high are gone in x2APIC mode.
        for off in [reg::APR, reg::RRD, reg::DFR, reg::ICR_HI] {
            assert_eq!(Vlapic::msr_access(msr(off)), Reserved);
        }
        // And the model answers accordingly.
        let mut a = x2(2);
        for m in (0x7F0..0x910).chain([0, u32::MAX]) {
            let read = a.read_msr(m, 0);
            match expected(m) {
                Reserved => {
                    assert_eq!(read, Err(VlapicError::MsrReserved { msr: m }));
                    assert_eq!(
                        a.write_msr(m, 0, 0),
                        Err(VlapicError::MsrReserved { msr: m })
                    );
                }
                WriteOnly => assert_eq!(read, Err(VlapicError::MsrWriteOnly { msr: m })),
                ReadOnly => {
                    assert!(read.is_ok(), "{m:#x}");
                    assert_eq!(
                        a.write_msr(m, 0, 0),
                        Err(VlapicError::MsrReadOnly { msr: m })
                    );
                    assert_eq!(a.read_msr(m, 0), read, "unchanged: {m:#x}");
                }
                ReadWrite => assert!(read.is_ok(), "{m:#x}"),
            }
        }
    }

    #[test]
    fn msr_reads_mirror_the_registers() {
        let mut a = x2(0x10);
        assert_eq!(a.read_msr(0x802, 0), Ok(0x10));
        assert_eq!(a.read_msr(0x803, 0), Ok(u64::from(VERSION)));
        assert_eq!(a.read_msr(0x80D, 0), Ok(0x0001_0001));
        a.write_msr(0x808, 0x45, 0).unwrap();
        assert_eq!(a.read_msr(0x808, 0), Ok(0x45));
        assert_eq!(a.cr8(), 4);
        a.accept(0x61, false);
        assert!(a.ack(0x61));
        a.accept(0x72, true);
        assert_eq!(a.read_msr(0x80A, 0), Ok(0x60), "PPR");
        assert_eq!(a.read_msr(0x813, 0), Ok(1 << 1), "ISR word 3");
        assert_eq!(a.read_msr(0x823, 0), Ok(1 << 18), "IRR word 3");
        assert_eq!(a.read_msr(0x81B, 0), Ok(1 << 18), "TMR word 3");
        // The timer through MSRs.
        a.write_msr(0x832, u64::from(PERIODIC | 0xEF), 1_000)
            .unwrap();
        a.write_msr(0x83E, 0b0001, 1_000).unwrap(); // divide by 4
        a.write_msr(0x838, 50, 1_000).unwrap();
        assert_eq!(a.timer_deadline(), Some(1_200));
        assert_eq!(a.read_msr(0x838, 1_100), Ok(50));
        assert_eq!(a.read_msr(0x839, 1_100), Ok(25));
        assert_eq!(a.read_msr(0x83E, 1_100), Ok(1));
        // Software disable through SVR masks the LVTs, as in xAPIC mode.
        a.write_msr(0x80F, 0xFF, 0).unwrap();
        assert!(!a.is_sw_enabled());
        assert_eq!(
            a.read_msr(0x832, 0),
            Ok(u64::from(LVT_MASKED | PERIODIC | 0xEF))
        );
    }

    #[test]
    fn msr_writes_refuse_reserved_bits() {
        let mut a = x2(1);
        let refused = |m: u32, value: u64| Err(VlapicError::MsrReservedBits { msr: m, value });
        for (m, value) in [
            (0x808, 0x100),   // TPR above bit 7
            (0x808, 1 << 32), // bits 63:32 of a 32-bit register
            (0x80B, 1),       // EOI must be 0
            (0x80B, 1 << 40),
            (0x828, 0xFFFF_FFFF), // ESR must be 0
            (0x80F, 1 << 12),     // no directed EOI
            (0x80F, 1 << 10),
            (0x832, 1 << 19), // timer LVT
            (0x832, 1 << 8),  // the timer has no delivery mode
            (0x837, 1 << 8),  // neither has the error LVT
            (0x835, 1 << 17), // LINT0
            (0x834, 1 << 13), // perf: no polarity
            (0x838, 1 << 32), // initial count
            (0x83E, 0b0100),  // divide bit 2
            (0x83E, 1 << 4),
            (0x830, 1 << 12), // ICR: delivery status is reserved in x2APIC
            (0x830, 1 << 13),
            (0x830, 1 << 16),
            (0x830, 1 << 17),
            (0x830, 1 << 20),
            (0x830, 1 << 31),
            (0x83F, 0x100), // SELF IPI: vector only
            (0x83F, 1 << 32),
        ] {
            assert_eq!(
                a.write_msr(m, value, 0),
                refused(m, value),
                "{m:#x} {value:#x}"
            );
        }
        // Nothing changed.
        assert_eq!(a.read_msr(0x808, 0), Ok(0));
        assert_eq!(a.read_msr(0x80F, 0), Ok(0x1FF));
        assert_eq!(a.read_msr(0x830, 0), Ok(0));
        assert_eq!(a.timer_deadline(), None);
        // Read-only status bits are not reserved: written back, they are dropped.
        a.write_msr(0x832, u64::from(LVT_DELIVERY_STATUS | 0x40), 0)
            .unwrap();
        assert_eq!(a.read_msr(0x832, 0), Ok(0x40));
        let lint = LVT_DELIVERY_STATUS | LVT_REMOTE_IRR | 0x0001_A7FF;
        assert_eq!(
            a.write_msr(0x835, u64::from(lint), 0),
            Ok(WriteEffect::Done)
        );
        assert_eq!(a.read_msr(0x835, 0), Ok(0x0001_A7FF));
        // Every defined bit is accepted.
        for (m, value) in [
            (0x808, 0xFF),
            (0x80F, 0x3FF),
            (0x82F, 0x0001_17FF),
            (0x833, 0x0001_17FF),
            (0x834, 0x0001_17FF),
            (0x837, 0x0001_10FF),
            (0x838, 0xFFFF_FFFF),
            (0x83E, 0b1011),
        ] {
            assert_eq!(a.write_msr(m, value, 0), Ok(WriteEffect::Done), "{m:#x}");
        }
    }

    #[test]
    fn msr_eoi_and_esr() {
        let mut a = x2(0);
        a.accept(0x81, true);
        assert!(a.ack(0x81));
        assert_eq!(
            a.write_msr(0x80B, 0, 0),
            Ok(WriteEffect::Eoi {
                vector: 0x81,
                level: true
            })
        );
        assert_eq!(
            a.write_msr(0x80B, 0, 0),
            Ok(WriteEffect::Done),
            "none in service"
        );
        a.accept(3, false);
        assert_eq!(a.read_msr(0x828, 0), Ok(0));
        assert_eq!(a.write_msr(0x828, 0, 0), Ok(WriteEffect::Done));
        assert_eq!(a.read_msr(0x828, 0), Ok(u64::from(ESR_RECV_ILLEGAL_VECTOR)));
    }

    #[test]
    fn icr_msr_sends() {
        let mut a = x2(0x104);
        // Physical, fixed, level-assert, to a 32-bit destination.
        let value = (0x0001_0102u64 << 32) | 0x40F0;
        let ipi = sent(a.write_msr(0x830, value, 0));
        assert_eq!(
            ipi,
            Ipi {
                source: 0x104,
                shorthand: Shorthand::None,
                dest: 0x0001_0102,
                dest_mode: DestMode::Physical,
                delivery: DeliveryMode::Fixed,
                vector: 0xF0,
                level: true,
                trigger: Trigger::Edge,
            }
        );
        assert_eq!(
            a.read_msr(0x830, 0),
            Ok(value),
            "delivery status reads idle"
        );
        assert!(x2(0x0001_0102).targets_me(&ipi));
        assert!(!x2(0x102).targets_me(&ipi));
        assert!(!a.targets_me(&ipi));
        // Physical broadcast.
        let bcast = sent(a.write_msr(0x830, (u64::from(u32::MAX) << 32) | 0x30, 0));
        assert_eq!(bcast.dest, X2APIC_BROADCAST);
        for id in [0, 2, 0x104, 0xFF, 0x00FF_FFFE] {
            assert!(x2(id).targets_me(&bcast), "{id:#x}");
        }
        // Logical: cluster 3, members 0 and 2.
        let logical = sent(a.write_msr(0x830, (0x0003_0005u64 << 32) | 0x0830, 0));
        assert_eq!(logical.dest_mode, DestMode::Logical);
        assert_eq!(logical.dest, 0x0003_0005);
        assert!(x2(0x30).targets_me(&logical));
        assert!(x2(0x32).targets_me(&logical));
        assert!(!x2(0x31).targets_me(&logical));
        assert!(!x2(0x20).targets_me(&logical));
        // Shorthands: the destination field is not looked at.
        let me = sent(a.write_msr(0x830, (0xDEADu64 << 32) | 0x0004_0031, 0));
        assert_eq!(me.shorthand, Shorthand::SelfOnly);
        assert!(a.targets_me(&me) && !x2(0xDEAD).targets_me(&me));
        let all = sent(a.write_msr(0x830, 0x0008_0031, 0));
        assert_eq!(all.shorthand, Shorthand::AllIncludingSelf);
        assert!(a.targets_me(&all) && x2(2).targets_me(&all));
        let others = sent(a.write_msr(0x830, 0x000C_0031, 0));
        assert_eq!(others.shorthand, Shorthand::AllExcludingSelf);
        assert!(!a.targets_me(&others) && x2(2).targets_me(&others));
        // INIT and SIPI to vCPU 1 (APIC id 2), as Linux wakes an AP.
        let init = sent(a.write_msr(0x830, (2u64 << 32) | 0xC500, 0));
        assert_eq!(
            (init.delivery, init.dest, init.level),
            (DeliveryMode::Init, 2, true)
        );
        let sipi = sent(a.write_msr(0x830, (2u64 << 32) | 0x069A, 0));
        assert_eq!((sipi.delivery, sipi.vector), (DeliveryMode::StartUp, 0x9A));
        assert!(x2(2).targets_me(&sipi) && !x2(4).targets_me(&sipi));
        // Lowest priority is reported as such; reserved modes send nothing.
        let lowest = sent(a.write_msr(0x830, (2u64 << 32) | 0x0140, 0));
        assert_eq!(lowest.delivery, DeliveryMode::LowestPriority);
        assert_eq!(a.write_msr(0x830, 0x0340, 0), Ok(WriteEffect::Done));
        assert_eq!(a.write_msr(0x830, 0x0740, 0), Ok(WriteEffect::Done));
        // An illegal vector: nothing sent, ESR "send illegal vector".
        assert_eq!(a.write_msr(0x830, 0x0004_0005, 0), Ok(WriteEffect::Done));
        a.write_msr(0x828, 0, 0).unwrap();
        assert_eq!(a.read_msr(0x828, 0), Ok(u64::from(ESR_SEND_ILLEGAL_VECTOR)));
    }

    #[test]
    fn self_ipi_msr() {
        let mut a = x2(8);
        a.write_msr(0x830, (6u64 << 32) | 0x40, 0).unwrap();
        let ipi = sent(a.write_msr(0x83F, 0xF6, 0));
        assert_eq!(
            ipi,
            Ipi {
                source: 8,
                shorthand: Shorthand::SelfOnly,
                dest: 0,
                dest_mode: DestMode::Physical,
                delivery: DeliveryMode::Fixed,
                vector: 0xF6,
                level: false,
                trigger: Trigger::Edge,
            }
        );
        assert!(a.targets_me(&ipi));
        assert!(!x2(0).targets_me(&ipi), "dest 0 is not looked at");
        assert_eq!(a.read_msr(0x830, 0), Ok((6 << 32) | 0x40), "ICR untouched");
        assert_eq!(
            a.read_msr(0x83F, 0),
            Err(VlapicError::MsrWriteOnly { msr: 0x83F })
        );
        assert_eq!(a.accept(ipi.vector, false), Accept::Accepted);
        assert_eq!(a.pending(), Some(0xF6));
        // An illegal vector is a send error, as through the ICR.
        assert_eq!(a.write_msr(0x83F, 0x05, 0), Ok(WriteEffect::Done));
        a.write_msr(0x828, 0, 0).unwrap();
        assert_eq!(a.read_msr(0x828, 0), Ok(u64::from(ESR_SEND_ILLEGAL_VECTOR)));
    }

    #[test]
    fn x2apic_logical_ids_and_clusters() {
        assert_eq!(x2apic_ldr(0), 0x0000_0001);
        assert_eq!(x2apic_ldr(0x0F), 0x0000_8000);
        assert_eq!(x2apic_ldr(0x10), 0x0001_0001);
        assert_eq!(x2apic_ldr(0x23), 0x0002_0008);
        assert_eq!(x2apic_ldr(0x1_2345), 0x1234_0020);
        assert_eq!(x2(0x23).read_msr(0x80D, 0), Ok(0x0002_0008));
        let ipi = |dest| Ipi {
            source: 0,
            shorthand: Shorthand::None,
            dest,
            dest_mode: DestMode::Logical,
            delivery: DeliveryMode::Fixed,
            vector: 0x40,
            level: false,
            trigger: Trigger::Edge,
        };
        let a = x2(0x23); // cluster 2, member bit 3
        assert!(a.targets_me(&ipi(0x0002_0008)));
        assert!(a.targets_me(&ipi(0x0002_FFFF)), "the whole cluster");
        assert!(!a.targets_me(&ipi(0x0002_0004)), "another member");
        assert!(!a.targets_me(&ipi(0x0003_0008)), "another cluster");
        assert!(!a.targets_me(&ipi(0x0002_0000)), "no member");
        assert!(a.targets_me(&ipi(0xFFFF_0008)), "member 3 of every cluster");
        assert!(!a.targets_me(&ipi(0xFFFF_0001)));
        assert!(a.targets_me(&ipi(X2APIC_BROADCAST)));
        assert!(x2(0).targets_me(&ipi(X2APIC_BROADCAST)));
        // The LDR cannot be written, so neither can the match change.
        let mut b = x2(0x23);
        assert_eq!(
            b.write_msr(0x80D, 0x0005_0001, 0),
            Err(VlapicError::MsrReadOnly { msr: 0x80D })
        );
        assert!(b.targets_me(&ipi(0x0002_0008)));
    }

    #[test]
    fn ids_above_255() {
        let id = 2 * 300; // vCPU 300
        let a = Vlapic::new(id, false);
        assert_eq!(a.id(), 600);
        // xAPIC shows the low 8 bits, but they are no destination: no two vCPUs
        // answer to one (vCPU 44 has the id 0x58).
        assert_eq!(a.read(reg::ID, 0), 0x58 << 24);
        let phys = |dest| Ipi {
            source: 0,
            shorthand: Shorthand::None,
            dest,
            dest_mode: DestMode::Physical,
            delivery: DeliveryMode::Fixed,
            vector: 0x40,
            level: false,
            trigger: Trigger::Edge,
        };
        assert!(!a.targets_me(&phys(0x58)), "no 8-bit alias");
        assert!(enabled(0x58).targets_me(&phys(0x58)));
        assert!(a.targets_me(&phys(0xFF)));
        // An AP still in xAPIC mode is woken by a BSP in x2APIC mode naming its id.
        let mut bsp = x2(0);
        let init = sent(bsp.write_msr(0x830, (600u64 << 32) | 0xC500, 0));
        assert!(a.targets_me(&init));
        assert!(!enabled(0x58).targets_me(&init));
        let sipi = sent(bsp.write_msr(0x830, (600u64 << 32) | 0x0610, 0));
        assert!(a.targets_me(&sipi));
        // And the AP with id 2 by its 8-bit id, the same number.
        let sipi2 = sent(bsp.write_msr(0x830, (2u64 << 32) | 0x0610, 0));
        assert!(enabled(2).targets_me(&sipi2));
        // In x2APIC mode, all 32 bits.
        let b = x2(id);
        assert_eq!(b.read_msr(0x802, 0), Ok(600));
        assert!(b.targets_me(&phys(600)));
        assert!(!b.targets_me(&phys(0x58)));
        assert!(!b.targets_me(&phys(0xFF)), "0xFF is an id, not a broadcast");
        assert!(x2(0xFF).targets_me(&phys(0xFF)));
        // The shorthands compare full ids, whatever the mode.
        let mut c = enabled(id);
        let WriteEffect::Ipi(me) = icr(&mut c, 0, 0x0004_0040) else {
            panic!("no IPI sent");
        };
        assert_eq!(me.source, 600);
        assert!(c.targets_me(&me));
        assert!(!enabled(0x58).targets_me(&me));
        // An xAPIC logical receiver reads only 8-bit destinations.
        let mut d = enabled(0);
        d.write(reg::LDR, 0x0100_0000, 0);
        let logical = |dest| Ipi {
            dest_mode: DestMode::Logical,
            ..phys(dest)
        };
        assert!(d.targets_me(&logical(0x01)));
        assert!(!d.targets_me(&logical(0x0001_0001)));
    }

    #[test]
    fn init_in_xapic_mode() {
        let mut a = enabled(0);
        a.write(reg::TPR, 0x20, 0);
        a.write(reg::LDR, 0x0200_0000, 0);
        a.write(reg::DFR, 0, 0);
        a.write(reg::LVT_TIMER, 0xEC, 0);
        a.write(reg::TIMER_INITIAL, 100, 0);
        a.accept(0x40, true);
        icr(&mut a, 0x0300_0000, 0x40);
        a.init();
        assert_eq!(a.mode(), ApicMode::XApic);
        assert_eq!(a.apic_base_msr(), 0xFEE0_0900, "IA32_APIC_BASE untouched");
        assert_eq!(a.read(reg::ID, 0), 0);
        assert_eq!(a.read(reg::TPR, 0), 0);
        assert_eq!(a.read(reg::LDR, 0), 0);
        assert_eq!(a.read(reg::DFR, 0), 0xFFFF_FFFF);
        assert_eq!(a.read(reg::SVR, 0), 0xFF);
        assert_eq!(a.read(reg::ICR_LO, 0), 0);
        assert_eq!(a.read(reg::ICR_HI, 0), 0);
        assert_eq!(a.read(reg::IRR + 0x20, 0), 0);
        assert_eq!(a.lvt(Lvt::Timer), LVT_MASKED);
        assert_eq!(a.timer_deadline(), None);
        assert!(!a.is_sw_enabled());
    }

    #[test]
    fn init_in_x2apic_mode_stays_x2apic() {
        let mut a = x2(0x2A);
        a.write_msr(0x808, 0x20, 0).unwrap();
        a.write_msr(0x832, 0xEC, 0).unwrap();
        a.write_msr(0x838, 100, 0).unwrap();
        a.write_msr(0x830, (4u64 << 32) | 0x40, 0).unwrap();
        a.accept(0x40, false);
        a.init();
        assert_eq!(a.mode(), ApicMode::X2Apic);
        assert_eq!(a.apic_base_msr(), X2APIC_ON);
        assert_eq!(a.read_msr(0x802, 0), Ok(0x2A));
        assert_eq!(a.read_msr(0x80D, 0), Ok(u64::from(x2apic_ldr(0x2A))));
        assert_eq!(a.read_msr(0x808, 0), Ok(0));
        assert_eq!(a.read_msr(0x80F, 0), Ok(0xFF));
        assert_eq!(a.read_msr(0x830, 0), Ok(0));
        assert_eq!(a.read_msr(0x822, 0), Ok(0));
        assert_eq!(a.read_msr(0x832, 0), Ok(u64::from(LVT_MASKED)));
        assert_eq!(a.timer_deadline(), None);
        assert!(!a.is_sw_enabled());
        // Still no xAPIC page.
        assert_eq!(a.read(reg::ID, 0), u32::MAX);
        // An INIT while disabled keeps it disabled; a RESET goes back to xAPIC.
        let mut b = x2(2);
        b.set_apic_base_msr(APIC_BASE_ADDR).unwrap();
        b.init();
        assert_eq!(b.mode(), ApicMode::Disabled);
        a.reset();
        assert_eq!(a.mode(), ApicMode::XApic);
        assert_eq!(a.read(reg::ID, 0), 0x2A << 24);
    }

    #[test]
    fn no_xapic_page_in_x2apic_mode() {
        let mut a = x2(3);
        assert_eq!(a.read(reg::VERSION, 0), u32::MAX);
        assert_eq!(a.read_mmio(reg::VERSION, 4, 0), Ok(0xFFFF_FFFF));
        assert_eq!(a.read_mmio(reg::ID, 8, 0), Ok(u64::MAX));
        assert_eq!(a.read_mmio(reg::TPR, 1, 0), Ok(0xFF));
        assert_eq!(
            a.write(reg::TPR, 0x30, 0),
            WriteEffect::Ignored(Ignored::X2apic)
        );
        assert_eq!(
            a.write_mmio(reg::ICR_LO, 4, 0x0004_0040, 0),
            Ok(WriteEffect::Ignored(Ignored::X2apic))
        );
        assert_eq!(
            a.write_mmio(reg::TPR, 2, 0x30, 0),
            Err(VlapicError::BadWrite {
                offset: reg::TPR,
                size: 2
            })
        );
        assert_eq!(a.read_msr(0x808, 0), Ok(0));
        // SELF IPI has no xAPIC page slot.
        assert_eq!(Vlapic::access(reg::SELF_IPI), Access::Reserved);
    }

    #[test]
    fn x2apic_error_messages() {
        assert_eq!(
            VlapicError::ApicBaseTransition {
                from: ApicMode::X2Apic,
                to: ApicMode::XApic
            }
            .to_string(),
            "IA32_APIC_BASE write makes the illegal transition from x2APIC mode (EN=1, EXTD=1) \
             to xAPIC mode (EN=1, EXTD=0)"
        );
        assert_eq!(
            VlapicError::NotX2apic { msr: 0x830 }.to_string(),
            "x2APIC MSR 0x830 accessed while the local APIC is not in x2APIC mode"
        );
        assert_eq!(
            VlapicError::MsrReservedBits {
                msr: 0x80B,
                value: 1
            }
            .to_string(),
            "write of 0x1 to x2APIC MSR 0x80b sets reserved bits"
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
        ReadMsr(u32),
        WriteMsr(u32, u64),
        Init,
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

    fn msr_number() -> impl Strategy<Value = u32> {
        prop_oneof![
            8 => 0x800u32..0x840,
            1 => MSR_X2APIC_FIRST..=MSR_X2APIC_LAST,
            1 => any::<u32>(),
        ]
    }

    fn msr_value() -> impl Strategy<Value = u64> {
        prop_oneof![
            value().prop_map(u64::from),
            any::<u64>(),
            Just(0),
            (any::<u32>(), 0u64..0x100).prop_map(|(d, v)| (u64::from(d) << 32) | 0x4000 | v),
            Just(u64::from(X2APIC_BROADCAST) << 32 | 0x40),
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
            2 => prop_oneof![
                Just(0xFEE0_0000u64),
                Just(0xFEE0_0800u64),
                Just(0xFEE0_0C00u64),
                Just(0xFEE0_0400u64),
                any::<u64>(),
            ]
            .prop_map(Op::ApicBase),
            2 => msr_number().prop_map(Op::ReadMsr),
            6 => (msr_number(), msr_value()).prop_map(|(m, v)| Op::WriteMsr(m, v)),
            1 => Just(Op::Init),
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
        // The page is there only in xAPIC mode, the MSRs only in x2APIC mode.
        prop_assert_eq!(
            a.read(reg::VERSION, 0) == VERSION,
            a.mode() == ApicMode::XApic
        );
        prop_assert_eq!(a.read_msr(0x803, 0).is_ok(), a.is_x2apic());
        let base = a.apic_base_msr();
        prop_assert_eq!(base & APIC_BASE_EXTD != 0, a.is_x2apic());
        prop_assert_eq!(base & APIC_BASE_ENABLE != 0, a.is_enabled());
        Ok(())
    }

    proptest! {
        #[test]
        fn random_sequences_keep_invariants(ops in prop::collection::vec(op(), 1..200)) {
            let mut a = Vlapic::new(1, false);
            let mut now = 0u64;
            for op in ops {
                let before = a.mode();
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
                    Op::ReadMsr(m) => {
                        let r = a.read_msr(m, now);
                        prop_assert!(r.is_err() || a.is_x2apic());
                        if matches!(Vlapic::msr_access(m), Access::Reserved | Access::WriteOnly) {
                            prop_assert!(r.is_err());
                        }
                    }
                    Op::WriteMsr(m, v) => {
                        let copy = a.clone();
                        match a.write_msr(m, v, now) {
                            Ok(WriteEffect::Ipi(ipi)) => {
                                if a.targets_me(&ipi) && ipi.delivery == DeliveryMode::Fixed {
                                    let _ = a.accept(ipi.vector, ipi.trigger == Trigger::Level);
                                }
                            }
                            Ok(_) => prop_assert!(a.is_x2apic()),
                            // A refused write changes nothing.
                            Err(_) => prop_assert_eq!(format!("{a:?}"), format!("{copy:?}")),
                        }
                    }
                    Op::Init => a.init(),
                    Op::Reset => a.reset(),
                }
                // x2APIC is entered from xAPIC only; INIT keeps the mode.
                if a.is_x2apic() {
                    prop_assert!(matches!(before, ApicMode::XApic | ApicMode::X2Apic));
                }
                prop_assert!(a.current_count(now) <= a.timer_initial);
                check_invariants(&a)?;
            }
        }
    }
}
