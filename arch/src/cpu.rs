//! What this CPU is and can do: CPUID (through `raw-cpuid`), control registers, and the
//! few instructions the rest of keel needs (halt, interrupt flag, TSC).

use core::arch::asm;
use raw_cpuid::CpuId;

/// CPU vendor, as far as keel's choice of virtualization backend cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

/// The features keel looks at, read once at boot.
#[derive(Clone, Debug)]
pub struct CpuInfo {
    pub vendor: Vendor,
    /// The 12-byte vendor string, e.g. `GenuineIntel`.
    pub vendor_string: [u8; 12],
    /// Brand string (CPUID 0x80000002..4), NUL-padded.
    pub brand: [u8; 48],
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    pub vmx: bool,
    pub svm: bool,
    pub x2apic: bool,
    pub tsc_deadline: bool,
    pub invariant_tsc: bool,
    pub page_1g: bool,
    pub nx: bool,
    pub xsave: bool,
    /// Whether CPUID.1:ECX.hypervisor is set (we are a guest ourselves).
    pub hypervisor_bit: bool,
    /// TSC frequency the CPU states in CPUID 0x15/0x16, if it does.
    pub cpuid_tsc_hz: Option<u64>,
}

fn trim_nul(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("?").trim()
}

impl CpuInfo {
    /// Reads CPUID.
    pub fn detect() -> CpuInfo {
        let cpuid = CpuId::new();
        let mut vendor_string = [0u8; 12];
        let vendor = match cpuid.get_vendor_info() {
            Some(v) => {
                let s = v.as_str().as_bytes();
                let n = s.len().min(12);
                vendor_string[..n].copy_from_slice(&s[..n]);
                match v.as_str() {
                    "GenuineIntel" => Vendor::Intel,
                    "AuthenticAMD" => Vendor::Amd,
                    _ => Vendor::Other,
                }
            }
            None => Vendor::Other,
        };
        let mut brand = [0u8; 48];
        if let Some(b) = cpuid.get_processor_brand_string() {
            let s = b.as_str().as_bytes();
            let n = s.len().min(48);
            brand[..n].copy_from_slice(&s[..n]);
        }
        let fi = cpuid.get_feature_info();
        let ext = cpuid.get_extended_processor_and_feature_identifiers();
        let apm = cpuid.get_advanced_power_mgmt_info();
        let cpuid_tsc_hz = cpuid
            .get_tsc_info()
            .and_then(|t| t.tsc_frequency())
            .filter(|&hz| hz > 0);
        CpuInfo {
            vendor,
            vendor_string,
            brand,
            family: fi.as_ref().map_or(0, |f| f.family_id()),
            model: fi.as_ref().map_or(0, |f| f.model_id()),
            stepping: fi.as_ref().map_or(0, |f| f.stepping_id()),
            vmx: fi.as_ref().is_some_and(|f| f.has_vmx()),
            svm: ext.as_ref().is_some_and(|e| e.has_svm()),
            x2apic: fi.as_ref().is_some_and(|f| f.has_x2apic()),
            tsc_deadline: fi.as_ref().is_some_and(|f| f.has_tsc_deadline()),
            invariant_tsc: apm.as_ref().is_some_and(|a| a.has_invariant_tsc()),
            page_1g: ext.as_ref().is_some_and(|e| e.has_1gib_pages()),
            nx: ext.as_ref().is_some_and(|e| e.has_execute_disable()),
            xsave: fi.as_ref().is_some_and(|f| f.has_xsave()),
            hypervisor_bit: fi.as_ref().is_some_and(|f| f.has_hypervisor()),
            cpuid_tsc_hz,
        }
    }

    pub fn vendor_str(&self) -> &str {
        trim_nul(&self.vendor_string)
    }

    pub fn brand_str(&self) -> &str {
        trim_nul(&self.brand)
    }
}

/// Raw CPUID, for leaves `raw-cpuid` does not decode the way keel needs.
pub fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    let r = raw_cpuid::native_cpuid::cpuid_count(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is never set by keel).
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Enables interrupts and waits for one, atomically (STI's one-instruction shadow
/// covers HLT, so an interrupt arriving in between still wakes us).
pub fn enable_interrupts_and_halt() {
    // SAFETY: keel's IDT is loaded before interrupts are ever enabled.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// Opens a one-instruction window for pending interrupts (after a guest exit for a
/// host interrupt), then closes it again.
pub fn interrupt_window() {
    // SAFETY: keel's IDT is loaded before guests run; handlers preserve all state.
    unsafe { asm!("sti; nop; cli", options(nomem, nostack)) };
}

pub fn disable_interrupts() {
    // SAFETY: clearing IF cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Whether RFLAGS.IF is set.
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: pushf/pop only touches the stack slot it pushes.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Runs `f` with interrupts disabled, restoring the previous state.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let was = interrupts_enabled();
    if was {
        disable_interrupts();
    }
    let r = f();
    if was {
        // SAFETY: interrupts were on when we were called, so the IDT is loaded.
        unsafe { asm!("sti", options(nomem, nostack)) };
    }
    r
}

/// Stops this CPU for good: interrupts off, halt forever.
pub fn halt_forever() -> ! {
    loop {
        disable_interrupts();
        // SAFETY: HLT with IF clear waits for NMI/SMI only; nothing to break.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

/// Spins politely.
#[inline]
pub fn pause() {
    core::hint::spin_loop();
}
