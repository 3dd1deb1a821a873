//! What keel asks of VMX, checked against what the CPU allows: the VM-execution,
//! VM-exit and VM-entry controls, the CR0/CR4 fixed bits, segment access rights, and
//! the contents of the I/O and MSR bitmaps. All pure functions of raw MSR values, so
//! that they are tested on the host; [`VmxMsrs::read`] is the only hardware access.
//!
//! # Control adjustment (SDM Vol. 3D appendix A.3-A.5, Vol. 3C §31.5.1)
//! Each control MSR reports, in bits 31:0, the controls that must be 1 ("allowed-0
//! settings": a 1 there means the 0-setting is not allowed) and, in bits 63:32, the
//! controls that may be 1. When IA32_VMX_BASIC bit 55 is set, the TRUE_* MSRs report
//! the real allowed-0 settings of the "default1" controls (for example CR3-load/store
//! exiting, which EPT makes unnecessary) and are used instead. keel splits what it
//! wants into required controls (missing one is a [`VmxError::MissingControl`]) and
//! optional ones (used when allowed).
//!
//! # What keel intercepts, and why
//! - external interrupts and NMIs (pin-based): the host owns every interrupt;
//!   "acknowledge interrupt on exit" stays 0, so an external interrupt stays pending
//!   in the LAPIC and keel takes it through its IDT when it enables interrupts;
//! - "virtual NMIs" (pin-based) when the CPU allows it, so that the guest's NMI
//!   blocking is its own: an NMI keel injects blocks further ones until the guest's
//!   IRET, and the interruptibility state shows it (SDM Vol. 3C §24.6.1, §25.3,
//!   §26.5 "Event Injection"). Without it, with NMI exiting on, a guest IRET does
//!   not lift NMI blocking at all (§25.3 "IRET"): the blocking an injected NMI sets
//!   stays in the guest's interruptibility state for good, so keel cannot tell when
//!   the guest's handler is done (an NMI injected later may nest in it), and host
//!   NMIs that arrive while such a guest runs are held off at least until its next
//!   VM exit;
//! - HLT, all port I/O (both I/O bitmaps all ones), MONITOR/MWAIT;
//! - every MSR except the ones the VMCS switches itself or keel never uses (see
//!   [`PASSTHROUGH_MSRS`]);
//! - #DB and #AC (exception bitmap), only to guarantee the host gets control: a
//!   guest can otherwise make the CPU deliver these forever without a VM exit
//!   (CVE-2015-5307, CVE-2015-8104, Xen XSA-156); keel reflects them back to the
//!   guest; and #MC, which is the host's to handle;
//! - MOV to CR0 when it changes PG, NE, CD or NW, MOV to CR4 when it changes VMXE or a bit
//!   the CPU reserves (the guest/host masks, [`CrFixed`]).
//!
//! Not intercepted: CR3 accesses (EPT), INVLPG, RDTSC, PAUSE, WBINVD, descriptor-table
//! instructions. RDTSCP is left disabled, so it raises #UD in the guest, as the CPUID
//! keel shows (no RDTSCP) says it should; enabling it would also hand the guest keel's
//! IA32_TSC_AUX. INVPCID is enabled when the CPU allows it (harmless with EPT and
//! VPID: it invalidates only the guest's own translations), so a guest that sees
//! INVPCID in CPUID can use it; XSAVES/XRSTORS stay disabled (#UD), so CPUID must
//! hide them.

use core::fmt;

/// IA32_VMX_BASIC and friends (SDM Vol. 3D appendix A).
pub mod msr {
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    pub const IA32_VMX_MISC: u32 = 0x485;
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

/// Pin-based VM-execution controls (SDM Vol. 3C §24.6.1, table 24-5).
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
}

/// Primary processor-based VM-execution controls (§24.6.2, table 24-6).
pub mod proc {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDTSC_EXITING: u32 = 1 << 12;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (§24.6.2, table 24-7).
pub mod proc2 {
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
}

/// VM-exit controls (§24.7.1, table 24-10).
pub mod exit {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_IA32_PAT: u32 = 1 << 18;
    pub const LOAD_IA32_PAT: u32 = 1 << 19;
    pub const SAVE_IA32_EFER: u32 = 1 << 20;
    pub const LOAD_IA32_EFER: u32 = 1 << 21;
}

/// VM-entry controls (§24.8.1, table 24-12).
pub mod entry {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const LOAD_IA32_PAT: u32 = 1 << 14;
    pub const LOAD_IA32_EFER: u32 = 1 << 15;
}

/// CR0 bits (SDM Vol. 3A §2.5).
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM Vol. 3A §2.5).
pub mod cr4 {
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const VMXE: u64 = 1 << 13;
    pub const PCIDE: u64 = 1 << 17;
    pub const SMEP: u64 = 1 << 20;
    pub const LA57: u64 = 1 << 12;
}

/// IA32_EFER bits (SDM Vol. 3A §2.2.1).
pub mod efer {
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
}

/// Exception vectors keel puts in the exception bitmap (see the module doc).
pub const EXCEPTION_BITMAP: u32 = (1 << 1) | (1 << 17) | (1 << 18);

/// The raw VMX capability MSRs keel's set-up depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxMsrs {
    pub basic: u64,
    /// The pin/proc/exit/entry control MSRs to use: the TRUE_* ones when BASIC bit 55
    /// says they exist, else the originals.
    pub pinbased: u64,
    pub procbased: u64,
    /// 0 when secondary controls are not allowed.
    pub procbased2: u64,
    pub exit: u64,
    pub entry: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    /// 0 when neither EPT nor VPID is allowed.
    pub ept_vpid_cap: u64,
}

impl VmxMsrs {
    /// Reads the MSRs. Call only on a CPU with VMX (CPUID.1:ECX.VMX).
    pub fn read() -> VmxMsrs {
        use crate::msr::rdmsr;
        use msr::*;
        // SAFETY: the caller has seen CPUID.1:ECX.VMX, so IA32_VMX_BASIC through
        // IA32_VMX_CR4_FIXED1 exist (SDM Vol. 3D §A.1); the TRUE_* MSRs exist when
        // BASIC bit 55 is set, PROCBASED_CTLS2 when its allowed-1 bit 63 is set,
        // EPT_VPID_CAP when EPT or VPID may be enabled; each is checked before the
        // read. Reading these MSRs has no side effects.
        unsafe {
            let basic = rdmsr(IA32_VMX_BASIC);
            let true_ctls = basic & (1 << 55) != 0;
            let pick = |true_msr, msr| rdmsr(if true_ctls { true_msr } else { msr });
            let procbased = pick(IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS);
            let procbased2 = if procbased & (1 << 63) != 0 {
                rdmsr(IA32_VMX_PROCBASED_CTLS2)
            } else {
                0
            };
            let ept_or_vpid = u64::from(proc2::ENABLE_EPT | proc2::ENABLE_VPID) << 32;
            let ept_vpid_cap = if procbased2 & ept_or_vpid != 0 {
                rdmsr(IA32_VMX_EPT_VPID_CAP)
            } else {
                0
            };
            VmxMsrs {
                basic,
                pinbased: pick(IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_PINBASED_CTLS),
                procbased,
                procbased2,
                exit: pick(IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_EXIT_CTLS),
                entry: pick(IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_ENTRY_CTLS),
                misc: rdmsr(IA32_VMX_MISC),
                cr0_fixed0: rdmsr(IA32_VMX_CR0_FIXED0),
                cr0_fixed1: rdmsr(IA32_VMX_CR0_FIXED1),
                cr4_fixed0: rdmsr(IA32_VMX_CR4_FIXED0),
                cr4_fixed1: rdmsr(IA32_VMX_CR4_FIXED1),
                ept_vpid_cap,
            }
        }
    }

    /// The VMCS revision identifier (BASIC bits 30:0).
    pub fn revision(&self) -> u32 {
        (self.basic & 0x7FFF_FFFF) as u32
    }

    fn cap(&self, bit: u32) -> bool {
        self.ept_vpid_cap & (1 << bit) != 0
    }
}

/// A control keel needs that the CPU does not offer, or a capability it lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing(pub &'static str);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Adjusts wanted controls to a control MSR (allowed-0 in bits 31:0, allowed-1 in
/// bits 63:32): every `required` control must be allowed (else the name of the first
/// one that is not), `optional` ones are kept where allowed, and the must-be-1 bits
/// are added.
pub fn adjust(
    msr_value: u64,
    required: &[(u32, &'static str)],
    optional: u32,
) -> Result<u32, Missing> {
    let must_be_one = msr_value as u32;
    let may_be_one = (msr_value >> 32) as u32;
    let mut value = must_be_one | (optional & may_be_one);
    for &(bit, name) in required {
        if bit & may_be_one != bit {
            return Err(Missing(name));
        }
        value |= bit;
    }
    Ok(value)
}

/// The controls a keel vCPU runs with, and how it flushes its TLB entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    /// "Virtual NMIs" is on (see the module doc).
    pub virtual_nmis: bool,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    /// The entry controls with "IA-32e mode guest" clear; the vCPU sets it while the
    /// guest's EFER.LMA is 1.
    pub entry: u32,
    /// Whether VPIDs are used (needs INVVPID single- or all-context).
    pub vpid: bool,
    /// INVVPID type to flush one VPID's translations: 1 (single) or 2 (all).
    pub invvpid_kind: u64,
    /// INVEPT type to flush one EPTP's translations: 1 (single) or 2 (all).
    pub invept_kind: u64,
    /// EPT accessed/dirty flags are available.
    pub ept_ad: bool,
    pub cr: CrFixed,
}

/// Computes keel's controls for a PVH vCPU (see the module doc for the choices).
pub fn compute(m: &VmxMsrs) -> Result<Controls, Missing> {
    let pin = adjust(
        m.pinbased,
        &[
            (
                pin::EXTERNAL_INTERRUPT_EXITING,
                "external-interrupt exiting",
            ),
            (pin::NMI_EXITING, "NMI exiting"),
        ],
        pin::VIRTUAL_NMIS,
    )?;
    let proc = adjust(
        m.procbased,
        &[
            (proc::HLT_EXITING, "HLT exiting"),
            (proc::USE_IO_BITMAPS, "use I/O bitmaps"),
            (proc::USE_MSR_BITMAPS, "use MSR bitmaps"),
            (proc::MWAIT_EXITING, "MWAIT exiting"),
            (proc::MONITOR_EXITING, "MONITOR exiting"),
            (
                proc::ACTIVATE_SECONDARY_CONTROLS,
                "activate secondary controls",
            ),
        ],
        0,
    )?;
    // EPT and unrestricted guest are required (the PVH entry runs with paging off);
    // VPID is used when INVVPID can flush it.
    let invvpid_kind = if m.cap(41) {
        1
    } else if m.cap(42) {
        2
    } else {
        0
    };
    let vpid_wanted = m.cap(32) && invvpid_kind != 0;
    let proc2 = adjust(
        m.procbased2,
        &[
            (proc2::ENABLE_EPT, "enable EPT"),
            (proc2::UNRESTRICTED_GUEST, "unrestricted guest"),
        ],
        proc2::ENABLE_INVPCID | if vpid_wanted { proc2::ENABLE_VPID } else { 0 },
    )?;
    let vpid = proc2 & proc2::ENABLE_VPID != 0;
    if !m.cap(6) {
        return Err(Missing("4-level EPT page walks"));
    }
    if !m.cap(14) {
        return Err(Missing("write-back EPT paging structures"));
    }
    if !m.cap(20) {
        return Err(Missing("INVEPT"));
    }
    let invept_kind = if m.cap(25) {
        1
    } else if m.cap(26) {
        2
    } else {
        return Err(Missing("INVEPT single- or all-context"));
    };
    let exit = adjust(
        m.exit,
        &[
            (exit::HOST_ADDRESS_SPACE_SIZE, "host address-space size"),
            (exit::SAVE_IA32_PAT, "save IA32_PAT"),
            (exit::LOAD_IA32_PAT, "load IA32_PAT"),
            (exit::SAVE_IA32_EFER, "save IA32_EFER"),
            (exit::LOAD_IA32_EFER, "load IA32_EFER"),
        ],
        exit::SAVE_DEBUG_CONTROLS,
    )?;
    if exit & exit::ACK_INTERRUPT_ON_EXIT != 0 {
        // Never must-be-1 on real CPUs; keel's interrupt model depends on it being 0.
        return Err(Missing("'acknowledge interrupt on exit' = 0"));
    }
    let entry = adjust(
        m.entry,
        &[
            (entry::LOAD_IA32_PAT, "load IA32_PAT"),
            (entry::LOAD_IA32_EFER, "load IA32_EFER"),
        ],
        entry::LOAD_DEBUG_CONTROLS,
    )?;
    if m.entry as u32 & entry::IA32E_MODE_GUEST != 0 {
        return Err(Missing("'IA-32e mode guest' = 0 at entry"));
    }
    Ok(Controls {
        pin,
        virtual_nmis: pin & pin::VIRTUAL_NMIS != 0,
        proc,
        proc2,
        exit,
        entry,
        vpid,
        invvpid_kind,
        invept_kind,
        ept_ad: m.cap(21),
        cr: CrFixed::from_msrs(m),
    })
}

/// Which CR0/CR4 bits VMX fixes, and which keel therefore owns (the guest/host
/// masks; SDM Vol. 3C §24.6.6, Vol. 3D §A.7, A.8).
///
/// A bit set in FIXED0 must be 1 in VMX operation, a bit clear in FIXED1 must be 0.
/// With unrestricted guest, CR0.PE and CR0.PG are exempt from FIXED0 (§26.3.1.1).
/// keel owns (puts in the guest/host mask) the fixed bits, so the guest reads its own
/// value from the read shadow, and also:
/// - CR0.PG, to see paging being switched on and off and keep EFER.LMA and the
///   "IA-32e mode guest" entry control right;
/// - CR0.CD and CR0.NW: VM entries and exits do not load them (§26.3.2.1, §27.5.1),
///   so the processor's CD/NW are the host's. Owning them keeps a guest from changing
///   the host's cache mode (or seeing it: Bochs' firmware leaves CD|NW set); the
///   guest's own CD/NW live in the read shadow only and do not make its memory
///   uncached (that would take EPT memory types; not done).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrFixed {
    /// Bits that must be 1 in the guest's real CR0 (NE on current CPUs).
    pub cr0_on: u64,
    /// Bits that may be 1 in CR0 (FIXED1, plus ET which the CPU hard-wires).
    pub cr0_allowed: u64,
    /// The CR0 guest/host mask.
    pub cr0_mask: u64,
    /// Bits that must be 1 in CR4 (VMXE).
    pub cr4_on: u64,
    /// Bits that may be 1 in CR4.
    pub cr4_allowed: u64,
    /// The CR4 guest/host mask.
    pub cr4_mask: u64,
}

impl CrFixed {
    pub fn from_msrs(m: &VmxMsrs) -> CrFixed {
        let cr0_on = m.cr0_fixed0 & !(cr0::PE | cr0::PG);
        let cr0_allowed = (m.cr0_fixed1 | cr0::ET) & 0xFFFF_FFFF;
        let cr4_on = m.cr4_fixed0;
        let cr4_allowed = m.cr4_fixed1;
        CrFixed {
            cr0_on,
            cr0_allowed,
            cr0_mask: cr0_on | !cr0_allowed | cr0::PG | cr0::CD | cr0::NW,
            cr4_on,
            cr4_allowed,
            cr4_mask: cr4_on | !cr4_allowed,
        }
    }
}

/// Segment access rights in the VMCS format (SDM Vol. 3C §24.4.1, table 24-2): the
/// descriptor's type (bits 3:0), S (4), DPL (6:5), P (7), AVL (12), L (13), D/B (14),
/// G (15), and "unusable" (16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRights {
    pub kind: u8,
    /// S: code/data (true) or system (false).
    pub code_data: bool,
    pub dpl: u8,
    pub present: bool,
    pub avl: bool,
    pub long: bool,
    pub default_big: bool,
    pub granularity: bool,
    pub unusable: bool,
}

impl AccessRights {
    /// The unusable segment (only bit 16 matters, §26.3.1.2).
    pub const UNUSABLE: AccessRights = AccessRights {
        kind: 0,
        code_data: false,
        dpl: 0,
        present: false,
        avl: false,
        long: false,
        default_big: false,
        granularity: false,
        unusable: true,
    };

    /// From the 12-bit packed attributes of Xen and the VMCB
    /// (`keel_x86::context::Segment::attr`): bits 0..7 are the same here, bits 8..11
    /// (AVL, L, D/B, G) move to 12..15, and a segment that is not present is
    /// unusable (§24.4.1: the VMCS's null segment). The other bits are kept even
    /// then: SS.DPL is the CPL whether or not SS is usable (§24.4.1), and VM entry
    /// ignores the rest of an unusable segment's access rights (§26.3.1.2).
    pub const fn from_attr(attr: u16) -> AccessRights {
        let raw = (attr as u32 & 0xFF) | ((attr as u32 & 0xF00) << 4);
        AccessRights {
            unusable: attr & 0x80 == 0,
            ..AccessRights::decode(raw)
        }
    }

    /// A flat 4 GiB ring-0 32-bit segment of descriptor type `kind` (0xB: code,
    /// execute/read, accessed; 0x3: data, read/write, accessed).
    pub const fn flat32(kind: u8) -> AccessRights {
        AccessRights {
            kind,
            code_data: true,
            dpl: 0,
            present: true,
            avl: false,
            long: false,
            default_big: true,
            granularity: true,
            unusable: false,
        }
    }

    /// A present ring-0 system segment of type `kind` (0xB: busy 32/64-bit TSS).
    pub const fn system(kind: u8) -> AccessRights {
        AccessRights {
            kind,
            code_data: false,
            dpl: 0,
            present: true,
            avl: false,
            long: false,
            default_big: false,
            granularity: false,
            unusable: false,
        }
    }

    pub const fn encode(self) -> u32 {
        (self.kind as u32 & 0xF)
            | (self.code_data as u32) << 4
            | (self.dpl as u32 & 3) << 5
            | (self.present as u32) << 7
            | (self.avl as u32) << 12
            | (self.long as u32) << 13
            | (self.default_big as u32) << 14
            | (self.granularity as u32) << 15
            | (self.unusable as u32) << 16
    }

    pub const fn decode(v: u32) -> AccessRights {
        AccessRights {
            kind: (v & 0xF) as u8,
            code_data: v & (1 << 4) != 0,
            dpl: ((v >> 5) & 3) as u8,
            present: v & (1 << 7) != 0,
            avl: v & (1 << 12) != 0,
            long: v & (1 << 13) != 0,
            default_big: v & (1 << 14) != 0,
            granularity: v & (1 << 15) != 0,
            unusable: v & (1 << 16) != 0,
        }
    }
}

/// MSRs the guest reads and writes without a VM exit (SDM Vol. 3C §24.6.9).
///
/// FS/GS base and SYSENTER_* are guest-state fields the CPU saves on every exit and
/// loads on every entry. KERNEL_GS_BASE, STAR, LSTAR, CSTAR and SFMASK are not in the
/// VMCS: they stay in the hardware registers across exits, which is safe because
/// keel never uses SYSCALL or SWAPGS. Switching between vCPUs on one CPU (issue #4)
/// must save and restore these five, like the FPU state.
pub const PASSTHROUGH_MSRS: [u32; 10] = [
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0xC000_0081, // IA32_STAR
    0xC000_0082, // IA32_LSTAR
    0xC000_0083, // IA32_CSTAR
    0xC000_0084, // IA32_FMASK
    0xC000_0100, // IA32_FS_BASE
    0xC000_0101, // IA32_GS_BASE
    0xC000_0102, // IA32_KERNEL_GS_BASE
];

/// The (byte, bit) positions of `msr`'s read and write intercept bits in the 4 KiB
/// MSR bitmap (§24.6.9: read-low at 0, read-high at 1024, write-low at 2048,
/// write-high at 3072; "low" is 0..=0x1FFF, "high" 0xC0000000..=0xC0001FFF). `None`
/// for an MSR outside both ranges, which always exits.
pub fn msr_bitmap_bits(msr: u32) -> Option<[(usize, u8); 2]> {
    let (base, index) = match msr {
        0..=0x1FFF => (0, msr),
        0xC000_0000..=0xC000_1FFF => (1024, msr - 0xC000_0000),
        _ => return None,
    };
    let byte = base + (index / 8) as usize;
    let bit = (index % 8) as u8;
    Some([(byte, bit), (byte + 2048, bit)])
}

/// Fills a 4 KiB MSR bitmap: every MSR exits except [`PASSTHROUGH_MSRS`].
pub fn fill_msr_bitmap(bitmap: &mut [u8; 4096]) {
    bitmap.fill(0xFF);
    for msr in PASSTHROUGH_MSRS {
        if let Some(bits) = msr_bitmap_bits(msr) {
            for (byte, bit) in bits {
                bitmap[byte] &= !(1 << bit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roughly what Bochs' corei7_skylake_x reports (TRUE MSRs).
    fn skylake() -> VmxMsrs {
        let all = |must: u32| (u64::from(u32::MAX) << 32) | u64::from(must);
        VmxMsrs {
            basic: (1 << 55) | 0x2B,
            pinbased: all(0x16),
            procbased: all(0x0401_E172 & !(proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING)),
            procbased2: (0x0000_00FF_u64 | 1 << 12) << 32,
            exit: all(0x0003_6DFB & !exit::SAVE_DEBUG_CONTROLS),
            entry: all(0x11FB & !entry::LOAD_DEBUG_CONTROLS & !entry::IA32E_MODE_GUEST),
            misc: 1 << 5,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xFFFF_FFFF,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27FF,
            ept_vpid_cap: (1 << 6)
                | (1 << 14)
                | (1 << 16)
                | (1 << 17)
                | (1 << 20)
                | (1 << 21)
                | (1 << 25)
                | (1 << 26)
                | (1 << 32)
                | (1 << 41)
                | (1 << 42),
        }
    }

    #[test]
    fn adjust_keeps_must_be_one_and_checks_required() {
        let msr = (0x0000_00F0_u64 << 32) | 0x10;
        assert_eq!(
            adjust(msr, &[(0x20, "a")], 0x40 | 0x100),
            Ok(0x10 | 0x20 | 0x40)
        );
        assert_eq!(
            adjust(msr, &[(0x20, "a"), (0x200, "b")], 0),
            Err(Missing("b"))
        );
    }

    #[test]
    fn skylake_controls() {
        let c = compute(&skylake()).unwrap();
        assert_ne!(c.pin & pin::EXTERNAL_INTERRUPT_EXITING, 0);
        assert_ne!(c.pin & pin::NMI_EXITING, 0);
        assert_ne!(c.pin & pin::VIRTUAL_NMIS, 0);
        assert!(c.virtual_nmis);
        for bit in [
            proc::HLT_EXITING,
            proc::USE_IO_BITMAPS,
            proc::USE_MSR_BITMAPS,
            proc::MWAIT_EXITING,
            proc::MONITOR_EXITING,
            proc::ACTIVATE_SECONDARY_CONTROLS,
        ] {
            assert_ne!(c.proc & bit, 0, "{bit:#x}");
        }
        // TRUE MSRs let CR3 accesses and RDTSC run without exits.
        assert_eq!(
            c.proc & (proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING),
            0
        );
        assert_eq!(c.proc & proc::RDTSC_EXITING, 0);
        assert_eq!(
            c.proc2,
            proc2::ENABLE_EPT
                | proc2::ENABLE_VPID
                | proc2::UNRESTRICTED_GUEST
                | proc2::ENABLE_INVPCID
        );
        assert!(c.vpid && c.ept_ad);
        assert_eq!((c.invept_kind, c.invvpid_kind), (1, 1));
        assert_eq!(c.exit & exit::ACK_INTERRUPT_ON_EXIT, 0);
        for bit in [
            exit::HOST_ADDRESS_SPACE_SIZE,
            exit::SAVE_IA32_EFER,
            exit::LOAD_IA32_EFER,
            exit::SAVE_IA32_PAT,
            exit::LOAD_IA32_PAT,
        ] {
            assert_ne!(c.exit & bit, 0);
        }
        assert_eq!(c.entry & entry::IA32E_MODE_GUEST, 0);
        assert_ne!(c.entry & entry::LOAD_IA32_EFER, 0);
    }

    #[test]
    fn no_unrestricted_guest_is_an_error() {
        let mut m = skylake();
        m.procbased2 &= !(u64::from(proc2::UNRESTRICTED_GUEST) << 32);
        assert_eq!(compute(&m), Err(Missing("unrestricted guest")));
    }

    #[test]
    fn virtual_nmis_are_optional() {
        let mut m = skylake();
        m.pinbased &= !(u64::from(pin::VIRTUAL_NMIS) << 32);
        let c = compute(&m).unwrap();
        assert!(!c.virtual_nmis);
        assert_eq!(c.pin & pin::VIRTUAL_NMIS, 0);
        assert_ne!(c.pin & pin::NMI_EXITING, 0);
    }

    #[test]
    fn vpid_is_optional_and_needs_invvpid() {
        let mut m = skylake();
        m.ept_vpid_cap &= !((1 << 41) | (1 << 42));
        let c = compute(&m).unwrap();
        assert!(!c.vpid);
        assert_eq!(c.proc2 & proc2::ENABLE_VPID, 0);
    }

    #[test]
    fn global_only_invept_falls_back_to_all_context() {
        let mut m = skylake();
        m.ept_vpid_cap &= !(1 << 25);
        assert_eq!(compute(&m).unwrap().invept_kind, 2);
        m.ept_vpid_cap &= !(1 << 26);
        assert_eq!(compute(&m), Err(Missing("INVEPT single- or all-context")));
    }

    #[test]
    fn non_true_msrs_force_cr3_exiting() {
        let mut m = skylake();
        m.basic &= !(1 << 55);
        m.procbased |= u64::from(proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING);
        let c = compute(&m).unwrap();
        assert_ne!(c.proc & proc::CR3_LOAD_EXITING, 0);
    }

    #[test]
    fn cr_masks() {
        let f = CrFixed::from_msrs(&skylake());
        assert_eq!(f.cr0_on, cr0::NE);
        assert_eq!(
            f.cr0_mask,
            cr0::NE | cr0::PG | cr0::CD | cr0::NW | !0xFFFF_FFFF
        );
        assert_eq!(f.cr4_on, cr4::VMXE);
        assert_ne!(f.cr4_mask & cr4::VMXE, 0);
        assert_eq!(f.cr4_mask & (cr4::PAE | cr4::PSE | cr4::PGE), 0);
        assert_ne!(f.cr4_mask & (1 << 63), 0);
    }

    #[test]
    fn access_rights_encoding() {
        assert_eq!(AccessRights::flat32(0xB).encode(), 0xC09B);
        assert_eq!(AccessRights::flat32(0x3).encode(), 0xC093);
        assert_eq!(AccessRights::system(0xB).encode(), 0x8B);
        assert_eq!(AccessRights::UNUSABLE.encode(), 0x1_0000);
        let long_cs = AccessRights {
            long: true,
            default_big: false,
            ..AccessRights::flat32(0xB)
        };
        assert_eq!(long_cs.encode(), 0xA09B);
        for v in [0xC09B, 0xC093, 0x8B, 0x1_0000, 0xA09B, 0x00F3, 0x1093] {
            assert_eq!(AccessRights::decode(v).encode(), v);
        }
    }

    #[test]
    fn access_rights_from_packed_attributes() {
        use keel_x86::context::{Context, attr};
        let ar = |a: u16| AccessRights::from_attr(a).encode();
        // The shapes keel starts vCPUs with: the PVH start's are what `new` wrote
        // before contexts existed.
        assert_eq!(ar(attr::CODE32), AccessRights::flat32(0xB).encode());
        assert_eq!(ar(attr::DATA32), AccessRights::flat32(0x3).encode());
        assert_eq!(ar(attr::TSS_BUSY), AccessRights::system(0xB).encode());
        assert_eq!(ar(0), AccessRights::UNUSABLE.encode());
        assert_eq!(ar(attr::CODE64), 0xA09B);
        assert_eq!(ar(attr::REAL_CODE), 0x9B);
        assert_eq!(ar(attr::REAL_DATA), 0x93);
        assert_eq!(ar(attr::LDT), 0x82);
        // AVL, L, D/B, G: attr bits 8..11 to AR bits 12..15.
        assert_eq!(ar(0xF93), 0xF093);
        assert_eq!(ar(1 << 8 | 0x93), 0x1093);
        // Not present: unusable, the rest kept (SS.DPL is the CPL).
        assert_eq!(ar(0xC73), 0x1_C073);
        assert!(AccessRights::from_attr(0x73).unusable);
        assert_eq!(AccessRights::from_attr(0x73).dpl, 3);
        let pvh = Context::pvh_start(0, 0);
        assert_eq!(ar(pvh.ldtr().attr), 0x1_0000);
        assert_eq!(ar(pvh.cs().attr), 0xC09B);
        // The SIPI state: usable everywhere, real-mode shapes (§26.3.1.2).
        let s = Context::sipi(0x9A);
        for a in [
            s.cs().attr,
            s.ss().attr,
            s.ds().attr,
            s.tr().attr,
            s.ldtr().attr,
        ] {
            assert!(!AccessRights::from_attr(a).unusable);
        }
    }

    #[test]
    fn msr_bitmap_layout() {
        assert_eq!(msr_bitmap_bits(0), Some([(0, 0), (2048, 0)]));
        assert_eq!(msr_bitmap_bits(0x174), Some([(0x2E, 4), (2048 + 0x2E, 4)]));
        assert_eq!(
            msr_bitmap_bits(0xC000_0080),
            Some([(1024 + 16, 0), (3072 + 16, 0)])
        );
        assert_eq!(msr_bitmap_bits(0x4000_0000), None);
        let mut b = [0u8; 4096];
        fill_msr_bitmap(&mut b);
        let intercepted = |msr: u32| {
            let [(r, rb), (w, wb)] = msr_bitmap_bits(msr).unwrap();
            (b[r] >> rb & 1 == 1, b[w] >> wb & 1 == 1)
        };
        assert_eq!(intercepted(0xC000_0080), (true, true)); // EFER
        assert_eq!(intercepted(0x277), (true, true)); // PAT
        assert_eq!(intercepted(0xC000_0100), (false, false)); // FS_BASE
        assert_eq!(intercepted(0xC000_0102), (false, false)); // KERNEL_GS_BASE
        assert_eq!(intercepted(0x176), (false, false)); // SYSENTER_EIP
        assert_eq!(intercepted(0x1D9), (true, true)); // DEBUGCTL
        assert_eq!(b.iter().filter(|&&x| x != 0xFF).count(), 6);
    }
}
