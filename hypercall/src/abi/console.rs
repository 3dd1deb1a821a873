//! `HYPERVISOR_console_io` commands (`xen/include/public/xen.h`).
//!
//! `console_io(unsigned int cmd, unsigned int count, char buffer[])`.

/// Write `count` bytes from `buffer` to Xen's console. Returns 0.
pub const CONSOLEIO_WRITE: u32 = 0;
/// Read up to `count` bytes (at most 2 GiB) of console input into
/// `buffer`. Returns the number of bytes read.
pub const CONSOLEIO_READ: u32 = 1;
