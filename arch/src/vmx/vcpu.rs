//! [`VmxVcpu`]: one VMCS set up for a PVH guest, and `hvm::HvmVcpu` over it.
//!
//! # Set-up (`new`)
//! Controls from [`controls::compute`]; I/O bitmaps all ones (every port exits); the
//! MSR bitmap intercepting all but [`controls::PASSTHROUGH_MSRS`]; EPT with the
//! caller's p2m root (write-back, 4-level, A/D flags off); VPID when the CPU offers
//! it; the host state keel runs with now; the power-on values of the MSRs the VMCS
//! holds (PAT, DEBUGCTL, SYSENTER_*); and the PVH start-of-day state
//! (`Context::pvh_start`) through `load_context`'s own writer.
//!
//! # Whole states (`load_context`)
//! `prepare` checks what only this CPU can decide (CR0/CR4 against FIXED1 and
//! VMXE, CR3 against MAXPHYADDR) and reads the PDPTEs for PAE paging through the
//! EPT; only then does `write_context` touch the VMCS, so a refused state leaves
//! the vCPU as it was (and `run` reports the refusal). The writer goes through the
//! CR machinery of [`cr`] ([`cr::load`]: real CR0/CR4 with the fixed bits, the read
//! shadows, EFER.LMA and the "IA-32e mode guest" entry control), writes every
//! segment with access rights from [`AccessRights::from_attr`], and clears what the
//! old state left pending: the queued event, interruptibility (STI, MOV SS, NMI
//! blocking), the activity state (active), pending debug exceptions, the
//! interrupt-window request; DR7 is reset, CR2 and the x87/SSE image too.
//!
//! # Run loop (`run`)
//! Enter, read what the exit recorded, re-queue an event whose delivery the exit
//! interrupted, then [`exit::decode`]: most exits go to the kernel; CR0/CR4 writes,
//! INVD, #DB/#AC reflection and host NMIs/machine checks are handled here (see the
//! `exit` module doc).
//!
//! # Interrupts
//! Host interrupts stay pending in the LAPIC ("acknowledge interrupt on exit" = 0)
//! and keel takes them through its own IDT. `run` returns with the caller's RFLAGS
//! restored (a VM exit clears IF; the entry stub puts it back): a caller running with
//! interrupts enabled has the interrupt handled before `run` returns
//! `ExternalInterrupt`; one running with them disabled must enable them before the
//! next `run`, or that entry exits at once for the same interrupt.
//!
//! Bochs 2.7 quirk: while the guest runs with RFLAGS.IF = 0, Bochs does not turn a
//! newly pending host interrupt into an external-interrupt exit until the guest
//! changes IF or takes an event (it keeps the interrupt masked as the host's IF=0
//! left it). Real VMX exits at once. A guest spinning with interrupts off therefore
//! cannot be preempted on Bochs; the VMX-preemption timer would be the backstop
//! (issue #4).
//!
//! # Failure policy
//! A VMREAD or VMWRITE on this vCPU's own, current VMCS cannot fail once `new`
//! succeeded: `new` writes every field the vCPU ever writes (so each exists on this
//! CPU), and exit-information fields exist on every VMX CPU. A failure would mean
//! keel's VMX state is corrupt, and continuing could run a guest with state keel did
//! not choose, so it panics (the third rung of the error ladder).

use core::arch::asm;

use keel_mm::addr::Hpa;
use keel_mm::layout::directmap_va;
use keel_x86::context::{Context, Segment};

use super::VmxError;
use super::controls::{self, AccessRights, Controls, VmxMsrs, cr0, cr4, efer, entry};
use super::cr::{self, CrState, CrUpdate, GeneralProtection};
use super::entry::{self as world, Outcome};
use super::exit::{self, Action, CrAccess, CrAccessKind, Event, ExitInfo};
use super::vmcs::{self, Field, W16, W32, WNat, Width};
use crate::hvm::{
    CpuMode, Exit, FrameSource, GuestGprs, HvmVcpu, HypercallInsnKind, LoadContextError, PvhStart,
};

/// IA32_PAT's power-on value (SDM Vol. 3A §11.12.4): WB, WT, UC-, UC, repeated.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// DR7's reset value (bit 10 reads as 1).
const DR7_DEFAULT: u64 = 0x400;
/// RFLAGS TF and RF matter to RIP advancement.
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
/// Interruptibility state: blocking by STI (bit 0) and by MOV SS (bit 1) (§24.4.2).
const BLOCKING_STI_MOVSS: u32 = 0b11;
/// Interruptibility state: blocking by NMI (bit 3; virtual-NMI blocking with
/// "virtual NMIs") (§24.4.2).
const BLOCKING_NMI: u32 = 1 << 3;
/// Pending debug exceptions: BS, a single-step trap is pending (§24.4.2).
const PENDING_DBG_BS: u64 = 1 << 14;
/// No CPU: a `tlb_cpu` that makes the next entry, wherever it is, flush.
const NO_CPU: u32 = u32::MAX;

/// The VMCS fields of one segment register (§24.4.1).
struct SegmentFields {
    selector: Field<W16>,
    base: Field<WNat>,
    limit: Field<W32>,
    access_rights: Field<W32>,
}

macro_rules! segment_fields {
    ($($name:ident = $sel:ident, $base:ident, $limit:ident, $ar:ident;)*) => {
        $(
            const $name: SegmentFields = SegmentFields {
                selector: vmcs::$sel,
                base: vmcs::$base,
                limit: vmcs::$limit,
                access_rights: vmcs::$ar,
            };
        )*
    };
}

segment_fields! {
    CS_FIELDS = GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_ACCESS_RIGHTS;
    SS_FIELDS = GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_ACCESS_RIGHTS;
    DS_FIELDS = GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_ACCESS_RIGHTS;
    ES_FIELDS = GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_ACCESS_RIGHTS;
    FS_FIELDS = GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_ACCESS_RIGHTS;
    GS_FIELDS = GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_ACCESS_RIGHTS;
    LDTR_FIELDS = GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_ACCESS_RIGHTS;
    TR_FIELDS = GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_ACCESS_RIGHTS;
}

/// The MSRs whose guest values live in VMCS fields (read/write_held_msr).
mod msr {
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const DEBUGCTL: u32 = 0x1D9;
    pub const PAT: u32 = 0x277;
    pub const EFER: u32 = 0xC000_0080;
    pub const FS_BASE: u32 = 0xC000_0100;
    pub const GS_BASE: u32 = 0xC000_0101;
}

/// A VMX vCPU for a PVH guest.
pub struct VmxVcpu {
    /// The VMCS region (one frame).
    vmcs: Hpa,
    gprs: GuestGprs,
    /// The VMCS's launch state: VMLAUNCH until an entry succeeds, then VMRESUME;
    /// cleared again by [`HvmVcpu::release_cpu`] (VMCLEAR).
    launched: bool,
    /// The CPU whose per-CPU tables (TR, GDTR, GS base) the VMCS's host state
    /// names; rewritten when the vCPU runs on another CPU.
    host_cpu: core::cell::Cell<u32>,
    /// The CPU the guest's TLB entries were last made on: arriving on another
    /// one flushes (its earlier entries for this EPTP may be stale).
    tlb_cpu: core::cell::Cell<u32>,
    /// Whether the VMCS is active on the CPU holding the vCPU (loaded by
    /// `make_current` since the last `release_cpu`).
    active: core::cell::Cell<bool>,
    eptp: u64,
    /// 0 when VPIDs are not used.
    vpid: u16,
    ctl: Controls,
    /// What the last exit recorded.
    last: ExitInfo,
    /// The CPU's physical-address width, for PDPTE and CR3 checks.
    maxphyaddr: u8,
    /// Guest state VM exits leave in the CPU, kept here while another vCPU runs.
    lazy: LazyState,
    /// The last `load_context` was refused: `run` reports it instead of entering.
    refused: Option<LoadContextError>,
}

/// A context checked against this CPU, with what it needs from guest memory: all
/// `write_context` needs, so that writing cannot fail on the guest's account.
struct Prepared {
    cr: CrUpdate,
    pdptes: [u64; 4],
}

/// The guest registers VMX neither saves nor loads (SDM Vol. 3C §28.3, §28.5): the
/// x87/SSE file, CR2, and the MSRs keel passes through without VMCS fields.
#[derive(Debug)]
struct LazyState {
    fx: crate::cpu::FxState,
    cr2: u64,
    /// KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, in [`LAZY_MSRS`] order.
    msrs: [u64; 5],
}

const LAZY_MSRS: [u32; 5] = [
    0xC000_0102,
    0xC000_0081,
    0xC000_0082,
    0xC000_0083,
    0xC000_0084,
];

/// The base of the 16-byte system descriptor `lo`, `hi` (SDM Vol. 3A §7.2.3).
fn system_descriptor_base(lo: u64, hi: u64) -> u64 {
    ((lo >> 16) & 0xFF_FFFF) | (((lo >> 56) & 0xFF) << 24) | ((hi & 0xFFFF_FFFF) << 32)
}

/// Reads a segment register's selector.
macro_rules! selector {
    ($reg:literal) => {{
        let v: u16;
        // SAFETY: reading a segment register has no side effects.
        unsafe { asm!(concat!("mov {:x}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// keel's descriptor-table registers: (GDTR base, IDTR base).
fn descriptor_tables() -> (u64, u64) {
    let gdtr = x86_64::instructions::tables::sgdt();
    let idtr = x86_64::instructions::tables::sidt();
    (gdtr.base.as_u64(), idtr.base.as_u64())
}

/// Writes one field while the VMCS is being built, turning a failure into a
/// [`VmxError`] that names the field.
///
/// # Safety
/// As [`vmcs::vmwrite`].
unsafe fn put<W: Width>(f: Field<W>, v: W::Value) -> Result<(), VmxError> {
    // SAFETY: forwarded to the caller.
    unsafe { vmcs::vmwrite(f, v) }.map_err(|error| VmxError::VmwriteFailed {
        field: f.name(),
        error,
    })
}

/// Writes one segment register's four fields while guest state is being written.
///
/// # Safety
/// As [`vmcs::vmwrite`].
unsafe fn put_segment(
    f: &SegmentFields,
    s: &Segment,
    rights: AccessRights,
) -> Result<(), VmxError> {
    // SAFETY: forwarded to the caller; all four are guest-state fields.
    unsafe {
        put(f.selector, s.selector)?;
        put(f.base, s.base)?;
        put(f.limit, s.limit)?;
        put(f.access_rights, rights.encode())
    }
}

impl VmxVcpu {
    /// Builds a vCPU whose VMCS is set up for a PVH guest: unrestricted guest + EPT
    /// (`ept_root`, a 4-level p2m), VPID `vpid` if the CPU supports VPIDs, and the
    /// start state of `start` (32-bit protected mode, paging off, EBX = start info,
    /// RIP = entry). Takes four frames from `frames` (VMCS, two I/O bitmaps, MSR
    /// bitmap), which the vCPU keeps for its lifetime. The new VMCS is current on
    /// this CPU on return.
    ///
    /// # Safety
    /// `ept_root` is the root of a 4-level EPT that keel owns, whose entries map only
    /// memory the guest may access (guest RAM keel gave it), and which stays
    /// allocated and valid for as long as this vCPU can run: the guest can reach
    /// exactly what this EPT maps, and the vCPU itself reads guest memory through it
    /// (PDPTE loads). `frames` hands out frames the caller owns exclusively.
    pub unsafe fn new(
        frames: &mut dyn FrameSource,
        caps: &super::caps::VmxCaps,
        ept_root: Hpa,
        vpid: u16,
        start: PvhStart,
    ) -> Result<VmxVcpu, VmxError> {
        if crate::cpu::read_cr4() & cr4::VMXE == 0 {
            return Err(VmxError::NotEnabled);
        }
        if !caps.ept || !caps.unrestricted_guest {
            return Err(VmxError::MissingControl("EPT with unrestricted guest"));
        }
        let m = VmxMsrs::read();
        let ctl = controls::compute(&m).map_err(|e| VmxError::MissingControl(e.0))?;
        let vpid = if ctl.vpid {
            if vpid == 0 {
                return Err(VmxError::ZeroVpid);
            }
            vpid
        } else {
            0
        };
        let host_tr = {
            let v: u16;
            // SAFETY: STR only reads the task register's selector.
            unsafe { asm!("str {:x}", out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        };
        if host_tr == 0 {
            return Err(VmxError::NoHostTr);
        }

        let vmcs_frame = frames.alloc_zeroed(1).ok_or(VmxError::OutOfMemory)?;
        let io_bitmaps = frames.alloc_zeroed(2).ok_or(VmxError::OutOfMemory)?;
        let msr_bitmap = frames.alloc_zeroed(1).ok_or(VmxError::OutOfMemory)?;
        // SAFETY: the three allocations are fresh frames the caller gave us alone
        // (1 + 2 + 1 frames, the I/O bitmaps contiguous), all inside the direct map.
        unsafe {
            (directmap_va(vmcs_frame) as *mut u32).write_volatile(m.revision());
            core::ptr::write_bytes(directmap_va(io_bitmaps) as *mut u8, 0xFF, 2 * 4096);
            controls::fill_msr_bitmap(&mut *(directmap_va(msr_bitmap) as *mut [u8; 4096]));
        }
        // SAFETY: VMX is on (CR4.VMXE, checked above, is set only once VMXON
        // succeeded); the frame is a VMCS region stamped with the revision.
        unsafe {
            vmcs::vmclear(vmcs_frame.as_u64()).map_err(VmxError::VmclearFailed)?;
            vmcs::vmptrld(vmcs_frame.as_u64()).map_err(VmxError::VmptrldFailed)?;
        }

        let mut vcpu = VmxVcpu {
            vmcs: vmcs_frame,
            gprs: GuestGprs::default(),
            launched: false,
            host_cpu: core::cell::Cell::new(crate::percpu::index()),
            tlb_cpu: core::cell::Cell::new(crate::percpu::index()),
            active: core::cell::Cell::new(false),
            eptp: super::ept::eptp(ept_root, false),
            vpid,
            ctl,
            last: ExitInfo::default(),
            maxphyaddr: (crate::cpu::cpuid(0x8000_0008, 0).0 & 0xFF) as u8,
            lazy: LazyState {
                fx: crate::cpu::FxState::initial(),
                cr2: 0,
                msrs: [0; 5],
            },
            refused: None,
        };
        let ctx = start.context();
        // Paging is off at the PVH start: no guest memory is read.
        let prepared = vcpu.prepare(&ctx, 0).map_err(VmxError::StartState)?;
        // SAFETY: VMX is on and the new VMCS is current (VMPTRLD above). The control
        // fields name the bitmaps just allocated and the EPT the caller vouches for;
        // the host state is keel's own, read from the CPU just now; the rest is
        // guest state.
        unsafe {
            vcpu.write_controls(io_bitmaps, msr_bitmap)?;
            vcpu.write_host_state(host_tr)?;
            vcpu.write_guest_msrs()?;
            vcpu.write_context(&ctx, &prepared)?;
        }
        // At rest a VMCS is active on no CPU (module doc, "Per CPU").
        // SAFETY: VMX is on and the region is this vCPU's.
        unsafe { vmcs::vmclear(vmcs_frame.as_u64()).map_err(VmxError::VmclearFailed)? };
        log::debug!(
            "VMX: vCPU VMCS at {:#x}, EPTP {:#x}, VPID {}, controls pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}",
            vmcs_frame.as_u64(),
            vcpu.eptp,
            vpid,
            ctl.pin,
            ctl.proc,
            ctl.proc2,
            ctl.exit,
            ctl.entry
        );
        Ok(vcpu)
    }

    /// # Safety
    /// VMX is on, this VMCS is current, the bitmaps are frames this vCPU owns.
    unsafe fn write_controls(&self, io_bitmaps: Hpa, msr_bitmap: Hpa) -> Result<(), VmxError> {
        use vmcs::*;
        let c = &self.ctl;
        // SAFETY: per this function's contract.
        unsafe {
            put(PIN_BASED_CONTROLS, c.pin)?;
            put(PROC_BASED_CONTROLS, c.proc)?;
            put(SECONDARY_CONTROLS, c.proc2)?;
            put(VM_EXIT_CONTROLS, c.exit)?;
            put(VM_ENTRY_CONTROLS, c.entry)?;
            put(EXCEPTION_BITMAP, controls::EXCEPTION_BITMAP)?;
            put(PAGE_FAULT_ERROR_CODE_MASK, 0)?;
            put(PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
            put(CR3_TARGET_COUNT, 0)?;
            put(IO_BITMAP_A, io_bitmaps.as_u64())?;
            put(IO_BITMAP_B, io_bitmaps.as_u64() + 4096)?;
            put(MSR_BITMAP, msr_bitmap.as_u64())?;
            put(VM_EXIT_MSR_STORE_COUNT, 0)?;
            put(VM_EXIT_MSR_LOAD_COUNT, 0)?;
            put(VM_ENTRY_MSR_LOAD_COUNT, 0)?;
            put(VM_ENTRY_INTERRUPTION_INFO, 0)?;
            put(VM_ENTRY_EXCEPTION_ERROR_CODE, 0)?;
            put(VM_ENTRY_INSTRUCTION_LEN, 0)?;
            put(CR0_GUEST_HOST_MASK, c.cr.cr0_mask)?;
            put(CR4_GUEST_HOST_MASK, c.cr.cr4_mask)?;
            put(EPT_POINTER, self.eptp)?;
            if self.vpid != 0 {
                put(VPID, self.vpid)?;
            }
            put(VMCS_LINK_POINTER, u64::MAX)?;
        }
        Ok(())
    }

    /// # Safety
    /// VMX is on and this VMCS is current; `tr` is keel's loaded task register.
    unsafe fn write_host_state(&self, tr: u16) -> Result<(), VmxError> {
        use crate::cpu::{read_cr0, read_cr3, read_cr4};
        use crate::msr::{IA32_EFER, rdmsr};
        use vmcs::*;
        let (gdt_base, idt_base) = descriptor_tables();
        // SAFETY: `tr` indexes keel's GDT, which holds its 16-byte TSS descriptor;
        // the GDT is a static in the image, mapped and never freed.
        let tr_base = unsafe {
            let desc = (gdt_base + u64::from(tr & !7)) as *const u64;
            system_descriptor_base(desc.read_volatile(), desc.add(1).read_volatile())
        };
        // SAFETY: IA32_PAT, IA32_EFER, FS_BASE and GS_BASE exist on every x86-64 CPU
        // with VMX; reads have no side effects.
        let (pat, host_efer, fs_base, gs_base) = unsafe {
            (
                rdmsr(msr::PAT),
                rdmsr(IA32_EFER),
                rdmsr(msr::FS_BASE),
                rdmsr(msr::GS_BASE),
            )
        };
        let sel = [
            selector!("cs"),
            selector!("ss"),
            selector!("ds"),
            selector!("es"),
            selector!("fs"),
            selector!("gs"),
        ];
        // SAFETY: every value is what keel runs with right now (selectors with RPL 0
        // and TI 0 from keel's GDT), so a VM exit restores keel exactly; HOST_RIP is
        // the stub's exit label. The contract gives VMX on and this VMCS current.
        unsafe {
            put(HOST_CR0, read_cr0())?;
            put(HOST_CR3, read_cr3())?;
            put(HOST_CR4, read_cr4())?;
            put(HOST_CS_SELECTOR, sel[0])?;
            put(HOST_SS_SELECTOR, sel[1])?;
            put(HOST_DS_SELECTOR, sel[2])?;
            put(HOST_ES_SELECTOR, sel[3])?;
            put(HOST_FS_SELECTOR, sel[4])?;
            put(HOST_GS_SELECTOR, sel[5])?;
            put(HOST_TR_SELECTOR, tr)?;
            put(HOST_FS_BASE, fs_base)?;
            put(HOST_GS_BASE, gs_base)?;
            put(HOST_TR_BASE, tr_base)?;
            put(HOST_GDTR_BASE, gdt_base)?;
            put(HOST_IDTR_BASE, idt_base)?;
            put(HOST_IA32_PAT, pat)?;
            put(HOST_IA32_EFER, host_efer)?;
            put(HOST_SYSENTER_CS, 0)?;
            put(HOST_SYSENTER_ESP, 0)?;
            put(HOST_SYSENTER_EIP, 0)?;
            put(HOST_RIP, world::exit_label())?;
        }
        Ok(())
    }

    /// The power-on values of the MSRs the VMCS holds for the guest (SDM Vol. 3A
    /// §10.1.1, table 10-1: PAT's default, the rest 0). A loaded context keeps them.
    ///
    /// # Safety
    /// VMX is on and this VMCS is current.
    unsafe fn write_guest_msrs(&self) -> Result<(), VmxError> {
        use vmcs::*;
        // SAFETY: guest-state fields cannot affect the host; VM entry checks them.
        // The contract gives VMX on and this VMCS current.
        unsafe {
            put(GUEST_IA32_PAT, PAT_DEFAULT)?;
            put(GUEST_IA32_DEBUGCTL, 0)?;
            put(GUEST_SYSENTER_CS, 0)?;
            put(GUEST_SYSENTER_ESP, 0)?;
            put(GUEST_SYSENTER_EIP, 0)?;
        }
        Ok(())
    }

    /// Checks `ctx` against what this CPU allows and reads the PDPTEs it needs,
    /// touching nothing; `cr0_now` is the real CR0 (whose CD/NW are the host's).
    fn prepare(&self, ctx: &Context, cr0_now: u64) -> Result<Prepared, LoadContextError> {
        let cr = cr::load(&self.ctl.cr, cr0_now, ctx.cr0(), ctx.cr4(), ctx.efer())?;
        crate::hvm::check_cr3_width(ctx.cr3(), self.maxphyaddr)?;
        let pdptes = if cr.load_pdptes {
            self.read_pdptes(ctx.cr3())
                .map_err(|GeneralProtection| LoadContextError::BadPdptes { cr3: ctx.cr3() })?
        } else {
            // Not used without PAE paging; VM entry checks them only with it
            // (§26.3.1.6).
            [0; 4]
        };
        Ok(Prepared { cr, pdptes })
    }

    /// Writes the whole architectural state `ctx` (checked into `p` by
    /// `prepare`), and clears what the old state left pending (module doc). The
    /// one writer of guest state for `new` and `load_context`. Every value is one
    /// VM entry accepts (SDM Vol. 3C §26.3.1; `keel_x86::context` for the
    /// architectural rules, `prepare` for this CPU's):
    /// - CR0/CR4 with the FIXED0 bits on and the guest's values in the read
    ///   shadows; CR0.PE/PG free under unrestricted guest (§26.3.1.1);
    /// - EFER.LMA equal to "IA-32e mode guest", and to LME with paging (§26.3.1.1);
    /// - segment access rights in the VMCS format, a null segment unusable, TR
    ///   always usable (it must be, §26.3.1.2; a context's TR is present);
    /// - GDTR/IDTR limits of 16 bits (§26.3.1.3);
    /// - interruptibility 0 and activity "active" (§26.3.1.5), no event injected.
    ///
    /// # Safety
    /// VMX is on and this VMCS is current.
    unsafe fn write_context(&mut self, ctx: &Context, p: &Prepared) -> Result<(), VmxError> {
        use vmcs::*;
        let entry_controls = if p.cr.efer & efer::LMA != 0 {
            self.ctl.entry | entry::IA32E_MODE_GUEST
        } else {
            self.ctl.entry
        };
        self.ctl.proc &= !controls::proc::INTERRUPT_WINDOW_EXITING;
        let segments = [
            (CS_FIELDS, ctx.cs()),
            (SS_FIELDS, ctx.ss()),
            (DS_FIELDS, ctx.ds()),
            (ES_FIELDS, ctx.es()),
            (FS_FIELDS, ctx.fs()),
            (GS_FIELDS, ctx.gs()),
            (LDTR_FIELDS, ctx.ldtr()),
        ];
        let tr = ctx.tr();
        let tr_rights = AccessRights {
            unusable: false,
            ..AccessRights::from_attr(tr.attr)
        };
        // SAFETY: guest-state fields, the CR shadows, the entry and primary
        // processor-based controls (with only "IA-32e mode guest" and
        // interrupt-window exiting changed from what `compute` allowed) and event
        // injection: none can point the CPU at host memory, and VM entry checks
        // them all. The contract gives VMX on and this VMCS current.
        unsafe {
            put(GUEST_CR0, p.cr.cr0)?;
            put(CR0_READ_SHADOW, p.cr.cr0_shadow)?;
            put(GUEST_CR4, p.cr.cr4)?;
            put(CR4_READ_SHADOW, p.cr.cr4_shadow)?;
            put(GUEST_CR3, ctx.cr3())?;
            put(GUEST_IA32_EFER, p.cr.efer)?;
            put(VM_ENTRY_CONTROLS, entry_controls)?;
            for (f, v) in [GUEST_PDPTE0, GUEST_PDPTE1, GUEST_PDPTE2, GUEST_PDPTE3]
                .into_iter()
                .zip(p.pdptes)
            {
                put(f, v)?;
            }
            put(GUEST_RIP, ctx.rip())?;
            put(GUEST_RSP, ctx.rsp())?;
            put(GUEST_RFLAGS, ctx.rflags())?;
            for (f, seg) in &segments {
                put_segment(f, seg, AccessRights::from_attr(seg.attr))?;
            }
            put_segment(&TR_FIELDS, &tr, tr_rights)?;
            put(GUEST_GDTR_BASE, ctx.gdtr().base)?;
            put(GUEST_GDTR_LIMIT, u32::from(ctx.gdtr().limit))?;
            put(GUEST_IDTR_BASE, ctx.idtr().base)?;
            put(GUEST_IDTR_LIMIT, u32::from(ctx.idtr().limit))?;
            put(GUEST_DR7, DR7_DEFAULT)?;
            put(GUEST_INTERRUPTIBILITY, 0)?;
            put(GUEST_ACTIVITY_STATE, 0)?;
            put(GUEST_PENDING_DEBUG_EXCEPTIONS, 0)?;
            put(VM_ENTRY_INTERRUPTION_INFO, 0)?;
            put(VM_ENTRY_EXCEPTION_ERROR_CODE, 0)?;
            put(VM_ENTRY_INSTRUCTION_LEN, 0)?;
            put(PROC_BASED_CONTROLS, self.ctl.proc)?;
        }
        self.gprs = *ctx.gprs();
        self.lazy.fx = crate::cpu::FxState::initial();
        self.lazy.cr2 = 0;
        self.last = ExitInfo::default();
        self.refused = None;
        Ok(())
    }

    /// Makes this vCPU's VMCS the current one on this CPU.
    fn make_current(&self) {
        // SAFETY: a VmxVcpu exists only where VMX is on (`new` checked), and its
        // VMCS region is a stamped frame it owns.
        if unsafe { vmcs::vmptrst() } == self.vmcs.as_u64() {
            return;
        }
        // SAFETY: as above; at rest the VMCS is active on no CPU (the kernel
        // releases it, `release_cpu`, before another CPU can take the vCPU).
        if let Err(e) = unsafe { vmcs::vmptrld(self.vmcs.as_u64()) } {
            panic!(
                "VMX: VMPTRLD of a vCPU's own VMCS at {:#x} failed: {e}",
                self.vmcs.as_u64()
            );
        }
        self.active.set(true);
        let me = crate::percpu::index();
        if self.host_cpu.get() != me {
            // Another CPU's tables: a VM exit must land in this one's.
            let tr: u16;
            // SAFETY: STR only reads the task register's selector.
            unsafe { asm!("str {:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
            // SAFETY: VMX is on and this VMCS was just made current; the host state
            // is this CPU's own, read from it now.
            if let Err(e) = unsafe { self.write_host_state(tr) } {
                panic!("VMX: writing the host state on CPU {me} failed: {e}");
            }
            self.host_cpu.set(me);
        }
    }

    /// Flushes this EPTP's cached translations on this CPU if the guest last ran
    /// elsewhere (its entries here may predate p2m changes made since).
    fn flush_if_moved(&mut self) {
        let me = crate::percpu::index();
        if self.tlb_cpu.get() != me {
            self.flush_guest_tlb();
            self.tlb_cpu.set(me);
        }
    }

    /// Reads a field of this vCPU's VMCS (see the module doc's failure policy).
    fn read<W: Width>(&self, f: Field<W>) -> W::Value {
        self.make_current();
        // SAFETY: VMX is on wherever a VmxVcpu exists; reading has no side effects.
        match unsafe { vmcs::vmread(f) } {
            Ok(v) => v,
            Err(e) => panic!("VMX: VMREAD {f:?} failed: {e}"),
        }
    }

    /// Writes a guest-state or event-injection field of this vCPU's VMCS (never a
    /// host-state field or an address: those are written once, by `new`).
    fn write<W: Width>(&mut self, f: Field<W>, v: W::Value) {
        debug_assert!(!f.is_host_state());
        self.make_current();
        // SAFETY: VMX is on wherever a VmxVcpu exists. The fields written after `new`
        // are guest state, the CR shadows, the entry controls and event injection,
        // which VM entry checks and which cannot point the CPU at host memory.
        if let Err(e) = unsafe { vmcs::vmwrite(f, v) } {
            panic!("VMX: VMWRITE {f:?} = {v:?} failed: {e}");
        }
    }

    fn read_exit_info(&self) -> ExitInfo {
        use vmcs::*;
        ExitInfo {
            reason: self.read(EXIT_REASON),
            qualification: self.read(EXIT_QUALIFICATION),
            interruption_info: self.read(VM_EXIT_INTERRUPTION_INFO),
            interruption_error: self.read(VM_EXIT_INTERRUPTION_ERROR_CODE),
            idt_vectoring_info: self.read(IDT_VECTORING_INFO),
            idt_vectoring_error: self.read(IDT_VECTORING_ERROR_CODE),
            insn_len: self.read(VM_EXIT_INSTRUCTION_LEN),
            guest_physical: self.read(GUEST_PHYSICAL_ADDRESS),
        }
    }

    /// Queues `e` for delivery at the next VM entry.
    fn set_pending_event(&mut self, e: Event) {
        use vmcs::*;
        self.write(VM_ENTRY_EXCEPTION_ERROR_CODE, e.error_code);
        self.write(VM_ENTRY_INSTRUCTION_LEN, e.insn_len);
        self.write(VM_ENTRY_INTERRUPTION_INFO, e.info);
    }

    fn event_pending(&self) -> bool {
        self.read(vmcs::VM_ENTRY_INTERRUPTION_INFO) & exit::intr::VALID != 0
    }

    /// Sets or clears `bits` of the guest's interruptibility state.
    fn set_blocking(&mut self, bits: u32, on: bool) {
        let now = self.read(vmcs::GUEST_INTERRUPTIBILITY);
        let new = if on { now | bits } else { now & !bits };
        if new != now {
            self.write(vmcs::GUEST_INTERRUPTIBILITY, new);
        }
    }

    fn cr_state(&self) -> CrState {
        use vmcs::*;
        CrState {
            cr0: self.read(GUEST_CR0),
            cr0_shadow: self.read(CR0_READ_SHADOW),
            cr4: self.read(GUEST_CR4),
            cr4_shadow: self.read(CR4_READ_SHADOW),
            cr3: self.read(GUEST_CR3),
            efer: self.read(GUEST_IA32_EFER),
            cs_long: AccessRights::decode(self.read(GUEST_CS_ACCESS_RIGHTS)).long,
        }
    }

    /// The value of general-purpose register `n` (instruction encoding) as an
    /// instruction in the current mode sees it: 32 bits outside 64-bit mode.
    fn gpr(&self, n: u8) -> u64 {
        let v = match n {
            4 => self.read(vmcs::GUEST_RSP),
            _ => self.gprs.by_encoding(n).unwrap_or(0),
        };
        if self.mode() == CpuMode::Long64 {
            v
        } else {
            v & 0xFFFF_FFFF
        }
    }

    fn set_gpr(&mut self, n: u8, v: u64) {
        match n {
            4 => self.write(vmcs::GUEST_RSP, v),
            _ => {
                if let Some(r) = self.gprs.by_encoding_mut(n) {
                    *r = v;
                }
            }
        }
    }

    /// Sets EFER and the "IA-32e mode guest" entry control, which VM entry requires
    /// to equal EFER.LMA (§26.2.1.3).
    fn put_efer(&mut self, value: u64) {
        self.write(vmcs::GUEST_IA32_EFER, value);
        let mut ctls = self.read(vmcs::VM_ENTRY_CONTROLS);
        if value & efer::LMA != 0 {
            ctls |= entry::IA32E_MODE_GUEST;
        } else {
            ctls &= !entry::IA32E_MODE_GUEST;
        }
        self.write(vmcs::VM_ENTRY_CONTROLS, ctls);
    }

    /// Reads the four PDPTEs for PAE paging from guest-physical `cr3` through the
    /// EPT (§26.3.2.4); `Err` (#GP for the guest) if CR3 points at memory the p2m
    /// does not map or an entry sets a reserved bit.
    fn read_pdptes(&self, cr3: u64) -> Result<[u64; 4], GeneralProtection> {
        let gpa = cr3 & 0xFFFF_FFE0;
        let read_entry = |hpa: u64| {
            // SAFETY: `new`'s contract: the EPT is keel's, so every table the walk
            // visits is a frame keel owns, inside the direct map; entries are 8-byte
            // aligned (table base + 8 * index).
            unsafe {
                (keel_mm::layout::DIRECTMAP_BASE.wrapping_add(hpa) as *const u64).read_volatile()
            }
        };
        let hpa = cr::ept_translate(self.eptp, gpa, read_entry).ok_or(GeneralProtection)?;
        let mut pdptes = [0u64; 4];
        for (i, p) in pdptes.iter_mut().enumerate() {
            // SAFETY: `hpa` is guest RAM the EPT maps (keel's frames, in the direct
            // map); 32 bytes at a 32-byte-aligned address stay within one page.
            *p = unsafe {
                (keel_mm::layout::DIRECTMAP_BASE.wrapping_add(hpa + 8 * i as u64) as *const u64)
                    .read_volatile()
            };
        }
        if !cr::pdptes_valid(&pdptes, self.maxphyaddr) {
            return Err(GeneralProtection);
        }
        Ok(pdptes)
    }

    /// Loads the four PDPTEs at `cr3` into the VMCS (see `read_pdptes`).
    fn load_pdptes(&mut self, cr3: u64) -> Result<(), GeneralProtection> {
        let pdptes = self.read_pdptes(cr3)?;
        use vmcs::*;
        for (f, v) in [GUEST_PDPTE0, GUEST_PDPTE1, GUEST_PDPTE2, GUEST_PDPTE3]
            .into_iter()
            .zip(pdptes)
        {
            self.write(f, v);
        }
        Ok(())
    }

    /// Flushes the guest's linear and combined translations (its VPID's), as a
    /// paging-mode change in the guest requires; without VPIDs every VM entry does.
    fn flush_vpid(&mut self) {
        if self.vpid == 0 {
            return;
        }
        // SAFETY: VMX is on; `compute` chose a kind the CPU supports.
        if let Err(e) = unsafe { vmcs::invvpid(self.ctl.invvpid_kind, self.vpid) } {
            panic!(
                "VMX: INVVPID type {} for VPID {} failed: {e}",
                self.ctl.invvpid_kind, self.vpid
            );
        }
    }

    fn apply_cr_update(&mut self, u: CrUpdate) -> Result<(), GeneralProtection> {
        use vmcs::*;
        if u.load_pdptes {
            self.load_pdptes(self.read(GUEST_CR3))?;
        }
        self.write(GUEST_CR0, u.cr0);
        self.write(CR0_READ_SHADOW, u.cr0_shadow);
        self.write(GUEST_CR4, u.cr4);
        self.write(CR4_READ_SHADOW, u.cr4_shadow);
        self.put_efer(u.efer);
        if u.flush_tlb {
            self.flush_vpid();
        }
        Ok(())
    }

    /// Emulates a control-register access that exited; `Err` for one keel does not
    /// expect (not a CR keel owns bits of).
    fn emulate_cr(&mut self, a: CrAccess) -> Result<(), Exit> {
        let s = self.cr_state();
        let f = self.ctl.cr;
        let result = match (a.cr, a.kind) {
            (0, CrAccessKind::MovTo) => cr::write_cr0(&s, &f, self.gpr(a.gpr)),
            (0, CrAccessKind::Clts) => cr::write_cr0(&s, &f, cr::clts_value(&s, &f)),
            (0, CrAccessKind::Lmsw(src)) => cr::write_cr0(&s, &f, cr::lmsw_value(&s, &f, src)),
            (4, CrAccessKind::MovTo) => cr::write_cr4(&s, &f, self.gpr(a.gpr)),
            (3, CrAccessKind::MovFrom) => {
                // Only with CR3-store exiting forced on (no TRUE controls).
                self.set_gpr(a.gpr, s.cr3);
                self.complete_insn();
                return Ok(());
            }
            (3, CrAccessKind::MovTo) => {
                // Only with CR3-load exiting forced on (no TRUE controls).
                let value = self.gpr(a.gpr);
                let pae = s.cr0 & cr0::PG != 0 && s.cr4 & cr4::PAE != 0 && s.efer & efer::LMA == 0;
                if pae && self.load_pdptes(value).is_err() {
                    self.raise_gp();
                    return Ok(());
                }
                self.write(vmcs::GUEST_CR3, value);
                self.flush_vpid();
                self.complete_insn();
                return Ok(());
            }
            _ => {
                return Err(Exit::Failed {
                    why: "unexpected control-register access",
                    code: u64::from(self.last.reason),
                    info: self.last.qualification,
                });
            }
        };
        match result.and_then(|u| self.apply_cr_update(u)) {
            Ok(()) => self.complete_insn(),
            Err(GeneralProtection) => self.raise_gp(),
        }
        Ok(())
    }

    /// Completes the instruction that exited (it has a recorded length).
    fn complete_insn(&mut self) {
        let len = self.last.insn_len().unwrap_or(0);
        self.advance_rip(len);
    }

    fn raise_gp(&mut self) {
        self.inject_exception(13, Some(0));
    }
}

/// Re-raises an NMI that arrived while the guest ran to keel's own NMI handler.
fn raise_host_nmi() {
    // SAFETY: keel's IDT (traps::init) has a gate for vector 2 on its own IST stack;
    // INT 2 runs that handler as a software interrupt.
    unsafe { asm!("int 2") };
}

/// Re-raises a machine check that arrived while the guest ran to keel's handler.
fn raise_host_machine_check() {
    // SAFETY: keel's IDT has a gate for vector 18 on its own IST stack.
    unsafe { asm!("int 18") };
}

/// Writes DR6 (the guest's: keel does not use the debug registers).
fn write_dr6(v: u64) {
    // SAFETY: DR6 is status only; keel never reads it, the guest's value lives there.
    unsafe { asm!("mov dr6, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

impl HvmVcpu for VmxVcpu {
    fn run(&mut self) -> Exit {
        if let Some(e) = self.refused {
            return e.exit();
        }
        loop {
            self.make_current();
            self.flush_if_moved();
            // SAFETY: VMX is on (a VmxVcpu exists only then) and this vCPU's VMCS is
            // current; `new` wrote its host state from keel's live state and its
            // control fields name the bitmaps it owns and the EPT its caller vouched
            // for; `launched` tracks the VMCS's launch state.
            let outcome = unsafe { world::enter(&mut self.gprs, self.launched) };
            match outcome {
                Outcome::Exited => {}
                Outcome::FailInvalid => {
                    return Exit::Failed {
                        why: "VM entry failed: VMfailInvalid (no current VMCS)",
                        code: 0,
                        info: 0,
                    };
                }
                Outcome::FailValid => {
                    let n = self.read(vmcs::VM_INSTRUCTION_ERROR);
                    return Exit::Failed {
                        why: vmcs::instruction_error_name(n),
                        code: u64::from(n),
                        info: 0,
                    };
                }
            }
            self.last = self.read_exit_info();
            if !self.last.entry_failed() {
                self.launched = true;
            }
            if self.ctl.virtual_nmis && exit::nmi_unblocked_by_iret(&self.last) {
                // The guest's IRET runs again and must find NMIs still blocked.
                self.set_blocking(BLOCKING_NMI, true);
            }
            if let Some(e) = exit::reinjection(&self.last) {
                if self.ctl.virtual_nmis && exit::intr::kind(e.info) == exit::intr::TYPE_NMI {
                    // An NMI whose delivery the exit cut short is delivered again;
                    // VM entry refuses to inject one while blocking by NMI is set
                    // (§26.3.1.5), and its delivery will set it (§31.7.1.2).
                    self.set_blocking(BLOCKING_NMI, false);
                }
                self.set_pending_event(e);
            }
            match exit::decode(&self.last) {
                Action::Exit(Exit::InterruptWindow) => {
                    self.set_interrupt_window_exit(false);
                    return Exit::InterruptWindow;
                }
                Action::Exit(e) => return e,
                Action::CrAccess(a) => {
                    if let Err(e) = self.emulate_cr(a) {
                        return e;
                    }
                }
                Action::HostNmi => {
                    raise_host_nmi();
                    return Exit::ExternalInterrupt;
                }
                Action::HostMachineCheck => {
                    raise_host_machine_check();
                    return Exit::ExternalInterrupt;
                }
                Action::Reflect { event, dr6 } => {
                    // An event whose delivery was interrupted goes first; if it
                    // raises the exception again, the next exit reflects it.
                    if !self.event_pending() {
                        if let Some(bits) = dr6 {
                            write_dr6(0xFFFF_0FF0 | bits);
                        }
                        self.set_pending_event(event);
                    }
                }
                Action::Skip => self.complete_insn(),
            }
        }
    }

    fn gprs(&self) -> &GuestGprs {
        &self.gprs
    }

    fn gprs_mut(&mut self) -> &mut GuestGprs {
        &mut self.gprs
    }

    fn rip(&self) -> u64 {
        self.read(vmcs::GUEST_RIP)
    }

    fn rsp(&self) -> u64 {
        self.read(vmcs::GUEST_RSP)
    }

    fn set_rsp(&mut self, rsp: u64) {
        self.write(vmcs::GUEST_RSP, rsp);
    }

    fn rflags(&self) -> u64 {
        self.read(vmcs::GUEST_RFLAGS)
    }

    fn cr0(&self) -> u64 {
        self.cr_state().guest_cr0(&self.ctl.cr)
    }

    fn cr3(&self) -> u64 {
        self.read(vmcs::GUEST_CR3)
    }

    fn cr4(&self) -> u64 {
        self.cr_state().guest_cr4(&self.ctl.cr)
    }

    fn efer(&self) -> u64 {
        self.read(vmcs::GUEST_IA32_EFER)
    }

    fn cs_base(&self) -> u64 {
        self.read(vmcs::GUEST_CS_BASE)
    }

    fn mode(&self) -> CpuMode {
        let cs = AccessRights::decode(self.read(vmcs::GUEST_CS_ACCESS_RIGHTS));
        CpuMode::from_state(
            self.read(vmcs::GUEST_CR0) & cr0::PE != 0,
            self.efer() & efer::LMA != 0,
            cs.long,
            cs.default_big,
        )
    }

    fn cpl(&self) -> u8 {
        // The CPL is SS.DPL in the VMCS guest state (§24.4.1).
        AccessRights::decode(self.read(vmcs::GUEST_SS_ACCESS_RIGHTS)).dpl
    }

    fn exit_insn_len(&self) -> Option<u64> {
        self.last.insn_len()
    }

    fn advance_rip(&mut self, len: u64) {
        use vmcs::*;
        let rip = self.mode().next_rip(self.rip(), len);
        self.write(GUEST_RIP, rip);
        let blocking = self.read(GUEST_INTERRUPTIBILITY);
        if blocking & BLOCKING_STI_MOVSS != 0 {
            self.write(GUEST_INTERRUPTIBILITY, blocking & !BLOCKING_STI_MOVSS);
        }
        let rflags = self.rflags();
        if rflags & RFLAGS_RF != 0 {
            self.write(GUEST_RFLAGS, rflags & !RFLAGS_RF);
        }
        if rflags & RFLAGS_TF != 0 {
            // The emulated instruction completed under single-step: the guest gets
            // its #DB trap after entry (§24.4.2 pending debug exceptions).
            let pending = self.read(GUEST_PENDING_DEBUG_EXCEPTIONS);
            self.write(GUEST_PENDING_DEBUG_EXCEPTIONS, pending | PENDING_DBG_BS);
        }
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let pe = self.read(vmcs::GUEST_CR0) & cr0::PE != 0;
        let len = self.last.insn_len().unwrap_or(1);
        match exit::exception_event(vector, error_code, pe, len) {
            Some(e) => self.set_pending_event(e),
            None => {
                log::error!("VMX: inject_exception({vector}): not an exception vector; ignored")
            }
        }
    }

    fn set_efer(&mut self, value: u64) {
        let pg = self.read(vmcs::GUEST_CR0) & cr0::PG != 0;
        let lma = if pg && value & efer::LME != 0 {
            efer::LMA
        } else {
            0
        };
        self.put_efer((value & !efer::LMA) | lma);
    }

    fn read_held_msr(&self, m: u32) -> Option<u64> {
        use vmcs::*;
        Some(match m {
            msr::PAT => self.read(GUEST_IA32_PAT),
            msr::SYSENTER_CS => u64::from(self.read(GUEST_SYSENTER_CS)),
            msr::SYSENTER_ESP => self.read(GUEST_SYSENTER_ESP),
            msr::SYSENTER_EIP => self.read(GUEST_SYSENTER_EIP),
            msr::FS_BASE => self.read(GUEST_FS_BASE),
            msr::GS_BASE => self.read(GUEST_GS_BASE),
            msr::DEBUGCTL => self.read(GUEST_IA32_DEBUGCTL),
            msr::EFER => self.read(GUEST_IA32_EFER),
            _ => return None,
        })
    }

    fn write_held_msr(&mut self, m: u32, value: u64) -> bool {
        use vmcs::*;
        // The caller has validated `value` as WRMSR would (canonical bases, PAT
        // memory types); an invalid one makes the next entry fail, which the kernel
        // sees as Exit::Failed for this guest alone.
        match m {
            msr::PAT => self.write(GUEST_IA32_PAT, value),
            msr::SYSENTER_CS => self.write(GUEST_SYSENTER_CS, value as u32),
            msr::SYSENTER_ESP => self.write(GUEST_SYSENTER_ESP, value),
            msr::SYSENTER_EIP => self.write(GUEST_SYSENTER_EIP, value),
            msr::FS_BASE => self.write(GUEST_FS_BASE, value),
            msr::GS_BASE => self.write(GUEST_GS_BASE, value),
            msr::DEBUGCTL => self.write(GUEST_IA32_DEBUGCTL, value),
            _ => return false,
        }
        true
    }

    fn flush_guest_tlb(&mut self) {
        // SAFETY: VMX is on; `compute` chose an INVEPT type the CPU supports, and
        // single-context INVEPT takes this vCPU's (valid) EPTP.
        if let Err(e) = unsafe { vmcs::invept(self.ctl.invept_kind, self.eptp) } {
            panic!(
                "VMX: INVEPT type {} of EPTP {:#x} failed: {e}",
                self.ctl.invept_kind, self.eptp
            );
        }
    }

    fn hypercall_insn(&self) -> HypercallInsnKind {
        HypercallInsnKind::Vmcall
    }

    fn release_cpu(&mut self) {
        if !self.active.replace(false) {
            self.launched = false;
            return;
        }
        // SAFETY: VMX is on; VMCLEAR of this vCPU's own region, active on this
        // CPU (§24.11.3): afterwards it is active nowhere.
        if let Err(e) = unsafe { vmcs::vmclear(self.vmcs.as_u64()) } {
            panic!("VMX: VMCLEAR of a vCPU's own VMCS failed: {e}");
        }
        self.launched = false;
    }

    fn interrupt_ready(&self) -> bool {
        const RFLAGS_IF: u64 = 1 << 9;
        self.rflags() & RFLAGS_IF != 0
            && self.read(vmcs::GUEST_INTERRUPTIBILITY) & BLOCKING_STI_MOVSS == 0
            && !self.event_pending()
    }

    fn inject_interrupt(&mut self, vector: u8) {
        // Type 0 = external interrupt (SDM Vol. 3C §26.2.1.3).
        self.set_pending_event(Event {
            info: u32::from(vector) | exit::intr::TYPE_EXTERNAL << 8 | exit::intr::VALID,
            error_code: 0,
            insn_len: 0,
        });
    }

    fn set_interrupt_window_exit(&mut self, on: bool) {
        use controls::proc::INTERRUPT_WINDOW_EXITING as W;
        // Every VMX CPU allows this control to be 1 (SDM Vol. 3D §A.3.2): no
        // capability check needed.
        self.ctl.proc = if on {
            self.ctl.proc | W
        } else {
            self.ctl.proc & !W
        };
        let proc = self.ctl.proc;
        self.write(vmcs::PROC_BASED_CONTROLS, proc);
    }

    fn nmi_ready(&self) -> bool {
        // With virtual NMIs, bit 3 is the guest's own NMI blocking (set by an NMI's
        // delivery, lifted by its IRET). Without, it is blocking a guest IRET never
        // lifts (controls module doc): waiting for it to clear would wait forever,
        // so only the shadow counts and a later NMI may nest in the handler.
        let blocked = if self.ctl.virtual_nmis {
            BLOCKING_STI_MOVSS | BLOCKING_NMI
        } else {
            BLOCKING_STI_MOVSS
        };
        // VM entry refuses an NMI under MOV-SS blocking, and may under STI blocking
        // (§26.3.1.5).
        self.read(vmcs::GUEST_INTERRUPTIBILITY) & blocked == 0 && !self.event_pending()
    }

    fn inject_nmi(&mut self) {
        self.set_pending_event(exit::NMI_EVENT);
    }

    fn load_context(&mut self, ctx: &Context) {
        let prepared = match self.prepare(ctx, self.read(vmcs::GUEST_CR0)) {
            Ok(p) => p,
            Err(e) => {
                self.refused = Some(e);
                return;
            }
        };
        self.make_current();
        // SAFETY: VMX is on wherever a VmxVcpu exists, and `make_current` made this
        // vCPU's VMCS current on this CPU.
        if let Err(e) = unsafe { self.write_context(ctx, &prepared) } {
            // Each field was written by `new` (module doc, failure policy).
            panic!("VMX: writing a vCPU's state failed: {e}");
        }
        // Nothing of the old state's translations may be used: flush this VPID
        // here, and EPTP-tagged entries wherever the vCPU enters next.
        self.flush_vpid();
        self.tlb_cpu.set(NO_CPU);
    }

    fn save_lazy_state(&mut self) {
        self.lazy.fx.save();
        self.lazy.cr2 = crate::cpu::read_cr2();
        for (v, &m) in self.lazy.msrs.iter_mut().zip(&LAZY_MSRS) {
            // SAFETY: these MSRs exist on every CPU with long mode, which VMX guests
            // here require; reading them has no side effect.
            *v = unsafe { crate::msr::rdmsr(m) };
        }
    }

    fn restore_lazy_state(&self) {
        self.lazy.fx.restore();
        crate::cpu::write_cr2(self.lazy.cr2);
        for (&v, &m) in self.lazy.msrs.iter().zip(&LAZY_MSRS) {
            // SAFETY: the values are the guest's own (saved by `save_lazy_state`, or
            // zero); keel does not use SYSCALL or swapgs, so none of them is state
            // keel relies on, and the guest can write the same values itself (the
            // MSRs are passed through). Zero is valid for each.
            unsafe { crate::msr::wrmsr(m, v) };
        }
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        // Flush the CPU's cached copy and make the VMCS inactive, so its frame holds
        // nothing the CPU may still write (§24.11.1).
        // SAFETY: VMX is on wherever a VmxVcpu exists; the region is this vCPU's.
        if let Err(e) = unsafe { vmcs::vmclear(self.vmcs.as_u64()) } {
            log::error!("VMX: VMCLEAR of a dropped vCPU's VMCS failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_base() {
        // Base 0xFFFF_82D0_8012_3456, limit 0x67, type 0xB (busy), present.
        let lo = 0x67 | (0x3456 << 16) | (0x12u64 << 32) | (0x8Bu64 << 40) | (0x80u64 << 56);
        let hi = 0xFFFF_82D0;
        assert_eq!(system_descriptor_base(lo, hi), 0xFFFF_82D0_8012_3456);
    }
}
