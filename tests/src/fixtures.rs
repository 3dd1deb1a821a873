//! Inputs the integration tests feed keel, made on the spot so the repository
//! carries no binary blobs.

use std::path::{Path, PathBuf};

use crate::HarnessError;

/// `len` bytes of deterministic pseudo-random data (xorshift64*), the same on every
/// machine, so a failure on "garbage" input reproduces exactly.
pub fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes 8 KiB of [`garbage`] to `<dir>/<name>` and returns the path.
pub fn write_garbage_module(dir: &Path, name: &str, seed: u64) -> Result<PathBuf, HarnessError> {
    let path = dir.join(name);
    std::fs::write(&path, garbage(8 * 1024, seed))
        .map_err(HarnessError::io(format!("writing {}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_deterministic_and_not_a_known_format() {
        let a = garbage(8192, 7);
        assert_eq!(a.len(), 8192);
        assert_eq!(a, garbage(8192, 7));
        assert_ne!(a, garbage(8192, 8));
        assert_ne!(&a[..4], b"\x7fELF");
        assert_ne!(&a[..2], b"\x1f\x8b");
        // Not all one value: it is noise.
        assert!(a.iter().filter(|&&b| b == a[0]).count() < 200);
    }
}
