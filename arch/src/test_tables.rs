//! A test fake shared by the EPT and NPT format tests: page tables in a `Vec`.

use keel_mm::{Hpa, MapError, TableMemory};

/// Tables in a `Vec` at fake addresses `0x100_0000 + i * 4 KiB`; `.0[i]` is the
/// i-th table allocated (the root first).
pub struct Tables(pub Vec<[u64; 512]>);

impl Tables {
    pub fn new() -> Tables {
        Tables(Vec::new())
    }

    fn slot(table: Hpa) -> usize {
        ((table.as_u64() - 0x100_0000) / 4096) as usize
    }
}

impl TableMemory for Tables {
    fn alloc_table(&mut self) -> Result<Hpa, MapError> {
        self.0.push([0; 512]);
        // The fake addresses stay far below 2^52.
        Ok(Hpa::new(0x100_0000 + (self.0.len() as u64 - 1) * 4096).unwrap())
    }
    fn read_entry(&self, table: Hpa, index: usize) -> u64 {
        self.0[Self::slot(table)][index]
    }
    fn write_entry(&mut self, table: Hpa, index: usize, value: u64) {
        self.0[Self::slot(table)][index] = value;
    }
}
