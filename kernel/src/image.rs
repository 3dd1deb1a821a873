//! A first, strict look at a kernel image handed to keel as a module: is it something
//! keel could load at all? Issue #3 grows this into the PVH domain builder; until then
//! it answers "what is this?" with a summary, or with a reason the user can act on.
//!
//! ELF parsing uses the `elf` crate (zero-copy, no_std, bounds-checked: a malformed
//! header is an error value, never an out-of-bounds read). On top of what it checks,
//! keel insists on x86-64 code, an executable type, and loadable segments that lie
//! inside the file.

use core::fmt;

use elf::ElfBytes;
use elf::abi::{EM_X86_64, ET_DYN, ET_EXEC, PT_LOAD};
use elf::endian::AnyEndian;
use elf::file::Class;

/// What a loadable kernel image looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSummary {
    pub class: Class,
    pub entry: u64,
    pub load_segments: usize,
    /// Lowest and highest (exclusive) physical address of the loadable segments.
    pub paddr_range: (u64, u64),
}

/// Why a module is not a loadable kernel. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// the module is empty
    Empty,
    /// no ELF magic (not an ELF file; bzImage support comes later)
    NotElf,
    /// the ELF header is malformed
    BadHeader,
    /// not x86-64 code
    WrongMachine(u16),
    /// not an executable ELF
    WrongType(u16),
    /// the program headers are malformed
    BadProgramHeaders,
    /// no loadable segment
    NoLoadSegments,
    /// a loadable segment reaches past the end of the file
    SegmentOutsideFile(usize),
    /// a loadable segment's size in memory is smaller than in the file, or overflows
    BadSegmentSize(usize),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Empty => f.write_str("the module is empty"),
            ImageError::NotElf => f.write_str("no ELF magic: not an ELF kernel"),
            ImageError::BadHeader => f.write_str("the ELF header is malformed"),
            ImageError::WrongMachine(m) => write!(f, "ELF machine {m} is not x86-64 ({EM_X86_64})"),
            ImageError::WrongType(t) => write!(f, "ELF type {t} is not an executable"),
            ImageError::BadProgramHeaders => f.write_str("the ELF program headers are malformed"),
            ImageError::NoLoadSegments => f.write_str("the ELF has no loadable segment"),
            ImageError::SegmentOutsideFile(i) => {
                write!(f, "loadable segment {i} reaches past the end of the file")
            }
            ImageError::BadSegmentSize(i) => write!(
                f,
                "loadable segment {i} has a bad size (memsz < filesz, or overflow)"
            ),
        }
    }
}

/// Checks that `bytes` is an x86-64 ELF kernel keel could load, and summarises it.
pub fn inspect(bytes: &[u8]) -> Result<KernelSummary, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(ImageError::NotElf);
    }
    let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).map_err(|_| ImageError::BadHeader)?;
    let ehdr = file.ehdr;
    if ehdr.e_machine != EM_X86_64 {
        return Err(ImageError::WrongMachine(ehdr.e_machine));
    }
    if ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN {
        return Err(ImageError::WrongType(ehdr.e_type));
    }
    let segments = file.segments().ok_or(ImageError::NoLoadSegments)?;
    let mut count = 0;
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for (i, ph) in segments.iter().enumerate() {
        if ph.p_type != PT_LOAD {
            continue;
        }
        let file_end = ph
            .p_offset
            .checked_add(ph.p_filesz)
            .ok_or(ImageError::SegmentOutsideFile(i))?;
        if file_end > bytes.len() as u64 {
            return Err(ImageError::SegmentOutsideFile(i));
        }
        let mem_end = ph
            .p_paddr
            .checked_add(ph.p_memsz)
            .ok_or(ImageError::BadSegmentSize(i))?;
        if ph.p_memsz < ph.p_filesz {
            return Err(ImageError::BadSegmentSize(i));
        }
        lo = lo.min(ph.p_paddr);
        hi = hi.max(mem_end);
        count += 1;
    }
    if count == 0 {
        return Err(ImageError::NoLoadSegments);
    }
    Ok(KernelSummary {
        class: ehdr.class,
        entry: ehdr.e_entry,
        load_segments: count,
        paddr_range: (lo, hi),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 x86-64 executable with one PT_LOAD of `filesz` bytes at `offset`.
    fn elf64(offset: u64, filesz: u64, memsz: u64) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little endian
        b[6] = 1; // EV_CURRENT
        b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // entry
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ph = &mut b[64..120];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[8..16].copy_from_slice(&offset.to_le_bytes());
        ph[16..24].copy_from_slice(&0x10_0000u64.to_le_bytes()); // vaddr
        ph[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // paddr
        ph[32..40].copy_from_slice(&filesz.to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        b
    }

    #[test]
    fn a_good_image_is_summarised() {
        let s = inspect(&elf64(0x100, 0x80, 0x1000)).expect("loads");
        assert_eq!(
            (s.entry, s.load_segments, s.paddr_range),
            (0x10_0000, 1, (0x10_0000, 0x10_1000))
        );
        assert_eq!(s.class, Class::ELF64);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert_eq!(inspect(&[]), Err(ImageError::Empty));
        assert_eq!(inspect(b"MZ\x90\x00 not an elf"), Err(ImageError::NotElf));
        let good = elf64(0x100, 0x80, 0x1000);
        for cut in [4, 16, 40, 63] {
            assert!(inspect(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut pseudo = vec![0u8; 8192];
        let mut x: u32 = 0x1234_5678;
        for b in pseudo.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        assert_eq!(inspect(&pseudo), Err(ImageError::NotElf));
        pseudo[..4].copy_from_slice(b"\x7fELF");
        assert!(inspect(&pseudo).is_err());
    }

    #[test]
    fn wrong_machine_type_and_segments() {
        let mut b = elf64(0x100, 0x80, 0x1000);
        b[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
        assert_eq!(inspect(&b), Err(ImageError::WrongMachine(3)));
        let mut b = elf64(0x100, 0x80, 0x1000);
        b[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        assert_eq!(inspect(&b), Err(ImageError::WrongType(1)));
        assert_eq!(
            inspect(&elf64(0x1F0, 0x100, 0x1000)),
            Err(ImageError::SegmentOutsideFile(0))
        );
        assert_eq!(
            inspect(&elf64(u64::MAX - 4, 0x10, 0x1000)),
            Err(ImageError::SegmentOutsideFile(0))
        );
        assert_eq!(
            inspect(&elf64(0x100, 0x80, 0x10)),
            Err(ImageError::BadSegmentSize(0))
        );
        let mut b = elf64(0x100, 0x80, 0x1000);
        b[64..68].copy_from_slice(&0u32.to_le_bytes()); // PT_NULL: nothing to load
        assert_eq!(inspect(&b), Err(ImageError::NoLoadSegments));
    }
}
