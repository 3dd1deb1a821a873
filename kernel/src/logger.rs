//! The `log` facade on keel's console. Every line keel prints starts with `(KEEL) `
//! so that guest output (`(d0) `, `(d1) `...) can be told apart; warnings and errors
//! say so after the prefix (docs/serial-contract.md).

use keel_builder::cmdline::LogLevel;
use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let label = match record.level() {
            Level::Error => "Error: ",
            Level::Warn => "Warning: ",
            _ => "",
        };
        keel_arch::console::write_fmt(format_args!("(KEEL) {label}{}\n", record.args()));
    }

    fn flush(&self) {}
}

/// Installs the logger (once) and sets the level from `loglvl=`.
pub fn init(level: LogLevel) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match level {
        LogLevel::None => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warning => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::All => LevelFilter::Trace,
    });
}

/// Prints a `(KEEL) ` line whatever the log level: the banner, and the messages that
/// explain why keel is about to power off.
macro_rules! say {
    ($($arg:tt)*) => {
        keel_arch::console::write_fmt(format_args!("(KEEL) {}\n", format_args!($($arg)*)))
    };
}
pub(crate) use say;
