//! Linux bzImages: recognising one, finding its compressed payload, and
//! decompressing that payload (the ELF `vmlinux`) inside the hypervisor.
//!
//! What: Debian ships its kernels as bzImages (`/boot/vmlinuz-*`): a real-mode setup
//! part, a small self-decompressor, and the compressed `vmlinux` ELF. keel boots the
//! ELF through its PVH entry, so it needs only the payload: `identify` tells an ELF
//! from a bzImage (and which compression), `payload` finds the compressed bytes and
//! the uncompressed size, and `decompress` writes the ELF into a caller-supplied
//! slice of exactly that size (the caller allocates it from the frame allocator: it
//! is tens of MiB, far more than keel's heap).
//!
//! Layout facts (Linux `Documentation/arch/x86/boot.rst`): the setup header is at
//! file offset 0x1f1; `setup_sects` (u8, 0 means 4) at 0x1f1, "HdrS" at 0x202, the
//! boot protocol version (u16) at 0x206; from version 2.08 on, `payload_offset` and
//! `payload_length` (u32) at 0x248/0x24c, relative to the protected-mode code at
//! `(setup_sects + 1) * 512`. Linux's build appends the uncompressed size as a
//! little-endian u32 to the payload (for gzip it is the stream's own `ISIZE`).
//!
//! Formats: gzip (`miniz_oxide`, raw inflate into the slice, our own gzip framing
//! and CRC32), LZ4 legacy frames as `lz4 -l` writes them (`lz4_flex` block decoder,
//! our own framing), XZ (our own single-call decoder in `xz`, which uses the output
//! as its dictionary, with x86 BCJ and CRC32/CRC64), zstd (our own single-call
//! decoder in `zstd`, likewise using the output as its window, with the XXH64
//! content check). bzip2, lzma and lzo are recognised and refused with a clear
//! error. The two own decoders exist because every no_std decoder on crates.io
//! keeps the window on the heap, and Linux's streams declare 32 MiB (xz) and
//! 128 MiB (zstd) windows while keel's heap is 8 MiB.
//!
//! Invariants:
//! - Nothing here panics on any input bytes, and nothing writes outside `out`: every
//!   offset read from the file or the stream is checked before it is used.
//! - The trailer's size is an allegation: `payload` refuses claims above the caller's
//!   maximum (before anyone allocates), and `decompress` fails unless the stream
//!   fills `out` exactly.
//! - Heap use is bounded and small, whatever the stream declares: ~28 KiB for XZ,
//!   ~11 KiB for gzip, nothing for LZ4, ~150 KiB for zstd; the larger allocations
//!   are fallible and become `OutOfMemory` errors.
//!
//! Locking: none; everything is a pure function of its arguments.

#![forbid(unsafe_code)]

extern crate alloc;

mod xz;
mod zstd;

use alloc::boxed::Box;
use core::fmt;

/// File offsets and values of the x86 boot protocol's setup header.
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
const VERSION_AT: usize = 0x206;
/// `payload_offset`/`payload_length` exist from boot protocol 2.08.
const MIN_VERSION: u16 = 0x0208;
const PAYLOAD_OFFSET_AT: usize = 0x248;
const PAYLOAD_LENGTH_AT: usize = 0x24c;
/// The header must reach past `payload_length`.
const HEADER_END: usize = PAYLOAD_LENGTH_AT + 4;
/// The shortest payload: a 4-byte magic and the 4-byte size trailer.
const MIN_PAYLOAD: usize = 8;

/// LZ4 legacy frame: magic, then (u32 LE compressed size, block) pairs, each block
/// at most 8 MiB of output.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// The payload compressions Linux can build a bzImage with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Lz4,
    Zstd,
    Bzip2,
    Lzma,
    Lzo,
}

impl Compression {
    /// Recognises a payload by its first bytes.
    pub fn from_magic(b: &[u8]) -> Option<Compression> {
        const MAGICS: [(&[u8], Compression); 7] = [
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (b"BZh", Compression::Bzip2),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
        ];
        MAGICS
            .iter()
            .find(|(m, _)| b.starts_with(m))
            .map(|&(_, c)| c)
    }

    /// Whether keel can decompress this format.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            Compression::Gzip | Compression::Xz | Compression::Lz4 | Compression::Zstd
        )
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Lzo => "lzo",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a kernel module is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF file (`vmlinux`, or a PVH test kernel): load it as it is.
    Elf,
    /// A bzImage whose payload is compressed with `compression`.
    BzImage { compression: Compression },
}

/// Why a kernel image cannot be identified or decompressed. `Display` gives the
/// message for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzError {
    /// Neither ELF nor bzImage magic.
    NotAKernel,
    /// Has "HdrS" but the file ends inside the setup header.
    HeaderTruncated { len: usize },
    /// Boot protocol before 2.08: no payload fields.
    OldProtocol { version: u16 },
    /// `payload_offset`/`payload_length` reach past the end of the file.
    PayloadOutsideFile {
        offset: u64,
        length: u32,
        file_len: usize,
    },
    /// The payload is too short to hold a stream and the 4-byte size trailer.
    PayloadTooShort { length: u32 },
    /// The payload's first bytes match no known compression.
    UnknownCompression { magic: [u8; 4] },
    /// A compression Linux supports but keel does not decompress.
    Unsupported(Compression),
    /// The 4-byte trailer claims more than the caller allows.
    SizeAboveLimit { claimed: u64, max: usize },
    /// `decompress` was given an output slice of the wrong length.
    OutputLength { out: usize, claimed: usize },
    /// The compressed stream ends before it is complete.
    Truncated { format: Compression },
    /// The compressed stream is invalid (`at` is an offset into the payload).
    Corrupt {
        format: Compression,
        at: usize,
        why: &'static str,
    },
    /// The stream decompresses to more than the trailer claims.
    Overflow { format: Compression, claimed: usize },
    /// The stream ended having produced a different number of bytes.
    SizeMismatch { got: usize, claimed: usize },
    /// A valid stream using a feature keel does not implement.
    UnsupportedFeature {
        format: Compression,
        what: &'static str,
    },
    /// Decoder state could not be allocated.
    OutOfMemory { format: Compression, bytes: usize },
}

impl fmt::Display for BzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BzError::NotAKernel => f.write_str(
                "not a kernel image: neither ELF (\\x7fELF) nor bzImage (\"HdrS\" at 0x202)",
            ),
            BzError::HeaderTruncated { len } => write!(
                f,
                "bzImage setup header is truncated (file has {len:#x} bytes, the header needs {HEADER_END:#x})"
            ),
            BzError::OldProtocol { version } => write!(
                f,
                "bzImage boot protocol {}.{:02} is older than 2.08 (no payload fields)",
                version >> 8,
                version & 0xff
            ),
            BzError::PayloadOutsideFile {
                offset,
                length,
                file_len,
            } => write!(
                f,
                "bzImage payload is truncated (claims {length} bytes at offset {offset:#x}, file has {file_len:#x})"
            ),
            BzError::PayloadTooShort { length } => {
                write!(
                    f,
                    "bzImage payload of {length} bytes is too short for a compressed kernel"
                )
            }
            BzError::UnknownCompression { magic: m } => write!(
                f,
                "bzImage payload has an unknown compression (starts with {:02x} {:02x} {:02x} {:02x})",
                m[0], m[1], m[2], m[3]
            ),
            BzError::Unsupported(c) => write!(f, "unsupported compression: {c}"),
            BzError::SizeAboveLimit { claimed, max } => write!(
                f,
                "bzImage claims a decompressed kernel of {claimed} bytes, more than the limit of {max}"
            ),
            BzError::OutputLength { out, claimed } => write!(
                f,
                "output buffer of {out} bytes differs from the claimed decompressed size {claimed}"
            ),
            BzError::Truncated { format } => {
                write!(f, "{format}: compressed data ends early (truncated?)")
            }
            BzError::Corrupt { format, at, why } => {
                write!(f, "{format}: corrupt data at byte {at} ({why})")
            }
            BzError::Overflow { format, claimed } => write!(
                f,
                "{format}: decompresses to more than the {claimed} bytes the 4-byte trailer claims"
            ),
            BzError::SizeMismatch { got, claimed } => write!(
                f,
                "decompressed size {got} differs from the 4-byte trailer {claimed}"
            ),
            BzError::UnsupportedFeature { format, what } => {
                write!(f, "{format}: unsupported {what}")
            }
            BzError::OutOfMemory { format, bytes } => {
                write!(
                    f,
                    "{format}: cannot allocate {bytes} bytes of decoder state"
                )
            }
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What `bytes` is: an ELF (starts with `\x7fELF`), a bzImage (and with which
/// compression, supported or not), or an error saying why it is neither.
pub fn identify(bytes: &[u8]) -> Result<KernelFormat, BzError> {
    if bytes.starts_with(b"\x7fELF") {
        return Ok(KernelFormat::Elf);
    }
    let compression = locate(bytes)?.0;
    Ok(KernelFormat::BzImage { compression })
}

/// Finds the payload of a bzImage: its compression and bytes, unchecked size.
fn locate(bytes: &[u8]) -> Result<(Compression, &[u8]), BzError> {
    if bytes.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4) != Some(&HEADER_MAGIC[..]) {
        return Err(BzError::NotAKernel);
    }
    if bytes.len() < HEADER_END {
        return Err(BzError::HeaderTruncated { len: bytes.len() });
    }
    let version = le16(bytes, VERSION_AT);
    if version < MIN_VERSION {
        return Err(BzError::OldProtocol { version });
    }
    let setup_sects = match bytes[SETUP_SECTS] {
        0 => 4,
        n => u64::from(n),
    };
    let length = le32(bytes, PAYLOAD_LENGTH_AT);
    let offset = (setup_sects + 1) * 512 + u64::from(le32(bytes, PAYLOAD_OFFSET_AT));
    let end = offset + u64::from(length);
    if end > bytes.len() as u64 {
        return Err(BzError::PayloadOutsideFile {
            offset,
            length,
            file_len: bytes.len(),
        });
    }
    // Both fit in the file, so in usize.
    let payload = &bytes[offset as usize..end as usize];
    let mut magic = [0u8; 4];
    for (m, b) in magic.iter_mut().zip(payload) {
        *m = *b;
    }
    let compression =
        Compression::from_magic(payload).ok_or(BzError::UnknownCompression { magic })?;
    Ok((compression, payload))
}

/// For a bzImage: the compression, the compressed payload (including the 4-byte
/// size trailer; pass it to `decompress` as it is) and the uncompressed size the
/// trailer claims, which is at most `max_size`. Unsupported compressions are an
/// error here, before the caller allocates anything.
pub fn payload(bytes: &[u8], max_size: usize) -> Result<(Compression, &[u8], usize), BzError> {
    let (compression, payload) = locate(bytes)?;
    if !compression.is_supported() {
        return Err(BzError::Unsupported(compression));
    }
    if payload.len() < MIN_PAYLOAD {
        return Err(BzError::PayloadTooShort {
            length: payload.len() as u32,
        });
    }
    let claimed = le32(payload, payload.len() - 4);
    let claimed_usize = usize::try_from(claimed).unwrap_or(usize::MAX);
    if claimed_usize > max_size {
        return Err(BzError::SizeAboveLimit {
            claimed: u64::from(claimed),
            max: max_size,
        });
    }
    Ok((compression, payload, claimed_usize))
}

/// Decompresses `payload` (as returned by `payload`) into `out`, whose length must be
/// exactly the claimed size. Errors on corrupt or truncated input and on any length
/// mismatch; never writes outside `out`. On error `out` holds unspecified bytes.
pub fn decompress(c: Compression, payload: &[u8], out: &mut [u8]) -> Result<(), BzError> {
    if payload.len() < MIN_PAYLOAD {
        return Err(BzError::PayloadTooShort {
            length: payload.len() as u32,
        });
    }
    let claimed = le32(payload, payload.len() - 4) as usize;
    if out.len() != claimed {
        return Err(BzError::OutputLength {
            out: out.len(),
            claimed,
        });
    }
    // Everything but gzip has the size appended after the stream; gzip's ISIZE is
    // part of its own trailer.
    let stream = &payload[..payload.len() - 4];
    match c {
        Compression::Gzip => gunzip(payload, out),
        Compression::Xz => xz::decompress(stream, out),
        Compression::Lz4 => lz4_legacy(stream, out),
        Compression::Zstd => zstd::decompress(stream, out),
        Compression::Bzip2 | Compression::Lzma | Compression::Lzo => Err(BzError::Unsupported(c)),
    }
}

/// gzip (RFC 1952): header, raw deflate, CRC32 and ISIZE.
fn gunzip(input: &[u8], out: &mut [u8]) -> Result<(), BzError> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

    const FORMAT: Compression = Compression::Gzip;
    const FHCRC: u8 = 1 << 1;
    const FEXTRA: u8 = 1 << 2;
    const FNAME: u8 = 1 << 3;
    const FCOMMENT: u8 = 1 << 4;
    let corrupt = |at, why| BzError::Corrupt {
        format: FORMAT,
        at,
        why,
    };
    let truncated = BzError::Truncated { format: FORMAT };

    // Fixed part: magic, CM (8 = deflate), FLG, MTIME, XFL, OS.
    let hdr = input.get(..10).ok_or(truncated)?;
    if hdr[2] != 8 {
        return Err(corrupt(2, "compression method is not deflate"));
    }
    let flags = hdr[3];
    if flags & 0xE0 != 0 {
        return Err(corrupt(3, "reserved header flags set"));
    }
    let mut pos = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = input.get(pos..pos + 2).ok_or(truncated)?;
        pos += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = input.get(pos..).ok_or(truncated)?;
            let nul = rest.iter().position(|&b| b == 0).ok_or(truncated)?;
            pos += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    let deflate = input.get(pos..).ok_or(truncated)?;

    let mut state = Box::<DecompressorOxide>::default();
    let (status, consumed, produced) = decompress(
        &mut state,
        deflate,
        out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        TINFLStatus::Done => {}
        TINFLStatus::HasMoreOutput => {
            return Err(BzError::Overflow {
                format: FORMAT,
                claimed: out.len(),
            });
        }
        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
            return Err(truncated);
        }
        _ => return Err(corrupt(pos + consumed, "invalid deflate data")),
    }
    let trailer_at = pos + consumed;
    let trailer = input.get(trailer_at..).ok_or(truncated)?;
    if trailer.len() < 8 {
        return Err(truncated);
    }
    if trailer.len() > 8 {
        return Err(corrupt(trailer_at + 8, "garbage after the gzip trailer"));
    }
    if produced != out.len() {
        return Err(BzError::SizeMismatch {
            got: produced,
            claimed: out.len(),
        });
    }
    if le32(trailer, 0) != crc32::of(out) {
        return Err(corrupt(trailer_at, "CRC32 mismatch"));
    }
    Ok(())
}

/// LZ4 legacy frames (`lz4 -l`): the magic, then blocks each preceded by its u32 LE
/// compressed size, until the end of the input; a size equal to the magic starts a
/// further concatenated frame.
fn lz4_legacy(input: &[u8], out: &mut [u8]) -> Result<(), BzError> {
    const FORMAT: Compression = Compression::Lz4;
    // LZ4_compressBound(8 MiB): the largest block an 8 MiB input can become.
    const MAX_BLOCK: usize = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    let truncated = BzError::Truncated { format: FORMAT };
    if input.len() < 4 || le32(input, 0) != LZ4_LEGACY_MAGIC {
        return Err(BzError::Corrupt {
            format: FORMAT,
            at: 0,
            why: "no LZ4 legacy magic",
        });
    }
    let mut pos = 4usize;
    let mut written = 0usize;
    while pos < input.len() {
        let size_at = pos;
        let size = input.get(pos..pos + 4).ok_or(truncated)?;
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = size as usize;
        if size == 0 || size > MAX_BLOCK {
            return Err(BzError::Corrupt {
                format: FORMAT,
                at: size_at,
                why: "bad block size",
            });
        }
        let block = input.get(pos..pos + size).ok_or(truncated)?;
        let room = (out.len() - written).min(LZ4_LEGACY_BLOCK);
        let n = lz4_flex::block::decompress_into(block, &mut out[written..written + room])
            .map_err(|e| match e {
                lz4_flex::block::DecompressError::OutputTooSmall { .. }
                    if room < LZ4_LEGACY_BLOCK =>
                {
                    BzError::Overflow {
                        format: FORMAT,
                        claimed: out.len(),
                    }
                }
                _ => BzError::Corrupt {
                    format: FORMAT,
                    at: pos,
                    why: "invalid LZ4 block",
                },
            })?;
        written += n;
        pos += size;
    }
    if written != out.len() {
        return Err(BzError::SizeMismatch {
            got: written,
            claimed: out.len(),
        });
    }
    Ok(())
}

/// CRC-32 (IEEE 802.3, reflected, as gzip and xz use it).
mod crc32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };

    /// Continues a CRC (`crc` is a previous result, 0 to start).
    pub fn update(crc: u32, data: &[u8]) -> u32 {
        let mut c = !crc;
        for &b in data {
            c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        !c
    }

    pub fn of(data: &[u8]) -> u32 {
        update(0, data)
    }
}

/// CRC-64 (ECMA-182 polynomial, reflected, as xz uses it).
mod crc64 {
    const TABLE: [u64; 256] = {
        let mut t = [0u64; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u64;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xC96C_5795_D787_0F42 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };

    pub fn of(data: &[u8]) -> u64 {
        let mut c = !0u64;
        for &b in data {
            c = TABLE[((c ^ u64::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        !c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use std::io::Write;

    /// Deterministic, semi-compressible data with x86-looking calls and jumps (so
    /// that the BCJ filter has work to do).
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const WORDS: [&[u8]; 8] = [
            b"event ",
            b"channel ",
            b"grant ",
            b"domain ",
            b"vcpu ",
            b"p2m ",
            b"\n",
            b"xen ",
        ];
        let mut v = Vec::with_capacity(len + 300);
        while v.len() < len {
            let r = next();
            match r % 5 {
                0 => v.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()]),
                1 if v.len() > 1000 => {
                    let back = 1 + (r >> 8) as usize % 900;
                    let n = 3 + (r >> 20) as usize % 200;
                    let from = v.len() - back;
                    for k in 0..n {
                        v.push(v[from + k]);
                    }
                }
                2 => {
                    // call/jmp rel32 with a small displacement, either sign.
                    v.push(if r & 0x100 != 0 { 0xE8 } else { 0xE9 });
                    let rel = ((r >> 16) as i32) >> 12;
                    v.extend_from_slice(&rel.to_le_bytes());
                }
                _ => {
                    let n = 1 + (r >> 8) as usize % 48;
                    for _ in 0..n {
                        v.push(next() as u8);
                    }
                }
            }
        }
        v.truncate(len);
        v
    }

    fn with_trailer(mut stream: Vec<u8>, size: usize) -> Vec<u8> {
        stream.extend_from_slice(&(size as u32).to_le_bytes());
        stream
    }

    fn gzip(data: &[u8], flags: u8) -> Vec<u8> {
        let mut g = vec![0x1f, 0x8b, 8, flags, 1, 2, 3, 4, 0, 3];
        if flags & 4 != 0 {
            g.extend_from_slice(&[5, 0, 1, 2, 3, 4, 5]);
        }
        if flags & 8 != 0 {
            g.extend_from_slice(b"vmlinux.bin\0");
        }
        if flags & 16 != 0 {
            g.extend_from_slice(b"a comment\0");
        }
        if flags & 2 != 0 {
            g.extend_from_slice(&[0xAA, 0xBB]);
        }
        g.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
        g.extend_from_slice(&crc32::of(data).to_le_bytes());
        g.extend_from_slice(&(data.len() as u32).to_le_bytes());
        g
    }

    fn lz4_legacy_enc(data: &[u8], block: usize) -> Vec<u8> {
        let mut v = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            v.extend_from_slice(&(c.len() as u32).to_le_bytes());
            v.extend_from_slice(&c);
        }
        with_trailer(v, data.len())
    }

    fn xz_enc(data: &[u8], x86: bool, check: xz2::stream::Check) -> Vec<u8> {
        use xz2::stream::{Filters, LzmaOptions, Stream};
        let opts = LzmaOptions::new_preset(6).unwrap();
        let mut filters = Filters::new();
        if x86 {
            filters.x86();
        }
        filters.lzma2(&opts);
        let stream = Stream::new_stream_encoder(&filters, check).unwrap();
        let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// zstd as the reference library writes it, streaming (no content size), with
    /// a checksum; `window_log` 0 keeps the level's default.
    fn zstd_c(data: &[u8], level: i32, window_log: u32) -> Vec<u8> {
        use ::zstd::stream::raw::CParameter;
        let mut enc = ::zstd::stream::Encoder::new(Vec::new(), level).unwrap();
        enc.include_checksum(true).unwrap();
        if window_log != 0 {
            enc.set_parameter(CParameter::WindowLog(window_log))
                .unwrap();
        }
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn zstd_enc(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// A synthetic bzImage around `payload`: 3 setup sectors, the payload 0x100 bytes
    /// into the protected-mode part, some bytes after it.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let pm = 4 * 512;
        let mut f = vec![0u8; pm + 0x100];
        f[SETUP_SECTS] = 3;
        f[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        f[VERSION_AT..VERSION_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        f[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4].copy_from_slice(&0x100u32.to_le_bytes());
        f[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        f.extend_from_slice(&[0xCC; 77]);
        f
    }

    fn unpack(file: &[u8], max: usize) -> Result<Vec<u8>, BzError> {
        let (c, p, size) = payload(file, max)?;
        let mut out = vec![0u8; size];
        decompress(c, p, &mut out)?;
        Ok(out)
    }

    /// Every supported format, each as Linux would pack it.
    fn all_formats(data: &[u8]) -> Vec<(Compression, Vec<u8>)> {
        vec![
            (Compression::Gzip, gzip(data, 0)),
            (Compression::Lz4, lz4_legacy_enc(data, LZ4_LEGACY_BLOCK)),
            (
                Compression::Xz,
                with_trailer(xz_enc(data, true, xz2::stream::Check::Crc32), data.len()),
            ),
            (
                Compression::Zstd,
                with_trailer(zstd_c(data, 19, 0), data.len()),
            ),
        ]
    }

    #[test]
    fn round_trip_every_format() {
        let data = sample(2 << 20, 1);
        for (c, p) in all_formats(&data) {
            let file = bzimage(&p);
            assert_eq!(
                identify(&file),
                Ok(KernelFormat::BzImage { compression: c })
            );
            let (c2, slice, size) = payload(&file, 64 << 20).unwrap();
            assert_eq!((c2, slice, size), (c, &p[..], data.len()));
            let out = unpack(&file, 64 << 20).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert!(out == data, "{c}: output differs");
        }
    }

    #[test]
    fn round_trip_variants() {
        let data = sample(1 << 20, 2);
        let mut cases = vec![
            (
                "gzip with every optional field",
                gzip(&data, 2 | 4 | 8 | 16),
            ),
            ("lz4 with 64 KiB blocks", lz4_legacy_enc(&data, 64 << 10)),
            (
                "xz crc64",
                with_trailer(xz_enc(&data, false, xz2::stream::Check::Crc64), data.len()),
            ),
            (
                "xz no check",
                with_trailer(xz_enc(&data, true, xz2::stream::Check::None), data.len()),
            ),
        ];
        // Concatenated lz4 legacy frames (the magic again where a size would be).
        let half = data.len() / 2;
        let mut lz = lz4_legacy_enc(&data[..half], 1 << 20);
        lz.truncate(lz.len() - 4);
        let second = lz4_legacy_enc(&data[half..], 1 << 20);
        lz.extend_from_slice(&second[..second.len() - 4]);
        cases.push(("lz4 two frames", with_trailer(lz, data.len())));
        // Two xz streams with stream padding between and after.
        let mut x = xz_enc(&data[..half], true, xz2::stream::Check::Crc32);
        x.extend_from_slice(&[0; 8]);
        x.extend_from_slice(&xz_enc(&data[half..], false, xz2::stream::Check::Crc64));
        x.extend_from_slice(&[0; 4]);
        cases.push(("xz two streams", with_trailer(x, data.len())));
        // zstd: two frames with a skippable frame between them.
        let mut z = zstd_enc(&data[..half]);
        z.extend_from_slice(&[0x5A, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        z.extend_from_slice(&zstd_enc(&data[half..]));
        cases.push(("zstd frames", with_trailer(z, data.len())));
        for (what, p) in cases {
            let out = unpack(&bzimage(&p), 64 << 20).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(out == data, "{what}: output differs");
        }
    }

    #[test]
    fn small_and_empty_outputs() {
        for len in [0usize, 1, 4, 5, 6, 100, 4096] {
            let data = sample(len, 3);
            for (c, p) in all_formats(&data) {
                let out =
                    unpack(&bzimage(&p), 1 << 20).unwrap_or_else(|e| panic!("{c} {len}: {e}"));
                assert!(out == data, "{c} {len}");
            }
        }
    }

    #[test]
    fn identify_elf_and_garbage() {
        assert_eq!(identify(b"\x7fELF\x02\x01\x01"), Ok(KernelFormat::Elf));
        assert_eq!(identify(b""), Err(BzError::NotAKernel));
        assert_eq!(identify(&[0u8; 4096]), Err(BzError::NotAKernel));
        let file = bzimage(&gzip(b"hello", 0));
        // Cut inside the setup header, after the magic.
        assert_eq!(
            identify(&file[..0x210]),
            Err(BzError::HeaderTruncated { len: 0x210 })
        );
        let mut old = file.clone();
        old[VERSION_AT] = 0x06;
        assert_eq!(
            identify(&old),
            Err(BzError::OldProtocol { version: 0x0206 })
        );
        assert_eq!(
            BzError::OldProtocol { version: 0x0206 }.to_string(),
            "bzImage boot protocol 2.06 is older than 2.08 (no payload fields)"
        );
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let p = gzip(b"four sectors", 0);
        let mut f = bzimage(&p);
        f.resize(8192, 0);
        // Move the payload: with setup_sects 0 the protected-mode part starts at 5*512.
        f[SETUP_SECTS] = 0;
        f[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4].copy_from_slice(&0u32.to_le_bytes());
        let start = 5 * 512;
        f[start..start + p.len()].copy_from_slice(&p);
        assert_eq!(unpack(&f, 100).unwrap(), b"four sectors");
    }

    #[test]
    fn unsupported_and_unknown_compressions() {
        for (magic, c) in [
            (&b"BZh91AY&SY"[..], Compression::Bzip2),
            (&[0x5d, 0, 0, 0x80, 0][..], Compression::Lzma),
            (
                &[0x89, b'L', b'Z', b'O', 0, 0x0d, 0x0a][..],
                Compression::Lzo,
            ),
        ] {
            let mut p = magic.to_vec();
            p.resize(64, 0);
            let f = bzimage(&p);
            assert_eq!(identify(&f), Ok(KernelFormat::BzImage { compression: c }));
            assert_eq!(payload(&f, 1 << 30), Err(BzError::Unsupported(c)));
            assert_eq!(decompress(c, &p, &mut []), Err(BzError::Unsupported(c)));
        }
        assert_eq!(
            BzError::Unsupported(Compression::Bzip2).to_string(),
            "unsupported compression: bzip2"
        );
        let f = bzimage(&[0x11; 64]);
        assert_eq!(
            identify(&f),
            Err(BzError::UnknownCompression { magic: [0x11; 4] })
        );
    }

    #[test]
    fn payload_outside_file() {
        let mut f = bzimage(&gzip(b"x", 0));
        f[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&4096u32.to_le_bytes());
        let e = payload(&f, 1 << 20).unwrap_err();
        assert_eq!(
            e,
            BzError::PayloadOutsideFile {
                offset: 0x900,
                length: 4096,
                file_len: f.len()
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "bzImage payload is truncated (claims 4096 bytes at offset 0x900, file has {:#x})",
                f.len()
            )
        );
        // Offsets near u32::MAX must not wrap.
        f[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        f[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            payload(&f, 1 << 20),
            Err(BzError::PayloadOutsideFile { .. })
        ));
        // A payload too short to hold a stream and its trailer.
        let f = bzimage(&[0x1f, 0x8b, 8, 0, 0, 0, 0]);
        assert_eq!(
            payload(&f, 1 << 20),
            Err(BzError::PayloadTooShort { length: 7 })
        );
    }

    #[test]
    fn trailer_checks() {
        let data = sample(200_000, 4);
        for (c, p) in all_formats(&data) {
            let file = bzimage(&p);
            // Above the caller's cap: refused before any allocation.
            assert_eq!(
                payload(&file, data.len() - 1),
                Err(BzError::SizeAboveLimit {
                    claimed: data.len() as u64,
                    max: data.len() - 1
                }),
                "{c}"
            );
            // The output slice must be exactly the claimed size.
            let mut small = vec![0u8; data.len() - 1];
            assert_eq!(
                decompress(c, &p, &mut small),
                Err(BzError::OutputLength {
                    out: data.len() - 1,
                    claimed: data.len()
                }),
                "{c}"
            );
            // A trailer that lies, in either direction.
            for claimed in [
                data.len() - 1,
                data.len() + 1,
                data.len() / 2,
                data.len() * 2,
            ] {
                let mut lie = p.clone();
                let n = lie.len();
                lie[n - 4..].copy_from_slice(&(claimed as u32).to_le_bytes());
                let mut out = vec![0u8; claimed];
                let e = decompress(c, &lie, &mut out).unwrap_err();
                if claimed < data.len() {
                    assert!(
                        matches!(e, BzError::Overflow { .. } | BzError::Corrupt { .. }),
                        "{c} claimed {claimed}: {e}"
                    );
                } else {
                    assert!(
                        matches!(
                            e,
                            BzError::SizeMismatch { got, claimed: cl } if got == data.len() && cl == claimed
                        ) || matches!(e, BzError::Corrupt { .. }),
                        "{c} claimed {claimed}: {e}"
                    );
                }
            }
        }
        assert_eq!(
            BzError::SizeMismatch {
                got: 1234,
                claimed: 5678
            }
            .to_string(),
            "decompressed size 1234 differs from the 4-byte trailer 5678"
        );
    }

    #[test]
    fn truncated_streams_fail() {
        let data = sample(300_000, 5);
        for (c, p) in all_formats(&data) {
            let stream_len = p.len() - 4;
            for cut in [
                0,
                1,
                5,
                13,
                stream_len / 3,
                stream_len / 2,
                stream_len - 9,
                stream_len - 1,
            ] {
                // The stream cut short, with the (true) size trailer still appended.
                let mut t = p[..cut].to_vec();
                if c != Compression::Gzip {
                    t.extend_from_slice(&p[stream_len..]);
                }
                let mut out = vec![0u8; data.len()];
                let r = if t.len() >= MIN_PAYLOAD && le32(&t, t.len() - 4) as usize == data.len() {
                    decompress(c, &t, &mut out)
                } else {
                    decompress(c, &t, &mut vec![0u8; 16][..]).and(Err(BzError::NotAKernel))
                };
                assert!(r.is_err(), "{c}: cut at {cut} accepted");
            }
        }
    }

    #[test]
    fn flipped_bytes_fail() {
        let data = sample(300_000, 6);
        for (c, p) in all_formats(&data) {
            let stream_len = p.len() - 4;
            for k in 0..40 {
                let at = (k * 7919 + 3) % stream_len;
                // gzip's MTIME, XFL, OS and the FTEXT flag are informational.
                if c == Compression::Gzip && (3..10).contains(&at) {
                    continue;
                }
                let mut bad = p.clone();
                bad[at] ^= 1 << (k % 8);
                let mut out = vec![0u8; data.len()];
                let r = decompress(c, &bad, &mut out);
                // LZ4 legacy frames carry no checksum: a flipped literal decodes to
                // different bytes. Everything else must notice.
                if c == Compression::Lz4 {
                    assert!(r.is_err() || out != data || bad[at] == p[at], "lz4 at {at}");
                } else {
                    assert!(r.is_err(), "{c}: flip at {at} accepted");
                }
            }
        }
    }

    #[test]
    fn xz_window_is_the_output() {
        // A 32 MiB dictionary (as Linux uses) costs nothing extra: matches are copied
        // from the output slice.
        use xz2::stream::{Check, Filters, LzmaOptions, Stream};
        let data = sample(2 << 20, 7);
        let mut opts = LzmaOptions::new_preset(9).unwrap();
        opts.dict_size(32 << 20);
        let mut filters = Filters::new();
        filters.x86().lzma2(&opts);
        let stream = Stream::new_stream_encoder(&filters, Check::Crc32).unwrap();
        let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(&data).unwrap();
        let p = with_trailer(enc.finish().unwrap(), data.len());
        assert_eq!(unpack(&bzimage(&p), 64 << 20).unwrap(), data);
    }

    #[test]
    fn zstd_like_linux() {
        // `zstd -22 --ultra` from a pipe: a 128 MiB window, no content size, a
        // checksum. The output slice is the window, so this needs no extra memory.
        let mut data = sample(1 << 20, 9);
        data.extend_from_slice(&[0u8; 300_000]); // RLE blocks
        data.extend(
            sample(200_000, 10)
                .iter()
                .map(|b| b.wrapping_mul(167) ^ 0x5A),
        ); // raw-ish
        let z = zstd_c(&data, 22, 27);
        assert_eq!(&z[4..6], &[0x04, 0x88]);
        let p = with_trailer(z, data.len());
        assert_eq!(unpack(&bzimage(&p), 64 << 20).unwrap(), data);
        // Other levels exercise other block and table kinds.
        for level in [1, 5, 19] {
            let p = with_trailer(zstd_c(&data, level, 0), data.len());
            assert!(
                unpack(&bzimage(&p), 64 << 20).unwrap() == data,
                "level {level}"
            );
        }
        // And ruzstd's own encoder.
        let p = with_trailer(zstd_enc(&data), data.len());
        assert!(unpack(&bzimage(&p), 64 << 20).unwrap() == data, "ruzstd");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        fn corpus() -> &'static Vec<(Compression, Vec<u8>, usize)> {
            static C: OnceLock<Vec<(Compression, Vec<u8>, usize)>> = OnceLock::new();
            C.get_or_init(|| {
                let data = sample(20_000, 8);
                all_formats(&data)
                    .into_iter()
                    .map(|(c, p)| (c, p, data.len()))
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

            /// Random byte changes and cuts anywhere in a valid payload: an error or
            /// some output, never a panic (and never a write outside `out`, which
            /// safe Rust would turn into a panic).
            #[test]
            fn mutations_never_panic(
                which in 0usize..4,
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                cut in proptest::option::of(any::<usize>()),
            ) {
                let (c, p, len) = &corpus()[which];
                let mut bad = p.clone();
                for (at, v) in edits {
                    let n = bad.len() - 4;
                    bad[at % n] = v;
                }
                if let Some(cut) = cut {
                    let keep = cut % bad.len();
                    let trailer = bad[bad.len() - 4..].to_vec();
                    bad.truncate(keep);
                    bad.extend_from_slice(&trailer);
                }
                let mut out = vec![0u8; *len];
                let _ = decompress(*c, &bad, &mut out);
            }

            /// Arbitrary bytes behind the setup header never panic the parsers.
            #[test]
            fn arbitrary_images_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                magic in any::<bool>(),
            ) {
                let mut b = bytes;
                if magic && b.len() >= 0x206 {
                    b[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
                }
                let _ = identify(&b);
                if let Ok((c, p, size)) = payload(&b, 1 << 16) {
                    let mut out = vec![0u8; size];
                    let _ = decompress(c, p, &mut out);
                }
            }

            /// Random streams after each format's magic.
            #[test]
            fn random_streams_never_panic(
                which in 0usize..4,
                body in proptest::collection::vec(any::<u8>(), 0..600),
                size in 0usize..5000,
            ) {
                let (c, p, _) = &corpus()[which];
                let mut s = p[..6].to_vec();
                s.extend_from_slice(&body);
                let s = with_trailer(s, size);
                let mut out = vec![0u8; size];
                let _ = decompress(*c, &s, &mut out);
            }
        }
    }

    /// A longer, deterministic mutation run than the proptests (run it with
    /// `--release --ignored`): byte edits, cuts and splices of valid payloads.
    #[test]
    #[ignore = "slow: a million decodes"]
    fn mutation_soak() {
        let data = sample(50_000, 11);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = vec![0u8; data.len()];
        for (c, p) in all_formats(&data) {
            let n = p.len() - 4;
            let mut errors = 0usize;
            for _ in 0..250_000 {
                let mut bad = p.clone();
                match next() % 4 {
                    0 => bad[next() as usize % n] = next() as u8,
                    1 => {
                        for _ in 0..1 + next() % 8 {
                            bad[next() as usize % n] ^= 1 << (next() % 8);
                        }
                    }
                    2 => {
                        let keep = next() as usize % n;
                        bad.drain(keep..n);
                    }
                    _ => {
                        let (a, b) = (next() as usize % n, next() as usize % n);
                        let len = (next() as usize % 64).min(n - a.max(b));
                        bad.copy_within(a..a + len, b);
                    }
                }
                match decompress(c, &bad, &mut out) {
                    Err(_) => errors += 1,
                    // Only LZ4 has no checksum to notice a changed byte.
                    Ok(()) => assert!(c == Compression::Lz4 || out == data, "{c}"),
                }
            }
            eprintln!("{c}: {errors} of 250000 mutations rejected");
        }
    }

    /// Debian's generic kernel: XZ with the x86 BCJ filter and CRC32.
    #[test]
    #[ignore = "needs /tmp/linux/boot/vmlinuz-6.1.0-56-amd64"]
    fn debian_xz_kernel() {
        real_kernel("/tmp/linux/boot/vmlinuz-6.1.0-56-amd64", Compression::Xz);
    }

    /// Debian's cloud kernel: LZ4 legacy frames.
    #[test]
    #[ignore = "needs /tmp/bzdl/x/boot/vmlinuz-6.1.0-56-cloud-amd64"]
    fn debian_lz4_kernel() {
        real_kernel(
            "/tmp/bzdl/x/boot/vmlinuz-6.1.0-56-cloud-amd64",
            Compression::Lz4,
        );
    }

    /// Debian's vmlinux recompressed as Linux's `CONFIG_KERNEL_ZSTD` would
    /// (`zstd -22 --ultra`: 128 MiB window, checksum), then decompressed here.
    #[test]
    #[ignore = "needs /tmp/linux/boot/vmlinuz-6.1.0-56-amd64; slow (level 22)"]
    fn debian_kernel_as_zstd() {
        let Ok(file) = std::fs::read("/tmp/linux/boot/vmlinuz-6.1.0-56-amd64") else {
            return;
        };
        let (c, p, size) = payload(&file, 256 << 20).unwrap();
        let mut vmlinux = vec![0u8; size];
        decompress(c, p, &mut vmlinux).unwrap();
        let z = with_trailer(zstd_c(&vmlinux, 22, 27), size);
        let mut out = vec![0u8; size];
        let t = std::time::Instant::now();
        decompress(Compression::Zstd, &z, &mut out).unwrap();
        eprintln!("zstd: {} -> {size} bytes in {:?}", z.len(), t.elapsed());
        assert!(out == vmlinux);
    }

    fn real_kernel(path: &str, expect: Compression) {
        let Ok(file) = std::fs::read(path) else {
            eprintln!("{path} is missing: skipped");
            return;
        };
        assert_eq!(
            identify(&file),
            Ok(KernelFormat::BzImage {
                compression: expect
            })
        );
        let (c, p, size) = payload(&file, 256 << 20).unwrap();
        let mut out = vec![0u8; size];
        let t = std::time::Instant::now();
        decompress(c, p, &mut out).unwrap_or_else(|e| panic!("{path}: {e}"));
        eprintln!(
            "{path}: {c}, {} -> {size} bytes in {:?}",
            p.len(),
            t.elapsed()
        );
        assert!(out.starts_with(b"\x7fELF"));
        assert_eq!(identify(&out), Ok(KernelFormat::Elf));
    }
}
