//! The guest's command line: space-separated words, `key=value` or bare flags.
//!
//! The tests steer the guest through it (keel passes dom0 the module's string less
//! its first word, as Xen does):
//!
//! - `mode=probe|hello|crash|reboot|triple-fault` (default `probe`) or one of the
//!   domU modes with their own `key=value` words, see [`crate::modes`];
//! - `domu`: the guest is not the initial domain, so `SIF_INITDOMAIN` must be clear
//!   and privileged-only results change;
//! - `modules=N`: `hvm_start_info` must list exactly N modules;
//! - `module0-prefix=TEXT`: module 0's contents must start with TEXT.

/// The value of the first `key=value` word, if any.
pub fn get<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    words(cmdline).find_map(|w| {
        let rest = w.strip_prefix(key.as_bytes())?;
        rest.strip_prefix(b"=")
    })
}

/// Whether the bare word `flag` is present.
pub fn has(cmdline: &[u8], flag: &str) -> bool {
    words(cmdline).any(|w| w == flag.as_bytes())
}

/// The words of `cmdline`.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
}

/// A decimal number.
pub fn number(text: &[u8]) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u32, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u32::from(d))
    })
}
