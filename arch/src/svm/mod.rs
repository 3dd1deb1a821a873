//! AMD SVM (APM Vol. 2 ch. 15): what the CPU offers ([`caps`]), the VMCB ([`vmcb`]),
//! #VMEXIT decoding ([`exit`]), nested page-table entries ([`npt`]), and
//! [`SvmVcpu`], keel's [`HvmVcpu`] on SVM. Laid out like its twin, `vmx`.
//!
//! # Per CPU
//! [`enable`] sets EFER.SVME, gives the CPU its host save area (VM_HSAVE_PA) and
//! captures keel's own VMLOAD/VMSAVE state (TR, FS, GS, LDTR, KernelGSBase,
//! STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*) into a host VMCB. VMRUN does not switch that
//! state, so the entry stub does: `VMLOAD guest; VMRUN; VMSAVE guest; VMLOAD host`.
//! Without the last step keel would take its next interrupt on the guest's TR.
//! keel never reads VM_CR: Bochs does not implement it (EMULATORS.md).
//!
//! # Interrupts
//! The stub runs the guest with GIF clear around it and RFLAGS.IF set, so with
//! V_INTR_MASKING and the INTR intercept a host interrupt makes the guest exit, and
//! stays pending until keel enables interrupts (the stub returns with IF clear).
//!
//! # Intercepts
//! CPUID, HLT, VMMCALL, every port (IOPM all ones), every MSR except the ones the
//! VMCB holds for VMLOAD/VMSAVE (MSRPM), SHUTDOWN (a triple fault must not reset the
//! machine), INTR/NMI/SMI, INIT, task switches, and the SVM, MONITOR/MWAIT and
//! XSETBV instructions (the guest gets #UD: keel hides SVM, MONITOR and XSAVE in
//! CPUID). VMRUN must be intercepted or VMRUN of this VMCB fails (APM §15.5.1).
//!
//! # Whole states (`load_context`)
//! `new` builds its PVH start state (`Context::pvh_start`) with the same writer,
//! `write_context`. The VMCB holds the guest's CR0/CR3/CR4 and segments as they
//! are (nested paging intercepts no CR access; the segment attributes are the
//! packed form a `Context` already uses), so the writer copies them, with EFER.SVME
//! kept set and the CPL from SS.DPL (0 in real mode). `prepare` checks CR3 against
//! the physical-address width first; CR4 bits the CPU lacks are the `cr4_valid` the
//! kernel passes to `Context::from_vcpu_hvm` (from its CPUID policy) to exclude. It
//! clears a queued event, the interrupt shadow and the interrupt-window V_IRQ, and
//! resets CR2, DR6, DR7 and the x87/SSE image; the next VMRUN flushes the ASID.
//!
//! # Interrupt shadows
//! After an exit inside an interrupt shadow (an external interrupt right after
//! the guest's STI, before the instruction STI covers), the VMCB says so
//! (INTERRUPT_SHADOW) and the next VMRUN should restore it. QEMU 7.2's TCG does
//! not: it saves the shadow at #VMEXIT but never loads it at VMRUN, so the
//! guest resumes unshadowed, a V_IRQ window opens at once, and an event
//! injected there runs *before* the shadowed instruction. For `sti; vmmcall`
//! (SCHEDOP_block) or `sti; hlt` that is a lost wake-up: the upcall runs, then
//! the vCPU blocks with nothing pending (CI saw it as a pingpong hang). So keel
//! honours the shadow itself: an exit that reports one starts a hold at its
//! RIP, during which nothing is injected and no window is asked for; the hold
//! ends when keel completes an instruction there (`advance_rip`), at the first
//! exit at another RIP, or after [`SHADOW_HOLD_EXITS`] exits at the same RIP
//! (a guest spinning on that instruction still gets its interrupt). An event
//! held back waits for the next exit, which a blocking instruction makes at
//! once.
//!
//! # NMIs
//! Injected through EVENTINJ (type 2). Without vNMI the VMCB does not show whether
//! the guest is still in the handler of an earlier NMI (that would take the IRET
//! intercept and tracking its completion): `nmi_ready` is only "nothing queued,
//! no interrupt shadow", so an NMI injected while the guest handles one nests.

pub mod caps;
pub mod exit;
pub mod npt;
pub mod vmcb;

use core::arch::asm;

use keel_mm::addr::Hpa;
use keel_x86::context::Context;

use crate::hvm::{
    CpuMode, Exit, FrameSource, GuestGprs, HvmVcpu, HypercallInsnKind, LoadContextError, PvhStart,
};
use crate::msr;
use caps::SvmCaps;
use vmcb::{Seg, Segment, Vmcb, attrib, intercept1, intercept2};

/// EFER.SVME (APM Vol. 2 §3.1.7).
pub const EFER_SVME: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
/// MSR VM_HSAVE_PA: where VMRUN saves host state.
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;

/// Why SVM could not be used. The doc comment is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmError {
    /// the CPU has no nested paging (NPT), which keel requires for HVM/PVH guests
    NoNpt,
    /// out of memory for SVM structures
    OutOfMemory,
    /// setting EFER.SVME did not stick (SVM disabled by firmware?)
    SvmeRefused,
    /// the start-of-day state does not load on this CPU
    StartState(LoadContextError),
}

impl core::fmt::Display for SvmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SvmError::NoNpt => "the CPU has no nested paging (NPT), which keel requires",
            SvmError::OutOfMemory => "out of memory for SVM structures",
            SvmError::SvmeRefused => "setting EFER.SVME did not stick (SVM disabled by firmware?)",
            SvmError::StartState(e) => {
                return write!(f, "the start-of-day state does not load on this CPU: {e}");
            }
        })
    }
}

/// Turns SVM on for this CPU: EFER.SVME, this CPU's host save area, and this
/// CPU's host VMCB (keel's own VMLOAD/VMSAVE state, kept in its `PerCpu`).
/// Idempotent per CPU.
pub fn enable(frames: &mut dyn FrameSource, caps: &SvmCaps) -> Result<(), SvmError> {
    if !caps.npt {
        return Err(SvmError::NoNpt);
    }
    let me = crate::percpu::this();
    if me.svm_host_vmcb().is_some() {
        return Ok(());
    }
    let hsave = frames.alloc_zeroed(1).ok_or(SvmError::OutOfMemory)?;
    let host = frames.alloc_zeroed(1).ok_or(SvmError::OutOfMemory)?;
    // SAFETY: EFER and VM_HSAVE_PA exist on any CPU reporting SVM (caps came from
    // CPUID 8000_0001 ECX.SVM); setting SVME changes nothing keel relies on, and the
    // host save page is ours alone from now on.
    unsafe {
        let efer = msr::rdmsr(msr::IA32_EFER);
        msr::wrmsr(msr::IA32_EFER, efer | EFER_SVME);
        if msr::rdmsr(msr::IA32_EFER) & EFER_SVME == 0 {
            return Err(SvmError::SvmeRefused);
        }
        msr::wrmsr(MSR_VM_HSAVE_PA, hsave.as_u64());
        // Capture keel's TR/FS/GS/... now that the GDT and TSS are loaded.
        asm!("vmsave rax", in("rax") host.as_u64(), options(nostack, preserves_flags));
    }
    me.set_svm_host_vmcb(host.as_u64());
    Ok(())
}

/// MSRs the guest reads and writes directly: VMLOAD/VMSAVE move them with the VMCB.
const PASSTHROUGH_MSRS: [u32; 10] = [
    0xC000_0100, // FS_BASE
    0xC000_0101, // GS_BASE
    0xC000_0102, // KERNEL_GS_BASE
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
];

/// Position of `msr`'s read bit in the MSR permission map (APM Vol. 2 §15.11,
/// table 15-9): three 2 KiB vectors for MSRs 0-1FFF, C000_0000-C000_1FFF and
/// C001_0000-C001_1FFF, two bits per MSR (read, then write). `None` outside them.
pub fn msrpm_bit(msr: u32) -> Option<usize> {
    let (base, off) = match msr {
        0..=0x1FFF => (0, msr),
        0xC000_0000..=0xC000_1FFF => (0x800 * 8, msr - 0xC000_0000),
        0xC001_0000..=0xC001_1FFF => (0x1000 * 8, msr - 0xC001_0000),
        _ => return None,
    };
    Some(base + off as usize * 2)
}

/// keel's vCPU on SVM.
pub struct SvmVcpu {
    vmcb: Vmcb,
    gprs: GuestGprs,
    nrip_save: bool,
    /// Flush the guest's TLB (TLB_CONTROL = 1) at the next VMRUN.
    flush: bool,
    /// The guest's x87/SSE registers while another vCPU runs.
    fx: crate::cpu::FxState,
    /// The CPU the guest last ran on: on another one its ASID's TLB entries
    /// there may predate p2m changes made since, so the first VMRUN flushes.
    last_cpu: u32,
    /// The CPU's physical-address width, for CR3 checks.
    maxphyaddr: u8,
    /// The last `load_context` was refused: `run` reports it instead of entering.
    refused: Option<LoadContextError>,
    /// An interrupt shadow (STI, MOV SS) keel must honour itself: set when an
    /// exit reports one, at that RIP, with how many more exits at the same RIP
    /// keep it (see "Interrupt shadows" in the module doc).
    shadow_hold: Option<(u64, u8)>,
    /// The kernel asked for an interrupt window (`set_interrupt_window_exit`);
    /// the V_IRQ that makes it is withheld while `shadow_hold` lasts.
    window: bool,
}

/// Exits at the RIP of an interrupt shadow that keep it (at most): enough for
/// asynchronous exits in a row before the shadowed instruction runs, bounded so
/// that a guest spinning on that one instruction still gets its interrupt.
const SHADOW_HOLD_EXITS: u8 = 3;

/// DR6 and DR7 reset values (APM Vol. 2 §14.1.3, table 14-1).
const DR6_DEFAULT: u64 = 0xFFFF_0FF0;
const DR7_DEFAULT: u64 = 0x400;
/// EVENTINJ (APM Vol. 2 §15.20): V (valid, bit 31), type in bits 10:8.
const EVENTINJ_VALID: u64 = 1 << 31;
const EVENTINJ_TYPE_NMI: u64 = 2 << 8;

/// VMCB VINTR bits (APM Vol. 2 §15.21.1): V_IRQ, V_INTR_PRIO (19:16), V_IGN_TPR.
const V_IRQ: u64 = 1 << 8;
const V_INTR_PRIO_MAX: u64 = 0xF << 16;
const V_IGN_TPR: u64 = 1 << 20;

impl SvmVcpu {
    /// A VMCB for a PVH guest on nested paging rooted at `ncr3`, with ASID `asid`
    /// (non-zero: ASID 0 is the host's), starting at `start`.
    ///
    /// # Safety
    /// `ncr3` decides what host memory the guest can reach: it must be the root of
    /// a complete NPT that maps only memory owned by this guest, and stay alive (and
    /// unchanged but for p2m updates) for as long as this vCPU can run.
    pub unsafe fn new(
        frames: &mut dyn FrameSource,
        caps: &SvmCaps,
        ncr3: Hpa,
        asid: u32,
        start: PvhStart,
    ) -> Result<SvmVcpu, SvmError> {
        if !caps.npt {
            return Err(SvmError::NoNpt);
        }
        let vmcb_pa = frames.alloc_zeroed(1).ok_or(SvmError::OutOfMemory)?;
        let msrpm = frames.alloc_zeroed(2).ok_or(SvmError::OutOfMemory)?;
        let iopm = frames.alloc_zeroed(3).ok_or(SvmError::OutOfMemory)?;
        fill_bitmap(msrpm, 2, |bit| {
            !PASSTHROUGH_MSRS
                .iter()
                .any(|&m| msrpm_bit(m).is_some_and(|b| bit == b || bit == b + 1))
        });
        fill_bitmap(iopm, 3, |_| true);

        // SAFETY: the frame is freshly allocated for this VMCB alone.
        let mut v = unsafe { Vmcb::new(vmcb_pa) };
        v.set(vmcb::INTERCEPT_EXCEPTIONS, 1 << 18); // #MC: never let the guest see it
        v.set(
            vmcb::INTERCEPT_MISC1,
            intercept1::INTR
                | intercept1::NMI
                | intercept1::SMI
                | intercept1::INIT
                | intercept1::CPUID
                | intercept1::HLT
                | intercept1::INVLPGA
                | intercept1::IOIO_PROT
                | intercept1::MSR_PROT
                | intercept1::TASK_SWITCH
                | intercept1::SHUTDOWN,
        );
        v.set(
            vmcb::INTERCEPT_MISC2,
            intercept2::VMRUN
                | intercept2::VMMCALL
                | intercept2::VMLOAD
                | intercept2::VMSAVE
                | intercept2::STGI
                | intercept2::CLGI
                | intercept2::SKINIT
                | intercept2::MONITOR
                | intercept2::MWAIT
                | intercept2::MWAIT_ARMED
                | intercept2::XSETBV,
        );
        v.set(vmcb::IOPM_BASE_PA, iopm.as_u64());
        v.set(vmcb::MSRPM_BASE_PA, msrpm.as_u64());
        v.set(vmcb::GUEST_ASID, asid);
        v.set(vmcb::VINTR, 1 << 24); // V_INTR_MASKING: host IF masks host interrupts
        v.set(vmcb::NP_ENABLE, 1);
        v.set(vmcb::N_CR3, ncr3.as_u64());
        // The MSRs a context does not hold start at their power-on values (the
        // frame is zeroed) and keep what the guest writes across loads; PAT's is
        // not 0 (APM Vol. 2 §7.8.2).
        v.set(vmcb::G_PAT, 0x0007_0406_0007_0406);

        let mut vcpu = SvmVcpu {
            vmcb: v,
            gprs: GuestGprs::default(),
            nrip_save: caps.nrip_save,
            flush: true,
            fx: crate::cpu::FxState::initial(),
            last_cpu: crate::percpu::index(),
            maxphyaddr: (crate::cpu::cpuid(0x8000_0008, 0).0 & 0xFF) as u8,
            refused: None,
            shadow_hold: None,
            window: false,
        };
        // PVH start of day (Xen docs/misc/pvh.pandoc).
        let ctx = start.context();
        vcpu.prepare(&ctx).map_err(SvmError::StartState)?;
        vcpu.write_context(&ctx);
        Ok(vcpu)
    }

    /// Checks `ctx` against what this CPU allows, touching nothing.
    fn prepare(&self, ctx: &Context) -> Result<(), LoadContextError> {
        crate::hvm::check_cr3_width(ctx.cr3(), self.maxphyaddr)
    }

    /// Writes the whole architectural state `ctx` (checked by `prepare`) and clears
    /// what the old state left pending (module doc). The one writer of guest state
    /// for `new` and `load_context`. What VMRUN checks (APM Vol. 2 §15.5.1,
    /// "consistency checks"): EFER.SVME set (kept here), CR0.NW not without CD,
    /// CR0[63:32], CR3 and CR4 MBZ bits, DR6/DR7[63:32] zero, no long mode with
    /// paging but without PAE or PE, not CS.L and CS.D together (in long mode;
    /// Bochs checks it always), EFER MBZ bits: `keel_x86::context` guarantees the
    /// architectural ones, `prepare` CR3's width, and CR4's are the kernel's
    /// `cr4_valid`.
    fn write_context(&mut self, ctx: &Context) {
        let v = &mut self.vmcb;
        for (seg, s) in [
            (Seg::Cs, ctx.cs()),
            (Seg::Ss, ctx.ss()),
            (Seg::Ds, ctx.ds()),
            (Seg::Es, ctx.es()),
            (Seg::Fs, ctx.fs()),
            (Seg::Gs, ctx.gs()),
            (Seg::Tr, ctx.tr()),
            (Seg::Ldtr, ctx.ldtr()),
        ] {
            v.set_seg(
                seg,
                Segment {
                    selector: s.selector,
                    attrib: s.attr,
                    limit: s.limit,
                    base: s.base,
                },
            );
        }
        for (seg, t) in [(Seg::Gdtr, ctx.gdtr()), (Seg::Idtr, ctx.idtr())] {
            v.set_seg(
                seg,
                Segment {
                    limit: u32::from(t.limit),
                    base: t.base,
                    ..Segment::default()
                },
            );
        }
        // VMRUN takes the CPL from here, not from SS (APM Vol. 2 §15.5.1).
        v.set(vmcb::CPL, ctx.cpl());
        v.set(vmcb::CR0, ctx.cr0());
        v.set(vmcb::CR2, 0);
        v.set(vmcb::CR3, ctx.cr3());
        v.set(vmcb::CR4, ctx.cr4());
        // SVME must be set in the guest's EFER or VMRUN fails (§15.5.1).
        v.set(vmcb::EFER, ctx.efer() | EFER_SVME);
        v.set(vmcb::RFLAGS, ctx.rflags());
        v.set(vmcb::RIP, ctx.rip());
        v.set(vmcb::RSP, ctx.rsp());
        v.set(vmcb::RAX, ctx.gprs().rax);
        v.set(vmcb::DR6, DR6_DEFAULT);
        v.set(vmcb::DR7, DR7_DEFAULT);
        v.set(vmcb::EVENTINJ, 0);
        v.set(vmcb::INTERRUPT_SHADOW, 0);
        self.shadow_hold = None;
        self.set_interrupt_window_exit(false);
        self.gprs = *ctx.gprs();
        self.fx = crate::cpu::FxState::initial();
        // Nothing of the old state's translations may be used (TLB_CONTROL at the
        // next VMRUN).
        self.flush = true;
        self.refused = None;
    }

    /// The VMCB, for diagnostics.
    pub fn vmcb(&self) -> &Vmcb {
        &self.vmcb
    }
}

/// Fills a bitmap of `pages` zeroed pages at `pa`, setting bit `i` where `set(i)`.
fn fill_bitmap(pa: Hpa, pages: u64, set: impl Fn(usize) -> bool) {
    let va = keel_mm::layout::directmap_va(pa) as *mut u8;
    for byte in 0..(pages as usize * 4096) {
        let mut b = 0u8;
        for bit in 0..8 {
            if set(byte * 8 + bit) {
                b |= 1 << bit;
            }
        }
        // SAFETY: the caller allocated `pages` frames at `pa` for this bitmap alone,
        // and the direct map covers them.
        unsafe { va.add(byte).write_volatile(b) };
    }
}

/// Enters the guest once: `VMLOAD guest; VMRUN; VMSAVE guest; VMLOAD host`, with the
/// guest's GPRs (other than RAX/RSP, which the VMCB holds) loaded before and stored
/// after.
///
/// # Safety
/// `vmcb` must be a fully initialized VMCB this CPU may run, `host` the page
/// [`enable`] captured, and `gprs` valid for reads and writes. Returns with
/// interrupts disabled and GIF set.
unsafe fn svm_run(vmcb: u64, host: u64, gprs: *mut GuestGprs) {
    // SAFETY: per the function contract. The stub saves rbx and rbp itself (Rust
    // 2024 cannot name them as operands) and declares every other GPR clobbered.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "push rdx",          // host VMCB
            "push rcx",          // &mut GuestGprs
            "push rax",          // guest VMCB
            "clgi",
            "sti",
            "mov rbx, [rcx + 8]",
            "mov rdx, [rcx + 24]",
            "mov rsi, [rcx + 32]",
            "mov rdi, [rcx + 40]",
            "mov rbp, [rcx + 48]",
            "mov r8,  [rcx + 56]",
            "mov r9,  [rcx + 64]",
            "mov r10, [rcx + 72]",
            "mov r11, [rcx + 80]",
            "mov r12, [rcx + 88]",
            "mov r13, [rcx + 96]",
            "mov r14, [rcx + 104]",
            "mov r15, [rcx + 112]",
            "mov rcx, [rcx + 16]",
            "vmload rax",
            "vmrun rax",
            // Back from #VMEXIT: host RSP is restored, GIF = 0.
            "push rcx",          // guest rcx
            "mov rcx, [rsp + 16]",
            "mov [rcx + 8], rbx",
            "mov [rcx + 24], rdx",
            "mov [rcx + 32], rsi",
            "mov [rcx + 40], rdi",
            "mov [rcx + 48], rbp",
            "mov [rcx + 56], r8",
            "mov [rcx + 64], r9",
            "mov [rcx + 72], r10",
            "mov [rcx + 80], r11",
            "mov [rcx + 88], r12",
            "mov [rcx + 96], r13",
            "mov [rcx + 104], r14",
            "mov [rcx + 112], r15",
            "pop rax",
            "mov [rcx + 16], rax",
            "pop rax",           // guest VMCB
            "vmsave rax",
            "pop rcx",
            "pop rax",           // host VMCB
            "vmload rax",
            "cli",
            "stgi",
            "pop rbx",
            "pop rbp",
            inout("rax") vmcb => _,
            inout("rcx") gprs => _,
            inout("rdx") host => _,
            out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
}

impl SvmVcpu {
    /// Sets or withdraws the interrupt window: a V_IRQ the guest can take exits
    /// through the VINTR intercept before it is delivered (APM Vol. 2 §15.21.4),
    /// the window without a virtual APIC.
    fn write_window(&mut self, on: bool) {
        let vintr = self.vmcb.get(vmcb::VINTR) & !(V_IRQ | V_INTR_PRIO_MAX | V_IGN_TPR);
        let misc1 = self.vmcb.get(vmcb::INTERCEPT_MISC1);
        if on {
            self.vmcb
                .set(vmcb::VINTR, vintr | V_IRQ | V_INTR_PRIO_MAX | V_IGN_TPR);
            self.vmcb
                .set(vmcb::INTERCEPT_MISC1, misc1 | intercept1::VINTR);
        } else {
            self.vmcb.set(vmcb::VINTR, vintr);
            self.vmcb
                .set(vmcb::INTERCEPT_MISC1, misc1 & !intercept1::VINTR);
        }
    }
}

impl HvmVcpu for SvmVcpu {
    fn run(&mut self) -> Exit {
        if let Some(e) = self.refused {
            return e.exit();
        }
        let Some(host) = crate::percpu::this().svm_host_vmcb() else {
            return Exit::Failed {
                why: "svm::enable was not called on this CPU",
                code: 0,
                info: 0,
            };
        };
        let me = crate::percpu::index();
        if me != self.last_cpu {
            self.flush = true;
            self.last_cpu = me;
        }
        self.vmcb.set(vmcb::TLB_CONTROL, u8::from(self.flush));
        self.flush = false;
        self.vmcb.set(vmcb::RAX, self.gprs.rax);
        // No V_IRQ inside a shadow: the window would open at once on an
        // emulator that drops the shadow at VMRUN.
        self.write_window(self.window && self.shadow_hold.is_none());
        self.vmcb.set(vmcb::VMCB_CLEAN, 0);
        // SAFETY: the VMCB was initialized by `new` and is owned by self; `host` was
        // captured by `enable` on this very CPU (its PerCpu); gprs is a live &mut.
        unsafe { svm_run(self.vmcb.pa().as_u64(), host, &mut self.gprs) };
        self.gprs.rax = self.vmcb.get(vmcb::RAX);
        // An event cut short by the exit is delivered again on the next entry
        // (APM Vol. 2 §15.7.2), unless the handler injects something else.
        let intinfo = self.vmcb.get(vmcb::EXITINTINFO);
        if intinfo & (1 << 31) != 0 {
            self.vmcb.set(vmcb::EVENTINJ, intinfo);
        } else {
            self.vmcb.set(vmcb::EVENTINJ, 0);
        }
        let rip = self.vmcb.get(vmcb::RIP);
        self.shadow_hold = match self.shadow_hold {
            _ if self.vmcb.get(vmcb::INTERRUPT_SHADOW) & 1 != 0 => Some((rip, SHADOW_HOLD_EXITS)),
            Some((at, n)) if at == rip && n > 1 => Some((at, n - 1)),
            _ => None,
        };
        let code = self.vmcb.get(vmcb::EXITCODE);
        if code == exit::VMEXIT_VINTR {
            // The window keel asked for is open: withdraw the dummy V_IRQ.
            self.set_interrupt_window_exit(false);
        }
        exit::decode(
            code,
            self.vmcb.get(vmcb::EXITINFO1),
            self.vmcb.get(vmcb::EXITINFO2),
        )
    }

    fn gprs(&self) -> &GuestGprs {
        &self.gprs
    }

    fn gprs_mut(&mut self) -> &mut GuestGprs {
        &mut self.gprs
    }

    fn rip(&self) -> u64 {
        self.vmcb.get(vmcb::RIP)
    }

    fn rsp(&self) -> u64 {
        self.vmcb.get(vmcb::RSP)
    }

    fn set_rsp(&mut self, rsp: u64) {
        self.vmcb.set(vmcb::RSP, rsp);
    }

    fn rflags(&self) -> u64 {
        self.vmcb.get(vmcb::RFLAGS)
    }

    fn cr0(&self) -> u64 {
        self.vmcb.get(vmcb::CR0)
    }

    fn cr3(&self) -> u64 {
        self.vmcb.get(vmcb::CR3)
    }

    fn cr4(&self) -> u64 {
        self.vmcb.get(vmcb::CR4)
    }

    fn efer(&self) -> u64 {
        self.vmcb.get(vmcb::EFER) & !EFER_SVME
    }

    fn cs_base(&self) -> u64 {
        self.vmcb.seg(Seg::Cs).base
    }

    fn mode(&self) -> CpuMode {
        let cs = self.vmcb.seg(Seg::Cs);
        CpuMode::from_state(
            self.cr0() & 1 != 0,
            self.vmcb.get(vmcb::EFER) & EFER_LMA != 0,
            cs.attrib & attrib::L != 0,
            cs.attrib & attrib::DB != 0,
        )
    }

    fn cpl(&self) -> u8 {
        self.vmcb.get(vmcb::CPL)
    }

    fn exit_insn_len(&self) -> Option<u64> {
        // IOIO exits always carry the next RIP in EXITINFO2 (APM Vol. 2 §15.10.2).
        let nrip = if self.vmcb.get(vmcb::EXITCODE) == exit::VMEXIT_IOIO {
            self.vmcb.get(vmcb::EXITINFO2)
        } else if self.nrip_save {
            self.vmcb.get(vmcb::NRIP)
        } else {
            return None;
        };
        let len = nrip.wrapping_sub(self.rip());
        (nrip != 0 && (1..=15).contains(&len)).then_some(len)
    }

    fn advance_rip(&mut self, len: u64) {
        let rip = self.mode().next_rip(self.rip(), len);
        self.vmcb.set(vmcb::RIP, rip);
        let shadow = self.vmcb.get(vmcb::INTERRUPT_SHADOW);
        self.vmcb.set(vmcb::INTERRUPT_SHADOW, shadow & !1);
        // The shadowed instruction is done.
        self.shadow_hold = None;
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        // EVENTINJ (APM Vol. 2 §15.20): type 3 = exception, EV = error code valid.
        let mut ev = u64::from(vector) | (3 << 8) | (1 << 31);
        if let Some(e) = error_code {
            ev |= (1 << 11) | (u64::from(e) << 32);
        }
        self.vmcb.set(vmcb::EVENTINJ, ev);
    }

    fn set_efer(&mut self, efer: u64) {
        // LMA is the CPU's to derive: keep the current one (it changes on CR0.PG).
        let lma = self.vmcb.get(vmcb::EFER) & EFER_LMA;
        self.vmcb
            .set(vmcb::EFER, (efer & !EFER_LMA) | lma | EFER_SVME);
    }

    fn read_held_msr(&self, msr: u32) -> Option<u64> {
        let v = &self.vmcb;
        Some(match msr {
            0x174 => v.get(vmcb::SYSENTER_CS),
            0x175 => v.get(vmcb::SYSENTER_ESP),
            0x176 => v.get(vmcb::SYSENTER_EIP),
            0x1D9 => v.get(vmcb::DBGCTL),
            0x277 => v.get(vmcb::G_PAT),
            0xC000_0080 => self.efer(),
            0xC000_0081 => v.get(vmcb::STAR),
            0xC000_0082 => v.get(vmcb::LSTAR),
            0xC000_0083 => v.get(vmcb::CSTAR),
            0xC000_0084 => v.get(vmcb::SFMASK),
            0xC000_0100 => v.seg(Seg::Fs).base,
            0xC000_0101 => v.seg(Seg::Gs).base,
            0xC000_0102 => v.get(vmcb::KERNEL_GS_BASE),
            _ => return None,
        })
    }

    fn write_held_msr(&mut self, msr: u32, value: u64) -> bool {
        let field = match msr {
            0x174 => vmcb::SYSENTER_CS,
            0x175 => vmcb::SYSENTER_ESP,
            0x176 => vmcb::SYSENTER_EIP,
            0x1D9 => vmcb::DBGCTL,
            0x277 => vmcb::G_PAT,
            0xC000_0080 => {
                self.set_efer(value);
                return true;
            }
            0xC000_0081 => vmcb::STAR,
            0xC000_0082 => vmcb::LSTAR,
            0xC000_0083 => vmcb::CSTAR,
            0xC000_0084 => vmcb::SFMASK,
            0xC000_0100 | 0xC000_0101 => {
                let seg = if msr == 0xC000_0100 { Seg::Fs } else { Seg::Gs };
                let mut s = self.vmcb.seg(seg);
                s.base = value;
                self.vmcb.set_seg(seg, s);
                return true;
            }
            0xC000_0102 => vmcb::KERNEL_GS_BASE,
            _ => return false,
        };
        self.vmcb.set(field, value);
        true
    }

    fn flush_guest_tlb(&mut self) {
        self.flush = true;
    }

    fn hypercall_insn(&self) -> HypercallInsnKind {
        HypercallInsnKind::Vmmcall
    }

    fn interrupt_ready(&self) -> bool {
        const RFLAGS_IF: u64 = 1 << 9;
        self.vmcb.get(vmcb::RFLAGS) & RFLAGS_IF != 0
            && self.vmcb.get(vmcb::INTERRUPT_SHADOW) & 1 == 0
            && self.shadow_hold.is_none()
            && self.vmcb.get(vmcb::EVENTINJ) & EVENTINJ_VALID == 0
    }

    fn inject_interrupt(&mut self, vector: u8) {
        // EVENTINJ type 0 = external interrupt (APM Vol. 2 §15.20).
        self.vmcb
            .set(vmcb::EVENTINJ, u64::from(vector) | EVENTINJ_VALID);
    }

    fn set_interrupt_window_exit(&mut self, on: bool) {
        self.window = on;
        self.write_window(on && self.shadow_hold.is_none());
    }

    fn nmi_ready(&self) -> bool {
        // See the module doc: NMI blocking itself is not visible without vNMI.
        self.vmcb.get(vmcb::INTERRUPT_SHADOW) & 1 == 0
            && self.shadow_hold.is_none()
            && self.vmcb.get(vmcb::EVENTINJ) & EVENTINJ_VALID == 0
    }

    fn inject_nmi(&mut self) {
        // EVENTINJ type 2 = NMI; the vector field is ignored for it (APM Vol. 2
        // §15.20), 2 for the record.
        self.vmcb
            .set(vmcb::EVENTINJ, EVENTINJ_VALID | EVENTINJ_TYPE_NMI | 2);
    }

    fn load_context(&mut self, ctx: &Context) {
        match self.prepare(ctx) {
            Ok(()) => self.write_context(ctx),
            Err(e) => self.refused = Some(e),
        }
    }

    fn save_lazy_state(&mut self) {
        // CR2 is in the VMCB; VMSAVE keeps KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK
        // and SYSENTER: only the FPU is left in the registers.
        self.fx.save();
    }

    fn restore_lazy_state(&self) {
        self.fx.restore();
    }

    fn release_cpu(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msrpm_positions() {
        assert_eq!(msrpm_bit(0), Some(0));
        assert_eq!(msrpm_bit(0x174), Some(0x174 * 2));
        assert_eq!(msrpm_bit(0xC000_0080), Some(0x800 * 8 + 0x80 * 2));
        assert_eq!(msrpm_bit(0xC001_0117), Some(0x1000 * 8 + 0x117 * 2));
        assert_eq!(msrpm_bit(0x4000_0000), None);
        assert_eq!(msrpm_bit(0xC000_2000), None);
    }
}
