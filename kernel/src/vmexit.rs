//! The run loop of a hardware-virtualized vCPU and the handling of its exits:
//! CPUID (keel's policy plus Xen's leaves), MSRs (the hypercall page, EFER, the
//! architectural ones; anything else is #GP), ports and MMIO nobody backs (reads all
//! ones, writes dropped), HLT, hypercalls (through `keel_hypercall::dispatch`),
//! and the states keel cannot continue from (the domain crashes, with the reason).
//!
//! Instruction lengths come from the hardware when it reports them and otherwise from
//! decoding the guest's bytes at RIP (QEMU's SVM has no nRIP save). Either way the
//! decoded instruction must be the one the exit names, or the domain crashes: a guest
//! that rewrote its code under us does not get RIP moved to a wrong place.
//!
//! Every path that moves RIP goes through `HvmVcpu::advance_rip`.
//!
//! # Locking
//! The exiting vCPU's hardware state is this pCPU's for the whole exit. Handlers
//! take the vCPU's `st` (APIC, wait state) and the domain's `mem` (p2m look-ups,
//! guest copies) briefly, `st` before `mem`; blocking decisions (HLT, block,
//! poll) check for events and set the wait state under one hold of `st`.

use alloc::format;
use alloc::string::String;

use keel_arch::hvm::{Exit, HvmVcpu, HypercallInsnKind, IoExit};
use keel_hypercall::abi::errno::Errno;
use keel_hypercall::dispatch::{Action, GuestWidth, HypercallArgs, ShutdownReason};
use keel_x86::insn::{self, CodeMode, Insn, InsnKind};

use alloc::sync::Arc;

use crate::domain::{Domain, GuestType, MmioDevice};
pub use crate::domains::DomainEnd;
use crate::events::{SharedWords, Wakes};
use crate::paging::PagingMode as _;
use crate::vcpu::{ArchVcpu, Vcpu, Wait};

/// One exit's context: the vCPU that exited, its hardware state (held by this
/// pCPU), its domain, and where the vCPUs the handling makes runnable go.
pub struct X<'a> {
    pub d: &'a Arc<Domain>,
    pub v: &'a Vcpu,
    pub arch: &'a mut ArchVcpu,
    pub wakes: &'a mut Wakes,
    /// Set when the exit took the domain's last vCPU down (an INIT IPI): the
    /// domain powers off once the exit is done.
    pub last_down: bool,
}

impl X<'_> {
    /// Copies from the vCPU's guest-virtual `gva`.
    pub fn copy_from_guest(
        &self,
        gva: u64,
        buf: &mut [u8],
    ) -> Result<(), keel_mm::guest_mem::CopyError> {
        self.d.copy_from_guest(&self.arch.walk_ctx(), gva, buf)
    }
}

/// What the run loop does after an exit was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Enter the guest again.
    Continue,
    /// A host interrupt (keel's timer) ended the entry: let it in, then see
    /// whether the slice is over.
    Interrupted,
    /// The guest gave up the CPU (`SCHEDOP_yield`).
    Yield,
    /// The guest may be waiting (`SCHEDOP_block`, `SCHEDOP_poll`, HLT): `d.wait`
    /// says whether it is.
    Block,
}

/// What a handler decided.
type Handled = Result<(), DomainEnd>;

fn crash(why: String) -> Handled {
    Err(DomainEnd::Crashed(why))
}

/// Handles one exit of `v`, a vCPU of `d`.
pub fn handle(
    d: &Arc<Domain>,
    v: &Vcpu,
    arch: &mut ArchVcpu,
    exit: Exit,
    wakes: &mut Wakes,
) -> Result<Flow, DomainEnd> {
    let x = &mut X {
        d,
        v,
        arch,
        wakes,
        last_down: false,
    };
    let flow = handle_exit(x, exit);
    if x.last_down && flow.is_ok() {
        return Err(all_down(x));
    }
    flow
}

/// The domain's last vCPU went down: Xen powers the domain off.
fn all_down(d: &X<'_>) -> DomainEnd {
    log::info!(
        "d{}: all vCPUs down (last: vCPU {} at rip {:#x}): powering off",
        d.d.id,
        d.v.id,
        d.arch.rip()
    );
    DomainEnd::Shutdown(ShutdownReason::Poweroff)
}

fn handle_exit(d: &mut X<'_>, exit: Exit) -> Result<Flow, DomainEnd> {
    let done = |h: Handled| h.map(|()| Flow::Continue);
    match exit {
        Exit::Cpuid => done(cpuid(d)),
        Exit::Hypercall => hypercall(d),
        Exit::Rdmsr => done(rdmsr(d)),
        Exit::Wrmsr => done(wrmsr(d)),
        Exit::Io(io) => done(port_io(d, io)),
        Exit::NestedPageFault { gpa, write, fetch } => done(npf(d, gpa, write, fetch)),
        Exit::Hlt => hlt(d),
        Exit::ExternalInterrupt => Ok(Flow::Interrupted),
        // The upcall goes in at the next entry (events::prepare_entry).
        Exit::InterruptWindow => Ok(Flow::Continue),
        Exit::Exception { vector, error_code } if d.d.guest_type == GuestType::Pv => {
            done(crate::pv::exception(d.d, d.v, d.arch, vector, error_code).or_else(crash))
        }
        Exit::GuestSyscall { compat } => {
            done(crate::pv::guest_syscall(d.d, d.v, d.arch, compat).or_else(crash))
        }
        Exit::Exception { vector, error_code } => done(crash(format!(
            "unexpected intercepted exception {vector} (error code {error_code:?}) at rip {:#x}",
            d.arch.rip()
        ))),
        Exit::TripleFault => done(crash(format!("triple fault at rip {:#x}", d.arch.rip()))),
        Exit::UndefinedInstruction => {
            d.arch.inject_exception(6, None);
            Ok(Flow::Continue)
        }
        Exit::Failed { why, code, info } => done(crash(format!(
            "{why} (exit code {code:#x}, info {info:#x}) at rip {:#x}",
            d.arch.rip()
        ))),
    }
}

/// Fetches and decodes the instruction at the guest's RIP.
fn fetch_insn(d: &X<'_>) -> Result<Insn, String> {
    let v = &*d.arch;
    let mode = v.mode();
    let mut la = v.cs_base().wrapping_add(v.rip());
    if !mode.is_64bit() {
        la &= 0xFFFF_FFFF;
    }
    let mut bytes = [0u8; 15];
    // Up to the end of the page first: the rest may be unmapped, and short
    // instructions never need it.
    let to_page_end = (4096 - (la & 0xFFF)).min(15) as usize;
    d.copy_from_guest(la, &mut bytes[..to_page_end])
        .map_err(|e| format!("cannot fetch the instruction at {la:#x}: {e}"))?;
    let mut have = to_page_end;
    if have < 15
        && d.copy_from_guest(la + have as u64, &mut bytes[have..])
            .is_ok()
    {
        have = 15;
    }
    // The instructions exits name most often, without the general decoder (it
    // would answer the same).
    if let Some(i) = insn::decode_plain(&bytes[..have]) {
        return Ok(i);
    }
    insn::decode(&bytes[..have], CodeMode::from(mode)).map_err(|e| {
        format!(
            "cannot decode the instruction at {la:#x} ({:02x?}): {e:?}",
            &bytes[..have]
        )
    })
}

/// Completes the instruction that exited, which must be `expect`.
fn complete(d: &mut X<'_>, expect: fn(&InsnKind) -> bool, what: &str) -> Handled {
    let len = match d.arch.exit_insn_len() {
        Some(l) => l,
        None => match fetch_insn(d) {
            Ok(i) if expect(&i.kind) => u64::from(i.len),
            Ok(i) => {
                return crash(format!(
                    "{what} exit, but the instruction at rip {:#x} is {:?}",
                    d.arch.rip(),
                    i.kind
                ));
            }
            Err(e) => return crash(format!("{what} exit: {e}")),
        },
    };
    d.arch.advance_rip(len);
    Ok(())
}

fn cpuid(d: &mut X<'_>) -> Handled {
    guest_cpuid(d.d, d.v, d.arch);
    complete(d, |k| matches!(k, InsnKind::Cpuid), "CPUID")
}

/// CPUID with the leaf and subleaf in the vCPU's EAX and ECX, answered by
/// keel's policy (and Xen's leaves) into its EAX..EDX: a VM exit's, or a PV
/// guest's through the forced-emulation prefix.
pub fn guest_cpuid(d: &Domain, v: &Vcpu, arch: &mut ArchVcpu) {
    use keel_x86::cpuid_policy::{CpuidResult, GuestCpuidCtx, guest_cpuid};
    let g = arch.gprs();
    let (leaf, sub) = (g.rax as u32, g.rcx as u32);
    let ctx = GuestCpuidCtx {
        vendor: crate::host_vendor(),
        domid: d.id,
        vcpu_id: v.id,
        xen_major: crate::XEN_MAJOR,
        xen_minor: crate::XEN_MINOR,
        hypercall_msr: HYPERCALL_MSR,
        tsc_khz: crate::tsc_khz(),
        guest_cr4_osxsave: arch.cr4() & (1 << 18) != 0,
    };
    let host = |l: u32, s: u32| {
        let (eax, ebx, ecx, edx) = keel_arch::cpu::cpuid(l, s);
        CpuidResult { eax, ebx, ecx, edx }
    };
    let r = guest_cpuid(leaf, sub, &ctx, &host);
    let g = arch.gprs_mut();
    g.rax = u64::from(r.eax);
    g.rbx = u64::from(r.ebx);
    g.rcx = u64::from(r.ecx);
    g.rdx = u64::from(r.edx);
}

/// The MSR a guest writes its hypercall page's address to (CPUID 0x40000002 EBX).
pub const HYPERCALL_MSR: u32 = 0x4000_0000;

const MSR_TSC: u32 = 0x10;
/// The x2APIC register MSRs (SDM Vol. 3A §11.12.1.2: 0x800..=0xBFF are
/// reserved for it; the registers are below 0x900).
const X2APIC_MSRS_FIRST: u32 = 0x800;
const X2APIC_MSRS_LAST: u32 = 0xBFF;
const MSR_EFER: u32 = 0xC000_0080;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// Valid memory types in a PAT entry (SDM Vol. 3A §13.12.2): UC, WC, WT, WP, WB, UC-.
fn pat_valid(v: u64) -> bool {
    v.to_le_bytes()
        .iter()
        .all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

fn gp(d: &mut X<'_>) -> Handled {
    d.arch.inject_exception(13, Some(0));
    Ok(())
}

fn rdmsr(d: &mut X<'_>) -> Handled {
    let msr = d.arch.gprs().rcx as u32;
    let value = match msr {
        MSR_TSC => Some(keel_arch::cpu::rdtsc()),
        // MTRRcap: no variable ranges, no fixed ranges, no WC: guests leave MTRRs be.
        0xFE => Some(0),
        // MTRRdefType: enabled, default WB.
        0x2FF => Some((1 << 11) | 6),
        // PLATFORM_ID, BIOS_SIGN_ID (microcode revision), MCG_CAP, MCG_STATUS.
        0x17 | 0x8B | 0x179 | 0x17A => Some(0),
        // AMD's interrupt-pending message register: no C1E (Linux reads it on
        // family 0xF parts to decide whether the APIC timer stops in C1E).
        0xC001_0055 => Some(0),
        // MISC_ENABLE: fast strings (bit 0), as hardware reports after reset.
        0x1A0 => Some(1),
        keel_devices::vlapic::MSR_APIC_BASE => Some(d.v.st.lock().lapic.apic_base_msr()),
        // x2APIC registers (a refused access is #GP, as on hardware).
        X2APIC_MSRS_FIRST..=X2APIC_MSRS_LAST => d
            .v
            .st
            .lock()
            .lapic
            .read_msr(msr, crate::clock::now())
            .ok(),
        _ => d.arch.read_held_msr(msr),
    };
    let Some(v) = value else {
        return gp(d);
    };
    let g = d.arch.gprs_mut();
    g.rax = v & 0xFFFF_FFFF;
    g.rdx = v >> 32;
    complete(d, |k| matches!(k, InsnKind::Rdmsr), "RDMSR")
}

fn wrmsr(d: &mut X<'_>) -> Handled {
    let g = d.arch.gprs();
    let msr = g.rcx as u32;
    let value = (g.rdx << 32) | (g.rax & 0xFFFF_FFFF);
    match msr {
        HYPERCALL_MSR => {
            if let Err(why) = install_hypercall_page(d, value) {
                log::warn!("d{}: hypercall page at {value:#x} refused: {why}", d.d.id);
                return gp(d);
            }
        }
        MSR_EFER => {
            if value & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE) != 0 {
                return gp(d);
            }
            // LME may not change while paging is on (SDM Vol. 3A §10.8.5).
            let paging = d.arch.cr0() & (1 << 31) != 0;
            if paging && (value ^ d.arch.efer()) & EFER_LME != 0 {
                return gp(d);
            }
            d.arch.set_efer(value);
        }
        0x277 if !pat_valid(value) => return gp(d),
        keel_devices::vlapic::MSR_APIC_BASE => {
            let x2apic = value & keel_devices::vlapic::APIC_BASE_EXTD != 0;
            if x2apic && !keel_x86::cpuid_policy::X2APIC_OFFERED {
                return gp(d);
            }
            if let Err(e) = d.v.st.lock().lapic.set_apic_base_msr(value) {
                log::debug!("d{}: APIC base {value:#x} refused: {e}", d.d.id);
                return gp(d);
            }
        }
        X2APIC_MSRS_FIRST..=X2APIC_MSRS_LAST => {
            // It may arm the APIC timer.
            crate::vcpu::deadlines_changed();
            let r = d
                .v
                .st
                .lock()
                .lapic
                .write_msr(msr, value, crate::clock::now());
            match r {
                Ok(effect) => {
                    complete(d, |k| matches!(k, InsnKind::Wrmsr), "WRMSR")?;
                    lapic_effect(d, effect);
                    return Ok(());
                }
                Err(e) => {
                    log::debug!("d{}: x2APIC write {msr:#x} = {value:#x} refused: {e}", d.d.id);
                    return gp(d);
                }
            }
        }
        // Microcode update trigger, MTRRdefType, MISC_ENABLE, MCG_STATUS: accepted and
        // ignored (there is nothing to update or re-type under a p2m keel owns).
        0x79 | 0x8B | 0x2FF | 0x1A0 | 0x17A => {}
        _ => {
            if !d.arch.write_held_msr(msr, value) {
                return gp(d);
            }
        }
    }
    complete(d, |k| matches!(k, InsnKind::Wrmsr), "WRMSR")
}

/// Writes the hypercall page at the guest-physical page `value` names (Xen: the low
/// 12 bits select the page, and there is one).
fn install_hypercall_page(d: &mut X<'_>, value: u64) -> Result<(), String> {
    if value & 0xFFF != 0 {
        return Err(String::from(
            "page index out of range (keel has one hypercall page)",
        ));
    }
    let mut page = [0u8; 4096];
    let insn = match d.arch.hypercall_insn() {
        HypercallInsnKind::Vmcall => keel_x86::hypercall_page::HypercallInsn::Vmcall,
        HypercallInsnKind::Vmmcall => keel_x86::hypercall_page::HypercallInsn::Vmmcall,
    };
    keel_x86::hypercall_page::fill_hypercall_page(&mut page, insn);
    d.d.write_gpa(value, &page).map_err(|e| format!("{e}"))
}

fn port_io(d: &mut X<'_>, io: IoExit) -> Handled {
    if io.string {
        return crash(format!(
            "string I/O (ins/outs) to unbacked port {:#x} is not emulated",
            io.port
        ));
    }
    if !io.write {
        // Nothing backs the port: reads float high, as on an empty ISA bus. IN
        // writes AL/AX/EAX with the usual register-width rules.
        let g = d.arch.gprs_mut();
        g.rax = insn::Reg::RAX.write(g.rax, u64::MAX, io.size);
    }
    complete(d, |_| true, "I/O")
}

/// Writes `value` (`size` bytes) to register `reg` with x86's rules
/// (`insn::Reg::write`); RSP lives in the VMCS/VMCB, the others in `GuestGprs`.
fn write_reg(d: &mut X<'_>, reg: insn::Reg, size: u8, value: u64) -> Result<(), String> {
    let n = reg.index();
    if n == 4 {
        let new = reg.write(d.arch.rsp(), value, size);
        d.arch.set_rsp(new);
        return Ok(());
    }
    match d.arch.gprs_mut().by_encoding_mut(n) {
        Some(r) => {
            *r = reg.write(*r, value, size);
            Ok(())
        }
        None => Err(format!("bad register {n}")),
    }
}

/// Emulates the MOV at RIP that touched MMIO at `gpa`; `what` names the target
/// in crash reasons. A load gets `read(d, size)`'s bytes, extended as the
/// instruction says; a store hands `write(d, size, value)` the value stored.
/// Any other instruction, or an error from either, crashes the domain.
fn emulate_mmio(
    d: &mut X<'_>,
    gpa: u64,
    what: &str,
    read: impl FnOnce(&mut X<'_>, u8) -> Result<u64, String>,
    write: impl FnOnce(&mut X<'_>, u8, u64) -> Result<(), String>,
) -> Handled {
    let i = match fetch_insn(d) {
        Ok(i) => i,
        Err(e) => return crash(format!("MMIO to {what} {gpa:#x}: {e}")),
    };
    match i.kind {
        InsnKind::Load {
            dst,
            dst_size,
            extend,
            size,
        } => {
            let loaded = read(d, size)
                .and_then(|raw| write_reg(d, dst, dst_size, extend_load(raw, size, extend)));
            if let Err(e) = loaded {
                return crash(format!("MMIO read from {what} {gpa:#x}: {e}"));
            }
        }
        InsnKind::Store { size, src } => {
            let value = match src {
                insn::Operand::Imm(v) => v,
                insn::Operand::Reg(r, rsize) => read_reg(d, r, rsize),
            };
            if let Err(e) = write(d, size, value) {
                return crash(format!("MMIO write to {what} {gpa:#x}: {e}"));
            }
        }
        other => {
            return crash(format!(
                "MMIO to {what} {gpa:#x} by an instruction keel does not emulate ({other:?}) at rip {:#x}",
                d.arch.rip()
            ));
        }
    }
    d.arch.advance_rip(u64::from(i.len));
    Ok(())
}

/// The `size`-byte value `raw` as a MOVSX sign-extends it; other loads take it as
/// it is ([`Reg::write`](insn::Reg::write) truncates or zero-extends).
fn extend_load(raw: u64, size: u8, extend: insn::Extend) -> u64 {
    match extend {
        insn::Extend::Sign if size < 8 => {
            let shift = 64 - u32::from(size) * 8;
            (((raw << shift) as i64) >> shift) as u64
        }
        _ => raw,
    }
}

/// Reads `size` bytes of register `reg` (RSP lives in the VMCS/VMCB).
fn read_reg(d: &X<'_>, reg: insn::Reg, size: u8) -> u64 {
    let n = reg.index();
    let full = if n == 4 {
        d.arch.rsp()
    } else {
        d.arch.gprs().by_encoding(n).unwrap_or(0)
    };
    reg.read(full, size)
}

/// A write to the local APIC page, and what it sets off: an IPI goes to every
/// vCPU of the domain it targets (`online::deliver_ipi`).
fn lapic_write(d: &mut X<'_>, offset: u32, size: u8, value: u64) -> Result<(), String> {
    // It may arm the APIC timer.
    crate::vcpu::deadlines_changed();
    let effect =
        d.v.st
            .lock()
            .lapic
            .write_mmio(offset, usize::from(size), value, crate::clock::now())
            .map_err(|e| format!("{e}"))?;
    lapic_effect(d, effect);
    Ok(())
}

/// What a local APIC write (MMIO or x2APIC MSR) sets off: an IPI goes to every
/// vCPU of the domain it targets (`online::deliver_ipi`).
fn lapic_effect(d: &mut X<'_>, effect: keel_devices::vlapic::WriteEffect) {
    if let keel_devices::vlapic::WriteEffect::Ipi(ipi) = effect
        && crate::online::deliver_ipi(d.d, d.v, &ipi, d.wakes) == crate::online::Down::LastVcpu
    {
        d.last_down = true;
    }
}

fn npf(d: &mut X<'_>, gpa: u64, write: bool, fetch: bool) -> Handled {
    // The domain's emulated devices, by range (devices::bus).
    let device = d.d.mmio.lookup(gpa).map(|(base, dev)| (base, *dev));
    if let (false, Some((base, MmioDevice::LocalApic))) = (fetch, device) {
        // The vCPU's own local APIC (each vCPU sees its own at the one address).
        let offset = (gpa - base) as u32;
        return emulate_mmio(
            d,
            gpa,
            "the local APIC page at",
            |d, size| {
                d.v.st
                    .lock()
                    .lapic
                    .read_mmio(offset, usize::from(size), crate::clock::now())
                    .map_err(|e| format!("{e}"))
            },
            |d, size, value| lapic_write(d, offset, size, value),
        );
    }
    let gfn = keel_mm::addr::Gfn::new(gpa >> 12);
    if gfn.and_then(|g| d.d.mem.lock().p2m.translate(g)).is_some() {
        return crash(format!(
            "nested page fault on RAM at gpa {gpa:#x} (write: {write}, fetch: {fetch}): p2m permissions"
        ));
    }
    if fetch {
        return crash(format!(
            "instruction fetch from unbacked guest-physical {gpa:#x}"
        ));
    }
    // Nothing backs it: reads float high, writes are dropped.
    emulate_mmio(
        d,
        gpa,
        "unbacked",
        |_, size| {
            Ok(if size >= 8 {
                u64::MAX
            } else {
                (1u64 << (size * 8)) - 1
            })
        },
        |_, _, _| Ok(()),
    )
}

fn hlt(d: &mut X<'_>) -> Result<Flow, DomainEnd> {
    const RFLAGS_IF: u64 = 1 << 9;
    complete(d, |k| matches!(k, InsnKind::Hlt), "HLT")?;
    if d.arch.rflags() & RFLAGS_IF == 0 {
        // Xen's hvm_hlt: a vCPU that halts with interrupts off goes down (Linux's
        // CPU offlining ends so), and a domain whose vCPUs are all down is
        // powered off: this is how a guest with no ACPI power-off ends (Linux's
        // `poweroff` falls back to halting with interrupts disabled).
        return match crate::online::down(d.d, d.v) {
            crate::online::Down::Done => {
                log::debug!("d{}: vCPU {} halted with interrupts off: down", d.d.id, d.v.id);
                Ok(Flow::Block)
            }
            crate::online::Down::LastVcpu => Err(all_down(d)),
        };
    }
    // Xen's hvm_hlt: block until an event is pending for the vCPU (its upcall or
    // a local APIC interrupt).
    // Checked and set under the vCPU's lock, which event delivery takes too: no
    // wake-up is lost in between.
    let mut st = d.v.st.lock();
    if !SharedWords::of(d.d, &st).has_upcall() && st.lapic.pending().is_none() && !st.nmi_pending
    {
        st.wait = Wait::Blocked;
    }
    Ok(Flow::Block)
}

fn hypercall(d: &mut X<'_>) -> Result<Flow, DomainEnd> {
    let mode = d.arch.mode();
    let g = *d.arch.gprs();
    let call = if mode.is_64bit() {
        HypercallArgs {
            nr: g.rax,
            args: [g.rdi, g.rsi, g.rdx, g.r10, g.r8, g.r9],
            width: GuestWidth::Bits64,
        }
    } else {
        let lo = |r: u64| r & 0xFFFF_FFFF;
        HypercallArgs {
            nr: lo(g.rax),
            args: [
                lo(g.rbx),
                lo(g.rcx),
                lo(g.rdx),
                lo(g.rsi),
                lo(g.rdi),
                lo(g.rbp),
            ],
            width: GuestWidth::Bits32,
        }
    };
    // Hypercalls are for the guest kernel: PVH's is ring 0 (else -EPERM, as
    // Xen's hvm_hypercall); a PV guest's is its kernel mode (a SYSCALL from its
    // user mode never arrives here as a hypercall).
    let outcome = if !d.arch.in_guest_kernel() {
        keel_hypercall::dispatch::Outcome {
            ret: Errno::EPERM.neg(),
            action: Action::Continue,
        }
    } else {
        let mut ctx = crate::hypercalls::Ctx {
            d: d.d,
            v: d.v,
            arch: &mut *d.arch,
            wakes: &mut *d.wakes,
            last_down: false,
            crash: None,
        };
        let outcome = keel_hypercall::dispatch::dispatch(&mut ctx, &call);
        d.last_down |= ctx.last_down;
        if let Some(why) = ctx.crash {
            return Err(DomainEnd::Crashed(why));
        }
        outcome
    };
    if let Action::Preempted { args } = outcome.action {
        // A continuation (Xen: hypercall_create_continuation): RIP stays on the
        // VMCALL, RAX keeps the number, the argument registers get the remaining
        // work, and the guest re-issues the call when it next runs.
        let g = d.arch.gprs_mut();
        if mode.is_64bit() {
            [g.rdi, g.rsi, g.rdx, g.r10, g.r8, g.r9] = args;
        } else {
            [g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rbp] = args.map(|a| a & 0xFFFF_FFFF);
        }
        return Ok(Flow::Continue);
    }
    let ret = if mode.is_64bit() {
        outcome.ret as u64
    } else {
        outcome.ret as u64 & 0xFFFF_FFFF
    };
    d.arch.gprs_mut().rax = ret;
    complete(
        d,
        |k| matches!(k, InsnKind::Vmcall | InsnKind::Vmmcall),
        "hypercall",
    )?;
    match outcome.action {
        Action::Shutdown(r) => Err(DomainEnd::Shutdown(r)),
        Action::Yield => Ok(Flow::Yield),
        Action::Block => {
            // Xen's vcpu_block_enable_events: unmask, then block unless an event is
            // already pending.
            let mut st = d.v.st.lock();
            let words = SharedWords::of(d.d, &st);
            words.unmask_upcalls();
            if !words.has_upcall() {
                st.wait = Wait::Blocked;
            }
            Ok(Flow::Block)
        }
        // sched_poll found nothing pending (hypercalls.rs): wait for the port
        // (any port if none was named), an upcall, or the timeout.
        Action::Poll { port, timeout } => {
            // Checked again under the event table's lock and then the vCPU's
            // (the lock order), which event delivery holds too: an event sent
            // from another pCPU since `sched_poll` looked is either seen here
            // or finds the vCPU polling and wakes it.
            let mut t = d.d.evtchn.lock();
            let mut st = d.v.st.lock();
            let words = SharedWords::of(d.d, &st);
            let pending = |p| match t.fifo_mut() {
                Some(f) => f.is_pending(p),
                None => keel_evtchn::two_level::is_pending(&words, p),
            };
            let ready = (words.has_upcall() && !words.upcalls_masked()) || port.is_some_and(pending);
            if ready {
                return Ok(Flow::Continue);
            }
            st.wait = Wait::Polling {
                ports: port.into_iter().collect(),
                deadline: (timeout != 0).then_some(timeout),
            };
            drop(st);
            drop(t);
            if timeout != 0 {
                crate::vcpu::deadlines_changed();
            }
            Ok(Flow::Block)
        }
        Action::Continue | Action::Preempted { .. } => Ok(Flow::Continue),
    }
}
