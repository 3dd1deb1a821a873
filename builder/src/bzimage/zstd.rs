//! A single-call Zstandard decoder (RFC 8878) writing straight into the caller's
//! output slice, which doubles as the window.
//!
//! What: `decompress(input, out)` decodes zstd frames (and skips skippable frames)
//! whose total content is exactly `out.len()`. Linux packs `vmlinux.bin.zst` with
//! `zstd -22 --ultra`, whose frames declare a 128 MiB window: a streaming decoder
//! (such as `ruzstd`) must keep that much history on the heap, which keel does not
//! have. With the whole output in one flat slice, a match simply copies from
//! earlier output, as Linux's own boot decompressor does; the heap holds only the
//! 128 KiB literals buffer and the FSE/Huffman tables (~16 KiB).
//!
//! Supported: raw, RLE and compressed blocks; raw, RLE, Huffman and treeless
//! literals with one or four streams; predefined, RLE, FSE and repeated sequence
//! tables; repeat offsets; the frame content size and the XXH64 content checksum
//! are verified when present. Not supported (refused with an error): dictionaries.
//!
//! Invariants:
//! - Nothing is written outside `out`: every literal run and match is checked
//!   against `out.len()` before it is copied.
//! - A match offset is checked against the bytes produced by the current frame, so
//!   copies never read before the frame's start.
//! - Every table index comes from a table built here whose size is 2^accuracy_log
//!   and whose states are all < that size by construction; bit readers pad with
//!   zeros past their input and remember it, so corrupt input ends in `Err`.
//!
//! Locking: none; the decoder is a local value of one call.

extern crate alloc;

use alloc::vec::Vec;

use super::{BzError, Compression};

const FORMAT: Compression = Compression::Zstd;
const FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames: magic 0x184D2A5?, then a u32 LE length.
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// Block_Maximum_Size: no block decompresses to more.
const BLOCK_MAX: usize = 128 << 10;
/// Largest accuracy logs (RFC 8878 3.1.1.3.2.2 and 4.2.1.1).
const LL_MAX_AL: u32 = 9;
const ML_MAX_AL: u32 = 9;
const OF_MAX_AL: u32 = 8;
const HUF_WEIGHT_MAX_AL: u32 = 6;
const HUF_MAX_BITS: u32 = 11;
const LL_MAX_SYM: usize = 35;
const ML_MAX_SYM: usize = 52;
const OF_MAX_SYM: usize = 31;

/// Predefined distributions (RFC 8878 3.1.1.3.2.2), accuracy logs 6, 6 and 5.
const LL_DEFAULT: [i16; 36] = [
    4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1,
    -1, -1, -1, -1,
];
const ML_DEFAULT: [i16; 53] = [
    1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1,
];
const OF_DEFAULT: [i16; 29] = [
    1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1,
];

/// Literals_Length codes: (baseline, extra bits) (RFC 8878 3.1.1.3.2.1.1).
const LL_CODES: [(u32, u8); 36] = [
    (0, 0),
    (1, 0),
    (2, 0),
    (3, 0),
    (4, 0),
    (5, 0),
    (6, 0),
    (7, 0),
    (8, 0),
    (9, 0),
    (10, 0),
    (11, 0),
    (12, 0),
    (13, 0),
    (14, 0),
    (15, 0),
    (16, 1),
    (18, 1),
    (20, 1),
    (22, 1),
    (24, 2),
    (28, 2),
    (32, 3),
    (40, 3),
    (48, 4),
    (64, 6),
    (128, 7),
    (256, 8),
    (512, 9),
    (1024, 10),
    (2048, 11),
    (4096, 12),
    (8192, 13),
    (16384, 14),
    (32768, 15),
    (65536, 16),
];
/// Match_Length codes: (baseline, extra bits).
const ML_CODES: [(u32, u8); 53] = [
    (3, 0),
    (4, 0),
    (5, 0),
    (6, 0),
    (7, 0),
    (8, 0),
    (9, 0),
    (10, 0),
    (11, 0),
    (12, 0),
    (13, 0),
    (14, 0),
    (15, 0),
    (16, 0),
    (17, 0),
    (18, 0),
    (19, 0),
    (20, 0),
    (21, 0),
    (22, 0),
    (23, 0),
    (24, 0),
    (25, 0),
    (26, 0),
    (27, 0),
    (28, 0),
    (29, 0),
    (30, 0),
    (31, 0),
    (32, 0),
    (33, 0),
    (34, 0),
    (35, 1),
    (37, 1),
    (39, 1),
    (41, 1),
    (43, 2),
    (47, 2),
    (51, 3),
    (59, 3),
    (67, 4),
    (83, 4),
    (99, 5),
    (131, 7),
    (259, 8),
    (515, 9),
    (1027, 10),
    (2051, 11),
    (4099, 12),
    (8195, 13),
    (16387, 14),
    (32771, 15),
    (65539, 16),
];

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

fn overflow(claimed: usize) -> BzError {
    BzError::Overflow {
        format: FORMAT,
        claimed,
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A fallibly allocated vector of `n` copies of `v`.
fn try_vec<T: Clone>(n: usize, v: T) -> Result<Vec<T>, BzError> {
    let mut x = Vec::new();
    x.try_reserve_exact(n).map_err(|_| BzError::OutOfMemory {
        format: FORMAT,
        bytes: n * core::mem::size_of::<T>(),
    })?;
    x.resize(n, v);
    Ok(x)
}

/// Decodes `input` (zstd and skippable frames) into `out`, which must come out
/// exactly full.
pub(super) fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), BzError> {
    let mut dec = Decoder::new()?;
    let mut pos = 0usize;
    let mut written = 0usize;
    while pos < input.len() {
        let magic = input.get(pos..pos + 4).map(le32).ok_or_else(truncated)?;
        if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
            let size = input
                .get(pos + 4..pos + 8)
                .map(le32)
                .ok_or_else(truncated)?;
            pos = (pos + 8)
                .checked_add(size as usize)
                .filter(|&e| e <= input.len())
                .ok_or_else(truncated)?;
            continue;
        }
        if magic != FRAME_MAGIC {
            return Err(corrupt(pos, "no zstd frame magic"));
        }
        (pos, written) = dec.frame(input, pos + 4, out, written)?;
    }
    if written != out.len() {
        return Err(BzError::SizeMismatch {
            got: written,
            claimed: out.len(),
        });
    }
    Ok(())
}

/// Reads bits forwards, least significant first (FSE table descriptions).
struct FwdBits<'a> {
    data: &'a [u8],
    bit: usize,
}

impl FwdBits<'_> {
    /// The next `n` (<= 16) bits, zero-padded past the end.
    fn peek(&self, n: u32) -> u32 {
        let byte = self.bit / 8;
        let mut w = [0u8; 4];
        for (k, slot) in w.iter_mut().enumerate() {
            *slot = self.data.get(byte + k).copied().unwrap_or(0);
        }
        (u32::from_le_bytes(w) >> (self.bit % 8)) & ((1 << n) - 1)
    }

    fn consume(&mut self, n: u32) -> Result<(), &'static str> {
        self.bit += n as usize;
        if self.bit > self.data.len() * 8 {
            return Err("table description runs past its data");
        }
        Ok(())
    }

    fn read(&mut self, n: u32) -> Result<u32, &'static str> {
        let v = self.peek(n);
        self.consume(n)?;
        Ok(v)
    }
}

/// Reads bits backwards from the end of a stream whose last byte holds a 1-bit
/// end marker, most significant first (Huffman and FSE bitstreams). Reading past
/// the start yields zeros and sets `over`.
struct RevBits<'a> {
    data: &'a [u8],
    /// Bits not yet read: the next read takes the `n` bits just below this.
    left: usize,
    over: bool,
}

impl<'a> RevBits<'a> {
    fn new(data: &'a [u8]) -> Option<Self> {
        let last = *data.last()?;
        if last == 0 {
            return None;
        }
        let left = (data.len() - 1) * 8 + (7 - last.leading_zeros() as usize);
        Some(RevBits {
            data,
            left,
            over: false,
        })
    }

    /// 64 bits of the stream starting at bit `start` (zero past the end).
    #[inline(always)]
    fn window(&self, start: usize) -> u64 {
        let b = start / 8;
        let mut w = [0u8; 8];
        let end = (b + 8).min(self.data.len());
        if b < end {
            w[..end - b].copy_from_slice(&self.data[b..end]);
        }
        u64::from_le_bytes(w) >> (start % 8)
    }

    /// The next `n` (<= 56) bits without consuming them.
    #[inline(always)]
    fn peek(&self, n: u32) -> u64 {
        let n = n as usize;
        if n == 0 {
            return 0;
        }
        if self.left >= n {
            self.window(self.left - n) & ((1u64 << n) - 1)
        } else {
            (self.window(0) & ((1u64 << self.left) - 1)) << (n - self.left)
        }
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        let n = n as usize;
        if n > self.left {
            self.over = true;
            self.left = 0;
        } else {
            self.left -= n;
        }
    }

    #[inline(always)]
    fn read(&mut self, n: u32) -> u64 {
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// A stream must be used up exactly.
    fn done(&self) -> bool {
        !self.over && self.left == 0
    }
}

#[derive(Clone, Copy, Default)]
struct FseEntry {
    sym: u8,
    bits: u8,
    base: u16,
}

/// An FSE decoding table.
struct Fse {
    al: u32,
    table: Vec<FseEntry>,
    valid: bool,
}

impl Fse {
    fn new(max_al: u32) -> Result<Self, BzError> {
        Ok(Fse {
            al: 0,
            table: try_vec(1 << max_al, FseEntry::default())?,
            valid: false,
        })
    }

    /// One symbol, no bits (RLE mode).
    fn rle(&mut self, sym: u8) {
        self.al = 0;
        self.table[0] = FseEntry {
            sym,
            bits: 0,
            base: 0,
        };
        self.valid = true;
    }

    /// Builds the table from normalized counts (-1 means "less than 1").
    fn build(&mut self, probs: &[i16], al: u32) -> Result<(), &'static str> {
        let size = 1usize << al;
        if size > self.table.len() {
            return Err("accuracy log too large");
        }
        let mut next = [0u16; 256];
        let mut high = size; // positions >= high hold the "less than 1" symbols
        for (s, &p) in probs.iter().enumerate() {
            if p == -1 {
                high = high
                    .checked_sub(1)
                    .ok_or("too many low-probability symbols")?;
                self.table[high] = FseEntry {
                    sym: s as u8,
                    bits: 0,
                    base: 0,
                };
                next[s] = 1;
            }
        }
        let step = (size >> 1) + (size >> 3) + 3;
        let mask = size - 1;
        let mut pos = 0usize;
        let mut placed = 0usize;
        for (s, &p) in probs.iter().enumerate() {
            if p <= 0 {
                continue;
            }
            for _ in 0..p {
                placed += 1;
                if placed > high {
                    return Err("probabilities exceed the table");
                }
                self.table[pos].sym = s as u8;
                pos = (pos + step) & mask;
                while pos >= high {
                    pos = (pos + step) & mask;
                }
            }
            next[s] = p as u16;
        }
        if placed != high || pos != 0 {
            return Err("probabilities do not fill the table");
        }
        for e in &mut self.table[..size] {
            let ns = next[usize::from(e.sym)];
            next[usize::from(e.sym)] += 1;
            let bits = al - (15 - ns.leading_zeros());
            e.bits = bits as u8;
            e.base = ((u32::from(ns) << bits) - size as u32) as u16;
        }
        self.al = al;
        self.valid = true;
        Ok(())
    }

    /// Reads an FSE table description (RFC 8878 4.1.1) from the start of `data`
    /// and builds the table; returns the bytes used.
    fn read(&mut self, data: &[u8], max_sym: usize, max_al: u32) -> Result<usize, &'static str> {
        let mut br = FwdBits { data, bit: 0 };
        let al = br.read(4)? + 5;
        if al > max_al {
            return Err("accuracy log too large");
        }
        let mut probs = [0i16; 256];
        let mut remaining: i32 = (1 << al) + 1;
        let mut threshold: i32 = 1 << al;
        let mut nbits = al + 1;
        let mut sym = 0usize;
        while remaining > 1 {
            if sym > max_sym {
                return Err("too many symbols");
            }
            let max = 2 * threshold - 1 - remaining;
            let v = br.peek(nbits) as i32;
            let count = if (v & (threshold - 1)) < max {
                br.consume(nbits - 1)?;
                v & (threshold - 1)
            } else {
                br.consume(nbits)?;
                let c = v & (2 * threshold - 1);
                if c >= threshold { c - max } else { c }
            };
            let p = count - 1;
            remaining -= p.abs();
            if remaining < 1 {
                return Err("probabilities exceed the table");
            }
            probs[sym] = p as i16;
            sym += 1;
            if p == 0 {
                loop {
                    let repeat = br.read(2)?;
                    sym += repeat as usize;
                    if sym > max_sym + 1 {
                        return Err("too many symbols");
                    }
                    if repeat != 3 {
                        break;
                    }
                }
            }
            while remaining < threshold {
                nbits -= 1;
                threshold >>= 1;
            }
        }
        self.build(&probs[..sym], al)?;
        Ok(br.bit.div_ceil(8))
    }

    #[inline(always)]
    fn init(&self, br: &mut RevBits<'_>) -> usize {
        br.read(self.al) as usize
    }

    #[inline(always)]
    fn sym(&self, state: usize) -> u8 {
        self.table[state].sym
    }

    #[inline(always)]
    fn update(&self, state: &mut usize, br: &mut RevBits<'_>) {
        let e = self.table[*state];
        *state = usize::from(e.base) + br.read(u32::from(e.bits)) as usize;
    }
}

/// A Huffman decoding table for literals: `1 << max_bits` entries of (symbol, bits).
struct Huffman {
    max_bits: u32,
    table: Vec<(u8, u8)>,
    valid: bool,
}

impl Huffman {
    /// Reads a Huffman tree description (RFC 8878 4.2.1); returns the bytes used.
    fn read(&mut self, data: &[u8], wfse: &mut Fse) -> Result<usize, &'static str> {
        let hb = usize::from(*data.first().ok_or("empty Huffman description")?);
        let mut weights = [0u8; 256];
        let (mut n, used) = if hb < 128 {
            // FSE-compressed weights, two interleaved states.
            let comp = data
                .get(1..1 + hb)
                .ok_or("Huffman description runs past its data")?;
            let t = wfse.read(comp, 255, HUF_WEIGHT_MAX_AL)?;
            let mut br = RevBits::new(&comp[t..]).ok_or("bad Huffman weight stream")?;
            let mut s1 = wfse.init(&mut br);
            let mut s2 = wfse.init(&mut br);
            let mut n = 0usize;
            loop {
                if n + 2 > 255 {
                    return Err("too many Huffman weights");
                }
                weights[n] = wfse.sym(s1);
                n += 1;
                wfse.update(&mut s1, &mut br);
                if br.over {
                    weights[n] = wfse.sym(s2);
                    n += 1;
                    break;
                }
                weights[n] = wfse.sym(s2);
                n += 1;
                wfse.update(&mut s2, &mut br);
                if br.over {
                    weights[n] = wfse.sym(s1);
                    n += 1;
                    break;
                }
            }
            (n, 1 + hb)
        } else {
            let n = hb - 127;
            let bytes = data
                .get(1..1 + n.div_ceil(2))
                .ok_or("Huffman description runs past its data")?;
            for (i, w) in weights[..n].iter_mut().enumerate() {
                let b = bytes[i / 2];
                *w = if i % 2 == 0 { b >> 4 } else { b & 0xF };
            }
            (n, 1 + n.div_ceil(2))
        };
        // The last weight is implied: it completes the sum to a power of two.
        let mut sum = 0u32;
        for &w in &weights[..n] {
            if u32::from(w) > HUF_MAX_BITS {
                return Err("Huffman weight too large");
            }
            if w > 0 {
                sum += 1 << (w - 1);
            }
        }
        if sum == 0 {
            return Err("no Huffman weights");
        }
        let max_bits = 32 - sum.leading_zeros(); // highbit(sum) + 1
        if max_bits > HUF_MAX_BITS {
            return Err("Huffman code too long");
        }
        let rest = (1u32 << max_bits) - sum;
        if !rest.is_power_of_two() {
            return Err("Huffman weights do not complete a tree");
        }
        weights[n] = (32 - rest.leading_zeros()) as u8;
        n += 1;
        // Codes are assigned by increasing weight, then by symbol.
        let size = 1usize << max_bits;
        let mut pos = 0usize;
        for w in 1..=max_bits as u8 {
            let count = 1usize << (w - 1);
            let bits = max_bits as u8 + 1 - w;
            for (s, _) in weights[..n].iter().enumerate().filter(|&(_, &x)| x == w) {
                self.table[pos..pos + count].fill((s as u8, bits));
                pos += count;
            }
        }
        if pos != size {
            // Unreachable by the weight arithmetic above; kept as an error, not a panic.
            return Err("Huffman weights do not complete a tree");
        }
        self.max_bits = max_bits;
        self.valid = true;
        Ok(used)
    }

    /// Decodes one Huffman stream, which must fill `out` and be used up exactly.
    fn stream(&self, data: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
        let mut br = RevBits::new(data).ok_or("bad Huffman stream")?;
        for b in out {
            let (s, bits) = self.table[br.peek(self.max_bits) as usize];
            br.consume(u32::from(bits));
            *b = s;
        }
        if !br.done() {
            return Err("Huffman stream size does not match");
        }
        Ok(())
    }
}

/// State of one decode call: buffers, and the tables and repeat offsets that carry
/// from block to block within a frame.
struct Decoder {
    lits: Vec<u8>,
    ll: Fse,
    of: Fse,
    ml: Fse,
    weights: Fse,
    huf: Huffman,
    reps: [usize; 3],
}

impl Decoder {
    fn new() -> Result<Self, BzError> {
        Ok(Decoder {
            lits: try_vec(BLOCK_MAX, 0u8)?,
            ll: Fse::new(LL_MAX_AL)?,
            of: Fse::new(OF_MAX_AL)?,
            ml: Fse::new(ML_MAX_AL)?,
            weights: Fse::new(HUF_WEIGHT_MAX_AL)?,
            huf: Huffman {
                max_bits: 0,
                table: try_vec(1 << HUF_MAX_BITS, (0u8, 0u8))?,
                valid: false,
            },
            reps: [1, 4, 8],
        })
    }

    /// Decodes the frame whose header starts at `input[at]` (after the magic) into
    /// `out[written..]`; returns (input position after the frame, output length).
    fn frame(
        &mut self,
        input: &[u8],
        at: usize,
        out: &mut [u8],
        mut written: usize,
    ) -> Result<(usize, usize), BzError> {
        let fhd = *input.get(at).ok_or_else(truncated)?;
        if fhd & 0x08 != 0 {
            return Err(corrupt(at, "reserved frame header bit set"));
        }
        let single_segment = fhd & 0x20 != 0;
        let mut pos = at + 1 + usize::from(!single_segment); // skip the window descriptor
        let dict_len = [0, 1, 2, 4][usize::from(fhd & 3)];
        let dict = input.get(pos..pos + dict_len).ok_or_else(truncated)?;
        if dict.iter().any(|&b| b != 0) {
            return Err(BzError::UnsupportedFeature {
                format: FORMAT,
                what: "dictionary",
            });
        }
        pos += dict_len;
        let fcs_len = match fhd >> 6 {
            0 => usize::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let fcs = input.get(pos..pos + fcs_len).ok_or_else(truncated)?;
        let content_size = match fcs_len {
            0 => None,
            2 => Some(u64::from(u16::from_le_bytes([fcs[0], fcs[1]])) + 256),
            _ => {
                let mut b = [0u8; 8];
                b[..fcs_len].copy_from_slice(fcs);
                Some(u64::from_le_bytes(b))
            }
        };
        pos += fcs_len;

        let frame_start = written;
        let claimed = out.len();
        self.reps = [1, 4, 8];
        self.ll.valid = false;
        self.of.valid = false;
        self.ml.valid = false;
        self.huf.valid = false;
        loop {
            let hdr = input.get(pos..pos + 3).ok_or_else(truncated)?;
            let hdr = u32::from(hdr[0]) | u32::from(hdr[1]) << 8 | u32::from(hdr[2]) << 16;
            let last = hdr & 1 != 0;
            let size = (hdr >> 3) as usize;
            let block_at = pos;
            pos += 3;
            if size > BLOCK_MAX {
                return Err(corrupt(block_at, "block larger than 128 KiB"));
            }
            match (hdr >> 1) & 3 {
                0 => {
                    let data = input.get(pos..pos + size).ok_or_else(truncated)?;
                    let end = written + size;
                    out.get_mut(written..end)
                        .ok_or(overflow(claimed))?
                        .copy_from_slice(data);
                    written = end;
                    pos += size;
                }
                1 => {
                    let b = *input.get(pos).ok_or_else(truncated)?;
                    let end = written + size;
                    out.get_mut(written..end).ok_or(overflow(claimed))?.fill(b);
                    written = end;
                    pos += 1;
                }
                2 => {
                    let data = input.get(pos..pos + size).ok_or_else(truncated)?;
                    written = self.block(data, pos, out, frame_start, written)?;
                    pos += size;
                }
                _ => return Err(corrupt(block_at, "reserved block type")),
            }
            if last {
                break;
            }
        }
        if content_size.is_some_and(|c| c != (written - frame_start) as u64) {
            return Err(corrupt(at, "frame content size differs from its data"));
        }
        if fhd & 0x04 != 0 {
            let stored = input.get(pos..pos + 4).map(le32).ok_or_else(truncated)?;
            if xxh64(&out[frame_start..written]) as u32 != stored {
                return Err(corrupt(pos, "content checksum mismatch"));
            }
            pos += 4;
        }
        Ok((pos, written))
    }

    /// Decodes one compressed block (`data`, found at payload offset `at`) into
    /// `out[written..]`; returns the new output length.
    fn block(
        &mut self,
        data: &[u8],
        at: usize,
        out: &mut [u8],
        frame_start: usize,
        written: usize,
    ) -> Result<usize, BzError> {
        let (nlits, used) = self.literals(data).map_err(|why| corrupt(at, why))?;
        let seq_at = at + used;
        self.sequences(&data[used..], nlits, out, frame_start, written)
            .map_err(|e| match e {
                SeqError::Corrupt(why) => corrupt(seq_at, why),
                SeqError::Overflow => overflow(out.len()),
            })
    }

    /// The literals section: fills `self.lits`; returns (literal count, bytes used).
    fn literals(&mut self, data: &[u8]) -> Result<(usize, usize), &'static str> {
        const SHORT: &str = "literals section runs past the block";
        let b = |i: usize| data.get(i).copied().map(usize::from).ok_or(SHORT);
        let b0 = b(0)?;
        let kind = b0 & 3;
        let size_format = (b0 >> 2) & 3;
        if kind < 2 {
            // Raw or RLE.
            let (n, hl) = match size_format {
                0 | 2 => (b0 >> 3, 1),
                1 => ((b0 >> 4) | b(1)? << 4, 2),
                _ => ((b0 >> 4) | b(1)? << 4 | b(2)? << 12, 3),
            };
            if n > BLOCK_MAX {
                return Err("too many literals");
            }
            if kind == 0 {
                let src = data.get(hl..hl + n).ok_or(SHORT)?;
                self.lits[..n].copy_from_slice(src);
                return Ok((n, hl + n));
            }
            let v = b(hl)? as u8;
            self.lits[..n].fill(v);
            return Ok((n, hl + 1));
        }
        // Huffman-coded (kind 2 carries a tree; kind 3 reuses the last one).
        let (four, hl, bits) = match size_format {
            0 => (false, 3, 10),
            1 => (true, 3, 10),
            2 => (true, 4, 14),
            _ => (true, 5, 18),
        };
        let mut packed = 0u64;
        for i in 0..hl {
            packed |= (b(i)? as u64) << (8 * i);
        }
        packed >>= 4;
        let mask = (1u64 << bits) - 1;
        let n = (packed & mask) as usize;
        let csize = ((packed >> bits) & mask) as usize;
        if n > BLOCK_MAX {
            return Err("too many literals");
        }
        let mut comp = data.get(hl..hl + csize).ok_or(SHORT)?;
        if kind == 2 {
            let t = self.huf.read(comp, &mut self.weights)?;
            comp = comp.get(t..).ok_or(SHORT)?;
        } else if !self.huf.valid {
            return Err("treeless literals without a previous Huffman table");
        }
        let lits = &mut self.lits[..n];
        if !four {
            self.huf.stream(comp, lits)?;
        } else {
            if comp.len() < 6 {
                return Err(SHORT);
            }
            let s1 = usize::from(u16::from_le_bytes([comp[0], comp[1]]));
            let s2 = usize::from(u16::from_le_bytes([comp[2], comp[3]]));
            let s3 = usize::from(u16::from_le_bytes([comp[4], comp[5]]));
            let streams = &comp[6..];
            if s1 + s2 + s3 > streams.len() {
                return Err("Huffman jump table runs past the literals");
            }
            let seg = n.div_ceil(4);
            if 3 * seg > n {
                return Err("too few literals for four streams");
            }
            let (d1, r) = streams.split_at(s1);
            let (d2, r) = r.split_at(s2);
            let (d3, d4) = r.split_at(s3);
            let (o1, r) = lits.split_at_mut(seg);
            let (o2, r) = r.split_at_mut(seg);
            let (o3, o4) = r.split_at_mut(seg);
            self.huf.stream(d1, o1)?;
            self.huf.stream(d2, o2)?;
            self.huf.stream(d3, o3)?;
            self.huf.stream(d4, o4)?;
        }
        Ok((n, hl + csize))
    }

    /// Sets up one sequence table according to its compression mode; returns the
    /// bytes of table description used.
    fn table(
        fse: &mut Fse,
        mode: u8,
        data: &[u8],
        default: &[i16],
        default_al: u32,
        max_sym: usize,
        max_al: u32,
    ) -> Result<usize, &'static str> {
        match mode {
            0 => {
                fse.build(default, default_al)?;
                Ok(0)
            }
            1 => {
                let s = *data.first().ok_or("sequence tables run past the block")?;
                if usize::from(s) > max_sym {
                    return Err("bad RLE sequence symbol");
                }
                fse.rle(s);
                Ok(1)
            }
            2 => fse.read(data, max_sym, max_al),
            _ => {
                if !fse.valid {
                    return Err("repeated sequence table without a previous one");
                }
                Ok(0)
            }
        }
    }

    /// The sequences section: decodes and executes the sequences, interleaving
    /// literal runs and matches into `out`; returns the new output length.
    fn sequences(
        &mut self,
        data: &[u8],
        nlits: usize,
        out: &mut [u8],
        frame_start: usize,
        mut pos: usize,
    ) -> Result<usize, SeqError> {
        use SeqError::Corrupt as C;
        let block_limit = (pos + BLOCK_MAX).min(out.len());
        let b0 = usize::from(*data.first().ok_or(C("no sequences header"))?);
        let b = |i: usize| {
            data.get(i)
                .copied()
                .map(usize::from)
                .ok_or(C("sequences header runs past the block"))
        };
        let (nseq, mut p) = match b0 {
            0..128 => (b0, 1),
            128..255 => (((b0 - 128) << 8) + b(1)?, 2),
            _ => (b(1)? + (b(2)? << 8) + 0x7F00, 3),
        };
        let lits = &self.lits[..nlits];
        let mut lp = 0usize;
        if nseq > 0 {
            let modes = b(p)? as u8;
            p += 1;
            if modes & 3 != 0 {
                return Err(C("reserved sequence mode bits set"));
            }
            let rest = |p: usize| data.get(p..).unwrap_or(&[]);
            p += Self::table(
                &mut self.ll,
                modes >> 6,
                rest(p),
                &LL_DEFAULT,
                6,
                LL_MAX_SYM,
                LL_MAX_AL,
            )
            .map_err(C)?;
            p += Self::table(
                &mut self.of,
                (modes >> 4) & 3,
                rest(p),
                &OF_DEFAULT,
                5,
                OF_MAX_SYM,
                OF_MAX_AL,
            )
            .map_err(C)?;
            p += Self::table(
                &mut self.ml,
                (modes >> 2) & 3,
                rest(p),
                &ML_DEFAULT,
                6,
                ML_MAX_SYM,
                ML_MAX_AL,
            )
            .map_err(C)?;
            let mut br = RevBits::new(rest(p)).ok_or(C("bad sequence bitstream"))?;
            let (ll_t, of_t, ml_t) = (&self.ll, &self.of, &self.ml);
            let mut ll_s = ll_t.init(&mut br);
            let mut of_s = of_t.init(&mut br);
            let mut ml_s = ml_t.init(&mut br);
            let mut reps = self.reps;
            for i in 0..nseq {
                let of_code = u32::from(of_t.sym(of_s));
                let (ml_base, ml_bits) = ML_CODES[usize::from(ml_t.sym(ml_s))];
                let (ll_base, ll_bits) = LL_CODES[usize::from(ll_t.sym(ll_s))];
                if of_code > 31 {
                    return Err(C("offset code too large"));
                }
                let of_value = (1u64 << of_code) + br.read(of_code);
                let ml = (u64::from(ml_base) + br.read(u32::from(ml_bits))) as usize;
                let ll = (u64::from(ll_base) + br.read(u32::from(ll_bits))) as usize;
                if i + 1 < nseq {
                    ll_t.update(&mut ll_s, &mut br);
                    ml_t.update(&mut ml_s, &mut br);
                    of_t.update(&mut of_s, &mut br);
                }
                if br.over {
                    return Err(C("sequence bitstream ends early"));
                }
                let offset = if of_value > 3 {
                    let o = (of_value - 3) as usize;
                    reps = [o, reps[0], reps[1]];
                    o
                } else {
                    // Repeat offsets; with no literals the codes shift by one.
                    match of_value as usize - usize::from(ll != 0) {
                        0 => reps[0],
                        1 => {
                            reps = [reps[1], reps[0], reps[2]];
                            reps[0]
                        }
                        2 => {
                            reps = [reps[2], reps[0], reps[1]];
                            reps[0]
                        }
                        _ => {
                            let o = reps[0] - 1;
                            if o == 0 {
                                return Err(C("zero match offset"));
                            }
                            reps = [o, reps[0], reps[1]];
                            o
                        }
                    }
                };
                // Literals, then the match.
                let run = lits
                    .get(lp..lp + ll)
                    .ok_or(C("sequences use more literals than decoded"))?;
                lp += ll;
                let end = pos + ll + ml;
                if end > block_limit {
                    return Err(if end > out.len() {
                        SeqError::Overflow
                    } else {
                        C("block decompresses to more than 128 KiB")
                    });
                }
                out[pos..pos + ll].copy_from_slice(run);
                pos += ll;
                if offset > pos - frame_start {
                    return Err(C("match offset before the frame's start"));
                }
                let from = pos - offset;
                if offset >= ml {
                    out.copy_within(from..from + ml, pos);
                } else {
                    for k in 0..ml {
                        out[pos + k] = out[from + k];
                    }
                }
                pos += ml;
            }
            if !br.done() {
                return Err(C("sequence bitstream size does not match"));
            }
            self.reps = reps;
        } else if p != data.len() {
            return Err(C("bytes after an empty sequences section"));
        }
        // The literals left over after the last sequence.
        let tail = &lits[lp..];
        let end = pos + tail.len();
        if end > out.len() {
            return Err(SeqError::Overflow);
        }
        out[pos..end].copy_from_slice(tail);
        Ok(end)
    }
}

enum SeqError {
    Corrupt(&'static str),
    Overflow,
}

/// XXH64 with seed 0 (the zstd content checksum keeps its low 32 bits).
fn xxh64(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(h: u64, v: u64) -> u64 {
        (h ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    let lane = |c: &[u8]| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        let (stripes, tail) = data.as_chunks::<32>();
        for s in stripes {
            for (k, acc) in v.iter_mut().enumerate() {
                *acc = round(*acc, lane(&s[8 * k..]));
            }
        }
        rest = tail;
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for x in v {
            h = merge(h, x);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(data.len() as u64);
    let (lanes, tail) = rest.as_chunks::<8>();
    for l in lanes {
        h = (h ^ round(0, u64::from_le_bytes(*l)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
    }
    let mut rest = tail;
    if rest.len() >= 4 {
        let w = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
        h = (h ^ w.wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h = (h ^ u64::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_distributions_fill_their_tables() {
        for (d, al) in [
            (&LL_DEFAULT[..], 6),
            (&ML_DEFAULT[..], 6),
            (&OF_DEFAULT[..], 5),
        ] {
            let sum: i32 = d.iter().map(|&p| i32::from(p.abs())).sum();
            assert_eq!(sum, 1 << al);
            let mut f = Fse::new(9).unwrap();
            f.build(d, al).unwrap();
        }
    }

    #[test]
    fn xxh64_known_values() {
        assert_eq!(xxh64(b""), 0xEF46_DB37_51D8_E999);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in [1, 3, 4, 7, 8, 31, 32, 33, 63, 100, 1000] {
            let mut h = twox_hash::XxHash64::with_seed(0);
            core::hash::Hasher::write(&mut h, &data[..n]);
            assert_eq!(xxh64(&data[..n]), core::hash::Hasher::finish(&h), "{n}");
        }
    }

    #[test]
    fn rev_bits_reads_backwards() {
        // 0b0000_0001 (marker only) then nothing: zero bits.
        let r = RevBits::new(&[0x01]).unwrap();
        assert_eq!(r.left, 0);
        assert!(RevBits::new(&[0x00]).is_none());
        assert!(RevBits::new(&[]).is_none());
        // Bits below the marker, most significant first: 0x35 = 0b0011_0101.
        let mut r = RevBits::new(&[0x35]).unwrap();
        assert_eq!(r.read(2), 0b10);
        assert_eq!(r.read(3), 0b101);
        assert!(r.done());
        assert_eq!(r.read(2), 0);
        assert!(r.over);
    }
}
