//! How a run ended, decided from the emulator's exit status and keel's serial lines.
//!
//! QEMU: ACPI S5 makes it exit 0, and keel (given `debug-exit=0xf4`) writes 1 to the
//! `isa-debug-exit` port on a panic or exception, which QEMU turns into exit 3
//! (`(V << 1) | 1`). But with `-no-reboot` a triple fault also exits 0, so exit 0
//! only counts as a clean power-off if keel's last line says `(KEEL) Powering off`.
//! Bochs exits 1 whatever happened: there the serial lines are all there is.
//!
//! A `(KEEL) FATAL:` line anywhere is a failure, whatever the exit status; it wins
//! over a timeout too (a keel that reported a panic and then hung failed, it did not
//! merely run slow).

use std::fmt;

use crate::Backend;

/// The prefix of every line keel itself prints.
pub const KEEL_PREFIX: &str = "(KEEL) ";
/// keel's last line before ACPI S5.
pub const POWERING_OFF: &str = "(KEEL) Powering off";
/// keel's last line when it powers off after a domain crashed (or shut down with
/// `crash`).
pub const POWERING_OFF_DOMAIN_FAILURE: &str = "(KEEL) Powering off after a domain failure";
/// The prefix of keel's panic and exception reports.
pub const FATAL: &str = "(KEEL) FATAL: ";

/// The verdict on one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// keel said `Powering off` last, and the emulator then exited as after ACPI S5.
    PoweredOff,
    /// keel reported a failure (a `FATAL:` line or a debug-exit status).
    KeelFailure(String),
    /// keel powered off cleanly, with the status that says a domain crashed (QEMU
    /// exit 5 through isa-debug-exit; on Bochs, keel's last line). keel itself is
    /// fine.
    DomainFailed(String),
    /// The run hit its time limit and was killed.
    TimedOut,
    /// The emulator stopped without keel saying why (reset, emulator error, ...).
    Unexplained(String),
}

impl Outcome {
    /// True for [`Outcome::PoweredOff`].
    pub fn is_clean(&self) -> bool {
        matches!(self, Outcome::PoweredOff)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::PoweredOff => f.write_str("keel powered off cleanly"),
            Outcome::KeelFailure(why) => write!(f, "keel reported a failure: {why}"),
            Outcome::DomainFailed(why) => {
                write!(f, "keel powered off after a domain failure: {why}")
            }
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Unexplained(why) => write!(f, "the machine stopped unexpectedly: {why}"),
        }
    }
}

/// The last line keel printed (starting with `(KEEL) `), if any.
pub fn last_keel_line(serial: &str) -> Option<&str> {
    serial.lines().rev().find(|l| l.starts_with(KEEL_PREFIX))
}

/// The first `(KEEL) FATAL:` line, if any.
pub fn first_fatal_line(serial: &str) -> Option<&str> {
    serial.lines().find(|l| l.starts_with(FATAL))
}

/// Judges a run. `exit_code` is `None` when the emulator was killed by a signal.
pub fn judge(backend: Backend, exit_code: Option<i32>, timed_out: bool, serial: &str) -> Outcome {
    if let Some(fatal) = first_fatal_line(serial) {
        return Outcome::KeelFailure(fatal.to_string());
    }
    if timed_out {
        return Outcome::TimedOut;
    }
    let said_goodbye = last_keel_line(serial).is_some_and(|l| l.starts_with(POWERING_OFF));
    let domain_failed = last_keel_line(serial)
        .filter(|l| l.starts_with(POWERING_OFF_DOMAIN_FAILURE))
        .map(str::to_string);
    let last = || match last_keel_line(serial) {
        Some(l) => format!("keel's last line was {l:?}"),
        None => "keel printed nothing".to_string(),
    };
    if backend.is_qemu() {
        match exit_code {
            Some(0) if said_goodbye && domain_failed.is_none() => Outcome::PoweredOff,
            Some(5) if domain_failed.is_some() => {
                Outcome::DomainFailed(domain_failed.unwrap_or_default())
            }
            Some(0) => Outcome::Unexplained(format!(
                "QEMU exited 0 without keel's `Powering off` line (a reset or triple fault \
                 under -no-reboot?); {}",
                last()
            )),
            Some(code) if code >= 3 && code % 2 == 1 => Outcome::KeelFailure(format!(
                "keel wrote {} to debug-exit (QEMU exit {code}); {}",
                code >> 1,
                last()
            )),
            Some(code) => Outcome::Unexplained(format!(
                "QEMU exited {code} (its own error; see emulator.out); {}",
                last()
            )),
            None => Outcome::Unexplained(format!("QEMU was killed by a signal; {}", last())),
        }
    } else if let Some(line) = domain_failed {
        Outcome::DomainFailed(line)
    } else if said_goodbye {
        Outcome::PoweredOff
    } else {
        Outcome::Unexplained(format!(
            "Bochs exited ({}) without keel's `Powering off` line (see bochs.log); {}",
            exit_code.map_or_else(|| "killed".to_string(), |c| format!("status {c}")),
            last()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "GRUB\n(KEEL) keel 0.1.0\n(KEEL) Powering off\n";

    #[test]
    fn qemu_exit_zero_with_goodbye_is_clean() {
        assert_eq!(
            judge(Backend::QemuSvm, Some(0), false, CLEAN),
            Outcome::PoweredOff
        );
    }

    #[test]
    fn qemu_exit_zero_without_goodbye_is_a_reset() {
        let o = judge(Backend::QemuSvm, Some(0), false, "(KEEL) keel 0.1.0\n");
        assert!(
            matches!(&o, Outcome::Unexplained(w) if w.contains("triple fault")),
            "{o}"
        );
    }

    #[test]
    fn qemu_debug_exit_is_a_keel_failure() {
        let o = judge(Backend::QemuSvm, Some(3), false, "(KEEL) keel 0.1.0\n");
        assert!(
            matches!(&o, Outcome::KeelFailure(w) if w.contains("wrote 1")),
            "{o}"
        );
        let o = judge(Backend::QemuSvm, Some(1), false, "");
        assert!(matches!(o, Outcome::Unexplained(_)), "{o}");
    }

    #[test]
    fn fatal_wins_over_everything() {
        let serial = "(KEEL) FATAL: page fault at 0x0\n(KEEL) Powering off\n";
        for b in Backend::ALL {
            for (code, timed_out) in [(Some(0), false), (None, true), (Some(1), false)] {
                assert_eq!(
                    judge(b, code, timed_out, serial),
                    Outcome::KeelFailure("(KEEL) FATAL: page fault at 0x0".into())
                );
            }
        }
    }

    #[test]
    fn timeout_without_fatal() {
        assert_eq!(
            judge(Backend::BochsVmx, None, true, CLEAN),
            Outcome::TimedOut
        );
        assert_eq!(judge(Backend::QemuSvm, None, true, ""), Outcome::TimedOut);
    }

    #[test]
    fn bochs_is_judged_by_serial_only() {
        assert_eq!(
            judge(Backend::BochsVmx, Some(1), false, CLEAN),
            Outcome::PoweredOff
        );
        assert_eq!(
            judge(Backend::BochsSvm, Some(0), false, CLEAN),
            Outcome::PoweredOff
        );
        let truncated = "(KEEL) keel 0.1.0\n(KEEL) Powering of";
        assert!(matches!(
            judge(Backend::BochsVmx, Some(1), false, truncated),
            Outcome::Unexplained(_)
        ));
        let later = "(KEEL) Powering off\n(KEEL) still here\n";
        assert!(matches!(
            judge(Backend::BochsSvm, Some(1), false, later),
            Outcome::Unexplained(_)
        ));
    }

    #[test]
    fn domain_failure_is_its_own_outcome() {
        let serial = "(KEEL) d0 crashed: triple fault\n(KEEL) Powering off after a domain failure: dom0 crashed\n";
        let o = judge(Backend::QemuSvm, Some(5), false, serial);
        assert!(
            matches!(&o, Outcome::DomainFailed(l) if l.contains("dom0 crashed")),
            "{o}"
        );
        assert!(matches!(
            judge(Backend::BochsVmx, Some(1), false, serial),
            Outcome::DomainFailed(_)
        ));
        // The status and the line must agree on QEMU.
        assert!(matches!(
            judge(Backend::QemuSvm, Some(0), false, serial),
            Outcome::Unexplained(_)
        ));
        assert!(matches!(
            judge(Backend::QemuSvm, Some(5), false, CLEAN),
            Outcome::KeelFailure(_) | Outcome::Unexplained(_)
        ));
    }

    #[test]
    fn guest_lines_after_goodbye_do_not_count() {
        let serial = "(KEEL) Powering off\n(d0) late guest output\n";
        assert_eq!(
            judge(Backend::BochsSvm, Some(1), false, serial),
            Outcome::PoweredOff
        );
    }
}
