//! Property tests for the instruction decoder, which reads bytes a guest controls: it
//! must be total, bounded, and depend only on the bytes of the instruction itself.

use proptest::prelude::*;

use super::insn::{CodeMode, DecodeError, InsnKind, MAX_INSN_LEN, Operand, decode, decode_plain};

fn mode() -> impl Strategy<Value = CodeMode> {
    prop_oneof![
        Just(CodeMode::Real16),
        Just(CodeMode::Prot16),
        Just(CodeMode::Prot32),
        Just(CodeMode::Long64),
    ]
}

/// Bytes that look like code more often than uniform noise does: prefixes, escapes and
/// ModRM bytes with SIB/displacement forms are over-represented.
fn code_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        1 => prop::sample::select(vec![
            0x66u8, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x40, 0x48,
            0x4F, 0x0F, 0x38, 0x3A, 0x04, 0x05, 0x44, 0x84, 0x25, 0xC4, 0xC5, 0x62, 0x8F,
            0xF6, 0xF7, 0xB8, 0xA1, 0x86, 0x87, 0xB0, 0xB1,
        ]),
    ]
}

fn code(len: core::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(code_byte(), len)
}

/// Instructions whose length no legacy prefix changes.
const PREFIX_NEUTRAL: &[&[u8]] = &[
    &[0x0F, 0xA2],
    &[0xF4],
    &[0x0F, 0x01, 0xC1],
    &[0x90],
    &[0xCD, 0x80],
    &[0xB0, 0x12],
    &[0xEB, 0x00],
    &[0x0F, 0x31],
    &[0x89, 0xC3],
    &[0x87, 0xCB],
    &[0x0F, 0xB1, 0xCA],
];

const LEGACY_PREFIXES: &[u8] = &[
    0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The fast path answers only where it agrees with the decoder, in every mode.
    #[test]
    fn decode_plain_agrees_with_decode(
        head in prop::sample::select(vec![
            &[][..], &[0x0F, 0x01], &[0x0F], &[0x0F, 0x01, 0xD9], &[0x0F, 0x01, 0xC1],
            &[0x0F, 0xA2], &[0x0F, 0x32], &[0x0F, 0x30], &[0xF4],
        ]),
        tail in code(0..16),
        mode in mode(),
    ) {
        let bytes: Vec<u8> = head.iter().chain(&tail).copied().collect();
        if let Some(insn) = decode_plain(&bytes) {
            prop_assert_eq!(decode(&bytes, mode), Ok(insn));
        }
    }

    /// Total and bounded on arbitrary input.
    #[test]
    fn never_panics_and_length_is_bounded(bytes in code(0..40), mode in mode()) {
        if let Ok(insn) = decode(&bytes, mode) {
            let len = usize::from(insn.len);
            prop_assert!(len >= 1);
            prop_assert!(len <= MAX_INSN_LEN);
            prop_assert!(len <= bytes.len());
        }
    }

    /// The result is a function of the instruction's own bytes: cutting the input to the
    /// decoded length changes nothing, cutting it shorter is `Truncated`, and with 15
    /// bytes available the answer is never `Truncated`.
    #[test]
    fn result_depends_only_on_the_instructions_bytes(bytes in code(15..32), mode in mode()) {
        match decode(&bytes, mode) {
            Ok(insn) => {
                let len = usize::from(insn.len);
                prop_assert_eq!(decode(&bytes[..len], mode), Ok(insn));
                for k in 0..len {
                    prop_assert_eq!(decode(&bytes[..k], mode), Err(DecodeError::Truncated));
                }
            }
            Err(e) => prop_assert_ne!(e, DecodeError::Truncated),
        }
    }

    /// Only `Truncated` can change when more bytes arrive.
    #[test]
    fn more_bytes_change_only_truncated(
        bytes in code(0..15),
        more in prop::collection::vec(any::<u8>(), 0..16),
        mode in mode(),
    ) {
        let short = decode(&bytes, mode);
        let mut long = bytes.clone();
        long.extend_from_slice(&more);
        match short {
            Err(DecodeError::Truncated) => prop_assert!(bytes.len() < MAX_INSN_LEN),
            other => prop_assert_eq!(decode(&long, mode), other),
        }
    }

    /// Each legacy prefix adds one byte, up to the 15-byte limit.
    #[test]
    fn legacy_prefixes_add_one_byte_each(
        prefixes in prop::collection::vec(prop::sample::select(LEGACY_PREFIXES), 0..16),
        base in prop::sample::select(PREFIX_NEUTRAL),
        mode in mode(),
    ) {
        let mut bytes = prefixes.clone();
        bytes.extend_from_slice(base);
        let total = bytes.len();
        bytes.extend_from_slice(&[0xCC; 8]);
        let got = decode(&bytes, mode);
        if total > MAX_INSN_LEN {
            prop_assert_eq!(got, Err(DecodeError::TooLong));
        } else {
            prop_assert_eq!(got.map(|i| usize::from(i.len)), Ok(total));
        }
    }

    /// In 64-bit mode, REX bytes between the legacy prefixes and the opcode count too,
    /// and only the last one before the opcode is kept.
    #[test]
    fn rex_bytes_add_one_byte_each(
        prefixes in prop::collection::vec(prop::sample::select(LEGACY_PREFIXES), 0..4),
        rexes in prop::collection::vec(0x40u8..0x50, 1..4),
        base in prop::sample::select(PREFIX_NEUTRAL),
    ) {
        let mut bytes = prefixes.clone();
        bytes.extend_from_slice(&rexes);
        bytes.extend_from_slice(base);
        let insn = decode(&bytes, CodeMode::Long64);
        prop_assert!(insn.is_ok());
        let insn = insn.unwrap();
        prop_assert_eq!(usize::from(insn.len), bytes.len());
        prop_assert_eq!(insn.prefixes.rex.map(|r| r.raw()), rexes.last().copied());
    }

    /// MMIO loads and stores always describe a memory access of 1, 2, 4 or 8 bytes.
    #[test]
    fn memory_access_sizes_are_architectural(bytes in code(15..24), mode in mode()) {
        match decode(&bytes, mode).map(|i| i.kind) {
            Ok(InsnKind::Store { size, .. }) => prop_assert!(matches!(size, 1 | 2 | 4 | 8)),
            Ok(InsnKind::Xchg { size, reg } | InsnKind::Cmpxchg { size, reg }) => {
                prop_assert!(matches!(size, 1 | 2 | 4 | 8));
                prop_assert!(reg.index() < 16);
                // AH..BH only as byte operands.
                prop_assert!(!reg.is_high_byte() || size == 1);
            }
            Ok(InsnKind::Load { size, dst_size, .. }) => {
                prop_assert!(matches!(size, 1 | 2 | 4 | 8));
                prop_assert!(matches!(dst_size, 1 | 2 | 4 | 8));
                prop_assert!(size <= dst_size);
            }
            _ => {}
        }
    }

    /// XCHG and CMPXCHG decode like the MOV store with the same prefixes, ModRM, SIB
    /// and displacement: the same register and size, the same length (plus the `0F` of
    /// CMPXCHG), `Other` where the MOV is a register form. LOCK, which makes the MOV
    /// #UD, is accepted and only adds its byte.
    #[test]
    fn exchanges_have_the_shape_of_mov(
        prefixes in prop::collection::vec(
            prop::sample::select(vec![0x66u8, 0x67, 0xF2, 0xF3, 0x2E, 0x64, 0x65]),
            0..4,
        ),
        rex in prop::option::of(0x40u8..0x50),
        lock in any::<bool>(),
        op in 0usize..4,
        rest in code(0..12),
        mode in mode(),
    ) {
        let (mov, ours, extra): (u8, &[u8], usize) = [
            (0x88, &[0x86][..], 0),
            (0x89, &[0x87], 0),
            (0x88, &[0x0F, 0xB0], 1),
            (0x89, &[0x0F, 0xB1], 1),
        ][op];
        let build = |lock: bool, opcode: &[u8]| {
            let mut b = Vec::new();
            if lock {
                b.push(0xF0);
            }
            b.extend_from_slice(&prefixes);
            b.extend(rex.filter(|_| mode == CodeMode::Long64));
            b.extend_from_slice(opcode);
            b.extend_from_slice(&rest);
            b
        };
        let m = decode(&build(false, &[mov]), mode);
        let x = decode(&build(lock, ours), mode);
        match m {
            Ok(m) if usize::from(m.len) + extra + usize::from(lock) > MAX_INSN_LEN => {
                prop_assert_eq!(x, Err(DecodeError::TooLong));
            }
            Ok(m) => {
                let x = x.expect("decodes where MOV does");
                prop_assert_eq!(
                    usize::from(x.len),
                    usize::from(m.len) + extra + usize::from(lock)
                );
                prop_assert_eq!(x.prefixes.lock, lock);
                match m.kind {
                    InsnKind::Store { size, src: Operand::Reg(reg, rsize) } => {
                        prop_assert_eq!(size, rsize);
                        let want = if extra == 0 {
                            InsnKind::Xchg { size, reg }
                        } else {
                            InsnKind::Cmpxchg { size, reg }
                        };
                        prop_assert_eq!(x.kind, want);
                    }
                    InsnKind::Other { .. } => {
                        // (`prop_assert!` cannot quote a `{ .. }` pattern.)
                        let other = matches!(x.kind, InsnKind::Other { .. });
                        prop_assert!(other, "{:?}", x.kind);
                    }
                    k => prop_assert!(false, "MOV decoded as {:?}", k),
                }
            }
            // Truncation or the 15-byte limit: the longer encoding cannot do better.
            Err(e) => prop_assert!(x.is_err(), "MOV {:?}, ours {:?}", e, x),
        }
    }
}
