//! VM exits: what the CPU recorded ([`ExitInfo`]), and what it means for keel
//! ([`decode`] → [`Action`]). Decoding is a pure function of the recorded fields, so
//! every case is tested on the host.
//!
//! Most exits become a vendor-neutral [`hvm::Exit`] for the kernel. A few are
//! mechanism the backend completes itself inside `VmxVcpu::run` and never shows the
//! kernel: MOV to CR0/CR4 (emulated, because keel owns some of their bits), INVD (a
//! no-op: a guest must not discard cache lines the host may have dirtied), #DB/#AC
//! (intercepted only so the host regains control, then reflected to the guest), and
//! host NMIs and machine checks (re-raised with INT 2 / INT 18 to keel's own
//! handlers, which today report and stop the machine: an NMI or #MC is as fatal to
//! keel during a guest as outside one; were they to return, the kernel sees
//! `ExternalInterrupt`).
//!
//! References: SDM Vol. 3C §27.2 (exit information), appendix C (basic exit
//! reasons), table 27-3 (CR-access qualification), table 27-5 (I/O qualification),
//! table 27-7 (EPT-violation qualification), §24.9.2 (interruption information).

use crate::hvm::{Exit, IoExit};

/// Basic exit reasons (SDM Vol. 3C appendix C, table C-1).
pub mod reason {
    pub const EXCEPTION_OR_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INIT: u16 = 3;
    pub const SIPI: u16 = 4;
    pub const IO_SMI: u16 = 5;
    pub const OTHER_SMI: u16 = 6;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const TASK_SWITCH: u16 = 9;
    pub const CPUID: u16 = 10;
    pub const GETSEC: u16 = 11;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const INVLPG: u16 = 14;
    pub const RDPMC: u16 = 15;
    pub const RDTSC: u16 = 16;
    pub const RSM: u16 = 17;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMLAUNCH: u16 = 20;
    pub const VMPTRLD: u16 = 21;
    pub const VMPTRST: u16 = 22;
    pub const VMREAD: u16 = 23;
    pub const VMRESUME: u16 = 24;
    pub const VMWRITE: u16 = 25;
    pub const VMXOFF: u16 = 26;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const MOV_DR: u16 = 29;
    pub const IO_INSTRUCTION: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const INVALID_GUEST_STATE: u16 = 33;
    pub const MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MONITOR_TRAP_FLAG: u16 = 37;
    pub const MONITOR: u16 = 39;
    pub const PAUSE: u16 = 40;
    pub const MACHINE_CHECK_DURING_ENTRY: u16 = 41;
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    pub const APIC_ACCESS: u16 = 44;
    pub const GDTR_IDTR_ACCESS: u16 = 46;
    pub const LDTR_TR_ACCESS: u16 = 47;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIG: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const RDTSCP: u16 = 51;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const INVVPID: u16 = 53;
    pub const WBINVD: u16 = 54;
    pub const XSETBV: u16 = 55;
    pub const RDRAND: u16 = 57;
    pub const INVPCID: u16 = 58;
    pub const VMFUNC: u16 = 59;
    pub const ENCLS: u16 = 60;
    pub const RDSEED: u16 = 61;
    pub const XSAVES: u16 = 63;
    pub const XRSTORS: u16 = 64;
}

/// Exit-reason bit 31: the VM entry failed (§27.2.1, §26.7).
pub const ENTRY_FAILURE: u32 = 1 << 31;

/// Interruption-information fields (§24.8.3, §24.9.2): vector 7:0, type 10:8,
/// error code valid 11, NMI unblocking due to IRET 12 (exit info only), valid 31.
pub mod intr {
    pub const VALID: u32 = 1 << 31;
    pub const ERROR_CODE: u32 = 1 << 11;
    pub const NMI_UNBLOCKING: u32 = 1 << 12;
    pub const TYPE_EXTERNAL: u32 = 0;
    pub const TYPE_NMI: u32 = 2;
    pub const TYPE_HARDWARE_EXCEPTION: u32 = 3;
    pub const TYPE_SOFTWARE_INTERRUPT: u32 = 4;
    pub const TYPE_PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5;
    pub const TYPE_SOFTWARE_EXCEPTION: u32 = 6;

    pub const fn kind(info: u32) -> u32 {
        (info >> 8) & 7
    }

    pub const fn vector(info: u32) -> u8 {
        info as u8
    }

    /// Types delivered "after" an instruction, which need its length at injection.
    pub const fn needs_insn_len(info: u32) -> bool {
        matches!(kind(info), 4..=6)
    }
}

/// Everything the CPU recorded about one VM exit, read from the VMCS right after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// The full exit reason (basic reason in bits 15:0, [`ENTRY_FAILURE`] in bit 31).
    pub reason: u32,
    pub qualification: u64,
    /// VM-exit interruption information (exception/NMI/interrupt exits).
    pub interruption_info: u32,
    pub interruption_error: u32,
    /// IDT-vectoring information: an event whose delivery the exit interrupted.
    pub idt_vectoring_info: u32,
    pub idt_vectoring_error: u32,
    pub insn_len: u32,
    /// The guest-physical address, for EPT violations and misconfigurations.
    pub guest_physical: u64,
}

impl ExitInfo {
    pub fn basic_reason(&self) -> u16 {
        self.reason as u16
    }

    pub fn entry_failed(&self) -> bool {
        self.reason & ENTRY_FAILURE != 0
    }

    /// The length of the instruction that caused the exit, when the CPU recorded one
    /// (§27.2.4: exits caused by executing an instruction, and exceptions raised by
    /// INT3, INTO, INT1 or INT n).
    pub fn insn_len(&self) -> Option<u64> {
        use reason::*;
        if self.entry_failed() {
            return None;
        }
        let has = match self.basic_reason() {
            EXCEPTION_OR_NMI => intr::needs_insn_len(self.interruption_info),
            CPUID
            | GETSEC
            | HLT
            | INVD
            | INVLPG
            | RDPMC
            | RDTSC
            | VMCALL..=VMXON
            | CR_ACCESS
            | MOV_DR
            | IO_INSTRUCTION
            | RDMSR
            | WRMSR
            | MWAIT
            | MONITOR
            | PAUSE
            | GDTR_IDTR_ACCESS
            | LDTR_TR_ACCESS
            | INVEPT
            | RDTSCP
            | INVVPID
            | WBINVD
            | XSETBV
            | RDRAND
            | INVPCID
            | VMFUNC
            | ENCLS
            | RDSEED
            | XSAVES
            | XRSTORS => true,
            _ => false,
        };
        has.then_some(u64::from(self.insn_len))
    }
}

/// An event to inject at the next VM entry, in the VM-entry interruption-information
/// format (§24.8.3) with its error code and instruction length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub info: u32,
    pub error_code: u32,
    /// Only meaningful for software interrupts and exceptions (types 4-6).
    pub insn_len: u32,
}

impl Event {
    /// The event from an exit's interruption information: the bits the entry field
    /// reserves (30:12, among them "NMI unblocking") are dropped.
    fn from_exit_info(info: u32, error_code: u32, insn_len: u32) -> Event {
        Event {
            info: info & (intr::VALID | 0xFFF),
            error_code,
            insn_len,
        }
    }
}

/// Whether exception `vector` pushes an error code (SDM Vol. 3A table 6-1): #DF,
/// #TS, #NP, #SS, #GP, #PF, #AC, #CP.
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

/// The event that delivers exception `vector` to a guest, shaped so that VM entry
/// accepts it (§26.2.1.3): #BP and #OF are software exceptions (type 6) and carry the
/// instruction length `insn_len` (INT3 and INTO are one byte unless prefixed), NMI
/// (vector 2) is type 2, the rest hardware exceptions. An error code is delivered
/// exactly when the vector has one and the guest is in protected mode (`pe`); a
/// missing one is 0, a superfluous one dropped. `None` for vectors 32 and up, which
/// are not exceptions.
pub fn exception_event(
    vector: u8,
    error_code: Option<u32>,
    pe: bool,
    insn_len: u64,
) -> Option<Event> {
    if vector >= 32 {
        return None;
    }
    let kind = match vector {
        2 => intr::TYPE_NMI,
        3 | 4 => intr::TYPE_SOFTWARE_EXCEPTION,
        _ => intr::TYPE_HARDWARE_EXCEPTION,
    };
    let deliver = pe && kind == intr::TYPE_HARDWARE_EXCEPTION && exception_has_error_code(vector);
    let mut info = intr::VALID | kind << 8 | u32::from(vector);
    if deliver {
        info |= intr::ERROR_CODE;
    }
    Some(Event {
        info,
        error_code: if deliver { error_code.unwrap_or(0) } else { 0 },
        insn_len: if kind == intr::TYPE_SOFTWARE_EXCEPTION {
            insn_len.clamp(1, 15) as u32
        } else {
            0
        },
    })
}

/// The event the exit interrupted the delivery of, which must be delivered again at
/// the next entry or it is lost (§27.2.3, §31.7.1.1).
pub fn reinjection(e: &ExitInfo) -> Option<Event> {
    if e.entry_failed() || e.idt_vectoring_info & intr::VALID == 0 {
        return None;
    }
    let info = e.idt_vectoring_info;
    Some(Event::from_exit_info(
        info,
        if info & intr::ERROR_CODE != 0 {
            e.idt_vectoring_error
        } else {
            0
        },
        if intr::needs_insn_len(info) {
            e.insn_len
        } else {
            0
        },
    ))
}

/// The NMI event that delivers an NMI to the guest (type 2, vector 2; §24.8.3).
pub const NMI_EVENT: Event = Event {
    info: intr::VALID | intr::TYPE_NMI << 8 | 2,
    error_code: 0,
    insn_len: 0,
};

/// Whether the exit interrupted a guest IRET after that IRET had lifted the
/// guest's virtual-NMI blocking (with "virtual NMIs" on): the IRET is executed
/// again after the exit, so the VMM must set "blocking by NMI" before re-entering,
/// or an NMI could be injected inside the guest's handler (SDM Vol. 3C §27.2.2: bit
/// 12 of the exit interruption information; table 27-7: bit 12 of an EPT
/// violation's qualification; §31.7.1.2). Not for #DF (the IRET is abandoned), nor
/// when the exit happened during event delivery (the bit is then undefined).
pub fn nmi_unblocked_by_iret(e: &ExitInfo) -> bool {
    if e.entry_failed() || e.idt_vectoring_info & intr::VALID != 0 {
        return false;
    }
    let info = e.interruption_info;
    let by_exception =
        info & intr::VALID != 0 && info & intr::NMI_UNBLOCKING != 0 && intr::vector(info) != 8;
    let by_ept = e.basic_reason() == reason::EPT_VIOLATION && e.qualification & (1 << 12) != 0;
    by_exception || by_ept
}

/// A control-register access (exit qualification, table 27-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    pub cr: u8,
    pub kind: CrAccessKind,
    /// The general-purpose register, by instruction encoding (4 = RSP).
    pub gpr: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessKind {
    MovTo,
    MovFrom,
    Clts,
    /// LMSW with its 16-bit source operand.
    Lmsw(u16),
}

impl CrAccess {
    pub fn decode(q: u64) -> CrAccess {
        CrAccess {
            cr: (q & 0xF) as u8,
            kind: match (q >> 4) & 3 {
                0 => CrAccessKind::MovTo,
                1 => CrAccessKind::MovFrom,
                2 => CrAccessKind::Clts,
                _ => CrAccessKind::Lmsw((q >> 16) as u16),
            },
            gpr: ((q >> 8) & 0xF) as u8,
        }
    }
}

/// What the backend does with an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand it to the kernel.
    Exit(Exit),
    /// Emulate a control-register access, then re-enter.
    CrAccess(CrAccess),
    /// An NMI arrived for the host: re-raise it to keel's handler.
    HostNmi,
    /// A machine check: re-raise it to keel's handler.
    HostMachineCheck,
    /// Give an exception intercepted only for the host's sake back to the guest.
    /// `dr6`: for a #DB, the debug-status bits the CPU did not write to DR6.
    Reflect { event: Event, dr6: Option<u64> },
    /// Complete the instruction as a no-op (INVD).
    Skip,
}

/// The I/O-instruction qualification (table 27-5).
pub fn io_exit(q: u64) -> IoExit {
    IoExit {
        port: (q >> 16) as u16,
        size: match q & 7 {
            0 => 1,
            1 => 2,
            _ => 4,
        },
        write: q & (1 << 3) == 0,
        string: q & (1 << 4) != 0,
        rep: q & (1 << 5) != 0,
    }
}

fn failed(why: &'static str, e: &ExitInfo, info: u64) -> Action {
    Action::Exit(Exit::Failed {
        why,
        code: u64::from(e.reason),
        info,
    })
}

/// Decides what an exit means.
pub fn decode(e: &ExitInfo) -> Action {
    use reason::*;
    if e.entry_failed() {
        let why = match e.basic_reason() {
            INVALID_GUEST_STATE => "VM entry failed: invalid guest state",
            MSR_LOADING => "VM entry failed: MSR loading",
            MACHINE_CHECK_DURING_ENTRY => "VM entry failed: machine-check event",
            _ => "VM entry failed",
        };
        return failed(why, e, e.qualification);
    }
    let exit = match e.basic_reason() {
        EXCEPTION_OR_NMI => return decode_exception(e),
        EXTERNAL_INTERRUPT => Exit::ExternalInterrupt,
        INTERRUPT_WINDOW => Exit::InterruptWindow,
        TRIPLE_FAULT => Exit::TripleFault,
        INIT => return failed("INIT signal (not supported)", e, e.qualification),
        SIPI => return failed("start-up IPI (not supported)", e, e.qualification),
        CPUID => Exit::Cpuid,
        HLT => Exit::Hlt,
        VMCALL => Exit::Hypercall,
        RDMSR => Exit::Rdmsr,
        WRMSR => Exit::Wrmsr,
        IO_INSTRUCTION => Exit::Io(io_exit(e.qualification)),
        EPT_VIOLATION => Exit::NestedPageFault {
            gpa: e.guest_physical,
            write: e.qualification & (1 << 1) != 0,
            fetch: e.qualification & (1 << 2) != 0,
        },
        EPT_MISCONFIG => return failed("EPT misconfiguration", e, e.guest_physical),
        CR_ACCESS => return Action::CrAccess(CrAccess::decode(e.qualification)),
        INVD => return Action::Skip,
        GETSEC | VMCLEAR..=VMXON | INVEPT | INVVPID | VMFUNC | MONITOR | MWAIT | XSETBV => {
            Exit::UndefinedInstruction
        }
        TASK_SWITCH => return failed("task switch (not supported)", e, e.qualification),
        _ => return failed("unexpected VM exit", e, e.qualification),
    };
    Action::Exit(exit)
}

fn decode_exception(e: &ExitInfo) -> Action {
    let info = e.interruption_info;
    if info & intr::VALID == 0 {
        return failed(
            "exception exit without interruption information",
            e,
            u64::from(info),
        );
    }
    let vector = intr::vector(info);
    match (intr::kind(info), vector) {
        (intr::TYPE_NMI, _) => Action::HostNmi,
        (intr::TYPE_HARDWARE_EXCEPTION, 18) => Action::HostMachineCheck,
        (intr::TYPE_HARDWARE_EXCEPTION | intr::TYPE_PRIVILEGED_SOFTWARE_EXCEPTION, 1)
        | (intr::TYPE_HARDWARE_EXCEPTION, 17) => Action::Reflect {
            event: Event::from_exit_info(
                info,
                e.interruption_error,
                if intr::needs_insn_len(info) {
                    e.insn_len
                } else {
                    0
                },
            ),
            // A #DB exit leaves DR6 alone and reports B0-B3, BD and BS in the
            // qualification instead (§27.1, table 27-1).
            dr6: (intr::kind(info) == intr::TYPE_HARDWARE_EXCEPTION && vector == 1)
                .then_some(e.qualification & 0x600F),
        },
        _ => Action::Exit(Exit::Exception {
            vector,
            error_code: (info & intr::ERROR_CODE != 0).then_some(e.interruption_error),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(reason: u16) -> ExitInfo {
        ExitInfo {
            reason: u32::from(reason),
            ..ExitInfo::default()
        }
    }

    #[test]
    fn iret_nmi_unblocking() {
        // #GP during an IRET that had lifted NMI blocking.
        let gp = ExitInfo {
            interruption_info: intr::VALID
                | intr::NMI_UNBLOCKING
                | intr::ERROR_CODE
                | intr::TYPE_HARDWARE_EXCEPTION << 8
                | 13,
            ..exit(reason::EXCEPTION_OR_NMI)
        };
        assert!(nmi_unblocked_by_iret(&gp));
        // #DF abandons the IRET.
        let df = ExitInfo {
            interruption_info: (gp.interruption_info & !0xFF) | 8,
            ..gp
        };
        assert!(!nmi_unblocked_by_iret(&df));
        // Undefined during event delivery.
        let during = ExitInfo {
            idt_vectoring_info: intr::VALID | intr::TYPE_EXTERNAL << 8 | 0x30,
            ..gp
        };
        assert!(!nmi_unblocked_by_iret(&during));
        // An EPT violation on the IRET's stack read.
        let ept = ExitInfo {
            qualification: 1 << 12 | 1,
            ..exit(reason::EPT_VIOLATION)
        };
        assert!(nmi_unblocked_by_iret(&ept));
        assert!(!nmi_unblocked_by_iret(&ExitInfo {
            qualification: 1,
            ..ept
        }));
        // Bit 12 of another exit's qualification means something else.
        assert!(!nmi_unblocked_by_iret(&ExitInfo {
            qualification: 1 << 12,
            ..exit(reason::CR_ACCESS)
        }));
        assert!(!nmi_unblocked_by_iret(&exit(reason::HLT)));
    }

    #[test]
    fn nmi_event_shape() {
        assert_eq!(NMI_EVENT.info, 0x8000_0202);
        assert_eq!(exception_event(2, None, true, 1), Some(NMI_EVENT));
    }

    #[test]
    fn simple_instruction_exits() {
        for (r, x) in [
            (reason::CPUID, Exit::Cpuid),
            (reason::HLT, Exit::Hlt),
            (reason::VMCALL, Exit::Hypercall),
            (reason::RDMSR, Exit::Rdmsr),
            (reason::WRMSR, Exit::Wrmsr),
            (reason::EXTERNAL_INTERRUPT, Exit::ExternalInterrupt),
            (reason::TRIPLE_FAULT, Exit::TripleFault),
        ] {
            assert_eq!(decode(&exit(r)), Action::Exit(x), "reason {r}");
        }
    }

    #[test]
    fn vmx_and_friends_are_undefined() {
        for r in [
            11, 19, 20, 21, 22, 23, 24, 25, 26, 27, 36, 39, 50, 53, 55, 59,
        ] {
            assert_eq!(
                decode(&exit(r)),
                Action::Exit(Exit::UndefinedInstruction),
                "reason {r}"
            );
        }
        assert_eq!(decode(&exit(reason::INVD)), Action::Skip);
    }

    #[test]
    fn io_qualification() {
        // IN AL, 0x80: size 1, IN, immediate operand.
        let q = (0x80 << 16) | (1 << 6) | (1 << 3);
        assert_eq!(
            io_exit(q),
            IoExit {
                port: 0x80,
                size: 1,
                write: false,
                string: false,
                rep: false
            }
        );
        // REP OUTSW to DX = 0x3F8.
        let q = (0x3F8 << 16) | (1 << 5) | (1 << 4) | 1;
        assert_eq!(
            io_exit(q),
            IoExit {
                port: 0x3F8,
                size: 2,
                write: true,
                string: true,
                rep: true
            }
        );
        // OUT DX, EAX.
        let e = ExitInfo {
            reason: u32::from(reason::IO_INSTRUCTION),
            qualification: (0xCF8 << 16) | 3,
            insn_len: 1,
            ..ExitInfo::default()
        };
        assert_eq!(
            decode(&e),
            Action::Exit(Exit::Io(IoExit {
                port: 0xCF8,
                size: 4,
                write: true,
                string: false,
                rep: false
            }))
        );
        assert_eq!(e.insn_len(), Some(1));
    }

    #[test]
    fn ept_violation() {
        let e = ExitInfo {
            reason: u32::from(reason::EPT_VIOLATION),
            qualification: 0b010,
            guest_physical: 0xFEB0_0000,
            insn_len: 7, // undefined for EPT violations: not reported
            ..ExitInfo::default()
        };
        assert_eq!(
            decode(&e),
            Action::Exit(Exit::NestedPageFault {
                gpa: 0xFEB0_0000,
                write: true,
                fetch: false
            })
        );
        assert_eq!(e.insn_len(), None);
        let fetch = ExitInfo {
            qualification: 0b100,
            ..e
        };
        assert_eq!(
            decode(&fetch),
            Action::Exit(Exit::NestedPageFault {
                gpa: 0xFEB0_0000,
                write: false,
                fetch: true
            })
        );
        let mis = ExitInfo {
            reason: u32::from(reason::EPT_MISCONFIG),
            ..e
        };
        assert_eq!(
            decode(&mis),
            Action::Exit(Exit::Failed {
                why: "EPT misconfiguration",
                code: 49,
                info: 0xFEB0_0000
            })
        );
    }

    #[test]
    fn entry_failures() {
        let e = ExitInfo {
            reason: ENTRY_FAILURE | u32::from(reason::INVALID_GUEST_STATE),
            qualification: 2,
            ..ExitInfo::default()
        };
        assert_eq!(
            decode(&e),
            Action::Exit(Exit::Failed {
                why: "VM entry failed: invalid guest state",
                code: 0x8000_0021,
                info: 2
            })
        );
        assert_eq!(e.insn_len(), None);
        let msr = ExitInfo {
            reason: ENTRY_FAILURE | 34,
            ..e
        };
        assert!(matches!(
            decode(&msr),
            Action::Exit(Exit::Failed {
                why: "VM entry failed: MSR loading",
                ..
            })
        ));
        let mc = ExitInfo {
            reason: ENTRY_FAILURE | 41,
            ..e
        };
        assert!(matches!(
            decode(&mc),
            Action::Exit(Exit::Failed {
                why: "VM entry failed: machine-check event",
                ..
            })
        ));
    }

    #[test]
    fn exceptions_and_nmis() {
        let base = exit(reason::EXCEPTION_OR_NMI);
        let nmi = ExitInfo {
            interruption_info: intr::VALID | 2 << 8 | 2,
            ..base
        };
        assert_eq!(decode(&nmi), Action::HostNmi);
        let mc = ExitInfo {
            interruption_info: intr::VALID | 3 << 8 | 18,
            ..base
        };
        assert_eq!(decode(&mc), Action::HostMachineCheck);
        let ac = ExitInfo {
            interruption_info: intr::VALID | intr::NMI_UNBLOCKING | intr::ERROR_CODE | 3 << 8 | 17,
            interruption_error: 0,
            ..base
        };
        assert_eq!(
            decode(&ac),
            Action::Reflect {
                event: Event {
                    info: intr::VALID | intr::ERROR_CODE | 3 << 8 | 17,
                    error_code: 0,
                    insn_len: 0
                },
                dr6: None
            }
        );
        let db = ExitInfo {
            interruption_info: intr::VALID | 3 << 8 | 1,
            qualification: (1 << 14) | 0b0010,
            ..base
        };
        assert_eq!(
            decode(&db),
            Action::Reflect {
                event: Event {
                    info: intr::VALID | 3 << 8 | 1,
                    error_code: 0,
                    insn_len: 0
                },
                dr6: Some((1 << 14) | 0b0010)
            }
        );
        let icebp = ExitInfo {
            interruption_info: intr::VALID | 5 << 8 | 1,
            insn_len: 1,
            ..base
        };
        assert_eq!(
            decode(&icebp),
            Action::Reflect {
                event: Event {
                    info: intr::VALID | 5 << 8 | 1,
                    error_code: 0,
                    insn_len: 1
                },
                dr6: None
            }
        );
        assert_eq!(icebp.insn_len(), Some(1));
        let gp = ExitInfo {
            interruption_info: intr::VALID | intr::ERROR_CODE | 3 << 8 | 13,
            interruption_error: 0x18,
            ..base
        };
        assert_eq!(
            decode(&gp),
            Action::Exit(Exit::Exception {
                vector: 13,
                error_code: Some(0x18)
            })
        );
        let ud = ExitInfo {
            interruption_info: intr::VALID | 3 << 8 | 6,
            ..base
        };
        assert_eq!(
            decode(&ud),
            Action::Exit(Exit::Exception {
                vector: 6,
                error_code: None
            })
        );
    }

    #[test]
    fn cr_access_qualification() {
        // mov cr0, rax
        assert_eq!(
            CrAccess::decode(0x0000),
            CrAccess {
                cr: 0,
                kind: CrAccessKind::MovTo,
                gpr: 0
            }
        );
        // mov r9, cr3
        assert_eq!(
            CrAccess::decode(0x0913),
            CrAccess {
                cr: 3,
                kind: CrAccessKind::MovFrom,
                gpr: 9
            }
        );
        assert_eq!(CrAccess::decode(0x20).kind, CrAccessKind::Clts);
        assert_eq!(CrAccess::decode(0x000B_0030).kind, CrAccessKind::Lmsw(0xB));
        let e = ExitInfo {
            reason: 28,
            qualification: 0x0004,
            ..ExitInfo::default()
        };
        assert_eq!(
            decode(&e),
            Action::CrAccess(CrAccess {
                cr: 4,
                kind: CrAccessKind::MovTo,
                gpr: 0
            })
        );
    }

    #[test]
    fn unexpected_and_unsupported() {
        let e = ExitInfo {
            reason: 52,
            qualification: 9,
            ..ExitInfo::default()
        };
        assert_eq!(
            decode(&e),
            Action::Exit(Exit::Failed {
                why: "unexpected VM exit",
                code: 52,
                info: 9
            })
        );
        assert!(matches!(
            decode(&exit(reason::INIT)),
            Action::Exit(Exit::Failed { code: 3, .. })
        ));
        assert!(matches!(
            decode(&exit(reason::SIPI)),
            Action::Exit(Exit::Failed { code: 4, .. })
        ));
    }

    #[test]
    fn exception_injection_shapes() {
        // #GP in protected mode: hardware exception with error code.
        assert_eq!(
            exception_event(13, Some(0x10), true, 0),
            Some(Event {
                info: 0x8000_0B0D,
                error_code: 0x10,
                insn_len: 0
            })
        );
        // #GP without a code given: 0.
        assert_eq!(exception_event(13, None, true, 0).unwrap().error_code, 0);
        // Real mode: no error code ever.
        assert_eq!(
            exception_event(13, Some(5), false, 0).unwrap().info,
            0x8000_030D
        );
        // #UD: a superfluous code is dropped.
        assert_eq!(
            exception_event(6, Some(1), true, 0),
            Some(Event {
                info: 0x8000_0306,
                error_code: 0,
                insn_len: 0
            })
        );
        // #BP: software exception with the instruction length.
        assert_eq!(
            exception_event(3, None, true, 1),
            Some(Event {
                info: 0x8000_0603,
                error_code: 0,
                insn_len: 1
            })
        );
        assert_eq!(exception_event(4, None, true, 0).unwrap().insn_len, 1);
        assert_eq!(exception_event(2, None, true, 0).unwrap().info, 0x8000_0202);
        assert_eq!(exception_event(32, None, true, 0), None);
    }

    #[test]
    fn idt_vectoring_is_reinjected() {
        let mut e = exit(reason::EPT_VIOLATION);
        assert_eq!(reinjection(&e), None);
        e.idt_vectoring_info = intr::VALID | intr::ERROR_CODE | 3 << 8 | 14;
        e.idt_vectoring_error = 2;
        assert_eq!(
            reinjection(&e),
            Some(Event {
                info: intr::VALID | intr::ERROR_CODE | 3 << 8 | 14,
                error_code: 2,
                insn_len: 0
            })
        );
        e.idt_vectoring_info = intr::VALID | 4 << 8 | 0x80;
        e.insn_len = 2;
        assert_eq!(
            reinjection(&e),
            Some(Event {
                info: intr::VALID | 4 << 8 | 0x80,
                error_code: 0,
                insn_len: 2
            })
        );
    }
}
