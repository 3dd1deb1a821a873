//! The harness's one error type: everything the environment can do wrong.
//!
//! A keel bug is never a `HarnessError`: it shows up as a [`crate::RunResult`] whose
//! serial log or exit status is wrong. These are the reasons a boot could not even be
//! attempted or observed.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::Backend;

/// Why the harness could not boot keel or watch it.
#[derive(Debug)]
pub enum HarnessError {
    /// No keel ELF at the path; build it first: `cargo xtask build`.
    KeelElfMissing(PathBuf),
    /// A file operation failed.
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A program could not be started (not installed?).
    Spawn {
        /// The program.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// `grub-mkrescue` failed; its output says why.
    GrubMkrescue {
        /// Its exit status.
        status: ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },
    /// A string cannot be passed through (a newline in grub.cfg, a comma in QEMU's
    /// `-initrd` list, ...).
    Unrepresentable {
        /// Where it was going.
        context: &'static str,
        /// The offending value.
        value: String,
    },
    /// Booting `-kernel` directly is QEMU's multiboot v1 loader; Bochs has none.
    DirectBootUnsupported(Backend),
}

impl HarnessError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::KeelElfMissing(path) => write!(
                f,
                "no keel image at {} (set {} or build it first: cargo xtask build)",
                path.display(),
                crate::KEEL_ELF_ENV
            ),
            HarnessError::Io { what, source } => write!(f, "{what}: {source}"),
            HarnessError::Spawn {
                program,
                package,
                source,
            } => write!(
                f,
                "cannot run {program}: {source} (is the Debian package {package} installed? \
                 `cargo xtask` installs it)"
            ),
            HarnessError::GrubMkrescue { status, output } => {
                write!(f, "grub-mkrescue failed ({status}):\n{output}")
            }
            HarnessError::Unrepresentable { context, value } => {
                write!(f, "cannot pass {value:?} in {context}")
            }
            HarnessError::DirectBootUnsupported(backend) => write!(
                f,
                "direct -kernel boot is QEMU's multiboot loader; backend {backend} needs the GRUB ISO"
            ),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } | HarnessError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}
