//! Reading a kernel's Xen ELF notes: one walker shared by the PVH builder
//! ([`crate::pvh`]) and the PV builder ([`crate::pv`]), so that the two can never
//! disagree about where a note starts or what its descriptor is.
//!
//! # Where notes are
//!
//! Xen's libelf (`elf_xen_parse`, `xen/common/libelf/libelf-dominfo.c`) reads the
//! notes of every `PT_NOTE` segment; only if those hold no note named `"Xen"` does
//! it fall back to the `SHT_NOTE` sections. [`for_each_xen_note`] does the same
//! (libelf starts the section walk at 1; keel also reads section 0 should it claim to
//! be a note section, which changes nothing for a well-formed file). libelf also skips `PT_NOTE`
//! segments whose `p_offset` is 0 ("some versions of binutils do not correctly set
//! p_offset for note segments"); the PV builder asks for that, the PVH builder, which
//! predates this module, does not, so that its behaviour is unchanged.
//!
//! # What a note is
//!
//! A 12-byte header (`namesz`, `descsz`, `type`, little-endian `u32`s), then the
//! name and the descriptor, each padded to 4 bytes: libelf pads to 4 in ELF32 and
//! ELF64 alike, whatever `p_align` says, and so does the `ELFNOTE()` macro kernels
//! use. A note whose sizes reach past its area is an error ([`NoteError`]); fewer
//! than 12 trailing bytes are accepted only if they are zero (padding). The last
//! note's descriptor padding may be cut off by the end of its area. A note is a Xen
//! note when its name, up to its first NUL, is `Xen`.
//!
//! # Values
//!
//! [`note_str`] reads a string note up to its first NUL *inside the descriptor*
//! (libelf reads on past the descriptor until it meets a NUL, which for an
//! unterminated `.ascii` note of a length divisible by 4 reaches into the next note's
//! header; keel keeps to the bytes the note declares). [`note_numeric`] reads a
//! numeric note of 1, 2, 4 or 8 bytes, as libelf's `elf_note_numeric` does; where
//! libelf silently reads any other size as 0, callers turn `None` into an error.
//!
//! Nothing here panics, whatever the bytes: every offset is checked against the area.

#![forbid(unsafe_code)]

use core::fmt;

use elf::ElfBytes;
use elf::abi::{PT_NOTE, SHT_NOTE};
use elf::endian::AnyEndian;

use keel_hypercall::abi::elfnote::XEN_ELFNOTE_NAME;

/// Where a note area is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteSource {
    /// A `PT_NOTE` segment: its program header index.
    Segment(usize),
    /// A `SHT_NOTE` section: its section header index.
    Section(usize),
}

impl fmt::Display for NoteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoteSource::Segment(i) => write!(f, "note segment {i}"),
            NoteSource::Section(i) => write!(f, "note section {i}"),
        }
    }
}

/// Why a note area cannot be read. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum NoteError {
    /// {source} (file bytes {offset:#x}+{size:#x}) reaches past the end of the {file_len:#x}-byte file
    OutsideFile {
        source: NoteSource,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    /// {source} starts at file offset {offset:#x}, which is not 4-byte aligned
    Misaligned { source: NoteSource, offset: u64 },
    /// {source}: the note at file offset {at:#x} (namesz {namesz:#x}, descsz {descsz:#x}) runs past the end of its area
    Truncated {
        source: NoteSource,
        at: u64,
        namesz: u32,
        descsz: u32,
    },
    /// {source}: {left} bytes at file offset {at:#x} are too short for a note header and are not zero padding
    HeaderTruncated {
        source: NoteSource,
        at: u64,
        left: usize,
    },
}

/// One ELF note, name and descriptor unpadded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawNote<'a> {
    pub kind: u32,
    pub name: &'a [u8],
    pub desc: &'a [u8],
}

impl RawNote<'_> {
    /// Whether the note's name, up to its first NUL, is `Xen`.
    pub fn is_xen(&self) -> bool {
        until_nul(self.name) == XEN_ELFNOTE_NAME
    }
}

/// One Xen note: where it was found, its type and its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenNote<'a> {
    pub source: NoteSource,
    pub kind: u32,
    pub desc: &'a [u8],
}

fn until_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |nul| &b[..nul])
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn align4(n: u64) -> u64 {
    (n + 3) & !3
}

/// Calls `f` with each note in file bytes `offset..offset + size`.
pub fn for_each_note<'a, E: From<NoteError>>(
    file: &'a [u8],
    source: NoteSource,
    offset: u64,
    size: u64,
    mut f: impl FnMut(RawNote<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let file_len = file.len() as u64;
    let end =
        offset
            .checked_add(size)
            .filter(|&e| e <= file_len)
            .ok_or(NoteError::OutsideFile {
                source,
                offset,
                size,
                file_len,
            })?;
    if !offset.is_multiple_of(4) {
        return Err(NoteError::Misaligned { source, offset }.into());
    }
    // Both bounds are at most the file's length, so they fit in usize.
    let area = &file[offset as usize..end as usize];
    let mut pos = 0usize;
    while pos < area.len() {
        let rest = &area[pos..];
        let at = offset + pos as u64;
        let (Some(namesz), Some(descsz), Some(kind)) =
            (read_u32(rest, 0), read_u32(rest, 4), read_u32(rest, 8))
        else {
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            return Err(NoteError::HeaderTruncated {
                source,
                at,
                left: rest.len(),
            }
            .into());
        };
        // u32 sizes: none of these sums can overflow a u64.
        let name_end = 12 + u64::from(namesz);
        let desc_start = 12 + align4(u64::from(namesz));
        let desc_end = desc_start + u64::from(descsz);
        let next = desc_start + align4(u64::from(descsz));
        if desc_end > rest.len() as u64 {
            return Err(NoteError::Truncated {
                source,
                at,
                namesz,
                descsz,
            }
            .into());
        }
        // name_end <= desc_start <= desc_end <= rest.len(), so all three fit in usize.
        f(RawNote {
            kind,
            name: &rest[12..name_end as usize],
            desc: &rest[desc_start as usize..desc_end as usize],
        })?;
        // The last note's descriptor padding may be cut off by the area's end.
        pos += next.min(rest.len() as u64) as usize;
    }
    Ok(())
}

/// Which `PT_NOTE` segments [`for_each_xen_note`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroOffsetNotes {
    /// Read them like any other (the PVH builder's behaviour).
    Read,
    /// Skip them, as libelf does (binutils bug workaround).
    Skip,
}

/// Calls `f` with every Xen note of the ELF image `bytes` (already opened as
/// `file`): those of the `PT_NOTE` segments, or, if these hold none, those of the
/// `SHT_NOTE` sections. Returns how many Xen notes were seen.
pub fn for_each_xen_note<'a, E: From<NoteError>>(
    bytes: &'a [u8],
    file: &ElfBytes<'a, AnyEndian>,
    zero_offset: ZeroOffsetNotes,
    mut f: impl FnMut(XenNote<'a>) -> Result<(), E>,
) -> Result<usize, E> {
    let mut count = 0usize;
    let mut walk = |source: NoteSource, offset: u64, size: u64, count: &mut usize| {
        for_each_note(bytes, source, offset, size, |n: RawNote<'a>| {
            if !n.is_xen() {
                return Ok(());
            }
            *count += 1;
            f(XenNote {
                source,
                kind: n.kind,
                desc: n.desc,
            })
        })
    };
    if let Some(phdrs) = file.segments() {
        for (i, ph) in phdrs.iter().enumerate() {
            if ph.p_type != PT_NOTE || (ph.p_offset == 0 && zero_offset == ZeroOffsetNotes::Skip) {
                continue;
            }
            walk(NoteSource::Segment(i), ph.p_offset, ph.p_filesz, &mut count)?;
        }
    }
    if count == 0
        && let Some(shdrs) = file.section_headers()
    {
        for (i, sh) in shdrs.iter().enumerate() {
            if sh.sh_type == SHT_NOTE {
                walk(NoteSource::Section(i), sh.sh_offset, sh.sh_size, &mut count)?;
            }
        }
    }
    Ok(count)
}

/// A string note's value: its descriptor up to the first NUL (all of it if there is
/// none), or `None` if that is not UTF-8.
pub fn note_str(desc: &[u8]) -> Option<&str> {
    core::str::from_utf8(until_nul(desc)).ok()
}

/// A numeric note's value: a little-endian integer of 1, 2, 4 or 8 bytes
/// (libelf's `elf_note_numeric`); `None` for any other size.
pub fn note_numeric(desc: &[u8]) -> Option<u64> {
    match *desc {
        [a] => Some(u64::from(a)),
        [a, b] => Some(u64::from(u16::from_le_bytes([a, b]))),
        [a, b, c, d] => Some(u64::from(u32::from_le_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Some(u64::from_le_bytes([a, b, c, d, e, f, g, h])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        while !n.len().is_multiple_of(4) {
            n.push(0);
        }
        n.extend_from_slice(desc);
        while !n.len().is_multiple_of(4) {
            n.push(0);
        }
        n
    }

    /// (type, name, descriptor) of each note.
    type Notes = Vec<(u32, Vec<u8>, Vec<u8>)>;

    fn collect(area: &[u8]) -> Result<Notes, NoteError> {
        let mut out = Vec::new();
        for_each_note(
            area,
            NoteSource::Segment(3),
            0,
            area.len() as u64,
            |n| -> Result<(), NoteError> {
                out.push((n.kind, n.name.to_vec(), n.desc.to_vec()));
                Ok(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn notes_are_split_and_padding_is_skipped() {
        let area = [
            note(b"Xen\0", 1, &[1, 2, 3, 4, 5, 6, 7, 8]),
            note(b"GNU\0", 3, b"abcde"),
            vec![0; 8],
        ]
        .concat();
        let got = collect(&area).expect("reads");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (1, b"Xen\0".to_vec(), vec![1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(got[1], (3, b"GNU\0".to_vec(), b"abcde".to_vec()));
        let raw = RawNote {
            kind: 0,
            name: b"Xen\0\0",
            desc: &[],
        };
        assert!(raw.is_xen());
        assert!(
            !RawNote {
                name: b"Xenon",
                ..raw
            }
            .is_xen()
        );
    }

    #[test]
    fn bad_areas_are_errors() {
        let good = note(b"Xen\0", 1, &[0; 8]);
        let mut cut = good.clone();
        cut.truncate(good.len() - 1);
        assert_eq!(
            collect(&cut),
            Err(NoteError::Truncated {
                source: NoteSource::Segment(3),
                at: 0,
                namesz: 4,
                descsz: 8
            })
        );
        let mut tail = good.clone();
        tail.extend_from_slice(&[1, 0, 0]);
        let e = collect(&tail).expect_err("junk");
        assert_eq!(
            e.to_string(),
            "note segment 3: 3 bytes at file offset 0x18 are too short for a note header and are not zero padding"
        );
        let r = for_each_note(&good, NoteSource::Section(1), 2, 4, |_| {
            Ok::<(), NoteError>(())
        });
        assert_eq!(
            r,
            Err(NoteError::Misaligned {
                source: NoteSource::Section(1),
                offset: 2
            })
        );
        let r = for_each_note(&good, NoteSource::Section(1), 8, u64::MAX, |_| {
            Ok::<(), NoteError>(())
        });
        assert!(matches!(r, Err(NoteError::OutsideFile { .. })));
    }

    #[test]
    fn values() {
        assert_eq!(note_str(b"xen-3.0\0junk"), Some("xen-3.0"));
        assert_eq!(note_str(b"no nul"), Some("no nul"));
        assert_eq!(note_str(&[0xFF, 0]), None);
        assert_eq!(note_numeric(&[7]), Some(7));
        assert_eq!(note_numeric(&[1, 2]), Some(0x201));
        assert_eq!(note_numeric(&[1, 0, 0, 0x80]), Some(0x8000_0001));
        assert_eq!(note_numeric(&u64::MAX.to_le_bytes()), Some(u64::MAX));
        for len in [0, 3, 5, 6, 7, 9, 16] {
            assert_eq!(note_numeric(&vec![1; len]), None, "{len} bytes");
        }
    }
}
