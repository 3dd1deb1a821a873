//! The serial contract, as regular expressions: one constant per row of
//! `docs/serial-contract.md`. Change a line there and here together.
//!
//! Every line keel prints starts with `(KEEL) `; the harness matches line by line
//! after removing `\r` and terminal escapes (see [`crate::serial`]), so `^` and `$`
//! anchor to one line.

use crate::backend::{Backend, Hvm};

/// Banner: `(KEEL) keel 0.1.0 ...`.
pub const BANNER: &str = r"^\(KEEL\) keel \d+\.\d+\.\d+ ";
/// Command line echo; group 1 is the command line.
pub const COMMAND_LINE: &str = r"^\(KEEL\) Command line: (.*)$";
/// Booted by a multiboot2 loader; group 1 names it.
pub const BOOT_MULTIBOOT2: &str = r"^\(KEEL\) Boot: multiboot2 from (.*)$";
/// Booted by a multiboot (v1) loader; group 1 names it.
pub const BOOT_MULTIBOOT1: &str = r"^\(KEEL\) Boot: multiboot \(v1\) from (.*)$";
/// CPU vendor; group 1 is the CPUID vendor string.
pub const CPU_VENDOR: &str = r"^\(KEEL\) CPU: vendor (GenuineIntel|AuthenticAMD|\S+)";
/// Memory; groups: usable MiB, free frames.
pub const MEMORY: &str = r"^\(KEEL\) Memory: (\d+) MiB usable, (\d+) frames free";
/// ACPI root pointer found.
pub const ACPI_RSDP: &str = r"^\(KEEL\) ACPI: RSDP at 0x[0-9a-f]+";
/// ACPI MADT summary; groups: CPUs, IOAPICs.
pub const ACPI_MADT: &str =
    r"^\(KEEL\) ACPI: (\d+) CPU\(s\), LAPIC at 0x[0-9a-f]+, (\d+) IOAPIC\(s\)";
/// How many CPUs came up, of how many the MADT lists, and their APIC ids.
pub const CPUS_UP: &str =
    r"^\(KEEL\) CPUs: (\d+) of (\d+) up \(APIC ids ([\d ]+)\)( \(limited by nr_cpus/maxcpus\))?$";
/// SVM with nested paging.
pub const HVM_SVM: &str = r"^\(KEEL\) HVM: SVM .*NPT: yes";
/// VMX with EPT, VPID and unrestricted guest.
pub const HVM_VMX: &str = r"^\(KEEL\) HVM: VMX .*EPT: yes.*VPID: yes.*unrestricted guest: yes";
/// No hardware virtualization.
pub const HVM_NONE: &str = r"^\(KEEL\) HVM: none";
/// TSC frequency; group 1 is kHz.
pub const TIMER_TSC: &str = r"^\(KEEL\) Timer: TSC (\d+) kHz";
/// The LAPIC timer fired; group 1 is microseconds.
pub const TIMER_LAPIC: &str = r"^\(KEEL\) Timer: LAPIC timer interrupt after (\d+) us";
/// No module was given.
pub const NO_DOM0: &str = r"^\(KEEL\) No dom0 kernel given";
/// Module 0 is not a kernel keel can load; group 1 is the reason.
pub const BAD_MODULE: &str = r"^\(KEEL\) dom0: module 0 .*: not a loadable kernel: (.*)$";
/// An unknown option was ignored; group 1 is the option.
pub const UNKNOWN_OPTION: &str =
    r"^\(KEEL\) Warning: unknown command-line option '([^']*)' ignored";
/// A known option had a bad value; group 1 says what.
pub const COMMAND_LINE_ERROR: &str = r"^\(KEEL\) Error: command line: (.*)$";
/// keel's last line before ACPI S5.
pub const POWERING_OFF: &str = r"^\(KEEL\) Powering off";
/// A panic or exception report; never in a passing test.
pub const FATAL: &str = r"^\(KEEL\) FATAL: ";
/// An exception report's first line; groups: vector, mnemonic, error code.
pub const FATAL_EXCEPTION: &str =
    r"^\(KEEL\) FATAL: exception (\d+) \((#\w+|NMI)[^)]*\) in keel, error code (0x[0-9a-f]+)";
/// The register lines of an exception report.
pub const FATAL_REGISTERS: &str = r"^\(KEEL\) FATAL: RAX 0x[0-9a-f]{16} RBX 0x[0-9a-f]{16}";
/// The stack of return addresses closing a report; at least one address.
pub const FATAL_STACK: &str = r"^\(KEEL\) FATAL: stack:( 0x[0-9a-f]{16})+$";
/// A panic report; groups: file, line, message.
/// The line saying which CPU failed; the others are stopped (one report a run).
pub const FATAL_CPU: &str =
    r"^\(KEEL\) FATAL: on CPU (\d+) \(APIC id (\d+)\); every other CPU is stopped$";
pub const FATAL_PANIC: &str = r"^\(KEEL\) FATAL: panic at (\S+):(\d+): (.*)$";

/// VMX without EPT (an old CPU).
pub const HVM_VMX_NO_EPT: &str = r"^\(KEEL\) HVM: VMX .*EPT: no";
/// What keel says on a CPU without EPT/NPT.
pub const NO_HAP: &str = r"^\(KEEL\) Warning: HVM: no EPT/NPT: ";

/// The HVM line keel must print on `backend`.
pub fn hvm_line(backend: Backend) -> &'static str {
    match (backend.hvm(), backend) {
        (Hvm::Vmx, Backend::BochsVmxNoEpt) => HVM_VMX_NO_EPT,
        (Hvm::Svm, _) => HVM_SVM,
        (Hvm::Vmx, _) => HVM_VMX,
        (Hvm::None, _) => HVM_NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    /// Lines in the shape of the contract's examples, one per pattern.
    const SAMPLES: &[(&str, &str)] = &[
        (BANNER, "(KEEL) keel 0.1.0 (x86_64, debug)"),
        (COMMAND_LINE, "(KEEL) Command line: console=com1 loglvl=all"),
        (BOOT_MULTIBOOT2, "(KEEL) Boot: multiboot2 from GRUB 2.06"),
        (BOOT_MULTIBOOT1, "(KEEL) Boot: multiboot (v1) from qemu"),
        (CPU_VENDOR, "(KEEL) CPU: vendor AuthenticAMD family 0x19"),
        (MEMORY, "(KEEL) Memory: 510 MiB usable, 130000 frames free"),
        (ACPI_RSDP, "(KEEL) ACPI: RSDP at 0xf5a30"),
        (
            ACPI_MADT,
            "(KEEL) ACPI: 1 CPU(s), LAPIC at 0xfee00000, 1 IOAPIC(s)",
        ),
        (
            HVM_SVM,
            "(KEEL) HVM: SVM rev 1, ASIDs: 16, NPT: yes, nRIP save: no",
        ),
        (
            HVM_VMX,
            "(KEEL) HVM: VMX rev 1, EPT: yes, VPID: yes, unrestricted guest: yes",
        ),
        (HVM_NONE, "(KEEL) HVM: none"),
        (TIMER_TSC, "(KEEL) Timer: TSC 2000000 kHz"),
        (
            TIMER_LAPIC,
            "(KEEL) Timer: LAPIC timer interrupt after 1000 us",
        ),
        (NO_DOM0, "(KEEL) No dom0 kernel given"),
        (
            BAD_MODULE,
            "(KEEL) dom0: module 0 'junk.bin': not a loadable kernel: bad ELF magic",
        ),
        (
            UNKNOWN_OPTION,
            "(KEEL) Warning: unknown command-line option 'bogus-option=1' ignored",
        ),
        (
            COMMAND_LINE_ERROR,
            "(KEEL) Error: command line: loglvl: unknown level 'shouting'",
        ),
        (POWERING_OFF, "(KEEL) Powering off..."),
        (FATAL, "(KEEL) FATAL: page fault"),
    ];

    #[test]
    fn every_pattern_compiles_and_matches_its_sample_only() {
        for (i, (re, sample)) in SAMPLES.iter().enumerate() {
            let re = Regex::new(re).expect("contract regex compiles");
            assert!(re.is_match(sample), "{re} should match {sample:?}");
            for (j, (_, other)) in SAMPLES.iter().enumerate() {
                if i != j {
                    assert!(!re.is_match(other), "{re} should not match {other:?}");
                }
            }
        }
    }

    #[test]
    fn guest_lines_do_not_match() {
        let re = Regex::new(BANNER).expect("compiles");
        assert!(!re.is_match("(d0) (KEEL) keel 0.1.0 x"));
    }
}
