//! COM1, polled: the guest's voice when there is no Xen console to talk to.
//!
//! Used only before Xen is found and when it is not found at all (the guest was
//! booted by plain `qemu -kernel`, say): then COM1 at I/O port 0x3F8 is the
//! machine's serial port, programmed here for 115200 8n1. Under a hypervisor the
//! guest never touches it. The transmit wait is bounded, so a machine without a
//! UART (reads of 0xFF make the "transmitter empty" bit look set anyway) cannot
//! hang the guest.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch;

const COM1: u16 = 0x3F8;
/// Line status register: transmit holding register empty.
const LSR_THRE: u32 = 1 << 5;

static INITIALISED: AtomicBool = AtomicBool::new(false);

fn outb(port: u16, v: u8) {
    // SAFETY: the 16550's registers at COM1; only reached without a hypervisor
    // console, when the guest owns the machine.
    unsafe { arch::port_out(port, 1, u32::from(v)) };
}

fn inb(port: u16) -> u8 {
    // SAFETY: as in `outb`; reading LSR has no side effects.
    unsafe { arch::port_in(port, 1) as u8 }
}

/// Programs COM1 for 115200 8n1, FIFOs on, interrupts off (once).
pub fn init() {
    if INITIALISED.swap(true, Ordering::Relaxed) {
        return;
    }
    outb(COM1 + 1, 0x00); // IER: no interrupts
    outb(COM1 + 3, 0x80); // LCR: DLAB
    outb(COM1, 0x01); // DLL: 115200 baud
    outb(COM1 + 1, 0x00); // DLM
    outb(COM1 + 3, 0x03); // LCR: 8n1
    outb(COM1 + 2, 0xC7); // FCR: FIFOs on and cleared
    outb(COM1 + 4, 0x03); // MCR: DTR, RTS
}

fn put(b: u8) {
    for _ in 0..100_000 {
        if u32::from(inb(COM1 + 5)) & LSR_THRE != 0 {
            break;
        }
    }
    outb(COM1, b);
}

/// Writes `bytes`, turning `\n` into `\r\n`.
pub fn write(bytes: &[u8]) {
    init();
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}
