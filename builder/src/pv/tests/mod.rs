//! Host tests of the PV builder, one file per part, and what they share: a fake
//! `pfn -> mfn` map, a page-table walker over the produced tables, and guest
//! memory as a vector.

mod boot;
mod kernel;
mod layout;
mod pagetable;
mod props;

use std::collections::BTreeMap;

use super::layout::{PT_ENTRIES, PvLayout};
use super::pagetable::{PTE_ADDR_MASK, PTE_PRESENT, for_each_page_table};
use super::{PAGE_SIZE, PvError};
use crate::pvh::{GuestMemWriter, PvhError};

/// Machine frames in the tests: pfn + this (so that mixing them up shows).
pub const MFN_BASE: u64 = 0x12_3400;

pub fn mfn_of(pfn: u64) -> Option<u64> {
    Some(pfn + MFN_BASE)
}

/// The tables of a layout by machine frame, and a walker over them.
pub struct Tables {
    pub by_mfn: BTreeMap<u64, [u64; PT_ENTRIES as usize]>,
    pub l4: u64,
}

/// A leaf found by [`Tables::walk`]: the frame mapped, its L1 flags (less the
/// address), and the flags of the L4, L3 and L2 entries on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub mfn: u64,
    pub flags: u64,
    pub upper: [u64; 3],
}

impl Tables {
    pub fn of(layout: &PvLayout) -> Tables {
        let mut by_mfn = BTreeMap::new();
        for_each_page_table(layout, mfn_of, |t, e| {
            assert!(
                by_mfn.insert(t.pfn + MFN_BASE, *e).is_none(),
                "one table per frame"
            );
            Ok(())
        })
        .expect("tables");
        Tables {
            by_mfn,
            l4: layout.pt_base().pfn + MFN_BASE,
        }
    }

    /// Translates `va` as the MMU would (4 KiB pages only).
    pub fn walk(&self, va: u64) -> Option<Leaf> {
        let mut table = self.l4;
        let mut upper = [0u64; 3];
        for (i, shift) in [39u32, 30, 21, 12].into_iter().enumerate() {
            let entries = self.by_mfn.get(&table)?;
            let e = entries[((va >> shift) & 511) as usize];
            if e & PTE_PRESENT == 0 {
                return None;
            }
            if i == 3 {
                return Some(Leaf {
                    mfn: (e & PTE_ADDR_MASK) >> 12,
                    flags: e & !PTE_ADDR_MASK,
                    upper,
                });
            }
            upper[i] = e & !PTE_ADDR_MASK;
            table = (e & PTE_ADDR_MASK) >> 12;
        }
        None
    }

    /// Every present L1 entry of every table (table mfn, slot, entry).
    pub fn leaves(&self, layout: &PvLayout) -> Vec<u64> {
        layout
            .page_tables
            .iter()
            .filter(|t| t.level == 1)
            .flat_map(|t| self.by_mfn[&(t.pfn + MFN_BASE)])
            .filter(|e| e & PTE_PRESENT != 0)
            .collect()
    }
}

/// Guest memory as a vector of pseudo-physical pages; records each write.
pub struct VecMem {
    pub ram: Vec<u8>,
    pub writes: Vec<(u64, usize)>,
}

impl VecMem {
    pub fn new(pages: u64, fill: u8) -> VecMem {
        VecMem {
            ram: vec![fill; (pages * PAGE_SIZE) as usize],
            writes: Vec::new(),
        }
    }

    pub fn at(&self, gpa: u64, len: usize) -> &[u8] {
        &self.ram[gpa as usize..gpa as usize + len]
    }

    pub fn page(&self, pfn: u64) -> &[u8] {
        self.at(pfn * PAGE_SIZE, PAGE_SIZE as usize)
    }
}

impl GuestMemWriter for VecMem {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), PvhError> {
        let fail = PvhError::GuestWrite {
            gpa,
            len: data.len() as u64,
        };
        let start = usize::try_from(gpa).map_err(|_| fail)?;
        let end = start.checked_add(data.len()).ok_or(fail)?;
        self.ram
            .get_mut(start..end)
            .ok_or(fail)?
            .copy_from_slice(data);
        self.writes.push((gpa, data.len()));
        Ok(())
    }
}

/// The message of an error, for tests that check one.
pub fn msg(e: &PvError) -> String {
    e.to_string()
}
