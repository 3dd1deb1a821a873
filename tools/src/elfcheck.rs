//! Checks on keel.elf's program headers that the boot loaders rely on.
//!
//! QEMU's multiboot v1 loader does not read ELF program headers when the header sets
//! the a.out-kludge flag (bit 16): it copies `load_end_addr - load_addr` bytes of the
//! file, starting at the file offset of `load_addr`, linearly into memory. That only
//! reproduces the ELF's layout if every loaded segment sits at the same distance
//! between its file offset and its physical address. A linker that pads or reorders
//! differently breaks `-kernel` boots silently (GRUB, which reads the program
//! headers, would still work), so the build checks it.

use std::fmt;

use elf::ElfBytes;
use elf::abi::PT_LOAD;
use elf::endian::AnyEndian;

/// One PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// File offset.
    pub offset: u64,
    /// Physical load address.
    pub paddr: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory.
    pub memsz: u64,
}

/// What the check learned about an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadLayout {
    /// Entry point (virtual).
    pub entry: u64,
    /// PT_LOAD segments in header order.
    pub segments: Vec<Segment>,
    /// `p_offset - p_paddr`, the same for every segment with file contents.
    pub offset_minus_paddr: i128,
}

impl LoadLayout {
    /// Lowest to highest physical byte the segments occupy in memory.
    pub fn physical_span(&self) -> (u64, u64) {
        let lo = self.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
        let hi = self
            .segments
            .iter()
            .map(|s| s.paddr.saturating_add(s.memsz))
            .max()
            .unwrap_or(0);
        (lo, hi)
    }
}

/// Why an image fails the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Not parseable as ELF.
    NotElf(String),
    /// No PT_LOAD segment with file contents.
    NothingLoaded,
    /// Two segments disagree on `p_offset - p_paddr`.
    NotLinear {
        /// The first segment with contents.
        first: Segment,
        /// The first one that disagrees with it.
        other: Segment,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::NotElf(why) => write!(f, "not an ELF file: {why}"),
            LayoutError::NothingLoaded => f.write_str("no PT_LOAD segment has file contents"),
            LayoutError::NotLinear { first, other } => write!(
                f,
                "PT_LOAD segments are not laid out linearly (QEMU's multiboot v1 loader copies \
                 the file as one block): offset {:#x} -> paddr {:#x} but offset {:#x} -> paddr {:#x}; \
                 fix the linker script so file offsets and physical addresses advance together",
                first.offset, first.paddr, other.offset, other.paddr
            ),
        }
    }
}

/// Checks that every PT_LOAD with `p_filesz > 0` has the same `p_offset - p_paddr`.
pub fn check_linear_load(data: &[u8]) -> Result<LoadLayout, LayoutError> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(data)
        .map_err(|e| LayoutError::NotElf(e.to_string()))?;
    let phdrs = file
        .segments()
        .ok_or_else(|| LayoutError::NotElf("no program headers".to_string()))?;
    let segments: Vec<Segment> = phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .map(|p| Segment {
            offset: p.p_offset,
            paddr: p.p_paddr,
            filesz: p.p_filesz,
            memsz: p.p_memsz,
        })
        .collect();
    let delta = |s: &Segment| i128::from(s.offset) - i128::from(s.paddr);
    let mut with_contents = segments.iter().filter(|s| s.filesz > 0);
    let first = *with_contents.next().ok_or(LayoutError::NothingLoaded)?;
    if let Some(other) = with_contents.find(|s| delta(s) != delta(&first)) {
        return Err(LayoutError::NotLinear {
            first,
            other: *other,
        });
    }
    Ok(LoadLayout {
        entry: file.ehdr.e_entry,
        offset_minus_paddr: delta(&first),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 executable with the given PT_LOAD
    /// `(offset, paddr, filesz, memsz)` program headers.
    fn elf64(loads: &[(u64, u64, u64, u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let mut b = Vec::new();
        b.extend_from_slice(b"\x7fELF");
        b.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, little-endian, version 1, SysV
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&0x10_0040u64.to_le_bytes()); // e_entry
        b.extend_from_slice(&phoff.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        b.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b.extend_from_slice(&(loads.len() as u16).to_le_bytes());
        b.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        b.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
        b.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        assert_eq!(b.len(), 64);
        for &(offset, paddr, filesz, memsz) in loads {
            b.extend_from_slice(&PT_LOAD.to_le_bytes());
            b.extend_from_slice(&7u32.to_le_bytes()); // RWX
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&paddr.to_le_bytes()); // vaddr
            b.extend_from_slice(&paddr.to_le_bytes());
            b.extend_from_slice(&filesz.to_le_bytes());
            b.extend_from_slice(&memsz.to_le_bytes());
            b.extend_from_slice(&0x1000u64.to_le_bytes());
        }
        b.resize(0x4000, 0);
        b
    }

    #[test]
    fn linear_layout_passes() {
        let data = elf64(&[
            (0x1000, 0x10_0000, 0x800, 0x800),
            (0x2000, 0x10_1000, 0x100, 0x5000),
        ]);
        let layout = check_linear_load(&data).expect("linear");
        assert_eq!(layout.offset_minus_paddr, 0x1000 - 0x10_0000);
        assert_eq!(layout.entry, 0x10_0040);
        assert_eq!(layout.physical_span(), (0x10_0000, 0x10_6000));
    }

    #[test]
    fn bss_only_segments_are_ignored() {
        let data = elf64(&[
            (0x1000, 0x10_0000, 0x800, 0x800),
            (0x3000, 0x20_0000, 0, 0x1000),
        ]);
        assert!(check_linear_load(&data).is_ok());
    }

    #[test]
    fn a_gap_in_the_file_is_caught() {
        let data = elf64(&[
            (0x1000, 0x10_0000, 0x800, 0x800),
            (0x3000, 0x10_1000, 0x100, 0x100),
        ]);
        let err = check_linear_load(&data).expect_err("not linear");
        assert!(matches!(err, LayoutError::NotLinear { .. }));
        assert!(
            err.to_string().contains("offset 0x3000 -> paddr 0x101000"),
            "{err}"
        );
    }

    #[test]
    fn junk_and_empty_images_are_errors() {
        assert!(matches!(
            check_linear_load(b"not an elf at all"),
            Err(LayoutError::NotElf(_))
        ));
        assert_eq!(
            check_linear_load(&elf64(&[(0x1000, 0x10_0000, 0, 0x100)])),
            Err(LayoutError::NothingLoaded)
        );
    }
}
