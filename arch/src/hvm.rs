//! Which hardware virtualization this CPU offers, in one value the rest of keel can
//! print and choose a backend from. Later this is where the one vCPU interface over
//! `vmx` and `svm` lives (Xen: `struct hvm_function_table`).

use core::fmt;

use crate::cpu::CpuInfo;
use crate::svm::caps::SvmCaps;
use crate::vmx::caps::VmxCaps;

/// The hardware virtualization available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvmSupport {
    Vmx(VmxCaps),
    Svm(SvmCaps),
    None,
}

impl HvmSupport {
    /// Detects VMX (Intel) or SVM (AMD); VMX wins on a CPU claiming both.
    pub fn detect(cpu: &CpuInfo) -> HvmSupport {
        if let Some(v) = crate::vmx::caps::detect(cpu) {
            return HvmSupport::Vmx(v);
        }
        if let Some(s) = crate::svm::caps::detect(cpu) {
            return HvmSupport::Svm(s);
        }
        HvmSupport::None
    }

    /// Whether guests can get second-level paging (EPT/NPT).
    pub fn has_hap(&self) -> bool {
        match self {
            HvmSupport::Vmx(v) => v.ept,
            HvmSupport::Svm(s) => s.npt,
            HvmSupport::None => false,
        }
    }
}

fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

impl fmt::Display for HvmSupport {
    /// One line, the format docs/serial-contract.md promises.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HvmSupport::Vmx(v) => {
                write!(f, "VMX rev {:#x}, EPT: {}", v.revision, yn(v.ept))?;
                if v.ept {
                    write!(
                        f,
                        " (4-level: {}, WB: {}, 2M: {}, 1G: {}, A/D: {}, INVEPT: {})",
                        yn(v.ept_4level),
                        yn(v.ept_wb),
                        yn(v.ept_2m),
                        yn(v.ept_1g),
                        yn(v.ept_ad),
                        yn(v.invept)
                    )?;
                }
                write!(
                    f,
                    ", VPID: {}, unrestricted guest: {}, firmware: {}",
                    yn(v.vpid),
                    yn(v.unrestricted_guest),
                    match (v.feature_control_locked, v.enabled_outside_smx) {
                        (true, true) => "enabled (locked)",
                        (true, false) => "DISABLED (locked off)",
                        (false, _) => "unlocked",
                    }
                )
            }
            HvmSupport::Svm(s) => write!(
                f,
                "SVM rev {}, NPT: {}, ASIDs: {}, nRIP save: {}, VMCB clean bits: {}, flush-by-ASID: {}, decode assists: {}",
                s.revision,
                yn(s.npt),
                s.asids,
                yn(s.nrip_save),
                yn(s.vmcb_clean),
                yn(s.flush_by_asid),
                yn(s.decode_assists)
            ),
            HvmSupport::None => f.write_str("none (no VMX or SVM: PV guests only)"),
        }
    }
}
