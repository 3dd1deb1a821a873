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
    // Not `nomem`: the interrupt handlers that end the halt change memory (a
    // kick's flag, a timer's armed deadline) that the caller reads next.
    unsafe { asm!("sti; hlt", options(nostack)) };
}

/// Opens a one-instruction window for pending interrupts (after a guest exit for a
/// host interrupt), then closes it again.
pub fn interrupt_window() {
    // SAFETY: keel's IDT is loaded before guests run; handlers preserve all state.
    unsafe { asm!("sti; nop; cli", options(nostack)) };
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

/// Turns on what FXSAVE/FXRSTOR need to carry the SSE registers: CR4.OSFXSR (bit 9)
/// and CR4.OSXMMEXCPT (bit 10). keel itself is soft-float; these are for saving and
/// restoring guests' registers when the scheduler switches vCPUs. Call once at boot,
/// before any vCPU is created (VMX copies the host CR4 into each VMCS).
pub fn enable_fxsave() {
    let cr4 = read_cr4() | (1 << 9) | (1 << 10);
    // SAFETY: both bits only change how FXSAVE/FXRSTOR and SIMD exceptions behave;
    // keel executes no SSE code, so nothing of keel's changes meaning.
    unsafe { asm!("mov cr4, {}", in(reg) cr4, options(nomem, nostack, preserves_flags)) };
}

/// The x87/MMX/SSE register file in FXSAVE's 512-byte layout (SDM Vol. 1 §10.5.1).
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FxState(pub [u8; 512]);

impl FxState {
    /// The state of a fresh CPU: FCW 0x037F (after FNINIT), all x87 registers empty,
    /// MXCSR 0x1F80 (its reset value), everything else zero. What a new vCPU starts
    /// with, so it never sees another guest's registers.
    pub fn initial() -> FxState {
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        b[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        FxState(b)
    }

    /// Saves this CPU's x87/SSE registers here.
    pub fn save(&mut self) {
        // SAFETY: the buffer is 512 bytes, 16-aligned (repr), and exclusively ours.
        unsafe {
            asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack, preserves_flags))
        };
    }

    /// Loads this CPU's x87/SSE registers from here. The contents come from
    /// [`FxState::initial`] or a previous [`FxState::save`], so MXCSR has no reserved
    /// bits set and FXRSTOR cannot fault.
    pub fn restore(&self) {
        // SAFETY: as in `save`; the image is valid per the doc above (the field is
        // public for inspection, but keel writes it only through these functions).
        unsafe {
            asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, preserves_flags, readonly))
        };
    }
}

impl core::fmt::Debug for FxState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FxState")
    }
}

/// Writes CR2 (a guest's page-fault address, restored on a vCPU switch).
pub fn write_cr2(v: u64) {
    // SAFETY: CR2 is only read by page-fault handlers, which read it before anything
    // could change it again; keel's own faults are fatal.
    unsafe { asm!("mov cr2, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}
