//! The VMCS: field encodings with their widths, and the VMX instructions that touch
//! it (VMREAD, VMWRITE, VMCLEAR, VMPTRLD, VMPTRST) plus VMXON, INVEPT and INVVPID.
//!
//! # Encodings
//! A field's 32-bit encoding (SDM Vol. 3C appendix B, "Field Encoding in VMCS")
//! carries its width in bits 14:13 (0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural
//! width) and its kind in bits 11:10 (0 = control, 1 = read-only exit information,
//! 2 = guest state, 3 = host state) (§24.11.2). [`Field`] is typed by its width, so
//! `vmwrite(GUEST_CS_SELECTOR, 0x10u16)` type-checks and a 32-bit value cannot be
//! written to a 64-bit field by mistake; each constant is checked at compile time
//! against the width bits of its own encoding. Only the "full" encoding of 64-bit
//! fields is used (keel runs in 64-bit mode, §24.11.2: "high" halves exist for 32-bit
//! VMMs).
//!
//! # Failure
//! Every VMX instruction reports failure in RFLAGS (§30.2): CF = 1 is VMfailInvalid
//! (no current VMCS, or a bad pointer), ZF = 1 is VMfailValid with a number in the
//! VM-instruction error field ([`VM_INSTRUCTION_ERROR`], §30.4). The wrappers turn
//! both into [`VmcsError`].
//!
//! # Safety model
//! All of these instructions #UD outside VMX operation, which in keel is a fatal
//! exception; hence every wrapper is `unsafe` with "VMX operation is on on this CPU"
//! as its first condition. Reading a field is otherwise harmless. Writing one is not
//! unsafe by itself, but what the CPU does at the next VM entry or exit depends on
//! the host-state fields, the EPT pointer and the bitmap addresses: those must name
//! memory keel owns for as long as the VMCS can be entered, so `vmwrite` carries that
//! condition too.

use core::arch::asm;
use core::fmt;
use core::marker::PhantomData;

/// A field's width, as a type: [`W16`], [`W32`], [`W64`] or [`WNat`].
pub trait Width: Copy {
    /// What a field of this width holds in Rust.
    type Value: Copy + fmt::Debug;
    /// The width code in encoding bits 14:13.
    const CODE: u32;
    fn to_raw(v: Self::Value) -> u64;
    fn from_raw(v: u64) -> Self::Value;
}

macro_rules! width {
    ($name:ident, $ty:ty, $code:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug)]
        pub struct $name;
        impl Width for $name {
            type Value = $ty;
            const CODE: u32 = $code;
            fn to_raw(v: $ty) -> u64 {
                u64::from(v)
            }
            fn from_raw(v: u64) -> $ty {
                // Truncation is the point: VMREAD zero-extends a narrower field
                // (§30.3, VMREAD), so the high bits are zero anyway.
                v as $ty
            }
        }
    };
}
width!(W16, u16, 0, "16-bit fields (encoding bits 14:13 = 0).");
width!(W64, u64, 1, "64-bit fields (encoding bits 14:13 = 1).");
width!(W32, u32, 2, "32-bit fields (encoding bits 14:13 = 2).");
width!(
    WNat,
    u64,
    3,
    "Natural-width fields, 64 bits on keel (encoding bits 14:13 = 3)."
);

/// A VMCS field: its encoding, its name (for messages), and its width as a type.
#[derive(Clone, Copy)]
pub struct Field<W: Width> {
    encoding: u32,
    name: &'static str,
    _width: PhantomData<W>,
}

impl<W: Width> Field<W> {
    /// Declares a field; fails to compile (in a `const`) if the width bits of
    /// `encoding` do not match `W`.
    pub const fn new(encoding: u32, name: &'static str) -> Field<W> {
        assert!((encoding >> 13) & 3 == W::CODE, "VMCS field width mismatch");
        assert!(encoding & 1 == 0, "only 'full' encodings are used");
        Field {
            encoding,
            name,
            _width: PhantomData,
        }
    }

    pub const fn encoding(self) -> u32 {
        self.encoding
    }

    pub const fn name(self) -> &'static str {
        self.name
    }

    /// Whether this is a host-state field (encoding bits 11:10 = 3, §24.11.2).
    pub const fn is_host_state(self) -> bool {
        (self.encoding >> 10) & 3 == 3
    }
}

impl<W: Width> fmt::Debug for Field<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#06x})", self.name, self.encoding)
    }
}

/// Declares VMCS field constants: `NAME: Width = encoding;`, each with its doc.
macro_rules! fields {
    ($( $(#[doc = $doc:literal])* $name:ident : $w:ident = $enc:literal; )*) => {
        $(
            $(#[doc = $doc])*
            pub const $name: Field<$w> = Field::new($enc, stringify!($name));
        )*
    };
}

// --- 16-bit fields (SDM Vol. 3C appendix B.1) --------------------------------------
fields! {
    /// Virtual-processor identifier (B.1.1; with "enable VPID").
    VPID: W16 = 0x0000;
    /// Guest ES selector (B.1.2).
    GUEST_ES_SELECTOR: W16 = 0x0800;
    /// Guest CS selector (B.1.2).
    GUEST_CS_SELECTOR: W16 = 0x0802;
    /// Guest SS selector (B.1.2).
    GUEST_SS_SELECTOR: W16 = 0x0804;
    /// Guest DS selector (B.1.2).
    GUEST_DS_SELECTOR: W16 = 0x0806;
    /// Guest FS selector (B.1.2).
    GUEST_FS_SELECTOR: W16 = 0x0808;
    /// Guest GS selector (B.1.2).
    GUEST_GS_SELECTOR: W16 = 0x080A;
    /// Guest LDTR selector (B.1.2).
    GUEST_LDTR_SELECTOR: W16 = 0x080C;
    /// Guest TR selector (B.1.2).
    GUEST_TR_SELECTOR: W16 = 0x080E;
    /// Host ES selector (B.1.3).
    HOST_ES_SELECTOR: W16 = 0x0C00;
    /// Host CS selector (B.1.3).
    HOST_CS_SELECTOR: W16 = 0x0C02;
    /// Host SS selector (B.1.3).
    HOST_SS_SELECTOR: W16 = 0x0C04;
    /// Host DS selector (B.1.3).
    HOST_DS_SELECTOR: W16 = 0x0C06;
    /// Host FS selector (B.1.3).
    HOST_FS_SELECTOR: W16 = 0x0C08;
    /// Host GS selector (B.1.3).
    HOST_GS_SELECTOR: W16 = 0x0C0A;
    /// Host TR selector (B.1.3).
    HOST_TR_SELECTOR: W16 = 0x0C0C;
}

// --- 64-bit fields (B.2) --------------------------------------------------------------
fields! {
    /// Address of I/O bitmap A, ports 0x0000..=0x7FFF (B.2.1).
    IO_BITMAP_A: W64 = 0x2000;
    /// Address of I/O bitmap B, ports 0x8000..=0xFFFF (B.2.1).
    IO_BITMAP_B: W64 = 0x2002;
    /// Address of the MSR bitmaps (B.2.1).
    MSR_BITMAP: W64 = 0x2004;
    /// VM-exit MSR-store address (B.2.1).
    VM_EXIT_MSR_STORE_ADDR: W64 = 0x2006;
    /// VM-exit MSR-load address (B.2.1).
    VM_EXIT_MSR_LOAD_ADDR: W64 = 0x2008;
    /// VM-entry MSR-load address (B.2.1).
    VM_ENTRY_MSR_LOAD_ADDR: W64 = 0x200A;
    /// TSC offset (B.2.1).
    TSC_OFFSET: W64 = 0x2010;
    /// EPT pointer (B.2.1).
    EPT_POINTER: W64 = 0x201A;
    /// Guest-physical address of an EPT violation or misconfiguration (B.2.2, read-only).
    GUEST_PHYSICAL_ADDRESS: W64 = 0x2400;
    /// VMCS link pointer; all ones when VMCS shadowing is off (B.2.3).
    VMCS_LINK_POINTER: W64 = 0x2800;
    /// Guest IA32_DEBUGCTL (B.2.3).
    GUEST_IA32_DEBUGCTL: W64 = 0x2802;
    /// Guest IA32_PAT (B.2.3).
    GUEST_IA32_PAT: W64 = 0x2804;
    /// Guest IA32_EFER (B.2.3).
    GUEST_IA32_EFER: W64 = 0x2806;
    /// Guest PDPTE0, used with PAE paging and EPT (B.2.3).
    GUEST_PDPTE0: W64 = 0x280A;
    /// Guest PDPTE1 (B.2.3).
    GUEST_PDPTE1: W64 = 0x280C;
    /// Guest PDPTE2 (B.2.3).
    GUEST_PDPTE2: W64 = 0x280E;
    /// Guest PDPTE3 (B.2.3).
    GUEST_PDPTE3: W64 = 0x2810;
    /// Host IA32_PAT (B.2.4).
    HOST_IA32_PAT: W64 = 0x2C00;
    /// Host IA32_EFER (B.2.4).
    HOST_IA32_EFER: W64 = 0x2C02;
}

// --- 32-bit fields (B.3) --------------------------------------------------------------
fields! {
    /// Pin-based VM-execution controls (B.3.1).
    PIN_BASED_CONTROLS: W32 = 0x4000;
    /// Primary processor-based VM-execution controls (B.3.1).
    PROC_BASED_CONTROLS: W32 = 0x4002;
    /// Exception bitmap (B.3.1).
    EXCEPTION_BITMAP: W32 = 0x4004;
    /// Page-fault error-code mask (B.3.1).
    PAGE_FAULT_ERROR_CODE_MASK: W32 = 0x4006;
    /// Page-fault error-code match (B.3.1).
    PAGE_FAULT_ERROR_CODE_MATCH: W32 = 0x4008;
    /// CR3-target count (B.3.1).
    CR3_TARGET_COUNT: W32 = 0x400A;
    /// VM-exit controls (B.3.1).
    VM_EXIT_CONTROLS: W32 = 0x400C;
    /// VM-exit MSR-store count (B.3.1).
    VM_EXIT_MSR_STORE_COUNT: W32 = 0x400E;
    /// VM-exit MSR-load count (B.3.1).
    VM_EXIT_MSR_LOAD_COUNT: W32 = 0x4010;
    /// VM-entry controls (B.3.1).
    VM_ENTRY_CONTROLS: W32 = 0x4012;
    /// VM-entry MSR-load count (B.3.1).
    VM_ENTRY_MSR_LOAD_COUNT: W32 = 0x4014;
    /// VM-entry interruption-information field (B.3.1).
    VM_ENTRY_INTERRUPTION_INFO: W32 = 0x4016;
    /// VM-entry exception error code (B.3.1).
    VM_ENTRY_EXCEPTION_ERROR_CODE: W32 = 0x4018;
    /// VM-entry instruction length (B.3.1).
    VM_ENTRY_INSTRUCTION_LEN: W32 = 0x401A;
    /// Secondary processor-based VM-execution controls (B.3.1).
    SECONDARY_CONTROLS: W32 = 0x401E;
    /// VM-instruction error (B.3.2, read-only).
    VM_INSTRUCTION_ERROR: W32 = 0x4400;
    /// Exit reason (B.3.2, read-only).
    EXIT_REASON: W32 = 0x4402;
    /// VM-exit interruption information (B.3.2, read-only).
    VM_EXIT_INTERRUPTION_INFO: W32 = 0x4404;
    /// VM-exit interruption error code (B.3.2, read-only).
    VM_EXIT_INTERRUPTION_ERROR_CODE: W32 = 0x4406;
    /// IDT-vectoring information (B.3.2, read-only).
    IDT_VECTORING_INFO: W32 = 0x4408;
    /// IDT-vectoring error code (B.3.2, read-only).
    IDT_VECTORING_ERROR_CODE: W32 = 0x440A;
    /// VM-exit instruction length (B.3.2, read-only).
    VM_EXIT_INSTRUCTION_LEN: W32 = 0x440C;
    /// VM-exit instruction information (B.3.2, read-only).
    VM_EXIT_INSTRUCTION_INFO: W32 = 0x440E;
    /// Guest ES limit (B.3.3).
    GUEST_ES_LIMIT: W32 = 0x4800;
    /// Guest CS limit (B.3.3).
    GUEST_CS_LIMIT: W32 = 0x4802;
    /// Guest SS limit (B.3.3).
    GUEST_SS_LIMIT: W32 = 0x4804;
    /// Guest DS limit (B.3.3).
    GUEST_DS_LIMIT: W32 = 0x4806;
    /// Guest FS limit (B.3.3).
    GUEST_FS_LIMIT: W32 = 0x4808;
    /// Guest GS limit (B.3.3).
    GUEST_GS_LIMIT: W32 = 0x480A;
    /// Guest LDTR limit (B.3.3).
    GUEST_LDTR_LIMIT: W32 = 0x480C;
    /// Guest TR limit (B.3.3).
    GUEST_TR_LIMIT: W32 = 0x480E;
    /// Guest GDTR limit (B.3.3).
    GUEST_GDTR_LIMIT: W32 = 0x4810;
    /// Guest IDTR limit (B.3.3).
    GUEST_IDTR_LIMIT: W32 = 0x4812;
    /// Guest ES access rights (B.3.3).
    GUEST_ES_ACCESS_RIGHTS: W32 = 0x4814;
    /// Guest CS access rights (B.3.3).
    GUEST_CS_ACCESS_RIGHTS: W32 = 0x4816;
    /// Guest SS access rights (B.3.3).
    GUEST_SS_ACCESS_RIGHTS: W32 = 0x4818;
    /// Guest DS access rights (B.3.3).
    GUEST_DS_ACCESS_RIGHTS: W32 = 0x481A;
    /// Guest FS access rights (B.3.3).
    GUEST_FS_ACCESS_RIGHTS: W32 = 0x481C;
    /// Guest GS access rights (B.3.3).
    GUEST_GS_ACCESS_RIGHTS: W32 = 0x481E;
    /// Guest LDTR access rights (B.3.3).
    GUEST_LDTR_ACCESS_RIGHTS: W32 = 0x4820;
    /// Guest TR access rights (B.3.3).
    GUEST_TR_ACCESS_RIGHTS: W32 = 0x4822;
    /// Guest interruptibility state (B.3.3).
    GUEST_INTERRUPTIBILITY: W32 = 0x4824;
    /// Guest activity state (B.3.3).
    GUEST_ACTIVITY_STATE: W32 = 0x4826;
    /// Guest IA32_SYSENTER_CS (B.3.3).
    GUEST_SYSENTER_CS: W32 = 0x482A;
    /// Host IA32_SYSENTER_CS (B.3.4).
    HOST_SYSENTER_CS: W32 = 0x4C00;
}

// --- Natural-width fields (B.4) -------------------------------------------------------
fields! {
    /// CR0 guest/host mask (B.4.1).
    CR0_GUEST_HOST_MASK: WNat = 0x6000;
    /// CR4 guest/host mask (B.4.1).
    CR4_GUEST_HOST_MASK: WNat = 0x6002;
    /// CR0 read shadow (B.4.1).
    CR0_READ_SHADOW: WNat = 0x6004;
    /// CR4 read shadow (B.4.1).
    CR4_READ_SHADOW: WNat = 0x6006;
    /// Exit qualification (B.4.2, read-only).
    EXIT_QUALIFICATION: WNat = 0x6400;
    /// Guest-linear address (B.4.2, read-only).
    GUEST_LINEAR_ADDRESS: WNat = 0x640A;
    /// Guest CR0 (B.4.3).
    GUEST_CR0: WNat = 0x6800;
    /// Guest CR3 (B.4.3).
    GUEST_CR3: WNat = 0x6802;
    /// Guest CR4 (B.4.3).
    GUEST_CR4: WNat = 0x6804;
    /// Guest ES base (B.4.3).
    GUEST_ES_BASE: WNat = 0x6806;
    /// Guest CS base (B.4.3).
    GUEST_CS_BASE: WNat = 0x6808;
    /// Guest SS base (B.4.3).
    GUEST_SS_BASE: WNat = 0x680A;
    /// Guest DS base (B.4.3).
    GUEST_DS_BASE: WNat = 0x680C;
    /// Guest FS base (B.4.3).
    GUEST_FS_BASE: WNat = 0x680E;
    /// Guest GS base (B.4.3).
    GUEST_GS_BASE: WNat = 0x6810;
    /// Guest LDTR base (B.4.3).
    GUEST_LDTR_BASE: WNat = 0x6812;
    /// Guest TR base (B.4.3).
    GUEST_TR_BASE: WNat = 0x6814;
    /// Guest GDTR base (B.4.3).
    GUEST_GDTR_BASE: WNat = 0x6816;
    /// Guest IDTR base (B.4.3).
    GUEST_IDTR_BASE: WNat = 0x6818;
    /// Guest DR7 (B.4.3).
    GUEST_DR7: WNat = 0x681A;
    /// Guest RSP (B.4.3).
    GUEST_RSP: WNat = 0x681C;
    /// Guest RIP (B.4.3).
    GUEST_RIP: WNat = 0x681E;
    /// Guest RFLAGS (B.4.3).
    GUEST_RFLAGS: WNat = 0x6820;
    /// Guest pending debug exceptions (B.4.3).
    GUEST_PENDING_DEBUG_EXCEPTIONS: WNat = 0x6822;
    /// Guest IA32_SYSENTER_ESP (B.4.3).
    GUEST_SYSENTER_ESP: WNat = 0x6824;
    /// Guest IA32_SYSENTER_EIP (B.4.3).
    GUEST_SYSENTER_EIP: WNat = 0x6826;
    /// Host CR0 (B.4.4).
    HOST_CR0: WNat = 0x6C00;
    /// Host CR3 (B.4.4).
    HOST_CR3: WNat = 0x6C02;
    /// Host CR4 (B.4.4).
    HOST_CR4: WNat = 0x6C04;
    /// Host FS base (B.4.4).
    HOST_FS_BASE: WNat = 0x6C06;
    /// Host GS base (B.4.4).
    HOST_GS_BASE: WNat = 0x6C08;
    /// Host TR base (B.4.4).
    HOST_TR_BASE: WNat = 0x6C0A;
    /// Host GDTR base (B.4.4).
    HOST_GDTR_BASE: WNat = 0x6C0C;
    /// Host IDTR base (B.4.4).
    HOST_IDTR_BASE: WNat = 0x6C0E;
    /// Host IA32_SYSENTER_ESP (B.4.4).
    HOST_SYSENTER_ESP: WNat = 0x6C10;
    /// Host IA32_SYSENTER_EIP (B.4.4).
    HOST_SYSENTER_EIP: WNat = 0x6C12;
    /// Host RSP (B.4.4); written by the entry stub right before each entry.
    HOST_RSP: WNat = 0x6C14;
    /// Host RIP (B.4.4): where VM exits land, the entry stub's exit label.
    HOST_RIP: WNat = 0x6C16;
}

/// A VMX instruction failed (§30.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsError {
    /// VMfailInvalid: no current VMCS, or the operand pointer was rejected.
    Invalid,
    /// VMfailValid: the VM-instruction error number (§30.4).
    Valid(u32),
}

impl fmt::Display for VmcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmcsError::Invalid => f.write_str("VMfailInvalid (no current VMCS or a bad pointer)"),
            VmcsError::Valid(n) => write!(
                f,
                "VM-instruction error {n}: {}",
                instruction_error_name(*n)
            ),
        }
    }
}

/// The meaning of a VM-instruction error number (SDM Vol. 3C §30.4, table 30-1).
pub fn instruction_error_name(n: u32) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// Turns the flags a VMX instruction left into its outcome, without the error
/// number (see [`finish`]). `rflags` is the RFLAGS image after the instruction.
pub(crate) fn outcome(rflags: u64) -> Result<(), VmcsError> {
    const CF: u64 = 1 << 0;
    const ZF: u64 = 1 << 6;
    if rflags & CF != 0 {
        Err(VmcsError::Invalid)
    } else if rflags & ZF != 0 {
        Err(VmcsError::Valid(0))
    } else {
        Ok(())
    }
}

/// [`outcome`], with a VMfailValid completed by the error number from the current
/// VMCS (VMfailValid implies there is one, §30.2).
///
/// # Safety
/// VMX operation is on on this CPU.
unsafe fn finish(rflags: u64) -> Result<(), VmcsError> {
    match outcome(rflags) {
        Err(VmcsError::Valid(_)) => {
            let n: u64;
            // SAFETY: VMX is on (caller) and a VMCS is current (VMfailValid); the
            // error field exists on every VMX CPU, so this VMREAD cannot fail.
            unsafe {
                asm!(
                    "vmread {n}, {field}",
                    field = in(reg) u64::from(VM_INSTRUCTION_ERROR.encoding()),
                    n = out(reg) n,
                    options(nomem, nostack)
                );
            }
            Err(VmcsError::Valid(n as u32))
        }
        other => other,
    }
}

/// Reads field `f` of the current VMCS.
///
/// # Safety
/// VMX operation is on on this CPU (else #UD).
pub unsafe fn vmread<W: Width>(f: Field<W>) -> Result<W::Value, VmcsError> {
    let value: u64;
    let flags: u64;
    // SAFETY: VMX is on (caller). VMREAD writes only its register destination; a
    // missing VMCS or an unsupported field is reported in RFLAGS, read right after.
    unsafe {
        asm!(
            "vmread {value}, {field}",
            "pushfq",
            "pop {flags}",
            field = in(reg) u64::from(f.encoding()),
            value = out(reg) value,
            flags = lateout(reg) flags,
            options(nomem)
        );
        finish(flags)?;
    }
    Ok(W::from_raw(value))
}

/// Writes field `f` of the current VMCS.
///
/// # Safety
/// VMX operation is on on this CPU (else #UD). If `f` is a host-state field, the
/// EPT pointer, a bitmap address or an MSR-list address, `value` must be valid for
/// keel (a mapped stack and code for the host, frames keel owns for the rest) for
/// as long as this VMCS can be entered.
pub unsafe fn vmwrite<W: Width>(f: Field<W>, value: W::Value) -> Result<(), VmcsError> {
    let flags: u64;
    // SAFETY: VMX is on (caller); VMWRITE changes only the current VMCS (the
    // caller vouches for what the value means to later entries and exits).
    unsafe {
        asm!(
            "vmwrite {field}, {value}",
            "pushfq",
            "pop {flags}",
            field = in(reg) u64::from(f.encoding()),
            value = in(reg) W::to_raw(value),
            flags = lateout(reg) flags,
            options(nomem)
        );
        finish(flags)
    }
}

/// Runs a VMX instruction that takes a 64-bit physical-address memory operand
/// (VMCLEAR, VMPTRLD, VMXON) and returns its outcome.
macro_rules! addr_insn {
    ($insn:literal, $pa:expr) => {{
        let operand: u64 = $pa;
        let flags: u64;
        asm!(
            concat!($insn, " qword ptr [{op}]"),
            "pushfq",
            "pop {flags}",
            op = in(reg) &operand,
            flags = lateout(reg) flags,
        );
        finish(flags)
    }};
}

/// VMXON with the region at physical `pa`.
///
/// # Safety
/// CR4.VMXE is set, IA32_FEATURE_CONTROL allows VMXON, CR0/CR4 satisfy the VMX
/// fixed bits, and `pa` is a 4 KiB-aligned frame keel owns, stamped with the VMCS
/// revision and never used for anything else while VMX is on (§23.7, §30.3 VMXON).
pub unsafe fn vmxon(pa: u64) -> Result<(), VmcsError> {
    // SAFETY: the caller established every precondition of VMXON; VMfailValid
    // (VMX already on) leaves a current VMCS to read the error from, VMfailInvalid
    // does not touch one.
    unsafe { addr_insn!("vmxon", pa) }
}

/// VMCLEAR of the VMCS at physical `pa`: flushes the CPU's cached copy to memory and
/// makes its launch state "clear" (§24.1, §30.3 VMCLEAR).
///
/// # Safety
/// VMX operation is on; `pa` is a VMCS region keel owns.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmcsError> {
    // SAFETY: VMX is on (caller); the CPU writes only the VMCS region at `pa`.
    unsafe { addr_insn!("vmclear", pa) }
}

/// VMPTRLD: makes the VMCS at physical `pa` current on this CPU.
///
/// # Safety
/// VMX operation is on; `pa` is a VMCS region keel owns, stamped with the revision.
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmcsError> {
    // SAFETY: VMX is on (caller); the CPU reads the region at `pa`.
    unsafe { addr_insn!("vmptrld", pa) }
}

/// VMPTRST: the physical address of the current VMCS (all ones when none).
///
/// # Safety
/// VMX operation is on on this CPU.
pub unsafe fn vmptrst() -> u64 {
    let mut pa: u64 = 0;
    // SAFETY: VMX is on (caller); VMPTRST writes the 8 bytes at the operand, a local.
    unsafe {
        asm!("vmptrst qword ptr [{op}]", op = in(reg) &mut pa, options(nostack));
    }
    pa
}

/// INVEPT of `kind` (1 = single context for `eptp`, 2 = all contexts; §30.3 INVEPT).
///
/// # Safety
/// VMX operation is on and the CPU supports INVEPT of this kind.
pub unsafe fn invept(kind: u64, eptp: u64) -> Result<(), VmcsError> {
    let descriptor: [u64; 2] = [eptp, 0];
    let flags: u64;
    // SAFETY: VMX is on (caller); INVEPT only reads its 16-byte descriptor.
    unsafe {
        asm!(
            "invept {kind}, [{desc}]",
            "pushfq",
            "pop {flags}",
            kind = in(reg) kind,
            desc = in(reg) &descriptor,
            flags = lateout(reg) flags,
        );
        finish(flags)
    }
}

/// INVVPID of `kind` (1 = single context for `vpid`, 2 = all contexts; §30.3 INVVPID).
///
/// # Safety
/// VMX operation is on and the CPU supports INVVPID of this kind.
pub unsafe fn invvpid(kind: u64, vpid: u16) -> Result<(), VmcsError> {
    let descriptor: [u64; 2] = [u64::from(vpid), 0];
    let flags: u64;
    // SAFETY: VMX is on (caller); INVVPID only reads its 16-byte descriptor.
    unsafe {
        asm!(
            "invvpid {kind}, [{desc}]",
            "pushfq",
            "pop {flags}",
            kind = in(reg) kind,
            desc = in(reg) &descriptor,
            flags = lateout(reg) flags,
        );
        finish(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_come_from_the_encoding() {
        assert_eq!(GUEST_CS_SELECTOR.encoding() >> 13 & 3, 0);
        assert_eq!(GUEST_IA32_EFER.encoding() >> 13 & 3, 1);
        assert_eq!(EXIT_REASON.encoding() >> 13 & 3, 2);
        assert_eq!(GUEST_RIP.encoding() >> 13 & 3, 3);
    }

    #[test]
    fn host_state_fields_are_recognised() {
        assert!(HOST_RIP.is_host_state());
        assert!(HOST_TR_SELECTOR.is_host_state());
        assert!(HOST_IA32_EFER.is_host_state());
        assert!(!GUEST_RIP.is_host_state());
        assert!(!EPT_POINTER.is_host_state());
        assert!(!VM_INSTRUCTION_ERROR.is_host_state());
    }

    #[test]
    fn known_encodings() {
        // Spot checks against SDM Vol. 3C appendix B.
        assert_eq!(VM_INSTRUCTION_ERROR.encoding(), 0x4400);
        assert_eq!(VM_EXIT_INSTRUCTION_LEN.encoding(), 0x440C);
        assert_eq!(VM_ENTRY_INTERRUPTION_INFO.encoding(), 0x4016);
        assert_eq!(GUEST_PHYSICAL_ADDRESS.encoding(), 0x2400);
        assert_eq!(GUEST_INTERRUPTIBILITY.encoding(), 0x4824);
        assert_eq!(format!("{EXIT_REASON:?}"), "EXIT_REASON (0x4402)");
    }

    #[test]
    fn rflags_outcomes() {
        assert_eq!(outcome(0x2), Ok(()));
        assert_eq!(outcome(0x3), Err(VmcsError::Invalid));
        assert_eq!(outcome(0x42), Err(VmcsError::Valid(0)));
        assert_eq!(
            instruction_error_name(7),
            "VM entry with invalid control field(s)"
        );
        assert_eq!(instruction_error_name(99), "unknown VM-instruction error");
    }
}
