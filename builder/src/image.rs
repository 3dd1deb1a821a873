//! A first, strict look at a kernel image handed to keel as a module: is it something
//! keel could load at all? `inspect` answers "what is this?" with a summary, or with a
//! reason the user can act on; the PVH domain builder (`crate::pvh`) goes further and
//! reuses the checks that every loader needs from here (`open`, `check_load_segment`),
//! so that the two can never disagree about what a sound ELF file is.
//!
//! ELF parsing uses the `elf` crate (zero-copy, no_std, bounds-checked: a malformed
//! header is an error value, never an out-of-bounds read). On top of what it checks,
//! keel insists on x86-64 code, an executable type, and loadable segments that lie
//! inside the file, whose size in memory covers their size in the file, and whose
//! physical range does not wrap around the address space.
//!
//! Invariant: a `Segment` only exists once `check_load_segment` accepted it, so
//! `file_offset + filesz <= file length`, `filesz <= memsz` and `paddr + memsz` does
//! not overflow; code holding one may slice the file and compute its end unchecked.

use core::fmt;

use elf::ElfBytes;
use elf::abi::{EM_X86_64, ET_DYN, ET_EXEC, PT_LOAD};
use elf::endian::AnyEndian;
use elf::file::Class;
use elf::segment::ProgramHeader;

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

/// A loadable (`PT_LOAD`) segment that passed `check_load_segment`: its file bytes
/// lie inside the file, `filesz <= memsz`, and `paddr + memsz` does not overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the program header it came from (for messages).
    pub index: usize,
    /// Guest-physical load address (`p_paddr`).
    pub paddr: u64,
    /// Bytes in memory; those past `filesz` are zero.
    pub memsz: u64,
    /// Where its bytes start in the file (`p_offset`).
    pub file_offset: u64,
    /// Bytes taken from the file.
    pub filesz: u64,
}

impl Segment {
    /// End (exclusive) of the segment in memory. Cannot overflow for a segment as
    /// `check_load_segment` made it; saturates if its fields were changed since.
    pub fn end(&self) -> u64 {
        self.paddr.saturating_add(self.memsz)
    }

    /// The segment's bytes in `file`, the image it was checked against.
    ///
    /// Returns `None` only if `file` is not that image (shorter than checked).
    pub fn file_bytes<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.file_offset).ok()?;
        let len = usize::try_from(self.filesz).ok()?;
        file.get(start..start.checked_add(len)?)
    }
}

/// Why a loadable segment is unusable. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum SegmentError {
    /// loadable segment {index} (file bytes {offset:#x}+{filesz:#x}) reaches past the end of the {file_len:#x}-byte file
    OutsideFile {
        index: usize,
        offset: u64,
        filesz: u64,
        file_len: u64,
    },
    /// loadable segment {index} at {paddr:#x}+{memsz:#x} wraps around the end of the address space
    PaddrWraps {
        index: usize,
        paddr: u64,
        memsz: u64,
    },
    /// loadable segment {index} has {filesz:#x} bytes in the file but only {memsz:#x} in memory
    FileszAboveMemsz {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
}

impl From<SegmentError> for ImageError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::OutsideFile { index, .. } => ImageError::SegmentOutsideFile(index),
            SegmentError::PaddrWraps { index, .. }
            | SegmentError::FileszAboveMemsz { index, .. } => ImageError::BadSegmentSize(index),
        }
    }
}

/// Opens `bytes` as an ELF file (magic, header, program and section header tables
/// inside the file). Machine and type are left to the caller: loaders differ there.
pub fn open(bytes: &[u8]) -> Result<ElfBytes<'_, AnyEndian>, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(ImageError::NotElf);
    }
    ElfBytes::<AnyEndian>::minimal_parse(bytes).map_err(|_| ImageError::BadHeader)
}

/// The checks every loader makes of a `PT_LOAD` program header (number `index`) of a
/// file `file_len` bytes long.
pub fn check_load_segment(
    index: usize,
    ph: &ProgramHeader,
    file_len: usize,
) -> Result<Segment, SegmentError> {
    let file_len = file_len as u64;
    let outside = SegmentError::OutsideFile {
        index,
        offset: ph.p_offset,
        filesz: ph.p_filesz,
        file_len,
    };
    match ph.p_offset.checked_add(ph.p_filesz) {
        Some(end) if end <= file_len => {}
        _ => return Err(outside),
    }
    if ph.p_paddr.checked_add(ph.p_memsz).is_none() {
        return Err(SegmentError::PaddrWraps {
            index,
            paddr: ph.p_paddr,
            memsz: ph.p_memsz,
        });
    }
    if ph.p_memsz < ph.p_filesz {
        return Err(SegmentError::FileszAboveMemsz {
            index,
            filesz: ph.p_filesz,
            memsz: ph.p_memsz,
        });
    }
    Ok(Segment {
        index,
        paddr: ph.p_paddr,
        memsz: ph.p_memsz,
        file_offset: ph.p_offset,
        filesz: ph.p_filesz,
    })
}

/// Checks that `bytes` is an x86-64 ELF kernel keel could load, and summarises it.
pub fn inspect(bytes: &[u8]) -> Result<KernelSummary, ImageError> {
    let file = open(bytes)?;
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
        let seg = check_load_segment(i, &ph, bytes.len())?;
        lo = lo.min(seg.paddr);
        hi = hi.max(seg.end());
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
