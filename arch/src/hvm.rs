//! Hardware virtualization, seen from the rest of keel: which kind this CPU offers
//! ([`HvmSupport`]), and the one interface over a hardware-virtualized vCPU
//! ([`HvmVcpu`], implemented by `vmx::VmxVcpu` and `svm::SvmVcpu`, chosen at run
//! time through the [`Vcpu`] enum; Xen: `struct hvm_function_table`).
//!
//! # How a vCPU runs
//!
//! The kernel builds a vCPU with its second-level page-table root (EPTP / nCR3) and
//! the PVH start-of-day state, then loops: [`HvmVcpu::run`] enters the guest
//! (VMLAUNCH/VMRESUME or VMRUN) and returns an [`Exit`] that names, in vendor-neutral
//! terms, why the guest stopped. The kernel handles it (emulating CPUID, an MSR, a
//! port, a hypercall...), advances RIP through [`HvmVcpu::advance_rip`] when the
//! instruction is done (the one place RIP moves), or injects an exception, and runs
//! again.
//!
//! Instruction lengths: VMX reports them for every instruction exit; SVM does only
//! with nRIP save, which QEMU lacks. [`HvmVcpu::exit_insn_len`] returns the length when
//! the hardware gave one; otherwise the kernel decodes the bytes at RIP.
//!
//! Register state: the general-purpose registers live in [`GuestGprs`], saved and
//! restored by each backend's entry stub; RIP, RSP, RFLAGS, control registers and
//! segments live in the VMCS/VMCB. keel is built soft-float and never touches x87,
//! SSE or AVX state, so the guest's FPU state stays in the registers across exits;
//! the scheduler saves it (and, on VMX, CR2 and the SYSCALL MSRs) with
//! [`HvmVcpu::save_lazy_state`] when it switches vCPUs.
//!
//! Interrupts into the guest: the kernel injects an external interrupt (the Xen
//! event-channel upcall) with [`HvmVcpu::inject_interrupt`] when
//! [`HvmVcpu::interrupt_ready`] says the guest can take one, and otherwise asks for
//! an [`Exit::InterruptWindow`] (VMX interrupt-window exiting; SVM a V_IRQ with the
//! VINTR intercept). NMIs likewise: [`HvmVcpu::inject_nmi`] once
//! [`HvmVcpu::nmi_ready`].
//!
//! Whole states: [`HvmVcpu::load_context`] replaces everything architectural with a
//! [`Context`] (checked by `keel_x86::context` against Xen's and VM entry's rules):
//! each backend's constructor builds its PVH start state that way too, so one
//! function per vendor writes guest state. What only the CPU can decide (its CR0/CR4
//! bits, its physical-address width, PDPTEs in guest memory) the backend checks
//! before writing; a state it refuses is not loaded, and the next
//! [`HvmVcpu::run`] reports [`LoadContextError`] as [`Exit::Failed`] without
//! entering (Xen crashes the domain in these cases too).

use core::fmt;

use keel_x86::context::Context;

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

/// A guest's general-purpose registers other than RSP (and, on SVM, RAX, which the
/// VMCB holds; the backend keeps this copy in sync so callers never care): the
/// portable `keel_x86::context::Gprs`, whose `#[repr(C)]` layout the entry stubs
/// rely on (offsets 8 * index).
pub use keel_x86::context::Gprs as GuestGprs;

/// The guest's execution mode, from CR0.PE, EFER.LMA, CS.L and CS.D/B: what
/// instruction decoding and the hypercall calling convention depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    Real,
    Protected16,
    Protected32,
    /// Long mode, 16-bit compatibility code segment (CS.D = 0).
    Compat16,
    /// Long mode, 32-bit compatibility code segment.
    Compat32,
    Long64,
}

impl CpuMode {
    /// Derives the mode from the architectural bits.
    pub fn from_state(cr0_pe: bool, efer_lma: bool, cs_l: bool, cs_db: bool) -> CpuMode {
        match (cr0_pe, efer_lma, cs_l, cs_db) {
            (false, ..) => CpuMode::Real,
            (true, true, true, _) => CpuMode::Long64,
            (true, true, false, true) => CpuMode::Compat32,
            (true, true, false, false) => CpuMode::Compat16,
            (true, false, _, true) => CpuMode::Protected32,
            (true, false, _, false) => CpuMode::Protected16,
        }
    }

    /// Whether code runs with 64-bit registers and the native (64-bit) Xen ABI.
    pub fn is_64bit(self) -> bool {
        self == CpuMode::Long64
    }

    /// RIP after `len` bytes, wrapped to the code size of this mode.
    pub fn next_rip(self, rip: u64, len: u64) -> u64 {
        let next = rip.wrapping_add(len);
        match self {
            CpuMode::Long64 => next,
            CpuMode::Protected32 | CpuMode::Compat32 => next & 0xFFFF_FFFF,
            CpuMode::Real | CpuMode::Protected16 | CpuMode::Compat16 => next & 0xFFFF,
        }
    }
}

impl From<CpuMode> for keel_x86::insn::CodeMode {
    /// How the instruction decoder must read code in this mode (default operand and
    /// address size).
    fn from(m: CpuMode) -> Self {
        use keel_x86::insn::CodeMode;
        match m {
            CpuMode::Real => CodeMode::Real16,
            CpuMode::Protected16 | CpuMode::Compat16 => CodeMode::Prot16,
            CpuMode::Protected32 | CpuMode::Compat32 => CodeMode::Prot32,
            CpuMode::Long64 => CodeMode::Long64,
        }
    }
}

/// The guest's paging mode, for walking its page tables (`keel_mm::guest_walk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestPaging {
    /// CR0.PG = 0.
    Off,
    /// 2-level, 4-byte entries; `pse` = CR4.PSE.
    Bits32 {
        pse: bool,
    },
    Pae,
    Long4,
}

impl GuestPaging {
    /// From CR0, CR4 and EFER (SDM Vol. 3A §4.1.1, table 4-1).
    pub fn from_regs(cr0: u64, cr4: u64, efer: u64) -> GuestPaging {
        const CR0_PG: u64 = 1 << 31;
        const CR4_PSE: u64 = 1 << 4;
        const CR4_PAE: u64 = 1 << 5;
        const EFER_LMA: u64 = 1 << 10;
        if cr0 & CR0_PG == 0 {
            GuestPaging::Off
        } else if efer & EFER_LMA != 0 {
            GuestPaging::Long4
        } else if cr4 & CR4_PAE != 0 {
            GuestPaging::Pae
        } else {
            GuestPaging::Bits32 {
                pse: cr4 & CR4_PSE != 0,
            }
        }
    }
}

/// Direction and shape of an intercepted port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    /// OUT (true) or IN (false).
    pub write: bool,
    /// INS/OUTS.
    pub string: bool,
    pub rep: bool,
}

/// Why the guest stopped, in vendor-neutral terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Cpuid,
    Hlt,
    /// VMCALL or VMMCALL: a hypercall.
    Hypercall,
    Rdmsr,
    Wrmsr,
    Io(IoExit),
    /// An access to guest-physical memory the p2m does not map (or maps without the
    /// needed permission). `fetch`: an instruction fetch.
    NestedPageFault {
        gpa: u64,
        write: bool,
        fetch: bool,
    },
    /// A host interrupt arrived while the guest ran; the host has handled (or will
    /// handle, once it enables interrupts) it. Nothing to do for the guest.
    ExternalInterrupt,
    /// The guest can now take an external interrupt (asked for with
    /// [`HvmVcpu::set_interrupt_window_exit`]; the request is cleared).
    InterruptWindow,
    /// An exception the guest raised that keel intercepts.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    /// The guest triple-faulted (SVM: SHUTDOWN; VMX: exit reason 2).
    TripleFault,
    /// A PV guest's process executed `SYSCALL` (`compat`: from 32-bit code):
    /// for the guest kernel's syscall callback, not a hypercall.
    GuestSyscall { compat: bool },
    /// The guest executed an instruction keel does not let it use and that should
    /// raise #UD in the guest (VMX/SVM instructions, MONITOR/MWAIT, XSETBV...).
    UndefinedInstruction,
    /// The CPU refused to enter the guest, or exited for a reason keel cannot
    /// continue from. The string says which; `code` is the raw exit reason/code and
    /// `info` the qualification/EXITINFO1.
    Failed {
        why: &'static str,
        code: u64,
        info: u64,
    },
}

/// One hardware-virtualized vCPU (Xen: `struct hvm_function_table`).
pub trait HvmVcpu {
    /// Enters the guest and returns when it exits.
    fn run(&mut self) -> Exit;
    fn gprs(&self) -> &GuestGprs;
    fn gprs_mut(&mut self) -> &mut GuestGprs;
    fn rip(&self) -> u64;
    fn rsp(&self) -> u64;
    fn set_rsp(&mut self, rsp: u64);
    fn rflags(&self) -> u64;
    fn cr0(&self) -> u64;
    fn cr3(&self) -> u64;
    fn cr4(&self) -> u64;
    fn efer(&self) -> u64;
    /// Segment base of CS (for instruction fetch in non-flat modes).
    fn cs_base(&self) -> u64;
    fn mode(&self) -> CpuMode;
    fn paging(&self) -> GuestPaging {
        GuestPaging::from_regs(self.cr0(), self.cr4(), self.efer())
    }
    fn cpl(&self) -> u8;
    /// Whether the guest runs its kernel (hypercalls are for it): ring 0 for a
    /// hardware-virtualized vCPU; a PV vCPU's own mode flag (both of its modes
    /// run in ring 3).
    fn in_guest_kernel(&self) -> bool {
        self.cpl() == 0
    }
    /// The length of the instruction that caused the current exit, when the hardware
    /// reports it (VMX always for instruction exits; SVM with nRIP save).
    fn exit_insn_len(&self) -> Option<u64>;
    /// Completes the instruction that exited: RIP += `len` (wrapped to the code
    /// size), and the STI/MOV SS interrupt shadow is cleared. The one place RIP moves.
    fn advance_rip(&mut self, len: u64);
    /// Arranges for exception `vector` (with `error_code` if it has one) to be
    /// delivered to the guest on the next entry.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// Writes guest EFER (validated by the caller; the backend keeps its own bits,
    /// e.g. SVME on SVM, and derives LMA).
    fn set_efer(&mut self, efer: u64);
    /// Reads one of the MSRs the VMCS/VMCB holds for the guest (PAT, SYSENTER_*, FS/GS
    /// base, ...); `None` if this backend does not hold `msr`.
    fn read_held_msr(&self, msr: u32) -> Option<u64>;
    /// Writes such an MSR; `false` if this backend does not hold `msr`.
    fn write_held_msr(&mut self, msr: u32, value: u64) -> bool;
    /// Flushes guest TLB entries derived from the p2m (after a p2m change).
    fn flush_guest_tlb(&mut self);
    /// The instruction that issues a hypercall on this vendor, for the hypercall page.
    fn hypercall_insn(&self) -> HypercallInsnKind;
    /// Whether the guest would take an external interrupt at the next entry:
    /// RFLAGS.IF set, no STI/MOV-SS interrupt shadow, and no event already queued.
    fn interrupt_ready(&self) -> bool;
    /// Queues external interrupt `vector` for the next entry (the caller checked
    /// [`HvmVcpu::interrupt_ready`]).
    fn inject_interrupt(&mut self, vector: u8);
    /// Asks for an [`Exit::InterruptWindow`] as soon as the guest can take an
    /// interrupt (`true`), or withdraws the request.
    fn set_interrupt_window_exit(&mut self, on: bool);
    /// Whether the guest would take an NMI at the next entry: no event already
    /// queued, no STI/MOV-SS shadow, and, where the hardware shows it (VMX with
    /// "virtual NMIs"), not inside the handler of an earlier NMI. SVM without vNMI
    /// and VMX without virtual NMIs cannot see the last, so there an NMI injected
    /// while the guest still handles one nests; see each backend.
    fn nmi_ready(&self) -> bool;
    /// Queues an NMI for the next entry (the caller checked
    /// [`HvmVcpu::nmi_ready`]).
    fn inject_nmi(&mut self);
    /// Replaces the vCPU's whole architectural state with `ctx`: GPRs, RIP, RSP,
    /// RFLAGS, CR0/CR3/CR4, EFER, every segment register and GDTR/IDTR. It also
    /// resets what a new state must not inherit: a queued event, the interrupt
    /// shadow and (VMX) NMI blocking and activity state, the interrupt-window
    /// request, CR2, DR7 (0x400), and the x87/SSE state (to
    /// `FxState::initial()`); and the guest's TLB entries are flushed before it
    /// next runs. MSRs other than EFER and the FS/GS bases are kept.
    ///
    /// The x87/SSE registers themselves are not touched (they may hold another
    /// vCPU's state): the caller runs [`HvmVcpu::restore_lazy_state`] before the
    /// next entry. On VMX the VMCS becomes current on this CPU, as with any access.
    ///
    /// A `ctx` this CPU cannot run ([`LoadContextError`]) is not loaded: the vCPU
    /// keeps its old state and every [`HvmVcpu::run`] returns [`Exit::Failed`]
    /// naming the reason, without entering, until a later `load_context` succeeds.
    fn load_context(&mut self, ctx: &Context);
    /// Saves the guest registers a VM exit leaves live in the CPU (x87/SSE; on VMX
    /// also CR2, KERNEL_GS_BASE and the SYSCALL MSRs, which SVM's VMSAVE and VMCB
    /// already keep) into the vCPU, before another vCPU runs on this CPU.
    fn save_lazy_state(&mut self);
    /// Loads what [`HvmVcpu::save_lazy_state`] saved (a new vCPU: the reset state),
    /// before this vCPU runs after another one did.
    fn restore_lazy_state(&self);
    /// This CPU lets the vCPU go (another CPU may take it next): VMX VMCLEARs its
    /// VMCS here; SVM needs nothing (a VMCB is not tied to a CPU). The kernel calls
    /// it whenever it unlocks the vCPU's hardware state.
    fn release_cpu(&mut self);
}

/// Which instruction a guest uses for hypercalls (Intel VMCALL, AMD VMMCALL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallInsnKind {
    Vmcall,
    Vmmcall,
}

/// Where a vCPU starts: PVH's start of day (Xen `docs/misc/pvh.pandoc`): 32-bit
/// protected mode, paging off, flat 4 GiB code and data segments, EBX = the
/// physical address of `hvm_start_info`, all other GPRs 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhStart {
    pub entry: u32,
    pub start_info: u32,
}

impl PvhStart {
    /// The whole register state ([`Context::pvh_start`]).
    pub fn context(&self) -> Context {
        Context::pvh_start(self.entry, self.start_info)
    }
}

/// Why a backend cannot run a [`Context`] that `keel_x86::context` accepted: what
/// depends on the CPU. Each variant's doc is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadContextError {
    /// CR0 sets bits this CPU cannot run a guest with
    Cr0Unsupported { rejected: u64 },
    /// CR4 sets bits this CPU cannot run a guest with (VMXE among them: keel offers
    /// no nested virtualization)
    Cr4Unsupported { rejected: u64 },
    /// CR3 sets bits beyond this CPU's physical-address width
    Cr3BeyondPhysicalWidth { cr3: u64 },
    /// PAE paging, but the four PDPTEs at CR3 are not guest memory or set reserved
    /// bits
    BadPdptes { cr3: u64 },
}

impl LoadContextError {
    /// The message, as a static string.
    pub fn message(&self) -> &'static str {
        match self {
            LoadContextError::Cr0Unsupported { .. } => {
                "loaded state: CR0 sets bits this CPU cannot run a guest with"
            }
            LoadContextError::Cr4Unsupported { .. } => {
                "loaded state: CR4 sets bits this CPU cannot run a guest with"
            }
            LoadContextError::Cr3BeyondPhysicalWidth { .. } => {
                "loaded state: CR3 sets bits beyond this CPU's physical-address width"
            }
            LoadContextError::BadPdptes { .. } => {
                "loaded state: PAE paging, but the PDPTEs at CR3 are not guest memory or set reserved bits"
            }
        }
    }

    /// The value the message is about (the rejected bits, or CR3).
    pub fn value(&self) -> u64 {
        match *self {
            LoadContextError::Cr0Unsupported { rejected }
            | LoadContextError::Cr4Unsupported { rejected } => rejected,
            LoadContextError::Cr3BeyondPhysicalWidth { cr3 }
            | LoadContextError::BadPdptes { cr3 } => cr3,
        }
    }

    /// What [`HvmVcpu::run`] returns for a vCPU whose last load was refused.
    pub fn exit(&self) -> Exit {
        Exit::Failed {
            why: self.message(),
            code: 0,
            info: self.value(),
        }
    }
}

impl fmt::Display for LoadContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.message(), self.value())
    }
}

/// Whether `cr3` fits a CPU with `width` physical-address bits as VM entry checks
/// it: bits 63:52, and those of 51:32 at or above `width`, are 0 (SDM Vol. 3C
/// §26.3.1.1; APM Vol. 2 §15.5.1, "any MBZ bit of CR3").
pub fn check_cr3_width(cr3: u64, width: u8) -> Result<(), LoadContextError> {
    let width = u32::from(width).clamp(32, 52);
    if cr3 >> width == 0 {
        Ok(())
    } else {
        Err(LoadContextError::Cr3BeyondPhysicalWidth { cr3 })
    }
}

/// Physical frames a backend needs for one vCPU (VMCS/VMCB, bitmaps), provided by
/// the kernel's frame allocator. Frames come zeroed.
pub trait FrameSource {
    /// `count` contiguous, zeroed 4 KiB frames aligned to `count` frames (rounded
    /// up to a power of two); `None` when memory is exhausted.
    fn alloc_zeroed(&mut self, count: u64) -> Option<keel_mm::addr::Hpa>;
}

/// A vCPU of whichever kind its domain has: hardware-virtualized by this CPU's
/// backend, or PV ([`crate::pv`]). The one type the kernel holds.
pub enum Vcpu {
    Svm(crate::svm::SvmVcpu),
    Vmx(crate::vmx::VmxVcpu),
    Pv(alloc::boxed::Box<crate::pv::PvVcpu>),
}

macro_rules! delegate {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            Vcpu::Svm($v) => $e,
            Vcpu::Vmx($v) => $e,
            Vcpu::Pv($v) => $e,
        }
    };
}

impl HvmVcpu for Vcpu {
    fn run(&mut self) -> Exit {
        delegate!(self, v => v.run())
    }
    fn gprs(&self) -> &GuestGprs {
        delegate!(self, v => v.gprs())
    }
    fn gprs_mut(&mut self) -> &mut GuestGprs {
        delegate!(self, v => v.gprs_mut())
    }
    fn rip(&self) -> u64 {
        delegate!(self, v => v.rip())
    }
    fn rsp(&self) -> u64 {
        delegate!(self, v => v.rsp())
    }
    fn set_rsp(&mut self, rsp: u64) {
        delegate!(self, v => v.set_rsp(rsp))
    }
    fn rflags(&self) -> u64 {
        delegate!(self, v => v.rflags())
    }
    fn cr0(&self) -> u64 {
        delegate!(self, v => v.cr0())
    }
    fn cr3(&self) -> u64 {
        delegate!(self, v => v.cr3())
    }
    fn cr4(&self) -> u64 {
        delegate!(self, v => v.cr4())
    }
    fn efer(&self) -> u64 {
        delegate!(self, v => v.efer())
    }
    fn cs_base(&self) -> u64 {
        delegate!(self, v => v.cs_base())
    }
    fn mode(&self) -> CpuMode {
        delegate!(self, v => v.mode())
    }
    fn cpl(&self) -> u8 {
        delegate!(self, v => v.cpl())
    }
    fn in_guest_kernel(&self) -> bool {
        delegate!(self, v => v.in_guest_kernel())
    }
    fn exit_insn_len(&self) -> Option<u64> {
        delegate!(self, v => v.exit_insn_len())
    }
    fn advance_rip(&mut self, len: u64) {
        delegate!(self, v => v.advance_rip(len))
    }
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        delegate!(self, v => v.inject_exception(vector, error_code))
    }
    fn set_efer(&mut self, efer: u64) {
        delegate!(self, v => v.set_efer(efer))
    }
    fn read_held_msr(&self, msr: u32) -> Option<u64> {
        delegate!(self, v => v.read_held_msr(msr))
    }
    fn write_held_msr(&mut self, msr: u32, value: u64) -> bool {
        delegate!(self, v => v.write_held_msr(msr, value))
    }
    fn flush_guest_tlb(&mut self) {
        delegate!(self, v => v.flush_guest_tlb())
    }
    fn hypercall_insn(&self) -> HypercallInsnKind {
        delegate!(self, v => v.hypercall_insn())
    }
    fn interrupt_ready(&self) -> bool {
        delegate!(self, v => v.interrupt_ready())
    }
    fn inject_interrupt(&mut self, vector: u8) {
        delegate!(self, v => v.inject_interrupt(vector))
    }
    fn set_interrupt_window_exit(&mut self, on: bool) {
        delegate!(self, v => v.set_interrupt_window_exit(on))
    }
    fn nmi_ready(&self) -> bool {
        delegate!(self, v => v.nmi_ready())
    }
    fn inject_nmi(&mut self) {
        delegate!(self, v => v.inject_nmi())
    }
    fn load_context(&mut self, ctx: &Context) {
        delegate!(self, v => v.load_context(ctx))
    }
    fn save_lazy_state(&mut self) {
        delegate!(self, v => v.save_lazy_state())
    }
    fn restore_lazy_state(&self) {
        delegate!(self, v => v.restore_lazy_state())
    }
    fn release_cpu(&mut self) {
        delegate!(self, v => v.release_cpu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_x86::insn::CodeMode;

    #[test]
    fn modes_from_segment_state() {
        let m = |pe, lma, l, d| CpuMode::from_state(pe, lma, l, d);
        assert_eq!(m(true, true, true, false), CpuMode::Long64);
        assert_eq!(m(true, true, false, true), CpuMode::Compat32);
        assert_eq!(m(true, true, false, false), CpuMode::Compat16);
        assert_eq!(m(true, false, true, true), CpuMode::Protected32);
        assert_eq!(m(true, false, false, false), CpuMode::Protected16);
        assert_eq!(m(false, false, false, false), CpuMode::Real);
        let c = |pe, lma, l, d| CodeMode::from(m(pe, lma, l, d));
        assert_eq!(c(true, true, true, false), CodeMode::Long64);
        assert_eq!(c(true, true, false, true), CodeMode::Prot32);
        assert_eq!(c(true, true, false, false), CodeMode::Prot16);
        assert_eq!(c(true, false, true, true), CodeMode::Prot32);
        assert_eq!(c(false, false, false, false), CodeMode::Real16);
        assert!(CpuMode::Long64.is_64bit() && !CpuMode::Compat32.is_64bit());
    }

    #[test]
    fn cr3_width() {
        assert_eq!(check_cr3_width(0xFFFF_F000, 36), Ok(()));
        assert_eq!(check_cr3_width(0xF_FFFF_F000, 36), Ok(()));
        assert!(check_cr3_width(0x10_0000_0000, 36).is_err());
        assert_eq!(check_cr3_width(0x10_0000_0000, 39), Ok(()));
        // Bits below 32 are never checked, bits 63:52 always are.
        assert_eq!(check_cr3_width(0xFFFF_FFFF, 20), Ok(()));
        assert_eq!(
            check_cr3_width(1 << 52, 64),
            Err(LoadContextError::Cr3BeyondPhysicalWidth { cr3: 1 << 52 })
        );
    }

    #[test]
    fn load_errors_become_failed_exits() {
        let e = LoadContextError::BadPdptes { cr3: 0x1000 };
        assert_eq!(
            e.exit(),
            Exit::Failed {
                why: e.message(),
                code: 0,
                info: 0x1000
            }
        );
        assert!(e.to_string().ends_with("(0x1000)"));
    }

    #[test]
    fn gprs_from_a_context() {
        let c = Context::pvh_start(0x10_0000, 0x5000);
        let g = *c.gprs();
        assert_eq!(
            g,
            GuestGprs {
                rbx: 0x5000,
                ..GuestGprs::default()
            }
        );
        assert_eq!(g.by_encoding(3), Some(0x5000));
        assert_eq!(
            PvhStart {
                entry: 0x10_0000,
                start_info: 0x5000
            }
            .context(),
            c
        );
    }

    #[test]
    fn rip_wraps_to_the_code_size() {
        assert_eq!(CpuMode::Protected32.next_rip(0x10_0000, 3), 0x10_0003);
        assert_eq!(CpuMode::Long64.next_rip(0xFFFF_FFFF, 2), 0x1_0000_0001);
        assert_eq!(CpuMode::Compat32.next_rip(0xFFFF_FFFE, 1), 0xFFFF_FFFF);
        assert_eq!(CpuMode::Long64.next_rip(u64::MAX, 2), 1);
        assert_eq!(CpuMode::Protected32.next_rip(0xFFFF_FFFF, 2), 1);
        assert_eq!(CpuMode::Compat16.next_rip(0xFFFF, 3), 2);
        assert_eq!(CpuMode::Real.next_rip(0x1_FFFF, 1), 0);
    }
}
