//! A single-call XZ decoder: the `.xz` container, LZMA2, the x86 BCJ filter and the
//! CRC32/CRC64 integrity checks, decoding straight into the caller's output slice.
//!
//! What: `decompress(input, out)` decodes one or more concatenated XZ streams (with
//! stream padding between and after them) whose total uncompressed size is exactly
//! `out.len()`. This is how Linux packs `vmlinux.bin.xz` into a bzImage
//! (`xz --check=crc32 --x86 --lzma2=...,dict=32MiB`).
//!
//! Why our own: the XZ decoders on crates.io that build for no_std keep a separate
//! dictionary buffer of the size the stream declares (32 MiB for Linux), which keel's
//! 8 MiB heap cannot hold. Because the whole output is one flat slice, the output
//! itself is the LZMA dictionary (Linux's boot decompressor calls this "single-call
//! mode"): a match copies from earlier output, so the only heap use is the ~28 KiB
//! probability table. The code follows the format specifications (the `.xz` file
//! format 1.x and the LZMA/LZMA2 algorithm description), not another decoder.
//!
//! Invariants:
//! - Nothing is written outside `out`: every write goes through slice indexing that
//!   is checked against the chunk's declared end, which is checked against the
//!   block's and then the output's end before decoding starts.
//! - A match's distance is checked against the bytes produced since the last
//!   dictionary reset before it is copied, so a copy never reads before the block's
//!   start (nor, as it is indexing, outside `out`).
//! - Guest-or-user input never panics: truncation, bad sizes, reserved bits, bad
//!   CRCs and impossible LZMA symbols are all `Err`.
//! - Memory: one `Vec<u16>` of `PROBS_LEN` entries, allocated fallibly.
//!
//! Locking: none; the decoder is a local value of one call.

extern crate alloc;

use alloc::vec::Vec;

use super::{BzError, Compression, crc32, crc64};

const FORMAT: Compression = Compression::Xz;

/// Stream header magic: 0xFD '7' 'z' 'X' 'Z' 0x00.
const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// Stream footer magic: 'Y' 'Z'.
const FOOTER_MAGIC: [u8; 2] = *b"YZ";
/// Filter IDs (xz-file-format, 5.3).
const FILTER_X86: u64 = 0x04;
const FILTER_LZMA2: u64 = 0x21;

fn corrupt(at: usize, why: &'static str) -> BzError {
    BzError::Corrupt {
        format: FORMAT,
        at,
        why,
    }
}

fn truncated() -> BzError {
    BzError::Truncated { format: FORMAT }
}

/// The integrity check a stream declares in its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    None,
    Crc32,
    Crc64,
}

impl Check {
    fn size(self) -> usize {
        match self {
            Check::None => 0,
            Check::Crc32 => 4,
            Check::Crc64 => 8,
        }
    }
}

/// A bounds-checked reader over the whole input, reporting offsets from its start.
struct Input<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BzError> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, BzError> {
        Ok(self.take(1)?[0])
    }

    fn u32_le(&mut self) -> Result<u32, BzError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// A variable-length integer (xz-file-format 1.2): 7 bits a byte, least
    /// significant first, at most 9 bytes, and no redundant trailing zero byte.
    fn vli(&mut self) -> Result<u64, BzError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..9 {
            let b = self.byte()?;
            value |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(corrupt(start, "non-minimal variable-length integer"));
                }
                return Ok(value);
            }
        }
        Err(corrupt(
            start,
            "variable-length integer longer than 9 bytes",
        ))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Running summary of the blocks seen (or of the index records read), compared at
/// the end of a stream instead of keeping a list: constant memory whatever the
/// number of blocks.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct RecordSum {
    count: u64,
    unpadded: u64,
    uncompressed: u64,
    crc: u32,
}

impl RecordSum {
    fn add(&mut self, unpadded: u64, uncompressed: u64) {
        self.count = self.count.wrapping_add(1);
        self.unpadded = self.unpadded.wrapping_add(unpadded);
        self.uncompressed = self.uncompressed.wrapping_add(uncompressed);
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&unpadded.to_le_bytes());
        rec[8..].copy_from_slice(&uncompressed.to_le_bytes());
        self.crc = crc32::update(self.crc, &rec);
    }
}

/// Decodes `input` (one or more XZ streams plus stream padding) into `out`, which
/// must come out exactly full.
pub(super) fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), BzError> {
    let mut lzma = LzmaDecoder::new()?;
    let mut inp = Input { buf: input, pos: 0 };
    let mut written = 0usize;
    loop {
        written = decode_stream(&mut inp, out, written, &mut lzma)?;
        // Stream padding: any number of all-zero 4-byte groups.
        while inp.remaining() >= 4 && inp.buf[inp.pos..inp.pos + 4] == [0; 4] {
            inp.pos += 4;
        }
        if inp.remaining() == 0 {
            break;
        }
        if inp.remaining() < HEADER_MAGIC.len() || inp.buf[inp.pos..inp.pos + 6] != HEADER_MAGIC {
            return Err(corrupt(inp.pos, "garbage after the end of the stream"));
        }
    }
    if written != out.len() {
        return Err(BzError::SizeMismatch {
            got: written,
            claimed: out.len(),
        });
    }
    Ok(())
}

/// The 2-byte stream flags: a zero byte, then the check type in the low nibble.
fn parse_stream_flags(flags: &[u8], at: usize) -> Result<Check, BzError> {
    if flags[0] != 0 || flags[1] & 0xF0 != 0 {
        return Err(corrupt(at, "reserved stream flags set"));
    }
    match flags[1] {
        0x00 => Ok(Check::None),
        0x01 => Ok(Check::Crc32),
        0x04 => Ok(Check::Crc64),
        _ => Err(BzError::UnsupportedFeature {
            format: FORMAT,
            what: "integrity check type (only none, CRC32 and CRC64 are supported)",
        }),
    }
}

/// Decodes one stream starting at `inp.pos`, appending to `out[written..]`; returns
/// the new output length.
fn decode_stream(
    inp: &mut Input<'_>,
    out: &mut [u8],
    mut written: usize,
    lzma: &mut LzmaDecoder,
) -> Result<usize, BzError> {
    let header_at = inp.pos;
    let header = inp.take(12)?;
    if header[..6] != HEADER_MAGIC {
        return Err(corrupt(header_at, "no xz stream header magic"));
    }
    let flags = [header[6], header[7]];
    if crc32::of(&flags) != u32::from_le_bytes([header[8], header[9], header[10], header[11]]) {
        return Err(corrupt(header_at + 8, "stream header CRC32 mismatch"));
    }
    let check = parse_stream_flags(&flags, header_at + 6)?;

    let mut blocks = RecordSum::default();
    loop {
        let at = inp.pos;
        let first = *inp.buf.get(at).ok_or_else(truncated)?;
        if first == 0 {
            break; // the index indicator
        }
        let (unpadded, produced) = decode_block(inp, out, written, check, lzma)?;
        blocks.add(unpadded, produced as u64);
        written += produced;
    }

    // Index (xz-file-format 4): indicator, record count, records, padding, CRC32.
    let index_at = inp.pos;
    inp.take(1)?;
    let count = inp.vli()?;
    if count != blocks.count {
        return Err(corrupt(
            index_at,
            "index record count differs from the blocks",
        ));
    }
    let mut records = RecordSum::default();
    for _ in 0..count {
        let at = inp.pos;
        let unpadded = inp.vli()?;
        let uncompressed = inp.vli()?;
        if unpadded == 0 {
            return Err(corrupt(at, "index record with zero unpadded size"));
        }
        records.add(unpadded, uncompressed);
    }
    if records != blocks {
        return Err(corrupt(index_at, "index does not match the blocks"));
    }
    while !(inp.pos - index_at).is_multiple_of(4) {
        if inp.byte()? != 0 {
            return Err(corrupt(inp.pos - 1, "non-zero index padding"));
        }
    }
    let index_crc = crc32::of(&inp.buf[index_at..inp.pos]);
    if inp.u32_le()? != index_crc {
        return Err(corrupt(inp.pos - 4, "index CRC32 mismatch"));
    }
    let index_size = (inp.pos - index_at) as u64;

    // Stream footer: CRC32 of (backward size, flags), backward size, flags, "YZ".
    let footer_at = inp.pos;
    let footer = inp.take(12)?;
    if footer[10..] != FOOTER_MAGIC {
        return Err(corrupt(footer_at + 10, "no xz stream footer magic"));
    }
    if crc32::of(&footer[4..10]) != u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]])
    {
        return Err(corrupt(footer_at, "stream footer CRC32 mismatch"));
    }
    let backward = u64::from(u32::from_le_bytes([
        footer[4], footer[5], footer[6], footer[7],
    ]));
    if (backward + 1) * 4 != index_size {
        return Err(corrupt(
            footer_at + 4,
            "stream footer backward size differs from the index",
        ));
    }
    if footer[8..10] != flags {
        return Err(corrupt(
            footer_at + 8,
            "stream footer flags differ from the header",
        ));
    }
    Ok(written)
}

/// The filter chain keel accepts: an optional x86 BCJ, then LZMA2.
struct Filters {
    /// `Some(start_offset)` when the x86 BCJ filter is present.
    x86: Option<u32>,
}

/// Decodes one block (header, compressed data, padding, check) into
/// `out[written..]`; returns (unpadded size, bytes produced).
fn decode_block(
    inp: &mut Input<'_>,
    out: &mut [u8],
    written: usize,
    check: Check,
    lzma: &mut LzmaDecoder,
) -> Result<(u64, usize), BzError> {
    let block_at = inp.pos;
    let header_size = (usize::from(inp.buf[block_at]) + 1) * 4;
    let header = inp.take(header_size)?;
    let (body, crc) = header.split_at(header_size - 4);
    if crc32::of(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(corrupt(block_at, "block header CRC32 mismatch"));
    }
    // Parse the header body with its own reader so nothing reads past it.
    let mut h = Input {
        buf: &inp.buf[..block_at + header_size - 4],
        pos: block_at + 1,
    };
    let flags = h.byte()?;
    if flags & 0x3C != 0 {
        return Err(corrupt(block_at + 1, "reserved block flags set"));
    }
    let compressed_size = if flags & 0x40 != 0 {
        Some(h.vli()?)
    } else {
        None
    };
    let uncompressed_size = if flags & 0x80 != 0 {
        Some(h.vli()?)
    } else {
        None
    };
    let nfilters = usize::from(flags & 3) + 1;
    let mut filters = Filters { x86: None };
    let mut have_lzma2 = false;
    for i in 0..nfilters {
        let at = h.pos;
        let id = h.vli()?;
        let props_len = h.vli()?;
        let props_len = usize::try_from(props_len).map_err(|_| truncated())?;
        let props = h
            .take(props_len)
            .map_err(|_| corrupt(at, "filter properties overrun the block header"))?;
        let last = i + 1 == nfilters;
        match (id, last) {
            (FILTER_LZMA2, true) => {
                if props.len() != 1 || props[0] > 40 {
                    return Err(corrupt(at, "bad LZMA2 filter properties"));
                }
                have_lzma2 = true;
            }
            (FILTER_X86, false) if filters.x86.is_none() => {
                filters.x86 = Some(match props {
                    [] => 0,
                    [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
                    _ => return Err(corrupt(at, "bad x86 BCJ filter properties")),
                });
            }
            _ => {
                return Err(BzError::UnsupportedFeature {
                    format: FORMAT,
                    what: "filter chain (only LZMA2, optionally after x86 BCJ, is supported)",
                });
            }
        }
    }
    if !have_lzma2 {
        return Err(BzError::UnsupportedFeature {
            format: FORMAT,
            what: "filter chain without LZMA2",
        });
    }
    if h.buf[h.pos..].iter().any(|&b| b != 0) {
        return Err(corrupt(h.pos, "non-zero block header padding"));
    }

    // The compressed data: bounded by the declared size when there is one.
    let data_at = inp.pos;
    let data_end = match compressed_size {
        Some(c) => {
            let c = usize::try_from(c).map_err(|_| truncated())?;
            data_at
                .checked_add(c)
                .filter(|&e| e <= inp.buf.len())
                .ok_or_else(truncated)?
        }
        None => inp.buf.len(),
    };
    let out_end = match uncompressed_size {
        Some(u) => usize::try_from(u)
            .ok()
            .and_then(|u| written.checked_add(u))
            .filter(|&e| e <= out.len())
            .ok_or(BzError::Overflow {
                format: FORMAT,
                claimed: out.len(),
            })?,
        None => out.len(),
    };
    let (consumed, end) =
        lzma.decode_lzma2(&inp.buf[..data_end], data_at, out, written, out_end)?;
    if compressed_size.is_some_and(|c| c != consumed as u64) {
        return Err(corrupt(
            data_at,
            "block compressed size differs from its header",
        ));
    }
    if uncompressed_size.is_some() && end != out_end {
        return Err(corrupt(
            data_at,
            "block uncompressed size differs from its header",
        ));
    }
    inp.pos = data_at + consumed;
    let block = &mut out[written..end];
    if let Some(start) = filters.x86 {
        bcj_x86_decode(block, start);
    }

    // Block padding up to a multiple of four, then the check of the output.
    while !(inp.pos - block_at).is_multiple_of(4) {
        if inp.byte()? != 0 {
            return Err(corrupt(inp.pos - 1, "non-zero block padding"));
        }
    }
    let check_at = inp.pos;
    let stored = inp.take(check.size())?;
    let ok = match check {
        Check::None => true,
        Check::Crc32 => crc32::of(block).to_le_bytes()[..] == *stored,
        Check::Crc64 => crc64::of(block).to_le_bytes()[..] == *stored,
    };
    if !ok {
        return Err(corrupt(check_at, "block check (CRC) mismatch"));
    }
    let unpadded = (header_size + consumed + check.size()) as u64;
    Ok((unpadded, end - written))
}

/// The x86 BCJ filter, decoding direction, over one whole block in place. It undoes
/// the encoder's conversion of the relative 32-bit targets of `E8` (call) and `E9`
/// (jmp) to absolute ones. `start` is the filter's start offset property.
///
/// The state is a 3-bit history `mask` of which of the previous three bytes were
/// themselves E8/E9 opcodes not converted; it decides whether this opcode's operand
/// might really be part of an earlier instruction (xz-file-format 5.3.3 points to
/// the reference; the rules below are that algorithm's).
fn bcj_x86_decode(buf: &mut [u8], start: u32) {
    /// Whether an operand may be converted given the mask, and which byte of the
    /// operand the mask says to test again after conversion.
    const ALLOWED: [bool; 8] = [true, true, true, false, true, false, false, false];
    const BYTE_INDEX: [u32; 8] = [0, 1, 2, 2, 3, 3, 3, 3];
    fn is_msbyte(b: u8) -> bool {
        b == 0x00 || b == 0xFF
    }
    if buf.len() < 5 {
        return;
    }
    let last = buf.len() - 5; // the last index where a 5-byte instruction fits
    let mut mask: u32 = 0;
    // Index of the previous E8/E9 seen; "long ago" at the start.
    let mut prev: Option<usize> = None;
    let mut i = 0usize;
    while i <= last {
        if buf[i] & 0xFE != 0xE8 {
            i += 1;
            continue;
        }
        let gap = prev.map_or(usize::MAX, |p| i - p);
        if gap > 3 {
            mask = 0;
        } else {
            mask = (mask << (gap - 1)) & 7;
            if mask != 0 {
                let b = buf[i + 4 - BYTE_INDEX[mask as usize] as usize];
                if !ALLOWED[mask as usize] || is_msbyte(b) {
                    prev = Some(i);
                    mask = (mask << 1) | 1;
                    i += 1;
                    continue;
                }
            }
        }
        prev = Some(i);
        if is_msbyte(buf[i + 4]) {
            let mut src = u32::from_le_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]);
            let here = start.wrapping_add(i as u32).wrapping_add(5);
            let mut dest;
            loop {
                dest = src.wrapping_sub(here);
                if mask == 0 {
                    break;
                }
                let shift = BYTE_INDEX[mask as usize] * 8; // 8, 16 or 24 here
                if !is_msbyte((dest >> (24 - shift)) as u8) {
                    break;
                }
                src = dest ^ ((1u32 << (32 - shift)) - 1);
            }
            // Sign-extend bit 24 into the top byte (it is 0x00 or 0xFF by construction).
            dest &= 0x01FF_FFFF;
            if dest & 0x0100_0000 != 0 {
                dest |= 0xFF00_0000;
            }
            buf[i + 1..i + 5].copy_from_slice(&dest.to_le_bytes());
            i += 5;
        } else {
            mask = (mask << 1) | 1;
            i += 1;
        }
    }
}

// ---------------------------------------------------------------------------------
// LZMA / LZMA2
// ---------------------------------------------------------------------------------

/// Probabilities are 11-bit fixed point; every model starts at one half.
const PROB_INIT: u16 = 1 << 10;
const NUM_STATES: usize = 12;
const POS_STATES_MAX: usize = 16;
/// Literal coder size for one literal context (0x300 probabilities).
const LITERAL_CODER: usize = 0x300;
/// Match distances: slots 0..3 are the distance itself, slots 4..13 use
/// probability-coded low bits, 14..63 direct bits plus 4 aligned ones.
const DIST_STATES: usize = 4;
const DIST_SLOTS: usize = 64;
const END_POS_MODEL_INDEX: u32 = 14;
const FULL_DISTANCES: usize = 128;
const ALIGN_BITS: u32 = 4;
const MATCH_LEN_MIN: usize = 2;

// Length coder layout (one for matches, one for repeated matches).
const LEN_CHOICE: usize = 0;
const LEN_CHOICE2: usize = 1;
const LEN_LOW: usize = 2; // [pos_state][8]
const LEN_MID: usize = LEN_LOW + POS_STATES_MAX * 8; // [pos_state][8]
const LEN_HIGH: usize = LEN_MID + POS_STATES_MAX * 8; // [256]
const LEN_CODER: usize = LEN_HIGH + 256;

// Layout of the one probability array.
const IS_MATCH: usize = 0; // [state][pos_state]
const IS_REP: usize = IS_MATCH + NUM_STATES * POS_STATES_MAX;
const IS_REP0: usize = IS_REP + NUM_STATES;
const IS_REP1: usize = IS_REP0 + NUM_STATES;
const IS_REP2: usize = IS_REP1 + NUM_STATES;
const IS_REP0_LONG: usize = IS_REP2 + NUM_STATES; // [state][pos_state]
const DIST_SLOT: usize = IS_REP0_LONG + NUM_STATES * POS_STATES_MAX; // [len_state][64]
const DIST_SPECIAL: usize = DIST_SLOT + DIST_STATES * DIST_SLOTS;
const DIST_ALIGN: usize = DIST_SPECIAL + FULL_DISTANCES - END_POS_MODEL_INDEX as usize;
const MATCH_LEN: usize = DIST_ALIGN + (1 << ALIGN_BITS);
const REP_LEN: usize = MATCH_LEN + LEN_CODER;
const LITERAL: usize = REP_LEN + LEN_CODER;
/// LZMA2 limits lc + lp to 4, so at most 16 literal coders.
const PROBS_LEN: usize = LITERAL + LITERAL_CODER * 16;

/// The range decoder over one LZMA2 chunk's compressed bytes. Reading past the
/// chunk does not fail at once (that would cost a branch and a `Result` per bit):
/// it feeds zeros and sets `overrun`, which the chunk's end check turns into an
/// error. A chunk's output size bounds the work done on such garbage.
struct RangeDecoder<'a> {
    buf: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
    overrun: bool,
}

impl<'a> RangeDecoder<'a> {
    /// Starts on a chunk: a zero byte, then the 32-bit initial code.
    fn new(buf: &'a [u8]) -> Option<Self> {
        if buf.len() < 5 || buf[0] != 0 {
            return None;
        }
        let code = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        Some(RangeDecoder {
            buf,
            pos: 5,
            range: u32::MAX,
            code,
            overrun: false,
        })
    }

    #[inline(always)]
    fn normalize(&mut self) {
        if self.range < (1 << 24) {
            let b = match self.buf.get(self.pos) {
                Some(&b) => b,
                None => {
                    self.overrun = true;
                    0
                }
            };
            self.pos += 1;
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(b);
        }
    }

    /// One bit with an adaptive probability.
    #[inline(always)]
    fn bit(&mut self, prob: &mut u16) -> u32 {
        self.normalize();
        let bound = (self.range >> 11) * u32::from(*prob);
        if self.code < bound {
            self.range = bound;
            *prob += ((1 << 11) - *prob) >> 5;
            0
        } else {
            self.range -= bound;
            self.code -= bound;
            *prob -= *prob >> 5;
            1
        }
    }

    /// `n` bits, most significant first, through a binary tree of probabilities
    /// (`probs[1..1 << n]`).
    #[inline(always)]
    fn bittree(&mut self, probs: &mut [u16], n: u32) -> u32 {
        let mut sym = 1usize;
        for _ in 0..n {
            sym = (sym << 1) | self.bit(&mut probs[sym]) as usize;
        }
        (sym - (1 << n)) as u32
    }

    /// `n` bits, least significant first (`probs[1..1 << n]`).
    fn bittree_reverse(&mut self, probs: &mut [u16], n: u32) -> u32 {
        let mut sym = 1usize;
        let mut out = 0u32;
        for i in 0..n {
            let b = self.bit(&mut probs[sym]);
            sym = (sym << 1) | b as usize;
            out |= b << i;
        }
        out
    }

    /// `n` bits with fixed probability one half, most significant first.
    fn direct(&mut self, n: u32) -> u32 {
        let mut out = 0u32;
        for _ in 0..n {
            self.normalize();
            self.range >>= 1;
            let bit = u32::from(self.code >= self.range);
            if bit == 1 {
                self.code -= self.range;
            }
            out = (out << 1) | bit;
        }
        out
    }

    /// A chunk ends cleanly when, after a last normalization, exactly its bytes
    /// were used and the code is zero.
    fn finish(&mut self) -> bool {
        self.normalize();
        !self.overrun && self.pos == self.buf.len() && self.code == 0
    }
}

/// LZMA decoder state that lives across LZMA2 chunks (and is reused across blocks).
struct LzmaDecoder {
    probs: Vec<u16>,
    state: usize,
    /// The last four match distances, minus one (rep0 is the most recent).
    reps: [usize; 4],
    lc: u32,
    lp_mask: usize,
    pb_mask: usize,
}

impl LzmaDecoder {
    fn new() -> Result<Self, BzError> {
        let mut probs = Vec::new();
        probs
            .try_reserve_exact(PROBS_LEN)
            .map_err(|_| BzError::OutOfMemory {
                format: FORMAT,
                bytes: PROBS_LEN * 2,
            })?;
        probs.resize(PROBS_LEN, PROB_INIT);
        Ok(LzmaDecoder {
            probs,
            state: 0,
            reps: [0; 4],
            lc: 0,
            lp_mask: 0,
            pb_mask: 0,
        })
    }

    fn reset_state(&mut self) {
        self.probs.fill(PROB_INIT);
        self.state = 0;
        self.reps = [0; 4];
    }

    /// The lc/lp/pb properties byte of an LZMA2 chunk.
    fn set_props(&mut self, byte: u8) -> bool {
        if byte >= 9 * 5 * 5 {
            return false;
        }
        let lc = u32::from(byte % 9);
        let lp = u32::from(byte / 9 % 5);
        let pb = u32::from(byte / 45);
        if lc + lp > 4 {
            return false;
        }
        self.lc = lc;
        self.lp_mask = (1 << lp) - 1;
        self.pb_mask = (1 << pb) - 1;
        true
    }

    /// Decodes one LZMA2 stream from `input[at..]` (the slice ends where the block's
    /// data must end) into `out[start..]`, never past `limit`. Returns (bytes of
    /// input consumed, output end).
    fn decode_lzma2(
        &mut self,
        input: &[u8],
        at: usize,
        out: &mut [u8],
        start: usize,
        limit: usize,
    ) -> Result<(usize, usize), BzError> {
        let claimed = out.len();
        // Past the output's end the trailer lied; past a block's declared size the
        // block is corrupt.
        let past_limit = |chunk_at| {
            if limit == claimed {
                BzError::Overflow {
                    format: FORMAT,
                    claimed,
                }
            } else {
                corrupt(chunk_at, "LZMA2 data exceeds the block's uncompressed size")
            }
        };
        let mut inp = Input {
            buf: input,
            pos: at,
        };
        let mut pos = start;
        let mut dict_start = start;
        let mut need_dict_reset = true;
        let mut need_props = true;
        loop {
            let chunk_at = inp.pos;
            let control = inp.byte()?;
            if control == 0x00 {
                return Ok((inp.pos - at, pos));
            }
            if control >= 0xE0 || control == 0x01 {
                need_props = true;
                need_dict_reset = false;
                dict_start = pos;
            } else if need_dict_reset {
                return Err(corrupt(
                    chunk_at,
                    "first LZMA2 chunk does not reset the dictionary",
                ));
            }
            if control >= 0x80 {
                let h = inp.take(4)?;
                let usize_ = ((usize::from(control & 0x1F) << 16)
                    | usize::from(u16::from_be_bytes([h[0], h[1]])))
                    + 1;
                let csize = usize::from(u16::from_be_bytes([h[2], h[3]])) + 1;
                match control >> 5 {
                    4 | 5 if need_props => {
                        return Err(corrupt(chunk_at, "LZMA2 chunk without properties"));
                    }
                    4 => {}
                    5 => self.reset_state(),
                    _ => {
                        let props_at = inp.pos;
                        if !self.set_props(inp.byte()?) {
                            return Err(corrupt(props_at, "bad LZMA properties"));
                        }
                        need_props = false;
                        self.reset_state();
                    }
                }
                let data_at = inp.pos;
                let data = inp.take(csize)?;
                let end = pos
                    .checked_add(usize_)
                    .filter(|&e| e <= limit)
                    .ok_or_else(|| past_limit(chunk_at))?;
                let mut rc = RangeDecoder::new(data)
                    .ok_or_else(|| corrupt(data_at, "bad range coder start"))?;
                self.decode_chunk(&mut rc, out, dict_start, pos, end)
                    .map_err(|why| corrupt(data_at, why))?;
                if !rc.finish() {
                    return Err(corrupt(data_at, "LZMA chunk sizes do not match its data"));
                }
                pos = end;
            } else if control <= 0x02 {
                let h = inp.take(2)?;
                let size = usize::from(u16::from_be_bytes([h[0], h[1]])) + 1;
                let data = inp.take(size)?;
                let end = pos
                    .checked_add(size)
                    .filter(|&e| e <= limit)
                    .ok_or_else(|| past_limit(chunk_at))?;
                out[pos..end].copy_from_slice(data);
                pos = end;
            } else {
                return Err(corrupt(chunk_at, "invalid LZMA2 control byte"));
            }
        }
    }

    /// Decodes LZMA symbols until `out[..end]` is filled. `dict_start` is where the
    /// dictionary was last reset: positions are counted from it and no match may
    /// reach before it.
    fn decode_chunk(
        &mut self,
        rc: &mut RangeDecoder<'_>,
        out: &mut [u8],
        dict_start: usize,
        mut pos: usize,
        end: usize,
    ) -> Result<(), &'static str> {
        let lc = self.lc;
        let lp_mask = self.lp_mask;
        let pb_mask = self.pb_mask;
        let probs = &mut self.probs[..];
        let mut state = self.state;
        let mut reps = self.reps;
        while pos < end {
            if rc.overrun {
                return Err("LZMA chunk data ends early");
            }
            let rel = pos - dict_start;
            let pos_state = rel & pb_mask;
            if rc.bit(&mut probs[IS_MATCH + state * POS_STATES_MAX + pos_state]) == 0 {
                // A literal, coded in the context of the previous byte and position.
                let prev = if rel > 0 { out[pos - 1] } else { 0 };
                let ctx = ((rel & lp_mask) << lc) + (usize::from(prev) >> (8 - lc));
                let lit = &mut probs[LITERAL + LITERAL_CODER * ctx..][..LITERAL_CODER];
                let byte = if state < 7 {
                    rc.bittree(lit, 8) as u8
                } else {
                    // After a match: the byte at rep0 steers the first bits.
                    if reps[0] >= rel {
                        return Err("literal refers before the dictionary");
                    }
                    let mut match_byte = usize::from(out[pos - reps[0] - 1]) << 1;
                    let mut offset = 0x100usize;
                    let mut sym = 1usize;
                    while sym < 0x100 {
                        let match_bit = match_byte & offset;
                        match_byte <<= 1;
                        if rc.bit(&mut lit[offset + match_bit + sym]) == 1 {
                            sym = (sym << 1) | 1;
                            offset &= match_bit;
                        } else {
                            sym <<= 1;
                            offset &= !match_bit;
                        }
                    }
                    (sym - 0x100) as u8
                };
                out[pos] = byte;
                pos += 1;
                state = match state {
                    0..=3 => 0,
                    4..=9 => state - 3,
                    _ => state - 6,
                };
                continue;
            }
            let len;
            if rc.bit(&mut probs[IS_REP + state]) == 0 {
                // A new match: length, then distance.
                len = decode_len(rc, &mut probs[MATCH_LEN..MATCH_LEN + LEN_CODER], pos_state);
                state = if state < 7 { 7 } else { 10 };
                reps = [decode_dist(rc, probs, len)?, reps[0], reps[1], reps[2]];
            } else {
                if rel == 0 {
                    return Err("repeated match in an empty dictionary");
                }
                if rc.bit(&mut probs[IS_REP0 + state]) == 0 {
                    if rc.bit(&mut probs[IS_REP0_LONG + state * POS_STATES_MAX + pos_state]) == 0 {
                        // "Short rep": one byte from rep0.
                        if reps[0] >= rel {
                            return Err("match distance before the dictionary");
                        }
                        state = if state < 7 { 9 } else { 11 };
                        out[pos] = out[pos - reps[0] - 1];
                        pos += 1;
                        continue;
                    }
                } else {
                    let dist;
                    if rc.bit(&mut probs[IS_REP1 + state]) == 0 {
                        dist = reps[1];
                    } else if rc.bit(&mut probs[IS_REP2 + state]) == 0 {
                        dist = reps[2];
                        reps[2] = reps[1];
                    } else {
                        dist = reps[3];
                        reps[3] = reps[2];
                        reps[2] = reps[1];
                    }
                    reps[1] = reps[0];
                    reps[0] = dist;
                }
                len = decode_len(rc, &mut probs[REP_LEN..REP_LEN + LEN_CODER], pos_state);
                state = if state < 7 { 8 } else { 11 };
            }
            let dist = reps[0];
            if dist >= rel {
                return Err("match distance before the dictionary");
            }
            if len > end - pos {
                return Err("match runs past the chunk's end");
            }
            let from = pos - dist - 1;
            if dist + 1 >= len {
                out.copy_within(from..from + len, pos);
            } else {
                // Overlapping: the copy repeats a short period, byte by byte.
                for k in 0..len {
                    out[pos + k] = out[from + k];
                }
            }
            pos += len;
        }
        self.state = state;
        self.reps = reps;
        Ok(())
    }
}

/// A match length (2..=273) from a length coder.
#[inline(always)]
fn decode_len(rc: &mut RangeDecoder<'_>, lc: &mut [u16], pos_state: usize) -> usize {
    let n = if rc.bit(&mut lc[LEN_CHOICE]) == 0 {
        rc.bittree(&mut lc[LEN_LOW + pos_state * 8..][..8], 3) as usize
    } else if rc.bit(&mut lc[LEN_CHOICE2]) == 0 {
        8 + rc.bittree(&mut lc[LEN_MID + pos_state * 8..][..8], 3) as usize
    } else {
        16 + rc.bittree(&mut lc[LEN_HIGH..LEN_HIGH + 256], 8) as usize
    };
    n + MATCH_LEN_MIN
}

/// A match distance minus one, for a match of `len` bytes.
fn decode_dist(
    rc: &mut RangeDecoder<'_>,
    probs: &mut [u16],
    len: usize,
) -> Result<usize, &'static str> {
    let len_state = (len - MATCH_LEN_MIN).min(DIST_STATES - 1);
    let slot = rc.bittree(
        &mut probs[DIST_SLOT + len_state * DIST_SLOTS..][..DIST_SLOTS],
        6,
    );
    if slot < 4 {
        return Ok(slot as usize);
    }
    let nbits = (slot >> 1) - 1;
    let base = (2 | (slot & 1)) << nbits;
    let dist = if slot < END_POS_MODEL_INDEX {
        // Reverse bit tree whose nodes for this slot start at DIST_SPECIAL + base - slot.
        let first = DIST_SPECIAL + (base - slot) as usize - 1;
        base + rc.bittree_reverse(&mut probs[first..first + (1 << nbits)], nbits)
    } else {
        let high = rc.direct(nbits - ALIGN_BITS) << ALIGN_BITS;
        let low = rc.bittree_reverse(
            &mut probs[DIST_ALIGN..DIST_ALIGN + (1 << ALIGN_BITS)],
            ALIGN_BITS,
        );
        // base + high cannot overflow: for slot 63 it is at most 0xFFFF_FFF0.
        base.wrapping_add(high).wrapping_add(low)
    };
    if dist == u32::MAX {
        // The end-of-payload marker: LZMA2 chunks have explicit sizes and no marker.
        return Err("end marker inside an LZMA2 chunk");
    }
    Ok(dist as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vli_rules() {
        let mut i = Input {
            buf: &[0x7F],
            pos: 0,
        };
        assert_eq!(i.vli(), Ok(0x7F));
        let mut i = Input {
            buf: &[0x80, 0x01],
            pos: 0,
        };
        assert_eq!(i.vli(), Ok(0x80));
        let mut i = Input {
            buf: &[0x80, 0x00],
            pos: 0,
        };
        assert!(i.vli().is_err());
        let mut i = Input {
            buf: &[0xFF; 10],
            pos: 0,
        };
        assert!(i.vli().is_err());
        let mut i = Input {
            buf: &[0x80],
            pos: 0,
        };
        assert_eq!(i.vli(), Err(truncated()));
    }

    #[test]
    fn probs_layout() {
        assert_eq!(DIST_ALIGN - DIST_SPECIAL, 114);
        assert_eq!(LEN_CODER, 514);
        assert_eq!(PROBS_LEN, LITERAL + 12288);
    }

    #[test]
    fn bcj_short_buffers_untouched() {
        for n in 0..5 {
            let mut b = [0xE8u8; 4];
            bcj_x86_decode(&mut b[..n.min(4)], 0);
            assert_eq!(b, [0xE8; 4]);
        }
    }
}
