//! The EPT entry format (SDM Vol. 3C §29.3.2 "EPT Translation Mechanism", Tables
//! 29-1..29-6), for `keel_mm::p2m::P2m`, and the EPTP that points the VMCS at a tree
//! (SDM Vol. 3C §25.6.11 "Extended-Page-Table Pointer (EPTP)").
//!
//! The tree itself (allocation, large-page choice, splitting) lives in `keel-mm`; this
//! module is only the bits, as pure functions, so that it is tested on the host.
//!
//! Encoding used (every entry is 8 bytes):
//! - bit 0 read, bit 1 write, bit 2 execute (supervisor-mode execute when mode-based
//!   execute control is on, which keel does not enable; bit 10, user execute, stays
//!   0). An entry is present when any of bits 2:0 is set (§29.3.2).
//! - non-leaf entries: R|W|X and the next table's address (bits 51:12); the leaf
//!   alone restricts access.
//! - leaves: bits 5:3 memory type = 6 (WB), bit 6 ignore-PAT = 0 (so the guest's PAT
//!   still combines with WB, §29.3.7.2), bit 7 = large page at PDPTE (1 GiB) / PDE
//!   (2 MiB), address bits 51:12 (51:21 / 51:30 for large pages).
//!
//! Hazards:
//! - Write-without-read is an EPT misconfiguration and execute-only needs
//!   IA32_VMX_EPT_VPID_CAP bit 0 (§29.3.3.1). `leaf_entry` encodes what it is given;
//!   `P2m` never asks for an unreadable leaf.
//! - 1 GiB / 2 MiB leaves are only legal if IA32_VMX_EPT_VPID_CAP bits 17 / 16 say so;
//!   the `max_page` handed to `P2m::new` must come from `VmxCaps`.
//! - A 4-level, write-back EPTP needs `VmxCaps::ept_4level` and `ept_wb`; accessed and
//!   dirty flags need `ept_ad`.

use keel_mm::p2m::{Access, SlptFormat};
use keel_mm::{Hpa, Mfn, PageSize};

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXEC: u64 = 1 << 2;
/// Memory type field of a leaf, bits 5:3.
const MEMTYPE_SHIFT: u32 = 3;
/// Write-back (SDM Vol. 3A §12.3, Table 12-8 memory type encodings).
const MEMTYPE_WB: u64 = 6;
/// Large page at a PDPTE or PDE.
const LARGE: u64 = 1 << 7;
/// Address bits 51:12.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Intel's extended page tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EptFormat;

impl SlptFormat for EptFormat {
    #[inline]
    fn table_entry(table: Hpa) -> u64 {
        (table.as_u64() & ADDR_MASK) | READ | WRITE | EXEC
    }

    fn leaf_entry(mfn: Mfn, size: PageSize, access: Access) -> u64 {
        let large = if size == PageSize::Size4K { 0 } else { LARGE };
        mfn.hpa().as_u64()
            | if access.read { READ } else { 0 }
            | if access.write { WRITE } else { 0 }
            | if access.exec { EXEC } else { 0 }
            | MEMTYPE_WB << MEMTYPE_SHIFT
            | large
    }

    #[inline]
    fn is_present(entry: u64) -> bool {
        entry & (READ | WRITE | EXEC) != 0
    }

    #[inline]
    fn is_leaf(entry: u64, level: u8) -> bool {
        match level {
            1 => true,
            2 | 3 => entry & LARGE != 0,
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
            read: entry & READ != 0,
            write: entry & WRITE != 0,
            exec: entry & EXEC != 0,
        }
    }
}

/// The EPTP for a 4-level tree rooted at `root` (SDM Vol. 3C §25.6.11): memory type
/// WB in bits 2:0, page-walk length minus one (3) in bits 5:3, bit 6 enables the
/// accessed and dirty flags.
pub fn eptp(root: Hpa, ad: bool) -> u64 {
    (root.as_u64() & ADDR_MASK) | MEMTYPE_WB | 3 << 3 | u64::from(ad) << 6
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
        let e = EptFormat::leaf_entry(mfn(0x12345), PageSize::Size4K, Access::RWX);
        assert_eq!(e, 0x1234_5000 | 0b111 | 6 << 3);
        assert!(EptFormat::is_present(e) && EptFormat::is_leaf(e, 1));
        assert_eq!(EptFormat::entry_addr(e).as_u64(), 0x1234_5000);
        assert_eq!(EptFormat::leaf_access(e), Access::RWX);

        let e = EptFormat::leaf_entry(mfn(0x200), PageSize::Size2M, Access::R);
        assert_eq!(e, 0x20_0000 | 1 | 6 << 3 | 1 << 7);
        assert!(EptFormat::is_leaf(e, 2));
        assert_eq!(EptFormat::leaf_access(e), Access::R);

        let e = EptFormat::leaf_entry(mfn(0xFF_FFFC_0000), PageSize::Size1G, Access::RX);
        assert_eq!(e, 0xF_FFFF_C000_0000 | 0b101 | 6 << 3 | 1 << 7);
        assert!(EptFormat::is_leaf(e, 3));
        assert_eq!(EptFormat::entry_addr(e).as_u64(), 0xF_FFFF_C000_0000);
        assert_eq!(EptFormat::leaf_access(e), Access::RX);
        assert_eq!(e & 1 << 6, 0, "ignore-PAT clear");
    }

    #[test]
    fn tables_and_presence() {
        let t = EptFormat::table_entry(Hpa::new(0xABC_D000).unwrap());
        assert_eq!(t, 0xABC_D007);
        assert!(EptFormat::is_present(t));
        assert!(!EptFormat::is_leaf(t, 2) && !EptFormat::is_leaf(t, 3));
        assert!(!EptFormat::is_leaf(t | 1 << 7, 4), "no 512G pages");
        assert_eq!(EptFormat::entry_addr(t).as_u64(), 0xABC_D000);
        assert!(!EptFormat::is_present(0));
        assert!(!EptFormat::is_present(0xABC_D000 | 6 << 3));
        for bit in 0..3 {
            assert!(EptFormat::is_present(1 << bit));
        }
        assert_eq!(
            EptFormat::entry_addr(u64::MAX).as_u64(),
            0x000F_FFFF_FFFF_F000
        );
    }

    #[test]
    fn eptp_fields() {
        let root = Hpa::new(0x1234_5000).unwrap();
        assert_eq!(eptp(root, false), 0x1234_5000 | 0x1E);
        assert_eq!(eptp(root, true), 0x1234_5000 | 0x5E);
    }

    #[test]
    fn through_a_p2m() {
        let limit = keel_mm::Gfn::new(1 << 20).unwrap();
        let mut p2m: P2m<Tables, EptFormat> =
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
        // Tables are R|W|X; the split 2M page became 4K WB leaves, the other stays 2M.
        let (root, tables) = p2m.into_inner();
        let pdpt = tables.0[0][0];
        assert_eq!(pdpt & 0xFFF, 0b111);
        let pd = tables.0[1][0];
        assert_eq!(pd & 0xFFF, 0b111);
        assert_eq!(
            tables.0[2][1] & 0xFFF,
            0b111,
            "PD entry 1 points to the split table"
        );
        let pt = &tables.0[3];
        assert_eq!(pt[0], 0x4000_0000 | 0b001 | 6 << 3);
        assert_eq!(pt[3], 0x9000 | 0b011 | 6 << 3);
        assert_eq!(tables.0[2][2], 0x4020_0000 | 0b001 | 6 << 3 | 1 << 7);
        assert_eq!(root.as_u64(), 0x100_0000);
    }
}
