//! Walking a guest's own page tables: guest-virtual to guest-physical, in software.
//!
//! Hypercall arguments are guest-virtual pointers, and the hardware translates them
//! only while the guest runs. To copy an argument in, keel repeats the walk the
//! guest's MMU would do, in whatever paging mode the vCPU is in (SDM Vol. 3A ch. 4
//! "Paging"; AMD APM Vol. 2 ch. 5 "Page Translation and Protection"):
//!
//! | mode               | tables (entry size)       | leaves            | SDM Vol. 3A |
//! |--------------------|---------------------------|-------------------|-------------|
//! | `Off` (CR0.PG = 0) | none: gva is the gpa      | -                 | §4.1.1      |
//! | `Bits32`           | PD, PT (4 bytes)          | 4K; 4M if CR4.PSE | §4.3        |
//! | `Pae`              | 4 PDPTEs, PD, PT (8)      | 4K, 2M            | §4.4        |
//! | `Long4`            | PML4, PDPT, PD, PT (8)    | 4K, 2M, 1G        | §4.5        |
//!
//! Levels are numbered as in the rest of `mm`: 1 = PT, 2 = PD, 3 = PDPT (PAE's four
//! PDPTEs too), 4 = PML4. A fault names the level whose entry caused it.
//!
//! The guest's tables are guest-physical memory and are read through
//! [`GuestPhysRead`], i.e. through the p2m: an entry pointing outside the guest's RAM
//! is [`WalkFault::TableUnbacked`], never a read of someone else's memory.
//!
//! What is checked, as the hardware does for a supervisor-mode access:
//! - Present (bit 0) at every level, then reserved bits (§4.3 Table 4-4ff, §4.4
//!   Tables 4-8..4-11, §4.5 Tables 4-15..4-20), with MAXPHYADDR taken as 52, the
//!   architectural maximum (keel does not know the guest's CPUID view here). So:
//!   PAE: PDPTE bits 2:1, 8:5, 63:52; PDE/PTE bits 62:52, and 63 (XD) without NXE.
//!   Long mode: PML4E bit 7; bit 63 without NXE; bits 62:52 are *ignored* in 4-level
//!   paging (Linux keeps software bits there) and so are not checked. Large leaves:
//!   bits 20:13 (2M) and 29:13 (1G) are reserved; bit 12 is PAT.
//! - Writes: R/W must be set at every level when CR0.WP is set; with WP clear a
//!   supervisor write ignores R/W (§4.6.1). PAE PDPTEs have no R/W bit.
//! - Fetches: with EFER.NXE, XD (bit 63) at any level forbids them (§4.6.1).
//!
//! Deliberate simplifications (hypercall copies are supervisor data accesses made on
//! behalf of the guest kernel):
//! - U/S is ignored: no SMEP/SMAP or protection-key checks.
//! - Accessed and dirty bits are never set: keel does not write guest page tables, and
//!   guests do not rely on A/D for hypercall buffers.
//! - 32-bit paging: PSE-36 is supported with the address width capped at 40 bits
//!   (§4.3: bits 20:13 of a 4M PDE are physical address bits 39:32); bit 21 is
//!   reserved. CR4.PSE = 0 makes PDE.PS ignored, so that PDE points to a PT.
//! - 1G leaves are accepted whether or not the guest's CPUID offers them.
//! - 5-level paging (CR4.LA57) is not supported.
//! - Outside long mode the linear address space is 4 GiB: an address above it is
//!   [`WalkFault::AddressTooWide`] rather than truncated (a 32-bit guest cannot have
//!   meant it).
//!
//! Hazards:
//! - The walk is not atomic against the guest: another vCPU may change the tables
//!   mid-walk. The result is then some translation the guest could have produced, and
//!   always inside its own RAM, so the guest can only confuse itself.
//! - PAE PDPTEs are read from memory at walk time; the CPU uses the copies it loaded
//!   with the last MOV to CR3 (§4.4.1). A guest that edits PDPTEs without reloading
//!   CR3 sees its hypercalls translated with the new ones.

use crate::addr::{Gpa, Gva};

/// The guest's paging mode, from its CR0.PG, CR4.PAE, EFER.LMA (and CR4.PSE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: the gva is the gpa. Only reachable outside long mode, so the
    /// address must fit in 32 bits.
    Off,
    /// 32-bit paging; `pse` is CR4.PSE (4 MiB pages).
    Bits32 { pse: bool },
    /// PAE paging (CR4.PAE = 1, EFER.LMA = 0).
    Pae,
    /// 4-level paging (EFER.LMA = 1, CR4.LA57 = 0).
    Long4,
}

/// What the walk needs of the vCPU's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkCtx {
    pub mode: PagingMode,
    pub cr3: u64,
    /// EFER.NXE: bit 63 of PAE / 4-level entries is XD rather than reserved.
    pub nxe: bool,
    /// CR0.WP: supervisor writes honour R/W.
    pub wp: bool,
}

/// The kind of (supervisor) access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    Fetch,
}

/// Reads guest-physical memory for the walker: 8 or 4 bytes at `gpa` (naturally
/// aligned); `None` if that gpa is not backed by RAM in the p2m.
pub trait GuestPhysRead {
    fn read_u64(&self, gpa: Gpa) -> Option<u64>;
    fn read_u32(&self, gpa: Gpa) -> Option<u32>;
}

/// Why a guest-virtual address does not translate (the guest would take a #PF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum WalkFault {
    /// level-{level} entry not present
    NotPresent { level: u8 },
    /// write to a page the level-{level} entry makes read-only
    ReadOnly { level: u8 },
    /// instruction fetch from a no-execute page
    NoExecute,
    /// reserved bit set in the level-{level} entry
    ReservedBit { level: u8 },
    /// non-canonical address
    NonCanonical,
    /// a page-table entry points outside the guest's RAM ({gpa:#x})
    TableUnbacked { gpa: u64 },
    /// address does not fit the paging mode (above 4 GiB outside long mode)
    AddressTooWide,
}

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;
/// Address bits 51:12 of an 8-byte entry.
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 62:52, reserved in PAE paging and ignored in 4-level paging.
const HIGH: u64 = 0x7FF0_0000_0000_0000;
/// PAE PDPTE reserved bits as keel checks them: 2:1 and 63:52 (SDM Vol. 3A §4.4.1
/// Table 4-8 also reserves 8:5, but AMD CPUs, and QEMU's model of them, set the
/// accessed bit (5) in PDPTEs; the walk only serves hypercall copies, so keel
/// tolerates 8:5 rather than fail a guest whose own MMU accepts its tables).
const PDPTE_RESERVED: u64 = 0b110 | HIGH | XD;

/// Translates `gva` for a supervisor `access`, as the guest's MMU would.
pub fn translate(
    ctx: &WalkCtx,
    gva: Gva,
    access: AccessKind,
    mem: &impl GuestPhysRead,
) -> Result<Gpa, WalkFault> {
    let va = gva.as_u64();
    match ctx.mode {
        PagingMode::Long4 => {
            if !gva.is_canonical() {
                return Err(WalkFault::NonCanonical);
            }
            walk64(ctx, va, access, mem, ctx.cr3 & ADDR, 4, 0)
        }
        _ if va > u64::from(u32::MAX) => Err(WalkFault::AddressTooWide),
        PagingMode::Off => gpa(va),
        PagingMode::Bits32 { pse } => walk32(ctx, va, pse, access, mem),
        PagingMode::Pae => {
            // CR3 bits 31:5 locate the four PDPTEs (§4.4.1).
            let at = (ctx.cr3 & 0xFFFF_FFE0) + ((va >> 30) & 3) * 8;
            let e = read64(mem, at)?;
            if e & P == 0 {
                return Err(WalkFault::NotPresent { level: 3 });
            }
            if e & PDPTE_RESERVED != 0 {
                return Err(WalkFault::ReservedBit { level: 3 });
            }
            walk64(ctx, va, access, mem, e & ADDR, 2, HIGH)
        }
    }
}

/// Permission bits gathered on the way down.
#[derive(Default)]
struct Perms {
    /// The first (highest) level whose entry clears R/W.
    read_only: Option<u8>,
    /// XD set somewhere (with NXE).
    no_exec: bool,
}

impl Perms {
    fn check(&self, ctx: &WalkCtx, access: AccessKind) -> Result<(), WalkFault> {
        match access {
            AccessKind::Read => Ok(()),
            AccessKind::Write => match self.read_only {
                Some(level) if ctx.wp => Err(WalkFault::ReadOnly { level }),
                _ => Ok(()),
            },
            AccessKind::Fetch if self.no_exec => Err(WalkFault::NoExecute),
            AccessKind::Fetch => Ok(()),
        }
    }
}

/// Walks 8-byte tables from the one at `table` (level `top`) down: 4-level paging
/// (`top` 4), or PAE below its PDPTE (`top` 2, with bits 62:52 reserved in `high`).
fn walk64(
    ctx: &WalkCtx,
    va: u64,
    access: AccessKind,
    mem: &impl GuestPhysRead,
    mut table: u64,
    top: u8,
    high: u64,
) -> Result<Gpa, WalkFault> {
    let mut perms = Perms::default();
    for level in (1..=top).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let e = read64(mem, table + ((va >> shift) & 511) * 8)?;
        if e & P == 0 {
            return Err(WalkFault::NotPresent { level });
        }
        let leaf = level == 1 || (level < 4 && e & PS != 0);
        let mut reserved = high | if ctx.nxe { 0 } else { XD };
        if level == 4 {
            reserved |= PS;
        }
        let page_mask = (1u64 << shift) - 1;
        if leaf && level > 1 {
            // Bits shift-1..13 of a large leaf (bit 12 is PAT).
            reserved |= page_mask & !0x1FFF;
        }
        if e & reserved != 0 {
            return Err(WalkFault::ReservedBit { level });
        }
        if e & RW == 0 && perms.read_only.is_none() {
            perms.read_only = Some(level);
        }
        perms.no_exec |= ctx.nxe && e & XD != 0;
        if leaf {
            perms.check(ctx, access)?;
            return gpa((e & ADDR & !page_mask) | (va & page_mask));
        }
        table = e & ADDR;
    }
    // Level 1 entries are always leaves, so the loop returns before ending.
    Err(WalkFault::NotPresent { level: 1 })
}

/// 32-bit paging (§4.3): a PD and a PT of 4-byte entries, or a 4M leaf in the PD.
fn walk32(
    ctx: &WalkCtx,
    va: u64,
    pse: bool,
    access: AccessKind,
    mem: &impl GuestPhysRead,
) -> Result<Gpa, WalkFault> {
    let mut perms = Perms::default();
    let pde = read32(mem, (ctx.cr3 & 0xFFFF_F000) + ((va >> 22) & 1023) * 4)?;
    if pde & P == 0 {
        return Err(WalkFault::NotPresent { level: 2 });
    }
    if pde & RW == 0 {
        perms.read_only = Some(2);
    }
    if pse && pde & PS != 0 {
        if pde & (1 << 21) != 0 {
            return Err(WalkFault::ReservedBit { level: 2 });
        }
        perms.check(ctx, access)?;
        // PSE-36: bits 20:13 are physical address bits 39:32 (§4.3, Table 4-4).
        let base = (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32;
        return gpa(base | (va & 0x3F_FFFF));
    }
    let pte = read32(mem, (pde & 0xFFFF_F000) + ((va >> 12) & 1023) * 4)?;
    if pte & P == 0 {
        return Err(WalkFault::NotPresent { level: 1 });
    }
    if pte & RW == 0 && perms.read_only.is_none() {
        perms.read_only = Some(1);
    }
    perms.check(ctx, access)?;
    gpa((pte & 0xFFFF_F000) | (va & 0xFFF))
}

/// A computed guest-physical address. All callers pass values masked to 52 bits, so
/// the error is unreachable; it is a fault rather than a panic all the same.
fn gpa(a: u64) -> Result<Gpa, WalkFault> {
    Gpa::new(a).ok_or(WalkFault::AddressTooWide)
}

fn read64(mem: &impl GuestPhysRead, at: u64) -> Result<u64, WalkFault> {
    mem.read_u64(gpa(at)?)
        .ok_or(WalkFault::TableUnbacked { gpa: at })
}

fn read32(mem: &impl GuestPhysRead, at: u64) -> Result<u64, WalkFault> {
    mem.read_u32(gpa(at)?)
        .map(u64::from)
        .ok_or(WalkFault::TableUnbacked { gpa: at })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::AccessKind::*;
    use super::PagingMode::*;
    use super::WalkFault::*;
    use super::*;

    /// Guest RAM: the pages present in the map, little-endian.
    #[derive(Default)]
    struct Ram(HashMap<u64, [u8; 4096]>);

    impl Ram {
        fn page(&mut self, a: u64) -> &mut [u8; 4096] {
            self.0.entry(a >> 12).or_insert([0; 4096])
        }
        fn set64(&mut self, a: u64, v: u64) {
            let o = (a & 0xFFF) as usize;
            self.page(a)[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn set32(&mut self, a: u64, v: u32) {
            let o = (a & 0xFFF) as usize;
            self.page(a)[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn get<const N: usize>(&self, gpa: Gpa) -> Option<[u8; N]> {
            let a = gpa.as_u64();
            let o = (a & 0xFFF) as usize;
            self.0.get(&(a >> 12)).map(|p| {
                let mut b = [0; N];
                b.copy_from_slice(&p[o..o + N]);
                b
            })
        }
    }

    impl GuestPhysRead for Ram {
        fn read_u64(&self, gpa: Gpa) -> Option<u64> {
            self.get(gpa).map(u64::from_le_bytes)
        }
        fn read_u32(&self, gpa: Gpa) -> Option<u32> {
            self.get(gpa).map(u32::from_le_bytes)
        }
    }

    const A: u64 = 1 << 5; // accessed: set by hardware, must not matter
    const PW: u64 = P | RW;

    fn ctx(mode: PagingMode, cr3: u64) -> WalkCtx {
        WalkCtx {
            mode,
            cr3,
            nxe: true,
            wp: true,
        }
    }

    fn go(c: &WalkCtx, va: u64, access: AccessKind, ram: &Ram) -> Result<u64, WalkFault> {
        translate(c, Gva::new(va), access, ram).map(Gpa::as_u64)
    }

    /// Index of `va` at `level` for 8-byte tables.
    fn ix(va: u64, level: u32) -> u64 {
        (va >> (12 + 9 * (level - 1))) & 511
    }

    // Long mode: PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
    const VA: u64 = 0xFFFF_8123_4567_8ABC;

    fn long_tables() -> Ram {
        let mut ram = Ram::default();
        ram.set64(0x1000 + ix(VA, 4) * 8, 0x2000 | PW | A);
        ram.set64(0x2000 + ix(VA, 3) * 8, 0x3000 | PW);
        ram.set64(0x3000 + ix(VA, 2) * 8, 0x4000 | PW);
        ram.set64(0x4000 + ix(VA, 1) * 8, 0x12_3456_7000 | PW);
        ram
    }

    fn entry_at(va: u64, level: u32) -> u64 {
        0x1000 * (5 - u64::from(level)) + ix(va, level) * 8
    }

    #[test]
    fn long_mode_leaves() {
        let mut ram = long_tables();
        let c = ctx(Long4, 0x1000 | 0x5); // PCID in bits 11:0 is not address
        assert_eq!(go(&c, VA, Read, &ram), Ok(0x12_3456_7ABC));
        assert_eq!(go(&c, VA, Write, &ram), Ok(0x12_3456_7ABC));
        assert_eq!(go(&c, VA, Fetch, &ram), Ok(0x12_3456_7ABC));
        // 2 MiB leaf (PAT bit 12 set: not reserved, not address).
        ram.set64(entry_at(VA, 2), 0x8000_0000 | 1 << 12 | PS | PW);
        assert_eq!(go(&c, VA, Read, &ram), Ok(0x8000_0000 | (VA & 0x1F_FFFF)));
        // 1 GiB leaf.
        ram.set64(entry_at(VA, 3), 0x40_0000_0000 | PS | PW);
        assert_eq!(
            go(&c, VA, Read, &ram),
            Ok(0x40_0000_0000 | (VA & 0x3FFF_FFFF))
        );
        // Software bits 62:52 are ignored in 4-level paging.
        ram.set64(
            entry_at(VA, 3),
            0x40_0000_0000 | PS | PW | 0x0600_0000_0000_0000,
        );
        assert!(go(&c, VA, Read, &ram).is_ok());
    }

    #[test]
    fn long_mode_not_present_at_each_level() {
        for level in 1..=4 {
            let mut ram = long_tables();
            let a = entry_at(VA, level);
            let e = ram.read_u64(Gpa::new(a).unwrap()).unwrap();
            ram.set64(a, e & !P);
            assert_eq!(
                go(&ctx(Long4, 0x1000), VA, Read, &ram),
                Err(NotPresent { level: level as u8 })
            );
        }
    }

    #[test]
    fn long_mode_read_only_and_wp() {
        let mut ram = long_tables();
        let pte = entry_at(VA, 1);
        ram.set64(pte, 0x5000 | P);
        let mut c = ctx(Long4, 0x1000);
        assert_eq!(go(&c, VA, Write, &ram), Err(ReadOnly { level: 1 }));
        assert_eq!(go(&c, VA, Read, &ram), Ok(0x5ABC));
        ram.set64(entry_at(VA, 3), 0x3000 | P);
        assert_eq!(
            go(&c, VA, Write, &ram),
            Err(ReadOnly { level: 3 }),
            "highest level named"
        );
        c.wp = false;
        assert_eq!(go(&c, VA, Write, &ram), Ok(0x5ABC));
    }

    #[test]
    fn long_mode_no_execute() {
        let mut ram = long_tables();
        ram.set64(entry_at(VA, 2), 0x4000 | PW | XD);
        let mut c = ctx(Long4, 0x1000);
        assert_eq!(go(&c, VA, Fetch, &ram), Err(NoExecute));
        assert_eq!(go(&c, VA, Read, &ram), Ok(0x12_3456_7ABC));
        c.nxe = false;
        assert_eq!(go(&c, VA, Read, &ram), Err(ReservedBit { level: 2 }));
    }

    #[test]
    fn long_mode_reserved_bits() {
        let c = ctx(Long4, 0x1000);
        for (level, value) in [
            (4, 0x2000 | PW | PS),                   // PS in a PML4E
            (3, 0x40_0000_0000 | PS | PW | 1 << 29), // 1G leaf bits 29:13
            (3, 0x40_0000_0000 | PS | PW | 1 << 13),
            (2, 0x8000_0000 | PS | PW | 1 << 20), // 2M leaf bits 20:13
        ] {
            let mut ram = long_tables();
            ram.set64(entry_at(VA, level), value);
            assert_eq!(
                go(&c, VA, Read, &ram),
                Err(ReservedBit { level: level as u8 }),
                "{value:#x}"
            );
        }
    }

    #[test]
    fn long_mode_non_canonical_and_unbacked_tables() {
        let mut ram = long_tables();
        let c = ctx(Long4, 0x1000);
        assert_eq!(go(&c, 0x8000_0000_0000, Read, &ram), Err(NonCanonical));
        assert_eq!(go(&c, 0xFFFF_7FFF_FFFF_F000, Read, &ram), Err(NonCanonical));
        ram.set64(entry_at(VA, 3), 0x9_9999_9000 | PW);
        assert_eq!(
            go(&c, VA, Read, &ram),
            Err(TableUnbacked {
                gpa: 0x9_9999_9000 + ix(VA, 2) * 8
            })
        );
        assert_eq!(
            go(&ctx(Long4, 0x7000), VA, Read, &ram),
            Err(TableUnbacked {
                gpa: 0x7000 + ix(VA, 4) * 8
            })
        );
    }

    // PAE: PDPT at 0x1020 (32-byte aligned, mid-page), PD 0x2000, PT 0x3000.
    const PVA: u64 = 0xC012_3ABC; // PDPTE 3, PDE 0, PTE 0x123

    fn pae_tables() -> Ram {
        let mut ram = Ram::default();
        ram.set64(0x1020 + 3 * 8, 0x2000 | P);
        ram.set64(0x2000, 0x3000 | PW);
        ram.set64(0x3000 + 0x123 * 8, 0x7_0000_5000 | PW);
        ram
    }

    #[test]
    fn pae_leaves_and_faults() {
        let mut ram = pae_tables();
        let c = ctx(Pae, 0x1020);
        assert_eq!(go(&c, PVA, Write, &ram), Ok(0x7_0000_5ABC));
        assert_eq!(go(&c, 1 << 32, Read, &ram), Err(AddressTooWide));
        assert_eq!(
            go(&c, 0x4000_0000, Read, &ram),
            Err(NotPresent { level: 3 })
        );
        // NX in the PTE.
        ram.set64(0x3000 + 0x123 * 8, 0x5000 | PW | XD);
        assert_eq!(go(&c, PVA, Fetch, &ram), Err(NoExecute));
        let no_nxe = WalkCtx { nxe: false, ..c };
        assert_eq!(go(&no_nxe, PVA, Read, &ram), Err(ReservedBit { level: 1 }));
        // Read-only PDE.
        ram.set64(0x2000, 0x3000 | P);
        assert_eq!(go(&c, PVA, Write, &ram), Err(ReadOnly { level: 2 }));
        // 2M leaf.
        ram.set64(0x2000, 0x4020_0000 | PS | PW);
        assert_eq!(go(&c, PVA, Read, &ram), Ok(0x4020_0000 | (PVA & 0x1F_FFFF)));
        // Bits 62:52 are reserved in PAE paging.
        ram.set64(0x2000, 0x4020_0000 | PS | PW | 1 << 52);
        assert_eq!(go(&c, PVA, Read, &ram), Err(ReservedBit { level: 2 }));
        ram.set64(0x2000, 0x3000 | PW);
        ram.set64(0x3000 + 0x123 * 8, 0);
        assert_eq!(go(&c, PVA, Read, &ram), Err(NotPresent { level: 1 }));
        ram.set64(0x2000, 0);
        assert_eq!(go(&c, PVA, Read, &ram), Err(NotPresent { level: 2 }));
    }

    #[test]
    fn pae_pdpte_reserved_bits() {
        let c = ctx(Pae, 0x1020);
        for bit in [1, 2, 52, 63] {
            let mut ram = pae_tables();
            ram.set64(0x1020 + 3 * 8, 0x2000 | P | 1 << bit);
            assert_eq!(
                go(&c, PVA, Read, &ram),
                Err(ReservedBit { level: 3 }),
                "bit {bit}"
            );
        }
        let mut ram = pae_tables();
        ram.set64(0x1020 + 3 * 8, 0x2000 | P | 1 << 3 | 1 << 4 | 1 << 9);
        assert!(go(&c, PVA, Read, &ram).is_ok(), "PWT, PCD, ignored bits");
        // Bits 8:5 are tolerated: AMD CPUs (and QEMU) set A (5) in PDPTEs.
        ram.set64(0x1020 + 3 * 8, 0x2000 | P | 0b1111 << 5);
        assert!(go(&c, PVA, Read, &ram).is_ok(), "bits 8:5");
        ram.set64(0x1020 + 3 * 8, 0x9000 | P);
        assert_eq!(go(&c, PVA, Read, &ram), Err(TableUnbacked { gpa: 0x9000 }));
    }

    // 32-bit: PD 0x1000, PT 0x2000.
    const BVA: u64 = 0x8040_1ABC; // PDE 0x201, PTE 1

    fn bits32_tables() -> Ram {
        let mut ram = Ram::default();
        ram.set32(0x1000 + 0x201 * 4, 0x2000 | PW as u32);
        ram.set32(0x2000 + 4, 0xABCD_E000 | PW as u32);
        ram
    }

    #[test]
    fn bits32_small_pages() {
        let mut ram = bits32_tables();
        let c = ctx(Bits32 { pse: false }, 0x1000);
        assert_eq!(go(&c, BVA, Write, &ram), Ok(0xABCD_EABC));
        assert_eq!(go(&c, BVA, Fetch, &ram), Ok(0xABCD_EABC), "no XD in 32-bit");
        assert_eq!(
            go(&c, BVA + 0x1000, Read, &ram),
            Err(NotPresent { level: 1 })
        );
        assert_eq!(go(&c, 0x1000, Read, &ram), Err(NotPresent { level: 2 }));
        assert_eq!(go(&c, 1 << 32, Read, &ram), Err(AddressTooWide));
        ram.set32(0x2000 + 4, 0xABCD_E000 | P as u32);
        assert_eq!(go(&c, BVA, Write, &ram), Err(ReadOnly { level: 1 }));
        let no_wp = WalkCtx { wp: false, ..c };
        assert_eq!(go(&no_wp, BVA, Write, &ram), Ok(0xABCD_EABC));
        // Without CR4.PSE, PS is ignored: still a PT pointer.
        ram.set32(0x1000 + 0x201 * 4, 0x2000 | (PW | PS) as u32);
        assert_eq!(go(&c, BVA, Read, &ram), Ok(0xABCD_EABC));
        ram.set32(0x1000 + 0x201 * 4, 0x5000 | PW as u32);
        assert_eq!(go(&c, BVA, Read, &ram), Err(TableUnbacked { gpa: 0x5004 }));
    }

    #[test]
    fn bits32_large_pages_and_pse36() {
        let mut ram = bits32_tables();
        let c = ctx(Bits32 { pse: true }, 0x1000);
        ram.set32(0x1000 + 0x201 * 4, 0x8040_0000 | (PS | P) as u32);
        assert_eq!(go(&c, BVA, Read, &ram), Ok(0x8040_1ABC));
        assert_eq!(go(&c, BVA, Write, &ram), Err(ReadOnly { level: 2 }));
        ram.set32(
            0x1000 + 0x201 * 4,
            0x8040_0000 | 0x12 << 13 | (PS | PW) as u32,
        );
        assert_eq!(go(&c, BVA, Write, &ram), Ok(0x12_8040_1ABC));
        ram.set32(0x1000 + 0x201 * 4, 0x8040_0000 | 1 << 21 | (PS | PW) as u32);
        assert_eq!(go(&c, BVA, Read, &ram), Err(ReservedBit { level: 2 }));
    }

    #[test]
    fn paging_off() {
        let ram = Ram::default();
        let c = ctx(Off, 0xDEAD_0000);
        assert_eq!(go(&c, 0xFFFF_FFFF, Fetch, &ram), Ok(0xFFFF_FFFF));
        assert_eq!(go(&c, 0x1_0000_0000, Read, &ram), Err(AddressTooWide));
    }

    #[test]
    fn messages() {
        assert_eq!(
            TableUnbacked { gpa: 0x1000 }.to_string(),
            "a page-table entry points outside the guest's RAM (0x1000)"
        );
        assert_eq!(
            NotPresent { level: 2 }.to_string(),
            "level-2 entry not present"
        );
    }
}
