//! #VMEXIT codes (AMD APM Vol. 2 appendix C, "SVM Intercept Exit Codes") and their
//! translation into keel's vendor-neutral [`Exit`].
//!
//! [`decode`] is a pure function of EXITCODE, EXITINFO1 and EXITINFO2, so every
//! mapping is tested on the host.

use crate::hvm::{Exit, IoExit};

pub const VMEXIT_EXCP_BASE: u64 = 0x40;
pub const VMEXIT_INTR: u64 = 0x60;
/// A virtual interrupt (V_IRQ) can be taken: keel's interrupt window.
pub const VMEXIT_VINTR: u64 = 0x64;
pub const VMEXIT_NMI: u64 = 0x61;
pub const VMEXIT_SMI: u64 = 0x62;
pub const VMEXIT_INIT: u64 = 0x63;
pub const VMEXIT_CPUID: u64 = 0x72;
pub const VMEXIT_INVD: u64 = 0x76;
pub const VMEXIT_HLT: u64 = 0x78;
pub const VMEXIT_INVLPGA: u64 = 0x7A;
pub const VMEXIT_IOIO: u64 = 0x7B;
pub const VMEXIT_MSR: u64 = 0x7C;
pub const VMEXIT_TASK_SWITCH: u64 = 0x7D;
pub const VMEXIT_SHUTDOWN: u64 = 0x7F;
pub const VMEXIT_VMRUN: u64 = 0x80;
pub const VMEXIT_VMMCALL: u64 = 0x81;
pub const VMEXIT_VMLOAD: u64 = 0x82;
pub const VMEXIT_VMSAVE: u64 = 0x83;
pub const VMEXIT_STGI: u64 = 0x84;
pub const VMEXIT_CLGI: u64 = 0x85;
pub const VMEXIT_SKINIT: u64 = 0x86;
pub const VMEXIT_ICEBP: u64 = 0x88;
pub const VMEXIT_MONITOR: u64 = 0x8A;
pub const VMEXIT_MWAIT: u64 = 0x8B;
pub const VMEXIT_MWAIT_ARMED: u64 = 0x8C;
pub const VMEXIT_XSETBV: u64 = 0x8D;
pub const VMEXIT_NPF: u64 = 0x400;
/// VMRUN found the guest state invalid (APM §15.5.1 "consistency checks").
pub const VMEXIT_INVALID: u64 = u64::MAX;

/// Exception vectors that carry an error code (SDM Vol. 3A table 6-1).
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Translates a #VMEXIT.
pub fn decode(code: u64, info1: u64, info2: u64) -> Exit {
    match code {
        VMEXIT_CPUID => Exit::Cpuid,
        VMEXIT_HLT => Exit::Hlt,
        VMEXIT_VMMCALL => Exit::Hypercall,
        VMEXIT_MSR => {
            if info1 & 1 == 0 {
                Exit::Rdmsr
            } else {
                Exit::Wrmsr
            }
        }
        // EXITINFO1 (APM Vol. 2 §15.10.2, figure 15-2): bit 0 IN, bit 2 string, bit 3
        // REP, bits 4-6 one-hot size, bits 16-31 port.
        VMEXIT_IOIO => {
            let size = if info1 & (1 << 4) != 0 {
                1
            } else if info1 & (1 << 5) != 0 {
                2
            } else {
                4
            };
            Exit::Io(IoExit {
                port: (info1 >> 16) as u16,
                size,
                write: info1 & 1 == 0,
                string: info1 & (1 << 2) != 0,
                rep: info1 & (1 << 3) != 0,
            })
        }
        // EXITINFO1 is a page-fault error code (APM Vol. 2 §15.25.6): bit 1 write,
        // bit 4 instruction fetch. EXITINFO2 is the faulting guest-physical address.
        VMEXIT_NPF => Exit::NestedPageFault {
            gpa: info2,
            write: info1 & (1 << 1) != 0,
            fetch: info1 & (1 << 4) != 0,
        },
        VMEXIT_INTR | VMEXIT_NMI | VMEXIT_SMI => Exit::ExternalInterrupt,
        VMEXIT_VINTR => Exit::InterruptWindow,
        c if (VMEXIT_EXCP_BASE..VMEXIT_EXCP_BASE + 32).contains(&c) => {
            let vector = (c - VMEXIT_EXCP_BASE) as u8;
            Exit::Exception {
                vector,
                error_code: has_error_code(vector).then_some(info1 as u32),
            }
        }
        VMEXIT_SHUTDOWN => Exit::TripleFault,
        VMEXIT_VMRUN | VMEXIT_VMLOAD | VMEXIT_VMSAVE | VMEXIT_STGI | VMEXIT_CLGI
        | VMEXIT_SKINIT | VMEXIT_MONITOR | VMEXIT_MWAIT | VMEXIT_MWAIT_ARMED | VMEXIT_XSETBV
        | VMEXIT_INVLPGA => Exit::UndefinedInstruction,
        VMEXIT_INVALID => Exit::Failed {
            why: "VMRUN refused the guest state (VMEXIT_INVALID)",
            code,
            info: info1,
        },
        VMEXIT_INIT => Exit::Failed {
            why: "INIT signal",
            code,
            info: info1,
        },
        VMEXIT_TASK_SWITCH => Exit::Failed {
            why: "hardware task switch (not supported)",
            code,
            info: info1,
        },
        _ => Exit::Failed {
            why: "unexpected #VMEXIT code",
            code,
            info: info1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_exits() {
        assert_eq!(decode(VMEXIT_CPUID, 0, 0), Exit::Cpuid);
        assert_eq!(decode(VMEXIT_HLT, 0, 0), Exit::Hlt);
        assert_eq!(decode(VMEXIT_VMMCALL, 0, 0), Exit::Hypercall);
        assert_eq!(decode(VMEXIT_MSR, 0, 0), Exit::Rdmsr);
        assert_eq!(decode(VMEXIT_MSR, 1, 0), Exit::Wrmsr);
        assert_eq!(decode(VMEXIT_SHUTDOWN, 0, 0), Exit::TripleFault);
        assert_eq!(decode(VMEXIT_INTR, 0, 0), Exit::ExternalInterrupt);
        assert_eq!(decode(VMEXIT_VMRUN, 0, 0), Exit::UndefinedInstruction);
        assert!(matches!(decode(VMEXIT_INVALID, 0, 0), Exit::Failed { .. }));
        assert!(matches!(
            decode(0x1234, 0, 0),
            Exit::Failed { code: 0x1234, .. }
        ));
    }

    #[test]
    fn ioio_fields() {
        // in %dx,%al with dx = 0x3f8: IN, SZ8, port 0x3f8.
        let info = (0x3f8 << 16) | (1 << 4) | 1;
        assert_eq!(
            decode(VMEXIT_IOIO, info, 0),
            Exit::Io(IoExit {
                port: 0x3f8,
                size: 1,
                write: false,
                string: false,
                rep: false
            })
        );
        // rep outsw to 0x510: OUT, STR, REP, SZ16.
        let info = (0x510 << 16) | (1 << 5) | (1 << 3) | (1 << 2);
        assert_eq!(
            decode(VMEXIT_IOIO, info, 0),
            Exit::Io(IoExit {
                port: 0x510,
                size: 2,
                write: true,
                string: true,
                rep: true
            })
        );
        let info = (0xcfc << 16) | (1 << 6);
        assert!(matches!(
            decode(VMEXIT_IOIO, info, 0),
            Exit::Io(IoExit {
                size: 4,
                write: true,
                ..
            })
        ));
    }

    #[test]
    fn npf_and_exceptions() {
        assert_eq!(
            decode(VMEXIT_NPF, 0b10, 0xfeb0_0000),
            Exit::NestedPageFault {
                gpa: 0xfeb0_0000,
                write: true,
                fetch: false
            }
        );
        assert_eq!(
            decode(VMEXIT_NPF, 0b1_0000, 0x1000),
            Exit::NestedPageFault {
                gpa: 0x1000,
                write: false,
                fetch: true
            }
        );
        assert_eq!(
            decode(VMEXIT_EXCP_BASE + 13, 0x18, 0),
            Exit::Exception {
                vector: 13,
                error_code: Some(0x18)
            }
        );
        assert_eq!(
            decode(VMEXIT_EXCP_BASE + 6, 0x18, 0),
            Exit::Exception {
                vector: 6,
                error_code: None
            }
        );
    }
}
