//! ACPI tables, through the `acpi` crate: the RSDP (from the boot loader, else by the
//! BIOS-area search), the MADT (CPUs, IOAPICs, LAPIC address) and the FADT (PM timer,
//! PM1 control blocks), plus the `\_S5` sleep type from the DSDT for power-off.
//!
//! Tables are read through keel's direct map, which covers every range the memory map
//! reports and all of the low 4 GiB; nothing is ever written.
//!
//! `\_S5` lives in AML. Rather than run an AML interpreter inside the hypervisor just
//! to power off, [`find_s5`] recognises the one encoding firmware uses for it, a named
//! package of integers (`Name (_S5, Package () { a, b, ... })`, ACPI 6.4 §20.2.5.2,
//! §20.2.3), and gives up (no power-off, a clear message) on anything else.

use core::ptr::NonNull;

use acpi::InterruptModel;
use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use crate::power::AcpiSleep;
use crate::time::PmTimer;

/// Maps physical ranges through keel's direct map (never unmapped: the map is static).
#[derive(Clone, Copy, Debug)]
pub struct DirectMapHandler;

impl AcpiHandler for DirectMapHandler {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let va = keel_mm::layout::DIRECTMAP_BASE + physical_address as u64;
        // The crate asks only for table ranges the firmware published; the direct map
        // covers them (module doc). A null pointer is impossible (DIRECTMAP_BASE != 0).
        let ptr = NonNull::new(va as *mut T).unwrap_or(NonNull::dangling());
        // SAFETY: `ptr` maps `size` bytes at `physical_address` for as long as keel
        // runs, and the handler does nothing on unmap.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// What keel takes from ACPI.
#[derive(Clone, Debug)]
pub struct Platform {
    pub rsdp: u64,
    /// Enabled (or hot-pluggable) processors in the MADT, the BSP included.
    pub cpus: usize,
    /// The boot processor's APIC id, as the MADT lists it.
    pub bsp_apic_id: u32,
    /// The application processors' APIC ids (x2APIC ids where the MADT gives
    /// them), in the order the MADT lists them, which is the order to start them in.
    pub ap_apic_ids: alloc::vec::Vec<u32>,
    pub lapic_addr: u64,
    pub ioapics: usize,
    pub pm_timer: Option<PmTimer>,
    /// How to enter S5, or why keel cannot.
    pub sleep: Result<AcpiSleep, AcpiProblem>,
}

/// Why some part of ACPI is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiProblem {
    /// no RSDP: the boot loader gave none and the BIOS areas hold none
    NoRsdp,
    /// the RSDP or a table it points to is malformed
    BadTables,
    /// no MADT, or no APIC interrupt model in it
    NoMadt,
    /// no FADT
    NoFadt,
    /// the FADT's PM1 control block is not in I/O space
    Pm1NotIo,
    /// the DSDT has no `\_S5` package keel can read
    NoS5,
}

impl core::fmt::Display for AcpiProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AcpiProblem::NoRsdp => {
                "no RSDP: the boot loader gave none and the BIOS areas hold none"
            }
            AcpiProblem::BadTables => "the RSDP or a table it points to is malformed",
            AcpiProblem::NoMadt => "no MADT with an APIC interrupt model",
            AcpiProblem::NoFadt => "no FADT",
            AcpiProblem::Pm1NotIo => "the FADT's PM1 control block is not in I/O space",
            AcpiProblem::NoS5 => "the DSDT has no \\_S5 package keel can read",
        })
    }
}

fn io_port(addr: acpi::address::GenericAddress) -> Option<u16> {
    (addr.address_space == AddressSpace::SystemIo && addr.address != 0 && addr.address <= 0xFFFF)
        .then_some(addr.address as u16)
}

/// Reads the tables. `rsdp` is the address the boot loader handed over, if any.
/// Needs the heap (the `acpi` crate allocates the processor list).
pub fn init(rsdp: Option<u64>) -> Result<Platform, AcpiProblem> {
    let rsdp = rsdp.or_else(find_rsdp_bios).ok_or(AcpiProblem::NoRsdp)?;
    // SAFETY: the handler maps through the direct map, valid for all firmware tables;
    // `from_rsdp` validates the RSDP checksum and signature before using it.
    let tables =
        unsafe { AcpiTables::from_rsdp(DirectMapHandler, rsdp as usize) }.map_err(|e| match e {
            acpi::AcpiError::NoValidRsdp => AcpiProblem::NoRsdp,
            _ => AcpiProblem::BadTables,
        })?;
    let platform = tables.platform_info().map_err(|_| AcpiProblem::NoMadt)?;
    let (lapic_addr, ioapics) = match &platform.interrupt_model {
        InterruptModel::Apic(apic) => (apic.local_apic_address, apic.io_apics.len()),
        _ => return Err(AcpiProblem::NoMadt),
    };
    let (bsp_apic_id, ap_apic_ids) = match platform.processor_info.as_ref() {
        Some(p) => (
            p.boot_processor.local_apic_id,
            p.application_processors
                .iter()
                .filter(|c| c.state != acpi::platform::ProcessorState::Disabled)
                .map(|c| c.local_apic_id)
                .collect(),
        ),
        None => (crate::apic::id(), alloc::vec::Vec::new()),
    };
    let cpus = 1 + ap_apic_ids.len();
    let pm_timer = platform.pm_timer.as_ref().and_then(|t| {
        io_port(t.base).map(|port| PmTimer {
            port,
            bits32: t.supports_32bit,
        })
    });
    let sleep = sleep_info(&tables);
    Ok(Platform {
        rsdp,
        cpus,
        bsp_apic_id,
        ap_apic_ids,
        lapic_addr,
        ioapics,
        pm_timer,
        sleep,
    })
}

/// Searches the BIOS areas for the RSDP (ACPI 6.4 §5.2.5.1): the first KiB of the
/// EBDA, then 0xE0000..0xFFFFF, on 16-byte boundaries; the first structure whose
/// signature and 20-byte checksum are right wins.
fn find_rsdp_bios() -> Option<u64> {
    let read = |pa: u64, len: usize| -> &'static [u8] {
        let va = keel_mm::layout::DIRECTMAP_BASE + pa;
        // SAFETY: the low 1 MiB is always covered by the direct map and is never
        // written by keel.
        unsafe { core::slice::from_raw_parts(va as *const u8, len) }
    };
    let ebda_segment = u16::from_le_bytes([read(0x40E, 2)[0], read(0x40E, 2)[1]]);
    let ebda = u64::from(ebda_segment) << 4;
    let mut areas = [(0u64, 0usize); 2];
    if (0x80000..0xA0000).contains(&ebda) {
        areas[0] = (ebda, 1024);
    }
    areas[1] = (0xE0000, 0x20000);
    areas.iter().filter(|a| a.1 != 0).find_map(|&(base, len)| {
        let bytes = read(base, len);
        (0..len.saturating_sub(20)).step_by(16).find_map(|off| {
            let c = &bytes[off..off + 20];
            let sum = c.iter().fold(0u8, |s, &b| s.wrapping_add(b));
            (&c[..8] == b"RSD PTR " && sum == 0).then_some(base + off as u64)
        })
    })
}

fn sleep_info(tables: &AcpiTables<DirectMapHandler>) -> Result<AcpiSleep, AcpiProblem> {
    let fadt = tables
        .find_table::<Fadt>()
        .map_err(|_| AcpiProblem::NoFadt)?;
    let pm1a = fadt
        .pm1a_control_block()
        .map_err(|_| AcpiProblem::BadTables)?;
    let pm1a_cnt = io_port(pm1a).ok_or(AcpiProblem::Pm1NotIo)?;
    let pm1b_cnt = fadt.pm1b_control_block().ok().flatten().and_then(io_port);
    let dsdt = tables.dsdt().map_err(|_| AcpiProblem::NoS5)?;
    let va = keel_mm::layout::DIRECTMAP_BASE + dsdt.address as u64;
    // SAFETY: the DSDT's AML stream is `length` bytes at `address` (from its validated
    // header), mapped by the direct map and never written while keel runs.
    let aml = unsafe { core::slice::from_raw_parts(va as *const u8, dsdt.length as usize) };
    let (a, b) = find_s5(aml).ok_or(AcpiProblem::NoS5)?;
    Ok(AcpiSleep {
        pm1a_cnt,
        pm1b_cnt,
        slp_typ_a: a,
        slp_typ_b: b,
    })
}

/// Finds `Name(_S5_, Package(){ SLP_TYPa, SLP_TYPb, ... })` in an AML stream and
/// returns the two sleep types (3 bits each). `None` if absent or not in that form.
pub fn find_s5(aml: &[u8]) -> Option<(u8, u8)> {
    const NAME_OP: u8 = 0x08;
    const PACKAGE_OP: u8 = 0x12;
    let mut from = 0;
    while let Some(off) = aml.get(from..)?.windows(4).position(|w| w == b"_S5_") {
        let at = from + off;
        from = at + 4;
        // NameOp, optionally followed by the root prefix '\'.
        let named = match at {
            0 => false,
            _ if aml[at - 1] == NAME_OP => true,
            _ if at >= 2 && aml[at - 1] == b'\\' && aml[at - 2] == NAME_OP => true,
            _ => false,
        };
        if !named {
            continue;
        }
        let mut p = at + 4;
        if *aml.get(p)? != PACKAGE_OP {
            continue;
        }
        p += 1;
        // PkgLength: bits 7:6 of the lead byte count the bytes that follow.
        let lead = *aml.get(p)?;
        p += 1 + usize::from(lead >> 6);
        let count = *aml.get(p)?;
        p += 1;
        if count == 0 {
            continue;
        }
        let (a, next) = aml_integer(aml, p)?;
        let b = if count >= 2 {
            aml_integer(aml, next).map(|(v, _)| v)?
        } else {
            0
        };
        return Some(((a & 7) as u8, (b & 7) as u8));
    }
    None
}

/// Decodes one AML integer data object at `p`: ZeroOp, OneOp, OnesOp or a Byte/Word/
/// DWord/QWord prefix. Returns the value and the offset after it.
fn aml_integer(aml: &[u8], p: usize) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let bytes = aml.get(p + 1..p + 1 + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    };
    match *aml.get(p)? {
        0x00 => Some((0, p + 1)),
        0x01 => Some((1, p + 1)),
        0xFF => Some((u64::MAX, p + 1)),
        0x0A => Some((le(1)?, p + 2)),
        0x0B => Some((le(2)?, p + 3)),
        0x0C => Some((le(4)?, p + 5)),
        0x0E => Some((le(8)?, p + 9)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::find_s5;

    #[test]
    fn qemu_style_byte_prefixed_package() {
        // Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
        let aml = [
            0x10, 0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x0A, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00,
            0x00,
        ];
        assert_eq!(find_s5(&aml[1..]), Some((5, 5)));
    }

    #[test]
    fn zero_ops_and_root_prefix() {
        // Name (\_S5, Package (0x02) { Zero, Zero }) as Bochs/SeaBIOS emit it.
        let aml = [
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x00, 0x00,
        ];
        assert_eq!(find_s5(&aml), Some((0, 0)));
    }

    #[test]
    fn one_element_package_defaults_b_to_zero() {
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0x0A, 0x07];
        assert_eq!(find_s5(&aml), Some((7, 0)));
    }

    #[test]
    fn skips_references_that_are_not_definitions() {
        // A method referring to _S5_ (no NameOp before it), then the real definition.
        let aml = [
            0xA4, b'_', b'S', b'5', b'_', 0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x01,
            0x0A, 0x03,
        ];
        assert_eq!(find_s5(&aml), Some((1, 3)));
    }

    #[test]
    fn multi_byte_pkglength() {
        let aml = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x00, 0x02, 0x0B, 0x06, 0x00, 0x0C, 0x02, 0,
            0, 0,
        ];
        assert_eq!(find_s5(&aml), Some((6, 2)));
    }

    #[test]
    fn truncated_or_absent_is_none_never_a_panic() {
        assert_eq!(find_s5(&[]), None);
        assert_eq!(find_s5(b"no sleep states here"), None);
        let full = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x0A, 0x05, 0x0A, 0x05,
        ];
        for cut in 0..full.len() {
            assert_eq!(find_s5(&full[..cut]), None, "cut at {cut}");
        }
        // Not a package, and an empty package.
        assert_eq!(find_s5(&[0x08, b'_', b'S', b'5', b'_', 0x0A, 0x05]), None);
        assert_eq!(
            find_s5(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x02, 0x00]),
            None
        );
    }
}
