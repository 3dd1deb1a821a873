//! Finding the vCPUs in the MADT, as a PVH kernel does: `hvm_start_info.rsdp_paddr`
//! -> RSDP -> XSDT (or RSDT) -> the table with signature `APIC` (ACPI 6.3 §5.2.5,
//! §5.2.7-§5.2.8, §5.2.12).
//!
//! A Xen PVH domain's MADT (libacpi's, for domUs; the same layout for a PVH Dom0)
//! has one Processor Local APIC entry (type 0) per vCPU the domain has, in vCPU
//! order, APIC id 2 x vcpu id, "enabled" (flags bit 0) set for the vCPUs online at
//! boot (`vcpus`) and clear for the rest (up to `maxvcpus`, hot-pluggable).
//! Processor Local x2APIC entries (type 9) are read too, should a hypervisor
//! describe its vCPUs that way.
//!
//! Every table is read through pvh64's identity map of the low 4 GiB; an address
//! at or above 4 GiB, a length beyond `MAX_TABLE`, or a bad checksum is an error
//! rather than a read.

use crate::start_info::READABLE_LIMIT;

/// Entries kept (Xen's `HVM_MAX_VCPUS` is 128).
pub const MAX_CPUS: usize = 256;

/// Longest table accepted.
const MAX_TABLE: u32 = 64 * 1024;

/// The system description table header's length.
const HEADER: u64 = 36;

/// One processor entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// ACPI processor UID.
    pub uid: u32,
    /// (x2)APIC id.
    pub apic_id: u32,
    /// Flags bit 0: enabled.
    pub enabled: bool,
}

/// What the MADT says.
#[derive(Clone, Copy, Debug)]
pub struct Madt {
    /// Its guest-physical address.
    pub pa: u64,
    /// The local APIC address it names.
    pub lapic_base: u32,
    /// The processor entries, in table order.
    pub cpus: [Cpu; MAX_CPUS],
    /// How many of `cpus` are valid.
    pub count: usize,
    /// Processor entries beyond [`MAX_CPUS`] (counted, not kept).
    pub dropped: usize,
}

impl Madt {
    /// The processor entries.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus[..self.count]
    }
}

/// Why no MADT could be read; the text says it.
#[derive(Clone, Copy, Debug)]
pub struct AcpiError(pub &'static str, pub u64);

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (at {:#x})", self.0, self.1)
    }
}

/// Whether `[pa, pa + len)` can be read (non-null, below 4 GiB).
fn readable(pa: u64, len: u64) -> bool {
    pa != 0 && pa.checked_add(len).is_some_and(|end| end <= READABLE_LIMIT)
}

/// The byte at guest-physical `pa` (the caller checked [`readable`]).
fn byte(pa: u64) -> u8 {
    // SAFETY: below 4 GiB, identity-mapped by pvh64's entry stub; the ACPI
    // tables are in RAM or reserved memory the hypervisor filled, and reading
    // them has no side effects.
    unsafe { core::ptr::read_volatile(pa as usize as *const u8) }
}

/// `N` bytes at `pa`, little-endian (the caller checked [`readable`]).
fn le(pa: u64, n: u64) -> u64 {
    (0..n).fold(0, |v, i| v | (u64::from(byte(pa + i)) << (8 * i)))
}

/// Whether the `len` bytes at `pa` sum to zero.
fn checksum_ok(pa: u64, len: u64) -> bool {
    (0..len).fold(0u8, |s, i| s.wrapping_add(byte(pa + i))) == 0
}

/// Whether the 4 bytes at `pa` are `sig`.
fn signature(pa: u64, sig: &[u8; 4]) -> bool {
    (0..4).all(|i| byte(pa + i) == sig[i as usize])
}

/// A table's length after checking it is readable, sane and checksummed.
fn table_len(pa: u64) -> Result<u64, AcpiError> {
    if !readable(pa, HEADER) {
        return Err(AcpiError("table header not readable", pa));
    }
    let len = le(pa + 4, 4);
    if len < HEADER || len > u64::from(MAX_TABLE) || !readable(pa, len) {
        return Err(AcpiError("table length out of range", pa));
    }
    if !checksum_ok(pa, len) {
        return Err(AcpiError("table checksum wrong", pa));
    }
    Ok(len)
}

/// Finds and reads the MADT from the RSDP at `rsdp`.
pub fn find_madt(rsdp: u64) -> Result<Madt, AcpiError> {
    if !readable(rsdp, 36) {
        return Err(AcpiError(
            "no readable RSDP (hvm_start_info.rsdp_paddr)",
            rsdp,
        ));
    }
    if (0..8).any(|i| byte(rsdp + i) != b"RSD PTR "[i as usize]) {
        return Err(AcpiError("no RSDP signature", rsdp));
    }
    if !checksum_ok(rsdp, 20) {
        return Err(AcpiError("RSDP checksum wrong", rsdp));
    }
    // Revision 2 and later: the XSDT (64-bit entries), with the extended checksum.
    let (root, entry_size) = if byte(rsdp + 15) >= 2 && le(rsdp + 24, 8) != 0 {
        if !checksum_ok(rsdp, le(rsdp + 20, 4).clamp(36, 64)) {
            return Err(AcpiError("RSDP extended checksum wrong", rsdp));
        }
        (le(rsdp + 24, 8), 8)
    } else {
        (le(rsdp + 16, 4), 4)
    };
    let root_len = table_len(root)?;
    let mut at = root + HEADER;
    while at + entry_size <= root + root_len {
        let table = le(at, entry_size);
        at += entry_size;
        if readable(table, HEADER) && signature(table, b"APIC") {
            return read_madt(table);
        }
    }
    Err(AcpiError("no APIC table in the XSDT/RSDT", root))
}

/// Reads the MADT at `pa`.
fn read_madt(pa: u64) -> Result<Madt, AcpiError> {
    let len = table_len(pa)?;
    let mut m = Madt {
        pa,
        lapic_base: le(pa + HEADER, 4) as u32,
        cpus: [Cpu::default(); MAX_CPUS],
        count: 0,
        dropped: 0,
    };
    let mut at = pa + HEADER + 8;
    while at + 2 <= pa + len {
        let (kind, elen) = (byte(at), u64::from(byte(at + 1)));
        if elen < 2 || at + elen > pa + len {
            return Err(AcpiError("MADT entry with a bad length", at));
        }
        let cpu = match (kind, elen) {
            // Processor Local APIC: UID, APIC id (bytes), flags.
            (0, 8) => Some(Cpu {
                uid: u32::from(byte(at + 2)),
                apic_id: u32::from(byte(at + 3)),
                enabled: le(at + 4, 4) & 1 != 0,
            }),
            // Processor Local x2APIC: x2APIC id, flags, UID (u32s).
            (9, 16) => Some(Cpu {
                apic_id: le(at + 4, 4) as u32,
                enabled: le(at + 8, 4) & 1 != 0,
                uid: le(at + 12, 4) as u32,
            }),
            (0 | 9, _) => return Err(AcpiError("processor entry with a bad length", at)),
            _ => None,
        };
        if let Some(cpu) = cpu {
            if m.count < MAX_CPUS {
                m.cpus[m.count] = cpu;
                m.count += 1;
            } else {
                m.dropped += 1;
            }
        }
        at += elen;
    }
    Ok(m)
}
