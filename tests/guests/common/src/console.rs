//! Printing: one line per [`out!`], through `HYPERVISOR_console_io(CONSOLEIO_write)`
//! once the hypercall page is installed, through COM1 ([`crate::uart`]) before that
//! or without a hypervisor.
//!
//! keel prefixes each line a guest writes with `(d0) `; the guest writes whole lines
//! (up to [`LINE_MAX`] bytes per hypercall, longer ones in pieces) so that the
//! prefix lands where the tests expect it. Formatting needs no allocation: a line
//! is assembled in a stack buffer.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use keel_hypercall::abi::console::CONSOLEIO_WRITE;

use crate::{hypercall, uart};

/// Bytes per console write.
pub const LINE_MAX: usize = 200;

static XEN_CONSOLE: AtomicBool = AtomicBool::new(false);

/// From now on, print through the hypervisor (call after installing the page).
pub fn use_xen_console() {
    XEN_CONSOLE.store(true, Ordering::Relaxed);
}

/// Whether output goes through the hypervisor.
pub fn xen_console() -> bool {
    XEN_CONSOLE.load(Ordering::Relaxed)
}

/// Writes raw bytes to the current console; returns what `console_io` returned (0
/// for COM1).
pub fn write_bytes(bytes: &[u8]) -> i64 {
    if xen_console() {
        // The pointer is to a live slice the hypervisor only reads.
        hypercall::console_io(CONSOLEIO_WRITE, bytes.len(), bytes.as_ptr() as usize)
    } else {
        uart::write(bytes);
        0
    }
}

/// A line being assembled.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    fn flush(&mut self) {
        if self.len > 0 {
            write_bytes(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE_MAX {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints `args` and a newline as one console write (if it fits).
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut line = Line {
        buf: [0; LINE_MAX],
        len: 0,
    };
    // Formatting into the buffer cannot fail (write_str never errors).
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    line.flush();
}

/// Prints one line: `out!("x = {}", x)`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}

/// Bytes shown as text: printable ASCII as is, anything else (and `"` and `\`) as
/// `\xNN`, so a line never contains control characters.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}
