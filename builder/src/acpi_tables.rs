//! The ACPI tables keel hands a PVH domU: an RSDP, an XSDT, a FADT, a MADT and a DSDT,
//! laid out in one blob the domain builder copies into guest memory and names in
//! `hvm_start_info.rsdp_paddr`.
//!
//! # What
//!
//! A PVH guest has no firmware, so whatever platform description it gets comes from
//! the domain builder (Xen: libxl's `libxl__dom_load_acpi` over `tools/libacpi`). Linux
//! needs little of it, but that little matters: it learns its vCPUs and their local
//! APIC ids from the MADT, and without a MADT it runs in "virtual wire, no
//! configuration" mode and never sets up the per-CPU clock event that carries the Xen
//! timer. keel emulates no I/O APIC, 8259 PIC, PIT, HPET, RTC, PM timer or ACPI PM
//! register blocks for PVH domains, so the tables describe a *hardware-reduced* ACPI
//! platform (ACPI 6.3 §4.1): no fixed hardware, no SCI, no FACS, no sleep states.
//! Field layouts and values below are from the ACPI 6.3 specification (§5.2).
//!
//! Blob layout (offsets from the guest-physical `base`, each table 8-byte aligned):
//!
//! | offset          | table | content                                          |
//! |-----------------|-------|--------------------------------------------------|
//! | 0               | RSDP  | revision 2, XSDT address, RSDT address 0         |
//! | 40              | XSDT  | FADT, MADT                                       |
//! | 96              | FADT  | revision 6.3, 276 bytes, `HW_REDUCED_ACPI`, DSDT |
//! | 376             | MADT  | one Processor Local APIC entry per vCPU          |
//! | after the MADT  | DSDT  | `\_SB` with one `ACPI0007` processor device each |
//!
//! # Choices
//!
//! - **RSDP**: revision 2 with the XSDT only. ACPI 2.0+ OSPMs (Linux, ACPICA, the
//!   `acpi` crate) take the XSDT whenever the revision is at least 2 and its address
//!   is non-zero; an RSDT pointing at a revision-6 FADT would only mislead an ACPI 1.0
//!   reader. The RSDP sits at offset 0 of a page-aligned blob, so it is also 16-byte
//!   aligned as the spec's legacy scan requires.
//! - **FADT flags**: `WBINVD` (the spec requires it of new platforms, and the
//!   instruction works in a guest), `PROC_C1` (HLT is supported), `PWR_BUTTON` and
//!   `SLP_BUTTON` (set means *no* fixed-feature button), `HW_REDUCED_ACPI`. Nothing
//!   that names a register: no `RESET_REG_SUP` (there is no reset register; a PVH guest
//!   reboots through `SCHEDOP_shutdown`), no `TMR_VAL_EXT` (no PM timer). No FACS:
//!   hardware-reduced platforms may omit it (§5.2.10), and ACPICA only requires one
//!   on full-hardware platforms. `SCI_INT`, `SMI_CMD` and every PM block are 0;
//!   `P_LVL2_LAT`/`P_LVL3_LAT` are 101/1001, the smallest values that mean "C2/C3 not
//!   supported". Preferred PM profile 0 (unspecified). `DSDT` and `X_DSDT` both hold
//!   the DSDT's address (below 4 GiB, so they agree and ACPICA does not warn).
//! - **IA-PC boot architecture flags**: "VGA not present" (bit 2) and "CMOS RTC not
//!   present" (bit 5; needs FADT revision 5+) are set, so Linux neither probes VGA nor
//!   registers an RTC device. Bit 1 (8042) is clear: with FADT revision 2+ Linux then
//!   treats the i8042 as absent and does not poke ports 0x60/0x64. Bit 0 (legacy
//!   devices) is clear: there are none. Bit 3 ("MSI not supported") is clear: all
//!   Linux does with it is `pci_no_msi()`, which changes nothing on a domain without
//!   PCI and would only cripple a future passed-through or virtio-pci device (Xen's
//!   tables leave it clear too). Bit 4 (PCIe ASPM controls) is clear.
//! - **Hypervisor vendor identity**: `"KEEL"` padded with zeros (Linux ignores it).
//! - **MADT**: local APIC address `lapic_base`, flags 0 (no `PCAT_COMPAT`: there is
//!   no 8259), Processor Local APIC entries with ACPI processor UID = vCPU index and
//!   APIC id = 2 x vCPU index (as Xen's; keel's CPUID reports the same initial APIC
//!   id), flags `Enabled` for the vCPUs online at boot (`online`) and clear for the
//!   rest, which Linux counts as hot-pluggable (Xen's `vcpu_online` map). No
//!   I/O APIC, interrupt source override or NMI entries: there is nothing to route.
//!   Linux then picks "virtual wire" APIC mode with its processors from the MADT.
//! - **DSDT**: `Scope (\_SB) { Device (CPxx) { Name (_HID, "ACPI0007")
//!   Name (_UID, xx) } ... }`, one processor device per vCPU (names `CP00`..`CP7F`,
//!   hex). Linux does not need them (it enumerates CPUs from the MADT), but ACPI
//!   expects every MADT processor UID to match a processor object in the namespace,
//!   and other OSes bind their CPU drivers through them. `Device` + `ACPI0007` is the
//!   ACPI 6 form (the `Processor` opcode is deprecated). Revision 2: 64-bit AML
//!   integers. The cost is 29 bytes per vCPU, hence two pages at most.
//! - **Identity**: OEM id `"KEEL  "`, OEM table id `"KEELPVH "`, OEM revision 1,
//!   creator id `"KEEL"`, creator revision 1 on every table.
//!
//! # Invariants
//!
//! - `build` returns a blob of at most [`MAX_SIZE`] bytes whose RSDP is at `base`;
//!   every table's length and checksum are right, every table starts 8-byte aligned,
//!   and every pointer (XSDT entries, `DSDT`/`X_DSDT`, the RSDP's XSDT address) lands
//!   inside the blob placed at `base`. The whole blob lies below 4 GiB, as the 32-bit
//!   `DSDT` field and a guest reading with paging off need.
//! - 1 ..= [`MAX_VCPUS`] vCPUs, so APIC ids fit the 8-bit xAPIC entry (and stay clear
//!   of 0xFF, the broadcast id) and UIDs fit a two-hex-digit name.
//! - `base` is page-aligned and non-zero (an `rsdp_paddr` of 0 means "no ACPI").
//!
//! # Locking
//!
//! None: a pure function from a configuration to bytes.
//!
//! # Hazards
//!
//! - The caller must mark the blob's pages in the guest's memory map as ACPI data
//!   (E820 type 3) or reserved, and must not let them overlap anything else it loads;
//!   reported as RAM, the guest may allocate over the tables before it parses them.
//! - Nothing here checks that `lapic_base` agrees with what the vCPU's APIC base MSR
//!   reports; the caller passes the same value to both.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

/// The vCPUs and local APIC a PVH domain's ACPI tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhAcpi {
    /// Number of vCPUs, 1 ..= [`MAX_VCPUS`]; vCPU `i` has ACPI UID `i` and APIC id
    /// `2 * i`.
    pub vcpus: u32,
    /// The first `online` of them are enabled (the rest may be brought up later).
    pub online: u32,
    /// Guest-physical base of every local APIC (normally [`LAPIC_BASE`]); 4 KiB-aligned.
    pub lapic_base: u32,
}

/// The architectural default local APIC base (SDM Vol. 3A §11.4.1, "IA32_APIC_BASE").
pub const LAPIC_BASE: u32 = 0xFEE0_0000;

/// Most vCPUs the tables describe. Keeps APIC ids within the 8-bit Processor Local
/// APIC entry, UIDs within a two-hex-digit device name, and the blob within
/// [`MAX_SIZE`].
pub const MAX_VCPUS: u32 = 128;

/// Most vCPUs for which the whole blob fits in one 4 KiB page.
pub const ONE_PAGE_VCPUS: u32 = 98;

/// Upper bound of the blob's length for any valid configuration: two 4 KiB pages
/// (5204 bytes at [`MAX_VCPUS`]; one page up to [`ONE_PAGE_VCPUS`]).
pub const MAX_SIZE: usize = 2 * PAGE_SIZE;

const PAGE_SIZE: usize = 4096;
const FOUR_GIB: u64 = 1 << 32;

const _: () = assert!(blob_len(MAX_VCPUS) <= MAX_SIZE);
const _: () = assert!(blob_len(ONE_PAGE_VCPUS) <= PAGE_SIZE);
const _: () = assert!(blob_len(ONE_PAGE_VCPUS + 1) > PAGE_SIZE);
// APIC ids 2 x (0..MAX_VCPUS) must avoid 0xFF; UIDs must fit a byte and two hex digits.
const _: () = assert!(2 * MAX_VCPUS <= 0xFF + 1);

/// Why the ACPI tables cannot be built. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum AcpiError {
    /// a domain's ACPI tables must describe at least one vCPU
    NoVcpus,
    /// {vcpus} vCPUs are more than the {max} keel's ACPI tables describe
    TooManyVcpus { vcpus: u32, max: u32 },
    /// {online} vCPUs online of {vcpus}: between 1 and all of them may be
    OnlineVcpus { online: u32, vcpus: u32 },
    /// the local APIC base {0:#x} is not 4 KiB-aligned
    LapicBaseMisaligned(u32),
    /// the ACPI tables' guest-physical base {0:#x} is not 4 KiB-aligned
    BaseMisaligned(u64),
    /// the ACPI tables cannot start at guest-physical 0: an rsdp_paddr of 0 means "no ACPI"
    BaseZero,
    /// the ACPI tables at {base:#x}..{end:#x} reach above 4 GiB, where the FADT's 32-bit DSDT pointer cannot reach
    Above4G { base: u64, end: u64 },
}

/// Lays out the tables for `cfg` as one blob meant to be copied to guest-physical
/// `base` (page-aligned, non-zero, the whole blob below 4 GiB). Returns the blob (at
/// most [`MAX_SIZE`] bytes) and the RSDP's guest-physical address, for
/// `hvm_start_info.rsdp_paddr`.
pub fn build(cfg: &PvhAcpi, base: u64) -> Result<(Vec<u8>, u64), AcpiError> {
    if cfg.vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }
    if cfg.vcpus > MAX_VCPUS {
        return Err(AcpiError::TooManyVcpus {
            vcpus: cfg.vcpus,
            max: MAX_VCPUS,
        });
    }
    if cfg.online == 0 || cfg.online > cfg.vcpus {
        return Err(AcpiError::OnlineVcpus {
            online: cfg.online,
            vcpus: cfg.vcpus,
        });
    }
    if !cfg.lapic_base.is_multiple_of(PAGE_SIZE as u32) {
        return Err(AcpiError::LapicBaseMisaligned(cfg.lapic_base));
    }
    if !base.is_multiple_of(PAGE_SIZE as u64) {
        return Err(AcpiError::BaseMisaligned(base));
    }
    if base == 0 {
        return Err(AcpiError::BaseZero);
    }

    // The address-independent tables first; their lengths fix the layout.
    let madt = madt(cfg);
    let dsdt = dsdt(cfg.vcpus);
    let dsdt_off = align8(MADT_OFF + madt.len());
    let len = dsdt_off + dsdt.len();

    let above = AcpiError::Above4G {
        base,
        end: base.saturating_add(len as u64),
    };
    let end = base.checked_add(len as u64).ok_or(above)?;
    if end > FOUR_GIB {
        return Err(above);
    }
    let gpa = |off: usize| base + off as u64;
    // Below 4 GiB, as just checked.
    let dsdt32 = u32::try_from(gpa(dsdt_off)).map_err(|_| above)?;

    let fadt = fadt(dsdt32, gpa(dsdt_off));
    let xsdt = xsdt(&[gpa(FADT_OFF), gpa(MADT_OFF)]);
    let rsdp = rsdp(gpa(XSDT_OFF));

    let mut blob = vec![0u8; len];
    for (off, table) in [
        (RSDP_OFF, &rsdp[..]),
        (XSDT_OFF, &xsdt[..]),
        (FADT_OFF, &fadt[..]),
        (MADT_OFF, &madt[..]),
        (dsdt_off, &dsdt[..]),
    ] {
        blob[off..off + table.len()].copy_from_slice(table);
    }
    Ok((blob, gpa(RSDP_OFF)))
}

// ---------------------------------------------------------------------------------
// Layout

const RSDP_LEN: usize = 36;
const HEADER_LEN: usize = 36;
const XSDT_ENTRIES: usize = 2;
const XSDT_LEN: usize = HEADER_LEN + 8 * XSDT_ENTRIES;
const FADT_LEN: usize = 276;
const MADT_FIXED_LEN: usize = HEADER_LEN + 8;
const LAPIC_ENTRY_LEN: usize = 8;

const RSDP_OFF: usize = 0;
const XSDT_OFF: usize = align8(RSDP_OFF + RSDP_LEN);
const FADT_OFF: usize = align8(XSDT_OFF + XSDT_LEN);
const MADT_OFF: usize = align8(FADT_OFF + FADT_LEN);

const fn align8(x: usize) -> usize {
    (x + 7) & !7
}

const fn madt_len(vcpus: u32) -> usize {
    MADT_FIXED_LEN + LAPIC_ENTRY_LEN * vcpus as usize
}

/// The blob's length for `vcpus` (1 ..= [`MAX_VCPUS`]); [`build`] produces exactly this.
const fn blob_len(vcpus: u32) -> usize {
    align8(MADT_OFF + madt_len(vcpus)) + dsdt_len(vcpus)
}

// ---------------------------------------------------------------------------------
// Encoding helpers

const OEM_ID: &[u8; 6] = b"KEEL  ";
const OEM_TABLE_ID: &[u8; 8] = b"KEELPVH ";
const OEM_REVISION: u32 = 1;
const CREATOR_ID: &[u8; 4] = b"KEEL";
const CREATOR_REVISION: u32 = 1;

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    put(buf, off, &v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    put(buf, off, &v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    put(buf, off, &v.to_le_bytes());
}

/// The byte that makes `bytes` sum to zero (mod 256) when it replaces a zero byte.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// A zeroed `len`-byte table with the system description table header (ACPI 6.3
/// §5.2.6, Table 5-29) filled in but for the checksum; [`seal`] sets that last.
fn table(signature: &[u8; 4], revision: u8, len: usize) -> Vec<u8> {
    let mut t = vec![0u8; len];
    put(&mut t, 0, signature);
    // Every table here is at most MAX_SIZE bytes long.
    put_u32(&mut t, 4, len as u32);
    t[8] = revision;
    // t[9]: checksum, by `seal`.
    put(&mut t, 10, OEM_ID);
    put(&mut t, 16, OEM_TABLE_ID);
    put_u32(&mut t, 24, OEM_REVISION);
    put(&mut t, 28, CREATOR_ID);
    put_u32(&mut t, 32, CREATOR_REVISION);
    t
}

/// Sets the header checksum so the whole table sums to zero.
fn seal(mut t: Vec<u8>) -> Vec<u8> {
    t[9] = 0;
    t[9] = checksum(&t);
    t
}

// ---------------------------------------------------------------------------------
// RSDP and XSDT (ACPI 6.3 §5.2.5.3, Table 5-27; §5.2.8, Table 5-31)

fn rsdp(xsdt: u64) -> [u8; RSDP_LEN] {
    let mut r = [0u8; RSDP_LEN];
    put(&mut r, 0, b"RSD PTR ");
    // r[8]: checksum of bytes 0..20 (the ACPI 1.0 part).
    put(&mut r, 9, OEM_ID);
    r[15] = 2; // revision: ACPI 2.0+ (XSDT, length, extended checksum)
    put_u32(&mut r, 16, 0); // RsdtAddress: no RSDT
    put_u32(&mut r, 20, RSDP_LEN as u32);
    put_u64(&mut r, 24, xsdt);
    // r[32]: extended checksum of all 36 bytes; r[33..36] reserved.
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

fn xsdt(entries: &[u64; XSDT_ENTRIES]) -> Vec<u8> {
    let mut t = table(b"XSDT", 1, XSDT_LEN);
    for (i, &e) in entries.iter().enumerate() {
        put_u64(&mut t, HEADER_LEN + 8 * i, e);
    }
    seal(t)
}

// ---------------------------------------------------------------------------------
// FADT (ACPI 6.3 §5.2.9, Table 5-34)

const FADT_REVISION: u8 = 6;
/// ACPI 6.3: FADT major version 6 (the header revision), minor version 3.
const FADT_MINOR_VERSION: u8 = 3;

mod fadt_off {
    pub const FIRMWARE_CTRL: usize = 36;
    pub const DSDT: usize = 40;
    pub const PREFERRED_PM_PROFILE: usize = 45;
    pub const SCI_INT: usize = 46;
    pub const SMI_CMD: usize = 48;
    pub const P_LVL2_LAT: usize = 96;
    pub const P_LVL3_LAT: usize = 98;
    pub const IAPC_BOOT_ARCH: usize = 109;
    pub const FLAGS: usize = 112;
    pub const FADT_MINOR_VERSION: usize = 131;
    pub const X_FIRMWARE_CTRL: usize = 132;
    pub const X_DSDT: usize = 140;
    pub const HYPERVISOR_VENDOR_IDENTITY: usize = 268;
}

/// Fixed feature flags (Table 5-35).
mod fadt_flags {
    pub const WBINVD: u32 = 1 << 0;
    pub const PROC_C1: u32 = 1 << 2;
    pub const PWR_BUTTON: u32 = 1 << 4;
    pub const SLP_BUTTON: u32 = 1 << 5;
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
}

/// IA-PC boot architecture flags (§5.2.9.3, Table 5-36).
mod iapc_boot_arch {
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
    pub const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
}

const FADT_FLAGS: u32 = fadt_flags::WBINVD
    | fadt_flags::PROC_C1
    | fadt_flags::PWR_BUTTON
    | fadt_flags::SLP_BUTTON
    | fadt_flags::HW_REDUCED_ACPI;
const IAPC_BOOT_ARCH: u16 = iapc_boot_arch::VGA_NOT_PRESENT | iapc_boot_arch::CMOS_RTC_NOT_PRESENT;

fn fadt(dsdt32: u32, dsdt64: u64) -> Vec<u8> {
    use fadt_off as o;
    let mut t = table(b"FACP", FADT_REVISION, FADT_LEN);
    // No FACS on a hardware-reduced platform.
    put_u32(&mut t, o::FIRMWARE_CTRL, 0);
    put_u64(&mut t, o::X_FIRMWARE_CTRL, 0);
    put_u32(&mut t, o::DSDT, dsdt32);
    put_u64(&mut t, o::X_DSDT, dsdt64);
    t[o::PREFERRED_PM_PROFILE] = 0; // unspecified
    put_u16(&mut t, o::SCI_INT, 0);
    // 0: no SMI command port, the platform is always in ACPI mode. It and every PM
    // block, length and GAS after it stay zero (hardware-reduced: no fixed hardware).
    put_u32(&mut t, o::SMI_CMD, 0);
    // Greater than 100 / 1000 microseconds: C2 / C3 not supported.
    put_u16(&mut t, o::P_LVL2_LAT, 101);
    put_u16(&mut t, o::P_LVL3_LAT, 1001);
    put_u16(&mut t, o::IAPC_BOOT_ARCH, IAPC_BOOT_ARCH);
    put_u32(&mut t, o::FLAGS, FADT_FLAGS);
    t[o::FADT_MINOR_VERSION] = FADT_MINOR_VERSION;
    put(&mut t, o::HYPERVISOR_VENDOR_IDENTITY, b"KEEL\0\0\0\0");
    seal(t)
}

// ---------------------------------------------------------------------------------
// MADT (ACPI 6.3 §5.2.12, Tables 5-43, 5-45, 5-46)

/// ACPI 6.3's MADT revision.
const MADT_REVISION: u8 = 5;
const MADT_TYPE_LOCAL_APIC: u8 = 0;
const LAPIC_ENABLED: u32 = 1 << 0;

fn madt(cfg: &PvhAcpi) -> Vec<u8> {
    let mut t = table(b"APIC", MADT_REVISION, madt_len(cfg.vcpus));
    put_u32(&mut t, HEADER_LEN, cfg.lapic_base);
    put_u32(&mut t, HEADER_LEN + 4, 0); // flags: no PCAT_COMPAT, there is no 8259
    let (entries, _) = t[MADT_FIXED_LEN..].as_chunks_mut::<LAPIC_ENTRY_LEN>();
    for (i, e) in entries.iter_mut().enumerate() {
        // i < vcpus <= MAX_VCPUS <= 0x7F, so 2i < 0xFF.
        e[0] = MADT_TYPE_LOCAL_APIC;
        e[1] = LAPIC_ENTRY_LEN as u8;
        e[2] = i as u8; // ACPI processor UID, matching the DSDT device's _UID
        e[3] = (2 * i) as u8; // APIC id: 2 x vcpu_id, as CPUID reports
        let enabled = (i as u32) < cfg.online;
        put_u32(e, 4, if enabled { LAPIC_ENABLED } else { 0 });
    }
    seal(t)
}

// ---------------------------------------------------------------------------------
// DSDT (ACPI 6.3 §5.2.11.1) and its AML (§20.2)

/// Revision 2 and up: AML integers are 64-bit.
const DSDT_REVISION: u8 = 2;

const AML_SCOPE_OP: u8 = 0x10;
const AML_NAME_OP: u8 = 0x08;
const AML_EXT_OP_PREFIX: u8 = 0x5B;
const AML_DEVICE_OP: u8 = 0x82; // after AML_EXT_OP_PREFIX
const AML_STRING_PREFIX: u8 = 0x0D;
const AML_BYTE_PREFIX: u8 = 0x0A;
const AML_ROOT_CHAR: u8 = b'\\';

/// `\_SB_`: the root, then the system bus scope's name segment.
const SB_PATH: [u8; 5] = [AML_ROOT_CHAR, b'_', b'S', b'B', b'_'];
const PROCESSOR_HID: &[u8; 8] = b"ACPI0007";

/// `Name (_HID, "ACPI0007")`: NameOp, NameSeg, StringPrefix, 8 characters, NUL.
const HID_LEN: usize = 1 + 4 + 1 + PROCESSOR_HID.len() + 1;
/// `Name (_UID, n)` with n < 256 as a ByteConst: NameOp, NameSeg, BytePrefix, byte.
const UID_LEN: usize = 1 + 4 + 2;
/// A processor device's body after its PkgLength: NameSeg, _HID, _UID.
const DEVICE_BODY_LEN: usize = 4 + HID_LEN + UID_LEN;
/// A whole processor device: ExtOpPrefix, DeviceOp, PkgLength, body.
const DEVICE_LEN: usize = 2 + pkg_length_size(DEVICE_BODY_LEN) + DEVICE_BODY_LEN;

const fn scope_body_len(vcpus: u32) -> usize {
    SB_PATH.len() + DEVICE_LEN * vcpus as usize
}

const fn dsdt_len(vcpus: u32) -> usize {
    let body = scope_body_len(vcpus);
    HEADER_LEN + 1 + pkg_length_size(body) + body
}

/// Bytes a PkgLength (§20.2.4) takes when `body` bytes follow it. The encoded value
/// counts the PkgLength's own bytes too: one byte holds up to 63, and each further
/// byte adds 8 bits to a 4-bit low nibble (12, 20, 28 bits).
const fn pkg_length_size(body: usize) -> usize {
    if body < 0x3F {
        1
    } else if body + 2 < 1 << 12 {
        2
    } else if body + 3 < 1 << 20 {
        3
    } else {
        4
    }
}

/// Appends the PkgLength for `body` following bytes. Values of 2^28 and up cannot
/// be encoded; MAX_VCPUS keeps every package here far below that.
fn push_pkg_length(out: &mut Vec<u8>, body: usize) {
    let n = pkg_length_size(body);
    let total = body + n;
    if n == 1 {
        out.push(total as u8);
        return;
    }
    // Lead byte: bits 7:6 = count of following bytes, bits 3:0 = low nibble.
    out.push((((n - 1) as u8) << 6) | (total & 0x0F) as u8);
    for i in 0..n - 1 {
        out.push((total >> (4 + 8 * i)) as u8);
    }
}

fn hex_digit(d: u32) -> u8 {
    b"0123456789ABCDEF"[(d & 0xF) as usize]
}

/// `Device (CPxx) { Name (_HID, "ACPI0007") Name (_UID, uid) }` with xx = uid in
/// hex; `uid` < 256.
fn push_processor_device(out: &mut Vec<u8>, uid: u32) {
    out.extend_from_slice(&[AML_EXT_OP_PREFIX, AML_DEVICE_OP]);
    push_pkg_length(out, DEVICE_BODY_LEN);
    out.extend_from_slice(&[b'C', b'P', hex_digit(uid >> 4), hex_digit(uid)]);
    out.push(AML_NAME_OP);
    out.extend_from_slice(b"_HID");
    out.push(AML_STRING_PREFIX);
    out.extend_from_slice(PROCESSOR_HID);
    out.push(0);
    out.push(AML_NAME_OP);
    out.extend_from_slice(b"_UID");
    out.extend_from_slice(&[AML_BYTE_PREFIX, uid as u8]);
}

fn dsdt(vcpus: u32) -> Vec<u8> {
    let mut t = table(b"DSDT", DSDT_REVISION, HEADER_LEN);
    t.reserve(dsdt_len(vcpus) - HEADER_LEN);
    t.push(AML_SCOPE_OP);
    push_pkg_length(&mut t, scope_body_len(vcpus));
    t.extend_from_slice(&SB_PATH);
    for uid in 0..vcpus {
        push_processor_device(&mut t, uid);
    }
    let len = t.len() as u32;
    put_u32(&mut t, 4, len);
    seal(t)
}

#[cfg(test)]
mod tests {
    //! The blob is read back by a reader written from the spec's tables, not from the
    //! builder's constants, so a wrong offset shows up as a wrong field.
    use super::*;
    use proptest::prelude::*;

    const BASE: u64 = 0xE_0000;

    fn cfg(vcpus: u32) -> PvhAcpi {
        PvhAcpi {
            vcpus,
            online: vcpus,
            lapic_base: LAPIC_BASE,
        }
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    /// The system description table at guest-physical `gpa`, after checking it lies
    /// in the blob, is 8-byte aligned, has signature `sig`, a sane length, a zero sum
    /// and keel's identity.
    fn table_at<'a>(blob: &'a [u8], base: u64, gpa: u64, sig: &[u8; 4]) -> &'a [u8] {
        assert!(gpa >= base, "{sig:?} at {gpa:#x} below the blob");
        let off = (gpa - base) as usize;
        assert!(off + 36 <= blob.len(), "{sig:?} header outside the blob");
        assert_eq!(off % 8, 0, "{sig:?} not 8-byte aligned");
        assert_eq!(&blob[off..off + 4], sig);
        let len = u32_at(blob, off + 4) as usize;
        assert!(len >= 36 && off + len <= blob.len(), "{sig:?} length {len}");
        let t = &blob[off..off + len];
        assert_eq!(sum(t), 0, "{sig:?} checksum");
        assert_eq!(&t[10..16], b"KEEL  ");
        assert_eq!(&t[16..24], b"KEELPVH ");
        assert_eq!(u32_at(t, 24), 1);
        assert_eq!(&t[28..32], b"KEEL");
        assert_eq!(u32_at(t, 32), 1);
        t
    }

    /// Everything a reader reaches from the RSDP, checked for structure.
    struct Parsed<'a> {
        xsdt: &'a [u8],
        fadt: &'a [u8],
        madt: &'a [u8],
        dsdt: &'a [u8],
    }

    fn parse(blob: &[u8], base: u64, rsdp_gpa: u64) -> Parsed<'_> {
        assert_eq!(rsdp_gpa, base);
        let r = &blob[..36];
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(sum(&r[..20]), 0, "RSDP checksum");
        assert_eq!(sum(r), 0, "RSDP extended checksum");
        assert_eq!(&r[9..15], b"KEEL  ");
        assert_eq!(r[15], 2, "RSDP revision");
        assert_eq!(u32_at(r, 16), 0, "RSDT address");
        assert_eq!(u32_at(r, 20), 36, "RSDP length");
        assert_eq!(&r[33..36], &[0, 0, 0]);

        let xsdt = table_at(blob, base, u64_at(r, 24), b"XSDT");
        assert_eq!(xsdt[8], 1, "XSDT revision");
        assert_eq!(xsdt.len(), 36 + 16, "XSDT has two entries");
        let fadt = table_at(blob, base, u64_at(xsdt, 36), b"FACP");
        let madt = table_at(blob, base, u64_at(xsdt, 44), b"APIC");
        let x_dsdt = u64_at(fadt, 140);
        assert_eq!(u64::from(u32_at(fadt, 40)), x_dsdt, "DSDT and X_DSDT agree");
        let dsdt = table_at(blob, base, x_dsdt, b"DSDT");
        Parsed {
            xsdt,
            fadt,
            madt,
            dsdt,
        }
    }

    fn build_ok(vcpus: u32) -> Vec<u8> {
        let (blob, rsdp) = build(&cfg(vcpus), BASE).unwrap();
        assert!(blob.len() <= MAX_SIZE);
        assert_eq!(blob.len(), blob_len(vcpus));
        parse(&blob, BASE, rsdp);
        blob
    }

    #[test]
    fn fadt_is_hardware_reduced_revision_6_3() {
        let blob = build_ok(1);
        let p = parse(&blob, BASE, BASE);
        let f = p.fadt;
        assert_eq!(f.len(), 276);
        assert_eq!(f[8], 6, "FADT major revision");
        assert_eq!(f[131], 3, "FADT minor version");
        let flags = u32_at(f, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 4), 0, "no fixed power button");
        assert_ne!(flags & (1 << 5), 0, "no fixed sleep button");
        assert_eq!(flags & (1 << 10), 0, "no reset register");
        assert_eq!(flags & (1 << 8), 0, "no PM timer to extend");
        assert_eq!(flags, 0x0010_0035);
        let iapc = u16_at(f, 109);
        assert_eq!(
            iapc,
            (1 << 2) | (1 << 5),
            "no VGA, no CMOS RTC, no 8042, MSI ok"
        );
        // No FACS, both forms.
        assert_eq!(u32_at(f, 36), 0);
        assert_eq!(u64_at(f, 132), 0);
        // DSDT pointers lead to the DSDT.
        assert_eq!(
            u64_at(f, 140),
            BASE + (p.dsdt.as_ptr() as usize - blob.as_ptr() as usize) as u64
        );
        // Profile unspecified, no SCI, no SMI port, no PM blocks or lengths (44..96),
        // no GPE base / C-state count, no reset register or any extended GAS
        // (116..131 and 148..268).
        assert_eq!(f[45], 0);
        assert!(f[44..96].iter().all(|&b| b == 0));
        assert_eq!(u16_at(f, 96), 101, "C2 unsupported");
        assert_eq!(u16_at(f, 98), 1001, "C3 unsupported");
        assert!(
            f[100..109].iter().all(|&b| b == 0),
            "flush, duty, alarms, century"
        );
        assert!(
            f[116..131].iter().all(|&b| b == 0),
            "reset register, ARM flags"
        );
        assert!(
            f[148..268].iter().all(|&b| b == 0),
            "extended blocks, sleep regs"
        );
        assert_eq!(&f[268..276], b"KEEL\0\0\0\0");
    }

    #[test]
    fn xsdt_lists_fadt_then_madt_inside_the_blob() {
        let blob = build_ok(2);
        let p = parse(&blob, BASE, BASE);
        let at = |t: &[u8]| BASE + (t.as_ptr() as usize - blob.as_ptr() as usize) as u64;
        assert_eq!(u64_at(p.xsdt, 36), at(p.fadt));
        assert_eq!(u64_at(p.xsdt, 44), at(p.madt));
        assert_eq!(u64_at(&blob, 24), at(p.xsdt));
    }

    fn check_madt(vcpus: u32, online: u32) {
        let (blob, _) = build(
            &PvhAcpi {
                online,
                ..cfg(vcpus)
            },
            BASE,
        )
        .unwrap();
        let m = parse(&blob, BASE, BASE).madt;
        assert_eq!(m[8], 5, "MADT revision");
        assert_eq!(u32_at(m, 36), LAPIC_BASE);
        assert_eq!(u32_at(m, 40), 0, "no PCAT_COMPAT");
        let mut off = 44;
        let mut n = 0;
        while off < m.len() {
            let (ty, len) = (m[off], m[off + 1] as usize);
            assert_eq!(ty, 0, "only Processor Local APIC entries");
            assert_eq!(len, 8);
            assert_eq!(m[off + 2], n as u8, "ACPI processor UID");
            assert_eq!(m[off + 3], 2 * n as u8, "APIC id");
            assert_eq!(u32_at(m, off + 4), u32::from(n < online), "Enabled");
            off += len;
            n += 1;
        }
        assert_eq!(off, m.len());
        assert_eq!(n, vcpus);
    }

    #[test]
    fn madt_one_entry_per_vcpu() {
        for v in [1, 2, 3, ONE_PAGE_VCPUS, MAX_VCPUS] {
            check_madt(v, v);
            check_madt(v, 1);
            check_madt(v, v.div_ceil(2));
        }
    }

    #[test]
    fn madt_carries_lapic_base() {
        let c = PvhAcpi {
            vcpus: 1,
            online: 1,
            lapic_base: 0xFEC0_1000,
        };
        let (blob, rsdp) = build(&c, BASE).unwrap();
        assert_eq!(u32_at(parse(&blob, BASE, rsdp).madt, 36), 0xFEC0_1000);
    }

    /// Reads a PkgLength: (value, bytes it took).
    fn read_pkg_length(b: &[u8]) -> (usize, usize) {
        let lead = b[0];
        let follow = (lead >> 6) as usize;
        if follow == 0 {
            return ((lead & 0x3F) as usize, 1);
        }
        assert_eq!(lead & 0x30, 0, "reserved PkgLength bits");
        let mut v = (lead & 0x0F) as usize;
        for i in 0..follow {
            v |= (b[1 + i] as usize) << (4 + 8 * i);
        }
        (v, 1 + follow)
    }

    /// Walks `Scope (\_SB_) { Device (CPxx) { Name (_HID, "ACPI0007") Name (_UID, n) } }`.
    fn check_dsdt(vcpus: u32) {
        let blob = build_ok(vcpus);
        let d = parse(&blob, BASE, BASE).dsdt;
        assert_eq!(d[8], 2, "DSDT revision (64-bit integers)");
        let aml = &d[36..];
        assert_eq!(aml[0], 0x10, "ScopeOp");
        let (len, n) = read_pkg_length(&aml[1..]);
        assert_eq!(1 + len, aml.len(), "the scope spans the AML");
        let mut p = 1 + n;
        assert_eq!(&aml[p..p + 5], b"\\_SB_");
        p += 5;
        let mut uid = 0u32;
        while p < aml.len() {
            assert_eq!(&aml[p..p + 2], &[0x5B, 0x82], "DeviceOp");
            let (len, n) = read_pkg_length(&aml[p + 2..]);
            let end = p + 2 + len;
            let mut q = p + 2 + n;
            assert_eq!(&aml[q..q + 4], format!("CP{uid:02X}").as_bytes());
            q += 4;
            assert_eq!(&aml[q..q + 6], b"\x08_HID\x0D");
            q += 6;
            assert_eq!(&aml[q..q + 9], b"ACPI0007\0");
            q += 9;
            assert_eq!(&aml[q..q + 5], b"\x08_UID");
            q += 5;
            assert_eq!(aml[q], 0x0A, "BytePrefix");
            assert_eq!(u32::from(aml[q + 1]), uid);
            q += 2;
            assert_eq!(q, end, "device {uid} ends after _UID");
            p = end;
            uid += 1;
        }
        assert_eq!(p, aml.len());
        assert_eq!(uid, vcpus);
    }

    #[test]
    fn dsdt_has_one_processor_device_per_vcpu() {
        for v in [1, 2, 3, ONE_PAGE_VCPUS, MAX_VCPUS] {
            check_dsdt(v);
        }
    }

    #[test]
    fn pkg_length_encodings() {
        let enc = |body: usize| {
            let mut v = Vec::new();
            push_pkg_length(&mut v, body);
            assert_eq!(v.len(), pkg_length_size(body));
            assert_eq!(read_pkg_length(&v), (body + v.len(), v.len()));
            v
        };
        assert_eq!(enc(0), [0x01]);
        assert_eq!(enc(62), [0x3F]);
        // 63 bytes + 2 = 0x41: lead 0x40 | 1, then 0x04.
        assert_eq!(enc(63), [0x41, 0x04]);
        assert_eq!(enc(0x0FFD), [0x4F, 0xFF]);
        assert_eq!(enc(0x0FFE), [0x81, 0x00, 0x01]);
        assert_eq!(enc(0xF_FFFC), [0x8F, 0xFF, 0xFF]);
        assert_eq!(enc(0xF_FFFD), [0xC1, 0x00, 0x00, 0x01]);
    }

    #[test]
    fn sizes_fit_and_match_the_layout() {
        for v in 1..=MAX_VCPUS {
            let (blob, _) = build(&cfg(v), BASE).unwrap();
            assert_eq!(blob.len(), blob_len(v));
            assert!(blob.len() <= MAX_SIZE);
            assert_eq!(blob.len() <= PAGE_SIZE, v <= ONE_PAGE_VCPUS, "{v} vCPUs");
        }
        assert_eq!(blob_len(MAX_VCPUS), 5204);
    }

    #[test]
    fn vcpu_count_errors() {
        assert_eq!(build(&cfg(0), BASE), Err(AcpiError::NoVcpus));
        for (online, vcpus) in [(0, 2), (3, 2)] {
            assert_eq!(
                build(&PvhAcpi { online, ..cfg(vcpus) }, BASE),
                Err(AcpiError::OnlineVcpus { online, vcpus })
            );
        }
        for v in [MAX_VCPUS + 1, 255, 256, u32::MAX] {
            assert_eq!(
                build(&cfg(v), BASE),
                Err(AcpiError::TooManyVcpus {
                    vcpus: v,
                    max: MAX_VCPUS
                })
            );
        }
    }

    #[test]
    fn base_errors() {
        let c = cfg(1);
        assert_eq!(build(&c, 0), Err(AcpiError::BaseZero));
        for b in [1, 8, 0xE_0010, 0xFFF, FOUR_GIB - 8] {
            assert_eq!(build(&c, b), Err(AcpiError::BaseMisaligned(b)));
        }
        let len = blob_len(1) as u64;
        assert_eq!(
            build(&c, FOUR_GIB),
            Err(AcpiError::Above4G {
                base: FOUR_GIB,
                end: FOUR_GIB + len
            })
        );
        let top: u64 = !0xFFF;
        assert_eq!(
            build(&c, top),
            Err(AcpiError::Above4G {
                base: top,
                end: top + len
            })
        );
        // The end overflows u64: reported saturated, no panic.
        assert_eq!(
            build(&cfg(MAX_VCPUS), top),
            Err(AcpiError::Above4G {
                base: top,
                end: u64::MAX
            })
        );
        // The last page below 4 GiB holds a one-page blob but not a two-page one.
        let last = FOUR_GIB - PAGE_SIZE as u64;
        let (blob, rsdp) = build(&c, last).unwrap();
        parse(&blob, last, rsdp);
        assert!(matches!(
            build(&cfg(MAX_VCPUS), last),
            Err(AcpiError::Above4G { .. })
        ));
        let (blob, rsdp) = build(&cfg(MAX_VCPUS), FOUR_GIB - MAX_SIZE as u64).unwrap();
        parse(&blob, FOUR_GIB - MAX_SIZE as u64, rsdp);
    }

    #[test]
    fn lapic_base_must_be_aligned() {
        let c = PvhAcpi {
            vcpus: 1,
            online: 1,
            lapic_base: LAPIC_BASE + 0x10,
        };
        assert_eq!(
            build(&c, BASE),
            Err(AcpiError::LapicBaseMisaligned(LAPIC_BASE + 0x10))
        );
    }

    #[test]
    fn errors_have_messages() {
        let e = AcpiError::TooManyVcpus {
            vcpus: 200,
            max: 128,
        };
        assert_eq!(
            e.to_string(),
            "200 vCPUs are more than the 128 keel's ACPI tables describe"
        );
    }

    proptest! {
        /// Any configuration either gives a well-formed blob at `base` or the error
        /// its first violated rule names; never a panic.
        #[test]
        fn build_never_panics(vcpus in 0u32..300, lapic in any::<u32>(), page in any::<u64>(), misalign in 0u64..2) {
            let base = (page << 12) | (misalign * 0x800);
            let c = PvhAcpi { vcpus, online: vcpus, lapic_base: lapic & !(0xFFF * (lapic & 1)) };
            match build(&c, base) {
                Ok((blob, rsdp)) => {
                    prop_assert!(blob.len() <= MAX_SIZE);
                    prop_assert!(base + blob.len() as u64 <= FOUR_GIB);
                    let p = parse(&blob, base, rsdp);
                    prop_assert_eq!(u32_at(p.madt, 36), c.lapic_base);
                    prop_assert_eq!(p.madt.len(), 44 + 8 * vcpus as usize);
                }
                Err(AcpiError::NoVcpus) => prop_assert_eq!(vcpus, 0),
                Err(AcpiError::TooManyVcpus { .. }) => prop_assert!(vcpus > MAX_VCPUS),
                Err(AcpiError::OnlineVcpus { .. }) => prop_assert!(false, "online = vcpus is valid"),
                Err(AcpiError::LapicBaseMisaligned(l)) => prop_assert_ne!(l % 4096, 0),
                Err(AcpiError::BaseMisaligned(b)) => prop_assert_ne!(b % 4096, 0),
                Err(AcpiError::BaseZero) => prop_assert_eq!(base, 0),
                Err(AcpiError::Above4G { end, .. }) => prop_assert!(end > FOUR_GIB),
            }
        }
    }
}
