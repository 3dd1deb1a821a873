//! Turning the raw bytes of a serial port into lines a regex can anchor on.
//!
//! GRUB drives its serial console as a VT100: it clears the screen with escape
//! sequences and ends lines with `\r\n`, and its last bytes before jumping to keel
//! are a carriage return on the same line keel's banner then starts. So the harness
//! drops `\r` and ANSI escape sequences (CSI `ESC [ ... final`, and two-byte `ESC x`)
//! before matching; `^\(KEEL\) ` in `docs/serial-contract.md` then means what it says.
//! Invalid UTF-8 (a guest printing junk) becomes U+FFFD rather than an error.

/// Cleans a whole serial log (see the module docs).
pub fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' => {
                // CSI (`ESC [`): parameter and intermediate bytes (0x20..=0x3f), then
                // one final byte (0x40..=0x7e). Any other escape is two bytes long
                // (ESC c, ESC 7, ...): dropping the next char is all it takes.
                if chars.next() == Some('[') {
                    for p in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&p) {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Splits a byte stream arriving in arbitrary chunks into cleaned, complete lines
/// (for showing serial live while the emulator runs).
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`; calls `sink` with each line completed by them (no `\n`).
    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn FnMut(&str)) {
        self.pending.extend_from_slice(bytes);
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            sink(&clean(&line[..line.len() - 1]));
        }
    }

    /// Emits whatever is left as a last (unterminated) line, if anything.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&str)) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let line = clean(&rest);
            if !line.is_empty() {
                sink(&line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_grub_screen_control_and_carriage_returns() {
        let raw = b"\x1b[H\x1b[J\x1b[1;1H\x1b[H\x1b[J\x1b[1;1H  Booting `keel'\r\n\r\n\r(KEEL) keel 0.1.0 x\r\n";
        assert_eq!(clean(raw), "  Booting `keel'\n\n(KEEL) keel 0.1.0 x\n");
    }

    #[test]
    fn two_byte_escapes_and_bad_utf8() {
        assert_eq!(clean(b"a\x1bcb\xffc"), "ab\u{fffd}c");
        assert_eq!(clean(b"trailing\x1b"), "trailing");
        assert_eq!(clean(b"\x1b[0;37;40m(KEEL) x"), "(KEEL) x");
    }

    #[test]
    fn splitter_joins_chunks_into_lines() {
        let mut got = Vec::new();
        let mut sink = |l: &str| got.push(l.to_string());
        let mut s = LineSplitter::default();
        s.push(b"(KEEL) ke", &mut sink);
        s.push(b"el\r\n(KEEL) Boot", &mut sink);
        s.push(b": x\n\x1b[", &mut sink);
        s.push(b"Jtail", &mut sink);
        s.finish(&mut sink);
        assert_eq!(got, ["(KEEL) keel", "(KEEL) Boot: x", "tail"]);
    }
}
