//! SVM capabilities from CPUID Fn8000_000A (APM Vol. 3 appendix E.4.9).
//!
//! Decoding is a pure function of the CPUID registers ([`SvmCaps::from_cpuid`]),
//! tested on the host. keel never reads VM_CR here: Bochs does not implement it
//! (EMULATORS.md); whether firmware disabled SVM is found out when EFER.SVME is set.

use crate::cpu::CpuInfo;

/// What SVM offers on this CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmCaps {
    /// SVM revision (EAX[7:0]).
    pub revision: u8,
    /// Number of ASIDs (EBX).
    pub asids: u32,
    pub npt: bool,
    pub lbr_virt: bool,
    pub svm_lock: bool,
    /// Next-RIP saved on #VMEXIT. QEMU TCG lacks it: keel must decode lengths itself.
    pub nrip_save: bool,
    pub tsc_rate: bool,
    pub vmcb_clean: bool,
    pub flush_by_asid: bool,
    pub decode_assists: bool,
    pub pause_filter: bool,
    pub avic: bool,
    pub vgif: bool,
}

impl SvmCaps {
    /// Decodes CPUID Fn8000_000A EAX, EBX, EDX.
    pub fn from_cpuid(eax: u32, ebx: u32, edx: u32) -> SvmCaps {
        let bit = |n: u32| edx & (1 << n) != 0;
        SvmCaps {
            revision: eax as u8,
            asids: ebx,
            npt: bit(0),
            lbr_virt: bit(1),
            svm_lock: bit(2),
            nrip_save: bit(3),
            tsc_rate: bit(4),
            vmcb_clean: bit(5),
            flush_by_asid: bit(6),
            decode_assists: bit(7),
            pause_filter: bit(10),
            avic: bit(13),
            vgif: bit(16),
        }
    }
}

/// Reads the SVM feature leaf, if the CPU has SVM.
pub fn detect(cpu: &CpuInfo) -> Option<SvmCaps> {
    if !cpu.svm {
        return None;
    }
    let (max_ext, ..) = crate::cpu::cpuid(0x8000_0000, 0);
    if max_ext < 0x8000_000A {
        return Some(SvmCaps::default());
    }
    let (eax, ebx, _, edx) = crate::cpu::cpuid(0x8000_000A, 0);
    Some(SvmCaps::from_cpuid(eax, ebx, edx))
}

#[cfg(test)]
mod tests {
    use super::SvmCaps;

    #[test]
    fn qemu_tcg_like_leaf() {
        // QEMU TCG: NPT only, 16 ASIDs, no nRIP save (EMULATORS.md).
        let c = SvmCaps::from_cpuid(1, 16, 1);
        assert!(c.npt && !c.nrip_save && !c.vmcb_clean && !c.decode_assists);
        assert_eq!((c.revision, c.asids), (1, 16));
    }

    #[test]
    fn full_featured_leaf() {
        let c = SvmCaps::from_cpuid(1, 32768, 0b1_0010_0100_1111_1111);
        assert!(c.npt && c.nrip_save && c.vmcb_clean && c.flush_by_asid && c.decode_assists);
        assert!(c.pause_filter && c.avic && c.vgif);
    }
}
