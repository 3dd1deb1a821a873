//! Which emulator boots keel, with which hardware-virtualization flavour.
//!
//! QEMU's TCG emulates SVM but not VMX, so VMX is only ever tested on Bochs; SVM is
//! tested on both (QEMU is fast, Bochs is stricter). The names (`qemu-svm`, ...) are
//! what `cargo xtask run --backend` accepts and what test names use.

use std::fmt;
use std::str::FromStr;

/// An emulator configuration that boots keel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// QEMU TCG, `-cpu max` (AMD vendor, SVM with NPT).
    QemuSvm,
    /// Bochs, `corei7_skylake_x` (Intel, VMX with EPT, VPID, unrestricted guest).
    BochsVmx,
    /// Bochs, `ryzen` (AMD, SVM with NPT).
    BochsSvm,
    /// Bochs, `core2_penryn_t9600` (Intel, VMX without EPT, no 1 GiB pages): an
    /// old CPU keel must boot on, though it cannot run PVH there without shadow
    /// paging. Not in [`Backend::ALL`]: the tests that use it name it.
    BochsVmxNoEpt,
    /// QEMU TCG, `-cpu max,-svm`: no hardware virtualization at all (a machine
    /// that can only run PV guests). Not in [`Backend::ALL`].
    QemuNoHvm,
}

impl Backend {
    /// Every backend that runs the whole suite, in the order tests and help text
    /// list them.
    pub const ALL: [Backend; 3] = [Backend::QemuSvm, Backend::BochsVmx, Backend::BochsSvm];
    /// Every backend a name can select ([`Backend::ALL`] and the old CPUs).
    pub const NAMED: [Backend; 5] = [
        Backend::QemuSvm,
        Backend::BochsVmx,
        Backend::BochsSvm,
        Backend::BochsVmxNoEpt,
        Backend::QemuNoHvm,
    ];

    /// The name used on the command line and in test names.
    pub fn name(self) -> &'static str {
        match self {
            Backend::QemuSvm => "qemu-svm",
            Backend::BochsVmx => "bochs-vmx",
            Backend::BochsSvm => "bochs-svm",
            Backend::BochsVmxNoEpt => "bochs-vmx-noept",
            Backend::QemuNoHvm => "qemu-nohvm",
        }
    }

    /// True for the QEMU backends (which have `isa-debug-exit` and `-kernel`).
    pub fn is_qemu(self) -> bool {
        matches!(self, Backend::QemuSvm | Backend::QemuNoHvm)
    }

    /// QEMU's `-cpu` for this backend, `None` for Bochs.
    pub fn qemu_cpu(self) -> Option<&'static str> {
        match self {
            Backend::QemuSvm => Some("max"),
            Backend::QemuNoHvm => Some("max,-svm"),
            Backend::BochsVmx | Backend::BochsSvm | Backend::BochsVmxNoEpt => None,
        }
    }

    /// True for the Bochs backends (whose exit status says nothing: judge by serial).
    pub fn is_bochs(self) -> bool {
        !self.is_qemu()
    }

    /// The CPU vendor string the emulated CPU reports in CPUID leaf 0 (measured).
    pub fn cpu_vendor(self) -> &'static str {
        match self {
            Backend::QemuSvm | Backend::BochsSvm | Backend::QemuNoHvm => "AuthenticAMD",
            Backend::BochsVmx | Backend::BochsVmxNoEpt => "GenuineIntel",
        }
    }

    /// The hardware-virtualization flavour the emulated CPU offers.
    pub fn hvm(self) -> Hvm {
        match self {
            Backend::QemuSvm | Backend::BochsSvm => Hvm::Svm,
            Backend::BochsVmx | Backend::BochsVmxNoEpt => Hvm::Vmx,
            Backend::QemuNoHvm => Hvm::None,
        }
    }

    /// How many CPUs a boot gets unless it asks otherwise: QEMU 4 (each on its
    /// own host thread), Bochs 2 (Bochs runs its CPUs in turns on one thread, so
    /// each more costs wall time). Tests that must cover one-CPU machines say so
    /// with `Boot::cpus(1)`.
    pub fn default_cpus(self) -> u32 {
        match self {
            Backend::QemuSvm | Backend::QemuNoHvm => 4,
            Backend::BochsVmx | Backend::BochsSvm | Backend::BochsVmxNoEpt => 2,
        }
    }

    /// The Bochs `cpu: model=` for this backend, `None` for QEMU.
    pub fn bochs_cpu_model(self) -> Option<&'static str> {
        match self {
            Backend::QemuSvm | Backend::QemuNoHvm => None,
            Backend::BochsVmx => Some("corei7_skylake_x"),
            Backend::BochsSvm => Some("ryzen"),
            Backend::BochsVmxNoEpt => Some("core2_penryn_t9600"),
        }
    }
}

/// Intel VT-x or AMD-V.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hvm {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
    /// Neither.
    None,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error from parsing an unknown backend name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Backend::NAMED.iter().map(|b| b.name()).collect();
        write!(
            f,
            "unknown backend '{}' (expected one of: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownBackend {}

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::NAMED
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Backend::NAMED {
            assert_eq!(b.to_string().parse::<Backend>(), Ok(b));
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "qemu-vmx".parse::<Backend>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown backend 'qemu-vmx' (expected one of: qemu-svm, bochs-vmx, bochs-svm, bochs-vmx-noept, qemu-nohvm)"
        );
    }

    #[test]
    fn only_bochs_has_a_bochs_cpu_model() {
        assert_eq!(Backend::QemuSvm.bochs_cpu_model(), None);
        assert_eq!(
            Backend::BochsVmx.bochs_cpu_model(),
            Some("corei7_skylake_x")
        );
        assert_eq!(Backend::BochsSvm.bochs_cpu_model(), Some("ryzen"));
        assert_eq!(
            Backend::BochsVmxNoEpt.bochs_cpu_model(),
            Some("core2_penryn_t9600")
        );
    }
}
