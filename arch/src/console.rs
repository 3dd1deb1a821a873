//! keel's console: a 16550 UART (COM1 by default) through the `uart_16550` crate.
//!
//! # Locking
//! One spin lock around the UART, always taken with interrupts disabled so that an
//! interrupt handler that logs cannot deadlock against the code it interrupted. The
//! fatal path ([`emergency_write_fmt`]) breaks the lock instead of waiting: by then the
//! holder will never run again, and a garbled line beats a silent hang.

use core::fmt::{self, Write};
use spin::Mutex;
pub use uart_16550::BaudRate;
pub use uart_16550::Config as UartConfig;
use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;
pub use uart_16550::spec::registers::{Parity, WordLength};

/// The legacy I/O base of COM1.
pub const COM1_BASE: u16 = 0x3F8;

struct Serial {
    uart: Uart16550<PioBackend>,
    base: u16,
}

impl Serial {
    fn write_bytes(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            match chunk.split_last() {
                Some((b'\n', body)) => {
                    self.uart.send_bytes_exact(body);
                    self.uart.send_bytes_exact(b"\r\n");
                }
                _ => self.uart.send_bytes_exact(chunk),
            }
        }
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Serial>> = Mutex::new(None);

/// Why the console could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleError {
    /// no UART answers at the given I/O base (scratch register test failed)
    NotPresent,
    /// the UART rejected the configuration (baud rate not reachable from its clock)
    BadConfig,
}

/// Reads the baud rate firmware left programmed in the UART at `base`, for
/// `com1=auto`. None if the divisor latch reads 0.
pub fn firmware_baud(base: u16) -> Option<u32> {
    // SAFETY: keel owns the UART at `base` (it is keel's console); toggling DLAB to
    // read the divisor and restoring LCR leaves the device as it was.
    unsafe {
        let lcr = crate::io::inb(base + 3);
        crate::io::outb(base + 3, lcr | 0x80);
        let divisor = u16::from(crate::io::inb(base)) | (u16::from(crate::io::inb(base + 1)) << 8);
        crate::io::outb(base + 3, lcr);
        (divisor != 0).then(|| 115_200 / u32::from(divisor))
    }
}

/// (Re)configures the console UART at I/O `base`.
pub fn init(base: u16, config: UartConfig) -> Result<(), ConsoleError> {
    // SAFETY: keel is the only user of this UART (I/O belongs to domains, but the
    // console UART is keel's); all 8 registers follow `base` (base + 7 <= 0xFFFF is
    // checked by the crate).
    let mut uart = unsafe { Uart16550::new_port(base) }.map_err(|_| ConsoleError::NotPresent)?;
    uart.init(config).map_err(|e| match e {
        uart_16550::InitError::DeviceNotPresent => ConsoleError::NotPresent,
        _ => ConsoleError::BadConfig,
    })?;
    crate::cpu::without_interrupts(|| *CONSOLE.lock() = Some(Serial { uart, base }));
    Ok(())
}

/// Writes formatted text to the console (nothing if there is none).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    crate::cpu::without_interrupts(|| {
        if let Some(serial) = CONSOLE.lock().as_mut() {
            let _ = serial.write_fmt(args);
        }
    });
}

/// Writes raw bytes to the console (guest output, which may not be UTF-8).
pub fn write_bytes(bytes: &[u8]) {
    crate::cpu::without_interrupts(|| {
        if let Some(serial) = CONSOLE.lock().as_mut() {
            serial.write_bytes(bytes);
        }
    });
}

/// Writes on the way down: takes the console even if its lock is held.
pub fn emergency_write_fmt(args: fmt::Arguments<'_>) {
    crate::cpu::disable_interrupts();
    if CONSOLE.is_locked() {
        // SAFETY: we are on the fatal path with interrupts off on the only running
        // CPU; whoever holds the lock was interrupted by this fault and never resumes.
        unsafe { CONSOLE.force_unlock() };
    }
    if let Some(serial) = CONSOLE.lock().as_mut() {
        let _ = serial.write_fmt(args);
    }
}

/// Turns the console off (`console=none`): later writes go nowhere.
pub fn shutdown() {
    crate::cpu::without_interrupts(|| *CONSOLE.lock() = None);
}

/// Waits (boundedly) until the UART has sent every byte, transmitter shift register
/// included (LSR bit 6, TEMT). Needed before power-off: emulators and real machines
/// drop whatever is still in the FIFO when the power goes.
pub fn flush() {
    let base = match CONSOLE.try_lock() {
        Some(guard) => match guard.as_ref() {
            Some(serial) => serial.base,
            None => return,
        },
        None => COM1_BASE,
    };
    for _ in 0..1_000_000 {
        // SAFETY: reading the line status register of keel's own console UART has
        // no side effect on transmission.
        if unsafe { crate::io::inb(base + 5) } & 0x40 != 0 {
            return;
        }
        crate::cpu::pause();
    }
}
