//! Reporting checks: one line each, `<name>: ok` or `<name>: FAIL <why>`, and the
//! running totals behind the final `Test result:` line.
//!
//! A check's name never contains a colon, so `<prefix><name>: FAIL` is easy to match;
//! pvh32 prefixes its per-mode checks with the paging mode (`paging off: `,
//! `PAE paging: `). Informational lines (`info: ...`) carry values worth seeing in
//! a log but are not checks.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use keel_hypercall::abi::Errno;

use crate::out;

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Checks passed so far.
pub fn passed() -> u32 {
    PASSED.load(Ordering::Relaxed)
}

/// Checks failed so far.
pub fn failed() -> u32 {
    FAILED.load(Ordering::Relaxed)
}

/// A hypercall return value, shown with its errno name when it is one:
/// `-14 (EFAULT)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rc(pub i64);

impl fmt::Display for Rc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Errno::from_ret(self.0) {
            Some(e) => write!(f, "{} ({})", self.0, e.name()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A reporter with a name prefix (empty, `pvh32: `, `PAE paging: `...).
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    outer: &'static str,
    phase: &'static str,
}

impl Checks {
    /// Reporter printing `<outer><phase><name>: ...`.
    pub const fn new(outer: &'static str, phase: &'static str) -> Checks {
        Checks { outer, phase }
    }

    /// Check `name` passed.
    pub fn ok(&self, name: &str) {
        PASSED.fetch_add(1, Ordering::Relaxed);
        out!("{}{}{}: ok", self.outer, self.phase, name);
    }

    /// Check `name` failed, because `why`.
    pub fn fail(&self, name: &str, why: fmt::Arguments<'_>) {
        FAILED.fetch_add(1, Ordering::Relaxed);
        out!("{}{}{}: FAIL {}", self.outer, self.phase, name, why);
    }

    /// Passes if `cond`, else fails with `why`; returns `cond`.
    pub fn check(&self, name: &str, cond: bool, why: fmt::Arguments<'_>) -> bool {
        if cond {
            self.ok(name);
        } else {
            self.fail(name, why);
        }
        cond
    }

    /// Passes if the hypercall returned exactly `want`.
    pub fn rc(&self, name: &str, got: i64, want: i64) -> bool {
        self.check(
            name,
            got == want,
            format_args!("returned {}, expected {}", Rc(got), Rc(want)),
        )
    }

    /// Passes if the hypercall returned `-errno`.
    pub fn errno(&self, name: &str, got: i64, want: Errno) -> bool {
        self.rc(name, got, want.neg())
    }

    /// An informational line (not a check).
    pub fn info(&self, what: fmt::Arguments<'_>) {
        out!("{}{}info: {}", self.outer, self.phase, what);
    }
}
