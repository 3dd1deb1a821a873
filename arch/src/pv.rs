//! PV vCPUs (docs/pv.md, step 2): a guest kernel in ring 3 on keel's own CPU, on
//! page tables the guest built and keel's PV MMU (`mm::pv`) validated, behind the
//! same interface as a VMX or SVM vCPU ([`crate::hvm::HvmVcpu`]), so the kernel's
//! run loop does not change.
//!
//! # Entering the guest
//! [`PvVcpu::run`] writes the guest's registers as one [`TrapFrame`] at the top of
//! this CPU's PV entry stack (`TSS.RSP0`, [`crate::gdt`]), loads the guest's L4
//! into CR3 (keel's own L4 slots 256..=271 are in it, supervisor-only, so keel's
//! code, stacks and direct map stay mapped), writes its FS base, and its active GS
//! base into `KERNEL_GS_BASE`, and calls `keel_pv_enter`: that saves keel's
//! callee-saved registers and stack pointer in this CPU's [`PerCpu`], pops the
//! frame, executes `SWAPGS` (the guest's GS base becomes active, keel's per-CPU
//! pointer waits in `KERNEL_GS_BASE`) and `IRETQ` to CPL 3. RFLAGS.IF is always
//! set in the guest (`keel_x86::pv::exit_rflags`): its virtual IF is the upcall
//! mask, and keel's timer and IPIs interrupt it.
//!
//! # Leaving it
//! - An interrupt or exception: the CPU switches to `TSS.RSP0` and pushes the
//!   hardware frame there; the IDT stub pushes the error code and vector, and
//!   `trap_common` (`crate::traps`), seeing CPL 3 in the saved CS, jumps to
//!   `keel_pv_trap_entry`: `SWAPGS`, push the registers (the same [`TrapFrame`],
//!   in the same place as on entry), and return to keel's stack.
//! - `SYSCALL` (`LSTAR`, and `CSTAR` from 32-bit code): `SWAPGS`, switch to the
//!   entry stack, and build the same frame by hand (RIP from RCX, RFLAGS from
//!   R11, vector [`SYSCALL64`]/[`SYSCALL32`]). `FMASK` clears IF, TF, DF, AC and
//!   NT, so nothing interrupts the few instructions before the stack switch.
//! - A fault of the entry's own `IRETQ` (a frame the guest made bad): it arrives
//!   in ring 0 with the guest's GS base active; `trap_common` recognises
//!   `keel_pv_iret` as the faulting RIP and sends it to `keel_pv_iret_fault`,
//!   which swaps GS back and returns the vector to [`PvVcpu::run`]; it becomes
//!   the guest's exception (error code 0), as Xen's fixup makes it.
//! - NMI, #DF and #MC arrive on their IST stacks; from CPL 3 the stub swaps GS
//!   and they are keel's as anywhere else (fatal). An NMI in ring 0 between the
//!   entry's `SWAPGS` and its `IRETQ` would find the guest's GS base: keel does
//!   not use NMIs (an NMI is fatal anyway), so the paranoid entry Linux uses is
//!   not built yet.
//!
//! Interrupts that ended the guest are handled by their handlers on keel's stack
//! before [`PvVcpu::run`] returns [`Exit::ExternalInterrupt`]; a `SYSCALL` from
//! guest kernel mode is [`Exit::Hypercall`] (RIP reported on the `SYSCALL`, as
//! a VMCALL exit reports it, so the dispatcher's continuation and completion
//! rules are the HVM ones); an exception is [`Exit::Exception`], CR2 kept for a
//! page fault.
//!
//! # TLBs
//! The guest's user mappings are global (`mm::pv` sets G on them, as Xen does,
//! so they survive the kernel/user L4 switch): before a different PV vCPU runs
//! on a CPU, when this one ran on another CPU since it last ran here, or when a
//! flush was requested, [`PvVcpu::run`] flushes global entries too. keel's own CR3 is reloaded after every exit, so no CPU keeps a
//! guest's L4 loaded once its vCPU has stopped.
//!
//! # What is not here yet
//! Bouncing exceptions and events to the guest (`set_trap_table`, callbacks),
//! `iret` to user mode, the guest's own GDT and LDT, its segment selectors
//! (kept at what the builder gave), and emulation of privileged instructions:
//! docs/pv.md, steps 3 and 4. Until then an exception ends the domain, with
//! the reason.
//!
//! # Locking
//! None here: a `PvVcpu` is held by the pCPU that runs it (the kernel's `arch`
//! lock), and the per-CPU fields it uses are this CPU's own.

use core::sync::atomic::{AtomicU64, Ordering};

use keel_x86::context::Context;
use keel_x86::pv::bounce::{Bounced, GuestRegs};
use keel_x86::pv::iret::Iret;
use keel_x86::pv::trap::TrapTable;
use keel_x86::pv::{self as xpv, GuestMode, exit_rflags};

use crate::cpu::FxState;
use crate::hvm::{CpuMode, Exit, GuestGprs, HvmVcpu, HypercallInsnKind};
use crate::msr;
use crate::percpu::PerCpu;
use crate::traps::TrapFrame;

/// The vector the `syscall` entry records for a 64-bit `SYSCALL`.
pub const SYSCALL64: u64 = 0x100;
/// The vector it records for a `SYSCALL` from 32-bit (compatibility) code.
pub const SYSCALL32: u64 = 0x101;

/// What `keel_pv_enter` returns for a fault of its own `IRETQ`: this bit, or'd
/// with the vector.
const IRET_FAULT: u64 = 0x200;

/// RFLAGS bits `SYSCALL` clears (Xen's `XEN_SYSCALL_MASK`): IF (nothing
/// interrupts the entry before its stack switch), TF, DF, AC, NT, RF, VM.
const SYSCALL_MASK: u64 =
    (1 << 9) | (1 << 8) | (1 << 10) | (1 << 18) | (1 << 14) | (1 << 16) | (1 << 17);

/// Serial numbers of PV vCPUs (never 0): which one ran last on a CPU.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// GDT generations (never 0): which copy of a guest GDT a CPU's GDT holds.
static NEXT_GDT_GEN: AtomicU64 = AtomicU64::new(1);

/// CR4.SMEP and CR4.SMAP, as [`init_cpu`] set them on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    pub smep: bool,
    pub smap: bool,
}

/// Sets this CPU up for PV guests: SMEP and SMAP on where the CPU has them
/// (keel then never executes, and never silently reads or writes, a page a
/// ring-3 guest can reach; it never does on purpose: guest memory is reached
/// through the direct map, after a walk of the guest's tables), `SYSCALL`
/// enabled (EFER.SCE), its selectors (`STAR`: `SYSCALL` loads keel's
/// 0xe008/0xe010, a `SYSRET` would load the flat ring-3 0xe033/0xe02b as
/// Xen's `STAR` has it) and entry points. Call on every CPU after
/// [`crate::gdt`] and [`crate::traps`] are loaded, before any vCPU is created
/// (VMX copies the host CR4 into each VMCS).
#[cfg(target_os = "none")]
pub fn init_cpu() -> Protection {
    const SMEP: u64 = 1 << 20;
    const SMAP: u64 = 1 << 21;
    let (_, ebx, _, _) = crate::cpu::cpuid(7, 0);
    let max = crate::cpu::cpuid(0, 0).0;
    let prot = Protection {
        smep: max >= 7 && ebx & (1 << 7) != 0,
        smap: max >= 7 && ebx & (1 << 20) != 0,
    };
    let mut cr4 = crate::cpu::read_cr4();
    if prot.smep {
        cr4 |= SMEP;
    }
    if prot.smap {
        cr4 |= SMAP;
    }
    // SAFETY: both bits only add checks on supervisor accesses to user pages,
    // which keel never makes (above); the CPU reports them.
    unsafe { core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) };
    init_syscall();
    prot
}

#[cfg(target_os = "none")]
fn init_syscall() {
    // SAFETY: the entry points are keel's own code below; the selectors are
    // keel's GDT's (Xen's layout, `crate::gdt`); SCE only makes SYSCALL legal,
    // which lands in that code. keel itself never executes SYSCALL.
    unsafe { write_syscall_msrs() };
    // SAFETY: EFER.SCE is the only bit changed (reading it first keeps LME/LMA/NXE).
    unsafe {
        let efer = msr::rdmsr(msr::IA32_EFER);
        msr::wrmsr(msr::IA32_EFER, efer | 1);
    }
}

/// keel's `SYSCALL` MSRs; a VMX guest's lazy state replaces them while it runs,
/// so a PV vCPU writes them again whenever it is loaded on a CPU.
#[cfg(target_os = "none")]
unsafe fn write_syscall_msrs() {
    use keel_hypercall::abi::pv::FLAT_RING3_CS32;
    let star = (u64::from(FLAT_RING3_CS32) << 48) | (u64::from(crate::gdt::CODE_SELECTOR) << 32);
    // SAFETY: the caller's contract (see `init_cpu`).
    unsafe {
        msr::wrmsr(msr::IA32_STAR, star);
        msr::wrmsr(
            msr::IA32_LSTAR,
            core::ptr::addr_of!(keel_pv_syscall64) as u64,
        );
        msr::wrmsr(
            msr::IA32_CSTAR,
            core::ptr::addr_of!(keel_pv_syscall32) as u64,
        );
        msr::wrmsr(msr::IA32_FMASK, SYSCALL_MASK);
    }
}

#[cfg(not(target_os = "none"))]
unsafe fn write_syscall_msrs() {}

/// Why a PV vCPU cannot run (each run returns it as [`Exit::Failed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvFailure {
    pub why: &'static str,
    pub info: u64,
}

/// One PV vCPU's CPU state.
pub struct PvVcpu {
    serial: u64,
    gprs: GuestGprs,
    rip: u64,
    rsp: u64,
    rflags: u64,
    cs: u16,
    ss: u16,
    mode: GuestMode,
    /// The guest kernel's L4 (machine address), and the user one if it set one.
    kernel_cr3: u64,
    user_cr3: Option<u64>,
    fs_base: u64,
    gs_base_kernel: u64,
    gs_base_user: u64,
    /// The address of the guest's last page fault.
    cr2: u64,
    nx: bool,
    fx: FxState,
    /// The last exit was a `SYSCALL` (RIP was moved back onto it).
    syscall_exit: bool,
    /// Flush everything, global entries too, before the next entry.
    flush_pending: bool,
    /// The guest's RIP was replaced during this exit (a bounce, `iret`): the
    /// `SYSCALL` that exited is not to be stepped over.
    rip_replaced: bool,
    /// The pCPU it last ran on (`u32::MAX`: none yet).
    last_cpu: u32,
    failed: Option<PvFailure>,
    /// The guest's virtual IDT (`set_trap_table`).
    pub traps: TrapTable,
    /// The guest kernel's stack for events from user mode (`stack_switch`).
    pub kernel_ss: u16,
    pub kernel_sp: u64,
    /// The registered callbacks (`callback_op`).
    pub callbacks: Callbacks,
    /// The virtual IOPL, in RFLAGS position (`PHYSDEVOP_set_iopl`).
    pub iopl: u64,
    /// The guest's CR0.TS (`fpu_taskswitch`, CLTS, a CR0 write): while set,
    /// the guest's first x87/SSE instruction is its #NM.
    pub cr0_ts: bool,
    /// The guest's own GDT (`set_gdt`): its frames (machine addresses, the
    /// kernel holds a descriptor-page type reference on each) and entries.
    gdt_frames: [u64; GDT_GUEST_PAGES],
    gdt_entries: u32,
    /// Bumped whenever the GDT or one of its descriptors changes, so a pCPU
    /// that holds an older copy takes a new one.
    gdt_gen: u64,
    /// DR0..DR7 as the guest set them (`set_debugreg`; 4 and 5 unused). In
    /// the CPU only while the guest runs, and only when DR7 enables a
    /// breakpoint; DR6 is read back after such a run.
    pub debugreg: [u64; 8],
}

/// DR6 and DR7 at reset (their reserved-one bits).
pub const DR6_DEFAULT: u64 = 0xffff_0ff0;
pub const DR7_DEFAULT: u64 = 0x400;

/// Pages of the GDT that are the guest's (Xen's `FIRST_RESERVED_GDT_PAGE`).
pub const GDT_GUEST_PAGES: usize = 14;

/// A PV vCPU's callbacks (`callback_op`, Xen's `arch.pv` fields): addresses
/// (0: none) and whether entering them masks events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callbacks {
    pub event: u64,
    pub failsafe: u64,
    pub failsafe_disables_events: bool,
    pub syscall: u64,
    pub syscall32: u64,
    pub syscall_disables_events: bool,
}

/// A new PV vCPU's start-of-day state (Xen's for a 64-bit PV guest: `xen.h`,
/// "Start-of-day memory layout"), from the domain builder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvStart {
    pub rip: u64,
    pub rsp: u64,
    pub rsi: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
    /// Machine address of the L4.
    pub cr3: u64,
    /// The kernel stack the builder set up (`stack_switch` changes it).
    pub kernel_ss: u16,
    pub kernel_sp: u64,
}

/// A PV vCPU's whole state from `VCPUOP_initialise` (a `vcpu_guest_context`
/// the kernel checked and took references for).
#[derive(Clone, Debug)]
pub struct PvInit {
    pub gprs: GuestGprs,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
    pub kernel_mode: bool,
    /// Machine addresses of the kernel and (if any) user L4.
    pub kernel_cr3: u64,
    pub user_cr3: Option<u64>,
    pub traps: TrapTable,
    pub callbacks: Callbacks,
    pub kernel_ss: u16,
    pub kernel_sp: u64,
    pub gdt_frames: [u64; GDT_GUEST_PAGES],
    pub gdt_entries: u32,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
}

impl PvVcpu {
    /// Loads a whole new state (`VCPUOP_initialise`), and lets the vCPU run.
    pub fn initialise(&mut self, init: &PvInit) {
        self.gprs = init.gprs;
        self.rip = init.rip;
        self.rsp = init.rsp;
        self.rflags = init.rflags;
        self.cs = init.cs;
        self.ss = init.ss;
        self.mode = if init.kernel_mode {
            GuestMode::Kernel
        } else {
            GuestMode::User
        };
        self.kernel_cr3 = init.kernel_cr3;
        self.user_cr3 = init.user_cr3;
        self.traps = init.traps.clone();
        self.callbacks = init.callbacks;
        self.kernel_ss = init.kernel_ss;
        self.kernel_sp = init.kernel_sp;
        self.gdt_frames = init.gdt_frames;
        self.gdt_entries = init.gdt_entries;
        self.gdt_changed();
        self.fs_base = init.fs_base;
        self.gs_base_kernel = init.gs_base_kernel;
        self.gs_base_user = init.gs_base_user;
        self.cr2 = 0;
        self.cr0_ts = false;
        self.fx = FxState::initial();
        self.flush_pending = true;
        self.failed = None;
    }
}

impl PvVcpu {
    /// A vCPU that starts at `start` (kernel mode); `nx`: whether the CPU has
    /// no-execute (the guest sees EFER.NXE).
    pub fn new(start: &PvStart, nx: bool) -> PvVcpu {
        let gprs = GuestGprs {
            rsi: start.rsi,
            ..GuestGprs::default()
        };
        PvVcpu {
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            gprs,
            rip: start.rip,
            rsp: start.rsp,
            rflags: start.rflags,
            cs: start.cs,
            ss: start.ss,
            mode: GuestMode::Kernel,
            kernel_cr3: start.cr3,
            user_cr3: None,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            cr2: 0,
            nx,
            fx: FxState::initial(),
            syscall_exit: false,
            flush_pending: true,
            rip_replaced: false,
            last_cpu: u32::MAX,
            failed: None,
            traps: TrapTable::new(),
            kernel_ss: start.kernel_ss,
            kernel_sp: start.kernel_sp,
            callbacks: Callbacks::default(),
            iopl: 0,
            cr0_ts: false,
            gdt_frames: [0; GDT_GUEST_PAGES],
            gdt_entries: 0,
            gdt_gen: 0,
            debugreg: [0, 0, 0, 0, 0, 0, DR6_DEFAULT, DR7_DEFAULT],
        }
    }

    /// A vCPU that is down until the guest gives it a state (its
    /// `vcpu_guest_context` through `VCPUOP_initialise`: not yet, step 3).
    pub fn new_down(nx: bool) -> PvVcpu {
        let mut v = PvVcpu::new(&PvStart::default(), nx);
        v.failed = Some(PvFailure {
            why: "a PV vCPU without a state (VCPUOP_initialise for PV is not built yet)",
            info: 0,
        });
        v
    }

    /// The guest's mode (kernel or user).
    pub fn guest_mode(&self) -> GuestMode {
        self.mode
    }

    /// Xen's `toggle_guest_mode`: the other mode's L4 and GS base become
    /// active at the next entry (both are loaded on every entry).
    pub fn set_guest_mode(&mut self, mode: GuestMode) {
        self.mode = mode;
    }

    /// Sets the guest's GDT (`set_gdt`, after the kernel took the frames'
    /// descriptor-page references): `frames` (machine addresses) cover
    /// `entries` descriptors.
    pub fn set_gdt(&mut self, frames: &[u64], entries: u32) {
        self.gdt_frames = [0; GDT_GUEST_PAGES];
        for (d, &f) in self.gdt_frames.iter_mut().zip(frames) {
            *d = f;
        }
        self.gdt_entries = entries;
        self.gdt_changed();
    }

    /// The GDT's frames (machine addresses, 0: none) and entries.
    pub fn gdt(&self) -> ([u64; GDT_GUEST_PAGES], u32) {
        (self.gdt_frames, self.gdt_entries)
    }

    /// One of the GDT's descriptors changed (`update_descriptor`).
    pub fn gdt_changed(&mut self) {
        self.gdt_gen = NEXT_GDT_GEN.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets (`on`) or clears the RFLAGS bits `mask` (an emulated instruction's
    /// flags).
    pub fn set_rflags_bits(&mut self, mask: u64, on: bool) {
        if on {
            self.rflags |= mask;
        } else {
            self.rflags &= !mask;
        }
    }

    /// Stops the vCPU: its next run returns [`Exit::Failed`] with `why` (the
    /// domain then crashes with it).
    pub fn fail(&mut self, why: &'static str, info: u64) {
        self.failed = Some(PvFailure { why, info });
    }

    /// Whether the guest has a user L4 (`MMUEXT_NEW_USER_BASEPTR`).
    pub fn has_user_root(&self) -> bool {
        self.user_cr3.is_some()
    }

    /// The L4 (machine address) of `mode` (user: the kernel's if none).
    pub fn cr3_of(&self, mode: GuestMode) -> u64 {
        match (mode, self.user_cr3) {
            (GuestMode::User, Some(u)) => u,
            _ => self.kernel_cr3,
        }
    }

    /// The user L4, if any.
    pub fn user_root(&self) -> Option<u64> {
        self.user_cr3
    }

    /// Sets the kernel L4 (`MMUEXT_NEW_BASEPTR`; the caller holds its type
    /// reference, and flushes).
    pub fn set_kernel_root(&mut self, cr3: u64) {
        self.kernel_cr3 = cr3;
        self.flush_pending = true;
    }

    /// Sets the user L4 (`MMUEXT_NEW_USER_BASEPTR`), or none.
    pub fn set_user_root(&mut self, cr3: Option<u64>) {
        self.user_cr3 = cr3;
        self.flush_pending = true;
    }

    /// The registers a bounce reads ([`keel_x86::pv::bounce`]).
    pub fn bounce_regs(&self) -> GuestRegs {
        GuestRegs {
            rip: self.rip,
            cs: self.cs,
            rflags: self.rflags,
            rsp: self.rsp,
            ss: self.ss,
            rcx: self.gprs.rcx,
            r11: self.gprs.r11,
        }
    }

    /// Enters the guest's handler as `b` says: kernel mode (the caller has
    /// written the frame on the kernel stack, in kernel mode's address space),
    /// the new registers, and RCX and R11 as a SYSRET leaves them (Xen returns
    /// from a bounce with SYSRET; keel's IRETQ loads the same state).
    pub fn apply_bounce(&mut self, b: &Bounced) {
        if b.toggle_to_kernel {
            self.mode = GuestMode::Kernel;
        }
        self.enter_with(b.regs.rip, b.regs.cs, b.regs.rflags, b.regs.rsp, b.regs.ss, b.exit);
    }

    /// Returns as the `iret` hypercall says (`keel_x86::pv::iret::do_iret`).
    pub fn apply_iret(&mut self, r: &Iret) {
        if r.toggle_to_user {
            self.mode = GuestMode::User;
        }
        if let Some(iopl) = r.iopl {
            self.iopl = iopl;
        }
        self.gprs.rax = r.rax;
        self.enter_with(r.rip, r.cs, r.rflags, r.rsp, r.ss, r.exit);
    }

    fn enter_with(&mut self, rip: u64, cs: u16, rflags: u64, rsp: u64, ss: u16, exit: xpv::Exit) {
        self.rip = rip;
        self.cs = cs;
        self.rflags = rflags;
        self.rsp = rsp;
        self.ss = ss;
        let (rcx, r11) = match exit {
            xpv::Exit::Sysret => (rip, exit_rflags(rflags)),
            xpv::Exit::Iret { rcx, r11 } => (rcx, r11),
        };
        self.gprs.rcx = rcx;
        self.gprs.r11 = r11;
        self.rip_replaced = true;
    }

    /// `set_segment_base`: FS, or the kernel or user GS base.
    pub fn set_fs_base(&mut self, v: u64) {
        self.fs_base = v;
    }
    pub fn set_gs_base_kernel(&mut self, v: u64) {
        self.gs_base_kernel = v;
    }
    pub fn set_gs_base_user(&mut self, v: u64) {
        self.gs_base_user = v;
    }

    /// The address of the guest's last page fault.
    pub fn cr2(&self) -> u64 {
        self.cr2
    }

    /// The L4 active in the current mode.
    fn active_cr3(&self) -> u64 {
        self.cr3_of(self.mode)
    }

    fn active_gs_base(&self) -> u64 {
        match self.mode {
            GuestMode::Kernel => self.gs_base_kernel,
            GuestMode::User => self.gs_base_user,
        }
    }

    fn set_active_gs_base(&mut self, v: u64) {
        match self.mode {
            GuestMode::Kernel => self.gs_base_kernel = v,
            GuestMode::User => self.gs_base_user = v,
        }
    }

    /// The frame `keel_pv_enter` pops.
    fn to_frame(&self) -> TrapFrame {
        let g = &self.gprs;
        TrapFrame {
            r15: g.r15,
            r14: g.r14,
            r13: g.r13,
            r12: g.r12,
            r11: g.r11,
            r10: g.r10,
            r9: g.r9,
            r8: g.r8,
            rbp: g.rbp,
            rdi: g.rdi,
            rsi: g.rsi,
            rdx: g.rdx,
            rcx: g.rcx,
            rbx: g.rbx,
            rax: g.rax,
            vector: 0,
            error_code: 0,
            rip: self.rip,
            cs: u64::from(self.cs | 3),
            rflags: exit_rflags(self.rflags),
            rsp: self.rsp,
            ss: u64::from(self.ss | 3),
        }
    }

    /// Takes the guest's registers back from the frame an exit left.
    fn take_frame(&mut self, f: &TrapFrame) {
        let g = &mut self.gprs;
        g.r15 = f.r15;
        g.r14 = f.r14;
        g.r13 = f.r13;
        g.r12 = f.r12;
        g.r11 = f.r11;
        g.r10 = f.r10;
        g.r9 = f.r9;
        g.r8 = f.r8;
        g.rbp = f.rbp;
        g.rdi = f.rdi;
        g.rsi = f.rsi;
        g.rdx = f.rdx;
        g.rcx = f.rcx;
        g.rbx = f.rbx;
        g.rax = f.rax;
        self.rip = f.rip;
        self.rsp = f.rsp;
        self.rflags = f.rflags;
        if f.vector < SYSCALL64 {
            // The hardware frame's; a SYSCALL's frame holds keel's placeholders.
            self.cs = f.cs as u16;
            self.ss = f.ss as u16;
        }
    }

    /// What an exit through vector `vector` (with `error`) means.
    fn exit_for(&mut self, f: &TrapFrame, cr2: u64) -> Exit {
        match f.vector {
            SYSCALL64 if self.mode == GuestMode::Kernel => {
                // Reported on the SYSCALL (2 bytes), as a VMCALL exit is.
                self.rip = f.rcx.wrapping_sub(2);
                self.rflags = f.r11;
                self.syscall_exit = true;
                Exit::Hypercall
            }
            // From user mode: the state the bounce starts from is the
            // process's (RIP from RCX, RFLAGS from R11), left as it is.
            SYSCALL64 => Exit::GuestSyscall { compat: false },
            SYSCALL32 => Exit::GuestSyscall { compat: true },
            v @ 0..32 => {
                let vector = v as u8;
                if vector == 14 {
                    self.cr2 = cr2;
                }
                let has_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
                Exit::Exception {
                    vector,
                    error_code: has_code.then_some(f.error_code as u32),
                }
            }
            _ => Exit::ExternalInterrupt,
        }
    }
}

impl PvVcpu {
    /// Makes this CPU's GDT show the guest's descriptors (pages 0..13 of
    /// keel's 15-page GDT, Xen's layout) if it does not already: each copied
    /// through `check_descriptor` (so nothing but ring-3 segments and gates to
    /// ring-3 code ever reaches the GDT, whatever the frames hold), the rest
    /// of what an earlier guest's copy used zeroed.
    #[cfg(target_os = "none")]
    fn load_gdt(&self, pc: &PerCpu) {
        use keel_x86::pv::descriptor::check_descriptor;
        if pc.pv_gdt_gen.load(Ordering::Relaxed) == self.gdt_gen {
            return;
        }
        let base = crate::gdt::this_cpu_gdt_base();
        let old = pc.pv_gdt_used.load(Ordering::Relaxed) as usize;
        let n = (self.gdt_entries as usize).min(GDT_GUEST_PAGES * 512);
        for i in 0..n.max(old) {
            let desc = if i < n {
                let frame = self.gdt_frames[i / 512];
                let at = (frame != 0)
                    .then(|| keel_mm::addr::Hpa::new(frame + (i % 512) as u64 * 8))
                    .flatten()
                    .and_then(keel_mm::layout::try_directmap_va);
                // SAFETY: the frame is the guest's, held as a descriptor page
                // (so it stays the domain's) and mapped by the direct map.
                let raw = at.map_or(0, |va| unsafe { core::ptr::read_volatile(va as *const u64) });
                check_descriptor(raw).unwrap_or(0)
            } else {
                0
            };
            // SAFETY: entries 0..7168 of this CPU's own GDT (15 pages, writable,
            // keel's); keel's selectors are in the reserved page after them.
            unsafe { core::ptr::write_volatile((base + i as u64 * 8) as *mut u64, desc) };
        }
        pc.pv_gdt_used.store(n as u64, Ordering::Relaxed);
        pc.pv_gdt_gen.store(self.gdt_gen, Ordering::Relaxed);
    }

    #[cfg(not(target_os = "none"))]
    fn load_gdt(&self, _pc: &PerCpu) {}
}

/// This CPU's entry frame: the last [`TrapFrame`] of its PV entry stack.
fn entry_frame(pc: &PerCpu) -> *mut TrapFrame {
    let top = pc.pv_entry_top.load(Ordering::Relaxed);
    (top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame
}

/// Flushes this CPU's TLB, global entries included (toggling CR4.PGE, or a CR3
/// reload where global pages are off).
#[cfg(target_os = "none")]
fn flush_all_global() {
    const PGE: u64 = 1 << 7;
    let cr4 = crate::cpu::read_cr4();
    // SAFETY: toggling PGE only flushes the TLB (SDM Vol. 3A §4.10.4.1); writing
    // CR3 back with its own value likewise.
    unsafe {
        if cr4 & PGE != 0 {
            core::arch::asm!("mov cr4, {}", in(reg) cr4 & !PGE, options(nostack, preserves_flags));
            core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        } else {
            let cr3 = crate::cpu::read_cr3();
            core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags));
        }
    }
}

impl PvVcpu {
    #[cfg(target_os = "none")]
    fn enter(&mut self) -> Exit {
        let pc = crate::percpu::this();
        let frame = entry_frame(pc);
        // SAFETY: the entry frame is this CPU's own (its TSS.RSP0 page), used by
        // nobody else while keel runs here with interrupts off; `TrapFrame` is
        // plain integers.
        unsafe { frame.write(self.to_frame()) };
        let keel_cr3 = crate::cpu::read_cr3();
        // SAFETY: the guest's L4 was validated by the PV MMU as an L4 table of
        // this domain, with keel's slots 256..=271 copied in (module doc), so
        // keel's code, stack and data stay mapped as they are; it holds a type
        // reference for as long as it is this vCPU's base pointer.
        unsafe {
            core::arch::asm!("mov cr3, {}", in(reg) self.active_cr3(), options(nostack, preserves_flags));
        }
        // Another PV vCPU ran here last, or this one ran elsewhere since it
        // last ran here (its translations here may predate a flush it has
        // had there), or a flush was asked for: drop everything, global
        // entries (the guest's user mappings) included.
        let here = pc.index();
        let moved = core::mem::replace(&mut self.last_cpu, here) != here;
        if pc.pv_last.swap(self.serial, Ordering::Relaxed) != self.serial || moved || self.flush_pending {
            flush_all_global();
            self.flush_pending = false;
        }
        self.load_gdt(pc);
        // SAFETY: FS and the inactive GS base are the guest's to set; keel uses
        // neither (its GS base is GS_BASE, swapped in on every exit).
        unsafe {
            msr::wrmsr(msr::IA32_FS_BASE, self.fs_base);
            msr::wrmsr(msr::IA32_KERNEL_GS_BASE, self.active_gs_base());
        }
        // The guest's TS, in the real CR0 while it runs (keel itself uses no
        // x87/SSE, and clears TS again before anything saves that state).
        if self.cr0_ts {
            // SAFETY: TS only makes x87/SSE instructions fault with #NM.
            unsafe { core::arch::asm!("mov {t}, cr0", "or {t}, 8", "mov cr0, {t}", t = out(reg) _, options(nostack)) };
        }
        // The guest's breakpoints (addresses it may name, checked by
        // `set_debugreg`): in the CPU only while it runs.
        let dr_active = self.debugreg[7] & 0xff != 0;
        if dr_active {
            // SAFETY: debug registers only add #DB traps at the guest's own
            // addresses; DR7 is cleared again right after the exit.
            unsafe {
                core::arch::asm!(
                    "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}",
                    in(reg) self.debugreg[0], in(reg) self.debugreg[1],
                    in(reg) self.debugreg[2], in(reg) self.debugreg[3],
                    options(nostack)
                );
                core::arch::asm!("mov dr6, {0}", "mov dr7, {1}", in(reg) self.debugreg[6],
                    in(reg) self.debugreg[7], options(nostack));
            }
        }
        // SAFETY: interrupts are off (the run loop's state); the frame holds a
        // ring-3 CS and SS (RPL forced to 3 by `to_frame`) and RFLAGS without
        // IOPL or VM; whatever else is wrong in it faults in `keel_pv_iret`,
        // which returns here (module doc).
        let r = unsafe { keel_pv_enter(frame) };
        let cr2 = crate::cpu::read_cr2();
        if dr_active {
            let dr6: u64;
            // SAFETY: DR6 holds what the guest's breakpoints hit; DR7 off
            // again for keel.
            unsafe {
                core::arch::asm!("mov {0}, dr6", out(reg) dr6, options(nostack));
                core::arch::asm!("mov dr7, {0}", in(reg) DR7_DEFAULT, options(nostack));
            }
            self.debugreg[6] = dr6;
        }
        if self.cr0_ts {
            // SAFETY: CLTS only lets x87/SSE instructions run again.
            unsafe { core::arch::asm!("clts", options(nomem, nostack)) };
        }
        // SAFETY: reading the MSRs has no side effects; keel's CR3 is the one
        // it ran on before the entry.
        unsafe {
            self.fs_base = msr::rdmsr(msr::IA32_FS_BASE);
            let gs = msr::rdmsr(msr::IA32_KERNEL_GS_BASE);
            self.set_active_gs_base(gs);
            core::arch::asm!("mov cr3, {}", in(reg) keel_cr3, options(nostack, preserves_flags));
        }
        if r & IRET_FAULT != 0 {
            // The guest's own state was bad (a non-canonical RIP on Intel, a
            // selector): the fault is the guest's, at the state it asked
            // for, as Xen's fixup makes it. (AMD CPUs take a non-canonical
            // RIP in ring 3 instead, as a #GP of the guest: the same result.)
            return Exit::Exception {
                vector: (r & 0xFF) as u8,
                error_code: Some(0),
            };
        }
        // SAFETY: as above; the exit path left the guest's registers there.
        let mut f = unsafe { frame.read() };
        self.take_frame(&f);
        let exit = self.exit_for(&f, cr2);
        if exit == Exit::ExternalInterrupt {
            crate::traps::dispatch_guest_interrupt(&mut f);
        }
        exit
    }

    #[cfg(not(target_os = "none"))]
    fn enter(&mut self) -> Exit {
        let _ = entry_frame;
        Exit::Failed {
            why: "PV guests run only on the target",
            code: 0,
            info: 0,
        }
    }
}

impl HvmVcpu for PvVcpu {
    fn run(&mut self) -> Exit {
        self.syscall_exit = false;
        self.rip_replaced = false;
        if let Some(f) = self.failed {
            return Exit::Failed {
                why: f.why,
                code: 0,
                info: f.info,
            };
        }
        self.enter()
    }
    fn gprs(&self) -> &GuestGprs {
        &self.gprs
    }
    fn gprs_mut(&mut self) -> &mut GuestGprs {
        &mut self.gprs
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn rsp(&self) -> u64 {
        self.rsp
    }
    fn set_rsp(&mut self, rsp: u64) {
        self.rsp = rsp;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    /// What the guest would read: protected mode with paging, WP, NE, ET, MP,
    /// and its own TS.
    fn cr0(&self) -> u64 {
        0x8005_0033 | if self.cr0_ts { 1 << 3 } else { 0 }
    }
    fn cr3(&self) -> u64 {
        self.active_cr3()
    }
    /// PAE (4-level paging) and the FXSR bits.
    fn cr4(&self) -> u64 {
        (1 << 5) | (1 << 9) | (1 << 10)
    }
    /// Long mode active, SYSCALL on, NX as the CPU has it.
    fn efer(&self) -> u64 {
        let nxe = if self.nx { 1 << 11 } else { 0 };
        (1 << 0) | (1 << 8) | (1 << 10) | nxe
    }
    fn cs_base(&self) -> u64 {
        0
    }
    fn mode(&self) -> CpuMode {
        CpuMode::Long64
    }
    /// Always 3: both of the guest's modes run in ring 3.
    fn cpl(&self) -> u8 {
        3
    }
    fn in_guest_kernel(&self) -> bool {
        self.mode == GuestMode::Kernel
    }
    /// 2 after a `SYSCALL` (RIP is reported on it); 0 once a bounce or `iret`
    /// replaced RIP during the exit (it is where the guest goes next).
    fn exit_insn_len(&self) -> Option<u64> {
        self.syscall_exit
            .then_some(if self.rip_replaced { 0 } else { 2 })
    }
    fn advance_rip(&mut self, len: u64) {
        self.rip = self.rip.wrapping_add(len);
    }
    /// Exceptions reach a PV guest through its trap table, which needs its
    /// memory (the frame goes on its stack): the kernel bounces them
    /// (`kernel/src/pv.rs`). Nothing arch-level asks for one; if something
    /// did, the vCPU stops with the reason rather than lose it.
    fn inject_exception(&mut self, vector: u8, _error_code: Option<u32>) {
        self.failed = Some(PvFailure {
            why: "an exception injected into a PV vCPU without a bounce",
            info: u64::from(vector),
        });
    }
    fn set_efer(&mut self, _efer: u64) {}
    fn read_held_msr(&self, m: u32) -> Option<u64> {
        match m {
            msr::IA32_FS_BASE => Some(self.fs_base),
            msr::IA32_GS_BASE => Some(self.active_gs_base()),
            msr::IA32_KERNEL_GS_BASE => Some(match self.mode {
                GuestMode::Kernel => self.gs_base_user,
                GuestMode::User => self.gs_base_kernel,
            }),
            _ => None,
        }
    }
    fn write_held_msr(&mut self, m: u32, value: u64) -> bool {
        match m {
            msr::IA32_FS_BASE => self.fs_base = value,
            msr::IA32_GS_BASE => self.set_active_gs_base(value),
            msr::IA32_KERNEL_GS_BASE => match self.mode {
                GuestMode::Kernel => self.gs_base_user = value,
                GuestMode::User => self.gs_base_kernel = value,
            },
            _ => return false,
        }
        true
    }
    fn flush_guest_tlb(&mut self) {
        self.flush_pending = true;
    }
    /// A PV guest's hypercall page holds `syscall` stubs, written by the domain
    /// builder; nothing asks for a VMCALL page from a PV vCPU (its MSR writes
    /// are never VM exits).
    fn hypercall_insn(&self) -> HypercallInsnKind {
        HypercallInsnKind::Vmcall
    }
    /// Events reach a PV guest through its callback (step 4): not yet.
    fn interrupt_ready(&self) -> bool {
        false
    }
    fn inject_interrupt(&mut self, _vector: u8) {}
    fn set_interrupt_window_exit(&mut self, _on: bool) {}
    fn nmi_ready(&self) -> bool {
        false
    }
    fn inject_nmi(&mut self) {}
    /// A PV vCPU's state is a `vcpu_guest_context`, not an HVM [`Context`]:
    /// `VCPUOP_initialise` for PV is step 3.
    fn load_context(&mut self, _ctx: &Context) {
        self.failed = Some(PvFailure {
            why: "an HVM register state for a PV vCPU",
            info: 0,
        });
    }
    fn save_lazy_state(&mut self) {
        self.fx.save();
    }
    fn restore_lazy_state(&self) {
        self.fx.restore();
        // SAFETY: keel's own SYSCALL MSRs (see `init_cpu`), which a VMX guest's
        // lazy state may have replaced on this CPU.
        unsafe { write_syscall_msrs() };
    }
    fn release_cpu(&mut self) {}
}

#[cfg(target_os = "none")]
unsafe extern "C" {
    /// Enters the guest with the registers in `frame` (this CPU's entry frame);
    /// returns 0 when the guest exits (its registers are in the frame again), or
    /// `IRET_FAULT | vector` when the entry's IRETQ faulted.
    fn keel_pv_enter(frame: *mut TrapFrame) -> u64;
    static keel_pv_syscall64: u8;
    static keel_pv_syscall32: u8;
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .text.pv, "ax"

    .global keel_pv_enter
keel_pv_enter:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %gs:{host_rsp}
    mov %rdi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    swapgs
    .global keel_pv_iret
keel_pv_iret:
    iretq

    /* From trap_common: an interrupt or exception from CPL 3. The hardware
       frame, error code and vector are on the entry stack (or, for the IST
       vectors, on their own stacks: keel's, as from ring 0). */
    .global keel_pv_trap_entry
keel_pv_trap_entry:
    swapgs
    cmpq $2, (%rsp)
    je 1f
    cmpq $8, (%rsp)
    je 1f
    cmpq $18, (%rsp)
    je 1f
    jmp keel_pv_save
1:  jmp keel_trap_common_body

    .global keel_pv_syscall64
keel_pv_syscall64:
    swapgs
    mov %rsp, %gs:{scratch}
    mov %gs:{top}, %rsp
    push ${ss}
    push %gs:{scratch}
    push %r11
    push ${cs64}
    push %rcx
    push $0
    push ${sys64}
    jmp keel_pv_save

    .global keel_pv_syscall32
keel_pv_syscall32:
    swapgs
    mov %rsp, %gs:{scratch}
    mov %gs:{top}, %rsp
    push ${ss}
    push %gs:{scratch}
    push %r11
    push ${cs32}
    push %rcx
    push $0
    push ${sys32}
    /* fall through */

    /* The guest's registers below the frame: the whole TrapFrame, at the
       top of the entry stack, whichever way the guest left. */
keel_pv_save:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    /* fall through */

keel_pv_exit:
    mov %gs:{host_rsp}, %rsp
    xor %eax, %eax
3:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    cld
    ret

    /* From trap_common: the entry's IRETQ faulted, in ring 0, with the
       guest's GS base active. [rsp] is the vector. */
    .global keel_pv_iret_fault
keel_pv_iret_fault:
    swapgs
    mov (%rsp), %rax
    or ${iret_fault}, %rax
    mov %gs:{host_rsp}, %rsp
    jmp 3b
"#,
    host_rsp = const core::mem::offset_of!(PerCpu, pv_host_rsp),
    scratch = const core::mem::offset_of!(PerCpu, pv_scratch),
    top = const core::mem::offset_of!(PerCpu, pv_entry_top),
    ss = const keel_hypercall::abi::pv::FLAT_RING3_SS64,
    cs64 = const keel_hypercall::abi::pv::FLAT_RING3_CS64,
    cs32 = const keel_hypercall::abi::pv::FLAT_RING3_CS32,
    sys64 = const SYSCALL64,
    sys32 = const SYSCALL32,
    iret_fault = const IRET_FAULT,
    options(att_syntax)
);

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpu() -> PvVcpu {
        PvVcpu::new(
            &PvStart {
                rip: 0xffff_ffff_8010_0000,
                rsp: 0xffff_ffff_8040_0000,
                rsi: 0xffff_ffff_8030_0000,
                rflags: 0x202,
                cs: 0xe033,
                ss: 0xe02b,
                cr3: 0x12_3000,
                kernel_ss: 0xe02b,
                kernel_sp: 0xffff_ffff_8040_0000,
            },
            true,
        )
    }

    #[test]
    fn the_entry_frame_is_ring_3_with_if_set_and_no_iopl() {
        let mut v = vcpu();
        v.rflags = 0x3002; // IOPL 3, IF clear
        v.cs = 0xe030; // RPL 0 asked for
        let f = v.to_frame();
        assert_eq!(f.cs, 0xe033);
        assert_eq!(f.ss, 0xe02b);
        assert_eq!(f.rflags, 0x202);
        assert_eq!(f.rsi, 0xffff_ffff_8030_0000);
    }

    #[test]
    fn a_kernel_syscall_is_a_hypercall_reported_on_the_syscall() {
        let mut v = vcpu();
        let mut f = v.to_frame();
        f.vector = SYSCALL64;
        f.rcx = 0xffff_ffff_8010_0042; // the return address SYSCALL left
        f.r11 = 0x246;
        f.rip = f.rcx;
        v.take_frame(&f);
        assert_eq!(v.exit_for(&f, 0), Exit::Hypercall);
        assert_eq!(v.rip(), 0xffff_ffff_8010_0040);
        assert_eq!(v.exit_insn_len(), Some(2));
        v.advance_rip(2);
        assert_eq!(v.rip(), 0xffff_ffff_8010_0042);
        assert_eq!(v.rflags(), 0x246);
        assert_eq!(v.cs, 0xe033, "a SYSCALL frame's CS is a placeholder");
    }

    #[test]
    fn exceptions_carry_their_error_codes_and_cr2() {
        let mut v = vcpu();
        let mut f = v.to_frame();
        f.vector = 14;
        f.error_code = 7;
        assert_eq!(
            v.exit_for(&f, 0xdead_b000),
            Exit::Exception {
                vector: 14,
                error_code: Some(7)
            }
        );
        assert_eq!(v.cr2(), 0xdead_b000);
        f.vector = 6;
        assert_eq!(
            v.exit_for(&f, 0),
            Exit::Exception {
                vector: 6,
                error_code: None
            }
        );
        f.vector = 0xF0;
        assert_eq!(v.exit_for(&f, 0), Exit::ExternalInterrupt);
    }

    #[test]
    fn user_mode_syscalls_are_the_guests_and_down_vcpus_fail_with_a_reason() {
        let mut v = vcpu();
        v.mode = GuestMode::User;
        let mut f = v.to_frame();
        f.vector = SYSCALL64;
        assert_eq!(v.exit_for(&f, 0), Exit::GuestSyscall { compat: false });
        f.vector = SYSCALL32;
        assert_eq!(v.exit_for(&f, 0), Exit::GuestSyscall { compat: true });
        let mut d = PvVcpu::new_down(true);
        assert!(matches!(d.run(), Exit::Failed { .. }));
        let mut e = vcpu();
        e.inject_exception(13, Some(0));
        assert!(matches!(e.run(), Exit::Failed { .. }));
    }

    #[test]
    fn a_bounce_or_iret_replaces_rip_and_is_not_stepped_over() {
        let mut v = vcpu();
        let mut f = v.to_frame();
        f.vector = SYSCALL64;
        f.rcx = 0xffff_ffff_8010_0042;
        v.take_frame(&f);
        assert_eq!(v.exit_for(&f, 0), Exit::Hypercall);
        let r = Iret {
            rip: 0x40_1000,
            cs: 0xe033,
            rflags: 0x202,
            rsp: 0x7fff_0000,
            ss: 0xe02b,
            rax: 7,
            exit: xpv::Exit::Iret { rcx: 1, r11: 2 },
            upcall_mask: 0,
            toggle_to_user: true,
            iopl: None,
        };
        v.set_user_root(Some(0x5000));
        v.apply_iret(&r);
        assert_eq!(v.exit_insn_len(), Some(0));
        v.advance_rip(0);
        assert_eq!((v.rip(), v.gprs.rax, v.gprs.rcx, v.gprs.r11), (0x40_1000, 7, 1, 2));
        assert_eq!(v.guest_mode(), GuestMode::User);
        assert_eq!(v.cr3(), 0x5000, "the user L4 is active in user mode");
        assert!(!v.in_guest_kernel());
    }

    #[test]
    fn serials_differ() {
        assert_ne!(vcpu().serial, vcpu().serial);
    }
}
