//! The NPT entry format (AMD APM Vol. 2 §15.25 "Nested Paging"), for
//! `keel_mm::p2m::P2m`.
//!
//! Nested page tables are ordinary long-mode page tables (APM Vol. 2 §5.3, §15.25.5)
//! that the processor walks with guest-physical addresses as input. So the entry is
//! the familiar one:
//! - P (bit 0), R/W (bit 1), U/S (bit 2), PS (bit 7) at PDPT (1 GiB) / PD (2 MiB)
//!   level, NX (bit 63), address bits 51:12; PWT/PCD/PAT left 0, which is WB
//!   (combined with the guest's own PAT, §15.25.8).
//! - U/S must be set on *every* nested entry, tables and leaves: all nested-page-table
//!   accesses are treated as user accesses (§15.25.5), so a clear U bit faults every
//!   guest access to the page.
//! - Tables carry P|RW|U and no NX; the leaf alone restricts access.
//!
//! Limits of the format: read access is implied by P, so NPT cannot express a
//! write-only or execute-only page. `leaf_entry` with `read == false` gives a
//! not-present entry (0); `P2m` refuses such an `Access` anyway.
//!
//! Hazard: NX in a nested entry is honoured only with the host's EFER.NXE set at VMRUN
//! (otherwise bit 63 is reserved and every access is a #NPF). Every AMD64 CPU has NX,
//! and boot sets EFER.NXE whenever the CPU offers it.

use keel_mm::p2m::{Access, SlptFormat};
use keel_mm::{Hpa, Mfn, PageSize};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// Page size: a 2 MiB / 1 GiB leaf at PD / PDPT level.
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
/// Address bits 51:12.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// AMD's nested page tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NptFormat;

impl SlptFormat for NptFormat {
    #[inline]
    fn table_entry(table: Hpa) -> u64 {
        (table.as_u64() & ADDR_MASK) | PRESENT | WRITABLE | USER
    }

    fn leaf_entry(mfn: Mfn, size: PageSize, access: Access) -> u64 {
        if !access.read {
            return 0;
        }
        mfn.hpa().as_u64()
            | PRESENT
            | USER
            | if access.write { WRITABLE } else { 0 }
            | if size == PageSize::Size4K { 0 } else { PS }
            | if access.exec { 0 } else { NX }
    }

    #[inline]
    fn is_present(entry: u64) -> bool {
        entry & PRESENT != 0
    }

    #[inline]
    fn is_leaf(entry: u64, level: u8) -> bool {
        match level {
            1 => true,
            2 | 3 => entry & PS != 0,
            _ => false,
        }
    }

    #[inline]
    fn entry_addr(entry: u64) -> Hpa {
        // Cannot fail: the mask keeps bits 51:12, below 2^52.
        Hpa::new(entry & ADDR_MASK).expect("52-bit address field")
    }

    #[inline]
    fn leaf_access(entry: u64) -> Access {
        Access {
            read: entry & PRESENT != 0,
            write: entry & WRITABLE != 0,
            exec: entry & NX == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tables::Tables;
    use keel_mm::p2m::P2m;

    fn mfn(m: u64) -> Mfn {
        Mfn::new(m).unwrap()
    }

    #[test]
    fn leaves_encode_and_decode() {
        let e = NptFormat::leaf_entry(mfn(0x12345), PageSize::Size4K, Access::RWX);
        assert_eq!(e, 0x1234_5000 | 0b111);
        assert!(NptFormat::is_present(e) && NptFormat::is_leaf(e, 1));
        assert_eq!(NptFormat::leaf_access(e), Access::RWX);

        let e = NptFormat::leaf_entry(mfn(0x200), PageSize::Size2M, Access::R);
        assert_eq!(e, 0x20_0000 | 0b101 | 1 << 7 | 1 << 63);
        assert!(NptFormat::is_leaf(e, 2));
        assert_eq!(NptFormat::entry_addr(e).as_u64(), 0x20_0000);
        assert_eq!(NptFormat::leaf_access(e), Access::R);

        let e = NptFormat::leaf_entry(mfn(0x4_0000), PageSize::Size1G, Access::RW);
        assert_eq!(e, 0x4000_0000 | 0b111 | 1 << 7 | 1 << 63);
        assert!(NptFormat::is_leaf(e, 3));
        assert_eq!(NptFormat::leaf_access(e), Access::RW);
        assert_eq!(
            NptFormat::leaf_access(NptFormat::leaf_entry(mfn(1), PageSize::Size4K, Access::RX)),
            Access::RX
        );
    }

    #[test]
    fn every_entry_is_user() {
        let t = NptFormat::table_entry(Hpa::new(0xABC_D000).unwrap());
        assert_eq!(t, 0xABC_D007);
        for access in [Access::RWX, Access::RW, Access::RX, Access::R] {
            for size in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G] {
                let e = NptFormat::leaf_entry(mfn(0x4_0000), size, access);
                assert_eq!(e & USER, USER, "{access:?} {size:?}");
            }
        }
    }

    #[test]
    fn unreadable_is_not_present() {
        for (write, exec) in [(true, false), (false, true), (true, true), (false, false)] {
            let access = Access {
                read: false,
                write,
                exec,
            };
            let e = NptFormat::leaf_entry(mfn(7), PageSize::Size4K, access);
            assert_eq!(e, 0);
            assert!(!NptFormat::is_present(e));
        }
    }

    #[test]
    fn tables_and_presence() {
        let t = NptFormat::table_entry(Hpa::new(0x1000).unwrap());
        assert!(NptFormat::is_present(t));
        assert!(!NptFormat::is_leaf(t, 2) && !NptFormat::is_leaf(t, 3));
        assert!(!NptFormat::is_leaf(t | PS, 4), "no 512G pages");
        assert!(!NptFormat::is_present(0) && !NptFormat::is_present(0x1000 | WRITABLE | USER));
        assert_eq!(
            NptFormat::entry_addr(u64::MAX).as_u64(),
            0x000F_FFFF_FFFF_F000
        );
    }

    #[test]
    fn through_a_p2m() {
        let limit = keel_mm::Gfn::new(1 << 20).unwrap();
        let mut p2m: P2m<Tables, NptFormat> =
            P2m::new(Tables::new(), PageSize::Size1G, limit).unwrap();
        // gfn 2 MiB.. -> 1 GiB.., two 2M pages; then gfn 2M + 3 -> mfn 9 writable.
        p2m.map(
            keel_mm::Gfn::new(0x200).unwrap(),
            mfn(0x4_0000),
            0x400,
            Access::R,
        )
        .unwrap();
        let gfn = keel_mm::Gfn::new(0x203).unwrap();
        assert_eq!(
            p2m.set_entry(gfn, Some((mfn(9), Access::RW))),
            Ok(Some(mfn(0x4_0003)))
        );
        assert_eq!(p2m.translate(gfn), Some((mfn(9), Access::RW)));
        assert_eq!(
            p2m.translate(keel_mm::Gfn::new(0x204).unwrap()),
            Some((mfn(0x4_0004), Access::R))
        );
        // Every table entry and leaf has U set; the leaves are NX and read-only.
        let (root, tables) = p2m.into_inner();
        assert_eq!(tables.0[0][0] & 0xFFF, 0b111);
        assert_eq!(tables.0[1][0] & 0xFFF, 0b111);
        assert_eq!(
            tables.0[2][1] & 0xFFF,
            0b111,
            "PD entry 1 points to the split table"
        );
        let pt = &tables.0[3];
        assert_eq!(pt[0], 0x4000_0000 | 0b101 | 1 << 63);
        assert_eq!(pt[3], 0x9000 | 0b111 | 1 << 63);
        assert_eq!(tables.0[2][2], 0x4020_0000 | 0b101 | 1 << 7 | 1 << 63);
        assert_eq!(root.as_u64(), 0x100_0000);
    }
}
