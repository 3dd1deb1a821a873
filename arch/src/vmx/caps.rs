//! VMX capabilities from the VMX capability MSRs (SDM Vol. 3D appendix A).
//!
//! Decoding is a pure function of the raw MSR values ([`VmxCaps::from_msrs`]) so that
//! it is tested on the host; [`detect`] reads them. The MSRs exist only when
//! CPUID.1:ECX.VMX is set, which [`detect`] checks first.

use crate::cpu::CpuInfo;
use crate::msr;

/// What VMX offers on this CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    /// VMCS revision identifier (IA32_VMX_BASIC bits 30:0).
    pub revision: u32,
    /// IA32_FEATURE_CONTROL lock bit (bit 0).
    pub feature_control_locked: bool,
    /// VMXON allowed outside SMX (IA32_FEATURE_CONTROL bit 2).
    pub enabled_outside_smx: bool,
    pub secondary_controls: bool,
    pub ept: bool,
    pub vpid: bool,
    pub unrestricted_guest: bool,
    pub ept_4level: bool,
    pub ept_wb: bool,
    pub ept_2m: bool,
    pub ept_1g: bool,
    pub ept_ad: bool,
    pub invept: bool,
    pub invvpid: bool,
}

impl VmxCaps {
    /// Decodes the raw MSRs: IA32_VMX_BASIC, IA32_FEATURE_CONTROL,
    /// IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2 (0 if secondary controls
    /// are not allowed) and IA32_VMX_EPT_VPID_CAP (0 if neither EPT nor VPID).
    pub fn from_msrs(
        basic: u64,
        feature_control: u64,
        procbased: u64,
        procbased2: u64,
        ept_vpid: u64,
    ) -> VmxCaps {
        // Allowed-1 settings are the high 32 bits of the control MSRs (§A.3.2, §A.3.3).
        let secondary_controls = (procbased >> 32) & (1 << 31) != 0;
        let allowed2 = if secondary_controls {
            procbased2 >> 32
        } else {
            0
        };
        let ept = allowed2 & (1 << 1) != 0;
        let vpid = allowed2 & (1 << 5) != 0;
        let cap = if ept || vpid { ept_vpid } else { 0 };
        let bit = |n: u32| cap & (1u64 << n) != 0;
        VmxCaps {
            revision: (basic & 0x7FFF_FFFF) as u32,
            feature_control_locked: feature_control & 1 != 0,
            enabled_outside_smx: feature_control & (1 << 2) != 0,
            secondary_controls,
            ept,
            vpid,
            unrestricted_guest: allowed2 & (1 << 7) != 0,
            // IA32_VMX_EPT_VPID_CAP, SDM Vol. 3D §A.10.
            ept_4level: ept && bit(6),
            ept_wb: ept && bit(14),
            ept_2m: ept && bit(16),
            ept_1g: ept && bit(17),
            invept: ept && bit(20),
            ept_ad: ept && bit(21),
            invvpid: vpid && bit(32),
        }
    }

    /// Whether firmware left VMX usable: either unlocked (keel can enable it) or
    /// locked with VMXON outside SMX allowed.
    pub fn usable(&self) -> bool {
        !self.feature_control_locked || self.enabled_outside_smx
    }
}

/// Reads the VMX capability MSRs, if the CPU has VMX.
pub fn detect(cpu: &CpuInfo) -> Option<VmxCaps> {
    if !cpu.vmx {
        return None;
    }
    // SAFETY: with CPUID.1:ECX.VMX set, IA32_FEATURE_CONTROL, IA32_VMX_BASIC and
    // IA32_VMX_PROCBASED_CTLS exist (SDM Vol. 3D §A.1); PROCBASED_CTLS2 exists only if
    // its allowed-1 bit 63 is set, and EPT_VPID_CAP only if EPT or VPID is allowed,
    // which is checked before each read. Reads have no side effects.
    unsafe {
        let basic = msr::rdmsr(msr::IA32_VMX_BASIC);
        let fc = msr::rdmsr(msr::IA32_FEATURE_CONTROL);
        let procbased = msr::rdmsr(msr::IA32_VMX_PROCBASED_CTLS);
        let procbased2 = if procbased & (1 << 63) != 0 {
            msr::rdmsr(msr::IA32_VMX_PROCBASED_CTLS2)
        } else {
            0
        };
        let allowed2 = procbased2 >> 32;
        let ept_vpid = if allowed2 & ((1 << 1) | (1 << 5)) != 0 {
            msr::rdmsr(msr::IA32_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        Some(VmxCaps::from_msrs(
            basic, fc, procbased, procbased2, ept_vpid,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::VmxCaps;

    #[test]
    fn skylake_like_values_decode() {
        // allowed-1 of secondary (bit 63), EPT (33), VPID (37), unrestricted (39).
        let procbased = 1u64 << 63;
        let procbased2 = (1u64 << 33) | (1 << 37) | (1 << 39);
        let ept_vpid =
            (1 << 6) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 20) | (1 << 21) | (1u64 << 32);
        let c = VmxCaps::from_msrs(0x00DA_0400_0000_0004, 0x5, procbased, procbased2, ept_vpid);
        assert_eq!(c.revision, 4);
        assert!(c.ept && c.vpid && c.unrestricted_guest && c.secondary_controls);
        assert!(
            c.ept_4level && c.ept_wb && c.ept_2m && c.ept_1g && c.invept && c.ept_ad && c.invvpid
        );
        assert!(c.feature_control_locked && c.enabled_outside_smx && c.usable());
    }

    #[test]
    fn no_secondary_controls_means_no_ept_even_if_msr_bits_say_so() {
        let c = VmxCaps::from_msrs(1, 0, 0, u64::MAX, u64::MAX);
        assert!(!c.secondary_controls && !c.ept && !c.vpid && !c.unrestricted_guest && !c.ept_1g);
    }

    #[test]
    fn locked_off_by_firmware_is_unusable() {
        let c = VmxCaps::from_msrs(1, 0x1, 0, 0, 0);
        assert!(!c.usable());
        assert!(VmxCaps::from_msrs(1, 0x0, 0, 0, 0).usable());
    }
}
