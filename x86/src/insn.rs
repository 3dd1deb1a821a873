//! A small x86 instruction decoder: instruction *lengths* for the exits where the CPU
//! does not report them, and the *shape* of the memory accesses keel emulates.
//!
//! # Why keel decodes at all
//!
//! 1. **Lengths.** After an intercepted CPUID, HLT, VMCALL/VMMCALL, RDMSR/WRMSR,
//!    RDTSC/RDTSCP, XSETBV, INVD/WBINVD, MOV to/from CR/DR, INT n, ... keel must move the
//!    guest's RIP past the instruction. VMX reports the length in the VM-exit
//!    instruction-length field, and SVM with "NRIP save" reports the next RIP, but QEMU's
//!    TCG SVM has no NRIP save (nor decode assists; it even reports RDTSCP as RDTSC):
//!    there keel reads up to 15 bytes at the guest's RIP and decodes them. The decoded
//!    kind also lets keel check that the bytes are the instruction the exit claims (a
//!    guest can rewrite its code between the exit and our read; the exit reason is the
//!    truth, the bytes are an allegation).
//! 2. **MMIO.** A guest touching unbacked guest-physical memory gets a nested page
//!    fault (EPT violation / NPF) with the GPA; keel completes the access itself (reads
//!    return all-ones, writes are dropped). For that it needs the access width, its
//!    direction, the register or immediate operand, and the length: [`InsnKind::Load`]
//!    and [`InsnKind::Store`].
//! 3. **Writable page tables.** A PV guest kernel writes its own page-table pages,
//!    which it maps read-only, and keel carries the write out after validating the new
//!    entry (Xen's `ptwr_emulated_update`). Linux does those writes with MOV, XCHG and
//!    (LOCK) CMPXCHG: [`InsnKind::Store`], [`InsnKind::Xchg`], [`InsnKind::Cmpxchg`].
//!    The caller knows the faulting linear address from CR2, so the decoder reports
//!    the operands' registers and sizes, never an effective address.
//!
//! # What is decoded
//!
//! * All legacy prefixes (SDM Vol. 2A §2.1.1; APM Vol. 3 §1.2): LOCK `F0`, REPNE `F2`,
//!   REP `F3`, segment overrides `2E 36 3E 26 64 65`, operand size `66`, address size
//!   `67`, in any order and number. The last of `F2`/`F3` wins, as does the last
//!   segment override.
//! * REX `40`-`4F` in 64-bit mode only (in the other modes those bytes are INC/DEC).
//!   A REX counts only when it immediately precedes the opcode; a REX followed by a
//!   legacy prefix is ignored, as the hardware does (SDM Vol. 2A §2.2.1).
//! * The one-byte map and the `0F` two-byte map completely, the `0F 38` and `0F 3A`
//!   three-byte maps by their uniform shape (ModRM; `0F 3A` adds an imm8), and the
//!   3DNow! `0F 0F` escape (ModRM + opcode-suffix byte) — SDM Vol. 2D Appendix A,
//!   Tables, and the opcode-extension groups of Table A-6.
//! * ModRM/SIB/displacement (SDM Vol. 2A §2.1.5, Tables 2-1 to 2-3): 16-bit addressing
//!   (`mod=00 rm=110` is a bare disp16) and 32/64-bit addressing (SIB when `rm=100`;
//!   `mod=00 rm=101` is disp32, RIP-relative in 64-bit mode; SIB `base=101` with
//!   `mod=00` is disp32 without a base). `67` toggles the address size: 16<->32 in the
//!   16/32-bit modes, 64->32 in 64-bit mode. These special cases look at the 3-bit
//!   fields only: REX.B never changes a length.
//! * MOV to/from CR/DR (`0F 20`-`0F 23`) ignore the ModRM `mod` bits and always name a
//!   register (SDM Vol. 2B "MOV—Move to/from Control Registers"): no SIB, no
//!   displacement, whatever `mod` says.
//! * Immediates: imm8, imm16 (`RET/RETF imm16`), `ENTER` (imm16 + imm8), imm16/32 by
//!   operand size (never 64: REX.W still takes an imm32 except for `B8+r`), imm64 for
//!   `REX.W B8+r`, far pointers (`9A`/`EA`, 16/32-bit modes), the `A0`-`A3` moffs whose
//!   width is the *address* size, `F6 /0,/1` and `F7 /0,/1` (TEST) taking an
//!   immediate that the rest of groups 3 lack, and the SSE4a `66/F2 0F 78` pair of
//!   imm8s.
//! * Opcodes that do not exist in 64-bit mode (`06 07 0E 16 17 1E 1F 27 2F 37 3F 60 61
//!   82 9A CE D4 D5 EA`) are [`DecodeError::Invalid`] there.
//! * The 15-byte limit (SDM Vol. 2A §2.3.11, APM Vol. 3 §1.1): an instruction longer
//!   than that raises #GP on the hardware and is [`DecodeError::TooLong`] here.
//!
//! # What is not
//!
//! * VEX (`C4`/`C5`), EVEX (`62`) and XOP (`8F` with ModRM.reg != 0) are
//!   [`DecodeError::Unsupported`]; in 16/32-bit modes `C4`/`C5`/`62` are LES/LDS/BOUND
//!   only when the next byte's `mod` is not `11`, exactly as the CPU tells them apart.
//!   keel hides AVX (see `cpuid_policy`), so a guest has no business using them.
//! * Near branches `E8`/`E9`/`0F 8x` with a `66` prefix (and no REX.W) in 64-bit mode:
//!   Intel ignores the prefix (rel32), AMD honours it (rel16). The length depends on the
//!   vendor, so this is [`DecodeError::Unsupported`] rather than a guess.
//! * `D6` (the undocumented SALC) is [`DecodeError::Invalid`].
//! * Validity beyond what the length needs is not checked: a LOCK on an instruction that
//!   does not take one, an undefined group member (`FE /2`), a mandatory prefix that makes
//!   an SSE opcode undefined, a CR/DR number the CPU rejects: the CPU would raise #UD
//!   before any exit or memory access, so keel never sees them. The one exception is a
//!   LOCKed MOV decoded as [`InsnKind::Load`]/[`InsnKind::Store`]: it is #UD, and keel
//!   must not emulate it, so it is [`DecodeError::Invalid`]. XCHG and CMPXCHG with a
//!   memory operand are among the instructions LOCK is defined for (SDM Vol. 2A
//!   "LOCK—Assert LOCK# Signal Prefix"), so [`InsnKind::Xchg`] and
//!   [`InsnKind::Cmpxchg`] take it.
//! * Emulated memory instructions are MOV (`88 89 8A 8B C6 /0 C7 /0 A0-A3`), MOVZX/MOVSX
//!   (`0F B6 B7 BE BF`) and MOVSXD (`63` in 64-bit mode), XCHG (`86 87`) and CMPXCHG
//!   (`0F B0 B1`), each with a memory operand. Anything else that touches memory
//!   (string ops, ALU read-modify-write, XADD, CMPXCHG8B/16B, MOVNTI, SSE moves)
//!   decodes to [`InsnKind::Other`] with its correct length, and the caller decides
//!   what an access by it means (an error in the guest, until needed).
//!
//! # Invariants
//!
//! * `decode` is total: it never panics, for any bytes and mode.
//! * `Ok(insn)` implies `1 <= insn.len <= 15` and `insn.len <= bytes.len()`, and only
//!   the first `insn.len` bytes were looked at: appending bytes changes nothing.
//! * `Err(Truncated)` means the bytes ran out before the instruction did, so
//!   `bytes.len() < 15`; given the next bytes the answer may change. A caller that
//!   supplies 15 bytes (or all bytes up to an unmapped page) never sees it.
//! * Every other answer is final: more bytes never change `Ok`, `TooLong`, `Invalid`
//!   or `Unsupported`.
//!
//! The decoder is pure: no `unsafe`, no allocation, `core` only.

use core::fmt;

/// The longest x86 instruction the CPU accepts (SDM Vol. 2A §2.3.11).
pub const MAX_INSN_LEN: usize = 15;

/// The mode the guest's code runs in: it sets the default operand and address sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMode {
    /// Real-address or virtual-8086 mode: 16-bit defaults.
    Real16,
    /// Protected mode with CS.D = 0: 16-bit defaults.
    Prot16,
    /// Protected or compatibility mode with CS.D = 1: 32-bit defaults.
    Prot32,
    /// 64-bit mode (EFER.LMA = 1 and CS.L = 1): 32-bit operands, 64-bit addresses, REX.
    /// (`From<hvm::CpuMode>` derives the mode from a vCPU's state.)
    Long64,
}

/// A REP-class prefix; only the last of `F2`/`F3` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepPrefix {
    /// `F3`: REP/REPE, also the mandatory prefix of PAUSE, WBNOINVD, POPCNT, ...
    Rep,
    /// `F2`: REPNE.
    Repne,
}

/// A segment-override prefix (in 64-bit mode only FS and GS change the address, but
/// every one is recorded as seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

/// A REX prefix byte (`0100WRXB`, SDM Vol. 2A §2.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rex(u8);

impl Rex {
    /// The byte itself, `0x40..=0x4F`.
    pub fn raw(self) -> u8 {
        self.0
    }
    /// REX.W: 64-bit operand size.
    pub fn w(self) -> bool {
        self.0 & 8 != 0
    }
    /// REX.R: extends ModRM.reg.
    pub fn r(self) -> bool {
        self.0 & 4 != 0
    }
    /// REX.X: extends SIB.index.
    pub fn x(self) -> bool {
        self.0 & 2 != 0
    }
    /// REX.B: extends ModRM.rm, SIB.base or the opcode's register field.
    pub fn b(self) -> bool {
        self.0 & 1 != 0
    }
}

/// The prefixes an instruction carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefixes {
    /// `F0` LOCK.
    pub lock: bool,
    /// The last of `F2`/`F3`.
    pub rep: Option<RepPrefix>,
    /// `66` operand-size override.
    pub opsize: bool,
    /// `67` address-size override.
    pub addrsize: bool,
    /// The last segment override.
    pub segment: Option<Segment>,
    /// The REX prefix, if one immediately preceded the opcode (64-bit mode only).
    pub rex: Option<Rex>,
}

/// A general-purpose register operand, precisely: which of the sixteen GPRs it lives in
/// and, for the legacy byte registers AH/CH/DH/BH, that it is bits 15:8 of it.
///
/// Invariant: `index < 16`, and `high_byte` only with `index < 4` (AH, CH, DH, BH are
/// the second bytes of RAX, RCX, RDX, RBX). The constructors keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    index: u8,
    high_byte: bool,
}

impl Reg {
    pub const RAX: Reg = Reg::gpr_masked(0);
    pub const RCX: Reg = Reg::gpr_masked(1);
    pub const RDX: Reg = Reg::gpr_masked(2);
    pub const RBX: Reg = Reg::gpr_masked(3);
    pub const RSP: Reg = Reg::gpr_masked(4);
    pub const RBP: Reg = Reg::gpr_masked(5);
    pub const RSI: Reg = Reg::gpr_masked(6);
    pub const RDI: Reg = Reg::gpr_masked(7);
    pub const AH: Reg = Reg::high_masked(0);
    pub const CH: Reg = Reg::high_masked(1);
    pub const DH: Reg = Reg::high_masked(2);
    pub const BH: Reg = Reg::high_masked(3);

    const fn gpr_masked(index: u8) -> Reg {
        Reg {
            index: index & 15,
            high_byte: false,
        }
    }

    const fn high_masked(index: u8) -> Reg {
        Reg {
            index: index & 3,
            high_byte: true,
        }
    }

    /// GPR `index` in the SDM's encoding order: 0..=7 are RAX, RCX, RDX, RBX, RSP, RBP,
    /// RSI, RDI and 8..=15 are R8..R15. `None` if `index >= 16`.
    pub const fn gpr(index: u8) -> Option<Reg> {
        if index < 16 {
            Some(Reg::gpr_masked(index))
        } else {
            None
        }
    }

    /// The legacy high-byte register of GPR `index` (0 = AH, 1 = CH, 2 = DH, 3 = BH).
    /// `None` if `index >= 4`.
    pub const fn high_byte_of(index: u8) -> Option<Reg> {
        if index < 4 {
            Some(Reg::high_masked(index))
        } else {
            None
        }
    }

    /// The byte register that encoding `enc` (0..=15, REX bit included) names: without
    /// any REX prefix 4..=7 are AH, CH, DH, BH; with one they are SPL, BPL, SIL, DIL
    /// (SDM Vol. 2A §2.2.1.2, Table 3-1 note).
    fn byte_reg(enc: u8, rex_present: bool) -> Reg {
        if !rex_present && (4..8).contains(&enc) {
            Reg::high_masked(enc - 4)
        } else {
            Reg::gpr_masked(enc)
        }
    }

    /// Which of the sixteen GPRs holds this operand (0 = RAX ... 15 = R15).
    pub const fn index(self) -> u8 {
        self.index
    }

    /// Whether this is AH/CH/DH/BH: bits 15:8 of GPR [`Reg::index`].
    pub const fn is_high_byte(self) -> bool {
        self.high_byte
    }

    /// The `size`-byte operand value held in a GPR whose full contents are `gpr`.
    /// `size` is 1, 2, 4 or 8; anything else reads all 64 bits.
    pub fn read(self, gpr: u64, size: u8) -> u64 {
        if self.high_byte {
            (gpr >> 8) & 0xff
        } else {
            gpr & size_mask(size)
        }
    }

    /// The GPR's new contents after the instruction writes `value` as a `size`-byte
    /// operand over `old` (SDM Vol. 1 §3.4.1.1): 8- and 16-bit writes keep the other
    /// bits, a 32-bit write zero-extends to 64 bits, a 64-bit write replaces all.
    /// `size` is 1, 2, 4 or 8; anything else writes all 64 bits.
    pub fn write(self, old: u64, value: u64, size: u8) -> u64 {
        if self.high_byte {
            return (old & !0xff00) | ((value & 0xff) << 8);
        }
        match size {
            1 => (old & !0xff) | (value & 0xff),
            2 => (old & !0xffff) | (value & 0xffff),
            4 => value & 0xffff_ffff,
            _ => value,
        }
    }
}

/// All-ones in the low `size` bytes (1, 2, 4; anything else: all 64 bits).
pub fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// How a load narrower than its destination fills the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// Same size (MOV): see [`Reg::write`] for what happens to the bits above it.
    None,
    /// MOVZX.
    Zero,
    /// MOVSX, MOVSXD.
    Sign,
}

/// The source of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A register operand of the given size in bytes; read it with [`Reg::read`].
    Reg(Reg, u8),
    /// An immediate, already sign-extended as the instruction does and truncated to the
    /// store's size: exactly the value written.
    Imm(u64),
}

/// What an instruction is, as far as keel cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsnKind {
    /// `0F A2`.
    Cpuid,
    /// `F4`.
    Hlt,
    /// `0F 01 C1` (no `66`/`F2`/`F3`).
    Vmcall,
    /// `0F 01 D9` (no `66`/`F2`/`F3`: `F2`/`F3 0F 01 D9` is AMD's VMGEXIT).
    Vmmcall,
    /// `0F 32`.
    Rdmsr,
    /// `0F 30`.
    Wrmsr,
    /// `0F 31`.
    Rdtsc,
    /// `0F 01 F9` (no `66`/`F2`/`F3`).
    Rdtscp,
    /// `0F 01 D1` (no `66`/`F2`/`F3`).
    Xsetbv,
    /// `0F 08`.
    Invd,
    /// `0F 09` without `F3`.
    Wbinvd,
    /// `F3 0F 09`: exits like WBINVD.
    Wbnoinvd,
    /// `F3 90` (without REX.B, which makes it `xchg r8, rax`).
    Pause,
    /// `CC`.
    Int3,
    /// `CD ib`.
    IntN(u8),
    /// `0F 06`.
    Clts,
    /// `0F 22 /r`: MOV CRn <- gpr; the GPR is 64-bit in 64-bit mode, else 32-bit.
    /// `cr` includes REX.R and AMD's `LOCK MOV CR0` alias for CR8.
    MovToCr { cr: u8, gpr: Reg },
    /// `0F 20 /r`: MOV gpr <- CRn.
    MovFromCr { cr: u8, gpr: Reg },
    /// `0F 23 /r`: MOV DRn <- gpr.
    MovToDr { dr: u8, gpr: Reg },
    /// `0F 21 /r`: MOV gpr <- DRn.
    MovFromDr { dr: u8, gpr: Reg },
    /// MOV r/m <- reg (`88`/`89`), MOV r/m <- imm (`C6 /0`/`C7 /0`), MOV moffs <- AL/rAX
    /// (`A2`/`A3`), with a memory destination: a store of `size` bytes.
    Store { size: u8, src: Operand },
    /// MOV reg <- r/m (`8A`/`8B`), MOV AL/rAX <- moffs (`A0`/`A1`), MOVZX/MOVSX
    /// (`0F B6 B7 BE BF`), MOVSXD (`63`, 64-bit mode), with a memory source: a load of
    /// `size` bytes into a `dst_size`-byte `dst`; write it with [`Reg::write`].
    Load {
        size: u8,
        dst: Reg,
        dst_size: u8,
        extend: Extend,
    },
    /// XCHG r/m, reg (`86 /r` byte, `87 /r` word/dword/qword by operand size) with a
    /// memory operand; `xchg reg, mem` is the same encoding (SDM Vol. 2B
    /// "XCHG—Exchange Register/Memory With Register"). Atomically, `size` bytes of
    /// memory receive `reg`'s value ([`Reg::read`]) and `reg` receives the memory's old
    /// value ([`Reg::write`], so a 32-bit exchange zero-extends into the 64-bit GPR).
    /// Flags are unaffected. The CPU locks the access whether or not a LOCK prefix
    /// (allowed, and recorded in [`Insn::prefixes`]) is present.
    Xchg { size: u8, reg: Reg },
    /// CMPXCHG r/m, reg (`0F B0 /r` byte, `0F B1 /r` word/dword/qword by operand size)
    /// with a memory operand, LOCK allowed (SDM Vol. 2A "CMPXCHG—Compare and
    /// Exchange"). The accumulator is AL/AX/EAX/RAX as `size` says (always
    /// [`Reg::RAX`] read as a `size`-byte operand, never AH). Atomically:
    ///
    /// * if the accumulator equals the `size`-byte memory value, memory receives
    ///   `reg`'s value and ZF is set; the accumulator is not written (its upper bits
    ///   stay as they were, even for a 32-bit operand);
    /// * otherwise the accumulator receives the memory value ([`Reg::write`]: a
    ///   32-bit load zero-extends into RAX) and ZF is cleared. The CPU still writes
    ///   the old value back to memory (the locked read always has a locked write), so
    ///   a failing CMPXCHG to a read-only page faults as a write too; emulating it as
    ///   no store leaves memory the same.
    ///
    /// CF, PF, AF, SF and OF are set as by `CMP` of the accumulator with the memory
    /// value (accumulator minus memory).
    Cmpxchg { size: u8, reg: Reg },
    /// Anything else, including the register forms of the MOVs, XCHG and CMPXCHG above.
    /// `opcode` is the opcode byte prefixed by its escape bytes: `0xXX` for the one-byte
    /// map, `0x0FXX`, `0x0F38XX`, `0x0F3AXX` for the others. Group members are told apart by
    /// [`Insn::modrm`].
    Other { opcode: u32 },
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Length in bytes, prefixes included: `1..=15`.
    pub len: u8,
    pub kind: InsnKind,
    pub prefixes: Prefixes,
    /// The ModRM byte, if the opcode has one.
    pub modrm: Option<u8>,
}

/// Why bytes did not decode. The doc comment of each variant is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// the bytes end before the instruction does
    Truncated,
    /// the instruction is longer than 15 bytes
    TooLong,
    /// the bytes are not an instruction in this mode
    Invalid,
    /// the instruction is valid but keel does not decode it (VEX, EVEX, XOP, or a
    /// vendor-dependent length)
    Unsupported,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "the bytes end before the instruction does",
            DecodeError::TooLong => "the instruction is longer than 15 bytes",
            DecodeError::Invalid => "the bytes are not an instruction in this mode",
            DecodeError::Unsupported => {
                "the instruction is valid but keel does not decode it (VEX, EVEX, XOP, \
                 or a vendor-dependent length)"
            }
        })
    }
}

/// Reads bytes, enforcing the 15-byte limit before the end of the input: a position at
/// or past 15 is `TooLong` whether or not the caller supplied the byte.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// The end position after `n` more bytes, if they are allowed and present.
    fn check(&self, n: usize) -> Result<usize, DecodeError> {
        let end = self.pos + n;
        if end > MAX_INSN_LEN {
            Err(DecodeError::TooLong)
        } else if end > self.bytes.len() {
            Err(DecodeError::Truncated)
        } else {
            Ok(end)
        }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.check(1)?;
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// Consumes `n <= 8` bytes and returns them as a little-endian number.
    fn take(&mut self, n: usize) -> Result<u64, DecodeError> {
        let end = self.check(n)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated)?;
        let value = slice
            .iter()
            .enumerate()
            .fold(0u64, |v, (i, &b)| v | (u64::from(b) << (8 * i)));
        self.pos = end;
        Ok(value)
    }
}

/// Which opcode map the opcode byte is from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Map {
    One,
    Two,
    Three38,
    Three3A,
}

/// Whether and how the opcode has a ModRM byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ModRm {
    No,
    /// A ModRM byte with the full addressing forms.
    Yes,
    /// A ModRM byte whose `mod` is ignored and which never has SIB or displacement
    /// (MOV to/from CR/DR).
    RegOnly,
}

/// The immediate an opcode carries, in the SDM's operand-type notation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imm {
    None,
    /// Ib, Jb: one byte.
    B,
    /// Iw: two bytes (RET imm16).
    W,
    /// Iz: 16 or 32 bits by operand size (32 with REX.W).
    Z,
    /// Iv: 16, 32 or 64 bits by operand size (`B8+r`).
    V,
    /// ENTER: Iw then Ib.
    WB,
    /// Ap: a far pointer, offset (16/32 by operand size) then a 16-bit selector.
    Far,
    /// Ob/Ov: a memory offset as wide as the address size.
    Moffs,
    /// Jz: a near-branch displacement (16/32; 32 in 64-bit mode, see [`decode`]).
    RelZ,
    /// SSE4a EXTRQ/INSERTQ: two Ib.
    BB,
}

#[derive(Clone, Copy)]
struct Shape {
    modrm: ModRm,
    imm: Imm,
}

const fn shape(modrm: ModRm, imm: Imm) -> Shape {
    Shape { modrm, imm }
}

const NONE: Shape = shape(ModRm::No, Imm::None);
const M: Shape = shape(ModRm::Yes, Imm::None);
const M_IB: Shape = shape(ModRm::Yes, Imm::B);
const M_IZ: Shape = shape(ModRm::Yes, Imm::Z);
const IB: Shape = shape(ModRm::No, Imm::B);
const IZ: Shape = shape(ModRm::No, Imm::Z);

/// The one-byte opcode map (SDM Vol. 2D Table A-2). `C4 C5 62 8F` are handled by
/// [`escape_shape`] before this is asked; prefixes and `0F` never reach it.
fn one_byte_shape(op: u8, mode: CodeMode) -> Result<Shape, DecodeError> {
    let not64 = |s: Shape| {
        if mode == CodeMode::Long64 {
            Err(DecodeError::Invalid)
        } else {
            Ok(s)
        }
    };
    Ok(match op {
        // ADD OR ADC SBB AND SUB XOR CMP: Eb,Gb Ev,Gv Gb,Eb Gv,Ev AL,Ib rAX,Iz.
        0x00..=0x3F if op & 7 <= 3 => M,
        0x00..=0x3F if op & 7 == 4 => IB,
        0x00..=0x3F if op & 7 == 5 => IZ,
        // PUSH/POP ES CS SS DS, DAA DAS AAA AAS.
        0x06 | 0x07 | 0x0E | 0x16 | 0x17 | 0x1E | 0x1F | 0x27 | 0x2F | 0x37 | 0x3F => {
            return not64(NONE);
        }
        // INC/DEC (16/32-bit modes only: REX in 64-bit mode), PUSH/POP r.
        0x40..=0x5F => NONE,
        // PUSHA, POPA.
        0x60 | 0x61 => return not64(NONE),
        // ARPL Ew,Gw / MOVSXD Gv,Ed.
        0x63 => M,
        0x68 => IZ,
        0x69 => M_IZ,
        0x6A => IB,
        0x6B => M_IB,
        // INS, OUTS.
        0x6C..=0x6F => NONE,
        // Jcc rel8.
        0x70..=0x7F => IB,
        // Group 1.
        0x80 | 0x83 => M_IB,
        0x81 => M_IZ,
        0x82 => return not64(M_IB),
        // TEST XCHG MOV MOV-Sreg LEA MOV-Sreg POP-Ev.
        0x84..=0x8F => M,
        // NOP/XCHG, CBW, CWD, WAIT, PUSHF, POPF, SAHF, LAHF.
        0x90..=0x99 | 0x9B..=0x9F => NONE,
        // CALLF Ap.
        0x9A => return not64(shape(ModRm::No, Imm::Far)),
        // MOV AL/rAX <-> moffs.
        0xA0..=0xA3 => shape(ModRm::No, Imm::Moffs),
        // MOVS CMPS STOS LODS SCAS.
        0xA4..=0xA7 | 0xAA..=0xAF => NONE,
        0xA8 => IB,
        0xA9 => IZ,
        // MOV r8, imm8; MOV r, imm16/32/64.
        0xB0..=0xB7 => IB,
        0xB8..=0xBF => shape(ModRm::No, Imm::V),
        // Group 2 by imm8; MOV Eb,Ib (group 11; XABORT is C6 F8 ib).
        0xC0 | 0xC1 | 0xC6 => M_IB,
        // MOV Ev,Iz (group 11; XBEGIN is C7 F8 rel16/32, the same shape).
        0xC7 => M_IZ,
        // RET imm16, RETF imm16.
        0xC2 | 0xCA => shape(ModRm::No, Imm::W),
        // RET, LEAVE, RETF, INT3, IRET.
        0xC3 | 0xC9 | 0xCB | 0xCC | 0xCF => NONE,
        0xC8 => shape(ModRm::No, Imm::WB),
        0xCD => IB,
        // INTO.
        0xCE => return not64(NONE),
        // Group 2 by 1/CL; x87 escapes (ModRM in all forms).
        0xD0..=0xD3 | 0xD8..=0xDF => M,
        // AAM, AAD.
        0xD4 | 0xD5 => return not64(IB),
        // SALC: undocumented; not accepted.
        0xD6 => return Err(DecodeError::Invalid),
        // XLAT.
        0xD7 => NONE,
        // LOOPcc, JrCXZ, IN/OUT imm8, JMP rel8.
        0xE0..=0xE7 | 0xEB => IB,
        // CALL, JMP rel16/32.
        0xE8 | 0xE9 => shape(ModRm::No, Imm::RelZ),
        // JMPF Ap.
        0xEA => return not64(shape(ModRm::No, Imm::Far)),
        // IN/OUT DX.
        0xEC..=0xEF => NONE,
        // INT1, HLT, CMC, CLC STC CLI STI CLD STD.
        0xF1 | 0xF4 | 0xF5 | 0xF8..=0xFD => NONE,
        // Group 3 (the TEST immediate is added once ModRM.reg is known), groups 4 and 5.
        0xF6 | 0xF7 | 0xFE | 0xFF => M,
        // The VEX/EVEX/XOP escapes are handled before; prefixes and 0F are consumed
        // before. Not reached, but an answer is cheaper than an argument.
        0x0F
        | 0x26
        | 0x2E
        | 0x36
        | 0x3E
        | 0x62
        | 0x64..=0x67
        | 0xC4
        | 0xC5
        | 0xF0
        | 0xF2
        | 0xF3 => return Err(DecodeError::Invalid),
        // `0x00..=0x3F` with `op & 7` in 6..=7 is listed above; the compiler cannot see
        // that the guards cover the rest.
        0x00..=0x3F => return Err(DecodeError::Invalid),
    })
}

/// The one-byte opcodes that are something else depending on the next byte: `C4`/`C5`
/// (LES/LDS or VEX), `62` (BOUND or EVEX) and `8F` (POP Ev or XOP). `None` if `op` is
/// not one of them.
fn escape_shape(op: u8, mode: CodeMode, c: &Cursor<'_>) -> Option<Result<Shape, DecodeError>> {
    match op {
        0xC4 | 0xC5 | 0x62 => {
            if mode == CodeMode::Long64 {
                return Some(Err(DecodeError::Unsupported));
            }
            // In 16/32-bit modes LES/LDS/BOUND need a memory operand; `mod = 11` is the
            // VEX/EVEX escape (SDM Vol. 2A §2.3.5, §2.7.1).
            Some(c.peek().and_then(|next| {
                if next >> 6 == 3 {
                    Err(DecodeError::Unsupported)
                } else {
                    Ok(M)
                }
            }))
        }
        // Group 1A: only /0 is POP; AMD's XOP uses the other encodings (APM Vol. 3
        // §1.9), Intel raises #UD for them.
        0x8F => Some(c.peek().and_then(|next| {
            if (next >> 3) & 7 != 0 {
                Err(DecodeError::Unsupported)
            } else {
                Ok(M)
            }
        })),
        _ => None,
    }
}

/// The `0F` two-byte opcode map (SDM Vol. 2D Table A-3).
fn two_byte_shape(op: u8, p: &Prefixes) -> Result<Shape, DecodeError> {
    Ok(match op {
        // Groups 6 and 7, LAR, LSL, PREFETCH/NOP Ev, SSE moves and hints, CMOVcc,
        // SSE/MMX, VMREAD/VMWRITE-ish, SETcc, BT*, SHxD by CL, group 15, IMUL, CMPXCHG,
        // LSS LFS LGS, MOVZX, POPCNT/JMPE, UD1, BSF BSR, MOVSX, XADD, MOVNTI, group 9,
        // SSE/MMX D0-FF (FF is UD0, with a ModRM as Intel documents it).
        0x00..=0x03
        | 0x0D
        | 0x10..=0x1F
        | 0x28..=0x2F
        | 0x40..=0x6F
        | 0x74..=0x76
        | 0x79
        | 0x7C..=0x7F
        | 0x90..=0x9F
        | 0xA3
        | 0xA5
        | 0xAB
        | 0xAD..=0xB9
        | 0xBB..=0xC1
        | 0xC3
        | 0xC7
        | 0xD0..=0xFF => M,
        // SYSCALL CLTS SYSRET INVD WBINVD UD2 FEMMS WRMSR RDTSC RDMSR RDPMC SYSENTER
        // SYSEXIT GETSEC EMMS, PUSH/POP FS CPUID, PUSH/POP GS RSM, BSWAP.
        0x05..=0x09
        | 0x0B
        | 0x0E
        | 0x30..=0x35
        | 0x37
        | 0x77
        | 0xA0..=0xA2
        | 0xA8..=0xAA
        | 0xC8..=0xCF => NONE,
        // 3DNow!: ModRM, then the real opcode as an imm8.
        0x0F => M_IB,
        // MOV to/from CR/DR.
        0x20..=0x23 => shape(ModRm::RegOnly, Imm::None),
        // PSHUF*, groups 12-14, SHxD by imm8, group 8, CMPPS, PINSRW, PEXTRW, SHUFPS.
        0x70..=0x73 | 0xA4 | 0xAC | 0xBA | 0xC2 | 0xC4..=0xC6 => M_IB,
        // VMREAD; with 66 it is SSE4a EXTRQ ib,ib and with F2 INSERTQ ib,ib (F2/F3
        // outrank 66 as mandatory prefix).
        0x78 => match (p.rep, p.opsize) {
            (Some(RepPrefix::Repne), _) | (None, true) => shape(ModRm::Yes, Imm::BB),
            _ => M,
        },
        // Jcc rel16/32.
        0x80..=0x8F => shape(ModRm::No, Imm::RelZ),
        // Undefined.
        0x04
        | 0x0A
        | 0x0C
        | 0x24..=0x27
        | 0x36
        | 0x39
        | 0x3B..=0x3F
        | 0x7A
        | 0x7B
        | 0xA6
        | 0xA7 => return Err(DecodeError::Invalid),
        // The three-byte escapes are handled before.
        0x38 | 0x3A => return Err(DecodeError::Invalid),
    })
}

/// Operand and address sizes in bytes, from the mode and prefixes (SDM Vol. 1 §3.6,
/// Table 3-4; Vol. 2A §2.2.1.2).
fn sizes(mode: CodeMode, p: &Prefixes) -> (u8, u8) {
    let w = p.rex.is_some_and(Rex::w);
    match mode {
        CodeMode::Real16 | CodeMode::Prot16 => {
            (if p.opsize { 4 } else { 2 }, if p.addrsize { 4 } else { 2 })
        }
        CodeMode::Prot32 => (if p.opsize { 2 } else { 4 }, if p.addrsize { 2 } else { 4 }),
        CodeMode::Long64 => (
            if w {
                8
            } else if p.opsize {
                2
            } else {
                4
            },
            if p.addrsize { 4 } else { 8 },
        ),
    }
}

/// Skips the SIB and displacement a ModRM byte implies (SDM Vol. 2A Tables 2-1 to 2-3).
fn skip_memory_operand(c: &mut Cursor<'_>, modrm: u8, addr_size: u8) -> Result<(), DecodeError> {
    let md = modrm >> 6;
    let rm = modrm & 7;
    if md == 3 {
        return Ok(());
    }
    let disp = if addr_size == 2 {
        match md {
            0 if rm == 6 => 2,
            0 => 0,
            1 => 1,
            _ => 2,
        }
    } else {
        let mut disp = match md {
            0 => 0,
            1 => 1,
            _ => 4,
        };
        if rm == 4 {
            let sib = c.byte()?;
            if md == 0 && sib & 7 == 5 {
                disp = 4;
            }
        } else if md == 0 && rm == 5 {
            // disp32; RIP-relative in 64-bit mode (SDM Vol. 2A §2.2.1.6).
            disp = 4;
        }
        disp
    };
    c.take(disp).map(|_| ())
}

/// The plain encodings (no prefix at all) of the instructions most exits complete,
/// with their ModRM byte if they have one. For these bytes [`decode`] answers the same
/// in every mode (tested), so [`decode_plain`] may answer for it.
const PLAIN: [(&[u8], InsnKind, Option<u8>); 6] = [
    (&[0x0F, 0x01, 0xD9], InsnKind::Vmmcall, Some(0xD9)),
    (&[0x0F, 0x01, 0xC1], InsnKind::Vmcall, Some(0xC1)),
    (&[0x0F, 0xA2], InsnKind::Cpuid, None),
    (&[0x0F, 0x32], InsnKind::Rdmsr, None),
    (&[0x0F, 0x30], InsnKind::Wrmsr, None),
    (&[0xF4], InsnKind::Hlt, None),
];

/// The fast path of [`decode`] for an exit whose instruction keel expects: if `bytes`
/// begin with the plain encoding of VMMCALL, VMCALL, CPUID, RDMSR, WRMSR or HLT,
/// exactly what `decode(bytes, mode)` returns, for any `mode`; `None` for anything
/// else (prefixes included), and the caller decodes in full. (Xen 4.17's
/// `svm_get_insn_len` runs its full decoder on every such exit instead; see
/// docs/performance.md.)
pub fn decode_plain(bytes: &[u8]) -> Option<Insn> {
    PLAIN
        .iter()
        .find(|(enc, _, _)| bytes.starts_with(enc))
        .map(|&(enc, kind, modrm)| Insn {
            // At most 3: the table's encodings.
            len: enc.len() as u8,
            kind,
            prefixes: Prefixes::default(),
            modrm,
        })
}

/// Decodes one instruction from the start of `bytes`, which should hold 15 bytes or
/// everything readable before an unmapped page. See the module documentation for what
/// is supported and the guarantees on the result.
pub fn decode(bytes: &[u8], mode: CodeMode) -> Result<Insn, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let long = mode == CodeMode::Long64;

    // Prefixes.
    let mut p = Prefixes::default();
    let first = loop {
        let b = c.byte()?;
        match b {
            0xF0 => p.lock = true,
            0xF2 => p.rep = Some(RepPrefix::Repne),
            0xF3 => p.rep = Some(RepPrefix::Rep),
            0x26 => p.segment = Some(Segment::Es),
            0x2E => p.segment = Some(Segment::Cs),
            0x36 => p.segment = Some(Segment::Ss),
            0x3E => p.segment = Some(Segment::Ds),
            0x64 => p.segment = Some(Segment::Fs),
            0x65 => p.segment = Some(Segment::Gs),
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0x40..=0x4F if long => {
                p.rex = Some(Rex(b));
                continue;
            }
            _ => break b,
        }
        // A legacy prefix after a REX voids the REX.
        p.rex = None;
    };
    let (opsize, addr_size) = sizes(mode, &p);

    // Opcode.
    let (map, op) = if first == 0x0F {
        match c.byte()? {
            0x38 => (Map::Three38, c.byte()?),
            0x3A => (Map::Three3A, c.byte()?),
            b => (Map::Two, b),
        }
    } else {
        (Map::One, first)
    };
    let shape = match map {
        Map::One => match escape_shape(op, mode, &c) {
            Some(s) => s?,
            None => one_byte_shape(op, mode)?,
        },
        Map::Two => two_byte_shape(op, &p)?,
        Map::Three38 => M,
        Map::Three3A => M_IB,
    };

    // ModRM, SIB, displacement.
    let modrm = match shape.modrm {
        ModRm::No => None,
        ModRm::Yes => {
            let m = c.byte()?;
            skip_memory_operand(&mut c, m, addr_size)?;
            Some(m)
        }
        ModRm::RegOnly => Some(c.byte()?),
    };

    // Immediate.
    let mut imm = shape.imm;
    if map == Map::One && (op == 0xF6 || op == 0xF7) && modrm.is_some_and(|m| (m >> 3) & 7 < 2) {
        // TEST Eb,Ib / Ev,Iz (/1 is an alias of /0 on the hardware).
        imm = if op == 0xF6 { Imm::B } else { Imm::Z };
    }
    let imm_len = match imm {
        Imm::None => 0,
        Imm::B => 1,
        Imm::W => 2,
        Imm::BB => 2,
        Imm::WB => 3,
        Imm::Z => usize::from(opsize.min(4)),
        Imm::V => usize::from(opsize),
        Imm::Far => usize::from(opsize.min(4)) + 2,
        Imm::Moffs => usize::from(addr_size),
        Imm::RelZ => {
            if long {
                if p.opsize && !p.rex.is_some_and(Rex::w) {
                    // Intel: rel32 regardless; AMD: rel16.
                    return Err(DecodeError::Unsupported);
                }
                4
            } else {
                usize::from(opsize)
            }
        }
    };
    let imm_value = c.take(imm_len)?;

    let kind = classify(&Decoded {
        map,
        op,
        modrm,
        imm: imm_value,
        prefixes: p,
        opsize,
        long,
    })?;
    if p.lock && matches!(kind, InsnKind::Load { .. } | InsnKind::Store { .. }) {
        // LOCK MOV is #UD (SDM Vol. 2A §2.1.1): nothing to emulate. (LOCK XCHG and
        // LOCK CMPXCHG with a memory operand are what LOCK is for: they pass.)
        return Err(DecodeError::Invalid);
    }
    Ok(Insn {
        // The cursor never passes MAX_INSN_LEN (15), so this cannot truncate.
        len: c.pos as u8,
        kind,
        prefixes: p,
        modrm,
    })
}

/// The facts [`classify`] needs.
struct Decoded {
    map: Map,
    op: u8,
    modrm: Option<u8>,
    imm: u64,
    prefixes: Prefixes,
    opsize: u8,
    long: bool,
}

/// Names the instruction once its length is known.
fn classify(d: &Decoded) -> Result<InsnKind, DecodeError> {
    let p = &d.prefixes;
    let rex = p.rex.map_or(0, Rex::raw);
    let rex_r = if rex & 4 != 0 { 8 } else { 0 };
    let rex_b = if rex & 1 != 0 { 8 } else { 0 };
    let m = d.modrm.unwrap_or(0);
    let is_mem = d.modrm.is_some_and(|m| m >> 6 != 3);
    let reg_field = ((m >> 3) & 7) | rex_r;
    let rm_field = (m & 7) | rex_b;
    let gpr = Reg::gpr_masked;
    let opsize = d.opsize;
    let other = |prefix: u32| InsnKind::Other {
        opcode: prefix | u32::from(d.op),
    };

    Ok(match d.map {
        Map::One => match d.op {
            0xF4 => InsnKind::Hlt,
            0xCC => InsnKind::Int3,
            // Truncation intended: the immediate is one byte.
            0xCD => InsnKind::IntN(d.imm as u8),
            0x90 if p.rep == Some(RepPrefix::Rep) && rex_b == 0 => InsnKind::Pause,
            0x88 if is_mem => InsnKind::Store {
                size: 1,
                src: Operand::Reg(Reg::byte_reg(reg_field, p.rex.is_some()), 1),
            },
            0x89 if is_mem => InsnKind::Store {
                size: opsize,
                src: Operand::Reg(gpr(reg_field), opsize),
            },
            0x8A if is_mem => InsnKind::Load {
                size: 1,
                dst: Reg::byte_reg(reg_field, p.rex.is_some()),
                dst_size: 1,
                extend: Extend::None,
            },
            0x8B if is_mem => InsnKind::Load {
                size: opsize,
                dst: gpr(reg_field),
                dst_size: opsize,
                extend: Extend::None,
            },
            // XCHG Eb,Gb / Ev,Gv: ModRM.reg names the register, whichever way the
            // assembler wrote the operands.
            0x86 if is_mem => InsnKind::Xchg {
                size: 1,
                reg: Reg::byte_reg(reg_field, p.rex.is_some()),
            },
            0x87 if is_mem => InsnKind::Xchg {
                size: opsize,
                reg: gpr(reg_field),
            },
            // MOV moffs forms: the register is always AL/AX/EAX/RAX.
            0xA0 => InsnKind::Load {
                size: 1,
                dst: Reg::RAX,
                dst_size: 1,
                extend: Extend::None,
            },
            0xA1 => InsnKind::Load {
                size: opsize,
                dst: Reg::RAX,
                dst_size: opsize,
                extend: Extend::None,
            },
            0xA2 => InsnKind::Store {
                size: 1,
                src: Operand::Reg(Reg::RAX, 1),
            },
            0xA3 => InsnKind::Store {
                size: opsize,
                src: Operand::Reg(Reg::RAX, opsize),
            },
            // Group 11: /0 is MOV, C6 F8 / C7 F8 are XABORT / XBEGIN, the rest #UD.
            0xC6 | 0xC7 => match (m >> 3) & 7 {
                0 if is_mem => {
                    let size = if d.op == 0xC6 { 1 } else { opsize };
                    let value = if size == 8 {
                        // imm32 sign-extended to 64 bits: the cast chain is the
                        // sign extension.
                        d.imm as u32 as i32 as i64 as u64
                    } else {
                        d.imm & size_mask(size)
                    };
                    InsnKind::Store {
                        size,
                        src: Operand::Imm(value),
                    }
                }
                0 => other(0),
                7 if m == 0xF8 => other(0),
                _ => return Err(DecodeError::Invalid),
            },
            // MOVSXD: REX.W sign-extends a dword; without it, a plain 32/16-bit move.
            0x63 if d.long && is_mem => {
                let w = opsize == 8;
                InsnKind::Load {
                    size: opsize.min(4),
                    dst: gpr(reg_field),
                    dst_size: opsize,
                    extend: if w { Extend::Sign } else { Extend::None },
                }
            }
            _ => other(0),
        },
        Map::Two => {
            // The 0F 01 register forms below have mandatory-prefix siblings.
            let plain = !p.opsize && p.rep.is_none();
            match d.op {
                0xA2 => InsnKind::Cpuid,
                0x30 => InsnKind::Wrmsr,
                0x31 => InsnKind::Rdtsc,
                0x32 => InsnKind::Rdmsr,
                0x06 => InsnKind::Clts,
                0x08 => InsnKind::Invd,
                0x09 if p.rep == Some(RepPrefix::Rep) => InsnKind::Wbnoinvd,
                0x09 => InsnKind::Wbinvd,
                0x01 if plain && m == 0xC1 => InsnKind::Vmcall,
                0x01 if plain && m == 0xD9 => InsnKind::Vmmcall,
                0x01 if plain && m == 0xD1 => InsnKind::Xsetbv,
                0x01 if plain && m == 0xF9 => InsnKind::Rdtscp,
                0x20..=0x23 => {
                    // AMD: LOCK MOV CR0 is MOV CR8 (APM Vol. 3 "MOV CRn").
                    let n = reg_field | if p.lock && d.op & 1 == 0 { 8 } else { 0 };
                    let gpr = gpr(rm_field);
                    match d.op {
                        0x20 => InsnKind::MovFromCr { cr: n, gpr },
                        0x22 => InsnKind::MovToCr { cr: n, gpr },
                        0x21 => InsnKind::MovFromDr { dr: n, gpr },
                        _ => InsnKind::MovToDr { dr: n, gpr },
                    }
                }
                // CMPXCHG Eb,Gb / Ev,Gv.
                0xB0 if is_mem => InsnKind::Cmpxchg {
                    size: 1,
                    reg: Reg::byte_reg(reg_field, p.rex.is_some()),
                },
                0xB1 if is_mem => InsnKind::Cmpxchg {
                    size: opsize,
                    reg: gpr(reg_field),
                },
                0xB6 | 0xB7 | 0xBE | 0xBF if is_mem => InsnKind::Load {
                    size: if d.op & 1 == 0 { 1 } else { 2 },
                    dst: gpr(reg_field),
                    dst_size: opsize,
                    extend: if d.op < 0xBE {
                        Extend::Zero
                    } else {
                        Extend::Sign
                    },
                },
                _ => other(0x0F00),
            }
        }
        Map::Three38 => other(0x0F_3800),
        Map::Three3A => other(0x0F_3A00),
    })
}

#[cfg(test)]
mod tests {
    use super::CodeMode::{Long64, Prot16, Prot32, Real16};
    use super::*;

    /// Real encodings: produced by GNU `as` from the text beside them (AT&T syntax) at
    /// development time and checked against the SDM's tables; the bytes are literal.
    /// Each must decode to exactly its own length. (During development the decoder's
    /// lengths were also compared with GNU objdump's on ~300,000 random byte strings in
    /// the three modes; the only differences were objdump fusing FWAIT with the next x87
    /// instruction and decoding 386-only MOV TR and VIA PadLock opcodes.)
    #[rustfmt::skip]
    const ENCODINGS: &[(CodeMode, &[u8], &str)] = &[
    (Long64, &[0x0f, 0xa2], "cpuid"),
    (Long64, &[0xf4], "hlt"),
    (Long64, &[0x0f, 0x01, 0xc1], "vmcall"),
    (Long64, &[0x0f, 0x01, 0xd9], "vmmcall"),
    (Long64, &[0x0f, 0x32], "rdmsr"),
    (Long64, &[0x0f, 0x30], "wrmsr"),
    (Long64, &[0x0f, 0x31], "rdtsc"),
    (Long64, &[0x0f, 0x01, 0xf9], "rdtscp"),
    (Long64, &[0x0f, 0x01, 0xd1], "xsetbv"),
    (Long64, &[0x0f, 0x08], "invd"),
    (Long64, &[0x0f, 0x09], "wbinvd"),
    (Long64, &[0xf3, 0x0f, 0x09], "wbnoinvd"),
    (Long64, &[0xf3, 0x90], "pause"),
    (Long64, &[0xcc], "int3"),
    (Long64, &[0xcd, 0x80], "int $0x80"),
    (Long64, &[0x0f, 0x06], "clts"),
    (Long64, &[0x0f, 0x20, 0xc0], "movq %cr0,%rax"),
    (Long64, &[0x0f, 0x22, 0xd8], "movq %rax,%cr3"),
    (Long64, &[0x45, 0x0f, 0x20, 0xc1], "movq %cr8,%r9"),
    (Long64, &[0x0f, 0x22, 0xe0], "movq %rax,%cr4"),
    (Long64, &[0x0f, 0x21, 0xf8], "movq %db7,%rax"),
    (Long64, &[0x0f, 0x23, 0xc2], "movq %rdx,%db0"),
    (Long64, &[0x89, 0x07], "movl %eax,(%rdi)"),
    (Long64, &[0x48, 0x89, 0x47, 0x10], "movq %rax,0x10(%rdi)"),
    (Long64, &[0x45, 0x89, 0x8c, 0x24, 0x78, 0x56, 0x34, 0x12], "movl %r9d,0x12345678(%r12)"),
    (Long64, &[0x66, 0x89, 0x02], "movw %ax,(%rdx)"),
    (Long64, &[0x88, 0x03], "movb %al,(%rbx)"),
    (Long64, &[0x88, 0x23], "movb %ah,(%rbx)"),
    (Long64, &[0x40, 0x88, 0x33], "movb %sil,(%rbx)"),
    (Long64, &[0x40, 0x88, 0x20], "movb %spl,(%rax)"),
    (Long64, &[0x8b, 0x07], "movl (%rdi),%eax"),
    (Long64, &[0x4c, 0x8b, 0x1f], "movq (%rdi),%r11"),
    (Long64, &[0x48, 0x8b, 0x4c, 0x24, 0x08], "movq 0x8(%rsp),%rcx"),
    (Long64, &[0x8b, 0x14, 0x98], "movl (%rax,%rbx,4),%edx"),
    (Long64, &[0x8b, 0x05, 0x00, 0x10, 0x00, 0x00], "movl 0x1000(%rip),%eax"),
    (Long64, &[0x41, 0x8b, 0x45, 0x00], "movl 0x0(%r13),%eax"),
    (Long64, &[0x41, 0x8b, 0x04, 0x24], "movl (%r12),%eax"),
    (Long64, &[0x8b, 0x04, 0x25, 0x78, 0x56, 0x34, 0x12], "movl 0x12345678,%eax"),
    (Long64, &[0xc6, 0x07, 0x5a], "movb $0x5a,(%rdi)"),
    (Long64, &[0x66, 0xc7, 0x07, 0x34, 0x12], "movw $0x1234,(%rdi)"),
    (Long64, &[0xc7, 0x47, 0x04, 0xef, 0xbe, 0xad, 0xde], "movl $0xdeadbeef,0x4(%rdi)"),
    (Long64, &[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff], "movq $0xffffffffffffffff,(%rdi)"),
    (Long64, &[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0x7f], "movq $0x7fffffff,(%rdi)"),
    (Long64, &[0x0f, 0xb6, 0x07], "movzbl (%rdi),%eax"),
    (Long64, &[0x0f, 0xb7, 0x07], "movzwl (%rdi),%eax"),
    (Long64, &[0x48, 0x0f, 0xbe, 0x07], "movsbq (%rdi),%rax"),
    (Long64, &[0x0f, 0xbf, 0x07], "movswl (%rdi),%eax"),
    (Long64, &[0x48, 0x63, 0x07], "movslq (%rdi),%rax"),
    (Long64, &[0xa0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "movabsb 0x1122334455667788,%al"),
    (Long64, &[0xa3, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "movabsl %eax,0x1122334455667788"),
    (Long64, &[0x48, 0xa3, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "movabsq %rax,0x1122334455667788"),
    (Long64, &[0x67, 0xa1, 0x78, 0x56, 0x34, 0x12], "addr32 movl 0x12345678,%eax"),
    (Long64, &[0x64, 0x89, 0x07], "movl %eax,%fs:(%rdi)"),
    (Long64, &[0x67, 0x89, 0x07], "movl %eax,(%edi)"),
    (Long64, &[0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "movabsq $0x1122334455667788,%rax"),
    (Long64, &[0xb8, 0x78, 0x56, 0x34, 0x12], "movl $0x12345678,%eax"),
    (Long64, &[0x66, 0xb8, 0x34, 0x12], "movw $0x1234,%ax"),
    (Long64, &[0x41, 0xb2, 0x12], "movb $0x12,%r10b"),
    (Long64, &[0x89, 0xc3], "movl %eax,%ebx"),
    (Long64, &[0xc7, 0xc0, 0x01, 0x00, 0x00, 0x00], "movl $0x1,%eax"),
    (Long64, &[0x05, 0x78, 0x56, 0x34, 0x12], "addl $0x12345678,%eax"),
    (Long64, &[0x80, 0x00, 0x12], "addb $0x12,(%rax)"),
    (Long64, &[0x81, 0x44, 0xc8, 0x10, 0x78, 0x56, 0x34, 0x12], "addl $0x12345678,0x10(%rax,%rcx,8)"),
    (Long64, &[0x66, 0x81, 0x00, 0x34, 0x12], "addw $0x1234,(%rax)"),
    (Long64, &[0x48, 0x83, 0x00, 0x01], "addq $0x1,(%rax)"),
    (Long64, &[0xf6, 0x07, 0x01], "testb $0x1,(%rdi)"),
    (Long64, &[0xf7, 0x07, 0x00, 0x01, 0x00, 0x00], "testl $0x100,(%rdi)"),
    (Long64, &[0x66, 0xf7, 0x07, 0x00, 0x01], "testw $0x100,(%rdi)"),
    (Long64, &[0xf7, 0x17], "notl (%rdi)"),
    (Long64, &[0xf6, 0x1f], "negb (%rdi)"),
    (Long64, &[0x69, 0xc8, 0x34, 0x12, 0x00, 0x00], "imull $0x1234,%eax,%ecx"),
    (Long64, &[0x6b, 0xc8, 0x03], "imull $0x3,%eax,%ecx"),
    (Long64, &[0x68, 0x78, 0x56, 0x34, 0x12], "pushq $0x12345678"),
    (Long64, &[0x6a, 0x01], "pushq $0x1"),
    (Long64, &[0x66, 0x68, 0x34, 0x12], "pushw $0x1234"),
    (Long64, &[0xff, 0x20], "jmpq *(%rax)"),
    (Long64, &[0xff, 0x15, 0x10, 0x00, 0x00, 0x00], "callq *0x10(%rip)"),
    (Long64, &[0xc3], "retq"),
    (Long64, &[0xc2, 0x08, 0x00], "retq $0x8"),
    (Long64, &[0xc8, 0x10, 0x00, 0x00], "enterq $0x10,$0x0"),
    (Long64, &[0xc9], "leaveq"),
    (Long64, &[0xc1, 0xe0, 0x03], "shll $0x3,%eax"),
    (Long64, &[0x0f, 0xa4, 0x07, 0x04], "shldl $0x4,%eax,(%rdi)"),
    (Long64, &[0x0f, 0xba, 0x27, 0x03], "btl $0x3,(%rdi)"),
    (Long64, &[0x48, 0x8d, 0x7c, 0x24, 0x08], "leaq 0x8(%rsp),%rdi"),
    (Long64, &[0xf0, 0x0f, 0xb1, 0x0a], "lock cmpxchgl %ecx,(%rdx)"),
    (Long64, &[0x0f, 0xb1, 0x0a], "cmpxchgl %ecx,(%rdx)"),
    (Long64, &[0x0f, 0xb0, 0x0a], "cmpxchgb %cl,(%rdx)"),
    (Long64, &[0xf0, 0x0f, 0xb0, 0x27], "lock cmpxchgb %ah,(%rdi)"),
    (Long64, &[0xf0, 0x44, 0x0f, 0xb0, 0x17], "lock cmpxchgb %r10b,(%rdi)"),
    (Long64, &[0xf0, 0x40, 0x0f, 0xb0, 0x3e], "lock cmpxchgb %dil,(%rsi)"),
    (Long64, &[0x66, 0x0f, 0xb1, 0x0a], "cmpxchgw %cx,(%rdx)"),
    (Long64, &[0x66, 0xf0, 0x44, 0x0f, 0xb1, 0x02], "lock cmpxchgw %r8w,(%rdx)"),
    (Long64, &[0xf0, 0x48, 0x0f, 0xb1, 0x37], "lock cmpxchgq %rsi,(%rdi)"),
    (Long64, &[0xf0, 0x4c, 0x0f, 0xb1, 0x1d, 0x78, 0x56, 0x34, 0x12], "lock cmpxchgq %r11,0x12345678(%rip)"),
    (Long64, &[0xf0, 0x4c, 0x0f, 0xb1, 0x4c, 0xcb, 0xf8], "lock cmpxchgq %r9,-0x8(%rbx,%rcx,8)"),
    (Long64, &[0xf0, 0x4a, 0x0f, 0xb1, 0x94, 0xb4, 0x78, 0x56, 0x34, 0x12], "lock cmpxchgq %rdx,0x12345678(%rsp,%r14,4)"),
    (Long64, &[0x65, 0xf0, 0x48, 0x0f, 0xb1, 0x08], "lock cmpxchgq %rcx,%gs:(%rax)"),
    (Long64, &[0x67, 0xf0, 0x0f, 0xb1, 0x0a], "lock cmpxchgl %ecx,(%edx)"),
    (Long64, &[0xf2, 0xf0, 0x48, 0x0f, 0xb1, 0x0a], "xacquire lock cmpxchgq %rcx,(%rdx)"),
    (Long64, &[0x0f, 0xb1, 0xca], "cmpxchgl %ecx,%edx"),
    (Long64, &[0x0f, 0xb0, 0xc8], "cmpxchgb %cl,%al"),
    (Long64, &[0xf3, 0xa4], "rep movsb %ds:(%rsi),%es:(%rdi)"),
    (Long64, &[0xf3, 0x48, 0xab], "rep stosq %rax,%es:(%rdi)"),
    (Long64, &[0x87, 0x07], "xchgl %eax,(%rdi)"),
    (Long64, &[0x87, 0x07], "xchgl (%rdi),%eax"),
    (Long64, &[0x86, 0x07], "xchgb %al,(%rdi)"),
    (Long64, &[0x86, 0x23], "xchgb %ah,(%rbx)"),
    (Long64, &[0x86, 0x39], "xchgb %bh,(%rcx)"),
    (Long64, &[0x40, 0x86, 0x37], "xchgb %sil,(%rdi)"),
    (Long64, &[0x44, 0x86, 0x08], "xchgb %r9b,(%rax)"),
    (Long64, &[0x66, 0x87, 0x02], "xchgw %ax,(%rdx)"),
    (Long64, &[0x48, 0x87, 0x07], "xchgq %rax,(%rdi)"),
    (Long64, &[0x4d, 0x87, 0x7c, 0x24, 0x10], "xchgq %r15,0x10(%r12)"),
    (Long64, &[0xf0, 0x48, 0x87, 0x0a], "lock xchgq %rcx,(%rdx)"),
    (Long64, &[0x48, 0x87, 0x05, 0x78, 0x56, 0x34, 0x12], "xchgq %rax,0x12345678(%rip)"),
    (Long64, &[0x4e, 0x87, 0x84, 0xe8, 0x78, 0x56, 0x34, 0x12], "xchgq %r8,0x12345678(%rax,%r13,8)"),
    (Long64, &[0xf3, 0x48, 0x87, 0x0a], "xrelease xchgq %rcx,(%rdx)"),
    (Long64, &[0x87, 0xcb], "xchgl %ecx,%ebx"),
    (Long64, &[0x86, 0xc4], "xchgb %al,%ah"),
    (Long64, &[0x0f, 0x05], "syscall"),
    (Long64, &[0x0f, 0x01, 0xf8], "swapgs"),
    (Long64, &[0x0f, 0x01, 0x10], "lgdt (%rax)"),
    (Long64, &[0x0f, 0x01, 0x38], "invlpg (%rax)"),
    (Long64, &[0x66, 0x0f, 0x70, 0xc1, 0x1b], "pshufd $0x1b,%xmm1,%xmm0"),
    (Long64, &[0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x04], "palignr $0x4,%xmm1,%xmm0"),
    (Long64, &[0x66, 0x0f, 0x38, 0x00, 0xc1], "pshufb %xmm1,%xmm0"),
    (Long64, &[0xf3, 0x0f, 0x6f, 0x07], "movdqu (%rdi),%xmm0"),
    (Long64, &[0x0f, 0xc2, 0xc1, 0x01], "cmpltps %xmm1,%xmm0"),
    (Long64, &[0xf3, 0x0f, 0x1e, 0xfa], "endbr64"),
    (Long64, &[0x66, 0x0f, 0x1f, 0x04, 0x00], "nopw (%rax,%rax,1)"),
    (Long64, &[0xf2, 0x0f, 0x38, 0xf0, 0xc0], "crc32b %al,%eax"),
    (Long64, &[0xe4, 0x60], "inb $0x60,%al"),
    (Long64, &[0xe6, 0x80], "outb %al,$0x80"),
    (Long64, &[0xee], "outb %al,(%dx)"),
    (Long64, &[0x0f, 0x0b], "ud2"),
    (Long64, &[0xdd, 0x00], "fldl (%rax)"),
    (Long64, &[0xdd, 0xd9], "fstp %st(1)"),
    (Long64, &[0x42, 0x89, 0x04, 0x64], "movl %eax,(%rsp,%r12,2)"),
    (Long64, &[0x4e, 0x8b, 0x44, 0xed, 0x11], "movq 0x11(%rbp,%r13,8),%r8"),
    (Long64, &[0x64, 0xf0, 0x48, 0x81, 0x84, 0x98, 0x78, 0x56, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12], "lock addq $0x12345678,%fs:0x12345678(%rax,%rbx,4)"),
    (Prot32, &[0x40], "incl %eax"),
    (Prot32, &[0x48], "decl %eax"),
    (Prot32, &[0x89, 0x07], "movl %eax,(%edi)"),
    (Prot32, &[0xa1, 0x78, 0x56, 0x34, 0x12], "movl 0x12345678,%eax"),
    (Prot32, &[0x67, 0x89, 0x00], "movl %eax,(%bx,%si)"),
    (Prot32, &[0x67, 0x8b, 0x46, 0x00], "movl 0x0(%bp),%eax"),
    (Prot32, &[0x67, 0xa1, 0x34, 0x12], "addr16 movl 0x1234,%eax"),
    (Prot32, &[0x67, 0x8b, 0x06, 0x34, 0x12], "movl 0x1234,%eax"),
    (Prot32, &[0xb8, 0x78, 0x56, 0x34, 0x12], "movl $0x12345678,%eax"),
    (Prot32, &[0x66, 0xb8, 0x34, 0x12], "movw $0x1234,%ax"),
    (Prot32, &[0x06], "pushl %es"),
    (Prot32, &[0x1f], "popl %ds"),
    (Prot32, &[0x60], "pushal"),
    (Prot32, &[0x27], "daa"),
    (Prot32, &[0xd4, 0x0a], "aam $0xa"),
    (Prot32, &[0xce], "into"),
    (Prot32, &[0xea, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00], "ljmpl $0x10,$0x12345678"),
    (Prot32, &[0x9a, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00], "lcalll $0x10,$0x12345678"),
    (Prot32, &[0x66, 0xea, 0x34, 0x12, 0x10, 0x00], "ljmpw $0x10,$0x1234"),
    (Prot32, &[0xc5, 0x08], "ldsl (%eax),%ecx"),
    (Prot32, &[0xc4, 0x08], "lesl (%eax),%ecx"),
    (Prot32, &[0x62, 0x01], "boundl %eax,(%ecx)"),
    (Prot32, &[0x0f, 0x20, 0xc0], "movl %cr0,%eax"),
    (Prot32, &[0x0f, 0x22, 0xd8], "movl %eax,%cr3"),
    (Prot32, &[0x8b, 0x04, 0x24], "movl (%esp),%eax"),
    (Prot32, &[0x8b, 0x0c, 0x85, 0x78, 0x56, 0x34, 0x12], "movl 0x12345678(,%eax,4),%ecx"),
    (Prot32, &[0x0f, 0xb6, 0x16], "movzbl (%esi),%edx"),
    (Prot32, &[0x66, 0xc7, 0x00, 0x34, 0x12], "movw $0x1234,(%eax)"),
    (Prot32, &[0x88, 0x21], "movb %ah,(%ecx)"),
    (Prot32, &[0x8a, 0x3a], "movb (%edx),%bh"),
    (Prot32, &[0x87, 0x01], "xchgl %eax,(%ecx)"),
    (Prot32, &[0x86, 0x30], "xchgb %dh,(%eax)"),
    (Prot32, &[0x66, 0x87, 0x75, 0x10], "xchgw %si,0x10(%ebp)"),
    (Prot32, &[0xf0, 0x0f, 0xb1, 0x0a], "lock cmpxchgl %ecx,(%edx)"),
    (Prot32, &[0x66, 0xf0, 0x0f, 0xb1, 0x1f], "lock cmpxchgw %bx,(%edi)"),
    (Prot32, &[0x0f, 0xb0, 0xbc, 0x73, 0x78, 0x56, 0x34, 0x12], "cmpxchgb %bh,0x12345678(%ebx,%esi,2)"),
    (Prot32, &[0xf0, 0x0f, 0xb1, 0x1d, 0x78, 0x56, 0x34, 0x12], "lock cmpxchgl %ebx,0x12345678"),
    (Prot32, &[0x67, 0xf0, 0x0f, 0xb1, 0x08], "lock cmpxchgl %ecx,(%bx,%si)"),
    (Prot32, &[0x87, 0xcb], "xchgl %ecx,%ebx"),
    (Prot32, &[0x0f, 0xb1, 0xca], "cmpxchgl %ecx,%edx"),
    (Prot32, &[0x0f, 0xa2], "cpuid"),
    (Prot32, &[0x0f, 0x01, 0xc1], "vmcall"),
    (Prot32, &[0xf4], "hlt"),
    (Prot32, &[0xcd, 0x80], "int $0x80"),
    (Prot32, &[0x8b, 0x85, 0x78, 0x56, 0x34, 0x12], "movl 0x12345678(%ebp),%eax"),
    (Prot32, &[0x8b, 0x45, 0x00], "movl 0x0(%ebp),%eax"),
    (Prot32, &[0xe8, 0x00, 0x10, 0x00, 0x00], "calll 0x1075"),
    (Prot32, &[0xe9, 0x00, 0x10, 0x00, 0x00], "jmpl 0x107a"),
    (Prot32, &[0x0f, 0x85, 0xff, 0x0f, 0x00, 0x00], "jne 0x107f"),
    (Prot32, &[0x68, 0x78, 0x56, 0x34, 0x12], "pushl $0x12345678"),
    (Prot32, &[0xc8, 0x08, 0x00, 0x01], "enterl $0x8,$0x1"),
    (Prot16, &[0x89, 0x07], "movw %ax,(%bx)"),
    (Prot16, &[0x8b, 0x04], "movw (%si),%ax"),
    (Prot16, &[0xa1, 0x34, 0x12], "movw 0x1234,%ax"),
    (Prot16, &[0x66, 0x89, 0x07], "movl %eax,(%bx)"),
    (Prot16, &[0x67, 0x66, 0xa1, 0x78, 0x56, 0x34, 0x12], "addr32 movl 0x12345678,%eax"),
    (Prot16, &[0x67, 0x66, 0x89, 0x00], "movl %eax,(%eax)"),
    (Prot16, &[0x67, 0x89, 0x04, 0x24], "movw %ax,(%esp)"),
    (Prot16, &[0xb8, 0x34, 0x12], "movw $0x1234,%ax"),
    (Prot16, &[0x66, 0xb8, 0x78, 0x56, 0x34, 0x12], "movl $0x12345678,%eax"),
    (Prot16, &[0x8b, 0x87, 0x34, 0x12], "movw 0x1234(%bx),%ax"),
    (Prot16, &[0x8a, 0x43, 0x12], "movb 0x12(%bp,%di),%al"),
    (Prot16, &[0x8a, 0x06, 0x34, 0x12], "movb 0x1234,%al"),
    (Prot16, &[0xc7, 0x05, 0x78, 0x56], "movw $0x5678,(%di)"),
    (Prot16, &[0x66, 0xc7, 0x05, 0x78, 0x56, 0x34, 0x12], "movl $0x12345678,(%di)"),
    (Prot16, &[0xe9, 0x00, 0x10], "jmpw 0x103b"),
    (Prot16, &[0x9a, 0x34, 0x12, 0x00, 0xf0], "lcallw $0xf000,$0x1234"),
    (Prot16, &[0x66, 0xea, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00], "ljmpl $0x10,$0x12345678"),
    (Prot16, &[0xcd, 0x10], "int $0x10"),
    (Prot16, &[0xf4], "hlt"),
    (Prot16, &[0x0f, 0xa2], "cpuid"),
    (Prot16, &[0x0f, 0x32], "rdmsr"),
    (Prot16, &[0x68, 0x34, 0x12], "pushw $0x1234"),
    (Prot16, &[0x0f, 0x20, 0xc0], "movl %cr0,%eax"),
    (Prot16, &[0x0f, 0xb6, 0x07], "movzbw (%bx),%ax"),
    (Prot16, &[0x8b, 0x46, 0x00], "movw 0x0(%bp),%ax"),
    (Prot16, &[0x87, 0x07], "xchgw %ax,(%bx)"),
    (Prot16, &[0x66, 0x87, 0x07], "xchgl %eax,(%bx)"),
    (Prot16, &[0x86, 0x6c, 0x12], "xchgb %ch,0x12(%si)"),
    (Prot16, &[0xf0, 0x0f, 0xb1, 0x8b, 0x34, 0x12], "lock cmpxchgw %cx,0x1234(%bp,%di)"),
    (Prot16, &[0x66, 0xf0, 0x0f, 0xb1, 0x16, 0x34, 0x12], "lock cmpxchgl %edx,0x1234"),
    (Prot16, &[0x67, 0xf0, 0x0f, 0xb0, 0x10], "lock cmpxchgb %dl,(%eax)"),
    ];

    fn dec(mode: CodeMode, bytes: &[u8]) -> Result<Insn, DecodeError> {
        decode(bytes, mode)
    }

    fn kind(mode: CodeMode, bytes: &[u8]) -> InsnKind {
        let insn = dec(mode, bytes).unwrap_or_else(|e| panic!("{bytes:02x?}: {e:?}"));
        assert_eq!(usize::from(insn.len), bytes.len(), "{bytes:02x?}");
        insn.kind
    }

    fn store(size: u8, src: Operand) -> InsnKind {
        InsnKind::Store { size, src }
    }

    fn load(size: u8, dst: Reg, dst_size: u8, extend: Extend) -> InsnKind {
        InsnKind::Load {
            size,
            dst,
            dst_size,
            extend,
        }
    }

    fn r(n: u8) -> Reg {
        Reg::gpr(n).expect("n < 16")
    }

    #[test]
    fn real_encodings_decode_to_their_length() {
        assert!(ENCODINGS.len() >= 170);
        for &(mode, bytes, text) in ENCODINGS {
            let modes: &[CodeMode] = if mode == Prot16 {
                &[Prot16, Real16]
            } else {
                &[mode]
            };
            for &m in modes {
                let insn = dec(m, bytes).unwrap_or_else(|e| panic!("{text} ({m:?}): {e:?}"));
                assert_eq!(usize::from(insn.len), bytes.len(), "{text} ({m:?})");
                // Trailing bytes change nothing.
                let mut padded = [0x90u8; 32];
                padded[..bytes.len()].copy_from_slice(bytes);
                assert_eq!(dec(m, &padded), Ok(insn), "{text} ({m:?}) padded");
                padded[bytes.len()..].fill(0x66);
                assert_eq!(dec(m, &padded), Ok(insn), "{text} ({m:?}) padded");
            }
        }
    }

    #[test]
    fn truncated_at_every_length() {
        for &(mode, bytes, text) in ENCODINGS {
            for k in 0..bytes.len() {
                assert_eq!(
                    dec(mode, &bytes[..k]),
                    Err(DecodeError::Truncated),
                    "{text}[..{k}]"
                );
            }
        }
        for mode in [Real16, Prot16, Prot32, Long64] {
            assert_eq!(dec(mode, &[]), Err(DecodeError::Truncated));
            // Prefixes alone, at every count below the limit.
            for n in 1..MAX_INSN_LEN {
                for p in [
                    0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65,
                ] {
                    let bytes = [p; 15];
                    assert_eq!(
                        dec(mode, &bytes[..n]),
                        Err(DecodeError::Truncated),
                        "{p:x}*{n}"
                    );
                }
            }
        }
        // Escape bytes, ModRM, SIB, displacement, immediate each cut short.
        assert_eq!(dec(Long64, &[0x0F]), Err(DecodeError::Truncated));
        assert_eq!(dec(Long64, &[0x0F, 0x38]), Err(DecodeError::Truncated));
        assert_eq!(
            dec(Long64, &[0x0F, 0x3A, 0x0F, 0xC1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(dec(Long64, &[0x48]), Err(DecodeError::Truncated));
        assert_eq!(dec(Long64, &[0x8B, 0x04]), Err(DecodeError::Truncated));
        assert_eq!(
            dec(Long64, &[0x8B, 0x04, 0x25, 0, 0, 0]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            dec(Long64, &[0x48, 0xB8, 1, 2, 3, 4, 5, 6, 7]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(dec(Prot32, &[0xC4]), Err(DecodeError::Truncated));
        assert_eq!(dec(Long64, &[0x8F]), Err(DecodeError::Truncated));
    }

    #[test]
    fn fifteen_bytes_is_the_limit() {
        // 64 F0 48 81 84 98 disp32 imm32 is 14 bytes; one more prefix makes 15.
        let mut max = [0u8; 16];
        max[0] = 0x3E;
        max[1..15].copy_from_slice(&[
            0x64, 0xF0, 0x48, 0x81, 0x84, 0x98, 0x78, 0x56, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12,
        ]);
        let insn = dec(Long64, &max[..15]).expect("15 bytes is legal");
        assert_eq!(insn.len, 15);
        assert!(insn.prefixes.lock);
        assert_eq!(insn.prefixes.segment, Some(Segment::Fs));
        assert_eq!(insn.prefixes.rex.map(Rex::raw), Some(0x48));
        // One prefix more is 16 bytes: #GP on the CPU.
        let mut long = [0x2Eu8; 17];
        long[1..16].copy_from_slice(&max[..15]);
        assert_eq!(dec(Long64, &long), Err(DecodeError::TooLong));
        assert_eq!(dec(Long64, &long[..16]), Err(DecodeError::TooLong));

        for mode in [Real16, Prot16, Prot32, Long64] {
            // 14 prefixes + NOP: 15 bytes.
            let mut b = [0x66u8; 20];
            b[14] = 0x90;
            assert_eq!(dec(mode, &b).map(|i| i.len), Ok(15));
            // 15 prefixes + NOP: too long, however many bytes follow.
            b[14] = 0x66;
            b[15] = 0x90;
            assert_eq!(dec(mode, &b), Err(DecodeError::TooLong));
            assert_eq!(dec(mode, &b[..16]), Err(DecodeError::TooLong));
            assert_eq!(dec(mode, &b[..15]), Err(DecodeError::TooLong));
            assert_eq!(dec(mode, &[0x3E; 40]), Err(DecodeError::TooLong));
        }
        // Too long is known before the immediate is there: 13 prefixes, mov eax, imm32.
        let mut b = [0x3Eu8; 15];
        b[13] = 0xB8;
        assert_eq!(dec(Prot32, &b[..15]), Err(DecodeError::TooLong));
        assert_eq!(dec(Prot32, &b[..14]), Err(DecodeError::TooLong));
    }

    #[test]
    fn exit_instructions() {
        use InsnKind::*;
        #[rustfmt::skip]
        let cases: &[(&[u8], InsnKind)] = &[
            (&[0x0F, 0xA2], Cpuid),
            (&[0xF4], Hlt),
            (&[0x0F, 0x01, 0xC1], Vmcall),
            (&[0x0F, 0x01, 0xD9], Vmmcall),
            (&[0x0F, 0x32], Rdmsr),
            (&[0x0F, 0x30], Wrmsr),
            (&[0x0F, 0x31], Rdtsc),
            (&[0x0F, 0x01, 0xF9], Rdtscp),
            (&[0x0F, 0x01, 0xD1], Xsetbv),
            (&[0x0F, 0x08], Invd),
            (&[0x0F, 0x09], Wbinvd),
            (&[0xF3, 0x0F, 0x09], Wbnoinvd),
            (&[0xF3, 0x90], Pause),
            (&[0xCC], Int3),
            (&[0xCD, 0x80], IntN(0x80)),
            (&[0xCD, 0x03], IntN(3)),
            (&[0x0F, 0x06], Clts),
            // Prefixes that do not change the instruction.
            (&[0x2E, 0x0F, 0xA2], Cpuid),
            (&[0x66, 0xF4], Hlt),
            (&[0x3E, 0x0F, 0x01, 0xC1], Vmcall),
        ];
        for mode in [Real16, Prot16, Prot32, Long64] {
            for &(bytes, k) in cases {
                assert_eq!(kind(mode, bytes), k, "{bytes:02x?} {mode:?}");
            }
        }
        // REX does not change them in 64-bit mode.
        assert_eq!(kind(Long64, &[0x48, 0x0F, 0xA2]), Cpuid);
        assert_eq!(kind(Long64, &[0x48, 0x0F, 0x01, 0xD9]), Vmmcall);
        // Mandatory-prefix siblings are something else: F3 0F 01 D9 is VMGEXIT.
        assert_eq!(
            kind(Long64, &[0xF3, 0x0F, 0x01, 0xD9]),
            Other { opcode: 0x0F01 }
        );
        assert_eq!(
            kind(Long64, &[0x66, 0x0F, 0x01, 0xC1]),
            Other { opcode: 0x0F01 }
        );
        assert_eq!(
            kind(Long64, &[0xF2, 0x0F, 0x01, 0xF9]),
            Other { opcode: 0x0F01 }
        );
        // Other 0F 01 members, register and memory forms.
        assert_eq!(kind(Long64, &[0x0F, 0x01, 0xD0]), Other { opcode: 0x0F01 }); // xgetbv
        assert_eq!(kind(Long64, &[0x0F, 0x01, 0xF8]), Other { opcode: 0x0F01 }); // swapgs
        let invlpg = dec(Long64, &[0x0F, 0x01, 0x38]).unwrap();
        assert_eq!((invlpg.len, invlpg.modrm), (3, Some(0x38)));
        // 41 90 is xchg %eax,%r8d, not a NOP; with F3 it is not PAUSE either.
        assert_eq!(kind(Long64, &[0x41, 0x90]), Other { opcode: 0x90 });
        assert_eq!(kind(Long64, &[0xF3, 0x41, 0x90]), Other { opcode: 0x90 });
        assert_eq!(kind(Long64, &[0xF3, 0x48, 0x90]), Pause);
        assert_eq!(kind(Long64, &[0x90]), Other { opcode: 0x90 });
        assert_eq!(kind(Long64, &[0xF2, 0x90]), Other { opcode: 0x90 });
        // INT1 and INTO are not INT n.
        assert_eq!(kind(Long64, &[0xF1]), Other { opcode: 0xF1 });
        assert_eq!(kind(Prot32, &[0xCE]), Other { opcode: 0xCE });
    }

    #[test]
    fn control_and_debug_register_moves() {
        use InsnKind::*;
        assert_eq!(
            kind(Long64, &[0x0F, 0x20, 0xC0]),
            MovFromCr {
                cr: 0,
                gpr: Reg::RAX
            }
        );
        assert_eq!(
            kind(Long64, &[0x0F, 0x22, 0xD8]),
            MovToCr {
                cr: 3,
                gpr: Reg::RAX
            }
        );
        assert_eq!(
            kind(Long64, &[0x0F, 0x22, 0xE0]),
            MovToCr {
                cr: 4,
                gpr: Reg::RAX
            }
        );
        assert_eq!(
            kind(Long64, &[0x45, 0x0F, 0x20, 0xC1]),
            MovFromCr { cr: 8, gpr: r(9) }
        );
        assert_eq!(
            kind(Long64, &[0x41, 0x0F, 0x22, 0xDF]),
            MovToCr { cr: 3, gpr: r(15) }
        );
        assert_eq!(
            kind(Long64, &[0x0F, 0x21, 0xF8]),
            MovFromDr {
                dr: 7,
                gpr: Reg::RAX
            }
        );
        assert_eq!(
            kind(Long64, &[0x0F, 0x23, 0xC2]),
            MovToDr {
                dr: 0,
                gpr: Reg::RDX
            }
        );
        assert_eq!(
            kind(Prot32, &[0x0F, 0x20, 0xE3]),
            MovFromCr {
                cr: 4,
                gpr: Reg::RBX
            }
        );
        assert_eq!(
            kind(Real16, &[0x0F, 0x22, 0xC0]),
            MovToCr {
                cr: 0,
                gpr: Reg::RAX
            }
        );
        // AMD's LOCK MOV CR0 is CR8 (32-bit code's way to reach the TPR).
        assert_eq!(
            kind(Prot32, &[0xF0, 0x0F, 0x20, 0xC0]),
            MovFromCr {
                cr: 8,
                gpr: Reg::RAX
            }
        );
        assert_eq!(
            kind(Prot32, &[0xF0, 0x0F, 0x22, 0xC1]),
            MovToCr {
                cr: 8,
                gpr: Reg::RCX
            }
        );
        // The mod bits are ignored: never a SIB or a displacement.
        for modrm in [0x00, 0x04, 0x05, 0x44, 0x84, 0xC4] {
            for mode in [Prot16, Prot32, Long64] {
                let i = dec(mode, &[0x0F, 0x20, modrm, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
                assert_eq!(i.len, 3, "{modrm:x} {mode:?}");
                assert_eq!(
                    i.kind,
                    MovFromCr {
                        cr: 0,
                        gpr: r(modrm & 7)
                    }
                );
            }
        }
    }

    #[test]
    fn mmio_stores() {
        #[rustfmt::skip]
        let cases: &[(CodeMode, &[u8], InsnKind)] = &[
            (Long64, &[0x89, 0x07], store(4, Operand::Reg(Reg::RAX, 4))),
            (Long64, &[0x48, 0x89, 0x47, 0x10], store(8, Operand::Reg(Reg::RAX, 8))),
            (Long64, &[0x45, 0x89, 0x8C, 0x24, 0x78, 0x56, 0x34, 0x12], store(4, Operand::Reg(r(9), 4))),
            (Long64, &[0x66, 0x89, 0x02], store(2, Operand::Reg(Reg::RAX, 2))),
            (Long64, &[0x88, 0x03], store(1, Operand::Reg(Reg::RAX, 1))),
            (Long64, &[0x88, 0x23], store(1, Operand::Reg(Reg::AH, 1))),
            (Long64, &[0x40, 0x88, 0x23], store(1, Operand::Reg(Reg::RSP, 1))),
            (Long64, &[0x40, 0x88, 0x33], store(1, Operand::Reg(Reg::RSI, 1))),
            (Long64, &[0x44, 0x88, 0x23], store(1, Operand::Reg(r(12), 1))),
            (Long64, &[0x88, 0x3B], store(1, Operand::Reg(Reg::BH, 1))),
            (Long64, &[0xC6, 0x07, 0x5A], store(1, Operand::Imm(0x5A))),
            (Long64, &[0x66, 0xC7, 0x07, 0x34, 0x12], store(2, Operand::Imm(0x1234))),
            (Long64, &[0xC7, 0x47, 0x04, 0xEF, 0xBE, 0xAD, 0xDE], store(4, Operand::Imm(0xDEAD_BEEF))),
            (Long64, &[0x48, 0xC7, 0x07, 0xFF, 0xFF, 0xFF, 0xFF], store(8, Operand::Imm(u64::MAX))),
            (Long64, &[0x48, 0xC7, 0x07, 0xFF, 0xFF, 0xFF, 0x7F], store(8, Operand::Imm(0x7FFF_FFFF))),
            (Long64, &[0x48, 0xC7, 0x07, 0x00, 0x00, 0x00, 0x80], store(8, Operand::Imm(0xFFFF_FFFF_8000_0000))),
            (Long64, &[0xA2, 1, 2, 3, 4, 5, 6, 7, 8], store(1, Operand::Reg(Reg::RAX, 1))),
            (Long64, &[0xA3, 1, 2, 3, 4, 5, 6, 7, 8], store(4, Operand::Reg(Reg::RAX, 4))),
            (Long64, &[0x48, 0xA3, 1, 2, 3, 4, 5, 6, 7, 8], store(8, Operand::Reg(Reg::RAX, 8))),
            (Long64, &[0x67, 0xA3, 1, 2, 3, 4], store(4, Operand::Reg(Reg::RAX, 4))),
            (Long64, &[0x67, 0x89, 0x07], store(4, Operand::Reg(Reg::RAX, 4))),
            (Long64, &[0x89, 0x04, 0x64], store(4, Operand::Reg(Reg::RAX, 4))),
            (Prot32, &[0x88, 0x21], store(1, Operand::Reg(Reg::AH, 1))),
            (Prot32, &[0x66, 0xC7, 0x00, 0x34, 0x12], store(2, Operand::Imm(0x1234))),
            (Prot32, &[0xA3, 0x78, 0x56, 0x34, 0x12], store(4, Operand::Reg(Reg::RAX, 4))),
            (Prot16, &[0x89, 0x07], store(2, Operand::Reg(Reg::RAX, 2))),
            (Prot16, &[0x66, 0x89, 0x07], store(4, Operand::Reg(Reg::RAX, 4))),
            (Prot16, &[0xC7, 0x05, 0x78, 0x56], store(2, Operand::Imm(0x5678))),
            (Prot16, &[0x66, 0xC7, 0x05, 0x78, 0x56, 0x34, 0x12], store(4, Operand::Imm(0x1234_5678))),
            (Real16, &[0xA2, 0x34, 0x12], store(1, Operand::Reg(Reg::RAX, 1))),
            (Real16, &[0x67, 0x66, 0x89, 0x00], store(4, Operand::Reg(Reg::RAX, 4))),
        ];
        for &(mode, bytes, k) in cases {
            assert_eq!(kind(mode, bytes), k, "{bytes:02x?} {mode:?}");
        }
        let fs = dec(Long64, &[0x64, 0x89, 0x07]).unwrap();
        assert_eq!(fs.prefixes.segment, Some(Segment::Fs));
    }

    #[test]
    fn mmio_loads() {
        use super::Extend::{Sign, Zero};
        let none = Extend::None;
        #[rustfmt::skip]
        let cases: &[(CodeMode, &[u8], InsnKind)] = &[
            (Long64, &[0x8B, 0x07], load(4, Reg::RAX, 4, none)),
            (Long64, &[0x4C, 0x8B, 0x1F], load(8, r(11), 8, none)),
            (Long64, &[0x48, 0x8B, 0x4C, 0x24, 0x08], load(8, Reg::RCX, 8, none)),
            (Long64, &[0x8B, 0x14, 0x98], load(4, Reg::RDX, 4, none)),
            (Long64, &[0x8B, 0x05, 0x00, 0x10, 0x00, 0x00], load(4, Reg::RAX, 4, none)),
            (Long64, &[0x66, 0x8B, 0x07], load(2, Reg::RAX, 2, none)),
            (Long64, &[0x8A, 0x27], load(1, Reg::AH, 1, none)),
            (Long64, &[0x40, 0x8A, 0x27], load(1, Reg::RSP, 1, none)),
            (Long64, &[0x0F, 0xB6, 0x07], load(1, Reg::RAX, 4, Zero)),
            (Long64, &[0x0F, 0xB7, 0x07], load(2, Reg::RAX, 4, Zero)),
            (Long64, &[0x48, 0x0F, 0xBE, 0x07], load(1, Reg::RAX, 8, Sign)),
            (Long64, &[0x0F, 0xBF, 0x07], load(2, Reg::RAX, 4, Sign)),
            (Long64, &[0x66, 0x0F, 0xB6, 0x07], load(1, Reg::RAX, 2, Zero)),
            (Long64, &[0x44, 0x0F, 0xB6, 0x3F], load(1, r(15), 4, Zero)),
            (Long64, &[0x48, 0x63, 0x07], load(4, Reg::RAX, 8, Sign)),
            (Long64, &[0x63, 0x07], load(4, Reg::RAX, 4, none)),
            (Long64, &[0xA0, 1, 2, 3, 4, 5, 6, 7, 8], load(1, Reg::RAX, 1, none)),
            (Long64, &[0x48, 0xA1, 1, 2, 3, 4, 5, 6, 7, 8], load(8, Reg::RAX, 8, none)),
            (Long64, &[0x67, 0xA1, 0x78, 0x56, 0x34, 0x12], load(4, Reg::RAX, 4, none)),
            (Prot32, &[0x8A, 0x3A], load(1, Reg::BH, 1, none)),
            (Prot32, &[0x0F, 0xB6, 0x16], load(1, Reg::RDX, 4, Zero)),
            (Prot32, &[0xA1, 0x78, 0x56, 0x34, 0x12], load(4, Reg::RAX, 4, none)),
            (Prot32, &[0x67, 0xA1, 0x34, 0x12], load(4, Reg::RAX, 4, none)),
            (Prot16, &[0xA1, 0x34, 0x12], load(2, Reg::RAX, 2, none)),
            (Prot16, &[0x8B, 0x04], load(2, Reg::RAX, 2, none)),
            (Prot16, &[0x8A, 0x43, 0x12], load(1, Reg::RAX, 1, none)),
            (Prot16, &[0x0F, 0xB6, 0x07], load(1, Reg::RAX, 2, Zero)),
            (Prot16, &[0x67, 0x66, 0xA1, 0x78, 0x56, 0x34, 0x12], load(4, Reg::RAX, 4, none)),
            (Real16, &[0x8B, 0x46, 0x00], load(2, Reg::RAX, 2, none)),
        ];
        for &(mode, bytes, k) in cases {
            assert_eq!(kind(mode, bytes), k, "{bytes:02x?} {mode:?}");
        }
        // ARPL, not MOVSXD, outside 64-bit mode.
        assert_eq!(
            kind(Prot32, &[0x63, 0x07]),
            InsnKind::Other { opcode: 0x63 }
        );
    }

    #[test]
    fn register_forms_and_lock_are_not_emulated() {
        use InsnKind::Other;
        assert_eq!(kind(Long64, &[0x89, 0xC3]), Other { opcode: 0x89 });
        assert_eq!(kind(Long64, &[0x8B, 0xC3]), Other { opcode: 0x8B });
        assert_eq!(kind(Long64, &[0x88, 0xE0]), Other { opcode: 0x88 });
        assert_eq!(
            kind(Long64, &[0xC7, 0xC0, 1, 0, 0, 0]),
            Other { opcode: 0xC7 }
        );
        assert_eq!(kind(Long64, &[0xC6, 0xC0, 1]), Other { opcode: 0xC6 });
        assert_eq!(kind(Long64, &[0x0F, 0xB6, 0xC0]), Other { opcode: 0x0FB6 });
        assert_eq!(kind(Long64, &[0x48, 0x63, 0xC0]), Other { opcode: 0x63 });
        // XABORT imm8, XBEGIN rel32.
        assert_eq!(kind(Long64, &[0xC6, 0xF8, 0x01]), Other { opcode: 0xC6 });
        assert_eq!(
            kind(Long64, &[0xC7, 0xF8, 0, 0, 0, 0]),
            Other { opcode: 0xC7 }
        );
        assert_eq!(
            kind(Prot32, &[0x66, 0xC7, 0xF8, 0, 0]),
            Other { opcode: 0xC7 }
        );
        // C6/C7 /1../7 are #UD.
        assert_eq!(dec(Long64, &[0xC6, 0x0F, 0x00]), Err(DecodeError::Invalid));
        assert_eq!(
            dec(Long64, &[0xC7, 0x38, 0, 0, 0, 0]),
            Err(DecodeError::Invalid)
        );
        // LOCK MOV is #UD: nothing to emulate.
        assert_eq!(dec(Long64, &[0xF0, 0x89, 0x07]), Err(DecodeError::Invalid));
        assert_eq!(
            dec(Long64, &[0xF0, 0x0F, 0xB6, 0x07]),
            Err(DecodeError::Invalid)
        );
        assert_eq!(
            dec(Prot32, &[0xF0, 0xA1, 0, 0, 0, 0]),
            Err(DecodeError::Invalid)
        );
        // XCHG and CMPXCHG with a memory operand are emulated, LOCK or not (see
        // `exchanges`).
        assert_eq!(
            kind(Long64, &[0x87, 0x07]),
            InsnKind::Xchg {
                size: 4,
                reg: Reg::RAX
            }
        );
        assert_eq!(
            kind(Long64, &[0xF0, 0x0F, 0xB1, 0x0A]),
            InsnKind::Cmpxchg {
                size: 4,
                reg: Reg::RCX
            }
        );
        // Memory instructions keel does not emulate still get their lengths: string
        // ops, MOVNTI, XADD, CMPXCHG8B/16B.
        assert_eq!(kind(Long64, &[0xF3, 0xA4]), Other { opcode: 0xA4 });
        assert_eq!(kind(Long64, &[0x0F, 0xC3, 0x07]), Other { opcode: 0x0FC3 });
        assert_eq!(
            kind(Long64, &[0xF0, 0x0F, 0xC1, 0x07]),
            Other { opcode: 0x0FC1 }
        );
        assert_eq!(
            kind(Long64, &[0xF0, 0x0F, 0xC7, 0x0F]),
            Other { opcode: 0x0FC7 }
        );
        assert_eq!(
            kind(Long64, &[0xF0, 0x48, 0x0F, 0xC7, 0x0F]),
            Other { opcode: 0x0FC7 }
        );
    }

    fn xchg(size: u8, reg: Reg) -> InsnKind {
        InsnKind::Xchg { size, reg }
    }

    fn cmpxchg(size: u8, reg: Reg) -> InsnKind {
        InsnKind::Cmpxchg { size, reg }
    }

    /// XCHG and CMPXCHG with a memory operand: what a PV kernel writes its page tables
    /// with (Linux `xchg` for `ptep_get_and_clear`, `lock cmpxchg` for `cmpxchg64`).
    #[test]
    fn exchanges() {
        #[rustfmt::skip]
        let cases: &[(CodeMode, &[u8], InsnKind)] = &[
            // XCHG, 64-bit mode: every size, REX.R, high bytes, LOCK or not.
            (Long64, &[0x87, 0x07], xchg(4, Reg::RAX)),
            (Long64, &[0x86, 0x07], xchg(1, Reg::RAX)),
            (Long64, &[0x86, 0x23], xchg(1, Reg::AH)),
            (Long64, &[0x86, 0x2F], xchg(1, Reg::CH)),
            (Long64, &[0x86, 0x30], xchg(1, Reg::DH)),
            (Long64, &[0x86, 0x39], xchg(1, Reg::BH)),
            (Long64, &[0x40, 0x86, 0x37], xchg(1, Reg::RSI)),
            (Long64, &[0x40, 0x86, 0x27], xchg(1, Reg::RSP)),
            (Long64, &[0x44, 0x86, 0x08], xchg(1, r(9))),
            (Long64, &[0x66, 0x87, 0x02], xchg(2, Reg::RAX)),
            (Long64, &[0x66, 0x45, 0x87, 0x1A], xchg(2, r(11))),
            (Long64, &[0x48, 0x87, 0x07], xchg(8, Reg::RAX)),
            (Long64, &[0x66, 0x48, 0x87, 0x07], xchg(8, Reg::RAX)),
            (Long64, &[0x4D, 0x87, 0x7C, 0x24, 0x10], xchg(8, r(15))),
            (Long64, &[0xF0, 0x48, 0x87, 0x0A], xchg(8, Reg::RCX)),
            (Long64, &[0xF0, 0x87, 0x0A], xchg(4, Reg::RCX)),
            (Long64, &[0xF0, 0x86, 0x3A], xchg(1, Reg::BH)),
            (Long64, &[0xF0, 0x44, 0x86, 0x3A], xchg(1, r(15))),
            (Long64, &[0x48, 0x87, 0x05, 0x78, 0x56, 0x34, 0x12], xchg(8, Reg::RAX)),
            (Long64, &[0x4E, 0x87, 0x84, 0xE8, 0x78, 0x56, 0x34, 0x12], xchg(8, r(8))),
            (Long64, &[0xF3, 0x48, 0x87, 0x0A], xchg(8, Reg::RCX)),
            (Long64, &[0x64, 0x87, 0x04, 0x25, 0x78, 0x56, 0x34, 0x12], xchg(4, Reg::RAX)),
            // CMPXCHG, 64-bit mode.
            (Long64, &[0x0F, 0xB1, 0x0A], cmpxchg(4, Reg::RCX)),
            (Long64, &[0xF0, 0x0F, 0xB1, 0x0A], cmpxchg(4, Reg::RCX)),
            (Long64, &[0x0F, 0xB0, 0x0A], cmpxchg(1, Reg::RCX)),
            (Long64, &[0xF0, 0x0F, 0xB0, 0x27], cmpxchg(1, Reg::AH)),
            (Long64, &[0xF0, 0x0F, 0xB0, 0x3F], cmpxchg(1, Reg::BH)),
            (Long64, &[0xF0, 0x44, 0x0F, 0xB0, 0x17], cmpxchg(1, r(10))),
            (Long64, &[0xF0, 0x40, 0x0F, 0xB0, 0x3E], cmpxchg(1, Reg::RDI)),
            (Long64, &[0x66, 0x0F, 0xB1, 0x0A], cmpxchg(2, Reg::RCX)),
            (Long64, &[0x66, 0xF0, 0x44, 0x0F, 0xB1, 0x02], cmpxchg(2, r(8))),
            (Long64, &[0xF0, 0x48, 0x0F, 0xB1, 0x37], cmpxchg(8, Reg::RSI)),
            (Long64, &[0x48, 0x0F, 0xB1, 0x37], cmpxchg(8, Reg::RSI)),
            (Long64, &[0xF0, 0x4C, 0x0F, 0xB1, 0x1D, 0x78, 0x56, 0x34, 0x12], cmpxchg(8, r(11))),
            (Long64, &[0xF0, 0x4C, 0x0F, 0xB1, 0x4C, 0xCB, 0xF8], cmpxchg(8, r(9))),
            (Long64, &[0xF0, 0x4A, 0x0F, 0xB1, 0x94, 0xB4, 0x78, 0x56, 0x34, 0x12], cmpxchg(8, Reg::RDX)),
            (Long64, &[0x65, 0xF0, 0x48, 0x0F, 0xB1, 0x08], cmpxchg(8, Reg::RCX)),
            (Long64, &[0x67, 0xF0, 0x0F, 0xB1, 0x0A], cmpxchg(4, Reg::RCX)),
            (Long64, &[0xF2, 0xF0, 0x48, 0x0F, 0xB1, 0x0A], cmpxchg(8, Reg::RCX)),
            (Long64, &[0xF0, 0x4D, 0x0F, 0xB1, 0x7D, 0x00], cmpxchg(8, r(15))),
            // 32-bit mode: no REX, so 44/48 are INC/DEC and 4 of the 8 byte registers
            // are AH..BH.
            (Prot32, &[0x87, 0x01], xchg(4, Reg::RAX)),
            (Prot32, &[0x86, 0x30], xchg(1, Reg::DH)),
            (Prot32, &[0x66, 0x87, 0x75, 0x10], xchg(2, Reg::RSI)),
            (Prot32, &[0xF0, 0x87, 0x1C, 0x24], xchg(4, Reg::RBX)),
            (Prot32, &[0xF0, 0x0F, 0xB1, 0x0A], cmpxchg(4, Reg::RCX)),
            (Prot32, &[0x66, 0xF0, 0x0F, 0xB1, 0x1F], cmpxchg(2, Reg::RBX)),
            (Prot32, &[0x0F, 0xB0, 0xBC, 0x73, 0x78, 0x56, 0x34, 0x12], cmpxchg(1, Reg::BH)),
            (Prot32, &[0xF0, 0x0F, 0xB1, 0x1D, 0x78, 0x56, 0x34, 0x12], cmpxchg(4, Reg::RBX)),
            (Prot32, &[0x67, 0xF0, 0x0F, 0xB1, 0x08], cmpxchg(4, Reg::RCX)),
            // 16-bit modes.
            (Prot16, &[0x87, 0x07], xchg(2, Reg::RAX)),
            (Prot16, &[0x66, 0x87, 0x07], xchg(4, Reg::RAX)),
            (Prot16, &[0x86, 0x6C, 0x12], xchg(1, Reg::CH)),
            (Prot16, &[0xF0, 0x0F, 0xB1, 0x8B, 0x34, 0x12], cmpxchg(2, Reg::RCX)),
            (Prot16, &[0x66, 0xF0, 0x0F, 0xB1, 0x16, 0x34, 0x12], cmpxchg(4, Reg::RDX)),
            (Real16, &[0x67, 0xF0, 0x0F, 0xB0, 0x10], cmpxchg(1, Reg::RDX)),
            (Real16, &[0xF0, 0x0F, 0xB0, 0x24], cmpxchg(1, Reg::AH)),
        ];
        for &(mode, bytes, k) in cases {
            assert_eq!(kind(mode, bytes), k, "{bytes:02x?} {mode:?}");
            // The LOCK flag is recorded as it was written.
            let i = dec(mode, bytes).unwrap();
            assert_eq!(i.prefixes.lock, bytes.contains(&0xF0), "{bytes:02x?}");
        }
        // Outside 64-bit mode a 4x byte is INC/DEC, not REX: it never widens XCHG.
        assert_eq!(dec(Prot32, &[0x48, 0x87, 0x07]).map(|i| i.len), Ok(1));
        // A REX followed by a legacy prefix is ignored, REX.R included.
        assert_eq!(
            kind(Long64, &[0x4C, 0xF0, 0x0F, 0xB1, 0x0A]),
            cmpxchg(4, Reg::RCX)
        );
    }

    /// The register-register forms stay what they were, LOCK or not (LOCK makes them
    /// #UD on the CPU, which the decoder does not check).
    #[test]
    fn exchange_register_forms_are_other() {
        use InsnKind::Other;
        for mode in [Real16, Prot16, Prot32, Long64] {
            assert_eq!(kind(mode, &[0x87, 0xCB]), Other { opcode: 0x87 });
            assert_eq!(kind(mode, &[0x86, 0xC4]), Other { opcode: 0x86 });
            assert_eq!(kind(mode, &[0x0F, 0xB1, 0xCA]), Other { opcode: 0x0FB1 });
            assert_eq!(kind(mode, &[0x0F, 0xB0, 0xC8]), Other { opcode: 0x0FB0 });
            assert_eq!(kind(mode, &[0xF0, 0x87, 0xC0]), Other { opcode: 0x87 });
            assert_eq!(
                kind(mode, &[0xF0, 0x0F, 0xB1, 0xFF]),
                Other { opcode: 0x0FB1 }
            );
        }
        assert_eq!(kind(Long64, &[0x4D, 0x87, 0xC8]), Other { opcode: 0x87 });
        assert_eq!(
            kind(Long64, &[0x49, 0x0F, 0xB1, 0xD0]),
            Other { opcode: 0x0FB1 }
        );
        // The one-byte XCHG rAX, r (90+r) has no memory operand either.
        assert_eq!(kind(Long64, &[0x93]), Other { opcode: 0x93 });
    }

    /// XCHG (`86`/`87`) and CMPXCHG (`0F B0`/`0F B1`) have MOV's (`88`/`89`) operand
    /// shape: for every ModRM byte, addressing prefix and REX, the same register, size
    /// and length (CMPXCHG one byte longer for its `0F`, LOCK one more), and register
    /// forms `Other`.
    #[test]
    fn exchanges_agree_with_mov_on_every_modrm() {
        // (MOV opcode, our opcode bytes, opcode as `Other` reports it, is CMPXCHG)
        let pairs: [(u8, &[u8], u32, bool); 4] = [
            (0x88, &[0x86], 0x86, false),
            (0x89, &[0x87], 0x87, false),
            (0x88, &[0x0F, 0xB0], 0x0FB0, true),
            (0x89, &[0x0F, 0xB1], 0x0FB1, true),
        ];
        let tail = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99];
        let legacy: &[&[u8]] = &[&[], &[0x66], &[0x67], &[0x66, 0x67], &[0x65]];
        let rexes: &[&[u8]] = &[&[], &[0x40], &[0x41], &[0x44], &[0x48], &[0x4D], &[0x4F]];
        let build = |lock: bool, pre: &[u8], rex: &[u8], op: &[u8], modrm: u8| {
            let lock: &[u8] = if lock { &[0xF0] } else { &[] };
            [lock, pre, rex, op, &[modrm], &tail].concat()
        };
        for mode in [Real16, Prot16, Prot32, Long64] {
            let rexes = if mode == Long64 { rexes } else { &rexes[..1] };
            for (&pre, &rex) in legacy
                .iter()
                .flat_map(|p| rexes.iter().map(move |r| (p, r)))
            {
                for modrm in 0..=255u8 {
                    for &(mov, ours, opcode, is_cmpxchg) in &pairs {
                        let m = dec(mode, &build(false, pre, rex, &[mov], modrm)).unwrap();
                        let want = match m.kind {
                            InsnKind::Store {
                                size,
                                src: Operand::Reg(reg, rsize),
                            } if size == rsize => {
                                if is_cmpxchg {
                                    cmpxchg(size, reg)
                                } else {
                                    xchg(size, reg)
                                }
                            }
                            InsnKind::Other { .. } if modrm >> 6 == 3 => InsnKind::Other { opcode },
                            k => panic!("{modrm:02x} {mode:?}: MOV decoded as {k:?}"),
                        };
                        for lock in [false, true] {
                            let bytes = build(lock, pre, rex, ours, modrm);
                            let i = dec(mode, &bytes).unwrap();
                            let len =
                                usize::from(m.len) + usize::from(is_cmpxchg) + usize::from(lock);
                            assert_eq!(usize::from(i.len), len, "{bytes:02x?} {mode:?}");
                            assert_eq!(i.modrm, Some(modrm), "{bytes:02x?} {mode:?}");
                            assert_eq!(i.kind, want, "{bytes:02x?} {mode:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rex_prefix_rules() {
        // A REX followed by a legacy prefix is ignored.
        let i = dec(Long64, &[0x48, 0x66, 0x89, 0x07]).unwrap();
        assert_eq!((i.len, i.prefixes.rex), (4, None));
        assert_eq!(i.kind, store(2, Operand::Reg(Reg::RAX, 2)));
        // REX.W outranks 66.
        let i = dec(Long64, &[0x66, 0x48, 0x89, 0x07]).unwrap();
        assert_eq!(i.kind, store(8, Operand::Reg(Reg::RAX, 8)));
        let i = dec(Long64, &[0x66, 0x48, 0xC7, 0x07, 0xFE, 0xFF, 0xFF, 0xFF]).unwrap();
        assert_eq!((i.len, i.kind), (8, store(8, Operand::Imm(u64::MAX - 1))));
        // Of two REX prefixes the last counts.
        let i = dec(Long64, &[0x48, 0x41, 0x89, 0x07]).unwrap();
        assert_eq!(i.prefixes.rex.map(Rex::raw), Some(0x41));
        assert_eq!(i.kind, store(4, Operand::Reg(Reg::RAX, 4)));
        let rex = i.prefixes.rex.unwrap();
        assert!(rex.b() && !rex.w() && !rex.r() && !rex.x());
        // Outside 64-bit mode 40-4F are INC/DEC.
        assert_eq!(kind(Prot32, &[0x40]), InsnKind::Other { opcode: 0x40 });
        assert_eq!(dec(Prot32, &[0x48, 0x89, 0x07]).map(|i| i.len), Ok(1));
        assert_eq!(kind(Prot16, &[0x4F]), InsnKind::Other { opcode: 0x4F });
        // REX.B does not change the special ModRM/SIB cases.
        assert_eq!(
            dec(Long64, &[0x41, 0x8B, 0x05, 0, 0, 0, 0]).map(|i| i.len),
            Ok(7)
        );
        assert_eq!(
            dec(Long64, &[0x41, 0x8B, 0x04, 0x25, 0, 0, 0, 0]).map(|i| i.len),
            Ok(8)
        );
        assert_eq!(dec(Long64, &[0x41, 0x8B, 0x45, 0x00]).map(|i| i.len), Ok(4));
        assert_eq!(dec(Long64, &[0x41, 0x8B, 0x04, 0x24]).map(|i| i.len), Ok(4));
        // REX.W B8+r takes an imm64; REX.W elsewhere still an imm32.
        assert_eq!(
            dec(Long64, &[0x49, 0xBA, 1, 2, 3, 4, 5, 6, 7, 8]).map(|i| i.len),
            Ok(10)
        );
        assert_eq!(dec(Long64, &[0x48, 0x05, 1, 2, 3, 4]).map(|i| i.len), Ok(6));
        assert_eq!(
            dec(Long64, &[0x48, 0x69, 0xC0, 1, 2, 3, 4]).map(|i| i.len),
            Ok(7)
        );
    }

    #[test]
    fn prefixes_are_recorded() {
        let i = dec(
            Long64,
            &[0xF2, 0xF3, 0x2E, 0x65, 0x66, 0x67, 0xF0, 0x0F, 0xB1, 0x0A],
        )
        .unwrap();
        assert_eq!(i.len, 10);
        assert_eq!(
            i.prefixes,
            Prefixes {
                lock: true,
                rep: Some(RepPrefix::Rep),
                opsize: true,
                addrsize: true,
                segment: Some(Segment::Gs),
                rex: None,
            }
        );
        for (p, seg) in [
            (0x26, Segment::Es),
            (0x2E, Segment::Cs),
            (0x36, Segment::Ss),
            (0x3E, Segment::Ds),
            (0x64, Segment::Fs),
            (0x65, Segment::Gs),
        ] {
            let i = dec(Prot32, &[p, 0x8B, 0x07]).unwrap();
            assert_eq!(i.prefixes.segment, Some(seg));
        }
        let i = dec(Prot32, &[0xF3, 0xF2, 0xA6]).unwrap();
        assert_eq!(i.prefixes.rep, Some(RepPrefix::Repne));
    }

    #[test]
    fn addressing_forms() {
        // 16-bit: mod=00 rm=110 is disp16; [bp] needs mod=01; mod=10 is disp16.
        for mode in [Real16, Prot16] {
            assert_eq!(dec(mode, &[0x8B, 0x06, 0x34, 0x12]).map(|i| i.len), Ok(4));
            assert_eq!(dec(mode, &[0x8B, 0x46, 0x00]).map(|i| i.len), Ok(3));
            assert_eq!(dec(mode, &[0x8B, 0x86, 0x34, 0x12]).map(|i| i.len), Ok(4));
            assert_eq!(dec(mode, &[0x8B, 0x04]).map(|i| i.len), Ok(2));
            // No SIB in 16-bit addressing: rm=100 is [si].
            assert_eq!(dec(mode, &[0x8B, 0x44, 0x12]).map(|i| i.len), Ok(3));
            // 67: 32-bit addressing, with SIB and disp32.
            assert_eq!(dec(mode, &[0x67, 0x8B, 0x04, 0x24]).map(|i| i.len), Ok(4));
            assert_eq!(
                dec(mode, &[0x67, 0x8B, 0x05, 1, 2, 3, 4]).map(|i| i.len),
                Ok(7)
            );
            assert_eq!(dec(mode, &[0x67, 0x8B, 0x06]).map(|i| i.len), Ok(3));
        }
        // 32-bit: 67 selects 16-bit addressing.
        assert_eq!(
            dec(Prot32, &[0x67, 0x8B, 0x06, 0x34, 0x12]).map(|i| i.len),
            Ok(5)
        );
        assert_eq!(dec(Prot32, &[0x67, 0x8B, 0x04]).map(|i| i.len), Ok(3));
        assert_eq!(dec(Prot32, &[0x8B, 0x05, 1, 2, 3, 4]).map(|i| i.len), Ok(6));
        assert_eq!(
            dec(Prot32, &[0x8B, 0x84, 0x24, 1, 2, 3, 4]).map(|i| i.len),
            Ok(7)
        );
        assert_eq!(dec(Prot32, &[0x8B, 0x44, 0x24, 0x08]).map(|i| i.len), Ok(4));
        assert_eq!(
            dec(Prot32, &[0x8B, 0x04, 0x85, 1, 2, 3, 4]).map(|i| i.len),
            Ok(7)
        );
        assert_eq!(dec(Prot32, &[0x8B, 0x44, 0x85, 0x10]).map(|i| i.len), Ok(4));
        // 64-bit: RIP-relative with or without 67 (then EIP-relative); moffs follows 67.
        assert_eq!(dec(Long64, &[0x8B, 0x05, 1, 2, 3, 4]).map(|i| i.len), Ok(6));
        assert_eq!(
            dec(Long64, &[0x67, 0x8B, 0x05, 1, 2, 3, 4]).map(|i| i.len),
            Ok(7)
        );
        assert_eq!(
            dec(Long64, &[0xA1, 1, 2, 3, 4, 5, 6, 7, 8]).map(|i| i.len),
            Ok(9)
        );
        assert_eq!(dec(Long64, &[0x67, 0xA1, 1, 2, 3, 4]).map(|i| i.len), Ok(6));
        assert_eq!(dec(Prot16, &[0xA1, 1, 2]).map(|i| i.len), Ok(3));
        assert_eq!(dec(Prot16, &[0x67, 0xA1, 1, 2, 3, 4]).map(|i| i.len), Ok(6));
    }

    #[test]
    fn immediates() {
        let len = |mode, bytes: &[u8]| dec(mode, bytes).map(|i| i.len);
        // TEST is the only group-3 member with an immediate.
        assert_eq!(len(Long64, &[0xF6, 0x07, 0x01]), Ok(3));
        assert_eq!(len(Long64, &[0xF6, 0x0F, 0x01]), Ok(3)); // /1 aliases /0
        assert_eq!(len(Long64, &[0xF6, 0x17]), Ok(2)); // not
        assert_eq!(len(Long64, &[0xF7, 0x07, 1, 2, 3, 4]), Ok(6));
        assert_eq!(len(Long64, &[0x66, 0xF7, 0x07, 1, 2]), Ok(5));
        assert_eq!(len(Long64, &[0x48, 0xF7, 0x07, 1, 2, 3, 4]), Ok(7));
        assert_eq!(len(Long64, &[0xF7, 0x3F]), Ok(2)); // idiv
        assert_eq!(len(Prot16, &[0xF7, 0x07, 1, 2]), Ok(4));
        assert_eq!(len(Prot16, &[0x66, 0xF7, 0x07, 1, 2, 3, 4]), Ok(7));
        // Operand size picks imm16 or imm32.
        assert_eq!(len(Prot32, &[0x05, 1, 2, 3, 4]), Ok(5));
        assert_eq!(len(Prot32, &[0x66, 0x05, 1, 2]), Ok(4));
        assert_eq!(len(Prot16, &[0x05, 1, 2]), Ok(3));
        assert_eq!(len(Prot16, &[0x66, 0x05, 1, 2, 3, 4]), Ok(6));
        assert_eq!(len(Prot32, &[0x66, 0xB8, 1, 2]), Ok(4));
        assert_eq!(len(Long64, &[0x66, 0x68, 1, 2]), Ok(4));
        // RET imm16 and ENTER ignore the operand size.
        assert_eq!(len(Prot16, &[0xC2, 8, 0]), Ok(3));
        assert_eq!(len(Long64, &[0x66, 0xCA, 8, 0]), Ok(4));
        assert_eq!(len(Long64, &[0xC8, 0x10, 0, 1]), Ok(4));
        // Far pointers: offset by operand size plus a selector.
        assert_eq!(len(Prot32, &[0x9A, 1, 2, 3, 4, 5, 6]), Ok(7));
        assert_eq!(len(Prot32, &[0x66, 0xEA, 1, 2, 3, 4]), Ok(6));
        assert_eq!(len(Real16, &[0xEA, 0x5B, 0xE0, 0x00, 0xF0]), Ok(5));
        // Near branches.
        assert_eq!(len(Long64, &[0xE8, 1, 2, 3, 4]), Ok(5));
        assert_eq!(len(Long64, &[0x48, 0xE9, 1, 2, 3, 4]), Ok(6));
        assert_eq!(len(Long64, &[0x0F, 0x84, 1, 2, 3, 4]), Ok(6));
        assert_eq!(len(Prot32, &[0x66, 0xE8, 1, 2]), Ok(4));
        assert_eq!(len(Prot16, &[0x0F, 0x85, 1, 2]), Ok(4));
        assert_eq!(len(Prot16, &[0x66, 0xE9, 1, 2, 3, 4]), Ok(6));
        // Intel and AMD disagree on 66 E8 in 64-bit mode.
        assert_eq!(
            len(Long64, &[0x66, 0xE8, 1, 2]),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(
            len(Long64, &[0x66, 0x0F, 0x84, 1, 2]),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(len(Long64, &[0x66, 0x48, 0xE8, 1, 2, 3, 4]), Ok(7));
        // SSE4a EXTRQ/INSERTQ take two imm8; VMREAD none.
        assert_eq!(len(Long64, &[0x66, 0x0F, 0x78, 0xC0, 1, 2]), Ok(6));
        assert_eq!(len(Long64, &[0xF2, 0x0F, 0x78, 0xC1, 1, 2]), Ok(6));
        assert_eq!(len(Long64, &[0x0F, 0x78, 0xC0]), Ok(3));
        assert_eq!(len(Long64, &[0xF2, 0x0F, 0x79, 0xC1]), Ok(4));
        // Three-byte maps and 3DNow!.
        let i = dec(Long64, &[0x66, 0x0F, 0x38, 0x00, 0xC1]).unwrap();
        assert_eq!((i.len, i.kind), (5, InsnKind::Other { opcode: 0x0F_3800 }));
        let i = dec(Long64, &[0x66, 0x0F, 0x3A, 0x0F, 0xC1, 0x04]).unwrap();
        assert_eq!((i.len, i.kind), (6, InsnKind::Other { opcode: 0x0F_3A0F }));
        assert_eq!(
            len(Long64, &[0x0F, 0x3A, 0x0F, 0x44, 0x24, 0x08, 0x04]),
            Ok(7)
        );
        assert_eq!(len(Prot32, &[0x0F, 0x0F, 0xC1, 0xB4]), Ok(4));
        assert_eq!(len(Prot32, &[0x0F, 0x0F, 0x40, 0x10, 0xB4]), Ok(5));
        // The instructions an exit can stop on, with their imm8s.
        assert_eq!(len(Long64, &[0xE4, 0x60]), Ok(2));
        assert_eq!(len(Long64, &[0xE6, 0x80]), Ok(2));
        assert_eq!(len(Long64, &[0xCD, 0x80]), Ok(2));
    }

    #[test]
    fn invalid_and_unsupported() {
        use DecodeError::{Invalid, Unsupported};
        let len = |mode, bytes: &[u8]| dec(mode, bytes).map(|i| i.len);
        // Gone in 64-bit mode, present in the others.
        #[rustfmt::skip]
        let legacy: &[&[u8]] = &[
            &[0x06], &[0x07], &[0x0E], &[0x16], &[0x17], &[0x1E], &[0x1F], &[0x27], &[0x2F],
            &[0x37], &[0x3F], &[0x60], &[0x61], &[0x82, 0xC0, 0x12], &[0x9A, 1, 2, 3, 4, 5, 6],
            &[0xCE], &[0xD4, 0x0A], &[0xD5, 0x0A], &[0xEA, 1, 2, 3, 4, 5, 6],
        ];
        for &bytes in legacy {
            assert_eq!(len(Long64, bytes), Err(Invalid), "{bytes:02x?}");
            assert_eq!(len(Prot32, bytes), Ok(bytes.len() as u8), "{bytes:02x?}");
        }
        // SALC.
        for mode in [Real16, Prot16, Prot32, Long64] {
            assert_eq!(len(mode, &[0xD6]), Err(Invalid));
            // Undefined 0F opcodes.
            for op in [
                0x04, 0x0A, 0x0C, 0x24, 0x25, 0x26, 0x27, 0x36, 0x39, 0x3B, 0x3F, 0x7A, 0xA6,
            ] {
                assert_eq!(len(mode, &[0x0F, op, 0xC0]), Err(Invalid), "0f {op:02x}");
            }
        }
        // UD2 is an instruction (it raises #UD when executed).
        assert_eq!(
            kind(Long64, &[0x0F, 0x0B]),
            InsnKind::Other { opcode: 0x0F0B }
        );
        // VEX and EVEX: always in 64-bit mode, and in 32-bit mode when mod == 11.
        assert_eq!(len(Long64, &[0xC5, 0xF8, 0x77]), Err(Unsupported));
        assert_eq!(
            len(Long64, &[0xC4, 0xE2, 0x79, 0x18, 0x07]),
            Err(Unsupported)
        );
        assert_eq!(
            len(Long64, &[0x62, 0xF1, 0x7C, 0x48, 0x10, 0x07]),
            Err(Unsupported)
        );
        assert_eq!(len(Prot32, &[0xC5, 0xF8, 0x77]), Err(Unsupported));
        assert_eq!(
            len(Prot32, &[0x62, 0xF1, 0x7C, 0x48, 0x10, 0x07]),
            Err(Unsupported)
        );
        // ... and LDS/LES/BOUND otherwise.
        assert_eq!(
            kind(Prot32, &[0xC5, 0x08]),
            InsnKind::Other { opcode: 0xC5 }
        );
        assert_eq!(
            kind(Prot32, &[0xC4, 0x48, 0x10]),
            InsnKind::Other { opcode: 0xC4 }
        );
        assert_eq!(
            kind(Prot16, &[0x62, 0x06, 0x34, 0x12]),
            InsnKind::Other { opcode: 0x62 }
        );
        // XOP (and 8F /1../7); 8F /0 is POP.
        assert_eq!(
            len(Long64, &[0x8F, 0xE9, 0x78, 0x01, 0xC8]),
            Err(Unsupported)
        );
        assert_eq!(len(Long64, &[0x8F, 0x00]), Ok(2));
        assert_eq!(len(Long64, &[0x8F, 0x44, 0x24, 0x08]), Ok(4));
    }

    #[test]
    fn reg_reads_and_writes_follow_the_architecture() {
        let v = 0x1122_3344_5566_7788u64;
        assert_eq!(Reg::RAX.read(v, 1), 0x88);
        assert_eq!(Reg::AH.read(v, 1), 0x77);
        assert_eq!(Reg::RAX.read(v, 2), 0x7788);
        assert_eq!(Reg::RAX.read(v, 4), 0x5566_7788);
        assert_eq!(Reg::RAX.read(v, 8), v);
        assert_eq!(Reg::RAX.write(v, u64::MAX, 1), 0x1122_3344_5566_77FF);
        assert_eq!(Reg::AH.write(v, u64::MAX, 1), 0x1122_3344_5566_FF88);
        assert_eq!(Reg::RAX.write(v, u64::MAX, 2), 0x1122_3344_5566_FFFF);
        assert_eq!(Reg::RAX.write(v, u64::MAX, 4), 0x0000_0000_FFFF_FFFF);
        assert_eq!(Reg::RAX.write(v, u64::MAX, 8), u64::MAX);
        assert_eq!((Reg::BH.index(), Reg::BH.is_high_byte()), (3, true));
        assert_eq!((Reg::RDI.index(), Reg::RDI.is_high_byte()), (7, false));
        assert_eq!(Reg::gpr(16), None);
        assert_eq!(Reg::high_byte_of(4), None);
        assert_eq!(Reg::high_byte_of(1), Some(Reg::CH));
        assert_eq!(Reg::gpr(2), Some(Reg::RDX));
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            DecodeError::TooLong.to_string(),
            "the instruction is longer than 15 bytes"
        );
    }

    #[test]
    fn decode_plain_is_decode() {
        let modes = [Real16, Prot16, Prot32, Long64];
        for (enc, kind, _) in PLAIN {
            for tail in [&[][..], &[0x90], &[0x66, 0x0F, 0x01, 0xD9], &[0xFF; 15]] {
                let bytes: Vec<u8> = enc.iter().chain(tail).copied().collect();
                let plain = decode_plain(&bytes).expect("a plain encoding");
                assert_eq!(plain.kind, kind);
                for mode in modes {
                    assert_eq!(decode(&bytes, mode), Ok(plain), "{bytes:02x?} in {mode:?}");
                }
            }
        }
        // Anything else is left to `decode`: prefixes, other opcodes, truncation.
        for bytes in [
            &[0x66, 0x0F, 0x01, 0xD9][..],
            &[0xF3, 0x0F, 0x01, 0xD9],
            &[0x48, 0x0F, 0xA2],
            &[0x2E, 0xF4],
            &[0x0F, 0x01, 0xD8],
            &[0x0F, 0x01],
            &[0x0F],
            &[],
            &[0x0F, 0x31],
        ] {
            assert_eq!(decode_plain(bytes), None, "{bytes:02x?}");
        }
    }
}
